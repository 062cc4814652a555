"""test_conformance.py - every object the gateway builds or rewrites on /v1,
checked against the required fields of the published API references
(OpenAI's OpenAPI document, openai/openai-openapi; Anthropic's Messages API
reference), both provider types behind the gateway (tests/tools/fake_upstream).

Covered: the model list and a model; every error body the gateway writes
(401, 404 unknown_url and model_not_found, 405, 400 invalid_json /
invalid_request_error / model_not_supported, 429 insufficient_quota,
upstream errors passed through and translated from Anthropic); chat answers
translated from an Anthropic provider (text, tool call, response_format as
JSON: message.refusal present); translated and rewritten stream chunks (with
and without include_usage); an error in the middle of a stream from either
provider type (an error event, then a cleanly ended body); the rate-limit
headers: each once on an upstream 429 passed through (the provider's replace
the gateway's), x-ratelimit-reset-* written as durations ("1s", "6.5s",
"1m0s"); Responses (/v1/responses) translated from Anthropic: the Response
(text, function call), every event of its streams, response.failed mid-stream,
a refused stateful parameter. REQUIRED below names the reference's `required`
lists.
"""

import http.client
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proxyutil import (Admin, both_types, chat_model, check, gateway_with_fake, named_events,  # noqa: E402
                       raw_request, record, sse_events, v1, verify)

# OpenAI OpenAPI document, components.schemas.*.required
REQUIRED = {
    "ListModelsResponse": ["object", "data"],
    "Model": ["id", "object", "created", "owned_by"],
    "ErrorResponse": ["error"],
    "Error": ["code", "message", "param", "type"],
    "CreateChatCompletionResponse": ["id", "choices", "created", "model", "object"],
    "ChatCompletionChoice": ["finish_reason", "index", "message", "logprobs"],
    "ChatCompletionResponseMessage": ["content", "refusal", "role"],
    "ChatCompletionMessageToolCall": ["id", "type", "function"],
    "ToolCallFunction": ["name", "arguments"],
    "CreateChatCompletionStreamResponse": ["id", "choices", "created", "model", "object"],
    "ChatCompletionStreamChoice": ["delta", "finish_reason", "index"],
    "ChatCompletionMessageToolCallChunk": ["index"],
    "CompletionUsage": ["prompt_tokens", "completion_tokens", "total_tokens"],
    # the Responses API (/v1/responses)
    "Response": ["id", "object", "created_at", "error", "incomplete_details", "instructions", "metadata", "model",
                 "output", "parallel_tool_calls", "temperature", "tool_choice", "tools", "top_p"],
    "ResponseOutputMessage": ["id", "type", "role", "status", "content"],
    "ResponseOutputText": ["type", "text", "annotations"],
    "ResponseFunctionToolCall": ["type", "call_id", "name", "arguments"],
    "ResponseUsage": ["input_tokens", "input_tokens_details", "output_tokens", "output_tokens_details",
                      "total_tokens"],
    "ResponseError": ["code", "message"],
    "response.created": ["type", "sequence_number", "response"],
    "response.in_progress": ["type", "sequence_number", "response"],
    "response.completed": ["type", "sequence_number", "response"],
    "response.incomplete": ["type", "sequence_number", "response"],
    "response.failed": ["type", "sequence_number", "response"],
    "response.output_item.added": ["type", "sequence_number", "output_index", "item"],
    "response.output_item.done": ["type", "sequence_number", "output_index", "item"],
    "response.content_part.added": ["type", "sequence_number", "item_id", "output_index", "content_index", "part"],
    "response.content_part.done": ["type", "sequence_number", "item_id", "output_index", "content_index", "part"],
    "response.output_text.delta": ["type", "sequence_number", "item_id", "output_index", "content_index", "delta",
                                   "logprobs"],
    "response.output_text.done": ["type", "sequence_number", "item_id", "output_index", "content_index", "text",
                                  "logprobs"],
    "response.function_call_arguments.delta": ["type", "sequence_number", "item_id", "output_index", "delta"],
    "response.function_call_arguments.done": ["type", "sequence_number", "item_id", "output_index", "name",
                                              "arguments"],
}
DURATION = re.compile(r"^(\d+ms|(\d+h)?(\d+m)?\d+(\.\d+)?s)$")


def has(obj, schema, where):
    check(isinstance(obj, dict), "%s: %s is not an object: %r" % (where, schema, obj))
    missing = [k for k in REQUIRED[schema] if k not in obj]
    check(not missing, "%s: %s lacks required %s: %r" % (where, schema, missing, obj))


def error_body(body, where):
    j = json.loads(body) if isinstance(body, (bytes, str)) else body
    has(j, "ErrorResponse", where)
    has(j["error"], "Error", where)
    check(isinstance(j["error"]["message"], str) and isinstance(j["error"]["type"], str), "%s: %r" % (where, j))


def chat_completion(j, where):
    has(j, "CreateChatCompletionResponse", where)
    check(j["object"] == "chat.completion", where)
    for c in j["choices"]:
        has(c, "ChatCompletionChoice", where)
        has(c["message"], "ChatCompletionResponseMessage", where)
        for tc in c["message"].get("tool_calls") or []:
            has(tc, "ChatCompletionMessageToolCall", where)
            has(tc["function"], "ToolCallFunction", where)
    if "usage" in j:
        has(j["usage"], "CompletionUsage", where)


def chunk(j, where):
    if "error" in j and "choices" not in j:
        error_body(j, where + " (error event)")
        return
    has(j, "CreateChatCompletionStreamResponse", where)
    check(j["object"] == "chat.completion.chunk", where)
    for c in j["choices"]:
        has(c, "ChatCompletionStreamChoice", where)
        for tc in c["delta"].get("tool_calls") or []:
            has(tc, "ChatCompletionMessageToolCallChunk", where)
    if j.get("usage") is not None:
        has(j["usage"], "CompletionUsage", where)


def response(j, where):
    has(j, "Response", where)
    check(j["object"] == "response", where)
    for o in j["output"]:
        if o["type"] == "message":
            has(o, "ResponseOutputMessage", where)
            for p in o["content"]:
                if p["type"] == "output_text":
                    has(p, "ResponseOutputText", where)
        else:
            check(o["type"] == "function_call", "%s: an output item of type %s" % (where, o["type"]))
            has(o, "ResponseFunctionToolCall", where)
    if j.get("usage") is not None:
        has(j["usage"], "ResponseUsage", where)
        check("cached_tokens" in j["usage"]["input_tokens_details"] and
              "reasoning_tokens" in j["usage"]["output_tokens_details"], "%s: usage details %r" % (where, j["usage"]))
    if j.get("error") is not None:
        has(j["error"], "ResponseError", where)


def response_events(raw, where):
    """Every event of a Responses stream: its schema, the Response in it."""
    ev = named_events(raw)
    for i, (name, data) in enumerate(ev):
        w = "%s event %d (%s)" % (where, i, name)
        check(name == data.get("type") and name in REQUIRED, "%s: a known event type" % w)
        has(data, name, w)
        if "response" in data:
            response(data["response"], w)
        if "item" in data:
            response({"object": "response", "output": [data["item"]], **{k: None for k in REQUIRED["Response"]
                                                                          if k not in ("object", "output")}}, w)
    return ev


def stream(raw, where):
    ev = sse_events(raw)
    for i, e in enumerate(ev):
        if e != "[DONE]":
            chunk(json.loads(e), "%s event %d" % (where, i))
    return ev


def all_headers(gw, key, body):
    """POST /v1/chat/completions; every header line as sent (duplicates kept)."""
    c = http.client.HTTPConnection(gw.host, gw.port, timeout=20)
    try:
        c.request("POST", "/v1/chat/completions", json.dumps(body),
                  {"Authorization": "Bearer " + key, "Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        return r.status, [(k.lower(), v) for k, v in r.getheaders()]
    finally:
        c.close()


MSGS = [{"role": "user", "content": "hi"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]


def main():
    with gateway_with_fake(workers=1) as (gw, fake):
        adm = Admin(gw)
        oai, anth = both_types(adm, fake)
        prices = {"input_price": "1", "output_price": "2"}
        gpt = chat_model(adm, "gpt", oai, "up-gpt", **prices)
        claude = chat_model(adm, "claude", anth, "claude-up", **prices)
        emb = adm.add_model("emb", [(oai["id"], "up-emb")], capabilities=["embeddings"], **prices)
        grp = adm.add_group("g", [gpt["id"], claude["id"], emb["id"]])
        uid = adm.first_user_id()
        key = adm.add_quota(uid, grp["id"], period="month", cost_limit="100", rpm=1000, tpm=10000000)["api_key"]
        broke = adm.add_quota(uid, grp["id"], period="month", cost_limit="0.000000001")["api_key"]

        # ---- models ----
        r = v1(gw, key, "GET", "/models")
        has(r.json, "ListModelsResponse", "GET /v1/models")
        for m in r.json["data"]:
            has(m, "Model", "GET /v1/models data")
        has(v1(gw, key, "GET", "/models/gpt").json, "Model", "GET /v1/models/gpt")

        # ---- every error body the gateway writes ----
        errors = [
            ("401", v1(gw, "sk-nope", "POST", "/chat/completions", {"model": "gpt", "messages": MSGS})),
            ("404 url", v1(gw, key, "POST", "/nothing", {})),
            ("404 model", v1(gw, key, "POST", "/chat/completions", {"model": "nope", "messages": MSGS})),
            ("404 models/id", v1(gw, key, "GET", "/models/nope")),
            ("405", v1(gw, key, "GET", "/chat/completions")),
            ("400 json", v1(gw, key, "POST", "/chat/completions", "{nope")),
            ("400 param", v1(gw, key, "POST", "/chat/completions", {"model": "gpt"})),
            ("400 capability", v1(gw, key, "POST", "/embeddings", {"model": "gpt", "input": "x"})),
            ("400 anthropic param", v1(gw, key, "POST", "/chat/completions",
                                       {"model": "claude", "messages": MSGS, "logprobs": True})),
            ("429 quota", v1(gw, broke, "POST", "/chat/completions", {"model": "gpt", "messages": MSGS})),
        ]
        fake.script("status:500")
        errors.append(("502 upstream", v1(gw, key, "POST", "/chat/completions", {"model": "gpt", "messages": MSGS})))
        fake.script("status:400")
        errors.append(("400 anthropic error", v1(gw, key, "POST", "/chat/completions",
                                                 {"model": "claude", "messages": MSGS})))
        fake.script("status:529")
        errors.append(("529 anthropic", v1(gw, key, "POST", "/chat/completions",
                                           {"model": "claude", "messages": MSGS})))
        for name, r in errors:
            check(r.status >= 400, "%s: %s %s" % (name, r.status, r.body))
            error_body(r.body, name)

        # ---- chat translated from Anthropic ----
        r = v1(gw, key, "POST", "/chat/completions", {"model": "claude", "messages": MSGS})
        check(r.status == 200, r.body)
        chat_completion(r.json, "anthropic text")
        check(r.json["choices"][0]["message"]["refusal"] is None, "message.refusal: %s" % r.body)
        fake.script("tool_use")
        r = v1(gw, key, "POST", "/chat/completions", {"model": "claude", "messages": MSGS, "tools": TOOLS})
        check(r.status == 200, r.body)
        chat_completion(r.json, "anthropic tool call")
        check(r.json["choices"][0]["finish_reason"] == "tool_calls", r.body)

        # ---- streams: translated (Anthropic) and rewritten (OpenAI, usage removed or kept) ----
        for model in ("claude", "gpt"):
            for extra in ({}, {"stream_options": {"include_usage": True}}):
                r = v1(gw, key, "POST", "/chat/completions", dict({"model": model, "messages": MSGS,
                                                                  "stream": True}, **extra))
                check(r.status == 200, r.body)
                ev = stream(r.body, "%s stream %s" % (model, extra))
                check(ev[-1] == "[DONE]", ev)
        fake.script("tool_use")
        r = v1(gw, key, "POST", "/chat/completions", {"model": "claude", "messages": MSGS, "tools": TOOLS,
                                                     "stream": True})
        stream(r.body, "anthropic tool stream")

        # ---- an error in the middle of a stream, both provider types ----
        for model in ("claude", "gpt"):
            fake.script("stream_error")
            st, hdrs, raw, complete = raw_request(gw, key, {"model": model, "messages": MSGS, "stream": True})
            check(st == 200, "%s: %s" % (model, st))
            ev = stream(raw, "%s mid-stream error" % model)
            check(complete, "%s: the body ends cleanly after the error event: %r" % (model, raw[-200:]))
            check(ev and "error" in json.loads(ev[-1]), "%s: the last event is the error: %r" % (model, ev))
            rec = record(gw, hdrs["x-request-id"])
            check(rec["error_type"] == "upstream_error", "%s: recorded with its type: %s" % (model, rec))

        # ---- /v1/responses translated from Anthropic: JSON, streams, an error mid-stream ----
        rtools = [{"type": "function", "name": "get_weather", "parameters": TOOLS[0]["function"]["parameters"]}]
        for scen, extra in (("ok", {}), ("tool_use", {"tools": rtools})):
            fake.script(scen)
            r = v1(gw, key, "POST", "/responses", dict({"model": "claude", "input": "hi"}, **extra))
            check(r.status == 200, r.body)
            response(r.json, "anthropic response %s" % scen)
            fake.script(scen)
            r = v1(gw, key, "POST", "/responses", dict({"model": "claude", "input": "hi", "stream": True}, **extra))
            check(r.status == 200, r.body)
            response_events(r.body, "anthropic response stream %s" % scen)
        fake.script("stream_error")
        st, hdrs, raw, complete = raw_request(gw, key, {"model": "claude", "input": "hi", "stream": True},
                                              path="/v1/responses")
        ev = response_events(raw, "anthropic response stream error")
        check(st == 200 and complete and ev[-1][0] == "response.failed", "%s %s %r" % (st, complete, ev[-1:]))
        r = v1(gw, key, "POST", "/responses", {"model": "claude", "input": "hi", "store": True})
        check(r.status == 400, r.body)
        error_body(r.body, "400 responses stateful param")

        # ---- rate-limit headers ----
        st, hl = all_headers(gw, key, {"model": "gpt", "messages": MSGS})
        check(st == 200, st)
        for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"):
            vals = [v for k, v in hl if k == name]
            check(len(vals) == 1 and DURATION.match(vals[0]), "%s as a duration: %r" % (name, vals))
        fake.script("rate_limit")
        st, hl = all_headers(gw, key, {"model": "gpt", "messages": MSGS})
        check(st == 429, st)
        names = [k for k, _ in hl if k.startswith("x-ratelimit-") or k == "retry-after"]
        check(len(names) == len(set(names)), "each rate-limit header once: %r" % hl)
        got = dict(hl)
        check(got.get("x-ratelimit-limit-requests") == "60" and got.get("retry-after") == "1",
              "the provider's values on its 429: %r" % hl)
        verify(gw)
    print("ok")


if __name__ == "__main__":
    main()
