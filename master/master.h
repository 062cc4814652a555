/*
 * master.h - tokenauditd's master process and the children it forks.
 *
 * Process model (docs/ARCHITECTURE.md, "Processes"):
 *   - the master reads the config, binds the listeners (one shared socket per
 *     address, SO_REUSEADDR, held by the master for its whole life so a
 *     connection is never refused while workers come and go), reads the two
 *     secret files, maps the heartbeat page and the event ring, then forks N
 *     workers and one billing process, and supervises them;
 *   - children set PR_SET_PDEATHSIG(SIGTERM), open their own ta_store_t
 *     after fork, and run the worker loop (worker/server.h) or billing
 *     (ledger/billing.h).
 * Signals: SIGTERM/SIGINT = graceful stop; SIGHUP = reload config and
 * replace the workers by a new generation; the handlers only set flags.
 *
 * Callers: tokenauditd's main() only.
 */
#ifndef TA_MASTER_H
#define TA_MASTER_H

#include <sys/types.h>
#include "master/config.h"

/** tokenauditd: -c FILE, --check-config, --print-config-docs, --version. */
int ta_master_main(int argc, char **argv);

/** Called by the master after it reaped worker `pid` that died without
 *  being asked to stop (and also after a forced SIGKILL at shutdown): tells
 *  billing, through the ring, to release that worker's holds once every
 *  earlier event is applied. */
void ta_master_on_worker_dead(pid_t pid);

/** The billing child's body (master/billing_child.c): builds the
 *  ta_billing_conf_t from cfg and runs ta_billing_run().
 *  ring is the master's ring mapping (may be NULL). Returns the exit code. */
int ta_master_billing_child(const ta_config_t *cfg, void *ring);

/** tokenaudit (the CLI): init, create-superadmin, ledger dump, ... */
int ta_cli_main(int argc, char **argv);

#endif
