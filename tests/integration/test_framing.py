"""test_framing.py - HTTP/1.1 message framing (RFC 9112 sections 6.1, 6.3).

A request whose body length two parties could read differently is refused
with 400 (code invalid_framing) and the connection closes, so whatever the
client wrote after that head is never read as a request:

1. two Content-Length fields (different, and also identical);
2. Content-Length together with Transfer-Encoding: chunked, in either order,
   with a smuggled request inside the length: one 400, nothing else served;
3. Transfer-Encoding twice, in an HTTP/1.0 request, or folded over two lines;
4. a Transfer-Encoding other than chunked and a Content-Length that is not
   digits: h2o refuses these itself; the JSON answer names the field;
5. the same checks on a request target no route serves ("*");
6. still served: one Content-Length, chunked alone, " chunked" and
   "Chunked" (leading white space and case do not count; h2o refuses
   trailing white space, as "chunked " is not "chunked"), each keeping the connection open
   for a pipelined second request.

Raw sockets: every case reads until the server closes the connection, so a
connection left open would show as a second answer, never as a timing.
"""

import json
import os
import socket
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from proxyutil import Tenant, chat_body, check, gateway_with_fake  # noqa: E402


def exchange(gw, raw, close_after=None):
    """Write raw at once, read until the server closes (or, with
    close_after=N, until N answers arrived, then close). Returns the answers
    as (status, headers, body) and whether the server closed."""
    s = socket.create_connection((gw.host, gw.port), timeout=30)
    s.sendall(raw)
    data, closed = b"", False
    while True:
        answers, rest = parse_answers(data)
        if close_after is not None and len(answers) >= close_after:
            break
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            closed = True
            break
        data += chunk
    s.close()
    answers, rest = parse_answers(data)
    check(closed is False or rest == b"", "bytes after the last answer: %r" % rest[:200])
    return answers, closed


def parse_answers(data):
    out = []
    while True:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            return out, data
        lines = head.decode("latin-1").split("\r\n")
        check(lines[0].startswith("HTTP/1.1 "), "an HTTP answer: %r" % data[:200])
        headers = {}
        for l in lines[1:]:
            k, _, v = l.partition(":")
            headers[k.strip().lower()] = v.strip()
        check("content-length" in headers, "answers carry Content-Length: %r" % head)
        n = int(headers["content-length"])
        if len(rest) < n:
            return out, data
        out.append((int(lines[0].split()[1]), headers, rest[:n]))
        data = rest[n:]


def refused(gw, what, raw, field):
    """raw gets exactly one answer, 400 with Connection: close and a JSON
    error naming field, and the connection closes."""
    answers, closed = exchange(gw, raw)
    check(len(answers) == 1, "%s: exactly one answer, got %r" % (what, [(a[0], a[2][:120]) for a in answers]))
    st, h, body = answers[0]
    check(st == 400, "%s: %d %r" % (what, st, body[:300]))
    check(h.get("connection", "").lower() == "close", "%s: Connection: close, got %r" % (what, h))
    check(h.get("content-type", "").startswith("application/json"), "%s: JSON: %r" % (what, h))
    err = json.loads(body)["error"]
    check(err["type"] == "invalid_request_error", "%s: type %r" % (what, err))
    check(field.lower() in err["message"].lower(), "%s: the message names %s: %r" % (what, field, err))
    check(closed, "%s: the connection closed" % what)
    sys.stdout.write("%s -> 400 %s, closed\n" % (what, err["code"]))
    return err


def served(gw, what, first, second, statuses=(200, 200)):
    """first and a pipelined second request get statuses, on one
    connection that stays open."""
    answers, closed = exchange(gw, first + second, close_after=2)
    check([a[0] for a in answers] == list(statuses),
          "%s: answers %r, got %r" % (what, statuses, [(a[0], a[2][:200]) for a in answers]))
    check(not closed, "%s: the connection stayed open" % what)
    sys.stdout.write("%s -> %r, kept alive\n" % (what, statuses))


FAILURES = []


def case(what, fn, *args, **kw):
    """Run one case; a failure is collected so it does not hide the rest."""
    if len(args) > 1 and isinstance(args[1], str):
        what = args[1]  # refused()/served() carry their own name
    try:
        return fn(*args, **kw)
    except (AssertionError, OSError, ValueError, KeyError) as e:
        sys.stdout.write("FAIL %s: %s\n" % (what, e))
        FAILURES.append(what)
        return None


def main():
    with gateway_with_fake(workers=1) as (gw, fake):
        t = Tenant(gw, fake)
        chat = json.dumps(chat_body()).encode()
        hostline = "Host: %s:%d\r\n" % (gw.host, gw.port)
        auth = "Authorization: Bearer %s\r\nContent-Type: application/json\r\n" % t.key
        models = ("GET /v1/models HTTP/1.1\r\n" + hostline + "Authorization: Bearer %s\r\n\r\n" % t.key).encode()
        healthz = ("GET /healthz HTTP/1.1\r\n" + hostline + "\r\n").encode()

        def post(path, fields, body, version="1.1"):
            return ("POST %s HTTP/%s\r\n" % (path, version) + hostline + fields + "\r\n").encode() + body

        def chunked(body):
            return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)

        # 1. two Content-Length fields
        case("refused", refused, gw, "CL 5 then CL 50", post("/healthz", "Content-Length: 5\r\nContent-Length: 50\r\n", b"hello") +
                healthz, "Content-Length")
        case("refused", refused, gw, "CL twice, same value", post("/healthz", "Content-Length: 5\r\nContent-Length: 5\r\n", b"hello") +
                healthz, "Content-Length")
        case("refused", refused, gw, "CL then CL +5", post("/healthz", "Content-Length: 5\r\nContent-Length: +5\r\n", b"hello"),
                "Content-Length")

        # 2. Content-Length with chunked; inside the length, a request that
        # must never be served (it would list the key's models)
        inner = b"0\r\n\r\n" + models
        for order in ("CL, TE", "TE, CL"):
            fields = ("Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(inner) if order == "CL, TE" else
                      "Transfer-Encoding: chunked\r\nContent-Length: %d\r\n" % len(inner))
            err = case("refused", refused, gw, "smuggling (%s) on /v1" % order,
                          post("/v1/chat/completions", auth + fields, inner), "Transfer-Encoding")
            case("smuggling code", lambda: check(err is not None and err["code"] == "invalid_framing",
                                                 "smuggling: code %r" % err))
            case("refused", refused, gw, "smuggling (%s) on /healthz" % order, post("/healthz", fields, inner), "Content-Length")

        # 3. Transfer-Encoding twice, in HTTP/1.0, folded
        case("refused", refused, gw, "TE gzip then TE chunked",
                post("/healthz", "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", chunked(b"hi")) + healthz,
                "Transfer-Encoding")
        case("refused", refused, gw, "TE chunked twice",
                post("/healthz", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", chunked(b"hi")),
                "Transfer-Encoding")
        case("refused", refused, gw, "TE chunked in HTTP/1.0",
                post("/healthz", "Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n", chunked(b"hi"), "1.0") +
                healthz, "HTTP/1.0")
        case("refused", refused, gw, "TE folded", post("/healthz", "Transfer-Encoding: chunked\r\n identity\r\n", chunked(b"hi")) +
                healthz, "folded")

        # 4. values h2o refuses by itself: the answer names the field
        for te in ("chunked, identity", "gzip, chunked", "xchunked", "identity", "chunked;q=1", "chunked "):
            case("refused", refused, gw, "TE %r" % te, post("/healthz", "Transfer-Encoding: %s\r\n" % te, chunked(b"hi")),
                    "Transfer-Encoding")
        for cl in ("+5", "-5", "0x5", "5, 5", "5 5", "5 "):
            case("refused", refused, gw, "CL %r" % cl, post("/healthz", "Content-Length: %s\r\n" % cl, b"hello"), "Content-Length")

        # 5. a request target no route serves
        case("refused", refused, gw, "smuggling on OPTIONS *",
                b"OPTIONS * HTTP/1.1\r\n" + hostline.encode() +
                b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % len(inner) + inner, "Content-Length")

        # 6. what stays served, with keep-alive
        case("served", served, gw, "one Content-Length", post("/v1/chat/completions", auth + "Content-Length: %d\r\n" % len(chat),
                                              chat), models)
        case("served", served, gw, "chunked", post("/v1/chat/completions", auth + "Transfer-Encoding: chunked\r\n", chunked(chat)),
               models)
        case("served", served, gw, "TE ' chunked' and 'Chunked'",
               post("/v1/chat/completions", auth + "Transfer-Encoding:  chunked\r\n", chunked(chat)),
               post("/v1/chat/completions", auth + "Transfer-Encoding: Chunked\r\n", chunked(chat)))
        case("served", served, gw, "OPTIONS * with one Content-Length",
               b"OPTIONS * HTTP/1.1\r\n" + hostline.encode() + b"Content-Length: 2\r\n\r\nhi", healthz, (404, 200))
    check(not FAILURES, "%d case(s) failed: %s" % (len(FAILURES), ", ".join(FAILURES)))
    print("ok")


if __name__ == "__main__":
    main()
