"""test_proxy.py - the /v1 proxy end to end: a real tokenauditd (harness.py)
in front of the real fake upstream (tests/tools/fake_upstream_main.c).

Covers: chat non-streaming and streaming (usage chunk kept or removed),
completions, embeddings, models list and retrieve, usage, the error paths
(401, 403, 404, 400 naming the param, upstream 429/5xx pass-through, 502 on a
dead provider, 504 on a slow one, failover to the next route), and that one
client call is exactly one upstream call.

Each behaviour is its own test case against one gateway (setUpClass), so the
first failure does not hide the others; tearDownClass stops the gateway and
asserts a clean exit.
"""

import http.client
import json
import os
import sys
import contextlib
import unittest

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


MSGS = [{"role": "user", "content": "Say hello"}]


class Proxy(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stack = contextlib.ExitStack()
        try:
            # a port with nobody behind it
            dead_port = harness.free_port()
            cls.gw, cls.fake = cls.stack.enter_context(gateway_with_fake(workers=2))
            cls.key = setup_tenant(cls.gw, cls.fake, dead_port)
        except BaseException:
            cls.stack.__exit__(*sys.exc_info())
            raise

    @classmethod
    def tearDownClass(cls):
        cls.stack.close()  # stops the fake, then the gateway (exit 0, no sanitizer report)

    def chat(self, **extra):
        body = {"model": "gpt-test", "messages": MSGS}
        body.update(extra)
        return v1(self.gw, self.key, "POST", "/chat/completions", body)

    # ---- chat ----------------------------------------------------------------
    def test_chat_non_streaming(self):
        gw, fake, key = self.gw, self.fake, self.key
        before = len(fake.lines("POST /v1/chat/completions"))
        # (client headers are not forwarded upstream: the fake is scripted through the body)
        r = v1(gw, key, "POST", "/chat/completions", {"model": "gpt-test", "messages": MSGS, "fake_usage": "12,5,4"})
        check(r.status == 200, "chat: %s %s" % (r.status, r.body))
        check(r.json["object"] == "chat.completion", r.body)
        check(r.json["usage"]["prompt_tokens"] == 12 and r.json["usage"]["prompt_tokens_details"]["cached_tokens"] == 4,
              r.body)
        check(r.json["model"] == "up-model", "the upstream saw the mapped name: %s" % r.body)
        check(r.request_id or r.headers.get("x-request-id"), "x-request-id")
        calls = fake.lines("POST /v1/chat/completions")
        check(len(calls) == before + 1, "one upstream call per request: %r" % calls[before:])
        check("auth=7777" in calls[-1], "the provider key went upstream, not the client's: %s" % calls[-1])

    def test_chat_streaming_usage_removed(self):
        # the client did not ask for usage
        r = self.chat(stream=True, fake_chunks=4, fake_usage="9,4,0")
        check(r.status == 200, "stream: %s %s" % (r.status, r.body))
        check(r.headers.get("content-type", "").startswith("text/event-stream"), r.headers)
        ev = sse_events(r.body)
        check(ev[-1] == "[DONE]", ev)
        check(not any('"usage"' in e for e in ev), "usage removed when not asked for: %r" % ev)
        text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in ev[:-1]
                       if json.loads(e)["choices"])
        check(text == "tok0 tok1 tok2 tok3 ", text)

    def test_chat_streaming_include_usage(self):
        r = self.chat(stream=True, stream_options={"include_usage": True}, fake_chunks=3, fake_usage="9,3,2")
        ev = sse_events(r.body)
        check(ev[-1] == "[DONE]", ev)
        usage = [json.loads(e) for e in ev[:-1] if json.loads(e).get("usage")]
        check(len(usage) == 1 and usage[0]["usage"]["completion_tokens"] == 3, ev)

    # ---- other endpoints -------------------------------------------------------
    def test_completions(self):
        r = v1(self.gw, self.key, "POST", "/completions", {"model": "gpt-test", "prompt": "Once"})
        check(r.status == 200 and r.json["object"] == "text_completion", r.body)

    def test_embeddings(self):
        r = v1(self.gw, self.key, "POST", "/embeddings", {"model": "emb-test", "input": ["a", "b"]})
        check(r.status == 200 and len(r.json["data"]) == 2, r.body)

    def test_models(self):
        gw, key = self.gw, self.key
        r = v1(gw, key, "GET", "/models")
        check(r.status == 200 and r.json["object"] == "list", r.body)
        names = sorted(m["id"] for m in r.json["data"])
        check(names == ["dead-test", "emb-test", "failover-test", "gpt-test"], names)
        r = v1(gw, key, "GET", "/models/gpt-test")
        check(r.status == 200 and r.json["id"] == "gpt-test", r.body)
        r = v1(gw, key, "GET", "/models/not-in-group")
        check(r.status == 404, r.body)

    def test_usage(self):
        r = v1(self.gw, self.key, "GET", "/usage")
        check(r.status == 200 and r.json["cost_limit"] == "100", r.body)

    # ---- client errors -------------------------------------------------------------
    def test_unauthenticated(self):
        r = v1(self.gw, "sk-wrong-key-123456", "POST", "/chat/completions", {"model": "gpt-test", "messages": MSGS})
        check(r.status == 401 and r.json["error"]["code"] == "invalid_api_key", r.body)
        r = self.gw.http("GET", "/v1/models")
        check(r.status == 401, r.body)

    def test_unknown_and_forbidden_model(self):
        r = self.chat(model="nope")
        check(r.status == 404 and r.json["error"]["code"] == "model_not_found", r.body)
        r = self.chat(model="not-in-group")
        check(r.status == 403 and r.json["error"]["code"] == "model_not_allowed", r.body)

    def test_invalid_params(self):
        r = v1(self.gw, self.key, "POST", "/chat/completions", {"model": "gpt-test"})
        check(r.status == 400 and r.json["error"]["param"] == "messages", r.body)
        r = self.chat(max_tokens=-1)
        check(r.status == 400 and r.json["error"]["param"] == "max_tokens", r.body)
        r = self.gw.http("POST", "/v1/chat/completions", raw=b"{not json", token=self.key)
        check(r.status == 400 and r.json["error"]["type"] == "invalid_request_error", r.body)

    def test_wrong_method(self):
        r = v1(self.gw, self.key, "GET", "/chat/completions")
        check(r.status == 405, r.body)

    # ---- upstream failures -----------------------------------------------------------
    def test_upstream_errors_pass_through(self):
        # in OpenAI's shape
        r = self.chat(fake_scenario="rate_limit")
        check(r.status == 429 and r.json["error"]["code"] == "rate_limit_exceeded", r.body)
        check(r.headers.get("retry-after") == "1", r.headers)
        r = self.chat(fake_scenario="status:500")
        check(r.status == 502 and r.json["error"]["type"] == "upstream_error", r.body)
        r = self.chat(fake_scenario="status:400")
        check(r.status == 400, r.body)

    def test_dead_provider_and_failover(self):
        # dead provider: 502; the failover model reaches the live route
        r = self.chat(model="dead-test")
        check(r.status == 502 and r.json["error"]["type"] == "upstream_error", r.body)
        r = self.chat(model="failover-test")
        check(r.status == 200 and r.json["model"] == "up-fo", r.body)

    def test_slow_provider_times_out(self):
        # slower than the provider's timeout (2 s): 504
        r = self.chat(fake_scenario="slow_first_byte:5000")
        check(r.status == 504, r.body)

    def test_cut_stream_reaches_client_cut(self):
        # a stream cut by the provider reaches the client cut (no [DONE])
        try:
            r = self.chat(stream=True, fake_scenario="cut_stream:2")
            check(b"[DONE]" not in r.body, r.body)
        except http.client.IncompleteRead:
            pass

    def test_keep_alive_one_upstream_call_each(self):
        # keep-alive client connection, several requests, one upstream call each
        gw, fake, key = self.gw, self.fake, self.key
        before = len(fake.lines("scenario=ka"))
        conn = gw.connection()
        try:
            for _ in range(5):
                r = v1(gw, key, "POST", "/chat/completions", {"model": "gpt-test", "messages": MSGS,
                                                              "fake_scenario": "ka"}, conn=conn)
                check(r.status == 200, r.body)
        finally:
            conn.close()
        check(len(fake.lines("scenario=ka")) - before == 5, "5 calls, 5 upstream requests")


if __name__ == "__main__":
    unittest.main(verbosity=2)
