/*
 * outbox.c - the warning webhook's outbox: the warning record is the outbox.
 *
 * A warning is written PENDING (when a webhook is configured) in the audit
 * transaction that raises it; after that commit the loop hands it to the
 * webhook thread (webhook.c), which only POSTs and hands each result back.
 * The loop writes DELIVERED (a 2xx) or FAILED (the bounded retries of one
 * round failed; webhook_error holds the last error) in its next audit
 * transaction (a batch's, or a small one of its own when the ring is idle),
 * and only then forgets the job (`inflight`). A warning not queued (queue
 * full, more than WH_QUEUE in one batch) stays PENDING and is picked up by a
 * rescan of the warnings table, which runs at start (before any new warning
 * is queued) and later whenever nothing is in flight, so a rescan never
 * queues a warning twice. Killed after the commit and before its result was
 * written, the warning is still PENDING and the next billing posts it again:
 * delivery is at least once. Every POST carries a stable "id" (quota id "-"
 * period start in unix seconds "-" threshold, also sent as the
 * Idempotency-Key header) for receivers to drop duplicates.
 *
 * Billing process, loop thread only.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "ledger/audit.h"
#include "ledger/billing_internal.h"
#include "ledger/quota.h"

void ta_outbox_job_fill(wh_job_t *j, const ta_warning_t *w, const char *key_prefix)
{
    char used[TA_NANO_STRLEN], lim[TA_NANO_STRLEN], ps[40], at[40];
    j->quota_id = w->quota_id;
    j->period_start = w->period_start;
    j->threshold = w->threshold;
    snprintf(j->id, sizeof(j->id), "%" PRIu64 "-%" PRId64 "-%d", w->quota_id, w->period_start,
             w->threshold);
    snprintf(j->body, sizeof(j->body),
             "{\"event\":\"quota.warning\",\"id\":\"%s\",\"quota_id\":%" PRIu64
             ",\"user_id\":%" PRIu64 ",\"threshold\":%d,\"period_start\":\"%s\","
             "\"cost_used\":\"%s\",\"cost_limit\":\"%s\",\"tokens_used\":%" PRId64
             ",\"token_limit\":%" PRId64 ",\"requests_used\":%" PRId64
             ",\"request_limit\":%" PRId64 ",\"raised_at\":\"%s\",\"key_prefix\":\"%s\"}",
             j->id, w->quota_id, w->user_id, w->threshold, ta_time_format(w->period_start, ps),
             ta_nano_format(w->cost_used, used), ta_nano_format(w->cost_limit, lim), w->tokens_used,
             w->token_limit, w->requests_used, w->request_limit,
             ta_time_format(w->raised_at_ns / 1000000000LL, at), key_prefix);
}


/* Write the thread's results into atxn. They stay in `res` (and in flight)
 * until ta_outbox_results_done() after the commit: an aborted txn loses none. */
int ta_outbox_write_results(ta_billing_t *b, MDB_txn *atxn)
{
    wh_res_t res[WH_QUEUE];
    size_t n = 0;
    b->wh.rdone = 0;
    if (!b->wh.started)
        return 0;
    pthread_mutex_lock(&b->wh.mu);
    n = b->wh.rn;
    memcpy(res, b->wh.res, n * sizeof(res[0]));
    pthread_mutex_unlock(&b->wh.mu);
    for (size_t i = 0; i < n; i++) {
        ta_warning_t w;
        int rc = ta_audit_warning_get(b->st, atxn, res[i].quota_id, res[i].period_start,
                                      res[i].threshold, &w);
        if (rc == TA_ENOTFOUND)
            continue;
        if (rc != 0)
            return rc;
        if (w.webhook_state == TA_WH_DELIVERED)
            continue; /* never downgrade a delivered warning */
        w.webhook_status = res[i].status;
        w.webhook_attempts += res[i].attempts;
        w.webhook_ok = res[i].ok;
        if (res[i].ok) {
            w.webhook_state = TA_WH_DELIVERED;
            w.webhook_error[0] = '\0';
        } else {
            snprintf(w.webhook_error, sizeof(w.webhook_error), "%s", res[i].err);
            if (!res[i].interrupted)
                w.webhook_state = TA_WH_FAILED;
        }
        w.webhook_at_ns = ta_now_ns();
        if ((rc = ta_audit_warning_put(b->st, atxn, &w)) != 0)
            return rc;
    }
    b->wh.rdone = n;
    return 0;
}

/* After the commit that wrote the first rdone results: forget those jobs. */
void ta_outbox_results_done(ta_billing_t *b)
{
    size_t n = b->wh.rdone;
    b->wh.rdone = 0;
    if (n == 0)
        return;
    pthread_mutex_lock(&b->wh.mu);
    memmove(b->wh.res, b->wh.res + n, (b->wh.rn - n) * sizeof(b->wh.res[0]));
    b->wh.rn -= n;
    pthread_mutex_unlock(&b->wh.mu);
    b->wh.inflight -= n;
}

typedef struct rescan_arg {
    ta_billing_t *b;
    MDB_txn *ltxn;
} rescan_arg_t;

static int rescan_cb(const ta_warning_t *w, void *arg)
{
    rescan_arg_t *a = arg;
    ta_quota_t q;
    wh_job_t j;
    if (a->b->wh.inflight >= WH_QUEUE)
        return 1; /* the rest on the next rescan */
    if (ta_rec_get(a->b->st, a->ltxn, &ta_desc_quota, w->quota_id, &q) != 0)
        q.key_prefix[0] = '\0'; /* quota deleted since: post the warning anyway */
    ta_outbox_job_fill(&j, w, q.key_prefix);
    ta_webhook_queue(&a->b->wh, &j);
    return 0;
}

/* Queue the PENDING warnings. Only with nothing in flight: every PENDING
 * record is then one that no job carries, so none is queued twice. */
void ta_outbox_rescan(ta_billing_t *b)
{
    MDB_txn *atxn = NULL, *ltxn = NULL;
    if (!b->wh.started || !b->wh.rescan || b->wh.inflight != 0)
        return;
    b->wh.rescan = false;
    rescan_arg_t a = {.b = b};
    int rc = ta_txn_begin(b->st, TA_ENV_AUDIT, false, &atxn);
    if (rc == 0)
        rc = ta_txn_begin(b->st, TA_ENV_LEDGER, false, &ltxn);
    if (rc == 0) {
        a.ltxn = ltxn;
        rc = ta_audit_warning_scan(b->st, atxn, TA_WH_PENDING, rescan_cb, &a);
    }
    if (ltxn)
        ta_txn_abort(ltxn);
    if (atxn)
        ta_txn_abort(atxn);
    if (b->wh.inflight >= WH_QUEUE)
        b->wh.rescan = true; /* there may be more */
    if (rc != 0) {
        ta_log(TA_LOG_WARN, "billing: pending warnings unreadable: %s", ta_strerror(rc));
        b->wh.rescan = true;
    }
    if (b->wh.inflight)
        ta_log(TA_LOG_INFO, "billing: %zu pending warning webhook(s) queued", b->wh.inflight);
}

/* Between batches: write results that came back while the ring was idle (a
 * small audit txn of the loop's own), then rescan when due. */
void ta_outbox_service(ta_billing_t *b)
{
    MDB_txn *txn;
    size_t rn;
    if (!b->wh.started)
        return;
    pthread_mutex_lock(&b->wh.mu);
    rn = b->wh.rn;
    pthread_mutex_unlock(&b->wh.mu);
    if (rn > 0 && ta_txn_begin(b->st, TA_ENV_AUDIT, true, &txn) == 0) {
        int rc = ta_outbox_write_results(b, txn);
        if (rc == 0)
            rc = ta_txn_commit(txn);
        else
            ta_txn_abort(txn);
        if (rc == 0) {
            ta_outbox_results_done(b);
            b->dirty = true;
        } else {
            b->wh.rdone = 0;
            ta_log(TA_LOG_WARN, "billing: webhook results not written (retried): %s",
                   ta_strerror(rc));
        }
    }
    ta_outbox_rescan(b);
}
