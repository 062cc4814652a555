/*
 * health.c - the shared route health table (health.h).
 *
 * The grain is the route: a provider and an upstream model name, the pair a
 * model's route sends to (two models routing to the same pair share it).
 * Outages are often a whole provider's, but a provider commonly fails one
 * model at a time (one model overloaded, withdrawn, or served by a broken
 * deployment); a provider-wide state would then cool down its healthy
 * models too, so the state is per route and the provider's status in
 * /api/admin/providers/ is the summary of its routes.
 *
 * One anonymous MAP_SHARED mapping, created by the master before its first
 * fork (like the metrics page, worker/metrics.c, and the login throttle,
 * admin/throttle.c), so every worker of every generation, restarts
 * included, reads and writes the same table:
 *
 *   +----------------------------------------------------------------------+
 *   | header: magic u32 | version u32 | lock (pthread mutex,               |
 *   |         PROCESS_SHARED + ROBUST) | seq (atomic u64, event numbers)    |
 *   +----------------------------------------------------------------------+
 *   | slots[HL_SLOTS], about 1.4 KiB each, one per route ever seen:        |
 *   |   key u64 (atomic; 0 = free; a hash of provider id and upstream)     |
 *   |   provider_id | upstream[128]         written once, before key       |
 *   |   provider_name[128] | last_error[160] | last_error_at | changed_at   |
 *   |                                                  (under the lock)    |
 *   |   state | consecutive | open_until | trial | probe_next | last_fail  |
 *   |                                                  (atomic words)      |
 *   |   calls_total | fails_total | lat_total[16] | lat_sum_ms (atomic)    |
 *   |   win[10]: epoch | calls | fails | lat[16]   (30 s buckets: 5 min)   |
 *   +----------------------------------------------------------------------+
 *
 * The state machine of a route (N = health_failures, cooldown =
 * health_cooldown_s, pct = health_degraded_percent):
 *
 *   HEALTHY --failure, N in a row-------------------------> DOWN
 *   HEALTHY --failure, window >= N failures, >= pct%-------> DEGRADED
 *   DEGRADED --failure, N in a row-------------------------> DOWN
 *   DEGRADED --success, window < N failures or < pct/2 %---> HEALTHY
 *   DOWN --success (the trial, a probe, or any answer)-----> HEALTHY
 *   DOWN --failure: the cooldown starts again (no change of state)
 *
 * A failure is a connect error, a timeout, a broken answer or a 5xx; a 4xx
 * is a success here (the provider answered; the caller was at fault). While
 * a route is DOWN and open_until (its cooldown) is ahead, ta_health_order
 * leaves it out. Once the cooldown is over, the first request to claim the
 * route's `trial` word (a CAS from "none or expired" to its own token: the
 * deadline in ms and the pid) tries it first; every other request keeps
 * skipping it. The trial's outcome decides: success -> HEALTHY, failure ->
 * a new cooldown. A trial whose request never ran it (refused by its hold,
 * its client gone) is given back by ta_health_done; one whose worker died
 * expires at its deadline (the route's total timeout). With probes on
 * (health_check_interval_s > 0) no client request is a trial: a worker's
 * timer claims due routes (ta_health_probe_due, a CAS on probe_next) and
 * a probe of the provider decides. When every route of a request is down
 * and none may be tried, the one whose last failure is the oldest is tried
 * alone: refusing everything would turn a partial outage into a total one.
 *
 * Writers and readers: workers only (the master creates the mapping). The
 * hot path takes no lock: a success on a HEALTHY route adds to relaxed
 * atomic counters, and ta_health_order reads atomic words and may CAS a
 * trial. Every change of state, error text, slot creation and bucket
 * rotation happens under the lock, which orders them; the state word is
 * stored with release and read with acquire, so a reader that sees DOWN
 * also sees its open_until. A slot's identity (provider_id, upstream) is
 * written before its key is stored with release; lookups load the key with
 * acquire. Slots are never freed while the master lives, and are filled in
 * probe order, so a lookup stops at the first free slot of its window.
 *
 * Crash behaviour: the mutex is robust: a worker killed while holding it
 * makes the next locker get EOWNERDEAD; it marks the mutex consistent and
 * goes on. A half-done update leaves independent fields each valid (a
 * state, a count, a time, an error text cut short but NUL-terminated), so
 * the worst is one transition without its webhook or a text from two
 * errors. A slot being created by a killed worker was not published (its
 * key is stored last) and is taken by the next one. A trial claimed by a
 * killed worker expires at its deadline. Counters are single instructions.
 * The mapping is anonymous: it dies with the master, and a new master
 * starts with every route healthy. Checked at attach: nothing (the mapping
 * never leaves the process tree); magic and version are there for core
 * dumps.
 */
#include "ledger/health.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ta.h"

#define HL_MAGIC 0x484c5448u /* "HLTH" */
#define HL_VERSION 1u
#define HL_SLOTS 2048u /* a power of two */
#define HL_PROBE 64u
#define HL_BUCKETS 10
#define HL_BUCKET_MS ((int64_t)TA_HEALTH_WINDOW_S * 1000 / HL_BUCKETS)
#define NS_PER_MS 1000000LL

/* Upper bounds of the latency bins, ms (time to the provider's answer head). */
static const int64_t bin_le[TA_HEALTH_LAT_BINS] = {10,   25,   50,   100,   250,   500,
                                                   750,  1000, 1500, 2000,  3000,  5000,
                                                   10000, 30000, 60000, INT64_MAX};

typedef struct hl_bucket {
    _Atomic int64_t epoch; /* mono ms / HL_BUCKET_MS + 1; 0 = never used */
    _Atomic uint32_t calls, fails;
    _Atomic uint32_t lat[TA_HEALTH_LAT_BINS];
} hl_bucket_t;

typedef struct hl_slot {
    _Atomic uint64_t key;
    uint64_t provider_id;
    char upstream[128];
    /* under the lock */
    char provider_name[128];
    char last_error[160];
    int64_t last_error_at; /* unix ns */
    int64_t changed_at;    /* unix ns of the last change of state */
    /* atomic words */
    _Atomic uint32_t state;
    _Atomic uint32_t consecutive;
    _Atomic int64_t open_until; /* mono ns */
    _Atomic uint64_t trial;     /* 0, or deadline ms << 20 | pid */
    _Atomic int64_t probe_next; /* mono ns */
    _Atomic int64_t last_fail;  /* mono ns */
    _Atomic uint64_t calls_total, fails_total, lat_sum_ms;
    _Atomic uint64_t lat_total[TA_HEALTH_LAT_BINS];
    hl_bucket_t win[HL_BUCKETS];
} hl_slot_t;

struct hl_page {
    uint32_t magic, version;
    pthread_mutex_t lock;
    _Atomic uint64_t seq;
    hl_slot_t slots[HL_SLOTS];
};

static struct hl_page *pg;
/* This process's settings. The master hands every worker the values of its
 * settings table (master/config.c); these stand in only for processes it
 * did not start (unit tests, tools). */
static ta_health_conf_t conf = {.failures = 3, .cooldown_ms = 30000, .degraded_percent = 10};
static int64_t (*clock_fn)(void);
static void (*listener)(void *arg, const ta_health_event_t *ev);
static void *listener_arg;

static int64_t now_mono(void) { return clock_fn != NULL ? clock_fn() : ta_mono_ns(); }

int ta_health_create(void)
{
    struct hl_page *p;
    int rc;

    if (pg != NULL)
        return 0;
    p = mmap(NULL, sizeof(*p), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -errno;
    if ((rc = ta_mutex_init_shared(&p->lock)) != 0)
        goto Fail;
    p->magic = HL_MAGIC;
    p->version = HL_VERSION;
    pg = p;
    return 0;
Fail:
    munmap(p, sizeof(*p));
    return rc;
}

static bool have_page(void)
{
    return pg != NULL || ta_health_create() == 0;
}

void ta_health_configure(const ta_health_conf_t *c)
{
    conf = *c;
    if (conf.failures < 1)
        conf.failures = 1;
    if (conf.cooldown_ms < 1)
        conf.cooldown_ms = 1;
    if (conf.probe_interval_ms < 0)
        conf.probe_interval_ms = 0;
    if (conf.degraded_percent < 1)
        conf.degraded_percent = 1;
    if (conf.degraded_percent > 100)
        conf.degraded_percent = 100;
}

void ta_health_set_listener(void (*fn)(void *arg, const ta_health_event_t *ev), void *arg)
{
    listener = fn;
    listener_arg = arg;
}

void ta_health_set_clock(int64_t (*fn)(void)) { clock_fn = fn; }

const char *ta_health_state_name(int state)
{
    return state == TA_HEALTH_DOWN ? "down" : state == TA_HEALTH_DEGRADED ? "degraded" : "healthy";
}

int64_t ta_health_bin_le_ms(int i)
{
    return i >= 0 && i < TA_HEALTH_LAT_BINS ? bin_le[i] : INT64_MAX;
}

static void lock(void)
{
    if (pthread_mutex_lock(&pg->lock) == EOWNERDEAD)
        pthread_mutex_consistent(&pg->lock); /* harmless half-update: see the top */
}

static void unlock(void) { pthread_mutex_unlock(&pg->lock); }

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)
#define ST(x, v) atomic_store_explicit(&(x), (v), memory_order_relaxed)
#define ADD(x, v) atomic_fetch_add_explicit(&(x), (v), memory_order_relaxed)

/* ---- slots ------------------------------------------------------------------ */

static uint64_t route_key(uint64_t provider_id, const char *upstream)
{
    uint64_t h = 14695981039346656037ULL; /* FNV-1a */
    for (int i = 0; i < 8; i++) {
        h ^= (provider_id >> (8 * i)) & 0xff;
        h *= 1099511628211ULL;
    }
    for (const unsigned char *s = (const unsigned char *)upstream; *s; s++) {
        h ^= *s;
        h *= 1099511628211ULL;
    }
    return h != 0 ? h : 1;
}

static bool slot_is(const hl_slot_t *s, uint64_t provider_id, const char *upstream)
{
    return s->provider_id == provider_id && strncmp(s->upstream, upstream, sizeof(s->upstream)) == 0;
}

/* The slot of a route, created when add; -1 when the table has no room
 * (the route is then not tracked: always tried, never cooled). */
static int slot_find(uint64_t provider_id, const char *upstream, bool add)
{
    uint64_t key = route_key(provider_id, upstream);
    uint32_t home = (uint32_t)key & (HL_SLOTS - 1);
    int free_at = -1;

    if (upstream == NULL || strlen(upstream) >= sizeof(pg->slots[0].upstream))
        return -1;
    for (uint32_t k = 0; k < HL_PROBE; k++) {
        uint32_t i = (home + k) & (HL_SLOTS - 1);
        uint64_t sk = atomic_load_explicit(&pg->slots[i].key, memory_order_acquire);
        if (sk == 0)
            break;
        if (sk == key && slot_is(&pg->slots[i], provider_id, upstream))
            return (int)i;
    }
    if (!add)
        return -1;
    lock();
    for (uint32_t k = 0; k < HL_PROBE; k++) {
        uint32_t i = (home + k) & (HL_SLOTS - 1);
        hl_slot_t *s = &pg->slots[i];
        uint64_t sk = atomic_load_explicit(&s->key, memory_order_acquire);
        if (sk == 0) {
            memset((char *)s + sizeof(s->key), 0, sizeof(*s) - sizeof(s->key));
            s->provider_id = provider_id;
            snprintf(s->upstream, sizeof(s->upstream), "%s", upstream);
            s->changed_at = ta_now_ns();
            atomic_store_explicit(&s->key, key, memory_order_release);
            free_at = (int)i;
            break;
        }
        if (sk == key && slot_is(s, provider_id, upstream)) {
            free_at = (int)i; /* another worker added it meanwhile */
            break;
        }
    }
    unlock();
    if (free_at < 0) {
        static bool logged;
        if (!logged)
            ta_log(TA_LOG_WARN, "provider health: the route table is full; further routes are not tracked");
        logged = true;
    }
    return free_at;
}

static void slot_name(hl_slot_t *s, const char *name)
{
    if (name == NULL || strncmp(s->provider_name, name, sizeof(s->provider_name)) == 0)
        return;
    lock();
    snprintf(s->provider_name, sizeof(s->provider_name), "%s", name);
    unlock();
}

/* ---- the window ------------------------------------------------------------ */

static int64_t epoch_of(int64_t mono_ns) { return mono_ns / NS_PER_MS / HL_BUCKET_MS + 1; }

static hl_bucket_t *bucket(hl_slot_t *s, int64_t now)
{
    int64_t ep = epoch_of(now);
    hl_bucket_t *b = &s->win[ep % HL_BUCKETS];
    if (atomic_load_explicit(&b->epoch, memory_order_acquire) == ep)
        return b;
    lock();
    if (atomic_load_explicit(&b->epoch, memory_order_acquire) != ep) {
        ST(b->calls, 0);
        ST(b->fails, 0);
        for (int i = 0; i < TA_HEALTH_LAT_BINS; i++)
            ST(b->lat[i], 0);
        atomic_store_explicit(&b->epoch, ep, memory_order_release);
    }
    unlock();
    return b;
}

typedef struct win_sum {
    uint64_t calls, fails;
    uint64_t lat[TA_HEALTH_LAT_BINS];
} win_sum_t;

static void window(const hl_slot_t *s, int64_t now, win_sum_t *w)
{
    int64_t ep = epoch_of(now);
    for (int k = 0; k < HL_BUCKETS; k++) {
        const hl_bucket_t *b = &s->win[k];
        int64_t be = atomic_load_explicit(&b->epoch, memory_order_acquire);
        if (be == 0 || be > ep || be <= ep - HL_BUCKETS)
            continue;
        w->calls += LD(b->calls);
        w->fails += LD(b->fails);
        for (int i = 0; i < TA_HEALTH_LAT_BINS; i++)
            w->lat[i] += LD(b->lat[i]);
    }
}

static int bin_of(int64_t ms)
{
    int i = 0;
    while (i < TA_HEALTH_LAT_BINS - 1 && ms > bin_le[i])
        i++;
    return i;
}

static void count(hl_slot_t *s, bool failed, int64_t head_ms, int64_t now)
{
    hl_bucket_t *b = bucket(s, now);
    ADD(b->calls, 1);
    ADD(s->calls_total, 1);
    if (failed) {
        ADD(b->fails, 1);
        ADD(s->fails_total, 1);
    }
    if (head_ms >= 0) {
        int i = bin_of(head_ms);
        ADD(b->lat[i], 1);
        ADD(s->lat_total[i], 1);
        ADD(s->lat_sum_ms, (uint64_t)head_ms);
    }
}

/* ---- transitions (under the lock) ---------------------------------------------- */

static void set_state(int si, hl_slot_t *s, int to, const char *reason, ta_health_event_t *ev)
{
    int from = (int)LD(s->state);
    int64_t at = ta_now_ns();
    atomic_store_explicit(&s->state, (uint32_t)to, memory_order_release);
    s->changed_at = at;
    memset(ev, 0, sizeof(*ev));
    ev->provider_id = s->provider_id;
    memcpy(ev->provider_name, s->provider_name, sizeof(ev->provider_name));
    ev->provider_name[sizeof(ev->provider_name) - 1] = '\0';
    memcpy(ev->upstream, s->upstream, sizeof(ev->upstream));
    ev->upstream[sizeof(ev->upstream) - 1] = '\0';
    ev->old_state = from;
    ev->new_state = to;
    snprintf(ev->reason, sizeof(ev->reason), "%s", reason);
    ev->at_ns = at;
    snprintf(ev->id, sizeof(ev->id), "health-%llu-%d-%lld-%llu", (unsigned long long)s->provider_id, si,
             (long long)(at / NS_PER_MS), (unsigned long long)(ADD(pg->seq, 1) + 1));
}

static void emit(const ta_health_event_t *ev)
{
    ta_log(ev->new_state == TA_HEALTH_HEALTHY ? TA_LOG_INFO : TA_LOG_WARN,
           "provider %llu (%s), route %s: %s -> %s: %s", (unsigned long long)ev->provider_id,
           ev->provider_name, ev->upstream, ta_health_state_name(ev->old_state),
           ta_health_state_name(ev->new_state), ev->reason);
    if (listener != NULL)
        listener(listener_arg, ev);
}

/* kind: 0 a client call, 1 a trial, 2 a probe */
static void on_failure(int si, const char *what, int kind, int64_t now)
{
    hl_slot_t *s = &pg->slots[si];
    ta_health_event_t ev;
    bool changed = false;
    char reason[224];

    lock();
    uint32_t n = LD(s->consecutive) + 1;
    ST(s->consecutive, n);
    ST(s->last_fail, now);
    snprintf(s->last_error, sizeof(s->last_error), "%s", what);
    s->last_error_at = ta_now_ns();
    int st = (int)LD(s->state);
    if (st == TA_HEALTH_DOWN) {
        /* the trial, a probe or a straggler failed: cool down again */
        ST(s->open_until, now + conf.cooldown_ms * NS_PER_MS);
        if (kind != 0)
            ST(s->trial, 0);
    } else if (n >= (uint32_t)conf.failures) {
        ST(s->open_until, now + conf.cooldown_ms * NS_PER_MS);
        ST(s->trial, 0);
        ST(s->probe_next, 0);
        snprintf(reason, sizeof(reason), "%u failures in a row (last: %s); skipped for %lld s", n, what,
                 (long long)((conf.cooldown_ms + 999) / 1000));
        set_state(si, s, TA_HEALTH_DOWN, reason, &ev);
        changed = true;
    } else if (st == TA_HEALTH_HEALTHY) {
        win_sum_t w = {0};
        window(s, now, &w);
        if (w.fails >= (uint64_t)conf.failures && w.fails * 100 >= (uint64_t)conf.degraded_percent * w.calls) {
            snprintf(reason, sizeof(reason), "%llu of %llu calls failed in the last %d minutes (last: %s)",
                     (unsigned long long)w.fails, (unsigned long long)w.calls, TA_HEALTH_WINDOW_S / 60, what);
            set_state(si, s, TA_HEALTH_DEGRADED, reason, &ev);
            changed = true;
        }
    }
    unlock();
    if (changed)
        emit(&ev);
}

static void on_success(int si, int kind, int64_t now)
{
    hl_slot_t *s = &pg->slots[si];
    ta_health_event_t ev;
    bool changed = false;
    char reason[224];

    if (atomic_load_explicit(&s->state, memory_order_acquire) == TA_HEALTH_HEALTHY) {
        if (LD(s->consecutive) != 0)
            ST(s->consecutive, 0);
        return;
    }
    lock();
    ST(s->consecutive, 0);
    int st = (int)LD(s->state);
    if (st == TA_HEALTH_DOWN) {
        ST(s->open_until, 0);
        ST(s->trial, 0);
        set_state(si, s, TA_HEALTH_HEALTHY,
                  kind == 1   ? "the trial request succeeded"
                  : kind == 2 ? "the probe succeeded"
                              : "the provider answered again",
                  &ev);
        changed = true;
    } else if (st == TA_HEALTH_DEGRADED) {
        win_sum_t w = {0};
        window(s, now, &w);
        if (w.fails < (uint64_t)conf.failures || w.fails * 200 < (uint64_t)conf.degraded_percent * w.calls) {
            snprintf(reason, sizeof(reason), "%llu of %llu calls failed in the last %d minutes",
                     (unsigned long long)w.fails, (unsigned long long)w.calls, TA_HEALTH_WINDOW_S / 60);
            set_state(si, s, TA_HEALTH_HEALTHY, reason, &ev);
            changed = true;
        }
    }
    unlock();
    if (changed)
        emit(&ev);
}

/* ---- the order of a request's routes -------------------------------------------- */

/* Smooth weighted round robin state, per worker process and model (a
 * direct-mapped table: a model that collides starts over, which only
 * shifts its sequence). cur[i] belongs to the request's i-th route. */
#define SW_MODELS 256
static struct sw_entry {
    uint64_t model_id;
    int32_t cur[TA_MODEL_MAX_ROUTES];
} sw[SW_MODELS];

static int32_t weight_of(const ta_health_route_t *r)
{
    return r->weight <= 0 ? 1 : r->weight > 1000 ? 1000 : r->weight;
}

static uint64_t token_of(int64_t deadline_ns)
{
    return (uint64_t)(deadline_ns / NS_PER_MS) << 20 | ((uint64_t)getpid() & 0xfffff);
}

static int64_t token_deadline_ns(uint64_t t) { return (int64_t)(t >> 20) * NS_PER_MS; }

int ta_health_order(uint64_t model_id, const ta_health_route_t *routes, int n, int *order,
                    ta_health_req_t *hr)
{
    int slot[TA_MODEL_MAX_ROUTES], avail[TA_MODEL_MAX_ROUTES], na = 0, k = 0, trial = -1;
    int64_t now;

    memset(hr, 0, sizeof(*hr));
    if (n > TA_MODEL_MAX_ROUTES)
        n = TA_MODEL_MAX_ROUTES;
    if (n <= 0)
        return 0;
    if (!have_page()) {
        for (int i = 0; i < n; i++)
            order[i] = i;
        return n;
    }
    now = now_mono();
    for (int i = 0; i < n; i++) {
        slot[i] = slot_find(routes[i].provider_id, routes[i].upstream, true);
        if (slot[i] < 0) {
            avail[na++] = i;
            continue;
        }
        hl_slot_t *s = &pg->slots[slot[i]];
        slot_name(s, routes[i].provider_name);
        if (atomic_load_explicit(&s->state, memory_order_acquire) != TA_HEALTH_DOWN) {
            avail[na++] = i;
            continue;
        }
        if (LD(s->open_until) > now || conf.probe_interval_ms > 0 || trial >= 0)
            continue; /* cooling down, or probes decide, or this request has its trial */
        uint64_t t = LD(s->trial);
        if (t != 0 && token_deadline_ns(t) > now)
            continue; /* another request is the trial */
        int64_t lease = routes[i].trial_ms > 0 ? routes[i].trial_ms : conf.cooldown_ms;
        uint64_t mine = token_of(now + lease * NS_PER_MS);
        if (atomic_compare_exchange_strong(&s->trial, &t, mine)) {
            trial = i;
            hr->trial_token = mine;
        }
    }
    if (trial >= 0)
        order[k++] = trial;
    /* the available routes, group by group of equal priority */
    for (int a = 0; a < na;) {
        int b = a;
        while (b < na && routes[avail[b]].priority == routes[avail[a]].priority)
            b++;
        if (b - a == 1) {
            order[k++] = avail[a];
        } else {
            struct sw_entry *e = &sw[model_id % SW_MODELS];
            if (e->model_id != model_id) {
                memset(e, 0, sizeof(*e));
                e->model_id = model_id;
            }
            int32_t total = 0;
            int best = -1;
            for (int j = a; j < b; j++) {
                int r = avail[j];
                total += weight_of(&routes[r]);
                e->cur[r] += weight_of(&routes[r]);
                if (best < 0 || e->cur[r] > e->cur[best])
                    best = r;
            }
            e->cur[best] -= total;
            order[k++] = best;
            /* the rest of the group follows by weight (stable) */
            int first = k;
            for (int j = a; j < b; j++) {
                int r = avail[j];
                if (r == best)
                    continue;
                int at = k++;
                while (at > first && weight_of(&routes[order[at - 1]]) < weight_of(&routes[r])) {
                    order[at] = order[at - 1];
                    at--;
                }
                order[at] = r;
            }
        }
        a = b;
    }
    if (k == 0) {
        /* every route is down and none may be tried: the least recently failed */
        int pick = 0;
        for (int i = 1; i < n; i++)
            if (slot[i] >= 0 && slot[pick] >= 0 &&
                LD(pg->slots[slot[i]].last_fail) < LD(pg->slots[slot[pick]].last_fail))
                pick = i;
        order[k++] = pick;
    }
    for (int j = 0; j < k; j++)
        hr->slot[j] = (uint16_t)(slot[order[j]] + 1);
    hr->trial = trial >= 0 ? 1 : 0;
    return k;
}

static void give_back(ta_health_req_t *hr)
{
    if (hr->trial > 0 && hr->trial <= TA_MODEL_MAX_ROUTES && hr->slot[hr->trial - 1] > 0 && pg != NULL) {
        uint64_t t = hr->trial_token;
        atomic_compare_exchange_strong(&pg->slots[hr->slot[hr->trial - 1] - 1].trial, &t, 0);
    }
    hr->trial = 0;
    hr->trial_token = 0;
}

void ta_health_report(ta_health_req_t *hr, int i, int outcome, int status, const char *why,
                      int64_t head_ms)
{
    char what[160];

    if (hr == NULL || i < 0 || i >= TA_MODEL_MAX_ROUTES || pg == NULL)
        return;
    int si = (int)hr->slot[i] - 1;
    bool trial = hr->trial == i + 1;
    if (outcome == TA_HEALTH_NONE || si < 0) {
        if (trial)
            give_back(hr);
        return;
    }
    if (trial) {
        hr->trial = 0;
        hr->trial_token = 0;
    }
    int64_t now = now_mono();
    hl_slot_t *s = &pg->slots[si];
    count(s, outcome == TA_HEALTH_FAIL, head_ms, now);
    if (outcome == TA_HEALTH_OK) {
        on_success(si, trial ? 1 : 0, now);
        return;
    }
    if (status > 0)
        snprintf(what, sizeof(what), "HTTP %d", status);
    else
        snprintf(what, sizeof(what), "%s", why != NULL && why[0] != '\0' ? why : "failed");
    on_failure(si, what, trial ? 1 : 0, now);
}

void ta_health_done(ta_health_req_t *hr)
{
    if (hr != NULL)
        give_back(hr);
}

/* ---- probes ------------------------------------------------------------------- */

int ta_health_probe_due(ta_health_probe_t *out, int cap)
{
    int k = 0;
    if (conf.probe_interval_ms <= 0 || pg == NULL)
        return 0;
    int64_t now = now_mono();
    for (uint32_t i = 0; i < HL_SLOTS && k < cap; i++) {
        hl_slot_t *s = &pg->slots[i];
        if (atomic_load_explicit(&s->key, memory_order_acquire) == 0 ||
            atomic_load_explicit(&s->state, memory_order_acquire) != TA_HEALTH_DOWN || LD(s->open_until) > now)
            continue;
        int64_t next = LD(s->probe_next);
        if (next > now)
            continue;
        if (atomic_compare_exchange_strong(&s->probe_next, &next, now + conf.probe_interval_ms * NS_PER_MS))
            out[k++] = (ta_health_probe_t){(int32_t)i, s->provider_id};
    }
    return k;
}

void ta_health_probe_result(int32_t slot, bool ok, const char *why, int64_t latency_ms)
{
    if (pg == NULL || slot < 0 || (uint32_t)slot >= HL_SLOTS ||
        atomic_load_explicit(&pg->slots[slot].key, memory_order_acquire) == 0)
        return;
    int64_t now = now_mono();
    if (ok) {
        on_success(slot, 2, now);
    } else {
        char what[160];
        snprintf(what, sizeof(what), "probe: %s", why != NULL && why[0] != '\0' ? why : "failed");
        on_failure(slot, what, 2, now);
    }
}

/* ---- reading ------------------------------------------------------------------- */

static json_t *time_json(int64_t ns)
{
    char buf[40];
    if (ns <= 0)
        return json_null();
    return json_string(ta_time_format(ns / 1000000000LL, buf));
}

static json_t *quantile_json(const uint64_t *lat, double q)
{
    uint64_t total = 0, cum = 0;
    for (int i = 0; i < TA_HEALTH_LAT_BINS; i++)
        total += lat[i];
    if (total == 0)
        return json_null();
    /* the smallest bin bound under which at least q of the answers came */
    uint64_t need = (uint64_t)((double)total * q + 0.999999);
    for (int i = 0; i < TA_HEALTH_LAT_BINS; i++) {
        cum += lat[i];
        if (cum >= need)
            return json_integer(bin_le[i] == INT64_MAX ? bin_le[i - 1] + 1 : bin_le[i]);
    }
    return json_null();
}

static json_t *rate_json(const win_sum_t *w)
{
    return w->calls == 0 ? json_null() : json_real((double)w->fails / (double)w->calls);
}

json_t *ta_health_provider_json(uint64_t provider_id)
{
    json_t *routes = json_array(), *out;
    win_sum_t all = {0};
    int nroutes = 0, ndown = 0, worst = TA_HEALTH_HEALTHY;
    char last_error[160] = "";
    int64_t last_at = 0;

    if (routes == NULL)
        return NULL;
    if (pg != NULL) {
        int64_t now = now_mono(), wall = ta_now_ns();
        for (uint32_t i = 0; i < HL_SLOTS; i++) {
            hl_slot_t *s = &pg->slots[i];
            if (atomic_load_explicit(&s->key, memory_order_acquire) == 0 || s->provider_id != provider_id)
                continue;
            win_sum_t w = {0};
            char err[160];
            window(s, now, &w);
            lock();
            int st = (int)atomic_load_explicit(&s->state, memory_order_acquire);
            memcpy(err, s->last_error, sizeof(err));
            int64_t err_at = s->last_error_at, changed = s->changed_at, open = LD(s->open_until);
            uint32_t consecutive = LD(s->consecutive);
            unlock();
            err[sizeof(err) - 1] = '\0';
            nroutes++;
            if (st == TA_HEALTH_DOWN)
                ndown++;
            if (st > worst)
                worst = st;
            if (err_at > last_at) {
                last_at = err_at;
                memcpy(last_error, err, sizeof(last_error));
            }
            all.calls += w.calls;
            all.fails += w.fails;
            for (int b = 0; b < TA_HEALTH_LAT_BINS; b++)
                all.lat[b] += w.lat[b];
            json_array_append_new(
                routes,
                json_pack("{s:s,s:s,s:o,s:o,s:o,s:I,s:I,s:I,s:o,s:o,s:o,s:o}", "upstream_name", s->upstream,
                          "state", ta_health_state_name(st), "last_error",
                          err_at > 0 ? json_string(err) : json_null(), "last_error_at", time_json(err_at),
                          "error_rate", rate_json(&w), "calls", (json_int_t)w.calls, "errors",
                          (json_int_t)w.fails, "consecutive_failures", (json_int_t)consecutive, "p50_ms",
                          quantile_json(w.lat, 0.50), "p95_ms", quantile_json(w.lat, 0.95), "state_since",
                          time_json(changed), "cooldown_until",
                          st == TA_HEALTH_DOWN && open > now ? time_json(wall + (open - now)) : json_null()));
        }
    }
    /* the provider: down when every route it serves is down, degraded when
     * any is not healthy */
    int state = nroutes > 0 && ndown == nroutes ? TA_HEALTH_DOWN
                : worst != TA_HEALTH_HEALTHY   ? TA_HEALTH_DEGRADED
                                               : TA_HEALTH_HEALTHY;
    out = json_pack("{s:s,s:o,s:o,s:o,s:I,s:I,s:o,s:o,s:i,s:o}", "state", ta_health_state_name(state),
                    "last_error", last_at > 0 ? json_string(last_error) : json_null(), "last_error_at",
                    time_json(last_at), "error_rate", rate_json(&all), "calls", (json_int_t)all.calls,
                    "errors", (json_int_t)all.fails, "p50_ms", quantile_json(all.lat, 0.50), "p95_ms",
                    quantile_json(all.lat, 0.95), "window_s", TA_HEALTH_WINDOW_S, "routes", routes);
    return out;
}

int ta_health_views(ta_health_view_t *out, int cap)
{
    int k = 0;
    if (pg == NULL)
        return 0;
    for (uint32_t i = 0; i < HL_SLOTS; i++) {
        hl_slot_t *s = &pg->slots[i];
        if (atomic_load_explicit(&s->key, memory_order_acquire) == 0)
            continue;
        if (k < cap) {
            ta_health_view_t *v = &out[k];
            v->provider_id = s->provider_id;
            memcpy(v->upstream, s->upstream, sizeof(v->upstream));
            v->upstream[sizeof(v->upstream) - 1] = '\0';
            lock();
            memcpy(v->provider_name, s->provider_name, sizeof(v->provider_name));
            unlock();
            v->provider_name[sizeof(v->provider_name) - 1] = '\0';
            v->state = (int)atomic_load_explicit(&s->state, memory_order_acquire);
            v->calls = LD(s->calls_total);
            v->fails = LD(s->fails_total);
            v->lat_sum_ms = LD(s->lat_sum_ms);
            for (int b = 0; b < TA_HEALTH_LAT_BINS; b++)
                v->lat[b] = LD(s->lat_total[b]);
        }
        k++;
    }
    return k;
}
