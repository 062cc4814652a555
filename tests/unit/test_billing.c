/*
 * test_billing.c - settlement and audit through the real ring, real LMDB
 * environments in a mkdtemp directory, and the real quota engine.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ledger/audit.h"
#include "ledger/billing.h"
#include "ledger/dump.h"
#include "ledger/quota.h"
#include "ledger/ring.h"
#include "ledger/spool.h"
#include "ledger/verify.h"

typedef struct fx {
    char dir[64];
    ta_store_t *st;  /* the "worker's" store */
    ta_ring_t *ring;
    ta_billing_conf_t conf;
    ta_billing_hooks_t hooks;
    ta_billing_t *b;
    uint64_t quota_id;
    uint64_t nrid;
    ta_event_t last; /* the last event request() made */
} fx_t;

static int rm_rf(const char *d)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d);
    return system(cmd);
}

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/ta_billing_XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    ta_store_opts_t so = {.create = true};
    if (ta_store_open(&f->st, f->dir, &so) != 0)
        return -1;
    MDB_txn *txn;
    if (ta_txn_begin(f->st, TA_ENV_LEDGER, true, &txn) != 0)
        return -1;
    ta_model_t m;
    memset(&m, 0, sizeof(m));
    ta_rec_defaults(&ta_desc_model, &m);
    ta_rec_next_id(f->st, txn, &ta_desc_model, &m.id);
    snprintf(m.name, sizeof(m.name), "m");
    m.input_price = 2 * TA_NANO_PER_UNIT;
    m.output_price = 8 * TA_NANO_PER_UNIT + 3;
    m.has_prices = true;
    m.is_active = true;
    ta_rec_put(f->st, txn, &ta_desc_model, m.id, &m);
    ta_quota_t q;
    memset(&q, 0, sizeof(q));
    ta_rec_next_id(f->st, txn, &ta_desc_quota, &q.id);
    q.user_id = 7;
    q.group_id = 1;
    q.limits.period = TA_PERIOD_DAY;
    q.limits.cost_limit = 10 * TA_NANO_PER_UNIT;
    q.limits.warn_at[0] = 50;
    q.limits.warn_at[1] = 80;
    q.limits.nwarn = 2;
    q.is_active = true;
    snprintf(q.key_prefix, sizeof(q.key_prefix), "sk-abc");
    ta_rec_put(f->st, txn, &ta_desc_quota, q.id, &q);
    f->quota_id = q.id;
    if (ta_txn_commit(txn) != 0)
        return -1;
    char path[128];
    snprintf(path, sizeof(path), "%s/ring", f->dir);
    if (ta_ring_create_or_attach(path, 64, &f->ring) != 0)
        return -1;
    f->conf.data_dir = f->dir;
    f->conf.sync_interval_ms = 100;
    f->conf.quota_timezone = "UTC";
    f->conf.ring = f->ring;
    f->conf.warning_webhook_url = "";
    f->conf.hooks = &f->hooks;
    if (ta_billing_open(&f->conf, &f->b) != 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    ta_billing_close(f->b);
    ta_ring_close(f->ring);
    ta_store_close(f->st);
    rm_rf(f->dir);
    free(f);
    return 0;
}

/* Like a worker: hold (unless refused), then push the finished request. */
static ta_nano_t request(fx_t *f, int32_t pid, int64_t prompt, int64_t completion, bool refused,
                         bool push)
{
    ta_event_t ev;
    memset(&ev, 0, sizeof(ev));
    ev.kind = TA_EV_REQUEST;
    uint64_t n = ++f->nrid;
    memcpy(ev.request_id, &n, 8);
    ev.worker_pid = pid;
    ev.quota_id = f->quota_id;
    ev.user_id = 7;
    ev.model_id = 1;
    ev.endpoint = TA_EP_CHAT;
    ev.t_received_ns = ta_now_ns();
    snprintf(ev.model, sizeof(ev.model), "m");
    MDB_txn *txn;
    ta_quota_t q;
    ta_model_t m;
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_LEDGER, true, &txn), 0);
    assert_int_equal(ta_rec_get(f->st, txn, &ta_desc_quota, f->quota_id, &q), 0);
    assert_int_equal(ta_rec_get(f->st, txn, &ta_desc_model, 1, &m), 0);
    if (!refused) {
        ta_hold_req_t req = {.request_id = ev.request_id, .worker_pid = pid, .quota = &q,
                             .model = &m, .prompt_tokens_est = 10, .prompt_tokens_max = 10,
                             .max_output_tokens = 10, .timezone = "UTC", .now_ns = ta_now_ns()};
        ta_hold_res_t res;
        assert_int_equal(ta_quota_hold(f->st, txn, &req, &res), 0);
        assert_int_equal(res.refusal, TA_HOLD_OK);
        ev.flags = TA_EVF_HOLD;
        ev.held_cost = res.held_cost;
        ev.hold_period_start = res.period_start;
        ev.status = 200;
        ev.prompt_tokens = prompt;
        ev.completion_tokens = completion;
        ev.cost = ta_cost(&m, prompt, completion, 0, 0);
    } else {
        ev.status = 429;
        ev.error_type = TA_ET_INSUFFICIENT_QUOTA;
    }
    assert_int_equal(ta_txn_commit(txn), 0);
    ev.t_done_ns = ta_now_ns();
    f->last = ev;
    if (push)
        assert_int_equal(ta_ring_push(f->ring, &ev, NULL), 0);
    return ev.cost;
}

static void drain(fx_t *f)
{
    while (ta_ring_depth(f->ring) > 0)
        assert_true(ta_billing_step(f->b, 10) >= 0);
}

static size_t count_records(fx_t *f, size_t *aborted)
{
    MDB_txn *txn;
    size_t total = 0;
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_AUDIT, false, &txn), 0);
    ta_audit_filter_t flt = {.quota_id = f->quota_id};
    assert_int_equal(ta_audit_list(f->st, txn, &flt, 0, 0, NULL, NULL, &total), 0);
    if (aborted) {
        size_t n = 0;
        flt.status = 499;
        assert_int_equal(ta_audit_list(f->st, txn, &flt, 0, 0, NULL, NULL, &n), 0);
        *aborted = n;
    }
    ta_txn_abort(txn);
    return total;
}

static ta_balance_t balance(fx_t *f)
{
    MDB_txn *txn;
    ta_balance_t b;
    memset(&b, 0, sizeof(b));
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_LEDGER, false, &txn), 0);
    ta_rec_get(f->st, txn, &ta_desc_balance, f->quota_id, &b);
    ta_txn_abort(txn);
    return b;
}

/* How many entries database db of environment env holds now. */
static size_t db_entries(fx_t *f, ta_envid_t env, ta_db_t db)
{
    MDB_txn *txn;
    MDB_stat s;
    assert_int_equal(ta_txn_begin(f->st, env, false, &txn), 0);
    assert_int_equal(mdb_stat(txn, ta_store_dbi(f->st, db), &s), 0);
    ta_txn_abort(txn);
    return s.ms_entries;
}

static size_t count_holds(fx_t *f)
{
    return db_entries(f, TA_ENV_LEDGER, TA_DB_HOLDS);
}

static size_t count_warnings(fx_t *f)
{
    return db_entries(f, TA_ENV_AUDIT, TA_DB_AUDIT_WARNINGS);
}

static void uint_meta(fx_t *f, uint64_t *led, uint64_t *aud)
{
    MDB_txn *t1, *t2;
    *led = *aud = 0;
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_LEDGER, false, &t1), 0);
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_AUDIT, false, &t2), 0);
    ta_meta_get_u64(f->st, t1, TA_ENV_LEDGER, "applied_ticket", led);
    ta_meta_get_u64(f->st, t2, TA_ENV_AUDIT, "applied_ticket", aud);
    ta_txn_abort(t2);
    ta_txn_abort(t1);
}

static void assert_verify_ok(fx_t *f)
{
    int ndiff = -1;
    FILE *devnull = fopen("/dev/null", "w");
    assert_int_equal(ta_ledger_verify(f->st, NULL, devnull, &ndiff), 0);
    fclose(devnull);
    assert_int_equal(ndiff, 0);
}

static void test_exactly_once_batch(void **state)
{
    fx_t *f = *state;
    ta_nano_t sum = 0;
    for (int i = 0; i < 10; i++)
        sum += request(f, 100, 1000 + i, 37 * i, false, true);
    request(f, 100, 0, 0, true, true);
    request(f, 100, 0, 0, true, true);
    assert_int_equal(count_holds(f), 10);
    drain(f);
    assert_int_equal(count_holds(f), 0);
    ta_balance_t b = balance(f);
    assert_int_equal(b.cost_used, sum);
    assert_int_equal(b.requests_used, 10);
    assert_int_equal(b.in_flight, 0);
    assert_int_equal(b.cost_held, 0);
    assert_int_equal(count_records(f, NULL), 12);
    uint64_t led, aud;
    uint_meta(f, &led, &aud);
    assert_int_equal(led, 12);
    assert_int_equal(aud, 12);
    assert_verify_ok(f);

    /* statistics from the hourly aggregates */
    MDB_txn *txn;
    json_t *js;
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_AUDIT, false, &txn), 0);
    ta_audit_filter_t flt = {0};
    assert_int_equal(ta_audit_stats(f->st, txn, &flt, TA_GROUP_MODEL, NULL, &js), 0);
    ta_txn_abort(txn);
    json_t *tot = json_object_get(js, "totals");
    assert_int_equal(json_integer_value(json_object_get(tot, "requests")), 12);
    assert_int_equal(json_integer_value(json_object_get(tot, "errors")), 2);
    ta_nano_t c;
    const char *cs = json_string_value(json_object_get(tot, "cost"));
    assert_int_equal(ta_nano_parse(cs, strlen(cs), &c), 0);
    assert_int_equal(c, sum);
    assert_int_equal(json_array_size(json_object_get(js, "series")), 1);
    json_decref(js);
}

static void test_restart_between_commits(void **state)
{
    fx_t *f = *state;
    ta_nano_t sum = 0;
    for (int i = 0; i < 5; i++)
        sum += request(f, 100, 5000, 100, false, true);
    f->hooks.stop_after_ledger = 1;
    assert_int_equal(ta_billing_step(f->b, 10), -EINTR);
    uint64_t led, aud;
    uint_meta(f, &led, &aud);
    assert_int_equal(led, 5);
    assert_int_equal(aud, 0);
    assert_int_equal(balance(f).cost_used, sum);
    assert_int_equal(count_records(f, NULL), 0);
    assert_int_equal(ta_ring_depth(f->ring), 5); /* nothing released */

    /* "killed": a new billing process recovers */
    ta_billing_close(f->b);
    assert_int_equal(ta_billing_open(&f->conf, &f->b), 0);
    drain(f);
    uint_meta(f, &led, &aud);
    assert_int_equal(led, 5);
    assert_int_equal(aud, 5);
    assert_int_equal(balance(f).cost_used, sum); /* not charged twice */
    assert_int_equal(count_records(f, NULL), 5);
    assert_int_equal(ta_billing_stats(f->b)->settled, 0); /* ledger side was not re-applied */
    assert_verify_ok(f);

    /* re-running with both sides applied does nothing */
    ta_billing_close(f->b);
    assert_int_equal(ta_billing_open(&f->conf, &f->b), 0);
    sum += request(f, 100, 10, 10, false, true);
    drain(f);
    assert_int_equal(balance(f).cost_used, sum);
    assert_int_equal(count_records(f, NULL), 6);
    assert_verify_ok(f);
}

static bool stash_left(fx_t *f)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k = {16, "billing.aborted."}, v;
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_LEDGER, false, &txn), 0);
    assert_int_equal(mdb_cursor_open(txn, ta_store_dbi(f->st, TA_DB_META), &cur), 0);
    int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    bool left = rc == 0 && k.mv_size >= 16 && memcmp(k.mv_data, "billing.aborted.", 16) == 0;
    mdb_cursor_close(cur);
    ta_txn_abort(txn);
    return left;
}

static void test_worker_dead_cleanup(void **state)
{
    fx_t *f = *state;
    ta_nano_t sum = 0;
    /* worker 777: one finished request, three in flight when it died */
    sum += request(f, 777, 300, 30, false, true);
    for (int i = 0; i < 3; i++)
        request(f, 777, 0, 0, false, false);
    /* another worker's in-flight hold must survive */
    request(f, 778, 0, 0, false, false);
    assert_int_equal(count_holds(f), 5);
    assert_int_equal(ta_ring_push_control(f->ring, TA_EV_WORKER_DEAD, 777), 0);

    /* and billing dies between the two commits of that batch */
    f->hooks.stop_after_ledger = 1;
    assert_int_equal(ta_billing_step(f->b, 10), -EINTR);
    assert_int_equal(count_holds(f), 1);
    assert_true(stash_left(f));
    ta_billing_close(f->b);
    assert_int_equal(ta_billing_open(&f->conf, &f->b), 0);
    drain(f);
    size_t aborted = 0;
    assert_int_equal(count_records(f, &aborted), 4);
    assert_int_equal(aborted, 3);
    ta_balance_t b = balance(f);
    assert_int_equal(b.cost_used, sum);
    assert_int_equal(b.in_flight, 1);
    assert_verify_ok(f);

    /* the next batch removes the stash */
    sum += request(f, 778, 1, 1, false, true);
    drain(f);
    assert_false(stash_left(f));
    assert_int_equal(count_records(f, NULL), 5);
}

static void test_warnings_once(void **state)
{
    fx_t *f = *state;
    /* 1M prompt tokens = 2 units of a 10-unit limit */
    request(f, 100, 1000000, 0, false, true);
    request(f, 100, 1000000, 0, false, true);
    drain(f);
    assert_int_equal(count_warnings(f), 0); /* 40% */
    request(f, 100, 1000000, 0, false, true);
    drain(f);
    assert_int_equal(count_warnings(f), 1); /* 60%: the 50% warning */
    assert_int_equal(balance(f).warn_level, 1);
    request(f, 100, 1000000, 0, false, true);
    request(f, 100, 1000, 0, false, true);
    drain(f);
    assert_int_equal(count_warnings(f), 2); /* 80% */
    for (int i = 0; i < 3; i++)
        request(f, 100, 1000, 0, false, true);
    drain(f);
    assert_int_equal(count_warnings(f), 2); /* once per threshold per period */
    assert_int_equal(balance(f).warn_level, 2);
    MDB_txn *txn;
    ta_warning_t w;
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_AUDIT, false, &txn), 0);
    assert_int_equal(ta_audit_warning_get(f->st, txn, f->quota_id, balance(f).period_start, 80, &w), 0);
    ta_txn_abort(txn);
    assert_int_equal(w.threshold, 80);
    assert_true(w.cost_used >= 8 * TA_NANO_PER_UNIT);
    assert_int_equal(ta_billing_stats(f->b)->warnings, 2);
    assert_verify_ok(f);
}

static int collect_dead(const ta_dead_letter_t *dl, void *arg)
{
    ta_dead_letter_t *out = arg;
    for (int i = 0; i < 4; i++) {
        if (out[i].ticket == 0) {
            out[i] = *dl;
            out[i].raw = NULL;
            assert_int_equal(dl->raw_len, sizeof(ta_event_t));
            assert_memory_equal(dl->raw, &dl->ev, sizeof(ta_event_t));
            return 0;
        }
    }
    fail_msg("more dead letters than expected");
    return -1;
}

/* Two events that can never apply -- one of an unknown kind, one whose hold
 * record cannot be decoded (ta_quota_settle fails with TA_ECORRUPT) --
 * between good ones in one batch: the good ones settle exactly once, the bad
 * ones are set aside byte for byte, billing goes on, verify reports them. */
static void test_dead_letters(void **state)
{
    fx_t *f = *state;
    ta_nano_t c1 = request(f, 100, 1000, 500, false, true);

    ta_event_t unk, bad;
    memset(&unk, 0, sizeof(unk));
    unk.kind = 99;
    uint64_t n = ++f->nrid;
    memcpy(unk.request_id, &n, 8);
    unk.quota_id = f->quota_id;
    unk.t_done_ns = ta_now_ns();
    assert_int_equal(ta_ring_push(f->ring, &unk, NULL), 0);

    memset(&bad, 0, sizeof(bad));
    bad.kind = TA_EV_REQUEST;
    bad.flags = TA_EVF_HOLD;
    n = ++f->nrid;
    memcpy(bad.request_id, &n, 8);
    bad.worker_pid = 100;
    bad.quota_id = f->quota_id;
    bad.user_id = 7;
    bad.status = 200;
    bad.cost = 12345;
    bad.t_done_ns = ta_now_ns();
    snprintf(bad.model, sizeof(bad.model), "m");
    MDB_txn *txn;
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_LEDGER, true, &txn), 0);
    MDB_val k = {16, bad.request_id}, v = {7, "garbage"};
    assert_int_equal(mdb_put(txn, ta_store_dbi(f->st, TA_DB_HOLDS), &k, &v, 0), 0);
    assert_int_equal(ta_txn_commit(txn), 0);
    assert_int_equal(ta_ring_push(f->ring, &bad, NULL), 0);

    ta_nano_t c2 = request(f, 100, 2000, 100, false, true);
    drain(f);

    const ta_billing_stats_t *s = ta_billing_stats(f->b);
    assert_int_equal(s->dead_letters, 2);
    assert_int_equal(balance(f).cost_used, c1 + c2);
    assert_int_equal(count_records(f, NULL), 2);
    uint64_t led, aud;
    uint_meta(f, &led, &aud);
    assert_int_equal(led, ta_ring_head(f->ring) - 1);
    assert_int_equal(aud, led);
    assert_int_equal(count_holds(f), 1); /* the bad event's hold stays */

    ta_dead_letter_t dl[4];
    memset(dl, 0, sizeof(dl));
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_LEDGER, false, &txn), 0);
    assert_int_equal(ta_dead_letter_walk(f->st, txn, TA_ENV_LEDGER, collect_dead, dl), 0);
    ta_txn_abort(txn);
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_AUDIT, false, &txn), 0);
    assert_int_equal(ta_dead_letter_walk(f->st, txn, TA_ENV_AUDIT, collect_dead, dl), 0);
    ta_txn_abort(txn);
    assert_int_equal(dl[2].ticket, 0);
    assert_true(dl[0].ticket < dl[1].ticket);
    assert_true(dl[0].intact && dl[1].intact);
    assert_int_equal(dl[0].side, TA_ENV_LEDGER);
    assert_int_equal(dl[1].side, TA_ENV_LEDGER);
    assert_int_equal(dl[0].error, TA_EINVAL);
    assert_int_equal(dl[1].error, TA_ECORRUPT);
    assert_int_equal(dl[0].ring_id, ta_ring_id(f->ring));
    assert_memory_equal(&dl[0].ev, &unk, sizeof(unk));
    assert_memory_equal(&dl[1].ev, &bad, sizeof(bad));

    /* billing keeps going */
    ta_nano_t c3 = request(f, 100, 10, 10, false, true);
    drain(f);
    assert_int_equal(balance(f).cost_used, c1 + c2 + c3);
    assert_int_equal(count_records(f, NULL), 3);
    assert_int_equal(ta_billing_stats(f->b)->dead_letters, 2);

    /* verify reports both (the undecodable hold would fail verify's own
     * walk, so drop it as an operator repairing the record would) */
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_LEDGER, true, &txn), 0);
    assert_int_equal(mdb_del(txn, ta_store_dbi(f->st, TA_DB_HOLDS), &k, NULL), 0);
    assert_int_equal(ta_txn_commit(txn), 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    int ndiff = -1;
    assert_int_equal(ta_ledger_verify(f->st, NULL, out, &ndiff), 0);
    fclose(out);
    assert_int_equal(ndiff, 2);
    char *p1 = strstr(buf, "DEAD letter ticket");
    assert_non_null(p1);
    assert_non_null(strstr(p1 + 1, "DEAD letter ticket"));
    free(buf);

    /* dump shows them, event bytes included */
    buf = NULL;
    out = open_memstream(&buf, &len);
    assert_int_equal(ta_ledger_dump(f->st, out, true), 0);
    fclose(out);
    assert_non_null(strstr(buf, "\"dead_letters\""));
    char hx[2 * sizeof(bad) + 1];
    for (size_t i = 0; i < sizeof(bad); i++)
        snprintf(hx + 2 * i, 3, "%02x", ((const uint8_t *)&bad)[i]);
    assert_non_null(strstr(buf, hx));
    free(buf);
}

static size_t spool_count(fx_t *f)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "ls '%s/spool' 2>/dev/null | grep -c '\\.spool$'", f->dir);
    FILE *p = popen(cmd, "r");
    int n = 0;
    assert_int_equal(fscanf(p, "%d", &n), 1);
    pclose(p);
    return (size_t)n;
}

/* A stopped worker's spool (ledger/spool.c) is applied with its dead-worker
 * event, exactly once: also when billing dies between its two commits, and
 * when the same spool is taken again by a later dead-worker event (the
 * sweep's, after a billing that died before removing the file). */
static void test_spool_exactly_once(void **state)
{
    fx_t *f = *state;
    ta_event_t evs[3];
    ta_nano_t sum = 0;
    sum += request(f, 901, 300, 30, false, false);
    evs[0] = f->last;
    sum += request(f, 901, 200, 20, false, false);
    evs[1] = f->last;
    request(f, 901, 0, 0, true, false); /* refused: a record, no hold */
    evs[2] = f->last;
    request(f, 901, 0, 0, false, false); /* in flight when it stopped: aborted */
    assert_int_equal(count_holds(f), 3);
    assert_int_equal(ta_spool_write(f->dir, 901, evs, 3), 0);
    assert_int_equal(spool_count(f), 1);
    assert_int_equal(ta_ring_push_control(f->ring, TA_EV_WORKER_DEAD, 901), 0);

    /* billing dies between the two commits of that batch */
    f->hooks.stop_after_ledger = 1;
    assert_int_equal(ta_billing_step(f->b, 10), -EINTR);
    assert_int_equal(count_holds(f), 0);
    assert_int_equal(balance(f).cost_used, sum);
    ta_billing_close(f->b);
    assert_int_equal(ta_billing_open(&f->conf, &f->b), 0);
    drain(f);
    size_t aborted = 0;
    assert_int_equal(count_records(f, &aborted), 4);
    assert_int_equal(aborted, 1);
    assert_int_equal(balance(f).cost_used, sum);
    /* this billing did not run the ledger pass that took the file, so the
     * file stays: the sweep (sweep.c) pushes another dead-worker event for
     * the gone pid, and the file is taken again */
    assert_int_equal(spool_count(f), 1);
    assert_verify_ok(f);
    assert_int_equal(ta_ring_push_control(f->ring, TA_EV_WORKER_DEAD, 901), 0);
    drain(f);
    assert_int_equal(count_records(f, &aborted), 4); /* nothing applied twice */
    assert_int_equal(balance(f).cost_used, sum);
    assert_int_equal(spool_count(f), 0); /* removed after both commits */
    assert_verify_ok(f);
}

/* audit_retention_days shorter than the quota's period: verify still agrees
 * once the period's records are pruned. */
static void test_verify_after_prune(void **state)
{
    fx_t *f = *state;
    ta_nano_t sum = 0;
    for (int i = 0; i < 4; i++)
        sum += request(f, 100, 100 + i, 10, false, true);
    request(f, 100, 0, 0, true, true);
    drain(f);
    assert_verify_ok(f);
    ta_store_t *bst = ta_billing_store(f->b);
    MDB_txn *txn;
    size_t del = 0;
    bool more = true;
    assert_int_equal(ta_txn_begin(bst, TA_ENV_AUDIT, true, &txn), 0);
    assert_int_equal(ta_audit_prune(bst, txn, INT64_MAX, 2, &del, &more), 0); /* part of them */
    assert_int_equal(ta_txn_commit(txn), 0);
    assert_int_equal(del, 2);
    assert_verify_ok(f);
    assert_int_equal(ta_txn_begin(bst, TA_ENV_AUDIT, true, &txn), 0);
    assert_int_equal(ta_audit_prune(bst, txn, INT64_MAX, 1000, &del, &more), 0);
    assert_int_equal(ta_txn_commit(txn), 0);
    assert_false(more);
    assert_int_equal(count_records(f, NULL), 0);
    assert_int_equal(balance(f).cost_used, sum);
    assert_verify_ok(f);
    /* and new records of the same period add up with the pruned ones */
    sum += request(f, 100, 50, 5, false, true);
    drain(f);
    assert_int_equal(balance(f).cost_used, sum);
    assert_verify_ok(f);
}

int main(void)
{
    ta_log_init('B', TA_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_exactly_once_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_between_commits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_worker_dead_cleanup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_warnings_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_letters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spool_exactly_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_after_prune, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
