"""test_openapi.py - docs/openapi.yaml is what `tokenaudit openapi` prints, and that
document matches the code:

  * the committed file is byte-for-byte the generator's output (else: regenerate);
  * the YAML is well formed and says the same as `tokenaudit openapi --json`
    (read back with a small reader for the subset the generator writes);
  * every row of the route table, as the binary exports it (`tokenaudit openapi
    --routes`), is a path and method of the document with exactly the row's operation
    id, summary, schemas, parameters and statuses, and the document has no other /api
    operation;
  * no SECRET field of the schema descriptors (pwhash, key_sealed, key_hash) appears;
  * the audit record lists exactly the fields admin/requests.c answers with;
  * every $ref resolves; write-only and read-only fields are marked;
  * against a real tokenauditd, the answers of the admin API, /v1, /healthz and their
    errors have a documented status and validate against the documented schema, and
    no answer carries a field the document does not name; GET /api/openapi.json
    serves the same document without credentials.
"""

import json
import os
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SRC = harness.SOURCE_DIR
DOC_PATH = os.path.join(SRC, "docs", "openapi.yaml")
REGEN = "%s openapi > %s" % (os.path.join(harness.BUILD_DIR, "tokenaudit"), DOC_PATH)
SECRETS = ("pwhash", "key_sealed", "key_hash")


def c_block(rel, start, end):
    """The text of the source file SRC/rel... from `start` up to (not including)
    the first `end` after it; ValueError when either is missing."""
    with open(os.path.join(SRC, *rel), encoding="utf-8") as f:
        src = f.read()
    block = src[src.index(start):]
    return block[:block.index(end)]


def run_openapi(*args):
    p = subprocess.run([harness.binary("tokenaudit"), "openapi"] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert p.returncode == 0, "tokenaudit openapi exited %d: %s" % (p.returncode, p.stderr)
    assert p.stderr == b"", p.stderr
    return p.stdout.decode("utf-8")


# ---- a reader for the YAML subset admin/openapi.c writes ---------------------------
# Block mappings and sequences (two spaces per level, "- key: v" for mappings in a
# sequence), flow sequences of scalars, {} and [], plain scalars and JSON strings.

_DEC = json.JSONDecoder()


def _split_key(s):
    """(key, rest) when s is "key: rest" / "key:", else None."""
    if s.startswith('"'):
        key, end = _DEC.raw_decode(s)
        if s[end:end + 1] != ":":
            return None
        return key, s[end + 1:].strip()
    if ":" not in s:
        return None
    key, rest = s.split(":", 1)
    if rest and not rest.startswith(" "):
        raise ValueError("bad mapping line: %r" % s)
    return key, rest.strip()


def _scalar(s):
    if s.startswith('"'):
        v, end = _DEC.raw_decode(s)
        if end != len(s):
            raise ValueError("trailing text after a string: %r" % s)
        return v
    if s == "[]":
        return []
    if s == "{}":
        return {}
    if s.startswith("["):
        if not s.endswith("]"):
            raise ValueError("bad flow sequence: %r" % s)
        out, body, i = [], s[1:-1], 0
        while i < len(body):
            if body[i] == '"':
                v, i = _DEC.raw_decode(body, i)
                out.append(v)
            else:
                j = body.find(",", i)
                j = len(body) if j < 0 else j
                out.append(_scalar(body[i:j].strip()))
                i = j
            if body.startswith(", ", i):
                i += 2
            elif i != len(body):
                raise ValueError("bad flow sequence: %r" % s)
        return out
    if s in ("true", "false"):
        return s == "true"
    if s == "null":
        return None
    if re.fullmatch(r"-?[0-9]+", s):
        return int(s)
    if s[0] in "&*!|>%@`'{#-?:,[]" or ": " in s or " #" in s:
        raise ValueError("scalar needs quoting: %r" % s)
    return s


def parse_yaml(text):
    lines = [ln for ln in text.split("\n") if ln.strip() and not ln.startswith("#")]
    pos = [0]

    def ind(i):
        return len(lines[i]) - len(lines[i].lstrip(" "))

    def block(level):
        if lines[pos[0]].lstrip().startswith("-"):
            return seq(level)
        return mapping(level)

    def value(rest, level):
        if rest:
            return _scalar(rest)
        if pos[0] >= len(lines) or ind(pos[0]) <= level:
            raise ValueError("empty value before line %d" % pos[0])
        return block(ind(pos[0]))

    def mapping(level):
        out = {}
        while pos[0] < len(lines) and ind(pos[0]) == level:
            s = lines[pos[0]].strip()
            if s.startswith("- ") or s == "-":
                break
            kv = _split_key(s)
            if kv is None:
                raise ValueError("expected key at line %d: %r" % (pos[0], s))
            if kv[0] in out:
                raise ValueError("duplicate key %r" % kv[0])
            pos[0] += 1
            out[kv[0]] = value(kv[1], level)
        if pos[0] < len(lines) and ind(pos[0]) > level:
            raise ValueError("bad indentation at line %d" % pos[0])
        return out

    def seq(level):
        out = []
        while pos[0] < len(lines) and ind(pos[0]) == level and \
                lines[pos[0]].strip().startswith("-"):
            body = lines[pos[0]].strip()[1:]
            if body == "":
                pos[0] += 1
                out.append(block(ind(pos[0])))
            elif _split_key(body.strip()) is not None:
                lines[pos[0]] = " " * (level + 2) + body.strip()
                out.append(mapping(level + 2))
            else:
                pos[0] += 1
                out.append(_scalar(body.strip()))
        return out

    doc = block(0)
    if pos[0] != len(lines):
        raise ValueError("unread text from line %d" % pos[0])
    return doc


# ---- a validator for the schema subset the document uses ---------------------------

class Schemas:
    def __init__(self, doc):
        self.doc = doc

    def resolve(self, s):
        while "$ref" in s:
            ref = s["$ref"]
            assert ref.startswith("#/"), ref
            node = self.doc
            for part in ref[2:].split("/"):
                node = node[part]
            s = node
        return s

    def merged(self, s):
        """(properties, required) of an object schema, allOf merged."""
        s = self.resolve(s)
        props, req = dict(s.get("properties", {})), list(s.get("required", []))
        for sub in s.get("allOf", []):
            p, r = self.merged(sub)
            props.update(p)
            req += r
        return props, req

    def check(self, v, s, where, closed=True):
        """Assert that answer value v fits schema s. closed: no unnamed keys."""
        s = self.resolve(s)
        if v is None:
            assert s.get("nullable"), "%s: null but not nullable" % where
            return
        if "allOf" in s:
            if not s.get("type") and not s.get("properties"):
                if len(s["allOf"]) == 1:
                    return self.check(v, s["allOf"][0], where, closed)
        t = s.get("type")
        if t is None and ("properties" in s or "allOf" in s):
            t = "object"
        if t == "object":
            assert isinstance(v, dict), "%s: %r is not an object" % (where, v)
            props, req = self.merged(s)
            for k in req:
                assert k in v, "%s: required %r missing in %r" % (where, k, sorted(v))
            extra = s.get("additionalProperties")
            for k, x in v.items():
                if k in props:
                    assert not self.resolve(props[k]).get("writeOnly"), \
                        "%s.%s: a write-only field in an answer" % (where, k)
                    self.check(x, props[k], "%s.%s" % (where, k), closed)
                elif isinstance(extra, dict):
                    self.check(x, extra, "%s.%s" % (where, k), closed)
                elif closed and extra is not True:
                    raise AssertionError("%s: answer field %r is not in the document" % (where, k))
        elif t == "array":
            assert isinstance(v, list), "%s: %r is not an array" % (where, v)
            for i, x in enumerate(v):
                self.check(x, s.get("items", {}), "%s[%d]" % (where, i), closed)
            if "maxItems" in s:
                assert len(v) <= s["maxItems"], where
        elif t == "string":
            assert isinstance(v, str), "%s: %r is not a string" % (where, v)
            if "enum" in s:
                assert v in s["enum"], "%s: %r not in %r" % (where, v, s["enum"])
            if "pattern" in s:
                assert re.search(s["pattern"], v), "%s: %r !~ %s" % (where, v, s["pattern"])
            if s.get("format") == "date-time":
                assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", v), (where, v)
            if "maxLength" in s:
                assert len(v) <= s["maxLength"], where
            if "minLength" in s:
                assert len(v) >= s["minLength"], where
        elif t == "integer":
            assert isinstance(v, int) and not isinstance(v, bool), "%s: %r" % (where, v)
            if "minimum" in s:
                assert v >= s["minimum"], "%s: %r < %r" % (where, v, s["minimum"])
            if "maximum" in s:
                assert v <= s["maximum"], "%s: %r > %r" % (where, v, s["maximum"])
        elif t == "boolean":
            assert isinstance(v, bool), "%s: %r is not a boolean" % (where, v)


class OpenApiDoc(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.text = run_openapi()
        cls.doc = json.loads(run_openapi("--json"))

    def test_committed_file_is_current(self):
        with open(DOC_PATH, encoding="utf-8") as f:
            committed = f.read()
        if committed != self.text:
            import difflib
            diff = "".join(list(difflib.unified_diff(
                committed.splitlines(True), self.text.splitlines(True),
                "docs/openapi.yaml (committed)", "tokenaudit openapi"))[:80])
            self.fail("docs/openapi.yaml is stale; regenerate it with\n    %s\n%s" % (REGEN, diff))

    def test_deterministic(self):
        self.assertEqual(run_openapi(), self.text)

    def test_yaml_reads_as_the_json(self):
        self.assertEqual(parse_yaml(self.text), self.doc)

    def test_spec_validator_if_installed(self):
        try:
            from openapi_spec_validator import validate  # not stdlib: optional
        except ImportError:
            self.skipTest("openapi_spec_validator not installed")
        validate(self.doc)

    def test_every_route_of_the_route_table(self):
        routes = json.loads(run_openapi("--routes"))
        self.assertGreater(len(routes), 30)
        paths = self.doc["paths"]
        seen = set()
        for r in routes:
            what = "%s %s" % (r["method"], r["pattern"])
            self.assertIn(r["pattern"], paths, "route %s missing; regenerate: %s" % (what, REGEN))
            op = paths[r["pattern"]].get(r["method"].lower())
            self.assertIsNotNone(op, "route %s missing" % what)
            self.assertEqual(op["operationId"], r["operation_id"], what)
            self.assertEqual(op["summary"], r["summary"], what)
            self.assertEqual(op["tags"], [r["tag"]], what)
            self.assertEqual([p["$ref"].rsplit("/", 1)[1] for p in op.get("parameters", [])],
                             r["params"], what)
            self.assertEqual(list(op["responses"]), [str(r["status"])] + r["errors"], what)
            ok = op["responses"][str(r["status"])]
            if r["response"] is None:
                self.assertNotIn("content", ok, what)
            elif r["stream"]:  # a file: JSON lines of the schema, or CSV
                self.assertEqual(ok["content"]["application/x-ndjson"]["schema"]["$ref"],
                                 "#/components/schemas/" + r["response"], what)
                self.assertIn("text/csv", ok["content"], what)
            else:
                self.assertEqual(ok["content"]["application/json"]["schema"]["$ref"],
                                 "#/components/schemas/" + r["response"], what)
            if r["request"] is None:
                self.assertNotIn("requestBody", op, what)
                self.assertFalse(r["body"], what)
            else:
                self.assertTrue(r["body"], what)
                self.assertEqual(op["requestBody"]["content"]["application/json"]["schema"]
                                 ["$ref"], "#/components/schemas/" + r["request"], what)
            self.assertEqual(op["security"], {"none": [], "jwt": [{"jwt": []}],
                                              "admin": [{"jwt": []}],
                                              "user": [{"jwt": []}, {"apiKey": []}]}[r["auth"]],
                             what)
            if r["write"]:
                self.assertNotEqual(r["method"], "GET", what)
            seen.add((r["method"], r["pattern"]))
        documented = {(m.upper(), p) for p, item in paths.items() if p.startswith("/api/")
                      for m in item if m != "parameters"}
        self.assertEqual(documented, seen, "the document has /api operations the "
                         "route table lacks")
        self.assertIn(("GET", "/api/openapi.json"), seen)
        for p in ("/v1/chat/completions", "/v1/embeddings", "/v1/models", "/v1/usage",
                  "/healthz", "/metrics"):
            self.assertIn(p, paths)

    def test_no_secret_field(self):
        found = set()
        for name in ("records.c", "audit_records.c"):
            with open(os.path.join(SRC, "schema", name), encoding="utf-8") as f:
                found |= set(re.findall(r'"(\w+)"[^\n]*TA_FF_SECRET', f.read()))
        self.assertTrue(set(SECRETS) <= found, found)
        for name in found | set(SECRETS):
            self.assertNotIn(name, self.text)

    def test_audit_record_fields_match_the_handler(self):
        block = c_block(("admin", "requests.c"), "record_fields[] = {", "};")
        want = re.findall(r'"(\w+)"', block)
        got = list(self.doc["components"]["schemas"]["AuditRecord"]["properties"])
        self.assertEqual(got, want)

    def test_refs_resolve_and_markers(self):
        sch = Schemas(self.doc)

        def walk(n):
            if isinstance(n, dict):
                if "$ref" in n:
                    sch.resolve(n)
                for v in n.values():
                    walk(v)
            elif isinstance(n, list):
                for v in n:
                    walk(v)
        walk(self.doc)
        s = self.doc["components"]["schemas"]
        self.assertTrue(s["Provider"]["properties"]["api_key"]["writeOnly"])
        self.assertTrue(s["User"]["properties"]["password"]["writeOnly"])
        for rec in ("User", "Provider", "Model", "Group", "Quota"):
            self.assertTrue(s[rec]["properties"]["id"]["readOnly"], rec)
            self.assertTrue(s[rec]["properties"]["created_at"]["readOnly"], rec)
            self.assertEqual(s[rec]["properties"]["created_at"]["format"], "date-time")
        self.assertTrue(s["Provider"]["properties"]["api_key_last4"]["readOnly"])  # INTERNAL
        self.assertEqual(s["Model"]["properties"]["routes"]["items"]["$ref"],
                         "#/components/schemas/ModelRoute")
        self.assertEqual(s["Group"]["properties"]["default_quota"]["$ref"],
                         "#/components/schemas/QuotaLimits")
        cl = s["Quota"]["properties"]["cost_limit"]
        self.assertEqual((cl["type"], cl["nullable"]), ("string", True))
        self.assertTrue(re.search(cl["pattern"], "0.000125"))
        self.assertFalse(re.search(cl["pattern"], "1e-9"))
        self.assertEqual(s["Quota"]["properties"]["period"]["enum"],
                         ["day", "week", "month", "none"])
        sec = self.doc["components"]["securitySchemes"]
        self.assertEqual((sec["jwt"]["scheme"], sec["jwt"]["bearerFormat"]), ("bearer", "JWT"))
        self.assertEqual(sec["apiKey"]["scheme"], "bearer")
        self.assertEqual(self.doc["paths"]["/api/admin/users/"]["get"]["security"], [{"jwt": []}])
        self.assertEqual(self.doc["paths"]["/v1/usage"]["get"]["security"], [{"apiKey": []}])
        self.assertEqual(self.doc["paths"]["/api/auth/login/"]["post"]["security"], [])


class OpenApiLive(unittest.TestCase):
    """The answers of a real gateway fit the document."""

    @classmethod
    def setUpClass(cls):
        cls.doc = json.loads(run_openapi("--json"))
        cls.sch = Schemas(cls.doc)
        cls.gw = harness.Gateway(workers=1)

    @classmethod
    def tearDownClass(cls):
        cls.gw.stop_and_cleanup()

    def op(self, method, pattern):
        return self.doc["paths"][pattern][method.lower()]

    def call(self, method, path, pattern=None, body=None, token=None, want=None):
        """Do the request; check its status is documented and its body fits."""
        r = self.gw.http(method, path, body, token=token)
        if want is not None:
            self.assertEqual(r.status, want, "%s %s -> %d %s" % (method, path, r.status, r.body))
        responses = self.op(method, pattern or path)["responses"]
        self.assertIn(str(r.status), responses, "%s %s answered an undocumented %d: %s" % (
            method, path, r.status, r.body))
        resp = self.sch.resolve(responses[str(r.status)])
        content = resp.get("content")
        if content is None:
            self.assertEqual(r.body, b"", "%s %s: a body where none is documented" % (method, path))
        elif "application/json" in content:
            self.sch.check(r.json, content["application/json"]["schema"],
                           "%s %s %d" % (method, pattern or path, r.status))
        return r

    def test_answers_fit_the_document(self):
        gw = self.gw
        login = self.call("POST", "/api/auth/login/", body={
            "email": harness.ADMIN_EMAIL, "password": harness.ADMIN_PASSWORD}, want=200).json
        tok = login["access_token"]
        self.call("POST", "/api/auth/login/", body={"email": harness.ADMIN_EMAIL,
                                                    "password": "wrong-password"}, want=401)
        self.call("GET", "/api/auth/me/", token=tok, want=200)

        P = "/api/admin/providers/"
        p = self.call("POST", P, body={"name": "prov", "type": "openai",
                                       "base_url": "http://127.0.0.1:9/v1",
                                       "api_key": "sk-upstream-0123456789abcd"},
                      token=tok, want=201).json
        self.assertTrue(p["api_key_set"])
        self.call("GET", P, token=tok, want=200)
        self.call("GET", P + "%d/" % p["id"], P + "{id}/", token=tok, want=200)
        self.call("PATCH", P + "%d/" % p["id"], P + "{id}/", body={"timeout_s": 5}, token=tok,
                  want=200)
        self.call("POST", P, body={"name": "x", "type": "nope", "base_url": "ftp://x"}, token=tok,
                  want=400)
        # the provider's upstream is a closed port
        t = self.call("POST", P + "%d/test/" % p["id"], P + "{id}/test/", token=tok,
                      want=200).json
        self.assertFalse(t["ok"])
        self.call("POST", P + "%d/sync-models/" % p["id"], P + "{id}/sync-models/", token=tok,
                  want=502)

        M = "/api/admin/models/"
        m = self.call("POST", M, body={"name": "m1", "routes": [
            {"provider_id": p["id"], "upstream_name": "up", "priority": 1}],
            "input_price": "1.5", "output_price": 2, "context_window": 8192}, token=tok,
            want=201).json
        self.call("GET", M + "?search=m&provider_id=%d" % p["id"], M, token=tok, want=200)
        self.call("POST", M, body={"name": "m1"}, token=tok, want=409)

        G = "/api/admin/groups/"
        g = self.call("POST", G, body={"name": "g1", "model_ids": [m["id"]], "default_quota": {
            "period": "month", "cost_limit": "10", "rpm": 100, "warn_at": [80, 95]}},
            token=tok, want=201).json
        self.call("GET", G + "%d/" % g["id"], G + "{id}/", token=tok, want=200)

        U = "/api/admin/users/"
        u = self.call("POST", U, body={"email": "someone@example.com", "password": "password-123",
                                       "name": "Some One"}, token=tok, want=201).json
        self.call("GET", U + "?search=some&role=user&is_active=true", U, token=tok, want=200)
        self.call("GET", U + "999999/", U + "{id}/", token=tok, want=404)
        utok = self.call("POST", "/api/auth/login/", body={
            "email": "someone@example.com", "password": "password-123"},
            want=200).json["access_token"]
        self.call("GET", U, token=utok, want=403)
        self.call("GET", U, want=401)

        Q = "/api/admin/quotas/"
        q = self.call("POST", Q, body={"user_id": u["id"], "group_id": g["id"], "tpm": 100000},
                      token=tok, want=201).json
        self.assertIn("api_key", q)
        got = self.call("GET", Q + "%d/" % q["id"], Q + "{id}/", token=tok, want=200).json
        self.assertNotIn("api_key", got)
        key = self.call("POST", Q + "%d/reset_api_key/" % q["id"], Q + "{id}/reset_api_key/",
                        token=tok, want=200).json["api_key"]
        self.call("GET", "/api/quotas/", token=key, want=200)

        # every field of a record schema (but the write-only ones) is in its answer
        for name, val in (("Provider", p), ("Model", m), ("Group", g), ("User", u),
                          ("Quota", got)):
            props, _ = self.sch.merged(self.doc["components"]["schemas"][name])
            want = {k for k, s in props.items() if not self.sch.resolve(s).get("writeOnly")}
            if name == "Quota":
                want.discard("api_key")  # only in the answer to create
            self.assertEqual(set(val), want, name)

        # /v1: the route's upstream is a closed port, so this is an upstream error
        self.call("GET", "/v1/models", token=key, want=200)
        self.call("GET", "/v1/models/m1", "/v1/models/{model}", token=key, want=200)
        self.call("GET", "/v1/usage", token=key, want=200)
        self.call("GET", "/v1/usage", token="sk-not-a-key", want=401)
        r = self.call("POST", "/v1/chat/completions", body={
            "model": "m1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
            token=key)
        self.assertGreaterEqual(r.status, 500, r.body)
        self.call("POST", "/v1/chat/completions", body={
            "model": "nope", "messages": [{"role": "user", "content": "hi"}]}, token=key,
            want=404)

        # the audit record billing writes for it
        def chat_record():
            res = gw.http("GET", "/api/admin/requests/?model=m1", token=tok).json["results"]
            return any(x["endpoint"] == "chat.completions" for x in res)
        harness.wait_for(chat_record, 30, "the audit record of the chat call")
        recs = self.call("GET", "/api/admin/requests/?model=m1", "/api/admin/requests/",
                         token=tok, want=200).json
        props, _ = self.sch.merged(self.doc["components"]["schemas"]["AuditRecord"])
        for rec in recs["results"]:
            self.assertEqual(set(rec), set(props))
        self.call("GET", Q + "%d/requests/" % q["id"], Q + "{id}/requests/", token=tok, want=200)
        self.call("GET", "/api/admin/statistics/?group_by=model", "/api/admin/statistics/",
                  token=tok, want=200)
        self.call("GET", Q + "%d/statistics/?group_by=day" % q["id"], Q + "{id}/statistics/",
                  token=tok, want=200)

        R = "/api/admin/requests/"
        rid = recs["results"][0]["id"]
        self.call("GET", R + rid + "/", R + "{request_id}/", token=tok, want=200)
        self.call("GET", R + "0" * 32 + "/", R + "{request_id}/", token=tok, want=404)
        self.call("GET", R + rid + "/?since=x", R + "{request_id}/", token=tok, want=400)
        self.call("GET", R + "export/?format=csv", R + "export/", token=tok, want=200)
        self.call("GET", R + "export/?format=xml", R + "export/", token=tok, want=400)
        self.call("GET", R + "export/", token=utok, want=403)
        self.call("GET", "/api/admin/warnings/?webhook_state=pending", "/api/admin/warnings/",
                  token=tok, want=200)
        self.call("GET", "/api/admin/warnings/?webhook_state=x", "/api/admin/warnings/",
                  token=tok, want=400)
        self.call("GET", "/api/admin/status/", token=tok, want=200)
        self.call("GET", "/api/admin/status/", token=utok, want=403)
        self.call("GET", "/api/requests/?model=m1", "/api/requests/", token=utok, want=200)
        self.call("GET", "/api/requests/?status=1", "/api/requests/", token=key, want=400)
        self.call("POST", "/api/quotas/%d/reset_api_key/" % q["id"], "/api/quotas/{id}/reset_api_key/",
                  token=utok, want=200)
        self.call("POST", "/api/quotas/%d/reset_api_key/" % q["id"], "/api/quotas/{id}/reset_api_key/",
                  token=tok, want=404)
        self.call("POST", U + "%d/reset-all-keys/" % u["id"], U + "{id}/reset-all-keys/",
                  token=tok, want=200)
        self.call("DELETE", Q + "%d/" % q["id"], Q + "{id}/", token=tok, want=204)
        self.call("GET", "/healthz", want=200)
        self.call("POST", "/api/auth/logout/", token=utok, want=204)

    def test_document_served(self):
        r = self.call("GET", "/api/openapi.json", want=200)
        self.assertEqual(r.json, self.doc)
        self.call("GET", "/api/openapi.json/", "/api/openapi.json", want=200)


if __name__ == "__main__":
    unittest.main(verbosity=2)
