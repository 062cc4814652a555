/* test_duration.c - x-ratelimit-reset-* durations as OpenAI writes them
 * (worker/proxy.h, ta_proxy_duration). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "worker/proxy.h"

static void expect(int64_t ms, const char *want)
{
    char b[40];
    ta_proxy_duration(ms, b, sizeof(b));
    assert_string_equal(b, want);
}

static void test_durations(void **state)
{
    (void)state;
    expect(0, "0ms");
    expect(-5, "0ms");
    expect(20, "20ms");
    expect(999, "999ms");
    expect(1000, "1s");
    expect(6500, "6.5s");
    expect(6250, "6.25s");
    expect(6001, "6.001s");
    expect(59999, "59.999s");
    expect(60000, "1m0s");
    expect(61500, "1m1.5s");
    expect(3600000, "1h0m0s");
    expect(3723250, "1h2m3.25s");
    expect(90061000, "25h1m1s");
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_durations)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
