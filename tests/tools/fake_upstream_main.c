/*
 * fake_upstream - a real HTTP/1.1 server (h2o evloop) that speaks enough of
 * the OpenAI API for tokenaudit's tests and benchmarks, scripted per request.
 *
 *   fake_upstream [--port N] [--host ADDR] [-t WORKERS] [--log FILE] [--models a,b,c]
 *                 [--tls-cert PEM --tls-key PEM]
 *
 * With --tls-cert and --tls-key it speaks HTTPS (HTTP/1.1 over TLS) only.
 *
 * --port 0 (the default) picks a free port; "listening on PORT" is printed
 * on stdout (and flushed) once the socket listens. -t N forks N processes that
 * share the listening socket.
 *
 * Endpoints
 *   POST /v1/chat/completions   non-streaming JSON, or SSE with "stream": true
 *                               (chunks, finish chunk, a usage chunk when
 *                               stream_options.include_usage is true, data: [DONE])
 *   POST /v1/completions        same, legacy text shape
 *   POST /v1/embeddings         one embedding per input (3 floats; with "encoding_format":
 *                               "base64" the base64 of their float32 bytes), usage
 *   POST /v1/messages           Anthropic Messages API: checks x-api-key, anthropic-version,
 *                               model, max_tokens and messages the way Anthropic does (400
 *                               in Anthropic's error shape), then a Message JSON, or with
 *                               "stream": true Anthropic's event stream (message_start,
 *                               content_block_start, ping, text_delta per chunk,
 *                               content_block_stop, message_delta, message_stop)
 *   POST /v1/messages/count_tokens  {"input_tokens": <usage prompt>} (x-api-key, anthropic-version)
 *   POST /v1/responses          OpenAI Responses API: a Response (a message with the chunks'
 *                               text; tool_use: one function_call), or with "stream": true its
 *                               events (response.created, .in_progress, output_item.added,
 *                               content_part.added, output_text.delta per chunk, the done
 *                               events, response.completed with the usage: input_tokens =
 *                               prompt, cached_tokens = cached, output_tokens = completion)
 *   GET  /v1/models             OpenAI list of --models, or the list set by /_fake/models:
 *                               then with anthropic-version, Anthropic's paged shape
 *                               (?limit=N, default 20, &after_id=ID; "has_more",
 *                               "first_id", "last_id"), else {"object":"list","data":[all]}
 *   POST /_fake/models          {"data": [model objects], "page_size": N} replaces the models
 *                               list (shared by all -t processes; at most 60 KiB); a page
 *                               holds at most page_size models whatever the limit (0 = no
 *                               cap); {"data": null} or /_fake/reset goes back to --models
 *   POST /_fake/control         {"scenario": "...", "usage": "p,c,k", "chunks": N,
 *                                "times": K} applies to the next K /v1 POSTs (0 = until
 *                               reset); shared by all -t processes
 *   POST /_fake/reset           clears the control state and the counters
 *   GET  /_fake/stats           {"requests": N, "chat": N, "completions": N,
 *                                "embeddings": N, "models": N, "messages": N, "responses": N,
 *                                "connections": N (accepted since the start or reset)}
 *
 * Scenario: header X-Fake-Scenario, else body field "fake_scenario", else the
 * control state, else "ok":
 *   ok | slow_first_byte:<ms> | slow_chunks:<ms> | status:<code> | rate_limit |
 *   cut_stream:<after_n_chunks> | no_usage | huge_chunk:<bytes> |
 *   close_idle[:<ms>]  answer normally, then close the (idle keep-alive)
 *                      connection <ms> after the answer was written, without a
 *                      "Connection: close" header (the client still pools it)
 *   drop               read the whole request, log it, close without answering
 *   usage_max          report as completion tokens the larger of the request's
 *                      max_completion_tokens and max_tokens, times n (or best_of, the
 *                      larger; unchanged when neither limit is an integer): the worst
 *                      case an upstream could bill, for budget tests
 *   tool_use           (/v1/messages) after the text, a tool_use block for the first
 *                      tool of the request (input {"city":"Oslo"}), stop_reason tool_use;
 *                      (chat, /v1/responses) one call of the first tool instead of text
 *                      (arguments {"city":"Oslo"}), streamed in two argument deltas
 *   stream_error       (/v1/messages, streaming) an overloaded_error event after the
 *                      first text delta, then the end of the stream; (chat, streaming)
 *                      an OpenAI error event {"error":{...}} after two chunks, then the end;
 *                      (/v1/responses, streaming) response.failed after two deltas
 * Several may be combined with ',' ("slow_chunks:5,no_usage").
 * Usage: X-Fake-Usage / "fake_usage": "prompt,completion,cached[,cache_write]" (default:
 * prompt = ceil(body bytes / 4), completion = chunks, cached = 0). /v1/messages
 * reports them Anthropic's way: input_tokens = prompt, output_tokens = completion,
 * cache_read_input_tokens = cached, cache_creation_input_tokens = cache_write.
 * Error statuses on /v1/messages use Anthropic's shape (529 is overloaded_error).
 * Chunks: X-Fake-Chunks / "fake_chunks" (default 5).
 *
 * Log: one line per request, written with one write(2) to an O_APPEND file
 * (or stdout), so tests can count upstream calls even with -t N:
 *   "REQ <pid> <method> <path> auth=<last 4 of Authorization> body=<bytes> scenario=<s> usage=<p,c,k>"
 *                        (usage: what the answer will report, unless no_usage)
 *   /v1/responses: the line goes on with " max_output_tokens=<n or -> stream=<0|1>
 *   store=<0|1> prev=<0|1> tools=<n>"
 *   /v1/messages: auth= is the last 4 of x-api-key, and the line goes on with
 *   " write=<w> apiver=<anthropic-version or -> max_tokens=<n or -> stream=<0|1>
 *   system=<0|1> tools=<n> msgs=<n>"
 *   "STOP <pid> chunks=<n>" when the client closed a stream before its end
 *   "CLOSE <pid> idle"   when close_idle shut a connection
 *   "DROP <pid>"         when drop shut a connection
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <h2o.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

/* ---- shared state (all -t processes) ----------------------------------- */

enum { C_REQUESTS, C_CHAT, C_COMPLETIONS, C_EMBEDDINGS, C_MODELS, C_MESSAGES, C_RESPONSES, C_CONNECTIONS, C_COUNT };
struct shared {
    int lock;
    char scenario[256];
    char usage[64];
    int chunks;
    long remaining; /* -1: until reset; 0: inactive */
    long counts[C_COUNT];
    char models[60 << 10]; /* the JSON array set by /_fake/models; "" = --models */
    long models_page;      /* its page_size */
};
static struct shared *g_sh;

static void sh_lock(void)
{
    while (__atomic_exchange_n(&g_sh->lock, 1, __ATOMIC_ACQUIRE))
        ;
}
static void sh_unlock(void) { __atomic_store_n(&g_sh->lock, 0, __ATOMIC_RELEASE); }

/* ---- process state ------------------------------------------------------ */

static h2o_globalconf_t g_config;
static h2o_context_t g_ctx;
static h2o_accept_ctx_t g_accept;
static int g_logfd = 1;
static const char *g_models = "gpt-4o-mini,text-embedding-3-small,fake-model";
static int g_listen_fd = -1;

/* accepted sockets by fd, so a scenario can shut a connection down */
#define MAX_FDS 65536
static h2o_socket_t *g_sock_by_fd[MAX_FDS];

/* h2o 2.2.5 timeouts have a fixed duration: one list per distinct ms value */
#define MAX_TIMEOUTS 64
static struct {
    uint64_t ms;
    h2o_timeout_t t;
} g_timeouts[MAX_TIMEOUTS];
static int g_ntimeouts;

static h2o_timeout_t *timeout_for(uint64_t ms)
{
    for (int i = 0; i < g_ntimeouts; i++)
        if (g_timeouts[i].ms == ms)
            return &g_timeouts[i].t;
    if (g_ntimeouts == MAX_TIMEOUTS)
        return &g_timeouts[MAX_TIMEOUTS - 1].t; /* degrade: reuse the last one */
    g_timeouts[g_ntimeouts].ms = ms;
    h2o_timeout_init(g_ctx.loop, &g_timeouts[g_ntimeouts].t, ms);
    return &g_timeouts[g_ntimeouts++].t;
}

static void logline(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logline(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n > (int)sizeof(buf) - 2)
        n = sizeof(buf) - 2;
    buf[n++] = '\n';
    ssize_t r = write(g_logfd, buf, (size_t)n);
    (void)r;
}

static int fd_of_sock(h2o_socket_t *sock)
{
    struct sockaddr_storage a, b;
    socklen_t alen = h2o_socket_getpeername(sock, (struct sockaddr *)&a);
    for (int fd = 0; fd < MAX_FDS; fd++) {
        if (g_sock_by_fd[fd] != sock)
            continue;
        socklen_t blen = sizeof(b);
        if (getpeername(fd, (struct sockaddr *)&b, &blen) == 0 && blen == alen && memcmp(&a, &b, alen) == 0)
            return fd;
    }
    return -1;
}

/* split at sep: returns the next token (NUL-terminated in place) or NULL */
static char *next_tok(char **cur, char sep)
{
    char *t = *cur;
    if (t == NULL || *t == '\0')
        return NULL;
    char *e = strchr(t, sep);
    if (e != NULL) {
        *e = '\0';
        *cur = e + 1;
    } else {
        *cur = NULL;
    }
    return t;
}

/* ---- scenario ------------------------------------------------------------- */

struct scen {
    int slow_first_byte_ms;
    int slow_chunks_ms;
    int status;
    bool rate_limit;
    int cut_after; /* -1: none */
    bool no_usage;
    long huge_chunk;
    int close_idle_ms; /* -1: none */
    bool drop;
    bool usage_max;
    bool tool_use, stream_error; /* /v1/messages */
    long prompt, completion, cached, cache_write;
    bool usage_set;
    int chunks;
    char text[256];
};

static void scen_parse(struct scen *s, const char *str)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", str);
    snprintf(s->text, sizeof(s->text), "%s", str);
    char *cur = buf;
    for (char *tok; (tok = next_tok(&cur, ',')) != NULL;) {
        while (*tok == ' ')
            tok++;
        char *arg = strchr(tok, ':');
        long v = 0;
        if (arg != NULL) {
            *arg++ = '\0';
            v = strtol(arg, NULL, 10);
        }
        if (strcmp(tok, "slow_first_byte") == 0)
            s->slow_first_byte_ms = (int)v;
        else if (strcmp(tok, "slow_chunks") == 0)
            s->slow_chunks_ms = (int)v;
        else if (strcmp(tok, "status") == 0)
            s->status = (int)v;
        else if (strcmp(tok, "rate_limit") == 0)
            s->rate_limit = true;
        else if (strcmp(tok, "cut_stream") == 0)
            s->cut_after = (int)v;
        else if (strcmp(tok, "no_usage") == 0)
            s->no_usage = true;
        else if (strcmp(tok, "huge_chunk") == 0)
            s->huge_chunk = v;
        else if (strcmp(tok, "close_idle") == 0)
            s->close_idle_ms = (int)v;
        else if (strcmp(tok, "drop") == 0)
            s->drop = true;
        else if (strcmp(tok, "usage_max") == 0)
            s->usage_max = true;
        else if (strcmp(tok, "tool_use") == 0)
            s->tool_use = true;
        else if (strcmp(tok, "stream_error") == 0)
            s->stream_error = true;
    }
}

static void usage_parse(struct scen *s, const char *str)
{
    long p = 0, c = 0, k = 0, w = 0;
    if (sscanf(str, "%ld,%ld,%ld,%ld", &p, &c, &k, &w) >= 2) {
        s->prompt = p;
        s->completion = c;
        s->cached = k;
        s->cache_write = w;
        s->usage_set = true;
    }
}

static bool header_str(h2o_req_t *req, const char *name, char *out, size_t cap)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, name, strlen(name), -1);
    if (i == -1)
        return false;
    h2o_iovec_t v = req->headers.entries[i].value;
    size_t n = v.len < cap - 1 ? v.len : cap - 1;
    memcpy(out, v.base, n);
    out[n] = '\0';
    return true;
}

/* ---- responses -------------------------------------------------------------- */

static h2o_iovec_t json_iov(h2o_req_t *req, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    size_t n = strlen(s);
    char *p = h2o_mem_alloc_pool(&req->pool, n + 1);
    memcpy(p, s, n + 1);
    free(s);
    return h2o_iovec_init(p, n);
}

static void send_json(h2o_req_t *req, int status, const char *reason, h2o_iovec_t body)
{
    req->res.status = status;
    req->res.reason = reason;
    req->res.content_length = body.len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
    h2o_send_inline(req, body.base, body.len);
}

static void send_error(h2o_req_t *req, int status, const char *type, const char *code, const char *msg)
{
    json_t *e = json_pack("{s:{s:s,s:s,s:s?,s:n}}", "error", "message", msg, "type", type, "code", code, "param");
    send_json(req, status, "Error", json_iov(req, e));
}

static json_t *usage_json(const struct scen *s)
{
    return json_pack("{s:I,s:I,s:I,s:{s:I}}", "prompt_tokens", (json_int_t)s->prompt, "completion_tokens",
                     (json_int_t)s->completion, "total_tokens", (json_int_t)(s->prompt + s->completion),
                     "prompt_tokens_details", "cached_tokens", (json_int_t)s->cached);
}

static char *chunk_text(h2o_req_t *req, const struct scen *s, int i, size_t *len)
{
    if (s->huge_chunk > 0) {
        char *p = h2o_mem_alloc_pool(&req->pool, (size_t)s->huge_chunk + 1);
        memset(p, 'x', (size_t)s->huge_chunk);
        p[s->huge_chunk] = '\0';
        *len = (size_t)s->huge_chunk;
        return p;
    }
    char *p = h2o_mem_alloc_pool(&req->pool, 24);
    *len = (size_t)snprintf(p, 24, "tok%d ", i);
    return p;
}

/* per-request state, lives in the request's pool */
struct fake_req {
    h2o_generator_t super;
    h2o_req_t *req;
    struct scen s;
    bool chat; /* chat.completion vs text_completion */
    bool stream, include_usage;
    char model[128];
    long id;
    int next_chunk; /* 0..chunks-1 content, chunks = finish, chunks+1 = usage, +2 = DONE */
    bool timer_linked;
    h2o_timeout_entry_t timer;
    void (*on_timer)(struct fake_req *);
    int fd; /* for close_idle */
    bool done;
    bool anth;          /* /v1/messages */
    char tool_name[64]; /* the request's first tool (tool_use scenario) */
    h2o_iovec_t *evs;   /* scripted answers (/v1/responses, chat tool calls): the stream's events */
    int nevs;
    h2o_iovec_t answer; /* ... or the JSON answer */
};

static void fr_timer_cb(h2o_timeout_entry_t *e)
{
    struct fake_req *fr = H2O_STRUCT_FROM_MEMBER(struct fake_req, timer, e);
    fr->timer_linked = false;
    fr->on_timer(fr);
}

static void fr_after(struct fake_req *fr, int ms, void (*cb)(struct fake_req *))
{
    fr->on_timer = cb;
    fr->timer.cb = fr_timer_cb;
    fr->timer_linked = true;
    h2o_timeout_link(g_ctx.loop, timeout_for((uint64_t)ms), &fr->timer);
}

struct idle_close {
    h2o_timeout_entry_t timer;
    int fd;
    h2o_socket_t *sock;
};

static void do_idle_close(struct idle_close *ic)
{
    if (ic->fd >= 0 && ic->fd < MAX_FDS && g_sock_by_fd[ic->fd] == ic->sock) {
        shutdown(ic->fd, SHUT_RDWR);
        logline("CLOSE %d idle", (int)getpid());
    }
    free(ic);
}

static void idle_close_cb(h2o_timeout_entry_t *e)
{
    do_idle_close(H2O_STRUCT_FROM_MEMBER(struct idle_close, timer, e));
}

static void fr_dispose(void *p)
{
    struct fake_req *fr = p;
    if (fr->timer_linked)
        h2o_timeout_unlink(&fr->timer);
    if (fr->s.close_idle_ms >= 0 && fr->fd >= 0) {
        /* the response has been written (the request is disposed after the
         * last write completed): close the now idle connection */
        struct idle_close *ic = calloc(1, sizeof(*ic));
        ic->fd = fr->fd;
        ic->sock = g_sock_by_fd[fr->fd];
        if (fr->s.close_idle_ms == 0) {
            do_idle_close(ic);
        } else {
            ic->timer.cb = idle_close_cb;
            h2o_timeout_link(g_ctx.loop, timeout_for((uint64_t)fr->s.close_idle_ms), &ic->timer);
        }
    }
}

static void fr_stop(h2o_generator_t *g, h2o_req_t *req)
{
    struct fake_req *fr = (void *)g;
    if (fr->timer_linked) {
        h2o_timeout_unlink(&fr->timer);
        fr->timer_linked = false;
    }
    if (!fr->done)
        logline("STOP %d chunks=%d", (int)getpid(), fr->next_chunk);
    fr->done = true;
}

static h2o_iovec_t sse_event(h2o_req_t *req, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    size_t n = strlen(s);
    char *p = h2o_mem_alloc_pool(&req->pool, n + 9);
    memcpy(p, "data: ", 6);
    memcpy(p + 6, s, n);
    memcpy(p + 6 + n, "\n\n", 3);
    free(s);
    return h2o_iovec_init(p, n + 8);
}

static json_t *chunk_base(struct fake_req *fr)
{
    char id[48];
    snprintf(id, sizeof(id), "%s-fake-%ld", fr->chat ? "chatcmpl" : "cmpl", fr->id);
    json_t *j = json_pack("{s:s,s:s,s:I,s:s,s:[]}", "id", id, "object",
                          fr->chat ? "chat.completion.chunk" : "text_completion", "created",
                          (json_int_t)time(NULL), "model", fr->model, "choices");
    if (fr->include_usage)
        json_object_set_new(j, "usage", json_null());
    return j;
}

static void stream_next(struct fake_req *fr);

static void stream_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    struct fake_req *fr = (void *)g;
    if (fr->done)
        return;
    if (fr->s.cut_after >= 0 && fr->next_chunk >= fr->s.cut_after) {
        /* the chunks so far are written: end without the chunked terminator */
        fr->done = true;
        h2o_send(req, NULL, 0, H2O_SEND_STATE_ERROR);
        return;
    }
    if (fr->s.slow_chunks_ms > 0 && fr->next_chunk > 0 && fr->next_chunk <= fr->s.chunks)
        fr_after(fr, fr->s.slow_chunks_ms, stream_next);
    else
        stream_next(fr);
}

static void anth_stream_next(struct fake_req *fr);

static void oai_stream_error(struct fake_req *fr);

static void stream_next(struct fake_req *fr)
{
    if (fr->anth) {
        anth_stream_next(fr);
        return;
    }
    if (fr->s.stream_error && fr->next_chunk == 2) {
        oai_stream_error(fr);
        return;
    }
    h2o_req_t *req = fr->req;
    int i = fr->next_chunk++;
    h2o_iovec_t buf;
    h2o_send_state_t state = H2O_SEND_STATE_IN_PROGRESS;
    if (i < fr->s.chunks) {
        json_t *j = chunk_base(fr), *choice;
        size_t len;
        char *t = chunk_text(req, &fr->s, i, &len);
        if (fr->chat) {
            json_t *delta = json_object();
            if (i == 0)
                json_object_set_new(delta, "role", json_string("assistant"));
            json_object_set_new(delta, "content", json_stringn(t, len));
            choice = json_pack("{s:i,s:o,s:n}", "index", 0, "delta", delta, "finish_reason");
        } else {
            choice = json_pack("{s:s%,s:i,s:n,s:n}", "text", t, len, "index", 0, "logprobs", "finish_reason");
        }
        json_array_append_new(json_object_get(j, "choices"), choice);
        buf = sse_event(req, j);
    } else if (i == fr->s.chunks) {
        json_t *j = chunk_base(fr), *choice;
        if (fr->chat)
            choice = json_pack("{s:i,s:{},s:s}", "index", 0, "delta", "finish_reason", "stop");
        else
            choice = json_pack("{s:s,s:i,s:n,s:s}", "text", "", "index", 0, "logprobs", "finish_reason", "stop");
        json_array_append_new(json_object_get(j, "choices"), choice);
        buf = sse_event(req, j);
    } else if (i == fr->s.chunks + 1 && fr->include_usage && !fr->s.no_usage) {
        json_t *j = chunk_base(fr);
        json_object_set_new(j, "usage", usage_json(&fr->s));
        buf = sse_event(req, j);
    } else {
        buf = h2o_iovec_init(H2O_STRLIT("data: [DONE]\n\n"));
        state = H2O_SEND_STATE_FINAL;
        fr->done = true;
    }
    h2o_send(req, &buf, 1, state);
}

/* stream_error on an OpenAI stream: after two chunks, the error event OpenAI
 * sends when it fails mid-stream, then the end of the body. */
static void oai_stream_error(struct fake_req *fr)
{
    h2o_iovec_t buf = sse_event(fr->req, json_pack("{s:{s:s,s:s,s:n,s:n}}", "error", "message",
                                                   "The server had an error while processing your request (fake)",
                                                   "type", "server_error", "param", "code"));
    fr->done = true;
    h2o_send(fr->req, &buf, 1, H2O_SEND_STATE_FINAL);
}

static void stream_start(struct fake_req *fr)
{
    h2o_req_t *req = fr->req;
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/event-stream"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
    fr->super.proceed = stream_proceed;
    fr->super.stop = fr_stop;
    h2o_start_response(req, &fr->super);
    if (fr->s.cut_after == 0) {
        fr->done = true;
        h2o_send(req, NULL, 0, H2O_SEND_STATE_ERROR);
        return;
    }
    stream_next(fr);
}

static void answer_completion(struct fake_req *fr)
{
    h2o_req_t *req = fr->req;
    char id[48];
    snprintf(id, sizeof(id), "%s-fake-%ld", fr->chat ? "chatcmpl" : "cmpl", fr->id);
    /* content: all chunks concatenated */
    size_t cap = fr->s.huge_chunk > 0 ? (size_t)fr->s.huge_chunk + 1 : (size_t)fr->s.chunks * 24 + 1, len = 0;
    char *content = h2o_mem_alloc_pool(&req->pool, cap);
    content[0] = '\0';
    for (int i = 0; i < fr->s.chunks; i++) {
        size_t n;
        char *t = chunk_text(req, &fr->s, i, &n);
        if (len + n >= cap)
            break;
        memcpy(content + len, t, n);
        len += n;
        if (fr->s.huge_chunk > 0)
            break;
    }
    json_t *choice;
    if (fr->chat)
        choice = json_pack("{s:i,s:{s:s,s:s%},s:s}", "index", 0, "message", "role", "assistant", "content", content,
                           len, "finish_reason", "stop");
    else
        choice = json_pack("{s:s%,s:i,s:n,s:s}", "text", content, len, "index", 0, "logprobs", "finish_reason", "stop");
    json_t *j = json_pack("{s:s,s:s,s:I,s:s,s:[o]}", "id", id, "object", fr->chat ? "chat.completion" : "text_completion",
                          "created", (json_int_t)time(NULL), "model", fr->model, "choices", choice);
    if (!fr->s.no_usage)
        json_object_set_new(j, "usage", usage_json(&fr->s));
    send_json(req, 200, "OK", json_iov(req, j));
}

static void answer_embeddings(struct fake_req *fr, json_t *body)
{
    h2o_req_t *req = fr->req;
    json_t *input = json_object_get(body, "input");
    size_t n = json_is_array(input) ? json_array_size(input) : 1;
    if (n == 0 || n > 2048) {
        send_error(req, 400, "invalid_request_error", NULL, "bad input");
        return;
    }
    json_t *data = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(data, json_pack("{s:s,s:I,s:[f,f,f]}", "object", "embedding", "index", (json_int_t)i,
                                              "embedding", 0.125, -0.25, 0.5));
    json_t *j = json_pack("{s:s,s:o,s:s}", "object", "list", "data", data, "model", fr->model);
    if (!fr->s.no_usage)
        json_object_set_new(j, "usage", json_pack("{s:I,s:I}", "prompt_tokens", (json_int_t)fr->s.prompt,
                                                  "total_tokens", (json_int_t)fr->s.prompt));
    send_json(req, 200, "OK", json_iov(req, j));
}

/* ---- Anthropic Messages API ---------------------------------------------------- */

static json_t *anth_usage_json(const struct scen *s, bool start)
{
    /* message_start reports the input side and 1 output token so far */
    return json_pack("{s:I,s:I,s:I,s:I}", "input_tokens", (json_int_t)s->prompt, "output_tokens",
                     (json_int_t)(start ? 1 : s->completion), "cache_read_input_tokens", (json_int_t)s->cached,
                     "cache_creation_input_tokens", (json_int_t)s->cache_write);
}

static void send_anth_error(h2o_req_t *req, int status, const char *msg)
{
    const char *type = status == 400   ? "invalid_request_error"
                       : status == 401 ? "authentication_error"
                       : status == 403 ? "permission_error"
                       : status == 404 ? "not_found_error"
                       : status == 429 ? "rate_limit_error"
                       : status == 529 ? "overloaded_error"
                                       : "api_error";
    json_t *e = json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type", type, "message", msg);
    send_json(req, status, "Error", json_iov(req, e));
}

static h2o_iovec_t anth_event(h2o_req_t *req, const char *name, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    size_t n = strlen(s), nl = strlen(name);
    char *p = h2o_mem_alloc_pool(&req->pool, nl + n + 18);
    int len = snprintf(p, nl + n + 18, "event: %s\ndata: %s\n\n", name, s);
    free(s);
    return h2o_iovec_init(p, (size_t)len);
}

static void answer_message(struct fake_req *fr)
{
    h2o_req_t *req = fr->req;
    char id[48];
    snprintf(id, sizeof(id), "msg_fake_%ld", fr->id);
    json_t *content = json_array();
    size_t cap = (size_t)fr->s.chunks * 24 + 1, len = 0;
    char *text = h2o_mem_alloc_pool(&req->pool, cap);
    for (int i = 0; i < fr->s.chunks; i++) {
        size_t n;
        char *t = chunk_text(req, &fr->s, i, &n);
        if (len + n >= cap)
            break;
        memcpy(text + len, t, n);
        len += n;
    }
    if (len > 0)
        json_array_append_new(content, json_pack("{s:s,s:s%}", "type", "text", "text", text, len));
    if (fr->s.tool_use)
        json_array_append_new(content, json_pack("{s:s,s:s,s:s,s:{s:s}}", "type", "tool_use", "id", "toolu_fake_1",
                                                 "name", fr->tool_name, "input", "city", "Oslo"));
    json_t *j = json_pack("{s:s,s:s,s:s,s:s,s:o,s:s,s:n}", "id", id, "type", "message", "role", "assistant", "model",
                          fr->model, "content", content, "stop_reason", fr->s.tool_use ? "tool_use" : "end_turn",
                          "stop_sequence");
    if (!fr->s.no_usage)
        json_object_set_new(j, "usage", anth_usage_json(&fr->s, false));
    send_json(req, 200, "OK", json_iov(req, j));
}

/* Event i of the stream: 0 message_start, 1 text block start, 2 ping, then a
 * text_delta per chunk, the block stop, the tool block (start, two
 * input_json_deltas, stop) with tool_use, message_delta, message_stop. */
static void anth_stream_next(struct fake_req *fr)
{
    h2o_req_t *req = fr->req;
    int i = fr->next_chunk++, T = fr->s.chunks, tool = fr->s.tool_use ? 4 : 0;
    h2o_iovec_t buf;
    h2o_send_state_t state = H2O_SEND_STATE_IN_PROGRESS;
    if (fr->s.stream_error && i == 4) {
        buf = anth_event(req, "error", json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type",
                                                  "overloaded_error", "message", "Overloaded"));
        state = H2O_SEND_STATE_FINAL;
        fr->done = true;
    } else if (i == 0) {
        char id[48];
        snprintf(id, sizeof(id), "msg_fake_%ld", fr->id);
        json_t *m = json_pack("{s:s,s:s,s:s,s:s,s:[],s:n,s:n}", "id", id, "type", "message", "role", "assistant",
                              "model", fr->model, "content", "stop_reason", "stop_sequence");
        if (!fr->s.no_usage)
            json_object_set_new(m, "usage", anth_usage_json(&fr->s, true));
        buf = anth_event(req, "message_start", json_pack("{s:s,s:o}", "type", "message_start", "message", m));
    } else if (i == 1) {
        buf = anth_event(req, "content_block_start", json_pack("{s:s,s:i,s:{s:s,s:s}}", "type", "content_block_start",
                                                               "index", 0, "content_block", "type", "text", "text", ""));
    } else if (i == 2) {
        buf = anth_event(req, "ping", json_pack("{s:s}", "type", "ping"));
    } else if (i < 3 + T) {
        size_t len;
        char *t = chunk_text(req, &fr->s, i - 3, &len);
        buf = anth_event(req, "content_block_delta",
                         json_pack("{s:s,s:i,s:{s:s,s:s%}}", "type", "content_block_delta", "index", 0, "delta", "type",
                                   "text_delta", "text", t, len));
    } else if (i == 3 + T) {
        buf = anth_event(req, "content_block_stop", json_pack("{s:s,s:i}", "type", "content_block_stop", "index", 0));
    } else if (tool && i == 4 + T) {
        buf = anth_event(req, "content_block_start",
                         json_pack("{s:s,s:i,s:{s:s,s:s,s:s,s:{}}}", "type", "content_block_start", "index", 1,
                                   "content_block", "type", "tool_use", "id", "toolu_fake_1", "name", fr->tool_name,
                                   "input"));
    } else if (tool && (i == 5 + T || i == 6 + T)) {
        buf = anth_event(req, "content_block_delta",
                         json_pack("{s:s,s:i,s:{s:s,s:s}}", "type", "content_block_delta", "index", 1, "delta", "type",
                                   "input_json_delta", "partial_json", i == 5 + T ? "{\"city\": " : "\"Oslo\"}"));
    } else if (tool && i == 7 + T) {
        buf = anth_event(req, "content_block_stop", json_pack("{s:s,s:i}", "type", "content_block_stop", "index", 1));
    } else if (i == 4 + T + tool) {
        json_t *j = json_pack("{s:s,s:{s:s,s:n}}", "type", "message_delta", "delta", "stop_reason",
                              tool ? "tool_use" : "end_turn", "stop_sequence");
        if (!fr->s.no_usage)
            json_object_set_new(j, "usage", json_pack("{s:I}", "output_tokens", (json_int_t)fr->s.completion));
        buf = anth_event(req, "message_delta", j);
    } else {
        buf = anth_event(req, "message_stop", json_pack("{s:s}", "type", "message_stop"));
        state = H2O_SEND_STATE_FINAL;
        fr->done = true;
    }
    h2o_send(req, &buf, 1, state);
}

/* What Anthropic checks before it answers: 0 when the request may go on. */
static int anth_check(struct fake_req *fr, json_t *body)
{
    h2o_req_t *req = fr->req;
    char v[64];
    if (!header_str(req, "x-api-key", v, sizeof(v)) || v[0] == '\0') {
        send_anth_error(req, 401, "x-api-key header is required");
        return -1;
    }
    if (!header_str(req, "anthropic-version", v, sizeof(v))) {
        send_anth_error(req, 400, "anthropic-version: header is required");
        return -1;
    }
    if (h2o_find_header_by_str(&req->headers, H2O_STRLIT("authorization"), -1) != -1) {
        send_anth_error(req, 400, "unexpected Authorization header (fake: Anthropic uses x-api-key)");
        return -1;
    }
    json_t *mt = json_object_get(body, "max_tokens");
    if (!json_is_integer(mt) || json_integer_value(mt) < 1) {
        send_anth_error(req, 400, "max_tokens: Field required");
        return -1;
    }
    json_t *msgs = json_object_get(body, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
        send_anth_error(req, 400, "messages: Field required");
        return -1;
    }
    static const char *const allowed[] = {"model", "messages", "max_tokens", "system", "stop_sequences", "temperature",
                                          "top_p", "top_k", "tools", "tool_choice", "metadata", "stream"};
    const char *k;
    json_t *val;
    json_object_foreach(body, k, val) {
        size_t i = 0;
        while (i < sizeof(allowed) / sizeof(allowed[0]) && strcmp(allowed[i], k) != 0)
            i++;
        if (i == sizeof(allowed) / sizeof(allowed[0])) {
            char m[128];
            snprintf(m, sizeof(m), "%s: Extra inputs are not permitted", k);
            send_anth_error(req, 400, m);
            return -1;
        }
    }
    return 0;
}

/* POST /v1/messages/count_tokens: {"input_tokens": prompt} (the usage's
 * prompt), after Anthropic's header checks. */
static void answer_count_tokens(struct fake_req *fr, json_t *body)
{
    char v[64];
    if (!header_str(fr->req, "x-api-key", v, sizeof(v)) || !header_str(fr->req, "anthropic-version", v, sizeof(v))) {
        send_anth_error(fr->req, 401, "x-api-key and anthropic-version are required");
        return;
    }
    if (!json_is_array(json_object_get(body, "messages"))) {
        send_anth_error(fr->req, 400, "messages: Field required");
        return;
    }
    send_json(fr->req, 200, "OK", json_iov(fr->req, json_pack("{s:I}", "input_tokens", (json_int_t)fr->s.prompt)));
}

/* ---- scripted answers: the OpenAI Responses API, chat tool calls, base64 embeddings ---- */

/* The answer built whole before it is sent: fr->answer (JSON), or the events
 * fr->evs[0..nevs) of a stream, one per proceed. */
static void evs_next(struct fake_req *fr)
{
    int i = fr->next_chunk++;
    bool last = i + 1 >= fr->nevs;
    if (last)
        fr->done = true;
    h2o_send(fr->req, &fr->evs[i], 1, last ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

static void evs_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    struct fake_req *fr = (void *)g;
    if (fr->done)
        return;
    if (fr->s.cut_after >= 0 && fr->next_chunk >= fr->s.cut_after) {
        fr->done = true;
        h2o_send(req, NULL, 0, H2O_SEND_STATE_ERROR);
        return;
    }
    if (fr->s.slow_chunks_ms > 0 && fr->next_chunk > 0)
        fr_after(fr, fr->s.slow_chunks_ms, evs_next);
    else
        evs_next(fr);
}

static void scripted_start(struct fake_req *fr)
{
    h2o_req_t *req = fr->req;
    if (!fr->stream) {
        send_json(req, 200, "OK", fr->answer);
        return;
    }
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/event-stream"));
    fr->super.proceed = evs_proceed;
    fr->super.stop = fr_stop;
    h2o_start_response(req, &fr->super);
    evs_proceed(&fr->super, req);
}

static void evs_add(struct fake_req *fr, h2o_iovec_t ev)
{
    h2o_iovec_t *n = h2o_mem_alloc_pool(&fr->req->pool, sizeof(*n) * (size_t)(fr->nevs + 1));
    if (fr->nevs > 0)
        memcpy(n, fr->evs, sizeof(*n) * (size_t)fr->nevs);
    n[fr->nevs++] = ev;
    fr->evs = n;
}

static json_t *resp_usage_json(const struct scen *s)
{
    return json_pack("{s:I,s:{s:I},s:I,s:{s:I},s:I}", "input_tokens", (json_int_t)s->prompt, "input_tokens_details",
                     "cached_tokens", (json_int_t)s->cached, "output_tokens", (json_int_t)s->completion,
                     "output_tokens_details", "reasoning_tokens", (json_int_t)0, "total_tokens",
                     (json_int_t)(s->prompt + s->completion));
}

/* A Response: status, output (stolen), the usage unless no_usage (or null). */
static json_t *resp_object(struct fake_req *fr, const char *status, json_t *output, bool usage)
{
    char id[48];
    snprintf(id, sizeof(id), "resp_fake_%ld", fr->id);
    json_t *r = json_pack("{s:s,s:s,s:I,s:s,s:n,s:n,s:n,s:s,s:o,s:b,s:s,s:[],s:f,s:f,s:n}", "id", id, "object",
                          "response", "created_at", (json_int_t)time(NULL), "status", status, "error",
                          "incomplete_details", "instructions", "model", fr->model, "output", output,
                          "parallel_tool_calls", 1, "tool_choice", "auto", "tools", "temperature", 1.0, "top_p", 1.0,
                          "usage");
    if (usage && !fr->s.no_usage)
        json_object_set_new(r, "usage", resp_usage_json(&fr->s));
    return r;
}

static h2o_iovec_t resp_event(struct fake_req *fr, const char *type, json_t *j)
{
    json_object_set_new(j, "type", json_string(type));
    json_object_set_new(j, "sequence_number", json_integer(fr->nevs));
    return anth_event(fr->req, type, j);
}

/* POST /v1/responses: a message with the chunks' text, or with tool_use one
 * function_call; streamed as Responses events ending with response.completed
 * (usage inside), or with stream_error response.failed after two deltas. */
static void prepare_responses(struct fake_req *fr)
{
    h2o_req_t *req = fr->req;
    char mid[48];
    snprintf(mid, sizeof(mid), "msg_fake_%ld", fr->id);
    size_t cap = (size_t)fr->s.chunks * 24 + 1, len = 0;
    char *text = h2o_mem_alloc_pool(&req->pool, cap);
    for (int i = 0; i < fr->s.chunks; i++) {
        size_t n;
        char *t = chunk_text(req, &fr->s, i, &n);
        if (len + n >= cap)
            break;
        memcpy(text + len, t, n);
        len += n;
    }
    json_t *item = fr->s.tool_use
                       ? json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "id", "fc_fake_1", "type", "function_call", "status",
                                   "completed", "call_id", "call_fake_1", "name", fr->tool_name, "arguments",
                                   "{\"city\":\"Oslo\"}")
                       : json_pack("{s:s,s:s,s:s,s:s,s:[{s:s,s:s%,s:[]}]}", "id", mid, "type", "message", "status",
                                   "completed", "role", "assistant", "content", "type", "output_text", "text", text,
                                   len, "annotations");
    if (!fr->stream) {
        fr->answer = json_iov(req, resp_object(fr, "completed", json_pack("[o]", item), true));
        return;
    }
    evs_add(fr, resp_event(fr, "response.created", json_pack("{s:o}", "response",
                                                              resp_object(fr, "in_progress", json_array(), false))));
    evs_add(fr, resp_event(fr, "response.in_progress",
                           json_pack("{s:o}", "response", resp_object(fr, "in_progress", json_array(), false))));
    if (fr->s.tool_use) {
        evs_add(fr, resp_event(fr, "response.output_item.added",
                               json_pack("{s:i,s:{s:s,s:s,s:s,s:s,s:s,s:s}}", "output_index", 0, "item", "id",
                                         "fc_fake_1", "type", "function_call", "status", "in_progress", "call_id",
                                         "call_fake_1", "name", fr->tool_name, "arguments", "")));
        for (int k = 0; k < 2; k++)
            evs_add(fr, resp_event(fr, "response.function_call_arguments.delta",
                                   json_pack("{s:s,s:i,s:s}", "item_id", "fc_fake_1", "output_index", 0, "delta",
                                             k == 0 ? "{\"city\":" : "\"Oslo\"}")));
        evs_add(fr, resp_event(fr, "response.function_call_arguments.done",
                               json_pack("{s:s,s:i,s:s}", "item_id", "fc_fake_1", "output_index", 0, "arguments",
                                         "{\"city\":\"Oslo\"}")));
    } else {
        evs_add(fr, resp_event(fr, "response.output_item.added",
                               json_pack("{s:i,s:{s:s,s:s,s:s,s:s,s:[]}}", "output_index", 0, "item", "id", mid, "type",
                                         "message", "status", "in_progress", "role", "assistant", "content")));
        evs_add(fr, resp_event(fr, "response.content_part.added",
                               json_pack("{s:s,s:i,s:i,s:{s:s,s:s,s:[]}}", "item_id", mid, "output_index", 0,
                                         "content_index", 0, "part", "type", "output_text", "text", "",
                                         "annotations")));
        for (int i = 0; i < fr->s.chunks; i++) {
            if (fr->s.stream_error && i == 2) {
                json_t *r = resp_object(fr, "failed", json_array(), false);
                json_object_set_new(r, "error", json_pack("{s:s,s:s}", "code", "server_error", "message",
                                                          "The server had an error (fake)"));
                evs_add(fr, resp_event(fr, "response.failed", json_pack("{s:o}", "response", r)));
                json_decref(item);
                return;
            }
            size_t n;
            char *t = chunk_text(req, &fr->s, i, &n);
            evs_add(fr, resp_event(fr, "response.output_text.delta",
                                   json_pack("{s:s,s:i,s:i,s:s%,s:[]}", "item_id", mid, "output_index", 0,
                                             "content_index", 0, "delta", t, n, "logprobs")));
        }
        evs_add(fr, resp_event(fr, "response.output_text.done",
                               json_pack("{s:s,s:i,s:i,s:s%}", "item_id", mid, "output_index", 0, "content_index", 0,
                                         "text", text, len)));
        evs_add(fr, resp_event(fr, "response.content_part.done",
                               json_pack("{s:s,s:i,s:i,s:{s:s,s:s%,s:[]}}", "item_id", mid, "output_index", 0,
                                         "content_index", 0, "part", "type", "output_text", "text", text, len,
                                         "annotations")));
    }
    evs_add(fr, resp_event(fr, "response.output_item.done", json_pack("{s:i,s:O}", "output_index", 0, "item", item)));
    evs_add(fr, resp_event(fr, "response.completed",
                           json_pack("{s:o}", "response", resp_object(fr, "completed", json_pack("[o]", item), true))));
}

/* Chat with tool_use: one tool call of the request's first tool (arguments
 * {"city":"Oslo"}), finish_reason tool_calls; streamed as a header chunk, two
 * argument chunks, the finish chunk, the usage chunk when asked, [DONE]. */
static void prepare_chat_tool(struct fake_req *fr)
{
    h2o_req_t *req = fr->req;
    json_t *call = json_pack("{s:s,s:s,s:{s:s,s:s}}", "id", "call_fake_1", "type", "function", "function", "name",
                             fr->tool_name, "arguments", "{\"city\":\"Oslo\"}");
    if (!fr->stream) {
        json_t *j = chunk_base(fr);
        json_object_set_new(j, "object", json_string("chat.completion"));
        json_object_del(j, "usage");
        json_array_append_new(json_object_get(j, "choices"),
                              json_pack("{s:i,s:{s:s,s:n,s:n,s:[o]},s:n,s:s}", "index", 0, "message", "role",
                                        "assistant", "content", "refusal", "tool_calls", call, "logprobs",
                                        "finish_reason", "tool_calls"));
        if (!fr->s.no_usage)
            json_object_set_new(j, "usage", usage_json(&fr->s));
        fr->answer = json_iov(req, j);
        return;
    }
    json_decref(call);
    for (int k = 0; k < 4; k++) {
        json_t *j = chunk_base(fr), *delta;
        if (k == 0)
            delta = json_pack("{s:s,s:n,s:[{s:i,s:s,s:s,s:{s:s,s:s}}]}", "role", "assistant", "content", "tool_calls",
                              "index", 0, "id", "call_fake_1", "type", "function", "function", "name", fr->tool_name,
                              "arguments", "");
        else if (k < 3)
            delta = json_pack("{s:[{s:i,s:{s:s}}]}", "tool_calls", "index", 0, "function", "arguments",
                              k == 1 ? "{\"city\":" : "\"Oslo\"}");
        else
            delta = json_object();
        json_t *c = json_pack("{s:i,s:o,s:n}", "index", 0, "delta", delta, "logprobs");
        json_object_set_new(c, "finish_reason", k == 3 ? json_string("tool_calls") : json_null());
        json_array_append_new(json_object_get(j, "choices"), c);
        evs_add(fr, sse_event(req, j));
    }
    if (fr->include_usage && !fr->s.no_usage) {
        json_t *j = chunk_base(fr);
        json_object_set_new(j, "usage", usage_json(&fr->s));
        evs_add(fr, sse_event(req, j));
    }
    evs_add(fr, h2o_iovec_init(H2O_STRLIT("data: [DONE]\n\n")));
}

/* encoding_format "base64": each embedding as the base64 of its float32
 * values, little-endian (what the OpenAI SDKs ask for by default). */
static void answer_embeddings_b64(struct fake_req *fr, json_t *body)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const float v[3] = {0.125f, -0.25f, 0.5f};
    unsigned char raw[12];
    for (int i = 0; i < 3; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        for (int b = 0; b < 4; b++)
            raw[i * 4 + b] = (unsigned char)(u >> (8 * b));
    }
    char enc[17];
    for (int i = 0, o = 0; i < 12; i += 3) {
        uint32_t t = (uint32_t)raw[i] << 16 | (uint32_t)raw[i + 1] << 8 | raw[i + 2];
        enc[o++] = b64[t >> 18 & 63];
        enc[o++] = b64[t >> 12 & 63];
        enc[o++] = b64[t >> 6 & 63];
        enc[o++] = b64[t & 63];
    }
    enc[16] = '\0';
    json_t *input = json_object_get(body, "input");
    size_t n = json_is_array(input) ? json_array_size(input) : 1;
    json_t *data = json_array();
    for (size_t i = 0; i < n && i < 2048; i++)
        json_array_append_new(data, json_pack("{s:s,s:I,s:s}", "object", "embedding", "index", (json_int_t)i,
                                              "embedding", enc));
    json_t *j = json_pack("{s:s,s:o,s:s}", "object", "list", "data", data, "model", fr->model);
    if (!fr->s.no_usage)
        json_object_set_new(j, "usage", json_pack("{s:I,s:I}", "prompt_tokens", (json_int_t)fr->s.prompt,
                                                  "total_tokens", (json_int_t)fr->s.prompt));
    send_json(fr->req, 200, "OK", json_iov(fr->req, j));
}

static void dispatch(struct fake_req *fr)
{
    if (fr->anth && fr->stream) {
        h2o_req_t *req = fr->req;
        req->res.status = 200;
        req->res.reason = "OK";
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                       H2O_STRLIT("text/event-stream; charset=utf-8"));
        fr->super.proceed = stream_proceed;
        fr->super.stop = fr_stop;
        h2o_start_response(req, &fr->super);
        if (fr->s.cut_after == 0) {
            fr->done = true;
            h2o_send(req, NULL, 0, H2O_SEND_STATE_ERROR);
            return;
        }
        anth_stream_next(fr);
    } else if (fr->anth)
        answer_message(fr);
    else if (fr->stream)
        stream_start(fr);
    else
        answer_completion(fr);
}

/* The list set by /_fake/models; with anthropic-version a page of it. */
static bool answer_scripted_models(h2o_req_t *req)
{
    char txt[sizeof(g_sh->models)], ver[32];
    sh_lock();
    memcpy(txt, g_sh->models, sizeof(txt));
    long cap = g_sh->models_page;
    sh_unlock();
    if (txt[0] == '\0')
        return false;
    json_t *all = json_loads(txt, 0, NULL), *out;
    if (!header_str(req, "anthropic-version", ver, sizeof(ver))) {
        out = json_pack("{s:s,s:o}", "object", "list", "data", all);
    } else {
        long limit = 20;
        char after[256] = "";
        if (req->query_at != SIZE_MAX) {
            char q[512];
            snprintf(q, sizeof(q), "%.*s", (int)(req->path.len - req->query_at - 1), req->path.base + req->query_at + 1);
            char *cur = q;
            for (char *kv; (kv = next_tok(&cur, '&')) != NULL;) {
                if (strncmp(kv, "limit=", 6) == 0)
                    limit = strtol(kv + 6, NULL, 10);
                else if (strncmp(kv, "after_id=", 9) == 0)
                    snprintf(after, sizeof(after), "%s", kv + 9);
            }
        }
        if (cap > 0 && limit > cap)
            limit = cap;
        size_t i = 0, n = json_array_size(all);
        if (after[0] != '\0')
            for (; i < n; i++)
                if (json_string_value(json_object_get(json_array_get(all, i), "id")) != NULL &&
                    strcmp(json_string_value(json_object_get(json_array_get(all, i), "id")), after) == 0) {
                    i++;
                    break;
                }
        json_t *page = json_array();
        for (long k = 0; i < n && k < limit; i++, k++)
            json_array_append(page, json_array_get(all, i));
        size_t pn = json_array_size(page);
        out = json_pack("{s:o,s:b,s:o,s:o}", "data", page, "has_more", i < n, "first_id",
                        pn ? json_copy(json_object_get(json_array_get(page, 0), "id")) : json_null(), "last_id",
                        pn ? json_copy(json_object_get(json_array_get(page, pn - 1), "id")) : json_null());
        json_decref(all);
    }
    send_json(req, 200, "OK", json_iov(req, out));
    return true;
}

static int handle_models_script(h2o_req_t *req)
{
    json_t *b = json_loadb(req->entity.base, req->entity.len, 0, NULL);
    json_t *data = json_object_get(b, "data");
    char *txt = json_is_array(data) ? json_dumps(data, JSON_COMPACT) : NULL;
    int ok = txt == NULL || strlen(txt) < sizeof(g_sh->models);
    if (ok) {
        sh_lock();
        snprintf(g_sh->models, sizeof(g_sh->models), "%s", txt != NULL ? txt : "");
        g_sh->models_page = (long)json_integer_value(json_object_get(b, "page_size"));
        sh_unlock();
    }
    free(txt);
    json_decref(b);
    if (!ok)
        send_error(req, 413, "invalid_request_error", NULL, "models list too long");
    else
        send_json(req, 200, "OK", h2o_iovec_init(H2O_STRLIT("{\"ok\":true}")));
    return 0;
}

static void answer_models(h2o_req_t *req)
{
    if (answer_scripted_models(req))
        return;
    json_t *data = json_array();
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s", g_models);
    char *cur = buf;
    for (char *m; (m = next_tok(&cur, ',')) != NULL;)
        json_array_append_new(data, json_pack("{s:s,s:s,s:i,s:s}", "id", m, "object", "model", "created", 1700000000,
                                              "owned_by", "fake"));
    send_json(req, 200, "OK", json_iov(req, json_pack("{s:s,s:o}", "object", "list", "data", data)));
}

static int handle_control(h2o_req_t *req, bool reset)
{
    json_t *b = reset ? NULL : json_loadb(req->entity.base, req->entity.len, 0, NULL);
    sh_lock();
    g_sh->scenario[0] = '\0';
    g_sh->usage[0] = '\0';
    g_sh->chunks = 0;
    g_sh->remaining = 0;
    if (reset) {
        memset(g_sh->counts, 0, sizeof(g_sh->counts));
        g_sh->models[0] = '\0';
    }
    if (b != NULL) {
        const char *s = json_string_value(json_object_get(b, "scenario"));
        const char *u = json_string_value(json_object_get(b, "usage"));
        if (s != NULL)
            snprintf(g_sh->scenario, sizeof(g_sh->scenario), "%s", s);
        if (u != NULL)
            snprintf(g_sh->usage, sizeof(g_sh->usage), "%s", u);
        g_sh->chunks = (int)json_integer_value(json_object_get(b, "chunks"));
        long times = (long)json_integer_value(json_object_get(b, "times"));
        g_sh->remaining = times > 0 ? times : -1;
    }
    sh_unlock();
    json_decref(b);
    send_json(req, 200, "OK", h2o_iovec_init(H2O_STRLIT("{\"ok\":true}")));
    return 0;
}

static int handle_stats(h2o_req_t *req)
{
    long c[C_COUNT];
    sh_lock();
    memcpy(c, g_sh->counts, sizeof(c));
    sh_unlock();
    json_t *j = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "requests", (json_int_t)c[C_REQUESTS], "chat",
                          (json_int_t)c[C_CHAT], "completions", (json_int_t)c[C_COMPLETIONS], "embeddings",
                          (json_int_t)c[C_EMBEDDINGS], "models", (json_int_t)c[C_MODELS], "messages",
                          (json_int_t)c[C_MESSAGES], "responses", (json_int_t)c[C_RESPONSES], "connections",
                          (json_int_t)c[C_CONNECTIONS]);
    send_json(req, 200, "OK", json_iov(req, j));
    return 0;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    static long next_id;
    h2o_iovec_t path = req->path_normalized;
    bool is_post = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST"));
    bool is_get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"));

    if (is_post && h2o_memis(path.base, path.len, H2O_STRLIT("/_fake/control")))
        return handle_control(req, false);
    if (is_post && h2o_memis(path.base, path.len, H2O_STRLIT("/_fake/reset")))
        return handle_control(req, true);
    if (is_post && h2o_memis(path.base, path.len, H2O_STRLIT("/_fake/models")))
        return handle_models_script(req);
    if (is_get && h2o_memis(path.base, path.len, H2O_STRLIT("/_fake/stats")))
        return handle_stats(req);

    int kind = -1;
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/v1/chat/completions")))
        kind = C_CHAT;
    else if (h2o_memis(path.base, path.len, H2O_STRLIT("/v1/completions")))
        kind = C_COMPLETIONS;
    else if (h2o_memis(path.base, path.len, H2O_STRLIT("/v1/embeddings")))
        kind = C_EMBEDDINGS;
    else if (h2o_memis(path.base, path.len, H2O_STRLIT("/v1/models")))
        kind = C_MODELS;
    else if (h2o_memis(path.base, path.len, H2O_STRLIT("/v1/messages")) ||
             h2o_memis(path.base, path.len, H2O_STRLIT("/v1/messages/count_tokens")))
        kind = C_MESSAGES;
    else if (h2o_memis(path.base, path.len, H2O_STRLIT("/v1/responses")))
        kind = C_RESPONSES;

    char auth[8] = "";
    ssize_t ai = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (ai != -1) {
        h2o_iovec_t v = req->headers.entries[ai].value;
        size_t n = v.len < 4 ? v.len : 4;
        memcpy(auth, v.base + v.len - n, n);
        auth[n] = '\0';
    } else if (kind == C_MESSAGES) {
        char k[256];
        if (header_str(req, "x-api-key", k, sizeof(k))) {
            size_t kl = strlen(k), n = kl < 4 ? kl : 4;
            memcpy(auth, k + kl - n, n + 1);
        }
    }

    /* scenario: header > body > control > ok */
    struct fake_req *fr = h2o_mem_alloc_shared(&req->pool, sizeof(*fr), fr_dispose);
    memset(fr, 0, sizeof(*fr));
    fr->req = req;
    fr->fd = -1;
    fr->id = ++next_id;
    fr->s.cut_after = -1;
    fr->s.close_idle_ms = -1;
    fr->s.chunks = 5;
    json_t *body = NULL;
    if (is_post && req->entity.base != NULL)
        body = json_loadb(req->entity.base, req->entity.len, 0, NULL);

    char scen[256] = "", usage[64] = "", chunks[16] = "";
    if (!header_str(req, "x-fake-scenario", scen, sizeof(scen))) {
        const char *bs = json_string_value(json_object_get(body, "fake_scenario"));
        if (bs != NULL)
            snprintf(scen, sizeof(scen), "%s", bs);
    }
    if (!header_str(req, "x-fake-usage", usage, sizeof(usage))) {
        const char *bu = json_string_value(json_object_get(body, "fake_usage"));
        if (bu != NULL)
            snprintf(usage, sizeof(usage), "%s", bu);
    }
    if (!header_str(req, "x-fake-chunks", chunks, sizeof(chunks))) {
        json_t *bc = json_object_get(body, "fake_chunks");
        if (json_is_integer(bc))
            snprintf(chunks, sizeof(chunks), "%lld", (long long)json_integer_value(bc));
    }
    if (kind != -1) {
        sh_lock();
        g_sh->counts[C_REQUESTS]++;
        g_sh->counts[kind]++;
        if (is_post && g_sh->remaining != 0) {
            if (scen[0] == '\0')
                snprintf(scen, sizeof(scen), "%s", g_sh->scenario);
            if (usage[0] == '\0')
                snprintf(usage, sizeof(usage), "%s", g_sh->usage);
            if (chunks[0] == '\0' && g_sh->chunks > 0)
                snprintf(chunks, sizeof(chunks), "%d", g_sh->chunks);
            if (g_sh->remaining > 0)
                g_sh->remaining--;
        }
        sh_unlock();
    }
    scen_parse(&fr->s, scen[0] != '\0' ? scen : "ok");
    if (chunks[0] != '\0') {
        long c = strtol(chunks, NULL, 10);
        fr->s.chunks = c < 0 ? 0 : c > 100000 ? 100000 : (int)c;
    }
    fr->s.prompt = ((long)req->entity.len + 3) / 4;
    if (fr->s.prompt == 0)
        fr->s.prompt = 1;
    fr->s.completion = fr->s.chunks;
    if (usage[0] != '\0')
        usage_parse(&fr->s, usage);
    if (fr->s.usage_max) {
        /* The worst case an upstream could bill: the larger of both output
         * limits, for each of n choices (best_of candidates on completions). */
        json_t *mc = json_object_get(body, "max_completion_tokens"), *mt = json_object_get(body, "max_tokens");
        json_t *mo = json_object_get(body, "max_output_tokens"); /* /v1/responses */
        long most = -1;
        if (json_is_integer(mc))
            most = (long)json_integer_value(mc);
        if (json_is_integer(mo) && (long)json_integer_value(mo) > most)
            most = (long)json_integer_value(mo);
        if (json_is_integer(mt) && (long)json_integer_value(mt) > most)
            most = (long)json_integer_value(mt);
        if (most >= 0) {
            long mult = 1;
            json_t *n = json_object_get(body, "n"), *bo = json_object_get(body, "best_of");
            if (json_is_integer(n) && json_integer_value(n) > mult)
                mult = (long)json_integer_value(n);
            if (json_is_integer(bo) && json_integer_value(bo) > mult)
                mult = (long)json_integer_value(bo);
            fr->s.completion = most * (mult > 1000 ? 1000 : mult);
        }
    }

    if (kind == C_MESSAGES) {
        char ver[32] = "-", mt[24] = "-";
        header_str(req, "anthropic-version", ver, sizeof(ver));
        if (json_is_integer(json_object_get(body, "max_tokens")))
            snprintf(mt, sizeof(mt), "%lld", (long long)json_integer_value(json_object_get(body, "max_tokens")));
        logline("REQ %d %.*s %.*s auth=%s body=%zu scenario=%s usage=%ld,%ld,%ld write=%ld apiver=%s max_tokens=%s "
                "stream=%d system=%d tools=%zu msgs=%zu",
                (int)getpid(), (int)req->method.len, req->method.base, (int)path.len, path.base, auth, req->entity.len,
                fr->s.text, fr->s.prompt, fr->s.completion, fr->s.cached, fr->s.cache_write, ver, mt,
                json_is_true(json_object_get(body, "stream")), json_object_get(body, "system") != NULL,
                json_array_size(json_object_get(body, "tools")), json_array_size(json_object_get(body, "messages")));
    } else if (kind == C_RESPONSES) {
        char mo[24] = "-";
        if (json_is_integer(json_object_get(body, "max_output_tokens")))
            snprintf(mo, sizeof(mo), "%lld", (long long)json_integer_value(json_object_get(body, "max_output_tokens")));
        logline("REQ %d %.*s %.*s auth=%s body=%zu scenario=%s usage=%ld,%ld,%ld max_output_tokens=%s stream=%d "
                "store=%d prev=%d tools=%zu", (int)getpid(), (int)req->method.len, req->method.base, (int)path.len,
                path.base, auth, req->entity.len, fr->s.text, fr->s.prompt, fr->s.completion, fr->s.cached, mo,
                json_is_true(json_object_get(body, "stream")), json_is_true(json_object_get(body, "store")),
                json_is_string(json_object_get(body, "previous_response_id")),
                json_array_size(json_object_get(body, "tools")));
    } else {
        /* GET /v1/models: the query too (paging), last on the line */
        int ql = kind == C_MODELS && req->query_at != SIZE_MAX ? (int)(req->path.len - req->query_at - 1) : 0;
        logline("REQ %d %.*s %.*s auth=%s body=%zu scenario=%s usage=%ld,%ld,%ld%s%.*s", (int)getpid(),
                (int)req->method.len, req->method.base, (int)path.len, path.base, auth, req->entity.len, fr->s.text,
                fr->s.prompt, fr->s.completion, fr->s.cached, ql > 0 ? " query=" : "", ql,
                ql > 0 ? req->path.base + req->query_at + 1 : "");
    }

    if (fr->s.drop || fr->s.close_idle_ms >= 0) {
        h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
        fr->fd = sock != NULL ? fd_of_sock(sock) : -1;
    }
    if (fr->s.drop) {
        if (fr->fd >= 0) {
            shutdown(fr->fd, SHUT_RDWR);
            logline("DROP %d", (int)getpid());
        }
        fr->s.close_idle_ms = -1;
        /* the write fails on the shut socket and h2o closes the connection */
        send_json(req, 200, "OK", h2o_iovec_init(H2O_STRLIT("{}")));
        goto Exit;
    }
    if (kind == -1) {
        send_error(req, 404, "invalid_request_error", "not_found", "no such path");
        goto Exit;
    }
    if (kind == C_MODELS) {
        if (!is_get) {
            send_error(req, 405, "invalid_request_error", NULL, "method not allowed");
            goto Exit;
        }
        answer_models(req);
        goto Exit;
    }
    if (!is_post) {
        send_error(req, 405, "invalid_request_error", NULL, "method not allowed");
        goto Exit;
    }
    if (body == NULL || !json_is_object(body)) {
        send_error(req, 400, "invalid_request_error", NULL, "body is not a JSON object");
        goto Exit;
    }
    const char *model = json_string_value(json_object_get(body, "model"));
    snprintf(fr->model, sizeof(fr->model), "%s", model != NULL ? model : "");
    if (kind == C_MESSAGES) {
        fr->anth = true;
        if (fr->s.rate_limit) {
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("1"));
            send_anth_error(req, 429, "Rate limit reached (fake)");
            goto Exit;
        }
        if (fr->s.status >= 400) {
            send_anth_error(req, fr->s.status, "fake upstream error");
            goto Exit;
        }
        if (h2o_memis(path.base, path.len, H2O_STRLIT("/v1/messages/count_tokens"))) {
            answer_count_tokens(fr, body);
            goto Exit;
        }
        if (anth_check(fr, body) != 0)
            goto Exit;
        const char *tn = json_string_value(json_object_get(json_array_get(json_object_get(body, "tools"), 0), "name"));
        snprintf(fr->tool_name, sizeof(fr->tool_name), "%s", tn != NULL ? tn : "fn");
        fr->stream = json_is_true(json_object_get(body, "stream"));
        if (fr->s.slow_first_byte_ms > 0)
            fr_after(fr, fr->s.slow_first_byte_ms, dispatch);
        else
            dispatch(fr);
        goto Exit;
    }
    if (fr->s.rate_limit) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("1"));
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-ratelimit-limit-requests"), 0, NULL,
                              H2O_STRLIT("60"));
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-ratelimit-remaining-requests"), 0, NULL,
                              H2O_STRLIT("0"));
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-ratelimit-reset-requests"), 0, NULL,
                              H2O_STRLIT("1s"));
        send_error(req, 429, "requests", "rate_limit_exceeded", "Rate limit reached (fake)");
        goto Exit;
    }
    if (fr->s.status >= 400) {
        send_error(req, fr->s.status, fr->s.status >= 500 ? "server_error" : "invalid_request_error", "fake_status",
                   "fake upstream error");
        goto Exit;
    }
    if (kind == C_EMBEDDINGS) {
        const char *enc = json_string_value(json_object_get(body, "encoding_format"));
        if (enc != NULL && strcmp(enc, "base64") == 0)
            answer_embeddings_b64(fr, body);
        else
            answer_embeddings(fr, body);
        goto Exit;
    }
    fr->chat = kind == C_CHAT;
    fr->stream = json_is_true(json_object_get(body, "stream"));
    fr->include_usage = json_is_true(json_object_get(json_object_get(body, "stream_options"), "include_usage"));
    if (kind == C_RESPONSES || (kind == C_CHAT && fr->s.tool_use)) {
        json_t *t0 = json_array_get(json_object_get(body, "tools"), 0);
        const json_t *fn = kind == C_CHAT ? json_object_get(t0, "function") : t0;
        const char *tn = json_string_value(json_object_get(fn, "name"));
        snprintf(fr->tool_name, sizeof(fr->tool_name), "%s", tn != NULL ? tn : "fn");
        if (kind == C_RESPONSES)
            prepare_responses(fr);
        else
            prepare_chat_tool(fr);
        if (fr->s.slow_first_byte_ms > 0)
            fr_after(fr, fr->s.slow_first_byte_ms, scripted_start);
        else
            scripted_start(fr);
        goto Exit;
    }
    if (fr->s.slow_first_byte_ms > 0)
        fr_after(fr, fr->s.slow_first_byte_ms, dispatch);
    else
        dispatch(fr);
Exit:
    json_decref(body);
    return 0;
}

/* ---- accept ---------------------------------------------------------------- */

static void on_accept(h2o_socket_t *listener, const char *err)
{
    if (err != NULL)
        return;
    for (int i = 0; i < 64; i++) {
        int fd = accept4(g_listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -1)
            return;
        if (fd >= MAX_FDS) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        h2o_socket_t *sock = h2o_evloop_socket_create(g_ctx.loop, fd, 0);
        g_sock_by_fd[fd] = sock;
        sh_lock();
        g_sh->counts[C_CONNECTIONS]++;
        sh_unlock();
        h2o_accept(&g_accept, sock);
    }
}

static int run_worker(void)
{
    h2o_context_init(&g_ctx, h2o_evloop_create(), &g_config);
    g_accept.ctx = &g_ctx;
    g_accept.hosts = g_config.hosts;
    h2o_socket_t *ls = h2o_evloop_socket_create(g_ctx.loop, g_listen_fd, H2O_SOCKET_FLAG_DONT_READ);
    h2o_socket_read_start(ls, on_accept);
    while (h2o_evloop_run(g_ctx.loop, INT32_MAX) == 0)
        ;
    return 1;
}

int main(int argc, char **argv)
{
    int port = 0, nworkers = 1;
    const char *host = "127.0.0.1", *logpath = NULL, *tls_cert = NULL, *tls_key = NULL;
    static const struct option longopts[] = {{"port", required_argument, NULL, 'p'},
                                             {"tls-cert", required_argument, NULL, 'C'},
                                             {"tls-key", required_argument, NULL, 'K'},
                                             {"host", required_argument, NULL, 'H'},
                                             {"log", required_argument, NULL, 'l'},
                                             {"models", required_argument, NULL, 'm'},
                                             {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "p:H:l:m:t:", longopts, NULL)) != -1) {
        switch (c) {
        case 'p': port = atoi(optarg); break;
        case 'H': host = optarg; break;
        case 'l': logpath = optarg; break;
        case 'm': g_models = optarg; break;
        case 't': nworkers = atoi(optarg); break;
        case 'C': tls_cert = optarg; break;
        case 'K': tls_key = optarg; break;
        default:
            fprintf(stderr,
                    "usage: %s [--port N] [--host ADDR] [-t WORKERS] [--log FILE] [--models a,b] "
                    "[--tls-cert PEM --tls-key PEM]\n",
                    argv[0]);
            return 2;
        }
    }
    if ((tls_cert == NULL) != (tls_key == NULL)) {
        fprintf(stderr, "--tls-cert and --tls-key go together\n");
        return 2;
    }
    if (tls_cert != NULL) {
        SSL_CTX *sc = SSL_CTX_new(TLS_server_method());
        if (sc == NULL || SSL_CTX_use_certificate_chain_file(sc, tls_cert) != 1 ||
            SSL_CTX_use_PrivateKey_file(sc, tls_key, SSL_FILETYPE_PEM) != 1) {
            fprintf(stderr, "cannot load %s / %s: %s\n", tls_cert, tls_key, ERR_error_string(ERR_get_error(), NULL));
            return 1;
        }
        g_accept.ssl_ctx = sc;
    }
    if (nworkers < 1)
        nworkers = 1;
    signal(SIGPIPE, SIG_IGN);
    if (logpath != NULL) {
        g_logfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (g_logfd == -1) {
            perror(logpath);
            return 1;
        }
    }
    g_sh = mmap(NULL, sizeof(*g_sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g_sh == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    memset(g_sh, 0, sizeof(*g_sh));

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "bad host %s\n", host);
        return 2;
    }
    g_listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(g_listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(g_listen_fd, (struct sockaddr *)&sa, sizeof(sa)) == -1 || listen(g_listen_fd, 1024) == -1) {
        perror("bind/listen");
        return 1;
    }
    socklen_t slen = sizeof(sa);
    getsockname(g_listen_fd, (struct sockaddr *)&sa, &slen);

    h2o_config_init(&g_config);
    g_config.max_request_entity_size = 64 * 1024 * 1024;
    h2o_hostconf_t *hc = h2o_config_register_host(&g_config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *pc = h2o_config_register_path(hc, "/", 0);
    h2o_handler_t *h = h2o_create_handler(pc, sizeof(*h));
    h->on_req = on_req;

    printf("listening on %d\n", ntohs(sa.sin_port));
    fflush(stdout);

    if (nworkers == 1)
        return run_worker();
    for (int i = 0; i < nworkers; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            return run_worker();
        }
    }
    /* parent: wait; a SIGTERM to the parent takes the children with it */
    signal(SIGTERM, SIG_DFL);
    while (wait(NULL) > 0 || errno == EINTR)
        ;
    return 0;
}
