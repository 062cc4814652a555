/*
 * billing.c - the billing process: the ring's only consumer, the audit
 * environment's only writer, and the one place where a finished request is
 * settled (docs/ARCHITECTURE.md, "The ring and billing").
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
 * the heartbeat; retention pruning in small transactions; the warning
 * webhook (webhook.c: a thread fed by a bounded queue, so a slow or dead
 * endpoint never delays settlement; outbox.c: its at-least-once outbox in the
 * warnings table); the sweep for holds and spools of processes that are gone
 * (sweep.c); the spools of stopped workers (spool.c). billing_internal.h lists the parts.
 *
 * Billing process only (the standalone runner and tests use the same calls).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ledger/audit.h"
#include "ledger/billing_internal.h"
#include "ledger/heartbeat.h"
#include "ledger/quota.h"

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

/* ---- ledger pass ---------------------------------------------------------------- */

/* The batch's quotas and balances (billing_internal.h, settle_slot_t): each
 * read once per batch, each balance written once, by settle_flush() before
 * the ledger transaction commits. Anything else that writes balances in the
 * same transaction (a dead worker's releases) runs after settle_flush() and
 * settle_forget(). */
static settle_slot_t *settle_slot(ta_billing_t *b, MDB_txn *txn, uint64_t quota_id, int64_t now_s,
                                  int *rc)
{
    size_t i = (size_t)(quota_id * 0x9E3779B97F4A7C15ULL >> 40) & (SETTLE_SLOTS - 1);
    while (b->settle[i].used && b->settle[i].quota_id != quota_id)
        i = (i + 1) & (SETTLE_SLOTS - 1);
    settle_slot_t *s = &b->settle[i];
    *rc = 0;
    if (s->used)
        return s;
    memset(s, 0, sizeof(*s));
    s->quota_id = quota_id;
    *rc = ta_rec_get(b->st, txn, &ta_desc_quota, quota_id, &s->q);
    s->quota_found = *rc == 0;
    if (*rc == TA_ENOTFOUND) /* deleted: settled as quota.c settles it */
        *rc = ta_quota_read(b->st, txn, quota_id, &s->q);
    if (*rc != 0 ||
        (*rc = ta_quota_balance_read(b->st, txn, &s->q, now_s, b->conf.quota_timezone, &s->bal)) != 0)
        return NULL;
    s->used = true;
    b->settle_order[b->nsettle++] = (uint32_t)i;
    return s;
}

/* Forget the batch's quotas and balances (after settle_flush, or with an
 * aborted transaction); closes the holds cursor. */
static void settle_forget(ta_billing_t *b)
{
    for (size_t i = 0; i < b->nsettle; i++)
        b->settle[b->settle_order[i]].used = false;
    b->nsettle = 0;
    if (b->holds_cur != NULL)
        mdb_cursor_close(b->holds_cur);
    b->holds_cur = NULL;
}

/* Write the balances the batch changed, each once. */
static int settle_flush(ta_billing_t *b, MDB_txn *txn)
{
    for (size_t i = 0; i < b->nsettle; i++) {
        settle_slot_t *s = &b->settle[b->settle_order[i]];
        int rc;
        if (s->dirty && (rc = ta_rec_put(b->st, txn, &ta_desc_balance, s->quota_id, &s->bal)) != 0)
            return rc;
        s->dirty = false;
    }
    return 0;
}

int ta_billing_settle(ta_billing_t *b, MDB_txn *txn, uint64_t t, const ta_event_t *ev,
                      uint64_t *notep)
{
    if (!(ev->flags & TA_EVF_HOLD)) { /* refused before anything was held */
        b->stats.refused++;
        *notep = NOTE_VALID;
        return 0;
    }
    if (ev->kind != TA_EV_REQUEST)
        return TA_EINVAL;
    int mrc, rc;
    if (b->nsettle + 1 > SETTLE_FILL) { /* a batch of many quotas: write what it has */
        MDB_cursor *keep = b->holds_cur;
        b->holds_cur = NULL;
        if ((rc = settle_flush(b, txn)) != 0)
            return rc;
        settle_forget(b);
        b->holds_cur = keep;
    }
    if (b->holds_cur == NULL &&
        (mrc = mdb_cursor_open(txn, ta_store_dbi(b->st, TA_DB_HOLDS), &b->holds_cur)) != 0) {
        b->holds_cur = NULL;
        return TA_ELMDB;
    }
    /* one search finds the hold and deletes it */
    ta_hold_t hbuf;
    const ta_hold_t *h = &hbuf;
    MDB_val k = {16, (void *)ev->request_id}, v;
    mrc = mdb_cursor_get(b->holds_cur, &k, &v, MDB_SET_KEY);
    if (mrc == 0 && (rc = ta_rec_decode(&ta_desc_hold, v.mv_data, v.mv_size, &hbuf)) != 0)
        return rc; /* the hold stays: this event is set aside (dead letter) */
    if (mrc == 0 && (mrc = mdb_cursor_del(b->holds_cur, 0)) != 0) {
        ta_log(TA_LOG_ERROR, "billing: delete hold: %s", mdb_strerror(mrc));
        return mrc == MDB_MAP_FULL ? TA_EFULL : TA_ELMDB;
    }
    if (mrc == MDB_NOTFOUND) {
        ta_log(TA_LOG_WARN, "billing: ticket %" PRIu64 ": hold already gone; not charged", t);
        *notep = NOTE_VALID;
        return 0; /* already settled or released */
    }
    if (mrc != 0)
        return TA_ELMDB;
    int64_t now_ns = ev->t_done_ns > 0 ? ev->t_done_ns : ta_now_ns();
    settle_slot_t *s = settle_slot(b, txn, h->quota_id, now_ns / 1000000000LL, &rc);
    if (s == NULL)
        return rc;
    ta_quota_settle_balance(&s->q, h, ev, b->conf.quota_timezone, &s->bal);
    s->dirty = true;
    uint64_t note = NOTE_VALID | NOTE_CHARGED;
    b->stats.settled++;
    if (s->quota_found) {
        if (s->q.limits.period != TA_PERIOD_NONE)
            note |= (uint64_t)s->bal.period_start & NOTE_PERIOD_MASK;
        int lvl = warn_level_of(&s->q, &s->bal);
        s->bal.settled_ticket = (int64_t)t;
        if (lvl > s->bal.warn_level) {
            s->bal.warn_level = lvl;
            note |= (uint64_t)lvl << NOTE_LEVEL_SHIFT;
        }
    }
    *notep = note;
    return 0;
}

static int ledger_request(ta_billing_t *b, MDB_txn *txn, uint64_t t, const ta_event_t *ev)
{
    uint64_t note = 0;
    int rc = ta_billing_settle(b, txn, t, ev, &note);
    ta_ring_set_note(b->ring, t, (int64_t)note);
    return rc;
}

int ta_billing_stash(ta_billing_t *b, MDB_txn *txn, uint64_t t, const ta_audit_t *rec)
{
    uint8_t buf[4096];
    int len = ta_rec_encode(&ta_desc_audit, rec, buf, sizeof(buf));
    if (len < 0)
        return len;
    char name[96];
    stash_name(name, sizeof(name), t, rec->request_id);
    MDB_val k = {strlen(name), name}, v = {(size_t)len, buf};
    int mrc = mdb_put(txn, ta_store_dbi(b->st, TA_DB_META), &k, &v, 0);
    if (mrc != 0) {
        ta_log(TA_LOG_ERROR, "billing: stash a record for ticket %" PRIu64 ": %s", t,
               mdb_strerror(mrc));
        return mrc == MDB_MAP_FULL ? TA_EFULL : TA_ELMDB;
    }
    b->stash_dirty = true;
    return 0;
}

static int ledger_worker_dead(ta_billing_t *b, MDB_txn *txn, uint64_t t, const ta_event_t *ev)
{
    enum { MAXIDS = 64 };
    uint8_t ids[MAXIDS][16];
    /* what the worker spooled at its exit settles first (spool.c) */
    int src = ta_spool_apply(b, txn, t, ev->worker_pid);
    if (src != 0)
        return src;
    /* the releases below read and write balances themselves */
    if ((src = settle_flush(b, txn)) != 0)
        return src;
    settle_forget(b);
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
            if ((rc = ta_billing_stash(b, txn, t, &rec)) != 0)
                return rc;
            b->stats.aborted++;
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

int ta_billing_warnings(ta_billing_t *b, MDB_txn *atxn, MDB_txn *ltxn, uint64_t quota_id,
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
            ta_outbox_job_fill(&b->out[b->nout++], &w, q.key_prefix);
        else
            b->wh.rescan = true; /* stays pending: a later rescan posts it */
    }
    return 0;
}

/* The group of a quota as the ledger has it (0 when the quota is gone):
 * the group the audit pass's aggregates count the request under. Read once
 * per quota per audit pass. */
static uint64_t group_of(ta_billing_t *b, MDB_txn *ltxn, uint64_t quota_id)
{
    size_t i = quota_id & (GROUP_CACHE - 1);
    if (!b->groups[i].ok || b->groups[i].quota_id != quota_id) {
        ta_quota_t q;
        b->groups[i].quota_id = quota_id;
        b->groups[i].group_id = ta_rec_get(b->st, ltxn, &ta_desc_quota, quota_id, &q) == 0 ? q.group_id : 0;
        b->groups[i].ok = true;
    }
    return b->groups[i].group_id;
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
        ta_balance_t bal;
        if ((rc = ta_rec_decode(&ta_desc_audit, v.mv_data, v.mv_size, &rec)) != 0)
            break;
        if ((rc = ta_audit_batch_put(b->audit_batch, b->st, atxn, &rec,
                                     group_of(b, ltxn, rec.quota_id))) < 0)
            break;
        rc = 0;
        /* a spooled request the ledger charged may have crossed a threshold:
         * raise up to the balance's level (warnings are keyed, raised once) */
        if (!rec.aborted && rec.cost > 0 &&
            ta_rec_get(b->st, ltxn, &ta_desc_balance, rec.quota_id, &bal) == 0 &&
            bal.warn_level > 0 &&
            (rc = ta_billing_warnings(b, atxn, ltxn, rec.quota_id, rec.period_start,
                                      bal.warn_level)) != 0)
            break;
    }
    mdb_cursor_close(cur);
    if (rc == 0 && mrc != 0 && mrc != MDB_NOTFOUND)
        rc = TA_ELMDB;
    return rc;
}

static int audit_request(ta_billing_t *b, MDB_txn *atxn, MDB_txn *ltxn, const ta_ring_item_t *it)
{
    ta_audit_t rec;
    uint64_t note = (uint64_t)ta_ring_note(b->ring, it->ticket);
    int64_t period = (int64_t)(note & NOTE_PERIOD_MASK);
    int level = (int)((note >> NOTE_LEVEL_SHIFT) & 0xf);
    if (!(note & NOTE_VALID))
        ta_log(TA_LOG_WARN, "billing: ticket %" PRIu64 ": no ledger note", it->ticket);
    ta_audit_from_event(&it->ev, it->ticket, period, (note & NOTE_CHARGED) != 0, &rec);
    int rc = ta_audit_batch_put(b->audit_batch, b->st, atxn, &rec, group_of(b, ltxn, rec.quota_id));
    if (rc > 0)
        rc = 0;
    if (rc == 0 && level > 0)
        rc = ta_billing_warnings(b, atxn, ltxn, it->ev.quota_id, period, level);
    return rc;
}

/* ---- one batch: the same pass for each environment ------------------------------------ */

/* Apply one event of the batch to env (txn; ltxn: a ledger read txn for the
 * audit pass). *dead: a dead-worker event was applied (a child was replaced). */
static int apply_event(ta_billing_t *b, ta_envid_t env, MDB_txn *txn, MDB_txn *ltxn,
                       const ta_ring_item_t *it, bool *dead)
{
    if (env == TA_ENV_LEDGER) {
        /* no note left from an attempt that rolled back (NOTE_DEAD would
         * make the audit pass skip a ticket this pass applies) */
        ta_ring_set_note(b->ring, it->ticket, 0);
        if (it->ev.kind == TA_EV_REQUEST)
            return ledger_request(b, txn, it->ticket, &it->ev);
        if (it->ev.kind == TA_EV_WORKER_DEAD) {
            *dead = true;
            return ledger_worker_dead(b, txn, it->ticket, &it->ev);
        }
        /* set aside by the caller (dead letters are written only for a batch
         * of one, so a rolled-back batch never logs or counts one) */
        ta_log(TA_LOG_ERROR, "billing: ticket %" PRIu64 ": unknown event kind %u", it->ticket,
               it->ev.kind);
        return TA_EINVAL;
    }
    uint64_t note = (uint64_t)ta_ring_note(b->ring, it->ticket);
    if ((note & NOTE_DEAD) || (!(note & NOTE_VALID) && ta_dead_letter_exists(b, ltxn, it->ticket)))
        return 0; /* the ledger pass set it aside: nothing of it is applied */
    if (it->ev.kind == TA_EV_REQUEST)
        return audit_request(b, txn, ltxn, it);
    if (it->ev.kind == TA_EV_WORKER_DEAD)
        return audit_worker_dead(b, txn, ltxn, it->ticket);
    return 0;
}

/* Apply items[0..n) (tickets < upto, some of [tail, upto) skipped) to env in
 * one write transaction that also stores env's applied_ticket = upto - 1.
 * The ledger pass runs first; the audit pass reads what it decided (notes,
 * stashes) through a ledger read transaction. */
static int apply_env(ta_billing_t *b, ta_envid_t env, size_t n, uint64_t upto)
{
    bool ledger = env == TA_ENV_LEDGER;
    MDB_txn *txn = NULL, *ltxn = NULL;
    uint64_t applied;
    bool dead = false;
    int rc;

    if (!ledger) {
        b->nout = 0;
        ta_audit_batch_reset(b->audit_batch);
        memset(b->groups, 0, sizeof(b->groups));
    } else {
        settle_forget(b);
    }
    if ((rc = ta_txn_begin(b->st, env, true, &txn)) != 0)
        return rc;
    if (!ledger && (rc = ta_txn_begin(b->st, TA_ENV_LEDGER, false, &ltxn)) != 0)
        goto Fail;
    if ((rc = applied_get(b, txn, env, &applied)) != 0)
        goto Fail;
    if (ledger && b->stash_dirty && (rc = stash_cleanup(b, txn, b->aud_applied)) != 0)
        goto Fail;
    for (size_t i = 0; i < n; i++) {
        const ta_ring_item_t *it = &b->items[i];
        if (it->ticket <= applied)
            continue;
        if ((rc = apply_event(b, env, txn, ltxn, it, &dead)) == 0)
            continue;
        ta_log(TA_LOG_ERROR, "billing: ticket %" PRIu64 " (%s): %s", it->ticket,
               ledger ? "ledger" : "audit", ta_strerror(rc));
        if (!b->single || !ta_dead_letter_eligible(rc))
            goto Fail; /* step() retries one event at a time, or stops */
        /* This event alone fails: drop what it wrote, and in a fresh
         * transaction set it aside and move past it (exactly once: the dead
         * letter and applied_ticket commit together). On the audit side the
         * ledger settled it and its audit side alone failed. */
        int err = rc;
        if (ledger)
            settle_forget(b);
        else
            ta_audit_batch_reset(b->audit_batch);
        ta_txn_abort(txn);
        txn = NULL;
        dead = false;
        b->nout = 0; /* warnings of the aborted transaction */
        ta_spool_taken_reset(b);
        if ((rc = ta_txn_begin(b->st, env, true, &txn)) != 0)
            goto Fail;
        if ((rc = applied_get(b, txn, env, &applied)) != 0 ||
            (rc = ta_dead_letter_put(b, txn, env, it->ticket, &it->ev, err)) != 0)
            goto Fail;
        if (ledger)
            ta_ring_set_note(b->ring, it->ticket, (int64_t)NOTE_DEAD);
        break;
    }
    if (ledger && (rc = settle_flush(b, txn)) != 0)
        goto Fail;
    if (ledger)
        settle_forget(b); /* closes the holds cursor before the commit */
    if (!ledger && (rc = ta_audit_batch_flush(b->audit_batch, b->st, txn)) != 0)
        goto Fail;
    if (!ledger && (rc = ta_outbox_write_results(b, txn)) != 0)
        goto Fail;
    if (upto - 1 > applied && (rc = applied_put(b, txn, env, upto - 1)) != 0)
        goto Fail;
    if (ltxn) {
        ta_txn_abort(ltxn);
        ltxn = NULL;
    }
    rc = ta_txn_commit(txn);
    txn = NULL;
    if (rc != 0)
        goto Fail;
    b->dirty = true;
    if (ledger) {
        b->stats.ledger_applied = upto - 1;
        if (dead)
            ta_store_reader_check(b->st);
        return 0;
    }
    b->aud_applied = upto - 1;
    b->stats.audit_applied = upto - 1;
    ta_outbox_results_done(b);
    for (size_t i = 0; i < b->nout; i++)
        ta_webhook_queue(&b->wh, &b->out[i]);
    b->nout = 0;
    return 0;
Fail:
    if (ledger)
        settle_forget(b);
    else
        ta_audit_batch_reset(b->audit_batch);
    if (ltxn)
        ta_txn_abort(ltxn);
    if (txn)
        ta_txn_abort(txn);
    if (!ledger)
        b->wh.rdone = 0; /* results not written: they stay queued */
    return rc;
}

/* Both environments, ledger first. */
static int apply_batch(ta_billing_t *b, size_t n, uint64_t upto)
{
    ta_spool_taken_reset(b);
    int rc = apply_env(b, TA_ENV_LEDGER, n, upto);
    if (rc != 0)
        return rc;
    if (b->conf.hooks && b->conf.hooks->stop_after_ledger) {
        b->conf.hooks->stop_after_ledger = 0;
        return -EINTR;
    }
    return apply_env(b, TA_ENV_AUDIT, n, upto);
}

#define SWEEP_NS (5LL * 1000000000LL) /* ta_billing_sweep() period */

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
    b->settle = calloc(SETTLE_SLOTS, sizeof(*b->settle));
    if (!b->items || !b->settle || ta_audit_batch_new(&b->audit_batch) != 0)
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
    /* a data directory of an earlier build gets its hourly aggregates
     * before anything is added to them */
    if ((rc = ta_audit_upgrade(b->st)) != 0)
        goto Fail;
    b->stash_dirty = true; /* a previous billing may have left some */
    b->stats.ledger_applied = led;
    b->stats.audit_applied = b->aud_applied;
    if (led != b->aud_applied)
        ta_log(TA_LOG_WARN, "billing: recovering: ledger applied up to ticket %" PRIu64
               ", audit up to %" PRIu64 "; re-applying the missing side only", led, b->aud_applied);
    ta_log(TA_LOG_INFO, "billing: started at ring ticket %" PRIu64 " (head %" PRIu64 ")", b->cursor,
           ta_ring_head(b->ring));
    ta_webhook_start(&b->wh, &b->conf);
    ta_outbox_rescan(b); /* before any new warning: pending ones go first */
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
            ta_spool_taken_remove(b);
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
    ta_outbox_service(b);
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
    ta_webhook_stop(&b->wh);
    if (b->st) {
        ta_store_sync(b->st);
        ta_store_close(b->st);
    }
    if (b->own_ring)
        ta_ring_close(b->ring);
    free(b->items);
    free(b->settle);
    ta_audit_batch_free(b->audit_batch);
    free(b->spool.names);
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
    ta_billing_sweep(b);
    int64_t drain_deadline = 0, last_sweep = ta_mono_ns();
    for (;;) {
        if (ta_mono_ns() - last_sweep >= SWEEP_NS) {
            ta_billing_sweep(b);
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
