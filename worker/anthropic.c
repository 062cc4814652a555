/*
 * anthropic.c - see anthropic.h. Requests are built as jansson trees (they
 * are small and already parsed); stream events are parsed one by one with
 * json_loadb, since each is a small object and the translation needs most of
 * its members.
 */
#include "worker/anthropic.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- strings ----------------------------------------------------------------------- */

/* Copy the valid UTF-8 string src into dst[0..size), cut on a character
 * boundary: a string cut inside a character is not UTF-8 any more, and
 * jansson then refuses it (json_pack fails), which would read as -ENOMEM. */
static void copy_utf8(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src);
    if (n >= size) {
        n = size - 1;
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* How many bytes of the client's string s to quote in an error message: at
 * most 64, cut on a character boundary, so the message stays short enough
 * for ta_err_t (whose vsnprintf would cut anywhere) and valid UTF-8. */
static int quote_len(const char *s)
{
    size_t n = strlen(s);
    if (n > 64) {
        n = 64;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    return (int)n;
}

/* ---- request ----------------------------------------------------------------------- */

/* Append one content block to the last message when it has `role`, else
 * start a new message: Anthropic wants user and assistant to alternate, and
 * several tool results must share one user message. Steals blk. */
static int push_block(json_t *msgs, const char *role, json_t *blk)
{
    size_t n = json_array_size(msgs);
    json_t *last = n > 0 ? json_array_get(msgs, n - 1) : NULL;
    if (last != NULL && strcmp(json_string_value(json_object_get(last, "role")), role) == 0)
        return json_array_append_new(json_object_get(last, "content"), blk) == 0 ? 0 : -ENOMEM;
    json_t *m = json_pack("{s:s,s:[o]}", "role", role, "content", blk);
    if (m == NULL)
        return -ENOMEM;
    return json_array_append_new(msgs, m) == 0 ? 0 : -ENOMEM;
}

static json_t *text_block(const char *text, size_t len, const json_t *cache_control)
{
    json_t *b = json_pack("{s:s,s:s%}", "type", "text", "text", text, len);
    if (b != NULL && json_is_object(cache_control))
        json_object_set_new(b, "cache_control", json_deep_copy(cache_control));
    return b;
}

/* data:<media type>;base64,<data> -> a base64 source; anything else a url source. */
static json_t *image_block(const char *url)
{
    if (strncmp(url, "data:", 5) == 0) {
        const char *semi = strchr(url + 5, ';');
        const char *comma = strchr(url + 5, ',');
        if (semi != NULL && comma != NULL && semi < comma && comma - semi == 7 && strncmp(semi, ";base64", 7) == 0)
            return json_pack("{s:s,s:{s:s,s:s%,s:s}}", "type", "image", "source", "type", "base64", "media_type",
                             url + 5, (size_t)(semi - (url + 5)), "data", comma + 1);
        return NULL;
    }
    return json_pack("{s:s,s:{s:s,s:s}}", "type", "image", "source", "type", "url", "url", url);
}

/* The blocks of one OpenAI `content` (string, array of parts, null) pushed as
 * `role`. tool_result: wrap them into a tool_result block instead. */
static int content_blocks(json_t *msgs, const char *role, const json_t *content, size_t mi, bool allow_images,
                          ta_err_t *err)
{
    if (content == NULL || json_is_null(content))
        return 0;
    if (json_is_string(content)) {
        if (json_string_length(content) == 0)
            return 0; /* Anthropic refuses empty text blocks */
        json_t *b = text_block(json_string_value(content), json_string_length(content), NULL);
        return b != NULL ? push_block(msgs, role, b) : -ENOMEM;
    }
    char f[64];
    if (!json_is_array(content)) {
        snprintf(f, sizeof(f), "messages[%zu].content", mi);
        return ta_err_set(err, f, "type", "%s: must be a string, an array of content parts or null", f);
    }
    size_t i;
    json_t *part;
    json_array_foreach(content, i, part) {
        const char *type = json_string_value(json_object_get(part, "type"));
        snprintf(f, sizeof(f), "messages[%zu].content[%zu]", mi, i);
        if (type == NULL)
            return ta_err_set(err, f, "type", "%s: a content part must be an object with a 'type'", f);
        int rc;
        if (strcmp(type, "text") == 0 || strcmp(type, "refusal") == 0) {
            json_t *t = json_object_get(part, strcmp(type, "text") == 0 ? "text" : "refusal");
            if (!json_is_string(t))
                return ta_err_set(err, f, "type", "%s: a %s part needs a string '%s'", f, type, type);
            if (json_string_length(t) == 0)
                continue;
            json_t *b = text_block(json_string_value(t), json_string_length(t), json_object_get(part, "cache_control"));
            rc = b != NULL ? push_block(msgs, role, b) : -ENOMEM;
        } else if (strcmp(type, "image_url") == 0 && allow_images) {
            json_t *iu = json_object_get(part, "image_url");
            const char *url = json_is_string(iu) ? json_string_value(iu) : json_string_value(json_object_get(iu, "url"));
            if (url == NULL)
                return ta_err_set(err, f, "required", "%s: an image_url part needs image_url.url", f);
            json_t *b = image_block(url);
            if (b == NULL)
                return ta_err_set(err, f, "format", "%s: a data URL image must be data:<media type>;base64,<data>", f);
            rc = push_block(msgs, role, b);
        } else {
            return ta_err_set(err, f, "enum",
                              "%s: content parts of type '%.*s' are not supported by this model's provider", f,
                              quote_len(type), type);
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* tool message -> tool_result block: content as a string, or its text parts. */
static int tool_result(json_t *msgs, const json_t *m, size_t mi, ta_err_t *err)
{
    char f[64];
    const char *id = json_string_value(json_object_get(m, "tool_call_id"));
    if (id == NULL) {
        snprintf(f, sizeof(f), "messages[%zu].tool_call_id", mi);
        return ta_err_set(err, f, "required", "%s: a tool message needs a string tool_call_id", f);
    }
    json_t *content = json_object_get(m, "content");
    json_t *blk = json_pack("{s:s,s:s}", "type", "tool_result", "tool_use_id", id);
    if (blk == NULL)
        return -ENOMEM;
    if (json_is_string(content)) {
        json_object_set(blk, "content", content);
    } else if (json_is_array(content)) {
        /* the parts as the text blocks of a scratch message */
        json_t *scratch = json_array();
        int rc = scratch != NULL ? content_blocks(scratch, "user", content, mi, true, err) : -ENOMEM;
        if (rc != 0) {
            json_decref(scratch);
            json_decref(blk);
            return rc;
        }
        json_t *blocks = json_array_size(scratch) > 0 ? json_object_get(json_array_get(scratch, 0), "content") : NULL;
        json_object_set_new(blk, "content", blocks != NULL ? json_incref(blocks) : json_string(""));
        json_decref(scratch);
    } else if (content != NULL && !json_is_null(content)) {
        json_decref(blk);
        snprintf(f, sizeof(f), "messages[%zu].content", mi);
        return ta_err_set(err, f, "type", "%s: must be a string or an array of content parts", f);
    }
    return push_block(msgs, "user", blk);
}

static int tool_uses(json_t *msgs, const json_t *calls, size_t mi, ta_err_t *err)
{
    char f[96]; /* "messages[<20>].tool_calls[<20>].function.arguments" fits */
    if (calls == NULL || json_is_null(calls))
        return 0;
    if (!json_is_array(calls)) {
        snprintf(f, sizeof(f), "messages[%zu].tool_calls", mi);
        return ta_err_set(err, f, "type", "%s: must be an array", f);
    }
    size_t i;
    json_t *c;
    json_array_foreach(calls, i, c) {
        json_t *fn = json_object_get(c, "function");
        const char *id = json_string_value(json_object_get(c, "id"));
        const char *name = json_string_value(json_object_get(fn, "name"));
        json_t *args = json_object_get(fn, "arguments");
        snprintf(f, sizeof(f), "messages[%zu].tool_calls[%zu]", mi, i);
        if (id == NULL || name == NULL)
            return ta_err_set(err, f, "required", "%s: a tool call needs an id and function.name", f);
        json_t *input;
        if (args == NULL || json_is_null(args) || (json_is_string(args) && json_string_length(args) == 0)) {
            input = json_object();
        } else if (json_is_string(args)) {
            input = json_loadb(json_string_value(args), json_string_length(args), 0, NULL);
            if (!json_is_object(input)) {
                json_decref(input);
                snprintf(f, sizeof(f), "messages[%zu].tool_calls[%zu].function.arguments", mi, i);
                return ta_err_set(err, f, "format", "%s: must be a JSON object in a string", f);
            }
        } else if (json_is_object(args)) {
            input = json_deep_copy(args);
        } else {
            snprintf(f, sizeof(f), "messages[%zu].tool_calls[%zu].function.arguments", mi, i);
            return ta_err_set(err, f, "format", "%s: must be a JSON object in a string", f);
        }
        json_t *b = json_pack("{s:s,s:s,s:s,s:o}", "type", "tool_use", "id", id, "name", name, "input", input);
        int rc = b != NULL ? push_block(msgs, "assistant", b) : -ENOMEM;
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int system_text(json_t *system, const json_t *content, size_t mi, ta_err_t *err)
{
    json_t *scratch = json_array();
    if (scratch == NULL)
        return -ENOMEM;
    int rc = content_blocks(scratch, "user", content, mi, false, err);
    if (rc == 0 && json_array_size(scratch) > 0)
        json_array_extend(system, json_object_get(json_array_get(scratch, 0), "content"));
    json_decref(scratch);
    return rc;
}

static int tools_of(json_t *out, const json_t *oai, ta_err_t *err)
{
    json_t *tools = json_object_get(oai, "tools");
    if (tools == NULL || json_is_null(tools))
        return 0;
    if (!json_is_array(tools))
        return ta_err_set(err, "tools", "type", "tools: must be an array");
    if (json_array_size(tools) == 0)
        return 0;
    json_t *at = json_array();
    if (at == NULL)
        return -ENOMEM;
    json_object_set_new(out, "tools", at);
    size_t i;
    json_t *t;
    char f[48];
    json_array_foreach(tools, i, t) {
        json_t *fn = json_object_get(t, "function");
        const char *type = json_string_value(json_object_get(t, "type"));
        const char *name = json_string_value(json_object_get(fn, "name"));
        snprintf(f, sizeof(f), "tools[%zu]", i);
        if (type == NULL || strcmp(type, "function") != 0)
            return ta_err_set(err, f, "enum", "%s: only tools of type 'function' are supported by this model's provider",
                              f);
        if (name == NULL)
            return ta_err_set(err, f, "required", "%s: function.name is required", f);
        if (strcmp(name, TA_ANTH_JSON_TOOL) == 0)
            return ta_err_set(err, f, "reserved", "%s: the tool name '%s' is reserved by the gateway", f,
                              TA_ANTH_JSON_TOOL);
        json_t *schema = json_object_get(fn, "parameters");
        /* Anthropic requires input_schema; OpenAI allows a tool without parameters */
        json_t *in_schema = json_is_object(schema) ? json_deep_copy(schema)
                                                   : json_pack("{s:s,s:{}}", "type", "object", "properties");
        json_t *tool = json_pack("{s:s,s:o}", "name", name, "input_schema", in_schema);
        if (tool == NULL)
            return -ENOMEM;
        const char *desc = json_string_value(json_object_get(fn, "description"));
        if (desc != NULL)
            json_object_set_new(tool, "description", json_string(desc));
        if (json_is_object(json_object_get(t, "cache_control")))
            json_object_set(tool, "cache_control", json_object_get(t, "cache_control"));
        json_array_append_new(at, tool);
    }
    /* tool_choice: only meaningful with tools */
    json_t *tc = json_object_get(oai, "tool_choice");
    json_t *atc = NULL;
    if (json_is_string(tc)) {
        const char *s = json_string_value(tc);
        const char *type = strcmp(s, "none") == 0 ? "none" : strcmp(s, "auto") == 0 ? "auto"
                           : strcmp(s, "required") == 0 ? "any" : NULL;
        if (type == NULL)
            return ta_err_set(err, "tool_choice", "enum", "tool_choice: must be none, auto, required or a function");
        atc = json_pack("{s:s}", "type", type);
    } else if (json_is_object(tc)) {
        const char *name = json_string_value(json_object_get(json_object_get(tc, "function"), "name"));
        if (name == NULL)
            return ta_err_set(err, "tool_choice", "required", "tool_choice: function.name is required");
        atc = json_pack("{s:s,s:s}", "type", "tool", "name", name);
    } else if (tc != NULL && !json_is_null(tc)) {
        return ta_err_set(err, "tool_choice", "type", "tool_choice: must be a string or an object");
    }
    if (json_is_false(json_object_get(oai, "parallel_tool_calls"))) {
        if (atc == NULL)
            atc = json_pack("{s:s}", "type", "auto");
        if (atc != NULL && strcmp(json_string_value(json_object_get(atc, "type")), "none") != 0)
            json_object_set_new(atc, "disable_parallel_tool_use", json_true());
    }
    if (atc != NULL)
        json_object_set_new(out, "tool_choice", atc);
    return 0;
}

/* response_format json_object / json_schema -> one forced tool whose input
 * is the answer (the answer translators turn its input back into the
 * message's content); "text" needs nothing. */
static int response_format(json_t *out, const json_t *oai, ta_err_t *err)
{
    const json_t *rf = json_object_get(oai, "response_format");
    if (rf == NULL || json_is_null(rf))
        return 0;
    const char *type = json_string_value(json_object_get(rf, "type"));
    if (!json_is_object(rf) || type == NULL)
        return ta_err_set(err, "response_format", "type", "response_format: must be an object with a 'type'");
    if (strcmp(type, "text") == 0)
        return 0;
    json_t *schema = NULL;
    const char *desc = "Answer with a JSON object.";
    if (strcmp(type, "json_schema") == 0) {
        const json_t *js = json_object_get(rf, "json_schema");
        if (!json_is_object(js))
            return ta_err_set(err, "response_format.json_schema", "required",
                              "response_format.json_schema: is required for type json_schema");
        const json_t *sc = json_object_get(js, "schema");
        if (sc != NULL && !json_is_null(sc)) {
            const char *root = json_string_value(json_object_get(sc, "type"));
            if (!json_is_object(sc) || root == NULL || strcmp(root, "object") != 0)
                return ta_err_set(err, "response_format.json_schema.schema", "type",
                                  "response_format.json_schema.schema: this model's provider needs a schema "
                                  "whose root is {\"type\": \"object\"}");
            schema = json_deep_copy(sc);
        }
        const char *d = json_string_value(json_object_get(js, "description"));
        if (d != NULL)
            desc = d;
    } else if (strcmp(type, "json_object") != 0) {
        return ta_err_set(err, "response_format.type", "enum",
                          "response_format.type: must be text, json_object or json_schema");
    }
    if (json_array_size(json_object_get(out, "tools")) > 0) {
        json_decref(schema);
        return ta_err_set(err, "response_format", "conflict",
                          "response_format: a JSON answer cannot be combined with tools on this model's provider");
    }
    if (schema == NULL)
        schema = json_pack("{s:s}", "type", "object");
    json_t *tools = json_pack("[{s:s,s:s,s:o}]", "name", TA_ANTH_JSON_TOOL, "description", desc, "input_schema",
                              schema);
    json_t *tc = json_pack("{s:s,s:s}", "type", "tool", "name", TA_ANTH_JSON_TOOL);
    if (tools == NULL || tc == NULL) {
        json_decref(tools);
        json_decref(tc);
        return -ENOMEM;
    }
    json_object_set_new(out, "tools", tools);
    json_object_set_new(out, "tool_choice", tc);
    return 0;
}

/* OpenAI chat parameters the Messages API has no counterpart for: refused
 * unless they hold their neutral value (null, or the value below), so no
 * constraint is dropped silently. */
static int uncarried(const json_t *oai, ta_err_t *err)
{
    static const struct {
        const char *name;
        enum { ANY, FALSE_OK, ZERO_OK, EMPTY_OK, TEXT_ONLY } neutral;
    } params[] = {
        {"logprobs", FALSE_OK},      {"top_logprobs", ZERO_OK},   {"logit_bias", EMPTY_OK},
        {"frequency_penalty", ZERO_OK}, {"presence_penalty", ZERO_OK}, {"seed", ANY},
        {"audio", ANY},              {"modalities", TEXT_ONLY},   {"prediction", ANY},
        {"web_search_options", ANY}, {"functions", ANY},          {"function_call", ANY},
        {"store", FALSE_OK},         {"reasoning_effort", ANY},
    };
    for (size_t i = 0; i < TA_ARRAY_SIZE(params); i++) {
        const json_t *v = json_object_get(oai, params[i].name);
        if (v == NULL || json_is_null(v))
            continue;
        bool neutral = false;
        switch (params[i].neutral) {
        case ANY: break;
        case FALSE_OK: neutral = json_is_false(v); break;
        case ZERO_OK: neutral = json_is_number(v) && json_number_value(v) == 0; break;
        case EMPTY_OK: neutral = json_is_object(v) && json_object_size(v) == 0; break;
        case TEXT_ONLY:
            neutral = json_is_array(v) && json_array_size(v) == 1 &&
                      json_is_string(json_array_get(v, 0)) &&
                      strcmp(json_string_value(json_array_get(v, 0)), "text") == 0;
            break;
        }
        if (!neutral)
            return ta_err_set(err, params[i].name, "unsupported",
                              "%s: is not supported by this model's provider (an Anthropic-type provider)",
                              params[i].name);
    }
    return 0;
}

int ta_anth_request(const json_t *oai, const char *model, int64_t fallback_max, json_t **out, ta_err_t *err)
{
    int rc = 0;
    char f[64];
    json_t *o = json_object(), *msgs = json_array(), *system = json_array();
    *out = NULL;
    if (o == NULL || msgs == NULL || system == NULL) {
        rc = -ENOMEM;
        goto Exit;
    }
    json_t *n = json_object_get(oai, "n");
    if (json_is_integer(n) && json_integer_value(n) != 1) {
        rc = ta_err_set(err, "n", "max", "n: this model's provider returns one choice only");
        goto Exit;
    }
    json_t *messages = json_object_get(oai, "messages");
    if (!json_is_array(messages)) {
        rc = ta_err_set(err, "messages", "required", "messages: is required and must be an array");
        goto Exit;
    }
    size_t i;
    json_t *m;
    json_array_foreach(messages, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        json_t *content = json_object_get(m, "content");
        if (role == NULL) {
            snprintf(f, sizeof(f), "messages[%zu].role", i);
            rc = ta_err_set(err, f, "required", "%s: is required", f);
        } else if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
            rc = system_text(system, content, i, err);
        } else if (strcmp(role, "user") == 0) {
            rc = content_blocks(msgs, "user", content, i, true, err);
        } else if (strcmp(role, "assistant") == 0) {
            rc = content_blocks(msgs, "assistant", content, i, false, err);
            if (rc == 0)
                rc = tool_uses(msgs, json_object_get(m, "tool_calls"), i, err);
        } else if (strcmp(role, "tool") == 0) {
            rc = tool_result(msgs, m, i, err);
        } else {
            snprintf(f, sizeof(f), "messages[%zu].role", i);
            rc = ta_err_set(err, f, "enum", "%s: role '%.*s' is not supported by this model's provider", f,
                            quote_len(role), role);
        }
        if (rc != 0)
            goto Exit;
    }
    if (json_array_size(msgs) == 0) {
        rc = ta_err_set(err, "messages", "required",
                        "messages: at least one user or assistant message with content is required");
        goto Exit;
    }

    json_object_set_new(o, "model", json_string(model != NULL ? model : ""));
    json_object_set(o, "messages", msgs);
    if (json_array_size(system) > 0)
        json_object_set(o, "system", system);

    json_t *mt = json_object_get(oai, "max_completion_tokens");
    if (!json_is_integer(mt) || json_integer_value(mt) < 1)
        mt = json_object_get(oai, "max_tokens");
    int64_t max = json_is_integer(mt) && json_integer_value(mt) >= 1 ? (int64_t)json_integer_value(mt)
                  : fallback_max > 0                                 ? fallback_max
                                                                     : TA_ANTH_DEFAULT_MAX_TOKENS;
    json_object_set_new(o, "max_tokens", json_integer(max));

    json_t *stop = json_object_get(oai, "stop");
    if (json_is_string(stop)) {
        if (json_string_length(stop) > 0)
            json_object_set_new(o, "stop_sequences", json_pack("[O]", stop));
    } else if (json_is_array(stop)) {
        json_t *ss = json_array(), *s;
        size_t k;
        json_array_foreach(stop, k, s) {
            if (!json_is_string(s)) {
                json_decref(ss);
                rc = ta_err_set(err, "stop", "type", "stop: must be a string or an array of strings");
                goto Exit;
            }
            if (json_string_length(s) > 0)
                json_array_append(ss, s);
        }
        if (json_array_size(ss) > 0)
            json_object_set_new(o, "stop_sequences", ss);
        else
            json_decref(ss);
    } else if (stop != NULL && !json_is_null(stop)) {
        rc = ta_err_set(err, "stop", "type", "stop: must be a string or an array of strings");
        goto Exit;
    }
    static const char *const nums[] = {"temperature", "top_p"};
    for (size_t k = 0; k < TA_ARRAY_SIZE(nums); k++) {
        json_t *v = json_object_get(oai, nums[k]);
        if (json_is_number(v))
            json_object_set(o, nums[k], v);
        else if (v != NULL && !json_is_null(v)) {
            rc = ta_err_set(err, nums[k], "type", "%s: must be a number", nums[k]);
            goto Exit;
        }
    }
    if (json_is_integer(json_object_get(oai, "top_k")))
        json_object_set(o, "top_k", json_object_get(oai, "top_k"));
    if ((rc = uncarried(oai, err)) != 0 || (rc = tools_of(o, oai, err)) != 0 || (rc = response_format(o, oai, err)) != 0)
        goto Exit;
    const char *user = json_string_value(json_object_get(oai, "user"));
    if (user != NULL && user[0] != '\0')
        json_object_set_new(o, "metadata", json_pack("{s:s}", "user_id", user));
    if (json_is_true(json_object_get(oai, "stream")))
        json_object_set_new(o, "stream", json_true());
    *out = o;
    o = NULL;
Exit:
    json_decref(o);
    json_decref(msgs);
    json_decref(system);
    return rc;
}

/* ---- answers --------------------------------------------------------------------- */

const char *ta_anth_finish_reason(const char *r)
{
    if (r == NULL)
        return NULL;
    if (strcmp(r, "max_tokens") == 0 || strcmp(r, "model_context_window_exceeded") == 0)
        return "length";
    if (strcmp(r, "tool_use") == 0)
        return "tool_calls";
    if (strcmp(r, "refusal") == 0)
        return "content_filter";
    return "stop";
}

static int64_t count_of(const json_t *o, const char *name)
{
    json_t *v = json_object_get(o, name);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (int64_t)json_integer_value(v) : 0;
}

static int64_t sat_add(int64_t a, int64_t b) { return a > INT64_MAX - b ? INT64_MAX : a + b; }

void ta_anth_usage(const json_t *usage, ta_usage_t *u)
{
    memset(u, 0, sizeof(*u));
    if (!json_is_object(usage))
        return;
    u->present = true;
    u->cached_tokens = count_of(usage, "cache_read_input_tokens");
    u->cache_write_tokens = count_of(usage, "cache_creation_input_tokens");
    u->prompt_tokens = sat_add(sat_add(count_of(usage, "input_tokens"), u->cached_tokens), u->cache_write_tokens);
    u->completion_tokens = count_of(usage, "output_tokens");
}

static json_t *oai_usage(const ta_usage_t *u)
{
    return json_pack("{s:I,s:I,s:I,s:{s:I}}", "prompt_tokens", (json_int_t)u->prompt_tokens, "completion_tokens",
                     (json_int_t)u->completion_tokens, "total_tokens",
                     (json_int_t)sat_add(u->prompt_tokens, u->completion_tokens), "prompt_tokens_details",
                     "cached_tokens", (json_int_t)u->cached_tokens);
}

static bool is_json_tool(const json_t *name)
{
    return json_is_string(name) && strcmp(json_string_value(name), TA_ANTH_JSON_TOOL) == 0;
}

int ta_anth_response(const char *body, size_t len, ta_bytes_t *out, size_t bound, ta_usage_t *u)
{
    memset(u, 0, sizeof(*u));
    json_t *a = json_loadb(body, len, 0, NULL);
    json_t *content = json_object_get(a, "content");
    if (!json_is_object(a) || !json_is_array(content)) {
        json_decref(a);
        return TA_EINVAL;
    }
    ta_anth_usage(json_object_get(a, "usage"), u);
    ta_bytes_t text = {0};
    json_t *calls = json_array();
    int rc = calls != NULL ? 0 : -ENOMEM;
    bool json_answer = false;
    size_t i;
    json_t *b;
    json_array_foreach(content, i, b) {
        const char *type = json_string_value(json_object_get(b, "type"));
        if (rc != 0 || type == NULL)
            continue;
        if (strcmp(type, "text") == 0) {
            json_t *t = json_object_get(b, "text");
            if (json_is_string(t))
                rc = ta_bytes_append(&text, json_string_value(t), json_string_length(t), bound);
        } else if (strcmp(type, "tool_use") == 0 && is_json_tool(json_object_get(b, "name"))) {
            /* response_format's forced tool: its input is the answer */
            json_t *input = json_object_get(b, "input");
            char *txt = json_is_object(input) ? json_dumps(input, JSON_COMPACT) : strdup("{}");
            if (txt == NULL) {
                rc = -ENOMEM;
                continue;
            }
            rc = ta_bytes_append(&text, txt, strlen(txt), bound);
            free(txt);
            json_answer = true;
        } else if (strcmp(type, "tool_use") == 0) {
            json_t *input = json_object_get(b, "input");
            char *args = json_is_object(input) ? json_dumps(input, JSON_COMPACT) : strdup("{}");
            if (args == NULL) {
                rc = -ENOMEM;
                continue;
            }
            const char *id = json_string_value(json_object_get(b, "id"));
            const char *name = json_string_value(json_object_get(b, "name"));
            json_array_append_new(calls, json_pack("{s:s,s:s,s:{s:s,s:s}}", "id", id != NULL ? id : "", "type",
                                                   "function", "function", "name", name != NULL ? name : "",
                                                   "arguments", args));
            free(args);
        }
        /* thinking and other blocks have no OpenAI counterpart: left out */
    }
    if (rc != 0)
        goto Exit;
    json_t *msg = json_pack("{s:s}", "role", "assistant");
    if (text.len > 0 || json_array_size(calls) == 0)
        json_object_set_new(msg, "content", json_stringn(text.p != NULL ? text.p : "", text.len));
    else
        json_object_set_new(msg, "content", json_null());
    if (json_array_size(calls) > 0)
        json_object_set(msg, "tool_calls", calls);
    json_object_set_new(msg, "refusal", json_null()); /* required by OpenAI's ChatCompletionResponseMessage */
    const char *fr = ta_anth_finish_reason(json_string_value(json_object_get(a, "stop_reason")));
    if (json_answer && json_array_size(calls) == 0 && fr != NULL && strcmp(fr, "tool_calls") == 0)
        fr = "stop";
    json_t *choice = json_pack("{s:i,s:o,s:n}", "index", 0, "message", msg, "logprobs");
    json_object_set_new(choice, "finish_reason", fr != NULL ? json_string(fr) : json_null());
    const char *id = json_string_value(json_object_get(a, "id"));
    const char *model = json_string_value(json_object_get(a, "model"));
    json_t *j = json_pack("{s:s,s:s,s:I,s:s,s:[o]}", "id", id != NULL ? id : "", "object", "chat.completion",
                          "created", (json_int_t)time(NULL), "model", model != NULL ? model : "", "choices", choice);
    if (j != NULL && u->present)
        json_object_set_new(j, "usage", oai_usage(u));
    rc = ta_bytes_append_json(out, j, bound, "", "");
Exit:
    ta_bytes_free(&text);
    json_decref(calls);
    json_decref(a);
    return rc;
}

int ta_anth_error_status(int status) { return status == 529 ? 503 : status; }

int ta_anth_error(int status, const char *body, size_t len, ta_bytes_t *out)
{
    json_t *a = body != NULL && len > 0 ? json_loadb(body, len, 0, NULL) : NULL;
    json_t *e = json_object_get(a, "error");
    const char *atype = json_string_value(json_object_get(e, "type"));
    const char *amsg = json_string_value(json_object_get(e, "message"));
    const char *type;
    if (status >= 500 || status == 529)
        type = "upstream_error";
    else if (status == 429)
        type = "rate_limit_error";
    else if (status == 401)
        type = "authentication_error";
    else if (status == 403)
        type = "permission_error";
    else if (status == 404)
        type = "not_found_error";
    else
        type = "invalid_request_error";
    char msg[512];
    if (amsg != NULL)
        copy_utf8(msg, sizeof(msg), amsg);
    else
        snprintf(msg, sizeof(msg), "the provider answered HTTP %d", status);
    json_t *j = json_pack("{s:{s:s,s:s,s:s,s:n}}", "error", "message", msg, "type", type, "code",
                          atype != NULL ? atype : status == 429 ? "rate_limit_exceeded" : "upstream_error", "param");
    json_decref(a);
    return ta_bytes_append_json(out, j, SIZE_MAX, "", "");
}

/* ---- the stream -------------------------------------------------------------------- */

void ta_anth_stream_init(ta_anth_stream_t *s, bool keep_usage, const char *model, size_t max_event)
{
    memset(s, 0, sizeof(*s));
    s->keep_usage = keep_usage;
    ta_sse_framer_init(&s->fr, max_event);
    s->block_index = -1;
    s->created = (int64_t)time(NULL);
    snprintf(s->id, sizeof(s->id), "chatcmpl-anthropic");
    copy_utf8(s->model, sizeof(s->model), model != NULL ? model : "");
}

void ta_anth_stream_dispose(ta_anth_stream_t *s) { ta_sse_framer_dispose(&s->fr); }

/* A chat.completion.chunk with one choice (delta steals `delta`), or with
 * choices [] and the usage when delta is NULL. */
static int emit_chunk(ta_anth_stream_t *s, ta_bytes_t *out, json_t *delta, const char *finish)
{
    json_t *j = json_pack("{s:s,s:s,s:I,s:s,s:[]}", "id", s->id, "object", "chat.completion.chunk", "created",
                          (json_int_t)s->created, "model", s->model, "choices");
    if (j == NULL) {
        json_decref(delta);
        return -ENOMEM;
    }
    if (delta != NULL) {
        json_t *c = json_pack("{s:i,s:o,s:n}", "index", 0, "delta", delta, "logprobs");
        if (c == NULL) {
            json_decref(j);
            return -ENOMEM;
        }
        json_object_set_new(c, "finish_reason", finish != NULL ? json_string(finish) : json_null());
        json_array_append_new(json_object_get(j, "choices"), c);
    } else {
        json_object_set_new(j, "usage", oai_usage(&s->usage));
    }
    return ta_bytes_append_json(out, j, SIZE_MAX, "data: ", "\n\n");
}

/* completion so far: exact once message_delta said it, else at least what
 * was passed on */
static void update_completion(ta_anth_stream_t *s)
{
    s->usage.completion_tokens = s->final_usage || s->output_reported >= s->content_events ? s->output_reported
                                                                                          : s->content_events;
}

static int on_message_start(ta_anth_stream_t *s, json_t *ev, ta_bytes_t *out)
{
    json_t *msg = json_object_get(ev, "message");
    const char *id = json_string_value(json_object_get(msg, "id"));
    const char *model = json_string_value(json_object_get(msg, "model"));
    if (id != NULL)
        copy_utf8(s->id, sizeof(s->id), id);
    if (model != NULL)
        copy_utf8(s->model, sizeof(s->model), model);
    ta_anth_usage(json_object_get(msg, "usage"), &s->usage);
    s->usage.present = true; /* a message started: from here on the provider charges */
    s->output_reported = s->usage.completion_tokens;
    update_completion(s);
    s->started = true;
    return emit_chunk(s, out, json_pack("{s:s,s:s}", "role", "assistant", "content", ""), NULL);
}

static int on_block_start(ta_anth_stream_t *s, json_t *ev, ta_bytes_t *out)
{
    json_t *b = json_object_get(ev, "content_block");
    const char *type = json_string_value(json_object_get(b, "type"));
    json_t *idx = json_object_get(ev, "index");
    s->block_index = json_is_integer(idx) ? (int)json_integer_value(idx) : -1;
    s->block_is_tool = type != NULL && strcmp(type, "tool_use") == 0;
    s->block_is_json = s->block_is_tool && is_json_tool(json_object_get(b, "name"));
    if (s->block_is_json) {
        s->block_is_tool = false; /* response_format's forced tool: its input is the content */
        s->json_answer = true;
        return 0;
    }
    if (s->block_is_tool) {
        s->tool_index = s->ntools++;
        const char *id = json_string_value(json_object_get(b, "id"));
        const char *name = json_string_value(json_object_get(b, "name"));
        json_t *d = json_pack("{s:[{s:i,s:s,s:s,s:{s:s,s:s}}]}", "tool_calls", "index", s->tool_index, "id",
                              id != NULL ? id : "", "type", "function", "function", "name", name != NULL ? name : "",
                              "arguments", "");
        return emit_chunk(s, out, d, NULL);
    }
    if (type != NULL && strcmp(type, "text") == 0) {
        /* a text block may start with text already in it */
        json_t *t = json_object_get(b, "text");
        if (json_is_string(t) && json_string_length(t) > 0) {
            s->content_events++;
            update_completion(s);
            return emit_chunk(s, out, json_pack("{s:O}", "content", t), NULL);
        }
    }
    return 0;
}

static int on_block_delta(ta_anth_stream_t *s, json_t *ev, ta_bytes_t *out)
{
    json_t *d = json_object_get(ev, "delta");
    const char *type = json_string_value(json_object_get(d, "type"));
    if (type == NULL)
        return 0;
    if (strcmp(type, "text_delta") == 0) {
        json_t *t = json_object_get(d, "text");
        if (!json_is_string(t) || json_string_length(t) == 0)
            return 0;
        s->content_events++;
        update_completion(s);
        return emit_chunk(s, out, json_pack("{s:O}", "content", t), NULL);
    }
    if (strcmp(type, "input_json_delta") == 0) {
        json_t *pj = json_object_get(d, "partial_json");
        if (json_is_string(pj) && json_string_length(pj) > 0 && s->block_is_json) {
            s->content_events++;
            update_completion(s);
            return emit_chunk(s, out, json_pack("{s:O}", "content", pj), NULL);
        }
        if (!json_is_string(pj) || json_string_length(pj) == 0 || !s->block_is_tool)
            return 0;
        s->content_events++;
        update_completion(s);
        return emit_chunk(s, out, json_pack("{s:[{s:i,s:{s:O}}]}", "tool_calls", "index", s->tool_index, "function",
                                            "arguments", pj),
                          NULL);
    }
    return 0; /* thinking, signature, citations: no OpenAI counterpart */
}

static int on_message_delta(ta_anth_stream_t *s, json_t *ev, ta_bytes_t *out)
{
    json_t *u = json_object_get(ev, "usage");
    if (json_is_object(u)) {
        /* output_tokens is cumulative; newer API versions repeat the input
         * counts here too (cumulative as well): take them when given */
        s->output_reported = count_of(u, "output_tokens");
        s->final_usage = true;
        if (json_object_get(u, "input_tokens") != NULL || json_object_get(u, "cache_read_input_tokens") != NULL ||
            json_object_get(u, "cache_creation_input_tokens") != NULL) {
            ta_usage_t nu;
            ta_anth_usage(u, &nu);
            if (nu.prompt_tokens >= s->usage.prompt_tokens) {
                s->usage.prompt_tokens = nu.prompt_tokens;
                s->usage.cached_tokens = nu.cached_tokens;
                s->usage.cache_write_tokens = nu.cache_write_tokens;
            }
        }
        s->usage.present = true;
        update_completion(s);
    }
    const char *sr = json_string_value(json_object_get(json_object_get(ev, "delta"), "stop_reason"));
    if (sr == NULL)
        return 0;
    const char *fr = ta_anth_finish_reason(sr);
    if (s->json_answer && s->ntools == 0 && strcmp(fr, "tool_calls") == 0)
        fr = "stop";
    return emit_chunk(s, out, json_object(), fr);
}

static int on_message_stop(ta_anth_stream_t *s, ta_bytes_t *out)
{
    int rc = 0;
    if (s->keep_usage)
        rc = emit_chunk(s, out, NULL, NULL);
    if (rc == 0)
        rc = ta_bytes_append(out, "data: [DONE]\n\n", 14, SIZE_MAX);
    s->done = true;
    return rc;
}

static int on_error(ta_anth_stream_t *s, json_t *ev, ta_bytes_t *out)
{
    /* the same translation as an error answer; overloaded reads as 529 */
    json_t *e = json_object_get(ev, "error");
    const char *atype = json_string_value(json_object_get(e, "type"));
    bool overloaded = atype != NULL && strcmp(atype, "overloaded_error") == 0;
    char *b = json_dumps(ev, JSON_COMPACT);
    if (b == NULL)
        return -ENOMEM;
    ta_bytes_t oe = {0};
    bool limited = atype != NULL && strcmp(atype, "rate_limit_error") == 0;
    int rc = ta_anth_error(overloaded ? 529 : limited ? 429 : 500, b, strlen(b), &oe);
    free(b);
    if (rc == 0)
        rc = ta_bytes_append(out, "data: ", 6, SIZE_MAX);
    if (rc == 0)
        rc = ta_bytes_append(out, oe.p, oe.len, SIZE_MAX);
    if (rc == 0)
        rc = ta_bytes_append(out, "\n\n", 2, SIZE_MAX);
    ta_bytes_free(&oe);
    s->failed = true;
    s->failed_rate_limit = atype != NULL && strcmp(atype, "rate_limit_error") == 0;
    return rc;
}

/* One complete event ev[0..n): its data lines joined, parsed, dispatched on
 * the data's "type" (the event: line says the same; Anthropic always sends
 * both). */
static int handle_event(ta_anth_stream_t *s, const char *ev, size_t n, ta_bytes_t *out)
{
    ta_bytes_t data = {0};
    char evname[32] = "";
    int rc = 0;
    for (const char *line = ev, *end = ev + n; line < end && rc == 0;) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        const char *le = nl != NULL ? nl : end;
        size_t ll = (size_t)(le - line);
        if (ll > 0 && line[ll - 1] == '\r')
            ll--;
        if (ll >= 5 && memcmp(line, "data:", 5) == 0) {
            const char *d = line + 5;
            size_t dl = ll - 5;
            if (dl > 0 && *d == ' ') {
                d++;
                dl--;
            }
            if (data.len > 0)
                rc = ta_bytes_append(&data, "\n", 1, SIZE_MAX);
            if (rc == 0)
                rc = ta_bytes_append(&data, d, dl, SIZE_MAX);
        } else if (ll >= 6 && memcmp(line, "event:", 6) == 0) {
            const char *d = line + 6;
            size_t dl = ll - 6;
            while (dl > 0 && *d == ' ') {
                d++;
                dl--;
            }
            snprintf(evname, sizeof(evname), "%.*s", (int)(dl < sizeof(evname) ? dl : sizeof(evname) - 1), d);
        }
        line = nl != NULL ? nl + 1 : end;
    }
    if (rc != 0 || data.len == 0) {
        ta_bytes_free(&data);
        return rc; /* a blank line, a comment or an event without data */
    }
    s->events++;
    json_t *j = json_loadb(data.p, data.len, 0, NULL);
    ta_bytes_free(&data);
    if (!json_is_object(j)) {
        json_decref(j);
        return TA_EINVAL;
    }
    const char *type = json_string_value(json_object_get(j, "type"));
    if (type == NULL)
        type = evname;
    if (s->done)
        rc = 0; /* nothing counts after message_stop */
    else if (strcmp(type, "message_start") == 0)
        rc = on_message_start(s, j, out);
    else if (strcmp(type, "content_block_start") == 0)
        rc = on_block_start(s, j, out);
    else if (strcmp(type, "content_block_delta") == 0)
        rc = on_block_delta(s, j, out);
    else if (strcmp(type, "content_block_stop") == 0) {
        s->block_index = -1;
        s->block_is_tool = false;
        s->block_is_json = false;
    } else if (strcmp(type, "message_delta") == 0)
        rc = on_message_delta(s, j, out);
    else if (strcmp(type, "message_stop") == 0)
        rc = on_message_stop(s, out);
    else if (strcmp(type, "error") == 0)
        rc = on_error(s, j, out);
    /* ping and unknown events: nothing to pass on */
    json_decref(j);
    return rc;
}

static int anth_event(void *arg, char *ev, size_t len, ta_bytes_t *out)
{
    return handle_event(arg, ev, len, out);
}

int ta_anth_stream_feed(ta_anth_stream_t *s, const char *p, size_t n, ta_bytes_t *out)
{
    return ta_sse_framer_feed(&s->fr, p, n, anth_event, s, out);
}
