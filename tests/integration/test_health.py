#!/usr/bin/env python3
"""Provider route health, end to end (ledger/health.h, docs/ARCHITECTURE.md).

Real processes: tokenauditd with 2 workers (harness.py) in front of two fake
upstreams (tests/tools/fake_upstream, one per provider, so each counts its
own calls) and a closed port; health_failures 3, health_webhook_url pointing
at a receiver in this test (as test_warnings.py's).

Checked:
  * 4xx does not count: five 400s from the primary reach the client, the
    route stays healthy and keeps serving.
  * a route answering 503 three times is down: each of those requests failed
    over to the backup (one call on each route per client request); then the
    requests go straight to the backup, with no call to the primary, while the
    cooldown runs (checked for the requests that ended before it could have
    run out, measured from before the third failure was sent). The three
    failures are served by one worker and the skipping by the other (the
    other worker is stopped with SIGSTOP meanwhile): the state is shared.
  * after the cooldown one trial reaches it: six requests at once while the
    primary answers slowly: exactly one goes to the primary, five to the
    backup; it answers, and the route is healthy (requests go back to it).
  * a route whose provider refuses connections is down after three, and no
    connect is tried meanwhile (the worker log has no new connect failure).
  * status: GET /api/admin/providers/{id}/ shows health.state, last_error,
    error_rate, calls, errors, p50_ms and the route's state; /metrics has
    tokenaudit_provider_errors_total, _calls_total, _latency_seconds and
    _route_state labelled by provider id and name (a name with a quote and a
    backslash, escaped) and upstream.
  * a webhook per change of state (healthy -> down, down -> healthy; the
    connect route's healthy -> down), with provider id and name, the route,
    old and new state and the reason, and no other.
  * equal priorities split by weight: 3:1 over 400 requests from 8 threads
    land 300 +- 20 on the heavy route (smooth weighted round robin per worker:
    within a couple of requests, so the tolerance cannot flake).
  * nothing charged twice: one audit record per client request, every 200
    charged once, and `tokenaudit ledger verify` exits 0.
  * probes (health_check_interval_s, a gateway of its own): while the down
    route's port is closed the probes fail (last_error "probe: connect ...")
    and no client request goes there; once a provider listens on the port a
    probe brings the route back (webhook "the probe succeeded") and it
    serves again.
"""

import http.client
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import proxyutil  # noqa: E402
from proxyutil import check  # noqa: E402

COOLDOWN_S = 10
ODD_NAME = 'prov "a"\\x'


class Receiver:
    """The webhook endpoint: records every POST body."""

    def __init__(self):
        self.lock = threading.Lock()
        self.posts = []
        rcv = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n))
                with rcv.lock:
                    rcv.posts.append((self.headers.get("Idempotency-Key"), body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.url = "http://127.0.0.1:%d/hook" % self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def of(self, provider_id):
        with self.lock:
            return [b for _, b in self.posts if b.get("provider_id") == provider_id]

    def wait(self, provider_id, n, what):
        return harness.wait_for(lambda: len(self.of(provider_id)) >= n and self.of(provider_id), 30, what)

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def control(fake, **kw):
    c = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    try:
        c.request("POST", "/_fake/control" if kw else "/_fake/reset", json.dumps(kw),
                  {"Content-Type": "application/json"})
        check(c.getresponse().status == 200, "fake control")
    finally:
        c.close()


def chats(fake):
    return len(fake.lines("POST /v1/chat/completions"))


def chat(gw, key, model, want=200):
    r = proxyutil.v1(gw, key, "POST", "/chat/completions",
                     {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
                     timeout=30)
    check(want is None or r.status == want, "%s: want %s, got %s %s" % (model, want, r.status, r.body))
    return r


def health(admin, pid):
    return admin.get("/api/admin/providers/%d/" % pid)["health"]


def metrics(gw):
    r = gw.http("GET", "/metrics")
    check(r.status == 200, "metrics")
    return r.body.decode()


def run(gw, fa, fb, rcv, dead_port):
    admin = proxyutil.Admin(gw)
    pa = admin.add_provider(ODD_NAME, fa.url, "sk-a-000000000001", timeout_s=30)["id"]
    pb = admin.add_provider("prov-b", fb.url, "sk-b-000000000002", timeout_s=30)["id"]
    pc = admin.add_provider("prov-c", "http://127.0.0.1:%d/v1" % dead_port, "sk-c-000000000003")["id"]
    prices = {"input_price": "1", "output_price": "2"}
    m1 = admin.add_model("m1", [proxyutil.route(pa, "up-1", 1), proxyutil.route(pb, "up-1", 2)], **prices)
    m2 = admin.add_model("m2", [proxyutil.route(pc, "up-2", 1), proxyutil.route(pb, "up-2", 2)], **prices)
    m3 = admin.add_model("m3", [dict(proxyutil.route(pa, "up-3", 1), weight=3),
                                dict(proxyutil.route(pb, "up-3", 1), weight=1)], **prices)
    check(m3["routes"][0]["weight"] == 3 and m1["routes"][0]["weight"] == 1, m3)
    r = gw.http("POST", "/api/admin/models/", {"name": "bad", "routes": [dict(proxyutil.route(pa, "x"), weight=0)]},
                token=admin.tok)
    check(r.status == 400 and r.json["error"]["param"] == "routes[0].weight", "weight 0: %s %s" % (r.status, r.body))
    grp = admin.add_group("g", [m1["id"], m2["id"], m3["id"]])
    key = admin.add_quota(admin.first_user_id(), grp["id"], period="month")["api_key"]
    sent = 0

    # --- 4xx does not count ----------------------------------------------------------------------
    control(fa, scenario="status:400", times=5)
    for _ in range(5):
        chat(gw, key, "m1", want=400)
    sent += 5
    check(chats(fa) == 5 and chats(fb) == 0, "400s are not failed over")
    h = health(admin, pa)
    check(h["state"] == "healthy" and h["routes"][0]["consecutive_failures"] == 0, h)
    chat(gw, key, "m1")
    sent += 1
    check(chats(fa) == 6, "the primary still serves")

    # --- three 503s: down; one worker fails it, the other skips it ----------------------------------
    w1, w2 = gw.worker_pids()[:2]
    control(fa, scenario="status:503", times=0)
    os.kill(w2, signal.SIGSTOP)
    try:
        a0, b0 = chats(fa), chats(fb)
        for i in range(3):
            if i == 2:
                t_last = time.monotonic()  # the cooldown starts after this
            r = chat(gw, key, "m1")
            check(r.json["model"] == "up-1", r.body)
        t_down = time.monotonic()  # the cooldown started before this
        sent += 3
        check(chats(fa) == a0 + 3 and chats(fb) == b0 + 3, "each request: one call on each route")
    finally:
        os.kill(w2, signal.SIGCONT)
    os.kill(w1, signal.SIGSTOP)
    checked = 0
    try:
        for _ in range(10):
            a_before = chats(fa)
            chat(gw, key, "m1")
            sent += 1
            if time.monotonic() < t_last + COOLDOWN_S:
                check(chats(fa) == a_before, "the down route was tried by the other worker")
                checked += 1
    finally:
        os.kill(w1, signal.SIGCONT)
    check(checked > 0, "every request took longer than the cooldown")
    h = health(admin, pa)
    check(h["state"] == "down" and h["last_error"] == "HTTP 503", h)
    rt = [x for x in h["routes"] if x["upstream_name"] == "up-1"][0]
    check(rt["state"] == "down" and rt["errors"] == 3 and rt["calls"] == 9 and rt["cooldown_until"], rt)
    check(abs(rt["error_rate"] - 3 / 9) < 1e-9 and isinstance(rt["p50_ms"], int), rt)
    check(health(admin, pb)["state"] == "healthy", "the backup is healthy")
    listed = [p for p in admin.get("/api/admin/providers/")["results"] if p["id"] == pa][0]
    check(listed["health"]["state"] == "down", "the list shows it too")
    ev = rcv.wait(pa, 1, "the down webhook")
    check(ev[0]["event"] == "provider.health" and ev[0]["old_state"] == "healthy" and
          ev[0]["new_state"] == "down" and ev[0]["provider_name"] == ODD_NAME and
          ev[0]["route"] == {"upstream_name": "up-1"} and "3 failures in a row" in ev[0]["reason"], ev)
    text = metrics(gw)
    label = 'provider_id="%d",provider="prov \\"a\\"\\\\x",upstream="up-1"' % pa
    check('tokenaudit_provider_errors_total{%s} 3\n' % label in text, "errors by provider:\n" + text)
    check('tokenaudit_provider_calls_total{%s} 9\n' % label in text, "calls by provider")
    check('tokenaudit_provider_route_state{%s} 2\n' % label in text, "state down")
    check('tokenaudit_provider_latency_seconds_count{%s} 9\n' % label in text, "latency histogram")

    # --- after the cooldown: one trial -------------------------------------------------------------
    control(fa, scenario="slow_first_byte:4000", times=0)
    time.sleep(max(0.0, t_down + COOLDOWN_S + 0.5 - time.monotonic()))
    a0, b0 = chats(fa), chats(fb)
    out = []
    threads = [threading.Thread(target=lambda: out.append(chat(gw, key, "m1"))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sent += 6
    check(len(out) == 6, "six answers")
    check(chats(fa) == a0 + 1 and chats(fb) == b0 + 5, "one trial: %d on the primary, %d on the backup"
          % (chats(fa) - a0, chats(fb) - b0))
    control(fa)
    h = health(admin, pa)
    check(h["state"] == "healthy", h)
    ev = rcv.wait(pa, 2, "the healthy webhook")
    check(ev[1]["old_state"] == "down" and ev[1]["new_state"] == "healthy" and
          ev[1]["reason"] == "the trial request succeeded", ev)
    a0 = chats(fa)
    chat(gw, key, "m1")
    sent += 1
    check(chats(fa) == a0 + 1, "the primary serves again")

    # --- connection refused -----------------------------------------------------------------------
    def connect_failures():
        return gw.log().count("upstream connect (route 1 of 2, provider %d)" % pc)
    for _ in range(3):
        chat(gw, key, "m2")
    sent += 3
    check(connect_failures() == 3, "three connect failures")
    check(health(admin, pc)["state"] == "down", health(admin, pc))
    for _ in range(6):
        chat(gw, key, "m2")
    sent += 6
    check(connect_failures() == 3, "no connect tried while it cools down")
    ev = rcv.wait(pc, 1, "the connect route's webhook")
    check(ev[0]["new_state"] == "down" and "connect" in ev[0]["reason"], ev)

    # --- weights 3:1 ---------------------------------------------------------------------------------
    a0, b0 = chats(fa), chats(fb)
    lock = threading.Lock()
    todo = [400]

    def worker():
        conn = gw.connection(timeout=30)
        try:
            while True:
                with lock:
                    if todo[0] == 0:
                        return
                    todo[0] -= 1
                r = proxyutil.v1(gw, key, "POST", "/chat/completions",
                                 {"model": "m3", "messages": [{"role": "user", "content": "w"}], "max_tokens": 5},
                                 conn=conn)
                check(r.status == 200, r.body)
        finally:
            conn.close()
    ts = [threading.Thread(target=worker) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    sent += 400
    da, db = chats(fa) - a0, chats(fb) - b0
    check(da + db == 400, "one call per request: %d + %d" % (da, db))
    check(280 <= da <= 320, "3:1 split: %d on the heavy route, %d on the light one" % (da, db))

    # --- nothing charged twice ------------------------------------------------------------------------
    recs = proxyutil.audit_records(gw, applied=sent)
    check(len(recs) == sent, "one audit record per request: %d for %d" % (len(recs), sent))
    ok = [r for r in recs if r["status"] == 200]
    check(len(ok) == sent - 5 and all(proxyutil.nano(r["cost"]) > 0 for r in ok), "every 200 charged")
    proxyutil.verify(gw)
    # exactly the webhooks of the changes above
    time.sleep(0.5)
    check(len(rcv.of(pa)) == 2 and len(rcv.of(pb)) == 0 and len(rcv.of(pc)) == 1,
          "one webhook per change: %r" % rcv.posts)
    keys = [k for k, _ in rcv.posts]
    check(len(set(keys)) == len(keys) and all(keys), "distinct Idempotency-Keys: %r" % keys)


def probe_case():
    """health_check_interval_s: no client request tries a down route; a probe of
    the provider's models list (failing while the port is closed) brings it back
    once a provider listens there."""
    port = harness.free_port()
    rcv = Receiver()
    with harness.Gateway(workers=2, config={"health_failures": 2, "health_cooldown_s": 1,
                                            "health_check_interval_s": 1,
                                            "health_webhook_url": rcv.url}) as gw:
        d = os.path.join(gw.tmp, "b")
        os.makedirs(d)
        fb = proxyutil.Fake(d)
        fc = None
        try:
            admin = proxyutil.Admin(gw)
            pc = admin.add_provider("probed", "http://127.0.0.1:%d/v1" % port, "sk-c-000000000003")["id"]
            pb = admin.add_provider("backup", fb.url, "sk-b-000000000002")["id"]
            m = admin.add_model("pm", [proxyutil.route(pc, "up", 1), proxyutil.route(pb, "up", 2)],
                                input_price="1", output_price="2")
            grp = admin.add_group("g", [m["id"]])
            key = admin.add_quota(admin.first_user_id(), grp["id"], period="month")["api_key"]

            def connects():
                return gw.log().count("upstream connect (route 1 of 2, provider %d)" % pc)
            for _ in range(2):
                chat(gw, key, "pm")
            check(connects() == 2 and health(admin, pc)["state"] == "down", health(admin, pc))
            # probes fail while nothing listens; clients never try it meanwhile
            harness.wait_for(lambda: (health(admin, pc)["last_error"] or "").startswith("probe: connect"), 30,
                             "a failed probe")
            for _ in range(5):
                chat(gw, key, "pm")
            check(connects() == 2, "no client request went to the down route")
            check(health(admin, pc)["state"] == "down", "a failed probe keeps it down")
            # a provider comes up on the port: the next probe brings it back
            fc = subprocess.Popen([harness.binary("fake_upstream"), "--port", str(port), "--log",
                                   os.path.join(gw.tmp, "c.log")], stdout=subprocess.PIPE)
            check(fc.stdout.readline().decode().startswith("listening on "), "fake on the port")
            harness.wait_for(lambda: health(admin, pc)["state"] == "healthy", 30, "the probe brings it back")
            ev = rcv.wait(pc, 2, "the probe's webhook")
            check(ev[0]["new_state"] == "down" and ev[1]["new_state"] == "healthy" and
                  ev[1]["reason"] == "the probe succeeded", ev)
            b0 = chats(fb)
            chat(gw, key, "pm")
            check(chats(fb) == b0, "served by the route that came back")
            with open(os.path.join(gw.tmp, "c.log")) as f:
                log = f.read()
            check("GET /v1/models" in log and "POST /v1/chat/completions" in log, log)
        finally:
            fb.stop()
            if fc is not None:
                fc.terminate()
                fc.wait(10)
            rcv.stop()
        gw.stop()


def main():
    dead_port = harness.free_port()
    rcv = Receiver()
    try:
        with harness.Gateway(workers=2, config={"health_failures": 3, "health_cooldown_s": COOLDOWN_S,
                                                "health_webhook_url": rcv.url}) as gw:
            dirs = [os.path.join(gw.tmp, d) for d in ("a", "b")]
            for d in dirs:
                os.makedirs(d)
            fa, fb = proxyutil.Fake(dirs[0]), proxyutil.Fake(dirs[1])
            try:
                run(gw, fa, fb, rcv, dead_port)
            finally:
                fa.stop()
                fb.stop()
            gw.stop()
    finally:
        rcv.stop()
    probe_case()
    print("ok")


if __name__ == "__main__":
    main()
