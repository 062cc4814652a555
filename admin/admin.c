/*
 * admin.c - the /api/... router and the helpers every handler shares: JSON
 * answers and errors in API.md's shape, request bodies, query strings and
 * pagination.
 *
 * LMDB: the router itself opens no transaction. ta_admin_auth_check() runs in a read
 * transaction of its own; each handler opens at most one transaction
 * (ta_admin_txn) on the ledger environment, which the router commits (write, the
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

/* The five rows every record resource has under /api/admin/<res>/: create,
 * get, replace, update and delete one record of schema Schema (operation ids
 * "createUser", "getUser", ...; handlers ta_admin_<res>_create, _get,
 * _update for PUT and PATCH, _delete). The list row and a resource's
 * actions are written out beside it: their parameters and answers differ. */
#define RECORD_ROUTES(res, Schema, noun, create_summary, delete_summary)                          \
    {"POST", "/api/admin/" #res "/", AUTH_ADMIN, TA_ROUTE_BODY | TA_ROUTE_WRITE,                \
     ta_admin_##res##_create,                                                                   \
     "create" #Schema, #res, create_summary,                                                    \
     #Schema, 201, #Schema, "", "400,401,403,409,413"},                                          \
    {"GET", "/api/admin/" #res "/{id}/", AUTH_ADMIN, 0, ta_admin_##res##_get,                   \
     "get" #Schema, #res, "Get a " noun,                                                         \
     NULL, 200, #Schema, "", "401,403,404"},                                                     \
    {"PUT", "/api/admin/" #res "/{id}/", AUTH_ADMIN, TA_ROUTE_BODY | TA_ROUTE_WRITE,            \
     ta_admin_##res##_update,                                                                   \
     "replace" #Schema, #res, "Replace (every writable field) of a " noun,                      \
     #Schema, 200, #Schema, "", "400,401,403,404,409,413"},                                      \
    {"PATCH", "/api/admin/" #res "/{id}/", AUTH_ADMIN, TA_ROUTE_BODY | TA_ROUTE_WRITE,          \
     ta_admin_##res##_update,                                                                   \
     "update" #Schema, #res, "Update (the fields given) of a " noun,                            \
     #Schema, 200, #Schema, "", "400,401,403,404,409,413"},                                      \
    {"DELETE", "/api/admin/" #res "/{id}/", AUTH_ADMIN, TA_ROUTE_WRITE, ta_admin_##res##_delete,\
     "delete" #Schema, #res, delete_summary,                                                    \
     NULL, 204, NULL, "", "401,403,404,409"}

/* ---- the route table --------------------------------------------------------
 * One row per operation; the columns are explained at ta_admin_route_t
 * (admin_internal.h). "{id}" matches a positive decimal integer (no sign, no
 * leading zero), "{request_id}" 32 lower-case hex digits; every pattern matches with and without its trailing slash.
 * A path that matches some pattern under another method answers 405 with
 * Allow. Rows of one resource stay together: the reference lists them in
 * this order. */
static const ta_admin_route_t routes[] = {
    {"POST", "/api/auth/login/", AUTH_NONE, TA_ROUTE_BODY, ta_admin_login,
     "login", "auth", "Log in: a JWT for /api",
     "LoginRequest", 200, "LoginResponse", "", "400,401,413,429"},
    {"POST", "/api/auth/logout/", AUTH_JWT, TA_ROUTE_WRITE, ta_admin_logout,
     "logout", "auth", "Log out: the token is revoked at once",
     NULL, 204, NULL, "", "401"},
    {"GET", "/api/auth/me/", AUTH_USER, 0, ta_admin_me,
     "me", "auth", "The caller",
     NULL, 200, "User", "", "401"},
    {"POST", "/api/auth/password/", AUTH_JWT, TA_ROUTE_BODY | TA_ROUTE_WRITE, ta_admin_password,
     "changePassword", "auth",
     "Change the caller's password: every earlier session ends, the answer carries a "
     "new token",
     "PasswordChange", 200, "LoginResponse", "", "400,401,413"},

    {"GET", "/api/quotas/", AUTH_USER, 0, ta_admin_my_quotas,
     "listMyQuotas", "self", "The caller's quotas with their usage",
     NULL, 200, "QuotaPage", "page,page_size,after,before", "400,401"},
    {"GET", "/api/statistics/", AUTH_USER, 0, ta_admin_my_statistics,
     "myStatistics", "self",
     "Statistics of the caller's quotas (all, or one with quota_id); group_by one level or two "
     "(day,model)",
     NULL, 200, "Statistics", "since,until,group_by_quota,limit,tz,quota_id", "400,401,404"},
    {"GET", "/api/quotas/{id}/statistics/", AUTH_USER, 0, ta_admin_my_quota_statistics,
     "myQuotaStatistics", "self",
     "Statistics of one of the caller's quotas; group_by one level or two (day,model)",
     NULL, 200, "Statistics", "since,until,group_by_quota,limit,tz", "400,401,404"},
    {"POST", "/api/quotas/{id}/reset_api_key/", AUTH_JWT, TA_ROUTE_WRITE,
     ta_admin_my_quota_reset_key,
     "resetMyQuotaKey", "self",
     "A new API key for one of the caller's quotas (shown once); another's quota is 404",
     NULL, 200, "ApiKeyReset", "", "401,404"},
    {"GET", "/api/requests/", AUTH_USER, 0, ta_admin_my_requests,
     "listMyRequests", "self", "The caller's audit records, newest first",
     NULL, 200, "AuditRecordPage", "page,page_size,cursor,quota_id,model,status,since,until",
     "400,401"},

    {"GET", "/api/admin/users/", AUTH_ADMIN, 0, ta_admin_users_list,
     "listUsers", "users", "List users",
     NULL, 200, "UserPage", "page,page_size,after,before,search,role,is_active", "400,401,403"},
    RECORD_ROUTES(users, User, "user", "Create a user",
                  "Deactivate a user and revoke every key (records stay for audit)"),
    {"POST", "/api/admin/users/{id}/reset-all-keys/", AUTH_ADMIN, TA_ROUTE_WRITE,
     ta_admin_users_reset_keys,
     "resetUserKeys", "users", "New keys for every quota of a user",
     NULL, 200, "KeysReset", "", "401,403,404"},

    {"GET", "/api/admin/providers/", AUTH_ADMIN, 0, ta_admin_providers_list,
     "listProviders", "providers", "List providers",
     NULL, 200, "ProviderPage", "page,page_size,after,before", "400,401,403"},
    RECORD_ROUTES(providers, Provider, "provider", "Create a provider", "Delete a provider"),
    {"POST", "/api/admin/providers/{id}/test/", AUTH_ADMIN, 0, ta_admin_providers_test,
     "testProvider", "providers", "Try the provider's upstream",
     NULL, 200, "ProviderTest", "", "400,401,403,404"},
    {"POST", "/api/admin/providers/{id}/sync-models/", AUTH_ADMIN, TA_ROUTE_WRITE,
     ta_admin_providers_sync_models,
     "syncProviderModels", "providers", "Create models from the upstream's model list",
     NULL, 200, "SyncModels", "", "400,401,403,404,502,504"},

    {"GET", "/api/admin/models/", AUTH_ADMIN, 0, ta_admin_models_list,
     "listModels", "models", "List models",
     NULL, 200, "ModelPage", "page,page_size,after,before,search,provider_id", "400,401,403"},
    RECORD_ROUTES(models, Model, "model", "Create a model", "Delete a model"),

    {"GET", "/api/admin/groups/", AUTH_ADMIN, 0, ta_admin_groups_list,
     "listGroups", "groups", "List groups",
     NULL, 200, "GroupPage", "page,page_size,after,before", "400,401,403"},
    RECORD_ROUTES(groups, Group, "group", "Create a group", "Delete a group"),

    {"GET", "/api/admin/quotas/", AUTH_ADMIN, 0, ta_admin_quotas_list,
     "listQuotas", "quotas", "List quotas",
     NULL, 200, "QuotaPage", "page,page_size,after,before,user_id,group_id", "400,401,403"},
    RECORD_ROUTES(quotas, Quota, "quota", "Create a quota and its API key (shown once)",
                  "Delete a quota; its key is revoked, records stay"),
    {"POST", "/api/admin/quotas/{id}/reset_api_key/", AUTH_ADMIN, TA_ROUTE_WRITE,
     ta_admin_quotas_reset_key,
     "resetQuotaKey", "quotas", "A new API key for the quota",
     NULL, 200, "ApiKeyReset", "", "401,403,404"},
    {"GET", "/api/admin/quotas/{id}/requests/", AUTH_ADMIN, 0, ta_admin_quota_requests,
     "listQuotaRequests", "quotas", "Audit records of a quota, newest first",
     NULL, 200, "AuditRecordPage", "page,page_size,cursor,since,until,status,model", "400,401,403,404"},
    {"GET", "/api/admin/quotas/{id}/statistics/", AUTH_ADMIN, 0, ta_admin_quota_statistics,
     "quotaStatistics", "quotas", "Statistics of a quota; group_by one level or two (day,model)",
     NULL, 200, "Statistics", "since,until,group_by_quota,limit,tz", "400,401,403,404"},

    {"GET", "/api/admin/requests/", AUTH_ADMIN, 0, ta_admin_requests_list,
     "listRequests", "audit", "Audit records, newest first",
     NULL, 200, "AuditRecordPage", "page,page_size,cursor,user_id,quota_id,model,status,since,until",
     "400,401,403"},
    {"GET", "/api/admin/requests/export/", AUTH_ADMIN, TA_ROUTE_STREAM, ta_admin_requests_export,
     "exportRequests", "audit",
     "Audit records as CSV or JSON lines, oldest first, streamed (as `tokenaudit audit export`)",
     NULL, 200, "AuditExportRecord", "format,user_id,quota_id,model,status,since,until",
     "400,401,403"},
    {"GET", "/api/admin/requests/{request_id}/", AUTH_ADMIN, 0, ta_admin_requests_get,
     "getRequest", "audit", "One audit record, by its request id (X-Request-Id)",
     NULL, 200, "AuditRecord", "since,until", "400,401,403,404"},
    {"GET", "/api/admin/statistics/", AUTH_ADMIN, 0, ta_admin_statistics,
     "statistics", "audit",
     "Statistics from the hourly aggregates; group_by one level or two (day,model: a series "
     "entry per day and model)",
     NULL, 200, "Statistics", "since,until,group_by,limit,tz,user_id,quota_id", "400,401,403"},

    {"GET", "/api/admin/warnings/", AUTH_ADMIN, 0, ta_admin_warnings_list,
     "listWarnings", "audit",
     "Warning thresholds quotas reached, newest first, with the webhook's delivery",
     NULL, 200, "WarningPage", "page,page_size,user_id,quota_id,since,until,webhook_state",
     "400,401,403"},
    {"GET", "/api/admin/status/", AUTH_ADMIN, 0, ta_admin_status,
     "status", "operations",
     "Live figures: workers, requests/s over the last minute, in flight, billing, upstream errors",
     NULL, 200, "Status", "", "401,403"},

    {"GET", "/api/openapi.json", AUTH_NONE, 0, ta_admin_openapi,
     "openapi", "reference", "This document, as JSON (what `tokenaudit openapi --json` prints)",
     NULL, 200, "OpenApiDocument", "", ""},
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
void ta_admin_reply_json(actx_t *c, int status, json_t *v)
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

void ta_admin_reply_204(actx_t *c)
{
    set_body(c, 204, NULL);
}

/* Messages and params may echo client bytes (a path, a method, a value cut at
 * a byte bound), so they are made valid UTF-8 rather than refused by jansson. */
static json_t *error_obj(const char *type, const char *code, const char *param, const char *msg)
{
    return ta_error_json(type, code, param, msg); /* the one error body (schema/apierror.h) */
}

void ta_admin_reply_error(actx_t *c, int status, const char *type, const char *code, const char *param,
                          const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ta_admin_reply_json(c, status, error_obj(type, code, param, msg));
}

void ta_admin_reply_invalid(actx_t *c, const ta_err_t *err)
{
    const char *field = err->field[0] != '\0' ? err->field : NULL;
    const char *msg = err->message[0] != '\0' ? err->message : "invalid request";
    json_t *v = error_obj("invalid_request_error", err->rule[0] != '\0' ? err->rule : "invalid",
                          field, msg);

    if (v != NULL && field != NULL)
        json_object_set_new(json_object_get(v, "error"), "fields",
                            json_pack("{s:o}", field, ta_json_string_lossy(msg, strlen(msg))));
    ta_admin_reply_json(c, 400, v);
}

void ta_admin_reply_field(actx_t *c, const char *field, const char *rule, const char *fmt, ...)
{
    ta_err_t err;
    char msg[200];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ta_err_set(&err, field, rule, "%s: %s", field, msg);
    ta_admin_reply_invalid(c, &err);
}

static void reply_not_found(actx_t *c, const char *what)
{
    if (c->id != 0)
        ta_admin_reply_error(c, 404, "not_found_error", "not_found", NULL, "%s %llu not found", what,
                             (unsigned long long)c->id);
    else
        ta_admin_reply_error(c, 404, "not_found_error", "not_found", NULL, "%s not found", what);
}

void ta_admin_reply_store_error(actx_t *c, int rc, const char *what)
{
    if (rc == TA_ENOTFOUND) {
        reply_not_found(c, what);
    } else if (rc == TA_EFULL) {
        ta_admin_reply_error(c, 507, "server_error", "storage_full", NULL, "the ledger is full");
    } else {
        ta_log(TA_LOG_ERROR, "admin %s %s: %s (%s)", c->req->method, what, ta_strerror(rc),
               c->req->request_id != NULL ? c->req->request_id : "-");
        ta_admin_reply_error(c, 500, "server_error", "internal_error", NULL, "internal error: %s",
                             ta_strerror(rc));
    }
}

/* ---- transactions --------------------------------------------------------- */

int ta_admin_txn(actx_t *c, bool write)
{
    int rc;

    if (c->txn_kept && c->txn != NULL)
        return 0; /* the continuation's write transaction (pwjob_cont) */
    TA_BUG_ON(c->txn != NULL);
    if (write && !c->may_write) {
        /* a handler writing on a route the table does not mark TA_ROUTE_WRITE:
         * refused, so the table's flag is the truth about which routes write */
        ta_log(TA_LOG_ERROR, "admin %s %.*s: a write on a route without TA_ROUTE_WRITE (%s)",
               c->req->method, (int)c->req->path_len, c->req->path,
               c->req->request_id != NULL ? c->req->request_id : "-");
        ta_admin_reply_error(c, 500, "server_error", "internal_error", NULL,
                             "internal error: this route does not write");
        return TA_EINVAL;
    }
    rc = ta_txn_begin(c->st, TA_ENV_LEDGER, write, &c->txn);
    if (rc != 0) {
        c->txn = NULL;
        ta_admin_reply_store_error(c, rc, "transaction");
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
            ta_admin_reply_store_error(c, rc, "commit");
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

void ta_admin_ctx_rebuild(actx_t *c, ta_apireq_t *req, ta_admin_t *a, ta_apires_t *res, const char *method,
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

    ta_admin_ctx_rebuild(&c, &req, ctx, res, j->method, j->path, j->request_id, j->id);
    c.body = j->body;
    c.caller = j->caller;
    c.auth = j->auth;
    c.via_apikey = j->via_apikey;
    c.claims = j->claims;
    c.key_quota_id = j->key_quota_id;
    c.may_write = j->may_write;
    /* The caller may have logged out, been disabled or demoted while the
     * hash ran: authenticate again, in the write transaction that finish
     * then uses, so a logout or demotion committed by another worker either
     * precedes this check or follows the write. A refusal writes nothing
     * (ctx_end aborts). Login (AUTH_NONE) has no caller to check. */
    if (c.auth != AUTH_NONE) {
        if (ta_admin_txn(&c, true) != 0)
            goto Exit;
        c.txn_kept = true;
        if (ta_admin_auth_recheck(&c, c.auth) != 0)
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

pwjob_t *ta_admin_pwjob_new(actx_t *c, pwjob_finish_fn finish)
{
    pwjob_t *j = calloc(1, sizeof(*j));

    if (j == NULL) {
        ta_admin_reply_store_error(c, -ENOMEM, "request");
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
    j->may_write = c->may_write;
    j->body = json_incref(c->body);
    j->iterations = c->a->conf.pbkdf2_iterations;
    return j;
}

void ta_admin_pwjob_copy_pw(char *dst, const char *src)
{
    size_t n = strnlen(src, TA_PASSWORD_MAX + 1);

    memcpy(dst, src, n);
    dst[n] = '\0';
}

void ta_admin_pwjob_submit(actx_t *c, pwjob_t *j)
{
    TA_BUG_ON(c->res->job != NULL || c->res->fetch != NULL);
    c->res->job = &j->job;
}

int ta_admin_pwjob_hash_into(actx_t *c, const pwjob_t *j, ta_user_t *u)
{
    int n = j->hash_rc;

    if (n <= 0 || (size_t)n > sizeof(u->pwhash)) {
        ta_admin_reply_store_error(c, n < 0 ? n : TA_ETOOBIG, "password");
        return n < 0 ? n : TA_ETOOBIG;
    }
    memcpy(u->pwhash, j->new_hash, (size_t)n);
    u->pwhash_len = (uint16_t)n;
    return 0;
}

/* ---- small helpers -------------------------------------------------------- */

void ta_admin_lower_copy(char *out, size_t cap, const char *in)
{
    size_t i = 0;

    if (cap == 0)
        return;
    for (; in[i] != '\0' && i + 1 < cap; i++)
        out[i] = (char)tolower((unsigned char)in[i]);
    out[i] = '\0';
}

bool ta_admin_icontains(const char *hay, const char *needle)
{
    return needle[0] == '\0' || strcasestr(hay, needle) != NULL;
}

bool ta_admin_body_has(actx_t *c, const char *k)
{
    return c->body != NULL && json_object_get(c->body, k) != NULL;
}

int ta_admin_merge_mode(actx_t *c)
{
    if (strcmp(c->req->method, "PATCH") == 0)
        return TA_MERGE_PATCH;
    if (strcmp(c->req->method, "PUT") == 0)
        return TA_MERGE_PUT;
    return TA_MERGE_CREATE;
}

int ta_admin_body_apply(actx_t *c, const ta_recdesc_t *d, void *rec, int mode)
{
    ta_err_t err;
    int rc;

    memset(&err, 0, sizeof(err));
    rc = ta_rec_from_json(d, c->body, rec, mode, &err);
    if (rc != 0) {
        if (err.message[0] == '\0')
            ta_err_set(&err, err.field, "invalid", "invalid %s", d->name);
        ta_admin_reply_invalid(c, &err);
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

int ta_admin_query_get(actx_t *c, const char *name, char *buf, size_t cap)
{
    const char *v;
    size_t vlen;
    int n;

    if (!query_find(c->req, name, &v, &vlen))
        return 0;
    n = url_decode(v, vlen, buf, cap);
    if (n == -2) {
        ta_admin_reply_field(c, name, "max_length", "too long (at most %zu bytes)", cap - 1);
        return TA_EINVAL;
    }
    if (n < 0) {
        ta_admin_reply_field(c, name, "format", "bad percent-encoding or invalid UTF-8");
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

int ta_admin_query_id(actx_t *c, const char *name, uint64_t *out)
{
    char buf[32];
    int rc = ta_admin_query_get(c, name, buf, sizeof(buf));

    if (rc <= 0)
        return rc;
    if (!parse_posint(buf, strlen(buf), out)) {
        ta_admin_reply_field(c, name, "type", "must be a positive integer");
        return TA_EINVAL;
    }
    return 1;
}

int ta_admin_query_bool(actx_t *c, const char *name, bool *out)
{
    char buf[16];
    int rc = ta_admin_query_get(c, name, buf, sizeof(buf));

    if (rc <= 0)
        return rc;
    if (strcasecmp(buf, "true") == 0 || strcmp(buf, "1") == 0) {
        *out = true;
    } else if (strcasecmp(buf, "false") == 0 || strcmp(buf, "0") == 0) {
        *out = false;
    } else {
        ta_admin_reply_field(c, name, "type", "must be true or false");
        return TA_EINVAL;
    }
    return 1;
}

/* ---- pagination ----------------------------------------------------------- */

/* Lists scale with the table, not with the page's position:
 *   - ?after=ID / ?before=ID (keyset) start the walk at that id with
 *     MDB_SET_RANGE, O(log n); the page's next/previous links use them.
 *   - ?page=N still works and reads the N * page_size records before it.
 *   - count: without a filter, the table's entry count (O(1), exact). With a
 *     filter, the matches among the first TA_ADMIN_COUNT_SCAN records read;
 *     a bigger table gets count scaled from that sample and
 *     "count_estimated": true.
 *   - a filtered page stops after TA_ADMIN_LIST_SCAN records read; its next
 *     link continues after the last one read, so a short page is possible. */
typedef struct list_state {
    actx_t *c;
    list_filter_fn filter;
    void *farg;
    list_render_fn render;
    uint64_t first, last; /* 0-based match range [first, last) of the page */
    uint64_t want;        /* matches to collect (keyset: size + 1); 0: page mode */
    uint64_t count;       /* matches seen */
    uint64_t read;        /* records read */
    uint64_t read_max;    /* stop after this many (0: no bound) */
    uint64_t last_read;   /* id of the last record read */
    uint64_t tail_scan;   /* page mode: once the page is full, read at most this many more */
    uint64_t read_at_fill; /* records read when the page filled */
    json_t *results;
    uint64_t *ids;        /* ids of the results (keyset) */
    bool cut;             /* stopped at read_max */
    int err;
} list_state_t;

static int list_cb(uint64_t id, const void *rec, void *arg)
{
    list_state_t *ls = arg;
    json_t *j;

    if (ls->read_max != 0 && ls->read >= ls->read_max) {
        ls->cut = true;
        return 1;
    }
    ls->read++;
    ls->last_read = id;
    if (ls->filter != NULL && !ls->filter(ls->c, rec, ls->farg))
        return 0;
    if (ls->results != NULL && ls->count >= ls->first && ls->count < ls->last) {
        j = ls->render(ls->c, rec);
        if (j == NULL) {
            ls->err = -ENOMEM;
            return -ENOMEM;
        }
        if (ls->ids != NULL)
            ls->ids[json_array_size(ls->results)] = id;
        json_array_append_new(ls->results, j);
    }
    ls->count++;
    if (ls->tail_scan != 0 && ls->count == ls->last) {
        ls->read_at_fill = ls->read;
        ls->read_max = ls->read + ls->tail_scan;
    }
    if (ls->want != 0 && ls->count >= ls->want)
        return 1;
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

/* base_url + path + "?" + the query without its position (page, after,
 * before) + extra ("page=2", "after=17"), or NULL when out of memory. The query is rebuilt from its decoded parameters, each
 * percent-encoded again: a parameter whose name or value does not decode to
 * UTF-8 without NUL (no handler reads such a one: ta_admin_query_get refuses it) is
 * left out, so the links are always valid JSON and valid URLs. */
json_t *ta_admin_link(actx_t *c, const char *extra)
{
    const ta_apireq_t *req = c->req;
    const char *base = req->base_url != NULL ? req->base_url : "";
    size_t cap = strlen(base) + req->path_len + 3 * req->query_len + strlen(extra) + 8;
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
            if (n > 0 && strcmp(dec, "page") != 0 && strcmp(dec, "after") != 0 &&
                strcmp(dec, "before") != 0) {
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
    snprintf(p, cap - (size_t)(p - buf), "%s", extra);
    j = ta_json_string_lossy(buf, strlen(buf));
Exit:
    free(buf);
    free(dec);
    return j;
}

json_t *ta_admin_page_url(actx_t *c, uint64_t page)
{
    char extra[32];

    snprintf(extra, sizeof(extra), "page=%llu", (unsigned long long)page);
    return ta_admin_link(c, extra);
}

/* The table's count (filter NULL), or the filtered count from a sample of
 * TA_ADMIN_COUNT_SCAN records (*estimated when the table is bigger). */
static int list_count(actx_t *c, const ta_recdesc_t *d, list_filter_fn filter, void *farg,
                      uint64_t entries, uint64_t *count, bool *estimated)
{
    list_state_t ls;
    int rc;

    *estimated = false;
    *count = entries;
    if (filter == NULL)
        return 0;
    memset(&ls, 0, sizeof(ls));
    ls.c = c;
    ls.filter = filter;
    ls.farg = farg;
    ls.read_max = TA_ADMIN_COUNT_SCAN;
    rc = ta_rec_walk(c->st, c->txn, d, list_cb, &ls);
    if (rc < 0)
        return rc;
    *count = ls.count;
    if (ls.cut && ls.read > 0) {
        *count = (uint64_t)((unsigned __int128)ls.count * entries / ls.read);
        *estimated = true;
    }
    return 0;
}

/* base_url + path + the query without page/after/before + "NAME=ID". */
static json_t *cursor_url(actx_t *c, const char *name, uint64_t id)
{
    char extra[48];

    snprintf(extra, sizeof(extra), "%s=%llu", name, (unsigned long long)id);
    return ta_admin_link(c, extra);
}

void ta_admin_reply_list(actx_t *c, const ta_recdesc_t *d, list_filter_fn filter, void *farg,
                         list_render_fn render)
{
    char buf[32];
    uint64_t page = 1, size = TA_ADMIN_PAGE_SIZE_DEFAULT, pages, after = 0, before = 0;
    uint64_t entries = 0, count = 0, ids[TA_ADMIN_PAGE_SIZE_MAX + 1];
    bool estimated = false, keyset;
    json_t *out, *next = NULL, *prev = NULL;
    list_state_t ls;
    int rc;

    if ((rc = ta_admin_query_get(c, "page", buf, sizeof(buf))) < 0)
        return;
    if (rc > 0 && !parse_posint(buf, strlen(buf), &page)) {
        ta_admin_reply_field(c, "page", "min", "must be a positive integer");
        return;
    }
    if ((rc = ta_admin_query_get(c, "page_size", buf, sizeof(buf))) < 0)
        return;
    if (rc > 0 && (!parse_posint(buf, strlen(buf), &size) || size > TA_ADMIN_PAGE_SIZE_MAX)) {
        ta_admin_reply_field(c, "page_size", "max", "must be an integer from 1 to %d",
                             TA_ADMIN_PAGE_SIZE_MAX);
        return;
    }
    if (page > UINT64_MAX / size - 1) {
        ta_admin_reply_field(c, "page", "max", "too large");
        return;
    }
    if (ta_admin_query_id(c, "after", &after) < 0 || ta_admin_query_id(c, "before", &before) < 0)
        return;
    if (after != 0 && before != 0) {
        ta_admin_reply_field(c, "before", "exclusive", "give after or before, not both");
        return;
    }
    keyset = after != 0 || before != 0;
    if (keyset && page != 1) {
        ta_admin_reply_field(c, "page", "exclusive", "page does not go with after or before");
        return;
    }
    if (c->txn == NULL && ta_admin_txn(c, false) != 0)
        return;
    if ((rc = ta_rec_count(c->st, c->txn, ta_rec_db(d), &entries)) != 0) {
        ta_admin_reply_store_error(c, rc, d->name);
        return;
    }

    memset(&ls, 0, sizeof(ls));
    ls.c = c;
    ls.filter = filter;
    ls.farg = farg;
    ls.render = render;
    if (keyset) {
        ls.first = 0;
        ls.last = size; /* render size, see one more */
        ls.want = size + 1;
        ls.ids = ids;
        ls.read_max = filter != NULL ? TA_ADMIN_LIST_SCAN : 0;
    } else {
        ls.first = (page - 1) * size;
        ls.last = ls.first + size;
        if (filter == NULL)
            ls.want = ls.last + 1; /* the count comes from the table */
        else /* read on past the page for the count, up to the sample */
            ls.tail_scan = TA_ADMIN_COUNT_SCAN;
    }
    ls.results = json_array();
    if (ls.results == NULL) {
        ta_admin_reply_store_error(c, -ENOMEM, d->name);
        return;
    }
    rc = keyset ? ta_rec_walk_from(c->st, c->txn, d, after != 0 ? after : before, before != 0,
                                   list_cb, &ls)
                : ta_rec_walk(c->st, c->txn, d, list_cb, &ls);
    if (rc < 0 || ls.err != 0) {
        json_decref(ls.results);
        ta_admin_reply_store_error(c, rc < 0 ? rc : ls.err, d->name);
        return;
    }

    if (keyset) {
        size_t n = json_array_size(ls.results);
        bool more = ls.count > size || ls.cut; /* beyond the page, in the walk's direction */
        if (before != 0) { /* walked down: the page reads upwards */
            for (size_t i = 0; i < n / 2; i++) {
                json_t *x = json_incref(json_array_get(ls.results, i));
                uint64_t t = ids[i];
                json_array_set(ls.results, i, json_array_get(ls.results, n - 1 - i));
                json_array_set_new(ls.results, n - 1 - i, x);
                ids[i] = ids[n - 1 - i];
                ids[n - 1 - i] = t;
            }
            next = n > 0 ? cursor_url(c, "after", ids[n - 1]) : cursor_url(c, "after", before - 1);
            prev = more ? cursor_url(c, "before", n > 0 && !ls.cut ? ids[0] : ls.last_read)
                        : json_null();
        } else {
            next = more ? cursor_url(c, "after", n > 0 && !ls.cut ? ids[n - 1] : ls.last_read)
                        : json_null();
            prev = n > 0 ? cursor_url(c, "before", ids[0]) : cursor_url(c, "before", after + 1);
        }
        rc = list_count(c, d, filter, farg, entries, &count, &estimated);
    } else {
        if (filter == NULL) {
            count = entries;
        } else {
            count = ls.count;
            if (ls.cut && ls.read > ls.read_at_fill) { /* scale what follows the page */
                uint64_t tail_read = ls.read - ls.read_at_fill, seen = ls.count - ls.last;
                count = ls.count +
                        (uint64_t)((unsigned __int128)seen * (entries - ls.read) / tail_read);
                estimated = true;
            }
        }
        pages = (count + size - 1) / size;
        next = page < pages || (ls.cut && ls.count > ls.last) ? ta_admin_page_url(c, page + 1)
                                                               : json_null();
        prev = page > 1 ? ta_admin_page_url(c, page - 1 < pages ? page - 1 : (pages > 0 ? pages : 1))
                        : json_null();
    }
    if (rc < 0) {
        json_decref(ls.results);
        json_decref(next);
        json_decref(prev);
        ta_admin_reply_store_error(c, rc, d->name);
        return;
    }
    out = json_pack("{s:I,s:b,s:o,s:o,s:o}", "count", (json_int_t)count, "count_estimated",
                    estimated, "next", next, "previous", prev, "results", ls.results);
    ta_admin_reply_json(c, 200, out);
}

/* ---- routing ------------------------------------------------------------- */

/* A request id in a path: 32 lower-case hex digits (X-Request-Id, an audit
 * record's "id"). */
static bool parse_rid(const char *s, size_t len, uint8_t rid[16])
{
    if (len != 32)
        return false;
    for (size_t i = 0; i < 32; i++) {
        char ch = s[i];
        int h = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
        if (h < 0)
            return false;
        rid[i / 2] = (uint8_t)(i % 2 == 0 ? h << 4 : (rid[i / 2] | h));
    }
    return true;
}

/* Does path match pattern? Trailing slashes of both are ignored (one);
 * "{id}" takes a canonical positive integer, "{request_id}" 32 lower-case
 * hex digits. */
static bool route_match(const char *pattern, const char *path, size_t plen, uint64_t *id,
                        uint8_t rid[16])
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
        bool num = pe - pattern >= 4 && memcmp(pattern, "{id}", 4) == 0;
        bool hex = !num && pe - pattern >= 12 && memcmp(pattern, "{request_id}", 12) == 0;
        if (num || hex) {
            const char *seg = pp;
            while (pp < ppe && *pp != '/')
                pp++;
            if (num ? !parse_posint(seg, (size_t)(pp - seg), id)
                    : !parse_rid(seg, (size_t)(pp - seg), rid))
                return false;
            pattern += num ? 4 : 12;
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
    const ta_admin_route_t *r = NULL;
    char allow[64] = "";
    uint64_t id = 0;
    uint8_t rid[16];

    memset(res, 0, sizeof(*res));
    memset(&c, 0, sizeof(c));
    c.a = ctx;
    c.st = c.a->conf.store;
    c.req = req;
    c.res = res;

    for (size_t i = 0; i < TA_ARRAY_SIZE(routes); i++) {
        if (!route_match(routes[i].pattern, req->path, req->path_len, &id, rid))
            continue;
        if (strcmp(routes[i].method, req->method) == 0) {
            r = &routes[i];
            c.id = id;
            memcpy(c.rid, rid, sizeof(c.rid));
            c.auth = r->auth;
            c.may_write = (r->flags & TA_ROUTE_WRITE) != 0;
            break;
        }
        add_allow(allow, sizeof(allow), routes[i].method);
    }
    if (r == NULL) {
        if (allow[0] != '\0') {
            ta_admin_reply_error(&c, 405, "invalid_request_error", "method_not_allowed", NULL,
                                 "method %s not allowed here; allowed: %s", req->method, allow);
            snprintf(res->allow, sizeof(res->allow), "%s", allow);
        } else {
            ta_admin_reply_error(&c, 404, "not_found_error", "not_found", NULL, "no such endpoint: %.*s",
                                 (int)(req->path_len > 200 ? 200 : req->path_len), req->path);
        }
        return;
    }
    if (req->body_len > c.a->conf.max_body) {
        ta_admin_reply_error(&c, 413, "request_too_large", "request_too_large", NULL,
                             "request body is %zu bytes; the limit is %zu", req->body_len,
                    c.a->conf.max_body);
        return;
    }
    if (r->auth != AUTH_NONE && ta_admin_auth_check(&c, r->auth) != 0)
        return;
    if (r->flags & TA_ROUTE_BODY) {
        json_error_t jerr;
        if (req->body_len == 0 || req->body == NULL) {
            ta_admin_reply_error(&c, 400, "invalid_request_error", "invalid_json", NULL,
                                 "a JSON object body is required");
            return;
        }
        if (!ta_utf8_valid(req->body, req->body_len)) {
            ta_admin_reply_error(&c, 400, "invalid_request_error", "invalid_json", NULL,
                                 "the body is not valid UTF-8");
            return;
        }
        c.body = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
        if (c.body == NULL) {
            ta_admin_reply_error(&c, 400, "invalid_request_error", "invalid_json", NULL,
                                 "malformed JSON at line %d, column %d: %s", jerr.line, jerr.column,
                        jerr.text);
            return;
        }
        if (!json_is_object(c.body)) {
            ta_admin_reply_error(&c, 400, "invalid_request_error", "invalid_json", NULL,
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

const ta_admin_route_t *ta_admin_route(size_t i)
{
    return i < TA_ARRAY_SIZE(routes) ? &routes[i] : NULL;
}
