/*
 * health_agent.c - probes and the webhook of provider route health
 * (health_agent.h; the table and the state machine are ledger/health.c).
 *
 *   loop thread                                   webhook thread
 *   ledger/health.c change of state
 *     -> on_change: JSON body  --q[WH_QUEUE]-->   POST (conf.post), retries
 *                                (mu, cv)         with back-off, until stop
 *   probe timer (every interval)
 *     -> ta_health_probe_due -> probe_fetch -> ta_worker_fetch
 *     -> probe_done -> ta_health_probe_result
 *
 * The queue is under `mu`; the thread touches only the queue and its own
 * copies (no LMDB, no h2o, no log of secrets: a webhook body names a
 * provider and a route, never a key). It blocks every signal (the worker's
 * signals go to the loop's self-pipe) and starts with the first event.
 */
#include "worker/health_agent.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ledger/health.h"

#define WH_QUEUE 64
#define PROBES_PER_TICK 32

typedef struct wh_item {
    char *body;
    char id[96];
} wh_item_t;

typedef struct probe {
    ta_health_agent_t *a;
    int32_t slot;
    ta_worker_fetch_t *call;
    h2o_linklist_t link;
} probe_t;

struct ta_health_agent {
    ta_health_agent_conf_t conf;
    char url[512];
    ta_worker_t *w;
    h2o_timeout_t probe_timeout;
    h2o_timeout_entry_t probe_entry;
    bool probe_init;
    h2o_linklist_t probes;
    /* the webhook thread */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t th;
    bool th_started, stop;
    wh_item_t q[WH_QUEUE];
    int qhead, qn;
    uint64_t dropped;
};

/* ---- the webhook thread --------------------------------------------------------- */

static void *wh_main(void *arg)
{
    ta_health_agent_t *a = arg;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->stop && a->qn == 0)
            pthread_cond_wait(&a->cv, &a->mu);
        if (a->stop)
            break;
        wh_item_t it = a->q[a->qhead];
        a->qhead = (a->qhead + 1) % WH_QUEUE;
        a->qn--;
        pthread_mutex_unlock(&a->mu);

        int status = -1;
        char err[256] = "";
        uint32_t i;
        for (i = 0; i < a->conf.webhook_attempts; i++) {
            status = a->conf.post(a->url, it.body, it.id, a->conf.webhook_timeout_ms, err, sizeof(err));
            if (status >= 200 && status < 300)
                break;
            if (i + 1 == a->conf.webhook_attempts)
                break;
            /* back off 0.5 s, 1 s, 2 s ... 32 s at most; wake at once on stop */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            int64_t add = 500LL * 1000000LL << (i < 6 ? i : 6);
            ts.tv_sec += (time_t)(add / 1000000000LL);
            ts.tv_nsec += (long)(add % 1000000000LL);
            if (ts.tv_nsec >= 1000000000L)
                ts.tv_sec++, ts.tv_nsec -= 1000000000L;
            pthread_mutex_lock(&a->mu);
            if (!a->stop)
                pthread_cond_timedwait(&a->cv, &a->mu, &ts);
            bool stop = a->stop;
            pthread_mutex_unlock(&a->mu);
            if (stop)
                break;
        }
        if (!(status >= 200 && status < 300))
            ta_log(TA_LOG_WARN, "health webhook %s: failed after %u attempt(s): %s", it.id,
                   i < a->conf.webhook_attempts ? i + 1 : i, status > 0 ? "HTTP error" : err[0] ? err : "no answer");
        free(it.body);
        pthread_mutex_lock(&a->mu);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

static bool wh_start(ta_health_agent_t *a)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&a->th, NULL, wh_main, a);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        ta_log(TA_LOG_ERROR, "health webhook: cannot start its thread: %s", strerror(rc));
        return false;
    }
    a->th_started = true;
    return true;
}

/* ledger/health.h's listener: a change of state made by this worker. */
static void on_change(void *arg, const ta_health_event_t *ev)
{
    ta_health_agent_t *a = arg;
    char at[40];
    if (a->url[0] == '\0')
        return;
    json_t *j = json_pack("{s:s,s:s,s:I,s:s,s:{s:s},s:s,s:s,s:s,s:s}", "event", "provider.health", "id", ev->id,
                          "provider_id", (json_int_t)ev->provider_id, "provider_name", ev->provider_name, "route",
                          "upstream_name", ev->upstream, "old_state", ta_health_state_name(ev->old_state),
                          "new_state", ta_health_state_name(ev->new_state), "reason", ev->reason, "at",
                          ta_time_format_ms(ev->at_ns, at));
    char *body = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (body == NULL)
        return;
    pthread_mutex_lock(&a->mu);
    if ((!a->th_started && !wh_start(a)) || a->qn == WH_QUEUE) {
        a->dropped++;
        pthread_mutex_unlock(&a->mu);
        ta_log(TA_LOG_WARN, "health webhook %s: dropped (queue full or no thread)", ev->id);
        free(body);
        return;
    }
    wh_item_t *it = &a->q[(a->qhead + a->qn) % WH_QUEUE];
    it->body = body;
    snprintf(it->id, sizeof(it->id), "%s", ev->id);
    a->qn++;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

/* ---- probes ------------------------------------------------------------------------ */

static void probe_done(void *arg, const ta_api_fetch_result_t *r)
{
    probe_t *pb = arg;
    char why[320];
    bool ok = r->err == 0 && r->status >= 200 && r->status < 300;
    if (r->err != 0)
        snprintf(why, sizeof(why), "%s", r->error);
    else
        snprintf(why, sizeof(why), "HTTP %d", r->status);
    ta_health_probe_result(pb->slot, ok, why, r->latency_ms);
    h2o_linklist_unlink(&pb->link);
    free(pb);
}

static void probe_tick(h2o_timeout_entry_t *e)
{
    ta_health_agent_t *a = H2O_STRUCT_FROM_MEMBER(ta_health_agent_t, probe_entry, e);
    ta_health_probe_t due[PROBES_PER_TICK];
    int n = ta_health_probe_due(due, PROBES_PER_TICK);
    for (int i = 0; i < n; i++) {
        ta_api_fetch_t *f = NULL;
        int rc = a->conf.probe_fetch(a->conf.probe_ctx, due[i].provider_id, &f);
        if (rc != 0) {
            char why[160];
            snprintf(why, sizeof(why), "%s", rc == TA_ENOTFOUND ? "the provider is gone" : ta_strerror(rc));
            ta_health_probe_result(due[i].slot, false, why, 0);
            continue;
        }
        probe_t *pb = calloc(1, sizeof(*pb));
        if (pb == NULL) {
            f->release(f);
            continue;
        }
        pb->a = a;
        pb->slot = due[i].slot;
        h2o_linklist_insert(&a->probes, &pb->link);
        rc = ta_worker_fetch(a->w, f, probe_done, pb, &pb->call);
        if (rc != 0) {
            h2o_linklist_unlink(&pb->link);
            free(pb);
            ta_health_probe_result(due[i].slot, false, "the probe call could not start", 0);
        }
    }
    h2o_timeout_link(ta_worker_loop(a->w), &a->probe_timeout, &a->probe_entry);
}

/* ---- start / stop ------------------------------------------------------------------ */

int ta_health_agent_start(ta_health_agent_t **out, ta_worker_t *w, const ta_health_agent_conf_t *conf)
{
    ta_health_agent_t *a = calloc(1, sizeof(*a));
    *out = NULL;
    if (a == NULL)
        return -ENOMEM;
    a->conf = *conf;
    a->w = w;
    if (conf->webhook_url != NULL && conf->post != NULL)
        snprintf(a->url, sizeof(a->url), "%s", conf->webhook_url);
    if (a->conf.webhook_attempts < 1)
        a->conf.webhook_attempts = 1;
    a->conf.webhook_url = NULL;
    h2o_linklist_init_anchor(&a->probes);
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    if (conf->probe_interval_ms > 0 && conf->probe_fetch != NULL) {
        h2o_loop_t *loop = ta_worker_loop(w);
        h2o_timeout_init(loop, &a->probe_timeout, (uint64_t)conf->probe_interval_ms);
        a->probe_entry.cb = probe_tick;
        h2o_timeout_link(loop, &a->probe_timeout, &a->probe_entry);
        a->probe_init = true;
    }
    ta_health_set_listener(on_change, a);
    *out = a;
    return 0;
}

void ta_health_agent_stop(ta_health_agent_t *a)
{
    if (a == NULL)
        return;
    ta_health_set_listener(NULL, NULL);
    if (a->probe_init) {
        if (h2o_timeout_is_linked(&a->probe_entry))
            h2o_timeout_unlink(&a->probe_entry);
        h2o_timeout_dispose(ta_worker_loop(a->w), &a->probe_timeout);
    }
    while (!h2o_linklist_is_empty(&a->probes)) {
        probe_t *pb = H2O_STRUCT_FROM_MEMBER(probe_t, link, a->probes.next);
        h2o_linklist_unlink(&pb->link);
        ta_worker_fetch_cancel(pb->call);
        free(pb);
    }
    pthread_mutex_lock(&a->mu);
    a->stop = true;
    pthread_cond_signal(&a->cv);
    int left = a->qn;
    pthread_mutex_unlock(&a->mu);
    if (a->th_started)
        pthread_join(a->th, NULL);
    for (; a->qn > 0; a->qn--, a->qhead = (a->qhead + 1) % WH_QUEUE)
        free(a->q[a->qhead].body);
    if (left > 0 || a->dropped > 0)
        ta_log(TA_LOG_WARN, "health webhook: %d event(s) not posted at stop, %" PRIu64 " dropped before",
               left, a->dropped);
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
    free(a);
}
