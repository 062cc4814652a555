/*
 * test_money.c - ta_nano_parse, ta_nano_format, ta_nano_price.
 *
 * Decisions pinned here: "-0" is 0; "1." and ".5" are refused (a lone point
 * is more often a typo than a number); "+1", whitespace and exponents are
 * refused; leading zeros ("007") are accepted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ta.h"

static int parse(const char *s, ta_nano_t *out) { return ta_nano_parse(s, strlen(s), out); }

static void assert_parses(const char *s, ta_nano_t want)
{
    ta_nano_t v = 12345;
    int rc = parse(s, &v);
    if (rc != 0)
        fail_msg("\"%s\" refused", s);
    if (v != want)
        fail_msg("\"%s\" parsed as %lld, want %lld", s, (long long)v, (long long)want);
}

static void assert_refused(const char *s)
{
    ta_nano_t v = 777;
    int rc = parse(s, &v);
    if (rc != TA_EINVAL)
        fail_msg("\"%s\" accepted as %lld (rc %d)", s, (long long)v, rc);
    assert_int_equal(v, 777); /* out untouched on failure */
}

static void test_parse_ok(void **state)
{
    (void)state;
    assert_parses("0", 0);
    assert_parses("-0", 0);
    assert_parses("0.0", 0);
    assert_parses("1", 1000000000LL);
    assert_parses("2.5", 2500000000LL);
    assert_parses("0.000000001", 1);
    assert_parses("-0.000000001", -1);
    assert_parses("0.000125", 125000);
    assert_parses("007", 7000000000LL);
    assert_parses("1.100000000", 1100000000LL);
    assert_parses("-3", -3000000000LL);
    assert_parses("9223372036.854775807", INT64_MAX);
    assert_parses("-9223372036.854775808", INT64_MIN);
    assert_parses("9223372036", 9223372036000000000LL);
    assert_parses("00000000000000000000000001", 1000000000LL);
}

static void test_parse_refused(void **state)
{
    (void)state;
    assert_refused("");
    assert_refused("-");
    assert_refused("1.");
    assert_refused(".5");
    assert_refused("-.5");
    assert_refused("1e3");
    assert_refused("1E3");
    assert_refused("+1");
    assert_refused(" 1");
    assert_refused("1 ");
    assert_refused("1.2.3");
    assert_refused("0.0000000001"); /* 10 decimals */
    assert_refused("1.1234567890");
    assert_refused("9223372036.854775808"); /* INT64_MAX + 1 nano */
    assert_refused("-9223372036.854775809");
    assert_refused("9223372037");
    assert_refused("99999999999999999999");
    assert_refused("abc");
    assert_refused("--1");
    assert_refused("0x10");
    assert_refused("NaN");
    assert_refused("inf");
    /* length is honoured: a NUL inside or digits beyond len do not count */
    ta_nano_t v;
    assert_int_equal(ta_nano_parse("12", 1, &v), 0);
    assert_int_equal(v, 1000000000LL);
    assert_int_equal(ta_nano_parse("1\0" "5", 3, &v), TA_EINVAL);
    assert_int_equal(ta_nano_parse(NULL, 0, &v), TA_EINVAL);
}

static void assert_formats(ta_nano_t v, const char *want)
{
    char buf[TA_NANO_STRLEN];
    assert_ptr_equal(ta_nano_format(v, buf), buf);
    assert_string_equal(buf, want);
}

static void test_format(void **state)
{
    (void)state;
    assert_formats(0, "0");
    assert_formats(1, "0.000000001");
    assert_formats(-1, "-0.000000001");
    assert_formats(125000, "0.000125");
    assert_formats(2500000000LL, "2.5");
    assert_formats(1000000000LL, "1");
    assert_formats(-3000000000LL, "-3");
    assert_formats(1100000000LL, "1.1");
    assert_formats(INT64_MAX, "9223372036.854775807");
    assert_formats(INT64_MIN, "-9223372036.854775808");
}

static void test_format_parse_roundtrip(void **state)
{
    (void)state;
    const ta_nano_t vals[] = {0, 1, -1, 9, 10, 999999999, 1000000000, 1000000001, 123456789012345LL,
                              -987654321, INT64_MAX, INT64_MIN, INT64_MAX - 1, INT64_MIN + 1};
    for (size_t i = 0; i < TA_ARRAY_SIZE(vals); i++) {
        char buf[TA_NANO_STRLEN];
        ta_nano_t back;
        ta_nano_format(vals[i], buf);
        assert_int_equal(ta_nano_parse(buf, strlen(buf), &back), 0);
        assert_int_equal(back, vals[i]);
    }
    /* a walk over many magnitudes, every digit position */
    for (ta_nano_t v = 1; v < INT64_MAX / 7; v = v * 7 + 3) {
        char buf[TA_NANO_STRLEN];
        ta_nano_t back;
        ta_nano_format(v, buf);
        assert_int_equal(ta_nano_parse(buf, strlen(buf), &back), 0);
        assert_int_equal(back, v);
        ta_nano_format(-v, buf);
        assert_int_equal(ta_nano_parse(buf, strlen(buf), &back), 0);
        assert_int_equal(back, -v);
    }
}

static void test_price(void **state)
{
    (void)state;
    const ta_nano_t unit = TA_NANO_PER_UNIT;
    /* 1M tokens at 2.5 per 1M costs exactly 2.5 */
    assert_int_equal(ta_nano_price(1000000, 2 * unit + unit / 2), 2 * unit + unit / 2);
    /* 1 token at 2.5 per 1M = 2500 nano exactly */
    assert_int_equal(ta_nano_price(1, 2500000000LL), 2500);
    /* 1 token at 1 nano per 1M = 1e-6 nano, rounded up to 1 */
    assert_int_equal(ta_nano_price(1, 1), 1);
    /* 999999 tokens at 1 nano per 1M: 0.999999 -> 1 */
    assert_int_equal(ta_nano_price(999999, 1), 1);
    /* 1000001 tokens at 1 nano per 1M: 1.000001 -> 2 */
    assert_int_equal(ta_nano_price(1000001, 1), 2);
    /* exact multiples are not rounded */
    assert_int_equal(ta_nano_price(2000000, 1), 2);
    assert_int_equal(ta_nano_price(0, 5 * unit), 0);
    assert_int_equal(ta_nano_price(12345, 0), 0);
    assert_int_equal(ta_nano_price(12345, -5), 0); /* a negative price costs nothing */
    /* 3 tokens at 0.333333333 per 1M: 999999999 / 1e6 = 999.999999 nano -> 1000 */
    assert_int_equal(ta_nano_price(3, 333333333), 1000);
    /* 128-bit safety: tokens * price far above 2^64 but the result fits */
    /* 2^40 tokens at 1,000,000 units per 1M = 2^40 units = 2^40 * 1e9 nano > 2^64 product */
    uint64_t t = 1ull << 40;
    ta_nano_t p = 1000000 * unit; /* 1e15 nano */
    /* tokens * p = 2^40 * 1e15 ~ 1.1e27 > 2^64; result 2^40 * 1e9 = 1.0995e21 > INT64_MAX: saturates */
    assert_int_equal(ta_nano_price(t, p), INT64_MAX);
    /* a product above 2^63 that fits: 2^50 * 8000 / 1e6 = 9007199254740.992 -> ...741 */
    assert_int_equal(ta_nano_price(1ull << 50, 8000), 9007199254741LL);
    /* a product above 2^64 whose result fits: 2^60 tokens at 1e6 nano per 1M = 2^60 */
    assert_int_equal(ta_nano_price(1ull << 60, 1000000), (ta_nano_t)(1ull << 60));
    /* and one nano more per 1M rounds the 2^60 / 1e6 remainder up */
    assert_int_equal(ta_nano_price(1ull << 60, 1000001), (ta_nano_t)(1ull << 60) + 1152921504607LL);
    /* worst case inputs saturate instead of wrapping */
    assert_int_equal(ta_nano_price(UINT64_MAX, INT64_MAX), INT64_MAX);
    /* exactly INT64_MAX: tokens = 1e6, price = INT64_MAX */
    assert_int_equal(ta_nano_price(1000000, INT64_MAX), INT64_MAX);
    /* just below saturation stays exact */
    assert_int_equal(ta_nano_price(1000000, INT64_MAX - 1), INT64_MAX - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_ok),
        cmocka_unit_test(test_parse_refused),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_format_parse_roundtrip),
        cmocka_unit_test(test_price),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
