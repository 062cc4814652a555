/*
 * proxy.h - the OpenAI-compatible /v1 endpoints:
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
    int64_t stream_drain_timeout_ms; /* bound of a drain after the client left; 0: it ends at once, charging an estimate */
    size_t max_body_size;         /* request bodies; > 0 (the setting max_body_size) */
    size_t max_response_size;     /* buffered (non-streaming) answers; 0 = 64 MiB */
    long upstream_max_connections; /* idle pool size per worker; 0 = automatic (ta_upstream_opts_t) */
    int upstream_engine;          /* enum ta_up_engine (worker/upstream.h); 0 = h2o */
    const char *upstream_ca_file; /* ta_upstream_opts_t.ca_file; NULL or "" = none */
    /** Optional: every event, after it went to the ring (tests, logs). */
    void (*on_event)(void *arg, const ta_event_t *ev);
    void *on_event_arg;
} ta_proxy_conf_t;

typedef struct ta_proxy ta_proxy_t;

/** In the worker's conf.setup hook: registers "/v1" and the handler. conf is
 *  copied (the pointers in it are borrowed and must outlive the proxy).
 *  Returns 0, TA_EINVAL (no store, max_body_size 0, a negative drain
 *  timeout), TA_ECONFIG or -ENOMEM. */
int ta_proxy_setup(ta_worker_t *w, const ta_proxy_conf_t *conf, ta_proxy_t **out);
/** Optional, in conf.ready: creates the upstream client now rather than on
 *  the first request. */
int ta_proxy_ready(ta_proxy_t *p);
/** After ta_worker_run() returned and before ta_worker_destroy() and
 *  ta_store_close(): abandons the requests still alive (no event: their
 *  holds are released by billing's dead-worker cleanup, as when a worker
 *  dies), closes the upstream client and the cached read transaction, wipes the
 *  clear provider keys. The worker process that set the proxy up owns it. */
void ta_proxy_destroy(ta_proxy_t *p);

/** ms as OpenAI writes durations in x-ratelimit-reset-*: "20ms", "6.5s",
 *  "1m0s", "1h2m3.25s" (negative reads as 0). Any process. */
void ta_proxy_duration(int64_t ms, char *out, size_t cap);

#endif
