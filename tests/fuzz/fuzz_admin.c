/*
 * fuzz_admin.c - the admin API router and handlers (ta_admin_handle) on a
 * real ledger: LMDB in a mkdtemp() directory made once per process, a
 * superadmin (user 1) and a plain user (user 2). State carries over from one
 * input to the next, as on a server (records created by one input are seen
 * by the next); the replay of a corpus is deterministic because it starts
 * from the same fresh store and runs the files in name order.
 *
 * Input: the first line is "METHOD TARGET [AUTH]", the rest is the body.
 *   TARGET  path, optionally "?query"
 *   AUTH    absent or "admin": a fresh token of user 1; "user": of user 2;
 *           "none": no Authorization header; anything else is sent as the
 *           Authorization value itself.
 * A handler that asks for an outbound call (res.fetch: provider test, model
 * sync) gets the body back as the provider's 200 answer, so the parsers of
 * provider answers are fuzzed too.
 *
 * Kept cheap: PBKDF2 at its minimum (1000 iterations), small maps. After an
 * input that disabled, demoted or deleted user 1 or 2, they are restored
 * directly in the store, so later inputs keep reaching the handlers behind
 * authentication.
 *
 * Checked (api.h, API.md): status 100..599 and never 500 (but for the
 * known ones listed at known_500()); a JSON body parses; every status
 * >= 400 carries {"error":{...}}; 405 fills Allow; a fetch has a URL, a
 * continuation and a release, and the continuation's answer never asks for a
 * second fetch.
 */
#include <errno.h>
#include <ftw.h>
#include <string.h>
#include <unistd.h>

#include "admin/admin.h"
#include "admin/crypto.h"
#include "fuzz.h"

static char dir[128];
static ta_store_t *st;
static ta_admin_t *adm;
static uint8_t jwt_secret[32], master_key[32];
static ta_user_t saved[3]; /* users 1 and 2 as created */
static bool verbose;


static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(p) == -1 ? -1 : 0;
}

static void cleanup(void)
{
    if (adm != NULL)
        ta_admin_destroy(adm);
    if (st != NULL)
        ta_store_close(st);
    if (dir[0] != '\0')
        nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

typedef struct call {
    ta_apireq_t req;
    ta_apires_t res;
    char *token;
} call_t;

static void check_res(const ta_apires_t *res)
{
    FUZZ_CHECK(res->status >= 100 && res->status <= 599);
    if (res->body != NULL && res->content_type == NULL) {
        json_error_t jerr;
        json_t *j = json_loadb(res->body, res->body_len, 0, &jerr);
        if (j == NULL)
            fprintf(stderr, "fuzz_admin: status %d body is not JSON: %.*s\n", res->status,
                    (int)(res->body_len > 300 ? 300 : res->body_len), res->body);
        FUZZ_CHECK(j != NULL);
        if (res->status >= 400)
            FUZZ_CHECK(json_is_object(json_object_get(j, "error")));
        json_decref(j);
    } else if (res->status >= 400) {
        FUZZ_CHECK(res->body != NULL); /* errors always say what went wrong */
    }
    /* 500 means a handler failed on its input rather than refusing it with
     * a 4xx; the stores here have room, so no 500 is legitimate. */
    if (res->status == 500)
        fprintf(stderr, "fuzz_admin: 500: %.*s\n", (int)res->body_len, res->body ? res->body : "");
    FUZZ_CHECK(res->status != 500);
    if (res->status == 405)
        FUZZ_CHECK(res->allow[0] != '\0');
    FUZZ_CHECK(strnlen(res->allow, sizeof(res->allow)) < sizeof(res->allow));
}

/* Answers res->fetch with `body` as the provider's 200, releases it, and
 * leaves the continuation's answer in *res. */
static void complete_fetch(ta_apires_t *res, const char *body, size_t body_len)
{
    ta_api_fetch_t *f = res->fetch;
    FUZZ_CHECK(res->body == NULL); /* the router's answer is ignored: it must not leak */
    FUZZ_CHECK(f->cont != NULL && f->release != NULL);
    FUZZ_CHECK(strnlen(f->url, sizeof(f->url)) < sizeof(f->url) && f->url[0] != '\0');
    FUZZ_CHECK(f->nheaders <= TA_API_FETCH_MAX_HEADERS);
    for (size_t i = 0; i < f->nheaders; i++)
        FUZZ_CHECK(strnlen(f->headers[i], TA_API_FETCH_HEADER_MAX) < TA_API_FETCH_HEADER_MAX);
    FUZZ_CHECK(f->connect_timeout_ms > 0 && f->total_timeout_ms > 0);

    char *copy = malloc(body_len + 1); /* result bodies are NUL-terminated */
    FUZZ_CHECK(copy != NULL);
    if (body_len)
        memcpy(copy, body, body_len);
    copy[body_len] = '\0';
    ta_api_fetch_result_t r = {.status = 200, .error = "", .body = copy, .body_len = body_len,
                               .latency_ms = 12};
    memset(res, 0, sizeof(*res));
    f->cont(adm, f->cont_arg, &r, res);
    FUZZ_CHECK(res->fetch == NULL); /* one outbound call per request */
    f->release(f);
    free(copy);
}

/* Runs an offloaded job (password work) inline, as the worker's pool and
 * loop would, and leaves the continuation's answer in *res. */
static void complete_job(ta_apires_t *res)
{
    ta_api_job_t *jb = res->job;
    FUZZ_CHECK(res->fetch == NULL && jb->work != NULL && jb->cont != NULL && jb->release != NULL);
    free(res->body); /* the router's answer is replaced by the continuation's */
    memset(res, 0, sizeof(*res));
    jb->work(jb->arg);
    jb->cont(adm, jb->arg, res);
    FUZZ_CHECK(res->job == NULL && res->fetch == NULL); /* one job per request */
    jb->release(jb);
}

static void handle(const char *method, const char *path, size_t plen, const char *query,
                   size_t qlen, const char *auth, const char *body, size_t blen, ta_apires_t *res)
{
    ta_apireq_t req = {.method = method, .path = path, .path_len = plen, .query = query,
                       .query_len = qlen, .body = body, .body_len = blen,
                       .authorization = auth, .authorization_len = auth ? strlen(auth) : 0,
                       .base_url = "http://127.0.0.1:8080", .request_id = "fuzz",
                       .client_ip = "127.0.0.1"};
    memset(res, 0, sizeof(*res));
    ta_admin_handle(adm, &req, res);
    if (res->fetch != NULL)
        complete_fetch(res, body != NULL ? body : "", blen);
    else if (res->job != NULL)
        complete_job(res);
    check_res(res);
}

/* "Bearer <token>" for a user, malloc'd. */
static char *bearer(uint64_t uid, int role)
{
    char *tok = NULL, *h;
    ta_jwt_claims_t cl;
    FUZZ_CHECK(ta_jwt_issue(jwt_secret, sizeof(jwt_secret), uid, role, 0, 3600, &tok, &cl) == 0);
    size_t n = strlen(tok) + 8;
    h = malloc(n);
    FUZZ_CHECK(h != NULL);
    snprintf(h, n, "Bearer %s", tok);
    free(tok);
    return h;
}

/* Puts users 1 and 2 back as created if an input changed them. */
static void restore_users(void)
{
    MDB_txn *txn = NULL;
    ta_user_t u;
    bool dirty = false;
    FUZZ_CHECK(ta_txn_begin(st, TA_ENV_LEDGER, false, &txn) == 0);
    for (uint64_t id = 1; id <= 2; id++)
        if (ta_rec_get(st, txn, &ta_desc_user, id, &u) != 0 || !u.is_active ||
            u.role != saved[id].role || u.pwhash_len != saved[id].pwhash_len ||
            memcmp(u.pwhash, saved[id].pwhash, u.pwhash_len) != 0)
            dirty = true;
    ta_txn_abort(txn);
    if (!dirty)
        return;
    FUZZ_CHECK(ta_txn_begin(st, TA_ENV_LEDGER, true, &txn) == 0);
    for (uint64_t id = 1; id <= 2; id++) {
        if (ta_rec_get(st, txn, &ta_desc_user, id, &u) == 0 && u.email[0] != '\0')
            ta_idx_del(st, txn, TA_DB_USERS_BY_EMAIL, u.email);
        /* another user may have taken the e-mail meanwhile: keep the record anyway */
        ta_idx_put(st, txn, TA_DB_USERS_BY_EMAIL, saved[id].email, id);
        FUZZ_CHECK(ta_rec_put(st, txn, &ta_desc_user, id, &saved[id]) == 0);
    }
    FUZZ_CHECK(ta_txn_commit(txn) == 0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *tmp = getenv("TMPDIR");
    ta_err_t err;
    ta_apires_t res;
    MDB_txn *txn;

    verbose = getenv("TA_FUZZ_VERBOSE") != NULL;
    ta_log_set_level(TA_LOG_ERROR + 1); /* handlers log refusals; keep the fuzzer quiet */
    snprintf(dir, sizeof(dir), "%.80s/ta-fuzz-admin-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (mkdtemp(dir) == NULL) {
        fprintf(stderr, "fuzz_admin: mkdtemp: %s\n", strerror(errno));
        abort();
    }
    atexit(cleanup);
    ta_store_opts_t o = {.create = true, .ledger_map_size = 256u << 20,
                         .audit_map_size = 64u << 20};
    FUZZ_CHECK(ta_store_open(&st, dir, &o) == 0);
    FUZZ_CHECK(ta_random(jwt_secret, sizeof(jwt_secret)) == 0);
    FUZZ_CHECK(ta_random(master_key, sizeof(master_key)) == 0);
    ta_admin_conf_t conf = {.store = st, .jwt_secret = jwt_secret,
                            .jwt_secret_len = sizeof(jwt_secret), .master_key = master_key,
                            .jwt_ttl_s = 3600, .pbkdf2_iterations = 1000, .max_body = 1u << 20};
    FUZZ_CHECK(ta_admin_create(&adm, &conf) == 0);
    FUZZ_CHECK(ta_admin_create_superadmin(st, "root@example.com", "fuzz-password-1", 1000, &err) == 0);

    char *admin = bearer(1, TA_ROLE_SUPERADMIN);
    static const char user_body[] =
        "{\"email\":\"user@example.com\",\"name\":\"U\",\"password\":\"fuzz-password-2\"}";
    handle("POST", "/api/admin/users/", 17, NULL, 0, admin, user_body, sizeof(user_body) - 1, &res);
    FUZZ_CHECK(res.status == 201 || res.status == 200);
    free(res.body);
    free(admin);

    FUZZ_CHECK(ta_txn_begin(st, TA_ENV_LEDGER, false, &txn) == 0);
    FUZZ_CHECK(ta_rec_get(st, txn, &ta_desc_user, 1, &saved[1]) == 0);
    FUZZ_CHECK(ta_rec_get(st, txn, &ta_desc_user, 2, &saved[2]) == 0);
    ta_txn_abort(txn);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char line[1024], method[16], *auth = NULL;
    const char *body = NULL;
    size_t blen = 0;

    const uint8_t *nl = memchr(data, '\n', size);
    size_t llen = nl != NULL ? (size_t)(nl - data) : size;
    if (llen >= sizeof(line) || memchr(data, '\0', llen) != NULL)
        return 0;
    memcpy(line, data, llen);
    line[llen] = '\0';
    if (nl != NULL) {
        body = (const char *)nl + 1;
        blen = size - llen - 1;
    }

    /* METHOD SP TARGET [SP AUTH] */
    char *sp = strchr(line, ' ');
    if (sp == NULL || (size_t)(sp - line) >= sizeof(method))
        return 0;
    memcpy(method, line, (size_t)(sp - line));
    method[sp - line] = '\0';
    char *target = sp + 1, *a = strchr(target, ' ');
    if (a != NULL)
        *a++ = '\0';
    if (a == NULL || strcmp(a, "admin") == 0)
        auth = bearer(1, TA_ROLE_SUPERADMIN);
    else if (strcmp(a, "user") == 0)
        auth = bearer(2, TA_ROLE_USER);
    else if (strcmp(a, "none") != 0)
        auth = strdup(a);
    char *q = strchr(target, '?');
    size_t plen = q != NULL ? (size_t)(q - target) : strlen(target);
    const char *query = q != NULL ? q + 1 : NULL;
    size_t qlen = q != NULL ? strlen(q + 1) : 0;

    ta_apires_t res;
    handle(method, target, plen, query, qlen, auth, body, blen, &res);
    if (verbose) /* TA_FUZZ_VERBOSE=1: what each seed reached */
        fprintf(stderr, "fuzz_admin: %s %s -> %d %.*s\n", method, target, res.status,
                (int)(res.body_len > 160 ? 160 : res.body_len), res.body ? res.body : "");
    free(res.body);
    free(auth);
    restore_users();
    return 0;
}
