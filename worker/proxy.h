/*
 * proxy.h - the OpenAI-compatible /v1 endpoints (DESIGN.md sections 4 and 5):
 *   POST /v1/chat/completions (JSON and SSE), POST /v1/completions,
 *   POST /v1/embeddings, GET /v1/models, GET /v1/usage.
 *
 * Per request: one read transaction (key hash -> keys -> quota -> user,
 * group, model by name, routes -> providers), the body parsed and validated,
 * one write transaction (ta_quota_hold), the upstream call through the
 * worker's libcurl multi (worker/upstream.h), routes tried in priority order
 * while nothing reached the client, then exactly one ta_event_t handed to
 * billing through the ring (ta_ring_submit).
 *
 * Provider keys: stored sealed (AES-256-GCM under the master key). worker/
 * must not depend on admin/ (where ta_unseal lives), so the master passes the
 * unseal function in the conf (conf.unseal = ta_unseal). The key is unsealed
 * into the request's own memory for the upstream call only and wiped after.
 *
 * Worker processes only, on the loop thread.
 */
#ifndef TA_PROXY_H
#define TA_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "ledger/event.h"
#include "ledger/ring.h"
#include "ledger/store.h"
#include "worker/server.h"

/** Same contract as ta_unseal() of admin/crypto.h. */
typedef int (*ta_unseal_fn)(const uint8_t key[32], const uint8_t *sealed, size_t len, char *out,
                            size_t cap);

enum { TA_PROXY_DRAIN = 0, TA_PROXY_ABORT = 1 }; /* = TA_ON_DISCONNECT_* of master/config.h */

typedef struct ta_proxy_conf {
    ta_store_t *store;            /* borrowed, opened by this worker */
    ta_ring_t *ring;              /* borrowed; NULL: events only reach on_event (tests) */
    const uint8_t *master_key;    /* 32 bytes, borrowed */
    ta_unseal_fn unseal;          /* ta_unseal, passed by the master */
    int reserve;                  /* enum ta_reserve (ledger/quota.h) */
    const char *timezone;         /* quota_timezone; NULL = "UTC" */
    int on_disconnect;            /* TA_PROXY_DRAIN / TA_PROXY_ABORT */
    int64_t stream_drain_timeout_ms; /* bound of a drain after the client left; 0 = 60000 */
    size_t max_body_size;         /* request bodies; 0 = 16 MiB */
    size_t max_response_size;     /* buffered (non-streaming) answers; 0 = 64 MiB */
    long upstream_max_connections; /* idle pool size per worker; 0 = automatic (ta_upstream_opts_t) */
    /** Optional: every event, after it went to the ring (tests, logs). */
    void (*on_event)(void *arg, const ta_event_t *ev);
    void *on_event_arg;
} ta_proxy_conf_t;

typedef struct ta_proxy ta_proxy_t;

/** In the worker's conf.setup hook: registers "/v1" and the handler. conf is
 *  copied (the pointers in it are borrowed). Returns 0 or a negative code. */
int ta_proxy_setup(ta_worker_t *w, const ta_proxy_conf_t *conf, ta_proxy_t **out);
/** Optional, in conf.ready: creates the upstream client now rather than on
 *  the first request. */
int ta_proxy_ready(ta_proxy_t *p);
/** After ta_worker_run() returned. */
void ta_proxy_destroy(ta_proxy_t *p);

/* Per-process counters (for /metrics). */
typedef struct ta_proxy_stats {
    uint64_t requests;          /* /v1 requests answered */
    uint64_t by_class[6];       /* by status class: [2] 2xx, [4] 4xx, [5] 5xx */
    uint64_t upstream_errors;   /* calls that ended with a transport error or timeout */
    uint64_t holds_inflight;    /* holds taken whose event is not out yet */
    uint64_t latency_le_ms[8];  /* histogram: <=10, 50, 100, 500, 1000, 5000, 30000, +Inf (cumulative on output) */
    uint64_t latency_sum_ms;
} ta_proxy_stats_t;
void ta_proxy_stats(const ta_proxy_t *p, ta_proxy_stats_t *out);
/** Append the Prometheus text of this process's counters to buf; returns the
 *  length written (truncated to cap). */
size_t ta_proxy_metrics_text(const ta_proxy_t *p, char *buf, size_t cap);

#endif
