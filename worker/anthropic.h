/*
 * anthropic.h - the adapter for `anthropic`-type providers (step 4 of "The
 * request path" in docs/ARCHITECTURE.md): OpenAI chat requests become Messages API requests, and the answers
 * (JSON, the SSE event stream, errors) come back in OpenAI's shapes.
 *
 * URL rule: a provider's base_url does NOT include "/v1" (the same rule as
 * the models call of admin/provider_calls.c, {base_url}/v1/models): messages
 * go to {base_url}/v1/messages, trailing '/' of base_url removed. For
 * Anthropic itself base_url is "https://api.anthropic.com".
 *
 * Usage normalization (what ta_cost() in ledger/quota.h is applied to): Anthropic reports cache reads
 * and writes OUTSIDE input_tokens, so
 *   prompt_tokens      = input_tokens + cache_read_input_tokens + cache_creation_input_tokens
 *   cached_tokens      = cache_read_input_tokens
 *   cache_write_tokens = cache_creation_input_tokens
 *   completion_tokens  = output_tokens
 *
 * No h2o, no curl: JSON and bytes in, JSON and bytes out. Callable from any
 * process (the worker uses it on its loop thread).
 */
#ifndef TA_ANTHROPIC_H
#define TA_ANTHROPIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "schema/ta.h"
#include "worker/sse.h"

#define TA_ANTH_VERSION "2023-06-01"
#define TA_ANTH_DEFAULT_MAX_TOKENS 4096
/* The forced tool that carries response_format (json_object, json_schema):
 * its input is the answer, turned back into the message's content by the
 * answer translators. A client tool may not use the name. */
#define TA_ANTH_JSON_TOOL "tokenaudit_json_answer"

/** Build the Messages API body for an OpenAI chat body `oai` (not changed).
 *  model: the upstream model name. max_tokens (required by Anthropic): the
 *  client's max_completion_tokens, else its max_tokens, else fallback_max
 *  (the model's max_output_tokens), else TA_ANTH_DEFAULT_MAX_TOKENS.
 *  Translated: system/developer messages -> top-level `system` (text blocks),
 *  user/assistant content (strings, text parts, image_url parts as base64 or
 *  url image blocks), assistant tool_calls -> tool_use blocks, tool messages
 *  -> tool_result blocks in a user message (consecutive messages of one role
 *  are merged, as Anthropic wants roles to alternate), stop -> stop_sequences,
 *  temperature, top_p, top_k, tools, tool_choice, parallel_tool_calls,
 *  user -> metadata.user_id, stream. cache_control on a text part is kept.
 *  response_format json_object / json_schema (root type object) -> one
 *  forced tool TA_ANTH_JSON_TOOL (refused together with tools). Parameters
 *  without a counterpart (logprobs, top_logprobs, logit_bias, penalties,
 *  seed, audio, modalities other than ["text"], prediction,
 *  web_search_options, functions, function_call, store, reasoning_effort)
 *  are refused unless null or neutral (false, 0, {}), never dropped.
 *  Returns 0 with *out (a new reference), TA_EINVAL with err filled (field =
 *  the OpenAI param, e.g. "messages[2].content[0].type") for what Anthropic
 *  cannot express (n > 1, unknown roles or part types, tool arguments that are
 *  not a JSON object, no user/assistant message), or -ENOMEM. */
int ta_anth_request(const json_t *oai, const char *model, int64_t fallback_max, json_t **out, ta_err_t *err);

/** OpenAI finish_reason of an Anthropic stop_reason (NULL for NULL):
 *  end_turn, stop_sequence, pause_turn -> "stop"; max_tokens,
 *  model_context_window_exceeded -> "length"; tool_use -> "tool_calls";
 *  refusal -> "content_filter"; anything else -> "stop". */
const char *ta_anth_finish_reason(const char *stop_reason);

/** Normalized usage of an Anthropic `usage` object (see the top of this
 *  file). Members that are absent or not non-negative integers count 0;
 *  u->present is set when `usage` is an object. */
void ta_anth_usage(const json_t *usage, ta_usage_t *u);

/** Translate a non-streaming Messages answer (body[0..len)) into an OpenAI
 *  chat.completion appended to out (bounded by `bound` bytes in all), with u
 *  the normalized usage. The OpenAI usage carries prompt_tokens,
 *  completion_tokens, total_tokens and prompt_tokens_details.cached_tokens.
 *  Returns 0, TA_EINVAL when the body is not a Messages object (bad JSON, no
 *  content array), TA_ETOOBIG, -ENOMEM. */
int ta_anth_response(const char *body, size_t len, ta_bytes_t *out, size_t bound, ta_usage_t *u);

/** The OpenAI status for an Anthropic error status: 529 (overloaded) -> 503,
 *  anything else unchanged. */
int ta_anth_error_status(int status);

/** An Anthropic error answer ({"type":"error","error":{"type","message"}}) of
 *  HTTP `status` as an OpenAI error body {"error":{message,type,code,param}}
 *  appended to out: type is OpenAI's (invalid_request_error,
 *  authentication_error, permission_error, not_found_error, rate_limit_error,
 *  upstream_error for 5xx and 529), code is Anthropic's error type. A body
 *  that is not in that shape still gives a clean error ("the provider answered
 *  HTTP n"). Returns 0 or -ENOMEM. */
int ta_anth_error(int status, const char *body, size_t len, ta_bytes_t *out);

/*
 * The SSE translator: Anthropic's event stream (message_start,
 * content_block_start/_delta/_stop, message_delta, message_stop, ping, error)
 * in, OpenAI chat.completion.chunk events out, event by event as they
 * complete:
 *   message_start            -> a chunk with delta {role: assistant, content: ""}
 *   text_delta               -> a chunk with delta {content}
 *   tool_use block start     -> a chunk with delta.tool_calls[{index, id, type, function {name, arguments: ""}}]
 *   input_json_delta         -> a chunk with delta.tool_calls[{index, function {arguments}}]
 *   message_delta            -> a chunk with finish_reason (and the usage update)
 *   message_stop             -> the usage chunk (choices [], only with keep_usage), then data: [DONE]
 *   error                    -> data: {"error": {...OpenAI shape...}}; the stream then
 *                               counts as broken (done stays false)
 * Usage: input and cache tokens from message_start, output tokens from
 * message_delta. Until message_delta arrived, completion_tokens is the larger
 * of what message_start said and the content deltas passed on, so a stream cut
 * or aborted early charges at least what the client received.
 * Bounds: one event at most max_event bytes (TA_ETOOBIG past it).
 */
typedef struct ta_anth_stream {
    bool keep_usage;       /* the client asked for stream_options.include_usage */
    ta_sse_framer_t fr;    /* worker/sse.h */
    char id[96];           /* the message id (chunk "id") */
    char model[128];       /* chunk "model": the message's, else the one given at init */
    int64_t created;
    int block_index;       /* Anthropic index of the current content block, -1 none */
    bool block_is_tool;
    bool block_is_json;    /* the current block is TA_ANTH_JSON_TOOL's: its input is content */
    bool json_answer;      /* such a block came: a tool_use stop is "stop" */
    int tool_index;        /* OpenAI tool_calls index of the current tool_use block */
    int ntools;
    bool started;          /* message_start seen */
    bool final_usage;      /* message_delta with usage seen */
    bool failed;           /* an error event came */
    bool failed_rate_limit; /* ... a rate_limit_error */
    bool done;             /* message_stop seen ([DONE] written) */
    int64_t output_reported; /* output_tokens reported so far */
    ta_usage_t usage;      /* normalized, see above */
    int64_t content_events; /* content / tool deltas passed on */
    uint64_t events;       /* complete events seen */
} ta_anth_stream_t;

/** model: for the chunks until message_start names one (may be NULL). */
void ta_anth_stream_init(ta_anth_stream_t *s, bool keep_usage, const char *model, size_t max_event);
void ta_anth_stream_dispose(ta_anth_stream_t *s);
/** Feed provider bytes; translated events are appended to out. Returns 0,
 *  TA_ETOOBIG (one event past max_event), TA_EINVAL (an event whose data is
 *  not JSON), or -ENOMEM. */
int ta_anth_stream_feed(ta_anth_stream_t *s, const char *p, size_t n, ta_bytes_t *out);

#endif
