/*
 * requests.c - the audit endpoints of the admin API, and the statistics of
 * a user's own quotas:
 *
 *   GET /api/admin/quotas/{id}/requests/    ?since=&until=&status=&model=   page of records
 *   GET /api/admin/requests/                ?user_id=&quota_id=&model=&status=&since=&until=
 *   GET /api/admin/quotas/{id}/statistics/  ?since=&until=&tz=&group_by=day|hour|model|provider|group
 *                                           (or two levels: day|hour,model|provider|group)
 *   GET /api/admin/statistics/              ?since=&until=&tz=&group_by=...|user
 *                                           (also ?user_id=&quota_id=)
 *   (every statistics route: ?limit=N, the N costliest keys of a model,
 *   provider, group or user grouping; group_by=user: 100 unless given)
 *   GET /api/statistics/                    the caller's quotas (also ?quota_id= of one of them)
 *   GET /api/quotas/{id}/statistics/        one of the caller's quotas (404 for another's)
 *
 * LMDB: read transactions only. The handler's ledger read transaction
 * (ta_admin_txn) answers "does the quota exist" and model names; a second read
 * transaction of this file's own on the audit environment (never written
 * here; billing is its only writer, see ledger/audit.c for its layout) is
 * opened and aborted within the handler. The two snapshots are taken a few
 * microseconds apart and need not agree: a quota deleted in between is
 * answered from whichever snapshot saw it. A worker killed here leaves only
 * two reader slots, which mdb_reader_check frees.
 *
 * Records (ta_audit_list): newest first, paged like every admin list
 * (?page=&page_size=, at most 500). since is inclusive, until exclusive, to
 * the nanosecond; each takes RFC 3339 ("2026-11-26T13:09:17Z") or a date
 * ("2026-11-26", midnight UTC). model matches the requested or the served
 * model name; status is the HTTP status the client got. ?before=CURSOR (the
 * hex key of a record, from a next link) starts the page below that record,
 * positioned in O(log n). The "count" reads at most TA_ADMIN_COUNT_SCAN
 * records past the page (keys only, unless user_id, model or status need the
 * record) and is then a lower bound ("count_estimated": true); the whole
 * table's count comes from LMDB's entry count.
 *
 * Statistics (ta_audit_stats) come from the hourly aggregates (per quota,
 * per user and for everything: UTC hour x model x provider x group), never
 * from a scan of the records, so they stay cheap and survive the pruning of
 * old records. Their granularity is the UTC hour: since counts from the
 * start of its hour, until up to the end of the hour holding the instant
 * just before it. ?tz= (an IANA zone, default UTC) places day and hour
 * buckets: a day is the local date of each hour's start; in a zone whose
 * offset is not a whole hour (Asia/Kolkata) an hour bucket is still a UTC
 * hour, labelled with its local start (05:30+05:30). group_by defaults to
 * day. Each series entry carries "key" (the day "2026-11-26", the hour
 * "2026-11-26T21:00:00+08:00", the model, provider or group name, or the
 * user id) and the totals' counters; model, provider, group and user entries
 * also carry their id and "name" (null, and a null key, when the record no
 * longer exists in the ledger or the request had none). Two levels
 * (group_by=day,model: a day or hour, then a model, provider, group or
 * user) give one entry per pair that has requests, keyed by the day or hour,
 * with the second level's id and name; so one answer draws a chart of days
 * stacked by model, each entry summed from the same aggregates. A ranked
 * answer (?limit=, and group_by=user always) keeps the costliest keys over
 * the range and says how many there were ("top"); users are ranked from
 * ledger/audit.c's user_cost, so its cost does not follow the users.
 *
 * A quota id is known when the ledger has the quota, or when the audit still
 * holds aggregates for it (a deleted quota keeps its records); otherwise 404.
 * The self-service routes answer only the caller's own quotas (the user
 * scope of the aggregates, or a quota of theirs); any other is 404.
 *
 * Worker processes only, on the loop thread.
 */
#include "admin/admin_internal.h"
#include "ledger/audit.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The record fields of API.md "Audit record", in its order. The stored record
 * carries more (bytes, ticket, period, ...); the API shows these. */
static const char *const record_fields[] = {
    "id",          "created_at",        "user_id",           "quota_id",      "key_prefix",
    "endpoint",    "model",             "served_model",      "provider_id",   "stream",
    "status",      "error_type",        "prompt_tokens",     "completion_tokens",
    "cached_tokens", "cache_write_tokens", "usage_estimated", "cost",         "latency_ms",
    "ttft_ms",     "client_ip",
};

enum {
    Q_USER = 1u << 0,   /* ?user_id= */
    Q_QUOTA = 1u << 1,  /* ?quota_id= */
    Q_MODEL = 1u << 2,  /* ?model= */
    Q_STATUS = 1u << 3, /* ?status= */
    Q_SELF = 1u << 4,   /* the caller's own records only (GET /api/requests/) */
};

typedef struct audit_q {
    ta_audit_filter_t f;
    char model[128]; /* a model name is at most 127 bytes (schema) */
} audit_q_t;

/* ---- query parameters ------------------------------------------------------ */

/* The fraction of a validated RFC 3339 time, in ns (ta_time_parse drops it;
 * the records' times have ms, and an exclusive until must keep them). */
static int64_t frac_ns(const char *s)
{
    const char *dot = strchr(s, '.');
    int64_t ns = 0;
    int n = 0;

    if (dot == NULL)
        return 0;
    for (const char *p = dot + 1; *p >= '0' && *p <= '9'; p++) {
        if (n < 9) {
            ns = ns * 10 + (*p - '0');
            n++;
        }
    }
    for (; n < 9; n++)
        ns *= 10;
    return ns;
}

/* ?name= as unix ns: 1 found, 0 absent, <0 replied 400. */
static int query_time(actx_t *c, const char *name, int64_t *ns)
{
    char buf[64];
    int64_t s;
    int rc = ta_admin_query_get(c, name, buf, sizeof(buf));

    if (rc <= 0)
        return rc;
    if (ta_time_parse(buf, strlen(buf), &s) != 0) {
        ta_admin_reply_field(c, name, "format",
                             "must be an RFC 3339 time (2026-11-26T13:09:17Z) or a date (2026-11-26)");
        return TA_EINVAL;
    }
    /* the records' clock is int64 ns: 1970 .. 2262 */
    if (s < 0 || s > INT64_MAX / 1000000000LL - 1) {
        ta_admin_reply_field(c, name, "range", "must be between 1970-01-01 and 2262-01-01");
        return TA_EINVAL;
    }
    *ns = s * 1000000000LL + frac_ns(buf);
    return 1;
}

/* ?status=: an HTTP status 100..599. */
static int query_status(actx_t *c, int32_t *out)
{
    char buf[8];
    int rc = ta_admin_query_get(c, "status", buf, sizeof(buf)), v = 0;
    size_t n;

    if (rc < 0) /* too long is not a status either */
        return rc;
    if (rc == 0)
        return 0;
    n = strlen(buf);
    for (size_t i = 0; i < n; i++) {
        if (buf[i] < '0' || buf[i] > '9' || n != 3) {
            v = -1;
            break;
        }
        v = v * 10 + (buf[i] - '0');
    }
    if (v < 100 || v > 599) {
        ta_admin_reply_field(c, "status", "type", "must be an HTTP status code (100 to 599)");
        return TA_EINVAL;
    }
    *out = v;
    return 1;
}

/* Parse since, until and the filters named in which into q. 0 or <0 replied. */
static int parse_filters(actx_t *c, audit_q_t *q, unsigned which)
{
    int rc;

    if (query_time(c, "since", &q->f.since_ns) < 0 || query_time(c, "until", &q->f.until_ns) < 0)
        return TA_EINVAL;
    if (q->f.since_ns > 0 && q->f.until_ns > 0 && q->f.until_ns <= q->f.since_ns) {
        ta_admin_reply_field(c, "until", "min", "must be later than since");
        return TA_EINVAL;
    }
    if ((which & Q_USER) && ta_admin_query_id(c, "user_id", &q->f.user_id) < 0)
        return TA_EINVAL;
    if ((which & Q_QUOTA) && ta_admin_query_id(c, "quota_id", &q->f.quota_id) < 0)
        return TA_EINVAL;
    if ((which & Q_STATUS) && query_status(c, &q->f.status) < 0)
        return TA_EINVAL;
    if (which & Q_MODEL) {
        if ((rc = ta_admin_query_get(c, "model", q->model, sizeof(q->model))) < 0)
            return rc;
        if (rc > 0)
            q->f.model = q->model;
    }
    return 0;
}

/* ?page= and ?page_size= with the bounds and messages of ta_admin_reply_list. */
static int parse_page(actx_t *c, uint64_t *page, uint64_t *size)
{
    *page = 1;
    *size = TA_ADMIN_PAGE_SIZE_DEFAULT;
    if (ta_admin_query_id(c, "page", page) < 0)
        return TA_EINVAL;
    if (ta_admin_query_id(c, "page_size", size) < 0)
        return TA_EINVAL;
    if (*size > TA_ADMIN_PAGE_SIZE_MAX) {
        ta_admin_reply_field(c, "page_size", "max", "must be an integer from 1 to %d",
                             TA_ADMIN_PAGE_SIZE_MAX);
        return TA_EINVAL;
    }
    /* the offset must fit size_t (ta_audit_list) */
    if (*page > SIZE_MAX / *size - 1) {
        ta_admin_reply_field(c, "page", "max", "too large");
        return TA_EINVAL;
    }
    return 0;
}


/* ---- transactions and lookups ---------------------------------------------- */

static int audit_txn(actx_t *c, MDB_txn **atxn)
{
    int rc = ta_txn_begin(c->st, TA_ENV_AUDIT, false, atxn);

    if (rc != 0) {
        *atxn = NULL;
        ta_admin_reply_store_error(c, rc, "audit transaction");
    }
    return rc;
}

/* Is quota c->id known (ledger, or aggregates left by a deleted quota)?
 * 0, or <0 after replying (404 or 500). */
static int quota_known(actx_t *c, MDB_txn *atxn)
{
    ta_quota_t q;
    int rc = ta_rec_get(c->st, c->txn, &ta_desc_quota, c->id, &q);

    if (rc == TA_ENOTFOUND && ta_audit_quota_seen(c->st, atxn, c->id))
        rc = 0;
    if (rc != 0)
        ta_admin_reply_store_error(c, rc, "quota");
    return rc;
}

/* ---- records ------------------------------------------------------------- */

static json_t *record_json(const ta_audit_t *r)
{
    json_t *full = ta_audit_to_json(r), *o = full != NULL ? json_object() : NULL;

    if (o == NULL) {
        json_decref(full);
        return NULL;
    }
    for (size_t i = 0; i < TA_ARRAY_SIZE(record_fields); i++) {
        json_t *v = json_object_get(full, record_fields[i]);
        if (json_object_set_new(o, record_fields[i], v != NULL ? json_incref(v) : json_null()) != 0) {
            json_decref(o);
            o = NULL;
            break;
        }
    }
    json_decref(full);
    return o;
}

typedef struct page_arg {
    json_t *results;
    uint8_t last_key[TA_AUDIT_KEY_LEN]; /* of the last record on the page */
} page_arg_t;

static int page_cb(const ta_audit_t *rec, void *arg)
{
    page_arg_t *pa = arg;
    json_t *j = record_json(rec);

    if (j == NULL || json_array_append_new(pa->results, j) != 0)
        return -ENOMEM;
    ta_audit_key(rec, pa->last_key);
    return 0;
}

static int hexdigit(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

/* ?before=: a keyset cursor (the hex key of a record, as the next links
 * carry it). 1 found, 0 absent, <0 replied 400. */
static int query_cursor(actx_t *c, ta_audit_filter_t *f)
{
    char buf[TA_AUDIT_KEY_LEN * 2 + 2];
    int rc = ta_admin_query_get(c, "before", buf, sizeof(buf));

    if (rc <= 0)
        return rc;
    for (size_t i = 0; i < TA_AUDIT_KEY_LEN * 2; i++) {
        int h = hexdigit(buf[i]);
        if (h < 0 || strlen(buf) != TA_AUDIT_KEY_LEN * 2) {
            ta_admin_reply_field(c, "before", "format", "must be a cursor from a next link");
            return TA_EINVAL;
        }
        if (i % 2 == 0)
            f->cursor[i / 2] = (uint8_t)(h << 4);
        else
            f->cursor[i / 2] |= (uint8_t)h;
    }
    f->has_cursor = true;
    return 1;
}

static void reply_records(actx_t *c, unsigned which)
{
    audit_q_t q;
    MDB_txn *atxn = NULL;
    uint64_t page, size, pages, entries = 0;
    size_t total = 0;
    bool capped = false, keyset, whole;
    page_arg_t pa;
    json_t *out, *next;
    char link[TA_AUDIT_KEY_LEN * 2 + 16];
    int rc;

    memset(&q, 0, sizeof(q));
    memset(&pa, 0, sizeof(pa));
    q.f.quota_id = c->id;
    if (parse_filters(c, &q, which) != 0 || parse_page(c, &page, &size) != 0)
        return;
    if (which & Q_SELF) /* whatever the query says: a user sees their own records only */
        q.f.user_id = c->caller.id;
    if ((rc = query_cursor(c, &q.f)) < 0)
        return;
    keyset = rc > 0;
    if (keyset && page != 1) {
        ta_admin_reply_field(c, "page", "exclusive", "page does not go with before");
        return;
    }
    if (ta_admin_txn(c, false) != 0 || audit_txn(c, &atxn) != 0)
        return;
    if (c->id != 0 && quota_known(c, atxn) != 0)
        goto Exit;
    if ((pa.results = json_array()) == NULL) {
        ta_admin_reply_store_error(c, -ENOMEM, "requests");
        goto Exit;
    }
    /* counting reads at most TA_ADMIN_COUNT_SCAN records past the page */
    rc = ta_audit_list_capped(c->st, atxn, &q.f, (size_t)((page - 1) * size), (size_t)size,
                              TA_ADMIN_COUNT_SCAN, page_cb, &pa, &total, &capped);
    whole = !keyset && q.f.quota_id == 0 && q.f.user_id == 0 && q.f.model == NULL &&
            q.f.status == 0 && q.f.since_ns == 0 && q.f.until_ns == 0;
    if (rc == 0 && capped && whole) { /* the whole table: its entry count is exact */
        rc = ta_rec_count(c->st, atxn, TA_DB_AUDIT_REQUESTS, &entries);
        total = (size_t)entries;
        capped = false;
    }
    if (rc != 0) {
        ta_admin_reply_store_error(c, rc, "requests");
        goto Exit;
    }
    pages = (total + size - 1) / size;
    if (keyset || capped) {
        /* past the counted part, or from a cursor: the next page starts below the last record */
        bool more = capped || total > (page - 1) * size + json_array_size(pa.results);
        memcpy(link, "before=", 7);
        ta_hex(pa.last_key, TA_AUDIT_KEY_LEN, link + 7);
        next = more && json_array_size(pa.results) > 0 ? ta_admin_link(c, link) : json_null();
    } else {
        next = page < pages ? ta_admin_page_url(c, page + 1) : json_null();
    }
    out = json_pack("{s:I,s:b,s:o,s:o,s:O}", "count", (json_int_t)total, "count_estimated",
                    capped, "next", next, "previous",
                    page > 1 ? ta_admin_page_url(c, page - 1 < pages ? page - 1 : (pages > 0 ? pages : 1))
                             : json_null(),
                    "results", pa.results);
    ta_admin_reply_json(c, 200, out);
Exit:
    json_decref(pa.results);
    if (atxn != NULL)
        ta_txn_abort(atxn);
}

void ta_admin_quota_requests(actx_t *c)
{
    reply_records(c, Q_MODEL | Q_STATUS);
}

void ta_admin_requests_list(actx_t *c)
{
    reply_records(c, Q_USER | Q_QUOTA | Q_MODEL | Q_STATUS);
}

void ta_admin_my_requests(actx_t *c)
{
    reply_records(c, Q_SELF | Q_QUOTA | Q_MODEL | Q_STATUS);
}

/* ---- one record ---------------------------------------------------------------
 * GET /api/admin/requests/{request_id}/ (?since=&until=): the record whose
 * "id" is the path's (X-Request-Id). The requests table is keyed by time,
 * then id (ledger/audit.h), so this reads keys only, newest first, within
 * [since, until) when given: the console passes the listed record's own time,
 * one key away. Without them it reads every key down to the record (the
 * recent ones, the likeliest, first). */

void ta_admin_requests_get(actx_t *c)
{
    audit_q_t q;
    MDB_txn *atxn = NULL;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    uint8_t edge[TA_AUDIT_KEY_LEN];
    char hex[33];
    ta_audit_t rec;
    bool found = false;
    int rc = 0, mrc;

    memset(&q, 0, sizeof(q));
    ta_hex(c->rid, sizeof(c->rid), hex);
    if (parse_filters(c, &q, 0) != 0 || audit_txn(c, &atxn) != 0)
        return;
    if ((mrc = mdb_cursor_open(atxn, ta_store_dbi(c->st, TA_DB_AUDIT_REQUESTS), &cur)) != 0)
        goto Exit;
    if (q.f.until_ns > 0) { /* the last key before until */
        memset(edge, 0, sizeof(edge));
        ta_be64_put(edge, (uint64_t)q.f.until_ns);
        k.mv_size = sizeof(edge);
        k.mv_data = edge;
        mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        mrc = mrc == MDB_NOTFOUND ? mdb_cursor_get(cur, &k, &v, MDB_LAST)
                                  : mrc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_PREV) : mrc;
    } else {
        mrc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    }
    for (; mrc == 0; mrc = mdb_cursor_get(cur, &k, &v, MDB_PREV)) {
        if (k.mv_size != TA_AUDIT_KEY_LEN)
            continue;
        if (q.f.since_ns > 0 && (int64_t)ta_be64_get(k.mv_data) < q.f.since_ns)
            break;
        if (memcmp((const uint8_t *)k.mv_data + 8, c->rid, sizeof(c->rid)) == 0) {
            rc = ta_rec_decode(&ta_desc_audit, v.mv_data, v.mv_size, &rec);
            found = rc == 0;
            break;
        }
    }
    if (mrc == MDB_NOTFOUND)
        mrc = 0;
Exit:
    if (cur != NULL)
        mdb_cursor_close(cur);
    ta_txn_abort(atxn);
    if (mrc != 0 || rc != 0)
        ta_admin_reply_store_error(c, mrc != 0 ? TA_ELMDB : rc, "request");
    else if (!found)
        ta_admin_reply_error(c, 404, "not_found_error", "not_found", NULL,
                             "no audit record has the id %s%s", hex,
                             q.f.since_ns > 0 || q.f.until_ns > 0 ? " in that time range" : "");
    else
        ta_admin_reply_json(c, 200, record_json(&rec));
}

/* ---- the export -----------------------------------------------------------------
 * GET /api/admin/requests/export/?format=csv|jsonl (and the list's filters):
 * every matching record, oldest first, as `tokenaudit audit export` writes it:
 * JSON lines of every field of the record, or CSV with a header row whose
 * text cells are neutralised against spreadsheet formulas (ta_audit_csv_line).
 * The answer streams (ta_api_stream_t, schema/api.h): each part is one read
 * transaction of its own on the audit environment, at most EXPORT_PART
 * records, resumed after the last record sent (the keyset cursor of
 * ta_audit_filter_t). Memory stays bounded whatever the export's size and
 * no transaction lives between parts. A record billing writes meanwhile is
 * included when it sorts after the cursor (records are keyed by their time
 * of receipt); one pruned meanwhile is left out. A part that fails ends the
 * body cut, so a client never takes half an export for a whole one. */

#define EXPORT_PART 256

typedef struct export_stream {
    ta_api_stream_t s; /* first: the worker hands it back as is */
    ta_store_t *st;    /* the worker's, outlives the stream */
    audit_q_t q;       /* the filters; q.f.model points into q.model */
    bool csv;
    bool started;      /* the CSV header is out */
    bool last;         /* the previous part was short: nothing follows */
    size_t sent;
    FILE *out;         /* the part being written (open_memstream) */
} export_stream_t;

static int export_line(const ta_audit_t *rec, void *arg)
{
    export_stream_t *e = arg;
    int rc = 0;

    if (e->csv) {
        rc = ta_audit_csv_line(e->out, rec);
    } else {
        json_t *j = ta_audit_to_json(rec);
        if (j == NULL || json_dumpf(j, e->out, JSON_COMPACT) != 0 || fputc('\n', e->out) == EOF)
            rc = -ENOMEM;
        json_decref(j);
    }
    ta_audit_key(rec, e->q.f.cursor);
    e->q.f.has_cursor = true;
    e->sent++;
    return rc;
}

static int export_next(void *ctx, ta_api_stream_t *s, char **part, size_t *len)
{
    export_stream_t *e = (export_stream_t *)s;
    MDB_txn *atxn = NULL;
    size_t before = e->sent;
    int rc;

    (void)ctx;
    *part = NULL;
    *len = 0;
    if (e->last)
        return 0;
    if ((e->out = open_memstream(part, len)) == NULL)
        return -ENOMEM;
    if (e->csv && !e->started) {
        for (size_t i = 0; i < ta_desc_audit.nfields; i++)
            fprintf(e->out, "%s%s", i > 0 ? "," : "", ta_desc_audit.fields[i].name);
        fputc('\n', e->out);
    }
    e->started = true;
    rc = ta_txn_begin(e->st, TA_ENV_AUDIT, false, &atxn);
    if (rc == 0) {
        rc = ta_audit_list(e->st, atxn, &e->q.f, 0, EXPORT_PART, export_line, e, NULL);
        ta_txn_abort(atxn);
    }
    e->last = e->sent - before < EXPORT_PART;
    if (fclose(e->out) != 0 && rc == 0)
        rc = -ENOMEM;
    e->out = NULL;
    if (rc != 0) {
        ta_log(TA_LOG_ERROR, "audit export: a part failed after %zu records: %s", e->sent,
               ta_strerror(rc));
        free(*part);
        *part = NULL;
        return rc;
    }
    if (*len == 0) { /* nothing more (the last part was exactly full) */
        free(*part);
        *part = NULL;
        return 0;
    }
    return 1;
}

static void export_release(ta_api_stream_t *s)
{
    free(s);
}

void ta_admin_requests_export(actx_t *c)
{
    char fmt[8];
    export_stream_t *e;
    int rc = ta_admin_query_get(c, "format", fmt, sizeof(fmt));

    if (rc < 0)
        return;
    if (rc > 0 && strcmp(fmt, "csv") != 0 && strcmp(fmt, "jsonl") != 0) {
        ta_admin_reply_field(c, "format", "enum", "must be csv or jsonl");
        return;
    }
    if ((e = calloc(1, sizeof(*e))) == NULL) {
        ta_admin_reply_store_error(c, -ENOMEM, "export");
        return;
    }
    if (parse_filters(c, &e->q, Q_USER | Q_QUOTA | Q_MODEL | Q_STATUS) != 0) {
        free(e);
        return;
    }
    e->q.f.ascending = true;
    e->csv = rc > 0 && strcmp(fmt, "csv") == 0;
    e->st = c->st;
    e->s.next = export_next;
    e->s.release = export_release;
    snprintf(e->s.disposition, sizeof(e->s.disposition), "attachment; filename=\"requests.%s\"",
             e->csv ? "csv" : "jsonl");
    c->res->status = 200;
    c->res->content_type = e->csv ? "text/csv; charset=utf-8" : "application/x-ndjson";
    c->res->stream = &e->s;
}

/* ---- statistics -------------------------------------------------------------- */

static const struct {
    const char *name;
    int group;
} group_names[] = {{"day", TA_GROUP_DAY},         {"hour", TA_GROUP_HOUR},
                   {"model", TA_GROUP_MODEL},     {"provider", TA_GROUP_PROVIDER},
                   {"group", TA_GROUP_GROUP},     {"user", TA_GROUP_USER}};

/* The TA_GROUP_* of name among allowed (bits), or TA_GROUP_NONE. */
static int group_named(const char *name, size_t len, unsigned allowed)
{
    for (size_t i = 0; i < TA_ARRAY_SIZE(group_names); i++)
        if ((allowed & (1u << group_names[i].group)) && strlen(group_names[i].name) == len &&
            memcmp(name, group_names[i].name, len) == 0)
            return group_names[i].group;
    return TA_GROUP_NONE;
}

/* The names of allowed, comma-separated, into list. */
static void group_list(unsigned allowed, char *list, size_t cap)
{
    list[0] = '\0';
    for (size_t i = 0; i < TA_ARRAY_SIZE(group_names); i++)
        if (allowed & (1u << group_names[i].group))
            snprintf(list + strlen(list), cap - strlen(list), "%s%s", list[0] ? ", " : "",
                     group_names[i].name);
}

#define G(x) (1u << (x))
#define GROUPS_TIME (G(TA_GROUP_DAY) | G(TA_GROUP_HOUR))

/* ?group_by= among allowed (TA_GROUP_* bits); absent: day. Two levels,
 * "day,model": a time bucket (day or hour), then one of the others allowed
 * (*then; TA_GROUP_NONE for one level). */
static int parse_group(actx_t *c, unsigned allowed, int *group, int *then)
{
    char buf[16], list[64], rest[64];
    int rc = ta_admin_query_get(c, "group_by", buf, sizeof(buf));

    *group = TA_GROUP_DAY;
    *then = TA_GROUP_NONE;
    if (rc <= 0) /* absent, or too long and answered */
        return rc;
    const char *comma = strchr(buf, ',');
    *group = group_named(buf, comma != NULL ? (size_t)(comma - buf) : strlen(buf),
                         comma != NULL ? allowed & GROUPS_TIME : allowed);
    if (comma != NULL && *group != TA_GROUP_NONE)
        *then = group_named(comma + 1, strlen(comma + 1), allowed & ~GROUPS_TIME);
    if (*group != TA_GROUP_NONE && (comma == NULL || *then != TA_GROUP_NONE))
        return 0;
    group_list(allowed, list, sizeof(list));
    group_list(allowed & ~GROUPS_TIME, rest, sizeof(rest));
    ta_admin_reply_field(c, "group_by", "enum",
                         "must be one of %s, or day or hour, a comma and one of %s (day,model)",
                         list, rest);
    return TA_EINVAL;
}

/* ?limit=: the costliest N of a model, provider, group or user grouping
 * (the only or the second level). group_by=user is never unbounded: the
 * users of a range may be every user of the host. */
#define LIMIT_MAX 1000
#define LIMIT_USERS 100

static int parse_limit(actx_t *c, int group, int then, size_t *limit)
{
    char buf[16];
    int ranked = then != TA_GROUP_NONE ? then : group;
    int rc = ta_admin_query_get(c, "limit", buf, sizeof(buf));
    char *end;

    *limit = ranked == TA_GROUP_USER ? LIMIT_USERS : 0;
    if (rc <= 0)
        return rc;
    if (ranked == TA_GROUP_DAY || ranked == TA_GROUP_HOUR) {
        ta_admin_reply_field(c, "limit", "group_by",
                             "ranks a model, provider, group or user grouping (group_by=model, "
                             "or day,model); day and hour buckets are never cut");
        return TA_EINVAL;
    }
    errno = 0;
    unsigned long v = strtoul(buf, &end, 10);
    if (errno != 0 || *end != '\0' || buf[0] < '1' || buf[0] > '9' || v > LIMIT_MAX) {
        ta_admin_reply_field(c, "limit", "max", "must be an integer from 1 to %d", LIMIT_MAX);
        return TA_EINVAL;
    }
    *limit = v;
    return 0;
}

#define GROUPS_QUOTA (G(TA_GROUP_DAY) | G(TA_GROUP_HOUR) | G(TA_GROUP_MODEL) | G(TA_GROUP_PROVIDER) | G(TA_GROUP_GROUP))
#define GROUPS_ALL (GROUPS_QUOTA | G(TA_GROUP_USER))

/* ?tz=: an IANA zone (default UTC). 0 (*tz NULL for UTC) or <0 replied 400. */
static int parse_tz(actx_t *c, ta_tz_t **tz)
{
    char buf[72];
    int rc = ta_admin_query_get(c, "tz", buf, sizeof(buf));

    *tz = NULL;
    if (rc <= 0)
        return rc;
    rc = ta_tz_load(buf, tz);
    if (rc == -ENOMEM) {
        ta_admin_reply_store_error(c, rc, "tz");
        return rc;
    }
    if (rc != 0) {
        ta_admin_reply_field(c, "tz", rc == TA_ENOTFOUND ? "unknown" : "format",
                             "must be an IANA time zone name such as UTC or Asia/Shanghai");
        return TA_EINVAL;
    }
    return 0;
}

/* The name of record id of d (a model, provider, group or user) for a
 * series entry: a new string, or null when it is gone. */
static json_t *name_of(actx_t *c, const ta_recdesc_t *d, json_int_t id, int *rc)
{
    const ta_field_t *f = ta_rec_field(d, "name");
    void *rec = calloc(1, d->size);
    json_t *out = NULL;

    *rc = rec == NULL ? -ENOMEM
                      : id > 0 ? ta_rec_get(c->st, c->txn, d, (uint64_t)id, rec) : TA_ENOTFOUND;
    if (*rc == 0 && f != NULL)
        out = json_string((const char *)rec + f->offset);
    else if (*rc == 0 || *rc == TA_ENOTFOUND)
        out = json_null(), *rc = 0;
    free(rec);
    return out;
}

/* Give each series entry its "key" and, for records, "name" (see the top of
 * the file); with two levels (then: the second) the key is the day or hour
 * and the name the second level's record's. */
static int series_keys(actx_t *c, json_t *series, int group, int then)
{
    static const struct {
        int group;
        const char *id;
        const ta_recdesc_t *d;
    } named[] = {{TA_GROUP_MODEL, "model_id", &ta_desc_model},
                 {TA_GROUP_PROVIDER, "provider_id", &ta_desc_provider},
                 {TA_GROUP_GROUP, "group_id", &ta_desc_group},
                 {TA_GROUP_USER, "user_id", &ta_desc_user}};
    size_t i;
    json_t *e;

    json_array_foreach (series, i, e) {
        json_t *key = NULL, *name = NULL;
        int rc = 0;
        if (group == TA_GROUP_DAY)
            key = json_incref(json_object_get(e, "day"));
        else if (group == TA_GROUP_HOUR)
            key = json_incref(json_object_get(e, "hour"));
        for (size_t j = 0; j < TA_ARRAY_SIZE(named); j++) {
            if (named[j].group != (then != TA_GROUP_NONE ? then : group))
                continue;
            json_int_t id = json_integer_value(json_object_get(e, named[j].id));
            if ((name = name_of(c, named[j].d, id, &rc)) == NULL) {
                json_decref(key);
                return rc != 0 ? rc : -ENOMEM;
            }
            /* a user's key stays its id, as it always was; the others' is the name */
            if (key == NULL)
                key = group == TA_GROUP_USER ? json_integer(id) : json_incref(name);
        }
        /* "key" first, then the counters: the order people read them in */
        json_t *n = key != NULL ? json_pack("{s:o}", "key", key) : NULL;
        if (n == NULL || json_object_update(n, e) != 0 ||
            (name != NULL && json_object_set(n, "name", name) != 0)) {
            json_decref(n);
            json_decref(name);
            return -ENOMEM;
        }
        json_decref(name);
        if (json_array_set_new(series, i, n) != 0) /* takes n, even when it fails */
            return -ENOMEM;
    }
    return 0;
}

/* The caller's own quota c->id, or 0 for the routes without one. 0, or <0
 * after replying 404 (another user's quota is not found either). */
static int own_quota(actx_t *c, uint64_t id)
{
    ta_quota_t q;
    int rc = id != 0 ? ta_rec_get(c->st, c->txn, &ta_desc_quota, id, &q) : 0;

    if (rc == 0 && id != 0 && q.user_id != c->caller.id)
        rc = TA_ENOTFOUND;
    if (rc != 0)
        ta_admin_reply_store_error(c, rc, "quota");
    return rc;
}

/* which: the Q_* filters read; allowed: the group_by values; self: the
 * caller's own statistics (their quotas only). */
static void reply_stats(actx_t *c, unsigned which, unsigned allowed, bool self)
{
    audit_q_t q;
    MDB_txn *atxn = NULL;
    ta_tz_t *tz = NULL;
    json_t *out = NULL;
    int group, then, rc;
    size_t limit;

    memset(&q, 0, sizeof(q));
    q.f.quota_id = c->id;
    if (parse_filters(c, &q, which) != 0 || parse_group(c, allowed, &group, &then) != 0 ||
        parse_limit(c, group, then, &limit) != 0 || parse_tz(c, &tz) != 0)
        return;
    if (ta_admin_txn(c, false) != 0 || audit_txn(c, &atxn) != 0)
        goto Exit;
    if (self) {
        /* the user scope, or one of the user's own quotas (never another's) */
        if (own_quota(c, q.f.quota_id) != 0)
            goto Exit;
        q.f.user_id = c->caller.id;
    } else if (c->id != 0 && quota_known(c, atxn) != 0) {
        goto Exit;
    }
    rc = ta_audit_stats_by(c->st, atxn, &q.f, group, then, tz, limit, &out);
    if (rc == 0)
        rc = series_keys(c, json_object_get(out, "series"), group, then);
    if (rc != 0) {
        json_decref(out);
        ta_admin_reply_store_error(c, rc, "statistics");
        goto Exit;
    }
    ta_admin_reply_json(c, 200, out);
Exit:
    ta_tz_free(tz);
    if (atxn != NULL)
        ta_txn_abort(atxn);
}

void ta_admin_quota_statistics(actx_t *c)
{
    reply_stats(c, 0, GROUPS_QUOTA, false);
}

void ta_admin_statistics(actx_t *c)
{
    reply_stats(c, Q_USER | Q_QUOTA, GROUPS_ALL, false);
}

void ta_admin_my_statistics(actx_t *c)
{
    reply_stats(c, Q_QUOTA, GROUPS_QUOTA, true);
}

void ta_admin_my_quota_statistics(actx_t *c)
{
    reply_stats(c, 0, GROUPS_QUOTA, true);
}
