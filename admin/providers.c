/*
 * providers.c - /api/admin/providers/.
 *
 * LMDB (ledger env): providers id (u64 BE) -> ta_provider_t; DELETE reads
 * models (refused while a route uses the provider) in the same write
 * transaction, so no model can start routing to a deleted provider: models.c
 * checks the provider inside its own write transaction, and LMDB serializes
 * the two.
 *
 * The provider's API key is write-only: it is sealed with AES-256-GCM under
 * the master key (ta_seal) into key_sealed before the transaction starts, and
 * only api_key_set / api_key_last4 ever leave this file.
 *
 * Worker processes only.
 */
#include "admin/admin_internal.h"

#include "ledger/health.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The record, and its routes' health from the table every worker shares
 * (ledger/health.h; API.md: Providers). */
static json_t *provider_json(const ta_provider_t *p)
{
    json_t *j = ta_rec_to_json(&ta_desc_provider, p, TA_JSON_API);
    if (j != NULL)
        json_object_set_new(j, "health", ta_health_provider_json(p->id));
    return j;
}

static json_t *render_provider(actx_t *c, const void *rec)
{
    (void)c;
    return provider_json(rec);
}

static bool provider_match(actx_t *c, const void *rec, void *arg)
{
    (void)c;
    return ta_admin_icontains(((const ta_provider_t *)rec)->name, arg);
}

void ta_admin_providers_list(actx_t *c)
{
    char search[128];
    int rc;

    if ((rc = ta_admin_query_get(c, "search", search, sizeof(search))) < 0)
        return;
    ta_admin_reply_list(c, &ta_desc_provider, rc > 0 ? provider_match : NULL, search, render_provider);
}

/* Apply body "api_key" (if present) to p: seal it, or clear on null / "".
 * Refused (400 naming api_key, nothing written): not a string, a control
 * character (rule "control", ta_str_check), too long. */
static int apply_api_key(actx_t *c, ta_provider_t *p)
{
    json_t *v = json_object_get(c->body, "api_key");
    ta_err_t err;
    const char *s;
    size_t n;
    int rc;

    if (v == NULL)
        return 0;
    if (json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0)) {
        p->key_sealed_len = 0;
        p->api_key_set = false;
        p->api_key_last4[0] = '\0';
        return 0;
    }
    if (!json_is_string(v)) {
        ta_admin_reply_field(c, "api_key", "type", "must be a string");
        return TA_EINVAL;
    }
    s = json_string_value(v);
    n = json_string_length(v);
    /* The key goes out as a header value on every upstream call: a CR or LF
     * in it would add header lines of the caller's choosing. */
    if (ta_str_check("api_key", s, n, 0, &err) != 0) {
        ta_admin_reply_invalid(c, &err);
        return TA_EINVAL;
    }
    if (n + TA_SEAL_OVERHEAD > sizeof(p->key_sealed)) {
        ta_admin_reply_field(c, "api_key", "max_length", "must have at most %zu bytes",
                             sizeof(p->key_sealed) - TA_SEAL_OVERHEAD);
        return TA_EINVAL;
    }
    rc = ta_seal(c->a->conf.master_key, s, n, p->key_sealed, sizeof(p->key_sealed));
    if (rc < 0) {
        ta_admin_reply_store_error(c, rc, "provider");
        return rc;
    }
    p->key_sealed_len = (uint16_t)rc;
    p->api_key_set = true;
    /* Only long keys show their tail: for a short one, 4 characters would
     * give away too much of it. */
    if (n >= 12)
        snprintf(p->api_key_last4, sizeof(p->api_key_last4), "%s", s + n - 4);
    else
        p->api_key_last4[0] = '\0';
    return 0;
}

void ta_admin_providers_create(actx_t *c)
{
    ta_provider_t p;
    int rc;

    memset(&p, 0, sizeof(p));
    ta_rec_defaults(&ta_desc_provider, &p);
    if (ta_admin_body_apply(c, &ta_desc_provider, &p, TA_MERGE_CREATE) != 0)
        return;
    if (apply_api_key(c, &p) != 0)
        return;
    if (ta_admin_txn(c, true) != 0)
        return;
    rc = ta_rec_next_id(c->st, c->txn, &ta_desc_provider, &p.id);
    if (rc == 0) {
        p.created_at = p.updated_at = ta_now_s();
        rc = ta_rec_put(c->st, c->txn, &ta_desc_provider, p.id, &p);
    }
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "provider");
        return;
    }
    ta_admin_reply_json(c, 201, provider_json(&p));
}

void ta_admin_providers_get(actx_t *c)
{
    ta_provider_t p;
    int rc;

    if (ta_admin_txn(c, false) != 0)
        return;
    rc = ta_rec_get(c->st, c->txn, &ta_desc_provider, c->id, &p);
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "provider");
        return;
    }
    ta_admin_reply_json(c, 200, provider_json(&p));
}

void ta_admin_providers_update(actx_t *c)
{
    ta_provider_t p, old;
    int rc;

    if (ta_admin_txn(c, true) != 0)
        return;
    rc = ta_rec_get(c->st, c->txn, &ta_desc_provider, c->id, &p);
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "provider");
        return;
    }
    old = p;
    if (ta_admin_body_apply(c, &ta_desc_provider, &p, ta_admin_merge_mode(c)) != 0)
        return;
    if (apply_api_key(c, &p) != 0)
        return;
    p.id = old.id;
    p.created_at = old.created_at;
    p.updated_at = ta_now_s();
    rc = ta_rec_put(c->st, c->txn, &ta_desc_provider, p.id, &p);
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "provider");
        return;
    }
    ta_admin_reply_json(c, 200, provider_json(&p));
}

typedef struct users_of {
    uint64_t provider_id;
    char names[400];
    size_t n;
} users_of_t;

static int model_uses_cb(uint64_t id, const void *rec, void *arg)
{
    const ta_model_t *m = rec;
    users_of_t *u = arg;
    size_t len;

    (void)id;
    for (uint16_t i = 0; i < m->nroutes && i < TA_MODEL_MAX_ROUTES; i++) {
        if (m->routes[i].provider_id != u->provider_id)
            continue;
        len = strlen(u->names);
        if (u->n < 10)
            snprintf(u->names + len, sizeof(u->names) - len, "%s%s", u->n ? ", " : "", m->name);
        else if (u->n == 10)
            snprintf(u->names + len, sizeof(u->names) - len, ", ...");
        u->n++;
        break;
    }
    return 0;
}

void ta_admin_providers_delete(actx_t *c)
{
    ta_provider_t p;
    users_of_t u;
    int rc;

    memset(&u, 0, sizeof(u));
    u.provider_id = c->id;
    if (ta_admin_txn(c, true) != 0)
        return;
    rc = ta_rec_get(c->st, c->txn, &ta_desc_provider, c->id, &p);
    if (rc == 0)
        rc = ta_rec_walk(c->st, c->txn, &ta_desc_model, model_uses_cb, &u);
    if (rc < 0) {
        ta_admin_reply_store_error(c, rc, "provider");
        return;
    }
    if (u.n > 0) {
        ta_admin_reply_error(c, 409, "conflict_error", "in_use", NULL,
                             "provider %llu is used by %zu model(s): %s", (unsigned long long)c->id, u.n,
                    u.names);
        return;
    }
    rc = ta_rec_del(c->st, c->txn, &ta_desc_provider, c->id);
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "provider");
        return;
    }
    ta_admin_reply_204(c);
}
