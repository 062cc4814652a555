/*
 * test_upstream - both engines of worker/upstream.h (h2o, then curl) against
 * the real fake upstream (a child process on an ephemeral port), driven by a
 * real h2o evloop; then https:// against a second fake upstream with a
 * self-signed certificate (made with the openssl command) that the client
 * trusts through ca_file.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "worker/upstream.h"

static pid_t g_fake_pid, g_tls_pid;
static int g_port, g_tls_port;
static char g_dir[PATH_MAX];
static char g_log[PATH_MAX + 16];
static char g_ca[PATH_MAX + 16];
static h2o_loop_t *g_loop;
static int g_engine; /* the engine the group runs with */
static const char *g_scheme = "http", *g_host = "127.0.0.1";
static const char *g_ca_file; /* ca_file of new_up() */

/* ---- fake upstream child ------------------------------------------------ */

static void fake_path(char *out, size_t cap)
{
    const char *env = getenv("TA_FAKE_UPSTREAM");
    if (env != NULL) {
        snprintf(out, cap, "%s", env);
        return;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    assert_true(n > 0);
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    *slash = '\0';
    snprintf(out, cap, "%s/fake_upstream", self);
}

/* Start a fake upstream with extra arguments; returns its pid, *port set. */
static pid_t spawn_fake(const char *tls_cert, const char *tls_key, int *port)
{
    char bin[PATH_MAX + 32];
    fake_path(bin, sizeof(bin));
    int pfd[2];
    if (pipe(pfd) == -1)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pfd[1], 1);
        close(pfd[0]);
        if (tls_cert != NULL)
            execl(bin, bin, "--port", "0", "--log", g_log, "--tls-cert", tls_cert, "--tls-key", tls_key, (char *)NULL);
        else
            execl(bin, bin, "--port", "0", "--log", g_log, (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    char line[64] = "";
    size_t len = 0;
    while (len < sizeof(line) - 1) {
        ssize_t r = read(pfd[0], line + len, 1);
        if (r <= 0 || line[len] == '\n')
            break;
        len++;
    }
    line[len] = '\0';
    close(pfd[0]);
    if (sscanf(line, "listening on %d", port) != 1) {
        fprintf(stderr, "fake upstream did not start (%s): '%s'\n", bin, line);
        return -1;
    }
    return pid;
}

static int start_fake(void **state)
{
    snprintf(g_dir, sizeof(g_dir), "/tmp/ta-test-upstream-XXXXXX");
    if (mkdtemp(g_dir) == NULL)
        return -1;
    snprintf(g_log, sizeof(g_log), "%s/fake.log", g_dir);
    if ((g_fake_pid = spawn_fake(NULL, NULL, &g_port)) <= 0)
        return -1;
    signal(SIGPIPE, SIG_IGN);
    g_loop = h2o_evloop_create();
    return 0;
}

static int start_h2o(void **state)
{
    g_engine = TA_UP_ENGINE_H2O;
    return start_fake(state);
}

static int start_curl(void **state)
{
    g_engine = TA_UP_ENGINE_CURL;
    return start_fake(state);
}

static int stop_fake(void **state)
{
    kill(g_fake_pid, SIGTERM);
    waitpid(g_fake_pid, NULL, 0);
    if (g_tls_pid > 0) {
        kill(g_tls_pid, SIGTERM);
        waitpid(g_tls_pid, NULL, 0);
        g_tls_pid = 0;
    }
    h2o_evloop_destroy(g_loop);
    char path[PATH_MAX + 32];
    static const char *const files[] = {"fake.log", "ca.pem", "key.pem", "other.pem", "other.key"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", g_dir, files[i]);
        unlink(path);
    }
    rmdir(g_dir);
    return 0;
}

/* lines of the fake's log containing needle */
static int log_count(const char *needle)
{
    FILE *f = fopen(g_log, "r");
    if (f == NULL)
        return 0;
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strstr(line, needle) != NULL)
            n++;
    fclose(f);
    return n;
}

/* ---- a call and its collected result --------------------------------------- */

struct res {
    bool done;
    int err;
    ta_upcall_info_t info;
    char body[65536];
    size_t len;
    int pause_every;  /* refuse every n-th on_data with TA_UP_PAUSE (0: never) */
    int ncalls, npauses;
    bool resume_inline; /* call ta_upcall_resume from inside on_data */
    bool cancel_on_data;
    ta_upcall_t *call;
    h2o_timeout_entry_t resume_entry;
    char retry_after[16];
};

static h2o_timeout_t g_zero;

static void resume_cb(h2o_timeout_entry_t *e)
{
    struct res *r = H2O_STRUCT_FROM_MEMBER(struct res, resume_entry, e);
    ta_upcall_resume(r->call);
}

static int on_header(void *ctx, const char *name, size_t nlen, const char *v, size_t vlen)
{
    struct res *r = ctx;
    if (nlen == 11 && strncasecmp(name, "retry-after", 11) == 0)
        snprintf(r->retry_after, sizeof(r->retry_after), "%.*s", (int)vlen, v);
    return 0;
}

static int on_data(void *ctx, const char *p, size_t n)
{
    struct res *r = ctx;
    r->ncalls++;
    if (r->cancel_on_data) {
        ta_upcall_cancel(r->call);
        r->done = true; /* no on_done will come */
        return TA_UP_CONSUMED;
    }
    if (r->pause_every > 0 && r->ncalls % r->pause_every == 0) {
        r->npauses++;
        if (r->resume_inline)
            ta_upcall_resume(r->call);
        else
            h2o_timeout_link(g_loop, &g_zero, &r->resume_entry);
        return TA_UP_PAUSE;
    }
    assert_true(r->len + n < sizeof(r->body));
    memcpy(r->body + r->len, p, n);
    r->len += n;
    r->body[r->len] = '\0';
    return TA_UP_CONSUMED;
}

static void on_done(void *ctx, int err, const ta_upcall_info_t *info)
{
    struct res *r = ctx;
    assert_false(r->done);
    r->done = true;
    r->err = err;
    r->info = *info;
    r->info.msg = NULL;
}

static void run_until(bool *flag)
{
    /* bounded so a bug fails the test instead of hanging it */
    for (int i = 0; i < 200000 && !*flag; i++)
        h2o_evloop_run(g_loop, 10);
    assert_true(*flag);
}

static void start(ta_upstream_t *up, struct res *r, const char *path, const char *scenario, const char *body,
                  int32_t first_byte_ms, int32_t idle_ms)
{
    char url[128], sh[128];
    snprintf(url, sizeof(url), "%s://%s:%d%s", g_scheme, g_host, g_port, path);
    snprintf(sh, sizeof(sh), "X-Fake-Scenario: %s", scenario);
    const char *hdrs[] = {"Content-Type: application/json", "Authorization: Bearer sk-test-9999", sh};
    r->resume_entry.cb = resume_cb;
    ta_upcall_spec_t spec = {
        .url = url,
        .headers = hdrs,
        .nheaders = 3,
        .body = body,
        .body_len = body != NULL ? strlen(body) : 0,
        .connect_timeout_ms = 2000,
        .first_byte_timeout_ms = first_byte_ms,
        .idle_timeout_ms = idle_ms,
        .total_timeout_ms = 60000,
        .ctx = r,
        .on_header = on_header,
        .on_data = on_data,
        .on_done = on_done,
    };
    assert_int_equal(ta_upcall_start(up, &spec, &r->call), 0);
}

static const char *chat_body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
static const char *stream_body =
    "{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":true},\"fake_chunks\":40}";

static ta_upstream_t *new_up(bool allow_resend)
{
    ta_upstream_t *up;
    ta_upstream_opts_t o = {.engine = g_engine, .max_connects = 4, .allow_resend = allow_resend, .ca_file = g_ca_file};
    h2o_timeout_init(g_loop, &g_zero, 0);
    assert_int_equal(ta_upstream_create(&up, g_loop, &o), 0);
    return up;
}

static void free_up(ta_upstream_t *up)
{
    ta_upstream_destroy(up);
    h2o_timeout_dispose(g_loop, &g_zero);
}

/* ---- tests -------------------------------------------------------------------- */

static void test_nonstream(void **state)
{
    ta_upstream_t *up = new_up(false);
    static struct res r;
    memset(&r, 0, sizeof(r));
    start(up, &r, "/v1/chat/completions", "ok", chat_body, 5000, 5000);
    run_until(&r.done);
    assert_int_equal(r.err, TA_UP_OK);
    assert_int_equal(r.info.status, 200);
    assert_non_null(strstr(r.body, "\"prompt_tokens_details\""));
    assert_non_null(strstr(r.body, "tok4"));
    assert_int_equal(r.info.bytes_in, r.len);
    assert_int_equal(ta_upstream_inflight(up), 0);

    /* the second call reuses the pooled connection */
    memset(&r, 0, sizeof(r));
    start(up, &r, "/v1/models", "ok", NULL, 5000, 5000);
    run_until(&r.done);
    assert_int_equal(r.err, TA_UP_OK);
    assert_true(r.info.reused);
    assert_non_null(strstr(r.body, "\"object\":\"list\""));
    free_up(up);
}

static void check_stream(struct res *r)
{
    assert_int_equal(r->err, TA_UP_OK);
    assert_int_equal(r->info.status, 200);
    for (int i = 0; i < 40; i++) {
        char t[32];
        snprintf(t, sizeof(t), "\"tok%d \"", i);
        assert_non_null(strstr(r->body, t));
    }
    assert_non_null(strstr(r->body, "\"cached_tokens\""));
    size_t dl = strlen("data: [DONE]\n\n");
    assert_true(r->len > dl);
    assert_string_equal(r->body + r->len - dl, "data: [DONE]\n\n");
}

static void test_stream_pause_resume(void **state)
{
    ta_upstream_t *up = new_up(false);
    static struct res r;
    memset(&r, 0, sizeof(r));
    r.pause_every = 2;
    start(up, &r, "/v1/chat/completions", "slow_chunks:1", stream_body, 5000, 5000);
    run_until(&r.done);
    check_stream(&r);
    assert_true(r.npauses > 0);

    /* resume requested from inside on_data (an engine's callback): deferred */
    memset(&r, 0, sizeof(r));
    r.pause_every = 3;
    r.resume_inline = true;
    start(up, &r, "/v1/chat/completions", "slow_chunks:1", stream_body, 5000, 5000);
    run_until(&r.done);
    check_stream(&r);
    assert_true(r.npauses > 0);
    free_up(up);
}

static void test_timeouts(void **state)
{
    ta_upstream_t *up = new_up(false);
    static struct res r;
    memset(&r, 0, sizeof(r));
    start(up, &r, "/v1/chat/completions", "slow_first_byte:30000", chat_body, 100, 0);
    run_until(&r.done);
    assert_int_equal(r.err, TA_UP_ETIMEOUT_FIRST_BYTE);
    assert_int_equal(r.info.status, 0);

    memset(&r, 0, sizeof(r));
    start(up, &r, "/v1/chat/completions", "slow_chunks:30000", stream_body, 5000, 100);
    run_until(&r.done);
    assert_int_equal(r.err, TA_UP_ETIMEOUT_IDLE);
    assert_int_equal(r.info.status, 200);
    assert_non_null(strstr(r.body, "tok0"));
    assert_int_equal(ta_upstream_inflight(up), 0);
    free_up(up);
}

static void test_status_passthrough(void **state)
{
    ta_upstream_t *up = new_up(false);
    static struct res r;
    memset(&r, 0, sizeof(r));
    start(up, &r, "/v1/chat/completions", "status:503", chat_body, 5000, 5000);
    run_until(&r.done);
    assert_int_equal(r.err, TA_UP_OK);
    assert_int_equal(r.info.status, 503);
    assert_non_null(strstr(r.body, "\"error\""));

    memset(&r, 0, sizeof(r));
    start(up, &r, "/v1/chat/completions", "rate_limit", chat_body, 5000, 5000);
    run_until(&r.done);
    assert_int_equal(r.info.status, 429);
    assert_string_equal(r.retry_after, "1");
    free_up(up);
}

static void test_connect_refused(void **state)
{
    /* a port nobody listens on: bind one, read it, close it */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    close(fd);
    int saved = g_port;
    g_port = ntohs(sa.sin_port);
    ta_upstream_t *up = new_up(false);
    static struct res r;
    memset(&r, 0, sizeof(r));
    start(up, &r, "/v1/chat/completions", "ok", chat_body, 5000, 5000);
    run_until(&r.done);
    g_port = saved;
    assert_int_equal(r.err, TA_UP_ECONNECT);
    assert_true(ta_up_err_unsent(r.err));
    free_up(up);
}

static void test_stream_cut(void **state)
{
    ta_upstream_t *up = new_up(false);
    static struct res r;
    memset(&r, 0, sizeof(r));
    start(up, &r, "/v1/chat/completions", "cut_stream:3", stream_body, 5000, 5000);
    run_until(&r.done);
    assert_int_equal(r.err, TA_UP_ECUT);
    assert_non_null(strstr(r.body, "tok2"));
    assert_null(strstr(r.body, "[DONE]"));
    free_up(up);
}

static void test_cancel(void **state)
{
    ta_upstream_t *up = new_up(false);
    static struct res r;
    memset(&r, 0, sizeof(r));
    r.cancel_on_data = true;
    start(up, &r, "/v1/chat/completions", "slow_chunks:20", stream_body, 5000, 5000);
    run_until(&r.done);
    /* let the loop run the deferred free; the client stays usable */
    for (int i = 0; i < 5; i++)
        h2o_evloop_run(g_loop, 1);
    assert_int_equal(ta_upstream_inflight(up), 0);

    /* cancel from outside any callback, before anything arrived */
    memset(&r, 0, sizeof(r));
    start(up, &r, "/v1/chat/completions", "slow_first_byte:30000", chat_body, 0, 0);
    h2o_evloop_run(g_loop, 1);
    ta_upcall_cancel(r.call);
    assert_int_equal(ta_upstream_inflight(up), 0);

    memset(&r, 0, sizeof(r));
    start(up, &r, "/v1/chat/completions", "ok", chat_body, 5000, 5000);
    run_until(&r.done);
    assert_int_equal(r.err, TA_UP_OK);
    free_up(up);
}

/* An idle keep-alive connection closed by the provider must not turn one
 * call into two POSTs. */
static void test_idle_close_no_duplicate(void **state)
{
    ta_upstream_t *up = new_up(false);
    static struct res r;
    int before = log_count("scenario=after_idle_close");
    memset(&r, 0, sizeof(r));
    start(up, &r, "/v1/chat/completions", "close_idle", chat_body, 5000, 5000);
    run_until(&r.done);
    assert_int_equal(r.err, TA_UP_OK);
    bool closed = false;
    for (int i = 0; i < 2000 && !closed; i++) {
        closed = log_count("CLOSE") > 0;
        if (!closed)
            h2o_evloop_run(g_loop, 5);
    }
    assert_true(closed);
    memset(&r, 0, sizeof(r));
    start(up, &r, "/v1/chat/completions", "after_idle_close", chat_body, 5000, 5000);
    run_until(&r.done);
    assert_int_equal(r.err, TA_UP_OK);
    assert_int_equal(r.info.status, 200);
    assert_int_equal(log_count("scenario=after_idle_close") - before, 1);
    free_up(up);
}

/* The evidence for upstream.c's header comment: a provider that reads a
 * request on a pooled connection and drops it. curl's default re-sends it
 * (two POSTs); ours refuses (one POST, TA_UP_ENORESPONSE). */
static void drop_after_pooled(bool allow_resend, int *drops, int *err)
{
    ta_upstream_t *up = new_up(allow_resend);
    static struct res r;
    memset(&r, 0, sizeof(r));
    start(up, &r, "/v1/chat/completions", "ok", chat_body, 5000, 5000);
    run_until(&r.done);
    assert_int_equal(r.err, TA_UP_OK);
    int before = log_count("scenario=drop");
    memset(&r, 0, sizeof(r));
    start(up, &r, "/v1/chat/completions", "drop", chat_body, 5000, 5000);
    run_until(&r.done);
    *drops = log_count("scenario=drop") - before;
    *err = r.err;
    free_up(up);
}

static void test_no_resend(void **state)
{
    int drops, err;
    if (g_engine == TA_UP_ENGINE_CURL) {
        drop_after_pooled(true, &drops, &err);
        assert_int_equal(drops, 2); /* curl on its own: the POST went out twice */
        assert_int_equal(err, TA_UP_ENORESPONSE);
    }
    drop_after_pooled(false, &drops, &err);
    assert_int_equal(drops, 1);
    assert_int_equal(err, TA_UP_ENORESPONSE);
    assert_false(ta_up_err_unsent(err));
}

/* ---- https:// (a second fake upstream with a self-signed certificate) ------ */

static int sh(const char *cmd)
{
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* A self-signed certificate for "localhost" (ca.pem, key.pem) and another
 * one nobody trusts (other.pem). */
static int make_certs(void)
{
    char cmd[PATH_MAX * 2 + 256];
    static const char *const names[][2] = {{"ca.pem", "key.pem"}, {"other.pem", "other.key"}};
    for (int i = 0; i < 2; i++) {
        snprintf(cmd, sizeof(cmd),
                 "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost "
                 "-addext subjectAltName=DNS:localhost -keyout %s/%s -out %s/%s >/dev/null 2>&1",
                 g_dir, names[i][1], g_dir, names[i][0]);
        if (sh(cmd) != 0)
            return -1;
    }
    return 0;
}

static int start_tls(void **state)
{
    if (start_fake(state) != 0 || make_certs() != 0)
        return -1;
    char cert[PATH_MAX + 16], key[PATH_MAX + 16];
    snprintf(cert, sizeof(cert), "%s/ca.pem", g_dir);
    snprintf(key, sizeof(key), "%s/key.pem", g_dir);
    snprintf(g_ca, sizeof(g_ca), "%s/ca.pem", g_dir);
    if ((g_tls_pid = spawn_fake(cert, key, &g_tls_port)) <= 0)
        return -1;
    g_port = g_tls_port;
    g_scheme = "https";
    g_host = "localhost"; /* resolved through the loop's resolver thread; the certificate's name */
    g_engine = TA_UP_ENGINE_H2O;
    return 0;
}

static int stop_tls(void **state)
{
    g_scheme = "http";
    g_host = "127.0.0.1";
    g_ca_file = NULL;
    return stop_fake(state);
}

/* JSON and a stream over TLS, the connection reused, with both engines. */
static void test_tls(void **state)
{
    static const int engines[] = {TA_UP_ENGINE_H2O, TA_UP_ENGINE_CURL};
    for (size_t e = 0; e < 2; e++) {
        g_engine = engines[e];
        g_ca_file = g_ca;
        ta_upstream_t *up = new_up(false);
        static struct res r;
        memset(&r, 0, sizeof(r));
        start(up, &r, "/v1/chat/completions", "ok", chat_body, 5000, 5000);
        run_until(&r.done);
        assert_int_equal(r.err, TA_UP_OK);
        assert_int_equal(r.info.status, 200);
        assert_non_null(strstr(r.body, "\"prompt_tokens_details\""));
        memset(&r, 0, sizeof(r));
        r.pause_every = 2;
        start(up, &r, "/v1/chat/completions", "slow_chunks:1", stream_body, 5000, 5000);
        run_until(&r.done);
        check_stream(&r);
        assert_true(r.info.reused);
        free_up(up);
    }
}

/* The peer is verified: a certificate the client does not trust, or a name
 * it was not made for, ends the call before anything is sent. */
static void test_tls_verify(void **state)
{
    static const int engines[] = {TA_UP_ENGINE_H2O, TA_UP_ENGINE_CURL};
    char other[PATH_MAX + 16];
    snprintf(other, sizeof(other), "%s/other.pem", g_dir);
    for (size_t e = 0; e < 2; e++) {
        g_engine = engines[e];
        int before = log_count("scenario=tls_untrusted");
        g_ca_file = other; /* trusts another certificate, not the server's */
        ta_upstream_t *up = new_up(false);
        static struct res r;
        memset(&r, 0, sizeof(r));
        start(up, &r, "/v1/chat/completions", "tls_untrusted", chat_body, 5000, 5000);
        run_until(&r.done);
        assert_int_equal(r.err, TA_UP_ECONNECT);
        assert_true(ta_up_err_unsent(r.err));
        free_up(up);

        g_ca_file = g_ca; /* trusted, but asked for by another name */
        g_host = "127.0.0.1";
        up = new_up(false);
        memset(&r, 0, sizeof(r));
        start(up, &r, "/v1/chat/completions", "tls_untrusted", chat_body, 5000, 5000);
        run_until(&r.done);
        g_host = "localhost";
        assert_int_equal(r.err, TA_UP_ECONNECT);
        free_up(up);
        assert_int_equal(log_count("scenario=tls_untrusted") - before, 0);
    }
    /* a ca_file that cannot be read is refused when the client is made */
    ta_upstream_t *up = NULL;
    ta_upstream_opts_t o = {.engine = TA_UP_ENGINE_H2O, .ca_file = "/nonexistent/ca.pem"};
    assert_int_not_equal(ta_upstream_create(&up, g_loop, &o), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nonstream),
        cmocka_unit_test(test_stream_pause_resume),
        cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_status_passthrough),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_stream_cut),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_idle_close_no_duplicate),
        cmocka_unit_test(test_no_resend),
    };
    const struct CMUnitTest tls[] = {
        cmocka_unit_test(test_tls),
        cmocka_unit_test(test_tls_verify),
    };
    int failed = cmocka_run_group_tests_name("h2o engine", tests, start_h2o, stop_fake);
    failed += cmocka_run_group_tests_name("curl engine", tests, start_curl, stop_fake);
    failed += cmocka_run_group_tests_name("https", tls, start_tls, stop_tls);
    return failed;
}
