/*
 * dump.c - read-only listing of both LMDB environments (see dump.h).
 *
 * LMDB access: one MDB_RDONLY transaction on "ledger" and one on "audit",
 * both opened before the first line is built, so each environment is listed
 * as of one commit (the two snapshots may be a billing batch apart). Nothing
 * is written; a reader slot is held only for the duration of the call, and a
 * dump killed midway leaves a stale slot that ta_store_reader_check() frees.
 *
 * Secrets: records are rendered only through ta_rec_to_json(TA_JSON_DUMP),
 * which omits SECRET fields; raw keys are shown only where they are not
 * secret (ids, request ids) or truncated (the first 4 bytes of a key hash).
 */
#include "ledger/dump.h"
#include "ledger/billing.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

typedef struct dump {
    ta_store_t *st;
    MDB_txn *txn[2];
    int first_err; /* first record error; the dump goes on past it */
} dump_t;

static void note_err(dump_t *dp, int err)
{
    if (err && !dp->first_err)
        dp->first_err = err;
}

static void hex(char *dst, const uint8_t *src, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        dst[2 * i] = digits[src[i] >> 4];
        dst[2 * i + 1] = digits[src[i] & 15];
    }
    dst[2 * n] = '\0';
}

static json_t *error_row(const char *keyname, json_t *keyval, int err)
{
    json_t *o = json_object();
    if (o) {
        json_object_set_new(o, keyname, keyval);
        json_object_set_new(o, "error", json_string(ta_strerror(err)));
    } else {
        json_decref(keyval);
    }
    return o;
}

/* Decode one stored value into rec and render it; NULL with *err on failure. */
static json_t *render(const ta_recdesc_t *d, const MDB_val *v, void *rec, int *err)
{
    *err = ta_rec_decode(d, v->mv_data, v->mv_size, rec);
    if (*err)
        return NULL;
    json_t *o = ta_rec_to_json(d, rec, TA_JSON_DUMP);
    if (!o)
        *err = -ENOMEM;
    return o;
}

/* Attach the quota's balance (or null) to its row. */
static void add_balance(dump_t *dp, uint64_t quota_id, json_t *row)
{
    ta_balance_t bal;
    int rc = ta_rec_get(dp->st, dp->txn[TA_ENV_LEDGER], &ta_desc_balance, quota_id, &bal);
    if (rc == 0) {
        json_t *b = ta_rec_to_json(&ta_desc_balance, &bal, TA_JSON_DUMP);
        if (b)
            json_object_del(b, "quota_id"); /* repeats the quota's own id */
        json_object_set_new(row, "balance", b ? b : json_null());
    } else if (rc == TA_ENOTFOUND) {
        json_object_set_new(row, "balance", json_null());
    } else {
        note_err(dp, rc);
        json_object_set_new(row, "balance", json_string(ta_strerror(rc)));
    }
}

/* Rows of one table; key rendering depends on the table. */
enum keystyle { KEY_ID, KEY_HASH8, KEY_HEX };

static int table(dump_t *dp, const ta_recdesc_t *d, ta_db_t db, enum keystyle ks, json_t *arr)
{
    ta_envid_t env = db >= TA_DB_FIRST_AUDIT ? TA_ENV_AUDIT : TA_ENV_LEDGER;
    MDB_txn *txn = dp->txn[env];
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    void *rec = NULL;
    int rc, ret = 0;

    if (!(rec = malloc(d->size)))
        return -ENOMEM;
    if ((rc = mdb_cursor_open(txn, ta_store_dbi(dp->st, db), &cur)) != 0) {
        ta_log(TA_LOG_ERROR, "dump: cursor on %s: %s", ta_store_db_name(db), mdb_strerror(rc));
        ret = TA_ELMDB;
        goto Exit;
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        json_t *keyval = NULL, *row;
        const char *keyname = "id";
        char hbuf[2 * 64 + 1];
        int err;

        switch (ks) {
        case KEY_ID:
            if (k.mv_size == 8)
                keyval = json_integer((json_int_t)ta_be64_get(k.mv_data));
            break;
        case KEY_HASH8: /* never the full hash: 4 bytes identify a row, not a key */
            keyname = "key_hash";
            if (k.mv_size >= 4) {
                hex(hbuf, k.mv_data, 4);
                keyval = json_string(hbuf);
            }
            break;
        case KEY_HEX:
            keyname = "request_id";
            if (k.mv_size <= 64) {
                hex(hbuf, k.mv_data, k.mv_size);
                keyval = json_string(hbuf);
            }
            break;
        }
        if (!keyval) {
            note_err(dp, TA_ECORRUPT);
            row = error_row("key_bytes", json_integer((json_int_t)k.mv_size), TA_ECORRUPT);
            if (row)
                json_array_append_new(arr, row);
            continue;
        }

        row = render(d, &v, rec, &err);
        if (!row) {
            note_err(dp, err);
            row = error_row(keyname, keyval, err);
            if (row)
                json_array_append_new(arr, row);
            continue;
        }
        if (ks == KEY_ID) {
            /* The stored key is authoritative; a record id disagreeing is worth seeing. */
            json_t *rid = json_object_get(row, "id");
            if (!rid) {
                json_t *copy = json_object();
                if (copy) {
                    json_object_set(copy, "id", keyval);
                    json_object_update(copy, row);
                    json_decref(row);
                    row = copy;
                }
            } else if (!json_equal(rid, keyval)) {
                json_object_set(row, "stored_under_id", keyval);
            }
            if (db == TA_DB_QUOTAS)
                add_balance(dp, ta_be64_get(k.mv_data), row);
        } else {
            json_t *copy = json_object();
            if (copy) {
                json_object_set(copy, keyname, keyval);
                json_object_update_missing(copy, row);
                json_decref(row);
                row = copy;
            }
        }
        json_decref(keyval);
        if (json_array_append_new(arr, row) != 0)
            ret = -ENOMEM;
    }
    if (rc != MDB_NOTFOUND) {
        ta_log(TA_LOG_ERROR, "dump: walking %s: %s", ta_store_db_name(db), mdb_strerror(rc));
        ret = TA_ELMDB;
    }
Exit:
    if (cur)
        mdb_cursor_close(cur);
    free(rec);
    return ret;
}

/* Meta of one environment: u64 values as numbers, text as strings. */
static int meta(dump_t *dp, ta_envid_t env, json_t *obj)
{
    ta_db_t db = env == TA_ENV_AUDIT ? TA_DB_AUDIT_META : TA_DB_META;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int rc;

    if ((rc = mdb_cursor_open(dp->txn[env], ta_store_dbi(dp->st, db), &cur)) != 0) {
        ta_log(TA_LOG_ERROR, "dump: cursor on meta: %s", mdb_strerror(rc));
        return TA_ELMDB;
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        char name[256], buf[2 * 64 + 8];
        const uint8_t *p = v.mv_data;
        bool text = v.mv_size > 0 && v.mv_size < sizeof(buf);
        size_t n = k.mv_size < sizeof(name) ? k.mv_size : sizeof(name) - 1;
        json_t *val;

        memcpy(name, k.mv_data, n);
        name[n] = '\0';
        for (size_t i = 0; text && i < v.mv_size; i++)
            text = p[i] >= 0x20 && p[i] < 0x7f;
        if (v.mv_size == 8 && strcmp(name, "instance_id") != 0) {
            val = json_integer((json_int_t)ta_be64_get(p));
        } else if (text) {
            val = json_stringn((const char *)p, v.mv_size);
        } else if (v.mv_size <= 64) {
            memcpy(buf, "hex:", 4);
            hex(buf + 4, p, v.mv_size);
            val = json_string(buf);
        } else {
            val = json_pack("{s:I}", "bytes", (json_int_t)v.mv_size);
        }
        json_object_set_new(obj, name, val ? val : json_null());
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND) {
        ta_log(TA_LOG_ERROR, "dump: walking meta: %s", mdb_strerror(rc));
        return TA_ELMDB;
    }
    return 0;
}

/* Dead letters (billing.h) of both environments: the decoded fields and the
 * stored event bytes, so an operator can see exactly what was set aside. */
static int dead_cb(const ta_dead_letter_t *dl, void *arg)
{
    json_t *arr = arg, *row;
    char rid[33], *raw = malloc(2 * dl->raw_len + 1);
    if (!raw)
        return -ENOMEM;
    hex(raw, dl->raw, dl->raw_len);
    raw[2 * dl->raw_len] = '\0';
    hex(rid, dl->ev.request_id, 16);
    rid[32] = '\0';
    row = json_pack("{s:I,s:s,s:s,s:i,s:s,s:I,s:b,s:i,s:s,s:I,s:I,s:i,s:I,s:s}",
                    "ticket", (json_int_t)dl->ticket, "ring_id", "", "side",
                    dl->side == TA_ENV_AUDIT ? "audit" : "ledger", "error", (int)dl->error,
                    "error_text", ta_strerror(dl->error), "at_ns", (json_int_t)dl->at_ns,
                    "intact", dl->intact, "kind", (int)dl->ev.kind, "request_id", rid,
                    "quota_id", (json_int_t)dl->ev.quota_id, "user_id", (json_int_t)dl->ev.user_id,
                    "status", (int)dl->ev.status, "cost", (json_int_t)dl->ev.cost, "event_hex", raw);
    free(raw);
    if (!row)
        return -ENOMEM;
    char ring[17];
    snprintf(ring, sizeof(ring), "%016" PRIx64, dl->ring_id);
    json_object_set_new(row, "ring_id", json_string(ring));
    json_array_append_new(arr, row);
    return 0;
}

static size_t entries(dump_t *dp, ta_db_t db)
{
    MDB_stat ms;
    ta_envid_t env = db >= TA_DB_FIRST_AUDIT ? TA_ENV_AUDIT : TA_ENV_LEDGER;
    if (mdb_stat(dp->txn[env], ta_store_dbi(dp->st, db), &ms) != 0)
        return 0;
    return ms.ms_entries;
}

static json_t *build(dump_t *dp)
{
    static const struct {
        const char *section;
        const ta_recdesc_t *d;
        ta_db_t db;
        enum keystyle ks;
    } tables[] = {
        {"users", &ta_desc_user, TA_DB_USERS, KEY_ID},
        {"providers", &ta_desc_provider, TA_DB_PROVIDERS, KEY_ID},
        {"models", &ta_desc_model, TA_DB_MODELS, KEY_ID},
        {"groups", &ta_desc_group, TA_DB_GROUPS, KEY_ID},
        {"quotas", &ta_desc_quota, TA_DB_QUOTAS, KEY_ID},
        {"keys", &ta_desc_keyrec, TA_DB_KEYS, KEY_HASH8},
        {"holds", &ta_desc_hold, TA_DB_HOLDS, KEY_HEX},
    };
    json_t *doc = json_object(), *m, *a;
    int rc;

    if (!doc)
        return NULL;
    for (size_t i = 0; i < TA_ARRAY_SIZE(tables); i++) {
        json_t *arr = json_array();
        if (!arr)
            goto Fail;
        json_object_set_new(doc, tables[i].section, arr);
        if ((rc = table(dp, tables[i].d, tables[i].db, tables[i].ks, arr)) != 0) {
            note_err(dp, rc);
            if (rc == -ENOMEM)
                goto Fail;
        }
    }
    json_object_set_new(doc, "revoked_jwt", json_integer((json_int_t)entries(dp, TA_DB_REVOKED_JWT)));

    a = json_pack("{s:I,s:I,s:I}", "requests", (json_int_t)entries(dp, TA_DB_AUDIT_REQUESTS),
                  "daily", (json_int_t)entries(dp, TA_DB_AUDIT_DAILY), "warnings",
                  (json_int_t)entries(dp, TA_DB_AUDIT_WARNINGS));
    if (!a)
        goto Fail;
    json_object_set_new(doc, "audit", a);

    if (!(a = json_array()))
        goto Fail;
    json_object_set_new(doc, "dead_letters", a);
    for (int e = 0; e < 2; e++) {
        if ((rc = ta_dead_letter_walk(dp->st, dp->txn[e], (ta_envid_t)e, dead_cb, a)) != 0) {
            note_err(dp, rc);
            if (rc == -ENOMEM)
                goto Fail;
        }
    }

    if (!(m = json_object()))
        goto Fail;
    json_object_set_new(doc, "meta", m);
    for (int e = 0; e < 2; e++) {
        json_t *o = json_object();
        if (!o)
            goto Fail;
        json_object_set_new(m, e == TA_ENV_LEDGER ? "ledger" : "audit", o);
        note_err(dp, meta(dp, (ta_envid_t)e, o));
    }
    return doc;
Fail:
    json_decref(doc);
    return NULL;
}

/* ---- text rendering ---------------------------------------------------------- */

/* A string prints bare when that is unambiguous, else JSON-quoted (which also
 * escapes control characters, so a record cannot forge dump lines). */
static void put_string(FILE *out, const char *s)
{
    bool bare = *s != '\0';
    for (const unsigned char *p = (const unsigned char *)s; bare && *p; p++)
        bare = *p > 0x20 && *p != 0x7f && *p != '"' && *p != '=' && *p != '\\';
    if (bare) {
        fputs(s, out);
        return;
    }
    json_t *j = json_string(s);
    char *q = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    fputs(q ? q : "\"?\"", out);
    free(q);
    json_decref(j);
}

static void put_value(FILE *out, const char *prefix, const char *key, json_t *v);

static void put_pairs(FILE *out, const char *prefix, json_t *obj)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) put_value(out, prefix, key, v);
}

static void put_value(FILE *out, const char *prefix, const char *key, json_t *v)
{
    char sub[256];

    if (json_is_object(v)) { /* flatten: balance.cost_used=... */
        snprintf(sub, sizeof(sub), "%s%s.", prefix, key);
        put_pairs(out, sub, v);
        return;
    }
    fprintf(out, " %s%s=", prefix, key);
    switch (json_typeof(v)) {
    case JSON_STRING:
        put_string(out, json_string_value(v));
        break;
    case JSON_INTEGER:
        fprintf(out, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        break;
    case JSON_TRUE: fputs("true", out); break;
    case JSON_FALSE: fputs("false", out); break;
    case JSON_NULL: fputs("null", out); break;
    default: { /* arrays (routes, model ids, warn_at): compact JSON */
        char *q = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        fputs(q ? q : "?", out);
        free(q);
        break;
    }
    }
}

static void put_text(FILE *out, json_t *doc)
{
    const char *section;
    json_t *v;

    json_object_foreach(doc, section, v) {
        if (json_is_array(v)) {
            size_t i;
            json_t *row;
            fprintf(out, "%s (%zu)\n", section, json_array_size(v));
            json_array_foreach(v, i, row) {
                fputc(' ', out);
                if (json_is_object(row))
                    put_pairs(out, "", row);
                fputc('\n', out);
            }
        } else if (json_is_object(v) && strcmp(section, "meta") == 0) {
            const char *envname;
            json_t *o;
            json_object_foreach(v, envname, o) {
                fprintf(out, "meta %s (%zu)\n", envname, json_object_size(o));
                const char *key;
                json_t *val;
                json_object_foreach(o, key, val) {
                    fputc(' ', out);
                    put_value(out, "", key, val);
                    fputc('\n', out);
                }
            }
        } else if (json_is_object(v)) {
            fputs(section, out);
            put_pairs(out, "", v);
            fputc('\n', out);
        } else {
            fprintf(out, "%s", section);
            put_value(out, "", "count", v);
            fputc('\n', out);
        }
    }
}

int ta_ledger_dump(ta_store_t *st, FILE *out, bool json)
{
    dump_t dp = {.st = st};
    json_t *doc = NULL;
    int ret;

    for (int e = 0; e < 2; e++)
        if ((ret = ta_txn_begin(st, (ta_envid_t)e, false, &dp.txn[e])) != 0)
            goto Exit;
    if (!(doc = build(&dp))) {
        ret = -ENOMEM;
        goto Exit;
    }
    /* The snapshots are complete in doc: let go of the reader slots before
     * the (possibly slow) write to a pipe. */
    for (int e = 0; e < 2; e++) {
        mdb_txn_abort(dp.txn[e]);
        dp.txn[e] = NULL;
    }
    if (json) {
        if (json_dumpf(doc, out, JSON_INDENT(2)) != 0)
            ret = -EIO;
        else
            fputc('\n', out);
    } else {
        put_text(out, doc);
    }
    if (fflush(out) != 0 || ferror(out))
        ret = -EIO;
    if (!ret)
        ret = dp.first_err;
Exit:
    for (int e = 0; e < 2; e++)
        ta_txn_abort(dp.txn[e]);
    json_decref(doc);
    return ret;
}
