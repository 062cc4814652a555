/*
 * store.c - the two LMDB environments (ledger, audit) and typed record access.
 *
 *   DATA_DIR/
 *     ledger/ data.mdb lock.mdb    env "ledger", maxdbs 16, map 1 GiB default
 *       users           u64be id        -> ta_user_t      (schema encoding)
 *       users_by_email  lower email     -> u64be id
 *       providers       u64be id        -> ta_provider_t
 *       models          u64be id        -> ta_model_t
 *       models_by_name  public name     -> u64be id
 *       groups          u64be id        -> ta_group_t
 *       quotas          u64be id        -> ta_quota_t
 *       keys            sha256(key) 32B -> ta_keyrec_t
 *       balances        u64be quota id  -> ta_balance_t
 *       holds           request id 16B  -> ta_hold_t
 *       revoked_jwt     jti string      -> ta_revoked_t
 *       meta            name            -> "schema_version" u64be, "instance_id"
 *                                          32 hex chars (the same in both envs), "next_id.<table>" u64be
 *                                          (the next id to hand out), others (the
 *                                          billing ticket) as their owners write them
 *     audit/  data.mdb lock.mdb    env "audit", maxdbs 16, map 8 GiB default
 *       requests, requests_by_quota, daily, warnings, meta (same meta format),
 *       user_cost, user_cum (DUPSORT|DUPFIXED: the cost per user and UTC hour,
 *       and each user's totals before a UTC day, that rank users, ledger/audit.c;
 *       added by a later build, made at open when missing)
 *
 * Writers: workers and admin handlers (ledger), billing (ledger and audit),
 * the CLI (init). Readers: every process except the master, and the CLI with
 * MDB_RDONLY while the server runs. LMDB serializes writers across processes
 * with its own mutex in lock.mdb; readers never block. A commit publishes
 * everything it wrote at once: another process's next read transaction sees
 * it (MDB_NOSYNC only delays the fsync, not visibility: every process maps
 * the same page cache).
 *
 * Crash behaviour: a process killed inside a write transaction loses that
 * transaction only (LMDB's robust mutex hands the lock to the next writer);
 * a process killed holding a read transaction keeps its reader slot, which
 * pins old pages until ta_store_reader_check() clears it. Power loss loses at
 * most the commits since the last ta_store_sync() (unless strict_durability).
 *
 * Format checks at open: meta "schema_version" of each environment must exist
 * and be <= TA_SCHEMA_VERSION; a newer one is refused with TA_ESCHEMA so an
 * older build never misreads newer records. Each record value carries its own
 * magic/rectype/version (schema.h), checked by ta_rec_decode.
 *
 * An MDB_env never crosses fork(): open the store in the process that uses it.
 * One handle per data directory per process: LMDB's fcntl locks belong to the
 * process, so closing a second handle would drop the first one's locks.
 *
 * Map size: a writable open sets the configured size; a read-only open takes
 * the size recorded in the file. If another process grew the map,
 * ta_txn_begin adopts the new size (MDB_MAP_RESIZED) and retries once.
 */
#include "ledger/store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_LEDGER_MAP ((size_t)1 << 30)
#define DEFAULT_AUDIT_MAP ((size_t)8 << 30)
#define DEFAULT_MAX_READERS 510
#define MAX_DBS 16 /* per environment; room for tables added later */

struct ta_store {
    char *data_dir;
    ta_store_opts_t opts;
    MDB_env *env[2];
    MDB_dbi dbi[TA_DB_COUNT];
    bool missing[TA_DB_COUNT]; /* a late database absent from a read-only open */
    char instance_id[33]; /* 32 hex chars; "" if the ledger has none */
};

static const char *const db_names[TA_DB_COUNT] = {
    [TA_DB_USERS] = "users",
    [TA_DB_USERS_BY_EMAIL] = "users_by_email",
    [TA_DB_PROVIDERS] = "providers",
    [TA_DB_MODELS] = "models",
    [TA_DB_MODELS_BY_NAME] = "models_by_name",
    [TA_DB_GROUPS] = "groups",
    [TA_DB_QUOTAS] = "quotas",
    [TA_DB_KEYS] = "keys",
    [TA_DB_BALANCES] = "balances",
    [TA_DB_HOLDS] = "holds",
    [TA_DB_REVOKED_JWT] = "revoked_jwt",
    [TA_DB_META] = "meta",
    [TA_DB_AUDIT_REQUESTS] = "requests",
    [TA_DB_AUDIT_BY_QUOTA] = "requests_by_quota",
    [TA_DB_AUDIT_DAILY] = "daily",
    [TA_DB_AUDIT_WARNINGS] = "warnings",
    [TA_DB_AUDIT_META] = "meta",
    [TA_DB_AUDIT_USER_COST] = "user_cost",
    [TA_DB_AUDIT_USER_CUM] = "user_cum",
};

/* Flags a database is made with, beyond MDB_CREATE (LMDB refuses to open a
 * DUPSORT database without them). */
static unsigned db_flags(ta_db_t db)
{
    return db == TA_DB_AUDIT_USER_COST || db == TA_DB_AUDIT_USER_CUM ? MDB_DUPSORT | MDB_DUPFIXED : 0;
}

/* A database added after the first release: a data directory of an earlier
 * build lacks it, and any writer's open makes it (see init_dbs). */
static bool db_late(ta_db_t db)
{
    return db == TA_DB_AUDIT_USER_COST || db == TA_DB_AUDIT_USER_CUM;
}

static const char *const env_names[2] = {"ledger", "audit"};

static inline ta_envid_t db_env(ta_db_t db)
{
    return db >= TA_DB_FIRST_AUDIT ? TA_ENV_AUDIT : TA_ENV_LEDGER;
}

static inline ta_db_t meta_db(ta_envid_t env)
{
    return env == TA_ENV_AUDIT ? TA_DB_AUDIT_META : TA_DB_META;
}

const char *ta_store_db_name(ta_db_t db)
{
    return (unsigned)db < TA_DB_COUNT ? db_names[db] : "?";
}

/* Map an LMDB return code: MAP_FULL is a capacity condition the caller can
 * report (TA_EFULL); anything else is logged with LMDB's own words. */
static int lmdb_err(int rc, const char *what, const char *detail)
{
    if (rc == MDB_MAP_FULL) {
        ta_log(TA_LOG_WARN, "lmdb %s%s%s: map full (raise the map size)", what,
               detail ? " " : "", detail ? detail : "");
        return TA_EFULL;
    }
    ta_log(TA_LOG_ERROR, "lmdb %s%s%s: %s", what, detail ? " " : "", detail ? detail : "",
           mdb_strerror(rc));
    return TA_ELMDB;
}

/* A DBI used with a transaction of the other environment reads garbage or
 * crashes inside LMDB; refuse it cheaply instead. */
static int check_txn_db(ta_store_t *st, MDB_txn *txn, ta_db_t db)
{
    if (!st || !txn || (unsigned)db >= TA_DB_COUNT) {
        ta_log(TA_LOG_ERROR, "store: bad database %d", (int)db);
        return TA_EINVAL;
    }
    if (mdb_txn_env(txn) != st->env[db_env(db)]) {
        ta_log(TA_LOG_ERROR, "store: database %s used with a transaction of the %s environment",
               db_names[db], db_env(db) == TA_ENV_LEDGER ? "audit" : "ledger");
        return TA_EINVAL;
    }
    return 0;
}

/* ---- open / close --------------------------------------------------------- */

static int path_join(char *buf, size_t cap, const char *a, const char *b)
{
    int n = snprintf(buf, cap, "%s/%s", a, b);
    if (n < 0 || (size_t)n >= cap)
        return TA_ETOOBIG;
    return 0;
}

static int make_dir(const char *path)
{
    if (mkdir(path, 0700) == -1 && errno != EEXIST) {
        int e = errno;
        ta_log(TA_LOG_ERROR, "store: cannot create directory %s: %s", path, strerror(e));
        return -e;
    }
    return 0;
}

static int random_bytes(uint8_t *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = getrandom(buf + got, len - got, 0);
        if (n == -1) {
            if (errno == EINTR)
                continue;
            break;
        }
        got += (size_t)n;
    }
    if (got == len)
        return 0;
    /* getrandom missing (old kernel/seccomp): fall back to the device. */
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return -errno;
    got = 0;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n <= 0) {
            if (n == -1 && errno == EINTR)
                continue;
            close(fd);
            return n == -1 ? -errno : -EIO;
        }
        got += (size_t)n;
    }
    close(fd);
    return 0;
}

static int open_env(ta_store_t *st, ta_envid_t id, const char *dir, size_t map_size)
{
    MDB_env *env = NULL;
    int rc;
    unsigned flags = MDB_NOTLS;

    if (!st->opts.strict_durability)
        flags |= MDB_NOSYNC;
    if (st->opts.writemap && !st->opts.readonly)
        flags |= MDB_WRITEMAP | MDB_NOMETASYNC;
    if (st->opts.readonly)
        flags |= MDB_RDONLY;

    if ((rc = mdb_env_create(&env)) != 0)
        return lmdb_err(rc, "env_create", dir);
    /* A read-only handle takes the map size recorded in the file, so a CLI
     * reader never disagrees with the server about it. */
    if (!st->opts.readonly && (rc = mdb_env_set_mapsize(env, map_size)) != 0)
        goto Fail;
    if ((rc = mdb_env_set_maxreaders(env, st->opts.max_readers)) != 0)
        goto Fail;
    if ((rc = mdb_env_set_maxdbs(env, MAX_DBS)) != 0)
        goto Fail;
    if ((rc = mdb_env_open(env, dir, flags, 0600)) != 0)
        goto Fail;
    st->env[id] = env;
    return 0;
Fail:
    mdb_env_close(env);
    return lmdb_err(rc, "env_open", dir);
}

static int meta_get_raw(MDB_txn *txn, MDB_dbi dbi, const char *name, MDB_val *v)
{
    MDB_val k = {.mv_size = strlen(name), .mv_data = (void *)name};
    return mdb_get(txn, dbi, &k, v);
}

static int meta_put_raw(MDB_txn *txn, MDB_dbi dbi, const char *name, const void *val, size_t len)
{
    MDB_val k = {.mv_size = strlen(name), .mv_data = (void *)name};
    MDB_val v = {.mv_size = len, .mv_data = (void *)val};
    return mdb_put(txn, dbi, &k, &v, 0);
}

/* Open (and with create, make) every named database of one environment,
 * checking or writing its schema version in the same transaction. */
static int init_dbs(ta_store_t *st, ta_envid_t id, const char *dir)
{
    bool create = st->opts.create;
    MDB_txn *txn = NULL;
    MDB_val v;
    int rc, ret = 0;
    ta_db_t first = id == TA_ENV_LEDGER ? 0 : TA_DB_FIRST_AUDIT;
    ta_db_t last = id == TA_ENV_LEDGER ? TA_DB_FIRST_AUDIT : TA_DB_COUNT;
    ta_db_t meta = meta_db(id);

    if ((rc = mdb_txn_begin(st->env[id], NULL, create ? 0 : MDB_RDONLY, &txn)) != 0)
        return lmdb_err(rc, "txn_begin", dir);

    rc = mdb_dbi_open(txn, "meta", create ? MDB_CREATE : 0, &st->dbi[meta]);
    if (rc == MDB_NOTFOUND) {
        ta_log(TA_LOG_ERROR, "data directory %s has no meta database; run tokenaudit init", dir);
        ret = TA_ESCHEMA;
        goto Exit;
    }
    if (rc) {
        ret = lmdb_err(rc, "dbi_open meta", dir);
        goto Exit;
    }

    rc = meta_get_raw(txn, st->dbi[meta], "schema_version", &v);
    if (rc == MDB_NOTFOUND && create) {
        uint8_t be[8];
        ta_be64_put(be, TA_SCHEMA_VERSION);
        if ((rc = meta_put_raw(txn, st->dbi[meta], "schema_version", be, 8)) != 0) {
            ret = lmdb_err(rc, "put meta", dir);
            goto Exit;
        }
    } else if (rc == MDB_NOTFOUND) {
        ta_log(TA_LOG_ERROR, "data directory %s has no schema_version; run tokenaudit init", dir);
        ret = TA_ESCHEMA;
        goto Exit;
    } else if (rc) {
        ret = lmdb_err(rc, "get schema_version", dir);
        goto Exit;
    } else if (v.mv_size != 8) {
        ta_log(TA_LOG_ERROR, "data directory %s: schema_version is %zu bytes, not 8", dir,
               v.mv_size);
        ret = TA_ECORRUPT;
        goto Exit;
    } else {
        uint64_t ver = ta_be64_get(v.mv_data);
        if (ver > TA_SCHEMA_VERSION) {
            ta_log(TA_LOG_ERROR,
                   "data directory %s was written by schema version %llu; this build "
                   "understands up to %d; upgrade tokenaudit",
                   st->data_dir, (unsigned long long)ver, TA_SCHEMA_VERSION);
            ret = TA_ESCHEMA;
            goto Exit;
        }
    }

    /* One instance id names the pair: the audit environment gets the
     * ledger's, so an audit directory from another installation stands out. */
    rc = meta_get_raw(txn, st->dbi[meta], "instance_id", &v);
    if (rc == 0 && v.mv_size == 32) {
        if (!st->instance_id[0])
            memcpy(st->instance_id, v.mv_data, 32);
        else if (memcmp(st->instance_id, v.mv_data, 32) != 0)
            ta_log(TA_LOG_WARN, "data directory %s: the audit environment belongs to instance %.32s, "
                   "the ledger to %s", st->data_dir, (const char *)v.mv_data, st->instance_id);
    } else if (rc == MDB_NOTFOUND && create) {
        if (!st->instance_id[0]) {
            uint8_t rnd[16];
            if ((ret = random_bytes(rnd, sizeof(rnd))) != 0) {
                ta_log(TA_LOG_ERROR, "store: no random bytes for the instance id: %s",
                       ta_strerror(ret));
                goto Exit;
            }
            for (size_t i = 0; i < sizeof(rnd); i++)
                snprintf(st->instance_id + 2 * i, 3, "%02x", rnd[i]);
        }
        if ((rc = meta_put_raw(txn, st->dbi[meta], "instance_id", st->instance_id, 32)) != 0) {
            ret = lmdb_err(rc, "put meta", dir);
            goto Exit;
        }
    } else if (rc && rc != MDB_NOTFOUND) {
        ret = lmdb_err(rc, "get instance_id", dir);
        goto Exit;
    }

    bool make_late = false;
    for (ta_db_t db = first; db < last; db++) {
        if (db == meta)
            continue;
        rc = mdb_dbi_open(txn, db_names[db], db_flags(db) | (create ? MDB_CREATE : 0), &st->dbi[db]);
        if (rc == MDB_NOTFOUND && db_late(db)) {
            /* an earlier build's directory: made below, or absent read-only */
            st->missing[db] = st->opts.readonly;
            make_late |= !st->opts.readonly;
            continue;
        }
        if (rc == MDB_NOTFOUND) {
            ta_log(TA_LOG_ERROR, "data directory %s has no database %s; run tokenaudit init", dir,
                   db_names[db]);
            ret = TA_ESCHEMA;
            goto Exit;
        }
        if (rc) {
            ret = lmdb_err(rc, "dbi_open", db_names[db]);
            goto Exit;
        }
    }

    /* Even a read transaction must commit (not abort) to keep its DBIs. */
    rc = mdb_txn_commit(txn);
    txn = NULL;
    if (rc) {
        ret = lmdb_err(rc, "commit", dir);
        goto Exit;
    }
    /* The databases a later build added, in one write transaction of their
     * own (LMDB serializes it with every other writer; a second process
     * finds them made). */
    if (make_late) {
        if ((rc = mdb_txn_begin(st->env[id], NULL, 0, &txn)) != 0)
            return lmdb_err(rc, "txn_begin", dir);
        for (ta_db_t db = first; db < last && rc == 0; db++)
            if (db_late(db))
                rc = mdb_dbi_open(txn, db_names[db], db_flags(db) | MDB_CREATE, &st->dbi[db]);
        if (rc != 0) {
            ret = lmdb_err(rc, "dbi_open (create)", dir);
            goto Exit;
        }
        rc = mdb_txn_commit(txn);
        txn = NULL;
        if (rc)
            ret = lmdb_err(rc, "commit", dir);
        else
            ta_log(TA_LOG_INFO, "data directory %s: made the databases of this build", dir);
    }
Exit:
    if (txn)
        mdb_txn_abort(txn);
    return ret;
}

int ta_store_open(ta_store_t **out, const char *data_dir, const ta_store_opts_t *opts)
{
    ta_store_t *st = NULL;
    char dirs[2][4096], file[4200];
    struct stat sb;
    int ret = 0;

    *out = NULL;
    if (!data_dir || !*data_dir)
        return TA_EINVAL;
    if (opts && opts->create && opts->readonly) {
        ta_log(TA_LOG_ERROR, "store: create and readonly together make no sense");
        return TA_EINVAL;
    }
    if (!(st = calloc(1, sizeof(*st))))
        return -ENOMEM;
    if (opts)
        st->opts = *opts;
    if (!st->opts.ledger_map_size)
        st->opts.ledger_map_size = DEFAULT_LEDGER_MAP;
    if (!st->opts.audit_map_size)
        st->opts.audit_map_size = DEFAULT_AUDIT_MAP;
    if (!st->opts.max_readers)
        st->opts.max_readers = DEFAULT_MAX_READERS;
    if (!(st->data_dir = strdup(data_dir))) {
        ret = -ENOMEM;
        goto Exit;
    }

    for (int e = 0; e < 2; e++) {
        if ((ret = path_join(dirs[e], sizeof(dirs[e]), data_dir, env_names[e])) != 0)
            goto Exit;
    }

    if (st->opts.create) {
        if ((ret = make_dir(data_dir)) != 0 || (ret = make_dir(dirs[0])) != 0 ||
            (ret = make_dir(dirs[1])) != 0)
            goto Exit;
    } else {
        /* LMDB would silently create an empty data.mdb; a missing one means
         * a wrong data_dir or an uninitialized one, which the operator must hear. */
        for (int e = 0; e < 2; e++) {
            if ((ret = path_join(file, sizeof(file), dirs[e], "data.mdb")) != 0)
                goto Exit;
            if (stat(file, &sb) == -1) {
                int err = errno;
                ta_log(TA_LOG_ERROR, "data directory %s: no %s environment (%s: %s); run tokenaudit init",
                       data_dir, env_names[e], file, strerror(err));
                ret = err == ENOENT ? TA_ENOTFOUND : -err;
                goto Exit;
            }
        }
    }

    if ((ret = open_env(st, TA_ENV_LEDGER, dirs[0], st->opts.ledger_map_size)) != 0 ||
        (ret = open_env(st, TA_ENV_AUDIT, dirs[1], st->opts.audit_map_size)) != 0)
        goto Exit;
    if ((ret = init_dbs(st, TA_ENV_LEDGER, dirs[0])) != 0 ||
        (ret = init_dbs(st, TA_ENV_AUDIT, dirs[1])) != 0)
        goto Exit;

    *out = st;
    st = NULL;
Exit:
    if (st) {
        for (int e = 0; e < 2; e++)
            if (st->env[e])
                mdb_env_close(st->env[e]);
        free(st->data_dir);
        free(st);
    }
    return ret;
}

void ta_store_close(ta_store_t *st)
{
    if (!st)
        return;
    /* Clean exit syncs, so NOSYNC only ever risks a power loss, not a restart. */
    if (!st->opts.readonly)
        ta_store_sync(st);
    for (int e = 0; e < 2; e++)
        if (st->env[e])
            mdb_env_close(st->env[e]);
    free(st->data_dir);
    free(st);
}

const char *ta_store_data_dir(const ta_store_t *st) { return st->data_dir; }

const char *ta_store_instance_id(const ta_store_t *st) { return st->instance_id; }

MDB_env *ta_store_env(ta_store_t *st, ta_envid_t env) { return st->env[env]; }

MDB_dbi ta_store_dbi(ta_store_t *st, ta_db_t db) { return st->dbi[db]; }

bool ta_store_has_db(const ta_store_t *st, ta_db_t db) { return !st->missing[db]; }

/* ---- transactions ---------------------------------------------------------- */

int ta_txn_begin(ta_store_t *st, ta_envid_t env, bool write, MDB_txn **out)
{
    int rc = mdb_txn_begin(st->env[env], NULL, write ? 0 : MDB_RDONLY, out);
    if (rc == MDB_MAP_RESIZED) {
        /* Another process grew the map: adopt its size and retry once. */
        rc = mdb_env_set_mapsize(st->env[env], 0);
        if (rc == 0)
            rc = mdb_txn_begin(st->env[env], NULL, write ? 0 : MDB_RDONLY, out);
    }
    if (rc) {
        *out = NULL;
        return lmdb_err(rc, write ? "write txn_begin" : "read txn_begin", env_names[env]);
    }
    return 0;
}

int ta_txn_commit(MDB_txn *txn)
{
    int rc = mdb_txn_commit(txn); /* frees txn on failure too */
    return rc ? lmdb_err(rc, "commit", NULL) : 0;
}

void ta_txn_abort(MDB_txn *txn)
{
    if (txn)
        mdb_txn_abort(txn);
}

int ta_store_sync(ta_store_t *st)
{
    int ret = 0;
    if (st->opts.readonly)
        return 0;
    for (int e = 0; e < 2; e++) {
        int rc = mdb_env_sync(st->env[e], 1);
        if (rc && !ret)
            ret = lmdb_err(rc, "env_sync", env_names[e]);
    }
    return ret;
}

int ta_store_reader_check(ta_store_t *st)
{
    int total = 0;
    for (int e = 0; e < 2; e++) {
        int dead = 0;
        int rc = mdb_reader_check(st->env[e], &dead);
        if (rc)
            return lmdb_err(rc, "reader_check", env_names[e]);
        if (dead > 0)
            ta_log(TA_LOG_INFO, "store: cleared %d stale reader slot(s) in %s", dead, env_names[e]);
        total += dead;
    }
    return total;
}

/* ---- records ----------------------------------------------------------------- */

ta_db_t ta_rec_db(const ta_recdesc_t *d)
{
    switch (d ? d->rectype : 0) {
    case TA_REC_USER: return TA_DB_USERS;
    case TA_REC_PROVIDER: return TA_DB_PROVIDERS;
    case TA_REC_MODEL: return TA_DB_MODELS;
    case TA_REC_GROUP: return TA_DB_GROUPS;
    case TA_REC_QUOTA: return TA_DB_QUOTAS;
    case TA_REC_KEY: return TA_DB_KEYS;
    case TA_REC_BALANCE: return TA_DB_BALANCES;
    case TA_REC_HOLD: return TA_DB_HOLDS;
    case TA_REC_REVOKED: return TA_DB_REVOKED_JWT;
    case TA_REC_AUDIT: return TA_DB_AUDIT_REQUESTS;
    case TA_REC_DAILY: return TA_DB_AUDIT_DAILY;
    case TA_REC_WARNING: return TA_DB_AUDIT_WARNINGS;
    default: return TA_DB_COUNT; /* embedded types (route, limits) have no table */
    }
}

static int rec_table(ta_store_t *st, MDB_txn *txn, const ta_recdesc_t *d, ta_db_t *db)
{
    *db = ta_rec_db(d);
    if (*db == TA_DB_COUNT) {
        ta_log(TA_LOG_ERROR, "store: record type %s has no table", d ? d->name : "(null)");
        return TA_EINVAL;
    }
    return check_txn_db(st, txn, *db);
}

int ta_rec_next_id(ta_store_t *st, MDB_txn *txn, const ta_recdesc_t *d, uint64_t *id)
{
    char name[64];
    uint64_t next = 1;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    ta_db_t db;
    int rc, ret;

    if ((ret = rec_table(st, txn, d, &db)) != 0)
        return ret;
    snprintf(name, sizeof(name), "next_id.%s", db_names[db]);
    ret = ta_meta_get_u64(st, txn, db_env(db), name, &next);
    if (ret == TA_ENOTFOUND)
        next = 1;
    else if (ret)
        return ret;
    if (next == 0)
        next = 1; /* 0 means "none" in every record */

    /* Never hand out an id already in the table, even if meta was lost or a
     * record was put under an explicit id. */
    if ((rc = mdb_cursor_open(txn, st->dbi[db], &cur)) != 0)
        return lmdb_err(rc, "cursor_open", db_names[db]);
    rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    mdb_cursor_close(cur);
    if (rc == 0 && k.mv_size == 8) {
        uint64_t last = ta_be64_get(k.mv_data);
        if (last >= next)
            next = last + 1;
    } else if (rc && rc != MDB_NOTFOUND) {
        return lmdb_err(rc, "cursor_get last", db_names[db]);
    }
    if (next == UINT64_MAX)
        return TA_EFULL;
    if ((ret = ta_meta_put_u64(st, txn, db_env(db), name, next + 1)) != 0)
        return ret;
    *id = next;
    return 0;
}

int ta_rec_get_k(ta_store_t *st, MDB_txn *txn, const ta_recdesc_t *d, ta_db_t db, const void *key,
                 size_t klen, void *rec)
{
    MDB_val k = {.mv_size = klen, .mv_data = (void *)key}, v;
    int rc, ret;

    if ((ret = check_txn_db(st, txn, db)) != 0)
        return ret;
    rc = mdb_get(txn, st->dbi[db], &k, &v);
    if (rc == MDB_NOTFOUND)
        return TA_ENOTFOUND;
    if (rc)
        return lmdb_err(rc, "get", db_names[db]);
    ret = ta_rec_decode(d, v.mv_data, v.mv_size, rec);
    if (ret)
        ta_log(TA_LOG_ERROR, "store: undecodable %s record in %s: %s", d->name, db_names[db],
               ta_strerror(ret));
    return ret;
}

int ta_rec_put_k(ta_store_t *st, MDB_txn *txn, const ta_recdesc_t *d, ta_db_t db, const void *key,
                 size_t klen, const void *rec)
{
    uint8_t buf[TA_REC_MAX_ENCODED];
    MDB_val k = {.mv_size = klen, .mv_data = (void *)key}, v;
    int rc, ret, len;

    if ((ret = check_txn_db(st, txn, db)) != 0)
        return ret;
    if (klen == 0 || klen > (size_t)mdb_env_get_maxkeysize(st->env[db_env(db)]))
        return TA_ETOOBIG;
    len = ta_rec_encode(d, rec, buf, sizeof(buf));
    if (len < 0)
        return len;
    v.mv_size = (size_t)len;
    v.mv_data = buf;
    rc = mdb_put(txn, st->dbi[db], &k, &v, 0);
    return rc ? lmdb_err(rc, "put", db_names[db]) : 0;
}

int ta_kv_del(ta_store_t *st, MDB_txn *txn, ta_db_t db, const void *key, size_t klen)
{
    MDB_val k = {.mv_size = klen, .mv_data = (void *)key};
    int rc, ret;

    if ((ret = check_txn_db(st, txn, db)) != 0)
        return ret;
    if (klen == 0)
        return TA_ENOTFOUND;
    rc = mdb_del(txn, st->dbi[db], &k, NULL);
    if (rc == MDB_NOTFOUND)
        return TA_ENOTFOUND;
    return rc ? lmdb_err(rc, "del", db_names[db]) : 0;
}

int ta_rec_get(ta_store_t *st, MDB_txn *txn, const ta_recdesc_t *d, uint64_t id, void *rec)
{
    uint8_t key[8];
    ta_db_t db;
    int ret = rec_table(st, txn, d, &db);
    if (ret)
        return ret;
    ta_be64_put(key, id);
    return ta_rec_get_k(st, txn, d, db, key, 8, rec);
}

int ta_rec_put(ta_store_t *st, MDB_txn *txn, const ta_recdesc_t *d, uint64_t id, const void *rec)
{
    uint8_t key[8];
    ta_db_t db;
    int ret = rec_table(st, txn, d, &db);
    if (ret)
        return ret;
    ta_be64_put(key, id);
    return ta_rec_put_k(st, txn, d, db, key, 8, rec);
}

int ta_rec_del(ta_store_t *st, MDB_txn *txn, const ta_recdesc_t *d, uint64_t id)
{
    uint8_t key[8];
    ta_db_t db;
    int ret = rec_table(st, txn, d, &db);
    if (ret)
        return ret;
    ta_be64_put(key, id);
    return ta_kv_del(st, txn, db, key, 8);
}

/* One cursor walk shared by the id-keyed and the binary-keyed variants.
 * by_id walks may start past an id (from > 0: ids above it, or below it when
 * backward) without reading what comes before: MDB_SET_RANGE positions the
 * cursor in O(log n). */
static int walk_from(ta_store_t *st, MDB_txn *txn, const ta_recdesc_t *d, ta_db_t db, bool by_id,
                     uint64_t from, bool backward, ta_rec_walk_cb id_cb, ta_rec_walk_k_cb k_cb,
                     void *arg)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    void *rec = NULL;
    int rc, ret;

    if ((ret = check_txn_db(st, txn, db)) != 0)
        return ret;
    if (!(rec = malloc(d->size)))
        return -ENOMEM;
    if ((rc = mdb_cursor_open(txn, st->dbi[db], &cur)) != 0) {
        ret = lmdb_err(rc, "cursor_open", db_names[db]);
        goto Exit;
    }
    if (from == 0) {
        rc = mdb_cursor_get(cur, &k, &v, backward ? MDB_LAST : MDB_FIRST);
    } else {
        uint8_t start[8];
        ta_be64_put(start, backward ? from : from + 1); /* from + 1: no wrap, ids < UINT64_MAX */
        k.mv_size = sizeof(start);
        k.mv_data = start;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (backward) /* the first key >= from, or none: step to the one before */
            rc = mdb_cursor_get(cur, &k, &v, rc == MDB_NOTFOUND ? MDB_LAST : MDB_PREV);
    }
    for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, backward ? MDB_PREV : MDB_NEXT)) {
        if (by_id && k.mv_size != 8) {
            ta_log(TA_LOG_ERROR, "store: %s has a %zu-byte key where an id belongs", db_names[db],
                   k.mv_size);
            ret = TA_ECORRUPT;
            goto Exit;
        }
        if ((ret = ta_rec_decode(d, v.mv_data, v.mv_size, rec)) != 0) {
            ta_log(TA_LOG_ERROR, "store: undecodable %s record in %s: %s", d->name, db_names[db],
                   ta_strerror(ret));
            goto Exit;
        }
        ret = by_id ? id_cb(ta_be64_get(k.mv_data), rec, arg) : k_cb(k.mv_data, k.mv_size, rec, arg);
        if (ret < 0)
            goto Exit;
        if (ret > 0) {
            ret = 0;
            goto Exit;
        }
    }
    if (rc != MDB_NOTFOUND)
        ret = lmdb_err(rc, "cursor_get", db_names[db]);
Exit:
    if (cur)
        mdb_cursor_close(cur);
    free(rec);
    return ret;
}

int ta_rec_walk(ta_store_t *st, MDB_txn *txn, const ta_recdesc_t *d, ta_rec_walk_cb cb, void *arg)
{
    ta_db_t db;
    int ret = rec_table(st, txn, d, &db);
    if (ret)
        return ret;
    return walk_from(st, txn, d, db, true, 0, false, cb, NULL, arg);
}

int ta_rec_walk_from(ta_store_t *st, MDB_txn *txn, const ta_recdesc_t *d, uint64_t from,
                     bool backward, ta_rec_walk_cb cb, void *arg)
{
    ta_db_t db;
    int ret = rec_table(st, txn, d, &db);
    if (ret)
        return ret;
    return walk_from(st, txn, d, db, true, from, backward, cb, NULL, arg);
}

int ta_rec_count(ta_store_t *st, MDB_txn *txn, ta_db_t db, uint64_t *n)
{
    MDB_stat ms;
    int rc, ret;

    if ((ret = check_txn_db(st, txn, db)) != 0)
        return ret;
    if ((rc = mdb_stat(txn, st->dbi[db], &ms)) != 0)
        return lmdb_err(rc, "stat", db_names[db]);
    *n = ms.ms_entries;
    return 0;
}

int ta_rec_walk_k(ta_store_t *st, MDB_txn *txn, const ta_recdesc_t *d, ta_db_t db,
                  ta_rec_walk_k_cb cb, void *arg)
{
    if (!d)
        return TA_EINVAL;
    return walk_from(st, txn, d, db, false, 0, false, NULL, cb, arg);
}

/* ---- unique string indexes ------------------------------------------------- */

static int idx_key(ta_store_t *st, ta_db_t db, const char *name, MDB_val *k)
{
    size_t len = name ? strlen(name) : 0;
    if (len == 0)
        return TA_EINVAL;
    if (len > (size_t)mdb_env_get_maxkeysize(st->env[db_env(db)]))
        return TA_ETOOBIG;
    k->mv_size = len;
    k->mv_data = (void *)name;
    return 0;
}

int ta_idx_get(ta_store_t *st, MDB_txn *txn, ta_db_t db, const char *name, uint64_t *id)
{
    MDB_val k, v;
    int rc, ret;

    if ((ret = check_txn_db(st, txn, db)) != 0)
        return ret;
    /* an empty name or one too long for a key was never stored: a lookup
     * (a login with "email": "") finds nothing rather than failing */
    if ((ret = idx_key(st, db, name, &k)) != 0)
        return ret == TA_ETOOBIG || ret == TA_EINVAL ? TA_ENOTFOUND : ret;
    rc = mdb_get(txn, st->dbi[db], &k, &v);
    if (rc == MDB_NOTFOUND)
        return TA_ENOTFOUND;
    if (rc)
        return lmdb_err(rc, "get", db_names[db]);
    if (v.mv_size != 8) {
        ta_log(TA_LOG_ERROR, "store: %s value is %zu bytes, not an id", db_names[db], v.mv_size);
        return TA_ECORRUPT;
    }
    *id = ta_be64_get(v.mv_data);
    return 0;
}

int ta_idx_put(ta_store_t *st, MDB_txn *txn, ta_db_t db, const char *name, uint64_t id)
{
    uint8_t be[8];
    MDB_val k, v = {.mv_size = 8, .mv_data = be};
    uint64_t old;
    int rc, ret;

    if ((ret = check_txn_db(st, txn, db)) != 0)
        return ret;
    if ((ret = idx_key(st, db, name, &k)) != 0)
        return ret;
    ret = ta_idx_get(st, txn, db, name, &old);
    if (ret == 0)
        return old == id ? 0 : TA_EEXIST;
    if (ret != TA_ENOTFOUND)
        return ret;
    ta_be64_put(be, id);
    rc = mdb_put(txn, st->dbi[db], &k, &v, MDB_NOOVERWRITE);
    if (rc == MDB_KEYEXIST)
        return TA_EEXIST;
    return rc ? lmdb_err(rc, "put", db_names[db]) : 0;
}

int ta_idx_del(ta_store_t *st, MDB_txn *txn, ta_db_t db, const char *name)
{
    MDB_val k;
    int ret;

    if ((ret = check_txn_db(st, txn, db)) != 0)
        return ret;
    if ((ret = idx_key(st, db, name, &k)) != 0)
        return ret == TA_ETOOBIG ? TA_ENOTFOUND : ret;
    return ta_kv_del(st, txn, db, k.mv_data, k.mv_size);
}

/* ---- meta ------------------------------------------------------------------ */

int ta_meta_get_u64(ta_store_t *st, MDB_txn *txn, ta_envid_t env, const char *name, uint64_t *out)
{
    ta_db_t db = meta_db(env);
    MDB_val v;
    int rc, ret;

    if ((ret = check_txn_db(st, txn, db)) != 0)
        return ret;
    if (!name || !*name)
        return TA_EINVAL;
    rc = meta_get_raw(txn, st->dbi[db], name, &v);
    if (rc == MDB_NOTFOUND)
        return TA_ENOTFOUND;
    if (rc)
        return lmdb_err(rc, "get meta", name);
    if (v.mv_size != 8) {
        ta_log(TA_LOG_ERROR, "store: meta %s of %s is %zu bytes, not a u64", name, env_names[env],
               v.mv_size);
        return TA_ECORRUPT;
    }
    *out = ta_be64_get(v.mv_data);
    return 0;
}

int ta_meta_put_u64(ta_store_t *st, MDB_txn *txn, ta_envid_t env, const char *name, uint64_t val)
{
    ta_db_t db = meta_db(env);
    uint8_t be[8];
    int rc, ret;

    if ((ret = check_txn_db(st, txn, db)) != 0)
        return ret;
    if (!name || !*name)
        return TA_EINVAL;
    ta_be64_put(be, val);
    rc = meta_put_raw(txn, st->dbi[db], name, be, 8);
    return rc ? lmdb_err(rc, "put meta", name) : 0;
}
