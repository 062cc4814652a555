/*
 * keys.c - API keys: minting and revocation, and the two endpoints that
 * hand out new keys.
 *
 *   POST /api/admin/quotas/{id}/reset_api_key/     a new key for one quota
 *   POST /api/admin/users/{id}/reset-all-keys/     a new key for each of a user's quotas
 *   POST /api/quotas/{id}/reset_api_key/           a new key for one of the caller's own
 *                                                  quotas (a JWT: an API key cannot rotate
 *                                                  keys); another's quota is a 404, the
 *                                                  same as one that does not exist
 *
 * LMDB (ledger env), inside the handler's one write transaction:
 *
 *   quotas    id (u64 BE) -> ta_quota_t    key_prefix, key_hash of the current key
 *   keys      SHA-256(key) -> ta_keyrec_t  {quota_id, user_id}: what /v1 and /api look up
 *
 * A quota has at most one keys row, the one whose hash it carries. Minting
 * deletes the old row and stores the new one in the same transaction, so the
 * old key stops working in the very commit that makes the new one work, and
 * a rejected request changes neither. The key itself is never stored: it is
 * answered once. Revoking deletes the row and clears the quota's hash (the
 * prefix stays, for the audit trail); quota DELETE and user DELETE revoke.
 *
 * Worker processes only.
 */
#include "admin/admin_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- one quota's key -------------------------------------------------------- */

int ta_admin_key_revoke(ta_store_t *st, MDB_txn *txn, ta_quota_t *q)
{
    int rc;

    if (q->key_hash_len == 0)
        return 0;
    rc = ta_kv_del(st, txn, TA_DB_KEYS, q->key_hash, q->key_hash_len);
    if (rc != 0 && rc != TA_ENOTFOUND)
        return rc;
    q->key_hash_len = 0;
    memset(q->key_hash, 0, sizeof(q->key_hash));
    return 0;
}

int ta_admin_key_mint(ta_store_t *st, MDB_txn *txn, ta_quota_t *q, char *key)
{
    ta_keyrec_t kr;
    uint8_t hash[32];
    int rc;

    if ((rc = ta_admin_key_revoke(st, txn, q)) != 0)
        return rc;
    if ((rc = ta_apikey_generate(key)) != 0)
        return rc;
    ta_apikey_hash(key, strlen(key), hash);
    memset(&kr, 0, sizeof(kr));
    kr.quota_id = q->id;
    kr.user_id = q->user_id;
    kr.created_at = ta_now_s();
    if ((rc = ta_rec_put_k(st, txn, &ta_desc_keyrec, TA_DB_KEYS, hash, sizeof(hash), &kr)) != 0)
        return rc;
    memcpy(q->key_hash, hash, sizeof(hash));
    q->key_hash_len = sizeof(hash);
    snprintf(q->key_prefix, sizeof(q->key_prefix), "%.*s", TA_KEY_PREFIX_LEN, key);
    return 0;
}

/* ---- the keys of a user's quotas ------------------------------------------------------- */

typedef struct idcollect {
    uint64_t user_id;
    uint64_t *ids;
    size_t n, cap;
} idcollect_t;

static int collect_cb(uint64_t id, const void *rec, void *arg)
{
    idcollect_t *ic = arg;
    const ta_quota_t *q = rec;

    if (q->user_id != ic->user_id)
        return 0;
    if (ic->n == ic->cap) {
        size_t ncap = ic->cap ? ic->cap * 2 : 16;
        uint64_t *p = realloc(ic->ids, ncap * sizeof(*p));
        if (p == NULL)
            return -ENOMEM;
        ic->ids = p;
        ic->cap = ncap;
    }
    ic->ids[ic->n++] = id;
    return 0;
}

static int user_quota_ids(ta_store_t *st, MDB_txn *txn, uint64_t user_id, uint64_t **ids, size_t *n)
{
    idcollect_t ic = {.user_id = user_id};
    int rc = ta_rec_walk(st, txn, &ta_desc_quota, collect_cb, &ic);

    if (rc < 0) {
        free(ic.ids);
        return rc;
    }
    *ids = ic.ids;
    *n = ic.n;
    return 0;
}

int ta_admin_keys_revoke_user(actx_t *c, uint64_t user_id)
{
    uint64_t *ids = NULL;
    size_t n = 0;
    ta_quota_t q;
    int rc;

    /* Collect first, then write: no puts under the walk's cursor. */
    if ((rc = user_quota_ids(c->st, c->txn, user_id, &ids, &n)) != 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        if ((rc = ta_rec_get(c->st, c->txn, &ta_desc_quota, ids[i], &q)) != 0)
            goto Exit;
        if (q.key_hash_len == 0)
            continue;
        if ((rc = ta_admin_key_revoke(c->st, c->txn, &q)) != 0)
            goto Exit;
        q.updated_at = ta_now_s();
        if ((rc = ta_rec_put(c->st, c->txn, &ta_desc_quota, q.id, &q)) != 0)
            goto Exit;
    }
    rc = 0;
Exit:
    free(ids);
    return rc;
}

/* ---- the endpoints ---------------------------------------------------------- */

/* A new key for quota c->id; owner != 0: only when the quota is that user's
 * (another's answers 404 as a missing one does, so ids reveal nothing). */
static void reset_key(actx_t *c, uint64_t owner)
{
    ta_quota_t q;
    char key[TA_APIKEY_LEN + 1];
    int rc;

    if (ta_admin_txn(c, true) != 0)
        return;
    rc = ta_rec_get(c->st, c->txn, &ta_desc_quota, c->id, &q);
    if (rc == 0 && owner != 0 && q.user_id != owner)
        rc = TA_ENOTFOUND;
    if (rc == 0)
        rc = ta_admin_key_mint(c->st, c->txn, &q, key);
    if (rc == 0) {
        q.updated_at = ta_now_s();
        rc = ta_rec_put(c->st, c->txn, &ta_desc_quota, q.id, &q);
    }
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "quota");
        return;
    }
    ta_admin_reply_json(c, 200, json_pack("{s:s,s:s}", "api_key", key, "key_prefix", q.key_prefix));
}

void ta_admin_quotas_reset_key(actx_t *c)
{
    reset_key(c, 0);
}

void ta_admin_my_quota_reset_key(actx_t *c)
{
    reset_key(c, c->caller.id);
}

void ta_admin_users_reset_keys(actx_t *c)
{
    ta_user_t u;
    uint64_t *ids = NULL;
    size_t n = 0;
    json_t *arr = NULL;
    ta_quota_t q;
    char key[TA_APIKEY_LEN + 1];
    int rc;

    if (ta_admin_txn(c, true) != 0)
        return;
    rc = ta_rec_get(c->st, c->txn, &ta_desc_user, c->id, &u);
    if (rc == 0)
        rc = user_quota_ids(c->st, c->txn, u.id, &ids, &n);
    if (rc != 0)
        goto Exit;
    arr = json_array();
    if (arr == NULL) {
        rc = -ENOMEM;
        goto Exit;
    }
    for (size_t i = 0; i < n; i++) {
        if ((rc = ta_rec_get(c->st, c->txn, &ta_desc_quota, ids[i], &q)) != 0)
            goto Exit;
        if ((rc = ta_admin_key_mint(c->st, c->txn, &q, key)) != 0)
            goto Exit;
        q.updated_at = ta_now_s();
        if ((rc = ta_rec_put(c->st, c->txn, &ta_desc_quota, q.id, &q)) != 0)
            goto Exit;
        json_array_append_new(arr, json_pack("{s:I,s:s,s:s}", "id", (json_int_t)q.id, "api_key",
                                             key, "key_prefix", q.key_prefix));
    }
    ta_admin_reply_json(c, 200, json_pack("{s:o}", "quotas", arr));
    arr = NULL;
Exit:
    if (rc != 0)
        ta_admin_reply_store_error(c, rc, "user");
    json_decref(arr);
    free(ids);
}
