"""test_alert_rules.py - etc/tokenaudit-alerts.yml is valid and uses only what exists.

1. Every tokenaudit_* metric named in the rules is exported by a running
   gateway's /metrics (a histogram's _bucket/_sum/_count count as its family).
2. The metrics added for the rules answer sensibly: the ring's size is
   ring_slots, billing_events_total counts the requests billing applied,
   quota_warnings_total counts a crossed warn_at threshold, and the data
   directory's filesystem has free bytes <= size bytes.
3. `promtool check rules` accepts the file. When promtool is not installed
   (Debian package `prometheus`; .ci/run installs it) this part is skipped
   and the test exits 77, which ctest reports as skipped, after doing 1 and 2.
"""

import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from proxyutil import Tenant, chat_body, check, gateway_with_fake, v1  # noqa: E402

RULES = os.path.join(harness.SOURCE_DIR, "etc", "tokenaudit-alerts.yml")
SKIP = 77


def scrape(gw):
    r = gw.http("GET", "/metrics")
    check(r.status == 200, "/metrics: %s" % r.status)
    samples = {}
    for line in r.body.decode().splitlines():
        if line and not line.startswith("#"):
            name_labels, value = line.rsplit(" ", 1)
            samples[name_labels] = float(value)
    return samples


def value(samples, name):
    check(name in samples, "%s exported" % name)
    return samples[name]


def main():
    with open(RULES) as f:
        rules = f.read()
    used = sorted(set(re.findall(r"\btokenaudit_[a-z0-9_]+", rules)))
    check(len(used) >= 8, "metrics used by the rules: %s" % used)

    with gateway_with_fake(workers=2) as (gw, fake):
        t = Tenant(gw, fake, quota={"period": "month", "request_limit": 4, "warn_at": [50]})
        for _ in range(3):
            r = v1(gw, t.key, "POST", "/chat/completions", chat_body())
            check(r.status == 200, "chat: %s %s" % (r.status, r.body))
        t.settled()
        s = harness.wait_for(lambda: (lambda x: x if x.get("tokenaudit_ring_depth") == 0 else None)(scrape(gw)),
                             30, "ring drained")
        exported = {re.split(r"[{ ]", k)[0] for k in s}
        families = exported | {re.sub(r"_(bucket|sum|count)$", "", n) for n in exported}
        missing = [m for m in used if m not in families]
        check(not missing, "used by etc/tokenaudit-alerts.yml but not in /metrics: %s" % missing)

        check(value(s, "tokenaudit_ring_slots") == 1024, "ring_slots is the ring's size (1024)")
        check(value(s, "tokenaudit_billing_events_total") >= 3, "billing applied the 3 requests")
        check(value(s, "tokenaudit_quota_warnings_total") == 1, "one warn_at 50% crossed")
        free, size = value(s, "tokenaudit_data_dir_free_bytes"), value(s, "tokenaudit_data_dir_size_bytes")
        check(0 < free <= size, "data dir free %s of %s bytes" % (free, size))

    promtool = shutil.which("promtool")
    if not promtool:
        print("SKIP promtool check: promtool not installed (Debian package `prometheus`); "
              "%d metrics checked against /metrics" % len(used))
        sys.exit(SKIP)
    p = subprocess.run([promtool, "check", "rules", RULES], capture_output=True, text=True, timeout=60)
    check(p.returncode == 0, "promtool check rules failed:\n%s%s" % (p.stdout, p.stderr))
    print("ok: promtool accepts %s; %d metrics all exported" % (RULES, len(used)))


if __name__ == "__main__":
    main()
