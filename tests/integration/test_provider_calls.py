"""test_provider_calls.py - POST /api/admin/providers/{id}/test/ and .../sync-models/
against a real tokenauditd (harness.py) and real upstreams: the fake upstream
(tests/tools/fake_upstream_main.c, GET /v1/models lists --models) and, for the
shapes the fake cannot script (Anthropic headers, provider errors, malformed
lists, slow providers), a small stdlib HTTP server in this process.

Covers: test ok / status / latency_ms / models_count; the provider key goes
upstream (fake log) and never into the gateway log; sync creates exactly the
missing models (one route to the provider, chat+streaming, unpriced) and a
second sync reports them as existing; an unpriced synced model is refused
under a cost limit and served without one; unreachable provider -> ok false /
502; provider 401 -> ok false with the provider's message / 502; malformed
list; timeout -> ok false / 504; Anthropic's endpoint and headers; 404, 405,
403 for a normal user; a client that leaves while the call runs.

Sync keeps models current (sync_updates, the fake's scripted /v1/models):
context window and max output taken from the fields providers report them in
(Groq's, OpenRouter's, vLLM's names) for the models routed to the provider and
for the ones it creates, "updated" naming exactly the models that changed; a
model the list no longer has is marked (route upstream_missing) and listed in
"missing", and unmarked when it comes back; prices an admin set, and
prices_set, are never touched (a `pricing` object in the list is not read);
Anthropic's list read page by page (has_more / after_id, the fake capping its
pages at 2) with max_input_tokens / max_tokens.
"""

import http.client
import http.server
import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from proxyutil import check, gateway_with_fake  # noqa: E402

KEY = "sk-upstream-secret-7777"
ANTH_KEY = "sk-ant-secret-key-4242"


class ScriptedProvider:
    """A scripted upstream: the first path segment picks the behaviour."""

    def __init__(self):
        self.seen = []  # (path, headers dict lower-cased)
        self.lock = threading.Lock()
        provider = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def send(self, status, body):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:
                    pass

            def do_GET(self):
                with provider.lock:
                    provider.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                kind = self.path.split("/")[1]
                if kind == "anth":
                    self.send(200, {"data": [{"type": "model", "id": "claude-a", "display_name": "A"},
                                             {"type": "model", "id": "claude-b", "display_name": "B"}],
                                    "has_more": False, "first_id": "claude-a", "last_id": "claude-b"})
                elif kind == "denied":
                    self.send(401, {"error": {"message": "Incorrect API key provided",
                                              "type": "invalid_request_error"}})
                elif kind == "garbage":
                    self.send(200, b"<html>not json</html>")
                elif kind == "nodata":
                    self.send(200, {"object": "list"})
                elif kind == "slow":
                    time.sleep(3)
                    self.send(200, {"data": [{"id": "slow-model"}]})
                else:
                    self.send(404, {"error": {"message": "no such path"}})

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def url(self, kind):
        return "http://127.0.0.1:%d/%s" % (self.port, kind)

    def requests(self, kind):
        with self.lock:
            return [s for s in self.seen if s[0].split("/")[1] == kind]

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


class Api:
    def __init__(self, gw):
        self.gw = gw
        self.tok = gw.login()

    def call(self, method, path, body=None, token=None, want=None, timeout=30):
        r = self.gw.http(method, path, body, token=token or self.tok, timeout=timeout)
        if want is not None:
            check(r.status == want, "%s %s: want %s, got %s %s" % (method, path, want, r.status, r.body))
        return r

    def provider(self, name, base_url, key=KEY, ptype="openai", **extra):
        body = dict({"name": name, "type": ptype, "base_url": base_url, "api_key": key}, **extra)
        return self.call("POST", "/api/admin/providers/", body, want=201).json

    def test(self, pid, **kw):
        return self.call("POST", "/api/admin/providers/%d/test/" % pid, **kw)

    def sync(self, pid, **kw):
        return self.call("POST", "/api/admin/providers/%d/sync-models/" % pid, **kw)

    def models(self, **q):
        qs = "&".join("%s=%s" % kv for kv in q.items())
        return self.call("GET", "/api/admin/models/?page_size=500&" + qs, want=200).json["results"]


def run(gw, fake, provider, dead_port):
    api = Api(gw)
    prov = api.provider("fake", fake.url, timeout_s=5)

    # --- test: ok ------------------------------------------------------------------
    before = len(fake.lines("GET /v1/models"))
    r = api.test(prov["id"], want=200).json
    check(r["ok"] is True and r["status"] == 200 and r["error"] is None, r)
    check(r["models_count"] == 3, r)
    check(isinstance(r["latency_ms"], int) and r["latency_ms"] >= 0, r)
    calls = fake.lines("GET /v1/models")
    check(len(calls) == before + 1, "one upstream call per test: %r" % calls[before:])
    check("auth=7777" in calls[-1], "the provider key went upstream: %s" % calls[-1])
    # trailing slash optional, like every /api path
    r = api.call("POST", "/api/admin/providers/%d/test" % prov["id"], want=200).json
    check(r["ok"] is True, r)

    # --- sync: creates exactly the missing ones --------------------------------------
    pre = api.call("POST", "/api/admin/models/", {
        "name": "fake-model", "input_price": "1", "output_price": "2",
        "routes": [{"provider_id": prov["id"], "upstream_name": "fake-model", "priority": 1}]}, want=201).json
    n_models = len(api.models())
    r = api.sync(prov["id"], want=200).json
    check(sorted(r["created"]) == ["gpt-4o-mini", "text-embedding-3-small"], r)
    check(r["existing"] == ["fake-model"], r)
    check(r.get("skipped", []) == [], r)
    check(len(api.models()) == n_models + 2, "two models more")
    mine = {m["name"]: m for m in api.models(provider_id=prov["id"])}
    for name in ("gpt-4o-mini", "text-embedding-3-small"):
        m = mine[name]
        check(len(m["routes"]) == 1 and m["routes"][0]["provider_id"] == prov["id"] and
              m["routes"][0]["upstream_name"] == name, m)
        check(sorted(m["capabilities"]) == ["chat", "streaming"], m)
        check(m.get("has_prices") in (None, False), "synced models are unpriced: %s" % m)
        check(m["is_active"] is True, m)
    check(mine["fake-model"]["id"] == pre["id"] and mine["fake-model"]["input_price"] == "1",
          "the existing model is left alone: %s" % mine["fake-model"])

    # second sync: nothing new
    r = api.sync(prov["id"], want=200).json
    check(r["created"] == [], r)
    check(sorted(r["existing"]) == ["fake-model", "gpt-4o-mini", "text-embedding-3-small"], r)
    check(len(api.models()) == n_models + 2, "no model created twice")

    # --- an unpriced synced model: refused under a cost limit, served without one -----
    synced = mine["gpt-4o-mini"]
    grp = api.call("POST", "/api/admin/groups/", {"name": "synced", "model_ids": [synced["id"]]}, want=201).json
    admin_id = api.call("GET", "/api/auth/me/", want=200).json["id"]
    limited = api.call("POST", "/api/admin/quotas/", {"user_id": admin_id, "group_id": grp["id"], "period": "month",
                                                      "cost_limit": "10"}, want=201).json["api_key"]
    free = api.call("POST", "/api/admin/quotas/", {"user_id": admin_id, "group_id": grp["id"], "period": "month"},
                    want=201).json["api_key"]
    msgs = [{"role": "user", "content": "hi"}]
    before = len(fake.lines("POST /v1/chat/completions"))
    r = gw.http("POST", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": msgs}, token=limited)
    check(r.status == 403 and r.json["error"]["code"] == "model_not_allowed", "fail closed: %s %s" % (r.status, r.body))
    check(len(fake.lines("POST /v1/chat/completions")) == before, "refused before any upstream call")
    r = gw.http("POST", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": msgs}, token=free, timeout=20)
    check(r.status == 200 and r.json["model"] == "gpt-4o-mini", "served by the synced route: %s %s" % (r.status, r.body))

    # --- unreachable provider ----------------------------------------------------------
    dead = api.provider("dead", "http://127.0.0.1:%d/v1" % dead_port, key="sk-dead-000000000")
    n_models = len(api.models())
    r = api.test(dead["id"], want=200).json
    check(r["ok"] is False and r["status"] is None and r["models_count"] is None, r)
    check(isinstance(r["error"], str) and "connect" in r["error"], r)
    check(isinstance(r["latency_ms"], int), r)
    r = api.sync(dead["id"], want=502)
    check(r.json["error"]["type"] == "upstream_error" and "connect" in r.json["error"]["message"], r.body)
    check(len(api.models()) == n_models, "nothing created")

    # --- provider answers 401 ----------------------------------------------------------------
    denied = api.provider("denied", provider.url("denied"))
    r = api.test(denied["id"], want=200).json
    check(r["ok"] is False and r["status"] == 401, r)
    check("401" in r["error"] and "Incorrect API key provided" in r["error"], r)
    r = api.sync(denied["id"], want=502)
    check(r.json["error"]["type"] == "upstream_error" and "401" in r.json["error"]["message"], r.body)
    path, hdrs = provider.requests("denied")[-1]
    check(path == "/denied/models" and hdrs.get("authorization") == "Bearer " + KEY, (path, hdrs))

    # --- malformed lists ------------------------------------------------------------------------
    for kind in ("garbage", "nodata"):
        p = api.provider(kind, provider.url(kind))
        r = api.test(p["id"], want=200).json
        check(r["ok"] is False and r["status"] == 200 and r["models_count"] is None and r["error"], r)
        r = api.sync(p["id"], want=502)
        check(r.json["error"]["code"] == "upstream_invalid_response", r.body)

    # --- slower than the provider's timeout ------------------------------------------------------
    slow = api.provider("slow", provider.url("slow"), timeout_s=1)
    r = api.test(slow["id"], want=200).json
    check(r["ok"] is False and "timeout" in r["error"], r)
    r = api.sync(slow["id"], want=504)
    check(r.json["error"]["code"] == "upstream_timeout", r.body)
    check(not [m for m in api.models() if m["name"] == "slow-model"], "nothing created on a timeout")

    # --- anthropic: /v1/models with x-api-key and anthropic-version --------------------------------
    anth = api.provider("anth", provider.url("anth"), key=ANTH_KEY, ptype="anthropic")
    r = api.test(anth["id"], want=200).json
    check(r["ok"] is True and r["models_count"] == 2, r)
    path, hdrs = provider.requests("anth")[-1]
    check(path == "/anth/v1/models?limit=1000", path)
    check(hdrs.get("x-api-key") == ANTH_KEY and hdrs.get("anthropic-version") == "2023-06-01", hdrs)
    check("authorization" not in hdrs, "no bearer header for anthropic: %s" % hdrs)
    r = api.sync(anth["id"], want=200).json
    check(r["created"] == ["claude-a", "claude-b"] and r["existing"] == [], r)

    sync_updates(api, fake, prov)

    # --- errors: 404, 405, 403 -------------------------------------------------------------------
    r = api.test(999999, want=404)
    check(r.json["error"]["type"] == "not_found_error", r.body)
    api.sync(999999, want=404)
    r = api.call("GET", "/api/admin/providers/%d/test/" % prov["id"], want=405)
    check("POST" in r.headers.get("allow", ""), r.headers)
    r = gw.http("POST", "/api/admin/providers/%d/test/" % prov["id"])
    check(r.status == 401, "no token: %s" % r.status)
    api.call("POST", "/api/admin/users/", {"email": "joe@example.com", "password": "joe-password-1"}, want=201)
    joe = gw.login("joe@example.com", "joe-password-1")
    before = len(fake.lines("GET /v1/models"))
    api.test(prov["id"], token=joe, want=403)
    api.sync(prov["id"], token=joe, want=403)
    check(len(fake.lines("GET /v1/models")) == before, "a refused caller causes no upstream call")

    # --- a client that leaves while the call runs ---------------------------------------------------
    seen = len(provider.requests("slow"))
    for path in ("/api/admin/providers/%d/test/" % slow["id"],
                 "/api/admin/providers/%d/sync-models/" % slow["id"]):
        s = socket.create_connection((gw.host, gw.port))
        s.sendall(("POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 0\r\n\r\n"
                   % (path, api.tok)).encode())
        harness.wait_for(lambda: len(provider.requests("slow")) > seen, 10, "the call reached the provider")
        seen = len(provider.requests("slow"))
        s.close()
    # the workers keep serving, and the call's end (cancelled or timed out) broke nothing
    for _ in range(4):
        r = api.test(prov["id"], want=200).json
        check(r["ok"] is True, r)
    check(not [m for m in api.models() if m["name"] == "slow-model"], "nothing created")

    # --- secrets never reach the log ------------------------------------------------------------------
    log = gw.log()
    for secret in (KEY, ANTH_KEY):
        check(secret not in log, "a provider key is in the gateway log")


def script_models(fake, data, page_size=0):
    c = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    try:
        c.request("POST", "/_fake/models", json.dumps({"data": data, "page_size": page_size}),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        check(r.status == 200, "scripting the fake's models: %s %s" % (r.status, r.read()))
    finally:
        c.close()


def sync_updates(api, fake, prov):
    pid = prov["id"]
    by_name = lambda: {m["name"]: m for m in api.models()}  # noqa: E731
    # an admin sets a price and a limit on a synced model
    gm = by_name()["gpt-4o-mini"]
    api.call("PATCH", "/api/admin/models/%d/" % gm["id"], {"input_price": "0.5", "max_output_tokens": 100}, want=200)
    before = by_name()
    script_models(fake, [
        # Groq's names, and an OpenRouter price list (never read)
        {"id": "gpt-4o-mini", "object": "model", "context_window": 128000, "max_completion_tokens": 16384,
         "pricing": {"prompt": "0.0000009", "completion": "0.000001"}},
        # OpenRouter's
        {"id": "fake-model", "context_length": 32000, "top_provider": {"max_completion_tokens": 4096}},
        # vLLM's; not a model yet
        {"id": "new-model", "max_model_len": 8192},
        # nonsense limits are ignored
        {"id": "odd-model", "context_window": -5, "max_output_tokens": 1.5},
    ])
    r = api.sync(pid, want=200).json
    check(sorted(r["created"]) == ["new-model", "odd-model"], r)
    check(sorted(r["updated"]) == ["fake-model", "gpt-4o-mini"], r)
    check(sorted(r["existing"]) == ["fake-model", "gpt-4o-mini"], r)
    check(r["missing"] == ["text-embedding-3-small"], r)
    check(r["skipped"] == [], r)
    after = by_name()
    g = after["gpt-4o-mini"]
    check(g["context_window"] == 128000 and g["max_output_tokens"] == 16384, g)
    for name in ("gpt-4o-mini", "fake-model"):
        for k in ("input_price", "output_price", "cache_read_price", "cache_write_price", "prices_set"):
            check(after[name][k] == before[name][k], "sync touched %s of %s: %s -> %s"
                  % (k, name, before[name][k], after[name][k]))
    check(g["input_price"] == "0.5" and g["prices_set"] == ["input_price"], g)
    f = after["fake-model"]
    check(f["context_window"] == 32000 and f["max_output_tokens"] == 4096, f)
    check(f["input_price"] == "1" and f["output_price"] == "2", f)
    check(f["routes"][0]["upstream_missing"] is False, f)
    t = after["text-embedding-3-small"]
    check(t["routes"][0]["upstream_missing"] is True and t["is_active"] is True, t)
    check(t["updated_at"] is not None, t)
    n = after["new-model"]
    check(n["context_window"] == 8192 and n["max_output_tokens"] in (None, 0), n)
    check(n["routes"] == [{"provider_id": pid, "upstream_name": "new-model", "priority": 0, "weight": 1,
                           "upstream_missing": False}], n)
    check(n["prices_set"] == [] and n["input_price"] is None, n)
    o = after["odd-model"]
    check(o["context_window"] in (None, 0) and o["max_output_tokens"] in (None, 0), o)

    # the same list again: nothing to update, the missing one still missing
    r = api.sync(pid, want=200).json
    check(r["created"] == [] and r["updated"] == [] and r["missing"] == ["text-embedding-3-small"], r)
    check(by_name()["gpt-4o-mini"]["updated_at"] == g["updated_at"], "an unchanged model is not written")

    # it comes back: unmarked, "updated"
    script_models(fake, [{"id": "gpt-4o-mini", "context_window": 128000, "max_completion_tokens": 16384},
                         {"id": "fake-model"}, {"id": "new-model"}, {"id": "odd-model"},
                         {"id": "text-embedding-3-small"}])
    r = api.sync(pid, want=200).json
    check(r["updated"] == ["text-embedding-3-small"] and r["missing"] == [], r)
    check(by_name()["text-embedding-3-small"]["routes"][0]["upstream_missing"] is False, "unmarked")
    check(by_name()["fake-model"]["context_window"] == 32000, "a limit the list stops reporting is kept")

    # --- Anthropic's list, page by page --------------------------------------------------------------
    anth = api.provider("anth-paged", "http://127.0.0.1:%d" % fake.port, key=ANTH_KEY, ptype="anthropic")
    script_models(fake, [{"type": "model", "id": "claude-%d" % i, "display_name": "C%d" % i,
                          "max_input_tokens": 200000, "max_tokens": 64000 + i} for i in range(5)], page_size=2)
    seen = len(fake.lines("GET /v1/models"))
    r = api.sync(anth["id"], want=200).json
    check(r["created"] == ["claude-%d" % i for i in range(5)], r)
    calls = fake.lines("GET /v1/models")[seen:]
    queries = [l.split("query=")[1] if "query=" in l else "" for l in calls]
    check(queries == ["limit=1000", "limit=1000&after_id=claude-1", "limit=1000&after_id=claude-3"],
          "three pages, each after the last: %r" % queries)
    c4 = by_name()["claude-4"]
    check(c4["context_window"] == 200000 and c4["max_output_tokens"] == 64004, c4)
    script_models(fake, None)


def main():
    dead_port = harness.free_port()
    provider = ScriptedProvider()
    try:
        with gateway_with_fake(workers=2) as (gw, fake):
            run(gw, fake, provider, dead_port)
    finally:
        provider.stop()
    print("ok")


if __name__ == "__main__":
    main()
