/*
 * metrics.c - the shared metrics page (see metrics.h for the series).
 *
 * One anonymous MAP_SHARED mapping, created by the master before its first
 * fork (like the heartbeat page, ledger/heartbeat.c), so every worker of
 * every generation, restarts included, sees the same physical pages:
 *
 *   +------------------------------------------------------------------+
 *   | header: magic u32 | version u32 | slots_hw (atomic u32)           |
 *   |         worker_restarts (atomic u64, master writes)              |
 *   +------------------------------------------------------------------+
 *   | models[TA_METRICS_MODELS]: state (atomic u32: 0 free, 1 being     |
 *   |         written, 2 ready) | name[128]         (claimed by workers)|
 *   +------------------------------------------------------------------+
 *   | procs[TA_METRICS_MAX_PROCS], 64 B each: pid (atomic i32) | slot   |
 *   |         holds (atomic i64) | ring_pending (atomic u64)            |
 *   |         one per LIVE worker process; gauges                      |
 *   +------------------------------------------------------------------+
 *   | slots[TA_METRICS_MAX_SLOTS], one per worker slot number; counters |
 *   |   requests[66 rows: 64 models, "other", ""][23 status columns]    |
 *   |   duration[16 buckets] | duration_sum_us | upstream_errors[6]     |
 *   +------------------------------------------------------------------+
 *   (about 3 MiB of address space; pages are only allocated when touched,
 *   and readers stop at slots_hw, the highest slot used + 1)
 *
 * Writers: a worker adds to the counters of its own slot (index = its
 * worker slot number, not its pid, so a restarted worker continues the
 * slot: counters never go back) and writes the gauges of its own procs
 * entry. The master writes worker_restarts and clears the procs entry of a
 * worker it reaped. Readers: any worker serving /metrics sums all slots and
 * all live procs entries; nobody else writes a slot or an entry.
 *
 * Ordering: every counter is one naturally aligned 64-bit word changed with
 * a relaxed atomic fetch-add. Read-modify-write rather than load+store
 * because two processes may share a slot for a moment: during a reload
 * (SIGHUP) the draining worker of generation g and the new worker of
 * generation g+1 carry the same slot number. Counters are independent, so
 * relaxed order is enough; a scrape is a sum of independent reads, not a
 * snapshot (a request may show in requests_total a moment before its
 * histogram bucket). A model name is published by writing the name, then
 * storing state 2 with release; readers load the state with acquire. Two
 * workers registering one new name at the same moment may claim two
 * entries; readers merge rows with equal names, so the sums stay right.
 * A procs entry is claimed with a CAS of pid 0 -> own pid; the master frees
 * it by zeroing its gauges and then storing pid 0 (release).
 *
 * Crash behaviour: a worker killed at any point leaves every counter either
 * incremented or not (single instructions); its slot keeps its counts and
 * its restart adds to them. Its gauges (holds in flight, pending events)
 * stay until the master reaps it, then leave the sums: billing's dead-worker
 * cleanup releases those holds, and the pending queue died with the process.
 * A worker killed between claiming a model entry and publishing it leaves
 * that entry in state 1 for good (one wasted name; requests for that model
 * then claim another entry). The page is anonymous: it dies with the master,
 * and a new master starts from zero, as Prometheus expects of a restarted
 * target. Checked at attach: nothing (the page never leaves the process
 * tree that created it); magic and version are there for core dumps.
 */
#include "worker/metrics.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "ledger/health.h"
#include "ledger/heartbeat.h"
#include "worker/upstream.h"

#define M_MAGIC 0x4d455452u /* "METR" */
#define M_VERSION 1u

#define ROW_OTHER TA_METRICS_MODELS
#define ROW_NONE (TA_METRICS_MODELS + 1)
#define NROWS (TA_METRICS_MODELS + 2)

static const int fixed_status[] = {200, 400, 401, 403, 404, 405, 408, 409, 413,
                                   415, 422, 429, 499, 500, 502, 503, 504};
#define NFIXED ((int)TA_ARRAY_SIZE(fixed_status))
#define COL_CLASS NFIXED         /* + class 1..5: "1xx".."5xx" */
#define COL_OTHER (NFIXED + 5)
#define NCOLS (NFIXED + 6)

/* Upper bounds in microseconds; the last bucket is +Inf. */
static const int64_t bucket_le_us[TA_METRICS_NBUCKETS - 1] = {
    5000,    10000,    25000,    50000,    100000,   250000,    500000,   1000000,
    2500000, 5000000,  10000000, 30000000, 60000000, 120000000, 300000000};
static const char *const bucket_text[TA_METRICS_NBUCKETS] = {
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
    "2.5",   "5",    "10",    "30",   "60",  "120",  "300", "+Inf"};

static const char *const up_kind_name[TA_METRICS_UP_NKINDS] = {
    "connect", "timeout", "status", "no_response", "cut", "other"};

struct mmodel {
    _Atomic uint32_t state; /* 0 free, 1 being written, 2 ready */
    char name[TA_METRICS_MODEL_NAME];
};

struct mproc {
    _Atomic int32_t pid; /* 0 = free */
    int32_t slot;
    _Atomic int64_t holds;
    _Atomic uint64_t ring_pending;
} __attribute__((aligned(64)));

struct mslot {
    _Atomic uint64_t requests[NROWS][NCOLS];
    _Atomic uint64_t duration[TA_METRICS_NBUCKETS];
    _Atomic uint64_t duration_sum_us;
    _Atomic uint64_t upstream_errors[TA_METRICS_UP_NKINDS];
} __attribute__((aligned(64)));

struct mpage {
    uint32_t magic;
    uint32_t version;
    _Atomic uint32_t slots_hw;
    _Atomic uint64_t worker_restarts;
    struct mmodel models[TA_METRICS_MODELS];
    struct mproc procs[TA_METRICS_MAX_PROCS];
    struct mslot slots[TA_METRICS_MAX_SLOTS];
};

static struct mpage *page;
static ta_ring_t *ring;
static char data_dir[1024]; /* for tokenaudit_data_dir_*_bytes; "" = not reported */
/* This process's own slot and gauge entry (both -1 until worker_start). */
static int my_slot = -1;
static int my_proc = -1;
static pid_t my_pid;

static int map_page(void)
{
    void *p = mmap(NULL, sizeof(struct mpage), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return -errno;
    page = p; /* zero-filled by the kernel */
    page->magic = M_MAGIC;
    page->version = M_VERSION;
    return 0;
}

void ta_metrics_set_data_dir(const char *dir)
{
    snprintf(data_dir, sizeof(data_dir), "%s", dir);
}

int ta_metrics_create(ta_ring_t *r)
{
    ring = r;
    return page != NULL ? 0 : map_page();
}

/* A process that did not inherit a page (unit tests, tools) counts into a
 * private one, as slot 0. */
static bool ready(void)
{
    if (page == NULL && map_page() != 0)
        return false;
    if (my_slot < 0)
        ta_metrics_worker_start(0);
    return true;
}

void ta_metrics_worker_start(int slot)
{
    if (page == NULL && map_page() != 0)
        return;
    if (slot < 0)
        slot = 0;
    my_slot = slot % TA_METRICS_MAX_SLOTS;
    uint32_t hw = atomic_load_explicit(&page->slots_hw, memory_order_relaxed);
    while (hw < (uint32_t)my_slot + 1 &&
           !atomic_compare_exchange_weak_explicit(&page->slots_hw, &hw, (uint32_t)my_slot + 1,
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
    pid_t me = getpid();
    if (my_proc >= 0 && my_pid == me)
        goto Done;
    my_proc = -1;
    for (int i = 0; i < TA_METRICS_MAX_PROCS; i++) {
        int32_t zero = 0;
        if (atomic_compare_exchange_strong_explicit(&page->procs[i].pid, &zero, (int32_t)me,
                                                    memory_order_acquire, memory_order_relaxed)) {
            my_proc = i;
            break;
        }
    }
    if (my_proc < 0)
        ta_log(TA_LOG_WARN, "metrics: more than %d live workers; this one's gauges are not shown",
               TA_METRICS_MAX_PROCS);
Done:
    my_pid = me;
    if (my_proc >= 0) {
        struct mproc *e = &page->procs[my_proc];
        e->slot = my_slot;
        atomic_store_explicit(&e->holds, 0, memory_order_relaxed);
        atomic_store_explicit(&e->ring_pending, 0, memory_order_relaxed);
    }
}

void ta_metrics_process_gone(pid_t pid)
{
    if (page == NULL || pid <= 0)
        return;
    for (int i = 0; i < TA_METRICS_MAX_PROCS; i++) {
        struct mproc *e = &page->procs[i];
        if (atomic_load_explicit(&e->pid, memory_order_relaxed) != (int32_t)pid)
            continue;
        atomic_store_explicit(&e->holds, 0, memory_order_relaxed);
        atomic_store_explicit(&e->ring_pending, 0, memory_order_relaxed);
        atomic_store_explicit(&e->pid, 0, memory_order_release);
    }
}

void ta_metrics_worker_restarted(void)
{
    if (page != NULL)
        atomic_fetch_add_explicit(&page->worker_restarts, 1, memory_order_relaxed);
}

/* ---- counting (workers) ------------------------------------------------ */

static int status_col(int status)
{
    for (int i = 0; i < NFIXED; i++)
        if (fixed_status[i] == status)
            return i;
    if (status >= 100 && status <= 599)
        return COL_CLASS + status / 100 - 1;
    return COL_OTHER;
}

static int model_row(const char *model)
{
    if (model == NULL || model[0] == '\0')
        return ROW_NONE;
    size_t len = strnlen(model, TA_METRICS_MODEL_NAME);
    if (len >= TA_METRICS_MODEL_NAME)
        return ROW_OTHER;
    int free_i = -1;
    for (int i = 0; i < TA_METRICS_MODELS; i++) {
        struct mmodel *m = &page->models[i];
        uint32_t st = atomic_load_explicit(&m->state, memory_order_acquire);
        if (st == 2 && memcmp(m->name, model, len + 1) == 0)
            return i;
        if (st == 0 && free_i < 0)
            free_i = i;
    }
    /* Entries are only ever claimed, so a free one is the first free one
     * from here on; a lost race moves on to the next. */
    for (int i = free_i; i >= 0 && i < TA_METRICS_MODELS; i++) {
        struct mmodel *m = &page->models[i];
        uint32_t zero = 0;
        if (!atomic_compare_exchange_strong_explicit(&m->state, &zero, 1, memory_order_relaxed,
                                                     memory_order_relaxed))
            continue;
        memcpy(m->name, model, len + 1);
        atomic_store_explicit(&m->state, 2, memory_order_release);
        return i;
    }
    return ROW_OTHER;
}

void ta_metrics_request(int status, const char *model, int64_t duration_ns)
{
    if (!ready())
        return;
    struct mslot *s = &page->slots[my_slot];
    atomic_fetch_add_explicit(&s->requests[model_row(model)][status_col(status)], 1,
                              memory_order_relaxed);
    int64_t us = duration_ns > 0 ? duration_ns / 1000 : 0;
    int b = 0;
    while (b < TA_METRICS_NBUCKETS - 1 && us > bucket_le_us[b])
        b++;
    atomic_fetch_add_explicit(&s->duration[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->duration_sum_us, (uint64_t)us, memory_order_relaxed);
}

void ta_metrics_upstream_error(int kind)
{
    if (kind < 0 || kind >= TA_METRICS_UP_NKINDS || !ready())
        return;
    atomic_fetch_add_explicit(&page->slots[my_slot].upstream_errors[kind], 1,
                              memory_order_relaxed);
}

int ta_metrics_upstream_kind(int up_err)
{
    switch (up_err) {
    case TA_UP_ECONNECT: return TA_METRICS_UP_CONNECT;
    case TA_UP_ETIMEOUT_CONNECT:
    case TA_UP_ETIMEOUT_FIRST_BYTE:
    case TA_UP_ETIMEOUT_IDLE:
    case TA_UP_ETIMEOUT_TOTAL: return TA_METRICS_UP_TIMEOUT;
    case TA_UP_ENORESPONSE: return TA_METRICS_UP_NO_RESPONSE;
    case TA_UP_ECUT: return TA_METRICS_UP_CUT;
    default: return TA_METRICS_UP_OTHER;
    }
}

void ta_metrics_holds_add(int64_t delta)
{
    if (ready() && my_proc >= 0)
        atomic_fetch_add_explicit(&page->procs[my_proc].holds, delta, memory_order_relaxed);
}

void ta_metrics_set_ring_pending(uint64_t n)
{
    if (!ready() || my_proc < 0)
        return;
    /* called every loop turn: skip the store (and the cache line) when equal */
    _Atomic uint64_t *p = &page->procs[my_proc].ring_pending;
    if (atomic_load_explicit(p, memory_order_relaxed) != n)
        atomic_store_explicit(p, n, memory_order_relaxed);
}

/* ---- reading ----------------------------------------------------------- */

static uint64_t ld(_Atomic uint64_t *p) { return atomic_load_explicit(p, memory_order_relaxed); }

static uint32_t slots_used(void)
{
    uint32_t hw = atomic_load_explicit(&page->slots_hw, memory_order_relaxed);
    return hw > TA_METRICS_MAX_SLOTS ? TA_METRICS_MAX_SLOTS : hw;
}

static void gauges(ta_metrics_totals_t *t)
{
    for (int i = 0; i < TA_METRICS_MAX_PROCS; i++) {
        struct mproc *e = &page->procs[i];
        if (atomic_load_explicit(&e->pid, memory_order_acquire) == 0)
            continue;
        t->workers++;
        t->holds_in_flight += atomic_load_explicit(&e->holds, memory_order_relaxed);
        t->ring_pending += ld(&e->ring_pending);
    }
    if (t->holds_in_flight < 0) /* a decrement seen before its increment */
        t->holds_in_flight = 0;
    t->worker_restarts = ld(&page->worker_restarts);
    t->ring_depth = ring != NULL ? ta_ring_depth(ring) : 0;
}

void ta_metrics_totals(ta_metrics_totals_t *t)
{
    memset(t, 0, sizeof(*t));
    if (page == NULL && map_page() != 0)
        return;
    uint32_t n = slots_used();
    for (uint32_t si = 0; si < n; si++) {
        struct mslot *s = &page->slots[si];
        for (int r = 0; r < NROWS; r++) {
            for (int c = 0; c < NCOLS; c++) {
                uint64_t v = ld(&s->requests[r][c]);
                if (v == 0)
                    continue;
                t->requests += v;
                int cls = c < NFIXED ? fixed_status[c] / 100 : c < COL_OTHER ? c - COL_CLASS + 1 : 0;
                t->by_class[cls < 6 ? cls : 0] += v;
            }
        }
        for (int b = 0; b < TA_METRICS_NBUCKETS; b++)
            t->duration_bucket[b] += ld(&s->duration[b]);
        t->duration_sum_us += ld(&s->duration_sum_us);
        for (int k = 0; k < TA_METRICS_UP_NKINDS; k++)
            t->upstream_errors[k] += ld(&s->upstream_errors[k]);
    }
    gauges(t);
}

int64_t ta_metrics_bucket_le_ms(int i)
{
    if (i < 0 || i >= TA_METRICS_NBUCKETS - 1)
        return INT64_MAX;
    return bucket_le_us[i] / 1000;
}

/* ---- text -------------------------------------------------------------- */

struct tb {
    char *buf;
    size_t cap, n; /* n counts what the page needs, even past cap */
};

static void __attribute__((format(printf, 2, 3))) out(struct tb *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(b->n < b->cap ? b->buf + b->n : NULL, b->n < b->cap ? b->cap - b->n : 0,
                      fmt, ap);
    va_end(ap);
    if (k > 0)
        b->n += (size_t)k;
}

static void family(struct tb *b, const char *name, const char *type, const char *help)
{
    out(b, "# HELP tokenaudit_%s %s\n# TYPE tokenaudit_%s %s\n", name, help, name, type);
}

/* What etc/tokenaudit-alerts.yml needs beyond the families above: the ring's
 * size (how full it is), billing's progress and warnings (from the heartbeat
 * page), and the space left where the data directory lives (one statvfs per
 * scrape: a local, non-blocking call). */
static void alerting_families(struct tb *b)
{
    uint64_t events, warnings;
    ta_heartbeat_billing_counts(&events, &warnings);
    family(b, "ring_slots", "gauge", "Slots in the event ring (ring_depth can reach this).");
    out(b, "tokenaudit_ring_slots %u\n", ring != NULL ? ta_ring_nslots(ring) : 0u);
    family(b, "billing_events_total", "counter", "Ring events billing applied to both books.");
    out(b, "tokenaudit_billing_events_total %llu\n", (unsigned long long)events);
    family(b, "quota_warnings_total", "counter", "Quota warning thresholds crossed (warn_at).");
    out(b, "tokenaudit_quota_warnings_total %llu\n", (unsigned long long)warnings);
    struct statvfs vs;
    if (data_dir[0] != '\0' && statvfs(data_dir, &vs) == 0) {
        family(b, "data_dir_free_bytes", "gauge",
               "Bytes available to the gateway on the data directory's filesystem.");
        out(b, "tokenaudit_data_dir_free_bytes %llu\n",
            (unsigned long long)vs.f_bavail * (unsigned long long)vs.f_frsize);
        family(b, "data_dir_size_bytes", "gauge", "Size of the data directory's filesystem.");
        out(b, "tokenaudit_data_dir_size_bytes %llu\n",
            (unsigned long long)vs.f_blocks * (unsigned long long)vs.f_frsize);
    }
}

/* A label value in the text format 0.0.4: backslash, double quote and
 * newline escaped (\\, \", \n), the only escapes the format has. Any other
 * control character (C0, DEL: a CR would end the line for some parsers) is
 * written as U+FFFD; names are validated without them (schema: rule
 * "control"), so that only shows for a name stored by an older build. A
 * cap of 3 bytes per input byte plus the NUL always holds the whole value;
 * a smaller one cuts it. */
static void label_value(char *dst, size_t cap, const char *s)
{
    size_t n = 0;
    for (; *s != '\0' && n + 4 <= cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\\' || c == '"' || c == '\n') {
            dst[n++] = '\\';
            dst[n++] = c == '\n' ? 'n' : (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(dst + n, "\xEF\xBF\xBD", 3);
            n += 3;
        } else {
            dst[n++] = (char)c;
        }
    }
    dst[n] = '\0';
}

/* Provider route health (ledger/health.h): calls, errors, the latency to
 * the provider's answer head, and the state, per route, labelled by
 * provider (id and name) and upstream model name. */
static void health_families(struct tb *b)
{
    int n = ta_health_views(NULL, 0);
    ta_health_view_t *v = n > 0 ? malloc(sizeof(*v) * (size_t)n) : NULL;
    if (v == NULL)
        return;
    int copied = ta_health_views(v, n);
    if (copied < n) /* routes appear, never go */
        n = copied;
    char (*lb)[3 * 2 * 128 + 64] = malloc(sizeof(*lb) * (size_t)n);
    if (lb == NULL) {
        free(v);
        return;
    }
    for (int i = 0; i < n; i++) {
        char pn[3 * 128 + 1], up[3 * 128 + 1];
        label_value(pn, sizeof(pn), v[i].provider_name);
        label_value(up, sizeof(up), v[i].upstream);
        snprintf(lb[i], sizeof(lb[i]), "provider_id=\"%llu\",provider=\"%s\",upstream=\"%s\"",
                 (unsigned long long)v[i].provider_id, pn, up);
    }
    family(b, "provider_calls_total", "counter",
           "Upstream calls per provider route (each try of a failover counts).");
    for (int i = 0; i < n; i++)
        out(b, "tokenaudit_provider_calls_total{%s} %llu\n", lb[i], (unsigned long long)v[i].calls);
    family(b, "provider_errors_total", "counter",
           "Failed upstream calls per provider route: connect errors, timeouts, broken answers, HTTP 5xx.");
    for (int i = 0; i < n; i++)
        out(b, "tokenaudit_provider_errors_total{%s} %llu\n", lb[i], (unsigned long long)v[i].fails);
    family(b, "provider_latency_seconds", "histogram",
           "Time from the start of an upstream call to the provider's answer head, per provider route.");
    for (int i = 0; i < n; i++) {
        uint64_t cum = 0;
        for (int k = 0; k < TA_HEALTH_LAT_BINS; k++) {
            int64_t le = ta_health_bin_le_ms(k);
            char ls[32];
            if (le == INT64_MAX)
                snprintf(ls, sizeof(ls), "+Inf");
            else
                snprintf(ls, sizeof(ls), "%lld.%03lld", (long long)(le / 1000), (long long)(le % 1000));
            cum += v[i].lat[k];
            out(b, "tokenaudit_provider_latency_seconds_bucket{%s,le=\"%s\"} %llu\n", lb[i], ls,
                (unsigned long long)cum);
        }
        out(b, "tokenaudit_provider_latency_seconds_sum{%s} %llu.%03llu\n", lb[i],
            (unsigned long long)(v[i].lat_sum_ms / 1000), (unsigned long long)(v[i].lat_sum_ms % 1000));
        out(b, "tokenaudit_provider_latency_seconds_count{%s} %llu\n", lb[i], (unsigned long long)cum);
    }
    family(b, "provider_route_state", "gauge", "Provider route health: 0 healthy, 1 degraded, 2 down.");
    for (int i = 0; i < n; i++)
        out(b, "tokenaudit_provider_route_state{%s} %d\n", lb[i], v[i].state);
    free(lb);
    free(v);
}

static void status_label(int c, char *buf, size_t cap)
{
    if (c < NFIXED)
        snprintf(buf, cap, "%d", fixed_status[c]);
    else if (c < COL_OTHER)
        snprintf(buf, cap, "%dxx", c - COL_CLASS + 1);
    else
        snprintf(buf, cap, "other");
}

static void requests_text(struct tb *b)
{
    static uint64_t sum[NROWS][NCOLS]; /* loop thread only; too big for comfort on a stack */
    char names[NROWS][TA_METRICS_MODEL_NAME];
    bool shown[NROWS];
    memset(sum, 0, sizeof(sum));
    uint32_t n = slots_used();
    for (uint32_t si = 0; si < n; si++)
        for (int r = 0; r < NROWS; r++)
            for (int c = 0; c < NCOLS; c++)
                sum[r][c] += ld(&page->slots[si].requests[r][c]);
    for (int r = 0; r < TA_METRICS_MODELS; r++) {
        struct mmodel *m = &page->models[r];
        shown[r] = atomic_load_explicit(&m->state, memory_order_acquire) == 2;
        if (shown[r])
            memcpy(names[r], m->name, sizeof(names[r]));
        else
            names[r][0] = '\0';
    }
    snprintf(names[ROW_OTHER], sizeof(names[ROW_OTHER]), "other");
    names[ROW_NONE][0] = '\0';
    shown[ROW_OTHER] = shown[ROW_NONE] = true;
    /* merge rows with equal names (a raced registration, or a model that
     * is really called "other") into the first */
    for (int r = 0; r < NROWS; r++) {
        for (int q = 0; shown[r] && q < r; q++) {
            if (!shown[q] || strcmp(names[q], names[r]) != 0)
                continue;
            for (int c = 0; c < NCOLS; c++)
                sum[q][c] += sum[r][c];
            shown[r] = false;
        }
    }
    family(b, "requests_total", "counter",
           "/v1 answers by HTTP status and model, summed over all workers "
           "(model=\"\": no model resolved; \"other\": past the model table).");
    for (int r = 0; r < NROWS; r++) {
        if (!shown[r])
            continue;
        char lv[3 * TA_METRICS_MODEL_NAME + 1];
        label_value(lv, sizeof(lv), names[r]);
        for (int c = 0; c < NCOLS; c++) {
            if (sum[r][c] == 0)
                continue;
            char sl[16];
            status_label(c, sl, sizeof(sl));
            out(b, "tokenaudit_requests_total{status=\"%s\",model=\"%s\"} %llu\n", sl, lv,
                (unsigned long long)sum[r][c]);
        }
    }
}

size_t ta_metrics_text(char *buf, size_t cap)
{
    struct tb b = {buf, cap, 0};
    if (cap > 0)
        buf[0] = '\0';
    if (page == NULL && map_page() != 0)
        return 0;
    ta_metrics_totals_t t;
    ta_metrics_totals(&t);

    out(&b, "# tokenaudit metrics served by worker slot %d pid %d; summed over all workers\n",
        my_slot, (int)getpid());
    requests_text(&b);

    family(&b, "request_duration_seconds", "histogram",
           "Time from receiving a /v1 request to its last byte (streams: the end of the stream).");
    uint64_t cum = 0;
    for (int i = 0; i < TA_METRICS_NBUCKETS; i++) {
        cum += t.duration_bucket[i];
        out(&b, "tokenaudit_request_duration_seconds_bucket{le=\"%s\"} %llu\n", bucket_text[i],
            (unsigned long long)cum);
    }
    out(&b, "tokenaudit_request_duration_seconds_sum %llu.%06llu\n",
        (unsigned long long)(t.duration_sum_us / 1000000),
        (unsigned long long)(t.duration_sum_us % 1000000));
    out(&b, "tokenaudit_request_duration_seconds_count %llu\n", (unsigned long long)cum);

    family(&b, "upstream_errors_total", "counter",
           "Failed upstream calls by kind (each try of a failover counts).");
    for (int k = 0; k < TA_METRICS_UP_NKINDS; k++)
        out(&b, "tokenaudit_upstream_errors_total{kind=\"%s\"} %llu\n", up_kind_name[k],
            (unsigned long long)t.upstream_errors[k]);

    family(&b, "holds_in_flight", "gauge", "Quota holds taken whose request has not finished.");
    out(&b, "tokenaudit_holds_in_flight %lld\n", (long long)t.holds_in_flight);
    family(&b, "ring_depth", "gauge", "Event ring tickets claimed and not yet freed by billing.");
    out(&b, "tokenaudit_ring_depth %llu\n", (unsigned long long)t.ring_depth);
    family(&b, "ring_pending", "gauge",
           "Events waiting in workers' own queues because the ring was full.");
    out(&b, "tokenaudit_ring_pending %llu\n", (unsigned long long)t.ring_pending);
    family(&b, "workers", "gauge", "Live worker processes (all config generations).");
    out(&b, "tokenaudit_workers %llu\n", (unsigned long long)t.workers);
    family(&b, "worker_restarts_total", "counter", "Dead workers restarted by the master.");
    out(&b, "tokenaudit_worker_restarts_total %llu\n", (unsigned long long)t.worker_restarts);
    family(&b, "billing_alive", "gauge", "1 while the billing process beats, else 0.");
    out(&b, "tokenaudit_billing_alive %d\n", ta_heartbeat_billing_alive() ? 1 : 0);
    family(&b, "config_generation", "gauge", "Config generation (1 at start, +1 per reload).");
    out(&b, "tokenaudit_config_generation %llu\n",
        (unsigned long long)ta_heartbeat_generation());
    alerting_families(&b);
    health_families(&b);
    return b.n;
}
