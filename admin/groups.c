/*
 * groups.c - /api/admin/groups/.
 *
 * LMDB (ledger env): groups id (u64 BE) -> ta_group_t. The listed models are
 * checked inside the write transaction that stores the group, and DELETE
 * reads quotas in its own write transaction (refused while one uses the
 * group); writers are serialized, so no quota points at a deleted group and
 * no group lists a deleted model.
 *
 * Worker processes only.
 */
#include "admin/admin_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *group_json(const ta_group_t *g)
{
    return ta_rec_to_json(&ta_desc_group, g, TA_JSON_API);
}

static json_t *render_group(actx_t *c, const void *rec)
{
    (void)c;
    return group_json(rec);
}

static bool group_match(actx_t *c, const void *rec, void *arg)
{
    (void)c;
    return ta_admin_icontains(((const ta_group_t *)rec)->name, arg);
}

void ta_admin_groups_list(actx_t *c)
{
    char search[128];
    int rc;

    if ((rc = ta_admin_query_get(c, "search", search, sizeof(search))) < 0)
        return;
    ta_admin_reply_list(c, &ta_desc_group, rc > 0 ? group_match : NULL, search, render_group);
}

/* Every listed model must exist and appear once (in c->txn). */
static int check_models(actx_t *c, const ta_group_t *g)
{
    ta_model_t m;
    char field[32];
    int rc;

    for (uint16_t i = 0; i < g->nmodels && i < TA_GROUP_MAX_MODELS; i++) {
        snprintf(field, sizeof(field), "model_ids[%u]", (unsigned)i);
        for (uint16_t j = 0; j < i; j++) {
            if (g->model_ids[j] == g->model_ids[i]) {
                ta_admin_reply_field(c, field, "unique", "model %llu is listed twice",
                                     (unsigned long long)g->model_ids[i]);
                return TA_EINVAL;
            }
        }
        rc = ta_rec_get(c->st, c->txn, &ta_desc_model, g->model_ids[i], &m);
        if (rc == TA_ENOTFOUND) {
            ta_admin_reply_field(c, field, "exists", "model %llu does not exist",
                                 (unsigned long long)g->model_ids[i]);
            return TA_EINVAL;
        }
        if (rc != 0) {
            ta_admin_reply_store_error(c, rc, "model");
            return rc;
        }
    }
    return 0;
}

void ta_admin_groups_create(actx_t *c)
{
    ta_group_t *g = NULL;
    int rc;

    /* ta_group_t is a few KB (256 model ids): keep it off the loop's stack. */
    g = calloc(1, sizeof(*g));
    if (g == NULL) {
        ta_admin_reply_store_error(c, -ENOMEM, "group");
        return;
    }
    ta_rec_defaults(&ta_desc_group, g);
    if (ta_admin_body_apply(c, &ta_desc_group, g, TA_MERGE_CREATE) != 0)
        goto Exit;
    if (ta_admin_txn(c, true) != 0)
        goto Exit;
    if (check_models(c, g) != 0)
        goto Exit;
    rc = ta_rec_next_id(c->st, c->txn, &ta_desc_group, &g->id);
    if (rc == 0) {
        g->created_at = g->updated_at = ta_now_s();
        rc = ta_rec_put(c->st, c->txn, &ta_desc_group, g->id, g);
    }
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "group");
        goto Exit;
    }
    ta_admin_reply_json(c, 201, group_json(g));
Exit:
    free(g);
}

void ta_admin_groups_get(actx_t *c)
{
    ta_group_t *g = calloc(1, sizeof(*g));
    int rc;

    if (g == NULL) {
        ta_admin_reply_store_error(c, -ENOMEM, "group");
        return;
    }
    if (ta_admin_txn(c, false) != 0)
        goto Exit;
    rc = ta_rec_get(c->st, c->txn, &ta_desc_group, c->id, g);
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "group");
        goto Exit;
    }
    ta_admin_reply_json(c, 200, group_json(g));
Exit:
    free(g);
}

void ta_admin_groups_update(actx_t *c)
{
    ta_group_t *g = calloc(1, sizeof(*g));
    uint64_t id;
    int64_t created;
    int rc;

    if (g == NULL) {
        ta_admin_reply_store_error(c, -ENOMEM, "group");
        return;
    }
    if (ta_admin_txn(c, true) != 0)
        goto Exit;
    rc = ta_rec_get(c->st, c->txn, &ta_desc_group, c->id, g);
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "group");
        goto Exit;
    }
    id = g->id;
    created = g->created_at;
    if (ta_admin_body_apply(c, &ta_desc_group, g, ta_admin_merge_mode(c)) != 0)
        goto Exit;
    if (check_models(c, g) != 0)
        goto Exit;
    g->id = id;
    g->created_at = created;
    g->updated_at = ta_now_s();
    rc = ta_rec_put(c->st, c->txn, &ta_desc_group, g->id, g);
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "group");
        goto Exit;
    }
    ta_admin_reply_json(c, 200, group_json(g));
Exit:
    free(g);
}

typedef struct quota_users {
    uint64_t group_id;
    size_t n;
} quota_users_t;

static int quota_uses_cb(uint64_t id, const void *rec, void *arg)
{
    quota_users_t *u = arg;

    (void)id;
    if (((const ta_quota_t *)rec)->group_id == u->group_id)
        u->n++;
    return 0;
}

void ta_admin_groups_delete(actx_t *c)
{
    ta_group_t *g = calloc(1, sizeof(*g));
    quota_users_t u = {.group_id = c->id};
    int rc;

    if (g == NULL) {
        ta_admin_reply_store_error(c, -ENOMEM, "group");
        return;
    }
    if (ta_admin_txn(c, true) != 0)
        goto Exit;
    rc = ta_rec_get(c->st, c->txn, &ta_desc_group, c->id, g);
    if (rc == 0)
        rc = ta_rec_walk(c->st, c->txn, &ta_desc_quota, quota_uses_cb, &u);
    if (rc < 0) {
        ta_admin_reply_store_error(c, rc, "group");
        goto Exit;
    }
    if (u.n > 0) {
        ta_admin_reply_error(c, 409, "conflict_error", "in_use", NULL,
                             "group %s is used by %zu quota(s)", g->name, u.n);
        goto Exit;
    }
    rc = ta_rec_del(c->st, c->txn, &ta_desc_group, c->id);
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "group");
        goto Exit;
    }
    ta_admin_reply_204(c);
Exit:
    free(g);
}
