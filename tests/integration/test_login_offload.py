"""test_login_offload.py - password hashing runs off the worker's event loop.

A real tokenauditd with ONE worker and a PBKDF2 cost high enough that one
hash takes at least MIN_HASH_S on this machine (computed here with hashlib,
which uses OpenSSL as the gateway does; never below 600000 iterations), and
the fake upstream behind a /v1 tenant. Checks, by the order of events and
never by elapsed time:

  * while several logins hash on the worker's pool, /healthz and proxied
    /v1/chat/completions on the same worker keep answering: at least
    MIN_PROBES pairs complete before the first login answer arrives (a loop
    thread busy hashing would answer none of them before it);
  * those logins answer right: 200 with a working token for the right
    password, 401 invalid_credentials for a wrong one and an unknown e-mail;
  * more logins at once than the pool takes (its threads + its queue, read
    from worker/server.c): the surplus gets 503 server_busy with
    Retry-After, everything else 200, and a login afterwards works;
  * user create, update with a password and the password change (all
    offloaded) end to end, with early 409s;
  * clients that leave while their job runs: an HTTP/1 client that resets
    its connection, and an HTTP/2 (h2c) client that sends RST_STREAM right
    after a password update, which must then never be written (checked
    after a restart, when every job has ended); the worker survives, stops
    without waiting for its shutdown timeout, and logs no sanitizer report.
"""

import hashlib
import http.client
import json
import os
import re
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from proxyutil import Tenant, chat_body, check, gateway_with_fake, v1  # noqa: E402

MIN_HASH_S = 0.25     # one PBKDF2 at the chosen cost takes at least this here
SURPLUS = 16          # logins beyond the pool's capacity: refusals stay certain even if
                      # sending them takes a while (draining 16 jobs takes 2 s at 2 threads)
MIN_PROBES = 5        # healthz + /v1 pairs that must answer before the first login does
PW_ITER_MAX = 10000000  # crypto.c accepts no more
JOE = "joe@example.com"
JOE_PW = "joe-password-1"


def pick_iterations():
    """Iterations for which one hash takes at least MIN_HASH_S on this machine."""
    n = 100000
    t0 = time.monotonic()
    hashlib.pbkdf2_hmac("sha256", b"p" * 16, b"s" * 16, n)
    dt = max(time.monotonic() - t0, 1e-6)
    return max(600000, min(PW_ITER_MAX, int(n * MIN_HASH_S / dt) + 1))


def pool_capacity():
    """Jobs one worker takes at once: its pool threads plus its queue (the
    defaults of password_threads and password_queue in the settings table)."""
    with open(os.path.join(harness.SOURCE_DIR, "master", "config.c")) as f:
        src = f.read()
    threads = int(re.search(r'\{"password_threads", CT_INT, NUM\(password_threads\), "(\d+)"', src).group(1))
    queue = int(re.search(r'\{"password_queue", CT_INT, NUM\(password_queue\), "(\d+)"', src).group(1))
    return threads + queue


def send_login(gw, email, password):
    """A connection with a login request written to it; read it with getresponse()."""
    c = gw.connection(timeout=120)
    c.request("POST", "/api/auth/login/", body=json.dumps({"email": email, "password": password}),
              headers={"Content-Type": "application/json"})
    return c


def read_answer(c):
    r = c.getresponse()
    body = r.read()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    c.close()
    return r.status, hdrs, json.loads(body) if body else None


class Order:
    """A global sequence of events seen by the test's threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.n = 0

    def next(self):
        with self.lock:
            self.n += 1
            return self.n


# ---- a minimal h2c client: one request, then RST_STREAM --------------------------------------

def h2_frame(ftype, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def hpack_int(v):
    """An HPACK integer with a 7-bit prefix (the H bit clear: no Huffman)."""
    if v < 127:
        return bytes([v])
    out, v = [127], v - 127
    while v >= 128:
        out.append((v & 127) | 128)
        v >>= 7
    return bytes(out + [v])


def hpack_literal(name, value):
    """Literal header field without indexing, new name, no Huffman."""
    n, v = name.encode(), value.encode()
    return b"\x00" + hpack_int(len(n)) + n + hpack_int(len(v)) + v


def h2_send_and_cancel(gw, method, path, token, body):
    """Send one HTTP/2 request with prior knowledge and cancel it at once
    (RST_STREAM CANCEL in the same write): the gateway reads the request, runs
    its handler, then sees the stream reset and disposes the request."""
    data = json.dumps(body).encode()
    hdrs = b"".join(hpack_literal(k, v) for k, v in (
        (":method", method), (":scheme", "http"), (":path", path), (":authority", "x"),
        ("authorization", "Bearer " + token), ("content-type", "application/json"),
        ("content-length", str(len(data)))))
    out = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(0x4, 0, 0, b"") +
           h2_frame(0x1, 0x4, 1, hdrs) + h2_frame(0x0, 0x1, 1, data) +
           h2_frame(0x3, 0, 1, struct.pack(">I", 0x8)))
    s = socket.create_connection((gw.host, gw.port), timeout=30)
    s.sendall(out)
    # The gateway's SETTINGS shows it read the preface; then leave.
    got = b""
    while len(got) < 9:
        chunk = s.recv(65536)
        check(chunk, "the gateway closed the h2c connection: %r" % got)
        got += chunk
    check(got[3] == 0x4, "the first HTTP/2 frame is SETTINGS: %r" % got[:9])
    s.close()


# ---- the scenarios ----------------------------------------------------------------------------

def check_concurrent_logins(gw, t):
    expected = [(harness.ADMIN_EMAIL, harness.ADMIN_PASSWORD, 200),
                (harness.ADMIN_EMAIL, "wrong-password-9", 401),
                ("nobody@example.com", "some-password-1", 401),
                (JOE, JOE_PW, 200)]
    order = Order()
    first_login = threading.Event()
    first_login_seq = []
    answers = [None] * len(expected)
    conns = [send_login(gw, e, p) for e, p, _ in expected]
    # Every login request is written before the first probe goes out.

    def reader(i):
        try:
            answers[i] = read_answer(conns[i])
        finally:
            first_login_seq.append(order.next())
            first_login.set()

    readers = [threading.Thread(target=reader, args=(i,)) for i in range(len(conns))]
    for th in readers:
        th.start()
    probe_seqs = []
    hc, vc = gw.connection(), gw.connection(timeout=30)
    while not first_login.is_set() and len(probe_seqs) < 100000:
        r = gw.http("GET", "/healthz", conn=hc)
        check(r.status == 200, "healthz during the logins: %s %s" % (r.status, r.body))
        r = v1(gw, t.key, "POST", "/chat/completions", chat_body(), conn=vc)
        check(r.status == 200, "/v1 during the logins: %s %s" % (r.status, r.body))
        probe_seqs.append(order.next())
    for th in readers:
        th.join(120)
    hc.close()
    vc.close()
    before = sum(1 for s in probe_seqs if s < min(first_login_seq))
    check(before >= MIN_PROBES,
          "only %d healthz + /v1 pairs answered before the first login did (want >= %d): "
          "the loop was blocked" % (before, MIN_PROBES))
    for (email, pw, want), ans in zip(expected, answers):
        check(ans is not None, "login %s got no answer" % email)
        status, _, j = ans
        check(status == want, "login %s/%s: %s %s" % (email, pw, status, j))
        if want == 200:
            check(j["token_type"] == "Bearer" and j["user"]["email"] == email, j)
            me = gw.http("GET", "/api/auth/me/", token=j["access_token"])
            check(me.status == 200 and me.json["email"] == email, "the token works: %s" % (me,))
        else:
            check(j["error"]["code"] == "invalid_credentials", j)
    return before


def check_queue_full(gw):
    n = pool_capacity() + SURPLUS
    conns = [send_login(gw, harness.ADMIN_EMAIL, harness.ADMIN_PASSWORD) for _ in range(n)]
    answers = [read_answer(c) for c in conns]
    busy = [a for a in answers if a[0] == 503]
    ok = [a for a in answers if a[0] == 200]
    check(len(busy) + len(ok) == n, "only 200 and 503: %s" % [a[0] for a in answers])
    check(busy, "%d logins at once on one worker: none refused" % n)
    check(len(ok) >= 2, "the pool's own jobs succeed: %s" % [a[0] for a in answers])
    for status, hdrs, j in busy:
        check(hdrs.get("retry-after", "").isdigit() and int(hdrs["retry-after"]) >= 1,
              "503 carries Retry-After: %s" % hdrs)
        check(j["error"]["type"] == "server_error" and j["error"]["code"] == "server_busy", j)
    for status, hdrs, j in ok:
        check(j["access_token"], j)
    gw.login()  # the queue drained: a login works again
    return len(busy)


def check_user_paths(gw, admin_tok):
    """Create (early 409), update with a password, password change: all offloaded."""
    r = gw.http("POST", "/api/admin/users/", {"email": JOE, "password": JOE_PW}, token=admin_tok)
    check(r.status == 201 and r.json["email"] == JOE, "create: %s %s" % (r.status, r.body))
    joe_id = r.json["id"]
    r = gw.http("POST", "/api/admin/users/", {"email": JOE.upper(), "password": "another-pw-1"},
                token=admin_tok)
    check(r.status == 409 and r.json["error"]["param"] == "email", "duplicate: %s %s" % (r.status, r.body))
    r = gw.http("POST", "/api/admin/users/", {"email": "short@example.com", "password": "x"},
                token=admin_tok)
    check(r.status == 400, "short password: %s %s" % (r.status, r.body))
    r = gw.http("PATCH", "/api/admin/users/%d/" % joe_id, {"password": "joe-password-2", "name": "Joe"},
                token=admin_tok)
    check(r.status == 200 and r.json["name"] == "Joe", "patch: %s %s" % (r.status, r.body))
    r = gw.http("PATCH", "/api/admin/users/999999/", {"password": "joe-password-3"}, token=admin_tok)
    check(r.status == 404, "patch unknown: %s %s" % (r.status, r.body))
    r = gw.http("POST", "/api/auth/login/", {"email": JOE, "password": JOE_PW})
    check(r.status == 401, "the old password is gone: %s" % r.status)
    tok = gw.login(JOE, "joe-password-2")
    r = gw.http("POST", "/api/auth/password/", {"old_password": "not-it-at-all", "new_password": JOE_PW},
                token=tok)
    check(r.status == 400 and r.json["error"]["param"] == "old_password", "mismatch: %s %s" % (r.status, r.body))
    r = gw.http("POST", "/api/auth/password/", {"old_password": "joe-password-2", "new_password": JOE_PW},
                token=tok)
    check(r.status == 200 and r.json["access_token"], "password change: %s %s" % (r.status, r.body))
    gw.login(JOE, JOE_PW)
    return joe_id


def check_clients_that_leave(gw, admin_tok, joe_id):
    pids = gw.worker_pids()
    # HTTP/1: the login request is read, then the connection is reset.
    for _ in range(3):
        s = socket.create_connection((gw.host, gw.port))
        data = json.dumps({"email": harness.ADMIN_EMAIL, "password": harness.ADMIN_PASSWORD}).encode()
        s.sendall(b"POST /api/auth/login/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    # HTTP/2: the stream is reset while its hash runs: the new password must never be stored.
    h2_send_and_cancel(gw, "PATCH", "/api/admin/users/%d/" % joe_id, admin_tok,
                       {"password": "never-stored-pw-1"})
    h2_send_and_cancel(gw, "POST", "/api/auth/login/", admin_tok,
                       {"email": harness.ADMIN_EMAIL, "password": harness.ADMIN_PASSWORD})
    check(gw.http("GET", "/healthz").status == 200, "the worker still answers")
    # the hashes of the logins whose clients left still run on the pool: on a
    # loaded machine this login may wait for several of them
    r = gw.http("POST", "/api/auth/login/", {"email": harness.ADMIN_EMAIL, "password": harness.ADMIN_PASSWORD},
                timeout=120)
    check(r.status == 200, "login after the clients that left: %s %s" % (r.status, r.body))
    check(gw.worker_pids() == pids, "the worker survived: %s -> %s" % (pids, gw.worker_pids()))


def main():
    iters = pick_iterations()
    # Dozens of logins of one account at once are what the login throttle
    # refuses (it counts logins in flight); this test is about the pool.
    env = {"TOKENAUDIT_PBKDF2_ITERATIONS": str(iters),
           "TOKENAUDIT_LOGIN_MAX_FAILURES": "1000000",
           "TOKENAUDIT_LOGIN_ADDRESS_MAX_FAILURES": "1000000"}
    with gateway_with_fake(workers=1, env=env, stop=False) as (gw, fake):
        t = Tenant(gw, fake)
        joe_id = check_user_paths(gw, t.tok)
        before = check_concurrent_logins(gw, t)
        refused = check_queue_full(gw)
        check_clients_that_leave(gw, t.tok, joe_id)
        # SIGTERM: the worker waits for the jobs still running (they hold it in
        # flight), releases them, and exits well before its shutdown timeout.
        gw.stop()
        check("shutdown_timeout_ms passed" not in gw.log(), "the worker left no job behind")
        # Every job has ended: the cancelled update never reached the ledger.
        gw.start()
        r = gw.http("POST", "/api/auth/login/", {"email": JOE, "password": "never-stored-pw-1"})
        check(r.status == 401, "a cancelled update wrote nothing: %s %s" % (r.status, r.body))
        gw.login(JOE, JOE_PW)
        gw.stop()
    print("ok (%d iterations; %d probe pairs before the first login; %d of %d refused with 503)"
          % (iters, before, refused, pool_capacity() + SURPLUS))


if __name__ == "__main__":
    main()
