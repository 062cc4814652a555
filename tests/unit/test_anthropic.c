/*
 * test_anthropic - the Anthropic adapter (worker/anthropic.c): OpenAI chat
 * request -> Messages request, Messages answer -> chat.completion, the SSE
 * event stream -> chat.completion.chunk events (fed in every split, byte by
 * byte too), usage normalization, errors, malformed provider bytes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>

#include "schema/ta.h"
#include "worker/anthropic.h"

/* ---- helpers ------------------------------------------------------------------- */

static json_t *J(const char *s)
{
    json_error_t e;
    json_t *j = json_loads(s, 0, &e);
    if (j == NULL)
        fail_msg("bad test JSON: %s: %s", e.text, s);
    return j;
}

/* Translate; assert success; return the Messages body. */
static json_t *req_ok(const char *oai, int64_t fallback)
{
    json_t *in = J(oai), *out = NULL;
    ta_err_t err = {0};
    int rc = ta_anth_request(in, "claude-up", fallback, &out, &err);
    if (rc != 0)
        fail_msg("translation failed: %d %s", rc, err.message);
    json_decref(in);
    return out;
}

static void req_fails(const char *oai, const char *field)
{
    json_t *in = J(oai), *out = NULL;
    ta_err_t err = {0};
    assert_int_equal(ta_anth_request(in, "m", 0, &out, &err), TA_EINVAL);
    assert_null(out);
    assert_string_equal(err.field, field);
    assert_true(strlen(err.message) > 0);
    json_decref(in);
}

/* Compare a tree with the JSON text `want` (exact, key order free). */
static void assert_json(const json_t *got, const char *want)
{
    json_t *w = J(want);
    if (!json_equal((json_t *)got, w)) {
        char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS), *ws = json_dumps(w, JSON_COMPACT | JSON_SORT_KEYS);
        fail_msg("got  %s\nwant %s", g, ws);
    }
    json_decref(w);
}

/* ---- requests --------------------------------------------------------------------- */

static void test_request_basic(void **state)
{
    json_t *o = req_ok("{\"model\":\"public\",\"messages\":["
                       "{\"role\":\"system\",\"content\":\"Be brief.\"},"
                       "{\"role\":\"developer\",\"content\":[{\"type\":\"text\",\"text\":\"No jokes.\"}]},"
                       "{\"role\":\"user\",\"content\":\"Hello\"},"
                       "{\"role\":\"assistant\",\"content\":\"Hi!\"},"
                       "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Again\","
                       "\"cache_control\":{\"type\":\"ephemeral\"}}]}],"
                       "\"max_tokens\":50,\"temperature\":0.5,\"top_p\":0.9,\"stop\":\"END\","
                       "\"user\":\"u-1\",\"stream\":true,\"stream_options\":{\"include_usage\":true},"
                       "\"presence_penalty\":0,\"logprobs\":false,\"logit_bias\":{},\"seed\":null}",
                       0);
    assert_json(o, "{\"model\":\"claude-up\",\"max_tokens\":50,\"temperature\":0.5,\"top_p\":0.9,"
                   "\"stop_sequences\":[\"END\"],\"metadata\":{\"user_id\":\"u-1\"},\"stream\":true,"
                   "\"system\":[{\"type\":\"text\",\"text\":\"Be brief.\"},{\"type\":\"text\",\"text\":\"No jokes.\"}],"
                   "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hello\"}]},"
                   "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"Hi!\"}]},"
                   "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Again\","
                   "\"cache_control\":{\"type\":\"ephemeral\"}}]}]}");
    json_decref(o);
}

static void test_request_max_tokens(void **state)
{
    /* max_completion_tokens wins over max_tokens */
    json_t *o = req_ok("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":10,"
                       "\"max_completion_tokens\":20}",
                       999);
    assert_int_equal(json_integer_value(json_object_get(o, "max_tokens")), 20);
    json_decref(o);
    o = req_ok("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":10}", 999);
    assert_int_equal(json_integer_value(json_object_get(o, "max_tokens")), 10);
    json_decref(o);
    /* none from the client: the model's max output, else 4096 */
    o = req_ok("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 999);
    assert_int_equal(json_integer_value(json_object_get(o, "max_tokens")), 999);
    assert_null(json_object_get(o, "stream"));
    assert_null(json_object_get(o, "system"));
    assert_null(json_object_get(o, "stop_sequences"));
    json_decref(o);
    o = req_ok("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":null}", 0);
    assert_int_equal(json_integer_value(json_object_get(o, "max_tokens")), TA_ANTH_DEFAULT_MAX_TOKENS);
    json_decref(o);
}

static void test_request_stop_and_merge(void **state)
{
    /* stop arrays (empty strings dropped); consecutive user messages merged */
    json_t *o = req_ok("{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\",\"content\":\"b\"},"
                       "{\"role\":\"assistant\",\"content\":\"\"},{\"role\":\"user\",\"content\":null},"
                       "{\"role\":\"user\",\"content\":\"c\"}],\"stop\":[\"x\",\"\",\"y\"]}",
                       0);
    assert_json(json_object_get(o, "stop_sequences"), "[\"x\",\"y\"]");
    assert_json(json_object_get(o, "messages"),
                "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"},"
                "{\"type\":\"text\",\"text\":\"c\"}]}]");
    json_decref(o);
}

static void test_request_images(void **state)
{
    json_t *o = req_ok("{\"messages\":[{\"role\":\"user\",\"content\":["
                       "{\"type\":\"text\",\"text\":\"what is this\"},"
                       "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,iVBORw0K\",\"detail\":\"low\"}},"
                       "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://example.com/cat.jpg\"}}]}]}",
                       0);
    assert_json(json_object_get(o, "messages"),
                "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"what is this\"},"
                "{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"media_type\":\"image/png\",\"data\":\"iVBORw0K\"}},"
                "{\"type\":\"image\",\"source\":{\"type\":\"url\",\"url\":\"https://example.com/cat.jpg\"}}]}]");
    json_decref(o);
    req_fails("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":"
              "\"data:image/png,raw\"}}]}]}",
              "messages[0].content[0]");
    req_fails("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{}}]}]}",
              "messages[0].content[0]");
}

static void test_request_tools(void **state)
{
    json_t *o = req_ok(
        "{\"messages\":[{\"role\":\"user\",\"content\":\"weather?\"},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
        "{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Oslo\\\"}\"}},"
        "{\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"now\",\"arguments\":\"\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"-3C\"},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_2\",\"content\":[{\"type\":\"text\",\"text\":\"noon\"}]},"
        "{\"role\":\"user\",\"content\":\"thanks\"}],"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Weather\","
        "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}}},"
        "{\"type\":\"function\",\"function\":{\"name\":\"now\"}}],"
        "\"tool_choice\":\"required\",\"parallel_tool_calls\":false}",
        0);
    assert_json(json_object_get(o, "messages"),
                "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"weather?\"}]},"
                "{\"role\":\"assistant\",\"content\":["
                "{\"type\":\"tool_use\",\"id\":\"call_1\",\"name\":\"get_weather\",\"input\":{\"city\":\"Oslo\"}},"
                "{\"type\":\"tool_use\",\"id\":\"call_2\",\"name\":\"now\",\"input\":{}}]},"
                "{\"role\":\"user\",\"content\":["
                "{\"type\":\"tool_result\",\"tool_use_id\":\"call_1\",\"content\":\"-3C\"},"
                "{\"type\":\"tool_result\",\"tool_use_id\":\"call_2\",\"content\":[{\"type\":\"text\",\"text\":\"noon\"}]},"
                "{\"type\":\"text\",\"text\":\"thanks\"}]}]");
    assert_json(json_object_get(o, "tools"),
                "[{\"name\":\"get_weather\",\"description\":\"Weather\",\"input_schema\":{\"type\":\"object\","
                "\"properties\":{\"city\":{\"type\":\"string\"}}}},"
                "{\"name\":\"now\",\"input_schema\":{\"type\":\"object\",\"properties\":{}}}]");
    assert_json(json_object_get(o, "tool_choice"), "{\"type\":\"any\",\"disable_parallel_tool_use\":true}");
    json_decref(o);

    static const struct {
        const char *oai, *anth;
    } choices[] = {
        {"\"auto\"", "{\"type\":\"auto\"}"},
        {"\"none\"", "{\"type\":\"none\"}"},
        {"{\"type\":\"function\",\"function\":{\"name\":\"now\"}}", "{\"type\":\"tool\",\"name\":\"now\"}"},
    };
    for (size_t i = 0; i < TA_ARRAY_SIZE(choices); i++) {
        char b[512];
        snprintf(b, sizeof(b),
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"function\","
                 "\"function\":{\"name\":\"now\"}}],\"tool_choice\":%s}",
                 choices[i].oai);
        o = req_ok(b, 0);
        assert_json(json_object_get(o, "tool_choice"), choices[i].anth);
        json_decref(o);
    }
    /* no tools: no tool_choice either */
    o = req_ok("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tool_choice\":\"auto\"}", 0);
    assert_null(json_object_get(o, "tool_choice"));
    assert_null(json_object_get(o, "tools"));
    json_decref(o);
}

static void test_request_refusals(void **state)
{
    req_fails("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":2}", "n");
    req_fails("{\"messages\":[{\"role\":\"system\",\"content\":\"only a system prompt\"}]}", "messages");
    req_fails("{\"messages\":[]}", "messages");
    req_fails("{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", "messages[0].role");
    req_fails("{\"messages\":[{\"content\":\"x\"}]}", "messages[0].role");
    req_fails("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\"}]}]}",
              "messages[0].content[0]");
    req_fails("{\"messages\":[{\"role\":\"user\",\"content\":42}]}", "messages[0].content");
    req_fails("{\"messages\":[{\"role\":\"system\",\"content\":[{\"type\":\"image_url\",\"image_url\":\"http://x\"}]},"
              "{\"role\":\"user\",\"content\":\"x\"}]}",
              "messages[0].content[0]");
    req_fails("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"assistant\",\"tool_calls\":["
              "{\"id\":\"c\",\"function\":{\"name\":\"f\",\"arguments\":\"[1,2]\"}}]}]}",
              "messages[1].tool_calls[0].function.arguments");
    req_fails("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"assistant\",\"tool_calls\":["
              "{\"function\":{\"name\":\"f\"}}]}]}",
              "messages[1].tool_calls[0]");
    req_fails("{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", "messages[0].tool_call_id");
    req_fails("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"code_interpreter\"}]}",
              "tools[0]");
    req_fails("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"function\","
              "\"function\":{\"name\":\"f\"}}],\"tool_choice\":\"sometimes\"}",
              "tool_choice");
    req_fails("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":[1]}", "stop");
    req_fails("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":\"hot\"}", "temperature");
}

/* ---- answers --------------------------------------------------------------------------- */

static void test_usage_normalized(void **state)
{
    ta_usage_t u;
    json_t *j = J("{\"input_tokens\":100,\"output_tokens\":7,\"cache_read_input_tokens\":30,"
                  "\"cache_creation_input_tokens\":20}");
    ta_anth_usage(j, &u);
    assert_true(u.present);
    assert_int_equal(u.prompt_tokens, 150);
    assert_int_equal(u.cached_tokens, 30);
    assert_int_equal(u.cache_write_tokens, 20);
    assert_int_equal(u.completion_tokens, 7);
    json_decref(j);
    /* nulls, negatives and strings count 0 */
    j = J("{\"input_tokens\":5,\"output_tokens\":-3,\"cache_read_input_tokens\":null,"
          "\"cache_creation_input_tokens\":\"9\"}");
    ta_anth_usage(j, &u);
    assert_true(u.present);
    assert_int_equal(u.prompt_tokens, 5);
    assert_int_equal(u.completion_tokens, 0);
    assert_int_equal(u.cached_tokens + u.cache_write_tokens, 0);
    json_decref(j);
    ta_anth_usage(NULL, &u);
    assert_false(u.present);
}

static void test_finish_reasons(void **state)
{
    assert_string_equal(ta_anth_finish_reason("end_turn"), "stop");
    assert_string_equal(ta_anth_finish_reason("stop_sequence"), "stop");
    assert_string_equal(ta_anth_finish_reason("max_tokens"), "length");
    assert_string_equal(ta_anth_finish_reason("tool_use"), "tool_calls");
    assert_string_equal(ta_anth_finish_reason("refusal"), "content_filter");
    assert_string_equal(ta_anth_finish_reason("something_new"), "stop");
    assert_null(ta_anth_finish_reason(NULL));
}

static json_t *resp_ok(const char *anth, ta_usage_t *u)
{
    ta_bytes_t out = {0};
    assert_int_equal(ta_anth_response(anth, strlen(anth), &out, 1 << 20, u), 0);
    json_t *j = json_loadb(out.p, out.len, 0, NULL);
    assert_non_null(j);
    ta_bytes_free(&out);
    return j;
}

static void test_response(void **state)
{
    ta_usage_t u;
    json_t *j = resp_ok("{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\","
                        "\"content\":[{\"type\":\"text\",\"text\":\"Hello \"},{\"type\":\"thinking\",\"thinking\":\"hm\"},"
                        "{\"type\":\"text\",\"text\":\"world\"}],\"stop_reason\":\"end_turn\",\"stop_sequence\":null,"
                        "\"usage\":{\"input_tokens\":10,\"output_tokens\":3,\"cache_read_input_tokens\":4,"
                        "\"cache_creation_input_tokens\":2}}",
                        &u);
    json_object_del(j, "created");
    assert_json(j, "{\"id\":\"msg_1\",\"object\":\"chat.completion\",\"model\":\"claude-x\","
                   "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"Hello world\",\"refusal\":null},"
                   "\"logprobs\":null,\"finish_reason\":\"stop\"}],"
                   "\"usage\":{\"prompt_tokens\":16,\"completion_tokens\":3,\"total_tokens\":19,"
                   "\"prompt_tokens_details\":{\"cached_tokens\":4}}}");
    assert_int_equal(u.prompt_tokens, 16);
    assert_int_equal(u.cached_tokens, 4);
    assert_int_equal(u.cache_write_tokens, 2);
    json_decref(j);

    /* tool use: content null, tool_calls with the input as a JSON string */
    j = resp_ok("{\"id\":\"msg_2\",\"model\":\"m\",\"content\":[{\"type\":\"tool_use\",\"id\":\"toolu_1\","
                "\"name\":\"get_weather\",\"input\":{\"city\":\"Oslo\"}}],\"stop_reason\":\"tool_use\","
                "\"usage\":{\"input_tokens\":1,\"output_tokens\":2}}",
                &u);
    json_t *msg = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
    assert_true(json_is_null(json_object_get(msg, "content")));
    json_t *call = json_array_get(json_object_get(msg, "tool_calls"), 0);
    assert_string_equal(json_string_value(json_object_get(call, "id")), "toolu_1");
    assert_string_equal(json_string_value(json_object_get(call, "type")), "function");
    json_t *fn = json_object_get(call, "function");
    assert_string_equal(json_string_value(json_object_get(fn, "name")), "get_weather");
    json_t *args = J(json_string_value(json_object_get(fn, "arguments")));
    assert_json(args, "{\"city\":\"Oslo\"}");
    json_decref(args);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(j, "choices"), 0),
                                                          "finish_reason")),
                        "tool_calls");
    json_decref(j);

    /* max_tokens -> length; no usage: none in the answer, u not present */
    j = resp_ok("{\"id\":\"m\",\"model\":\"m\",\"content\":[],\"stop_reason\":\"max_tokens\"}", &u);
    assert_false(u.present);
    assert_null(json_object_get(j, "usage"));
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(j, "choices"), 0),
                                                          "finish_reason")),
                        "length");
    json_decref(j);
}

/* response_format: a forced tool out, its input back as the content; what
 * cannot be carried is refused, never dropped */
static void test_response_format(void **state)
{
    json_t *o = req_ok("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{"
                       "\"type\":\"json_schema\",\"json_schema\":{\"name\":\"w\",\"schema\":{\"type\":\"object\","
                       "\"properties\":{\"city\":{\"type\":\"string\"}}}}}}",
                       0);
    assert_json(json_object_get(o, "tools"),
                "[{\"name\":\"" TA_ANTH_JSON_TOOL "\",\"description\":\"Answer with a JSON object.\","
                "\"input_schema\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}}]");
    assert_json(json_object_get(o, "tool_choice"), "{\"type\":\"tool\",\"name\":\"" TA_ANTH_JSON_TOOL "\"}");
    json_decref(o);
    o = req_ok("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{\"type\":\"json_object\"}}",
               0);
    assert_json(json_object_get(json_array_get(json_object_get(o, "tools"), 0), "input_schema"), "{\"type\":\"object\"}");
    json_decref(o);
    o = req_ok("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{\"type\":\"text\"}}", 0);
    assert_null(json_object_get(o, "tools"));
    json_decref(o);
    req_fails("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{\"type\":\"json_object\"},"
              "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}",
              "response_format");
    req_fails("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{\"type\":\"json_schema\","
              "\"json_schema\":{\"name\":\"a\",\"schema\":{\"type\":\"array\"}}}}",
              "response_format.json_schema.schema");
    req_fails("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{\"type\":\"xml\"}}",
              "response_format.type");
    req_fails("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"function\",\"function\":"
              "{\"name\":\"" TA_ANTH_JSON_TOOL "\"}}]}",
              "tools[0]");
    static const char *const uncarried[][2] = {
        {"\"seed\":1", "seed"},           {"\"logprobs\":true", "logprobs"}, {"\"top_logprobs\":2", "top_logprobs"},
        {"\"logit_bias\":{\"1\":5}", "logit_bias"}, {"\"presence_penalty\":0.5", "presence_penalty"},
        {"\"frequency_penalty\":1", "frequency_penalty"}, {"\"modalities\":[\"text\",\"audio\"]", "modalities"},
        {"\"prediction\":{\"type\":\"content\",\"content\":\"x\"}", "prediction"}, {"\"store\":true", "store"},
        {"\"reasoning_effort\":\"high\"", "reasoning_effort"}, {"\"functions\":[]", "functions"},
    };
    for (size_t i = 0; i < TA_ARRAY_SIZE(uncarried); i++) {
        char b[256];
        snprintf(b, sizeof(b), "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],%s}", uncarried[i][0]);
        req_fails(b, uncarried[i][1]);
    }

    /* the answer: the forced tool's input is the content, finish_reason stop */
    ta_usage_t u;
    json_t *j = resp_ok("{\"id\":\"m\",\"model\":\"m\",\"content\":[{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\""
                        TA_ANTH_JSON_TOOL "\",\"input\":{\"city\":\"Oslo\"}}],\"stop_reason\":\"tool_use\"}",
                        &u);
    json_t *c = json_array_get(json_object_get(j, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(c, "message"), "content")),
                        "{\"city\":\"Oslo\"}");
    assert_null(json_object_get(json_object_get(c, "message"), "tool_calls"));
    assert_string_equal(json_string_value(json_object_get(c, "finish_reason")), "stop");
    json_decref(j);

    /* streamed: input_json_delta becomes content deltas */
    static const char ev[] =
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"m\","
        "\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n"
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
        "{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"" TA_ANTH_JSON_TOOL "\",\"input\":{}}}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
        "{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":\"}}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
        "{\"type\":\"input_json_delta\",\"partial_json\":\"1}\"}}\n\n"
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},"
        "\"usage\":{\"output_tokens\":4}}\n\n"
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    ta_anth_stream_t s;
    ta_bytes_t out = {0};
    ta_anth_stream_init(&s, false, NULL, 0);
    assert_int_equal(ta_anth_stream_feed(&s, ev, strlen(ev), &out), 0);
    assert_true(s.done);
    assert_non_null(memmem(out.p, out.len, "\"content\":\"{\\\"a\\\":\"", 14));
    assert_non_null(memmem(out.p, out.len, "\"content\":\"1}\"", 14));
    assert_null(memmem(out.p, out.len, "tool_calls", 10));
    assert_non_null(memmem(out.p, out.len, "\"finish_reason\":\"stop\"", 22));
    ta_bytes_free(&out);
    ta_anth_stream_dispose(&s);
}

static void test_response_malformed(void **state)
{
    static const char *const bad[] = {
        "", "{", "not json", "[1,2]", "{\"id\":\"m\"}", "{\"content\":\"text\"}", "{\"content\":[],\"usage\":",
    };
    for (size_t i = 0; i < TA_ARRAY_SIZE(bad); i++) {
        ta_bytes_t out = {0};
        ta_usage_t u;
        assert_int_equal(ta_anth_response(bad[i], strlen(bad[i]), &out, 1 << 20, &u), TA_EINVAL);
        assert_int_equal(out.len, 0);
        ta_bytes_free(&out);
    }
    /* the bound holds */
    const char big[] = "{\"content\":[{\"type\":\"text\",\"text\":\"0123456789012345678901234567890123456789\"}]}";
    ta_bytes_t out = {0};
    ta_usage_t u;
    assert_int_equal(ta_anth_response(big, strlen(big), &out, 16, &u), TA_ETOOBIG);
    ta_bytes_free(&out);
}

static void test_errors(void **state)
{
    static const struct {
        int status;
        const char *body;
        int out_status;
        const char *type, *code, *message;
    } cases[] = {
        {400, "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"max_tokens: too big\"}}",
         400, "invalid_request_error", "invalid_request_error", "max_tokens: too big"},
        {401, "{\"type\":\"error\",\"error\":{\"type\":\"authentication_error\",\"message\":\"invalid x-api-key\"}}",
         401, "authentication_error", "authentication_error", "invalid x-api-key"},
        {429, "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"slow down\"}}", 429,
         "rate_limit_error", "rate_limit_error", "slow down"},
        {529, "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}", 503,
         "upstream_error", "overloaded_error", "Overloaded"},
        {500, "{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"oops\"}}", 500, "upstream_error",
         "api_error", "oops"},
        {502, "<html>bad gateway</html>", 502, "upstream_error", "upstream_error", "the provider answered HTTP 502"},
        {404, "", 404, "not_found_error", "upstream_error", "the provider answered HTTP 404"},
    };
    for (size_t i = 0; i < TA_ARRAY_SIZE(cases); i++) {
        ta_bytes_t out = {0};
        assert_int_equal(ta_anth_error(cases[i].status, cases[i].body, strlen(cases[i].body), &out), 0);
        assert_int_equal(ta_anth_error_status(cases[i].status), cases[i].out_status);
        json_t *j = json_loadb(out.p, out.len, 0, NULL);
        json_t *e = json_object_get(j, "error");
        assert_non_null(e);
        assert_string_equal(json_string_value(json_object_get(e, "type")), cases[i].type);
        assert_string_equal(json_string_value(json_object_get(e, "code")), cases[i].code);
        assert_string_equal(json_string_value(json_object_get(e, "message")), cases[i].message);
        assert_true(json_is_null(json_object_get(e, "param")));
        json_decref(j);
        ta_bytes_free(&out);
    }
}

/* ---- the stream ------------------------------------------------------------------------ */

#define EV(name, data) "event: " name "\ndata: " data "\n\n"
static const char stream_text_tool[] =
    EV("message_start", "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_s1\",\"type\":\"message\",\"role\":"
                        "\"assistant\",\"model\":\"claude-s\",\"content\":[],\"stop_reason\":null,\"usage\":{"
                        "\"input_tokens\":25,\"cache_creation_input_tokens\":5,\"cache_read_input_tokens\":70,"
                        "\"output_tokens\":1}}}")
    EV("ping", "{\"type\":\"ping\"}")
    EV("content_block_start", "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\","
                              "\"text\":\"\"}}")
    EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
                              "\"text\":\"Hel\"}}")
    EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
                              "\"text\":\"lo \\u00e9\\n\"}}")
    EV("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}")
    EV("content_block_start", "{\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":"
                              "\"tool_use\",\"id\":\"toolu_9\",\"name\":\"get_weather\",\"input\":{}}}")
    EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":"
                              "\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \"}}")
    EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":"
                              "\"input_json_delta\",\"partial_json\":\"\\\"Oslo\\\"}\"}}")
    EV("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":1}")
    EV("message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},"
                        "\"usage\":{\"output_tokens\":42}}")
    EV("message_stop", "{\"type\":\"message_stop\"}");

static void feed_split(ta_anth_stream_t *s, const char *in, size_t len, size_t step, ta_bytes_t *out)
{
    for (size_t off = 0; off < len; off += step) {
        size_t n = len - off < step ? len - off : step;
        assert_int_equal(ta_anth_stream_feed(s, in + off, n, out), 0);
    }
}

/* the data of each event in out, parsed ([DONE] as the string "[DONE]") */
static json_t *events_of(const ta_bytes_t *out)
{
    json_t *arr = json_array();
    const char *p = out->p, *end = out->p + out->len;
    while (p < end) {
        const char *e = memmem(p, (size_t)(end - p), "\n\n", 2);
        assert_non_null(e);
        assert_memory_equal(p, "data: ", 6);
        if ((size_t)(e - p) == 12 && memcmp(p + 6, "[DONE]", 6) == 0)
            json_array_append_new(arr, json_string("[DONE]"));
        else {
            json_t *j = json_loadb(p + 6, (size_t)(e - p - 6), 0, NULL);
            assert_non_null(j);
            json_array_append_new(arr, j);
        }
        p = e + 2;
    }
    return arr;
}

static json_t *delta_of(json_t *ev) { return json_object_get(json_array_get(json_object_get(ev, "choices"), 0), "delta"); }

static void test_stream_translation(void **state)
{
    static const size_t steps[] = {1, 2, 3, 5, 7, 13, 64, 1000, sizeof(stream_text_tool)};
    ta_bytes_t whole = {0};
    for (size_t k = 0; k < TA_ARRAY_SIZE(steps); k++) {
        for (int keep = 0; keep < 2; keep++) {
            ta_anth_stream_t s;
            ta_bytes_t out = {0};
            ta_anth_stream_init(&s, keep, "fallback", 0);
            s.created = 1700000000; /* same bytes whatever the clock */
            feed_split(&s, stream_text_tool, strlen(stream_text_tool), steps[k], &out);
            assert_true(s.done);
            assert_false(s.failed);
            assert_int_equal(s.events, 12);
            assert_true(s.usage.present);
            assert_int_equal(s.usage.prompt_tokens, 100);
            assert_int_equal(s.usage.cached_tokens, 70);
            assert_int_equal(s.usage.cache_write_tokens, 5);
            assert_int_equal(s.usage.completion_tokens, 42);
            assert_int_equal(s.content_events, 4);
            assert_int_equal(s.fr.cur.len, 0);
            if (keep && k == 0) {
                assert_int_equal(ta_bytes_append(&whole, out.p, out.len, SIZE_MAX), 0);
            } else if (keep) {
                /* every split gives the same bytes */
                assert_int_equal(out.len, whole.len);
                assert_memory_equal(out.p, whole.p, out.len);
            }
            json_t *ev = events_of(&out);
            size_t n = json_array_size(ev);
            assert_int_equal(n, keep ? 9 : 8);
            for (size_t i = 0; i + 1 < n; i++) {
                json_t *e = json_array_get(ev, i);
                assert_string_equal(json_string_value(json_object_get(e, "object")), "chat.completion.chunk");
                assert_string_equal(json_string_value(json_object_get(e, "id")), "msg_s1");
                assert_string_equal(json_string_value(json_object_get(e, "model")), "claude-s");
            }
            assert_json(delta_of(json_array_get(ev, 0)), "{\"role\":\"assistant\",\"content\":\"\"}");
            assert_json(delta_of(json_array_get(ev, 1)), "{\"content\":\"Hel\"}");
            assert_json(delta_of(json_array_get(ev, 2)), "{\"content\":\"lo \\u00e9\\n\"}");
            assert_json(delta_of(json_array_get(ev, 3)),
                        "{\"tool_calls\":[{\"index\":0,\"id\":\"toolu_9\",\"type\":\"function\",\"function\":"
                        "{\"name\":\"get_weather\",\"arguments\":\"\"}}]}");
            assert_json(delta_of(json_array_get(ev, 4)),
                        "{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\": \"}}]}");
            assert_json(delta_of(json_array_get(ev, 5)),
                        "{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Oslo\\\"}\"}}]}");
            json_t *fin = json_array_get(json_object_get(json_array_get(ev, 6), "choices"), 0);
            assert_string_equal(json_string_value(json_object_get(fin, "finish_reason")), "tool_calls");
            assert_json(json_object_get(fin, "delta"), "{}");
            for (size_t i = 0; i < 6; i++)
                assert_true(json_is_null(json_object_get(
                    json_array_get(json_object_get(json_array_get(ev, i), "choices"), 0), "finish_reason")));
            if (keep) {
                json_t *uc = json_array_get(ev, 7);
                assert_int_equal(json_array_size(json_object_get(uc, "choices")), 0);
                assert_json(json_object_get(uc, "usage"),
                            "{\"prompt_tokens\":100,\"completion_tokens\":42,\"total_tokens\":142,"
                            "\"prompt_tokens_details\":{\"cached_tokens\":70}}");
            } else {
                for (size_t i = 0; i < n - 1; i++)
                    assert_null(json_object_get(json_array_get(ev, i), "usage"));
            }
            assert_string_equal(json_string_value(json_array_get(ev, n - 1)), "[DONE]");
            json_decref(ev);
            ta_anth_stream_dispose(&s);
            ta_bytes_free(&out);
        }
    }
    ta_bytes_free(&whole);
}

static void test_stream_crlf_comments_multiline(void **state)
{
    /* CRLF line ends, a comment, data split over two data: lines (joined with
     * \n, still valid JSON), an event without an event: line */
    const char in[] = ": hello\r\n\r\n"
                      "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m2\",\r\n"
                      "data: \"model\":\"c\",\"usage\":{\"input_tokens\":3,\"output_tokens\":0}}}\r\n\r\n"
                      "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
                      "\"text\":\"ok\"}}\r\n\r\n"
                      "event: message_delta\r\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
                      "\"end_turn\"},\"usage\":{\"output_tokens\":1}}\r\n\r\n"
                      "event: message_stop\r\ndata: {\"type\":\"message_stop\"}\r\n\r\n";
    for (size_t step = 1; step <= sizeof(in); step += 6) {
        ta_anth_stream_t s;
        ta_bytes_t out = {0};
        ta_anth_stream_init(&s, false, NULL, 0);
        feed_split(&s, in, strlen(in), step, &out);
        assert_true(s.done);
        assert_int_equal(s.events, 4);
        assert_int_equal(s.usage.prompt_tokens, 3);
        assert_int_equal(s.usage.completion_tokens, 1);
        json_t *ev = events_of(&out);
        assert_int_equal(json_array_size(ev), 4);
        assert_json(delta_of(json_array_get(ev, 1)), "{\"content\":\"ok\"}");
        assert_string_equal(json_string_value(json_object_get(
                                json_array_get(json_object_get(json_array_get(ev, 2), "choices"), 0), "finish_reason")),
                            "stop");
        json_decref(ev);
        ta_anth_stream_dispose(&s);
        ta_bytes_free(&out);
    }
}

static void test_stream_cut_usage(void **state)
{
    /* cut after two deltas: usage has the real prompt and at least the deltas
     * passed on; not done */
    const char in[] =
        EV("message_start", "{\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{"
                            "\"input_tokens\":9,\"cache_read_input_tokens\":1,\"output_tokens\":1}}}")
        EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
                                  "\"text\":\"a\"}}")
        EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
                                  "\"text\":\"b\"}}")
        "event: content_block_delta\ndata: {\"type\":\"content_bl";
    ta_anth_stream_t s;
    ta_bytes_t out = {0};
    ta_anth_stream_init(&s, true, NULL, 0);
    feed_split(&s, in, strlen(in), 4, &out);
    assert_false(s.done);
    assert_true(s.usage.present);
    assert_int_equal(s.usage.prompt_tokens, 10);
    assert_int_equal(s.usage.cached_tokens, 1);
    assert_int_equal(s.usage.completion_tokens, 2);
    json_t *ev = events_of(&out); /* only complete events went out */
    assert_int_equal(json_array_size(ev), 3);
    json_decref(ev);
    ta_anth_stream_dispose(&s);
    ta_bytes_free(&out);
}

static void test_stream_error_event(void **state)
{
    const char in[] =
        EV("message_start", "{\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{"
                            "\"input_tokens\":4,\"output_tokens\":1}}}")
        EV("error", "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}");
    ta_anth_stream_t s;
    ta_bytes_t out = {0};
    ta_anth_stream_init(&s, false, NULL, 0);
    feed_split(&s, in, strlen(in), 1, &out);
    assert_true(s.failed);
    assert_false(s.done);
    json_t *ev = events_of(&out);
    assert_int_equal(json_array_size(ev), 2);
    json_t *e = json_object_get(json_array_get(ev, 1), "error");
    assert_string_equal(json_string_value(json_object_get(e, "type")), "upstream_error");
    assert_string_equal(json_string_value(json_object_get(e, "code")), "overloaded_error");
    assert_string_equal(json_string_value(json_object_get(e, "message")), "Overloaded");
    json_decref(ev);
    ta_anth_stream_dispose(&s);
    ta_bytes_free(&out);
}

static void test_stream_malformed_and_bound(void **state)
{
    ta_anth_stream_t s;
    ta_bytes_t out = {0};
    ta_anth_stream_init(&s, false, NULL, 0);
    const char bad[] = "event: message_start\ndata: {\"type\":\"message_start\",\n\n";
    assert_int_equal(ta_anth_stream_feed(&s, bad, strlen(bad), &out), TA_EINVAL);
    ta_anth_stream_dispose(&s);
    ta_bytes_free(&out);

    ta_anth_stream_init(&s, false, NULL, 0);
    const char arr[] = "data: [1,2]\n\n";
    assert_int_equal(ta_anth_stream_feed(&s, arr, strlen(arr), &out), TA_EINVAL);
    ta_anth_stream_dispose(&s);

    /* one event larger than the bound */
    ta_anth_stream_init(&s, false, NULL, 512);
    char big[300];
    memset(big, 'a', sizeof(big));
    assert_int_equal(ta_anth_stream_feed(&s, "data: ", 6, &out), 0);
    assert_int_equal(ta_anth_stream_feed(&s, big, sizeof(big), &out), 0);
    assert_int_equal(ta_anth_stream_feed(&s, big, sizeof(big), &out), TA_ETOOBIG);
    ta_anth_stream_dispose(&s);

    /* many events in one feed stay within a small bound */
    ta_anth_stream_init(&s, false, NULL, 256);
    const char one[] = EV("ping", "{\"type\":\"ping\"}");
    char many[4096];
    size_t len = 0;
    while (len + strlen(one) < sizeof(many)) {
        memcpy(many + len, one, strlen(one));
        len += strlen(one);
    }
    assert_int_equal(ta_anth_stream_feed(&s, many, len, &out), 0);
    assert_int_equal(out.len, 0);
    assert_int_equal(s.events, len / strlen(one));
    ta_anth_stream_dispose(&s);
    ta_bytes_free(&out);
}

static void test_stream_events_after_stop_ignored(void **state)
{
    const char in[] = EV("message_stop", "{\"type\":\"message_stop\"}")
        EV("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
                                  "\"text\":\"late\"}}");
    ta_anth_stream_t s;
    ta_bytes_t out = {0};
    ta_anth_stream_init(&s, false, NULL, 0);
    feed_split(&s, in, strlen(in), 3, &out);
    assert_true(s.done);
    assert_int_equal(out.len, strlen("data: [DONE]\n\n"));
    assert_int_equal(s.content_events, 0);
    ta_anth_stream_dispose(&s);
    ta_bytes_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_basic),
        cmocka_unit_test(test_response_format),
        cmocka_unit_test(test_request_max_tokens),
        cmocka_unit_test(test_request_stop_and_merge),
        cmocka_unit_test(test_request_images),
        cmocka_unit_test(test_request_tools),
        cmocka_unit_test(test_request_refusals),
        cmocka_unit_test(test_usage_normalized),
        cmocka_unit_test(test_finish_reasons),
        cmocka_unit_test(test_response),
        cmocka_unit_test(test_response_malformed),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_stream_translation),
        cmocka_unit_test(test_stream_crlf_comments_multiline),
        cmocka_unit_test(test_stream_cut_usage),
        cmocka_unit_test(test_stream_error_event),
        cmocka_unit_test(test_stream_malformed_and_bound),
        cmocka_unit_test(test_stream_events_after_stop_ignored),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
