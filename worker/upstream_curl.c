/*
 * upstream_curl.c - the curl engine of worker/upstream.h: libcurl multi
 * inside the worker's h2o evloop (control-plane calls; /v1 with
 * upstream_engine = curl).
 *
 * Sockets: CURLMOPT_SOCKETFUNCTION wraps each of curl's fds in an h2o socket
 * created with H2O_SOCKET_FLAG_DONT_READ (readiness only; h2o never reads
 * curl's bytes). Interest IN = h2o_socket_read_start; OUT = the one-shot
 * h2o_socket_notify_write, re-armed after each callback while curl still wants
 * OUT (a stale notification is ignored: it cannot be cancelled). curl forgets
 * `socketp` on CURL_POLL_REMOVE but keeps the connection pooled, so the
 * fd -> socket table is ours and REMOVE only stops polling; the fd is closed
 * (by h2o_socket_close, once) from CURLOPT_CLOSESOCKETFUNCTION.
 *
 * Timers: every deadline (curl's CURLMOPT_TIMERFUNCTION, each call's
 * first-byte/idle timer) is a ta_uptimer_t (worker/upstream_internal.h).
 * curl's timer only records the deadline; the due entry calls
 * curl_multi_socket_action(CURL_SOCKET_TIMEOUT) from the loop.
 * Nothing here calls into curl from inside a curl callback: resume/cancel
 * requested during one are deferred to a 0 ms entry (`in_curl` tracks it).
 *
 * Back-pressure: on_data may refuse bytes (TA_UP_PAUSE -> CURL_WRITEFUNC_PAUSE);
 * curl then stops reading that socket, so TCP pushes back on the provider;
 * ta_upcall_resume() -> curl_easy_pause(CURLPAUSE_CONT), which may deliver the
 * held bytes synchronously.
 *
 * Duplicate requests. libcurl 7.88 re-sends a request by itself when it was
 * written on a REUSED connection and the connection then died before any
 * response byte (Curl_retry_request: "Connection died, retrying a fresh
 * connect"), POST bodies included: with CURLOPT_POSTFIELDS it needs no rewind
 * and does it silently. That is the right call for the keep-alive race (the
 * provider closed the idle connection before our request arrived) but a
 * duplicate generation, billed twice by the provider, when the provider did
 * receive the request and then dropped the connection (proxy idle timeouts,
 * crashes, deploys). Evidence: tests/unit/test_upstream.c, test "no_resend":
 * the fake upstream's `drop` scenario reads a request on a pooled connection
 * and closes it without answering; with `allow_resend` (curl's default
 * behaviour) the fake logs the POST twice, without it once.
 * We cannot tell the two cases apart, so the re-send is refused:
 * CURLOPT_PREREQFUNCTION runs before every attempt on a connection; a second
 * attempt of the same call aborts it (TA_UP_ENORESPONSE). To keep the race
 * rare: curl's liveness check drops pooled connections whose FIN already
 * arrived, and CURLOPT_MAXAGE_CONN (max_idle_s) retires connections before
 * providers' keep-alive timeouts. HTTP/1.1 is pinned: HTTP/2's retry rules
 * (REFUSED_STREAM) differ and are not analysed here.
 *
 * Callers: worker processes, loop thread only.
 */
#include <curl/curl.h>
#include <errno.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "schema/ta.h"
#include "worker/upstream_internal.h"

#define MAX_FREE_EASY 64

typedef ta_uptimer_t uptimer_t;
typedef struct curl_up curl_up_t;
typedef struct curl_call curl_call_t;

typedef struct sockent {
    curl_up_t *up;
    h2o_socket_t *sock;
    curl_socket_t fd;
    int want;          /* CURL_POLL_* curl asked for; 0 after REMOVE */
    bool write_armed;  /* a notify_write is pending */
} sockent_t;

struct curl_call {
    struct ta_upcall base;
    curl_up_t *up;
    CURL *easy;
    struct curl_slist *hdrs;
    ta_upcall_spec_t spec;   /* headers pointer not used after start */
    uptimer_t timer;         /* first byte, then idle */
    int status;
    int prereq_calls;
    bool got_byte, head_done, paused, resume_pending, cancelled, removed;
    bool resend_refused, consumer_abort;
    int timeout_err;
    uint64_t bytes_in;
    char errbuf[CURL_ERROR_SIZE];
    curl_call_t *prev, *next;
};

struct curl_up {
    struct ta_upstream base; /* loop, opts, inflight, timeout lists */
    h2o_loop_t *loop;
    CURLM *multi;
    uptimer_t curl_timer;
    h2o_timeout_entry_t deferred;
    int in_curl;
    sockent_t **socks;
    size_t nsocks;
    curl_call_t *calls;
    CURL *free_easy[MAX_FREE_EASY];
    size_t nfree;
};

static void process_done(curl_up_t *up);

/* ---- curl plumbing -------------------------------------------------------- */

static void multi_action(curl_up_t *up, curl_socket_t fd, int ev)
{
    int running;
    up->in_curl++;
    curl_multi_socket_action(up->multi, fd, ev, &running);
    up->in_curl--;
    process_done(up);
}

static void curl_timer_due(uptimer_t *t) { multi_action((curl_up_t *)t->up, CURL_SOCKET_TIMEOUT, 0); }

static int on_curl_timer(CURLM *m, long timeout_ms, void *userp)
{
    curl_up_t *up = userp;
    if (timeout_ms < 0)
        ta_uptimer_stop(&up->curl_timer);
    else
        ta_uptimer_start(&up->curl_timer, (uint64_t)timeout_ms);
    return 0;
}

static void arm_write(sockent_t *se);

static void on_sock_readable(h2o_socket_t *sock, const char *err)
{
    sockent_t *se = sock->data;
    if (se->want == 0) {
        /* a pooled connection curl is not using (see CURL_POLL_REMOVE): the
         * provider closed it or sent something; curl finds out when it next
         * picks it. Stop watching until then. */
        h2o_socket_read_stop(sock);
        return;
    }
    /* se may be freed inside the action (CLOSESOCKETFUNCTION): copy first */
    multi_action(se->up, se->fd, CURL_CSELECT_IN | (err != NULL ? CURL_CSELECT_ERR : 0));
}

static void on_sock_writable(h2o_socket_t *sock, const char *err)
{
    sockent_t *se = sock->data;
    curl_up_t *up = se->up;
    curl_socket_t fd = se->fd;
    se->write_armed = false;
    if ((se->want & CURL_POLL_OUT) == 0)
        return; /* stale: curl no longer wants OUT */
    multi_action(up, fd, CURL_CSELECT_OUT | (err != NULL ? CURL_CSELECT_ERR : 0));
    /* curl only calls the socket function on changes: while it still wants
     * OUT, re-arm the one-shot notification */
    if ((size_t)fd < up->nsocks && (se = up->socks[fd]) != NULL && (se->want & CURL_POLL_OUT) && !se->write_armed)
        arm_write(se);
}

static void arm_write(sockent_t *se)
{
    se->write_armed = true;
    h2o_socket_notify_write(se->sock, on_sock_writable);
}

static sockent_t *sock_get(curl_up_t *up, curl_socket_t fd, bool create)
{
    if (fd < 0)
        return NULL;
    if ((size_t)fd >= up->nsocks) {
        if (!create)
            return NULL;
        size_t n = up->nsocks ? up->nsocks : 256;
        while (n <= (size_t)fd)
            n *= 2;
        sockent_t **s = realloc(up->socks, n * sizeof(*s));
        if (s == NULL)
            return NULL;
        memset(s + up->nsocks, 0, (n - up->nsocks) * sizeof(*s));
        up->socks = s;
        up->nsocks = n;
    }
    sockent_t *se = up->socks[fd];
    if (se == NULL && create) {
        se = calloc(1, sizeof(*se));
        if (se == NULL)
            return NULL;
        se->up = up;
        se->fd = fd;
        se->sock = h2o_evloop_socket_create(up->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
        se->sock->data = se;
        up->socks[fd] = se;
    }
    return se;
}

static int on_curl_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
    curl_up_t *up = userp;
    sockent_t *se = sock_get(up, fd, what != CURL_POLL_REMOVE);
    if (se == NULL)
        return what == CURL_POLL_REMOVE ? 0 : -1;
    if (what == CURL_POLL_REMOVE) {
        /* The connection may stay pooled: keep the socket. Reading is not
         * stopped here: under load the next call reuses the connection on a
         * later loop pass, and stop + start cost h2o an EPOLL_CTL_DEL and an
         * EPOLL_CTL_ADD per request; an idle one that turns readable is
         * stopped in on_sock_readable instead. */
        se->want = 0;
        return 0;
    }
    se->want = what;
    if (what & CURL_POLL_IN)
        h2o_socket_read_start(se->sock, on_sock_readable);
    else
        h2o_socket_read_stop(se->sock);
    if ((what & CURL_POLL_OUT) && !se->write_armed)
        arm_write(se);
    return 0;
}

static int on_curl_closesocket(void *clientp, curl_socket_t fd)
{
    curl_up_t *up = clientp;
    sockent_t *se = (size_t)fd < up->nsocks ? up->socks[fd] : NULL;
    if (se == NULL)
        return close(fd);
    up->socks[fd] = NULL;
    h2o_socket_close(se->sock); /* closes fd */
    free(se);
    return 0;
}

/* ---- per call ---------------------------------------------------------------- */

static void call_timeout(uptimer_t *t);

static void call_unlink(curl_call_t *c)
{
    curl_up_t *up = c->up;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        up->calls = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void call_free(curl_call_t *c)
{
    curl_up_t *up = c->up;
    ta_uptimer_stop(&c->timer);
    if (!c->removed) {
        up->in_curl++;
        curl_multi_remove_handle(up->multi, c->easy);
        up->in_curl--;
        c->removed = true;
    }
    call_unlink(c);
    up->base.inflight--;
    curl_slist_free_all(c->hdrs);
    if (up->nfree < MAX_FREE_EASY) {
        curl_easy_reset(c->easy);
        up->free_easy[up->nfree++] = c->easy;
    } else {
        curl_easy_cleanup(c->easy);
    }
    free(c);
}

static int map_error(curl_call_t *c, CURLcode code)
{
    if (c->timeout_err != 0)
        return c->timeout_err;
    if (c->resend_refused)
        return TA_UP_ENORESPONSE;
    if (c->consumer_abort)
        return TA_UP_EABORTED;
    bool connected = c->prereq_calls > 0;
    switch (code) {
    case CURLE_OK:
        return TA_UP_OK;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
        return TA_UP_ECONNECT;
    case CURLE_OPERATION_TIMEDOUT:
        return connected ? TA_UP_ETIMEOUT_TOTAL : TA_UP_ETIMEOUT_CONNECT;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
        /* the TLS handshake: nothing of the request was sent */
        return connected ? TA_UP_EOTHER : TA_UP_ECONNECT;
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_PARTIAL_FILE:
        if (!connected)
            return TA_UP_ECONNECT;
        return c->got_byte ? TA_UP_ECUT : TA_UP_ENORESPONSE;
    default:
        return TA_UP_EOTHER;
    }
}

/* The transfer is over (curl said DONE, or our own timer ended it). */
static void call_finish(curl_call_t *c, CURLcode code)
{
    curl_up_t *up = c->up;
    if (!c->removed) {
        up->in_curl++;
        curl_multi_remove_handle(up->multi, c->easy);
        up->in_curl--;
        c->removed = true;
    }
    ta_uptimer_stop(&c->timer);
    if (!c->cancelled && c->spec.on_done != NULL) {
        long nconn = 0;
        curl_easy_getinfo(c->easy, CURLINFO_NUM_CONNECTS, &nconn);
        ta_upcall_info_t info = {
            .status = c->head_done ? c->status : 0,
            .curl_code = (int)code,
            .msg = code != CURLE_OK ? (c->errbuf[0] ? c->errbuf : curl_easy_strerror(code)) : "",
            .bytes_in = c->bytes_in,
            .reused = c->prereq_calls > 0 && nconn == 0,
        };
        int err = map_error(c, code);
        c->cancelled = true; /* from here on the consumer has forgotten it */
        c->spec.on_done(c->spec.ctx, err, &info);
    }
    call_free(c);
}

static void process_done(curl_up_t *up)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(up->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_call_t *c = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&c);
        if (c != NULL)
            call_finish(c, msg->data.result);
    }
}

static void call_timeout(uptimer_t *t)
{
    curl_call_t *c = H2O_STRUCT_FROM_MEMBER(curl_call_t, timer, t);
    c->timeout_err = c->got_byte ? TA_UP_ETIMEOUT_IDLE : TA_UP_ETIMEOUT_FIRST_BYTE;
    call_finish(c, CURLE_OPERATION_TIMEDOUT);
}

static void note_byte(curl_call_t *c)
{
    c->got_byte = true;
    if (c->spec.idle_timeout_ms > 0)
        ta_uptimer_start(&c->timer, (uint64_t)c->spec.idle_timeout_ms);
    else
        ta_uptimer_stop(&c->timer);
}

static int on_prereq(void *clientp, char *primary_ip, char *local_ip, int primary_port, int local_port)
{
    curl_call_t *c = clientp;
    if (c->prereq_calls++ > 0 && !c->up->base.opts.allow_resend) {
        c->resend_refused = true; /* curl wants to re-send: see the header comment */
        return CURL_PREREQFUNC_ABORT;
    }
    if (c->spec.first_byte_timeout_ms > 0)
        ta_uptimer_start(&c->timer, (uint64_t)c->spec.first_byte_timeout_ms);
    return CURL_PREREQFUNC_OK;
}

static size_t on_curl_header(char *p, size_t size, size_t n, void *ud)
{
    curl_call_t *c = ud;
    size_t len = size * n;
    if (c->cancelled)
        return 0;
    if (!c->got_byte)
        note_byte(c);
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        /* status line; a 1xx is followed by another one */
        const char *sp = memchr(p, ' ', len);
        c->status = 0;
        c->head_done = false;
        if (sp != NULL)
            for (sp++; sp < p + len && *sp >= '0' && *sp <= '9'; sp++)
                c->status = c->status * 10 + (*sp - '0');
        return len;
    }
    if (len <= 2 && (len == 0 || p[0] == '\r' || p[0] == '\n')) {
        if (c->status >= 200 && !c->head_done) {
            c->head_done = true;
            if (c->spec.on_head != NULL && c->spec.on_head(c->spec.ctx, c->status) < 0) {
                c->consumer_abort = true;
                return 0;
            }
        }
        return len;
    }
    if (c->status < 200 || c->spec.on_header == NULL)
        return len;
    const char *colon = memchr(p, ':', len);
    if (colon == NULL)
        return len;
    const char *v = colon + 1, *e = p + len;
    while (v < e && (*v == ' ' || *v == '\t'))
        v++;
    while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' ' || e[-1] == '\t'))
        e--;
    if (c->spec.on_header(c->spec.ctx, p, (size_t)(colon - p), v, (size_t)(e - v)) < 0) {
        c->consumer_abort = true;
        return 0;
    }
    return len;
}

static size_t on_curl_write(char *p, size_t size, size_t n, void *ud)
{
    curl_call_t *c = ud;
    size_t len = size * n;
    if (c->cancelled)
        return 0;
    note_byte(c);
    int r = c->spec.on_data(c->spec.ctx, p, len);
    if (c->cancelled) /* cancelled from inside on_data */
        return 0;
    if (r == TA_UP_PAUSE) {
        c->paused = true;
        ta_uptimer_stop(&c->timer); /* the consumer is slow, not the provider */
        return CURL_WRITEFUNC_PAUSE;
    }
    if (r < 0) {
        c->consumer_abort = true;
        return 0;
    }
    c->bytes_in += len;
    return len;
}

static void do_resume(curl_call_t *c)
{
    curl_up_t *up = c->up;
    c->resume_pending = false;
    if (!c->paused || c->cancelled)
        return;
    c->paused = false;
    if (c->spec.idle_timeout_ms > 0)
        ta_uptimer_start(&c->timer, (uint64_t)c->spec.idle_timeout_ms);
    up->in_curl++;
    curl_easy_pause(c->easy, CURLPAUSE_CONT); /* may call on_data at once */
    up->in_curl--;
    process_done(up);
}

static void run_deferred(h2o_timeout_entry_t *e)
{
    curl_up_t *up = H2O_STRUCT_FROM_MEMBER(curl_up_t, deferred, e);
    curl_call_t *c = up->calls, *next;
    for (; c != NULL; c = next) {
        next = c->next;
        if (c->cancelled) {
            call_free(c);
        } else if (c->resume_pending) {
            do_resume(c);
            /* do_resume may finish calls; restart the walk to stay safe */
            next = up->calls;
        }
    }
}

static void defer(curl_up_t *up)
{
    if (!h2o_timeout_is_linked(&up->deferred))
        h2o_timeout_link(up->loop, ta_up_zero(&up->base), &up->deferred);
}

/* ---- the engine ----------------------------------------------------------------- */

/* upstream_ca_file: added to the store curl's OpenSSL context already loaded
 * (the system's), the same trust as the h2o engine's. */
static CURLcode on_ssl_ctx(CURL *e, void *sslctx, void *arg)
{
    const char *ca = arg;
    if (SSL_CTX_load_verify_locations(sslctx, ca, NULL) != 1)
        return CURLE_SSL_CACERT_BADFILE;
    return CURLE_OK;
}

static void curl_destroy(ta_upstream_t *up_);

static int curl_create(ta_upstream_t **out, h2o_loop_t *loop, const ta_upstream_opts_t *opts)
{
    static bool global_done;
    if (!global_done) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return TA_EINVAL;
        global_done = true;
    }
    curl_up_t *up = calloc(1, sizeof(*up));
    if (up == NULL)
        return -ENOMEM;
    ta_up_base_init(&up->base, &ta_up_curl_ops, loop, opts);
    up->loop = loop;
    ta_uptimer_init(&up->curl_timer, &up->base, curl_timer_due);
    up->deferred.cb = run_deferred;
    up->multi = curl_multi_init();
    if (up->multi == NULL) {
        curl_destroy(&up->base);
        return -ENOMEM;
    }
    curl_multi_setopt(up->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(up->multi, CURLMOPT_SOCKETDATA, up);
    curl_multi_setopt(up->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(up->multi, CURLMOPT_TIMERDATA, up);
    /* unset, curl keeps 4 idle connections per transfer added: the pool
     * follows the concurrency instead of churning connections above a bound */
    if (up->base.opts.max_connects > 0)
        curl_multi_setopt(up->multi, CURLMOPT_MAXCONNECTS, up->base.opts.max_connects);
    if (up->base.opts.max_host_conns > 0)
        curl_multi_setopt(up->multi, CURLMOPT_MAX_HOST_CONNECTIONS, up->base.opts.max_host_conns);
    *out = &up->base;
    return 0;
}

static void curl_destroy(ta_upstream_t *up_)
{
    curl_up_t *up = (curl_up_t *)up_;
    while (up->calls != NULL) {
        up->calls->cancelled = true;
        call_free(up->calls);
    }
    if (up->multi != NULL)
        curl_multi_cleanup(up->multi); /* closes pooled connections via the closesocket callback */
    for (size_t i = 0; i < up->nfree; i++)
        curl_easy_cleanup(up->free_easy[i]);
    for (size_t i = 0; i < up->nsocks; i++) {
        if (up->socks[i] != NULL) {
            h2o_socket_close(up->socks[i]->sock);
            free(up->socks[i]);
        }
    }
    free(up->socks);
    ta_uptimer_stop(&up->curl_timer);
    if (h2o_timeout_is_linked(&up->deferred))
        h2o_timeout_unlink(&up->deferred);
    ta_up_base_dispose(&up->base);
    free(up);
}

static int curl_start(ta_upstream_t *up_, const ta_upcall_spec_t *spec, ta_upcall_t **out)
{
    curl_up_t *up = (curl_up_t *)up_;
    int ret = -ENOMEM;
    curl_call_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    c->base.up = up_;
    c->up = up;
    c->spec = *spec;
    c->spec.headers = NULL;
    c->spec.nheaders = 0;
    ta_uptimer_init(&c->timer, &up->base, call_timeout);
    c->easy = up->nfree > 0 ? up->free_easy[--up->nfree] : curl_easy_init();
    if (c->easy == NULL)
        goto Error;
    for (size_t i = 0; i < spec->nheaders; i++) {
        struct curl_slist *l = curl_slist_append(c->hdrs, spec->headers[i]);
        if (l == NULL)
            goto Error;
        c->hdrs = l;
    }
    /* curl adds "Expect: 100-continue" to bodies over 1 KB: one more round trip */
    struct curl_slist *l = curl_slist_append(c->hdrs, "Expect:");
    if (l == NULL)
        goto Error;
    c->hdrs = l;

    CURL *e = c->easy;
    curl_easy_setopt(e, CURLOPT_URL, spec->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, c);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->hdrs);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_curl_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_curl_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, on_prereq);
    curl_easy_setopt(e, CURLOPT_PREREQDATA, c);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_curl_closesocket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, up);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(spec->connect_timeout_ms > 0 ? spec->connect_timeout_ms : 10000));
    if (spec->total_timeout_ms > 0)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)spec->total_timeout_ms);
    curl_easy_setopt(e, CURLOPT_MAXAGE_CONN, up->base.opts.max_idle_s);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    if (up->base.opts.ca_file != NULL && up->base.opts.ca_file[0] != '\0') {
        curl_easy_setopt(e, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
        curl_easy_setopt(e, CURLOPT_SSL_CTX_DATA, (void *)up->base.opts.ca_file);
    }
    if (spec->body != NULL) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)spec->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, spec->body);
    }
    c->next = up->calls;
    if (up->calls != NULL)
        up->calls->prev = c;
    up->calls = c;
    up->base.inflight++;
    up->in_curl++;
    CURLMcode mc = curl_multi_add_handle(up->multi, e);
    up->in_curl--;
    if (mc != CURLM_OK) {
        call_unlink(c);
        up->base.inflight--;
        ret = TA_EINVAL;
        goto Error;
    }
    *out = &c->base;
    return 0;
Error:
    curl_slist_free_all(c->hdrs);
    if (c->easy != NULL)
        curl_easy_cleanup(c->easy);
    free(c);
    return ret;
}

static void curl_resume(ta_upcall_t *call)
{
    curl_call_t *c = (curl_call_t *)call;
    if (c->cancelled)
        return;
    if (c->up->in_curl > 0) {
        /* possibly from on_data before it returned TA_UP_PAUSE: not paused yet */
        c->resume_pending = true;
        defer(c->up);
        return;
    }
    do_resume(c);
}

static void curl_cancel(ta_upcall_t *call)
{
    curl_call_t *c = (curl_call_t *)call;
    if (c->cancelled)
        return;
    c->cancelled = true;
    if (c->up->in_curl > 0) {
        defer(c->up); /* freed by run_deferred, or by call_finish if curl ends it first */
        return;
    }
    call_free(c);
}

const ta_up_engine_ops_t ta_up_curl_ops = {
    .create = curl_create,
    .destroy = curl_destroy,
    .start = curl_start,
    .resume = curl_resume,
    .cancel = curl_cancel,
};
