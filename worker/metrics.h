/*
 * metrics.h - the gateway's Prometheus counters, kept in one MAP_SHARED
 * page so that GET /metrics on any worker shows the sum over all workers,
 * and so that a worker that is killed and restarted does not reset them.
 * The layout, the ordering argument and the crash behaviour are described at
 * the top of metrics.c.
 *
 * Series (all prefixed tokenaudit_):
 *   requests_total{status,model}   counter: /v1 answers. status is one of a
 *        fixed list of codes (200, 400, 401, ...), else its class ("4xx"),
 *        else "other". model is the public model name once the request
 *        named a model that exists; "" when it did not get that far (bad
 *        key, bad body, unknown model, GET /v1/models, /v1/usage). Model
 *        cardinality is bounded: the page holds TA_METRICS_MODELS names
 *        (claimed first come, first served, shared by all workers; never
 *        freed while the master lives); further models count as
 *        model="other". A real model named "other" shares that row.
 *   request_duration_seconds       histogram of /v1 answers (fixed buckets
 *        TA_METRICS_BUCKETS_TEXT; to the end of the stream for SSE)
 *   upstream_errors_total{kind}    counter per upstream call that failed:
 *        connect (refused/unreachable), timeout (any of the call's timeouts),
 *        status (the provider answered 5xx or 429), no_response (the
 *        connection died before any answer byte), cut (the answer broke
 *        off), other (TLS, protocol). A call retried on the next route
 *        counts once per call.
 *   holds_in_flight                gauge: holds taken whose event is not out yet
 *   ring_depth                     gauge: ring tickets claimed, not yet freed by billing
 *   ring_pending                   gauge: events waiting in workers' own queues (ring full)
 *   workers                        gauge: live worker processes (all generations)
 *   worker_restarts_total          counter: dead workers the master restarted
 *   billing_alive                  gauge: 1 when billing beats (ledger/heartbeat.h)
 *   config_generation              gauge: the master's config generation
 *   provider_calls_total, provider_errors_total, provider_latency_seconds
 *   (histogram: to the provider's answer head), provider_route_state (0
 *        healthy, 1 degraded, 2 down), each {provider_id,provider,upstream}:
 *        per provider route, from ledger/health.h's table
 *
 * Processes:
 *   master  ta_metrics_create() before the first fork; ta_metrics_process_gone()
 *           for every reaped worker; ta_metrics_worker_restarted().
 *   worker  ta_metrics_worker_start() once (worker/server.c does it), then the
 *           counting calls (worker/proxy.c) and ta_metrics_text() (/metrics),
 *           on the loop thread.
 * A process that never inherited a page (unit tests, tools) gets a private
 * one on its first call, so every call works and shows that process only.
 * Nothing here blocks, allocates after the page exists, or touches LMDB.
 */
#ifndef TA_METRICS_H
#define TA_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "ledger/ring.h"

#define TA_METRICS_MAX_SLOTS 256 /* worker slots; slot numbers wrap modulo this */
#define TA_METRICS_MAX_PROCS 512 /* live worker processes with gauges */
#define TA_METRICS_MODELS 64     /* distinct model names, then "other" */
#define TA_METRICS_MODEL_NAME 128
#define TA_METRICS_NBUCKETS 16   /* histogram buckets including +Inf */
#define TA_METRICS_BUCKETS_TEXT                                                                    \
    "0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 30 60 120 300 +Inf"

enum ta_metrics_upstream_kind {
    TA_METRICS_UP_CONNECT = 0,
    TA_METRICS_UP_TIMEOUT,
    TA_METRICS_UP_STATUS,
    TA_METRICS_UP_NO_RESPONSE,
    TA_METRICS_UP_CUT,
    TA_METRICS_UP_OTHER,
    TA_METRICS_UP_NKINDS
};

/** Master, before the first fork: map the page (children inherit it) and
 *  remember the ring for ring_depth (may be NULL). 0 or -errno. Idempotent. */
int ta_metrics_create(ta_ring_t *ring);
/** Master, before the first fork: the data directory whose filesystem
 *  /metrics reports (tokenaudit_data_dir_free_bytes, _size_bytes). */
void ta_metrics_set_data_dir(const char *dir);
/** Master: a worker process was reaped (any exit): its gauges leave the sums.
 *  Its counters stay in its slot. */
void ta_metrics_process_gone(pid_t pid);
/** Master: a dead worker is being restarted. */
void ta_metrics_worker_restarted(void);

/** Worker, once at start: this process counts into worker slot `slot`
 *  (0..N-1; a restarted worker continues the counters of its slot) and takes
 *  a gauge entry. Without a free gauge entry (more than TA_METRICS_MAX_PROCS
 *  live workers) it logs once; its gauges are then not shown. */
void ta_metrics_worker_start(int slot);
/** Worker: one /v1 answer. model: the resolved public model name, or NULL. */
void ta_metrics_request(int status, const char *model, int64_t duration_ns);
/** Worker: one failed upstream call (TA_METRICS_UP_*). */
void ta_metrics_upstream_error(int kind);
/** Worker: map a ta_upcall's err (worker/upstream.h, not OK / aborted) to a kind. */
int ta_metrics_upstream_kind(int up_err);
/** Worker: +1 when a hold is taken, -1 when its event went out. */
void ta_metrics_holds_add(int64_t delta);
/** Worker: this process's pending-queue length (each loop turn). */
void ta_metrics_set_ring_pending(uint64_t n);

/* Sums over every slot and every live worker (a read of independent
 * counters, not an atomic snapshot). */
typedef struct ta_metrics_totals {
    uint64_t requests;          /* all /v1 answers */
    uint64_t by_class[6];       /* [2] 2xx ... [5] 5xx, [0] other */
    uint64_t upstream_errors[TA_METRICS_UP_NKINDS];
    uint64_t duration_bucket[TA_METRICS_NBUCKETS]; /* per bucket, not cumulative */
    uint64_t duration_sum_us;
    int64_t holds_in_flight;
    uint64_t ring_pending;
    uint64_t ring_depth;
    uint64_t workers;
    uint64_t worker_restarts;
} ta_metrics_totals_t;
/** Any process with a page (or its private one). */
void ta_metrics_totals(ta_metrics_totals_t *out);
/** Upper bound (ms) of histogram bucket i (INT64_MAX for +Inf). */
int64_t ta_metrics_bucket_le_ms(int i);

/** The whole /metrics page (Prometheus text format 0.0.4) into buf. Returns
 *  the length the page needs (like snprintf): when that is >= cap, buf holds
 *  a truncated, NUL-terminated prefix; call again with a larger buffer. */
size_t ta_metrics_text(char *buf, size_t cap);

#endif
