/*
 * test_admin.c - the /api/... handlers driven through ta_admin_handle() with a
 * real ledger (LMDB in a mkdtemp() directory), real PBKDF2 (1000 iterations),
 * real JWTs and API keys. No HTTP server: requests are ta_apireq_t values,
 * answers are parsed back with jansson and checked field by field.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>

#include "admin/admin_internal.h"
#include "admin_fixture.h"
#include "ledger/dump.h"

#define MAX_BODY 4096

static json_t *callf(fx_t *f, int want, const char *method, const char *url, const char *tok,
                     const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static json_t *callf(fx_t *f, int want, const char *method, const char *url, const char *tok,
                     const char *fmt, ...)
{
    char body[8192];
    json_t *j;

    if (fmt != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(body, sizeof(body), fmt, ap);
        va_end(ap);
    }
    j = call_raw(f, method, url, fmt != NULL ? body : NULL, fmt != NULL ? strlen(body) : 0, tok);
    if (f->status != want) {
        char *s = j != NULL ? json_dumps(j, 0) : NULL;
        fail_msg("%s %s: status %d, want %d: %s", method, url, f->status, want, s ? s : "(empty)");
    }
    return j;
}

/* The error shape: type, and the param named (NULL: param must be null). */
static void assert_error(json_t *j, const char *type, const char *param)
{
    json_t *e = json_object_get(j, "error");
    assert_non_null(e);
    assert_string_equal(json_string_value(json_object_get(e, "type")), type);
    assert_non_null(json_string_value(json_object_get(e, "message")));
    assert_non_null(json_object_get(e, "code"));
    if (param == NULL) {
        assert_true(json_is_null(json_object_get(e, "param")));
    } else {
        if (!json_is_string(json_object_get(e, "param")) ||
            strcmp(json_string_value(json_object_get(e, "param")), param) != 0)
            fail_msg("param %s, want %s (%s)", json_string_value(json_object_get(e, "param")),
                     param, json_string_value(json_object_get(e, "message")));
    }
}

static void assert_field_error(json_t *j, const char *field)
{
    assert_error(j, "invalid_request_error", field);
    assert_non_null(json_object_get(json_object_get(json_object_get(j, "error"), "fields"), field));
}

/* A request as the superadmin (body from fmt as in callf, NULL: none) that
 * must be a 400 whose error names field (assert_field_error). */
static void field_error(fx_t *f, const char *method, const char *url, const char *field, const char *fmt,
                        ...) __attribute__((format(printf, 5, 6)));
static void field_error(fx_t *f, const char *method, const char *url, const char *field, const char *fmt,
                        ...)
{
    char body[8192];

    if (fmt != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(body, sizeof(body), fmt, ap);
        va_end(ap);
    }
    assert_field_error(callf(f, 400, method, url, f->admin_tok, fmt != NULL ? "%s" : NULL,
                             fmt != NULL ? body : NULL), field);
}

static char *login(fx_t *f, const char *email, const char *pw)
{
    json_t *j = callf(f, 200, "POST", "/api/auth/login/", NULL,
                      "{\"email\":\"%s\",\"password\":\"%s\"}", email, pw);
    assert_string_equal(jstr(j, "token_type"), "Bearer");
    assert_true(jint(j, "expires_in") > 0);
    return strdup(jstr(j, "access_token"));
}

static int setup(void **state)
{
    fx_t *f = fx_open("/tmp/ta_admin_XXXXXX", MAX_BODY, "Root@Example.com");

    f->admin_tok = login(f, ADMIN_EMAIL, ADMIN_PW);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_close(*state);
    ta_clock_set_offset(0);
    return 0;
}

/* The whole ledger as text, to prove a refused request wrote nothing. */
static char *dump(fx_t *f)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    assert_non_null(m);
    assert_int_equal(ta_ledger_dump(f->st, m, true), 0);
    fclose(m);
    return buf;
}

/* ---- fixtures of data --------------------------------------------------------- */

static long long mk_user(fx_t *f, const char *email, const char *role)
{
    json_t *j = callf(f, 201, "POST", "/api/admin/users/", f->admin_tok,
                      "{\"email\":\"%s\",\"password\":\"password-%s\",\"name\":\"N %s\","
                      "\"role\":\"%s\"}",
                      email, email, email, role);
    return jint(j, "id");
}

static long long mk_provider(fx_t *f, const char *name)
{
    json_t *j = callf(f, 201, "POST", "/api/admin/providers/", f->admin_tok,
                      "{\"name\":\"%s\",\"type\":\"openai\",\"base_url\":\"https://api.example.com/v1\","
                      "\"api_key\":\"sk-upstream-secret-%s\"}",
                      name, name);
    return jint(j, "id");
}

static long long mk_model(fx_t *f, const char *name, long long pid)
{
    json_t *j = callf(f, 201, "POST", "/api/admin/models/", f->admin_tok,
                      "{\"name\":\"%s\",\"routes\":[{\"provider_id\":%lld,\"upstream_name\":\"up-%s\","
                      "\"priority\":1}],\"input_price\":\"2.5\",\"output_price\":10}",
                      name, pid, name);
    return jint(j, "id");
}

static long long mk_group(fx_t *f, const char *name, long long mid)
{
    json_t *j = callf(f, 201, "POST", "/api/admin/groups/", f->admin_tok,
                      "{\"name\":\"%s\",\"model_ids\":[%lld],\"default_quota\":{\"period\":\"day\","
                      "\"cost_limit\":\"5\",\"rpm\":60,\"token_limit\":1000}}",
                      name, mid);
    return jint(j, "id");
}

/* Creates a quota; *key gets the API key (malloc'd). */
static long long mk_quota(fx_t *f, long long uid, long long gid, char **key)
{
    json_t *j = callf(f, 201, "POST", "/api/admin/quotas/", f->admin_tok,
                      "{\"user_id\":%lld,\"group_id\":%lld}", uid, gid);
    if (key != NULL)
        *key = strdup(jstr(j, "api_key"));
    return jint(j, "id");
}

/* ---- tests --------------------------------------------------------------- */

static void test_routing(void **state)
{
    fx_t *f = *state;
    json_t *j;

    j = callf(f, 404, "GET", "/api/nothing/", f->admin_tok, NULL);
    assert_error(j, "not_found_error", NULL);
    callf(f, 200, "GET", "/api/admin/users", f->admin_tok, NULL);
    callf(f, 200, "GET", "/api/admin/users/", f->admin_tok, NULL);
    callf(f, 200, "GET", "/api/admin/users/1", f->admin_tok, NULL);
    callf(f, 404, "GET", "/api/admin/users/0/", f->admin_tok, NULL);
    callf(f, 404, "GET", "/api/admin/users/01/", f->admin_tok, NULL);
    callf(f, 404, "GET", "/api/admin/users/-1/", f->admin_tok, NULL);
    callf(f, 404, "GET", "/api/admin/users/abc/", f->admin_tok, NULL);
    callf(f, 404, "GET", "/api/admin/users/99999999999999999999999/", f->admin_tok, NULL);
    callf(f, 404, "GET", "/api/admin/users//", f->admin_tok, NULL);
    j = callf(f, 404, "GET", "/api/admin/users/12345/", f->admin_tok, NULL);
    assert_error(j, "not_found_error", NULL);

    j = callf(f, 405, "DELETE", "/api/admin/users/", f->admin_tok, NULL);
    assert_error(j, "invalid_request_error", NULL);
    assert_string_equal(f->allow, "GET, POST");
    callf(f, 405, "POST", "/api/admin/users/1/", f->admin_tok, "{}");
    assert_string_equal(f->allow, "GET, PUT, PATCH, DELETE");
    callf(f, 405, "GET", "/api/auth/login", NULL, NULL);
    assert_string_equal(f->allow, "POST");
    callf(f, 405, "GET", "/api/admin/quotas/3/reset_api_key/", f->admin_tok, NULL);
    assert_string_equal(f->allow, "POST");
}

static void test_body_errors(void **state)
{
    fx_t *f = *state;
    char big[MAX_BODY + 100];
    json_t *j;
    const char *msg;

    memset(big, ' ', sizeof(big));
    big[0] = '{';
    big[sizeof(big) - 1] = '}';
    j = call_raw(f, "POST", "/api/admin/users/", big, sizeof(big), f->admin_tok);
    assert_int_equal(f->status, 413);
    assert_error(j, "request_too_large", NULL);

    j = callf(f, 400, "POST", "/api/admin/users/", f->admin_tok, "{\"email\": \n  \"x\",}");
    assert_error(j, "invalid_request_error", NULL);
    msg = jstr(json_object_get(j, "error"), "message");
    assert_non_null(strstr(msg, "line 2"));
    assert_non_null(strstr(msg, "column"));

    j = callf(f, 400, "POST", "/api/admin/users/", f->admin_tok, "[1,2]");
    assert_error(j, "invalid_request_error", NULL);
    j = callf(f, 400, "POST", "/api/admin/users/", f->admin_tok, "\"str\"");
    assert_error(j, "invalid_request_error", NULL);
    j = call_raw(f, "POST", "/api/admin/users/", "{\"email\":\"\xff\xfe@x.com\"}", 17, f->admin_tok);
    assert_int_equal(f->status, 400);
    assert_non_null(strstr(jstr(json_object_get(j, "error"), "message"), "UTF-8"));
    j = call_raw(f, "POST", "/api/admin/users/", NULL, 0, f->admin_tok);
    assert_int_equal(f->status, 400);
    assert_error(j, "invalid_request_error", NULL);
    /* duplicate keys are ambiguous: refused */
    callf(f, 400, "POST", "/api/admin/users/", f->admin_tok,
          "{\"email\":\"a@b.com\",\"email\":\"c@d.com\",\"password\":\"12345678\"}");
}

static void test_auth(void **state)
{
    fx_t *f = *state;
    json_t *j;
    char *utok, *badsig;

    j = callf(f, 401, "GET", "/api/admin/users/", NULL, NULL);
    assert_error(j, "authentication_error", NULL);
    callf(f, 401, "GET", "/api/admin/users/", "RAW:Basic dXNlcjpwYXNz", NULL);
    callf(f, 401, "GET", "/api/admin/users/", "garbage.token.here", NULL);
    callf(f, 401, "GET", "/api/admin/users/", "RAW:Bearer ", NULL);
    callf(f, 401, "GET", "/api/auth/me/", "sk-not-a-real-key", NULL);
    /* a token whose signature was altered */
    badsig = strdup(f->admin_tok);
    badsig[strlen(badsig) - 2] = badsig[strlen(badsig) - 2] == 'A' ? 'B' : 'A';
    callf(f, 401, "GET", "/api/auth/me/", badsig, NULL);
    free(badsig);
    /* scheme is case-insensitive */
    {
        char raw[4200];
        snprintf(raw, sizeof(raw), "RAW:bearer %s", f->admin_tok);
        callf(f, 200, "GET", "/api/auth/me/", raw, NULL);
    }

    mk_user(f, "joe@example.com", "user");
    utok = login(f, "JOE@example.com", "password-joe@example.com");
    j = callf(f, 200, "GET", "/api/auth/me/", utok, NULL);
    assert_string_equal(jstr(j, "email"), "joe@example.com");
    assert_string_equal(jstr(j, "role"), "user");
    assert_null(json_object_get(j, "pwhash"));
    j = callf(f, 403, "GET", "/api/admin/users/", utok, NULL);
    assert_error(j, "permission_error", NULL);
    callf(f, 403, "POST", "/api/admin/providers/", utok, "{}");

    /* expired: move the clock past the token's lifetime */
    ta_clock_set_offset(3600 + 5);
    callf(f, 401, "GET", "/api/auth/me/", utok, NULL);
    ta_clock_set_offset(0);
    callf(f, 200, "GET", "/api/auth/me/", utok, NULL);
    free(utok);
}

static void test_login(void **state)
{
    fx_t *f = *state;
    json_t *j, *j2;
    long long uid;

    j = callf(f, 401, "POST", "/api/auth/login/", NULL,
              "{\"email\":\"root@example.com\",\"password\":\"wrong password\"}");
    assert_error(j, "authentication_error", NULL);
    j2 = callf(f, 401, "POST", "/api/auth/login/", NULL,
               "{\"email\":\"nobody@example.com\",\"password\":\"wrong password\"}");
    /* same answer for an unknown e-mail: nothing tells which exist */
    assert_string_equal(jstr(json_object_get(j, "error"), "message"),
                        jstr(json_object_get(j2, "error"), "message"));
    assert_string_equal(jstr(json_object_get(j, "error"), "message"), "invalid email or password");
    j = callf(f, 400, "POST", "/api/auth/login/", NULL, "{\"email\":\"root@example.com\"}");
    assert_field_error(j, "password");
    j = callf(f, 400, "POST", "/api/auth/login/", NULL, "{\"email\":5,\"password\":\"x\"}");
    assert_field_error(j, "email");
    /* an empty e-mail is one more unknown one (it was a 500: fuzz_admin) */
    j = callf(f, 401, "POST", "/api/auth/login/", NULL, "{\"email\":\"\",\"password\":\"x\"}");
    assert_string_equal(jstr(json_object_get(j, "error"), "code"), "invalid_credentials");

    j = callf(f, 200, "POST", "/api/auth/login/", NULL,
              "{\"email\":\"ROOT@example.COM\",\"password\":\"" ADMIN_PW "\"}");
    assert_string_equal(jstr(json_object_get(j, "user"), "role"), "superadmin");
    assert_int_equal(jint(j, "expires_in"), 3600);

    /* a deactivated user cannot log in */
    uid = mk_user(f, "gone@example.com", "user");
    {
        char url[64];
        snprintf(url, sizeof(url), "/api/admin/users/%lld/", uid);
        callf(f, 200, "PATCH", url, f->admin_tok, "{\"is_active\":false}");
    }
    callf(f, 401, "POST", "/api/auth/login/", NULL,
          "{\"email\":\"gone@example.com\",\"password\":\"password-gone@example.com\"}");
}

/* ---- password work offloaded to the worker's pool (ta_api_job_t) ---------
 * Driven step by step as the worker does it: the handler returns a job, the
 * work runs (here inline, in the worker on a pool thread), then the
 * continuation answers, or, when the client left, only release runs. */

static void handle(fx_t *f, const char *method, const char *url, const char *body, const char *tok,
                   ta_apires_t *rs)
{
    ta_apireq_t rq;
    char auth[4200];

    memset(&rq, 0, sizeof(rq));
    rq.method = method;
    rq.path = url;
    rq.path_len = strlen(url);
    rq.body = body;
    rq.body_len = body != NULL ? strlen(body) : 0;
    if (tok != NULL) {
        snprintf(auth, sizeof(auth), "Bearer %s", tok);
        rq.authorization = auth;
        rq.authorization_len = strlen(auth);
    }
    rq.base_url = "http://gw.test";
    rq.request_id = "test";
    rq.client_ip = "127.0.0.1";
    ta_admin_handle(f->a, &rq, rs);
    /* rq and auth die here: a job must have copied what it needs. */
    memset(auth, 0xA5, sizeof(auth));
}

/* The handler must hand back a job and no answer. */
static ta_api_job_t *job_start(fx_t *f, const char *method, const char *url, const char *tok,
                               const char *body)
{
    ta_apires_t rs;

    handle(f, method, url, body, tok, &rs);
    if (rs.job == NULL)
        fail_msg("%s %s: answered %d at once, want a job: %.*s", method, url, rs.status,
                 (int)rs.body_len, rs.body != NULL ? rs.body : "");
    assert_null(rs.body);
    assert_null(rs.fetch);
    return rs.job;
}

/* The handler must answer want at once, without a job. */
static void answers_at_once(fx_t *f, int want, const char *method, const char *url,
                            const char *tok, const char *body)
{
    ta_apires_t rs;

    handle(f, method, url, body, tok, &rs);
    assert_null(rs.job);
    if (rs.status != want)
        fail_msg("%s %s: status %d, want %d: %.*s", method, url, rs.status, want,
                 (int)rs.body_len, rs.body != NULL ? rs.body : "");
    free(rs.body);
}

/* The continuation's answer (the work ran before), then release. */
static json_t *job_finish(fx_t *f, ta_api_job_t *jb, int want)
{
    ta_apires_t rs;
    json_t *j = NULL;

    jb->cont(f->a, jb->arg, &rs);
    jb->release(jb);
    assert_null(rs.job);
    assert_null(rs.fetch);
    if (rs.body != NULL) {
        j = json_loadb(rs.body, rs.body_len, 0, NULL);
        assert_non_null(j);
        assert_true(f->npool < ADMIN_FX_POOL);
        f->pool[f->npool++] = j;
    }
    if (rs.status != want) {
        char *d = j != NULL ? json_dumps(j, 0) : NULL;
        fail_msg("continuation: status %d, want %d: %s", rs.status, want, d != NULL ? d : "");
    }
    free(rs.body);
    return j;
}

/* The continuation of jb refuses with `want` and error code `code`, and the
 * ledger is byte for byte what it was before it ran. */
static void finish_refused(fx_t *f, ta_api_job_t *jb, int want, const char *code)
{
    char *before = dump(f), *after;
    json_t *j = job_finish(f, jb, want);
    assert_string_equal(jstr(json_object_get(j, "error"), "code"), code);
    after = dump(f);
    assert_string_equal(before, after);
    free(before);
    free(after);
}

static void test_offloaded_jobs(void **state)
{
    fx_t *f = *state;
    ta_api_job_t *ja, *jb;
    json_t *j;
    long long joe;
    char url[96], *before, *after, *tok;

    joe = mk_user(f, "joe@example.com", "user");
    snprintf(url, sizeof(url), "/api/admin/users/%lld/", joe);
    mk_user(f, "taken@example.com", "user");

    /* PBKDF2 only in a job; every check that needs none answers at once */
    jb = job_start(f, "POST", "/api/auth/login/", NULL,
                   "{\"email\":\"nobody@example.com\",\"password\":\"some password\"}");
    jb->work(jb->arg);
    j = job_finish(f, jb, 401);
    assert_string_equal(jstr(json_object_get(j, "error"), "code"), "invalid_credentials");
    answers_at_once(f, 400, "POST", "/api/auth/login/", NULL, "{\"email\":\"joe@example.com\"}");
    answers_at_once(f, 400, "POST", "/api/admin/users/", f->admin_tok,
                    "{\"email\":\"x@example.com\",\"password\":\"short\"}");
    answers_at_once(f, 400, "POST", "/api/admin/users/", f->admin_tok,
                    "{\"email\":\"not an email\",\"password\":\"long enough pw\"}");
    answers_at_once(f, 409, "POST", "/api/admin/users/", f->admin_tok,
                    "{\"email\":\"JOE@example.com\",\"password\":\"long enough pw\"}");
    answers_at_once(f, 404, "PATCH", "/api/admin/users/999/", f->admin_tok,
                    "{\"password\":\"long enough pw\"}");
    answers_at_once(f, 409, "PATCH", url, f->admin_tok,
                    "{\"password\":\"long enough pw\",\"email\":\"taken@example.com\"}");
    answers_at_once(f, 400, "PUT", url, f->admin_tok, "{\"password\":\"long enough pw\"}");
    answers_at_once(f, 200, "PATCH", url, f->admin_tok, "{\"name\":\"Joe\",\"password\":null}");
    tok = login(f, "joe@example.com", "password-joe@example.com");
    answers_at_once(f, 400, "POST", "/api/auth/password/", tok,
                    "{\"old_password\":\"password-joe@example.com\",\"new_password\":\"short\"}");

    /* the client left: release only (after the work, or before it when the
     * queue was full); nothing is written */
    before = dump(f);
    jb = job_start(f, "POST", "/api/admin/users/", f->admin_tok,
                   "{\"email\":\"left@example.com\",\"password\":\"left password\"}");
    jb->work(jb->arg);
    jb->release(jb);
    jb = job_start(f, "PATCH", url, f->admin_tok, "{\"password\":\"never stored pw\"}");
    jb->release(jb);
    jb = job_start(f, "POST", "/api/auth/password/", tok,
                   "{\"old_password\":\"password-joe@example.com\",\"new_password\":\"never stored\"}");
    jb->work(jb->arg);
    jb->release(jb);
    after = dump(f);
    assert_string_equal(before, after);
    free(before);
    free(after);

    /* two creates of one e-mail pass the early check; the second to finish gets 409 */
    ja = job_start(f, "POST", "/api/admin/users/", f->admin_tok,
                   "{\"email\":\"race@example.com\",\"password\":\"race password a\"}");
    jb = job_start(f, "POST", "/api/admin/users/", f->admin_tok,
                   "{\"email\":\"Race@Example.com\",\"password\":\"race password b\"}");
    ja->work(ja->arg);
    jb->work(jb->arg);
    job_finish(f, jb, 201);
    assert_error(job_finish(f, ja, 409), "conflict_error", "email");
    free(login(f, "race@example.com", "race password b"));

    /* an update whose new e-mail was taken while its password hashed */
    ja = job_start(f, "PATCH", url, f->admin_tok,
                   "{\"password\":\"joe new password\",\"email\":\"late@example.com\"}");
    ja->work(ja->arg);
    mk_user(f, "late@example.com", "user");
    assert_error(job_finish(f, ja, 409), "conflict_error", "email");
    /* ... and one that goes through, merging the body again */
    ja = job_start(f, "PUT", url, f->admin_tok,
                   "{\"email\":\"joe@example.com\",\"name\":\"Joe J\",\"role\":\"user\","
                   "\"is_active\":true,\"password\":\"joe new password\"}");
    ja->work(ja->arg);
    j = job_finish(f, ja, 200);
    assert_string_equal(jstr(j, "name"), "Joe J");
    callf(f, 401, "POST", "/api/auth/login/", NULL,
          "{\"email\":\"joe@example.com\",\"password\":\"password-joe@example.com\"}");
    free(tok);
    tok = login(f, "joe@example.com", "joe new password");

    /* a password change that lost to an admin's update while it hashed:
     * the admin's new password ended the session it came from */
    ja = job_start(f, "POST", "/api/auth/password/", tok,
                   "{\"old_password\":\"joe new password\",\"new_password\":\"joe third pass\"}");
    ja->work(ja->arg);
    callf(f, 200, "PATCH", url, f->admin_tok, "{\"password\":\"admin set this\"}");
    finish_refused(f, ja, 401, "session_ended");
    free(tok);
    tok = login(f, "joe@example.com", "admin set this");
    /* a wrong old password is found by the work */
    ja = job_start(f, "POST", "/api/auth/password/", tok,
                   "{\"old_password\":\"joe new password\",\"new_password\":\"joe third pass\"}");
    ja->work(ja->arg);
    assert_field_error(job_finish(f, ja, 400), "old_password");
    free(login(f, "joe@example.com", "admin set this"));

    /* a login verified against a password changed meanwhile, or by a user
     * disabled meanwhile, gets no token */
    ja = job_start(f, "POST", "/api/auth/login/", NULL,
                   "{\"email\":\"joe@example.com\",\"password\":\"admin set this\"}");
    ja->work(ja->arg);
    callf(f, 200, "PATCH", url, f->admin_tok, "{\"password\":\"admin set again\"}");
    j = job_finish(f, ja, 401);
    assert_string_equal(jstr(json_object_get(j, "error"), "code"), "invalid_credentials");
    ja = job_start(f, "POST", "/api/auth/login/", NULL,
                   "{\"email\":\"joe@example.com\",\"password\":\"admin set again\"}");
    ja->work(ja->arg);
    callf(f, 200, "PATCH", url, f->admin_tok, "{\"is_active\":false}");
    j = job_finish(f, ja, 401);
    assert_string_equal(jstr(json_object_get(j, "error"), "code"), "user_inactive");
    free(tok);
}

/* The caller of an offloaded write is authenticated again by its
 * continuation: logged out, disabled or demoted while the hash ran, it gets
 * what the synchronous path would answer now (401/403), and nothing is
 * written. */
static void test_offloaded_reauth(void **state)
{
    fx_t *f = *state;
    ta_api_job_t *jb;
    long long joe, three;
    char url[96], three_url[96], *tok, *t2, *t3;

    joe = mk_user(f, "joe@example.com", "user");
    snprintf(url, sizeof(url), "/api/admin/users/%lld/", joe);
    mk_user(f, "two@example.com", "superadmin");
    three = mk_user(f, "three@example.com", "superadmin");
    snprintf(three_url, sizeof(three_url), "/api/admin/users/%lld/", three);
    t2 = login(f, "two@example.com", "password-two@example.com");
    t3 = login(f, "three@example.com", "password-three@example.com");
    tok = login(f, "joe@example.com", "password-joe@example.com");

    /* a superadmin who logged out while a create hashed */
    jb = job_start(f, "POST", "/api/admin/users/", t2,
                   "{\"email\":\"late1@example.com\",\"password\":\"late1 password\"}");
    jb->work(jb->arg);
    callf(f, 204, "POST", "/api/auth/logout/", t2, NULL);
    finish_refused(f, jb, 401, "token_revoked");
    callf(f, 401, "POST", "/api/auth/login/", NULL,
          "{\"email\":\"late1@example.com\",\"password\":\"late1 password\"}");

    /* ... one demoted while a password update hashed: the demotion ended
     * the session */
    jb = job_start(f, "PATCH", url, t3, "{\"password\":\"set by three\"}");
    jb->work(jb->arg);
    callf(f, 200, "PATCH", three_url, f->admin_tok, "{\"role\":\"user\"}");
    finish_refused(f, jb, 401, "session_ended");
    free(login(f, "joe@example.com", "password-joe@example.com"));

    /* ... one disabled while a create hashed (its token not revoked) */
    callf(f, 200, "PATCH", three_url, f->admin_tok, "{\"role\":\"superadmin\"}");
    free(t3);
    t3 = login(f, "three@example.com", "password-three@example.com");
    jb = job_start(f, "POST", "/api/admin/users/", t3,
                   "{\"email\":\"late2@example.com\",\"password\":\"late2 password\"}");
    jb->work(jb->arg);
    callf(f, 200, "PATCH", three_url, f->admin_tok, "{\"is_active\":false}");
    finish_refused(f, jb, 401, "user_inactive");

    /* a user's own password change, logged out meanwhile, then disabled meanwhile */
    jb = job_start(f, "POST", "/api/auth/password/", tok,
                   "{\"old_password\":\"password-joe@example.com\",\"new_password\":\"joe never\"}");
    jb->work(jb->arg);
    callf(f, 204, "POST", "/api/auth/logout/", tok, NULL);
    finish_refused(f, jb, 401, "token_revoked");
    free(tok);
    tok = login(f, "joe@example.com", "password-joe@example.com");
    jb = job_start(f, "POST", "/api/auth/password/", tok,
                   "{\"old_password\":\"password-joe@example.com\",\"new_password\":\"joe never\"}");
    jb->work(jb->arg);
    callf(f, 200, "PATCH", url, f->admin_tok, "{\"is_active\":false}");
    finish_refused(f, jb, 401, "user_inactive");
    callf(f, 200, "PATCH", url, f->admin_tok, "{\"is_active\":true}");
    free(login(f, "joe@example.com", "password-joe@example.com"));

    /* still authorized: the write goes through */
    jb = job_start(f, "POST", "/api/admin/users/", f->admin_tok,
                   "{\"email\":\"ok@example.com\",\"password\":\"ok password\"}");
    jb->work(jb->arg);
    job_finish(f, jb, 201);
    free(login(f, "ok@example.com", "ok password"));
    free(tok);
    free(t2);
    free(t3);
}

static void test_logout_and_prune(void **state)
{
    fx_t *f = *state;
    char *tok2 = login(f, ADMIN_EMAIL, ADMIN_PW);
    MDB_txn *txn;
    ta_revoked_t rv = {.expires_at = 1000}, got;
    char jti[16];

    /* five long-expired rows that logout may prune */
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_LEDGER, true, &txn), 0);
    for (int i = 0; i < 5; i++) {
        snprintf(jti, sizeof(jti), "old%d", i);
        assert_int_equal(ta_rec_put_k(f->st, txn, &ta_desc_revoked, TA_DB_REVOKED_JWT, jti,
                                      strlen(jti), &rv), 0);
    }
    assert_int_equal(ta_txn_commit(txn), 0);

    callf(f, 401, "POST", "/api/auth/logout/", NULL, NULL);
    assert_null(callf(f, 204, "POST", "/api/auth/logout/", tok2, NULL));
    callf(f, 401, "GET", "/api/auth/me/", tok2, NULL);
    callf(f, 401, "POST", "/api/auth/logout/", tok2, NULL);
    /* another token of the same user is unaffected */
    callf(f, 200, "GET", "/api/auth/me/", f->admin_tok, NULL);
    /* a second admin instance (as another worker would have) refuses it too */
    {
        ta_admin_t *a2;
        ta_admin_conf_t c = {.store = f->st, .jwt_secret = f->jwt_secret,
                             .jwt_secret_len = sizeof(f->jwt_secret),
                             .master_key = f->master_key, .pbkdf2_iterations = 1000};
        ta_admin_t *keep = f->a;
        assert_int_equal(ta_admin_create(&a2, &c), 0);
        f->a = a2;
        callf(f, 401, "GET", "/api/auth/me/", tok2, NULL);
        callf(f, 200, "GET", "/api/auth/me/", f->admin_tok, NULL);
        f->a = keep;
        ta_admin_destroy(a2);
    }
    /* the expired rows were pruned (the table is smaller than one sweep) */
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_LEDGER, false, &txn), 0);
    for (int i = 0; i < 5; i++) {
        snprintf(jti, sizeof(jti), "old%d", i);
        assert_int_equal(ta_rec_get_k(f->st, txn, &ta_desc_revoked, TA_DB_REVOKED_JWT, jti,
                                      strlen(jti), &got),
                         TA_ENOTFOUND);
    }
    ta_txn_abort(txn);
    free(tok2);
}

/* tok authenticates no more: 401 session_ended, on any JWT route. */
static void assert_session_ended(fx_t *f, const char *tok)
{
    json_t *j = callf(f, 401, "GET", "/api/auth/me/", tok, NULL);
    assert_string_equal(jstr(json_object_get(j, "error"), "code"), "session_ended");
    callf(f, 401, "POST", "/api/auth/logout/", tok, NULL);
}

static void test_password_change(void **state)
{
    fx_t *f = *state;
    json_t *j;
    char *tok, *other, *fresh;

    mk_user(f, "pw@example.com", "user");
    tok = login(f, "pw@example.com", "password-pw@example.com");
    j = callf(f, 400, "POST", "/api/auth/password/", tok,
              "{\"old_password\":\"nope nope\",\"new_password\":\"brand new pass\"}");
    assert_field_error(j, "old_password");
    j = callf(f, 400, "POST", "/api/auth/password/", tok,
              "{\"old_password\":\"password-pw@example.com\",\"new_password\":\"short\"}");
    assert_field_error(j, "new_password");
    j = callf(f, 400, "POST", "/api/auth/password/", tok,
              "{\"old_password\":\"password-pw@example.com\"}");
    assert_field_error(j, "new_password");
    other = login(f, "pw@example.com", "password-pw@example.com");
    /* the answer carries a token of the new session generation ... */
    j = callf(f, 200, "POST", "/api/auth/password/", tok,
              "{\"old_password\":\"password-pw@example.com\",\"new_password\":\"brand new pass\"}");
    assert_string_equal(jstr(j, "token_type"), "Bearer");
    assert_int_equal(jint(json_object_get(j, "user"), "token_gen"), 1);
    fresh = strdup(jstr(j, "access_token"));
    j = callf(f, 200, "GET", "/api/auth/me/", fresh, NULL);
    assert_string_equal(jstr(j, "email"), "pw@example.com");
    /* ... and every earlier token of the user, this one's too, has ended */
    assert_session_ended(f, tok);
    assert_session_ended(f, other);
    callf(f, 401, "POST", "/api/auth/login/", NULL,
          "{\"email\":\"pw@example.com\",\"password\":\"password-pw@example.com\"}");
    free(login(f, "pw@example.com", "brand new pass"));
    free(fresh);
    free(other);
    free(tok);
}

/* A throttled login answers 429 with Retry-After at once: no job, so no
 * hash, even with the right password. */
static void assert_throttled(fx_t *f, const char *email, const char *pw)
{
    ta_apires_t rs;
    char body[256];
    json_t *j;

    snprintf(body, sizeof(body), "{\"email\":\"%s\",\"password\":\"%s\"}", email, pw);
    handle(f, "POST", "/api/auth/login/", body, NULL, &rs);
    assert_null(rs.job);
    if (rs.status != 429)
        fail_msg("login %s: status %d, want 429: %.*s", email, rs.status, (int)rs.body_len,
                 rs.body != NULL ? rs.body : "");
    assert_int_equal(rs.retry_after, 60);
    j = json_loadb(rs.body, rs.body_len, 0, NULL);
    assert_non_null(j);
    assert_error(j, "rate_limit_error", NULL);
    assert_string_equal(jstr(json_object_get(j, "error"), "code"), "login_throttled");
    json_decref(j);
    free(rs.body);
}

/* The login throttle through the handlers (the table's own rules are in
 * test_throttle.c): counted per account and per address, cleared by a
 * success, refused before the hash. A second admin over the same table
 * stands for another worker. */
static void test_login_throttle(void **state)
{
    fx_t *f = *state;
    ta_throttle_t *th;
    ta_admin_t *a2, *keep = f->a;
    ta_admin_conf_t c = {.store = f->st, .jwt_secret = f->jwt_secret,
                         .jwt_secret_len = sizeof(f->jwt_secret), .master_key = f->master_key,
                         .pbkdf2_iterations = 1000};

    mk_user(f, "t1@example.com", "user");
    mk_user(f, "t2@example.com", "user");
    assert_int_equal(ta_throttle_create(&th), 0);
    c.login_throttle = th;
    assert_int_equal(ta_admin_create(&a2, &c), TA_EINVAL); /* limits unset */
    c.login_limits = (ta_throttle_conf_t){.account_failures = 3, .address_failures = 7,
                                          .backoff_ms = 60000, .account_max_ms = 60000,
                                          .address_max_ms = 60000};
    assert_int_equal(ta_admin_create(&a2, &c), 0);
    f->a = a2;

    /* logins that never ran (the worker's queue was full) count nothing */
    for (int i = 0; i < 5; i++) {
        ta_api_job_t *jb = job_start(f, "POST", "/api/auth/login/", NULL,
                                     "{\"email\":\"t1@example.com\",\"password\":\"wrong wrong\"}");
        jb->release(jb);
    }
    /* two failures, then a success clears the account's count */
    callf(f, 401, "POST", "/api/auth/login/", NULL,
          "{\"email\":\"t1@example.com\",\"password\":\"wrong wrong\"}");
    callf(f, 401, "POST", "/api/auth/login/", NULL,
          "{\"email\":\"T1@example.com\",\"password\":\"wrong wrong\"}");
    free(login(f, "t1@example.com", "password-t1@example.com"));
    /* three failures in a row: the right password waits too */
    for (int i = 0; i < 3; i++)
        callf(f, 401, "POST", "/api/auth/login/", NULL,
              "{\"email\":\"t1@example.com\",\"password\":\"wrong wrong\"}");
    assert_throttled(f, "t1@example.com", "password-t1@example.com");
    assert_throttled(f, "T1@EXAMPLE.COM", "password-t1@example.com");
    /* ... in every worker */
    f->a = keep;
    {
        ta_admin_t *a3;
        assert_int_equal(ta_admin_create(&a3, &c), 0);
        f->a = a3;
        assert_throttled(f, "t1@example.com", "password-t1@example.com");
        f->a = a2;
        ta_admin_destroy(a3);
    }
    /* another account from the same address is not throttled by t1's
     * count, only past the address's: 5 of 7 failures so far (a success
     * withdrew its own count, throttled attempts counted nothing) */
    callf(f, 401, "POST", "/api/auth/login/", NULL,
          "{\"email\":\"t2@example.com\",\"password\":\"wrong wrong\"}");
    free(login(f, "t2@example.com", "password-t2@example.com")); /* withdraws its count */
    callf(f, 401, "POST", "/api/auth/login/", NULL,
          "{\"email\":\"t2@example.com\",\"password\":\"wrong wrong\"}"); /* 7th */
    assert_throttled(f, "t2@example.com", "password-t2@example.com");
    assert_throttled(f, "nobody@example.com", "any password");
    /* an admin without a table does not throttle */
    f->a = keep;
    callf(f, 200, "POST", "/api/auth/login/", NULL,
          "{\"email\":\"t1@example.com\",\"password\":\"password-t1@example.com\"}");
    ta_admin_destroy(a2);
    ta_throttle_destroy(th);
}

/* What an admin changes about a user ends that user's sessions when it is
 * the password, the status or the role; a name or an e-mail does not. */
static void test_sessions_end(void **state)
{
    fx_t *f = *state;
    long long uid;
    char url[96], *tok, *t2;
    json_t *j;

    uid = mk_user(f, "s@example.com", "user");
    snprintf(url, sizeof(url), "/api/admin/users/%lld/", uid);

    tok = login(f, "s@example.com", "password-s@example.com");
    callf(f, 200, "PATCH", url, f->admin_tok, "{\"name\":\"Still In\",\"email\":\"S2@example.com\"}");
    callf(f, 200, "GET", "/api/auth/me/", tok, NULL);

    /* an admin sets the password */
    callf(f, 200, "PATCH", url, f->admin_tok, "{\"password\":\"set by admin\"}");
    assert_session_ended(f, tok);
    free(tok);
    tok = login(f, "s2@example.com", "set by admin");
    callf(f, 200, "GET", "/api/auth/me/", tok, NULL);

    /* deactivated, then reactivated: the old token does not come back */
    callf(f, 200, "PATCH", url, f->admin_tok, "{\"is_active\":false}");
    callf(f, 401, "GET", "/api/auth/me/", tok, NULL);
    callf(f, 200, "PATCH", url, f->admin_tok, "{\"is_active\":true}");
    assert_session_ended(f, tok);
    free(tok);

    /* DELETE (deactivation) then reactivation, the same */
    tok = login(f, "s2@example.com", "set by admin");
    callf(f, 204, "DELETE", url, f->admin_tok, NULL);
    callf(f, 200, "PATCH", url, f->admin_tok, "{\"is_active\":true}");
    assert_session_ended(f, tok);
    free(tok);

    /* a role change, both ways: a promoted user's old token cannot reach
     * the admin routes, a demoted admin's cannot either */
    tok = login(f, "s2@example.com", "set by admin");
    callf(f, 200, "PATCH", url, f->admin_tok, "{\"role\":\"superadmin\"}");
    assert_session_ended(f, tok);
    callf(f, 401, "GET", "/api/admin/users/", tok, NULL);
    free(tok);
    tok = login(f, "s2@example.com", "set by admin");
    callf(f, 200, "GET", "/api/admin/users/", tok, NULL);
    t2 = login(f, "s2@example.com", "set by admin");
    callf(f, 200, "PUT", url, f->admin_tok,
          "{\"email\":\"s2@example.com\",\"name\":\"x\",\"role\":\"user\",\"is_active\":true}");
    assert_session_ended(f, tok);
    assert_session_ended(f, t2);
    free(t2);
    free(tok);
    /* the new login works, and the generation shows in the user */
    tok = login(f, "s2@example.com", "set by admin");
    j = callf(f, 200, "GET", "/api/auth/me/", tok, NULL);
    assert_int_equal(jint(j, "token_gen"), 7);
    /* a PUT that changes none of the three keeps the session */
    callf(f, 200, "PUT", url, f->admin_tok,
          "{\"email\":\"s2@example.com\",\"name\":\"y\",\"role\":\"user\",\"is_active\":true}");
    callf(f, 200, "GET", "/api/auth/me/", tok, NULL);
    /* token_gen is not API input */
    j = callf(f, 200, "PATCH", url, f->admin_tok, "{\"token_gen\":0}");
    assert_int_equal(jint(j, "token_gen"), 7);
    callf(f, 200, "GET", "/api/auth/me/", tok, NULL);
    free(tok);
}

static void test_users(void **state)
{
    fx_t *f = *state;
    json_t *j, *r;
    long long uid, me;
    char url[96], *before, *after;

    j = callf(f, 201, "POST", "/api/admin/users/", f->admin_tok,
              "{\"email\":\"Alice@Example.com\",\"password\":\"alice-password\",\"name\":\"Alice A\"}");
    uid = jint(j, "id");
    assert_string_equal(jstr(j, "email"), "alice@example.com");
    assert_string_equal(jstr(j, "role"), "user");
    assert_true(json_is_true(json_object_get(j, "is_active")));
    assert_non_null(strchr(jstr(j, "created_at"), 'T'));
    assert_null(json_object_get(j, "password"));
    assert_null(json_object_get(j, "pwhash"));

    before = dump(f);
    j = callf(f, 409, "POST", "/api/admin/users/", f->admin_tok,
              "{\"email\":\"ALICE@example.com\",\"password\":\"alice-password\"}");
    assert_error(j, "conflict_error", "email");
    field_error(f, "POST", "/api/admin/users/", "password", "{\"email\":\"bob@example.com\"}");
    field_error(f, "POST", "/api/admin/users/", "password",
                "{\"email\":\"bob@example.com\",\"password\":\"short\"}");
    field_error(f, "POST", "/api/admin/users/", "email",
                "{\"email\":\"not-an-email\",\"password\":\"long enough\"}");
    field_error(f, "POST", "/api/admin/users/", "role",
                "{\"email\":\"bob@example.com\",\"password\":\"long enough\",\"role\":\"god\"}");
    field_error(f, "POST", "/api/admin/users/", "email", "{\"password\":\"long enough\"}");
    after = dump(f);
    assert_string_equal(before, after);
    free(before);
    free(after);

    snprintf(url, sizeof(url), "/api/admin/users/%lld/", uid);
    j = callf(f, 200, "GET", url, f->admin_tok, NULL);
    assert_string_equal(jstr(j, "name"), "Alice A");
    j = callf(f, 200, "PATCH", url, f->admin_tok, "{\"name\":\"Alice B\"}");
    assert_string_equal(jstr(j, "name"), "Alice B");
    assert_string_equal(jstr(j, "email"), "alice@example.com");
    j = callf(f, 200, "PUT", url, f->admin_tok,
              "{\"email\":\"alice2@example.com\",\"name\":\"Alice C\",\"role\":\"user\","
              "\"password\":\"another password\"}");
    assert_string_equal(jstr(j, "email"), "alice2@example.com");
    /* the index follows: new e-mail logs in, the old one is free again */
    free(login(f, "alice2@example.com", "another password"));
    callf(f, 401, "POST", "/api/auth/login/", NULL,
          "{\"email\":\"alice@example.com\",\"password\":\"another password\"}");
    mk_user(f, "alice@example.com", "user");
    j = callf(f, 409, "PATCH", url, f->admin_tok, "{\"email\":\"ROOT@example.com\"}");
    assert_error(j, "conflict_error", "email");
    field_error(f, "PUT", url, "email", "{\"name\":\"no email\"}");
    field_error(f, "PATCH", url, "is_active", "{\"is_active\":\"yes\"}");
    callf(f, 404, "PATCH", "/api/admin/users/999/", f->admin_tok, "{\"name\":\"x\"}");

    /* a superadmin cannot remove themselves */
    j = callf(f, 200, "GET", "/api/auth/me/", f->admin_tok, NULL);
    me = jint(j, "id");
    snprintf(url, sizeof(url), "/api/admin/users/%lld/", me);
    field_error(f, "PATCH", url, "is_active", "{\"is_active\":false}");
    field_error(f, "PATCH", url, "role", "{\"role\":\"user\"}");
    j = callf(f, 400, "DELETE", url, f->admin_tok, NULL);
    assert_field_error(j, "id");
    callf(f, 200, "PATCH", url, f->admin_tok, "{\"name\":\"Root\"}");

    /* list filters */
    {
        /* a role change ends the sessions of the user: the demoted
         * admin's token is refused, and stays refused once promoted again */
        long long zid = mk_user(f, "zed@example.com", "superadmin");
        char *ztok = login(f, "zed@example.com", "password-zed@example.com");
        char zurl[64];
        callf(f, 200, "GET", "/api/admin/users/", ztok, NULL);
        snprintf(zurl, sizeof(zurl), "/api/admin/users/%lld/", zid);
        callf(f, 200, "PATCH", zurl, f->admin_tok, "{\"role\":\"user\"}");
        callf(f, 401, "GET", "/api/admin/users/", ztok, NULL);
        free(ztok);
        /* the role comes from the stored user: a user's token gets 403 */
        ztok = login(f, "zed@example.com", "password-zed@example.com");
        callf(f, 403, "GET", "/api/admin/users/", ztok, NULL);
        callf(f, 200, "PATCH", zurl, f->admin_tok, "{\"role\":\"superadmin\"}");
        callf(f, 401, "GET", "/api/admin/users/", ztok, NULL);
        free(ztok);
        ztok = login(f, "zed@example.com", "password-zed@example.com");
        callf(f, 200, "GET", "/api/admin/users/", ztok, NULL);
        free(ztok);
    }
    j = callf(f, 200, "GET", "/api/admin/users/?role=superadmin", f->admin_tok, NULL);
    assert_int_equal(jint(j, "count"), 2);
    j = callf(f, 200, "GET", "/api/admin/users/?search=ALICE", f->admin_tok, NULL);
    assert_int_equal(jint(j, "count"), 2);
    j = callf(f, 200, "GET", "/api/admin/users/?search=N+zed", f->admin_tok, NULL); /* by name */
    assert_int_equal(jint(j, "count"), 1);
    r = json_array_get(json_object_get(j, "results"), 0);
    assert_string_equal(jstr(r, "email"), "zed@example.com");
    j = callf(f, 200, "GET", "/api/admin/users/?search=%5A%45D%40", f->admin_tok, NULL);
    assert_int_equal(jint(j, "count"), 1);
    j = callf(f, 200, "GET", "/api/admin/users/?is_active=true&role=user", f->admin_tok, NULL);
    assert_int_equal(jint(j, "count"), 2);
    field_error(f, "GET", "/api/admin/users/?role=admin", "role", NULL);
    field_error(f, "GET", "/api/admin/users/?is_active=maybe", "is_active", NULL);
    field_error(f, "GET", "/api/admin/users/?search=%ZZ", "search", NULL);
    field_error(f, "GET", "/api/admin/users/?search=%FF", "search", NULL);
}

static void test_pagination(void **state)
{
    fx_t *f = *state;
    json_t *j;
    char email[64];

    for (int i = 0; i < 7; i++) {
        snprintf(email, sizeof(email), "p%d@example.com", i);
        mk_user(f, email, "user");
    }
    j = callf(f, 200, "GET", "/api/admin/users/?page_size=3", f->admin_tok, NULL);
    assert_int_equal(jint(j, "count"), 8);
    assert_int_equal(json_array_size(json_object_get(j, "results")), 3);
    assert_string_equal(jstr(j, "next"), "http://gw.test/api/admin/users/?page_size=3&page=2");
    assert_true(json_is_null(json_object_get(j, "previous")));
    assert_int_equal(jint(json_array_get(json_object_get(j, "results"), 0), "id"), 1);

    j = callf(f, 200, "GET", "/api/admin/users/?page=3&page_size=3&search=example", f->admin_tok, NULL);
    assert_int_equal(jint(j, "count"), 8);
    assert_int_equal(json_array_size(json_object_get(j, "results")), 2);
    assert_true(json_is_null(json_object_get(j, "next")));
    assert_string_equal(jstr(j, "previous"),
                        "http://gw.test/api/admin/users/?page_size=3&search=example&page=2");
    assert_int_equal(jint(json_array_get(json_object_get(j, "results"), 1), "id"), 8);

    j = callf(f, 200, "GET", "/api/admin/users/?page=2&page_size=3", f->admin_tok, NULL);
    assert_string_equal(jstr(j, "previous"), "http://gw.test/api/admin/users/?page_size=3&page=1");
    assert_int_equal(jint(json_array_get(json_object_get(j, "results"), 0), "id"), 4);

    j = callf(f, 200, "GET", "/api/admin/users/?page=9", f->admin_tok, NULL);
    assert_int_equal(json_array_size(json_object_get(j, "results")), 0);
    assert_int_equal(jint(j, "count"), 8);
    j = callf(f, 200, "GET", "/api/admin/users/", f->admin_tok, NULL);
    assert_int_equal(json_array_size(json_object_get(j, "results")), 8);
    assert_true(json_is_null(json_object_get(j, "next")));

    field_error(f, "GET", "/api/admin/users/?page_size=0", "page_size", NULL);
    field_error(f, "GET", "/api/admin/users/?page_size=501", "page_size", NULL);
    callf(f, 200, "GET", "/api/admin/users/?page_size=500", f->admin_tok, NULL);
    field_error(f, "GET", "/api/admin/users/?page=abc", "page", NULL);
    field_error(f, "GET", "/api/admin/users/?page=0", "page", NULL);
    field_error(f, "GET", "/api/admin/users/?page=-1", "page", NULL);

    /* The links are rebuilt from the decoded parameters: one that does not
     * decode (a raw 0xFF, a bad escape, NUL) is left out, the others are
     * percent-encoded again, and `page` is recognized however it is spelled. */
    j = callf(f, 200, "GET", "/api/admin/users/?page_size=3&x\xFF=1&y=%ZZ&z=%00&\xFF", f->admin_tok, NULL);
    assert_string_equal(jstr(j, "next"), "http://gw.test/api/admin/users/?page_size=3&page=2");
    j = callf(f, 200, "GET", "/api/admin/users/?page_size=3&q=ex+ample%20%C3%A9&&pag%65=2&flag",
              f->admin_tok, NULL);
    assert_string_equal(jstr(j, "previous"),
                        "http://gw.test/api/admin/users/?page_size=3&q=ex%20ample%20%C3%A9&flag&page=1");
    assert_string_equal(jstr(j, "next"),
                        "http://gw.test/api/admin/users/?page_size=3&q=ex%20ample%20%C3%A9&flag&page=3");
}

static void test_providers(void **state)
{
    fx_t *f = *state;
    json_t *j;
    long long pid, mid;
    char url[64], murl[64], plain[128];
    ta_provider_t p;
    MDB_txn *txn;

    j = callf(f, 201, "POST", "/api/admin/providers/", f->admin_tok,
              "{\"name\":\"OpenAI\",\"type\":\"openai\",\"base_url\":\"https://api.openai.com/v1\","
              "\"api_key\":\"sk-proj-abcdefghijklmnop1234\",\"timeout_s\":120}");
    pid = jint(j, "id");
    assert_true(json_is_true(json_object_get(j, "api_key_set")));
    assert_string_equal(jstr(j, "api_key_last4"), "1234");
    assert_int_equal(jint(j, "timeout_s"), 120);
    assert_null(json_object_get(j, "api_key"));
    assert_null(json_object_get(j, "key_sealed"));
    {
        char *s = json_dumps(j, 0);
        assert_null(strstr(s, "abcdefghijklmnop"));
        free(s);
    }
    /* the stored key is sealed under the master key and opens back */
    assert_int_equal(ta_txn_begin(f->st, TA_ENV_LEDGER, false, &txn), 0);
    assert_int_equal(ta_rec_get(f->st, txn, &ta_desc_provider, (uint64_t)pid, &p), 0);
    ta_txn_abort(txn);
    assert_true(p.key_sealed_len > 0);
    assert_null(memmem(p.key_sealed, p.key_sealed_len, "abcdefghijklmnop", 16));
    assert_int_equal(ta_unseal(f->master_key, p.key_sealed, p.key_sealed_len, plain, sizeof(plain)), 28);
    assert_string_equal(plain, "sk-proj-abcdefghijklmnop1234");

    field_error(f, "POST", "/api/admin/providers/", "type",
                "{\"name\":\"X\",\"type\":\"cohere\",\"base_url\":\"https://x.example.com\"}");
    field_error(f, "POST", "/api/admin/providers/", "base_url",
                "{\"name\":\"X\",\"type\":\"openai\",\"base_url\":\"ftp://x.example.com\"}");
    field_error(f, "POST", "/api/admin/providers/", "api_key",
                "{\"name\":\"X\",\"type\":\"openai\",\"base_url\":\"https://x.example.com\",\"api_key\":7}");
    /* The key is sent as a header value upstream: a CR/LF in it would add
     * header lines; refused where it is written, nothing stored. */
    j = callf(f, 400, "POST", "/api/admin/providers/", f->admin_tok,
              "{\"name\":\"X\",\"type\":\"openai\",\"base_url\":\"https://x.example.com\","
              "\"api_key\":\"sk-a\\r\\nX-Injected: 1\"}");
    assert_field_error(j, "api_key");
    assert_string_equal(jstr(json_object_get(j, "error"), "code"), "control");
    field_error(f, "POST", "/api/admin/providers/", "api_key",
                "{\"name\":\"X\",\"type\":\"openai\",\"base_url\":\"https://x.example.com\","
                "\"api_key\":\"sk-\\u007fx\"}");
    field_error(f, "PATCH", "/api/admin/providers/1/", "api_key", "{\"api_key\":\"sk-abc\\ndef\"}");
    field_error(f, "POST", "/api/admin/providers/", "name",
                "{\"name\":\"X\\r\\nY\",\"type\":\"openai\",\"base_url\":\"https://x.example.com\"}");
    j = callf(f, 400, "POST", "/api/admin/providers/", f->admin_tok,
              "{\"name\":\"X\",\"type\":\"openai\",\"base_url\":\"https://u:p@x.example.com/v1\"}");
    assert_field_error(j, "base_url");
    assert_string_equal(jstr(json_object_get(j, "error"), "code"), "credentials");
    j = callf(f, 200, "GET", "/api/admin/providers/", f->admin_tok, NULL);
    assert_int_equal(jint(j, "count"), 1);

    snprintf(url, sizeof(url), "/api/admin/providers/%lld/", pid);
    j = callf(f, 200, "PATCH", url, f->admin_tok, "{\"type\":\"anthropic\"}");
    assert_string_equal(jstr(j, "type"), "anthropic");
    assert_string_equal(jstr(j, "api_key_last4"), "1234"); /* kept */
    j = callf(f, 200, "PATCH", url, f->admin_tok, "{\"api_key\":\"sk-ant-zzzzzzzzzzzz9876\"}");
    assert_string_equal(jstr(j, "api_key_last4"), "9876");
    j = callf(f, 200, "GET", "/api/admin/providers/", f->admin_tok, NULL);
    assert_int_equal(jint(j, "count"), 1);

    mid = mk_model(f, "gpt-x", pid);
    j = callf(f, 409, "DELETE", url, f->admin_tok, NULL);
    assert_error(j, "conflict_error", NULL);
    assert_non_null(strstr(jstr(json_object_get(j, "error"), "message"), "gpt-x"));
    snprintf(murl, sizeof(murl), "/api/admin/models/%lld/", mid);
    callf(f, 204, "DELETE", murl, f->admin_tok, NULL);
    callf(f, 204, "DELETE", url, f->admin_tok, NULL);
    callf(f, 404, "GET", url, f->admin_tok, NULL);
    callf(f, 404, "DELETE", url, f->admin_tok, NULL);
}

static void test_models(void **state)
{
    fx_t *f = *state;
    json_t *j, *r;
    long long p1, p2, m1, m2, gid;
    char url[64], *before, *after;

    p1 = mk_provider(f, "one");
    p2 = mk_provider(f, "two");
    j = callf(f, 201, "POST", "/api/admin/models/", f->admin_tok,
              "{\"name\":\"gpt-4o\",\"routes\":[{\"provider_id\":%lld,\"upstream_name\":\"gpt-4o-2024\","
              "\"priority\":1},{\"provider_id\":%lld,\"upstream_name\":\"gpt-4o\",\"priority\":2}],"
              "\"input_price\":\"2.5\",\"output_price\":10,\"cache_read_price\":\"0.000125\","
              "\"capabilities\":[\"chat\",\"tools\"],\"context_window\":128000}",
              p1, p2);
    m1 = jint(j, "id");
    assert_string_equal(jstr(j, "input_price"), "2.5");
    assert_string_equal(jstr(j, "output_price"), "10");
    assert_string_equal(jstr(j, "cache_read_price"), "0.000125");
    assert_int_equal(json_array_size(json_object_get(j, "routes")), 2);
    r = json_array_get(json_object_get(j, "routes"), 1);
    assert_int_equal(jint(r, "provider_id"), p2);

    before = dump(f);
    j = callf(f, 409, "POST", "/api/admin/models/", f->admin_tok,
              "{\"name\":\"gpt-4o\",\"routes\":[]}");
    assert_error(j, "conflict_error", "name");
    j = callf(f, 400, "POST", "/api/admin/models/", f->admin_tok,
              "{\"name\":\"new\",\"routes\":[{\"provider_id\":%lld,\"upstream_name\":\"a\"},"
              "{\"provider_id\":999,\"upstream_name\":\"b\"}]}",
              p1);
    assert_field_error(j, "routes[1].provider_id");
    field_error(f, "POST", "/api/admin/models/", "input_price",
                "{\"name\":\"new\",\"input_price\":\"1.0000000001\"}");
    field_error(f, "POST", "/api/admin/models/", "name", "{\"name\":\"\"}");
    after = dump(f);
    assert_string_equal(before, after);
    free(before);
    free(after);

    m2 = mk_model(f, "claude", p2);
    snprintf(url, sizeof(url), "/api/admin/models/%lld/", m2);
    j = callf(f, 409, "PATCH", url, f->admin_tok, "{\"name\":\"gpt-4o\"}");
    assert_error(j, "conflict_error", "name");
    field_error(f, "PATCH", url, "routes[0].provider_id",
                "{\"routes\":[{\"provider_id\":555,\"upstream_name\":\"x\"}]}");
    j = callf(f, 200, "PATCH", url, f->admin_tok, "{\"name\":\"claude-3\"}");
    assert_string_equal(jstr(j, "name"), "claude-3");
    /* the old name is free again, the new one taken */
    mk_model(f, "claude", p1);
    callf(f, 409, "POST", "/api/admin/models/", f->admin_tok, "{\"name\":\"claude-3\"}");

    j = callf(f, 200, "GET", "/api/admin/models/?search=CLAUDE", f->admin_tok, NULL);
    assert_int_equal(jint(j, "count"), 2);
    {
        char q[96];
        snprintf(q, sizeof(q), "/api/admin/models/?provider_id=%lld", p2);
        j = callf(f, 200, "GET", q, f->admin_tok, NULL);
        assert_int_equal(jint(j, "count"), 2); /* gpt-4o (2nd route) and claude-3 */
        snprintf(q, sizeof(q), "/api/admin/models/?provider_id=%lld&search=gpt", p2);
        j = callf(f, 200, "GET", q, f->admin_tok, NULL);
        assert_int_equal(jint(j, "count"), 1);
    }
    field_error(f, "GET", "/api/admin/models/?provider_id=x", "provider_id", NULL);
    field_error(f, "GET", "/api/admin/models/?provider_id=0", "provider_id", NULL);

    gid = mk_group(f, "g", m1);
    snprintf(url, sizeof(url), "/api/admin/models/%lld/", m1);
    j = callf(f, 409, "DELETE", url, f->admin_tok, NULL);
    assert_error(j, "conflict_error", NULL);
    {
        char gurl[64];
        snprintf(gurl, sizeof(gurl), "/api/admin/groups/%lld/", gid);
        callf(f, 200, "PATCH", gurl, f->admin_tok, "{\"model_ids\":[]}");
    }
    callf(f, 204, "DELETE", url, f->admin_tok, NULL);
    callf(f, 404, "GET", url, f->admin_tok, NULL);
    /* the name went with it */
    mk_model(f, "gpt-4o", p1);
}

static void test_groups(void **state)
{
    fx_t *f = *state;
    json_t *j, *dq;
    long long pid, m1, gid, uid, qid;
    char url[64], qurl[64];

    pid = mk_provider(f, "p");
    m1 = mk_model(f, "m1", pid);
    j = callf(f, 400, "POST", "/api/admin/groups/", f->admin_tok,
              "{\"name\":\"g\",\"model_ids\":[%lld,777]}", m1);
    assert_field_error(j, "model_ids[1]");
    j = callf(f, 400, "POST", "/api/admin/groups/", f->admin_tok,
              "{\"name\":\"g\",\"model_ids\":[%lld,%lld]}", m1, m1);
    assert_field_error(j, "model_ids[1]");
    field_error(f, "POST", "/api/admin/groups/", "default_quota.period",
                "{\"name\":\"g\",\"default_quota\":{\"period\":\"year\"}}");

    j = callf(f, 201, "POST", "/api/admin/groups/", f->admin_tok,
              "{\"name\":\"team\",\"description\":\"the team\",\"model_ids\":[%lld],"
              "\"default_quota\":{\"period\":\"week\",\"cost_limit\":12.5,\"rpm\":30}}",
              m1);
    gid = jint(j, "id");
    dq = json_object_get(j, "default_quota");
    assert_string_equal(jstr(dq, "period"), "week");
    assert_string_equal(jstr(dq, "cost_limit"), "12.5");
    assert_int_equal(jint(dq, "rpm"), 30);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(j, "model_ids"), 0)), m1);

    snprintf(url, sizeof(url), "/api/admin/groups/%lld/", gid);
    j = callf(f, 200, "PATCH", url, f->admin_tok, "{\"description\":\"changed\"}");
    assert_string_equal(jstr(j, "description"), "changed");
    assert_string_equal(jstr(json_object_get(j, "default_quota"), "cost_limit"), "12.5");
    j = callf(f, 200, "GET", "/api/admin/groups/", f->admin_tok, NULL);
    assert_int_equal(jint(j, "count"), 1);

    uid = mk_user(f, "g@example.com", "user");
    qid = mk_quota(f, uid, gid, NULL);
    j = callf(f, 409, "DELETE", url, f->admin_tok, NULL);
    assert_error(j, "conflict_error", NULL);
    snprintf(qurl, sizeof(qurl), "/api/admin/quotas/%lld/", qid);
    callf(f, 204, "DELETE", qurl, f->admin_tok, NULL);
    callf(f, 204, "DELETE", url, f->admin_tok, NULL);
    callf(f, 404, "GET", url, f->admin_tok, NULL);
}

static void test_quotas(void **state)
{
    fx_t *f = *state;
    json_t *j, *u;
    long long pid, mid, gid, gid2, uid, uid2, qid, qid2;
    char url[96], *key, *key2, *before, *after;

    pid = mk_provider(f, "p");
    mid = mk_model(f, "m", pid);
    gid = mk_group(f, "g", mid);
    gid2 = mk_group(f, "g2", mid);
    uid = mk_user(f, "q@example.com", "user");
    uid2 = mk_user(f, "other@example.com", "user");

    j = callf(f, 201, "POST", "/api/admin/quotas/", f->admin_tok,
              "{\"user_id\":%lld,\"group_id\":%lld,\"rpm\":5,\"token_limit\":null,"
              "\"warn_at\":[50,90],\"expires_at\":\"2099-01-01T00:00:00Z\"}",
              uid, gid);
    qid = jint(j, "id");
    key = strdup(jstr(j, "api_key"));
    assert_int_equal(strlen(key), TA_APIKEY_LEN);
    assert_int_equal(strncmp(jstr(j, "key_prefix"), key, TA_KEY_PREFIX_LEN), 0);
    /* from the group where omitted, from the request where given */
    assert_string_equal(jstr(j, "period"), "day");
    assert_string_equal(jstr(j, "cost_limit"), "5");
    assert_int_equal(jint(j, "rpm"), 5);
    assert_true(json_is_null(json_object_get(j, "token_limit")));
    assert_string_equal(jstr(j, "expires_at"), "2099-01-01T00:00:00Z");
    u = json_object_get(j, "usage");
    assert_non_null(u);
    assert_string_equal(jstr(u, "cost_used"), "0");
    assert_string_equal(jstr(u, "cost_held"), "0");
    assert_int_equal(jint(u, "tokens_used"), 0);
    assert_int_equal(jint(u, "requests_used"), 0);
    assert_int_equal(jint(u, "in_flight"), 0);
    assert_non_null(strchr(jstr(u, "period_start"), 'T'));
    assert_non_null(strchr(jstr(u, "period_end"), 'T'));
    assert_null(json_object_get(j, "key_hash"));

    snprintf(url, sizeof(url), "/api/admin/quotas/%lld/", qid);
    j = callf(f, 200, "GET", url, f->admin_tok, NULL);
    assert_null(json_object_get(j, "api_key"));
    assert_non_null(json_object_get(j, "usage"));

    before = dump(f);
    j = callf(f, 400, "POST", "/api/admin/quotas/", f->admin_tok,
              "{\"user_id\":%lld,\"group_id\":999}", uid);
    assert_field_error(j, "group_id");
    j = callf(f, 400, "POST", "/api/admin/quotas/", f->admin_tok,
              "{\"user_id\":999,\"group_id\":%lld}", gid);
    assert_field_error(j, "user_id");
    j = callf(f, 400, "POST", "/api/admin/quotas/", f->admin_tok, "{\"group_id\":%lld}", gid);
    assert_field_error(j, "user_id");
    j = callf(f, 400, "POST", "/api/admin/quotas/", f->admin_tok,
              "{\"user_id\":%lld,\"group_id\":%lld,\"period\":\"hour\"}", uid, gid);
    assert_field_error(j, "period");
    j = callf(f, 400, "POST", "/api/admin/quotas/", f->admin_tok,
              "{\"user_id\":%lld,\"group_id\":%lld,\"cost_limit\":\"abc\"}", uid, gid);
    assert_field_error(j, "cost_limit");
    j = callf(f, 400, "PATCH", url, f->admin_tok, "{\"user_id\":%lld}", uid2);
    assert_field_error(j, "user_id");
    field_error(f, "PATCH", url, "group_id", "{\"group_id\":4242}");
    field_error(f, "PATCH", url, "warn_at[1]", "{\"warn_at\":[90,50]}");
    after = dump(f);
    assert_string_equal(before, after);
    free(before);
    free(after);

    j = callf(f, 200, "PATCH", url, f->admin_tok, "{\"cost_limit\":\"7.25\",\"group_id\":%lld}", gid2);
    assert_string_equal(jstr(j, "cost_limit"), "7.25");
    assert_int_equal(jint(j, "group_id"), gid2);
    assert_int_equal(jint(j, "rpm"), 5);
    assert_string_equal(jstr(j, "key_prefix"), json_string_value(json_object_get(j, "key_prefix")));

    /* the key authenticates its owner on the user endpoints only */
    j = callf(f, 200, "GET", "/api/auth/me/", key, NULL);
    assert_int_equal(jint(j, "id"), uid);
    callf(f, 401, "GET", "/api/admin/quotas/", key, NULL);
    callf(f, 401, "POST", "/api/auth/logout/", key, NULL);

    /* other quotas; list filters */
    qid2 = mk_quota(f, uid2, gid, &key2);
    mk_quota(f, uid, gid, NULL);
    j = callf(f, 200, "GET", "/api/admin/quotas/", f->admin_tok, NULL);
    assert_int_equal(jint(j, "count"), 3);
    assert_non_null(json_object_get(json_array_get(json_object_get(j, "results"), 0), "usage"));
    snprintf(url, sizeof(url), "/api/admin/quotas/?user_id=%lld", uid);
    j = callf(f, 200, "GET", url, f->admin_tok, NULL);
    assert_int_equal(jint(j, "count"), 2);
    snprintf(url, sizeof(url), "/api/admin/quotas/?user_id=%lld&group_id=%lld", uid, gid);
    j = callf(f, 200, "GET", url, f->admin_tok, NULL);
    assert_int_equal(jint(j, "count"), 1);
    field_error(f, "GET", "/api/admin/quotas/?user_id=abc", "user_id", NULL);
    field_error(f, "GET", "/api/admin/quotas/?group_id=1.5", "group_id", NULL);

    /* a user sees only their own quotas, by JWT and by API key */
    {
        char *utok = login(f, "q@example.com", "password-q@example.com");
        j = callf(f, 200, "GET", "/api/quotas/", utok, NULL);
        assert_int_equal(jint(j, "count"), 2);
        for (size_t i = 0; i < 2; i++) {
            json_t *q = json_array_get(json_object_get(j, "results"), i);
            assert_int_equal(jint(q, "user_id"), uid);
            assert_non_null(json_object_get(q, "usage"));
            assert_null(json_object_get(q, "api_key"));
        }
        j = callf(f, 200, "GET", "/api/quotas", key, NULL);
        assert_int_equal(jint(j, "count"), 2);
        j = callf(f, 200, "GET", "/api/quotas/", key2, NULL);
        assert_int_equal(jint(j, "count"), 1);
        assert_int_equal(jint(json_array_get(json_object_get(j, "results"), 0), "id"), qid2);
        free(utok);
    }

    /* reset: the old key stops at once, the new one works */
    snprintf(url, sizeof(url), "/api/admin/quotas/%lld/reset_api_key/", qid);
    j = callf(f, 200, "POST", url, f->admin_tok, NULL);
    callf(f, 401, "GET", "/api/auth/me/", key, NULL);
    free(key);
    key = strdup(jstr(j, "api_key"));
    callf(f, 200, "GET", "/api/auth/me/", key, NULL);

    /* an inactive quota's key is refused */
    snprintf(url, sizeof(url), "/api/admin/quotas/%lld/", qid);
    callf(f, 200, "PATCH", url, f->admin_tok, "{\"is_active\":false}");
    callf(f, 401, "GET", "/api/quotas/", key, NULL);
    callf(f, 200, "PUT", url, f->admin_tok, "{\"user_id\":%lld,\"group_id\":%lld,\"is_active\":true}",
          uid, gid);
    callf(f, 200, "GET", "/api/quotas/", key, NULL);

    /* delete: key revoked, quota gone */
    callf(f, 204, "DELETE", url, f->admin_tok, NULL);
    callf(f, 401, "GET", "/api/auth/me/", key, NULL);
    callf(f, 404, "GET", url, f->admin_tok, NULL);
    callf(f, 404, "DELETE", url, f->admin_tok, NULL);
    snprintf(url, sizeof(url), "/api/admin/quotas/%lld/reset_api_key/", qid);
    callf(f, 404, "POST", url, f->admin_tok, NULL);
    free(key);
    free(key2);
}

static void test_user_delete_and_reset_all(void **state)
{
    fx_t *f = *state;
    json_t *j, *arr;
    long long pid, mid, gid, uid, q1, q2;
    char url[96], *k1, *k2, *utok;
    const char *n1 = NULL, *n2 = NULL;

    pid = mk_provider(f, "p");
    mid = mk_model(f, "m", pid);
    gid = mk_group(f, "g", mid);
    uid = mk_user(f, "d@example.com", "user");
    q1 = mk_quota(f, uid, gid, &k1);
    q2 = mk_quota(f, uid, gid, &k2);
    utok = login(f, "d@example.com", "password-d@example.com");

    snprintf(url, sizeof(url), "/api/admin/users/%lld/reset-all-keys/", uid);
    j = callf(f, 200, "POST", url, f->admin_tok, NULL);
    arr = json_object_get(j, "quotas");
    assert_int_equal(json_array_size(arr), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *e = json_array_get(arr, i);
        if (jint(e, "id") == q1)
            n1 = jstr(e, "api_key");
        if (jint(e, "id") == q2)
            n2 = jstr(e, "api_key");
    }
    assert_non_null(n1);
    assert_non_null(n2);
    callf(f, 401, "GET", "/api/auth/me/", k1, NULL);
    callf(f, 401, "GET", "/api/auth/me/", k2, NULL);
    callf(f, 200, "GET", "/api/auth/me/", n1, NULL);
    callf(f, 200, "GET", "/api/auth/me/", n2, NULL);
    callf(f, 404, "POST", "/api/admin/users/9999/reset-all-keys/", f->admin_tok, NULL);

    snprintf(url, sizeof(url), "/api/admin/users/%lld/", uid);
    callf(f, 204, "DELETE", url, f->admin_tok, NULL);
    j = callf(f, 200, "GET", url, f->admin_tok, NULL); /* the record stays */
    assert_true(json_is_false(json_object_get(j, "is_active")));
    callf(f, 401, "GET", "/api/auth/me/", n1, NULL);
    callf(f, 401, "GET", "/api/auth/me/", n2, NULL);
    callf(f, 401, "GET", "/api/auth/me/", utok, NULL);
    /* reactivating brings neither the keys nor the session back */
    callf(f, 200, "PATCH", url, f->admin_tok, "{\"is_active\":true}");
    callf(f, 401, "GET", "/api/auth/me/", n1, NULL);
    callf(f, 401, "GET", "/api/auth/me/", utok, NULL);
    free(login(f, "d@example.com", "password-d@example.com"));
    /* the keys table holds no row for this user's quotas */
    {
        MDB_txn *txn;
        MDB_cursor *cur;
        MDB_val k, v;
        int n = 0;
        assert_int_equal(ta_txn_begin(f->st, TA_ENV_LEDGER, false, &txn), 0);
        assert_int_equal(mdb_cursor_open(txn, ta_store_dbi(f->st, TA_DB_KEYS), &cur), 0);
        while (mdb_cursor_get(cur, &k, &v, n == 0 ? MDB_FIRST : MDB_NEXT) == 0)
            n++;
        mdb_cursor_close(cur);
        ta_txn_abort(txn);
        assert_int_equal(n, 0);
    }
    callf(f, 404, "DELETE", "/api/admin/users/9999/", f->admin_tok, NULL);
    free(k1);
    free(k2);
    free(utok);
}

static void test_create_superadmin(void **state)
{
    fx_t *f = *state;
    ta_err_t err;

    memset(&err, 0, sizeof(err));
    assert_int_equal(ta_admin_create_superadmin(f->st, "ROOT@example.com", "whatever123", 1000, &err),
                     TA_EEXIST);
    assert_string_equal(err.field, "email");
    assert_int_equal(ta_admin_create_superadmin(f->st, "x@example.com", "short", 1000, &err), TA_EINVAL);
    assert_string_equal(err.field, "password");
    assert_int_equal(ta_admin_create_superadmin(f->st, "bad", "long enough pw", 1000, &err), TA_EINVAL);
    assert_string_equal(err.field, "email");
    assert_int_equal(ta_admin_create_superadmin(f->st, "two@example.com", "long enough pw", 1000, &err), 0);
    free(login(f, "two@example.com", "long enough pw"));
}

/* Every row of the route table carries its documentation, and the
 * generator accepts the table (a row without it fails here). */
static void test_route_table_documented(void **state)
{
    const ta_admin_route_t *r;
    char why[256];
    size_t n = 0;

    (void)state;
    for (size_t i = 0; (r = ta_admin_route(i)) != NULL; i++, n++) {
        assert_non_null(r->fn);
        assert_non_null(r->op_id);
        assert_non_null(r->tag);
        assert_non_null(r->summary);
        assert_non_null(r->params);
        assert_non_null(r->errors);
        assert_true(r->status == 200 || r->status == 201 || r->status == 204);
    }
    assert_true(n > 40);
    why[0] = '\0';
    if (ta_openapi_check(why, sizeof(why)) != 0)
        fail_msg("the route table is not fully documented: %s", why);
}

/* GET /api/openapi.json: no credentials, the document with its own path. */
static void test_openapi_served(void **state)
{
    fx_t *f = *state;
    json_t *j = callf(f, 200, "GET", "/api/openapi.json", NULL, NULL), *op;

    assert_string_equal(jstr(j, "openapi"), "3.0.3");
    op = json_object_get(json_object_get(json_object_get(j, "paths"), "/api/openapi.json"), "get");
    assert_non_null(op);
    assert_string_equal(json_string_value(json_object_get(op, "operationId")), "openapi");
    assert_non_null(json_object_get(json_object_get(json_object_get(j, "paths"),
                                                    "/api/admin/users/{id}/"), "patch"));
    callf(f, 405, "POST", "/api/openapi.json", NULL, "{}");
}

/* TA_ROUTE_WRITE is enforced: a write transaction on a route without it is
 * refused with a 500 and no transaction. */
static void test_write_flag_enforced(void **state)
{
    fx_t *f = *state;
    ta_apireq_t req;
    ta_apires_t res;
    actx_t c;

    ta_admin_ctx_rebuild(&c, &req, f->a, &res, "GET", "/api/admin/users/", "test-write-flag", 0);
    assert_int_not_equal(ta_admin_txn(&c, true), 0);
    assert_null(c.txn);
    assert_int_equal(res.status, 500);
    free(res.body);

    ta_admin_ctx_rebuild(&c, &req, f->a, &res, "POST", "/api/admin/users/", "test-write-flag", 0);
    c.may_write = true;
    assert_int_equal(ta_admin_txn(&c, true), 0);
    assert_non_null(c.txn);
    ta_txn_abort(c.txn);
    free(res.body);
}

/* Keyset pages: ?after= / ?before= by id, their links, the O(1) count. */
static void test_keyset_pages(void **state)
{
    fx_t *f = *state;
    long long id[5];
    char url[128], want[160];
    json_t *j, *r;

    id[0] = 1; /* the superadmin */
    for (int i = 1; i < 5; i++) {
        char email[32];
        snprintf(email, sizeof(email), "k%d@example.com", i);
        id[i] = mk_user(f, email, "user");
    }
    j = callf(f, 200, "GET", "/api/admin/users/?page_size=2", f->admin_tok, NULL);
    assert_int_equal(jint(j, "count"), 5);
    assert_false(json_is_true(json_object_get(j, "count_estimated")));

    snprintf(url, sizeof(url), "/api/admin/users/?page_size=2&after=%lld", id[1]);
    j = callf(f, 200, "GET", url, f->admin_tok, NULL);
    r = json_object_get(j, "results");
    assert_int_equal(json_array_size(r), 2);
    assert_int_equal(jint(json_array_get(r, 0), "id"), id[2]);
    assert_int_equal(jint(json_array_get(r, 1), "id"), id[3]);
    assert_int_equal(jint(j, "count"), 5);
    snprintf(want, sizeof(want), "http://gw.test/api/admin/users/?page_size=2&after=%lld", id[3]);
    assert_string_equal(jstr(j, "next"), want);
    snprintf(want, sizeof(want), "http://gw.test/api/admin/users/?page_size=2&before=%lld", id[2]);
    assert_string_equal(jstr(j, "previous"), want);

    snprintf(url, sizeof(url), "/api/admin/users/?page_size=2&after=%lld", id[3]);
    j = callf(f, 200, "GET", url, f->admin_tok, NULL);
    assert_int_equal(json_array_size(json_object_get(j, "results")), 1);
    assert_true(json_is_null(json_object_get(j, "next")));

    snprintf(url, sizeof(url), "/api/admin/users/?page_size=2&before=%lld", id[2]);
    j = callf(f, 200, "GET", url, f->admin_tok, NULL);
    r = json_object_get(j, "results");
    assert_int_equal(json_array_size(r), 2);
    assert_int_equal(jint(json_array_get(r, 0), "id"), id[0]); /* ascending, as every page */
    assert_int_equal(jint(json_array_get(r, 1), "id"), id[1]);
    assert_true(json_is_null(json_object_get(j, "previous")));

    /* a filter: the count is sampled, exact on a small table */
    j = callf(f, 200, "GET", "/api/admin/users/?page_size=1&after=1&search=k", f->admin_tok, NULL);
    assert_int_equal(jint(j, "count"), 4);
    assert_false(json_is_true(json_object_get(j, "count_estimated")));

    field_error(f, "GET", "/api/admin/users/?after=1&before=3", "before", NULL);
    field_error(f, "GET", "/api/admin/users/?after=1&page=2", "page", NULL);
    field_error(f, "GET", "/api/admin/users/?after=x", "after", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_routing),
        T(test_route_table_documented),
        T(test_openapi_served),
        T(test_write_flag_enforced),
        T(test_body_errors),
        T(test_auth),
        T(test_login),
        T(test_logout_and_prune),
        T(test_password_change),
        T(test_sessions_end),
        T(test_login_throttle),
        T(test_offloaded_jobs),
        T(test_offloaded_reauth),
        T(test_users),
        T(test_pagination),
        T(test_keyset_pages),
        T(test_providers),
        T(test_models),
        T(test_groups),
        T(test_quotas),
        T(test_user_delete_and_reset_all),
        T(test_create_superadmin),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
