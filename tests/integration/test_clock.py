"""test_clock.py - quota periods, expiry and auto-renew, by moving the gateway's
clock (test_clock_offset_s, not reloadable: the server is restarted on the
same data directory with another TOKENAUDIT_TEST_CLOCK_OFFSET_S).

quota_timezone is Asia/Tokyo (UTC+9, no DST), so the day boundary the test
crosses is 15:00Z, not UTC midnight.

Phase A, gateway clock = 30 min before a Tokyo midnight M:
  Q1 (day, request_limit 2): 2 admitted, the 3rd refused 429 insufficient_quota
     with a Retry-After no later than M;
  Q2 (day, expires M-15min, no auto-renew) and Q3 (same, auto-renew): admitted.
Phase B, gateway clock = 30 min after M (restart):
  Q1 admitted again; its usage period starts at M, one request used;
  Q2 refused 403 quota_inactive (and stays refused);
  Q3 admitted, its expiry moved by one whole day (M-15min+1d);
  the books agree (usage == audit records per period) and ledger verify exits 0.
"""

import calendar
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proxyutil import Tenant, audit_records, chat_body, check, gateway_with_fake, nano, v1, verify  # noqa: E402

TZ_NAME = "Asia/Tokyo"
TZ_OFF = 9 * 3600


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def parse_rfc3339(s):
    return calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ"))


def chat(gw, key):
    return v1(gw, key, "POST", "/chat/completions", chat_body(fake_usage="10,5,0"))


def main():
    now = int(time.time())
    midnight = ((now + TZ_OFF) // 86400 + 1) * 86400 - TZ_OFF   # the next Tokyo midnight, UTC epoch
    # far enough ahead that the real seconds this test takes cannot cross it
    midnight += 2 * 86400
    off_a = midnight - 1800 - now
    off_b = off_a + 3600
    expiry = midnight - 900

    with gateway_with_fake(workers=2, env={"TOKENAUDIT_TEST_CLOCK_OFFSET_S": str(off_a),
                                           "TOKENAUDIT_QUOTA_TIMEZONE": TZ_NAME}) as (gw, fake):
        t = Tenant(gw, fake, quota={"period": "day", "request_limit": 2, "auto_renew": False})
        q2, key2 = t.new_quota({"period": "day", "expires_at": rfc3339(expiry), "auto_renew": False})
        q3, key3 = t.new_quota({"period": "day", "expires_at": rfc3339(expiry), "auto_renew": True})

        # ---- phase A: before midnight -------------------------------------------
        u = t.usage()
        check(u["period_start"] == rfc3339(midnight - 86400) and u["period_end"] == rfc3339(midnight),
              "the day period in Tokyo time: %r" % u)
        for i in range(2):
            r = chat(gw, t.key)
            check(r.status == 200, "request %d: %s %s" % (i + 1, r.status, r.body))
        r = chat(gw, t.key)
        check(r.status == 429 and r.json["error"]["code"] == "insufficient_quota",
              "3rd request of a 2-request day: %s %s" % (r.status, r.body))
        ra = int(r.headers.get("retry-after", "0"))
        check(1 <= ra <= 1800, "Retry-After points at the end of the day (<= 1800 s): %r" % ra)
        u = t.settled()
        check(u["requests_used"] == 2, "2 used: %r" % u)
        for k in (key2, key3):
            r = chat(gw, k)
            check(r.status == 200, "before its expiry: %s %s" % (r.status, r.body))
        gw.stop()

        # ---- phase B: the clock moves one hour, past midnight -----------------
        gw.env["TOKENAUDIT_TEST_CLOCK_OFFSET_S"] = str(off_b)
        gw.start()
        t.relogin()
        r = chat(gw, t.key)
        check(r.status == 200, "a new day admits again: %s %s" % (r.status, r.body))
        u = t.settled()
        check(u["period_start"] == rfc3339(midnight) and u["period_end"] == rfc3339(midnight + 86400),
              "the new period: %r" % u)
        check(u["requests_used"] == 1 and nano(u["cost_used"]) > 0, "one request in the new day: %r" % u)
        r = v1(gw, t.key, "GET", "/usage")
        check(r.status == 200 and r.json["requests_used"] == 1 and r.json["period_start"] == rfc3339(midnight),
              "/v1/usage after the rollover: %s" % r.body)

        for _ in range(2):
            r = chat(gw, key2)
            check(r.status == 403 and r.json["error"]["code"] == "quota_inactive",
                  "expired quota: %s %s" % (r.status, r.body))

        r = chat(gw, key3)
        check(r.status == 200, "auto-renewed quota admitted: %s %s" % (r.status, r.body))
        q3now = t.quota_get(q3["id"])
        check(q3now["expires_at"] == rfc3339(expiry + 86400),
              "renewed by one day: %s (was %s)" % (q3now["expires_at"], rfc3339(expiry)))
        check(parse_rfc3339(q3now["expires_at"]) > midnight + 1800, "renewed into the future")
        r = chat(gw, key3)
        check(r.status == 200, "still admitted: %s %s" % (r.status, r.body))

        # the books: per quota, this period's usage is the sum of this period's records
        recs = audit_records(gw, applied=10)
        for qid in (t.quota_id, q3["id"]):
            u = t.settled(qid)
            cur = [x for x in recs if x["quota_id"] == qid and x["period_start"] == rfc3339(midnight)]
            check(nano(u["cost_used"]) == sum(nano(x["cost"]) for x in cur),
                  "quota %d: used %s vs records %r" % (qid, u["cost_used"], cur))
        refused = [x for x in recs if x["quota_id"] == q2["id"] and x["status"] == 403]
        check(len(refused) == 2, "the expired quota's refusals are recorded: %r" % refused)
        verify(gw)
    print("ok")


if __name__ == "__main__":
    main()
