"""test_proxy.py - the /v1 proxy end to end: a real tokenauditd (harness.py)
in front of the real fake upstream (tests/tools/fake_upstream_main.c).

Covers: chat non-streaming and streaming (usage chunk kept or removed),
completions, embeddings, models list and retrieve, usage, the error paths
(401, 403, 404, 400 naming the param, upstream 429/5xx pass-through, 502 on a
dead provider, 504 on a slow one, failover to the next route), and that one
client call is exactly one upstream call.
"""

import http.client
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from proxyutil import Admin, check, gateway_with_fake, v1  # noqa: E402
from proxyutil import sse_events as _sse_events  # noqa: E402


def sse_events(raw):
    # strict: a stream that is not UTF-8 fails here
    return _sse_events(raw, errors="strict")


def setup_tenant(gw, fake, dead_port):
    adm = Admin(gw)
    prov = adm.add_provider("fake", fake.url, "sk-upstream-secret-7777", timeout_s=2)
    dead = adm.add_provider("dead", "http://127.0.0.1:%d/v1" % dead_port, "sk-dead-0000")
    prices = {"input_price": "1", "output_price": "2", "cache_read_price": "0.5"}
    chat = adm.add_model("gpt-test", [(prov["id"], "up-model")], capabilities=["chat", "streaming"], **prices)
    emb = adm.add_model("emb-test", [(prov["id"], "up-emb")], capabilities=["embeddings"], **prices)
    failover = adm.add_model("failover-test", [(dead["id"], "x"), (prov["id"], "up-fo")], **prices)
    deadm = adm.add_model("dead-test", [(dead["id"], "x")], **prices)
    adm.add_model("not-in-group", [(prov["id"], "y")], **prices)
    grp = adm.add_group("g", [chat["id"], emb["id"], failover["id"], deadm["id"]])
    quota = adm.add_quota(adm.first_user_id(), grp["id"], period="month", cost_limit="100")
    return quota["api_key"]


def main():
    # a port with nobody behind it
    dead_port = harness.free_port()
    with gateway_with_fake(workers=2) as (gw, fake):
        key = setup_tenant(gw, fake, dead_port)
        run(gw, fake, key)
    print("ok")


def run(gw, fake, key):
    msgs = [{"role": "user", "content": "Say hello"}]

    # --- chat, non-streaming -------------------------------------------------
    before = len(fake.lines("POST /v1/chat/completions"))
    # (client headers are not forwarded upstream: the fake is scripted through the body)
    r = v1(gw, key, "POST", "/chat/completions", {"model": "gpt-test", "messages": msgs, "fake_usage": "12,5,4"})
    check(r.status == 200, "chat: %s %s" % (r.status, r.body))
    check(r.json["object"] == "chat.completion", r.body)
    check(r.json["usage"]["prompt_tokens"] == 12 and r.json["usage"]["prompt_tokens_details"]["cached_tokens"] == 4,
          r.body)
    check(r.json["model"] == "up-model", "the upstream saw the mapped name: %s" % r.body)
    check(r.request_id or r.headers.get("x-request-id"), "x-request-id")
    calls = fake.lines("POST /v1/chat/completions")
    check(len(calls) == before + 1, "one upstream call per request: %r" % calls[before:])
    check("auth=7777" in calls[-1], "the provider key went upstream, not the client's: %s" % calls[-1])

    # --- chat, streaming, client did not ask for usage -----------------------
    r = v1(gw, key, "POST", "/chat/completions",
           {"model": "gpt-test", "messages": msgs, "stream": True, "fake_chunks": 4, "fake_usage": "9,4,0"})
    check(r.status == 200, "stream: %s %s" % (r.status, r.body))
    check(r.headers.get("content-type", "").startswith("text/event-stream"), r.headers)
    ev = sse_events(r.body)
    check(ev[-1] == "[DONE]", ev)
    check(not any('"usage"' in e for e in ev), "usage removed when not asked for: %r" % ev)
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in ev[:-1]
                   if json.loads(e)["choices"])
    check(text == "tok0 tok1 tok2 tok3 ", text)

    # --- streaming with include_usage ------------------------------------------
    r = v1(gw, key, "POST", "/chat/completions",
           {"model": "gpt-test", "messages": msgs, "stream": True, "stream_options": {"include_usage": True},
            "fake_chunks": 3, "fake_usage": "9,3,2"})
    ev = sse_events(r.body)
    check(ev[-1] == "[DONE]", ev)
    usage = [json.loads(e) for e in ev[:-1] if json.loads(e).get("usage")]
    check(len(usage) == 1 and usage[0]["usage"]["completion_tokens"] == 3, ev)

    # --- completions, embeddings, models, usage ---------------------------------
    r = v1(gw, key, "POST", "/completions", {"model": "gpt-test", "prompt": "Once"})
    check(r.status == 200 and r.json["object"] == "text_completion", r.body)
    r = v1(gw, key, "POST", "/embeddings", {"model": "emb-test", "input": ["a", "b"]})
    check(r.status == 200 and len(r.json["data"]) == 2, r.body)
    r = v1(gw, key, "GET", "/models")
    check(r.status == 200 and r.json["object"] == "list", r.body)
    names = sorted(m["id"] for m in r.json["data"])
    check(names == ["dead-test", "emb-test", "failover-test", "gpt-test"], names)
    r = v1(gw, key, "GET", "/models/gpt-test")
    check(r.status == 200 and r.json["id"] == "gpt-test", r.body)
    r = v1(gw, key, "GET", "/models/not-in-group")
    check(r.status == 404, r.body)
    r = v1(gw, key, "GET", "/usage")
    check(r.status == 200 and r.json["cost_limit"] == "100", r.body)

    # --- errors ---------------------------------------------------------------------
    r = v1(gw, "sk-wrong-key-123456", "POST", "/chat/completions", {"model": "gpt-test", "messages": msgs})
    check(r.status == 401 and r.json["error"]["code"] == "invalid_api_key", r.body)
    r = gw.http("GET", "/v1/models")
    check(r.status == 401, r.body)
    r = v1(gw, key, "POST", "/chat/completions", {"model": "nope", "messages": msgs})
    check(r.status == 404 and r.json["error"]["code"] == "model_not_found", r.body)
    r = v1(gw, key, "POST", "/chat/completions", {"model": "not-in-group", "messages": msgs})
    check(r.status == 403 and r.json["error"]["code"] == "model_not_allowed", r.body)
    r = v1(gw, key, "POST", "/chat/completions", {"model": "gpt-test"})
    check(r.status == 400 and r.json["error"]["param"] == "messages", r.body)
    r = v1(gw, key, "POST", "/chat/completions", {"model": "gpt-test", "messages": msgs, "max_tokens": -1})
    check(r.status == 400 and r.json["error"]["param"] == "max_tokens", r.body)
    r = gw.http("POST", "/v1/chat/completions", raw=b"{not json", token=key)
    check(r.status == 400 and r.json["error"]["type"] == "invalid_request_error", r.body)
    r = v1(gw, key, "GET", "/chat/completions")
    check(r.status == 405, r.body)

    # upstream errors pass through in OpenAI's shape
    r = v1(gw, key, "POST", "/chat/completions", {"model": "gpt-test", "messages": msgs,
                                                  "fake_scenario": "rate_limit"})
    check(r.status == 429 and r.json["error"]["code"] == "rate_limit_exceeded", r.body)
    check(r.headers.get("retry-after") == "1", r.headers)
    r = v1(gw, key, "POST", "/chat/completions", {"model": "gpt-test", "messages": msgs,
                                                  "fake_scenario": "status:500"})
    check(r.status == 502 and r.json["error"]["type"] == "upstream_error", r.body)
    r = v1(gw, key, "POST", "/chat/completions", {"model": "gpt-test", "messages": msgs,
                                                  "fake_scenario": "status:400"})
    check(r.status == 400, r.body)
    # dead provider: 502; the failover model reaches the live route
    r = v1(gw, key, "POST", "/chat/completions", {"model": "dead-test", "messages": msgs})
    check(r.status == 502 and r.json["error"]["type"] == "upstream_error", r.body)
    r = v1(gw, key, "POST", "/chat/completions", {"model": "failover-test", "messages": msgs})
    check(r.status == 200 and r.json["model"] == "up-fo", r.body)
    # slower than the provider's timeout (2 s): 504
    r = v1(gw, key, "POST", "/chat/completions", {"model": "gpt-test", "messages": msgs,
                                                  "fake_scenario": "slow_first_byte:5000"})
    check(r.status == 504, r.body)

    # a stream cut by the provider reaches the client cut (no [DONE])
    try:
        r = v1(gw, key, "POST", "/chat/completions", {"model": "gpt-test", "messages": msgs, "stream": True,
                                                      "fake_scenario": "cut_stream:2"})
        check(b"[DONE]" not in r.body, r.body)
    except http.client.IncompleteRead:
        pass

    # keep-alive client connection, several requests, one upstream call each
    before = len(fake.lines("scenario=ka"))
    conn = gw.connection()
    for _ in range(5):
        r = v1(gw, key, "POST", "/chat/completions", {"model": "gpt-test", "messages": msgs,
                                                      "fake_scenario": "ka"}, conn=conn)
        check(r.status == 200, r.body)
    conn.close()
    check(len(fake.lines("scenario=ka")) - before == 5, "5 calls, 5 upstream requests")


if __name__ == "__main__":
    t0 = time.time()
    main()
