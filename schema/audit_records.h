/*
 * audit_records.h - the records of the audit environment (docs/ARCHITECTURE.md,
 * "Data" and "The ring and billing"), described with the schema engine (schema.h) so the binary
 * encoding, the JSON of the admin API and the export come from one table.
 *
 *   requests           key: t_received_ns (8, BE) + request id (16)  -> ta_audit_t
 *   requests_by_quota  key: quota id (8) + t_received_ns (8) + request id (16) -> empty
 *   daily              key: quota id (8) + UTC day number (4, BE) + model id (8) -> ta_daily_t
 *   warnings           key: quota id (8) + period start (8) + threshold percent (4) -> ta_warning_t
 *
 * Written by billing only; read by workers (admin API) and the CLI.
 * Callable from every process (no LMDB here).
 */
#ifndef TA_AUDIT_RECORDS_H
#define TA_AUDIT_RECORDS_H

#include "schema/schema.h"

/* One audit record per /v1 request (and per hold released by the dead-worker
 * cleanup). JSON names follow API.md "Audit record". */
typedef struct ta_audit {
    uint8_t request_id[16];     /* "id": 32 hex chars */
    int64_t t_received_ns;      /* "created_at" */
    int64_t t_first_byte_ns, t_done_ns;
    uint64_t user_id, quota_id, model_id, provider_id;
    char key_prefix[16];
    uint8_t endpoint;           /* TA_EP_* ("chat.completions", ...) */
    char model[96];             /* as requested */
    char served_model[96];      /* upstream name served */
    bool stream;
    int32_t status;
    uint8_t error_type;         /* TA_ET_* ("" when none) */
    int64_t prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens;
    bool usage_estimated, client_gone, aborted;
    ta_nano_t cost;             /* what the ledger charged for it (== the ledger's addition) */
    ta_nano_t uncharged_cost;   /* cost the event carried but the ledger did not charge
                                 * (no hold, or its hold was already gone) */
    int64_t latency_ms, ttft_ms;
    char client_ip[48];
    int64_t bytes_in, bytes_out;
    int32_t worker_pid;
    int64_t ticket;             /* the ring ticket it came from */
    int64_t period_start;       /* the balance period the cost was added to (unix s) */
    ta_nano_t held_cost;
} ta_audit_t;

/* Per quota, UTC day and model: sums of that day's records. Kept when old
 * records are pruned. */
typedef struct ta_daily {
    uint64_t quota_id;
    int32_t day;                /* days since 1970-01-01 UTC */
    uint64_t model_id, user_id;
    int64_t requests, prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens;
    ta_nano_t cost;
    int64_t errors;             /* status >= 400 */
} ta_daily_t;

/* A warn_at threshold crossed by a quota in a period: raised once. */
typedef struct ta_warning {
    uint64_t quota_id, user_id;
    int64_t period_start;       /* unix s */
    int32_t threshold;          /* percent */
    int64_t raised_at_ns;
    ta_nano_t cost_used, cost_limit;
    int64_t tokens_used, token_limit, requests_used, request_limit;
    int32_t webhook_status;     /* last HTTP status of the webhook (0 none, -1 transport error) */
    int32_t webhook_attempts;   /* POSTs made so far, all billing runs together */
    bool webhook_ok;
    /* The record is the webhook's outbox (ledger/billing.c): PENDING until a
     * POST got a 2xx (DELIVERED) or a round of bounded retries failed
     * (FAILED, webhook_error says why). NONE: no webhook was configured when
     * it was raised (and records written before this field existed). */
    uint8_t webhook_state;      /* TA_WH_* */
    char webhook_error[128];    /* last failure ("HTTP 500", curl's message) */
    int64_t webhook_at_ns;      /* when DELIVERED / FAILED was recorded */
} ta_warning_t;

enum { TA_WH_NONE = 0, TA_WH_PENDING = 1, TA_WH_DELIVERED = 2, TA_WH_FAILED = 3 };

extern const ta_recdesc_t ta_desc_audit, ta_desc_daily, ta_desc_warning;

#endif
