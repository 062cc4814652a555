/*
 * backup.c - a consistent copy of a live data directory (backup.h).
 *
 *   source DATA_DIR (server running)            DEST.partial-PID  -> rename -> DEST
 *     ledger/data.mdb  --read txn L-----+         ledger/data.mdb   (fresh env, compact)
 *     audit/data.mdb   --read txn A-----+-------> audit/data.mdb    (fresh env, compact)
 *     jwt.secret, master.key  ---copy (0600)----> jwt.secret, master.key
 *     ring             (not copied: the restored gateway makes a new one)
 *
 * Why two mdb_copy runs are wrong: billing applies each batch of ring tickets
 * in two transactions, ledger first and audit second, each storing the last
 * ticket it applied in its env's meta (billing.c). Two copies taken at two
 * moments hold the ledger as of one ticket and the audit log as of another,
 * so cost_used and the sum of the audit records differ by whatever billing
 * applied in between. The ring cannot repair that afterwards: billing frees
 * a ticket's slot as soon as both envs committed it, so the events between
 * the two copies are gone from the ring by the time the second copy ends.
 *
 * The argument: take one read transaction on each env such that both metas
 * name the same applied ticket T (ta_backup_read_pair; retried while billing
 * is between its two commits, the same pairing `ledger verify` relies on).
 * An LMDB read transaction is a snapshot that later commits never change, so
 * the two snapshots are the books after exactly tickets 1..T, whatever
 * billing does while we copy. mdb_env_copy2() cannot be used: it begins its
 * own read transaction at a moment we do not choose (LMDB 0.9.24 has no copy
 * call taking a transaction). So the copy is logical: every named database
 * of each snapshot is walked with a cursor and appended (MDB_APPEND, keys in
 * order) to a fresh env. A fresh env written in key order has no free pages
 * and full leaves, which is what mdb_copy -c (MDB_CP_COMPACT) produces: every
 * backup is compact, and `--compact` only says so.
 *
 * What the server sees: two readers for the length of the copy. Readers never
 * block writers; like any long reader (and mdb_copy) they keep the pages of
 * their snapshot from reuse, so a busy env may grow while a large copy runs.
 * Billing is never paused.
 *
 * Holds: a hold in the snapshot belongs to a worker of the source server; in
 * the copy nothing owns it. Each hold is written with worker_pid
 * TA_BACKUP_HOLD_PID, a pid no process has, so the restored gateway's
 * billing finds its owner gone at its first sweep and releases it with an
 * aborted audit record, as for the workers of a killed master. Holds of a
 * copy are thus never left waiting for an unrelated process that happens to
 * have the old pid. The applied ticket and ring_id are copied as they are;
 * the restored gateway's ring has a new ring_id, so billing starts both envs
 * at that ring's first ticket (billing.c applied_get).
 *
 * Death mid-copy: everything is written under DEST.partial-PID, synced, and
 * renamed to DEST last, so DEST never names a partial copy; a failed run
 * removes its partial directory (a killed one leaves it, with its name
 * saying what it is). Secret files are created O_EXCL with mode 0600.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ledger/backup.h"

#define COMMIT_EVERY 65536 /* puts per write transaction: bounds the dirty pages held */
#define MAX_NAMED 64       /* named databases per environment we are ready to copy */
#define SECRET_MAX 4096

int ta_backup_read_pair(ta_store_t *st, int wait_ms, MDB_txn **ltxn, MDB_txn **atxn,
                        uint64_t *ticket)
{
    *ltxn = *atxn = NULL;
    for (int waited = 0;; waited += 20) {
        uint64_t la = 0, aa = 0;
        int rc;
        if ((rc = ta_txn_begin(st, TA_ENV_LEDGER, false, ltxn)) != 0)
            return rc;
        if ((rc = ta_txn_begin(st, TA_ENV_AUDIT, false, atxn)) != 0) {
            ta_txn_abort(*ltxn);
            *ltxn = NULL;
            return rc;
        }
        rc = ta_meta_get_u64(st, *ltxn, TA_ENV_LEDGER, "applied_ticket", &la);
        if (rc == 0 || rc == TA_ENOTFOUND)
            rc = ta_meta_get_u64(st, *atxn, TA_ENV_AUDIT, "applied_ticket", &aa);
        if (rc != 0 && rc != TA_ENOTFOUND) {
            ta_txn_abort(*atxn);
            ta_txn_abort(*ltxn);
            *ltxn = *atxn = NULL;
            return rc;
        }
        if (la == aa) {
            *ticket = la;
            return 0;
        }
        ta_txn_abort(*atxn);
        ta_txn_abort(*ltxn);
        *ltxn = *atxn = NULL;
        if (waited >= wait_ms)
            return TA_EBUSY;
        struct timespec ts = {0, 20000000L};
        nanosleep(&ts, NULL);
    }
}

static int lmdb_fail(FILE *log, int rc, const char *what, const char *where)
{
    if (log)
        fprintf(log, "tokenaudit: backup: %s (%s): %s\n", what, where, mdb_strerror(rc));
    return TA_ELMDB;
}

/* dir/name into buf; the destination's length is checked up front, so this
 * only fails on a bug */
static int join(char *buf, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(buf, cap, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

/* A hold re-owned by TA_BACKUP_HOLD_PID (the comment at the top). A value
 * that does not decode is copied as it is: the copy holds what the source
 * holds, and `ledger verify` reports it the same way. */
static int reown_hold(const MDB_val *v, uint8_t *buf, size_t cap, MDB_val *out)
{
    ta_hold_t h;
    if (ta_rec_decode(&ta_desc_hold, v->mv_data, v->mv_size, &h) != 0) {
        *out = *v;
        return 0;
    }
    h.worker_pid = TA_BACKUP_HOLD_PID;
    int n = ta_rec_encode(&ta_desc_hold, &h, buf, cap);
    if (n < 0)
        return n;
    out->mv_data = buf;
    out->mv_size = (size_t)n;
    return 1;
}

typedef struct envcopy {
    ta_store_t *st;
    ta_envid_t id;
    MDB_txn *rtxn;  /* the snapshot (not ours to end) */
    const char *dir; /* destination env directory, created */
    FILE *log;
    uint64_t entries, holds;
} envcopy_t;

/* One named database: walk the snapshot in key order and append. */
static int copy_db(envcopy_t *c, MDB_env *denv, const char *name, MDB_txn **wtxn, size_t *pending,
                   uint8_t *buf)
{
    MDB_dbi sdbi, ddbi;
    unsigned flags = 0;
    MDB_cursor *sc = NULL, *dc = NULL;
    MDB_val k, v;
    int rc, mrc;
    if ((mrc = mdb_dbi_open(c->rtxn, name, 0, &sdbi)) != 0 ||
        (mrc = mdb_dbi_flags(c->rtxn, sdbi, &flags)) != 0)
        return lmdb_fail(c->log, mrc, "open source database", name);
    flags &= MDB_REVERSEKEY | MDB_DUPSORT | MDB_INTEGERKEY | MDB_DUPFIXED | MDB_INTEGERDUP |
             MDB_REVERSEDUP;
    if ((mrc = mdb_dbi_open(*wtxn, name, MDB_CREATE | flags, &ddbi)) != 0)
        return lmdb_fail(c->log, mrc, "create database", name);
    bool holds = c->id == TA_ENV_LEDGER && sdbi == ta_store_dbi(c->st, TA_DB_HOLDS);
    if ((mrc = mdb_cursor_open(c->rtxn, sdbi, &sc)) != 0)
        return lmdb_fail(c->log, mrc, "cursor", name);
    rc = 0;
    for (mrc = mdb_cursor_get(sc, &k, &v, MDB_FIRST); mrc == 0;
         mrc = mdb_cursor_get(sc, &k, &v, MDB_NEXT)) {
        if (dc == NULL && (mrc = mdb_cursor_open(*wtxn, ddbi, &dc)) != 0)
            break;
        MDB_val out = v;
        if (holds) {
            int r = reown_hold(&v, buf, TA_REC_MAX_ENCODED, &out);
            if (r < 0) {
                rc = r;
                break;
            }
            c->holds += (uint64_t)r;
        }
        unsigned put = (flags & MDB_DUPSORT) ? MDB_APPENDDUP : MDB_APPEND;
        if ((mrc = mdb_cursor_put(dc, &k, &out, put)) != 0)
            break;
        c->entries++;
        if (++*pending >= COMMIT_EVERY) {
            mdb_cursor_close(dc);
            dc = NULL;
            *pending = 0;
            if ((mrc = mdb_txn_commit(*wtxn)) != 0) {
                *wtxn = NULL;
                break;
            }
            if ((mrc = mdb_txn_begin(denv, NULL, 0, wtxn)) != 0) {
                *wtxn = NULL;
                break;
            }
        }
    }
    if (dc != NULL)
        mdb_cursor_close(dc);
    mdb_cursor_close(sc);
    if (rc == 0 && mrc != MDB_NOTFOUND)
        rc = lmdb_fail(c->log, mrc, "copy database", name);
    return rc;
}

/* The names of the snapshot's named databases: the keys of its main db. */
static int list_dbs(envcopy_t *c, char names[][128], size_t *n)
{
    MDB_dbi main_dbi;
    MDB_cursor *cur;
    MDB_val k, v;
    int mrc;
    *n = 0;
    if ((mrc = mdb_dbi_open(c->rtxn, NULL, 0, &main_dbi)) != 0 ||
        (mrc = mdb_cursor_open(c->rtxn, main_dbi, &cur)) != 0)
        return lmdb_fail(c->log, mrc, "main database", c->dir);
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (*n == MAX_NAMED || k.mv_size == 0 || k.mv_size >= 128 ||
            memchr(k.mv_data, '\0', k.mv_size) != NULL) {
            mdb_cursor_close(cur);
            if (c->log)
                fprintf(c->log, "tokenaudit: backup: %s: unexpected entry in the main database "
                        "(more than %d databases or a bad name)\n", c->dir, MAX_NAMED);
            return TA_ECORRUPT;
        }
        memcpy(names[*n], k.mv_data, k.mv_size);
        names[(*n)++][k.mv_size] = '\0';
    }
    mdb_cursor_close(cur);
    return mrc == MDB_NOTFOUND ? 0 : lmdb_fail(c->log, mrc, "main database", c->dir);
}

static int copy_env(envcopy_t *c, uint64_t *bytes)
{
    char (*names)[128] = calloc(MAX_NAMED, sizeof(*names));
    size_t n, pending = 0;
    MDB_env *denv = NULL;
    MDB_txn *wtxn = NULL;
    MDB_envinfo info;
    uint8_t *buf = malloc(TA_REC_MAX_ENCODED);
    int rc, mrc;
    if (buf == NULL || names == NULL) {
        free(buf);
        free(names);
        return -ENOMEM;
    }
    if ((rc = list_dbs(c, names, &n)) != 0)
        goto Exit;
    mdb_env_info(ta_store_env(c->st, c->id), &info);
    rc = TA_ELMDB;
    if ((mrc = mdb_env_create(&denv)) != 0 ||
        (mrc = mdb_env_set_mapsize(denv, info.me_mapsize)) != 0 ||
        (mrc = mdb_env_set_maxdbs(denv, MAX_NAMED)) != 0 ||
        (mrc = mdb_env_open(denv, c->dir, MDB_NOSYNC, 0600)) != 0 ||
        (mrc = mdb_txn_begin(denv, NULL, 0, &wtxn)) != 0) {
        rc = lmdb_fail(c->log, mrc, "create the copy", c->dir);
        goto Exit;
    }
    for (size_t i = 0; i < n; i++)
        if ((rc = copy_db(c, denv, names[i], &wtxn, &pending, buf)) != 0)
            goto Exit;
    mrc = mdb_txn_commit(wtxn);
    wtxn = NULL;
    if (mrc == 0)
        mrc = mdb_env_sync(denv, 1);
    if (mrc != 0) {
        rc = lmdb_fail(c->log, mrc, "commit the copy", c->dir);
        goto Exit;
    }
    rc = 0;
Exit:
    if (wtxn != NULL)
        mdb_txn_abort(wtxn);
    if (denv != NULL)
        mdb_env_close(denv);
    free(buf);
    free(names);
    char path[PATH_MAX];
    struct stat sb;
    if (join(path, sizeof(path), c->dir, "lock.mdb") == 0)
        unlink(path); /* a copy has no readers; the gateway makes its own */
    *bytes = join(path, sizeof(path), c->dir, "data.mdb") == 0 && stat(path, &sb) == 0
                 ? (uint64_t)sb.st_size : 0;
    return rc;
}

static int copy_secret(const char *src, const char *dst, FILE *log)
{
    uint8_t buf[SECRET_MAX];
    ssize_t n = -1;
    int in = open(src, O_RDONLY | O_CLOEXEC), out = -1, rc = 0;
    if (in == -1 || (n = read(in, buf, sizeof(buf))) == -1) {
        rc = -errno;
        if (log)
            fprintf(log, "tokenaudit: backup: cannot read the secret file %s: %s\n", src,
                    strerror(errno));
        goto Exit;
    }
    out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (out == -1 || fchmod(out, 0600) == -1 || write(out, buf, (size_t)n) != n ||
        fsync(out) == -1) {
        rc = errno ? -errno : -EIO;
        if (log)
            fprintf(log, "tokenaudit: backup: cannot write %s: %s\n", dst, strerror(errno));
    }
Exit:
    explicit_bzero(buf, sizeof(buf));
    if (in != -1)
        close(in);
    if (out != -1)
        close(out);
    return rc;
}

static int fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd == -1)
        return -errno;
    int rc = fsync(fd) == -1 ? -errno : 0;
    close(fd);
    return rc;
}

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    return remove(path) == -1 ? -1 : 0;
}

int ta_backup(const ta_backup_opts_t *opts, FILE *log, ta_backup_result_t *res)
{
    char partial[PATH_MAX], path[PATH_MAX], parent[PATH_MAX];
    ta_store_t *st = NULL;
    MDB_txn *ltxn = NULL, *atxn = NULL;
    struct stat sb;
    bool made = false;
    int rc;
    memset(res, 0, sizeof(*res));
    if (lstat(opts->dest, &sb) == 0) {
        if (log)
            fprintf(log, "tokenaudit: backup: %s already exists; give a new path with --to\n",
                    opts->dest);
        return TA_EEXIST;
    }
    if (strlen(opts->dest) > sizeof(partial) - 64) {
        if (log)
            fprintf(log, "tokenaudit: backup: --to is longer than %zu characters\n",
                    sizeof(partial) - 64);
        return -ENAMETOOLONG;
    }
    int pn = snprintf(partial, sizeof(partial), "%s.partial-%d", opts->dest, (int)getpid());
    if (pn < 0 || (size_t)pn >= sizeof(partial))
        return -ENAMETOOLONG;
    ta_store_opts_t so = {.readonly = true};
    if ((rc = ta_store_open(&st, opts->data_dir, &so)) != 0) {
        if (log)
            fprintf(log, "tokenaudit: backup: cannot open the store in %s: %s\n", opts->data_dir,
                    ta_strerror(rc));
        return rc;
    }
    if (mkdir(partial, 0700) == -1) {
        rc = -errno;
        if (log)
            fprintf(log, "tokenaudit: backup: cannot create %s: %s\n", partial, strerror(errno));
        goto Exit;
    }
    made = true;
    rc = ta_backup_read_pair(st, opts->wait_ms > 0 ? opts->wait_ms : 10000, &ltxn, &atxn,
                             &res->ticket);
    if (rc != 0) {
        if (log)
            fprintf(log, "tokenaudit: backup: %s\n",
                    rc == TA_EBUSY ? "the ledger and the audit log never named the same applied "
                                     "ticket (is billing stopped between its two commits? see "
                                     "`tokenaudit ledger verify`)"
                                   : ta_strerror(rc));
        goto Exit;
    }
    static const char *const sub[2] = {"ledger", "audit"};
    for (int e = 0; e < 2; e++) {
        if ((rc = join(path, sizeof(path), partial, sub[e])) != 0)
            goto Exit;
        if (mkdir(path, 0700) == -1) {
            rc = -errno;
            goto Exit;
        }
        envcopy_t c = {.st = st, .id = e == 0 ? TA_ENV_LEDGER : TA_ENV_AUDIT,
                       .rtxn = e == 0 ? ltxn : atxn, .dir = path, .log = log};
        if ((rc = copy_env(&c, &res->bytes[e])) != 0)
            goto Exit;
        res->entries[e] = c.entries;
        res->holds += c.holds;
    }
    ta_txn_abort(atxn);
    ta_txn_abort(ltxn);
    atxn = ltxn = NULL;
    if ((rc = join(path, sizeof(path), partial, "jwt.secret")) != 0 ||
        (rc = copy_secret(opts->jwt_secret_file, path, log)) != 0)
        goto Exit;
    if ((rc = join(path, sizeof(path), partial, "master.key")) != 0 ||
        (rc = copy_secret(opts->master_key_file, path, log)) != 0)
        goto Exit;
    for (int e = 0; e < 2; e++)
        if ((rc = join(path, sizeof(path), partial, sub[e])) != 0 || (rc = fsync_dir(path)) != 0)
            goto Exit;
    if ((rc = fsync_dir(partial)) != 0)
        goto Exit;
    if (rename(partial, opts->dest) == -1) {
        rc = -errno;
        if (log)
            fprintf(log, "tokenaudit: backup: cannot rename %s to %s: %s\n", partial, opts->dest,
                    strerror(errno));
        goto Exit;
    }
    made = false;
    snprintf(parent, sizeof(parent), "%s", opts->dest);
    char *slash = strrchr(parent, '/');
    if (slash == NULL)
        snprintf(parent, sizeof(parent), ".");
    else if (slash == parent)
        parent[1] = '\0';
    else
        *slash = '\0';
    rc = fsync_dir(parent);
Exit:
    if (atxn != NULL)
        ta_txn_abort(atxn);
    if (ltxn != NULL)
        ta_txn_abort(ltxn);
    ta_store_close(st);
    if (made)
        nftw(partial, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}

int ta_backup_cli(const char *data_dir, const char *dest, const char *jwt_secret_file,
                  const char *master_key_file)
{
    ta_backup_opts_t o = {.data_dir = data_dir, .dest = dest, .jwt_secret_file = jwt_secret_file,
                          .master_key_file = master_key_file};
    ta_backup_result_t r;
    int rc = ta_backup(&o, stderr, &r);
    if (rc != 0) {
        if (rc != TA_EEXIST)
            fprintf(stderr, "tokenaudit: backup of %s failed: %s; nothing was written to %s\n",
                    data_dir, ta_strerror(rc), dest);
        return 1;
    }
    printf("backup of %s written to %s: applied ticket %" PRIu64 " in both environments; "
           "ledger %" PRIu64 " entries (%" PRIu64 " bytes), audit %" PRIu64 " entries (%" PRIu64
           " bytes), %" PRIu64 " hold(s) of requests in flight (released when the copy starts)\n",
           data_dir, dest, r.ticket, r.entries[0], r.bytes[0], r.entries[1], r.bytes[1], r.holds);
    return 0;
}
