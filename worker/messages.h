/*
 * messages.h - POST /v1/messages (Anthropic's Messages API) served by
 * `openai`-type providers: the reverse of worker/anthropic.h. A Messages
 * request becomes an OpenAI chat request; the chat answer (JSON, the chunk
 * stream, errors) comes back in Anthropic's shapes. Requests to
 * `anthropic`-type providers pass through and need none of this.
 *
 * Usage: an OpenAI usage counts cached tokens inside prompt_tokens, so the
 * Message's usage is input_tokens = prompt_tokens - cached_tokens,
 * cache_read_input_tokens = cached_tokens, cache_creation_input_tokens = 0,
 * output_tokens = completion_tokens; the charge uses the OpenAI usage as is.
 *
 * No h2o, no curl. Callable from any process.
 */
#ifndef TA_MESSAGES_H
#define TA_MESSAGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "schema/ta.h"
#include "worker/sse.h"

/** Check a Messages request body as Anthropic does (model, max_tokens >= 1
 *  unless count_tokens, messages a non-empty array of objects with a role,
 *  stream a boolean). Returns 0, or TA_EINVAL with err (field = the Messages
 *  param). */
int ta_msg_validate(const json_t *body, bool count_tokens, ta_err_t *err);

/** Build the OpenAI chat body for Messages body `m` (not changed): system
 *  (string or text blocks) -> a system message; user text and image blocks
 *  (base64 -> data URL, url) -> content parts; tool_result blocks -> tool
 *  messages; assistant text -> content, tool_use -> tool_calls; tools
 *  (input_schema -> parameters), tool_choice (auto, any -> required, tool,
 *  none; disable_parallel_tool_use -> parallel_tool_calls false),
 *  stop_sequences -> stop, temperature, top_p, metadata.user_id -> user,
 *  max_tokens, stream (with stream_options.include_usage). What chat cannot
 *  carry (top_k, thinking, documents, unknown block types) is refused,
 *  never dropped. Returns 0 with *out, TA_EINVAL with err, or -ENOMEM. */
int ta_msg_to_chat(const json_t *m, json_t **out, ta_err_t *err);

/** Translate a chat.completion (body[0..len)) into a Message appended to out
 *  (bounded by `bound`); u: the OpenAI usage (charged as is). Returns 0,
 *  TA_EINVAL (not a chat.completion), TA_ETOOBIG, -ENOMEM. */
int ta_msg_from_chat(const char *body, size_t len, ta_bytes_t *out, size_t bound, ta_usage_t *u);

/** Anthropic's stop_reason for an OpenAI finish_reason (NULL for NULL). */
const char *ta_msg_stop_reason(const char *finish_reason);

/** Anthropic's error type for an HTTP status (400 invalid_request_error,
 *  401 authentication_error, 403 permission_error, 404 not_found_error,
 *  413 request_too_large, 429 rate_limit_error, 503/529 overloaded_error,
 *  other 5xx api_error). */
const char *ta_msg_error_type(int status);

/** {"type":"error","error":{"type","message"}} appended to out. Returns 0 or
 *  -ENOMEM. */
int ta_msg_error_body(int status, const char *message, ta_bytes_t *out);

/** An OpenAI error answer of HTTP `status` (body may be anything) in
 *  Anthropic's error shape, appended to out. Returns 0 or -ENOMEM. */
int ta_msg_error_from_oai(int status, const char *body, size_t len, ta_bytes_t *out);

/*
 * The stream translator: OpenAI chat.completion.chunk events in, Anthropic's
 * event stream out:
 *   first chunk          -> message_start (usage: input 0 until the usage chunk)
 *   delta.content        -> content_block_start (text) once, content_block_delta text_delta
 *   delta.tool_calls[i]  -> the open block stopped, content_block_start tool_use,
 *                           input_json_delta for its arguments
 *   finish_reason        -> remembered
 *   the usage chunk      -> remembered (charged)
 *   data: [DONE]         -> content_block_stop, message_delta {stop_reason, usage},
 *                           message_stop
 *   data: {"error":...}  -> event: error in Anthropic's shape (failed = true)
 */
typedef struct ta_msg_stream {
    ta_sse_framer_t fr;
    char id[96], model[128];
    bool started, done, failed, failed_rate_limit;
    int block;          /* index of the open content block, -1 none */
    bool block_is_text;
    int nblocks;
    int tool_oai;       /* OpenAI tool_calls index of the open tool block, -1 none */
    char stop_reason[32];
    ta_usage_t usage;   /* the OpenAI usage (charged as is) */
    int64_t content_events;
    uint64_t events;
} ta_msg_stream_t;

/** model: for message_start until a chunk names one. */
void ta_msg_stream_init(ta_msg_stream_t *s, const char *model, size_t max_event);
void ta_msg_stream_dispose(ta_msg_stream_t *s);
/** Feed provider bytes; events out. Returns 0, TA_ETOOBIG, TA_EINVAL (data
 *  not JSON), -ENOMEM. */
int ta_msg_stream_feed(ta_msg_stream_t *s, const char *p, size_t n, ta_bytes_t *out);

#endif
