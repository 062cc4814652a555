/*
 * billing.c - the billing process: the ring's only consumer, the audit
 * environment's only writer, and the one place where a finished request is
 * settled (DESIGN.md sections 1, 4 and 6).
 *
 *   ring (MAP_SHARED)          ledger env                 audit env
 *   tail ... cursor ... head   meta applied_ticket = L    meta applied_ticket = A
 *    |  batch  |                ring_id                     ring_id
 *    +---------+--> txn 1: settle / release each t > L,   (L := last ticket of batch)
 *                           stash aborted records
 *              +--> txn 2: audit record / index / daily /  (A := last ticket of batch)
 *                           warnings for each t > A
 *              +--> ta_ring_release(cursor): only now may producers reuse the slots
 *
 * Exactly once: each environment stores the last ticket it applied in the
 * same transaction as the changes, so a transaction either applied a ticket
 * and says so, or did neither. Slots are released only after both
 * transactions committed, so after a crash anywhere the events of every
 * ticket above min(L, A) are still in the ring: the restarted billing reads
 * from the ring's tail and applies to each environment only tickets above its
 * own applied_ticket. Killed between the two commits, it re-applies the
 * audit side only.
 *
 * What the audit pass needs from the ledger pass is kept where a restart
 * finds it: per ticket, the ring slot's note word (which balance period the
 * cost went to, whether the ledger charged it, the warning level it raised);
 * for a dead worker, the aborted records are stashed in ledger meta
 * ("billing.aborted.<ticket>.<request id>"), written in txn 1 and deleted by
 * the next txn 1 once the audit env has applied that ticket. Warnings are
 * keyed by quota + period + threshold, so writing one twice is harmless.
 *
 * Dead letters (billing.h): a failed batch is retried one event at a time;
 * an event that fails alone with an error of its own (not map full, not
 * out of memory, not an LMDB failure) is written as-is to
 * "dead_letter.<ticket>.<ring id>" in the meta of the environment whose
 * pass failed, in the transaction that moves that applied_ticket past it,
 * so one bad event can't stop settlement for good. A ledger-side dead letter
 * marks the ticket's note NOTE_DEAD (and the key is looked up when the note
 * is lost) so the audit pass skips it too.
 *
 * Other duties: ta_store_sync() every sync_interval_ms and at exit;
 * ta_store_reader_check() after a dead-worker event (a child was replaced);
 * the heartbeat; retention pruning in small transactions; warning webhooks
 * from a separate thread fed by a bounded queue (a slow or dead webhook
 * endpoint never delays settlement; results are written back to the
 * warnings table by the main loop).
 *
 * Webhook outbox: the warning record is the outbox. It is written PENDING
 * (when a webhook is configured) in the audit transaction that raises it; the
 * thread only POSTs (no LMDB) and hands each result back through `res`; the
 * loop writes DELIVERED (a 2xx) or FAILED (the bounded retries of one round
 * failed; webhook_error holds the last error) in its next audit transaction
 * (a batch's, or a small one of its own when the ring is idle), and only then
 * forgets the job (`inflight`). A warning not queued (queue full, more than
 * WH_QUEUE in one batch) stays PENDING and is picked up by a rescan of the
 * warnings table, which runs at start (before any new warning is queued) and
 * later whenever nothing is in flight, so a rescan never queues a warning
 * twice. Killed after the commit and before its result was written, the
 * warning is still PENDING and the next billing posts it again: delivery is
 * at least once. Every POST carries a stable "id" (quota id "-" period start
 * in unix seconds "-" threshold, also sent as the Idempotency-Key header) for
 * receivers to drop duplicates.
 *
 * Billing process only (the standalone runner and tests use the same calls).
 */
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ledger/audit.h"
#include "ledger/billing.h"
#include "ledger/heartbeat.h"
#include "ledger/quota.h"
#include "ledger/ring.h"

#define NS_PER_MS 1000000LL
#define STASH_PREFIX "billing.aborted."
#define WH_QUEUE 64

volatile int ta_billing_test_stop_after_ledger;

/* note word, per ticket (ring slot): what the ledger pass decided */
#define NOTE_VALID (1ULL << 63)
#define NOTE_CHARGED (1ULL << 62)
#define NOTE_LEVEL_SHIFT 48 /* 4 bits: warn level raised to (0 = none) */
#define NOTE_PERIOD_MASK ((1ULL << 48) - 1)
#define NOTE_DEAD (1ULL << 61) /* the ledger pass dead-lettered this ticket */

#define DL_MAGIC "TADL"
#define DL_HDR 40 /* value header before the event bytes (billing.h) */

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
};

/* ---- webhook thread --------------------------------------------------------- */

static size_t discard_cb(char *p, size_t sz, size_t n, void *u) { return sz * n; }

static void *wh_main(void *arg)
{
    webhook_t *w = arg;
    CURL *c = curl_easy_init();
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->stop && w->jn == 0)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->stop)
            break;
        wh_job_t job = w->jobs[w->jhead];
        w->jhead = (w->jhead + 1) % WH_QUEUE;
        w->jn--;
        pthread_mutex_unlock(&w->mu);

        wh_res_t r = {.quota_id = job.quota_id, .period_start = job.period_start,
                      .threshold = job.threshold};
        char idh[96];
        snprintf(idh, sizeof(idh), "Idempotency-Key: %s", job.id);
        if (!c)
            snprintf(r.err, sizeof(r.err), "curl_easy_init failed");
        for (uint32_t i = 0; c && i < w->attempts && !r.ok; i++) {
            struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
            hdr = curl_slist_append(hdr, "Expect:");
            hdr = curl_slist_append(hdr, idh);
            curl_easy_reset(c);
            curl_easy_setopt(c, CURLOPT_URL, w->url);
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, job.body);
            curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
            curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
            curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)w->timeout_ms);
            curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard_cb);
            long code = 0;
            CURLcode cc = curl_easy_perform(c);
            if (cc == CURLE_OK)
                curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
            curl_slist_free_all(hdr);
            r.attempts = (int32_t)i + 1;
            r.status = cc == CURLE_OK ? (int32_t)code : -1;
            r.ok = cc == CURLE_OK && code >= 200 && code < 300;
            if (cc != CURLE_OK)
                snprintf(r.err, sizeof(r.err), "%s", curl_easy_strerror(cc));
            else if (!r.ok)
                snprintf(r.err, sizeof(r.err), "HTTP %ld", code);
            if (!r.ok && i + 1 < w->attempts) {
                /* back off 0.5 s, 1 s, 2 s ... 32 s at most, but wake at once on stop */
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                int64_t add = 500 * NS_PER_MS << (i < 6 ? i : 6);
                ts.tv_sec += (time_t)(add / 1000000000LL);
                ts.tv_nsec += (long)(add % 1000000000LL);
                if (ts.tv_nsec >= 1000000000L)
                    ts.tv_sec++, ts.tv_nsec -= 1000000000L;
                pthread_mutex_lock(&w->mu);
                if (!w->stop)
                    pthread_cond_timedwait(&w->cv, &w->mu, &ts);
                bool stop = w->stop;
                pthread_mutex_unlock(&w->mu);
                if (stop) {
                    r.interrupted = true;
                    break;
                }
            }
        }
        if (!r.ok && !r.interrupted)
            ta_log(TA_LOG_WARN, "billing: warning webhook for quota %" PRIu64 " at %d%%: failed "
                   "after %d attempts (last status %d)", r.quota_id, r.threshold, r.attempts, r.status);
        pthread_mutex_lock(&w->mu);
        if (w->rn < WH_QUEUE)
            w->res[w->rn++] = r;
    }
    pthread_mutex_unlock(&w->mu);
    if (c)
        curl_easy_cleanup(c);
    return NULL;
}

static void wh_start(webhook_t *w, const ta_billing_conf_t *conf)
{
    if (!conf->warning_webhook_url || !*conf->warning_webhook_url)
        return;
    snprintf(w->url, sizeof(w->url), "%s", conf->warning_webhook_url);
    w->timeout_ms = conf->webhook_timeout_ms > 0 ? conf->webhook_timeout_ms : 5000;
    w->attempts = conf->webhook_attempts > 0 ? conf->webhook_attempts : 3;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (pthread_create(&w->th, NULL, wh_main, w) != 0) {
        ta_log(TA_LOG_ERROR, "billing: cannot start the webhook thread; warnings stay pending");
        return;
    }
    w->started = true;
    w->rescan = true; /* post what a previous billing left pending */
}

static void wh_stop(webhook_t *w)
{
    if (!w->started)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->th, NULL);
    w->started = false;
}

/* Hand a committed PENDING warning to the thread. With WH_QUEUE jobs in
 * flight it stays PENDING and a later rescan queues it (never dropped). */
static void wh_queue(webhook_t *w, const wh_job_t *j)
{
    if (!w->started)
        return;
    if (w->inflight >= WH_QUEUE) {
        if (!w->rescan)
            ta_log(TA_LOG_WARN, "billing: webhook queue full; warning for quota %" PRIu64
                   " stays pending and is posted later", j->quota_id);
        w->rescan = true;
        return;
    }
    pthread_mutex_lock(&w->mu);
    w->jobs[(w->jhead + w->jn) % WH_QUEUE] = *j; /* jn <= inflight < WH_QUEUE */
    w->jn++;
    w->inflight++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* The POST of a warning record: the same bytes whichever billing sends it. */
static void wh_job_fill(wh_job_t *j, const ta_warning_t *w, const char *key_prefix)
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

/* ---- helpers ------------------------------------------------------------------ */

static int meta_get0(ta_store_t *st, MDB_txn *txn, ta_envid_t env, const char *name, uint64_t *v)
{
    int rc = ta_meta_get_u64(st, txn, env, name, v);
    if (rc == TA_ENOTFOUND) {
        *v = 0;
        return 0;
    }
    return rc;
}

/* The applied ticket of env, as this ring numbers tickets. */
static int applied_get(ta_billing_t *b, MDB_txn *txn, ta_envid_t env, uint64_t *applied)
{
    uint64_t rid;
    int rc = meta_get0(b->st, txn, env, "applied_ticket", applied);
    if (rc == 0)
        rc = meta_get0(b->st, txn, env, "ring_id", &rid);
    if (rc != 0)
        return rc;
    if (rid != 0 && rid != b->ring_id) {
        /* The ring file was replaced (resized when drained, or removed by an
         * operator): its tickets are not the ones applied_ticket counts. */
        ta_log(TA_LOG_WARN, "billing: ring id changed (%016" PRIx64 " -> %016" PRIx64
               "): %s applied ticket reset to %" PRIu64, rid, b->ring_id,
               env == TA_ENV_LEDGER ? "ledger" : "audit", b->first_tail - 1);
        *applied = b->first_tail - 1;
    }
    return 0;
}

static int applied_put(ta_billing_t *b, MDB_txn *txn, ta_envid_t env, uint64_t applied)
{
    int rc = ta_meta_put_u64(b->st, txn, env, "applied_ticket", applied);
    if (rc == 0)
        rc = ta_meta_put_u64(b->st, txn, env, "ring_id", b->ring_id);
    return rc;
}

/* How many warn_at thresholds the balance has reached. */
static int warn_level_of(const ta_quota_t *q, const ta_balance_t *bal)
{
    int lvl = 0;
    for (int i = 0; i < q->limits.nwarn && i < TA_MAX_WARN; i++) {
        __int128 pct = q->limits.warn_at[i];
        bool hit = (q->limits.cost_limit > 0 &&
                    (__int128)bal->cost_used * 100 >= (__int128)q->limits.cost_limit * pct) ||
                   (q->limits.token_limit > 0 &&
                    (__int128)bal->tokens_used * 100 >= (__int128)q->limits.token_limit * pct) ||
                   (q->limits.request_limit > 0 &&
                    (__int128)bal->requests_used * 100 >= (__int128)q->limits.request_limit * pct);
        if (hit)
            lvl = i + 1;
    }
    return lvl;
}

static void stash_name(char *buf, size_t cap, uint64_t ticket, const uint8_t rid[16])
{
    int n = snprintf(buf, cap, STASH_PREFIX "%020" PRIu64 ".", ticket);
    for (int i = 0; i < 16 && (size_t)n + 2 < cap; i++, n += 2)
        snprintf(buf + n, cap - (size_t)n, "%02x", rid[i]);
}

/* ---- dead letters (billing.h) ------------------------------------------------------ */

/* Errors that are the event's own (or its records') fault: retrying cannot
 * help, so the event is set aside. Anything else (map full, out of memory,
 * an LMDB or I/O failure) stops billing and nothing is skipped. */
static bool dl_eligible(int rc)
{
    switch (rc) {
    case TA_EINVAL: case TA_ENOTFOUND: case TA_EEXIST: case TA_ESCHEMA:
    case TA_ECORRUPT: case TA_ETOOBIG: case TA_EBUSY:
        return true;
    default:
        return false;
    }
}

static void dl_key(char *buf, size_t cap, uint64_t ticket, uint64_t ring_id)
{
    snprintf(buf, cap, TA_DEAD_LETTER_PREFIX "%020" PRIu64 ".%016" PRIx64, ticket, ring_id);
}

static void be32_put(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

static uint32_t be32_get(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Store ticket t's event as a dead letter in env's meta, in txn (the one
 * that also moves env's applied_ticket past t). */
static int dl_put(ta_billing_t *b, MDB_txn *txn, ta_envid_t env, uint64_t t, const ta_event_t *ev,
                  int err)
{
    uint8_t buf[DL_HDR + sizeof(ta_event_t)];
    char key[96], rid[33];
    memcpy(buf, DL_MAGIC, 4);
    buf[4] = 1;
    buf[5] = (uint8_t)env;
    buf[6] = buf[7] = 0;
    be32_put(buf + 8, (uint32_t)err);
    ta_be64_put(buf + 12, (uint64_t)ta_now_ns());
    ta_be64_put(buf + 20, b->ring_id);
    ta_be64_put(buf + 28, t);
    be32_put(buf + 36, (uint32_t)sizeof(ta_event_t));
    memcpy(buf + DL_HDR, ev, sizeof(*ev));
    dl_key(key, sizeof(key), t, b->ring_id);
    MDB_val k = {strlen(key), key}, v = {sizeof(buf), buf};
    int mrc = mdb_put(txn, ta_store_dbi(b->st, env == TA_ENV_AUDIT ? TA_DB_AUDIT_META : TA_DB_META),
                      &k, &v, 0);
    if (mrc != 0) {
        ta_log(TA_LOG_ERROR, "billing: write dead letter %s: %s", key, mdb_strerror(mrc));
        return mrc == MDB_MAP_FULL ? TA_EFULL : TA_ELMDB;
    }
    for (int i = 0; i < 16; i++)
        snprintf(rid + 2 * i, 3, "%02x", ev->request_id[i]);
    ta_log(TA_LOG_ERROR, "billing: ticket %" PRIu64 " (request %s, kind %u, quota %" PRIu64
           "): %s pass failed: %s; event set aside as dead letter %s (ledger verify lists it)",
           t, rid, ev->kind, ev->quota_id, env == TA_ENV_AUDIT ? "audit" : "ledger",
           ta_strerror(err), key);
    b->stats.dead_letters++;
    return 0;
}

/* Whether the ledger pass dead-lettered ticket t (when its note was lost). */
static bool dl_exists(ta_billing_t *b, MDB_txn *ltxn, uint64_t t)
{
    char key[96];
    dl_key(key, sizeof(key), t, b->ring_id);
    MDB_val k = {strlen(key), key}, v;
    return mdb_get(ltxn, ta_store_dbi(b->st, TA_DB_META), &k, &v) == 0;
}

int ta_dead_letter_walk(ta_store_t *st, MDB_txn *txn, ta_envid_t env, ta_dead_letter_cb cb,
                        void *arg)
{
    MDB_cursor *cur;
    MDB_val k, v;
    size_t plen = strlen(TA_DEAD_LETTER_PREFIX);
    int rc = 0, mrc = mdb_cursor_open(txn, ta_store_dbi(st, env == TA_ENV_AUDIT ? TA_DB_AUDIT_META
                                                                               : TA_DB_META), &cur);
    if (mrc != 0)
        return TA_ELMDB;
    k.mv_size = plen, k.mv_data = (void *)TA_DEAD_LETTER_PREFIX;
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size < plen || memcmp(k.mv_data, TA_DEAD_LETTER_PREFIX, plen) != 0)
            break;
        ta_dead_letter_t dl;
        const uint8_t *p = v.mv_data;
        char num[24];
        size_t nl = k.mv_size - plen < sizeof(num) - 1 ? k.mv_size - plen : sizeof(num) - 1;
        memset(&dl, 0, sizeof(dl));
        memcpy(num, (const char *)k.mv_data + plen, nl);
        num[nl] = '\0';
        dl.ticket = strtoull(num, NULL, 10); /* from the key, in case the value is damaged */
        dl.side = env;
        if (v.mv_size >= DL_HDR && memcmp(p, DL_MAGIC, 4) == 0) {
            dl.error = (int32_t)be32_get(p + 8);
            dl.at_ns = (int64_t)ta_be64_get(p + 12);
            dl.ring_id = ta_be64_get(p + 20);
            dl.ticket = ta_be64_get(p + 28);
            dl.ev_size = be32_get(p + 36);
            dl.raw = p + DL_HDR;
            dl.raw_len = v.mv_size - DL_HDR;
            memcpy(&dl.ev, dl.raw, dl.raw_len < sizeof(dl.ev) ? dl.raw_len : sizeof(dl.ev));
            dl.intact = p[4] == 1 && dl.ev_size == sizeof(ta_event_t) && dl.raw_len == dl.ev_size;
        } else {
            dl.raw = p;
            dl.raw_len = v.mv_size;
        }
        if ((rc = cb(&dl, arg)) < 0)
            break;
        rc = 0;
    }
    mdb_cursor_close(cur);
    if (rc == 0 && mrc != 0 && mrc != MDB_NOTFOUND)
        rc = TA_ELMDB;
    return rc;
}

/* ---- ledger pass ---------------------------------------------------------------- */

static int ledger_request(ta_billing_t *b, MDB_txn *txn, uint64_t t, const ta_event_t *ev)
{
    uint64_t note = NOTE_VALID;
    int rc = 0;
    if (ev->flags & TA_EVF_HOLD) {
        ta_hold_t h;
        bool held = ta_rec_get_k(b->st, txn, &ta_desc_hold, TA_DB_HOLDS, ev->request_id, 16, &h) == 0;
        rc = ta_quota_settle(b->st, txn, ev, b->conf.quota_timezone);
        if (rc != 0)
            return rc;
        if (held) {
            ta_quota_t q;
            ta_balance_t bal;
            note |= NOTE_CHARGED;
            b->stats.settled++;
            if (ta_rec_get(b->st, txn, &ta_desc_quota, h.quota_id, &q) == 0 &&
                ta_rec_get(b->st, txn, &ta_desc_balance, h.quota_id, &bal) == 0) {
                if (q.limits.period != TA_PERIOD_NONE)
                    note |= (uint64_t)bal.period_start & NOTE_PERIOD_MASK;
                int lvl = warn_level_of(&q, &bal);
                bal.settled_ticket = (int64_t)t;
                if (lvl > bal.warn_level) {
                    bal.warn_level = lvl;
                    note |= (uint64_t)lvl << NOTE_LEVEL_SHIFT;
                }
                rc = ta_rec_put(b->st, txn, &ta_desc_balance, h.quota_id, &bal);
            }
        } else {
            ta_log(TA_LOG_WARN, "billing: ticket %" PRIu64 ": hold already gone; not charged", t);
        }
    } else {
        b->stats.refused++;
    }
    ta_ring_set_note(b->ring, t, (int64_t)note);
    return rc;
}

static int ledger_worker_dead(ta_billing_t *b, MDB_txn *txn, uint64_t t, const ta_event_t *ev)
{
    enum { MAXIDS = 64 };
    uint8_t ids[MAXIDS][16];
    for (;;) {
        size_t n = 0;
        int rc = ta_quota_holds_of_pid(b->st, txn, ev->worker_pid, ids, MAXIDS, &n);
        if (rc != 0)
            return rc;
        size_t m = n < MAXIDS ? n : MAXIDS;
        for (size_t i = 0; i < m; i++) {
            ta_event_t ab;
            rc = ta_quota_release(b->st, txn, ids[i], &ab);
            if (rc == TA_ENOTFOUND)
                continue;
            if (rc != 0)
                return rc;
            ab.flags |= TA_EVF_ABORTED;
            ta_audit_t rec;
            ta_audit_from_event(&ab, t, ab.hold_period_start, false, &rec);
            rec.aborted = true;
            uint8_t buf[4096];
            int len = ta_rec_encode(&ta_desc_audit, &rec, buf, sizeof(buf));
            if (len < 0)
                return len;
            char name[96];
            stash_name(name, sizeof(name), t, ids[i]);
            MDB_val k = {strlen(name), name}, v = {(size_t)len, buf};
            int mrc = mdb_put(txn, ta_store_dbi(b->st, TA_DB_META), &k, &v, 0);
            if (mrc != 0) {
                ta_log(TA_LOG_ERROR, "billing: stash aborted record: %s", mdb_strerror(mrc));
                return mrc == MDB_MAP_FULL ? TA_EFULL : TA_ELMDB;
            }
            b->stats.aborted++;
            b->stash_dirty = true;
        }
        if (n <= MAXIDS)
            break;
    }
    ta_log(TA_LOG_INFO, "billing: worker %d dead: its holds released (ticket %" PRIu64 ")",
           (int)ev->worker_pid, t);
    return 0;
}

/* Delete stashed aborted records the audit env has applied (ticket <= upto). */
static int stash_cleanup(ta_billing_t *b, MDB_txn *txn, uint64_t upto)
{
    MDB_cursor *cur;
    MDB_val k, v;
    bool left = false;
    int mrc = mdb_cursor_open(txn, ta_store_dbi(b->st, TA_DB_META), &cur);
    if (mrc != 0)
        return TA_ELMDB;
    size_t plen = strlen(STASH_PREFIX);
    k.mv_size = plen, k.mv_data = (void *)STASH_PREFIX;
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); mrc == 0;) {
        if (k.mv_size < plen + 20 || memcmp(k.mv_data, STASH_PREFIX, plen) != 0)
            break;
        uint64_t t = strtoull(((const char *)k.mv_data) + plen, NULL, 10);
        if (t <= upto) {
            if ((mrc = mdb_cursor_del(cur, 0)) != 0)
                break;
            mrc = mdb_cursor_get(cur, &k, &v, MDB_GET_CURRENT);
            if (mrc == EINVAL)
                mrc = MDB_NOTFOUND;
            continue;
        }
        left = true;
        mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (mrc != 0 && mrc != MDB_NOTFOUND) {
        ta_log(TA_LOG_ERROR, "billing: stash cleanup: %s", mdb_strerror(mrc));
        return TA_ELMDB;
    }
    b->stash_dirty = left;
    return 0;
}

/* ---- audit pass ------------------------------------------------------------------ */

static int audit_warnings(ta_billing_t *b, MDB_txn *atxn, MDB_txn *ltxn, uint64_t quota_id,
                          int64_t period, int level)
{
    ta_quota_t q;
    ta_balance_t bal;
    if (ta_rec_get(b->st, ltxn, &ta_desc_quota, quota_id, &q) != 0)
        return 0;
    if (ta_rec_get(b->st, ltxn, &ta_desc_balance, quota_id, &bal) != 0)
        memset(&bal, 0, sizeof(bal));
    for (int i = 0; i < level && i < q.limits.nwarn && i < TA_MAX_WARN; i++) {
        ta_warning_t w;
        int rc = ta_audit_warning_get(b->st, atxn, quota_id, period, q.limits.warn_at[i], &w);
        if (rc == 0)
            continue;
        if (rc != TA_ENOTFOUND)
            return rc;
        memset(&w, 0, sizeof(w));
        w.quota_id = quota_id;
        w.user_id = q.user_id;
        w.period_start = period;
        w.threshold = q.limits.warn_at[i];
        w.raised_at_ns = ta_now_ns();
        w.cost_used = bal.cost_used;
        w.cost_limit = q.limits.cost_limit;
        w.tokens_used = bal.tokens_used;
        w.token_limit = q.limits.token_limit;
        w.requests_used = bal.requests_used;
        w.request_limit = q.limits.request_limit;
        if (b->conf.warning_webhook_url && *b->conf.warning_webhook_url)
            w.webhook_state = TA_WH_PENDING; /* the outbox entry */
        if ((rc = ta_audit_warning_put(b->st, atxn, &w)) != 0)
            return rc;
        b->stats.warnings++;
        ta_log(TA_LOG_INFO, "billing: quota %" PRIu64 " reached %d%% of its limit", quota_id,
               w.threshold);
        if (b->nout < WH_QUEUE)
            wh_job_fill(&b->out[b->nout++], &w, q.key_prefix);
        else
            b->wh.rescan = true; /* stays pending: a later rescan posts it */
    }
    return 0;
}

static int audit_worker_dead(ta_billing_t *b, MDB_txn *atxn, MDB_txn *ltxn, uint64_t t)
{
    char prefix[64];
    int plen = snprintf(prefix, sizeof(prefix), STASH_PREFIX "%020" PRIu64 ".", t);
    MDB_cursor *cur;
    MDB_val k = {(size_t)plen, prefix}, v;
    int rc = 0, mrc = mdb_cursor_open(ltxn, ta_store_dbi(b->st, TA_DB_META), &cur);
    if (mrc != 0)
        return TA_ELMDB;
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size < (size_t)plen || memcmp(k.mv_data, prefix, (size_t)plen) != 0)
            break;
        ta_audit_t rec;
        if ((rc = ta_rec_decode(&ta_desc_audit, v.mv_data, v.mv_size, &rec)) != 0)
            break;
        if ((rc = ta_audit_put(b->st, atxn, &rec)) < 0)
            break;
        rc = 0;
    }
    mdb_cursor_close(cur);
    if (rc == 0 && mrc != 0 && mrc != MDB_NOTFOUND)
        rc = TA_ELMDB;
    return rc;
}

/* Write the thread's results into atxn. They stay in `res` (and in flight)
 * until wh_results_done() after the commit: an aborted txn loses none. */
static int audit_webhook_results(ta_billing_t *b, MDB_txn *atxn)
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
static void wh_results_done(ta_billing_t *b)
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
    wh_job_fill(&j, w, q.key_prefix);
    wh_queue(&a->b->wh, &j);
    return 0;
}

/* Queue the PENDING warnings. Only with nothing in flight: every PENDING
 * record is then one that no job carries, so none is queued twice. */
static void wh_rescan(ta_billing_t *b)
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
static void wh_service(ta_billing_t *b)
{
    MDB_txn *txn;
    size_t rn;
    if (!b->wh.started)
        return;
    pthread_mutex_lock(&b->wh.mu);
    rn = b->wh.rn;
    pthread_mutex_unlock(&b->wh.mu);
    if (rn > 0 && ta_txn_begin(b->st, TA_ENV_AUDIT, true, &txn) == 0) {
        int rc = audit_webhook_results(b, txn);
        if (rc == 0)
            rc = ta_txn_commit(txn);
        else
            ta_txn_abort(txn);
        if (rc == 0) {
            wh_results_done(b);
            b->dirty = true;
        } else {
            b->wh.rdone = 0;
            ta_log(TA_LOG_WARN, "billing: webhook results not written (retried): %s",
                   ta_strerror(rc));
        }
    }
    wh_rescan(b);
}

/* Apply items[0..n) (tickets < upto, some of [tail, upto) skipped) to both
 * environments. */
static int apply_batch(ta_billing_t *b, size_t n, uint64_t upto)
{
    MDB_txn *txn = NULL, *ltxn = NULL;
    uint64_t applied;
    bool dead = false;
    int rc;

    /* txn 1: ledger */
    if ((rc = ta_txn_begin(b->st, TA_ENV_LEDGER, true, &txn)) != 0)
        return rc;
    if ((rc = applied_get(b, txn, TA_ENV_LEDGER, &applied)) != 0)
        goto Fail;
    if (b->stash_dirty && (rc = stash_cleanup(b, txn, b->aud_applied)) != 0)
        goto Fail;
    for (size_t i = 0; i < n; i++) {
        const ta_ring_item_t *it = &b->items[i];
        if (it->ticket <= applied)
            continue;
        /* no note left from an attempt that rolled back (NOTE_DEAD would
         * make the audit pass skip a ticket this pass applies) */
        ta_ring_set_note(b->ring, it->ticket, 0);
        if (it->ev.kind == TA_EV_REQUEST) {
            rc = ledger_request(b, txn, it->ticket, &it->ev);
        } else if (it->ev.kind == TA_EV_WORKER_DEAD) {
            rc = ledger_worker_dead(b, txn, it->ticket, &it->ev);
            dead = true;
        } else {
            /* set aside below (dead letters are written only for a batch
             * of one, so a rolled-back batch never logs or counts one) */
            ta_log(TA_LOG_ERROR, "billing: ticket %" PRIu64 ": unknown event kind %u",
                   it->ticket, it->ev.kind);
            rc = TA_EINVAL;
        }
        if (rc != 0) {
            ta_log(TA_LOG_ERROR, "billing: ticket %" PRIu64 " (ledger): %s", it->ticket,
                   ta_strerror(rc));
            if (!b->single || !dl_eligible(rc))
                goto Fail; /* step() retries one event at a time, or stops */
            /* This event alone fails: drop what it wrote, and in a fresh
             * transaction set it aside and move past it (exactly once:
             * the dead letter and applied_ticket commit together). */
            int err = rc;
            ta_txn_abort(txn);
            dead = false;
            if ((rc = ta_txn_begin(b->st, TA_ENV_LEDGER, true, &txn)) != 0)
                return rc;
            if ((rc = applied_get(b, txn, TA_ENV_LEDGER, &applied)) != 0 ||
                (rc = dl_put(b, txn, TA_ENV_LEDGER, it->ticket, &it->ev, err)) != 0)
                goto Fail;
            ta_ring_set_note(b->ring, it->ticket, (int64_t)NOTE_DEAD);
            break;
        }
    }
    if (upto - 1 > applied && (rc = applied_put(b, txn, TA_ENV_LEDGER, upto - 1)) != 0)
        goto Fail;
    if ((rc = ta_txn_commit(txn)) != 0)
        return rc;
    txn = NULL;
    b->stats.ledger_applied = upto - 1;
    b->dirty = true;
    if (dead)
        ta_store_reader_check(b->st);
    if (ta_billing_test_stop_after_ledger) {
        ta_billing_test_stop_after_ledger = 0;
        return -EINTR;
    }

    /* txn 2: audit (with a ledger read txn for stashes, quotas and balances) */
    b->nout = 0;
    if ((rc = ta_txn_begin(b->st, TA_ENV_AUDIT, true, &txn)) != 0)
        return rc;
    if ((rc = ta_txn_begin(b->st, TA_ENV_LEDGER, false, &ltxn)) != 0)
        goto Fail;
    if ((rc = applied_get(b, txn, TA_ENV_AUDIT, &applied)) != 0)
        goto Fail;
    for (size_t i = 0; i < n; i++) {
        const ta_ring_item_t *it = &b->items[i];
        if (it->ticket <= applied)
            continue;
        uint64_t note = (uint64_t)ta_ring_note(b->ring, it->ticket);
        if ((note & NOTE_DEAD) || (!(note & NOTE_VALID) && dl_exists(b, ltxn, it->ticket)))
            continue; /* the ledger pass set it aside: nothing of it is applied */
        if (it->ev.kind == TA_EV_REQUEST) {
            ta_audit_t rec;
            int64_t period = (int64_t)(note & NOTE_PERIOD_MASK);
            int level = (int)((note >> NOTE_LEVEL_SHIFT) & 0xf);
            if (!(note & NOTE_VALID))
                ta_log(TA_LOG_WARN, "billing: ticket %" PRIu64 ": no ledger note", it->ticket);
            ta_audit_from_event(&it->ev, it->ticket, period, (note & NOTE_CHARGED) != 0, &rec);
            rc = ta_audit_put(b->st, txn, &rec);
            if (rc > 0)
                rc = 0;
            if (rc == 0 && level > 0)
                rc = audit_warnings(b, txn, ltxn, it->ev.quota_id, period, level);
        } else if (it->ev.kind == TA_EV_WORKER_DEAD) {
            rc = audit_worker_dead(b, txn, ltxn, it->ticket);
        }
        if (rc != 0) {
            ta_log(TA_LOG_ERROR, "billing: ticket %" PRIu64 " (audit): %s", it->ticket,
                   ta_strerror(rc));
            if (!b->single || !dl_eligible(rc))
                goto Fail;
            /* The ledger settled it; its audit side alone fails: set it
             * aside in the audit env with the audit applied_ticket. */
            int err = rc;
            ta_txn_abort(txn);
            b->nout = 0; /* warnings of the aborted transaction */
            if ((rc = ta_txn_begin(b->st, TA_ENV_AUDIT, true, &txn)) != 0) {
                txn = NULL;
                goto Fail;
            }
            if ((rc = applied_get(b, txn, TA_ENV_AUDIT, &applied)) != 0 ||
                (rc = dl_put(b, txn, TA_ENV_AUDIT, it->ticket, &it->ev, err)) != 0)
                goto Fail;
            break;
        }
    }
    if ((rc = audit_webhook_results(b, txn)) != 0)
        goto Fail;
    if (upto - 1 > applied && (rc = applied_put(b, txn, TA_ENV_AUDIT, upto - 1)) != 0)
        goto Fail;
    ta_txn_abort(ltxn);
    ltxn = NULL;
    if ((rc = ta_txn_commit(txn)) != 0)
        return rc;
    b->aud_applied = upto - 1;
    b->stats.audit_applied = upto - 1;
    wh_results_done(b);
    for (size_t i = 0; i < b->nout; i++)
        wh_queue(&b->wh, &b->out[i]);
    b->nout = 0;
    return 0;
Fail:
    if (ltxn)
        ta_txn_abort(ltxn);
    if (txn)
        ta_txn_abort(txn);
    b->wh.rdone = 0; /* results not written: they stay queued */
    return rc;
}

/* ---- holds of processes that are gone -------------------------------------------- */

/* The master pushes TA_EV_WORKER_DEAD only for children it reaps itself. A
 * hold can outlive its worker without one: the worker belonged to a master
 * that was killed (PR_SET_PDEATHSIG stopped it; its shutdown bound cut a
 * request, or the whole group was SIGKILLed), or it exited with requests in
 * flight. So billing looks itself, at start and every SWEEP_NS: for every pid
 * that owns a hold and no longer runs it pushes TA_EV_WORKER_DEAD into the
 * ring. The master's ordering argument holds: the process is gone, so every
 * event it published has a smaller ticket than the one claimed now and is
 * applied first (settling its hold); what is left when the control event is
 * applied was never published and is released with an aborted record by the
 * usual path, exactly once. A pid reused by another process is taken as
 * alive (its holds wait for a later sweep): never release a live worker's. */
#define SWEEP_NS (5LL * 1000000000LL)

static bool pid_gone(int32_t pid)
{
    char path[64], buf[256];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return errno == ENOENT;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the state follows the command name */
    return p != NULL && (p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X'));
}

static void sweep_dead_holders(ta_billing_t *b)
{
    enum { MAXPIDS = 512 }; /* distinct pids looked at per sweep (two generations of workers fit) */
    int32_t seen[MAXPIDS], gone[MAXPIDS];
    size_t nseen = 0, ngone = 0;
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v;
    if (ta_txn_begin(b->st, TA_ENV_LEDGER, false, &txn) != 0)
        return;
    if (mdb_cursor_open(txn, ta_store_dbi(b->st, TA_DB_HOLDS), &cur) == 0) {
        for (int mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0 && nseen < MAXPIDS;
             mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            ta_hold_t h;
            bool known = false;
            if (ta_rec_decode(&ta_desc_hold, v.mv_data, v.mv_size, &h) != 0 || h.worker_pid <= 0)
                continue;
            for (size_t i = 0; i < nseen && !known; i++)
                known = seen[i] == h.worker_pid;
            if (known)
                continue;
            seen[nseen++] = h.worker_pid;
            if (pid_gone(h.worker_pid))
                gone[ngone++] = h.worker_pid;
        }
        mdb_cursor_close(cur);
    }
    ta_txn_abort(txn);
    for (size_t i = 0; i < ngone; i++) {
        ta_event_t ev;
        uint64_t t;
        memset(&ev, 0, sizeof(ev));
        ev.kind = TA_EV_WORKER_DEAD;
        ev.worker_pid = gone[i];
        ev.t_received_ns = ev.t_done_ns = ta_now_ns();
        if (ta_ring_push(b->ring, &ev, &t) != 0)
            break; /* ring full: the next sweep tries again */
        ta_log(TA_LOG_INFO, "billing: process %d holds requests and is gone: releasing them "
               "(ticket %" PRIu64 ")", (int)gone[i], t);
    }
}

static void prune(ta_billing_t *b)
{
    if (b->conf.audit_retention_days <= 0)
        return;
    int64_t before = ta_now_ns() - b->conf.audit_retention_days * 86400LL * 1000000000LL;
    for (int round = 0; round < 10; round++) {
        MDB_txn *txn;
        size_t del = 0;
        bool more = false;
        if (ta_txn_begin(b->st, TA_ENV_AUDIT, true, &txn) != 0)
            return;
        if (ta_audit_prune(b->st, txn, before, 1000, &del, &more) != 0) {
            ta_txn_abort(txn);
            return;
        }
        if (ta_txn_commit(txn) != 0)
            return;
        if (del)
            b->dirty = true;
        if (!more)
            return;
    }
}

/* ---- the loop ------------------------------------------------------------------- */

int ta_billing_open(const ta_billing_conf_t *conf, ta_billing_t **out)
{
    *out = NULL;
    ta_billing_t *b = calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    b->conf = *conf;
    if (!b->conf.quota_timezone || !*b->conf.quota_timezone)
        b->conf.quota_timezone = ta_quota_timezone();
    b->batch_max = conf->batch_max ? conf->batch_max : 512;
    b->linger_ns = conf->batch_linger_us < 0 ? 0 : (conf->batch_linger_us ? conf->batch_linger_us : 1000) * 1000;
    int rc = -ENOMEM;
    b->items = malloc(b->batch_max * sizeof(*b->items));
    if (!b->items)
        goto Fail;
    ta_store_opts_t so = conf->store_opts;
    so.create = false;
    so.readonly = false;
    if ((rc = ta_store_open(&b->st, conf->data_dir, &so)) != 0) {
        ta_log(TA_LOG_ERROR, "billing: cannot open the store in %s: %s", conf->data_dir,
               ta_strerror(rc));
        goto Fail;
    }
    if (conf->ring) {
        b->ring = conf->ring;
    } else {
        char path[4096];
        snprintf(path, sizeof(path), "%s/ring", conf->data_dir);
        rc = ta_ring_create_or_attach(path, conf->ring_slots ? conf->ring_slots : TA_RING_DEFAULT_SLOTS,
                                      &b->ring);
        if (rc != 0)
            goto Fail;
        b->own_ring = true;
    }
    ta_ring_set_skip_ns(b->ring, (conf->ring_skip_ms > 0 ? conf->ring_skip_ms : 2000) * NS_PER_MS);
    b->ring_id = ta_ring_id(b->ring);
    b->first_tail = b->cursor = ta_ring_tail(b->ring);

    MDB_txn *txn;
    uint64_t led = 0;
    if ((rc = ta_txn_begin(b->st, TA_ENV_AUDIT, false, &txn)) != 0)
        goto Fail;
    rc = applied_get(b, txn, TA_ENV_AUDIT, &b->aud_applied);
    ta_txn_abort(txn);
    if (rc == 0 && (rc = ta_txn_begin(b->st, TA_ENV_LEDGER, false, &txn)) == 0) {
        rc = applied_get(b, txn, TA_ENV_LEDGER, &led);
        ta_txn_abort(txn);
    }
    if (rc != 0)
        goto Fail;
    b->stash_dirty = true; /* a previous billing may have left some */
    b->stats.ledger_applied = led;
    b->stats.audit_applied = b->aud_applied;
    if (led != b->aud_applied)
        ta_log(TA_LOG_WARN, "billing: recovering: ledger applied up to ticket %" PRIu64
               ", audit up to %" PRIu64 "; re-applying the missing side only", led, b->aud_applied);
    ta_log(TA_LOG_INFO, "billing: started at ring ticket %" PRIu64 " (head %" PRIu64 ")", b->cursor,
           ta_ring_head(b->ring));
    wh_start(&b->wh, &b->conf);
    wh_rescan(b); /* before any new warning: pending ones go first */
    b->last_sync = b->last_prune = ta_mono_ns();
    *out = b;
    return 0;
Fail:
    ta_billing_close(b);
    return rc;
}

/* items[0..n) were read and fewer than max. Each batch costs two commits
 * (ledger, audit) whatever its size, and with a busy ring a batch of one or
 * two events is what a consumer that never waits gets. While events keep
 * arriving (the last batch is recent), sleep until the oldest event read has
 * waited linger_ns since it was published, then take what came meanwhile.
 * Settlement is thus delayed by at most linger_ns; an idle ring never waits.
 * Sleeping without ta_ring_wait() also leaves `waiters` clear, so producers
 * skip the FUTEX_WAKE while billing is busy. Returns the items added. */
static size_t gather(ta_billing_t *b, size_t n, size_t max)
{
    if (b->linger_ns <= 0 || n == 0 || n >= max)
        return 0;
    int64_t now = ta_mono_ns();
    if (b->last_batch_ns == 0 || now - b->last_batch_ns > 10 * b->linger_ns)
        return 0;
    int64_t age = ta_now_ns() - b->items[0].ev.t_done_ns; /* wall clock: clamp below */
    int64_t wait = b->linger_ns - (age > 0 ? age : 0);
    if (wait < 50000) /* not worth a sleep */
        return 0;
    struct timespec ts = {0, (long)(wait < 999999999 ? wait : 999999999)};
    nanosleep(&ts, NULL);
    return ta_ring_consume(b->ring, &b->cursor, b->items + n, max - n);
}

int ta_billing_step(ta_billing_t *b, int wait_ms)
{
    ta_heartbeat_beat();
    uint64_t start = b->cursor;
    size_t max = b->single ? 1 : b->batch_max;
    size_t n = ta_ring_consume(b->ring, &b->cursor, b->items, max);
    if (n == 0 && b->cursor == start && wait_ms > 0) {
        ta_ring_wait(b->ring, b->cursor, wait_ms);
        n = ta_ring_consume(b->ring, &b->cursor, b->items, max);
    }
    n += gather(b, n, max);
    int rc = 0;
    if (b->cursor != start) {
        uint64_t warnings0 = b->stats.warnings;
        b->stats.skipped = ta_ring_skipped(b->ring);
        rc = apply_batch(b, n, b->cursor);
        if (rc != 0)
            b->stats.warnings = warnings0; /* rolled back with the batch */
        if (rc == 0) {
            ta_heartbeat_billing_progress(n, b->stats.warnings - warnings0);
            ta_ring_release(b->ring, b->cursor);
            b->stats.batches++;
            b->stats.events += n;
            b->single = false;
            b->last_batch_ns = ta_mono_ns();
        } else {
            /* Nothing was released: read the same tickets again, one at a
             * time, so a batch that fails for one event still applies the
             * others. A single event that fails with an error of its own is
             * set aside as a dead letter by apply_batch(); any other failure
             * is fatal (the master restarts billing with backoff and it
             * retries from the ring). */
            b->cursor = start;
            if (rc == -EINTR || rc == TA_EFULL || b->single)
                return rc;
            b->single = true;
            return 0;
        }
    }
    wh_service(b);
    int64_t now = ta_mono_ns();
    int64_t sync_ns = (b->conf.sync_interval_ms > 0 ? b->conf.sync_interval_ms : 100) * NS_PER_MS;
    if (b->dirty && now - b->last_sync >= sync_ns) {
        ta_store_sync(b->st);
        b->dirty = false;
        b->last_sync = now;
    }
    if (now - b->last_prune >= 60LL * 1000000000LL) {
        prune(b);
        b->last_prune = now;
    }
    return rc < 0 ? rc : (int)(b->cursor - start);
}

void ta_billing_close(ta_billing_t *b)
{
    if (!b)
        return;
    wh_stop(&b->wh);
    if (b->st) {
        ta_store_sync(b->st);
        ta_store_close(b->st);
    }
    if (b->own_ring)
        ta_ring_close(b->ring);
    free(b->items);
    free(b);
}

const ta_billing_stats_t *ta_billing_stats(const ta_billing_t *b) { return &b->stats; }
ta_store_t *ta_billing_store(ta_billing_t *b) { return b->st; }

int ta_billing_run(const ta_billing_conf_t *conf, volatile sig_atomic_t *stop)
{
    ta_billing_t *b;
    ta_heartbeat_beat();
    int rc = ta_billing_open(conf, &b);
    if (rc != 0)
        return rc;
    prune(b);
    sweep_dead_holders(b);
    int64_t drain_deadline = 0, last_sweep = ta_mono_ns();
    for (;;) {
        if (ta_mono_ns() - last_sweep >= SWEEP_NS) {
            sweep_dead_holders(b);
            last_sweep = ta_mono_ns();
        }
        if (*stop && drain_deadline == 0) {
            int64_t skip = conf->ring_skip_ms > 0 ? conf->ring_skip_ms : 2000;
            int64_t d = conf->drain_ms > 0 ? conf->drain_ms : skip + 2000;
            drain_deadline = ta_mono_ns() + d * NS_PER_MS;
            ta_log(TA_LOG_INFO, "billing: stopping: draining the ring (%" PRIu64 " tickets)",
                   ta_ring_head(b->ring) - b->cursor);
        }
        rc = ta_billing_step(b, 100);
        if (rc < 0) {
            ta_log(TA_LOG_ERROR, "billing: fatal: %s", ta_strerror(rc));
            break;
        }
        if (drain_deadline) {
            if (rc == 0 && ta_ring_head(b->ring) == b->cursor)
                break;
            if (ta_mono_ns() > drain_deadline) {
                ta_log(TA_LOG_WARN, "billing: drain bound reached with %" PRIu64
                       " tickets unapplied (they stay in the ring)", ta_ring_head(b->ring) - b->cursor);
                break;
            }
        }
        rc = 0;
    }
    ta_log(TA_LOG_INFO, "billing: exit after %" PRIu64 " events in %" PRIu64 " batches",
           b->stats.events, b->stats.batches);
    ta_billing_close(b);
    return rc < 0 ? rc : 0;
}
