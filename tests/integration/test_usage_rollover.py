"""test_usage_rollover.py - /v1/usage is the quota's usage the admin API shows
(ta_quota_usage), also across a period rollover with a request in flight.

The gateway's clock (test_clock_offset_s) is set a few seconds before a UTC
midnight M. One request is settled in the old day; a second one is held and
stays in flight (the provider delays its first byte by 20 s more than the
gateway's clock needs to reach M, which is what the comparison waits for).
Once the real seconds
carry the gateway past M, before any write rolled the balance over:
  * /v1/usage and /api/admin/quotas/{id}/ agree on every usage field they
    both show (the new period, nothing used in it, what is held, in flight);
  * /v1/usage's tokens_held is what the in-flight request's hold holds (the
    holds in the ledger), not 0.
Then the slow answer arrives, the books settle and ledger verify passes. If the gateway took too long to start for the hold to land
before M, the attempt starts again with more seconds before M.
"""

import os
import socket
import sys
import time
import json

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from proxyutil import Tenant, chat_body, check, gateway_with_fake, holds, v1, verify  # noqa: E402

FIELDS = ("period_start", "period_end", "cost_used", "tokens_used", "requests_used", "cost_held", "in_flight")


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def attempt(margin):
    now = int(time.time())
    midnight = (now // 86400 + 2) * 86400  # a UTC midnight the real clock does not reach meanwhile
    env = {"TOKENAUDIT_TEST_CLOCK_OFFSET_S": str(midnight - margin - now)}
    with gateway_with_fake(workers=1, env=env) as (gw, fake):
        t = Tenant(gw, fake, quota={"period": "day", "cost_limit": "100", "token_limit": 1000000}, timeout_s=600)
        r = v1(gw, t.key, "POST", "/chat/completions", chat_body(fake_usage="10,5,0"))
        check(r.status == 200, "a request of the old day: %s %s" % (r.status, r.body))
        t.settled()

        s = socket.create_connection((gw.host, gw.port), timeout=margin + 60)
        data = json.dumps(chat_body(fake_scenario="slow_first_byte:%d" % ((margin + 20) * 1000))).encode()
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + t.key.encode() +
                  b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(data)).encode() +
                  b"\r\n\r\n" + data)
        try:
            def in_flight():
                u = v1(gw, t.key, "GET", "/usage").json
                return u if u["in_flight"] == 1 else None
            before = harness.wait_for(in_flight, 30, "the slow request held")
            if before["period_start"] != rfc3339(midnight - 86400):
                return False  # the hold landed after M: nothing to show with this margin
            check(before["tokens_held"] > 0, "the in-flight request holds tokens: %r" % before)

            def rolled():
                u = v1(gw, t.key, "GET", "/usage").json
                return u if u["period_start"] == rfc3339(midnight) else None
            harness.wait_for(rolled, margin + 60, "the gateway's clock past midnight")
            u, a = v1(gw, t.key, "GET", "/usage").json, t.usage()
            for f in FIELDS:
                check(u[f] == a[f], "%s: /v1/usage %r, admin %r\n%r\n%r" % (f, u[f], a[f], u, a))
            check(u["requests_used"] == 0 and u["in_flight"] == 1, "a new day, one request in flight: %r" % u)
            held = sum(h["tokens"] for h in holds(gw))
            check(held > 0 and u["tokens_held"] == held,
                  "tokens_held after the rollover: %r, the holds hold %d" % (u["tokens_held"], held))
            got = b""
            while b"\r\n\r\n" not in got:
                c = s.recv(65536)
                check(c, "the slow request's answer: %r" % got)
                got += c
            check(got.startswith(b"HTTP/1.1 200"), "the slow request's answer: %r" % got[:200])
        finally:
            s.close()
        t.settled()
        verify(gw)
    return True


def main():
    for margin in (8, 30, 90):
        if attempt(margin):
            print("ok")
            return
        print("the hold landed after midnight with %d s to go; again with more" % margin)
    raise AssertionError("no attempt held the request before midnight")


if __name__ == "__main__":
    main()
