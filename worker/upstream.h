/*
 * upstream.h - the worker's HTTP/1.1 client for provider calls, driven by
 * the worker's h2o evloop: a keep-alive pool, per-call timeouts (connect,
 * first byte, idle, total), streaming with back-pressure and cancellation.
 *
 * Two engines behind one interface (ta_upstream_opts_t.engine):
 *   TA_UP_ENGINE_H2O   (worker/upstream_h2o.c) the /v1 default: h2o's own
 *                      sockets, TLS (h2o_socket_ssl_handshake) and response
 *                      parser (picohttpparser) on the worker's loop, with our
 *                      own keep-alive pool (docs/ARCHITECTURE.md says why not
 *                      h2o 2.2.5's http1client);
 *   TA_UP_ENGINE_CURL  (worker/upstream_curl.c) a libcurl multi handle whose
 *                      sockets and timer are driven by the same loop: the
 *                      control-plane calls (provider test and model sync), and
 *                      /v1 when upstream_engine = curl.
 *
 * A request is never sent twice: neither engine re-sends a request on a
 * reused connection that died before answering (curl's own silent re-send is
 * refused, see upstream_curl.c), so one ta_upcall_start() is at most one
 * request seen by the provider.
 *
 * Callers: worker processes only, on the loop thread. Create after fork (the
 * curl engine calls curl_global_init); never share across processes.
 */
#ifndef TA_UPSTREAM_H
#define TA_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <h2o.h>

typedef struct ta_upstream ta_upstream_t; /* per worker: multi handle + pool */
typedef struct ta_upcall ta_upcall_t;     /* one call in flight */

enum ta_up_engine { TA_UP_ENGINE_H2O = 0, TA_UP_ENGINE_CURL = 1 };

typedef struct ta_upstream_opts {
    int engine;            /* enum ta_up_engine */
    long max_connects;     /* idle connections kept in the pool (curl: CURLMOPT_MAXCONNECTS); 0 = automatic
                            * (curl: 4 per transfer added; h2o engine: 256) */
    long max_host_conns;   /* curl only: per-host connection cap (CURLMOPT_MAX_HOST_CONNECTIONS); 0 = none */
    long max_idle_s;       /* pooled connections idle longer are not reused (CURLOPT_MAXAGE_CONN);
                            * keep it below the providers' keep-alive timeout; 0 = 30 */
    bool allow_resend;     /* TEST ONLY, curl only: let curl re-send a request on a dead
                            * reused connection (demonstrates the duplicate it would cause) */
    const char *ca_file;   /* PEM file of CAs trusted for https:// besides the system's store
                            * (setting upstream_ca_file); NULL or "" = the system's store only */
    h2o_multithread_receiver_t *getaddr; /* h2o engine: the loop's receiver of h2o_hostinfo_getaddr
                            * answers (h2o_context_t.receivers.hostinfo_getaddr); NULL = its own */
} ta_upstream_opts_t;

/** Create the client on `loop`. Returns 0 or a negative TA_E* code. */
int ta_upstream_create(ta_upstream_t **out, h2o_loop_t *loop, const ta_upstream_opts_t *opts);
/** Cancel every call still running (their on_done is NOT called) and free. */
void ta_upstream_destroy(ta_upstream_t *up);
/** Calls in flight. */
size_t ta_upstream_inflight(const ta_upstream_t *up);

/* Outcome of a call (on_done's err). */
enum ta_up_err {
    TA_UP_OK = 0,
    TA_UP_ECONNECT = -1,       /* could not connect (refused, unreachable, DNS, TLS handshake or
                                * certificate): nothing was sent */
    TA_UP_ETIMEOUT_CONNECT = -2, /* connect timeout: nothing was sent */
    TA_UP_ETIMEOUT_FIRST_BYTE = -3, /* sent, no response byte within first_byte_timeout_ms */
    TA_UP_ETIMEOUT_IDLE = -4,  /* response started, then nothing for idle_timeout_ms */
    TA_UP_ETIMEOUT_TOTAL = -5, /* the whole call ran past total_timeout_ms */
    TA_UP_ENORESPONSE = -6,    /* the request may have reached the provider, the connection
                                * died before any response byte; not re-sent */
    TA_UP_ECUT = -7,           /* the response started, then the connection broke */
    TA_UP_EABORTED = -8,       /* the consumer aborted (on_head/on_data returned < 0) */
    TA_UP_EOTHER = -9,         /* anything else (protocol, out of memory); see info.msg */
};
/** "connect", "timeout_connect", ... for logs and metrics labels. */
const char *ta_up_err_name(int err);
/** True when nothing of the request can have reached the provider (safe to try
 *  another route). */
static inline bool ta_up_err_unsent(int err) { return err == TA_UP_ECONNECT || err == TA_UP_ETIMEOUT_CONNECT; }

typedef struct ta_upcall_info {
    int status;              /* HTTP status of the final response; 0 if none */
    int curl_code;           /* CURLcode (curl engine; 0 for the h2o engine) */
    const char *msg;         /* the error's text ("" if none); valid during on_done */
    uint64_t bytes_in;       /* response body bytes delivered to on_data */
    bool reused;             /* the call ran on a pooled connection */
} ta_upcall_info_t;

/* on_data's return values */
enum { TA_UP_CONSUMED = 0, TA_UP_PAUSE = 1 };

typedef struct ta_upcall_spec {
    const char *url;
    const char *const *headers;  /* "Name: value" lines, copied */
    size_t nheaders;
    const char *body;            /* POST body when non-NULL (not copied: must stay valid
                                  * until on_done or ta_upcall_cancel) */
    size_t body_len;
    int32_t connect_timeout_ms;  /* 0 = 10000 */
    int32_t first_byte_timeout_ms; /* after the request was sent; 0 = none */
    int32_t idle_timeout_ms;     /* between response bytes; 0 = none */
    int32_t total_timeout_ms;    /* 0 = none */
    void *ctx;
    /** One response header line (name and value trimmed), before on_head.
     *  May be NULL. Return < 0 to abort. */
    int (*on_header)(void *ctx, const char *name, size_t nlen, const char *value, size_t vlen);
    /** The status line and headers are complete. Return < 0 to abort. May be NULL. */
    int (*on_head)(void *ctx, int status);
    /** Response body bytes. Return TA_UP_CONSUMED, or TA_UP_PAUSE to refuse these
     *  bytes for now: they are delivered again (possibly with more) after
     *  ta_upcall_resume(); or < 0 to abort. */
    int (*on_data)(void *ctx, const char *p, size_t n);
    /** Called exactly once unless the call was cancelled; the call is freed
     *  right after it returns. May start new calls or cancel others. */
    void (*on_done)(void *ctx, int err, const ta_upcall_info_t *info);
} ta_upcall_spec_t;

/** Start a call (GET when spec->body is NULL, else POST). Returns 0 with *out,
 *  or a negative TA_E* code (nothing started, on_done not called). */
int ta_upcall_start(ta_upstream_t *up, const ta_upcall_spec_t *spec, ta_upcall_t **out);
/** Resume delivery after on_data returned TA_UP_PAUSE. Safe from any callback
 *  (deferred to the loop when called from inside a curl callback). */
void ta_upcall_resume(ta_upcall_t *call);
/** Stop the call and forget it: on_done is not called. Safe from any callback,
 *  including this call's own on_data (the call is then freed later). */
void ta_upcall_cancel(ta_upcall_t *call);

#endif
