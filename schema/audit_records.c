/*
 * audit_records.c - descriptor tables of the audit environment's records
 * (audit_records.h). Tags are stable: append new fields with the next tag.
 */
#include <stddef.h>

#include "schema/apierror.h"
#include "schema/audit_records.h"

#define MSIZE(st, m) sizeof(((st *)0)->m)
#define F(nm, tg, ty, st, m)                                                                       \
    {.name = nm, .tag = tg, .type = ty, .flags = TA_FF_READONLY, .offset = offsetof(st, m),        \
     .size = MSIZE(st, m)}
#define FE(nm, tg, st, m, nms)                                                                     \
    {.name = nm, .tag = tg, .type = TA_FT_ENUM, .flags = TA_FF_READONLY,                           \
     .offset = offsetof(st, m), .size = MSIZE(st, m), .names = nms}
#define DESC(nm, rt, st, tbl)                                                                      \
    {.name = nm, .rectype = rt, .version = 1, .size = sizeof(st), .fields = tbl,                   \
     .nfields = sizeof(tbl) / sizeof(tbl[0])}

/* index = TA_EP_* (ledger/event.h); the error types' names: schema/apierror.h */
static const char *const endpoint_names[] = {
    "unknown", "chat.completions", "completions", "embeddings", "models", "usage", "other", "messages",
    "messages.count_tokens", "responses", NULL};

static const ta_field_t audit_fields[] = {
    F("id", 1, TA_FT_HEX, ta_audit_t, request_id),
    F("created_at", 2, TA_FT_TIME_NS, ta_audit_t, t_received_ns),
    F("first_byte_at", 3, TA_FT_TIME_NS, ta_audit_t, t_first_byte_ns),
    F("done_at", 4, TA_FT_TIME_NS, ta_audit_t, t_done_ns),
    F("user_id", 5, TA_FT_ID, ta_audit_t, user_id),
    F("quota_id", 6, TA_FT_ID, ta_audit_t, quota_id),
    F("model_id", 7, TA_FT_ID, ta_audit_t, model_id),
    F("provider_id", 8, TA_FT_ID, ta_audit_t, provider_id),
    F("key_prefix", 9, TA_FT_STR, ta_audit_t, key_prefix),
    FE("endpoint", 10, ta_audit_t, endpoint, endpoint_names),
    F("model", 11, TA_FT_STR, ta_audit_t, model),
    F("served_model", 12, TA_FT_STR, ta_audit_t, served_model),
    F("stream", 13, TA_FT_BOOL, ta_audit_t, stream),
    F("status", 14, TA_FT_I32, ta_audit_t, status),
    FE("error_type", 15, ta_audit_t, error_type, ta_errtype_names),
    F("prompt_tokens", 16, TA_FT_I64, ta_audit_t, prompt_tokens),
    F("completion_tokens", 17, TA_FT_I64, ta_audit_t, completion_tokens),
    F("cached_tokens", 18, TA_FT_I64, ta_audit_t, cached_tokens),
    F("cache_write_tokens", 19, TA_FT_I64, ta_audit_t, cache_write_tokens),
    F("usage_estimated", 20, TA_FT_BOOL, ta_audit_t, usage_estimated),
    F("client_gone", 21, TA_FT_BOOL, ta_audit_t, client_gone),
    F("aborted", 22, TA_FT_BOOL, ta_audit_t, aborted),
    F("cost", 23, TA_FT_NANO, ta_audit_t, cost),
    F("uncharged_cost", 24, TA_FT_NANO, ta_audit_t, uncharged_cost),
    F("latency_ms", 25, TA_FT_I64, ta_audit_t, latency_ms),
    F("ttft_ms", 26, TA_FT_I64, ta_audit_t, ttft_ms),
    F("client_ip", 27, TA_FT_STR, ta_audit_t, client_ip),
    F("bytes_in", 28, TA_FT_I64, ta_audit_t, bytes_in),
    F("bytes_out", 29, TA_FT_I64, ta_audit_t, bytes_out),
    F("worker_pid", 30, TA_FT_I32, ta_audit_t, worker_pid),
    F("ticket", 31, TA_FT_I64, ta_audit_t, ticket),
    F("period_start", 32, TA_FT_TIME, ta_audit_t, period_start),
    F("held_cost", 33, TA_FT_NANO, ta_audit_t, held_cost),
};
const ta_recdesc_t ta_desc_audit = DESC("audit", TA_REC_AUDIT, ta_audit_t, audit_fields);

static const ta_field_t daily_fields[] = {
    F("quota_id", 1, TA_FT_ID, ta_daily_t, quota_id),
    F("day", 2, TA_FT_I32, ta_daily_t, day),
    F("model_id", 3, TA_FT_ID, ta_daily_t, model_id),
    F("user_id", 4, TA_FT_ID, ta_daily_t, user_id),
    F("requests", 5, TA_FT_I64, ta_daily_t, requests),
    F("prompt_tokens", 6, TA_FT_I64, ta_daily_t, prompt_tokens),
    F("completion_tokens", 7, TA_FT_I64, ta_daily_t, completion_tokens),
    F("cached_tokens", 8, TA_FT_I64, ta_daily_t, cached_tokens),
    F("cache_write_tokens", 9, TA_FT_I64, ta_daily_t, cache_write_tokens),
    F("cost", 10, TA_FT_NANO, ta_daily_t, cost),
    F("errors", 11, TA_FT_I64, ta_daily_t, errors),
};
const ta_recdesc_t ta_desc_daily = DESC("daily", TA_REC_DAILY, ta_daily_t, daily_fields);

/* index = TA_WH_* (audit_records.h) */
static const char *const webhook_state_names[] = {"none", "pending", "delivered", "failed", NULL};

static const ta_field_t warning_fields[] = {
    F("quota_id", 1, TA_FT_ID, ta_warning_t, quota_id),
    F("user_id", 2, TA_FT_ID, ta_warning_t, user_id),
    F("period_start", 3, TA_FT_TIME, ta_warning_t, period_start),
    F("threshold", 4, TA_FT_I32, ta_warning_t, threshold),
    F("raised_at", 5, TA_FT_TIME_NS, ta_warning_t, raised_at_ns),
    F("cost_used", 6, TA_FT_NANO, ta_warning_t, cost_used),
    F("cost_limit", 7, TA_FT_NANO, ta_warning_t, cost_limit),
    F("tokens_used", 8, TA_FT_I64, ta_warning_t, tokens_used),
    F("token_limit", 9, TA_FT_I64, ta_warning_t, token_limit),
    F("requests_used", 10, TA_FT_I64, ta_warning_t, requests_used),
    F("request_limit", 11, TA_FT_I64, ta_warning_t, request_limit),
    F("webhook_status", 12, TA_FT_I32, ta_warning_t, webhook_status),
    F("webhook_attempts", 13, TA_FT_I32, ta_warning_t, webhook_attempts),
    F("webhook_ok", 14, TA_FT_BOOL, ta_warning_t, webhook_ok),
    FE("webhook_state", 15, ta_warning_t, webhook_state, webhook_state_names),
    F("webhook_error", 16, TA_FT_STR, ta_warning_t, webhook_error),
    F("webhook_at", 17, TA_FT_TIME_NS, ta_warning_t, webhook_at_ns),
};
const ta_recdesc_t ta_desc_warning = DESC("warning", TA_REC_WARNING, ta_warning_t, warning_fields);
