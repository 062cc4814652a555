/*
 * warnings.c - GET /api/admin/warnings/: the warn_at thresholds quotas
 * reached, with the state of their webhook delivery (billing's outbox,
 * ledger/outbox.c).
 *
 *   ?user_id= ?quota_id=      whose
 *   ?since= ?until=           raised_at in [since, until) (RFC 3339 or a date)
 *   ?webhook_state=           none | pending | delivered | failed
 *   ?page= ?page_size=        pages as every admin list, newest raised first
 *
 * LMDB: one read transaction of this file's own on the audit environment
 * (billing is its only writer), opened and aborted within the handler. The
 * warnings table holds one record per threshold a quota reached in a period
 * (ledger/audit.h), keyed by quota, period and threshold; a person wants the
 * newest first, so the handler reads the table whole, keeps the matches'
 * (raised_at, key) pairs (28 bytes each), sorts them and decodes only the
 * page's records. Its counts are exact ("count_estimated" is always false).
 *
 * Worker processes only, on the loop thread.
 */
#include "admin/admin_internal.h"
#include "ledger/audit.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct hit {
    int64_t raised_at_ns;
    uint64_t quota_id;
    int64_t period_start;
    int32_t threshold;
} hit_t;

typedef struct scan {
    uint64_t user_id, quota_id;
    int64_t since_ns, until_ns;
    hit_t *hits;
    size_t n, cap;
} scan_t;

static int scan_cb(const ta_warning_t *w, void *arg)
{
    scan_t *s = arg;

    if ((s->user_id != 0 && w->user_id != s->user_id) ||
        (s->quota_id != 0 && w->quota_id != s->quota_id) ||
        (s->since_ns > 0 && w->raised_at_ns < s->since_ns) ||
        (s->until_ns > 0 && w->raised_at_ns >= s->until_ns))
        return 0;
    if (s->n == s->cap) {
        size_t ncap = s->cap > 0 ? s->cap * 2 : 64;
        hit_t *p = realloc(s->hits, ncap * sizeof(*p));
        if (p == NULL)
            return -ENOMEM;
        s->hits = p;
        s->cap = ncap;
    }
    s->hits[s->n++] = (hit_t){w->raised_at_ns, w->quota_id, w->period_start, w->threshold};
    return 0;
}

/* Newest raised first; the key (quota, period, threshold) breaks ties. */
static int hit_cmp(const void *pa, const void *pb)
{
    const hit_t *a = pa, *b = pb;

    if (a->raised_at_ns != b->raised_at_ns)
        return a->raised_at_ns > b->raised_at_ns ? -1 : 1;
    if (a->quota_id != b->quota_id)
        return a->quota_id < b->quota_id ? -1 : 1;
    if (a->period_start != b->period_start)
        return a->period_start > b->period_start ? -1 : 1;
    return a->threshold > b->threshold ? -1 : a->threshold < b->threshold;
}

/* The record as the API shows it, with the stable "id" its webhook POST
 * carries (quota-period-threshold) first. */
static json_t *warning_json(const ta_warning_t *w)
{
    char id[80];
    json_t *o, *rec = ta_rec_to_json(&ta_desc_warning, w, TA_JSON_API);

    snprintf(id, sizeof(id), "%" PRIu64 "-%" PRId64 "-%d", w->quota_id, w->period_start,
             (int)w->threshold);
    o = rec != NULL ? json_pack("{s:s}", "id", id) : NULL;
    if (o == NULL || json_object_update(o, rec) != 0) {
        json_decref(o);
        o = NULL;
    }
    json_decref(rec);
    return o;
}

/* ?name= as unix ns (RFC 3339 or a date): 1 found, 0 absent, <0 replied. */
static int query_time_ns(actx_t *c, const char *name, int64_t *ns)
{
    char buf[64];
    int64_t s;
    int rc = ta_admin_query_get(c, name, buf, sizeof(buf));

    if (rc <= 0)
        return rc;
    if (ta_time_parse(buf, strlen(buf), &s) != 0 || s < 0 || s > INT64_MAX / 1000000000LL - 1) {
        ta_admin_reply_field(c, name, "format",
                             "must be an RFC 3339 time (2026-11-26T13:09:17Z) or a date (2026-11-26) "
                             "from 1970 to 2262");
        return TA_EINVAL;
    }
    *ns = s * 1000000000LL;
    return 1;
}

void ta_admin_warnings_list(actx_t *c)
{
    scan_t s;
    char buf[32];
    int state = -1, rc;
    uint64_t page = 1, size = TA_ADMIN_PAGE_SIZE_DEFAULT, pages;
    MDB_txn *atxn = NULL;
    json_t *results = NULL, *next, *prev;

    memset(&s, 0, sizeof(s));
    if (ta_admin_query_id(c, "user_id", &s.user_id) < 0 ||
        ta_admin_query_id(c, "quota_id", &s.quota_id) < 0 ||
        query_time_ns(c, "since", &s.since_ns) < 0 || query_time_ns(c, "until", &s.until_ns) < 0 ||
        ta_admin_query_id(c, "page", &page) < 0 || ta_admin_query_id(c, "page_size", &size) < 0)
        return;
    if (s.since_ns > 0 && s.until_ns > 0 && s.until_ns <= s.since_ns) {
        ta_admin_reply_field(c, "until", "min", "must be later than since");
        return;
    }
    if (size > TA_ADMIN_PAGE_SIZE_MAX) {
        ta_admin_reply_field(c, "page_size", "max", "must be an integer from 1 to %d",
                             TA_ADMIN_PAGE_SIZE_MAX);
        return;
    }
    if (page > SIZE_MAX / size - 1) {
        ta_admin_reply_field(c, "page", "max", "too large");
        return;
    }
    if ((rc = ta_admin_query_get(c, "webhook_state", buf, sizeof(buf))) < 0)
        return;
    if (rc > 0) {
        const ta_field_t *f = ta_rec_field(&ta_desc_warning, "webhook_state");
        for (int i = 0; f != NULL && f->names[i] != NULL; i++)
            if (strcmp(f->names[i], buf) == 0)
                state = i;
        if (state < 0) {
            ta_admin_reply_field(c, "webhook_state", "enum",
                                 "must be one of none, pending, delivered, failed");
            return;
        }
    }
    if ((rc = ta_txn_begin(c->st, TA_ENV_AUDIT, false, &atxn)) != 0) {
        ta_admin_reply_store_error(c, rc, "audit transaction");
        return;
    }
    rc = ta_audit_warning_scan(c->st, atxn, state, scan_cb, &s);
    if (rc == 0 && (results = json_array()) == NULL)
        rc = -ENOMEM;
    if (rc != 0)
        goto Exit;
    if (s.n > 1) /* (qsort of no array at all is undefined) */
        qsort(s.hits, s.n, sizeof(*s.hits), hit_cmp);
    for (size_t i = (size_t)((page - 1) * size); i < s.n && i < (size_t)(page * size); i++) {
        ta_warning_t w;
        json_t *j;
        rc = ta_audit_warning_get(c->st, atxn, s.hits[i].quota_id, s.hits[i].period_start,
                                  s.hits[i].threshold, &w);
        if (rc == 0 && ((j = warning_json(&w)) == NULL || json_array_append_new(results, j) != 0))
            rc = -ENOMEM;
        if (rc != 0)
            goto Exit;
    }
    pages = (s.n + size - 1) / size;
    next = page < pages ? ta_admin_page_url(c, page + 1) : json_null();
    prev = page > 1 ? ta_admin_page_url(c, page - 1 < pages ? page - 1 : (pages > 0 ? pages : 1))
                    : json_null();
    ta_admin_reply_json(c, 200,
                        json_pack("{s:I,s:b,s:o,s:o,s:O}", "count", (json_int_t)s.n,
                                  "count_estimated", false, "next", next, "previous", prev,
                                  "results", results));
Exit:
    if (rc != 0)
        ta_admin_reply_store_error(c, rc, "warnings");
    json_decref(results);
    ta_txn_abort(atxn);
    free(s.hits);
}
