"""test_audit_api.py - the audit endpoints of the admin API end to end: a real
tokenauditd (two workers, real billing) in front of the real fake upstream
(tests/tools/fake_upstream_main.c). A batch of /v1 requests on two quotas and
two users (successes, streams with usage, embeddings, refusals, upstream
errors) goes through the proxy; billing writes one audit record per request.
Then:

  * /api/admin/requests/ lists exactly those records, newest first, in API.md's
    shape, and its pages put together give the same list;
  * the filters (quota, user, model, status, since/until) agree with filtering
    that list here;
  * every statistics answer (global and per quota, group_by day, model and
    user, with day-aligned since/until) agrees with a direct sum over the
    records: totals and each series entry.

Nothing is timed: the only wait is for billing to have written the records
(gw.wait_for bounds a hang, it asserts nothing about speed).
"""

import datetime
import os
import sys
from decimal import Decimal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proxyutil  # noqa: E402
from proxyutil import check, gateway_with_fake  # noqa: E402

RECORD_FIELDS = ["id", "created_at", "user_id", "quota_id", "key_prefix", "endpoint", "model",
                 "served_model", "provider_id", "stream", "status", "error_type", "prompt_tokens",
                 "completion_tokens", "cached_tokens", "cache_write_tokens", "usage_estimated", "cost",
                 "latency_ms", "ttft_ms", "client_ip"]
COUNTERS = ["requests", "prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens",
            "cost", "errors"]


class Admin(proxyutil.Admin):
    def records(self, query="", base="/api/admin/requests/"):
        """Every record of a listing, following `next` (page_size 500)."""
        sep = "&" if query else ""
        page = self.get("%s?%s%spage_size=500" % (base, query, sep))
        out = list(page["results"])
        while page["next"]:
            page = self.get(page["next"][len(self.gw.url):])
            out += page["results"]
        check(len(out) == page["count"], "count %s, %d records" % (page["count"], len(out)))
        return out


def setup(adm, fake):
    prov = adm.add_provider("fake", fake.url, "sk-upstream-secret-7777", timeout_s=5)
    prices = {"input_price": "1.5", "output_price": "2", "cache_read_price": "0.5"}
    chat = adm.add_model("chat-a", [(prov["id"], "up-a")], capabilities=["chat", "streaming"], **prices)
    chat_b = adm.add_model("chat-b", [(prov["id"], "up-b")], **dict(prices, output_price="3",
                                                                   capabilities=["chat", "streaming"]))
    emb = adm.add_model("emb", [(prov["id"], "up-emb")], capabilities=["embeddings"], **prices)
    grp = adm.add_group("g", [chat["id"], chat_b["id"], emb["id"]])
    u1 = adm.get("/api/admin/users/")["results"][0]["id"]
    u2 = adm.post("/api/admin/users/", {"email": "u2@example.com", "password": "password-u2"})["id"]
    quotas = []
    for uid in (u1, u2, u2):
        q = adm.add_quota(uid, grp["id"], period="month", cost_limit="1000")
        quotas.append((q["id"], uid, q["api_key"]))
    return quotas


def run_batch(gw, quotas):
    """The /v1 requests; returns how many (each one, refusals included, is a record)."""
    msgs = [{"role": "user", "content": "Say hello"}]
    n = 0

    def v1(key, path, body, want):
        nonlocal n
        r = gw.http("POST", "/v1" + path, body, token=key, timeout=20)
        check(r.status == want, "%s %s: %s %s" % (path, body, r.status, r.body))
        n += 1

    for i, (qid, uid, key) in enumerate(quotas):
        for j in range(3 + i):
            v1(key, "/chat/completions", {"model": "chat-a", "messages": msgs,
                                          "fake_usage": "%d,%d,%d" % (10 + j, 3 + i, j)}, 200)
        v1(key, "/chat/completions", {"model": "chat-b", "messages": msgs, "stream": True,
                                      "stream_options": {"include_usage": True}, "fake_chunks": 3,
                                      "fake_usage": "%d,3,1" % (7 + i)}, 200)
        v1(key, "/chat/completions", {"model": "chat-b", "messages": msgs, "stream": True,
                                      "fake_chunks": 2 + i}, 200)
        v1(key, "/embeddings", {"model": "emb", "input": ["a", "b", "c"]}, 200)
        v1(key, "/chat/completions", {"model": "nope", "messages": msgs}, 404)
        v1(key, "/chat/completions", {"model": "chat-a"}, 400)
        v1(key, "/chat/completions", {"model": "chat-a", "messages": msgs, "fake_scenario": "rate_limit"}, 429)
        if i != 1:
            v1(key, "/chat/completions", {"model": "chat-b", "messages": msgs,
                                          "fake_scenario": "status:500"}, 502)
    return n


def dec(s):
    return Decimal(s)


def sums(recs, keyf=None):
    """Totals (keyf None) or {key: counters} over records, as the statistics count."""
    def empty():
        return {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0,
                "cache_write_tokens": 0, "cost": Decimal(0), "errors": 0}

    def add(s, r):
        s["requests"] += 1
        for k in ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens"):
            s[k] += r[k]
        s["cost"] += dec(r["cost"])
        s["errors"] += 1 if r["status"] >= 400 else 0

    if keyf is None:
        s = empty()
        for r in recs:
            add(s, r)
        return s
    out = {}
    for r in recs:
        add(out.setdefault(keyf(r), empty()), r)
    return out


def same(stat, want, what):
    got = {k: (dec(stat[k]) if k == "cost" else stat[k]) for k in COUNTERS}
    check(got == want, "%s: statistics %r, records %r" % (what, got, want))


def agree(adm, stats_path, recs, keyf, what):
    st = adm.get(stats_path)
    same(st["totals"], sums(recs), what + " totals")
    groups = sums(recs, keyf)
    keys = [e["key"] for e in st["series"]]
    check(sorted(map(str, keys)) == sorted(map(str, groups)),
          "%s: series keys %r, record groups %r" % (what, keys, list(groups)))
    for e in st["series"]:
        same(e, groups[e["key"]], "%s key %r" % (what, e["key"]))


def day_after(d):
    return (datetime.date.fromisoformat(d) + datetime.timedelta(days=1)).isoformat()


def run(gw, fake):
    adm = Admin(gw)
    quotas = setup(adm, fake)
    expected = run_batch(gw, quotas)

    # billing writes the records behind the answers; wait until all are there
    gw.wait_for(lambda: adm.get("/api/admin/requests/?page_size=1")["count"] >= expected, 60,
                "%d audit records" % expected)
    recs = adm.records()
    check(len(recs) == expected, "%d records for %d requests" % (len(recs), expected))

    # --- the records --------------------------------------------------------------
    for r in recs:
        check(list(r) == RECORD_FIELDS, "record fields %r" % list(r))
        check(len(r["id"]) == 32 and int(r["id"], 16) >= 0, r)
        check(r["created_at"].endswith("Z") and "T" in r["created_at"], r)
        dec(r["cost"])
    ids = [r["id"] for r in recs]
    check(len(set(ids)) == len(ids), "one record per request")
    check([r["created_at"] for r in recs] == sorted((r["created_at"] for r in recs), reverse=True),
          "newest first")
    ok = [r for r in recs if r["status"] == 200 and r["model"] == "chat-a"]
    check(ok and all(r["served_model"] == "up-a" and r["endpoint"] == "chat.completions" and
                     dec(r["cost"]) > 0 and r["provider_id"] for r in ok), ok[:2])
    streams = [r for r in recs if r["stream"]]
    check(len(streams) == 2 * len(quotas) and all(r["model"] == "chat-b" for r in streams), streams)
    check(all(r["endpoint"] == "embeddings" for r in recs if r["model"] == "emb"), "embeddings")
    nf = [r for r in recs if r["model"] == "nope"]
    check(len(nf) == len(quotas) and all(r["status"] == 404 and r["error_type"] == "not_found_error" and
                                         r["cost"] == "0" for r in nf), nf)
    for qid, uid, key in quotas:
        mine = [r for r in recs if r["quota_id"] == qid]
        check(all(r["user_id"] == uid and key.startswith(r["key_prefix"]) for r in mine), mine[:1])

    # pages put together are the whole list
    paged, page = [], adm.get("/api/admin/requests/?page_size=7")
    while True:
        paged += page["results"]
        check(page["count"] == expected, page["count"])
        if not page["next"]:
            break
        check(page["next"].startswith(gw.url + "/api/admin/requests/?page_size=7&page="), page["next"])
        page = adm.get(page["next"][len(gw.url):])
    check([r["id"] for r in paged] == ids, "pages in order")

    # --- filters agree with filtering the list here ---------------------------------
    first_day = recs[-1]["created_at"][:10]
    last_day = recs[0]["created_at"][:10]
    cases = [
        ("model=chat-b", lambda r: r["model"] == "chat-b" or r["served_model"] == "chat-b"),
        ("model=up-a", lambda r: r["model"] == "up-a" or r["served_model"] == "up-a"),
        ("status=429", lambda r: r["status"] == 429),
        ("status=200&model=emb", lambda r: r["status"] == 200 and r["model"] == "emb"),
        ("user_id=%d" % quotas[1][1], lambda r: r["user_id"] == quotas[1][1]),
        ("quota_id=%d&status=404" % quotas[2][0], lambda r: r["quota_id"] == quotas[2][0] and r["status"] == 404),
        ("since=%s" % recs[5]["created_at"], lambda r: r["created_at"] >= recs[5]["created_at"]),
        ("until=%s" % recs[5]["created_at"], lambda r: r["created_at"] < recs[5]["created_at"]),
        ("since=%s&until=%s" % (first_day, day_after(last_day)), lambda r: True),
    ]
    for q, pred in cases:
        got = [r["id"] for r in adm.records(q)]
        want = [r["id"] for r in recs if pred(r)]
        check(got == want, "?%s: %d records, want %d" % (q, len(got), len(want)))
        check(want or q.startswith("until"), "?%s selects something" % q)
    for qid, uid, key in quotas:
        got = [r["id"] for r in adm.records(base="/api/admin/quotas/%d/requests/" % qid)]
        check(got == [r["id"] for r in recs if r["quota_id"] == qid], "quota %d requests" % qid)
        got = [r["id"] for r in adm.records("model=chat-a&status=200",
                                            base="/api/admin/quotas/%d/requests/" % qid)]
        check(got == [r["id"] for r in recs if r["quota_id"] == qid and r["model"] == "chat-a" and
                      r["status"] == 200], "quota %d requests, filtered" % qid)

    # --- statistics agree with a direct sum over the records --------------------------
    models = {m["name"] for m in adm.get("/api/admin/models/")["results"]}
    keyfs = {
        "day": lambda r: r["created_at"][:10],
        "model": lambda r: r["model"] if r["model"] in models else None,
        "user": lambda r: r["user_id"],
    }
    ranges = ["", "since=%s&" % first_day, "until=%s&" % day_after(last_day),
              "since=%s&until=%s&" % (first_day, day_after(last_day))]
    for rng in ranges:
        for g in ("day", "model", "user"):
            agree(adm, "/api/admin/statistics/?%sgroup_by=%s" % (rng, g), recs, keyfs[g],
                  "statistics %s%s" % (rng, g))
            uid = quotas[1][1]
            agree(adm, "/api/admin/statistics/?%suser_id=%d&group_by=%s" % (rng, uid, g),
                  [r for r in recs if r["user_id"] == uid], keyfs[g], "user %d %s" % (uid, g))
        for qid, uid, key in quotas:
            mine = [r for r in recs if r["quota_id"] == qid]
            for g in ("day", "model"):
                agree(adm, "/api/admin/quotas/%d/statistics/?%sgroup_by=%s" % (qid, rng, g), mine,
                      keyfs[g], "quota %d %s" % (qid, g))
            agree(adm, "/api/admin/statistics/?%squota_id=%d&group_by=model" % (rng, qid), mine,
                  keyfs["model"], "global quota_id=%d" % qid)
    # default grouping is by day; outside the records' days nothing is counted
    check(adm.get("/api/admin/statistics/")["series"] ==
          adm.get("/api/admin/statistics/?group_by=day")["series"], "default group_by")
    empty = adm.get("/api/admin/statistics/?since=%s" % day_after(day_after(last_day)))
    check(empty["totals"]["requests"] == 0 and empty["series"] == [], empty)

    # --- errors ---------------------------------------------------------------------
    for path, param in [("/api/admin/requests/?since=soon", "since"),
                        ("/api/admin/requests/?status=2xx", "status"),
                        ("/api/admin/requests/?user_id=0", "user_id"),
                        ("/api/admin/requests/?page_size=501", "page_size"),
                        ("/api/admin/statistics/?group_by=hour", "group_by"),
                        ("/api/admin/quotas/%d/statistics/?group_by=user" % quotas[0][0], "group_by"),
                        ("/api/admin/quotas/%d/requests/?until=x" % quotas[0][0], "until")]:
        e = adm.get(path, expect=400)["error"]
        check(e["param"] == param and param in e["fields"], "%s: %r" % (path, e))
    adm.get("/api/admin/quotas/999/requests/", expect=404)
    adm.get("/api/admin/quotas/999/statistics/", expect=404)
    r = gw.http("GET", "/api/admin/statistics/", token=quotas[0][2])
    check(r.status in (401, 403), "an API key is no superadmin: %s" % r.status)


def main():
    with gateway_with_fake(workers=2) as (gw, fake):
        run(gw, fake)
    print("ok")


if __name__ == "__main__":
    main()
