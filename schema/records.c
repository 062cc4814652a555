/*
 * records.c - the descriptor table of every stored record.
 *
 * Tags are the binary identity of a field: once released a tag never
 * changes meaning and a removed field's tag is never reused. Append new
 * fields with the next free tag.
 *
 * Names are the JSON names of API.md and the dump tool.
 */
#include <stddef.h>

#include "schema.h"

#define MSIZE(st, m) sizeof(((st *)0)->m)

/* Row builders. `st` is the struct, `m` the member path (may be nested:
 * limits.period). */
#define F_SCALAR(nm, tg, ty, fl, st, m, lo, hi, df)                                                \
    {.name = nm, .tag = tg, .type = ty, .flags = fl, .offset = offsetof(st, m),                    \
     .size = MSIZE(st, m), .min = lo, .max = hi, .def = df}
#define F_ID(nm, tg, fl, st, m) F_SCALAR(nm, tg, TA_FT_ID, fl, st, m, 0, 0, 0)
#define F_BOOL(nm, tg, fl, st, m, df) F_SCALAR(nm, tg, TA_FT_BOOL, fl, st, m, 0, 0, df)
#define F_TIME(nm, tg, fl, st, m) F_SCALAR(nm, tg, TA_FT_TIME, fl, st, m, 0, 0, 0)
#define F_STR(nm, tg, fl, st, m) F_SCALAR(nm, tg, TA_FT_STR, fl, st, m, 0, 0, 0)
#define F_ENUM(nm, tg, fl, st, m, nms, df)                                                         \
    {.name = nm, .tag = tg, .type = TA_FT_ENUM, .flags = fl, .offset = offsetof(st, m),            \
     .size = MSIZE(st, m), .names = nms, .def = df}
#define F_BYTES(nm, tg, fl, st, m, lenm)                                                           \
    {.name = nm, .tag = tg, .type = TA_FT_BYTES, .flags = fl, .offset = offsetof(st, m),           \
     .size = MSIZE(st, m), .len_offset = offsetof(st, lenm)}
#define F_LIST(nm, tg, ty, fl, st, m, cntm, lo, hi, sb)                                            \
    {.name = nm, .tag = tg, .type = ty, .flags = fl, .offset = offsetof(st, m),                    \
     .size = MSIZE(st, m[0]), .len_offset = offsetof(st, cntm),                                    \
     .max_count = (uint16_t)(MSIZE(st, m) / MSIZE(st, m[0])), .min = lo, .max = hi, .sub = sb}
#define F_SUB(nm, tg, fl, st, m, sb)                                                               \
    {.name = nm, .tag = tg, .type = TA_FT_SUB, .flags = fl, .offset = offsetof(st, m),             \
     .size = MSIZE(st, m), .sub = sb}

#define DESC(nm, rt, st, tbl)                                                                      \
    {.name = nm, .rectype = rt, .version = 1, .size = sizeof(st), .fields = tbl,                   \
     .nfields = TA_ARRAY_SIZE(tbl)}

#define RO TA_FF_READONLY
#define IN TA_FF_INTERNAL
#define NANO_UNITS(u) ((int64_t)(u) * TA_NANO_PER_UNIT)

static const char *const role_names[] = {"user", "superadmin", NULL};
static const char *const provider_type_names[] = {"openai", "anthropic", NULL};
static const char *const period_names[] = {"day", "week", "month", "none", NULL};
static const char *const price_names[] = {"input_price", "output_price", "cache_read_price",
                                          "cache_write_price", NULL}; /* TA_PRICE_* order */
static const char *const cap_names[] = {"chat",      "embeddings", "vision",      "tools",
                                        "streaming", "completions", NULL};

/* ---- user --------------------------------------------------------------- */

static const ta_field_t user_fields[] = {
    F_ID("id", 1, RO, ta_user_t, id),
    F_STR("email", 2, TA_FF_EMAIL | TA_FF_LOWER | TA_FF_REQUIRED, ta_user_t, email),
    F_STR("name", 3, 0, ta_user_t, name),
    F_ENUM("role", 4, 0, ta_user_t, role, role_names, TA_ROLE_USER),
    F_BOOL("is_active", 5, 0, ta_user_t, is_active, 1),
    F_BYTES("pwhash", 6, TA_FF_SECRET, ta_user_t, pwhash, pwhash_len),
    F_TIME("created_at", 7, RO, ta_user_t, created_at),
    F_TIME("updated_at", 8, RO, ta_user_t, updated_at),
    F_SCALAR("token_gen", 9, TA_FT_I64, IN, ta_user_t, token_gen, 0, 0, 0),
};
const ta_recdesc_t ta_desc_user = DESC("user", TA_REC_USER, ta_user_t, user_fields);

/* ---- provider ----------------------------------------------------------- */

static const ta_field_t provider_fields[] = {
    F_ID("id", 1, RO, ta_provider_t, id),
    F_STR("name", 2, TA_FF_REQUIRED | TA_FF_NONEMPTY, ta_provider_t, name),
    F_ENUM("type", 3, TA_FF_REQUIRED, ta_provider_t, type, provider_type_names, TA_PROVIDER_OPENAI),
    F_STR("base_url", 4, TA_FF_URL | TA_FF_REQUIRED, ta_provider_t, base_url),
    F_BYTES("key_sealed", 5, TA_FF_SECRET, ta_provider_t, key_sealed, key_sealed_len),
    F_STR("api_key_last4", 6, IN, ta_provider_t, api_key_last4),
    F_BOOL("api_key_set", 7, IN, ta_provider_t, api_key_set, 0),
    F_SCALAR("timeout_s", 8, TA_FT_I32, 0, ta_provider_t, timeout_s, 1, 3600, 600),
    F_SCALAR("connect_timeout_ms", 9, TA_FT_I32, 0, ta_provider_t, connect_timeout_ms, 1, 60000, 5000),
    F_BOOL("is_active", 10, 0, ta_provider_t, is_active, 1),
    F_TIME("created_at", 11, RO, ta_provider_t, created_at),
    F_TIME("updated_at", 12, RO, ta_provider_t, updated_at),
};
const ta_recdesc_t ta_desc_provider = DESC("provider", TA_REC_PROVIDER, ta_provider_t, provider_fields);

/* ---- model and its routes ---------------------------------------------- */

static const ta_field_t route_fields[] = {
    F_ID("provider_id", 1, TA_FF_REQUIRED, ta_route_t, provider_id),
    F_STR("upstream_name", 2, TA_FF_REQUIRED | TA_FF_NONEMPTY, ta_route_t, upstream_name),
    F_SCALAR("priority", 3, TA_FT_I32, 0, ta_route_t, priority, 0, 1000, 0),
    F_SCALAR("weight", 4, TA_FT_I32, TA_FF_ABSENT_DEFAULT, ta_route_t, weight, 1, 1000, 1),
    F_BOOL("upstream_missing", 5, IN, ta_route_t, upstream_missing, 0),
};
const ta_recdesc_t ta_desc_route = DESC("route", TA_REC_ROUTE, ta_route_t, route_fields);

/* Prices per 1M tokens: at most 1,000,000 units, far above any real price
 * and small enough that ta_nano_price cannot saturate for sane token counts. */
#define PRICE(nm, tg, m)                                                                           \
    F_SCALAR(nm, tg, TA_FT_NANO, TA_FF_MARKS_PRESENCE, ta_model_t, m, 0, NANO_UNITS(1000000), 0)

static const ta_field_t model_fields[] = {
    F_ID("id", 1, RO, ta_model_t, id),
    F_STR("name", 2, TA_FF_REQUIRED | TA_FF_NONEMPTY, ta_model_t, name),
    F_LIST("routes", 3, TA_FT_SUB_LIST, 0, ta_model_t, routes, nroutes, 0, 0, &ta_desc_route),
    PRICE("input_price", 4, input_price),
    PRICE("output_price", 5, output_price),
    PRICE("cache_read_price", 6, cache_read_price),
    PRICE("cache_write_price", 7, cache_write_price),
    F_BOOL("has_prices", 8, IN | TA_FF_PRESENCE, ta_model_t, has_prices, 0),
    {.name = "capabilities", .tag = 9, .type = TA_FT_FLAGS, .offset = offsetof(ta_model_t, capabilities),
     .size = MSIZE(ta_model_t, capabilities), .names = cap_names,
     .def = TA_CAP_CHAT | TA_CAP_STREAMING},
    F_SCALAR("context_window", 10, TA_FT_I64, 0, ta_model_t, context_window, 0, 1000000000, 0),
    F_SCALAR("max_output_tokens", 11, TA_FT_I64, 0, ta_model_t, max_output_tokens, 0, 1000000000, 0),
    F_BOOL("is_active", 12, 0, ta_model_t, is_active, 1),
    F_TIME("created_at", 13, RO, ta_model_t, created_at),
    F_TIME("updated_at", 14, RO, ta_model_t, updated_at),
    {.name = "prices_set", .tag = 15, .type = TA_FT_FLAGS, .flags = IN | TA_FF_PRESENCE_BITS,
     .offset = offsetof(ta_model_t, prices_set), .size = MSIZE(ta_model_t, prices_set), .names = price_names},
};
const ta_recdesc_t ta_desc_model = DESC("model", TA_REC_MODEL, ta_model_t, model_fields);

/* ---- limits: a group's default_quota, and flattened into a quota -------- */

/* One list of rows for both uses, so the names, tags and bounds cannot drift
 * apart. `pre` is the member path prefix: nothing for ta_limits_t,
 * `limits.` for ta_quota_t; tags start at tb + 1. */
#define NULLABLE_I64(nm, tg, st, m, hi)                                                            \
    F_SCALAR(nm, tg, TA_FT_I64, TA_FF_NULLABLE, st, m, 0, hi, 0)
#define LIMITS_FIELDS(st, pre, tb)                                                                 \
    F_ENUM("period", tb + 1, 0, st, pre period, period_names, TA_PERIOD_MONTH),                    \
        F_SCALAR("cost_limit", tb + 2, TA_FT_NANO, TA_FF_NULLABLE, st, pre cost_limit, 0,          \
                 NANO_UNITS(1000000000), 0),                                                       \
        NULLABLE_I64("token_limit", tb + 3, st, pre token_limit, 1000000000000000LL),              \
        NULLABLE_I64("request_limit", tb + 4, st, pre request_limit, 1000000000000000LL),          \
        NULLABLE_I64("rpm", tb + 5, st, pre rpm, 1000000000LL),                                    \
        NULLABLE_I64("tpm", tb + 6, st, pre tpm, 1000000000000LL),                                 \
        NULLABLE_I64("max_concurrency", tb + 7, st, pre max_concurrency, 1000000LL),               \
        F_BOOL("auto_renew", tb + 8, 0, st, pre auto_renew, 1),                                    \
        F_LIST("warn_at", tb + 9, TA_FT_I32_LIST, TA_FF_ASCENDING, st, pre warn_at, pre nwarn, 1,  \
               100, NULL)

static const ta_field_t limits_fields[] = {LIMITS_FIELDS(ta_limits_t, , 0)};
const ta_recdesc_t ta_desc_limits = DESC("limits", TA_REC_LIMITS, ta_limits_t, limits_fields);

/* ---- group -------------------------------------------------------------- */

static const ta_field_t group_fields[] = {
    F_ID("id", 1, RO, ta_group_t, id),
    F_STR("name", 2, TA_FF_REQUIRED | TA_FF_NONEMPTY, ta_group_t, name),
    F_STR("description", 3, TA_FF_TEXT, ta_group_t, description),
    F_LIST("model_ids", 4, TA_FT_ID_LIST, 0, ta_group_t, model_ids, nmodels, 0, 0, NULL),
    F_SUB("default_quota", 5, 0, ta_group_t, default_quota, &ta_desc_limits),
    F_TIME("created_at", 6, RO, ta_group_t, created_at),
    F_TIME("updated_at", 7, RO, ta_group_t, updated_at),
};
const ta_recdesc_t ta_desc_group = DESC("group", TA_REC_GROUP, ta_group_t, group_fields);

/* ---- quota -------------------------------------------------------------- */

static const ta_field_t quota_fields[] = {
    F_ID("id", 1, RO, ta_quota_t, id),
    F_ID("user_id", 2, TA_FF_REQUIRED, ta_quota_t, user_id),
    F_ID("group_id", 3, TA_FF_REQUIRED, ta_quota_t, group_id),
    LIMITS_FIELDS(ta_quota_t, limits., 3), /* tags 4..12 */
    F_TIME("expires_at", 13, TA_FF_NULLABLE, ta_quota_t, expires_at),
    F_BOOL("is_active", 14, 0, ta_quota_t, is_active, 1),
    F_STR("key_prefix", 15, IN, ta_quota_t, key_prefix),
    F_BYTES("key_hash", 16, TA_FF_SECRET, ta_quota_t, key_hash, key_hash_len),
    F_TIME("created_at", 17, RO, ta_quota_t, created_at),
    F_TIME("updated_at", 18, RO, ta_quota_t, updated_at),
};
const ta_recdesc_t ta_desc_quota = DESC("quota", TA_REC_QUOTA, ta_quota_t, quota_fields);

/* ---- ledger-internal records: never API input, shown by the dump -------- */

static const ta_field_t keyrec_fields[] = {
    F_ID("quota_id", 1, IN, ta_keyrec_t, quota_id),
    F_ID("user_id", 2, IN, ta_keyrec_t, user_id),
    F_TIME("created_at", 3, IN, ta_keyrec_t, created_at),
};
const ta_recdesc_t ta_desc_keyrec = DESC("key", TA_REC_KEY, ta_keyrec_t, keyrec_fields);

#define I64_IN(nm, tg, st, m) F_SCALAR(nm, tg, TA_FT_I64, IN, st, m, 0, 0, 0)
#define NANO_IN(nm, tg, st, m) F_SCALAR(nm, tg, TA_FT_NANO, IN, st, m, 0, 0, 0)

/* warn_level is encoded as the struct holds it (signed 4 bytes); the codec
 * applies no bias, so either convention of the ledger round-trips. */
static const ta_field_t balance_fields[] = {
    F_ID("quota_id", 1, IN, ta_balance_t, quota_id),
    F_TIME("period_start", 2, IN, ta_balance_t, period_start),
    NANO_IN("cost_used", 3, ta_balance_t, cost_used),
    NANO_IN("cost_held", 4, ta_balance_t, cost_held),
    I64_IN("tokens_used", 5, ta_balance_t, tokens_used),
    I64_IN("tokens_held", 6, ta_balance_t, tokens_held),
    I64_IN("requests_used", 7, ta_balance_t, requests_used),
    I64_IN("in_flight", 8, ta_balance_t, in_flight),
    I64_IN("rpm_tat_ns", 9, ta_balance_t, rpm_tat_ns),
    I64_IN("tpm_tat_ns", 10, ta_balance_t, tpm_tat_ns),
    F_SCALAR("warn_level", 11, TA_FT_I32, IN, ta_balance_t, warn_level, 0, 0, 0),
    I64_IN("settled_ticket", 12, ta_balance_t, settled_ticket),
};
const ta_recdesc_t ta_desc_balance = DESC("balance", TA_REC_BALANCE, ta_balance_t, balance_fields);

static const ta_field_t hold_fields[] = {
    {.name = "request_id", .tag = 1, .type = TA_FT_HEX, .flags = IN,
     .offset = offsetof(ta_hold_t, request_id), .size = MSIZE(ta_hold_t, request_id)},
    F_ID("quota_id", 2, IN, ta_hold_t, quota_id),
    F_SCALAR("worker_pid", 3, TA_FT_I32, IN, ta_hold_t, worker_pid, 0, 0, 0),
    NANO_IN("cost", 4, ta_hold_t, cost),
    I64_IN("tokens", 5, ta_hold_t, tokens),
    F_SCALAR("created_at_ns", 6, TA_FT_TIME_NS, IN, ta_hold_t, created_at_ns, 0, 0, 0),
    F_TIME("period_start", 7, IN, ta_hold_t, period_start),
};
const ta_recdesc_t ta_desc_hold = DESC("hold", TA_REC_HOLD, ta_hold_t, hold_fields);

static const ta_field_t revoked_fields[] = {
    F_TIME("expires_at", 1, IN, ta_revoked_t, expires_at),
};
const ta_recdesc_t ta_desc_revoked = DESC("revoked", TA_REC_REVOKED, ta_revoked_t, revoked_fields);
