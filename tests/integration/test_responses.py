"""test_responses.py - POST /v1/responses (OpenAI's Responses API) end to end,
with both provider types behind the gateway (tests/tools/fake_upstream: its
/v1/responses and /v1/messages).

Covers, each call checked in its audit record:
- an openai-type provider: the request passes through (max_output_tokens held
  and clamped like chat's output limit: the model's max when absent or larger,
  what a tight budget pays), the answer as it came; charged usage.input_tokens,
  output_tokens and input_tokens_details.cached_tokens exactly (cached tokens at
  the cache price); streamed: charged from response.completed; a tool call;
  the stateful parameters (previous_response_id, store) passed through, their
  hold covering the model's context window;
- an anthropic-type provider: translated both ways (instructions -> system,
  items with a function call and its output -> tool_use / tool_result, function
  tools; the Message as a Response with the charged usage, cache reads and
  writes included; Anthropic's events as the Responses events in order);
  text.format json_schema as a forced tool, refused when its root is no object;
  the stateful and uncarried parameters refused with 400 naming them and
  nothing sent upstream or charged; a model with both route types serves a
  stateful request on its openai route;
- a provider's error in the middle of a stream (both types): response.failed,
  then a cleanly ended body, recorded with its error type;
- a client that leaves mid-stream (both types): the provider is read to its
  end and the request charged its usage exactly;
- the `chat` capability refused before anything is held; malformed bodies
  answered 400 naming the param;
- the quota's cost_used equal to the sum of its audit records, `ledger verify`.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from proxyutil import (Admin, audit_records, both_types, chat_model, check, gateway_with_fake,  # noqa: E402
                       named_events, nano, raw_request, raw_stream_then_drop, record, route, v1, verify)

PRICES = {"input_price": "3", "output_price": "15", "cache_read_price": "1", "cache_write_price": "4"}
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]


def cost(prompt, completion, cached=0, cache_write=0):
    """Nano-units at PRICES; prompt counts every input token (cached and written ones included)."""
    return ((prompt - cached - cache_write) * 3 + cached * 1 + cache_write * 4 + completion * 15) * 1000


def charged(gw, r, prompt, completion, cached=0, cache_write=0, where=""):
    rec = record(gw, r.headers["x-request-id"])
    want = cost(prompt, completion, cached, cache_write)
    check(rec["endpoint"] == "responses", "%s: endpoint %s" % (where, rec["endpoint"]))
    check((rec["prompt_tokens"], rec["completion_tokens"], rec["cached_tokens"], rec["cache_write_tokens"]) ==
          (prompt, completion, cached, cache_write) and not rec["usage_estimated"],
          "%s: the provider's usage recorded: %r" % (where, rec))
    check(nano(rec["cost"]) == want, "%s: charged %s, want %d nano" % (where, rec["cost"], want))
    return rec


def post(gw, key, body):
    return v1(gw, key, "POST", "/responses", body)


def text_of(resp):
    return "".join(p.get("text", "") for o in resp["output"] if o["type"] == "message" for p in o["content"])


def refused(r, status, param, where, code=None):
    check(r.status == status, "%s: %s %s" % (where, r.status, r.body))
    e = r.json["error"]
    check(e["param"] == param, "%s: param %r, want %r (%s)" % (where, e["param"], param, e["message"]))
    check(e["message"].startswith(param) or param == "model", "%s: the message names it: %s" % (where, e["message"]))
    if code:
        check(e["code"] == code, "%s: code %s" % (where, e["code"]))


def openai_route(gw, fake, key, tight):
    # non-streaming, cached tokens at the cache price
    fake.script(usage="40,9,12")
    r = post(gw, key, {"model": "gpt-r", "input": "Say hello", "instructions": "Be brief.", "max_output_tokens": 64})
    check(r.status == 200 and r.json["object"] == "response", r.body)
    check(text_of(r.json) == "tok0 tok1 tok2 tok3 tok4 ", r.body)
    check(r.json["usage"]["input_tokens_details"]["cached_tokens"] == 12, r.body)
    charged(gw, r, 40, 9, 12, where="openai json")
    call = fake.calls("/v1/responses")[-1]
    check(call["max_output_tokens"] == "64" and call["auth"] == "1111" and call["stream"] == "0", call)

    # the output limit: the model's max when absent or larger (held and sent)
    for mo in (None, 100000):
        body = {"model": "gpt-r", "input": "hi"}
        if mo:
            body["max_output_tokens"] = mo
        fake.script(usage="5,1,0")
        r = post(gw, key, body)
        check(r.status == 200, r.body)
        check(fake.calls("/v1/responses")[-1]["max_output_tokens"] == "500", "max_output_tokens %r -> the model's 500: %r"
              % (mo, fake.calls("/v1/responses")[-1]))
        rec = record(gw, r.headers["x-request-id"])
        check(nano(rec["held_cost"]) >= 500 * 15 * 1000, "the hold covers 500 output tokens: %r" % rec)

    # a tight budget: the limit lowered to what it pays, never over the limit
    fake.script("usage_max")
    r = post(gw, tight, {"model": "gpt-r", "input": "hi", "max_output_tokens": 400})
    check(r.status == 200, r.body)
    mo = int(fake.calls("/v1/responses")[-1]["max_output_tokens"])
    check(0 < mo < 400, "max_output_tokens clamped to what the budget pays: %d" % mo)

    # streamed: charged from response.completed
    fake.script(usage="30,5,10")
    r = post(gw, key, {"model": "gpt-r", "input": "Say hello", "stream": True})
    check(r.status == 200 and r.headers["content-type"].startswith("text/event-stream"), r.body)
    ev = named_events(r.body)
    check(ev[0][0] == "response.created" and ev[-1][0] == "response.completed", [e[0] for e in ev])
    check(ev[-1][1]["response"]["usage"]["input_tokens"] == 30, ev[-1])
    charged(gw, r, 30, 5, 10, where="openai stream")

    # a function call
    fake.script("tool_use", usage="11,4,0")
    r = post(gw, key, {"model": "gpt-r", "input": "Weather in Oslo?", "tools": TOOLS})
    check(r.status == 200, r.body)
    fc = [o for o in r.json["output"] if o["type"] == "function_call"]
    check(len(fc) == 1 and fc[0]["name"] == "get_weather" and json.loads(fc[0]["arguments"]) == {"city": "Oslo"},
          r.body)
    charged(gw, r, 11, 4, where="openai tool call")

    # stateful parameters pass through to an openai-type provider
    fake.script(usage="8,2,0")
    r = post(gw, key, {"model": "gpt-r", "input": "and then?", "previous_response_id": "resp_abc", "store": True})
    check(r.status == 200, r.body)
    call = fake.calls("/v1/responses")[-1]
    check(call["prev"] == "1" and call["store"] == "1", call)
    rec = charged(gw, r, 8, 2, where="openai stateful")
    # the stored conversation is input the gateway does not see: the hold
    # covers the model's context window (50000 tokens at the input price 3)
    check(nano(rec["held_cost"]) >= 50000 * 3 * 1000, "a stateful request holds the context window: %r" % rec)


def anthropic_route(gw, fake, key):
    n_msgs = len(fake.calls("/v1/messages"))
    # non-streaming: usage with cache reads and writes, instructions as system
    fake.script(usage="20,6,3,2")
    r = post(gw, key, {"model": "claude-r", "input": [{"role": "user", "content": [{"type": "input_text",
                                                                                    "text": "Say hello"}]}],
                       "instructions": "Be brief.", "max_output_tokens": 64, "store": False})
    check(r.status == 200, r.body)
    j = r.json
    check(j["object"] == "response" and j["status"] == "completed" and j["instructions"] == "Be brief.", r.body)
    check(text_of(j) == "tok0 tok1 tok2 tok3 tok4 ", r.body)
    u = j["usage"]
    check((u["input_tokens"], u["output_tokens"], u["input_tokens_details"]["cached_tokens"],
           u["input_tokens_details"]["cache_write_tokens"], u["total_tokens"]) == (25, 6, 3, 2, 31), u)
    charged(gw, r, 25, 6, 3, 2, where="anthropic json")
    call = fake.calls("/v1/messages")[-1]
    check(call["max_tokens"] == "64" and call["system"] == "1" and call["msgs"] == "1" and call["auth"] == "2222",
          call)

    # streamed: Anthropic's events as the Responses events, in order
    fake.script(usage="12,5,0,4")
    r = post(gw, key, {"model": "claude-r", "input": "Say hello", "stream": True})
    check(r.status == 200, r.body)
    ev = named_events(r.body)
    names = [e[0] for e in ev]
    check(names == ["response.created", "response.in_progress", "response.output_item.added",
                    "response.content_part.added"] + ["response.output_text.delta"] * 5 +
          ["response.output_text.done", "response.content_part.done", "response.output_item.done",
           "response.completed"], names)
    check(all(e[1]["type"] == e[0] for e in ev) and [e[1]["sequence_number"] for e in ev] == list(range(len(ev))),
          "type and sequence_number in every event")
    check("".join(e[1]["delta"] for e in ev if e[0] == "response.output_text.delta") == "tok0 tok1 tok2 tok3 tok4 ",
          names)
    done = ev[-1][1]["response"]
    check(done["status"] == "completed" and text_of(done) == "tok0 tok1 tok2 tok3 tok4 ", done)
    check(done["usage"]["input_tokens"] == 16 and done["usage"]["output_tokens"] == 5 and
          done["usage"]["input_tokens_details"]["cache_write_tokens"] == 4, done["usage"])
    charged(gw, r, 16, 5, 0, 4, where="anthropic stream")

    # a function call and its output go back as tool_use and tool_result
    items = [{"role": "user", "content": "Weather in Oslo?"},
             {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"},
             {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
             {"role": "user", "content": "And tomorrow?"}]
    fake.script("tool_use", usage="30,7,0")
    r = post(gw, key, {"model": "claude-r", "input": items, "tools": TOOLS})
    check(r.status == 200, r.body)
    fc = [o for o in r.json["output"] if o["type"] == "function_call"]
    check(len(fc) == 1 and fc[0]["name"] == "get_weather" and fc[0]["call_id"] == "toolu_fake_1" and
          json.loads(fc[0]["arguments"]) == {"city": "Oslo"}, r.body)
    call = fake.calls("/v1/messages")[-1]
    check(call["tools"] == "1" and call["msgs"] == "3", "user, assistant tool_use, user tool_result + text: %r" % call)
    charged(gw, r, 30, 7, where="anthropic tool call")

    fake.script("tool_use", usage="9,3,0")
    r = post(gw, key, {"model": "claude-r", "input": "Weather?", "tools": TOOLS, "stream": True})
    ev = named_events(r.body)
    fcs = [e[1]["item"] for e in ev if e[0] == "response.output_item.done" and e[1]["item"]["type"] == "function_call"]
    check(len(fcs) == 1 and json.loads(fcs[0]["arguments"]) == {"city": "Oslo"}, [e[0] for e in ev])
    check(ev[-1][0] == "response.completed" and [o["type"] for o in ev[-1][1]["response"]["output"]] ==
          ["message", "function_call"], ev[-1])
    charged(gw, r, 9, 3, where="anthropic tool stream")

    # text.format json_schema: a forced tool whose input is the answer
    fake.script("tool_use", usage="6,2,0")
    fmt = {"type": "json_schema", "name": "weather", "schema": {"type": "object",
                                                                 "properties": {"city": {"type": "string"}}}}
    r = post(gw, key, {"model": "claude-r", "input": "JSON please", "text": {"format": fmt}})
    check(r.status == 200 and text_of(r.json).endswith("{\"city\":\"Oslo\"}"), r.body)
    check(not [o for o in r.json["output"] if o["type"] == "function_call"], r.body)
    charged(gw, r, 6, 2, where="anthropic json_schema")
    check(len(fake.calls("/v1/messages")) == n_msgs + 5, "five calls reached the provider")

    # refused before anything is sent or held, the param named
    n_msgs = len(fake.calls("/v1/messages"))
    bad = [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"store": True}, "store"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"background": True}, "background"),
        ({"include": ["reasoning.encrypted_content"]}, "include"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"text": {"verbosity": "low"}}, "text.verbosity"),
        ({"max_tokens": 5}, "max_tokens"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tool_choice": {"type": "web_search"}}, "tool_choice"),
        ({"input": [{"role": "user", "content": "x"}, {"type": "reasoning", "summary": []}]}, "input[1].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input[0].content[0]"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}]},
         "input[0].arguments"),
        ({"instructions": "x", "input": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                          {"role": "user", "content": [{"type": "input_image",
                                                                        "image_url": "data:image/png,abc"}]}]},
         "input[2].content[0]"),
        ({"text": {"format": dict(fmt, schema={"type": "array"})}}, "text.format.schema"),
        ({"text": {"format": fmt}, "tools": TOOLS}, "text.format"),
    ]
    for extra, param in bad:
        body = dict({"model": "claude-r", "input": "hi"}, **extra)
        r = post(gw, key, body)
        refused(r, 400, param, "anthropic route %r" % extra)
        rec = record(gw, r.headers["x-request-id"])
        check(rec["status"] == 400 and nano(rec["held_cost"]) == 0 and nano(rec["cost"]) == 0, rec)
    check(len(fake.calls("/v1/messages")) == n_msgs, "nothing refused reached the provider")

    # a model with both route types: a stateful request takes the openai one
    n_resp = len(fake.calls("/v1/responses"))
    fake.script(usage="7,2,0")
    r = post(gw, key, {"model": "mixed", "input": "more", "previous_response_id": "resp_1"})
    check(r.status == 200 and len(fake.calls("/v1/responses")) == n_resp + 1 and
          len(fake.calls("/v1/messages")) == n_msgs, r.body)
    charged(gw, r, 7, 2, where="mixed stateful")


def stream_errors(gw, fake, key):
    for model in ("gpt-r", "claude-r"):
        fake.script("stream_error")
        st, hdrs, raw, complete = raw_request(gw, key, {"model": model, "input": "hi", "stream": True},
                                              path="/v1/responses")
        check(st == 200, "%s: %s" % (model, st))
        ev = named_events(raw)
        check(complete, "%s: the body ends cleanly after the error event: %r" % (model, raw[-200:]))
        check(ev and ev[-1][0] == "response.failed" and ev[-1][1]["response"]["status"] == "failed" and
              ev[-1][1]["response"]["error"]["message"], "%s: ends with response.failed: %r" % (model, ev[-1:]))
        rec = record(gw, hdrs["x-request-id"])
        check(rec["error_type"] == "upstream_error" and rec["status"] == 200, "%s: recorded: %r" % (model, rec))


def disconnect(gw, fake, key):
    for model, usage, want in (("gpt-r", "50,20,10", (50, 20, 10, 0)), ("claude-r", "40,20,5,0", (45, 20, 5, 0))):
        fake.script("slow_chunks:30", usage=usage, chunks=20)
        rid = raw_stream_then_drop(gw, key, {"model": model, "input": "long story", "stream": True},
                                   path="/v1/responses")
        rec = record(gw, rid)
        check(rec["client_gone"] and not rec["usage_estimated"], "%s: drained: %r" % (model, rec))
        check((rec["prompt_tokens"], rec["completion_tokens"], rec["cached_tokens"], rec["cache_write_tokens"]) == want,
              "%s: the provider's usage after the client left: %r" % (model, rec))
        check(nano(rec["cost"]) == cost(*want), "%s: charged %s" % (model, rec["cost"]))


def malformed(gw, key):
    cases = [
        ({"model": "gpt-r"}, "input"),
        ({"model": "gpt-r", "input": 5}, "input"),
        ({"model": "gpt-r", "input": [1]}, "input[0]"),
        ({"model": "gpt-r", "input": [{"content": "x"}]}, "input[0]"),
        ({"model": "gpt-r", "input": [{"role": "bot", "content": "x"}]}, "input[0].role"),
        ({"model": "gpt-r", "input": [{"role": "user"}]}, "input[0].content"),
        ({"model": "gpt-r", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "gpt-r", "input": "x", "stream": "yes"}, "stream"),
        ({"model": "gpt-r", "input": "x", "temperature": "hot"}, "temperature"),
        ({"model": "gpt-r", "input": "x", "instructions": ["a"]}, "instructions"),
        ({"model": "gpt-r", "input": "x", "tools": {}}, "tools"),
        ({"model": "gpt-r", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"model": "gpt-r", "input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}},
         "text.format.schema"),
        ({"model": "gpt-r", "input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ({"input": "x"}, "model"),
    ]
    for body, param in cases:
        refused(post(gw, key, body), 400, param, "malformed %r" % body)


def main():
    with gateway_with_fake(workers=1) as (gw, fake):
        adm = Admin(gw)
        oai, anth = both_types(adm, fake)
        gpt = chat_model(adm, "gpt-r", oai, "gpt-up", max_output_tokens=500, context_window=50000, **PRICES)
        claude = chat_model(adm, "claude-r", anth, "claude-up", max_output_tokens=700, **PRICES)
        mixed = adm.add_model("mixed", [route(anth["id"], "claude-up", 1), route(oai["id"], "gpt-up", 2)],
                              capabilities=["chat", "streaming"], **PRICES)
        emb = adm.add_model("emb-r", [(oai["id"], "up-emb")], capabilities=["embeddings"], **PRICES)
        grp = adm.add_group("g", [gpt["id"], claude["id"], mixed["id"], emb["id"]])
        uid = adm.first_user_id()
        q = adm.add_quota(uid, grp["id"], period="month", cost_limit="100")
        key = q["api_key"]
        tight = adm.add_quota(uid, grp["id"], period="month", cost_limit="0.001")["api_key"]

        openai_route(gw, fake, key, tight)
        anthropic_route(gw, fake, key)
        stream_errors(gw, fake, key)
        disconnect(gw, fake, key)
        malformed(gw, key)

        # the capability: refused before anything is held
        n = fake.stats()["requests"]
        r = post(gw, key, {"model": "emb-r", "input": "hi"})
        refused(r, 400, "model", "embeddings-only model", code="model_not_supported")
        check("responses" in r.json["error"]["message"], r.body)
        rec = record(gw, r.headers["x-request-id"])
        check(nano(rec["held_cost"]) == 0 and fake.stats()["requests"] == n, "nothing held or sent: %r" % rec)

        # the books
        def settled():
            u = adm.get("/api/admin/quotas/%d/" % q["id"])["usage"]
            return u if u["in_flight"] == 0 and nano(u["cost_held"]) == 0 else None
        u = harness.wait_for(settled, 30, "quota settled")
        recs = [x for x in audit_records(gw) if x["quota_id"] == q["id"]]
        check(nano(u["cost_used"]) == sum(nano(x["cost"]) for x in recs),
              "cost_used %s = the sum of %d audit records" % (u["cost_used"], len(recs)))
        verify(gw)
    print("ok")


if __name__ == "__main__":
    main()
