/*
 * auth.c - authentication of /api/... requests, and the "Auth and self"
 * endpoints: login, logout, me, password, the caller's own quotas.
 *
 * LMDB (ledger env): ta_admin_auth_check reads revoked_jwt, users, keys and quotas in
 * one read transaction of its own. Logout writes one revoked_jwt row (key =
 * jti, value = the token's exp) and prunes a few expired rows in the same
 * write transaction; every worker checks revoked_jwt on every request, so a
 * logout is effective everywhere once it is committed. A process dying
 * mid-logout loses the uncommitted row only (the client got no 204).
 *
 * PBKDF2 runs outside any transaction and off the loop thread (pwjob_t of
 * admin_internal.h): login reads the user in a read transaction, verifies
 * on a pool thread (unknown e-mails against the dummy hash, so the timing
 * is the same), then re-reads the user in a short read transaction of its
 * continuation before issuing the token. The password change verifies the
 * old password and hashes the new one on a pool thread, then writes in the
 * continuation's write transaction, refusing (409) if the stored hash
 * changed meanwhile.
 *
 * Sessions: a JWT carries the user's token_gen when it was issued (claim
 * "gen", schema.h) and authenticates only while the stored user still has
 * that generation. A password change (here or by an admin), a
 * deactivation or a role change adds one in the same write transaction as
 * the change, so every earlier token of the user stops working everywhere
 * at its commit; logout still revokes one token (jti). The password change
 * answers with a fresh token of the new generation, so the session that
 * made the change goes on.
 *
 * Login throttle (throttle.h): checked and counted before the read of the
 * user and before the hash; a successful login withdraws its count.
 *
 * Worker processes only.
 */
#include "admin/admin_internal.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PRUNE_SCAN 16

static void reply_401(actx_t *c, const char *code, const char *msg)
{
    ta_admin_reply_error(c, 401, "authentication_error", code, NULL, "%s", msg);
}

static int auth_apikey(actx_t *c, MDB_txn *txn, const char *tok, size_t len)
{
    uint8_t hash[32];
    ta_keyrec_t kr;
    ta_quota_t q;
    int rc;

    if (!ta_apikey_wellformed(tok, len)) {
        reply_401(c, "invalid_api_key", "invalid API key");
        return TA_EAUTH;
    }
    ta_apikey_hash(tok, len, hash);
    rc = ta_rec_get_k(c->st, txn, &ta_desc_keyrec, TA_DB_KEYS, hash, sizeof(hash), &kr);
    if (rc == 0)
        rc = ta_rec_get(c->st, txn, &ta_desc_quota, kr.quota_id, &q);
    if (rc == TA_ENOTFOUND) {
        reply_401(c, "invalid_api_key", "invalid API key");
        return TA_EAUTH;
    }
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "key");
        return rc;
    }
    if (!q.is_active) {
        reply_401(c, "quota_inactive", "the quota of this API key is not active");
        return TA_EAUTH;
    }
    rc = ta_rec_get(c->st, txn, &ta_desc_user, q.user_id, &c->caller);
    if (rc == TA_ENOTFOUND || (rc == 0 && !c->caller.is_active)) {
        reply_401(c, "user_inactive", "the owner of this API key is not active");
        return TA_EAUTH;
    }
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "user");
        return rc;
    }
    c->via_apikey = true;
    c->key_quota_id = q.id;
    return 0;
}

/* The token's jti must not be in revoked_jwt (logout). Replies on refusal. */
static int jwt_not_revoked(actx_t *c, MDB_txn *txn)
{
    ta_revoked_t rv;
    int rc = ta_rec_get_k(c->st, txn, &ta_desc_revoked, TA_DB_REVOKED_JWT, c->claims.jti,
                          strlen(c->claims.jti), &rv);
    if (rc == 0) {
        reply_401(c, "token_revoked", "this token was revoked (logged out)");
        return TA_EAUTH;
    }
    if (rc != TA_ENOTFOUND) {
        ta_admin_reply_store_error(c, rc, "token");
        return rc;
    }
    return 0;
}

/* c->caller = the stored user `id`, which must exist and be active. */
static int load_active_user(actx_t *c, MDB_txn *txn, uint64_t id)
{
    int rc = ta_rec_get(c->st, txn, &ta_desc_user, id, &c->caller);
    if (rc == TA_ENOTFOUND || (rc == 0 && !c->caller.is_active)) {
        reply_401(c, "user_inactive", "the user of this token does not exist or is not active");
        return TA_EAUTH;
    }
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "user");
        return rc;
    }
    return 0;
}

/* c->caller = the active user of the token, whose session generation must
 * still be the token's. */
static int load_session_user(actx_t *c, MDB_txn *txn, uint64_t id)
{
    int rc = load_active_user(c, txn, id);

    if (rc != 0)
        return rc;
    if (c->caller.token_gen != c->claims.gen) {
        reply_401(c, "session_ended",
                  "this session has ended: the password, role or status of the user changed "
                  "since the token was issued; log in again");
        return TA_EAUTH;
    }
    return 0;
}

static int auth_jwt(actx_t *c, MDB_txn *txn, const char *tok, size_t len)
{
    int rc;

    if (ta_jwt_verify(c->a->conf.jwt_secret, c->a->conf.jwt_secret_len, tok, len, &c->claims) != 0) {
        reply_401(c, "invalid_token", "invalid or expired token");
        return TA_EAUTH;
    }
    if ((rc = jwt_not_revoked(c, txn)) != 0)
        return rc;
    return load_session_user(c, txn, c->claims.user_id);
}

/* Where an API key stands for its owner (the AUTH_USER routes of admin.c). */
#define APIKEY_ROUTES_MSG                                                                              \
    "API keys are accepted only on the self-service reads (/api/auth/me/, /api/quotas/, "              \
    "/api/statistics/, /api/requests/); log in for anything else"

int ta_admin_auth_check(actx_t *c, int mode)
{
    const char *h = NULL, *end;
    size_t len = 0;
    MDB_txn *txn = NULL;
    int rc;

    /* the one Bearer rule of /v1 and /api (ledger/apikey.h) */
    if (c->req->authorization == NULL ||
        !ta_bearer_token(c->req->authorization, c->req->authorization_len, &h, &len)) {
        bool bearer = c->req->authorization != NULL && c->req->authorization_len >= 6 &&
                      strncasecmp(c->req->authorization, "Bearer", 6) == 0;
        reply_401(c, "not_authenticated",
                  bearer ? "empty bearer token" : "missing Authorization: Bearer credentials");
        return TA_EAUTH;
    }
    end = h + len;
    if ((rc = ta_txn_begin(c->st, TA_ENV_LEDGER, false, &txn)) != 0) {
        ta_admin_reply_store_error(c, rc, "transaction");
        return rc;
    }
    if (end - h >= 3 && memcmp(h, "sk-", 3) == 0) {
        if (mode != AUTH_USER) {
            reply_401(c, "invalid_token",
                      APIKEY_ROUTES_MSG);
            rc = TA_EAUTH;
            goto Exit;
        }
        rc = auth_apikey(c, txn, h, (size_t)(end - h));
    } else {
        rc = auth_jwt(c, txn, h, (size_t)(end - h));
    }
    if (rc == 0 && mode == AUTH_ADMIN && c->caller.role != TA_ROLE_SUPERADMIN) {
        ta_admin_reply_error(c, 403, "permission_error", "permission_denied", NULL,
                             "this endpoint needs a superadmin");
        rc = TA_EAUTH;
    }
Exit:
    ta_txn_abort(txn);
    return rc;
}

int ta_admin_auth_recheck(actx_t *c, int mode)
{
    ta_quota_t q;
    int rc;

    TA_BUG_ON(c->txn == NULL);
    if (c->via_apikey) {
        rc = ta_rec_get(c->st, c->txn, &ta_desc_quota, c->key_quota_id, &q);
        if (rc == TA_ENOTFOUND || (rc == 0 && !q.is_active)) {
            reply_401(c, "quota_inactive", "the quota of this API key is not active");
            return TA_EAUTH;
        }
        if (rc != 0) {
            ta_admin_reply_store_error(c, rc, "key");
            return rc;
        }
        if (mode != AUTH_USER) {
            reply_401(c, "invalid_token",
                      APIKEY_ROUTES_MSG);
            return TA_EAUTH;
        }
    } else {
        /* ta_jwt_verify's expiry test, at the time of the write */
        if (c->claims.exp <= ta_now_s()) {
            reply_401(c, "invalid_token", "invalid or expired token");
            return TA_EAUTH;
        }
        if ((rc = jwt_not_revoked(c, c->txn)) != 0)
            return rc;
    }
    rc = c->via_apikey ? load_active_user(c, c->txn, c->caller.id)
                       : load_session_user(c, c->txn, c->caller.id);
    if (rc != 0)
        return rc;
    if (mode == AUTH_ADMIN && c->caller.role != TA_ROLE_SUPERADMIN) {
        ta_admin_reply_error(c, 403, "permission_error", "permission_denied", NULL,
                             "this endpoint needs a superadmin");
        return TA_EAUTH;
    }
    return 0;
}

/* ---- passwords ------------------------------------------------------------ */

int ta_admin_password_take(actx_t *c, const char *field, const char **out)
{
    json_t *v = json_object_get(c->body, field);
    const char *s;
    size_t n, chars = 0;

    if (v == NULL || json_is_null(v)) {
        ta_admin_reply_field(c, field, "required", "is required");
        return TA_EINVAL;
    }
    if (!json_is_string(v)) {
        ta_admin_reply_field(c, field, "type", "must be a string");
        return TA_EINVAL;
    }
    s = json_string_value(v);
    n = json_string_length(v);
    for (size_t i = 0; i < n; i++)
        chars += ((unsigned char)s[i] & 0xC0) != 0x80;
    if (chars < TA_PASSWORD_MIN) {
        ta_admin_reply_field(c, field, "min_length", "must have at least %d characters", TA_PASSWORD_MIN);
        return TA_EINVAL;
    }
    if (n > TA_PASSWORD_MAX || strlen(s) != n) {
        ta_admin_reply_field(c, field, "max_length", "must have at most %d bytes", TA_PASSWORD_MAX);
        return TA_EINVAL;
    }
    *out = s;
    return 0;
}

/* ---- login / logout ------------------------------------------------------- */

static const char *body_str(actx_t *c, const char *field)
{
    json_t *v = json_object_get(c->body, field);

    if (v == NULL || json_is_null(v)) {
        ta_admin_reply_field(c, field, "required", "is required");
        return NULL;
    }
    if (!json_is_string(v)) {
        ta_admin_reply_field(c, field, "type", "must be a string");
        return NULL;
    }
    return json_string_value(v);
}

/* 200 with a new token of u's current session generation (login and the
 * password change). */
static void reply_token(actx_t *c, const ta_user_t *u)
{
    char *token = NULL;
    ta_jwt_claims_t claims;
    int rc;

    rc = ta_jwt_issue(c->a->conf.jwt_secret, c->a->conf.jwt_secret_len, u->id, u->role,
                      u->token_gen, c->a->conf.jwt_ttl_s, &token, &claims);
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "token");
        return;
    }
    ta_admin_reply_json(c, 200,
                        json_pack("{s:s,s:s,s:I,s:o}", "access_token", token, "token_type", "Bearer",
                         "expires_in", (json_int_t)c->a->conf.jwt_ttl_s, "user", ta_admin_user_json(u)));
    OPENSSL_cleanse(token, strlen(token));
    free(token);
}

static int64_t mono_ms(void)
{
    return ta_mono_ns() / 1000000;
}

/* Loop thread, after the verification ran on a pool thread. The user is
 * read again: an account disabled, or a password changed, while the hash
 * ran must not get a token. */
static void login_finish(actx_t *c, pwjob_t *j)
{
    ta_user_t u;
    int rc;

    if (!j->found || j->verify_rc != 0) {
        reply_401(c, "invalid_credentials", "invalid email or password");
        return;
    }
    if (ta_admin_txn(c, false) != 0)
        return;
    rc = ta_rec_get(c->st, c->txn, &ta_desc_user, j->user.id, &u);
    if (rc == TA_ENOTFOUND ||
        (rc == 0 && (u.pwhash_len != j->hash_len || memcmp(u.pwhash, j->hash, j->hash_len) != 0))) {
        reply_401(c, "invalid_credentials", "invalid email or password");
        return;
    }
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "user");
        return;
    }
    if (!u.is_active) {
        reply_401(c, "user_inactive", "this account is disabled");
        return;
    }
    reply_token(c, &u);
    if (c->res->status == 200)
        ta_throttle_login_ok(c->a->conf.login_throttle, &c->a->conf.login_limits, j->account,
                             j->address, &j->attempt);
}

void ta_admin_login(actx_t *c)
{
    const char *email, *pw, *client = c->req->client_ip != NULL ? c->req->client_ip : "unknown";
    char lemail[sizeof(((ta_user_t *)0)->email)];
    ta_user_t u;
    uint64_t uid = 0;
    bool found = false;
    ta_throttle_attempt_t attempt;
    pwjob_t *j;
    int rc;

    memset(&u, 0, sizeof(u));
    if ((email = body_str(c, "email")) == NULL || (pw = body_str(c, "password")) == NULL)
        return;
    ta_admin_lower_copy(lemail, sizeof(lemail), email);
    /* Before anything costly: a throttled login reads nothing and hashes nothing. */
    rc = ta_throttle_login_begin(c->a->conf.login_throttle, &c->a->conf.login_limits, lemail,
                                 client, mono_ms(), &attempt);
    if (rc > 0) {
        c->res->retry_after = rc;
        ta_admin_reply_error(c, 429, "rate_limit_error", "login_throttled", NULL,
                             "too many failed logins for this account or from this address; retry in %d s",
                    rc);
        return;
    }
    if (ta_admin_txn(c, false) != 0)
        return;
    rc = ta_idx_get(c->st, c->txn, TA_DB_USERS_BY_EMAIL, lemail, &uid);
    if (rc == 0)
        rc = ta_rec_get(c->st, c->txn, &ta_desc_user, uid, &u);
    if (rc != 0 && rc != TA_ENOTFOUND) {
        ta_admin_reply_store_error(c, rc, "user");
        return;
    }
    found = rc == 0 && strlen(email) < sizeof(lemail) && u.pwhash_len > 0 &&
            u.pwhash_len <= sizeof(((pwjob_t *)0)->hash);
    /* No reader slot or snapshot is held while the hash runs. */
    ta_txn_abort(c->txn);
    c->txn = NULL;

    if ((j = ta_admin_pwjob_new(c, login_finish)) == NULL)
        return;
    j->verify = true;
    ta_admin_pwjob_copy_pw(j->pw, pw);
    snprintf(j->account, sizeof(j->account), "%s", lemail);
    snprintf(j->address, sizeof(j->address), "%s", client);
    j->attempt = attempt;
    j->found = found;
    if (found) {
        j->user = u;
        memcpy(j->hash, u.pwhash, u.pwhash_len);
        j->hash_len = u.pwhash_len;
    } else {
        /* Same work as a real check, so the time does not tell which e-mails exist. */
        memcpy(j->hash, c->a->dummy_hash, c->a->dummy_hash_len);
        j->hash_len = c->a->dummy_hash_len;
    }
    OPENSSL_cleanse(&u, sizeof(u));
    ta_admin_pwjob_submit(c, j);
}

/* Delete a few expired revoked_jwt rows, starting at a random key so that
 * successive logouts sweep different parts of the table. */
static int prune_revoked(actx_t *c, int64_t now)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    uint8_t rnd[8];
    char start[17];
    char dead[PRUNE_SCAN][48];
    size_t dead_len[PRUNE_SCAN], ndead = 0;
    int rc, op = MDB_SET_RANGE, wrapped = 0;

    if (ta_random(rnd, sizeof(rnd)) != 0)
        return 0;
    ta_hex(rnd, sizeof(rnd), start);
    rc = mdb_cursor_open(c->txn, ta_store_dbi(c->st, TA_DB_REVOKED_JWT), &cur);
    if (rc != 0)
        return TA_ELMDB;
    k.mv_data = start;
    k.mv_size = strlen(start);
    for (int seen = 0; seen < PRUNE_SCAN; seen++) {
        ta_revoked_t r;
        rc = mdb_cursor_get(cur, &k, &v, (MDB_cursor_op)op);
        if (rc == MDB_NOTFOUND && !wrapped) {
            wrapped = 1;
            rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        }
        if (rc != 0)
            break;
        op = MDB_NEXT;
        if (k.mv_size > sizeof(dead[0]))
            continue;
        if (ta_rec_decode(&ta_desc_revoked, v.mv_data, v.mv_size, &r) == 0 && r.expires_at < now) {
            memcpy(dead[ndead], k.mv_data, k.mv_size);
            dead_len[ndead++] = k.mv_size;
        }
    }
    mdb_cursor_close(cur);
    for (size_t i = 0; i < ndead; i++) {
        rc = ta_kv_del(c->st, c->txn, TA_DB_REVOKED_JWT, dead[i], dead_len[i]);
        if (rc != 0 && rc != TA_ENOTFOUND)
            return rc;
    }
    return 0;
}

void ta_admin_logout(actx_t *c)
{
    ta_revoked_t rv;
    int rc;

    memset(&rv, 0, sizeof(rv));
    rv.expires_at = c->claims.exp;
    if (ta_admin_txn(c, true) != 0)
        return;
    rc = ta_rec_put_k(c->st, c->txn, &ta_desc_revoked, TA_DB_REVOKED_JWT, c->claims.jti,
                      strlen(c->claims.jti), &rv);
    if (rc == 0)
        rc = prune_revoked(c, ta_now_s());
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "logout");
        return;
    }
    ta_admin_reply_204(c);
}

/* ---- self ------------------------------------------------------------------ */

void ta_admin_me(actx_t *c)
{
    ta_admin_reply_json(c, 200, ta_admin_user_json(&c->caller));
}

/* Loop thread, after the old password was verified and the new one hashed
 * on a pool thread. */
static void password_finish(actx_t *c, pwjob_t *j)
{
    ta_user_t cur, nu;
    int rc;

    if (j->verify_rc != 0) {
        ta_admin_reply_field(c, "old_password", "mismatch", "does not match the current password");
        return;
    }
    memset(&nu, 0, sizeof(nu));
    if (ta_admin_pwjob_hash_into(c, j, &nu) != 0)
        return;
    if (ta_admin_txn(c, true) != 0)
        return;
    rc = ta_rec_get(c->st, c->txn, &ta_desc_user, c->caller.id, &cur);
    if (rc == 0 && !cur.is_active) {
        reply_401(c, "user_inactive", "the user of this token does not exist or is not active");
        return;
    }
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "user");
        return;
    }
    /* A concurrent change of the password wins over this one only if it
     * committed first and the old password no longer matches. */
    if (cur.pwhash_len != j->hash_len || memcmp(cur.pwhash, j->hash, j->hash_len) != 0) {
        ta_admin_reply_error(c, 409, "conflict_error", "conflict", NULL,
                             "the password was changed meanwhile; try again");
        return;
    }
    memcpy(cur.pwhash, nu.pwhash, nu.pwhash_len);
    cur.pwhash_len = nu.pwhash_len;
    cur.updated_at = ta_now_s();
    cur.token_gen++; /* every earlier session ends, this caller's token included */
    rc = ta_rec_put(c->st, c->txn, &ta_desc_user, cur.id, &cur);
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "user");
        return;
    }
    /* ... and this session goes on with a token of the new generation (a
     * failure to issue it answers 500, and the router aborts the change). */
    reply_token(c, &cur);
}

void ta_admin_password(actx_t *c)
{
    const char *oldpw, *newpw;
    pwjob_t *j;

    if ((oldpw = body_str(c, "old_password")) == NULL)
        return;
    if (ta_admin_password_take(c, "new_password", &newpw) != 0)
        return;
    if ((j = ta_admin_pwjob_new(c, password_finish)) == NULL)
        return;
    j->verify = true;
    ta_admin_pwjob_copy_pw(j->pw, oldpw);
    ta_admin_pwjob_copy_pw(j->new_pw, newpw);
    /* A stored hash too long to copy cannot be valid (crypto.h); an empty
     * one verifies as malformed: both answer "mismatch" as before. */
    j->hash_len = c->caller.pwhash_len <= sizeof(j->hash) ? c->caller.pwhash_len : 0;
    memcpy(j->hash, c->caller.pwhash, j->hash_len);
    ta_admin_pwjob_submit(c, j);
}

static bool mine(actx_t *c, const void *rec, void *arg)
{
    (void)arg;
    return ((const ta_quota_t *)rec)->user_id == c->caller.id;
}

static json_t *render_quota(actx_t *c, const void *rec)
{
    return ta_admin_quota_json(c, rec);
}

void ta_admin_my_quotas(actx_t *c)
{
    ta_admin_reply_list(c, &ta_desc_quota, mine, NULL, render_quota);
}
