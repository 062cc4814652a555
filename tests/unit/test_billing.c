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

/* The statistics' totals (ta_audit_stats, every quota, whole range). */
static json_t *stats(ta_store_t *st, int group, const ta_audit_filter_t *flt)
{
    MDB_txn *txn;
    json_t *js = NULL;
    ta_audit_filter_t all = {0};
    assert_int_equal(ta_txn_begin(st, TA_ENV_AUDIT, false, &txn), 0);
    assert_int_equal(ta_audit_stats(st, txn, flt ? flt : &all, group, NULL, &js), 0);
    ta_txn_abort(txn);
    return js;
}

static int64_t total_of(json_t *js, const char *k)
{
    json_t *v = json_object_get(json_object_get(js, "totals"), k);
    if (json_is_string(v)) {
        ta_nano_t n;
        assert_int_equal(ta_nano_parse(json_string_value(v), strlen(json_string_value(v)), &n), 0);
        return n;
    }
    return json_integer_value(v);
}

/* More quotas in one batch than billing keeps (SETTLE_FILL, billing.c): the
 * balances written part way through the batch and at its end are each
 * quota's own, and the aggregates of every scope add up. */
static void test_many_quotas_one_batch(void **state)
{
    fx_t *f = *state;
    enum { N = 900 };
    MDB_txn *txn;
    ta_quota_t q;
    ta_nano_t cost[N + 1], sum = 0;

    /* a ring that holds the whole batch */
    ta_billing_close(f->b);
    ta_ring_close(f->ring);
    char path[128];
    snprintf(path, sizeof(path), "%s/ring2", f->dir);
    assert_int_equal(ta_ring_create_or_attach(path, 2048, &f->ring), 0);
    f->conf.ring = f->ring;
    f->conf.batch_max = 2048;
    assert_int_equal(ta_billing_open(&f->conf, &f->b), 0);

    uint64_t first = 0;
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_LEDGER, true, &txn), 0);
    assert_int_equal(ta_rec_get(f->st, txn, &ta_desc_quota, f->quota_id, &q), 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(ta_rec_next_id(f->st, txn, &ta_desc_quota, &q.id), 0);
        q.user_id = 100 + (uint64_t)i % 7;
        q.group_id = 1 + (uint64_t)i % 3;
        assert_int_equal(ta_rec_put(f->st, txn, &ta_desc_quota, q.id, &q), 0);
        if (first == 0)
            first = q.id;
    }
    assert_int_equal(ta_txn_commit(txn), 0);
    /* two requests per quota, the second pass in reverse order */
    memset(cost, 0, sizeof(cost));
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < N; i++) {
            int k = pass ? N - 1 - i : i;
            f->quota_id = first + (uint64_t)k;
            ta_nano_t c = request(f, 100, 10 + k, 1 + pass, false, true);
            cost[k] += c;
            sum += c;
        }
    }
    assert_int_equal(ta_billing_step(f->b, 10), 2 * N); /* one batch */
    for (int i = 0; i < N; i++) {
        f->quota_id = first + (uint64_t)i;
        ta_balance_t bal = balance(f);
        assert_int_equal(bal.cost_used, cost[i]);
        assert_int_equal(bal.requests_used, 2);
        assert_int_equal(bal.in_flight, 0);
    }
    assert_int_equal(count_holds(f), 0);
    json_t *js = stats(f->st, TA_GROUP_GROUP, NULL);
    assert_int_equal(total_of(js, "requests"), 2 * N);
    assert_int_equal(total_of(js, "cost"), sum);
    assert_int_equal(json_array_size(json_object_get(js, "series")), 3);
    json_decref(js);
    js = stats(f->st, TA_GROUP_USER, NULL); /* the user scope (request() says user 7) */
    assert_int_equal(total_of(js, "requests"), 2 * N);
    assert_int_equal(total_of(js, "cost"), sum);
    assert_int_equal(json_array_size(json_object_get(js, "series")), 1);
    json_decref(js);
    ta_audit_filter_t one = {.quota_id = first + 5};
    js = stats(f->st, TA_GROUP_NONE, &one);
    assert_int_equal(total_of(js, "cost"), cost[5]);
    json_decref(js);
    assert_verify_ok(f);
}

static void agg_row_add(ta_store_t *st, const uint8_t *key, int64_t requests)
{
    MDB_txn *txn;
    MDB_val k = {TA_AGG_KEY_LEN, (void *)key}, v;
    ta_daily_t d;
    uint8_t buf[256];
    assert_int_equal(ta_txn_begin(st, TA_ENV_AUDIT, true, &txn), 0);
    assert_int_equal(mdb_get(txn, ta_store_dbi(st, TA_DB_AUDIT_DAILY), &k, &v), 0);
    assert_int_equal(ta_rec_decode(&ta_desc_daily, v.mv_data, v.mv_size, &d), 0);
    d.requests += requests;
    int len = ta_rec_encode(&ta_desc_daily, &d, buf, sizeof(buf));
    assert_true(len > 0);
    v.mv_data = buf, v.mv_size = (size_t)len;
    assert_int_equal(mdb_put(txn, ta_store_dbi(st, TA_DB_AUDIT_DAILY), &k, &v, 0), 0);
    assert_int_equal(ta_txn_commit(txn), 0);
}

/* The first aggregate row of a scope (its key into out). */
static void first_agg_key(ta_store_t *st, int scope, uint8_t out[TA_AGG_KEY_LEN])
{
    MDB_txn *txn;
    MDB_cursor *cur;
    uint8_t lo[1] = {(uint8_t)scope};
    MDB_val k = {1, lo}, v;
    assert_int_equal(ta_txn_begin(st, TA_ENV_AUDIT, false, &txn), 0);
    assert_int_equal(mdb_cursor_open(txn, ta_store_dbi(st, TA_DB_AUDIT_DAILY), &cur), 0);
    assert_int_equal(mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE), 0);
    assert_int_equal(k.mv_size, TA_AGG_KEY_LEN);
    assert_int_equal(((uint8_t *)k.mv_data)[0], scope);
    memcpy(out, k.mv_data, TA_AGG_KEY_LEN);
    mdb_cursor_close(cur);
    ta_txn_abort(txn);
}

/* ledger verify checks the aggregates against the records: a quota's and
 * the whole gateway's. */
static void test_verify_aggregates(void **state)
{
    fx_t *f = *state;
    uint8_t key[TA_AGG_KEY_LEN];
    int ndiff = -1;
    for (int i = 0; i < 3; i++)
        request(f, 100, 100 + i, 10, false, true);
    request(f, 100, 0, 0, true, true);
    drain(f);
    assert_verify_ok(f);
    ta_store_t *bst = ta_billing_store(f->b);
    static const int scopes[] = {TA_AGG_QUOTA, TA_AGG_ALL};
    for (size_t i = 0; i < 2; i++) {
        first_agg_key(bst, scopes[i], key);
        agg_row_add(bst, key, 1);
        FILE *devnull = fopen("/dev/null", "w");
        assert_int_equal(ta_ledger_verify(f->st, NULL, devnull, &ndiff), 0);
        fclose(devnull);
        assert_int_equal(ndiff, 1);
        agg_row_add(bst, key, -1);
        assert_verify_ok(f);
    }
}

/* Remove the hourly aggregates and write what an earlier build kept: daily
 * rows (quota, UTC day, model) of the records, plus rest[] more in one row
 * of a day whose records were pruned. */
static void make_earlier_build(ta_store_t *st, uint64_t quota_id, int32_t old_day, const ta_daily_t *old)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v;
    MDB_dbi dbi = ta_store_dbi(st, TA_DB_AUDIT_DAILY);
    assert_int_equal(ta_txn_begin(st, TA_ENV_AUDIT, true, &txn), 0);
    assert_int_equal(mdb_cursor_open(txn, dbi, &cur), 0);
    while (mdb_cursor_get(cur, &k, &v, MDB_FIRST) == 0)
        assert_int_equal(mdb_cursor_del(cur, 0), 0);
    mdb_cursor_close(cur);
    MDB_val mk = {strlen("aggregates_version"), "aggregates_version"};
    assert_int_equal(mdb_del(txn, ta_store_dbi(st, TA_DB_AUDIT_META), &mk, NULL), 0);
    /* the records' daily rows, as that build summed them */
    assert_int_equal(mdb_cursor_open(txn, ta_store_dbi(st, TA_DB_AUDIT_REQUESTS), &cur), 0);
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        ta_audit_t r;
        ta_daily_t d;
        uint8_t dk[TA_DAILY_KEY_LEN];
        assert_int_equal(ta_rec_decode(&ta_desc_audit, v.mv_data, v.mv_size, &r), 0);
        ta_be64_put(dk, r.quota_id);
        int32_t day = (int32_t)(r.t_received_ns / 1000000000LL / 86400);
        dk[8] = (uint8_t)(day >> 24), dk[9] = (uint8_t)(day >> 16), dk[10] = (uint8_t)(day >> 8),
        dk[11] = (uint8_t)day;
        ta_be64_put(dk + 12, r.model_id);
        MDB_val key = {sizeof(dk), dk}, have;
        memset(&d, 0, sizeof(d));
        if (mdb_get(txn, dbi, &key, &have) == 0)
            assert_int_equal(ta_rec_decode(&ta_desc_daily, have.mv_data, have.mv_size, &d), 0);
        d.quota_id = r.quota_id, d.day = day, d.model_id = r.model_id, d.user_id = r.user_id;
        d.requests++;
        d.prompt_tokens += r.prompt_tokens;
        d.completion_tokens += r.completion_tokens;
        d.cost += r.cost;
        d.errors += r.status >= 400;
        uint8_t buf[256];
        int len = ta_rec_encode(&ta_desc_daily, &d, buf, sizeof(buf));
        MDB_val val = {(size_t)len, buf};
        assert_int_equal(mdb_put(txn, dbi, &key, &val, 0), 0);
    }
    mdb_cursor_close(cur);
    /* a day long gone: its records pruned, its daily row kept */
    uint8_t dk[TA_DAILY_KEY_LEN], buf[256];
    ta_be64_put(dk, quota_id);
    dk[8] = (uint8_t)(old_day >> 24), dk[9] = (uint8_t)(old_day >> 16), dk[10] = (uint8_t)(old_day >> 8),
    dk[11] = (uint8_t)old_day;
    ta_be64_put(dk + 12, 1);
    int len = ta_rec_encode(&ta_desc_daily, old, buf, sizeof(buf));
    MDB_val key = {sizeof(dk), dk}, val = {(size_t)len, buf};
    assert_int_equal(mdb_put(txn, dbi, &key, &val, 0), 0);
    assert_int_equal(ta_txn_commit(txn), 0);
}

/* A data directory of an earlier build (daily rows, no hourly ones) gets
 * its hourly aggregates when billing starts: the records summed by hour,
 * what the daily rows hold beyond them at their day's first hour, the daily
 * rows gone; statistics and verify agree, and it happens once. */
static void test_upgrade_daily(void **state)
{
    fx_t *f = *state;
    ta_nano_t sum = 0;
    for (int i = 0; i < 5; i++)
        sum += request(f, 100, 100 + i, 10, false, true);
    request(f, 100, 0, 0, true, true);
    drain(f);
    json_t *before = stats(f->st, TA_GROUP_HOUR, NULL);
    ta_billing_close(f->b);
    f->b = NULL;

    int32_t old_day = (int32_t)(ta_now_s() / 86400) - 60;
    ta_daily_t old = {.quota_id = f->quota_id, .day = old_day, .model_id = 1, .user_id = 7,
                      .requests = 3, .prompt_tokens = 30, .completion_tokens = 9,
                      .cost = 123456789, .errors = 1};
    make_earlier_build(f->st, f->quota_id, old_day, &old);
    MDB_txn *txn;
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_AUDIT, false, &txn), 0);
    assert_false(ta_audit_aggregates_ready(f->st, txn));
    ta_txn_abort(txn);

    assert_int_equal(ta_billing_open(&f->conf, &f->b), 0); /* upgrades */
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_AUDIT, false, &txn), 0);
    assert_true(ta_audit_aggregates_ready(f->st, txn));
    ta_txn_abort(txn);
    assert_int_equal(db_entries(f, TA_ENV_AUDIT, TA_DB_AUDIT_DAILY),
                     json_array_size(json_object_get(before, "series")) * 3 + 3);
    json_t *after = stats(f->st, TA_GROUP_HOUR, NULL);
    json_t *series = json_object_get(after, "series");
    /* the pruned day first, at its UTC midnight, then the records' hours as before */
    assert_int_equal(json_array_size(series), json_array_size(json_object_get(before, "series")) + 1);
    json_t *e0 = json_array_get(series, 0);
    char midnight[40];
    ta_time_format((int64_t)old_day * 86400, midnight);
    assert_memory_equal(json_string_value(json_object_get(e0, "hour")), midnight, 13);
    assert_int_equal(json_integer_value(json_object_get(e0, "requests")), 3);
    assert_int_equal(json_integer_value(json_object_get(e0, "errors")), 1);
    assert_int_equal(total_of(after, "requests"), total_of(before, "requests") + 3);
    assert_int_equal(total_of(after, "cost"), sum + old.cost);
    for (size_t i = 1; i < json_array_size(series); i++)
        assert_true(json_equal(json_array_get(series, i),
                               json_array_get(json_object_get(before, "series"), i - 1)));
    json_decref(after);
    json_t *prov = stats(f->st, TA_GROUP_PROVIDER, NULL);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(json_object_get(prov, "series"), 0),
                                                        "provider_id")), 0);
    json_decref(prov);
    ta_audit_filter_t uf = {.user_id = 7};
    json_t *user = stats(f->st, TA_GROUP_DAY, &uf);
    assert_int_equal(total_of(user, "requests"), total_of(before, "requests") + 3);
    json_decref(user);
    assert_verify_ok(f); /* the pruned day lies before verify's window */

    /* a second start changes nothing */
    ta_billing_close(f->b);
    assert_int_equal(ta_billing_open(&f->conf, &f->b), 0);
    after = stats(f->st, TA_GROUP_HOUR, NULL);
    assert_int_equal(total_of(after, "cost"), sum + old.cost);
    json_decref(after);
    /* and billing goes on adding to the upgraded rows */
    sum += request(f, 100, 7, 7, false, true);
    drain(f);
    after = stats(f->st, TA_GROUP_HOUR, NULL);
    assert_int_equal(total_of(after, "cost"), sum + old.cost);
    json_decref(after);
    json_decref(before);
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
        cmocka_unit_test_setup_teardown(test_many_quotas_one_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_aggregates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upgrade_daily, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
