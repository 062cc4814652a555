/*
 * test_store.c - ledger/store.c and ledger/dump.c against real LMDB
 * environments in a mkdtemp() directory, with real child processes for the
 * cross-process cases (each child opens its own handle after fork, as the
 * server's processes do).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "ledger/dump.h"
#include "ledger/store.h"

typedef struct fx {
    char root[64];      /* mkdtemp */
    char data[128];     /* root/data: created by ta_store_open */
} fx_t;

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    snprintf(f->root, sizeof(f->root), "/tmp/ta_store_XXXXXX");
    if (!mkdtemp(f->root))
        return -1;
    snprintf(f->data, sizeof(f->data), "%s/data", f->root);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    nftw(f->root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static ta_store_t *open_create(const fx_t *f)
{
    ta_store_opts_t o = {.create = true, .audit_map_size = 64u << 20};
    ta_store_t *st = NULL;
    assert_int_equal(ta_store_open(&st, f->data, &o), 0);
    assert_non_null(st);
    return st;
}

static int open_plain(ta_store_t **st, const fx_t *f, bool readonly)
{
    ta_store_opts_t o = {.readonly = readonly, .audit_map_size = 64u << 20};
    return ta_store_open(st, f->data, &o);
}

static void make_user(ta_user_t *u, uint64_t id, const char *email)
{
    memset(u, 0, sizeof(*u));
    u->id = id;
    snprintf(u->email, sizeof(u->email), "%s", email);
    snprintf(u->name, sizeof(u->name), "User %llu", (unsigned long long)id);
    u->role = TA_ROLE_USER;
    u->is_active = true;
    const char *h = "$pbkdf2$STOREPWHASHSECRET0123456789";
    u->pwhash_len = (uint16_t)strlen(h);
    memcpy(u->pwhash, h, u->pwhash_len);
    u->created_at = u->updated_at = 1764160157;
}

/* Run fn in a child process; returns its exit status (0 = all good). */
static int wait_child(pid_t pid)
{
    int status;
    while (waitpid(pid, &status, 0) == -1)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void read_byte(int fd)
{
    char c;
    while (read(fd, &c, 1) == -1 && errno == EINTR)
        ;
}

static void write_byte(int fd)
{
    char c = 'x';
    while (write(fd, &c, 1) == -1 && errno == EINTR)
        ;
}

/* Capture what ta_log writes to stderr during open. */
static int open_capturing(const fx_t *f, bool create, bool readonly, char *log, size_t cap)
{
    char path[160];
    snprintf(path, sizeof(path), "%s/stderr.txt", f->root);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    ta_store_opts_t o = {.create = create, .readonly = readonly, .audit_map_size = 64u << 20};
    ta_store_t *st = NULL;
    int rc = ta_store_open(&st, f->data, &o);
    dup2(saved, STDERR_FILENO);
    close(saved);
    ssize_t n = pread(fd, log, cap - 1, 0);
    log[n > 0 ? n : 0] = '\0';
    close(fd);
    if (st)
        ta_store_close(st);
    return rc;
}

/* ---- open / create ------------------------------------------------------------ */

static void test_create_open_reopen(void **state)
{
    fx_t *f = *state;
    char p[200], id1[64] = "", id2[64] = "";
    struct stat sb;
    ta_store_t *st = open_create(f);
    MDB_txn *txn;
    MDB_val k = {.mv_size = 11, .mv_data = "instance_id"}, v;
    uint64_t ver = 0;

    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof(p), "%s/%s", f->data, i ? "audit" : "ledger");
        assert_int_equal(stat(p, &sb), 0);
        assert_true(S_ISDIR(sb.st_mode));
        assert_int_equal(sb.st_mode & 0777, 0700);
        snprintf(p, sizeof(p), "%s/%s/data.mdb", f->data, i ? "audit" : "ledger");
        assert_int_equal(stat(p, &sb), 0);
    }
    assert_string_equal(ta_store_data_dir(st), f->data);

    assert_int_equal(ta_txn_begin(st, TA_ENV_LEDGER, false, &txn), 0);
    assert_int_equal(ta_meta_get_u64(st, txn, TA_ENV_LEDGER, "schema_version", &ver), 0);
    assert_int_equal(ver, TA_SCHEMA_VERSION);
    assert_int_equal(mdb_get(txn, ta_store_dbi(st, TA_DB_META), &k, &v), 0);
    assert_int_equal(v.mv_size, 32);
    memcpy(id1, v.mv_data, 32);
    for (int i = 0; i < 32; i++)
        assert_non_null(strchr("0123456789abcdef", id1[i]));
    assert_string_equal(ta_store_instance_id(st), id1);
    ta_txn_abort(txn);
    /* the audit environment carries the same instance id and schema version */
    assert_int_equal(ta_txn_begin(st, TA_ENV_AUDIT, false, &txn), 0);
    assert_int_equal(mdb_get(txn, ta_store_dbi(st, TA_DB_AUDIT_META), &k, &v), 0);
    assert_int_equal(v.mv_size, 32);
    assert_memory_equal(v.mv_data, id1, 32);
    assert_int_equal(ta_meta_get_u64(st, txn, TA_ENV_AUDIT, "schema_version", &ver), 0);
    assert_int_equal(ver, TA_SCHEMA_VERSION);
    ta_txn_abort(txn);
    ta_store_close(st);

    /* plain reopen, then a second create: the instance id stays */
    for (int round = 0; round < 2; round++) {
        st = NULL;
        if (round == 0)
            assert_int_equal(open_plain(&st, f, false), 0);
        else
            st = open_create(f);
        assert_int_equal(ta_txn_begin(st, TA_ENV_LEDGER, false, &txn), 0);
        assert_int_equal(mdb_get(txn, ta_store_dbi(st, TA_DB_META), &k, &v), 0);
        memcpy(id2, v.mv_data, 32);
        assert_string_equal(id1, id2);
        assert_string_equal(ta_store_instance_id(st), id1);
        ta_txn_abort(txn);
        ta_store_close(st);
    }

    /* a second data directory gets another instance id */
    fx_t other = *f;
    snprintf(other.data, sizeof(other.data), "%s/other", f->root);
    st = open_create(&other);
    assert_int_equal(ta_txn_begin(st, TA_ENV_LEDGER, false, &txn), 0);
    assert_int_equal(mdb_get(txn, ta_store_dbi(st, TA_DB_META), &k, &v), 0);
    assert_memory_not_equal(v.mv_data, id1, 32);
    ta_txn_abort(txn);
    ta_store_close(st);
}

static void test_refuse_missing_dir(void **state)
{
    fx_t *f = *state;
    ta_store_t *st = (ta_store_t *)1;
    struct stat sb;

    assert_int_equal(open_plain(&st, f, false), TA_ENOTFOUND);
    assert_null(st);
    assert_int_equal(open_plain(&st, f, true), TA_ENOTFOUND);
    /* refusing must not leave an empty environment behind */
    assert_int_equal(stat(f->data, &sb), -1);

    /* a directory that exists but was never initialized is refused too */
    assert_int_equal(mkdir(f->data, 0700), 0);
    assert_int_equal(open_plain(&st, f, false), TA_ENOTFOUND);
    char p[200];
    snprintf(p, sizeof(p), "%s/ledger/data.mdb", f->data);
    assert_int_equal(stat(p, &sb), -1);

    ta_store_opts_t bad = {.create = true, .readonly = true};
    assert_int_equal(ta_store_open(&st, f->data, &bad), TA_EINVAL);
}

static void test_refuse_newer_schema(void **state)
{
    fx_t *f = *state;
    ta_store_t *st = open_create(f);
    MDB_txn *txn;
    char log[4096];

    assert_int_equal(ta_txn_begin(st, TA_ENV_LEDGER, true, &txn), 0);
    assert_int_equal(ta_meta_put_u64(st, txn, TA_ENV_LEDGER, "schema_version", TA_SCHEMA_VERSION + 1), 0);
    assert_int_equal(ta_txn_commit(txn), 0);
    ta_store_close(st);

    assert_int_equal(open_capturing(f, false, false, log, sizeof(log)), TA_ESCHEMA);
    char want[128];
    snprintf(want, sizeof(want), "was written by schema version %d;", TA_SCHEMA_VERSION + 1);
    assert_non_null(strstr(log, want));
    snprintf(want, sizeof(want), "understands up to %d;", TA_SCHEMA_VERSION);
    assert_non_null(strstr(log, want));
    assert_non_null(strstr(log, "upgrade tokenaudit"));
    assert_non_null(strstr(log, f->data));
    assert_int_equal(open_capturing(f, false, true, log, sizeof(log)), TA_ESCHEMA);
    /* init on a newer directory must not "fix" it either */
    assert_int_equal(open_capturing(f, true, false, log, sizeof(log)), TA_ESCHEMA);
    assert_int_equal(open_capturing(f, false, false, log, sizeof(log)), TA_ESCHEMA);
}

/* ---- records ------------------------------------------------------------------- */

static void test_next_id(void **state)
{
    fx_t *f = *state;
    ta_store_t *st = open_create(f);
    MDB_txn *txn;
    uint64_t id = 0, prev = 0;
    ta_user_t u;

    for (int i = 0; i < 5; i++) {
        assert_int_equal(ta_txn_begin(st, TA_ENV_LEDGER, true, &txn), 0);
        assert_int_equal(ta_rec_next_id(st, txn, &ta_desc_user, &id), 0);
        assert_true(id > prev);
        assert_true(id >= 1);
        prev = id;
        assert_int_equal(ta_txn_commit(txn), 0);
    }
    assert_int_equal(prev, 5);

    /* an aborted transaction hands its id out again */
    assert_int_equal(ta_txn_begin(st, TA_ENV_LEDGER, true, &txn), 0);
    assert_int_equal(ta_rec_next_id(st, txn, &ta_desc_user, &id), 0);
    assert_int_equal(id, 6);
    ta_txn_abort(txn);

    /* tables count separately */
    assert_int_equal(ta_txn_begin(st, TA_ENV_LEDGER, true, &txn), 0);
    assert_int_equal(ta_rec_next_id(st, txn, &ta_desc_provider, &id), 0);
    assert_int_equal(id, 1);
    /* a record put under an explicit id is never handed out again */
    make_user(&u, 100, "explicit@example.com");
    assert_int_equal(ta_rec_put(st, txn, &ta_desc_user, 100, &u), 0);
    assert_int_equal(ta_rec_next_id(st, txn, &ta_desc_user, &id), 0);
    assert_int_equal(id, 101);
    assert_int_equal(ta_rec_next_id(st, txn, &ta_desc_user, &id), 0);
    assert_int_equal(id, 102);
    assert_int_equal(ta_txn_commit(txn), 0);
    ta_store_close(st);

    /* survives a reopen */
    assert_int_equal(open_plain(&st, f, false), 0);
    assert_int_equal(ta_txn_begin(st, TA_ENV_LEDGER, true, &txn), 0);
    assert_int_equal(ta_rec_next_id(st, txn, &ta_desc_user, &id), 0);
    assert_int_equal(id, 103);
    assert_int_equal(ta_meta_get_u64(st, txn, TA_ENV_LEDGER, "next_id.users", &id), 0);
    assert_int_equal(id, 104);
    assert_int_equal(ta_txn_commit(txn), 0);
    ta_store_close(st);
}

static void test_records_roundtrip(void **state)
{
    fx_t *f = *state;
    ta_store_t *st = open_create(f);
    MDB_txn *txn;

    ta_user_t u, u2;
    ta_provider_t p, p2;
    ta_model_t m, m2;
    ta_group_t g, g2;
    ta_quota_t q, q2;
    ta_balance_t b, b2;
    ta_keyrec_t kr, kr2;
    ta_hold_t h, h2;
    ta_revoked_t r, r2;
    uint8_t keyhash[32];
    const char *jti = "jti-0123456789";

    make_user(&u, 7, "alice@example.com");
    memset(&p, 0, sizeof(p));
    p.id = 3;
    snprintf(p.name, sizeof(p.name), "openai-main");
    p.type = TA_PROVIDER_ANTHROPIC;
    snprintf(p.base_url, sizeof(p.base_url), "https://api.example.com/v1");
    p.key_sealed_len = 40;
    memset(p.key_sealed, 0xA5, p.key_sealed_len);
    p.api_key_set = true;
    snprintf(p.api_key_last4, sizeof(p.api_key_last4), "wxyz");
    p.timeout_s = 600;
    p.connect_timeout_ms = 5000;
    p.is_active = true;

    memset(&m, 0, sizeof(m));
    m.id = 9;
    snprintf(m.name, sizeof(m.name), "gpt-4o");
    m.nroutes = 2;
    m.routes[0].provider_id = 3;
    snprintf(m.routes[0].upstream_name, sizeof(m.routes[0].upstream_name), "gpt-4o-2024");
    m.routes[1].provider_id = 4;
    m.routes[1].priority = 5;
    snprintf(m.routes[1].upstream_name, sizeof(m.routes[1].upstream_name), "gpt-4o-b");
    m.input_price = 2500000000LL;
    m.output_price = 10 * TA_NANO_PER_UNIT;
    m.has_prices = true;
    m.capabilities = TA_CAP_CHAT | TA_CAP_STREAMING;
    m.context_window = 128000;
    m.is_active = true;

    memset(&g, 0, sizeof(g));
    g.id = 2;
    snprintf(g.name, sizeof(g.name), "default");
    g.nmodels = 3;
    g.model_ids[0] = 9;
    g.model_ids[1] = 10;
    g.model_ids[2] = 11;
    g.default_quota.period = TA_PERIOD_MONTH;
    g.default_quota.cost_limit = 50 * TA_NANO_PER_UNIT;

    memset(&q, 0, sizeof(q));
    q.id = 4;
    q.user_id = 7;
    q.group_id = 2;
    q.limits.period = TA_PERIOD_DAY;
    q.limits.cost_limit = 5 * TA_NANO_PER_UNIT;
    q.limits.rpm = 60;
    q.limits.nwarn = 2;
    q.limits.warn_at[0] = 50;
    q.limits.warn_at[1] = 90;
    q.is_active = true;
    snprintf(q.key_prefix, sizeof(q.key_prefix), "sk-abcdefgh");
    for (int i = 0; i < 32; i++)
        keyhash[i] = (uint8_t)(0xC0 + i);
    memcpy(q.key_hash, keyhash, 32);
    q.key_hash_len = 32;

    memset(&b, 0, sizeof(b));
    b.quota_id = 4;
    b.period_start = 1764115200;
    b.cost_used = 1234567;
    b.cost_held = 89;
    b.tokens_used = 4242;
    b.in_flight = 1;
    b.rpm_tat_ns = 1764160157000000000LL;

    kr.quota_id = 4;
    kr.user_id = 7;
    kr.created_at = 1764160157;

    memset(&h, 0, sizeof(h));
    for (int i = 0; i < 16; i++)
        h.request_id[i] = (uint8_t)(i * 17);
    h.quota_id = 4;
    h.worker_pid = 4321;
    h.cost = 777;
    h.tokens = 100;
    h.created_at_ns = 1764160157000000001LL;

    r.expires_at = 1764163757;

    assert_int_equal(ta_txn_begin(st, TA_ENV_LEDGER, true, &txn), 0);
    assert_int_equal(ta_rec_put(st, txn, &ta_desc_user, u.id, &u), 0);
    assert_int_equal(ta_rec_put(st, txn, &ta_desc_provider, p.id, &p), 0);
    assert_int_equal(ta_rec_put(st, txn, &ta_desc_model, m.id, &m), 0);
    assert_int_equal(ta_rec_put(st, txn, &ta_desc_group, g.id, &g), 0);
    assert_int_equal(ta_rec_put(st, txn, &ta_desc_quota, q.id, &q), 0);
    assert_int_equal(ta_rec_put(st, txn, &ta_desc_balance, b.quota_id, &b), 0);
    assert_int_equal(ta_rec_put_k(st, txn, &ta_desc_keyrec, TA_DB_KEYS, keyhash, 32, &kr), 0);
    assert_int_equal(ta_rec_put_k(st, txn, &ta_desc_hold, TA_DB_HOLDS, h.request_id, 16, &h), 0);
    assert_int_equal(ta_rec_put_k(st, txn, &ta_desc_revoked, TA_DB_REVOKED_JWT, jti, strlen(jti), &r), 0);
    /* a ledger txn cannot touch an audit table, and embedded types have no table */
    assert_int_equal(ta_kv_del(st, txn, TA_DB_AUDIT_REQUESTS, "x", 1), TA_EINVAL);
    assert_int_equal(ta_rec_put(st, txn, &ta_desc_route, 1, &m.routes[0]), TA_EINVAL);
    assert_int_equal(ta_txn_commit(txn), 0);
    ta_store_close(st);

    /* read back through a fresh handle */
    assert_int_equal(open_plain(&st, f, false), 0);
    assert_int_equal(ta_txn_begin(st, TA_ENV_LEDGER, false, &txn), 0);
    assert_int_equal(ta_rec_get(st, txn, &ta_desc_user, 7, &u2), 0);
    assert_int_equal(u2.id, 7);
    assert_string_equal(u2.email, "alice@example.com");
    assert_string_equal(u2.name, "User 7");
    assert_true(u2.is_active);
    assert_int_equal(u2.pwhash_len, u.pwhash_len);
    assert_memory_equal(u2.pwhash, u.pwhash, u.pwhash_len);
    assert_int_equal(u2.created_at, u.created_at);

    assert_int_equal(ta_rec_get(st, txn, &ta_desc_provider, 3, &p2), 0);
    assert_string_equal(p2.name, "openai-main");
    assert_int_equal(p2.type, TA_PROVIDER_ANTHROPIC);
    assert_string_equal(p2.base_url, p.base_url);
    assert_int_equal(p2.key_sealed_len, 40);
    assert_memory_equal(p2.key_sealed, p.key_sealed, 40);
    assert_string_equal(p2.api_key_last4, "wxyz");
    assert_int_equal(p2.timeout_s, 600);

    assert_int_equal(ta_rec_get(st, txn, &ta_desc_model, 9, &m2), 0);
    assert_string_equal(m2.name, "gpt-4o");
    assert_int_equal(m2.nroutes, 2);
    assert_int_equal(m2.routes[1].provider_id, 4);
    assert_int_equal(m2.routes[1].priority, 5);
    assert_string_equal(m2.routes[1].upstream_name, "gpt-4o-b");
    assert_int_equal(m2.input_price, 2500000000LL);
    assert_int_equal(m2.capabilities, TA_CAP_CHAT | TA_CAP_STREAMING);

    assert_int_equal(ta_rec_get(st, txn, &ta_desc_group, 2, &g2), 0);
    assert_int_equal(g2.nmodels, 3);
    assert_int_equal(g2.model_ids[2], 11);
    assert_int_equal(g2.default_quota.period, TA_PERIOD_MONTH);
    assert_int_equal(g2.default_quota.cost_limit, 50 * TA_NANO_PER_UNIT);

    assert_int_equal(ta_rec_get(st, txn, &ta_desc_quota, 4, &q2), 0);
    assert_int_equal(q2.user_id, 7);
    assert_int_equal(q2.group_id, 2);
    assert_int_equal(q2.limits.cost_limit, 5 * TA_NANO_PER_UNIT);
    assert_int_equal(q2.limits.rpm, 60);
    assert_int_equal(q2.limits.nwarn, 2);
    assert_int_equal(q2.limits.warn_at[1], 90);
    assert_memory_equal(q2.key_hash, keyhash, 32);
    assert_string_equal(q2.key_prefix, "sk-abcdefgh");

    assert_int_equal(ta_rec_get(st, txn, &ta_desc_balance, 4, &b2), 0);
    assert_int_equal(b2.cost_used, 1234567);
    assert_int_equal(b2.cost_held, 89);
    assert_int_equal(b2.in_flight, 1);
    assert_int_equal(b2.rpm_tat_ns, b.rpm_tat_ns);

    assert_int_equal(ta_rec_get_k(st, txn, &ta_desc_keyrec, TA_DB_KEYS, keyhash, 32, &kr2), 0);
    assert_int_equal(kr2.quota_id, 4);
    assert_int_equal(kr2.user_id, 7);
    assert_int_equal(ta_rec_get_k(st, txn, &ta_desc_hold, TA_DB_HOLDS, h.request_id, 16, &h2), 0);
    assert_memory_equal(h2.request_id, h.request_id, 16);
    assert_int_equal(h2.worker_pid, 4321);
    assert_int_equal(h2.cost, 777);
    assert_int_equal(h2.created_at_ns, h.created_at_ns);
    assert_int_equal(ta_rec_get_k(st, txn, &ta_desc_revoked, TA_DB_REVOKED_JWT, jti, strlen(jti), &r2), 0);
    assert_int_equal(r2.expires_at, r.expires_at);

    assert_int_equal(ta_rec_get(st, txn, &ta_desc_user, 8, &u2), TA_ENOTFOUND);
    /* a value of the wrong type is refused by the schema check, not misread */
    assert_int_equal(ta_rec_get_k(st, txn, &ta_desc_user, TA_DB_PROVIDERS, "\0\0\0\0\0\0\0\3", 8, &u2),
                     TA_ESCHEMA);
    ta_txn_abort(txn);

    /* delete every one */
    assert_int_equal(ta_txn_begin(st, TA_ENV_LEDGER, true, &txn), 0);
    assert_int_equal(ta_rec_del(st, txn, &ta_desc_user, 7), 0);
    assert_int_equal(ta_rec_del(st, txn, &ta_desc_provider, 3), 0);
    assert_int_equal(ta_rec_del(st, txn, &ta_desc_model, 9), 0);
    assert_int_equal(ta_rec_del(st, txn, &ta_desc_group, 2), 0);
    assert_int_equal(ta_rec_del(st, txn, &ta_desc_quota, 4), 0);
    assert_int_equal(ta_rec_del(st, txn, &ta_desc_balance, 4), 0);
    assert_int_equal(ta_kv_del(st, txn, TA_DB_KEYS, keyhash, 32), 0);
    assert_int_equal(ta_kv_del(st, txn, TA_DB_HOLDS, h.request_id, 16), 0);
    assert_int_equal(ta_kv_del(st, txn, TA_DB_REVOKED_JWT, jti, strlen(jti)), 0);
    assert_int_equal(ta_rec_del(st, txn, &ta_desc_user, 7), TA_ENOTFOUND);
    assert_int_equal(ta_kv_del(st, txn, TA_DB_KEYS, keyhash, 32), TA_ENOTFOUND);
    assert_int_equal(ta_txn_commit(txn), 0);

    assert_int_equal(ta_txn_begin(st, TA_ENV_LEDGER, false, &txn), 0);
    assert_int_equal(ta_rec_get(st, txn, &ta_desc_user, 7, &u2), TA_ENOTFOUND);
    assert_int_equal(ta_rec_get(st, txn, &ta_desc_provider, 3, &p2), TA_ENOTFOUND);
    assert_int_equal(ta_rec_get(st, txn, &ta_desc_model, 9, &m2), TA_ENOTFOUND);
    assert_int_equal(ta_rec_get(st, txn, &ta_desc_group, 2, &g2), TA_ENOTFOUND);
    assert_int_equal(ta_rec_get(st, txn, &ta_desc_quota, 4, &q2), TA_ENOTFOUND);
    assert_int_equal(ta_rec_get(st, txn, &ta_desc_balance, 4, &b2), TA_ENOTFOUND);
    assert_int_equal(ta_rec_get_k(st, txn, &ta_desc_keyrec, TA_DB_KEYS, keyhash, 32, &kr2), TA_ENOTFOUND);
    assert_int_equal(ta_rec_get_k(st, txn, &ta_desc_hold, TA_DB_HOLDS, h.request_id, 16, &h2), TA_ENOTFOUND);
    assert_int_equal(ta_rec_get_k(st, txn, &ta_desc_revoked, TA_DB_REVOKED_JWT, jti, strlen(jti), &r2),
                     TA_ENOTFOUND);
    ta_txn_abort(txn);
    ta_store_close(st);
}

typedef struct walk_log {
    uint64_t ids[16];
    int n;
    int stop_after;
} walk_log_t;

static int walk_cb(uint64_t id, const void *rec, void *arg)
{
    walk_log_t *w = arg;
    const ta_user_t *u = rec;
    if (u->id != id || w->n >= 16)
        return -99;
    w->ids[w->n++] = id;
    return w->n == w->stop_after ? 1 : 0;
}

static int walk_k_cb(const void *key, size_t klen, const void *rec, void *arg)
{
    walk_log_t *w = arg;
    const ta_hold_t *h = rec;
    if (klen != 16 || memcmp(key, h->request_id, 16) != 0 || w->n >= 16)
        return -99;
    w->ids[w->n++] = h->quota_id;
    return 0;
}

static void test_walk_order(void **state)
{
    fx_t *f = *state;
    ta_store_t *st = open_create(f);
    MDB_txn *txn;
    const uint64_t ids[] = {300, 2, 70000, 1, 256, 0x0100000000000000ULL};
    const uint64_t sorted[] = {1, 2, 256, 300, 70000, 0x0100000000000000ULL};
    ta_user_t u;
    char email[64];
    walk_log_t w = {0};

    assert_int_equal(ta_txn_begin(st, TA_ENV_LEDGER, true, &txn), 0);
    for (size_t i = 0; i < TA_ARRAY_SIZE(ids); i++) {
        snprintf(email, sizeof(email), "u%zu@example.com", i);
        make_user(&u, ids[i], email);
        assert_int_equal(ta_rec_put(st, txn, &ta_desc_user, ids[i], &u), 0);
    }
    /* holds keyed by request id walk in byte order of the key */
    for (int i = 3; i >= 1; i--) {
        ta_hold_t h = {.quota_id = (uint64_t)i};
        h.request_id[0] = (uint8_t)i;
        assert_int_equal(ta_rec_put_k(st, txn, &ta_desc_hold, TA_DB_HOLDS, h.request_id, 16, &h), 0);
    }
    assert_int_equal(ta_txn_commit(txn), 0);

    assert_int_equal(ta_txn_begin(st, TA_ENV_LEDGER, false, &txn), 0);
    assert_int_equal(ta_rec_walk(st, txn, &ta_desc_user, walk_cb, &w), 0);
    assert_int_equal(w.n, TA_ARRAY_SIZE(sorted));
    for (size_t i = 0; i < TA_ARRAY_SIZE(sorted); i++)
        assert_int_equal(w.ids[i], sorted[i]);

    memset(&w, 0, sizeof(w));
    w.stop_after = 3;
    assert_int_equal(ta_rec_walk(st, txn, &ta_desc_user, walk_cb, &w), 0);
    assert_int_equal(w.n, 3);

    memset(&w, 0, sizeof(w));
    assert_int_equal(ta_rec_walk(st, txn, &ta_desc_provider, walk_cb, &w), 0);
    assert_int_equal(w.n, 0);

    memset(&w, 0, sizeof(w));
    assert_int_equal(ta_rec_walk_k(st, txn, &ta_desc_hold, TA_DB_HOLDS, walk_k_cb, &w), 0);
    assert_int_equal(w.n, 3);
    assert_int_equal(w.ids[0], 1);
    assert_int_equal(w.ids[2], 3);
    /* an id walk over a binary-keyed table is refused */
    assert_int_equal(ta_rec_walk(st, txn, &ta_desc_hold, (ta_rec_walk_cb)walk_cb, &w), TA_ECORRUPT);
    ta_txn_abort(txn);
    ta_store_close(st);
}

static int walk_err_cb(uint64_t id, const void *rec, void *arg) { return -42; }

static void test_walk_error(void **state)
{
    fx_t *f = *state;
    ta_store_t *st = open_create(f);
    MDB_txn *txn;
    ta_user_t u;

    make_user(&u, 1, "a@example.com");
    assert_int_equal(ta_txn_begin(st, TA_ENV_LEDGER, true, &txn), 0);
    assert_int_equal(ta_rec_put(st, txn, &ta_desc_user, 1, &u), 0);
    assert_int_equal(ta_rec_walk(st, txn, &ta_desc_user, walk_err_cb, NULL), -42);
    ta_txn_abort(txn);
    ta_store_close(st);
}

static void test_index(void **state)
{
    fx_t *f = *state;
    ta_store_t *st = open_create(f);
    MDB_txn *txn;
    uint64_t id = 0;
    char longname[600];

    assert_int_equal(ta_txn_begin(st, TA_ENV_LEDGER, true, &txn), 0);
    assert_int_equal(ta_idx_put(st, txn, TA_DB_USERS_BY_EMAIL, "alice@example.com", 7), 0);
    assert_int_equal(ta_idx_put(st, txn, TA_DB_MODELS_BY_NAME, "alice@example.com", 9), 0);
    assert_int_equal(ta_idx_get(st, txn, TA_DB_USERS_BY_EMAIL, "alice@example.com", &id), 0);
    assert_int_equal(id, 7);
    /* the same mapping again is fine; another id is a duplicate */
    assert_int_equal(ta_idx_put(st, txn, TA_DB_USERS_BY_EMAIL, "alice@example.com", 7), 0);
    assert_int_equal(ta_idx_put(st, txn, TA_DB_USERS_BY_EMAIL, "alice@example.com", 8), TA_EEXIST);
    assert_int_equal(ta_idx_get(st, txn, TA_DB_USERS_BY_EMAIL, "alice@example.com", &id), 0);
    assert_int_equal(id, 7);
    assert_int_equal(ta_idx_get(st, txn, TA_DB_MODELS_BY_NAME, "alice@example.com", &id), 0);
    assert_int_equal(id, 9);
    assert_int_equal(ta_idx_get(st, txn, TA_DB_USERS_BY_EMAIL, "bob@example.com", &id), TA_ENOTFOUND);
    assert_int_equal(ta_idx_put(st, txn, TA_DB_USERS_BY_EMAIL, "", 1), TA_EINVAL);
    assert_int_equal(ta_idx_get(st, txn, TA_DB_USERS_BY_EMAIL, "", &id), TA_ENOTFOUND); /* never stored */
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(ta_idx_put(st, txn, TA_DB_USERS_BY_EMAIL, longname, 1), TA_ETOOBIG);
    assert_int_equal(ta_idx_get(st, txn, TA_DB_USERS_BY_EMAIL, longname, &id), TA_ENOTFOUND);
    assert_int_equal(ta_txn_commit(txn), 0);

    assert_int_equal(ta_txn_begin(st, TA_ENV_LEDGER, true, &txn), 0);
    assert_int_equal(ta_idx_del(st, txn, TA_DB_USERS_BY_EMAIL, "alice@example.com"), 0);
    assert_int_equal(ta_idx_del(st, txn, TA_DB_USERS_BY_EMAIL, "alice@example.com"), TA_ENOTFOUND);
    assert_int_equal(ta_idx_get(st, txn, TA_DB_USERS_BY_EMAIL, "alice@example.com", &id), TA_ENOTFOUND);
    /* once freed, the name may map to another id */
    assert_int_equal(ta_idx_put(st, txn, TA_DB_USERS_BY_EMAIL, "alice@example.com", 8), 0);
    assert_int_equal(ta_txn_commit(txn), 0);

    assert_int_equal(ta_txn_begin(st, TA_ENV_LEDGER, false, &txn), 0);
    assert_int_equal(ta_idx_get(st, txn, TA_DB_USERS_BY_EMAIL, "alice@example.com", &id), 0);
    assert_int_equal(id, 8);
    ta_txn_abort(txn);
    ta_store_close(st);
}

static void test_meta_u64(void **state)
{
    fx_t *f = *state;
    ta_store_t *st = open_create(f);
    MDB_txn *txn;
    uint64_t v = 0;

    assert_int_equal(ta_txn_begin(st, TA_ENV_LEDGER, true, &txn), 0);
    assert_int_equal(ta_meta_get_u64(st, txn, TA_ENV_LEDGER, "applied_ticket", &v), TA_ENOTFOUND);
    assert_int_equal(ta_meta_put_u64(st, txn, TA_ENV_LEDGER, "applied_ticket", 0xFEDCBA9876543210ULL), 0);
    assert_int_equal(ta_meta_get_u64(st, txn, TA_ENV_LEDGER, "applied_ticket", &v), 0);
    assert_true(v == 0xFEDCBA9876543210ULL);
    /* the audit meta is a different database */
    assert_int_equal(ta_meta_put_u64(st, txn, TA_ENV_AUDIT, "applied_ticket", 1), TA_EINVAL);
    assert_int_equal(ta_txn_commit(txn), 0);

    assert_int_equal(ta_txn_begin(st, TA_ENV_AUDIT, true, &txn), 0);
    assert_int_equal(ta_meta_get_u64(st, txn, TA_ENV_AUDIT, "applied_ticket", &v), TA_ENOTFOUND);
    assert_int_equal(ta_meta_put_u64(st, txn, TA_ENV_AUDIT, "applied_ticket", 41), 0);
    assert_int_equal(ta_meta_get_u64(st, txn, TA_ENV_AUDIT, "schema_version", &v), 0);
    assert_int_equal(v, TA_SCHEMA_VERSION);
    assert_int_equal(ta_txn_commit(txn), 0);
    ta_store_close(st);

    assert_int_equal(open_plain(&st, f, true), 0);
    assert_int_equal(ta_txn_begin(st, TA_ENV_LEDGER, false, &txn), 0);
    assert_int_equal(ta_meta_get_u64(st, txn, TA_ENV_LEDGER, "applied_ticket", &v), 0);
    assert_true(v == 0xFEDCBA9876543210ULL);
    /* instance_id is text, not a u64 */
    assert_int_equal(ta_meta_get_u64(st, txn, TA_ENV_LEDGER, "instance_id", &v), TA_ECORRUPT);
    ta_txn_abort(txn);
    assert_int_equal(ta_txn_begin(st, TA_ENV_AUDIT, false, &txn), 0);
    assert_int_equal(ta_meta_get_u64(st, txn, TA_ENV_AUDIT, "applied_ticket", &v), 0);
    assert_int_equal(v, 41);
    ta_txn_abort(txn);
    ta_store_close(st);
}

static void test_abort_leaves_nothing(void **state)
{
    fx_t *f = *state;
    ta_store_t *st = open_create(f);
    MDB_txn *txn;
    ta_user_t u;
    uint64_t v;

    make_user(&u, 5, "ghost@example.com");
    assert_int_equal(ta_txn_begin(st, TA_ENV_LEDGER, true, &txn), 0);
    assert_int_equal(ta_rec_put(st, txn, &ta_desc_user, 5, &u), 0);
    assert_int_equal(ta_idx_put(st, txn, TA_DB_USERS_BY_EMAIL, u.email, 5), 0);
    assert_int_equal(ta_meta_put_u64(st, txn, TA_ENV_LEDGER, "applied_ticket", 9), 0);
    assert_int_equal(ta_rec_next_id(st, txn, &ta_desc_user, &v), 0);
    assert_int_equal(ta_rec_get(st, txn, &ta_desc_user, 5, &u), 0); /* visible inside */
    ta_txn_abort(txn);

    assert_int_equal(ta_txn_begin(st, TA_ENV_LEDGER, false, &txn), 0);
    assert_int_equal(ta_rec_get(st, txn, &ta_desc_user, 5, &u), TA_ENOTFOUND);
    assert_int_equal(ta_idx_get(st, txn, TA_DB_USERS_BY_EMAIL, "ghost@example.com", &v), TA_ENOTFOUND);
    assert_int_equal(ta_meta_get_u64(st, txn, TA_ENV_LEDGER, "applied_ticket", &v), TA_ENOTFOUND);
    assert_int_equal(ta_meta_get_u64(st, txn, TA_ENV_LEDGER, "next_id.users", &v), TA_ENOTFOUND);
    ta_txn_abort(txn);
    ta_store_close(st);
}

/* ---- across processes ------------------------------------------------------- */

static void test_child_sees_commit(void **state)
{
    fx_t *f = *state;
    ta_store_t *st = open_create(f);
    int go[2], ready[2];
    MDB_txn *txn;
    ta_user_t u;

    assert_int_equal(pipe(go), 0);
    assert_int_equal(pipe(ready), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* The parent's handle is inherited but never touched here. */
        ta_store_t *cs = NULL;
        ta_user_t cu;
        MDB_txn *ct;
        close(go[1]);
        close(ready[0]);
        if (open_plain(&cs, f, false) != 0)
            _exit(10);
        write_byte(ready[1]); /* opened before the parent's commit */
        read_byte(go[0]);
        if (ta_txn_begin(cs, TA_ENV_LEDGER, false, &ct) != 0)
            _exit(11);
        int rc = ta_rec_get(cs, ct, &ta_desc_user, 11, &cu);
        ta_txn_abort(ct);
        if (rc != 0)
            _exit(12);
        if (strcmp(cu.email, "child@example.com") != 0)
            _exit(13);
        /* and the child's own write is visible to the parent */
        if (ta_txn_begin(cs, TA_ENV_LEDGER, true, &ct) != 0 ||
            ta_meta_put_u64(cs, ct, TA_ENV_LEDGER, "child_was_here", 77) != 0 || ta_txn_commit(ct) != 0)
            _exit(14);
        ta_store_close(cs);
        _exit(0);
    }
    close(go[0]);
    close(ready[1]);
    read_byte(ready[0]);
    make_user(&u, 11, "child@example.com");
    assert_int_equal(ta_txn_begin(st, TA_ENV_LEDGER, true, &txn), 0);
    assert_int_equal(ta_rec_put(st, txn, &ta_desc_user, 11, &u), 0);
    assert_int_equal(ta_txn_commit(txn), 0);
    write_byte(go[1]);
    assert_int_equal(wait_child(pid), 0);
    close(go[1]);
    close(ready[0]);

    uint64_t v = 0;
    assert_int_equal(ta_txn_begin(st, TA_ENV_LEDGER, false, &txn), 0);
    assert_int_equal(ta_meta_get_u64(st, txn, TA_ENV_LEDGER, "child_was_here", &v), 0);
    assert_int_equal(v, 77);
    ta_txn_abort(txn);
    ta_store_close(st);
}

static void test_readonly_while_writing(void **state)
{
    fx_t *f = *state;
    ta_store_t *st = open_create(f);
    int go[2];
    MDB_txn *txn;
    ta_user_t u;

    make_user(&u, 1, "committed@example.com");
    assert_int_equal(ta_txn_begin(st, TA_ENV_LEDGER, true, &txn), 0);
    assert_int_equal(ta_rec_put(st, txn, &ta_desc_user, 1, &u), 0);
    assert_int_equal(ta_txn_commit(txn), 0);

    assert_int_equal(pipe(go), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        ta_store_t *cs = NULL;
        ta_user_t cu;
        MDB_txn *ct;
        close(go[1]);
        read_byte(go[0]); /* the parent now holds the write lock */
        if (open_plain(&cs, f, true) != 0)
            _exit(20);
        if (ta_txn_begin(cs, TA_ENV_LEDGER, false, &ct) != 0)
            _exit(21);
        if (ta_rec_get(cs, ct, &ta_desc_user, 1, &cu) != 0 || strcmp(cu.email, "committed@example.com"))
            _exit(22);
        if (ta_rec_get(cs, ct, &ta_desc_user, 2, &cu) != TA_ENOTFOUND) /* not committed yet */
            _exit(23);
        ta_txn_abort(ct);
        if (ta_txn_begin(cs, TA_ENV_LEDGER, true, &ct) == 0) /* read-only handle cannot write */
            _exit(24);
        FILE *null = fopen("/dev/null", "w");
        if (!null || ta_ledger_dump(cs, null, true) != 0)
            _exit(25);
        fclose(null);
        ta_store_close(cs);
        _exit(0);
    }
    close(go[0]);
    make_user(&u, 2, "pending@example.com");
    assert_int_equal(ta_txn_begin(st, TA_ENV_LEDGER, true, &txn), 0);
    assert_int_equal(ta_rec_put(st, txn, &ta_desc_user, 2, &u), 0);
    write_byte(go[1]);
    /* the child finishes while our write transaction is still open */
    assert_int_equal(wait_child(pid), 0);
    assert_int_equal(ta_txn_commit(txn), 0);
    close(go[1]);
    ta_store_close(st);
}

static void test_reader_check_after_kill(void **state)
{
    fx_t *f = *state;
    ta_store_t *st = open_create(f);
    int ready[2];

    assert_int_equal(ta_store_reader_check(st), 0);
    assert_int_equal(pipe(ready), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        ta_store_t *cs = NULL;
        MDB_txn *ct;
        close(ready[0]);
        if (open_plain(&cs, f, false) != 0 || ta_txn_begin(cs, TA_ENV_LEDGER, false, &ct) != 0)
            _exit(30);
        write_byte(ready[1]);
        for (;;)
            pause();
    }
    close(ready[1]);
    read_byte(ready[0]);
    close(ready[0]);
    /* alive: its slot is not stale */
    assert_int_equal(ta_store_reader_check(st), 0);
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(wait_child(pid), 128 + SIGKILL);
    assert_true(ta_store_reader_check(st) >= 1);
    assert_int_equal(ta_store_reader_check(st), 0);
    ta_store_close(st);
}

static void test_map_full(void **state)
{
    fx_t *f = *state;
    ta_store_opts_t o = {.create = true, .ledger_map_size = 256u << 10, .audit_map_size = 256u << 10};
    ta_store_t *st = NULL;
    MDB_txn *txn;
    ta_user_t u;
    char email[64];
    int rc = 0, i;

    assert_int_equal(ta_store_open(&st, f->data, &o), 0);
    assert_int_equal(ta_txn_begin(st, TA_ENV_LEDGER, true, &txn), 0);
    for (i = 1; i < 100000; i++) {
        snprintf(email, sizeof(email), "user%d@example.com", i);
        make_user(&u, (uint64_t)i, email);
        rc = ta_rec_put(st, txn, &ta_desc_user, (uint64_t)i, &u);
        if (rc)
            break;
    }
    assert_int_equal(rc, TA_EFULL);
    assert_true(i > 10);
    ta_txn_abort(txn);

    /* the store is still usable after the failed transaction */
    make_user(&u, 1, "small@example.com");
    assert_int_equal(ta_txn_begin(st, TA_ENV_LEDGER, true, &txn), 0);
    assert_int_equal(ta_rec_put(st, txn, &ta_desc_user, 1, &u), 0);
    assert_int_equal(ta_txn_commit(txn), 0);
    ta_store_close(st);
}

/* ---- dump ----------------------------------------------------------------------- */

static char *dump_to_string(ta_store_t *st, bool json)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    assert_non_null(m);
    assert_int_equal(ta_ledger_dump(st, m, json), 0);
    fclose(m);
    return buf;
}

static void hexs(char *dst, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        snprintf(dst + 2 * i, 3, "%02x", p[i]);
}

static void test_dump(void **state)
{
    fx_t *f = *state;
    ta_store_t *st = open_create(f);
    MDB_txn *txn;
    ta_user_t u;
    ta_provider_t p;
    ta_quota_t q;
    ta_balance_t b;
    ta_keyrec_t kr = {.quota_id = 4, .user_id = 7, .created_at = 1764160157};
    ta_hold_t h = {.quota_id = 4, .worker_pid = 99, .cost = 5};
    ta_revoked_t r = {.expires_at = 1764163757};
    uint8_t keyhash[32];
    char hx[80];

    make_user(&u, 7, "dumped@example.com");
    memset(&p, 0, sizeof(p));
    p.id = 3;
    snprintf(p.name, sizeof(p.name), "prov one");
    snprintf(p.base_url, sizeof(p.base_url), "https://api.example.com");
    p.key_sealed_len = 24;
    memcpy(p.key_sealed, "SEALEDPROVIDERKEYBYTES!!", 24);
    p.timeout_s = 600;
    p.connect_timeout_ms = 5000;
    memset(&q, 0, sizeof(q));
    q.id = 4;
    q.user_id = 7;
    q.group_id = 2;
    q.is_active = true;
    snprintf(q.key_prefix, sizeof(q.key_prefix), "sk-abcdefgh");
    for (int i = 0; i < 32; i++)
        keyhash[i] = (uint8_t)(0x90 + i);
    memcpy(q.key_hash, keyhash, 32);
    q.key_hash_len = 32;
    memset(&b, 0, sizeof(b));
    b.quota_id = 4;
    b.cost_used = 1500000000LL;
    b.requests_used = 12;
    for (int i = 0; i < 16; i++)
        h.request_id[i] = (uint8_t)(0xE0 + i);

    assert_int_equal(ta_txn_begin(st, TA_ENV_LEDGER, true, &txn), 0);
    assert_int_equal(ta_rec_put(st, txn, &ta_desc_user, 7, &u), 0);
    make_user(&u, 8, "second@example.com");
    assert_int_equal(ta_rec_put(st, txn, &ta_desc_user, 8, &u), 0);
    assert_int_equal(ta_rec_put(st, txn, &ta_desc_provider, 3, &p), 0);
    assert_int_equal(ta_rec_put(st, txn, &ta_desc_quota, 4, &q), 0);
    assert_int_equal(ta_rec_put(st, txn, &ta_desc_balance, 4, &b), 0);
    assert_int_equal(ta_rec_put_k(st, txn, &ta_desc_keyrec, TA_DB_KEYS, keyhash, 32, &kr), 0);
    assert_int_equal(ta_rec_put_k(st, txn, &ta_desc_hold, TA_DB_HOLDS, h.request_id, 16, &h), 0);
    assert_int_equal(ta_rec_put_k(st, txn, &ta_desc_revoked, TA_DB_REVOKED_JWT, "jti-1", 5, &r), 0);
    assert_int_equal(ta_rec_put_k(st, txn, &ta_desc_revoked, TA_DB_REVOKED_JWT, "jti-2", 5, &r), 0);
    assert_int_equal(ta_meta_put_u64(st, txn, TA_ENV_LEDGER, "applied_ticket", 123456), 0);
    uint64_t id;
    assert_int_equal(ta_rec_next_id(st, txn, &ta_desc_user, &id), 0);
    assert_int_equal(ta_txn_commit(txn), 0);
    assert_int_equal(ta_txn_begin(st, TA_ENV_AUDIT, true, &txn), 0);
    assert_int_equal(ta_meta_put_u64(st, txn, TA_ENV_AUDIT, "applied_ticket", 123455), 0);
    assert_int_equal(ta_txn_commit(txn), 0);
    ta_store_close(st);

    /* the dump tool opens read-only */
    assert_int_equal(open_plain(&st, f, true), 0);
    char *text = dump_to_string(st, false);
    char *js = dump_to_string(st, true);
    ta_store_close(st);

    /* secrets: the password hash, the sealed provider key, the full key hash */
    for (int pass = 0; pass < 2; pass++) {
        const char *out = pass ? js : text;
        assert_null(strstr(out, "STOREPWHASHSECRET"));
        assert_null(strstr(out, "pbkdf2"));
        hexs(hx, (const uint8_t *)"STOREPWHASHSECRET", 8);
        assert_null(strstr(out, hx));
        assert_null(strstr(out, "SEALEDPROVIDER"));
        hexs(hx, (const uint8_t *)"SEALEDPROVIDER", 8);
        assert_null(strstr(out, hx));
        hexs(hx, keyhash, 5); /* anything past the first 4 bytes */
        assert_null(strstr(out, hx));
        hexs(hx, keyhash + 4, 4);
        assert_null(strstr(out, hx));
        hexs(hx, keyhash, 4);
        assert_non_null(strstr(out, hx));
        /* the records and the meta are there */
        assert_non_null(strstr(out, "dumped@example.com"));
        assert_non_null(strstr(out, "second@example.com"));
        assert_non_null(strstr(out, "sk-abcdefgh"));
        assert_non_null(strstr(out, "123456"));
        assert_non_null(strstr(out, "123455"));
        assert_non_null(strstr(out, "instance_id"));
        assert_non_null(strstr(out, "next_id.users"));
        hexs(hx, h.request_id, 16);
        assert_non_null(strstr(out, hx));
    }

    /* text: one section per table, key=value pairs */
    assert_non_null(strstr(text, "users (2)\n"));
    assert_non_null(strstr(text, "providers (1)\n"));
    assert_non_null(strstr(text, "models (0)\n"));
    assert_non_null(strstr(text, "quotas (1)\n"));
    assert_non_null(strstr(text, "keys (1)\n"));
    assert_non_null(strstr(text, "holds (1)\n"));
    assert_non_null(strstr(text, " email=dumped@example.com"));
    assert_non_null(strstr(text, " name=\"prov one\""));
    assert_non_null(strstr(text, " balance.requests_used=12"));
    assert_non_null(strstr(text, "revoked_jwt count=2"));
    assert_non_null(strstr(text, " schema_version=1\n"));
    assert_non_null(strstr(text, " applied_ticket=123456\n"));

    /* json: one document */
    json_error_t jerr;
    json_t *doc = json_loads(js, 0, &jerr);
    assert_non_null(doc);
    json_t *users = json_object_get(doc, "users");
    assert_int_equal(json_array_size(users), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(users, 0), "email")),
                        "dumped@example.com");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(users, 0), "id")), 7);
    json_t *quota = json_array_get(json_object_get(doc, "quotas"), 0);
    assert_non_null(quota);
    json_t *bal = json_object_get(quota, "balance");
    assert_true(json_is_object(bal));
    assert_int_equal(json_integer_value(json_object_get(bal, "requests_used")), 12);
    json_t *key = json_array_get(json_object_get(doc, "keys"), 0);
    hexs(hx, keyhash, 4);
    assert_string_equal(json_string_value(json_object_get(key, "key_hash")), hx);
    assert_int_equal(json_integer_value(json_object_get(key, "quota_id")), 4);
    assert_int_equal(json_integer_value(json_object_get(doc, "revoked_jwt")), 2);
    json_t *lm = json_object_get(json_object_get(doc, "meta"), "ledger");
    assert_int_equal(json_integer_value(json_object_get(lm, "schema_version")), TA_SCHEMA_VERSION);
    assert_int_equal(json_integer_value(json_object_get(lm, "applied_ticket")), 123456);
    assert_int_equal(json_integer_value(json_object_get(lm, "next_id.users")), 10); /* 9 was handed out */
    assert_int_equal(strlen(json_string_value(json_object_get(lm, "instance_id"))), 32);
    json_t *am = json_object_get(json_object_get(doc, "meta"), "audit");
    assert_int_equal(json_integer_value(json_object_get(am, "applied_ticket")), 123455);
    json_decref(doc);
    free(text);
    free(js);
}

int main(void)
{
    ta_log_init('C', TA_LOG_WARN);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_create_open_reopen),   T(test_refuse_missing_dir), T(test_refuse_newer_schema),
        T(test_next_id),              T(test_records_roundtrip),  T(test_walk_order),
        T(test_walk_error),           T(test_index),              T(test_meta_u64),
        T(test_abort_leaves_nothing), T(test_child_sees_commit),  T(test_readonly_while_writing),
        T(test_reader_check_after_kill), T(test_map_full),        T(test_dump),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
