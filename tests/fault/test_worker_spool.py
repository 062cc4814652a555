#!/usr/bin/env python3
"""Fault test: a stopping worker loses no event (ledger/spool.c).

Real processes: tokenauditd (tests/integration/harness.py) with ring_slots at
its minimum (1024) and a short shutdown_timeout_ms, in front of
tests/tools/fake_upstream.

Scenario: billing stalled with SIGSTOP; client threads fill the ring until
the workers answer 503 (events wait in their own queues); SIGTERM to the
master, so the workers stop and pass their shutdown bound with events still
queued. They write those events to DATA_DIR/spool and exit. Billing is let
go (SIGCONT), drains the ring and stops with the master; the spools stay.
tokenauditd is started again on the same data directory: its billing finds
the spools of gone workers and applies them.

Checked: the spool files exist after the stop (the scenario happened); after
the restart every answered request has exactly one audit record, not
aborted and charged the fake upstream's usage; no 503 has a record; the
quota's usage counts each request once; no hold and no spool file is left;
`tokenaudit ledger verify` exits 0.
"""

import os
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)
import harness  # noqa: E402
import proxyutil  # noqa: E402
from proxyutil import check, holds  # noqa: E402
from test_ring_full import SLOTS, USAGE, check_records, fill_until_busy  # noqa: E402


def spool_files(gw):
    d = os.path.join(gw.data_dir, "spool")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def main():
    with proxyutil.gateway_with_fake(workers=2, shutdown_timeout_ms=1500, stop=False,
                                     env={"TOKENAUDIT_RING_SLOTS": str(SLOTS)}) as (gw, fake):
        t = proxyutil.Tenant(gw, fake, quota={"period": "month", "cost_limit": "1000"})
        r = proxyutil.v1(gw, t.key, "POST", "/chat/completions",
                         proxyutil.chat_body(fake_usage="%d,%d,%d" % USAGE))
        check(r.status == 200, r.body)
        t.settled()
        warm = [(200, r.request_id, r.json, None)]

        billing = gw.billing_pid()
        os.kill(billing, signal.SIGSTOP)
        try:
            c = fill_until_busy(gw, t.key, "fill")
            mark = len(gw.log())
            gw.signal(signal.SIGTERM)
            # the workers pass their bound with events queued, spool them, exit
            harness.wait_for(lambda: not gw.worker_pids(), 30, "the workers to exit")
        finally:
            os.kill(billing, signal.SIGCONT)
        rc = gw.proc.wait(60)
        check(rc == 0, "tokenauditd exited %s:\n%s" % (rc, gw.log()[-5000:]))
        gw.assert_no_sanitizer_reports()
        files = spool_files(gw)
        print("spool after the stop: %r" % files)
        check(not any(f.endswith(".tmp") or f.endswith(".bad") for f in files), files)

        # billing started again (with a new master) on the same data directory
        mark = len(gw.log())
        gw.start()
        acc = warm + c.accepted()
        total = len(acc)
        check_records(gw, acc, c.busy(), total, "after restart")
        # the scenario happened: events were still queued when the workers stopped
        check(any(f.endswith(".spool") for f in files), "no spool file after the stop: %r" % files)
        harness.wait_for(lambda: not holds(gw), 30, "no hold left", 0.2)
        harness.wait_for(lambda: not spool_files(gw), 30, "the spool files removed", 0.2)
        check("spool" in gw.log()[mark:] and "applied with ticket" in gw.log()[mark:],
              "the restarted billing did not apply a spool:\n%s" % gw.log()[mark:])
        u = t.settled()
        check(u["requests_used"] == total and
              proxyutil.nano(u["cost_used"]) == total * proxyutil.cost_of(*USAGE),
              "usage %r for %d requests" % (u, total))
        proxyutil.verify(gw)
        gw.stop()
    print("ok")


if __name__ == "__main__":
    main()
