"""test_oversize.py - a body far over max_body_size, with a valid key, is
answered 413 in the API's error shape and recorded once, whatever the
protocol (docs/ARCHITECTURE.md "Bodies over the limit").

max_body_size is 4 MiB; each client sends (or declares) 64 MiB, far past
h2o's own limit (max_body_size + max(64 KiB, 1/16)):
  - HTTP/1.1 with Content-Length: h2o refuses after the head; the proxy
    records it (ta_worker_on_oversize);
  - HTTP/1.1 chunked: h2o refuses once the decoded body passes its limit;
  - HTTP/2 over TLS (ALPN h2), with and without content-length, and HTTP/2
    with prior knowledge on cleartext: the body-limit reader (worker/accept.c)
    ends the body one frame past max_body_size, the proxy answers 413 - not a
    REFUSED_STREAM reset - and the same connection goes on serving.
Each: status 413, {"error":{"code":"request_too_large",...}}, exactly one
audit record with that request id and status 413, nothing sent upstream,
nothing charged. A body just under the limit still goes through. Ends with
ledger verify and a clean stop (no sanitizer report).
"""

import json
import os
import select
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import proxyutil  # noqa: E402
from proxyutil import Tenant, check, gateway_with_fake  # noqa: E402

from h2client import H2, make_cert  # noqa: E402

MAX_BODY = 4 * 1024 * 1024
BIG = 64 * 1024 * 1024
PIECE = 256 * 1024


def big_prefix():
    return b'{"model": "gpt-test", "messages": [{"role": "user", "content": "'


# ---- HTTP/1.1 -------------------------------------------------------------------------------

def read_http1_answer(sock, deadline):
    """Status, headers (lower-case) and body of one HTTP/1.1 answer with a
    Content-Length (h2o's errors have one)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        check(time.time() < deadline, "no answer head in time: %r" % buf[:200])
        chunk = sock.recv(65536)
        check(chunk, "the connection closed before an answer: %r" % buf[:200])
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for l in lines[1:]:
        k, v = l.split(":", 1)
        hdrs[k.strip().lower()] = v.strip()
    n = int(hdrs.get("content-length", "0"))
    while len(body) < n:
        check(time.time() < deadline, "answer body incomplete")
        chunk = sock.recv(65536)
        check(chunk, "the connection closed inside the answer body")
        body += chunk
    return status, hdrs, body[:n]


def http1_send_big(gw, key, chunked):
    """Sends the head, then body pieces until the gateway answers; returns
    (status, headers, body, bytes of body sent)."""
    head = ("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
            "Content-Type: application/json\r\n" % key)
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else "Content-Length: %d\r\n\r\n" % BIG
    s = socket.create_connection((gw.host, gw.port), timeout=30)
    deadline = time.time() + 60
    sent = 0
    try:
        s.sendall(head.encode())
        piece = b"a" * PIECE
        while sent < BIG:
            r, _, _ = select.select([s], [], [], 0)
            if r:
                break
            data = (b"%x\r\n" % PIECE + piece + b"\r\n") if chunked else piece
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += PIECE
        return read_http1_answer(s, deadline) + (sent,)
    finally:
        s.close()


# ---- HTTP/2 ---------------------------------------------------------------------------------

# ---- the cases ------------------------------------------------------------------------------

def check_413(what, status, headers, body):
    check(status == 413, "%s: status %r, expected 413; body %r" % (what, status, body[:300]))
    try:
        err = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        err = None
    check(err is not None and err.get("code") == "request_too_large" and
          err.get("type") == "invalid_request_error" and "4194304" in err.get("message", ""),
          "%s: the 413 is not the API's error shape naming the limit: %r" % (what, body[:300]))
    rid = headers.get("x-request-id")
    check(rid and len(rid) == 32, "%s: no x-request-id on the 413: %r" % (what, headers))
    return rid


def check_one_record(gw, t, what, rid):
    rec = proxyutil.record(gw, rid)
    check(rec["status"] == 413 and rec["quota_id"] == t.quota_id and rec["error_type"] == "invalid_request_error"
          and proxyutil.nano(rec["cost"]) == 0,
          "%s: the audit record is %r" % (what, rec))
    same = [r for r in proxyutil.audit_records(gw) if r["id"] == rid]
    check(len(same) == 1, "%s: %d audit records for one request" % (what, len(same)))


def main():
    with gateway_with_fake(workers=2, start=False, env={"TOKENAUDIT_MAX_BODY_SIZE": str(MAX_BODY)}) as (gw, fake):
        cert, keyf = make_cert(gw.tmp)
        tls_port = harness.free_port()
        gw.env["TOKENAUDIT_LISTEN"] = "127.0.0.1:%d, https://127.0.0.1:%d" % (gw.port, tls_port)
        gw.env.update({"TOKENAUDIT_TLS_CERT_FILE": cert, "TOKENAUDIT_TLS_KEY_FILE": keyf})
        gw.start()
        t = Tenant(gw, fake, quota={"period": "month", "cost_limit": "10"}, max_output_tokens=50)
        calls = len(fake.lines("REQ "))
        records = len(proxyutil.audit_records(gw))
        n = 0

        for chunked in (False, True):
            what = "HTTP/1.1 %s 64 MiB body" % ("chunked" if chunked else "Content-Length")
            status, hdrs, body, sent = http1_send_big(gw, t.key, chunked)
            rid = check_413(what, status, hdrs, body)
            check(sent < BIG, "%s: the whole body was read before the answer" % what)
            check_one_record(gw, t, what, rid)
            n += 1
            print("ok: %s -> 413 after %d bytes sent, one record" % (what, sent))

        big_body = big_prefix() + b"a" * (BIG - len(big_prefix()))
        for label, port, ca in (("TLS", tls_port, cert), ("cleartext prior knowledge", gw.port, None)):
            for declared in (True, False):
                what = "HTTP/2 (%s) 64 MiB body, content-length %s" % (label, "declared" if declared else "absent")
                c = H2(port, ca)
                try:
                    extra = [("content-type", "application/json")]
                    if declared:
                        extra.append(("content-length", str(BIG)))
                    sid = c.headers("POST", "/v1/chat/completions", extra, token=t.key)
                    sent = c.send_body(sid, big_body)
                    s = c.wait(sid)
                    check(s["reset"] != 7, "%s: the stream was refused (RST_STREAM REFUSED_STREAM) instead of "
                          "answered 413" % what)
                    rid = check_413(what, s["status"], s["headers"], s["body"])
                    check(sent < BIG, "%s: the whole body was taken before the answer" % what)
                    # the connection goes on: a small request on it is answered
                    sid2 = c.headers("POST", "/v1/chat/completions", [("content-type", "application/json")],
                                     token=t.key)
                    c.send_body(sid2, json.dumps(proxyutil.chat_body()).encode())
                    s2 = c.wait(sid2)
                    check(s2["status"] == 200, "%s: the next request on the connection got %r (reset %r, "
                          "connection %r): %r" % (what, s2["status"], s2["reset"], c.terminated, s2["body"][:200]))
                finally:
                    c.close()
                check_one_record(gw, t, what, rid)
                n += 2
                print("ok: %s -> 413 after %d bytes sent, one record; the connection serves on" % (what, sent))

        # just under the limit: not refused for its size
        c = H2(tls_port, cert)
        try:
            body = big_prefix() + b"a" * (MAX_BODY - 200) + b'"}], "max_tokens": 5}'
            check(len(body) <= MAX_BODY, "test body size")
            sid = c.headers("POST", "/v1/chat/completions", [("content-type", "application/json")], token=t.key)
            c.send_body(sid, body)
            s = c.wait(sid)
            check(s["status"] == 200, "a body of %d bytes (under the limit) got %r: %r" %
                  (len(body), s["status"], s["body"][:300]))
        finally:
            c.close()
        n += 1

        # the 413s reached nobody and charged nothing; one more upstream call (the small requests) each
        got = len(fake.lines("REQ ")) - calls
        check(got == n - 6, "upstream calls: %d, expected %d (only the small requests)" % (got, n - 6))
        proxyutil.audit_records(gw, applied=records + n)
        u = t.settled()
        check(u["in_flight"] == 0 and proxyutil.nano(u["cost_held"]) == 0, "holds left: %r" % u)
        proxyutil.verify(gw)
    print("ok: oversized bodies answered 413 and recorded once over HTTP/1.1 and HTTP/2")


if __name__ == "__main__":
    main()
