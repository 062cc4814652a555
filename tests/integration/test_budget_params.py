"""test_budget_params.py - no request parameter can make the upstream bill more
than the hold covers.

The fake upstream runs the `usage_max` scenario: it bills as completion tokens
the LARGER of max_completion_tokens and max_tokens, times max(n, best_of) --
the worst an upstream could bill for the body it received. Each case runs on a
fresh quota with cost_limit 0.001 (1,000,000 nano; at output price 2 per 1M
tokens one output token costs 2,000 nano, so about 500 fit).

With the default reserve mode (strict; the gateway runs without a `reserve`
setting, so this also proves the default):
  - chat with n = 128 (plain and streamed), completions with best_of = 20,
    both output limits at once ({"max_completion_tokens": 5, "max_tokens":
    100000}), an Anthropic route with max_tokens 100000: answered, and the used
    cost never exceeds the limit; both-limits reaches the upstream as one field;
  - n / best_of out of bounds or of the wrong type: 400 naming the parameter,
    nothing charged, nothing sent upstream.
With reserve = estimate: a request is not trimmed, and the used cost exceeds
the limit by at most that one request's worst case.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proxyutil import Tenant, check, gateway_with_fake, nano, sse_events, v1, verify  # noqa: E402

LIMIT = "0.001"
LIMIT_NANO = 1000000
PROMPT = [{"role": "user", "content": "hi"}]


def fresh(t):
    q, key = t.new_quota({"period": "month", "cost_limit": LIMIT})
    return q["id"], key


def used(t, qid):
    return nano(t.settled(qid)["cost_used"])


def strict_cases(gw, fake, t):
    # n = 128 multiplies the output: all 128 choices are held, the limit per
    # choice is clamped so that they fit.
    qid, key = fresh(t)
    r = v1(gw, key, "POST", "/chat/completions", {"model": "gpt-test", "messages": PROMPT, "n": 128,
                                                 "max_tokens": 100, "fake_scenario": "usage_max"})
    check(r.status == 200, "n=128: %s %s" % (r.status, r.body))
    u = used(t, qid)
    check(0 < u <= LIMIT_NANO, "n=128: used %d nano, limit %d" % (u, LIMIT_NANO))

    # the same as a stream
    qid, key = fresh(t)
    r = v1(gw, key, "POST", "/chat/completions", {"model": "gpt-test", "messages": PROMPT, "n": 64, "stream": True,
                                                 "fake_scenario": "usage_max"})
    check(r.status == 200, "stream n=64: %s %s" % (r.status, r.body))
    check(sse_events(r.body)[-1] == "[DONE]", "stream n=64 ends with [DONE]")
    u = used(t, qid)
    check(0 < u <= LIMIT_NANO, "stream n=64: used %d nano, limit %d" % (u, LIMIT_NANO))

    # best_of on completions: every candidate is generated and billed
    qid, key = fresh(t)
    r = v1(gw, key, "POST", "/completions", {"model": "gpt-test", "prompt": "hi", "n": 2, "best_of": 20,
                                            "max_tokens": 1000, "fake_scenario": "usage_max"})
    check(r.status == 200, "best_of=20: %s %s" % (r.status, r.body))
    u = used(t, qid)
    check(0 < u <= LIMIT_NANO, "best_of=20: used %d nano, limit %d" % (u, LIMIT_NANO))

    # both output limits: the upstream sees one field, the smaller value
    qid, key = fresh(t)
    r = v1(gw, key, "POST", "/chat/completions", {"model": "gpt-test", "messages": PROMPT,
                                                 "max_completion_tokens": 5, "max_tokens": 100000,
                                                 "fake_scenario": "usage_max"})
    check(r.status == 200, "both limits: %s %s" % (r.status, r.body))
    check(r.json["usage"]["completion_tokens"] == 5,
          "both limits: the upstream billed %s completion tokens, not 5" % r.json["usage"])
    u = used(t, qid)
    check(0 < u <= LIMIT_NANO, "both limits: used %d nano, limit %d" % (u, LIMIT_NANO))

    # out of bounds or the wrong type: refused before anything is held or sent
    qid, key = fresh(t)
    calls = len(fake.lines("REQ "))
    bad = [("/chat/completions", {"n": 129}, "n"), ("/chat/completions", {"n": "2"}, "n"),
           ("/chat/completions", {"n": 0}, "n"), ("/chat/completions", {"n": 1.5}, "n"),
           ("/completions", {"best_of": 21}, "best_of"), ("/completions", {"n": 3, "best_of": 2}, "best_of"),
           ("/chat/completions", {"prediction": "x"}, "prediction")]
    for path, extra, param in bad:
        body = {"model": "gpt-test", "fake_scenario": "usage_max"}
        body.update({"messages": PROMPT} if path == "/chat/completions" else {"prompt": "hi"})
        body.update(extra)
        r = v1(gw, key, "POST", path, body)
        check(r.status == 400 and r.json["error"]["param"] == param,
              "%s %s: want 400 naming %s, got %s %s" % (path, json.dumps(extra), param, r.status, r.body))
    check(len(fake.lines("REQ ")) == calls, "refused requests reached the upstream")
    check(used(t, qid) == 0, "refused requests were charged")


def anthropic_case(gw, fake, t):
    base = "http://127.0.0.1:%d" % fake.port
    prov = t.add_provider("anth", base, "sk-ant-test-0000", ptype="anthropic", timeout_s=5)
    m = t.add_model("claude-test", [(prov["id"], "claude-up")], input_price="1", output_price="2",
                    capabilities=["chat", "streaming"])
    grp = t.add_group("ga", [m["id"]])
    for stream in (False, True):
        q = t.add_quota(t.user_id, grp["id"], period="month", cost_limit=LIMIT)
        r = v1(gw, q["api_key"], "POST", "/chat/completions",
               {"model": "claude-test", "messages": PROMPT, "max_tokens": 100000, "stream": stream,
                "fake_scenario": "usage_max"})
        check(r.status == 200, "anthropic stream=%s: %s %s" % (stream, r.status, r.body))
        u = used(t, q["id"])
        check(0 < u <= LIMIT_NANO, "anthropic stream=%s: used %d nano, limit %d" % (stream, u, LIMIT_NANO))
        sent = [c for c in fake.calls("/v1/messages")][-1]
        check(int(sent["max_tokens"]) * 2000 < LIMIT_NANO,
              "anthropic: max_tokens %s reached the upstream" % sent["max_tokens"])


def estimate_case(gw, fake, t):
    # not trimmed: the upstream gets the client's 400 per choice, and the used
    # cost passes the limit by at most this one request's worst case
    qid, key = fresh(t)
    r = v1(gw, key, "POST", "/chat/completions", {"model": "gpt-test", "messages": PROMPT, "n": 2,
                                                 "max_tokens": 400, "fake_scenario": "usage_max"})
    check(r.status == 200, "estimate: %s %s" % (r.status, r.body))
    check(r.json["usage"]["completion_tokens"] == 800, "estimate trimmed the request: %s" % r.json["usage"])
    u = used(t, qid)
    held_worst = 800 * 2000 + 1000 * 100  # output + a generous prompt bound
    check(LIMIT_NANO < u <= LIMIT_NANO + held_worst, "estimate: used %d" % u)
    # the budget is gone: the next request is refused
    r = v1(gw, key, "POST", "/chat/completions", {"model": "gpt-test", "messages": PROMPT, "max_tokens": 1})
    check(r.status == 429 and r.json["error"]["code"] == "insufficient_quota",
          "estimate, budget used: %s %s" % (r.status, r.body))


def main():
    with gateway_with_fake(workers=2) as (gw, fake):
        t = Tenant(gw, fake)
        strict_cases(gw, fake, t)
        anthropic_case(gw, fake, t)
        verify(gw)
    with gateway_with_fake(workers=1, env={"TOKENAUDIT_RESERVE": "estimate"}) as (gw, fake):
        t = Tenant(gw, fake)
        estimate_case(gw, fake, t)
        verify(gw)
    print("ok")


if __name__ == "__main__":
    main()
