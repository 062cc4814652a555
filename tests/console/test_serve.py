"""test_serve.py - what tokenauditd serves for the web console (worker/console.h),
over real sockets, against the console built into TA_BUILD_DIR/console:

  * GET / redirects (302) to /console/, /console to /console/; index.html is
    revalidated (no-cache), every hashed asset is immutable for a year, and a
    client that accepts gzip gets the .gz sibling, which unpacks to the same bytes;
  * every console answer (redirects and 404s included) carries the strict
    Content-Security-Policy, nosniff, no-referrer and frame denial;
  * index.html has no inline script, no <style> and no style attribute, and loads
    only /console/assets/ files; the assets total at most 300 KB compressed;
  * a missing file is a JSON 404 that is not cacheable; /api and the JSON 404 of
    other paths are unchanged;
  * with admin_listen, the console is served where /api is and not on `listen`;
  * `console = off` serves none of it; a console_dir without index.html is a
    configuration error naming the setting.
"""

import glob
import gzip
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
BUDGET = 300 * 1024
CONSOLE_DIR = os.path.join(harness.BUILD_DIR, "console")


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def secure(r, what):
    h = r.headers
    check(h.get("content-security-policy") == CSP, "%s: CSP %r" % (what, h.get("content-security-policy")))
    check(h.get("x-content-type-options") == "nosniff", "%s: nosniff missing: %r" % (what, h))
    check(h.get("referrer-policy") == "no-referrer", "%s: referrer-policy %r" % (what, h))
    check(h.get("x-frame-options") == "DENY", "%s: x-frame-options %r" % (what, h))


def main():
    check(os.path.isfile(os.path.join(CONSOLE_DIR, "index.html")), "no console build in %s" % CONSOLE_DIR)
    with harness.Gateway(workers=1) as gw:
        r = gw.http("GET", "/")
        check(r.status == 302 and r.headers.get("location") == "/console/", "GET /: %s %r" % (r.status, r.headers))
        secure(r, "GET /")
        check(gw.http("HEAD", "/").status == 302, "HEAD /")
        check(gw.http("POST", "/", raw=b"").status == 404, "POST / is not redirected")
        r = gw.http("GET", "/console")
        check(r.status == 301 and r.headers.get("location") == "/console/", "GET /console: %s %r" % (r.status, r.headers))
        secure(r, "GET /console")

        r = gw.http("GET", "/console/")
        check(r.status == 200 and r.headers.get("content-type", "").startswith("text/html"), "index: %s %r" % (r.status, r.headers))
        secure(r, "index.html")
        check(r.headers.get("cache-control") == "no-cache", "index cache-control %r" % r.headers.get("cache-control"))
        html = r.body.decode()
        check(not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script in index.html:\n" + html)
        check("<style" not in html and not re.search(r"\sstyle=", html), "inline style in index.html:\n" + html)
        refs = re.findall(r'(?:src|href)="([^"]+)"', html)
        assets = [u for u in refs if not u.startswith("data:")]
        check(assets and all(re.match(r"^/console/assets/[\w.-]+-[\w-]{8}\.(js|css)$", u) for u in assets),
              "index.html loads something other than hashed assets: %r" % refs)
        check(not any(u.startswith(("http:", "https:", "//")) for u in refs), "a remote reference: %r" % refs)

        total = 0
        for path in glob.glob(os.path.join(CONSOLE_DIR, "**", "*"), recursive=True):
            if os.path.isfile(path) and not path.endswith(".gz"):
                gz = path + ".gz"
                total += os.path.getsize(gz if os.path.exists(gz) else path)
        check(total <= BUDGET, "console assets: %d B compressed, over the %d B budget" % (total, BUDGET))
        print("console assets: %d B compressed in all" % total)

        for u in assets:
            plain = gw.http("GET", u)
            check(plain.status == 200 and "content-encoding" not in plain.headers, "%s: %s %r" % (u, plain.status, plain.headers))
            check(plain.headers.get("cache-control") == "public, max-age=31536000, immutable",
                  "%s: cache-control %r" % (u, plain.headers.get("cache-control")))
            secure(plain, u)
            z = gw.http("GET", u, headers={"Accept-Encoding": "gzip"})
            check(z.status == 200 and z.headers.get("content-encoding") == "gzip", "%s gzip: %r" % (u, z.headers))
            check("accept-encoding" in z.headers.get("vary", "").lower(), "%s: vary %r" % (u, z.headers))
            check(gzip.decompress(z.body) == plain.body, "%s: the .gz sibling differs from the file" % u)
            check(len(z.body) < len(plain.body), "%s: gzip answer not smaller" % u)
            etag = plain.headers.get("etag")
            nm = gw.http("GET", u, headers={"If-None-Match": etag})
            check(nm.status == 304, "%s: If-None-Match %s" % (u, nm.status))
            secure(nm, u + " 304")

        r = gw.http("GET", "/console/assets/index-00000000.js")
        check(r.status == 404 and r.json and r.json["error"]["code"] == "not_found", "missing asset: %s %r" % (r.status, r.body))
        check(r.headers.get("cache-control") == "no-cache", "a 404 must not be cached: %r" % r.headers.get("cache-control"))
        secure(r, "404")
        r = gw.http("GET", "/console/../data/jwt.secret")
        check(r.status == 404, "path traversal: %s %r" % (r.status, r.body[:100]))
        r = gw.http("GET", "/nope")
        check(r.status == 404 and r.json["error"]["message"] == "no such endpoint", "other paths: %r" % r.body)
        check("content-security-policy" not in r.headers, "CSP on a non-console answer")
        check(gw.http("GET", "/api/auth/me/").status == 401, "/api still answers")
        gw.stop()

    # with a separate admin listener, the console sits beside /api
    admin_port = harness.free_port()
    with harness.Gateway(workers=1, env={"TOKENAUDIT_ADMIN_LISTEN": "127.0.0.1:%d" % admin_port}) as gw:
        check(gw.http("GET", "/console/").status == 404, "console on the main listener")
        check(gw.http("GET", "/").status == 404, "/ redirected on the main listener")
        check(gw.http("GET", "/console/", port=admin_port).status == 200, "console on the admin listener")
        r = gw.http("GET", "/", port=admin_port)
        check(r.status == 302 and r.headers.get("location") == "/console/", "admin /: %s" % r.status)
        gw.stop()

    # console = off
    with harness.Gateway(workers=1, config={"console": "off"}) as gw:
        for p in ("/", "/console/", "/console/index.html"):
            r = gw.http("GET", p)
            check(r.status == 404 and r.json is not None and "content-security-policy" not in r.headers,
                  "console off, %s: %s %r" % (p, r.status, r.body[:100]))
        check("console:" not in gw.log(), "console off still logs about the console:\n" + gw.log())
        gw.stop()

    # an explicit console_dir must hold a build
    with harness.Gateway(workers=1, start=False, config={"console_dir": "/nonexistent/console"}) as gw:
        p = subprocess.run([harness.binary("tokenauditd"), "--check-config", "-c", gw.conf_path], env=gw.env,
                           capture_output=True, text=True, timeout=30)
        out = p.stdout + p.stderr
        check(p.returncode != 0 and "console_dir" in out and "index.html" in out,
              "--check-config with a console_dir without a build: %d %s" % (p.returncode, out))
    print("console serve OK")


if __name__ == "__main__":
    main()
