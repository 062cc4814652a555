/*
 * billing_child.c - the body of the billing process the master forks.
 *
 * It only sets up the process's signals, translates the config into
 * ledger/billing.h's ta_billing_conf_t and calls ta_billing_run().
 */
#include <signal.h>
#include <string.h>
#include "ledger/billing.h"
#include "ledger/heartbeat.h"
#include "master/master.h"
#include "master/webhook.h"

static volatile sig_atomic_t billing_stop;

static void on_stop(int sig) { billing_stop = 1; }

static void store_opts_from(const ta_config_t *cfg, ta_store_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->strict_durability = cfg->durability == TA_DURABILITY_STRICT;
    o->writemap = cfg->ledger_writemap;
    o->ledger_map_size = (size_t)cfg->ledger_map_size_mb << 20;
    o->audit_map_size = (size_t)cfg->audit_map_size_mb << 20;
}

int ta_master_billing_child(const ta_config_t *cfg, void *ring)
{
    struct sigaction sa = {0};
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGPIPE, &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    ta_billing_conf_t bc = {0};
    bc.data_dir = cfg->data_dir;
    store_opts_from(cfg, &bc.store_opts);
    bc.sync_interval_ms = cfg->sync_interval_ms;
    bc.audit_retention_days = cfg->audit_retention_days;
    bc.warning_webhook_url = cfg->warning_webhook_url;
    bc.webhook_post = ta_webhook_post_curl;
    bc.webhook_timeout_ms = cfg->warning_webhook_timeout_ms;
    bc.webhook_attempts = (uint32_t)cfg->warning_webhook_attempts;
    bc.quota_timezone = cfg->quota_timezone;
    bc.ring_slots = (uint32_t)cfg->ring_slots;
    bc.ring = ring;

    ta_heartbeat_beat();
    int rc = ta_billing_run(&bc, &billing_stop);
    if (rc != 0)
        ta_log(TA_LOG_ERROR, "billing stopped: %s", ta_strerror(rc));
    return rc == 0 ? 0 : 1;
}
