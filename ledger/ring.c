/*
 * ring.c - the event ring between producers (workers, the master) and its
 * one consumer (billing). In the manner of HAProxy's include/haproxy/ring-t.h:
 *
 * Picture (file DATA_DIR/ring, mapped MAP_SHARED by the master before the
 * first fork; every child inherits the same pages):
 *
 *   offset 0     +------------------------------------------------------+
 *                | magic "RING" | version | slot_size 512 | nslots       |  checked at attach
 *                | ring_id (random) | created_ns | hdr_size 4096         |
 *   offset 64    | head   (u64, atomic)  next ticket to claim            |  producers CAS
 *   offset 128   | tail   (u64, atomic)  first ticket not yet freed      |  consumer stores
 *   offset 192   | futex  (u32) | waiters (u32)                         |  wake-ups
 *   offset 4096  +------------------------------------------------------+
 *                | slot 0:   seq u64 | owner pid i32 | - | note i64 | - |
 *                |           ta_event_t (432 bytes) ... padding to 512  |
 *                | slot 1 ...                                           |
 *                | slot nslots-1                                        |
 *                +------------------------------------------------------+
 *
 * Tickets start at 1 and never wrap (2^64). Ticket t lives in slot
 * t & (nslots-1). The slot's sequence word says what state the slot is in
 * for ticket t:
 *      seq == t              free for t (or claimed by t, not yet published)
 *      seq == t + 1          t published, readable
 *      seq == t + nslots     t consumed-and-freed (or skipped): free for t+nslots
 *
 * Who writes, who reads:
 *  - Producers (workers; the master for TA_EV_WORKER_DEAD) claim a ticket by
 *    a CAS on head that only succeeds while head - tail < nslots. Because
 *    tail only grows, "room at the time tail was read" implies "room at the
 *    CAS": a claim can never overtake a slot billing has not freed. Then the
 *    producer tags the slot with its pid (owner), copies the event and
 *    publishes by CAS(seq: t -> t+1) with release order. Nothing between
 *    claim and publish can block (no lock, no syscall but getpid).
 *  - The consumer (billing, one process) reads tickets in order from its
 *    cursor: seq == t+1 (acquire) means the event bytes are complete. After
 *    both LMDB environments committed tickets < upto, ta_ring_release()
 *    clears owner/note and stores seq = t + nslots (release) for each, then
 *    tail = upto (release). A producer that reads that tail (acquire) thus
 *    sees the freed sequence words of every slot it can claim.
 *  - Wake-ups: the consumer reads the futex word, sets waiters = 1, issues a
 *    seq_cst fence and re-checks the next slot before FUTEX_WAIT(word); a
 *    producer publishes, issues a seq_cst fence, and if waiters is set bumps
 *    the word and FUTEX_WAKEs. Either the consumer sees the publish or the
 *    producer sees the waiter (Dekker); a bump between the read and the wait
 *    makes FUTEX_WAIT return at once. The wait also has a timeout.
 *
 * Death mid-operation:
 *  - producer dies before its CAS on head: nothing happened.
 *  - producer dies between claim and publish: seq stays t while head > t.
 *    The consumer notes when it first saw that; once the skip bound (2 s by
 *    default) passed and the owner pid is gone (or was never written), it
 *    CASes seq t -> t+nslots and moves on, logging the skip. The request's
 *    hold is released by the dead-worker cleanup (TA_EV_WORKER_DEAD comes
 *    later in ticket order). A producer that is alive but stalled is given
 *    30 times the bound; if it publishes after a skip its CAS fails and it
 *    queues the event again (it is not lost). Its late copy could scribble on
 *    a slot already reused, which is why a live owner is waited for so long.
 *  - consumer (billing) dies anywhere: nothing in the ring changes until a
 *    ticket is released, and tickets are released only after both
 *    environments committed them; the restarted billing reads again from
 *    tail and each environment's applied_ticket says what to skip.
 *  - master dies: the mapping lives in the file; a new master attaches to
 *    the same file and every published event is still there.
 *  - power loss: the ring is not msync'ed; like LMDB under MDB_NOSYNC the
 *    last moments may be lost (docs/ARCHITECTURE.md, "Durability").
 *
 * The file is created under a temporary name and renamed into place, so an
 * attaching process never sees a half-written header. A file with another
 * magic, version or slot size is refused; one with another slot count is
 * recreated only when drained (head == tail), continuing the ticket numbers.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "ledger/ring.h"

#define HDR_SIZE 4096u

struct ring_hdr {
    uint32_t magic, version, slot_size, nslots;
    uint64_t ring_id;
    int64_t created_ns;
    uint32_t hdr_size, reserved;
    alignas(64) _Atomic uint64_t head;
    alignas(64) _Atomic uint64_t tail;
    alignas(64) _Atomic uint32_t futex;
    _Atomic uint32_t waiters;
};
_Static_assert(sizeof(struct ring_hdr) <= HDR_SIZE, "ring header fits its page");

struct ring_slot {
    _Atomic uint64_t seq;
    _Atomic int32_t owner; /* pid of the producer that claimed it; 0 when free */
    uint32_t reserved0;
    int64_t note;          /* consumer-only scratch word */
    uint64_t reserved1;
    ta_event_t ev;
};
_Static_assert(sizeof(struct ring_slot) <= TA_RING_SLOT_SIZE, "event fits a slot");

struct ta_ring {
    struct ring_hdr *hdr;
    uint8_t *slots;
    size_t map_len;
    uint32_t nslots;
    uint64_t mask;
    /* consumer state (billing only) */
    int64_t skip_ns;
    uint64_t stall_ticket;
    int64_t stall_since;
    uint64_t skipped;
    /* producer's pending queue (process-local FIFO) */
    ta_event_t *pend;
    size_t pend_cap, pend_head, pend_count, pend_max;
};

static inline struct ring_slot *slot_of(const ta_ring_t *r, uint64_t t)
{
    return (struct ring_slot *)(r->slots + (size_t)(t & r->mask) * TA_RING_SLOT_SIZE);
}

static bool valid_nslots(uint32_t n)
{
    return n >= TA_RING_MIN_SLOTS && n <= TA_RING_MAX_SLOTS && (n & (n - 1)) == 0;
}

static size_t ring_file_size(uint32_t nslots)
{
    return HDR_SIZE + (size_t)nslots * TA_RING_SLOT_SIZE;
}

static int map_fd(int fd, size_t len, ta_ring_t **out)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return -errno;
    ta_ring_t *r = calloc(1, sizeof(*r));
    if (!r) {
        munmap(p, len);
        return -ENOMEM;
    }
    r->hdr = p;
    r->slots = (uint8_t *)p + HDR_SIZE;
    r->map_len = len;
    r->nslots = r->hdr->nslots;
    r->mask = r->nslots - 1;
    r->skip_ns = TA_RING_SKIP_NS_DEFAULT;
    r->pend_max = TA_RING_PENDING_MAX_DEFAULT;
    *out = r;
    return 0;
}

/* Write a fresh ring file whose first ticket is `start`, then rename it over path. */
static int create_file(const char *path, uint32_t nslots, uint64_t start)
{
    char tmp[4096];
    int n = snprintf(tmp, sizeof(tmp), "%s.new.%d", path, (int)getpid());
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return TA_ETOOBIG;
    size_t len = ring_file_size(nslots);
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd == -1)
        return -errno;
    int rc = 0;
    void *p = MAP_FAILED;
    if (ftruncate(fd, (off_t)len) == -1) {
        rc = -errno;
        goto Exit;
    }
    p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        rc = -errno;
        goto Exit;
    }
    struct ring_hdr *h = p;
    h->magic = TA_RING_MAGIC;
    h->version = TA_RING_VERSION;
    h->slot_size = TA_RING_SLOT_SIZE;
    h->nslots = nslots;
    if (getrandom(&h->ring_id, sizeof(h->ring_id), 0) != (ssize_t)sizeof(h->ring_id))
        h->ring_id = (uint64_t)ta_mono_ns() ^ ((uint64_t)getpid() << 32);
    h->created_ns = ta_now_ns();
    h->hdr_size = HDR_SIZE;
    atomic_store(&h->head, start);
    atomic_store(&h->tail, start);
    uint8_t *slots = (uint8_t *)p + HDR_SIZE;
    for (uint64_t t = start; t < start + nslots; t++) {
        struct ring_slot *s = (struct ring_slot *)(slots + (size_t)(t & (nslots - 1)) * TA_RING_SLOT_SIZE);
        atomic_store(&s->seq, t);
    }
    if (msync(p, len, MS_SYNC) == -1 || fsync(fd) == -1) {
        rc = -errno;
        goto Exit;
    }
    if (rename(tmp, path) == -1) {
        rc = -errno;
        goto Exit;
    }
Exit:
    if (p != MAP_FAILED)
        munmap(p, len);
    close(fd);
    if (rc != 0)
        unlink(tmp);
    return rc;
}

/* Open and check an existing ring. *want_nslots 0 = accept any count.
 * Returns 0, TA_ENOTFOUND, TA_ECONFIG (logged) or -errno; with *mismatch set
 * (and the ring returned) when only the slot count differs. */
static int open_existing(const char *path, uint32_t want_nslots, ta_ring_t **out, bool *mismatch)
{
    *mismatch = false;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd == -1)
        return errno == ENOENT ? TA_ENOTFOUND : -errno;
    int rc = 0;
    struct stat st;
    struct ring_hdr h;
    if (fstat(fd, &st) == -1) {
        rc = -errno;
        goto Exit;
    }
    if ((size_t)st.st_size < HDR_SIZE || pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h)) {
        ta_log(TA_LOG_ERROR, "ring %s: file too short (%lld bytes) to be an event ring", path,
               (long long)st.st_size);
        rc = TA_ECONFIG;
        goto Exit;
    }
    if (h.magic != TA_RING_MAGIC || h.version != TA_RING_VERSION ||
        h.slot_size != TA_RING_SLOT_SIZE || h.hdr_size != HDR_SIZE) {
        ta_log(TA_LOG_ERROR,
               "ring %s: refused: magic %08x version %u slot size %u header %u, this build "
               "expects magic %08x version %u slot size %u header %u (move the file away once "
               "billing has drained it)",
               path, h.magic, h.version, h.slot_size, h.hdr_size, TA_RING_MAGIC, TA_RING_VERSION,
               TA_RING_SLOT_SIZE, HDR_SIZE);
        rc = TA_ECONFIG;
        goto Exit;
    }
    if (!valid_nslots(h.nslots) || (size_t)st.st_size != ring_file_size(h.nslots)) {
        ta_log(TA_LOG_ERROR, "ring %s: refused: %u slots does not match the file size %lld", path,
               h.nslots, (long long)st.st_size);
        rc = TA_ECONFIG;
        goto Exit;
    }
    rc = map_fd(fd, (size_t)st.st_size, out);
    if (rc == 0 && want_nslots != 0 && h.nslots != want_nslots)
        *mismatch = true;
Exit:
    close(fd);
    return rc;
}

int ta_ring_create_or_attach(const char *path, uint32_t nslots, ta_ring_t **out)
{
    *out = NULL;
    if (!valid_nslots(nslots)) {
        ta_log(TA_LOG_ERROR, "ring_slots %u: must be a power of two in [%u, %u]", nslots,
               TA_RING_MIN_SLOTS, TA_RING_MAX_SLOTS);
        return TA_EINVAL;
    }
    bool mismatch, created = false;
    ta_ring_t *r = NULL;
    int rc = open_existing(path, nslots, &r, &mismatch);
    if (rc == TA_ENOTFOUND) {
        created = true;
        rc = create_file(path, nslots, 1);
        if (rc != 0) {
            ta_log(TA_LOG_ERROR, "ring %s: cannot create: %s", path, ta_strerror(rc));
            return rc;
        }
        rc = open_existing(path, nslots, &r, &mismatch);
    }
    if (rc != 0)
        return rc;
    if (mismatch) {
        uint64_t head = atomic_load(&r->hdr->head), tail = atomic_load(&r->hdr->tail);
        uint32_t old = r->nslots;
        ta_ring_close(r);
        if (head != tail) {
            ta_log(TA_LOG_ERROR,
                   "ring %s: refused: it has %u slots and ring_slots is %u, and %llu events are "
                   "not yet applied; start once with ring_slots %u so billing drains it",
                   path, old, nslots, (unsigned long long)(head - tail), old);
            return TA_ECONFIG;
        }
        rc = create_file(path, nslots, head);
        if (rc != 0)
            return rc;
        ta_log(TA_LOG_INFO, "ring %s: resized from %u to %u slots (it was drained)", path, old,
               nslots);
        rc = open_existing(path, nslots, &r, &mismatch);
        if (rc != 0)
            return rc;
    }
    /* Operators (and the restart tests) read here whether a restart found
     * events of the previous instance still waiting for billing. */
    if (created)
        ta_log(TA_LOG_INFO, "ring %s: created (%u slots)", path, r->nslots);
    else
        ta_log(TA_LOG_INFO, "ring %s: attached (%u slots, tail %llu, head %llu: %llu events not yet applied)",
               path, r->nslots, (unsigned long long)atomic_load(&r->hdr->tail),
               (unsigned long long)atomic_load(&r->hdr->head),
               (unsigned long long)(atomic_load(&r->hdr->head) - atomic_load(&r->hdr->tail)));
    *out = r;
    return 0;
}

int ta_ring_attach(const char *path, ta_ring_t **out)
{
    bool mismatch;
    *out = NULL;
    return open_existing(path, 0, out, &mismatch);
}

void ta_ring_close(ta_ring_t *r)
{
    if (!r)
        return;
    munmap(r->hdr, r->map_len);
    free(r->pend);
    free(r);
}

uint32_t ta_ring_nslots(const ta_ring_t *r) { return r->nslots; }
uint64_t ta_ring_id(const ta_ring_t *r) { return r->hdr->ring_id; }
uint64_t ta_ring_head(const ta_ring_t *r) { return atomic_load_explicit(&r->hdr->head, memory_order_acquire); }
uint64_t ta_ring_tail(const ta_ring_t *r) { return atomic_load_explicit(&r->hdr->tail, memory_order_acquire); }
uint64_t ta_ring_depth(const ta_ring_t *r)
{
    uint64_t t = ta_ring_tail(r);
    uint64_t h = ta_ring_head(r);
    return h >= t ? h - t : 0;
}

/* The producer's pid, asked of the kernel once per process (getpid(2) is a
 * system call in glibc >= 2.25, and every event claims a slot): forgotten in
 * a child after fork (pthread_atfork), so a forked worker records its own. */
static int32_t cached_pid;
static void forget_pid(void) { cached_pid = 0; }
static void register_forget_pid(void) { pthread_atfork(NULL, NULL, forget_pid); }
static int32_t my_pid(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    if (cached_pid == 0) {
        pthread_once(&once, register_forget_pid);
        cached_pid = (int32_t)getpid();
    }
    return cached_pid;
}

/* ---- producers ---------------------------------------------------------- */

int ta_ring_claim(ta_ring_t *r, uint64_t *ticket, ta_event_t **slot)
{
    struct ring_hdr *h = r->hdr;
    uint64_t head = atomic_load_explicit(&h->head, memory_order_relaxed);
    for (;;) {
        uint64_t tail = atomic_load_explicit(&h->tail, memory_order_acquire);
        /* signed: a stale head below tail is "not full"; its CAS then fails and reloads */
        if ((int64_t)(head - tail) >= (int64_t)r->nslots)
            return TA_EFULL;
        if (atomic_compare_exchange_weak_explicit(&h->head, &head, head + 1, memory_order_acq_rel,
                                                  memory_order_relaxed))
            break;
    }
    struct ring_slot *s = slot_of(r, head);
    /* Freed before tail moved past head - nslots (release/acquire on tail). */
    TA_BUG_ON(atomic_load_explicit(&s->seq, memory_order_acquire) != head);
    atomic_store_explicit(&s->owner, my_pid(), memory_order_relaxed);
    *ticket = head;
    *slot = &s->ev;
    return 0;
}

static void futex_wake(_Atomic uint32_t *w)
{
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE, 1, NULL, NULL, 0);
}

int ta_ring_publish(ta_ring_t *r, uint64_t ticket)
{
    struct ring_slot *s = slot_of(r, ticket);
    uint64_t expect = ticket;
    if (!atomic_compare_exchange_strong_explicit(&s->seq, &expect, ticket + 1,
                                                 memory_order_release, memory_order_relaxed)) {
        ta_log(TA_LOG_ERROR, "ring: ticket %llu was skipped by billing before it was published",
               (unsigned long long)ticket);
        return TA_EFULL;
    }
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&r->hdr->waiters, memory_order_relaxed)) {
        atomic_fetch_add_explicit(&r->hdr->futex, 1, memory_order_release);
        futex_wake(&r->hdr->futex);
    }
    return 0;
}

int ta_ring_push(ta_ring_t *r, const ta_event_t *ev, uint64_t *ticket)
{
    uint64_t t;
    ta_event_t *slot;
    int rc = ta_ring_claim(r, &t, &slot);
    if (rc != 0)
        return rc;
    memcpy(slot, ev, sizeof(*ev));
    rc = ta_ring_publish(r, t);
    if (rc == 0 && ticket)
        *ticket = t;
    return rc;
}

int ta_ring_push_control(ta_ring_t *r, uint32_t kind, int32_t pid)
{
    ta_event_t ev;
    memset(&ev, 0, sizeof(ev));
    ev.kind = kind;
    ev.worker_pid = pid;
    ev.t_received_ns = ev.t_done_ns = ta_now_ns();
    for (int i = 0; i < 1000; i++) {
        int rc = ta_ring_push(r, &ev, NULL);
        if (rc != TA_EFULL)
            return rc;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    ta_log(TA_LOG_ERROR, "ring full for 1 s: control event %u for pid %d not delivered", kind, pid);
    return TA_EFULL;
}

/* ---- pending queue ------------------------------------------------------ */

void ta_ring_set_pending_max(ta_ring_t *r, size_t max) { r->pend_max = max ? max : 1; }
bool ta_ring_has_pending(const ta_ring_t *r) { return r->pend_count != 0; }
size_t ta_ring_pending_count(const ta_ring_t *r) { return r->pend_count; }

const ta_event_t *ta_ring_pending_at(const ta_ring_t *r, size_t i)
{
    TA_BUG_ON(i >= r->pend_count);
    return &r->pend[(r->pend_head + i) % r->pend_cap];
}

void ta_ring_pending_clear(ta_ring_t *r)
{
    r->pend_head = r->pend_count = 0;
}

int ta_ring_pending_push(ta_ring_t *r, const ta_event_t *ev)
{
    if (r->pend_count >= r->pend_max) {
        ta_log(TA_LOG_ERROR, "ring: pending queue at its bound (%zu events); event dropped",
               r->pend_max);
        return TA_ETOOBIG;
    }
    if (r->pend_count == r->pend_cap) {
        size_t ncap = r->pend_cap ? r->pend_cap * 2 : 64;
        if (ncap > r->pend_max)
            ncap = r->pend_max;
        ta_event_t *n = malloc(ncap * sizeof(*n));
        if (!n)
            return -ENOMEM;
        for (size_t i = 0; i < r->pend_count; i++)
            n[i] = r->pend[(r->pend_head + i) % r->pend_cap];
        free(r->pend);
        r->pend = n;
        r->pend_cap = ncap;
        r->pend_head = 0;
    }
    r->pend[(r->pend_head + r->pend_count) % r->pend_cap] = *ev;
    r->pend_count++;
    return 0;
}

size_t ta_ring_flush_pending(ta_ring_t *r)
{
    while (r->pend_count) {
        uint64_t t;
        ta_event_t *slot;
        if (ta_ring_claim(r, &t, &slot) != 0)
            break;
        memcpy(slot, &r->pend[r->pend_head], sizeof(*slot));
        if (ta_ring_publish(r, t) != 0)
            continue; /* skipped while we held it: retry the same event */
        r->pend_head = (r->pend_head + 1) % r->pend_cap;
        r->pend_count--;
    }
    return r->pend_count;
}

int ta_ring_submit(ta_ring_t *r, const ta_event_t *ev)
{
    if (r->pend_count == 0 && ta_ring_push(r, ev, NULL) == 0)
        return 0;
    int rc = ta_ring_pending_push(r, ev);
    if (rc == 0)
        ta_ring_flush_pending(r);
    return rc;
}

/* ---- consumer ----------------------------------------------------------- */

void ta_ring_set_skip_ns(ta_ring_t *r, int64_t ns) { r->skip_ns = ns > 0 ? ns : 1; }
uint64_t ta_ring_skipped(const ta_ring_t *r) { return r->skipped; }
void ta_ring_set_note(ta_ring_t *r, uint64_t ticket, int64_t v) { slot_of(r, ticket)->note = v; }
int64_t ta_ring_note(const ta_ring_t *r, uint64_t ticket) { return slot_of(r, ticket)->note; }

/* Alive = exists and is not a zombie (a reaped-later dead worker is gone for us). */
static bool pid_alive(int32_t pid)
{
    if (pid <= 0)
        return false;
    if (kill(pid, 0) == -1 && errno != EPERM)
        return false;
    char path[64], buf[256];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return true;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return true;
    buf[n] = 0;
    const char *p = strrchr(buf, ')');
    if (p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X'))
        return false;
    return true;
}

size_t ta_ring_consume(ta_ring_t *r, uint64_t *cursor, ta_ring_item_t *items, size_t max)
{
    size_t n = 0;
    while (n < max) {
        uint64_t t = *cursor;
        struct ring_slot *s = slot_of(r, t);
        uint64_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
        if (seq == t + 1) {
            items[n].ticket = t;
            memcpy(&items[n].ev, &s->ev, sizeof(items[n].ev));
            n++;
            *cursor = t + 1;
            continue;
        }
        if (seq == t + r->nslots) { /* skipped by an earlier billing process */
            *cursor = t + 1;
            continue;
        }
        if (atomic_load_explicit(&r->hdr->head, memory_order_acquire) <= t)
            break; /* nothing claimed yet */
        /* claimed, not published */
        int64_t now = ta_mono_ns();
        if (r->stall_ticket != t) {
            r->stall_ticket = t;
            r->stall_since = now;
            break;
        }
        int32_t owner = atomic_load_explicit(&s->owner, memory_order_relaxed);
        bool alive = pid_alive(owner);
        int64_t waited = now - r->stall_since;
        if (waited < r->skip_ns || (alive && waited < 30 * r->skip_ns))
            break;
        uint64_t expect = t;
        if (!atomic_compare_exchange_strong_explicit(&s->seq, &expect, t + r->nslots,
                                                     memory_order_acq_rel, memory_order_acquire))
            continue; /* published meanwhile: read it */
        ta_log(TA_LOG_WARN,
               "ring: ticket %llu claimed by pid %d (%s) but not published for %lld ms: skipped",
               (unsigned long long)t, (int)owner, alive ? "still alive" : "gone",
               (long long)(waited / 1000000));
        r->skipped++;
        *cursor = t + 1;
    }
    return n;
}

void ta_ring_release(ta_ring_t *r, uint64_t upto)
{
    uint64_t t = atomic_load_explicit(&r->hdr->tail, memory_order_relaxed);
    if (upto <= t)
        return;
    for (; t < upto; t++) {
        struct ring_slot *s = slot_of(r, t);
        atomic_store_explicit(&s->owner, 0, memory_order_relaxed);
        s->note = 0;
        atomic_store_explicit(&s->seq, t + r->nslots, memory_order_release);
    }
    atomic_store_explicit(&r->hdr->tail, upto, memory_order_release);
}

int ta_ring_wait(ta_ring_t *r, uint64_t cursor, int timeout_ms)
{
    struct ring_hdr *h = r->hdr;
    struct ring_slot *s = slot_of(r, cursor);
    uint32_t v = atomic_load_explicit(&h->futex, memory_order_acquire);
    atomic_store_explicit(&h->waiters, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    uint64_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
    if (seq == cursor + 1 || seq == cursor + r->nslots) {
        atomic_store_explicit(&h->waiters, 0, memory_order_relaxed);
        return 1;
    }
    if (timeout_ms <= 0) {
        atomic_store_explicit(&h->waiters, 0, memory_order_relaxed);
        return 0;
    }
    struct timespec ts = {timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L};
    long rc = syscall(SYS_futex, (uint32_t *)&h->futex, FUTEX_WAIT, v, &ts, NULL, 0);
    int err = errno;
    atomic_store_explicit(&h->waiters, 0, memory_order_relaxed);
    if (rc == 0 || (rc == -1 && err == EAGAIN))
        return 1;
    return 0;
}
