/*
 * billing_runner - the billing loop without the rest of the server, for the
 * fault tests and the ring bench: the same ta_billing_run() the master's
 * billing child calls, on DATA_DIR (attaching or creating DATA_DIR/ring).
 *
 *   billing_runner --data-dir D [--ring-slots N] [--skip-ms M] [--sync-ms S]
 *                  [--webhook URL] [--batch B] [--exit-after N]
 * --exit-after N: step the loop until N tickets are applied to both
 * environments, then print "applied N events in S s: R events/s" (timed from
 * the first event seen), with the process's CPU time (user + system) per
 * event over the same span, and exit (the ring bench).
 * SIGTERM/SIGINT: drain and exit 0.
 */
#include <getopt.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ledger/billing.h"
#include "ledger/ring.h"
#include "master/webhook.h"

static volatile sig_atomic_t stop;
static void on_sig(int sig) { stop = 1; }

/* This process's CPU time, user + system, in ns. */
static int64_t cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000LL +
           (int64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000LL;
}

int main(int argc, char **argv)
{
    ta_billing_conf_t conf = {.sync_interval_ms = 100, .quota_timezone = "UTC", .ring_slots = 1024,
                              .warning_webhook_url = "", .webhook_post = ta_webhook_post_curl};
    static const struct option opts[] = {
        {"data-dir", required_argument, 0, 'd'}, {"ring-slots", required_argument, 0, 'r'},
        {"skip-ms", required_argument, 0, 'k'},  {"sync-ms", required_argument, 0, 's'},
        {"webhook", required_argument, 0, 'w'},  {"batch", required_argument, 0, 'b'},
        {"exit-after", required_argument, 0, 'x'}, {0, 0, 0, 0}};
    uint64_t exit_after = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd': conf.data_dir = optarg; break;
        case 'r': conf.ring_slots = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'k': conf.ring_skip_ms = strtoll(optarg, NULL, 10); break;
        case 's': conf.sync_interval_ms = strtoll(optarg, NULL, 10); break;
        case 'w': conf.warning_webhook_url = optarg; break;
        case 'b': conf.batch_max = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'x': exit_after = strtoull(optarg, NULL, 10); break;
        default: return 2;
        }
    }
    if (!conf.data_dir)
        return 2;
    ta_log_init('B', TA_LOG_INFO);
    struct sigaction sa = {0};
    sa.sa_handler = on_sig;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (exit_after) {
        ta_billing_t *b;
        int rc = ta_billing_open(&conf, &b);
        if (rc != 0)
            return 1;
        int64_t t0 = 0, cpu0 = 0;
        while (!stop && ta_billing_stats(b)->audit_applied < exit_after) {
            int64_t c0 = t0 == 0 ? cpu_ns() : 0;
            rc = ta_billing_step(b, 100);
            if (rc < 0)
                break;
            if (rc > 0 && t0 == 0) {
                t0 = ta_mono_ns();
                cpu0 = c0; /* the step that saw the first events counts */
            }
        }
        int64_t ns = ta_mono_ns() - t0, cpu = cpu_ns() - cpu0;
        const ta_billing_stats_t *s = ta_billing_stats(b);
        double n = (double)(s->events > 0 ? s->events : 1);
        printf("applied %llu events in %lld batches, %.3f s: %.0f events/s, cpu %.2f us/event\n",
               (unsigned long long)s->events, (long long)s->batches, (double)ns / 1e9,
               (double)s->events * 1e9 / (double)(ns > 0 ? ns : 1), (double)cpu / 1e3 / n);
        ta_billing_close(b);
        return rc < 0 ? 1 : 0;
    }
    int rc = ta_billing_run(&conf, &stop);
    return rc == 0 ? 0 : 1;
}
