/*
 * responses.h - POST /v1/responses (OpenAI's Responses API), step 3 of "The
 * request path" in docs/ARCHITECTURE.md.
 *
 * To `openai`-type providers the request and the answer pass through; the
 * gateway only reads the usage: of a Response (ta_resp_usage), or in a
 * stream of its terminal event's `response.usage` (ta_resp_stream_t in
 * pass-through mode). To `anthropic`-type providers the request becomes an
 * OpenAI chat request (ta_resp_to_chat) and from there a Messages API
 * request (worker/anthropic.h; ta_resp_to_anth does both). The answer comes
 * back the same way: Message -> chat.completion (anthropic.h) -> Response
 * (ta_resp_from_chat), and Anthropic's events -> chat chunks (anthropic.h)
 * -> the Responses events (ta_resp_stream_t in translating mode).
 *
 * Usage: a Response counts cached tokens (and tokens written to the cache)
 * inside input_tokens, as chat counts them inside prompt_tokens, so
 *   prompt_tokens      = usage.input_tokens
 *   cached_tokens      = usage.input_tokens_details.cached_tokens
 *   cache_write_tokens = usage.input_tokens_details.cache_write_tokens
 *   completion_tokens  = usage.output_tokens (reasoning tokens are inside)
 * and a Response built from a chat answer reports the same numbers back.
 *
 * No h2o, no curl. Callable from any process.
 */
#ifndef TA_RESPONSES_H
#define TA_RESPONSES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "schema/ta.h"
#include "worker/sse.h"

/** Check a Responses request body (any provider): model a non-empty string;
 *  input a string or an array of objects (an item with a role needs a
 *  string role and a string or array content), required unless `prompt` is
 *  given; instructions, previous_response_id, user a string or null;
 *  max_output_tokens a positive integer or null; stream, store, background,
 *  parallel_tool_calls a boolean or null; temperature, top_p a number or
 *  null; tools an array of objects with a `type` (a function tool needs a
 *  `name`); tool_choice none, auto, required or an object with a `type`;
 *  text, reasoning, metadata,
 *  stream_options an object or null; text.format an object whose type is
 *  text, json_object or json_schema (json_schema with a name and a schema
 *  object). Returns 0, or TA_EINVAL with err (field = the param, e.g.
 *  "input[2].content"). */
int ta_resp_validate(const json_t *body, ta_err_t *err);

/** Does the request bring input the gateway does not see (previous_response_id,
 *  conversation, a stored `prompt`, an item_reference item)? Such a request's
 *  prompt is bounded by the model's context window, not by its body. */
bool ta_resp_stateful(const json_t *body);

/** Build the OpenAI chat body for Responses body `r` (validated, not
 *  changed): instructions -> a system message first; input as a string -> a
 *  user message; input items: messages (roles user, assistant, system,
 *  developer; input_text, output_text, refusal and input_image parts),
 *  function_call -> the assistant's tool_calls, function_call_output -> tool
 *  messages; function tools, tool_choice, parallel_tool_calls, temperature,
 *  top_p, max_output_tokens -> max_completion_tokens, text.format ->
 *  response_format, user (or safety_identifier) -> user, stream. Refused
 *  with the param named, never dropped: the stateful parameters
 *  (previous_response_id, conversation, prompt, store true, background true,
 *  item_reference items), parameters chat cannot carry unless null or
 *  neutral (include [], reasoning without values, metadata {},
 *  top_logprobs 0, truncation "disabled", service_tier auto/default,
 *  text.verbosity, max_tool_calls, prompt_cache_*, context_management,
 *  moderation), other item, part and tool types, unknown parameters.
 *  Returns 0 with *out, TA_EINVAL with err, or -ENOMEM. */
int ta_resp_to_chat(const json_t *r, json_t **out, ta_err_t *err);

/** ta_resp_to_chat, then ta_anth_request (worker/anthropic.h) with model
 *  and fallback_max; the translator's refusals name the Responses param
 *  (input[i], text.format...). Returns 0 with *out, TA_EINVAL with err,
 *  -ENOMEM. */
int ta_resp_to_anth(const json_t *r, const char *model, int64_t fallback_max, json_t **out, ta_err_t *err);

/** The usage of a Response body[0..len) (see the top of this file): 0 with
 *  u->present when it has a usage object, TA_ENOTFOUND when none, TA_EINVAL
 *  when the bytes are not a JSON object. */
int ta_resp_usage(const char *body, size_t len, ta_usage_t *u);

/** A chat.completion (chat[0..len)) as a Response appended to out (bounded
 *  by `bound`), echoing the request `req` (instructions, tools, tool_choice,
 *  text, temperature, top_p, max_output_tokens, parallel_tool_calls,
 *  metadata, user); u: the usage to report (the charged one). finish_reason
 *  length / content_filter -> status incomplete with incomplete_details.
 *  Returns 0, TA_EINVAL (not a chat.completion), TA_ETOOBIG, -ENOMEM. */
int ta_resp_from_chat(const json_t *req, const char *chat, size_t len, const ta_usage_t *u, ta_bytes_t *out,
                      size_t bound);

/*
 * A Responses stream, in one of two modes.
 *
 * Pass-through (an openai route): the provider's events go out unchanged;
 * read on the side are the output deltas (content_events), the terminal
 * event (response.completed / response.incomplete: done; response.failed:
 * done and failed) with its response.usage, and an `error` event (failed).
 *
 * Translating (an anthropic route, after worker/anthropic.h): OpenAI chat
 * chunks in, the Responses events out, each with `event:` and a
 * sequence_number:
 *   first chunk             -> response.created, response.in_progress
 *   delta.content           -> (once) response.output_item.added (message),
 *                              response.content_part.added; response.output_text.delta
 *   delta.tool_calls[i]     -> the open item done; response.output_item.added
 *                              (function_call); response.function_call_arguments.delta
 *   finish_reason, usage    -> remembered
 *   data: [DONE]            -> the open item done (output_text.done,
 *                              content_part.done / function_call_arguments.done,
 *                              output_item.done), then response.completed
 *                              (response.incomplete after length or
 *                              content_filter) with the output and the usage
 *   data: {"error": ...}    -> response.failed with response.error (failed)
 * The usage reported is the chunks', or *usage_from when set (the
 * provider's own, with cache writes, which chat chunks cannot carry).
 * Bounds: one event at most max_event bytes; the texts kept for the done
 * events at most `bound` bytes (TA_ETOOBIG past either).
 */
typedef struct ta_resp_stream {
    bool translate;
    ta_sse_framer_t fr;
    size_t bound;
    /* read by the proxy, both modes */
    bool done, failed, failed_rate_limit;
    ta_usage_t usage;
    int64_t content_events; /* text and argument deltas */
    uint64_t events;
    /* translating */
    const ta_usage_t *usage_from;
    json_t *resp;      /* the Response: the request's echo, the output items done so far */
    json_t *item;      /* the open output item, NULL none */
    int tool_oai;      /* the chat tool_calls index of an open function_call, -1 none */
    ta_bytes_t text;   /* the open item's text or arguments */
    int64_t seq;
    bool started;
    char finish[32];
} ta_resp_stream_t;

/** req: the Responses request (translating mode: echoed in the Response;
 *  not kept after the call), model: the Response's model until a chunk names
 *  one. max_event 0 = TA_SSE_DEFAULT_MAX_EVENT. Returns 0 or -ENOMEM. */
int ta_resp_stream_init(ta_resp_stream_t *s, bool translate, const json_t *req, const char *model, size_t max_event,
                        size_t bound);
void ta_resp_stream_dispose(ta_resp_stream_t *s);
/** Feed provider bytes (pass-through: the Responses events; translating:
 *  chat chunks); the events for the client are appended to out. Returns 0,
 *  TA_ETOOBIG, TA_EINVAL (translating: data that is not JSON), -ENOMEM. */
int ta_resp_stream_feed(ta_resp_stream_t *s, const char *p, size_t n, ta_bytes_t *out);

#endif
