/*
 * server.c - the worker's h2o server (see server.h for the contract).
 *
 * One h2o_globalconf_t with two hostconfs: "main" (registered paths such as
 * /v1, plus the built-ins) and "admin" (/api plus the built-ins), used only
 * when there are admin listeners. Each listener's accept context carries a
 * one-entry hosts list, so h2o never picks a host by the Host header: which
 * socket a connection came in on decides what it may reach.
 *
 * Every pathconf starts with the entry handler (request id, in-flight
 * count, then returns -1 so the next handler runs) and carries the filter
 * that re-adds X-Request-Id if a handler dropped it and turns h2o's own
 * plain-text errors into the JSON error shape.
 */
#include "worker/server.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <h2o/multithread.h>
#include "ledger/heartbeat.h"
#include "schema/apierror.h"
#include "worker/accept.h"
#include "worker/console.h"
#include "worker/metrics.h"
#include "worker/upstream.h"

/* Least margin between max_body_size and h2o's own limit (body_limit_h2o). */
#define BODY_MARGIN_MIN (64u * 1024)
#define MAX_LISTENERS 64
#define MAX_TICKS 4
#define ENV_REQUEST_ID "ta-request-id"
/* During shutdown an idle HTTP/1 keep-alive connection is closed after this
 * long, so the old generation does not wait for h2o's 10 s idle timeout. */
#define SHUTDOWN_IDLE_MS 1000

struct listener {
    h2o_socket_t *sock;
    ta_worker_t *w;
    h2o_accept_ctx_t *actx;
};

struct tick {
    ta_worker_tick_fn fn;
    void *arg;
};

struct ta_worker {
    h2o_context_t ctx; /* first: ta_worker_from_req() goes back from it */
    ta_worker_conf_t conf;
    ta_worker_listener_t lconf[MAX_LISTENERS];
    h2o_globalconf_t globalconf;
    h2o_hostconf_t *host_main, *host_admin;
    h2o_hostconf_t *hosts_main[2], *hosts_admin[2];
    h2o_accept_ctx_t accept[4]; /* [admin][tls] */
    h2o_evloop_t *loop;
    SSL_CTX *ssl_ctx;
    struct listener listeners[MAX_LISTENERS];
    size_t nlisteners;
    struct tick ticks[MAX_TICKS];
    size_t nticks;
    int sigpipe[2];
    h2o_socket_t *sigsock;
    bool in_setup;
    bool stopping;
    int64_t stop_deadline_ns;
    uint64_t inflight;       /* requests whose pool is alive + holds */
    size_t conns;            /* client connections open (accepted, not closed yet) */
    size_t fd_budget;        /* descriptors for connections: RLIMIT_NOFILE - TA_WORKER_FD_RESERVE */
    bool accept_paused;      /* listeners not read: no descriptor to spare */
    bool accept_emfile;      /* ... because accept(2) itself ran out: retried every 100 ms */
    int64_t pause_logged_ns; /* the last "not accepting" line (at most one per 10 s) */
    uint64_t requests_total; /* requests that reached the entry handler */
    ta_upstream_t *api_up;   /* /api outbound calls (ta_api_fetch_t); created on first use */
    struct api_pool *api_pool; /* /api offloaded jobs (ta_api_job_t); created on first use */
    h2o_linklist_t own_fetches; /* the worker's own outbound calls (ta_worker_fetch) */
    ta_worker_oversize_fn on_oversize; /* h2o's own 413 (ta_worker_on_oversize) */
    void *on_oversize_arg;
};

struct entry_handler {
    h2o_handler_t super;
    ta_worker_t *w;
};

struct api_handler {
    h2o_handler_t super;
    ta_worker_t *w;
    int kind; /* ROUTE_* */
};

enum { ROUTE_HEALTHZ = 1, ROUTE_METRICS, ROUTE_API, ROUTE_NOTFOUND };

struct fixup_filter {
    h2o_filter_t super;
    ta_worker_t *w;
    bool jsonify; /* only on fallback paths: h2o's own errors */
};

struct json_ostream {
    h2o_ostream_t super;
    h2o_iovec_t body;
    bool sent;
};

struct req_track {
    ta_worker_t *w;
};

static volatile sig_atomic_t stop_signalled;
static int sigpipe_wr = -1;

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- small JSON helpers ------------------------------------------------ */

/* The one error body (schema/apierror.h), into buf; a message too long for
 * buf is cut (our own short messages, or h2o's reason). */
static size_t format_error(char *buf, size_t cap, const char *type, const char *code,
                           const char *message)
{
    char cut[256];
    size_t len = 0;
    char *s = ta_error_body(type, code, NULL, message, &len);
    if (s != NULL && len >= cap) {
        free(s);
        snprintf(cut, sizeof(cut), "%.*s", (int)(cap / 4), message);
        s = ta_error_body(type, code, NULL, cut, &len);
    }
    if (s == NULL || len >= cap) {
        free(s);
        len = snprintf(buf, cap, "%s", ta_error_body_oom);
        return len < cap ? len : cap - 1;
    }
    memcpy(buf, s, len + 1);
    free(s);
    return len;
}

static void status_error_names(int status, const char **type, const char **code)
{
    switch (status) {
    case 400: *type = "invalid_request_error"; *code = "bad_request"; break;
    case 401: *type = "authentication_error"; *code = "unauthorized"; break;
    case 403: *type = "permission_error"; *code = "forbidden"; break;
    case 404: *type = "not_found_error"; *code = "not_found"; break;
    case 405: *type = "invalid_request_error"; *code = "method_not_allowed"; break;
    case 413: *type = "invalid_request_error"; *code = "request_too_large"; break;
    case 503: *type = "server_error"; *code = "unavailable"; break;
    default: *type = status < 500 ? "invalid_request_error" : "server_error"; *code = "error"; break;
    }
}

/* ---- sending ----------------------------------------------------------- */

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return status < 400 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}

void ta_worker_send(h2o_req_t *req, int status, const char *content_type, const char *body,
                    size_t len)
{
    req->res.status = status;
    req->res.reason = reason_phrase(status);
    req->res.content_length = len;
    h2o_set_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE,
                   content_type != NULL ? content_type : "application/json",
                   strlen(content_type != NULL ? content_type : "application/json"), 1);
    h2o_send_inline(req, body, len);
}

void ta_worker_send_error(h2o_req_t *req, int status, const char *type, const char *code,
                          const char *message)
{
    char buf[1024];
    size_t len = format_error(buf, sizeof(buf), type, code, message);
    ta_worker_send(req, status, NULL, buf, len);
}

static void send_status_error(h2o_req_t *req, int status, const char *message)
{
    const char *type, *code;
    status_error_names(status, &type, &code);
    ta_worker_send_error(req, status, type, code, message);
}

/* ---- request ids and in-flight tracking -------------------------------- */

static void on_track_dispose(void *p)
{
    struct req_track *t = p;
    TA_BUG_ON(t->w->inflight == 0);
    t->w->inflight--;
}

static const char *find_env(h2o_req_t *req, const char *name)
{
    size_t nlen = strlen(name);
    for (size_t i = 0; i + 1 < req->env.size; i += 2) {
        if (h2o_memis(req->env.entries[i].base, req->env.entries[i].len, name, nlen))
            return req->env.entries[i + 1].base;
    }
    return NULL;
}

/* Request ids are 16 bytes from OpenSSL's DRBG, drawn 256 ids at a time:
 * one RAND_bytes() call per request cost ~1.3 us (locks, provider lookup),
 * a visible share of a proxied request. The pool belongs to one process and
 * is emptied in the child of a fork, so two processes never hand out the
 * same bytes. Loop thread only. */
static uint8_t rid_pool[16 * 256];
static size_t rid_left;

static void rid_pool_forget(void) { rid_left = 0; }

static int rid_draw(uint8_t id[16])
{
    static bool atfork_set;
    if (!atfork_set) {
        if (pthread_atfork(NULL, NULL, rid_pool_forget) != 0)
            return RAND_bytes(id, 16) == 1 ? 0 : -1;
        atfork_set = true;
    }
    if (rid_left < 16) {
        if (RAND_bytes(rid_pool, sizeof(rid_pool)) != 1)
            return -1;
        rid_left = sizeof(rid_pool);
    }
    memcpy(id, rid_pool + sizeof(rid_pool) - rid_left, 16);
    rid_left -= 16;
    return 0;
}

static const char *assign_request_id(h2o_req_t *req)
{
    const char *have = find_env(req, ENV_REQUEST_ID);
    if (have != NULL)
        return have;
    uint8_t id[16];
    if (rid_draw(id) != 0) {
        /* Never expected; fall back to something unique within this host. */
        uint64_t a = (uint64_t)mono_ns(), b = (uint64_t)getpid() << 32 | (uint64_t)rand();
        memcpy(id, &a, 8);
        memcpy(id + 8, &b, 8);
    }
    char *hex = h2o_mem_alloc_pool(&req->pool, 33);
    static const char hexd[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        hex[2 * i] = hexd[id[i] >> 4];
        hex[2 * i + 1] = hexd[id[i] & 15];
    }
    hex[32] = '\0';
    h2o_vector_reserve(&req->pool, &req->env, req->env.size + 2);
    req->env.entries[req->env.size++] = h2o_iovec_init(H2O_STRLIT(ENV_REQUEST_ID));
    req->env.entries[req->env.size++] = h2o_iovec_init(hex, 32);
    h2o_set_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, hex,
                          32, 1);
    return hex;
}

/* ---- HTTP/1 message framing (RFC 9112 sections 6.1 and 6.3) -------------
 * h2o 2.2.5 frames an HTTP/1 request by the FIRST Content-Length field or
 * the LAST Transfer-Encoding field and drops both from req->headers
 * (lib/http1.c, init_headers), so a request with two different lengths, or
 * with a length and "chunked", reaches the handlers as if it were
 * unambiguous. A proxy in front that trusts the other field would then see
 * a different request boundary: request smuggling. h2o itself already
 * refuses (400, connection closed) a Transfer-Encoding other than
 * "chunked", a Content-Length that is not all digits (the first one only),
 * and a space before a colon.
 *
 * The head as the client sent it is still in the connection's input buffer
 * while the request is handled: h2o consumes a request's bytes only after
 * its response is sent  * lib/http1.c, on_send_complete), and it lower-cases
 * field names in place but changes nothing else. The entry handler reads the
 * fields there and refuses an ambiguous request with 400 and
 * "Connection: close", before any route runs; the bytes after it are never
 * parsed. The fix-up filter uses the same reading to say what was wrong
 * when h2o answered 400 itself. */

#define FRAMING_MSG_MAX 200

/* The request head as received (request line and fields, up to the empty
 * line), or an empty iovec when the request did not come over HTTP/1 or
 * the head is not where h2o 2.2.5 keeps it. Valid until the response is
 * sent. */
static h2o_iovec_t http1_raw_head(h2o_req_t *req)
{
    const h2o_conn_callbacks_t *cb = req->conn->callbacks;
    h2o_buffer_t *in = NULL;
    if (req->version >= 0x200)
        return h2o_iovec_init(NULL, 0);
    /* Only a connection that is still HTTP/1 (its log callbacks say so). A
     * request that upgraded to h2c left its head in the HTTP/2 connection,
     * whose struct 2.2.5's installed headers cannot declare (http2_internal.h
     * needs khash.h, which the package does not ship); what follows such a
     * request is read as HTTP/2 frames, so no second HTTP/1 request can
     * hide behind it. */
    if (cb->log_.http1.request_index != NULL && cb->get_socket != NULL) {
        h2o_socket_t *sock = cb->get_socket(req->conn);
        in = sock != NULL ? sock->input : NULL;
    }
    if (in == NULL || in->size == 0)
        return h2o_iovec_init(NULL, 0);
    const char *p = in->bytes, *end = in->bytes + (in->size < H2O_MAX_REQLEN ? in->size : H2O_MAX_REQLEN);
    /* picohttpparser skips one empty line before the request line */
    if (end - p >= 2 && p[0] == '\r' && p[1] == '\n')
        p += 2;
    else if (p < end && p[0] == '\n')
        p += 1;
    size_t mlen = req->input.method.len;
    if ((size_t)(end - p) <= mlen || memcmp(p, req->input.method.base, mlen) != 0 || p[mlen] != ' ')
        return h2o_iovec_init(NULL, 0);
    for (const char *q = p; q < end; q++) {
        if (*q != '\n')
            continue;
        const char *next = q + 1;
        if (next < end && *next == '\n')
            return h2o_iovec_init(p, (size_t)(next + 1 - p));
        if (end - next >= 2 && next[0] == '\r' && next[1] == '\n')
            return h2o_iovec_init(p, (size_t)(next + 2 - p));
    }
    return h2o_iovec_init(NULL, 0);
}

static bool token_is(const char *s, size_t len, const char *lit)
{
    return h2o_lcstris(s, len, lit, strlen(lit));
}

/* What makes this request's framing ambiguous or unsupported, written into
 * msg (FRAMING_MSG_MAX bytes); NULL when nothing does or the head cannot be
 * read (an HTTP/2 request frames its body by DATA frames). Rules:
 *   - no obsolete line folding (a proxy may unfold a Transfer-Encoding);
 *   - Content-Length and Transfer-Encoding never together;
 *   - at most one Transfer-Encoding field, and it says "chunked"; none in
 *     an HTTP/1.0 request (RFC 9112 section 6.1);
 *   - at most one Content-Length field, even two with the same value
 *     (RFC 9110 section 8.6 allows collapsing them; refusing is simpler
 *     and no real client sends two), all digits. */
static const char *framing_problem(h2o_req_t *req, char *msg)
{
    h2o_iovec_t head = http1_raw_head(req);
    if (head.base == NULL)
        return NULL;
    unsigned ncl = 0, nte = 0;
    h2o_iovec_t cl = {NULL, 0}, te = {NULL, 0};
    const char *p = head.base, *end = head.base + head.len;
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    for (p = eol + 1; p < end; p = eol + 1) {
        eol = memchr(p, '\n', (size_t)(end - p));
        const char *le = eol > p && eol[-1] == '\r' ? eol - 1 : eol;
        if (le == p)
            break; /* the empty line */
        if (*p == ' ' || *p == '\t') {
            snprintf(msg, FRAMING_MSG_MAX, "a header field is folded over two lines (obsolete "
                                           "line folding is not accepted, RFC 9112 section 5.2)");
            return msg;
        }
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon == NULL)
            continue; /* h2o refused it already */
        const char *v = colon + 1, *ve = le;
        /* Leading white space only, as picohttpparser 2.2.5 does: h2o
         * refuses "chunked " and "5 ", and so does this reading. */
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        if (token_is(p, (size_t)(colon - p), "content-length")) {
            if (ncl++ == 0)
                cl = h2o_iovec_init(v, (size_t)(ve - v));
        } else if (token_is(p, (size_t)(colon - p), "transfer-encoding")) {
            if (nte++ == 0)
                te = h2o_iovec_init(v, (size_t)(ve - v));
        }
    }
    if (ncl != 0 && nte != 0)
        snprintf(msg, FRAMING_MSG_MAX, "the request has both Content-Length and Transfer-Encoding, "
                                       "so its body length is ambiguous (RFC 9112 section 6.3)");
    else if (nte > 1)
        snprintf(msg, FRAMING_MSG_MAX, "Transfer-Encoding appears %u times; only one "
                                       "\"Transfer-Encoding: chunked\" is accepted", nte);
    else if (nte == 1 && !token_is(te.base, te.len, "chunked"))
        snprintf(msg, FRAMING_MSG_MAX, "Transfer-Encoding \"%.*s\" is not supported; only \"chunked\" "
                 "is accepted", (int)(te.len > 40 ? 40 : te.len), te.base);
    else if (nte == 1 && req->version < 0x101)
        snprintf(msg, FRAMING_MSG_MAX, "Transfer-Encoding is not accepted in an HTTP/1.0 request "
                                       "(RFC 9112 section 6.1)");
    else if (ncl > 1)
        snprintf(msg, FRAMING_MSG_MAX, "Content-Length appears %u times; exactly one is accepted "
                 "(RFC 9112 section 6.3)", ncl);
    else if (ncl == 1 && h2o_strtosize(cl.base, cl.len) == SIZE_MAX)
        snprintf(msg, FRAMING_MSG_MAX, "Content-Length \"%.*s\" is not a number of bytes (digits "
                 "only)", (int)(cl.len > 40 ? 40 : cl.len), cl.base);
    else
        return NULL;
    return msg;
}

/* Refuse an ambiguous request: 400, and the HTTP/1 connection closes after
 * the answer, so nothing the client sent after this head is read. Returns
 * true when it answered. */
static bool refuse_bad_framing(h2o_req_t *req)
{
    char msg[FRAMING_MSG_MAX];
    if (framing_problem(req, msg) == NULL)
        return false;
    req->http1_is_persistent = 0;
    char hex[33];
    if (ta_worker_request_id(req, NULL, hex) == 0)
        ta_log(TA_LOG_INFO, "request %s: refused: %s", hex, msg);
    ta_worker_send_error(req, 400, "invalid_request_error", "invalid_framing", msg);
    return true;
}

static bool refuse_over_capacity(ta_worker_t *w, h2o_req_t *req);

static int on_entry(h2o_handler_t *self, h2o_req_t *req)
{
    ta_worker_t *w = ((struct entry_handler *)self)->w;
    const char *hex = assign_request_id(req);
    struct req_track *t = h2o_mem_alloc_shared(&req->pool, sizeof(*t), on_track_dispose);
    t->w = w;
    w->inflight++;
    w->requests_total++;
    ssize_t ci = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-request-id"), -1);
    if (ci != -1)
        ta_log(TA_LOG_DEBUG, "request %s: client request id '%.*s'", hex,
               (int)(req->headers.entries[ci].value.len > 64 ? 64
                                                              : req->headers.entries[ci].value.len),
               req->headers.entries[ci].value.base);
    if (refuse_bad_framing(req) || refuse_over_capacity(w, req))
        return 0;
    return -1;
}

int ta_worker_request_id(h2o_req_t *req, uint8_t id[16], char hex[33])
{
    const char *h = find_env(req, ENV_REQUEST_ID);
    if (h == NULL)
        return TA_ENOTFOUND;
    if (hex != NULL) {
        memcpy(hex, h, 32);
        hex[32] = '\0';
    }
    if (id != NULL) {
        for (int i = 0; i < 16; i++) {
            int hi = h[2 * i] <= '9' ? h[2 * i] - '0' : h[2 * i] - 'a' + 10;
            int lo = h[2 * i + 1] <= '9' ? h[2 * i + 1] - '0' : h[2 * i + 1] - 'a' + 10;
            id[i] = (uint8_t)(hi << 4 | lo);
        }
    }
    return 0;
}

/* ---- the fix-up filter ------------------------------------------------- */

static void json_ostream_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs,
                              size_t bufcnt, h2o_send_state_t state)
{
    struct json_ostream *o = (struct json_ostream *)self;
    if (!o->sent && bufcnt != 0) {
        o->sent = true;
        h2o_ostream_send_next(self, req, &o->body, 1, state);
    } else {
        h2o_ostream_send_next(self, req, NULL, 0, state);
    }
}

static void on_setup_ostream(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    struct fixup_filter *f = (struct fixup_filter *)self;
    assign_request_id(req); /* no-op when the entry handler ran and the header survived */
    if (h2o_find_header_by_str(&req->res.headers, H2O_STRLIT("x-request-id"), -1) == -1) {
        const char *hex = find_env(req, ENV_REQUEST_ID);
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL,
                              hex, 32);
    }
    ssize_t ct = h2o_find_header(&req->res.headers, H2O_TOKEN_CONTENT_TYPE, -1);
    if (f->jsonify && req->res.status >= 400 && ct != -1 &&
        h2o_memis(req->res.headers.entries[ct].value.base, 10, H2O_STRLIT("text/plain")) &&
        !h2o_memis(req->input.method.base, req->input.method.len, H2O_STRLIT("HEAD"))) {
        /* h2o answered by itself (413, broken chunked encoding, ...). */
        char msg[FRAMING_MSG_MAX], buf[512];
        if (req->res.status == 413) {
            snprintf(msg, sizeof(msg), "request body is larger than the limit of %zu bytes",
                     f->w->conf.max_body_size);
            if (f->w->on_oversize != NULL)
                f->w->on_oversize(f->w->on_oversize_arg, req);
        }
        else if (req->res.status == 400 && framing_problem(req, msg) != NULL)
            ; /* h2o refused the head itself (lib/http1.c): say what was wrong */
        else
            snprintf(msg, sizeof(msg), "%s", req->res.reason != NULL ? req->res.reason : "error");
        const char *type, *code;
        status_error_names(req->res.status, &type, &code);
        size_t len = format_error(buf, sizeof(buf), type, code, msg);
        struct json_ostream *o =
            (struct json_ostream *)h2o_add_ostream(req, sizeof(*o), slot);
        o->super.do_send = json_ostream_send;
        o->body = h2o_strdup(&req->pool, buf, len);
        o->sent = false;
        req->res.content_length = len;
        h2o_set_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE,
                       H2O_STRLIT("application/json"), 1);
        slot = &o->super.next;
    }
    h2o_setup_next_ostream(req, slot);
}

static void add_filter(ta_worker_t *w, h2o_pathconf_t *pc, bool jsonify)
{
    struct fixup_filter *f = (struct fixup_filter *)h2o_create_filter(pc, sizeof(*f));
    f->super.on_setup_ostream = on_setup_ostream;
    f->w = w;
    f->jsonify = jsonify;
}

/* ---- built-in routes --------------------------------------------------- */

static void handle_healthz(ta_worker_t *w, h2o_req_t *req)
{
    char buf[256];
    const char *problem = NULL;
    /* A draining worker still answers 200: the gateway as a whole is
     * healthy (another generation accepts), and this connection closes. */
    if (!ta_heartbeat_billing_alive()) {
        problem = "billing is not alive";
    } else if (w->conf.store != NULL) {
        MDB_txn *txn;
        if (ta_txn_begin(w->conf.store, TA_ENV_LEDGER, false, &txn) != 0)
            problem = "ledger unavailable";
        else
            ta_txn_abort(txn);
    }
    int n;
    if (problem == NULL)
        n = snprintf(buf, sizeof(buf),
                     "{\"status\":\"ok\",\"generation\":%llu,\"pid\":%d,\"slot\":%d}",
                     (unsigned long long)w->conf.generation, (int)getpid(), w->conf.slot);
    else
        n = snprintf(buf, sizeof(buf),
                     "{\"status\":\"unavailable\",\"reason\":\"%s\",\"generation\":%llu,\"pid\":%d}",
                     problem, (unsigned long long)w->conf.generation, (int)getpid());
    ta_worker_send(req, problem == NULL ? 200 : 503, NULL, buf, (size_t)n);
}

/* Summed over all workers from the shared page (worker/metrics.h). */
static void handle_metrics(ta_worker_t *w, h2o_req_t *req)
{
    size_t cap = 16384, n;
    char *buf = NULL;
    for (int tries = 0; tries < 3; tries++) {
        char *nb = realloc(buf, cap);
        if (nb == NULL)
            break;
        buf = nb;
        n = ta_metrics_text(buf, cap);
        if (n < cap) {
            ta_worker_send(req, 200, "text/plain; version=0.0.4", buf, n);
            free(buf);
            return;
        }
        cap = n + 4096; /* a model may have appeared meanwhile */
    }
    free(buf);
    send_status_error(req, 500, "cannot render the metrics");
}

void ta_worker_client_ip(h2o_req_t *req, char *buf, size_t cap)
{
    struct sockaddr_storage ss;
    char host[NI_MAXHOST];
    socklen_t len = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    if (len >= sizeof(struct sockaddr_in) && ss.ss_family == AF_INET && cap >= 16) {
        /* every /v1 request records it: dotted quad without the printf family */
        const uint8_t *a = (const uint8_t *)&((struct sockaddr_in *)&ss)->sin_addr;
        char *o = buf;
        for (int i = 0; i < 4; i++) {
            if (a[i] >= 100)
                *o++ = (char)('0' + a[i] / 100);
            if (a[i] >= 10)
                *o++ = (char)('0' + a[i] / 10 % 10);
            *o++ = (char)('0' + a[i] % 10);
            *o++ = i < 3 ? '.' : '\0';
        }
        return;
    }
    size_t n = len == 0 ? SIZE_MAX : h2o_socket_getnumerichost((struct sockaddr *)&ss, len, host);
    if (n == SIZE_MAX)
        snprintf(buf, cap, "%s", "unknown");
    else
        snprintf(buf, cap, "%.*s", (int)n, host);
}

/* ---- /api outbound calls (ta_api_fetch_t of schema/api.h) -------------
 * A handler that needs a provider's answer returns a fetch instead of an
 * answer; the call runs on this worker's own small libcurl multi client
 * (worker/upstream.h, driven by this loop), so the loop never blocks. The
 * state hangs off the request's pool: when the client leaves first, the
 * pool's dispose cancels the call and releases the fetch (its continuation
 * never runs, so nothing is written). A continuation may answer with the
 * next fetch (a paged list), up to TA_API_FETCH_MAX_CHAIN calls per request.
 * The same client runs the worker's own calls (ta_worker_fetch: provider
 * health probes), which belong to no request and end in a callback. The url
 * and headers (a provider key) are never logged. */

#define API_FETCH_MAX_RESPONSE_DEFAULT ((size_t)1 << 20)

struct ta_worker_fetch {
    ta_worker_t *w;
    h2o_req_t *req;          /* NULL: the worker's own call (ta_worker_fetch) */
    ta_api_fetch_t *fetch;
    ta_upcall_t *call;
    char *buf;
    size_t len, cap;
    bool too_large;
    int64_t t0_ns;
    int chain;               /* calls made for this request so far */
    ta_worker_fetch_done_fn done; /* the worker's own call */
    void *done_arg;
    h2o_linklist_t own;      /* in w->own_fetches (the worker's own calls) */
};

static void send_apires(h2o_req_t *req, const char *hex, ta_apires_t *res);

static size_t api_fetch_max(const struct ta_worker_fetch *f)
{
    return f->fetch->max_response > 0 ? f->fetch->max_response : API_FETCH_MAX_RESPONSE_DEFAULT;
}

static void api_fetch_dispose(void *p)
{
    struct ta_worker_fetch *f = p;
    if (f->call != NULL) /* the request ended before the call did */
        ta_upcall_cancel(f->call);
    f->call = NULL;
    free(f->buf);
    f->buf = NULL;
    if (f->fetch != NULL)
        f->fetch->release(f->fetch);
    f->fetch = NULL;
}

static int api_fetch_on_data(void *ctx, const char *p, size_t n)
{
    struct ta_worker_fetch *f = ctx;
    if (n > api_fetch_max(f) - f->len) {
        f->too_large = true;
        return -1;
    }
    if (f->len + n + 1 > f->cap) {
        size_t cap = f->cap > 0 ? f->cap : 4096;
        while (cap < f->len + n + 1)
            cap *= 2;
        char *nb = realloc(f->buf, cap);
        if (nb == NULL)
            return -1;
        f->buf = nb;
        f->cap = cap;
    }
    memcpy(f->buf + f->len, p, n);
    f->len += n;
    return TA_UP_CONSUMED;
}

static int run_api_fetch(struct ta_worker_fetch *f);
static void api_fetch_failed(struct ta_worker_fetch *f, int rc);

static void api_fetch_on_done(void *ctx, int err, const ta_upcall_info_t *info)
{
    struct ta_worker_fetch *f = ctx;
    char msg[320], hex[33] = "";
    f->call = NULL; /* upstream.c frees it right after this returns */
    if (f->buf != NULL)
        f->buf[f->len] = '\0';
    ta_api_fetch_result_t r = {
        .err = err,
        .timeout = err == TA_UP_ETIMEOUT_CONNECT || err == TA_UP_ETIMEOUT_FIRST_BYTE ||
                   err == TA_UP_ETIMEOUT_IDLE || err == TA_UP_ETIMEOUT_TOTAL,
        .too_large = f->too_large,
        .status = info->status,
        .error = msg,
        .body = f->buf != NULL ? f->buf : "",
        .body_len = f->len,
        .latency_ms = (mono_ns() - f->t0_ns) / 1000000,
    };
    msg[0] = '\0';
    if (err != TA_UP_OK && f->too_large)
        snprintf(msg, sizeof(msg), "the response is larger than %zu bytes", api_fetch_max(f));
    else if (err != TA_UP_OK)
        snprintf(msg, sizeof(msg), "%s%s%s", ta_up_err_name(err),
                 info->msg != NULL && info->msg[0] != '\0' ? ": " : "",
                 info->msg != NULL ? info->msg : "");
    if (f->req == NULL) { /* the worker's own call */
        f->done(f->done_arg, &r);
        h2o_linklist_unlink(&f->own);
        f->fetch->release(f->fetch);
        free(f->buf);
        free(f);
        return;
    }
    ta_apires_t res = {0};
    f->fetch->cont(f->w->conf.api_ctx, f->fetch->cont_arg, &r, &res);
    /* The key in the headers need not live until the answer is written. */
    f->fetch->release(f->fetch);
    f->fetch = NULL;
    free(f->buf);
    f->buf = NULL;
    f->len = f->cap = 0;
    f->too_large = false;
    if (res.fetch != NULL && f->chain < TA_API_FETCH_MAX_CHAIN && res.job == NULL) {
        /* the next page: same request, a new call (see schema/api.h) */
        free(res.body);
        f->fetch = res.fetch;
        f->chain++;
        int rc = run_api_fetch(f);
        if (rc != 0)
            api_fetch_failed(f, rc);
        return;
    }
    if (res.fetch != NULL) { /* too many calls for one request */
        res.fetch->release(res.fetch);
        free(res.body);
        memset(&res, 0, sizeof(res));
        ta_worker_request_id(f->req, NULL, hex);
        ta_log(TA_LOG_ERROR, "request %s: more than %d outbound calls", hex, TA_API_FETCH_MAX_CHAIN);
        res.status = 502;
        res.body = strdup("{\"error\":{\"message\":\"the provider's answer needs too many calls\","
                          "\"type\":\"upstream_error\",\"code\":\"upstream_invalid_response\",\"param\":null}}");
        res.body_len = res.body != NULL ? strlen(res.body) : 0;
    }
    ta_worker_request_id(f->req, NULL, hex);
    send_apires(f->req, hex, &res);
}

/* Starts f->fetch. Returns 0, or TA_E* with nothing started. */
static int run_api_fetch(struct ta_worker_fetch *f)
{
    ta_worker_t *w = f->w;
    ta_api_fetch_t *fetch = f->fetch;
    int rc = 0;
    f->t0_ns = mono_ns();
    if (w->api_up == NULL) {
        ta_upstream_opts_t o = {.engine = TA_UP_ENGINE_CURL, .max_connects = 8, .ca_file = w->conf.upstream_ca_file};
        rc = ta_upstream_create(&w->api_up, w->loop, &o);
        if (rc != 0)
            w->api_up = NULL;
    }
    if (rc == 0) {
        const char *hdrs[TA_API_FETCH_MAX_HEADERS];
        size_t nh = fetch->nheaders < TA_API_FETCH_MAX_HEADERS ? fetch->nheaders
                                                                : TA_API_FETCH_MAX_HEADERS;
        for (size_t i = 0; i < nh; i++)
            hdrs[i] = fetch->headers[i];
        ta_upcall_spec_t spec = {
            .url = fetch->url,
            .headers = hdrs,
            .nheaders = nh,
            .body = fetch->body,
            .body_len = fetch->body_len,
            .connect_timeout_ms = fetch->connect_timeout_ms,
            .total_timeout_ms = fetch->total_timeout_ms,
            .ctx = f,
            .on_data = api_fetch_on_data,
            .on_done = api_fetch_on_done,
        };
        rc = ta_upcall_start(w->api_up, &spec, &f->call);
    }
    if (rc != 0)
        f->call = NULL;
    return rc;
}

/* A request's call that could not start: its continuation gets a failed result. */
static void api_fetch_failed(struct ta_worker_fetch *f, int rc)
{
    char hex[33] = "-";
    ta_worker_request_id(f->req, NULL, hex);
    ta_log(TA_LOG_ERROR, "request %s: cannot start the outbound call: %s", hex, ta_strerror(rc));
    ta_upcall_info_t info = {.msg = "cannot start the call"};
    api_fetch_on_done(f, TA_UP_EOTHER, &info);
}

static void start_api_fetch(ta_worker_t *w, h2o_req_t *req, const char *hex, ta_api_fetch_t *fetch)
{
    struct ta_worker_fetch *f = h2o_mem_alloc_shared(&req->pool, sizeof(*f), api_fetch_dispose);
    memset(f, 0, sizeof(*f));
    f->w = w;
    f->req = req;
    f->fetch = fetch;
    int rc = run_api_fetch(f);
    if (rc != 0)
        api_fetch_failed(f, rc);
}

int ta_worker_fetch(ta_worker_t *w, ta_api_fetch_t *fetch, ta_worker_fetch_done_fn done, void *arg,
                    ta_worker_fetch_t **out)
{
    struct ta_worker_fetch *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        fetch->release(fetch);
        return -ENOMEM;
    }
    f->w = w;
    f->fetch = fetch;
    f->done = done;
    f->done_arg = arg;
    int rc = run_api_fetch(f);
    if (rc != 0) {
        fetch->release(fetch);
        free(f);
        return rc;
    }
    h2o_linklist_insert(&w->own_fetches, &f->own);
    if (out != NULL)
        *out = f;
    return 0;
}

void ta_worker_fetch_cancel(ta_worker_fetch_t *f)
{
    if (f == NULL)
        return;
    if (f->call != NULL)
        ta_upcall_cancel(f->call);
    h2o_linklist_unlink(&f->own);
    f->fetch->release(f->fetch);
    free(f->buf);
    free(f);
}

/* ---- /api offloaded jobs (ta_api_job_t of schema/api.h) ----------------
 * A handler whose answer needs CPU-heavy work (PBKDF2) returns a job: its
 * work runs on this worker's small thread pool, so the loop keeps serving
 * /v1 and streams meanwhile, and its continuation runs back on the loop.
 *
 *   loop: handle_api --(mu, cv)--> pending FIFO --> pool thread: work(arg)
 *   loop: api_job_on_done <--(h2o_multithread queue: a pipe in this loop)--+
 *         cont + send, or only release when the client left
 *
 * The pool starts on first use, so threads exist only in worker processes
 * (after fork) that got such a request; they block every signal (the
 * loop's handlers stay the loop's). The FIFO is bounded: a full queue
 * answers 503 with Retry-After at once rather than making the client wait
 * behind minutes of hashing. Ownership: the FIFO and aj->next under
 * pool->mu; a pool thread touches only aj->job->work(aj->job->arg) and then
 * hands aj to the loop through the multithread queue, whose mutex orders
 * what work wrote before what cont reads. aj->req, aj->link and the list of
 * live jobs are the loop thread's. When the client leaves first, the
 * request pool's dispose only clears aj->req (the job may be running): the
 * loop then releases the job without calling cont. Each job holds the
 * worker in flight from submission to release, so a draining worker waits
 * for it; ta_worker_destroy joins the threads and releases what is left. */

/* Defaults when the conf leaves them 0 (password_threads, password_queue of
 * master/config.c); threads are capped so th[] stays a fixed array. */
#define API_JOB_THREADS_DEFAULT 2
#define API_JOB_THREADS_MAX 64
#define API_JOB_QUEUE_DEFAULT 16
#define API_JOB_RETRY_AFTER_S 1

struct api_job_link;

struct api_job {
    h2o_multithread_message_t msg; /* pool thread -> loop */
    struct api_job *next;          /* pending FIFO, under pool->mu */
    h2o_linklist_t live;           /* pool->live (loop thread) */
    ta_worker_t *w;
    h2o_req_t *req;                /* NULL once the client left (loop thread) */
    struct api_job_link *link;     /* in req's pool while req is alive */
    ta_api_job_t *job;
};

struct api_job_link {
    struct api_job *aj;
};

struct api_pool {
    ta_worker_t *w;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct api_job *head, *tail; /* pending, oldest first */
    size_t queued;
    bool stop;
    pthread_t th[API_JOB_THREADS_MAX];
    size_t nthreads;
    h2o_multithread_queue_t *mq;
    h2o_multithread_receiver_t rx;
    h2o_linklist_t live; /* every job not yet released (loop thread) */
};

static void *api_pool_main(void *arg)
{
    struct api_pool *pool = arg;
    for (;;) {
        pthread_mutex_lock(&pool->mu);
        while (pool->head == NULL && !pool->stop)
            pthread_cond_wait(&pool->cv, &pool->mu);
        if (pool->stop) {
            pthread_mutex_unlock(&pool->mu);
            return NULL;
        }
        struct api_job *aj = pool->head;
        pool->head = aj->next;
        if (pool->head == NULL)
            pool->tail = NULL;
        pool->queued--;
        pthread_mutex_unlock(&pool->mu);
        aj->job->work(aj->job->arg);
        h2o_multithread_send_message(&pool->rx, &aj->msg);
    }
}

static void api_job_link_dispose(void *p)
{
    struct api_job_link *l = p;
    if (l->aj != NULL) { /* the client left before the job ended */
        l->aj->req = NULL;
        l->aj->link = NULL;
    }
}

/* Loop thread: the job's work has ended (or the pool is being stopped). */
static void api_job_finish(struct api_job *aj, bool answer)
{
    ta_worker_t *w = aj->w;
    h2o_req_t *req = answer ? aj->req : NULL;
    ta_api_job_t *job = aj->job;

    h2o_linklist_unlink(&aj->live);
    if (aj->link != NULL)
        aj->link->aj = NULL;
    free(aj);
    if (req == NULL) {
        job->release(job);
        ta_worker_release(w);
        return;
    }
    ta_apires_t res = {0};
    job->cont(w->conf.api_ctx, job->arg, &res);
    if (res.fetch != NULL || res.job != NULL) { /* one step per request: see schema/api.h */
        if (res.fetch != NULL)
            res.fetch->release(res.fetch);
        if (res.job != NULL)
            res.job->release(res.job);
        free(res.body);
        memset(&res, 0, sizeof(res));
    }
    /* The password copies need not live until the answer is written. */
    job->release(job);
    char hex[33] = "";
    ta_worker_request_id(req, NULL, hex);
    send_apires(req, hex, &res);
    ta_worker_release(w);
}

static void api_job_on_done(h2o_multithread_receiver_t *rx, h2o_linklist_t *messages)
{
    (void)rx;
    while (!h2o_linklist_is_empty(messages)) {
        struct api_job *aj = H2O_STRUCT_FROM_MEMBER(struct api_job, msg.link, messages->next);
        h2o_linklist_unlink(&aj->msg.link);
        api_job_finish(aj, true);
    }
}

static int api_pool_start(ta_worker_t *w)
{
    struct api_pool *pool = calloc(1, sizeof(*pool));
    sigset_t all, old;
    int rc = 0;

    if (pool == NULL)
        return -ENOMEM;
    pool->w = w;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->cv, NULL);
    h2o_linklist_init_anchor(&pool->live);
    pool->mq = h2o_multithread_create_queue(w->loop);
    h2o_multithread_register_receiver(pool->mq, &pool->rx, api_job_on_done);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    size_t want = w->conf.password_threads == 0 ? API_JOB_THREADS_DEFAULT
                                                : w->conf.password_threads;
    if (want > API_JOB_THREADS_MAX)
        want = API_JOB_THREADS_MAX;
    for (size_t i = 0; i < want; i++) {
        if ((rc = pthread_create(&pool->th[i], NULL, api_pool_main, pool)) != 0)
            break;
        pthread_setname_np(pool->th[i], "ta-api-job");
        pool->nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pool->nthreads == 0) {
        h2o_multithread_unregister_receiver(pool->mq, &pool->rx);
        h2o_multithread_destroy_queue(pool->mq);
        pthread_cond_destroy(&pool->cv);
        pthread_mutex_destroy(&pool->mu);
        free(pool);
        return -rc;
    }
    if (rc != 0)
        ta_log(TA_LOG_WARN, "/api thread pool: %zu of %zu threads started: %s", pool->nthreads,
               want, strerror(rc));
    w->api_pool = pool;
    return 0;
}

/* Loop thread, at exit: no job runs after this; the unfinished ones are
 * released without an answer. */
static void api_pool_stop(ta_worker_t *w)
{
    struct api_pool *pool = w->api_pool;
    if (pool == NULL)
        return;
    pthread_mutex_lock(&pool->mu);
    pool->stop = true;
    pthread_cond_broadcast(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
    for (size_t i = 0; i < pool->nthreads; i++)
        pthread_join(pool->th[i], NULL);
    while (!h2o_linklist_is_empty(&pool->live)) {
        struct api_job *aj = H2O_STRUCT_FROM_MEMBER(struct api_job, live, pool->live.next);
        if (h2o_linklist_is_linked(&aj->msg.link))
            h2o_linklist_unlink(&aj->msg.link);
        api_job_finish(aj, false);
    }
    h2o_multithread_unregister_receiver(pool->mq, &pool->rx);
    h2o_multithread_destroy_queue(pool->mq);
    pthread_cond_destroy(&pool->cv);
    pthread_mutex_destroy(&pool->mu);
    free(pool);
    w->api_pool = NULL;
}

static void send_busy(h2o_req_t *req, const char *message)
{
    char ra[16];
    int n = snprintf(ra, sizeof(ra), "%d", API_JOB_RETRY_AFTER_S);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL,
                   h2o_strdup(&req->pool, ra, (size_t)n).base, (size_t)n);
    ta_worker_send_error(req, 503, "server_error", "server_busy", message);
}

static void start_api_job(ta_worker_t *w, h2o_req_t *req, const char *hex, ta_api_job_t *job)
{
    int rc = 0;
    if (w->api_pool == NULL && (rc = api_pool_start(w)) != 0) {
        ta_log(TA_LOG_ERROR, "request %s: cannot start the /api thread pool: %s", hex,
               ta_strerror(rc));
        job->release(job);
        send_busy(req, "the server cannot run this request now; try again");
        return;
    }
    struct api_pool *pool = w->api_pool;
    struct api_job *aj = calloc(1, sizeof(*aj));
    if (aj == NULL) {
        job->release(job);
        send_status_error(req, 500, "out of memory");
        return;
    }
    aj->w = w;
    aj->req = req;
    aj->job = job;

    size_t qmax = w->conf.password_queue == 0 ? API_JOB_QUEUE_DEFAULT : w->conf.password_queue;
    pthread_mutex_lock(&pool->mu);
    bool full = pool->queued >= qmax;
    if (!full) {
        if (pool->tail != NULL)
            pool->tail->next = aj;
        else
            pool->head = aj;
        pool->tail = aj;
        pool->queued++;
        pthread_cond_signal(&pool->cv);
    }
    pthread_mutex_unlock(&pool->mu);
    if (full) {
        free(aj);
        job->release(job);
        ta_log(TA_LOG_WARN, "request %s: /api job queue full (%zu waiting); answered 503", hex,
               qmax);
        send_busy(req, "too many requests are waiting for this worker's thread pool; retry shortly");
        return;
    }
    /* A pool thread may already be running the job: these loop-side fields
     * are read only when its message is handled, after this loop turn. */
    struct api_job_link *l = h2o_mem_alloc_shared(&req->pool, sizeof(*l), api_job_link_dispose);
    l->aj = aj;
    aj->link = l;
    h2o_linklist_insert(&pool->live, &aj->live);
    ta_worker_hold(w);
}

static void handle_api(ta_worker_t *w, h2o_req_t *req)
{
    if (w->conf.api_handler == NULL) {
        send_status_error(req, 404, "no such endpoint");
        return;
    }
    if (req->entity.len > w->conf.max_body_size) {
        char msg[96];
        snprintf(msg, sizeof(msg), "request body is larger than the limit of %zu bytes",
                 w->conf.max_body_size);
        send_status_error(req, 413, msg);
        return;
    }
    char hex[33], ip[48];
    ta_worker_request_id(req, NULL, hex);
    ta_worker_client_ip(req, ip, sizeof(ip));

    ta_apireq_t ar = {0};
    ar.method = h2o_strdup(&req->pool, req->method.base, req->method.len).base;
    size_t plen = req->path.len;
    if (req->query_at != SIZE_MAX) {
        plen = req->query_at;
        ar.query = req->path.base + req->query_at + 1;
        ar.query_len = req->path.len - req->query_at - 1;
    }
    /* The path as sent (not percent-decoded: ids are digits, and the admin
     * handlers match literal segments), NUL-terminated for convenience. */
    ar.path = h2o_strdup(&req->pool, req->path.base, plen).base;
    ar.path_len = plen;
    ar.body = req->entity.base;
    ar.body_len = req->entity.base != NULL ? req->entity.len : 0;
    ssize_t ai = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (ai != -1) {
        ar.authorization = req->headers.entries[ai].value.base;
        ar.authorization_len = req->headers.entries[ai].value.len;
    }
    h2o_iovec_t base = h2o_concat(&req->pool, req->scheme->name, h2o_iovec_init(H2O_STRLIT("://")),
                                  req->authority);
    ar.base_url = base.base; /* h2o_concat NUL-terminates */
    ar.request_id = hex;
    ar.client_ip = ip;

    ta_apires_t res = {0};
    w->conf.api_handler(w->conf.api_ctx, &ar, &res);
    if (res.stream != NULL && (res.job != NULL || res.fetch != NULL)) { /* one way to answer */
        res.stream->release(res.stream);
        res.stream = NULL;
        res.status = 0; /* send_apires answers 500 */
    }
    if (res.job != NULL) {
        if (res.fetch != NULL) { /* one step per request: see schema/api.h */
            res.fetch->release(res.fetch);
            res.job->release(res.job);
            free(res.body);
            send_status_error(req, 500, "internal error");
            return;
        }
        free(res.body);
        start_api_job(w, req, hex, res.job);
        return;
    }
    if (res.fetch != NULL) {
        free(res.body);
        start_api_fetch(w, req, hex, res.fetch);
        return;
    }
    send_apires(req, hex, &res);
}

/* ---- /api streamed answers (ta_api_stream_t of schema/api.h) -----------
 * h2o pulls the parts: proceed runs once the client took the previous one.
 * The generator lives in the request's pool, whose dispose releases the
 * stream exactly once: after the last part, or when the client left (h2o
 * stops calling proceed then). */

struct api_stream {
    h2o_generator_t super;
    ta_worker_t *w;
    ta_api_stream_t *s;
    char *part; /* being sent */
};

static void api_stream_dispose(void *p)
{
    struct api_stream *g = p;
    free(g->part);
    g->part = NULL;
    g->s->release(g->s);
}

static void api_stream_proceed(h2o_generator_t *self, h2o_req_t *req)
{
    struct api_stream *g = (struct api_stream *)self;
    char *part = NULL;
    size_t len = 0;
    free(g->part);
    g->part = NULL;
    int rc = g->s->next(g->w->conf.api_ctx, g->s, &part, &len);
    if (rc > 0) {
        g->part = part;
        h2o_iovec_t buf = h2o_iovec_init(part, len);
        h2o_send(req, &buf, 1, H2O_SEND_STATE_IN_PROGRESS);
        return;
    }
    free(part);
    h2o_send(req, NULL, 0, rc == 0 ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_ERROR);
}

static void api_stream_stop(h2o_generator_t *self, h2o_req_t *req)
{
    (void)self; /* the pool's dispose releases the stream */
    (void)req;
}

static void start_api_stream(h2o_req_t *req, const ta_apires_t *res)
{
    ta_worker_t *w = ta_worker_from_req(req);
    struct api_stream *g = h2o_mem_alloc_shared(&req->pool, sizeof(*g), api_stream_dispose);
    g->super.proceed = api_stream_proceed;
    g->super.stop = api_stream_stop;
    g->w = w;
    g->s = res->stream;
    g->part = NULL;
    const char *ct = res->content_type != NULL ? res->content_type : "application/json";
    req->res.status = res->status;
    req->res.reason = reason_phrase(res->status);
    h2o_set_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE,
                   h2o_strdup(&req->pool, ct, SIZE_MAX).base, strlen(ct), 1);
    size_t dn = strnlen(g->s->disposition, sizeof(g->s->disposition));
    if (dn > 0)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_DISPOSITION, NULL,
                       h2o_strdup(&req->pool, g->s->disposition, dn).base, dn);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                   H2O_STRLIT("no-store"));
    h2o_start_response(req, &g->super);
    api_stream_proceed(&g->super, req);
}

static void send_apires(h2o_req_t *req, const char *hex, ta_apires_t *res_)
{
    ta_apires_t res = *res_;
    if (res.stream != NULL && (res.status < 200 || res.status > 299)) {
        ta_log(TA_LOG_ERROR, "request %s: api handler streamed a %d answer", hex, res.status);
        res.stream->release(res.stream);
        res.stream = NULL;
        res.status = 0;
    }
    if (res.status < 100 || res.status > 599) {
        ta_log(TA_LOG_ERROR, "request %s: api handler returned status %d", hex, res.status);
        free(res.body);
        send_status_error(req, 500, "internal error");
        return;
    }
    if (res.stream != NULL) {
        free(res.body);
        start_api_stream(req, &res);
        return;
    }
    if (res.allow[0] != '\0')
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL,
                       h2o_strdup(&req->pool, res.allow, SIZE_MAX).base, strlen(res.allow));
    if (res.retry_after > 0) {
        char ra[24];
        int n = snprintf(ra, sizeof(ra), "%d", res.retry_after);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL,
                       h2o_strdup(&req->pool, ra, (size_t)n).base, (size_t)n);
    }
    if (res.body == NULL || res.body_len == 0) {
        req->res.status = res.status;
        req->res.reason = reason_phrase(res.status);
        req->res.content_length = 0;
        free(res.body);
        h2o_send_inline(req, "", 0);
        return;
    }
    ta_worker_send(req, res.status, res.content_type, res.body, res.body_len);
    free(res.body);
}

static int on_route(h2o_handler_t *self, h2o_req_t *req)
{
    struct api_handler *h = (struct api_handler *)self;
    /* h2o let up to body_limit_h2o() through: the limit is enforced here
     * (and by handle_api, and by the proxy for /v1). */
    if (req->entity.len > h->w->conf.max_body_size) {
        char msg[96];
        snprintf(msg, sizeof(msg), "request body is larger than the limit of %zu bytes",
                 h->w->conf.max_body_size);
        send_status_error(req, 413, msg);
        return 0;
    }
    switch (h->kind) {
    case ROUTE_HEALTHZ:
        handle_healthz(h->w, req);
        break;
    case ROUTE_METRICS:
        handle_metrics(h->w, req);
        break;
    case ROUTE_API:
        handle_api(h->w, req);
        break;
    default:
        send_status_error(req, 404, "no such endpoint");
        break;
    }
    return 0;
}

/* h2o's own limit for bodies: max_body_size plus max(64 KiB, 1/16). */
static size_t body_limit_h2o(size_t max_body_size)
{
    size_t margin = max_body_size / 16 > BODY_MARGIN_MIN ? max_body_size / 16 : BODY_MARGIN_MIN;
    return max_body_size > SIZE_MAX - margin ? SIZE_MAX : max_body_size + margin;
}

static h2o_pathconf_t *add_path(ta_worker_t *w, h2o_hostconf_t *host, const char *path)
{
    h2o_pathconf_t *pc = h2o_config_register_path(host, path, 0);
    struct entry_handler *e = (struct entry_handler *)h2o_create_handler(pc, sizeof(*e));
    e->super.on_req = on_entry;
    e->w = w;
    add_filter(w, pc, false);
    return pc;
}

/* The fallback path serves what no registered path matches (a request
 * target such as "*") and h2o's own errors: the entry handler runs there
 * too, so the framing check sees every request, and then h2o answers 404. */
static void add_fallback(ta_worker_t *w, h2o_hostconf_t *host)
{
    struct entry_handler *e =
        (struct entry_handler *)h2o_create_handler(&host->fallback_path, sizeof(*e));
    e->super.on_req = on_entry;
    e->w = w;
    add_filter(w, &host->fallback_path, true);
}

static void add_route(ta_worker_t *w, h2o_hostconf_t *host, const char *path, int kind)
{
    h2o_pathconf_t *pc = add_path(w, host, path);
    /* The web console's redirect from "/" goes before the 404 (console.h). */
    if (kind == ROUTE_NOTFOUND && host == w->host_admin && w->conf.console_dir != NULL)
        ta_console_register_root(pc);
    struct api_handler *h = (struct api_handler *)h2o_create_handler(pc, sizeof(*h));
    h->super.on_req = on_route;
    h->w = w;
    h->kind = kind;
}

h2o_pathconf_t *ta_worker_register_path(ta_worker_t *w, const char *path)
{
    TA_BUG_ON(!w->in_setup);
    return add_path(w, w->host_main, path);
}

/* ---- listeners and signals --------------------------------------------- */

/* ---- descriptor capacity ----------------------------------------------
 * Each client connection takes a descriptor, and each request in flight may
 * take one more for its upstream connection. A request that arrives while
 * connections + requests in flight pass the budget (RLIMIT_NOFILE less
 * TA_WORKER_FD_RESERVE for the stores, the ring, listeners, pipes, logs) is
 * answered 503 server_busy with Retry-After and its connection closed, before
 * anything is held: it has no record, as a refused connection would not. The
 * listeners are not read (the kernel's backlog holds the clients) once half
 * the reserve is used too, so accept(2) never runs out and the worker never
 * spins on a listener it cannot serve; they are read again as soon as a
 * connection closes. */

size_t ta_worker_capacity(size_t nofile)
{
    return nofile > TA_WORKER_FD_RESERVE ? (nofile - TA_WORKER_FD_RESERVE) / 2 : 0;
}

static bool over_capacity(const ta_worker_t *w) { return w->conns + w->inflight > w->fd_budget; }

static bool room_to_accept(const ta_worker_t *w)
{
    return w->conns + w->inflight < w->fd_budget + TA_WORKER_FD_RESERVE / 2;
}

static void on_accept(h2o_socket_t *listener, const char *err);

static void accept_pause(ta_worker_t *w, bool emfile)
{
    if (!w->accept_paused) {
        for (size_t i = 0; i < w->nlisteners; i++)
            if (w->listeners[i].sock != NULL)
                h2o_socket_read_stop(w->listeners[i].sock);
    }
    int64_t now = mono_ns();
    if (!w->accept_paused && now - w->pause_logged_ns >= 10000000000LL) {
        w->pause_logged_ns = now;
        ta_log(TA_LOG_WARN, "%s: %zu connections open, %llu requests in flight; not accepting for now",
               emfile ? "accept(2) ran out of descriptors" : "descriptor capacity reached", w->conns,
               (unsigned long long)w->inflight);
    }
    w->accept_paused = true;
    w->accept_emfile |= emfile;
}

static void accept_resume(ta_worker_t *w)
{
    if (!w->accept_paused || w->stopping || !room_to_accept(w))
        return;
    w->accept_paused = w->accept_emfile = false;
    for (size_t i = 0; i < w->nlisteners; i++)
        if (w->listeners[i].sock != NULL)
            h2o_socket_read_start(w->listeners[i].sock, on_accept);
}

static void on_conn_close(void *data)
{
    ta_worker_t *w = data;
    w->conns--;
    if (w->accept_paused && !w->accept_emfile)
        accept_resume(w);
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    struct listener *l = listener->data;
    ta_worker_t *w = l->w;
    if (err != NULL)
        return;
    /* A few per wake-up: the socket is shared with the sibling workers. */
    for (int i = 0; i < 8; i++) {
        if (!room_to_accept(w)) {
            accept_pause(w, false);
            break;
        }
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL) {
            if (errno == EMFILE || errno == ENFILE)
                accept_pause(w, true);
            break;
        }
        w->conns++;
        sock->on_close.cb = on_conn_close;
        sock->on_close.data = w;
        ta_accept(l->actx, sock, l->w->conf.max_body_size);
    }
}

/* 503 server_busy, Retry-After, and the connection closes after it. */
static bool refuse_over_capacity(ta_worker_t *w, h2o_req_t *req)
{
    if (!over_capacity(w))
        return false;
    h2o_iovec_t p = req->path_normalized;
    if (h2o_memis(p.base, p.len, H2O_STRLIT("/healthz")) || h2o_memis(p.base, p.len, H2O_STRLIT("/metrics")))
        return false; /* monitoring still answers */
    req->http1_is_persistent = 0;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("1"));
    ta_worker_send_error(req, 503, "server_error", "server_busy",
                         "The gateway is at its connection capacity; retry shortly.");
    return true;
}

static void on_signal(int sig)
{
    stop_signalled = 1;
    if (sigpipe_wr != -1) {
        int saved = errno;
        ssize_t r = write(sigpipe_wr, "x", 1);
        (void)r;
        errno = saved;
    }
}

static void on_sigpipe_readable(h2o_socket_t *sock, const char *err)
{
    /* The data is only a wake-up; the flag says what happened. */
    h2o_buffer_consume(&sock->input, sock->input->size);
}

static SSL_CTX *make_ssl_ctx(const char *cert, const char *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        ta_log(TA_LOG_ERROR, "tls_cert_file %s: cannot load (%s)", cert,
               ERR_reason_error_string(ERR_get_error()));
        goto Fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        ta_log(TA_LOG_ERROR, "tls_key_file %s: cannot load or does not match the certificate (%s)",
               key, ERR_reason_error_string(ERR_get_error()));
        goto Fail;
    }
    h2o_ssl_register_alpn_protocols(ctx, h2o_http2_alpn_protocols);
    return ctx;
Fail:
    SSL_CTX_free(ctx);
    return NULL;
}

int ta_worker_create(ta_worker_t **out, const ta_worker_conf_t *conf)
{
    int ret = 0;
    bool any_tls = false, any_admin = false;

    if (conf->nlisteners == 0 || conf->nlisteners > MAX_LISTENERS)
        return TA_ECONFIG;
    ta_worker_t *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -ENOMEM;
    struct rlimit nofile;
    size_t nf = getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY ? (size_t)nofile.rlim_cur
                                                                                           : 1024;
    w->fd_budget = nf > TA_WORKER_FD_RESERVE ? nf - TA_WORKER_FD_RESERVE : 0;
    /* A client connection's input buffer holds its request until the answer
     * is over (h2o consumes it then), a whole stream long: h2o's first
     * allocation is 8 KiB, twice what a read needs; 4 KiB is most of a slow
     * stream's memory saved (bench/streams.sh). Bigger requests grow it. Set
     * before any socket of this process (thread) has a buffer. */
    h2o_socket_buffer_prototype._initial_buf.capacity = H2O_SOCKET_INITIAL_INPUT_BUFFER_SIZE;
    w->conf = *conf;
    h2o_linklist_init_anchor(&w->own_fetches);
    ta_metrics_worker_start(conf->slot);
    memcpy(w->lconf, conf->listeners, conf->nlisteners * sizeof(*w->lconf));
    w->conf.listeners = w->lconf;
    w->sigpipe[0] = w->sigpipe[1] = -1;
    for (size_t i = 0; i < conf->nlisteners; i++) {
        any_tls |= conf->listeners[i].tls;
        any_admin |= conf->listeners[i].admin;
    }

    if (any_tls) {
        w->ssl_ctx = make_ssl_ctx(conf->tls_cert_file, conf->tls_key_file);
        if (w->ssl_ctx == NULL) {
            ret = TA_ECONFIG;
            goto Exit;
        }
    }

    h2o_config_init(&w->globalconf);
    /* h2o refuses a body over this limit by itself, before any handler
     * runs (the fix-up filter turns its plain-text 413 into JSON): such a
     * /v1 request would get no audit record although its key is valid. So
     * h2o's limit (a globalconf field in h2o 2.2.5, not per path) sits a
     * margin above max_body_size, and every route enforces max_body_size
     * itself: the proxy (worker/proxy.c) answers 413 after the key check
     * and records it, on_route answers 413 for the others. A body beyond
     * the margin still gets h2o's JSON 413 without a record: buffering any
     * size only to audit it would let a client pin the worker's memory. */
    w->globalconf.max_request_entity_size = body_limit_h2o(conf->max_body_size);
    /* HTTP/2 starts in worker/accept.c (ALPN, or the preface on cleartext),
     * so every HTTP/2 connection has the body-limit reader; an HTTP/1.1
     * "Upgrade: h2c" would bypass it and is declined (the request is
     * served over HTTP/1.1, which RFC 9113 allows). */
    w->globalconf.http1.upgrade_to_http2 = 0;
    w->globalconf.server_name = h2o_iovec_init(H2O_STRLIT("tokenaudit"));
    w->host_main = h2o_config_register_host(&w->globalconf, h2o_iovec_init(H2O_STRLIT("main")), 65535);
    w->host_admin = any_admin ? h2o_config_register_host(
                                    &w->globalconf, h2o_iovec_init(H2O_STRLIT("admin")), 65535)
                              : w->host_main;
    w->hosts_main[0] = w->host_main;
    w->hosts_admin[0] = w->host_admin;

    w->loop = h2o_evloop_create();

    /* Registered paths first: h2o takes the first pathconf that matches. */
    if (conf->setup != NULL) {
        w->in_setup = true;
        ret = conf->setup(w, conf->setup_arg);
        w->in_setup = false;
        if (ret != 0)
            goto Exit;
    }
    add_route(w, w->host_main, "/healthz", ROUTE_HEALTHZ);
    add_route(w, w->host_main, "/metrics", ROUTE_METRICS);
    add_route(w, w->host_admin, "/api", ROUTE_API);
    if (conf->console_dir != NULL) /* the web console, beside /api (console.h) */
        ta_console_register(add_path(w, w->host_admin, TA_CONSOLE_PATH), conf->console_dir);
    add_route(w, w->host_main, "/", ROUTE_NOTFOUND);
    add_fallback(w, w->host_main);
    if (any_admin) {
        add_route(w, w->host_admin, "/healthz", ROUTE_HEALTHZ);
        add_route(w, w->host_admin, "/metrics", ROUTE_METRICS);
        add_route(w, w->host_admin, "/", ROUTE_NOTFOUND);
        add_fallback(w, w->host_admin);
    }

    h2o_context_init(&w->ctx, w->loop, &w->globalconf);
    for (int a = 0; a < 2; a++) {
        for (int t = 0; t < 2; t++) {
            h2o_accept_ctx_t *ac = &w->accept[a * 2 + t];
            ac->ctx = &w->ctx;
            ac->hosts = a ? w->hosts_admin : w->hosts_main;
            ac->ssl_ctx = t ? w->ssl_ctx : NULL;
        }
    }

    for (size_t i = 0; i < conf->nlisteners; i++) {
        const ta_worker_listener_t *lc = &conf->listeners[i];
        int fl = fcntl(lc->fd, F_GETFL);
        if (fl == -1 || fcntl(lc->fd, F_SETFL, fl | O_NONBLOCK) == -1) {
            ret = -errno;
            goto Exit;
        }
        struct listener *l = &w->listeners[w->nlisteners++];
        l->w = w;
        l->actx = &w->accept[(lc->admin ? 2 : 0) + (lc->tls ? 1 : 0)];
        l->sock = h2o_evloop_socket_create(w->loop, lc->fd, H2O_SOCKET_FLAG_DONT_READ);
        l->sock->data = l;
    }

    if (pipe2(w->sigpipe, O_CLOEXEC | O_NONBLOCK) == -1) {
        ret = -errno;
        goto Exit;
    }
    w->sigsock = h2o_evloop_socket_create(w->loop, w->sigpipe[0], 0);
    w->sigsock->data = w;

    if (conf->ready != NULL && (ret = conf->ready(w, conf->setup_arg)) != 0)
        goto Exit;

Exit:
    if (ret != 0) {
        /* Only reached at start-up; the process exits right after. */
        if (w->ssl_ctx != NULL)
            SSL_CTX_free(w->ssl_ctx);
        free(w);
        return ret;
    }
    *out = w;
    return 0;
}

h2o_loop_t *ta_worker_loop(ta_worker_t *w) { return w->loop; }
h2o_context_t *ta_worker_context(ta_worker_t *w) { return &w->ctx; }
ta_worker_t *ta_worker_from_req(h2o_req_t *req) { return (ta_worker_t *)req->conn->ctx; }
bool ta_worker_stopping(const ta_worker_t *w) { return w->stopping; }
void ta_worker_hold(ta_worker_t *w) { w->inflight++; }

void ta_worker_release(ta_worker_t *w)
{
    TA_BUG_ON(w->inflight == 0);
    w->inflight--;
}

void ta_worker_on_oversize(ta_worker_t *w, ta_worker_oversize_fn fn, void *arg)
{
    w->on_oversize = fn;
    w->on_oversize_arg = arg;
}

void ta_worker_add_tick(ta_worker_t *w, ta_worker_tick_fn fn, void *arg)
{
    TA_BUG_ON(w->nticks == MAX_TICKS);
    w->ticks[w->nticks++] = (struct tick){fn, arg};
}

void ta_worker_stop(ta_worker_t *w) { stop_signalled = 1; }

static void begin_shutdown(ta_worker_t *w)
{
    w->stopping = true;
    w->stop_deadline_ns = mono_ns() + w->conf.shutdown_timeout_ms * 1000000LL;
    for (size_t i = 0; i < w->nlisteners; i++) {
        h2o_socket_read_stop(w->listeners[i].sock);
        h2o_socket_close(w->listeners[i].sock); /* our copy only; the master keeps its own */
        w->listeners[i].sock = NULL;
    }
    h2o_context_request_shutdown(&w->ctx);
    ta_accept_shutdown(w->loop, SHUTDOWN_IDLE_MS); /* connections without a request yet */
    if (w->ctx.http1.req_timeout.timeout > SHUTDOWN_IDLE_MS)
        w->ctx.http1.req_timeout.timeout = SHUTDOWN_IDLE_MS;
    ta_log(TA_LOG_INFO, "shutting down: %llu request(s) in flight",
           (unsigned long long)w->inflight);
}

static bool drained(ta_worker_t *w)
{
    return w->inflight == 0 && !ta_accept_pending() && h2o_linklist_is_empty(&w->ctx.http1._conns) &&
           h2o_linklist_is_empty(&w->ctx.http2._conns);
}

int ta_worker_run(ta_worker_t *w)
{
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigpipe_wr = w->sigpipe[1];
    sigset_t unblock;
    sigemptyset(&unblock);
    sigaddset(&unblock, SIGTERM);
    sigaddset(&unblock, SIGINT);
    sigprocmask(SIG_UNBLOCK, &unblock, NULL);

    h2o_socket_read_start(w->sigsock, on_sigpipe_readable);
    for (size_t i = 0; i < w->nlisteners; i++)
        h2o_socket_read_start(w->listeners[i].sock, on_accept);

    for (;;) {
        if (stop_signalled && !w->stopping)
            begin_shutdown(w);
        if (w->stopping) {
            if (drained(w))
                break;
            if (mono_ns() >= w->stop_deadline_ns) {
                ta_log(TA_LOG_WARN, "shutdown_timeout_ms passed with %llu request(s) in flight",
                       (unsigned long long)w->inflight);
                break;
            }
        }
        if (w->accept_paused && (w->accept_emfile || room_to_accept(w))) {
            w->accept_emfile = false; /* try accept(2) again */
            accept_resume(w);
        }
        int32_t wait = w->stopping || w->accept_paused ? 100 : 1000;
        for (size_t i = 0; i < w->nticks; i++) {
            int32_t t = w->ticks[i].fn(w->ticks[i].arg);
            if (t >= 0 && t < wait)
                wait = t;
        }
        h2o_evloop_run(w->loop, wait);
    }
    ta_log(TA_LOG_INFO, "worker stopped after %llu request(s)",
           (unsigned long long)w->requests_total);
    return 0;
}

void ta_worker_destroy(ta_worker_t *w)
{
    /* h2o 2.2.5 cannot dispose a context with connections still open (after a
     * shutdown timeout), and the process exits right after: close what we
     * own outside h2o and let the exit reclaim the rest. */
    if (w == NULL)
        return;
    while (!h2o_linklist_is_empty(&w->own_fetches)) /* their keys are wiped */
        ta_worker_fetch_cancel(H2O_STRUCT_FROM_MEMBER(struct ta_worker_fetch, own, w->own_fetches.next));
    api_pool_stop(w);
    sigpipe_wr = -1;
    if (w->sigpipe[1] != -1)
        close(w->sigpipe[1]);
}
