#!/usr/bin/env python3
"""Fault test: kill -9 billing at random points while producers push; kill a
producer between claim and publish with holds outstanding. At the end every
event has exactly one audit record, every hold is released, and
`tokenaudit ledger verify` exits 0.

Real processes: tests/tools/billing_runner (the same ta_billing_run the
server's billing child calls) and tests/tools/test_producer (a worker
stand-in taking real holds and pushing through the real ring)."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

BUILD = os.environ.get("TA_BUILD_DIR", "build")
TOOLS = os.path.join(BUILD, "tests")
PRODUCER = os.path.join(TOOLS, "test_producer")
RUNNER = os.path.join(TOOLS, "billing_runner")
CLI = os.path.join(BUILD, "tokenaudit")


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def start_billing(d, log):
    return subprocess.Popen([RUNNER, "--data-dir", d, "--ring-slots", "64", "--skip-ms", "300"],
                            stdout=log, stderr=log)


def wait_until(cond, what, limit=120.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    fail("gave up waiting for " + what)


def export(d):
    out = subprocess.run([CLI, "audit", "export", "--data-dir", d, "--format", "jsonl"],
                         capture_output=True, text=True, check=True).stdout
    return [json.loads(l) for l in out.splitlines() if l.strip()]


def dump_holds_and_tickets(d):
    out = subprocess.run([CLI, "ledger", "dump", "--data-dir", d, "--json"], capture_output=True,
                         text=True)
    if out.returncode != 0:
        # a dump that fails is itself a failure: the stale-hold check below
        # must never be skipped silently
        fail("ledger dump exited %d: %s" % (out.returncode, (out.stdout + out.stderr).strip()[-2000:]))
    return json.loads(out.stdout)


def verify(d):
    r = subprocess.run([CLI, "ledger", "verify", "--data-dir", d], capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def main():
    rng = random.Random(int(os.environ.get("TA_SEED", "12345")))
    d = tempfile.mkdtemp(prefix="ta_fault_billing_")
    log = open(os.path.join(d, "billing.log"), "ab")
    try:
        subprocess.run([PRODUCER, "--data-dir", d, "--setup", "4", "--cost-limit", "1000000"],
                       check=True)
        billing = start_billing(d, log)
        wait_until(lambda: os.path.exists(os.path.join(d, "ring")), "billing to create the ring")
        nprod, per = 3, 1500
        producers = [subprocess.Popen([PRODUCER, "--data-dir", d, "--events", str(per),
                                       "--quotas", "4", "--delay-us", "300", "--refuse-every", "9",
                                       "--seed", str(i)], stdout=subprocess.PIPE)
                     for i in range(nprod)]
        time.sleep(0.3)
        kills = 0
        # kill -9 billing at random points while the producers push
        while kills < 25:
            time.sleep(rng.uniform(0.01, 0.12))
            billing.kill()
            billing.wait()
            kills += 1
            billing = start_billing(d, log)
            if all(p.poll() is not None for p in producers) and kills >= 20:
                break
        for p in producers:
            out, _ = p.communicate(timeout=300)
            if p.returncode != 0:
                fail("producer exited %d" % p.returncode)
        # a worker that dies between claim and publish, with holds in flight
        dier = subprocess.Popen([PRODUCER, "--data-dir", d, "--events", "5", "--inflight", "3",
                                 "--die-in-claim", "--seed", "99"], stdout=subprocess.PIPE)
        out, _ = dier.communicate(timeout=60)
        if dier.returncode != -signal.SIGKILL:
            fail("the dying producer was expected to die by SIGKILL, got %d" % dier.returncode)
        if b"claimed" not in out:
            fail("the dying producer did not claim a slot")
        # the master's part: tell billing the worker is dead
        subprocess.run([PRODUCER, "--data-dir", d, "--worker-dead", str(dier.pid)], check=True)
        # one more kill after that, for good measure
        time.sleep(0.1)
        billing.kill()
        billing.wait()
        billing = start_billing(d, log)

        expected = nprod * per + 5
        aborted_expected = 4  # 3 in flight + the one whose slot was never published

        def done():
            recs = export(d)
            return len(recs) >= expected + aborted_expected
        wait_until(done, "every event to be applied")
        billing.send_signal(signal.SIGTERM)
        if billing.wait(timeout=60) != 0:
            fail("billing did not exit 0 on SIGTERM")

        recs = export(d)
        ids = [r["id"] for r in recs]
        if len(ids) != len(set(ids)):
            fail("duplicate audit records")
        normal = [r for r in recs if not r.get("aborted")]
        aborted = [r for r in recs if r.get("aborted")]
        if len(normal) != expected:
            fail("expected %d request records, found %d" % (expected, len(normal)))
        if len(aborted) != aborted_expected:
            fail("expected %d aborted records, found %d" % (aborted_expected, len(aborted)))
        tickets = sorted(r["ticket"] for r in normal)
        if len(set(tickets)) != len(tickets):
            fail("a ticket produced two records")
        dump = dump_holds_and_tickets(d)
        if "holds" not in dump:
            fail("ledger dump has no holds list: %r" % sorted(dump))
        if dump["holds"]:
            fail("holds left: %r" % dump["holds"][:3])
        rc, out = verify(d)
        print(out.strip())
        if rc != 0:
            fail("ledger verify exited %d" % rc)
        print("OK: %d billing kills, %d records, %d aborted" % (kills + 1, len(recs), len(aborted)))
    finally:
        log.close()
        if os.environ.get("TA_KEEP") is None:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
