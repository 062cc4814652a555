"""test_edges.py - request bodies at and past max_body_size.

h2o's own body limit sits a margin above max_body_size (worker/server.c,
body_limit_h2o: max(64 KiB, 1/16) more), and every route enforces
max_body_size itself, so:

1. /v1 with a valid key and a body of max_body_size + 1 bytes: the proxy's own
   413 in OpenAI's shape, exactly one audit record (status 413, no cost),
   usage unchanged, nothing sent upstream.
2. A body of exactly max_body_size bytes is not refused for its size.
3. /v1 with a bad key and an over-limit body: 401 (the key is checked first),
   no record.
4. /api, /healthz and an unknown path with max_body_size + 1 bytes: JSON 413.
5. A body far beyond the margin: h2o's 413, rewritten to JSON, and one audit
   record (the proxy checks the key through ta_worker_on_oversize).
"""

import json
import os
import socket
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from proxyutil import Tenant, audit_records, chat_body, check, gateway_with_fake, nano, record  # noqa: E402

MAX_BODY = 64 * 1024
MARGIN = 64 * 1024  # body_limit_h2o() at this max_body_size


def body_of(size):
    """A valid chat request of exactly size bytes."""
    base = json.dumps(chat_body(messages=[{"role": "user", "content": ""}])).encode()
    pad = size - len(base)
    assert pad >= 0
    b = json.dumps(chat_body(messages=[{"role": "user", "content": "x" * pad}])).encode()
    assert len(b) == size, (len(b), size)
    return b


def post_raw(gw, path, key, raw):
    """A POST on a plain socket that tolerates the server answering (and
    closing) before the whole body was written. Returns (status, headers, body)."""
    s = socket.create_connection((gw.host, gw.port), timeout=20)
    head = ("POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\nConnection: close\r\n" % (path, gw.host, gw.port, len(raw)))
    if key:
        head += "Authorization: Bearer %s\r\n" % key
    s.sendall(head.encode() + b"\r\n")
    try:
        s.sendall(raw)
    except OSError:
        pass  # the answer came first; read it below
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    s.close()
    hdr, _, body = data.partition(b"\r\n\r\n")
    lines = hdr.decode("latin-1").split("\r\n")
    check(lines and lines[0].startswith("HTTP/1.1 "), "an HTTP answer: %r" % data[:200])
    status = int(lines[0].split()[1])
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        body = body[:int(headers["content-length"])]
    return status, headers, body


def openai_error(what, status, headers, body, code=None):
    check(headers.get("content-type", "").startswith("application/json"), "%s: JSON answer: %r" % (what, headers))
    err = json.loads(body).get("error")
    check(isinstance(err, dict) and isinstance(err.get("message"), str) and err["message"] and
          isinstance(err.get("type"), str) and "code" in err and "param" in err,
          "%s: OpenAI error shape: %r" % (what, body))
    if code is not None:
        check(err["code"] == code, "%s: code %r, expected %r" % (what, err["code"], code))
    return err


def main():
    with gateway_with_fake(workers=1, env={"TOKENAUDIT_MAX_BODY_SIZE": str(MAX_BODY)}) as (gw, fake):
        t = Tenant(gw, fake)
        before = t.settled()
        calls = len(fake.calls())

        # 1. one byte over: the proxy's 413, on the books
        st, h, body = post_raw(gw, "/v1/chat/completions", t.key, body_of(MAX_BODY + 1))
        check(st == 413, "max+1: %d %r" % (st, body[:300]))
        err = openai_error("max+1", st, h, body, "request_too_large")
        check(err["type"] == "invalid_request_error", "max+1: type %s" % err["type"])
        rid = h.get("x-request-id")
        check(rid, "max+1: X-Request-Id")
        rec = record(gw, rid)
        check(rec["status"] == 413 and nano(rec["cost"]) == 0, "max+1: record %r" % rec)
        after = t.settled()
        for k in ("cost_used", "tokens_used", "requests_used"):
            check(after[k] == before[k], "max+1 charged nothing: %s %r -> %r" % (k, before[k], after[k]))
        check(len(fake.calls()) == calls, "max+1: nothing went upstream")
        sys.stdout.write("max+1 -> 413 with one record, no charge\n")

        # 2. exactly the limit: not refused for its size
        st, h, body = post_raw(gw, "/v1/chat/completions", t.key, body_of(MAX_BODY))
        check(st == 200, "exactly max: %d %r" % (st, body[:300]))
        record(gw, h["x-request-id"])

        # 3. a bad key with an over-limit body: the key first
        st, h, body = post_raw(gw, "/v1/chat/completions", "sk-not-a-key", body_of(MAX_BODY + 1))
        check(st == 401, "bad key, max+1: %d %r" % (st, body[:300]))
        openai_error("bad key, max+1", st, h, body)
        bad_rid = h.get("x-request-id")

        # 4. the other routes enforce the limit themselves
        for path, key in (("/api/admin/users/", t.tok), ("/healthz", None), ("/nowhere", None)):
            st, h, body = post_raw(gw, path, key, body_of(MAX_BODY + 1))
            check(st == 413, "%s max+1: %d %r" % (path, st, body[:300]))
            openai_error(path, st, h, body)
        st, h, body = post_raw(gw, "/api/admin/users/", t.tok, body_of(MAX_BODY))
        check(st != 413, "/api exactly max: %d" % st)

        # 5. far beyond the margin: h2o's own 413, in JSON, recorded by the proxy (ta_worker_on_oversize)
        st, h, body = post_raw(gw, "/v1/chat/completions", t.key, body_of(MAX_BODY + MARGIN + 4096))
        check(st == 413, "far over: %d %r" % (st, body[:300]))
        openai_error("far over", st, h, body)
        far_rid = h.get("x-request-id")
        # a later request's record is there, so these two would be too
        st, h, body = post_raw(gw, "/v1/chat/completions", t.key, body_of(MAX_BODY + 1))
        check(st == 413, "max+1 again: %d" % st)
        record(gw, h["x-request-id"])
        ids = [r["id"] for r in audit_records(gw)]
        check(ids.count(rid) == 1, "max+1: exactly one record")
        check(ids.count(far_rid) == 1, "far over: exactly one record")
        check(bad_rid not in ids, "bad key: no record")
        sys.stdout.write("far over -> JSON 413 with one record\n")
    print("ok")


if __name__ == "__main__":
    main()
