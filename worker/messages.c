/*
 * messages.c - see messages.h. Requests and answers are built as jansson
 * trees (small, already parsed); stream events are parsed one by one.
 */
#include "worker/messages.h"

#include "schema/schema.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- request ----------------------------------------------------------------------- */

int ta_msg_validate(const json_t *b, bool count_tokens, ta_err_t *err)
{
    if (!json_is_object(b))
        return ta_err_set(err, "", "type", "the request body must be a JSON object");
    const json_t *v = json_object_get(b, "model");
    if (!json_is_string(v) || json_string_length(v) == 0)
        return ta_err_set(err, "model", "required", "model: Field required (a non-empty string)");
    v = json_object_get(b, "max_tokens");
    if (!count_tokens && (!json_is_integer(v) || json_integer_value(v) < 1))
        return ta_err_set(err, "max_tokens", "required", "max_tokens: Field required (an integer of at least 1)");
    v = json_object_get(b, "messages");
    if (!json_is_array(v) || json_array_size(v) == 0)
        return ta_err_set(err, "messages", "required", "messages: Field required (a non-empty array)");
    size_t i;
    json_t *m;
    json_array_foreach(v, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        if (role == NULL || (strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0)) {
            char f[48];
            snprintf(f, sizeof(f), "messages.%zu.role", i);
            return ta_err_set(err, f, "enum", "%s: must be 'user' or 'assistant'", f);
        }
    }
    v = json_object_get(b, "stream");
    if (v != NULL && !json_is_boolean(v) && !json_is_null(v))
        return ta_err_set(err, "stream", "type", "stream: must be a boolean");
    return 0;
}

/* A Messages image source as an OpenAI image_url part. */
static json_t *image_part(const json_t *blk, const char *f, ta_err_t *err, int *rc)
{
    const json_t *src = json_object_get(blk, "source");
    const char *type = json_string_value(json_object_get(src, "type"));
    if (type != NULL && strcmp(type, "base64") == 0) {
        const char *mt = json_string_value(json_object_get(src, "media_type"));
        const char *data = json_string_value(json_object_get(src, "data"));
        if (mt != NULL && data != NULL) {
            size_t n = strlen(mt) + strlen(data) + 16;
            char *url = malloc(n);
            if (url == NULL) {
                *rc = -ENOMEM;
                return NULL;
            }
            snprintf(url, n, "data:%s;base64,%s", mt, data);
            json_t *p = json_pack("{s:s,s:{s:s}}", "type", "image_url", "image_url", "url", url);
            free(url);
            if (p == NULL)
                *rc = -ENOMEM;
            return p;
        }
    } else if (type != NULL && strcmp(type, "url") == 0) {
        const char *url = json_string_value(json_object_get(src, "url"));
        if (url != NULL) {
            json_t *p = json_pack("{s:s,s:{s:s}}", "type", "image_url", "image_url", "url", url);
            if (p == NULL)
                *rc = -ENOMEM;
            return p;
        }
    }
    *rc = ta_err_set(err, f, "format", "%s: an image needs source {type: base64, media_type, data} or {type: url, url}",
                     f);
    return NULL;
}

/* The text of a tool_result's content (string or text blocks). */
static json_t *tool_result_text(const json_t *content, const char *f, ta_err_t *err, int *rc)
{
    if (content == NULL || json_is_null(content))
        return json_string("");
    if (json_is_string(content))
        return json_incref((json_t *)content);
    if (!json_is_array(content)) {
        *rc = ta_err_set(err, f, "type", "%s: content must be a string or an array of text blocks", f);
        return NULL;
    }
    json_t *parts = json_array();
    size_t i;
    json_t *b;
    json_array_foreach(content, i, b) {
        const char *t = json_string_value(json_object_get(b, "type"));
        if (t == NULL || strcmp(t, "text") != 0 || !json_is_string(json_object_get(b, "text"))) {
            json_decref(parts);
            *rc = ta_err_set(err, f, "enum", "%s: only text blocks can be carried in a tool result to this model's "
                             "provider", f);
            return NULL;
        }
        json_array_append_new(parts, json_pack("{s:s,s:O}", "type", "text", "text", json_object_get(b, "text")));
    }
    return parts;
}

/* One Messages message -> OpenAI messages appended to msgs. */
static int one_message(json_t *msgs, const json_t *m, size_t mi, ta_err_t *err)
{
    const char *role = json_string_value(json_object_get(m, "role"));
    const json_t *content = json_object_get(m, "content");
    bool user = strcmp(role, "user") == 0;
    char f[80];
    if (json_is_string(content))
        return json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", role, "content", content)) == 0 ? 0
                                                                                                       : -ENOMEM;
    snprintf(f, sizeof(f), "messages.%zu.content", mi);
    if (!json_is_array(content))
        return ta_err_set(err, f, "type", "%s: must be a string or an array of content blocks", f);
    json_t *parts = json_array(), *calls = json_array(), *tools = json_array();
    int rc = 0;
    size_t i;
    json_t *b;
    json_array_foreach(content, i, b) {
        const char *type = json_string_value(json_object_get(b, "type"));
        snprintf(f, sizeof(f), "messages.%zu.content.%zu", mi, i);
        if (type == NULL) {
            rc = ta_err_set(err, f, "required", "%s: a content block needs a 'type'", f);
        } else if (strcmp(type, "text") == 0 && json_is_string(json_object_get(b, "text"))) {
            json_array_append_new(parts, json_pack("{s:s,s:O}", "type", "text", "text", json_object_get(b, "text")));
        } else if (strcmp(type, "image") == 0 && user) {
            json_t *p = image_part(b, f, err, &rc);
            if (p != NULL)
                json_array_append_new(parts, p);
        } else if (strcmp(type, "tool_use") == 0 && !user) {
            const char *id = json_string_value(json_object_get(b, "id"));
            const char *name = json_string_value(json_object_get(b, "name"));
            const json_t *input = json_object_get(b, "input");
            if (id == NULL || name == NULL) {
                rc = ta_err_set(err, f, "required", "%s: a tool_use block needs an id and a name", f);
                break;
            }
            char *args = json_is_object(input) ? json_dumps(input, JSON_COMPACT) : strdup("{}");
            if (args == NULL) {
                rc = -ENOMEM;
                break;
            }
            json_array_append_new(calls, json_pack("{s:s,s:s,s:{s:s,s:s}}", "id", id, "type", "function", "function",
                                                   "name", name, "arguments", args));
            free(args);
        } else if (strcmp(type, "tool_result") == 0 && user) {
            const char *id = json_string_value(json_object_get(b, "tool_use_id"));
            if (id == NULL) {
                rc = ta_err_set(err, f, "required", "%s: a tool_result block needs a tool_use_id", f);
                break;
            }
            if (json_is_true(json_object_get(b, "is_error"))) {
                rc = ta_err_set(err, f, "unsupported", "%s: is_error cannot be carried to this model's provider", f);
                break;
            }
            json_t *t = tool_result_text(json_object_get(b, "content"), f, err, &rc);
            if (t != NULL)
                json_array_append_new(tools, json_pack("{s:s,s:s,s:o}", "role", "tool", "tool_call_id", id, "content",
                                                       t));
        } else {
            rc = ta_err_set(err, f, "unsupported",
                            "%s: content blocks of type '%.32s' in a %s message are not supported by this model's "
                            "provider", f, type, role);
        }
        if (rc != 0)
            break;
    }
    if (rc == 0) {
        /* tool results answer the previous assistant turn: they come first */
        json_array_extend(msgs, tools);
        if (json_array_size(parts) > 0 || json_array_size(calls) > 0) {
            json_t *om = json_pack("{s:s}", "role", role);
            if (json_array_size(parts) > 0)
                json_object_set(om, "content", parts);
            else
                json_object_set_new(om, "content", json_null());
            if (json_array_size(calls) > 0)
                json_object_set(om, "tool_calls", calls);
            json_array_append_new(msgs, om);
        }
    }
    json_decref(parts);
    json_decref(calls);
    json_decref(tools);
    return rc;
}

static int tools_to_chat(json_t *o, const json_t *m, ta_err_t *err)
{
    const json_t *tools = json_object_get(m, "tools");
    if (tools != NULL && !json_is_null(tools)) {
        if (!json_is_array(tools))
            return ta_err_set(err, "tools", "type", "tools: must be an array");
        json_t *ot = json_array();
        size_t i;
        json_t *t;
        json_array_foreach(tools, i, t) {
            const char *name = json_string_value(json_object_get(t, "name"));
            const json_t *schema = json_object_get(t, "input_schema");
            const char *type = json_string_value(json_object_get(t, "type"));
            char f[32];
            snprintf(f, sizeof(f), "tools.%zu", i);
            if (name == NULL || !json_is_object(schema) || (type != NULL && strcmp(type, "custom") != 0)) {
                json_decref(ot);
                return ta_err_set(err, f, "unsupported",
                                  "%s: only custom tools with a name and an input_schema are supported by this "
                                  "model's provider", f);
            }
            json_t *fn = json_pack("{s:s,s:O}", "name", name, "parameters", schema);
            const char *d = json_string_value(json_object_get(t, "description"));
            if (d != NULL)
                json_object_set_new(fn, "description", json_string(d));
            json_array_append_new(ot, json_pack("{s:s,s:o}", "type", "function", "function", fn));
        }
        if (json_array_size(ot) > 0)
            json_object_set_new(o, "tools", ot);
        else
            json_decref(ot);
    }
    const json_t *tc = json_object_get(m, "tool_choice");
    if (tc == NULL || json_is_null(tc))
        return 0;
    const char *type = json_string_value(json_object_get(tc, "type"));
    if (type == NULL)
        return ta_err_set(err, "tool_choice", "type", "tool_choice: must be an object with a 'type'");
    if (strcmp(type, "auto") == 0 || strcmp(type, "none") == 0)
        json_object_set_new(o, "tool_choice", json_string(type));
    else if (strcmp(type, "any") == 0)
        json_object_set_new(o, "tool_choice", json_string("required"));
    else if (strcmp(type, "tool") == 0 && json_is_string(json_object_get(tc, "name")))
        json_object_set_new(o, "tool_choice", json_pack("{s:s,s:{s:O}}", "type", "function", "function", "name",
                                                        json_object_get(tc, "name")));
    else
        return ta_err_set(err, "tool_choice.type", "enum", "tool_choice.type: must be auto, any, tool or none");
    if (json_is_true(json_object_get(tc, "disable_parallel_tool_use")) && json_object_get(o, "tools") != NULL)
        json_object_set_new(o, "parallel_tool_calls", json_false());
    return 0;
}

int ta_msg_to_chat(const json_t *m, json_t **out, ta_err_t *err)
{
    *out = NULL;
    static const char *const uncarried[] = {"top_k", "thinking", "container", "mcp_servers", "service_tier"};
    for (size_t i = 0; i < TA_ARRAY_SIZE(uncarried); i++) {
        const json_t *v = json_object_get(m, uncarried[i]);
        if (v != NULL && !json_is_null(v))
            return ta_err_set(err, uncarried[i], "unsupported", "%s: is not supported by this model's provider",
                              uncarried[i]);
    }
    json_t *o = json_object(), *msgs = json_array();
    int rc = o != NULL && msgs != NULL ? 0 : -ENOMEM;
    json_object_set_new(o, "model", json_incref(json_object_get(m, "model")));
    const json_t *sys = json_object_get(m, "system");
    if (rc == 0 && json_is_string(sys) && json_string_length(sys) > 0) {
        json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "system", "content", sys));
    } else if (rc == 0 && json_is_array(sys)) {
        json_t *parts = json_array();
        size_t i;
        json_t *b;
        json_array_foreach(sys, i, b) {
            if (!json_is_string(json_object_get(b, "text"))) {
                rc = ta_err_set(err, "system", "type", "system: must be a string or an array of text blocks");
                break;
            }
            json_array_append_new(parts, json_pack("{s:s,s:O}", "type", "text", "text", json_object_get(b, "text")));
        }
        if (rc == 0 && json_array_size(parts) > 0)
            json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "system", "content", parts));
        json_decref(parts);
    } else if (rc == 0 && sys != NULL && !json_is_null(sys)) {
        rc = ta_err_set(err, "system", "type", "system: must be a string or an array of text blocks");
    }
    size_t i;
    json_t *mm;
    json_array_foreach(json_object_get(m, "messages"), i, mm) {
        if (rc != 0)
            break;
        rc = one_message(msgs, mm, i, err);
    }
    if (rc == 0)
        rc = tools_to_chat(o, m, err);
    if (rc == 0) {
        json_object_set(o, "messages", msgs);
        json_object_set(o, "max_tokens", json_object_get(m, "max_tokens"));
        const json_t *ss = json_object_get(m, "stop_sequences");
        if (json_is_array(ss) && json_array_size(ss) > 0)
            json_object_set(o, "stop", (json_t *)ss);
        static const char *const nums[] = {"temperature", "top_p"};
        for (size_t k = 0; k < TA_ARRAY_SIZE(nums); k++)
            if (json_is_number(json_object_get(m, nums[k])))
                json_object_set(o, nums[k], json_object_get(m, nums[k]));
        const char *user = json_string_value(json_object_get(json_object_get(m, "metadata"), "user_id"));
        if (user != NULL)
            json_object_set_new(o, "user", json_string(user));
        if (json_is_true(json_object_get(m, "stream"))) {
            json_object_set_new(o, "stream", json_true());
            json_object_set_new(o, "stream_options", json_pack("{s:b}", "include_usage", 1));
        }
        *out = o;
        o = NULL;
    }
    json_decref(o);
    json_decref(msgs);
    return rc;
}

/* ---- answers ----------------------------------------------------------------------- */

const char *ta_msg_stop_reason(const char *fr)
{
    if (fr == NULL)
        return NULL;
    if (strcmp(fr, "length") == 0)
        return "max_tokens";
    if (strcmp(fr, "tool_calls") == 0 || strcmp(fr, "function_call") == 0)
        return "tool_use";
    if (strcmp(fr, "content_filter") == 0)
        return "refusal";
    return "end_turn";
}

static json_t *msg_usage(const ta_usage_t *u)
{
    int64_t in = u->prompt_tokens > u->cached_tokens ? u->prompt_tokens - u->cached_tokens : 0;
    return json_pack("{s:I,s:I,s:I,s:I}", "input_tokens", (json_int_t)in, "output_tokens",
                     (json_int_t)u->completion_tokens, "cache_creation_input_tokens", (json_int_t)0,
                     "cache_read_input_tokens", (json_int_t)u->cached_tokens);
}

/* tool call arguments (a JSON object in a string) as a tool_use input */
static json_t *input_of(const char *args)
{
    json_t *in = args != NULL ? json_loads(args, 0, NULL) : NULL;
    if (!json_is_object(in)) {
        json_decref(in);
        in = json_object();
    }
    return in;
}

int ta_msg_from_chat(const char *body, size_t len, ta_bytes_t *out, size_t bound, ta_usage_t *u)
{
    memset(u, 0, sizeof(*u));
    json_t *c = json_loadb(body, len, 0, NULL);
    json_t *choice = json_array_get(json_object_get(c, "choices"), 0);
    json_t *msg = json_object_get(choice, "message");
    if (!json_is_object(c) || !json_is_object(msg)) {
        json_decref(c);
        return TA_EINVAL;
    }
    (void)ta_usage_parse(body, len, u);
    json_t *content = json_array();
    const json_t *text = json_object_get(msg, "content");
    if (json_is_string(text) && json_string_length(text) > 0)
        json_array_append_new(content, json_pack("{s:s,s:O}", "type", "text", "text", text));
    const json_t *refusal = json_object_get(msg, "refusal");
    if (json_is_string(refusal) && json_string_length(refusal) > 0)
        json_array_append_new(content, json_pack("{s:s,s:O}", "type", "text", "text", refusal));
    size_t i;
    json_t *tc;
    json_array_foreach(json_object_get(msg, "tool_calls"), i, tc) {
        const json_t *fn = json_object_get(tc, "function");
        const char *id = json_string_value(json_object_get(tc, "id"));
        const char *name = json_string_value(json_object_get(fn, "name"));
        json_array_append_new(content, json_pack("{s:s,s:s,s:s,s:o}", "type", "tool_use", "id", id ? id : "", "name",
                                                 name ? name : "",
                                                 "input", input_of(json_string_value(json_object_get(fn, "arguments")))));
    }
    const char *id = json_string_value(json_object_get(c, "id"));
    const char *model = json_string_value(json_object_get(c, "model"));
    const char *sr = ta_msg_stop_reason(json_string_value(json_object_get(choice, "finish_reason")));
    json_t *m = json_pack("{s:s,s:s,s:s,s:s,s:o,s:n}", "id", id ? id : "msg", "type", "message", "role", "assistant",
                          "model", model ? model : "", "content", content, "stop_sequence");
    if (m != NULL) {
        json_object_set_new(m, "stop_reason", sr ? json_string(sr) : json_null());
        json_object_set_new(m, "usage", msg_usage(u));
    }
    json_decref(c);
    return ta_bytes_append_json(out, m, bound, "", "");
}

const char *ta_msg_error_type(int status)
{
    switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 402: return "billing_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503:
    case 529: return "overloaded_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

int ta_msg_error_body(int status, const char *message, ta_bytes_t *out)
{
    json_t *j = json_pack("{s:s,s:{s:s,s:o}}", "type", "error", "error", "type", ta_msg_error_type(status), "message",
                          ta_json_string_lossy(message, strlen(message)));
    return ta_bytes_append_json(out, j, SIZE_MAX, "", "");
}

int ta_msg_error_from_oai(int status, const char *body, size_t len, ta_bytes_t *out)
{
    json_t *j = body != NULL && len > 0 ? json_loadb(body, len, 0, NULL) : NULL;
    const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    char fallback[64];
    snprintf(fallback, sizeof(fallback), "the provider answered HTTP %d", status);
    int rc = ta_msg_error_body(status, msg != NULL ? msg : fallback, out);
    json_decref(j);
    return rc;
}

/* ---- the stream -------------------------------------------------------------------- */

void ta_msg_stream_init(ta_msg_stream_t *s, const char *model, size_t max_event)
{
    memset(s, 0, sizeof(*s));
    ta_sse_framer_init(&s->fr, max_event);
    s->block = -1;
    s->tool_oai = -1;
    snprintf(s->id, sizeof(s->id), "msg_tokenaudit");
    snprintf(s->model, sizeof(s->model), "%s", model != NULL ? model : "");
}

void ta_msg_stream_dispose(ta_msg_stream_t *s) { ta_sse_framer_dispose(&s->fr); }

static int event(ta_bytes_t *out, const char *name, json_t *j)
{
    char pre[64];
    snprintf(pre, sizeof(pre), "event: %s\ndata: ", name);
    return ta_bytes_append_json(out, j, SIZE_MAX, pre, "\n\n");
}

static int start(ta_msg_stream_t *s, ta_bytes_t *out)
{
    s->started = true;
    json_t *m = json_pack("{s:s,s:s,s:s,s:s,s:[],s:n,s:n,s:{s:i,s:i}}", "id", s->id, "type", "message", "role",
                          "assistant", "model", s->model, "content", "stop_reason", "stop_sequence", "usage",
                          "input_tokens", 0, "output_tokens", 0);
    return event(out, "message_start", json_pack("{s:s,s:o}", "type", "message_start", "message", m));
}

static int block_stop(ta_msg_stream_t *s, ta_bytes_t *out)
{
    if (s->block < 0)
        return 0;
    int rc = event(out, "content_block_stop", json_pack("{s:s,s:i}", "type", "content_block_stop", "index", s->block));
    s->block = -1;
    s->tool_oai = -1;
    return rc;
}

static int on_chunk(ta_msg_stream_t *s, json_t *j, ta_bytes_t *out)
{
    int rc = 0;
    const char *id = json_string_value(json_object_get(j, "id"));
    const char *model = json_string_value(json_object_get(j, "model"));
    if (!s->started) {
        if (id != NULL)
            snprintf(s->id, sizeof(s->id), "%s", id);
        if (model != NULL && model[0])
            snprintf(s->model, sizeof(s->model), "%s", model);
        if ((rc = start(s, out)) != 0)
            return rc;
    }
    if (json_is_object(json_object_get(j, "usage"))) {
        char *u = json_dumps(j, JSON_COMPACT);
        if (u != NULL)
            (void)ta_usage_parse(u, strlen(u), &s->usage);
        free(u);
    }
    json_t *c = json_array_get(json_object_get(j, "choices"), 0);
    json_t *d = json_object_get(c, "delta");
    const json_t *text = json_object_get(d, "content");
    if (json_is_string(text) && json_string_length(text) > 0) {
        if (s->block < 0 || !s->block_is_text) {
            if ((rc = block_stop(s, out)) != 0)
                return rc;
            s->block = s->nblocks++;
            s->block_is_text = true;
            rc = event(out, "content_block_start", json_pack("{s:s,s:i,s:{s:s,s:s}}", "type", "content_block_start",
                                                             "index", s->block, "content_block", "type", "text",
                                                             "text", ""));
        }
        s->content_events++;
        if (rc == 0)
            rc = event(out, "content_block_delta", json_pack("{s:s,s:i,s:{s:s,s:O}}", "type", "content_block_delta",
                                                             "index", s->block, "delta", "type", "text_delta", "text",
                                                             text));
    }
    size_t i;
    json_t *tc;
    json_array_foreach(json_object_get(d, "tool_calls"), i, tc) {
        if (rc != 0)
            break;
        json_t *idx = json_object_get(tc, "index");
        int oi = json_is_integer(idx) ? (int)json_integer_value(idx) : 0;
        const json_t *fn = json_object_get(tc, "function");
        if (s->block < 0 || s->block_is_text || oi != s->tool_oai) {
            if ((rc = block_stop(s, out)) != 0)
                break;
            s->block = s->nblocks++;
            s->block_is_text = false;
            s->tool_oai = oi;
            const char *tid = json_string_value(json_object_get(tc, "id"));
            const char *name = json_string_value(json_object_get(fn, "name"));
            rc = event(out, "content_block_start",
                       json_pack("{s:s,s:i,s:{s:s,s:s,s:s,s:{}}}", "type", "content_block_start", "index", s->block,
                                 "content_block", "type", "tool_use", "id", tid ? tid : "", "name", name ? name : "",
                                 "input"));
        }
        const json_t *args = json_object_get(fn, "arguments");
        if (rc == 0 && json_is_string(args) && json_string_length(args) > 0) {
            s->content_events++;
            rc = event(out, "content_block_delta",
                       json_pack("{s:s,s:i,s:{s:s,s:O}}", "type", "content_block_delta", "index", s->block, "delta",
                                 "type", "input_json_delta", "partial_json", args));
        }
    }
    const char *fr = json_string_value(json_object_get(c, "finish_reason"));
    if (fr != NULL)
        snprintf(s->stop_reason, sizeof(s->stop_reason), "%s", ta_msg_stop_reason(fr));
    return rc;
}

static int on_done(ta_msg_stream_t *s, ta_bytes_t *out)
{
    int rc = s->started ? 0 : start(s, out);
    if (rc == 0)
        rc = block_stop(s, out);
    if (rc == 0) {
        json_t *u = msg_usage(&s->usage);
        rc = event(out, "message_delta", json_pack("{s:s,s:{s:s,s:n},s:o}", "type", "message_delta", "delta",
                                                   "stop_reason", s->stop_reason[0] ? s->stop_reason : "end_turn",
                                                   "stop_sequence", "usage", u));
    }
    if (rc == 0)
        rc = event(out, "message_stop", json_pack("{s:s}", "type", "message_stop"));
    s->done = true;
    return rc;
}

static int on_error(ta_msg_stream_t *s, json_t *j, ta_bytes_t *out)
{
    const json_t *e = json_object_get(j, "error");
    const char *type = json_string_value(json_object_get(e, "type"));
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    s->failed = true;
    s->failed_rate_limit = (type != NULL && strstr(type, "rate_limit") != NULL) ||
                           (code != NULL && strstr(code, "rate_limit") != NULL);
    int status = s->failed_rate_limit ? 429 : 500;
    json_t *ev = json_pack("{s:s,s:{s:s,s:o}}", "type", "error", "error", "type", ta_msg_error_type(status), "message",
                           msg != NULL ? json_string(msg) : json_string("the provider failed"));
    return event(out, "error", ev);
}

static int handle(void *arg, char *ev, size_t n, ta_bytes_t *out)
{
    ta_msg_stream_t *s = arg;
    const char *data;
    size_t dl;
    if (!ta_sse_event_data(ev, n, &data, &dl) || s->done || s->failed)
        return 0;
    s->events++;
    if (dl == 6 && memcmp(data, "[DONE]", 6) == 0)
        return on_done(s, out);
    json_t *j = json_loadb(data, dl, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return TA_EINVAL;
    }
    int rc = json_object_get(j, "error") != NULL && json_object_get(j, "choices") == NULL ? on_error(s, j, out)
                                                                                          : on_chunk(s, j, out);
    json_decref(j);
    return rc;
}

int ta_msg_stream_feed(ta_msg_stream_t *s, const char *p, size_t n, ta_bytes_t *out)
{
    return ta_sse_framer_feed(&s->fr, p, n, handle, s, out);
}
