"""h2client.py - a small HTTP/2 client for the tests (Debian's python3-h2),
over TLS with ALPN h2 or over cleartext with prior knowledge, and the
self-signed certificate a TLS listener of a test gateway uses.

    h = H2(port, cafile)              # TLS; H2(port) speaks cleartext
    sid = h.headers("POST", "/v1/chat/completions", [("content-type", "application/json")], token=key)
    h.send_body(sid, body)            # as flow control allows; stops at an answer or a reset
    s = h.wait(sid)                   # {"status", "headers", "body", "ended", "reset"}
"""

import os
import select
import socket
import ssl
import subprocess
import sys

try:
    import h2.config
    import h2.connection
    import h2.events
except ImportError:  # Debian's python3-h2 lives in the system Python's dist-packages
    sys.path.append("/usr/lib/python3/dist-packages")
    try:
        import h2.config
        import h2.connection
        import h2.events
    except ImportError:
        h2 = None

AVAILABLE = h2 is not None
MISSING = "python3-h2 is not installed (apt-get install -y python3-h2; etc/deps.sh installs it)"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def make_cert(tmp):
    """A self-signed certificate for 127.0.0.1 in tmp: (cert path, key path)."""
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    return cert, key


class H2:
    """One HTTP/2 connection: TLS with ALPN h2 when cafile is given (the
    server's certificate), else cleartext with prior knowledge."""

    def __init__(self, port, cafile=None):
        check(AVAILABLE, MISSING)
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        if cafile is not None:
            ctx = ssl.create_default_context(cafile=cafile)
            ctx.set_alpn_protocols(["h2"])
            self.sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
            check(self.sock.selected_alpn_protocol() == "h2", "ALPN did not choose h2")
        else:
            self.sock = raw
        self.scheme = "https" if cafile is not None else "http"
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

    def pump(self):
        """Read once and handle the events; False when the connection ended."""
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
            data = b""
        if not data:
            if self.terminated is None:
                self.terminated = "closed"
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
        try:
            self.flush()
        except OSError:
            pass
        return True

    def headers(self, method, path, extra=(), end=False, token=None):
        sid = self.conn.get_next_available_stream_id()
        h = [(":method", method), (":path", path), (":scheme", self.scheme), (":authority", "127.0.0.1")]
        if token:
            h.append(("authorization", "Bearer " + token))
        h += list(extra)
        self.conn.send_headers(sid, h, end_stream=end)
        self.flush()
        self.st(sid)
        return sid

    def send_body(self, sid, data, end=True):
        """Send data as flow control allows, reading what the server sends
        meanwhile; stops early once the stream has an answer or a reset.
        Returns the bytes sent."""
        sent = 0
        while sent < len(data):
            s = self.st(sid)
            if s["status"] is not None or s["reset"] is not None or self.terminated is not None:
                return sent
            win = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            readable, _, _ = select.select([self.sock], [], [], 0)
            if win <= 0 or readable:
                if not self.pump():
                    return sent
                continue
            n = min(win, len(data) - sent)
            self.conn.send_data(sid, data[sent:sent + n], end_stream=end and sent + n == len(data))
            self.flush()
            sent += n
        return sent

    def wait(self, sid):
        s = self.st(sid)
        while not (s["ended"] or s["reset"] is not None or self.terminated is not None):
            if not self.pump():
                break
        return s

    def reset(self, sid, code=8):  # 8 = CANCEL
        self.conn.reset_stream(sid, error_code=code)
        self.flush()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
