/*
 * admin_lists_bench.c - how the admin lists and statistics scale with the
 * tables (bench/admin_lists.sh builds and runs it).
 *
 * In a fresh data directory (mkdtemp) it writes, with the library and not
 * over HTTP: USERS users and as many quotas (GROUPS groups, MODELS models on
 * PROVIDERS providers), then audit records as billing writes them (a batch
 * of ta_audit_batch_put per transaction, the aggregates flushed before each
 * commit): for each size of SIZES a fresh audit environment (the ledger
 * stays) holding that many records over the 30 days before now (a Weyl
 * sequence, so every size covers the whole span evenly), written oldest
 * first as billing meets them, so each UTC day's user totals (user_cum) are
 * made when its first record is flushed. After each size it times, through
 * ta_admin_handle() (the router the workers call, with a superadmin JWT, and
 * a normal user's JWT for their own statistics), the first, a middle and the
 * last page of every admin list (keyset positions: ?after= / ?before=) and
 * of the audit lists, and the statistics (whole range, one quota, one user,
 * the user's own; grouped by day, hour, model, provider, group and user; in
 * UTC and in Asia/Shanghai). Each figure is the median of REPS runs, in ms.
 * The last lines compare the sizes: the time at the largest size over the
 * time at the smallest.
 *
 * usage: admin_lists_bench [USERS [SIZE...]]   (default 100000 200000 2000000)
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "admin/admin.h"
#include "admin/crypto.h"
#include "ledger/audit.h"
#include "ledger/store.h"

#define MODELS 8
#define PROVIDERS 3
#define GROUPS 2
#define REPS 7
#define PAGE 50
#define MAX_SIZES 4
#define MAX_CASES 64
#define DAY_NS (86400LL * 1000000000LL)
#define SPAN_NS (30 * DAY_NS)

static ta_store_t *st;
static ta_admin_t *adm;
static ta_store_opts_t so;
static ta_admin_conf_t ac;
static char dir[] = "/tmp/ta-bench-XXXXXX";
static char auth[1024], user_auth[1024];
static uint64_t nusers;
static int64_t t0_ns; /* the first record's time */

typedef struct bcase {
    char name[64];
    char url[256];
    bool self; /* as the normal user */
    double ms[MAX_SIZES];
} bcase_t;

static bcase_t cases[MAX_CASES];
static size_t ncases;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "admin_lists_bench: %s: %s\n", what, ta_strerror(rc));
    exit(1);
}

/* One request through the router; returns its time in ms. */
static double request(const char *url, bool self, int *status)
{
    ta_apireq_t rq;
    ta_apires_t rs;
    const char *q = strchr(url, '?');
    double t;

    memset(&rq, 0, sizeof(rq));
    rq.method = "GET";
    rq.path = url;
    rq.path_len = q != NULL ? (size_t)(q - url) : strlen(url);
    if (q != NULL) {
        rq.query = q + 1;
        rq.query_len = strlen(q + 1);
    }
    rq.authorization = self ? user_auth : auth;
    rq.authorization_len = strlen(rq.authorization);
    rq.base_url = "http://bench";
    rq.request_id = "bench";
    rq.client_ip = "127.0.0.1";
    t = now_ms();
    ta_admin_handle(adm, &rq, &rs);
    t = now_ms() - t;
    *status = rs.status;
    free(rs.body);
    return t;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median_ms(const char *url, bool self)
{
    double v[REPS];
    int status;

    for (int i = 0; i < REPS; i++) {
        v[i] = request(url, self, &status);
        if (status != 200) {
            fprintf(stderr, "admin_lists_bench: GET %s answered %d\n", url, status);
            exit(1);
        }
    }
    qsort(v, REPS, sizeof(v[0]), cmp_double);
    return v[REPS / 2];
}

static void add_case(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add_case(const char *name, const char *fmt, ...)
{
    va_list ap;
    bcase_t *c = &cases[ncases++];

    snprintf(c->name, sizeof(c->name), "%s", name);
    c->self = false;
    va_start(ap, fmt);
    vsnprintf(c->url, sizeof(c->url), fmt, ap);
    va_end(ap);
}

static void rid_of(uint64_t i, uint8_t rid[16])
{
    memset(rid, 0, 16);
    ta_be64_put(rid + 8, i + 1);
}

/* When record i was received: a Weyl sequence over the 30 days before now,
 * so the first records already cover the whole span and later ones fill it. */
static int64_t time_of(uint64_t i)
{
    uint64_t frac = (i + 1) * 0x9E3779B97F4A7C15ULL;
    return t0_ns + (int64_t)((unsigned __int128)frac * (uint64_t)SPAN_NS >> 64);
}

/* The quota of record i: one in ten goes to quota 7 (user 8, a busy
 * customer: its pages are full and its statistics cover every hour and
 * model), the others spread over all quotas. */
static uint64_t quota_of(uint64_t i)
{
    return i % 10 == 0 ? 7 : 1 + i % nusers;
}

/* A keyset cursor at time t (after every record of that nanosecond), hex. */
static void cursor_at(int64_t t, char *out)
{
    uint8_t key[TA_AUDIT_KEY_LEN];

    ta_be64_put(key, (uint64_t)t);
    memset(key + 8, 0xff, 16);
    ta_hex(key, sizeof(key), out);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void populate_ledger(void)
{
    MDB_txn *txn;
    ta_group_t *g = calloc(1, sizeof(*g));
    ta_user_t *u = calloc(1, sizeof(*u));
    ta_quota_t *q = calloc(1, sizeof(*q));
    ta_model_t *m = calloc(1, sizeof(*m));
    ta_provider_t *p = calloc(1, sizeof(*p));
    int rc;

    if ((rc = ta_txn_begin(st, TA_ENV_LEDGER, true, &txn)) != 0)
        die("txn", rc);
    for (uint64_t i = 1; i <= PROVIDERS; i++) {
        memset(p, 0, sizeof(*p));
        p->id = i;
        snprintf(p->name, sizeof(p->name), "provider-%llu", (unsigned long long)i);
        snprintf(p->base_url, sizeof(p->base_url), "https://p%llu.example.com/v1", (unsigned long long)i);
        p->is_active = true;
        if ((rc = ta_rec_put(st, txn, &ta_desc_provider, i, p)) != 0)
            die("provider", rc);
    }
    for (uint64_t i = 1; i <= MODELS; i++) {
        memset(m, 0, sizeof(*m));
        m->id = i;
        snprintf(m->name, sizeof(m->name), "model-%llu", (unsigned long long)i);
        m->routes[0].provider_id = 1 + i % PROVIDERS;
        snprintf(m->routes[0].upstream_name, sizeof(m->routes[0].upstream_name), "up-%llu",
                 (unsigned long long)i);
        m->routes[0].priority = 1;
        m->nroutes = 1;
        m->is_active = true;
        if ((rc = ta_rec_put(st, txn, &ta_desc_model, i, m)) != 0 ||
            (rc = ta_idx_put(st, txn, TA_DB_MODELS_BY_NAME, m->name, i)) != 0)
            die("model", rc);
    }
    for (uint64_t i = 1; i <= GROUPS; i++) {
        memset(g, 0, sizeof(*g));
        snprintf(g->name, sizeof(g->name), "bench-%llu", (unsigned long long)i);
        g->id = i;
        if ((rc = ta_rec_put(st, txn, &ta_desc_group, i, g)) != 0)
            die("group", rc);
    }
    for (uint64_t i = 2; i <= nusers + 1; i++) { /* user 1 is the superadmin */
        memset(u, 0, sizeof(*u));
        u->id = i;
        snprintf(u->email, sizeof(u->email), "user%llu@bench.test", (unsigned long long)i);
        snprintf(u->name, sizeof(u->name), "User %llu", (unsigned long long)i);
        u->is_active = true;
        u->created_at = u->updated_at = ta_now_s();
        if ((rc = ta_rec_put(st, txn, &ta_desc_user, i, u)) != 0 ||
            (rc = ta_idx_put(st, txn, TA_DB_USERS_BY_EMAIL, u->email, i)) != 0)
            die("user", rc);
        memset(q, 0, sizeof(*q));
        q->id = i - 1;
        q->user_id = i;
        q->group_id = 1 + q->id % GROUPS;
        q->is_active = true;
        q->created_at = q->updated_at = ta_now_s();
        if ((rc = ta_rec_put(st, txn, &ta_desc_quota, q->id, q)) != 0)
            die("quota", rc);
    }
    if ((rc = ta_txn_commit(txn)) != 0)
        die("commit", rc);
    free(g);
    free(u);
    free(q);
    free(m);
    free(p);
}

/* Records [from, to): at time_of(i), quota quota_of(i) (its group), model
 * i / 3 % MODELS (its provider), as billing writes them. */
static int cmp_time(const void *a, const void *b)
{
    int64_t x = time_of(*(const uint64_t *)a), y = time_of(*(const uint64_t *)b);
    return x < y ? -1 : x > y;
}

/* A fresh audit environment (the ledger and the admin's users stay), its
 * aggregates current as billing leaves them when it starts. */
static void fresh_audit(void)
{
    char path[64];
    int rc;
    ta_admin_destroy(adm);
    ta_store_close(st);
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "%s/audit/%s", dir, i ? "lock.mdb" : "data.mdb");
        if (unlink(path) != 0 && errno != ENOENT)
            die("unlink", -errno);
    }
    if ((rc = ta_store_open(&st, dir, &so)) != 0)
        die("store", rc);
    if ((rc = ta_audit_upgrade(st)) != 0)
        die("aggregates", rc);
    ac.store = st;
    if ((rc = ta_admin_create(&adm, &ac)) != 0)
        die("admin", rc);
}

static void populate_audit(uint64_t from, uint64_t to)
{
    ta_audit_t r;
    ta_audit_batch_t *ab;
    MDB_txn *txn = NULL;
    uint64_t *ord = malloc((to - from) * sizeof(*ord));
    int rc;

    if (ord == NULL)
        die("order", -ENOMEM);
    for (uint64_t i = from; i < to; i++)
        ord[i - from] = i;
    qsort(ord, to - from, sizeof(*ord), cmp_time); /* oldest first, as billing meets them */
    if ((rc = ta_audit_batch_new(&ab)) != 0)
        die("batch", rc);
    for (uint64_t j = from; j < to; j++) {
        uint64_t i = ord[j - from];
        if (txn == NULL && (rc = ta_txn_begin(st, TA_ENV_AUDIT, true, &txn)) != 0)
            die("audit txn", rc);
        memset(&r, 0, sizeof(r));
        rid_of(i, r.request_id);
        r.t_received_ns = time_of(i);
        r.t_done_ns = r.t_received_ns + 250000000;
        r.quota_id = quota_of(i);
        r.user_id = r.quota_id + 1;
        r.model_id = 1 + i / 3 % MODELS;
        r.provider_id = 1 + r.model_id % PROVIDERS;
        snprintf(r.model, sizeof(r.model), "model-%llu", (unsigned long long)r.model_id);
        snprintf(r.served_model, sizeof(r.served_model), "up-%llu", (unsigned long long)r.model_id);
        r.status = i % 50 == 0 ? 502 : 200;
        r.prompt_tokens = 100;
        r.completion_tokens = 20;
        r.cost = 1500;
        r.latency_ms = 250;
        if ((rc = ta_audit_batch_put(ab, st, txn, &r, 1 + r.quota_id % GROUPS)) < 0)
            die("audit put", rc);
        if ((j + 1) % 20000 == 0 || j + 1 == to) {
            if ((rc = ta_audit_batch_flush(ab, st, txn)) != 0 || (rc = ta_txn_commit(txn)) != 0)
                die("audit commit", rc);
            txn = NULL;
        }
    }
    ta_audit_batch_free(ab);
    free(ord);
}

/* Entries and size of the audit tables: what the aggregates cost in space. */
static void print_tables(void)
{
    static const struct {
        ta_db_t db;
        const char *name;
    } dbs[] = {{TA_DB_AUDIT_REQUESTS, "records"},
               {TA_DB_AUDIT_BY_QUOTA, "quota index"},
               {TA_DB_AUDIT_DAILY, "aggregates"},
               {TA_DB_AUDIT_USER_COST, "user_cost"},
               {TA_DB_AUDIT_USER_CUM, "user_cum"}};
    MDB_txn *txn;
    MDB_stat ms;
    int rc;

    if ((rc = ta_txn_begin(st, TA_ENV_AUDIT, false, &txn)) != 0)
        die("txn", rc);
    printf("  tables:");
    for (size_t i = 0; i < TA_ARRAY_SIZE(dbs); i++) {
        if (mdb_stat(txn, ta_store_dbi(st, dbs[i].db), &ms) != 0)
            die("stat", TA_ELMDB);
        if (dbs[i].db == TA_DB_AUDIT_USER_COST || dbs[i].db == TA_DB_AUDIT_USER_CUM)
            /* their pages are in sub-databases mdb_stat leaves out */
            printf("; %s %zu entries of 24 bytes", dbs[i].name, ms.ms_entries);
        else
            printf("%s %s %zu rows, %.1f MiB", i ? ";" : "", dbs[i].name, ms.ms_entries,
                   (double)(ms.ms_branch_pages + ms.ms_leaf_pages + ms.ms_overflow_pages) *
                       ms.ms_psize / 1048576.0);
    }
    printf("\n");
    ta_txn_abort(txn);
}

static void build_cases(uint64_t size)
{
    static const char *const lists[] = {"users", "quotas"};
    char cur[TA_AUDIT_KEY_LEN * 2 + 1];
    int64_t *qt = calloc(size / 10 + size / nusers + 2, sizeof(*qt));
    size_t nq = 0;

    ncases = 0;
    for (size_t i = 0; i < 2; i++) {
        char n[64];
        uint64_t rows = nusers, first = strcmp(lists[i], "users") == 0 ? 1 : 0;
        snprintf(n, sizeof(n), "%s first", lists[i]);
        add_case(n, "/api/admin/%s/?page_size=%d", lists[i], PAGE);
        snprintf(n, sizeof(n), "%s middle", lists[i]);
        add_case(n, "/api/admin/%s/?page_size=%d&after=%llu", lists[i], PAGE,
                 (unsigned long long)(first + rows / 2));
        snprintf(n, sizeof(n), "%s last", lists[i]);
        add_case(n, "/api/admin/%s/?page_size=%d&before=%llu", lists[i], PAGE,
                 (unsigned long long)(first + rows + 1));
        snprintf(n, sizeof(n), "%s filtered", lists[i]);
        add_case(n, "/api/admin/%s/?page_size=%d&%s", lists[i], PAGE,
                 i == 0 ? "search=user7" : "group_id=1");
    }
    add_case("requests first", "/api/admin/requests/?page_size=%d", PAGE);
    cursor_at(t0_ns + SPAN_NS / 2, cur);
    add_case("requests middle", "/api/admin/requests/?page_size=%d&before=%s", PAGE, cur);
    cursor_at(t0_ns + (int64_t)((double)SPAN_NS * 2 * PAGE / (double)size), cur); /* ~2 pages left */
    add_case("requests last", "/api/admin/requests/?page_size=%d&before=%s", PAGE, cur);
    add_case("requests status=502", "/api/admin/requests/?page_size=%d&status=502", PAGE);
    /* quota 7 (busy): its middle record and its third oldest */
    for (uint64_t i = 0; i < size && qt != NULL; i++)
        if (quota_of(i) == 7)
            qt[nq++] = time_of(i);
    qsort(qt, nq, sizeof(*qt), cmp_i64);
    add_case("quota requests first", "/api/admin/quotas/7/requests/?page_size=%d", PAGE);
    cursor_at(nq ? qt[nq / 2] : t0_ns, cur);
    add_case("quota requests middle", "/api/admin/quotas/7/requests/?page_size=%d&before=%s", PAGE,
             cur);
    cursor_at(nq > 2 ? qt[2] - 1 : t0_ns, cur);
    add_case("quota requests last", "/api/admin/quotas/7/requests/?page_size=%d&before=%s", PAGE,
             cur);
    free(qt);
    add_case("statistics", "/api/admin/statistics/");
    add_case("statistics by hour", "/api/admin/statistics/?group_by=hour");
    add_case("stats by hour, Shanghai", "/api/admin/statistics/?group_by=hour&tz=Asia/Shanghai");
    add_case("stats by day, Shanghai", "/api/admin/statistics/?group_by=day&tz=Asia/Shanghai");
    add_case("statistics by model", "/api/admin/statistics/?group_by=model");
    add_case("statistics by provider", "/api/admin/statistics/?group_by=provider");
    add_case("statistics by group", "/api/admin/statistics/?group_by=group");
    char since[40];
    ta_time_format((t0_ns + SPAN_NS) / 1000000000LL - 7 * 86400, since);
    add_case("statistics last 7 days", "/api/admin/statistics/?group_by=hour&since=%s", since);
    add_case("statistics one user", "/api/admin/statistics/?user_id=8&group_by=hour");
    add_case("quota statistics", "/api/admin/quotas/7/statistics/?group_by=model");
    add_case("quota stats by hour", "/api/admin/quotas/7/statistics/?group_by=hour&tz=Asia/Shanghai");
    add_case("own statistics", "/api/statistics/?group_by=hour&tz=Asia/Shanghai");
    cases[ncases - 1].self = true;
    add_case("own quota statistics", "/api/quotas/7/statistics/?group_by=day");
    cases[ncases - 1].self = true;
    /* the costliest users: user_cost ranks them, then only their rows are read */
    add_case("by user (top 100)", "/api/admin/statistics/?group_by=user");
    add_case("by user, top 10", "/api/admin/statistics/?group_by=user&limit=10");
    add_case("by user, top 1000", "/api/admin/statistics/?group_by=user&limit=1000");
    add_case("by user, 7 days, top 8", "/api/admin/statistics/?group_by=user&limit=8&since=%s", since);
    add_case("by day, top 5 users", "/api/admin/statistics/?group_by=day,user&limit=5");
}

int main(int argc, char **argv)
{
    char *tok = NULL;
    uint64_t sizes[MAX_SIZES] = {200000, 2000000}, done = 0;
    size_t nsizes = 2;
    uint8_t secret[32], mkey[32];
    ta_jwt_claims_t claims;
    ta_err_t err;
    bcase_t saved[MAX_CASES];
    int rc;

    nusers = argc > 1 ? strtoull(argv[1], NULL, 10) : 100000;
    if (argc > 2) {
        nsizes = 0;
        for (int i = 2; i < argc && nsizes < MAX_SIZES; i++)
            sizes[nsizes++] = strtoull(argv[i], NULL, 10);
    }
    if (mkdtemp(dir) == NULL)
        die("mkdtemp", -errno);
    memset(&so, 0, sizeof(so));
    so.create = true;
    so.audit_map_size = (size_t)16 << 30;
    so.ledger_map_size = (size_t)4 << 30;
    if ((rc = ta_store_open(&st, dir, &so)) != 0)
        die("store", rc);
    /* what billing does when it starts: marks the (empty) aggregates current */
    if ((rc = ta_audit_upgrade(st)) != 0)
        die("aggregates", rc);
    if ((rc = ta_random(secret, sizeof(secret))) != 0 || (rc = ta_random(mkey, sizeof(mkey))) != 0)
        die("random", rc);
    if ((rc = ta_admin_create_superadmin(st, "root@bench.test", "bench-password-1", 1000, &err)) != 0)
        die("superadmin", rc);
    memset(&ac, 0, sizeof(ac));
    ac.store = st;
    ac.jwt_secret = secret;
    ac.jwt_secret_len = sizeof(secret);
    ac.master_key = mkey;
    ac.pbkdf2_iterations = 1000;
    if ((rc = ta_admin_create(&adm, &ac)) != 0)
        die("admin", rc);
    if ((rc = ta_jwt_issue(secret, sizeof(secret), 1, TA_ROLE_SUPERADMIN, 0, 3600, &tok, &claims)) != 0)
        die("jwt", rc);
    snprintf(auth, sizeof(auth), "Bearer %s", tok);
    free(tok);
    /* user 8 (quota 7) for their own statistics */
    if ((rc = ta_jwt_issue(secret, sizeof(secret), 8, TA_ROLE_USER, 0, 3600, &tok, &claims)) != 0)
        die("jwt", rc);
    snprintf(user_auth, sizeof(user_auth), "Bearer %s", tok);
    free(tok);
    t0_ns = ta_now_ns() - SPAN_NS;

    printf("data directory %s; %llu users, %llu quotas; records over the last 30 days\n", dir,
           (unsigned long long)nusers, (unsigned long long)nusers);
    double t = now_ms();
    populate_ledger();
    printf("ledger written in %.1f s\n", (now_ms() - t) / 1e3);
    for (size_t s = 0; s < nsizes; s++) {
        t = now_ms();
        if (s > 0)
            fresh_audit();
        populate_audit(0, sizes[s]);
        done = sizes[s];
        printf("\n%llu audit records (written in %.1f s); median of %d runs, ms\n",
               (unsigned long long)done, (now_ms() - t) / 1e3, REPS);
        print_tables();
        build_cases(done);
        for (size_t i = 0; i < ncases; i++) {
            cases[i].ms[s] = median_ms(cases[i].url, cases[i].self);
            printf("  %-24s %8.2f   GET %s\n", cases[i].name, cases[i].ms[s], cases[i].url);
            saved[i].ms[s] = cases[i].ms[s];
            memcpy(saved[i].name, cases[i].name, sizeof(saved[i].name));
            /* TA_BENCH_PLANS=1: each user ranking also read each way (ledger/audit.h) */
            if (getenv("TA_BENCH_PLANS") != NULL && strstr(cases[i].url, "group_by=") != NULL &&
                strstr(cases[i].url, "user&") != NULL) {
                static const char *const plan[] = {"", "hours", "days merged", "days in a table"};
                for (int p = TA_RANK_HOURS; p <= TA_RANK_DAYS_TABLE; p++) {
                    ta_audit_rank_plan = p;
                    printf("    %-22s %8.2f\n", plan[p], median_ms(cases[i].url, cases[i].self));
                }
                ta_audit_rank_plan = TA_RANK_AUTO;
            }
        }
    }
    if (nsizes > 1) {
        printf("\n%-24s %10s %10s %7s\n", "", "smallest", "largest", "ratio");
        for (size_t i = 0; i < ncases; i++)
            printf("  %-22s %10.2f %10.2f %7.2f\n", saved[i].name, saved[i].ms[0],
                   saved[i].ms[nsizes - 1],
                   saved[i].ms[0] > 0 ? saved[i].ms[nsizes - 1] / saved[i].ms[0] : 0);
    }
    ta_admin_destroy(adm);
    ta_store_close(st);
    printf("\n(data directory %s: bench/admin_lists.sh removes it)\n", dir);
    return 0;
}
