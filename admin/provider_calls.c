/*
 * provider_calls.c - the admin endpoints that call a provider:
 *
 *   POST /api/admin/providers/{id}/test/         200 {"ok","status","latency_ms",
 *                                                     "models_count","error"}
 *   POST /api/admin/providers/{id}/sync-models/  200 {"created":[..],"existing":[..],
 *                                                     "skipped":[{"name","reason"}]}
 *
 * Both call the provider's models endpoint:
 *   openai     GET {base_url}/models               Authorization: Bearer <key>
 *   anthropic  GET {base_url}/v1/models?limit=1000 x-api-key: <key>,
 *                                                  anthropic-version: 2023-06-01
 * and read the ids of the "data" array (both providers answer that shape).
 *
 * The loop never blocks on the provider: the handler only reads the provider
 * (one read transaction, closed by the router), unseals its key into memory
 * and hands the worker an outbound call (ta_apires_t.fetch, schema/api.h).
 * The worker makes the call on its own libcurl multi client and then runs
 * the continuation here, which opens its own short transaction:
 *
 *   test         no transaction: the answer is the provider's.
 *   sync-models  ONE write transaction on the ledger env:
 *                  providers id -> ta_provider_t   re-read: deleted meanwhile -> 404
 *                  models_by_name name -> id       each listed name looked up
 *                  models id -> ta_model_t         one new record per missing name
 *                so the models and their index are created all or nothing,
 *                and (writers being serialized with provider DELETE, which
 *                checks models inside its own write transaction) no model
 *                ever routes to a deleted provider. A worker killed inside it
 *                loses the uncommitted transaction only.
 *
 * New models are named as the provider lists them, with one route to this
 * provider (upstream name = that name), capabilities chat + streaming, and
 * no prices (has_prices false): a key with a cost limit cannot use them
 * until an admin sets prices (fail closed).
 *
 * Timeouts come from the provider (connect_timeout_ms, timeout_s), capped
 * for these calls: 10 s for a test, 60 s for a sync. The provider key lives
 * only in the fetch's header buffer, wiped when the worker releases it; it is
 * never logged.
 *
 * Worker processes only, on the loop thread.
 */
#include "admin/admin_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEST_TIMEOUT_CAP_MS 10000
#define SYNC_TIMEOUT_CAP_MS 60000
#define MODELS_MAX_RESPONSE ((size_t)8 << 20)
/* Bounds the sync's write transaction (the ledger's write lock is shared
 * with every /v1 hold). */
#define SYNC_MAX_MODELS 5000
#define ANTHROPIC_VERSION "2023-06-01"

enum { CALL_TEST = 1, CALL_SYNC = 2 };

/* What the continuation needs; the fetch owns it (cont_arg). */
typedef struct call_arg {
    int kind;
    uint64_t provider_id;
    char request_id[48];
    char path[160];
    bool may_write; /* the route's TA_ROUTE_WRITE (sync-models) */
} call_arg_t;

static void fetch_release(ta_api_fetch_t *f)
{
    if (f == NULL)
        return;
    free(f->cont_arg);
    explicit_bzero(f, sizeof(*f)); /* the headers carry the provider key */
    free(f);
}

/* ---- the continuation ------------------------------------------------- */

/* Short text of the provider's error body ({"error":{"message"}} for both
 * OpenAI and Anthropic), else "". */
static void provider_message(const ta_api_fetch_result_t *r, char *out, size_t cap)
{
    json_t *root = json_loadb(r->body, r->body_len, 0, NULL);
    json_t *e = json_object_get(root, "error");
    const char *m = json_string_value(json_is_object(e) ? json_object_get(e, "message") : e);

    snprintf(out, cap, "%s", m != NULL ? m : "");
    json_decref(root);
}

/* Parse {"data":[{"id":"..."}, ...]} into a new array of the distinct id
 * strings in the provider's order. NULL with why on a malformed answer. */
static json_t *parse_model_ids(const ta_api_fetch_result_t *r, char *why, size_t cap)
{
    json_error_t jerr;
    json_t *root, *data, *ids = NULL, *seen = NULL, *el;
    size_t i;

    root = json_loadb(r->body, r->body_len, 0, &jerr);
    if (root == NULL) {
        snprintf(why, cap, "the provider's models list is not JSON (line %d: %s)", jerr.line,
                 jerr.text);
        return NULL;
    }
    data = json_object_get(root, "data");
    if (!json_is_array(data)) {
        snprintf(why, cap, "the provider's models list has no \"data\" array");
        goto Exit;
    }
    ids = json_array();
    seen = json_object();
    if (ids == NULL || seen == NULL) {
        snprintf(why, cap, "out of memory");
        json_decref(ids);
        ids = NULL;
        goto Exit;
    }
    json_array_foreach(data, i, el) {
        const char *id = json_string_value(json_object_get(el, "id"));
        if (id == NULL || json_object_get(seen, id) != NULL)
            continue;
        json_object_set_new(seen, id, json_true());
        json_array_append_new(ids, json_string(id));
    }
Exit:
    json_decref(seen);
    json_decref(root);
    return ids;
}

static bool status_ok(const ta_api_fetch_result_t *r)
{
    return r->err == 0 && r->status >= 200 && r->status < 300;
}

static void answer_test(actx_t *c, const ta_api_fetch_result_t *r)
{
    char why[400], msg[256];
    json_t *ids = NULL, *out;

    why[0] = '\0';
    if (r->err != 0) {
        snprintf(why, sizeof(why), "the provider could not be reached: %s", r->error);
    } else if (!status_ok(r)) {
        provider_message(r, msg, sizeof(msg));
        snprintf(why, sizeof(why), "the provider answered %d%s%s", r->status,
                 msg[0] != '\0' ? ": " : "", msg);
    } else {
        ids = parse_model_ids(r, why, sizeof(why));
    }
    out = json_pack("{s:b,s:o,s:I,s:o,s:o}", "ok", ids != NULL, "status",
                    r->status > 0 ? json_integer(r->status) : json_null(), "latency_ms",
                    (json_int_t)r->latency_ms, "models_count",
                    ids != NULL ? json_integer((json_int_t)json_array_size(ids)) : json_null(),
                    "error", ids != NULL ? json_null() : json_string(why));
    json_decref(ids);
    ta_admin_reply_json(c, 200, out);
}

static int skip(json_t *skipped, const char *name, const char *reason)
{
    return json_array_append_new(skipped, json_pack("{s:s,s:s}", "name", name, "reason", reason));
}

/* Create the missing models in c->txn (write). Replies. */
static void sync_store(actx_t *c, json_t *ids)
{
    json_t *created = json_array(), *existing = json_array(), *skipped = json_array(), *v;
    ta_provider_t p;
    ta_model_t m;
    ta_err_t err;
    uint64_t other;
    int64_t now = ta_now_s();
    size_t i;
    int rc;

    if (created == NULL || existing == NULL || skipped == NULL) {
        rc = -ENOMEM;
        goto Fail;
    }
    if (ta_admin_txn(c, true) != 0)
        goto Exit;
    /* The provider may have been deleted while its answer was awaited. */
    rc = ta_rec_get(c->st, c->txn, &ta_desc_provider, c->id, &p);
    if (rc != 0)
        goto Fail;
    json_array_foreach(ids, i, v) {
        const char *name = json_string_value(v);
        size_t len = json_string_length(v);

        if (len == 0 || len >= sizeof(m.name) || strlen(name) != len) {
            skip(skipped, name,
                 len == 0                ? "the name is empty"
                 : len >= sizeof(m.name) ? "the name is longer than 127 bytes"
                                         : "the name contains a NUL byte");
            continue;
        }
        rc = ta_idx_get(c->st, c->txn, TA_DB_MODELS_BY_NAME, name, &other);
        if (rc == 0) {
            json_array_append(existing, v);
            continue;
        }
        if (rc != TA_ENOTFOUND)
            goto Fail;
        memset(&m, 0, sizeof(m));
        ta_rec_defaults(&ta_desc_model, &m);
        memcpy(m.name, name, len + 1);
        m.nroutes = 1;
        m.routes[0].provider_id = p.id;
        memcpy(m.routes[0].upstream_name, name, len + 1);
        m.capabilities = TA_CAP_CHAT | TA_CAP_STREAMING;
        m.has_prices = false; /* fail closed: see the header comment */
        memset(&err, 0, sizeof(err));
        if (ta_rec_validate(&ta_desc_model, &m, &err) != 0) {
            skip(skipped, name, err.message[0] != '\0' ? err.message : "not a valid model name");
            continue;
        }
        rc = ta_rec_next_id(c->st, c->txn, &ta_desc_model, &m.id);
        if (rc == 0) {
            m.created_at = m.updated_at = now;
            rc = ta_idx_put(c->st, c->txn, TA_DB_MODELS_BY_NAME, m.name, m.id);
        }
        if (rc == 0)
            rc = ta_rec_put(c->st, c->txn, &ta_desc_model, m.id, &m);
        if (rc != 0)
            goto Fail;
        json_array_append(created, v);
    }
    ta_admin_reply_json(c, 200, json_pack("{s:O,s:O,s:O}", "created", created, "existing", existing,
                                 "skipped", skipped));
    goto Exit;
Fail:
    ta_admin_reply_store_error(c, rc, rc == TA_ENOTFOUND ? "provider" : "model");
Exit:
    json_decref(created);
    json_decref(existing);
    json_decref(skipped);
}

static void answer_sync(actx_t *c, const ta_api_fetch_result_t *r)
{
    char why[400], msg[256];
    json_t *ids;

    if (r->err != 0) {
        ta_admin_reply_error(c, r->timeout ? 504 : 502, "upstream_error",
                             r->timeout ? "upstream_timeout" : "upstream_unavailable", NULL,
                    "the provider could not be reached: %s", r->error);
        return;
    }
    if (!status_ok(r)) {
        provider_message(r, msg, sizeof(msg));
        ta_admin_reply_error(c, 502, "upstream_error", "upstream_status", NULL,
                             "the provider answered %d%s%s", r->status, msg[0] != '\0' ? ": " : "", msg);
        return;
    }
    ids = parse_model_ids(r, why, sizeof(why));
    if (ids == NULL) {
        ta_admin_reply_error(c, 502, "upstream_error", "upstream_invalid_response", NULL, "%s", why);
        return;
    }
    if (json_array_size(ids) > SYNC_MAX_MODELS)
        ta_admin_reply_error(c, 502, "upstream_error", "upstream_invalid_response", NULL,
                             "the provider lists %zu models; at most %d are synced at once",
                    json_array_size(ids), SYNC_MAX_MODELS);
    else
        sync_store(c, ids);
    json_decref(ids);
}

/* ta_api_cont_fn: ctx is the ta_admin_t. Commits like the router does: a
 * write transaction only when the answer is < 400. */
static void models_cont(void *ctx, void *arg, const ta_api_fetch_result_t *r, ta_apires_t *res)
{
    call_arg_t *ca = arg;
    ta_apireq_t req;
    actx_t c;
    int rc;

    ta_admin_ctx_rebuild(&c, &req, ctx, res, "POST", ca->path, ca->request_id, ca->provider_id);
    c.may_write = ca->may_write;

    if (ca->kind == CALL_TEST)
        answer_test(&c, r);
    else
        answer_sync(&c, r);

    if (c.txn != NULL) {
        if (c.txn_write && res->status < 400) {
            rc = ta_txn_commit(c.txn);
            c.txn = NULL;
            if (rc != 0)
                ta_admin_reply_store_error(&c, rc, "commit");
        } else {
            ta_txn_abort(c.txn);
            c.txn = NULL;
        }
    }
    if (ca->kind == CALL_SYNC && res->status == 200)
        ta_log(TA_LOG_INFO, "provider %llu: models synced (%s)",
               (unsigned long long)ca->provider_id, ca->request_id);
}

/* ---- the handlers ----------------------------------------------------- */

static bool has_ctl(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return true;
    return false;
}

static int32_t min32(int64_t a, int64_t b)
{
    return (int32_t)(a < b ? a : b);
}

/* Read provider {id}, unseal its key and hand the worker the models call. */
static void start_models_call(actx_t *c, int kind)
{
    ta_provider_t p;
    ta_api_fetch_t *f = NULL;
    call_arg_t *ca = NULL;
    char key[sizeof(p.key_sealed) + 1];
    int kl = 0, rc;
    size_t bl, nh = 0;
    int64_t total;

    if (ta_admin_txn(c, false) != 0)
        return;
    rc = ta_rec_get(c->st, c->txn, &ta_desc_provider, c->id, &p);
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "provider");
        return;
    }
    f = calloc(1, sizeof(*f));
    ca = calloc(1, sizeof(*ca));
    if (f == NULL || ca == NULL) {
        ta_admin_reply_store_error(c, -ENOMEM, "provider");
        goto Exit;
    }
    if (p.key_sealed_len > 0) {
        kl = ta_unseal(c->a->conf.master_key, p.key_sealed, p.key_sealed_len, key, sizeof(key));
        if (kl < 0) {
            ta_log(TA_LOG_ERROR, "provider %llu: cannot unseal its API key: %s (%s)",
                   (unsigned long long)p.id, ta_strerror(kl),
                   c->req->request_id != NULL ? c->req->request_id : "-");
            ta_admin_reply_error(c, 500, "server_error", "provider_key_unavailable", NULL,
                                 "the provider's API key cannot be decrypted (was the master key changed?)");
            goto Exit;
        }
        /* A CR/LF in the key would inject header lines. */
        if (has_ctl(key, (size_t)kl)) {
            ta_admin_reply_error(c, 400, "invalid_request_error", "invalid_api_key", "api_key",
                                 "the provider's API key contains control characters");
            goto Exit;
        }
    }

    bl = strlen(p.base_url);
    while (bl > 0 && p.base_url[bl - 1] == '/')
        bl--;
    snprintf(f->url, sizeof(f->url), "%.*s%s", (int)bl, p.base_url,
             p.type == TA_PROVIDER_ANTHROPIC ? "/v1/models?limit=1000" : "/models");
    snprintf(f->headers[nh++], sizeof(f->headers[0]), "Accept: application/json");
    if (p.type == TA_PROVIDER_ANTHROPIC) {
        snprintf(f->headers[nh++], sizeof(f->headers[0]), "anthropic-version: %s",
                 ANTHROPIC_VERSION);
        if (kl > 0)
            snprintf(f->headers[nh++], sizeof(f->headers[0]), "x-api-key: %s", key);
    } else if (kl > 0) {
        snprintf(f->headers[nh++], sizeof(f->headers[0]), "Authorization: Bearer %s", key);
    }
    f->nheaders = nh;
    total = (int64_t)(p.timeout_s > 0 ? p.timeout_s : 600) * 1000;
    f->total_timeout_ms = min32(total, kind == CALL_TEST ? TEST_TIMEOUT_CAP_MS : SYNC_TIMEOUT_CAP_MS);
    f->connect_timeout_ms = min32(p.connect_timeout_ms > 0 ? p.connect_timeout_ms : 5000,
                                  f->total_timeout_ms);
    f->max_response = MODELS_MAX_RESPONSE;

    ca->kind = kind;
    ca->may_write = c->may_write;
    ca->provider_id = p.id;
    snprintf(ca->request_id, sizeof(ca->request_id), "%s",
             c->req->request_id != NULL ? c->req->request_id : "-");
    snprintf(ca->path, sizeof(ca->path), "%.*s",
             (int)(c->req->path_len < sizeof(ca->path) ? c->req->path_len : sizeof(ca->path) - 1),
             c->req->path);
    f->cont = models_cont;
    f->cont_arg = ca;
    f->release = fetch_release;
    ca = NULL;
    c->res->fetch = f;
    f = NULL;
Exit:
    explicit_bzero(key, sizeof(key));
    free(ca);
    fetch_release(f);
}

void ta_admin_providers_test(actx_t *c)
{
    start_models_call(c, CALL_TEST);
}

void ta_admin_providers_sync_models(actx_t *c)
{
    start_models_call(c, CALL_SYNC);
}
