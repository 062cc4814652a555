"""test_messages.py - POST /v1/messages and /v1/messages/count_tokens
(Anthropic's Messages API) end to end, with both provider types behind the
gateway (tests/tools/fake_upstream: its /v1/messages and /v1/chat/completions).

Covers: the key in x-api-key and in Authorization: Bearer; anthropic-version
passed to an anthropic provider; pass-through to an anthropic-type provider
(JSON and its event stream) and translation to an openai-type one (system,
text, the chunk stream as Anthropic's events in order); usage with cache reads
and writes charged to the nano-unit; errors in Anthropic's shape (401, 400
naming the param, a provider's error from either type); count_tokens (passed
through, or the gateway's estimate, never charged); /v1/models in Anthropic's
shape with anthropic-version; max_tokens held and clamped like chat's output
limit under a tight budget; `ledger verify`.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proxyutil import (Admin, both_types, chat_model, check, gateway_with_fake, named_events,  # noqa: E402
                       nano, record, verify)

PRICES = {"input_price": "3", "output_price": "15", "cache_read_price": "1", "cache_write_price": "4"}


def post(gw, key, path, body, bearer=False, version="2023-06-01"):
    h = {"Content-Type": "application/json"}
    if bearer:
        h["Authorization"] = "Bearer " + key
    else:
        h["x-api-key"] = key
    if version:
        h["anthropic-version"] = version
    return gw.http("POST", path, json.dumps(body), headers=h, timeout=20)


def anth_error(r, status, etype, where):
    check(r.status == status, "%s: %s %s" % (where, r.status, r.body))
    check(r.json and r.json.get("type") == "error" and r.json["error"]["type"] == etype
          and isinstance(r.json["error"]["message"], str), "%s: Anthropic's error shape: %s" % (where, r.body))


def cost(inp, out, cache_read=0, cache_write=0):
    return (inp * 3 + out * 15 + cache_read * 1 + cache_write * 4) * 1000


MSGS = [{"role": "user", "content": "Say hello"}]


def main():
    with gateway_with_fake(workers=1) as (gw, fake):
        adm = Admin(gw)
        oai, anth = both_types(adm, fake, oai_key="sk-oai-8888", anth_key="sk-ant-9999")
        claude = chat_model(adm, "claude-m", anth, "claude-up", **PRICES)
        gpt = chat_model(adm, "gpt-m", oai, "gpt-up", **PRICES)
        grp = adm.add_group("g", [claude["id"], gpt["id"]])
        uid = adm.first_user_id()
        q = adm.add_quota(uid, grp["id"], period="month", cost_limit="100")
        key = q["api_key"]

        # ---- pass-through to an anthropic provider ----
        fake.script(usage="10,5,3,2")
        r = post(gw, key, "/v1/messages", {"model": "claude-m", "max_tokens": 64, "system": "Be brief.",
                                           "messages": MSGS}, version="2023-06-01")
        check(r.status == 200 and r.json["type"] == "message" and r.json["role"] == "assistant", r.body)
        check(r.json["usage"]["cache_read_input_tokens"] == 3, r.body)
        rec = record(gw, r.headers["x-request-id"])
        check(rec["endpoint"] == "messages", rec)
        check(nano(rec["cost"]) == cost(10, 5, 3, 2), "charged %s, want %d" % (rec["cost"], cost(10, 5, 3, 2)))
        line = fake.calls("/v1/messages")[-1]
        check(line["apiver"] == "2023-06-01" and line["max_tokens"] == "64" and line["auth"] == "9999", line)

        fake.script(usage="12,6,0,4")
        r = post(gw, key, "/v1/messages", {"model": "claude-m", "max_tokens": 64, "messages": MSGS, "stream": True},
                 bearer=True)
        check(r.status == 200, r.body)
        ev = named_events(r.body)
        check(ev[0][0] == "message_start" and ev[-1][0] == "message_stop", [e[0] for e in ev])
        rec = record(gw, r.headers["x-request-id"])
        check(nano(rec["cost"]) == cost(12, 6, 0, 4), "stream charged %s" % rec["cost"])

        # ---- translated to an openai provider ----
        fake.script(usage="20,7,4")
        r = post(gw, key, "/v1/messages", {"model": "gpt-m", "max_tokens": 50, "system": [{"type": "text",
                                                                                          "text": "Be brief."}],
                                           "messages": MSGS, "metadata": {"user_id": "u1"}})
        check(r.status == 200, r.body)
        m = r.json
        check(m["type"] == "message" and m["content"][0]["type"] == "text" and m["stop_reason"] == "end_turn", m)
        check(m["usage"] == {"input_tokens": 16, "output_tokens": 7, "cache_creation_input_tokens": 0,
                             "cache_read_input_tokens": 4}, m["usage"])
        rec = record(gw, r.headers["x-request-id"])
        check(nano(rec["cost"]) == cost(16, 7, 4), "translated charged %s" % rec["cost"])

        fake.script(usage="9,5,0")
        r = post(gw, key, "/v1/messages", {"model": "gpt-m", "max_tokens": 50, "messages": MSGS, "stream": True})
        check(r.status == 200, r.body)
        names = [e[0] for e in named_events(r.body)]
        check(names[0] == "message_start" and names[1] == "content_block_start" and
              names[-3:] == ["content_block_stop", "message_delta", "message_stop"], names)
        md = [e[1] for e in named_events(r.body) if e[0] == "message_delta"][0]
        check(md["usage"]["output_tokens"] == 5 and md["delta"]["stop_reason"] == "end_turn", md)
        rec = record(gw, r.headers["x-request-id"])
        check(nano(rec["cost"]) == cost(9, 5), "translated stream charged %s" % rec["cost"])

        # ---- errors in Anthropic's shape ----
        anth_error(post(gw, "sk-wrong", "/v1/messages", {"model": "gpt-m", "max_tokens": 5, "messages": MSGS}),
                   401, "authentication_error", "bad key")
        r = post(gw, key, "/v1/messages", {"model": "gpt-m", "messages": MSGS})
        anth_error(r, 400, "invalid_request_error", "no max_tokens")
        check("max_tokens" in r.json["error"]["message"], r.body)
        anth_error(post(gw, key, "/v1/messages", {"model": "nope", "max_tokens": 5, "messages": MSGS}), 404,
                   "not_found_error", "unknown model")
        anth_error(post(gw, key, "/v1/messages", {"model": "gpt-m", "max_tokens": 5, "messages": MSGS, "top_k": 3}),
                   400, "invalid_request_error", "top_k to an openai provider")
        fake.script("status:400")
        anth_error(post(gw, key, "/v1/messages", {"model": "claude-m", "max_tokens": 5, "messages": MSGS}), 400,
                   "invalid_request_error", "anthropic provider's 400")
        fake.script("status:500")
        anth_error(post(gw, key, "/v1/messages", {"model": "gpt-m", "max_tokens": 5, "messages": MSGS}), 500,
                   "api_error", "openai provider's 500")

        # ---- count_tokens: never charged ----
        fake.script(usage="42,1,0")
        r = post(gw, key, "/v1/messages/count_tokens", {"model": "claude-m", "messages": MSGS})
        check(r.status == 200 and r.json == {"input_tokens": 42}, r.body)
        check(nano(record(gw, r.headers["x-request-id"])["cost"]) == 0, "count_tokens is free")
        r = post(gw, key, "/v1/messages/count_tokens", {"model": "gpt-m", "messages": MSGS})
        check(r.status == 200 and r.json["input_tokens"] > 0, r.body)
        check(nano(record(gw, r.headers["x-request-id"])["cost"]) == 0, "count_tokens estimate is free")

        # ---- models in Anthropic's shape ----
        r = gw.http("GET", "/v1/models", headers={"x-api-key": key, "anthropic-version": "2023-06-01"})
        check(r.status == 200 and r.json["has_more"] is False, r.body)
        check(all(x["type"] == "model" and x["display_name"] and x["created_at"] for x in r.json["data"]), r.body)

        # ---- max_tokens held and clamped like chat's output limit ----
        tight = adm.add_quota(uid, grp["id"], period="month", cost_limit="0.01")["api_key"]
        r = post(gw, tight, "/v1/messages", {"model": "claude-m", "max_tokens": 100000, "messages": MSGS})
        check(r.status == 200, r.body)
        mt = int(fake.calls("/v1/messages")[-1]["max_tokens"])
        check(0 < mt < 1000, "max_tokens clamped to what the budget pays: %d" % mt)
        u = adm.get("/api/admin/quotas/%d/" % q["id"])["usage"]
        check(nano(u["cost_used"]) <= nano("100"), u)
        verify(gw)
    print("ok")


if __name__ == "__main__":
    main()
