/*
 * admin.h - the /api/... handlers: auth, users, providers, models, groups,
 * quotas (and, with the audit work, requests and statistics).
 *
 * One ta_admin_t per worker process, created after fork on that worker's own
 * ta_store_t. Every handler runs one short LMDB transaction (read or write)
 * and never blocks otherwise. Writes are visible to every worker at once
 * because they share the ledger environment; logout writes revoked_jwt, which
 * every worker checks on each request.
 *
 * Called in worker processes only.
 */
#ifndef TA_ADMIN_H
#define TA_ADMIN_H

#include <stdio.h>

#include "admin/throttle.h"
#include "ledger/store.h"
#include "schema/api.h"

typedef struct ta_admin_conf {
    ta_store_t *store;           /* borrowed; outlives the admin */
    const uint8_t *jwt_secret;   /* 32 bytes, borrowed */
    size_t jwt_secret_len;
    const uint8_t *master_key;   /* 32 bytes, borrowed */
    int64_t jwt_ttl_s;           /* token lifetime */
    unsigned pbkdf2_iterations;  /* 0 = default */
    size_t max_body;             /* bytes; larger bodies -> 413 (the worker also enforces it) */
    ta_throttle_t *login_throttle; /* borrowed, shared by all workers; NULL = logins not throttled */
    ta_throttle_conf_t login_limits; /* when login_throttle: every field >= 1 (else TA_EINVAL) */
} ta_admin_conf_t;

typedef struct ta_admin ta_admin_t; /* opaque */

int ta_admin_create(ta_admin_t **out, const ta_admin_conf_t *conf);
void ta_admin_destroy(ta_admin_t *a);

/** The ta_api_handler_fn for /api/...; ctx is the ta_admin_t. */
void ta_admin_handle(void *ctx, const ta_apireq_t *req, ta_apires_t *res);

/** Create a superadmin (CLI `init` / `create-superadmin`). password is taken
 *  as given; validation as for the users endpoint. Returns 0, TA_EEXIST, TA_EINVAL (err). */
int ta_admin_create_superadmin(ta_store_t *st, const char *email, const char *password,
                               unsigned pbkdf2_iterations, ta_err_t *err);

/** One row of the /api router table (admin.c), for the OpenAPI generator. */
typedef struct ta_admin_route_info {
    const char *method;  /* "GET", "POST", ... */
    const char *pattern; /* "/api/admin/users/{id}/"; {id} is a positive integer */
    int auth;            /* who may call it (AUTH_* of admin_internal.h) */
    bool body;           /* a JSON object body is required */
} ta_admin_route_info_t;

/** The i-th route of the router table, in table order; false past the end.
 *  Pointers are static. Any process. */
bool ta_admin_route(size_t i, ta_admin_route_info_t *out);

/** Write the OpenAPI 3.0 document of the HTTP API (docs/openapi.yaml),
 *  built from the route table and the schema descriptors, to out: YAML, or
 *  JSON when json. Deterministic. Returns 0, -ENOMEM, -EIO, or -EINVAL when
 *  a field the generator names is gone from a descriptor. Any process. */
int ta_openapi_write(FILE *out, bool json);

/** `tokenaudit openapi [--json]`: argv[0] is "openapi". Exit code 0/1/2. */
int ta_openapi_cli(int argc, char **argv);

#endif
