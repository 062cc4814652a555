/*
 * webhook.h - the HTTP transport of billing's warning webhook (the
 * ta_webhook_post_fn seam of ledger/billing.h), with libcurl's easy API.
 *
 * Callers: the billing process (master/billing_child.c hands it to
 * ta_billing_run) and tools that run billing; it is called on billing's
 * webhook thread only.
 */
#ifndef TA_MASTER_WEBHOOK_H
#define TA_MASTER_WEBHOOK_H

#include <stddef.h>
#include <stdint.h>

/** POST body to url as JSON with `Idempotency-Key: idempotency_key`, within
 *  timeout_ms (one attempt; the retries are billing's). Returns the HTTP
 *  status, or -1 with err set (curl's message) when no answer came. Calls
 *  curl_global_init once per process. */
int ta_webhook_post_curl(const char *url, const char *body, const char *idempotency_key,
                         int64_t timeout_ms, char *err, size_t errcap);

#endif
