"""proxyutil.py - shared helpers of the /v1 acceptance tests (stdlib only):
the fake upstream as a child process (and a gateway with the fake beside it,
gateway_with_fake), the admin API as a superadmin (Admin: providers, models,
groups, quotas), a tenant (provider, models, group, quota) made through it,
quota usage, waiting for billing to settle, the audit records (CLI export),
the ledger's holds (CLI dump) and `ledger verify`.

Not a test itself (ctest picks up test_*.py only).
"""

import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

NANO = 1000000000


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def nano(s):
    """A money string ("0.000125") or None as an int count of nano-units."""
    if s is None:
        return 0
    s = str(s)
    neg = s.startswith("-")
    if neg:
        s = s[1:]
    whole, _, frac = s.partition(".")
    v = int(whole or "0") * NANO + int((frac + "000000000")[:9])
    return -v if neg else v


class Fake:
    """tests/tools/fake_upstream on an ephemeral port, logging to tmp/fake.log."""

    def __init__(self, tmp, workers=1, args=()):
        self.log_path = os.path.join(tmp, "fake.log")
        args = [harness.binary("fake_upstream"), "--port", "0", "--log", self.log_path] + list(args)
        if workers > 1:
            args += ["-t", str(workers)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE)
        line = self.proc.stdout.readline().decode()
        check(line.startswith("listening on "), line)
        self.port = int(line.split()[2])
        self.url = "http://127.0.0.1:%d/v1" % self.port
        self.base = "http://127.0.0.1:%d" % self.port  # an anthropic provider's base_url: no /v1

    def lines(self, needle=""):
        try:
            with open(self.log_path) as f:
                return [l.rstrip("\n") for l in f if needle in l]
        except FileNotFoundError:
            return []

    def calls(self, path="/v1/chat/completions"):
        """REQ lines for path, parsed: dicts with scenario and (p, c, k) usage."""
        out = []
        for l in self.lines("REQ "):
            parts = l.split()
            if len(parts) < 4 or parts[3] != path:
                continue
            d = {"line": l}
            for p in parts[4:]:
                k, _, v = p.partition("=")
                d[k] = v
            if "usage" in d:
                d["usage"] = tuple(int(x) for x in d["usage"].split(","))
            out.append(d)
        return out

    def script(self, scenario="ok", usage=None, chunks=None, times=1):
        """The next `times` /v1 POSTs answer with `scenario` (usage "p,c,k[,w]",
        chunks): for requests whose body or headers cannot carry the fake's
        own fields (translated on the way, or made by a client library)."""
        body = {"scenario": scenario, "times": times}
        if usage:
            body["usage"] = usage
        if chunks:
            body["chunks"] = chunks
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request("POST", "/_fake/control", json.dumps(body))
            check(c.getresponse().status == 200, "fake control")
        finally:
            c.close()

    def stats(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request("GET", "/_fake/stats")
            return json.loads(c.getresponse().read())
        finally:
            c.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@contextlib.contextmanager
def gateway_with_fake(fake_workers=1, stop=True, **gateway_kw):
    """`with gateway_with_fake(workers=2) as (gw, fake):` a harness.Gateway
    (gateway_kw) and the fake upstream beside it. The fake is stopped however
    the body ends; after a body that ended normally, stop=True then stops the
    gateway with gw.stop() (exit 0, no child left, no sanitizer report). A test
    that stops (or waits for) the gateway itself passes stop=False."""
    with harness.Gateway(**gateway_kw) as gw:
        fake = Fake(gw.tmp, workers=fake_workers)
        try:
            yield gw, fake
        finally:
            fake.stop()
        if stop:
            gw.stop()


def route(provider_id, upstream_name, priority=1):
    """One entry of a model's routes."""
    return {"provider_id": provider_id, "upstream_name": upstream_name, "priority": priority}


class Admin:
    """The admin API as the superadmin: requests that assert their status, and
    the control plane made through it."""

    def __init__(self, gw):
        self.gw = gw
        self.tok = gw.login()

    def relogin(self):
        self.tok = self.gw.login()

    def post(self, path, body, expect=201):
        r = self.gw.http("POST", path, body, token=self.tok)
        check(r.status == expect, "%s: %s %s" % (path, r.status, r.body))
        return r.json

    def get(self, path, expect=200):
        r = self.gw.http("GET", path, token=self.tok)
        check(r.status == expect, "GET %s: %s %s" % (path, r.status, r.body))
        return r.json

    def add_provider(self, name, base_url, api_key, ptype="openai", **extra):
        return self.post("/api/admin/providers/", dict({"name": name, "type": ptype, "base_url": base_url,
                                                        "api_key": api_key}, **extra))

    def add_model(self, name, routes, **fields):
        """routes: route() dicts (or (provider_id, upstream_name) pairs, in priority order)."""
        rs = [r if isinstance(r, dict) else route(r[0], r[1], i + 1) for i, r in enumerate(routes)]
        return self.post("/api/admin/models/", dict(fields, name=name, routes=rs))

    def add_group(self, name, model_ids):
        return self.post("/api/admin/groups/", {"name": name, "model_ids": list(model_ids)})

    def add_quota(self, user_id, group_id, **limits):
        """POST /api/admin/quotas/; the answer carries the quota's api_key."""
        return self.post("/api/admin/quotas/", dict({"user_id": user_id, "group_id": group_id}, **limits))

    def first_user_id(self):
        """The superadmin made by `tokenaudit init` (the first user listed)."""
        return self.gw.http("GET", "/api/admin/users/", token=self.tok).json["results"][0]["id"]


def both_types(adm, fake, oai_key="sk-oai-1111", anth_key="sk-ant-2222"):
    """An openai-type and an anthropic-type provider, both the fake: (oai, anth)."""
    oai = adm.add_provider("oai", fake.url, oai_key)
    anth = adm.add_provider("anth", fake.base, anth_key, ptype="anthropic")
    return oai, anth


def chat_model(adm, name, provider, upstream, **fields):
    """A model with the chat and streaming capabilities on one route."""
    return adm.add_model(name, [(provider["id"], upstream)], **dict({"capabilities": ["chat", "streaming"]}, **fields))


class Tenant(Admin):
    """One provider (the fake), a chat model, an embeddings model, a model outside
    the group, a group and one quota (limits from quota=...)."""

    def __init__(self, gw, fake, quota=None, input_price="1", output_price="2", max_output_tokens=None,
                 timeout_s=3, extra_models=()):
        super().__init__(gw)
        prov = self.add_provider("fake", fake.url, "sk-upstream-secret-7777", timeout_s=timeout_s)
        self.provider_id = prov["id"]
        prices = {"input_price": input_price, "output_price": output_price}
        chat = dict(prices, capabilities=["chat", "streaming"])
        if max_output_tokens:
            chat["max_output_tokens"] = max_output_tokens
        self.chat = self.add_model("gpt-test", [(prov["id"], "up-model")], **chat)
        self.emb = self.add_model("emb-test", [(prov["id"], "up-emb")], capabilities=["embeddings"], **prices)
        self.other = self.add_model("not-in-group", [(prov["id"], "y")], **prices)
        ids = [self.chat["id"], self.emb["id"]]
        for m in extra_models:
            ids.append(self.post("/api/admin/models/", dict(prices, **m))["id"])
        self.group = self.add_group("g", ids)
        self.user_id = self.first_user_id()
        self.quota, self.key = self.new_quota(quota or {"period": "month", "cost_limit": "100"})
        self.quota_id = self.quota["id"]

    def new_quota(self, limits):
        q = self.add_quota(self.user_id, self.group["id"], **limits)
        return q, q["api_key"]

    def quota_get(self, qid=None):
        r = self.gw.http("GET", "/api/admin/quotas/%d/" % (qid or self.quota_id), token=self.tok)
        check(r.status == 200, "quota get: %s %s" % (r.status, r.body))
        return r.json

    def usage(self, qid=None):
        return self.quota_get(qid)["usage"]

    def settled(self, qid=None, timeout=30):
        """Wait until billing applied every event of the quota: no request in
        flight, nothing held. Returns the usage."""
        def done():
            u = self.usage(qid)
            return u if u["in_flight"] == 0 and nano(u["cost_held"]) == 0 else None
        return harness.wait_for(done, timeout, "quota %s settled (in_flight 0, cost_held 0)" % (qid or self.quota_id))


def v1(gw, key, method, path, body=None, headers=None, conn=None, timeout=20, raw=None):
    return gw.http(method, "/v1" + path, body, token=key, headers=headers, conn=conn, timeout=timeout, raw=raw)


def chat_body(**kw):
    b = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
    b.update(kw)
    return b


def sse_events(raw, errors="replace"):
    """The data: payloads of an SSE body, in order. errors="strict" makes bytes
    that are not UTF-8 an error instead of replacement characters."""
    out = []
    for block in raw.decode("utf-8", errors).split("\n\n"):
        block = block.strip()
        if block.startswith("data: "):
            out.append(block[6:])
    return out


def named_events(raw):
    """The events of an SSE body as (event name or None, parsed data), in order."""
    out = []
    for block in raw.decode().split("\n\n"):
        name, data = None, None
        for line in block.strip().split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
        if data is not None:
            out.append((name, data))
    return out


SDK_DIR = os.path.join(harness.SOURCE_DIR, "tests", "sdk")


def sdk_modules():
    """tests/sdk/node_modules with every dependency of tests/sdk/package.json:
    `npm ci` when one is missing, under a lock the SDK tests share (npm ci
    removes node_modules first, which would pull it from under a test that
    runs beside)."""
    with open(os.path.join(SDK_DIR, "package.json")) as f:
        deps = list(json.load(f)["dependencies"])
    tag = hashlib.sha256(SDK_DIR.encode()).hexdigest()[:16]
    with open(os.path.join(tempfile.gettempdir(), "tokenaudit-sdk-%s.lock" % tag), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        missing = [d for d in deps if not os.path.isdir(os.path.join(SDK_DIR, "node_modules", d))]
        if missing:
            npm = shutil.which("npm")
            check(npm is not None, "npm is not installed and tests/sdk/node_modules lacks %s" % missing)
            p = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=SDK_DIR, capture_output=True, text=True,
                               timeout=300)
            check(p.returncode == 0, "npm ci failed in %s:\n%s%s" % (SDK_DIR, p.stdout, p.stderr))


def audit_records(gw, applied=None, timeout=30):
    """Every audit record (tokenaudit audit export --format jsonl). With
    applied=N, waits until at least N records are there."""
    def get():
        p = harness.run_cli("audit", "export", "--data-dir", gw.data_dir, "--format", "jsonl", env=gw.env)
        recs = [json.loads(l) for l in p.stdout.splitlines() if l.strip()]
        return recs if applied is None or len(recs) >= applied else None
    if applied is None:
        return get()
    return harness.wait_for(get, timeout, "%d audit records" % applied, interval=0.2)


def ledger_dump(gw):
    """tokenaudit ledger dump --json, parsed."""
    p = harness.run_cli("ledger", "dump", "--data-dir", gw.data_dir, "--json", env=gw.env)
    return json.loads(p.stdout)


def holds(gw):
    """The holds in the ledger now (ledger dump; the dump always has the table)."""
    return ledger_dump(gw)["holds"]


def verify(gw):
    """tokenaudit ledger verify: returns the CompletedProcess (asserting exit 0)."""
    p = harness.run_cli("ledger", "verify", "--data-dir", gw.data_dir, env=gw.env, check=False)
    check(p.returncode == 0, "ledger verify exited %d:\n%s%s" % (p.returncode, p.stdout, p.stderr))
    return p


def cost_of(prompt, completion, cached=0, input_price=1, output_price=2, cache_read_price=None):
    """The cost in nano-units at whole-unit prices per 1M tokens (exact: 1 unit
    per 1M tokens is 1000 nano per token). cached tokens are inside prompt."""
    crp = input_price if cache_read_price is None else cache_read_price
    num = (prompt - cached) * input_price * NANO + cached * crp * NANO + completion * output_price * NANO
    return -(-num // 1000000)


def record(gw, rid):
    """The audit record of request rid, once billing wrote it."""
    def get():
        for r in audit_records(gw):
            if r["id"] == rid:
                return r
        return None
    return harness.wait_for(get, 30, "audit record %s" % rid, interval=0.1)


def raw_stream_then_drop(gw, key, body, path="/v1/chat/completions"):
    """Send a streaming request on a raw socket, read until the first SSE event
    arrived, then reset the connection. Returns the X-Request-Id."""
    s = socket.create_connection((gw.host, gw.port), timeout=20)
    data = json.dumps(body).encode()
    s.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode() +
              b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(data)).encode() +
              b"\r\n\r\n" + data)
    got = b""
    while b"data: " not in got.split(b"\r\n\r\n", 1)[-1] or b"\r\n\r\n" not in got:
        chunk = s.recv(65536)
        check(chunk, "the gateway closed before the first event: %r" % got)
        got += chunk
    head = got.split(b"\r\n\r\n", 1)[0].decode()
    check(head.startswith("HTTP/1.1 200"), head)
    rid = [l.split(":", 1)[1].strip() for l in head.split("\r\n") if l.lower().startswith("x-request-id:")][0]
    # RST instead of FIN: the gateway's next write fails at once
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    return rid


def raw_request(gw, key, body, path="/v1/chat/completions"):
    """POST path on a raw socket with Connection: close, read to EOF. Returns
    (status, headers, body, complete): body de-chunked as far as it arrived;
    complete is False when the chunked body ended without its last chunk (a
    cut stream)."""
    s = socket.create_connection((gw.host, gw.port), timeout=30)
    data = json.dumps(body).encode()
    s.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer " +
              key.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: " +
              str(len(data)).encode() + b"\r\n\r\n" + data)
    got = b""
    while True:
        try:
            chunk = s.recv(1 << 20)
        except ConnectionResetError:
            break
        if not chunk:
            break
        got += chunk
    s.close()
    if not got:
        return 0, {}, b"", False
    head, _, rest = got.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    if hdrs.get("transfer-encoding") != "chunked":
        return status, hdrs, rest, True
    out, complete = b"", False
    while True:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            break
        n = int(size_line.split(b";")[0] or b"0", 16)
        if n == 0:
            complete = True
            break
        out += rest[:n]
        if len(rest) < n + 2:
            break
        rest = rest[n + 2:]
    return status, hdrs, out, complete
