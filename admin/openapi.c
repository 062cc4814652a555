/*
 * openapi.c - the OpenAPI 3.0 document of the HTTP API, generated from the
 * code (`tokenaudit openapi` prints it; docs/openapi.yaml is that output,
 * and tests/integration/test_openapi.py fails when the two differ; workers
 * serve it as JSON at GET /api/openapi.json).
 *
 * Where each part comes from:
 *   - component schemas of the stored records: the schema descriptors
 *     (schema/schema.h, schema/audit_records.h). Field type -> JSON type,
 *     bounds -> minimum/maximum/maxLength, ENUM/FLAGS -> enum, NANO -> decimal
 *     string, TIME -> date-time, NULLABLE -> nullable, READONLY/INTERNAL ->
 *     readOnly, REQUIRED -> required, defaults from ta_rec_defaults' `def`.
 *     SECRET and BYTES fields are skipped, as ta_rec_to_json skips them.
 *     What the handlers add around a record (provider api_key, user
 *     password, quota usage and api_key) is listed here, next to it.
 *   - /api paths: the route table of admin.c (ta_admin_route_t), one row per
 *     operation with its documentation as columns: operation id, tag,
 *     summary, request and answer schemas, statuses and query parameters.
 *     Nothing here is keyed by a route's method or pattern; a row whose
 *     columns are missing or name what the components lack stops the
 *     generator (check_route, ta_openapi_check).
 *   - /v1, /healthz, /metrics: a small static list (worker/ has no table).
 *
 * The document is built as a jansson tree (objects keep insertion order) and
 * written either as JSON or as block YAML by the small emitter at the end,
 * so the output is byte-for-byte deterministic.
 *
 * No LMDB, no h2o: callable from any process (the CLI uses it).
 */
#include "admin/admin_internal.h"
#include "schema/audit_records.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef TA_VERSION
#define TA_VERSION "0.1.0"
#endif

#define REF_SCHEMA "#/components/schemas/"
#define REF_PARAM "#/components/parameters/"
#define REF_RESP "#/components/responses/"
#define REF_HEADER "#/components/headers/"

typedef struct gen {
    bool oom;    /* some allocation failed: the tree is incomplete */
    bool broken; /* a table names something the code lacks (logged) */
    char why[256]; /* the first such thing */
} gen_t;

/* ---- tree helpers ---------------------------------------------------------- */

/* Set o[k] = v (v stolen, NULL allowed: marks the failure). */
static void put(gen_t *g, json_t *o, const char *k, json_t *v)
{
    if (o == NULL || v == NULL) {
        json_decref(v);
        g->oom = true;
        return;
    }
    if (json_object_set_new(o, k, v) != 0)
        g->oom = true;
}

static void push(gen_t *g, json_t *a, json_t *v)
{
    if (a == NULL || v == NULL) {
        json_decref(v);
        g->oom = true;
        return;
    }
    if (json_array_append_new(a, v) != 0)
        g->oom = true;
}

static void put_str(gen_t *g, json_t *o, const char *k, const char *s)
{
    put(g, o, k, json_string(s));
}

/* Copy the next item of a comma-separated list into buf; returns where the
 * rest starts, or NULL when the list is used up. */
static const char *list_next(const char *p, char *buf, size_t cap)
{
    const char *e;
    size_t n;

    if (p == NULL || *p == '\0')
        return NULL;
    e = strchr(p, ',');
    n = e != NULL ? (size_t)(e - p) : strlen(p);
    snprintf(buf, cap, "%.*s", (int)n, p);
    return e != NULL ? e + 1 : p + n;
}

/* {"type": type[, "format": fmt][, "description": desc]} */
static json_t *t_basic(gen_t *g, const char *type, const char *fmt, const char *desc)
{
    json_t *o = json_object();

    put_str(g, o, "type", type);
    if (fmt != NULL)
        put_str(g, o, "format", fmt);
    if (desc != NULL)
        put_str(g, o, "description", desc);
    return o;
}

static json_t *t_str(gen_t *g, const char *desc) { return t_basic(g, "string", NULL, desc); }
static json_t *t_int(gen_t *g, const char *desc) { return t_basic(g, "integer", "int64", desc); }
static json_t *t_bool(gen_t *g, const char *desc) { return t_basic(g, "boolean", NULL, desc); }
static json_t *t_time(gen_t *g, const char *desc)
{
    return t_basic(g, "string", "date-time", desc);
}

static json_t *t_ref(gen_t *g, const char *base, const char *name)
{
    char buf[128];
    json_t *o = json_object();

    snprintf(buf, sizeof(buf), "%s%s", base, name);
    put_str(g, o, "$ref", buf);
    return o;
}

static json_t *t_arr(gen_t *g, json_t *items)
{
    json_t *o = json_object();

    put_str(g, o, "type", "array");
    put(g, o, "items", items);
    return o;
}

/* Mark s nullable (and return it). A $ref cannot carry siblings in 3.0, so
 * a nullable reference is wrapped in allOf. */
static json_t *t_nullable(gen_t *g, json_t *s)
{
    if (s != NULL && json_object_get(s, "$ref") != NULL) {
        json_t *w = json_object(), *all = json_array();
        push(g, all, s);
        put(g, w, "allOf", all);
        s = w;
    }
    put(g, s, "nullable", json_true());
    return s;
}

/* Money as ta_nano_format writes it (up to 9 decimals). */
static json_t *t_money(gen_t *g, bool negative, const char *desc)
{
    json_t *o = t_basic(g, "string", NULL, desc);

    put_str(g, o, "pattern", negative ? "^-?[0-9]+(\\.[0-9]{1,9})?$" : "^[0-9]+(\\.[0-9]{1,9})?$");
    put_str(g, o, "example", "2.5");
    return o;
}

/* An object schema from (name, schema) pairs ended by NULL; required is a
 * comma-separated list or NULL. */
static json_t *t_obj(gen_t *g, const char *desc, const char *required, ...)
{
    json_t *o = json_object(), *props = json_object();
    const char *name;
    va_list ap;

    put_str(g, o, "type", "object");
    if (desc != NULL)
        put_str(g, o, "description", desc);
    if (required != NULL) {
        json_t *req = json_array();
        char item[64];
        for (const char *p = required; (p = list_next(p, item, sizeof(item))) != NULL;)
            push(g, req, json_string(item));
        put(g, o, "required", req);
    }
    va_start(ap, required);
    while ((name = va_arg(ap, const char *)) != NULL)
        put(g, props, name, va_arg(ap, json_t *));
    va_end(ap);
    put(g, o, "properties", props);
    return o;
}

static json_t *t_enum(gen_t *g, const char *desc, ...)
{
    json_t *o = t_str(g, desc), *e = json_array();
    const char *n;
    va_list ap;

    va_start(ap, desc);
    while ((n = va_arg(ap, const char *)) != NULL)
        push(g, e, json_string(n));
    va_end(ap);
    put(g, o, "enum", e);
    return o;
}

/* A string (or any) map: {"type":"object","additionalProperties":{...}}. */
static json_t *t_string_map(gen_t *g, const char *desc)
{
    json_t *o = t_basic(g, "object", NULL, desc);

    put(g, o, "additionalProperties", t_str(g, NULL));
    return o;
}

/* Any JSON value (no type). */
static json_t *t_any(gen_t *g, const char *desc)
{
    json_t *o = json_object();

    put_str(g, o, "description", desc);
    return o;
}

static json_t *t_write_only(gen_t *g, json_t *s)
{
    put(g, s, "writeOnly", json_true());
    return s;
}

/* ---- schemas from the descriptors ------------------------------------------ */

/* The component name of a descriptor (for SUB / SUB_LIST references). */
static const char *desc_component(const ta_recdesc_t *d)
{
    if (d == &ta_desc_route)
        return "ModelRoute";
    if (d == &ta_desc_limits)
        return "QuotaLimits";
    return "Object";
}

static void put_bounds(gen_t *g, json_t *o, const ta_field_t *f)
{
    if (f->min == 0 && f->max == 0)
        return;
    put(g, o, "minimum", json_integer(f->min));
    put(g, o, "maximum", json_integer(f->max));
}

/* The schema of one field, as ta_rec_to_json writes it and ta_rec_from_json
 * reads it. with_default: emit `default` from the descriptor. */
static json_t *field_schema(gen_t *g, const ta_field_t *f, bool with_default)
{
    bool nullable = f != NULL && (f->flags & TA_FF_NULLABLE) != 0;
    char buf[TA_NANO_STRLEN * 2 + 64], lo[TA_NANO_STRLEN], hi[TA_NANO_STRLEN];
    json_t *o = NULL, *e;

    if (f == NULL) { /* ta_rec_field() of a name the descriptor lost */
        g->broken = true;
        return NULL;
    }
    switch (f->type) {
    case TA_FT_ID:
        o = t_int(g, NULL);
        put(g, o, "minimum", json_integer((f->flags & TA_FF_NOTNULL_OUT) ? 0 : 1));
        /* zero ids print as null; a record's own id and required references never are zero */
        if (!(f->flags & (TA_FF_REQUIRED | TA_FF_NOTNULL_OUT)) && strcmp(f->name, "id") != 0)
            nullable = true;
        break;
    case TA_FT_I64:
    case TA_FT_I32:
        o = t_basic(g, "integer", f->type == TA_FT_I32 ? "int32" : "int64",
                    nullable ? "null (or 0 on input) means no limit" : NULL);
        put_bounds(g, o, f);
        if (with_default && f->def != 0)
            put(g, o, "default", json_integer(f->def));
        break;
    case TA_FT_BOOL:
        o = t_bool(g, NULL);
        if (with_default)
            put(g, o, "default", json_boolean(f->def != 0));
        break;
    case TA_FT_NANO:
        if (f->min != 0 || f->max != 0)
            snprintf(buf, sizeof(buf),
                     "decimal string, %s to %s; requests also accept a JSON number%s",
                     ta_nano_format(f->min, lo), ta_nano_format(f->max, hi),
                     nullable ? "; null (or 0 on input) means no limit" : "");
        else
            snprintf(buf, sizeof(buf), "decimal string%s",
                     nullable ? "; null means no limit" : "");
        o = t_money(g, f->min < 0 || (f->min == 0 && f->max == 0), buf);
        if (f->flags & TA_FF_MARKS_PRESENCE) /* unpriced: null (schema.h, presence marking) */
            nullable = true;
        break;
    case TA_FT_TIME:
    case TA_FT_TIME_NS:
        o = t_time(g, nullable ? "RFC 3339 UTC; null means never" : "RFC 3339 UTC");
        break;
    case TA_FT_STR:
        o = t_str(g, NULL);
        if (f->flags & TA_FF_EMAIL)
            put_str(g, o, "format", "email");
        if (f->flags & TA_FF_URL)
            put_str(g, o, "format", "uri");
        if (f->flags & TA_FF_NONEMPTY)
            put(g, o, "minLength", json_integer(1));
        put(g, o, "maxLength", json_integer((json_int_t)f->size - 1));
        break;
    case TA_FT_ENUM:
        o = t_str(g, NULL);
        e = json_array();
        for (const char *const *n = f->names; *n != NULL; n++)
            push(g, e, json_string(*n));
        put(g, o, "enum", e);
        if (with_default)
            put_str(g, o, "default", f->names[f->def]);
        break;
    case TA_FT_FLAGS:
        e = json_array();
        for (const char *const *n = f->names; *n != NULL; n++)
            push(g, e, json_string(*n));
        o = t_arr(g, t_str(g, NULL));
        put(g, json_object_get(o, "items"), "enum", e);
        put(g, o, "uniqueItems", json_true());
        if (with_default && f->def != 0) {
            json_t *d = json_array();
            for (size_t i = 0; f->names[i] != NULL; i++)
                if (f->def & ((int64_t)1 << i))
                    push(g, d, json_string(f->names[i]));
            put(g, o, "default", d);
        }
        break;
    case TA_FT_ID_LIST:
    case TA_FT_I32_LIST:
        e = f->type == TA_FT_ID_LIST ? t_int(g, NULL) : t_basic(g, "integer", "int32", NULL);
        if (f->type == TA_FT_ID_LIST)
            put(g, e, "minimum", json_integer(1));
        else
            put_bounds(g, e, f);
        o = t_arr(g, e);
        put(g, o, "maxItems", json_integer(f->max_count));
        if (f->flags & TA_FF_ASCENDING)
            put_str(g, o, "description", "strictly ascending");
        break;
    case TA_FT_SUB_LIST:
        o = t_arr(g, t_ref(g, REF_SCHEMA, desc_component(f->sub)));
        put(g, o, "maxItems", json_integer(f->max_count));
        break;
    case TA_FT_SUB:
        o = t_ref(g, REF_SCHEMA, desc_component(f->sub));
        break;
    case TA_FT_HEX:
        snprintf(buf, sizeof(buf), "^[0-9a-f]{%zu}$", f->size * 2);
        o = t_str(g, NULL);
        put_str(g, o, "pattern", buf);
        break;
    case TA_FT_BYTES:
        return NULL; /* never JSON */
    }
    if (o == NULL) {
        g->oom = true;
        return NULL;
    }
    if (f->flags & (TA_FF_READONLY | TA_FF_INTERNAL)) {
        if (json_object_get(o, "$ref") != NULL) {
            json_t *w = json_object(), *all = json_array();
            push(g, all, o);
            put(g, w, "allOf", all);
            o = w;
        }
        put(g, o, "readOnly", json_true());
    }
    if (nullable)
        o = t_nullable(g, o);
    return o;
}

/* An object schema of d's JSON fields (only: a NULL-terminated subset in its
 * own order, or NULL for all). no_default: names whose default is not the
 * descriptor's (quota limits come from the group). */
static json_t *record_schema(gen_t *g, const ta_recdesc_t *d, const char *const *only,
                             const ta_recdesc_t *no_default, const char *desc)
{
    json_t *o = json_object(), *props = json_object(), *req = json_array();
    size_t n = 0;

    put_str(g, o, "type", "object");
    if (desc != NULL)
        put_str(g, o, "description", desc);
    for (size_t i = 0; only != NULL ? only[i] != NULL : i < d->nfields; i++) {
        const ta_field_t *f = only != NULL ? ta_rec_field(d, only[i]) : &d->fields[i];
        bool with_default;
        if (f == NULL) {
            /* the subset names a field the descriptor lost: a bug the test catches */
            ta_log(TA_LOG_ERROR, "openapi: %s has no field %s", d->name, only[i]);
            g->broken = true;
            continue;
        }
        if ((f->flags & TA_FF_SECRET) || f->type == TA_FT_BYTES)
            continue;
        with_default = !(f->flags & (TA_FF_READONLY | TA_FF_INTERNAL)) &&
                       (no_default == NULL || ta_rec_field(no_default, f->name) == NULL);
        put(g, props, f->name, field_schema(g, f, with_default));
        if (f->flags & TA_FF_REQUIRED) {
            push(g, req, json_string(f->name));
            n++;
        }
    }
    if (n > 0)
        put(g, o, "required", req);
    else
        json_decref(req);
    put(g, o, "properties", props);
    return o;
}

static json_t *props_of(json_t *schema)
{
    return json_object_get(schema, "properties");
}

/* The list answer: {"count","next","previous","results":[item]}. */
static json_t *page_schema(gen_t *g, const char *item)
{
    json_t *o = json_object(), *all = json_array();

    push(g, all, t_ref(g, REF_SCHEMA, "Page"));
    push(g, all, t_obj(g, NULL, NULL, "results", t_arr(g, t_ref(g, REF_SCHEMA, item)), NULL));
    put(g, o, "allOf", all);
    return o;
}

/* The fields of an API audit record, in API.md's order. The stored record
 * carries more (bytes, ticket, ...); admin/requests.c shows these
 * (record_fields there; the test checks the two lists agree). */
static const char *const audit_api_fields[] = {
    "id",          "created_at",        "user_id",           "quota_id",      "key_prefix",
    "endpoint",    "model",             "served_model",      "provider_id",   "stream",
    "status",      "error_type",        "prompt_tokens",     "completion_tokens",
    "cached_tokens", "cache_write_tokens", "usage_estimated", "cost",         "latency_ms",
    "ttft_ms",     "client_ip",         NULL,
};

/* The counters of statistics totals and series (ledger/audit.c sum_json). */
static const char *const stats_fields[] = {
    "requests", "prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens",
    "cost", "errors", NULL,
};

static json_t *schemas(gen_t *g)
{
    json_t *s = json_object(), *o, *p, *all;
    char buf[160];

    /* ---- the shapes every answer shares ---- */
    put(g, s, "Error",
        t_obj(g, "every error answer", "error", "error",
              t_obj(g, NULL, "message,type,code,param", "message", t_str(g, NULL), "type",
                    t_str(g, "invalid_request_error, authentication_error, not_found_error, ..."),
                    "code", t_str(g, NULL), "param", t_nullable(g, t_str(g, "the field at fault")),
                    "fields",
                    t_string_map(g, "validation errors only: field name -> what is wrong"),
                    NULL),
              NULL));
    put(g, s, "Page",
        t_obj(g, "one page of a list (?page=1&page_size=50, at most 500)",
              "count,count_estimated,next,previous,results", "count",
              t_int(g, "matching items on all pages (see count_estimated)"), "count_estimated",
              t_bool(g, "true when count comes from a bounded sample (an estimate, or for "
                        "audit records a lower bound) instead of an exact count; docs/API.md"),
              "next", t_nullable(g, t_basic(g, "string", "uri", NULL)), "previous",
              t_nullable(g, t_basic(g, "string", "uri", NULL)), "results",
              t_arr(g, json_object()), NULL));

    /* ---- records ---- */
    o = record_schema(g, &ta_desc_user, NULL, NULL, NULL);
    snprintf(buf, sizeof(buf), "required on create; %d to %d bytes", TA_PASSWORD_MIN,
             TA_PASSWORD_MAX);
    p = t_str(g, buf);
    put(g, p, "minLength", json_integer(TA_PASSWORD_MIN));
    put(g, p, "maxLength", json_integer(TA_PASSWORD_MAX));
    put(g, p, "writeOnly", json_true());
    put(g, props_of(o), "password", p);
    put(g, s, "User", o);

    o = record_schema(g, &ta_desc_provider, NULL, NULL, NULL);
    p = t_nullable(g, t_str(g, "the upstream API key, sealed at rest and never shown again; "
                                  "null or \"\" removes it"));
    put(g, p, "maxLength",
        json_integer((json_int_t)(sizeof(((ta_provider_t *)0)->key_sealed) - TA_SEAL_OVERHEAD)));
    put(g, p, "writeOnly", json_true());
    put(g, props_of(o), "api_key", p);
    all = json_array(); /* a $ref takes no siblings: wrapped in allOf */
    push(g, all, t_ref(g, REF_SCHEMA, "ProviderHealth"));
    p = json_object();
    put(g, p, "allOf", all);
    put(g, p, "readOnly", json_true());
    put_str(g, p, "description", "output only: the health of its routes (docs/API.md)");
    put(g, props_of(o), "health", p);
    put(g, s, "Provider", o);
    put(g, s, "ProviderRouteHealth",
        t_obj(g, "one route: the provider and an upstream model name",
              "upstream_name,state,last_error,last_error_at,error_rate,calls,errors,consecutive_failures,"
              "p50_ms,p95_ms,state_since,cooldown_until",
              "upstream_name", t_str(g, NULL), "state",
              t_enum(g, "down: skipped while it cools down", "healthy", "degraded", "down", NULL), "last_error",
              t_nullable(g, t_str(g, "\"HTTP 503\", \"connect\", \"timeout_first_byte\", ...")),
              "last_error_at", t_nullable(g, t_time(g, NULL)), "error_rate",
              t_nullable(g, t_basic(g, "number", "double", "failed calls / calls over the window; null without calls")),
              "calls", t_int(g, "calls over the window"), "errors", t_int(g, "failed calls over the window"),
              "consecutive_failures", t_int(g, NULL), "p50_ms",
              t_nullable(g, t_int(g, "time to the answer head: the upper bound of its histogram bin")),
              "p95_ms", t_nullable(g, t_int(g, NULL)), "state_since", t_nullable(g, t_time(g, NULL)),
              "cooldown_until", t_nullable(g, t_time(g, "while down and cooling down")), NULL));
    put(g, s, "ProviderHealth",
        t_obj(g, "the provider's routes over the last window_s seconds: down when all are down, degraded when "
                 "any is not healthy",
              "state,last_error,last_error_at,error_rate,calls,errors,p50_ms,p95_ms,window_s,routes", "state",
              t_enum(g, NULL, "healthy", "degraded", "down", NULL), "last_error", t_nullable(g, t_str(g, NULL)),
              "last_error_at", t_nullable(g, t_time(g, NULL)), "error_rate",
              t_nullable(g, t_basic(g, "number", "double", NULL)), "calls", t_int(g, NULL), "errors",
              t_int(g, NULL), "p50_ms", t_nullable(g, t_int(g, NULL)), "p95_ms", t_nullable(g, t_int(g, NULL)),
              "window_s", t_int(g, NULL), "routes", t_arr(g, t_ref(g, REF_SCHEMA, "ProviderRouteHealth")),
              NULL));

    put(g, s, "ModelRoute",
        record_schema(g, &ta_desc_route, NULL, NULL, "tried in priority order, lowest first"));
    put(g, s, "Model",
        record_schema(g, &ta_desc_model, NULL, NULL,
                      "name is what clients send as model; prices are per 1M tokens"));
    put(g, s, "QuotaLimits",
        record_schema(g, &ta_desc_limits, NULL, NULL, "limits; null means no limit"));
    put(g, s, "Group", record_schema(g, &ta_desc_group, NULL, NULL, NULL));

    put(g, s, "QuotaUsage",
        t_obj(g, "usage of the current period", NULL, "period_start",
              t_nullable(g, t_time(g, NULL)), "period_end", t_nullable(g, t_time(g, NULL)),
              "cost_used", t_money(g, false, NULL), "tokens_used", t_int(g, NULL),
              "requests_used", t_int(g, NULL), "cost_held",
              t_money(g, false, "held by requests in flight"), "in_flight", t_int(g, NULL),
              "warnings", t_arr(g, t_int(g, "a warn_at threshold (percent) raised this period")),
              NULL));
    o = record_schema(g, &ta_desc_quota, NULL, &ta_desc_limits,
                      "omitted limits come from the group's default_quota");
    p = t_nullable(g, t_ref(g, REF_SCHEMA, "QuotaUsage"));
    put(g, p, "readOnly", json_true());
    put(g, props_of(o), "usage", p);
    p = t_str(g, "the API key: only in the answer to create, shown once");
    put(g, p, "minLength", json_integer(TA_APIKEY_LEN));
    put(g, p, "maxLength", json_integer(TA_APIKEY_LEN));
    put(g, p, "readOnly", json_true());
    put(g, props_of(o), "api_key", p);
    put(g, s, "Quota", o);

    put(g, s, "AuditRecord",
        record_schema(g, &ta_desc_audit, audit_api_fields, NULL, "one /v1 request"));
    put(g, s, "StatisticsTotals", record_schema(g, &ta_desc_daily, stats_fields, NULL, NULL));
    o = json_object();
    all = json_array();
    push(g, all, t_ref(g, REF_SCHEMA, "StatisticsTotals"));
    p = t_obj(g, NULL, "key", "key",
              t_nullable(g, t_any(g, "the day (YYYY-MM-DD), the hour (ISO 8601 with the zone's "
                                     "offset), the model, provider or group name (null when it "
                                     "is gone), or the user id; with two levels (day,model) "
                                     "the day or hour")),
              "day", t_basic(g, "string", "date", "group_by=day (or day,...): the date in tz"), "hour",
              t_str(g, "group_by=hour (or hour,...): the hour's start in tz, "
                       "2026-12-03T08:00:00+08:00"),
              "model_id", t_int(g, "group_by=model (or ...,model)"), "user_id",
              t_int(g, "group_by=user (or ...,user)"),
              "provider_id", t_int(g, "group_by=provider (or ...,provider; 0: none, or not known)"),
              "group_id",
              t_int(g, "group_by=group (or ...,group): the quota's group when the request was billed"),
              "name",
              t_nullable(g, t_str(g, "group_by=model|provider|group|user, or the second of two "
                                     "levels: its name, null when it is gone")),
              NULL);
    push(g, all, p);
    put(g, o, "allOf", all);
    put(g, s, "StatisticsEntry", o);
    put(g, s, "Statistics",
        t_obj(g, "from the hourly aggregates (UTC hours; days and hours placed in tz)",
              "totals,series", "totals",
              t_ref(g, REF_SCHEMA, "StatisticsTotals"), "series",
              t_arr(g, t_ref(g, REF_SCHEMA, "StatisticsEntry")), "top",
              t_obj(g, "present when the series is ranked (limit, or group_by=user)", "limit,of",
                    "limit", t_int(g, "the most entries (second-level keys) kept"), "of",
                    t_int(g, "how many keys the range had"), NULL),
              NULL));

    put(g, s, "AuditExportRecord",
        record_schema(g, &ta_desc_audit, NULL, NULL,
                      "one line of an export: every field of the record, as `tokenaudit audit "
                      "export` writes it (CSV: the same columns, with a header row)"));
    o = record_schema(g, &ta_desc_warning, NULL, NULL,
                      "a warn_at threshold a quota reached in a period, raised once by billing; "
                      "webhook_state is the delivery of its webhook POST");
    p = t_str(g, "quota id-period start (unix s)-threshold: the id its webhook POST carries");
    put(g, p, "readOnly", json_true());
    put(g, props_of(o), "id", p);
    put(g, s, "Warning", o);
    o = t_obj(g, "the /v1 answers, by class, since the gateway started", NULL, "2xx",
              t_int(g, NULL), "3xx", t_int(g, NULL), "4xx", t_int(g, NULL), "5xx", t_int(g, NULL),
              "other", t_int(g, NULL), NULL);
    put(g, s, "Status",
        t_obj(g, "live figures summed over every worker (what /metrics prints), for dashboards",
              "version,started_at,uptime_s,config_generation,workers,worker_restarts,requests,"
              "upstream_errors,ring,billing",
              "version", t_str(g, NULL), "started_at", t_nullable(g, t_time(g, "the gateway's start")),
              "uptime_s", t_nullable(g, t_int(g, NULL)), "config_generation",
              t_int(g, "1 at start, +1 per reload"), "workers", t_int(g, "live worker processes"),
              "worker_restarts", t_int(g, NULL), "requests",
              t_obj(g, NULL, "total,per_s,window_s,in_flight,by_class", "total",
                    t_int(g, "/v1 answers since the gateway started"), "per_s",
                    t_nullable(g, t_basic(g, "number", NULL,
                                          "answers per second over window_s (null in a "
                                          "worker's first second)")),
                    "window_s", t_int(g, "the last minute, less after a worker started"),
                    "in_flight", t_int(g, "/v1 requests holding budget, not yet answered"),
                    "by_class", o, NULL),
              "upstream_errors",
              t_obj(g, "failed upstream calls since the gateway started, by kind", NULL,
                    "connect", t_int(g, NULL), "timeout", t_int(g, NULL), "status",
                    t_int(g, "the provider answered 5xx or 429"), "no_response", t_int(g, NULL),
                    "cut", t_int(g, NULL), "other", t_int(g, NULL), NULL),
              "ring",
              t_obj(g, NULL, "depth,pending", "depth",
                    t_int(g, "events in the ring billing has not applied"), "pending",
                    t_int(g, "events waiting in workers for room in the ring"), NULL),
              "billing",
              t_obj(g, NULL, "alive,pid,events,events_per_s,lag_events,lag_s", "alive",
                    t_bool(g, NULL), "pid", t_int(g, "0: none"), "events",
                    t_int(g, "events applied since the gateway started"), "events_per_s",
                    t_nullable(g, t_basic(g, "number", NULL, "over the same window")),
                    "lag_events", t_int(g, "events not yet in the books (ring depth + pending)"),
                    "lag_s",
                    t_nullable(g, t_basic(g, "number", NULL,
                                          "lag_events at billing's pace over the window; null "
                                          "when events wait and billing applied none")),
                    NULL),
              NULL));

    /* ---- pages ---- */
    put(g, s, "UserPage", page_schema(g, "User"));
    put(g, s, "ProviderPage", page_schema(g, "Provider"));
    put(g, s, "ModelPage", page_schema(g, "Model"));
    put(g, s, "GroupPage", page_schema(g, "Group"));
    put(g, s, "QuotaPage", page_schema(g, "Quota"));
    put(g, s, "AuditRecordPage", page_schema(g, "AuditRecord"));
    put(g, s, "WarningPage", page_schema(g, "Warning"));

    /* ---- auth and actions ---- */
    put(g, s, "LoginRequest",
        t_obj(g, NULL, "email,password", "email", t_basic(g, "string", "email", NULL), "password",
              t_write_only(g, t_str(g, NULL)), NULL));
    put(g, s, "LoginResponse",
        t_obj(g, NULL, "access_token,token_type,expires_in,user", "access_token",
              t_str(g, "HS256 JWT"), "token_type",
              t_enum(g, NULL, "Bearer", NULL),
              "expires_in", t_int(g, "seconds"), "user", t_ref(g, REF_SCHEMA, "User"), NULL));
    snprintf(buf, sizeof(buf), "%d to %d bytes", TA_PASSWORD_MIN, TA_PASSWORD_MAX);
    p = t_str(g, buf);
    put(g, p, "minLength", json_integer(TA_PASSWORD_MIN));
    put(g, p, "maxLength", json_integer(TA_PASSWORD_MAX));
    put(g, p, "writeOnly", json_true());
    put(g, s, "PasswordChange",
        t_obj(g, NULL, "old_password,new_password", "old_password",
              t_write_only(g, t_str(g, NULL)),
              "new_password", p, NULL));
    put(g, s, "KeysReset",
        t_obj(g, "new keys, shown once; the old ones stop working at once", "quotas", "quotas",
              t_arr(g, t_obj(g, NULL, "id,api_key,key_prefix", "id", t_int(g, "quota id"),
                             "api_key", t_str(g, NULL), "key_prefix", t_str(g, NULL), NULL)),
              NULL));
    put(g, s, "ApiKeyReset",
        t_obj(g, "the new key, shown once; the old one stops working at once", "api_key",
              "api_key", t_str(g, NULL), "key_prefix", t_str(g, NULL), NULL));
    put(g, s, "ProviderTest",
        t_obj(g, NULL, "ok", "ok", t_bool(g, NULL), "status",
              t_nullable(g, t_basic(g, "integer", "int32", "upstream HTTP status")), "latency_ms",
              t_int(g, NULL), "models_count", t_nullable(g, t_int(g, NULL)), "error",
              t_nullable(g, t_str(g, NULL)), NULL));
    put(g, s, "SyncModels",
        t_obj(g, "names the provider lists: created as new models (no prices), already "
                 "there, or skipped; the models routed to it whose limits or marks changed "
                 "(updated), and those whose upstream name it no longer lists (missing). "
                 "Prices are never written",
              "created,updated,existing,missing", "created", t_arr(g, t_str(g, "model name")), "updated",
              t_arr(g, t_str(g, "model name")), "existing", t_arr(g, t_str(g, "model name")), "missing",
              t_arr(g, t_str(g, "model name")), "skipped",
              t_arr(g, t_obj(g, NULL, "name,reason", "name", t_str(g, NULL), "reason",
                             t_str(g, NULL), NULL)),
              NULL));

    /* ---- /v1 (the OpenAI shapes, passed through; only what the gateway reads) ---- */
    o = t_obj(g, "passed to the upstream; other OpenAI fields are allowed", "model", "model",
              t_str(g, "a model name of the key's group"), "stream", t_bool(g, NULL),
              "stream_options",
              t_obj(g, NULL, NULL, "include_usage", t_bool(g, NULL), NULL), "max_tokens",
              t_int(g, NULL), NULL);
    put(g, o, "additionalProperties", json_true());
    put(g, s, "V1Request", o);
    o = t_obj(g, "the upstream's answer (OpenAI shape)", NULL, "usage",
              t_obj(g, NULL, NULL, "prompt_tokens", t_int(g, NULL), "completion_tokens",
                    t_int(g, NULL), "total_tokens", t_int(g, NULL), NULL),
              NULL);
    put(g, o, "additionalProperties", json_true());
    put(g, s, "V1Response", o);
    put(g, s, "V1Model",
        t_obj(g, NULL, "id,object,created,owned_by", "id", t_str(g, "the model name"), "object",
              t_str(g, "model"), "created", t_int(g, "unix seconds"), "owned_by", t_str(g, NULL),
              NULL));
    put(g, s, "V1ModelList",
        t_obj(g, "the active models of the key's group", "object,data", "object",
              t_str(g, "list"), "data", t_arr(g, t_ref(g, REF_SCHEMA, "V1Model")), NULL));
    /* worker/proxy.c answer_usage; the limits share the quota's field schemas */
    o = t_obj(g, "the key's quota and its usage in the current period", NULL, "object",
              t_str(g, "usage"), "quota_id", t_int(g, NULL), "key_prefix", t_str(g, NULL), NULL);
    p = props_of(o);
    put(g, p, "period", field_schema(g, ta_rec_field(&ta_desc_quota, "period"), false));
    put(g, p, "period_start", t_nullable(g, t_time(g, NULL)));
    put(g, p, "period_end", t_nullable(g, t_time(g, NULL)));
    put(g, p, "cost_used", t_money(g, false, NULL));
    put(g, p, "cost_held", t_money(g, false, NULL));
    put(g, p, "tokens_used", t_int(g, NULL));
    put(g, p, "requests_used", t_int(g, NULL));
    put(g, p, "in_flight", t_int(g, NULL));
    put(g, p, "tokens_held", t_int(g, NULL));
    static const char *const v1_limits[] = {"cost_limit", "token_limit", "request_limit", "rpm",
                                            "tpm", "expires_at"};
    for (size_t i = 0; i < TA_ARRAY_SIZE(v1_limits); i++)
        put(g, p, v1_limits[i], field_schema(g, ta_rec_field(&ta_desc_quota, v1_limits[i]), false));
    put(g, s, "V1Usage", o);
    o = t_basic(g, "object", NULL, "the OpenAPI 3.0 document of this API (this one)");
    put(g, o, "additionalProperties", json_true());
    put(g, s, "OpenApiDocument", o);
    put(g, s, "Health",
        t_obj(g, NULL, "status", "status", t_str(g, "ok, or unavailable (503)"), "reason",
              t_str(g, "why not ok"), "generation", t_int(g, NULL), "pid", t_int(g, NULL),
              "slot", t_int(g, NULL), NULL));
    return s;
}

/* ---- parameters, responses, headers, security ------------------------------ */

static json_t *param(gen_t *g, const char *name, const char *in, json_t *schema, const char *desc)
{
    json_t *o = json_object();

    put_str(g, o, "name", name);
    put_str(g, o, "in", in);
    if (desc != NULL)
        put_str(g, o, "description", desc);
    if (strcmp(in, "path") == 0)
        put(g, o, "required", json_true());
    put(g, o, "schema", schema);
    return o;
}

static json_t *t_pos(gen_t *g, int64_t max)
{
    json_t *o = t_int(g, NULL);

    put(g, o, "minimum", json_integer(1));
    if (max > 0)
        put(g, o, "maximum", json_integer(max));
    return o;
}

static json_t *parameters(gen_t *g)
{
    json_t *p = json_object(), *ps;
    const char *when = "RFC 3339 time or a date (midnight UTC)";

    put(g, p, "id", param(g, "id", "path", t_pos(g, 0), NULL));
    ps = t_str(g, NULL);
    put_str(g, ps, "pattern", "^[0-9a-f]{32}$");
    put(g, p, "request_id",
        param(g, "request_id", "path", ps, "a request's id (X-Request-Id, an audit record's id)"));
    put(g, p, "page", param(g, "page", "query", t_pos(g, 0), NULL));
    ps = t_pos(g, TA_ADMIN_PAGE_SIZE_MAX);
    put(g, ps, "default", json_integer(TA_ADMIN_PAGE_SIZE_DEFAULT));
    put(g, p, "page_size", param(g, "page_size", "query", ps, NULL));
    put(g, p, "after",
        param(g, "after", "query", t_pos(g, 0), "keyset: the records after this id (next links)"));
    put(g, p, "before",
        param(g, "before", "query", t_pos(g, 0),
              "keyset: the records before this id (previous links)"));
    put(g, p, "cursor",
        param(g, "before", "query", t_str(g, NULL),
              "keyset: the records older than this cursor (from a next link)"));
    put(g, p, "search", param(g, "search", "query", t_str(g, NULL), "case-insensitive substring"));
    put(g, p, "role",
        param(g, "role", "query", field_schema(g, ta_rec_field(&ta_desc_user, "role"), false),
              NULL));
    put(g, p, "is_active", param(g, "is_active", "query", t_bool(g, NULL), NULL));
    put(g, p, "provider_id",
        param(g, "provider_id", "query", t_pos(g, 0), "models routed to this provider"));
    put(g, p, "user_id", param(g, "user_id", "query", t_pos(g, 0), NULL));
    put(g, p, "group_id", param(g, "group_id", "query", t_pos(g, 0), NULL));
    put(g, p, "quota_id", param(g, "quota_id", "query", t_pos(g, 0), NULL));
    put(g, p, "model",
        param(g, "model", "query", t_str(g, NULL), "the requested or the served model name"));
    put(g, p, "status",
        param(g, "status", "query", t_basic(g, "integer", "int32", NULL),
              "HTTP status the client got"));
    put(g, p, "since", param(g, "since", "query", t_str(g, when), "inclusive"));
    put(g, p, "until", param(g, "until", "query", t_str(g, when), "exclusive"));
    put(g, p, "group_by",
        param(g, "group_by", "query",
              t_enum(g, NULL, "day", "hour", "model", "provider", "group", "user", "day,model",
                     "day,provider", "day,group", "day,user", "hour,model", "hour,provider",
                     "hour,group", "hour,user", NULL),
              "default day; two levels (day,model): one entry per day or hour and model, "
              "provider, group or user"));
    put(g, p, "group_by_quota",
        param(g, "group_by", "query",
              t_enum(g, NULL, "day", "hour", "model", "provider", "group", "day,model",
                     "day,provider", "day,group", "hour,model", "hour,provider", "hour,group",
                     NULL),
              "default day; two levels (day,model): one entry per day or hour and model, "
              "provider or group"));
    put(g, p, "limit",
        param(g, "limit", "query", t_pos(g, 1000),
              "the costliest N models, providers, groups or users of the range (the only or the "
              "second level), costliest first; group_by=user: 100 unless given; adds \"top\""));
    put(g, p, "tz",
        param(g, "tz", "query", t_str(g, NULL),
              "IANA time zone of the day and hour buckets (default UTC), e.g. Asia/Shanghai"));
    ps = t_enum(g, NULL, "csv", "jsonl", NULL);
    put_str(g, ps, "default", "jsonl");
    put(g, p, "format", param(g, "format", "query", ps, NULL));
    put(g, p, "webhook_state",
        param(g, "webhook_state", "query",
              field_schema(g, ta_rec_field(&ta_desc_warning, "webhook_state"), false),
              "the delivery of the warning's webhook"));
    return p;
}

static json_t *response(gen_t *g, const char *desc, json_t *schema)
{
    json_t *o = json_object(), *c, *m;

    put_str(g, o, "description", desc);
    if (schema != NULL) {
        c = json_object();
        m = json_object();
        put(g, m, "schema", schema);
        put(g, c, "application/json", m);
        put(g, o, "content", c);
    }
    return o;
}

static json_t *error_response(gen_t *g, const char *desc)
{
    return response(g, desc, t_ref(g, REF_SCHEMA, "Error"));
}

/* The error answers, by status: component name and description. */
static const struct {
    const char *status, *name, *desc;
} errors[] = {
    {"400", "BadRequest", "validation error (with fields) or malformed JSON"},
    {"401", "Unauthorized", "no or bad credentials"},
    {"403", "Forbidden", "not allowed"},
    {"404", "NotFound", "not found"},
    {"409", "Conflict", "conflict: duplicate name or e-mail, or still in use"},
    {"413", "TooLarge", "body too large"},
    {"429", "TooManyRequests",
     "limits: insufficient_quota or rate_limit_exceeded; login_throttled on login"},
    {"502", "BadGateway", "upstream failure (type upstream_error)"},
    {"503", "Unavailable", "upstream unavailable (type upstream_error)"},
    {"504", "GatewayTimeout", "upstream timeout (type upstream_error)"},
};

static const char *const ratelimit_headers[] = {
    "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",   "x-ratelimit-remaining-tokens",   "x-ratelimit-reset-tokens",
};

static json_t *responses(gen_t *g)
{
    json_t *r = json_object();

    for (size_t i = 0; i < TA_ARRAY_SIZE(errors); i++)
        put(g, r, errors[i].name, error_response(g, errors[i].desc));
    return r;
}

static json_t *headers(gen_t *g)
{
    json_t *h = json_object(), *o;

    for (size_t i = 0; i < TA_ARRAY_SIZE(ratelimit_headers); i++) {
        o = json_object();
        put(g, o, "schema", t_str(g, NULL));
        put(g, h, ratelimit_headers[i], o);
    }
    o = json_object();
    put_str(g, o, "description", "seconds");
    put(g, o, "schema", t_int(g, NULL));
    put(g, h, "Retry-After", o);
    return h;
}

static json_t *security_schemes(gen_t *g)
{
    json_t *s = json_object(), *o;

    o = json_object();
    put_str(g, o, "type", "http");
    put_str(g, o, "scheme", "bearer");
    put_str(g, o, "bearerFormat", "JWT");
    put_str(g, o, "description",
            "from POST /api/auth/login/ (HS256); /api/admin/* needs a superadmin's");
    put(g, s, "jwt", o);
    o = json_object();
    put_str(g, o, "type", "http");
    put_str(g, o, "scheme", "bearer");
    put_str(g, o, "bearerFormat", "sk-...");
    put_str(g, o, "description",
            "an API key (one per quota) for /v1, also accepted on /api/auth/me/ and /api/quotas/");
    put(g, s, "apiKey", o);
    return s;
}

/* [{"jwt": []}, ...] for the names given (NULL-terminated); none: []. */
static json_t *security(gen_t *g, ...)
{
    json_t *a = json_array(), *o;
    const char *n;
    va_list ap;

    va_start(ap, g);
    while ((n = va_arg(ap, const char *)) != NULL) {
        o = json_object();
        put(g, o, n, json_array());
        push(g, a, o);
    }
    va_end(ap);
    return a;
}

/* ---- /api paths from the route table ----------------------------------------
 * Each operation is its row of the table (ta_admin_route_t), nothing else:
 * check_route() refuses a row whose columns are missing, name a schema,
 * parameter or error status the components lack, or leave out a status the
 * router itself answers (401 for a route that authenticates, 403 for an
 * admin route, 404 for an {id}, 400 and 413 for a body, 400 for query
 * parameters). */

static void broken(gen_t *g, const ta_admin_route_t *r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void broken(gen_t *g, const ta_admin_route_t *r, const char *fmt, ...)
{
    char msg[200];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (!g->broken)
        snprintf(g->why, sizeof(g->why), "route %s %s: %s", r->method != NULL ? r->method : "?",
                 r->pattern != NULL ? r->pattern : "?", msg);
    ta_log(TA_LOG_ERROR, "openapi: route %s %s: %s", r->method != NULL ? r->method : "?",
           r->pattern != NULL ? r->pattern : "?", msg);
    g->broken = true;
}

static bool is_error_status(const char *st)
{
    for (size_t i = 0; i < TA_ARRAY_SIZE(errors); i++)
        if (strcmp(errors[i].status, st) == 0)
            return true;
    return false;
}

/* Is st in the comma-separated list? */
static bool in_list(const char *list, const char *st)
{
    char item[32];

    for (const char *p = list; (p = list_next(p, item, sizeof(item))) != NULL;)
        if (strcmp(item, st) == 0)
            return true;
    return false;
}

static bool nonempty(const char *s)
{
    return s != NULL && s[0] != '\0';
}

/* Row i against the table and the components (comp: "schemas", "parameters"). */
static void check_route(gen_t *g, size_t i, const ta_admin_route_t *r, const json_t *comp)
{
    static const char *const methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};
    const json_t *schemas = json_object_get(comp, "schemas"), *params = json_object_get(comp, "parameters");
    const ta_admin_route_t *o;
    char item[64], prev[64] = "";
    bool known = false;

    for (size_t m = 0; m < TA_ARRAY_SIZE(methods); m++)
        known = known || (r->method != NULL && strcmp(r->method, methods[m]) == 0);
    if (!known)
        return broken(g, r, "method must be one of GET, POST, PUT, PATCH, DELETE");
    if (r->pattern == NULL || strncmp(r->pattern, "/api/", 5) != 0)
        return broken(g, r, "the pattern must start with /api/");
    if (r->fn == NULL)
        return broken(g, r, "no handler");
    if (!nonempty(r->op_id) || !nonempty(r->tag) || !nonempty(r->summary))
        return broken(g, r, "op_id, tag and summary are required");
    if (r->params == NULL || r->errors == NULL)
        return broken(g, r, "params and errors are required (\"\" for none)");
    if (r->status != 200 && r->status != 201 && r->status != 204)
        return broken(g, r, "status %d: the success status is 200, 201 or 204", r->status);
    if ((r->resp == NULL) != (r->status == 204))
        return broken(g, r, "resp: a schema for 200/201, NULL for 204");
    if ((r->req != NULL) != ((r->flags & TA_ROUTE_BODY) != 0))
        return broken(g, r, "req: a schema exactly when the row has TA_ROUTE_BODY");
    if (r->req != NULL && json_object_get(schemas, r->req) == NULL)
        return broken(g, r, "req names no schema %s", r->req);
    if (r->resp != NULL && json_object_get(schemas, r->resp) == NULL)
        return broken(g, r, "resp names no schema %s", r->resp);
    for (const char *p = r->params; (p = list_next(p, item, sizeof(item))) != NULL;)
        if (json_object_get(params, item) == NULL)
            return broken(g, r, "params names no parameter %s", item);
    for (const char *p = r->errors; (p = list_next(p, item, sizeof(item))) != NULL;) {
        if (!is_error_status(item))
            return broken(g, r, "errors: %s is not an error status of the reference", item);
        if (prev[0] != '\0' && strcmp(prev, item) >= 0)
            return broken(g, r, "errors: ascending, each once (%s after %s)", item, prev);
        snprintf(prev, sizeof(prev), "%s", item);
    }
    if (r->auth != AUTH_NONE && !in_list(r->errors, "401"))
        return broken(g, r, "errors: 401 missing (the route authenticates)");
    if (r->auth == AUTH_ADMIN && !in_list(r->errors, "403"))
        return broken(g, r, "errors: 403 missing (an admin route)");
    if ((strstr(r->pattern, "{id}") != NULL || strstr(r->pattern, "{request_id}") != NULL) &&
        !in_list(r->errors, "404"))
        return broken(g, r, "errors: 404 missing (the pattern has {id} or {request_id})");
    if ((r->flags & TA_ROUTE_STREAM) && (strcmp(r->method, "GET") != 0 || r->status != 200))
        return broken(g, r, "a streamed answer is a GET's 200");
    if ((r->flags & TA_ROUTE_BODY) && (!in_list(r->errors, "400") || !in_list(r->errors, "413")))
        return broken(g, r, "errors: 400 and 413 missing (the route takes a body)");
    if (r->params[0] != '\0' && !in_list(r->errors, "400"))
        return broken(g, r, "errors: 400 missing (the route takes query parameters)");
    for (size_t j = 0; j < i && (o = ta_admin_route(j)) != NULL; j++) {
        if (o->op_id != NULL && strcmp(o->op_id, r->op_id) == 0)
            return broken(g, r, "op_id %s is taken by %s %s", r->op_id, o->method, o->pattern);
        if (strcmp(o->method, r->method) == 0 && o->pattern != NULL &&
            strcmp(o->pattern, r->pattern) == 0)
            return broken(g, r, "a second row for the same method and pattern");
    }
}

static void add_error_refs(gen_t *g, json_t *resp, const char *list)
{
    char st[8];

    for (const char *p = list; (p = list_next(p, st, sizeof(st))) != NULL;) {
        for (size_t i = 0; i < TA_ARRAY_SIZE(errors); i++)
            if (strcmp(errors[i].status, st) == 0)
                put(g, resp, st, t_ref(g, REF_RESP, errors[i].name));
    }
}

static json_t *json_body(gen_t *g, json_t *schema, const char *desc)
{
    json_t *o = json_object(), *c = json_object(), *m = json_object();

    if (desc != NULL)
        put_str(g, o, "description", desc);
    put(g, o, "required", json_true());
    put(g, m, "schema", schema);
    put(g, c, "application/json", m);
    put(g, o, "content", c);
    return o;
}

static json_t *security_of(gen_t *g, int auth)
{
    switch (auth) {
    case AUTH_NONE: return security(g, NULL);
    case AUTH_USER: return security(g, "jwt", "apiKey", NULL);
    default: return security(g, "jwt", NULL);
    }
}

/* One operation: its row of the route table. */
static json_t *api_operation(gen_t *g, const ta_admin_route_t *r)
{
    json_t *op = json_object(), *tags = json_array(), *rs = json_object();
    char stbuf[8], name[32];

    push(g, tags, json_string(r->tag));
    put(g, op, "tags", tags);
    put_str(g, op, "summary", r->summary);
    put_str(g, op, "operationId", r->op_id);
    put(g, op, "security", security_of(g, r->auth));
    if (r->params[0] != '\0') {
        json_t *pa = json_array();
        for (const char *p = r->params; (p = list_next(p, name, sizeof(name))) != NULL;)
            push(g, pa, t_ref(g, REF_PARAM, name));
        put(g, op, "parameters", pa);
    }
    if (r->req != NULL) {
        const char *how = NULL;
        if (strcmp(r->method, "PATCH") == 0)
            how = "only the fields present change";
        else if (strcmp(r->method, "PUT") == 0)
            how = "every writable field; required ones must be present";
        put(g, op, "requestBody", json_body(g, t_ref(g, REF_SCHEMA, r->req), how));
    }
    snprintf(stbuf, sizeof(stbuf), "%d", r->status);
    if (r->resp == NULL) {
        put(g, rs, stbuf, response(g, "done", NULL));
    } else if (r->flags & TA_ROUTE_STREAM) {
        /* a file, streamed: JSON lines of resp, or CSV with the same columns */
        json_t *ok = response(g, "ok, streamed; a failure part way ends the body cut", NULL),
               *c = json_object(), *m = json_object(), *csv = json_object();
        put(g, m, "schema", t_ref(g, REF_SCHEMA, r->resp));
        put(g, c, "application/x-ndjson", m);
        put(g, csv, "schema", t_str(g, "a header row, then one row per record"));
        put(g, c, "text/csv", csv);
        put(g, ok, "content", c);
        put(g, rs, stbuf, ok);
    } else
        put(g, rs, stbuf,
            response(g, r->status == 201 ? "created" : "ok", t_ref(g, REF_SCHEMA, r->resp)));
    add_error_refs(g, rs, r->errors);
    put(g, op, "responses", rs);
    return op;
}

/* Add method's operation under paths[pattern] (created on first use, with
 * the {id} path parameter). */
static void add_operation(gen_t *g, json_t *paths, const char *pattern, const char *method,
                          json_t *op)
{
    json_t *item = json_object_get(paths, pattern);
    char lm[16];

    if (item == NULL) {
        item = json_object();
        if (strstr(pattern, "{id}") != NULL || strstr(pattern, "{request_id}") != NULL) {
            json_t *pa = json_array();
            push(g, pa, t_ref(g, REF_PARAM, strstr(pattern, "{id}") != NULL ? "id" : "request_id"));
            put(g, item, "parameters", pa);
        }
        put(g, paths, pattern, item);
        if (g->oom) {
            json_decref(op);
            return;
        }
    }
    ta_admin_lower_copy(lm, sizeof(lm), method);
    put(g, item, lm, op);
}

/* ---- /v1, /healthz, /metrics: the static list ------------------------------- */

static json_t *v1_operation(gen_t *g, const char *op_id, const char *summary, const char *req,
                            const char *resp, bool sse, bool model_404)
{
    json_t *op = json_object(), *tags = json_array(), *rs = json_object(), *ok, *c, *m, *h;

    push(g, tags, json_string("v1"));
    put(g, op, "tags", tags);
    put_str(g, op, "summary", summary);
    put_str(g, op, "operationId", op_id);
    put(g, op, "security", security(g, "apiKey", NULL));
    if (req != NULL)
        put(g, op, "requestBody", json_body(g, t_ref(g, REF_SCHEMA, req), NULL));
    ok = response(g, "ok", t_ref(g, REF_SCHEMA, resp));
    if (sse) {
        c = json_object_get(ok, "content");
        m = json_object();
        put(g, m, "schema",
            t_str(g, "\"stream\": true: server-sent events, ending with data: [DONE]"));
        put(g, c, "text/event-stream", m);
        h = json_object();
        for (size_t i = 0; i < TA_ARRAY_SIZE(ratelimit_headers); i++)
            put(g, h, ratelimit_headers[i], t_ref(g, REF_HEADER, ratelimit_headers[i]));
        put(g, ok, "headers", h);
    }
    put(g, rs, "200", ok);
    if (req != NULL)
        add_error_refs(g, rs, "400");
    add_error_refs(g, rs, "401");
    if (req != NULL)
        add_error_refs(g, rs, "403");
    if (model_404)
        add_error_refs(g, rs, "404");
    if (req != NULL) {
        json_t *tm = error_response(g, "limits: insufficient_quota or rate_limit_exceeded");
        h = json_object();
        put(g, h, "Retry-After", t_ref(g, REF_HEADER, "Retry-After"));
        put(g, tm, "headers", h);
        put(g, rs, "429", tm);
        add_error_refs(g, rs, "502,503,504");
    }
    put(g, op, "responses", rs);
    return op;
}

static json_t *ops_operation(gen_t *g, const char *op_id, const char *summary, json_t *ok,
                             bool unavailable)
{
    json_t *op = json_object(), *tags = json_array(), *rs = json_object();

    push(g, tags, json_string("operations"));
    put(g, op, "tags", tags);
    put_str(g, op, "summary", summary);
    put_str(g, op, "operationId", op_id);
    put(g, op, "security", security(g, NULL));
    put(g, rs, "200", ok);
    if (unavailable)
        put(g, rs, "503", response(g, "the ledger does not open or billing is not alive",
                                   t_ref(g, REF_SCHEMA, "Health")));
    put(g, op, "responses", rs);
    return op;
}

static void static_paths(gen_t *g, json_t *paths)
{
    json_t *item, *pa, *metrics, *c, *m;

    item = json_object();
    put(g, item, "post",
        v1_operation(g, "chatCompletions", "Chat completion, streamed or not", "V1Request",
                     "V1Response", true, true));
    put(g, paths, "/v1/chat/completions", item);
    item = json_object();
    put(g, item, "post",
        v1_operation(g, "completions", "Text completion (legacy)", "V1Request", "V1Response",
                     true, true));
    put(g, paths, "/v1/completions", item);
    item = json_object();
    put(g, item, "post",
        v1_operation(g, "embeddings", "Embeddings", "V1Request", "V1Response", false, true));
    put(g, paths, "/v1/embeddings", item);
    item = json_object();
    put(g, item, "get",
        v1_operation(g, "listV1Models", "The models of the key's group", NULL, "V1ModelList",
                     false, false));
    put(g, paths, "/v1/models", item);
    item = json_object();
    pa = json_array();
    push(g, pa, param(g, "model", "path", t_str(g, NULL), "a model name"));
    put(g, item, "parameters", pa);
    put(g, item, "get",
        v1_operation(g, "getV1Model", "One model of the key's group", NULL, "V1Model", false,
                     true));
    put(g, paths, "/v1/models/{model}", item);
    item = json_object();
    put(g, item, "get",
        v1_operation(g, "usage", "The key's quota and its usage", NULL, "V1Usage", false, false));
    put(g, paths, "/v1/usage", item);

    item = json_object();
    put(g, item, "get",
        ops_operation(g, "healthz", "Liveness: the ledger opens and billing is alive",
                      response(g, "ok", t_ref(g, REF_SCHEMA, "Health")), true));
    put(g, paths, "/healthz", item);
    metrics = response(g, "Prometheus text format", NULL);
    c = json_object();
    m = json_object();
    put(g, m, "schema", t_str(g, NULL));
    put(g, c, "text/plain", m);
    put(g, metrics, "content", c);
    item = json_object();
    put(g, item, "get",
        ops_operation(g, "metrics",
                      "Requests by status and model, latency histograms, ring depth, "
                      "upstream errors",
                      metrics, false));
    put(g, paths, "/metrics", item);
}

/* ---- the document ----------------------------------------------------------- */

static json_t *document(gen_t *g)
{
    json_t *doc = json_object(), *info = json_object(), *paths = json_object(),
           *comp = json_object();
    const ta_admin_route_t *r;

    put_str(g, doc, "openapi", "3.0.3");
    put_str(g, info, "title", "tokenaudit");
    put_str(g, info, "version", TA_VERSION);
    put_str(g, info, "description",
            "OpenAI-compatible AI API gateway with quotas and an audit trail. Generated by "
            "`tokenaudit openapi` from the route table and the schema descriptors; see "
            "docs/API.md. /api paths are served with and without the trailing slash; every "
            "answer carries X-Request-Id; money is a decimal string; times are RFC 3339 UTC.");
    put(g, doc, "info", info);

    /* the components first: each route is checked against them */
    put(g, comp, "securitySchemes", security_schemes(g));
    put(g, comp, "parameters", parameters(g));
    put(g, comp, "headers", headers(g));
    put(g, comp, "responses", responses(g));
    put(g, comp, "schemas", schemas(g));
    for (size_t i = 0; (r = ta_admin_route(i)) != NULL && !g->oom; i++) {
        check_route(g, i, r, comp);
        if (g->broken)
            break;
        add_operation(g, paths, r->pattern, r->method, api_operation(g, r));
    }
    static_paths(g, paths);
    put(g, doc, "paths", paths);
    put(g, doc, "components", comp);
    return doc;
}

/* ---- YAML ------------------------------------------------------------------
 * Block style, two spaces per level. Short sequences of scalars are written
 * in flow style ([a, b]). A string is written plain when it cannot be read
 * as anything else (starts with a letter or '/', only safe characters, not a
 * YAML 1.1 boolean or null word); otherwise as a JSON string, which is a
 * valid YAML double-quoted scalar. */

static bool plain_ok(const char *s, bool flow)
{
    static const char *const words[] = {"true", "false", "null", "yes", "no", "on", "off",
                                        "y", "n", NULL};
    size_t n = strlen(s);

    if (n == 0 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') || s[0] == '/'))
        return false;
    if (s[n - 1] == ' ')
        return false;
    for (const char *p = s; *p != '\0'; p++) {
        char ch = *p;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
            continue;
        if (strchr("_./-()'=+;* ", ch) != NULL)
            continue;
        if (!flow && strchr("{},", ch) != NULL)
            continue;
        return false;
    }
    for (size_t i = 0; words[i] != NULL; i++)
        if (strcasecmp(s, words[i]) == 0)
            return false;
    return true;
}

static int y_string(FILE *out, const char *s, bool flow)
{
    char *q;
    json_t *j;

    if (plain_ok(s, flow))
        return fputs(s, out) < 0 ? -EIO : 0;
    j = json_string(s);
    q = j != NULL ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    json_decref(j);
    if (q == NULL)
        return -ENOMEM;
    if (fputs(q, out) < 0) {
        free(q);
        return -EIO;
    }
    free(q);
    return 0;
}

/* A scalar, or an empty container. */
static int y_scalar(FILE *out, const json_t *v, bool flow)
{
    switch (json_typeof(v)) {
    case JSON_STRING: return y_string(out, json_string_value(v), flow);
    case JSON_INTEGER: fprintf(out, "%" JSON_INTEGER_FORMAT, json_integer_value(v)); return 0;
    case JSON_TRUE: fputs("true", out); return 0;
    case JSON_FALSE: fputs("false", out); return 0;
    case JSON_NULL: fputs("null", out); return 0;
    case JSON_OBJECT: fputs("{}", out); return 0;
    case JSON_ARRAY: fputs("[]", out); return 0;
    case JSON_REAL: break;
    }
    return -EINVAL; /* the document has no reals */
}

static bool is_leaf(const json_t *v)
{
    return !(json_is_object(v) && json_object_size(v) > 0) &&
           !(json_is_array(v) && json_array_size(v) > 0);
}

/* Short arrays of plain-enough scalars go on one line. */
static bool flow_ok(const json_t *a)
{
    size_t i, len = 0;
    json_t *v;

    json_array_foreach (a, i, v) {
        if (!is_leaf(v) || json_is_object(v) || json_is_array(v))
            return false;
        len += json_is_string(v) ? json_string_length(v) + 4 : 8;
    }
    return len <= 72;
}

static int y_node(FILE *out, const json_t *v, int indent, bool inline_first);

static int y_map(FILE *out, const json_t *o, int indent, bool inline_first)
{
    const char *k;
    json_t *v;
    bool first = true;
    int rc;

    json_object_foreach ((json_t *)o, k, v) {
        if (!(first && inline_first))
            fprintf(out, "%*s", indent, "");
        first = false;
        if ((rc = y_string(out, k, false)) != 0)
            return rc;
        fputc(':', out);
        if ((rc = y_node(out, v, indent + 2, false)) != 0)
            return rc;
    }
    return 0;
}

static int y_seq(FILE *out, const json_t *a, int indent)
{
    size_t i;
    json_t *v;
    int rc;

    json_array_foreach (a, i, v) {
        fprintf(out, "%*s-", indent, "");
        if (json_is_object(v) && json_object_size(v) > 0) {
            fputc(' ', out);
            rc = y_map(out, v, indent + 2, true);
        } else {
            rc = y_node(out, v, indent + 2, false);
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* v after "key:" or "-": on the same line when it is a leaf. */
static int y_node(FILE *out, const json_t *v, int indent, bool inline_first)
{
    int rc;
    size_t i;
    json_t *e;

    if (is_leaf(v)) {
        fputc(' ', out);
        rc = y_scalar(out, v, false);
        fputc('\n', out);
        return rc;
    }
    if (json_is_array(v) && flow_ok(v)) {
        fputs(" [", out);
        json_array_foreach (v, i, e) {
            if (i > 0)
                fputs(", ", out);
            if ((rc = y_scalar(out, e, true)) != 0)
                return rc;
        }
        fputs("]\n", out);
        return 0;
    }
    fputc('\n', out);
    return json_is_object(v) ? y_map(out, v, indent, inline_first) : y_seq(out, v, indent);
}

/* The document, or NULL (why says why when the table is at fault). */
static json_t *build(char *why, size_t cap)
{
    gen_t g;
    json_t *doc;

    memset(&g, 0, sizeof(g));
    doc = document(&g);
    if (doc == NULL || g.oom || g.broken) {
        snprintf(why, cap, "%s", g.broken ? g.why : "out of memory");
        json_decref(doc);
        return NULL;
    }
    return doc;
}

int ta_openapi_check(char *why, size_t cap)
{
    json_t *doc = build(why, cap);

    if (doc == NULL)
        return strcmp(why, "out of memory") == 0 ? -ENOMEM : -EINVAL;
    json_decref(doc);
    why[0] = '\0';
    return 0;
}

json_t *ta_openapi_json(void)
{
    char why[256];

    return build(why, sizeof(why));
}

void ta_admin_openapi(actx_t *c)
{
    json_t *doc = ta_openapi_json();

    if (doc == NULL) {
        ta_admin_reply_error(c, 500, "server_error", "internal_error", NULL,
                             "internal error: the document could not be built");
        return;
    }
    ta_admin_reply_json(c, 200, doc);
}

int ta_openapi_write(FILE *out, bool json)
{
    char why[256];
    json_t *doc = build(why, sizeof(why));
    int rc = 0;

    if (doc == NULL) {
        ta_log(TA_LOG_ERROR, "openapi: %s", why);
        return strcmp(why, "out of memory") == 0 ? -ENOMEM : -EINVAL;
    }
    if (json) {
        if (json_dumpf(doc, out, JSON_INDENT(2)) != 0)
            rc = -EIO;
        else
            fputc('\n', out);
    } else {
        fputs("# Generated by `tokenaudit openapi` (admin/openapi.c) from the code; do not edit.\n"
              "# Regenerate: build/tokenaudit openapi > docs/openapi.yaml\n",
              out);
        rc = y_map(out, doc, 0, false);
    }
    if (rc == 0 && (fflush(out) != 0 || ferror(out)))
        rc = -EIO;
    json_decref(doc);
    return rc;
}

static const char *auth_name(int auth)
{
    switch (auth) {
    case AUTH_NONE: return "none";
    case AUTH_JWT: return "jwt";
    case AUTH_USER: return "user";
    case AUTH_ADMIN: return "admin";
    default: return "?";
    }
}

static json_t *list_json(const char *list)
{
    json_t *a = json_array();
    char item[64];

    for (const char *p = list; a != NULL && (p = list_next(p, item, sizeof(item))) != NULL;)
        if (json_array_append_new(a, json_string(item)) != 0) {
            json_decref(a);
            a = NULL;
        }
    return a;
}

/* `--routes`: the route table as a JSON array, one object per row. */
static int write_routes(FILE *out)
{
    const ta_admin_route_t *r;
    json_t *a = json_array();
    int rc = 0;

    for (size_t i = 0; a != NULL && (r = ta_admin_route(i)) != NULL; i++) {
        json_t *o = json_pack(
            "{s:s,s:s,s:s,s:b,s:b,s:b,s:s?,s:s?,s:s?,s:s?,s:i,s:s?,s:o,s:o}", "method", r->method,
            "pattern", r->pattern, "auth", auth_name(r->auth), "body",
            (r->flags & TA_ROUTE_BODY) != 0, "write", (r->flags & TA_ROUTE_WRITE) != 0,
            "stream", (r->flags & TA_ROUTE_STREAM) != 0,
            "operation_id", r->op_id, "tag", r->tag, "summary", r->summary, "request", r->req,
            "status", r->status, "response", r->resp, "params",
            list_json(r->params != NULL ? r->params : ""), "errors",
            list_json(r->errors != NULL ? r->errors : ""));
        if (o == NULL || json_array_append_new(a, o) != 0) {
            json_decref(a);
            a = NULL;
        }
    }
    if (a == NULL)
        return -ENOMEM;
    if (json_dumpf(a, out, JSON_INDENT(2)) != 0 || fputc('\n', out) == EOF || fflush(out) != 0)
        rc = -EIO;
    json_decref(a);
    return rc;
}

int ta_openapi_cli(int argc, char **argv)
{
    bool json = false, routes = false;
    int rc;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--routes") == 0) {
            routes = true;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            puts("usage: tokenaudit openapi [--json | --routes]\n"
                 "  print the OpenAPI 3.0 document of the HTTP API (YAML; JSON with --json),\n"
                 "  or the /api route table it is built from as JSON (--routes)");
            return 0;
        } else {
            fprintf(stderr, "tokenaudit: openapi: unknown argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (json && routes) {
        fprintf(stderr, "tokenaudit: openapi: --json and --routes exclude each other\n");
        return 2;
    }
    rc = routes ? write_routes(stdout) : ta_openapi_write(stdout, json);
    if (rc != 0) {
        fprintf(stderr, "tokenaudit: openapi: %s\n", ta_strerror(rc));
        return 1;
    }
    return 0;
}
