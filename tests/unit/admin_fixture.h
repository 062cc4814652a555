/*
 * admin_fixture.h - the fixture test_admin.c and test_admin_audit.c share: a
 * real store (LMDB in a mkdtemp() directory), a ta_admin_t over it with real
 * PBKDF2 (1000 iterations) and random JWT secret / master key, a superadmin,
 * and requests driven through ta_admin_handle() whose JSON answers are kept
 * until teardown; an answer offloaded to the worker's pool (ta_api_job_t) is
 * finished inline by fx_run_job().
 *
 * Include after cmocka.h and jansson.h. Before including, a test may define
 *   ADMIN_FX_POOL   how many answers one test keeps (default 512);
 *   ADMIN_FX_EXTRA  more fields of fx_t (e.g. ids of its data set).
 * Everything here is static inline: a test that uses only part of it still
 * compiles with -Wall -Werror.
 */
#ifndef TA_TESTS_ADMIN_FIXTURE_H
#define TA_TESTS_ADMIN_FIXTURE_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admin/admin.h"
#include "admin/crypto.h"
#include "ledger/store.h"

#define ADMIN_EMAIL "root@example.com"
#define ADMIN_PW "correct horse battery"

#ifndef ADMIN_FX_POOL
#define ADMIN_FX_POOL 512
#endif
#ifndef ADMIN_FX_EXTRA
#define ADMIN_FX_EXTRA
#endif

typedef struct fx {
    char dir[64];
    ta_store_t *st;
    ta_admin_t *a;
    uint8_t jwt_secret[32], master_key[32];
    char *admin_tok;
    json_t *pool[ADMIN_FX_POOL]; /* answers kept until teardown */
    size_t npool;
    int status; /* of the last call */
    char allow[64];
    ADMIN_FX_EXTRA
} fx_t;

static inline int fx_rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

/* What the worker does with an offloaded answer (schema/api.h, ta_api_job_t),
 * inline: the work, then the continuation's answer replaces rs, then release. */
static inline void fx_run_job(fx_t *f, ta_apires_t *rs)
{
    ta_api_job_t *jb = rs->job;

    if (jb == NULL)
        return;
    assert_null(rs->fetch);
    free(rs->body);
    jb->work(jb->arg);
    jb->cont(f->a, jb->arg, rs);
    assert_null(rs->job);
    assert_null(rs->fetch);
    jb->release(jb);
}

/* One request. url may carry "?query". tok: NULL none, "RAW:..." a literal
 * Authorization value, else a bearer token. Returns the parsed answer (NULL
 * for an empty body); it stays valid until teardown. An answer with a body
 * must be JSON, and say so when it names a content type. */
static inline json_t *call_raw(fx_t *f, const char *method, const char *url, const char *body,
                               size_t body_len, const char *tok)
{
    ta_apireq_t rq;
    ta_apires_t rs;
    char auth[4200];
    const char *q = strchr(url, '?');
    json_t *j = NULL;
    json_error_t e;

    memset(&rq, 0, sizeof(rq));
    rq.method = method;
    rq.path = url;
    rq.path_len = q != NULL ? (size_t)(q - url) : strlen(url);
    if (q != NULL) {
        rq.query = q + 1;
        rq.query_len = strlen(q + 1);
    }
    rq.body = body;
    rq.body_len = body_len;
    if (tok != NULL) {
        if (strncmp(tok, "RAW:", 4) == 0)
            snprintf(auth, sizeof(auth), "%s", tok + 4);
        else
            snprintf(auth, sizeof(auth), "Bearer %s", tok);
        rq.authorization = auth;
        rq.authorization_len = strlen(auth);
    }
    rq.base_url = "http://gw.test";
    rq.request_id = "test";
    rq.client_ip = "127.0.0.1";
    ta_admin_handle(f->a, &rq, &rs);
    fx_run_job(f, &rs);
    f->status = rs.status;
    memcpy(f->allow, rs.allow, sizeof(f->allow));
    if (rs.body != NULL) {
        assert_true(rs.content_type == NULL || strstr(rs.content_type, "json") != NULL);
        j = json_loadb(rs.body, rs.body_len, 0, &e);
        if (j == NULL)
            fail_msg("answer is not JSON: %.*s", (int)rs.body_len, rs.body);
        free(rs.body);
        assert_true(f->npool < ADMIN_FX_POOL);
        f->pool[f->npool++] = j;
    }
    return j;
}

/* call_raw() with a NUL-terminated body (NULL: none). */
static inline json_t *call(fx_t *f, const char *method, const char *url, const char *body,
                           const char *tok)
{
    return call_raw(f, method, url, body, body != NULL ? strlen(body) : 0, tok);
}

static inline const char *jstr(json_t *j, const char *k)
{
    json_t *v = json_object_get(j, k);
    if (!json_is_string(v))
        fail_msg("%s is not a string", k);
    return json_string_value(v);
}

static inline long long jint(json_t *j, const char *k)
{
    json_t *v = json_object_get(j, k);
    if (!json_is_integer(v))
        fail_msg("%s is not an integer", k);
    return json_integer_value(v);
}

/* A fresh store in mkdtemp(dir_template), an admin over it (max_body) and the
 * superadmin superadmin_email / ADMIN_PW. Not logged in: admin_tok is NULL. */
static inline fx_t *fx_open(const char *dir_template, size_t max_body, const char *superadmin_email)
{
    fx_t *f = calloc(1, sizeof(*f));
    ta_err_t err;

    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "%s", dir_template);
    assert_non_null(mkdtemp(f->dir));
    ta_store_opts_t o = {.create = true, .ledger_map_size = 64u << 20, .audit_map_size = 64u << 20};
    assert_int_equal(ta_store_open(&f->st, f->dir, &o), 0);
    assert_int_equal(ta_random(f->jwt_secret, sizeof(f->jwt_secret)), 0);
    assert_int_equal(ta_random(f->master_key, sizeof(f->master_key)), 0);
    ta_admin_conf_t c = {.store = f->st,
                         .jwt_secret = f->jwt_secret,
                         .jwt_secret_len = sizeof(f->jwt_secret),
                         .master_key = f->master_key,
                         .jwt_ttl_s = 3600,
                         .pbkdf2_iterations = 1000,
                         .max_body = max_body};
    assert_int_equal(ta_admin_create(&f->a, &c), 0);
    assert_int_equal(ta_admin_create_superadmin(f->st, superadmin_email, ADMIN_PW, 1000, &err), 0);
    return f;
}

/* Frees the kept answers and the token, closes admin and store, removes the
 * directory, frees f. */
static inline void fx_close(fx_t *f)
{
    for (size_t i = 0; i < f->npool; i++)
        json_decref(f->pool[i]);
    free(f->admin_tok);
    ta_admin_destroy(f->a);
    ta_store_close(f->st);
    nftw(f->dir, fx_rm_cb, 8, FTW_DEPTH | FTW_PHYS);
    free(f);
}

#endif
