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
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import proxyutil  # noqa: E402
from proxyutil import Tenant, check, gateway_with_fake  # noqa: E402

try:
    import h2.config
    import h2.connection
    import h2.events
except ImportError:  # Debian's python3-h2 lives in the system Python's dist-packages
    sys.path.append("/usr/lib/python3/dist-packages")
    import h2.config
    import h2.connection
    import h2.events

MAX_BODY = 4 * 1024 * 1024
BIG = 64 * 1024 * 1024
PIECE = 256 * 1024


def big_prefix():
    return b'{"model": "gpt-test", "messages": [{"role": "user", "content": "'


def make_cert(tmp):
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    return cert, key


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

class H2:
    """One HTTP/2 connection through python3-h2: TLS with ALPN h2, or
    cleartext with prior knowledge."""

    def __init__(self, port, cafile=None):
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        if cafile is not None:
            ctx = ssl.create_default_context(cafile=cafile)
            ctx.set_alpn_protocols(["h2"])
            self.sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
            check(self.sock.selected_alpn_protocol() == "h2", "ALPN did not choose h2")
        else:
            self.sock = raw
        self.scheme = "https" if cafile else "http"
        self.conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True,
                                                                                header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.flush()
        self.streams = {}
        self.terminated = None

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def st(self, sid):
        return self.streams.setdefault(sid, {"status": None, "headers": {}, "body": b"", "ended": False,
                                             "reset": None})

    def pump(self, timeout=30):
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
            data = b""
        if not data:
            self.terminated = self.terminated or "closed"
            return False
        for ev in self.conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                s = self.st(ev.stream_id)
                s["headers"] = dict(ev.headers)
                s["status"] = int(s["headers"][":status"])
            elif isinstance(ev, h2.events.DataReceived):
                self.st(ev.stream_id)["body"] += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                self.st(ev.stream_id)["ended"] = True
            elif isinstance(ev, h2.events.StreamReset):
                self.st(ev.stream_id)["reset"] = int(ev.error_code)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.terminated = int(ev.error_code)
        self.flush()
        return True

    def request(self, method, path, key=None, extra=(), end=False):
        sid = self.conn.get_next_available_stream_id()
        h = [(":method", method), (":path", path), (":scheme", self.scheme), (":authority", "127.0.0.1")]
        if key:
            h.append(("authorization", "Bearer " + key))
        self.conn.send_headers(sid, h + list(extra), end_stream=end)
        self.flush()
        self.st(sid)
        return sid

    def send_body(self, sid, total, prefix=b""):
        """Sends a body of total bytes as flow control allows, stopping once the
        stream has an answer or a reset; returns the bytes sent."""
        sent = 0
        while sent < total:
            s = self.st(sid)
            if s["status"] is not None or s["reset"] is not None or self.terminated is not None:
                return sent
            # what the gateway sent meanwhile (its answer, window updates)
            r, _, _ = select.select([self.sock], [], [], 0)
            if r or (self.conn.local_flow_control_window(sid) <= 0):
                if not self.pump():
                    return sent
                continue
            n = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size, total - sent)
            chunk = prefix[sent:sent + n] if sent < len(prefix) else b"a" * n
            n = len(chunk)
            self.conn.send_data(sid, chunk, end_stream=sent + n == total)
            self.flush()
            sent += n
        return sent

    def wait(self, sid):
        s = self.st(sid)
        while not (s["ended"] or s["reset"] is not None or self.terminated is not None):
            if not self.pump():
                break
        return s

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


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

        for label, port, ca in (("TLS", tls_port, cert), ("cleartext prior knowledge", gw.port, None)):
            for declared in (True, False):
                what = "HTTP/2 (%s) 64 MiB body, content-length %s" % (label, "declared" if declared else "absent")
                c = H2(port, ca)
                try:
                    extra = [("content-type", "application/json")]
                    if declared:
                        extra.append(("content-length", str(BIG)))
                    sid = c.request("POST", "/v1/chat/completions", t.key, extra)
                    sent = c.send_body(sid, BIG, big_prefix())
                    s = c.wait(sid)
                    check(s["reset"] != 7, "%s: the stream was refused (RST_STREAM REFUSED_STREAM) instead of "
                          "answered 413" % what)
                    rid = check_413(what, s["status"], s["headers"], s["body"])
                    check(sent < BIG, "%s: the whole body was taken before the answer" % what)
                    # the connection goes on: a small request on it is answered
                    sid2 = c.request("POST", "/v1/chat/completions", t.key, [("content-type", "application/json")])
                    c.send_body(sid2, len(json.dumps(proxyutil.chat_body())),
                                json.dumps(proxyutil.chat_body()).encode())
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
            sid = c.request("POST", "/v1/chat/completions", t.key, [("content-type", "application/json")])
            c.send_body(sid, len(body), body)
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
