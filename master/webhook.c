/*
 * webhook.c - billing's warning webhook over libcurl (see webhook.h).
 */
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>

#include "master/webhook.h"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;

static void curl_init(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

static size_t discard_cb(char *p, size_t sz, size_t n, void *u) { return sz * n; }

int ta_webhook_post_curl(const char *url, const char *body, const char *idempotency_key,
                         int64_t timeout_ms, char *err, size_t errcap)
{
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK) {
        snprintf(err, errcap, "curl_global_init: %s", curl_easy_strerror(curl_init_rc));
        return -1;
    }
    CURL *c = curl_easy_init();
    if (c == NULL) {
        snprintf(err, errcap, "curl_easy_init failed");
        return -1;
    }
    char idh[128];
    snprintf(idh, sizeof(idh), "Idempotency-Key: %s", idempotency_key);
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    hdr = curl_slist_append(hdr, "Expect:"); /* no 100-continue round trip */
    hdr = curl_slist_append(hdr, idh);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard_cb);
    long code = 0;
    CURLcode cc = curl_easy_perform(c);
    if (cc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    else
        snprintf(err, errcap, "%s", curl_easy_strerror(cc));
    curl_slist_free_all(hdr);
    curl_easy_cleanup(c);
    return cc == CURLE_OK && code > 0 ? (int)code : -1;
}
