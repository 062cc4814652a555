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

#include <jansson.h>
#include <stdio.h>

#include "admin/throttle.h"
#include "ledger/store.h"
#include "schema/api.h"

/* The live figures of GET /api/admin/status/, summed over every worker by
 * whoever wires the admin in (the master reads worker/metrics.h's shared
 * page: admin/ does not depend on worker/). */
#define TA_ADMIN_UPSTREAM_KINDS 8
typedef struct ta_admin_live {
    uint64_t requests;          /* /v1 answers since the master started */
    uint64_t by_class[6];       /* [2] 2xx ... [5] 5xx; [0] and [1] other */
    int64_t in_flight;          /* /v1 requests holding budget, not yet answered */
    uint64_t ring_depth;        /* events in the ring that billing has not applied */
    uint64_t ring_pending;      /* events waiting in workers' queues for room in the ring */
    uint64_t workers, worker_restarts;
    size_t n_upstream;          /* entries of upstream_errors used */
    struct {
        const char *kind;       /* static: "connect", "timeout", ... */
        uint64_t count;
    } upstream_errors[TA_ADMIN_UPSTREAM_KINDS];
} ta_admin_live_t;

/** Fill out with the current sums. Loop thread; must not block. */
typedef void (*ta_admin_live_fn)(ta_admin_live_t *out);

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
    ta_admin_live_fn live;       /* NULL: the status answer's live figures read as zero */
    int64_t started_at_s;        /* when the gateway (master) started, unix s; 0 unknown */
} ta_admin_conf_t;

typedef struct ta_admin ta_admin_t; /* opaque */

int ta_admin_create(ta_admin_t **out, const ta_admin_conf_t *conf);
void ta_admin_destroy(ta_admin_t *a);

/** The ta_api_handler_fn for /api/...; ctx is the ta_admin_t. */
void ta_admin_handle(void *ctx, const ta_apireq_t *req, ta_apires_t *res);

/** The health probe of a provider (ledger/health.h, worker/health_agent.h):
 *  the call POST /api/admin/providers/{id}/test/ makes, without a
 *  continuation; ctx is the ta_admin_t. Returns 0 with *out, TA_ENOTFOUND
 *  (no such provider), TA_ECRYPTO / TA_EINVAL (its key cannot be used), or
 *  a store error. Worker processes, loop thread. */
int ta_admin_probe_fetch(void *ctx, uint64_t provider_id, ta_api_fetch_t **out);

/** A worker loop tick (ta_worker_tick_fn of worker/server.h; arg is the
 *  ta_admin_t): once a second it samples conf.live's request count and
 *  billing's applied events, so the status answer can give rates over the
 *  last minute. Returns -1 (no wish about the loop's sleep: the loop wakes
 *  at least every second anyway). */
int32_t ta_admin_tick(void *arg);

/** Create a superadmin (CLI `init` / `create-superadmin`). password is taken
 *  as given; validation as for the users endpoint. Returns 0, TA_EEXIST, TA_EINVAL (err). */
int ta_admin_create_superadmin(ta_store_t *st, const char *email, const char *password,
                               unsigned pbkdf2_iterations, ta_err_t *err);

/** Write the OpenAPI 3.0 document of the HTTP API (docs/openapi.yaml),
 *  built from the route table and the schema descriptors, to out: YAML, or
 *  JSON when json. Deterministic. Returns 0, -ENOMEM, -EIO, or -EINVAL when
 *  a field the generator names is gone from a descriptor. Any process. */
int ta_openapi_write(FILE *out, bool json);

/** The same document as a jansson tree (new reference), or NULL when it
 *  cannot be built. Any process (GET /api/openapi.json serves it). */
json_t *ta_openapi_json(void);

/** Build the document and check the route table against it: every row has
 *  its documentation columns, names existing schemas, parameters and error
 *  statuses, and lists the statuses the router answers. Returns 0, or
 *  -EINVAL with the first problem in why (cap bytes), or -ENOMEM. */
int ta_openapi_check(char *why, size_t cap);

/** `tokenaudit openapi [--json | --routes]`: argv[0] is "openapi". --routes
 *  prints the route table itself as JSON. Exit code 0/1/2. */
int ta_openapi_cli(int argc, char **argv);

#endif
