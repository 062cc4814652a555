"""test_backup.py - `tokenaudit backup` under load gives a copy whose books
agree and that serves.

1. 64 client threads send /v1 requests (plain answers and slow streams, so
   holds are in flight) while three backups are taken one after another.
   Each copy: `ledger verify` exits 0 on it (both environments name the same
   applied ticket, every quota's cost equals its audit records), the secret
   files are mode 0600 and equal to the source's, there is no ring and no
   partial directory is left beside it.
2. A gateway started on the last copy (the restore: the copy is the whole
   data directory) logs in with the source's admin, serves a /v1 call
   through the fake upstream, releases the copied holds (their owner pid
   exists nowhere) and verifies.
3. Refusals: an existing --to is refused (exit 1, names it, leaves it
   untouched); a missing --to is a usage error (exit 2).
"""

import os
import re
import shutil
import stat
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness  # noqa: E402
from proxyutil import (Tenant, chat_body, check, gateway_with_fake, holds,  # noqa: E402
                       raw_request, v1, verify)

CLIENTS = 64
BACKUPS = 3


def load(gw, t, stop, errors, counts, lock):
    def client(i):
        n = 0
        while not stop.is_set():
            try:
                if (i + n) % 4 == 0:
                    st, _, _, _ = raw_request(gw, t.key, chat_body(stream=True, fake_chunks=4,
                                                                  fake_scenario="slow_chunks:30"))
                else:
                    st = v1(gw, t.key, "POST", "/chat/completions", chat_body(fake_usage="7,3,0")).status
                # 503 + Retry-After is the gateway's answer while the ring is full: load, not a fault
                if st not in (200, 503):
                    raise AssertionError("status %s" % st)
            except Exception as e:  # noqa: BLE001 - reported by the main thread
                with lock:
                    errors.append(repr(e))
                return
            n += 1
            with lock:
                counts[0] += 1
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    for th in threads:
        th.start()
    return threads


def backup(gw, dest, check_rc=True):
    return harness.run_cli("backup", "--data-dir", gw.data_dir, "--to", dest, env=gw.env,
                           check=check_rc)


def check_copy(gw, dest):
    names = sorted(os.listdir(dest))
    check(names == ["audit", "jwt.secret", "ledger", "master.key"], "copy holds %s" % names)
    for f in ("jwt.secret", "master.key"):
        mode = stat.S_IMODE(os.stat(os.path.join(dest, f)).st_mode)
        check(mode == 0o600, "%s has mode %o, not 600" % (f, mode))
        with open(os.path.join(dest, f), "rb") as a, open(os.path.join(gw.data_dir, f), "rb") as b:
            check(a.read() == b.read(), "%s copied as is" % f)
    p = harness.run_cli("ledger", "verify", "--data-dir", dest, env=gw.env, check=False)
    check(p.returncode == 0, "ledger verify of the copy exited %d:\n%s%s" % (p.returncode, p.stdout,
                                                                              p.stderr))
    m = re.search(r"applied ticket ledger (\d+) audit (\d+)", p.stdout)
    check(m and m.group(1) == m.group(2), "equal applied tickets: %s" % p.stdout)
    left = [n for n in os.listdir(os.path.dirname(dest)) if ".partial-" in n]
    check(not left, "partial directories left: %s" % left)
    return int(m.group(1))


def main():
    with gateway_with_fake(workers=2, fake_workers=2) as (gw, fake):
        t = Tenant(gw, fake, quota={"period": "month", "cost_limit": "1000000"})
        stop = threading.Event()
        errors, counts, lock = [], [0], threading.Lock()
        threads = load(gw, t, stop, errors, counts, lock)
        dests, tickets = [], []
        try:
            harness.wait_for(lambda: counts[0] >= 200 or errors, 120, "200 answers under load")
            for i in range(BACKUPS):
                dest = os.path.join(gw.tmp, "backup-%d" % i)
                out = backup(gw, dest).stdout
                check("written to %s" % dest in out, out)
                dests.append(dest)
                tickets.append(check_copy(gw, dest))
                before = counts[0]
                harness.wait_for(lambda: counts[0] >= before + 100 or errors, 120, "more answers")
        finally:
            stop.set()
            for th in threads:
                th.join(60)
        check(not errors, "client errors: %r" % errors[:5])
        check(tickets[-1] > 0 and tickets == sorted(tickets), "backups taken while billing ran: %s"
              % tickets)

        # 3. refusals
        p = backup(gw, dests[0], check_rc=False)
        check(p.returncode == 1 and "already exists" in p.stderr, "existing --to: %d %s" % (
            p.returncode, p.stderr))
        check_copy(gw, dests[0])
        p = harness.run_cli("backup", "--data-dir", gw.data_dir, env=gw.env, check=False)
        check(p.returncode == 2 and "--to" in p.stderr, "missing --to: %d %s" % (p.returncode, p.stderr))

        t.settled()
        verify(gw)

        # 2. restore: a gateway whose data directory is the last copy
        restored = harness.Gateway(workers=1, init=False, start=False)
        try:
            shutil.copytree(dests[-1], restored.data_dir)
            restored.start()
            tok = restored.login()
            check(tok, "login on the restored copy")
            r = v1(restored, t.key, "POST", "/chat/completions", chat_body(fake_usage="5,2,0"))
            check(r.status == 200, "a /v1 call on the restored copy: %s %s" % (r.status, r.body))
            harness.wait_for(lambda: holds(restored) == [], 60, "copied holds released")
            verify(restored)
            restored.stop()
        finally:
            restored.cleanup()
    print("ok: %d backups under %d clients (tickets %s), restored copy served and verified"
          % (BACKUPS, CLIENTS, tickets))


if __name__ == "__main__":
    main()
