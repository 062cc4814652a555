/*
 * api.h - the seam between the HTTP server (worker/) and the admin API
 * handlers (admin/): a request and an answer as plain data, no h2o types.
 *
 * worker/ never includes admin/ headers: the master wires
 * ta_admin_handle() into the worker as a ta_api_handler_fn. That keeps the
 * dependency arrows one way (schema <- ledger <- worker/admin <- master) and
 * lets the admin handlers be tested without a server.
 *
 * Called in worker processes only, on the loop thread.
 */
#ifndef TA_API_H
#define TA_API_H

#include <stddef.h>
#include "ta.h"

typedef struct ta_apireq {
    const char *method;         /* "GET", "POST", ... NUL-terminated */
    const char *path;           /* path without query, e.g. "/api/admin/users/3/" */
    size_t path_len;
    const char *query;          /* after '?', not decoded; NULL if none */
    size_t query_len;
    const char *body;           /* request body (may be NULL when body_len == 0) */
    size_t body_len;
    const char *authorization;  /* Authorization header value or NULL */
    size_t authorization_len;
    const char *base_url;       /* "http://host:port" as the client reached us, for next/previous */
    const char *request_id;     /* X-Request-Id of this request, NUL-terminated */
    const char *client_ip;      /* NUL-terminated */
} ta_apireq_t;

typedef struct ta_apires {
    int status;                 /* HTTP status */
    char *body;                 /* malloc'd JSON (or NULL for 204); worker frees it */
    size_t body_len;
    const char *content_type;   /* static string; NULL = "application/json" */
    char allow[64];             /* for 405: value of the Allow header; "" otherwise */
    int retry_after;            /* > 0: Retry-After header in seconds */
} ta_apires_t;

/** Handle one /api/... request; always fills res (errors included, in the
 *  shape of API.md). ctx is the handler's own state (ta_admin_t *). */
typedef void (*ta_api_handler_fn)(void *ctx, const ta_apireq_t *req, ta_apires_t *res);

#endif
