#!/usr/bin/env python3
"""The /v1 upstream client's connections (worker/upstream.h, docs/ARCHITECTURE.md
"The upstream client"), through the real gateway, with both engines:

  * a TLS provider: the fake upstream with a self-signed certificate for
    "localhost" that the gateway trusts through upstream_ca_file; JSON and a
    stream answered and charged the provider's usage, and the control plane
    (provider test, curl) reaches it too; a provider whose certificate does
    not match its name is refused before anything is sent (no request in the
    fake's log), 502 and recorded;
  * connection reuse: sequential calls through one worker open one upstream
    connection;
  * a provider that closes a kept-alive connection after answering: the next
    call is answered, each client call is exactly one upstream call;
  * a provider that reads a request on a kept-alive connection and drops it
    without answering: 502, the POST was made once and not failed over to the
    second route (it may have reached the provider), recorded once;
  * a provider that answers slowly (first byte, and between chunks) within
    the provider's timeout: answered in full.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402
import proxyutil  # noqa: E402
from proxyutil import check, chat_body, sse_events, v1  # noqa: E402


def make_cert(tmp):
    cert, key = os.path.join(tmp, "up-cert.pem"), os.path.join(tmp, "up-key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", key, "-out", cert], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return cert, key


def charged(gw, t, rid, usage):
    rec = proxyutil.record(gw, rid)
    check((rec["prompt_tokens"], rec["completion_tokens"]) == usage and not rec["usage_estimated"],
          "charged the provider's usage %r: %r" % (usage, rec))
    return rec


def tls(engine):
    tmp = tempfile.mkdtemp(prefix="ta-it-cert-")
    try:
        cert, key = make_cert(tmp)
        tls_gateway(engine, cert, key)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tls_gateway(engine, cert, key):
    env = {"TOKENAUDIT_UPSTREAM_ENGINE": engine, "TOKENAUDIT_UPSTREAM_CA_FILE": cert}
    with harness.Gateway(workers=1, env=env) as gw:
        fake = proxyutil.Fake(gw.tmp, args=["--tls-cert", cert, "--tls-key", key])
        try:
            fake.url = "https://localhost:%d/v1" % fake.port
            t = proxyutil.Tenant(gw, fake, timeout_s=10)
            r = v1(gw, t.key, "POST", "/chat/completions", chat_body(fake_usage="11,4,0"))
            check(r.status == 200 and r.json["object"] == "chat.completion", "TLS JSON: %s %s" % (r.status, r.body))
            charged(gw, t, r.headers["x-request-id"], (11, 4))
            r = v1(gw, t.key, "POST", "/chat/completions",
                   chat_body(stream=True, fake_chunks=5, fake_scenario="slow_chunks:20", fake_usage="12,5,0"))
            ev = sse_events(r.body)
            check(r.status == 200 and ev[-1] == "[DONE]" and len(ev) >= 6, "TLS stream: %s %r" % (r.status, r.body[-200:]))
            charged(gw, t, r.headers["x-request-id"], (12, 5))
            # the control plane (curl) trusts the same file
            pt = t.post("/api/admin/providers/%d/test/" % t.provider_id, {}, expect=200)
            check(pt["ok"] is True, "provider test over TLS: %r" % pt)

            # the same server asked for by a name its certificate does not carry
            before = len(fake.calls())
            bad = t.add_provider("tls-wrong-name", "https://127.0.0.1:%d/v1" % fake.port, "sk-x", timeout_s=5)
            m = t.add_model("wrong-name", [(bad["id"], "up-model")], input_price="1", output_price="2",
                            capabilities=["chat", "streaming"])
            q, key2 = t.new_quota({"period": "month", "cost_limit": "100"})
            t.gw.http("PATCH", "/api/admin/groups/%d/" % t.group["id"], {"model_ids": [t.chat["id"], m["id"]]},
                      token=t.tok)
            r = v1(gw, t.key, "POST", "/chat/completions", chat_body(model="wrong-name"))
            check(r.status == 502, "certificate name mismatch: %s %s" % (r.status, r.body))
            check(len(fake.calls()) == before, "nothing reached the provider: %r" % fake.calls()[before:])
            rec = proxyutil.record(gw, r.headers["x-request-id"])
            check(rec["status"] == 502, "recorded: %r" % rec)
            t.settled()
            proxyutil.verify(gw)
        finally:
            fake.stop()
        gw.stop()
    print("%s: TLS provider: JSON, stream, provider test, name mismatch refused" % engine)


def connections(engine):
    env = {"TOKENAUDIT_UPSTREAM_ENGINE": engine}
    with proxyutil.gateway_with_fake(workers=1, env=env) as (gw, fake):
        t = proxyutil.Tenant(gw, fake, timeout_s=10)
        conn = gw.connection()

        # reuse: one upstream connection for sequential calls
        v1(gw, t.key, "POST", "/chat/completions", chat_body(), conn=conn)
        c0 = fake.stats()["connections"]
        for i in range(10):
            r = v1(gw, t.key, "POST", "/chat/completions", chat_body(stream=(i % 2 == 1)), conn=conn)
            check(r.status == 200, "call %d: %s" % (i, r.status))
        c1 = fake.stats()["connections"]
        check(c1 - c0 == 1, "10 calls opened %d upstream connections (the stats call is one)" % (c1 - c0 - 1))

        # the provider closes each kept-alive connection after its answer
        n0 = len(fake.calls())
        for i in range(6):
            r = v1(gw, t.key, "POST", "/chat/completions",
                   chat_body(stream=(i % 2 == 1), fake_scenario="close_idle:%d" % (0 if i < 3 else 50)), conn=conn)
            check(r.status == 200, "after an idle close %d: %s %s" % (i, r.status, r.body[:200]))
            harness.wait_for(lambda: len(fake.lines("CLOSE ")) > i, 10, "the fake closed the connection")
        check(len(fake.calls()) - n0 == 6, "6 calls, %d upstream POSTs" % (len(fake.calls()) - n0))

        # a dropped request on a kept-alive connection: 502, made once, not failed over
        second = t.add_provider("second", fake.url, "sk-second-8888", timeout_s=10)
        m = t.add_model("two-routes", [(t.provider_id, "up-model"), (second["id"], "up-model-2")],
                        input_price="1", output_price="2", capabilities=["chat", "streaming"])
        t.gw.http("PATCH", "/api/admin/groups/%d/" % t.group["id"],
                  {"model_ids": [t.chat["id"], t.emb["id"], m["id"]]}, token=t.tok)
        v1(gw, t.key, "POST", "/chat/completions", chat_body(model="two-routes"), conn=conn)  # pools one
        n0 = len(fake.calls())
        r = v1(gw, t.key, "POST", "/chat/completions", chat_body(model="two-routes", fake_scenario="drop"), conn=conn)
        check(r.status == 502, "dropped: %s %s" % (r.status, r.body))
        calls = fake.calls()[n0:]
        check(len(calls) == 1 and calls[0]["auth"] == "7777",
              "one POST to the first route, none to the second: %r" % [c["line"] for c in calls])
        rec = proxyutil.record(gw, r.headers["x-request-id"])
        check(rec["status"] == 502, "recorded: %r" % rec)

        # slow answers within the provider's timeout
        r = v1(gw, t.key, "POST", "/chat/completions", chat_body(fake_scenario="slow_first_byte:1500"), conn=conn)
        check(r.status == 200, "slow first byte: %s" % r.status)
        r = v1(gw, t.key, "POST", "/chat/completions",
               chat_body(stream=True, fake_chunks=8, fake_scenario="slow_first_byte:500,slow_chunks:300"), conn=conn)
        check(r.status == 200 and sse_events(r.body)[-1] == "[DONE]", "slow stream: %s" % r.status)

        # a reload while a stream runs and connections are pooled: the old
        # worker finishes the stream and exits clean (gw.stop() below fails on
        # any sanitizer report in the log), the new one serves
        old = gw.worker_pids()
        s = proxyutil.socket.create_connection((gw.host, gw.port), timeout=30)
        data = proxyutil.json.dumps(chat_body(stream=True, fake_chunks=6, fake_scenario="slow_chunks:200",
                                              fake_usage="3,6,0")).encode()
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer " +
                  t.key.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: " +
                  str(len(data)).encode() + b"\r\n\r\n" + data)
        first = s.recv(65536)
        check(first.startswith(b"HTTP/1.1 200"), "the stream started: %r" % first[:100])
        gw.signal(signal.SIGHUP)
        raw = first
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            raw += chunk
        s.close()
        check(b"data: [DONE]" in raw, "the stream across the reload completed: %r" % raw[-200:])
        gw.wait_for(lambda: not any(harness.pid_alive(k) for k in old), 60, "the old generation to exit")
        r = v1(gw, t.key, "POST", "/chat/completions", chat_body())
        check(r.status == 200, "the new generation serves: %s" % r.status)
        t.settled()
        proxyutil.verify(gw)
    print("%s: reuse, idle close, dropped request, slow answers, reload" % engine)


def main():
    for engine in ("h2o", "curl"):
        tls(engine)
        connections(engine)
    print("ok")


if __name__ == "__main__":
    main()
