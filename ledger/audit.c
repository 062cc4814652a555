/*
 * audit.c - the audit environment's tables and their queries.
 *
 *   requests            [ t_received_ns BE 8 | request id 16 ]            -> ta_audit_t (schema TLV)
 *   requests_by_quota   [ quota id BE 8 | t_received_ns BE 8 | rid 16 ]   -> (empty)
 *   daily               [ quota id BE 8 | UTC day BE 4 | model id BE 8 ]  -> ta_daily_t
 *   warnings            [ quota id BE 8 | period start BE 8 | pct BE 4 ]  -> ta_warning_t
 *   meta                "applied_ticket", "ring_id" (billing);
 *                       "pruned_cost.<quota id %020>.<period start %020>" ->
 *                       [ cost BE 8 | records BE 8 ]: what pruning deleted, per
 *                       the balance period the cost went to, so `ledger verify`
 *                       still adds up a period whose first records were pruned
 *
 * Writer: billing alone, in its batch transaction (records, index and daily
 * aggregate of a request are written together, so they never disagree) and
 * in small pruning transactions. Readers: workers (admin API) and the CLI in
 * read transactions; LMDB's MVCC gives them a consistent snapshot while
 * billing writes. A billing process killed mid-transaction leaves nothing
 * behind (LMDB aborts it); the record is re-written from the ring on restart
 * because the transaction also carries meta applied_ticket (billing.c).
 * Keys are big-endian so cursors walk time (and quota, day) in order.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ledger/audit.h"

#define ENC_CAP 4096

static void be32_put(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}
static uint32_t be32_get(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static int lmdb_fail(int mrc, const char *what)
{
    ta_log(TA_LOG_ERROR, "audit: %s: %s", what, mdb_strerror(mrc));
    return mrc == MDB_MAP_FULL ? TA_EFULL : TA_ELMDB;
}

static int32_t day_of(int64_t t_ns)
{
    int64_t s = t_ns / 1000000000LL;
    if (s < 0)
        s = 0;
    return (int32_t)(s / 86400);
}

void ta_audit_from_event(const ta_event_t *ev, uint64_t ticket, int64_t period_start, bool charged,
                         ta_audit_t *o)
{
    memset(o, 0, sizeof(*o));
    memcpy(o->request_id, ev->request_id, 16);
    o->t_received_ns = ev->t_received_ns;
    o->t_first_byte_ns = ev->t_first_byte_ns;
    o->t_done_ns = ev->t_done_ns;
    o->user_id = ev->user_id;
    o->quota_id = ev->quota_id;
    o->model_id = ev->model_id;
    o->provider_id = ev->provider_id;
    snprintf(o->key_prefix, sizeof(o->key_prefix), "%.*s", (int)sizeof(ev->key_prefix), ev->key_prefix);
    o->endpoint = ev->endpoint <= TA_EP_LAST ? ev->endpoint : TA_EP_OTHER;
    snprintf(o->model, sizeof(o->model), "%.*s", (int)sizeof(ev->model), ev->model);
    snprintf(o->served_model, sizeof(o->served_model), "%.*s", (int)sizeof(ev->served_model),
             ev->served_model);
    o->stream = (ev->flags & TA_EVF_STREAM) != 0;
    o->status = ev->status;
    o->error_type = ev->error_type <= TA_ET_INTERNAL ? ev->error_type : TA_ET_INTERNAL;
    o->prompt_tokens = ev->prompt_tokens;
    o->completion_tokens = ev->completion_tokens;
    o->cached_tokens = ev->cached_tokens;
    o->cache_write_tokens = ev->cache_write_tokens;
    o->usage_estimated = (ev->flags & TA_EVF_USAGE_ESTIMATED) != 0;
    o->client_gone = (ev->flags & TA_EVF_CLIENT_GONE) != 0;
    o->aborted = (ev->flags & TA_EVF_ABORTED) != 0;
    if (charged)
        o->cost = ev->cost;
    else
        o->uncharged_cost = ev->cost;
    if (ev->t_done_ns > 0 && ev->t_received_ns > 0 && ev->t_done_ns >= ev->t_received_ns)
        o->latency_ms = (ev->t_done_ns - ev->t_received_ns) / 1000000;
    if (ev->t_first_byte_ns > 0 && ev->t_received_ns > 0 && ev->t_first_byte_ns >= ev->t_received_ns)
        o->ttft_ms = (ev->t_first_byte_ns - ev->t_received_ns) / 1000000;
    snprintf(o->client_ip, sizeof(o->client_ip), "%.*s", (int)sizeof(ev->client_ip), ev->client_ip);
    o->bytes_in = ev->bytes_in;
    o->bytes_out = ev->bytes_out;
    o->worker_pid = ev->worker_pid;
    o->ticket = (int64_t)ticket;
    o->period_start = period_start;
    o->held_cost = ev->held_cost;
}

static void audit_key(uint8_t k[TA_AUDIT_KEY_LEN], int64_t t_ns, const uint8_t rid[16])
{
    ta_be64_put(k, (uint64_t)t_ns);
    memcpy(k + 8, rid, 16);
}

static void daily_add(ta_daily_t *d, const ta_audit_t *r)
{
    d->requests++;
    d->prompt_tokens += r->prompt_tokens;
    d->completion_tokens += r->completion_tokens;
    d->cached_tokens += r->cached_tokens;
    d->cache_write_tokens += r->cache_write_tokens;
    d->cost += r->cost;
    if (r->status >= 400)
        d->errors++;
}

int ta_audit_put(ta_store_t *st, MDB_txn *txn, const ta_audit_t *rec)
{
    uint8_t buf[ENC_CAP], k[TA_AUDIT_QKEY_LEN];
    int len = ta_rec_encode(&ta_desc_audit, rec, buf, sizeof(buf));
    if (len < 0)
        return len;
    audit_key(k + 8, rec->t_received_ns, rec->request_id);
    MDB_val key = {TA_AUDIT_KEY_LEN, k + 8}, val = {(size_t)len, buf};
    int mrc = mdb_put(txn, ta_store_dbi(st, TA_DB_AUDIT_REQUESTS), &key, &val, MDB_NOOVERWRITE);
    if (mrc == MDB_KEYEXIST)
        return 1;
    if (mrc != 0)
        return lmdb_fail(mrc, "put request");
    ta_be64_put(k, rec->quota_id);
    MDB_val qkey = {TA_AUDIT_QKEY_LEN, k}, empty = {0, NULL};
    mrc = mdb_put(txn, ta_store_dbi(st, TA_DB_AUDIT_BY_QUOTA), &qkey, &empty, 0);
    if (mrc != 0)
        return lmdb_fail(mrc, "put requests_by_quota");

    uint8_t dk[TA_DAILY_KEY_LEN];
    ta_be64_put(dk, rec->quota_id);
    be32_put(dk + 8, (uint32_t)day_of(rec->t_received_ns));
    ta_be64_put(dk + 12, rec->model_id);
    ta_daily_t d;
    MDB_val dkey = {sizeof(dk), dk}, dval;
    MDB_dbi ddbi = ta_store_dbi(st, TA_DB_AUDIT_DAILY);
    mrc = mdb_get(txn, ddbi, &dkey, &dval);
    if (mrc == 0) {
        int rc = ta_rec_decode(&ta_desc_daily, dval.mv_data, dval.mv_size, &d);
        if (rc != 0)
            return rc;
    } else if (mrc == MDB_NOTFOUND) {
        memset(&d, 0, sizeof(d));
        d.quota_id = rec->quota_id;
        d.day = day_of(rec->t_received_ns);
        d.model_id = rec->model_id;
        d.user_id = rec->user_id;
    } else {
        return lmdb_fail(mrc, "get daily");
    }
    daily_add(&d, rec);
    len = ta_rec_encode(&ta_desc_daily, &d, buf, sizeof(buf));
    if (len < 0)
        return len;
    dval.mv_data = buf;
    dval.mv_size = (size_t)len;
    mrc = mdb_put(txn, ddbi, &dkey, &dval, 0);
    return mrc ? lmdb_fail(mrc, "put daily") : 0;
}

int ta_audit_get(ta_store_t *st, MDB_txn *txn, int64_t t_received_ns, const uint8_t rid[16],
                 ta_audit_t *out)
{
    uint8_t k[TA_AUDIT_KEY_LEN];
    audit_key(k, t_received_ns, rid);
    MDB_val key = {sizeof(k), k}, val;
    int mrc = mdb_get(txn, ta_store_dbi(st, TA_DB_AUDIT_REQUESTS), &key, &val);
    if (mrc == MDB_NOTFOUND)
        return TA_ENOTFOUND;
    if (mrc != 0)
        return lmdb_fail(mrc, "get request");
    return ta_rec_decode(&ta_desc_audit, val.mv_data, val.mv_size, out);
}

static void warning_key(uint8_t k[TA_WARNING_KEY_LEN], uint64_t q, int64_t ps, int32_t th)
{
    ta_be64_put(k, q);
    ta_be64_put(k + 8, (uint64_t)ps);
    be32_put(k + 16, (uint32_t)th);
}

int ta_audit_warning_get(ta_store_t *st, MDB_txn *txn, uint64_t quota_id, int64_t period_start,
                         int32_t threshold, ta_warning_t *out)
{
    uint8_t k[TA_WARNING_KEY_LEN];
    warning_key(k, quota_id, period_start, threshold);
    MDB_val key = {sizeof(k), k}, val;
    int mrc = mdb_get(txn, ta_store_dbi(st, TA_DB_AUDIT_WARNINGS), &key, &val);
    if (mrc == MDB_NOTFOUND)
        return TA_ENOTFOUND;
    if (mrc != 0)
        return lmdb_fail(mrc, "get warning");
    return ta_rec_decode(&ta_desc_warning, val.mv_data, val.mv_size, out);
}

int ta_audit_warning_put(ta_store_t *st, MDB_txn *txn, const ta_warning_t *w)
{
    uint8_t k[TA_WARNING_KEY_LEN], buf[ENC_CAP];
    warning_key(k, w->quota_id, w->period_start, w->threshold);
    int len = ta_rec_encode(&ta_desc_warning, w, buf, sizeof(buf));
    if (len < 0)
        return len;
    MDB_val key = {sizeof(k), k}, val = {(size_t)len, buf};
    int mrc = mdb_put(txn, ta_store_dbi(st, TA_DB_AUDIT_WARNINGS), &key, &val, 0);
    return mrc ? lmdb_fail(mrc, "put warning") : 0;
}

int ta_audit_warning_scan(ta_store_t *st, MDB_txn *txn, int state, ta_warning_cb cb, void *arg)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = 0, mrc = mdb_cursor_open(txn, ta_store_dbi(st, TA_DB_AUDIT_WARNINGS), &cur);
    if (mrc != 0)
        return lmdb_fail(mrc, "open warnings cursor");
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        ta_warning_t w;
        if ((rc = ta_rec_decode(&ta_desc_warning, v.mv_data, v.mv_size, &w)) != 0)
            break;
        if (state >= 0 && w.webhook_state != state)
            continue;
        if ((rc = cb(&w, arg)) != 0)
            break;
    }
    mdb_cursor_close(cur);
    if (rc > 0)
        return 0;
    if (rc == 0 && mrc != MDB_NOTFOUND)
        rc = lmdb_fail(mrc, "walk warnings");
    return rc;
}

#define PRUNED_PREFIX "pruned_cost."

static int pruned_key(char *buf, size_t cap, uint64_t quota_id, int64_t period_start)
{
    return snprintf(buf, cap, PRUNED_PREFIX "%020" PRIu64 ".%020" PRId64, quota_id, period_start);
}

/* Carry a pruned record's cost into its (quota, period) total, in txn. */
static int pruned_add(ta_store_t *st, MDB_txn *txn, const ta_audit_t *r)
{
    char key[80];
    uint8_t val[16] = {0};
    MDB_dbi dbi = ta_store_dbi(st, TA_DB_AUDIT_META);
    MDB_val k = {(size_t)pruned_key(key, sizeof(key), r->quota_id, r->period_start), key}, v;
    int mrc = mdb_get(txn, dbi, &k, &v);
    if (mrc == 0 && v.mv_size == sizeof(val))
        memcpy(val, v.mv_data, sizeof(val));
    else if (mrc != 0 && mrc != MDB_NOTFOUND)
        return lmdb_fail(mrc, "get pruned cost");
    ta_be64_put(val, ta_be64_get(val) + (uint64_t)r->cost);
    ta_be64_put(val + 8, ta_be64_get(val + 8) + 1);
    v.mv_size = sizeof(val), v.mv_data = val;
    if ((mrc = mdb_put(txn, dbi, &k, &v, 0)) != 0)
        return lmdb_fail(mrc, "put pruned cost");
    return 0;
}

/* Add the pruned totals of quota_id (one period, or all) to *sum and *count. */
static int pruned_sum(ta_store_t *st, MDB_txn *txn, uint64_t quota_id, int64_t period_start,
                      bool all, ta_nano_t *sum, uint64_t *count)
{
    char key[80];
    int klen = pruned_key(key, sizeof(key), quota_id, period_start);
    size_t plen = all ? strlen(PRUNED_PREFIX) + 21 : (size_t)klen; /* "<quota>." */
    MDB_cursor *cur;
    MDB_val k = {(size_t)klen, key}, v;
    if (all)
        k.mv_size = plen;
    int mrc = mdb_cursor_open(txn, ta_store_dbi(st, TA_DB_AUDIT_META), &cur);
    if (mrc != 0)
        return lmdb_fail(mrc, "pruned cursor");
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size < plen || memcmp(k.mv_data, key, plen) != 0 || (!all && k.mv_size != plen))
            break;
        if (v.mv_size == 16) {
            *sum += (ta_nano_t)ta_be64_get(v.mv_data);
            *count += ta_be64_get((const uint8_t *)v.mv_data + 8);
        }
        if (!all)
            break;
    }
    mdb_cursor_close(cur);
    if (mrc != 0 && mrc != MDB_NOTFOUND)
        return lmdb_fail(mrc, "pruned walk");
    return 0;
}

int ta_audit_prune(ta_store_t *st, MDB_txn *txn, int64_t before_ns, size_t max, size_t *deleted,
                   bool *more)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int rc = 0;
    *deleted = 0;
    *more = false;
    int mrc = mdb_cursor_open(txn, ta_store_dbi(st, TA_DB_AUDIT_REQUESTS), &cur);
    if (mrc != 0)
        return lmdb_fail(mrc, "prune cursor");
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) {
        if (k.mv_size != TA_AUDIT_KEY_LEN || (int64_t)ta_be64_get(k.mv_data) >= before_ns)
            break;
        if (*deleted >= max) {
            *more = true;
            break;
        }
        ta_audit_t r;
        uint8_t qk[TA_AUDIT_QKEY_LEN];
        if (ta_rec_decode(&ta_desc_audit, v.mv_data, v.mv_size, &r) == 0) {
            if (r.cost != 0 && (rc = pruned_add(st, txn, &r)) != 0)
                goto Exit;
            ta_be64_put(qk, r.quota_id);
            memcpy(qk + 8, k.mv_data, TA_AUDIT_KEY_LEN);
            MDB_val qkey = {sizeof(qk), qk};
            int drc = mdb_del(txn, ta_store_dbi(st, TA_DB_AUDIT_BY_QUOTA), &qkey, NULL);
            if (drc != 0 && drc != MDB_NOTFOUND) {
                rc = lmdb_fail(drc, "prune requests_by_quota");
                goto Exit;
            }
        }
        if ((mrc = mdb_cursor_del(cur, 0)) != 0) {
            rc = lmdb_fail(mrc, "prune request");
            goto Exit;
        }
        (*deleted)++;
    }
    if (mrc != 0 && mrc != MDB_NOTFOUND)
        rc = lmdb_fail(mrc, "prune walk");
Exit:
    mdb_cursor_close(cur);
    return rc;
}

/* ---- queries ------------------------------------------------------------ */

static bool matches(const ta_audit_filter_t *f, const ta_audit_t *r)
{
    if (f->user_id && r->user_id != f->user_id)
        return false;
    if (f->quota_id && r->quota_id != f->quota_id)
        return false;
    if (f->model_id && r->model_id != f->model_id)
        return false;
    if (f->status && r->status != f->status)
        return false;
    if (f->model && *f->model && strcmp(f->model, r->model) != 0 && strcmp(f->model, r->served_model) != 0)
        return false;
    return true;
}

void ta_audit_key(const ta_audit_t *rec, uint8_t key[TA_AUDIT_KEY_LEN])
{
    audit_key(key, rec->t_received_ns, rec->request_id);
}

int ta_audit_list(ta_store_t *st, MDB_txn *txn, const ta_audit_filter_t *f, size_t offset,
                  size_t limit, ta_audit_cb cb, void *arg, size_t *total)
{
    return ta_audit_list_capped(st, txn, f, offset, limit, 0, cb, arg, total, NULL);
}

int ta_audit_list_capped(ta_store_t *st, MDB_txn *txn, const ta_audit_filter_t *f, size_t offset,
                         size_t limit, size_t count_max, ta_audit_cb cb, void *arg,
                         size_t *total, bool *capped)
{
    /* With a quota filter walk that quota's index, else the time-ordered table. */
    bool byq = f->quota_id != 0;
    size_t pre = byq ? 8 : 0;
    uint8_t lo[TA_AUDIT_QKEY_LEN], hi[TA_AUDIT_QKEY_LEN];
    memset(lo, 0, sizeof(lo));
    memset(hi, 0xff, sizeof(hi));
    if (byq) {
        ta_be64_put(lo, f->quota_id);
        ta_be64_put(hi, f->quota_id);
    }
    ta_be64_put(lo + pre, f->since_ns > 0 ? (uint64_t)f->since_ns : 0);
    if (f->until_ns > 0) { /* exclusive: the last key before until */
        ta_be64_put(hi + pre, (uint64_t)f->until_ns);
        memset(hi + pre + 8, 0, 16);
    }
    if (f->has_cursor) { /* the keyset position narrows the range, exclusive */
        uint8_t *edge = f->ascending ? lo : hi;
        if (f->ascending ? memcmp(f->cursor, lo + pre, TA_AUDIT_KEY_LEN) >= 0
                         : memcmp(f->cursor, hi + pre, TA_AUDIT_KEY_LEN) < 0) {
            memcpy(edge + pre, f->cursor, TA_AUDIT_KEY_LEN);
            if (f->ascending) /* lo is inclusive: the key right after the cursor */
                for (int i = (int)(pre + TA_AUDIT_KEY_LEN) - 1; i >= (int)pre && ++lo[i] == 0; i--)
                    ;
        }
    }
    /* counting needs the record only for the filters the keys do not carry */
    bool need_rec = f->user_id || f->model_id || f->status || (f->model && *f->model);
    size_t read_past = 0;
    if (capped)
        *capped = false;
    size_t klen = pre + TA_AUDIT_KEY_LEN;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    size_t n = 0;
    int rc = 0, mrc;
    MDB_dbi dbi = ta_store_dbi(st, byq ? TA_DB_AUDIT_BY_QUOTA : TA_DB_AUDIT_REQUESTS);
    if ((mrc = mdb_cursor_open(txn, dbi, &cur)) != 0)
        return lmdb_fail(mrc, "list cursor");
    if (f->ascending) {
        k.mv_size = klen, k.mv_data = lo;
        mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    } else {
        k.mv_size = klen, k.mv_data = hi;
        mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (mrc == MDB_NOTFOUND)
            mrc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
        else if (mrc == 0 && (k.mv_size < klen || memcmp(k.mv_data, hi, klen) >= 0))
            mrc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
    }
    for (; mrc == 0; mrc = mdb_cursor_get(cur, &k, &v, f->ascending ? MDB_NEXT : MDB_PREV)) {
        if (k.mv_size != klen)
            continue;
        if (memcmp(k.mv_data, lo, klen) < 0 || memcmp(k.mv_data, hi, klen) >= 0)
            break;
        bool on_page = n >= offset && (limit == 0 || n < offset + limit) && cb;
        if (!on_page && !need_rec) { /* counted from the key alone */
            if (n >= offset + limit && count_max > 0 && ++read_past > count_max) {
                if (capped)
                    *capped = true;
                break;
            }
            n++;
            if (!total && limit != 0 && n >= offset + limit)
                break;
            continue;
        }
        if (!on_page && count_max > 0 && limit != 0 && n >= offset + limit &&
            ++read_past > count_max) {
            if (capped)
                *capped = true;
            break;
        }
        ta_audit_t r;
        if (byq) {
            MDB_val rk = {TA_AUDIT_KEY_LEN, (uint8_t *)k.mv_data + 8}, rv;
            int g = mdb_get(txn, ta_store_dbi(st, TA_DB_AUDIT_REQUESTS), &rk, &rv);
            if (g == MDB_NOTFOUND)
                continue;
            if (g != 0) {
                rc = lmdb_fail(g, "list get");
                goto Exit;
            }
            rc = ta_rec_decode(&ta_desc_audit, rv.mv_data, rv.mv_size, &r);
        } else {
            rc = ta_rec_decode(&ta_desc_audit, v.mv_data, v.mv_size, &r);
        }
        if (rc != 0) {
            ta_log(TA_LOG_WARN, "audit: undecodable record skipped (%s)", ta_strerror(rc));
            rc = 0;
            continue;
        }
        if (!matches(f, &r))
            continue;
        if (on_page) {
            rc = cb(&r, arg);
            if (rc < 0)
                goto Exit;
            rc = 0;
        }
        n++;
        if (!total && limit != 0 && n >= offset + limit)
            break;
    }
    if (mrc != 0 && mrc != MDB_NOTFOUND)
        rc = lmdb_fail(mrc, "list walk");
Exit:
    mdb_cursor_close(cur);
    if (total)
        *total = n;
    return rc;
}

typedef struct agg {
    int64_t key;
    ta_daily_t sum;
} agg_t;

static void sum_add(ta_daily_t *a, const ta_daily_t *d)
{
    a->requests += d->requests;
    a->prompt_tokens += d->prompt_tokens;
    a->completion_tokens += d->completion_tokens;
    a->cached_tokens += d->cached_tokens;
    a->cache_write_tokens += d->cache_write_tokens;
    a->cost += d->cost;
    a->errors += d->errors;
}

static json_t *sum_json(const ta_daily_t *a)
{
    char c[TA_NANO_STRLEN];
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:s,s:I}", "requests", (json_int_t)a->requests,
                     "prompt_tokens", (json_int_t)a->prompt_tokens, "completion_tokens",
                     (json_int_t)a->completion_tokens, "cached_tokens", (json_int_t)a->cached_tokens,
                     "cache_write_tokens", (json_int_t)a->cache_write_tokens, "cost",
                     ta_nano_format(a->cost, c), "errors", (json_int_t)a->errors);
}

static int agg_cmp(const void *a, const void *b)
{
    int64_t x = ((const agg_t *)a)->key, y = ((const agg_t *)b)->key;
    return x < y ? -1 : x > y;
}

int ta_audit_stats(ta_store_t *st, MDB_txn *txn, const ta_audit_filter_t *f, int group_by,
                   json_t **out)
{
    int32_t dlo = f->since_ns > 0 ? day_of(f->since_ns) : 0;
    int32_t dhi = f->until_ns > 0 ? day_of(f->until_ns - 1) : INT32_MAX;
    ta_daily_t tot;
    memset(&tot, 0, sizeof(tot));
    agg_t *groups = NULL;
    size_t ng = 0, cap = 0;
    int rc = 0, mrc;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    uint8_t start[8];
    *out = NULL;
    if ((mrc = mdb_cursor_open(txn, ta_store_dbi(st, TA_DB_AUDIT_DAILY), &cur)) != 0)
        return lmdb_fail(mrc, "stats cursor");
    if (f->quota_id) {
        ta_be64_put(start, f->quota_id);
        k.mv_size = 8, k.mv_data = start;
        mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    } else {
        mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    }
    for (; mrc == 0; mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != TA_DAILY_KEY_LEN)
            continue;
        if (f->quota_id && ta_be64_get(k.mv_data) != f->quota_id)
            break;
        int32_t day = (int32_t)be32_get((const uint8_t *)k.mv_data + 8);
        if (day < dlo || day > dhi)
            continue;
        ta_daily_t d;
        if (ta_rec_decode(&ta_desc_daily, v.mv_data, v.mv_size, &d) != 0)
            continue;
        if ((f->user_id && d.user_id != f->user_id) || (f->model_id && d.model_id != f->model_id))
            continue;
        sum_add(&tot, &d);
        if (group_by == TA_GROUP_NONE)
            continue;
        int64_t gk = group_by == TA_GROUP_DAY ? day : group_by == TA_GROUP_MODEL ? (int64_t)d.model_id
                                                                                 : (int64_t)d.user_id;
        size_t i;
        for (i = 0; i < ng && groups[i].key != gk; i++)
            ;
        if (i == ng) {
            if (ng == cap) {
                size_t nc = cap ? cap * 2 : 32;
                agg_t *ng2 = realloc(groups, nc * sizeof(*groups));
                if (!ng2) {
                    rc = -ENOMEM;
                    goto Exit;
                }
                groups = ng2, cap = nc;
            }
            memset(&groups[ng], 0, sizeof(groups[ng]));
            groups[ng++].key = gk;
        }
        sum_add(&groups[i].sum, &d);
    }
    if (mrc != 0 && mrc != MDB_NOTFOUND) {
        rc = lmdb_fail(mrc, "stats walk");
        goto Exit;
    }
    if (ng)
        qsort(groups, ng, sizeof(*groups), agg_cmp);
    json_t *series = json_array();
    for (size_t i = 0; i < ng; i++) {
        json_t *o = sum_json(&groups[i].sum);
        if (group_by == TA_GROUP_DAY) {
            char b[40];
            ta_time_format(groups[i].key * 86400, b);
            b[10] = 0;
            json_object_set_new(o, "day", json_string(b));
        } else {
            json_object_set_new(o, group_by == TA_GROUP_MODEL ? "model_id" : "user_id",
                                json_integer((json_int_t)groups[i].key));
        }
        json_array_append_new(series, o);
    }
    *out = json_pack("{s:o,s:o}", "totals", sum_json(&tot), "series", series);
    if (!*out)
        rc = -ENOMEM;
Exit:
    mdb_cursor_close(cur);
    free(groups);
    return rc;
}

typedef struct sum_arg {
    int64_t period_start;
    bool all;
    ta_nano_t sum;
    uint64_t count;
} sum_arg_t;

static int sum_cb(const ta_audit_t *r, void *arg)
{
    sum_arg_t *a = arg;
    if (a->all || r->period_start == a->period_start) {
        a->sum += r->cost;
        a->count++;
    }
    return 0;
}

int ta_audit_sum_cost(ta_store_t *st, MDB_txn *txn, uint64_t quota_id, int64_t period_start,
                      bool all_periods, int64_t since_ns, ta_nano_t *sum, uint64_t *count)
{
    ta_audit_filter_t f = {.quota_id = quota_id, .since_ns = since_ns, .ascending = true};
    sum_arg_t a = {.period_start = period_start, .all = all_periods};
    int rc = ta_audit_list(st, txn, &f, 0, 0, sum_cb, &a, NULL);
    if (rc == 0) /* records pruned (audit_retention_days) count with their totals */
        rc = pruned_sum(st, txn, quota_id, period_start, all_periods, &a.sum, &a.count);
    *sum = a.sum;
    *count = a.count;
    return rc;
}

json_t *ta_audit_to_json(const ta_audit_t *rec)
{
    return ta_rec_to_json(&ta_desc_audit, rec, TA_JSON_API);
}

/* ---- CLI: tail, export and warnings ------------------------------------------------ */

typedef struct out_arg {
    FILE *out;
    bool csv;
    int64_t min_ticket; /* tail: print only tickets above */
    int64_t max_ticket_seen;
    int err;
} out_arg_t;

/* The characters that make a spreadsheet (Excel, LibreOffice, Sheets) read
 * a cell as a formula: OWASP's "CSV injection" list. */
static bool csv_formula_start(const char *s)
{
    return s[0] != '\0' && strchr("=+-@\t\r", s[0]) != NULL;
}

static void csv_field(FILE *out, const json_t *v, bool text)
{
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        fputc('"', out);
        if (text && csv_formula_start(s))
            fputc('\'', out);
        for (; *s; s++) {
            if (*s == '"')
                fputc('"', out);
            fputc(*s, out);
        }
        fputc('"', out);
    } else if (json_is_integer(v)) {
        fprintf(out, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    } else if (json_is_true(v)) {
        fputs("true", out);
    } else if (json_is_false(v)) {
        fputs("false", out);
    }
}

int ta_audit_csv_line(FILE *out, const ta_audit_t *rec)
{
    json_t *j = ta_audit_to_json(rec);
    if (!j)
        return -ENOMEM;
    /* only free text is neutralized: money, times and ids are ours, and a
     * negative amount must stay a number */
    for (size_t i = 0; i < ta_desc_audit.nfields; i++) {
        const ta_field_t *f = &ta_desc_audit.fields[i];
        if (i)
            fputc(',', out);
        csv_field(out, json_object_get(j, f->name), f->type == TA_FT_STR);
    }
    fputc('\n', out);
    json_decref(j);
    return ferror(out) ? -EIO : 0;
}

static int print_cb(const ta_audit_t *r, void *arg)
{
    out_arg_t *a = arg;
    if (r->ticket <= a->min_ticket)
        return 0;
    if (r->ticket > a->max_ticket_seen)
        a->max_ticket_seen = r->ticket;
    if (a->csv)
        return ta_audit_csv_line(a->out, r);
    json_t *j = ta_audit_to_json(r);
    if (!j)
        return -ENOMEM;
    char *s = json_dumps(j, JSON_COMPACT);
    if (s) {
        fputs(s, a->out);
        fputc('\n', a->out);
        free(s);
    }
    json_decref(j);
    if (ferror(a->out))
        return -EIO;
    return 0;
}

static int parse_time_ns(const char *s, int64_t *ns)
{
    int64_t sec;
    if (ta_time_parse(s, strlen(s), &sec) != 0) {
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (errno || *end || v < 0)
            return TA_EINVAL;
        sec = v;
    }
    *ns = sec * 1000000000LL;
    return 0;
}

/* `tokenaudit audit warnings`: every warning record, webhook outbox state
 * included, one JSON object a line. */
static int warning_print_cb(const ta_warning_t *w, void *arg)
{
    json_t *j = ta_rec_to_json(&ta_desc_warning, w, TA_JSON_API);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (s == NULL)
        return -ENOMEM;
    fputs(s, (FILE *)arg);
    fputc('\n', (FILE *)arg);
    free(s);
    return ferror((FILE *)arg) ? -EIO : 0;
}

static int warnings_cli(const char *dir, const char *state_name)
{
    int state = -1;
    if (state_name != NULL) {
        const ta_field_t *f = ta_rec_field(&ta_desc_warning, "webhook_state");
        for (int i = 0; f != NULL && f->names[i] != NULL; i++)
            if (strcmp(f->names[i], state_name) == 0)
                state = i;
        if (state < 0) {
            fprintf(stderr, "audit: --state must be none, pending, delivered or failed\n");
            return 2;
        }
    }
    ta_store_opts_t so = {.readonly = true};
    ta_store_t *st = NULL;
    MDB_txn *txn;
    int rc = ta_store_open(&st, dir, &so);
    if (rc != 0) {
        fprintf(stderr, "audit: cannot open %s: %s\n", dir, ta_strerror(rc));
        return 1;
    }
    if ((rc = ta_txn_begin(st, TA_ENV_AUDIT, false, &txn)) == 0) {
        rc = ta_audit_warning_scan(st, txn, state, warning_print_cb, stdout);
        ta_txn_abort(txn);
    }
    fflush(stdout);
    ta_store_close(st);
    if (rc != 0) {
        fprintf(stderr, "audit: %s\n", ta_strerror(rc));
        return 1;
    }
    return 0;
}

static volatile sig_atomic_t tail_stop;
static void on_sig(int sig) { tail_stop = 1; }

int ta_audit_cli(int argc, char **argv)
{
    const char *dir = getenv("TOKENAUDIT_DATA_DIR"), *fmt = "jsonl", *state = NULL;
    int64_t since = 0, until = 0, lookback_s = 600;
    long lines = 10;
    bool tail = argc > 0 && strcmp(argv[0], "tail") == 0;
    bool warnings = argc > 0 && strcmp(argv[0], "warnings") == 0;
    static const struct option opts[] = {
        {"data-dir", required_argument, 0, 'd'}, {"format", required_argument, 0, 'f'},
        {"since", required_argument, 0, 's'},    {"until", required_argument, 0, 'u'},
        {"lines", required_argument, 0, 'n'},    {"lookback", required_argument, 0, 'l'},
        {"state", required_argument, 0, 'S'},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
    if (argc < 1 || (!tail && !warnings && strcmp(argv[0], "export") != 0)) {
        fprintf(stderr, "usage: tokenaudit audit tail|export|warnings --data-dir DIR ...\n");
        return 2;
    }
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "d:f:s:u:n:l:S:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': dir = optarg; break;
        case 'f': fmt = optarg; break;
        case 's':
        case 'u':
            if (parse_time_ns(optarg, c == 's' ? &since : &until) != 0) {
                fprintf(stderr, "audit: --%s %s: not an RFC 3339 time, date or unix seconds\n",
                        c == 's' ? "since" : "until", optarg);
                return 2;
            }
            break;
        case 'n': lines = strtol(optarg, NULL, 10); break;
        case 'l': lookback_s = strtol(optarg, NULL, 10); break;
        case 'S': state = optarg; break;
        default:
            fprintf(stderr,
                    "usage: tokenaudit audit export --data-dir DIR --format jsonl|csv [--since T] "
                    "[--until T]\n       tokenaudit audit tail --data-dir DIR [--lines N] "
                    "[--lookback SECONDS] [--format jsonl|csv]\n"
                    "       tokenaudit audit warnings --data-dir DIR "
                    "[--state none|pending|delivered|failed]\n");
            return 2;
        }
    }
    if (!dir || !*dir) {
        fprintf(stderr, "audit: --data-dir is required\n");
        return 2;
    }
    if (warnings)
        return warnings_cli(dir, state);
    bool csv = strcmp(fmt, "csv") == 0;
    if (!csv && strcmp(fmt, "jsonl") != 0) {
        fprintf(stderr, "audit: --format must be jsonl or csv\n");
        return 2;
    }
    ta_store_opts_t so = {.readonly = true};
    ta_store_t *st = NULL;
    int rc = ta_store_open(&st, dir, &so);
    if (rc != 0) {
        fprintf(stderr, "audit: cannot open %s: %s\n", dir, ta_strerror(rc));
        return 1;
    }
    out_arg_t a = {.out = stdout, .csv = csv, .min_ticket = -1};
    if (csv) {
        for (size_t i = 0; i < ta_desc_audit.nfields; i++)
            printf("%s%s", i ? "," : "", ta_desc_audit.fields[i].name);
        putchar('\n');
    }
    MDB_txn *txn = NULL;
    if (!tail) {
        ta_audit_filter_t f = {.since_ns = since, .until_ns = until, .ascending = true};
        if ((rc = ta_txn_begin(st, TA_ENV_AUDIT, false, &txn)) == 0) {
            rc = ta_audit_list(st, txn, &f, 0, 0, print_cb, &a, NULL);
            ta_txn_abort(txn);
        }
        goto Exit;
    }
    /* tail: the last `lines` records, then every record with a ticket above
     * what the audit environment had applied at the previous look. */
    signal(SIGINT, on_sig);
    signal(SIGTERM, on_sig);
    setvbuf(stdout, NULL, _IOLBF, 0);
    bool first = true;
    while (!tail_stop) {
        uint64_t applied = 0;
        if ((rc = ta_txn_begin(st, TA_ENV_AUDIT, false, &txn)) != 0)
            goto Exit;
        ta_meta_get_u64(st, txn, TA_ENV_AUDIT, "applied_ticket", &applied);
        if (first) {
            ta_audit_filter_t f = {.ascending = false};
            size_t total = 0;
            rc = ta_audit_list(st, txn, &f, 0, 0, NULL, NULL, &total);
            f.ascending = true;
            if (rc == 0)
                rc = ta_audit_list(st, txn, &f, total > (size_t)lines ? total - (size_t)lines : 0, 0,
                                   print_cb, &a, NULL);
            first = false;
        } else {
            ta_audit_filter_t f = {.since_ns = ta_now_ns() - lookback_s * 1000000000LL,
                                   .ascending = true};
            rc = ta_audit_list(st, txn, &f, 0, 0, print_cb, &a, NULL);
        }
        ta_txn_abort(txn);
        if (rc != 0)
            goto Exit;
        a.min_ticket = (int64_t)applied;
        fflush(stdout);
        struct timespec ts = {0, 200000000L};
        nanosleep(&ts, NULL);
    }
Exit:
    fflush(stdout);
    ta_store_close(st);
    if (rc != 0) {
        fprintf(stderr, "audit: %s\n", ta_strerror(rc));
        return 1;
    }
    return 0;
}

/* The names live once, in the audit record's descriptor (schema/audit_records.c). */
static const char *enum_name(const char *field, int v)
{
    const ta_field_t *f = ta_rec_field(&ta_desc_audit, field);
    if (f == NULL || f->names == NULL || v < 0)
        return "";
    for (int i = 0; f->names[i] != NULL; i++)
        if (i == v)
            return f->names[i];
    return "";
}

const char *ta_errtype_name(int et)
{
    return enum_name("error_type", et);
}

const char *ta_endpoint_name(int ep)
{
    return enum_name("endpoint", ep);
}
