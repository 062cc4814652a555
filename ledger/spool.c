/*
 * spool.c - events of a stopping worker that never reached the ring.
 *
 * A worker answers a request, then hands its event to billing: into the ring,
 * or, while the ring is full, into the worker's own bounded pending queue
 * (ring.h). A stopping worker waits up to shutdown_timeout_ms for that queue
 * to empty. Past the bound it no longer drops the queue: it writes it here,
 * so that every answered request is still charged, exactly once.
 *
 *   DATA_DIR/spool/
 *     <pid>.<wall ns>.tmp      being written by worker <pid> (never read)
 *     <pid>.<wall ns>.spool    complete: renamed from .tmp after fsync
 *     <pid>.<wall ns>.bad      unreadable; set aside for an operator
 *
 *   file  = header | count x event
 *   header (32 bytes, big-endian):
 *     "TASP" | u8 version 1 | u8 0 | u16 0 | u32 sizeof(ta_event_t) |
 *     u32 count | i32 pid | u64 FNV-1a 64 of the event bytes | u32 0
 *   event = the raw ta_event_t, as a ring slot holds it
 *
 * Who writes, who reads: the worker writes one file at its exit, after its
 * loop and its proxy are gone (nothing is submitted after it), and exits.
 * Billing reads it in the ledger pass of a TA_EV_WORKER_DEAD event for that
 * pid, and removes it after both environments committed that ticket.
 *
 * Ordering: the file is renamed into place before the worker exits, and
 * every TA_EV_WORKER_DEAD for a pid is claimed after that pid is gone (the
 * master pushes it after reaping the child; billing's sweep, sweep.c, only
 * for a pid that no longer runs). So when billing applies a dead-worker
 * event, the worker's ring events all have smaller tickets (applied first)
 * and its spool, if any, is complete. Billing applies the spooled events
 * first and then releases what is still held as `aborted`, as before. The
 * sweep also pushes a dead-worker event for a gone pid that left a spool
 * file and no hold (a spool of refused requests, or one whose billing was
 * killed before removing it), so no spool waits forever.
 *
 * Exactly once. A spooled event has no ticket of its own: it is applied
 * under the ticket of the dead-worker event that took it, and may be taken
 * again by a later one (two dead-worker events for one pid: the master's and
 * the sweep's; or billing killed after its commits, before the unlink). Its
 * idempotency key is its request id, checked against what each environment
 * already holds:
 *   - ledger: an event with a hold (TA_EVF_HOLD) is settled only while the
 *     hold, keyed by its request id, still exists; settling deletes it in the
 *     same transaction that records the dead-worker ticket as applied. A
 *     second pass finds no hold and takes nothing from the event (no charge,
 *     no record: the first pass stashed it). An event without a hold changes
 *     nothing in the ledger.
 *   - audit: the records are stashed in ledger meta under that ticket (like
 *     the aborted records of released holds) and written by the audit pass
 *     of the same ticket; ta_audit_put() leaves a record whose key (received
 *     time + request id) exists alone, so a record written twice counts once.
 * Both sides ride on billing's own exactly-once (billing.c): the ticket is
 * applied in each environment's transaction or not at all.
 *
 * Crash points:
 *  - worker killed while writing: only a .tmp file exists; its events are
 *    lost as before this file existed (their holds are released as aborted,
 *    so nothing stays held); the sweep deletes the .tmp of a gone pid.
 *  - billing killed while applying: neither commit happened (all again
 *    from the ring), or only the ledger's (the audit pass re-runs from the
 *    stash), or both without the unlink (the sweep takes the file again:
 *    nothing applied twice, by the keys above).
 *  - a pid reused by a live process: its spool waits (the sweep never
 *    releases a live pid's holds), as the holds of that pid do.
 *  - power loss: the file and the directory are fsync'ed before the worker
 *    exits, so a spool outlives it like LMDB's synced pages.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ledger/audit.h"
#include "ledger/billing_internal.h"
#include "ledger/quota.h"
#include "ledger/spool.h"

#define SP_MAGIC "TASP"
#define SP_HDR 32
#define SP_MAX_EVENTS (1u << 20) /* far above any pending queue's bound */

static void be32_put(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

static uint32_t be32_get(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t fnv1a(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w == -1) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd == -1)
        return -errno;
    int rc = fsync(fd) == -1 ? -errno : 0;
    close(fd);
    return rc;
}

int ta_spool_write(const char *data_dir, int32_t pid, const ta_event_t *evs, size_t n)
{
    char dir[4096], tmp[4200], fin[4200];
    uint8_t hdr[SP_HDR];
    int rc = 0, fd = -1;
    if (n == 0)
        return 0;
    if (n > SP_MAX_EVENTS)
        return -E2BIG;
    snprintf(dir, sizeof(dir), "%s/" TA_SPOOL_DIR, data_dir);
    if (mkdir(dir, 0700) == -1 && errno != EEXIST)
        return -errno;
    int64_t now = ta_now_ns();
    snprintf(tmp, sizeof(tmp), "%s/%d.%" PRId64 ".tmp", dir, (int)pid, now);
    snprintf(fin, sizeof(fin), "%s/%d.%" PRId64 ".spool", dir, (int)pid, now);
    memset(hdr, 0, sizeof(hdr));
    memcpy(hdr, SP_MAGIC, 4);
    hdr[4] = 1;
    be32_put(hdr + 8, (uint32_t)sizeof(ta_event_t));
    be32_put(hdr + 12, (uint32_t)n);
    be32_put(hdr + 16, (uint32_t)pid);
    ta_be64_put(hdr + 20, fnv1a(evs, n * sizeof(*evs)));
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd == -1)
        return -errno;
    if ((rc = write_all(fd, hdr, sizeof(hdr))) != 0 ||
        (rc = write_all(fd, evs, n * sizeof(*evs))) != 0)
        goto Exit;
    if (fsync(fd) == -1) {
        rc = -errno;
        goto Exit;
    }
    close(fd);
    fd = -1;
    if (rename(tmp, fin) == -1) {
        rc = -errno;
        goto Exit;
    }
    rc = fsync_dir(dir);
Exit:
    if (fd != -1)
        close(fd);
    if (rc != 0)
        unlink(tmp);
    return rc;
}

int ta_spool_write_pending(ta_ring_t *r, const char *data_dir)
{
    size_t n = ta_ring_flush_pending(r);
    if (n == 0)
        return 0;
    ta_event_t *evs = malloc(n * sizeof(*evs));
    if (evs == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        evs[i] = *ta_ring_pending_at(r, i);
    int rc = ta_spool_write(data_dir, (int32_t)getpid(), evs, n);
    free(evs);
    if (rc != 0) {
        ta_log(TA_LOG_ERROR, "cannot spool %zu event(s) the ring had no room for: %s; their "
               "holds will be released unbilled", n, ta_strerror(rc));
        return rc;
    }
    ta_ring_pending_clear(r);
    ta_log(TA_LOG_WARN, "ring still full at exit: %zu event(s) spooled to %s/" TA_SPOOL_DIR
           " for billing", n, data_dir);
    return (int)n;
}

int ta_spool_read(const char *path, ta_event_t **evsp, size_t *np, int32_t *pidp)
{
    uint8_t hdr[SP_HDR];
    ta_event_t *evs = NULL;
    int rc = 0;
    *evsp = NULL;
    *np = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return -errno;
    struct stat sb;
    if (fstat(fd, &sb) == -1) {
        rc = -errno;
        goto Exit;
    }
    if (read(fd, hdr, sizeof(hdr)) != (ssize_t)sizeof(hdr) || memcmp(hdr, SP_MAGIC, 4) != 0 ||
        hdr[4] != 1 || be32_get(hdr + 8) != sizeof(ta_event_t)) {
        rc = TA_ECORRUPT;
        goto Exit;
    }
    size_t n = be32_get(hdr + 12);
    if (n > SP_MAX_EVENTS || (uint64_t)sb.st_size != SP_HDR + (uint64_t)n * sizeof(ta_event_t)) {
        rc = TA_ECORRUPT;
        goto Exit;
    }
    if ((evs = malloc(n ? n * sizeof(*evs) : 1)) == NULL) {
        rc = -ENOMEM;
        goto Exit;
    }
    size_t want = n * sizeof(*evs), got = 0;
    while (got < want) {
        ssize_t rd = read(fd, (uint8_t *)evs + got, want - got);
        if (rd == -1 && errno == EINTR)
            continue;
        if (rd <= 0) {
            rc = rd == 0 ? TA_ECORRUPT : -errno;
            goto Exit;
        }
        got += (size_t)rd;
    }
    if (fnv1a(evs, want) != ta_be64_get(hdr + 20)) {
        rc = TA_ECORRUPT;
        goto Exit;
    }
    *pidp = (int32_t)be32_get(hdr + 16);
    *evsp = evs;
    *np = n;
    evs = NULL;
Exit:
    free(evs);
    close(fd);
    return rc;
}

/* ---- billing's side ------------------------------------------------------------ */

/* Whether name is "<pid>.<digits>.<ext>". */
static bool spool_name_is(const char *name, int32_t pid, const char *ext)
{
    char pre[24];
    int pl = snprintf(pre, sizeof(pre), "%d.", (int)pid);
    size_t nl = strlen(name), el = strlen(ext);
    if (strncmp(name, pre, (size_t)pl) != 0 || nl < (size_t)pl + el + 2)
        return false;
    if (strcmp(name + nl - el, ext) != 0 || name[nl - el - 1] != '.')
        return false;
    for (size_t i = (size_t)pl; i < nl - el - 1; i++)
        if (name[i] < '0' || name[i] > '9')
            return false;
    return true;
}

static int taken_add(ta_billing_t *b, const char *name)
{
    spool_taken_t *s = &b->spool;
    if (s->n == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 8;
        char(*nn)[64] = realloc(s->names, ncap * sizeof(*nn));
        if (nn == NULL)
            return -ENOMEM;
        s->names = nn;
        s->cap = ncap;
    }
    snprintf(s->names[s->n++], sizeof(s->names[0]), "%s", name);
    return 0;
}

/* One spooled event in the ledger pass of ticket t (the argument above). */
static int apply_one(ta_billing_t *b, MDB_txn *txn, uint64_t t, const ta_event_t *ev)
{
    if (ev->kind != TA_EV_REQUEST)
        return 0;
    uint64_t note = 0;
    if (ev->flags & TA_EVF_HOLD) {
        ta_hold_t h;
        int rc = ta_rec_get_k(b->st, txn, &ta_desc_hold, TA_DB_HOLDS, ev->request_id, 16, &h);
        if (rc == TA_ENOTFOUND)
            return 0; /* settled or released already: nothing of it is applied again */
        if (rc != 0)
            return rc;
    }
    int rc = ta_billing_settle(b, txn, t, ev, &note);
    if (rc != 0)
        return rc;
    ta_audit_t rec;
    ta_audit_from_event(ev, t, (int64_t)(note & NOTE_PERIOD_MASK), (note & NOTE_CHARGED) != 0, &rec);
    return ta_billing_stash(b, txn, t, &rec);
}

int ta_spool_apply(ta_billing_t *b, MDB_txn *txn, uint64_t t, int32_t pid)
{
    char dir[4096], path[4400], bad[4400];
    snprintf(dir, sizeof(dir), "%s/" TA_SPOOL_DIR, b->conf.data_dir);
    DIR *d = opendir(dir);
    if (d == NULL)
        return errno == ENOENT ? 0 : -errno;
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        if (!spool_name_is(de->d_name, pid, "spool") || strlen(de->d_name) >= 64)
            continue;
        ta_event_t *evs;
        size_t n;
        int32_t fpid;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        int rrc = ta_spool_read(path, &evs, &n, &fpid);
        if (rrc == TA_ECORRUPT || (rrc == 0 && fpid != pid)) {
            free(rrc == 0 ? evs : NULL);
            snprintf(bad, sizeof(bad), "%.*s.bad", (int)(strlen(path) - 6), path);
            ta_log(TA_LOG_ERROR, "billing: spool %s is damaged; set aside as %s (its events are "
                   "not applied; the worker's holds are released as aborted)", path, bad);
            if (rename(path, bad) == -1)
                ta_log(TA_LOG_ERROR, "billing: rename %s: %s", path, strerror(errno));
            continue;
        }
        if (rrc != 0) {
            rc = rrc; /* an I/O failure is transient: billing stops and retries */
            ta_log(TA_LOG_ERROR, "billing: cannot read spool %s: %s", path, ta_strerror(rrc));
            break;
        }
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = apply_one(b, txn, t, &evs[i]);
        free(evs);
        if (rc == 0)
            rc = taken_add(b, de->d_name);
        if (rc == 0)
            ta_log(TA_LOG_INFO, "billing: worker %d's spool %s: %zu event(s) applied with ticket %"
                   PRIu64, (int)pid, de->d_name, n, t);
    }
    closedir(d);
    return rc;
}

void ta_spool_taken_reset(ta_billing_t *b) { b->spool.n = 0; }

void ta_spool_taken_remove(ta_billing_t *b)
{
    char path[4200];
    for (size_t i = 0; i < b->spool.n; i++) {
        snprintf(path, sizeof(path), "%s/" TA_SPOOL_DIR "/%s", b->conf.data_dir, b->spool.names[i]);
        if (unlink(path) == -1 && errno != ENOENT)
            ta_log(TA_LOG_WARN, "billing: remove applied spool %s: %s (the sweep takes it again; "
                   "nothing is applied twice)", path, strerror(errno));
    }
    b->spool.n = 0;
}

void ta_spool_sweep(ta_billing_t *b, int32_t *gone, size_t *ngone, size_t max)
{
    char dir[4096], path[4400];
    snprintf(dir, sizeof(dir), "%s/" TA_SPOOL_DIR, b->conf.data_dir);
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char *end;
        long pid = strtol(de->d_name, &end, 10);
        if (end == de->d_name || *end != '.' || pid <= 0 || pid > INT32_MAX)
            continue;
        bool tmp = spool_name_is(de->d_name, (int32_t)pid, "tmp");
        if (!tmp && !spool_name_is(de->d_name, (int32_t)pid, "spool"))
            continue;
        if (!ta_billing_pid_gone((int32_t)pid))
            continue;
        if (tmp) {
            snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
            ta_log(TA_LOG_WARN, "billing: worker %ld died while writing its spool %s: removed "
                   "(those events are lost; their holds are released as aborted)", pid, path);
            unlink(path);
            continue;
        }
        bool known = false;
        for (size_t i = 0; i < *ngone && !known; i++)
            known = gone[i] == (int32_t)pid;
        if (!known && *ngone < max)
            gone[(*ngone)++] = (int32_t)pid;
    }
    closedir(d);
}
