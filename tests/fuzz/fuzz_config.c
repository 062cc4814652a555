/*
 * fuzz_config.c - the configuration file parser of master/config.h. The
 * parser reads a path (fgets line by line), so the input is written to a
 * temporary file made once per process and rewritten for each input; then
 * ta_config_parse_file on defaults, and ta_config_finish (listen lists,
 * cross-checks) when it parsed. The input, cut at its first NUL, also goes
 * straight to ta_listen_parse.
 *
 * Checked: return codes are 0 or TA_EINVAL (plus TA_ECONFIG-free: no other
 * error exists for a readable file); a refusal names a rule and a message
 * that starts with the file name; every string setting stays NUL-terminated
 * inside its array; parsed listen addresses have a numeric port 0..65535 and
 * at most TA_MAX_LISTEN entries.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "master/config.h"

static char path[64];
static int fd = -1;

static void cleanup(void)
{
    if (path[0] != '\0')
        unlink(path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(path, sizeof(path), "%.40s/ta-fuzz-config-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    fd = mkstemp(path);
    if (fd == -1) {
        fprintf(stderr, "fuzz_config: mkstemp %s: %s\n", path, strerror(errno));
        abort();
    }
    atexit(cleanup);
    return 0;
}

static void check_addrs(const ta_listen_addr_t *a, size_t n)
{
    FUZZ_CHECK(n <= TA_MAX_LISTEN);
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK(strnlen(a[i].host, sizeof(a[i].host)) < sizeof(a[i].host));
        FUZZ_CHECK(strnlen(a[i].port, sizeof(a[i].port)) < sizeof(a[i].port));
        char *end;
        long p = strtol(a[i].port, &end, 10);
        FUZZ_CHECK(a[i].port[0] != '\0' && *end == '\0' && p >= 0 && p <= 65535);
    }
}

static void check_strings(const ta_config_t *c)
{
    const char *s[] = {c->listen, c->admin_listen, c->tls_cert_file, c->tls_key_file, c->data_dir,
                       c->jwt_secret_file, c->master_key_file, c->warning_webhook_url, c->path};
    for (size_t i = 0; i < sizeof(s) / sizeof(s[0]); i++)
        FUZZ_CHECK(strnlen(s[i], TA_CONF_STR) < TA_CONF_STR);
    FUZZ_CHECK(strnlen(c->quota_timezone, sizeof(c->quota_timezone)) < sizeof(c->quota_timezone));
}

static void check_err(int rc, const ta_err_t *err)
{
    FUZZ_CHECK(rc == TA_EINVAL);
    FUZZ_CHECK(err->rule[0] != '\0' && err->message[0] != '\0');
    FUZZ_CHECK(strnlen(err->message, sizeof(err->message)) < sizeof(err->message));
    FUZZ_CHECK(strnlen(err->field, sizeof(err->field)) < sizeof(err->field));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ta_config_t c;
    ta_err_t err;
    int rc;

    if (size > (1u << 20))
        return 0;
    if (ftruncate(fd, 0) == -1 || pwrite(fd, data, size, 0) != (ssize_t)size)
        abort();

    ta_config_defaults(&c);
    memset(&err, 0, sizeof(err));
    rc = ta_config_parse_file(&c, path, &err);
    check_strings(&c);
    if (rc != 0) {
        check_err(rc, &err);
        FUZZ_CHECK(strncmp(err.message, path, strlen(path)) == 0);
    } else {
        memset(&err, 0, sizeof(err));
        rc = ta_config_finish(&c, &err);
        check_strings(&c);
        if (rc != 0) {
            check_err(rc, &err);
        } else {
            FUZZ_CHECK(c.nlisten >= 1);
            check_addrs(c.listen_addrs, c.nlisten);
            check_addrs(c.admin_addrs, c.nadmin);
            FUZZ_CHECK(c.ring_slots > 0 && (c.ring_slots & (c.ring_slots - 1)) == 0);
            FUZZ_CHECK(ta_config_workers(&c) >= 1);
        }
    }

    /* the listen syntax alone, on the input as one value */
    char spec[TA_CONF_STR];
    size_t n = strnlen((const char *)data, size < sizeof(spec) - 1 ? size : sizeof(spec) - 1);
    memcpy(spec, data, n);
    spec[n] = '\0';
    ta_listen_addr_t addrs[4];
    size_t na = 0;
    memset(&err, 0, sizeof(err));
    rc = ta_listen_parse(spec, "listen", addrs, 4, &na, &err);
    if (rc != 0)
        check_err(rc, &err);
    else
        check_addrs(addrs, na);
    return 0;
}
