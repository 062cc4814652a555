"""test_audit_api.py - the audit endpoints of the admin API end to end: a real
tokenauditd (two workers, real billing) in front of the real fake upstream
(tests/tools/fake_upstream_main.c). A batch of /v1 requests on three quotas of
two users in two groups, over two providers (successes, streams with usage,
embeddings, refusals, upstream errors) goes through the proxy three times,
the gateway's clock moved between them (test_clock_offset_s, restarted on the
same data directory): at 15:20Z (23:20 in Shanghai), 16:20Z (00:20 the next
day in Shanghai) and 00:20Z the next UTC day, so hours and days differ
between UTC and Asia/Shanghai. Billing writes one audit record per request.
Then:

  * /api/admin/requests/ lists exactly those records, newest first, in API.md's
    shape, and its pages put together give the same list;
  * the filters (quota, user, model, status, since/until) agree with filtering
    that list here;
  * every statistics answer (global and per quota, group_by day, hour, model,
    provider, group and user, in UTC and in Asia/Shanghai, with hour-aligned
    since/until) agrees with a direct sum over the records: totals and each
    series entry;
  * two-level statistics (group_by=day,model, hour,provider, day,user, ...: an
    entry per day or hour and model, provider, group or user) agree with the
    direct sum of each pair, in ascending order, in UTC and Asia/Shanghai, on
    the global, user, quota and self-service routes; a bad pair is 400;
  * a normal user's own statistics (/api/statistics/, /api/quotas/{id}/statistics/,
    with their JWT or a quota's API key) are the sums over their own records
    only; another user's quota is 404;
  * `ledger verify` agrees at the end.

Nothing is timed: the only wait is for billing to have written the records
(gw.wait_for bounds a hang, it asserts nothing about speed).
"""

import datetime
import os
import sys
import time
from decimal import Decimal
from zoneinfo import ZoneInfo

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


U2_EMAIL, U2_PASSWORD = "u2@example.com", "password-u2"
SHANGHAI = ZoneInfo("Asia/Shanghai")


def setup(adm, fake):
    """Providers fake (chat-a, emb) and fake-b (chat-b, the same upstream);
    quotas: u1's in group g, u2's first in g2, u2's second in g. Returns the
    quotas [(id, user id, key)] and {quota id: group name}."""
    prov = adm.add_provider("fake", fake.url, "sk-upstream-secret-7777", timeout_s=5)
    prov_b = adm.add_provider("fake-b", fake.url, "sk-upstream-secret-8888", timeout_s=5)
    prices = {"input_price": "1.5", "output_price": "2", "cache_read_price": "0.5"}
    chat = adm.add_model("chat-a", [(prov["id"], "up-a")], capabilities=["chat", "streaming"], **prices)
    chat_b = adm.add_model("chat-b", [(prov_b["id"], "up-b")], **dict(prices, output_price="3",
                                                                     capabilities=["chat", "streaming"]))
    emb = adm.add_model("emb", [(prov["id"], "up-emb")], capabilities=["embeddings"], **prices)
    grp = adm.add_group("g", [chat["id"], chat_b["id"], emb["id"]])
    grp2 = adm.add_group("g2", [chat["id"], chat_b["id"], emb["id"]])
    u1 = adm.get("/api/admin/users/")["results"][0]["id"]
    u2 = adm.post("/api/admin/users/", {"email": U2_EMAIL, "password": U2_PASSWORD})["id"]
    quotas, groups = [], {}
    for uid, g in ((u1, grp), (u2, grp2), (u2, grp)):
        q = adm.add_quota(uid, g["id"], period="month", cost_limit="1000")
        quotas.append((q["id"], uid, q["api_key"]))
        groups[q["id"]] = g["name"]
    return quotas, groups


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
    if "group_by=user" in stats_path:
        # a ranking: the 100 costliest users (all of them here), costliest first, ties by id
        check(st.get("top") == {"limit": 100, "of": len(groups)}, "%s: top %r" % (what, st.get("top")))
        ranks = [(-dec(e["cost"]), e["key"]) for e in st["series"]]
        check(ranks == sorted(ranks), "%s: costliest first: %r" % (what, ranks))
    else:
        check("top" not in st, "%s: not ranked unless asked" % what)


SECOND = {"model": "model_id", "provider": "provider_id", "group": "group_id", "user": "user_id"}


def agree2(adm, stats_path, recs, keyf, keyf2, second, what, get=None):
    """A two-level answer (group_by=<day|hour>,<second>) against the direct
    sums of each (bucket, second) pair of recs: keyf2 gives the second
    level's name (its id for a user), as the entry's "name" ("user_id")."""
    st = (get or adm.get)(stats_path)
    same(st["totals"], sums(recs), what + " totals")
    want = sums(recs, lambda r: (keyf(r), keyf2(r)))
    first = "day" if "group_by=day," in stats_path else "hour"
    got = {}
    for e in st["series"]:
        check(e["key"] == e[first] and SECOND[second] in e and "name" in e, "%s entry %r" % (what, e))
        pair = (e["key"], e["user_id"] if second == "user" else e["name"])
        check(pair not in got, "%s: %r twice" % (what, pair))
        got[pair] = e
    check(sorted(map(str, got)) == sorted(map(str, want)),
          "%s: pairs %r, record pairs %r" % (what, list(got), list(want)))
    for pair, e in got.items():
        same(e, want[pair], "%s %r" % (what, pair))
    if second == "user":
        # ranked: by bucket, then the user's cost over the whole range (costliest first), then id
        total = {}
        for (_, uid), c in want.items():
            total[uid] = total.get(uid, Decimal(0)) + c["cost"]
        check(st.get("top") == {"limit": 100, "of": len(total)}, "%s: top %r" % (what, st.get("top")))
        order = [(e[first], -total[e["user_id"]], e["user_id"]) for e in st["series"]]
        check(order == sorted(order), "%s: by bucket, then the costliest user: %r" % (what, order))
        return st
    order = [(e[first], e[SECOND[second]]) for e in st["series"]]
    check(order == sorted(order), "%s: ascending by bucket, then id: %r" % (what, order))
    return st


def day_after(d):
    return (datetime.date.fromisoformat(d) + datetime.timedelta(days=1)).isoformat()


def when(r):
    return datetime.datetime.fromisoformat(r["created_at"].replace("Z", "+00:00"))


def hour_key(r, tz):
    return when(r).astimezone(tz).replace(minute=0, second=0, microsecond=0).isoformat()


def day_key(r, tz):
    return when(r).astimezone(tz).date().isoformat()


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def phases():
    """The gateway clock of each batch: 15:20Z, 16:20Z and 00:20Z the next
    day, two days ahead (the seconds the test takes cannot cross an hour)."""
    base = (int(time.time()) // 86400 + 2) * 86400 + 15 * 3600 + 20 * 60
    return [base, base + 3600, base + 9 * 3600]


def run(gw, fake, times):
    adm = Admin(gw)
    quotas, groups = setup(adm, fake)
    expected = 0
    for i, t in enumerate(times):
        if i > 0:  # the next batch, an hour or more later by the gateway's clock
            gw.stop()
            gw.env["TOKENAUDIT_TEST_CLOCK_OFFSET_S"] = str(t - int(time.time()))
            gw.start()
            adm.relogin()
        expected += run_batch(gw, quotas)
        # billing writes the records behind the answers; wait until all are there
        gw.wait_for(lambda: adm.get("/api/admin/requests/?page_size=1")["count"] >= expected, 60,
                    "%d audit records" % expected)
    recs = adm.records()
    hours = sorted({r["created_at"][:13] for r in recs})
    check(len(hours) == 3, "records in three hours: %r" % hours)
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
    check(len(streams) == 2 * len(quotas) * len(times) and all(r["model"] == "chat-b" for r in streams),
          streams)
    check(all(r["endpoint"] == "embeddings" for r in recs if r["model"] == "emb"), "embeddings")
    nf = [r for r in recs if r["model"] == "nope"]
    check(len(nf) == len(quotas) * len(times) and all(r["status"] == 404 and r["error_type"] == "not_found_error" and
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
    providers = {p["id"]: p["name"] for p in adm.get("/api/admin/providers/")["results"]}
    keyfs = {
        "day": lambda r: r["created_at"][:10],
        "hour": lambda r: hour_key(r, datetime.timezone.utc),
        "model": lambda r: r["model"] if r["model"] in models else None,
        "provider": lambda r: providers.get(r["provider_id"]),
        "group": lambda r: groups[r["quota_id"]],
        "user": lambda r: r["user_id"],
    }
    sh = {"day": lambda r: day_key(r, SHANGHAI), "hour": lambda r: hour_key(r, SHANGHAI)}
    check(len({day_key(r, SHANGHAI) for r in recs}) == 2 and len({r["created_at"][:10] for r in recs}) == 2
          and len({keyfs["day"](r) for r in recs if day_key(r, SHANGHAI) == day_key(recs[0], SHANGHAI)}) == 2,
          "the batches cross a Shanghai midnight and a UTC midnight apart")
    check(len({keyfs["provider"](r) for r in recs}) == 3, "two providers and none")
    h2 = rfc3339(times[1] // 3600 * 3600)  # the second batch's hour
    ranges = [("", lambda r: True),
              ("since=%s&" % first_day, lambda r: True),
              ("until=%s&" % day_after(last_day), lambda r: True),
              ("since=%s&" % h2, lambda r: r["created_at"] >= h2),
              ("until=%s&" % h2, lambda r: r["created_at"] < h2),
              ("since=%s&until=%s&" % (h2, rfc3339(times[1] // 3600 * 3600 + 3600)),
               lambda r: r["created_at"][:13] == h2[:13])]
    for rng, inr in ranges:
        sel = [r for r in recs if inr(r)]
        check(sel, "range %r selects records" % rng)
        for g in ("day", "hour", "model", "provider", "group", "user"):
            agree(adm, "/api/admin/statistics/?%sgroup_by=%s" % (rng, g), sel, keyfs[g],
                  "statistics %s%s" % (rng, g))
            uid = quotas[1][1]
            agree(adm, "/api/admin/statistics/?%suser_id=%d&group_by=%s" % (rng, uid, g),
                  [r for r in sel if r["user_id"] == uid], keyfs[g], "user %d %s" % (uid, g))
        for g in ("day", "hour"):
            agree(adm, "/api/admin/statistics/?%sgroup_by=%s&tz=Asia/Shanghai" % (rng, g), sel, sh[g],
                  "statistics %s%s in Shanghai" % (rng, g))
        for qid, uid, key in quotas:
            mine = [r for r in sel if r["quota_id"] == qid]
            for g in ("day", "hour", "model", "provider", "group"):
                agree(adm, "/api/admin/quotas/%d/statistics/?%sgroup_by=%s" % (qid, rng, g), mine,
                      keyfs[g], "quota %d %s" % (qid, g))
            agree(adm, "/api/admin/quotas/%d/statistics/?%sgroup_by=hour&tz=Asia/Shanghai" % (qid, rng),
                  mine, sh["hour"], "quota %d hour in Shanghai" % qid)
            agree(adm, "/api/admin/statistics/?%squota_id=%d&group_by=model" % (rng, qid), mine,
                  keyfs["model"], "global quota_id=%d" % qid)
    # --- two levels: a day or hour, then a model, provider, group or user ----------------
    models_by_id = {m["id"]: m["name"] for m in adm.get("/api/admin/models/")["results"]}
    for rng, inr in ranges:
        sel = [r for r in recs if inr(r)]
        for first in ("day", "hour"):
            for second in ("model", "provider", "group", "user"):
                agree2(adm, "/api/admin/statistics/?%sgroup_by=%s,%s" % (rng, first, second), sel, keyfs[first],
                       keyfs[second], second, "statistics %s%s,%s" % (rng, first, second))
            agree2(adm, "/api/admin/statistics/?%sgroup_by=%s,model&tz=Asia/Shanghai" % (rng, first), sel,
                   sh[first], keyfs["model"], "model", "statistics %s%s,model in Shanghai" % (rng, first))
        uid = quotas[1][1]
        agree2(adm, "/api/admin/statistics/?%suser_id=%d&group_by=day,model" % (rng, uid),
               [r for r in sel if r["user_id"] == uid], keyfs["day"], keyfs["model"], "model",
               "user %d day,model" % uid)
        for qid, uid, key in quotas:
            mine = [r for r in sel if r["quota_id"] == qid]
            agree2(adm, "/api/admin/quotas/%d/statistics/?%sgroup_by=day,model&tz=Asia/Shanghai" % (qid, rng), mine,
                   sh["day"], keyfs["model"], "model", "quota %d day,model in Shanghai" % qid)
            agree2(adm, "/api/admin/quotas/%d/statistics/?%sgroup_by=hour,provider" % (qid, rng), mine,
                   keyfs["hour"], keyfs["provider"], "provider", "quota %d hour,provider" % qid)
    # the entries of a day add up to the day's entry of group_by=day; names are the models'
    by_day = {e["key"]: e for e in adm.get("/api/admin/statistics/?group_by=day")["series"]}
    two = adm.get("/api/admin/statistics/?group_by=day,model")["series"]
    check(len({e["model_id"] for e in two}) >= 3 and len(two) > len(by_day), "several models a day: %r" % two)
    for d, e in by_day.items():
        part = [x for x in two if x["key"] == d]
        check(sum(dec(x["cost"]) for x in part) == dec(e["cost"]) and
              sum(x["requests"] for x in part) == e["requests"], "day %s: %r against %r" % (d, part, e))
    for e in two:
        check(e["name"] == models_by_id.get(e["model_id"]), "name of model %r: %r" % (e["model_id"], e))
    # default grouping is by day; outside the records' hours nothing is counted
    check(adm.get("/api/admin/statistics/")["series"] ==
          adm.get("/api/admin/statistics/?group_by=day")["series"], "default group_by")
    check(adm.get("/api/admin/statistics/?group_by=hour")["series"] ==
          adm.get("/api/admin/statistics/?group_by=hour&tz=UTC")["series"], "default tz")
    empty = adm.get("/api/admin/statistics/?since=%s" % day_after(day_after(last_day)))
    check(empty["totals"]["requests"] == 0 and empty["series"] == [], empty)
    # the named series carry id and name
    for e in adm.get("/api/admin/statistics/?group_by=provider")["series"]:
        check(e["name"] == e["key"] and (e["provider_id"] in providers) == (e["key"] is not None), e)
    for e in adm.get("/api/admin/statistics/?group_by=group")["series"]:
        check(e["name"] == e["key"] in ("g", "g2") and e["group_id"] > 0, e)
    for e in adm.get("/api/admin/statistics/?group_by=hour&tz=Asia/Shanghai")["series"]:
        check(e["hour"] == e["key"] and e["key"].endswith(":00:00+08:00"), e)

    # --- a normal user's own statistics ------------------------------------------------
    u2 = quotas[1][1]
    own = [r for r in recs if r["user_id"] == u2]
    u2_quotas = [q for q in quotas if q[1] == u2]
    other_quota = quotas[0][0]
    check(quotas[0][1] != u2, "quota 0 is another user's")
    jwt = gw.login(U2_EMAIL, U2_PASSWORD)
    for cred in (jwt, u2_quotas[0][2]):  # the user's JWT, and the API key of one of their quotas
        def mine(path, expect=200):
            r = gw.http("GET", path, token=cred)
            check(r.status == expect, "GET %s as user %d: %s %s" % (path, u2, r.status, r.body))
            return r.json
        for rng, inr in ranges[:4]:
            sel = [r for r in own if inr(r)]
            for g in ("day", "hour", "model", "provider", "group"):
                st = mine("/api/statistics/?%sgroup_by=%s" % (rng, g))
                check(st == adm.get("/api/admin/statistics/?%suser_id=%d&group_by=%s" % (rng, u2, g)),
                      "own statistics are the admin's for that user (%s%s)" % (rng, g))
                same(st["totals"], sums(sel), "own %s%s totals" % (rng, g))
                want = sums(sel, keyfs[g])
                check(sorted(map(str, (e["key"] for e in st["series"]))) == sorted(map(str, want)),
                      "own %s%s keys" % (rng, g))
                for e in st["series"]:
                    same(e, want[e["key"]], "own %s%s key %r" % (rng, g, e["key"]))
            st = mine("/api/statistics/?%sgroup_by=day&tz=Asia/Shanghai" % rng)
            want = sums(sel, sh["day"])
            check(sorted(e["key"] for e in st["series"]) == sorted(want), "own Shanghai days")
            st = agree2(adm, "/api/statistics/?%sgroup_by=day,model&tz=Asia/Shanghai" % rng, sel, sh["day"],
                        keyfs["model"], "model", "own %sday,model in Shanghai" % rng, get=mine)
            check(st == adm.get("/api/admin/statistics/?%suser_id=%d&group_by=day,model&tz=Asia/Shanghai" % (rng, u2)),
                  "own two-level statistics are the admin's for that user")
            agree2(adm, "/api/quotas/%d/statistics/?%sgroup_by=hour,group" % (u2_quotas[0][0], rng),
                   [r for r in sel if r["quota_id"] == u2_quotas[0][0]], keyfs["hour"], keyfs["group"], "group",
                   "own quota hour,group", get=mine)
            for qid, _, _ in u2_quotas:
                qsel = [r for r in sel if r["quota_id"] == qid]
                for path in ("/api/quotas/%d/statistics/?%sgroup_by=hour" % (qid, rng),
                             "/api/statistics/?%squota_id=%d&group_by=hour" % (rng, qid)):
                    st = mine(path)
                    same(st["totals"], sums(qsel), path)
                    want = sums(qsel, keyfs["hour"])
                    check(sorted(e["key"] for e in st["series"]) == sorted(want), path)
        # only their own: another user's quota is not found, a user filter changes nothing
        e = mine("/api/quotas/%d/statistics/" % other_quota, expect=404)["error"]
        check(e["type"] == "not_found_error", e)
        mine("/api/statistics/?quota_id=%d" % other_quota, expect=404)
        mine("/api/quotas/999/statistics/", expect=404)
        same(mine("/api/statistics/?user_id=%d" % quotas[0][1])["totals"], sums(own), "user_id ignored")
        e = mine("/api/statistics/?tz=Nowhere/Special", expect=400)["error"]
        check(e["param"] == "tz", e)
        e = mine("/api/statistics/?group_by=user", expect=400)["error"]
        check(e["param"] == "group_by", e)
        e = mine("/api/statistics/?group_by=day,user", expect=400)["error"]
        check(e["param"] == "group_by" and "day,model" in e["message"], e)
        r = gw.http("GET", "/api/admin/statistics/", token=cred)
        check(r.status == (403 if cred == jwt else 401), "the admin's statistics: %s" % r.status)
    r = gw.http("GET", "/api/statistics/")
    check(r.status == 401, "no credentials: %s" % r.status)

    # --- errors ---------------------------------------------------------------------
    for path, param in [("/api/admin/requests/?since=soon", "since"),
                        ("/api/admin/requests/?status=2xx", "status"),
                        ("/api/admin/requests/?user_id=0", "user_id"),
                        ("/api/admin/requests/?page_size=501", "page_size"),
                        ("/api/admin/statistics/?group_by=week", "group_by"),
                        ("/api/admin/statistics/?group_by=model,day", "group_by"),
                        ("/api/admin/statistics/?group_by=day,hour", "group_by"),
                        ("/api/admin/statistics/?group_by=day,", "group_by"),
                        ("/api/admin/statistics/?group_by=,model", "group_by"),
                        ("/api/admin/statistics/?group_by=day,model,user", "group_by"),
                        ("/api/admin/statistics/?group_by=day%2Cweek", "group_by"),
                        ("/api/admin/quotas/%d/statistics/?group_by=hour,user" % quotas[0][0], "group_by"),
                        ("/api/admin/statistics/?tz=Mars/Olympus", "tz"),
                        ("/api/admin/statistics/?tz=../../etc/passwd", "tz"),
                        ("/api/admin/quotas/%d/statistics/?tz=EST5EDT,M3.2.0,M11.1.0" % quotas[0][0], "tz"),
                        ("/api/admin/quotas/%d/statistics/?group_by=user" % quotas[0][0], "group_by"),
                        ("/api/admin/quotas/%d/requests/?until=x" % quotas[0][0], "until"),
                        ("/api/admin/statistics/?group_by=user&limit=0", "limit"),
                        ("/api/admin/statistics/?group_by=user&limit=1001", "limit"),
                        ("/api/admin/statistics/?group_by=model&limit=-1", "limit"),
                        ("/api/admin/statistics/?group_by=model&limit=1x", "limit"),
                        ("/api/admin/statistics/?group_by=day&limit=5", "limit"),
                        ("/api/statistics/?group_by=hour&limit=5", "limit")]:
        e = adm.get(path, expect=400)["error"]
        check(e["param"] == param and param in e["fields"], "%s: %r" % (path, e))
    # limit ranks any grouping but time: the costliest first, and how many there were
    by_model = adm.get("/api/admin/statistics/?group_by=model")
    costliest = max(by_model["series"], key=lambda e: (dec(e["cost"]), -e["model_id"]))
    top1 = adm.get("/api/admin/statistics/?group_by=model&limit=1")
    check(len(top1["series"]) == 1 and top1["series"][0] == costliest, "model limit=1: %r" % top1)
    check(top1["top"] == {"limit": 1, "of": len(by_model["series"])}, "model limit=1: %r" % top1["top"])
    check(top1["totals"] == by_model["totals"], "a ranking keeps the totals")
    top1 = adm.get("/api/admin/statistics/?group_by=day,model&limit=1")
    check({e["model_id"] for e in top1["series"]} == {costliest["model_id"]}, "day,model limit=1: %r" % top1)
    adm.get("/api/admin/quotas/999/requests/", expect=404)
    adm.get("/api/admin/quotas/999/statistics/", expect=404)
    r = gw.http("GET", "/api/admin/statistics/", token=quotas[0][2])
    check(r.status in (401, 403), "an API key is no superadmin: %s" % r.status)
    proxyutil.verify(gw)


def main():
    times = phases()
    env = {"TOKENAUDIT_TEST_CLOCK_OFFSET_S": str(times[0] - int(time.time()))}
    with gateway_with_fake(workers=2, env=env) as (gw, fake):
        run(gw, fake, times)
    print("ok")


if __name__ == "__main__":
    main()
