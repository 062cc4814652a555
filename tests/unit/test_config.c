/*
 * test_config.c - master/config.c: the settings table, the file parser, the
 * environment overrides, bounds and cross-checks, against real files in a
 * mkdtemp() directory. Every bad-input class must name file:line and the
 * setting.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ledger/quota.h"
#include "master/config.h"

static char dir[64];
static char path[128];

static int setup(void **state)
{
    snprintf(dir, sizeof(dir), "/tmp/ta-config-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/tokenaudit.conf", dir);
    return 0;
}

static int teardown(void **state)
{
    unlink(path);
    rmdir(dir);
    return 0;
}

static void write_file(const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Load text; expect failure with rule and setting; the message must start
 * with "path:line: ". */
static void expect_error(const char *text, unsigned line, const char *field, const char *rule)
{
    ta_config_t c;
    ta_err_t err = {0};
    char prefix[160];
    write_file(text);
    assert_int_equal(ta_config_load(&c, path, &err), TA_EINVAL);
    snprintf(prefix, sizeof(prefix), "%s:%u: ", path, line);
    if (strncmp(err.message, prefix, strlen(prefix)) != 0)
        fail_msg("message '%s' does not start with '%s'", err.message, prefix);
    assert_string_equal(err.field, field);
    assert_string_equal(err.rule, rule);
    assert_non_null(strstr(err.message, field));
}

static void test_defaults(void **state)
{
    ta_config_t c;
    ta_err_t err = {0};
    assert_int_equal(ta_config_load(&c, NULL, &err), 0);
    assert_string_equal(c.listen, "127.0.0.1:8080");
    assert_int_equal(c.nlisten, 1);
    assert_string_equal(c.listen_addrs[0].host, "127.0.0.1");
    assert_string_equal(c.listen_addrs[0].port, "8080");
    assert_false(c.listen_addrs[0].tls);
    assert_int_equal(c.nadmin, 0);
    assert_string_equal(c.data_dir, "./data");
    assert_string_equal(c.jwt_secret_file, "./data/jwt.secret");
    assert_string_equal(c.master_key_file, "./data/master.key");
    assert_int_equal(c.durability, TA_DURABILITY_RELAXED);
    assert_int_equal(c.sync_interval_ms, 100);
    assert_false(c.ledger_writemap);
    assert_int_equal(c.reserve, TA_RESERVE_STRICT);
    assert_string_equal(c.quota_timezone, "UTC");
    assert_int_equal(c.max_body_size, 4 * 1024 * 1024);
    assert_int_equal(c.jwt_ttl_s, 43200);
    assert_int_equal(c.log_level, TA_LOG_INFO);
    assert_int_equal(c.shutdown_timeout_ms, 30000);
    assert_int_equal(c.on_disconnect, TA_ON_DISCONNECT_DRAIN);
    assert_int_equal(c.ring_slots, 65536);
    assert_int_equal(c.upstream_max_connections, 0); /* automatic: curl sizes the pool */
    assert_int_equal(c.pbkdf2_iterations, 210000);
    assert_int_equal(c.test_clock_offset_s, 0);
    assert_true(ta_config_workers(&c) >= 1);
}

static void test_good_file(void **state)
{
    ta_config_t c;
    ta_err_t err = {0};
    write_file("# a comment\n"
               "\n"
               "listen 0.0.0.0:9000, https://[::1]:9443   # two listeners\n"
               "admin_listen 127.0.0.1:9001\n"
               "tls_cert_file /etc/ta/cert.pem\n"
               "tls_key_file /etc/ta/key.pem\n"
               "   workers 3\n"
               "data_dir /var/lib/tokenaudit\n"
               "durability strict\n"
               "sync_interval_ms 2s\n"
               "ledger_writemap on\n"
               "reserve STRICT\n"
               "quota_timezone Europe/Paris\n"
               "max_body_size 16MiB\n"
               "log_level debug\n"
               "shutdown_timeout_ms 1m\n"
               "on_disconnect abort\n"
               "warning_webhook_url https://hooks.example.com/x#frag\n"
               "ring_slots 1024\n"
               "pbkdf2_iterations 1000\n"
               "test_clock_offset_s -86400\n"
               "jwt_secret_file \"/run/secrets/jwt\"\n");
    assert_int_equal(ta_config_load(&c, path, &err), 0);
    assert_string_equal(c.path, path);
    assert_int_equal(c.nlisten, 2);
    assert_string_equal(c.listen_addrs[0].host, "0.0.0.0");
    assert_string_equal(c.listen_addrs[0].port, "9000");
    assert_false(c.listen_addrs[0].tls);
    assert_string_equal(c.listen_addrs[1].host, "::1");
    assert_string_equal(c.listen_addrs[1].port, "9443");
    assert_true(c.listen_addrs[1].tls);
    assert_int_equal(c.nadmin, 1);
    assert_int_equal(c.workers, 3);
    assert_int_equal(ta_config_workers(&c), 3);
    assert_string_equal(c.data_dir, "/var/lib/tokenaudit");
    assert_int_equal(c.durability, TA_DURABILITY_STRICT);
    assert_int_equal(c.sync_interval_ms, 2000);
    assert_true(c.ledger_writemap);
    assert_int_equal(c.reserve, TA_RESERVE_STRICT);
    assert_string_equal(c.quota_timezone, "Europe/Paris");
    assert_int_equal(c.max_body_size, 16 * 1024 * 1024);
    assert_int_equal(c.log_level, TA_LOG_DEBUG);
    assert_int_equal(c.shutdown_timeout_ms, 60000);
    assert_int_equal(c.on_disconnect, TA_ON_DISCONNECT_ABORT);
    /* a '#' inside a word is not a comment */
    assert_string_equal(c.warning_webhook_url, "https://hooks.example.com/x#frag");
    assert_int_equal(c.ring_slots, 1024);
    assert_int_equal(c.pbkdf2_iterations, 1000);
    assert_int_equal(c.test_clock_offset_s, -86400);
    assert_string_equal(c.jwt_secret_file, "/run/secrets/jwt");
    assert_string_equal(c.master_key_file, "/var/lib/tokenaudit/master.key");
}

static void test_bad_inputs_name_file_line(void **state)
{
    expect_error("workers 2\nno_such_setting 1\n", 2, "no_such_setting", "unknown");
    expect_error("# c\n\nworkers two\n", 3, "workers", "type");
    expect_error("ledger_writemap maybe\n", 1, "ledger_writemap", "type");
    expect_error("durability sometimes\n", 1, "durability", "enum");
    expect_error("max_body_size 4 parsecs\n", 1, "max_body_size", "type");
    expect_error("workers 257\n", 1, "workers", "max");
    expect_error("workers -1\n", 1, "workers", "min");
    expect_error("pbkdf2_iterations 999\n", 1, "pbkdf2_iterations", "min");
    expect_error("max_body_size 2G\n", 1, "max_body_size", "max");
    expect_error("log_level info\nworkers 2\nlog_level debug\n", 3, "log_level", "duplicate");
    expect_error("workers\n", 1, "workers", "type");
    expect_error("workers 99999999999999999999999\n", 1, "workers", "type");
}

static void test_bounds_inclusive(void **state)
{
    ta_config_t c;
    ta_err_t err = {0};
    write_file("workers 256\npbkdf2_iterations 1000\nmax_body_size 1KiB\nsync_interval_ms 1\n");
    assert_int_equal(ta_config_load(&c, path, &err), 0);
    assert_int_equal(c.workers, 256);
    assert_int_equal(c.pbkdf2_iterations, 1000);
    assert_int_equal(c.max_body_size, 1024);
    assert_int_equal(c.sync_interval_ms, 1);
    write_file("workers 0\n");
    assert_int_equal(ta_config_load(&c, path, &err), 0);
    assert_true(ta_config_workers(&c) >= 1 && ta_config_workers(&c) <= 256);
}

static void test_env_overrides_file(void **state)
{
    ta_config_t c;
    ta_err_t err = {0};
    write_file("workers 3\nlog_level warn\n");
    setenv("TOKENAUDIT_WORKERS", "5", 1);
    setenv("TOKENAUDIT_MAX_BODY_SIZE", "1M", 1);
    assert_int_equal(ta_config_load(&c, path, &err), 0);
    assert_int_equal(c.workers, 5);
    assert_int_equal(c.max_body_size, 1024 * 1024);
    assert_int_equal(c.log_level, TA_LOG_WARN); /* untouched by the environment */

    setenv("TOKENAUDIT_WORKERS", "1000", 1);
    assert_int_equal(ta_config_load(&c, path, &err), TA_EINVAL);
    assert_string_equal(err.field, "workers");
    assert_string_equal(err.rule, "max");
    assert_non_null(strstr(err.message, "TOKENAUDIT_WORKERS"));
    unsetenv("TOKENAUDIT_WORKERS");
    unsetenv("TOKENAUDIT_MAX_BODY_SIZE");
}

static void test_cross_checks(void **state)
{
    ta_config_t c;
    ta_err_t err = {0};
    write_file("listen https://127.0.0.1:8443\n");
    assert_int_equal(ta_config_load(&c, path, &err), TA_EINVAL);
    assert_string_equal(err.field, "tls_cert_file");
    write_file("ring_slots 3000\n");
    assert_int_equal(ta_config_load(&c, path, &err), TA_EINVAL);
    assert_string_equal(err.field, "ring_slots");
    write_file("listen 127.0.0.1\n");
    assert_int_equal(ta_config_load(&c, path, &err), TA_EINVAL);
    assert_string_equal(err.field, "listen");
    write_file("listen 127.0.0.1:70000\n");
    assert_int_equal(ta_config_load(&c, path, &err), TA_EINVAL);
    assert_string_equal(err.field, "listen");
    write_file("listen \"\"\n");
    assert_int_equal(ta_config_load(&c, path, &err), TA_EINVAL);
    assert_string_equal(err.rule, "required");
}

static void test_missing_file(void **state)
{
    ta_config_t c;
    ta_err_t err = {0};
    assert_int_equal(ta_config_load(&c, "/nonexistent/tokenaudit.conf", &err), TA_EINVAL);
    assert_non_null(strstr(err.message, "/nonexistent/tokenaudit.conf"));
}

static void test_keep_fixed_on_reload(void **state)
{
    ta_config_t a, b;
    ta_err_t err = {0};
    ta_log_init('M', TA_LOG_ERROR); /* keep the expected warnings quiet */
    write_file("data_dir /a\nworkers 2\nring_slots 1024\n");
    assert_int_equal(ta_config_load(&a, path, &err), 0);
    write_file("data_dir /b\nworkers 4\nring_slots 2048\n");
    assert_int_equal(ta_config_load(&b, path, &err), 0);
    assert_int_equal(ta_config_keep_fixed(&a, &b), 4); /* data_dir, both secret paths, ring_slots */
    assert_string_equal(b.data_dir, "/a");
    assert_int_equal(b.ring_slots, 1024);
    assert_int_equal(b.workers, 4); /* reloadable */
}

static void test_docs_cover_every_setting(void **state)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    ta_config_print_docs(f);
    fclose(f);
    static const char *const names[] = {
        "listen", "admin_listen", "workers", "data_dir", "durability", "sync_interval_ms",
        "ledger_writemap", "reserve", "max_body_size", "jwt_ttl_s", "jwt_secret_file",
        "master_key_file", "log_level", "shutdown_timeout_ms", "on_disconnect",
        "audit_retention_days", "warning_webhook_url", "ring_slots", "upstream_max_connections",
        "stream_drain_timeout_ms", "pbkdf2_iterations", "test_clock_offset_s", "quota_timezone",
        "ledger_map_size_mb", "audit_map_size_mb", "tls_cert_file", "tls_key_file"};
    char needle[64];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(needle, sizeof(needle), "| `%s` |", names[i]);
        if (strstr(buf, needle) == NULL)
            fail_msg("docs lack %s", names[i]);
    }
    assert_non_null(strstr(buf, "`TOKENAUDIT_PBKDF2_ITERATIONS`"));
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_good_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_inputs_name_file_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bounds_inclusive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_overrides_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cross_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keep_fixed_on_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_docs_cover_every_setting, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
