"""test_manpages.py - the manual pages are current and every command has --help.

1. man/tokenauditd.8 is byte for byte `tokenauditd --print-man` and
   man/tokenaudit.1 is `tokenaudit --print-man` (both are generated from the
   tables the programs use; regenerate them with the commands in the message);
   docs/CONFIG.md is `tokenauditd --print-config-docs`.
2. Every setting of the settings table (the rows of docs/CONFIG.md) has its
   paragraph in tokenauditd(8); every option of `tokenauditd --help` is there.
3. Every command listed by `tokenaudit --help` answers `--help` (and `-h`)
   with exit 0 and its own usage line, and has its paragraph in tokenaudit(1);
   `tokenaudit ledger --help` lists both ledger commands.
4. Both pages format without a warning (`groff -man -ww -z`, when groff is
   installed).
"""

import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def run(binary, *args, rc=0):
    p = subprocess.run([harness.binary(binary)] + list(args), capture_output=True, timeout=60)
    check(p.returncode == rc, "%s %s exited %d: %s" % (binary, " ".join(args), p.returncode,
                                                       p.stderr.decode()))
    return p.stdout


def read(rel):
    with open(os.path.join(harness.SOURCE_DIR, rel), "rb") as f:
        return f.read()


def main():
    pages = {"man/tokenauditd.8": run("tokenauditd", "--print-man"),
             "man/tokenaudit.1": run("tokenaudit", "--print-man"),
             "docs/CONFIG.md": run("tokenauditd", "--print-config-docs")}
    regen = {"man/tokenauditd.8": "build/tokenauditd --print-man > man/tokenauditd.8",
             "man/tokenaudit.1": "build/tokenaudit --print-man > man/tokenaudit.1",
             "docs/CONFIG.md": "build/tokenauditd --print-config-docs > docs/CONFIG.md"}
    for rel, out in pages.items():
        check(read(rel) == out, "%s is stale: regenerate it with `%s`" % (rel, regen[rel]))

    daemon = pages["man/tokenauditd.8"].decode()
    settings = re.findall(r"^\| `([a-z0-9_]+)` \|", pages["docs/CONFIG.md"].decode(), re.M)
    check(len(settings) > 20, "settings found in CONFIG.md: %s" % settings)
    for s in settings:
        check(".TP\n\\fB%s\\fR" % s.replace("-", "\\-") in daemon, "tokenauditd(8) lacks %s" % s)
    for flag in re.findall(r"^  (-[-a-z, ]+?)(?: FILE)?  ", run("tokenauditd", "--help").decode(), re.M):
        check(flag.strip().replace("-", "\\-") in daemon, "tokenauditd(8) lacks %s" % flag)

    cli = pages["man/tokenaudit.1"].decode()
    top = run("tokenaudit", "--help").decode()
    section = top.split("commands:\n", 1)[1].split("\n\n", 1)[0]
    commands = [l.strip().split(" --")[0].split(" [")[0] for l in section.splitlines()
                if l.startswith("  ") and not l.startswith("      ")]
    check(len(commands) >= 9 and "backup" in commands and "ledger verify" in commands,
          "commands listed: %s" % commands)
    for c in commands:
        for h in ("--help", "-h"):
            out = run("tokenaudit", *(c.split() + [h])).decode()
            check(out.startswith("usage: tokenaudit %s" % c), "%s %s: %s" % (c, h, out[:200]))
            check("options:" in out, "%s %s lists its options" % (c, h))
        check("\\fBtokenaudit %s\\fR" % c.replace("-", "\\-") in cli, "tokenaudit(1) lacks %s" % c)
    out = run("tokenaudit", "ledger", "--help").decode()
    check("usage: tokenaudit ledger dump" in out and "usage: tokenaudit ledger verify" in out, out)
    err = subprocess.run([harness.binary("tokenaudit"), "no-such-command", "--help"],
                         capture_output=True, text=True)
    check(err.returncode == 2 and "unknown command" in err.stderr, "unknown command: %s" % err.stderr)

    if shutil.which("groff"):
        for rel in ("man/tokenauditd.8", "man/tokenaudit.1"):
            p = subprocess.run(["groff", "-man", "-ww", "-z", os.path.join(harness.SOURCE_DIR, rel)],
                               capture_output=True, text=True)
            check(p.returncode == 0 and p.stderr == "", "groff warns about %s: %s" % (rel, p.stderr))
    else:
        print("groff not installed: formatting not checked")
    print("ok: %d settings, %d commands" % (len(settings), len(commands)))


if __name__ == "__main__":
    main()
