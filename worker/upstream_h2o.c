/*
 * upstream_h2o.c - the h2o engine of worker/upstream.h: provider calls on
 * h2o's own sockets, on the worker's loop.
 *
 * Why not h2o 2.2.5's http1client + socketpool (docs/ARCHITECTURE.md, "The
 * upstream client"): its one io_timeout cannot tell connect, first byte and
 * idle apart and has no total; it hands every byte read to the body callback
 * with no way to stop reading, so a slow client cannot push back; it takes a
 * chunked body that the connection cut after a whole chunk for a complete one
 * (a cut stream would look finished); and its pool exports every returned
 * socket (an epoll delete + add and a malloc per reuse) and writes to stderr.
 * So the parts below are h2o's, the protocol logic is ours: h2o_socket_connect,
 * h2o_socket_ssl_handshake (SNI and the certificate checked against the host
 * name, SSL_VERIFY_PEER against the system's store plus upstream_ca_file),
 * h2o_socket_write / read_start / read_stop, the socket's input buffer (from
 * h2o's recycling allocator: a consumed buffer goes back to it, so an idle
 * stream holds none), h2o_hostinfo_getaddr (the loop's resolver thread) and
 * the picohttpparser h2o ships (phr_parse_response, phr_decode_chunked).
 *
 * A call: resolve (IP literals and a 60 s cache skip it) -> connect -> TLS ->
 * write the request (head + body in one writev) and read at once -> head ->
 * body (Content-Length, chunked, or until close) -> done. A connection that
 * ended its answer cleanly goes back to the origin's pool (most recent first,
 * closed after max_idle_s or when the provider closes it: an idle connection
 * stays in the loop reading, and one idle for a second or more is checked
 * with a MSG_PEEK before reuse).
 *
 * One call is one request: nothing is ever re-sent. A pooled connection the
 * provider closed while our request was on its way ends the call
 * TA_UP_ENORESPONSE (the provider may have read it); only a call that failed
 * before anything was written (resolve, connect, TLS) is "unsent".
 *
 * Back-pressure: when on_data refuses bytes (TA_UP_PAUSE) they stay in the
 * socket's input buffer and are delivered again after ta_upcall_resume();
 * reading goes on until PAUSE_READ_MAX bytes wait, then the socket stops
 * being read and TCP pushes back on the provider. The idle timer does not run
 * while paused (the client is slow, not the provider).
 *
 * Re-entrancy: nothing here calls the consumer from inside ta_upcall_start;
 * a failure found there is reported from the loop (a 0 ms entry). The
 * consumer may cancel the call from any of its callbacks (c->busy: the call
 * is freed when the callback returns; its socket is closed at once).
 */
#include <errno.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "schema/ta.h"
#include "worker/upstream_internal.h"

/* picohttpparser as h2o 2.2.5 ships it inside libh2o (its header is not
 * installed): the declarations of deps/picohttpparser/picohttpparser.h. Its
 * chunked decoder is not used: on a malformed chunk it does not say how much
 * it decoded before, and h2o ends a body it could not finish with exactly
 * that, so the data before the break would be lost (chunked_decode below). */
struct phr_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};
int phr_parse_response(const char *buf, size_t len, int *minor_version, int *status, const char **msg, size_t *msg_len,
                       struct phr_header *headers, size_t *num_headers, size_t last_len);

#define MAX_HEADERS 100
#define MAX_HEAD (64u << 10)       /* a response head larger than this is refused */
#define PAUSE_READ_MAX (16u << 10) /* paused: stop reading the socket past this */
#define DELIVER_MAX (64u << 10)    /* on_data gets at most this much at once (one read may hold
                                    * megabytes; consumers bound what they buffer per piece) */
#define DNS_TTL_MS 60000           /* a resolved address is reused this long (curl's default) */
#define DEFAULT_MAX_IDLE 256       /* max_connects 0 */
#define PEEK_AFTER_MS 1000         /* a pooled connection idle this long is checked before reuse */

typedef struct h2_up h2_up_t;
typedef struct h2_call h2_call_t;

/* One origin (scheme, host, port): its pool and its resolved address. */
typedef struct origin {
    h2o_linklist_t link; /* h2_up_t.origins */
    h2o_linklist_t idle; /* conn_t.idle_link, oldest first */
    bool tls;
    uint16_t port;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint64_t addr_until; /* 0: not resolved */
    bool early_close;    /* closed an idle connection within PEEK_AFTER_MS of its answer */
    SSL_CTX *ssl_ctx;    /* https: made on its first connection (origin_ssl); freed with its last
                          * reference (a closing connection may hold one) */
    char host[];         /* DNS name (NUL-terminated): resolution, SNI, certificate name */
} origin_t;

/* One connection: in a call (call != NULL) or idle in its origin's pool. */
typedef struct conn {
    h2_up_t *up;
    h2o_socket_t *sock; /* sock->data == this */
    origin_t *o;
    h2_call_t *call;
    h2o_linklist_t idle_link;
    uint64_t idle_since;
    uint32_t uses; /* times taken from the pool */
} conn_t;

/* A resolution in flight; outlives a cancelled call (c = NULL then). */
typedef struct lookup {
    h2_call_t *c;
} lookup_t;

enum phase { P_RESOLVE, P_CONNECT, P_TLS, P_HEAD, P_BODY, P_DONE };
enum framing { F_NONE, F_LENGTH, F_CHUNKED, F_CLOSE };

struct h2_call {
    struct ta_upcall base;
    h2_up_t *up;
    h2o_linklist_t link; /* h2_up_t.calls */
    /* the consumer */
    void *ctx;
    int (*on_header)(void *, const char *, size_t, const char *, size_t);
    int (*on_head)(void *, int);
    int (*on_data)(void *, const char *, size_t);
    void (*on_done)(void *, int, const ta_upcall_info_t *);
    int32_t first_byte_ms, idle_ms;
    /* the request */
    char *head; /* the request's head (holds the provider key: wiped) */
    size_t head_len;
    const char *body;
    size_t body_len;
    /* the connection */
    origin_t *o;
    conn_t *conn;
    lookup_t *lookup;
    ta_uptimer_t timer; /* connect, then first byte, then idle */
    ta_uptimer_t total;
    h2o_timeout_entry_t defer; /* 0 ms: a failure found in start, a resume asked from on_data */
    int deferred_err;          /* != 0: end with it from the loop */
    /* the answer */
    enum phase phase;
    enum framing framing;
    int status;
    uint64_t left;             /* F_LENGTH: body bytes not delivered yet */
    struct chunked {
        uint64_t left;         /* data bytes left in the current chunk */
        uint8_t state, ndigits;
    } dec;
    size_t ready;              /* decoded body bytes at the start of the input, not delivered */
    size_t head_seen;          /* bytes of an incomplete head already parsed */
    const char *read_err;      /* the socket ended (delivered once what is ready went) */
    uint64_t bytes_in;
    const char *msg;
    int busy;                  /* inside a consumer callback */
    bool cancelled, paused, resume_pending, reading_stopped, got_byte, keepalive, reused, eos;
};

struct h2_up {
    struct ta_upstream base; /* loop, opts, inflight, timeout lists */
    h2o_linklist_t origins;
    h2o_linklist_t calls;
    size_t nidle, max_idle;
    size_t nconns;             /* open connections, in calls and idle */
    size_t lookups;            /* resolutions of live calls in flight */
    X509_STORE *store;         /* made on the first https call, or at create with a ca_file */
    h2o_multithread_receiver_t *getaddr;
    h2o_multithread_queue_t *own_queue; /* when opts.getaddr was NULL */
    h2o_multithread_receiver_t own_receiver;
    h2o_timeout_entry_t sweep; /* closes idle connections past max_idle_s */
    h2o_timeout_t sweep_timeout;
};

static void call_finish(h2_call_t *c, int err);
static void process(h2_call_t *c);
static void on_read(h2o_socket_t *sock, const char *err);

/* ---- connections and the pool ----------------------------------------------- */

static void conn_close(conn_t *k)
{
    if (h2o_linklist_is_linked(&k->idle_link)) {
        h2o_linklist_unlink(&k->idle_link);
        k->up->nidle--;
    }
    k->up->nconns--;
    h2o_socket_close(k->sock);
    free(k);
}

static void on_idle_read(h2o_socket_t *sock, const char *err)
{
    conn_t *k = sock->data;
    /* a TLS record that carried no data (a late session ticket) leaves the
     * input empty; anything else on an idle connection ends it */
    if (err == NULL && sock->input->size == 0)
        return;
    if (h2o_now(k->up->base.loop) - k->idle_since < PEEK_AFTER_MS)
        k->o->early_close = true;
    conn_close(k);
}

static void sweep_idle(h2o_timeout_entry_t *e)
{
    h2_up_t *up = H2O_STRUCT_FROM_MEMBER(h2_up_t, sweep, e);
    uint64_t now = h2o_now(up->base.loop), max_ms = (uint64_t)up->base.opts.max_idle_s * 1000;
    for (h2o_linklist_t *l = up->origins.next; l != &up->origins; l = l->next) {
        origin_t *o = H2O_STRUCT_FROM_MEMBER(origin_t, link, l);
        while (!h2o_linklist_is_empty(&o->idle)) {
            conn_t *k = H2O_STRUCT_FROM_MEMBER(conn_t, idle_link, o->idle.next);
            if (now - k->idle_since < max_ms)
                break;
            conn_close(k);
        }
    }
    if (up->nidle > 0)
        h2o_timeout_link(up->base.loop, &up->sweep_timeout, &up->sweep);
}

/* Close the oldest idle connection of any origin (descriptors ran out). */
static bool evict_idle(h2_up_t *up)
{
    conn_t *oldest = NULL;
    for (h2o_linklist_t *l = up->origins.next; l != &up->origins; l = l->next) {
        origin_t *o = H2O_STRUCT_FROM_MEMBER(origin_t, link, l);
        if (h2o_linklist_is_empty(&o->idle))
            continue;
        conn_t *k = H2O_STRUCT_FROM_MEMBER(conn_t, idle_link, o->idle.next);
        if (oldest == NULL || k->idle_since < oldest->idle_since)
            oldest = k;
    }
    if (oldest == NULL)
        return false;
    conn_close(oldest);
    return true;
}

static void pool_put(conn_t *k)
{
    h2_up_t *up = k->up;
    if (up->nidle >= up->max_idle && !evict_idle(up)) {
        conn_close(k);
        return;
    }
    k->call = NULL;
    k->idle_since = h2o_now(up->base.loop);
    h2o_socket_read_start(k->sock, on_idle_read);
    h2o_linklist_insert(&k->o->idle, &k->idle_link);
    up->nidle++;
    if (!h2o_timeout_is_linked(&up->sweep))
        h2o_timeout_link(up->base.loop, &up->sweep_timeout, &up->sweep);
}

/* The most recently used live connection of the origin, or NULL. */
static conn_t *pool_take(h2_up_t *up, origin_t *o)
{
    uint64_t now = h2o_now(up->base.loop), max_ms = (uint64_t)up->base.opts.max_idle_s * 1000;
    while (!h2o_linklist_is_empty(&o->idle)) {
        conn_t *k = H2O_STRUCT_FROM_MEMBER(conn_t, idle_link, o->idle.prev);
        h2o_linklist_unlink(&k->idle_link);
        up->nidle--;
        if (now - k->idle_since >= max_ms) {
            conn_close(k);
            continue;
        }
        /* A FIN that arrived before this loop turn's epoll_wait was seen
         * (on_idle_read closed the connection). One that arrived since is
         * asked of the kernel (a MSG_PEEK) when the connection was idle long
         * enough for a provider's keep-alive timeout, when it was never reused
         * (a provider may close right after each answer without saying so),
         * and always for an origin seen closing connections that were idle a
         * moment only; the hot path, reusing a proven connection within
         * milliseconds, pays no system call. Bytes waiting on a plain
         * connection mean it is broken; on TLS they may be a record without
         * data, left to the head parser. */
        k->uses++;
        if (k->uses > 1 && !o->early_close && now - k->idle_since < PEEK_AFTER_MS)
            return k;
        char b;
        ssize_t r = recv(h2o_socket_get_fd(k->sock), &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if ((r == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) || (r > 0 && o->tls))
            return k;
        conn_close(k);
    }
    return NULL;
}

static origin_t *origin_get(h2_up_t *up, bool tls, h2o_iovec_t host, uint16_t port)
{
    for (h2o_linklist_t *l = up->origins.next; l != &up->origins; l = l->next) {
        origin_t *o = H2O_STRUCT_FROM_MEMBER(origin_t, link, l);
        if (o->tls == tls && o->port == port && strlen(o->host) == host.len && memcmp(o->host, host.base, host.len) == 0)
            return o;
    }
    origin_t *o = calloc(1, sizeof(*o) + host.len + 1);
    if (o == NULL)
        return NULL;
    o->tls = tls;
    o->port = port;
    memcpy(o->host, host.base, host.len);
    h2o_linklist_init_anchor(&o->idle);
    h2o_linklist_insert(&up->origins, &o->link);
    return o;
}

/* ---- TLS ------------------------------------------------------------------------ */

/* The trust store, shared by every origin's context: the system's CAs and
 * upstream_ca_file. */
static int make_store(h2_up_t *up)
{
    X509_STORE *st = X509_STORE_new();
    if (st == NULL)
        return TA_ECRYPTO;
    X509_STORE_set_default_paths(st);
    const char *ca = up->base.opts.ca_file;
    if (ca != NULL && ca[0] != '\0' && X509_STORE_load_locations(st, ca, NULL) != 1) {
        char eb[160];
        ERR_error_string_n(ERR_get_error(), eb, sizeof(eb));
        ta_log(TA_LOG_ERROR, "upstream_ca_file %s cannot be loaded: %s", ca, eb);
        X509_STORE_free(st);
        return TA_ECONFIG;
    }
    up->store = st;
    return 0;
}

/* An origin's TLS context: the peer's chain checked against the store and
 * its name (or IP address) against the host, both by OpenSSL during the
 * handshake. h2o 2.2.5's own name check is not relied on: it is skipped when
 * the client's last handshake flight is still to be written as SSL_connect
 * completes, which is every TLS 1.3 handshake. One context per origin holds
 * that name, and h2o's client session cache (resumed sessions save a round
 * trip on each new connection). */
static int origin_ssl(h2_up_t *up, origin_t *o)
{
    if (up->store == NULL) {
        int rc = make_store(up);
        if (rc != 0)
            return rc;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        return TA_ECRYPTO;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set1_cert_store(ctx, up->store);
    X509_VERIFY_PARAM *vp = SSL_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    struct in_addr a4;
    struct in6_addr a6;
    int ok = inet_pton(AF_INET, o->host, &a4) == 1 || inet_pton(AF_INET6, o->host, &a6) == 1
                 ? X509_VERIFY_PARAM_set1_ip_asc(vp, o->host)
                 : X509_VERIFY_PARAM_set1_host(vp, o->host, 0);
    if (ok != 1) {
        SSL_CTX_free(ctx);
        return TA_ECRYPTO;
    }
    h2o_socket_ssl_set_session_cache(ctx, h2o_cache_create(0, 64, 3600 * 1000, h2o_socket_ssl_destroy_session_cache_entry));
    o->ssl_ctx = ctx;
    return 0;
}

/* ---- consumer callbacks -------------------------------------------------------- */

/* After a consumer callback: false when the call was cancelled inside it (it
 * is freed once the outermost callback returned; touch nothing then). */
static void call_free(h2_call_t *c);
static bool back(h2_call_t *c)
{
    c->busy--;
    if (!c->cancelled)
        return true;
    if (c->busy == 0)
        call_free(c);
    return false;
}

/* ---- a call ----------------------------------------------------------------------- */

static void wipe_head(h2_call_t *c)
{
    if (c->head != NULL) {
        explicit_bzero(c->head, c->head_len);
        free(c->head);
        c->head = NULL;
    }
}

static void detach(h2_call_t *c)
{
    ta_uptimer_stop(&c->timer);
    ta_uptimer_stop(&c->total);
    if (h2o_timeout_is_linked(&c->defer))
        h2o_timeout_unlink(&c->defer);
    if (c->lookup != NULL) {
        c->lookup->c = NULL; /* its answer is dropped (on_getaddr) */
        c->lookup = NULL;
        c->up->lookups--;
    }
}

static void call_free(h2_call_t *c)
{
    h2_up_t *up = c->up;
    detach(c);
    if (c->conn != NULL) {
        conn_close(c->conn);
        c->conn = NULL;
    }
    wipe_head(c);
    h2o_linklist_unlink(&c->link);
    up->base.inflight--;
    free(c);
}

static void call_finish(h2_call_t *c, int err)
{
    c->phase = P_DONE;
    detach(c);
    conn_t *k = c->conn;
    c->conn = NULL;
    if (k != NULL) {
        if (err == TA_UP_OK && c->keepalive && k->sock->input->size == 0 && c->head == NULL)
            pool_put(k);
        else
            conn_close(k);
    }
    if (!c->cancelled && c->on_done != NULL) {
        ta_upcall_info_t info = {
            .status = c->status,
            .msg = err == TA_UP_OK ? "" : c->msg != NULL ? c->msg : ta_up_err_name(err),
            .bytes_in = c->bytes_in,
            .reused = c->reused,
        };
        c->cancelled = true; /* from here on the consumer has forgotten it */
        c->on_done(c->ctx, err, &info);
    }
    call_free(c);
}

static void fail(h2_call_t *c, int err, const char *msg)
{
    c->msg = msg;
    call_finish(c, err);
}

static void on_defer(h2o_timeout_entry_t *e)
{
    h2_call_t *c = H2O_STRUCT_FROM_MEMBER(h2_call_t, defer, e);
    if (c->deferred_err != 0) {
        call_finish(c, c->deferred_err);
        return;
    }
    if (c->resume_pending) {
        c->resume_pending = false;
        ta_upcall_resume(&c->base);
    }
}

static void fail_later(h2_call_t *c, int err, const char *msg)
{
    c->deferred_err = err;
    c->msg = msg;
    if (!h2o_timeout_is_linked(&c->defer))
        h2o_timeout_link(c->up->base.loop, ta_up_zero(&c->up->base), &c->defer);
}

static void on_timer(ta_uptimer_t *t)
{
    h2_call_t *c = H2O_STRUCT_FROM_MEMBER(h2_call_t, timer, t);
    if (c->phase < P_HEAD)
        fail(c, TA_UP_ETIMEOUT_CONNECT, "connect timeout");
    else if (!c->got_byte)
        fail(c, TA_UP_ETIMEOUT_FIRST_BYTE, "no response byte in time");
    else
        fail(c, TA_UP_ETIMEOUT_IDLE, "the response stalled");
}

static void on_total(ta_uptimer_t *t)
{
    h2_call_t *c = H2O_STRUCT_FROM_MEMBER(h2_call_t, total, t);
    if (c->phase < P_HEAD) /* nothing was sent */
        fail(c, TA_UP_ETIMEOUT_CONNECT, "connect timeout (the call's total time ran out)");
    else
        fail(c, TA_UP_ETIMEOUT_TOTAL, "the call ran past its total time");
}

/* ---- the answer ----------------------------------------------------------------- */

static void note_byte(h2_call_t *c)
{
    c->got_byte = true;
    if (c->idle_ms > 0)
        ta_uptimer_start(&c->timer, (uint64_t)c->idle_ms);
    else
        ta_uptimer_stop(&c->timer);
}

static bool value_has_token(const char *v, size_t len, const char *tok, size_t tlen)
{
    return h2o_contains_token(v, len, tok, tlen, ',') != 0;
}

/* The head is complete in the input (rlen bytes): framing, then the consumer. */
static void head_done(h2_call_t *c, int minor, int status, struct phr_header *hs, size_t nh, int rlen)
{
    bool te = false, cl = false;
    c->status = status;
    c->keepalive = minor >= 1;
    c->framing = F_CLOSE;
    for (size_t i = 0; i < nh; i++) {
        const struct phr_header *h = &hs[i];
        if (h->name == NULL) /* obsolete line folding: the value goes on */
            continue;
        if (h2o_lcstris(h->name, h->name_len, H2O_STRLIT("connection"))) {
            if (value_has_token(h->value, h->value_len, H2O_STRLIT("close")))
                c->keepalive = false;
            else if (value_has_token(h->value, h->value_len, H2O_STRLIT("keep-alive")))
                c->keepalive = true;
        } else if (h2o_lcstris(h->name, h->name_len, H2O_STRLIT("transfer-encoding"))) {
            if (!h2o_lcstris(h->value, h->value_len, H2O_STRLIT("chunked"))) {
                fail(c, TA_UP_EOTHER, "unsupported transfer-encoding in the response");
                return;
            }
            te = true;
        } else if (h2o_lcstris(h->name, h->name_len, H2O_STRLIT("content-length"))) {
            size_t v = h2o_strtosize(h->value, h->value_len);
            if (v == SIZE_MAX || (cl && v != c->left)) {
                fail(c, TA_UP_EOTHER, "invalid content-length in the response");
                return;
            }
            cl = true;
            c->left = v;
        }
    }
    if (te) {
        c->framing = F_CHUNKED;
        memset(&c->dec, 0, sizeof(c->dec));
        if (cl) /* both: chunked wins, and the connection is not trusted after (RFC 9112 6.3) */
            c->keepalive = false;
    } else if (cl) {
        c->framing = F_LENGTH;
    }
    if (status == 204 || status == 304)
        c->framing = F_NONE;
    if (c->framing == F_CLOSE)
        c->keepalive = false;
    if (c->on_header != NULL) {
        for (size_t i = 0; i < nh; i++) {
            if (hs[i].name == NULL)
                continue;
            c->busy++;
            int r = c->on_header(c->ctx, hs[i].name, hs[i].name_len, hs[i].value, hs[i].value_len);
            if (!back(c))
                return;
            if (r < 0) {
                fail(c, TA_UP_EABORTED, "aborted by the consumer");
                return;
            }
        }
    }
    c->phase = P_BODY;
    if (c->on_head != NULL) {
        c->busy++;
        int r = c->on_head(c->ctx, status);
        if (!back(c))
            return;
        if (r < 0) {
            fail(c, TA_UP_EABORTED, "aborted by the consumer");
            return;
        }
    }
    h2o_buffer_consume(&c->conn->sock->input, (size_t)rlen);
    process(c);
}

static void parse_head(h2_call_t *c)
{
    h2o_socket_t *sock = c->conn->sock;
    for (;;) {
        struct phr_header hs[MAX_HEADERS];
        size_t nh = MAX_HEADERS, msg_len;
        int minor, status;
        const char *msg;
        int rlen = phr_parse_response(sock->input->bytes, sock->input->size, &minor, &status, &msg, &msg_len, hs, &nh,
                                      c->head_seen);
        if (rlen == -2) {
            if (sock->input->size > MAX_HEAD) {
                fail(c, TA_UP_EOTHER, "the response head is too large");
                return;
            }
            c->head_seen = sock->input->size;
            if (c->read_err != NULL)
                fail(c, TA_UP_ECUT, "the connection closed inside the response head");
            return;
        }
        if (rlen == -1) {
            fail(c, TA_UP_EOTHER, "malformed response head");
            return;
        }
        c->head_seen = 0;
        if (status >= 100 && status < 200) {
            if (status == 101) {
                fail(c, TA_UP_EOTHER, "unexpected protocol switch");
                return;
            }
            h2o_buffer_consume(&sock->input, (size_t)rlen); /* 1xx: the final answer follows */
            if (sock->input->size == 0) {
                if (c->read_err != NULL)
                    fail(c, TA_UP_ECUT, "the connection closed after an interim response");
                return;
            }
            continue;
        }
        head_done(c, minor, status, hs, nh, rlen);
        return;
    }
}

/* Chunked transfer coding (RFC 9112 7.1), decoded in place: the data of
 * buf[0..*len) moves to its start and *len becomes its length. Returns 1 at
 * the end of the body (*rest: bytes after it), 0 when more is needed, -1 on
 * a malformed body (*len: the data before the fault). Extensions and trailer
 * fields are skipped. */
enum { CH_SIZE, CH_EXT, CH_DATA, CH_DATA_CR, CH_DATA_LF, CH_TRAILER, CH_TRAILER_LINE, CH_END_LF, CH_DONE };

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = (char)(ch | 0x20);
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

static int chunked_decode(struct chunked *d, char *buf, size_t *len, size_t *rest)
{
    size_t src = 0, dst = 0, n = *len;
    while (src < n) {
        char ch = buf[src];
        switch (d->state) {
        case CH_SIZE: {
            int v = hexval(ch);
            if (v >= 0) {
                if (d->ndigits++ == 15)
                    goto Error; /* past 2^60: no real chunk */
                d->left = d->left * 16 + (uint64_t)v;
                src++;
                break;
            }
            if (d->ndigits == 0 || !(ch == ';' || ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n'))
                goto Error;
            d->state = CH_EXT;
            break;
        }
        case CH_EXT: /* the rest of the size line */
            src++;
            if (ch == '\n') {
                d->ndigits = 0;
                d->state = d->left == 0 ? CH_TRAILER : CH_DATA;
            }
            break;
        case CH_DATA: {
            size_t take = n - src < d->left ? n - src : (size_t)d->left;
            memmove(buf + dst, buf + src, take);
            dst += take;
            src += take;
            if ((d->left -= take) == 0)
                d->state = CH_DATA_CR;
            break;
        }
        case CH_DATA_CR:
            src++;
            if (ch == '\r')
                d->state = CH_DATA_LF;
            else if (ch == '\n')
                d->state = CH_SIZE;
            else
                goto Error;
            break;
        case CH_DATA_LF:
            src++;
            if (ch != '\n')
                goto Error;
            d->state = CH_SIZE;
            break;
        case CH_TRAILER: /* at the start of a trailer line, or of the final empty line */
            if (ch == '\r' || ch == '\n') {
                src++;
                if (ch == '\n')
                    goto Done;
                d->state = CH_END_LF;
            } else {
                d->state = CH_TRAILER_LINE;
            }
            break;
        case CH_TRAILER_LINE:
            src++;
            if (ch == '\n')
                d->state = CH_TRAILER;
            break;
        case CH_END_LF:
            src++;
            if (ch != '\n')
                goto Error;
            goto Done;
        default:
            goto Error;
        }
    }
    *len = dst;
    return 0;
Done:
    d->state = CH_DONE;
    *len = dst;
    *rest = n - src;
    return 1;
Error:
    *len = dst;
    return -1;
}

/* The body: decode what arrived, deliver unless paused, end when complete. */
static void process(h2_call_t *c)
{
    for (;;) {
        h2o_buffer_t **in = &c->conn->sock->input;
        size_t avail = (*in)->size;
        if (c->ready < avail && !c->eos) {
            switch (c->framing) {
            case F_LENGTH:
                if (avail > c->left) { /* bytes past the body: the connection is not reused */
                    c->keepalive = false;
                    (*in)->size = avail = (size_t)c->left;
                }
                c->ready = avail;
                break;
            case F_CHUNKED: {
                size_t n = avail - c->ready, rest = 0;
                int r = c->read_err == NULL ? chunked_decode(&c->dec, (*in)->bytes + c->ready, &n, &rest) : 0;
                c->ready += n;
                (*in)->size = c->ready;
                if (r < 0) { /* what came before is delivered, then the call ends cut */
                    c->read_err = "malformed chunked response body";
                    if (!c->reading_stopped) {
                        h2o_socket_read_stop(c->conn->sock);
                        c->reading_stopped = true;
                    }
                } else if (r > 0) {
                    c->eos = true;
                    if (rest > 0)
                        c->keepalive = false;
                }
                break;
            }
            case F_CLOSE:
                c->ready = avail;
                break;
            case F_NONE:
                c->keepalive = false;
                (*in)->size = 0;
                break;
            }
        }
        if (c->ready > 0 && !c->paused) {
            size_t n = c->ready < DELIVER_MAX ? c->ready : DELIVER_MAX;
            c->busy++;
            int r = c->on_data(c->ctx, (*in)->bytes, n);
            if (!back(c))
                return;
            if (r < 0) {
                fail(c, TA_UP_EABORTED, "aborted by the consumer");
                return;
            }
            if (r == TA_UP_PAUSE) {
                c->paused = true;
                if (c->resume_pending) { /* resumed from inside on_data: again from the loop */
                    if (!h2o_timeout_is_linked(&c->defer))
                        h2o_timeout_link(c->up->base.loop, ta_up_zero(&c->up->base), &c->defer);
                }
            } else {
                c->resume_pending = false;
                c->bytes_in += n;
                if (c->framing == F_LENGTH)
                    c->left -= n;
                h2o_buffer_consume(&c->conn->sock->input, n);
                c->ready -= n;
                continue; /* the rest of what is ready, then what is undecoded */
            }
        }
        if (c->paused) {
            ta_uptimer_stop(&c->timer); /* the consumer is slow, not the provider */
            if (!c->reading_stopped && c->read_err == NULL && c->conn->sock->input->size >= PAUSE_READ_MAX) {
                h2o_socket_read_stop(c->conn->sock);
                c->reading_stopped = true;
            }
            return;
        }
        bool complete = c->framing == F_NONE || (c->framing == F_LENGTH && c->left == 0) ||
                        (c->framing == F_CHUNKED && c->eos);
        if (complete) {
            call_finish(c, TA_UP_OK);
            return;
        }
        if (c->read_err != NULL) {
            if (c->framing == F_CLOSE && c->read_err == h2o_socket_error_closed)
                call_finish(c, TA_UP_OK);
            else if (c->read_err[0] == 'm') /* malformed, above: h2o ends a body it could not finish so */
                fail(c, TA_UP_ECUT, c->read_err);
            else
                fail(c, TA_UP_ECUT, "the connection broke inside the response body");
            return;
        }
        return;
    }
}

static void on_read(h2o_socket_t *sock, const char *err)
{
    conn_t *k = sock->data;
    h2_call_t *c = k->call;
    if (err != NULL) {
        c->read_err = err;
        h2o_socket_read_stop(sock);
        c->reading_stopped = true;
    }
    if (c->phase == P_HEAD) {
        if (sock->input->size == 0) {
            if (err != NULL) /* nothing of an answer: the provider may have read the request */
                fail(c, c->got_byte ? TA_UP_ECUT : TA_UP_ENORESPONSE,
                     c->reused ? "the reused connection closed before any response byte"
                               : "the connection closed before any response byte");
            return;
        }
        if (!c->got_byte || c->idle_ms > 0)
            note_byte(c);
        parse_head(c);
        return;
    }
    if (sock->bytes_read > 0 && !c->paused && c->idle_ms > 0)
        ta_uptimer_start(&c->timer, (uint64_t)c->idle_ms);
    process(c);
}

static void on_written(h2o_socket_t *sock, const char *err)
{
    conn_t *k = sock->data;
    h2_call_t *c = k->call;
    wipe_head(c);
    if (err != NULL && c->phase == P_HEAD && sock->input->size == 0)
        fail(c, c->got_byte ? TA_UP_ECUT : TA_UP_ENORESPONSE, "the request could not be written");
    /* else the read side says how it ended */
}

static void send_request(h2_call_t *c)
{
    conn_t *k = c->conn;
    ta_uptimer_stop(&c->timer);
    c->phase = P_HEAD;
    h2o_iovec_t bufs[2] = {h2o_iovec_init(c->head, c->head_len), h2o_iovec_init(c->body, c->body_len)};
    h2o_socket_write(k->sock, bufs, c->body_len > 0 ? 2 : 1, on_written);
    h2o_socket_read_start(k->sock, on_read);
    if (c->first_byte_ms > 0)
        ta_uptimer_start(&c->timer, (uint64_t)c->first_byte_ms);
}

static void on_handshake(h2o_socket_t *sock, const char *err)
{
    conn_t *k = sock->data;
    h2_call_t *c = k->call;
    /* OpenSSL checked the name (origin_ssl): h2o's own check, which knows
     * DNS names only, may still disagree about an IP address */
    if (err != NULL && err != h2o_socket_error_ssl_cert_name_mismatch) {
        fail(c, TA_UP_ECONNECT, err); /* OpenSSL's text: self-signed certificate, hostname mismatch, ... */
        return;
    }
    send_request(c);
}

static void on_connect(h2o_socket_t *sock, const char *err)
{
    conn_t *k = sock->data;
    h2_call_t *c = k->call;
    if (err != NULL) {
        c->o->addr_until = 0; /* resolve again next time */
        fail(c, TA_UP_ECONNECT, "connection refused or unreachable");
        return;
    }
    if (c->o->tls) {
        c->phase = P_TLS;
        h2o_socket_ssl_handshake(sock, c->o->ssl_ctx, c->o->host, on_handshake);
        return;
    }
    send_request(c);
}

static void connect_to(h2_call_t *c, struct sockaddr *sa, socklen_t salen)
{
    h2_up_t *up = c->up;
    c->phase = P_CONNECT;
    h2o_socket_t *sock = h2o_socket_connect(up->base.loop, sa, salen, on_connect);
    if (sock == NULL && (errno == EMFILE || errno == ENFILE) && evict_idle(up))
        sock = h2o_socket_connect(up->base.loop, sa, salen, on_connect); /* an idle connection gave its descriptor */
    if (sock == NULL) {
        fail_later(c, TA_UP_ECONNECT,
                   errno == EMFILE || errno == ENFILE ? "no file descriptor left" : "connection refused or unreachable");
        return;
    }
    conn_t *k = calloc(1, sizeof(*k));
    if (k == NULL) {
        h2o_socket_close(sock);
        fail_later(c, TA_UP_ECONNECT, "out of memory");
        return;
    }
    k->up = up;
    k->sock = sock;
    k->o = c->o;
    k->call = c;
    sock->data = k;
    c->conn = k;
    up->nconns++;
}

static void on_getaddr(h2o_hostinfo_getaddr_req_t *req, const char *errstr, struct addrinfo *res, void *data)
{
    lookup_t *l = data;
    h2_call_t *c = l->c;
    free(l);
    if (c == NULL)
        return; /* the call is gone */
    c->lookup = NULL;
    c->up->lookups--;
    if (errstr != NULL) {
        fail(c, TA_UP_ECONNECT, errstr);
        return;
    }
    struct addrinfo *ai = h2o_hostinfo_select_one(res);
    if (ai->ai_addrlen <= sizeof(c->o->addr)) {
        memcpy(&c->o->addr, ai->ai_addr, ai->ai_addrlen);
        c->o->addrlen = (socklen_t)ai->ai_addrlen;
        c->o->addr_until = h2o_now(c->up->base.loop) + DNS_TTL_MS;
    }
    connect_to(c, ai->ai_addr, (socklen_t)ai->ai_addrlen);
    if (c->deferred_err != 0) /* from the loop already: end now */
        call_finish(c, c->deferred_err);
}

static void begin(h2_call_t *c)
{
    h2_up_t *up = c->up;
    origin_t *o = c->o;
    conn_t *k = pool_take(up, o);
    if (k != NULL) {
        k->call = c;
        c->conn = k;
        c->reused = true;
        send_request(c);
        return;
    }
    if (o->tls && o->ssl_ctx == NULL && origin_ssl(up, o) != 0) {
        fail_later(c, TA_UP_ECONNECT, "TLS is not available (upstream_ca_file)");
        return;
    }
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    if (h2o_hostinfo_aton(h2o_iovec_init(o->host, strlen(o->host)), &sin.sin_addr) == 0) {
        sin.sin_family = AF_INET;
        sin.sin_port = htons(o->port);
        connect_to(c, (struct sockaddr *)&sin, sizeof(sin));
        return;
    }
    if (o->addr_until > h2o_now(up->base.loop)) {
        connect_to(c, (struct sockaddr *)&o->addr, o->addrlen);
        return;
    }
    lookup_t *l = malloc(sizeof(*l));
    if (l == NULL) {
        fail_later(c, TA_UP_ECONNECT, "out of memory");
        return;
    }
    l->c = c;
    c->lookup = l;
    up->lookups++;
    char serv[8];
    size_t sl = 0;
    char digits[6];
    int nd = 0;
    for (unsigned p = o->port; nd == 0 || p > 0; p /= 10)
        digits[nd++] = (char)('0' + p % 10);
    while (nd > 0)
        serv[sl++] = digits[--nd];
    h2o_hostinfo_getaddr(up->getaddr, h2o_iovec_init(o->host, strlen(o->host)), h2o_iovec_init(serv, sl), AF_UNSPEC,
                         SOCK_STREAM, IPPROTO_TCP, AI_ADDRCONFIG | AI_NUMERICSERV, on_getaddr, l);
}

/* ---- the request's head ------------------------------------------------------------ */

static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

static char *put_u64(char *p, uint64_t v)
{
    char d[20];
    int n = 0;
    do
        d[n++] = (char)('0' + v % 10);
    while ((v /= 10) > 0);
    while (n > 0)
        *p++ = d[--n];
    return p;
}

/* "POST /path HTTP/1.1", Host, Content-Length, the caller's lines. */
static int build_head(h2_call_t *c, const h2o_url_t *u, const ta_upcall_spec_t *spec)
{
    size_t cap = 64 + u->path.len + u->authority.len;
    for (size_t i = 0; i < spec->nheaders; i++)
        cap += strlen(spec->headers[i]) + 2;
    for (size_t i = 0; i < u->path.len; i++)
        if ((unsigned char)u->path.base[i] <= 0x20 || u->path.base[i] == 0x7f)
            return TA_EINVAL; /* the target must be one token */
    char *h = malloc(cap), *p = h;
    if (h == NULL)
        return -ENOMEM;
    if (spec->body != NULL)
        p = put(p, H2O_STRLIT("POST "));
    else
        p = put(p, H2O_STRLIT("GET "));
    p = put(p, u->path.base, u->path.len);
    p = put(p, H2O_STRLIT(" HTTP/1.1\r\nHost: "));
    p = put(p, u->authority.base, u->authority.len);
    p = put(p, H2O_STRLIT("\r\n"));
    if (spec->body != NULL) {
        p = put(p, H2O_STRLIT("Content-Length: "));
        p = put_u64(p, spec->body_len);
        p = put(p, H2O_STRLIT("\r\n"));
    }
    for (size_t i = 0; i < spec->nheaders; i++) {
        const char *line = spec->headers[i];
        size_t n = strlen(line);
        if (memchr(line, '\r', n) != NULL || memchr(line, '\n', n) != NULL) {
            explicit_bzero(h, (size_t)(p - h));
            free(h);
            return TA_EINVAL; /* a header line must not end the head or start another */
        }
        p = put(p, line, n);
        p = put(p, H2O_STRLIT("\r\n"));
    }
    p = put(p, H2O_STRLIT("\r\n"));
    c->head = h;
    c->head_len = (size_t)(p - h);
    return 0;
}

/* ---- the engine ------------------------------------------------------------------------ */

static void h2_destroy(ta_upstream_t *up_);

static int h2_create(ta_upstream_t **out, h2o_loop_t *loop, const ta_upstream_opts_t *opts)
{
    h2_up_t *up = calloc(1, sizeof(*up));
    if (up == NULL)
        return -ENOMEM;
    ta_up_base_init(&up->base, &ta_up_h2o_ops, loop, opts);
    h2o_linklist_init_anchor(&up->origins);
    h2o_linklist_init_anchor(&up->calls);
    up->max_idle = up->base.opts.max_connects > 0 ? (size_t)up->base.opts.max_connects : DEFAULT_MAX_IDLE;
    h2o_timeout_init(loop, &up->sweep_timeout, 1000);
    up->sweep.cb = sweep_idle;
    if (up->base.opts.getaddr != NULL) {
        up->getaddr = up->base.opts.getaddr;
    } else {
        up->own_queue = h2o_multithread_create_queue(loop);
        h2o_multithread_register_receiver(up->own_queue, &up->own_receiver, h2o_hostinfo_getaddr_receiver);
        up->getaddr = &up->own_receiver;
    }
    if (up->base.opts.ca_file != NULL && up->base.opts.ca_file[0] != '\0') {
        int rc = make_store(up); /* a bad file fails here, at start, not at the first call */
        if (rc != 0) {
            h2_destroy(&up->base);
            return rc;
        }
    }
    *out = &up->base;
    return 0;
}

static void h2_destroy(ta_upstream_t *up_)
{
    h2_up_t *up = (h2_up_t *)up_;
    bool resolving = up->lookups > 0;
    while (!h2o_linklist_is_empty(&up->calls)) {
        h2_call_t *c = H2O_STRUCT_FROM_MEMBER(h2_call_t, link, up->calls.next);
        c->cancelled = true;
        call_free(c);
    }
    while (!h2o_linklist_is_empty(&up->origins)) {
        origin_t *o = H2O_STRUCT_FROM_MEMBER(origin_t, link, up->origins.next);
        while (!h2o_linklist_is_empty(&o->idle))
            conn_close(H2O_STRUCT_FROM_MEMBER(conn_t, idle_link, o->idle.next));
        h2o_linklist_unlink(&o->link);
        if (o->ssl_ctx != NULL)
            SSL_CTX_free(o->ssl_ctx); /* with h2o's session cache, at its last reference */
        free(o);
    }
    if (h2o_timeout_is_linked(&up->sweep))
        h2o_timeout_unlink(&up->sweep);
    h2o_timeout_dispose(up->base.loop, &up->sweep_timeout);
    if (up->own_queue != NULL && !resolving) {
        h2o_multithread_unregister_receiver(up->own_queue, &up->own_receiver);
        h2o_multithread_destroy_queue(up->own_queue);
        free(up->own_queue); /* 2.2.5's evloop destroy_queue does not free it */
    }
    /* else a resolution of a cancelled call still answers to the queue: it is
     * left to the process (a worker passes its context's receiver instead) */
    if (up->store != NULL)
        X509_STORE_free(up->store);
    ta_up_base_dispose(&up->base);
    free(up);
}

static int h2_start(ta_upstream_t *up_, const ta_upcall_spec_t *spec, ta_upcall_t **out)
{
    h2_up_t *up = (h2_up_t *)up_;
    h2o_url_t u;
    if (spec->url == NULL || h2o_url_parse(spec->url, SIZE_MAX, &u) != 0 || u.host.len == 0)
        return TA_EINVAL;
    bool tls = u.scheme == &H2O_URL_SCHEME_HTTPS;
    if (!tls && u.scheme != &H2O_URL_SCHEME_HTTP)
        return TA_EINVAL;
    h2_call_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    int rc = build_head(c, &u, spec);
    if (rc != 0) {
        free(c);
        return rc;
    }
    if ((c->o = origin_get(up, tls, u.host, h2o_url_get_port(&u))) == NULL) {
        wipe_head(c);
        free(c);
        return -ENOMEM;
    }
    c->base.up = up_;
    c->up = up;
    c->ctx = spec->ctx;
    c->on_header = spec->on_header;
    c->on_head = spec->on_head;
    c->on_data = spec->on_data;
    c->on_done = spec->on_done;
    c->first_byte_ms = spec->first_byte_timeout_ms;
    c->idle_ms = spec->idle_timeout_ms;
    c->body = spec->body;
    c->body_len = spec->body != NULL ? spec->body_len : 0;
    ta_uptimer_init(&c->timer, up_, on_timer);
    ta_uptimer_init(&c->total, up_, on_total);
    c->defer.cb = on_defer;
    h2o_linklist_insert(&up->calls, &c->link);
    up->base.inflight++;
    if (spec->total_timeout_ms > 0)
        ta_uptimer_start(&c->total, (uint64_t)spec->total_timeout_ms);
    ta_uptimer_start(&c->timer, (uint64_t)(spec->connect_timeout_ms > 0 ? spec->connect_timeout_ms : 10000));
    begin(c);
    *out = &c->base;
    return 0;
}

static void h2_resume(ta_upcall_t *call)
{
    h2_call_t *c = (h2_call_t *)call;
    if (c->cancelled || c->phase != P_BODY)
        return;
    if (c->busy > 0) { /* from inside its own callback: once it returned */
        c->resume_pending = true;
        return;
    }
    if (!c->paused)
        return;
    c->paused = false;
    if (c->reading_stopped && c->read_err == NULL) {
        h2o_socket_read_start(c->conn->sock, on_read);
        c->reading_stopped = false;
    }
    if (c->idle_ms > 0)
        ta_uptimer_start(&c->timer, (uint64_t)c->idle_ms);
    process(c); /* may deliver the held bytes, and end the call, at once */
}

static void h2_cancel(ta_upcall_t *call)
{
    h2_call_t *c = (h2_call_t *)call;
    if (c->cancelled)
        return;
    c->cancelled = true;
    detach(c);
    if (c->conn != NULL) { /* mid-answer: never pooled */
        conn_close(c->conn);
        c->conn = NULL;
    }
    if (c->busy == 0)
        call_free(c);
}

const ta_up_engine_ops_t ta_up_h2o_ops = {
    .create = h2_create,
    .destroy = h2_destroy,
    .start = h2_start,
    .resume = h2_resume,
    .cancel = h2_cancel,
};
