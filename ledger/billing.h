/*
 * billing.h - the billing process's entry point (docs/ARCHITECTURE.md,
 * "Processes" and "The ring and billing"): the
 * ring's only consumer and the audit environment's only writer.
 *
 * The master forks one billing process and, in it, calls
 * ta_billing_run() (master/billing_child.c).
 *
 * Contract for ta_billing_run():
 *  - called in the billing child after fork, PR_SET_PDEATHSIG and the
 *    parent check, with SIGTERM/SIGINT handlers that only set *stop = 1;
 *  - opens its own ta_store_t (ledger/store.h) from conf->data_dir and
 *    conf->store_opts, and attaches the ring the master mapped before fork;
 *  - calls ta_heartbeat_beat() (ledger/heartbeat.h) at start and at least
 *    once a second (GET /healthz answers 503 when the beat is stale);
 *  - on *stop: drains what is published in the ring, syncs, closes, returns 0;
 *  - returns <0 on a fatal error (the master logs it and restarts billing
 *    with backoff).
 *
 * Callers: the billing process only.
 */
#ifndef TA_BILLING_H
#define TA_BILLING_H

#include <signal.h>
#include <stdint.h>
#include "ledger/event.h"
#include "ledger/store.h"

/** The warning webhook's transport (the seam that keeps libcurl out of
 *  ledger/, like schema/api.h's for /api): POST body (JSON) to url with an
 *  `Idempotency-Key: idempotency_key` header, giving up after timeout_ms.
 *  Returns the HTTP status (> 0), or < 0 when no answer came, with err
 *  (NUL-terminated, errcap bytes) saying why. Called on billing's webhook
 *  thread only, one call at a time; it must not touch LMDB. The master's is
 *  ta_webhook_post_curl() (master/webhook.h). */
typedef int (*ta_webhook_post_fn)(const char *url, const char *body, const char *idempotency_key,
                                  int64_t timeout_ms, char *err, size_t errcap);

/* Test hooks: tests point ta_billing_conf_t.hooks at one of these and set a
 * field between steps; production leaves hooks NULL. */
typedef struct ta_billing_hooks {
    /* when set, the next batch commits the ledger side and then returns
     * -EINTR before the audit side (cleared), as if billing had been killed
     * between the two commits */
    volatile int stop_after_ledger;
} ta_billing_hooks_t;

typedef struct ta_billing_conf {
    const char *data_dir;
    ta_store_opts_t store_opts;       /* create = false */
    int64_t sync_interval_ms;         /* ta_store_sync() period */
    int64_t audit_retention_days;     /* 0 = keep forever */
    const char *warning_webhook_url;  /* "" = none */
    ta_webhook_post_fn webhook_post;  /* required with a URL (else warnings stay pending) */
    const char *quota_timezone;       /* "UTC", "Europe/Paris" ... */
    uint32_t ring_slots;              /* setting ring_slots */
    void *ring;                       /* the master's ring mapping (ledger/ring.h), or NULL:
                                       * billing then attaches DATA_DIR/ring itself */
    /* tuning; 0 = the default */
    int64_t ring_skip_ms;             /* unpublished-slot skip bound (default 2000) */
    uint32_t batch_max;               /* events per batch transaction (default 512) */
    int64_t drain_ms;                 /* on stop: how long to wait for claimed slots (default skip + 2 s) */
    int64_t webhook_timeout_ms;       /* per webhook attempt (default 5000) */
    uint32_t webhook_attempts;        /* default 3 */
    int64_t batch_linger_us;          /* while events keep arriving, wait up to this long after
                                       * an event was published for more to share its batch
                                       * (default 1000; < 0 = never wait) */
    ta_billing_hooks_t *hooks;        /* tests only; NULL in production */
} ta_billing_conf_t;

/* What one billing batch did (tests and the bench). */
typedef struct ta_billing_stats {
    uint64_t batches, events, settled, refused, aborted, skipped, warnings;
    uint64_t ledger_applied, audit_applied; /* meta applied_ticket after the last batch */
    uint64_t dead_letters;                  /* events written to the dead letters (below) */
} ta_billing_stats_t;

typedef struct ta_billing ta_billing_t; /* opaque: the loop's state, for tests */

/** The pieces of ta_billing_run(), for tests and the standalone runner:
 *  open (store + ring + recovery state), one step (wait up to wait_ms, take
 *  what is published, apply it to both environments, release the slots),
 *  close (final sync). step returns the number of tickets consumed (>= 0) or
 *  a fatal error. Billing process only. */
int ta_billing_open(const ta_billing_conf_t *conf, ta_billing_t **out);
int ta_billing_step(ta_billing_t *b, int wait_ms);
void ta_billing_close(ta_billing_t *b);
const ta_billing_stats_t *ta_billing_stats(const ta_billing_t *b);
ta_store_t *ta_billing_store(ta_billing_t *b);

/* Dead letters. An event that fails on its own with an error that is the
 * event's (or its records') fault -- TA_EINVAL, TA_ENOTFOUND, TA_EEXIST,
 * TA_ESCHEMA, TA_ECORRUPT, TA_ETOOBIG, TA_EBUSY, or an unknown event kind --
 * would stop settlement for good if billing kept retrying it. Billing
 * instead retries a failed batch one event at a time and stores an event
 * that still fails as-is in the meta database of the environment whose pass
 * failed, in the same transaction that moves that environment's
 * applied_ticket past it:
 *   key   "dead_letter.<ticket %020>.<ring id %016x>"
 *   value "TADL" | u8 version 1 | u8 side (ta_envid_t) | u16 0 | i32be error |
 *         i64be written at (wall ns) | u64be ring id | u64be ticket |
 *         u32be event size | the raw ta_event_t bytes
 * side TA_ENV_LEDGER: nothing of the event was applied (its hold, if any,
 * stays and `ledger verify` reports it stale after its bound); side
 * TA_ENV_AUDIT: the ledger settled it, its audit record is missing.
 * Transient errors (TA_EFULL, TA_ELMDB, -ENOMEM, other -errno) still stop
 * billing: nothing is skipped for them. `ledger verify` lists every dead
 * letter as a difference; `ledger dump` shows them. Nothing deletes them:
 * an operator does, after handling the event. */
#define TA_DEAD_LETTER_PREFIX "dead_letter."

typedef struct ta_dead_letter {
    uint64_t ticket, ring_id;
    ta_envid_t side;      /* the environment whose pass failed */
    int32_t error;        /* TA_E* / -errno of the failure */
    int64_t at_ns;        /* when it was written (wall clock) */
    uint32_t ev_size;     /* event bytes stored */
    bool intact;          /* header readable and ev_size == sizeof(ta_event_t) */
    ta_event_t ev;        /* the event (zero-padded when not intact) */
    const uint8_t *raw;   /* the stored event bytes (valid during the callback) */
    size_t raw_len;
} ta_dead_letter_t;

/* Called per dead letter in key order; < 0 stops the walk with that error. */
typedef int (*ta_dead_letter_cb)(const ta_dead_letter_t *dl, void *arg);

/** Walk the dead letters of env in txn (any process with a read txn). */
int ta_dead_letter_walk(ta_store_t *st, MDB_txn *txn, ta_envid_t env, ta_dead_letter_cb cb,
                        void *arg);

/** The billing main loop; see the contract above. */
int ta_billing_run(const ta_billing_conf_t *conf, volatile sig_atomic_t *stop);

#endif
