/*
 * sweep.c - holds of processes that are gone.
 *
 * The master pushes TA_EV_WORKER_DEAD only for children it reaps itself. A
 * hold can outlive its worker without one: the worker belonged to a master
 * that was killed (PR_SET_PDEATHSIG stopped it; its shutdown bound cut a
 * request, or the whole group was SIGKILLed), or it exited with requests in
 * flight. So billing looks itself, at start and every 5 s: for every pid
 * that owns a hold and no longer runs it pushes TA_EV_WORKER_DEAD into the
 * ring. The master's ordering argument holds: the process is gone, so every
 * event it published has a smaller ticket than the one claimed now and is
 * applied first (settling its hold); what is left when the control event is
 * applied was never published and is released with an aborted record by the
 * usual path, exactly once. A pid reused by another process is taken as
 * alive (its holds wait for a later sweep): never release a live worker's.
 * A gone pid that left a spool file (spool.c) gets the same event, so its
 * spooled events are applied even when it holds nothing any more.
 *
 * Billing process only (ta_billing_run calls it at start and every 5 s).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "ledger/billing_internal.h"
#include "ledger/quota.h"

bool ta_billing_pid_gone(int32_t pid)
{
    char path[64], buf[256];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return errno == ENOENT;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the state follows the command name */
    return p != NULL && (p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X'));
}

void ta_billing_sweep(ta_billing_t *b)
{
    enum { MAXPIDS = 512 }; /* distinct pids looked at per sweep (two generations of workers fit) */
    int32_t seen[MAXPIDS], gone[MAXPIDS];
    size_t nseen = 0, ngone = 0;
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v;
    if (ta_txn_begin(b->st, TA_ENV_LEDGER, false, &txn) != 0)
        return;
    if (mdb_cursor_open(txn, ta_store_dbi(b->st, TA_DB_HOLDS), &cur) == 0) {
        for (int mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0 && nseen < MAXPIDS;
             mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            ta_hold_t h;
            bool known = false;
            if (ta_rec_decode(&ta_desc_hold, v.mv_data, v.mv_size, &h) != 0 || h.worker_pid <= 0)
                continue;
            for (size_t i = 0; i < nseen && !known; i++)
                known = seen[i] == h.worker_pid;
            if (known)
                continue;
            seen[nseen++] = h.worker_pid;
            if (ta_billing_pid_gone(h.worker_pid))
                gone[ngone++] = h.worker_pid;
        }
        mdb_cursor_close(cur);
    }
    ta_txn_abort(txn);
    ta_spool_sweep(b, gone, &ngone, MAXPIDS);
    for (size_t i = 0; i < ngone; i++) {
        ta_event_t ev;
        uint64_t t;
        memset(&ev, 0, sizeof(ev));
        ev.kind = TA_EV_WORKER_DEAD;
        ev.worker_pid = gone[i];
        ev.t_received_ns = ev.t_done_ns = ta_now_ns();
        if (ta_ring_push(b->ring, &ev, &t) != 0)
            break; /* ring full: the next sweep tries again */
        ta_log(TA_LOG_INFO, "billing: process %d holds requests and is gone: releasing them "
               "(ticket %" PRIu64 ")", (int)gone[i], t);
    }
}
