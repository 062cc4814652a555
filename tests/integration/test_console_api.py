"""test_console_api.py - the /api additions the web console stands on, over HTTP
against a real tokenauditd (two workers, real billing) and the real fake
upstream:

  * GET /api/admin/requests/{request_id}/: the record the list shows, found by
    its id alone and within a since/until range; 404 outside the range or for an
    unknown id; 400 naming a bad since.
  * GET /api/admin/requests/export/: streamed (chunked, no Content-Length), over
    more records than one part holds; unfiltered it is byte for byte what
    `tokenaudit audit export` writes (CSV and JSON lines); filtered it holds the
    records the list holds, oldest first; a requested model "=1+2" is
    neutralised to '=1+2 in CSV and kept as is in JSON lines; a bad format is a
    400 naming it.
  * GET /api/admin/warnings/: thresholds reached with their webhook's state
    (delivered for a receiver answering 200, failed with its attempts for one
    answering 500), filters (quota_id, user_id, webhook_state, since/until),
    pages; newest first.
  * GET /api/admin/status/: the request count moves by exactly the /v1 answers
    made, by class and upstream error kind; two workers; billing alive; a rate
    once a worker has sampled for a second; the version of the binary.
  * A normal user: GET /api/requests/ holds exactly their own records (with a
    JWT or their API key; ?user_id= of another and ?quota_id= of another's quota
    change nothing / give nothing); POST /api/quotas/{id}/reset_api_key/ gives a
    new key for their own quota (old key refused, new key works) and 404 for
    another's, whose key keeps working; an API key cannot reset keys (401); every
    admin endpoint above answers them 403.

Nothing is timed: the waits are for billing to have written records or sampled.
"""

import http.server
import json
import os
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import proxyutil  # noqa: E402
from proxyutil import check  # noqa: E402

USAGE = "100,50,0"  # 0.0002 per request at input 1 / output 2 per 1M tokens
LIMIT = "0.001"     # so each request is 20% of it
EXPORT_PART = 256   # admin/requests.c: records per streamed part


class Receiver:
    """The warning webhook: 200, or 500 for the quota ids in `fail`."""

    def __init__(self):
        self.fail = set()
        self.posts = []
        rcv = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                rcv.posts.append(body)
                code = 500 if body["quota_id"] in rcv.fail else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = "http://127.0.0.1:%d/hook" % self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def chat(gw, key, **kw):
    return proxyutil.v1(gw, key, "POST", "/chat/completions", proxyutil.chat_body(**kw))


def listed(t, path, token=None):
    """Every record of a listing, following next links (page_size 500)."""
    tok = token or t.tok
    r = t.gw.http("GET", path + ("&" if "?" in path else "?") + "page_size=500", token=tok)
    check(r.status == 200, "GET %s: %s %s" % (path, r.status, r.body))
    out = list(r.json["results"])
    while r.json["next"]:
        r = t.gw.http("GET", r.json["next"][len(t.gw.url):], token=tok)
        out += r.json["results"]
    return out


def status(t):
    return t.get("/api/admin/status/")


def warnings(t, query=""):
    return t.get("/api/admin/warnings/" + query)


def records_case(gw, t):
    # a few real calls and enough refusals (each is a record) for three export parts
    ok = [chat(gw, t.key, fake_usage=USAGE, max_tokens=50) for _ in range(3)]
    check(all(r.status == 200 for r in ok), [r.status for r in ok])
    bad = proxyutil.v1(gw, t.key, "POST", "/chat/completions",
                       {"model": "=1+2", "messages": [{"role": "user", "content": "hi"}]})
    check(bad.status == 404, bad.body)
    conn = gw.connection()
    for i in range(2 * EXPORT_PART + 10):
        r = proxyutil.v1(gw, t.key, "POST", "/chat/completions",
                         {"model": "nope-%d" % i, "messages": [{"role": "user", "content": "x"}]},
                         conn=conn)
        check(r.status == 404, r.body)
    conn.close()
    total = 3 + 1 + 2 * EXPORT_PART + 10
    harness.wait_for(lambda: len(listed(t, "/api/admin/requests/")) >= total, 30, "the records")
    recs = listed(t, "/api/admin/requests/")
    check(len(recs) == total, "%d records, %d requests" % (len(recs), total))

    # ---- one record ------------------------------------------------------------------
    one = [r for r in recs if r["status"] == 200][0]
    got = t.get("/api/admin/requests/%s/" % one["id"])
    check(got == one, "detail %r != listed %r" % (got, one))
    t0 = one["created_at"]
    got = t.get("/api/admin/requests/%s/?since=%s&until=%s" % (one["id"], t0, "2262-01-01"))
    check(got == one, got)
    r = gw.http("GET", "/api/admin/requests/%s/?until=%s" % (one["id"], t0), token=t.tok)
    check(r.status == 404 and "in that time range" in r.json["error"]["message"], r.body)
    r = gw.http("GET", "/api/admin/requests/%s/" % ("0" * 32), token=t.tok)
    check(r.status == 404 and "0" * 32 in r.json["error"]["message"], r.body)
    r = gw.http("GET", "/api/admin/requests/%s/" % one["id"].upper(), token=t.tok)
    check(r.status == 404, "an id in capitals is no route: %s" % r.status)
    r = gw.http("GET", "/api/admin/requests/%s/?since=yesterday" % one["id"], token=t.tok)
    check(r.status == 400 and r.json["error"]["param"] == "since", r.body)

    # ---- the export --------------------------------------------------------------------
    for fmt, ctype in (("csv", "text/csv; charset=utf-8"), ("jsonl", "application/x-ndjson")):
        r = gw.http("GET", "/api/admin/requests/export/?format=" + fmt, token=t.tok, timeout=60)
        check(r.status == 200 and r.headers["content-type"] == ctype, (r.status, r.headers))
        check("content-length" not in r.headers and
              r.headers.get("transfer-encoding") == "chunked", "not streamed: %r" % r.headers)
        check(r.headers["content-disposition"] == 'attachment; filename="requests.%s"' % fmt,
              r.headers)
        cli = harness.run_cli("audit", "export", "--data-dir", gw.data_dir, "--format", fmt,
                              env=gw.env).stdout
        check(r.body.decode() == cli, "%s export differs from `tokenaudit audit export`" % fmt)
    lines = r.body.decode().splitlines()  # jsonl
    check(len(lines) == total, "%d lines" % len(lines))
    check([json.loads(l)["id"] for l in lines] == [x["id"] for x in reversed(recs)],
          "oldest first, every record once")
    check(any(json.loads(l)["model"] == "=1+2" for l in lines), "jsonl keeps the name as is")
    csv = gw.http("GET", "/api/admin/requests/export/?format=csv", token=t.tok, timeout=60).body
    check(b"\"'=1+2\"" in csv and b"\"=1+2\"" not in csv, "a formula is neutralised in CSV")
    check(csv.decode().splitlines()[0].startswith("id,created_at,"), "a header row")
    # filtered: what the list holds
    q = "?quota_id=%d&status=200&format=jsonl" % t.quota_id
    r = gw.http("GET", "/api/admin/requests/export/" + q, token=t.tok)
    want = listed(t, "/api/admin/requests/?quota_id=%d&status=200" % t.quota_id)
    check([json.loads(l)["id"] for l in r.body.decode().splitlines()] ==
          [x["id"] for x in reversed(want)] and len(want) == 3, "filtered export")
    r = gw.http("GET", "/api/admin/requests/export/?model=nope-7", token=t.tok)
    check(len(r.body.decode().splitlines()) == 1, r.body)
    r = gw.http("GET", "/api/admin/requests/export/?format=xml", token=t.tok)
    check(r.status == 400 and r.json["error"]["param"] == "format", r.body)
    r = gw.http("GET", "/api/admin/requests/export/?status=99", token=t.tok)
    check(r.status == 400 and r.json["error"]["param"] == "status", r.body)
    r = gw.http("GET", "/api/admin/requests/export/?since=2030-01-01&format=csv", token=t.tok)
    check(r.status == 200 and len(r.body.decode().splitlines()) == 1, "only the header")
    return total


def warnings_case(gw, t, rcv):
    """Quota A's webhook is delivered, quota B's fails (500 every attempt)."""
    qa, ka = t.new_quota({"period": "month", "cost_limit": LIMIT, "warn_at": [50, 80]})
    qb, kb = t.new_quota({"period": "month", "cost_limit": LIMIT, "warn_at": [50]})
    rcv.fail.add(qb["id"])
    for key in (ka, ka, ka, ka, kb, kb, kb):
        r = chat(gw, key, fake_usage=USAGE, max_tokens=50)
        check(r.status == 200, r.body)

    def settled():
        w = warnings(t)["results"]
        states = {(x["quota_id"], x["threshold"]): x["webhook_state"] for x in w}
        return w if states == {(qa["id"], 50): "delivered", (qa["id"], 80): "delivered",
                               (qb["id"], 50): "failed"} else None
    w = harness.wait_for(settled, 60, "delivered and failed warnings")
    check([x["raised_at"] for x in w] == sorted((x["raised_at"] for x in w), reverse=True),
          "newest first")
    for x in w:
        check(x["id"] == "%d-%d-%d" % (x["quota_id"], int(x["id"].split("-")[1]), x["threshold"]),
              x)
        check(x["user_id"] == t.user_id and x["cost_limit"] == LIMIT, x)
        if x["quota_id"] == qb["id"]:
            check(x["webhook_attempts"] == 3 and x["webhook_status"] == 500 and
                  not x["webhook_ok"] and x["webhook_error"], x)
        else:
            check(x["webhook_attempts"] == 1 and x["webhook_status"] == 200 and x["webhook_ok"], x)
    check([x["quota_id"] for x in warnings(t, "?quota_id=%d" % qb["id"])["results"]] == [qb["id"]],
          "quota filter")
    check(len(warnings(t, "?user_id=%d" % t.user_id)["results"]) == 3, "user filter")
    check(warnings(t, "?user_id=999")["count"] == 0, "another user")
    check([x["quota_id"] for x in warnings(t, "?webhook_state=failed")["results"]] == [qb["id"]],
          "state filter")
    check(warnings(t, "?webhook_state=pending")["count"] == 0, "none pending")
    check(warnings(t, "?since=2030-01-01")["count"] == 0 and
          warnings(t, "?until=2030-01-01")["count"] == 3, "time filters")
    p1 = warnings(t, "?page_size=2")
    check(p1["count"] == 3 and len(p1["results"]) == 2 and p1["next"] and not p1["previous"], p1)
    p2 = t.get(p1["next"][len(gw.url):])
    check([x["id"] for x in p1["results"] + p2["results"]] == [x["id"] for x in w], "pages")
    for bad, param in (("?webhook_state=lost", "webhook_state"), ("?since=soon", "since"),
                       ("?page_size=501", "page_size"), ("?quota_id=-1", "quota_id")):
        r = gw.http("GET", "/api/admin/warnings/" + bad, token=t.tok)
        check(r.status == 400 and r.json["error"]["param"] == param, (bad, r.body))
    return 7


def status_case(gw, t):
    before = status(t)
    ok = chat(gw, t.key, fake_usage=USAGE, max_tokens=50)
    nf = proxyutil.v1(gw, t.key, "POST", "/chat/completions",
                      {"model": "missing", "messages": [{"role": "user", "content": "x"}]})
    up = chat(gw, t.key, fake_scenario="status:500")
    check((ok.status, nf.status, up.status) == (200, 404, 502), (ok.status, nf.status, up.status))
    after = harness.wait_for(lambda: (lambda s: s if s["requests"]["window_s"] >= 1 else None)(
        status(t)), 30, "a status with a rate window")
    b, a = before["requests"], after["requests"]
    check(a["total"] - b["total"] == 3, (b, a))
    check({k: a["by_class"][k] - b["by_class"][k] for k in a["by_class"]} ==
          {"2xx": 1, "3xx": 0, "4xx": 1, "5xx": 1, "other": 0}, (b, a))
    check(after["upstream_errors"]["status"] - before["upstream_errors"]["status"] == 1,
          (before["upstream_errors"], after["upstream_errors"]))
    check(set(after["upstream_errors"]) == {"connect", "timeout", "status", "no_response", "cut",
                                            "other"}, after["upstream_errors"])
    check(a["per_s"] is not None and a["per_s"] > 0, a)
    check(after["workers"] == 2 and after["billing"]["alive"] and after["billing"]["pid"] > 0,
          after)
    out = subprocess.run([harness.binary("tokenauditd"), "--version"], stdout=subprocess.PIPE,
                         check=True).stdout.decode().split()
    check(out == ["tokenauditd", after["version"]], (out, after["version"]))
    check(after["uptime_s"] >= 0 and after["started_at"].endswith("Z"), after)
    proxyutil.Tenant.settled(t)
    s = harness.wait_for(lambda: (lambda s: s if s["billing"]["lag_events"] == 0 else None)(
        status(t)), 30, "billing caught up")
    check(s["billing"]["lag_s"] == 0 and s["ring"]["depth"] == 0 and
          s["requests"]["in_flight"] == 0, s)
    return 3


def self_case(gw, t):
    """Two normal users; each sees and touches only their own."""
    users = {}
    for name in ("ann", "bob"):
        email = name + "@example.com"
        uid = t.post("/api/admin/users/", {"email": email, "password": "password-" + name})["id"]
        q = t.add_quota(uid, t.group["id"], period="month", cost_limit="100")
        users[name] = {"id": uid, "quota": q["id"], "key": q["api_key"],
                       "jwt": gw.login(email, "password-" + name)}
    ann, bob = users["ann"], users["bob"]
    for u, n in ((ann, 2), (bob, 3)):
        for _ in range(n):
            check(chat(gw, u["key"], fake_usage=USAGE).status == 200, "chat")
    harness.wait_for(lambda: len(listed(t, "/api/admin/requests/?user_id=%d" % bob["id"])) == 3,
                     30, "bob's records")
    harness.wait_for(lambda: len(listed(t, "/api/admin/requests/?user_id=%d" % ann["id"])) == 2,
                     30, "ann's records")
    for u, other in ((ann, bob), (bob, ann)):
        own = listed(t, "/api/admin/requests/?user_id=%d" % u["id"])
        for tok in (u["jwt"], u["key"]):
            mine = listed(t, "/api/requests/", token=tok)
            check(mine == own, "own records, %d of %d" % (len(mine), len(own)))
            check(listed(t, "/api/requests/?user_id=%d" % other["id"], token=tok) == own,
                  "?user_id= of another changes nothing")
            check(listed(t, "/api/requests/?quota_id=%d" % other["quota"], token=tok) == [],
                  "another's quota gives nothing")
        # the admin endpoints answer a user 403
        for path in ("/api/admin/requests/", "/api/admin/requests/%s/" % own[0]["id"],
                     "/api/admin/requests/export/", "/api/admin/warnings/", "/api/admin/status/",
                     "/api/admin/quotas/%d/" % u["quota"]):
            r = gw.http("GET", path, token=u["jwt"])
            check(r.status == 403, "%s as a user: %s" % (path, r.status))
        r = gw.http("POST", "/api/admin/quotas/%d/reset_api_key/" % other["quota"], token=u["jwt"])
        check(r.status == 403, r.body)

    # keys: another's quota is 404 and its key keeps working; one's own gets a new key
    for qid in (bob["quota"], 999999):
        r = gw.http("POST", "/api/quotas/%d/reset_api_key/" % qid, token=ann["jwt"])
        check(r.status == 404 and r.json["error"]["code"] == "not_found", r.body)
    check(proxyutil.v1(gw, bob["key"], "GET", "/usage").status == 200, "bob's key still works")
    r = gw.http("POST", "/api/quotas/%d/reset_api_key/" % ann["quota"], token=ann["key"])
    check(r.status == 401, "an API key cannot reset keys: %s" % r.status)
    r = gw.http("POST", "/api/quotas/%d/reset_api_key/" % ann["quota"], token=ann["jwt"])
    check(r.status == 200 and r.json["api_key"].startswith(r.json["key_prefix"]), r.body)
    check(proxyutil.v1(gw, ann["key"], "GET", "/usage").status == 401, "the old key is refused")
    u = proxyutil.v1(gw, r.json["api_key"], "GET", "/usage")
    check(u.status == 200 and u.json["quota_id"] == ann["quota"], u.body)
    check(t.get("/api/admin/quotas/%d/" % ann["quota"])["key_prefix"] == r.json["key_prefix"],
          "the quota carries the new prefix")
    return 5


def main():
    rcv = Receiver()
    try:
        with proxyutil.gateway_with_fake(workers=2, env={
                "TOKENAUDIT_WARNING_WEBHOOK_URL": rcv.url}) as (gw, fake):
            t = proxyutil.Tenant(gw, fake, quota={"period": "month", "cost_limit": "100"})
            sent = records_case(gw, t)
            sent += warnings_case(gw, t, rcv)
            sent += status_case(gw, t)
            sent += self_case(gw, t)
            proxyutil.audit_records(gw, applied=sent)
            proxyutil.verify(gw)
    finally:
        rcv.stop()
    print("ok")


if __name__ == "__main__":
    main()
