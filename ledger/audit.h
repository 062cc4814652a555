/*
 * audit.h - the audit environment: request records, the per-quota index,
 * hourly aggregates and raised warnings (layout in audit.c and
 * schema/audit_records.h), plus the queries behind the admin endpoints and
 * the `tokenaudit audit` CLI.
 *
 * Writers: billing only (ta_audit_put / ta_audit_batch_*, ta_audit_warning_put,
 * ta_audit_prune, ta_audit_upgrade), inside its audit write transactions.
 * Readers: workers (admin API) and the CLI, in read transactions on
 * TA_ENV_AUDIT.
 */
#ifndef TA_AUDIT_H
#define TA_AUDIT_H

#include <stdio.h>

#include "ledger/event.h"
#include "ledger/store.h"
#include "ledger/tzinfo.h"
#include "schema/audit_records.h"

#define TA_AUDIT_KEY_LEN 24   /* t_received_ns BE (8) + request id (16) */
#define TA_AUDIT_QKEY_LEN 32  /* quota id (8) + t_received_ns (8) + request id (16) */
#define TA_DAILY_KEY_LEN 20   /* earlier builds' aggregates: quota id (8) + day BE (4) + model id (8) */
#define TA_AGG_KEY_LEN 37     /* scope (1) + scope id (8) + UTC hour (4) + model, provider, group id (8 each) */
#define TA_WARNING_KEY_LEN 20 /* quota id (8) + period start (8) + threshold (4) */

/* The scopes of the hourly aggregates (the first byte of their keys; the
 * keys of earlier builds' daily rows start with a quota id's high byte, 0). */
enum ta_agg_scope { TA_AGG_ALL = 0xA1, TA_AGG_QUOTA = 0xA2, TA_AGG_USER = 0xA3 };
/* The user_cost database: key UTC hour BE (4), sorted duplicates of
 * [ user id BE (8) | cost in nano-units BE (8) | requests BE (8) ] (two's
 * complement), one per user with a request in that hour. user_cum: key UTC
 * day BE (4), the same entries holding each user's totals over every hour
 * before that day. */
#define TA_USER_COST_LEN 24

/** Fill an audit record from a ring event. charged: the ledger added
 *  ev->cost (else cost is 0 and uncharged_cost carries it). Any process. */
void ta_audit_from_event(const ta_event_t *ev, uint64_t ticket, int64_t period_start, bool charged,
                         ta_audit_t *out);

/** Store a record: requests, requests_by_quota and its hourly aggregates
 *  (all, its quota's, its user's; group_id: the quota's group when the
 *  request was billed). A record whose key already exists is left alone
 *  (returns 1): re-applying an event never counts it twice. Returns 0, 1, or
 *  <0. Billing, audit write txn. */
int ta_audit_put(ta_store_t *st, MDB_txn *txn, const ta_audit_t *rec, uint64_t group_id);

/* A batch of records in one audit write transaction (billing's audit pass):
 * each record and its index entry are written at once, the aggregates are
 * summed in memory and each aggregate row is read and written once, at
 * ta_audit_batch_flush(), which must run before the transaction commits.
 * Allocated once; nothing is allocated per record. */
typedef struct ta_audit_batch ta_audit_batch_t;
int ta_audit_batch_new(ta_audit_batch_t **out);
void ta_audit_batch_free(ta_audit_batch_t *ab);
/** ta_audit_put(), the aggregates summed in ab (a full ab flushes itself). */
int ta_audit_batch_put(ta_audit_batch_t *ab, ta_store_t *st, MDB_txn *txn, const ta_audit_t *rec,
                       uint64_t group_id);
/** Write ab's sums into txn and empty ab. 0 or <0 (the caller aborts). */
int ta_audit_batch_flush(ta_audit_batch_t *ab, ta_store_t *st, MDB_txn *txn);
/** Forget ab's sums (their transaction was aborted). */
void ta_audit_batch_reset(ta_audit_batch_t *ab);

/** Give a data directory written by an earlier build its hourly aggregates
 *  (docs/ARCHITECTURE.md "Data"): every stored record is summed into them,
 *  then each earlier daily row gives what its records no longer explain
 *  (records pruned by audit_retention_days) to its day's first UTC hour
 *  (provider 0) and is removed. Resumable: killed, the next call goes on
 *  where the last committed step stopped. Groups come from the ledger's
 *  quotas. Billing, before its first batch (its own transactions). */
int ta_audit_upgrade(ta_store_t *st);
/** Look a record up by its key parts. 0 or TA_ENOTFOUND. */
int ta_audit_get(ta_store_t *st, MDB_txn *txn, int64_t t_received_ns, const uint8_t rid[16],
                 ta_audit_t *out);

/** Warnings: get (0 / TA_ENOTFOUND) and put (overwrites). Billing writes. */
int ta_audit_warning_get(ta_store_t *st, MDB_txn *txn, uint64_t quota_id, int64_t period_start,
                         int32_t threshold, ta_warning_t *out);
int ta_audit_warning_put(ta_store_t *st, MDB_txn *txn, const ta_warning_t *w);

/** Walk the warnings table in key order (quota, period, threshold) and call
 *  cb for each record whose webhook_state is state (any state when state <
 *  0); cb returns 0 to go on, 1 to stop (ta_audit_warning_scan returns 0),
 *  <0 to stop with that error. Any txn on TA_ENV_AUDIT (billing re-queues
 *  the pending ones at start; `tokenaudit audit warnings`). */
typedef int (*ta_warning_cb)(const ta_warning_t *w, void *arg);
int ta_audit_warning_scan(ta_store_t *st, MDB_txn *txn, int state, ta_warning_cb cb, void *arg);

/** Delete up to max records (requests + requests_by_quota) received before
 *  before_ns; daily aggregates stay, and each deleted record's cost is added
 *  to its (quota, period) pruned total in meta, which ta_audit_sum_cost()
 *  counts. *more tells whether older ones remain.
 *  Billing, small audit write txns. */
int ta_audit_prune(ta_store_t *st, MDB_txn *txn, int64_t before_ns, size_t max, size_t *deleted,
                   bool *more);

/* ---- queries (admin API, CLI) ------------------------------------------ */

typedef struct ta_audit_filter {
    int64_t since_ns, until_ns;  /* t_received in [since, until); 0 = open */
    uint64_t quota_id, user_id, model_id; /* 0 = any */
    const char *model;           /* requested or served model name; NULL = any */
    int32_t status;              /* 0 = any */
    bool ascending;              /* oldest first (export, tail); default newest first */
    /* keyset position: only records whose key is below (newest first) or
     * above (ascending) this TA_AUDIT_KEY_LEN key; found in O(log n) */
    bool has_cursor;
    uint8_t cursor[TA_AUDIT_KEY_LEN];
} ta_audit_filter_t;

/** cb gets each matching record of the page (valid during the call only);
 *  returns 0 to go on, <0 to stop with that error. */
typedef int (*ta_audit_cb)(const ta_audit_t *rec, void *arg);

/** Walk matching records in time order (filter->ascending) and call cb for
 *  those at positions [offset, offset + limit) (limit 0 = all). *total (may
 *  be NULL) gets the number of matching records; with count_max > 0 the walk
 *  reads at most count_max records past the page, and *total is then a lower
 *  bound (*capped true, may be NULL). Without a filter that needs the record
 *  (user_id, model, status) records are not decoded to be counted. Read txn
 *  on TA_ENV_AUDIT. */
int ta_audit_list(ta_store_t *st, MDB_txn *txn, const ta_audit_filter_t *f, size_t offset,
                  size_t limit, ta_audit_cb cb, void *arg, size_t *total);
int ta_audit_list_capped(ta_store_t *st, MDB_txn *txn, const ta_audit_filter_t *f, size_t offset,
                         size_t limit, size_t count_max, ta_audit_cb cb, void *arg,
                         size_t *total, bool *capped);
/** The key of a record (the keyset cursor of ta_audit_filter_t). */
void ta_audit_key(const ta_audit_t *rec, uint8_t key[TA_AUDIT_KEY_LEN]);

enum ta_audit_group {
    TA_GROUP_NONE = 0, TA_GROUP_DAY, TA_GROUP_MODEL, TA_GROUP_USER, TA_GROUP_HOUR,
    TA_GROUP_PROVIDER, TA_GROUP_GROUP
};
/** Statistics from the hourly aggregates (hour granularity: since counts
 *  from the start of its UTC hour, until up to the end of the hour holding
 *  the instant before it): {"totals":{requests, prompt_tokens,
 *  completion_tokens, cached_tokens, cache_write_tokens, cost, errors},
 *  "series":[{"day"|"hour"|"model_id"|"user_id"|"provider_id"|"group_id":
 *  ..., same sums}]}, series in ascending bucket order. Day and hour
 *  buckets are placed in tz (NULL: UTC): "day" "2026-12-03" (the local date
 *  of each UTC hour's start), "hour" "2026-12-03T08:00:00+08:00" (a UTC hour
 *  labelled with its local start). Filters used: since, until, quota_id,
 *  user_id, model_id. Reads the aggregates of the narrowest scope (quota,
 *  else user, else all), never the records. *out is a new reference. */
int ta_audit_stats(ta_store_t *st, MDB_txn *txn, const ta_audit_filter_t *f, int group_by,
                   const ta_tz_t *tz, json_t **out);
/** ta_audit_stats() grouped on two levels: each entry of the series is one
 *  bucket of group_by (TA_GROUP_DAY or TA_GROUP_HOUR) and then_by (a model,
 *  provider, group or user; TA_GROUP_NONE: one level), carrying both fields
 *  ("day" and "model_id", ...); series in ascending order of the first,
 *  then of the second.
 *  limit > 0 keeps the limit costliest keys of the ranked grouping (then_by,
 *  or a group_by that is not day or hour; ties: the smaller id) over the
 *  whole range, adds "top": {"limit", "of": the keys there were} and orders
 *  the series by rank (two levels: by time, then rank). Ranking users reads
 *  user_cost (an entry per user and hour) or user_cum (an entry per user at
 *  each end of the range), whichever is fewer, and then the aggregate rows
 *  of the limit users only; the totals are always everything's in the range. */
int ta_audit_stats_by(ta_store_t *st, MDB_txn *txn, const ta_audit_filter_t *f, int group_by,
                      int then_by, const ta_tz_t *tz, size_t limit, json_t **out);
/** How a ranking of users reads what they spent: 0 (the default) the cheaper
 *  of TA_RANK_HOURS and TA_RANK_DAYS, counted first; tests pin one to
 *  compare each with the aggregate rows (TA_RANK_DAYS_TABLE: user_cum
 *  summed in a table, as when too many hours lie between a range's ends and
 *  their days to merge). */
enum { TA_RANK_AUTO = 0, TA_RANK_HOURS = 1, TA_RANK_DAYS = 2, TA_RANK_DAYS_TABLE = 3 };
extern int ta_audit_rank_plan;
/** For `ledger verify`: the sums of the aggregate rows of scope/id
 *  (TA_AGG_*) from UTC hour hour_lo on (requests, tokens, cost, errors). */
int ta_audit_agg_sum(ta_store_t *st, MDB_txn *txn, int scope, uint64_t id, uint32_t hour_lo,
                     ta_daily_t *sum);
/** For `ledger verify`: each user's cost in user_cost against their
 *  aggregate rows, from UTC hour hour_lo on; a DIFF line on out and
 *  (*ndiff)++ per difference. Nothing while user_cost is not made yet. */
int ta_audit_user_cost_verify(ta_store_t *st, MDB_txn *txn, uint32_t hour_lo, FILE *out,
                              int *ndiff);
/** Whether the aggregates are hourly (false while data of an earlier build
 *  waits for ta_audit_upgrade, which billing runs at start). */
bool ta_audit_aggregates_ready(ta_store_t *st, MDB_txn *txn);
/** The first UTC hour whose records are all still stored: 0, or when
 *  pruning (audit_retention_days) deleted some, the hour after the oldest
 *  stored record's (pruning deletes the oldest first). */
int ta_audit_complete_from(ta_store_t *st, MDB_txn *txn, uint32_t *hour);
/** Whether the aggregates hold anything of quota_id (a deleted quota's
 *  statistics stay readable). Read txn on TA_ENV_AUDIT. */
bool ta_audit_quota_seen(ta_store_t *st, MDB_txn *txn, uint64_t quota_id);

/** Sum of cost over the quota's records whose period_start == period_start
 *  (every record when all_periods), looking at records received since
 *  since_ns, plus the pruned totals of that period (all periods), so a
 *  retention shorter than the period does not make the books differ. For `ledger verify`. Read txn on TA_ENV_AUDIT. */
int ta_audit_sum_cost(ta_store_t *st, MDB_txn *txn, uint64_t quota_id, int64_t period_start,
                      bool all_periods, int64_t since_ns, ta_nano_t *sum, uint64_t *count);

/** JSON of a record (API shape + latency fields). New reference. */
json_t *ta_audit_to_json(const ta_audit_t *rec);

/** One record as a CSV line (RFC 4180: every string quoted, quotes doubled),
 *  the columns of ta_desc_audit in order, as `audit export --format csv`
 *  writes them. A text cell (model, served_model, key_prefix, client_ip)
 *  that a spreadsheet would run as a formula, one starting with =, +, -, @,
 *  tab or CR, is written with a leading single quote ('=1+2). Returns 0,
 *  -ENOMEM or -EIO. Any process. */
int ta_audit_csv_line(FILE *out, const ta_audit_t *rec);

/** `tokenaudit audit tail|export|warnings ...`; argv[0] is "tail", "export"
 *  or "warnings" (every warning record as a JSON line, webhook state
 *  included; --state pending|delivered|failed|none keeps one state).
 *  Returns the process exit code. CLI only. */
int ta_audit_cli(int argc, char **argv);

#endif
