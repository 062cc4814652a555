/*
 * event.h - the one fixed-size record a worker hands to billing for every
 * finished or refused /v1 request (docs/ARCHITECTURE.md, "The ring and
 * billing"), and the control
 * events the master sends through the same ring.
 *
 * Plain data: no pointers, so it can be copied into a MAP_SHARED slot and read
 * by another process. Strings are NUL-terminated and truncated to fit.
 */
#ifndef TA_EVENT_H
#define TA_EVENT_H

#include <stdint.h>
#include "schema/ta.h"

enum ta_event_kind {
    TA_EV_REQUEST = 1,     /* a /v1 request finished or was refused */
    TA_EV_WORKER_DEAD = 2, /* master: worker `worker_pid` died; release its holds after
                            * every earlier event (all lower tickets) is applied */
};

enum ta_endpoint {
    TA_EP_CHAT = 1, TA_EP_COMPLETIONS, TA_EP_EMBEDDINGS, TA_EP_MODELS, TA_EP_USAGE, TA_EP_OTHER,
    TA_EP_MESSAGES,     /* POST /v1/messages (Anthropic's Messages API) */
    TA_EP_COUNT_TOKENS, /* POST /v1/messages/count_tokens */
    TA_EP_RESPONSES,    /* POST /v1/responses (OpenAI's Responses API) */
    TA_EP_LAST = TA_EP_RESPONSES
};

enum ta_event_flags {
    TA_EVF_HOLD = 1u << 0,            /* a hold exists for request_id and must be released */
    TA_EVF_STREAM = 1u << 1,
    TA_EVF_USAGE_ESTIMATED = 1u << 2, /* tokens are the gateway's estimate, not the provider's */
    TA_EVF_CLIENT_GONE = 1u << 3,     /* client disconnected before the end */
    TA_EVF_ABORTED = 1u << 4,         /* set by billing for dead-worker cleanup records */
};

/* error_type codes stored in the audit record ("" when status < 400) */
enum ta_errtype {
    TA_ET_NONE = 0, TA_ET_INVALID_REQUEST, TA_ET_AUTH, TA_ET_PERMISSION, TA_ET_NOT_FOUND,
    TA_ET_RATE_LIMIT, TA_ET_INSUFFICIENT_QUOTA, TA_ET_UPSTREAM, TA_ET_TIMEOUT, TA_ET_OVERLOADED,
    TA_ET_ABORTED, TA_ET_INTERNAL,
};
/** "invalid_request_error", ... ; "" for TA_ET_NONE. */
const char *ta_errtype_name(int et);
const char *ta_endpoint_name(int ep);

typedef struct ta_event {
    uint32_t kind;               /* TA_EV_* */
    uint32_t flags;              /* TA_EVF_* */
    uint8_t request_id[16];      /* also the holds key */
    int32_t worker_pid;
    uint16_t status;             /* HTTP status answered */
    uint8_t endpoint;            /* TA_EP_* */
    uint8_t error_type;          /* TA_ET_* */
    uint64_t user_id, quota_id, model_id, provider_id;
    int64_t t_received_ns, t_first_byte_ns, t_done_ns; /* wall clock ns; 0 = none */
    int64_t hold_period_start;   /* balance period the hold was taken in */
    ta_nano_t held_cost;         /* what the hold reserved */
    int64_t held_tokens;         /* tokens the hold reserved (token limit) */
    int64_t tpm_estimate;        /* tokens charged to the TPM GCRA at hold time */
    ta_nano_t cost;              /* the cost, computed once by ta_cost() */
    int64_t prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens;
    int64_t bytes_in, bytes_out;
    char key_prefix[16];
    char model[96];              /* as requested by the client */
    char served_model[96];       /* upstream name actually served */
    char client_ip[48];
} ta_event_t;

#endif
