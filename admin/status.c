/*
 * status.c - GET /api/admin/status/: one answer with the gateway's live
 * figures for the console's dashboard, read from what is already summed
 * over the workers (conf.live: the master hands in worker/metrics.h's
 * shared page, the sums /metrics prints) and from billing's heartbeat page
 * (ledger/heartbeat.h). Nothing here touches LMDB.
 *
 * Rates need two readings of a counter: every worker samples the request
 * count and billing's applied events once a second (ta_admin_tick, on its
 * loop) into a ring of TA_ADMIN_SAMPLES. The counters are global, so any
 * worker's samples give the gateway's rate; the window is the last minute,
 * shorter for a worker that started less than a minute ago ("window_s"
 * says how long), and the rate is null before a worker's first second.
 *
 * Worker processes only, on the loop thread.
 */
#include "admin/admin_internal.h"
#include "ledger/heartbeat.h"

#include <string.h>

#ifndef TA_VERSION
#define TA_VERSION "0.1.0"
#endif

#define WINDOW_NS (60LL * 1000000000LL)
#define SAMPLE_EVERY_NS 1000000000LL

static void read_live(const ta_admin_t *a, ta_admin_live_t *live, uint64_t *events)
{
    uint64_t warnings = 0;

    memset(live, 0, sizeof(*live));
    if (a->conf.live != NULL)
        a->conf.live(live);
    if (live->n_upstream > TA_ADMIN_UPSTREAM_KINDS)
        live->n_upstream = TA_ADMIN_UPSTREAM_KINDS;
    *events = 0;
    ta_heartbeat_billing_counts(events, &warnings);
}

int32_t ta_admin_tick(void *arg)
{
    ta_admin_t *a = arg;
    int64_t now = ta_mono_ns();
    ta_admin_live_t live;
    uint64_t events;

    if (a->nsamples > 0 &&
        now - a->samples[(a->next + TA_ADMIN_SAMPLES - 1) % TA_ADMIN_SAMPLES].t_ns < SAMPLE_EVERY_NS)
        return -1;
    read_live(a, &live, &events);
    a->samples[a->next] = (ta_admin_sample_t){now, live.requests, events};
    a->next = (a->next + 1) % TA_ADMIN_SAMPLES;
    if (a->nsamples < TA_ADMIN_SAMPLES)
        a->nsamples++;
    return -1;
}

/* The oldest sample at most a minute old, or NULL when none is a second old. */
static const ta_admin_sample_t *window_start(const ta_admin_t *a, int64_t now)
{
    const ta_admin_sample_t *best = NULL;

    for (size_t i = 0; i < a->nsamples; i++) {
        const ta_admin_sample_t *s = &a->samples[i];
        if (now - s->t_ns <= WINDOW_NS && now - s->t_ns >= SAMPLE_EVERY_NS &&
            (best == NULL || s->t_ns < best->t_ns))
            best = s;
    }
    return best;
}

/* count / (ns / 1e9), rounded to `digits` decimals (a rate, not money: a
 * double is fine for the answer; the rounding is integer). */
static json_t *ratio(uint64_t count, int64_t ns, int digits)
{
    unsigned __int128 scale = digits == 1 ? 10 : 100;
    unsigned __int128 q = ((unsigned __int128)count * 1000000000u * scale + (uint64_t)ns / 2) /
                          (uint64_t)ns;

    return json_real((double)(uint64_t)q / (double)scale);
}

void ta_admin_status(actx_t *c)
{
    const ta_admin_t *a = c->a;
    int64_t now = ta_mono_ns(), now_s = ta_now_s();
    ta_admin_live_t live;
    uint64_t events;
    const ta_admin_sample_t *w;
    json_t *up, *req_rate = NULL, *ev_rate = NULL, *lag_s, *started = NULL;
    char when[32];

    read_live(a, &live, &events);
    w = window_start(a, now);
    if (w != NULL) {
        req_rate = ratio(live.requests - w->requests, now - w->t_ns, 2);
        ev_rate = ratio(events - w->events, now - w->t_ns, 2);
    }
    /* How long billing needs for what waits, at its pace over the window. */
    uint64_t waiting = live.ring_depth + live.ring_pending;
    if (waiting == 0)
        lag_s = json_integer(0);
    else if (w != NULL && events > w->events) /* waiting / events per s, in tenths of s */
        lag_s = json_real((double)(uint64_t)(((unsigned __int128)waiting * (uint64_t)(now - w->t_ns) * 10 +
                                              (events - w->events) * 500000000u) /
                                             ((unsigned __int128)(events - w->events) * 1000000000u)) /
                          10.0);
    else
        lag_s = json_null();
    up = json_object();
    for (size_t i = 0; up != NULL && i < live.n_upstream; i++)
        json_object_set_new(up, live.upstream_errors[i].kind,
                            json_integer((json_int_t)live.upstream_errors[i].count));
    if (a->conf.started_at_s > 0)
        started = json_string(ta_time_format(a->conf.started_at_s, when));
    ta_admin_reply_json(
        c, 200,
        json_pack("{s:s,s:o,s:o,s:I,s:I,s:I,"
                  "s:{s:I,s:o,s:I,s:I,s:{s:I,s:I,s:I,s:I,s:I}},"
                  "s:o,s:{s:I,s:I},s:{s:b,s:I,s:I,s:o,s:I,s:o}}",
                  "version", TA_VERSION,
                  "started_at", started != NULL ? started : json_null(),
                  "uptime_s", a->conf.started_at_s > 0 ? json_integer(now_s - a->conf.started_at_s)
                                                       : json_null(),
                  "config_generation", (json_int_t)ta_heartbeat_generation(),
                  "workers", (json_int_t)live.workers,
                  "worker_restarts", (json_int_t)live.worker_restarts,
                  "requests",
                  "total", (json_int_t)live.requests,
                  "per_s", req_rate != NULL ? req_rate : json_null(),
                  "window_s", (json_int_t)(w != NULL ? (now - w->t_ns) / 1000000000LL : 0),
                  "in_flight", (json_int_t)(live.in_flight > 0 ? live.in_flight : 0),
                  "by_class",
                  "2xx", (json_int_t)live.by_class[2], "3xx", (json_int_t)live.by_class[3],
                  "4xx", (json_int_t)live.by_class[4], "5xx", (json_int_t)live.by_class[5],
                  "other", (json_int_t)(live.by_class[0] + live.by_class[1]),
                  "upstream_errors", up,
                  "ring", "depth", (json_int_t)live.ring_depth, "pending",
                  (json_int_t)live.ring_pending,
                  "billing", "alive", ta_heartbeat_billing_alive(),
                  "pid", (json_int_t)ta_heartbeat_billing_pid(),
                  "events", (json_int_t)events,
                  "events_per_s", ev_rate != NULL ? ev_rate : json_null(),
                  "lag_events", (json_int_t)waiting,
                  "lag_s", lag_s));
}
