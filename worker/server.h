/*
 * server.h - the worker's HTTP server: an h2o 2.2.5 evloop on listening
 * sockets inherited from the master (plain and TLS with ALPN h2), the
 * built-in routes, and the seams other worker code plugs into.
 *
 * Routes (first match wins, in this order):
 *   paths registered with ta_worker_register_path() (the /v1 proxy)
 *   /healthz   200 {"status":"ok","generation":N,"pid":P,"slot":S} while the
 *              ledger opens and billing beats (ledger/heartbeat.h); else 503
 *   /metrics   Prometheus text summed over all workers (worker/metrics.h)
 *   /api       the ta_api_handler_fn given in the conf (admin/ via master)
 *   /console/  the web console's files, and GET / redirecting there, where
 *              /api is served, when conf.console_dir is set (worker/console.h)
 *   anything else: 404 {"error":{...}}
 * With separate admin listeners (conf.admin_listeners), /api is served only
 * on them and registered paths only on the others; /healthz and /metrics on
 * both.
 *
 * Every response carries X-Request-Id: 32 lower-case hex chars of 16 random
 * bytes generated for each request. A client's own X-Request-Id is not
 * reused, because the id is also the key of the request's hold and audit
 * record and must be unique; it is logged next to ours instead.
 * Errors that h2o answers itself before any handler (413 body too large,
 * 400 broken chunked encoding) are rewritten into the JSON error shape.
 * An HTTP/1 request whose body length is ambiguous (two Content-Length
 * fields, Content-Length with Transfer-Encoding, Transfer-Encoding twice or
 * in HTTP/1.0, folded fields) gets 400 invalid_framing before any route
 * runs, and its connection closes (RFC 9112 section 6.3).
 * Handlers must not send with h2o_send_error_*() without
 * H2O_SEND_ERROR_KEEP_HEADERS (it drops the header); use ta_worker_send().
 *
 * Capacity: a worker counts its client connections and requests in flight
 * against RLIMIT_NOFILE (read at ta_worker_create) less TA_WORKER_FD_RESERVE;
 * past it a request (other than /healthz and /metrics) gets 503 server_busy
 * with Retry-After: 1 and its connection closes, and near it the listeners
 * are not read until a connection closes (docs/ARCHITECTURE.md, "Capacity").
 *
 * Shutdown: SIGTERM (or SIGINT) closes this worker's copies of the listening
 * sockets (the master keeps its own, so nothing is refused: the next
 * generation or a sibling accepts), calls h2o_context_request_shutdown()
 * (HTTP/1 answers get "Connection: close", HTTP/2 gets GOAWAY), and keeps
 * the loop running until no request is in flight and no connection is open,
 * or shutdown_timeout_ms passes. Then ta_worker_run() returns 0.
 *
 * Proxy integration (worker/proxy.c):
 *   - conf.setup(w, conf.setup_arg) runs inside ta_worker_create(), before
 *     the h2o context exists: call ta_worker_register_path(w, "/v1") there
 *     and append your handler with h2o_create_handler() on the returned
 *     pathconf (the worker's own first handler, which assigns the request id
 *     and counts the request in flight, is already on it, and then returns
 *     -1 so yours runs).
 *   - conf.ready(w, conf.setup_arg) runs after the context exists, before
 *     the loop: ta_worker_loop()/ta_worker_context() are valid from then on.
 *   - ta_worker_add_tick(): a function called on every loop turn that
 *     returns how long the loop may sleep (curl timer deadlines).
 *   - ta_worker_hold()/ta_worker_release(): keep the worker alive during
 *     shutdown for work that outlives its request (draining an upstream
 *     after the client left).
 *
 * Worker processes only, on the loop thread (one loop per process).
 */
#ifndef TA_SERVER_H
#define TA_SERVER_H

#include <h2o.h>
#include <stdbool.h>
#include <stdint.h>
#include "ledger/store.h"
#include "schema/api.h"

typedef struct ta_worker ta_worker_t;

typedef struct ta_worker_listener {
    int fd;     /* listening socket, inherited; the worker closes its copy at shutdown */
    bool tls;   /* serve TLS (conf.tls_cert_file / tls_key_file) */
    bool admin; /* an admin_listen socket */
} ta_worker_listener_t;

typedef int (*ta_worker_setup_fn)(ta_worker_t *w, void *arg);
/** Called each loop turn; returns the longest the loop may sleep (ms),
 *  or -1 for no preference. */
typedef int32_t (*ta_worker_tick_fn)(void *arg);

typedef struct ta_worker_conf {
    const ta_worker_listener_t *listeners; /* copied */
    size_t nlisteners;
    const char *tls_cert_file;             /* needed if any listener has tls */
    const char *tls_key_file;
    size_t max_body_size;                  /* bytes; larger bodies get 413 */
    int64_t shutdown_timeout_ms;
    uint64_t generation;                   /* config generation, shown by /healthz */
    int slot;                              /* worker index 0..N-1 */
    ta_store_t *store;                     /* borrowed; /healthz opens a read txn; may be NULL */
    ta_api_handler_fn api_handler;         /* /api; NULL = 404 */
    void *api_ctx;
    ta_worker_setup_fn setup;              /* may be NULL */
    ta_worker_setup_fn ready;              /* may be NULL */
    void *setup_arg;
    unsigned password_threads;             /* /api job pool threads; 0 = 2 */
    size_t password_queue;                 /* /api jobs waiting at most; 0 = 16 */
    const char *console_dir;               /* web console build (worker/console.h), served
                                            * where /api is; NULL = no console */
    const char *upstream_ca_file;          /* CAs trusted by /api outbound calls besides the
                                            * system's (ta_upstream_opts_t.ca_file); NULL = none */
} ta_worker_conf_t;

/** Descriptors a worker keeps out of its connection budget: the stores, the
 *  ring, listeners, pipes, logs, files the console serves. */
#define TA_WORKER_FD_RESERVE 128
/** Streams (a client connection with its upstream connection) one worker
 *  serves at once under a descriptor limit of `nofile`. */
size_t ta_worker_capacity(size_t nofile);

/** Build the server: TLS context, routes (conf.setup), h2o context, listener
 *  sockets (conf.ready). Returns 0, TA_ECONFIG (TLS files; logged), or -errno. */
int ta_worker_create(ta_worker_t **out, const ta_worker_conf_t *conf);
/** Run until SIGTERM/SIGINT and the drain above; returns 0. Installs the
 *  worker's SIGTERM/SIGINT handlers and ignores SIGPIPE and SIGHUP. */
int ta_worker_run(ta_worker_t *w);
/** Ask for the graceful stop from code (same as SIGTERM). */
void ta_worker_stop(ta_worker_t *w);
/** Frees what is safe to free after ta_worker_run() returned. */
void ta_worker_destroy(ta_worker_t *w);

/** Register a path (prefix match, h2o semantics) on the main listeners.
 *  Only inside conf.setup. Returns the pathconf with the worker's entry
 *  handler and filter already on it. */
h2o_pathconf_t *ta_worker_register_path(ta_worker_t *w, const char *path);
h2o_loop_t *ta_worker_loop(ta_worker_t *w);
h2o_context_t *ta_worker_context(ta_worker_t *w);
/* Called when h2o refused a request as too large by itself, before any
 * handler ran (HTTP/1: a Content-Length, or a chunked body, beyond h2o's
 * own limit), just before its 413 goes out: the proxy records it when the
 * caller's API key is valid (docs/ARCHITECTURE.md "Bodies over the limit"). */
typedef void (*ta_worker_oversize_fn)(void *arg, h2o_req_t *req);
void ta_worker_on_oversize(ta_worker_t *w, ta_worker_oversize_fn fn, void *arg);
void ta_worker_add_tick(ta_worker_t *w, ta_worker_tick_fn fn, void *arg);
/** The worker this request runs in (from its context). */
ta_worker_t *ta_worker_from_req(h2o_req_t *req);
bool ta_worker_stopping(const ta_worker_t *w);
void ta_worker_hold(ta_worker_t *w);
void ta_worker_release(ta_worker_t *w);

/** The request's id: 16 bytes (id may be NULL) and its hex (hex may be
 *  NULL; 33 bytes). Returns 0, or TA_ENOTFOUND for a request that did not
 *  pass through the worker's entry handler. */
int ta_worker_request_id(h2o_req_t *req, uint8_t id[16], char hex[33]);
/** Client address as text ("127.0.0.1", "::1"); buf >= 48 bytes. */
void ta_worker_client_ip(h2o_req_t *req, char *buf, size_t cap);
/** Send a whole response with Content-Length (body copied into the request
 *  pool). content_type NULL = application/json. */
void ta_worker_send(h2o_req_t *req, int status, const char *content_type, const char *body,
                    size_t len);
/** The worker's own outbound call (not for a request; provider health
 *  probes, worker/health_agent.h): made like the /api calls of
 *  schema/api.h on the same client; fetch->cont is not used. done(arg, r)
 *  runs on the loop when it ends (r valid during done); fetch->release runs
 *  right after. Returns 0 with *out (may be NULL) a handle valid until done
 *  or ta_worker_fetch_cancel, or TA_E* (nothing started, done never runs,
 *  fetch released). Calls still running at ta_worker_destroy() are
 *  cancelled without done. */
typedef struct ta_worker_fetch ta_worker_fetch_t;
typedef void (*ta_worker_fetch_done_fn)(void *arg, const ta_api_fetch_result_t *r);
int ta_worker_fetch(ta_worker_t *w, ta_api_fetch_t *fetch, ta_worker_fetch_done_fn done, void *arg,
                    ta_worker_fetch_t **out);
/** Stop a call of ta_worker_fetch before its done ran: done never runs,
 *  the fetch is released. */
void ta_worker_fetch_cancel(ta_worker_fetch_t *f);

/** Send {"error":{"message","type","code","param":null}}. */
void ta_worker_send_error(h2o_req_t *req, int status, const char *type, const char *code,
                          const char *message);

#endif
