/*
 * test_responses - the Responses API (worker/responses.c): request checks,
 * Responses -> chat (items, instructions, tools, text.format) and -> Messages
 * with the refusals naming the Responses param, chat.completion -> Response,
 * a Response's usage, the pass-through reader (usage from response.completed,
 * failures) and the chunk -> event translator, both fed in every split.
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
#include "worker/responses.h"

static json_t *J(const char *s)
{
    json_error_t e;
    json_t *j = json_loads(s, 0, &e);
    if (j == NULL)
        fail_msg("bad test JSON: %s: %s", e.text, s);
    return j;
}

static void assert_json(const json_t *got, const char *want)
{
    json_t *w = J(want);
    if (!json_equal((json_t *)got, w)) {
        char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS), *ws = json_dumps(w, JSON_COMPACT | JSON_SORT_KEYS);
        fail_msg("got  %s\nwant %s", g, ws);
    }
    json_decref(w);
}

static void invalid(const char *body, const char *field)
{
    json_t *b = J(body);
    ta_err_t e = {0};
    assert_int_equal(ta_resp_validate(b, &e), TA_EINVAL);
    assert_string_equal(e.field, field);
    assert_int_equal(strncmp(e.message, field, strlen(field)), 0);
    json_decref(b);
}

static void anth_refused(const char *body, const char *field)
{
    json_t *b = J(body), *out = NULL;
    ta_err_t e = {0};
    if (ta_resp_validate(b, &e) != 0)
        fail_msg("%s: refused by the checks: %s", body, e.message);
    if (ta_resp_to_anth(b, "claude-up", 0, &out, &e) != TA_EINVAL)
        fail_msg("%s: not refused", body);
    assert_null(out);
    if (strcmp(e.field, field) != 0)
        fail_msg("field %s (%s), want %s", e.field, e.message, field);
    assert_int_equal(strncmp(e.message, field, strlen(field)), 0);
    json_decref(b);
}

static void test_validate(void **state)
{
    (void)state;
    json_t *ok = J("{\"model\":\"m\",\"input\":[{\"role\":\"user\",\"content\":\"hi\"},"
                   "{\"type\":\"function_call_output\",\"call_id\":\"c\",\"output\":\"x\"}],"
                   "\"max_output_tokens\":5,\"stream\":true,\"text\":{\"format\":"
                   "{\"type\":\"json_schema\",\"name\":\"n\",\"schema\":{}}}}");
    assert_int_equal(ta_resp_validate(ok, NULL), 0);
    json_decref(ok);
    invalid("[]", "");
    invalid("{\"input\":\"x\"}", "model");
    invalid("{\"model\":\"m\"}", "input");
    invalid("{\"model\":\"m\",\"input\":{}}", "input");
    invalid("{\"model\":\"m\",\"input\":[\"x\"]}", "input[0]");
    invalid("{\"model\":\"m\",\"input\":[{\"role\":\"tool\",\"content\":\"x\"}]}", "input[0].role");
    invalid("{\"model\":\"m\",\"input\":[{\"type\":\"message\",\"content\":\"x\"}]}", "input[0].role");
    invalid("{\"model\":\"m\",\"input\":[{\"role\":\"user\",\"content\":5}]}", "input[0].content");
    invalid("{\"model\":\"m\",\"input\":\"x\",\"max_output_tokens\":-1}", "max_output_tokens");
    invalid("{\"model\":\"m\",\"input\":\"x\",\"store\":\"yes\"}", "store");
    invalid("{\"model\":\"m\",\"input\":\"x\",\"tools\":[{\"name\":\"f\"}]}", "tools[0]");
    invalid("{\"model\":\"m\",\"input\":\"x\",\"tool_choice\":\"sometimes\"}", "tool_choice");
    invalid("{\"model\":\"m\",\"input\":\"x\",\"tool_choice\":{}}", "tool_choice");
    invalid("{\"model\":\"m\",\"input\":\"x\",\"text\":{\"format\":{\"type\":\"json_schema\",\"schema\":{}}}}",
            "text.format.name");
    /* a stored prompt needs no input */
    json_t *p = J("{\"model\":\"m\",\"prompt\":{\"id\":\"pmpt_1\"}}");
    assert_int_equal(ta_resp_validate(p, NULL), 0);
    assert_true(ta_resp_stateful(p));
    json_decref(p);
}

static void test_to_chat(void **state)
{
    (void)state;
    json_t *r = J("{\"model\":\"m\",\"instructions\":\"Be brief.\",\"max_output_tokens\":64,\"temperature\":0.5,"
                  "\"safety_identifier\":\"u1\",\"stream\":true,\"parallel_tool_calls\":false,"
                  "\"tools\":[{\"type\":\"function\",\"name\":\"f\",\"description\":\"d\",\"parameters\":{\"type\":"
                  "\"object\"},\"strict\":true}],\"tool_choice\":{\"type\":\"function\",\"name\":\"f\"},"
                  "\"text\":{\"format\":{\"type\":\"json_schema\",\"name\":\"w\",\"schema\":{\"type\":\"object\"}}},"
                  "\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":\"hi\"},"
                  "{\"type\":\"input_image\",\"image_url\":\"https://x/i.png\",\"detail\":\"low\"}]},"
                  "{\"type\":\"message\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\","
                  "\"text\":\"ok\"}]},"
                  "{\"type\":\"function_call\",\"call_id\":\"c1\",\"name\":\"f\",\"arguments\":\"{}\"},"
                  "{\"type\":\"function_call\",\"call_id\":\"c2\",\"name\":\"f\",\"arguments\":\"\"},"
                  "{\"type\":\"function_call_output\",\"call_id\":\"c1\",\"output\":\"r1\"},"
                  "{\"type\":\"function_call_output\",\"call_id\":\"c2\",\"output\":[{\"type\":\"input_text\","
                  "\"text\":\"r2\"}]}]}");
    json_t *c = NULL;
    ta_err_t e = {0};
    assert_int_equal(ta_resp_to_chat(r, &c, &e), 0);
    assert_json(c, "{\"model\":\"m\",\"max_completion_tokens\":64,\"temperature\":0.5,\"user\":\"u1\",\"stream\":true,"
                   "\"stream_options\":{\"include_usage\":true},\"parallel_tool_calls\":false,"
                   "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"description\":\"d\","
                   "\"parameters\":{\"type\":\"object\"},\"strict\":true}}],"
                   "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}},"
                   "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"w\",\"schema\":"
                   "{\"type\":\"object\"}}},"
                   "\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
                   "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hi\"},{\"type\":\"image_url\","
                   "\"image_url\":{\"url\":\"https://x/i.png\",\"detail\":\"low\"}}]},"
                   "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"ok\"}],\"tool_calls\":["
                   "{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}},"
                   "{\"id\":\"c2\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]},"
                   "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"r1\"},"
                   "{\"role\":\"tool\",\"tool_call_id\":\"c2\",\"content\":[{\"type\":\"text\",\"text\":\"r2\"}]}]}");
    json_decref(c);
    /* and on to the Messages API */
    json_object_del(r, "text");
    json_t *a = NULL;
    assert_int_equal(ta_resp_to_anth(r, "claude-up", 0, &a, &e), 0);
    assert_int_equal(json_integer_value(json_object_get(a, "max_tokens")), 64);
    assert_int_equal(json_array_size(json_object_get(a, "messages")), 3); /* user, assistant, user (results) */
    json_decref(a);
    json_decref(r);
}

static void test_to_anth_refusals(void **state)
{
    (void)state;
    anth_refused("{\"model\":\"m\",\"input\":\"x\",\"previous_response_id\":\"r\"}", "previous_response_id");
    anth_refused("{\"model\":\"m\",\"input\":\"x\",\"store\":true}", "store");
    anth_refused("{\"model\":\"m\",\"input\":\"x\",\"background\":true}", "background");
    anth_refused("{\"model\":\"m\",\"input\":\"x\",\"metadata\":{\"k\":\"v\"}}", "metadata");
    anth_refused("{\"model\":\"m\",\"input\":\"x\",\"truncation\":\"auto\"}", "truncation");
    anth_refused("{\"model\":\"m\",\"input\":\"x\",\"n\":2}", "n");
    anth_refused("{\"model\":\"m\",\"input\":\"x\",\"tools\":[{\"type\":\"file_search\"}]}", "tools[0].type");
    anth_refused("{\"model\":\"m\",\"input\":[{\"type\":\"item_reference\",\"id\":\"i\"}]}", "input[0].type");
    anth_refused("{\"model\":\"m\",\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_image\",\"file_id\":"
                 "\"f\"}]}]}", "input[0].content[0]");
    anth_refused("{\"model\":\"m\",\"input\":[{\"role\":\"assistant\",\"content\":[{\"type\":\"input_text\",\"text\":"
                 "\"x\"}]}]}", "input[0].content[0]");
    /* refusals of the Messages translator, named as Responses params */
    anth_refused("{\"model\":\"m\",\"instructions\":\"i\",\"input\":[{\"role\":\"user\",\"content\":[{\"type\":"
                 "\"input_image\",\"image_url\":\"data:image/png,x\"}]}]}", "input[0].content[0]");
    anth_refused("{\"model\":\"m\",\"input\":[{\"role\":\"system\",\"content\":\"only\"}]}", "input");
    anth_refused("{\"model\":\"m\",\"input\":\"x\",\"text\":{\"format\":{\"type\":\"json_schema\",\"name\":\"n\","
                 "\"schema\":{\"type\":\"string\"}}}}", "text.format.schema");
    anth_refused("{\"model\":\"m\",\"input\":\"x\",\"tool_choice\":{\"type\":\"allowed_tools\"}}", "tool_choice");
    /* neutral values pass */
    json_t *b = J("{\"model\":\"m\",\"input\":\"x\",\"store\":false,\"include\":[],\"metadata\":{},\"truncation\":"
                  "\"disabled\",\"service_tier\":\"auto\",\"reasoning\":{\"effort\":null},\"top_logprobs\":0,"
                  "\"stream_options\":{\"include_obfuscation\":false}}"),
           *out = NULL;
    assert_int_equal(ta_resp_to_anth(b, "claude-up", 77, &out, NULL), 0);
    assert_int_equal(json_integer_value(json_object_get(out, "max_tokens")), 77);
    json_decref(out);
    json_decref(b);
}

static void test_from_chat(void **state)
{
    (void)state;
    json_t *req = J("{\"model\":\"m\",\"input\":\"x\",\"instructions\":\"i\",\"max_output_tokens\":9}");
    const char *chat = "{\"id\":\"msg_01\",\"object\":\"chat.completion\",\"created\":5,\"model\":\"claude-up\","
                       "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"hel\","
                       "\"tool_calls\":[{\"id\":\"toolu_1\",\"type\":\"function\",\"function\":{\"name\":\"f\","
                       "\"arguments\":\"{\\\"a\\\":1}\"}}]},\"finish_reason\":\"length\"}]}";
    ta_usage_t u = {.present = true, .prompt_tokens = 20, .completion_tokens = 9, .cached_tokens = 3,
                    .cache_write_tokens = 2};
    ta_bytes_t out = {0};
    assert_int_equal(ta_resp_from_chat(req, chat, strlen(chat), &u, &out, SIZE_MAX), 0);
    json_t *r = json_loadb(out.p, out.len, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(r, "id")), "resp_01");
    assert_string_equal(json_string_value(json_object_get(r, "status")), "incomplete");
    assert_json(json_object_get(r, "incomplete_details"), "{\"reason\":\"max_output_tokens\"}");
    assert_string_equal(json_string_value(json_object_get(r, "instructions")), "i");
    assert_int_equal(json_integer_value(json_object_get(r, "created_at")), 5);
    assert_json(json_object_get(r, "output"),
                "[{\"id\":\"msg_01\",\"type\":\"message\",\"status\":\"completed\",\"role\":\"assistant\",\"content\":"
                "[{\"type\":\"output_text\",\"text\":\"hel\",\"annotations\":[],\"logprobs\":[]}]},"
                "{\"id\":\"fc_toolu_1\",\"type\":\"function_call\",\"status\":\"completed\",\"call_id\":\"toolu_1\","
                "\"name\":\"f\",\"arguments\":\"{\\\"a\\\":1}\"}]");
    assert_json(json_object_get(r, "usage"), "{\"input_tokens\":20,\"input_tokens_details\":{\"cached_tokens\":3,"
                                             "\"cache_write_tokens\":2},\"output_tokens\":9,\"output_tokens_details\":"
                                             "{\"reasoning_tokens\":0},\"total_tokens\":29}");
    json_decref(r);
    /* not a chat.completion: out unchanged */
    out.len = 0;
    assert_int_equal(ta_resp_from_chat(req, "{\"choices\":[]}", 14, &u, &out, SIZE_MAX), TA_EINVAL);
    assert_int_equal(out.len, 0);
    /* the bound */
    assert_int_equal(ta_resp_from_chat(req, chat, strlen(chat), &u, &out, 100), TA_ETOOBIG);
    ta_bytes_free(&out);
    json_decref(req);
}

static void test_usage(void **state)
{
    (void)state;
    ta_usage_t u;
    const char *r = "{\"usage\":{\"input_tokens\":40,\"input_tokens_details\":{\"cached_tokens\":12,"
                    "\"cache_write_tokens\":5},\"output_tokens\":9}}";
    assert_int_equal(ta_resp_usage(r, strlen(r), &u), 0);
    assert_true(u.present);
    assert_int_equal(u.prompt_tokens, 40);
    assert_int_equal(u.completion_tokens, 9);
    assert_int_equal(u.cached_tokens, 12);
    assert_int_equal(u.cache_write_tokens, 5);
    const char *over = "{\"usage\":{\"input_tokens\":4,\"input_tokens_details\":{\"cached_tokens\":12,"
                       "\"cache_write_tokens\":5},\"output_tokens\":-3}}";
    assert_int_equal(ta_resp_usage(over, strlen(over), &u), 0);
    assert_int_equal(u.cached_tokens, 4); /* never above the input */
    assert_int_equal(u.cache_write_tokens, 0);
    assert_int_equal(u.completion_tokens, 0);
    assert_int_equal(ta_resp_usage("{\"usage\":null}", 14, &u), TA_ENOTFOUND);
    assert_false(u.present);
    assert_int_equal(ta_resp_usage("nope", 4, &u), TA_EINVAL);
}

/* Feed `in` split at `at` (0: whole); the output and the stream's state. */
static ta_bytes_t feed_split(ta_resp_stream_t *s, bool translate, const char *in, size_t at)
{
    json_t *req = J("{\"model\":\"m\",\"input\":\"x\"}");
    assert_int_equal(ta_resp_stream_init(s, translate, req, "claude-up", 0, 0), 0);
    json_decref(req);
    ta_bytes_t out = {0};
    size_t n = strlen(in);
    if (at > 0 && at < n) {
        assert_int_equal(ta_resp_stream_feed(s, in, at, &out), 0);
        assert_int_equal(ta_resp_stream_feed(s, in + at, n - at, &out), 0);
    } else {
        assert_int_equal(ta_resp_stream_feed(s, in, n, &out), 0);
    }
    return out;
}

static const char PASS[] =
    "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"r\","
    "\"usage\":null}}\n\n"
    ": keep-alive\n\n"
    "event: response.output_text.delta\r\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,"
    "\"delta\":\"say \\\"response.completed\\\" and error\"}\r\n\r\n"
    "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"id\":"
    "\"r\",\"usage\":{\"input_tokens\":30,\"input_tokens_details\":{\"cached_tokens\":10},\"output_tokens\":5}}}\n\n";

static void test_passthrough(void **state)
{
    (void)state;
    for (size_t at = 0; at < sizeof(PASS) - 1; at++) {
        ta_resp_stream_t s;
        ta_bytes_t out = feed_split(&s, false, PASS, at);
        assert_int_equal(out.len, sizeof(PASS) - 1); /* passed as it came */
        assert_memory_equal(out.p, PASS, out.len);
        assert_true(s.done);
        assert_false(s.failed);
        assert_true(s.usage.present);
        assert_int_equal(s.usage.prompt_tokens, 30);
        assert_int_equal(s.usage.cached_tokens, 10);
        assert_int_equal(s.usage.completion_tokens, 5);
        assert_int_equal(s.content_events, 1);
        assert_int_equal(s.events, 3);
        ta_resp_stream_dispose(&s);
        ta_bytes_free(&out);
    }
    /* a failure: response.failed ends it (done and failed), an error event fails it */
    const char *failed = "data: {\"type\":\"response.failed\",\"response\":{\"error\":{\"code\":"
                         "\"rate_limit_exceeded\",\"message\":\"m\"},\"usage\":{\"input_tokens\":3,"
                         "\"output_tokens\":1}}}\n\n";
    ta_resp_stream_t s;
    ta_bytes_t out = feed_split(&s, false, failed, 0);
    assert_true(s.done && s.failed && s.failed_rate_limit);
    assert_int_equal(s.usage.prompt_tokens, 3);
    ta_resp_stream_dispose(&s);
    ta_bytes_free(&out);
    out = feed_split(&s, false,
                     "event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"x\"}\n\n", 0);
    assert_true(s.failed && !s.done && !s.failed_rate_limit);
    ta_resp_stream_dispose(&s);
    ta_bytes_free(&out);
}

#define CHUNK(delta, fin)                                                                                              \
    "data: {\"id\":\"msg_01\",\"object\":\"chat.completion.chunk\",\"model\":\"claude-x\",\"choices\":[{\"index\":0,"  \
    "\"delta\":" delta ",\"finish_reason\":" fin "}]}\n\n"

static const char CHUNKS[] =
    CHUNK("{\"role\":\"assistant\",\"content\":\"\"}", "null")
    CHUNK("{\"content\":\"hel\"}", "null")
    CHUNK("{\"content\":\"lo\"}", "null")
    CHUNK("{\"tool_calls\":[{\"index\":0,\"id\":\"toolu_1\",\"type\":\"function\",\"function\":{\"name\":\"f\","
          "\"arguments\":\"\"}}]}", "null")
    CHUNK("{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":\"}}]}", "null")
    CHUNK("{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]}", "null")
    CHUNK("{}", "\"tool_calls\"")
    "data: {\"id\":\"msg_01\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,"
    "\"completion_tokens\":4,\"prompt_tokens_details\":{\"cached_tokens\":2}}}\n\n"
    "data: [DONE]\n\n";

static void test_translate(void **state)
{
    (void)state;
    static const char *const want[] = {
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed"};
    char *whole = NULL;
    size_t whole_len = 0;
    for (size_t at = 0; at < sizeof(CHUNKS) - 1; at += 7) {
        ta_resp_stream_t s;
        ta_bytes_t out = feed_split(&s, true, CHUNKS, at);
        assert_true(s.done);
        assert_int_equal(s.content_events, 4);
        if (whole == NULL) {
            whole = malloc(out.len);
            memcpy(whole, out.p, out.len);
            whole_len = out.len;
        } else { /* the same events whatever the split (created_at apart: the same second here) */
            assert_int_equal(out.len, whole_len);
        }
        ta_resp_stream_dispose(&s);
        ta_bytes_free(&out);
    }
    size_t i = 0;
    json_t *last = NULL;
    for (const char *p = whole, *end = whole + whole_len; p < end; i++) {
        const char *e = memmem(p, (size_t)(end - p), "\n\n", 2);
        assert_non_null(e);
        assert_true(i < TA_ARRAY_SIZE(want));
        char line[128];
        snprintf(line, sizeof(line), "event: %s\ndata: ", want[i]);
        assert_memory_equal(p, line, strlen(line));
        json_decref(last);
        last = json_loadb(p + strlen(line), (size_t)(e - p) - strlen(line), 0, NULL);
        assert_non_null(last);
        assert_int_equal(json_integer_value(json_object_get(last, "sequence_number")), (json_int_t)i);
        p = e + 2;
    }
    assert_int_equal(i, TA_ARRAY_SIZE(want));
    json_t *resp = json_object_get(last, "response");
    assert_string_equal(json_string_value(json_object_get(resp, "id")), "resp_01");
    assert_string_equal(json_string_value(json_object_get(resp, "model")), "claude-x");
    assert_string_equal(json_string_value(json_object_get(resp, "status")), "completed");
    json_t *o = json_object_get(resp, "output");
    assert_int_equal(json_array_size(o), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(json_array_get(o, 0),
                                                                                         "content"), 0), "text")),
                        "hello");
    assert_string_equal(json_string_value(json_object_get(json_array_get(o, 1), "arguments")), "{\"a\":1}");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(resp, "usage"), "input_tokens")), 10);
    json_decref(last);
    free(whole);

    /* usage_from: the provider's own usage reported; an error chunk: response.failed */
    ta_resp_stream_t s;
    json_t *req = J("{\"model\":\"m\",\"input\":\"x\"}");
    ta_resp_stream_init(&s, true, req, "claude-up", 0, 0);
    json_decref(req);
    ta_usage_t from = {.present = true, .prompt_tokens = 99, .completion_tokens = 1, .cache_write_tokens = 7};
    s.usage_from = &from;
    ta_bytes_t out = {0};
    const char *err = CHUNK("{\"content\":\"x\"}", "null")
        "data: {\"error\":{\"message\":\"Overloaded\",\"type\":\"upstream_error\",\"code\":\"overloaded_error\"}}\n\n";
    assert_int_equal(ta_resp_stream_feed(&s, err, strlen(err), &out), 0);
    assert_true(s.failed && !s.done);
    const char *f = memmem(out.p, out.len, "event: response.failed\ndata: ", 29);
    assert_non_null(f);
    json_t *fj = json_loadb(f + 29, out.len - (size_t)(f + 29 - out.p) - 2, 0, NULL);
    assert_json(json_object_get(json_object_get(fj, "response"), "error"),
                "{\"code\":\"server_error\",\"message\":\"Overloaded\"}");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(json_object_get(fj, "response"), "usage"),
                                                        "input_tokens")), 99);
    json_decref(fj);
    /* nothing after the failure */
    size_t len = out.len;
    assert_int_equal(ta_resp_stream_feed(&s, "data: [DONE]\n\n", 14, &out), 0);
    assert_int_equal(out.len, len);
    ta_resp_stream_dispose(&s);
    ta_bytes_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validate),     cmocka_unit_test(test_to_chat),   cmocka_unit_test(test_to_anth_refusals),
        cmocka_unit_test(test_from_chat),    cmocka_unit_test(test_usage),     cmocka_unit_test(test_passthrough),
        cmocka_unit_test(test_translate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
