/*
 * upstream_internal.h - what the two engines of worker/upstream.h share: the
 * engine table the public functions dispatch through, the common head of
 * each engine's client and call, and deadline timers on h2o's fixed-duration
 * timeout lists. Only worker/upstream*.c include it.
 */
#ifndef TA_UPSTREAM_INTERNAL_H
#define TA_UPSTREAM_INTERNAL_H

#include "worker/upstream.h"

#define TA_UP_NBUCKETS 24 /* 0, 1, 2, 4, ... 2^22 ms (~70 min) */

typedef struct ta_up_engine_ops {
    int (*create)(ta_upstream_t **out, h2o_loop_t *loop, const ta_upstream_opts_t *opts);
    void (*destroy)(ta_upstream_t *up);
    int (*start)(ta_upstream_t *up, const ta_upcall_spec_t *spec, ta_upcall_t **out);
    void (*resume)(ta_upcall_t *call);
    void (*cancel)(ta_upcall_t *call);
} ta_up_engine_ops_t;

extern const ta_up_engine_ops_t ta_up_curl_ops, ta_up_h2o_ops;

/* The first member of each engine's client. */
struct ta_upstream {
    const ta_up_engine_ops_t *ops;
    h2o_loop_t *loop;
    ta_upstream_opts_t opts;
    size_t inflight;
    h2o_timeout_t buckets[TA_UP_NBUCKETS];
};

/* The first member of each engine's call. */
struct ta_upcall {
    ta_upstream_t *up;
};

/* A deadline: linked into the list whose duration is the largest power of
 * two not past it and re-linked when it fires early, so it fires within a
 * millisecond of the deadline after at most ~log2 hops and h2o's own
 * max_wait computation sees it (h2o 2.2.5 has fixed-duration lists only). */
typedef struct ta_uptimer {
    h2o_timeout_entry_t entry;
    ta_upstream_t *up;
    uint64_t deadline;
    void (*cb)(struct ta_uptimer *);
} ta_uptimer_t;

/** The common head: loop, options and the timeout lists. */
void ta_up_base_init(ta_upstream_t *up, const ta_up_engine_ops_t *ops, h2o_loop_t *loop,
                     const ta_upstream_opts_t *opts);
void ta_up_base_dispose(ta_upstream_t *up);
void ta_uptimer_init(ta_uptimer_t *t, ta_upstream_t *up, void (*cb)(ta_uptimer_t *));
void ta_uptimer_start(ta_uptimer_t *t, uint64_t after_ms);
void ta_uptimer_stop(ta_uptimer_t *t);
/** The 0 ms list: runs at the end of the current loop turn. */
static inline h2o_timeout_t *ta_up_zero(ta_upstream_t *up) { return &up->buckets[0]; }

#endif
