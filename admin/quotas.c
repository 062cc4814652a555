/*
 * quotas.c - /api/admin/quotas/ and the quota JSON (with "usage") shared by
 * /api/quotas/.
 *
 * LMDB (ledger env), one write transaction per mutation:
 *
 *   quotas    id (u64 BE) -> ta_quota_t    (key_prefix, key_hash of the current key)
 *   keys      SHA-256(key) -> ta_keyrec_t  {quota_id, user_id}
 *   balances  id -> ta_balance_t           (read here through ta_quota_usage only)
 *
 * A quota has at most one keys row, the one whose hash the quota carries;
 * create mints it and DELETE revokes it in the same transaction as the
 * quota's own change (admin/keys.c mints and revokes, and answers
 * reset_api_key).
 *
 * DELETE removes the quota and its keys row; its balance row stays so the
 * audit records of that quota still reconcile with the ledger (ledger
 * verify), and the audit records keep its id.
 *
 * Worker processes only.
 */
#include "admin/admin_internal.h"
#include "ledger/quota.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *time_or_null(int64_t t, bool is_null)
{
    char buf[40];

    if (is_null)
        return json_null();
    return json_string(ta_time_format(t, buf));
}

static json_t *nano_json(ta_nano_t v)
{
    char buf[TA_NANO_STRLEN];

    return json_string(ta_nano_format(v, buf));
}

json_t *ta_admin_quota_json(actx_t *c, const ta_quota_t *q)
{
    ta_balance_t bal;
    int64_t ps = 0, pe = INT64_MAX;
    json_t *j = ta_rec_to_json(&ta_desc_quota, q, TA_JSON_API), *u;
    int rc;

    if (j == NULL)
        return NULL;
    memset(&bal, 0, sizeof(bal));
    rc = ta_quota_usage(c->st, c->txn, q, ta_now_s(), &bal, &ps, &pe);
    if (rc != 0) {
        ta_log(TA_LOG_WARN, "quota %llu: usage unreadable: %s", (unsigned long long)q->id,
               ta_strerror(rc));
        json_object_set_new(j, "usage", json_null());
        return j;
    }
    u = json_pack("{s:o,s:o,s:o,s:I,s:I,s:o,s:I}", "period_start",
                  time_or_null(ps, q->limits.period == TA_PERIOD_NONE), "period_end",
                  time_or_null(pe, pe == INT64_MAX), "cost_used", nano_json(bal.cost_used),
                  "tokens_used", (json_int_t)bal.tokens_used, "requests_used",
                  (json_int_t)bal.requests_used, "cost_held", nano_json(bal.cost_held),
                  "in_flight", (json_int_t)bal.in_flight);
    if (u == NULL) {
        json_decref(j);
        return NULL;
    }
    /* the warn_at thresholds billing raised this period (warn_level counts them) */
    json_t *w = json_array();
    for (int i = 0; w != NULL && i < bal.warn_level && i < q->limits.nwarn && i < TA_MAX_WARN; i++)
        json_array_append_new(w, json_integer(q->limits.warn_at[i]));
    json_object_set_new(u, "warnings", w != NULL ? w : json_null());
    json_object_set_new(j, "usage", u);
    return j;
}

static json_t *render_quota(actx_t *c, const void *rec)
{
    return ta_admin_quota_json(c, rec);
}

typedef struct quota_filter {
    uint64_t user_id, group_id;
} quota_filter_t;

static bool quota_match(actx_t *c, const void *rec, void *arg)
{
    const ta_quota_t *q = rec;
    const quota_filter_t *f = arg;

    (void)c;
    return (f->user_id == 0 || q->user_id == f->user_id) &&
           (f->group_id == 0 || q->group_id == f->group_id);
}

void ta_admin_quotas_list(actx_t *c)
{
    quota_filter_t f = {0, 0};

    if (ta_admin_query_id(c, "user_id", &f.user_id) < 0 || ta_admin_query_id(c, "group_id", &f.group_id) < 0)
        return;
    ta_admin_reply_list(c, &ta_desc_quota, quota_match, &f, render_quota);
}

/* The group must exist; reply 400 naming group_id otherwise. g may be NULL. */
static int check_group(actx_t *c, uint64_t id, ta_group_t *g)
{
    ta_group_t *tmp = g != NULL ? g : calloc(1, sizeof(*tmp));
    int rc;

    if (tmp == NULL) {
        ta_admin_reply_store_error(c, -ENOMEM, "group");
        return -ENOMEM;
    }
    rc = ta_rec_get(c->st, c->txn, &ta_desc_group, id, tmp);
    if (tmp != g)
        free(tmp);
    if (rc == TA_ENOTFOUND) {
        ta_admin_reply_field(c, "group_id", "exists", "group %llu does not exist", (unsigned long long)id);
        return TA_EINVAL;
    }
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "group");
        return rc;
    }
    return 0;
}

void ta_admin_quotas_create(actx_t *c)
{
    ta_quota_t q;
    ta_group_t *g = NULL;
    ta_user_t u;
    json_t *gid = json_object_get(c->body, "group_id"), *out;
    char key[TA_APIKEY_LEN + 1];
    int rc;

    memset(&q, 0, sizeof(q));
    ta_rec_defaults(&ta_desc_quota, &q);
    if (ta_admin_txn(c, true) != 0)
        return;
    /* The group's default_quota is the starting point; fields present in the
     * request then replace it one by one. A bad or missing group_id is left
     * for the schema to name. */
    if (json_is_integer(gid) && json_integer_value(gid) > 0) {
        g = calloc(1, sizeof(*g));
        if (g == NULL) {
            ta_admin_reply_store_error(c, -ENOMEM, "group");
            return;
        }
        if (check_group(c, (uint64_t)json_integer_value(gid), g) != 0)
            goto Exit;
        q.limits = g->default_quota;
    }
    if (ta_admin_body_apply(c, &ta_desc_quota, &q, TA_MERGE_CREATE) != 0)
        goto Exit;
    if (g == NULL && check_group(c, q.group_id, NULL) != 0)
        goto Exit;
    rc = ta_rec_get(c->st, c->txn, &ta_desc_user, q.user_id, &u);
    if (rc == TA_ENOTFOUND) {
        ta_admin_reply_field(c, "user_id", "exists", "user %llu does not exist",
                             (unsigned long long)q.user_id);
        goto Exit;
    }
    if (rc == 0)
        rc = ta_rec_next_id(c->st, c->txn, &ta_desc_quota, &q.id);
    if (rc == 0) {
        q.key_hash_len = 0;
        rc = ta_admin_key_mint(c->st, c->txn, &q, key);
    }
    if (rc == 0) {
        q.created_at = q.updated_at = ta_now_s();
        rc = ta_rec_put(c->st, c->txn, &ta_desc_quota, q.id, &q);
    }
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "quota");
        goto Exit;
    }
    out = ta_admin_quota_json(c, &q);
    if (out != NULL)
        json_object_set_new(out, "api_key", json_string(key));
    ta_admin_reply_json(c, 201, out);
Exit:
    free(g);
}

void ta_admin_quotas_get(actx_t *c)
{
    ta_quota_t q;
    int rc;

    if (ta_admin_txn(c, false) != 0)
        return;
    rc = ta_rec_get(c->st, c->txn, &ta_desc_quota, c->id, &q);
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "quota");
        return;
    }
    ta_admin_reply_json(c, 200, ta_admin_quota_json(c, &q));
}

void ta_admin_quotas_update(actx_t *c)
{
    ta_quota_t q, old;
    int rc;

    if (ta_admin_txn(c, true) != 0)
        return;
    rc = ta_rec_get(c->st, c->txn, &ta_desc_quota, c->id, &q);
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "quota");
        return;
    }
    old = q;
    if (ta_admin_body_apply(c, &ta_desc_quota, &q, ta_admin_merge_mode(c)) != 0)
        return;
    if (q.user_id != old.user_id) {
        ta_admin_reply_field(c, "user_id", "readonly", "cannot be changed; create a quota for the other user");
        return;
    }
    if (q.group_id != old.group_id && check_group(c, q.group_id, NULL) != 0)
        return;
    q.id = old.id;
    q.created_at = old.created_at;
    memcpy(q.key_prefix, old.key_prefix, sizeof(q.key_prefix));
    memcpy(q.key_hash, old.key_hash, sizeof(q.key_hash));
    q.key_hash_len = old.key_hash_len;
    q.updated_at = ta_now_s();
    rc = ta_rec_put(c->st, c->txn, &ta_desc_quota, q.id, &q);
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "quota");
        return;
    }
    ta_admin_reply_json(c, 200, ta_admin_quota_json(c, &q));
}

void ta_admin_quotas_delete(actx_t *c)
{
    ta_quota_t q;
    int rc;

    if (ta_admin_txn(c, true) != 0)
        return;
    rc = ta_rec_get(c->st, c->txn, &ta_desc_quota, c->id, &q);
    if (rc == 0)
        rc = ta_admin_key_revoke(c->st, c->txn, &q);
    if (rc == 0)
        rc = ta_rec_del(c->st, c->txn, &ta_desc_quota, q.id);
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "quota");
        return;
    }
    ta_admin_reply_204(c);
}
