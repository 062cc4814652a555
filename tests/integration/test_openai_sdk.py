"""test_openai_sdk.py - the official `openai` npm SDK (v6, Node >= 18) against a real
tokenauditd in front of the fake upstream.

tests/sdk/sdk_test.mjs does the client side (models.list, chat, streams with and
without stream_options.include_usage, embeddings, and the typed errors:
AuthenticationError, NotFoundError, PermissionDeniedError, RateLimitError for an
exhausted quota and for a rate limit, with maxRetries 0). This file starts the
servers, makes the keys, runs `npm ci` when tests/sdk/node_modules lacks a package,
runs the script, and then checks the books: one upstream call per admitted
request, the quotas' usage equal to the sum of their audit records, and
`tokenaudit ledger verify` exit 0.
"""

import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proxyutil import SDK_DIR, Tenant, audit_records, check, gateway_with_fake, nano, sdk_modules, verify  # noqa: E402


def ensure_sdk():
    node = shutil.which("node")
    check(node is not None, "node is not installed (the SDK test needs Node >= 18)")
    sdk_modules()
    return node


def main():
    node = ensure_sdk()
    with gateway_with_fake(workers=2) as (gw, fake):
        t = Tenant(gw, fake, quota={"period": "month", "cost_limit": "100"})
        ex_q, ex_key = t.new_quota({"period": "day", "request_limit": 1})
        rl_q, rl_key = t.new_quota({"period": "month", "rpm": 1})
        env = dict(os.environ, TA_BASE_URL=gw.url + "/v1", TA_KEY=t.key, TA_KEY_EXHAUST=ex_key,
                   TA_KEY_RPM=rl_key)
        p = subprocess.run([node, os.path.join(SDK_DIR, "sdk_test.mjs")], cwd=SDK_DIR, env=env,
                           capture_output=True, text=True, timeout=120)
        sys.stdout.write(p.stdout)
        check(p.returncode == 0 and "SDK OK" in p.stdout,
              "sdk_test.mjs failed (%d):\n%s\n%s" % (p.returncode, p.stdout, p.stderr))

        # one upstream call per admitted chat request: 1 chat + 2 streams +
        # 1 upstream 429 (main key), 1 (exhausted key), 1 (rpm key)
        calls = fake.calls("/v1/chat/completions")
        check(len(calls) == 6, "upstream chat calls: %d\n%s" % (len(calls), "\n".join(c["line"] for c in calls)))
        check(all(c["auth"] == "7777" for c in calls), "the provider key went upstream")
        check(len(fake.calls("/v1/embeddings")) == 1, "one upstream embeddings call")

        # the books: usage equals the audit records, per quota
        # (admitted = took a hold: the 200s plus the upstream's own 429;
        # requests_used counts only what was served: the upstream 429 is free)
        for qid, ok200, admitted in ((t.quota_id, 4, 5), (ex_q["id"], 1, 1), (rl_q["id"], 1, 1)):
            u = t.settled(qid)
            recs = [r for r in audit_records(gw) if r["quota_id"] == qid]
            held = [r for r in recs if nano(r["held_cost"]) > 0]
            check(len([r for r in recs if r["status"] == 200]) == ok200, "quota %d: 200s in %r" % (qid, recs))
            check(len(held) == admitted, "quota %d: %d held, expected %d" % (qid, len(held), admitted))
            check(u["requests_used"] == ok200,
                  "quota %d: requests_used %s, expected the %d served" % (qid, u["requests_used"], ok200))
            check(nano(u["cost_used"]) == sum(nano(r["cost"]) for r in recs),
                  "quota %d: cost_used %s != sum of audit costs" % (qid, u["cost_used"]))
        recs = audit_records(gw)
        main_recs = [r for r in recs if r["quota_id"] == t.quota_id]
        chat = [r for r in main_recs if r["status"] == 200 and not r["stream"] and r["endpoint"] == "chat.completions"]
        check(len(chat) == 1 and chat[0]["prompt_tokens"] == 12 and chat[0]["completion_tokens"] == 5
              and chat[0]["cached_tokens"] == 4 and not chat[0]["usage_estimated"],
              "chat audit record: %r" % chat)
        streams = sorted((r["prompt_tokens"], r["completion_tokens"]) for r in main_recs
                         if r["stream"] and r["status"] == 200)
        check(streams == [(9, 3), (9, 4)], "stream usage from the provider: %r" % streams)
        codes = sorted((r["status"], r["error_type"]) for r in recs if r["status"] >= 400)
        sys.stdout.write("refusals recorded: %r\n" % codes)
        check(sum(1 for c in codes if c[0] == 429) == 3, "three 429s recorded: %r" % codes)
        check(sum(1 for c in codes if c[0] == 404) == 1 and sum(1 for c in codes if c[0] == 403) == 1,
              "404 and 403 recorded: %r" % codes)
        verify(gw)
    print("ok")


if __name__ == "__main__":
    main()
