/*
 * test_producer - a stand-in worker for the fault tests and the bench.
 *
 *   test_producer --data-dir D --setup N [--cost-limit UNITS] [--warn 50,80]
 *       create the data directory if needed, one model (priced), one group,
 *       N users and N quotas (ids 1..N, quota i of user i) with daily periods.
 *   test_producer --data-dir D --events N [--quotas Q] [--delay-us U] [--seed S]
 *                 [--refuse-every K] [--inflight H] [--die-in-claim]
 *       like a worker: for each event take a hold (ta_quota_hold, one write
 *       txn), then push a TA_EV_REQUEST with random usage through the ring
 *       (ta_ring_submit + flush: a full ring waits in the pending queue).
 *       Every K-th event is a refusal (no hold). --inflight H: first take H
 *       holds that are never settled (requests in flight when the worker
 *       dies). --die-in-claim: after the N events, take one more hold, claim a
 *       ring slot and kill itself with SIGKILL before publishing.
 *       Prints "pid P pushed N" and, per event, nothing (quiet).
 *   test_producer --data-dir D --worker-dead PID
 *       push TA_EV_WORKER_DEAD for PID (what the master does).
 */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ledger/quota.h"
#include "ledger/ring.h"
#include "ledger/store.h"

static uint64_t rng_state = 88172645463325252ULL;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static int setup(const char *dir, int nquotas, int64_t cost_limit_units, const char *warn)
{
    ta_store_opts_t so = {.create = true};
    ta_store_t *st;
    MDB_txn *txn;
    mkdir(dir, 0700);
    int rc = ta_store_open(&st, dir, &so);
    if (rc != 0) {
        fprintf(stderr, "setup: open %s: %s\n", dir, ta_strerror(rc));
        return 1;
    }
    if ((rc = ta_txn_begin(st, TA_ENV_LEDGER, true, &txn)) != 0)
        goto Exit;
    ta_model_t m;
    memset(&m, 0, sizeof(m));
    ta_rec_defaults(&ta_desc_model, &m);
    ta_rec_next_id(st, txn, &ta_desc_model, &m.id);
    snprintf(m.name, sizeof(m.name), "test-model");
    m.input_price = 2 * TA_NANO_PER_UNIT;       /* 2 per 1M input tokens */
    m.output_price = 8 * TA_NANO_PER_UNIT + 7;  /* odd nanos: rounding matters */
    m.cache_read_price = TA_NANO_PER_UNIT / 2;
    m.has_prices = true;
    m.is_active = true;
    if ((rc = ta_rec_put(st, txn, &ta_desc_model, m.id, &m)) != 0)
        goto Abort;
    ta_idx_put(st, txn, TA_DB_MODELS_BY_NAME, m.name, m.id);
    ta_group_t g;
    memset(&g, 0, sizeof(g));
    ta_rec_next_id(st, txn, &ta_desc_group, &g.id);
    snprintf(g.name, sizeof(g.name), "test-group");
    g.model_ids[0] = m.id;
    g.nmodels = 1;
    if ((rc = ta_rec_put(st, txn, &ta_desc_group, g.id, &g)) != 0)
        goto Abort;
    for (int i = 0; i < nquotas; i++) {
        ta_user_t u; /* a user per quota: billing's per-user aggregates see many users */
        memset(&u, 0, sizeof(u));
        ta_rec_next_id(st, txn, &ta_desc_user, &u.id);
        snprintf(u.email, sizeof(u.email), "producer%d@example.com", i);
        u.is_active = true;
        if ((rc = ta_rec_put(st, txn, &ta_desc_user, u.id, &u)) != 0)
            goto Abort;
        ta_quota_t q;
        memset(&q, 0, sizeof(q));
        ta_rec_next_id(st, txn, &ta_desc_quota, &q.id);
        q.user_id = u.id;
        q.group_id = g.id;
        q.limits.period = TA_PERIOD_DAY;
        q.limits.cost_limit = cost_limit_units * TA_NANO_PER_UNIT;
        q.is_active = true;
        snprintf(q.key_prefix, sizeof(q.key_prefix), "sk-test%03d", i % 1000);
        for (const char *p = warn; p && *p && q.limits.nwarn < TA_MAX_WARN;) {
            q.limits.warn_at[q.limits.nwarn++] = (int32_t)strtol(p, (char **)&p, 10);
            if (*p == ',')
                p++;
        }
        if ((rc = ta_rec_put(st, txn, &ta_desc_quota, q.id, &q)) != 0)
            goto Abort;
    }
    rc = ta_txn_commit(txn);
    goto Exit;
Abort:
    ta_txn_abort(txn);
Exit:
    ta_store_sync(st);
    ta_store_close(st);
    if (rc != 0)
        fprintf(stderr, "setup: %s\n", ta_strerror(rc));
    return rc ? 1 : 0;
}

/* One hold, like a worker's step 3. Returns 0 with *granted, or <0. */
static int take_hold(ta_store_t *st, uint64_t quota_id, const uint8_t rid[16], int64_t prompt,
                     int64_t max_out, ta_hold_res_t *res, ta_quota_t *q, ta_model_t *m)
{
    MDB_txn *txn;
    int rc = ta_txn_begin(st, TA_ENV_LEDGER, true, &txn);
    if (rc != 0)
        return rc;
    if ((rc = ta_rec_get(st, txn, &ta_desc_quota, quota_id, q)) != 0 ||
        (rc = ta_rec_get(st, txn, &ta_desc_model, 1, m)) != 0) {
        ta_txn_abort(txn);
        return rc;
    }
    ta_hold_req_t req = {.request_id = rid, .worker_pid = (int32_t)getpid(), .quota = q, .model = m,
                         .prompt_tokens_est = prompt, .prompt_tokens_max = prompt,
                         .max_output_tokens = max_out, .reserve = TA_RESERVE_ESTIMATE,
                         .timezone = "UTC", .now_ns = ta_now_ns()};
    rc = ta_quota_hold(st, txn, &req, res);
    if (rc != 0 || res->refusal != TA_HOLD_OK) {
        ta_txn_abort(txn);
        return rc;
    }
    return ta_txn_commit(txn);
}

static void make_rid(uint8_t rid[16], uint64_t n)
{
    uint64_t a = rnd() ^ ((uint64_t)getpid() << 32), b = n;
    memcpy(rid, &a, 8);
    memcpy(rid + 8, &b, 8);
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *warn = "50,80";
    long events = -1, nquotas = 1, delay_us = 0, refuse_every = 0, inflight = 0, setup_n = 0;
    long dead_pid = 0, cost_limit = 1000000;
    bool die = false;
    static const struct option opts[] = {
        {"data-dir", required_argument, 0, 'd'},  {"setup", required_argument, 0, 'S'},
        {"events", required_argument, 0, 'n'},    {"quotas", required_argument, 0, 'q'},
        {"delay-us", required_argument, 0, 'u'},  {"seed", required_argument, 0, 's'},
        {"refuse-every", required_argument, 0, 'r'}, {"inflight", required_argument, 0, 'i'},
        {"die-in-claim", no_argument, 0, 'D'},    {"worker-dead", required_argument, 0, 'W'},
        {"cost-limit", required_argument, 0, 'c'}, {"warn", required_argument, 0, 'w'},
        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd': dir = optarg; break;
        case 'S': setup_n = strtol(optarg, NULL, 10); break;
        case 'n': events = strtol(optarg, NULL, 10); break;
        case 'q': nquotas = strtol(optarg, NULL, 10); break;
        case 'u': delay_us = strtol(optarg, NULL, 10); break;
        case 's': rng_state ^= strtoull(optarg, NULL, 10) * 0x9E3779B97F4A7C15ULL; break;
        case 'r': refuse_every = strtol(optarg, NULL, 10); break;
        case 'i': inflight = strtol(optarg, NULL, 10); break;
        case 'D': die = true; break;
        case 'W': dead_pid = strtol(optarg, NULL, 10); break;
        case 'c': cost_limit = strtol(optarg, NULL, 10); break;
        case 'w': warn = optarg; break;
        default: fprintf(stderr, "test_producer: bad option\n"); return 2;
        }
    }
    if (!dir)
        return 2;
    ta_log_init('W', TA_LOG_WARN);
    rng_state ^= (uint64_t)getpid() * 2654435761ULL;
    if (setup_n > 0)
        return setup(dir, (int)setup_n, cost_limit, warn);

    char path[4096];
    snprintf(path, sizeof(path), "%s/ring", dir);
    ta_ring_t *ring;
    int rc = ta_ring_attach(path, &ring);
    if (rc != 0) {
        fprintf(stderr, "test_producer: attach %s: %s\n", path, ta_strerror(rc));
        return 1;
    }
    if (dead_pid > 0) {
        rc = ta_ring_push_control(ring, TA_EV_WORKER_DEAD, (int32_t)dead_pid);
        ta_ring_close(ring);
        return rc ? 1 : 0;
    }
    ta_store_opts_t so = {0};
    ta_store_t *st;
    if ((rc = ta_store_open(&st, dir, &so)) != 0) {
        fprintf(stderr, "test_producer: open store: %s\n", ta_strerror(rc));
        return 1;
    }
    ta_quota_t q;
    ta_model_t m;
    ta_hold_res_t res;
    uint8_t rid[16];
    for (long i = 0; i < inflight; i++) {
        make_rid(rid, (uint64_t)(1000000 + i));
        if (take_hold(st, 1 + rnd() % (uint64_t)nquotas, rid, 100, 100, &res, &q, &m) != 0)
            return 1;
    }
    long pushed = 0;
    for (long i = 0; i < events; i++) {
        uint64_t qid = 1 + rnd() % (uint64_t)nquotas;
        int64_t prompt = 1 + (int64_t)(rnd() % 2000), out = (int64_t)(rnd() % 1000);
        int64_t t0 = ta_now_ns();
        make_rid(rid, (uint64_t)i);
        bool refuse = refuse_every > 0 && i % refuse_every == refuse_every - 1;
        memset(&res, 0, sizeof(res));
        if (!refuse && (rc = take_hold(st, qid, rid, prompt, out, &res, &q, &m)) != 0) {
            fprintf(stderr, "test_producer: hold: %s\n", ta_strerror(rc));
            return 1;
        }
        if (refuse)
            memset(&q, 0, sizeof(q)); /* a refusal before the quota was read */
        ta_event_t ev;
        memset(&ev, 0, sizeof(ev));
        ev.kind = TA_EV_REQUEST;
        memcpy(ev.request_id, rid, 16);
        ev.worker_pid = (int32_t)getpid();
        ev.endpoint = TA_EP_CHAT;
        ev.quota_id = qid;
        ev.user_id = q.user_id ? q.user_id : 1;
        ev.model_id = 1;
        ev.t_received_ns = t0;
        ev.t_first_byte_ns = t0 + 1000;
        ev.t_done_ns = ta_now_ns();
        snprintf(ev.model, sizeof(ev.model), "test-model");
        snprintf(ev.served_model, sizeof(ev.served_model), "upstream-model");
        snprintf(ev.client_ip, sizeof(ev.client_ip), "127.0.0.1");
        snprintf(ev.key_prefix, sizeof(ev.key_prefix), "%s", q.key_prefix);
        if (refuse || res.refusal != TA_HOLD_OK) {
            ev.status = 429;
            ev.error_type = TA_ET_INSUFFICIENT_QUOTA;
        } else {
            ev.flags = TA_EVF_HOLD;
            ev.status = 200;
            ev.hold_period_start = res.period_start;
            ev.held_cost = res.held_cost;
            ev.held_tokens = res.held_tokens;
            ev.tpm_estimate = res.tpm_estimate;
            ev.prompt_tokens = prompt;
            ev.completion_tokens = out;
            ev.cached_tokens = (int64_t)(rnd() % (uint64_t)prompt);
            ev.cost = ta_cost(&m, ev.prompt_tokens, ev.completion_tokens, ev.cached_tokens, 0);
        }
        if ((rc = ta_ring_submit(ring, &ev)) != 0) {
            fprintf(stderr, "test_producer: submit: %s\n", ta_strerror(rc));
            return 1;
        }
        while (ta_ring_flush_pending(ring) != 0) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        pushed++;
        if (delay_us > 0) {
            struct timespec ts = {delay_us / 1000000, (delay_us % 1000000) * 1000};
            nanosleep(&ts, NULL);
        }
    }
    printf("pid %d pushed %ld\n", (int)getpid(), pushed);
    fflush(stdout);
    if (die) {
        uint64_t ticket;
        ta_event_t *slot;
        make_rid(rid, 999999999);
        take_hold(st, 1, rid, 10, 10, &res, &q, &m);
        while (ta_ring_claim(ring, &ticket, &slot) != 0) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        printf("claimed %" PRIu64 "\n", ticket);
        fflush(stdout);
        raise(SIGKILL);
    }
    ta_store_close(st);
    ta_ring_close(ring);
    return 0;
}
