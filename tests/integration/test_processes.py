"""test_processes.py - the process model of tokenauditd against real processes and sockets:
supervision, graceful stop, reload without failed requests, death of the master,
--check-config, and the server's HTTP basics (request ids, JSON errors)."""

import http.client
import os
import signal
import subprocess
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


class Prober(threading.Thread):
    """Loops GET /healthz until stopped; counts successes and failures.

    fresh=True: a new connection per request. fresh=False: one keep-alive
    connection, reopened when the server answers `Connection: close` (http.client
    does that by itself)."""

    def __init__(self, gw, fresh=True, retry=False):
        super().__init__(daemon=True)
        self.gw, self.fresh, self.retry = gw, fresh, retry
        self.ok = self.failed = 0
        self.errors = []
        self.generations = set()
        self.stop_flag = threading.Event()

    def one(self, conn):
        r = self.gw.http("GET", "/healthz", conn=conn, timeout=10)
        if r.status != 200:
            raise AssertionError("status %d %s" % (r.status, r.body))
        self.generations.add(r.json["generation"])

    def run(self):
        conn = None if self.fresh else self.gw.connection()
        while not self.stop_flag.is_set():
            try:
                self.one(conn)
                self.ok += 1
            except (OSError, http.client.HTTPException, AssertionError) as e:
                if self.retry:
                    # A worker killed with -9 takes the connections it had accepted
                    # with it; the next connection must be served by another worker.
                    try:
                        self.one(None)
                        self.ok += 1
                        continue
                    except (OSError, http.client.HTTPException, AssertionError) as e2:
                        e = e2
                self.failed += 1
                self.errors.append(repr(e))
                if conn is not None:
                    conn.close()
                    conn = self.gw.connection()
        if conn is not None:
            conn.close()

    def finish(self):
        self.stop_flag.set()
        self.join(30)


def check_config(path, text):
    """Write text to path and run `tokenauditd --check-config -c path` on it."""
    with open(path, "w") as f:
        f.write(text)
    return subprocess.run([harness.binary("tokenauditd"), "--check-config", "-c", path],
                          capture_output=True, text=True, timeout=30)


class ProcessTests(unittest.TestCase):
    def test_kill9_worker_is_replaced(self):
        with harness.Gateway(workers=2) as gw:
            before = gw.wait_for(lambda: len(gw.worker_pids()) == 2 and gw.worker_pids(), 30,
                                 "two workers")
            billing = gw.billing_pid()
            self.assertIsNotNone(billing)
            probe = Prober(gw, fresh=True, retry=True)
            probe.start()
            gw.wait_for(lambda: probe.ok > 10, 30, "probes before the kill")
            victim = before[0]
            os.kill(victim, signal.SIGKILL)
            after = gw.wait_for(
                lambda: (len(gw.worker_pids()) == 2 and victim not in gw.worker_pids()
                         and gw.worker_pids()), 30, "the worker to be replaced")
            count = probe.ok
            gw.wait_for(lambda: probe.ok > count + 10, 30, "probes after the restart")
            probe.finish()
            self.assertEqual(probe.failed, 0, probe.errors[:5])
            self.assertNotIn(victim, after)
            self.assertIn(before[1], after)  # the sibling was left alone
            self.assertEqual(gw.billing_pid(), billing)
            self.assertIn("(pid %d" % victim, gw.log())
            self.assertIn("killed by signal 9 (SIGKILL)", gw.log())
            gw.stop()

    def test_sigterm_stops_everything(self):
        with harness.Gateway(workers=2) as gw:
            kids = gw.wait_for(lambda: len(gw.children()) == 3 and gw.children(), 30,
                               "two workers and billing")
            # a keep-alive connection that stays open must not hold the stop up
            idle = gw.connection()
            idle.request("GET", "/healthz")
            idle.getresponse().read()
            gw.stop(timeout=60)
            idle.close()
            for k in kids:
                self.assertFalse(harness.pid_alive(k), k)
            self.assertIn("stopped", gw.log())

    def test_sighup_reload_without_failures(self):
        with harness.Gateway(workers=2, config={"log_level": "info"}) as gw:
            old = gw.wait_for(lambda: len(gw.worker_pids()) == 2 and gw.worker_pids(), 30,
                              "two workers")
            probes = [Prober(gw, fresh=True), Prober(gw, fresh=False)]
            for p in probes:
                p.start()
            gw.wait_for(lambda: all(p.ok > 20 for p in probes), 30, "probes before the reload")
            self.assertEqual(gw.http("GET", "/healthz").json["generation"], 1)

            gw.write_config({"log_level": "debug"})
            gw.signal(signal.SIGHUP)
            gw.wait_for(lambda: all(2 in p.generations for p in probes), 30,
                        "both probes to reach generation 2")
            gw.wait_for(lambda: not any(harness.pid_alive(k) for k in old), 60,
                        "the old generation to exit")
            counts = [p.ok for p in probes]
            gw.wait_for(lambda: all(p.ok > c + 20 for p, c in zip(probes, counts)), 30,
                        "probes after the reload")
            for p in probes:
                p.finish()
            for p in probes:
                self.assertEqual(p.failed, 0, p.errors[:5])
            new = gw.worker_pids()
            self.assertEqual(len(new), 2)
            self.assertFalse(set(new) & set(old))
            r = gw.http("GET", "/healthz")
            self.assertEqual((r.status, r.json["generation"]), (200, 2))
            # log_level debug took effect in the new generation
            self.assertIn(" W debug: worker ", gw.log())
            gw.stop()

    def test_invalid_reload_keeps_running(self):
        with harness.Gateway(workers=1) as gw:
            old = gw.wait_for(lambda: gw.worker_pids(), 30, "a worker")
            gw.write_config("workers lots\n")
            gw.signal(signal.SIGHUP)
            gw.wait_for(lambda: "keeping the running configuration" in gw.log(), 30,
                        "the reload error")
            self.assertIn("tokenaudit.conf:1: workers", gw.log())
            self.assertEqual(gw.worker_pids(), old)
            r = gw.http("GET", "/healthz")
            self.assertEqual((r.status, r.json["generation"]), (200, 1))
            gw.stop()

    def test_children_exit_when_master_is_killed(self):
        with harness.Gateway(workers=2) as gw:
            kids = gw.wait_for(lambda: len(gw.children()) == 3 and gw.children(), 30,
                               "two workers and billing")
            gw.proc.kill()
            gw.proc.wait()
            gw.wait_for(lambda: not any(harness.pid_alive(k) for k in kids), 60,
                        "the children to exit")

    def test_refuses_to_start_without_init(self):
        with harness.Gateway(workers=1, init=False, start=False) as gw:
            gw.start(wait=False)
            rc = gw.proc.wait(30)
            self.assertEqual(rc, 1)
            self.assertIn("tokenaudit init", gw.log())

    def test_check_config_names_file_and_line(self):
        d = tempfile.mkdtemp(prefix="ta-cc-")
        path = os.path.join(d, "bad.conf")
        p = check_config(path, "# comment\nworkers 2\nmax_body_size 9 parsecs\n")
        self.assertEqual(p.returncode, 1)
        self.assertIn("%s:3" % path, p.stderr)
        self.assertIn("max_body_size", p.stderr)
        p = check_config(path, "workers 2\nbogus_setting 1\n")
        self.assertEqual(p.returncode, 1)
        self.assertIn("%s:2" % path, p.stderr)
        self.assertIn("bogus_setting", p.stderr)
        p = check_config(path, "workers 2\nlog_level warn\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        os.unlink(path)
        os.rmdir(d)

    def test_http_basics(self):
        with harness.Gateway(workers=1, env={"TOKENAUDIT_MAX_BODY_SIZE": "64KiB"}) as gw:
            ids = set()
            r = gw.http("GET", "/healthz")
            self.assertEqual(r.status, 200)
            self.assertEqual(r.json["status"], "ok")
            ids.add(r.request_id)
            r = gw.http("GET", "/no/such/path", headers={"X-Request-Id": "client-chosen"})
            self.assertEqual(r.status, 404)
            self.assertEqual(r.headers["content-type"], "application/json")
            self.assertIn("message", r.json["error"])
            ids.add(r.request_id)
            # h2o refuses the body itself (Content-Length over the limit): still JSON
            r = gw.http("POST", "/api/auth/login/", raw=b"x" * (65 * 1024))
            self.assertEqual(r.status, 413)
            self.assertEqual(r.json["error"]["code"], "request_too_large")
            ids.add(r.request_id)
            # admin API wiring: login, then a 405 carries Allow
            token = gw.login()
            self.assertTrue(token)
            r = gw.http("DELETE", "/api/auth/login/")
            self.assertEqual(r.status, 405)
            self.assertIn("POST", r.headers.get("allow", ""))
            ids.add(r.request_id)
            self.assertNotIn(None, ids)
            self.assertEqual(len(ids), 4)
            for i in ids:
                self.assertRegex(i, "^[0-9a-f]{32}$")
            gw.stop()

    def test_admin_listen_and_tls(self):
        """https:// listener (TLS, ALPN h2) and a separate admin listener."""
        import shutil
        import ssl
        if not shutil.which("openssl"):
            self.skipTest("no openssl binary to make a certificate")
        tls_port, admin_port = harness.free_port(), harness.free_port()
        with harness.Gateway(workers=1, start=False) as gw:
            cert, key = os.path.join(gw.tmp, "cert.pem"), os.path.join(gw.tmp, "key.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                            "-keyout", key, "-out", cert, "-days", "2", "-subj",
                            "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
            gw.env["TOKENAUDIT_LISTEN"] = "127.0.0.1:%d, https://127.0.0.1:%d" % (gw.port,
                                                                                  tls_port)
            gw.env["TOKENAUDIT_ADMIN_LISTEN"] = "127.0.0.1:%d" % admin_port
            gw.write_config({"tls_cert_file": cert, "tls_key_file": key})
            gw.start()
            # /api only on the admin listener; /healthz everywhere
            self.assertEqual(gw.http("POST", "/api/auth/login/", {}).status, 404)
            r = gw.http("POST", "/api/auth/login/", {"email": harness.ADMIN_EMAIL,
                                                       "password": harness.ADMIN_PASSWORD},
                        port=admin_port)
            self.assertEqual(r.status, 200)
            self.assertEqual(gw.http("GET", "/healthz", port=admin_port).status, 200)
            # TLS with ALPN: h2 offered and chosen
            ctx = ssl.create_default_context(cafile=cert)
            ctx.set_alpn_protocols(["h2", "http/1.1"])
            import socket
            with socket.create_connection(("127.0.0.1", tls_port), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    self.assertEqual(tls.selected_alpn_protocol(), "h2")
            ctx = ssl.create_default_context(cafile=cert)
            c = http.client.HTTPSConnection("127.0.0.1", tls_port, context=ctx, timeout=10)
            c.request("GET", "/healthz")
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            self.assertRegex(r.getheader("x-request-id"), "^[0-9a-f]{32}$")
            r.read()
            c.close()
            gw.stop()

    def test_cli_init_refuses_existing_dir(self):
        with harness.Gateway(workers=1, start=False) as gw:
            p = harness.run_cli("init", "--data-dir", gw.data_dir, "--admin-email",
                                "other@example.com", check=False)
            self.assertEqual(p.returncode, 1)
            self.assertIn("already exists", p.stderr)
            p = harness.run_cli("init", "--data-dir", gw.data_dir, check=False)
            self.assertEqual(p.returncode, 2)
            p = harness.run_cli("create-superadmin", "--data-dir", gw.data_dir, "--email",
                                "second@example.com")
            self.assertIn("password (shown once", p.stdout)
            p = harness.run_cli("ledger", "dump", "--data-dir", gw.data_dir, "--json")
            self.assertIn("second@example.com", p.stdout)
            p = harness.run_cli("frobnicate", check=False)
            self.assertEqual(p.returncode, 2)


if __name__ == "__main__":
    unittest.main(verbosity=2)
