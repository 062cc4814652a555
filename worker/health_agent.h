/*
 * health_agent.h - the part of provider route health (ledger/health.h) that
 * needs a worker's loop, its outbound client or a thread:
 *
 *   probes   with health_check_interval_s > 0, a timer on the loop claims
 *            (across workers) the routes due a probe and calls their
 *            provider's models list, the call POST
 *            /api/admin/providers/{id}/test/ makes: the admin side builds it
 *            (probe_fetch, wired by the master: worker/ does not include
 *            admin/) and ta_worker_fetch() makes it. A 2xx brings the route
 *            back; anything else cools it down again.
 *   webhook  every change of state this worker makes is POSTed as JSON to
 *            health_webhook_url by a thread of the agent (so a slow endpoint
 *            never holds the loop), through the ta_webhook_post_fn seam
 *            (ledger/billing.h; master/webhook.c), with bounded retries and
 *            back-off. Events wait in a bounded queue; past it they are
 *            dropped and logged. Delivery is at most once per attempt
 *            series: an event whose worker dies before posting it is lost
 *            (the state itself is in the shared table and in
 *            /api/admin/providers/).
 *
 * Worker processes only, on the loop thread: start after the worker exists
 * (conf.ready), stop before ta_worker_destroy().
 */
#ifndef TA_HEALTH_AGENT_H
#define TA_HEALTH_AGENT_H

#include <stdint.h>

#include "ledger/billing.h"
#include "schema/api.h"
#include "worker/server.h"

/** Build the probe call of a provider (no continuation); 0 or TA_E*
 *  (TA_ENOTFOUND: the provider is gone). */
typedef int (*ta_health_probe_fetch_fn)(void *ctx, uint64_t provider_id, ta_api_fetch_t **out);

typedef struct ta_health_agent_conf {
    int64_t probe_interval_ms;         /* 0: no probes */
    ta_health_probe_fetch_fn probe_fetch; /* required with probes */
    void *probe_ctx;
    const char *webhook_url;           /* NULL or "": no webhook (copied) */
    ta_webhook_post_fn post;           /* required with a URL */
    int64_t webhook_timeout_ms;        /* per attempt */
    uint32_t webhook_attempts;         /* >= 1 */
} ta_health_agent_conf_t;

typedef struct ta_health_agent ta_health_agent_t;

/** Start the agent of this worker (and listen to ledger/health.h's
 *  changes of state). Returns 0 or -ENOMEM. */
int ta_health_agent_start(ta_health_agent_t **out, ta_worker_t *w, const ta_health_agent_conf_t *conf);
/** Stop the timer, cancel running probes, stop the webhook thread (a post
 *  in progress ends within its timeout; events still queued are dropped
 *  and counted in the log) and join it. NULL is fine. */
void ta_health_agent_stop(ta_health_agent_t *a);

#endif
