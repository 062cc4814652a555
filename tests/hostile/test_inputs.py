"""test_inputs.py - hostile inputs.

1. Malformed JSON on every route that takes a body (from `tokenaudit openapi
   --json`): not JSON, deep nesting, a non-object, duplicate keys, invalid
   UTF-8, an escaped NUL, a lone surrogate, wrong types, numbers out of range,
   a body over max_body_size -> the exact 400 (413 for the size), nothing
   written, nothing sent upstream, nothing charged.
2. CR, LF and NUL in every stored string that reaches a header, a metrics
   label or a file (provider name, base_url, api_key; model name and
   upstream_name; group name; user email and name), on create and on update
   -> 400 naming the field, nothing stored.
3. Credentials in a provider base_url: refused (400 naming base_url), or kept
   out of every answer and of the dump like the api_key.
4. /metrics stays well-formed Prometheus text whatever model names clients
   send (quotes, backslashes, CR, LF, braces).
5. Audit CSV export: no cell begins with =, +, - or @ (formula injection),
   whatever model name a client sent.
6. Bytes that are not UTF-8 in a query string of every admin list -> 400 naming
   the parameter, or 200 with valid JSON that leaves it out of the links;
   never a 500.
7. Oversized headers (one huge value, very many headers, a huge request line)
   -> refused, the connection closed, the server serving the next client.
"""

import csv
import io
import itertools
import json
import os
import re
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hostile import (AUDIT, Cases, Snapshot, check, excerpt, expect, finish_gateway, make_user,  # noqa: E402
                     raw_exchange)
import harness  # noqa: E402  (on the path once hostile is imported)
import proxyutil  # noqa: E402
from proxyutil import Tenant, gateway_with_fake  # noqa: E402

MAX_BODY = 256 * 1024
INJECT = {"crlf": "x\r\nX-Injected: 1", "lf": "x\nX-Injected: 1", "cr": "x\rX-Injected: 1", "nul": "x\u0000y"}


def openapi_routes():
    """(method, path, takes a body) of every route in the server's OpenAPI document."""
    doc = json.loads(harness.run_cli("openapi", "--json").stdout)
    return [(m.upper(), p, "requestBody" in op) for p, item in doc["paths"].items() for m, op in item.items()
            if m in ("get", "post", "put", "patch", "delete")]


class World:
    def __init__(self, gw, fake):
        self.gw, self.fake = gw, fake
        self.t = Tenant(gw, fake, quota={"period": "month", "cost_limit": "1"}, max_output_tokens=50)
        self.admin = self.t.tok
        self.user = make_user(gw, self.admin, "someone@example.com", "user-password-1")
        self.ids = {"users": self.user["id"], "providers": self.t.provider_id, "models": self.t.chat["id"],
                    "groups": self.t.group["id"], "quotas": self.t.quota_id}
        # objects of their own for the updates that a server may wrongly accept,
        # so such a failure cannot spoil the cases after it
        vp = self.t.add_provider("victim-p", "http://127.0.0.1:9/v1", "sk-victim-123456789")
        vm = self.t.add_model("victim-m", [(vp["id"], "victim-up")], input_price="1", output_price="1")
        vg = self.t.add_group("victim-g", [])
        vu = make_user(gw, self.admin, "victim@example.com", "user-password-1")
        self.victims = {"users": vu["id"], "providers": vp["id"], "models": vm["id"], "groups": vg["id"],
                        "quotas": self.t.quota_id}

    def concrete(self, path, ids=None):
        if "{id}" not in path:
            return path
        return path.replace("{id}", str((ids or self.ids)[path.split("/")[3]]))

    def token_for(self, path):
        if path.startswith("/v1/"):
            return self.t.key
        if path == "/api/auth/login/":
            return None
        return self.admin

    def upstream_calls(self):
        return len(self.fake.lines("REQ "))


# ---- 1. malformed JSON ---------------------------------------------------------

BAD_BODIES = [
    ("not_json", b"{", 400),
    ("truncated", b'{"model": "gpt-test", "messages": [', 400),
    ("deep_arrays", b"[" * 100000 + b"]" * 100000, 400),
    ("deep_objects", b'{"a":' * 20000 + b"1" + b"}" * 20000, 400),
    ("array_not_object", b"[]", 400),
    ("string_not_object", b'"x"', 400),
    ("empty", b"", 400),
    ("invalid_utf8", b'{"name": "\xff\xfe", "model": "gpt-\xc3"}', 400),
    ("overlong_utf8", b'{"name": "\xc0\xaf", "model": "\xc0\xaf"}', 400),
    ("escaped_nul", b'{"name": "a\\u0000b", "model": "gpt-test\\u0000x", "email": "a\\u0000@b.c"}', 400),
    ("lone_surrogate", b'{"name": "\\ud800", "model": "\\udfff"}', 400),
    ("trailing_garbage", b'{"name": "x"} {"name": "y"}', 400),
    ("nan", b'{"name": NaN, "max_tokens": NaN}', 400),
    ("over_max_body_size", b'{"name": "' + b"a" * (MAX_BODY + 1024) + b'"}', 413),
]


def bad_body_case(w, method, path, name, data, status):
    real = w.concrete(path)
    snap = Snapshot(w.gw, ignore=AUDIT if path.startswith("/v1/") else ())
    calls = w.upstream_calls()
    r = w.gw.http(method, real, raw=data, token=w.token_for(path), headers={"Content-Type": "application/json"},
                  timeout=30)
    expect("%s %s with body %s" % (method, real, name), r, status)
    check(r.json is not None and "error" in r.json, "%s %s with body %s: the error is not JSON: %s" %
          (method, real, name, excerpt(r.body)))
    check(w.upstream_calls() == calls, "%s %s with body %s reached the upstream" % (method, real, name))
    snap.assert_unchanged("%s %s with body %s" % (method, real, name))


def duplicate_key_case(w, method, path, body):
    """The same key twice: the gateway must not read one value while the
    upstream (or a later reader) reads the other."""
    real = w.concrete(path)
    snap = Snapshot(w.gw, ignore=AUDIT if path.startswith("/v1/") else ())
    calls = w.upstream_calls()
    r = w.gw.http(method, real, raw=body, token=w.token_for(path), headers={"Content-Type": "application/json"})
    expect("%s %s with a duplicate key" % (method, real), r, 400)
    check(w.upstream_calls() == calls, "%s %s with a duplicate key reached the upstream" % (method, real))
    snap.assert_unchanged("%s %s with a duplicate key" % (method, real))


WRONG_TYPES = {
    "/api/admin/users/": ("email", {"email": 123, "password": "long-password-1"}),
    "/api/admin/users/{id}/": ("is_active", {"is_active": "yes please"}),
    "/api/admin/providers/": ("timeout_s", {"name": "p2", "type": "openai", "base_url": "http://127.0.0.1:9/v1",
                                            "timeout_s": "ten"}),
    "/api/admin/providers/{id}/": ("timeout_s", {"timeout_s": [1]}),
    "/api/admin/models/": ("routes", {"name": "m2", "routes": "all of them"}),
    "/api/admin/models/{id}/": ("input_price", {"input_price": {"a": 1}}),
    "/api/admin/groups/": ("model_ids", {"name": "g2", "model_ids": [1, "two"]}),
    "/api/admin/groups/{id}/": ("name", {"name": 7}),
    "/api/admin/quotas/": ("cost_limit", {"user_id": 1, "group_id": 1, "cost_limit": [1]}),
    "/api/admin/quotas/{id}/": ("rpm", {"rpm": "many"}),
    "/api/auth/login/": ("email", {"email": ["a"], "password": "x"}),
    "/api/auth/password/": ("new_password", {"old_password": "admin-password-1", "new_password": 12345678}),
    "/v1/chat/completions": ("messages", {"model": "gpt-test", "messages": "hi"}),
    "/v1/completions": ("max_tokens", {"model": "gpt-test", "prompt": "hi", "max_tokens": "lots"}),
    "/v1/embeddings": ("input", {"model": "emb-test", "input": {"x": 1}}),
}
OUT_OF_RANGE = {
    "/api/admin/quotas/{id}/": ("cost_limit", {"cost_limit": "1e999"}),
    "/api/admin/models/{id}/": ("input_price", {"input_price": "-1"}),
    "/api/admin/providers/{id}/": ("timeout_s", {"timeout_s": 10 ** 12}),
    "/v1/chat/completions": ("max_tokens", {"model": "gpt-test", "messages": [{"role": "user", "content": "x"}],
                                            "max_tokens": -5}),
}


def field_case(w, method, path, field, body, what, ids=None, also_codes=()):
    """400 naming field (or, where also_codes allows it, 400 with one of those
    codes), nothing written, nothing sent upstream."""
    real = w.concrete(path, ids)
    snap = Snapshot(w.gw, ignore=AUDIT if path.startswith("/v1/") else ())
    calls = w.upstream_calls()
    r = w.gw.http(method, real, body, token=w.token_for(path))
    code = (r.json or {}).get("error", {}).get("code") if isinstance(r.json, dict) else None
    if r.status == 400 and code in also_codes:
        pass
    else:
        expect("%s %s with %s %s" % (method, real, what, field), r, 400, field=field)
    check(w.upstream_calls() == calls, "%s %s with %s %s reached the upstream" % (method, real, what, field))
    snap.assert_unchanged("%s %s with %s %s" % (method, real, what, field))


# ---- 2. CR, LF, NUL in stored strings ------------------------------------------

def stored_string_targets(w):
    """(method, path, field, body builder(value)) for every stored string that
    reaches a header, a metrics label, a log or a file."""
    pid = w.t.provider_id
    seq = itertools.count(1)

    def prov(**kw):
        b = {"name": "inj-p-%d" % next(seq), "type": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-inj-1234567890"}
        b.update(kw)
        return b

    def model(**kw):
        b = {"name": "inj-m-%d" % next(seq), "input_price": "1", "output_price": "1",
             "routes": [{"provider_id": pid, "upstream_name": kw.pop("upstream_name", "u"), "priority": 1}]}
        b.update(kw)
        return b
    return [
        ("POST", "/api/admin/providers/", "name", lambda v: prov(name=v)),
        ("POST", "/api/admin/providers/", "base_url", lambda v: prov(base_url="http://127.0.0.1:9/v1" + v)),
        ("POST", "/api/admin/providers/", "api_key", lambda v: prov(api_key="sk-inj-1234567890" + v)),
        ("PATCH", "/api/admin/providers/{id}/", "name", lambda v: {"name": v}),
        ("PATCH", "/api/admin/providers/{id}/", "base_url", lambda v: {"base_url": "http://127.0.0.1:9/v1" + v}),
        ("PATCH", "/api/admin/providers/{id}/", "api_key", lambda v: {"api_key": "sk-victim-123456789" + v}),
        ("POST", "/api/admin/models/", "name", lambda v: model(name="inj-" + v)),
        ("POST", "/api/admin/models/", "upstream_name", lambda v: model(upstream_name="u" + v)),
        ("PATCH", "/api/admin/models/{id}/", "name", lambda v: {"name": "gpt-" + v}),
        ("PATCH", "/api/admin/models/{id}/", "upstream_name",
         lambda v: {"routes": [{"provider_id": pid, "upstream_name": "up-" + v, "priority": 1}]}),
        ("POST", "/api/admin/groups/", "name", lambda v: {"name": "g-" + v, "model_ids": []}),
        ("PATCH", "/api/admin/groups/{id}/", "name", lambda v: {"name": "g-" + v}),
        ("POST", "/api/admin/users/", "email", lambda v: {"email": "inj%d" % next(seq) + v + "@example.com",
                                                          "password": "long-password-1"}),
        ("POST", "/api/admin/users/", "name", lambda v: {"email": "inj%d@example.com" % next(seq),
                                                         "password": "long-password-1",
                                                         "name": "n" + v}),
        ("PATCH", "/api/admin/users/{id}/", "name", lambda v: {"name": "n" + v}),
        ("PATCH", "/api/admin/users/{id}/", "email", lambda v: {"email": "x" + v + "@example.com"}),
    ]


def stored_string_case(w, method, path, field, build, value):
    # jansson refuses an escaped NUL while parsing, before any field is known:
    # that 400 invalid_json is accepted for NUL (nothing is stored either way)
    field_case(w, method, path, field, build(value), "%r in" % value, ids=w.victims,
               also_codes=("invalid_json",) if "\u0000" in value else ())


# ---- 3. credentials in base_url --------------------------------------------------

def base_url_credentials_case(w):
    snap = Snapshot(w.gw)
    r = w.gw.http("POST", "/api/admin/providers/", {"name": "cred", "type": "openai",
                                                   "base_url": "http://leakuser:leakpass@127.0.0.1:9/v1",
                                                   "api_key": "sk-x-123456789012"}, token=w.admin)
    if r.status == 400:
        expect("a base_url with user:pass@", r, 400, field="base_url")
        snap.assert_unchanged("a base_url with user:pass@")
        return
    check(r.status == 201, "a base_url with user:pass@: expected 400 (refused) or 201 (kept secret), got %s: %s" %
          (r.status, excerpt(r.body)))
    seen = [("the create answer", r.body.decode())]
    seen.append(("the list", w.gw.http("GET", "/api/admin/providers/", token=w.admin).body.decode()))
    seen.append(("the provider", w.gw.http("GET", "/api/admin/providers/%d/" % r.json["id"],
                                           token=w.admin).body.decode()))
    seen.append(("ledger dump", json.dumps(proxyutil.ledger_dump(w.gw))))
    leaks = [where for where, text in seen if "leakpass" in text]
    check(not leaks, "the password of a base_url with user:pass@ is shown in: %s" % ", ".join(leaks))


# ---- 4. metrics -------------------------------------------------------------------

METRIC_LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\["\\n])*"'
                         r'(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\["\\n])*")*,?)?\})? '
                         r'[-+]?([0-9.eE+-]+|NaN|Inf)( [0-9]+)?$')


def metrics_case(w):
    names = ['we"ird', "back\\slash", "cr\rinjected_total 1", "lf\ninjected_total 1", "brace}{", "=1+2"]
    # a model an admin named with a CR, served (where the server still stores such a name)
    r = w.gw.http("POST", "/api/admin/models/", {"name": "served\rinjected_total 1", "input_price": "1",
                                                "output_price": "1", "capabilities": ["chat"],
                                                "routes": [{"provider_id": w.t.provider_id,
                                                            "upstream_name": "up-model", "priority": 1}]},
                  token=w.admin)
    if r.status == 201:
        g = w.gw.http("GET", "/api/admin/groups/%d/" % w.t.group["id"], token=w.admin).json
        expect("add the model to the group", w.gw.http("PATCH", "/api/admin/groups/%d/" % w.t.group["id"],
                                                       {"model_ids": g["model_ids"] + [r.json["id"]]},
                                                       token=w.admin), 200)
        expect("a chat request to the model named with a CR",
               w.gw.http("POST", "/v1/chat/completions", proxyutil.chat_body(model=r.json["name"]),
                         token=w.t.key), 200)
    for n in names:
        r = w.gw.http("POST", "/v1/chat/completions", {"model": n, "messages": [{"role": "user", "content": "x"}]},
                      token=w.t.key)
        expect("a chat request for the unknown model %r" % n, r, (400, 404))
    r = w.gw.http("GET", "/metrics")
    expect("GET /metrics", r, 200)
    text = r.body.decode("utf-8", "replace")
    check("\r" not in text, "/metrics holds a raw carriage return: %r" % text[max(0, text.find("\r") - 100):
                                                                              text.find("\r") + 100])
    bad = [l for l in text.split("\n") if l and not l.startswith("#") and not METRIC_LINE.match(l)]
    check(not bad, "/metrics lines that are not Prometheus text: %r" % bad[:5])
    check("injected_total" not in [l.split(" ")[0].split("{")[0] for l in text.split("\n")],
          "a client's model name made a metric line of its own")


# ---- 5. CSV export ----------------------------------------------------------------

def csv_case(w):
    names = ["=HYPERLINK(\"http://evil.example/\",\"x\")", "+1+1", "-2+3", "@SUM(1)"]
    for n in names:
        r = w.gw.http("POST", "/v1/chat/completions", {"model": n, "messages": [{"role": "user", "content": "x"}]},
                      token=w.t.key)
        expect("a chat request for the unknown model %r" % n, r, (400, 404))
    # a served request too: its cells are the ordinary ones
    r = w.gw.http("POST", "/v1/chat/completions", proxyutil.chat_body(), token=w.t.key)
    expect("a chat request", r, 200)
    n = len(proxyutil.audit_records(w.gw))
    check(n >= 1, "no audit records")
    p = harness.run_cli("audit", "export", "--data-dir", w.gw.data_dir, "--format", "csv", env=w.gw.env)
    rows = list(csv.reader(io.StringIO(p.stdout)))
    number = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
    bad = [(i, c) for i, row in enumerate(rows) for c in row
           if c[:1] in ("=", "+", "-", "@") and not number.match(c)]
    check(not bad, "CSV cells a spreadsheet runs as formulas: %r" % bad[:5])
    sent = [n for n in names if any(n in c for row in rows for c in row)]
    check(not sent or all(c[:1] not in "=+-@" for row in rows for c in row if any(s in c for s in sent)),
          "the model names reach the CSV unneutralized")


# ---- 6. bytes that are not UTF-8 in a query -------------------------------------

def bad_query_case(w, path):
    for i in range(3):
        make_user(w.gw, w.admin, "page%d-%s@example.com" % (i, path.strip("/").replace("/", "-")),
                  "user-password-1") if path == "/api/admin/users/" else None
    req = (b"GET " + path.encode() + b"?page_size=1&x\xff=1&page_size\xfe=\xff HTTP/1.1\r\nHost: x\r\n"
           b"Authorization: Bearer " + w.admin.encode() + b"\r\nConnection: close\r\n\r\n")
    a, _, _ = raw_exchange(w.gw, req)
    check(a is not None, "GET %s with a non-UTF-8 query: no answer" % path)
    check(a.status in (200, 400), "GET %s with a non-UTF-8 query: expected 400 (naming the parameter) or 200, "
          "got %s: %s" % (path, a.status, excerpt(a.body)))
    if a.status == 200 and path.endswith("/export/"):  # a file of JSON lines, not one JSON answer
        lines = [json.loads(x) for x in a.body.decode("utf-8").splitlines()]
        check(all("id" in x for x in lines), "GET %s: not the records as JSON lines" % path)
        return
    check(a.json is not None, "GET %s with a non-UTF-8 query: the answer is not JSON: %s" % (path, excerpt(a.body)))
    if a.status == 400:
        check(a.json["error"].get("param") or "x" in a.json["error"]["message"],
              "GET %s: the 400 does not name the parameter: %s" % (path, excerpt(a.body)))
    else:
        for link in ("next", "previous"):
            v = a.json.get(link)
            check(v is None or ("\ufffd" not in v and "x\xff" not in v),
                  "GET %s: the %s link carries the bad bytes: %r" % (path, link, v))


# ---- 7. oversized headers ------------------------------------------------------

def oversized_header_case(w, name, data):
    snap = Snapshot(w.gw)
    a, closed, later = raw_exchange(w.gw, data)
    if a is not None:
        # refused by the parser (400/413/431, then closed) or read as one
        # request and refused by the route (401/404): never served
        check(400 <= a.status < 500, "%s: expected a 4xx, got %s: %s" % (name, a.status, excerpt(a.body)))
        check(not later, "%s: a second answer followed: %r" % (name, [x.status for x in later]))
    expect("GET /healthz after %s" % name, w.gw.http("GET", "/healthz"), 200)
    snap.assert_unchanged(name)


def oversized_headers(w):
    auth = b"Authorization: Bearer " + w.admin.encode() + b"\r\n"
    return [
        ("one_header_of_1MiB", b"GET /api/admin/users/ HTTP/1.1\r\nHost: x\r\n" + auth + b"X-Big: " +
         b"a" * (1 << 20) + b"\r\n\r\n"),
        ("authorization_of_256KiB", b"GET /api/auth/me/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
         b"a" * (256 << 10) + b"\r\n\r\n"),
        ("ten_thousand_headers", b"GET /healthz HTTP/1.1\r\nHost: x\r\n" +
         b"".join(b"X-H%d: v\r\n" % i for i in range(10000)) + b"\r\n"),
        ("request_line_of_1MiB", b"GET /api/admin/users/?q=" + b"a" * (1 << 20) + b" HTTP/1.1\r\nHost: x\r\n" +
         auth + b"\r\n"),
        ("header_name_with_nul", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A\x00B: v\r\n\r\n"),
        ("obs_fold_continuation", b"GET /api/auth/me/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer\r\n " +
         w.admin.encode() + b"\r\n\r\n"),
    ]


def main():
    cases = Cases("inputs")
    routes = openapi_routes()
    body_routes = [(m, p) for m, p, has_body in routes if has_body]
    with gateway_with_fake(workers=2, stop=False, env={"TOKENAUDIT_MAX_BODY_SIZE": str(MAX_BODY)}) as (gw, fake):
        w = World(gw, fake)
        for m, p in body_routes:
            for name, data, status in BAD_BODIES:
                cases.run("json.%s.%s_%s" % (name, m, p), bad_body_case, w, m, p, name, data, status)
        dup = {"/v1/chat/completions": b'{"model": "emb-test", "model": "gpt-test", "messages": '
                                       b'[{"role": "user", "content": "x"}]}',
               "/v1/completions": b'{"model": "gpt-test", "prompt": "x", "max_tokens": 1, "max_tokens": 100000}',
               "/v1/embeddings": b'{"model": "emb-test", "input": "x", "model": "gpt-test"}',
               "/api/admin/users/": b'{"email": "d@example.com", "password": "long-password-1", "role": "user", '
                                    b'"role": "superadmin"}',
               "/api/admin/quotas/{id}/": b'{"cost_limit": "1", "cost_limit": null}'}
        for p, body in dup.items():
            m = "PATCH" if "{id}" in p else "POST"
            cases.run("json.duplicate_key.%s_%s" % (m, p), duplicate_key_case, w, m, p, body)
        for table, what in ((WRONG_TYPES, "a wrong type for"), (OUT_OF_RANGE, "an out-of-range")):
            for p, (field, body) in table.items():
                m = "PATCH" if "{id}" in p else "POST"
                tag = "wrong_type" if table is WRONG_TYPES else "out_of_range"
                cases.run("json.%s.%s_%s" % (tag, m, p), field_case, w, m, p, field, body, what)
        for m, p, field, build in stored_string_targets(w):
            for iname, value in INJECT.items():
                cases.run("stored_string.%s.%s_%s.%s" % (iname, m, p, field), stored_string_case, w, m, p, field,
                          build, value)
        cases.run("base_url_credentials", base_url_credentials_case, w)
        cases.run("metrics_labels", metrics_case, w)
        cases.run("csv_formula_injection", csv_case, w)
        for m, p, _ in routes:
            if m == "GET" and p.startswith("/api/admin/") and "{id}" not in p and "{request_id}" not in p:
                cases.run("query_not_utf8.%s" % p, bad_query_case, w, p)
        for name, data in oversized_headers(w):
            cases.run("headers.%s" % name, oversized_header_case, w, name, data)
        fake.stop()
        cases.run("end.ledger_verify_and_no_sanitizer_report", finish_gateway, gw)
    cases.finish()


if __name__ == "__main__":
    main()
