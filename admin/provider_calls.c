/*
 * provider_calls.c - the admin endpoints that call a provider, and the
 * health probe (ledger/health.h) built the same way:
 *
 *   POST /api/admin/providers/{id}/test/         200 {"ok","status","latency_ms",
 *                                                     "models_count","error"}
 *   POST /api/admin/providers/{id}/sync-models/  200 {"created":[..],"updated":[..],
 *                                                     "existing":[..],"missing":[..],
 *                                                     "skipped":[{"name","reason"}]}
 *   ta_admin_probe_fetch()                       the probe call of a provider
 *
 * All of them call the provider's models endpoint:
 *   openai     GET {base_url}/models               Authorization: Bearer <key>
 *   anthropic  GET {base_url}/v1/models?limit=1000 x-api-key: <key>,
 *              [&after_id=<last_id>]               anthropic-version: 2023-06-01
 * and read the "data" array (both providers answer that shape). Anthropic's
 * list is paged: while it answers "has_more": true, sync asks for the page
 * after its "last_id" (a continuation may return the next call,
 * schema/api.h), at most SYNC_MAX_PAGES pages.
 *
 * What sync reads of each listed model (the first of these fields present
 * with a whole number in 1..1e9; providers name them differently):
 *   context window  context_window, context_length, max_context_length,
 *                   max_model_len, max_input_tokens (Anthropic),
 *                   top_provider.context_length
 *   max output      max_output_tokens, max_completion_tokens, max_tokens
 *                   (Anthropic), top_provider.max_completion_tokens
 *
 * The loop never blocks on the provider: the handler only reads the provider
 * (one read transaction, closed by the router), unseals its key into memory
 * and hands the worker an outbound call (ta_apires_t.fetch, schema/api.h).
 * The worker makes the call on its own libcurl multi client and then runs
 * the continuation here, which opens its own short transaction:
 *
 *   test         no transaction: the answer is the provider's.
 *   sync-models  ONE write transaction on the ledger env, after the last page:
 *                  providers id -> ta_provider_t   re-read: deleted meanwhile -> 404
 *                  models (walk)                   the models routed to it
 *                  models id -> ta_model_t         each of them updated when
 *                                                  the list changed something
 *                  models_by_name name -> id       each listed name looked up
 *                  models id -> ta_model_t         one new record per missing name
 *                so the models and their index change all or nothing,
 *                and (writers being serialized with provider DELETE, which
 *                checks models inside its own write transaction) no model
 *                ever routes to a deleted provider. A worker killed inside it
 *                loses the uncommitted transaction only.
 *
 * What sync changes:
 *   a model routed to this provider (a route with its provider_id) whose
 *   upstream name is listed: context_window and max_output_tokens, to what
 *   the provider reports (when it reports them), and the route's
 *   upstream_missing back to false -> "updated" when anything changed;
 *   one whose upstream name is not listed: the route's upstream_missing set
 *   to true (the model keeps being served: a list can lag) -> "missing";
 *   a listed name that is no model yet: a new model named as the provider
 *   lists it, with one route to this provider (upstream name = that name,
 *   weight 1), capabilities chat + streaming, the reported limits, and no
 *   prices (has_prices false): a key with a cost limit cannot use it until
 *   an admin sets prices (fail closed) -> "created";
 *   a listed name that is already a model name -> "existing" (as before).
 * Prices are never written by sync, so a price an admin set (prices_set)
 * is never overwritten: prices are the admin's decision, not the list's.
 *
 * Timeouts come from the provider (connect_timeout_ms, timeout_s), capped
 * for these calls: 10 s for a test or a probe, 60 s per page of a sync. The
 * provider key lives only in the fetch's header buffer, wiped when the
 * worker releases it; it is never logged.
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
#define SYNC_MAX_PAGES (TA_API_FETCH_MAX_CHAIN - 1)
#define ANTHROPIC_VERSION "2023-06-01"
#define LIMIT_MAX 1000000000 /* context_window, max_output_tokens (schema/records.c) */

enum { CALL_TEST = 1, CALL_SYNC = 2, CALL_PROBE = 3 };

/* What the continuation needs; the fetch owns it (cont_arg). */
typedef struct call_arg {
    int kind;
    uint64_t provider_id;
    char request_id[48];
    char path[160];
    bool may_write; /* the route's TA_ROUTE_WRITE (sync-models) */
    /* sync: what the pages so far listed */
    json_t *ids;    /* distinct ids in the provider's order */
    json_t *info;   /* id -> {"context_window","max_output_tokens"} (those reported) */
    int pages;
} call_arg_t;

static void arg_free(call_arg_t *ca)
{
    if (ca == NULL)
        return;
    json_decref(ca->ids);
    json_decref(ca->info);
    free(ca);
}

static void fetch_release(ta_api_fetch_t *f)
{
    if (f == NULL)
        return;
    arg_free(f->cont_arg);
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

/* The first of keys in o holding a whole number in 1..LIMIT_MAX; 0 none. */
static int64_t limit_of(const json_t *o, const char *const *keys)
{
    for (; *keys != NULL; keys++) {
        const json_t *v = json_object_get(o, *keys);
        double d = json_is_integer(v) ? (double)json_integer_value(v) : json_is_real(v) ? json_real_value(v) : 0;
        if (d >= 1 && d <= LIMIT_MAX && d == (double)(int64_t)d)
            return (int64_t)d;
    }
    return 0;
}

static const char *const context_keys[] = {"context_window", "context_length", "max_context_length",
                                           "max_model_len", "max_input_tokens", NULL};
static const char *const output_keys[] = {"max_output_tokens", "max_completion_tokens", "max_tokens", NULL};
static const char *const top_context_keys[] = {"context_length", NULL};
static const char *const top_output_keys[] = {"max_completion_tokens", NULL};

/* One page {"data":[{"id":"...", ...}, ...]} into ids/info (distinct ids, in
 * the provider's order). Returns the page's JSON root (for has_more and
 * last_id; new reference), or NULL with why on a malformed answer. */
static json_t *parse_page(const ta_api_fetch_result_t *r, json_t *ids, json_t *info, char *why, size_t cap)
{
    json_error_t jerr;
    json_t *root, *data, *el;
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
        json_decref(root);
        return NULL;
    }
    json_array_foreach(data, i, el) {
        const char *id = json_string_value(json_object_get(el, "id"));
        if (id == NULL || json_object_get(info, id) != NULL)
            continue;
        json_t *top = json_object_get(el, "top_provider");
        int64_t cw = limit_of(el, context_keys), mo = limit_of(el, output_keys);
        if (cw == 0)
            cw = limit_of(top, top_context_keys);
        if (mo == 0)
            mo = limit_of(top, top_output_keys);
        json_t *in = json_object();
        if (cw > 0)
            json_object_set_new(in, "context_window", json_integer(cw));
        if (mo > 0)
            json_object_set_new(in, "max_output_tokens", json_integer(mo));
        json_object_set_new(info, id, in);
        json_array_append_new(ids, json_string(id));
    }
    return root;
}

static bool status_ok(const ta_api_fetch_result_t *r)
{
    return r->err == 0 && r->status >= 200 && r->status < 300;
}

static void answer_test(actx_t *c, const ta_api_fetch_result_t *r)
{
    char why[400], msg[256];
    json_t *ids = json_array(), *info = json_object(), *page = NULL, *out;

    why[0] = '\0';
    if (r->err != 0) {
        snprintf(why, sizeof(why), "the provider could not be reached: %s", r->error);
    } else if (!status_ok(r)) {
        provider_message(r, msg, sizeof(msg));
        snprintf(why, sizeof(why), "the provider answered %d%s%s", r->status,
                 msg[0] != '\0' ? ": " : "", msg);
    } else if (ids == NULL || info == NULL) {
        snprintf(why, sizeof(why), "out of memory");
    } else {
        page = parse_page(r, ids, info, why, sizeof(why));
    }
    out = json_pack("{s:b,s:o,s:I,s:o,s:o}", "ok", page != NULL, "status",
                    r->status > 0 ? json_integer(r->status) : json_null(), "latency_ms",
                    (json_int_t)r->latency_ms, "models_count",
                    page != NULL ? json_integer((json_int_t)json_array_size(ids)) : json_null(),
                    "error", page != NULL ? json_null() : json_string(why));
    json_decref(page);
    json_decref(ids);
    json_decref(info);
    ta_admin_reply_json(c, 200, out);
}

static int skip(json_t *skipped, const char *name, const char *reason)
{
    return json_array_append_new(skipped, json_pack("{s:s,s:s}", "name", name, "reason", reason));
}

/* The models routed to provider_id (ids, collected before anything is
 * written: the walk's cursor must not see our own puts). */
typedef struct routed {
    uint64_t provider_id;
    uint64_t *ids;
    size_t n, cap;
    int rc;
} routed_t;

static int routed_cb(uint64_t id, const void *rec, void *arg)
{
    const ta_model_t *m = rec;
    routed_t *r = arg;
    for (uint16_t i = 0; i < m->nroutes && i < TA_MODEL_MAX_ROUTES; i++) {
        if (m->routes[i].provider_id != r->provider_id)
            continue;
        if (r->n == r->cap) {
            size_t cap = r->cap ? r->cap * 2 : 64;
            uint64_t *nb = realloc(r->ids, cap * sizeof(*nb));
            if (nb == NULL) {
                r->rc = -ENOMEM;
                return -ENOMEM;
            }
            r->ids = nb;
            r->cap = cap;
        }
        r->ids[r->n++] = id;
        break;
    }
    return 0;
}

/* Bring the models routed to p in line with the list (see the top):
 * updated and missing get their names. */
static int sync_existing(actx_t *c, const ta_provider_t *p, json_t *info, json_t *updated, json_t *missing,
                         int64_t now)
{
    routed_t r = {.provider_id = p->id};
    ta_model_t m;
    ta_err_t err;
    int rc = ta_rec_walk(c->st, c->txn, &ta_desc_model, routed_cb, &r);
    if (rc == 0)
        rc = r.rc;
    for (size_t k = 0; rc == 0 && k < r.n; k++) {
        if ((rc = ta_rec_get(c->st, c->txn, &ta_desc_model, r.ids[k], &m)) != 0)
            break;
        bool changed = false, gone = false;
        const json_t *in = NULL;
        for (uint16_t i = 0; i < m.nroutes && i < TA_MODEL_MAX_ROUTES; i++) {
            ta_route_t *rt = &m.routes[i];
            if (rt->provider_id != p->id)
                continue;
            const json_t *li = json_object_get(info, rt->upstream_name);
            if (li != NULL && in == NULL)
                in = li;
            if (rt->upstream_missing != (li == NULL)) {
                rt->upstream_missing = li == NULL;
                changed = true;
            }
            gone |= li == NULL;
        }
        int64_t cw = json_integer_value(json_object_get(in, "context_window"));
        int64_t mo = json_integer_value(json_object_get(in, "max_output_tokens"));
        if (cw > 0 && cw != m.context_window) {
            m.context_window = cw;
            changed = true;
        }
        if (mo > 0 && mo != m.max_output_tokens) {
            m.max_output_tokens = mo;
            changed = true;
        }
        if (gone)
            json_array_append_new(missing, json_string(m.name));
        if (!changed)
            continue;
        memset(&err, 0, sizeof(err));
        if (ta_rec_validate(&ta_desc_model, &m, &err) != 0) {
            /* a record an older build stored that breaks a rule: left as it is */
            ta_log(TA_LOG_WARN, "sync-models: model %llu not updated: %s", (unsigned long long)m.id,
                   err.message);
            continue;
        }
        m.updated_at = now;
        if ((rc = ta_rec_put(c->st, c->txn, &ta_desc_model, m.id, &m)) != 0)
            break;
        if (!gone)
            json_array_append_new(updated, json_string(m.name));
    }
    free(r.ids);
    return rc;
}

/* Update and create models in c->txn (write). Replies. */
static void sync_store(actx_t *c, json_t *ids, json_t *info)
{
    json_t *created = json_array(), *existing = json_array(), *skipped = json_array(),
           *updated = json_array(), *missing = json_array(), *v;
    ta_provider_t p;
    ta_model_t m;
    ta_err_t err;
    uint64_t other;
    int64_t now = ta_now_s();
    size_t i;
    int rc;

    if (created == NULL || existing == NULL || skipped == NULL || updated == NULL || missing == NULL) {
        rc = -ENOMEM;
        goto Fail;
    }
    if (ta_admin_txn(c, true) != 0)
        goto Exit;
    /* The provider may have been deleted while its answer was awaited. */
    rc = ta_rec_get(c->st, c->txn, &ta_desc_provider, c->id, &p);
    if (rc != 0)
        goto Fail;
    if ((rc = sync_existing(c, &p, info, updated, missing, now)) != 0)
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
        const json_t *in = json_object_get(info, name);
        memset(&m, 0, sizeof(m));
        ta_rec_defaults(&ta_desc_model, &m);
        memcpy(m.name, name, len + 1);
        m.nroutes = 1;
        m.routes[0].provider_id = p.id;
        m.routes[0].weight = 1;
        memcpy(m.routes[0].upstream_name, name, len + 1);
        m.capabilities = TA_CAP_CHAT | TA_CAP_STREAMING;
        m.context_window = json_integer_value(json_object_get(in, "context_window"));
        m.max_output_tokens = json_integer_value(json_object_get(in, "max_output_tokens"));
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
    ta_admin_reply_json(c, 200,
                        json_pack("{s:O,s:O,s:O,s:O,s:O}", "created", created, "updated", updated, "existing",
                                  existing, "missing", missing, "skipped", skipped));
    goto Exit;
Fail:
    ta_admin_reply_store_error(c, rc, rc == TA_ENOTFOUND ? "provider" : "model");
Exit:
    json_decref(created);
    json_decref(existing);
    json_decref(skipped);
    json_decref(updated);
    json_decref(missing);
}

static int build_models_fetch(ta_admin_t *a, const ta_provider_t *p, int kind, const char *after_id,
                              ta_api_fetch_t **out, int *why_rc);

static void models_cont(void *ctx, void *arg, const ta_api_fetch_result_t *r, ta_apires_t *res);

/* A sync page arrived: on with the next page, or store. */
static void answer_sync(actx_t *c, call_arg_t *ca, const ta_api_fetch_result_t *r, ta_apires_t *res)
{
    char why[400], msg[256];
    json_t *page;

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
    if (ca->ids == NULL)
        ca->ids = json_array();
    if (ca->info == NULL)
        ca->info = json_object();
    if (ca->ids == NULL || ca->info == NULL) {
        ta_admin_reply_store_error(c, -ENOMEM, "model");
        return;
    }
    page = parse_page(r, ca->ids, ca->info, why, sizeof(why));
    if (page == NULL) {
        ta_admin_reply_error(c, 502, "upstream_error", "upstream_invalid_response", NULL, "%s", why);
        return;
    }
    ca->pages++;
    bool more = json_is_true(json_object_get(page, "has_more"));
    const char *last = json_string_value(json_object_get(page, "last_id"));
    if (json_array_size(ca->ids) > SYNC_MAX_MODELS) {
        ta_admin_reply_error(c, 502, "upstream_error", "upstream_invalid_response", NULL,
                             "the provider lists more than %d models; at most %d are synced at once",
                             SYNC_MAX_MODELS, SYNC_MAX_MODELS);
    } else if (more && (last == NULL || last[0] == '\0')) {
        ta_admin_reply_error(c, 502, "upstream_error", "upstream_invalid_response", NULL,
                             "the provider's models list has more pages but no \"last_id\"");
    } else if (more && ca->pages >= SYNC_MAX_PAGES) {
        ta_admin_reply_error(c, 502, "upstream_error", "upstream_invalid_response", NULL,
                             "the provider's models list has more than %d pages", SYNC_MAX_PAGES);
    } else if (more) {
        /* the next page, with the provider re-read (its key may have changed) */
        ta_provider_t p;
        ta_api_fetch_t *f = NULL;
        int rc, why_rc = 0;
        if (ta_admin_txn(c, false) != 0)
            goto Exit;
        rc = ta_rec_get(c->st, c->txn, &ta_desc_provider, c->id, &p);
        if (rc == 0)
            rc = build_models_fetch(c->a, &p, CALL_SYNC, last, &f, &why_rc);
        if (rc != 0) {
            if (why_rc != 0)
                ta_admin_reply_error(c, 500, "server_error", "provider_key_unavailable", NULL,
                                     "the provider's API key cannot be decrypted or is not valid");
            else
                ta_admin_reply_store_error(c, rc, "provider");
            goto Exit;
        }
        call_arg_t *next = f->cont_arg;
        memcpy(next, ca, sizeof(*next)); /* the pages so far move to the next call */
        ca->ids = ca->info = NULL;
        f->cont = models_cont;
        res->fetch = f;
    } else {
        sync_store(c, ca->ids, ca->info);
    }
Exit:
    json_decref(page);
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
        answer_sync(&c, ca, r, res);

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
    if (ca->kind == CALL_SYNC && res->status == 200 && res->fetch == NULL)
        ta_log(TA_LOG_INFO, "provider %llu: models synced (%s)",
               (unsigned long long)ca->provider_id, ca->request_id);
}

/* ---- the calls --------------------------------------------------------- */

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

/* after_id percent-encoded for the query (RFC 3986 unreserved kept). */
static void query_escape(char *out, size_t cap, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (; *s != '\0' && n + 4 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            out[n++] = (char)ch;
        } else {
            out[n++] = '%';
            out[n++] = hex[ch >> 4];
            out[n++] = hex[ch & 15];
        }
    }
    out[n] = '\0';
}

/* The models call of provider p (its key unsealed into the headers), with
 * an empty call_arg_t as cont_arg. Returns 0, -ENOMEM, or a key problem
 * with *why_rc set: the unseal error (< 0) or 1 for control characters. */
static int build_models_fetch(ta_admin_t *a, const ta_provider_t *p, int kind, const char *after_id,
                              ta_api_fetch_t **out, int *why_rc)
{
    ta_api_fetch_t *f;
    char key[sizeof(p->key_sealed) + 1], after[3 * 128 + 1] = "";
    int kl = 0, rc = 0;
    size_t bl, nh = 0;
    int64_t total;

    *out = NULL;
    f = calloc(1, sizeof(*f));
    if (f == NULL || (f->cont_arg = calloc(1, sizeof(call_arg_t))) == NULL) {
        free(f);
        return -ENOMEM;
    }
    f->release = fetch_release;
    if (p->key_sealed_len > 0) {
        kl = ta_unseal(a->conf.master_key, p->key_sealed, p->key_sealed_len, key, sizeof(key));
        if (kl < 0) {
            *why_rc = kl;
            rc = TA_ECRYPTO;
            goto Exit;
        }
        /* A CR/LF in the key would inject header lines. */
        if (has_ctl(key, (size_t)kl)) {
            *why_rc = 1;
            rc = TA_EINVAL;
            goto Exit;
        }
    }
    if (after_id != NULL)
        query_escape(after, sizeof(after), after_id);
    bl = strlen(p->base_url);
    while (bl > 0 && p->base_url[bl - 1] == '/')
        bl--;
    snprintf(f->url, sizeof(f->url), "%.*s%s%s%s", (int)bl, p->base_url,
             p->type == TA_PROVIDER_ANTHROPIC ? "/v1/models?limit=1000" : "/models",
             p->type == TA_PROVIDER_ANTHROPIC && after[0] != '\0' ? "&after_id=" : "",
             p->type == TA_PROVIDER_ANTHROPIC ? after : "");
    snprintf(f->headers[nh++], sizeof(f->headers[0]), "Accept: application/json");
    if (p->type == TA_PROVIDER_ANTHROPIC) {
        snprintf(f->headers[nh++], sizeof(f->headers[0]), "anthropic-version: %s",
                 ANTHROPIC_VERSION);
        if (kl > 0)
            snprintf(f->headers[nh++], sizeof(f->headers[0]), "x-api-key: %.*s", kl, key);
    } else if (kl > 0) {
        snprintf(f->headers[nh++], sizeof(f->headers[0]), "Authorization: Bearer %.*s", kl, key);
    }
    f->nheaders = nh;
    total = (int64_t)(p->timeout_s > 0 ? p->timeout_s : 600) * 1000;
    f->total_timeout_ms = min32(total, kind == CALL_SYNC ? SYNC_TIMEOUT_CAP_MS : TEST_TIMEOUT_CAP_MS);
    f->connect_timeout_ms = min32(p->connect_timeout_ms > 0 ? p->connect_timeout_ms : 5000,
                                  f->total_timeout_ms);
    f->max_response = MODELS_MAX_RESPONSE;
    ((call_arg_t *)f->cont_arg)->kind = kind;
    ((call_arg_t *)f->cont_arg)->provider_id = p->id;
    *out = f;
    f = NULL;
Exit:
    explicit_bzero(key, sizeof(key));
    fetch_release(f);
    return rc;
}

/* Read provider {id}, unseal its key and hand the worker the models call. */
static void start_models_call(actx_t *c, int kind)
{
    ta_provider_t p;
    ta_api_fetch_t *f = NULL;
    int rc, why_rc = 0;

    if (ta_admin_txn(c, false) != 0)
        return;
    rc = ta_rec_get(c->st, c->txn, &ta_desc_provider, c->id, &p);
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "provider");
        return;
    }
    rc = build_models_fetch(c->a, &p, kind, NULL, &f, &why_rc);
    if (rc != 0 && why_rc < 0) {
        ta_log(TA_LOG_ERROR, "provider %llu: cannot unseal its API key: %s (%s)", (unsigned long long)p.id,
               ta_strerror(why_rc), c->req->request_id != NULL ? c->req->request_id : "-");
        ta_admin_reply_error(c, 500, "server_error", "provider_key_unavailable", NULL,
                             "the provider's API key cannot be decrypted (was the master key changed?)");
        return;
    }
    if (rc != 0 && why_rc > 0) {
        ta_admin_reply_error(c, 400, "invalid_request_error", "invalid_api_key", "api_key",
                             "the provider's API key contains control characters");
        return;
    }
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "provider");
        return;
    }
    call_arg_t *ca = f->cont_arg;
    ca->may_write = c->may_write;
    snprintf(ca->request_id, sizeof(ca->request_id), "%s",
             c->req->request_id != NULL ? c->req->request_id : "-");
    snprintf(ca->path, sizeof(ca->path), "%.*s",
             (int)(c->req->path_len < sizeof(ca->path) ? c->req->path_len : sizeof(ca->path) - 1),
             c->req->path);
    f->cont = models_cont;
    c->res->fetch = f;
}

void ta_admin_providers_test(actx_t *c)
{
    start_models_call(c, CALL_TEST);
}

void ta_admin_providers_sync_models(actx_t *c)
{
    start_models_call(c, CALL_SYNC);
}

int ta_admin_probe_fetch(void *ctx, uint64_t provider_id, ta_api_fetch_t **out)
{
    ta_admin_t *a = ctx;
    ta_provider_t p;
    MDB_txn *txn;
    int why_rc = 0, rc;

    *out = NULL;
    if ((rc = ta_txn_begin(a->conf.store, TA_ENV_LEDGER, false, &txn)) != 0)
        return rc;
    rc = ta_rec_get(a->conf.store, txn, &ta_desc_provider, provider_id, &p);
    ta_txn_abort(txn);
    if (rc == 0)
        rc = build_models_fetch(a, &p, CALL_PROBE, NULL, out, &why_rc);
    explicit_bzero(p.key_sealed, sizeof(p.key_sealed));
    return rc;
}
