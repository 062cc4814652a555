/*
 * responses.c - see responses.h. Requests and answers are jansson trees
 * (small, already parsed). The pass-through stream is copied as it came and
 * parsed only where an event may end the stream (a cheap substring test
 * first); the translating stream parses each chunk.
 */
#include "worker/responses.h"

#include "worker/anthropic.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- checks ---------------------------------------------------------------------- */

static bool is_null(const json_t *v) { return v == NULL || json_is_null(v); }

/* members that must have one JSON type (or be null) */
static int typed(const json_t *b, ta_err_t *err)
{
    static const struct {
        const char *name;
        enum { T_STR, T_BOOL, T_NUM, T_OBJ } t;
    } m[] = {
        {"instructions", T_STR}, {"previous_response_id", T_STR}, {"user", T_STR}, {"safety_identifier", T_STR},
        {"stream", T_BOOL},      {"store", T_BOOL},               {"background", T_BOOL},
        {"parallel_tool_calls", T_BOOL}, {"temperature", T_NUM},  {"top_p", T_NUM},
        {"text", T_OBJ},         {"reasoning", T_OBJ},            {"metadata", T_OBJ}, {"stream_options", T_OBJ},
    };
    static const char *const names[] = {"a string", "a boolean", "a number", "an object"};
    for (size_t i = 0; i < TA_ARRAY_SIZE(m); i++) {
        const json_t *v = json_object_get(b, m[i].name);
        if (is_null(v))
            continue;
        bool ok = m[i].t == T_STR ? json_is_string(v) : m[i].t == T_BOOL ? json_is_boolean(v)
                  : m[i].t == T_NUM ? json_is_number(v) : json_is_object(v);
        if (!ok)
            return ta_err_set(err, m[i].name, "type", "%s: must be %s", m[i].name, names[m[i].t]);
    }
    return 0;
}

static int check_input(const json_t *in, ta_err_t *err)
{
    if (json_is_string(in))
        return 0;
    if (!json_is_array(in))
        return ta_err_set(err, "input", "type", "input: must be a string or an array of input items");
    size_t i;
    json_t *it;
    char f[48];
    json_array_foreach(in, i, it) {
        snprintf(f, sizeof(f), "input[%zu]", i);
        if (!json_is_object(it))
            return ta_err_set(err, f, "type", "%s: an input item must be an object", f);
        const json_t *role = json_object_get(it, "role"), *type = json_object_get(it, "type");
        if (!is_null(type) && !json_is_string(type)) {
            snprintf(f, sizeof(f), "input[%zu].type", i);
            return ta_err_set(err, f, "type", "%s: must be a string", f);
        }
        const char *ts = json_string_value(type);
        if (role == NULL && ts == NULL)
            return ta_err_set(err, f, "required", "%s: an input item needs a 'role' or a 'type'", f);
        if (role == NULL && strcmp(ts, "message") == 0) {
            snprintf(f, sizeof(f), "input[%zu].role", i);
            return ta_err_set(err, f, "required", "%s: a message item needs a role", f);
        }
        if (role != NULL) {
            const char *r = json_string_value(role);
            if (r == NULL || (strcmp(r, "user") != 0 && strcmp(r, "assistant") != 0 && strcmp(r, "system") != 0 &&
                              strcmp(r, "developer") != 0)) {
                snprintf(f, sizeof(f), "input[%zu].role", i);
                return ta_err_set(err, f, "enum", "%s: must be user, assistant, system or developer", f);
            }
            const json_t *c = json_object_get(it, "content");
            if (!json_is_string(c) && !json_is_array(c)) {
                snprintf(f, sizeof(f), "input[%zu].content", i);
                return ta_err_set(err, f, "type", "%s: must be a string or an array of content parts", f);
            }
        }
    }
    return 0;
}

static int check_tools(const json_t *b, ta_err_t *err)
{
    const json_t *tools = json_object_get(b, "tools");
    char f[48];
    if (!is_null(tools)) {
        if (!json_is_array(tools))
            return ta_err_set(err, "tools", "type", "tools: must be an array");
        size_t i;
        json_t *t;
        json_array_foreach(tools, i, t) {
            const char *type = json_string_value(json_object_get(t, "type"));
            snprintf(f, sizeof(f), "tools[%zu]", i);
            if (type == NULL)
                return ta_err_set(err, f, "required", "%s: a tool must be an object with a 'type'", f);
            if (strcmp(type, "function") == 0 && !json_is_string(json_object_get(t, "name"))) {
                snprintf(f, sizeof(f), "tools[%zu].name", i);
                return ta_err_set(err, f, "required", "%s: a function tool needs a string name", f);
            }
        }
    }
    const json_t *tc = json_object_get(b, "tool_choice");
    const char *s = json_string_value(tc);
    if (!is_null(tc) && !json_is_string(tc) && !json_is_object(tc))
        return ta_err_set(err, "tool_choice", "type", "tool_choice: must be a string or an object");
    if (s != NULL && strcmp(s, "none") != 0 && strcmp(s, "auto") != 0 && strcmp(s, "required") != 0)
        return ta_err_set(err, "tool_choice", "enum", "tool_choice: must be none, auto, required or an object");
    if (json_is_object(tc) && !json_is_string(json_object_get(tc, "type")))
        return ta_err_set(err, "tool_choice", "required", "tool_choice: an object needs a 'type'");
    return 0;
}

static int check_text(const json_t *b, ta_err_t *err)
{
    const json_t *fmt = json_object_get(json_object_get(b, "text"), "format");
    if (is_null(fmt))
        return 0;
    const char *type = json_string_value(json_object_get(fmt, "type"));
    if (!json_is_object(fmt) || type == NULL)
        return ta_err_set(err, "text.format", "type", "text.format: must be an object with a 'type'");
    if (strcmp(type, "json_schema") == 0) {
        if (!json_is_string(json_object_get(fmt, "name")))
            return ta_err_set(err, "text.format.name", "required", "text.format.name: is required for json_schema");
        if (!json_is_object(json_object_get(fmt, "schema")))
            return ta_err_set(err, "text.format.schema", "required",
                              "text.format.schema: is required for json_schema (an object)");
    } else if (strcmp(type, "text") != 0 && strcmp(type, "json_object") != 0) {
        return ta_err_set(err, "text.format.type", "enum",
                          "text.format.type: must be text, json_object or json_schema");
    }
    return 0;
}

int ta_resp_validate(const json_t *b, ta_err_t *err)
{
    if (!json_is_object(b))
        return ta_err_set(err, "", "type", "the request body must be a JSON object");
    const json_t *v = json_object_get(b, "model");
    if (!json_is_string(v) || json_string_length(v) == 0)
        return ta_err_set(err, "model", "required", "model: is required (a non-empty string)");
    v = json_object_get(b, "input");
    if (v == NULL && is_null(json_object_get(b, "prompt")))
        return ta_err_set(err, "input", "required", "input: is required (a string or an array of input items)");
    int rc;
    if (v != NULL && (rc = check_input(v, err)) != 0)
        return rc;
    v = json_object_get(b, "max_output_tokens");
    if (!is_null(v) && (!json_is_integer(v) || json_integer_value(v) < 1))
        return ta_err_set(err, "max_output_tokens", "type", "max_output_tokens: must be a positive integer");
    if ((rc = typed(b, err)) != 0 || (rc = check_tools(b, err)) != 0 || (rc = check_text(b, err)) != 0)
        return rc;
    return 0;
}

static bool has_item_reference(const json_t *in)
{
    size_t i;
    json_t *it;
    json_array_foreach(in, i, it) {
        const char *t = json_string_value(json_object_get(it, "type"));
        if (t != NULL && strcmp(t, "item_reference") == 0)
            return true;
    }
    return false;
}

bool ta_resp_stateful(const json_t *b)
{
    return !is_null(json_object_get(b, "previous_response_id")) || !is_null(json_object_get(b, "conversation")) ||
           !is_null(json_object_get(b, "prompt")) || has_item_reference(json_object_get(b, "input"));
}

/* ---- request: Responses -> chat --------------------------------------------------- */

#define ANTH_ONLY "this model's provider (an Anthropic-type provider)"

/* The parameters a chat request cannot carry: refused unless neutral. */
static int uncarried(const json_t *r, ta_err_t *err)
{
    static const char *const stateful[] = {"previous_response_id", "conversation", "prompt"};
    for (size_t i = 0; i < TA_ARRAY_SIZE(stateful); i++)
        if (!is_null(json_object_get(r, stateful[i])))
            return ta_err_set(err, stateful[i], "unsupported",
                              "%s: needs state kept by the provider; " ANTH_ONLY " keeps none: send the whole "
                              "conversation in 'input'", stateful[i]);
    if (json_is_true(json_object_get(r, "store")))
        return ta_err_set(err, "store", "unsupported", "store: " ANTH_ONLY " does not store responses; send "
                          "store: false or leave it out");
    if (json_is_true(json_object_get(r, "background")))
        return ta_err_set(err, "background", "unsupported", "background: " ANTH_ONLY " cannot run a response in the "
                          "background");
    static const struct {
        const char *name;
        enum { NONE, EMPTY, ZERO, DISABLED, TIER, VALUES } neutral;
    } params[] = {
        {"include", EMPTY},          {"reasoning", VALUES},          {"metadata", EMPTY},
        {"top_logprobs", ZERO},      {"truncation", DISABLED},       {"service_tier", TIER},
        {"max_tool_calls", NONE},    {"prompt_cache_key", NONE},     {"prompt_cache_retention", NONE},
        {"prompt_cache_options", NONE}, {"context_management", NONE}, {"moderation", NONE},
    };
    for (size_t i = 0; i < TA_ARRAY_SIZE(params); i++) {
        const json_t *v = json_object_get(r, params[i].name);
        if (is_null(v))
            continue;
        bool ok = false;
        const char *s = json_string_value(v);
        switch (params[i].neutral) {
        case NONE: break;
        case EMPTY:
            ok = (json_is_array(v) && json_array_size(v) == 0) || (json_is_object(v) && json_object_size(v) == 0);
            break;
        case ZERO: ok = json_is_number(v) && json_number_value(v) == 0; break;
        case DISABLED: ok = s != NULL && strcmp(s, "disabled") == 0; break;
        case TIER: ok = s != NULL && (strcmp(s, "auto") == 0 || strcmp(s, "default") == 0); break;
        case VALUES: {
            const char *k;
            json_t *x;
            ok = json_is_object(v);
            json_object_foreach((json_t *)v, k, x) ok = ok && json_is_null(x);
            break;
        }
        }
        if (!ok)
            return ta_err_set(err, params[i].name, "unsupported", "%s: is not supported by " ANTH_ONLY,
                              params[i].name);
    }
    if (!is_null(json_object_get(json_object_get(r, "text"), "verbosity")))
        return ta_err_set(err, "text.verbosity", "unsupported", "text.verbosity: is not supported by " ANTH_ONLY);
    /* everything else the translation reads; anything unknown is refused */
    static const char *const known[] = {
        "model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "tools", "tool_choice",
        "parallel_tool_calls", "text", "user", "safety_identifier", "stream", "stream_options", "store", "background",
        "previous_response_id", "conversation", "prompt", "include", "reasoning", "metadata", "top_logprobs",
        "truncation", "service_tier", "max_tool_calls", "prompt_cache_key", "prompt_cache_retention",
        "prompt_cache_options", "context_management", "moderation"};
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)r, k, x) {
        size_t i = 0;
        while (i < TA_ARRAY_SIZE(known) && strcmp(known[i], k) != 0)
            i++;
        if (i == TA_ARRAY_SIZE(known)) {
            /* the name, at most 48 bytes cut on a character boundary; "" named as such */
            size_t n = strlen(k);
            if (n > 48)
                for (n = 48; n > 0 && ((unsigned char)k[n] & 0xC0) == 0x80; n--)
                    ;
            char f[sizeof(err->field)];
            if (n > 0)
                snprintf(f, sizeof(f), "%.*s", (int)n, k);
            else
                snprintf(f, sizeof(f), "\"\"");
            return ta_err_set(err, f, "unknown",
                              "%s: is not a Responses parameter this gateway can carry to " ANTH_ONLY, f);
        }
    }
    return 0;
}

/* One content part of a message item as a chat part, appended to parts. */
static int part_to_chat(json_t *parts, const json_t *p, const char *role, const char *f, ta_err_t *err)
{
    const char *type = json_string_value(json_object_get(p, "type"));
    bool assistant = strcmp(role, "assistant") == 0, user = strcmp(role, "user") == 0;
    if (type == NULL)
        return ta_err_set(err, f, "required", "%s: a content part needs a 'type'", f);
    if ((strcmp(type, "input_text") == 0 && !assistant) || (strcmp(type, "output_text") == 0 && assistant)) {
        const json_t *t = json_object_get(p, "text");
        if (!json_is_string(t))
            return ta_err_set(err, f, "required", "%s: a %s part needs a string 'text'", f, type);
        return json_array_append_new(parts, json_pack("{s:s,s:O}", "type", "text", "text", t)) == 0 ? 0 : -ENOMEM;
    }
    if (strcmp(type, "refusal") == 0 && assistant) {
        const json_t *t = json_object_get(p, "refusal");
        if (!json_is_string(t))
            return ta_err_set(err, f, "required", "%s: a refusal part needs a string 'refusal'", f);
        return json_array_append_new(parts, json_pack("{s:s,s:O}", "type", "refusal", "refusal", t)) == 0 ? 0 : -ENOMEM;
    }
    if (strcmp(type, "input_image") == 0 && user) {
        const json_t *url = json_object_get(p, "image_url");
        if (!json_is_string(url))
            return ta_err_set(err, f, "unsupported", "%s: an image needs an 'image_url' (file_id images cannot be "
                              "carried to this model's provider)", f);
        json_t *iu = json_pack("{s:O}", "url", url);
        const json_t *detail = json_object_get(p, "detail");
        if (json_is_string(detail) && iu != NULL)
            json_object_set(iu, "detail", (json_t *)detail);
        json_t *cp = json_pack("{s:s,s:o}", "type", "image_url", "image_url", iu);
        return cp != NULL && json_array_append_new(parts, cp) == 0 ? 0 : -ENOMEM;
    }
    return ta_err_set(err, f, "unsupported", "%s: content parts of type '%.32s' in a %s message cannot be carried to "
                      "this model's provider", f, type, role);
}

/* The chat message of a message item (role and content). */
static int message_to_chat(json_t *msgs, const json_t *it, size_t i, ta_err_t *err)
{
    const char *role = json_string_value(json_object_get(it, "role"));
    const json_t *content = json_object_get(it, "content");
    char f[64];
    if (json_is_string(content))
        return json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", role, "content", content)) == 0 ? 0
                                                                                                          : -ENOMEM;
    json_t *parts = json_array();
    if (parts == NULL)
        return -ENOMEM;
    size_t k;
    json_t *p;
    int rc = 0;
    json_array_foreach(content, k, p) {
        snprintf(f, sizeof(f), "input[%zu].content[%zu]", i, k);
        if ((rc = part_to_chat(parts, p, role, f, err)) != 0)
            break;
    }
    if (rc == 0)
        rc = json_array_append_new(msgs, json_pack("{s:s,s:o}", "role", role, "content", parts)) == 0 ? 0 : -ENOMEM;
    else
        json_decref(parts);
    return rc;
}

/* A function_call item joins the previous assistant message's tool_calls
 * (or starts an assistant message): chat wants the calls of one turn
 * together. */
static int call_to_chat(json_t *msgs, const json_t *it, size_t i, bool *joined, ta_err_t *err)
{
    const char *call_id = json_string_value(json_object_get(it, "call_id"));
    const char *name = json_string_value(json_object_get(it, "name"));
    const json_t *args = json_object_get(it, "arguments");
    char f[48];
    snprintf(f, sizeof(f), "input[%zu]", i);
    if (call_id == NULL || name == NULL || !json_is_string(args))
        return ta_err_set(err, f, "required", "%s: a function_call needs string call_id, name and arguments", f);
    if (json_string_length(args) > 0) {
        json_t *o = json_loadb(json_string_value(args), json_string_length(args), 0, NULL);
        bool obj = json_is_object(o);
        json_decref(o);
        if (!obj) {
            snprintf(f, sizeof(f), "input[%zu].arguments", i);
            return ta_err_set(err, f, "format", "%s: must be a JSON object in a string for this model's provider", f);
        }
    }
    json_t *tc = json_pack("{s:s,s:s,s:{s:s,s:O}}", "id", call_id, "type", "function", "function", "name", name,
                           "arguments", args);
    if (tc == NULL)
        return -ENOMEM;
    size_t n = json_array_size(msgs);
    json_t *last = n > 0 ? json_array_get(msgs, n - 1) : NULL;
    const char *lr = json_string_value(json_object_get(last, "role"));
    if (lr != NULL && strcmp(lr, "assistant") == 0) {
        json_t *calls = json_object_get(last, "tool_calls");
        if (calls == NULL) {
            calls = json_array();
            json_object_set_new(last, "tool_calls", calls);
        }
        *joined = true;
        return json_array_append_new(calls, tc) == 0 ? 0 : -ENOMEM;
    }
    *joined = false;
    json_t *m = json_pack("{s:s,s:n,s:[o]}", "role", "assistant", "content", "tool_calls", tc);
    return m != NULL && json_array_append_new(msgs, m) == 0 ? 0 : -ENOMEM;
}

static int output_to_chat(json_t *msgs, const json_t *it, size_t i, ta_err_t *err)
{
    const char *call_id = json_string_value(json_object_get(it, "call_id"));
    const json_t *out = json_object_get(it, "output");
    char f[64];
    snprintf(f, sizeof(f), "input[%zu]", i);
    if (call_id == NULL)
        return ta_err_set(err, f, "required", "%s: a function_call_output needs a string call_id", f);
    json_t *content;
    if (json_is_string(out)) {
        content = json_incref((json_t *)out);
    } else if (json_is_array(out)) {
        content = json_array();
        size_t k;
        json_t *p;
        json_array_foreach(out, k, p) {
            const char *t = json_string_value(json_object_get(p, "type"));
            if (t == NULL || strcmp(t, "input_text") != 0 || !json_is_string(json_object_get(p, "text"))) {
                json_decref(content);
                snprintf(f, sizeof(f), "input[%zu].output[%zu]", i, k);
                return ta_err_set(err, f, "unsupported", "%s: only input_text parts can be carried in a function "
                                  "output to this model's provider", f);
            }
            json_array_append_new(content, json_pack("{s:s,s:O}", "type", "text", "text", json_object_get(p, "text")));
        }
    } else {
        snprintf(f, sizeof(f), "input[%zu].output", i);
        return ta_err_set(err, f, "type", "%s: must be a string or an array of input_text parts", f);
    }
    json_t *m = json_pack("{s:s,s:s,s:o}", "role", "tool", "tool_call_id", call_id, "content", content);
    return m != NULL && json_array_append_new(msgs, m) == 0 ? 0 : -ENOMEM;
}

/* input -> chat messages; map[k] = the input item of chat message k (-1:
 * instructions), so the Messages translator's refusals can name the item. */
static int input_to_chat(json_t *msgs, const json_t *r, int *map, size_t cap, ta_err_t *err)
{
    const json_t *ins = json_object_get(r, "instructions");
    if (json_is_string(ins) && json_string_length(ins) > 0) {
        if (json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "system", "content", ins)) != 0)
            return -ENOMEM;
        if (cap > 0)
            map[0] = -1;
    }
    const json_t *in = json_object_get(r, "input");
    if (json_is_string(in))
        return json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "user", "content", in)) == 0 ? 0 : -ENOMEM;
    size_t i;
    json_t *it;
    json_array_foreach(in, i, it) {
        const char *type = json_string_value(json_object_get(it, "type"));
        char f[48];
        int rc;
        bool joined = false;
        if (json_object_get(it, "role") != NULL && (type == NULL || strcmp(type, "message") == 0)) {
            rc = message_to_chat(msgs, it, i, err);
        } else if (type != NULL && strcmp(type, "function_call") == 0) {
            rc = call_to_chat(msgs, it, i, &joined, err);
        } else if (type != NULL && strcmp(type, "function_call_output") == 0) {
            rc = output_to_chat(msgs, it, i, err);
        } else {
            snprintf(f, sizeof(f), "input[%zu].type", i);
            rc = type != NULL && strcmp(type, "item_reference") == 0
                     ? ta_err_set(err, f, "unsupported", "%s: item references need state kept by the provider; "
                                  ANTH_ONLY " keeps none", f)
                     : ta_err_set(err, f, "unsupported", "%s: input items of type '%.32s' cannot be carried to "
                                  ANTH_ONLY, f, type != NULL ? type : "");
        }
        if (rc != 0)
            return rc;
        size_t k = json_array_size(msgs) - 1;
        if (!joined && k < cap)
            map[k] = (int)i;
    }
    return 0;
}

static int tools_to_chat(json_t *o, const json_t *r, ta_err_t *err)
{
    const json_t *tools = json_object_get(r, "tools");
    char f[48];
    if (json_array_size(tools) > 0) {
        json_t *ct = json_array();
        if (ct == NULL)
            return -ENOMEM;
        json_object_set_new(o, "tools", ct);
        size_t i;
        json_t *t;
        json_array_foreach(tools, i, t) {
            const char *type = json_string_value(json_object_get(t, "type"));
            if (type == NULL || strcmp(type, "function") != 0) {
                snprintf(f, sizeof(f), "tools[%zu].type", i);
                return ta_err_set(err, f, "unsupported", "%s: only function tools can be carried to " ANTH_ONLY
                                  " (not '%.32s')", f, type != NULL ? type : "");
            }
            json_t *fn = json_pack("{s:O}", "name", json_object_get(t, "name"));
            static const char *const copy[] = {"description", "parameters", "strict"};
            for (size_t k = 0; fn != NULL && k < TA_ARRAY_SIZE(copy); k++)
                if (!is_null(json_object_get(t, copy[k])))
                    json_object_set(fn, copy[k], json_object_get(t, copy[k]));
            json_t *tool = fn != NULL ? json_pack("{s:s,s:o}", "type", "function", "function", fn) : NULL;
            if (tool == NULL || json_array_append_new(ct, tool) != 0)
                return -ENOMEM;
        }
    }
    const json_t *tc = json_object_get(r, "tool_choice");
    if (json_is_string(tc)) {
        json_object_set(o, "tool_choice", (json_t *)tc);
    } else if (json_is_object(tc)) {
        const char *type = json_string_value(json_object_get(tc, "type"));
        const char *name = json_string_value(json_object_get(tc, "name"));
        if (type == NULL || strcmp(type, "function") != 0 || name == NULL)
            return ta_err_set(err, "tool_choice", "unsupported", "tool_choice: only none, auto, required or "
                              "{\"type\": \"function\", \"name\": ...} can be carried to " ANTH_ONLY);
        json_object_set_new(o, "tool_choice", json_pack("{s:s,s:{s:s}}", "type", "function", "function", "name", name));
    }
    if (json_is_boolean(json_object_get(r, "parallel_tool_calls")))
        json_object_set(o, "parallel_tool_calls", json_object_get(r, "parallel_tool_calls"));
    return 0;
}

static void text_to_chat(json_t *o, const json_t *r)
{
    const json_t *fmt = json_object_get(json_object_get(r, "text"), "format");
    const char *type = json_string_value(json_object_get(fmt, "type"));
    if (type == NULL || strcmp(type, "text") == 0)
        return;
    if (strcmp(type, "json_object") == 0) {
        json_object_set_new(o, "response_format", json_pack("{s:s}", "type", "json_object"));
        return;
    }
    json_t *js = json_pack("{s:O,s:O}", "name", json_object_get(fmt, "name"), "schema", json_object_get(fmt, "schema"));
    static const char *const copy[] = {"description", "strict"};
    for (size_t k = 0; js != NULL && k < TA_ARRAY_SIZE(copy); k++)
        if (!is_null(json_object_get(fmt, copy[k])))
            json_object_set(js, copy[k], json_object_get(fmt, copy[k]));
    json_object_set_new(o, "response_format", json_pack("{s:s,s:o}", "type", "json_schema", "json_schema", js));
}

static int to_chat(const json_t *r, json_t **out, int *map, size_t cap, ta_err_t *err)
{
    *out = NULL;
    int rc = uncarried(r, err);
    if (rc != 0)
        return rc;
    json_t *o = json_pack("{s:O,s:[]}", "model", json_object_get(r, "model"), "messages");
    if (o == NULL)
        return -ENOMEM;
    if ((rc = input_to_chat(json_object_get(o, "messages"), r, map, cap, err)) != 0 ||
        (rc = tools_to_chat(o, r, err)) != 0) {
        json_decref(o);
        return rc;
    }
    text_to_chat(o, r);
    const json_t *mt = json_object_get(r, "max_output_tokens");
    if (json_is_integer(mt))
        json_object_set(o, "max_completion_tokens", (json_t *)mt);
    static const char *const nums[] = {"temperature", "top_p"};
    for (size_t k = 0; k < TA_ARRAY_SIZE(nums); k++)
        if (json_is_number(json_object_get(r, nums[k])))
            json_object_set(o, nums[k], json_object_get(r, nums[k]));
    const json_t *user = json_object_get(r, "user");
    if (!json_is_string(user))
        user = json_object_get(r, "safety_identifier");
    if (json_is_string(user))
        json_object_set(o, "user", (json_t *)user);
    if (json_is_true(json_object_get(r, "stream"))) {
        json_object_set_new(o, "stream", json_true());
        json_object_set_new(o, "stream_options", json_pack("{s:b}", "include_usage", 1));
    }
    *out = o;
    return 0;
}

int ta_resp_to_chat(const json_t *r, json_t **out, ta_err_t *err) { return to_chat(r, out, NULL, 0, err); }

/* The Messages translator names chat params: say the Responses ones. */
static void rename_err(ta_err_t *err, const int *map, size_t cap)
{
    static const struct {
        const char *from, *to;
    } prefixes[] = {
        {"response_format.json_schema.schema", "text.format.schema"},
        {"response_format.json_schema", "text.format"},
        {"response_format.type", "text.format.type"},
        {"response_format", "text.format"},
        {"max_completion_tokens", "max_output_tokens"},
    };
    char nf[sizeof(err->field)] = "";
    size_t ol = 0;
    for (size_t i = 0; i < TA_ARRAY_SIZE(prefixes) && nf[0] == '\0'; i++) {
        size_t l = strlen(prefixes[i].from);
        if (strncmp(err->field, prefixes[i].from, l) == 0 && (err->field[l] == '\0' || err->field[l] == '.')) {
            snprintf(nf, sizeof(nf), "%s%s", prefixes[i].to, err->field + l);
            ol = strlen(err->field);
        }
    }
    unsigned long k;
    int used = 0;
    if (nf[0] == '\0' && sscanf(err->field, "messages[%lu]%n", &k, &used) == 1 && used > 0) {
        if (k < cap && map[k] >= 0)
            snprintf(nf, sizeof(nf), "input[%d]%.40s", map[k], err->field + used);
        else
            snprintf(nf, sizeof(nf), "%s", k < cap && map[k] == -1 ? "instructions" : "input");
        ol = strlen(err->field);
    } else if (nf[0] == '\0' && strcmp(err->field, "messages") == 0) {
        snprintf(nf, sizeof(nf), "input");
        ol = 8;
    }
    if (nf[0] == '\0')
        return;
    char msg[sizeof(err->message)];
    if (strncmp(err->message, err->field, ol) == 0)
        snprintf(msg, sizeof(msg), "%s%s", nf, err->message + ol);
    else
        snprintf(msg, sizeof(msg), "%s", err->message);
    snprintf(err->field, sizeof(err->field), "%s", nf);
    snprintf(err->message, sizeof(err->message), "%s", msg);
}

int ta_resp_to_anth(const json_t *r, const char *model, int64_t fallback_max, json_t **out, ta_err_t *err)
{
    *out = NULL;
    size_t cap = json_array_size(json_object_get(r, "input")) + 2;
    int *map = malloc(cap * sizeof(*map));
    if (map == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < cap; i++)
        map[i] = -2;
    json_t *chat = NULL;
    int rc = to_chat(r, &chat, map, cap, err);
    if (rc == 0) {
        rc = ta_anth_request(chat, model, fallback_max, out, err);
        if (rc == TA_EINVAL)
            rename_err(err, map, cap);
    }
    json_decref(chat);
    free(map);
    return rc;
}

/* ---- answers ----------------------------------------------------------------------- */

static int64_t count_of(const json_t *o, const char *name)
{
    json_t *v = json_object_get(o, name);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (int64_t)json_integer_value(v) : 0;
}

static void usage_of(const json_t *usage, ta_usage_t *u)
{
    memset(u, 0, sizeof(*u));
    if (!json_is_object(usage))
        return;
    const json_t *d = json_object_get(usage, "input_tokens_details");
    u->present = true;
    u->prompt_tokens = count_of(usage, "input_tokens");
    u->completion_tokens = count_of(usage, "output_tokens");
    u->cached_tokens = count_of(d, "cached_tokens");
    u->cache_write_tokens = count_of(d, "cache_write_tokens");
    if (u->cached_tokens > u->prompt_tokens)
        u->cached_tokens = u->prompt_tokens;
    if (u->cache_write_tokens > u->prompt_tokens - u->cached_tokens)
        u->cache_write_tokens = u->prompt_tokens - u->cached_tokens;
}

int ta_resp_usage(const char *body, size_t len, ta_usage_t *u)
{
    memset(u, 0, sizeof(*u));
    json_t *j = json_loadb(body, len, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return TA_EINVAL;
    }
    usage_of(json_object_get(j, "usage"), u);
    json_decref(j);
    return u->present ? 0 : TA_ENOTFOUND;
}

static json_t *usage_json(const ta_usage_t *u)
{
    if (!u->present)
        return json_null();
    int64_t total = u->prompt_tokens > INT64_MAX - u->completion_tokens ? INT64_MAX
                                                                         : u->prompt_tokens + u->completion_tokens;
    return json_pack("{s:I,s:{s:I,s:I},s:I,s:{s:I},s:I}", "input_tokens", (json_int_t)u->prompt_tokens,
                     "input_tokens_details", "cached_tokens", (json_int_t)u->cached_tokens, "cache_write_tokens",
                     (json_int_t)u->cache_write_tokens, "output_tokens", (json_int_t)u->completion_tokens,
                     "output_tokens_details", "reasoning_tokens", (json_int_t)0, "total_tokens", (json_int_t)total);
}

/* The id a chat answer gave, without its own prefix, for resp_, msg_ and fc_ ids. */
static const char *id_core(const char *id)
{
    if (id == NULL || id[0] == '\0')
        return "tokenaudit";
    if (strncmp(id, "chatcmpl-", 9) == 0 && id[9] != '\0')
        return id + 9;
    if (strncmp(id, "msg_", 4) == 0 && id[4] != '\0')
        return id + 4;
    return id;
}

static json_t *prefixed(const char *prefix, const char *core)
{
    size_t n = strlen(prefix) + strlen(core) + 1;
    char *s = malloc(n);
    if (s == NULL)
        return NULL;
    snprintf(s, n, "%s%s", prefix, core);
    json_t *j = json_string(s);
    free(s);
    return j;
}

/* A Response with the request's echo, no output, status in_progress. */
static json_t *skeleton(const json_t *req, const char *core, const char *model, int64_t created)
{
    json_t *r = json_pack("{s:o,s:s,s:I,s:s,s:b,s:n,s:n,s:n,s:s,s:[],s:n,s:{s:n,s:n},s:s,s:b,s:s,s:n}", "id",
                          prefixed("resp_", core), "object", "response", "created_at", (json_int_t)created, "status",
                          "in_progress", "background", 0, "error", "incomplete_details", "max_tool_calls", "model",
                          model, "output", "previous_response_id", "reasoning", "effort", "summary", "service_tier",
                          "default", "store", 0, "truncation", "disabled", "usage");
    if (r == NULL)
        return NULL;
    static const struct {
        const char *name;
        const char *def; /* a JSON text */
    } echo[] = {
        {"instructions", "null"}, {"max_output_tokens", "null"}, {"parallel_tool_calls", "true"},
        {"temperature", "1"},     {"top_p", "1"},                {"tool_choice", "\"auto\""},
        {"tools", "[]"},          {"text", "{\"format\":{\"type\":\"text\"}}"},
        {"metadata", "{}"},       {"user", "null"},              {"top_logprobs", "0"},
    };
    for (size_t i = 0; i < TA_ARRAY_SIZE(echo); i++) {
        const json_t *v = json_object_get(req, echo[i].name);
        json_object_set_new(r, echo[i].name,
                            !is_null(v) ? json_deep_copy(v) : json_loads(echo[i].def, JSON_DECODE_ANY, NULL));
    }
    return r;
}

/* status, and incomplete_details, for a chat finish_reason */
static void set_status(json_t *resp, const char *finish)
{
    const char *reason = finish == NULL                          ? NULL
                         : strcmp(finish, "length") == 0         ? "max_output_tokens"
                         : strcmp(finish, "content_filter") == 0 ? "content_filter"
                                                                 : NULL;
    json_object_set_new(resp, "status", json_string(reason != NULL ? "incomplete" : "completed"));
    json_object_set_new(resp, "incomplete_details",
                        reason != NULL ? json_pack("{s:s}", "reason", reason) : json_null());
}

static json_t *text_part(const char *text, size_t len)
{
    return json_pack("{s:s,s:s%,s:[],s:[]}", "type", "output_text", "text", text, len, "annotations", "logprobs");
}

int ta_resp_from_chat(const json_t *req, const char *chat, size_t len, const ta_usage_t *u, ta_bytes_t *out,
                      size_t bound)
{
    json_t *c = json_loadb(chat, len, 0, NULL);
    json_t *choice = json_array_get(json_object_get(c, "choices"), 0);
    json_t *msg = json_object_get(choice, "message");
    if (!json_is_object(c) || !json_is_object(msg)) {
        json_decref(c);
        return TA_EINVAL;
    }
    const char *core = id_core(json_string_value(json_object_get(c, "id")));
    const char *model = json_string_value(json_object_get(c, "model"));
    json_t *created = json_object_get(c, "created");
    json_t *r = skeleton(req, core, model != NULL ? model : "",
                         json_is_integer(created) ? (int64_t)json_integer_value(created) : (int64_t)time(NULL));
    if (r == NULL) {
        json_decref(c);
        return -ENOMEM;
    }
    json_t *output = json_object_get(r, "output");
    const json_t *text = json_object_get(msg, "content"), *refusal = json_object_get(msg, "refusal");
    json_t *parts = json_array();
    if (json_is_string(text) && json_string_length(text) > 0)
        json_array_append_new(parts, text_part(json_string_value(text), json_string_length(text)));
    if (json_is_string(refusal) && json_string_length(refusal) > 0)
        json_array_append_new(parts, json_pack("{s:s,s:O}", "type", "refusal", "refusal", refusal));
    const json_t *calls = json_object_get(msg, "tool_calls");
    if (json_array_size(parts) == 0 && json_array_size(calls) == 0)
        json_array_append_new(parts, text_part("", 0));
    if (json_array_size(parts) > 0)
        json_array_append_new(output, json_pack("{s:o,s:s,s:s,s:s,s:o}", "id", prefixed("msg_", core), "type",
                                                "message", "status", "completed", "role", "assistant", "content",
                                                json_incref(parts)));
    json_decref(parts);
    size_t i;
    json_t *tc;
    json_array_foreach(calls, i, tc) {
        const json_t *fn = json_object_get(tc, "function");
        const char *cid = json_string_value(json_object_get(tc, "id"));
        const char *name = json_string_value(json_object_get(fn, "name"));
        const char *args = json_string_value(json_object_get(fn, "arguments"));
        json_array_append_new(output, json_pack("{s:o,s:s,s:s,s:s,s:s,s:s}", "id", prefixed("fc_", cid ? cid : ""),
                                                "type", "function_call", "status", "completed", "call_id",
                                                cid ? cid : "", "name", name ? name : "", "arguments",
                                                args ? args : "{}"));
    }
    set_status(r, json_string_value(json_object_get(choice, "finish_reason")));
    json_object_set_new(r, "usage", usage_json(u));
    json_decref(c);
    return ta_bytes_append_json(out, r, bound, "", "");
}

/* ---- the stream --------------------------------------------------------------------- */

int ta_resp_stream_init(ta_resp_stream_t *s, bool translate, const json_t *req, const char *model, size_t max_event,
                        size_t bound)
{
    memset(s, 0, sizeof(*s));
    s->translate = translate;
    s->bound = bound ? bound : SIZE_MAX;
    s->tool_oai = -1;
    ta_sse_framer_init(&s->fr, max_event);
    if (translate && (s->resp = skeleton(req, "tokenaudit", model != NULL ? model : "", (int64_t)time(NULL))) == NULL)
        return -ENOMEM;
    return 0;
}

void ta_resp_stream_dispose(ta_resp_stream_t *s)
{
    ta_sse_framer_dispose(&s->fr);
    ta_bytes_free(&s->text);
    json_decref(s->resp);
    json_decref(s->item);
    s->resp = s->item = NULL;
}

/* ---- pass-through -------------------------------------------------------------------- */

static bool has(const char *d, size_t n, const char *s) { return memmem(d, n, s, strlen(s)) != NULL; }

static void passthrough_terminal(ta_resp_stream_t *s, const char *data, size_t dl)
{
    json_t *j = json_loadb(data, dl, 0, NULL);
    const char *type = json_string_value(json_object_get(j, "type"));
    if (type == NULL) {
        json_decref(j);
        return;
    }
    bool completed = strcmp(type, "response.completed") == 0 || strcmp(type, "response.incomplete") == 0;
    bool failed = strcmp(type, "response.failed") == 0;
    if (completed || failed) {
        const json_t *resp = json_object_get(j, "response");
        ta_usage_t u;
        usage_of(json_object_get(resp, "usage"), &u);
        if (u.present)
            s->usage = u;
        s->done = true;
        if (failed) {
            const char *code = json_string_value(json_object_get(json_object_get(resp, "error"), "code"));
            s->failed = true;
            s->failed_rate_limit = code != NULL && strstr(code, "rate_limit") != NULL;
        }
    } else if (strcmp(type, "error") == 0) {
        const json_t *e = json_object_get(j, "error");
        const char *code = json_string_value(json_object_get(json_is_object(e) ? e : j, "code"));
        const char *et = json_string_value(json_object_get(e, "type"));
        s->failed = true;
        s->failed_rate_limit = (code != NULL && strstr(code, "rate_limit") != NULL) ||
                               (et != NULL && strstr(et, "rate_limit") != NULL);
    }
    json_decref(j);
}

static int passthrough_event(ta_resp_stream_t *s, char *ev, size_t n, ta_bytes_t *out)
{
    const char *data;
    size_t dl;
    if (ta_sse_event_data(ev, n, &data, &dl)) {
        s->events++;
        if (has(data, dl, "\"response.output_text.delta\"") ||
            has(data, dl, "\"response.function_call_arguments.delta\"") || has(data, dl, "\"response.refusal.delta\""))
            s->content_events++;
        else if (has(data, dl, "\"response.completed\"") || has(data, dl, "\"response.incomplete\"") ||
                 has(data, dl, "\"response.failed\"") || has(data, dl, "\"error\""))
            passthrough_terminal(s, data, dl);
    }
    return ta_bytes_append(out, ev, n, SIZE_MAX);
}

/* ---- translating ------------------------------------------------------------------------- */

/* event: <type>, data: j with type and sequence_number added (j stolen) */
static int emit(ta_resp_stream_t *s, ta_bytes_t *out, const char *type, json_t *j)
{
    if (j == NULL)
        return -ENOMEM;
    json_object_set_new(j, "type", json_string(type));
    json_object_set_new(j, "sequence_number", json_integer(s->seq++));
    char pre[64];
    snprintf(pre, sizeof(pre), "event: %s\ndata: ", type);
    return ta_bytes_append_json(out, j, SIZE_MAX, pre, "\n\n");
}

static const ta_usage_t *reported(const ta_resp_stream_t *s)
{
    return s->usage_from != NULL ? s->usage_from : &s->usage;
}

static int start(ta_resp_stream_t *s, ta_bytes_t *out)
{
    s->started = true;
    int rc = emit(s, out, "response.created", json_pack("{s:O}", "response", s->resp));
    if (rc == 0)
        rc = emit(s, out, "response.in_progress", json_pack("{s:O}", "response", s->resp));
    return rc;
}

static int output_index(const ta_resp_stream_t *s) { return (int)json_array_size(json_object_get(s->resp, "output")); }

/* The open item done: its final events, and into the Response's output. */
static int item_done(ta_resp_stream_t *s, ta_bytes_t *out)
{
    if (s->item == NULL)
        return 0;
    json_t *item = s->item;
    s->item = NULL;
    int oi = output_index(s), rc;
    json_t *id = json_object_get(item, "id");
    const char *txt = s->text.p != NULL ? s->text.p : "";
    if (strcmp(json_string_value(json_object_get(item, "type")), "message") == 0) {
        rc = emit(s, out, "response.output_text.done", json_pack("{s:O,s:i,s:i,s:s%,s:[]}", "item_id", id,
                                                                  "output_index", oi, "content_index", 0, "text", txt,
                                                                  s->text.len, "logprobs"));
        json_t *part = text_part(txt, s->text.len);
        if (rc == 0)
            rc = emit(s, out, "response.content_part.done",
                      json_pack("{s:O,s:i,s:i,s:O}", "item_id", id, "output_index", oi, "content_index", 0, "part",
                                part));
        json_object_set_new(item, "content", json_pack("[o]", part));
    } else {
        rc = emit(s, out, "response.function_call_arguments.done",
                  json_pack("{s:O,s:i,s:O,s:s%}", "item_id", id, "output_index", oi, "name",
                            json_object_get(item, "name"), "arguments", txt, s->text.len));
        json_object_set_new(item, "arguments", json_stringn(txt, s->text.len));
    }
    json_object_set_new(item, "status", json_string("completed"));
    if (rc == 0)
        rc = emit(s, out, "response.output_item.done", json_pack("{s:i,s:O}", "output_index", oi, "item", item));
    json_array_append_new(json_object_get(s->resp, "output"), item);
    s->text.len = 0;
    s->tool_oai = -1;
    return rc;
}

static int item_open(ta_resp_stream_t *s, ta_bytes_t *out, json_t *item)
{
    if (item == NULL)
        return -ENOMEM;
    s->item = item;
    s->text.len = 0;
    int oi = output_index(s);
    int rc = emit(s, out, "response.output_item.added", json_pack("{s:i,s:O}", "output_index", oi, "item", item));
    if (rc == 0 && strcmp(json_string_value(json_object_get(item, "type")), "message") == 0)
        rc = emit(s, out, "response.content_part.added",
                  json_pack("{s:O,s:i,s:i,s:o}", "item_id", json_object_get(item, "id"), "output_index", oi,
                            "content_index", 0, "part", text_part("", 0)));
    return rc;
}

static int on_text(ta_resp_stream_t *s, const json_t *t, ta_bytes_t *out)
{
    int rc = 0;
    if (s->item == NULL || s->tool_oai >= 0) {
        if ((rc = item_done(s, out)) != 0)
            return rc;
        /* msg_<the response id's core>_<output index> */
        char n[24];
        snprintf(n, sizeof(n), "_%d", output_index(s));
        const char *core = json_string_value(json_object_get(s->resp, "id")) + 5; /* after resp_ */
        json_t *id = json_pack("s++", "msg_", core, n);
        rc = item_open(s, out, json_pack("{s:o,s:s,s:s,s:s,s:[]}", "id", id, "type", "message", "status",
                                         "in_progress", "role", "assistant", "content"));
        if (rc != 0)
            return rc;
    }
    if ((rc = ta_bytes_append(&s->text, json_string_value(t), json_string_length(t), s->bound)) != 0)
        return rc;
    s->content_events++;
    return emit(s, out, "response.output_text.delta",
                json_pack("{s:O,s:i,s:i,s:O,s:[]}", "item_id", json_object_get(s->item, "id"), "output_index",
                          output_index(s), "content_index", 0, "delta", t, "logprobs"));
}

static int on_tool(ta_resp_stream_t *s, const json_t *tc, ta_bytes_t *out)
{
    int rc = 0;
    json_t *idx = json_object_get(tc, "index");
    int oi = json_is_integer(idx) ? (int)json_integer_value(idx) : 0;
    const json_t *fn = json_object_get(tc, "function");
    if (s->item == NULL || s->tool_oai != oi) {
        if ((rc = item_done(s, out)) != 0)
            return rc;
        const char *cid = json_string_value(json_object_get(tc, "id"));
        const char *name = json_string_value(json_object_get(fn, "name"));
        rc = item_open(s, out, json_pack("{s:o,s:s,s:s,s:s,s:s,s:s}", "id", prefixed("fc_", cid ? cid : ""), "type",
                                         "function_call", "status", "in_progress", "call_id", cid ? cid : "", "name",
                                         name ? name : "", "arguments", ""));
        s->tool_oai = oi;
        if (rc != 0)
            return rc;
    }
    const json_t *args = json_object_get(fn, "arguments");
    if (!json_is_string(args) || json_string_length(args) == 0)
        return 0;
    if ((rc = ta_bytes_append(&s->text, json_string_value(args), json_string_length(args), s->bound)) != 0)
        return rc;
    s->content_events++;
    return emit(s, out, "response.function_call_arguments.delta",
                json_pack("{s:O,s:i,s:O}", "item_id", json_object_get(s->item, "id"), "output_index", output_index(s),
                          "delta", args));
}

static int on_chunk(ta_resp_stream_t *s, json_t *j, ta_bytes_t *out)
{
    int rc = 0;
    if (!s->started) {
        const char *id = json_string_value(json_object_get(j, "id"));
        const char *model = json_string_value(json_object_get(j, "model"));
        if (id != NULL)
            json_object_set_new(s->resp, "id", prefixed("resp_", id_core(id)));
        if (model != NULL && model[0])
            json_object_set_new(s->resp, "model", json_string(model));
        if ((rc = start(s, out)) != 0)
            return rc;
    }
    if (json_is_object(json_object_get(j, "usage"))) {
        const json_t *u = json_object_get(j, "usage");
        s->usage.present = true;
        s->usage.prompt_tokens = count_of(u, "prompt_tokens");
        s->usage.completion_tokens = count_of(u, "completion_tokens");
        s->usage.cached_tokens = count_of(json_object_get(u, "prompt_tokens_details"), "cached_tokens");
        if (s->usage.cached_tokens > s->usage.prompt_tokens)
            s->usage.cached_tokens = s->usage.prompt_tokens;
    }
    json_t *c = json_array_get(json_object_get(j, "choices"), 0);
    json_t *d = json_object_get(c, "delta");
    const json_t *text = json_object_get(d, "content");
    if (json_is_string(text) && json_string_length(text) > 0 && (rc = on_text(s, text, out)) != 0)
        return rc;
    size_t i;
    json_t *tc;
    json_array_foreach(json_object_get(d, "tool_calls"), i, tc) {
        if ((rc = on_tool(s, tc, out)) != 0)
            return rc;
    }
    const char *fr = json_string_value(json_object_get(c, "finish_reason"));
    if (fr != NULL)
        snprintf(s->finish, sizeof(s->finish), "%s", fr);
    return 0;
}

static int on_done(ta_resp_stream_t *s, ta_bytes_t *out)
{
    int rc = s->started ? 0 : start(s, out);
    if (rc == 0)
        rc = item_done(s, out);
    if (rc != 0)
        return rc;
    set_status(s->resp, s->finish[0] ? s->finish : NULL);
    json_object_set_new(s->resp, "usage", usage_json(reported(s)));
    s->done = true;
    const char *type = strcmp(json_string_value(json_object_get(s->resp, "status")), "incomplete") == 0
                           ? "response.incomplete"
                           : "response.completed";
    return emit(s, out, type, json_pack("{s:O}", "response", s->resp));
}

static int on_error(ta_resp_stream_t *s, json_t *j, ta_bytes_t *out)
{
    const json_t *e = json_object_get(j, "error");
    const char *type = json_string_value(json_object_get(e, "type"));
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    s->failed = true;
    s->failed_rate_limit = (type != NULL && strstr(type, "rate_limit") != NULL) ||
                           (code != NULL && strstr(code, "rate_limit") != NULL);
    int rc = s->started ? 0 : start(s, out);
    if (rc != 0)
        return rc;
    json_object_set_new(s->resp, "status", json_string("failed"));
    json_object_set_new(s->resp, "error", json_pack("{s:s,s:s}", "code", s->failed_rate_limit ? "rate_limit_exceeded"
                                                                                                : "server_error",
                                                    "message", msg != NULL ? msg : "the provider failed"));
    json_object_set_new(s->resp, "usage", usage_json(reported(s)));
    return emit(s, out, "response.failed", json_pack("{s:O}", "response", s->resp));
}

static int translate_event(ta_resp_stream_t *s, char *ev, size_t n, ta_bytes_t *out)
{
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

static int stream_event(void *arg, char *ev, size_t n, ta_bytes_t *out)
{
    ta_resp_stream_t *s = arg;
    return s->translate ? translate_event(s, ev, n, out) : passthrough_event(s, ev, n, out);
}

int ta_resp_stream_feed(ta_resp_stream_t *s, const char *p, size_t n, ta_bytes_t *out)
{
    return ta_sse_framer_feed(&s->fr, p, n, stream_event, s, out);
}
