"""test_package.py - the Debian package installs, serves, removes and purges.

It changes the machine (installs a package, adds a system user), so it runs
only when asked: TA_TEST_PACKAGE=1 (set by .ci/run), as root, with dpkg and
cpack. Otherwise it exits 77 and ctest reports it skipped, saying why.

1. cpack builds the .deb from the build directory (cmake/Packaging.cmake);
   `dpkg -i` installs it: the binaries, the conffile, the unit, the man pages,
   the `tokenaudit` system user, /var/lib/tokenaudit (0700, owned by it)
   with its books; the first admin's password is in a root-only file whose
   path postinst printed, and the password itself was never printed.
2. The packaged unit rates <= 2.5 in `systemd-analyze security --offline=true`
   (when systemd-analyze is installed).
3. The unit's ExecStart line runs as the tokenaudit user (systemd does not run
   in CI; TOKENAUDIT_LISTEN picks a free port), the admin logs in with the
   password from the file, sets up the fake upstream and makes a /v1 call.
4. `dpkg -r` removes the binaries and keeps the data and the conffile;
   `dpkg -P` deletes the data directory and the password file.
"""

import glob
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from proxyutil import Fake, check  # noqa: E402

SKIP = 77
UNIT = "/lib/systemd/system/tokenaudit.service"
CRED = "/etc/tokenaudit/initial-admin-password"
DATA = "/var/lib/tokenaudit"


def sh(*args, check_rc=True, **kw):
    p = subprocess.run(list(args), capture_output=True, text=True, timeout=300, **kw)
    if check_rc and p.returncode != 0:
        raise AssertionError("%s exited %d:\n%s%s" % (" ".join(args), p.returncode, p.stdout, p.stderr))
    return p


def skip(why):
    print("SKIP package test: %s" % why)
    sys.exit(SKIP)


def installed():
    p = sh("dpkg-query", "-W", "-f=${Status}", "tokenaudit", check_rc=False)
    return p.returncode == 0 and "installed" in p.stdout and "not-installed" not in p.stdout


class Served:
    """The unit's ExecStart line, run as the unit's User."""

    def __init__(self, tmp):
        unit = open(UNIT).read()
        execstart = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1)
        user = re.search(r"^User=(.*)$", unit, re.M).group(1)
        self.port = harness.free_port()
        self.host = "127.0.0.1"
        self.log_path = os.path.join(tmp, "tokenauditd.log")
        self._log = open(self.log_path, "wb")
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
               "TOKENAUDIT_LISTEN": "127.0.0.1:%d" % self.port, "TOKENAUDIT_WORKERS": "2"}
        # setpriv execs the command itself (runuser would stay as a parent session)
        self.proc = subprocess.Popen(["setpriv", "--reuid", user, "--regid", user, "--init-groups",
                                      "--", "env"] +
                                     ["%s=%s" % kv for kv in env.items()] + shlex.split(execstart),
                                     stdout=self._log, stderr=subprocess.STDOUT)
        self.http = harness.Gateway.http.__get__(self)
        harness.wait_for(self.healthy, 60, "the packaged tokenauditd answers /healthz")

    def healthy(self):
        if self.proc.poll() is not None:
            raise AssertionError("tokenauditd exited %s:\n%s" % (self.proc.returncode, self.log()))
        try:
            return self.http("GET", "/healthz", timeout=2).status == 200
        except OSError:
            return False

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        # the graceful stop, as systemd's KillSignal=SIGTERM
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(90)
        self._log.close()
        check(rc == 0, "tokenauditd exited %d:\n%s" % (rc, self.log()))


def serve_one_call(tmp, password, email):
    fake = Fake(tmp)
    gw = None
    try:
        gw = Served(tmp)
        r = gw.http("POST", "/api/auth/login/", {"email": email, "password": password})
        check(r.status == 200, "login with the password from %s: %s %s" % (CRED, r.status, r.body))
        tok = r.json["access_token"]

        def post(path, body):
            r = gw.http("POST", path, body, token=tok)
            check(r.status == 201, "%s: %s %s" % (path, r.status, r.body))
            return r.json
        prov = post("/api/admin/providers/", {"name": "fake", "type": "openai", "base_url": fake.url,
                                              "api_key": "sk-upstream"})
        model = post("/api/admin/models/", {"name": "gpt-test", "input_price": "1", "output_price": "2",
                                            "capabilities": ["chat"],
                                            "routes": [{"provider_id": prov["id"], "upstream_name": "m",
                                                        "priority": 1}]})
        group = post("/api/admin/groups/", {"name": "g", "model_ids": [model["id"]]})
        users = gw.http("GET", "/api/admin/users/", token=tok).json["results"]
        quota = post("/api/admin/quotas/", {"user_id": users[0]["id"], "group_id": group["id"],
                                            "period": "month", "cost_limit": "10"})
        r = gw.http("POST", "/v1/chat/completions", {"model": "gpt-test",
                                                     "messages": [{"role": "user", "content": "hi"}]},
                    token=quota["api_key"])
        check(r.status == 200 and r.json["choices"], "/v1 call: %s %s" % (r.status, r.body))
        gw.stop()
        gw = None
    finally:
        if gw is not None and gw.proc.poll() is None:
            gw.proc.kill()
            gw.proc.wait()
        fake.stop()


def main():
    if os.environ.get("TA_TEST_PACKAGE") != "1":
        skip("it installs a package and adds a system user; set TA_TEST_PACKAGE=1 to run it "
             "(.ci/run does)")
    if os.geteuid() != 0:
        skip("needs root (dpkg -i)")
    for tool in ("dpkg", "cpack", "setpriv"):
        if not shutil.which(tool):
            skip("%s is not installed" % tool)
    if installed():
        raise AssertionError("a tokenaudit package is installed already; this test would replace it")
    tmp = tempfile.mkdtemp(prefix="ta-pkg-")
    try:
        # 1. build and install
        sh("cpack", "-G", "DEB", "-B", tmp, "--config", os.path.join(harness.BUILD_DIR, "CPackConfig.cmake"))
        debs = glob.glob(os.path.join(tmp, "tokenaudit_*.deb"))
        check(len(debs) == 1, "one package built: %s" % debs)
        info = sh("dpkg-deb", "-I", debs[0]).stdout
        for dep in ("libh2o-evloop0.13", "liblmdb0", "libcurl4", "libjansson4", "libjwt0", "libssl3",
                    "adduser"):
            check(dep in info, "Depends names %s:\n%s" % (dep, info))
        inst = sh("dpkg", "-i", debs[0], env=dict(os.environ))
        out = inst.stdout + inst.stderr
        check(CRED in out, "postinst prints where the password is:\n%s" % out)
        for f in ("/usr/sbin/tokenauditd", "/usr/bin/tokenaudit", "/etc/tokenaudit/tokenaudit.conf", UNIT,
                  "/usr/share/man/man8/tokenauditd.8", "/usr/share/man/man1/tokenaudit.1",
                  "/usr/share/tokenaudit/tokenaudit-alerts.yml"):
            check(os.path.exists(f), "%s installed" % f)
        conff = sh("dpkg-query", "-W", "-f=${Conffiles}", "tokenaudit").stdout
        check("/etc/tokenaudit/tokenaudit.conf" in conff, "the config is a conffile: %r" % conff)
        pw = sh("getent", "passwd", "tokenaudit").stdout.split(":")
        check(pw[5] == DATA, "tokenaudit's home is %s: %s" % (DATA, pw))
        st = os.stat(DATA)
        check(st.st_uid == int(pw[2]) and stat.S_IMODE(st.st_mode) == 0o700,
              "%s owned by tokenaudit, mode 700: uid %d mode %o" % (DATA, st.st_uid, st.st_mode))
        check(os.path.isdir(os.path.join(DATA, "ledger")), "postinst ran tokenaudit init")
        cs = os.stat(CRED)
        check(cs.st_uid == 0 and stat.S_IMODE(cs.st_mode) == 0o600, "%s root-only: %o" % (CRED, cs.st_mode))
        password = re.search(r"password \(shown once[^:]*\): (\S+)", open(CRED).read()).group(1)
        check(password not in out, "the password never reaches apt's output")

        # 2. the hardened unit
        if shutil.which("systemd-analyze"):
            p = sh("systemd-analyze", "security", "--offline=true", UNIT, check_rc=False)
            m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", p.stdout + p.stderr)
            check(m, "systemd-analyze rated the unit:\n%s%s" % (p.stdout, p.stderr))
            check(float(m.group(1)) <= 2.5, "unit exposure %s > 2.5" % m.group(1))
            print("unit exposure %s" % m.group(1))
        else:
            print("systemd-analyze not installed: unit exposure not checked")

        # 3. serve
        serve_one_call(tmp, password, "admin@example.com")

        # 4. remove keeps the data, purge deletes it
        sh("dpkg", "-r", "tokenaudit")
        check(not os.path.exists("/usr/sbin/tokenauditd"), "dpkg -r removed the binary")
        check(os.path.isdir(os.path.join(DATA, "ledger")), "dpkg -r kept the data")
        check(os.path.exists("/etc/tokenaudit/tokenaudit.conf"), "dpkg -r kept the conffile")
        sh("dpkg", "-P", "tokenaudit")
        check(not os.path.exists(DATA), "dpkg -P deleted %s" % DATA)
        check(not os.path.exists(CRED), "dpkg -P deleted %s" % CRED)
        check(not os.path.exists("/etc/tokenaudit/tokenaudit.conf"), "dpkg -P deleted the conffile")
    finally:
        if installed() or os.path.exists(DATA):
            sh("dpkg", "-P", "tokenaudit", check_rc=False)
        shutil.rmtree(tmp, ignore_errors=True)
    print("ok: package built, installed, served a /v1 call, removed (data kept) and purged")


if __name__ == "__main__":
    main()
