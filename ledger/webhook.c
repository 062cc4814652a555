/*
 * webhook.c - billing's webhook thread: posts quota warnings so that a slow
 * or dead endpoint never delays settlement.
 *
 *   loop thread                        webhook thread
 *   ta_webhook_queue() --jobs[64]-->   POST (conf->webhook_post), bounded
 *                                      retries with back-off
 *   outbox.c reads   <--res[64]----    one result per job
 *
 * Both queues are under `mu`; `inflight` (loop thread only) counts jobs from
 * ta_webhook_queue() until their result is committed (outbox.c), so neither
 * queue can overflow: at most WH_QUEUE jobs exist between the two ends. The
 * thread never touches LMDB; the HTTP transport is a function pointer
 * (ta_webhook_post_fn, billing.h) so ledger/ does not link an HTTP client.
 * Killed at any point: the warning record (the outbox, see outbox.c) is still
 * PENDING and the next billing posts it again.
 *
 * Billing process only.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ledger/billing_internal.h"

static void *wh_main(void *arg)
{
    webhook_t *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->stop && w->jn == 0)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->stop)
            break;
        wh_job_t job = w->jobs[w->jhead];
        w->jhead = (w->jhead + 1) % WH_QUEUE;
        w->jn--;
        pthread_mutex_unlock(&w->mu);

        wh_res_t r = {.quota_id = job.quota_id, .period_start = job.period_start,
                      .threshold = job.threshold};
        for (uint32_t i = 0; i < w->attempts && !r.ok; i++) {
            char err[sizeof(r.err)] = "";
            int status = w->post(w->url, job.body, job.id, w->timeout_ms, err, sizeof(err));
            r.attempts = (int32_t)i + 1;
            r.status = status > 0 ? status : -1;
            r.ok = status >= 200 && status < 300;
            if (status <= 0)
                snprintf(r.err, sizeof(r.err), "%s", err[0] ? err : "no answer");
            else if (!r.ok)
                snprintf(r.err, sizeof(r.err), "HTTP %d", status);
            if (!r.ok && i + 1 < w->attempts) {
                /* back off 0.5 s, 1 s, 2 s ... 32 s at most, but wake at once on stop */
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                int64_t add = 500 * NS_PER_MS << (i < 6 ? i : 6);
                ts.tv_sec += (time_t)(add / 1000000000LL);
                ts.tv_nsec += (long)(add % 1000000000LL);
                if (ts.tv_nsec >= 1000000000L)
                    ts.tv_sec++, ts.tv_nsec -= 1000000000L;
                pthread_mutex_lock(&w->mu);
                if (!w->stop)
                    pthread_cond_timedwait(&w->cv, &w->mu, &ts);
                bool stop = w->stop;
                pthread_mutex_unlock(&w->mu);
                if (stop) {
                    r.interrupted = true;
                    break;
                }
            }
        }
        if (!r.ok && !r.interrupted)
            ta_log(TA_LOG_WARN, "billing: warning webhook for quota %" PRIu64 " at %d%%: failed "
                   "after %d attempts (last status %d)", r.quota_id, r.threshold, r.attempts, r.status);
        pthread_mutex_lock(&w->mu);
        if (w->rn < WH_QUEUE)
            w->res[w->rn++] = r;
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

void ta_webhook_start(webhook_t *w, const ta_billing_conf_t *conf)
{
    if (!conf->warning_webhook_url || !*conf->warning_webhook_url)
        return;
    if (conf->webhook_post == NULL) {
        ta_log(TA_LOG_ERROR, "billing: a warning webhook is configured but no transport was "
               "given; warnings stay pending");
        return;
    }
    w->post = conf->webhook_post;
    snprintf(w->url, sizeof(w->url), "%s", conf->warning_webhook_url);
    w->timeout_ms = conf->webhook_timeout_ms > 0 ? conf->webhook_timeout_ms : 5000;
    w->attempts = conf->webhook_attempts > 0 ? conf->webhook_attempts : 3;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (pthread_create(&w->th, NULL, wh_main, w) != 0) {
        ta_log(TA_LOG_ERROR, "billing: cannot start the webhook thread; warnings stay pending");
        return;
    }
    w->started = true;
    w->rescan = true; /* post what a previous billing left pending */
}

void ta_webhook_stop(webhook_t *w)
{
    if (!w->started)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->th, NULL);
    w->started = false;
}

void ta_webhook_queue(webhook_t *w, const wh_job_t *j)
{
    if (!w->started)
        return;
    if (w->inflight >= WH_QUEUE) {
        if (!w->rescan)
            ta_log(TA_LOG_WARN, "billing: webhook queue full; warning for quota %" PRIu64
                   " stays pending and is posted later", j->quota_id);
        w->rescan = true;
        return;
    }
    pthread_mutex_lock(&w->mu);
    w->jobs[(w->jhead + w->jn) % WH_QUEUE] = *j; /* jn <= inflight < WH_QUEUE */
    w->jn++;
    w->inflight++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}
