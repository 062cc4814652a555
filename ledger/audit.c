/*
 * audit.c - the audit environment's tables and their queries.
 *
 *   requests            [ t_received_ns BE 8 | request id 16 ]            -> ta_audit_t (schema TLV)
 *   requests_by_quota   [ quota id BE 8 | t_received_ns BE 8 | rid 16 ]   -> (empty)
 *   daily               the aggregates (the table keeps its first name):
 *     hourly rows       [ scope 1 | scope id BE 8 | UTC hour BE 4 |
 *                         model id BE 8 | provider id BE 8 | group id BE 8 ] -> ta_daily_t (sums)
 *                       scope TA_AGG_ALL (id 0), TA_AGG_QUOTA (quota id; the
 *                       value carries user_id), TA_AGG_USER (user id); the hour
 *                       counts from 1970 (t_received / 3600 s); group: the
 *                       quota's group when the request was billed
 *     earlier builds'   [ quota id BE 8 | UTC day BE 4 | model id BE 8 ]  -> ta_daily_t
 *                       (20-byte keys, sorted before every hourly row;
 *                       ta_audit_upgrade turns them into hourly rows)
 *   user_cost           UTC hour BE 4 -> sorted duplicates (DUPFIXED) of
 *                       [ user id BE 8 | cost BE 8 | requests BE 8 ]: what each
 *                       user spent in the hour, so "the costliest users of a
 *                       range" reads 24 bytes per user and hour, a page of them
 *                       per LMDB call, not every user's aggregate rows (pairs_add)
 *   user_cum            UTC day BE 4 -> the same entries: each user's totals
 *                       over every hour before the day (see "user_cum" below)
 *   warnings            [ quota id BE 8 | period start BE 8 | pct BE 4 ]  -> ta_warning_t
 *   meta                "applied_ticket", "ring_id" (billing);
 *                       "pruned_cost.<quota id %020>.<period start %020>" ->
 *                       [ cost BE 8 | records BE 8 ]: what pruning deleted, per
 *                       the balance period the cost went to, so `ledger verify`
 *                       still adds up a period whose first records were pruned;
 *                       "aggregates_version" (2: hourly rows; 4: and user_cost,
 *                       user_cum; absent: an earlier build's data, see
 *                       ta_audit_upgrade), "aggregates_upgrade_pos",
 *                       "user_cost_upgrade_pos", "user_cum_day" (the latest day
 *                       billing made user_cum for)
 *
 * Why three scopes: a statistic reads the rows of one scope in an hour range,
 * so its cost follows the hours x models x providers x groups of that scope,
 * not the number of records: the whole gateway's (all), one quota's, one
 * user's (self-service statistics). ta_audit_stats says how hours become
 * days in a time zone.
 *
 * Writer: billing alone, in its batch transaction (records, index and
 * aggregates of a request are written together, so they never disagree) and
 * in small pruning transactions. Readers: workers (admin API) and the CLI in
 * read transactions; LMDB's MVCC gives them a consistent snapshot while
 * billing writes. A billing process killed mid-transaction leaves nothing
 * behind (LMDB aborts it); the record is re-written from the ring on restart
 * because the transaction also carries meta applied_ticket (billing.c).
 * Keys are big-endian so cursors walk time (and quota, hour) in order.
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

static uint32_t hour_of(int64_t t_ns)
{
    int64_t s = t_ns / 1000000000LL;
    if (s < 0)
        s = 0;
    return (uint32_t)(s / 3600);
}

/* A fixed-size event string (maybe not terminated) into a C string of cap bytes. */
static void field_copy(char *dst, size_t cap, const char *src, size_t srclen)
{
    size_t n = strnlen(src, srclen < cap - 1 ? srclen : cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
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
    field_copy(o->key_prefix, sizeof(o->key_prefix), ev->key_prefix, sizeof(ev->key_prefix));
    o->endpoint = ev->endpoint <= TA_EP_LAST ? ev->endpoint : TA_EP_OTHER;
    field_copy(o->model, sizeof(o->model), ev->model, sizeof(ev->model));
    field_copy(o->served_model, sizeof(o->served_model), ev->served_model, sizeof(ev->served_model));
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
    field_copy(o->client_ip, sizeof(o->client_ip), ev->client_ip, sizeof(ev->client_ip));
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

/* ---- records and their aggregates ------------------------------------------- */

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

/* What one record adds to each of its aggregate rows. */
static void sum_of(ta_daily_t *d, const ta_audit_t *r)
{
    memset(d, 0, sizeof(*d));
    d->requests = 1;
    d->prompt_tokens = r->prompt_tokens;
    d->completion_tokens = r->completion_tokens;
    d->cached_tokens = r->cached_tokens;
    d->cache_write_tokens = r->cache_write_tokens;
    d->cost = r->cost;
    d->errors = r->status >= 400;
}

static void agg_key(uint8_t k[TA_AGG_KEY_LEN], int scope, uint64_t id, uint32_t hour, uint64_t model,
                    uint64_t provider, uint64_t group)
{
    k[0] = (uint8_t)scope;
    ta_be64_put(k + 1, id);
    be32_put(k + 9, hour);
    ta_be64_put(k + 13, model);
    ta_be64_put(k + 21, provider);
    ta_be64_put(k + 29, group);
}

/* A batch slot of user_cost (never a key of the daily table): the hour
 * where the scope id goes and the user where the model goes, so slots sort
 * in user_cost's order (hour, then user). */
#define AGG_USER_COST 0xA4

#define REC_KEYS 4

/* The aggregate keys of a record: all, its quota's, its user's and its
 * user_cost slot (the last three when it has them). Returns how many;
 * user_of[i]: the user id the row's value carries (quota rows). */
static size_t rec_keys(const ta_audit_t *r, uint64_t group, uint8_t keys[REC_KEYS][TA_AGG_KEY_LEN],
                       uint64_t user_of[REC_KEYS])
{
    uint32_t h = hour_of(r->t_received_ns);
    size_t n = 0;
    agg_key(keys[n], TA_AGG_ALL, 0, h, r->model_id, r->provider_id, group);
    user_of[n++] = 0;
    if (r->quota_id != 0) {
        agg_key(keys[n], TA_AGG_QUOTA, r->quota_id, h, r->model_id, r->provider_id, group);
        user_of[n++] = r->user_id;
    }
    if (r->user_id != 0) {
        agg_key(keys[n], TA_AGG_USER, r->user_id, h, r->model_id, r->provider_id, group);
        user_of[n++] = 0;
        agg_key(keys[n], AGG_USER_COST, h, 0, r->user_id, 0, 0);
        user_of[n++] = 0;
    }
    return n;
}

/* Add delta to the aggregate row at cur's key k (cur positioned by the
 * caller's MDB_SET_KEY: found tells whether the row exists). */
static int agg_write(MDB_cursor *cur, const uint8_t *k, bool found, MDB_val *have,
                     const ta_daily_t *delta, uint64_t user_id)
{
    ta_daily_t d;
    uint8_t buf[256];
    if (found) {
        int rc = ta_rec_decode(&ta_desc_daily, have->mv_data, have->mv_size, &d);
        if (rc != 0)
            return rc;
    } else {
        memset(&d, 0, sizeof(d));
    }
    sum_add(&d, delta);
    if (user_id != 0)
        d.user_id = user_id;
    int len = ta_rec_encode(&ta_desc_daily, &d, buf, sizeof(buf));
    if (len < 0)
        return len;
    MDB_val key = {TA_AGG_KEY_LEN, (void *)k}, val = {(size_t)len, buf};
    int mrc = mdb_cursor_put(cur, &key, &val, found ? MDB_CURRENT : 0);
    return mrc ? lmdb_fail(mrc, "put aggregate") : 0;
}

static int agg_add(MDB_cursor *cur, const uint8_t *k, const ta_daily_t *delta, uint64_t user_id)
{
    MDB_val key = {TA_AGG_KEY_LEN, (void *)k}, val;
    int mrc = mdb_cursor_get(cur, &key, &val, MDB_SET_KEY);
    if (mrc != 0 && mrc != MDB_NOTFOUND)
        return lmdb_fail(mrc, "get aggregate");
    return agg_write(cur, k, mrc == 0, &val, delta, user_id);
}

/* Add (cost, requests) to user's entry under key k4 of a user_cost or
 * user_cum cursor, making it when missing. */
static int pair_add(MDB_cursor *cur, uint32_t k4, uint64_t user, ta_nano_t cost, int64_t reqs)
{
    uint8_t hk[4], dv[TA_USER_COST_LEN];
    be32_put(hk, k4);
    memset(dv, 0, sizeof(dv));
    ta_be64_put(dv, user);
    MDB_val k = {sizeof(hk), hk}, v = {sizeof(dv), dv};
    unsigned flags = 0;
    int mrc = mdb_cursor_get(cur, &k, &v, MDB_GET_BOTH_RANGE);
    if (mrc == 0 && v.mv_size == TA_USER_COST_LEN && ta_be64_get(v.mv_data) == user) {
        cost += (ta_nano_t)ta_be64_get((const uint8_t *)v.mv_data + 8);
        reqs += (int64_t)ta_be64_get((const uint8_t *)v.mv_data + 16);
        /* the entry keeps its place (users are unique under a key and sort
         * first): LMDB overwrites it where it is, no delete and insert */
        flags = MDB_CURRENT;
    } else if (mrc != 0 && mrc != MDB_NOTFOUND) { /* 0: the next user's entry */
        return lmdb_fail(mrc, "user cost");
    }
    ta_be64_put(dv + 8, (uint64_t)cost);
    ta_be64_put(dv + 16, (uint64_t)reqs);
    k.mv_size = sizeof(hk), k.mv_data = hk;
    v.mv_size = sizeof(dv), v.mv_data = dv;
    mrc = mdb_cursor_put(cur, &k, &v, flags);
    return mrc ? lmdb_fail(mrc, "put user cost") : 0;
}

/* The cursors aggregates are written with, and where user_cum stands. */
typedef struct aggw {
    MDB_cursor *cur, *ucur, *ccur; /* daily, user_cost, user_cum */
    bool has_cp;                   /* a user_cum day is stored ... */
    uint32_t cp_last;              /* ... and this is the latest */
} aggw_t;

static void aggw_close(aggw_t *a)
{
    if (a->ccur != NULL)
        mdb_cursor_close(a->ccur);
    if (a->ucur != NULL)
        mdb_cursor_close(a->ucur);
    if (a->cur != NULL)
        mdb_cursor_close(a->cur);
    memset(a, 0, sizeof(*a));
}

static int aggw_open(ta_store_t *st, MDB_txn *txn, aggw_t *a)
{
    memset(a, 0, sizeof(*a));
    MDB_val k, v;
    int mrc = mdb_cursor_open(txn, ta_store_dbi(st, TA_DB_AUDIT_DAILY), &a->cur);
    if (mrc == 0)
        mrc = mdb_cursor_open(txn, ta_store_dbi(st, TA_DB_AUDIT_USER_COST), &a->ucur);
    if (mrc == 0)
        mrc = mdb_cursor_open(txn, ta_store_dbi(st, TA_DB_AUDIT_USER_CUM), &a->ccur);
    if (mrc == 0 && (mrc = mdb_cursor_get(a->ccur, &k, &v, MDB_LAST)) == 0 && k.mv_size == 4) {
        a->has_cp = true;
        a->cp_last = be32_get(k.mv_data);
    }
    if (mrc != 0 && mrc != MDB_NOTFOUND) {
        aggw_close(a);
        return lmdb_fail(mrc, "aggregate cursors");
    }
    return 0;
}

/* A user's (cost, requests) in a UTC hour: its user_cost entry, and every
 * stored user_cum day after the hour (a request billed after its day's
 * totals were made: late in the ring, or a long stream). */
static int user_pair_add(aggw_t *a, uint32_t hour, uint64_t user, ta_nano_t cost, int64_t reqs)
{
    int rc = pair_add(a->ucur, hour, user, cost, reqs);
    if (rc != 0 || !a->has_cp || hour / 24 >= a->cp_last)
        return rc;
    uint8_t dk[4];
    be32_put(dk, hour / 24 + 1);
    MDB_val k = {sizeof(dk), dk}, v;
    int mrc;
    for (mrc = mdb_cursor_get(a->ccur, &k, &v, MDB_SET_RANGE); mrc == 0 && rc == 0;
         mrc = mdb_cursor_get(a->ccur, &k, &v, MDB_NEXT_NODUP))
        if (k.mv_size == 4)
            rc = pair_add(a->ccur, be32_get(k.mv_data), user, cost, reqs);
    return rc != 0 ? rc : mrc != MDB_NOTFOUND ? lmdb_fail(mrc, "user totals walk") : 0;
}

/* Add a slot's sums to its row: a daily row, or (AGG_USER_COST) user_cost. */
static int slot_add(aggw_t *a, const uint8_t *k, const ta_daily_t *d, uint64_t user_id)
{
    if (k[0] == AGG_USER_COST)
        return user_pair_add(a, (uint32_t)ta_be64_get(k + 1), ta_be64_get(k + 13), d->cost, d->requests);
    return agg_add(a->cur, k, d, user_id);
}

static int cum_roll(ta_store_t *st, MDB_txn *txn, aggw_t *a, uint32_t day);

/* The record and its quota index entry; 1 when the record was there. */
static int rec_write(ta_store_t *st, MDB_txn *txn, const ta_audit_t *rec)
{
    uint8_t buf[ENC_CAP], k[TA_AUDIT_QKEY_LEN];
    int len = ta_rec_encode(&ta_desc_audit, rec, buf, sizeof(buf));
    if (len < 0)
        return len;
    audit_key(k + 8, rec->t_received_ns, rec->request_id);
    MDB_val key = {TA_AUDIT_KEY_LEN, k + 8}, val = {(size_t)len, buf};
    MDB_dbi rdbi = ta_store_dbi(st, TA_DB_AUDIT_REQUESTS);
    /* records come in time order but for the spread of request durations:
     * appending skips the search (and fills pages); an older key is put in
     * its place (MDB_APPEND answers KEYEXIST for any key not past the last) */
    int mrc = mdb_put(txn, rdbi, &key, &val, MDB_APPEND);
    if (mrc == MDB_KEYEXIST)
        mrc = mdb_put(txn, rdbi, &key, &val, MDB_NOOVERWRITE);
    if (mrc == MDB_KEYEXIST)
        return 1;
    if (mrc != 0)
        return lmdb_fail(mrc, "put request");
    ta_be64_put(k, rec->quota_id);
    MDB_val qkey = {TA_AUDIT_QKEY_LEN, k}, empty = {0, NULL};
    mrc = mdb_put(txn, ta_store_dbi(st, TA_DB_AUDIT_BY_QUOTA), &qkey, &empty, 0);
    return mrc ? lmdb_fail(mrc, "put requests_by_quota") : 0;
}

int ta_audit_put(ta_store_t *st, MDB_txn *txn, const ta_audit_t *rec, uint64_t group_id)
{
    int rc = rec_write(st, txn, rec);
    if (rc != 0)
        return rc;
    uint8_t keys[REC_KEYS][TA_AGG_KEY_LEN];
    uint64_t users[REC_KEYS];
    ta_daily_t delta;
    aggw_t a;
    size_t n = rec_keys(rec, group_id, keys, users);
    sum_of(&delta, rec);
    if ((rc = aggw_open(st, txn, &a)) != 0)
        return rc;
    rc = cum_roll(st, txn, &a, hour_of(rec->t_received_ns) / 24);
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = slot_add(&a, keys[i], &delta, users[i]);
    aggw_close(&a);
    return rc;
}

/* ---- batches ---------------------------------------------------------------------- */

#define AGG_SLOTS 8192                 /* power of two */
#define AGG_FILL (AGG_SLOTS / 4 * 3)   /* flush past this many rows */

typedef struct agg_slot {
    uint8_t key[TA_AGG_KEY_LEN];
    bool used;
    uint64_t user_id;
    ta_daily_t sum;
} agg_slot_t;

struct ta_audit_batch {
    size_t n;
    uint32_t order[AGG_SLOTS]; /* the used slots */
    agg_slot_t slot[AGG_SLOTS];
};

int ta_audit_batch_new(ta_audit_batch_t **out)
{
    *out = calloc(1, sizeof(**out));
    return *out != NULL ? 0 : -ENOMEM;
}

void ta_audit_batch_free(ta_audit_batch_t *ab)
{
    free(ab);
}

void ta_audit_batch_reset(ta_audit_batch_t *ab)
{
    for (size_t i = 0; i < ab->n; i++)
        ab->slot[ab->order[i]].used = false;
    ab->n = 0;
}

static uint32_t key_hash(const uint8_t *k)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (size_t i = 0; i < TA_AGG_KEY_LEN; i++)
        h = (h ^ k[i]) * 0x100000001b3ULL;
    return (uint32_t)(h ^ (h >> 32));
}

static void batch_add(ta_audit_batch_t *ab, const uint8_t *k, const ta_daily_t *delta, uint64_t user_id)
{
    uint32_t i = key_hash(k) & (AGG_SLOTS - 1);
    while (ab->slot[i].used && memcmp(ab->slot[i].key, k, TA_AGG_KEY_LEN) != 0)
        i = (i + 1) & (AGG_SLOTS - 1);
    agg_slot_t *s = &ab->slot[i];
    if (!s->used) {
        s->used = true;
        memcpy(s->key, k, TA_AGG_KEY_LEN);
        memset(&s->sum, 0, sizeof(s->sum));
        s->user_id = 0;
        ab->order[ab->n++] = i;
    }
    sum_add(&s->sum, delta);
    if (user_id != 0)
        s->user_id = user_id;
}

int ta_audit_batch_put(ta_audit_batch_t *ab, ta_store_t *st, MDB_txn *txn, const ta_audit_t *rec,
                       uint64_t group_id)
{
    int rc = rec_write(st, txn, rec);
    if (rc != 0)
        return rc;
    uint8_t keys[REC_KEYS][TA_AGG_KEY_LEN];
    uint64_t users[REC_KEYS];
    ta_daily_t delta;
    if (ab->n + REC_KEYS > AGG_FILL && (rc = ta_audit_batch_flush(ab, st, txn)) != 0)
        return rc;
    size_t n = rec_keys(rec, group_id, keys, users);
    sum_of(&delta, rec);
    for (size_t i = 0; i < n; i++)
        batch_add(ab, keys[i], &delta, users[i]);
    return 0;
}

static int slot_cmp(const void *a, const void *b, void *arg)
{
    const ta_audit_batch_t *ab = arg;
    return memcmp(ab->slot[*(const uint32_t *)a].key, ab->slot[*(const uint32_t *)b].key,
                  TA_AGG_KEY_LEN);
}

int ta_audit_batch_flush(ta_audit_batch_t *ab, ta_store_t *st, MDB_txn *txn)
{
    if (ab->n == 0)
        return 0;
    /* in key order: each row's search starts from pages the last one read */
    qsort_r(ab->order, ab->n, sizeof(ab->order[0]), slot_cmp, ab);
    aggw_t a;
    int rc = aggw_open(st, txn, &a);
    /* the user_cost slots sort last, by hour: the last one's day is the
     * batch's newest; its user totals are made before any of its entries */
    const uint8_t *last = ab->slot[ab->order[ab->n - 1]].key;
    if (rc == 0 && last[0] == AGG_USER_COST)
        rc = cum_roll(st, txn, &a, (uint32_t)ta_be64_get(last + 1) / 24);
    for (size_t i = 0; i < ab->n && rc == 0; i++) {
        const agg_slot_t *s = &ab->slot[ab->order[i]];
        rc = slot_add(&a, s->key, &s->sum, s->user_id);
    }
    aggw_close(&a);
    ta_audit_batch_reset(ab);
    return rc;
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

/* ---- statistics ------------------------------------------------------------------ */

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
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

/* The series' buckets: key (a day number, a UTC hour or an id) and key2
 * (the second level's id, 0 without one) -> sums, in an array indexed by an
 * open-addressing table of (1 + array index). */
typedef struct bucket {
    int64_t key, key2;
    ta_daily_t sum;
} bucket_t;

typedef struct buckets {
    bucket_t *v;
    size_t n, cap;
    uint32_t *idx;
    size_t icap; /* power of two, at least twice n */
} buckets_t;

static uint32_t i64_hash(int64_t k, int64_t k2)
{
    return (uint32_t)((((uint64_t)k * 0x9E3779B97F4A7C15ULL) ^ ((uint64_t)k2 * 0xC2B2AE3D27D4EB4FULL)) >> 32);
}

static bucket_t *bucket_get(buckets_t *b, int64_t key, int64_t key2)
{
    if ((b->n + 1) * 2 > b->icap) {
        size_t nc = b->icap ? b->icap * 2 : 64;
        uint32_t *ni = calloc(nc, sizeof(*ni));
        if (ni == NULL)
            return NULL;
        for (size_t j = 0; j < b->n; j++) {
            size_t i = i64_hash(b->v[j].key, b->v[j].key2) & (nc - 1);
            while (ni[i])
                i = (i + 1) & (nc - 1);
            ni[i] = (uint32_t)(j + 1);
        }
        free(b->idx);
        b->idx = ni, b->icap = nc;
    }
    size_t i = i64_hash(key, key2) & (b->icap - 1);
    while (b->idx[i]) {
        if (b->v[b->idx[i] - 1].key == key && b->v[b->idx[i] - 1].key2 == key2)
            return &b->v[b->idx[i] - 1];
        i = (i + 1) & (b->icap - 1);
    }
    if (b->n == b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 32;
        bucket_t *nv = realloc(b->v, nc * sizeof(*nv));
        if (nv == NULL)
            return NULL;
        b->v = nv, b->cap = nc;
    }
    memset(&b->v[b->n], 0, sizeof(b->v[b->n]));
    b->v[b->n].key = key;
    b->v[b->n].key2 = key2;
    b->idx[i] = (uint32_t)(b->n + 1);
    return &b->v[b->n++];
}

static int bucket_cmp(const void *a, const void *b)
{
    const bucket_t *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->key2 < y->key2 ? -1 : x->key2 > y->key2;
}

typedef struct stats_walk {
    const ta_audit_filter_t *f;
    int group_by, then_by; /* then_by: the second level, TA_GROUP_NONE for none */
    const ta_tz_t *tz;
    uint32_t hlo, hhi;   /* UTC hours, inclusive */
    ta_daily_t tot;
    buckets_t b;
    int64_t memo_hour, memo_day; /* the local day of the last hour seen */
} stats_walk_t;

/* The local date (day number) of the start of UTC hour h. */
static int64_t local_day(stats_walk_t *w, uint32_t h)
{
    if ((int64_t)h != w->memo_hour) {
        int64_t t = (int64_t)h * 3600;
        w->memo_day = floor_div(t + ta_tz_offset(w->tz, t), 86400);
        w->memo_hour = h;
    }
    return w->memo_day;
}

/* The bucket of an aggregate row (key p, sums d, UTC hour, model) for one
 * grouping; false for TA_GROUP_NONE. */
static bool group_key(stats_walk_t *w, int group, const uint8_t *p, const ta_daily_t *d, int scope,
                      uint64_t id, uint32_t hour, uint64_t model, int64_t *key)
{
    switch (group) {
    case TA_GROUP_DAY: *key = local_day(w, hour); return true;
    case TA_GROUP_HOUR: *key = hour; return true;
    case TA_GROUP_MODEL: *key = (int64_t)model; return true;
    case TA_GROUP_PROVIDER: *key = (int64_t)ta_be64_get(p + 21); return true;
    case TA_GROUP_GROUP: *key = (int64_t)ta_be64_get(p + 29); return true;
    case TA_GROUP_USER: *key = (int64_t)(scope == TA_AGG_USER ? id : d->user_id); return true;
    default: return false;
    }
}

/* Sum the rows of scope/id in w's hours, from cur positioned anywhere. */
static int walk_scope(MDB_cursor *cur, stats_walk_t *w, int scope, uint64_t id)
{
    uint8_t lo[TA_AGG_KEY_LEN];
    agg_key(lo, scope, id, w->hlo, 0, 0, 0);
    MDB_val k = {TA_AGG_KEY_LEN, lo}, v;
    int mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    for (; mrc == 0; mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        const uint8_t *p = k.mv_data;
        if (k.mv_size != TA_AGG_KEY_LEN || p[0] != scope || ta_be64_get(p + 1) != id)
            break;
        uint32_t hour = be32_get(p + 9);
        if (hour > w->hhi)
            break;
        uint64_t model = ta_be64_get(p + 13);
        if (w->f->model_id && model != w->f->model_id)
            continue;
        ta_daily_t d;
        if (ta_rec_decode(&ta_desc_daily, v.mv_data, v.mv_size, &d) != 0) {
            ta_log(TA_LOG_WARN, "audit: undecodable aggregate row skipped");
            continue;
        }
        if (scope == TA_AGG_QUOTA && w->f->user_id && d.user_id != w->f->user_id)
            continue;
        sum_add(&w->tot, &d);
        int64_t key, key2 = 0;
        if (!group_key(w, w->group_by, p, &d, scope, id, hour, model, &key))
            continue;
        if (w->then_by != TA_GROUP_NONE &&
            !group_key(w, w->then_by, p, &d, scope, id, hour, model, &key2))
            continue;
        bucket_t *bk = bucket_get(&w->b, key, key2);
        if (bk == NULL)
            return -ENOMEM;
        sum_add(&bk->sum, &d);
    }
    return mrc != 0 && mrc != MDB_NOTFOUND ? lmdb_fail(mrc, "stats walk") : 0;
}

/* Every id of a scope (the statistics of every user). */
static int walk_every(MDB_cursor *cur, stats_walk_t *w, int scope)
{
    uint64_t id = 0;
    for (;;) {
        uint8_t lo[TA_AGG_KEY_LEN];
        agg_key(lo, scope, id, 0, 0, 0, 0);
        MDB_val k = {TA_AGG_KEY_LEN, lo}, v;
        int mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (mrc == MDB_NOTFOUND)
            return 0;
        if (mrc != 0)
            return lmdb_fail(mrc, "stats walk");
        if (k.mv_size != TA_AGG_KEY_LEN || ((const uint8_t *)k.mv_data)[0] != scope)
            return 0;
        id = ta_be64_get((const uint8_t *)k.mv_data + 1);
        int rc = walk_scope(cur, w, scope, id);
        if (rc != 0 || id == UINT64_MAX)
            return rc;
        id++;
    }
}

static void hour_label(const ta_tz_t *tz, int64_t hour, char out[32])
{
    int64_t t = hour * 3600;
    int32_t off = ta_tz_offset(tz, t), aoff = off < 0 ? -off : off;
    int64_t local = t + off, days = floor_div(local, 86400), secs = local - days * 86400;
    int y, m, d;
    ta_tz_civil(days, &y, &m, &d);
    snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:00%c%02d:%02d", y, m, d, (int)(secs / 3600),
             (int)(secs / 60 % 60), off < 0 ? '-' : '+', (int)(aoff / 3600), (int)(aoff / 60 % 60));
}

static void day_label(int64_t day, char out[16])
{
    int y, m, d;
    ta_tz_civil(day, &y, &m, &d);
    snprintf(out, 16, "%04d-%02d-%02d", y, m, d);
}

/* The name of a grouping's field in a series entry. */
static const char *group_field(int group)
{
    switch (group) {
    case TA_GROUP_DAY: return "day";
    case TA_GROUP_HOUR: return "hour";
    case TA_GROUP_MODEL: return "model_id";
    case TA_GROUP_PROVIDER: return "provider_id";
    case TA_GROUP_GROUP: return "group_id";
    default: return "user_id";
    }
}

/* The value of a grouping's field for bucket key k. */
static json_t *group_value(int group, const ta_tz_t *tz, int64_t k)
{
    char lab[32];
    if (group == TA_GROUP_DAY) {
        day_label(k, lab);
        return json_string(lab);
    }
    if (group == TA_GROUP_HOUR) {
        hour_label(tz, k, lab);
        return json_string(lab);
    }
    return json_integer((json_int_t)k);
}

/* ---- ranking: the costliest keys of a grouping ---------------------------- */

/* key (an id; 0 is a key too: no provider) -> a sum of cost and of
 * requests, or a rank. Open addressing over slots holding key + 1 (0: empty). */
typedef struct keymap_slot {
    uint64_t key1;
    int64_t val;  /* cost, or a rank */
    int64_t reqs; /* requests */
} keymap_slot_t;

typedef struct keymap {
    keymap_slot_t *s;
    size_t n, cap; /* cap: a power of two, at least twice n */
} keymap_t;

static keymap_slot_t *keymap_get(keymap_t *m, int64_t key)
{
    if ((m->n + 1) * 2 > m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 1024;
        keymap_slot_t *ns = calloc(nc, sizeof(*ns));
        if (ns == NULL)
            return NULL;
        for (size_t j = 0; j < m->cap; j++) {
            if (m->s[j].key1 == 0)
                continue;
            size_t i = i64_hash((int64_t)m->s[j].key1, 0) & (nc - 1);
            while (ns[i].key1)
                i = (i + 1) & (nc - 1);
            ns[i] = m->s[j];
        }
        free(m->s);
        m->s = ns, m->cap = nc;
    }
    uint64_t k1 = (uint64_t)key + 1;
    size_t i = i64_hash((int64_t)k1, 0) & (m->cap - 1);
    while (m->s[i].key1 != 0 && m->s[i].key1 != k1)
        i = (i + 1) & (m->cap - 1);
    if (m->s[i].key1 == 0) {
        m->s[i].key1 = k1;
        m->s[i].val = m->s[i].reqs = 0;
        m->n++;
    }
    return &m->s[i];
}

/* Room for n keys without growing (an estimate: more still works). */
static int keymap_reserve(keymap_t *m, size_t n)
{
    size_t cap = 1024;
    while (cap < 2 * n + 2)
        cap *= 2;
    if (m->cap >= cap || m->n > 0)
        return 0;
    free(m->s);
    m->cap = 0;
    if ((m->s = calloc(cap, sizeof(*m->s))) == NULL)
        return -ENOMEM;
    m->cap = cap;
    return 0;
}

static const keymap_slot_t *keymap_find(const keymap_t *m, int64_t key)
{
    if (m->cap == 0)
        return NULL;
    uint64_t k1 = (uint64_t)key + 1;
    size_t i = i64_hash((int64_t)k1, 0) & (m->cap - 1);
    while (m->s[i].key1 != 0 && m->s[i].key1 != k1)
        i = (i + 1) & (m->cap - 1);
    return m->s[i].key1 != 0 ? &m->s[i] : NULL;
}

/* Whether a ranks before b: the higher cost, then the smaller key. */
static bool ranks_before(const keymap_slot_t *a, const keymap_slot_t *b)
{
    return a->val != b->val ? a->val > b->val : a->key1 < b->key1;
}

static int rank_cmp(const void *a, const void *b)
{
    return ranks_before(a, b) ? -1 : ranks_before(b, a);
}

static int slot_key_cmp(const void *a, const void *b)
{
    const keymap_slot_t *x = a, *y = b;
    return x->key1 < y->key1 ? -1 : x->key1 > y->key1;
}

/* The limit costliest keys with requests (reqs > 0), pushed one at a time,
 * through a heap of the limit best so far whose root is the worst of them:
 * O(n log limit), most keys rejected by one comparison with the root. */
typedef struct ranker {
    keymap_slot_t *h;
    size_t n, cap;
    size_t of; /* keys with requests pushed */
} ranker_t;

static int ranker_init(ranker_t *r, size_t limit)
{
    memset(r, 0, sizeof(*r));
    r->cap = limit;
    r->h = malloc((limit ? limit : 1) * sizeof(*r->h));
    return r->h != NULL ? 0 : -ENOMEM;
}

static void ranker_push(ranker_t *r, const keymap_slot_t *e)
{
    keymap_slot_t *h = r->h;
    size_t i;
    if (e->reqs <= 0)
        return;
    r->of++;
    if (r->cap == 0)
        return;
    if (r->n < r->cap) { /* sift up */
        for (i = r->n++; i > 0 && ranks_before(&h[(i - 1) / 2], e); i = (i - 1) / 2)
            h[i] = h[(i - 1) / 2];
    } else if (ranks_before(e, &h[0])) { /* replace the root, sift down */
        for (i = 0;;) {
            size_t c = 2 * i + 1;
            if (c >= r->n)
                break;
            if (c + 1 < r->n && ranks_before(&h[c], &h[c + 1]))
                c++;
            if (!ranks_before(e, &h[c]))
                break;
            h[i] = h[c];
            i = c;
        }
    } else {
        return;
    }
    h[i] = *e;
}

/* The kept keys, best first, into *top (the caller frees it). */
static void ranker_done(ranker_t *r, keymap_slot_t **top, size_t *ntop, size_t *of)
{
    qsort(r->h, r->n, sizeof(*r->h), rank_cmp);
    *top = r->h;
    *ntop = r->n;
    *of = r->of;
    r->h = NULL;
}

/* The limit costliest keys of m with requests into top[] (best first; *ntop
 * of them; *of: how many had requests). */
static int rank_top(const keymap_t *m, size_t limit, keymap_slot_t **top, size_t *ntop, size_t *of)
{
    ranker_t r;
    if (ranker_init(&r, limit) != 0)
        return -ENOMEM;
    for (size_t j = 0; j < m->cap; j++)
        if (m->s[j].key1 != 0)
            ranker_push(&r, &m->s[j]);
    ranker_done(&r, top, ntop, of);
    return 0;
}

/* The entries under one key of a DUPFIXED cursor, in user order, a page of
 * them per LMDB call. */
typedef struct dupstream {
    MDB_cursor *cur;
    const uint8_t *p, *e; /* the current page's entries left */
    size_t dups;
    int mrc; /* MDB_NOTFOUND once read to the end */
} dupstream_t;

static void dups_open(dupstream_t *d, MDB_cursor *cur, uint32_t key)
{
    uint8_t k4[4];
    be32_put(k4, key);
    MDB_val k = {sizeof(k4), k4}, v;
    d->cur = cur;
    d->p = d->e = NULL;
    d->mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY);
    if (d->mrc == 0 && (d->mrc = mdb_cursor_count(cur, &d->dups)) == 0 && d->dups > 1)
        d->mrc = mdb_cursor_get(cur, &k, &v, MDB_GET_MULTIPLE);
    if (d->mrc == 0) {
        d->p = v.mv_data;
        d->e = d->p + v.mv_size - v.mv_size % TA_USER_COST_LEN;
    }
}

/* The next entry (NULL at the end; d->mrc says whether it failed). */
static const uint8_t *dups_next(dupstream_t *d)
{
    while (d->p == d->e) {
        MDB_val k, v;
        if (d->mrc != 0 || d->dups <= 1 ||
            (d->mrc = mdb_cursor_get(d->cur, &k, &v, MDB_NEXT_MULTIPLE)) != 0) {
            if (d->dups <= 1 && d->mrc == 0)
                d->mrc = MDB_NOTFOUND;
            return NULL;
        }
        d->p = v.mv_data;
        d->e = d->p + v.mv_size - v.mv_size % TA_USER_COST_LEN;
    }
    const uint8_t *x = d->p;
    d->p += TA_USER_COST_LEN;
    return x;
}

/* The keys (hours, days) of cur (user_cost or user_cum) in [lo, hi], one a
 * call (*first: the first call). 1 with *key and *dups (its entries), 0 at
 * the end, <0 an error. */
static int key_next(MDB_cursor *cur, bool *first, uint32_t lo, uint32_t hi, uint32_t *key, size_t *dups)
{
    uint8_t lk[4];
    MDB_val k = {sizeof(lk), lk}, v;
    if (lo > hi)
        return 0;
    be32_put(lk, lo);
    int mrc = mdb_cursor_get(cur, &k, &v, *first ? MDB_SET_RANGE : MDB_NEXT_NODUP);
    *first = false;
    if (mrc == MDB_NOTFOUND || (mrc == 0 && (k.mv_size != 4 || be32_get(k.mv_data) > hi)))
        return 0;
    if (mrc == 0)
        mrc = mdb_cursor_count(cur, dups);
    if (mrc != 0)
        return lmdb_fail(mrc, "user cost walk");
    *key = be32_get(k.mv_data);
    return 1;
}

/* Add sign x the entries of cur whose keys are in [lo, hi] to m: a page of
 * 24-byte entries per LMDB call, never the aggregate rows. */
static int pairs_add(MDB_cursor *cur, uint32_t lo, uint32_t hi, int sign, keymap_t *m)
{
    bool first = true;
    uint32_t key;
    size_t dups;
    int rc;
    while ((rc = key_next(cur, &first, lo, hi, &key, &dups)) > 0) {
        dupstream_t d;
        const uint8_t *p;
        dups_open(&d, cur, key);
        while ((p = dups_next(&d)) != NULL) {
            keymap_slot_t *u = keymap_get(m, (int64_t)ta_be64_get(p));
            if (u == NULL)
                return -ENOMEM;
            u->val += sign * (int64_t)ta_be64_get(p + 8);
            u->reqs += sign * (int64_t)ta_be64_get(p + 16);
        }
        if (d.mrc != MDB_NOTFOUND)
            return lmdb_fail(d.mrc, "user cost walk");
    }
    return rc;
}

/* How many entries pairs_add would read for [lo, hi]: a count per key. */
static int pairs_count(MDB_cursor *cur, uint32_t lo, uint32_t hi, size_t *n)
{
    bool first = true;
    uint32_t key;
    size_t dups;
    int rc;
    *n = 0;
    while ((rc = key_next(cur, &first, lo, hi, &key, &dups)) > 0)
        *n += dups;
    return rc;
}

/* ---- user_cum: each user's totals before a UTC day ---------------------------- *
 *
 * A ranking of users over a range must read something of every user active in
 * it; reading their hourly entries grows with the requests of sparse users
 * (one entry per request). With each user's totals before a day (user_cum,
 * made by billing once a day), a user's cost over [hlo, hhi] is cum(hhi + 1)
 * - cum(hlo), and cum(t) is the stored day nearest t plus or minus the
 * hourly entries between them (at most 12 hours' worth): two reads of one
 * entry per user, whatever the number of requests. walk_top_users takes the
 * cheaper of that and the hourly entries of the range, counted first.
 *
 * Billing makes day d's entries when the first request of day d (UTC) is
 * flushed: the latest stored day's plus the hourly entries since. A request
 * billed after its day's totals were made (late in the ring, a long stream)
 * is added to every stored day after its hour (user_pair_add). Days older
 * than CUM_DAYS are deleted but the first of each month, so a range far back
 * costs at most a month of hourly entries. */
#define CUM_DAYS 45
#define CUM_META "user_cum_day"
#define T_ALL ((uint64_t)1 << 32) /* cum(T_ALL): every hour */

static bool month_first(uint32_t day)
{
    int y, m, d;
    ta_tz_civil((int64_t)day, &y, &m, &d);
    return d == 1;
}

/* The stored user_cum days nearest day: the latest <= day (*prev) and the
 * first >= day (*next); false when there is none. */
static int cum_near(MDB_cursor *ccur, uint32_t day, bool *has_prev, uint32_t *prev, bool *has_next,
                    uint32_t *next)
{
    uint8_t dk[4];
    be32_put(dk, day);
    MDB_val k = {sizeof(dk), dk}, v;
    *has_prev = *has_next = false;
    int mrc = mdb_cursor_get(ccur, &k, &v, MDB_SET_RANGE);
    if (mrc == 0 && k.mv_size == 4) {
        *has_next = true;
        *next = be32_get(k.mv_data);
        if (*next == day) {
            *has_prev = true;
            *prev = day;
            return 0;
        }
        mrc = mdb_cursor_get(ccur, &k, &v, MDB_PREV_NODUP);
    } else if (mrc == MDB_NOTFOUND) {
        mrc = mdb_cursor_get(ccur, &k, &v, MDB_LAST);
    }
    if (mrc == 0 && k.mv_size == 4) {
        *has_prev = true;
        *prev = be32_get(k.mv_data);
    }
    return mrc != 0 && mrc != MDB_NOTFOUND ? lmdb_fail(mrc, "user totals walk") : 0;
}

static int cum_roll(ta_store_t *st, MDB_txn *txn, aggw_t *a, uint32_t day)
{
    uint64_t have = 0;
    if (day == 0) /* nothing is before the first day */
        return 0;
    int rc = ta_meta_get_u64(st, txn, TA_ENV_AUDIT, CUM_META, &have);
    if (rc == 0 && have >= day)
        return 0;
    if (rc != 0 && rc != TA_ENOTFOUND)
        return rc;
    bool hp, hn;
    uint32_t prev = 0, next;
    keymap_t m = {0};
    keymap_slot_t *v = NULL;
    size_t n = 0;
    if ((rc = cum_near(a->ccur, day, &hp, &prev, &hn, &next)) != 0)
        return rc;
    if (hp && prev == day) /* made already (meta lost): nothing to do but the meta */
        return ta_meta_put_u64(st, txn, TA_ENV_AUDIT, CUM_META, day);
    if (hp)
        rc = pairs_add(a->ccur, prev, prev, 1, &m);
    if (rc == 0)
        rc = pairs_add(a->ucur, hp ? prev * 24 : 0, day * 24 - 1, 1, &m);
    if (rc == 0 && m.n > 0 && (v = malloc(m.n * sizeof(*v))) == NULL)
        rc = -ENOMEM;
    for (size_t j = 0; rc == 0 && j < m.cap; j++)
        if (m.s[j].key1 != 0)
            v[n++] = m.s[j];
    free(m.s);
    if (rc == 0 && n > 0) {
        qsort(v, n, sizeof(*v), slot_key_cmp); /* in user order, appended */
        uint8_t dk[4], dv[TA_USER_COST_LEN];
        be32_put(dk, day);
        for (size_t i = 0; rc == 0 && i < n; i++) {
            ta_be64_put(dv, v[i].key1 - 1);
            ta_be64_put(dv + 8, (uint64_t)v[i].val);
            ta_be64_put(dv + 16, (uint64_t)v[i].reqs);
            MDB_val k = {sizeof(dk), dk}, d = {sizeof(dv), dv};
            int mrc = mdb_cursor_put(a->ccur, &k, &d, MDB_APPENDDUP);
            if (mrc != 0)
                rc = lmdb_fail(mrc, "put user totals");
        }
        if (rc == 0 && (!a->has_cp || day > a->cp_last)) {
            a->has_cp = true;
            a->cp_last = day;
        }
    }
    free(v);
    /* days older than CUM_DAYS go, but the first of each month (a few a day) */
    uint32_t old[8];
    size_t nold = 0;
    MDB_val k, d;
    int mrc;
    for (mrc = mdb_cursor_get(a->ccur, &k, &d, MDB_FIRST); rc == 0 && mrc == 0 && nold < 8;
         mrc = mdb_cursor_get(a->ccur, &k, &d, MDB_NEXT_NODUP)) {
        uint32_t kd = k.mv_size == 4 ? be32_get(k.mv_data) : UINT32_MAX;
        if ((uint64_t)kd + CUM_DAYS >= day)
            break;
        if (!month_first(kd))
            old[nold++] = kd;
    }
    if (rc == 0 && mrc != 0 && mrc != MDB_NOTFOUND)
        rc = lmdb_fail(mrc, "user totals walk");
    for (size_t i = 0; rc == 0 && i < nold; i++) {
        uint8_t dk[4];
        be32_put(dk, old[i]);
        MDB_val ok = {sizeof(dk), dk};
        if ((mrc = mdb_del(txn, ta_store_dbi(st, TA_DB_AUDIT_USER_CUM), &ok, NULL)) != 0)
            rc = lmdb_fail(mrc, "prune user totals");
    }
    return rc != 0 ? rc : ta_meta_put_u64(st, txn, TA_ENV_AUDIT, CUM_META, day);
}

/* Whether user_cost holds every request (version 4; billing builds it from
 * the user rows of an earlier build when it starts, ta_audit_upgrade). */
static bool user_cost_ready(ta_store_t *st, MDB_txn *txn)
{
    uint64_t ver = 0;
    return ta_store_has_db(st, TA_DB_AUDIT_USER_COST) && ta_store_has_db(st, TA_DB_AUDIT_USER_CUM) &&
           ta_meta_get_u64(st, txn, TA_ENV_AUDIT, "aggregates_version", &ver) == 0 && ver >= 4;
}

static bool group_is_time(int g)
{
    return g == TA_GROUP_DAY || g == TA_GROUP_HOUR;
}

int ta_audit_stats(ta_store_t *st, MDB_txn *txn, const ta_audit_filter_t *f, int group_by,
                   const ta_tz_t *tz, json_t **out)
{
    return ta_audit_stats_by(st, txn, f, group_by, TA_GROUP_NONE, tz, 0, out);
}

/* Keep the buckets whose ranked key (key, or key2 with two levels) is among
 * the limit costliest and order them (two levels: by time, then rank; one:
 * by rank). *of: how many keys there were. */
static int rank_buckets(stats_walk_t *w, size_t limit, bool two, size_t *of)
{
    keymap_t cost = {0}, rank = {0};
    keymap_slot_t *top = NULL;
    size_t ntop = 0, n = 0;
    int rc = 0;
    for (size_t i = 0; i < w->b.n && rc == 0; i++) {
        keymap_slot_t *e = keymap_get(&cost, two ? w->b.v[i].key2 : w->b.v[i].key);
        if (e == NULL) {
            rc = -ENOMEM;
        } else {
            e->val += w->b.v[i].sum.cost;
            e->reqs += w->b.v[i].sum.requests;
        }
    }
    if (rc == 0)
        rc = rank_top(&cost, limit, &top, &ntop, of);
    for (size_t i = 0; i < ntop && rc == 0; i++) {
        keymap_slot_t *e = keymap_get(&rank, (int64_t)top[i].key1 - 1);
        if (e == NULL)
            rc = -ENOMEM;
        else
            e->val = (int64_t)i;
    }
    /* each kept bucket's rank goes where its second key was: the sort below
     * orders by key, then rank (two levels) or by rank alone */
    for (size_t i = 0; i < w->b.n && rc == 0; i++) {
        const keymap_slot_t *e = keymap_find(&rank, two ? w->b.v[i].key2 : w->b.v[i].key);
        if (e == NULL)
            continue;
        bucket_t b = w->b.v[i];
        if (two) {
            b.key2 = e->val;
        } else {
            b.key2 = b.key;
            b.key = e->val;
        }
        w->b.v[n++] = b;
    }
    if (rc == 0) {
        w->b.n = n;
        if (n > 0) /* v is NULL with no bucket */
            qsort(w->b.v, n, sizeof(*w->b.v), bucket_cmp);
        /* and back from ranks to keys */
        for (size_t i = 0; i < n; i++) {
            if (two) {
                w->b.v[i].key2 = (int64_t)top[w->b.v[i].key2].key1 - 1;
            } else {
                w->b.v[i].key = w->b.v[i].key2;
                w->b.v[i].key2 = 0;
            }
        }
    }
    free(top);
    free(cost.s);
    free(rank.s);
    return rc;
}

/* How cum(t) is read: from the stored day before t plus the hours between,
 * from the one after minus them, or (none) from every hour before t. */
typedef struct cum_plan {
    int how; /* 0: nothing to read (t 0), 1: prev, 2: next, 3: hours only */
    uint32_t day;
    size_t cost; /* entries read */
} cum_plan_t;

static int cum_plan(MDB_cursor *ucur, MDB_cursor *ccur, uint64_t t, cum_plan_t *p)
{
    bool hp, hn;
    uint32_t prev = 0, next = 0;
    size_t a = 0, b = 0, c;
    int rc;
    memset(p, 0, sizeof(*p));
    if (t == 0)
        return 0;
    if ((rc = cum_near(ccur, t >= T_ALL ? UINT32_MAX : (uint32_t)(t / 24), &hp, &prev, &hn, &next)) != 0)
        return rc;
    if (hn && (uint64_t)next * 24 < t)
        hn = false; /* t past the last day's start: only the one before helps */
    p->how = 3;
    if ((rc = pairs_count(ucur, 0, (uint32_t)(t - 1), &p->cost)) != 0)
        return rc;
    if (hp) {
        if ((rc = pairs_count(ccur, prev, prev, &a)) != 0 ||
            (rc = pairs_count(ucur, prev * 24, (uint32_t)(t - 1), &b)) != 0)
            return rc;
        if (a + b < p->cost)
            p->how = 1, p->day = prev, p->cost = a + b;
    }
    if (hn && t < T_ALL) {
        if ((rc = pairs_count(ccur, next, next, &a)) != 0 ||
            (rc = pairs_count(ucur, (uint32_t)t, next * 24 - 1, &c)) != 0)
            return rc;
        if (a + c < p->cost)
            p->how = 2, p->day = next, p->cost = a + c;
    }
    return 0;
}

/* The hours cum(t) reads beside its user_cum day, as p says: [*lo, *hi],
 * counted with *sign relative to cum's; false when it reads none. */
static bool plan_hours(const cum_plan_t *p, uint64_t t, uint32_t *lo, uint32_t *hi, int *sign)
{
    *sign = 1;
    switch (p->how) {
    case 1: *lo = p->day * 24, *hi = (uint32_t)(t - 1); return true;
    case 2: *lo = (uint32_t)t, *hi = p->day * 24 - 1, *sign = -1; return true;
    case 3: *lo = 0, *hi = (uint32_t)(t - 1); return true;
    default: return false;
    }
}

/* m += sign x the hourly part of cum(t) read as p says (its user_cum day is
 * added by the caller). */
static int cum_hours(MDB_cursor *ucur, uint64_t t, const cum_plan_t *p, int sign, keymap_t *m)
{
    uint32_t lo, hi;
    int hs;
    return plan_hours(p, t, &lo, &hi, &hs) ? pairs_add(ucur, lo, hi, sign * hs, m) : 0;
}

/* A k-way merge in user order of the entry lists a ranking by user_cum
 * reads: its two days and the hours between each end and its day, each
 * list with its sign; no table of users. At most MERGE_MAX lists (else the
 * lists go through a table, user_top). */
#define MERGE_MAX 64

typedef struct mstream {
    dupstream_t d;
    const uint8_t *e; /* the current entry */
    uint64_t u;       /* its user, decoded once */
    int sign;
} mstream_t;

typedef struct merge {
    mstream_t s[MERGE_MAX];
    size_t n;
    bool fits;
} merge_t;

/* A list of cur's database (user_cost or user_cum) under key k, own cursor. */
static int merge_add(merge_t *g, MDB_txn *txn, MDB_dbi dbi, uint32_t k, int sign)
{
    MDB_cursor *c;
    if (g->n == MERGE_MAX) {
        g->fits = false;
        return 0;
    }
    int mrc = mdb_cursor_open(txn, dbi, &c);
    if (mrc != 0)
        return lmdb_fail(mrc, "merge cursor");
    mstream_t *m = &g->s[g->n++];
    dups_open(&m->d, c, k);
    m->sign = sign;
    m->e = NULL;
    return m->d.mrc == 0 || m->d.mrc == MDB_NOTFOUND ? 0 : lmdb_fail(m->d.mrc, "merge list");
}

/* The lists of cum(t) read as p says, with sign: its user_cum day and the
 * hours of user_cost beside it (those with entries). */
static int merge_plan(merge_t *g, ta_store_t *st, MDB_txn *txn, MDB_cursor *ucur, uint64_t t,
                      const cum_plan_t *p, int sign)
{
    uint32_t lo, hi, key;
    size_t dups;
    bool first = true;
    int hs, rc = 0;
    if (p->how == 1 || p->how == 2)
        rc = merge_add(g, txn, ta_store_dbi(st, TA_DB_AUDIT_USER_CUM), p->day, sign);
    if (rc != 0 || !plan_hours(p, t, &lo, &hi, &hs))
        return rc;
    while (g->fits && (rc = key_next(ucur, &first, lo, hi, &key, &dups)) > 0)
        if ((rc = merge_add(g, txn, ta_store_dbi(st, TA_DB_AUDIT_USER_COST), key, sign * hs)) != 0)
            return rc;
    return rc < 0 ? rc : 0;
}

static uint64_t ms_user(const mstream_t *m)
{
    return m->u;
}

/* The stream's next entry; false at its end. */
static bool ms_next(mstream_t *m)
{
    if ((m->e = dups_next(&m->d)) == NULL)
        return false;
    m->u = ta_be64_get(m->e);
    return true;
}

static void merge_down(mstream_t **h, size_t n, size_t i)
{
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            return;
        if (c + 1 < n && ms_user(h[c + 1]) < ms_user(h[c]))
            c++;
        if (ms_user(h[i]) <= ms_user(h[c]))
            return;
        mstream_t *x = h[i];
        h[i] = h[c], h[c] = x;
        i = c;
    }
}

/* Each user's sum over the lists, in user order, to the ranker. */
static int merge_rank(merge_t *g, ranker_t *r)
{
    mstream_t *h[MERGE_MAX];
    size_t n = 0;
    for (size_t i = 0; i < g->n; i++)
        if (ms_next(&g->s[i]))
            h[n++] = &g->s[i];
    for (size_t i = n / 2; i-- > 0;)
        merge_down(h, n, i);
    while (n > 0) {
        uint64_t u = ms_user(h[0]);
        keymap_slot_t acc = {u + 1, 0, 0};
        while (n > 0 && ms_user(h[0]) == u) {
            mstream_t *m = h[0];
            acc.val += m->sign * (int64_t)ta_be64_get(m->e + 8);
            acc.reqs += m->sign * (int64_t)ta_be64_get(m->e + 16);
            if (!ms_next(m))
                h[0] = h[--n];
            merge_down(h, n, 0);
        }
        ranker_push(r, &acc);
    }
    for (size_t i = 0; i < g->n; i++)
        if (g->s[i].d.mrc != 0 && g->s[i].d.mrc != MDB_NOTFOUND)
            return lmdb_fail(g->s[i].d.mrc, "merge list");
    return 0;
}

static void merge_close(merge_t *g)
{
    for (size_t i = 0; i < g->n; i++)
        mdb_cursor_close(g->s[i].d.cur);
    g->n = 0;
}

int ta_audit_rank_plan = TA_RANK_AUTO;

/* The limit costliest users of w's hours into top[] (best first; *of: the
 * users with requests there). Either the hourly entries of the range, or,
 * when that reads fewer entries, cum(hhi + 1) - cum(hlo): the two user_cum
 * days and the hours between each end and its day, merged in user order. */
static int user_top(ta_store_t *st, MDB_txn *txn, const stats_walk_t *w, size_t limit,
                    keymap_slot_t **top, size_t *ntop, size_t *of)
{
    MDB_cursor *ucur = NULL, *ccur = NULL;
    cum_plan_t lo = {0}, hi = {0};
    size_t direct = 0;
    keymap_t m = {0};
    ranker_t r;
    uint64_t tlo = w->hlo, thi = (uint64_t)w->hhi + 1;
    int rc = ranker_init(&r, limit), mrc = 0;
    if (rc == 0 && ((mrc = mdb_cursor_open(txn, ta_store_dbi(st, TA_DB_AUDIT_USER_COST), &ucur)) != 0 ||
                    (mrc = mdb_cursor_open(txn, ta_store_dbi(st, TA_DB_AUDIT_USER_CUM), &ccur)) != 0))
        rc = lmdb_fail(mrc, "user cost cursors");
    if (rc == 0)
        rc = pairs_count(ucur, w->hlo, w->hhi, &direct);
    if (rc == 0)
        rc = cum_plan(ucur, ccur, tlo, &lo);
    if (rc == 0)
        rc = cum_plan(ucur, ccur, thi, &hi);
    bool days = ta_audit_rank_plan == TA_RANK_DAYS || ta_audit_rank_plan == TA_RANK_DAYS_TABLE ||
                (ta_audit_rank_plan == TA_RANK_AUTO && lo.cost + hi.cost < direct);
    if (rc == 0 && days) {
        merge_t g = {.n = 0, .fits = ta_audit_rank_plan != TA_RANK_DAYS_TABLE};
        rc = merge_plan(&g, st, txn, ucur, thi, &hi, 1);
        if (rc == 0)
            rc = merge_plan(&g, st, txn, ucur, tlo, &lo, -1);
        if (rc == 0 && g.fits) {
            rc = merge_rank(&g, &r);
        } else if (rc == 0) { /* too many hours to merge (no day made for a while): a table */
            rc = cum_hours(ucur, thi, &hi, 1, &m);
            if (rc == 0)
                rc = cum_hours(ucur, tlo, &lo, -1, &m);
            if (rc == 0 && (hi.how == 1 || hi.how == 2))
                rc = pairs_add(ccur, hi.day, hi.day, 1, &m);
            if (rc == 0 && (lo.how == 1 || lo.how == 2))
                rc = pairs_add(ccur, lo.day, lo.day, -1, &m);
        }
        merge_close(&g);
    } else if (rc == 0) {
        rc = keymap_reserve(&m, direct / 4); /* a user has several hours */
        if (rc == 0)
            rc = pairs_add(ucur, w->hlo, w->hhi, 1, &m);
    }
    /* the users of the table (all of them, or those the merge did not meet) */
    for (size_t j = 0; rc == 0 && j < m.cap; j++)
        if (m.s[j].key1 != 0)
            ranker_push(&r, &m.s[j]);
    if (rc == 0)
        ranker_done(&r, top, ntop, of);
    free(r.h);
    free(m.s);
    if (ccur != NULL)
        mdb_cursor_close(ccur);
    if (ucur != NULL)
        mdb_cursor_close(ucur);
    return rc;
}

/* The buckets of every user's rows, read only for the limit costliest users
 * of the range (user_top); the totals are everything's (rows of every
 * request of the range, as in every grouping). *of: the users of the range. */
static int walk_top_users(ta_store_t *st, MDB_txn *txn, MDB_cursor *cur, stats_walk_t *w,
                          size_t limit, size_t *of)
{
    keymap_slot_t *top = NULL;
    size_t ntop = 0;
    int rc = user_top(st, txn, w, limit, &top, &ntop, of);
    int group_by = w->group_by;
    w->group_by = TA_GROUP_NONE; /* the totals alone */
    if (rc == 0)
        rc = walk_scope(cur, w, TA_AGG_ALL, 0);
    w->group_by = group_by;
    ta_daily_t tot = w->tot;
    for (size_t i = 0; i < ntop && rc == 0; i++)
        rc = walk_scope(cur, w, TA_AGG_USER, top[i].key1 - 1);
    w->tot = tot;
    free(top);
    return rc;
}

int ta_audit_stats_by(ta_store_t *st, MDB_txn *txn, const ta_audit_filter_t *f, int group_by,
                      int then_by, const ta_tz_t *tz, size_t limit, json_t **out)
{
    stats_walk_t w;
    memset(&w, 0, sizeof(w));
    w.f = f;
    w.group_by = group_by;
    w.then_by = then_by;
    w.tz = tz;
    w.memo_hour = -1;
    w.hlo = f->since_ns > 0 ? hour_of(f->since_ns) : 0;
    w.hhi = f->until_ns > 0 ? hour_of(f->until_ns - 1) : UINT32_MAX;
    *out = NULL;
    /* the grouping the limit ranks: the second level, or the only one */
    int ranked = then_by != TA_GROUP_NONE ? then_by : group_by;
    if (group_is_time(ranked))
        limit = 0;
    bool by_user = group_by == TA_GROUP_USER || then_by == TA_GROUP_USER;
    size_t of = 0;
    MDB_cursor *cur;
    int rc, mrc = mdb_cursor_open(txn, ta_store_dbi(st, TA_DB_AUDIT_DAILY), &cur);
    if (mrc != 0)
        return lmdb_fail(mrc, "stats cursor");
    if (f->until_ns > 0 && f->until_ns <= f->since_ns) {
        rc = 0; /* an empty range */
    } else if (f->quota_id) {
        rc = walk_scope(cur, &w, TA_AGG_QUOTA, f->quota_id);
    } else if (f->user_id) {
        rc = walk_scope(cur, &w, TA_AGG_USER, f->user_id);
    } else if (by_user && limit > 0 && f->model_id == 0 && user_cost_ready(st, txn)) {
        rc = walk_top_users(st, txn, cur, &w, limit, &of);
    } else if (by_user) {
        rc = walk_every(cur, &w, TA_AGG_USER);
        /* the totals are everything's, as in every other grouping */
        int g = w.group_by;
        memset(&w.tot, 0, sizeof(w.tot));
        w.group_by = TA_GROUP_NONE;
        if (rc == 0)
            rc = walk_scope(cur, &w, TA_AGG_ALL, 0);
        w.group_by = g;
    } else {
        rc = walk_scope(cur, &w, TA_AGG_ALL, 0);
    }
    mdb_cursor_close(cur);
    json_t *series = rc == 0 ? json_array() : NULL;
    if (rc == 0 && series == NULL)
        rc = -ENOMEM;
    if (rc == 0 && limit > 0) {
        size_t have = 0;
        rc = rank_buckets(&w, limit, then_by != TA_GROUP_NONE, &have);
        if (of < have)
            of = have;
    } else if (rc == 0 && w.b.n) {
        qsort(w.b.v, w.b.n, sizeof(*w.b.v), bucket_cmp);
    }
    for (size_t i = 0; rc == 0 && i < w.b.n; i++) {
        json_t *o = sum_json(&w.b.v[i].sum);
        json_t *key = group_value(group_by, tz, w.b.v[i].key);
        json_t *key2 = then_by != TA_GROUP_NONE ? group_value(then_by, tz, w.b.v[i].key2) : NULL;
        if (o == NULL || key == NULL || (then_by != TA_GROUP_NONE && key2 == NULL) ||
            json_object_set(o, group_field(group_by), key) != 0 ||
            (key2 != NULL && json_object_set(o, group_field(then_by), key2) != 0) ||
            json_array_append(series, o) != 0)
            rc = -ENOMEM;
        json_decref(key);
        json_decref(key2);
        json_decref(o);
    }
    if (rc == 0) {
        *out = json_pack("{s:o,s:o}", "totals", sum_json(&w.tot), "series", series);
        series = NULL;
        if (*out == NULL ||
            (limit > 0 && json_object_set_new(*out, "top", json_pack("{s:I,s:I}", "limit",
                                                                      (json_int_t)limit, "of",
                                                                      (json_int_t)of)) != 0))
            rc = -ENOMEM;
    }
    json_decref(series);
    free(w.b.v);
    free(w.b.idx);
    return rc;
}

int ta_audit_user_cost_verify(ta_store_t *st, MDB_txn *txn, uint32_t hour_lo, FILE *out,
                              int *ndiff)
{
    ta_audit_filter_t f;
    stats_walk_t w;
    keymap_t users = {0}, cum = {0};
    aggw_t a;
    char x[TA_NANO_STRLEN], y[TA_NANO_STRLEN];
    if (!user_cost_ready(st, txn))
        return 0;
    memset(&f, 0, sizeof(f));
    memset(&w, 0, sizeof(w));
    w.f = &f;
    w.group_by = TA_GROUP_USER;
    w.hlo = hour_lo;
    w.hhi = UINT32_MAX;
    int rc = aggw_open(st, txn, &a);
    if (rc != 0)
        return rc;
    rc = pairs_add(a.ucur, hour_lo, UINT32_MAX, 1, &users);
    if (rc == 0)
        rc = walk_every(a.cur, &w, TA_AGG_USER);
    for (size_t i = 0; rc == 0 && i < w.b.n; i++) {
        const keymap_slot_t *u = keymap_find(&users, w.b.v[i].key);
        if (u == NULL || u->val != w.b.v[i].sum.cost || u->reqs != w.b.v[i].sum.requests) {
            fprintf(out, "DIFF user_cost of user %" PRId64 ": %s in %" PRId64 " requests, the "
                    "user's aggregates %s in %" PRId64 "\n", w.b.v[i].key,
                    u != NULL ? ta_nano_format(u->val, x) : "none", u != NULL ? u->reqs : 0,
                    ta_nano_format(w.b.v[i].sum.cost, y), w.b.v[i].sum.requests);
            (*ndiff)++;
        }
    }
    if (rc == 0 && users.n != w.b.n) {
        fprintf(out, "DIFF user_cost has %zu users, the aggregates %zu\n", users.n, w.b.n);
        (*ndiff)++;
    }
    /* the latest user_cum day: every hour before it, per user */
    if (rc == 0 && a.has_cp) {
        rc = pairs_add(a.ucur, 0, a.cp_last * 24 - 1, 1, &cum);
        if (rc == 0)
            rc = pairs_add(a.ccur, a.cp_last, a.cp_last, -1, &cum);
        for (size_t j = 0; rc == 0 && j < cum.cap; j++) {
            const keymap_slot_t *e = &cum.s[j];
            if (e->key1 == 0 || (e->val == 0 && e->reqs == 0))
                continue;
            fprintf(out, "DIFF user_cum of user %" PRIu64 " (day %" PRIu32 "): its hours exceed it "
                    "by %s in %" PRId64 " requests\n", e->key1 - 1, a.cp_last,
                    ta_nano_format(e->val, x), e->reqs);
            (*ndiff)++;
        }
    }
    aggw_close(&a);
    free(users.s);
    free(cum.s);
    free(w.b.v);
    free(w.b.idx);
    return rc;
}

bool ta_audit_quota_seen(ta_store_t *st, MDB_txn *txn, uint64_t quota_id)
{
    uint8_t lo[TA_AGG_KEY_LEN];
    MDB_cursor *cur;
    bool seen = false;
    agg_key(lo, TA_AGG_QUOTA, quota_id, 0, 0, 0, 0);
    if (mdb_cursor_open(txn, ta_store_dbi(st, TA_DB_AUDIT_DAILY), &cur) != 0)
        return false;
    MDB_val k = {TA_AGG_KEY_LEN, lo}, v;
    if (mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE) == 0 && k.mv_size == TA_AGG_KEY_LEN)
        seen = memcmp(k.mv_data, lo, 9) == 0;
    mdb_cursor_close(cur);
    return seen;
}

int ta_audit_agg_sum(ta_store_t *st, MDB_txn *txn, int scope, uint64_t id, uint32_t hour_lo,
                     ta_daily_t *sum)
{
    ta_audit_filter_t f;
    stats_walk_t w;
    MDB_cursor *cur;
    memset(&f, 0, sizeof(f));
    memset(&w, 0, sizeof(w));
    w.f = &f;
    w.hlo = hour_lo;
    w.hhi = UINT32_MAX;
    int mrc = mdb_cursor_open(txn, ta_store_dbi(st, TA_DB_AUDIT_DAILY), &cur);
    if (mrc != 0)
        return lmdb_fail(mrc, "aggregate cursor");
    int rc = walk_scope(cur, &w, scope, id);
    mdb_cursor_close(cur);
    *sum = w.tot;
    return rc;
}

bool ta_audit_aggregates_ready(ta_store_t *st, MDB_txn *txn)
{
    uint64_t ver = 0;
    return ta_meta_get_u64(st, txn, TA_ENV_AUDIT, "aggregates_version", &ver) == 0 && ver >= 2;
}

int ta_audit_complete_from(ta_store_t *st, MDB_txn *txn, uint32_t *hour)
{
    MDB_cursor *cur;
    MDB_val k = {strlen("pruned_cost."), "pruned_cost."}, v;
    *hour = 0;
    int mrc = mdb_cursor_open(txn, ta_store_dbi(st, TA_DB_AUDIT_META), &cur);
    if (mrc != 0)
        return lmdb_fail(mrc, "meta cursor");
    mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    bool pruned = mrc == 0 && k.mv_size >= 12 && memcmp(k.mv_data, "pruned_cost.", 12) == 0;
    mdb_cursor_close(cur);
    if (mrc != 0 && mrc != MDB_NOTFOUND)
        return lmdb_fail(mrc, "meta walk");
    if (!pruned)
        return 0;
    if ((mrc = mdb_cursor_open(txn, ta_store_dbi(st, TA_DB_AUDIT_REQUESTS), &cur)) != 0)
        return lmdb_fail(mrc, "requests cursor");
    mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    if (mrc == 0 && k.mv_size == TA_AUDIT_KEY_LEN)
        *hour = hour_of((int64_t)ta_be64_get(k.mv_data)) + 1;
    else if (mrc == MDB_NOTFOUND)
        *hour = UINT32_MAX; /* everything pruned: nothing to compare */
    mdb_cursor_close(cur);
    return mrc != 0 && mrc != MDB_NOTFOUND ? lmdb_fail(mrc, "requests walk") : 0;
}

/* ---- the upgrade of an earlier build's aggregates ------------------------------------ */

#define UPGRADE_RECORDS 20000 /* records summed per transaction */
#define UPGRADE_DAILY 2000    /* daily rows turned per transaction */
#define UPGRADE_POS "aggregates_upgrade_pos"
#define UPGRADE_DAILY_STEP "daily"

/* The upgrade's working memory: quota -> group, and a chunk of daily rows. */
typedef struct group_cache {
    uint64_t quota[256], group[256];
    bool ok[256];
    uint8_t keys[UPGRADE_DAILY][TA_DAILY_KEY_LEN];
    ta_daily_t rows[UPGRADE_DAILY];
} group_cache_t;

static uint64_t group_of(ta_store_t *st, MDB_txn *ltxn, group_cache_t *gc, uint64_t quota_id)
{
    size_t i = quota_id & 255;
    if (!gc->ok[i] || gc->quota[i] != quota_id) {
        ta_quota_t q;
        gc->quota[i] = quota_id;
        gc->group[i] = ta_rec_get(st, ltxn, &ta_desc_quota, quota_id, &q) == 0 ? q.group_id : 0;
        gc->ok[i] = true;
    }
    return gc->group[i];
}

/* Sum the records after *pos (24 bytes; npos 0: from the first) into ab,
 * at most UPGRADE_RECORDS; *pos moves to the last one, *done when none is left. */
static int upgrade_records(ta_store_t *st, MDB_txn *txn, MDB_txn *ltxn, ta_audit_batch_t *ab,
                           group_cache_t *gc, uint8_t *pos, size_t *npos, bool *done,
                           uint64_t *count)
{
    MDB_cursor *cur;
    MDB_val k = {*npos, pos}, v;
    int rc = 0, mrc = mdb_cursor_open(txn, ta_store_dbi(st, TA_DB_AUDIT_REQUESTS), &cur);
    if (mrc != 0)
        return lmdb_fail(mrc, "upgrade cursor");
    mrc = *npos ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE) : mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    if (mrc == 0 && *npos && k.mv_size == *npos && memcmp(k.mv_data, pos, *npos) == 0)
        mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    size_t n = 0;
    for (; mrc == 0 && n < UPGRADE_RECORDS; mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), n++) {
        ta_audit_t r;
        if (k.mv_size == TA_AUDIT_KEY_LEN) {
            memcpy(pos, k.mv_data, TA_AUDIT_KEY_LEN);
            *npos = TA_AUDIT_KEY_LEN;
        }
        if (k.mv_size != TA_AUDIT_KEY_LEN || ta_rec_decode(&ta_desc_audit, v.mv_data, v.mv_size, &r) != 0)
            continue;
        uint8_t keys[REC_KEYS][TA_AGG_KEY_LEN];
        uint64_t users[REC_KEYS];
        ta_daily_t delta;
        size_t nk = rec_keys(&r, group_of(st, ltxn, gc, r.quota_id), keys, users);
        sum_of(&delta, &r);
        if (ab->n + REC_KEYS > AGG_FILL && (rc = ta_audit_batch_flush(ab, st, txn)) != 0)
            break;
        for (size_t i = 0; i < nk; i++)
            batch_add(ab, keys[i], &delta, users[i]);
        (*count)++;
    }
    if (rc == 0 && mrc != 0 && mrc != MDB_NOTFOUND)
        rc = lmdb_fail(mrc, "upgrade walk");
    *done = mrc == MDB_NOTFOUND;
    mdb_cursor_close(cur);
    return rc;
}

/* What an earlier daily row d (quota, day, model) holds beyond the hourly
 * rows of that quota, day and model: the records pruned since. */
static int daily_rest(ta_store_t *st, MDB_txn *txn, const uint8_t *dk, ta_daily_t *rest)
{
    uint64_t quota = ta_be64_get(dk), model = ta_be64_get(dk + 12);
    int64_t day = (int32_t)be32_get(dk + 8);
    ta_audit_filter_t f = {.model_id = model};
    stats_walk_t w;
    memset(&w, 0, sizeof(w));
    w.f = &f;
    w.hlo = (uint32_t)(day * 24);
    w.hhi = w.hlo + 23;
    MDB_cursor *cur;
    int mrc = mdb_cursor_open(txn, ta_store_dbi(st, TA_DB_AUDIT_DAILY), &cur);
    if (mrc != 0)
        return lmdb_fail(mrc, "upgrade cursor");
    int rc = 0;
    if (model == 0) { /* model 0 rows: the hourly rows of model 0 only */
        uint8_t lo[TA_AGG_KEY_LEN];
        agg_key(lo, TA_AGG_QUOTA, quota, w.hlo, 0, 0, 0);
        MDB_val k = {TA_AGG_KEY_LEN, lo}, v;
        for (mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); mrc == 0;
             mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            const uint8_t *p = k.mv_data;
            ta_daily_t d;
            if (k.mv_size != TA_AGG_KEY_LEN || p[0] != TA_AGG_QUOTA || ta_be64_get(p + 1) != quota ||
                be32_get(p + 9) > w.hhi)
                break;
            if (ta_be64_get(p + 13) == 0 && ta_rec_decode(&ta_desc_daily, v.mv_data, v.mv_size, &d) == 0)
                sum_add(&w.tot, &d);
        }
        if (mrc != 0 && mrc != MDB_NOTFOUND)
            rc = lmdb_fail(mrc, "upgrade walk");
    } else {
        rc = walk_scope(cur, &w, TA_AGG_QUOTA, quota);
    }
    mdb_cursor_close(cur);
    rest->requests -= w.tot.requests;
    rest->prompt_tokens -= w.tot.prompt_tokens;
    rest->completion_tokens -= w.tot.completion_tokens;
    rest->cached_tokens -= w.tot.cached_tokens;
    rest->cache_write_tokens -= w.tot.cache_write_tokens;
    rest->cost -= w.tot.cost;
    rest->errors -= w.tot.errors;
    return rc;
}

/* Turn up to UPGRADE_DAILY earlier daily rows into hourly rows (what the
 * records do not explain goes to the day's first hour, provider 0) and
 * delete them. *done when none is left. */
static int upgrade_daily(ta_store_t *st, MDB_txn *txn, MDB_txn *ltxn, ta_audit_batch_t *ab,
                         group_cache_t *gc, bool *done, uint64_t *count)
{
    enum { CHUNK = UPGRADE_DAILY };
    uint8_t (*keys)[TA_DAILY_KEY_LEN] = gc->keys;
    ta_daily_t *rows = gc->rows;
    size_t n = 0;
    MDB_cursor *cur;
    MDB_val k, v;
    MDB_dbi dbi = ta_store_dbi(st, TA_DB_AUDIT_DAILY);
    int rc = 0, mrc = mdb_cursor_open(txn, dbi, &cur);
    if (mrc != 0)
        return lmdb_fail(mrc, "upgrade cursor");
    /* the earlier rows sort first (a quota id's high byte is below every scope) */
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0 && n < CHUNK;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != TA_DAILY_KEY_LEN)
            break;
        memcpy(keys[n], k.mv_data, TA_DAILY_KEY_LEN);
        if (ta_rec_decode(&ta_desc_daily, v.mv_data, v.mv_size, &rows[n]) != 0)
            memset(&rows[n], 0, sizeof(rows[n])); /* nothing to carry over: only deleted */
        n++;
    }
    mdb_cursor_close(cur);
    if (mrc != 0 && mrc != MDB_NOTFOUND)
        return lmdb_fail(mrc, "upgrade walk");
    *done = n < CHUNK;
    for (size_t i = 0; i < n && rc == 0; i++) {
        ta_daily_t rest = rows[i];
        uint64_t quota = ta_be64_get(keys[i]), model = ta_be64_get(keys[i] + 12);
        uint32_t hour = (uint32_t)((int32_t)be32_get(keys[i] + 8) * 24);
        if ((rc = daily_rest(st, txn, keys[i], &rest)) != 0)
            break;
        bool some = rest.requests || rest.prompt_tokens || rest.completion_tokens ||
                    rest.cached_tokens || rest.cache_write_tokens || rest.cost || rest.errors;
        bool negative = rest.requests < 0 || rest.prompt_tokens < 0 || rest.completion_tokens < 0 ||
                        rest.cached_tokens < 0 || rest.cache_write_tokens < 0 || rest.cost < 0 ||
                        rest.errors < 0;
        if (negative) {
            ta_log(TA_LOG_WARN, "audit: upgrade: quota %" PRIu64 " day %d model %" PRIu64
                   ": the records sum to more than the daily row; kept as the records say",
                   quota, (int)(hour / 24), model);
        } else if (some) {
            uint64_t group = group_of(st, ltxn, gc, quota);
            uint8_t ak[TA_AGG_KEY_LEN];
            if (ab->n + 3 > AGG_FILL && (rc = ta_audit_batch_flush(ab, st, txn)) != 0)
                break;
            agg_key(ak, TA_AGG_ALL, 0, hour, model, 0, group);
            batch_add(ab, ak, &rest, 0);
            agg_key(ak, TA_AGG_QUOTA, quota, hour, model, 0, group);
            batch_add(ab, ak, &rest, rows[i].user_id);
            if (rows[i].user_id != 0) {
                agg_key(ak, TA_AGG_USER, rows[i].user_id, hour, model, 0, group);
                batch_add(ab, ak, &rest, 0);
            }
        }
        MDB_val dk = {TA_DAILY_KEY_LEN, keys[i]};
        mrc = mdb_del(txn, dbi, &dk, NULL);
        if (mrc != 0 && mrc != MDB_NOTFOUND)
            rc = lmdb_fail(mrc, "upgrade delete");
        (*count)++;
    }
    return rc;
}

#define UPGRADE_USER_ROWS 20000 /* user rows read per transaction */
#define USER_COST_POS "user_cost_upgrade_pos"

/* Version 2 to 3: user_cost made from the user rows, emptied first (the
 * records' step above may have begun it) with user_cum, then filled in
 * transactions of UPGRADE_USER_ROWS rows, each saving where the next one
 * starts; billing's first batch makes user_cum. */
static int upgrade_user_cost(ta_store_t *st)
{
    uint64_t rows = 0;
    for (;;) {
        MDB_txn *txn;
        aggw_t a = {0};
        uint64_t ver = 0;
        uint8_t from[TA_AGG_KEY_LEN];
        bool done = false;
        int rc = ta_txn_begin(st, TA_ENV_AUDIT, true, &txn);
        if (rc != 0)
            return rc;
        rc = ta_meta_get_u64(st, txn, TA_ENV_AUDIT, "aggregates_version", &ver);
        if (rc != 0 || (ver != 2 && ver != 3)) { /* 3: an unreleased user_cost of 16-byte entries */
            ta_txn_abort(txn);
            if (rc == 0 && rows > 0)
                ta_log(TA_LOG_INFO, "audit: user_cost made from %" PRIu64 " user rows", rows);
            return rc == TA_ENOTFOUND ? 0 : rc;
        }
        MDB_dbi meta = ta_store_dbi(st, TA_DB_AUDIT_META);
        MDB_val mk = {strlen(USER_COST_POS), USER_COST_POS}, mv;
        int mrc = mdb_get(txn, meta, &mk, &mv);
        if (mrc == 0 && mv.mv_size == TA_AGG_KEY_LEN) {
            memcpy(from, mv.mv_data, TA_AGG_KEY_LEN);
        } else {
            agg_key(from, TA_AGG_USER, 0, 0, 0, 0, 0);
            MDB_val ck = {strlen(CUM_META), CUM_META};
            if ((mrc = mdb_drop(txn, ta_store_dbi(st, TA_DB_AUDIT_USER_COST), 0)) != 0 ||
                (mrc = mdb_drop(txn, ta_store_dbi(st, TA_DB_AUDIT_USER_CUM), 0)) != 0 ||
                ((mrc = mdb_del(txn, meta, &ck, NULL)) != 0 && mrc != MDB_NOTFOUND))
                rc = lmdb_fail(mrc, "empty user cost");
        }
        if (rc == 0)
            rc = aggw_open(st, txn, &a);
        MDB_val k = {TA_AGG_KEY_LEN, from}, v;
        size_t n = 0;
        for (mrc = rc == 0 ? mdb_cursor_get(a.cur, &k, &v, MDB_SET_RANGE) : MDB_NOTFOUND; mrc == 0 && rc == 0;
             mrc = mdb_cursor_get(a.cur, &k, &v, MDB_NEXT)) {
            const uint8_t *p = k.mv_data;
            ta_daily_t d;
            if (k.mv_size != TA_AGG_KEY_LEN || p[0] != TA_AGG_USER)
                break;
            if (n++ == UPGRADE_USER_ROWS) {
                memcpy(from, p, TA_AGG_KEY_LEN); /* the next transaction's first */
                break;
            }
            if (ta_rec_decode(&ta_desc_daily, v.mv_data, v.mv_size, &d) == 0)
                rc = pair_add(a.ucur, be32_get(p + 9), ta_be64_get(p + 1), d.cost, d.requests);
        }
        if (rc == 0 && mrc != 0 && mrc != MDB_NOTFOUND)
            rc = lmdb_fail(mrc, "user rows walk");
        done = n <= UPGRADE_USER_ROWS;
        rows += n > UPGRADE_USER_ROWS ? UPGRADE_USER_ROWS : n;
        aggw_close(&a);
        if (rc == 0 && done) {
            mrc = mdb_del(txn, meta, &mk, NULL);
            rc = mrc != 0 && mrc != MDB_NOTFOUND ? lmdb_fail(mrc, "user cost position")
                                                 : ta_meta_put_u64(st, txn, TA_ENV_AUDIT, "aggregates_version", 4);
        } else if (rc == 0) {
            mv.mv_size = TA_AGG_KEY_LEN, mv.mv_data = from;
            if ((mrc = mdb_put(txn, meta, &mk, &mv, 0)) != 0)
                rc = lmdb_fail(mrc, "user cost position");
        }
        if (rc == 0)
            rc = ta_txn_commit(txn);
        else
            ta_txn_abort(txn);
        if (rc != 0) {
            ta_log(TA_LOG_ERROR, "audit: making user_cost: %s", ta_strerror(rc));
            return rc;
        }
    }
}

int ta_audit_upgrade(ta_store_t *st)
{
    ta_audit_batch_t *ab = NULL;
    group_cache_t *gc = calloc(1, sizeof(*gc));
    uint64_t records = 0, days = 0;
    int rc = gc != NULL ? ta_audit_batch_new(&ab) : -ENOMEM;
    for (; rc == 0;) {
        MDB_txn *txn = NULL, *ltxn = NULL;
        uint64_t ver = 0;
        uint8_t pos[TA_AUDIT_KEY_LEN];
        size_t npos = 0;
        bool done = false, daily_step = false;
        if ((rc = ta_txn_begin(st, TA_ENV_AUDIT, true, &txn)) != 0)
            break;
        rc = ta_meta_get_u64(st, txn, TA_ENV_AUDIT, "aggregates_version", &ver);
        if (rc == TA_ENOTFOUND)
            rc = 0, ver = 0;
        if (rc != 0 || ver >= 2) {
            ta_txn_abort(txn);
            break;
        }
        if ((rc = ta_txn_begin(st, TA_ENV_LEDGER, false, &ltxn)) != 0) {
            ta_txn_abort(txn);
            break;
        }
        memset(gc->ok, 0, sizeof(gc->ok));
        MDB_val mk = {strlen(UPGRADE_POS), UPGRADE_POS}, mv;
        MDB_dbi meta = ta_store_dbi(st, TA_DB_AUDIT_META);
        int mrc = mdb_get(txn, meta, &mk, &mv);
        if (mrc == 0 && mv.mv_size == TA_AUDIT_KEY_LEN) {
            memcpy(pos, mv.mv_data, TA_AUDIT_KEY_LEN);
            npos = TA_AUDIT_KEY_LEN;
        } else if (mrc == 0) {
            daily_step = mv.mv_size == strlen(UPGRADE_DAILY_STEP);
        }
        if (!daily_step) {
            rc = upgrade_records(st, txn, ltxn, ab, gc, pos, &npos, &done, &records);
            if (rc == 0 && done) {
                mv.mv_size = strlen(UPGRADE_DAILY_STEP), mv.mv_data = UPGRADE_DAILY_STEP;
            } else {
                mv.mv_size = npos, mv.mv_data = pos;
            }
            if (rc == 0 && mv.mv_size > 0 && (mrc = mdb_put(txn, meta, &mk, &mv, 0)) != 0)
                rc = lmdb_fail(mrc, "upgrade position");
        } else {
            rc = upgrade_daily(st, txn, ltxn, ab, gc, &done, &days);
            if (rc == 0 && done) {
                mrc = mdb_del(txn, meta, &mk, NULL);
                if (mrc != 0 && mrc != MDB_NOTFOUND)
                    rc = lmdb_fail(mrc, "upgrade position");
                else
                    rc = ta_meta_put_u64(st, txn, TA_ENV_AUDIT, "aggregates_version", 2);
            }
        }
        if (rc == 0)
            rc = ta_audit_batch_flush(ab, st, txn);
        ta_txn_abort(ltxn);
        if (rc == 0)
            rc = ta_txn_commit(txn);
        else
            ta_txn_abort(txn);
        ta_audit_batch_reset(ab);
        if (rc == 0 && !daily_step && !done && records % (50 * UPGRADE_RECORDS) == 0)
            ta_log(TA_LOG_INFO, "audit: upgrade: %" PRIu64 " records summed into hourly "
                   "aggregates so far", records);
        if (rc == 0 && daily_step && done && records + days > 0)
            ta_log(TA_LOG_INFO, "audit: hourly aggregates made from data of an earlier build: %"
                   PRIu64 " records summed, %" PRIu64 " daily rows carried over", records, days);
    }
    if (rc != 0)
        ta_log(TA_LOG_ERROR, "audit: upgrade of the aggregates: %s", ta_strerror(rc));
    ta_audit_batch_free(ab);
    free(gc);
    return rc != 0 ? rc : upgrade_user_cost(st);
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
