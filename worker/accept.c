/*
 * worker/accept.c - connections from the listener to h2o, and the HTTP/2
 * body-limit reader (accept.h; docs/ARCHITECTURE.md "Bodies over the limit").
 *
 * A new connection is ours until we know its protocol: after the TLS
 * handshake by ALPN, on cleartext by its first bytes (HTTP/2 with prior
 * knowledge starts with the connection preface). Both wait at most h2o's
 * handshake timeout. An HTTP/2 connection then has its socket's read
 * callback wrapped: h2o 2.2.5 sets it once, in h2o_http2_accept(), and
 * never again for the connection's life, so the wrapper stays in place.
 *
 * The wrapper reads the frames h2o is about to parse, from the first bytes
 * on (the input buffer always starts at a frame boundary: h2o consumes
 * whole frames and leaves an incomplete one at the front), and counts each
 * stream's body as its DATA frames pass. The frame that takes a body past
 * max_body_size gets END_STREAM: h2o hands the request to the routes with a
 * body at most one frame (16 KiB) over the limit, inside h2o's own limit, and
 * the route answers 413 (the proxy after the key check, with an audit
 * record). The stream is remembered as cut and its later DATA frames are
 * removed from the buffer (reaching h2o they would reset the stream and
 * lose the answer; the client stops sending once it has the answer, or
 * once the stream's window is spent), their payload given back to the
 * connection's window with one WINDOW_UPDATE per read, as h2o does for
 * frames it consumes. Only the frame headers are read; the reader keeps
 * no pointer into h2o's connection beyond the state and the output buffer
 * <h2o/http2_internal.h> declares.
 */
#include "worker/accept.h"

#include <h2o/http1.h>
#include <h2o/http2.h>
#include <h2o/http2_internal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define PREFACE_LEN (sizeof(PREFACE) - 1)
#define FRAME_HEADER 9
#define TYPE_HEADERS 0x1
#define TYPE_RST_STREAM 0x3
#define BODIES_MAX 256 /* streams with a body under way (h2o allows 100 open) */
#define CUT_MAX 16     /* cut streams remembered per connection */

struct pending {
    h2o_linklist_t link;
    h2o_timeout_entry_t timeout;
    h2o_accept_ctx_t *actx;
    h2o_socket_t *sock;
    struct timeval connected_at;
    size_t limit;
};

struct body {
    uint32_t sid;
    size_t n; /* bytes of body so far */
};

struct h2_reader {
    h2o_socket_cb h2o_read; /* h2o's own read callback of the connection */
    size_t limit;
    struct body bodies[BODIES_MAX]; /* unordered */
    size_t nbodies;
    uint32_t cut[CUT_MAX]; /* stream ids, oldest first */
    size_t ncut;
    uint64_t owed; /* window not yet given back (frames dropped before h2o had the connection) */
    bool in_accept; /* inside h2o_http2_accept(): a close only marks it */
    bool in_read;   /* inside h2o's reader from parse_before(): the same */
    bool closed;
    void (*prev_close)(void *); /* the socket's on_close before ours (the worker's connection count) */
    void *prev_close_data;
};

static h2o_linklist_t pending_list = {&pending_list, &pending_list};

/* ---- the body-limit reader ---------------------------------------------- */

static int cut_find(const struct h2_reader *r, uint32_t sid)
{
    for (size_t i = 0; i < r->ncut; i++)
        if (r->cut[i] == sid)
            return (int)i;
    return -1;
}

static void cut_remove(struct h2_reader *r, size_t i)
{
    memmove(&r->cut[i], &r->cut[i + 1], (r->ncut - i - 1) * sizeof(r->cut[0]));
    r->ncut--;
}

static void cut_add(struct h2_reader *r, uint32_t sid)
{
    if (r->ncut == CUT_MAX)
        cut_remove(r, 0);
    r->cut[r->ncut++] = sid;
}

/* The count of a stream's body, made when absent. A full table gives up
 * its oldest stream (the lowest id: client streams only grow), which can
 * only be one whose end this reader missed. */
static struct body *body_of(struct h2_reader *r, uint32_t sid, bool make)
{
    size_t oldest = 0;
    for (size_t i = 0; i < r->nbodies; i++) {
        if (r->bodies[i].sid == sid)
            return &r->bodies[i];
        if (r->bodies[i].sid < r->bodies[oldest].sid)
            oldest = i;
    }
    if (!make)
        return NULL;
    struct body *b = r->nbodies < BODIES_MAX ? &r->bodies[r->nbodies++] : &r->bodies[oldest];
    *b = (struct body){sid, 0};
    return b;
}

static void body_end(struct h2_reader *r, uint32_t sid)
{
    struct body *b = body_of(r, sid, false);
    if (b != NULL)
        *b = r->bodies[--r->nbodies];
}

/* What the DATA frame at f carries as body (its payload less padding);
 * SIZE_MAX when the padding is malformed (h2o refuses the frame). */
static size_t data_length(const uint8_t *f, size_t flen)
{
    if ((f[4] & H2O_HTTP2_FRAME_FLAG_PADDED) == 0)
        return flen;
    if (flen == 0 || (size_t)f[FRAME_HEADER] + 1 > flen)
        return SIZE_MAX;
    return flen - 1 - f[FRAME_HEADER];
}

/* The stream sid of conn, found through the priority tree every open
 * stream of h2o 2.2.5 is in (the stream table is opaque to us:
 * worker/compat/khash.h). Used on the rare paths only: a cut, and the
 * frames of a cut stream. */
static h2o_http2_stream_t *find_stream(h2o_http2_scheduler_node_t *node, uint32_t sid, int depth)
{
    if (depth > 1024)
        return NULL;
    for (h2o_linklist_t *l = node->_all_refs.next; l != &node->_all_refs; l = l->next) {
        h2o_http2_scheduler_openref_t *ref = H2O_STRUCT_FROM_MEMBER(h2o_http2_scheduler_openref_t, _all_link, l);
        h2o_http2_stream_t *st = H2O_STRUCT_FROM_MEMBER(h2o_http2_stream_t, _refs.scheduler, ref);
        if (st->stream_id == sid)
            return st;
        if ((st = find_stream(&ref->node, sid, depth + 1)) != NULL)
            return st;
    }
    return NULL;
}

enum { FRAME_KEEP, FRAME_DROP, FRAME_SPLIT };

/* One DATA frame of stream sid. FRAME_SPLIT: the frame ends a body whose
 * stream h2o has not opened yet (its HEADERS are earlier in this read):
 * h2o must parse what comes before first. */
static int data_frame(struct h2_reader *r, h2o_http2_conn_t *conn, uint8_t *f, size_t flen, uint32_t sid)
{
    bool end = (f[4] & H2O_HTTP2_FRAME_FLAG_END_STREAM) != 0;
    int ci = cut_find(r, sid);
    if (ci >= 0) {
        if (conn != NULL && find_stream(&conn->scheduler, sid, 0) != NULL)
            return FRAME_DROP; /* h2o still has the stream: the frame would reset it */
        cut_remove(r, (size_t)ci);
        return FRAME_KEEP; /* h2o answers RST_STREAM (STREAM_CLOSED): the client stops */
    }
    size_t n = data_length(f, flen);
    if (n == SIZE_MAX)
        return FRAME_KEEP; /* h2o refuses it */
    struct body *b = body_of(r, sid, !end);
    size_t total = (b != NULL ? b->n : 0) + n;
    if (end) {
        body_end(r, sid);
        return FRAME_KEEP;
    }
    if (total <= r->limit || conn == NULL) {
        b->n = total; /* (before h2o has the connection: at most 64 KiB, see accept_h2) */
        return FRAME_KEEP;
    }
    /* The body ends here, one frame past the limit: the route's 413. h2o
     * would refuse a body shorter than its content-length (PROTOCOL_ERROR),
     * so the stream is told the length is unknown. */
    h2o_http2_stream_t *st = conn != NULL ? find_stream(&conn->scheduler, sid, 0) : NULL;
    if (st == NULL)
        return FRAME_SPLIT;
    if (st->state != H2O_HTTP2_STREAM_STATE_RECV_BODY) {
        body_end(r, sid);
        return FRAME_KEEP; /* not a body h2o is reading: its own rules apply */
    }
    st->_expected_content_length = SIZE_MAX;
    f[4] |= H2O_HTTP2_FRAME_FLAG_END_STREAM;
    body_end(r, sid);
    cut_add(r, sid);
    return FRAME_KEEP;
}

static void give_back(struct h2_reader *r, h2o_http2_conn_t *conn)
{
    if (r->owed == 0)
        return;
    /* what h2o would have given back had it consumed the dropped frames */
    h2o_http2_encode_window_update_frame(&conn->_write.buf, 0, (int32_t)r->owed);
    h2o_http2_conn_request_write(conn);
    r->owed = 0;
}

/* Reads the frames h2o is about to parse in sock->input (see above) and
 * returns SIZE_MAX, or where h2o must stop first (FRAME_SPLIT; the frames
 * from there on are not read yet). conn is NULL before h2o has the
 * connection. */
static size_t scan(struct h2_reader *r, h2o_socket_t *sock, h2o_http2_conn_t *conn)
{
    if (conn != NULL && conn->state >= H2O_HTTP2_CONN_STATE_HALF_CLOSED)
        return SIZE_MAX;
    uint8_t *b = (uint8_t *)sock->input->bytes;
    size_t len = sock->input->size, rd = 0, wr = 0, split = SIZE_MAX;
    if (len > 0 && b[0] == 'P') { /* the preface, not parsed by h2o yet */
        if (memcmp(b, PREFACE, len < PREFACE_LEN ? len : PREFACE_LEN) != 0 || len < PREFACE_LEN)
            return SIZE_MAX; /* h2o refuses it, or waits for the rest */
        rd = wr = PREFACE_LEN;
    }
    while (len - rd >= FRAME_HEADER) {
        uint8_t *f = b + rd;
        size_t flen = (size_t)f[0] << 16 | (size_t)f[1] << 8 | f[2];
        if (flen > H2O_HTTP2_SETTINGS_HOST.max_frame_size || len - rd - FRAME_HEADER < flen)
            break; /* h2o refuses the connection, or the frame is incomplete */
        uint32_t sid = ((uint32_t)f[5] << 24 | (uint32_t)f[6] << 16 | (uint32_t)f[7] << 8 | f[8]) & 0x7fffffff;
        int what = FRAME_KEEP;
        if (sid != 0) {
            if (f[3] == H2O_HTTP2_FRAME_TYPE_DATA) {
                what = data_frame(r, conn, f, flen, sid);
                if (what == FRAME_SPLIT && wr == 0 && conn != NULL)
                    what = FRAME_KEEP; /* nothing before it: h2o has no such stream */
            } else if (f[3] == TYPE_RST_STREAM ||
                       (f[3] == TYPE_HEADERS && (f[4] & H2O_HTTP2_FRAME_FLAG_END_STREAM) != 0)) {
                body_end(r, sid); /* the client ended the stream (trailers, or a reset) */
                int ci = cut_find(r, sid);
                if (ci >= 0 && f[3] == TYPE_RST_STREAM)
                    cut_remove(r, (size_t)ci);
            }
        }
        if (what == FRAME_SPLIT) {
            split = wr;
            break;
        }
        if (what == FRAME_DROP) {
            r->owed += flen;
        } else {
            if (wr != rd)
                memmove(b + wr, b + rd, FRAME_HEADER + flen);
            wr += FRAME_HEADER + flen;
        }
        rd += FRAME_HEADER + flen;
    }
    if (wr != rd) {
        memmove(b + wr, b + rd, len - rd);
        sock->input->size = wr + (len - rd);
    }
    if (conn != NULL)
        give_back(r, conn);
    return split;
}

static bool conn_alive(h2o_context_t *ctx, h2o_http2_conn_t *conn)
{
    for (h2o_linklist_t *l = ctx->http2._conns.next; l != &ctx->http2._conns; l = l->next)
        if (H2O_STRUCT_FROM_MEMBER(h2o_http2_conn_t, _conns, l) == conn)
            return conn->state < H2O_HTTP2_CONN_STATE_IS_CLOSING;
    return false;
}

/* h2o parses sock->input up to split, then the rest is put back; false
 * when the connection is gone (r may be freed then). */
static bool parse_before(struct h2_reader *r, h2o_socket_t *sock, size_t split)
{
    h2o_http2_conn_t *conn = sock->data;
    h2o_context_t *ctx = conn->super.ctx;
    size_t rest = sock->input->size - split;
    char *saved = malloc(rest);
    if (saved == NULL)
        return true; /* h2o reads it all: at worst its own REFUSED_STREAM */
    memcpy(saved, sock->input->bytes + split, rest);
    sock->input->size = split;
    r->in_read = true;
    r->h2o_read(sock, NULL);
    r->in_read = false;
    if (r->closed || !conn_alive(ctx, conn)) {
        if (r->closed)
            free(r);
        free(saved);
        return false;
    }
    h2o_iovec_t room = h2o_buffer_reserve(&sock->input, rest);
    if (room.base == NULL) {
        free(saved);
        return false; /* cannot happen short of memory; h2o's reader would fail the same way */
    }
    memcpy(room.base, saved, rest);
    sock->input->size += rest;
    free(saved);
    return true;
}

static void h2_on_read(h2o_socket_t *sock, const char *err)
{
    struct h2_reader *r = sock->on_close.data;
    h2o_socket_cb next = r->h2o_read;
    if (err == NULL) {
        size_t split;
        while ((split = scan(r, sock, sock->data)) != SIZE_MAX)
            if (!parse_before(r, sock, split))
                return;
    }
    next(sock, err); /* may close the connection, and free r: nothing after this */
}

static void h2_on_close(void *data)
{
    struct h2_reader *r = data;
    if (r->prev_close != NULL)
        r->prev_close(r->prev_close_data);
    if (r->in_accept || r->in_read)
        r->closed = true;
    else
        free(r);
}

static void accept_h2(h2o_accept_ctx_t *actx, h2o_socket_t *sock, struct timeval at, size_t limit)
{
    struct h2_reader *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        h2o_socket_close(sock);
        return;
    }
    r->limit = limit;
    r->in_accept = true;
    r->prev_close = sock->on_close.cb;
    r->prev_close_data = sock->on_close.data;
    sock->on_close.cb = h2_on_close;
    sock->on_close.data = r;
    /* What came with the preface is parsed at once. Before the client has
     * h2o's settings its windows allow 64 KiB of DATA, inside h2o's own
     * limit: a body over max_body_size there gets the route's 413 anyway. */
    scan(r, sock, NULL);
    h2o_http2_accept(actx, sock, at);
    r->in_accept = false;
    if (r->closed) { /* closed during that first parse */
        free(r);
        return;
    }
    give_back(r, sock->data);
    r->h2o_read = sock->_cb.read;
    sock->_cb.read = h2_on_read;
}

/* ---- accepting ---------------------------------------------------------- */

static void pending_free(struct pending *p)
{
    h2o_timeout_unlink(&p->timeout);
    h2o_linklist_unlink(&p->link);
    p->sock->data = NULL;
    free(p);
}

static void pending_timeout(h2o_timeout_entry_t *e)
{
    struct pending *p = H2O_STRUCT_FROM_MEMBER(struct pending, timeout, e);
    h2o_socket_t *sock = p->sock;
    pending_free(p);
    h2o_socket_close(sock);
}

/* The protocol is known: hand the socket to h2o. */
static void hand_over(struct pending *p, bool h2)
{
    h2o_accept_ctx_t *actx = p->actx;
    h2o_socket_t *sock = p->sock;
    struct timeval at = p->connected_at;
    size_t limit = p->limit;
    pending_free(p);
    if (h2)
        accept_h2(actx, sock, at, limit);
    else
        h2o_http1_accept(actx, sock, at);
}

static void on_handshake(h2o_socket_t *sock, const char *err)
{
    struct pending *p = sock->data;
    if (err != NULL) {
        pending_free(p);
        h2o_socket_close(sock);
        return;
    }
    h2o_iovec_t proto = h2o_socket_ssl_get_selected_protocol(sock);
    bool h2 = false;
    for (const h2o_iovec_t *id = h2o_http2_alpn_protocols; id->len != 0 && !h2; id++)
        h2 = proto.len == id->len && memcmp(proto.base, id->base, proto.len) == 0;
    hand_over(p, h2);
}

static void on_first_read(h2o_socket_t *sock, const char *err)
{
    struct pending *p = sock->data;
    if (err != NULL) {
        pending_free(p);
        h2o_socket_close(sock);
        return;
    }
    size_t n = sock->input->size;
    bool h2 = memcmp(sock->input->bytes, PREFACE, n < PREFACE_LEN ? n : PREFACE_LEN) == 0;
    if (h2 && n < PREFACE_LEN)
        return; /* the preface so far: wait for the rest */
    h2o_socket_read_stop(sock);
    hand_over(p, h2);
}

void ta_accept(h2o_accept_ctx_t *actx, h2o_socket_t *sock, size_t max_body_size)
{
    struct pending *p = malloc(sizeof(*p));
    if (p == NULL) {
        h2o_socket_close(sock);
        return;
    }
    *p = (struct pending){.actx = actx, .sock = sock, .limit = max_body_size};
    p->connected_at = *h2o_get_timestamp(actx->ctx, NULL, NULL);
    p->timeout.cb = pending_timeout;
    h2o_timeout_link(actx->ctx->loop, &actx->ctx->handshake_timeout, &p->timeout);
    h2o_linklist_insert(&pending_list, &p->link);
    sock->data = p;
    if (actx->ssl_ctx != NULL)
        h2o_socket_ssl_handshake(sock, actx->ssl_ctx, NULL, on_handshake);
    else
        h2o_socket_read_start(sock, on_first_read);
}

bool ta_accept_pending(void) { return !h2o_linklist_is_empty(&pending_list); }

void ta_accept_shutdown(h2o_loop_t *loop, uint64_t ms)
{
    static h2o_timeout_t shutdown_timeout;
    static bool init;
    if (!init) {
        h2o_timeout_init(loop, &shutdown_timeout, ms);
        init = true;
    }
    for (h2o_linklist_t *l = pending_list.next; l != &pending_list; l = l->next) {
        struct pending *p = H2O_STRUCT_FROM_MEMBER(struct pending, link, l);
        h2o_timeout_unlink(&p->timeout);
        h2o_timeout_link(loop, &shutdown_timeout, &p->timeout);
    }
}
