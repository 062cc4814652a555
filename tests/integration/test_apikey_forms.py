"""test_apikey_forms.py - one rule for API keys on /v1 and /api (ledger/apikey.h).

The same key, presented with optional whitespace around it (spaces, tabs,
before and after; the scheme in any case), is accepted on /v1 and on /api
alike; a header that is not a Bearer credential of our key form is refused
on both (401). Raw sockets, so the header bytes are exactly the ones written.
"""

import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proxyutil import Tenant, check, gateway_with_fake  # noqa: E402


def status(gw, path, auth):
    s = socket.create_connection((gw.host, gw.port), timeout=20)
    try:
        s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: " + auth +
                  b"\r\n\r\n")
        got = b""
        while True:
            c = s.recv(65536)
            if not c:
                break
            got += c
    finally:
        s.close()
    return int(got.split(b" ", 2)[1])


def main():
    with gateway_with_fake(workers=1) as (gw, fake):
        t = Tenant(gw, fake)
        k = t.key.encode()
        accepted = [b"Bearer " + k, b"Bearer " + k + b" ", b"Bearer " + k + b"\t", b"Bearer   " + k + b"  ",
                    b"Bearer \t" + k, b"Bearer\t" + k + b" \t", b"bearer " + k, b"BEARER " + k + b" "]
        refused = [b"Bearer " + k[:-1], b"Bearer " + k + b"x", b"Bearer " + k + b" x", b"Bearer" + k,
                   b"Basic " + k, b"Bearer  ", b"Bearer " + k[:-1] + b"!"]
        for auth in accepted:
            v1, api = status(gw, b"/v1/usage", auth), status(gw, b"/api/quotas/", auth)
            check(v1 == 200 and api == 200, "%r: /v1 %d, /api %d (both should accept)" % (auth[-8:], v1, api))
        for auth in refused:
            v1, api = status(gw, b"/v1/usage", auth), status(gw, b"/api/quotas/", auth)
            check(v1 == 401 and api == 401, "%r: /v1 %d, /api %d (both should refuse)" % (auth[-8:], v1, api))
    print("ok")


if __name__ == "__main__":
    main()
