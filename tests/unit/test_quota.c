/*
 * test_quota.c - ledger/quota.c and ledger/period.c against a real LMDB
 * ledger in a mkdtemp() directory. Time is never read from the clock: every
 * hold and settle is given its `now`, so GCRA and period tests are exact.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ledger/quota.h"

#define NS 1000000000LL
#define MILLION 1000000LL

/* Instants used below (unix seconds, checked with Python's zoneinfo). */
#define T_2024_03_13_1530Z 1710343800LL /* Wednesday */
#define T_2024_03_13Z 1710288000LL
#define T_2024_03_14Z 1710374400LL
#define T_2024_03_11Z 1710115200LL /* Monday */
#define T_2024_03_18Z 1710720000LL
#define T_2024_03_01Z 1709251200LL
#define T_2024_04_01Z 1711929600LL
#define T_2024_03_17_235959Z 1710719999LL /* Sunday, last second of the week */
#define T_2024_12_31_235959Z 1735689599LL
#define T_2024_12_30Z 1735516800LL
#define T_2025_01_06Z 1736121600LL
#define T_2025_01_01Z 1735689600LL
#define T_2024_12_01Z 1733011200LL

typedef struct fx {
    char dir[64];
    ta_store_t *st;
} fx_t;

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(p);
}

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/ta_quota_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    ta_store_opts_t o = {.create = true, .ledger_map_size = 64u << 20, .audit_map_size = 64u << 20};
    assert_int_equal(ta_store_open(&f->st, f->dir, &o), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    ta_store_close(f->st);
    nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* ---- helpers ------------------------------------------------------------ */

static ta_model_t model_priced(ta_nano_t in, ta_nano_t out, ta_nano_t cread, ta_nano_t cwrite,
                               int64_t max_out)
{
    ta_model_t m;
    memset(&m, 0, sizeof(m));
    m.id = 7;
    snprintf(m.name, sizeof(m.name), "m");
    m.input_price = in;
    m.output_price = out;
    m.cache_read_price = cread;
    m.cache_write_price = cwrite;
    m.has_prices = true;
    m.max_output_tokens = max_out;
    m.is_active = true;
    return m;
}

static ta_quota_t quota_new(uint64_t id, int period)
{
    ta_quota_t q;
    memset(&q, 0, sizeof(q));
    q.id = id;
    q.user_id = 100 + id;
    q.group_id = 1;
    q.limits.period = (uint8_t)period;
    q.is_active = true;
    snprintf(q.key_prefix, sizeof(q.key_prefix), "sk-abcdefgh");
    return q;
}

static void quota_store(fx_t *f, const ta_quota_t *q)
{
    MDB_txn *t;
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_LEDGER, true, &t), 0);
    assert_int_equal(ta_rec_put(f->st, t, &ta_desc_quota, q->id, q), 0);
    assert_int_equal(ta_txn_commit(t), 0);
}

static void rid(uint8_t id[16], unsigned n)
{
    memset(id, 0, 16);
    id[0] = 0xab;
    id[12] = (uint8_t)(n >> 24);
    id[13] = (uint8_t)(n >> 16);
    id[14] = (uint8_t)(n >> 8);
    id[15] = (uint8_t)n;
}

typedef struct holdargs {
    int64_t prompt_est, prompt_max, max_out;
    int32_t choices;
    bool no_output;
    int64_t extra;
    int reserve;
    int32_t pid;
    const char *tz;
} holdargs_t;

/* One hold in its own write transaction, committed like a worker does. */
static ta_hold_res_t hold(fx_t *f, const ta_quota_t *q, const ta_model_t *m, unsigned n,
                          int64_t now_ns, holdargs_t a)
{
    uint8_t id[16];
    rid(id, n);
    ta_hold_req_t r = {
        .request_id = id,
        .worker_pid = a.pid ? a.pid : 4242,
        .quota = q,
        .model = m,
        .prompt_tokens_est = a.prompt_est,
        .prompt_tokens_max = a.prompt_max,
        .max_output_tokens = a.max_out,
        .output_choices = a.choices,
        .no_output = a.no_output,
        .extra_output_tokens = a.extra,
        .reserve = a.reserve,
        .timezone = a.tz ? a.tz : "UTC",
        .now_ns = now_ns,
    };
    ta_hold_res_t res;
    MDB_txn *t;
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_LEDGER, true, &t), 0);
    assert_int_equal(ta_quota_hold(f->st, t, &r, &res), 0);
    assert_int_equal(ta_txn_commit(t), 0);
    return res;
}

static ta_event_t event_for(const ta_quota_t *q, unsigned n, const ta_hold_res_t *res,
                            int64_t t_done_ns, int64_t prompt, int64_t completion,
                            ta_nano_t cost)
{
    ta_event_t ev;
    memset(&ev, 0, sizeof(ev));
    ev.kind = TA_EV_REQUEST;
    ev.flags = TA_EVF_HOLD;
    rid(ev.request_id, n);
    ev.quota_id = q->id;
    ev.status = 200;
    ev.t_done_ns = t_done_ns;
    ev.held_cost = res->held_cost;
    ev.held_tokens = res->held_tokens;
    ev.tpm_estimate = res->tpm_estimate;
    ev.hold_period_start = res->period_start;
    ev.prompt_tokens = prompt;
    ev.completion_tokens = completion;
    ev.cost = cost;
    return ev;
}

static void settle(fx_t *f, const ta_event_t *ev)
{
    MDB_txn *t;
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_LEDGER, true, &t), 0);
    assert_int_equal(ta_quota_settle(f->st, t, ev, "UTC"), 0);
    assert_int_equal(ta_txn_commit(t), 0);
}

static ta_balance_t balance(fx_t *f, uint64_t qid)
{
    ta_balance_t b;
    MDB_txn *t;
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_LEDGER, false, &t), 0);
    int rc = ta_rec_get(f->st, t, &ta_desc_balance, qid, &b);
    ta_txn_abort(t);
    if (rc == TA_ENOTFOUND)
        memset(&b, 0, sizeof(b));
    else
        assert_int_equal(rc, 0);
    return b;
}

static size_t holds_count(fx_t *f)
{
    MDB_txn *t;
    MDB_stat s;
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_LEDGER, false, &t), 0);
    assert_int_equal(mdb_stat(t, ta_store_dbi(f->st, TA_DB_HOLDS), &s), 0);
    ta_txn_abort(t);
    return s.ms_entries;
}

/* The raw bytes of the balance, the quota and the number of holds: a refusal
 * must leave all three exactly as they were. */
typedef struct snap {
    uint8_t bal[512], quo[2048];
    size_t bal_len, quo_len, holds;
} snap_t;

static void raw_get(fx_t *f, MDB_txn *t, ta_db_t db, uint64_t id, uint8_t *buf, size_t cap,
                    size_t *len)
{
    uint8_t k[8];
    ta_be64_put(k, id);
    MDB_val key = {8, k}, val;
    int rc = mdb_get(t, ta_store_dbi(f->st, db), &key, &val);
    if (rc == MDB_NOTFOUND) {
        *len = 0;
        return;
    }
    assert_int_equal(rc, 0);
    assert_true(val.mv_size <= cap);
    memcpy(buf, val.mv_data, val.mv_size);
    *len = val.mv_size;
}

static snap_t snapshot(fx_t *f, uint64_t qid)
{
    snap_t s;
    MDB_txn *t;
    memset(&s, 0, sizeof(s));
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_LEDGER, false, &t), 0);
    raw_get(f, t, TA_DB_BALANCES, qid, s.bal, sizeof(s.bal), &s.bal_len);
    raw_get(f, t, TA_DB_QUOTAS, qid, s.quo, sizeof(s.quo), &s.quo_len);
    ta_txn_abort(t);
    s.holds = holds_count(f);
    return s;
}

static void assert_unchanged(const snap_t *a, const snap_t *b)
{
    assert_int_equal(a->bal_len, b->bal_len);
    assert_memory_equal(a->bal, b->bal, a->bal_len);
    assert_int_equal(a->quo_len, b->quo_len);
    assert_memory_equal(a->quo, b->quo, a->quo_len);
    assert_int_equal(a->holds, b->holds);
}

/* A hold that must be refused with `why`, changing nothing. */
static ta_hold_res_t refused(fx_t *f, const ta_quota_t *q, const ta_model_t *m, unsigned n,
                             int64_t now_ns, holdargs_t a, int why)
{
    snap_t before = snapshot(f, q->id);
    ta_hold_res_t res = hold(f, q, m, n, now_ns, a);
    assert_int_equal(res.refusal, why);
    snap_t after = snapshot(f, q->id);
    assert_unchanged(&before, &after);
    return res;
}

/* ---- cost --------------------------------------------------------------- */

static void test_cost_rounding(void **state)
{
    ta_model_t m = model_priced(1, 1, 1, 1, 0);
    /* 1 token at 1 nano per 1M tokens still costs one whole nano-unit */
    assert_int_equal(ta_cost(&m, 1, 0, 0, 0), 1);
    assert_int_equal(ta_cost(&m, 0, 1, 0, 0), 1);
    assert_int_equal(ta_cost(&m, 0, 0, 0, 0), 0);
    /* rounded once over the total: 1 input + 1 output = 2 / 1e6 -> 1, not 2 */
    assert_int_equal(ta_cost(&m, 1, 1, 0, 0), 1);
    assert_int_equal(ta_cost(&m, 1000000, 0, 0, 0), 1);
    assert_int_equal(ta_cost(&m, 1000001, 0, 0, 0), 2);

    /* 2.5 per 1M input, 10 per 1M output */
    m = model_priced(2500000000LL, 10000000000LL, 0, 0, 0);
    assert_int_equal(ta_cost(&m, 1000000, 0, 0, 0), 2500000000LL);
    assert_int_equal(ta_cost(&m, 1000, 500, 0, 0), 2500000 + 5000000);
    assert_int_equal(ta_cost(&m, 1, 0, 0, 0), 2500);
    assert_int_equal(ta_cost(&m, 3, 7, 0, 0), 7500 + 70000);

    /* every class at its own price: 3 in, 0.3 cache read, 3.75 cache write, 15 out */
    m = model_priced(3000000000LL, 15000000000LL, 300000000LL, 3750000000LL, 0);
    /* 500 plain input + 400 cached + 100 written + 50 out:
     * 1.5e12 + 1.2e11 + 3.75e11 + 7.5e11 = 2.745e12 / 1e6 */
    assert_int_equal(ta_cost(&m, 1000, 50, 400, 100), 2745000);
    /* cached + written above prompt: plain input clamps at 0, the rest is charged */
    assert_int_equal(ta_cost(&m, 100, 0, 80, 80), (80 * 300000000LL + 80 * 3750000000LL) / MILLION);
    /* a zero price is free, not "fall back to input" */
    m = model_priced(3000000000LL, 15000000000LL, 0, 0, 0);
    assert_int_equal(ta_cost(&m, 1000, 0, 1000, 0), 0);
    /* a cache price never set is the input price; set to "0" it is free */
    m = model_priced(3000000000LL, 15000000000LL, 0, 0, 0);
    m.prices_set = TA_PRICE_INPUT | TA_PRICE_OUTPUT;
    assert_int_equal(ta_cost(&m, 1000, 0, 1000, 0), 3000000);
    assert_int_equal(ta_cost(&m, 1000, 0, 0, 1000), 3000000);
    assert_int_equal(ta_cost(&m, 1000, 0, 600, 400), 3000000);
    m.prices_set |= TA_PRICE_CACHE_READ;
    assert_int_equal(ta_cost(&m, 1000, 0, 1000, 0), 0);
    assert_int_equal(ta_cost(&m, 1000, 0, 0, 1000), 3000000);
    m.prices_set |= TA_PRICE_CACHE_WRITE;
    assert_int_equal(ta_cost(&m, 1000, 0, 600, 400), 0);
    /* negative counts are treated as zero */
    assert_int_equal(ta_cost(&m, -5, -5, -1, -1), 0);
    /* saturates instead of wrapping */
    m = model_priced(INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX, 0);
    assert_int_equal(ta_cost(&m, INT64_MAX, INT64_MAX, 0, 0), INT64_MAX);
    assert_int_equal(ta_cost(&m, INT64_MAX, INT64_MAX, INT64_MAX / 2, INT64_MAX / 2), INT64_MAX);
}

/* ---- periods ------------------------------------------------------------ */

static void test_period_utc(void **state)
{
    assert_int_equal(ta_period_start(TA_PERIOD_DAY, T_2024_03_13_1530Z, "UTC"), T_2024_03_13Z);
    assert_int_equal(ta_period_end(TA_PERIOD_DAY, T_2024_03_13Z, "UTC"), T_2024_03_14Z);
    assert_int_equal(ta_period_start(TA_PERIOD_WEEK, T_2024_03_13_1530Z, "UTC"), T_2024_03_11Z);
    assert_int_equal(ta_period_end(TA_PERIOD_WEEK, T_2024_03_11Z, "UTC"), T_2024_03_18Z);
    assert_int_equal(ta_period_start(TA_PERIOD_MONTH, T_2024_03_13_1530Z, "UTC"), T_2024_03_01Z);
    assert_int_equal(ta_period_end(TA_PERIOD_MONTH, T_2024_03_01Z, "UTC"), T_2024_04_01Z);
    /* Sunday 23:59:59 is still the week that began on Monday; Monday starts the next */
    assert_int_equal(ta_period_start(TA_PERIOD_WEEK, T_2024_03_17_235959Z, "UTC"), T_2024_03_11Z);
    assert_int_equal(ta_period_start(TA_PERIOD_WEEK, T_2024_03_18Z, "UTC"), T_2024_03_18Z);
    /* exact boundaries: start is inside, end is not */
    assert_int_equal(ta_period_start(TA_PERIOD_DAY, T_2024_03_13Z, "UTC"), T_2024_03_13Z);
    assert_int_equal(ta_period_start(TA_PERIOD_DAY, T_2024_03_14Z - 1, "UTC"), T_2024_03_13Z);
    /* year end: ISO week straddles it, month and day roll into 2025 */
    assert_int_equal(ta_period_start(TA_PERIOD_WEEK, T_2024_12_31_235959Z, "UTC"), T_2024_12_30Z);
    assert_int_equal(ta_period_end(TA_PERIOD_WEEK, T_2024_12_30Z, "UTC"), T_2025_01_06Z);
    assert_int_equal(ta_period_start(TA_PERIOD_MONTH, T_2024_12_31_235959Z, "UTC"), T_2024_12_01Z);
    assert_int_equal(ta_period_end(TA_PERIOD_MONTH, T_2024_12_01Z, "UTC"), T_2025_01_01Z);
    assert_int_equal(ta_period_end(TA_PERIOD_DAY, T_2025_01_01Z - 86400, "UTC"), T_2025_01_01Z);
    /* none never rolls */
    assert_int_equal(ta_period_start(TA_PERIOD_NONE, T_2024_03_13_1530Z, "UTC"), 0);
    assert_int_equal(ta_period_end(TA_PERIOD_NONE, 0, "UTC"), INT64_MAX);
    /* February of a leap year */
    assert_int_equal(ta_period_end(TA_PERIOD_MONTH, 1706745600LL /* 2024-02-01 */, "UTC"),
                     T_2024_03_01Z);
}

static void test_period_timezones_dst(void **state)
{
    assert_int_equal(ta_quota_set_timezone("Mars/Olympus_Mons"), TA_EINVAL);
    assert_int_equal(ta_quota_set_timezone("../../etc/passwd"), TA_EINVAL);
    assert_int_equal(ta_quota_set_timezone("/etc/localtime"), TA_EINVAL);
    assert_int_equal(ta_quota_set_timezone("CET-1CEST,M3.5.0,M10.5.0/3"), TA_EINVAL);
    assert_int_equal(ta_quota_set_timezone(""), TA_EINVAL);
    assert_int_equal(ta_quota_set_timezone("Europe"), TA_EINVAL); /* a directory */
    assert_int_equal(ta_quota_set_timezone("Europe/Berlin"), 0);
    assert_string_equal(ta_quota_timezone(), "Europe/Berlin");
    const char *B = "Europe/Berlin";

    /* 2024-03-31: clocks go 02:00 CET -> 03:00 CEST, a 23-hour day */
    int64_t now = 1711886400LL;                     /* 2024-03-31T12:00Z */
    int64_t d0 = 1711839600LL, d1 = 1711922400LL;   /* 03-30T23:00Z, 03-31T22:00Z */
    assert_int_equal(ta_period_start(TA_PERIOD_DAY, now, B), d0);
    assert_int_equal(ta_period_end(TA_PERIOD_DAY, d0, B), d1);
    assert_int_equal(d1 - d0, 23 * 3600);
    assert_int_equal(ta_period_start(TA_PERIOD_DAY, d1 - 1, B), d0);
    assert_int_equal(ta_period_start(TA_PERIOD_DAY, d1, B), d1);
    /* the week (Mon 03-25 00:00 CET .. Mon 04-01 00:00 CEST) and month span it */
    assert_int_equal(ta_period_start(TA_PERIOD_WEEK, now, B), 1711321200LL);
    assert_int_equal(ta_period_end(TA_PERIOD_WEEK, 1711321200LL, B), d1);
    assert_int_equal(ta_period_start(TA_PERIOD_MONTH, now, B), 1709247600LL);
    assert_int_equal(ta_period_end(TA_PERIOD_MONTH, 1709247600LL, B), d1);
    /* NULL means the process timezone */
    assert_int_equal(ta_period_start(TA_PERIOD_DAY, now, NULL), d0);

    /* 2024-10-27: 03:00 CEST -> 02:00 CET, a 25-hour day */
    now = 1730030400LL;                              /* 2024-10-27T12:00Z */
    d0 = 1729980000LL, d1 = 1730070000LL;            /* 10-26T22:00Z, 10-27T23:00Z */
    assert_int_equal(ta_period_start(TA_PERIOD_DAY, now, B), d0);
    assert_int_equal(ta_period_end(TA_PERIOD_DAY, d0, B), d1);
    assert_int_equal(d1 - d0, 25 * 3600);
    assert_int_equal(ta_period_start(TA_PERIOD_WEEK, now, B), 1729461600LL);
    assert_int_equal(ta_period_end(TA_PERIOD_WEEK, 1729461600LL, B), d1);
    assert_int_equal(ta_period_start(TA_PERIOD_MONTH, now, B), 1727733600LL);
    assert_int_equal(ta_period_end(TA_PERIOD_MONTH, 1727733600LL, B), 1730415600LL);
    /* UTC does not depend on the process timezone */
    assert_int_equal(ta_period_start(TA_PERIOD_DAY, T_2024_03_13_1530Z, "UTC"), T_2024_03_13Z);

    /* another zone switches the process timezone (slow path) and stays right:
     * New York springs forward on 2024-03-10 at 02:00 EST */
    const char *NY = "America/New_York";
    assert_int_equal(ta_period_start(TA_PERIOD_DAY, 1710072000LL, NY), 1710046800LL);
    assert_int_equal(ta_period_end(TA_PERIOD_DAY, 1710046800LL, NY), 1710129600LL);
    assert_string_equal(ta_quota_timezone(), NY);
    /* cached Berlin answers are still Berlin's */
    assert_int_equal(ta_period_start(TA_PERIOD_DAY, 1730030400LL, B), 1729980000LL);
    assert_int_equal(ta_quota_set_timezone("UTC"), 0);
}

static void test_period_renew(void **state)
{
    /* day: whole days, same clock time, first one after now */
    int64_t e = T_2024_03_13_1530Z;
    assert_int_equal(ta_period_renew(TA_PERIOD_DAY, e, e, "UTC"), e + 86400);
    assert_int_equal(ta_period_renew(TA_PERIOD_DAY, e, e + 3 * 86400 + 10, "UTC"), e + 4 * 86400);
    assert_int_equal(ta_period_renew(TA_PERIOD_WEEK, e, e + 8 * 86400, "UTC"), e + 14 * 86400);
    /* already in the future, or period none: unchanged */
    assert_int_equal(ta_period_renew(TA_PERIOD_DAY, e, e - 1, "UTC"), e);
    assert_int_equal(ta_period_renew(TA_PERIOD_NONE, e, e + 100, "UTC"), e);
    /* month: Jan 31 + 1 month is Feb 29 (2024), + 2 months Mar 31, never Mar 2 */
    int64_t jan31 = 1706702400LL; /* 2024-01-31T12:00Z */
    assert_int_equal(ta_period_renew(TA_PERIOD_MONTH, jan31, 1707955200LL, "UTC"), 1709208000LL);
    assert_int_equal(ta_period_renew(TA_PERIOD_MONTH, jan31, 1709596800LL, "UTC"), 1711886400LL);
    /* a long-expired quota renews in one call */
    int64_t r = ta_period_renew(TA_PERIOD_DAY, e, e + 3650LL * 86400 + 5, "UTC");
    assert_int_equal(r, e + 3651LL * 86400);
}

/* ---- holds -------------------------------------------------------------- */

static void test_rollover_on_hold(void **state)
{
    fx_t *f = *state;
    ta_quota_t q = quota_new(1, TA_PERIOD_DAY);
    q.limits.cost_limit = 1000000000LL;
    quota_store(f, &q);
    ta_model_t m = model_priced(1000000000LL, 2000000000LL, 0, 0, 1000);
    holdargs_t a = {.prompt_est = 100, .max_out = 100};
    int64_t day1 = (T_2024_03_13Z + 3600) * NS, day2 = (T_2024_03_14Z + 60) * NS;

    ta_hold_res_t r1 = hold(f, &q, &m, 1, day1, a);
    assert_int_equal(r1.refusal, TA_HOLD_OK);
    assert_int_equal(r1.period_start, T_2024_03_13Z);
    ta_event_t ev = event_for(&q, 1, &r1, day1 + NS, 100, 50, ta_cost(&m, 100, 50, 0, 0));
    settle(f, &ev);
    ta_hold_res_t r2 = hold(f, &q, &m, 2, day1 + 2 * NS, a); /* still running at midnight */
    assert_int_equal(r2.refusal, TA_HOLD_OK);
    ta_balance_t b = balance(f, q.id);
    assert_int_equal(b.cost_used, 200000);
    assert_int_equal(b.requests_used, 1);
    assert_int_equal(b.tokens_used, 150);
    assert_int_equal(b.in_flight, 1);
    b.warn_level = 1; /* as billing would after a warning */
    MDB_txn *t;
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_LEDGER, true, &t), 0);
    assert_int_equal(ta_rec_put(f->st, t, &ta_desc_balance, q.id, &b), 0);
    assert_int_equal(ta_txn_commit(t), 0);

    /* the read-only view rolls virtually and writes nothing */
    ta_balance_t u;
    int64_t ps, pe;
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_LEDGER, false, &t), 0);
    assert_int_equal(ta_quota_usage(f->st, t, &q, day2 / NS, &u, &ps, &pe), 0);
    ta_txn_abort(t);
    assert_int_equal(ps, T_2024_03_14Z);
    assert_int_equal(pe, T_2024_03_14Z + 86400);
    assert_int_equal(u.cost_used, 0);
    assert_int_equal(u.requests_used, 0);
    assert_int_equal(u.cost_held, r2.held_cost);
    assert_int_equal(balance(f, q.id).cost_used, 200000);

    /* the first hold of day 2 rolls: used and warnings reset, held amounts stay */
    ta_hold_res_t r3 = hold(f, &q, &m, 3, day2, a);
    assert_int_equal(r3.refusal, TA_HOLD_OK);
    assert_int_equal(r3.period_start, T_2024_03_14Z);
    b = balance(f, q.id);
    assert_int_equal(b.period_start, T_2024_03_14Z);
    assert_int_equal(b.cost_used, 0);
    assert_int_equal(b.tokens_used, 0);
    assert_int_equal(b.requests_used, 0);
    assert_int_equal(b.warn_level, 0);
    assert_int_equal(b.in_flight, 2);
    assert_int_equal(b.cost_held, r2.held_cost + r3.held_cost);

    /* the day-1 hold settles into day 2 and releases exactly what it held */
    ev = event_for(&q, 2, &r2, day2 + NS, 10, 10, 30000);
    settle(f, &ev);
    b = balance(f, q.id);
    assert_int_equal(b.cost_held, r3.held_cost);
    assert_int_equal(b.in_flight, 1);
    assert_int_equal(b.cost_used, 30000);
    assert_int_equal(b.requests_used, 1);
    assert_int_equal(b.tokens_used, 20);
}

static void test_expiry_and_renew(void **state)
{
    fx_t *f = *state;
    ta_model_t m = model_priced(1, 1, 0, 0, 0);
    holdargs_t a = {.prompt_est = 10};
    int64_t now = T_2024_03_13_1530Z;

    ta_quota_t q = quota_new(2, TA_PERIOD_DAY);
    q.expires_at = now - 10;
    quota_store(f, &q);
    refused(f, &q, &m, 1, now * NS, a, TA_HOLD_EXPIRED);
    /* exactly at expires_at it is expired; a second before, it is not */
    q.expires_at = now;
    quota_store(f, &q);
    refused(f, &q, &m, 1, now * NS, a, TA_HOLD_EXPIRED);
    assert_int_equal(hold(f, &q, &m, 2, (now - 1) * NS, a).refusal, TA_HOLD_OK);

    /* auto-renew moves expires_at by whole days past now and grants */
    ta_quota_t r = quota_new(3, TA_PERIOD_DAY);
    r.limits.auto_renew = true;
    r.expires_at = now - 3 * 86400 - 10;
    quota_store(f, &r);
    assert_int_equal(hold(f, &r, &m, 3, now * NS, a).refusal, TA_HOLD_OK);
    ta_quota_t back;
    MDB_txn *t;
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_LEDGER, false, &t), 0);
    assert_int_equal(ta_rec_get(f->st, t, &ta_desc_quota, r.id, &back), 0);
    ta_txn_abort(t);
    assert_int_equal(back.expires_at, now - 10 + 86400);
    assert_int_equal(back.limits.auto_renew, true);
    assert_int_equal(back.user_id, r.user_id);

    /* auto-renew cannot renew a quota without a period */
    ta_quota_t n = quota_new(4, TA_PERIOD_NONE);
    n.limits.auto_renew = true;
    n.expires_at = now - 1;
    quota_store(f, &n);
    refused(f, &n, &m, 4, now * NS, a, TA_HOLD_EXPIRED);

    /* a renewal that is then refused for another reason writes nothing */
    ta_quota_t c = quota_new(5, TA_PERIOD_DAY);
    c.limits.auto_renew = true;
    c.limits.max_concurrency = 1;
    c.expires_at = now + 100;
    quota_store(f, &c);
    assert_int_equal(hold(f, &c, &m, 5, now * NS, a).refusal, TA_HOLD_OK);
    refused(f, &c, &m, 6, (now + 200) * NS, a, TA_HOLD_CONCURRENCY);
}

static void test_refusals_write_nothing(void **state)
{
    fx_t *f = *state;
    ta_model_t m = model_priced(1000000000LL, 1000000000LL, 0, 0, 100);
    int64_t now = T_2024_03_13_1530Z * NS;
    holdargs_t a = {.prompt_est = 10, .prompt_max = 10, .max_out = 10};

    ta_quota_t q = quota_new(10, TA_PERIOD_DAY);
    q.is_active = false;
    quota_store(f, &q);
    refused(f, &q, &m, 1, now, a, TA_HOLD_INACTIVE);

    /* a model without prices under a cost limit fails closed */
    ta_model_t free_m = m;
    free_m.has_prices = false;
    q = quota_new(11, TA_PERIOD_DAY);
    q.limits.cost_limit = 1000;
    quota_store(f, &q);
    refused(f, &q, &free_m, 1, now, a, TA_HOLD_UNPRICED);
    q.limits.cost_limit = 0; /* without a cost limit it is served */
    assert_int_equal(hold(f, &q, &free_m, 2, now, a).refusal, TA_HOLD_OK);

    /* request limit counts requests in flight */
    q = quota_new(12, TA_PERIOD_DAY);
    q.limits.request_limit = 2;
    quota_store(f, &q);
    assert_int_equal(hold(f, &q, &m, 3, now, a).refusal, TA_HOLD_OK);
    assert_int_equal(hold(f, &q, &m, 4, now, a).refusal, TA_HOLD_OK);
    ta_hold_res_t r = refused(f, &q, &m, 5, now, a, TA_HOLD_REQUESTS);
    /* retry after the period ends: 2024-03-14T00:00Z - 15:30 = 8.5 h */
    assert_int_equal(r.retry_after_ms, (T_2024_03_14Z - T_2024_03_13_1530Z) * 1000);

    /* token limit (estimate): admitted while used + held < limit, at its
     * worst case (90 + 20 held), then refused */
    q = quota_new(13, TA_PERIOD_DAY);
    q.limits.token_limit = 100;
    quota_store(f, &q);
    holdargs_t big = {.prompt_est = 90, .max_out = 20};
    ta_hold_res_t tr = hold(f, &q, &m, 6, now, big);
    assert_int_equal(tr.refusal, TA_HOLD_OK);
    assert_int_equal(tr.held_tokens, 110);
    assert_int_equal(tr.max_output_tokens, 20); /* not trimmed */
    big.max_out = 10;
    refused(f, &q, &m, 7, now, big, TA_HOLD_TOKENS);
    /* strict: a prompt that leaves no room for one output token */
    holdargs_t s = {.prompt_est = 1, .prompt_max = 1, .reserve = TA_RESERVE_STRICT};
    refused(f, &q, &m, 8, now, s, TA_HOLD_TOKENS);

    /* cost (estimate): refused once used + held reached the limit */
    q = quota_new(14, TA_PERIOD_DAY);
    q.limits.cost_limit = 20000; /* 20 tokens' worth */
    quota_store(f, &q);
    ta_hold_res_t h = hold(f, &q, &m, 9, now, a);
    assert_int_equal(h.refusal, TA_HOLD_OK);
    assert_int_equal(h.held_cost, 20000);
    refused(f, &q, &m, 10, now, a, TA_HOLD_COST);
    /* cost (strict): a prompt whose worst case alone exceeds what is left */
    q = quota_new(15, TA_PERIOD_DAY);
    q.limits.cost_limit = 5000;
    quota_store(f, &q);
    s.prompt_est = s.prompt_max = 6;
    refused(f, &q, &m, 11, now, s, TA_HOLD_COST);
}

/* prompt fits but not even one output token */
static void test_strict_cost_edge(void **state)
{
    fx_t *f = *state;
    ta_model_t m = model_priced(1000000000LL, 1000000000LL, 0, 0, 100); /* 1000 nano per token */
    int64_t now = T_2024_03_13_1530Z * NS;
    ta_quota_t q = quota_new(16, TA_PERIOD_DAY);
    q.limits.cost_limit = 5999;
    quota_store(f, &q);
    holdargs_t s = {.prompt_est = 5, .prompt_max = 5, .reserve = TA_RESERVE_STRICT};
    refused(f, &q, &m, 1, now, s, TA_HOLD_COST); /* 5000 + 1000 > 5999 */
    q.limits.cost_limit = 6000;
    quota_store(f, &q);
    ta_hold_res_t r = hold(f, &q, &m, 2, now, s);
    assert_int_equal(r.refusal, TA_HOLD_OK);
    assert_int_equal(r.max_output_tokens, 1);
    assert_int_equal(r.held_cost, 6000);
    assert_int_equal(r.held_tokens, 6);
}

/* strict: the output is clamped to the tokens left, and held as such */
static void test_strict_token_clamp(void **state)
{
    fx_t *f = *state;
    ta_model_t m = model_priced(1, 1, 0, 0, 4000);
    int64_t now = T_2024_03_13_1530Z * NS;
    ta_quota_t q = quota_new(17, TA_PERIOD_DAY);
    q.limits.token_limit = 1000;
    quota_store(f, &q);
    holdargs_t s = {.prompt_est = 300, .prompt_max = 400, .max_out = 500,
                    .reserve = TA_RESERVE_STRICT};
    ta_hold_res_t r = hold(f, &q, &m, 1, now, s);
    assert_int_equal(r.refusal, TA_HOLD_OK);
    assert_int_equal(r.max_output_tokens, 500);
    assert_int_equal(r.held_tokens, 900);
    r = hold(f, &q, &m, 2, now, (holdargs_t){.prompt_est = 10, .prompt_max = 20,
                                             .reserve = TA_RESERVE_STRICT});
    assert_int_equal(r.refusal, TA_HOLD_OK);
    assert_int_equal(r.max_output_tokens, 80); /* 1000 - 900 - 20 */
    assert_int_equal(r.held_tokens, 100);
    /* estimate mode holds the worst case too, and names the output limit
     * to send (the model's max output when the client gave none) */
    ta_quota_t e = quota_new(18, TA_PERIOD_DAY);
    quota_store(f, &e);
    r = hold(f, &e, &m, 3, now, (holdargs_t){.prompt_est = 10});
    assert_int_equal(r.refusal, TA_HOLD_OK);
    assert_int_equal(r.max_output_tokens, 4000);
    assert_int_equal(r.held_tokens, 10 + 4000);
    /* a client limit above the model's max output is held and sent as the
     * model's (an upstream cannot write more, and must not be asked to) */
    r = hold(f, &e, &m, 4, now, (holdargs_t){.prompt_est = 1, .prompt_max = 1, .max_out = 100000});
    assert_int_equal(r.refusal, TA_HOLD_OK);
    assert_int_equal(r.max_output_tokens, 4000);
}

/* With reserve = strict, holds at the worst case settled at the worst case
 * never push used past the limit, however many run at once. */
static void test_strict_never_exceeds(void **state)
{
    fx_t *f = *state;
    /* per token: input 1000 nano, cache write 1250 (dearer), output 2000 */
    ta_model_t m = model_priced(1000000000LL, 2000000000LL, 100000000LL, 1250000000LL, 500);
    ta_quota_t q = quota_new(20, TA_PERIOD_DAY);
    q.limits.cost_limit = 5000000;
    quota_store(f, &q);
    int64_t now = T_2024_03_13_1530Z * NS;
    holdargs_t s = {.prompt_est = 80, .prompt_max = 100, .reserve = TA_RESERVE_STRICT};

    ta_hold_res_t res[16];
    unsigned n = 0;
    for (; n < 16; n++) {
        res[n] = hold(f, &q, &m, 100 + n, now, s);
        if (res[n].refusal != TA_HOLD_OK)
            break;
        assert_true(res[n].max_output_tokens >= 1 && res[n].max_output_tokens <= 500);
        ta_balance_t b = balance(f, q.id);
        assert_true(b.cost_used + b.cost_held <= q.limits.cost_limit);
    }
    assert_int_equal(res[n].refusal, TA_HOLD_COST);
    /* 4 full holds of 100*1250 + 500*2000 = 1,125,000, then one clamped to
     * (5e6 - 4.5e6 - 125,000) / 2000 = 187 output tokens */
    assert_int_equal(n, 5);
    assert_int_equal(res[0].held_cost, 1125000);
    assert_int_equal(res[0].max_output_tokens, 500);
    assert_int_equal(res[4].max_output_tokens, 187);
    assert_int_equal(res[4].held_cost, 125000 + 187 * 2000);

    /* every request uses its whole worst case: the whole prompt as cache
     * writes and every allowed output token */
    for (unsigned i = 0; i < n; i++) {
        ta_nano_t c = ta_cost(&m, 100, res[i].max_output_tokens, 0, 100);
        assert_true(c <= res[i].held_cost);
        ta_event_t ev = event_for(&q, 100 + i, &res[i], now + NS, 100, res[i].max_output_tokens, c);
        ev.cache_write_tokens = 100;
        settle(f, &ev);
        ta_balance_t b = balance(f, q.id);
        assert_true(b.cost_used <= q.limits.cost_limit);
    }
    ta_balance_t b = balance(f, q.id);
    assert_int_equal(b.cost_used, 4 * 1125000 + 125000 + 187 * 2000);
    assert_int_equal(b.cost_held, 0);
    assert_int_equal(b.in_flight, 0);
    /* what is left (1000 nano) cannot pay the prompt: refused from now on */
    refused(f, &q, &m, 200, now + 2 * NS, s, TA_HOLD_COST);
    assert_true(balance(f, q.id).cost_used <= q.limits.cost_limit);
}

/* n / best_of: every choice is held at the output limit, and strict clamps
 * the limit per choice so that all of them fit (issue: n = 128 used 127x). */
static void test_choices_held(void **state)
{
    fx_t *f = *state;
    ta_model_t m = model_priced(1000000000LL, 2000000000LL, 0, 0, 0); /* 1000 / 2000 nano per token */
    int64_t now = T_2024_03_13_1530Z * NS;
    ta_quota_t q = quota_new(70, TA_PERIOD_DAY);
    q.limits.cost_limit = 1000000; /* 0.001 */
    quota_store(f, &q);
    holdargs_t s = {.prompt_est = 10, .prompt_max = 10, .max_out = 100, .choices = 128,
                    .reserve = TA_RESERVE_STRICT};
    /* (1e6 - 10*1000) / (2000 * 128) = 3 tokens per choice */
    ta_hold_res_t r = hold(f, &q, &m, 1, now, s);
    assert_int_equal(r.refusal, TA_HOLD_OK);
    assert_int_equal(r.max_output_tokens, 3);
    assert_int_equal(r.held_tokens, 10 + 3 * 128);
    assert_int_equal(r.held_cost, 10 * 1000 + 3 * 128 * 2000);
    /* the upstream bills every choice at the limit: still within the limit */
    ta_nano_t worst = ta_cost(&m, 10, 3 * 128, 0, 0);
    assert_true(worst <= r.held_cost);
    ta_event_t ev = event_for(&q, 1, &r, now + NS, 10, 3 * 128, worst);
    settle(f, &ev);
    assert_true(balance(f, q.id).cost_used <= q.limits.cost_limit);
    /* 1e6 - 778000 left = 222000: 12000 of prompt leaves less than one token
     * per choice (128 * 2000 = 256000): refused, nothing written */
    refused(f, &q, &m, 2, now, (holdargs_t){.prompt_est = 12, .prompt_max = 12, .choices = 128,
                                            .reserve = TA_RESERVE_STRICT}, TA_HOLD_COST);
    /* a single choice still fits */
    r = hold(f, &q, &m, 3, now, (holdargs_t){.prompt_est = 12, .prompt_max = 12, .reserve = TA_RESERVE_STRICT});
    assert_int_equal(r.refusal, TA_HOLD_OK);
    assert_int_equal(r.max_output_tokens, (222000 - 12000) / 2000);

    /* token limits count choices the same way */
    ta_quota_t t = quota_new(71, TA_PERIOD_DAY);
    t.limits.token_limit = 1000;
    quota_store(f, &t);
    r = hold(f, &t, &m, 4, now, (holdargs_t){.prompt_est = 100, .prompt_max = 100, .max_out = 500, .choices = 4,
                                             .reserve = TA_RESERVE_STRICT});
    assert_int_equal(r.refusal, TA_HOLD_OK);
    assert_int_equal(r.max_output_tokens, 225); /* (1000 - 100) / 4 */
    assert_int_equal(r.held_tokens, 1000);
    refused(f, &t, &m, 5, now, (holdargs_t){.prompt_est = 1, .reserve = TA_RESERVE_STRICT}, TA_HOLD_TOKENS);
}

/* Predicted output is billed beyond the limit: held in full, never trimmed;
 * an endpoint without output holds none. */
static void test_extra_and_no_output(void **state)
{
    fx_t *f = *state;
    ta_model_t m = model_priced(1000000000LL, 2000000000LL, 0, 0, 0);
    int64_t now = T_2024_03_13_1530Z * NS;
    ta_quota_t q = quota_new(72, TA_PERIOD_DAY);
    q.limits.cost_limit = 1000000;
    quota_store(f, &q);
    /* 10 prompt + 400 extra = 810,000; (1e6 - 810000) / 2000 = 95 output */
    holdargs_t s = {.prompt_est = 10, .prompt_max = 10, .extra = 400, .reserve = TA_RESERVE_STRICT};
    ta_hold_res_t r = hold(f, &q, &m, 1, now, s);
    assert_int_equal(r.refusal, TA_HOLD_OK);
    assert_int_equal(r.max_output_tokens, 95);
    assert_int_equal(r.held_tokens, 10 + 95 + 400);
    assert_int_equal(r.held_cost, 10000 + (95 + 400) * 2000);
    ta_quota_t q2 = quota_new(73, TA_PERIOD_DAY);
    q2.limits.cost_limit = 1000000;
    quota_store(f, &q2);
    s.extra = 500; /* 10000 + 1,000,000 > 1e6: refused */
    refused(f, &q2, &m, 2, now, s, TA_HOLD_COST);
    /* embeddings: the prompt only, no output limit to send */
    r = hold(f, &q2, &m, 3, now, (holdargs_t){.prompt_est = 900, .prompt_max = 1000, .no_output = true,
                                              .reserve = TA_RESERVE_STRICT});
    assert_int_equal(r.refusal, TA_HOLD_OK);
    assert_int_equal(r.max_output_tokens, 0);
    assert_int_equal(r.held_tokens, 1000);
    assert_int_equal(r.held_cost, 1000000);
    refused(f, &q2, &m, 4, now, (holdargs_t){.prompt_est = 1, .prompt_max = 1, .no_output = true,
                                             .reserve = TA_RESERVE_STRICT}, TA_HOLD_COST);
}

/* reserve = estimate: requests are not trimmed, but each in flight holds its
 * worst case, so however many run at once the limit is exceeded by at most
 * the worst case of one request (issue: 200 concurrent used 3.6x). */
static void test_estimate_overspend_bounded(void **state)
{
    fx_t *f = *state;
    ta_model_t m = model_priced(1000000000LL, 2000000000LL, 0, 1250000000LL, 0);
    int64_t now = T_2024_03_13_1530Z * NS;
    ta_quota_t q = quota_new(74, TA_PERIOD_DAY);
    q.limits.cost_limit = 1000000;
    quota_store(f, &q);
    holdargs_t e = {.prompt_est = 20, .prompt_max = 40, .max_out = 200, .choices = 2};
    ta_hold_res_t res[200];
    unsigned n = 0;
    ta_nano_t one_worst = 0;
    for (; n < 200; n++) {
        res[n] = hold(f, &q, &m, 300 + n, now, e);
        if (res[n].refusal != TA_HOLD_OK)
            break;
        assert_int_equal(res[n].max_output_tokens, 200); /* never trimmed */
        if (res[n].held_cost > one_worst)
            one_worst = res[n].held_cost;
    }
    assert_int_equal(res[n].refusal, TA_HOLD_COST);
    /* 40 * 1250 + 400 * 2000 = 850,000 each: the second is admitted (850,000
     * < 1e6), the third is not */
    assert_int_equal(n, 2);
    assert_int_equal(one_worst, 850000);
    for (unsigned i = 0; i < n; i++) {
        ta_nano_t c = ta_cost(&m, 40, 400, 0, 40);
        ta_event_t ev = event_for(&q, 300 + i, &res[i], now + NS, 40, 400, c);
        ev.cache_write_tokens = 40;
        settle(f, &ev);
    }
    ta_balance_t b = balance(f, q.id);
    assert_true(b.cost_used > q.limits.cost_limit); /* soft: it may pass the limit */
    assert_true(b.cost_used <= q.limits.cost_limit + one_worst);
    refused(f, &q, &m, 999, now + 2 * NS, e, TA_HOLD_COST);
}

static void test_gcra_rpm(void **state)
{
    fx_t *f = *state;
    ta_model_t m = model_priced(1, 1, 0, 0, 0);
    ta_quota_t q = quota_new(30, TA_PERIOD_DAY);
    q.limits.rpm = 5; /* T = 12 s, burst 5 */
    quota_store(f, &q);
    int64_t now = T_2024_03_13_1530Z * NS;
    holdargs_t a = {.prompt_est = 1};

    for (unsigned i = 0; i < 5; i++) {
        ta_hold_res_t r = hold(f, &q, &m, i, now, a);
        assert_int_equal(r.refusal, TA_HOLD_OK);
        assert_int_equal(r.rpm_limit, 5);
        assert_int_equal(r.rpm_remaining, 4 - (int64_t)i);
        assert_int_equal(r.rpm_reset_ms, 12000 * (int64_t)(i + 1));
    }
    ta_hold_res_t r = refused(f, &q, &m, 10, now, a, TA_HOLD_RPM);
    assert_int_equal(r.retry_after_ms, 12000);
    assert_int_equal(r.rpm_remaining, 0);
    refused(f, &q, &m, 11, now + 12 * NS - 1, a, TA_HOLD_RPM);
    assert_int_equal(hold(f, &q, &m, 12, now + 12 * NS, a).refusal, TA_HOLD_OK);
    refused(f, &q, &m, 13, now + 12 * NS, a, TA_HOLD_RPM);
    /* after a whole idle minute the full burst is back */
    int64_t later = now + 120 * NS;
    for (unsigned i = 0; i < 5; i++)
        assert_int_equal(hold(f, &q, &m, 20 + i, later, a).refusal, TA_HOLD_OK);
    refused(f, &q, &m, 30, later, a, TA_HOLD_RPM);

    /* an rpm that does not divide a minute still admits exactly rpm */
    ta_quota_t q7 = quota_new(31, TA_PERIOD_DAY);
    q7.limits.rpm = 7;
    quota_store(f, &q7);
    for (unsigned i = 0; i < 7; i++)
        assert_int_equal(hold(f, &q7, &m, 40 + i, now, a).refusal, TA_HOLD_OK);
    refused(f, &q7, &m, 50, now, a, TA_HOLD_RPM);
}

static void test_gcra_tpm(void **state)
{
    fx_t *f = *state;
    ta_model_t m = model_priced(1, 1, 0, 0, 0);
    ta_quota_t q = quota_new(40, TA_PERIOD_DAY);
    q.limits.tpm = 1000; /* 60 ms per token */
    quota_store(f, &q);
    int64_t now = T_2024_03_13_1530Z * NS;
    holdargs_t a = {.prompt_est = 300, .max_out = 100}; /* estimate 400 tokens = 24 s */

    ta_hold_res_t r1 = hold(f, &q, &m, 1, now, a);
    assert_int_equal(r1.refusal, TA_HOLD_OK);
    assert_int_equal(r1.tpm_estimate, 400);
    assert_int_equal(r1.tpm_limit, 1000);
    assert_int_equal(r1.tpm_remaining, 600);
    ta_hold_res_t r2 = hold(f, &q, &m, 2, now, a);
    assert_int_equal(r2.refusal, TA_HOLD_OK);
    assert_int_equal(r2.tpm_remaining, 200);
    ta_hold_res_t r = refused(f, &q, &m, 3, now, a, TA_HOLD_TPM);
    assert_int_equal(r.retry_after_ms, 12000); /* 48 + 24 - 60 s */

    /* request 1 used only 100 tokens: 300 come back, so 400 fit again */
    ta_event_t ev = event_for(&q, 1, &r1, now, 60, 40, 1);
    settle(f, &ev);
    assert_int_equal(hold(f, &q, &m, 4, now, a).refusal, TA_HOLD_OK);
    /* request 2 used 900: 500 more than estimated push the backlog out */
    ev = event_for(&q, 2, &r2, now, 500, 400, 1);
    settle(f, &ev);
    ta_balance_t b = balance(f, q.id);
    assert_int_equal(b.tpm_tat_ns, now + (100 + 900 + 400) * 60 * MILLION);

    /* a request bigger than the whole minute passes when the bucket is empty */
    ta_quota_t big = quota_new(41, TA_PERIOD_DAY);
    big.limits.tpm = 1000;
    quota_store(f, &big);
    holdargs_t huge = {.prompt_est = 5000, .max_out = 100};
    ta_hold_res_t h = hold(f, &big, &m, 10, now, huge);
    assert_int_equal(h.refusal, TA_HOLD_OK);
    assert_int_equal(h.tpm_estimate, 5100);
    r = refused(f, &big, &m, 11, now, a, TA_HOLD_TPM);
    assert_int_equal(r.retry_after_ms, (5100 + 400 - 1000) * 60); /* 270 s */
    /* it turned out tiny: the estimate is given back and small requests pass */
    ev = event_for(&big, 10, &h, now, 50, 50, 1);
    settle(f, &ev);
    assert_int_equal(hold(f, &big, &m, 12, now, a).refusal, TA_HOLD_OK);
}

static void test_concurrency(void **state)
{
    fx_t *f = *state;
    ta_model_t m = model_priced(1, 1, 0, 0, 0);
    ta_quota_t q = quota_new(50, TA_PERIOD_DAY);
    q.limits.max_concurrency = 2;
    quota_store(f, &q);
    int64_t now = T_2024_03_13_1530Z * NS;
    holdargs_t a = {.prompt_est = 1};
    ta_hold_res_t r1 = hold(f, &q, &m, 1, now, a);
    assert_int_equal(r1.refusal, TA_HOLD_OK);
    assert_int_equal(hold(f, &q, &m, 2, now, a).refusal, TA_HOLD_OK);
    refused(f, &q, &m, 3, now, a, TA_HOLD_CONCURRENCY);
    ta_event_t ev = event_for(&q, 1, &r1, now, 1, 1, 1);
    settle(f, &ev);
    assert_int_equal(hold(f, &q, &m, 3, now, a).refusal, TA_HOLD_OK);
    refused(f, &q, &m, 4, now, a, TA_HOLD_CONCURRENCY);
}

static void test_settle_exact_and_idempotent(void **state)
{
    fx_t *f = *state;
    ta_model_t m = model_priced(3000000000LL, 15000000000LL, 300000000LL, 3750000000LL, 0);
    ta_quota_t q = quota_new(60, TA_PERIOD_MONTH);
    q.limits.cost_limit = 10 * TA_NANO_PER_UNIT;
    q.limits.token_limit = 1000000;
    q.limits.tpm = 100000;
    quota_store(f, &q);
    int64_t now = T_2024_03_13_1530Z * NS;
    holdargs_t a = {.prompt_est = 1000, .max_out = 300};
    ta_hold_res_t r = hold(f, &q, &m, 1, now, a);
    assert_int_equal(r.refusal, TA_HOLD_OK);
    /* the worst case: every prompt token at the dearest class (cache write),
     * the whole output */
    assert_int_equal(r.held_tokens, 1000 + 300);
    assert_int_equal(r.held_cost, ta_cost(&m, 1000, 300, 0, 1000));
    assert_int_equal(holds_count(f), 1);
    ta_balance_t b = balance(f, q.id);
    assert_int_equal(b.cost_held, r.held_cost);
    assert_int_equal(b.tokens_held, r.held_tokens);
    assert_int_equal(b.in_flight, 1);

    ta_nano_t cost = ta_cost(&m, 1000, 50, 400, 100);
    ta_event_t ev = event_for(&q, 1, &r, now + 5 * NS, 1000, 50, cost);
    ev.cached_tokens = 400;
    ev.cache_write_tokens = 100;
    settle(f, &ev);
    b = balance(f, q.id);
    assert_int_equal(b.cost_held, 0);
    assert_int_equal(b.tokens_held, 0);
    assert_int_equal(b.in_flight, 0);
    assert_int_equal(b.cost_used, 2745000);
    assert_int_equal(b.tokens_used, 1050);
    assert_int_equal(b.requests_used, 1);
    assert_int_equal(holds_count(f), 0);

    /* the same event again: no hold, nothing changes */
    snap_t before = snapshot(f, q.id);
    settle(f, &ev);
    snap_t after = snapshot(f, q.id);
    assert_unchanged(&before, &after);
    /* an event that never held is not charged */
    ta_event_t nohold = ev;
    nohold.flags = 0;
    rid(nohold.request_id, 99);
    settle(f, &nohold);
    after = snapshot(f, q.id);
    assert_unchanged(&before, &after);
    /* a control event is not for settle */
    MDB_txn *t;
    ta_event_t ctl = ev;
    ctl.kind = TA_EV_WORKER_DEAD;
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_LEDGER, true, &t), 0);
    assert_int_equal(ta_quota_settle(f->st, t, &ctl, "UTC"), TA_EINVAL);
    ta_txn_abort(t);
}

static void test_release_dead_pid(void **state)
{
    fx_t *f = *state;
    ta_model_t m = model_priced(1000000000LL, 1000000000LL, 0, 0, 0);
    ta_quota_t q = quota_new(70, TA_PERIOD_DAY);
    q.limits.max_concurrency = 10;
    quota_store(f, &q);
    int64_t now = T_2024_03_13_1530Z * NS;
    ta_nano_t held_222 = 0;
    for (unsigned i = 0; i < 5; i++) {
        holdargs_t a = {.prompt_est = 10 + i, .max_out = 5, .pid = i < 3 ? 111 : 222};
        ta_hold_res_t r = hold(f, &q, &m, i, now + i, a);
        assert_int_equal(r.refusal, TA_HOLD_OK);
        if (i >= 3)
            held_222 += r.held_cost;
    }
    ta_balance_t before = balance(f, q.id);
    assert_int_equal(before.in_flight, 5);

    MDB_txn *t;
    uint8_t ids[8][16];
    size_t n;
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_LEDGER, false, &t), 0);
    assert_int_equal(ta_quota_holds_of_pid(f->st, t, 111, ids, 2, &n), 0);
    assert_int_equal(n, 3); /* total, though only 2 fit */
    assert_int_equal(ta_quota_holds_of_pid(f->st, t, 111, ids, 8, &n), 0);
    assert_int_equal(n, 3);
    ta_txn_abort(t);

    assert_int_equal(ta_txn_begin(f->st, TA_ENV_LEDGER, true, &t), 0);
    for (size_t i = 0; i < n; i++) {
        ta_event_t ev;
        assert_int_equal(ta_quota_release(f->st, t, ids[i], &ev), 0);
        assert_int_equal(ev.kind, TA_EV_REQUEST);
        assert_int_equal(ev.flags, TA_EVF_ABORTED);
        assert_int_equal(ev.worker_pid, 111);
        assert_int_equal(ev.quota_id, q.id);
        assert_int_equal(ev.user_id, q.user_id);
        assert_int_equal(ev.status, 499);
        assert_int_equal(ev.error_type, TA_ET_ABORTED);
        assert_int_equal(ev.cost, 0);
        assert_memory_equal(ev.request_id, ids[i], 16);
        assert_true(ev.t_received_ns >= now && ev.t_received_ns < now + 3);
        assert_int_equal(ev.hold_period_start, T_2024_03_13Z);
        assert_true(ev.held_cost > 0);
        assert_string_equal(ev.key_prefix, "sk-abcdefgh");
    }
    ta_event_t ev;
    assert_int_equal(ta_quota_release(f->st, t, ids[0], &ev), TA_ENOTFOUND);
    assert_int_equal(ta_txn_commit(t), 0);

    ta_balance_t b = balance(f, q.id);
    assert_int_equal(b.in_flight, 2);
    assert_int_equal(b.cost_held, held_222);
    assert_int_equal(b.cost_used, 0);
    assert_int_equal(b.requests_used, 0);
    assert_int_equal(holds_count(f), 2);
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_LEDGER, false, &t), 0);
    assert_int_equal(ta_quota_holds_of_pid(f->st, t, 111, ids, 8, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(ta_quota_holds_of_pid(f->st, t, 222, ids, 8, &n), 0);
    assert_int_equal(n, 2);
    ta_txn_abort(t);
}

/* An upstream failure (no usage, no cost) frees the hold and does not use up
 * the request budget; a served request does. */
static void test_upstream_failure_not_counted(void **state)
{
    fx_t *f = *state;
    ta_quota_t q = quota_new(1, TA_PERIOD_NONE);
    q.limits.request_limit = 1;
    quota_store(f, &q);
    ta_model_t m = model_priced(1000000000LL, 2000000000LL, 0, 0, 1000);
    holdargs_t a = {.prompt_est = 10, .max_out = 10};
    int64_t now = (T_2024_03_13Z + 60) * NS;

    ta_hold_res_t r1 = hold(f, &q, &m, 1, now, a);
    assert_int_equal(r1.refusal, TA_HOLD_OK);
    ta_event_t ev = event_for(&q, 1, &r1, now + NS, 0, 0, 0);
    ev.status = 502;
    settle(f, &ev);
    ta_balance_t b = balance(f, q.id);
    assert_int_equal(b.requests_used, 0);
    assert_int_equal(b.in_flight, 0);
    assert_int_equal(b.cost_held, 0);

    ta_hold_res_t r2 = hold(f, &q, &m, 2, now + 2 * NS, a);
    assert_int_equal(r2.refusal, TA_HOLD_OK);
    ev = event_for(&q, 2, &r2, now + 3 * NS, 10, 10, ta_cost(&m, 10, 10, 0, 0));
    settle(f, &ev);
    assert_int_equal(balance(f, q.id).requests_used, 1);
    assert_int_equal(hold(f, &q, &m, 3, now + 4 * NS, a).refusal, TA_HOLD_REQUESTS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cost_rounding),
        cmocka_unit_test(test_period_utc),
        cmocka_unit_test(test_period_timezones_dst),
        cmocka_unit_test(test_period_renew),
        cmocka_unit_test_setup_teardown(test_rollover_on_hold, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expiry_and_renew, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals_write_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_strict_cost_edge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_strict_token_clamp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_strict_never_exceeds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_choices_held, setup, teardown),
        cmocka_unit_test_setup_teardown(test_extra_and_no_output, setup, teardown),
        cmocka_unit_test_setup_teardown(test_estimate_overspend_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gcra_rpm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gcra_tpm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrency, setup, teardown),
        cmocka_unit_test_setup_teardown(test_settle_exact_and_idempotent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release_dead_pid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_failure_not_counted, setup, teardown),
    };
    ta_log_init('C', TA_LOG_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
