"""test_anthropic.py - `anthropic`-type providers end to end: a real
tokenauditd (harness.py) in front of the fake upstream's Anthropic mode
(POST /v1/messages of tests/tools/fake_upstream_main.c), which checks the
request the way Anthropic does (x-api-key, anthropic-version, max_tokens,
no unknown fields) and answers with a Message or Anthropic's event stream.

Covers: chat non-streaming and streaming (include_usage on and off), tool
calls both ways, the usage charged = the fake's usage with cache reads and
writes at the model's cache prices (quota cost_used after billing drained, and
the audit record's tokens), provider errors in OpenAI's shape (400, 429 with
Retry-After, 529 -> 503), an error event mid-stream, a request Anthropic cannot
express refused before any upstream call, embeddings/completions on an
anthropic model -> 400, failover from an overloaded anthropic route to an
OpenAI one inside a stream, and `ledger verify` at the end.

The gateway does not forward client headers and drops unknown body fields on
the way to Anthropic, so the fake is scripted through /_fake/control (one
request at a time: "times": 1).
"""

import http.client
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from proxyutil import (Fake, check, nano, raw_request, raw_stream_then_drop, record, sse_events, v1,  # noqa: E402
                       verify)

KEY = "sk-ant-upstream-secret-9999"
# whole units per 1M tokens: 1 unit per 1M tokens is 1000 nano per token
PRICES = {"input_price": "3", "output_price": "15", "cache_read_price": "1", "cache_write_price": "4"}
MAX_OUT = 777
MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]


def cost(prompt_in, completion, cache_read=0, cache_write=0):
    """Nano-units at PRICES; prompt_in is Anthropic's input_tokens (outside the cache classes)."""
    return (prompt_in * 3 + completion * 15 + cache_read * 1 + cache_write * 4) * 1000


class Setup:
    def __init__(self, gw, fake):
        self.gw = gw
        self.fake = fake
        self.tok = gw.login()
        base = "http://127.0.0.1:%d" % fake.port  # no /v1: the rule of {base_url}/v1/messages
        anth = self.post("/api/admin/providers/", {"name": "anth", "type": "anthropic", "base_url": base,
                                                   "api_key": KEY, "timeout_s": 5})
        oai = self.post("/api/admin/providers/", {"name": "oai", "type": "openai", "base_url": fake.url,
                                                  "api_key": "sk-openai-1111", "timeout_s": 5})
        m = self.post("/api/admin/models/", dict(PRICES, name="claude-test", capabilities=["chat", "streaming"],
                                                 max_output_tokens=MAX_OUT,
                                                 routes=[{"provider_id": anth["id"], "upstream_name": "claude-up",
                                                          "priority": 1}]))
        fo = self.post("/api/admin/models/", dict(PRICES, name="claude-fo", capabilities=["chat", "streaming"],
                                                  routes=[{"provider_id": anth["id"], "upstream_name": "claude-up",
                                                           "priority": 1},
                                                          {"provider_id": oai["id"], "upstream_name": "gpt-up",
                                                           "priority": 2}]))
        grp = self.post("/api/admin/groups/", {"name": "g", "model_ids": [m["id"], fo["id"]]})
        users = gw.http("GET", "/api/admin/users/", token=self.tok).json["results"]
        q = self.post("/api/admin/quotas/", {"user_id": users[0]["id"], "group_id": grp["id"], "period": "month",
                                             "cost_limit": "100"})
        self.quota_id = q["id"]
        self.key = q["api_key"]

    def post(self, path, body):
        r = self.gw.http("POST", path, body, token=self.tok)
        check(r.status == 201, "%s: %s %s" % (path, r.status, r.body))
        return r.json

    def settled(self):
        def done():
            r = self.gw.http("GET", "/api/admin/quotas/%d/" % self.quota_id, token=self.tok)
            check(r.status == 200, r.body)
            u = r.json["usage"]
            return u if u["in_flight"] == 0 and nano(u["cost_held"]) == 0 else None
        return harness.wait_for(done, 30, "quota settled")

    def used(self):
        return nano(self.settled()["cost_used"])

    def script(self, scenario="ok", usage=None, chunks=None):
        body = {"scenario": scenario, "times": 1}
        if usage:
            body["usage"] = usage
        if chunks:
            body["chunks"] = chunks
        c = http.client.HTTPConnection("127.0.0.1", self.fake.port, timeout=10)
        try:
            c.request("POST", "/_fake/control", json.dumps(body))
            check(c.getresponse().status == 200, "fake control")
        finally:
            c.close()

    def chat(self, model="claude-test", **kw):
        body = {"model": model, "messages": MSGS}
        body.update(kw)
        return v1(self.gw, self.key, "POST", "/chat/completions", body)


def messages_calls(fake):
    return fake.calls("/v1/messages")


def non_streaming(s):
    before = s.used()
    s.script(usage="100,7,30,20")
    r = s.chat()
    check(r.status == 200, "chat: %s %s" % (r.status, r.body))
    j = r.json
    check(j["object"] == "chat.completion", r.body)
    ch = j["choices"][0]
    check(ch["message"]["role"] == "assistant" and ch["message"]["content"] == "tok0 tok1 tok2 tok3 tok4 ", r.body)
    check(ch["finish_reason"] == "stop", r.body)
    check(j["model"] == "claude-up", "the provider's model name: %s" % r.body)
    u = j["usage"]
    check((u["prompt_tokens"], u["completion_tokens"], u["total_tokens"]) == (150, 7, 157),
          "prompt = input + cache read + cache write: %r" % u)
    check(u["prompt_tokens_details"]["cached_tokens"] == 30, u)
    call = messages_calls(s.fake)[-1]
    check(call["auth"] == KEY[-4:], "x-api-key is the provider key: %r" % call)
    check(call["apiver"] == "2023-06-01", call)
    check(call["max_tokens"] == str(MAX_OUT), "max_tokens defaults to the model's max output: %r" % call)
    check(call["system"] == "1" and call["msgs"] == "1" and call["stream"] == "0", call)
    rec = record(s.gw, r.request_id)
    check((rec["prompt_tokens"], rec["completion_tokens"], rec["cached_tokens"], rec["cache_write_tokens"],
           rec["usage_estimated"]) == (150, 7, 30, 20, False), "audit record: %r" % rec)
    check(nano(rec["cost"]) == cost(100, 7, 30, 20), "cost at the cache prices: %r" % rec)
    check(s.used() - before == cost(100, 7, 30, 20), "quota charged the provider's usage")

    # the client's max_tokens goes through, stop -> stop_sequences is accepted by the fake
    s.script(usage="10,2,0,0")
    r = s.chat(max_tokens=33, stop=["END"], temperature=0.2)
    check(r.status == 200, r.body)
    check(messages_calls(s.fake)[-1]["max_tokens"] == "33", messages_calls(s.fake)[-1])


def streaming(s):
    # without include_usage: no usage anywhere, still charged the provider's usage
    before = s.used()
    s.script(usage="50,4,10,5", chunks=4)
    r = s.chat(stream=True)
    check(r.status == 200, "stream: %s %s" % (r.status, r.body))
    check(r.headers.get("content-type", "").startswith("text/event-stream"), r.headers)
    ev = sse_events(r.body)
    check(ev[-1] == "[DONE]", ev)
    chunks = [json.loads(e) for e in ev[:-1]]
    check(all(c["object"] == "chat.completion.chunk" for c in chunks), ev)
    check(chunks[0]["choices"][0]["delta"].get("role") == "assistant", chunks[0])
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    check(text == "tok0 tok1 tok2 tok3 ", text)
    check(chunks[-1]["choices"][0]["finish_reason"] == "stop", chunks[-1])
    check(not any("usage" in c for c in chunks), "no usage unless asked: %r" % ev)
    check(messages_calls(s.fake)[-1]["stream"] == "1", messages_calls(s.fake)[-1])
    rec = record(s.gw, r.request_id)
    check((rec["prompt_tokens"], rec["completion_tokens"], rec["cached_tokens"], rec["cache_write_tokens"],
           rec["usage_estimated"]) == (65, 4, 10, 5, False), "audit record: %r" % rec)
    check(s.used() - before == cost(50, 4, 10, 5), "stream charged the provider's usage")

    # with include_usage: one usage chunk (choices []) right before [DONE]
    s.script(usage="20,3,7,0", chunks=3)
    r = s.chat(stream=True, stream_options={"include_usage": True})
    check(r.status == 200, r.body)
    ev = sse_events(r.body)
    check(ev[-1] == "[DONE]", ev)
    last = json.loads(ev[-2])
    check(last["choices"] == [], last)
    check(last["usage"] == {"prompt_tokens": 27, "completion_tokens": 3, "total_tokens": 30,
                            "prompt_tokens_details": {"cached_tokens": 7}}, last)
    check(sum(1 for e in ev[:-1] if "usage" in json.loads(e)) == 1, ev)


def tools(s):
    s.script(scenario="tool_use", usage="30,9,0,0", chunks=1)
    r = s.chat(tools=TOOLS, tool_choice="auto")
    check(r.status == 200, r.body)
    ch = r.json["choices"][0]
    check(ch["finish_reason"] == "tool_calls", r.body)
    calls = ch["message"]["tool_calls"]
    check(len(calls) == 1 and calls[0]["function"]["name"] == "get_weather" and calls[0]["type"] == "function",
          calls)
    check(json.loads(calls[0]["function"]["arguments"]) == {"city": "Oslo"}, calls)
    check(messages_calls(s.fake)[-1]["tools"] == "1", messages_calls(s.fake)[-1])

    # the answer goes back as an assistant tool_calls message and a tool message
    msgs = MSGS + [{"role": "assistant", "content": None, "tool_calls": calls},
                   {"role": "tool", "tool_call_id": calls[0]["id"], "content": "-3C"}]
    s.script(usage="40,2,0,0")
    r = v1(s.gw, s.key, "POST", "/chat/completions", {"model": "claude-test", "messages": msgs, "tools": TOOLS})
    check(r.status == 200, r.body)
    check(messages_calls(s.fake)[-1]["msgs"] == "3", "user, assistant tool_use, user tool_result: %r"
          % messages_calls(s.fake)[-1])

    # streamed: arguments arrive as tool_calls deltas
    s.script(scenario="tool_use", usage="30,9,0,0", chunks=1)
    r = s.chat(tools=TOOLS, stream=True)
    check(r.status == 200, r.body)
    chunks = [json.loads(e) for e in sse_events(r.body)[:-1]]
    tc = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks
          if c["choices"] and "tool_calls" in c["choices"][0]["delta"]]
    check(tc[0]["function"]["name"] == "get_weather" and tc[0]["index"] == 0 and tc[0]["id"], tc)
    check(json.loads("".join(t["function"]["arguments"] for t in tc)) == {"city": "Oslo"}, tc)
    check(chunks[-1]["choices"][0]["finish_reason"] == "tool_calls", chunks[-1])


def errors(s):
    before = s.used()
    n0 = len(messages_calls(s.fake))

    s.script(scenario="status:400")
    r = s.chat()
    check(r.status == 400, "%s %s" % (r.status, r.body))
    e = r.json["error"]
    check(e["type"] == "invalid_request_error" and e["message"] == "fake upstream error" and "param" in e, r.body)

    s.script(scenario="rate_limit")
    r = s.chat()
    check(r.status == 429 and r.json["error"]["type"] == "rate_limit_error", "%s %s" % (r.status, r.body))
    check(r.headers.get("retry-after") == "1", "Retry-After passed through: %r" % r.headers)

    s.script(scenario="status:529")
    r = s.chat()
    check(r.status == 503, "overloaded -> 503: %s %s" % (r.status, r.body))
    check(r.json["error"]["type"] == "upstream_error" and r.json["error"]["code"] == "overloaded_error", r.body)

    s.script(scenario="status:529")
    r = s.chat(stream=True)
    check(r.status == 503 and r.json["error"]["code"] == "overloaded_error", "%s %s" % (r.status, r.body))
    check(len(messages_calls(s.fake)) == n0 + 4, "one upstream call each")

    # refused before the hold and before any upstream call
    r = s.chat(n=2)
    check(r.status == 400 and r.json["error"]["param"] == "n", "%s %s" % (r.status, r.body))
    r = s.chat(messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}])
    check(r.status == 400 and r.json["error"]["param"] == "messages[0].content[0]", r.body)
    for path, body in (("/embeddings", {"model": "claude-test", "input": "x"}),
                       ("/completions", {"model": "claude-test", "prompt": "x"})):
        r = v1(s.gw, s.key, "POST", path, body)
        check(r.status == 400, "%s: %s %s" % (path, r.status, r.body))
        check(r.json["error"]["type"] == "invalid_request_error" and r.json["error"]["param"] == "model", r.body)
        check("claude-test" in r.json["error"]["message"] and "does not support" in r.json["error"]["message"],
              r.body)
    check(len(messages_calls(s.fake)) == n0 + 4, "no upstream call for refused requests")
    check(s.used() == before, "errors cost nothing")


def stream_error(s):
    # an error event mid-stream: the client gets the text so far, the error
    # event in OpenAI's shape, then a cleanly ended body (no [DONE]); the
    # request is recorded with the error's type
    s.script(scenario="stream_error", usage="11,2,0,0", chunks=3)
    status, hdrs, body, complete = raw_request(s.gw, s.key, {"model": "claude-test", "messages": MSGS,
                                                              "stream": True})
    check(status == 200, status)
    ev = sse_events(body)
    check("[DONE]" not in ev and complete, "error event, then a clean end: %r %r" % (ev, complete))
    rec = record(s.gw, hdrs["x-request-id"])
    check(rec["error_type"] == "upstream_error", "recorded with its error type: %s" % rec)
    err = json.loads(ev[-1])
    check(err["error"]["code"] == "overloaded_error" and err["error"]["message"] == "Overloaded", ev)
    check(json.loads(ev[1])["choices"][0]["delta"]["content"] == "tok0 ", ev)


def failover(s):
    # the anthropic route is overloaded: the OpenAI route answers the stream
    n_msgs, n_chat = len(messages_calls(s.fake)), len(s.fake.calls("/v1/chat/completions"))
    s.script(scenario="status:529")
    r = s.chat(model="claude-fo", stream=True, stream_options={"include_usage": True})
    check(r.status == 200, "%s %s" % (r.status, r.body))
    ev = sse_events(r.body)
    check(ev[-1] == "[DONE]", ev)
    chunks = [json.loads(e) for e in ev[:-1]]
    check(chunks[0]["model"] == "gpt-up", "served by the OpenAI route: %r" % chunks[0])
    check("".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) ==
          "tok0 tok1 tok2 tok3 tok4 ", ev)
    check(len(messages_calls(s.fake)) == n_msgs + 1 and len(s.fake.calls("/v1/chat/completions")) == n_chat + 1,
          "one call per route")
    rec = record(s.gw, r.request_id)
    check(rec["status"] == 200 and not rec["usage_estimated"], rec)


def client_gone(s, mode):
    """The client leaves after the first event of a slow stream. drain (the
    default): read to the end, charged the provider's usage exactly. abort:
    the real prompt (message_start) and at least what was delivered, marked
    estimated."""
    before = s.used()
    s.script(scenario="slow_chunks:30", usage="40,12,6,2", chunks=12)
    rid = raw_stream_then_drop(s.gw, s.key, {"model": "claude-test", "messages": MSGS, "stream": True})
    rec = record(s.gw, rid)
    check(rec["client_gone"], "%s: the client left: %r" % (mode, rec))
    check((rec["prompt_tokens"], rec["cached_tokens"], rec["cache_write_tokens"]) == (48, 6, 2),
          "%s: the prompt from message_start: %r" % (mode, rec))
    if mode == "drain":
        check(rec["completion_tokens"] == 12 and not rec["usage_estimated"], "drain: the provider's usage: %r" % rec)
        check(nano(rec["cost"]) == cost(40, 12, 6, 2), rec)
    else:
        check(1 <= rec["completion_tokens"] < 12 and rec["usage_estimated"], "abort: estimated output: %r" % rec)
        check(nano(rec["cost"]) == cost(40, rec["completion_tokens"], 6, 2), rec)
    check(s.used() - before == nano(rec["cost"]), "%s: quota charged the record's cost" % mode)


def main():
    with harness.Gateway(workers=2) as gw:
        fake = Fake(gw.tmp)
        try:
            s = Setup(gw, fake)
            non_streaming(s)
            streaming(s)
            tools(s)
            errors(s)
            stream_error(s)
            failover(s)
            client_gone(s, "drain")
            s.settled()
            verify(gw)
            gw.stop()
            gw.assert_no_sanitizer_reports()
            with harness.Gateway(workers=1, env={"TOKENAUDIT_ON_DISCONNECT": "abort"}) as gw2:
                client_gone(Setup(gw2, fake), "abort")
                verify(gw2)
                gw2.stop()
                gw2.assert_no_sanitizer_reports()
        finally:
            fake.stop()
    print("ok")


if __name__ == "__main__":
    main()
