/*
 * api.h - the seam between the HTTP server (worker/) and the admin API
 * handlers (admin/): a request and an answer as plain data, no h2o types.
 *
 * worker/ never includes admin/ headers: the master wires
 * ta_admin_handle() into the worker as a ta_api_handler_fn. That keeps the
 * dependency arrows one way (schema <- ledger <- worker/admin <- master) and
 * lets the admin handlers be tested without a server.
 *
 * Called in worker processes only, on the loop thread (except
 * ta_api_job_t.work, which runs on a worker's pool thread).
 */
#ifndef TA_API_H
#define TA_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "ta.h"

typedef struct ta_apireq {
    const char *method;         /* "GET", "POST", ... NUL-terminated */
    const char *path;           /* path without query, e.g. "/api/admin/users/3/" */
    size_t path_len;
    const char *query;          /* after '?', not decoded; NULL if none */
    size_t query_len;
    const char *body;           /* request body (may be NULL when body_len == 0) */
    size_t body_len;
    const char *authorization;  /* Authorization header value or NULL */
    size_t authorization_len;
    const char *base_url;       /* "http://host:port" as the client reached us, for next/previous */
    const char *request_id;     /* X-Request-Id of this request, NUL-terminated */
    const char *client_ip;      /* NUL-terminated */
} ta_apireq_t;

typedef struct ta_apires {
    int status;                 /* HTTP status */
    char *body;                 /* malloc'd JSON (or NULL for 204); worker frees it */
    size_t body_len;
    const char *content_type;   /* static string; NULL = "application/json" */
    char allow[64];             /* for 405: value of the Allow header; "" otherwise */
    int retry_after;            /* > 0: Retry-After header in seconds */
    /* Asynchronous answer (see ta_api_fetch_t below): when the handler sets
     * this, the worker ignores status/body/allow/retry_after, makes the
     * outbound call and answers with what the continuation fills in. */
    struct ta_api_fetch *fetch;
    /* Offloaded answer (see ta_api_job_t below): when the handler sets this
     * (and not fetch), the worker ignores the rest of res, runs job->work on
     * a pool thread and answers with what job->cont fills in. */
    struct ta_api_job *job;
    /* Streamed answer (see ta_api_stream_t below): when the handler sets this
     * (and neither fetch nor job), the worker sends status, content_type and
     * the head, then the body in the parts stream->next gives; body is unused. */
    struct ta_api_stream *stream;
} ta_apires_t;

/** Handle one /api/... request; always fills res (errors included, in the
 *  shape of API.md). ctx is the handler's own state (ta_admin_t *). */
typedef void (*ta_api_handler_fn)(void *ctx, const ta_apireq_t *req, ta_apires_t *res);

/* ---- asynchronous seam: one outbound HTTP call per /api request ----------
 *
 * A handler that needs a provider's answer (provider test, model sync) must
 * not block the worker's loop. Instead it fills res->fetch (malloc'd) and
 * returns. The worker then:
 *   1. makes the call on its own libcurl multi client, driven by the same h2o
 *      loop (worker/upstream.h): GET url (or POST body), headers, timeouts;
 *   2. when it ends, calls cont(ctx, cont_arg, &result, &res2) on the loop
 *      thread (ctx is the handler's ctx); cont fills res2 exactly as a
 *      handler fills res; calls release(fetch);
 *   3. sends res2, or, when cont set res2.fetch (the next page of a paged
 *      list), makes that call the same way (at most TA_API_FETCH_MAX_CHAIN
 *      calls per request; past that the request is answered 502).
 * A call the worker cannot start reaches cont as a failed result (err < 0).
 * If the client goes away first, the call is cancelled, cont is NOT called,
 * and only release(fetch) runs. release is called exactly once in every
 * case; it frees the fetch and cont_arg and wipes any secret in the headers.
 *
 * Secrets: header lines may carry a provider key; the worker never logs url
 * or headers. */
#define TA_API_FETCH_MAX_HEADERS 6
#define TA_API_FETCH_MAX_CHAIN 20 /* calls one /api request may make (res2.fetch, below) */
#define TA_API_FETCH_HEADER_MAX 768
#define TA_API_FETCH_URL_MAX 1024

typedef struct ta_api_fetch_result {
    int err;                /* 0: an HTTP answer arrived (any status); < 0: none (enum ta_up_err
                             * of worker/upstream.h, or TA_UP_EOTHER-like for a local failure) */
    bool timeout;           /* err is one of the timeouts */
    bool too_large;         /* the body passed max_response (err < 0) */
    int status;             /* HTTP status; 0 when none */
    const char *error;      /* err < 0: short text ("connect: Couldn't connect to server"); else "" */
    const char *body;       /* response body, NUL-terminated (never NULL); valid during cont */
    size_t body_len;
    int64_t latency_ms;     /* from the start of the call to its end */
} ta_api_fetch_result_t;

typedef void (*ta_api_cont_fn)(void *ctx, void *cont_arg, const ta_api_fetch_result_t *r,
                               ta_apires_t *res);

typedef struct ta_api_fetch {
    char url[TA_API_FETCH_URL_MAX];
    char headers[TA_API_FETCH_MAX_HEADERS][TA_API_FETCH_HEADER_MAX]; /* "Name: value" */
    size_t nheaders;
    const char *body;            /* NULL: GET; else POST body, owned by cont_arg */
    size_t body_len;
    int32_t connect_timeout_ms;  /* > 0 */
    int32_t total_timeout_ms;    /* > 0: the whole call */
    size_t max_response;         /* body bytes kept; more ends the call (too_large); 0 = 1 MiB */
    ta_api_cont_fn cont;
    void *cont_arg;
    void (*release)(struct ta_api_fetch *f);
} ta_api_fetch_t;

/* ---- asynchronous seam: CPU-heavy work off the loop thread ---------------
 *
 * A handler whose answer needs CPU-heavy work (PBKDF2 password
 * hashing and verification, tens of ms each) must not run it on the loop
 * thread: every request and stream of the worker would stall meanwhile.
 * Instead it validates what it can synchronously (400s answer at once), copies
 * what the work needs into a malloc'd job, fills res->job and returns with
 * its transaction closed. The worker then:
 *   1. queues the job on its small pool of threads (a bounded queue; when the
 *      queue is full it answers 503 with Retry-After itself, cont is NOT
 *      called and release(job) runs at once);
 *   2. runs work(arg) on a pool thread;
 *   3. back on the loop thread, calls cont(ctx, arg, &res2) (ctx is the
 *      handler's ctx); cont opens its own short LMDB transaction if it needs
 *      one, re-checks what may have changed meanwhile, and fills res2 exactly
 *      as a handler fills res (res2.fetch and res2.job must stay NULL);
 *   4. sends res2 and calls release(job).
 * If the client goes away before the work ends, cont is NOT called (nothing
 * is written) and only release(job) runs, once the work has ended. release
 * is called exactly once in every case, on the loop thread; it frees the job
 * and arg and wipes the secrets they carry (passwords).
 *
 * work runs on a thread that is not the loop's: it touches only arg, never
 * LMDB, h2o, the admin's or the worker's state, and logs nothing (arg may
 * hold a password). Everything it reads was copied into arg before the
 * handler returned; everything it produces goes back through arg. */
typedef void (*ta_api_job_cont_fn)(void *ctx, void *arg, ta_apires_t *res);

typedef struct ta_api_job {
    void (*work)(void *arg);           /* pool thread */
    ta_api_job_cont_fn cont;           /* loop thread, only while the client is there */
    void *arg;
    void (*release)(struct ta_api_job *j); /* loop thread, exactly once */
} ta_api_job_t;

/* ---- streamed answers: a body too large to build in memory ------------------
 *
 * A handler whose answer grows with the data (the audit export) sets
 * res->stream (malloc'd) with res->status and res->content_type. The worker
 * sends the head (with Content-Disposition when disposition is not empty)
 * and then, each time the client has taken the previous part, calls
 * next(ctx, stream, &part, &len) on the loop thread (ctx is the handler's
 * ctx):
 *   1: *part (malloc'd, *len bytes) is the next part; the worker frees it
 *      once sent;
 *   0: the body is complete (*part NULL);
 *   <0: it failed: the body ends cut (HTTP/1.1: no last chunk; HTTP/2: the
 *      stream is reset), so no client takes a part for the whole.
 * next reads what it needs within the call (no LMDB transaction is kept
 * between parts) and should return a bounded part quickly: the loop serves
 * every other request meanwhile. release(stream) runs exactly once: after
 * the last part, after a failure, or when the client left (next is then
 * not called again). */
typedef struct ta_api_stream {
    int (*next)(void *ctx, struct ta_api_stream *s, char **part, size_t *len);
    void (*release)(struct ta_api_stream *s);
    char disposition[96]; /* the Content-Disposition value, or "" */
} ta_api_stream_t;

#endif
