/*
 * test_metrics.c - the /metrics page as text: model names become label
 * values escaped per the Prometheus text format 0.0.4, and no name can add a
 * line of its own to the page. Uses the private page a process without a
 * master gets (worker/metrics.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "worker/metrics.h"

static char page[1 << 20];

static const char *metrics_page(void)
{
    size_t n = ta_metrics_text(page, sizeof(page));
    assert_true(n < sizeof(page));
    return page;
}

/* Every line is a comment or `name{labels} value` / `name value`, where a
 * label value is a quoted string with only \\, \" and \n as escapes. */
static void assert_well_formed(const char *p)
{
    assert_null(strchr(p, '\r'));
    while (*p != '\0') {
        const char *eol = strchr(p, '\n');
        assert_non_null(eol); /* the page ends with a newline */
        if (*p != '#') {
            assert_true(strncmp(p, "tokenaudit_", 11) == 0);
            const char *q = p;
            while (q < eol && *q != '{' && *q != ' ')
                q++;
            if (*q == '{') {
                q++;
                while (*q != '}') {
                    while (*q != '=')
                        q++;
                    assert_int_equal(*++q, '"');
                    for (q++; *q != '"'; q++) {
                        assert_true(q < eol);
                        if (*q == '\\') {
                            q++;
                            assert_non_null(strchr("\\\"n", *q));
                        }
                    }
                    q++;
                    if (*q == ',')
                        q++;
                }
                q++;
            }
            assert_int_equal(*q, ' ');
        }
        p = eol + 1;
    }
}

static void test_label_escaping(void **state)
{
    (void)state;
    ta_metrics_worker_start(0);
    ta_metrics_request(200, "evil\r\ntokenaudit_fake_total 1", 1000);
    ta_metrics_request(200, "q\"b\\s\nx", 1000);
    ta_metrics_request(404, "bell\x07" "del\x7f" "tab\t", 1000);
    ta_metrics_request(200, "mod\xC3\xA8le", 1000);
    const char *p = metrics_page();
    assert_well_formed(p);
    assert_non_null(strstr(p, "tokenaudit_requests_total{status=\"200\",model=\"evil\xEF\xBF\xBD\\ntokenaudit_fake_total 1\"} 1\n"));
    assert_non_null(strstr(p, "tokenaudit_requests_total{status=\"200\",model=\"q\\\"b\\\\s\\nx\"} 1\n"));
    assert_non_null(strstr(p, "tokenaudit_requests_total{status=\"404\",model=\"bell\xEF\xBF\xBD" "del\xEF\xBF\xBD" "tab\xEF\xBF\xBD\"} 1\n"));
    assert_non_null(strstr(p, "model=\"mod\xC3\xA8le\"} 1\n"));
    /* the injected text never starts a line */
    assert_null(strstr(p, "\ntokenaudit_fake_total"));
}

/* A name of the longest stored length made only of characters that expand
 * (3 bytes each as U+FFFD, 2 as escapes) is written whole. */
static void test_label_longest(void **state)
{
    (void)state;
    char name[TA_METRICS_MODEL_NAME], want[3 * TA_METRICS_MODEL_NAME + 64];
    memset(name, '\r', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    ta_metrics_request(200, name, 1000);
    size_t n = (size_t)snprintf(want, sizeof(want), "model=\"");
    for (size_t i = 0; i < sizeof(name) - 1; i++)
        n += (size_t)snprintf(want + n, sizeof(want) - n, "\xEF\xBF\xBD");
    snprintf(want + n, sizeof(want) - n, "\"} 1\n");
    const char *p = metrics_page();
    assert_well_formed(p);
    assert_non_null(strstr(p, want));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_label_escaping),
        cmocka_unit_test(test_label_longest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
