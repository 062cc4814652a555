"""test_browser.py - the web console end to end in a real browser: Debian's
chromium driven by playwright-core (tests/console/browser.mjs), against a real
tokenauditd and the fake upstream.

browser.mjs logs in (by keyboard), creates a provider, Tests it and Syncs its
models, creates a model (a price that is not a number is refused beside its
field and nothing is written), a group, a user and a quota through the UI; the
key is shown once with a working copy button and is nowhere after a reload;
/v1 calls with it appear in Requests (with detail and filters) and on the
Overview (cost per day stacked by model, the rest as "other", exactly);
provider health (a provider nothing listens on reads down with its last
error), the sync result (created, updated, no longer listed, skipped) and
route weights (the API's error beside the field); the normal user sees only their quota and no admin navigation (the
admin API answers 403); hostile names render as text with no dialog, no CSP
violation, no console error. Screenshots of every page at 1440x900 and 390x844
go to TA_BUILD_DIR/console-screenshots.

Skipped (exit 77) only when chromium is missing and CI is not set.
"""

import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402
from proxyutil import check, gateway_with_fake, verify  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CONSOLE_SRC = os.path.join(harness.SOURCE_DIR, "console")
CHROMIUM = "/usr/bin/chromium"


def main():
    if not os.access(CHROMIUM, os.X_OK):
        if os.environ.get("CI", "") not in ("", "0", "false"):
            raise AssertionError("%s is missing under CI (.ci/run installs it)" % CHROMIUM)
        print("SKIP: %s is not installed (sh etc/deps.sh installs it)" % CHROMIUM)
        sys.exit(77)
    node = shutil.which("node")
    check(node is not None, "node is not installed")
    check(os.path.isdir(os.path.join(CONSOLE_SRC, "node_modules", "playwright-core")),
          "console/node_modules/playwright-core is missing: the console build (npm ci) installs it")
    shots = os.path.join(harness.BUILD_DIR, "console-screenshots")
    shutil.rmtree(shots, ignore_errors=True)
    with gateway_with_fake(workers=2) as (gw, fake):
        env = dict(os.environ, TA_URL=gw.url, TA_FAKE_URL=fake.url, TA_ADMIN_EMAIL=harness.ADMIN_EMAIL,
                   TA_ADMIN_PASSWORD=harness.ADMIN_PASSWORD, TA_SHOTS=shots, TA_CONSOLE_DIR=CONSOLE_SRC)
        p = subprocess.run([node, os.path.join(HERE, "browser.mjs")], env=env, capture_output=True, text=True,
                           timeout=240)
        sys.stdout.write(p.stdout)
        sys.stderr.write(p.stderr)
        check(p.returncode == 0 and "BROWSER OK" in p.stdout, "browser.mjs failed (%d); screenshots in %s"
              % (p.returncode, shots))
        # what the UI did is in the books: one upstream call per /v1 call, ledger and audit agree
        # (ten from the pages, nine from the top users' spenders, one from the curl example of chat,
        # one from Anthropic's, translated to chat)
        check(len(fake.calls("/v1/chat/completions")) == 21, "twenty-one upstream chat calls")
        check(len(fake.calls("/v1/responses")) == 1, "one from the curl example of /v1/responses")
        verify(gw)
    print("screenshots in %s" % shots)


if __name__ == "__main__":
    main()
