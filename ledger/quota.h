/*
 * quota.h - the budget engine: holds (workers) and settlement (billing) on
 * the balances and holds databases of the ledger environment.
 *
 * A worker calls ta_quota_hold() in ONE write transaction per /v1 request; it
 * rolls the period lazily, checks expiry, request/token/cost limits, GCRA for
 * RPM and TPM, and concurrency, then records the hold. Billing calls
 * ta_quota_settle() for each event inside its batch transaction: release the
 * hold, add the actual cost and tokens, correct TPM by actual - estimate,
 * free the concurrency slot. Refusals change nothing.
 *
 * Periods are calendar-aligned in the quota timezone (day, ISO week starting
 * Monday, month); `none` never rolls. Rollover resets the used amounts and
 * the warning level only: cost_held/tokens_held/in_flight are kept (they
 * belong to requests still running), so settlement always subtracts a hold's
 * amounts, whatever period it was taken in, and adds the actual usage to the
 * balance's current period.
 *
 * Callers: worker (hold), billing (settle, release). Never the master.
 */
#ifndef TA_QUOTA_H
#define TA_QUOTA_H

#include "ledger/event.h"
#include "ledger/store.h"

enum ta_reserve { TA_RESERVE_ESTIMATE = 0, TA_RESERVE_STRICT = 1 };

#define TA_HOLD_MAX_CHOICES 1024          /* output_choices beyond this are held as this */
#define TA_HOLD_MAX_OUTPUT (1LL << 40)    /* output tokens per choice beyond this: as this */

typedef struct ta_hold_req {
    const uint8_t *request_id;     /* 16 bytes */
    int32_t worker_pid;
    const ta_quota_t *quota;       /* read in the same transaction by the caller */
    const ta_model_t *model;
    int64_t prompt_tokens_est;     /* estimate of prompt tokens */
    int64_t prompt_tokens_max;     /* upper bound of prompt tokens (strict) */
    int64_t max_output_tokens;     /* client's output limit per choice, 0 if none given */
    int32_t output_choices;        /* outputs the upstream generates and bills, each up to
                                      the output limit: max(n, best_of); <= 1 means one */
    bool no_output;                /* the endpoint generates no output (embeddings) */
    int64_t extra_output_tokens;   /* output tokens billed beyond the limit (an upper bound
                                      of a predicted output's tokens), 0 if none */
    int reserve;                   /* TA_RESERVE_* */
    const char *timezone;          /* quota_timezone, e.g. "UTC", "Europe/Berlin" */
    int64_t now_ns;                /* ta_now_ns() */
} ta_hold_req_t;

enum ta_hold_refusal {
    TA_HOLD_OK = 0,
    TA_HOLD_EXPIRED,         /* 403 quota_inactive */
    TA_HOLD_INACTIVE,        /* 403 quota_inactive */
    TA_HOLD_COST,            /* 429 insufficient_quota */
    TA_HOLD_TOKENS,          /* 429 insufficient_quota */
    TA_HOLD_REQUESTS,        /* 429 insufficient_quota */
    TA_HOLD_RPM,             /* 429 rate_limit_exceeded */
    TA_HOLD_TPM,             /* 429 rate_limit_exceeded */
    TA_HOLD_CONCURRENCY,     /* 429 rate_limit_exceeded */
    TA_HOLD_UNPRICED,        /* 403: model has no prices and the quota has a cost limit */
};

typedef struct ta_hold_res {
    int refusal;                   /* TA_HOLD_* */
    int64_t retry_after_ms;        /* for 429s */
    ta_nano_t held_cost;
    int64_t held_tokens;
    int64_t tpm_estimate;
    int64_t max_output_tokens;     /* the max output the gateway will send upstream (strict: clamped) */
    int64_t period_start;
    /* for x-ratelimit-* headers */
    int64_t rpm_limit, rpm_remaining, rpm_reset_ms;
    int64_t tpm_limit, tpm_remaining, tpm_reset_ms;
} ta_hold_res_t;

/** Try to take a hold inside the caller's write transaction. Returns 0 with
 *  res->refusal telling whether it was granted, or <0 on a store error (the
 *  caller aborts the transaction). */
int ta_quota_hold(ta_store_t *st, MDB_txn *txn, const ta_hold_req_t *req, ta_hold_res_t *res);

/** Apply one TA_EV_REQUEST event to the ledger inside billing's transaction. */
int ta_quota_settle(ta_store_t *st, MDB_txn *txn, const ta_event_t *ev, const char *timezone);
/** What ta_quota_settle does to the balance, in memory: the lazy rollover
 *  at the event's end time, hold h released, the usage added, the TPM
 *  backlog corrected. Billing settles a batch this way, reading each quota
 *  and balance once (ta_quota_read, ta_quota_balance_read) and writing each
 *  balance once. */
void ta_quota_settle_balance(const ta_quota_t *q, const ta_hold_t *h, const ta_event_t *ev,
                             const char *timezone, ta_balance_t *b);
/** Quota id, or (deleted) an unlimited quota of period none with that id. */
int ta_quota_read(ta_store_t *st, MDB_txn *txn, uint64_t id, ta_quota_t *q);
/** q's stored balance, or a fresh one in the period holding now_s. */
int ta_quota_balance_read(ta_store_t *st, MDB_txn *txn, const ta_quota_t *q, int64_t now_s,
                          const char *tz, ta_balance_t *b);

/** Release a hold without any usage (dead worker). Fills ev_out with an event
 *  describing it (for the aborted audit record). TA_ENOTFOUND if no such hold. */
int ta_quota_release(ta_store_t *st, MDB_txn *txn, const uint8_t request_id[16], ta_event_t *ev_out);

/** The cost of a usage at a model's prices: one function, 128-bit
 *  intermediates, rounded up. prompt_tokens counts every input token, of which
 *  cached_tokens were cache reads and cache_write_tokens cache writes. */
ta_nano_t ta_cost(const ta_model_t *m, int64_t prompt_tokens, int64_t completion_tokens,
                  int64_t cached_tokens, int64_t cache_write_tokens);

/** Start of the period containing now_s, in timezone tz; 0 for TA_PERIOD_NONE.
 *  period_end: start of the next period (INT64_MAX for none). */
int64_t ta_period_start(int period, int64_t now_s, const char *tz);
int64_t ta_period_end(int period, int64_t start_s, const char *tz);

/* ---- per-process timezone, renewals, dead-worker holds, usage view ------ */

/*
 * Semantics of ta_quota_hold (details in quota.c):
 *  - checks, in order: is_active, expiry (auto_renew moves expires_at by whole
 *    periods past now and writes the quota record on grant; period none cannot
 *    renew), unpriced model under a cost limit, request limit (used +
 *    in_flight), token and cost limits, RPM, TPM, concurrency. All checks run
 *    before any write; a refusal writes nothing.
 *  - both modes hold the worst case: prompt = max(prompt_tokens_max,
 *    prompt_tokens_est) priced at the model's dearest prompt class (a cache
 *    write can cost more than input), plus output_choices x output at
 *    output_price, plus extra_output_tokens at output_price; output = client
 *    limit capped at the model's max_output_tokens, else the model's
 *    max_output_tokens, else 4096 (0 with no_output).
 *    res->max_output_tokens is the output limit per choice that must go
 *    upstream, whatever the mode: the hold covers nothing beyond it.
 *  - strict: the output is clamped down to the tokens and cost left; refused
 *    when the prompt and extra do not fit, or not one output token per choice
 *    does. used never exceeds a limit, whatever the concurrency.
 *  - estimate: not clamped; refused only once used + held >= limit. Since
 *    every request in flight holds its worst case, the final used cost exceeds
 *    the limit by at most the worst case of ONE request (the last admitted).
 *  - TPM is charged prompt_tokens_est + min(output, 256) x choices + extra
 *    (res->tpm_estimate, copy it into the event); a request bigger than the
 *    whole minute passes when the bucket is empty. Settle corrects by
 *    actual - estimate.
 *  - retry_after_ms: RPM/TPM exact; request/token/cost limits: until the
 *    period ends (0 for none); concurrency: 1000.
 * ta_quota_settle: only events with TA_EVF_HOLD whose hold still exists
 * change the ledger (requests_used++, used += cost and prompt+completion
 * tokens, held amounts and one in-flight slot released); TA_EINVAL for a
 * non-request event. ta_quota_release leaves the TPM estimate charged.
 * balance.warn_level = count of warn_at thresholds raised this period
 * (index + 1), 0 = none; rollover resets it to 0.
 */

/** Set the process timezone for quota periods (config `quota_timezone`):
 *  validates the IANA name (a regular file /usr/share/zoneinfo/<name>, or a
 *  UTC alias), then setenv("TZ") + tzset() once. Call at startup, before
 *  fork (children inherit it). TA_EINVAL for an unknown or odd name (nothing
 *  changes then). Periods in the process timezone then cost no TZ switch;
 *  ta_period_*() with another name switch the process TZ (slow path). Not
 *  thread-safe. Any process. */
int ta_quota_set_timezone(const char *tz);
/** The process timezone name ("UTC" until ta_quota_set_timezone()). */
const char *ta_quota_timezone(void);

/** Auto-renew: expires_at moved later by whole periods (same local clock
 *  time; month steps clamp the day to the month's length) until it is after
 *  now_s. Unchanged if already in the future or for TA_PERIOD_NONE. */
int64_t ta_period_renew(int period, int64_t expires_at, int64_t now_s, const char *tz);

/** The holds of worker `pid` (dead-worker cleanup). Writes up to max request
 *  ids into ids and sets *n to the TOTAL count of that pid's holds, which may
 *  exceed max (release those, then call again). Read or write txn on the
 *  ledger env. Billing (and the CLI for verify). */
int ta_quota_holds_of_pid(ta_store_t *st, MDB_txn *txn, int32_t pid, uint8_t (*ids)[16],
                          size_t max, size_t *n);

/** Read-only usage of quota q as of now_s, with a period rollover applied
 *  virtually (used amounts read as zero once the stored period ended); a
 *  quota never held is all zeros. period_start/period_end (either may be
 *  NULL) get the current period's bounds in the process timezone (0 and
 *  INT64_MAX for period none). Any txn on the ledger env. Worker (admin API,
 *  /v1/usage), CLI. */
int ta_quota_usage(ta_store_t *st, MDB_txn *txn, const ta_quota_t *q, int64_t now_s,
                   ta_balance_t *out, int64_t *period_start, int64_t *period_end);

#endif
