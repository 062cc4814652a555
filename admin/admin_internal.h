/*
 * admin_internal.h - what the files of admin/ share: the per-worker admin
 * state, the per-request context, the reply helpers (JSON answers and errors
 * in the shape of API.md), query-string and pagination helpers, and the
 * handler prototypes the router table in admin.c points at.
 *
 * Transactions: a handler opens at most ONE LMDB transaction on the ledger
 * environment for the work it does (read for GET, write for mutations), with
 * ta_admin_txn(); any rejection after that aborts it, so a refused request leaves
 * nothing half-written. The router commits a write transaction only when the
 * handler answered < 400. Expensive work (PBKDF2) is done outside any
 * transaction and off the loop thread (pwjob below): every process
 * serializes on the ledger's write lock, the /v1 hold path included, and
 * every request of the worker waits while its loop thread is busy.
 *
 * Worker processes only (and the CLI for ta_admin_create_superadmin).
 */
#ifndef TA_ADMIN_INTERNAL_H
#define TA_ADMIN_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "admin/admin.h"
#include "admin/crypto.h"
#include "ledger/store.h"
#include "schema/schema.h"

#define TA_ADMIN_PAGE_SIZE_DEFAULT 50
#define TA_ADMIN_PAGE_SIZE_MAX 500
/* A filtered count reads at most this many records, then estimates (docs/API.md). */
#define TA_ADMIN_COUNT_SCAN 10000
/* A filtered keyset page reads at most this many records (its next link goes on). */
#define TA_ADMIN_LIST_SCAN 50000
#define TA_ADMIN_JWT_TTL_DEFAULT (12 * 3600)
#define TA_ADMIN_MAX_BODY_DEFAULT (1024 * 1024)

/* Samples for the status answer's rates (status.c): one a second, the last
 * minute and a few more. */
#define TA_ADMIN_SAMPLES 64
typedef struct ta_admin_sample {
    int64_t t_ns;        /* CLOCK_MONOTONIC */
    uint64_t requests;   /* ta_admin_live_t.requests then */
    uint64_t events;     /* events billing had applied then (ledger/heartbeat.h) */
} ta_admin_sample_t;

struct ta_admin {
    ta_admin_conf_t conf;
    ta_admin_sample_t samples[TA_ADMIN_SAMPLES]; /* a ring, newest at samples[next - 1] */
    size_t nsamples, next;
    /* Hash of a random password at the configured cost: logins for unknown
     * e-mails verify against it, so the answer takes as long as for a known
     * e-mail with a wrong password. */
    char dummy_hash[TA_PWHASH_MAX];
    size_t dummy_hash_len;
};

/* Who may call a route. */
enum {
    AUTH_NONE = 0,   /* login */
    AUTH_JWT,        /* any active user with a JWT */
    AUTH_USER,       /* JWT or API key (auth/me, quotas) */
    AUTH_ADMIN,      /* superadmin JWT */
};

typedef struct actx {
    ta_admin_t *a;
    ta_store_t *st;
    const ta_apireq_t *req;
    ta_apires_t *res;
    uint64_t id;             /* the {id} of the path, 0 if none */
    uint8_t rid[16];         /* the {request_id} of the path (routes that have one) */
    json_t *body;            /* parsed JSON object for routes that take one, else NULL */
    MDB_txn *txn;            /* the handler's transaction (ta_admin_txn), NULL if none */
    bool txn_write;
    /* the caller (auth != AUTH_NONE) */
    ta_user_t caller;
    bool via_apikey;
    ta_jwt_claims_t claims;  /* when !via_apikey */
    uint64_t key_quota_id;   /* when via_apikey */
    int auth;                /* the route's AUTH_* mode */
    bool txn_kept;           /* pwjob_cont opened c->txn (write): ta_admin_txn reuses it */
    bool may_write;          /* the route is TA_ROUTE_WRITE: ta_admin_txn(c, true) allowed */
} actx_t;

typedef void (*handler_fn)(actx_t *c);

/* ---- the route table (admin.c) ---------------------------------------------
 * One row per /api operation: how it is served (method, pattern, auth,
 * flags, handler) and how it is documented (the columns after the handler).
 * admin/openapi.c builds each operation of docs/openapi.yaml from its row
 * alone, so a route cannot exist without its documentation: a row that
 * leaves the documentation columns out fails the build
 * (-Wmissing-field-initializers, part of -Wextra), and one whose columns are
 * NULL or name an unknown schema, parameter or status fails
 * ta_openapi_check() (tests/unit/test_admin.c). docs/ARCHITECTURE.md says
 * how to add a route. */
enum {
    TA_ROUTE_BODY = 1u << 0,  /* a JSON object body is required (400 without one) */
    TA_ROUTE_WRITE = 1u << 1, /* the handler may open a write transaction; without the
                               * flag ta_admin_txn(c, true) answers 500 and writes nothing */
    TA_ROUTE_STREAM = 1u << 2, /* the answer is a file streamed in parts (ta_api_stream_t):
                                * text/csv or JSON lines, resp documents one line */
};

typedef struct ta_admin_route {
    const char *method;  /* "GET", "POST", "PUT", "PATCH", "DELETE" */
    const char *pattern; /* "/api/admin/users/{id}/": {id} is a positive decimal integer */
    int auth;            /* AUTH_* */
    unsigned flags;      /* TA_ROUTE_* */
    handler_fn fn;
    /* documentation */
    const char *op_id;   /* operationId, unique */
    const char *tag;     /* the section of the reference ("users", "audit", ...) */
    const char *summary; /* one line */
    const char *req;     /* request body schema (components/schemas); NULL iff no TA_ROUTE_BODY */
    int status;          /* the success status */
    const char *resp;    /* its body's schema; NULL: no body (204) */
    const char *params;  /* query parameters (components/parameters), comma-separated; "" none */
    const char *errors;  /* the error statuses it answers, ascending, comma-separated */
} ta_admin_route_t;

/** Row i of the route table, in table order; NULL past the end. Static
 *  storage. Any process. */
const ta_admin_route_t *ta_admin_route(size_t i);

/* ---- replies (admin.c) --------------------------------------------------- */

/** Answer status with JSON value v (reference stolen; NULL -> 500). */
void ta_admin_reply_json(actx_t *c, int status, json_t *v);
/** 204, no body. */
void ta_admin_reply_204(actx_t *c);
/** Error in API.md's shape; param may be NULL. */
void ta_admin_reply_error(actx_t *c, int status, const char *type, const char *code, const char *param,
                          const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/** 400 from a validation failure, with "fields": {field: message}. */
void ta_admin_reply_invalid(actx_t *c, const ta_err_t *err);
/** 400 naming a field: builds the ta_err_t and calls ta_admin_reply_invalid. */
void ta_admin_reply_field(actx_t *c, const char *field, const char *rule, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/** Map a store/crypto error to an answer (TA_ENOTFOUND 404, TA_EFULL 507, else 500). */
void ta_admin_reply_store_error(actx_t *c, int rc, const char *what);

/* ---- transactions -------------------------------------------------------- */

/** Begin the handler's transaction (once). A write transaction on a route
 *  without TA_ROUTE_WRITE is refused. Returns 0 or replies 500 and returns <0. */
int ta_admin_txn(actx_t *c, bool write);

/* ---- query string ---------------------------------------------------------- */

/** Decoded value of query parameter name (first occurrence) into buf.
 *  Returns 1 found (non-empty), 0 absent or empty, <0 after replying 400. */
int ta_admin_query_get(actx_t *c, const char *name, char *buf, size_t cap);
/** Positive id filter: 1 found, 0 absent, <0 replied 400 naming name. */
int ta_admin_query_id(actx_t *c, const char *name, uint64_t *out);
/** Boolean filter ("true"/"false"/"1"/"0"): 1 found, 0 absent, <0 replied. */
int ta_admin_query_bool(actx_t *c, const char *name, bool *out);

/* ---- lists ------------------------------------------------------------- */

typedef bool (*list_filter_fn)(actx_t *c, const void *rec, void *arg);
typedef json_t *(*list_render_fn)(actx_t *c, const void *rec);
/** Page through d's table in id order (in c->txn), keeping records the
 *  filter accepts (NULL: all), rendering those on the page; replies 200 with
 *  {"count","count_estimated","next","previous","results"} or an error.
 *  ?after=ID / ?before=ID position the walk by id in O(log n) (keyset); the
 *  links of a keyset page are keyset links; ?page=N reads what precedes the
 *  page. Filtered counts come from a bounded sample (admin.c, list_state). */
void ta_admin_reply_list(actx_t *c, const ta_recdesc_t *d, list_filter_fn filter, void *farg,
                         list_render_fn render);
/** Absolute URL of the current list request at another position: its query
 *  without page, after and before, plus extra ("after=17"). New reference,
 *  NULL when out of memory. */
json_t *ta_admin_link(actx_t *c, const char *extra);
/** ta_admin_link(c, "page=N"). */
json_t *ta_admin_page_url(actx_t *c, uint64_t page);

/* ---- continuations ------------------------------------------------------- */

/** A context for a continuation (fetch or job) that runs after the router
 *  returned: a fresh request naming method, path and request id (copies the
 *  caller keeps alive), the answer reset to 500 until the continuation fills
 *  it, no transaction yet and no write allowed (the caller sets may_write
 *  from the route). Loop thread only. */
void ta_admin_ctx_rebuild(actx_t *c, ta_apireq_t *req, ta_admin_t *a, ta_apires_t *res,
                          const char *method, const char *path, const char *request_id,
                          uint64_t id);

/* ---- small helpers ------------------------------------------------------- */

/** ASCII lower-case copy into out (cap bytes, truncated). */
void ta_admin_lower_copy(char *out, size_t cap, const char *in);
/** Case-insensitive (ASCII) substring test. */
bool ta_admin_icontains(const char *hay, const char *needle);
/** Does the body carry key k (null included)? */
bool ta_admin_body_has(actx_t *c, const char *k);
/** Merge mode for the method: POST create, PUT put, PATCH patch. */
int ta_admin_merge_mode(actx_t *c);
/** ta_rec_from_json on c->body; replies 400 on failure and returns <0. */
int ta_admin_body_apply(actx_t *c, const ta_recdesc_t *d, void *rec, int mode);

/* ---- auth (auth.c) --------------------------------------------------------- */

/** Authenticate the request in the route's mode (read txn of its own).
 *  Returns 0 with c->caller filled, or <0 after replying 401/403. */
int ta_admin_auth_check(actx_t *c, int mode);
/** Authenticate again, in c->txn, the caller that ta_admin_auth_check found
 *  (c->claims / c->key_quota_id, c->via_apikey): the token not revoked (nor
 *  expired) and of the user's current session generation (token_gen), the
 *  quota and the user still active, still a superadmin for
 *  AUTH_ADMIN. Refreshes c->caller. Returns 0, or <0 after replying 401/403
 *  as ta_admin_auth_check would. Continuations of offloaded writes (pwjob_cont). */
int ta_admin_auth_recheck(actx_t *c, int mode);

/** Take body[field] as a new password (string, TA_PASSWORD_MIN characters ..
 *  TA_PASSWORD_MAX bytes); replies 400 naming field and returns <0. */
int ta_admin_password_take(actx_t *c, const char *field, const char **out);

/* ---- API keys (keys.c) ---------------------------------------------------- */

/** Give quota q a fresh key in txn: its old keys row deleted, the new row
 *  stored, q->key_prefix/key_hash set (the caller puts q). key gets
 *  TA_APIKEY_LEN + 1 bytes. 0 or <0 (store errors). */
int ta_admin_key_mint(ta_store_t *st, MDB_txn *txn, ta_quota_t *q, char *key);
/** Delete q's keys row in txn and clear q->key_hash (q->key_prefix stays);
 *  nothing to do without a hash. The caller puts or deletes q. 0 or <0. */
int ta_admin_key_revoke(ta_store_t *st, MDB_txn *txn, ta_quota_t *q);
/** Revoke the key of every quota of user_id in c->txn (write). 0 or <0. */
int ta_admin_keys_revoke_user(actx_t *c, uint64_t user_id);

/* ---- record JSON (users.c, quotas.c) ----------------------------------------- */

/** User JSON for answers. */
json_t *ta_admin_user_json(const ta_user_t *u);
/** Quota JSON with its "usage" (reads the balance in c->txn). */
json_t *ta_admin_quota_json(actx_t *c, const ta_quota_t *q);

/* ---- password work off the loop thread (admin.c) --------------------------
 * PBKDF2 (tens of ms at the default cost) never runs on the worker's loop:
 * a handler validates synchronously (400s at once), fills a pwjob with what
 * the work needs and hands it to the worker (ta_api_job_t, schema/api.h).
 * The work runs on a pool thread and touches only the job's own buffers:
 *   verify:          verify_rc = ta_password_verify(pw, hash)
 *   new_pw non-empty (and verify, if asked, succeeded):
 *                    hash_rc = ta_password_hash(new_pw) into new_hash
 * Then finish runs on the loop thread with an actx_t rebuilt from the
 * copies below (c->body is the request's parsed body); it opens its own
 * transaction with ta_admin_txn if it needs one, re-checks what may have changed
 * meanwhile, and replies; the transaction is committed or aborted as the
 * router does. If the client left, finish is not called. release wipes the
 * passwords, the hashes and the body's password strings. */
typedef struct pwjob pwjob_t;
typedef void (*pwjob_finish_fn)(actx_t *c, pwjob_t *j);

struct pwjob {
    ta_api_job_t job;        /* first: the worker hands it back as is */
    pwjob_finish_fn finish;
    const ta_admin_t *admin; /* outlives the job */
    /* the request, copied for finish */
    char method[8];
    char path[160];
    char request_id[48];
    uint64_t id;
    ta_user_t caller;
    json_t *body;            /* a reference, or NULL */
    /* the work's inputs: SECRETS */
    unsigned iterations;
    bool verify;
    char pw[TA_PASSWORD_MAX + 2];     /* verified against hash */
    char hash[TA_PWHASH_MAX];
    size_t hash_len;
    char new_pw[TA_PASSWORD_MAX + 2]; /* hashed into new_hash */
    /* the work's results */
    bool worked;                      /* the work ran (read after it ended) */
    int verify_rc;
    int hash_rc;                      /* length of new_hash, or <0 */
    char new_hash[TA_PWHASH_MAX];
    /* handler state */
    bool found;
    ta_user_t user;
    char account[256];       /* login: the throttle's names (throttle.h); "" otherwise */
    char address[64];
    ta_throttle_attempt_t attempt;
    /* how the caller authenticated, checked again by the continuation */
    int auth;
    bool via_apikey;
    ta_jwt_claims_t claims;
    uint64_t key_quota_id;
    bool may_write;          /* the route's TA_ROUTE_WRITE, for the continuation */
};

/** A job for this request (method, path, request id, id, caller and a
 *  reference to the body copied), pbkdf2 cost from the admin's conf. NULL
 *  after replying 500. */
pwjob_t *ta_admin_pwjob_new(actx_t *c, pwjob_finish_fn finish);
/** Copy password src into a job buffer of TA_PASSWORD_MAX + 2 bytes; a
 *  longer one is cut at TA_PASSWORD_MAX + 1 bytes, which still fails the
 *  length checks of crypto.h exactly as the whole would. */
void ta_admin_pwjob_copy_pw(char *dst, const char *src);
/** Hand j to the worker through c->res->job. The handler returns right
 *  after, with its transaction closed or left for the router to abort. */
void ta_admin_pwjob_submit(actx_t *c, pwjob_t *j);
/** Store the new_hash of a finished pwjob into u; replies 500 and returns
 *  <0 when the hashing failed. */
int ta_admin_pwjob_hash_into(actx_t *c, const pwjob_t *j, ta_user_t *u);

/* ---- handlers ----------------------------------------------------------- */
void ta_admin_login(actx_t *c);
void ta_admin_logout(actx_t *c);
void ta_admin_me(actx_t *c);
void ta_admin_password(actx_t *c);
void ta_admin_my_quotas(actx_t *c);

void ta_admin_users_list(actx_t *c);
void ta_admin_users_create(actx_t *c);
void ta_admin_users_get(actx_t *c);
void ta_admin_users_update(actx_t *c);
void ta_admin_users_delete(actx_t *c);

void ta_admin_providers_list(actx_t *c);
void ta_admin_providers_create(actx_t *c);
void ta_admin_providers_get(actx_t *c);
void ta_admin_providers_update(actx_t *c);
void ta_admin_providers_delete(actx_t *c);
/* provider_calls.c: answer through an outbound call (ta_apires_t.fetch) */
void ta_admin_providers_test(actx_t *c);
void ta_admin_providers_sync_models(actx_t *c);

void ta_admin_models_list(actx_t *c);
void ta_admin_models_create(actx_t *c);
void ta_admin_models_get(actx_t *c);
void ta_admin_models_update(actx_t *c);
void ta_admin_models_delete(actx_t *c);

void ta_admin_groups_list(actx_t *c);
void ta_admin_groups_create(actx_t *c);
void ta_admin_groups_get(actx_t *c);
void ta_admin_groups_update(actx_t *c);
void ta_admin_groups_delete(actx_t *c);

void ta_admin_quotas_list(actx_t *c);
void ta_admin_quotas_create(actx_t *c);
void ta_admin_quotas_get(actx_t *c);
void ta_admin_quotas_update(actx_t *c);
void ta_admin_quotas_delete(actx_t *c);

/* keys.c */
void ta_admin_quotas_reset_key(actx_t *c);
void ta_admin_users_reset_keys(actx_t *c);

/* audit records and statistics (requests.c) */
void ta_admin_quota_requests(actx_t *c);
void ta_admin_quota_statistics(actx_t *c);
void ta_admin_requests_list(actx_t *c);
void ta_admin_statistics(actx_t *c);
void ta_admin_my_statistics(actx_t *c);
void ta_admin_my_quota_statistics(actx_t *c);

/* the caller's own records (requests.c) and key (keys.c) */
void ta_admin_my_requests(actx_t *c);
void ta_admin_my_quota_reset_key(actx_t *c);

/* one record and the export (requests.c) */
void ta_admin_requests_get(actx_t *c);
void ta_admin_requests_export(actx_t *c);

/* warnings raised by billing (warnings.c) */
void ta_admin_warnings_list(actx_t *c);

/* the live figures (status.c) */
void ta_admin_status(actx_t *c);

/* the OpenAPI document as JSON (openapi.c) */
void ta_admin_openapi(actx_t *c);

#endif
