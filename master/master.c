/*
 * master.c - tokenauditd: arguments, listeners, forking and supervising the
 * workers and billing, graceful stop and reload (see master.h).
 *
 * Listeners: one socket per configured address, bound by the master before
 * any fork and kept open by it until it exits. Every worker inherits every
 * socket and accepts from it (a few accepts per wake-up). Because the master
 * always holds the socket, a worker that dies or retires never makes the
 * kernel refuse or drop a connection: it waits in the backlog until a
 * sibling or the next generation accepts it. (One SO_REUSEPORT socket per
 * worker would balance better, but connections queued on a dead worker's
 * socket are lost; FIELD-NOTES.md.)
 *
 * Supervision: a child that dies is logged with its exit code or signal and
 * restarted after a backoff per slot: 100 ms, doubling to 5 s, back to
 * 100 ms once a child lived 10 s.
 *
 * Reload (SIGHUP): the file is parsed again (invalid: logged, nothing
 * changes); settings that need a restart keep their running values; a new
 * generation of workers is forked on the same sockets (new sockets only for
 * new addresses). Each new worker reports "ready" through a pipe once its
 * server is built; when all are ready the old generation gets SIGTERM and
 * drains. If the new generation is not ready within 10 s it is killed and
 * the old one stays.
 *
 * Stop (SIGTERM/SIGINT): close the master's listener copies, SIGTERM the
 * workers, wait up to shutdown_timeout_ms (then SIGKILL), then SIGTERM
 * billing (it drains the ring and syncs), wait, exit 0.
 */
#include "master/man.h"
#include "master/master.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include "admin/admin.h"
#include "admin/crypto.h"
#include "ledger/health.h"
#include "ledger/heartbeat.h"
#include "ledger/quota.h"
#include "ledger/ring.h"
#include "ledger/spool.h"
#include "worker/console.h"
#include "worker/health_agent.h"
#include "worker/metrics.h"
#include "worker/proxy.h"
#include "worker/server.h"
#include "master/webhook.h"

#define MAX_WORKERS 256
#define MAX_SOCKS (2 * TA_MAX_LISTEN)
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define BACKOFF_RESET_NS (10LL * 1000000000LL)
#define RELOAD_READY_NS (10LL * 1000000000LL)
#define BILLING_STOP_MIN_MS 10000

#ifndef TA_VERSION
#define TA_VERSION "0.1.0"
#endif

typedef struct sock {
    int fd;
    char spec[300]; /* "tls|admin|host|port": identity for reuse across reloads */
    bool tls, admin;
} sock_t;

typedef struct slot {
    pid_t pid;
    bool ready;
    int64_t started_ns;
    int64_t backoff_ms;
    int64_t restart_at_ns; /* 0 = nothing scheduled */
} slot_t;

typedef struct generation {
    uint64_t gen;
    ta_config_t cfg;
    sock_t socks[MAX_SOCKS];
    size_t nsocks;
    unsigned nworkers;
    slot_t slots[MAX_WORKERS];
} generation_t;

typedef struct retiring {
    pid_t pid;
    int64_t kill_at_ns;
} retiring_t;

static volatile sig_atomic_t sig_term, sig_hup, sig_chld;

static generation_t *cur;     /* the generation the master restarts */
static generation_t *pending; /* a reload waiting for its workers to be ready */
static int64_t pending_deadline_ns;
static retiring_t retiring[4 * MAX_WORKERS];
static size_t nretiring;
static slot_t billing;
static pid_t master_pid;
static int ready_pipe[2] = {-1, -1};
static uint8_t jwt_secret[32], master_key[32];
static ta_throttle_t *login_throttle; /* shared by every worker (admin/throttle.h) */
static ta_ring_t *ring;
static bool stopping;
static int64_t started_at_s; /* for GET /api/admin/status/ (workers inherit it) */

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void on_signal(int sig)
{
    if (sig == SIGHUP)
        sig_hup = 1;
    else if (sig == SIGCHLD)
        sig_chld = 1;
    else
        sig_term = 1;
}

/* ---- listeners --------------------------------------------------------- */

static void sock_spec(const ta_listen_addr_t *a, bool admin, char *buf, size_t cap)
{
    snprintf(buf, cap, "%d|%d|%.255s|%.7s", (int)a->tls, (int)admin, a->host, a->port);
}

static int bind_one(const ta_listen_addr_t *a, int *out)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(a->host[0] != '\0' ? a->host : NULL, a->port, &hints, &res);
    if (rc != 0) {
        ta_log(TA_LOG_ERROR, "listen %s:%s: %s", a->host, a->port, gai_strerror(rc));
        return TA_ECONFIG;
    }
    int fd = -1, err = 0;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd == -1) {
            err = errno;
            continue;
        }
        int on = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
        if (ai->ai_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 4096) == 0)
            break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd == -1) {
        ta_log(TA_LOG_ERROR, "listen %s:%s: %s", a->host[0] ? a->host : "*", a->port,
               strerror(err));
        return -err;
    }
    *out = fd;
    return 0;
}

/* Fill g->socks from g->cfg, reusing the sockets of `from` (may be NULL)
 * with the same identity. On failure nothing new stays open. */
static int open_socks(generation_t *g, const generation_t *from)
{
    g->nsocks = 0;
    for (int admin = 0; admin < 2; admin++) {
        const ta_listen_addr_t *addrs = admin ? g->cfg.admin_addrs : g->cfg.listen_addrs;
        size_t n = admin ? g->cfg.nadmin : g->cfg.nlisten;
        for (size_t i = 0; i < n; i++) {
            sock_t *s = &g->socks[g->nsocks];
            sock_spec(&addrs[i], admin, s->spec, sizeof(s->spec));
            s->tls = addrs[i].tls;
            s->admin = admin;
            s->fd = -1;
            for (size_t j = 0; from != NULL && j < from->nsocks; j++)
                if (strcmp(from->socks[j].spec, s->spec) == 0)
                    s->fd = from->socks[j].fd;
            if (s->fd == -1) {
                int rc = bind_one(&addrs[i], &s->fd);
                if (rc != 0) {
                    for (size_t k = 0; k < g->nsocks; k++) {
                        bool shared = false;
                        for (size_t j = 0; from != NULL && j < from->nsocks; j++)
                            shared |= from->socks[j].fd == g->socks[k].fd;
                        if (!shared)
                            close(g->socks[k].fd);
                    }
                    g->nsocks = 0;
                    return rc;
                }
                ta_log(TA_LOG_INFO, "listening on %s%s:%s%s", addrs[i].tls ? "https://" : "",
                       addrs[i].host[0] ? addrs[i].host : "*", addrs[i].port,
                       admin ? " (admin)" : "");
            }
            g->nsocks++;
        }
    }
    return 0;
}

/* Close the sockets of g that `keep` (may be NULL) does not use. */
static void close_socks(generation_t *g, const generation_t *keep)
{
    for (size_t i = 0; i < g->nsocks; i++) {
        bool shared = false;
        for (size_t j = 0; keep != NULL && j < keep->nsocks; j++)
            shared |= keep->socks[j].fd == g->socks[i].fd;
        if (!shared && g->socks[i].fd != -1)
            close(g->socks[i].fd);
        g->socks[i].fd = -1;
    }
    g->nsocks = 0;
}

/* ---- children ---------------------------------------------------------- */

static void child_common(char role, const ta_config_t *cfg)
{
    /* Die with the master, and catch the race where it died before prctl. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != master_pid)
        _exit(0);
    /* ps and the tests tell the children apart by this name. */
    prctl(PR_SET_NAME, role == 'W' ? "ta-worker" : "ta-billing");
    struct sigaction sa = {0};
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (ready_pipe[0] != -1)
        close(ready_pipe[0]);
    ta_log_init(role, cfg->log_level);
    if (ring != NULL)
        ta_ring_pending_clear(ring);
    if (ta_quota_set_timezone(cfg->quota_timezone) != 0)
        ta_log(TA_LOG_ERROR, "quota_timezone '%s' not usable", cfg->quota_timezone);
}

/* A child inherits every socket the master holds; keep only those of its
 * own generation (none for billing), so a socket the master closes on a
 * reload is really closed and its address refuses connections again. */
static void close_foreign_socks(const generation_t *mine)
{
    const generation_t *gs[2] = {cur, pending};
    for (int gi = 0; gi < 2; gi++) {
        for (size_t i = 0; gs[gi] != NULL && i < gs[gi]->nsocks; i++) {
            bool keep = false;
            for (size_t j = 0; mine != NULL && j < mine->nsocks; j++)
                keep |= mine->socks[j].fd == gs[gi]->socks[i].fd;
            if (!keep && gs[gi]->socks[i].fd != -1)
                close(gs[gi]->socks[i].fd);
        }
    }
}

static void store_opts(const ta_config_t *cfg, ta_store_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->strict_durability = cfg->durability == TA_DURABILITY_STRICT;
    o->writemap = cfg->ledger_writemap;
    o->ledger_map_size = (size_t)cfg->ledger_map_size_mb << 20;
    o->audit_map_size = (size_t)cfg->audit_map_size_mb << 20;
}

/* What a worker's setup hook needs (the /v1 proxy registers itself here). */
typedef struct worker_env {
    const ta_config_t *cfg;
    ta_store_t *store;
    const uint8_t *master_key;
    ta_ring_t *ring;
    ta_proxy_t *proxy; /* set up by worker_setup; destroyed by run_worker before the store closes */
    ta_admin_t *admin; /* samples the live figures once a second (ta_admin_tick) */
    ta_health_agent_t *health; /* started by worker_ready; stopped before the server goes */
} worker_env_t;

/* The live figures of GET /api/admin/status/: the sums /metrics prints
 * (worker/metrics.h), handed to admin/, which does not depend on worker/. */
static void live_figures(ta_admin_live_t *out)
{
    /* the names /metrics gives enum ta_metrics_upstream_kind, in its order */
    static const char *const kinds[TA_METRICS_UP_NKINDS] = {"connect", "timeout", "status",
                                                            "no_response", "cut", "other"};
    ta_metrics_totals_t t;
    ta_metrics_totals(&t);
    out->requests = t.requests;
    memcpy(out->by_class, t.by_class, sizeof(out->by_class));
    out->in_flight = t.holds_in_flight;
    out->ring_depth = t.ring_depth;
    out->ring_pending = t.ring_pending;
    out->workers = t.workers;
    out->worker_restarts = t.worker_restarts;
    out->n_upstream = TA_METRICS_UP_NKINDS < TA_ADMIN_UPSTREAM_KINDS ? TA_METRICS_UP_NKINDS
                                                                    : TA_ADMIN_UPSTREAM_KINDS;
    for (size_t i = 0; i < out->n_upstream; i++) {
        out->upstream_errors[i].kind = kinds[i];
        out->upstream_errors[i].count = t.upstream_errors[i];
    }
}

static int worker_setup(ta_worker_t *w, void *arg)
{
    worker_env_t *env = arg;
    /* The /v1 proxy (worker/proxy.h). worker/ cannot include admin/, so the
     * unseal function for provider keys is handed over here. */
    ta_proxy_conf_t pc = {
        .store = env->store,
        .ring = env->ring,
        .master_key = env->master_key,
        .unseal = ta_unseal,
        .reserve = env->cfg->reserve,
        .timezone = env->cfg->quota_timezone,
        .on_disconnect = env->cfg->on_disconnect,
        .stream_drain_timeout_ms = env->cfg->stream_drain_timeout_ms,
        .max_body_size = (size_t)env->cfg->max_body_size,
        .upstream_max_connections = (long)env->cfg->upstream_max_connections,
        .upstream_engine = env->cfg->upstream_engine,
        .upstream_ca_file = env->cfg->upstream_ca_file,
    };
    if (env->admin != NULL)
        ta_worker_add_tick(w, ta_admin_tick, env->admin);
    return ta_proxy_setup(w, &pc, &env->proxy);
}

/* Provider health's probes and webhook (worker/health_agent.h); the probe
 * call is built by the admin side, which worker/ cannot include. */
static int worker_ready(ta_worker_t *w, void *arg)
{
    worker_env_t *env = arg;
    ta_health_agent_conf_t hc = {
        .probe_interval_ms = env->cfg->health_check_interval_s * 1000,
        .probe_fetch = ta_admin_probe_fetch,
        .probe_ctx = env->admin,
        .webhook_url = env->cfg->health_webhook_url,
        .post = ta_webhook_post_curl,
        .webhook_timeout_ms = env->cfg->warning_webhook_timeout_ms,
        .webhook_attempts = (uint32_t)env->cfg->warning_webhook_attempts,
    };
    return ta_health_agent_start(&env->health, w, &hc);
}

static void run_worker(generation_t *g, int slot)
{
    const ta_config_t *cfg = &g->cfg;
    ta_store_t *st = NULL;
    ta_admin_t *admin = NULL;
    ta_worker_t *w = NULL;
    worker_env_t env = {cfg, NULL, master_key, ring, NULL, NULL, NULL};
    int rc, code = 1;

    child_common('W', cfg);
    close_foreign_socks(g);
    ta_health_configure(&(ta_health_conf_t){.failures = (int32_t)cfg->health_failures,
                                            .cooldown_ms = cfg->health_cooldown_s * 1000,
                                            .probe_interval_ms = cfg->health_check_interval_s * 1000,
                                            .degraded_percent = (int32_t)cfg->health_degraded_percent});
    curl_global_init(CURL_GLOBAL_DEFAULT);
    ta_store_opts_t so;
    store_opts(cfg, &so);
    if ((rc = ta_store_open(&st, cfg->data_dir, &so)) != 0) {
        ta_log(TA_LOG_ERROR, "cannot open the store in %s: %s", cfg->data_dir, ta_strerror(rc));
        goto Exit;
    }
    ta_admin_conf_t ac = {
        .store = st,
        .jwt_secret = jwt_secret,
        .jwt_secret_len = sizeof(jwt_secret),
        .master_key = master_key,
        .jwt_ttl_s = cfg->jwt_ttl_s,
        .pbkdf2_iterations = (unsigned)cfg->pbkdf2_iterations,
        .max_body = (size_t)cfg->max_body_size,
        .login_throttle = login_throttle,
        .login_limits = {.account_failures = cfg->login_max_failures,
                         .address_failures = cfg->login_address_max_failures,
                         .backoff_ms = cfg->login_backoff_ms,
                         .account_max_ms = cfg->login_backoff_max_ms,
                         .address_max_ms = cfg->login_address_backoff_max_ms},
        .live = live_figures,
        .started_at_s = started_at_s,
    };
    if ((rc = ta_admin_create(&admin, &ac)) != 0) {
        ta_log(TA_LOG_ERROR, "cannot create the admin API: %s", ta_strerror(rc));
        goto Exit;
    }
    env.store = st;
    env.admin = admin;
    ta_worker_listener_t ls[MAX_SOCKS];
    for (size_t i = 0; i < g->nsocks; i++)
        ls[i] = (ta_worker_listener_t){g->socks[i].fd, g->socks[i].tls, g->socks[i].admin};
    ta_worker_conf_t wc = {
        .listeners = ls,
        .nlisteners = g->nsocks,
        .tls_cert_file = cfg->tls_cert_file,
        .tls_key_file = cfg->tls_key_file,
        .upstream_ca_file = cfg->upstream_ca_file,
        .max_body_size = (size_t)cfg->max_body_size,
        .shutdown_timeout_ms = cfg->shutdown_timeout_ms,
        .generation = g->gen,
        .slot = slot,
        .store = st,
        .api_handler = ta_admin_handle,
        .api_ctx = admin,
        .setup = worker_setup,
        .ready = worker_ready,
        .setup_arg = &env,
        .password_threads = (unsigned)cfg->password_threads,
        .password_queue = (size_t)cfg->password_queue,
        .console_dir = cfg->console && ta_console_present(cfg->console_dir) ? cfg->console_dir : NULL,
    };
    if ((rc = ta_worker_create(&w, &wc)) != 0) {
        ta_log(TA_LOG_ERROR, "cannot start the HTTP server: %s", ta_strerror(rc));
        goto Exit;
    }
    int32_t me = (int32_t)getpid();
    if (write(ready_pipe[1], &me, sizeof(me)) != (ssize_t)sizeof(me))
        ta_log(TA_LOG_WARN, "cannot report readiness: %s", strerror(errno));
    close(ready_pipe[1]);
    ta_log(TA_LOG_INFO, "worker %d of generation %llu ready", slot, (unsigned long long)g->gen);
    ta_log(TA_LOG_DEBUG, "worker %d: %zu listener(s), max_body_size %lld, shutdown_timeout_ms %lld",
           slot, g->nsocks, (long long)cfg->max_body_size, (long long)cfg->shutdown_timeout_ms);
    code = ta_worker_run(w) == 0 ? 0 : 1;
Exit:
    /* In order: the proxy while the loop and the store are there (it ends
     * its requests, closes its read transaction and wipes its clear keys),
     * then the server, then what they borrowed. */
    ta_proxy_destroy(env.proxy);
    ta_health_agent_stop(env.health);
    ta_worker_destroy(w);
    /* Events the full ring could not take within shutdown_timeout_ms go to
     * a spool file that billing applies with this worker's dead-worker
     * event (ledger/spool.c); nothing is submitted after this point. */
    if (ring != NULL && ta_ring_has_pending(ring))
        ta_spool_write_pending(ring, cfg->data_dir);
    if (admin != NULL)
        ta_admin_destroy(admin);
    if (st != NULL)
        ta_store_close(st);
    _exit(code);
}

static pid_t spawn(char role, generation_t *g, int slot)
{
    pid_t pid = fork();
    if (pid == -1) {
        ta_log(TA_LOG_ERROR, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        if (role == 'W')
            run_worker(g, slot);
        child_common('B', &g->cfg);
        close(ready_pipe[1]);
        close_foreign_socks(NULL); /* billing serves nothing */
        _exit(ta_master_billing_child(&g->cfg, ring));
    }
    return pid;
}

static void start_slot(generation_t *g, slot_t *s, char role, int idx)
{
    s->restart_at_ns = 0;
    s->ready = false;
    s->pid = spawn(role, g, idx);
    s->started_ns = mono_ns();
    if (s->pid == -1) { /* try again later */
        s->pid = 0;
        s->restart_at_ns = mono_ns() + BACKOFF_MAX_MS * 1000000LL;
        return;
    }
    if (role == 'B')
        ta_heartbeat_set_billing_pid(s->pid);
}

static void describe_status(int status, char *buf, size_t cap)
{
    if (WIFEXITED(status))
        snprintf(buf, cap, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, cap, "was killed by signal %d (SIG%s)%s", WTERMSIG(status),
                 sigabbrev_np(WTERMSIG(status)) ? sigabbrev_np(WTERMSIG(status)) : "?",
                 WCOREDUMP(status) ? ", core dumped" : "");
    else
        snprintf(buf, cap, "changed state 0x%x", status);
}

static void schedule_restart(slot_t *s, int64_t now)
{
    if (s->backoff_ms == 0 || now - s->started_ns >= BACKOFF_RESET_NS)
        s->backoff_ms = BACKOFF_MIN_MS;
    s->restart_at_ns = now + s->backoff_ms * 1000000LL;
    s->backoff_ms = s->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : s->backoff_ms * 2;
}

void ta_master_on_worker_dead(pid_t pid)
{
    if (ring == NULL)
        return;
    int rc = ta_ring_push_control(ring, TA_EV_WORKER_DEAD, (int32_t)pid);
    if (rc != 0)
        ta_log(TA_LOG_ERROR, "cannot tell billing that worker %d died: %s", (int)pid,
               ta_strerror(rc));
}

static bool reap_in(generation_t *g, pid_t pid, int status, int64_t now)
{
    if (g == NULL)
        return false;
    for (unsigned i = 0; i < g->nworkers; i++) {
        slot_t *s = &g->slots[i];
        if (s->pid != pid)
            continue;
        char how[96];
        describe_status(status, how, sizeof(how));
        s->pid = 0;
        ta_metrics_process_gone(pid);
        bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (!clean)
            ta_master_on_worker_dead(pid);
        if (stopping) {
            ta_log(TA_LOG_INFO, "worker %u (pid %d) %s", i, (int)pid, how);
        } else {
            schedule_restart(s, now);
            ta_metrics_worker_restarted();
            ta_log(TA_LOG_ERROR, "worker %u (pid %d, generation %llu) %s; restarting in %lld ms", i,
                   (int)pid, (unsigned long long)g->gen, how,
                   (long long)((s->restart_at_ns - now) / 1000000));
        }
        return true;
    }
    return false;
}

static void reap(void)
{
    int status;
    pid_t pid;
    int64_t now = mono_ns();
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        char how[96];
        describe_status(status, how, sizeof(how));
        if (reap_in(cur, pid, status, now) || reap_in(pending, pid, status, now))
            continue;
        if (pid == billing.pid) {
            billing.pid = 0;
            ta_heartbeat_set_billing_pid(0);
            if (stopping) {
                ta_log(TA_LOG_INFO, "billing (pid %d) %s", (int)pid, how);
            } else {
                schedule_restart(&billing, now);
                ta_log(TA_LOG_ERROR, "billing (pid %d) %s; restarting in %lld ms", (int)pid, how,
                       (long long)((billing.restart_at_ns - now) / 1000000));
            }
            continue;
        }
        for (size_t i = 0; i < nretiring; i++) {
            if (retiring[i].pid != pid)
                continue;
            ta_log(TA_LOG_INFO, "retired worker (pid %d) %s", (int)pid, how);
            ta_metrics_process_gone(pid);
            if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
                ta_master_on_worker_dead(pid);
            retiring[i] = retiring[--nretiring];
            break;
        }
    }
}

static void read_ready(void)
{
    int32_t pids[64];
    ssize_t n;
    while ((n = read(ready_pipe[0], pids, sizeof(pids))) > 0) {
        for (ssize_t k = 0; k < n / (ssize_t)sizeof(int32_t); k++) {
            generation_t *gs[2] = {cur, pending};
            for (int gi = 0; gi < 2; gi++)
                for (unsigned i = 0; gs[gi] != NULL && i < gs[gi]->nworkers; i++)
                    if (gs[gi]->slots[i].pid == pids[k])
                        gs[gi]->slots[i].ready = true;
        }
    }
}

static void retire_generation(generation_t *g, int64_t grace_ms)
{
    int64_t now = mono_ns();
    for (unsigned i = 0; i < g->nworkers; i++) {
        if (g->slots[i].pid == 0)
            continue;
        kill(g->slots[i].pid, SIGTERM);
        if (nretiring < TA_ARRAY_SIZE(retiring))
            retiring[nretiring++] = (retiring_t){g->slots[i].pid, now + grace_ms * 1000000LL +
                                                                      1000000000LL};
        g->slots[i].pid = 0;
    }
}

/* ---- reload ------------------------------------------------------------ */

static void begin_reload(void)
{
    if (pending != NULL) {
        ta_log(TA_LOG_WARN, "reload: a reload is already in progress; ignored");
        return;
    }
    generation_t *g = calloc(1, sizeof(*g));
    ta_err_t err = {0};
    if (g == NULL)
        return;
    int rc = ta_config_load(&g->cfg, cur->cfg.path[0] ? cur->cfg.path : NULL, &err);
    if (rc != 0) {
        ta_log(TA_LOG_ERROR, "reload: %s; keeping the running configuration", err.message);
        free(g);
        return;
    }
    ta_config_keep_fixed(&cur->cfg, &g->cfg);
    /* keep_fixed copied the fixed values; listen lists are reloadable. */
    if (open_socks(g, cur) != 0) {
        ta_log(TA_LOG_ERROR, "reload: cannot bind the new listeners; keeping the running ones");
        free(g);
        return;
    }
    g->gen = cur->gen + 1;
    g->nworkers = ta_config_workers(&g->cfg);
    ta_log_set_level(g->cfg.log_level);
    ta_log(TA_LOG_INFO, "reload: starting generation %llu with %u worker(s)",
           (unsigned long long)g->gen, g->nworkers);
    pending = g;
    pending_deadline_ns = mono_ns() + RELOAD_READY_NS;
    for (unsigned i = 0; i < g->nworkers; i++)
        start_slot(g, &g->slots[i], 'W', (int)i);
}

static void check_reload(void)
{
    if (pending == NULL)
        return;
    bool all = true;
    for (unsigned i = 0; i < pending->nworkers; i++)
        all &= pending->slots[i].pid != 0 && pending->slots[i].ready;
    if (all) {
        generation_t *old = cur;
        cur = pending;
        pending = NULL;
        ta_heartbeat_set_generation(cur->gen);
        retire_generation(old, old->cfg.shutdown_timeout_ms);
        close_socks(old, cur);
        free(old);
        ta_log(TA_LOG_INFO, "reload: generation %llu serving", (unsigned long long)cur->gen);
    } else if (mono_ns() >= pending_deadline_ns) {
        ta_log(TA_LOG_ERROR, "reload: generation %llu not ready in time; keeping generation %llu",
               (unsigned long long)pending->gen, (unsigned long long)cur->gen);
        for (unsigned i = 0; i < pending->nworkers; i++) {
            if (pending->slots[i].pid != 0) {
                kill(pending->slots[i].pid, SIGKILL);
                if (nretiring < TA_ARRAY_SIZE(retiring))
                    retiring[nretiring++] = (retiring_t){pending->slots[i].pid, 0};
            }
        }
        close_socks(pending, cur);
        free(pending);
        pending = NULL;
        ta_log_set_level(cur->cfg.log_level);
    }
}

/* ---- main loop --------------------------------------------------------- */

static int64_t next_wake(int64_t now)
{
    int64_t at = now + 1000000000LL;
    generation_t *gs[2] = {cur, pending};
    for (int gi = 0; gi < 2; gi++)
        for (unsigned i = 0; gs[gi] != NULL && i < gs[gi]->nworkers; i++)
            if (gs[gi]->slots[i].restart_at_ns != 0 && gs[gi]->slots[i].restart_at_ns < at)
                at = gs[gi]->slots[i].restart_at_ns;
    if (billing.restart_at_ns != 0 && billing.restart_at_ns < at)
        at = billing.restart_at_ns;
    for (size_t i = 0; i < nretiring; i++)
        if (retiring[i].kill_at_ns != 0 && retiring[i].kill_at_ns < at)
            at = retiring[i].kill_at_ns;
    if (pending != NULL && pending_deadline_ns < at)
        at = pending_deadline_ns;
    return at < now ? now : at;
}

static void wait_events(const sigset_t *unblocked, int64_t until_ns)
{
    int64_t d = until_ns - mono_ns();
    if (d < 0)
        d = 0;
    struct timespec ts = {d / 1000000000LL, d % 1000000000LL};
    struct pollfd pfd = {ready_pipe[0], POLLIN, 0};
    ppoll(&pfd, 1, &ts, unblocked);
    if (pfd.revents & POLLIN)
        read_ready();
}

static size_t live_workers(void)
{
    size_t n = nretiring;
    generation_t *gs[2] = {cur, pending};
    for (int gi = 0; gi < 2; gi++)
        for (unsigned i = 0; gs[gi] != NULL && i < gs[gi]->nworkers; i++)
            n += gs[gi]->slots[i].pid != 0;
    return n;
}

static void signal_workers(int sig)
{
    generation_t *gs[2] = {cur, pending};
    for (int gi = 0; gi < 2; gi++)
        for (unsigned i = 0; gs[gi] != NULL && i < gs[gi]->nworkers; i++)
            if (gs[gi]->slots[i].pid != 0)
                kill(gs[gi]->slots[i].pid, sig);
    for (size_t i = 0; i < nretiring; i++)
        kill(retiring[i].pid, sig);
}

static void shutdown_all(const sigset_t *unblocked)
{
    stopping = true;
    int64_t timeout_ms = cur->cfg.shutdown_timeout_ms;
    ta_log(TA_LOG_INFO, "stopping: waiting up to %lld ms for the workers", (long long)timeout_ms);
    close_socks(cur, NULL);
    if (pending != NULL)
        close_socks(pending, NULL);
    signal_workers(SIGTERM);
    int64_t deadline = mono_ns() + timeout_ms * 1000000LL + 500000000LL;
    while (live_workers() > 0 && mono_ns() < deadline) {
        wait_events(unblocked, deadline);
        reap();
    }
    if (live_workers() > 0) {
        ta_log(TA_LOG_WARN, "stopping: %zu worker(s) still running; killing them", live_workers());
        generation_t *gs[2] = {cur, pending};
        for (int gi = 0; gi < 2; gi++)
            for (unsigned i = 0; gs[gi] != NULL && i < gs[gi]->nworkers; i++)
                if (gs[gi]->slots[i].pid != 0)
                    ta_master_on_worker_dead(gs[gi]->slots[i].pid);
        for (size_t i = 0; i < nretiring; i++)
            ta_master_on_worker_dead(retiring[i].pid);
        signal_workers(SIGKILL);
        while (live_workers() > 0) {
            wait_events(unblocked, mono_ns() + 100000000LL);
            reap();
        }
    }
    if (billing.pid != 0) {
        kill(billing.pid, SIGTERM);
        int64_t bl = timeout_ms > BILLING_STOP_MIN_MS ? timeout_ms : BILLING_STOP_MIN_MS;
        deadline = mono_ns() + bl * 1000000LL;
        while (billing.pid != 0 && mono_ns() < deadline) {
            wait_events(unblocked, deadline);
            reap();
        }
        if (billing.pid != 0) {
            ta_log(TA_LOG_ERROR, "stopping: billing did not stop in %lld ms; killing it",
                   (long long)bl);
            kill(billing.pid, SIGKILL);
            while (billing.pid != 0) {
                wait_events(unblocked, mono_ns() + 100000000LL);
                reap();
            }
        }
    }
    ta_log(TA_LOG_INFO, "stopped");
}

/* RLIMIT_NOFILE: the soft limit raised to the hard one before any child is
 * forked (children inherit it), so a worker serves as many streams at once
 * as the machine allows (ta_worker_capacity, docs/ARCHITECTURE.md). */
static rlim_t nofile_before;
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    nofile_before = rl.rlim_cur;
    if (rl.rlim_cur == rl.rlim_max)
        return;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        ta_log(TA_LOG_WARN, "cannot raise RLIMIT_NOFILE to %llu: %s", (unsigned long long)rl.rlim_max,
               strerror(errno));
}

static void log_capacity(unsigned nworkers)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    size_t nofile = rl.rlim_cur == RLIM_INFINITY ? (size_t)1 << 20 : (size_t)rl.rlim_cur;
    size_t per = ta_worker_capacity(nofile);
    ta_log(TA_LOG_INFO,
           "descriptors: %zu per process (soft limit %llu, hard %llu): each worker serves up to %zu streams "
           "at once, %zu for all %u; past that a request gets 503 server_busy",
           nofile, (unsigned long long)nofile_before, (unsigned long long)rl.rlim_max, per, per * nworkers,
           nworkers);
}

static int supervise(void)
{
    raise_nofile();
    sigset_t block, unblocked;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGCHLD);
    sigprocmask(SIG_BLOCK, &block, &unblocked);
    sigdelset(&unblocked, SIGTERM);
    sigdelset(&unblocked, SIGINT);
    sigdelset(&unblocked, SIGHUP);
    sigdelset(&unblocked, SIGCHLD);
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);

    if (pipe2(ready_pipe, O_CLOEXEC) == -1 || fcntl(ready_pipe[0], F_SETFL, O_NONBLOCK) == -1) {
        ta_log(TA_LOG_ERROR, "pipe: %s", strerror(errno));
        return 1;
    }
    started_at_s = ta_now_s();
    start_slot(cur, &billing, 'B', 0);
    for (unsigned i = 0; i < cur->nworkers; i++)
        start_slot(cur, &cur->slots[i], 'W', (int)i);
    ta_log(TA_LOG_INFO, "tokenauditd %s started: %u worker(s), data_dir %s", TA_VERSION,
           cur->nworkers, cur->cfg.data_dir);
    log_capacity(cur->nworkers);
    if (cur->cfg.console && ta_console_present(cur->cfg.console_dir))
        ta_log(TA_LOG_INFO, "console: serving %s under /console/", cur->cfg.console_dir);
    else if (cur->cfg.console)
        ta_log(TA_LOG_WARN, "console: no build in %s, not served (build it, set console_dir, or "
               "set console = off)", cur->cfg.console_dir);

    for (;;) {
        sig_chld = 0;
        reap();
        if (sig_term)
            break;
        if (sig_hup) {
            sig_hup = 0;
            begin_reload();
        }
        int64_t now = mono_ns();
        generation_t *gs[2] = {cur, pending};
        for (int gi = 0; gi < 2; gi++)
            for (unsigned i = 0; gs[gi] != NULL && i < gs[gi]->nworkers; i++) {
                slot_t *s = &gs[gi]->slots[i];
                if (s->pid == 0 && s->restart_at_ns != 0 && s->restart_at_ns <= now)
                    start_slot(gs[gi], s, 'W', (int)i);
            }
        if (billing.pid == 0 && billing.restart_at_ns != 0 && billing.restart_at_ns <= now)
            start_slot(cur, &billing, 'B', 0);
        for (size_t i = 0; i < nretiring; i++) {
            if (retiring[i].kill_at_ns != 0 && retiring[i].kill_at_ns <= now) {
                ta_log(TA_LOG_WARN, "retired worker (pid %d) still running; killing it",
                       (int)retiring[i].pid);
                kill(retiring[i].pid, SIGKILL);
                retiring[i].kill_at_ns = 0;
            }
        }
        check_reload();
        if (sig_term || sig_hup || sig_chld)
            continue;
        wait_events(&unblocked, next_wake(mono_ns()));
    }
    shutdown_all(&unblocked);
    return 0;
}

/* ---- entry ------------------------------------------------------------- */

static void usage(FILE *out)
{
    fputs("usage: tokenauditd [-c FILE] [--check-config] [--print-config-docs] [--print-man] "
          "[--version]\n", out);
    for (const ta_man_opt_t *o = ta_tokenauditd_opts; o->flag != NULL; o++)
        fprintf(out, "  %-21s %s\n", o->flag, o->help);
}

static int read_secret(const char *what, const char *path, uint8_t *out, const char *data_dir)
{
    int rc = ta_secret_file_read(path, out, 32);
    if (rc != 0)
        ta_log(TA_LOG_ERROR,
               "cannot read the %s %s: %s. Create the data directory first with "
               "`tokenaudit init --data-dir %s --admin-email EMAIL`",
               what, path, ta_strerror(rc), data_dir);
    return rc;
}

int ta_master_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, 'C'},
        {"print-config-docs", no_argument, NULL, 'D'},
        {"print-man", no_argument, NULL, 'M'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    bool check = false;
    int c;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': path = optarg; break;
        case 'C': check = true; break;
        case 'D': ta_config_print_docs(stdout); return 0;
        case 'M': ta_man_tokenauditd(stdout); return 0;
        case 'V': printf("tokenauditd %s\n", TA_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "tokenauditd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    cur = calloc(1, sizeof(*cur));
    if (cur == NULL)
        return 1;
    ta_err_t err = {0};
    if (ta_config_load(&cur->cfg, path, &err) != 0) {
        fprintf(stderr, "tokenauditd: %s\n", err.message);
        return 1;
    }
    if (ta_quota_set_timezone(cur->cfg.quota_timezone) != 0) {
        fprintf(stderr, "tokenauditd: quota_timezone: unknown timezone '%s'\n",
                cur->cfg.quota_timezone);
        return 1;
    }
    if (check) {
        printf("%s: configuration is valid\n", path != NULL ? path : "(defaults + environment)");
        return 0;
    }

    master_pid = getpid();
    ta_log_init('M', cur->cfg.log_level);
    ta_clock_set_offset(cur->cfg.test_clock_offset_s);
    signal(SIGPIPE, SIG_IGN);

    if (read_secret("JWT secret", cur->cfg.jwt_secret_file, jwt_secret, cur->cfg.data_dir) != 0 ||
        read_secret("master key", cur->cfg.master_key_file, master_key, cur->cfg.data_dir) != 0)
        return 1;
    if (ta_heartbeat_create() != 0) {
        ta_log(TA_LOG_ERROR, "cannot map the heartbeat page: %s", strerror(errno));
        return 1;
    }
    char ring_path[TA_CONF_STR + 16];
    snprintf(ring_path, sizeof(ring_path), "%s/ring", cur->cfg.data_dir);
    int rc = ta_ring_create_or_attach(ring_path, (uint32_t)cur->cfg.ring_slots, &ring);
    if (rc != 0) {
        ta_log(TA_LOG_ERROR, "cannot map the event ring %s: %s", ring_path, ta_strerror(rc));
        return 1;
    }
    if ((rc = ta_metrics_create(ring)) != 0) {
        ta_log(TA_LOG_ERROR, "cannot map the metrics page: %s", ta_strerror(rc));
        return 1;
    }
    ta_metrics_set_data_dir(cur->cfg.data_dir);
    if ((rc = ta_health_create()) != 0) {
        ta_log(TA_LOG_ERROR, "cannot map the provider health table: %s", ta_strerror(rc));
        return 1;
    }
    if ((rc = ta_throttle_create(&login_throttle)) != 0) {
        ta_log(TA_LOG_ERROR, "cannot map the login throttle table: %s", ta_strerror(rc));
        return 1;
    }
    cur->gen = 1;
    ta_heartbeat_set_generation(1);
    cur->nworkers = ta_config_workers(&cur->cfg);
    if (open_socks(cur, NULL) != 0)
        return 1;
    int code = supervise();
    close_socks(cur, NULL);
    free(cur);
    ta_ring_close(ring);
    return code;
}
