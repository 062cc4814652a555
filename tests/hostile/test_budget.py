"""test_budget.py - budget-multiplying parameters against a small limit, in
both reserve modes.

For `reserve strict` and then `reserve estimate`, one gateway each: six
quotas of cost_limit 0.001 (one per attack, so a failure names the attack),
and 200 requests fired at once, spread over them:
  n            chat, "n" 2..128, max_tokens 100
  best_of      /v1/completions, "best_of" 5..128, max_tokens 100
  both_limits  chat, max_completion_tokens 5 and max_tokens 100000 together
  stream       chat streams, "n" 4, include_usage
  anthropic    chat on an anthropic-type route (/v1/messages upstream), max_tokens 100000
  plain        chat, max_tokens 100 (the concurrency of the estimate mode alone)
The fake upstream runs `usage_max` for every request: it bills as completion
tokens the larger of the output limits it received times n / best_of, the
worst an upstream could bill for what the gateway let through (and 1 prompt
token, below any prompt bound of the gateway).

Asserted per quota, once billing drained (in_flight 0, cost_held 0), reading
the used cost both from the admin API's quota answer and from
`tokenaudit ledger dump --json`:
  - strict:   used <= limit;
  - estimate: used <= limit + the cost of the dearest single request of that
    quota (its audit record): the overspend is at most what ONE request costs;
  - every answer is 200, 429 insufficient_quota or a 400 refusing a
    parameter; one upstream call per 200 and none for the others;
  - the used cost equals the sum of the quota's audit records.
Ends with ledger verify and no sanitizer report.
"""

import http.client
import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hostile import Cases, check, excerpt, finish_gateway  # noqa: E402
import harness  # noqa: E402  (on the path once hostile is imported)
import proxyutil  # noqa: E402
from proxyutil import Tenant, nano  # noqa: E402

LIMIT = "0.001"
CONCURRENT = 200
MSGS = [{"role": "user", "content": "hi"}]
ATTACKS = ["n", "best_of", "both_limits", "stream", "anthropic", "plain"]


def attack_request(kind, i):
    """(path, body, stream) of the i-th request of an attack."""
    if kind == "n":
        return "/v1/chat/completions", {"model": "gpt-test", "messages": MSGS, "max_tokens": 100,
                                        "n": [2, 4, 8, 16, 32, 64, 128][i % 7]}, False
    if kind == "best_of":
        return "/v1/completions", {"model": "gpt-test", "prompt": "hi", "max_tokens": 100,
                                   "best_of": [5, 20, 128][i % 3]}, False
    if kind == "both_limits":
        return "/v1/chat/completions", {"model": "gpt-test", "messages": MSGS, "max_completion_tokens": 5,
                                        "max_tokens": 100000}, False
    if kind == "stream":
        return "/v1/chat/completions", {"model": "gpt-test", "messages": MSGS, "max_tokens": 100, "n": 4,
                                        "stream": True, "stream_options": {"include_usage": True}}, True
    if kind == "anthropic":
        body = {"model": "claude-test", "messages": MSGS, "max_tokens": 100000}
        if i % 2:
            body.update(stream=True, stream_options={"include_usage": True})
        return "/v1/chat/completions", body, i % 2 == 1
    return "/v1/chat/completions", {"model": "gpt-test", "messages": MSGS, "max_tokens": 100}, False


def post(gw, key, path, body):
    c = http.client.HTTPConnection(gw.host, gw.port, timeout=120)
    try:
        c.request("POST", path, body=json.dumps(body), headers={"Authorization": "Bearer " + key,
                                                               "Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, r.read()
    except (OSError, http.client.HTTPException) as e:
        return -1, repr(e).encode()
    finally:
        c.close()


class Setup:
    def __init__(self, gw, fake):
        self.gw, self.fake = gw, fake
        self.t = Tenant(gw, fake, quota={"period": "month", "cost_limit": "100"}, max_output_tokens=100,
                        timeout_s=30)
        anth = self.t.add_provider("anth", "http://127.0.0.1:%d" % fake.port, "sk-ant-secret-999999",
                                   ptype="anthropic", timeout_s=30)
        claude = self.t.add_model("claude-test", [(anth["id"], "claude-up")], input_price="1", output_price="2",
                                  capabilities=["chat", "streaming"], max_output_tokens=100)
        g = self.t.get("/api/admin/groups/%d/" % self.t.group["id"])
        r = gw.http("PATCH", "/api/admin/groups/%d/" % self.t.group["id"],
                    {"model_ids": g["model_ids"] + [claude["id"]]}, token=self.t.tok)
        check(r.status == 200, "add claude-test to the group: %s %s" % (r.status, r.body))
        self.quotas = {}
        for kind in ATTACKS:
            q, key = self.t.new_quota({"period": "month", "cost_limit": LIMIT})
            self.quotas[kind] = (q["id"], key)
        # every request, whatever route: bill the worst case, 1 prompt token
        c = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
        c.request("POST", "/_fake/control", body=json.dumps({"scenario": "usage_max", "usage": "1,0,0",
                                                             "times": 0}))
        check(c.getresponse().status == 200, "fake control")
        c.close()


def fire(s):
    """CONCURRENT requests at once, spread over the attacks. Returns
    {kind: [(status, body, stream)]}."""
    jobs = [(ATTACKS[i % len(ATTACKS)], i // len(ATTACKS)) for i in range(CONCURRENT)]
    results = {k: [] for k in ATTACKS}
    lock = threading.Lock()
    barrier = threading.Barrier(len(jobs))

    def run(kind, i):
        path, body, stream = attack_request(kind, i)
        barrier.wait()
        st, data = post(s.gw, s.quotas[kind][1], path, body)
        with lock:
            results[kind].append((st, data, stream, body))

    ths = [threading.Thread(target=run, args=j) for j in jobs]
    for th in ths:
        th.start()
    for th in ths:
        th.join(300)
    check(not any(th.is_alive() for th in ths), "client threads hung")
    return results


def dump_used(gw, qid):
    for q in proxyutil.ledger_dump(gw)["quotas"]:
        if q["id"] == qid:
            check(isinstance(q.get("balance"), dict), "quota %d has no balance in the dump: %r" % (qid, q))
            return nano(q["balance"]["cost_used"])
    raise AssertionError("quota %d not in the ledger dump" % qid)


def attack_case(s, mode, kind, results, records):
    qid, _ = s.quotas[kind]
    rs = results[kind]
    bad = [(st, excerpt(data, 200)) for st, data, _, _ in rs if st not in (200, 400, 429)]
    check(not bad, "%s/%s: answers other than 200, 400 and 429: %r" % (mode, kind, bad[:3]))
    for st, data, stream, body in rs:
        if st == 429:
            code = json.loads(data)["error"]["code"]
            check(code == "insufficient_quota", "%s/%s: 429 %s for %r" % (mode, kind, code, body))
        if st == 400:
            err = json.loads(data)["error"]
            check(err.get("param"), "%s/%s: a 400 that names no parameter for %r: %s" % (mode, kind, body,
                                                                                      excerpt(data, 200)))
        if st == 200 and stream:
            ev = proxyutil.sse_events(data)
            check(ev and ev[-1] == "[DONE]", "%s/%s: a stream that did not end: %s" % (mode, kind,
                                                                                   excerpt(data[-300:])))
    u = s.t.settled(qid, timeout=120)
    used_api = nano(u["cost_used"])
    used_dump = dump_used(s.gw, qid)
    check(used_api == used_dump, "%s/%s: used cost %d in the admin API, %d in the ledger dump" %
          (mode, kind, used_api, used_dump))
    mine = [r for r in records if r["quota_id"] == qid]
    check(sum(nano(r["cost"]) for r in mine) == used_api, "%s/%s: the audit records sum to %d, used %d" %
          (mode, kind, sum(nano(r["cost"]) for r in mine), used_api))
    limit = nano(LIMIT)
    one = max([nano(r["cost"]) for r in mine] or [0])
    summary = "%s/%s: %d x 200, %d x 429, %d x 400; used %d nano of %d, dearest request %d" % (
        mode, kind, sum(1 for r in rs if r[0] == 200), sum(1 for r in rs if r[0] == 429),
        sum(1 for r in rs if r[0] == 400), used_api, limit, one)
    sys.stdout.write(summary + "\n")
    if mode == "strict":
        check(used_api <= limit, "%s: used cost exceeds the limit by %.1fx" % (summary, used_api / limit))
    else:
        check(used_api <= limit + one, "%s: overspent %d, more than one request (%d) beyond the limit" %
              (summary, used_api - limit, one))


def run_mode(cases, mode):
    with proxyutil.gateway_with_fake(fake_workers=2, stop=False, workers=2,
                                     env={"TOKENAUDIT_RESERVE": mode}) as (gw, fake):
        s = Setup(gw, fake)
        results = fire(s)
        oks = sum(1 for rs in results.values() for r in rs if r[0] == 200)
        for kind in ATTACKS:
            harness.wait_for(lambda: s.t.usage(s.quotas[kind][0])["in_flight"] == 0, 120,
                             "%s: quota of %s drained" % (mode, kind))
        records = proxyutil.audit_records(gw, applied=CONCURRENT, timeout=120)
        for kind in ATTACKS:
            cases.run("%s.%s" % (mode, kind), attack_case, s, mode, kind, results, records)

        def one_call_per_200():
            calls = len(fake.lines("REQ "))
            check(calls == oks, "%s: %d upstream calls for %d answers 200" % (mode, calls, oks))
        cases.run("%s.one_upstream_call_per_200" % mode, one_call_per_200)
        fake.stop()
        cases.run("%s.end.ledger_verify_and_no_sanitizer_report" % mode, finish_gateway, gw)


def main():
    cases = Cases("budget")
    for mode in ("strict", "estimate"):
        run_mode(cases, mode)
    cases.finish()


if __name__ == "__main__":
    main()
