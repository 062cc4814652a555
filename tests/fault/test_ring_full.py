#!/usr/bin/env python3
"""Fault test: a full event ring (docs/ARCHITECTURE.md, "The ring and billing").

Real processes: tokenauditd (tests/integration/harness.py) with ring_slots at
its configured minimum (1024) in front of tests/tools/fake_upstream; billing
stalled with SIGSTOP while client threads keep sending /v1 requests.

What the architecture promises and what is checked:
  * A full ring never drops an event: once the ring is full, a finished
    request's event waits in its worker's own bounded queue, and while that
    queue is not empty the worker answers new /v1 requests 503 with
    Retry-After in OpenAI's error shape. So before the first 503 at least
    ring_slots + 1 requests were accepted (the ring was empty when billing
    stopped), and every 503 is answered without an event (no audit record,
    no charge).
  * SIGCONT billing: it drains the ring, the workers move their queues into
    it, requests succeed again.
  * Every accepted request (any status but the busy 503) has exactly one
    audit record (X-Request-Id == record id), normal and with the status the
    client got; the quota is charged exactly the fake upstream's usage; no
    hold is left; `tokenaudit ledger verify` exits 0.
  * Phase 2, a graceful stop while events still wait in a worker's queue:
    billing stalled, ring full, SIGTERM to the master, then SIGCONT billing.
    The workers must not exit before their queue is in the ring (bounded by
    shutdown_timeout_ms): after the stop every accepted request still has its
    normal record, no hold is left, verify exits 0.
"""

import http.client
import json
import os
import signal
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness  # noqa: E402
import proxyutil  # noqa: E402
from proxyutil import check, holds  # noqa: E402

SLOTS = 1024
USAGE = (20, 5, 0)


class Clients:
    """Client threads on keep-alive connections; each stops after `busy_streak`
    503s in a row (its worker refuses), or when told to."""

    def __init__(self, gw, key, nthreads, busy_streak=5):
        self.gw, self.key = gw, key
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.outcomes = []  # (status, request id, json body, retry-after)
        self.first_busy_at = None  # how many accepted answers were counted when the first 503 came
        self.errors = []  # what went wrong in a client thread, asserted by run() in the main thread
        self.threads = [threading.Thread(target=self.loop, args=(i, busy_streak), daemon=True)
                        for i in range(nthreads)]

    def loop(self, i, busy_streak):
        # A failure raised here would only end this thread: record it for run().
        try:
            self.loop_inner(i, busy_streak)
        except Exception as e:  # noqa: BLE001 - every failure is reported by run()
            with self.lock:
                self.errors.append("client %d: %s: %s" % (i, type(e).__name__, e))

    def loop_inner(self, i, busy_streak):
        conn = http.client.HTTPConnection(self.gw.host, self.gw.port, timeout=30)
        streak = 0
        body = proxyutil.chat_body(fake_usage="%d,%d,%d" % USAGE)
        if i % 2:
            body.update(stream=True, fake_chunks=USAGE[1])
        data = json.dumps(body)
        hdrs = {"Authorization": "Bearer " + self.key, "Content-Type": "application/json"}
        while not self.stop.is_set() and streak < busy_streak:
            try:
                conn.request("POST", "/v1/chat/completions", body=data, headers=hdrs)
                r = conn.getresponse()
                raw = r.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(self.gw.host, self.gw.port, timeout=30)
                continue
            parsed = None
            if r.status != 200 or not body.get("stream"):
                parsed = json.loads(raw)
            elif not raw.rstrip().endswith(b"data: [DONE]"):
                with self.lock:
                    self.errors.append("client %d: a stream ended early: %r" % (i, raw[-200:]))
            with self.lock:
                if r.status == 503 and self.first_busy_at is None:
                    self.first_busy_at = sum(1 for o in self.outcomes if o[0] != 503)
                self.outcomes.append((r.status, r.getheader("x-request-id"), parsed,
                                      r.getheader("retry-after")))
            streak = streak + 1 if r.status == 503 else 0
        conn.close()

    def run(self, timeout=120):
        for t in self.threads:
            t.start()
        for t in self.threads:
            t.join(timeout)
            check(not t.is_alive(), "a client thread hung")
        check(not self.errors, "%d client failure(s):\n  %s" % (len(self.errors), "\n  ".join(self.errors[:10])))

    def accepted(self):
        return [o for o in self.outcomes if o[0] != 503]

    def busy(self):
        return [o for o in self.outcomes if o[0] == 503]


def fill_until_busy(gw, key, phase):
    c = Clients(gw, key, nthreads=4)
    c.run()
    acc, busy = c.accepted(), c.busy()
    print("%s: %d accepted, %d answered 503 (first 503 after %d accepted)"
          % (phase, len(acc), len(busy), c.first_busy_at or -1))
    check(busy, "%s: no 503 while billing was stopped" % phase)
    check(all(o[0] == 200 for o in acc), "%s: statuses %r" % (phase, sorted({o[0] for o in acc})))
    # the ring was empty when billing stopped: a worker refuses only once an
    # event waits in its own queue, i.e. after the ring took SLOTS events
    check(c.first_busy_at is not None and c.first_busy_at >= SLOTS + 1 - 4,
          "%s: first 503 after only %s accepted" % (phase, c.first_busy_at))
    check(len(acc) >= SLOTS + 1, "%s: %d accepted < ring slots + 1" % (phase, len(acc)))
    for status, rid, j, ra in busy:
        check(ra is not None and int(ra) >= 1, "%s: 503 without Retry-After" % phase)
        check(j is not None and set(j.get("error", {})) >= {"message", "type", "code", "param"},
              "%s: 503 not in OpenAI's error shape: %r" % (phase, j))
        check(j["error"]["code"] == "overloaded" and j["error"]["type"] == "overloaded_error", j)
        check(rid, "%s: a 503 without X-Request-Id" % phase)
    return c


def check_records(gw, accepted, busy, expect_total, phase, wait=True):
    want = {o[1] for o in accepted}
    check(len(want) == len(accepted), "%s: an X-Request-Id seen twice" % phase)
    recs = proxyutil.audit_records(gw, applied=expect_total if wait else None, timeout=60)
    by_id = {}
    for r in recs:
        by_id.setdefault(r["id"], []).append(r)
    twice = [k for k, v in by_id.items() if len(v) > 1]
    check(not twice, "%s: ids with two records: %r" % (phase, twice[:5]))
    missing = [rid for rid in want if rid not in by_id]
    check(not missing, "%s: %d accepted requests without a record, e.g. %r" % (phase, len(missing), missing[:3]))
    for st, rid, _, _ in accepted:
        r = by_id[rid][0]
        check(not r["aborted"] and r["status"] == st and r["cost"] == cost_str(),
              "%s: record %r for a %d" % (phase, r, st))
    refused = [o[1] for o in busy if o[1] in by_id]
    check(not refused, "%s: a busy 503 has a record: %r" % (phase, refused[:3]))
    check(len(recs) == expect_total, "%s: %d records, expected %d" % (phase, len(recs), expect_total))
    return recs


def cost_str():
    n = proxyutil.cost_of(*USAGE)
    return ("%d.%09d" % divmod(n, proxyutil.NANO)).rstrip("0").rstrip(".")


def main():
    # stop=False: phase 2 stops the gateway itself and waits for its exit
    with proxyutil.gateway_with_fake(workers=2, shutdown_timeout_ms=20000, stop=False,
                                     env={"TOKENAUDIT_RING_SLOTS": str(SLOTS)}) as (gw, fake):
        check("(%d slots)" % SLOTS in gw.log(), "ring size: %s" % gw.log())
        t = proxyutil.Tenant(gw, fake, quota={"period": "month", "cost_limit": "1000"})
        r = proxyutil.v1(gw, t.key, "POST", "/chat/completions",
                         proxyutil.chat_body(fake_usage="%d,%d,%d" % USAGE))
        check(r.status == 200, r.body)
        t.settled()
        warm = 1

        # ---- phase 1: stall billing, fill the ring, resume ---------------------
        billing = gw.billing_pid()
        os.kill(billing, signal.SIGSTOP)
        try:
            c = fill_until_busy(gw, t.key, "phase 1")
            # nothing was applied meanwhile
            u = t.usage()
            check(u["requests_used"] == warm, "billing was stopped, usage moved: %r" % u)
        finally:
            os.kill(billing, signal.SIGCONT)

        def ok_again():
            r = proxyutil.v1(gw, t.key, "POST", "/chat/completions",
                             proxyutil.chat_body(fake_usage="%d,%d,%d" % USAGE))
            check(r.status in (200, 503), r.body)
            return r if r.status == 200 else None
        again = harness.wait_for(ok_again, 30, "a /v1 request to succeed after SIGCONT", 0.2)
        acc = c.accepted() + [(200, again.request_id, again.json, None)]
        total = warm + len(acc)
        check_records(gw, acc, c.busy(), total, "phase 1")
        harness.wait_for(lambda: not holds(gw), 30, "phase 1: no hold left", 0.2)
        u = t.settled()
        check(u["requests_used"] == total and
              proxyutil.nano(u["cost_used"]) == total * proxyutil.cost_of(*USAGE),
              "phase 1: usage %r for %d requests" % (u, total))
        proxyutil.verify(gw)

        # ---- phase 2: graceful stop while events wait in a worker's queue -------
        billing = gw.billing_pid()
        os.kill(billing, signal.SIGSTOP)
        try:
            c2 = fill_until_busy(gw, t.key, "phase 2")
            mark = len(gw.log())
            gw.signal(signal.SIGTERM)
            harness.wait_for(lambda: gw.log()[mark:].count("shutting down") >= 2, 30,
                             "both workers to begin their shutdown")
        finally:
            os.kill(billing, signal.SIGCONT)
        rc = gw.proc.wait(60)
        check(rc == 0, "tokenauditd exited %s:\n%s" % (rc, gw.log()[-5000:]))
        gw.assert_no_sanitizer_reports()
        total += len(c2.accepted())
        check_records(gw, c2.accepted(), c2.busy(), total, "phase 2", wait=False)
        left = holds(gw)
        check(not left, "phase 2: holds left after a graceful stop: %d" % len(left))
        proxyutil.verify(gw)
    print("ok")


if __name__ == "__main__":
    main()
