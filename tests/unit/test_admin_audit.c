/*
 * test_admin_audit.c - the audit endpoints of the admin API
 * (/api/admin/requests/, /api/admin/statistics/ and a quota's requests/ and
 * statistics/) driven through ta_admin_handle() with a real store (LMDB in a
 * mkdtemp() directory). The control plane (users, models, quotas) is made
 * through the API itself; the audit records are written the way billing
 * writes them, with ta_audit_put() (record, quota index and daily aggregate
 * in one audit write transaction).
 *
 * Statistics are checked twice: against hand-computed values, and against a
 * sum the test makes itself over the records the records endpoint returns.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <cmocka.h>

#include <jansson.h>

/* the data set (mk_data) */
#define ADMIN_FX_EXTRA long long prov, m1, m2, u1, u2, qa, qb, g1, g2;
#define ADMIN_FX_POOL 1024
#include "admin_fixture.h"
#include "ledger/audit.h"

/* method url as the superadmin; the status must be want. */
static json_t *expect_status(fx_t *f, int want, const char *method, const char *url, const char *body)
{
    json_t *j = call(f, method, url, body, f->admin_tok);

    if (f->status != want) {
        char *s = j != NULL ? json_dumps(j, 0) : NULL;
        fail_msg("%s %s: status %d, want %d: %s", method, url, f->status, want, s ? s : "(empty)");
    }
    return j;
}

/* GET url as the superadmin (printf-style), asserting the status. */
static json_t *get(fx_t *f, int want, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static json_t *get(fx_t *f, int want, const char *fmt, ...)
{
    char url[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(url, sizeof(url), fmt, ap);
    va_end(ap);
    return expect_status(f, want, "GET", url, NULL);
}

static json_t *post(fx_t *f, int want, const char *url, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static json_t *post(fx_t *f, int want, const char *url, const char *fmt, ...)
{
    char body[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(body, sizeof(body), fmt, ap);
    va_end(ap);
    return expect_status(f, want, "POST", url, body);
}

/* A 400 naming param, in API.md's error shape with "fields". */
static void assert_param(json_t *j, const char *param)
{
    json_t *e = json_object_get(j, "error");
    assert_non_null(e);
    assert_string_equal(jstr(e, "type"), "invalid_request_error");
    if (!json_is_string(json_object_get(e, "param")) || strcmp(jstr(e, "param"), param) != 0)
        fail_msg("param %s, want %s (%s)", json_string_value(json_object_get(e, "param")), param,
                 json_string_value(json_object_get(e, "message")));
    assert_non_null(json_object_get(json_object_get(e, "fields"), param));
}

static int setup(void **state)
{
    fx_t *f = fx_open("/tmp/ta_audit_api_XXXXXX", 4096, ADMIN_EMAIL);
    json_t *j;

    j = call(f, "POST", "/api/auth/login/",
             "{\"email\":\"" ADMIN_EMAIL "\",\"password\":\"" ADMIN_PW "\"}", NULL);
    assert_int_equal(f->status, 200);
    f->admin_tok = strdup(jstr(j, "access_token"));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_close(*state);
    return 0;
}

/* ---- the data set --------------------------------------------------------------
 *
 *  #  received (UTC)              quota user model (requested / served)  status  p   c   cached cw  cost
 *  0  2026-11-24T23:59:59.999Z    A     u1   gpt-a / up-gpt-a           200     10  5   0      0   0.000125
 *  1  2026-11-25T00:00:00Z        A     u1   gpt-a / up-gpt-a           200     20  7   3      0   0.5
 *  2  2026-11-25T10:00:00Z        A     u1   gpt-b / up-gpt-b           429     0   0   0      0   0
 *  3  2026-11-25T12:00:00Z        B     u2   gpt-a / up-gpt-a           200     100 50  10     5   2.25
 *  4  2026-11-26T08:00:00Z        B     u2   gpt-b / up-gpt-b           502     30  0   0      0   0.000000001
 *  5  2026-11-26T09:00:00Z        A     u1   gpt-a / up-gpt-a (stream)  200     1   2   0      0   1
 *  6  2026-11-26T09:00:00Z        A     u1   nope (model id 0)          404     0   0   0      0   0
 *  7  2026-11-27T00:00:00Z        B     u2   gpt-a / up-gpt-a           200     3   4   0      0   0.1
 */
typedef struct row {
    const char *t;
    int64_t ms;
    char quota; /* 'A' or 'B' */
    int model;  /* 1, 2, or 0 (unknown) */
    int32_t status;
    uint8_t et;
    int64_t p, c, cached, cw;
    const char *cost;
    bool stream;
} row_t;

static const row_t rows[] = {
    {"2026-11-24T23:59:59Z", 999, 'A', 1, 200, TA_ET_NONE, 10, 5, 0, 0, "0.000125", false},
    {"2026-11-25T00:00:00Z", 0, 'A', 1, 200, TA_ET_NONE, 20, 7, 3, 0, "0.5", false},
    {"2026-11-25T10:00:00Z", 0, 'A', 2, 429, TA_ET_RATE_LIMIT, 0, 0, 0, 0, "0", false},
    {"2026-11-25T12:00:00Z", 0, 'B', 1, 200, TA_ET_NONE, 100, 50, 10, 5, "2.25", false},
    {"2026-11-26T08:00:00Z", 0, 'B', 2, 502, TA_ET_UPSTREAM, 30, 0, 0, 0, "0.000000001", false},
    {"2026-11-26T09:00:00Z", 0, 'A', 1, 200, TA_ET_NONE, 1, 2, 0, 0, "1", true},
    {"2026-11-26T09:00:00Z", 0, 'A', 0, 404, TA_ET_NOT_FOUND, 0, 0, 0, 0, "0", false},
    {"2026-11-27T00:00:00Z", 0, 'B', 1, 200, TA_ET_NONE, 3, 4, 0, 0, "0.1", false},
};
#define NROWS ((int)TA_ARRAY_SIZE(rows))

static int64_t t_ns(const char *t)
{
    int64_t s;
    assert_int_equal(ta_time_parse(t, strlen(t), &s), 0);
    return s * 1000000000LL;
}

static void rid_of(int i, uint8_t rid[16])
{
    memset(rid, 0, 16);
    rid[0] = 0xa0;
    rid[14] = (uint8_t)((i + 1) >> 8);
    rid[15] = (uint8_t)(i + 1);
}

static void rid_hex(int i, char out[33])
{
    uint8_t rid[16];
    rid_of(i, rid);
    ta_hex(rid, 16, out);
}

/* Store the records as billing does: one audit write transaction. */
static void put_records(fx_t *f, const row_t *rs, int n, int first_index)
{
    MDB_txn *txn;

    assert_int_equal(ta_txn_begin(f->st, TA_ENV_AUDIT, true, &txn), 0);
    for (int i = 0; i < n; i++) {
        const row_t *r = &rs[i];
        ta_audit_t a;
        memset(&a, 0, sizeof(a));
        rid_of(first_index + i, a.request_id);
        a.t_received_ns = t_ns(r->t) + r->ms * 1000000LL;
        a.t_first_byte_ns = a.t_received_ns + 40 * 1000000LL;
        a.t_done_ns = a.t_received_ns + 250 * 1000000LL;
        a.quota_id = (uint64_t)(r->quota == 'A' ? f->qa : f->qb);
        a.user_id = (uint64_t)(r->quota == 'A' ? f->u1 : f->u2);
        a.model_id = (uint64_t)(r->model == 1 ? f->m1 : r->model == 2 ? f->m2 : 0);
        a.provider_id = r->model != 0 ? (uint64_t)f->prov : 0;
        snprintf(a.key_prefix, sizeof(a.key_prefix), "sk-%c2345678", r->quota == 'A' ? 'a' : 'b');
        a.endpoint = TA_EP_CHAT;
        snprintf(a.model, sizeof(a.model), "%s", r->model == 1 ? "gpt-a" : r->model == 2 ? "gpt-b" : "nope");
        if (r->model != 0)
            snprintf(a.served_model, sizeof(a.served_model), "up-%.8s", a.model);
        a.stream = r->stream;
        a.status = r->status;
        a.error_type = r->et;
        a.prompt_tokens = r->p;
        a.completion_tokens = r->c;
        a.cached_tokens = r->cached;
        a.cache_write_tokens = r->cw;
        a.usage_estimated = r->stream;
        assert_int_equal(ta_nano_parse(r->cost, strlen(r->cost), &a.cost), 0);
        a.latency_ms = 250;
        a.ttft_ms = 40;
        snprintf(a.client_ip, sizeof(a.client_ip), "10.0.0.%d", first_index + i + 1);
        a.bytes_in = 100;
        a.worker_pid = 4242;
        a.ticket = first_index + i + 1;
        a.period_start = t_ns(r->t) / 1000000000LL;
        assert_int_equal(ta_audit_put(f->st, txn, &a, (uint64_t)(r->quota == 'A' ? f->g1 : f->g2)), 0);
    }
    assert_int_equal(ta_txn_commit(txn), 0);
}

static void mk_data(fx_t *f)
{
    json_t *j;
    long long gid;

    j = post(f, 201, "/api/admin/providers/",
             "{\"name\":\"p\",\"type\":\"openai\",\"base_url\":\"https://api.example.com/v1\","
             "\"api_key\":\"sk-upstream-1234\"}");
    f->prov = jint(j, "id");
    j = post(f, 201, "/api/admin/models/",
             "{\"name\":\"gpt-a\",\"routes\":[{\"provider_id\":%lld,\"upstream_name\":\"up-gpt-a\","
             "\"priority\":1}],\"input_price\":\"1\",\"output_price\":\"2\"}",
             f->prov);
    f->m1 = jint(j, "id");
    j = post(f, 201, "/api/admin/models/",
             "{\"name\":\"gpt-b\",\"routes\":[{\"provider_id\":%lld,\"upstream_name\":\"up-gpt-b\","
             "\"priority\":1}],\"input_price\":\"1\",\"output_price\":\"2\"}",
             f->prov);
    f->m2 = jint(j, "id");
    j = post(f, 201, "/api/admin/groups/", "{\"name\":\"g\",\"model_ids\":[%lld,%lld]}", f->m1, f->m2);
    gid = f->g1 = jint(j, "id");
    j = post(f, 201, "/api/admin/groups/", "{\"name\":\"g2\",\"model_ids\":[%lld,%lld]}", f->m1,
             f->m2);
    f->g2 = jint(j, "id");
    j = post(f, 201, "/api/admin/users/",
             "{\"email\":\"u1@example.com\",\"password\":\"password-u1\",\"role\":\"user\"}");
    f->u1 = jint(j, "id");
    j = post(f, 201, "/api/admin/users/",
             "{\"email\":\"u2@example.com\",\"password\":\"password-u2\",\"role\":\"user\"}");
    f->u2 = jint(j, "id");
    j = post(f, 201, "/api/admin/quotas/", "{\"user_id\":%lld,\"group_id\":%lld}", f->u1, gid);
    f->qa = jint(j, "id");
    j = post(f, 201, "/api/admin/quotas/", "{\"user_id\":%lld,\"group_id\":%lld}", f->u2, f->g2);
    f->qb = jint(j, "id");
    put_records(f, rows, NROWS, 0);
}

/* The ids ("id" hex) of a page's results, in order, must be those of rows idx[]. */
static void assert_ids(json_t *page, const int *idx, int n)
{
    json_t *res = json_object_get(page, "results");
    char hex[33];

    if ((int)json_array_size(res) != n)
        fail_msg("%zu results, want %d", json_array_size(res), n);
    for (int i = 0; i < n; i++) {
        rid_hex(idx[i], hex);
        if (strcmp(jstr(json_array_get(res, (size_t)i), "id"), hex) != 0)
            fail_msg("result %d is %s, want row %d", i, jstr(json_array_get(res, (size_t)i), "id"),
                     idx[i]);
    }
}

/* ---- sums over records, the test's own ------------------------------------------ */

typedef struct sums {
    char key[40];
    long long requests, p, c, cached, cw, errors;
    ta_nano_t cost;
} sums_t;

static void sums_add(sums_t *s, json_t *rec)
{
    ta_nano_t v;
    const char *cost = jstr(rec, "cost");

    assert_int_equal(ta_nano_parse(cost, strlen(cost), &v), 0);
    s->requests++;
    s->p += jint(rec, "prompt_tokens");
    s->c += jint(rec, "completion_tokens");
    s->cached += jint(rec, "cached_tokens");
    s->cw += jint(rec, "cache_write_tokens");
    s->cost += v;
    if (jint(rec, "status") >= 400)
        s->errors++;
}

static void assert_sums(json_t *o, const sums_t *s)
{
    char cost[TA_NANO_STRLEN];

    assert_non_null(o);
    assert_int_equal(jint(o, "requests"), s->requests);
    assert_int_equal(jint(o, "prompt_tokens"), s->p);
    assert_int_equal(jint(o, "completion_tokens"), s->c);
    assert_int_equal(jint(o, "cached_tokens"), s->cached);
    assert_int_equal(jint(o, "cache_write_tokens"), s->cw);
    assert_string_equal(jstr(o, "cost"), ta_nano_format(s->cost, cost));
    assert_int_equal(jint(o, "errors"), s->errors);
}

/* How a record is keyed for group_by (as the statistics key it: day and
 * hour in a zone off seconds east of UTC, model name, provider name, group
 * name, user id). The record names the model it asked for; "nope" has no
 * model row (nor provider), so its key is null ("" here). Quota A is in
 * group "g", B in "g2". */
static void record_key_tz(json_t *rec, const char *group, int off, char *out, size_t cap)
{
    int64_t s;
    const char *at = jstr(rec, "created_at");
    struct tm tm;

    assert_int_equal(ta_time_parse(at, strlen(at), &s), 0);
    s += off;
    gmtime_r(&(time_t){(time_t)s}, &tm);
    if (strcmp(group, "day") == 0) {
        strftime(out, cap, "%Y-%m-%d", &tm);
    } else if (strcmp(group, "hour") == 0) {
        char h[32];
        strftime(h, sizeof(h), "%Y-%m-%dT%H:00:00", &tm);
        snprintf(out, cap, "%s%c%02d:%02d", h, off < 0 ? '-' : '+', abs(off) / 3600,
                 abs(off) / 60 % 60);
    } else if (strcmp(group, "provider") == 0) {
        snprintf(out, cap, "%s", json_integer_value(json_object_get(rec, "provider_id")) != 0 ? "p" : "");
    } else if (strcmp(group, "group") == 0) {
        snprintf(out, cap, "%s", strcmp(jstr(rec, "key_prefix"), "sk-a2345678") == 0 ? "g" : "g2");
    } else if (strcmp(group, "user") == 0) {
        snprintf(out, cap, "%lld", jint(rec, "user_id"));
    } else {
        const char *m = jstr(rec, "model");
        snprintf(out, cap, "%s", strcmp(m, "nope") == 0 ? "" : m);
    }
}

static void series_key(json_t *e, char *out, size_t cap)
{
    json_t *k = json_object_get(e, "key");
    if (json_is_string(k))
        snprintf(out, cap, "%s", json_string_value(k));
    else if (json_is_integer(k))
        snprintf(out, cap, "%lld", (long long)json_integer_value(k));
    else if (json_is_null(k))
        out[0] = '\0';
    else
        fail_msg("series entry without a key");
}

/* The statistics at stats_url must equal the sums over the records at
 * records_url (one page of up to 500), in total and per group, day and hour
 * taken off seconds east of UTC. */
static void assert_stats_agree_tz(fx_t *f, const char *stats_url, const char *records_url,
                                  const char *group, int off)
{
    json_t *st = get(f, 200, "%s", stats_url), *recs = get(f, 200, "%s", records_url);
    json_t *res = json_object_get(recs, "results"), *series = json_object_get(st, "series"), *r, *e;
    sums_t tot, groups[16];
    size_t ng = 0, i, g;
    char key[40];

    memset(&tot, 0, sizeof(tot));
    memset(groups, 0, sizeof(groups));
    assert_true(json_is_null(json_object_get(recs, "next")));
    json_array_foreach (res, i, r) {
        sums_add(&tot, r);
        record_key_tz(r, group, off, key, sizeof(key));
        for (g = 0; g < ng && strcmp(groups[g].key, key) != 0; g++)
            ;
        if (g == ng) {
            assert_true(ng < TA_ARRAY_SIZE(groups));
            snprintf(groups[ng++].key, sizeof(groups[0].key), "%s", key);
        }
        sums_add(&groups[g], r);
    }
    assert_int_equal(tot.requests, jint(recs, "count"));
    assert_sums(json_object_get(st, "totals"), &tot);
    if (json_array_size(series) != ng)
        fail_msg("%s: %zu series entries, the records make %zu groups", stats_url,
                 json_array_size(series), ng);
    json_array_foreach (series, i, e) {
        series_key(e, key, sizeof(key));
        for (g = 0; g < ng && strcmp(groups[g].key, key) != 0; g++)
            ;
        if (g == ng)
            fail_msg("%s: series key '%s' matches no record", stats_url, key);
        assert_sums(e, &groups[g]);
    }
}

static void assert_stats_agree(fx_t *f, const char *stats_url, const char *records_url,
                               const char *group)
{
    assert_stats_agree_tz(f, stats_url, records_url, group, 0);
}

/* ---- tests --------------------------------------------------------------- */

static void test_record_shape(void **state)
{
    fx_t *f = *state;
    static const char *const want[] = {
        "id",           "created_at",   "user_id",       "quota_id",          "key_prefix",
        "endpoint",     "model",        "served_model",  "provider_id",       "stream",
        "status",       "error_type",   "prompt_tokens", "completion_tokens", "cached_tokens",
        "cache_write_tokens", "usage_estimated", "cost", "latency_ms",        "ttft_ms",
        "client_ip"};
    json_t *j, *r;
    const char *k;
    json_t *v;
    size_t n = 0;
    char hex[33];

    mk_data(f);
    j = get(f, 200, "/api/admin/requests/?quota_id=%lld&status=200&since=2026-11-26", f->qa);
    assert_int_equal(jint(j, "count"), 1);
    r = json_array_get(json_object_get(j, "results"), 0);
    /* exactly API.md's fields, in its order */
    json_object_foreach (r, k, v) {
        assert_true(n < TA_ARRAY_SIZE(want));
        assert_string_equal(k, want[n]);
        n++;
    }
    assert_int_equal(n, TA_ARRAY_SIZE(want));
    rid_hex(5, hex);
    assert_string_equal(jstr(r, "id"), hex);
    assert_string_equal(jstr(r, "created_at"), "2026-11-26T09:00:00.000Z");
    assert_int_equal(jint(r, "user_id"), f->u1);
    assert_int_equal(jint(r, "quota_id"), f->qa);
    assert_string_equal(jstr(r, "key_prefix"), "sk-a2345678");
    assert_string_equal(jstr(r, "endpoint"), "chat.completions");
    assert_string_equal(jstr(r, "model"), "gpt-a");
    assert_string_equal(jstr(r, "served_model"), "up-gpt-a");
    assert_int_equal(jint(r, "provider_id"), f->prov);
    assert_true(json_is_true(json_object_get(r, "stream")));
    assert_int_equal(jint(r, "status"), 200);
    assert_string_equal(jstr(r, "error_type"), "");
    assert_int_equal(jint(r, "prompt_tokens"), 1);
    assert_int_equal(jint(r, "completion_tokens"), 2);
    assert_int_equal(jint(r, "cached_tokens"), 0);
    assert_int_equal(jint(r, "cache_write_tokens"), 0);
    assert_true(json_is_true(json_object_get(r, "usage_estimated")));
    assert_string_equal(jstr(r, "cost"), "1");
    assert_int_equal(jint(r, "latency_ms"), 250);
    assert_int_equal(jint(r, "ttft_ms"), 40);
    assert_string_equal(jstr(r, "client_ip"), "10.0.0.6");

    /* an error record: error type named, no provider, sub-unit cost as a string */
    j = get(f, 200, "/api/admin/requests/?status=404");
    r = json_array_get(json_object_get(j, "results"), 0);
    assert_string_equal(jstr(r, "error_type"), "not_found_error");
    assert_true(json_is_null(json_object_get(r, "provider_id")));
    assert_string_equal(jstr(r, "served_model"), "");
    assert_true(json_is_false(json_object_get(r, "stream")));
    j = get(f, 200, "/api/admin/requests/?status=502");
    assert_string_equal(jstr(json_array_get(json_object_get(j, "results"), 0), "cost"),
                        "0.000000001");
    j = get(f, 200, "/api/admin/requests/?until=2026-11-25");
    assert_string_equal(jstr(json_array_get(json_object_get(j, "results"), 0), "created_at"),
                        "2026-11-24T23:59:59.999Z");
}

static void test_filters(void **state)
{
    fx_t *f = *state;
    json_t *j, *j2;

    mk_data(f);
    /* newest first; rows 5 and 6 share a timestamp and follow the id */
    j = get(f, 200, "/api/admin/requests/");
    assert_int_equal(jint(j, "count"), 8);
    assert_ids(j, (int[]){7, 6, 5, 4, 3, 2, 1, 0}, 8);
    assert_true(json_is_null(json_object_get(j, "next")));
    assert_true(json_is_null(json_object_get(j, "previous")));
    get(f, 200, "/api/admin/requests");

    /* by quota: both routes, same answer */
    j = get(f, 200, "/api/admin/requests/?quota_id=%lld", f->qa);
    assert_ids(j, (int[]){6, 5, 2, 1, 0}, 5);
    j2 = get(f, 200, "/api/admin/quotas/%lld/requests/", f->qa);
    assert_true(json_equal(json_object_get(j, "results"), json_object_get(j2, "results")));
    assert_int_equal(jint(j2, "count"), 5);
    j = get(f, 200, "/api/admin/quotas/%lld/requests", f->qb);
    assert_ids(j, (int[]){7, 4, 3}, 3);

    /* by user */
    j = get(f, 200, "/api/admin/requests/?user_id=%lld", f->u2);
    assert_ids(j, (int[]){7, 4, 3}, 3);
    j = get(f, 200, "/api/admin/requests/?user_id=%lld&quota_id=%lld", f->u2, f->qa);
    assert_int_equal(jint(j, "count"), 0);
    j = get(f, 200, "/api/admin/requests/?user_id=9999");
    assert_int_equal(jint(j, "count"), 0);

    /* by model: the requested name or the served one */
    j = get(f, 200, "/api/admin/requests/?model=gpt-a");
    assert_ids(j, (int[]){7, 5, 3, 1, 0}, 5);
    j = get(f, 200, "/api/admin/requests/?model=up-gpt-b");
    assert_ids(j, (int[]){4, 2}, 2);
    j = get(f, 200, "/api/admin/requests/?model=nope");
    assert_ids(j, (int[]){6}, 1);
    j = get(f, 200, "/api/admin/quotas/%lld/requests/?model=gpt-b", f->qb);
    assert_ids(j, (int[]){4}, 1);
    j = get(f, 200, "/api/admin/requests/?model=gpt");
    assert_int_equal(jint(j, "count"), 0);

    /* by status */
    j = get(f, 200, "/api/admin/requests/?status=429");
    assert_ids(j, (int[]){2}, 1);
    j = get(f, 200, "/api/admin/quotas/%lld/requests/?status=200", f->qa);
    assert_ids(j, (int[]){5, 1, 0}, 3);

    /* since inclusive, until exclusive, to the instant */
    j = get(f, 200, "/api/admin/requests/?since=2026-11-25&until=2026-11-26");
    assert_ids(j, (int[]){3, 2, 1}, 3);
    j = get(f, 200, "/api/admin/requests/?since=2026-11-25T10:00:00Z");
    assert_ids(j, (int[]){7, 6, 5, 4, 3, 2}, 6);
    j = get(f, 200, "/api/admin/requests/?until=2026-11-25T10:00:00Z");
    assert_ids(j, (int[]){1, 0}, 2);
    j = get(f, 200, "/api/admin/requests/?since=2026-11-25T11:00:00%%2B01:00&until=2026-11-25T12:00:00.001Z");
    assert_ids(j, (int[]){3, 2}, 2);
    j = get(f, 200, "/api/admin/quotas/%lld/requests/?since=2026-11-24T23:59:59Z&until=2026-11-25", f->qa);
    assert_ids(j, (int[]){0}, 1);
    /* fractions count, to the nanosecond */
    j = get(f, 200, "/api/admin/requests/?since=2026-11-24T23:59:59.999Z&until=2026-11-25");
    assert_ids(j, (int[]){0}, 1);
    j = get(f, 200, "/api/admin/requests/?since=2026-11-24T23:59:59.999000001Z&until=2026-11-25");
    assert_int_equal(jint(j, "count"), 0);
    j = get(f, 200, "/api/admin/requests/?until=2026-11-24T23:59:59.999Z");
    assert_int_equal(jint(j, "count"), 0);
    j = get(f, 200, "/api/admin/requests/?until=2026-11-24T23:59:59.999000001Z");
    assert_ids(j, (int[]){0}, 1);

    /* all together */
    j = get(f, 200, "/api/admin/requests/?quota_id=%lld&model=gpt-a&status=200&since=2026-11-25&user_id=%lld",
            f->qa, f->u1);
    assert_ids(j, (int[]){5, 1}, 2);
    j = get(f, 200, "/api/admin/quotas/%lld/requests/?model=gpt-a&status=200&since=2026-11-25&until=2026-11-26",
            f->qa);
    assert_ids(j, (int[]){1}, 1);
    /* parameters a route does not take are ignored, like the other lists' */
    j = get(f, 200, "/api/admin/quotas/%lld/requests/?quota_id=%lld&user_id=%lld", f->qa, f->qb, f->u2);
    assert_int_equal(jint(j, "count"), 5);
}

static void test_pagination(void **state)
{
    fx_t *f = *state;
    json_t *j;

    mk_data(f);
    j = get(f, 200, "/api/admin/requests/?page_size=3");
    assert_int_equal(jint(j, "count"), 8);
    assert_ids(j, (int[]){7, 6, 5}, 3);
    assert_string_equal(jstr(j, "next"), "http://gw.test/api/admin/requests/?page_size=3&page=2");
    assert_true(json_is_null(json_object_get(j, "previous")));

    j = get(f, 200, "/api/admin/requests/?page=2&page_size=3&model=gpt-a");
    assert_int_equal(jint(j, "count"), 5);
    assert_ids(j, (int[]){1, 0}, 2);
    assert_true(json_is_null(json_object_get(j, "next")));
    assert_string_equal(jstr(j, "previous"),
                        "http://gw.test/api/admin/requests/?page_size=3&model=gpt-a&page=1");

    j = get(f, 200, "/api/admin/requests/?page_size=3&page=2");
    assert_ids(j, (int[]){4, 3, 2}, 3);
    assert_string_equal(jstr(j, "next"), "http://gw.test/api/admin/requests/?page_size=3&page=3");
    assert_string_equal(jstr(j, "previous"), "http://gw.test/api/admin/requests/?page_size=3&page=1");

    j = get(f, 200, "/api/admin/quotas/%lld/requests/?page_size=2&page=3", f->qa);
    assert_int_equal(jint(j, "count"), 5);
    assert_ids(j, (int[]){0}, 1);
    assert_true(json_is_null(json_object_get(j, "next")));

    /* past the end: empty page, the count still exact */
    j = get(f, 200, "/api/admin/requests/?page=9");
    assert_int_equal(jint(j, "count"), 8);
    assert_int_equal(json_array_size(json_object_get(j, "results")), 0);
    assert_true(json_is_null(json_object_get(j, "next")));

    /* the default page is 50; 500 is the largest */
    put_records(f, (row_t[]){{"2026-11-20T00:00:00Z", 0, 'B', 1, 200, 0, 1, 1, 0, 0, "0.01", false}}, 1,
                100);
    for (int i = 0; i < 60; i++) {
        row_t r = {"2026-11-21T00:00:00Z", i, 'B', 2, 200, 0, 1, 1, 0, 0, "0.01", false};
        put_records(f, &r, 1, 200 + i);
    }
    j = get(f, 200, "/api/admin/requests/");
    assert_int_equal(jint(j, "count"), 69);
    assert_int_equal(json_array_size(json_object_get(j, "results")), 50);
    assert_string_equal(jstr(j, "next"), "http://gw.test/api/admin/requests/?page=2");
    j = get(f, 200, "/api/admin/requests/?page_size=500");
    assert_int_equal(json_array_size(json_object_get(j, "results")), 69);

    j = get(f, 400, "/api/admin/requests/?page_size=501");
    assert_param(j, "page_size");
    j = get(f, 400, "/api/admin/requests/?page_size=0");
    assert_param(j, "page_size");
    j = get(f, 400, "/api/admin/quotas/%lld/requests/?page=0", f->qa);
    assert_param(j, "page");
    j = get(f, 400, "/api/admin/requests/?page=abc");
    assert_param(j, "page");
    j = get(f, 400, "/api/admin/requests/?page=99999999999999999999");
    assert_param(j, "page");
}

static void test_statistics(void **state)
{
    fx_t *f = *state;
    json_t *j, *s, *e;
    char su[256], ru[256];

    mk_data(f);
    /* by day (the default), every quota */
    j = get(f, 200, "/api/admin/statistics/");
    s = json_object_get(j, "totals");
    assert_int_equal(jint(s, "requests"), 8);
    assert_int_equal(jint(s, "prompt_tokens"), 164);
    assert_int_equal(jint(s, "completion_tokens"), 68);
    assert_int_equal(jint(s, "cached_tokens"), 13);
    assert_int_equal(jint(s, "cache_write_tokens"), 5);
    assert_string_equal(jstr(s, "cost"), "3.850125001");
    assert_int_equal(jint(s, "errors"), 3);
    s = json_object_get(j, "series");
    assert_int_equal(json_array_size(s), 4);
    assert_string_equal(jstr(json_array_get(s, 0), "key"), "2026-11-24");
    assert_string_equal(jstr(json_array_get(s, 1), "key"), "2026-11-25");
    assert_string_equal(jstr(json_array_get(s, 2), "key"), "2026-11-26");
    assert_string_equal(jstr(json_array_get(s, 3), "key"), "2026-11-27");
    assert_int_equal(jint(json_array_get(s, 1), "requests"), 3);
    assert_string_equal(jstr(json_array_get(s, 1), "cost"), "2.75");
    assert_int_equal(jint(json_array_get(s, 2), "errors"), 2);
    j = get(f, 200, "/api/admin/statistics?group_by=day");
    assert_int_equal(json_array_size(json_object_get(j, "series")), 4);

    /* by model: the name as key, null for a model the ledger does not know */
    j = get(f, 200, "/api/admin/statistics/?group_by=model");
    s = json_object_get(j, "series");
    assert_int_equal(json_array_size(s), 3);
    e = json_array_get(s, 0);
    assert_true(json_is_null(json_object_get(e, "key")));
    assert_int_equal(jint(e, "requests"), 1);
    e = json_array_get(s, 1);
    assert_string_equal(jstr(e, "key"), "gpt-a");
    assert_int_equal(jint(e, "model_id"), f->m1);
    assert_int_equal(jint(e, "requests"), 5);
    assert_string_equal(jstr(e, "cost"), "3.850125");
    assert_string_equal(jstr(json_array_get(s, 2), "key"), "gpt-b");

    /* by user: the user id as key, the costliest first (u2 2.350000001, u1
     * 1.500125), at most 100 of them unless limit says otherwise */
    j = get(f, 200, "/api/admin/statistics/?group_by=user");
    s = json_object_get(j, "series");
    assert_int_equal(json_array_size(s), 2);
    assert_int_equal(jint(json_array_get(s, 0), "key"), f->u2);
    assert_string_equal(jstr(json_array_get(s, 0), "cost"), "2.350000001");
    assert_int_equal(jint(json_array_get(s, 1), "key"), f->u1);
    assert_int_equal(jint(json_array_get(s, 1), "requests"), 5);
    assert_int_equal(jint(json_object_get(j, "top"), "limit"), 100);
    assert_int_equal(jint(json_object_get(j, "top"), "of"), 2);
    assert_int_equal(jint(json_object_get(j, "totals"), "requests"), NROWS);
    j = get(f, 200, "/api/admin/statistics/?group_by=user&limit=1");
    s = json_object_get(j, "series");
    assert_int_equal(json_array_size(s), 1);
    assert_int_equal(jint(json_array_get(s, 0), "key"), f->u2);
    assert_int_equal(jint(json_object_get(j, "top"), "of"), 2);
    assert_int_equal(jint(json_object_get(j, "totals"), "requests"), NROWS); /* still everything's */
    /* limit on a model grouping: gpt-a (3.850125) before gpt-b and the unknown model */
    j = get(f, 200, "/api/admin/statistics/?group_by=model&limit=1");
    s = json_object_get(j, "series");
    assert_int_equal(json_array_size(s), 1);
    assert_string_equal(jstr(json_array_get(s, 0), "key"), "gpt-a");
    assert_int_equal(jint(json_object_get(j, "top"), "of"), 3);
    j = get(f, 200, "/api/admin/statistics/?group_by=model");
    assert_null(json_object_get(j, "top")); /* unbounded unless asked */
    j = get(f, 200, "/api/admin/statistics/?group_by=model&limit=3&since=2030-01-01");
    assert_int_equal(json_array_size(json_object_get(j, "series")), 0); /* nothing to rank */
    assert_int_equal(jint(json_object_get(j, "top"), "of"), 0);

    /* filters of the global statistics */
    j = get(f, 200, "/api/admin/statistics/?user_id=%lld&group_by=model", f->u2);
    assert_int_equal(jint(json_object_get(j, "totals"), "requests"), 3);
    assert_int_equal(json_array_size(json_object_get(j, "series")), 2);
    j = get(f, 200, "/api/admin/statistics/?quota_id=%lld", f->qa);
    assert_int_equal(jint(json_object_get(j, "totals"), "requests"), 5);

    /* hour granularity: since/until widen to whole UTC hours */
    j = get(f, 200, "/api/admin/statistics/?since=2026-11-25T10:30:00Z");
    assert_int_equal(jint(json_object_get(j, "totals"), "requests"), 6); /* the records say 5 */
    j = get(f, 200, "/api/admin/statistics/?since=2026-11-26T08:59:59Z");
    assert_int_equal(jint(json_object_get(j, "totals"), "requests"), 4); /* the records say 3 */
    j = get(f, 200, "/api/admin/statistics/?until=2026-11-26T00:00:01Z");
    assert_int_equal(jint(json_object_get(j, "totals"), "requests"), 4);
    j = get(f, 200, "/api/admin/statistics/?until=2026-11-25T10:00:00.001Z");
    assert_int_equal(jint(json_object_get(j, "totals"), "requests"), 3);
    j = get(f, 200, "/api/admin/statistics/?until=2026-11-26");
    assert_int_equal(jint(json_object_get(j, "totals"), "requests"), 4);
    j = get(f, 200, "/api/admin/statistics/?since=2026-11-26&until=2026-11-27&group_by=user");
    assert_int_equal(jint(json_object_get(j, "totals"), "requests"), 3);
    assert_int_equal(json_array_size(json_object_get(j, "series")), 2);
    j = get(f, 200, "/api/admin/statistics/?since=2030-01-01");
    assert_int_equal(jint(json_object_get(j, "totals"), "requests"), 0);
    assert_string_equal(jstr(json_object_get(j, "totals"), "cost"), "0");
    assert_int_equal(json_array_size(json_object_get(j, "series")), 0);

    /* a quota's statistics */
    j = get(f, 200, "/api/admin/quotas/%lld/statistics/", f->qb);
    s = json_object_get(j, "totals");
    assert_int_equal(jint(s, "requests"), 3);
    assert_int_equal(jint(s, "prompt_tokens"), 133);
    assert_int_equal(jint(s, "errors"), 1);
    assert_int_equal(json_array_size(json_object_get(j, "series")), 3);
    j = get(f, 200, "/api/admin/quotas/%lld/statistics?group_by=model&since=2026-11-26", f->qa);
    s = json_object_get(j, "series");
    assert_int_equal(json_array_size(s), 2);
    assert_true(json_is_null(json_object_get(json_array_get(s, 0), "key")));
    assert_string_equal(jstr(json_array_get(s, 1), "key"), "gpt-a");
    assert_string_equal(jstr(json_object_get(j, "totals"), "cost"), "1");

    /* and every one of them agrees with a sum over the records (hour-aligned ranges) */
    static const char *const groups[] = {"day", "hour", "model", "provider", "group", "user"};
    static const char *const ranges[] = {"", "since=2026-11-25&", "until=2026-11-26&",
                                         "since=2026-11-25&until=2026-11-27&",
                                         "since=2026-11-25T10:00:00Z&until=2026-11-26T09:00:00Z&"};
    for (size_t g = 0; g < TA_ARRAY_SIZE(groups); g++) {
        for (size_t r = 0; r < TA_ARRAY_SIZE(ranges); r++) {
            snprintf(su, sizeof(su), "/api/admin/statistics/?%sgroup_by=%s", ranges[r], groups[g]);
            snprintf(ru, sizeof(ru), "/api/admin/requests/?%spage_size=500", ranges[r]);
            assert_stats_agree(f, su, ru, groups[g]);
            snprintf(su, sizeof(su), "/api/admin/statistics/?%suser_id=%lld&group_by=%s", ranges[r],
                     f->u1, groups[g]);
            snprintf(ru, sizeof(ru), "/api/admin/requests/?%suser_id=%lld&page_size=500", ranges[r],
                     f->u1);
            assert_stats_agree(f, su, ru, groups[g]);
            if (strcmp(groups[g], "user") == 0)
                continue;
            snprintf(su, sizeof(su), "/api/admin/quotas/%lld/statistics/?%sgroup_by=%s", f->qb,
                     ranges[r], groups[g]);
            snprintf(ru, sizeof(ru), "/api/admin/quotas/%lld/requests/?%spage_size=500", f->qb,
                     ranges[r]);
            assert_stats_agree(f, su, ru, groups[g]);
        }
    }
}

/* Day and hour buckets in a time zone, against the records shifted by hand. */
static void test_statistics_tz(void **state)
{
    fx_t *f = *state;
    json_t *j, *s;
    static const char *const groups[] = {"day", "hour"};

    mk_data(f);
    for (size_t g = 0; g < 2; g++) {
        char su[160];
        /* Asia/Shanghai: UTC+8 all year since 1991 */
        snprintf(su, sizeof(su), "/api/admin/statistics/?tz=Asia/Shanghai&group_by=%s", groups[g]);
        assert_stats_agree_tz(f, su, "/api/admin/requests/?page_size=500", groups[g], 8 * 3600);
        char ru[128];
        snprintf(ru, sizeof(ru), "/api/admin/quotas/%lld/requests/?page_size=500", f->qa);
        snprintf(su, sizeof(su), "/api/admin/quotas/%lld/statistics/?tz=Asia/Shanghai&group_by=%s",
                 f->qa, groups[g]);
        assert_stats_agree_tz(f, su, ru, groups[g], 8 * 3600);
        /* America/Sao_Paulo: UTC-3 (no DST since 2019) */
        snprintf(su, sizeof(su), "/api/admin/statistics/?tz=America/Sao_Paulo&group_by=%s",
                 groups[g]);
        assert_stats_agree_tz(f, su, "/api/admin/requests/?page_size=500", groups[g], -3 * 3600);
    }
    /* 2026-11-24T23:59:59.999Z is the 25th in Shanghai: three days, not four */
    j = get(f, 200, "/api/admin/statistics/?tz=Asia/Shanghai");
    s = json_object_get(j, "series");
    assert_int_equal(json_array_size(s), 3);
    assert_string_equal(jstr(json_array_get(s, 0), "day"), "2026-11-25");
    assert_int_equal(jint(json_array_get(s, 0), "requests"), 4);
    j = get(f, 200, "/api/admin/statistics/?tz=Asia/Shanghai&group_by=hour");
    assert_string_equal(jstr(json_array_get(json_object_get(j, "series"), 0), "hour"),
                        "2026-11-25T07:00:00+08:00");
    /* a half-hour zone: UTC hours, labelled with their local start */
    j = get(f, 200, "/api/admin/statistics/?tz=Asia/Kolkata&group_by=hour");
    assert_string_equal(jstr(json_array_get(json_object_get(j, "series"), 0), "key"),
                        "2026-11-25T04:30:00+05:30");
    /* UTC by default, and by name */
    j = get(f, 200, "/api/admin/statistics/?group_by=hour&tz=UTC");
    assert_string_equal(jstr(json_array_get(json_object_get(j, "series"), 0), "hour"),
                        "2026-11-24T23:00:00+00:00");
    /* what is not a zone */
    static const char *const bad[] = {"Mars/Olympus_Mons", "..%2Fetc%2Fpasswd", "%2Fetc%2Flocaltime",
                                      "EST5EDT%2CM3.2.0", "right%2FUTC", "Asia"};
    for (size_t i = 0; i < TA_ARRAY_SIZE(bad); i++) {
        j = get(f, 400, "/api/admin/statistics/?tz=%s", bad[i]);
        assert_param(j, "tz");
        j = get(f, 400, "/api/admin/quotas/%lld/statistics/?group_by=hour&tz=%s", f->qa, bad[i]);
        assert_param(j, "tz");
    }
    j = get(f, 400, "/api/admin/quotas/%lld/statistics/?group_by=user", f->qa);
    assert_param(j, "group_by");
    j = get(f, 400, "/api/admin/statistics/?group_by=week");
    assert_param(j, "group_by");
}

/* ta_tz_offset agrees with the C library's localtime_r (the same TZif
 * files) over two centuries, around every transition and past the files'
 * last transition, where the footer rule decides. */
static void test_tz_offsets(void **state)
{
    static const char *const zones[] = {
        "UTC",           "Asia/Shanghai",     "America/New_York", "Europe/London",
        "Europe/Berlin", "Australia/Sydney",  "Australia/Lord_Howe", "Asia/Kolkata",
        "America/Sao_Paulo", "Pacific/Chatham", "America/St_Johns", "Africa/Casablanca",
        "Pacific/Apia",  "Asia/Kathmandu",    "America/Santiago", "Europe/Dublin"};
    (void)state;
    for (size_t z = 0; z < TA_ARRAY_SIZE(zones); z++) {
        ta_tz_t *tz;
        char env[80];
        assert_int_equal(ta_tz_load(zones[z], &tz), 0);
        snprintf(env, sizeof(env), ":%s", zones[z]);
        setenv("TZ", env, 1);
        tzset();
        int32_t prev = INT32_MIN;
        /* every 6 hours from 1901 to 2101, then the hour around each change */
        for (int64_t t = -2147483648LL; t < 4133980800LL; t += 6 * 3600) {
            struct tm tm;
            localtime_r(&(time_t){(time_t)t}, &tm);
            int32_t off = ta_tz_offset(tz, t);
            if (off != (int32_t)tm.tm_gmtoff)
                fail_msg("%s at %lld: %d, the C library says %ld", zones[z], (long long)t, off,
                         tm.tm_gmtoff);
            if (prev != INT32_MIN && off != prev) {
                for (int64_t u = t - 6 * 3600; u <= t; u += 900) {
                    localtime_r(&(time_t){(time_t)u}, &tm);
                    if (ta_tz_offset(tz, u) != (int32_t)tm.tm_gmtoff)
                        fail_msg("%s at %lld: %d, the C library says %ld", zones[z], (long long)u,
                                 ta_tz_offset(tz, u), tm.tm_gmtoff);
                }
            }
            prev = off;
        }
        ta_tz_free(tz);
    }
    unsetenv("TZ");
    tzset();
    /* civil dates both ways */
    for (int64_t d = -800000; d < 800000; d += 97) {
        int y, m, dd;
        ta_tz_civil(d, &y, &m, &dd);
        assert_int_equal(ta_tz_days(y, m, dd), d);
    }
    int y, m, dd;
    ta_tz_civil(20790, &y, &m, &dd);
    assert_true(y == 2026 && m == 12 && dd == 3);
}

static void test_quota_lookup(void **state)
{
    fx_t *f = *state;
    json_t *j;
    long long qc;

    mk_data(f);
    /* a quota that never existed: 404 on both */
    j = get(f, 404, "/api/admin/quotas/999/requests/");
    assert_string_equal(jstr(json_object_get(j, "error"), "type"), "not_found_error");
    get(f, 404, "/api/admin/quotas/999/statistics/");
    get(f, 404, "/api/admin/quotas/0/statistics/");
    /* a quota without records: an empty answer, not 404 */
    j = post(f, 201, "/api/admin/quotas/", "{\"user_id\":%lld,\"group_id\":1}", f->u1);
    qc = jint(j, "id");
    j = get(f, 200, "/api/admin/quotas/%lld/requests/", qc);
    assert_int_equal(jint(j, "count"), 0);
    j = get(f, 200, "/api/admin/quotas/%lld/statistics/", qc);
    assert_int_equal(jint(json_object_get(j, "totals"), "requests"), 0);
    /* a deleted quota keeps its records, and they stay reachable */
    call(f, "DELETE", "/api/admin/quotas/2/", NULL, f->admin_tok);
    assert_int_equal(f->qb, 2);
    assert_int_equal(f->status, 204);
    get(f, 404, "/api/admin/quotas/%lld/", f->qb);
    j = get(f, 200, "/api/admin/quotas/%lld/requests/", f->qb);
    assert_int_equal(jint(j, "count"), 3);
    j = get(f, 200, "/api/admin/quotas/%lld/statistics/?group_by=model", f->qb);
    assert_int_equal(jint(json_object_get(j, "totals"), "requests"), 3);
    /* a deleted quota without records is unknown */
    call(f, "DELETE", "/api/admin/quotas/3/", NULL, f->admin_tok);
    assert_int_equal(qc, 3);
    get(f, 404, "/api/admin/quotas/%lld/requests/", qc);
}

static void test_bad_params(void **state)
{
    fx_t *f = *state;
    json_t *j;
    char url[512];

    mk_data(f);
    static const struct {
        const char *url, *param;
    } cases[] = {
        {"/api/admin/requests/?since=yesterday", "since"},
        {"/api/admin/requests/?since=2026-11-32", "since"},
        {"/api/admin/requests/?until=2026-13-01T00:00:00Z", "until"},
        {"/api/admin/requests/?until=1969-12-31T23:59:59Z", "until"},
        {"/api/admin/requests/?since=9999-01-01", "since"},
        {"/api/admin/requests/?since=2026-11-26&until=2026-11-26", "until"},
        {"/api/admin/requests/?since=2026-11-26&until=2026-11-25T23:00:00Z", "until"},
        {"/api/admin/requests/?status=abc", "status"},
        {"/api/admin/requests/?status=99", "status"},
        {"/api/admin/requests/?status=600", "status"},
        {"/api/admin/requests/?status=2000", "status"},
        {"/api/admin/requests/?status=-20", "status"},
        {"/api/admin/requests/?status=20a", "status"},
        {"/api/admin/requests/?user_id=0", "user_id"},
        {"/api/admin/requests/?user_id=x", "user_id"},
        {"/api/admin/requests/?quota_id=-1", "quota_id"},
        {"/api/admin/requests/?model=%ff", "model"},
        {"/api/admin/requests/?model=%zz", "model"},
        {"/api/admin/quotas/1/requests/?status=x", "status"},
        {"/api/admin/quotas/1/requests/?since=x", "since"},
        {"/api/admin/statistics/?group_by=week", "group_by"},
        {"/api/admin/statistics/?group_by=", "group_by"},
        {"/api/admin/statistics/?group_by=dayyyyyyyyyyyyyyyyyyyyyyy", "group_by"},
        {"/api/admin/statistics/?since=x", "since"},
        {"/api/admin/statistics/?until=2026-11-25&since=2026-11-26", "until"},
        {"/api/admin/statistics/?user_id=abc", "user_id"},
        {"/api/admin/statistics/?quota_id=0", "quota_id"},
        {"/api/admin/quotas/1/statistics/?group_by=user", "group_by"},
        {"/api/admin/quotas/1/statistics/?group_by=DAY", "group_by"},
        {"/api/admin/quotas/1/statistics/?until=x", "until"},
    };
    for (size_t i = 0; i < TA_ARRAY_SIZE(cases); i++) {
        if (strcmp(cases[i].url, "/api/admin/statistics/?group_by=") == 0) {
            /* an empty group_by is the default, like an empty filter elsewhere */
            get(f, 200, "%s", cases[i].url);
            continue;
        }
        j = get(f, 400, "%s", cases[i].url);
        assert_param(j, cases[i].param);
    }
    /* a model name longer than any model */
    memset(url, 0, sizeof(url));
    snprintf(url, sizeof(url), "/api/admin/requests/?model=");
    memset(url + strlen(url), 'm', 200);
    j = get(f, 400, "%s", url);
    assert_param(j, "model");
}

static void test_access(void **state)
{
    fx_t *f = *state;
    json_t *j;
    static const char *const urls[] = {"/api/admin/requests/", "/api/admin/statistics/",
                                       "/api/admin/quotas/1/requests/",
                                       "/api/admin/quotas/1/statistics/"};

    mk_data(f);
    j = call(f, "POST", "/api/auth/login/",
             "{\"email\":\"u1@example.com\",\"password\":\"password-u1\"}", NULL);
    assert_int_equal(f->status, 200);
    char *utok = strdup(jstr(j, "access_token"));
    for (size_t i = 0; i < TA_ARRAY_SIZE(urls); i++) {
        call(f, "GET", urls[i], NULL, NULL);
        assert_int_equal(f->status, 401);
        call(f, "GET", urls[i], NULL, utok);
        assert_int_equal(f->status, 403);
        call(f, "POST", urls[i], "{}", f->admin_tok);
        assert_int_equal(f->status, 405);
        assert_string_equal(f->allow, "GET");
        call(f, "DELETE", urls[i], NULL, f->admin_tok);
        assert_int_equal(f->status, 405);
    }
    free(utok);
}

/* audit export --format csv: text cells that a spreadsheet would run as a
 * formula get a leading single quote; numbers, money and times stay as they
 * are (a negative amount is still a number). */
static void test_csv_formula_cells(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cells[] = {
        {"=HYPERLINK(\"http://x\",\"y\")", "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\""},
        {"+1+2", "\"'+1+2\""},
        {"-2+3", "\"'-2+3\""},
        {"@SUM(A1)", "\"'@SUM(A1)\""},
        {"\tx", "\"'\tx\""},
        {"\rx", "\"'\rx\""},
        {"gpt-4o", "\"gpt-4o\""},
        {"a=b", "\"a=b\""},
        {"", "\"\""},
    };
    for (size_t i = 0; i < TA_ARRAY_SIZE(cells); i++) {
        ta_audit_t r;
        char *buf = NULL, want[256];
        size_t len = 0;
        memset(&r, 0, sizeof(r));
        snprintf(r.model, sizeof(r.model), "%s", cells[i].in);
        snprintf(r.served_model, sizeof(r.served_model), "%s", cells[i].in);
        snprintf(r.client_ip, sizeof(r.client_ip), "%s", cells[i].in);
        snprintf(r.key_prefix, sizeof(r.key_prefix), "%.15s", cells[i].in);
        r.cost = -1500000000; /* "-1.5": money is no text cell */
        r.ticket = 7;
        FILE *out = open_memstream(&buf, &len);
        assert_non_null(out);
        assert_int_equal(ta_audit_csv_line(out, &r), 0);
        fclose(out);
        /* columns in descriptor order: find each text one by name */
        size_t col = 0;
        char *p = buf;
        for (size_t k = 0; k < ta_desc_audit.nfields; k++) {
            const ta_field_t *fd = &ta_desc_audit.fields[k];
            char *start = p;
            bool quoted = *p == '"';
            if (quoted) {
                for (p++; !(*p == '"' && p[1] != '"'); p++)
                    if (*p == '"')
                        p++;
                p++;
            } else {
                while (*p != ',' && *p != '\n')
                    p++;
            }
            size_t n = (size_t)(p - start);
            if (strcmp(fd->name, "model") == 0 || strcmp(fd->name, "served_model") == 0 ||
                strcmp(fd->name, "client_ip") == 0) {
                snprintf(want, sizeof(want), "%s", cells[i].out);
                if (n != strlen(want) || memcmp(start, want, n) != 0)
                    fail_msg("%s: got %.*s, want %s", fd->name, (int)n, start, want);
            } else if (strcmp(fd->name, "cost") == 0) {
                assert_int_equal(n, strlen("\"-1.5\""));
                assert_memory_equal(start, "\"-1.5\"", n);
            } else if (strcmp(fd->name, "ticket") == 0) {
                assert_int_equal(n, 1);
                assert_memory_equal(start, "7", 1);
            }
            col++;
            assert_int_equal(*p, k + 1 < ta_desc_audit.nfields ? ',' : '\n');
            p++;
        }
        assert_int_equal(col, ta_desc_audit.nfields);
        assert_int_equal(*p, '\0');
        free(buf);
    }
}

/* ---- the costliest users: user_cost against the aggregate rows ------------- */

#define TOP_USERS 7000 /* 28,000 user rows: more than one transaction of the upgrade */
#define TOP_H0 "2026-11-20T00:00:00Z"

/* User 1000 + u's cost in hour h (0..4) of TOP_H0, in nano-units; 0 with
 * no request. Hour 0 holds every user (pages of user_cost entries),
 * hour 1 one user alone, hours 2-4 a third each; costs tie in places. */
static int64_t top_cost(int u, int h)
{
    switch (h) {
    case 0: return (int64_t)(u % 37) * 1000;
    case 1: return u == 5 ? 5000000 : -1;
    default: return u % 3 == h - 2 ? (int64_t)(u % 11) * 777 : -1;
    }
}

static void top_put(fx_t *f)
{
    MDB_txn *txn;
    int n = 0;
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_AUDIT, true, &txn), 0);
    /* users in a scrambled order (an entry goes before, between and after
     * others); each (user, hour) twice, so its entry is made, then added to */
    for (int i = 0; i < TOP_USERS; i++) {
        int u = (int)((i * 7919L) % TOP_USERS);
        for (int h = 0; h < 5; h++) {
            int64_t c = top_cost(u, h);
            if (c < 0)
                continue;
            for (int m = 0; m < 2; m++) { /* two models: two aggregate rows, one entry */
                ta_audit_t a;
                memset(&a, 0, sizeof(a));
                rid_of(5000 + n++, a.request_id);
                a.t_received_ns = t_ns(TOP_H0) + (int64_t)h * 3600 * 1000000000LL + u * 1000LL + m;
                a.user_id = 1000 + (uint64_t)u;
                a.quota_id = 5000 + (uint64_t)u;
                a.model_id = (uint64_t)(m == 0 ? f->m1 : f->m2);
                a.status = 200;
                a.prompt_tokens = 1;
                a.cost = m == 0 ? c - c / 3 : c / 3;
                assert_int_equal(ta_audit_put(f->st, txn, &a, (uint64_t)f->g1), 0);
            }
        }
    }
    /* two costly users on the edges of the wide ranges below: each is
     * ranked first exactly when their hour is counted */
    static const struct {
        const char *t;
        uint64_t user;
        int64_t cost;
    } edge[] = {{"2026-11-27T05:00:00Z", 77777, 10000000000},
                {"2026-11-26T15:00:00Z", 88888, 20000000000},
                /* a big spender long ago, and a little on 11-27: ranked by
                 * the little in a range from 11-26 on */
                {"2026-11-21T10:00:00Z", 66666, 100000000000},
                {"2026-11-27T02:00:00Z", 66666, 500000000}};
    for (size_t i = 0; i < TA_ARRAY_SIZE(edge); i++) {
        ta_audit_t a;
        memset(&a, 0, sizeof(a));
        rid_of(90000 + (int)i, a.request_id);
        a.t_received_ns = t_ns(edge[i].t);
        a.user_id = edge[i].user;
        a.status = 200;
        a.cost = edge[i].cost;
        assert_int_equal(ta_audit_put(f->st, txn, &a, (uint64_t)f->g1), 0);
    }
    assert_int_equal(ta_txn_commit(txn), 0);
}

static void set_version(fx_t *f, uint64_t v)
{
    MDB_txn *txn;
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_AUDIT, true, &txn), 0);
    assert_int_equal(ta_meta_put_u64(f->st, txn, TA_ENV_AUDIT, "aggregates_version", v), 0);
    assert_int_equal(ta_txn_commit(txn), 0);
}

/* The expected ranking of hours [h0, h1]: users by cost, then id; reqs:
 * their requests (two per hour with one). */
static int top_expect(int h0, int h1, int *order, int64_t *cost, int *reqs)
{
    int n = 0;
    for (int u = 0; u < TOP_USERS; u++) {
        int64_t sum = 0;
        int hours = 0;
        for (int h = h0; h <= h1; h++)
            if (top_cost(u, h) >= 0)
                sum += top_cost(u, h), hours++;
        if (hours == 0)
            continue;
        int i = n++;
        for (; i > 0 && cost[i - 1] < sum; i--) /* ids ascend among ties */
            order[i] = order[i - 1], cost[i] = cost[i - 1], reqs[i] = reqs[i - 1];
        order[i] = u, cost[i] = sum, reqs[i] = 2 * hours;
    }
    return n;
}

/* The answer of group_by=user&limit= over hours [h0, h1] against the records'. */
static void top_check(fx_t *f, const char *range, int h0, int h1, int limit)
{
    int order[TOP_USERS], reqs[TOP_USERS], n;
    int64_t cost[TOP_USERS];
    char want[TA_NANO_STRLEN];
    n = top_expect(h0, h1, order, cost, reqs);
    json_t *j = get(f, 200, "/api/admin/statistics/?group_by=user&limit=%d%s", limit, range);
    json_t *s = json_object_get(j, "series");
    assert_int_equal(jint(json_object_get(j, "top"), "of"), n);
    assert_int_equal(jint(json_object_get(j, "top"), "limit"), limit);
    assert_int_equal(json_array_size(s), n < limit ? n : limit);
    for (size_t i = 0; i < json_array_size(s); i++) {
        json_t *e = json_array_get(s, i);
        if (jint(e, "user_id") != 1000 + order[i])
            fail_msg("%s rank %zu: user %lld, want %d", range, i, jint(e, "user_id"), 1000 + order[i]);
        assert_string_equal(jstr(e, "cost"), ta_nano_format(cost[i], want));
        assert_int_equal(jint(e, "requests"), reqs[i]);
    }
}

/* group_by=user ranks users from user_cost (aggregates_version 3) or, in a
 * directory whose user_cost is not made yet, from every user's rows: both
 * give the same answer, the one the records give. */
static void test_statistics_top_users(void **state)
{
    fx_t *f = *state;
    mk_data(f);
    top_put(f);
    static const struct {
        const char *range;
        int h0, h1;
    } ranges[] = {
        {"&since=2026-11-20T00:00:00Z&until=2026-11-20T01:00:00Z", 0, 0},
        {"&since=2026-11-20T01:00:00Z&until=2026-11-20T02:00:00Z", 1, 1},
        {"&since=2026-11-20T00:30:00Z&until=2026-11-20T05:00:00Z", 0, 4},
        {"&since=2026-11-20T02:00:00Z&until=2026-11-20T04:59:59Z", 2, 4},
        /* every day of the data: user_cum's day 11-27 plus an hour (pass 1),
         * or day 11-29 minus a day (pass 3), is cheaper than the hours */
        {"&since=2026-11-19&until=2026-11-28", -1, -1},
        /* to noon of 11-26: day 11-27 minus the 12 hours before it */
        {"&since=2026-11-19&until=2026-11-26T12:00:00Z", -1, -1},
        /* from noon of 11-26 (day 11-26 plus 12 hours) to the end */
        {"&since=2026-11-26T12:00:00Z&until=2026-11-28", -1, -1},
        {"&since=2026-11-26T12:00:00Z&until=2026-11-27T03:00:00Z", -1, -1},
        {"&since=2026-11-20T03:00:00Z&until=2026-11-26T20:00:00Z", -1, -1},
    };
    char *slow[TA_ARRAY_SIZE(ranges)][3];
    /* pass 0: the rows (version 2); 1: user_cost and user_cum as billing
     * wrote them; 2: user_cost made by the upgrade from the user rows, after
     * emptying it (no user_cum); 3: and user_cum made by the next request's
     * flush (a day after every range) from the hours */
    for (int pass = 0; pass < 4; pass++) {
        if (pass < 2)
            set_version(f, pass == 0 ? 2 : 4);
        if (pass == 3) {
            MDB_txn *txn;
            ta_audit_t a;
            memset(&a, 0, sizeof(a));
            rid_of(99999, a.request_id);
            a.t_received_ns = t_ns("2026-11-29T10:00:00Z");
            a.user_id = 424242;
            a.status = 200;
            a.cost = 5;
            assert_int_equal(ta_txn_begin(f->st, TA_ENV_AUDIT, true, &txn), 0);
            assert_int_equal(ta_audit_put(f->st, txn, &a, (uint64_t)f->g1), 0);
            assert_int_equal(ta_txn_commit(txn), 0);
        }
        if (pass == 2) {
            MDB_txn *txn;
            uint64_t ver = 0;
            assert_int_equal(ta_txn_begin(f->st, TA_ENV_AUDIT, true, &txn), 0);
            assert_int_equal(mdb_drop(txn, ta_store_dbi(f->st, TA_DB_AUDIT_USER_COST), 0), 0);
            assert_int_equal(ta_meta_put_u64(f->st, txn, TA_ENV_AUDIT, "aggregates_version", 2), 0);
            assert_int_equal(ta_txn_commit(txn), 0);
            assert_int_equal(ta_audit_upgrade(f->st), 0);
            assert_int_equal(ta_txn_begin(f->st, TA_ENV_AUDIT, false, &txn), 0);
            assert_int_equal(ta_meta_get_u64(f->st, txn, TA_ENV_AUDIT, "aggregates_version", &ver), 0);
            ta_txn_abort(txn);
            assert_int_equal(ver, 4);
        }
        for (size_t r = 0; r < TA_ARRAY_SIZE(ranges); r++) {
            /* each range as the server picks, from the hours, from user_cum
             * merged, from user_cum in a table */
            for (int plan = 0; plan < (pass == 0 ? 1 : 4); plan++) {
                ta_audit_rank_plan = plan;
                for (int l = 0; l < 3; l++) {
                    int limit = l == 0 ? 1 : l == 1 ? 7 : 1000;
                    json_t *j = get(f, 200, "/api/admin/statistics/?group_by=user&limit=%d%s", limit,
                                    ranges[r].range);
                    char *d = json_dumps(j, JSON_SORT_KEYS);
                    if (ranges[r].h0 >= 0)
                        top_check(f, ranges[r].range, ranges[r].h0, ranges[r].h1, limit);
                    if (pass == 0) {
                        slow[r][l] = d;
                        continue;
                    }
                    if (strcmp(d, slow[r][l]) != 0)
                        fail_msg("pass %d, plan %d, %s limit %d: user_cost answered\n%.400s\nthe rows\n%.400s",
                                 pass, plan, ranges[r].range, limit, d, slow[r][l]);
                    free(d);
                }
            }
        }
    }
    ta_audit_rank_plan = TA_RANK_AUTO;
    for (size_t r = 0; r < TA_ARRAY_SIZE(ranges); r++)
        free(slow[r][0]), free(slow[r][1]), free(slow[r][2]);

    /* ledger verify's check: none, then one user's entry a nano-unit off */
    MDB_txn *txn;
    MDB_cursor *cur;
    char *buf = NULL;
    size_t len = 0;
    int ndiff = 0;
    FILE *out = open_memstream(&buf, &len);
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_AUDIT, false, &txn), 0);
    assert_int_equal(ta_audit_user_cost_verify(f->st, txn, 0, out, &ndiff), 0);
    ta_txn_abort(txn);
    assert_int_equal(ndiff, 0);
    uint8_t hk[4], dv[TA_USER_COST_LEN];
    uint32_t h = (uint32_t)(t_ns(TOP_H0) / 3600000000000LL);
    hk[0] = (uint8_t)(h >> 24), hk[1] = (uint8_t)(h >> 16), hk[2] = (uint8_t)(h >> 8), hk[3] = (uint8_t)h;
    memset(dv, 0, sizeof(dv));
    for (int i = 0; i < 8; i++) /* user 1300, big-endian, then a cost of 0 */
        dv[i] = (uint8_t)(1300ULL >> (56 - 8 * i));
    MDB_val k = {sizeof(hk), hk}, v = {sizeof(dv), dv};
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_AUDIT, true, &txn), 0);
    assert_int_equal(mdb_cursor_open(txn, ta_store_dbi(f->st, TA_DB_AUDIT_USER_COST), &cur), 0);
    assert_int_equal(mdb_cursor_get(cur, &k, &v, MDB_GET_BOTH_RANGE), 0);
    assert_memory_equal(v.mv_data, dv, 8);
    memcpy(dv, v.mv_data, sizeof(dv));
    dv[15]++;
    k.mv_size = sizeof(hk), k.mv_data = hk;
    v.mv_size = sizeof(dv), v.mv_data = dv;
    assert_int_equal(mdb_cursor_put(cur, &k, &v, MDB_CURRENT), 0);
    mdb_cursor_close(cur);
    assert_int_equal(ta_txn_commit(txn), 0);
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_AUDIT, false, &txn), 0);
    assert_int_equal(ta_audit_user_cost_verify(f->st, txn, 0, out, &ndiff), 0);
    ta_txn_abort(txn);
    fclose(out);
    assert_int_equal(ndiff, 2); /* the hour's entry, and the day made from it */
    assert_non_null(strstr(buf, "DIFF user_cost of user 1300:"));
    assert_non_null(strstr(buf, "DIFF user_cum of user 1300 "));
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_record_shape),
        T(test_filters),
        T(test_pagination),
        T(test_statistics),
        T(test_statistics_tz),
        T(test_quota_lookup),
        T(test_bad_params),
        T(test_access),
        T(test_statistics_top_users),
#undef T
        cmocka_unit_test(test_csv_formula_cells),
        cmocka_unit_test(test_tz_offsets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
