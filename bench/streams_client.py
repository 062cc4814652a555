#!/usr/bin/env python3
"""The client side of bench/streams.sh: N streaming chat completions at once,
each on its own connection, against a gateway.

  streams_client.py --port P --key K --streams N [--model M] [--chunks C]
                    [--chunk-ms MS] [--rss-pids PID,PID] [--rss-out FILE]

Opens the N connections (at most --open-rate new ones in flight at a time),
sends each request, and waits until every stream answered its head (200:
open; any other status: refused, its body kept). With every admitted stream
open, it reads RssAnon of --rss-pids (the workers) into --rss-out, then reads
every stream to its end. Prints one JSON object: opened, refused (by status),
completed (ended with data: [DONE] and the last chunk), broken, a sample
refusal (status, headers, body), seconds to open all and to finish all.
Standard library only (asyncio); needs a descriptor limit above N.
"""
import argparse
import asyncio
import json
import sys
import time


def rss_anon_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


async def one(a, body, st, started, go):
    try:
        r, w = await asyncio.open_connection("127.0.0.1", a.port, limit=1 << 20)
    except OSError as e:
        st["connect_errors"] += 1
        st["last_error"] = str(e)
        started.release()
        return
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer " + a.key.encode() +
           b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
           b"\r\n\r\n" + body)
    head = b""
    try:
        w.write(req)
        head = await r.readuntil(b"\r\n\r\n")
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
        st["head_errors"] += 1
        st["last_error"] = repr(e)
        started.release()
        w.close()
        return
    status = int(head.split(b" ", 2)[1])
    started.release()
    if status != 200:
        rest = b""
        try:
            rest = await asyncio.wait_for(r.read(), 10)
        except (OSError, asyncio.TimeoutError):
            pass
        st["refused"][str(status)] = st["refused"].get(str(status), 0) + 1
        if st["sample_refusal"] is None:
            st["sample_refusal"] = (head + rest).decode("utf-8", "replace")
        w.close()
        return
    st["opened"] += 1
    await go.wait()
    data = b""
    try:
        while not data.endswith(b"0\r\n\r\n"):
            chunk = await r.read(65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    if b"data: [DONE]" in data and data.endswith(b"0\r\n\r\n"):
        st["completed"] += 1
    else:
        st["broken"] += 1
    w.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--streams", type=int, required=True)
    ap.add_argument("--model", default="bench-model")
    ap.add_argument("--chunks", type=int, default=10)
    ap.add_argument("--chunk-ms", type=int, default=2000)
    ap.add_argument("--open-rate", type=int, default=256, help="connections being opened at once")
    ap.add_argument("--rss-pids", default="")
    ap.add_argument("--rss-out", default="")
    a = ap.parse_args()
    body = json.dumps({"model": a.model, "stream": True, "stream_options": {"include_usage": True},
                       "messages": [{"role": "user", "content": "a slow stream"}],
                       "fake_chunks": a.chunks, "fake_scenario": "slow_chunks:%d" % a.chunk_ms}).encode()
    st = {"streams": a.streams, "opened": 0, "refused": {}, "completed": 0, "broken": 0,
          "connect_errors": 0, "head_errors": 0, "sample_refusal": None, "last_error": None}
    go = asyncio.Event()
    started = asyncio.Semaphore(a.open_rate)
    t0 = time.monotonic()
    tasks = []
    for _ in range(a.streams):
        await started.acquire()
        tasks.append(asyncio.create_task(one(a, body, st, started, go)))
    for _ in range(a.open_rate):  # every head answered
        await started.acquire()
    st["open_s"] = round(time.monotonic() - t0, 2)
    pids = [int(p) for p in a.rss_pids.split(",") if p]
    if pids and a.rss_out:
        with open(a.rss_out, "w") as f:
            f.write(" ".join(str(rss_anon_kib(p)) for p in pids) + "\n")
    go.set()
    await asyncio.gather(*tasks)
    st["total_s"] = round(time.monotonic() - t0, 2)
    json.dump(st, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    asyncio.run(main())
