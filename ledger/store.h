/*
 * store.h - the two LMDB environments and the records in them.
 *
 *   DATA_DIR/
 *     ledger/data.mdb   env "ledger": control plane + balances + holds (all processes
 *                       read; workers, billing and admin handlers write)
 *     audit/data.mdb    env "audit": request records and aggregates (billing is its
 *                       only writer; workers read it for the admin API)
 *     ring              the event ring (ledger/ring.h)
 *     jwt.secret        32 random bytes, mode 0600
 *     master.key        32 random bytes (AES-256-GCM for provider keys), mode 0600
 *
 * Named databases (docs/ARCHITECTURE.md, "Data"):
 *   ledger: users, users_by_email, providers, models, models_by_name, groups,
 *           quotas, keys, balances, holds, revoked_jwt, meta
 *   audit:  requests, requests_by_quota, daily, warnings, meta
 *
 * Record ids are uint64, stored as 8-byte big-endian keys so cursors walk them
 * in id order; the next id of each table is meta "next_id.<table>", bumped in
 * the same write transaction that inserts the record.
 *
 * Open after fork, in the process that uses it, never in the master: an
 * MDB_env must not cross fork(). Both environments are opened MDB_NOSYNC
 * (unless durability = strict) and MDB_NOTLS; billing calls ta_store_sync()
 * every sync_interval_ms and every process syncs at clean exit. The map is
 * read-only unless ledger_writemap is on, so a stray write faults instead of
 * corrupting pages. A process killed inside a write transaction loses only
 * that uncommitted transaction; its reader slot is freed by
 * ta_store_reader_check() (billing runs it when a child is replaced).
 *
 * Callers: worker, billing, CLI. Never the master.
 */
#ifndef TA_STORE_H
#define TA_STORE_H

#include <lmdb.h>
#include "schema/schema.h"

typedef enum ta_db {
    /* ledger env */
    TA_DB_USERS = 0,
    TA_DB_USERS_BY_EMAIL,
    TA_DB_PROVIDERS,
    TA_DB_MODELS,
    TA_DB_MODELS_BY_NAME,
    TA_DB_GROUPS,
    TA_DB_QUOTAS,
    TA_DB_KEYS,
    TA_DB_BALANCES,
    TA_DB_HOLDS,
    TA_DB_REVOKED_JWT,
    TA_DB_META,
    /* audit env */
    TA_DB_AUDIT_REQUESTS,
    TA_DB_AUDIT_BY_QUOTA,
    TA_DB_AUDIT_DAILY,
    TA_DB_AUDIT_WARNINGS,
    TA_DB_AUDIT_META,
    TA_DB_AUDIT_USER_COST,
    TA_DB_AUDIT_USER_CUM,
    TA_DB_COUNT
} ta_db_t;
#define TA_DB_FIRST_AUDIT TA_DB_AUDIT_REQUESTS

typedef enum ta_envid { TA_ENV_LEDGER = 0, TA_ENV_AUDIT = 1 } ta_envid_t;

typedef struct ta_store_opts {
    bool create;            /* create directories/environments (init only) */
    bool readonly;          /* MDB_RDONLY (ledger dump / verify, CLI readers) */
    bool strict_durability; /* no MDB_NOSYNC: every commit is synced */
    bool writemap;          /* MDB_WRITEMAP | MDB_NOMETASYNC */
    size_t ledger_map_size; /* bytes; 0 = 1 GiB */
    size_t audit_map_size;  /* bytes; 0 = 8 GiB */
    unsigned max_readers;   /* 0 = 510 */
} ta_store_opts_t;

typedef struct ta_store ta_store_t; /* opaque */

/** Open both environments under data_dir and every named database.
 *  Refuses (TA_ESCHEMA, logged) a data directory whose meta schema_version is
 *  newer than TA_SCHEMA_VERSION, and (TA_ENOTFOUND) one without a ledger
 *  unless opts->create. */
int ta_store_open(ta_store_t **out, const char *data_dir, const ta_store_opts_t *opts);
void ta_store_close(ta_store_t *st);
const char *ta_store_data_dir(const ta_store_t *st);

MDB_env *ta_store_env(ta_store_t *st, ta_envid_t env);
MDB_dbi ta_store_dbi(ta_store_t *st, ta_db_t db);
/** Whether the environment has db: false only for a database that a later
 *  build added (user_cost, user_cum), in a data directory of an earlier build opened
 *  read-only (a writer's open creates it). */
bool ta_store_has_db(const ta_store_t *st, ta_db_t db);

/** Begin a transaction on an environment. Returns 0 or TA_ELMDB (logged).
 *  Read transactions are cheap; write transactions are serialized across all
 *  processes: keep them short, never across a callback or a fork. */
int ta_txn_begin(ta_store_t *st, ta_envid_t env, bool write, MDB_txn **out);
/** Commit; returns 0 or TA_ELMDB/TA_EFULL (map full). */
int ta_txn_commit(MDB_txn *txn);
void ta_txn_abort(MDB_txn *txn);

/** mdb_env_sync(force) on both environments. */
int ta_store_sync(ta_store_t *st);
/** mdb_reader_check on both environments; returns the count of stale slots cleared. */
int ta_store_reader_check(ta_store_t *st);

/* ---- records by id ---------------------------------------------------- */

/** The database a record type lives in (users -> TA_DB_USERS, ...). */
ta_db_t ta_rec_db(const ta_recdesc_t *d);

/** Next id of a table; bumps meta "next_id.<name>". Write txn. */
int ta_rec_next_id(ta_store_t *st, MDB_txn *txn, const ta_recdesc_t *d, uint64_t *id);
/** Get/put/delete a record by uint64 id. get: 0, TA_ENOTFOUND, TA_ESCHEMA, TA_ECORRUPT. */
int ta_rec_get(ta_store_t *st, MDB_txn *txn, const ta_recdesc_t *d, uint64_t id, void *rec);
int ta_rec_put(ta_store_t *st, MDB_txn *txn, const ta_recdesc_t *d, uint64_t id, const void *rec);
int ta_rec_del(ta_store_t *st, MDB_txn *txn, const ta_recdesc_t *d, uint64_t id);

/** Get/put/delete a record under an arbitrary binary key (keys, holds, revoked_jwt). */
int ta_rec_get_k(ta_store_t *st, MDB_txn *txn, const ta_recdesc_t *d, ta_db_t db, const void *key,
                 size_t klen, void *rec);
int ta_rec_put_k(ta_store_t *st, MDB_txn *txn, const ta_recdesc_t *d, ta_db_t db, const void *key,
                 size_t klen, const void *rec);
int ta_kv_del(ta_store_t *st, MDB_txn *txn, ta_db_t db, const void *key, size_t klen);

/** Walk records of d's table in id order. cb returns 0 to go on, 1 to stop, <0 error.
 *  rec points to a decoded copy valid during the callback only. */
typedef int (*ta_rec_walk_cb)(uint64_t id, const void *rec, void *arg);
int ta_rec_walk(ta_store_t *st, MDB_txn *txn, const ta_recdesc_t *d, ta_rec_walk_cb cb, void *arg);
/** The same walk from a position, found in O(log n) without reading what
 *  precedes it: ids above from in ascending order, or (backward) ids below
 *  from in descending order; from == 0 starts at the first (last) record. */
int ta_rec_walk_from(ta_store_t *st, MDB_txn *txn, const ta_recdesc_t *d, uint64_t from,
                     bool backward, ta_rec_walk_cb cb, void *arg);
/** The number of entries of a table (LMDB keeps it: O(1)). Any txn on its env. */
int ta_rec_count(ta_store_t *st, MDB_txn *txn, ta_db_t db, uint64_t *n);

/* ---- unique string indexes (users_by_email, models_by_name) ----------- */

/** idx_get: 0 with *id, or TA_ENOTFOUND (also for "" and names too long to
 *  be a key, which were never stored). idx_put with unique=true fails TA_EEXIST
 *  if the name maps to another id. */
int ta_idx_get(ta_store_t *st, MDB_txn *txn, ta_db_t db, const char *name, uint64_t *id);
int ta_idx_put(ta_store_t *st, MDB_txn *txn, ta_db_t db, const char *name, uint64_t id);
int ta_idx_del(ta_store_t *st, MDB_txn *txn, ta_db_t db, const char *name);

/* ---- meta ------------------------------------------------------------- */
int ta_meta_get_u64(ta_store_t *st, MDB_txn *txn, ta_envid_t env, const char *name, uint64_t *v);
int ta_meta_put_u64(ta_store_t *st, MDB_txn *txn, ta_envid_t env, const char *name, uint64_t v);

/* ---- helpers ---------------------------------------------------------- */
static inline void ta_be64_put(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}
static inline uint64_t ta_be64_get(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

/* ---- binary-keyed walks, names, instance id --------------------------- */

/** Walk a binary-keyed table (keys, holds, revoked_jwt, audit tables) in key
 *  order; d decodes each value. cb gets the raw key (valid during the
 *  callback only) and returns 0 to go on, 1 to stop, <0 error.
 *  ta_rec_walk() on such a table fails TA_ECORRUPT (its keys are not ids). */
typedef int (*ta_rec_walk_k_cb)(const void *key, size_t klen, const void *rec, void *arg);
int ta_rec_walk_k(ta_store_t *st, MDB_txn *txn, const ta_recdesc_t *d, ta_db_t db,
                  ta_rec_walk_k_cb cb, void *arg);

/** LMDB name of a database ("users", "requests", ...); "?" if out of range. */
const char *ta_store_db_name(ta_db_t db);

/** The data directory's instance id: 32 lowercase hex chars written at init
 *  (the same in both environments); "" for a ledger without one. Valid until
 *  ta_store_close. */
const char *ta_store_instance_id(const ta_store_t *st);

#endif
