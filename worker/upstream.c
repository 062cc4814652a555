/*
 * upstream.c - the interface of worker/upstream.h: dispatch to the engine a
 * client was created with, and what both engines share (deadline timers,
 * error names). The engines: upstream_h2o.c, upstream_curl.c.
 */
#include "worker/upstream.h"

#include <string.h>

#include "worker/upstream_internal.h"

/* ---- deadline timers ------------------------------------------------------ */

static uint64_t bucket_ms(int i) { return i == 0 ? 0 : (uint64_t)1 << (i - 1); }

void ta_uptimer_stop(ta_uptimer_t *t)
{
    if (h2o_timeout_is_linked(&t->entry))
        h2o_timeout_unlink(&t->entry);
}

static void timer_link(ta_uptimer_t *t)
{
    uint64_t now = h2o_now(t->up->loop);
    uint64_t rem = t->deadline > now ? t->deadline - now : 0;
    int b = 0;
    while (b + 1 < TA_UP_NBUCKETS && bucket_ms(b + 1) <= rem)
        b++;
    h2o_timeout_link(t->up->loop, &t->up->buckets[b], &t->entry);
}

static void timer_fire(h2o_timeout_entry_t *e)
{
    ta_uptimer_t *t = H2O_STRUCT_FROM_MEMBER(ta_uptimer_t, entry, e);
    if (h2o_now(t->up->loop) < t->deadline) {
        timer_link(t); /* fired from a shorter list: hop down */
        return;
    }
    t->cb(t);
}

void ta_uptimer_init(ta_uptimer_t *t, ta_upstream_t *up, void (*cb)(ta_uptimer_t *))
{
    memset(&t->entry, 0, sizeof(t->entry));
    t->entry.cb = timer_fire;
    t->up = up;
    t->cb = cb;
}

void ta_uptimer_start(ta_uptimer_t *t, uint64_t after_ms)
{
    ta_uptimer_stop(t);
    t->deadline = h2o_now(t->up->loop) + after_ms;
    timer_link(t);
}

void ta_up_base_init(ta_upstream_t *up, const ta_up_engine_ops_t *ops, h2o_loop_t *loop,
                     const ta_upstream_opts_t *opts)
{
    up->ops = ops;
    up->loop = loop;
    if (opts != NULL)
        up->opts = *opts;
    if (up->opts.max_idle_s <= 0)
        up->opts.max_idle_s = 30;
    for (int i = 0; i < TA_UP_NBUCKETS; i++)
        h2o_timeout_init(loop, &up->buckets[i], bucket_ms(i));
}

void ta_up_base_dispose(ta_upstream_t *up)
{
    for (int i = 0; i < TA_UP_NBUCKETS; i++)
        h2o_timeout_dispose(up->loop, &up->buckets[i]);
}

/* ---- the interface ----------------------------------------------------------- */

const char *ta_up_err_name(int err)
{
    switch (err) {
    case TA_UP_OK: return "ok";
    case TA_UP_ECONNECT: return "connect";
    case TA_UP_ETIMEOUT_CONNECT: return "timeout_connect";
    case TA_UP_ETIMEOUT_FIRST_BYTE: return "timeout_first_byte";
    case TA_UP_ETIMEOUT_IDLE: return "timeout_idle";
    case TA_UP_ETIMEOUT_TOTAL: return "timeout_total";
    case TA_UP_ENORESPONSE: return "no_response";
    case TA_UP_ECUT: return "cut";
    case TA_UP_EABORTED: return "aborted";
    default: return "other";
    }
}

int ta_upstream_create(ta_upstream_t **out, h2o_loop_t *loop, const ta_upstream_opts_t *opts)
{
    int engine = opts != NULL ? opts->engine : TA_UP_ENGINE_H2O;
    const ta_up_engine_ops_t *ops = engine == TA_UP_ENGINE_CURL ? &ta_up_curl_ops : &ta_up_h2o_ops;
    return ops->create(out, loop, opts);
}

void ta_upstream_destroy(ta_upstream_t *up)
{
    if (up != NULL)
        up->ops->destroy(up);
}

size_t ta_upstream_inflight(const ta_upstream_t *up) { return up->inflight; }

int ta_upcall_start(ta_upstream_t *up, const ta_upcall_spec_t *spec, ta_upcall_t **out)
{
    return up->ops->start(up, spec, out);
}

void ta_upcall_resume(ta_upcall_t *call) { call->up->ops->resume(call); }

void ta_upcall_cancel(ta_upcall_t *call) { call->up->ops->cancel(call); }
