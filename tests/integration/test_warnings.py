#!/usr/bin/env python3
"""Quota warnings and the warning webhook, end to end.

Real processes: tokenauditd (harness.py) with warning_webhook_url pointing at
an http.server in this test, in front of tests/tools/fake_upstream (usage set
per request, so every cost is known: 100 prompt + 50 completion tokens at 1 and
2 per 1M tokens = 0.0002, 20% of a 0.001 cost limit).

Checked:
  * quota A, warn_at [50, 80]: 20%, 40% raise nothing; 60% raises 50, 80%
    raises 80, 100% raises nothing new; exactly one POST per threshold, with
    the quota id, the threshold and the usage in the body; GET
    /api/admin/quotas/{id}/ shows usage.warnings [50] then [50, 80].
  * "exactly one" without waiting on a clock: the webhook thread posts in
    order, so once the POST of a later quota's warning (a barrier) arrived,
    any duplicate queued before it would have arrived too.
  * a failing webhook (the receiver holds every attempt until the test lets
    go, then answers 500): settlement is not blocked meanwhile (usage keeps moving, requests
    keep succeeding), the attempts are bounded (3, counted at the receiver,
    then the barrier shows no 4th), and the failure is logged.
  * a receiver that is down: settlement goes on, the failure is logged.
  * nothing is lost: every 200 has its audit record, and `tokenaudit ledger
    verify` exits 0.
  * the warning record is the outbox (outbox_case, a gateway of its own): with
    the receiver down (it accepts and never answers), the warnings are
    recorded "pending" (`tokenaudit audit warnings`); billing is killed -9 and
    the master restarts it; the receiver comes up: every pending warning
    arrives (at least once, with its stable id "quota-period-threshold" in the
    body and the Idempotency-Key header), its record becomes "delivered", and
    after a further kill -9 of billing nothing delivered is posted again
    (counted at the receiver behind a barrier: the restarted billing queues
    the pending warnings before any new one, and posts in order).
"""

import http.server
import json
import os
import signal
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import proxyutil  # noqa: E402
from proxyutil import check  # noqa: E402

USAGE = "100,50,0"  # 0.0002 per request at input 1 / output 2 per 1M tokens
STEP = proxyutil.cost_of(100, 50)
LIMIT = "0.001"
ATTEMPTS = 3  # billing's default webhook_attempts


class Receiver:
    """The webhook endpoint: records every POST; answers per quota id ("ok" by
    default, "fail" = 500); a POST for a quota id in `hold` waits for `release`
    before it answers (so the sender is stuck in that attempt, however long
    its own timeout turns out to be)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.posts = []
        self.fail = set()
        self.hold = set()
        self.keys = []  # (body id, Idempotency-Key header) of every POST
        self.release = threading.Event()
        self.held = threading.Event()
        rcv = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n))
                with rcv.lock:
                    rcv.posts.append((self.path, self.headers.get("Content-Type"), body))
                    rcv.keys.append((body.get("id"), self.headers.get("Idempotency-Key")))
                    held = body["quota_id"] in rcv.hold
                if held:
                    rcv.held.set()
                    rcv.release.wait(30)
                code = 500 if body["quota_id"] in rcv.fail else 200
                try:
                    self.send_response(code)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                except OSError:
                    pass  # the sender was killed meanwhile

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.url = "http://127.0.0.1:%d/hook" % self.srv.server_address[1]
        self.th = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.th.start()

    def of(self, qid):
        with self.lock:
            return [b for _, _, b in self.posts if b["quota_id"] == qid]

    def wait(self, qid, n, what):
        return harness.wait_for(lambda: len(self.of(qid)) >= n and self.of(qid), 30, what)

    def down(self):
        self.srv.shutdown()
        self.srv.server_close()


def spend(gw, t, key, qid, n=1):
    """n requests of 20% each, one after the other; returns how many got 200."""
    ok = 0
    for _ in range(n):
        r = proxyutil.v1(gw, key, "POST", "/chat/completions",
                         proxyutil.chat_body(fake_usage=USAGE, max_tokens=50))
        check(r.status == 200, "spend on quota %d: %s %s" % (qid, r.status, r.body))
        ok += 1
    return ok


def barrier(gw, t, rcv, what):
    """A fresh quota crossing its only threshold: once its POST arrived, every
    webhook queued before it was delivered (one thread, FIFO)."""
    q, key = t.new_quota({"period": "month", "cost_limit": LIMIT, "warn_at": [10]})
    spend(gw, t, key, q["id"])
    rcv.wait(q["id"], 1, "the barrier webhook (%s)" % what)
    return q["id"]


def main():
    rcv = Receiver()
    sent = 0
    with proxyutil.gateway_with_fake(workers=2, stop=False,
                                     env={"TOKENAUDIT_WARNING_WEBHOOK_URL": rcv.url}) as (gw, fake):
        try:
            t = proxyutil.Tenant(gw, fake, quota={"period": "month", "cost_limit": LIMIT,
                                                  "warn_at": [50, 80]})
            qa, ka = t.quota_id, t.key
            check(t.quota_get()["warn_at"] == [50, 80], t.quota_get())

            # ---- thresholds once each -------------------------------------------------
            sent += spend(gw, t, ka, qa, 2)
            u = t.settled()
            check(proxyutil.nano(u["cost_used"]) == 2 * STEP and u["warnings"] == [], u)
            sent += spend(gw, t, ka, qa)
            u = t.settled()
            check(u["warnings"] == [50], "60%%: usage %r" % u)
            p = rcv.wait(qa, 1, "the 50% webhook")
            check([b["threshold"] for b in p] == [50], p)
            sent += spend(gw, t, ka, qa)
            u = t.settled()
            check(proxyutil.nano(u["cost_used"]) == 4 * STEP and u["warnings"] == [50, 80], "80%%: %r" % u)
            rcv.wait(qa, 2, "the 80% webhook")
            sent += spend(gw, t, ka, qa)  # 100%: nothing new to raise
            u = t.settled()
            check(proxyutil.nano(u["cost_used"]) == 5 * STEP and u["warnings"] == [50, 80], "100%%: %r" % u)
            r = proxyutil.v1(gw, ka, "POST", "/chat/completions",
                             proxyutil.chat_body(fake_usage=USAGE, max_tokens=50))
            check(r.status == 429 and r.json["error"]["code"] == "insufficient_quota", r.body)
            barrier(gw, t, rcv, "after quota A")
            sent += 1
            p = rcv.of(qa)
            check(sorted(b["threshold"] for b in p) == [50, 80], "one POST per threshold: %r" % p)
            with rcv.lock:
                paths = {(path, ct) for path, ct, _ in rcv.posts}
            check(paths == {("/hook", "application/json")}, paths)
            for b in p:
                check(b["id"].startswith("%d-" % qa) and b["id"].endswith("-%d" % b["threshold"]), b)
                check(b["event"] == "quota.warning" and b["quota_id"] == qa and
                      b["user_id"] == t.user_id and b["cost_limit"] == LIMIT and
                      b["key_prefix"] == t.quota["key_prefix"], b)
            b50, b80 = sorted(p, key=lambda b: b["threshold"])
            check(proxyutil.nano(b50["cost_used"]) == 3 * STEP and b50["requests_used"] == 3, b50)
            check(proxyutil.nano(b80["cost_used"]) == 4 * STEP and b80["requests_used"] == 4, b80)

            # ---- a failing webhook: settlement goes on, attempts bounded ---------------
            qb, kb = t.new_quota({"period": "month", "cost_limit": LIMIT, "warn_at": [50]})
            qb = qb["id"]
            rcv.fail.add(qb)
            rcv.hold.add(qb)
            sent += spend(gw, t, kb, qb, 3)
            harness.wait_for(rcv.held.is_set, 30, "the first webhook attempt for quota B")
            # the webhook thread is stuck in that attempt: billing settles anyway
            sent += spend(gw, t, kb, qb, 2)
            u = t.settled(qb)
            check(u["requests_used"] == 5 and proxyutil.nano(u["cost_used"]) == 5 * STEP and
                  u["warnings"] == [50], "quota B settled while its webhook hangs: %r" % u)
            check(1 <= len(rcv.of(qb)) <= ATTEMPTS, "attempts so far: %r" % rcv.of(qb))
            rcv.release.set()
            rcv.wait(qb, ATTEMPTS, "%d attempts for quota B" % ATTEMPTS)
            harness.wait_for(lambda: "warning webhook for quota %d at 50%%: failed after %d attempts"
                             % (qb, ATTEMPTS) in gw.log(), 30, "the failure log line")
            barrier(gw, t, rcv, "after quota B")
            sent += 1
            check(len(rcv.of(qb)) == ATTEMPTS, "bounded retries: %d attempts" % len(rcv.of(qb)))
            check(all(b["threshold"] == 50 for b in rcv.of(qb)), rcv.of(qb))

            # ---- the receiver is down -----------------------------------------------
            rcv.down()
            qc, kc = t.new_quota({"period": "month", "cost_limit": LIMIT, "warn_at": [50]})
            qc = qc["id"]
            sent += spend(gw, t, kc, qc, 3)
            harness.wait_for(lambda: "warning webhook for quota %d at 50%%: failed after %d attempts"
                             % (qc, ATTEMPTS) in gw.log(), 30, "the failure log line (receiver down)")
            sent += spend(gw, t, kc, qc, 2)
            u = t.settled(qc)
            check(u["requests_used"] == 5 and u["warnings"] == [50], "quota C: %r" % u)

            # ---- nothing lost -------------------------------------------------------------
            recs = proxyutil.audit_records(gw, applied=sent)
            check(len(recs) == sent + 1, "%d records for %d answers (+1 refusal)" % (len(recs), sent))
            check(len({r["id"] for r in recs}) == len(recs), "an id twice")
            proxyutil.verify(gw)
            gw.stop()
        finally:
            rcv.release.set()
    outbox_case()
    print("ok")


def warnings_of(gw, state=None):
    """The warning records (tokenaudit audit warnings), by stable id."""
    args = ["audit", "warnings", "--data-dir", gw.data_dir] + (["--state", state] if state else [])
    p = harness.run_cli(*args, env=gw.env)
    recs = [json.loads(l) for l in p.stdout.splitlines() if l.strip()]
    out = {}
    for w in recs:
        ps = int(harness_time(w["period_start"]))
        out["%d-%d-%d" % (w["quota_id"], ps, w["threshold"])] = w
    return out


def harness_time(s):
    """RFC 3339 (UTC, as the schema writes times) -> unix seconds."""
    import calendar
    import time as _t
    return calendar.timegm(_t.strptime(s.replace("Z", "+0000")[:19], "%Y-%m-%dT%H:%M:%S"))


def kill_billing(gw):
    """kill -9 billing; returns once the master started a new one."""
    old = gw.billing_pid()
    os.kill(old, signal.SIGKILL)
    return gw.wait_for(lambda: (lambda p: p if p and p != old else None)(gw.billing_pid()), 60,
                       "billing restarted after kill -9")


def outbox_case():
    rcv = Receiver()
    # a POST the receiver holds stays in flight for 10 minutes: the warnings are
    # certainly still pending when billing is killed, however slow this machine
    env = {"TOKENAUDIT_WARNING_WEBHOOK_URL": rcv.url, "TOKENAUDIT_WARNING_WEBHOOK_TIMEOUT_MS": "600000"}
    with proxyutil.gateway_with_fake(workers=1, stop=False, env=env) as (gw, fake):
        try:
            t = proxyutil.Tenant(gw, fake, quota={"period": "month", "cost_limit": LIMIT,
                                                  "warn_at": [50, 80]})
            qd, kd = t.quota_id, t.key
            qe, ke = t.new_quota({"period": "month", "cost_limit": LIMIT, "warn_at": [50]})
            qe = qe["id"]
            # the receiver is down: it takes every POST and never answers (until release)
            rcv.hold |= {qd, qe}
            spend(gw, t, kd, qd, 4)  # 50% and 80%
            spend(gw, t, ke, qe, 3)  # 50%
            check(t.settled(qd)["warnings"] == [50, 80] and t.settled(qe)["warnings"] == [50],
                  "warnings raised")
            harness.wait_for(rcv.held.is_set, 30, "the first webhook POST (receiver down)")
            pend = warnings_of(gw, "pending")
            check(len(pend) == 3 and all(w["webhook_ok"] is False for w in pend.values()),
                  "3 warnings recorded pending while the receiver is down: %r" % pend)
            ids = set(pend)
            check({i.split("-")[0] for i in ids} == {str(qd), str(qe)}, ids)

            # billing dies with all three pending; the master restarts it
            kill_billing(gw)
            check(set(warnings_of(gw, "pending")) == ids, "still pending after kill -9")
            # the receiver comes up: the restarted billing delivers them
            rcv.release.set()
            got = harness.wait_for(lambda: (lambda d: d if set(d) == ids else None)(
                warnings_of(gw, "delivered")), 60, "the pending warnings delivered after the restart")
            for i, w in got.items():
                check(w["webhook_state"] == "delivered" and w["webhook_ok"] is True and
                      w["webhook_status"] == 200 and w["webhook_attempts"] >= 1, w)
            with rcv.lock:
                keys = list(rcv.keys)
            for i in ids:
                check((i, i) in keys, "warning %s arrived with its stable id: %r" % (i, keys))
            check(all(k[0] == k[1] for k in keys), "body id == Idempotency-Key: %r" % keys)
            before = {i: sum(1 for k in keys if k[0] == i) for i in ids}

            # a further restart: nothing delivered is posted again
            kill_billing(gw)
            barrier(gw, t, rcv, "after the second restart")
            with rcv.lock:
                after = {i: sum(1 for k in rcv.keys if k[0] == i) for i in ids}
            check(after == before, "posted again after delivery: %r -> %r" % (before, after))
            harness.wait_for(lambda: not warnings_of(gw, "pending"), 30,
                             "the barrier's warning delivered (none pending)")
            check(set(warnings_of(gw, "delivered")) >= ids, warnings_of(gw))
            proxyutil.verify(gw)
            gw.stop()
        finally:
            rcv.release.set()


if __name__ == "__main__":
    main()
