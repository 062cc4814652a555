/*
 * health.h - provider route health: per route (a provider and the upstream
 * model name a model's route sends) a state, healthy / degraded / down, its
 * last error, its error rate and latency over the last minutes, in one
 * table shared by every worker process. The proxy asks it for the order in
 * which to try a request's routes (a route that is down is skipped, routes
 * of equal priority share the load by weight) and tells it how each
 * upstream call ended. The layout, the lock, the state machine and the crash
 * behaviour are described at the top of health.c; docs/ARCHITECTURE.md
 * ("Provider health") has the picture.
 *
 * Processes:
 *   master   ta_health_create() before the first fork (an anonymous shared
 *            mapping every worker of every generation inherits).
 *   worker   ta_health_configure() once after fork, then everything else on
 *            the loop thread.
 * A process that never inherited a table (unit tests, tools) gets a private
 * one on first use. Nothing here touches LMDB or blocks (the lock guards a
 * few stores).
 */
#ifndef TA_HEALTH_H
#define TA_HEALTH_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "schema.h"

enum ta_health_state { TA_HEALTH_HEALTHY = 0, TA_HEALTH_DEGRADED = 1, TA_HEALTH_DOWN = 2 };

/* How a call ended, for ta_health_report. */
enum ta_health_outcome {
    TA_HEALTH_NONE = 0, /* nothing learnt (the gateway itself aborted the call) */
    TA_HEALTH_OK,       /* the provider answered below 500 (a 4xx is the caller's fault) */
    TA_HEALTH_FAIL,     /* connect error, timeout, broken answer, or a 5xx */
};

#define TA_HEALTH_WINDOW_S 300 /* error rate and latency: the last 5 minutes */
#define TA_HEALTH_LAT_BINS 16

/* The settings (health_*, master/config.c). */
typedef struct ta_health_conf {
    int32_t failures;         /* failures in a row that cool a route down; >= 1 */
    int64_t cooldown_ms;      /* how long a cooled route is skipped; >= 1 */
    int64_t probe_interval_ms; /* > 0: a background probe, not a client request, is the trial */
    int32_t degraded_percent; /* error rate over the window that makes a route degraded; 1..100 */
} ta_health_conf_t;

/* One route of a request, as the proxy resolved it. Strings are read during
 * the call only. */
typedef struct ta_health_route {
    uint64_t provider_id;
    const char *upstream;      /* the upstream model name */
    const char *provider_name; /* for status and webhooks; NULL keeps the known one */
    int32_t priority;          /* lowest first */
    int32_t weight;            /* 1..1000; 0 reads as 1 */
    int64_t trial_ms;          /* how long a trial call on it may take (its total timeout) */
} ta_health_route_t;

/* What a request keeps between ta_health_order and its end. All zero
 * (nothing known, nothing claimed) until ta_health_order fills it. */
typedef struct ta_health_req {
    uint16_t slot[TA_MODEL_MAX_ROUTES]; /* table slot + 1 of each route in the new order; 0 none */
    uint8_t trial;                      /* 1 + the route (new order) this request is the trial of; 0 none */
    uint64_t trial_token;
} ta_health_req_t;

/* A change of state, for the webhook (ta_health_set_listener). */
typedef struct ta_health_event {
    uint64_t provider_id;
    char provider_name[128];
    char upstream[128];
    int old_state, new_state;
    char reason[224];
    int64_t at_ns;  /* unix ns */
    char id[96];    /* unique per event: "health-<provider>-<slot>-<at ms>-<n>" */
} ta_health_event_t;

/** Master, before the first fork: map the table (about 3 MiB of address
 *  space, touched as routes appear). 0 or -errno. Idempotent. */
int ta_health_create(void);
/** Worker, once after fork (and unit tests): the settings this process
 *  applies. Values out of range are clamped. */
void ta_health_configure(const ta_health_conf_t *conf);

/** The order in which a request tries its routes. routes[0..n) come in
 *  priority order (lowest first; equal priorities in the model's order).
 *  Fills order[] with indexes into routes and returns how many to try
 *  (>= 1 when n >= 1):
 *    - a route that is down is left out while it cools down;
 *    - a route whose cooldown is over goes first when this request wins
 *      its trial (one request at a time, across all workers; none when
 *      probes are on): the request is then that trial (hr->trial);
 *    - among routes of equal priority, the first is chosen by smooth
 *      weighted round robin (per worker and model: route i gets weight_i of
 *      every sum(weights) requests), the others follow by weight;
 *    - when every route is down and none may be tried, only the one whose
 *      last failure is the oldest is returned (a request is never refused
 *      for health alone: that route has had the longest to recover).
 *  hr is filled for ta_health_report / ta_health_done. */
int ta_health_order(uint64_t model_id, const ta_health_route_t *routes, int n, int *order,
                    ta_health_req_t *hr);
/** The call on route i (of the new order) ended. status: the provider's
 *  HTTP status (0: none); why: what failed when there is no status
 *  ("connect", "timeout_first_byte" ...; may be NULL); head_ms: time from
 *  the call's start to the provider's answer head (< 0: none). */
void ta_health_report(ta_health_req_t *hr, int i, int outcome, int status, const char *why,
                      int64_t head_ms);
/** The request ended: a trial it won but never ran is given back. */
void ta_health_done(ta_health_req_t *hr);

/* ---- background probes (health_check_interval_s > 0) ---------------------- */

typedef struct ta_health_probe {
    int32_t slot;
    uint64_t provider_id;
} ta_health_probe_t;
/** Claims (across workers) the routes due a probe now: down, cooled down,
 *  not probed within the interval. Returns how many (<= cap). */
int ta_health_probe_due(ta_health_probe_t *out, int cap);
/** A probe of slot ended: ok (the provider answered 2xx) brings it back,
 *  anything else cools it down again. */
void ta_health_probe_result(int32_t slot, bool ok, const char *why, int64_t latency_ms);

/* ---- reading ---------------------------------------------------------------- */

/** The `health` object of a provider for /api/admin/providers/ (API.md):
 *  state, last_error, last_error_at, error_rate, calls, errors, p50_ms,
 *  p95_ms over the window, and `routes` (the same per route). New reference. */
json_t *ta_health_provider_json(uint64_t provider_id);

/* One route for /metrics (worker/metrics.c). */
typedef struct ta_health_view {
    uint64_t provider_id;
    char provider_name[128];
    char upstream[128];
    int state;
    uint64_t calls, fails;                      /* since the master started */
    uint64_t lat[TA_HEALTH_LAT_BINS];           /* per bin, not cumulative */
    uint64_t lat_sum_ms;
} ta_health_view_t;
/** Copies up to cap routes the table knows; returns how many there are. */
int ta_health_views(ta_health_view_t *out, int cap);
/** Upper bound (ms) of latency bin i; INT64_MAX for the last. */
int64_t ta_health_bin_le_ms(int i);
const char *ta_health_state_name(int state);

/** The function that hears every change of state (this process's, on the
 *  loop thread, after the table's lock was released); NULL = none. */
void ta_health_set_listener(void (*fn)(void *arg, const ta_health_event_t *ev), void *arg);

/** TESTS: the monotonic clock (ns) the table reads; NULL = ta_mono_ns. */
void ta_health_set_clock(int64_t (*fn)(void));

#endif
