"""test_budget.py - the budget guarantee and RPM exactness under concurrency.

1. reserve = strict, 4 workers, 64 concurrent client threads (half on fresh
   connections, half on keep-alive ones; streams and plain answers; with and
   without max_tokens) on ONE quota with a small cost limit. The fake upstream
   runs the `usage_max` scenario: every answer reports as completion tokens the
   max_tokens the gateway sent upstream, and as prompt tokens the gateway's
   upper bound of this prompt, i.e. the worst case the gateway allowed.
   After billing drained (in_flight 0, cost_held 0):
     - the quota's used cost never exceeds its limit, and the budget was used up
       (refusals with insufficient_quota happened);
     - used cost == the sum of the costs of what the fake upstream reported,
       computed here from its log, == the sum of the audit records' costs;
     - one upstream call per 2xx answer; ledger verify exits 0.
2. RPM limit N: 3N requests fired at once -> exactly N answered 2xx, the other
   2N 429 rate_limit_exceeded with Retry-After.
"""

import http.client
import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proxyutil import (Tenant, audit_records, check, cost_of, gateway_with_fake, nano, sse_events,  # noqa: E402
                       verify)

CLIENTS = 64
PER_CLIENT = 3
COST_LIMIT = "0.01"      # 10,000,000 nano; one request costs up to ~0.000224
RPM = 8
# The prompt tokens the fake reports: the gateway's upper bound for the body
# {"messages":[{"role":"user","content":"hi"}]} (17 text bytes + 4 per message
# + 3), so every answer costs exactly the worst case the gateway held.
PROMPT_USAGE = "24,0,0"


def post(gw, key, body, conn=None):
    """POST /v1/chat/completions; returns (status, headers, bytes). A fresh
    connection unless conn is given."""
    own = conn is None
    c = conn or http.client.HTTPConnection(gw.host, gw.port, timeout=60)
    try:
        c.request("POST", "/v1/chat/completions", body=json.dumps(body),
                  headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        if own:
            c.close()


def budget(gw, fake, t):
    results = []
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS)

    def client(i):
        keep = i % 2 == 1
        conn = gw.connection(timeout=60) if keep else None
        start.wait()
        for j in range(PER_CLIENT):
            body = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}],
                    "fake_scenario": "usage_max", "fake_usage": PROMPT_USAGE, "fake_chunks": 3}
            if (i + j) % 3 == 0:
                body["max_tokens"] = 40
            stream = (i + j) % 4 == 1
            if stream:
                body["stream"] = True
                if j % 2:
                    body["stream_options"] = {"include_usage": True}
            try:
                st, hdrs, data = post(gw, t.key, body, conn)
            except (OSError, http.client.HTTPException) as e:
                st, hdrs, data = -1, {}, repr(e).encode()
            with lock:
                results.append((st, hdrs, data, stream))
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    check(not any(th.is_alive() for th in threads), "client threads hung")
    check(len(results) == CLIENTS * PER_CLIENT, "every request answered: %d" % len(results))

    bad = [r for r in results if r[0] not in (200, 429)]
    check(not bad, "only 200 and 429 expected: %r" % [(r[0], r[2][:200]) for r in bad[:5]])
    ok = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 429]
    for st, hdrs, data, stream in refused:
        err = json.loads(data)["error"]
        check(err["code"] == "insufficient_quota", "429 for the budget: %s" % data)
        check(int(hdrs.get("retry-after", "0")) >= 1, "Retry-After on insufficient_quota: %r" % hdrs)
    for st, hdrs, data, stream in ok:
        if stream:
            ev = sse_events(data)
            check(ev and ev[-1] == "[DONE]", "complete stream: %r" % data[-200:])
    check(len(ok) > 10 and len(refused) > 0, "the budget must run out: %d ok, %d refused" % (len(ok), len(refused)))

    # holds larger than the final charges were released meanwhile: use up what
    # is left, one request at a time, until the gateway refuses
    t.settled(timeout=60)
    for _ in range(200):
        st, hdrs, data = post(gw, t.key, {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}],
                                          "fake_scenario": "usage_max", "fake_usage": PROMPT_USAGE})
        results.append((st, hdrs, data, False))
        check(st in (200, 429), "sequential tail: %s %s" % (st, data))
        if st == 429:
            check(json.loads(data)["error"]["code"] == "insufficient_quota", data)
            break
        ok.append(results[-1])
        t.settled(timeout=60)
    check(results[-1][0] == 429, "the budget ran out")

    u = t.settled(timeout=60)
    limit = nano(COST_LIMIT)
    used = nano(u["cost_used"])
    calls = fake.calls("/v1/chat/completions")
    check(len(calls) == len(ok), "one upstream call per 2xx: %d calls, %d ok" % (len(calls), len(ok)))
    reported = sum(cost_of(*c["usage"]) for c in calls)
    # each call reported as output exactly what the gateway let it ask for
    check(all(c["usage"][1] >= 1 for c in calls), "every call had at least one output token")
    clamped = [c for c in calls if c["usage"][1] not in (40, 100)]
    sys.stdout.write("budget: %d ok, %d refused, used %s of %s, %d clamped max_tokens %r\n" %
                     (len(ok), len(refused), u["cost_used"], COST_LIMIT, len(clamped),
                      sorted(c["usage"][1] for c in clamped)))
    check(used <= limit, "used cost %s exceeds the limit %s" % (u["cost_used"], COST_LIMIT))
    check(used == reported, "used cost %d != %d computed from the fake's reported usage" % (used, reported))
    check(u["requests_used"] == len(ok), "requests_used %s vs %d" % (u["requests_used"], len(ok)))
    # used up: what is left cannot hold the prompt's upper bound (24 tokens for
    # this body) plus one output token
    check(limit - used < cost_of(24, 1), "the budget was not used up: %d left" % (limit - used))

    recs = audit_records(gw, applied=len(results))
    mine = [r for r in recs if r["quota_id"] == t.quota_id]
    check(len(mine) == len(results), "one audit record per answer: %d vs %d" % (len(mine), len(results)))
    check(sum(nano(r["cost"]) for r in mine) == used, "audit costs sum to the used cost")
    check(sorted((r["prompt_tokens"], r["completion_tokens"]) for r in mine if r["status"] == 200) ==
          sorted((c["usage"][0], c["usage"][1]) for c in calls), "audit tokens are the fake's usage")
    pids = {}
    for r in mine:
        pids[r["worker_pid"]] = pids.get(r["worker_pid"], 0) + 1
    sys.stdout.write("requests per worker: %r\n" % sorted(pids.values()))
    check(len(pids) == 4, "requests reached all 4 workers: %r" % pids)


def rpm(gw, fake, t):
    qid_q, key = t.new_quota({"period": "month", "rpm": RPM})
    results = []
    lock = threading.Lock()
    n = 3 * RPM
    start = threading.Barrier(n)

    def client():
        conn = gw.connection(timeout=60)
        conn.connect()
        start.wait()
        try:
            st, hdrs, data = post(gw, key, {"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]},
                                  conn)
        finally:
            conn.close()
        with lock:
            results.append((st, hdrs, data))

    threads = [threading.Thread(target=client) for _ in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    check(len(results) == n, "all answered")
    ok = [r for r in results if 200 <= r[0] < 300]
    limited = [r for r in results if r[0] == 429]
    check(len(ok) == RPM, "exactly %d accepted, got %d: %r" % (RPM, len(ok), sorted(r[0] for r in results)))
    check(len(limited) == 2 * RPM, "the rest 429: %r" % sorted(r[0] for r in results))
    for st, hdrs, data in limited:
        check(json.loads(data)["error"]["code"] == "rate_limit_exceeded", data)
        check(int(hdrs.get("retry-after", "0")) >= 1, "Retry-After: %r" % hdrs)
        check(hdrs.get("x-ratelimit-limit-requests") == str(RPM), "x-ratelimit-limit-requests: %r" % hdrs)
        check(hdrs.get("x-ratelimit-remaining-requests") == "0", "x-ratelimit-remaining-requests: %r" % hdrs)
    u = t.settled(qid_q["id"])
    check(u["requests_used"] == RPM, "requests_used %s" % u["requests_used"])
    sys.stdout.write("rpm: %d accepted, %d limited\n" % (len(ok), len(limited)))


def main():
    with gateway_with_fake(workers=4, env={"TOKENAUDIT_RESERVE": "strict"}) as (gw, fake):
        t = Tenant(gw, fake, quota={"period": "month", "cost_limit": COST_LIMIT}, max_output_tokens=100,
                   timeout_s=30)
        budget(gw, fake, t)
        rpm(gw, fake, t)
        verify(gw)
    print("ok")


if __name__ == "__main__":
    main()
