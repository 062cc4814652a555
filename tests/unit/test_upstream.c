/*
 * test_upstream - worker/upstream.c against the real fake upstream (a child
 * process on an ephemeral port), driven by a real h2o evloop.
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

static pid_t g_fake_pid;
static int g_port;
static char g_dir[PATH_MAX];
static char g_log[PATH_MAX + 16];
static h2o_loop_t *g_loop;

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

static int start_fake(void **state)
{
    char bin[PATH_MAX + 32];
    fake_path(bin, sizeof(bin));
    snprintf(g_dir, sizeof(g_dir), "/tmp/ta-test-upstream-XXXXXX");
    if (mkdtemp(g_dir) == NULL)
        return -1;
    snprintf(g_log, sizeof(g_log), "%s/fake.log", g_dir);
    int pfd[2];
    if (pipe(pfd) == -1)
        return -1;
    g_fake_pid = fork();
    if (g_fake_pid == 0) {
        dup2(pfd[1], 1);
        close(pfd[0]);
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
    if (sscanf(line, "listening on %d", &g_port) != 1) {
        fprintf(stderr, "fake upstream did not start (%s): '%s'\n", bin, line);
        return -1;
    }
    signal(SIGPIPE, SIG_IGN);
    g_loop = h2o_evloop_create();
    return 0;
}

static int stop_fake(void **state)
{
    kill(g_fake_pid, SIGTERM);
    waitpid(g_fake_pid, NULL, 0);
    h2o_evloop_destroy(g_loop);
    char cmd[PATH_MAX + 16];
    snprintf(g_log, sizeof(g_log), "%s/fake.log", g_dir);
    unlink(g_log);
    rmdir(g_dir);
    (void)cmd;
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
    r->info.curl_msg = NULL;
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
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", g_port, path);
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
    ta_upstream_opts_t o = {.max_connects = 4, .allow_resend = allow_resend};
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

    /* resume requested from inside on_data (a curl callback): deferred */
    memset(&r, 0, sizeof(r));
    r.pause_every = 3;
    r.resume_inline = true;
    start(up, &r, "/v1/chat/completions", "ok", stream_body, 5000, 5000);
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
    drop_after_pooled(true, &drops, &err);
    assert_int_equal(drops, 2); /* curl on its own: the POST went out twice */
    assert_int_equal(err, TA_UP_ENORESPONSE);
    drop_after_pooled(false, &drops, &err);
    assert_int_equal(drops, 1);
    assert_int_equal(err, TA_UP_ENORESPONSE);
    assert_false(ta_up_err_unsent(err));
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
    return cmocka_run_group_tests(tests, start_fake, stop_fake);
}
