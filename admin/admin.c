/*
 * admin.c - the /api/... router and the helpers every handler shares: JSON
 * answers and errors in API.md's shape, request bodies, query strings and
 * pagination.
 *
 * LMDB: the router itself opens no transaction. auth_check() runs in a read
 * transaction of its own; each handler opens at most one transaction
 * (ctx_txn) on the ledger environment, which the router commits (write, the
 * answer < 400) or aborts (anything else) after the handler returns, so a
 * rejected request never leaves a partial write. Writers serialize on LMDB's
 * process-shared write lock; readers see the last committed state, so a
 * write answered here is visible to every worker's next request. A worker
 * killed inside a handler loses only its uncommitted transaction.
 * Password work (pwjob_t) runs on the worker's pool thread with no
 * transaction; its continuation here opens its own and ends it the same way.
 *
 * Worker processes only, on the loop thread (pwjob_work: a pool thread).
 */
#include "admin/admin_internal.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema/apierror.h"

/* ---- the route table --------------------------------------------------------
 * One line per route. "{id}" matches a positive decimal integer (no sign, no
 * leading zero); every pattern matches with and without its trailing slash.
 * A path that matches some pattern under another method answers 405 with
 * Allow. Routes added later (quota requests/statistics, the audit section,
 * provider test/sync-models) go in as one more line each. */
enum {
    R_BODY = 1u << 0,  /* a JSON object body is required */
    R_WRITE = 1u << 1, /* documentation only: the handler writes */
};

typedef struct route {
    const char *method;
    const char *pattern;
    int auth;
    unsigned flags;
    handler_fn fn;
} route_t;

static const route_t routes[] = {
    {"POST", "/api/auth/login/", AUTH_NONE, R_BODY, h_login},
    {"POST", "/api/auth/logout/", AUTH_JWT, R_WRITE, h_logout},
    {"GET", "/api/auth/me/", AUTH_USER, 0, h_me},
    {"POST", "/api/auth/password/", AUTH_JWT, R_BODY | R_WRITE, h_password},
    {"GET", "/api/quotas/", AUTH_USER, 0, h_my_quotas},

    {"GET", "/api/admin/users/", AUTH_ADMIN, 0, h_users_list},
    {"POST", "/api/admin/users/", AUTH_ADMIN, R_BODY | R_WRITE, h_users_create},
    {"GET", "/api/admin/users/{id}/", AUTH_ADMIN, 0, h_users_get},
    {"PUT", "/api/admin/users/{id}/", AUTH_ADMIN, R_BODY | R_WRITE, h_users_update},
    {"PATCH", "/api/admin/users/{id}/", AUTH_ADMIN, R_BODY | R_WRITE, h_users_update},
    {"DELETE", "/api/admin/users/{id}/", AUTH_ADMIN, R_WRITE, h_users_delete},
    {"POST", "/api/admin/users/{id}/reset-all-keys/", AUTH_ADMIN, R_WRITE, h_users_reset_keys},

    {"GET", "/api/admin/providers/", AUTH_ADMIN, 0, h_providers_list},
    {"POST", "/api/admin/providers/", AUTH_ADMIN, R_BODY | R_WRITE, h_providers_create},
    {"GET", "/api/admin/providers/{id}/", AUTH_ADMIN, 0, h_providers_get},
    {"PUT", "/api/admin/providers/{id}/", AUTH_ADMIN, R_BODY | R_WRITE, h_providers_update},
    {"PATCH", "/api/admin/providers/{id}/", AUTH_ADMIN, R_BODY | R_WRITE, h_providers_update},
    {"DELETE", "/api/admin/providers/{id}/", AUTH_ADMIN, R_WRITE, h_providers_delete},
    {"POST", "/api/admin/providers/{id}/test/", AUTH_ADMIN, 0, h_providers_test},
    {"POST", "/api/admin/providers/{id}/sync-models/", AUTH_ADMIN, R_WRITE, h_providers_sync_models},

    {"GET", "/api/admin/models/", AUTH_ADMIN, 0, h_models_list},
    {"POST", "/api/admin/models/", AUTH_ADMIN, R_BODY | R_WRITE, h_models_create},
    {"GET", "/api/admin/models/{id}/", AUTH_ADMIN, 0, h_models_get},
    {"PUT", "/api/admin/models/{id}/", AUTH_ADMIN, R_BODY | R_WRITE, h_models_update},
    {"PATCH", "/api/admin/models/{id}/", AUTH_ADMIN, R_BODY | R_WRITE, h_models_update},
    {"DELETE", "/api/admin/models/{id}/", AUTH_ADMIN, R_WRITE, h_models_delete},

    {"GET", "/api/admin/groups/", AUTH_ADMIN, 0, h_groups_list},
    {"POST", "/api/admin/groups/", AUTH_ADMIN, R_BODY | R_WRITE, h_groups_create},
    {"GET", "/api/admin/groups/{id}/", AUTH_ADMIN, 0, h_groups_get},
    {"PUT", "/api/admin/groups/{id}/", AUTH_ADMIN, R_BODY | R_WRITE, h_groups_update},
    {"PATCH", "/api/admin/groups/{id}/", AUTH_ADMIN, R_BODY | R_WRITE, h_groups_update},
    {"DELETE", "/api/admin/groups/{id}/", AUTH_ADMIN, R_WRITE, h_groups_delete},

    {"GET", "/api/admin/quotas/", AUTH_ADMIN, 0, h_quotas_list},
    {"POST", "/api/admin/quotas/", AUTH_ADMIN, R_BODY | R_WRITE, h_quotas_create},
    {"GET", "/api/admin/quotas/{id}/", AUTH_ADMIN, 0, h_quotas_get},
    {"PUT", "/api/admin/quotas/{id}/", AUTH_ADMIN, R_BODY | R_WRITE, h_quotas_update},
    {"PATCH", "/api/admin/quotas/{id}/", AUTH_ADMIN, R_BODY | R_WRITE, h_quotas_update},
    {"DELETE", "/api/admin/quotas/{id}/", AUTH_ADMIN, R_WRITE, h_quotas_delete},
    {"POST", "/api/admin/quotas/{id}/reset_api_key/", AUTH_ADMIN, R_WRITE, h_quotas_reset_key},
    {"GET", "/api/admin/quotas/{id}/requests/", AUTH_ADMIN, 0, h_quota_requests},
    {"GET", "/api/admin/quotas/{id}/statistics/", AUTH_ADMIN, 0, h_quota_statistics},
    {"GET", "/api/admin/requests/", AUTH_ADMIN, 0, h_requests_list},
    {"GET", "/api/admin/statistics/", AUTH_ADMIN, 0, h_statistics},
};

/* ---- create / destroy ----------------------------------------------------- */

int ta_admin_create(ta_admin_t **out, const ta_admin_conf_t *conf)
{
    ta_admin_t *a = NULL;
    char pw[33];
    uint8_t rnd[16];
    int rc;

    *out = NULL;
    if (conf == NULL || conf->store == NULL || conf->jwt_secret == NULL || conf->master_key == NULL)
        return TA_EINVAL;
    if (conf->login_throttle != NULL &&
        (conf->login_limits.account_failures < 1 || conf->login_limits.address_failures < 1 ||
         conf->login_limits.backoff_ms < 1 || conf->login_limits.account_max_ms < 1 ||
         conf->login_limits.address_max_ms < 1))
        return TA_EINVAL;
    a = calloc(1, sizeof(*a));
    if (a == NULL)
        return -ENOMEM;
    a->conf = *conf;
    if (a->conf.jwt_ttl_s <= 0)
        a->conf.jwt_ttl_s = TA_ADMIN_JWT_TTL_DEFAULT;
    if (a->conf.max_body == 0)
        a->conf.max_body = TA_ADMIN_MAX_BODY_DEFAULT;
    if ((rc = ta_random(rnd, sizeof(rnd))) != 0)
        goto Exit;
    ta_hex(rnd, sizeof(rnd), pw);
    rc = ta_password_hash(pw, a->conf.pbkdf2_iterations, a->dummy_hash);
    if (rc < 0)
        goto Exit;
    a->dummy_hash_len = (size_t)rc;
    rc = 0;
    *out = a;
    a = NULL;
Exit:
    free(a);
    return rc;
}

void ta_admin_destroy(ta_admin_t *a)
{
    free(a);
}

/* ---- replies ------------------------------------------------------------- */

static void set_body(actx_t *c, int status, char *body)
{
    free(c->res->body);
    c->res->status = status;
    c->res->body = body;
    c->res->body_len = body != NULL ? strlen(body) : 0;
    c->res->content_type = NULL;
}

static json_t *error_obj(const char *type, const char *code, const char *param, const char *msg);

/* v == NULL means a handler could not build its answer: a json_pack whose
 * argument was NULL (a string jansson refused, an allocation that failed)
 * looks the same from here, so the answer says no more than "internal
 * error" and the log keeps the request id to find it. */
void reply_json(actx_t *c, int status, json_t *v)
{
    char *s;

    if (v == NULL) {
        ta_log(TA_LOG_ERROR, "admin %s %.*s: the %d answer could not be built (%s)",
               c->req->method, (int)c->req->path_len, c->req->path, status,
               c->req->request_id != NULL ? c->req->request_id : "-");
        v = error_obj("server_error", "internal_error", NULL,
                      "internal error: the answer could not be built");
        status = 500;
    }
    s = v != NULL ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    if (s == NULL) {
        set_body(c, 500, strdup(ta_error_body_oom));
        return;
    }
    set_body(c, status, s);
}

void reply_204(actx_t *c)
{
    set_body(c, 204, NULL);
}

/* Messages and params may echo client bytes (a path, a method, a value cut at
 * a byte bound), so they are made valid UTF-8 rather than refused by jansson. */
static json_t *error_obj(const char *type, const char *code, const char *param, const char *msg)
{
    return ta_error_json(type, code, param, msg); /* the one error body (schema/apierror.h) */
}

void reply_error(actx_t *c, int status, const char *type, const char *code, const char *param,
                 const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    reply_json(c, status, error_obj(type, code, param, msg));
}

void reply_invalid(actx_t *c, const ta_err_t *err)
{
    const char *field = err->field[0] != '\0' ? err->field : NULL;
    const char *msg = err->message[0] != '\0' ? err->message : "invalid request";
    json_t *v = error_obj("invalid_request_error", err->rule[0] != '\0' ? err->rule : "invalid",
                          field, msg);

    if (v != NULL && field != NULL)
        json_object_set_new(json_object_get(v, "error"), "fields",
                            json_pack("{s:o}", field, ta_json_string_lossy(msg, strlen(msg))));
    reply_json(c, 400, v);
}

void reply_field(actx_t *c, const char *field, const char *rule, const char *fmt, ...)
{
    ta_err_t err;
    char msg[200];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ta_err_set(&err, field, rule, "%s: %s", field, msg);
    reply_invalid(c, &err);
}

void reply_not_found(actx_t *c, const char *what)
{
    if (c->id != 0)
        reply_error(c, 404, "not_found_error", "not_found", NULL, "%s %llu not found", what,
                    (unsigned long long)c->id);
    else
        reply_error(c, 404, "not_found_error", "not_found", NULL, "%s not found", what);
}

void reply_store_error(actx_t *c, int rc, const char *what)
{
    if (rc == TA_ENOTFOUND) {
        reply_not_found(c, what);
    } else if (rc == TA_EFULL) {
        reply_error(c, 507, "server_error", "storage_full", NULL, "the ledger is full");
    } else {
        ta_log(TA_LOG_ERROR, "admin %s %s: %s (%s)", c->req->method, what, ta_strerror(rc),
               c->req->request_id != NULL ? c->req->request_id : "-");
        reply_error(c, 500, "server_error", "internal_error", NULL, "internal error: %s",
                    ta_strerror(rc));
    }
}

/* ---- transactions --------------------------------------------------------- */

int ctx_txn(actx_t *c, bool write)
{
    int rc;

    if (c->txn_kept && c->txn != NULL)
        return 0; /* the continuation's write transaction (pwjob_cont) */
    TA_BUG_ON(c->txn != NULL);
    rc = ta_txn_begin(c->st, TA_ENV_LEDGER, write, &c->txn);
    if (rc != 0) {
        c->txn = NULL;
        reply_store_error(c, rc, "transaction");
        return rc;
    }
    c->txn_write = write;
    return 0;
}

/* Commit the handler's write transaction when it answered < 400, else
 * abort whatever transaction it holds. */
static void ctx_end(actx_t *c)
{
    int rc;

    if (c->txn == NULL)
        return;
    if (c->txn_write && c->res->status < 400) {
        rc = ta_txn_commit(c->txn);
        c->txn = NULL;
        if (rc != 0)
            reply_store_error(c, rc, "commit");
    } else {
        ta_txn_abort(c->txn);
        c->txn = NULL;
    }
}

/* ---- password work off the loop thread (pwjob_t) --------------------------- */

/* Pool thread: the job's own buffers only (no LMDB, no logging). */
static void pwjob_work(void *arg)
{
    pwjob_t *j = arg;

    j->worked = true;
    j->verify_rc = 0;
    j->hash_rc = 0;
    if (j->verify)
        j->verify_rc = ta_password_verify(j->pw, j->hash, j->hash_len);
    if (j->new_pw[0] != '\0' && j->verify_rc == 0)
        j->hash_rc = ta_password_hash(j->new_pw, j->iterations, j->new_hash);
}

void ctx_rebuild(actx_t *c, ta_apireq_t *req, ta_admin_t *a, ta_apires_t *res, const char *method,
                 const char *path, const char *request_id, uint64_t id)
{
    memset(res, 0, sizeof(*res));
    memset(req, 0, sizeof(*req));
    req->method = method;
    req->path = path;
    req->path_len = strlen(path);
    req->request_id = request_id;
    memset(c, 0, sizeof(*c));
    c->a = a;
    c->st = a->conf.store;
    c->req = req;
    c->res = res;
    c->id = id;
    res->status = 500; /* until the continuation answers */
}

/* Loop thread, client still there: finish in a context rebuilt from the
 * job's copies, then commit or abort as the router does. */
static void pwjob_cont(void *ctx, void *arg, ta_apires_t *res)
{
    pwjob_t *j = arg;
    ta_apireq_t req;
    actx_t c;

    ctx_rebuild(&c, &req, ctx, res, j->method, j->path, j->request_id, j->id);
    c.body = j->body;
    c.caller = j->caller;
    c.auth = j->auth;
    c.via_apikey = j->via_apikey;
    c.claims = j->claims;
    c.key_quota_id = j->key_quota_id;
    /* The caller may have logged out, been disabled or demoted while the
     * hash ran: authenticate again, in the write transaction that finish
     * then uses, so a logout or demotion committed by another worker either
     * precedes this check or follows the write. A refusal writes nothing
     * (ctx_end aborts). Login (AUTH_NONE) has no caller to check. */
    if (c.auth != AUTH_NONE) {
        if (ctx_txn(&c, true) != 0)
            goto Exit;
        c.txn_kept = true;
        if (auth_recheck(&c, c.auth) != 0)
            goto Exit;
    }
    j->finish(&c, j);
Exit:
    ctx_end(&c);
}

/* The body's copies of the passwords go too: jansson owns these buffers
 * and nobody else holds the body by now. */
static void body_cleanse(json_t *body)
{
    static const char *const keys[] = {"password", "old_password", "new_password"};

    for (size_t i = 0; i < TA_ARRAY_SIZE(keys); i++) {
        json_t *v = json_object_get(body, keys[i]);
        if (json_is_string(v))
            OPENSSL_cleanse((char *)json_string_value(v), json_string_length(v));
    }
}

static void pwjob_release(ta_api_job_t *job)
{
    pwjob_t *j = (pwjob_t *)job;

    if (j == NULL)
        return;
    /* A login that never ran (the queue was full: 503) was no guess; one
     * whose client left after the hash stays counted. The work has ended
     * before release runs, so worked is settled. */
    if (!j->worked && j->account[0] != '\0')
        ta_throttle_login_cancel(j->admin->conf.login_throttle, &j->admin->conf.login_limits,
                                 j->account, j->address, &j->attempt);
    body_cleanse(j->body);
    json_decref(j->body);
    OPENSSL_cleanse(j, sizeof(*j));
    free(j);
}

pwjob_t *pwjob_new(actx_t *c, pwjob_finish_fn finish)
{
    pwjob_t *j = calloc(1, sizeof(*j));

    if (j == NULL) {
        reply_store_error(c, -ENOMEM, "request");
        return NULL;
    }
    j->job.work = pwjob_work;
    j->job.cont = pwjob_cont;
    j->job.arg = j;
    j->job.release = pwjob_release;
    j->finish = finish;
    j->admin = c->a;
    snprintf(j->method, sizeof(j->method), "%s", c->req->method);
    snprintf(j->path, sizeof(j->path), "%.*s",
             (int)(c->req->path_len < sizeof(j->path) ? c->req->path_len : sizeof(j->path) - 1),
             c->req->path);
    snprintf(j->request_id, sizeof(j->request_id), "%s",
             c->req->request_id != NULL ? c->req->request_id : "-");
    j->id = c->id;
    j->caller = c->caller;
    j->auth = c->auth;
    j->via_apikey = c->via_apikey;
    j->claims = c->claims;
    j->key_quota_id = c->key_quota_id;
    j->body = json_incref(c->body);
    j->iterations = c->a->conf.pbkdf2_iterations;
    return j;
}

void pwjob_copy_pw(char *dst, const char *src)
{
    size_t n = strnlen(src, TA_PASSWORD_MAX + 1);

    memcpy(dst, src, n);
    dst[n] = '\0';
}

void pwjob_submit(actx_t *c, pwjob_t *j)
{
    TA_BUG_ON(c->res->job != NULL || c->res->fetch != NULL);
    c->res->job = &j->job;
}

int pwjob_hash_into(actx_t *c, const pwjob_t *j, ta_user_t *u)
{
    int n = j->hash_rc;

    if (n <= 0 || (size_t)n > sizeof(u->pwhash)) {
        reply_store_error(c, n < 0 ? n : TA_ETOOBIG, "password");
        return n < 0 ? n : TA_ETOOBIG;
    }
    memcpy(u->pwhash, j->new_hash, (size_t)n);
    u->pwhash_len = (uint16_t)n;
    return 0;
}

/* ---- small helpers -------------------------------------------------------- */

void lower_copy(char *out, size_t cap, const char *in)
{
    size_t i = 0;

    if (cap == 0)
        return;
    for (; in[i] != '\0' && i + 1 < cap; i++)
        out[i] = (char)tolower((unsigned char)in[i]);
    out[i] = '\0';
}

bool icontains(const char *hay, const char *needle)
{
    return needle[0] == '\0' || strcasestr(hay, needle) != NULL;
}

bool body_has(actx_t *c, const char *k)
{
    return c->body != NULL && json_object_get(c->body, k) != NULL;
}

int merge_mode(actx_t *c)
{
    if (strcmp(c->req->method, "PATCH") == 0)
        return TA_MERGE_PATCH;
    if (strcmp(c->req->method, "PUT") == 0)
        return TA_MERGE_PUT;
    return TA_MERGE_CREATE;
}

int body_apply(actx_t *c, const ta_recdesc_t *d, void *rec, int mode)
{
    ta_err_t err;
    int rc;

    memset(&err, 0, sizeof(err));
    rc = ta_rec_from_json(d, c->body, rec, mode, &err);
    if (rc != 0) {
        if (err.message[0] == '\0')
            ta_err_set(&err, err.field, "invalid", "invalid %s", d->name);
        reply_invalid(c, &err);
        return rc < 0 ? rc : TA_EINVAL;
    }
    return 0;
}

/* ---- query string ----------------------------------------------------------- */

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Decode %xx and '+' of s[0..len) into out (cap incl. NUL). Returns the
 * decoded length, -1 for a bad escape, NUL or invalid UTF-8, -2 too long. */
static int url_decode(const char *s, size_t len, char *out, size_t cap)
{
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (ch == '+') {
            ch = ' ';
        } else if (ch == '%') {
            int h, l;
            if (i + 2 >= len)
                return -1;
            h = hexval(s[i + 1]);
            l = hexval(s[i + 2]);
            if (h < 0 || l < 0)
                return -1;
            ch = (char)(h * 16 + l);
            i += 2;
        }
        if (ch == '\0')
            return -1;
        if (o + 1 >= cap)
            return -2;
        out[o++] = ch;
    }
    out[o] = '\0';
    return ta_utf8_valid(out, o) ? (int)o : -1;
}

/* Find parameter name; on success val and vlen point into the raw query. */
static bool query_find(const ta_apireq_t *req, const char *name, const char **val, size_t *vlen)
{
    const char *q = req->query, *end;
    char dname[64];

    if (q == NULL)
        return false;
    end = q + req->query_len;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *seg_end = amp != NULL ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(seg_end - q));
        const char *name_end = eq != NULL ? eq : seg_end;
        if (url_decode(q, (size_t)(name_end - q), dname, sizeof(dname)) >= 0 &&
            strcmp(dname, name) == 0) {
            *val = eq != NULL ? eq + 1 : seg_end;
            *vlen = (size_t)(seg_end - *val);
            return true;
        }
        q = seg_end + 1;
    }
    return false;
}

int query_get(actx_t *c, const char *name, char *buf, size_t cap)
{
    const char *v;
    size_t vlen;
    int n;

    if (!query_find(c->req, name, &v, &vlen))
        return 0;
    n = url_decode(v, vlen, buf, cap);
    if (n == -2) {
        reply_field(c, name, "max_length", "too long (at most %zu bytes)", cap - 1);
        return TA_EINVAL;
    }
    if (n < 0) {
        reply_field(c, name, "format", "bad percent-encoding or invalid UTF-8");
        return TA_EINVAL;
    }
    return n > 0 ? 1 : 0;
}

/* Canonical positive decimal (no sign, no leading zero, no overflow). */
static bool parse_posint(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;

    if (len == 0 || len > 20 || s[0] == '0')
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, (uint64_t)(s[i] - '0'), &v))
            return false;
    }
    *out = v;
    return true;
}

int query_id(actx_t *c, const char *name, uint64_t *out)
{
    char buf[32];
    int rc = query_get(c, name, buf, sizeof(buf));

    if (rc <= 0)
        return rc;
    if (!parse_posint(buf, strlen(buf), out)) {
        reply_field(c, name, "type", "must be a positive integer");
        return TA_EINVAL;
    }
    return 1;
}

int query_bool(actx_t *c, const char *name, bool *out)
{
    char buf[16];
    int rc = query_get(c, name, buf, sizeof(buf));

    if (rc <= 0)
        return rc;
    if (strcasecmp(buf, "true") == 0 || strcmp(buf, "1") == 0) {
        *out = true;
    } else if (strcasecmp(buf, "false") == 0 || strcmp(buf, "0") == 0) {
        *out = false;
    } else {
        reply_field(c, name, "type", "must be true or false");
        return TA_EINVAL;
    }
    return 1;
}

/* ---- pagination ----------------------------------------------------------- */

typedef struct list_state {
    actx_t *c;
    list_filter_fn filter;
    void *farg;
    list_render_fn render;
    uint64_t first, last; /* 0-based index range [first, last) of the page */
    uint64_t count;
    json_t *results;
    int err;
} list_state_t;

static int list_cb(uint64_t id, const void *rec, void *arg)
{
    list_state_t *ls = arg;
    json_t *j;

    (void)id;
    if (ls->filter != NULL && !ls->filter(ls->c, rec, ls->farg))
        return 0;
    if (ls->count >= ls->first && ls->count < ls->last) {
        j = ls->render(ls->c, rec);
        if (j == NULL) {
            ls->err = -ENOMEM;
            return -ENOMEM;
        }
        json_array_append_new(ls->results, j);
    }
    ls->count++;
    return 0;
}

/* Append s[0..n) to p percent-encoded: only RFC 3986 unreserved characters
 * stay as they are. Returns the new end. */
static char *url_encode_to(char *p, const char *s, size_t n)
{
    static const char hx[] = "0123456789ABCDEF";

    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            *p++ = (char)ch;
        } else {
            *p++ = '%';
            *p++ = hx[ch >> 4];
            *p++ = hx[ch & 15];
        }
    }
    return p;
}

/* base_url + path + "?" + the query without `page` + "page=N", or NULL when
 * out of memory. The query is rebuilt from its decoded parameters, each
 * percent-encoded again: a parameter whose name or value does not decode to
 * UTF-8 without NUL (no handler reads such a one: query_get refuses it) is
 * left out, so the links are always valid JSON and valid URLs. */
json_t *admin_page_url(actx_t *c, uint64_t page)
{
    const ta_apireq_t *req = c->req;
    const char *base = req->base_url != NULL ? req->base_url : "";
    size_t cap = strlen(base) + req->path_len + 3 * req->query_len + 48;
    char *buf = malloc(cap), *dec = malloc(req->query_len + 1), *p;
    const char *q, *end;
    json_t *j = NULL;

    if (buf == NULL || dec == NULL)
        goto Exit;
    p = buf;
    p += snprintf(p, cap, "%s%.*s?", base, (int)req->path_len, req->path);
    if (req->query != NULL) {
        q = req->query;
        end = q + req->query_len;
        while (q < end) {
            const char *amp = memchr(q, '&', (size_t)(end - q));
            const char *seg_end = amp != NULL ? amp : end;
            const char *eq = memchr(q, '=', (size_t)(seg_end - q));
            const char *name_end = eq != NULL ? eq : seg_end;
            int n = url_decode(q, (size_t)(name_end - q), dec, req->query_len + 1);
            if (n > 0 && strcmp(dec, "page") != 0) {
                char *mark = p;
                p = url_encode_to(p, dec, (size_t)n);
                if (eq != NULL) {
                    int vn = url_decode(eq + 1, (size_t)(seg_end - eq - 1), dec, req->query_len + 1);
                    if (vn >= 0) {
                        *p++ = '=';
                        p = url_encode_to(p, dec, (size_t)vn);
                    } else {
                        p = mark; /* a malformed value: the whole parameter goes */
                    }
                }
                if (p != mark)
                    *p++ = '&';
            }
            q = seg_end + 1;
        }
    }
    snprintf(p, cap - (size_t)(p - buf), "page=%llu", (unsigned long long)page);
    j = ta_json_string_lossy(buf, strlen(buf));
Exit:
    free(buf);
    free(dec);
    return j;
}

void reply_list(actx_t *c, const ta_recdesc_t *d, list_filter_fn filter, void *farg,
                list_render_fn render)
{
    char buf[32];
    uint64_t page = 1, size = TA_ADMIN_PAGE_SIZE_DEFAULT, pages;
    list_state_t ls;
    json_t *out;
    int rc;

    if ((rc = query_get(c, "page", buf, sizeof(buf))) < 0)
        return;
    if (rc > 0 && !parse_posint(buf, strlen(buf), &page)) {
        reply_field(c, "page", "min", "must be a positive integer");
        return;
    }
    if ((rc = query_get(c, "page_size", buf, sizeof(buf))) < 0)
        return;
    if (rc > 0 && (!parse_posint(buf, strlen(buf), &size) || size > TA_ADMIN_PAGE_SIZE_MAX)) {
        reply_field(c, "page_size", "max", "must be an integer from 1 to %d",
                    TA_ADMIN_PAGE_SIZE_MAX);
        return;
    }
    if (page > UINT64_MAX / size - 1) {
        reply_field(c, "page", "max", "too large");
        return;
    }
    if (c->txn == NULL && ctx_txn(c, false) != 0)
        return;

    memset(&ls, 0, sizeof(ls));
    ls.c = c;
    ls.filter = filter;
    ls.farg = farg;
    ls.render = render;
    ls.first = (page - 1) * size;
    ls.last = ls.first + size;
    ls.results = json_array();
    if (ls.results == NULL) {
        reply_store_error(c, -ENOMEM, d->name);
        return;
    }
    rc = ta_rec_walk(c->st, c->txn, d, list_cb, &ls);
    if (rc < 0 || ls.err != 0) {
        json_decref(ls.results);
        reply_store_error(c, rc < 0 ? rc : ls.err, d->name);
        return;
    }
    pages = (ls.count + size - 1) / size;
    out = json_pack("{s:I,s:o,s:o,s:o}", "count", (json_int_t)ls.count, "next",
                    page < pages ? admin_page_url(c, page + 1) : json_null(), "previous",
                    page > 1 ? admin_page_url(c, page - 1 < pages ? page - 1 : (pages > 0 ? pages : 1))
                             : json_null(),
                    "results", ls.results);
    reply_json(c, 200, out);
}

/* ---- routing ------------------------------------------------------------- */

/* Does path match pattern? Trailing slashes of both are ignored (one);
 * "{id}" takes a canonical positive integer. */
static bool route_match(const char *pattern, const char *path, size_t plen, uint64_t *id)
{
    size_t patlen = strlen(pattern);
    const char *pe, *pp = path, *ppe;

    if (patlen > 1 && pattern[patlen - 1] == '/')
        patlen--;
    if (plen > 1 && path[plen - 1] == '/')
        plen--;
    pe = pattern + patlen;
    ppe = path + plen;
    *id = 0;
    while (pattern < pe && pp < ppe) {
        if (pe - pattern >= 4 && memcmp(pattern, "{id}", 4) == 0) {
            const char *seg = pp;
            while (pp < ppe && *pp != '/')
                pp++;
            if (!parse_posint(seg, (size_t)(pp - seg), id))
                return false;
            pattern += 4;
            continue;
        }
        if (*pattern != *pp)
            return false;
        pattern++;
        pp++;
    }
    return pattern == pe && pp == ppe;
}

static void add_allow(char *allow, size_t cap, const char *method)
{
    size_t n = strlen(allow);

    if (strstr(allow, method) != NULL)
        return;
    snprintf(allow + n, cap - n, "%s%s", n > 0 ? ", " : "", method);
}

void ta_admin_handle(void *ctx, const ta_apireq_t *req, ta_apires_t *res)
{
    actx_t c;
    const route_t *r = NULL;
    char allow[64] = "";
    uint64_t id = 0;

    memset(res, 0, sizeof(*res));
    memset(&c, 0, sizeof(c));
    c.a = ctx;
    c.st = c.a->conf.store;
    c.req = req;
    c.res = res;

    for (size_t i = 0; i < TA_ARRAY_SIZE(routes); i++) {
        if (!route_match(routes[i].pattern, req->path, req->path_len, &id))
            continue;
        if (strcmp(routes[i].method, req->method) == 0) {
            r = &routes[i];
            c.id = id;
            c.auth = r->auth;
            break;
        }
        add_allow(allow, sizeof(allow), routes[i].method);
    }
    if (r == NULL) {
        if (allow[0] != '\0') {
            reply_error(&c, 405, "invalid_request_error", "method_not_allowed", NULL,
                        "method %s not allowed here; allowed: %s", req->method, allow);
            snprintf(res->allow, sizeof(res->allow), "%s", allow);
        } else {
            reply_error(&c, 404, "not_found_error", "not_found", NULL, "no such endpoint: %.*s",
                        (int)(req->path_len > 200 ? 200 : req->path_len), req->path);
        }
        return;
    }
    if (req->body_len > c.a->conf.max_body) {
        reply_error(&c, 413, "request_too_large", "request_too_large", NULL,
                    "request body is %zu bytes; the limit is %zu", req->body_len,
                    c.a->conf.max_body);
        return;
    }
    if (r->auth != AUTH_NONE && auth_check(&c, r->auth) != 0)
        return;
    if (r->flags & R_BODY) {
        json_error_t jerr;
        if (req->body_len == 0 || req->body == NULL) {
            reply_error(&c, 400, "invalid_request_error", "invalid_json", NULL,
                        "a JSON object body is required");
            return;
        }
        if (!ta_utf8_valid(req->body, req->body_len)) {
            reply_error(&c, 400, "invalid_request_error", "invalid_json", NULL,
                        "the body is not valid UTF-8");
            return;
        }
        c.body = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
        if (c.body == NULL) {
            reply_error(&c, 400, "invalid_request_error", "invalid_json", NULL,
                        "malformed JSON at line %d, column %d: %s", jerr.line, jerr.column,
                        jerr.text);
            return;
        }
        if (!json_is_object(c.body)) {
            reply_error(&c, 400, "invalid_request_error", "invalid_json", NULL,
                        "the body must be a JSON object");
            goto Exit;
        }
    }

    res->status = 500;
    r->fn(&c);
    /* A handler that returned a job has not answered (status 500): any
     * transaction it left is aborted here. */
    ctx_end(&c);
Exit:
    json_decref(c.body);
}

/* ---- the table, read-only, for the OpenAPI generator (openapi.c) ---------- */

bool ta_admin_route(size_t i, ta_admin_route_info_t *out)
{
    if (i >= TA_ARRAY_SIZE(routes))
        return false;
    out->method = routes[i].method;
    out->pattern = routes[i].pattern;
    out->auth = routes[i].auth;
    out->body = (routes[i].flags & R_BODY) != 0;
    return true;
}
