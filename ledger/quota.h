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
 * Monday, month); `none` never rolls. A hold taken in an earlier period is
 * released from the period it was held in: held amounts follow the balance's
 * current period only if period_start matches, else they were already reset
 * at rollover (rollover keeps cost_held/tokens_held/in_flight: they belong to
 * requests still running).
 *
 * Callers: worker (hold), billing (settle, release). Never the master.
 */
#ifndef TA_QUOTA_H
#define TA_QUOTA_H

#include "ledger/event.h"
#include "ledger/store.h"

enum ta_reserve { TA_RESERVE_ESTIMATE = 0, TA_RESERVE_STRICT = 1 };

typedef struct ta_hold_req {
    const uint8_t *request_id;     /* 16 bytes */
    int32_t worker_pid;
    const ta_quota_t *quota;       /* read in the same transaction by the caller */
    const ta_model_t *model;
    int64_t prompt_tokens_est;     /* estimate of prompt tokens */
    int64_t prompt_tokens_max;     /* upper bound of prompt tokens (strict) */
    int64_t max_output_tokens;     /* client's max_tokens, 0 if none given */
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

#endif
