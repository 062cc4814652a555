/*
 * proxy.c - the /v1 request path (see proxy.h and docs/ARCHITECTURE.md).
 *
 * LMDB use, per request, in this order:
 *   1. read txn:  keys[SHA-256(api key)] -> quotas[id] -> users[id] -> groups[id]
 *                 -> models_by_name[name] -> models[id] -> providers[route ids]
 *                 (refusals here change nothing and take no write lock)
 *   2. write txn: quotas[id] re-read, then ta_quota_hold() (balances, holds);
 *                 committed before anything goes upstream. Never held across a
 *                 callback. The requests of one loop pass share one write txn,
 *                 each in a nested txn of its own (run_holds).
 * After the upstream answer nothing is written here: one ta_event_t goes to the
 * ring and billing settles it (releases the hold, charges the cost). A worker
 * that dies after the hold leaves the hold row; billing's dead-worker cleanup
 * releases it.
 *
 * The front (on_req): route -> admit -> authenticate -> caller -> body ->
 * model and routes. Each step returns 0 or fills a refusal_t (status, type,
 * code, param, message); refuse() answers it and records it (an event once
 * the caller is known), in one place. A request that passes is queued for
 * its hold.
 *
 * A request past the front (preq_t) is in exactly one state:
 *
 *   FRONT --queue_hold--> QUEUED --run_holds--> HOLDING --hold_go--> UPSTREAM
 *                                                  |                  |   |
 *                                     refused/failed                  |   +-- 2xx stream head --> STREAMING
 *                                                  v                  v                               |
 *                                                DONE <----------- end() <---------------------------+
 *                                                  ^                  ^
 *                                                  +--- DRAINING -----+  (client left, on_disconnect = drain)
 *
 *   FRONT      on_req resolves the caller, body, model and routes; a refusal ends it
 *   QUEUED     in the loop pass's hold list; nothing held yet
 *   HOLDING    taken out of the list by run_holds; held in the pass's nested
 *              transaction, waiting for the parent's commit
 *   UPSTREAM   held; the upstream call runs; nothing reached the client, so a
 *              route that fails before the first byte may fail over
 *   STREAMING  the client has the head of an SSE stream: no failover; while
 *              h2o has the output buffer in flight the provider is paused
 *              (back-pressure) and gen_proceed resumes it
 *   DRAINING   the client left with on_disconnect = drain: the upstream is read
 *              to its end (bounded by stream_drain_timeout_ms) so the request
 *              is charged what the provider charges; the worker is held alive
 *   DONE       end() ran: the call is cancelled or over, the one event is out
 *
 * One end: end() is the only place that emits the event, cancels a running
 * call, stops the drain timer and releases the worker; it runs exactly once
 * (DONE is never left). A refused or failed request (no hold) gets the same
 * end, with no hold in its event.
 *
 * One owner rule: a preq_t has two parts, the upstream part (over at DONE)
 * and h2o's part (the request, over when h2o disposes of it, on_req_dispose;
 * pr->req is NULL from then on). It is freed exactly once, by whichever of
 * end() and on_req_dispose() comes second (preq_release). ta_proxy_destroy()
 * abandons whatever is still alive when the loop has stopped, as a worker
 * that dies would (its holds go to billing's dead-worker cleanup).
 *
 * h2o's part holds the generator and a pointer back to the preq_t in the
 * request's pool (h2o_part_t), so h2o never reaches into a freed preq_t.
 */
#include "worker/proxy.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ledger/apikey.h"
#include "ledger/health.h"
#include "ledger/quota.h"
#include "schema/apierror.h"
#include "worker/anthropic.h"
#include "worker/messages.h"
#include "worker/metrics.h"
#include "worker/responses.h"
#include "worker/sse.h"
#include "worker/tokens.h"
#include "worker/upstream.h"

#define MAX_ERR_BODY (64u << 10)
#define MAX_PASS_HEADERS 8
#define MAX_SPARE 64 /* freed preq_t kept (3 KiB each) */
#define TA_MAX_CHOICES 128 /* n: OpenAI's own bound */
#define TA_MAX_BEST_OF 20  /* best_of: OpenAI's own bound */
#define DEFAULT_MAX_RESPONSE (64u << 20) /* conf.max_response_size 0 */
#define MEMBER_SIZE(type, m) sizeof(((type *)0)->m)

struct ta_proxy {
    ta_proxy_conf_t conf;
    char timezone[64];
    ta_worker_t *w;
    ta_upstream_t *up;
    h2o_timeout_t drain_timeout;
    bool drain_timeout_init;
    bool pending_held; /* ta_worker_hold() while events wait in the ring's pending queue */
    int32_t pid;       /* this worker's (getpid() is a system call; it was two per request) */
    ta_apikey_hasher_t *hasher; /* one context reused for every API key hash */
    int32_t default_timeout_s, default_connect_timeout_ms; /* the provider record's defaults */
    /* holds waiting for the end of the loop pass (see "the hold" below) */
    h2o_timeout_t hold_timeout; /* 0 ms */
    h2o_timeout_entry_t hold_entry;
    bool hold_timeout_init;
    struct preq *hold_head, **hold_tail;
    h2o_linklist_t live; /* every preq_t not freed yet (ta_proxy_destroy ends them) */
    MDB_txn *rtxn; /* on_req's read transaction, reset between requests (read_begin) */
    struct key_cache *keys; /* KEY_CACHE clear provider keys (provider_key) */
    struct preq *spare;     /* freed preq_t kept for the next requests (hold_next links them) */
    int nspare;
    /* records the front reads and drops within on_req (not re-entered): kept
     * here rather than allocated and freed per request (each is over glibc's
     * small sizes, and freeing them made malloc consolidate) */
    struct front_scratch {
        ta_user_t user;
        ta_group_t grp;
        ta_provider_t prov; /* wiped after use: it holds a sealed key */
    } *scratch;
    unsigned key_next;
};

typedef struct route_info {
    uint64_t provider_id;
    char base_url[MEMBER_SIZE(ta_provider_t, base_url)];
    char upstream_name[MEMBER_SIZE(ta_route_t, upstream_name)];
    uint8_t key_sealed[MEMBER_SIZE(ta_provider_t, key_sealed)];
    uint16_t key_sealed_len;
    int32_t timeout_s, connect_timeout_ms;
    uint8_t type; /* TA_PROVIDER_* */
} route_info_t;

enum preq_state { ST_FRONT, ST_QUEUED, ST_HOLDING, ST_UPSTREAM, ST_STREAMING, ST_DRAINING, ST_DONE };

/* How a stream's last output goes once h2o took the previous buffer. */
enum { FINAL_NONE, FINAL_OK, FINAL_CUT };

struct preq;
/* h2o's part, in the request's pool: h2o may call the generator until it
 * disposes of the request, whatever became of the preq_t. */
typedef struct h2o_part {
    h2o_generator_t gen;
    struct preq *pr; /* NULL once the preq_t was freed (ta_proxy_destroy) */
} h2o_part_t;

typedef struct preq {
    ta_proxy_t *p;
    enum preq_state state;
    h2o_linklist_t live;
    h2o_req_t *req;   /* NULL once h2o disposed of the request */
    h2o_part_t *hp;   /* NULL with req */
    int endpoint;
    bool stream, client_usage;
    bool head_sent;   /* the client has the head of the answer: a later end is a 200 */
    bool sending;     /* h2o has pr->out in flight (stream) */
    int final;        /* FINAL_*: the stream's end waits for gen_proceed */
    bool body_edited; /* pr->body differs from the client's bytes */
    ta_event_t ev;
    ta_model_t model;
    route_info_t *routes; /* the model's usable routes (front_model), as many as it has */
    int nroutes, route_i, routes_cap;
    ta_health_req_t health; /* the routes' health slots and a trial won (ledger/health.h) */
    int64_t call_ns[2];     /* this call's start and answer head (mono), for health */
    json_t *body;
    char *up_body;
    ta_upcall_t *call;
    ta_tokens_t tok;
    int up_status;
    int up_err;
    ta_bytes_t resp; /* buffered answer (non-stream, or an error) */
    ta_sse_t sse;
    ta_anth_stream_t *anth; /* anthropic route, streaming: the event translator (on /v1/messages: the usage reader) */
    ta_msg_stream_t *msgs;  /* /v1/messages on an openai route, streaming: the chunk translator */
    ta_resp_stream_t *rs;   /* /v1/responses, streaming: the events' reader, or translator (anthropic route) */
    ta_bytes_t scratch;     /* /v1/messages pass-through: the discarded output of the usage reader */
    char anth_version[40];  /* /v1/messages: the client's anthropic-version ("" = ours) */
    ta_usage_t anth_usage;  /* anthropic route, non-streaming: usage of the translated answer */
    ta_bytes_t out;  /* bytes handed to h2o (stream) */
    uint64_t drained;
    h2o_timeout_entry_t drain_timer;
    struct pass_hdr {
        char name[40], value[64];
    } *pass; /* MAX_PASS_HEADERS, allocated by the first one (an error's headers) */
    int npass;
    int64_t t0_mono;
    /* the hold, done at the end of the loop pass (queue_hold) */
    uint64_t quota_id;
    int64_t max_out;      /* the client's output limit per choice (the smaller of both fields), 0 = none */
    const char *mt_key;   /* the one output-limit field sent upstream */
    const char *mt_other; /* the other one, removed from the body */
    bool mt_both;         /* the client sent both: the body must be normalized */
    int32_t choices;      /* outputs the upstream generates and bills: max(n, best_of) */
    int64_t extra_out;    /* output tokens billed beyond the limit (predicted output) */
    ta_hold_res_t hr;
    struct preq *hold_next;
} preq_t;

/* A refusal: what the client is told. refuse() answers and records it. */
typedef struct refusal {
    int status;
    int et;              /* TA_ET_*: the error's type, as answered and as recorded */
    const char *code;
    char param[MEMBER_SIZE(ta_err_t, field)]; /* "": none (copied: a step's own may be gone) */
    const char *allow;   /* 405: the Allow header */
    int retry_after_s;   /* > 0: Retry-After */
    const ta_hold_res_t *limits; /* a quota's refusal: the x-ratelimit-* headers */
    char msg[256];
} refusal_t;

/* The front's own state, before a preq_t exists. */
typedef struct front {
    int64_t t0;
    int ep;
    const char *model_id; /* GET /v1/models/{id} */
    size_t model_id_len;
    bool caller;          /* ev names the caller: a refusal is recorded */
    ta_event_t ev;
    ta_quota_t q;
    ta_group_t *grp;      /* the proxy's scratch */
    json_t *body;
} front_t;

/* /v1/messages (below, "/v1/messages"): the route's readers and answers */
static int msg_check(const preq_t *pr, const json_t *body, ta_err_t *err);
static void msg_route(preq_t *pr, const route_info_t *r);
static int msg_feed(preq_t *pr, const char *p, size_t n);
static bool msg_answer_failed(preq_t *pr);
static bool msg_error_answered(preq_t *pr, int st);
static void msg_shape(preq_t *pr, front_t *f);
/* /v1/responses (below, "/v1/responses") */
static int resp_body(front_t *f, refusal_t *rf);
static int resp_check(preq_t *pr, const json_t *body, ta_err_t *err);
static void resp_route(preq_t *pr, const route_info_t *r);
static int resp_feed(preq_t *pr, const char *p, size_t n);
static bool resp_answer_failed(preq_t *pr);
static void resp_shape(preq_t *pr, front_t *f);
static void resp_stream_free(preq_t *pr);
static bool no_output(int ep);

/* ---- small helpers --------------------------------------------------------- */

static int refused(refusal_t *rf, int status, int et, const char *code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static int refused(refusal_t *rf, int status, int et, const char *code, const char *param, const char *fmt, ...)
{
    va_list ap;
    rf->status = status;
    rf->et = et;
    rf->code = code;
    snprintf(rf->param, sizeof(rf->param), "%s", param != NULL ? param : "");
    va_start(ap, fmt);
    vsnprintf(rf->msg, sizeof(rf->msg), fmt, ap);
    va_end(ap);
    return -1;
}

/* Anthropic's paths (/v1/messages...), and /v1/models asked with
 * anthropic-version: answered in Anthropic's shapes. */
static bool anth_shaped(h2o_req_t *req)
{
    h2o_iovec_t p = req->path_normalized;
    if (p.len >= 12 && memcmp(p.base, "/v1/messages", 12) == 0 && (p.len == 12 || p.base[12] == '/'))
        return true;
    return p.len >= 10 && memcmp(p.base, "/v1/models", 10) == 0 &&
           h2o_find_header_by_str(&req->headers, H2O_STRLIT("anthropic-version"), -1) != -1;
}

/* The one error body of API.md (schema/apierror.h); the type names the kind
 * exactly as the audit record does. On Anthropic's paths, its error shape. */
static void send_err(h2o_req_t *req, int status, int et, const char *code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static void send_err(h2o_req_t *req, int status, int et, const char *code, const char *param, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (anth_shaped(req)) { /* Anthropic's error shape on its paths */
        ta_bytes_t b = {0};
        if (ta_msg_error_body(status, msg, &b) == 0) {
            ta_worker_send(req, status, NULL, b.p, b.len);
            ta_bytes_free(&b);
            return;
        }
        ta_bytes_free(&b);
    }
    size_t len = 0;
    char *s = ta_error_body(ta_errtype_name(et), code, param, msg, &len);
    if (s == NULL) {
        ta_worker_send(req, 500, NULL, ta_error_body_oom, strlen(ta_error_body_oom));
        return;
    }
    ta_worker_send(req, status, NULL, s, len);
    free(s);
}

static void add_hdr(h2o_req_t *req, const char *name, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void add_hdr(h2o_req_t *req, const char *name, const char *fmt, ...)
{
    char v[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(v, sizeof(v), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    h2o_iovec_t val = h2o_strdup(&req->pool, v, (size_t)n < sizeof(v) ? (size_t)n : sizeof(v) - 1);
    h2o_add_header_by_str(&req->pool, &req->res.headers, name, strlen(name), 0, NULL, val.base, val.len);
}

/* A duration as OpenAI writes x-ratelimit-reset-* (Go's time.Duration
 * form): "20ms" below a second, else hours and minutes as needed and the
 * seconds with their fraction, trailing zeros dropped: "6.5s", "1m0s",
 * "1h2m3.25s". */
void ta_proxy_duration(int64_t ms, char *out, size_t cap)
{
    if (ms < 0)
        ms = 0;
    if (ms < 1000) {
        snprintf(out, cap, "%lldms", (long long)ms);
        return;
    }
    long long h = ms / 3600000, m = ms / 60000 % 60, sec = ms / 1000 % 60, frac = ms % 1000;
    char fs[8] = "";
    if (frac > 0) {
        fs[0] = '.';
        fs[1] = (char)('0' + frac / 100);
        fs[2] = (char)('0' + frac / 10 % 10);
        fs[3] = (char)('0' + frac % 10);
        for (int n = 3; n > 0 && fs[n] == '0'; n--) /* frac > 0: stops at a digit */
            fs[n] = '\0';
    }
    if (h > 0)
        snprintf(out, cap, "%lldh%lldm%lld%ss", h, m, sec, fs);
    else if (m > 0)
        snprintf(out, cap, "%lldm%lld%ss", m, sec, fs);
    else
        snprintf(out, cap, "%lld%ss", sec, fs);
}

static void ratelimit_headers(h2o_req_t *req, const ta_hold_res_t *r)
{
    char d[40];
    if (r->rpm_limit > 0) {
        add_hdr(req, "x-ratelimit-limit-requests", "%lld", (long long)r->rpm_limit);
        add_hdr(req, "x-ratelimit-remaining-requests", "%lld", (long long)r->rpm_remaining);
        ta_proxy_duration(r->rpm_reset_ms, d, sizeof(d));
        add_hdr(req, "x-ratelimit-reset-requests", "%s", d);
    }
    if (r->tpm_limit > 0) {
        add_hdr(req, "x-ratelimit-limit-tokens", "%lld", (long long)r->tpm_limit);
        add_hdr(req, "x-ratelimit-remaining-tokens", "%lld", (long long)r->tpm_remaining);
        ta_proxy_duration(r->tpm_reset_ms, d, sizeof(d));
        add_hdr(req, "x-ratelimit-reset-tokens", "%s", d);
    }
}


static void copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* ---- events, and the one end ------------------------------------------------------ */

/* Counters live in the shared metrics page (worker/metrics.h), summed over
 * all workers by /metrics. ev: labels the model once it was resolved. */
static void count_answer_ev(ta_proxy_t *p, int status, int64_t t0_mono, const ta_event_t *ev)
{
    ta_metrics_request(status, ev != NULL && ev->model_id != 0 ? ev->model : NULL, ta_mono_ns() - t0_mono);
}

static void emit(ta_proxy_t *p, ta_event_t *ev)
{
    ev->kind = TA_EV_REQUEST;
    ev->worker_pid = p->pid;
    if (ev->t_done_ns == 0)
        ev->t_done_ns = ta_now_ns();
    if (p->conf.ring != NULL) {
        int rc = ta_ring_submit(p->conf.ring, ev);
        if (rc != 0)
            ta_log(TA_LOG_ERROR, "event lost (ring and pending queue full): %s", ta_strerror(rc));
        /* A worker that stops must not exit with events in its own queue
         * (they would be lost): stay "in flight" until flush_ring() moved
         * them into the ring, bounded by shutdown_timeout_ms. */
        if (!p->pending_held && ta_ring_has_pending(p->conf.ring)) {
            ta_worker_hold(p->w);
            p->pending_held = true;
        }
    }
    if (ev->flags & TA_EVF_HOLD)
        ta_metrics_holds_add(-1);
    if (p->conf.on_event != NULL)
        p->conf.on_event(p->conf.on_event_arg, ev);
}

static void preq_free(preq_t *pr)
{
    TA_BUG_ON(pr->state != ST_DONE);
    if (pr->hp != NULL)
        pr->hp->pr = NULL;
    h2o_linklist_unlink(&pr->live);
    json_decref(pr->body);
    free(pr->pass);
    free(pr->up_body);
    if (pr->routes != NULL) /* sealed keys: not secret, but not needed */
        explicit_bzero(pr->routes, (size_t)pr->nroutes * sizeof(*pr->routes));
    ta_bytes_free(&pr->resp);
    ta_bytes_free(&pr->out);
    ta_sse_dispose(&pr->sse);
    if (pr->anth != NULL)
        ta_anth_stream_dispose(pr->anth);
    free(pr->anth);
    if (pr->msgs != NULL)
        ta_msg_stream_dispose(pr->msgs);
    free(pr->msgs);
    resp_stream_free(pr);
    ta_bytes_free(&pr->scratch);
    ta_proxy_t *p = pr->p;
    if (p->nspare < MAX_SPARE) { /* with its routes buffer */
        pr->hold_next = p->spare;
        p->spare = pr;
        p->nspare++;
        return;
    }
    free(pr->routes);
    free(pr);
}

/* The owner rule: freed once both parts are over. */
static void preq_release(preq_t *pr)
{
    if (pr->state == ST_DONE && pr->req == NULL)
        preq_free(pr);
}

/* Usage of a held request once its upstream part is over. */
static void usage_of(preq_t *pr, ta_event_t *ev)
{
    ta_usage_t u = {0};
    bool ok = pr->up_status >= 200 && pr->up_status < 300, delivered = false;
    if (pr->stream && ok) {
        u = pr->sse.usage;
        delivered = pr->sse.content_events > 0;
    } else if (ok && pr->up_err == TA_UP_OK) {
        if (pr->routes[pr->route_i].type == TA_PROVIDER_ANTHROPIC || pr->endpoint == TA_EP_MESSAGES ||
            pr->endpoint == TA_EP_RESPONSES)
            u = pr->anth_usage; /* normalized by ta_anth_response / ta_anth_usage, ta_msg_from_chat, ta_resp_usage */
        else
            ta_usage_parse(pr->resp.p, pr->resp.len, &u);
        delivered = true;
    } else if (ok && pr->resp.len > 0) {
        delivered = true; /* a buffered answer broke off */
    }
    if (u.present) {
        ev->prompt_tokens = u.prompt_tokens;
        ev->completion_tokens = u.completion_tokens;
        ev->cached_tokens = u.cached_tokens;
        ev->cache_write_tokens = u.cache_write_tokens;
    } else if (pr->endpoint == TA_EP_COUNT_TOKENS) {
        /* counting tokens is free at the provider: nothing to charge */
    } else if (delivered || (ev->flags & TA_EVF_CLIENT_GONE && ok)) {
        /* the provider's answer (or part of it) went out without usage: charge
         * our estimate, marked as such */
        ev->flags |= TA_EVF_USAGE_ESTIMATED;
        ev->prompt_tokens = pr->tok.estimate;
        ev->completion_tokens = pr->stream ? pr->sse.content_events : ta_tokens_estimate_bytes((int64_t)pr->resp.len);
        if (pr->endpoint == TA_EP_EMBEDDINGS)
            ev->completion_tokens = 0;
    }
    ev->cost = ta_cost(&pr->model, ev->prompt_tokens, ev->completion_tokens, ev->cached_tokens,
                       ev->cache_write_tokens);
    if (!pr->stream)
        ev->bytes_out = (int64_t)pr->resp.len;
}

/* The one end of a request's upstream part: the call stopped, the event
 * (usage and cost of a held request) out, the worker released. pr is freed
 * here when h2o is done with it already: the caller must not touch pr
 * afterwards unless it knows pr->req != NULL. */
static void end(preq_t *pr, int status, int et)
{
    ta_proxy_t *p = pr->p;
    TA_BUG_ON(pr->state == ST_DONE || pr->state == ST_QUEUED);
    if (pr->call != NULL) {
        ta_upcall_cancel(pr->call);
        pr->call = NULL;
        pr->up_err = TA_UP_EABORTED;
    }
    if (h2o_timeout_is_linked(&pr->drain_timer))
        h2o_timeout_unlink(&pr->drain_timer);
    if (pr->state == ST_DRAINING)
        ta_worker_release(p->w);
    ta_health_done(&pr->health);
    pr->state = ST_DONE;
    pr->ev.status = (uint16_t)status;
    pr->ev.error_type = (uint8_t)et;
    if (pr->ev.flags & TA_EVF_HOLD)
        usage_of(pr, &pr->ev);
    emit(p, &pr->ev);
    count_answer_ev(p, status, pr->t0_mono, &pr->ev);
    preq_release(pr);
}

/* The one place a refusal is answered and recorded: with pr, its end();
 * before pr, the front's event once the caller is known; else counted only. */
static void refuse(ta_proxy_t *p, h2o_req_t *req, front_t *f, preq_t *pr, const refusal_t *rf)
{
    if (pr != NULL) {
        end(pr, rf->status, rf->et);
    } else if (f != NULL && f->caller) {
        f->ev.status = (uint16_t)rf->status;
        f->ev.error_type = (uint8_t)rf->et;
        emit(p, &f->ev);
        count_answer_ev(p, rf->status, f->t0, &f->ev);
    } else {
        count_answer_ev(p, rf->status, f != NULL ? f->t0 : ta_mono_ns(), NULL);
    }
    if (req == NULL)
        return;
    if (rf->allow != NULL)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, rf->allow, strlen(rf->allow));
    if (rf->retry_after_s > 0)
        add_hdr(req, "retry-after", "%d", rf->retry_after_s);
    if (rf->limits != NULL)
        ratelimit_headers(req, rf->limits);
    send_err(req, rf->status, rf->et, rf->code, rf->param[0] ? rf->param : NULL, "%s", rf->msg);
}

/* ---- request state <-> h2o request ----------------------------------------------- */

static void drain_expired(h2o_timeout_entry_t *e)
{
    preq_t *pr = H2O_STRUCT_FROM_MEMBER(preq_t, drain_timer, e);
    ta_log(TA_LOG_WARN, "drain of an upstream answer after the client left ran out of time; charging an estimate");
    pr->ev.flags |= TA_EVF_USAGE_ESTIMATED;
    end(pr, pr->head_sent ? 200 : 499, TA_ET_ABORTED);
}

/* h2o is done with the request (answered, or the client left). */
static void on_req_dispose(void *ptr)
{
    h2o_part_t *hp = ptr;
    preq_t *pr = hp->pr;
    if (pr == NULL)
        return;
    ta_proxy_t *p = pr->p;
    hp->pr = NULL;
    pr->hp = NULL;
    pr->req = NULL;
    switch (pr->state) {
    case ST_DONE:
        preq_release(pr);
        return;
    case ST_QUEUED:
    case ST_HOLDING:
        return; /* its hold is still to come: hold_go sees req == NULL */
    case ST_UPSTREAM:
    case ST_STREAMING:
        break;
    default:
        TA_BUG_ON(true); /* FRONT runs inside on_req; DRAINING has no request */
    }
    pr->ev.flags |= TA_EVF_CLIENT_GONE;
    if (pr->call == NULL || p->conf.on_disconnect == TA_PROXY_ABORT) {
        end(pr, pr->head_sent ? 200 : 499, TA_ET_ABORTED);
        return;
    }
    /* drain: keep reading so the request is charged what the provider charges */
    pr->state = ST_DRAINING;
    ta_worker_hold(p->w);
    pr->drain_timer.cb = drain_expired;
    h2o_timeout_link(ta_worker_loop(p->w), &p->drain_timeout, &pr->drain_timer);
    pr->sending = false;
    pr->final = FINAL_NONE;
    pr->out.len = 0;
    ta_upcall_resume(pr->call);
}

/* ---- streaming to the client ------------------------------------------------------ */

static void send_out(preq_t *pr, h2o_send_state_t state)
{
    if (state == H2O_SEND_STATE_ERROR && pr->req->version < 0x200) {
        /* h2o 2.2.5's chunked encoder ends an HTTP/1.1 body with the last
         * chunk even on ERROR, so a stream the provider cut would look
         * complete to the client (SDKs do not require [DONE]). Shut the
         * write side first: the client sees the connection end before the
         * last chunk, and the trailing incomplete event is dropped. HTTP/2
         * ends the stream with RST_STREAM by itself. */
        h2o_socket_t *sock = pr->req->conn->callbacks->get_socket(pr->req->conn);
        if (sock != NULL)
            shutdown(h2o_socket_get_fd(sock), SHUT_WR);
        pr->out.len = 0;
    }
    h2o_iovec_t buf = h2o_iovec_init(pr->out.p, pr->out.len);
    pr->sending = state == H2O_SEND_STATE_IN_PROGRESS;
    pr->ev.bytes_out += (int64_t)pr->out.len;
    h2o_send(pr->req, &buf, buf.len ? 1 : 0, state);
}

/* The stream's last output (its end already recorded by end()). */
static void send_final(preq_t *pr)
{
    int final = pr->final;
    pr->final = FINAL_NONE;
    ta_sse_finish(&pr->sse, &pr->out);
    send_out(pr, final == FINAL_CUT ? H2O_SEND_STATE_ERROR : H2O_SEND_STATE_FINAL);
}

static void gen_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    preq_t *pr = ((h2o_part_t *)g)->pr;
    if (pr == NULL)
        return;
    pr->sending = false;
    ta_bytes_free(&pr->out); /* a stream between events holds no buffer (bench/streams.sh) */
    if (pr->final != FINAL_NONE) {
        send_final(pr);
        return;
    }
    if (pr->call != NULL)
        ta_upcall_resume(pr->call);
}

static void gen_stop(h2o_generator_t *g, h2o_req_t *req)
{
    /* the client went away; on_req_dispose follows and decides */
}

/* ---- upstream callbacks ------------------------------------------------------------- */

static void start_route(preq_t *pr);

static int up_on_header(void *ctx, const char *name, size_t nlen, const char *v, size_t vlen)
{
    preq_t *pr = ctx;
    if (pr->npass >= MAX_PASS_HEADERS || nlen >= MEMBER_SIZE(struct pass_hdr, name) ||
        vlen >= MEMBER_SIZE(struct pass_hdr, value))
        return 0;
    if ((nlen == 11 && strncasecmp(name, "retry-after", 11) == 0) ||
        (nlen > 12 && strncasecmp(name, "x-ratelimit-", 12) == 0)) {
        if (pr->pass == NULL && (pr->pass = malloc(MAX_PASS_HEADERS * sizeof(*pr->pass))) == NULL)
            return 0;
        memcpy(pr->pass[pr->npass].name, name, nlen);
        pr->pass[pr->npass].name[nlen] = '\0';
        memcpy(pr->pass[pr->npass].value, v, vlen);
        pr->pass[pr->npass].value[vlen] = '\0';
        for (size_t i = 0; i < nlen; i++)
            pr->pass[pr->npass].name[i] = (char)(pr->pass[pr->npass].name[i] | 0x20);
        pr->npass++;
    }
    return 0;
}

static int up_on_head(void *ctx, int status)
{
    preq_t *pr = ctx;
    pr->up_status = status;
    pr->call_ns[1] = ta_mono_ns();
    if (pr->ev.t_first_byte_ns == 0)
        pr->ev.t_first_byte_ns = ta_now_ns();
    if (status >= 200 && status < 300 && pr->stream && pr->state == ST_UPSTREAM) {
        h2o_req_t *req = pr->req;
        req->res.status = 200;
        req->res.reason = "OK";
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/event-stream"));
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
        pr->hp->gen.proceed = gen_proceed;
        pr->hp->gen.stop = gen_stop;
        pr->state = ST_STREAMING;
        pr->head_sent = true;
        json_decref(pr->body); /* no failover from here: the tree is not needed again */
        pr->body = NULL;
        h2o_start_response(req, &pr->hp->gen);
    }
    return 0;
}

/* Anthropic stream: translate; finish() and up_on_done() read the usage,
 * the end and the content count from pr->sse as for OpenAI streams. Between
 * message_start and message_delta the usage has the real prompt but only a
 * lower bound of the output (anthropic.h): estimated, should it end there. */
static int anth_feed(preq_t *pr, const char *p, size_t n, ta_bytes_t *out)
{
    int rc = ta_anth_stream_feed(pr->anth, p, n, out);
    pr->sse.usage = pr->anth->usage;
    pr->sse.done = pr->anth->done;
    pr->sse.content_events = pr->anth->content_events;
    pr->sse.events = pr->anth->events;
    pr->sse.error_event = pr->anth->failed;
    pr->sse.error_rate_limit = pr->anth->failed_rate_limit;
    if (pr->anth->usage.present && !pr->anth->final_usage)
        pr->ev.flags |= TA_EVF_USAGE_ESTIMATED;
    else
        pr->ev.flags &= ~TA_EVF_USAGE_ESTIMATED;
    return rc;
}

static int up_on_data(void *ctx, const char *p, size_t n)
{
    preq_t *pr = ctx;
    size_t bound = pr->p->conf.max_response_size;
    if (!(pr->stream && pr->up_status >= 200 && pr->up_status < 300)) {
        if (pr->up_status >= 300 && pr->resp.len >= MAX_ERR_BODY)
            return TA_UP_CONSUMED; /* keep the head of an error body only */
        if (ta_bytes_append(&pr->resp, p, n, pr->up_status >= 300 ? MAX_ERR_BODY + n : bound) != 0)
            return -1;
        return TA_UP_CONSUMED;
    }
    if (pr->sending)
        return TA_UP_PAUSE;
    int rc = pr->endpoint == TA_EP_MESSAGES    ? msg_feed(pr, p, n)
             : pr->endpoint == TA_EP_RESPONSES ? resp_feed(pr, p, n)
             : pr->anth != NULL                ? anth_feed(pr, p, n, &pr->out)
                                            : ta_sse_feed(&pr->sse, p, n, &pr->out);
    if (rc != 0) {
        ta_log(TA_LOG_WARN, "provider stream refused: %s", ta_strerror(rc));
        return -1;
    }
    if (pr->sse.fr.cur.len == 0 && pr->sse.fr.cur.p != NULL)
        ta_bytes_free(&pr->sse.fr.cur); /* between events a stream holds no buffer (bench/streams.sh) */
    if (pr->state == ST_DRAINING) {
        pr->drained += n;
        pr->out.len = 0;
        return pr->drained > bound ? -1 : TA_UP_CONSUMED;
    }
    if (pr->out.len > 0)
        send_out(pr, H2O_SEND_STATE_IN_PROGRESS);
    return TA_UP_CONSUMED;
}

/* The provider's retry-after and x-ratelimit-* on an error passed through:
 * they replace the gateway's own of the same name (hold_go wrote the
 * quota's), so each field appears once. */
static void pass_headers(preq_t *pr)
{
    h2o_headers_t *hs = &pr->req->res.headers;
    for (int i = 0; i < pr->npass; i++) {
        size_t l = strlen(pr->pass[i].name);
        ssize_t at;
        while ((at = h2o_find_header_by_str(hs, pr->pass[i].name, l, -1)) != -1)
            h2o_delete_header(hs, at);
    }
    for (int i = 0; i < pr->npass; i++) {
        h2o_iovec_t v = h2o_strdup(&pr->req->pool, pr->pass[i].value, SIZE_MAX);
        h2o_iovec_t nm = h2o_strdup(&pr->req->pool, pr->pass[i].name, SIZE_MAX);
        h2o_add_header_by_str(&pr->req->pool, &pr->req->res.headers, nm.base, nm.len, 0, NULL, v.base, v.len);
    }
}

/* Failover: only while nothing reached the client (UPSTREAM), to the next
 * route in priority order. */
static bool next_route(preq_t *pr)
{
    if (pr->state != ST_UPSTREAM || pr->route_i + 1 >= pr->nroutes)
        return false;
    pr->route_i++;
    pr->up_status = 0;
    pr->npass = 0;
    pr->resp.len = 0;
    start_route(pr);
    return true;
}

/* ---- anthropic routes (worker/anthropic.h) ------------------------------------------ */

/* A Messages answer becomes a chat.completion (pr->resp replaced). An answer
 * that cannot be read is a 502; the provider has charged for it, so end()
 * charges the estimate. Returns true when it answered the client. */
static bool anth_answer_failed(preq_t *pr)
{
    if (pr->endpoint == TA_EP_MESSAGES || pr->endpoint == TA_EP_COUNT_TOKENS)
        return msg_answer_failed(pr);
    if (pr->endpoint == TA_EP_RESPONSES)
        return resp_answer_failed(pr);
    if (pr->routes[pr->route_i].type != TA_PROVIDER_ANTHROPIC)
        return false;
    ta_bytes_t oai = {0};
    int rc = ta_anth_response(pr->resp.p, pr->resp.len, &oai, pr->p->conf.max_response_size, &pr->anth_usage);
    if (rc == 0) {
        ta_bytes_free(&pr->resp);
        pr->resp = oai;
        return false;
    }
    ta_bytes_free(&oai);
    ta_log(TA_LOG_WARN, "provider %llu: its Messages answer could not be read: %s",
           (unsigned long long)pr->routes[pr->route_i].provider_id, ta_strerror(rc));
    end(pr, 502, TA_ET_UPSTREAM);
    send_err(pr->req, 502, TA_ET_UPSTREAM, "upstream_error", NULL, "the provider's answer could not be read");
    return true;
}

/* An Anthropic error answer in OpenAI's shape, same status (529 -> 503). */
static bool anth_error_answered(preq_t *pr, int st)
{
    if (pr->routes[pr->route_i].type != TA_PROVIDER_ANTHROPIC)
        return false;
    int out = ta_anth_error_status(st);
    int et = st == 429 ? TA_ET_RATE_LIMIT : st >= 500 ? TA_ET_UPSTREAM : TA_ET_INVALID_REQUEST;
    pr->up_status = st;
    end(pr, out, et);
    pass_headers(pr);
    ta_bytes_t b = {0};
    if (ta_anth_error(st, pr->resp.p, pr->resp.len, &b) == 0)
        ta_worker_send(pr->req, out, NULL, b.p, b.len);
    else
        send_err(pr->req, out, et, "upstream_error", NULL, "the provider answered HTTP %d", st);
    ta_bytes_free(&b);
    return true;
}

static void anth_route(preq_t *pr, const route_info_t *r)
{
    if (pr->anth != NULL) {
        ta_anth_stream_dispose(pr->anth);
        free(pr->anth);
        pr->anth = NULL;
    }
    memset(&pr->anth_usage, 0, sizeof(pr->anth_usage));
    if (pr->endpoint == TA_EP_MESSAGES || pr->endpoint == TA_EP_COUNT_TOKENS) {
        msg_route(pr, r);
        return;
    }
    if (pr->endpoint == TA_EP_RESPONSES) {
        resp_route(pr, r);
        return;
    }
    if (r->type != TA_PROVIDER_ANTHROPIC)
        return;
    free(pr->up_body);
    pr->up_body = NULL;
    json_t *ab = NULL;
    ta_err_t aerr;
    int rc = ta_anth_request(pr->body, r->upstream_name, pr->model.max_output_tokens, &ab, &aerr);
    if (rc != 0) { /* checked before the hold: only -ENOMEM gets here */
        ta_log(TA_LOG_ERROR, "provider %llu: cannot build the Messages request: %s", (unsigned long long)r->provider_id,
               ta_strerror(rc));
        return;
    }
    pr->up_body = json_dumps(ab, JSON_COMPACT);
    json_decref(ab);
    if (pr->stream && pr->up_body != NULL) {
        pr->anth = malloc(sizeof(*pr->anth));
        if (pr->anth == NULL) {
            free(pr->up_body);
            pr->up_body = NULL;
            return;
        }
        ta_anth_stream_init(pr->anth, pr->client_usage, r->upstream_name, 0);
    }
}

/* Before the hold: a request an anthropic route cannot express is the
 * client's 400, not a charge. */
static int anth_check(const preq_t *pr, const json_t *body, ta_err_t *err)
{
    if (pr->endpoint != TA_EP_CHAT)
        return 0;
    for (int i = 0; i < pr->nroutes; i++) {
        if (pr->routes[i].type != TA_PROVIDER_ANTHROPIC)
            continue;
        json_t *ab = NULL;
        int rc = ta_anth_request(body, pr->routes[i].upstream_name, 0, &ab, err);
        json_decref(ab);
        return rc;
    }
    return 0;
}

/* ---- /v1/messages (worker/messages.h) ------------------------------------------------ */

/* Before the hold: a Messages request an openai route cannot express is the
 * client's 400, not a charge. */
static int msg_check(const preq_t *pr, const json_t *body, ta_err_t *err)
{
    if (pr->endpoint != TA_EP_MESSAGES)
        return 0;
    for (int i = 0; i < pr->nroutes; i++) {
        if (pr->routes[i].type != TA_PROVIDER_OPENAI)
            continue;
        json_t *c = NULL;
        int rc = ta_msg_to_chat(body, &c, err);
        json_decref(c);
        return rc;
    }
    return 0;
}

/* The route's body and stream readers for /v1/messages: an anthropic route
 * gets the client's body (start_route) and its stream is passed through,
 * read for the usage only; an openai route gets the chat translation and its
 * chunks are translated back. */
static void msg_route(preq_t *pr, const route_info_t *r)
{
    if (pr->msgs != NULL) {
        ta_msg_stream_dispose(pr->msgs);
        free(pr->msgs);
        pr->msgs = NULL;
    }
    if (pr->endpoint != TA_EP_MESSAGES && pr->endpoint != TA_EP_COUNT_TOKENS)
        return;
    if (r->type == TA_PROVIDER_ANTHROPIC) {
        if (pr->stream && (pr->anth = malloc(sizeof(*pr->anth))) != NULL)
            ta_anth_stream_init(pr->anth, false, r->upstream_name, 0);
        return;
    }
    free(pr->up_body);
    pr->up_body = NULL;
    json_t *c = NULL;
    ta_err_t e;
    if (ta_msg_to_chat(pr->body, &c, &e) != 0) /* checked before the hold: only -ENOMEM gets here */
        return;
    json_object_set_new(c, "model", json_string(r->upstream_name));
    pr->up_body = json_dumps(c, JSON_COMPACT);
    json_decref(c);
    if (pr->stream && (pr->msgs = malloc(sizeof(*pr->msgs))) != NULL)
        ta_msg_stream_init(pr->msgs, r->upstream_name, 0);
}

/* A Messages stream's bytes: passed through (anthropic route, the usage
 * read on the side) or translated (openai route); pr->sse carries the
 * usage, the end and the content count as for chat streams. */
static int msg_feed(preq_t *pr, const char *p, size_t n)
{
    if (pr->msgs != NULL) {
        int rc = ta_msg_stream_feed(pr->msgs, p, n, &pr->out);
        pr->sse.usage = pr->msgs->usage;
        pr->sse.done = pr->msgs->done;
        pr->sse.content_events = pr->msgs->content_events;
        pr->sse.events = pr->msgs->events;
        pr->sse.error_event = pr->msgs->failed;
        pr->sse.error_rate_limit = pr->msgs->failed_rate_limit;
        return rc;
    }
    pr->scratch.len = 0;
    int rc = anth_feed(pr, p, n, &pr->scratch);
    if (rc == 0)
        rc = ta_bytes_append(&pr->out, p, n, SIZE_MAX);
    return rc;
}

/* A Messages answer: an anthropic route's passes as it is (its usage read),
 * an openai route's chat.completion becomes a Message. Returns true when it
 * answered the client (a 502: the answer could not be read). */
static bool msg_answer_failed(preq_t *pr)
{
    const route_info_t *r = &pr->routes[pr->route_i];
    int rc;
    if (r->type == TA_PROVIDER_ANTHROPIC) {
        json_t *j = json_loadb(pr->resp.p, pr->resp.len, 0, NULL);
        rc = json_is_object(j) ? 0 : TA_EINVAL;
        if (pr->endpoint == TA_EP_MESSAGES)
            ta_anth_usage(json_object_get(j, "usage"), &pr->anth_usage);
        json_decref(j);
    } else {
        ta_bytes_t m = {0};
        rc = ta_msg_from_chat(pr->resp.p, pr->resp.len, &m, pr->p->conf.max_response_size, &pr->anth_usage);
        if (rc == 0) {
            ta_bytes_free(&pr->resp);
            pr->resp = m;
        } else {
            ta_bytes_free(&m);
        }
    }
    if (rc == 0)
        return false;
    ta_log(TA_LOG_WARN, "provider %llu: its answer could not be read: %s", (unsigned long long)r->provider_id,
           ta_strerror(rc));
    end(pr, 502, TA_ET_UPSTREAM);
    send_err(pr->req, 502, TA_ET_UPSTREAM, "upstream_error", NULL, "the provider's answer could not be read");
    return true;
}

/* An error answer on /v1/messages: an anthropic route's passes as it is
 * (already Anthropic's shape), an openai route's is put in that shape. */
static bool msg_error_answered(preq_t *pr, int st)
{
    if (pr->endpoint != TA_EP_MESSAGES && pr->endpoint != TA_EP_COUNT_TOKENS)
        return false;
    int et = st == 429 ? TA_ET_RATE_LIMIT : st >= 500 ? TA_ET_UPSTREAM : TA_ET_INVALID_REQUEST;
    pr->up_status = st;
    end(pr, st, et);
    pass_headers(pr);
    if (pr->routes[pr->route_i].type == TA_PROVIDER_ANTHROPIC) {
        json_t *j = json_loadb(pr->resp.p, pr->resp.len, 0, NULL);
        bool shaped = json_is_object(json_object_get(j, "error"));
        json_decref(j);
        if (shaped) {
            ta_worker_send(pr->req, st, NULL, pr->resp.p, pr->resp.len);
            return true;
        }
    }
    ta_bytes_t b = {0};
    if (ta_msg_error_from_oai(st, pr->resp.p, pr->resp.len, &b) == 0)
        ta_worker_send(pr->req, st, NULL, b.p, b.len);
    else
        send_err(pr->req, st, et, "upstream_error", NULL, "the provider answered HTTP %d", st);
    ta_bytes_free(&b);
    return true;
}

/* ---- /v1/responses (worker/responses.h) ---------------------------------------------- */

/* The body: the Responses rules (worker/responses.h), each refusal naming its param. */
static int resp_body(front_t *f, refusal_t *rf)
{
    ta_err_t e = {0};
    if (ta_resp_validate(f->body, &e) != 0)
        return refused(rf, 400, TA_ET_INVALID_REQUEST, "invalid_request_error", e.field[0] ? e.field : NULL, "%s",
                       e.message);
    return 0;
}

/* Before the hold: an anthropic route that cannot carry the request (a
 * stateful parameter, one the translator cannot express) is left out when
 * another route can; when none can, it is the client's 400, not a charge. */
static int resp_check(preq_t *pr, const json_t *body, ta_err_t *err)
{
    if (pr->endpoint != TA_EP_RESPONSES)
        return 0;
    int rc = 0, n = 0;
    bool checked = false;
    for (int i = 0; i < pr->nroutes; i++) {
        if (pr->routes[i].type == TA_PROVIDER_ANTHROPIC) {
            if (!checked) {
                json_t *ab = NULL;
                rc = ta_resp_to_anth(body, pr->routes[i].upstream_name, 0, &ab, err);
                json_decref(ab);
                checked = true;
            }
            if (rc != 0) {
                if (pr->health.trial == i + 1)
                    ta_health_done(&pr->health); /* a trial this request cannot run */
                continue;
            }
        }
        /* the routes' health slots follow their routes (ledger/health.h) */
        if (pr->health.trial == i + 1)
            pr->health.trial = (uint8_t)(n + 1);
        pr->health.slot[n] = pr->health.slot[i];
        pr->routes[n++] = pr->routes[i];
    }
    if (n == 0 && rc != 0)
        return rc;
    for (int i = n; i < pr->nroutes; i++)
        pr->health.slot[i] = 0;
    pr->nroutes = n;
    return 0;
}

static void resp_stream_free(preq_t *pr)
{
    if (pr->rs != NULL)
        ta_resp_stream_dispose(pr->rs);
    free(pr->rs);
    pr->rs = NULL;
}

/* The route's body and stream reader: an openai route gets the client's body
 * (start_route) and its events pass through, read on the side; an anthropic
 * route gets the Messages translation, its events become chat chunks
 * (pr->anth) and those the Responses events (pr->rs). */
static void resp_route(preq_t *pr, const route_info_t *r)
{
    bool anth = r->type == TA_PROVIDER_ANTHROPIC;
    resp_stream_free(pr);
    if (anth) {
        json_t *ab = NULL;
        ta_err_t e;
        free(pr->up_body);
        pr->up_body = NULL;
        if (ta_resp_to_anth(pr->body, r->upstream_name, pr->model.max_output_tokens, &ab, &e) != 0)
            return; /* checked before the hold: only -ENOMEM gets here */
        pr->up_body = json_dumps(ab, JSON_COMPACT);
        json_decref(ab);
        if (pr->stream && pr->up_body != NULL && (pr->anth = malloc(sizeof(*pr->anth))) != NULL)
            ta_anth_stream_init(pr->anth, true, r->upstream_name, 0);
    }
    if (!pr->stream || pr->up_body == NULL)
        return;
    if ((anth && pr->anth == NULL) || (pr->rs = malloc(sizeof(*pr->rs))) == NULL ||
        ta_resp_stream_init(pr->rs, anth, pr->body, r->upstream_name, 0, pr->p->conf.max_response_size) != 0) {
        free(pr->up_body); /* start_route ends it as a failed route */
        pr->up_body = NULL;
        return;
    }
    if (anth)
        pr->rs->usage_from = &pr->anth->usage;
}

/* A Responses stream's bytes: passed through (openai route) or translated
 * (anthropic route, after anth_feed); pr->sse carries the usage, the end and
 * the content count as for chat streams. */
static int resp_feed(preq_t *pr, const char *p, size_t n)
{
    ta_resp_stream_t *rs = pr->rs;
    if (pr->anth != NULL) {
        pr->scratch.len = 0;
        int rc = anth_feed(pr, p, n, &pr->scratch);
        return rc != 0 ? rc : ta_resp_stream_feed(rs, pr->scratch.p, pr->scratch.len, &pr->out);
    }
    int rc = ta_resp_stream_feed(rs, p, n, &pr->out);
    pr->sse.usage = rs->usage;
    pr->sse.done = rs->done;
    pr->sse.content_events = rs->content_events;
    pr->sse.events = rs->events;
    pr->sse.error_event = rs->failed;
    pr->sse.error_rate_limit = rs->failed_rate_limit;
    return rc;
}

/* A Response: an openai route's passes as it is (its usage read; none: the
 * estimate is charged), an anthropic route's Message becomes a chat.completion
 * and that a Response. Returns true when it answered the client (a 502: the
 * answer could not be read). */
static bool resp_answer_failed(preq_t *pr)
{
    const route_info_t *r = &pr->routes[pr->route_i];
    size_t bound = pr->p->conf.max_response_size;
    if (r->type != TA_PROVIDER_ANTHROPIC) {
        (void)ta_resp_usage(pr->resp.p, pr->resp.len, &pr->anth_usage);
        return false;
    }
    ta_bytes_t chat = {0}, out = {0};
    int rc = ta_anth_response(pr->resp.p, pr->resp.len, &chat, bound, &pr->anth_usage);
    if (rc == 0)
        rc = ta_resp_from_chat(pr->body, chat.p, chat.len, &pr->anth_usage, &out, bound);
    ta_bytes_free(&chat);
    if (rc == 0) {
        ta_bytes_free(&pr->resp);
        pr->resp = out;
        return false;
    }
    ta_bytes_free(&out);
    ta_log(TA_LOG_WARN, "provider %llu: its Messages answer could not be read: %s", (unsigned long long)r->provider_id,
           ta_strerror(rc));
    end(pr, 502, TA_ET_UPSTREAM);
    send_err(pr->req, 502, TA_ET_UPSTREAM, "upstream_error", NULL, "the provider's answer could not be read");
    return true;
}

/* /v1/responses: nothing is added to the client's body (a Response's stream
 * always ends with its usage); the prompt is estimated on its items as chat
 * messages with instructions, tools and text.format counted (worker/tokens.h),
 * bounded by the model's context window when the provider adds stored input
 * (previous_response_id, conversation, prompt); the output limit is
 * max_output_tokens, held and clamped as chat's (hold_go). */
static void resp_shape(preq_t *pr, front_t *f)
{
    json_t *body = f->body;
    if (pr->stream) {
        pr->ev.flags |= TA_EVF_STREAM;
        ta_sse_init(&pr->sse, false, 0);
    }
    const json_t *in = json_object_get(body, "input"), *ins = json_object_get(body, "instructions");
    json_t *probe = json_pack("{s:[],s:O?,s:O?,s:O?}", "messages", "tools", json_object_get(body, "tools"),
                              "tool_choice", json_object_get(body, "tool_choice"), "response_format",
                              json_object_get(body, "text"));
    json_t *msgs = json_object_get(probe, "messages");
    if (json_is_string(ins))
        json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "system", "content", ins));
    if (json_is_string(in))
        json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "user", "content", in));
    else if (json_is_array(in))
        json_array_extend(msgs, (json_t *)in);
    ta_tokens_prompt(probe, &pr->tok);
    json_decref(probe);
    if (ta_resp_stateful(body) && pr->model.context_window > pr->tok.upper)
        pr->tok.upper = pr->model.context_window;
    const json_t *mo = json_object_get(body, "max_output_tokens");
    pr->max_out = json_is_integer(mo) ? (int64_t)json_integer_value(mo) : 0;
    pr->mt_key = pr->mt_other = "max_output_tokens";
    pr->mt_both = false;
    pr->choices = 1;
    pr->extra_out = 0;
    pr->quota_id = f->q.id;
    pr->body = body;
    f->body = NULL;
}

/* The call is over (pr->call already gone). By state: a stream ends (cut if
 * the provider broke off), a drain ends with what it read, an answer not yet
 * started is sent, failed over, or refused. */
static void up_on_done(void *ctx, int err, const ta_upcall_info_t *info)
{
    preq_t *pr = ctx;
    pr->call = NULL;
    pr->up_err = err;
    ta_health_report(&pr->health, pr->route_i,
                     err == TA_UP_EABORTED                          ? TA_HEALTH_NONE
                     : err != TA_UP_OK || info->status >= 500 ? TA_HEALTH_FAIL
                                                                    : TA_HEALTH_OK,
                     err == TA_UP_OK ? info->status : 0, ta_up_err_name(err),
                     pr->call_ns[1] > pr->call_ns[0] ? (pr->call_ns[1] - pr->call_ns[0]) / 1000000 : -1);
    if (err != TA_UP_OK && err != TA_UP_EABORTED)
        ta_metrics_upstream_error(ta_metrics_upstream_kind(err));
    else if (err == TA_UP_OK && (info->status >= 500 || info->status == 429))
        ta_metrics_upstream_error(TA_METRICS_UP_STATUS);
    if (err != TA_UP_OK)
        ta_log(TA_LOG_WARN, "upstream %s (route %d of %d, provider %llu): %s", ta_up_err_name(err), pr->route_i + 1,
               pr->nroutes, (unsigned long long)pr->routes[pr->route_i].provider_id, info->msg);

    bool cut = err != TA_UP_OK || !pr->sse.done;
    if (pr->state == ST_STREAMING) { /* the client has the head: end the stream */
        /* The provider's error event reached the client: the body ends
         * cleanly after it (a client reads an error, not a broken stream),
         * recorded with the error's type. Only a stream cut without one
         * ends cut. */
        bool told = pr->sse.error_event;
        end(pr, 200, told ? (pr->sse.error_rate_limit ? TA_ET_RATE_LIMIT : TA_ET_UPSTREAM)
                     : cut ? TA_ET_UPSTREAM : TA_ET_NONE);
        pr->final = cut && !told ? FINAL_CUT : FINAL_OK; /* pr->req != NULL while streaming */
        if (!pr->sending)
            send_final(pr);
        return;
    }
    if (pr->state == ST_DRAINING) { /* drained to the end: charged what the provider reported */
        if (pr->head_sent)
            end(pr, 200, cut ? TA_ET_UPSTREAM : TA_ET_NONE);
        else
            end(pr, 499, TA_ET_ABORTED);
        return;
    }
    TA_BUG_ON(pr->state != ST_UPSTREAM);
    h2o_req_t *req = pr->req;
    int st = info->status;
    if (err == TA_UP_OK && st >= 200 && st < 300) {
        if (anth_answer_failed(pr))
            return;
        end(pr, 200, TA_ET_NONE);
        ta_worker_send(req, 200, NULL, pr->resp.p, pr->resp.len);
        return;
    }
    if (err == TA_UP_OK) {
        /* an answer from the provider that is an error */
        if ((st >= 500 || st == 429) && next_route(pr))
            return;
        if (msg_error_answered(pr, st) || anth_error_answered(pr, st))
            return;
        int out = st;
        int et = st == 429 ? TA_ET_RATE_LIMIT : st >= 500 ? TA_ET_UPSTREAM : TA_ET_INVALID_REQUEST;
        if (st >= 500 && st != 503 && st != 504)
            out = 502;
        pr->up_status = st;
        end(pr, out, et);
        pass_headers(pr);
        json_t *j = json_loadb(pr->resp.p, pr->resp.len, 0, NULL);
        bool shaped = json_is_object(json_object_get(j, "error"));
        json_decref(j);
        if (shaped && out == st) {
            ta_worker_send(req, st, NULL, pr->resp.p, pr->resp.len);
        } else {
            send_err(req, out, et, st == 429 ? "rate_limit_exceeded" : "upstream_error", NULL,
                     "the provider answered HTTP %d", st);
        }
        return;
    }
    if (ta_up_err_unsent(err) && next_route(pr))
        return;
    bool timeout = err == TA_UP_ETIMEOUT_CONNECT || err == TA_UP_ETIMEOUT_FIRST_BYTE || err == TA_UP_ETIMEOUT_IDLE ||
                   err == TA_UP_ETIMEOUT_TOTAL;
    int out = timeout ? 504 : 502, et = timeout ? TA_ET_TIMEOUT : TA_ET_UPSTREAM;
    end(pr, out, et);
    send_err(req, out, et, timeout ? "upstream_timeout" : "upstream_unavailable", NULL,
             "the provider could not be reached (%s)", ta_up_err_name(err));
}

static const char *ep_suffix(int ep)
{
    switch (ep) {
    case TA_EP_CHAT: return "/chat/completions";
    case TA_EP_COMPLETIONS: return "/completions";
    case TA_EP_EMBEDDINGS: return "/embeddings";
    case TA_EP_MESSAGES: return "/chat/completions"; /* translated (worker/messages.h) */
    case TA_EP_RESPONSES: return "/responses";
    default: return "/models";
    }
}

static int ensure_upstream(ta_proxy_t *p)
{
    if (p->up != NULL)
        return 0;
    ta_upstream_opts_t o = {.engine = p->conf.upstream_engine,
                            .max_connects = p->conf.upstream_max_connections,
                            .ca_file = p->conf.upstream_ca_file,
                            .getaddr = &ta_worker_context(p->w)->receivers.hostinfo_getaddr};
    h2o_loop_t *loop = ta_worker_loop(p->w);
    int rc = ta_upstream_create(&p->up, loop, &o);
    if (rc != 0)
        return rc;
    h2o_timeout_init(loop, &p->drain_timeout, (uint64_t)p->conf.stream_drain_timeout_ms);
    p->drain_timeout_init = true;
    return 0;
}

/* A provider's API key in clear. Unsealing (AES-256-GCM with a fresh cipher
 * context) cost ~1.6 us a request (perf: 3.4% of a worker's samples under
 * the json bench), so the clear keys of the last KEY_CACHE providers used
 * are kept, each with the exact sealed bytes it came from: a changed key
 * (new nonce and ciphertext) misses and is unsealed again. They stay in this
 * process's memory only, which holds the master key that opens every sealed
 * key anyway, and are wiped by ta_proxy_destroy(). */
#define KEY_CACHE 16
struct key_cache {
    uint64_t provider_id;
    uint16_t sealed_len; /* 0: unused */
    int kl;
    uint8_t sealed[MEMBER_SIZE(ta_provider_t, key_sealed)];
    char key[MEMBER_SIZE(ta_provider_t, key_sealed)]; /* the clear key is shorter than its sealed form */
};

static int provider_key(ta_proxy_t *p, const route_info_t *r, char *key, size_t cap)
{
    if (r->key_sealed_len == 0)
        return 0;
    if (p->conf.unseal == NULL)
        return TA_ECRYPTO;
    if (p->keys == NULL)
        p->keys = calloc(KEY_CACHE, sizeof(*p->keys)); /* NULL: unseal every time */
    for (int i = 0; p->keys != NULL && i < KEY_CACHE; i++) {
        const struct key_cache *e = &p->keys[i];
        if (e->sealed_len == r->key_sealed_len && e->provider_id == r->provider_id && (size_t)e->kl < cap &&
            memcmp(e->sealed, r->key_sealed, r->key_sealed_len) == 0) {
            memcpy(key, e->key, (size_t)e->kl);
            return e->kl;
        }
    }
    int kl = p->conf.unseal(p->conf.master_key, r->key_sealed, r->key_sealed_len, key, cap);
    if (kl > 0 && p->keys != NULL && (size_t)kl < sizeof(p->keys[0].key) &&
        r->key_sealed_len <= sizeof(p->keys[0].sealed)) {
        struct key_cache *e = &p->keys[p->key_next++ % KEY_CACHE];
        explicit_bzero(e, sizeof(*e));
        e->provider_id = r->provider_id;
        e->sealed_len = r->key_sealed_len;
        memcpy(e->sealed, r->key_sealed, r->key_sealed_len);
        memcpy(e->key, key, (size_t)kl);
        e->kl = kl;
    }
    return kl;
}

static void start_route(preq_t *pr)
{
    ta_proxy_t *p = pr->p;
    route_info_t *r = &pr->routes[pr->route_i];
    /* The client's bytes go upstream as they came when nothing in them has to
     * change (the route keeps the model's name, nothing was added): a compact
     * re-dump cost ~2 us a request. Copied, because the upstream call may
     * outlive the h2o request (drain). A NUL byte (jansson lets one follow a
     * number) would cut the body short: re-dumped then. */
    const char *cur = json_string_value(json_object_get(pr->body, "model"));
    free(pr->up_body);
    pr->up_body = NULL;
    if (!pr->body_edited && pr->req != NULL && cur != NULL && strcmp(cur, r->upstream_name) == 0 &&
        memchr(pr->req->entity.base, '\0', pr->req->entity.len) == NULL) {
        if ((pr->up_body = malloc(pr->req->entity.len + 1)) != NULL) {
            memcpy(pr->up_body, pr->req->entity.base, pr->req->entity.len);
            pr->up_body[pr->req->entity.len] = '\0';
        }
    } else {
        json_object_set_new(pr->body, "model", json_string(r->upstream_name));
        pr->body_edited = true;
        pr->up_body = json_dumps(pr->body, JSON_COMPACT);
    }
    copy_str(pr->ev.served_model, sizeof(pr->ev.served_model), r->upstream_name);
    pr->ev.provider_id = r->provider_id;
    pr->call_ns[0] = ta_mono_ns();
    pr->call_ns[1] = 0;
    anth_route(pr, r);

    char url[MEMBER_SIZE(route_info_t, base_url) + 32]; /* + the longest path */
    size_t bl = strlen(r->base_url);
    while (bl > 0 && r->base_url[bl - 1] == '/')
        bl--;
    const char *suffix = r->type != TA_PROVIDER_ANTHROPIC       ? ep_suffix(pr->endpoint)
                         : pr->endpoint == TA_EP_COUNT_TOKENS ? "/v1/messages/count_tokens"
                                                              : "/v1/messages";
    size_t sl = strlen(suffix); /* < 32: the url fits (no printf family per request) */
    memcpy(url, r->base_url, bl);
    memcpy(url + bl, suffix, sl + 1);

    char key[MEMBER_SIZE(ta_provider_t, key_sealed)], auth[sizeof(key) + 32];
    int kl = provider_key(p, r, key, sizeof(key));
    if (kl < 0 || pr->up_body == NULL) {
        ta_log(TA_LOG_ERROR, "provider %llu: cannot unseal its API key: %s", (unsigned long long)r->provider_id,
               ta_strerror(kl));
        ta_upcall_info_t info = {.msg = "provider key unavailable"};
        pr->call = NULL;
        up_on_done(pr, TA_UP_ECONNECT, &info);
        return;
    }
    key[kl] = '\0';
    const char *aname = r->type == TA_PROVIDER_ANTHROPIC ? "x-api-key: " : "Authorization: Bearer ";
    size_t al = strlen(aname); /* < 32: key and name fit */
    memcpy(auth, aname, al);
    memcpy(auth + al, key, (size_t)kl + 1);
    const char *hdrs[] = {"Content-Type: application/json", auth,
                          pr->stream ? "Accept: text/event-stream" : "Accept: application/json"};
    ta_upcall_spec_t spec = {
        .url = url,
        .headers = hdrs,
        .nheaders = kl > 0 ? 3 : 0,
        .body = pr->up_body,
        .body_len = strlen(pr->up_body),
        .connect_timeout_ms = r->connect_timeout_ms > 0 ? r->connect_timeout_ms : p->default_connect_timeout_ms,
        .total_timeout_ms = (r->timeout_s > 0 ? r->timeout_s : p->default_timeout_s) * 1000,
        .ctx = pr,
        .on_header = up_on_header,
        .on_head = up_on_head,
        .on_data = up_on_data,
        .on_done = up_on_done,
    };
    if (kl == 0) {
        hdrs[0] = "Content-Type: application/json";
        spec.headers = hdrs;
        spec.nheaders = 1;
    }
    const char *ahdrs[4];
    char aver[64];
    if (r->type == TA_PROVIDER_ANTHROPIC) {
        memcpy(ahdrs, spec.headers, spec.nheaders * sizeof(*ahdrs));
        snprintf(aver, sizeof(aver), "anthropic-version: %s", pr->anth_version[0] ? pr->anth_version : TA_ANTH_VERSION);
        ahdrs[spec.nheaders++] = aver;
        spec.headers = ahdrs;
    }
    int rc = ensure_upstream(p);
    if (rc == 0)
        rc = ta_upcall_start(p->up, &spec, &pr->call);
    explicit_bzero(key, sizeof(key)); /* curl copied the header line */
    explicit_bzero(auth, sizeof(auth));
    if (rc != 0) {
        ta_upcall_info_t info = {.msg = "cannot start the upstream call"};
        pr->call = NULL;
        up_on_done(pr, TA_UP_EOTHER, &info);
    }
}

/* ---- GET endpoints ------------------------------------------------------------------- */

static bool group_has(const ta_group_t *g, uint64_t model_id)
{
    for (uint16_t i = 0; i < g->nmodels; i++)
        if (g->model_ids[i] == model_id)
            return true;
    return false;
}

static void answer_models(ta_proxy_t *p, h2o_req_t *req, MDB_txn *txn, const ta_group_t *g, const char *one,
                          size_t one_len)
{
    json_t *data = json_array();
    ta_model_t *m = malloc(sizeof(*m));
    for (uint16_t i = 0; m != NULL && i < g->nmodels; i++) {
        if (ta_rec_get(p->conf.store, txn, &ta_desc_model, g->model_ids[i], m) != 0 || !m->is_active)
            continue;
        if (one != NULL && !(strlen(m->name) == one_len && memcmp(m->name, one, one_len) == 0))
            continue;
        if (anth_shaped(req)) {
            char t[32];
            json_array_append_new(data, json_pack("{s:s,s:s,s:s,s:s}", "type", "model", "id", m->name, "display_name",
                                                  m->name, "created_at", ta_time_format(m->created_at, t)));
        } else {
            json_array_append_new(data, json_pack("{s:s,s:s,s:I,s:s}", "id", m->name, "object", "model", "created",
                                                  (json_int_t)m->created_at, "owned_by", "tokenaudit"));
        }
    }
    free(m);
    if (one != NULL) {
        if (json_array_size(data) == 0) {
            json_decref(data);
            send_err(req, 404, TA_ET_NOT_FOUND, "model_not_found", "model", "The model '%.*s' does not exist",
                     (int)one_len, one);
            return;
        }
        char *s = json_dumps(json_array_get(data, 0), JSON_COMPACT);
        ta_worker_send(req, 200, NULL, s, strlen(s));
        free(s);
        json_decref(data);
        return;
    }
    size_t nd = json_array_size(data);
    json_t *j = !anth_shaped(req) ? json_pack("{s:s,s:o}", "object", "list", "data", data)
                                  : json_pack("{s:o,s:b,s:O,s:O}", "data", data, "has_more", 0, "first_id",
                                              nd > 0 ? json_object_get(json_array_get(data, 0), "id") : json_null(),
                                              "last_id",
                                              nd > 0 ? json_object_get(json_array_get(data, nd - 1), "id") : json_null());
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    ta_worker_send(req, 200, NULL, s, strlen(s));
    free(s);
}

static json_t *nano_json(ta_nano_t v, bool null_if_zero)
{
    char b[TA_NANO_STRLEN];
    if (null_if_zero && v == 0)
        return json_null();
    return json_string(ta_nano_format(v, b));
}

/* GET /v1/usage: the quota's usage as ta_quota_usage() reads it, the one
 * reading the admin API shows too (a period that ended reads as zero used;
 * what running requests hold stays). */
static void answer_usage(ta_proxy_t *p, h2o_req_t *req, MDB_txn *txn, const ta_quota_t *q)
{
    ta_balance_t b;
    int64_t ps = 0, pe = INT64_MAX;
    memset(&b, 0, sizeof(b));
    if (ta_quota_usage(p->conf.store, txn, q, ta_now_s(), &b, &ps, &pe) != 0) {
        send_err(req, 503, TA_ET_INTERNAL, "ledger_unavailable", NULL, "The quota's usage cannot be read.");
        return;
    }
    char t1[32], t2[32];
    static const char *const periods[] = {"day", "week", "month", "none"};
    json_t *j = json_pack(
        "{s:s,s:I,s:s,s:s,s:o,s:o,s:o,s:o,s:I,s:I,s:I,s:I,s:o,s:o,s:o,s:o,s:o}", "object", "usage", "quota_id",
        (json_int_t)q->id, "key_prefix", q->key_prefix, "period",
        periods[q->limits.period < 4 ? q->limits.period : 3], "period_start",
        q->limits.period == TA_PERIOD_NONE ? json_null() : json_string(ta_time_format(ps, t1)), "period_end",
        pe == INT64_MAX ? json_null() : json_string(ta_time_format(pe, t2)), "cost_used", nano_json(b.cost_used, false),
        "cost_held", nano_json(b.cost_held, false), "tokens_used", (json_int_t)b.tokens_used, "requests_used",
        (json_int_t)b.requests_used, "in_flight", (json_int_t)b.in_flight, "tokens_held", (json_int_t)b.tokens_held,
        "cost_limit", nano_json(q->limits.cost_limit, true), "token_limit",
        q->limits.token_limit ? json_integer(q->limits.token_limit) : json_null(), "request_limit",
        q->limits.request_limit ? json_integer(q->limits.request_limit) : json_null(), "rpm",
        q->limits.rpm ? json_integer(q->limits.rpm) : json_null(), "tpm",
        q->limits.tpm ? json_integer(q->limits.tpm) : json_null());
    json_object_set_new(j, "expires_at", q->expires_at ? json_string(ta_time_format(q->expires_at, t1)) : json_null());
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    ta_worker_send(req, 200, NULL, s, strlen(s));
    free(s);
}

/* ---- the body ---------------------------------------------------------------------- */

static int validate(int ep, json_t *body, const char **param, char *msg, size_t cap)
{
    json_t *v;
    *param = NULL;
    if (!json_is_object(body)) {
        snprintf(msg, cap, "the request body must be a JSON object");
        return -1;
    }
    if (!json_is_string(json_object_get(body, "model")) || json_string_length(json_object_get(body, "model")) == 0) {
        *param = "model";
        snprintf(msg, cap, "'model' is required and must be a string");
        return -1;
    }
    if (ep == TA_EP_CHAT) {
        v = json_object_get(body, "messages");
        if (!json_is_array(v) || json_array_size(v) == 0) {
            *param = "messages";
            snprintf(msg, cap, "'messages' is required and must be a non-empty array");
            return -1;
        }
        size_t i;
        json_t *m;
        json_array_foreach(v, i, m) {
            if (!json_is_object(m) || !json_is_string(json_object_get(m, "role"))) {
                *param = "messages";
                snprintf(msg, cap, "messages[%zu] must be an object with a 'role'", i);
                return -1;
            }
        }
    }
    if (ep == TA_EP_EMBEDDINGS) {
        v = json_object_get(body, "input");
        if (v == NULL || (!json_is_string(v) && !json_is_array(v)) || (json_is_array(v) && json_array_size(v) == 0)) {
            *param = "input";
            snprintf(msg, cap, "'input' is required: a string or a non-empty array");
            return -1;
        }
    }
    if (ep == TA_EP_COMPLETIONS) {
        v = json_object_get(body, "prompt");
        if (v == NULL || (!json_is_string(v) && !json_is_array(v))) {
            *param = "prompt";
            snprintf(msg, cap, "'prompt' is required: a string or an array");
            return -1;
        }
    }
    v = json_object_get(body, "stream");
    if (v != NULL && !json_is_boolean(v) && !json_is_null(v)) {
        *param = "stream";
        snprintf(msg, cap, "'stream' must be a boolean");
        return -1;
    }
    if (json_is_true(v) && ep == TA_EP_EMBEDDINGS) {
        *param = "stream";
        snprintf(msg, cap, "embeddings cannot be streamed");
        return -1;
    }
    static const char *const ints[] = {"max_tokens", "max_completion_tokens"};
    for (size_t i = 0; i < TA_ARRAY_SIZE(ints); i++) {
        v = json_object_get(body, ints[i]);
        if (v != NULL && !json_is_null(v) && (!json_is_integer(v) || json_integer_value(v) < 1)) {
            *param = ints[i];
            snprintf(msg, cap, "'%s' must be a positive integer", ints[i]);
            return -1;
        }
    }
    /* Parameters that multiply what the upstream generates and bills are
     * bounded here and held in full (output_bounds), never passed unchecked. */
    static const struct {
        const char *name;
        int64_t max;
    } mults[] = {{"n", TA_MAX_CHOICES}, {"best_of", TA_MAX_BEST_OF}};
    int64_t mult_v[TA_ARRAY_SIZE(mults)] = {1, 1};
    for (size_t i = 0; i < TA_ARRAY_SIZE(mults); i++) {
        v = json_object_get(body, mults[i].name);
        if (v == NULL || json_is_null(v) || ep == TA_EP_EMBEDDINGS)
            continue;
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > mults[i].max) {
            *param = mults[i].name;
            snprintf(msg, cap, "'%s' must be an integer from 1 to %lld", mults[i].name, (long long)mults[i].max);
            return -1;
        }
        mult_v[i] = (int64_t)json_integer_value(v);
    }
    if (json_object_get(body, "best_of") != NULL && mult_v[1] < mult_v[0]) {
        *param = "best_of";
        snprintf(msg, cap, "'best_of' must be at least 'n'");
        return -1;
    }
    v = json_object_get(body, "prediction");
    if (v != NULL && !json_is_null(v) && ep != TA_EP_EMBEDDINGS &&
        (!json_is_object(v) || (!json_is_string(json_object_get(v, "content")) &&
                                !json_is_array(json_object_get(v, "content"))))) {
        *param = "prediction";
        snprintf(msg, cap, "'prediction' must be an object whose 'content' is a string or an array of text parts");
        return -1;
    }
    v = json_object_get(body, "stream_options");
    if (v != NULL && !json_is_null(v) && !json_is_object(v)) {
        *param = "stream_options";
        snprintf(msg, cap, "'stream_options' must be an object");
        return -1;
    }
    return 0;
}

/* What the upstream may generate and bill for this body (validated): the
 * output limit per choice, which field carries it, how many choices, and the
 * output billed beyond the limit. The hold covers all of it (hold_one). */
static void output_bounds(preq_t *pr, const json_t *body)
{
    const json_t *mc = json_object_get(body, "max_completion_tokens"), *mt = json_object_get(body, "max_tokens");
    bool has_mc = json_is_integer(mc), has_mt = json_is_integer(mt);
    /* legacy completions know max_tokens only */
    bool use_mc = pr->endpoint == TA_EP_CHAT ? has_mc || json_object_get(body, "max_completion_tokens") != NULL : false;
    pr->mt_key = use_mc ? "max_completion_tokens" : "max_tokens";
    pr->mt_other = use_mc ? "max_tokens" : "max_completion_tokens";
    pr->mt_both = json_object_get(body, pr->mt_other) != NULL;
    int64_t a = has_mc ? (int64_t)json_integer_value(mc) : 0, b = has_mt ? (int64_t)json_integer_value(mt) : 0;
    pr->max_out = a > 0 && (b == 0 || a < b) ? a : b;

    int64_t n = json_is_integer(json_object_get(body, "n")) ? (int64_t)json_integer_value(json_object_get(body, "n")) : 1;
    const json_t *bo = json_object_get(body, "best_of");
    if (json_is_integer(bo) && json_integer_value(bo) > n)
        n = (int64_t)json_integer_value(bo);
    pr->choices = (int32_t)(n < 1 ? 1 : n); /* validate() bounds both */

    /* Predicted outputs: prediction tokens the answer does not use are billed
     * as output, beyond the limit. A BPE token covers at least one byte, so the
     * bytes of the prediction bound them. */
    pr->extra_out = 0;
    const json_t *pred = json_object_get(body, "prediction");
    if (pred != NULL && !json_is_null(pred)) {
        ta_tokens_t t;
        json_t *probe = json_pack("{s:[{s:s,s:O}]}", "messages", "role", "assistant", "content",
                                  json_object_get(pred, "content"));
        ta_tokens_prompt(probe, &t);
        json_decref(probe);
        pr->extra_out = t.text_bytes;
    }
}

static int hold_status(int refusal, int *et, const char **code)
{
    switch (refusal) {
    case TA_HOLD_EXPIRED:
    case TA_HOLD_INACTIVE:
        *et = TA_ET_PERMISSION;
        *code = "quota_inactive";
        return 403;
    case TA_HOLD_UNPRICED:
        *et = TA_ET_PERMISSION;
        *code = "model_not_allowed";
        return 403;
    case TA_HOLD_COST:
    case TA_HOLD_TOKENS:
    case TA_HOLD_REQUESTS:
        *et = TA_ET_INSUFFICIENT_QUOTA;
        *code = "insufficient_quota";
        return 429;
    default:
        *et = TA_ET_RATE_LIMIT;
        *code = "rate_limit_exceeded";
        return 429;
    }
}

static const char *refusal_msg(int r)
{
    switch (r) {
    case TA_HOLD_EXPIRED: return "This quota has expired.";
    case TA_HOLD_INACTIVE: return "This quota is not active.";
    case TA_HOLD_UNPRICED: return "This model has no prices and the quota has a cost limit.";
    case TA_HOLD_COST: return "You exceeded your current quota: the cost limit of this period is reached.";
    case TA_HOLD_TOKENS: return "You exceeded your current quota: the token limit of this period is reached.";
    case TA_HOLD_REQUESTS: return "You exceeded your current quota: the request limit of this period is reached.";
    case TA_HOLD_RPM: return "Rate limit reached for requests per minute.";
    case TA_HOLD_TPM: return "Rate limit reached for tokens per minute.";
    default: return "Too many requests in flight for this key.";
    }
}

/* ---- the hold ----------------------------------------------------------------------------------
 * A hold in its own LMDB write transaction cost ~7 us (the commit writes its
 * pages with pwrite) plus waits for the write lock that billing and the other
 * workers take, for every request. The requests one loop pass brings are held
 * together instead: each in a nested transaction of one write transaction (a
 * refusal or an error undoes its own part only, as its own transaction did),
 * committed once at the end of the pass and before any of them goes
 * upstream. A pass with one request, or ledger_writemap (LMDB has no nested
 * transactions then), holds each in its own transaction as before. A client
 * that leaves while its request waits for the end of the pass is noticed
 * after the commit (pr->req == NULL) and the hold released through the usual
 * event (499, aborted). */

enum { HOLD_OK, HOLD_REFUSED, HOLD_ERROR };

/* Nothing held: the request ends as a 500 (recorded without a hold). */
static void hold_fail(preq_t *pr)
{
    refusal_t rf = {0};
    refused(&rf, 500, TA_ET_INTERNAL, "internal_error", NULL, "The gateway failed to handle the request.");
    refuse(pr->p, pr->req, NULL, pr, &rf);
}

static void hold_refused(preq_t *pr)
{
    const ta_hold_res_t *hr = &pr->hr;
    refusal_t rf = {0};
    int et;
    const char *code;
    int status = hold_status(hr->refusal, &et, &code);
    refused(&rf, status, et, code, NULL, "%s", refusal_msg(hr->refusal));
    if (status == 429) {
        rf.retry_after_s = (int)(hr->retry_after_ms > 0 ? (hr->retry_after_ms + 999) / 1000 : 1);
        rf.limits = hr;
    }
    refuse(pr->p, pr->req, NULL, pr, &rf);
}

static bool no_output(int ep) { return ep == TA_EP_EMBEDDINGS || ep == TA_EP_COUNT_TOKENS; }

/* pr's hold inside txn (quota re-read there); the result in pr->hr */
static int hold_one(preq_t *pr, MDB_txn *txn)
{
    ta_proxy_t *p = pr->p;
    ta_quota_t q;
    memset(&pr->hr, 0, sizeof(pr->hr));
    if (ta_rec_get(p->conf.store, txn, &ta_desc_quota, pr->quota_id, &q) != 0)
        return HOLD_ERROR;
    ta_hold_req_t hq = {
        .request_id = pr->ev.request_id,
        .worker_pid = p->pid,
        .quota = &q,
        .model = &pr->model,
        .prompt_tokens_est = pr->tok.estimate,
        .prompt_tokens_max = pr->tok.upper,
        .max_output_tokens = no_output(pr->endpoint) ? 0 : pr->max_out,
        .output_choices = pr->choices,
        .no_output = no_output(pr->endpoint),
        .extra_output_tokens = pr->extra_out,
        .reserve = p->conf.reserve,
        .timezone = p->timezone,
        .now_ns = ta_now_ns(),
    };
    if (ta_quota_hold(p->conf.store, txn, &hq, &pr->hr) != 0)
        return HOLD_ERROR;
    return pr->hr.refusal == TA_HOLD_OK ? HOLD_OK : HOLD_REFUSED;
}

/* The hold is committed: upstream. */
static void hold_go(preq_t *pr)
{
    ta_event_t *ev = &pr->ev;
    const ta_hold_res_t *hr = &pr->hr;
    ev->flags |= TA_EVF_HOLD;
    ta_metrics_holds_add(1);
    ev->hold_period_start = hr->period_start;
    ev->held_cost = hr->held_cost;
    ev->held_tokens = hr->held_tokens;
    ev->tpm_estimate = hr->tpm_estimate;
    pr->state = ST_UPSTREAM;
    if (pr->req == NULL) {
        pr->ev.flags |= TA_EVF_CLIENT_GONE;
        end(pr, 499, TA_ET_ABORTED);
        return;
    }
    ratelimit_headers(pr->req, hr);
    /* The upstream sees exactly one output limit, the one the hold covers
     * (ledger/quota.h): a second field or a larger value would let it bill
     * more than was held. */
    if (!no_output(pr->endpoint) && hr->max_output_tokens > 0) {
        if (pr->mt_both)
            json_object_del(pr->body, pr->mt_other);
        if (pr->mt_both || hr->max_output_tokens != pr->max_out) {
            json_object_set_new(pr->body, pr->mt_key, json_integer(hr->max_output_tokens));
            pr->body_edited = true;
        }
    }
    start_route(pr);
}

static void run_holds(h2o_timeout_entry_t *e)
{
    ta_proxy_t *p = H2O_STRUCT_FROM_MEMBER(ta_proxy_t, hold_entry, e);
    ta_store_t *st = p->conf.store;
    preq_t *list = p->hold_head, *ok = NULL, **ok_tail = &ok, *pr, *next;
    p->hold_head = NULL;
    p->hold_tail = &p->hold_head;
    MDB_env *env = ta_store_env(st, TA_ENV_LEDGER);
    unsigned envf = 0;
    MDB_txn *parent = NULL;
    bool broken = false;
    if (list != NULL && list->hold_next != NULL && mdb_env_get_flags(env, &envf) == 0 && !(envf & MDB_WRITEMAP))
        (void)ta_txn_begin(st, TA_ENV_LEDGER, true, &parent); /* failed: one transaction each */
    for (pr = list; pr != NULL; pr = next) {
        next = pr->hold_next;
        pr->hold_next = NULL;
        pr->state = ST_HOLDING;
        MDB_txn *txn = NULL;
        int r = HOLD_ERROR;
        if (parent != NULL ? mdb_txn_begin(env, parent, 0, &txn) == 0
                           : ta_txn_begin(st, TA_ENV_LEDGER, true, &txn) == 0) {
            r = hold_one(pr, txn);
            if (r != HOLD_OK) {
                ta_txn_abort(txn);
            } else if (ta_txn_commit(txn) != 0) {
                r = HOLD_ERROR;
                broken = parent != NULL; /* a failed nested commit may leave the parent half merged */
            }
        }
        if (r == HOLD_REFUSED) {
            hold_refused(pr);
        } else if (r == HOLD_ERROR) {
            hold_fail(pr);
        } else if (parent == NULL) {
            hold_go(pr);
        } else {
            *ok_tail = pr;
            ok_tail = &pr->hold_next;
        }
    }
    if (parent == NULL)
        return;
    if (broken) {
        ta_txn_abort(parent);
    } else if (ta_txn_commit(parent) == 0) {
        for (pr = ok; pr != NULL; pr = next) {
            next = pr->hold_next;
            pr->hold_next = NULL;
            hold_go(pr);
        }
        return;
    }
    for (pr = ok; pr != NULL; pr = next) { /* nothing of the batch was committed */
        next = pr->hold_next;
        pr->hold_next = NULL;
        hold_fail(pr);
    }
}

static void queue_hold(preq_t *pr)
{
    ta_proxy_t *p = pr->p;
    h2o_loop_t *loop = ta_worker_loop(p->w);
    if (!p->hold_timeout_init) {
        h2o_timeout_init(loop, &p->hold_timeout, 0);
        p->hold_entry.cb = run_holds;
        p->hold_timeout_init = true;
    }
    pr->state = ST_QUEUED;
    pr->hold_next = NULL;
    *p->hold_tail = pr;
    p->hold_tail = &pr->hold_next;
    if (!h2o_timeout_is_linked(&p->hold_entry))
        h2o_timeout_link(loop, &p->hold_timeout, &p->hold_entry);
}

/* on_req's read transaction is kept between requests (mdb_txn_reset, then
 * mdb_txn_renew): a fresh one malloc'd ~1 KB and took a reader slot under
 * LMDB's reader mutex every request. A reset one pins no pages. */
static int read_begin(ta_proxy_t *p, MDB_txn **txn)
{
    MDB_txn *t = p->rtxn;
    p->rtxn = NULL;
    if (t != NULL) {
        if (mdb_txn_renew(t) == 0) {
            *txn = t;
            return 0;
        }
        mdb_txn_abort(t); /* e.g. another process grew the map: ta_txn_begin adopts it */
    }
    return ta_txn_begin(p->conf.store, TA_ENV_LEDGER, false, txn);
}

static void read_done(ta_proxy_t *p, MDB_txn *txn)
{
    if (txn == NULL)
        return;
    if (p->rtxn != NULL) {
        mdb_txn_abort(txn);
        return;
    }
    mdb_txn_reset(txn);
    p->rtxn = txn;
}

static int endpoint_of(h2o_iovec_t path, const char **model_id)
{
    *model_id = NULL;
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/v1/chat/completions")))
        return TA_EP_CHAT;
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/v1/completions")))
        return TA_EP_COMPLETIONS;
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/v1/embeddings")))
        return TA_EP_EMBEDDINGS;
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/v1/models")))
        return TA_EP_MODELS;
    if (path.len > 11 && memcmp(path.base, "/v1/models/", 11) == 0) {
        *model_id = path.base + 11;
        return TA_EP_MODELS;
    }
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/v1/usage")))
        return TA_EP_USAGE;
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/v1/messages")))
        return TA_EP_MESSAGES;
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/v1/messages/count_tokens")))
        return TA_EP_COUNT_TOKENS;
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/v1/responses")))
        return TA_EP_RESPONSES;
    return 0;
}


/* ---- the front -------------------------------------------------------------------------
 * Each step returns 0, or -1 with the refusal filled in; on_req answers it. */

/* The endpoint and its method. */
static int front_route(h2o_req_t *req, front_t *f, refusal_t *rf)
{
    f->ep = endpoint_of(req->path_normalized, &f->model_id);
    if (f->ep == 0)
        return refused(rf, 404, TA_ET_NOT_FOUND, "unknown_url", NULL, "Unknown request URL: %.*s",
                       (int)req->path_normalized.len, req->path_normalized.base);
    if (f->model_id != NULL)
        f->model_id_len = req->path_normalized.len - (size_t)(f->model_id - req->path_normalized.base);
    bool get = f->ep == TA_EP_MODELS || f->ep == TA_EP_USAGE;
    if (!h2o_memis(req->method.base, req->method.len, get ? "GET" : "POST", get ? 3 : 4)) {
        rf->allow = get ? "GET" : "POST";
        return refused(rf, 405, TA_ET_INVALID_REQUEST, "method_not_allowed", NULL, "Method %.*s is not allowed here",
                       (int)req->method.len, req->method.base);
    }
    return 0;
}

/* Events wait for room in the ring: take nothing new until they are out. */
static int front_admit(ta_proxy_t *p, refusal_t *rf)
{
    if (p->conf.ring == NULL || !ta_ring_has_pending(p->conf.ring))
        return 0;
    rf->retry_after_s = 1;
    return refused(rf, 503, TA_ET_OVERLOADED, "overloaded", NULL, "The gateway is busy; retry shortly.");
}

/* Who is calling: the API key (ledger/apikey.h, the rule /api uses too) ->
 * its quota -> its user, active; the caller's group. */
static int front_auth(ta_proxy_t *p, h2o_req_t *req, MDB_txn *txn, front_t *f, refusal_t *rf)
{
    ta_store_t *st = p->conf.store;
    const char *key = NULL;
    size_t klen = 0;
    ssize_t ai = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    ssize_t xi = ai == -1 ? h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-api-key"), -1) : -1;
    if (xi != -1) { /* Anthropic's clients: the key alone, spaces around it ignored as for Bearer */
        h2o_iovec_t v = req->headers.entries[xi].value;
        while (v.len > 0 && (v.base[0] == ' ' || v.base[0] == '\t')) {
            v.base++;
            v.len--;
        }
        while (v.len > 0 && (v.base[v.len - 1] == ' ' || v.base[v.len - 1] == '\t'))
            v.len--;
        key = v.base;
        klen = v.len;
    } else if (ai == -1 || !ta_bearer_token(req->headers.entries[ai].value.base, req->headers.entries[ai].value.len,
                                            &key, &klen)) {
        return refused(rf, 401, TA_ET_AUTH, "invalid_api_key", NULL,
                       "You didn't provide an API key. Use 'Authorization: Bearer sk-...' (or 'x-api-key').");
    }
    uint8_t hash[32];
    ta_keyrec_t kr;
    if (!ta_apikey_wellformed(key, klen))
        return refused(rf, 401, TA_ET_AUTH, "invalid_api_key", NULL, "Incorrect API key provided.");
    ta_apikey_hash_with(p->hasher, key, klen, hash);
    if (ta_rec_get_k(st, txn, &ta_desc_keyrec, TA_DB_KEYS, hash, sizeof(hash), &kr) != 0 ||
        ta_rec_get(st, txn, &ta_desc_quota, kr.quota_id, &f->q) != 0)
        return refused(rf, 401, TA_ET_AUTH, "invalid_api_key", NULL, "Incorrect API key provided.");

    const ta_quota_t *q = &f->q;
    ta_event_t *ev = &f->ev;
    f->caller = true;
    ev->endpoint = (uint8_t)f->ep;
    ev->user_id = q->user_id;
    ev->quota_id = q->id;
    copy_str(ev->key_prefix, sizeof(ev->key_prefix), q->key_prefix);
    ta_worker_request_id(req, ev->request_id, NULL);
    ta_worker_client_ip(req, ev->client_ip, sizeof(ev->client_ip));
    ev->bytes_in = (int64_t)req->entity.len;

    ta_user_t *user = &p->scratch->user;
    f->grp = &p->scratch->grp;
    bool active = ta_rec_get(st, txn, &ta_desc_user, q->user_id, user) == 0 && user->is_active && q->is_active;
    if (!active)
        return refused(rf, 403, TA_ET_PERMISSION, "quota_inactive", NULL, "This API key's quota is not active.");
    if (ta_rec_get(st, txn, &ta_desc_group, q->group_id, f->grp) != 0)
        memset(f->grp, 0, sizeof(*f->grp));
    return 0;
}

/* The body: its size, JSON, and the endpoint's rules (validate). */
static int front_body(ta_proxy_t *p, h2o_req_t *req, front_t *f, refusal_t *rf)
{
    if (req->entity.len > p->conf.max_body_size)
        return refused(rf, 413, TA_ET_INVALID_REQUEST, "request_too_large", NULL,
                       "The request body is larger than the limit of %zu bytes.", p->conf.max_body_size);
    json_error_t jerr;
    f->body = json_loadb(req->entity.base, req->entity.len, JSON_REJECT_DUPLICATES, &jerr);
    if (f->body == NULL)
        return refused(rf, 400, TA_ET_INVALID_REQUEST, "invalid_json", NULL,
                       "We could not parse the JSON body of your request: %s", jerr.text);
    const char *param = NULL;
    char msg[256];
    if (f->ep == TA_EP_MESSAGES || f->ep == TA_EP_COUNT_TOKENS) {
        ta_err_t e = {0};
        if (ta_msg_validate(f->body, f->ep == TA_EP_COUNT_TOKENS, &e) != 0)
            return refused(rf, 400, TA_ET_INVALID_REQUEST, "invalid_request_error", e.field[0] ? e.field : NULL, "%s",
                           e.message);
        return 0;
    }
    if (f->ep == TA_EP_RESPONSES)
        return resp_body(f, rf);
    if (validate(f->ep, f->body, &param, msg, sizeof(msg)) != 0)
        return refused(rf, 400, TA_ET_INVALID_REQUEST, "invalid_request_error", param, "%s", msg);
    return 0;
}

/* The capability an endpoint needs of a model (schema.h TA_CAP_*): a model
 * without it is the client's 400, refused before anything is held. */
static int model_capable(const ta_model_t *m, int ep, refusal_t *rf)
{
    uint32_t need = ep == TA_EP_EMBEDDINGS ? TA_CAP_EMBEDDINGS
                    : ep == TA_EP_CHAT || ep == TA_EP_MESSAGES || ep == TA_EP_COUNT_TOKENS || ep == TA_EP_RESPONSES
                        ? TA_CAP_CHAT
                        : 0;
    if ((m->capabilities & need) == need)
        return 0;
    return refused(rf, 400, TA_ET_INVALID_REQUEST, "model_not_supported", "model",
                   "The model '%s' does not support %s (it lacks the '%s' capability).", m->name,
                   ep == TA_EP_EMBEDDINGS ? "embeddings" : ep == TA_EP_RESPONSES ? "responses" : "chat completions",
                   ep == TA_EP_EMBEDDINGS ? "embeddings" : "chat");
}

/* The model (by name, active, in the caller's group) and its usable routes
 * in priority order (lowest first; stable for equal priorities). */
static int front_model(ta_proxy_t *p, h2o_req_t *req, MDB_txn *txn, front_t *f, preq_t *pr, refusal_t *rf)
{
    ta_store_t *st = p->conf.store;
    ta_event_t *ev = &pr->ev;
    const char *mname = json_string_value(json_object_get(f->body, "model"));
    copy_str(ev->model, sizeof(ev->model), mname);
    uint64_t mid;
    if (strlen(mname) >= sizeof(pr->model.name) || ta_idx_get(st, txn, TA_DB_MODELS_BY_NAME, mname, &mid) != 0 ||
        ta_rec_get(st, txn, &ta_desc_model, mid, &pr->model) != 0 || !pr->model.is_active)
        return refused(rf, 404, TA_ET_NOT_FOUND, "model_not_found", "model",
                       "The model '%s' does not exist or you do not have access to it.", mname);
    ev->model_id = mid;
    if (!group_has(f->grp, mid))
        return refused(rf, 403, TA_ET_PERMISSION, "model_not_allowed", "model", "This API key may not use the model '%s'.",
                       mname);
    if (model_capable(&pr->model, f->ep, rf) != 0)
        return -1;
    bool anth_skipped = false; /* an anthropic route, and the endpoint is not chat */
    int order[TA_MODEL_MAX_ROUTES], n = pr->model.nroutes < TA_MODEL_MAX_ROUTES ? pr->model.nroutes : TA_MODEL_MAX_ROUTES;
    for (int i = 0; i < n; i++)
        order[i] = i;
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && pr->model.routes[order[j]].priority < pr->model.routes[order[j - 1]].priority; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    ta_health_route_t hc[TA_MODEL_MAX_ROUTES];
    char hname[TA_MODEL_MAX_ROUTES][MEMBER_SIZE(ta_provider_t, name)];
    ta_provider_t *prov = &p->scratch->prov;
    if (n > pr->routes_cap) {
        route_info_t *rs = realloc(pr->routes, (size_t)n * sizeof(*pr->routes));
        if (rs == NULL)
            return refused(rf, 500, TA_ET_INTERNAL, "internal_error", NULL, "The gateway failed to handle the request.");
        pr->routes = rs;
        pr->routes_cap = n;
    }
    for (int i = 0; i < n; i++) {
        const ta_route_t *rt = &pr->model.routes[order[i]];
        if (ta_rec_get(st, txn, &ta_desc_provider, rt->provider_id, prov) != 0 || !prov->is_active)
            continue;
        if (prov->type == TA_PROVIDER_ANTHROPIC && f->ep != TA_EP_CHAT && f->ep != TA_EP_MESSAGES &&
            f->ep != TA_EP_COUNT_TOKENS && f->ep != TA_EP_RESPONSES) {
            anth_skipped = true; /* the Messages API has no completions or embeddings */
            continue;
        }
        if (prov->type != TA_PROVIDER_OPENAI && prov->type != TA_PROVIDER_ANTHROPIC) {
            ta_log(TA_LOG_WARN, "provider %llu: unknown provider type; route skipped", (unsigned long long)prov->id);
            continue;
        }
        route_info_t *ri = &pr->routes[pr->nroutes++];
        ri->provider_id = prov->id;
        ri->type = prov->type;
        copy_str(ri->base_url, sizeof(ri->base_url), prov->base_url);
        copy_str(ri->upstream_name, sizeof(ri->upstream_name), rt->upstream_name[0] ? rt->upstream_name : mname);
        memcpy(ri->key_sealed, prov->key_sealed, prov->key_sealed_len);
        ri->key_sealed_len = prov->key_sealed_len;
        ri->timeout_s = prov->timeout_s;
        ri->connect_timeout_ms = prov->connect_timeout_ms;
        copy_str(hname[pr->nroutes - 1], sizeof(hname[0]), prov->name);
        hc[pr->nroutes - 1] = (ta_health_route_t){prov->id, ri->upstream_name, hname[pr->nroutes - 1], rt->priority, rt->weight,
                                                  (int64_t)(ri->timeout_s > 0 ? ri->timeout_s : p->default_timeout_s) * 1000};
    }
    explicit_bzero(prov, sizeof(*prov));
    /* Health (ledger/health.h): routes cooling down are left out, a trial
     * goes first, equal priorities share by weight. */
    int ho[TA_MODEL_MAX_ROUTES], hn = ta_health_order(mid, hc, pr->nroutes, ho, &pr->health);
    for (int j = 0; j < hn; j++)
        if (ho[j] != j) { /* not the priority order: reorder */
            route_info_t was[TA_MODEL_MAX_ROUTES];
            memcpy(was, pr->routes, sizeof(was[0]) * (size_t)pr->nroutes);
            for (int i = 0; i < hn; i++)
                pr->routes[i] = was[ho[i]];
            break;
        }
    pr->nroutes = hn;
    if (pr->nroutes == 0 && anth_skipped)
        return refused(rf, 400, TA_ET_INVALID_REQUEST, "model_not_supported", "model",
                       "The model '%s' does not support %.*s.", mname, (int)req->path_normalized.len,
                       req->path_normalized.base);
    ta_err_t aerr = {0};
    if (anth_check(pr, f->body, &aerr) != 0 || msg_check(pr, f->body, &aerr) != 0 ||
        resp_check(pr, f->body, &aerr) != 0)
        return refused(rf, 400, TA_ET_INVALID_REQUEST, "invalid_request_error", aerr.field[0] ? aerr.field : NULL,
                       "%s", aerr.message);
    if (pr->nroutes == 0)
        return refused(rf, 503, TA_ET_UPSTREAM, "no_route", NULL, "No active provider serves this model.");
    return 0;
}

/* /v1/messages: nothing is added to the client's body (Anthropic refuses
 * unknown fields; its streams always carry usage); the prompt is estimated
 * on the chat translation (system, tools and blocks counted), else bounded
 * by the body's bytes; the output limit is max_tokens (output_bounds). */
static void msg_shape(preq_t *pr, front_t *f)
{
    json_t *body = f->body, *chat = NULL;
    ta_err_t e;
    if (pr->stream) {
        pr->ev.flags |= TA_EVF_STREAM;
        ta_sse_init(&pr->sse, false, 0);
    }
    if (pr->req != NULL) {
        ssize_t vi = h2o_find_header_by_str(&pr->req->headers, H2O_STRLIT("anthropic-version"), -1);
        if (vi != -1)
            snprintf(pr->anth_version, sizeof(pr->anth_version), "%.*s",
                     (int)pr->req->headers.entries[vi].value.len, pr->req->headers.entries[vi].value.base);
        for (char *c = pr->anth_version; *c; c++)
            if (*c == '\r' || *c == '\n')
                *c = ' ';
    }
    if (ta_msg_to_chat(body, &chat, &e) == 0) {
        ta_tokens_prompt(chat, &pr->tok);
    } else {
        int64_t bytes = pr->req != NULL ? (int64_t)pr->req->entity.len : 0;
        pr->tok.upper = bytes + 3;
        pr->tok.estimate = bytes / 3 + 3;
    }
    json_decref(chat);
    output_bounds(pr, body);
    if (f->ep == TA_EP_COUNT_TOKENS) {
        pr->max_out = 0;
        pr->mt_both = false;
    }
    pr->quota_id = f->q.id;
    pr->body = body;
    f->body = NULL;
}

/* count_tokens for a model whose first route is an openai one (which has no
 * such call): the gateway's own estimate, recorded, nothing held or charged. */
static void count_tokens_here(preq_t *pr)
{
    h2o_req_t *req = pr->req;
    char b[64];
    int n = snprintf(b, sizeof(b), "{\"input_tokens\":%lld}", (long long)pr->tok.estimate);
    end(pr, 200, TA_ET_NONE);
    ta_worker_send(req, 200, NULL, b, (size_t)n);
}

/* What goes upstream besides the client's body: usage in every stream (the
 * client sees it only if it asked), the prompt estimate and the output bounds
 * the hold covers. pr takes the body. */
static void front_shape(preq_t *pr, front_t *f)
{
    json_t *body = f->body;
    pr->stream = json_is_true(json_object_get(body, "stream"));
    if (f->ep == TA_EP_MESSAGES || f->ep == TA_EP_COUNT_TOKENS) {
        msg_shape(pr, f);
        return;
    }
    if (f->ep == TA_EP_RESPONSES) {
        resp_shape(pr, f);
        return;
    }
    if (pr->stream) {
        pr->ev.flags |= TA_EVF_STREAM;
        json_t *so = json_object_get(body, "stream_options");
        pr->client_usage = json_is_true(json_object_get(so, "include_usage"));
        if (!json_is_object(so)) {
            so = json_object();
            json_object_set_new(body, "stream_options", so);
        }
        json_object_set_new(so, "include_usage", json_true());
        pr->body_edited |= !pr->client_usage;
        ta_sse_init(&pr->sse, pr->client_usage, 0);
    }
    ta_tokens_prompt(body, &pr->tok);
    output_bounds(pr, body);
    pr->quota_id = f->q.id;
    pr->body = body;
    f->body = NULL;
}

/* A preq_t for a request past the front's checks of the caller, attached to
 * h2o's request (h2o_part_t) from the start: from here on it ends by end(). */
static preq_t *preq_new(ta_proxy_t *p, h2o_req_t *req, const front_t *f)
{
    preq_t *pr = p->spare;
    if (pr != NULL) { /* a freed one: a malloc and a free of this size cost more than the memset */
        p->spare = pr->hold_next;
        p->nspare--;
        route_info_t *routes = pr->routes;
        int cap = pr->routes_cap;
        memset(pr, 0, sizeof(*pr));
        pr->routes = routes;
        pr->routes_cap = cap;
    } else if ((pr = calloc(1, sizeof(*pr))) == NULL) {
        return NULL;
    }
    h2o_part_t *hp = h2o_mem_alloc_shared(&req->pool, sizeof(*hp), on_req_dispose);
    memset(hp, 0, sizeof(*hp));
    hp->pr = pr;
    pr->hp = hp;
    pr->req = req;
    pr->p = p;
    pr->state = ST_FRONT;
    pr->t0_mono = f->t0;
    pr->endpoint = f->ep;
    pr->ev = f->ev;
    h2o_linklist_insert(&p->live, &pr->live);
    return pr;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    ta_proxy_t *p = *(ta_proxy_t **)(self + 1);
    front_t f = {.t0 = ta_mono_ns()};
    refusal_t rf = {0};
    MDB_txn *txn = NULL;
    preq_t *pr = NULL;
    int rc;
    f.ev.t_received_ns = ta_now_ns();

    if ((rc = front_route(req, &f, &rf)) != 0 || (rc = front_admit(p, &rf)) != 0)
        goto Exit;
    if (read_begin(p, &txn) != 0) {
        txn = NULL;
        rc = refused(&rf, 503, TA_ET_INTERNAL, "ledger_unavailable", NULL, "The ledger is unavailable.");
        goto Exit;
    }
    if ((rc = front_auth(p, req, txn, &f, &rf)) != 0)
        goto Exit;
    if (f.ep == TA_EP_MODELS || f.ep == TA_EP_USAGE) {
        if (f.ep == TA_EP_MODELS)
            answer_models(p, req, txn, f.grp, f.model_id, f.model_id_len);
        else
            answer_usage(p, req, txn, &f.q);
        count_answer_ev(p, 200, f.t0, NULL);
        goto Exit;
    }
    if ((rc = front_body(p, req, &f, &rf)) != 0)
        goto Exit;
    if ((pr = preq_new(p, req, &f)) == NULL) {
        rc = refused(&rf, 500, TA_ET_INTERNAL, "internal_error", NULL, "The gateway failed to handle the request.");
        goto Exit;
    }
    if ((rc = front_model(p, req, txn, &f, pr, &rf)) != 0)
        goto Exit;
    front_shape(pr, &f);
    if (pr->endpoint == TA_EP_COUNT_TOKENS && pr->routes[0].type != TA_PROVIDER_ANTHROPIC) {
        count_tokens_here(pr);
        goto Exit;
    }
    queue_hold(pr); /* the hold, at the end of this loop pass (run_holds), then upstream */

Exit:
    read_done(p, txn);
    if (rc != 0)
        refuse(p, req, &f, pr, &rf);
    json_decref(f.body);
    return 0;
}

/* h2o answered 413 by itself, before on_req (worker/server.h
 * ta_worker_on_oversize): a /v1 request whose key is valid gets its record
 * like any other refusal; the answer is h2o's, made JSON by the server. */
static void on_oversize(void *arg, h2o_req_t *req)
{
    ta_proxy_t *p = arg;
    front_t f = {.t0 = ta_mono_ns()};
    refusal_t rf = {0};
    MDB_txn *txn = NULL;
    f.ev.t_received_ns = ta_now_ns();
    if (front_route(req, &f, &rf) != 0 || read_begin(p, &txn) != 0)
        return;
    front_auth(p, req, txn, &f, &rf); /* a known caller is recorded even when inactive */
    read_done(p, txn);
    refused(&rf, 413, TA_ET_INVALID_REQUEST, "request_too_large", NULL,
            "The request body is larger than the limit of %zu bytes.", p->conf.max_body_size);
    refuse(p, NULL, &f, NULL, &rf);
}

/* ---- setup --------------------------------------------------------------------------------- */

static int32_t flush_ring(void *arg)
{
    ta_proxy_t *p = arg;
    if (p->conf.ring != NULL && ta_ring_has_pending(p->conf.ring))
        ta_ring_flush_pending(p->conf.ring);
    ta_metrics_set_ring_pending(p->conf.ring != NULL ? ta_ring_pending_count(p->conf.ring) : 0);
    bool pending = p->conf.ring != NULL && ta_ring_has_pending(p->conf.ring);
    if (p->pending_held && !pending) {
        ta_worker_release(p->w);
        p->pending_held = false;
    }
    return pending ? 10 : -1; /* retry soon while events wait for room */
}

int ta_proxy_setup(ta_worker_t *w, const ta_proxy_conf_t *conf, ta_proxy_t **out)
{
    if (conf->max_body_size == 0 || conf->stream_drain_timeout_ms < 0 || conf->store == NULL)
        return TA_EINVAL; /* the settings' own defaults come from master/config.c */
    ta_proxy_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    p->conf = *conf;
    p->w = w;
    p->pid = (int32_t)getpid(); /* set up inside the worker process, which never forks */
    copy_str(p->timezone, sizeof(p->timezone), conf->timezone != NULL && conf->timezone[0] ? conf->timezone : "UTC");
    p->conf.timezone = p->timezone;
    if (p->conf.max_response_size == 0)
        p->conf.max_response_size = DEFAULT_MAX_RESPONSE;
    /* a provider record from before its timeouts existed reads them as 0 */
    p->default_timeout_s = (int32_t)ta_rec_field(&ta_desc_provider, "timeout_s")->def;
    p->default_connect_timeout_ms = (int32_t)ta_rec_field(&ta_desc_provider, "connect_timeout_ms")->def;
    h2o_linklist_init_anchor(&p->live);
    p->hold_tail = &p->hold_head;
    h2o_pathconf_t *pc = ta_worker_register_path(w, "/v1");
    if (pc == NULL) {
        free(p);
        return TA_ECONFIG;
    }
    p->hasher = ta_apikey_hasher_create(); /* NULL: one-shot hashes */
    if ((p->scratch = malloc(sizeof(*p->scratch))) == NULL) {
        ta_apikey_hasher_destroy(p->hasher);
        free(p);
        return -ENOMEM;
    }
    h2o_handler_t *h = h2o_create_handler(pc, sizeof(*h) + sizeof(ta_proxy_t *));
    *(ta_proxy_t **)(h + 1) = p;
    h->on_req = on_req;
    ta_worker_add_tick(w, flush_ring, p);
    ta_worker_on_oversize(w, on_oversize, p);
    *out = p;
    return 0;
}

int ta_proxy_ready(ta_proxy_t *p) { return ensure_upstream(p); }

void ta_proxy_destroy(ta_proxy_t *p)
{
    if (p == NULL)
        return;
    ta_worker_on_oversize(p->w, NULL, NULL);
    /* The loop has stopped with requests still alive (shutdown_timeout_ms
     * ran out): each is abandoned as if the worker had died, without an
     * event. A held one keeps its hold, which billing's dead-worker cleanup
     * releases (an aborted record), so it is still settled exactly once.
     * h2o's part of it, if any, is left pointing at nothing. */
    p->hold_head = NULL;
    p->hold_tail = &p->hold_head;
    while (!h2o_linklist_is_empty(&p->live)) {
        preq_t *pr = H2O_STRUCT_FROM_MEMBER(preq_t, live, p->live.next);
        if (pr->call != NULL)
            ta_upcall_cancel(pr->call);
        pr->call = NULL;
        if (h2o_timeout_is_linked(&pr->drain_timer))
            h2o_timeout_unlink(&pr->drain_timer);
        if (pr->ev.flags & TA_EVF_HOLD && pr->state != ST_DONE)
            ta_metrics_holds_add(-1);
        pr->state = ST_DONE;
        pr->req = NULL;
        preq_free(pr);
    }
    if (p->up != NULL)
        ta_upstream_destroy(p->up);
    if (p->drain_timeout_init)
        h2o_timeout_dispose(ta_worker_loop(p->w), &p->drain_timeout);
    while (p->spare != NULL) {
        struct preq *n = p->spare->hold_next;
        free(p->spare->routes);
        free(p->spare);
        p->spare = n;
    }
    ta_apikey_hasher_destroy(p->hasher);
    if (p->scratch != NULL) {
        explicit_bzero(p->scratch, sizeof(*p->scratch));
        free(p->scratch);
    }
    if (p->rtxn != NULL)
        mdb_txn_abort(p->rtxn);
    if (p->keys != NULL) {
        explicit_bzero(p->keys, KEY_CACHE * sizeof(*p->keys));
        free(p->keys);
    }
    if (p->hold_timeout_init) {
        if (h2o_timeout_is_linked(&p->hold_entry))
            h2o_timeout_unlink(&p->hold_entry);
        h2o_timeout_dispose(ta_worker_loop(p->w), &p->hold_timeout);
    }
    free(p);
}
