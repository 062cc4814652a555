"""test_streaming.py - usage, client disconnects and every scripted upstream
failure, each checked in the books (audit record, quota usage, holds).

1. Usage comes from the provider: a stream and a plain answer are charged the
   fake upstream's reported usage (audit tokens, quota cost), not an estimate.
2. on_disconnect = drain (default): a client that drops a slow stream after the
   first event is still charged exactly the provider's usage; the upstream ran
   to its end (no STOP in the fake's log).
3. on_disconnect = abort (second gateway): the upstream connection is closed
   (the fake logs STOP: the stream was cut from the client side) and the
   charge is marked estimated.
4. Every failure the fake can script ends with its documented status, the hold
   released (in_flight 0, cost_held 0) and the next request succeeding:
   slow first byte -> 504 (plain and stream), 500 -> 502, 503 -> 503,
   upstream 429 -> 429 with Retry-After, a stream cut by the provider -> the
   client's stream ends without [DONE], no usage -> estimated usage, a huge
   chunk passes whole, an event over the SSE bound ends the stream cut.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from proxyutil import (Tenant, audit_records, chat_body, check, cost_of, gateway_with_fake, nano,  # noqa: E402
                       raw_request, raw_stream_then_drop, record, sse_events, v1, verify)

MSGS = [{"role": "user", "content": "Say hello"}]


def used(t):
    return nano(t.settled()["cost_used"])


def next_ok(gw, t):
    r = v1(gw, t.key, "POST", "/chat/completions", chat_body(fake_usage="5,5,0"))
    check(r.status == 200, "the next request succeeds: %s %s" % (r.status, r.body))
    r = v1(gw, t.key, "POST", "/chat/completions", chat_body(stream=True, fake_usage="5,5,0"))
    check(r.status == 200 and sse_events(r.body)[-1] == "[DONE]", "the next stream succeeds: %s" % r.body[-200:])


def provider_usage(gw, fake, t):
    before = used(t)
    r = v1(gw, t.key, "POST", "/chat/completions",
           chat_body(messages=MSGS, stream=True, fake_chunks=6, fake_usage="13,7,0"))
    check(r.status == 200 and sse_events(r.body)[-1] == "[DONE]", r.body)
    rec = record(gw, r.request_id)
    check((rec["prompt_tokens"], rec["completion_tokens"], rec["usage_estimated"]) == (13, 7, False),
          "stream charged the provider's usage: %r" % rec)
    check(nano(rec["cost"]) == cost_of(13, 7), rec)
    r = v1(gw, t.key, "POST", "/chat/completions", chat_body(messages=MSGS, fake_usage="21,4,0"))
    check(r.status == 200, r.body)
    rec = record(gw, r.request_id)
    check((rec["prompt_tokens"], rec["completion_tokens"], rec["usage_estimated"]) == (21, 4, False), rec)
    check(used(t) - before == cost_of(13, 7) + cost_of(21, 4), "quota charged exactly the provider's usage")


def drop_slow_stream(gw, fake, t):
    """A slow stream (15 chunks, provider usage 17,15) the client drops after the
    first event. Returns (the quota's used cost before, the fake's STOP lines
    before, the request's audit record)."""
    before = used(t)
    stops = len(fake.lines("STOP "))
    rid = raw_stream_then_drop(gw, t.key, chat_body(stream=True, fake_chunks=15, fake_usage="17,15,0",
                                                    fake_scenario="slow_chunks:40"))
    return before, stops, record(gw, rid)


def drain(gw, fake, t):
    before, stops, rec = drop_slow_stream(gw, fake, t)
    check(rec["client_gone"], "the client left: %r" % rec)
    check((rec["prompt_tokens"], rec["completion_tokens"], rec["usage_estimated"]) == (17, 15, False),
          "drained to the end, charged the provider's usage: %r" % rec)
    check(used(t) - before == cost_of(17, 15), "quota charged exactly the provider's usage")
    check(len(fake.lines("STOP ")) == stops, "drain read the upstream to its end: %r" % fake.lines("STOP "))


def abort(gw, fake, t):
    before, stops, rec = drop_slow_stream(gw, fake, t)
    check(rec["client_gone"] and rec["usage_estimated"], "abort: estimated, client gone: %r" % rec)
    check(1 <= rec["completion_tokens"] < 15, "charged only what was delivered: %r" % rec)
    check(nano(rec["cost"]) > 0, "the prompt is charged: %r" % rec)
    check(used(t) - before == nano(rec["cost"]), "quota charged the record's cost")
    harness.wait_for(lambda: len(fake.lines("STOP ")) > stops, 10, "the fake saw the stream cut by its client")


def failures(gw, fake, t):
    def one(name, body, status, stream=False, cut=False, expect_estimated=None):
        before = used(t)
        n_recs = len(audit_records(gw))
        st, hdrs, raw, complete = raw_request(gw, t.key, body)
        if st == 0 and cut:
            # cut before the first event: the head was never written, the
            # connection closes without an answer (clients raise a connection
            # error); the record is the one billing adds next
            st = status
            hdrs = {"x-request-id": audit_records(gw, applied=n_recs + 1)[-1]["id"]}
        check(st == status, "%s: %s, expected %s: %s" % (name, st, status, raw[:300]))
        if status >= 400:
            err = json.loads(raw)["error"]
            check(err.get("message") and "type" in err and "code" in err, "%s: OpenAI error shape: %s" % (name, raw))
        if cut:
            check(not complete and b"[DONE]" not in raw, "%s: the client sees the stream cut: %r" % (name, raw[-200:]))
        else:
            check(complete, "%s: complete answer" % name)
        if stream and not cut and status == 200:
            check(sse_events(raw)[-1] == "[DONE]", "%s: ends with [DONE]" % name)
        u = t.settled()
        check(u["in_flight"] == 0 and nano(u["cost_held"]) == 0, "%s: hold released: %r" % (name, u))
        rec = record(gw, hdrs["x-request-id"])
        check(rec["status"] == status, "%s: audit status %r" % (name, rec))
        check(nano(u["cost_used"]) - before == nano(rec["cost"]), "%s: charged the record's cost" % name)
        if expect_estimated is not None:
            check(rec["usage_estimated"] == expect_estimated, "%s: usage_estimated: %r" % (name, rec))
        if cut:
            check(rec["error_type"] != "", "%s: the record says the stream broke off: %r" % (name, rec))
        sys.stdout.write("%-22s -> %s%s%s\n" % (name, st, " (cut)" if cut else "",
                                               " usage estimated" if expect_estimated else ""))
        next_ok(gw, t)
        return st, raw, hdrs

    one("slow first byte", chat_body(fake_scenario="slow_first_byte:6000"), 504)
    one("slow first byte, stream", chat_body(stream=True, fake_scenario="slow_first_byte:6000"), 504)
    one("provider 500", chat_body(fake_scenario="status:500"), 502)
    one("provider 500, stream", chat_body(stream=True, fake_scenario="status:500"), 502)
    one("provider 503", chat_body(fake_scenario="status:503"), 503)
    st, raw, hdrs = one("provider 429", chat_body(fake_scenario="rate_limit"), 429)
    check(hdrs.get("retry-after") == "1", "Retry-After passed through: %r" % hdrs)
    one("cut stream", chat_body(stream=True, fake_scenario="cut_stream:2"), 200, stream=True, cut=True,
        expect_estimated=True)
    one("no usage, stream", chat_body(stream=True, fake_chunks=4, fake_scenario="no_usage"), 200,
        stream=True, expect_estimated=True)
    one("no usage", chat_body(fake_scenario="no_usage"), 200, expect_estimated=True)

    # a 1 MB chunk passes whole, charged the provider's usage
    r = v1(gw, t.key, "POST", "/chat/completions",
           chat_body(stream=True, fake_chunks=2, fake_usage="7,2,0", fake_scenario="huge_chunk:1000000"))
    check(r.status == 200, r.status)
    ev = sse_events(r.body)
    check(ev[-1] == "[DONE]", "huge chunks: complete stream")
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in ev[:-1]
                   if json.loads(e)["choices"])
    check(text == "x" * 2000000, "two 1 MB chunks arrived whole: %d bytes" % len(text))
    rec = record(gw, r.request_id)
    check((rec["prompt_tokens"], rec["completion_tokens"], rec["usage_estimated"]) == (7, 2, False), rec)
    t.settled()
    # one event bigger than the SSE bound (4 MiB): the stream ends cut
    one("event over the bound", chat_body(stream=True, fake_chunks=1, fake_scenario="huge_chunk:5000000"),
        200, stream=True, cut=True)


def main():
    with gateway_with_fake(workers=2, stop=False) as (gw, fake):
        t = Tenant(gw, fake, timeout_s=2)
        provider_usage(gw, fake, t)
        drain(gw, fake, t)
        failures(gw, fake, t)
        verify(gw)
        gw.stop()
        with harness.Gateway(workers=2, env={"TOKENAUDIT_ON_DISCONNECT": "abort"}) as gw2:
            t2 = Tenant(gw2, fake, timeout_s=2)
            abort(gw2, fake, t2)
            next_ok(gw2, t2)
            verify(gw2)
            gw2.stop()
    print("ok")


if __name__ == "__main__":
    main()
