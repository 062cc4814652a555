/*
 * users.c - /api/admin/users/ and ta_admin_create_superadmin.
 *
 * LMDB (ledger env), each mutation in one write transaction:
 *
 *   users           id (u64 BE) -> ta_user_t
 *   users_by_email  lower-cased email -> id        (kept equal to users.email)
 *   quotas / keys   touched by DELETE (the keys of the user's quotas revoked,
 *                   admin/keys.c; reset-all-keys lives there too)
 *
 * The index and the record change in the same transaction, so no reader
 * ever sees one without the other; a rejection aborts both. A create, or
 * an update with a password, first checks in a read transaction (so 400,
 * 404 and 409 answer at once), hashes the password on the worker's pool
 * thread (pwjob_t) with no transaction open, then checks again and writes
 * in its continuation's write transaction. Users are never
 * deleted: DELETE deactivates and revokes keys, the record stays for audit.
 *
 * Worker processes (and the CLI through ta_admin_create_superadmin).
 */
#include "admin/admin_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

json_t *ta_admin_user_json(const ta_user_t *u)
{
    return ta_rec_to_json(&ta_desc_user, u, TA_JSON_API);
}

static json_t *render_user(actx_t *c, const void *rec)
{
    (void)c;
    return ta_admin_user_json(rec);
}

typedef struct user_filter {
    char search[256];
    bool has_search;
    int role; /* -1 any */
    int active; /* -1 any */
} user_filter_t;

static bool user_match(actx_t *c, const void *rec, void *arg)
{
    const ta_user_t *u = rec;
    const user_filter_t *f = arg;

    (void)c;
    if (f->role >= 0 && u->role != f->role)
        return false;
    if (f->active >= 0 && u->is_active != (bool)f->active)
        return false;
    if (f->has_search && !ta_admin_icontains(u->email, f->search) && !ta_admin_icontains(u->name, f->search))
        return false;
    return true;
}

void ta_admin_users_list(actx_t *c)
{
    user_filter_t f = {.role = -1, .active = -1};
    char role[32];
    bool b;
    int rc;

    if ((rc = ta_admin_query_get(c, "search", f.search, sizeof(f.search))) < 0)
        return;
    f.has_search = rc > 0;
    if ((rc = ta_admin_query_get(c, "role", role, sizeof(role))) < 0)
        return;
    if (rc > 0) {
        if (strcmp(role, "user") == 0) {
            f.role = TA_ROLE_USER;
        } else if (strcmp(role, "superadmin") == 0) {
            f.role = TA_ROLE_SUPERADMIN;
        } else {
            ta_admin_reply_field(c, "role", "enum", "must be one of user, superadmin");
            return;
        }
    }
    if ((rc = ta_admin_query_bool(c, "is_active", &b)) < 0)
        return;
    if (rc > 0)
        f.active = b;
    ta_admin_reply_list(c, &ta_desc_user, user_match, &f, render_user);
}

/* Insert a new user (id assigned) with its e-mail index entry, in txn. */
static int user_insert(ta_store_t *st, MDB_txn *txn, ta_user_t *u)
{
    uint64_t other;
    int rc;

    ta_admin_lower_copy(u->email, sizeof(u->email), u->email);
    rc = ta_idx_get(st, txn, TA_DB_USERS_BY_EMAIL, u->email, &other);
    if (rc == 0)
        return TA_EEXIST;
    if (rc != TA_ENOTFOUND)
        return rc;
    if ((rc = ta_rec_next_id(st, txn, &ta_desc_user, &u->id)) != 0)
        return rc;
    u->created_at = u->updated_at = ta_now_s();
    if ((rc = ta_idx_put(st, txn, TA_DB_USERS_BY_EMAIL, u->email, u->id)) != 0)
        return rc;
    return ta_rec_put(st, txn, &ta_desc_user, u->id, u);
}

/* Loop thread, after the password was hashed on a pool thread: the insert
 * re-checks the e-mail (another request may have taken it meanwhile). */
static void users_create_finish(actx_t *c, pwjob_t *j)
{
    ta_user_t *u = &j->user;
    int rc;

    if (ta_admin_pwjob_hash_into(c, j, u) != 0)
        return;
    if (ta_admin_txn(c, true) != 0)
        return;
    rc = user_insert(c->st, c->txn, u);
    if (rc == TA_EEXIST) {
        ta_admin_reply_error(c, 409, "conflict_error", "duplicate", "email",
                             "a user with email %s already exists", u->email);
        return;
    }
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "user");
        return;
    }
    ta_admin_reply_json(c, 201, ta_admin_user_json(u));
}

void ta_admin_users_create(actx_t *c)
{
    const char *pw;
    ta_user_t u;
    uint64_t other;
    pwjob_t *j;
    int rc;

    memset(&u, 0, sizeof(u));
    ta_rec_defaults(&ta_desc_user, &u);
    if (ta_admin_body_apply(c, &ta_desc_user, &u, TA_MERGE_CREATE) != 0)
        return;
    if (ta_admin_password_take(c, "password", &pw) != 0)
        return;
    /* A taken e-mail is refused before the hash is spent on it. */
    ta_admin_lower_copy(u.email, sizeof(u.email), u.email);
    if (ta_admin_txn(c, false) != 0)
        return;
    rc = ta_idx_get(c->st, c->txn, TA_DB_USERS_BY_EMAIL, u.email, &other);
    ta_txn_abort(c->txn);
    c->txn = NULL;
    if (rc == 0) {
        ta_admin_reply_error(c, 409, "conflict_error", "duplicate", "email",
                             "a user with email %s already exists", u.email);
        return;
    }
    if (rc != TA_ENOTFOUND) {
        ta_admin_reply_store_error(c, rc, "user");
        return;
    }
    if ((j = ta_admin_pwjob_new(c, users_create_finish)) == NULL)
        return;
    j->user = u;
    ta_admin_pwjob_copy_pw(j->new_pw, pw);
    ta_admin_pwjob_submit(c, j);
}

void ta_admin_users_get(actx_t *c)
{
    ta_user_t u;
    int rc;

    if (ta_admin_txn(c, false) != 0)
        return;
    rc = ta_rec_get(c->st, c->txn, &ta_desc_user, c->id, &u);
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "user");
        return;
    }
    ta_admin_reply_json(c, 200, ta_admin_user_json(&u));
}

/* In c->txn: read user c->id into *old, merge the body into *u and check
 * the self rules and the e-mail's uniqueness. Replies and returns <0 on a
 * rejection. Read-only, so it also serves as the early check of an update
 * that must hash a password first. */
static int user_update_check(actx_t *c, ta_user_t *u, ta_user_t *old)
{
    bool self = c->id == c->caller.id;
    int rc;

    rc = ta_rec_get(c->st, c->txn, &ta_desc_user, c->id, u);
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "user");
        return rc;
    }
    *old = *u;
    if ((rc = ta_admin_body_apply(c, &ta_desc_user, u, ta_admin_merge_mode(c))) != 0)
        return rc;
    ta_admin_lower_copy(u->email, sizeof(u->email), u->email);
    if (self && old->role == TA_ROLE_SUPERADMIN) {
        if (!u->is_active) {
            ta_admin_reply_field(c, "is_active", "self", "a superadmin cannot deactivate themselves");
            return TA_EINVAL;
        }
        if (u->role != TA_ROLE_SUPERADMIN) {
            ta_admin_reply_field(c, "role", "self", "a superadmin cannot demote themselves");
            return TA_EINVAL;
        }
    }
    if (strcmp(u->email, old->email) != 0) {
        uint64_t other;
        rc = ta_idx_get(c->st, c->txn, TA_DB_USERS_BY_EMAIL, u->email, &other);
        if (rc == 0 && other != u->id) {
            ta_admin_reply_error(c, 409, "conflict_error", "duplicate", "email",
                                 "a user with email %s already exists", u->email);
            return TA_EEXIST;
        }
        if (rc != 0 && rc != TA_ENOTFOUND) {
            ta_admin_reply_store_error(c, rc, "user");
            return rc;
        }
    }
    return 0;
}

/* The update in a write transaction: checked again (the user may have
 * changed since an early check), then the index and the record; j carries
 * the new password's hash, or is NULL. Replies. */
static void user_update_store(actx_t *c, const pwjob_t *j)
{
    ta_user_t u, old;
    int rc;

    if (ta_admin_txn(c, true) != 0)
        return;
    if (user_update_check(c, &u, &old) != 0)
        return;
    if (strcmp(u.email, old.email) != 0) {
        rc = ta_idx_del(c->st, c->txn, TA_DB_USERS_BY_EMAIL, old.email);
        if (rc == 0 || rc == TA_ENOTFOUND)
            rc = ta_idx_put(c->st, c->txn, TA_DB_USERS_BY_EMAIL, u.email, u.id);
        if (rc != 0) {
            ta_admin_reply_store_error(c, rc, "user");
            return;
        }
    }
    if (j != NULL && ta_admin_pwjob_hash_into(c, j, &u) != 0)
        return;
    /* A new password, a deactivation (or reactivation) or a new role ends
     * every session of the user (auth.c): their tokens carry the old
     * generation. The caller's own, too, when it is their own record. */
    if (j != NULL || u.role != old.role || u.is_active != old.is_active)
        u.token_gen = old.token_gen + 1;
    u.id = old.id;
    u.created_at = old.created_at;
    u.updated_at = ta_now_s();
    rc = ta_rec_put(c->st, c->txn, &ta_desc_user, u.id, &u);
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "user");
        return;
    }
    ta_admin_reply_json(c, 200, ta_admin_user_json(&u));
}

/* Loop thread, after the new password was hashed on a pool thread. */
static void users_update_finish(actx_t *c, pwjob_t *j)
{
    if (j->hash_rc <= 0) {
        ta_user_t scratch;
        ta_admin_pwjob_hash_into(c, j, &scratch); /* replies 500 */
        return;
    }
    user_update_store(c, j);
}

void ta_admin_users_update(actx_t *c)
{
    const char *pw = NULL;
    ta_user_t u, old;
    pwjob_t *j;
    int rc;

    if (!ta_admin_body_has(c, "password") || json_is_null(json_object_get(c->body, "password"))) {
        user_update_store(c, NULL);
        return;
    }
    if (ta_admin_password_take(c, "password", &pw) != 0)
        return;
    /* 404, 400 and 409 answer before the hash is spent. */
    if (ta_admin_txn(c, false) != 0)
        return;
    rc = user_update_check(c, &u, &old);
    ta_txn_abort(c->txn);
    c->txn = NULL;
    if (rc != 0)
        return;
    if ((j = ta_admin_pwjob_new(c, users_update_finish)) == NULL)
        return;
    ta_admin_pwjob_copy_pw(j->new_pw, pw);
    ta_admin_pwjob_submit(c, j);
}

void ta_admin_users_delete(actx_t *c)
{
    ta_user_t u;
    int rc;

    if (c->id == c->caller.id) {
        ta_admin_reply_field(c, "id", "self", "a superadmin cannot delete themselves");
        return;
    }
    if (ta_admin_txn(c, true) != 0)
        return;
    rc = ta_rec_get(c->st, c->txn, &ta_desc_user, c->id, &u);
    if (rc == 0) {
        u.is_active = false;
        u.token_gen++; /* ends every session of the user (auth.c) */
        u.updated_at = ta_now_s();
        rc = ta_rec_put(c->st, c->txn, &ta_desc_user, u.id, &u);
    }
    if (rc == 0)
        rc = ta_admin_keys_revoke_user(c, u.id);
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "user");
        return;
    }
    ta_admin_reply_204(c);
}

/* ---- CLI --------------------------------------------------------------------- */

int ta_admin_create_superadmin(ta_store_t *st, const char *email, const char *password,
                               unsigned pbkdf2_iterations, ta_err_t *err)
{
    ta_user_t u;
    json_t *in = NULL;
    MDB_txn *txn = NULL;
    char h[TA_PWHASH_MAX];
    size_t n, chars = 0;
    int rc;

    memset(&u, 0, sizeof(u));
    if (email == NULL || password == NULL)
        return ta_err_set(err, email == NULL ? "email" : "password", "required", "is required");
    n = strlen(password);
    for (size_t i = 0; i < n; i++)
        chars += ((unsigned char)password[i] & 0xC0) != 0x80;
    if (chars < TA_PASSWORD_MIN)
        return ta_err_set(err, "password", "min_length", "password: must have at least %d characters",
                          TA_PASSWORD_MIN);
    if (n > TA_PASSWORD_MAX || !ta_utf8_valid(password, n))
        return ta_err_set(err, "password", "max_length",
                          "password: must be valid UTF-8 of at most %d bytes", TA_PASSWORD_MAX);
    in = json_pack("{s:s,s:s}", "email", email, "role", "superadmin");
    if (in == NULL)
        return ta_err_set(err, "email", "format", "email: must be valid UTF-8");
    ta_rec_defaults(&ta_desc_user, &u);
    rc = ta_rec_from_json(&ta_desc_user, in, &u, TA_MERGE_CREATE, err);
    if (rc != 0)
        goto Exit;
    u.role = TA_ROLE_SUPERADMIN;
    u.is_active = true;
    rc = ta_password_hash(password, pbkdf2_iterations, h);
    if (rc < 0)
        goto Exit;
    if ((size_t)rc > sizeof(u.pwhash)) {
        rc = TA_ETOOBIG;
        goto Exit;
    }
    memcpy(u.pwhash, h, (size_t)rc);
    u.pwhash_len = (uint16_t)rc;
    if ((rc = ta_txn_begin(st, TA_ENV_LEDGER, true, &txn)) != 0)
        goto Exit;
    rc = user_insert(st, txn, &u);
    if (rc == TA_EEXIST)
        ta_err_set(err, "email", "unique", "email: a user with this e-mail already exists");
    if (rc != 0)
        goto Exit;
    rc = ta_txn_commit(txn);
    txn = NULL;
Exit:
    if (txn != NULL)
        ta_txn_abort(txn);
    json_decref(in);
    return rc;
}
