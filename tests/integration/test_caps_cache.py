"""test_caps_cache.py - capabilities and cache prices, end to end (issue 9,
items 5 and 6).

Capabilities: /v1/embeddings to a model without `embeddings` and
/v1/chat/completions to one without `chat` are the client's 400
(model_not_supported, param model, OpenAI's error shape), refused before
anything is held: no upstream call, nothing held or charged, the refusal
recorded.

Cache prices: a model created without cache_read_price charges cached tokens
at its input price; one whose cache_read_price is "0" charges them nothing;
the admin API shows the unset price as null and the explicit one as "0".
Charged = the fake's usage at those prices to the nano-unit; `ledger verify`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proxyutil import (Admin, check, gateway_with_fake, nano, record, v1, verify)  # noqa: E402


def main():
    with gateway_with_fake(workers=1) as (gw, fake):
        adm = Admin(gw)
        prov = adm.add_provider("fake", fake.url, "sk-upstream-1234")
        chat_only = adm.add_model("chat-only", [(prov["id"], "up-chat")], capabilities=["chat"],
                                  input_price="2", output_price="4")
        emb_only = adm.add_model("emb-only", [(prov["id"], "up-emb")], capabilities=["embeddings"],
                                 input_price="2", output_price="4")
        unset = adm.add_model("cache-unset", [(prov["id"], "up-chat")], capabilities=["chat"],
                              input_price="2", output_price="4")
        free = adm.add_model("cache-free", [(prov["id"], "up-chat")], capabilities=["chat"],
                             input_price="2", output_price="4", cache_read_price="0")
        check(unset["cache_read_price"] is None and unset["cache_write_price"] is None, "unset prints null: %s" % unset)
        check(free["cache_read_price"] == "0", "explicit 0 prints \"0\": %s" % free)
        grp = adm.add_group("g", [chat_only["id"], emb_only["id"], unset["id"], free["id"]])
        q = adm.add_quota(adm.first_user_id(), grp["id"], period="month", cost_limit="100")
        key = q["api_key"]

        # ---- capabilities: refused before anything is held ----
        r = v1(gw, key, "POST", "/embeddings", {"model": "chat-only", "input": "x"})
        check(r.status == 400, "embeddings to a chat model: %s %s" % (r.status, r.body))
        e = r.json["error"]
        check(e["type"] == "invalid_request_error" and e["code"] == "model_not_supported" and e["param"] == "model"
              and "embeddings" in e["message"], "error: %s" % e)
        rid1 = r.headers.get("x-request-id")
        r = v1(gw, key, "POST", "/chat/completions", {"model": "emb-only", "messages": [{"role": "user",
                                                                                        "content": "hi"}]})
        check(r.status == 400 and r.json["error"]["code"] == "model_not_supported"
              and r.json["error"]["param"] == "model" and "chat" in r.json["error"]["message"],
              "chat to an embeddings model: %s %s" % (r.status, r.body))
        check(not fake.calls("/v1/embeddings") and not fake.calls("/v1/chat/completions"), "no upstream call")
        rec = record(gw, rid1)
        check(rec["status"] == 400 and nano(rec["cost"]) == 0, "recorded, not charged: %s" % rec)
        u = adm.get("/api/admin/quotas/%d/" % q["id"])["usage"]
        check(nano(u["cost_used"]) == 0 and nano(u["cost_held"]) == 0 and u["requests_used"] == 0,
              "nothing held or charged: %s" % u)

        # ---- cache prices ----
        # 100 prompt tokens of which 40 cached, 10 completion
        body = {"messages": [{"role": "user", "content": "hi"}], "fake_usage": "100,10,40"}
        r = v1(gw, key, "POST", "/chat/completions", dict(body, model="cache-unset"))
        check(r.status == 200, r.body)
        c_unset = nano(record(gw, r.headers["x-request-id"])["cost"])
        r = v1(gw, key, "POST", "/chat/completions", dict(body, model="cache-free"))
        check(r.status == 200, r.body)
        c_free = nano(record(gw, r.headers["x-request-id"])["cost"])
        # 1 unit per 1M tokens = 1000 nano per token
        check(c_unset == (100 * 2 + 10 * 4) * 1000, "unset cache price = input price: %d" % c_unset)
        check(c_free == (60 * 2 + 10 * 4) * 1000, "cache price 0 = free: %d" % c_free)
        verify(gw)
    print("ok")


if __name__ == "__main__":
    main()
