/*
 * test_jscan - worker/jscan.c against jansson itself: for generated and
 * mutated texts, ta_jscan_usage() must accept exactly what
 * json_loadb(text, len, 0, NULL) accepts and read the same usage and
 * "choices" as the tree would give (the reference below is what
 * worker/sse.c computed with jansson before the scanner).
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
#include "worker/jscan.h"
#include "worker/sse.h"

/* ---- the reference: jansson's tree, read the way sse.c read it --------------- */

static int64_t jint(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (int64_t)json_integer_value(v) : 0;
}

/* -1: json_loadb fails; else like ta_jscan_usage's return */
static int reference(const char *t, size_t n, ta_jscan_usage_t *r)
{
    memset(r, 0, sizeof(*r));
    json_t *root = json_loadb(t, n, 0, NULL);
    if (root == NULL)
        return -1;
    int ret = json_is_object(root) ? 0 : 1;
    json_t *us = json_object_get(root, "usage");
    if (json_is_object(us)) {
        r->usage_object = true;
        r->prompt_tokens = jint(us, "prompt_tokens");
        r->completion_tokens = jint(us, "completion_tokens");
        r->cached_tokens = jint(json_object_get(us, "prompt_tokens_details"), "cached_tokens");
    }
    json_t *ch = json_object_get(root, "choices");
    r->choices = ch == NULL               ? TA_JSCAN_ABSENT
                 : !json_is_array(ch)     ? TA_JSCAN_OTHER
                 : json_array_size(ch) == 0 ? TA_JSCAN_EMPTY
                                          : TA_JSCAN_ITEMS;
    json_decref(root);
    return ret;
}

static void check(const char *t, size_t n)
{
    ta_jscan_usage_t a, r;
    int ra = ta_jscan_usage(t, n, &a);
    int rr = reference(t, n, &r);
    if ((ra < 0) != (rr < 0) || (rr >= 0 && (ra != rr || a.usage_object != r.usage_object ||
                                               a.prompt_tokens != r.prompt_tokens ||
                                               a.completion_tokens != r.completion_tokens ||
                                               a.cached_tokens != r.cached_tokens || a.choices != r.choices))) {
        fprintf(stderr, "disagreement on %zu bytes: jscan %d (usage %d %lld %lld %lld choices %d), jansson %d "
                        "(usage %d %lld %lld %lld choices %d):\n",
                n, ra, a.usage_object, (long long)a.prompt_tokens, (long long)a.completion_tokens,
                (long long)a.cached_tokens, a.choices, rr, r.usage_object, (long long)r.prompt_tokens,
                (long long)r.completion_tokens, (long long)r.cached_tokens, r.choices);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, (unsigned char)t[i] >= 0x20 && (unsigned char)t[i] < 0x7f ? "%c" : "\\x%02x",
                    (unsigned char)t[i]);
        fprintf(stderr, "\n");
        fail();
    }
}

#define CHECK_LIT(s) check(s, sizeof(s) - 1)

/* ---- hand-picked cases ------------------------------------------------------ */

static void test_cases(void **state)
{
    CHECK_LIT("{\"usage\":{\"prompt_tokens\":42,\"completion_tokens\":16,\"total_tokens\":58,"
              "\"prompt_tokens_details\":{\"cached_tokens\":3}},\"choices\":[{\"index\":0}]}");
    CHECK_LIT("{\"usage\":null}");
    CHECK_LIT("nope");
    CHECK_LIT("");
    CHECK_LIT("   ");
    CHECK_LIT("[]");
    CHECK_LIT("[{\"usage\":{\"prompt_tokens\":1}}]");
    CHECK_LIT("{}");
    CHECK_LIT("{} ");
    CHECK_LIT("{} x");
    CHECK_LIT("{}{}");
    CHECK_LIT("\"x\"");
    CHECK_LIT("1");
    CHECK_LIT("{\"usage\":{\"prompt_tokens\":-5,\"completion_tokens\":2.0}}");
    CHECK_LIT("{\"usage\":{\"prompt_tokens\":5},\"usage\":{\"completion_tokens\":7}}");
    CHECK_LIT("{\"usage\":{\"prompt_tokens\":5,\"prompt_tokens\":\"9\"}}");
    CHECK_LIT("{\"usage\":{\"prompt_tokens_details\":{\"cached_tokens\":4},\"prompt_tokens_details\":1}}");
    CHECK_LIT("{\"us\\u0061ge\":{\"prompt_tokens\":5}}");
    CHECK_LIT("{\"usage\\u0000\":{\"prompt_tokens\":5}}");
    CHECK_LIT("{\"usage\":{\"prompt_tokens\":9223372036854775807}}");
    CHECK_LIT("{\"usage\":{\"prompt_tokens\":9223372036854775808}}");
    CHECK_LIT("{\"usage\":{\"prompt_tokens\":-9223372036854775808}}");
    CHECK_LIT("{\"usage\":{\"prompt_tokens\":-9223372036854775809}}");
    CHECK_LIT("{\"a\":1e308,\"b\":1e309}");
    CHECK_LIT("{\"a\":-1e309}");
    CHECK_LIT("{\"a\":1e-400}");
    CHECK_LIT("{\"a\":01}");
    CHECK_LIT("{\"a\":-0}");
    CHECK_LIT("{\"a\":-}");
    CHECK_LIT("{\"a\":1.}");
    CHECK_LIT("{\"a\":.5}");
    CHECK_LIT("{\"a\":1e}");
    CHECK_LIT("{\"a\":1E+2}");
    CHECK_LIT("{\"a\":+1}");
    CHECK_LIT("{\"a\":tru}");
    CHECK_LIT("{\"a\":truex}");
    CHECK_LIT("{\"a\":true1}");
    CHECK_LIT("{\"a\":nulll}");
    CHECK_LIT("{\"a\":\"\\ud83d\\ude00\"}");
    CHECK_LIT("{\"a\":\"\\ud83d\"}");
    CHECK_LIT("{\"a\":\"\\ude00\"}");
    CHECK_LIT("{\"a\":\"\\ud83d\\u0041\"}");
    CHECK_LIT("{\"a\":\"\\u0000\"}");
    CHECK_LIT("{\"a\":\"\\x\"}");
    CHECK_LIT("{\"a\":\"\\u12\"}");
    CHECK_LIT("{\"a\":\"\xc3\xa9\"}");
    CHECK_LIT("{\"a\":\"\xc3\"}");
    CHECK_LIT("{\"a\":\"\xc0\x80\"}");
    CHECK_LIT("{\"a\":\"\xed\xa0\x80\"}");
    CHECK_LIT("{\"a\":\"\xf4\x90\x80\x80\"}");
    CHECK_LIT("{\"a\":\"\xf0\x9f\x98\x80\"}");
    CHECK_LIT("{\"a\":\"\t\"}");
    CHECK_LIT("{\"a\":1\0}");
    CHECK_LIT("[1\0]");
    CHECK_LIT("[1\0\0]");
    CHECK_LIT("[true\0]");
    CHECK_LIT("[\"x\"\0]");
    CHECK_LIT("[1,]");
    CHECK_LIT("[,1]");
    CHECK_LIT("{\"a\":1,}");
    CHECK_LIT("{\"a\" 1}");
    CHECK_LIT("{1:1}");
    CHECK_LIT("{\"choices\":[]}");
    CHECK_LIT("{\"choices\":[],\"choices\":[1]}");
    CHECK_LIT("{\"choices\":{}}");
    CHECK_LIT("{\"choices\":null}");
    CHECK_LIT("\xef\xbb\xbf{}");
    CHECK_LIT("{\f}");
    CHECK_LIT("{\v}");
}

static void test_depth(void **state)
{
    /* jansson's bound: a value nested in 2047 containers is fine, in 2048 not */
    size_t cap = 2 * 2100 + 8;
    char *b = malloc(cap);
    assert_non_null(b);
    static const int depths[] = {2046, 2047, 2048, 2049};
    for (size_t d = 0; d < 4; d++) {
        for (int scalar = 0; scalar < 2; scalar++) {
            size_t n = 0;
            for (int i = 0; i < depths[d]; i++)
                b[n++] = '[';
            if (scalar)
                b[n++] = '1';
            for (int i = 0; i < depths[d]; i++)
                b[n++] = ']';
            check(b, n);
        }
    }
    free(b);
}

/* ---- generated and mutated texts ---------------------------------------------- */

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

typedef struct {
    char *p;
    size_t n, cap;
} buf_t;

static void add(buf_t *b, const char *s, size_t n)
{
    if (b->n + n > b->cap)
        return; /* generated texts are bounded: a truncated one is still a test input */
    memcpy(b->p + b->n, s, n);
    b->n += n;
}
static void adds(buf_t *b, const char *s) { add(b, s, strlen(s)); }

static const char *const keys[] = {"\"usage\"", "\"choices\"", "\"prompt_tokens\"", "\"completion_tokens\"",
                                   "\"prompt_tokens_details\"", "\"cached_tokens\"", "\"x\"", "\"us\\u0061ge\"",
                                   "\"\\u0075sage\"", "\"prompt_tokens\\u00e9\"", "\"\"", "\"usage \""};
static const char *const scalars[] = {
    "0", "1", "42", "-3", "7", "16", "9223372036854775807", "9223372036854775808", "-9223372036854775808",
    "-9223372036854775809", "18446744073709551616", "1.5", "5.0", "1e3", "1e400", "-1e400", "1e-400", "-0", "0.0",
    "true", "false", "null", "\"\"", "\"a\"", "\"\\ud83d\\ude00\"", "\"\\n\\t\\\"\\\\\\/\\b\\f\\r\"",
    "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"", "\"12\"", "\"\\u00e9\"", "\"\\uD800\\uDC00\""};
static const char *const ws[] = {"", "", "", " ", "\n", "\r\n\t "};

static void gen(buf_t *b, int depth, int ctx)
{
    adds(b, ws[rnd(6)]);
    uint32_t k = depth > 5 ? 3 : rnd(depth == 0 ? 2 : 8);
    if (k == 0 || (ctx == 1 && rnd(3) == 0)) {
        adds(b, "{");
        int n = (int)rnd(5);
        for (int i = 0; i < n; i++) {
            if (i)
                adds(b, ",");
            adds(b, ws[rnd(6)]);
            int ki = (int)rnd(sizeof(keys) / sizeof(keys[0]));
            adds(b, keys[ki]);
            adds(b, ws[rnd(6)]);
            adds(b, ":");
            gen(b, depth + 1, ki < 6 ? 1 : 0);
        }
        adds(b, ws[rnd(6)]);
        adds(b, "}");
    } else if (k == 1 || k == 2) {
        adds(b, "[");
        int n = (int)rnd(4);
        for (int i = 0; i < n; i++) {
            if (i)
                adds(b, ",");
            gen(b, depth + 1, 0);
        }
        adds(b, "]");
    } else {
        adds(b, scalars[rnd(sizeof(scalars) / sizeof(scalars[0]))]);
    }
    adds(b, ws[rnd(6)]);
}

static void mutate(buf_t *b)
{
    static const char bytes[] = "{}[]:,\"\\0123456789.eE+-tfnu \t\n\r\x00\x80\xbf\xc3\xe2\xed\xf0\xff";
    int m = (int)rnd(3) + 1;
    for (int i = 0; i < m && b->n > 0; i++) {
        size_t at = rnd((uint32_t)b->n);
        char c = bytes[rnd(sizeof(bytes) - 1)];
        switch (rnd(3)) {
        case 0: b->p[at] = c; break;
        case 1:
            memmove(b->p + at, b->p + at + 1, b->n - at - 1);
            b->n--;
            break;
        default:
            if (b->n < b->cap) {
                memmove(b->p + at + 1, b->p + at, b->n - at);
                b->p[at] = c;
                b->n++;
            }
        }
    }
}

static void test_generated(void **state)
{
    char mem[4096];
    for (int i = 0; i < 40000; i++) {
        buf_t b = {mem, 0, sizeof(mem)};
        gen(&b, 0, 0);
        check(b.p, b.n);
        for (int j = 0; j < 3; j++) {
            buf_t c = b;
            char mem2[4096];
            memcpy(mem2, b.p, b.n);
            c.p = mem2;
            mutate(&c);
            check(c.p, c.n);
        }
    }
}

/* ---- what the proxy sees ------------------------------------------------------- */

static void test_usage_parse_uses_it(void **state)
{
    static const char body[] = "{\"id\":\"x\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                               "\"content\":\"hi\"}}],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":20,"
                               "\"prompt_tokens_details\":{\"cached_tokens\":30}}}";
    ta_usage_t u = {0};
    assert_int_equal(ta_usage_parse(body, strlen(body), &u), 0);
    assert_true(u.present);
    assert_int_equal(u.prompt_tokens, 10);
    assert_int_equal(u.completion_tokens, 20);
    assert_int_equal(u.cached_tokens, 10); /* never more than the prompt */
    memset(&u, 0, sizeof(u));
    assert_int_equal(ta_usage_parse("[1]", 3, &u), TA_EINVAL);
    assert_int_equal(ta_usage_parse("{\"usage\":[]}", 12, &u), TA_ENOTFOUND);
    assert_false(u.present);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_generated),
        cmocka_unit_test(test_usage_parse_uses_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
