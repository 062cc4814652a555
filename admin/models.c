/*
 * models.c - /api/admin/models/.
 *
 * LMDB (ledger env), one write transaction per mutation:
 *
 *   models          id (u64 BE) -> ta_model_t
 *   models_by_name  public name -> id           (kept equal to models.name)
 *
 * The routes' providers are checked inside the same write transaction that
 * stores the model, and provider DELETE checks the models inside its own, so
 * (writers being serialized) a model never routes to a missing provider. The
 * same holds for groups listing models: DELETE here is refused while a
 * group lists the model.
 *
 * Worker processes only.
 */
#include "admin/admin_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *model_json(const ta_model_t *m)
{
    return ta_rec_to_json(&ta_desc_model, m, TA_JSON_API);
}

static json_t *render_model(actx_t *c, const void *rec)
{
    (void)c;
    return model_json(rec);
}

typedef struct model_filter {
    char search[128];
    bool has_search;
    uint64_t provider_id;
} model_filter_t;

static bool model_match(actx_t *c, const void *rec, void *arg)
{
    const ta_model_t *m = rec;
    const model_filter_t *f = arg;
    bool found;

    (void)c;
    if (f->has_search && !ta_admin_icontains(m->name, f->search))
        return false;
    if (f->provider_id != 0) {
        found = false;
        for (uint16_t i = 0; i < m->nroutes && i < TA_MODEL_MAX_ROUTES; i++)
            found |= m->routes[i].provider_id == f->provider_id;
        if (!found)
            return false;
    }
    return true;
}

void ta_admin_models_list(actx_t *c)
{
    model_filter_t f;
    int rc;

    memset(&f, 0, sizeof(f));
    if ((rc = ta_admin_query_get(c, "search", f.search, sizeof(f.search))) < 0)
        return;
    f.has_search = rc > 0;
    if (ta_admin_query_id(c, "provider_id", &f.provider_id) < 0)
        return;
    ta_admin_reply_list(c, &ta_desc_model, model_match, &f, render_model);
}


/* Every route's provider must exist (in c->txn). Replies 400 naming the route. */
static int check_routes(actx_t *c, const ta_model_t *m)
{
    ta_provider_t p;
    char field[48];
    int rc;

    for (uint16_t i = 0; i < m->nroutes && i < TA_MODEL_MAX_ROUTES; i++) {
        rc = ta_rec_get(c->st, c->txn, &ta_desc_provider, m->routes[i].provider_id, &p);
        if (rc == TA_ENOTFOUND) {
            snprintf(field, sizeof(field), "routes[%u].provider_id", (unsigned)i);
            ta_admin_reply_field(c, field, "exists", "provider %llu does not exist",
                                 (unsigned long long)m->routes[i].provider_id);
            return TA_EINVAL;
        }
        if (rc != 0) {
            ta_admin_reply_store_error(c, rc, "provider");
            return rc;
        }
    }
    return 0;
}

static void reply_dup_name(actx_t *c, const char *name)
{
    ta_admin_reply_error(c, 409, "conflict_error", "duplicate", "name", "a model named %s already exists",
                         name);
}

void ta_admin_models_create(actx_t *c)
{
    ta_model_t m;
    uint64_t other;
    int rc;

    memset(&m, 0, sizeof(m));
    ta_rec_defaults(&ta_desc_model, &m);
    if (ta_admin_body_apply(c, &ta_desc_model, &m, TA_MERGE_CREATE) != 0)
        return;
    if (ta_admin_txn(c, true) != 0)
        return;
    if (check_routes(c, &m) != 0)
        return;
    rc = ta_idx_get(c->st, c->txn, TA_DB_MODELS_BY_NAME, m.name, &other);
    if (rc == 0) {
        reply_dup_name(c, m.name);
        return;
    }
    if (rc == TA_ENOTFOUND)
        rc = ta_rec_next_id(c->st, c->txn, &ta_desc_model, &m.id);
    if (rc == 0) {
        m.created_at = m.updated_at = ta_now_s();
        rc = ta_idx_put(c->st, c->txn, TA_DB_MODELS_BY_NAME, m.name, m.id);
    }
    if (rc == 0)
        rc = ta_rec_put(c->st, c->txn, &ta_desc_model, m.id, &m);
    if (rc == TA_EEXIST) {
        reply_dup_name(c, m.name);
        return;
    }
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "model");
        return;
    }
    ta_admin_reply_json(c, 201, model_json(&m));
}

void ta_admin_models_get(actx_t *c)
{
    ta_model_t m;
    int rc;

    if (ta_admin_txn(c, false) != 0)
        return;
    rc = ta_rec_get(c->st, c->txn, &ta_desc_model, c->id, &m);
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "model");
        return;
    }
    ta_admin_reply_json(c, 200, model_json(&m));
}

void ta_admin_models_update(actx_t *c)
{
    ta_model_t m, old;
    uint64_t other;
    int rc;

    if (ta_admin_txn(c, true) != 0)
        return;
    rc = ta_rec_get(c->st, c->txn, &ta_desc_model, c->id, &m);
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "model");
        return;
    }
    old = m;
    if (ta_admin_body_apply(c, &ta_desc_model, &m, ta_admin_merge_mode(c)) != 0)
        return;
    if (check_routes(c, &m) != 0)
        return;
    if (strcmp(m.name, old.name) != 0) {
        rc = ta_idx_get(c->st, c->txn, TA_DB_MODELS_BY_NAME, m.name, &other);
        if (rc == 0 && other != m.id) {
            reply_dup_name(c, m.name);
            return;
        }
        if (rc != 0 && rc != TA_ENOTFOUND) {
            ta_admin_reply_store_error(c, rc, "model");
            return;
        }
        rc = ta_idx_del(c->st, c->txn, TA_DB_MODELS_BY_NAME, old.name);
        if (rc == 0 || rc == TA_ENOTFOUND)
            rc = ta_idx_put(c->st, c->txn, TA_DB_MODELS_BY_NAME, m.name, m.id);
        if (rc != 0) {
            ta_admin_reply_store_error(c, rc, "model");
            return;
        }
    }
    m.id = old.id;
    m.created_at = old.created_at;
    m.updated_at = ta_now_s();
    rc = ta_rec_put(c->st, c->txn, &ta_desc_model, m.id, &m);
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "model");
        return;
    }
    ta_admin_reply_json(c, 200, model_json(&m));
}

typedef struct groups_of {
    uint64_t model_id;
    char names[400];
    size_t n;
} groups_of_t;

static int group_uses_cb(uint64_t id, const void *rec, void *arg)
{
    const ta_group_t *g = rec;
    groups_of_t *u = arg;
    size_t len;

    (void)id;
    for (uint16_t i = 0; i < g->nmodels && i < TA_GROUP_MAX_MODELS; i++) {
        if (g->model_ids[i] != u->model_id)
            continue;
        len = strlen(u->names);
        if (u->n < 10)
            snprintf(u->names + len, sizeof(u->names) - len, "%s%s", u->n ? ", " : "", g->name);
        else if (u->n == 10)
            snprintf(u->names + len, sizeof(u->names) - len, ", ...");
        u->n++;
        break;
    }
    return 0;
}

void ta_admin_models_delete(actx_t *c)
{
    ta_model_t m;
    groups_of_t u;
    int rc;

    memset(&u, 0, sizeof(u));
    u.model_id = c->id;
    if (ta_admin_txn(c, true) != 0)
        return;
    rc = ta_rec_get(c->st, c->txn, &ta_desc_model, c->id, &m);
    if (rc == 0)
        rc = ta_rec_walk(c->st, c->txn, &ta_desc_group, group_uses_cb, &u);
    if (rc < 0) {
        ta_admin_reply_store_error(c, rc, "model");
        return;
    }
    if (u.n > 0) {
        ta_admin_reply_error(c, 409, "conflict_error", "in_use", NULL,
                             "model %s is listed by %zu group(s): %s", m.name, u.n, u.names);
        return;
    }
    rc = ta_idx_del(c->st, c->txn, TA_DB_MODELS_BY_NAME, m.name);
    if (rc == 0 || rc == TA_ENOTFOUND)
        rc = ta_rec_del(c->st, c->txn, &ta_desc_model, c->id);
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "model");
        return;
    }
    ta_admin_reply_204(c);
}
