/*
 * test_schema.c - the record engine (binary codec, JSON in/out, validation,
 * defaults), and the rest of ta.c: time, UTF-8, errors, logging.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "schema.h"
#include "schema/audit_records.h"

/* ---- sample records: every field set to a non-default value ------------- */

static void sample_user(ta_user_t *u)
{
    ta_rec_defaults(&ta_desc_user, u);
    u->id = 42;
    snprintf(u->email, sizeof(u->email), "alice@example.com");
    snprintf(u->name, sizeof(u->name), "Alice Ł. Öhrn");
    u->role = TA_ROLE_SUPERADMIN;
    u->is_active = false;
    memset(u->pwhash, 0xAB, 100);
    u->pwhash_len = 100;
    u->created_at = 1795698557;
    u->updated_at = 1795698560;
}

static void sample_provider(ta_provider_t *p)
{
    ta_rec_defaults(&ta_desc_provider, p);
    p->id = 7;
    snprintf(p->name, sizeof(p->name), "claude");
    p->type = TA_PROVIDER_ANTHROPIC;
    snprintf(p->base_url, sizeof(p->base_url), "https://api.anthropic.com/v1");
    for (int i = 0; i < 600; i++)
        p->key_sealed[i] = (uint8_t)i;
    p->key_sealed_len = 600;
    snprintf(p->api_key_last4, sizeof(p->api_key_last4), "abcd");
    p->api_key_set = true;
    p->timeout_s = 120;
    p->connect_timeout_ms = 2500;
    p->is_active = true;
    p->created_at = 1;
    p->updated_at = 2;
}

static void sample_model(ta_model_t *m)
{
    ta_rec_defaults(&ta_desc_model, m);
    m->id = 3;
    snprintf(m->name, sizeof(m->name), "gpt-4o-mini");
    for (int i = 0; i < TA_MODEL_MAX_ROUTES; i++) {
        m->routes[i].provider_id = (uint64_t)(i + 1);
        snprintf(m->routes[i].upstream_name, sizeof(m->routes[i].upstream_name), "upstream-%d", i);
        m->routes[i].priority = i * 10;
        m->routes[i].weight = i + 1;
        m->routes[i].upstream_missing = i == 2;
    }
    m->nroutes = TA_MODEL_MAX_ROUTES;
    m->input_price = 150000000;     /* 0.15 */
    m->output_price = 600000000;    /* 0.6 */
    m->cache_read_price = 75000000; /* 0.075 */
    m->cache_write_price = 1;
    m->has_prices = true;
    m->capabilities = TA_CAP_CHAT | TA_CAP_VISION | TA_CAP_TOOLS | TA_CAP_COMPLETIONS;
    m->context_window = 128000;
    m->max_output_tokens = 16384;
    m->is_active = false;
    m->created_at = 100;
    m->updated_at = 200;
}

static void sample_limits(ta_limits_t *l)
{
    l->period = TA_PERIOD_WEEK;
    l->cost_limit = 25 * TA_NANO_PER_UNIT + 5;
    l->token_limit = 1000000;
    l->request_limit = 5000;
    l->rpm = 60;
    l->tpm = 100000;
    l->max_concurrency = 4;
    l->auto_renew = false;
    l->warn_at[0] = 50;
    l->warn_at[1] = 80;
    l->warn_at[2] = 95;
    l->warn_at[3] = 100;
    l->nwarn = 4;
}

static void sample_group(ta_group_t *g)
{
    ta_rec_defaults(&ta_desc_group, g);
    g->id = 9;
    snprintf(g->name, sizeof(g->name), "team-a");
    snprintf(g->description, sizeof(g->description), "models for team A\nsecond line");
    for (int i = 0; i < TA_GROUP_MAX_MODELS; i++)
        g->model_ids[i] = (uint64_t)(1000 + i);
    g->nmodels = TA_GROUP_MAX_MODELS;
    sample_limits(&g->default_quota);
    g->created_at = 5;
    g->updated_at = 6;
}

static void sample_quota(ta_quota_t *q)
{
    ta_rec_defaults(&ta_desc_quota, q);
    q->id = 11;
    q->user_id = 42;
    q->group_id = 9;
    sample_limits(&q->limits);
    q->expires_at = 1800000000;
    q->is_active = false;
    snprintf(q->key_prefix, sizeof(q->key_prefix), "sk-AbCdEfGh");
    memset(q->key_hash, 0x5A, 32);
    q->key_hash_len = 32;
    q->created_at = 7;
    q->updated_at = 8;
}

static void sample_keyrec(ta_keyrec_t *k)
{
    memset(k, 0, sizeof(*k));
    k->quota_id = 11;
    k->user_id = 42;
    k->created_at = 1795698557;
}

static void sample_balance(ta_balance_t *b)
{
    memset(b, 0, sizeof(*b));
    b->quota_id = 11;
    b->period_start = 1795651200;
    b->cost_used = 123456789;
    b->cost_held = -1; /* internal fields are not bounded: the codec keeps whatever is there */
    b->tokens_used = 1000;
    b->tokens_held = 20;
    b->requests_used = 3;
    b->in_flight = 1;
    b->rpm_tat_ns = 1795698557000000001LL;
    b->tpm_tat_ns = INT64_MIN;
    b->warn_level = -1;
    b->settled_ticket = INT64_MAX;
}

static void sample_hold(ta_hold_t *h)
{
    memset(h, 0, sizeof(*h));
    for (int i = 0; i < 16; i++)
        h->request_id[i] = (uint8_t)(0xF0 + i);
    h->quota_id = 11;
    h->worker_pid = 4242;
    h->cost = 5000;
    h->tokens = 77;
    h->created_at_ns = 1795698557123456789LL;
    h->period_start = 1795651200;
}

static void sample_revoked(ta_revoked_t *r)
{
    r->expires_at = 1795698557;
}

typedef struct sample {
    const ta_recdesc_t *d;
    void (*fill)(void *);
} sample_t;

#define S(desc, fn) {&desc, (void (*)(void *))fn}
static const sample_t samples[] = {
    S(ta_desc_user, sample_user),       S(ta_desc_provider, sample_provider),
    S(ta_desc_model, sample_model),     S(ta_desc_group, sample_group),
    S(ta_desc_quota, sample_quota),     S(ta_desc_keyrec, sample_keyrec),
    S(ta_desc_balance, sample_balance), S(ta_desc_hold, sample_hold),
    S(ta_desc_revoked, sample_revoked),
};

static void *sample_new(const sample_t *s)
{
    void *r = calloc(1, s->d->size);
    assert_non_null(r);
    s->fill(r);
    return r;
}

static uint8_t *encode_new(const ta_recdesc_t *d, const void *rec, size_t *len)
{
    uint8_t *buf = malloc(TA_REC_MAX_ENCODED);
    assert_non_null(buf);
    int n = ta_rec_encode(d, rec, buf, TA_REC_MAX_ENCODED);
    assert_true(n > 4);
    *len = (size_t)n;
    return buf;
}

/* ---- binary codec --------------------------------------------------------- */

static void test_binary_roundtrip(void **state)
{
    (void)state;
    for (size_t i = 0; i < TA_ARRAY_SIZE(samples); i++) {
        const ta_recdesc_t *d = samples[i].d;
        void *a = sample_new(&samples[i]);
        void *b = malloc(d->size);
        size_t n;
        uint8_t *buf = encode_new(d, a, &n);
        assert_int_equal(buf[0], 'T');
        assert_int_equal(buf[1], d->rectype);
        assert_int_equal(buf[2] | buf[3] << 8, d->version);
        assert_int_equal(ta_rec_decode(d, buf, n, b), 0);
        if (memcmp(a, b, d->size) != 0)
            fail_msg("%s: decode(encode(x)) != x", d->name);
        /* encoding is deterministic */
        size_t n2;
        uint8_t *buf2 = encode_new(d, b, &n2);
        assert_int_equal(n, n2);
        assert_memory_equal(buf, buf2, n);
        free(buf2);
        free(buf);
        free(a);
        free(b);
    }
}

static void test_binary_zero_record(void **state)
{
    (void)state;
    /* an all-zero record is the header plus the end marker */
    ta_model_t m = {0}, back;
    uint8_t buf[64];
    int n = ta_rec_encode(&ta_desc_model, &m, buf, sizeof(buf));
    assert_int_equal(n, 7);
    assert_int_equal(ta_rec_decode(&ta_desc_model, buf, (size_t)n, &back), 0);
    assert_memory_equal(&m, &back, sizeof(m));
}

static void test_decode_every_prefix(void **state)
{
    (void)state;
    for (size_t i = 0; i < TA_ARRAY_SIZE(samples); i++) {
        const ta_recdesc_t *d = samples[i].d;
        void *a = sample_new(&samples[i]);
        void *b = malloc(d->size);
        size_t n;
        uint8_t *buf = encode_new(d, a, &n);
        for (size_t k = 0; k < n; k++) {
            /* an exact-size copy so ASan sees any read past the prefix */
            uint8_t *cut = malloc(k ? k : 1);
            memcpy(cut, buf, k);
            int rc = ta_rec_decode(d, cut, k, b);
            if (rc != TA_ECORRUPT)
                fail_msg("%s: prefix %zu of %zu gave %d", d->name, k, n, rc);
            /* a failed decode leaves a zeroed record */
            for (size_t z = 0; z < d->size; z++)
                assert_int_equal(((uint8_t *)b)[z], 0);
            free(cut);
        }
        /* one byte too many is garbage too */
        uint8_t *longer = malloc(n + 1);
        memcpy(longer, buf, n);
        longer[n] = 0;
        assert_int_equal(ta_rec_decode(d, longer, n + 1, b), TA_ECORRUPT);
        free(longer);
        assert_int_equal(ta_rec_decode(d, NULL, 0, b), TA_ECORRUPT);
        free(buf);
        free(a);
        free(b);
    }
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Whatever a decode accepts must be safe to print, validate and re-encode. */
static void use_decoded(const ta_recdesc_t *d, void *rec)
{
    ta_err_t err;
    json_t *j = ta_rec_to_json(d, rec, TA_JSON_DUMP);
    assert_non_null(j);
    char *s = json_dumps(j, JSON_COMPACT);
    assert_non_null(s);
    free(s);
    json_decref(j);
    (void)ta_rec_validate(d, rec, &err);
    uint8_t *buf = malloc(TA_REC_MAX_ENCODED);
    int n = ta_rec_encode(d, rec, buf, TA_REC_MAX_ENCODED);
    assert_true(n > 0);
    free(buf);
}

static void test_decode_garbage(void **state)
{
    (void)state;
    for (size_t i = 0; i < TA_ARRAY_SIZE(samples); i++) {
        const ta_recdesc_t *d = samples[i].d;
        void *a = sample_new(&samples[i]);
        void *b = malloc(d->size);
        size_t n;
        uint8_t *buf = encode_new(d, a, &n);
        /* every single-bit flip of a valid encoding */
        uint8_t *m = malloc(n);
        for (size_t bit = 0; bit < n * 8; bit++) {
            memcpy(m, buf, n);
            m[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            int rc = ta_rec_decode(d, m, n, b);
            assert_true(rc == 0 || rc == TA_ECORRUPT || rc == TA_ESCHEMA);
            if (rc == 0)
                use_decoded(d, b);
        }
        /* random bytes behind a valid header */
        for (int round = 0; round < 300; round++) {
            size_t len = 4 + rng() % 200;
            uint8_t *g = malloc(len);
            for (size_t k = 0; k < len; k++)
                g[k] = (uint8_t)rng();
            g[0] = 'T';
            g[1] = d->rectype;
            g[2] = (uint8_t)d->version;
            g[3] = 0;
            /* bias towards known tags and small lengths to get past the first field */
            for (size_t k = 4; k + 3 <= len; k += 3 + (rng() % 12)) {
                g[k] = d->fields[rng() % d->nfields].tag;
                g[k + 1] = (uint8_t)(rng() % 16);
                g[k + 2] = 0;
            }
            int rc = ta_rec_decode(d, g, len, b);
            assert_true(rc == 0 || rc == TA_ECORRUPT || rc == TA_ESCHEMA);
            if (rc == 0)
                use_decoded(d, b);
            free(g);
        }
        free(m);
        free(buf);
        free(a);
        free(b);
    }
}

/* The same engine drives the audit environment's records (audit_records.c):
 * random well-framed bytes must never crash their decode either. */
static void test_decode_garbage_audit(void **state)
{
    (void)state;
    const ta_recdesc_t *ds[] = {&ta_desc_audit, &ta_desc_daily, &ta_desc_warning};
    for (size_t i = 0; i < TA_ARRAY_SIZE(ds); i++) {
        const ta_recdesc_t *d = ds[i];
        void *b = malloc(d->size);
        for (int round = 0; round < 2000; round++) {
            size_t len = 4 + rng() % 300;
            uint8_t *g = malloc(len);
            for (size_t k = 0; k < len; k++)
                g[k] = (uint8_t)rng();
            g[0] = 'T', g[1] = d->rectype, g[2] = (uint8_t)d->version, g[3] = 0;
            size_t k = 4;
            while (k + 3 <= len) {
                const ta_field_t *f = &d->fields[rng() % d->nfields];
                size_t n = rng() % 3 ? (f->size <= 8 ? f->size : rng() % 40) : rng() % 20;
                if (k + 3 + n > len)
                    break;
                g[k] = f->tag, g[k + 1] = (uint8_t)n, g[k + 2] = 0;
                if (f->type == TA_FT_BOOL || f->type == TA_FT_ENUM)
                    g[k + 3] = (uint8_t)(rng() % 3);
                k += 3 + n;
            }
            if (rng() % 2 && k + 3 <= len) { /* often a proper end marker */
                g[k] = 0, g[k + 1] = 0, g[k + 2] = 0;
                len = k + 3;
            }
            int rc = ta_rec_decode(d, g, len, b);
            assert_true(rc == 0 || rc == TA_ECORRUPT || rc == TA_ESCHEMA);
            if (rc == 0)
                use_decoded(d, b);
            free(g);
        }
        free(b);
    }
}

static void test_decode_version_and_type(void **state)
{
    (void)state;
    ta_user_t u, back;
    sample_user(&u);
    size_t n;
    uint8_t *buf = encode_new(&ta_desc_user, &u, &n);
    /* newer version */
    buf[2] = (uint8_t)(ta_desc_user.version + 1);
    assert_int_equal(ta_rec_decode(&ta_desc_user, buf, n, &back), TA_ESCHEMA);
    buf[2] = 0;
    buf[3] = 1; /* version 256 */
    assert_int_equal(ta_rec_decode(&ta_desc_user, buf, n, &back), TA_ESCHEMA);
    /* an older version (0) of the same record reads fine */
    buf[3] = 0;
    assert_int_equal(ta_rec_decode(&ta_desc_user, buf, n, &back), 0);
    buf[2] = (uint8_t)ta_desc_user.version;
    /* another record type */
    ta_provider_t pback;
    assert_int_equal(ta_rec_decode(&ta_desc_provider, buf, n, &pback), TA_ESCHEMA);
    /* bad magic */
    buf[0] = 'X';
    assert_int_equal(ta_rec_decode(&ta_desc_user, buf, n, &back), TA_ECORRUPT);
    free(buf);

    /* a newer nested route inside a model is refused the same way */
    ta_model_t m, mb;
    sample_model(&m);
    m.nroutes = 1;
    buf = encode_new(&ta_desc_model, &m, &n);
    /* find the nested route header: 'T', TA_REC_ROUTE, version */
    size_t k;
    for (k = 4; k + 2 < n; k++)
        if (buf[k] == 'T' && buf[k + 1] == TA_REC_ROUTE && buf[k + 2] == 1)
            break;
    assert_true(k + 2 < n);
    buf[k + 2] = 2;
    assert_int_equal(ta_rec_decode(&ta_desc_model, buf, n, &mb), TA_ESCHEMA);
    free(buf);
}

/* Insert a TLV with an unknown tag right before the end marker. */
static void test_decode_unknown_tag_skipped(void **state)
{
    (void)state;
    ta_quota_t q, back;
    sample_quota(&q);
    size_t n;
    uint8_t *buf = encode_new(&ta_desc_quota, &q, &n);
    uint8_t *ext = malloc(n + 3 + 5);
    memcpy(ext, buf, n - 3);
    size_t o = n - 3;
    ext[o++] = 250; /* a tag this build does not know */
    ext[o++] = 5;
    ext[o++] = 0;
    memcpy(ext + o, "hello", 5);
    o += 5;
    memcpy(ext + o, buf + n - 3, 3);
    o += 3;
    assert_int_equal(ta_rec_decode(&ta_desc_quota, ext, o, &back), 0);
    assert_memory_equal(&q, &back, sizeof(q));
    /* ...and also when it comes first */
    memcpy(ext, buf, 4);
    ext[4] = 251, ext[5] = 2, ext[6] = 0, ext[7] = 'h', ext[8] = 'i';
    memcpy(ext + 9, buf + 4, n - 4);
    assert_int_equal(ta_rec_decode(&ta_desc_quota, ext, n + 5, &back), 0);
    assert_memory_equal(&q, &back, sizeof(q));
    free(ext);
    free(buf);
}

/* Hand-made values that are well framed but wrong inside. */
static int decode_one(const ta_recdesc_t *d, uint8_t tag, const void *val, size_t vlen, void *rec)
{
    uint8_t b[600];
    size_t o = 0;
    b[o++] = 'T', b[o++] = d->rectype, b[o++] = (uint8_t)d->version, b[o++] = 0;
    b[o++] = tag, b[o++] = (uint8_t)vlen, b[o++] = (uint8_t)(vlen >> 8);
    memcpy(b + o, val, vlen);
    o += vlen;
    b[o++] = 0, b[o++] = 0, b[o++] = 0;
    return ta_rec_decode(d, b, o, rec);
}

static void test_decode_bad_values(void **state)
{
    (void)state;
    ta_user_t u;
    ta_model_t m;
    ta_group_t g;
    uint8_t two = 2, big = 9;
    assert_int_equal(decode_one(&ta_desc_user, 5, &two, 1, &u), TA_ECORRUPT); /* bool 2 */
    assert_int_equal(decode_one(&ta_desc_user, 4, &big, 1, &u), TA_ECORRUPT); /* enum 9 */
    assert_int_equal(decode_one(&ta_desc_user, 1, "1234567", 7, &u), TA_ECORRUPT); /* id width */
    assert_int_equal(decode_one(&ta_desc_user, 3, "a\0b", 3, &u), TA_ECORRUPT); /* NUL in string */
    /* bad UTF-8 is kept (a cut multi-byte name must stay readable), repaired in JSON */
    assert_int_equal(decode_one(&ta_desc_user, 3, "ok\xC0\x80\xE2\x82", 6, &u), 0);
    json_t *uj = ta_rec_to_json(&ta_desc_user, &u, TA_JSON_API);
    assert_non_null(uj);
    assert_string_equal(json_string_value(json_object_get(uj, "name")),
                        "ok\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
    json_decref(uj);
    ta_err_t ue;
    snprintf(u.email, sizeof(u.email), "a@b.co");
    assert_int_equal(ta_rec_validate(&ta_desc_user, &u, &ue), TA_EINVAL);
    assert_string_equal(ue.field, "name");
    assert_string_equal(ue.rule, "utf8");
    char longname[200];
    memset(longname, 'x', sizeof(longname));
    assert_int_equal(decode_one(&ta_desc_user, 3, longname, 128, &u), TA_ECORRUPT); /* no room for NUL */
    assert_int_equal(decode_one(&ta_desc_user, 3, longname, 127, &u), 0);
    assert_int_equal(strlen(u.name), 127);
    assert_int_equal(decode_one(&ta_desc_user, 6, longname, 129, &u), TA_ECORRUPT); /* bytes > size */
    uint8_t ids[257 * 8] = {0};
    assert_int_equal(decode_one(&ta_desc_group, 4, ids, 12, &g), TA_ECORRUPT); /* not a multiple of 8 */
    assert_int_equal(decode_one(&ta_desc_model, 3, "\x01", 1, &m), TA_ECORRUPT); /* element len cut */
    assert_int_equal(decode_one(&ta_desc_model, 3, "\x09\x00TT", 4, &m), TA_ECORRUPT);
    /* nine routes where eight fit */
    uint8_t routes[9 * 9];
    for (int i = 0; i < 9; i++) {
        uint8_t *r = routes + i * 9;
        r[0] = 7, r[1] = 0; /* element length 7: header + end marker */
        r[2] = 'T', r[3] = TA_REC_ROUTE, r[4] = 1, r[5] = 0, r[6] = 0, r[7] = 0, r[8] = 0;
    }
    assert_int_equal(decode_one(&ta_desc_model, 3, routes, 8 * 9, &m), 0);
    assert_int_equal(m.nroutes, 8);
    assert_int_equal(decode_one(&ta_desc_model, 3, routes, 9 * 9, &m), TA_ECORRUPT);
    /* a nested record of the wrong type */
    routes[3] = TA_REC_USER;
    assert_int_equal(decode_one(&ta_desc_model, 3, routes, 9, &m), TA_ESCHEMA);
    /* end marker with a length, and bytes after it */
    uint8_t hdr[] = {'T', TA_REC_USER, 1, 0, 0, 1, 0, 'x'};
    assert_int_equal(ta_rec_decode(&ta_desc_user, hdr, sizeof(hdr), &u), TA_ECORRUPT);
    uint8_t after[] = {'T', TA_REC_USER, 1, 0, 0, 0, 0, 'x'};
    assert_int_equal(ta_rec_decode(&ta_desc_user, after, sizeof(after), &u), TA_ECORRUPT);
    /* a field length running past the end */
    uint8_t over[] = {'T', TA_REC_USER, 1, 0, 3, 0xFF, 0xFF, 'a', 0, 0, 0};
    assert_int_equal(ta_rec_decode(&ta_desc_user, over, sizeof(over), &u), TA_ECORRUPT);
}

static void test_encode_bounds(void **state)
{
    (void)state;
    ta_model_t m;
    sample_model(&m);
    size_t n;
    uint8_t *buf = encode_new(&ta_desc_model, &m, &n);
    uint8_t *small = malloc(n);
    for (size_t cap = 0; cap < n; cap++)
        assert_int_equal(ta_rec_encode(&ta_desc_model, &m, small, cap), TA_ETOOBIG);
    assert_int_equal(ta_rec_encode(&ta_desc_model, &m, small, n), (int)n);
    assert_memory_equal(small, buf, n);
    free(small);
    free(buf);
    uint8_t out[TA_REC_MAX_ENCODED];
    ta_model_t bad = m;
    bad.nroutes = TA_MODEL_MAX_ROUTES + 1;
    assert_int_equal(ta_rec_encode(&ta_desc_model, &bad, out, sizeof(out)), TA_ETOOBIG);
    bad = m;
    memset(bad.name, 'x', sizeof(bad.name)); /* no terminating NUL */
    assert_int_equal(ta_rec_encode(&ta_desc_model, &bad, out, sizeof(out)), TA_ETOOBIG);
    ta_user_t u;
    sample_user(&u);
    u.pwhash_len = sizeof(u.pwhash) + 1;
    assert_int_equal(ta_rec_encode(&ta_desc_user, &u, out, sizeof(out)), TA_ETOOBIG);
}

/* ---- JSON ------------------------------------------------------------------ */

/* Copy the fields from_json never writes (READONLY, INTERNAL, SECRET, BYTES). */
static void copy_unwritable(const ta_recdesc_t *d, void *dst, const void *src)
{
    for (size_t i = 0; i < d->nfields; i++) {
        const ta_field_t *f = &d->fields[i];
        if (f->type == TA_FT_SUB_LIST && !(f->flags & (TA_FF_READONLY | TA_FF_INTERNAL | TA_FF_SECRET))) {
            for (uint16_t k = 0; k < f->max_count; k++) /* an element's own (route.upstream_missing) */
                copy_unwritable(f->sub, (uint8_t *)dst + f->offset + k * f->size,
                                (const uint8_t *)src + f->offset + k * f->size);
            continue;
        }
        if (!((f->flags & (TA_FF_READONLY | TA_FF_INTERNAL | TA_FF_SECRET)) || f->type == TA_FT_BYTES))
            continue;
        size_t sz = f->size;
        if (f->type == TA_FT_ID_LIST || f->type == TA_FT_I32_LIST || f->type == TA_FT_SUB_LIST)
            sz = f->size * f->max_count;
        memcpy((uint8_t *)dst + f->offset, (const uint8_t *)src + f->offset, sz);
        if (f->type == TA_FT_BYTES || sz != f->size)
            memcpy((uint8_t *)dst + f->len_offset, (const uint8_t *)src + f->len_offset, 2);
    }
}

static void test_json_roundtrip(void **state)
{
    (void)state;
    /* the API records: to_json -> from_json onto fresh defaults gives the same struct */
    for (size_t i = 0; i < 5; i++) {
        const ta_recdesc_t *d = samples[i].d;
        void *a = sample_new(&samples[i]);
        void *b = malloc(d->size);
        ta_rec_defaults(d, b);
        json_t *j = ta_rec_to_json(d, a, TA_JSON_API);
        assert_non_null(j);
        ta_err_t err = {0};
        int rc = ta_rec_from_json(d, j, b, TA_MERGE_CREATE, &err);
        if (rc != 0)
            fail_msg("%s: from_json(to_json(x)) failed: %s", d->name, err.message);
        copy_unwritable(d, b, a);
        if (d == &ta_desc_model)
            assert_true(((ta_model_t *)b)->has_prices);
        if (memcmp(a, b, d->size) != 0)
            fail_msg("%s: from_json(to_json(x)) != x", d->name);
        /* and through text */
        char *txt = json_dumps(j, JSON_COMPACT);
        json_t *j2 = json_loads(txt, 0, NULL);
        assert_non_null(j2);
        assert_true(json_equal(j, j2));
        free(txt);
        json_decref(j2);
        json_decref(j);
        free(a);
        free(b);
    }
}

static bool has_key(json_t *o, const char *k) { return json_object_get(o, k) != NULL; }

static void assert_keys(json_t *o, const char *const *keys)
{
    size_t n = 0;
    for (; keys[n]; n++)
        if (!has_key(o, keys[n]))
            fail_msg("missing key %s", keys[n]);
    if (json_object_size(o) != n) {
        char *s = json_dumps(o, JSON_COMPACT);
        fail_msg("extra keys in %s", s);
    }
}

static void test_json_shape(void **state)
{
    (void)state;
    ta_user_t u;
    ta_provider_t p;
    ta_model_t m;
    ta_group_t g;
    ta_quota_t q;
    sample_user(&u);
    sample_provider(&p);
    sample_model(&m);
    sample_group(&g);
    sample_quota(&q);
    static const char *const ukeys[] = {"id", "email", "name", "role", "is_active", "created_at",
                                        "updated_at", "token_gen", NULL};
    static const char *const pkeys[] = {"id", "name", "type", "base_url", "api_key_last4",
                                        "api_key_set", "timeout_s", "connect_timeout_ms",
                                        "is_active", "created_at", "updated_at", NULL};
    static const char *const mkeys[] = {"id", "name", "routes", "input_price", "output_price",
                                        "cache_read_price", "cache_write_price", "has_prices",
                                        "capabilities", "context_window", "max_output_tokens",
                                        "is_active", "created_at", "updated_at", "prices_set", NULL};
    static const char *const gkeys[] = {"id", "name", "description", "model_ids", "default_quota",
                                        "created_at", "updated_at", NULL};
    static const char *const lkeys[] = {"period", "cost_limit", "token_limit", "request_limit",
                                        "rpm", "tpm", "max_concurrency", "auto_renew", "warn_at", NULL};
    static const char *const qkeys[] = {"id", "user_id", "group_id", "period", "cost_limit",
                                        "token_limit", "request_limit", "rpm", "tpm",
                                        "max_concurrency", "auto_renew", "expires_at", "warn_at",
                                        "is_active", "key_prefix", "created_at", "updated_at", NULL};
    static const char *const rkeys[] = {"provider_id", "upstream_name", "priority", "weight",
                                        "upstream_missing", NULL};
    for (int mode = TA_JSON_API; mode <= TA_JSON_DUMP; mode++) {
        json_t *j = ta_rec_to_json(&ta_desc_user, &u, mode);
        assert_keys(j, ukeys);
        assert_string_equal(json_string_value(json_object_get(j, "role")), "superadmin");
        assert_string_equal(json_string_value(json_object_get(j, "created_at")), "2026-11-26T13:09:17Z");
        assert_string_equal(json_string_value(json_object_get(j, "name")), "Alice Ł. Öhrn");
        json_decref(j);
        j = ta_rec_to_json(&ta_desc_provider, &p, mode);
        assert_keys(j, pkeys); /* no key_sealed */
        assert_string_equal(json_string_value(json_object_get(j, "type")), "anthropic");
        json_decref(j);
        j = ta_rec_to_json(&ta_desc_model, &m, mode);
        assert_keys(j, mkeys);
        assert_string_equal(json_string_value(json_object_get(j, "input_price")), "0.15");
        assert_string_equal(json_string_value(json_object_get(j, "cache_write_price")), "0.000000001");
        json_t *caps = json_object_get(j, "capabilities");
        assert_int_equal(json_array_size(caps), 4);
        assert_string_equal(json_string_value(json_array_get(caps, 0)), "chat");
        assert_string_equal(json_string_value(json_array_get(caps, 1)), "vision");
        assert_string_equal(json_string_value(json_array_get(caps, 3)), "completions");
        json_t *r1 = json_array_get(json_object_get(j, "routes"), 1);
        assert_keys(r1, rkeys);
        assert_int_equal(json_integer_value(json_object_get(r1, "priority")), 10);
        json_decref(j);
        j = ta_rec_to_json(&ta_desc_group, &g, mode);
        assert_keys(j, gkeys);
        assert_keys(json_object_get(j, "default_quota"), lkeys);
        assert_int_equal(json_array_size(json_object_get(j, "model_ids")), TA_GROUP_MAX_MODELS);
        json_decref(j);
        j = ta_rec_to_json(&ta_desc_quota, &q, mode);
        assert_keys(j, qkeys); /* flattened limits, no key_hash */
        assert_string_equal(json_string_value(json_object_get(j, "period")), "week");
        assert_string_equal(json_string_value(json_object_get(j, "cost_limit")), "25.000000005");
        json_decref(j);
    }
    /* nullables and zero ids/times print as null */
    ta_quota_t z;
    ta_rec_defaults(&ta_desc_quota, &z);
    json_t *j = ta_rec_to_json(&ta_desc_quota, &z, TA_JSON_API);
    const char *nulls[] = {"id", "user_id", "cost_limit", "token_limit", "request_limit", "rpm",
                           "tpm", "max_concurrency", "expires_at", "created_at"};
    for (size_t i = 0; i < TA_ARRAY_SIZE(nulls); i++)
        if (!json_is_null(json_object_get(j, nulls[i])))
            fail_msg("%s should be null", nulls[i]);
    assert_string_equal(json_string_value(json_object_get(j, "period")), "month");
    assert_true(json_is_true(json_object_get(j, "auto_renew")));
    assert_true(json_is_true(json_object_get(j, "is_active")));
    assert_int_equal(json_array_size(json_object_get(j, "warn_at")), 0);
    json_decref(j);
    /* an unpriced model prints null prices; a priced one prints a zero price as "0" */
    ta_model_t mz;
    ta_rec_defaults(&ta_desc_model, &mz);
    snprintf(mz.name, sizeof(mz.name), "unpriced");
    j = ta_rec_to_json(&ta_desc_model, &mz, TA_JSON_API);
    assert_true(json_is_null(json_object_get(j, "input_price")));
    assert_true(json_is_null(json_object_get(j, "cache_write_price")));
    /* what was read, written back whole, keeps its meaning: still unpriced */
    ta_err_t e;
    assert_int_equal(ta_rec_from_json(&ta_desc_model, j, &mz, TA_MERGE_PUT, &e), 0);
    assert_false(mz.has_prices);
    json_decref(j);
    mz.has_prices = true;
    j = ta_rec_to_json(&ta_desc_model, &mz, TA_JSON_API);
    assert_string_equal(json_string_value(json_object_get(j, "input_price")), "0");
    json_decref(j);
    /* every price set to null makes it unpriced again; one null price alone does not */
    json_t *in = json_pack("{s:n}", "output_price");
    assert_int_equal(ta_rec_from_json(&ta_desc_model, in, &mz, TA_MERGE_PATCH, &e), 0);
    assert_true(mz.has_prices);
    json_decref(in);
    in = json_pack("{s:n,s:n,s:n,s:n}", "input_price", "output_price", "cache_read_price",
                   "cache_write_price");
    assert_int_equal(ta_rec_from_json(&ta_desc_model, in, &mz, TA_MERGE_PATCH, &e), 0);
    assert_false(mz.has_prices);
    json_decref(in);
}

static void test_json_internal_records(void **state)
{
    (void)state;
    ta_hold_t h;
    ta_balance_t b;
    sample_hold(&h);
    sample_balance(&b);
    json_t *j = ta_rec_to_json(&ta_desc_hold, &h, TA_JSON_DUMP);
    assert_string_equal(json_string_value(json_object_get(j, "request_id")),
                        "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
    assert_string_equal(json_string_value(json_object_get(j, "created_at_ns")), "2026-11-26T13:09:17.123Z");
    assert_string_equal(json_string_value(json_object_get(j, "cost")), "0.000005");
    assert_int_equal(json_integer_value(json_object_get(j, "worker_pid")), 4242);
    json_decref(j);
    j = ta_rec_to_json(&ta_desc_balance, &b, TA_JSON_DUMP);
    assert_int_equal(json_integer_value(json_object_get(j, "warn_level")), -1);
    assert_string_equal(json_string_value(json_object_get(j, "cost_held")), "-0.000000001");
    assert_string_equal(json_string_value(json_object_get(j, "period_start")), "2026-11-26T00:00:00Z");
    json_decref(j);
    /* internal records ignore every input key */
    ta_keyrec_t k = {0};
    json_t *in = json_pack("{s:i,s:i}", "quota_id", 5, "user_id", 6);
    assert_int_equal(ta_rec_from_json(&ta_desc_keyrec, in, &k, TA_MERGE_CREATE, NULL), 0);
    assert_int_equal(k.quota_id, 0);
    json_decref(in);
}

/* from_json on a fresh default record; returns rc, fills err. */
static int from_text(const ta_recdesc_t *d, const char *text, void *rec, int merge, ta_err_t *err)
{
    json_error_t jerr;
    json_t *in = json_loads(text, JSON_ALLOW_NUL, &jerr);
    if (!in)
        fail_msg("bad test JSON %s: %s", text, jerr.text);
    memset(err, 0, sizeof(*err));
    int rc = ta_rec_from_json(d, in, rec, merge, err);
    json_decref(in);
    return rc;
}

#define EXPECT_ERR(d, text, want_field, want_rule)                                                           \
    do {                                                                                           \
        uint8_t *rec_ = malloc((d)->size);                                                         \
        ta_rec_defaults((d), rec_);                                                                \
        ta_err_t e_;                                                                               \
        int rc_ = from_text((d), (text), rec_, TA_MERGE_CREATE, &e_);                              \
        if (rc_ != TA_EINVAL)                                                                      \
            fail_msg("%s accepted (rc %d)", text, rc_);                                            \
        if (strcmp(e_.field, want_field) || strcmp(e_.rule, want_rule))                                      \
            fail_msg("%s: got %s/%s (%s), want %s/%s", text, e_.field, e_.rule, e_.message, want_field, \
                     want_rule);                                                                        \
        assert_non_null(strstr(e_.message, want_field));                                                \
        free(rec_);                                                                                \
    } while (0)

#define EXPECT_OK(d, text, rec)                                                                    \
    do {                                                                                           \
        ta_err_t e_;                                                                               \
        ta_rec_defaults((d), (rec));                                                               \
        int rc_ = from_text((d), (text), (rec), TA_MERGE_CREATE, &e_);                             \
        if (rc_ != 0)                                                                              \
            fail_msg("%s refused: %s", text, e_.message);                                          \
    } while (0)

#define U(extra) "{\"email\":\"a@b.co\"" extra "}"
#define P(extra) "{\"name\":\"p\",\"type\":\"openai\",\"base_url\":\"http://x\"" extra "}"
#define M(extra) "{\"name\":\"m\"" extra "}"
#define Q(extra) "{\"user_id\":1,\"group_id\":2" extra "}"
#define G(extra) "{\"name\":\"g\"" extra "}"

/* route.weight: 1 when a route is created without it, 1 when read from a
 * record of a build before the field (absent tag), 1..1000 on input;
 * upstream_missing is output only. */
static void test_route_weight(void **state)
{
    (void)state;
    ta_model_t m, back;
    ta_err_t e = {0};
    uint8_t buf[TA_REC_MAX_ENCODED];

    ta_rec_defaults(&ta_desc_model, &m);
    json_t *in = json_loads("{\"name\":\"w\",\"routes\":[{\"provider_id\":1,\"upstream_name\":\"a\"},"
                            "{\"provider_id\":2,\"upstream_name\":\"b\",\"weight\":3,\"upstream_missing\":true}]}",
                            0, NULL);
    assert_int_equal(ta_rec_from_json(&ta_desc_model, in, &m, TA_MERGE_CREATE, &e), 0);
    json_decref(in);
    assert_int_equal(m.routes[0].weight, 1);
    assert_int_equal(m.routes[1].weight, 3);
    assert_false(m.routes[1].upstream_missing); /* ignored on input */
    /* a record written before the field: weight 0 is never stored, like an absent tag */
    m.routes[1].weight = 0;
    int n = ta_rec_encode(&ta_desc_model, &m, buf, sizeof(buf));
    assert_true(n > 0);
    assert_int_equal(ta_rec_decode(&ta_desc_model, buf, (size_t)n, &back), 0);
    assert_int_equal(back.routes[0].weight, 1);
    assert_int_equal(back.routes[1].weight, 1);
    assert_int_equal(ta_rec_validate(&ta_desc_model, &back, &e), 0);
    static const char *const bad[] = {"0", "1001", "-1", "\"2\""};
    for (size_t i = 0; i < TA_ARRAY_SIZE(bad); i++) {
        char txt[160];
        snprintf(txt, sizeof(txt), "{\"routes\":[{\"provider_id\":1,\"upstream_name\":\"a\",\"weight\":%s}]}", bad[i]);
        in = json_loads(txt, 0, NULL);
        assert_int_equal(ta_rec_from_json(&ta_desc_model, in, &m, TA_MERGE_PATCH, &e), TA_EINVAL);
        assert_string_equal(e.field, "routes[0].weight");
        json_decref(in);
    }
}

static void test_validation_rules(void **state)
{
    (void)state;
    ta_user_t u;
    ta_provider_t p;
    ta_model_t m;
    ta_quota_t q;
    ta_group_t g;
    /* required */
    EXPECT_ERR(&ta_desc_user, "{\"name\":\"x\"}", "email", "required");
    EXPECT_ERR(&ta_desc_provider, "{\"name\":\"p\",\"type\":\"openai\"}", "base_url", "required");
    EXPECT_ERR(&ta_desc_provider, "{\"base_url\":\"http://x\",\"type\":\"openai\"}", "name", "required");
    EXPECT_ERR(&ta_desc_provider, P(",\"name\":\"\""), "name", "required");
    EXPECT_ERR(&ta_desc_model, "{}", "name", "required");
    EXPECT_ERR(&ta_desc_model, M(",\"routes\":[{\"provider_id\":1,\"upstream_name\":\"a\"},{\"upstream_name\":\"b\"}]"),
               "routes[1].provider_id", "required");
    EXPECT_ERR(&ta_desc_model, M(",\"routes\":[{\"provider_id\":null,\"upstream_name\":\"b\"}]"),
               "routes[0].provider_id", "required");
    EXPECT_ERR(&ta_desc_model, M(",\"routes\":[{\"provider_id\":1,\"upstream_name\":\"\"}]"),
               "routes[0].upstream_name", "required");
    EXPECT_ERR(&ta_desc_quota, "{\"user_id\":1}", "group_id", "required");
    EXPECT_ERR(&ta_desc_quota, Q(",\"user_id\":0"), "user_id", "required");
    /* type */
    EXPECT_ERR(&ta_desc_user, U(",\"is_active\":\"yes\""), "is_active", "type");
    EXPECT_ERR(&ta_desc_user, U(",\"name\":5"), "name", "type");
    EXPECT_ERR(&ta_desc_user, U(",\"name\":null"), "name", "type");
    EXPECT_ERR(&ta_desc_user, "{\"email\":[\"a@b.co\"]}", "email", "type");
    EXPECT_ERR(&ta_desc_provider, P(",\"timeout_s\":1.5"), "timeout_s", "type");
    EXPECT_ERR(&ta_desc_provider, P(",\"timeout_s\":\"60\""), "timeout_s", "type");
    EXPECT_ERR(&ta_desc_quota, Q(",\"cost_limit\":true"), "cost_limit", "type");
    EXPECT_ERR(&ta_desc_quota, Q(",\"user_id\":\"1\""), "user_id", "type");
    EXPECT_ERR(&ta_desc_quota, Q(",\"expires_at\":1800000000"), "expires_at", "type");
    EXPECT_ERR(&ta_desc_quota, Q(",\"warn_at\":80"), "warn_at", "type");
    EXPECT_ERR(&ta_desc_quota, Q(",\"warn_at\":[\"80\"]"), "warn_at[0]", "type");
    EXPECT_ERR(&ta_desc_model, M(",\"routes\":[1]"), "routes[0]", "type");
    EXPECT_ERR(&ta_desc_model, M(",\"capabilities\":\"chat\""), "capabilities", "type");
    EXPECT_ERR(&ta_desc_model, M(",\"capabilities\":[1]"), "capabilities[0]", "type");
    EXPECT_ERR(&ta_desc_group, G(",\"default_quota\":[]"), "default_quota", "type");
    EXPECT_ERR(&ta_desc_group, G(",\"default_quota\":{\"rpm\":\"x\"}"), "default_quota.rpm", "type");
    EXPECT_ERR(&ta_desc_group, G(",\"model_ids\":[\"x\"]"), "model_ids[0]", "type");
    EXPECT_ERR(&ta_desc_model, M(",\"input_price\":0.1234567891234567"), "input_price", "type");
    /* max_length */
    char text[600];
    char name128[129], name127[128];
    memset(name128, 'n', 128), name128[128] = 0;
    memset(name127, 'n', 127), name127[127] = 0;
    snprintf(text, sizeof(text), "{\"name\":\"%s\"}", name128);
    EXPECT_ERR(&ta_desc_model, text, "name", "max_length");
    snprintf(text, sizeof(text), "{\"name\":\"%s\"}", name127);
    EXPECT_OK(&ta_desc_model, text, &m);
    assert_int_equal(strlen(m.name), 127);
    snprintf(text, sizeof(text), M(",\"routes\":[{\"provider_id\":1,\"upstream_name\":\"%s\"}]"), name128);
    EXPECT_ERR(&ta_desc_model, text, "routes[0].upstream_name", "max_length");
    EXPECT_ERR(&ta_desc_user, U(",\"name\":\"a\\u0000b\""), "name", "control");
    /* min / max */
    EXPECT_ERR(&ta_desc_provider, P(",\"timeout_s\":0"), "timeout_s", "min");
    EXPECT_ERR(&ta_desc_provider, P(",\"timeout_s\":3601"), "timeout_s", "max");
    EXPECT_ERR(&ta_desc_provider, P(",\"timeout_s\":4294967297"), "timeout_s", "max");
    EXPECT_ERR(&ta_desc_provider, P(",\"connect_timeout_ms\":60001"), "connect_timeout_ms", "max");
    EXPECT_ERR(&ta_desc_model,
               M(",\"routes\":[{\"provider_id\":1,\"upstream_name\":\"a\"},"
                 "{\"provider_id\":1,\"upstream_name\":\"b\",\"priority\":1001}]"),
               "routes[1].priority", "max");
    EXPECT_ERR(&ta_desc_model, M(",\"input_price\":\"-1\""), "input_price", "min");
    EXPECT_ERR(&ta_desc_model, M(",\"output_price\":1000001"), "output_price", "max");
    EXPECT_ERR(&ta_desc_model, M(",\"context_window\":-1"), "context_window", "min");
    EXPECT_ERR(&ta_desc_model, M(",\"max_output_tokens\":1000000001"), "max_output_tokens", "max");
    EXPECT_ERR(&ta_desc_quota, Q(",\"rpm\":-1"), "rpm", "min");
    EXPECT_ERR(&ta_desc_quota, Q(",\"cost_limit\":\"-0.000000001\""), "cost_limit", "min");
    EXPECT_ERR(&ta_desc_quota, Q(",\"cost_limit\":9223372036854775807"), "cost_limit", "max");
    EXPECT_ERR(&ta_desc_quota, Q(",\"warn_at\":[0]"), "warn_at[0]", "min");
    EXPECT_ERR(&ta_desc_quota, Q(",\"warn_at\":[50,101]"), "warn_at[1]", "max");
    EXPECT_ERR(&ta_desc_quota, Q(",\"user_id\":-3"), "user_id", "min");
    EXPECT_ERR(&ta_desc_group, G(",\"model_ids\":[0]"), "model_ids[0]", "min");
    /* enum */
    EXPECT_ERR(&ta_desc_user, U(",\"role\":\"admin\""), "role", "enum");
    EXPECT_ERR(&ta_desc_provider, P(",\"type\":\"azure\""), "type", "enum");
    EXPECT_ERR(&ta_desc_quota, Q(",\"period\":\"year\""), "period", "enum");
    EXPECT_ERR(&ta_desc_model, M(",\"capabilities\":[\"chat\",\"telepathy\"]"), "capabilities[1]", "enum");
    /* format */
    EXPECT_ERR(&ta_desc_user, "{\"email\":\"not-an-email\"}", "email", "format");
    EXPECT_ERR(&ta_desc_user, "{\"email\":\"a@b\"}", "email", "format");
    EXPECT_ERR(&ta_desc_user, "{\"email\":\"a b@c.de\"}", "email", "format");
    EXPECT_ERR(&ta_desc_user, "{\"email\":\"a@@c.de\"}", "email", "format");
    EXPECT_ERR(&ta_desc_user, "{\"email\":\".a@c.de\"}", "email", "format");
    EXPECT_ERR(&ta_desc_user, "{\"email\":\"a@-c.de\"}", "email", "format");
    EXPECT_ERR(&ta_desc_provider, "{\"name\":\"p\",\"type\":\"openai\",\"base_url\":\"ftp://x\"}", "base_url", "format");
    EXPECT_ERR(&ta_desc_provider, "{\"name\":\"p\",\"type\":\"openai\",\"base_url\":\"http://\"}", "base_url", "format");
    EXPECT_ERR(&ta_desc_provider, "{\"name\":\"p\",\"type\":\"openai\",\"base_url\":\"http://a b\"}", "base_url", "format");
    EXPECT_ERR(&ta_desc_quota, Q(",\"expires_at\":\"tomorrow\""), "expires_at", "format");
    EXPECT_ERR(&ta_desc_quota, Q(",\"cost_limit\":\"1e3\""), "cost_limit", "format");
    EXPECT_ERR(&ta_desc_quota, Q(",\"cost_limit\":\"1.0000000001\""), "cost_limit", "format");
    EXPECT_ERR(&ta_desc_model, M(",\"input_price\":1e-10"), "input_price", "format");
    /* max_items */
    EXPECT_ERR(&ta_desc_quota, Q(",\"warn_at\":[10,20,30,40,50]"), "warn_at", "max_items");
    {
        char r[1200] = M(",\"routes\":[");
        size_t o = strlen(r) - 1; /* drop the closing brace of M() */
        for (int i = 0; i < 9; i++)
            o += (size_t)snprintf(r + o, sizeof(r) - o, "%s{\"provider_id\":1,\"upstream_name\":\"u\"}", i ? "," : "");
        snprintf(r + o, sizeof(r) - o, "]}");
        EXPECT_ERR(&ta_desc_model, r, "routes", "max_items");
    }
    /* order and uniqueness */
    EXPECT_ERR(&ta_desc_quota, Q(",\"warn_at\":[95,80]"), "warn_at[1]", "order");
    EXPECT_ERR(&ta_desc_group, G(",\"default_quota\":{\"warn_at\":[50,50]}"), "default_quota.warn_at[1]", "order");
    EXPECT_ERR(&ta_desc_group, G(",\"model_ids\":[1,2,1]"), "model_ids[2]", "unique");
    /* the top level must be an object */
    json_t *arr = json_array();
    ta_err_t e;
    ta_rec_defaults(&ta_desc_user, &u);
    assert_int_equal(ta_rec_from_json(&ta_desc_user, arr, &u, TA_MERGE_CREATE, &e), TA_EINVAL);
    assert_string_equal(e.rule, "type");
    assert_int_equal(ta_rec_from_json(&ta_desc_user, NULL, &u, TA_MERGE_CREATE, NULL), TA_EINVAL);
    json_decref(arr);

    /* utf8: jansson never hands us invalid UTF-8, so validate the struct directly */
    sample_user(&u);
    memcpy(u.name, "ab\xED\xA0\x80", 6); /* a surrogate */
    assert_int_equal(ta_rec_validate(&ta_desc_user, &u, &e), TA_EINVAL);
    assert_string_equal(e.field, "name");
    assert_string_equal(e.rule, "utf8");
    /* validate catches what a direct struct edit broke */
    sample_provider(&p);
    assert_int_equal(ta_rec_validate(&ta_desc_provider, &p, &e), 0);
    p.type = 7;
    assert_int_equal(ta_rec_validate(&ta_desc_provider, &p, &e), TA_EINVAL);
    assert_string_equal(e.rule, "enum");
    sample_model(&m);
    m.routes[3].priority = -1;
    assert_int_equal(ta_rec_validate(&ta_desc_model, &m, &e), TA_EINVAL);
    assert_string_equal(e.field, "routes[3].priority");
    assert_string_equal(e.rule, "min");
    assert_string_equal(e.message, "routes[3].priority: must be at least 0");
    m.routes[3].priority = 0;
    m.routes[3].weight = 0;
    assert_int_equal(ta_rec_validate(&ta_desc_model, &m, &e), TA_EINVAL);
    assert_string_equal(e.field, "routes[3].weight");
    assert_string_equal(e.message, "routes[3].weight: must be at least 1");
    m.routes[3].weight = 1001;
    assert_int_equal(ta_rec_validate(&ta_desc_model, &m, &e), TA_EINVAL);
    assert_string_equal(e.message, "routes[3].weight: must be at most 1000");
    m.routes[3].weight = 1;
    m.nroutes = 9;
    assert_int_equal(ta_rec_validate(&ta_desc_model, &m, &e), TA_EINVAL);
    assert_string_equal(e.rule, "max_items");
    m.nroutes = 8;
    m.capabilities |= 1u << 20;
    assert_int_equal(ta_rec_validate(&ta_desc_model, &m, &e), TA_EINVAL);
    assert_string_equal(e.field, "capabilities");
    sample_group(&g);
    assert_int_equal(ta_rec_validate(&ta_desc_group, &g, &e), 0);
    g.default_quota.warn_at[2] = 10;
    assert_int_equal(ta_rec_validate(&ta_desc_group, &g, &e), TA_EINVAL);
    assert_string_equal(e.field, "default_quota.warn_at[2]");
    assert_string_equal(e.rule, "order");
    sample_quota(&q);
    assert_int_equal(ta_rec_validate(&ta_desc_quota, &q, &e), 0);
    q.limits.max_concurrency = -5;
    assert_int_equal(ta_rec_validate(&ta_desc_quota, &q, &e), TA_EINVAL);
    assert_string_equal(e.field, "max_concurrency");
    assert_string_equal(e.message, "max_concurrency: must be at least 0");
}

/* Stored strings reach HTTP headers (a provider's key and URL), /metrics
 * labels (model names), log lines and CSV files: no control character gets
 * in, whichever field it is sent in. */
static void test_control_characters(void **state)
{
    (void)state;
    ta_user_t u;
    ta_provider_t p;
    ta_model_t m;
    ta_group_t g;
    ta_err_t e;
    struct {
        const ta_recdesc_t *d;
        void *rec;
    } recs[] = {
        {&ta_desc_user, &u}, {&ta_desc_provider, &p}, {&ta_desc_model, &m}, {&ta_desc_group, &g}};
    /* every C0 control and DEL, in every string field (struct edited directly,
     * as a record written by an older build would be) */
    static const char bad[] = {'\r', '\n', '\x01', '\x1b', '\x1f', '\x7f', '\t'};
    for (size_t r = 0; r < TA_ARRAY_SIZE(recs); r++) {
        for (size_t i = 0; i < recs[r].d->nfields; i++) {
            const ta_field_t *f = &recs[r].d->fields[i];
            if (f->type != TA_FT_STR)
                continue;
            for (size_t b = 0; b < sizeof(bad); b++) {
                bool allowed = (f->flags & TA_FF_TEXT) && (bad[b] == '\r' || bad[b] == '\n' || bad[b] == '\t');
                sample_user(&u), sample_provider(&p), sample_model(&m), sample_group(&g);
                char *s = (char *)recs[r].rec + f->offset;
                s[0] = 'a', s[1] = bad[b], s[2] = '\0';
                int rc = ta_rec_validate(recs[r].d, recs[r].rec, &e);
                if (allowed) {
                    assert_int_equal(rc, 0);
                    continue;
                }
                if (rc != TA_EINVAL || strcmp(e.field, f->name) || strcmp(e.rule, "control"))
                    fail_msg("%s.%s with byte 0x%02x: rc %d %s/%s", recs[r].d->name, f->name,
                             (unsigned char)bad[b], rc, e.field, e.rule);
                assert_non_null(strstr(e.message, f->name));
            }
        }
    }
    /* the same through JSON input, naming the field (nested ones by path) */
    EXPECT_ERR(&ta_desc_provider, P(",\"name\":\"a\\r\\nX-Injected: 1\""), "name", "control");
    EXPECT_ERR(&ta_desc_provider, "{\"name\":\"p\",\"type\":\"openai\",\"base_url\":\"http://x/\\r\\nX: 1\"}",
               "base_url", "control");
    EXPECT_ERR(&ta_desc_model, "{\"name\":\"gpt\\r\"}", "name", "control");
    EXPECT_ERR(&ta_desc_model, M(",\"routes\":[{\"provider_id\":1,\"upstream_name\":\"up\\nx\"}]"),
               "routes[0].upstream_name", "control");
    EXPECT_ERR(&ta_desc_user, U(",\"name\":\"a\\u007fb\""), "name", "control");
    EXPECT_ERR(&ta_desc_user, "{\"email\":\"a\\r@b.co\"}", "email", "control");
    EXPECT_ERR(&ta_desc_group, "{\"name\":\"g\\u001b[31m\"}", "name", "control");
    EXPECT_ERR(&ta_desc_group, G(",\"description\":\"x\\u0000y\""), "description", "control");
    EXPECT_ERR(&ta_desc_group, G(",\"description\":\"x\\u0007y\""), "description", "control");
    EXPECT_OK(&ta_desc_group, G(",\"description\":\"line 1\\r\\nline 2\\tend\""), &g);
    assert_string_equal(g.description, "line 1\r\nline 2\tend");
    /* printable non-ASCII stays welcome */
    EXPECT_OK(&ta_desc_model, "{\"name\":\"mod\xC3\xA8le-\xE2\x82\xAC\"}", &m);

    /* ta_str_check: the rule for values outside a descriptor (api_key) */
    assert_int_equal(ta_str_check("api_key", "sk-a\r\nX-Injected: 1", 20, 0, &e), TA_EINVAL);
    assert_string_equal(e.field, "api_key");
    assert_string_equal(e.rule, "control");
    assert_string_equal(e.message, "api_key: must not contain control characters (byte 0x0d at offset 4)");
    assert_int_equal(ta_str_check("k", "a\0b", 3, TA_FF_TEXT, &e), TA_EINVAL);
    assert_string_equal(e.rule, "control");
    assert_int_equal(ta_str_check("k", "\x7f", 1, 0, &e), TA_EINVAL);
    assert_int_equal(ta_str_check("k", "a\tb\r\n", 5, TA_FF_TEXT, &e), 0);
    assert_int_equal(ta_str_check("k", "a\tb", 3, 0, &e), TA_EINVAL);
    assert_int_equal(ta_str_check("k", "ab\xFF", 3, 0, &e), TA_EINVAL);
    assert_string_equal(e.rule, "utf8");
    assert_int_equal(ta_str_check("k", "sk-\xC3\xA9 ~", 7, 0, &e), 0);
}

/* A provider URL is http(s) with a host, and carries no credentials: it is
 * shown in lists and the dump, the key has a write-only field of its own. */
static void test_url_rules(void **state)
{
    (void)state;
    ta_provider_t p;
#define URL(u) "{\"name\":\"p\",\"type\":\"openai\",\"base_url\":\"" u "\"}"
    EXPECT_ERR(&ta_desc_provider, URL("http://user:pass@api.example.com/v1"), "base_url", "credentials");
    EXPECT_ERR(&ta_desc_provider, URL("https://key@api.example.com"), "base_url", "credentials");
    EXPECT_ERR(&ta_desc_provider, URL("https://:pw@api.example.com?x"), "base_url", "credentials");
    EXPECT_ERR(&ta_desc_provider, URL("https://api.example.com\\\\@evil.example/"), "base_url", "credentials");
    EXPECT_ERR(&ta_desc_provider, URL("https://api.example.com\\\\x/v1"), "base_url", "format");
    EXPECT_ERR(&ta_desc_provider, URL("file:///etc/passwd"), "base_url", "format");
    EXPECT_ERR(&ta_desc_provider, URL("gopher://api.example.com/"), "base_url", "format");
    EXPECT_ERR(&ta_desc_provider, URL("javascript:alert(1)"), "base_url", "format");
    EXPECT_ERR(&ta_desc_provider, URL("//api.example.com/v1"), "base_url", "format");
    /* an @ after the host (path, query) is not userinfo */
    EXPECT_OK(&ta_desc_provider, URL("https://api.example.com/v1/@team?a=b@c"), &p);
    EXPECT_OK(&ta_desc_provider, URL("http://127.0.0.1:8080/v1"), &p);
    EXPECT_OK(&ta_desc_provider, URL("https://[::1]:8443/v1"), &p);
    assert_string_equal(p.base_url, "https://[::1]:8443/v1");
#undef URL
}

static void test_json_input_semantics(void **state)
{
    (void)state;
    ta_user_t u;
    ta_model_t m;
    ta_quota_t q;
    ta_group_t g;
    ta_provider_t p;
    ta_err_t e;
    /* lower-casing, unknown keys, read-only and internal keys ignored */
    EXPECT_OK(&ta_desc_user, "{\"email\":\"Alice@Example.COM\",\"id\":99,\"created_at\":\"2020-01-01\","
                             "\"pwhash\":\"x\",\"password\":\"secret\",\"bogus\":1}", &u);
    assert_string_equal(u.email, "alice@example.com");
    assert_int_equal(u.id, 0);
    assert_int_equal(u.created_at, 0);
    assert_int_equal(u.pwhash_len, 0);
    assert_int_equal(u.role, TA_ROLE_USER);
    assert_true(u.is_active);
    /* has_prices follows the presence of any price key */
    EXPECT_OK(&ta_desc_model, M(",\"has_prices\":true"), &m);
    assert_false(m.has_prices);
    EXPECT_OK(&ta_desc_model, M(",\"cache_write_price\":\"0\""), &m);
    assert_true(m.has_prices);
    assert_int_equal(m.cache_write_price, 0);
    assert_int_equal(m.prices_set, TA_PRICE_CACHE_WRITE);
    /* each price's own presence: unset prints null, "0" prints "0" */
    ta_rec_defaults(&ta_desc_model, &m);
    EXPECT_OK(&ta_desc_model, M(",\"input_price\":\"2\",\"cache_read_price\":\"0\""), &m);
    assert_int_equal(ta_model_prices_set(&m), TA_PRICE_INPUT | TA_PRICE_CACHE_READ);
    json_t *pj = ta_rec_to_json(&ta_desc_model, &m, TA_JSON_API);
    assert_string_equal(json_string_value(json_object_get(pj, "cache_read_price")), "0");
    assert_true(json_is_null(json_object_get(pj, "cache_write_price")));
    assert_true(json_is_null(json_object_get(pj, "output_price")));
    json_decref(pj);
    assert_int_equal(from_text(&ta_desc_model, "{\"cache_read_price\":null}", &m, TA_MERGE_PATCH, &e), 0);
    assert_int_equal(ta_model_prices_set(&m), TA_PRICE_INPUT);
    /* a record from before prices_set: every price counts as set, a later PATCH keeps them */
    m.prices_set = 0;
    assert_int_equal(ta_model_prices_set(&m), TA_PRICE_ALL);
    assert_int_equal(from_text(&ta_desc_model, "{\"output_price\":1}", &m, TA_MERGE_PATCH, &e), 0);
    assert_int_equal(ta_model_prices_set(&m), TA_PRICE_ALL);
    ta_rec_defaults(&ta_desc_model, &m);
    /* PATCH validates the whole result: a stored record without a name is refused */
    assert_int_equal(from_text(&ta_desc_model, "{\"context_window\":5}", &m, TA_MERGE_PATCH, &e), TA_EINVAL);
    assert_string_equal(e.field, "name");
    snprintf(m.name, sizeof(m.name), "stored");
    assert_int_equal(from_text(&ta_desc_model, "{\"context_window\":5}", &m, TA_MERGE_PATCH, &e), 0);
    assert_false(m.has_prices);
    assert_int_equal(from_text(&ta_desc_model, "{\"output_price\":2}", &m, TA_MERGE_PATCH, &e), 0);
    assert_true(m.has_prices);
    assert_int_equal(m.output_price, 2 * TA_NANO_PER_UNIT);
    assert_int_equal(from_text(&ta_desc_model, "{\"context_window\":6}", &m, TA_MERGE_PATCH, &e), 0);
    assert_true(m.has_prices); /* never reset by a later input */
    /* money in every accepted form */
    EXPECT_OK(&ta_desc_model, M(",\"input_price\":\"2.5\",\"output_price\":3,\"cache_read_price\":0.1,"
                                "\"cache_write_price\":0.000125"), &m);
    assert_int_equal(m.input_price, 2500000000LL);
    assert_int_equal(m.output_price, 3000000000LL);
    assert_int_equal(m.cache_read_price, 100000000LL);
    assert_int_equal(m.cache_write_price, 125000LL);
    EXPECT_OK(&ta_desc_model, M(",\"input_price\":1.000000001,\"output_price\":123456.123456789,"
                                "\"cache_read_price\":1e2,\"cache_write_price\":2e-9"), &m);
    assert_int_equal(m.input_price, 1000000001LL);
    assert_int_equal(m.output_price, 123456123456789LL);
    assert_int_equal(m.cache_read_price, 100 * TA_NANO_PER_UNIT);
    assert_int_equal(m.cache_write_price, 2);
    EXPECT_ERR(&ta_desc_model, M(",\"input_price\":2.5e-10"), "input_price", "format");
    EXPECT_OK(&ta_desc_model, M(",\"input_price\":0.0"), &m);
    assert_int_equal(m.input_price, 0);
    /* nullable limits: null = 0 = no limit; times null = 0 */
    EXPECT_OK(&ta_desc_quota, Q(",\"cost_limit\":null,\"rpm\":null,\"expires_at\":null,\"token_limit\":7"), &q);
    assert_int_equal(q.limits.cost_limit, 0);
    assert_int_equal(q.limits.token_limit, 7);
    EXPECT_OK(&ta_desc_quota, Q(",\"expires_at\":\"2026-11-26T13:09:17Z\",\"period\":\"none\","
                                "\"warn_at\":[80,95],\"cost_limit\":\"10\",\"auto_renew\":false"), &q);
    assert_int_equal(q.expires_at, 1795698557);
    assert_int_equal(q.limits.period, TA_PERIOD_NONE);
    assert_int_equal(q.limits.nwarn, 2);
    assert_int_equal(q.limits.warn_at[1], 95);
    assert_int_equal(q.limits.cost_limit, 10 * TA_NANO_PER_UNIT);
    assert_false(q.limits.auto_renew);
    /* PATCH: only present fields change, required not needed; null clears a limit */
    assert_int_equal(from_text(&ta_desc_quota, "{\"cost_limit\":null,\"rpm\":30}", &q, TA_MERGE_PATCH, &e), 0);
    assert_int_equal(q.limits.cost_limit, 0);
    assert_int_equal(q.limits.rpm, 30);
    assert_int_equal(q.limits.nwarn, 2);
    assert_int_equal(q.expires_at, 1795698557);
    assert_int_equal(q.user_id, 1);
    /* PUT needs the required fields like create */
    assert_int_equal(from_text(&ta_desc_quota, "{\"rpm\":1}", &q, TA_MERGE_PUT, &e), TA_EINVAL);
    assert_string_equal(e.rule, "required");
    /* a refused input leaves the record as it was */
    ta_quota_t before = q;
    assert_int_equal(from_text(&ta_desc_quota, "{\"rpm\":5,\"tpm\":-1}", &q, TA_MERGE_PATCH, &e), TA_EINVAL);
    assert_memory_equal(&before, &q, sizeof(q));
    /* PATCH merges the keys of a SUB, but replaces a list whole */
    EXPECT_OK(&ta_desc_group, G(",\"default_quota\":{\"period\":\"day\",\"cost_limit\":\"5\",\"warn_at\":[50,90]}"), &g);
    assert_int_equal(g.default_quota.period, TA_PERIOD_DAY);
    assert_true(g.default_quota.auto_renew); /* a default kept inside the sub-object */
    assert_int_equal(from_text(&ta_desc_group, "{\"default_quota\":{\"rpm\":5,\"warn_at\":[70]}}", &g,
                               TA_MERGE_PATCH, &e), 0);
    assert_int_equal(g.default_quota.period, TA_PERIOD_DAY);
    assert_int_equal(g.default_quota.cost_limit, 5 * TA_NANO_PER_UNIT);
    assert_int_equal(g.default_quota.rpm, 5);
    assert_int_equal(g.default_quota.nwarn, 1);
    assert_int_equal(g.default_quota.warn_at[0], 70);
    EXPECT_OK(&ta_desc_model, M(",\"routes\":[{\"provider_id\":1,\"upstream_name\":\"a\",\"priority\":5},"
                                "{\"provider_id\":2,\"upstream_name\":\"b\"}]"), &m);
    assert_int_equal(m.nroutes, 2);
    assert_int_equal(m.routes[1].priority, 0);
    assert_int_equal(from_text(&ta_desc_model, "{\"routes\":[{\"provider_id\":3,\"upstream_name\":\"c\"}]}", &m,
                               TA_MERGE_PATCH, &e), 0);
    assert_int_equal(m.nroutes, 1);
    assert_int_equal(m.routes[0].provider_id, 3);
    assert_string_equal(m.name, "m");
    assert_int_equal(from_text(&ta_desc_model, "{\"routes\":[]}", &m, TA_MERGE_PATCH, &e), 0);
    assert_int_equal(m.nroutes, 0);
    /* capabilities */
    EXPECT_OK(&ta_desc_model, M(",\"capabilities\":[\"embeddings\",\"tools\",\"embeddings\"]"), &m);
    assert_int_equal(m.capabilities, TA_CAP_EMBEDDINGS | TA_CAP_TOOLS);
    EXPECT_OK(&ta_desc_model, M(",\"capabilities\":[]"), &m);
    assert_int_equal(m.capabilities, 0);
    /* provider bounds at the edges */
    EXPECT_OK(&ta_desc_provider, P(",\"timeout_s\":3600,\"connect_timeout_ms\":1"), &p);
    assert_int_equal(p.timeout_s, 3600);
    assert_int_equal(p.connect_timeout_ms, 1);
    /* the provider enum */
    EXPECT_OK(&ta_desc_provider, "{\"name\":\"p\",\"type\":\"anthropic\",\"base_url\":\"HTTPS://api.example.com\"}", &p);
    assert_int_equal(p.type, TA_PROVIDER_ANTHROPIC);
}

static void test_defaults_and_lookup(void **state)
{
    (void)state;
    ta_provider_t p;
    ta_limits_t l;
    ta_group_t g;
    ta_quota_t q;
    ta_user_t u;
    ta_model_t m;
    memset(&p, 0x55, sizeof(p));
    ta_rec_defaults(&ta_desc_provider, &p);
    assert_int_equal(p.timeout_s, 600);
    assert_int_equal(p.connect_timeout_ms, 5000);
    assert_true(p.is_active);
    assert_int_equal(p.id, 0);
    assert_int_equal(p.name[0], 0);
    ta_rec_defaults(&ta_desc_limits, &l);
    assert_int_equal(l.period, TA_PERIOD_MONTH);
    assert_true(l.auto_renew);
    ta_rec_defaults(&ta_desc_group, &g);
    assert_int_equal(g.default_quota.period, TA_PERIOD_MONTH);
    ta_rec_defaults(&ta_desc_quota, &q);
    assert_int_equal(q.limits.period, TA_PERIOD_MONTH);
    assert_true(q.is_active);
    ta_rec_defaults(&ta_desc_user, &u);
    assert_int_equal(u.role, TA_ROLE_USER);
    assert_true(u.is_active);
    ta_rec_defaults(&ta_desc_model, &m);
    assert_int_equal(m.capabilities, TA_CAP_CHAT | TA_CAP_STREAMING);
    assert_false(m.has_prices);

    const ta_field_t *f = ta_rec_field(&ta_desc_quota, "cost_limit");
    assert_non_null(f);
    assert_int_equal(f->type, TA_FT_NANO);
    assert_int_equal(f->offset, offsetof(ta_quota_t, limits.cost_limit));
    assert_null(ta_rec_field(&ta_desc_quota, "limits"));
    assert_null(ta_rec_field(&ta_desc_user, "password"));
    assert_non_null(ta_rec_field(&ta_desc_model, "routes"));

    /* every descriptor: tags unique and non-zero, names unique, quota's
     * flattened limits carry the same names, types and bounds as ta_desc_limits */
    const ta_recdesc_t *all[] = {&ta_desc_user,   &ta_desc_provider, &ta_desc_route,
                                 &ta_desc_model,  &ta_desc_limits,   &ta_desc_group,
                                 &ta_desc_quota,  &ta_desc_keyrec,   &ta_desc_balance,
                                 &ta_desc_hold,   &ta_desc_revoked};
    for (size_t i = 0; i < TA_ARRAY_SIZE(all); i++) {
        const ta_recdesc_t *d = all[i];
        assert_true(d->rectype != 0);
        for (size_t a = 0; a < d->nfields; a++) {
            assert_true(d->fields[a].tag != 0);
            assert_true(d->fields[a].offset + d->fields[a].size <= d->size);
            for (size_t b = a + 1; b < d->nfields; b++) {
                assert_true(d->fields[a].tag != d->fields[b].tag);
                assert_true(strcmp(d->fields[a].name, d->fields[b].name) != 0);
            }
        }
    }
    for (size_t i = 0; i < ta_desc_limits.nfields; i++) {
        const ta_field_t *lf = &ta_desc_limits.fields[i];
        const ta_field_t *qf = ta_rec_field(&ta_desc_quota, lf->name);
        assert_non_null(qf);
        assert_int_equal(qf->type, lf->type);
        assert_int_equal(qf->min, lf->min);
        assert_int_equal(qf->max, lf->max);
        assert_int_equal(qf->flags, lf->flags);
        assert_int_equal(qf->offset, offsetof(ta_quota_t, limits) + lf->offset);
    }
    /* the ledger-internal records are never API input */
    const ta_recdesc_t *internal[] = {&ta_desc_keyrec, &ta_desc_balance, &ta_desc_hold, &ta_desc_revoked};
    for (size_t i = 0; i < TA_ARRAY_SIZE(internal); i++)
        for (size_t k = 0; k < internal[i]->nfields; k++)
            assert_true(internal[i]->fields[k].flags & TA_FF_INTERNAL);
}

/* ---- time ------------------------------------------------------------------ */

static void assert_time(const char *s, int64_t want)
{
    int64_t t = -12345;
    int rc = ta_time_parse(s, strlen(s), &t);
    if (rc != 0)
        fail_msg("\"%s\" refused", s);
    if (t != want)
        fail_msg("\"%s\" -> %lld, want %lld", s, (long long)t, (long long)want);
}

static void assert_time_refused(const char *s)
{
    int64_t t;
    if (ta_time_parse(s, strlen(s), &t) != TA_EINVAL)
        fail_msg("\"%s\" accepted", s);
}

static void test_time(void **state)
{
    (void)state;
    char buf[32];
    assert_string_equal(ta_time_format(0, buf), "1970-01-01T00:00:00Z");
    assert_string_equal(ta_time_format(1795698557, buf), "2026-11-26T13:09:17Z");
    assert_string_equal(ta_time_format(-1, buf), "1969-12-31T23:59:59Z");
    assert_string_equal(ta_time_format_ms(1795698557123456789LL, buf), "2026-11-26T13:09:17.123Z");
    assert_string_equal(ta_time_format_ms(-1, buf), "1969-12-31T23:59:59.999Z");
    assert_string_equal(ta_time_format(INT64_MAX, buf), "9999-12-31T23:59:59Z");

    assert_time("2026-11-26T13:09:17Z", 1795698557);
    assert_time("2026-11-26t13:09:17z", 1795698557);
    assert_time("2026-11-26 13:09:17Z", 1795698557);
    assert_time("2026-11-26T13:09:17.999999999Z", 1795698557);
    assert_time("2026-11-26T13:09:17.5+00:00", 1795698557);
    assert_time("2026-11-26T13:09:17+01:00", 1795694957);
    assert_time("2026-11-26T13:09:17-05:30", 1795718357);
    assert_time("2026-11-26", 1795651200);
    assert_time("2024-02-29", 1709164800);
    assert_time("1970-01-01T00:00:00Z", 0);
    assert_time("2026-11-26T23:59:60Z", 1795651200 + 86400); /* leap second carries */

    assert_time_refused("");
    assert_time_refused("2026");
    assert_time_refused("2026-11");
    assert_time_refused("2026-11-26T");
    assert_time_refused("2026-11-26T13:09Z");
    assert_time_refused("2026-11-26T13:09:17");       /* no offset */
    assert_time_refused("2026-11-26T13:09:17.Z");     /* empty fraction */
    assert_time_refused("2026-11-26T13:09:17+0100");
    assert_time_refused("2026-11-26T13:09:17+24:00");
    assert_time_refused("2026-11-26T13:09:17Zjunk");
    assert_time_refused("2026-11-26junk");
    assert_time_refused("2026-13-01");
    assert_time_refused("2026-00-10");
    assert_time_refused("2026-02-29");
    assert_time_refused("2026-04-31");
    assert_time_refused("2026-11-00");
    assert_time_refused("2026-11-26T24:00:00Z");
    assert_time_refused("2026-11-26T13:60:00Z");
    assert_time_refused("2026-11-26T13:09:61Z");
    assert_time_refused("26-11-26");
    assert_time_refused("2026/11/26");
    assert_time_refused("1795698557");
    int64_t t;
    assert_int_equal(ta_time_parse("2026-11-26T13:09:17Z", 10, &t), 0); /* len bounds the input */
    assert_int_equal(t, 1795651200);

    /* format -> parse round trip over a range of instants */
    for (int64_t s = 0; s < 4102444800LL; s += 86399LL * 37 + 11) {
        ta_time_format(s, buf);
        assert_int_equal(ta_time_parse(buf, strlen(buf), &t), 0);
        assert_int_equal(t, s);
    }

    /* the test clock offset moves ta_now_ns and nothing else; bracketed, not timed */
    struct timespec a, b;
    ta_clock_set_offset(86400);
    clock_gettime(CLOCK_REALTIME, &a);
    int64_t now = ta_now_s();
    clock_gettime(CLOCK_REALTIME, &b);
    ta_clock_set_offset(0);
    assert_true(now >= a.tv_sec + 86400);
    assert_true(now <= b.tv_sec + 86400);
    clock_gettime(CLOCK_REALTIME, &a);
    now = ta_now_s();
    clock_gettime(CLOCK_REALTIME, &b);
    assert_true(now >= a.tv_sec && now <= b.tv_sec);
    int64_t m1 = ta_mono_ns(), m2 = ta_mono_ns();
    assert_true(m2 >= m1);
}

/* ---- UTF-8, errors, logging ----------------------------------------------- */

static void test_utf8(void **state)
{
    (void)state;
#define OK(s) assert_true(ta_utf8_valid(s, sizeof(s) - 1))
#define BAD(s) assert_false(ta_utf8_valid(s, sizeof(s) - 1))
    OK("");
    OK("plain ascii");
    OK("\xC2\x80");             /* U+0080 */
    OK("\xDF\xBF");             /* U+07FF */
    OK("\xE0\xA0\x80");         /* U+0800 */
    OK("\xED\x9F\xBF");         /* U+D7FF */
    OK("\xEE\x80\x80");         /* U+E000 */
    OK("\xEF\xBF\xBF");         /* U+FFFF */
    OK("\xF0\x90\x80\x80");     /* U+10000 */
    OK("\xF4\x8F\xBF\xBF");     /* U+10FFFF */
    OK("Öhrn € 😀");
    OK("a\0b");                 /* NUL is valid UTF-8; strings reject it separately */
    BAD("\x80");                /* lone continuation */
    BAD("\xBF");
    BAD("\xC0\x80");            /* overlong NUL */
    BAD("\xC1\xBF");            /* overlong */
    BAD("\xE0\x80\x80");        /* overlong */
    BAD("\xE0\x9F\xBF");        /* overlong U+07FF */
    BAD("\xF0\x80\x80\x80");    /* overlong */
    BAD("\xF0\x8F\xBF\xBF");    /* overlong U+FFFF */
    BAD("\xED\xA0\x80");        /* U+D800 surrogate */
    BAD("\xED\xBF\xBF");        /* U+DFFF surrogate */
    BAD("\xF4\x90\x80\x80");    /* U+110000 */
    BAD("\xF5\x80\x80\x80");
    BAD("\xFF");
    BAD("\xFE");
    BAD("\xE2\x82");            /* truncated */
    BAD("ok\xF0\x9F\x98");      /* truncated at the end */
    BAD("\xC2\x41");            /* bad continuation */
    BAD("\xE2\x28\xA1");
#undef OK
#undef BAD
    assert_true(ta_utf8_valid("\xE2\x82\xAC", 3));
    assert_false(ta_utf8_valid("\xE2\x82\xAC", 2));
}

static void test_errors(void **state)
{
    (void)state;
    assert_string_equal(ta_strerror(0), "success");
    assert_string_equal(ta_strerror(TA_ECORRUPT), "corrupt record");
    assert_string_equal(ta_strerror(TA_ESCHEMA), "record written by a newer or unknown schema");
    assert_string_equal(ta_strerror(-ENOENT), strerror(ENOENT));
    const int codes[] = {TA_EINVAL, TA_ENOTFOUND, TA_EEXIST, TA_ETOOBIG, TA_ELMDB, TA_ECRYPTO,
                         TA_EAUTH, TA_EFULL, TA_ECONFIG, TA_EBUSY, TA_EBASE, -20000, -9999, 12345};
    for (size_t i = 0; i < TA_ARRAY_SIZE(codes); i++) {
        const char *s = ta_strerror(codes[i]);
        assert_non_null(s);
        assert_true(s[0] != 0);
    }
    ta_err_t e;
    assert_int_equal(ta_err_set(&e, "routes[1].priority", "max", "%s: must be at most %d",
                                "routes[1].priority", 1000), TA_EINVAL);
    assert_string_equal(e.field, "routes[1].priority");
    assert_string_equal(e.rule, "max");
    assert_string_equal(e.message, "routes[1].priority: must be at most 1000");
    assert_int_equal(ta_err_set(NULL, "x", "y", "z"), TA_EINVAL);
    char longf[200];
    memset(longf, 'f', sizeof(longf) - 1);
    longf[sizeof(longf) - 1] = 0;
    ta_err_set(&e, longf, longf, "%s", longf);
    assert_int_equal(strlen(e.field), sizeof(e.field) - 1);
    assert_int_equal(strlen(e.rule), sizeof(e.rule) - 1);
    /* the field may be the err's own field (admin re-labels an error that way) */
    ta_err_set(&e, "routes[1].priority", "max", "x");
    ta_err_set(&e, e.field, e.rule, "invalid %s", "model");
    assert_string_equal(e.field, "routes[1].priority");
    assert_string_equal(e.rule, "max");
    assert_string_equal(e.message, "invalid model");
    ta_err_set(&e, NULL, "r", "m");
    assert_string_equal(e.field, "");
}

/* Capture what ta_log writes to stderr. */
static char *capture_log(void (*fn)(void))
{
    char path[] = "/tmp/ta_logtestXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fd, STDERR_FILENO) >= 0);
    fn();
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    off_t n = lseek(fd, 0, SEEK_END);
    char *out = calloc(1, (size_t)n + 1);
    assert_int_equal(pread(fd, out, (size_t)n, 0), n);
    close(fd);
    return out;
}

static void log_some(void)
{
    ta_log_init('W', TA_LOG_INFO);
    ta_log(TA_LOG_DEBUG, "hidden %d", 1);
    ta_log(TA_LOG_INFO, "hello %s", "world");
    ta_log(TA_LOG_ERROR, "two\nlines");
    ta_log_set_level(TA_LOG_ERROR);
    ta_log(TA_LOG_WARN, "hidden too");
    ta_log_set_level(TA_LOG_DEBUG);
    ta_log(TA_LOG_DEBUG, "shown");
}

static void log_long(void)
{
    char big[10000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    ta_log(TA_LOG_WARN, "%s", big);
}

static void test_logging(void **state)
{
    (void)state;
    char *out = capture_log(log_some);
    char want[64];
    snprintf(want, sizeof(want), " [%ld] W info: hello world\n", (long)getpid());
    char *l1 = strstr(out, want);
    assert_non_null(l1);
    /* the line starts with an RFC 3339 time with milliseconds */
    assert_int_equal(l1 - out, 24);
    assert_int_equal(out[4], '-');
    assert_int_equal(out[10], 'T');
    assert_int_equal(out[19], '.');
    assert_int_equal(out[23], 'Z');
    assert_non_null(strstr(out, "W error: two lines\n"));
    assert_non_null(strstr(out, "W debug: shown\n"));
    assert_null(strstr(out, "hidden"));
    int lines = 0;
    for (char *c = out; *c; c++)
        lines += *c == '\n';
    assert_int_equal(lines, 3);
    free(out);
    /* an over-long message is cut to one bounded line */
    out = capture_log(log_long);
    size_t n = strlen(out);
    assert_true(n > 1000 && n <= 4096);
    assert_int_equal(out[n - 1], '\n');
    assert_ptr_equal(strchr(out, '\n'), out + n - 1);
    free(out);
    ta_log_set_level(TA_LOG_INFO);
}

static void test_bug_aborts(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0)
            dup2(devnull, STDERR_FILENO);
        TA_BUG_ON(1 + 1 == 2);
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGABRT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_binary_roundtrip),
        cmocka_unit_test(test_binary_zero_record),
        cmocka_unit_test(test_decode_every_prefix),
        cmocka_unit_test(test_decode_garbage),
        cmocka_unit_test(test_decode_garbage_audit),
        cmocka_unit_test(test_decode_version_and_type),
        cmocka_unit_test(test_decode_unknown_tag_skipped),
        cmocka_unit_test(test_decode_bad_values),
        cmocka_unit_test(test_encode_bounds),
        cmocka_unit_test(test_json_roundtrip),
        cmocka_unit_test(test_json_shape),
        cmocka_unit_test(test_json_internal_records),
        cmocka_unit_test(test_validation_rules),
        cmocka_unit_test(test_route_weight),
        cmocka_unit_test(test_control_characters),
        cmocka_unit_test(test_url_rules),
        cmocka_unit_test(test_json_input_semantics),
        cmocka_unit_test(test_defaults_and_lookup),
        cmocka_unit_test(test_time),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_logging),
        cmocka_unit_test(test_bug_aborts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
