/*
 * billing_internal.h - what the parts of the billing process share; nothing
 * outside ledger/billing.c, webhook.c, outbox.c, dead_letter.c, sweep.c and
 * spool.c includes it.
 *
 *   billing.c      the loop: open / step / close / run, the two passes of a
 *                  batch (one function, called for each environment), pruning
 *   webhook.c      the webhook thread: a bounded job queue in, results out;
 *                  it POSTs through conf->webhook_post and never touches LMDB
 *   outbox.c       the warning outbox: jobs from committed PENDING warnings,
 *                  results written back, the rescan of PENDING warnings
 *   dead_letter.c  events set aside (billing.h "Dead letters")
 *   sweep.c        holds and spools of processes that are gone
 *   spool.c        events a stopping worker could not put in the ring
 *
 * Billing process only; every function runs on billing's loop thread except
 * the webhook thread's own (webhook.c).
 */
#ifndef TA_BILLING_INTERNAL_H
#define TA_BILLING_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "ledger/audit.h"
#include "ledger/billing.h"
#include "ledger/ring.h"
#include "schema/audit_records.h"

#define NS_PER_MS 1000000LL
/* ledger meta: an audit record the ledger pass made for the audit pass of the
 * same ticket ("billing.aborted.<ticket %020>.<request id hex>"): a hold
 * released by a dead-worker event, or a spooled event (spool.c) */
#define STASH_PREFIX "billing.aborted."
#define WH_QUEUE 64

/* note word, per ticket (ring slot): what the ledger pass decided */
#define NOTE_VALID (1ULL << 63)
#define NOTE_CHARGED (1ULL << 62)
#define NOTE_DEAD (1ULL << 61) /* the ledger pass dead-lettered this ticket */
#define NOTE_LEVEL_SHIFT 48    /* 4 bits: warn level raised to (0 = none) */
#define NOTE_PERIOD_MASK ((1ULL << 48) - 1)

typedef struct wh_job {
    uint64_t quota_id;
    int64_t period_start;
    int32_t threshold;
    char id[64]; /* stable: quota-period-threshold */
    char body[896];
} wh_job_t;

typedef struct wh_res {
    uint64_t quota_id;
    int64_t period_start;
    int32_t threshold, status, attempts;
    bool ok;
    bool interrupted; /* stopped before the retries ran out: stays pending */
    char err[128];
} wh_res_t;

typedef struct webhook {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool started, stop;
    ta_webhook_post_fn post;
    char url[1024];
    int64_t timeout_ms;
    uint32_t attempts;
    wh_job_t jobs[WH_QUEUE];
    size_t jhead, jn;
    wh_res_t res[WH_QUEUE];
    size_t rn;
    /* loop thread only: jobs queued and not yet written back (queue, thread,
     * res); results written by the current audit txn; a rescan is due */
    size_t inflight, rdone;
    bool rescan;
} webhook_t;

/* A quota of the batch being settled (billing.c, ta_billing_settle): read
 * once per batch, its balance written once at the end of the ledger pass. */
typedef struct settle_slot {
    uint64_t quota_id;
    bool used, dirty;
    bool quota_found; /* else settled as a deleted quota (period none) */
    ta_quota_t q;
    ta_balance_t bal;
} settle_slot_t;
#define SETTLE_SLOTS 1024                        /* power of two */
#define SETTLE_FILL (SETTLE_SLOTS / 4 * 3)       /* more quotas: written and forgotten */
#define GROUP_CACHE 256                          /* quota -> group, per audit pass */

/* spool files (spool.c) taken by the ledger pass of the current batch:
 * removed once both environments committed it */
typedef struct spool_taken {
    char (*names)[64];
    size_t n, cap;
} spool_taken_t;

struct ta_billing {
    ta_billing_conf_t conf;
    ta_store_t *st;
    ta_ring_t *ring;
    bool own_ring;
    uint64_t ring_id, first_tail;
    uint64_t cursor;
    uint64_t aud_applied;
    bool stash_dirty;
    ta_ring_item_t *items;
    size_t batch_max;
    bool single; /* after a failed batch: one event per batch until it passes */
    bool dirty;
    int64_t last_sync, last_prune;
    int64_t linger_ns;     /* batch_linger_us; 0 = none */
    int64_t last_batch_ns; /* mono time the last batch was applied */
    ta_billing_stats_t stats;
    webhook_t wh;
    wh_job_t out[WH_QUEUE]; /* jobs found in this batch, queued after commit */
    size_t nout;
    spool_taken_t spool;
    /* the ledger pass: the batch's quotas and balances, the holds cursor */
    settle_slot_t *settle;
    uint32_t settle_order[SETTLE_SLOTS];
    size_t nsettle;
    MDB_cursor *holds_cur;
    /* the audit pass: records and summed aggregates, each quota's group */
    ta_audit_batch_t *audit_batch;
    struct {
        uint64_t quota_id, group_id;
        bool ok;
    } groups[GROUP_CACHE];
};

/* ---- billing.c ---- */
/** The ledger pass of one finished request (ticket t, or a spooled event:
 *  t = the dead-worker ticket that took it). Fills *note (NOTE_* bits). */
int ta_billing_settle(ta_billing_t *b, MDB_txn *txn, uint64_t t, const ta_event_t *ev,
                      uint64_t *note);
/** Stash rec for the audit pass of ticket t (ledger meta, STASH_PREFIX). */
int ta_billing_stash(ta_billing_t *b, MDB_txn *txn, uint64_t t, const ta_audit_t *rec);
/** Raise the warnings up to level for quota_id in period (audit txn). */
int ta_billing_warnings(ta_billing_t *b, MDB_txn *atxn, MDB_txn *ltxn, uint64_t quota_id,
                        int64_t period, int level);

/* ---- webhook.c ---- */
/** Start the thread when conf has a URL (and a transport); else nothing. */
void ta_webhook_start(webhook_t *w, const ta_billing_conf_t *conf);
/** Stop and join the thread (a retry back-off wakes at once). */
void ta_webhook_stop(webhook_t *w);
/** Hand a committed PENDING warning to the thread. With WH_QUEUE jobs in
 *  flight it stays PENDING and a later rescan queues it (never dropped). */
void ta_webhook_queue(webhook_t *w, const wh_job_t *j);

/* ---- outbox.c ---- */
/** The POST of a warning record: the same bytes whichever billing sends it. */
void ta_outbox_job_fill(wh_job_t *j, const ta_warning_t *w, const char *key_prefix);
/** Write the thread's results into atxn; they are forgotten only by
 *  ta_outbox_results_done() after that txn committed. */
int ta_outbox_write_results(ta_billing_t *b, MDB_txn *atxn);
void ta_outbox_results_done(ta_billing_t *b);
/** Queue the PENDING warnings (only with nothing in flight). */
void ta_outbox_rescan(ta_billing_t *b);
/** Between batches: write back results that came while the ring was idle,
 *  then rescan when due. */
void ta_outbox_service(ta_billing_t *b);

/* ---- dead_letter.c ---- */
/** Whether rc is the event's own fault (set aside) rather than transient. */
bool ta_dead_letter_eligible(int rc);
/** Store ticket t's event as a dead letter in env's meta, in txn (the one
 *  that also moves env's applied_ticket past t). */
int ta_dead_letter_put(ta_billing_t *b, MDB_txn *txn, ta_envid_t env, uint64_t t,
                       const ta_event_t *ev, int err);
/** Whether the ledger pass dead-lettered ticket t (when its note was lost). */
bool ta_dead_letter_exists(ta_billing_t *b, MDB_txn *ltxn, uint64_t t);

/* ---- sweep.c ---- */
/** Push TA_EV_WORKER_DEAD for every gone process that owns a hold or left a
 *  spool file. */
void ta_billing_sweep(ta_billing_t *b);
/** Whether process pid no longer runs (gone or a zombie). */
bool ta_billing_pid_gone(int32_t pid);

/* ---- spool.c (billing's side; the worker's is ledger/spool.h) ---- */
/** Ledger pass of a TA_EV_WORKER_DEAD ticket t for pid, before its holds are
 *  released: apply the events of pid's spool files (settle, stash their
 *  records for the audit pass of t) and remember the files in b->spool. */
int ta_spool_apply(ta_billing_t *b, MDB_txn *txn, uint64_t t, int32_t pid);
/** After both environments committed the batch: remove the files taken. */
void ta_spool_taken_remove(ta_billing_t *b);
/** Forget the files taken (a batch rolled back). */
void ta_spool_taken_reset(ta_billing_t *b);
/** Add to gone[] (up to max) each gone pid that left a spool file; remove
 *  the .tmp files of gone pids (killed while writing). */
void ta_spool_sweep(ta_billing_t *b, int32_t *gone, size_t *ngone, size_t max);

#endif
