"""test_http.py - hostile HTTP/1.1 and HTTP/2, slow and vanishing clients.

1. HTTP/1.1 length ambiguities (RFC 9112 6.3): two different Content-Length
   headers, Content-Length with Transfer-Encoding: chunked (with a second
   request hidden in the body), a Content-Length list or sign -> exactly 400,
   the connection closed, no second answer, nothing written or sent upstream.
2. HTTP/2 (TLS, ALPN h2; the client is Debian's python3-h2): a body over
   max_body_size, declared or not -> 413 (not REFUSED_STREAM); a stream reset
   in the middle of its body or of its answer -> the connection and the server
   keep serving, nothing charged for the unfinished request, the cut stream
   settles; a frame larger than SETTINGS_MAX_FRAME_SIZE -> GOAWAY
   FRAME_SIZE_ERROR, the server serving others.
3. Slow and vanishing HTTP/1.1 clients: slowloris headers, bodies that never
   complete, a client that leaves mid-stream -> the server keeps answering
   others meanwhile, nothing is charged for what never arrived, and once they
   are gone the workers hold no more descriptors than before (bounded wait).
The test ends with ledger verify and no sanitizer report in the server log.
"""

import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hostile import AUDIT, Cases, Snapshot, check, excerpt, expect, finish_gateway, raw_exchange  # noqa: E402
import harness  # noqa: E402  (on the path once hostile is imported)
import proxyutil  # noqa: E402
from proxyutil import Fake, Tenant, chat_body  # noqa: E402

import h2client  # noqa: E402
from h2client import H2, make_cert  # noqa: E402

MAX_BODY = 64 * 1024


class World:
    def __init__(self, gw, fake):
        self.gw, self.fake = gw, fake
        self.t = Tenant(gw, fake, quota={"period": "month", "cost_limit": "10"}, max_output_tokens=50,
                        timeout_s=30)

    def upstream_calls(self):
        return len(self.fake.lines("REQ "))


# ---- 1. HTTP/1.1 length ambiguities -----------------------------------------

def framing_requests(w):
    key = w.t.key.encode()
    body = json.dumps(chat_body()).encode()
    smuggled = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key + b"\r\n\r\n"
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key + \
        b"\r\nContent-Type: application/json\r\n"
    chunked = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    return [
        ("two_content_lengths", head + b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n" %
         (len(body), len(body) + len(smuggled)) + body + smuggled),
        ("two_content_lengths_reversed", head + b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n" %
         (len(body) + len(smuggled), len(body)) + body + smuggled),
        ("content_length_and_chunked", head + b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" %
         len(chunked + smuggled) + chunked + smuggled),
        ("chunked_and_content_length", head + b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n" %
         len(chunked) + chunked + smuggled),
        ("content_length_list", head + b"Content-Length: %d, %d\r\n\r\n" % (len(body), len(body) + 5) + body),
        ("content_length_plus_sign", head + b"Content-Length: +%d\r\n\r\n" % len(body) + body),
        ("content_length_negative", head + b"Content-Length: -1\r\n\r\n" + body),
    ]


def framing_case(w, name, data):
    snap = Snapshot(w.gw, ignore=AUDIT)
    calls = w.upstream_calls()
    first, closed, later = raw_exchange(w.gw, data)
    check(first is not None, "%s: the connection closed without an answer (expected 400)" % name)
    check(first.status == 400, "%s: status expected 400, got %s; body: %s" % (name, first.status,
                                                                            excerpt(first.body)))
    check(not later, "%s: the bytes were read as more requests: later answers %r" %
          (name, [(a.status, excerpt(a.body, 80)) for a in later]))
    check(closed, "%s: answered 400 but kept the connection open" % name)
    check(w.upstream_calls() == calls, "%s: the request reached the upstream" % name)
    snap.assert_unchanged(name)


# ---- 2. HTTP/2 -----------------------------------------------------------------

def h2_get_ok(w, h, what):
    sid = h.headers("GET", "/healthz", end=True)
    s = h.wait(sid)
    check(s["status"] == 200, "%s: GET /healthz on the same HTTP/2 connection: %r" % (what, s))


def h2_over_limit_case(w, declared):
    """A body just over max_body_size (inside h2o's margin, docs/ARCHITECTURE.md
    "Bodies over the limit"): the proxy answers 413 in the API's error shape."""
    snap = Snapshot(w.gw, ignore=AUDIT)
    calls = w.upstream_calls()
    h = H2(w.tls_port, w.cert)
    try:
        body = b'{"model": "gpt-test", "messages": [{"role": "user", "content": "' + b"a" * (MAX_BODY + 1000) + b'"}]}'
        extra = [("content-type", "application/json")]
        if declared:
            extra.append(("content-length", str(len(body))))
        sid = h.headers("POST", "/v1/chat/completions", extra, token=w.t.key)
        h.send_body(sid, body)
        s = h.wait(sid)
        what = "HTTP/2 body of %d bytes over the %d limit (%s)" % (len(body), MAX_BODY,
                                                                  "declared" if declared else "not declared")
        check(s["reset"] != 7, "%s: the stream was refused (RST_STREAM REFUSED_STREAM; clients retry it) "
              "instead of answered 413" % what)
        check(s["status"] == 413, "%s: status expected 413, got %r (reset %r, connection %r); body: %s" %
              (what, s["status"], s["reset"], h.terminated, excerpt(s["body"])))
        err = json.loads(s["body"] or b"{}").get("error", {})
        check(err.get("code") == "request_too_large", "%s: error body %s" % (what, excerpt(s["body"])))
    finally:
        h.close()
    check(w.upstream_calls() == calls, "an over-limit HTTP/2 body reached the upstream")
    snap.assert_unchanged("an over-limit HTTP/2 body")


def h2_far_over_limit_case(w):
    """A body beyond h2o's own limit (max_body_size + max(64 KiB, 1/16)): the
    body-limit reader (worker/accept.c) ends it one frame past max_body_size,
    so the answer is the proxy's 413, not h2o's REFUSED_STREAM (docs/
    ARCHITECTURE.md "Bodies over the limit"); nothing reaches the upstream,
    nothing is charged, and the connection keeps serving."""
    snap = Snapshot(w.gw, ignore=AUDIT)
    calls = w.upstream_calls()
    h = H2(w.tls_port, w.cert)
    try:
        body = b'{"model": "gpt-test", "messages": [{"role": "user", "content": "' + b"a" * (MAX_BODY * 4) + b'"}]}'
        sid = h.headers("POST", "/v1/chat/completions", [("content-type", "application/json")], token=w.t.key)
        h.send_body(sid, body)
        s = h.wait(sid)
        check(s["status"] == 413 and s["reset"] != 7,
              "HTTP/2 body of %d bytes: want 413, got status %r reset %r" % (len(body), s["status"], s["reset"]))
        h2_get_ok(w, h, "after a body far over the limit")
    finally:
        h.close()
    check(w.upstream_calls() == calls, "a body far over the limit reached the upstream")
    snap.assert_unchanged("a body far over the limit")


def h2_reset_mid_body_case(w):
    snap = Snapshot(w.gw, ignore=AUDIT)
    calls = w.upstream_calls()
    h = H2(w.tls_port, w.cert)
    try:
        body = json.dumps(chat_body()).encode()
        sid = h.headers("POST", "/v1/chat/completions", [("content-type", "application/json"),
                                                         ("content-length", str(len(body)))], token=w.t.key)
        h.send_body(sid, body[:len(body) // 2], end=False)
        h.reset(sid)
        h2_get_ok(w, h, "after a stream reset in the middle of its body")
    finally:
        h.close()
    check(w.upstream_calls() == calls, "a request reset before its body ended reached the upstream")
    w.t.settled()
    snap.assert_unchanged("a stream reset in the middle of its body")


def h2_reset_mid_answer_case(w):
    before = proxyutil.nano(w.t.usage()["cost_used"])
    h = H2(w.tls_port, w.cert)
    try:
        body = json.dumps(chat_body(stream=True, stream_options={"include_usage": True}, max_tokens=20,
                                    fake_scenario="slow_chunks:200", fake_chunks=20)).encode()
        sid = h.headers("POST", "/v1/chat/completions", [("content-type", "application/json")], token=w.t.key)
        h.send_body(sid, body)
        s = h.st(sid)
        while s["status"] is None or b"data: " not in s["body"]:
            check(h.pump() and s["reset"] is None, "the stream ended before its first event: %r" % s)
        check(s["status"] == 200, "streaming answer: %r" % s)
        h.reset(sid)
        h2_get_ok(w, h, "after a stream reset in the middle of its answer")
    finally:
        h.close()
    u = w.t.settled(timeout=120)
    check(u["in_flight"] == 0 and proxyutil.nano(u["cost_held"]) == 0, "the cut stream left a hold: %r" % u)
    check(proxyutil.nano(u["cost_used"]) >= before, "cost went down: %r" % u)
    check(not proxyutil.holds(w.gw), "holds left in the ledger: %r" % proxyutil.holds(w.gw))


def h2_oversized_frame_case(w):
    snap = Snapshot(w.gw, ignore=AUDIT)
    calls = w.upstream_calls()
    h = H2(w.tls_port, w.cert)
    try:
        while h.conn.remote_settings.max_frame_size is None:
            h.pump()
        limit = h.conn.remote_settings.max_frame_size
        sid = h.headers("POST", "/v1/chat/completions", [("content-type", "application/json")], token=w.t.key)
        n = limit + 1024
        frame = n.to_bytes(3, "big") + b"\x00\x00" + sid.to_bytes(4, "big") + b"{" + b" " * (n - 1)
        h.sock.sendall(frame)
        while h.pump() and h.terminated is None:
            pass
        check(h.terminated == 6, "a DATA frame of %d bytes over SETTINGS_MAX_FRAME_SIZE %d: expected GOAWAY "
              "FRAME_SIZE_ERROR (6), got %r; stream %r" % (n, limit, h.terminated, h.st(sid)))
    finally:
        h.close()
    expect("GET /healthz after an oversized HTTP/2 frame", w.gw.http("GET", "/healthz"), 200)
    check(w.upstream_calls() == calls, "the oversized frame's request reached the upstream")
    snap.assert_unchanged("an oversized HTTP/2 frame")


# ---- 3. slow and vanishing clients ----------------------------------------------

def worker_fds(gw):
    n = 0
    for pid in gw.worker_pids():
        try:
            n += len(os.listdir("/proc/%d/fd" % pid))
        except FileNotFoundError:
            pass
    return n


def others_served(w, n, what):
    for i in range(n):
        r = w.gw.http("POST", "/v1/chat/completions", chat_body(max_tokens=5), token=w.t.key, timeout=30)
        expect("%s: request %d of another client" % (what, i), r, 200)


def slow_clients_case(w, kind):
    snap_usage = w.t.settled()
    calls = w.upstream_calls()
    base_fds = worker_fds(w.gw)
    socks = []
    key = w.t.key.encode()
    try:
        for i in range(60):
            s = socket.create_connection((w.gw.host, w.gw.port), timeout=10)
            if kind == "slowloris":
                s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key +
                          b"\r\nX-Slow-%d: " % i)
            else:  # the body never completes
                s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key +
                          b"\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n" +
                          b'{"model": "gpt-test", "messages": [')
            socks.append(s)
        for round_ in range(3):
            for s in socks:
                try:
                    s.sendall(b"a" if kind == "slowloris" else b" ")
                except OSError:
                    pass  # the server may close a slow client: that is allowed
            others_served(w, 3, "%s, round %d" % (kind, round_))
    finally:
        for s in socks:
            s.close()
    check(w.upstream_calls() == calls + 9, "%s: %d upstream calls for 9 served requests" %
          (kind, w.upstream_calls() - calls))
    u = w.t.settled()
    check(u["requests_used"] == snap_usage["requests_used"] + 9, "%s: requests_used %s, expected %s" %
          (kind, u["requests_used"], snap_usage["requests_used"] + 9))
    harness.wait_for(lambda: worker_fds(w.gw) <= base_fds + 8, 30,
                     "%s: the workers' descriptors back near %d (now %d)" % (kind, base_fds, worker_fds(w.gw)))


def vanishing_stream_case(w):
    before = len(proxyutil.audit_records(w.gw))
    rid = proxyutil.raw_stream_then_drop(w.gw, w.t.key, chat_body(stream=True, max_tokens=20,
                                                                  stream_options={"include_usage": True},
                                                                  fake_scenario="slow_chunks:100",
                                                                  fake_chunks=20))
    rec = proxyutil.record(w.gw, rid)
    check(rec["status"] in (200, 499), "the audit record of the left stream: %r" % rec)
    u = w.t.settled(timeout=120)
    check(u["in_flight"] == 0 and proxyutil.nano(u["cost_held"]) == 0, "the left stream left a hold: %r" % u)
    check(len(proxyutil.audit_records(w.gw)) == before + 1, "one audit record for the left stream")
    others_served(w, 3, "after a client left mid-stream")


def main():
    cases = Cases("http")
    with harness.Gateway(workers=2, start=False, env={"TOKENAUDIT_MAX_BODY_SIZE": str(MAX_BODY)}) as gw:
        cert, keyf = make_cert(gw.tmp)
        tls_port = harness.free_port()
        gw.env["TOKENAUDIT_LISTEN"] = "127.0.0.1:%d, https://127.0.0.1:%d" % (gw.port, tls_port)
        # by environment, so the CLI (ledger dump) reads the same settings
        gw.env.update({"TOKENAUDIT_TLS_CERT_FILE": cert, "TOKENAUDIT_TLS_KEY_FILE": keyf})
        gw.start()
        fake = Fake(gw.tmp)
        try:
            w = World(gw, fake)
            w.tls_port, w.cert = tls_port, cert
            for name, data in framing_requests(w):
                cases.run("h1_framing.%s" % name, framing_case, w, name, data)
            if not h2client.AVAILABLE:
                cases.run("h2.client_available", check, False, h2client.MISSING)
            else:
                cases.run("h2.over_limit_body_declared", h2_over_limit_case, w, True)
                cases.run("h2.over_limit_body_not_declared", h2_over_limit_case, w, False)
                cases.run("h2.far_over_limit_body", h2_far_over_limit_case, w)
                cases.run("h2.reset_mid_body", h2_reset_mid_body_case, w)
                cases.run("h2.reset_mid_answer", h2_reset_mid_answer_case, w)
                cases.run("h2.oversized_frame", h2_oversized_frame_case, w)
            cases.run("slow.slowloris_headers", slow_clients_case, w, "slowloris")
            cases.run("slow.body_never_completes", slow_clients_case, w, "body")
            cases.run("slow.client_leaves_mid_stream", vanishing_stream_case, w)
        finally:
            fake.stop()
        cases.run("end.ledger_verify_and_no_sanitizer_report", finish_gateway, gw)
    cases.finish()


if __name__ == "__main__":
    main()
