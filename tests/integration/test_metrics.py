"""test_metrics.py - GET /metrics is the sum over all workers (worker/metrics.h).

A real tokenauditd with 2 workers (harness.py) in front of the real fake
upstream. /v1 requests go out on fresh connections, so both workers serve
some; then /metrics is scraped on fresh connections until both workers
answered, and every scrape must show the same, exact totals per status and
model, upstream error kind and histogram. The page must be valid Prometheus
text (HELP and TYPE once per family, histogram buckets cumulative). A worker
killed with -9 is restarted in its slot and no counter goes backwards; new
requests after the restart add to the old totals.
"""

import os
import re
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from proxyutil import Admin, check, gateway_with_fake  # noqa: E402

MSGS = [{"role": "user", "content": "Say hello"}]
SERVED_BY = re.compile(r"^# tokenaudit metrics served by worker slot (-?\d+) pid (\d+);")
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def setup_tenant(gw, fake):
    adm = Admin(gw)
    prov = adm.add_provider("fake", fake.url, "sk-upstream-secret-7777", timeout_s=5)
    dead = adm.add_provider("dead", "http://127.0.0.1:%d/v1" % harness.free_port(), "sk-dead-0000")
    prices = {"input_price": "1", "output_price": "2"}
    chat = adm.add_model("gpt-test", [(prov["id"], "up-model")], capabilities=["chat", "streaming"], **prices)
    deadm = adm.add_model("dead-test", [(dead["id"], "x")], **prices)
    grp = adm.add_group("g", [chat["id"], deadm["id"]])
    quota = adm.add_quota(adm.first_user_id(), grp["id"], period="month", cost_limit="1000")
    return quota["api_key"]


def chat(gw, key, expect, **extra):
    body = {"model": "gpt-test", "messages": MSGS}
    body.update(extra)
    r = gw.http("POST", "/v1/chat/completions", body, token=key, timeout=20)
    check(r.status == expect, "expected %d: %s %s" % (expect, r.status, r.body))
    return r


def unescape(v):
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), v)


def parse(text):
    """Validate the text format and return (served_by_pid, types, samples) where
    samples maps (name, ((label, value), ...)) -> float."""
    lines = text.split("\n")
    check(lines[-1] == "", "the page ends with a newline")
    m = SERVED_BY.match(lines[0])
    check(m, "first line names the serving worker: %r" % lines[0])
    pid = int(m.group(2))
    helps, types, samples, seen_family = set(), {}, {}, []
    for ln in lines[:-1]:
        if ln.startswith("# HELP "):
            name = ln.split(" ")[2]
            check(name not in helps, "HELP %s appears once" % name)
            helps.add(name)
            continue
        if ln.startswith("# TYPE "):
            _, _, name, typ = ln.split(" ")
            check(name not in types, "TYPE %s appears once" % name)
            check(name in helps, "HELP before TYPE for %s" % name)
            check(typ in ("counter", "gauge", "histogram"), ln)
            types[name] = typ
            seen_family.append(name)
            continue
        if ln.startswith("#"):
            continue
        m = SAMPLE.match(ln)
        check(m, "sample line: %r" % ln)
        name, labels = m.group(1), ()
        if m.group(3):
            pairs = LABEL.findall(m.group(3))
            check(",".join('%s="%s"' % (k, v) for k, v, _ in pairs) == m.group(3), "labels: %r" % ln)
            labels = tuple((k, unescape(v)) for k, v, _ in pairs)
        fam = name
        for suf in ("_bucket", "_sum", "_count"):
            if name.endswith(suf) and types.get(name[:-len(suf)]) == "histogram":
                fam = name[:-len(suf)]
        check(fam in types and seen_family[-1] == fam,
              "sample %s follows its own TYPE line (family %s)" % (name, fam))
        check(name.startswith("tokenaudit_"), name)
        key = (name, labels)
        check(key not in samples, "sample %r appears once" % (key,))
        samples[key] = float(m.group(4))
    for name, typ in types.items():
        if typ != "histogram":
            continue
        series = {}  # the labels other than le (per provider route) -> its buckets
        for (n, l), v in samples.items():
            if n == name + "_bucket":
                series.setdefault(tuple(kv for kv in l if kv[0] != "le"), []).append((dict(l)["le"], v))
        check(series, "%s has buckets" % name)
        for rest, buckets in series.items():
            vals = [v for _, v in buckets]
            check(vals == sorted(vals), "%s buckets are cumulative: %r" % (name, buckets))
            check(buckets and buckets[-1][0] == "+Inf", "%s ends with +Inf" % name)
            check(buckets[-1][1] == samples[(name + "_count", rest)], "%s +Inf == _count" % name)
    return pid, types, samples


def scrape(gw):
    r = gw.http("GET", "/metrics")
    check(r.status == 200, "/metrics: %s %s" % (r.status, r.body))
    check(r.headers.get("content-type", "").startswith("text/plain"), r.headers)
    return parse(r.body.decode())


def counters(types, samples):
    """Every counter and histogram sample the workers count (gauges such as ring_depth, and
    billing's own counters, move on their own while billing settles)."""
    out = {}
    for (name, labels), v in samples.items():
        if name in ("tokenaudit_billing_events_total", "tokenaudit_quota_warnings_total"):
            continue
        fam = name
        for suf in ("_bucket", "_sum", "_count"):
            if name.endswith(suf) and types.get(name[:-len(suf)]) == "histogram":
                fam = name[:-len(suf)]
        if types[fam] in ("counter", "histogram"):
            out[(name, labels)] = v
    return out


def requests_by(samples):
    return {(dict(l)["status"], dict(l)["model"]): v for (n, l), v in samples.items()
            if n == "tokenaudit_requests_total"}


def scrape_all_workers(gw, pids, min_scrapes=4, max_scrapes=300):
    """Scrape on fresh connections until every pid in pids answered at least once."""
    got, seen = [], set()
    for _ in range(max_scrapes):
        pid, types, samples = scrape(gw)
        got.append((pid, types, samples))
        seen.add(pid)
        if set(pids) <= seen and len(got) >= min_scrapes:
            return got
    raise AssertionError("scrapes reached only workers %s of %s" % (sorted(seen), sorted(pids)))


def assert_same_totals(scrapes, expect_req, expect_up, expect_count):
    ref = None
    for pid, types, samples in scrapes:
        req = requests_by(samples)
        check(req == expect_req, "worker %d: requests_total %r, expected %r" % (pid, req, expect_req))
        up = {dict(l)["kind"]: v for (n, l), v in samples.items() if n == "tokenaudit_upstream_errors_total"}
        check(up == expect_up, "worker %d: upstream_errors_total %r, expected %r" % (pid, up, expect_up))
        cnt = samples[("tokenaudit_request_duration_seconds_count", ())]
        check(cnt == expect_count, "worker %d: duration count %s, expected %s" % (pid, cnt, expect_count))
        check(samples[("tokenaudit_holds_in_flight", ())] == 0, "no hold in flight after the answers")
        check(samples[("tokenaudit_billing_alive", ())] == 1, "billing alive")
        c = counters(types, samples)
        if ref is None:
            ref = c
        check(c == ref, "every scrape shows the same counters:\n%r\n%r" % (ref, c))
    return ref


def main():
    with gateway_with_fake(workers=2) as (gw, fake):
        run(gw, fake)
    print("ok")


def run(gw, fake):
    key = setup_tenant(gw, fake)
    pids = gw.worker_pids()
    check(len(pids) == 2, "two workers: %r" % pids)

    # before any /v1 traffic: valid page, no request series yet, 2 workers
    for pid, types, samples in scrape_all_workers(gw, pids, min_scrapes=2):
        check(requests_by(samples) == {}, "no /v1 request yet: %r" % requests_by(samples))
        check(samples[("tokenaudit_workers", ())] == 2, "workers gauge")
        check(samples[("tokenaudit_worker_restarts_total", ())] == 0, "no restart yet")
        for fam in ("requests_total", "request_duration_seconds", "upstream_errors_total",
                    "holds_in_flight", "ring_depth", "ring_pending", "workers",
                    "worker_restarts_total", "billing_alive"):
            check("tokenaudit_" + fam in types, "family %s present" % fam)

    # /v1 traffic, each request on a fresh connection (so both workers serve)
    n_ok = 0
    for i in range(22):
        chat(gw, key, 200, fake_usage="10,5,0")
        n_ok += 1
    for i in range(2):
        chat(gw, key, 200, stream=True, fake_chunks=3, fake_usage="9,3,0")
        n_ok += 1
    for i in range(3):
        r = gw.http("POST", "/v1/chat/completions", {"model": "gpt-test", "messages": MSGS},
                    token="sk-wrong-key-%d" % i)
        check(r.status == 401, r.body)
    for i in range(2):
        chat(gw, key, 404, model="no-such-model-%d" % i)
    for i in range(2):
        chat(gw, key, 502, model="dead-test")
    chat(gw, key, 429, fake_scenario="rate_limit")

    expect_req = {("200", "gpt-test"): n_ok, ("401", ""): 3, ("404", ""): 2, ("502", "dead-test"): 2,
                  ("429", "gpt-test"): 1}
    expect_up = {"connect": 2, "timeout": 0, "status": 1, "no_response": 0, "cut": 0, "other": 0}
    total = sum(expect_req.values())
    before = assert_same_totals(scrape_all_workers(gw, pids), expect_req, expect_up, total)

    # kill -9 one worker: the master restarts it in the same slot
    victim = pids[0]
    os.kill(victim, signal.SIGKILL)
    gw.wait_for(lambda: len(gw.worker_pids()) == 2 and victim not in gw.worker_pids(), 30,
                "the killed worker replaced")
    gw.wait_healthy()
    pids2 = gw.worker_pids()

    def settled():
        _, _, s = scrape(gw)
        return s[("tokenaudit_workers", ())] == 2 and s[("tokenaudit_worker_restarts_total", ())] == 1

    gw.wait_for(settled, 30, "workers == 2 and one restart in /metrics")
    after = assert_same_totals(scrape_all_workers(gw, pids2), expect_req, expect_up, total)
    for k, v in before.items():
        if k[0] == "tokenaudit_worker_restarts_total":
            continue
        check(after.get(k, -1) >= v, "%r went backwards after kill -9: %s -> %s" % (k, v, after.get(k)))
    check(after[("tokenaudit_worker_restarts_total", ())] == 1, "one restart counted")

    # more traffic after the restart adds to the old totals, on every worker
    for i in range(6):
        chat(gw, key, 200)
    expect_req[("200", "gpt-test")] += 6
    final = assert_same_totals(scrape_all_workers(gw, pids2), expect_req, expect_up, total + 6)
    for k, v in after.items():
        check(final.get(k, -1) >= v, "%r went backwards: %s -> %s" % (k, v, final.get(k)))

    # a reload (SIGHUP) replaces both workers; the new generation continues the
    # same slots, and a reload is not a restart
    gw.signal(signal.SIGHUP)

    def reloaded():
        _, _, s = scrape(gw)
        return s[("tokenaudit_config_generation", ())] == 2 and s[("tokenaudit_workers", ())] == 2

    gw.wait_for(reloaded, 30, "generation 2 serving with 2 workers in /metrics")
    gw.wait_for(lambda: len(gw.worker_pids()) == 2 and not set(gw.worker_pids()) & set(pids2), 30,
                "the old generation gone")
    reload_totals = assert_same_totals(scrape_all_workers(gw, gw.worker_pids()), expect_req, expect_up,
                                       total + 6)
    check(reload_totals == final, "a reload changes no counter:\n%r\n%r" % (final, reload_totals))


if __name__ == "__main__":
    main()
