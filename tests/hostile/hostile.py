"""hostile.py - shared helpers of the hostile suite (stdlib only; not a test).

Every test_*.py here runs its own tokenauditd (tests/integration/harness.py)
on ephemeral ports, tries many named cases against it and reports every
failing case at the end (one failure does not hide the others):

    cases = Cases("auth")
    cases.run("jwt.alg_none", fn, arg...)   # fn raises AssertionError to fail
    ...
    cases.finish()                          # prints a summary, exits 1 on failure

`python3 tests/hostile/test_auth.py jwt.alg` runs only the cases whose name
contains one of the arguments (set-up still runs).

expect() checks one answer: the exact status, and optionally the error code and
the field named (error.param or error.fields); its message names the case, the
request, the status expected and got, and an excerpt of the body.

Snapshot() is "nothing written, nothing charged": `tokenaudit ledger dump
--json` (users, providers, models, groups, quotas with their usage, keys,
holds, the audit counts, the id counters) taken before a case and compared
after it; the difference is named. The revoked-token count is left out (a
logout writes it) unless asked for.
"""

import base64
import hashlib
import http.client
import hmac
import json
import os
import socket
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness  # noqa: E402
import proxyutil  # noqa: E402

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")


def excerpt(body, n=300):
    if body is None:
        return "<none>"
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    body = body.replace("\r", "\\r").replace("\n", "\\n")
    return body if len(body) <= n else body[:n] + "...(%d bytes)" % len(body)


def error_fields(r):
    """The field names an error answer names: error.param and the keys of error.fields."""
    try:
        err = r.json["error"]
    except (TypeError, KeyError):
        return set()
    names = set()
    if err.get("param"):
        names.add(err["param"])
    if isinstance(err.get("fields"), dict):
        names.update(err["fields"].keys())
    return names


def expect(what, r, status, code=None, field=None):
    """Assert the answer r has this exact status (an int or a tuple of allowed
    ones), error code and named field (field may be a dotted path; a name that
    ends with it is accepted, e.g. "routes[0].upstream_name" for
    "upstream_name")."""
    ok_status = status if isinstance(status, tuple) else (status,)
    if r.status not in ok_status:
        raise AssertionError("%s: status expected %s, got %s; body: %s" %
                             (what, "/".join(map(str, ok_status)), r.status, excerpt(r.body)))
    if code is not None:
        got = None
        try:
            got = r.json["error"]["code"]
        except (TypeError, KeyError):
            pass
        if got != code:
            raise AssertionError("%s: error code expected %r, got %r; body: %s" % (what, code, got,
                                                                                  excerpt(r.body)))
    if field is not None:
        names = error_fields(r)
        if not any(n == field or n.endswith("." + field) or n.endswith(field) or n.startswith(field + "[")
                   or n.startswith(field + ".") for n in names):
            raise AssertionError("%s: the error should name the field %r, names %r; body: %s" %
                                 (what, field, sorted(names), excerpt(r.body)))
    return r


def check(cond, what):
    if not cond:
        raise AssertionError(what)


class Cases:
    """Named cases: run each, keep going on failure, report all at the end."""

    def __init__(self, suite):
        self.suite = suite
        self.only = [a for a in sys.argv[1:] if not a.startswith("-")]
        self.failed = []
        self.passed = 0
        self.skipped = 0
        self.t0 = time.monotonic()

    def wanted(self, name):
        return not self.only or any(o in name for o in self.only)

    def run(self, name, fn, *args, **kw):
        """Run fn(*args, **kw) as case `name`; returns its value, or None if it failed."""
        if not self.wanted(name):
            self.skipped += 1
            return None
        try:
            v = fn(*args, **kw)
        except AssertionError as e:
            self.failed.append((name, str(e)))
            sys.stdout.write("FAIL %s.%s: %s\n" % (self.suite, name, e))
            sys.stdout.flush()
            return None
        except Exception as e:  # an unexpected error is a failure of this case too
            self.failed.append((name, "%s: %s" % (type(e).__name__, e)))
            sys.stdout.write("FAIL %s.%s: %s\n%s" % (self.suite, name, repr(e), traceback.format_exc()))
            sys.stdout.flush()
            return None
        self.passed += 1
        sys.stdout.write("ok   %s.%s\n" % (self.suite, name))
        sys.stdout.flush()
        return v

    def finish(self):
        sys.stdout.write("\n%s: %d passed, %d failed, %d not selected (%.1f s)\n" %
                         (self.suite, self.passed, len(self.failed), self.skipped, time.monotonic() - self.t0))
        for name, msg in self.failed:
            sys.stdout.write("  FAILED %s.%s: %s\n" % (self.suite, name, msg[:2000]))
        sys.stdout.flush()
        sys.exit(1 if self.failed else 0)


# ---- state snapshots ---------------------------------------------------------

def dump(gw):
    return proxyutil.ledger_dump(gw)


def _comparable(d, with_revoked, ignore=()):
    d = json.loads(json.dumps(d))
    if not with_revoked:
        d.pop("revoked_jwt", None)
    for k in ignore:  # dotted paths: "audit", "meta.audit"
        node, last = d, k.split(".")[-1]
        for part in k.split(".")[:-1]:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return d


def _diff(a, b, path=""):
    """The first difference between two JSON values, as a sentence."""
    if type(a) is not type(b):
        return "%s: %s -> %s" % (path or "<root>", excerpt(json.dumps(a), 200), excerpt(json.dumps(b), 200))
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a:
                return "%s.%s added: %s" % (path, k, excerpt(json.dumps(b[k]), 200))
            if k not in b:
                return "%s.%s removed" % (path, k)
            d = _diff(a[k], b[k], "%s.%s" % (path, k))
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return "%s: %d entries -> %d; now %s" % (path, len(a), len(b), excerpt(json.dumps(b), 300))
        for i, (x, y) in enumerate(zip(a, b)):
            d = _diff(x, y, "%s[%d]" % (path, i))
            if d:
                return d
        return None
    return None if a == b else "%s: %r -> %r" % (path, a, b)


# what an audited /v1 answer changes in the dump, and nothing else may
AUDIT = ("audit", "meta.audit", "meta.ledger.applied_ticket", "meta.ledger.ring_id")


class Snapshot:
    """The ledger as `ledger dump --json` shows it, to assert nothing changed.
    ignore: parts left out (dotted paths); AUDIT where a refused /v1 request
    leaves its audit record."""

    def __init__(self, gw, with_revoked=False, ignore=()):
        self.gw = gw
        self.with_revoked = with_revoked
        self.ignore = ignore
        self.before = _comparable(dump(gw), with_revoked, ignore)

    def assert_unchanged(self, what):
        after = _comparable(dump(self.gw), self.with_revoked, self.ignore)
        d = _diff(self.before, after)
        if d:
            raise AssertionError("%s: something was written: %s" % (what, d))


# ---- the end of every hostile test -----------------------------------------

def sanitizer_reports(text):
    return [m for m in SANITIZER_MARKERS if m in text]


def finish_gateway(gw):
    """`tokenaudit ledger verify` exits 0, the server stops cleanly (exit 0, no
    child left) and its log holds no sanitizer report."""
    proxyutil.verify(gw)
    gw.stop()
    found = sanitizer_reports(gw.log())
    check(not found, "sanitizer report (%s) in the server log:\n%s" % (", ".join(found), gw.log()[-20000:]))


# ---- JWTs --------------------------------------------------------------------

def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def jwt_parts(tok):
    h, p, s = tok.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(p)), s


def jwt_make(header, payload, secret, alg="HS256"):
    """A JWT of header/payload signed with secret under alg (HS256/384/512),
    or unsigned (empty signature) for alg None."""
    h = b64url(json.dumps(header, separators=(",", ":")).encode())
    p = b64url(json.dumps(payload, separators=(",", ":")).encode())
    msg = ("%s.%s" % (h, p)).encode()
    if alg is None:
        return "%s.%s." % (h, p)
    dig = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    return "%s.%s.%s" % (h, p, b64url(hmac.new(secret, msg, dig).digest()))


def jwt_secret(gw):
    with open(os.path.join(gw.data_dir, "jwt.secret"), "rb") as f:
        return f.read()


# ---- users -------------------------------------------------------------------

def make_user(gw, admin_tok, email, password, role="user", name=None):
    body = {"email": email, "password": password, "role": role}
    if name is not None:
        body["name"] = name
    r = gw.http("POST", "/api/admin/users/", body, token=admin_tok)
    expect("create user %s" % email, r, 201)
    return r.json


def http_or_error(gw, *a, **kw):
    """gw.http(), with a connection error turned into a Response of status 0."""
    try:
        return gw.http(*a, **kw)
    except (OSError, ValueError, http.client.HTTPException) as e:
        return harness.Response(0, {}, None, repr(e).encode())


# ---- raw HTTP/1.1 ------------------------------------------------------------

class RawAnswer:
    """One answer read off a raw socket: status, headers (lower-cased), body
    (de-chunked), and the bytes that followed it."""

    def __init__(self, status, headers, body, rest):
        self.status, self.headers, self.body, self.rest = status, headers, body, rest
        self.json = None
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            pass


def read_answer(sock, buf=b""):
    """Read one HTTP/1.1 answer from sock (buf: bytes already read). Returns a
    RawAnswer, or None if the connection closed before a whole head."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        hdrs[k.strip().lower()] = v.strip()

    def more():
        c = sock.recv(65536)
        if not c:
            raise EOFError
        return c
    try:
        if hdrs.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                while b"\r\n" not in rest:
                    rest += more()
                size_line, _, rest = rest.partition(b"\r\n")
                n = int(size_line.split(b";")[0], 16)
                while len(rest) < n + 2:
                    rest += more()
                body += rest[:n]
                rest = rest[n + 2:]
                if n == 0:
                    break
        else:
            n = int(hdrs.get("content-length", "0"))
            while len(rest) < n:
                rest += more()
            body, rest = rest[:n], rest[n:]
    except EOFError:
        body = rest
        rest = b""
    return RawAnswer(status, hdrs, body, rest)


def drain(sock, wait):
    """Read until the peer closes or `wait` seconds pass without a byte.
    Returns (bytes read, closed). The wait only bounds a hang: a server that
    closes does so at once."""
    sock.settimeout(wait)
    got = b""
    while True:
        try:
            c = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return got, True
        except socket.timeout:
            return got, False
        if not c:
            return got, True
        got += c


def parse_answers(sock, buf):
    """Every whole answer in buf (sock may supply the rest of a cut one)."""
    out = []
    while buf and b"\r\n\r\n" in buf:
        a = read_answer(sock, buf)
        if a is None:
            break
        out.append(a)
        buf = a.rest
    return out


def raw_exchange(gw, data, port=None, wait=3.0):
    """Send raw bytes on a fresh connection; returns (the first RawAnswer or
    None, whether the server closed the connection, the answers after the
    first: a second answer means the bytes were read as two requests)."""
    s = socket.create_connection((gw.host, port or gw.port), timeout=20)
    try:
        s.sendall(data)
        try:
            first = read_answer(s)
        except (ConnectionResetError, BrokenPipeError):
            return None, True, []
        if first is None:
            return None, True, []
        more, closed = drain(s, wait)
        return first, closed, parse_answers(s, first.rest + more)
    finally:
        s.close()
