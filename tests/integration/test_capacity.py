#!/usr/bin/env python3
"""A worker past its descriptor capacity (worker/server.h, docs/ARCHITECTURE.md
"Capacity"): the gateway runs under a hard RLIMIT_NOFILE of 256 (set on this
process, inherited), one worker, so its budget is 256 - 128 = 128 descriptors:
a client connection and its request's upstream connection each count.

Slow streams are opened on connections of their own until the worker refuses:
  * the master logs the capacity the limit gives (64 streams per worker);
  * every stream admitted completes ([DONE]) and is charged exactly the
    provider's usage (one audit record each, ledger verify);
  * the ones past the budget get 503 server_busy in OpenAI's error shape with
    Retry-After, and their connection closes; they hold nothing;
  * the worker never crashes (same pid), and once the streams ended it serves
    again;
  * connections are counted until they close, HTTP/2 ones too (cleartext with
    prior knowledge: worker/accept.c's reader chains the count's close hook):
    300 connections one after the other, more than the budget, are all served.
"""

import json
import os
import resource
import socket
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import h2client  # noqa: E402
import harness  # noqa: E402
import proxyutil  # noqa: E402
from proxyutil import check, chat_body, v1  # noqa: E402

LIMIT = 256
STREAMS = 90


def send(gw, key, body):
    s = socket.create_connection((gw.host, gw.port), timeout=60)
    data = json.dumps(body).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode() +
              b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(data)).encode() +
              b"\r\n\r\n" + data)
    return s


def read_head(s):
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def read_all(s, got):
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        got += chunk
        if got.endswith(b"0\r\n\r\n"):
            break
    s.close()
    return got


def main():
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))
    with proxyutil.gateway_with_fake(workers=1) as (gw, fake):
        log = gw.log()
        check("descriptors: %d per process" % LIMIT in log and "each worker serves up to 64 streams" in log,
              "the master logs the capacity: %s" % [l for l in log.splitlines() if "descriptors" in l])
        t = proxyutil.Tenant(gw, fake, timeout_s=60)
        pid = gw.worker_pids()[0]
        body = chat_body(stream=True, fake_chunks=6, fake_scenario="slow_chunks:500", fake_usage="9,6,0")
        admitted, refused = [], []
        for i in range(STREAMS):
            s = send(gw, t.key, body)
            head = read_head(s)
            if head.startswith(b"HTTP/1.1 200"):
                admitted.append((s, head))
            else:
                refused.append(read_all(s, head))
        print("%d streams admitted, %d refused" % (len(admitted), len(refused)))
        check(55 <= len(admitted) <= 64, "about 64 streams fit in 128 descriptors: %d" % len(admitted))
        check(len(refused) == STREAMS - len(admitted), "the rest were refused")
        for r in refused:
            head, _, b = r.partition(b"\r\n\r\n")
            h = head.decode().lower()
            check(h.startswith("http/1.1 503") and "retry-after: 1" in h and "connection: close" in h,
                  "503 with Retry-After, connection closed: %r" % head)
            err = json.loads(b)["error"]
            check(err["code"] == "server_busy" and err["type"] == "server_error" and err["message"],
                  "OpenAI error shape: %r" % err)
        for s, head in admitted:
            raw = read_all(s, head)
            check(b"data: [DONE]" in raw and raw.endswith(b"0\r\n\r\n"), "a stream completed: %r" % raw[-200:])
        u = t.settled()
        recs = proxyutil.audit_records(gw, applied=len(admitted))
        check(len(recs) == len(admitted), "one record per admitted stream: %d records" % len(recs))
        for rec in recs:
            check(rec["status"] == 200 and (rec["prompt_tokens"], rec["completion_tokens"]) == (9, 6) and
                  not rec["usage_estimated"], "charged the provider's usage: %r" % rec)
        check(proxyutil.nano(u["cost_used"]) == len(admitted) * proxyutil.cost_of(9, 6), "usage %r" % u)
        check(gw.worker_pids() == [pid], "the worker did not restart")
        r = v1(gw, t.key, "POST", "/chat/completions", chat_body())
        check(r.status == 200, "served again after the streams: %s" % r.status)
        small = json.dumps(chat_body()).encode()
        for i in range(300):
            if h2client.AVAILABLE and i % 2 == 0:
                h = h2client.H2(gw.port)
                sid = h.headers("POST", "/v1/chat/completions", [("content-type", "application/json")], token=t.key)
                h.send_body(sid, small)
                st = h.wait(sid)["status"]
                h.close()
            else:
                s = send(gw, t.key, chat_body())
                st = int(read_head(s).split(b" ", 2)[1])
                s.close()
            check(st == 200, "connection %d after the others closed: %s" % (i, st))
        t.settled()
        proxyutil.verify(gw)
    print("ok")


if __name__ == "__main__":
    main()
