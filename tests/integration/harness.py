"""harness.py - run a real tokenauditd for integration and fault tests (stdlib only).

Typical use::

    import harness
    with harness.Gateway(workers=2) as gw:          # init + start + wait for /healthz
        token = gw.login()                          # superadmin JWT
        status, headers, body = gw.http("GET", "/api/admin/users/", token=token)
        assert status == 200
        gw.stop()                                   # SIGTERM; asserts exit 0, no child left

What it does:
  * finds the binaries through TA_BUILD_DIR (set by ctest; default: ../../build
    relative to this file), helper tools in TA_BUILD_DIR or TA_BUILD_DIR/tests;
  * makes a temporary directory with a data dir and a config file, runs
    `tokenaudit init` with ADMIN_EMAIL / ADMIN_PASSWORD and
    TOKENAUDIT_PBKDF2_ITERATIONS=1000 (fast hashing; the server gets the same);
  * picks a free port on 127.0.0.1 and starts tokenauditd with TOKENAUDIT_*
    overrides (workers=2 unless told otherwise) plus whatever `env` and
    `config` you pass, logging to <tmp>/tokenauditd.log (gw.log());
  * waits until GET /healthz answers 200.

HTTP: gw.http() opens a fresh connection per call (pass conn=gw.connection()
to reuse a keep-alive connection) and returns a Response that unpacks as
(status, headers, json): headers is a dict with lower-cased names, json is
the parsed body or None; .body holds the raw bytes and .request_id the
X-Request-Id.

Processes: gw.pid is the master; gw.children() lists its children,
gw.worker_pids() / gw.billing_pid() tell them apart by the process name the
master gives them (ta-worker, ta-billing). gw.wait_for(pred, timeout, what)
polls a condition (tests never assert on elapsed time; the timeout only
bounds a hang).
"""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("TA_SOURCE_DIR") or os.path.abspath(os.path.join(HERE, "..", ".."))
BUILD_DIR = os.environ.get("TA_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin-password-1"
FAST_PBKDF2 = "1000"


def binary(name):
    """Path of a built executable (tokenauditd, tokenaudit, or a tests/tools helper)."""
    for d in (BUILD_DIR, os.path.join(BUILD_DIR, "tests")):
        p = os.path.join(d, name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    raise FileNotFoundError("%s not found in %s (set TA_BUILD_DIR)" % (name, BUILD_DIR))


def free_port():
    """A port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def proc_children(pid):
    """Direct children of pid (from /proc/<pid>/task/*/children)."""
    kids = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                    kids += [int(x) for x in f.read().split()]
            except FileNotFoundError:
                pass
    except FileNotFoundError:
        pass
    return sorted(set(k for k in kids if pid_alive(k)))


def proc_name(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def wait_for(pred, timeout=30.0, what="condition", interval=0.05):
    """Poll pred() until it returns a truthy value (returned); AssertionError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)


class Response(tuple):
    """(status, headers, json) with .body (bytes) and .request_id."""

    def __new__(cls, status, headers, data, body):
        r = super().__new__(cls, (status, headers, data))
        r.body = body
        r.status = status
        r.headers = headers
        r.json = data
        r.request_id = headers.get("x-request-id")
        return r


def run_cli(*args, env=None, check=True):
    """Run `tokenaudit ARGS`; returns CompletedProcess (text). Raises on failure if check."""
    e = dict(os.environ)
    e.setdefault("TOKENAUDIT_PBKDF2_ITERATIONS", FAST_PBKDF2)
    if env:
        e.update(env)
    p = subprocess.run([binary("tokenaudit")] + list(args), env=e, capture_output=True, text=True,
                       timeout=120)
    if check and p.returncode != 0:
        raise AssertionError("tokenaudit %s failed (%d): %s%s" % (" ".join(args), p.returncode,
                                                                  p.stdout, p.stderr))
    return p


class Gateway:
    """A tokenauditd of its own: temp data dir, free port, env overrides.

    workers: worker count; env: extra environment (e.g. {"TOKENAUDIT_LOG_LEVEL": "debug"});
    config: dict or text written to the config file passed with -c (settings
    that the harness sets by environment, like listen, win over it; pass them in
    env to change them); init: run `tokenaudit init` first; start: start now.
    """

    def __init__(self, workers=2, env=None, config=None, init=True, start=True,
                 shutdown_timeout_ms=10000):
        self.tmp = tempfile.mkdtemp(prefix="ta-it-")
        self.data_dir = os.path.join(self.tmp, "data")
        self.conf_path = os.path.join(self.tmp, "tokenaudit.conf")
        self.log_path = os.path.join(self.tmp, "tokenauditd.log")
        self.port = free_port()
        self.host = "127.0.0.1"
        self.proc = None
        self._log = None
        self.env = dict(os.environ)
        self.env.update({
            "TOKENAUDIT_DATA_DIR": self.data_dir,
            "TOKENAUDIT_LISTEN": "%s:%d" % (self.host, self.port),
            "TOKENAUDIT_WORKERS": str(workers),
            "TOKENAUDIT_PBKDF2_ITERATIONS": FAST_PBKDF2,
            "TOKENAUDIT_SHUTDOWN_TIMEOUT_MS": str(shutdown_timeout_ms),
            "TOKENAUDIT_RING_SLOTS": "1024",
        })
        if env:
            self.env.update(env)
        self.write_config(config or {})
        if init:
            run_cli("init", "--data-dir", self.data_dir, "--admin-email", ADMIN_EMAIL,
                    "--admin-password", ADMIN_PASSWORD, env=self.env)
        if start:
            self.start()

    # ---- lifecycle -------------------------------------------------------
    def write_config(self, config):
        """(Re)write the config file from a dict {name: value} or a text."""
        if isinstance(config, dict):
            text = "".join("%s %s\n" % (k, v) for k, v in config.items())
        else:
            text = config
        with open(self.conf_path, "w") as f:
            f.write(text)

    def start(self, wait=True, timeout=30.0):
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([binary("tokenauditd"), "-c", self.conf_path], env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout=30.0):
        def ok():
            if self.proc.poll() is not None:
                raise AssertionError("tokenauditd exited with %s:\n%s" % (self.proc.returncode,
                                                                         self.log()))
            try:
                return self.http("GET", "/healthz", timeout=2).status == 200
            except OSError:
                return False
        wait_for(ok, timeout, "GET /healthz = 200")

    @property
    def pid(self):
        return self.proc.pid

    @property
    def url(self):
        return "http://%s:%d" % (self.host, self.port)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def stop(self, timeout=60.0, expect_rc=0):
        """SIGTERM the master; assert it exits with expect_rc within timeout and that
        none of its children outlives it. Returns the exit code."""
        kids = self.children()
        self.signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("tokenauditd did not stop within %.0f s:\n%s" % (timeout,
                                                                                 self.log()))
        assert rc == expect_rc, "tokenauditd exited %s, expected %s:\n%s" % (rc, expect_rc,
                                                                           self.log())
        left = [k for k in kids if pid_alive(k)]
        assert not left, "children left after the master exited: %s" % left
        self.assert_no_sanitizer_reports()
        return rc

    def assert_no_sanitizer_reports(self):
        """Fail if any process wrote an ASan/UBSan/LSan report into the log."""
        log = self.log()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            assert marker not in log, "sanitizer report in the log:\n%s" % log[-20000:]

    def cleanup(self):
        """Kill whatever is left (master and children) and remove the temp dir."""
        if self.proc is not None and self.proc.poll() is None:
            kids = self.children()
            self.proc.kill()
            self.proc.wait()
            for k in kids:
                try:
                    os.kill(k, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self._log:
            self._log.close()
        if os.environ.get("TA_KEEP_TMP"):
            sys.stderr.write("kept %s\n" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def stop_and_cleanup(self):
        """stop() (asserting a clean exit), then cleanup() whatever happened; for a
        gateway kept outside a `with`, e.g. in a unittest tearDownClass."""
        try:
            self.stop()
        finally:
            self.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            sys.stderr.write("---- tokenauditd log ----\n%s\n" % self.log()[-20000:])
        self.cleanup()
        return False

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    # ---- processes -------------------------------------------------------
    def children(self):
        return proc_children(self.proc.pid) if self.running() else []

    def worker_pids(self):
        return [k for k in self.children() if proc_name(k) == "ta-worker"]

    def billing_pid(self):
        b = [k for k in self.children() if proc_name(k) == "ta-billing"]
        return b[0] if b else None

    def wait_for(self, pred, timeout=30.0, what="condition"):
        return wait_for(pred, timeout, what)

    # ---- HTTP ------------------------------------------------------------
    def connection(self, timeout=10):
        """A keep-alive connection to pass to http(conn=...)."""
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def http(self, method, path, body=None, token=None, headers=None, raw=None, conn=None,
             timeout=10, port=None):
        """One request. body: JSON-encoded unless bytes/str; raw: bytes sent as the body as
        is. token: sent as `Authorization: Bearer`. Returns Response (status, headers, json)."""
        h = {}
        if token:
            h["Authorization"] = "Bearer " + token
        data = None
        if raw is not None:
            data = raw
        elif body is not None:
            if isinstance(body, (bytes, str)):
                data = body
            else:
                data = json.dumps(body)
                h["Content-Type"] = "application/json"
        if headers:
            h.update(headers)
        own = conn is None
        c = conn or http.client.HTTPConnection(self.host, port or self.port, timeout=timeout)
        try:
            c.request(method, path, body=data, headers=h)
            r = c.getresponse()
            payload = r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
        finally:
            if own:
                c.close()
        parsed = None
        if payload:
            try:
                parsed = json.loads(payload)
            except ValueError:
                parsed = None
        return Response(r.status, hdrs, parsed, payload)

    def login(self, email=ADMIN_EMAIL, password=ADMIN_PASSWORD):
        """POST /api/auth/login/; returns the access token (asserts 200)."""
        r = self.http("POST", "/api/auth/login/", {"email": email, "password": password})
        assert r.status == 200, "login failed: %s %s" % (r.status, r.body)
        return r.json["access_token"]
