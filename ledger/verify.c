/*
 * verify.c - reconciliation of the ledger and the audit log (verify.h).
 *
 * Reads only: one read transaction on the ledger environment (quotas,
 * balances, holds, meta applied_ticket) and one on the audit environment
 * (requests_by_quota, requests, the aggregates, meta applied_ticket). The
 * pair is consistent when both metas name the same ticket: billing commits
 * ledger then audit for the same batch, so equal tickets mean no batch is
 * half-applied in the pair.
 *
 * Besides each quota's cost against its records, the hourly aggregates
 * (ledger/audit.c) are checked against the records they sum: each quota's,
 * and everything's, request count and cost from the first hour of the
 * lookback window (or the first hour pruning left whole) on.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ledger/audit.h"
#include "ledger/billing.h"
#include "ledger/verify.h"

typedef struct vctx {
    ta_store_t *st;
    MDB_txn *ltxn, *atxn;
    const ta_verify_opts_t *o;
    FILE *out;
    int ndiff;
    uint64_t nquotas, nholds;
    int rc;
    bool agg;          /* the aggregates are checked */
    uint32_t agg_hour; /* from this UTC hour on */
} vctx_t;

typedef struct rsum {
    int64_t requests;
    ta_nano_t cost;
} rsum_t;

static int rsum_cb(const ta_audit_t *r, void *arg)
{
    rsum_t *s = arg;
    s->requests++;
    s->cost += r->cost;
    return 0;
}

/* The aggregates of scope/id against the records filter f selects (its
 * since: the start of v->agg_hour). */
static int agg_check(vctx_t *v, int scope, uint64_t id, ta_audit_filter_t *f, const char *what)
{
    rsum_t r = {0, 0};
    ta_daily_t a;
    int rc;
    f->since_ns = (int64_t)v->agg_hour * 3600 * 1000000000LL;
    f->ascending = true;
    if ((rc = ta_audit_list(v->st, v->atxn, f, 0, 0, rsum_cb, &r, NULL)) != 0 ||
        (rc = ta_audit_agg_sum(v->st, v->atxn, scope, id, v->agg_hour, &a)) != 0)
        return rc;
    if (a.requests != r.requests || a.cost != r.cost) {
        char ac[TA_NANO_STRLEN], rc_[TA_NANO_STRLEN], t[40];
        fprintf(v->out, "DIFF aggregates of %s since %s: %" PRId64 " requests costing %s, the "
                "records %" PRId64 " costing %s\n", what,
                ta_time_format((int64_t)v->agg_hour * 3600, t), a.requests, ta_nano_format(a.cost, ac),
                r.requests, ta_nano_format(r.cost, rc_));
        v->ndiff++;
    }
    return 0;
}

static int quota_cb(uint64_t id, const void *rec, void *arg)
{
    vctx_t *v = arg;
    const ta_quota_t *q = rec;
    ta_balance_t b;
    int rc = ta_rec_get(v->st, v->ltxn, &ta_desc_balance, id, &b);
    if (rc == TA_ENOTFOUND)
        memset(&b, 0, sizeof(b));
    else if (rc != 0)
        return rc;
    bool all = q->limits.period == TA_PERIOD_NONE;
    int64_t since = all ? 0 : (b.period_start - v->o->lookback_days * 86400) * 1000000000LL;
    if (since < 0)
        since = 0;
    ta_nano_t sum = 0;
    uint64_t n = 0;
    if ((rc = ta_audit_sum_cost(v->st, v->atxn, id, all ? 0 : b.period_start, all, since, &sum, &n)) != 0)
        return rc;
    v->nquotas++;
    if (v->agg) {
        char what[48];
        ta_audit_filter_t f = {.quota_id = id};
        snprintf(what, sizeof(what), "quota %" PRIu64, id);
        if ((rc = agg_check(v, TA_AGG_QUOTA, id, &f, what)) != 0)
            return rc;
    }
    if (sum != b.cost_used) {
        char a[TA_NANO_STRLEN], c[TA_NANO_STRLEN], d[TA_NANO_STRLEN], p[40];
        fprintf(v->out,
                "DIFF quota %" PRIu64 " period %s: ledger cost_used %s, audit sum %s over %" PRIu64
                " records (difference %s)\n",
                id, all ? "none" : ta_time_format(b.period_start, p), ta_nano_format(b.cost_used, a),
                ta_nano_format(sum, c), n, ta_nano_format(b.cost_used - sum, d));
        v->ndiff++;
    }
    return 0;
}

static int hold_cb(const void *key, size_t klen, const void *rec, void *arg)
{
    vctx_t *v = arg;
    const ta_hold_t *h = rec;
    int64_t age_s = (ta_now_ns() - h->created_at_ns) / 1000000000LL;
    v->nholds++;
    if (age_s > v->o->max_hold_age_s) {
        char hex[33];
        for (int i = 0; i < 16; i++)
            snprintf(hex + 2 * i, 3, "%02x", h->request_id[i]);
        fprintf(v->out, "STALE hold %s quota %" PRIu64 " worker %d age %" PRId64 " s\n", hex,
                h->quota_id, (int)h->worker_pid, age_s);
        v->ndiff++;
    }
    return 0;
}

/* Every dead letter is an event billing set aside unapplied (billing.h):
 * an operator has to look at it, so it is a difference. */
static int dead_cb(const ta_dead_letter_t *dl, void *arg)
{
    vctx_t *v = arg;
    char rid[33], at[40];
    for (int i = 0; i < 16; i++)
        snprintf(rid + 2 * i, 3, "%02x", dl->ev.request_id[i]);
    fprintf(v->out, "DEAD letter ticket %" PRIu64 " ring %016" PRIx64 " %s pass failed: %s; kind %u "
            "request %s quota %" PRIu64 " user %" PRIu64 " at %s%s\n", dl->ticket, dl->ring_id,
            dl->side == TA_ENV_AUDIT ? "audit (ledger settled it, audit record missing)"
                                     : "ledger (not applied)",
            ta_strerror(dl->error), dl->ev.kind, rid, dl->ev.quota_id, dl->ev.user_id,
            ta_time_format(dl->at_ns / 1000000000LL, at), dl->intact ? "" : " (value damaged)");
    v->ndiff++;
    return 0;
}

int ta_ledger_verify(ta_store_t *st, const ta_verify_opts_t *opts, FILE *out, int *ndiff)
{
    ta_verify_opts_t o = {.max_hold_age_s = 3900, .lookback_days = 35, .wait_ms = 5000};
    if (opts) {
        if (opts->max_hold_age_s > 0)
            o.max_hold_age_s = opts->max_hold_age_s;
        if (opts->lookback_days > 0)
            o.lookback_days = opts->lookback_days;
        if (opts->wait_ms > 0)
            o.wait_ms = opts->wait_ms;
    }
    vctx_t v = {.st = st, .o = &o, .out = out};
    uint64_t la = 0, aa = 0;
    int rc = 0;
    *ndiff = 0;
    for (int waited = 0;; waited += 50) {
        if ((rc = ta_txn_begin(st, TA_ENV_LEDGER, false, &v.ltxn)) != 0)
            return rc;
        if ((rc = ta_txn_begin(st, TA_ENV_AUDIT, false, &v.atxn)) != 0) {
            ta_txn_abort(v.ltxn);
            return rc;
        }
        la = aa = 0;
        ta_meta_get_u64(st, v.ltxn, TA_ENV_LEDGER, "applied_ticket", &la);
        ta_meta_get_u64(st, v.atxn, TA_ENV_AUDIT, "applied_ticket", &aa);
        if (la == aa || waited >= o.wait_ms)
            break;
        ta_txn_abort(v.atxn);
        ta_txn_abort(v.ltxn);
        struct timespec ts = {0, 50000000L};
        nanosleep(&ts, NULL);
    }
    if (la != aa) {
        fprintf(out, "DIFF applied tickets: ledger %" PRIu64 ", audit %" PRIu64
                " (billing is between its two commits or stopped there)\n", la, aa);
        v.ndiff++;
    }
    /* the aggregates from the lookback window's first hour (or pruning's) on */
    v.agg = ta_audit_aggregates_ready(st, v.atxn);
    if (!v.agg)
        fprintf(out, "NOTE the aggregates are not checked: data of an earlier build, which billing "
                "upgrades when it starts\n");
    if (v.agg && (rc = ta_audit_complete_from(st, v.atxn, &v.agg_hour)) != 0)
        goto Exit;
    if (v.agg_hour == UINT32_MAX) /* every record pruned: nothing to compare with */
        v.agg = false;
    int64_t window = (ta_now_ns() / 1000000000LL - o.lookback_days * 86400) / 3600;
    if (window > (int64_t)v.agg_hour)
        v.agg_hour = (uint32_t)window;
    if ((rc = ta_rec_walk(st, v.ltxn, &ta_desc_quota, quota_cb, &v)) != 0)
        goto Exit;
    if (v.agg) {
        ta_audit_filter_t f = {0};
        if ((rc = agg_check(&v, TA_AGG_ALL, 0, &f, "all quotas")) != 0 ||
            (rc = ta_audit_user_cost_verify(st, v.atxn, v.agg_hour, out, &v.ndiff)) != 0)
            goto Exit;
    }
    if ((rc = ta_rec_walk_k(st, v.ltxn, &ta_desc_hold, TA_DB_HOLDS, hold_cb, &v)) != 0)
        goto Exit;
    if ((rc = ta_dead_letter_walk(st, v.ltxn, TA_ENV_LEDGER, dead_cb, &v)) != 0 ||
        (rc = ta_dead_letter_walk(st, v.atxn, TA_ENV_AUDIT, dead_cb, &v)) != 0)
        goto Exit;
    fprintf(out, "%s: %" PRIu64 " quotas, %" PRIu64 " holds, applied ticket ledger %" PRIu64
            " audit %" PRIu64 ", %d difference(s)\n", v.ndiff ? "FAIL" : "OK", v.nquotas, v.nholds,
            la, aa, v.ndiff);
    *ndiff = v.ndiff;
Exit:
    ta_txn_abort(v.atxn);
    ta_txn_abort(v.ltxn);
    return rc;
}

int ta_ledger_verify_cli(int argc, char **argv)
{
    const char *dir = getenv("TOKENAUDIT_DATA_DIR");
    ta_verify_opts_t o = {0};
    static const struct option opts[] = {{"data-dir", required_argument, 0, 'd'},
                                         {"max-hold-age", required_argument, 0, 'a'},
                                         {"lookback-days", required_argument, 0, 'l'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "d:a:l:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': dir = optarg; break;
        case 'a': o.max_hold_age_s = strtoll(optarg, NULL, 10); break;
        case 'l': o.lookback_days = strtoll(optarg, NULL, 10); break;
        default:
            fprintf(stderr, "usage: tokenaudit ledger verify --data-dir DIR [--max-hold-age SECONDS] "
                            "[--lookback-days DAYS]\n");
            return 2;
        }
    }
    if (!dir || !*dir) {
        fprintf(stderr, "tokenaudit: ledger verify: --data-dir is required\n");
        return 2;
    }
    ta_store_opts_t so = {.readonly = true};
    ta_store_t *st = NULL;
    int rc = ta_store_open(&st, dir, &so);
    if (rc != 0) {
        fprintf(stderr, "tokenaudit: ledger verify: cannot open %s: %s\n", dir, ta_strerror(rc));
        return 2;
    }
    int ndiff = 0;
    rc = ta_ledger_verify(st, &o, stdout, &ndiff);
    ta_store_close(st);
    if (rc != 0) {
        fprintf(stderr, "tokenaudit: ledger verify: %s\n", ta_strerror(rc));
        return 2;
    }
    return ndiff ? 1 : 0;
}
