/*
 * quota.c - the budget engine: holds (workers) and settlement (billing) on
 * the balances and holds databases of the ledger environment.
 *
 *   ledger env
 *   +-----------------------------------------------------------------+
 *   | quotas    quota id (be64)  -> ta_quota_t   (limits, expires_at)  |
 *   | balances  quota id (be64)  -> ta_balance_t                       |
 *   |            period_start | cost/tokens/requests used              |
 *   |            cost/tokens held | in_flight | rpm/tpm GCRA TAT (ns)  |
 *   |            warn_level                                            |
 *   | holds     request id (16) -> ta_hold_t                           |
 *   |            quota id | worker pid | cost | tokens | created_ns     |
 *   |            period_start (the balance period at hold time)        |
 *   +-----------------------------------------------------------------+
 *
 * Writers: workers (ta_quota_hold: balance + hold, and quotas.expires_at on
 * auto-renew), billing (ta_quota_settle / ta_quota_release: balance, delete
 * hold). Readers: everyone (ta_quota_usage, ta_quota_holds_of_pid).
 *
 * Ordering: every function here runs inside the CALLER's LMDB write
 * transaction, so all of a request's checks and updates are atomic with
 * respect to every other process (LMDB serializes writers across processes).
 * ta_quota_hold reads everything, decides, and writes only on grant, so a
 * refusal leaves the transaction untouched. A balance missing from the db is
 * a fresh zero balance starting in the current period.
 *
 * Crash behaviour: a process killed inside the transaction loses only that
 * transaction. A worker killed after committing a hold leaves the hold (and
 * its held cost, tokens and in-flight slot) in the ledger until billing's
 * dead-worker cleanup calls ta_quota_release for each of its holds
 * (ta_quota_holds_of_pid). Settlement of a hold that is already gone is a
 * no-op, so replaying an event cannot charge twice.
 *
 * Conventions:
 *  - warn_level counts the warn_at thresholds already raised this period
 *    (index + 1); 0 = none. Rollover resets it to 0. Billing raises it.
 *  - Rollover is lazy: the first write transaction (hold or settle) after a
 *    period ended resets the used amounts and warn_level and moves
 *    period_start to the current period. cost_held, tokens_held and in_flight
 *    survive rollover: they belong to running requests.
 *  - GCRA state is a theoretical arrival time (TAT, ns) per limit; 0 = idle.
 */
#include <limits.h>
#include <string.h>

#include "ledger/quota.h"

#define NS_PER_S 1000000000LL
#define WINDOW_NS (60LL * NS_PER_S)        /* RPM and TPM: one minute */
#define TPM_DEBT_MAX_NS (60LL * WINDOW_NS) /* TPM corrections never push TAT past 1 h */
#define DEFAULT_MAX_OUTPUT 4096            /* when neither client nor model gives one */
#define ESTIMATE_OUTPUT_MAX 256            /* expected output per choice (TPM estimate) */

typedef unsigned __int128 u128;

static int64_t sat_add(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return b > 0 ? INT64_MAX : INT64_MIN;
    return r;
}

static int64_t nonneg(int64_t v)
{
    return v < 0 ? 0 : v;
}

static uint64_t unsig(int64_t v)
{
    return v < 0 ? 0 : (uint64_t)v;
}

/* ceil(num / 1e6) saturated to int64. */
static ta_nano_t per_million_ceil(u128 num)
{
    u128 q = (num + 999999u) / 1000000u; /* num < 2^128 - 1e6: every term < 2^126 */
    return q > (u128)INT64_MAX ? INT64_MAX : (ta_nano_t)q;
}

/*
 * Cost: every token class at its own price (per 1M tokens), 0 = free:
 *   input  = prompt - cached - cache_write (never below 0)   at input_price
 *   cached                                                    at cache_read_price
 *   cache_write                                               at cache_write_price
 *   completion                                                at output_price
 * A cache price that was never set (schema.h, ta_model_prices_set) is the
 * input price: a price list copied without its cache rows must not make
 * cached tokens free by accident; an explicit "0" is free.
 * summed exactly in 128 bits and divided by 1e6 ONCE, rounding up, so the
 * rounding error of a request is below one nano-unit. Each product is below
 * 2^126, so the sum of four cannot wrap. ta_nano_price() rounds per class,
 * which would round up to four times; that is why it is not used here.
 */
static uint64_t cache_read_price(const ta_model_t *m)
{
    return ta_model_prices_set(m) & TA_PRICE_CACHE_READ ? unsig(m->cache_read_price) : unsig(m->input_price);
}

static uint64_t cache_write_price(const ta_model_t *m)
{
    return ta_model_prices_set(m) & TA_PRICE_CACHE_WRITE ? unsig(m->cache_write_price) : unsig(m->input_price);
}

static u128 cost_numerator(const ta_model_t *m, int64_t prompt, int64_t completion, int64_t cached,
                           int64_t cache_write)
{
    uint64_t p = unsig(prompt), c = unsig(cached), w = unsig(cache_write);
    uint64_t in = p > c ? p - c : 0;
    in = in > w ? in - w : 0;
    return (u128)in * unsig(m->input_price) + (u128)c * cache_read_price(m) + (u128)w * cache_write_price(m) +
           (u128)unsig(completion) * unsig(m->output_price);
}

ta_nano_t ta_cost(const ta_model_t *m, int64_t prompt_tokens, int64_t completion_tokens,
                  int64_t cached_tokens, int64_t cache_write_tokens)
{
    return per_million_ceil(
        cost_numerator(m, prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens));
}

/* ---- balances and holds ------------------------------------------------ */

static void balance_fresh(ta_balance_t *b, const ta_quota_t *q, int64_t now_s, const char *tz)
{
    memset(b, 0, sizeof(*b));
    b->quota_id = q->id;
    b->period_start = ta_period_start(q->limits.period, now_s, tz);
}

static int balance_get(ta_store_t *st, MDB_txn *txn, const ta_quota_t *q, int64_t now_s,
                       const char *tz, ta_balance_t *b)
{
    int rc = ta_rec_get(st, txn, &ta_desc_balance, q->id, b);
    if (rc == TA_ENOTFOUND) {
        balance_fresh(b, q, now_s, tz);
        return 0;
    }
    return rc;
}

/* Lazy rollover on a copy; true when the period moved. */
static bool balance_roll(ta_balance_t *b, const ta_quota_t *q, int64_t now_s, const char *tz)
{
    int period = q->limits.period;
    if (period == TA_PERIOD_NONE)
        return false;
    if (now_s < ta_period_end(period, b->period_start, tz))
        return false;
    b->cost_used = 0;
    b->tokens_used = 0;
    b->requests_used = 0;
    b->warn_level = 0;
    b->period_start = ta_period_start(period, now_s, tz);
    return true;
}

static void balance_release(ta_balance_t *b, const ta_hold_t *h)
{
    b->cost_held = nonneg(b->cost_held - nonneg(h->cost));
    b->tokens_held = nonneg(b->tokens_held - nonneg(h->tokens));
    b->in_flight = nonneg(b->in_flight - 1);
}

/* ---- GCRA -------------------------------------------------------------- */

/*
 * One limit, window W = 60 s, increment inc ns per request (RPM: W/rpm) or
 * per token estimate (TPM: tokens * W/tpm). With t = max(tat, now), a request
 * is allowed iff t - now + inc <= W, i.e. the backlog including it fits in
 * one window; on grant tat' = t + inc. For RPM that admits exactly rpm
 * requests in a burst from idle, then one per W/rpm. A TPM request larger
 * than the whole minute (inc > W) could never pass that test, so it is also
 * allowed when the bucket is empty (tat <= now): big requests are throttled
 * after the fact instead of starved forever.
 */
static int64_t gcra_inc(int64_t units, int64_t limit)
{
    u128 inc = (u128)unsig(units) * (u128)WINDOW_NS / (u128)limit;
    if (inc == 0 && units > 0)
        inc = 1;
    return inc > (u128)INT64_MAX / 4 ? INT64_MAX / 4 : (int64_t)inc;
}

static bool gcra_allow(int64_t tat, int64_t now, int64_t inc, int64_t *retry_ns)
{
    int64_t t = tat > now ? tat : now;
    if (t - now + inc <= WINDOW_NS || tat <= now) {
        *retry_ns = 0;
        return true;
    }
    *retry_ns = inc > WINDOW_NS ? tat - now : tat + inc - WINDOW_NS - now;
    return false;
}

static int64_t gcra_after(int64_t tat, int64_t now, int64_t inc)
{
    return sat_add(tat > now ? tat : now, inc);
}

/* What is left in the window after TAT `tat`, in units of `unit_ns`. */
static int64_t gcra_remaining(int64_t tat, int64_t now, int64_t limit)
{
    int64_t backlog = tat > now ? tat - now : 0;
    if (backlog >= WINDOW_NS)
        return 0;
    return (int64_t)((u128)(WINDOW_NS - backlog) * (u128)limit / (u128)WINDOW_NS);
}

static int64_t ns_to_ms_ceil(int64_t ns)
{
    return ns <= 0 ? 0 : (ns + 999999) / 1000000;
}

/* ---- hold -------------------------------------------------------------- */

/* The output limit the request would run with before any budget clamp: the
 * client's, never above the model's max output; the model's when the client
 * gave none; else DEFAULT_MAX_OUTPUT. */
static int64_t wanted_output(const ta_hold_req_t *req)
{
    int64_t model_max = req->model->max_output_tokens;
    if (req->max_output_tokens > 0)
        return model_max > 0 && req->max_output_tokens > model_max ? model_max : req->max_output_tokens;
    if (model_max > 0)
        return model_max;
    return DEFAULT_MAX_OUTPUT;
}

/* Worst price a prompt token can have once the provider reports how it was
 * served (a cache write usually costs MORE than plain input). */
static uint64_t worst_prompt_price(const ta_model_t *m)
{
    uint64_t p = unsig(m->input_price);
    if (cache_write_price(m) > p)
        p = cache_write_price(m);
    if (cache_read_price(m) > p)
        p = cache_read_price(m);
    return p;
}

static void fill_rate_headers(const ta_quota_t *q, const ta_balance_t *b, int64_t now,
                              ta_hold_res_t *res)
{
    const ta_limits_t *l = &q->limits;
    if (l->rpm > 0) {
        res->rpm_limit = l->rpm;
        res->rpm_remaining = gcra_remaining(b->rpm_tat_ns, now, l->rpm);
        res->rpm_reset_ms = ns_to_ms_ceil(b->rpm_tat_ns - now);
    }
    if (l->tpm > 0) {
        res->tpm_limit = l->tpm;
        res->tpm_remaining = gcra_remaining(b->tpm_tat_ns, now, l->tpm);
        res->tpm_reset_ms = ns_to_ms_ceil(b->tpm_tat_ns - now);
    }
}

static int64_t until_period_end_ms(const ta_quota_t *q, const ta_balance_t *b, int64_t now_ns,
                                   const char *tz)
{
    if (q->limits.period == TA_PERIOD_NONE)
        return 0;
    int64_t end = ta_period_end(q->limits.period, b->period_start, tz);
    if (end == INT64_MAX || end > INT64_MAX / NS_PER_S)
        return 0;
    return ns_to_ms_ceil(end * NS_PER_S - now_ns);
}

int ta_quota_hold(ta_store_t *st, MDB_txn *txn, const ta_hold_req_t *req, ta_hold_res_t *res)
{
    const ta_quota_t *q = req->quota;
    const ta_limits_t *l = &q->limits;
    const ta_model_t *m = req->model;
    const char *tz = req->timezone;
    const int64_t now_ns = req->now_ns;
    const int64_t now_s = now_ns / NS_PER_S;
    const bool strict = req->reserve == TA_RESERVE_STRICT;
    ta_balance_t b;
    int rc;

    memset(res, 0, sizeof(*res));
    rc = balance_get(st, txn, q, now_s, tz, &b);
    if (rc != 0)
        goto Exit;
    balance_roll(&b, q, now_s, tz);
    res->period_start = b.period_start;
    fill_rate_headers(q, &b, now_ns, res);

    /* ---- decide (no writes above or in this block) ---- */
    if (!q->is_active) {
        res->refusal = TA_HOLD_INACTIVE;
        goto Exit;
    }
    int64_t expires_at = q->expires_at;
    if (expires_at != 0 && now_s >= expires_at) {
        if (!l->auto_renew || l->period == TA_PERIOD_NONE) {
            res->refusal = TA_HOLD_EXPIRED;
            goto Exit;
        }
        expires_at = ta_period_renew(l->period, expires_at, now_s, tz);
    }
    if (l->cost_limit > 0 && !m->has_prices) {
        res->refusal = TA_HOLD_UNPRICED;
        goto Exit;
    }
    if (l->request_limit > 0 && sat_add(b.requests_used, b.in_flight) >= l->request_limit) {
        res->refusal = TA_HOLD_REQUESTS;
        res->retry_after_ms = until_period_end_ms(q, &b, now_ns, tz);
        goto Exit;
    }

    /* The worst case, in both modes: every prompt token (its upper bound) at
     * its dearest class, and every choice the upstream may generate (n,
     * best_of) at the full output limit, plus output tokens billed beyond that
     * limit (predicted outputs). The caller sends upstream exactly the output
     * limit this returns, so the hold bounds what the upstream can bill. */
    int64_t prompt_est = nonneg(req->prompt_tokens_est);
    int64_t prompt = nonneg(req->prompt_tokens_max);
    if (prompt < prompt_est)
        prompt = prompt_est;
    const bool no_output = req->no_output;
    int64_t choices = req->output_choices > 1 ? req->output_choices : 1;
    if (choices > TA_HOLD_MAX_CHOICES)
        choices = TA_HOLD_MAX_CHOICES;
    int64_t extra = no_output ? 0 : nonneg(req->extra_output_tokens);
    if (extra > TA_HOLD_MAX_OUTPUT)
        extra = TA_HOLD_MAX_OUTPUT;
    int64_t out = no_output ? 0 : wanted_output(req);
    if (out > TA_HOLD_MAX_OUTPUT)
        out = TA_HOLD_MAX_OUTPUT;
    const int64_t need_out = no_output ? 0 : choices; /* one token per choice at least */

    if (l->token_limit > 0) {
        int64_t used = sat_add(b.tokens_used, b.tokens_held);
        if (strict) {
            /* what is left for the output once the prompt and the extra fit */
            int64_t left = l->token_limit - sat_add(used, sat_add(prompt, extra));
            if (left < need_out) {
                res->refusal = TA_HOLD_TOKENS;
                res->retry_after_ms = until_period_end_ms(q, &b, now_ns, tz);
                goto Exit;
            }
            if (!no_output && out > left / choices)
                out = left / choices;
        } else if (used >= l->token_limit) {
            res->refusal = TA_HOLD_TOKENS;
            res->retry_after_ms = until_period_end_ms(q, &b, now_ns, tz);
            goto Exit;
        }
    }
    /* ceil(num / 1e6) <= avail  <=>  num <= avail * 1e6. Bounded terms:
     * prompt < 2^63 and every price < 2^63 give pnum < 2^126; output tokens
     * (out * choices + extra) < 2^51 give onum < 2^114. */
    const u128 pnum = (u128)unsig(prompt) * worst_prompt_price(m);
    const uint64_t oprice = unsig(m->output_price);
    if (l->cost_limit > 0) {
        int64_t avail = l->cost_limit - sat_add(b.cost_used, b.cost_held);
        if (avail <= 0) {
            res->refusal = TA_HOLD_COST;
            res->retry_after_ms = until_period_end_ms(q, &b, now_ns, tz);
            goto Exit;
        }
        if (strict) {
            u128 cap = (u128)avail * 1000000u;
            u128 fixed = pnum + (u128)unsig(extra) * oprice;
            u128 fit = 0;
            if (fixed <= cap)
                fit = oprice > 0 ? (cap - fixed) / ((u128)oprice * (u128)choices) : (u128)TA_HOLD_MAX_OUTPUT;
            if (fixed > cap || fit < (u128)(no_output ? 0 : 1)) {
                res->refusal = TA_HOLD_COST;
                res->retry_after_ms = until_period_end_ms(q, &b, now_ns, tz);
                goto Exit;
            }
            if (!no_output && (u128)out > fit)
                out = (int64_t)fit;
        }
    }
    const int64_t out_tokens = sat_add(out * choices, extra);
    const ta_nano_t hold_cost = per_million_ceil(pnum + (u128)unsig(out_tokens) * oprice);
    int64_t hold_tokens = sat_add(prompt, out_tokens);
    /* TPM is charged what the request is expected to use, in both modes;
     * billing corrects it by actual - estimate. */
    int64_t tpm_est =
        sat_add(prompt_est, sat_add((out < ESTIMATE_OUTPUT_MAX ? out : ESTIMATE_OUTPUT_MAX) * choices, extra));

    int64_t rpm_inc = 0, tpm_inc = 0, retry_ns;
    if (l->rpm > 0) {
        rpm_inc = gcra_inc(1, l->rpm);
        if (!gcra_allow(b.rpm_tat_ns, now_ns, rpm_inc, &retry_ns)) {
            res->refusal = TA_HOLD_RPM;
            res->retry_after_ms = ns_to_ms_ceil(retry_ns);
            res->rpm_remaining = 0;
            goto Exit;
        }
    }
    if (l->tpm > 0) {
        tpm_inc = gcra_inc(tpm_est, l->tpm);
        if (!gcra_allow(b.tpm_tat_ns, now_ns, tpm_inc, &retry_ns)) {
            res->refusal = TA_HOLD_TPM;
            res->retry_after_ms = ns_to_ms_ceil(retry_ns);
            goto Exit;
        }
    }
    if (l->max_concurrency > 0 && b.in_flight >= l->max_concurrency) {
        res->refusal = TA_HOLD_CONCURRENCY;
        res->retry_after_ms = 1000; /* no way to know when a slot frees; ask for a short wait */
        goto Exit;
    }

    /* ---- grant: mutate ---- */
    if (l->rpm > 0)
        b.rpm_tat_ns = gcra_after(b.rpm_tat_ns, now_ns, rpm_inc);
    if (l->tpm > 0)
        b.tpm_tat_ns = gcra_after(b.tpm_tat_ns, now_ns, tpm_inc);
    b.cost_held = sat_add(b.cost_held, hold_cost);
    b.tokens_held = sat_add(b.tokens_held, hold_tokens);
    b.in_flight++;

    ta_hold_t h;
    memset(&h, 0, sizeof(h));
    memcpy(h.request_id, req->request_id, sizeof(h.request_id));
    h.quota_id = q->id;
    h.worker_pid = req->worker_pid;
    h.cost = hold_cost;
    h.tokens = hold_tokens;
    h.created_at_ns = now_ns;
    h.period_start = b.period_start;
    rc = ta_rec_put_k(st, txn, &ta_desc_hold, TA_DB_HOLDS, h.request_id, sizeof(h.request_id), &h);
    if (rc != 0)
        goto Exit;
    rc = ta_rec_put(st, txn, &ta_desc_balance, q->id, &b);
    if (rc != 0)
        goto Exit;
    if (expires_at != q->expires_at) {
        /* Auto-renew writes the quota itself (expires_at only; updated_at
         * keeps meaning "changed by an administrator"). */
        ta_quota_t qn = *q;
        qn.expires_at = expires_at;
        rc = ta_rec_put(st, txn, &ta_desc_quota, q->id, &qn);
        if (rc != 0)
            goto Exit;
    }

    res->refusal = TA_HOLD_OK;
    res->held_cost = hold_cost;
    res->held_tokens = hold_tokens;
    res->tpm_estimate = tpm_est;
    res->max_output_tokens = out;
    fill_rate_headers(q, &b, now_ns, res);
Exit:
    return rc;
}

/* ---- settle / release -------------------------------------------------- */

/* The quota of a hold; a deleted quota settles as period none without rates. */
static int quota_get(ta_store_t *st, MDB_txn *txn, uint64_t id, ta_quota_t *q)
{
    int rc = ta_rec_get(st, txn, &ta_desc_quota, id, q);
    if (rc == TA_ENOTFOUND) {
        memset(q, 0, sizeof(*q));
        q->id = id;
        q->limits.period = TA_PERIOD_NONE;
        return 0;
    }
    return rc;
}

int ta_quota_balance_read(ta_store_t *st, MDB_txn *txn, const ta_quota_t *q, int64_t now_s,
                          const char *tz, ta_balance_t *b)
{
    return balance_get(st, txn, q, now_s, tz, b);
}

int ta_quota_read(ta_store_t *st, MDB_txn *txn, uint64_t id, ta_quota_t *q)
{
    return quota_get(st, txn, id, q);
}

void ta_quota_settle_balance(const ta_quota_t *q, const ta_hold_t *h, const ta_event_t *ev,
                             const char *timezone, ta_balance_t *b)
{
    int64_t now_ns = ev->t_done_ns > 0 ? ev->t_done_ns : ta_now_ns();
    int64_t now_s = now_ns / NS_PER_S;
    balance_roll(b, q, now_s, timezone);
    balance_release(b, h);
    b->cost_used = sat_add(b->cost_used, nonneg(ev->cost));
    b->tokens_used =
        sat_add(b->tokens_used, sat_add(nonneg(ev->prompt_tokens), nonneg(ev->completion_tokens)));
    /* A request counts against request_limit when it was served or charged:
     * an upstream failure (502/504, the provider's own 4xx/429) costs the
     * client nothing, so it must not use up their request budget either. */
    if ((ev->status >= 200 && ev->status < 400) || ev->cost > 0)
        b->requests_used = sat_add(b->requests_used, 1);

    if (q->limits.tpm > 0) {
        int64_t actual = sat_add(nonneg(ev->prompt_tokens), nonneg(ev->completion_tokens));
        int64_t est = nonneg(ev->tpm_estimate);
        int64_t tat = b->tpm_tat_ns;
        if (actual > est) {
            /* tokens beyond the estimate were consumed now: add them to the
             * backlog, bounded so one runaway request cannot lock the key
             * for more than an hour */
            tat = gcra_after(tat, now_ns, gcra_inc(actual - est, q->limits.tpm));
            if (tat > sat_add(now_ns, TPM_DEBT_MAX_NS))
                tat = sat_add(now_ns, TPM_DEBT_MAX_NS);
        } else if (actual < est && tat > now_ns) {
            /* give back unused estimate, but only from the backlog still
             * ahead of now: credit in the past is worthless */
            tat -= gcra_inc(est - actual, q->limits.tpm);
            if (tat < now_ns)
                tat = now_ns;
        }
        b->tpm_tat_ns = tat;
    }
}

int ta_quota_settle(ta_store_t *st, MDB_txn *txn, const ta_event_t *ev, const char *timezone)
{
    ta_hold_t h;
    ta_quota_t q;
    ta_balance_t b;
    int rc;

    if (ev->kind != TA_EV_REQUEST)
        return TA_EINVAL;
    if (!(ev->flags & TA_EVF_HOLD)) {
        /* Only held requests are charged: the worker holds before every
         * billable upstream call. Anything else with a cost is a bug. */
        if (ev->cost != 0)
            ta_log(TA_LOG_WARN, "settle: event with cost %lld but no hold (quota %llu) not charged",
                   (long long)ev->cost, (unsigned long long)ev->quota_id);
        return 0;
    }
    rc = ta_rec_get_k(st, txn, &ta_desc_hold, TA_DB_HOLDS, ev->request_id, 16, &h);
    if (rc == TA_ENOTFOUND)
        return 0; /* already settled or released */
    if (rc != 0)
        goto Exit;
    rc = quota_get(st, txn, h.quota_id, &q);
    if (rc != 0)
        goto Exit;

    int64_t now_ns = ev->t_done_ns > 0 ? ev->t_done_ns : ta_now_ns();
    rc = balance_get(st, txn, &q, now_ns / NS_PER_S, timezone, &b);
    if (rc != 0)
        goto Exit;
    ta_quota_settle_balance(&q, &h, ev, timezone, &b);
    rc = ta_kv_del(st, txn, TA_DB_HOLDS, ev->request_id, 16);
    if (rc != 0)
        goto Exit;
    rc = ta_rec_put(st, txn, &ta_desc_balance, h.quota_id, &b);
Exit:
    return rc;
}

int ta_quota_release(ta_store_t *st, MDB_txn *txn, const uint8_t request_id[16], ta_event_t *ev_out)
{
    ta_hold_t h;
    ta_quota_t q;
    ta_balance_t b;
    int rc;

    rc = ta_rec_get_k(st, txn, &ta_desc_hold, TA_DB_HOLDS, request_id, 16, &h);
    if (rc != 0)
        goto Exit;
    rc = quota_get(st, txn, h.quota_id, &q);
    if (rc != 0)
        goto Exit;
    int64_t now_ns = ta_now_ns();
    /* No rollover here: nothing is charged, and the next hold or settle
     * rolls the period anyway. A missing balance cannot hold anything. */
    rc = ta_rec_get(st, txn, &ta_desc_balance, h.quota_id, &b);
    if (rc == 0) {
        balance_release(&b, &h);
        rc = ta_rec_put(st, txn, &ta_desc_balance, h.quota_id, &b);
    } else if (rc == TA_ENOTFOUND) {
        rc = 0;
    }
    if (rc != 0)
        goto Exit;
    rc = ta_kv_del(st, txn, TA_DB_HOLDS, request_id, 16);
    if (rc != 0)
        goto Exit;
    /* The TPM estimate charged at hold time stays charged: the upstream may
     * well have done the work. */

    if (ev_out != NULL) {
        memset(ev_out, 0, sizeof(*ev_out));
        ev_out->kind = TA_EV_REQUEST;
        ev_out->flags = TA_EVF_ABORTED;
        memcpy(ev_out->request_id, request_id, 16);
        ev_out->worker_pid = h.worker_pid;
        ev_out->status = 499;
        ev_out->error_type = TA_ET_ABORTED;
        ev_out->user_id = q.user_id;
        ev_out->quota_id = h.quota_id;
        ev_out->t_received_ns = h.created_at_ns;
        ev_out->t_done_ns = now_ns > h.created_at_ns ? now_ns : h.created_at_ns;
        ev_out->hold_period_start = h.period_start;
        ev_out->held_cost = h.cost;
        ev_out->held_tokens = h.tokens;
        memcpy(ev_out->key_prefix, q.key_prefix, sizeof(ev_out->key_prefix));
        ev_out->key_prefix[sizeof(ev_out->key_prefix) - 1] = '\0';
    }
Exit:
    return rc;
}

/* ---- read-only views --------------------------------------------------- */

int ta_quota_holds_of_pid(ta_store_t *st, MDB_txn *txn, int32_t pid, uint8_t (*ids)[16],
                          size_t max, size_t *n)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    ta_hold_t h;
    size_t count = 0;
    int rc, mrc;

    *n = 0;
    mrc = mdb_cursor_open(txn, ta_store_dbi(st, TA_DB_HOLDS), &cur);
    if (mrc != 0) {
        ta_log(TA_LOG_ERROR, "holds cursor: %s", mdb_strerror(mrc));
        rc = TA_ELMDB;
        goto Exit;
    }
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        rc = ta_rec_decode(&ta_desc_hold, v.mv_data, v.mv_size, &h);
        if (rc != 0) {
            ta_log(TA_LOG_WARN, "holds: undecodable value skipped (%s)", ta_strerror(rc));
            continue;
        }
        if (h.worker_pid != pid || k.mv_size != 16)
            continue;
        if (count < max)
            memcpy(ids[count], k.mv_data, 16);
        count++;
    }
    if (mrc != MDB_NOTFOUND) {
        ta_log(TA_LOG_ERROR, "holds cursor: %s", mdb_strerror(mrc));
        rc = TA_ELMDB;
        goto Exit;
    }
    *n = count;
    rc = 0;
Exit:
    if (cur != NULL)
        mdb_cursor_close(cur);
    return rc;
}

int ta_quota_usage(ta_store_t *st, MDB_txn *txn, const ta_quota_t *q, int64_t now_s,
                   ta_balance_t *out, int64_t *period_start, int64_t *period_end)
{
    int rc = balance_get(st, txn, q, now_s, NULL, out);
    if (rc != 0)
        return rc;
    balance_roll(out, q, now_s, NULL);
    if (period_start != NULL)
        *period_start = q->limits.period == TA_PERIOD_NONE ? 0 : out->period_start;
    if (period_end != NULL)
        *period_end = ta_period_end(q->limits.period, out->period_start, NULL);
    return 0;
}
