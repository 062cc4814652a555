"""test_stored_strings.py - stored strings that reach a header, a label or a
file, and bytes in a query string, against the real tokenauditd.

1. A provider api_key with CR/LF ("sk-a\\r\\nX-Injected: 1") is refused: 400
   naming api_key (rule "control"), nothing stored, on POST and on PATCH (the
   stored key still works and no upstream call carries the injected header).
2. A base_url with user:pass@ is refused: 400 naming base_url (rule
   "credentials"); a non-http(s) scheme: 400 (rule "format").
3. Control characters in names: a model named with CR, an upstream_name with
   LF, a provider / group / user name with CR: 400 naming the field, nothing
   stored; /metrics still parses line by line.
4. GET /api/admin/users/?page_size=2&x<0xFF>=1 (the byte raw, not escaped)
   with more than one page: 200, and the page links are valid URLs without
   the malformed parameter.
5. `tokenaudit audit export --format csv`: a record whose model and
   served_model begin with '=' / '@' is written with a leading single quote in
   those cells; the jsonl export keeps the values as they are.
"""

import csv
import io
import json
import os
import socket
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402
from proxyutil import Admin, Tenant, audit_records, chat_body, check, gateway_with_fake, route, v1  # noqa: E402


def field_error(r, field, rule, what):
    check(r.status == 400, "%s: want 400, got %s %s" % (what, r.status, r.body))
    err = (r.json or {}).get("error") or {}
    check(err.get("param") == field, "%s: error names %r, want %r: %s" % (what, err.get("param"), field, r.body))
    check(err.get("code") == rule, "%s: rule %r, want %r: %s" % (what, err.get("code"), rule, r.body))
    check(field in (err.get("fields") or {}), "%s: fields names %s: %s" % (what, field, r.body))


def count(adm, path):
    return adm.get(path)["count"]


def providers_and_keys(adm, fake):
    gw = adm.gw
    before = count(adm, "/api/admin/providers/")
    body = {"name": "inj", "type": "openai", "base_url": fake.url, "api_key": "sk-a\r\nX-Injected: 1"}
    field_error(gw.http("POST", "/api/admin/providers/", body, token=adm.tok), "api_key", "control",
                "POST provider with CR/LF in api_key")
    for bad in ("sk-a\nb", "sk-\tx", "sk-\x7f", "sk-\x1b[0m"):
        field_error(gw.http("POST", "/api/admin/providers/", dict(body, api_key=bad), token=adm.tok),
                    "api_key", "control", "api_key %r" % bad)
    check(count(adm, "/api/admin/providers/") == before, "nothing stored after the refused keys")

    # PATCH of a stored provider: refused, the stored key is kept and used
    t = Tenant(gw, fake)
    url = "/api/admin/providers/%d/" % t.provider_id
    last4 = adm.get(url)["api_key_last4"]
    field_error(gw.http("PATCH", url, {"api_key": "sk-b\r\nX-Injected: 2"}, token=adm.tok), "api_key", "control",
                "PATCH provider with CR/LF in api_key")
    check(adm.get(url)["api_key_last4"] == last4, "the stored key is unchanged")
    r = v1(gw, t.key, "POST", "/chat/completions", chat_body())
    check(r.status == 200, "a call with the stored key: %s %s" % (r.status, r.body))
    check(fake.calls()[-1]["auth"] == "7777", "the upstream got the stored key: %r" % fake.calls()[-1])
    return t


def urls(adm, fake):
    gw = adm.gw
    before = count(adm, "/api/admin/providers/")
    host = fake.url.split("//", 1)[1]
    base = {"name": "u", "type": "openai", "api_key": "sk-x"}
    for bad in ("http://user:pass@" + host, "https://key@" + host, "http://:pw@" + host + "?q"):
        field_error(gw.http("POST", "/api/admin/providers/", dict(base, base_url=bad), token=adm.tok),
                    "base_url", "credentials", "base_url %s" % bad)
    for bad in ("file:///etc/passwd", "ftp://" + host, "gopher://" + host, "javascript:alert(1)"):
        field_error(gw.http("POST", "/api/admin/providers/", dict(base, base_url=bad), token=adm.tok),
                    "base_url", "format", "base_url %s" % bad)
    check(count(adm, "/api/admin/providers/") == before, "no provider stored with a bad base_url")


def names(adm, t):
    gw = adm.gw
    models = count(adm, "/api/admin/models/")
    r = gw.http("POST", "/api/admin/models/", {"name": "gpt\rx", "routes": [route(t.provider_id, "up")]},
                token=adm.tok)
    field_error(r, "name", "control", "model named with CR")
    r = gw.http("POST", "/api/admin/models/", {"name": "ok", "routes": [route(t.provider_id, "up\nX: 1")]},
                token=adm.tok)
    field_error(r, "routes[0].upstream_name", "control", "upstream_name with LF")
    r = gw.http("PATCH", "/api/admin/models/%d/" % t.chat["id"], {"name": "gpt-test\r\nfake_metric 1"},
                token=adm.tok)
    field_error(r, "name", "control", "model renamed with CR/LF")
    check(count(adm, "/api/admin/models/") == models, "no model stored")
    check(adm.get("/api/admin/models/%d/" % t.chat["id"])["name"] == "gpt-test", "the model kept its name")

    r = gw.http("PATCH", "/api/admin/providers/%d/" % t.provider_id, {"name": "p\r\nq"}, token=adm.tok)
    field_error(r, "name", "control", "provider name with CR/LF")
    r = gw.http("POST", "/api/admin/groups/", {"name": "g\r1"}, token=adm.tok)
    field_error(r, "name", "control", "group name with CR")
    users = count(adm, "/api/admin/users/")
    r = gw.http("POST", "/api/admin/users/", {"email": "n@example.com", "password": "password-123", "name": "a\rb"},
                token=adm.tok)
    field_error(r, "name", "control", "user name with CR")
    check(count(adm, "/api/admin/users/") == users, "no user stored")

    # the page stays one sample or comment per line
    r = gw.http("GET", "/metrics")
    check(r.status == 200 and b"\r" not in r.body, "metrics without CR")
    for line in r.body.decode().splitlines():
        check(line.startswith("#") or line.startswith("tokenaudit_"), "metrics line: %r" % line)


def raw_get(gw, target, token):
    """A GET whose target is sent as bytes, unescaped (Host: x, so the page
    links start with http://x)."""
    s = socket.create_connection((gw.host, gw.port), timeout=20)
    s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer " +
              token.encode() + b"\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    if hdrs.get("transfer-encoding") == "chunked":
        out = b""
        while True:
            size, _, body = body.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            out, body = out + body[:n], body[n + 2:]
        body = out
    return int(lines[0].split()[1]), body


def query_bytes(adm):
    gw = adm.gw
    for i in range(3):
        adm.post("/api/admin/users/", {"email": "q%d@example.com" % i, "password": "password-123"})
    check(count(adm, "/api/admin/users/") > 2, "more than one page of 2")
    status, body = raw_get(gw, b"/api/admin/users/?page_size=2&x\xff=1", adm.tok)
    check(status != 500, "raw 0xFF in a query name: %s %r" % (status, body))
    check(status == 200, "the malformed parameter is ignored: %s %r" % (status, body))
    j = json.loads(body)
    check(j["next"] == "http://x/api/admin/users/?page_size=2&page=2",
          "next without the malformed parameter: %r" % j["next"])
    status, body = raw_get(gw, b"/api/admin/users/?page_size=2&q=\xff&page=2", adm.tok)
    check(status == 200, "raw 0xFF in an unused value: %s %r" % (status, body))
    j = json.loads(body)
    check(j["previous"] == "http://x/api/admin/users/?page_size=2&page=1", "previous: %r" % j["previous"])
    # a parameter the handler reads is refused, naming it
    status, body = raw_get(gw, b"/api/admin/users/?page_size=2&search=\xff", adm.tok)
    check(status == 400 and json.loads(body)["error"]["param"] == "search", "search=0xFF: %s %r" % (status, body))


def csv_export(t):
    gw = t.gw
    m = t.add_model("=HYPERLINK(\"http://evil.example\",\"x\")", [(t.provider_id, "@SUM(A1)")],
                    input_price="1", output_price="2", capabilities=["chat"])
    ids = t.get("/api/admin/groups/%d/" % t.group["id"])["model_ids"] + [m["id"]]
    r = gw.http("PATCH", "/api/admin/groups/%d/" % t.group["id"], {"model_ids": sorted(ids)}, token=t.tok)
    check(r.status == 200, "group with the '=' model: %s %s" % (r.status, r.body))
    r = v1(gw, t.key, "POST", "/chat/completions", chat_body(model=m["name"]))
    check(r.status == 200, "chat with the '=' model: %s %s" % (r.status, r.body))
    rid = r.request_id
    recs = [x for x in audit_records(gw, applied=2) if x["id"] == rid]
    check(recs and recs[0]["model"] == m["name"] and recs[0]["served_model"] == "@SUM(A1)",
          "jsonl keeps the values as they are: %r" % recs)
    p = harness.run_cli("audit", "export", "--data-dir", gw.data_dir, "--format", "csv", env=gw.env)
    rows = list(csv.DictReader(io.StringIO(p.stdout, newline="")))
    row = [x for x in rows if x["id"] == rid]
    check(len(row) == 1, "the record in the csv export: %r" % p.stdout[:500])
    row = row[0]
    check(row["model"] == "'" + m["name"], "model cell neutralized: %r" % row["model"])
    check(row["served_model"] == "'@SUM(A1)", "served_model cell neutralized: %r" % row["served_model"])
    for x in rows:
        for k in ("model", "served_model", "key_prefix", "client_ip"):
            check(not x[k] or x[k][0] not in "=+-@\t\r", "%s cell %r of %s" % (k, x[k], x["id"]))


def main():
    with gateway_with_fake(workers=2) as (gw, fake):
        adm = Admin(gw)
        t = providers_and_keys(adm, fake)
        urls(adm, fake)
        names(adm, t)
        query_bytes(adm)
        csv_export(t)
        gw.assert_no_sanitizer_reports()
    print("ok")


if __name__ == "__main__":
    main()
