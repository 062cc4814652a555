/*
 * test_sse - the SSE pass-through parser (worker/sse.c) and the prompt-token
 * estimate (worker/tokens.c).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <cmocka.h>

#include "schema/ta.h"
#include "worker/sse.h"
#include "worker/tokens.h"

#define C1 "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n"
#define C2 "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}],\"usage\":null}\n\n"
#define C3 "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n"
#define CU "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":2,\"total_tokens\":13,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n"
#define DONE "data: [DONE]\n\n"

static const char stream[] = C1 C2 C3 CU DONE;

/* feed `in` in pieces of `step` bytes */
static void run(ta_sse_t *s, const char *in, size_t len, size_t step, ta_bytes_t *out)
{
    for (size_t off = 0; off < len; off += step) {
        size_t n = len - off < step ? len - off : step;
        assert_int_equal(ta_sse_feed(s, in + off, n, out), 0);
    }
    assert_int_equal(ta_sse_finish(s, out), 0);
}

static void test_passthrough_keep_usage(void **state)
{
    static const size_t steps[] = {1, 2, 7, 64, sizeof(stream)};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        ta_sse_t s;
        ta_bytes_t out = {0};
        ta_sse_init(&s, true, 0);
        run(&s, stream, strlen(stream), steps[i], &out);
        assert_int_equal(out.len, strlen(stream));
        assert_memory_equal(out.p, stream, out.len);
        assert_true(s.done);
        assert_true(s.usage.present);
        assert_int_equal(s.usage.prompt_tokens, 11);
        assert_int_equal(s.usage.completion_tokens, 2);
        assert_int_equal(s.usage.cached_tokens, 4);
        assert_int_equal(s.events, 5);
        assert_int_equal(s.content_events, 3);
        assert_int_equal(s.dropped, 0);
        ta_sse_dispose(&s);
        ta_bytes_free(&out);
    }
}

static void test_drop_usage_chunk(void **state)
{
    static const size_t steps[] = {1, 3, sizeof(stream)};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        ta_sse_t s;
        ta_bytes_t out = {0};
        ta_sse_init(&s, false, 0);
        run(&s, stream, strlen(stream), steps[i], &out);
        char *txt = strndup(out.p, out.len);
        /* the usage is read, but the client sees neither the usage chunk
         * nor the "usage":null members it did not ask for */
        assert_true(s.usage.present);
        assert_int_equal(s.usage.prompt_tokens, 11);
        assert_int_equal(s.dropped, 1);
        assert_null(strstr(txt, "usage"));
        assert_non_null(strstr(txt, "\"Hel\""));
        assert_non_null(strstr(txt, "\"finish_reason\":\"stop\"}]}\n\n"));
        size_t dl = strlen(DONE);
        assert_string_equal(txt + strlen(txt) - dl, DONE);
        free(txt);
        ta_sse_dispose(&s);
        ta_bytes_free(&out);
    }
}

static void test_crlf_and_comments(void **state)
{
    const char in[] = ": keep-alive\r\n\r\n"
                      "event: message\r\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}\r\n\r\n"
                      "data: [DONE]\r\n\r\n";
    ta_sse_t s;
    ta_bytes_t out = {0};
    ta_sse_init(&s, false, 0);
    run(&s, in, strlen(in), 5, &out);
    assert_int_equal(s.events, 3);
    assert_int_equal(s.dropped, 1);
    assert_int_equal(s.usage.prompt_tokens, 5);
    assert_int_equal(s.usage.cached_tokens, 0);
    assert_true(s.done);
    const char want[] = ": keep-alive\r\n\r\ndata: [DONE]\r\n\r\n";
    assert_int_equal(out.len, strlen(want));
    assert_memory_equal(out.p, want, out.len);
    ta_sse_dispose(&s);
    ta_bytes_free(&out);
}

static void test_incomplete_tail_and_cut(void **state)
{
    /* a stream cut mid-event: complete events go out at once, the tail only
     * at finish */
    const char in[] = C1 "data: {\"choices\":[{\"delta\":{\"content\":\"x";
    ta_sse_t s;
    ta_bytes_t out = {0};
    ta_sse_init(&s, true, 0);
    assert_int_equal(ta_sse_feed(&s, in, strlen(in), &out), 0);
    assert_int_equal(out.len, strlen(C1));
    assert_false(s.done);
    assert_false(s.usage.present);
    assert_int_equal(ta_sse_finish(&s, &out), 0);
    assert_int_equal(out.len, strlen(in));
    ta_sse_dispose(&s);
    ta_bytes_free(&out);
}

static void test_event_bound(void **state)
{
    ta_sse_t s;
    ta_bytes_t out = {0};
    ta_sse_init(&s, true, 1024);
    char big[600];
    memset(big, 'a', sizeof(big));
    assert_int_equal(ta_sse_feed(&s, "data: ", 6, &out), 0);
    assert_int_equal(ta_sse_feed(&s, big, sizeof(big), &out), 0);
    assert_int_equal(ta_sse_feed(&s, big, sizeof(big), &out), TA_ETOOBIG);
    ta_sse_dispose(&s);
    ta_bytes_free(&out);

    /* many small events in one feed stay within the bound */
    ta_sse_init(&s, true, 256);
    char many[4096] = "";
    size_t len = 0;
    while (len + strlen(C1) < sizeof(many) - 1) {
        memcpy(many + len, C1, strlen(C1));
        len += strlen(C1);
    }
    assert_int_equal(ta_sse_feed(&s, many, len, &out), 0);
    assert_int_equal(out.len, len);
    ta_sse_dispose(&s);
    ta_bytes_free(&out);
}

static void test_usage_parse(void **state)
{
    const char body[] = "{\"id\":\"x\",\"choices\":[],\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":20,"
                        "\"total_tokens\":120,\"prompt_tokens_details\":{\"cached_tokens\":64}}}";
    ta_usage_t u = {0};
    assert_int_equal(ta_usage_parse(body, strlen(body), &u), 0);
    assert_true(u.present);
    assert_int_equal(u.prompt_tokens, 100);
    assert_int_equal(u.completion_tokens, 20);
    assert_int_equal(u.cached_tokens, 64);
    memset(&u, 0, sizeof(u));
    assert_int_equal(ta_usage_parse("{\"usage\":null}", 14, &u), TA_ENOTFOUND);
    assert_false(u.present);
    assert_int_equal(ta_usage_parse("nope", 4, &u), TA_EINVAL);
    /* negative or absurd numbers never go negative */
    const char neg[] = "{\"usage\":{\"prompt_tokens\":-5,\"completion_tokens\":3,\"prompt_tokens_details\":{\"cached_tokens\":9}}}";
    assert_int_equal(ta_usage_parse(neg, strlen(neg), &u), 0);
    assert_int_equal(u.prompt_tokens, 0);
    assert_int_equal(u.cached_tokens, 0);
}

static void test_tokens(void **state)
{
    ta_tokens_t t;
    json_t *b = json_loads("{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"You are terse.\"},"
                           "{\"role\":\"user\",\"content\":\"What is the capital of France?\"}]}",
                           0, NULL);
    assert_non_null(b);
    ta_tokens_prompt(b, &t);
    assert_int_equal(t.messages, 2);
    /* keys and strings: role,system,content,"You are terse." + role,user,content,question */
    assert_int_equal(t.text_bytes, 4 + 6 + 7 + 14 + 4 + 4 + 7 + 30);
    assert_int_equal(t.estimate, (t.text_bytes + 2) / 3 + 2 * 4 + 3);
    assert_int_equal(t.upper, t.text_bytes + 2 * 4 + 3);
    assert_true(t.upper >= t.estimate);
    json_decref(b);

    /* token ids count exactly; an image costs a bounded amount */
    b = json_loads("{\"input\":[[1,2,3],[4,5]]}", 0, NULL);
    ta_tokens_prompt(b, &t);
    assert_int_equal(t.estimate, 5 + 3);
    assert_int_equal(t.upper, 5 + 3);
    json_decref(b);
    b = json_loads("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hi\"},"
                   "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AAAA\"}}]}]}",
                   0, NULL);
    ta_tokens_prompt(b, &t);
    assert_int_equal(t.images, 1);
    assert_true(t.upper >= TA_TOKENS_IMAGE_MAX);
    json_decref(b);
    b = json_loads("{\"prompt\":\"hello world\"}", 0, NULL);
    ta_tokens_prompt(b, &t);
    assert_int_equal(t.text_bytes, 11);
    assert_int_equal(t.estimate, 4 + 3);
    json_decref(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_passthrough_keep_usage), cmocka_unit_test(test_drop_usage_chunk),
        cmocka_unit_test(test_crlf_and_comments),      cmocka_unit_test(test_incomplete_tail_and_cut),
        cmocka_unit_test(test_event_bound),            cmocka_unit_test(test_usage_parse),
        cmocka_unit_test(test_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
