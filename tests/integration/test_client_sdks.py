"""test_client_sdks.py - the client libraries people point at a gateway, against a
real tokenauditd with both provider types behind it (the fake upstream as an
openai-type and as an anthropic-type provider): the official `openai` SDK
(responses.create plain, streamed, with a function call and its output,
responses.stream; chat with a tool call, plain and streamed; embeddings in the
SDK's default base64 encoding), the Vercel AI SDK (`ai` + `@ai-sdk/openai`,
whose default provider speaks the Responses API: generateText, streamText) and
`@anthropic-ai/sdk` (messages.create, messages.stream, countTokens).

tests/sdk/clients_test.mjs makes the calls, each with a usage of its own
scripted into the fake, and prints what each must have been charged; this file
starts the servers, runs `npm ci` when tests/sdk/node_modules lacks a package,
finds every call's audit record and checks its tokens and its cost to the
nano-unit, the quota's cost_used against the records, and `ledger verify`.

Node: the pinned versions (tests/sdk/package-lock.json) declare Node >= 18
(`ai` 6, `@ai-sdk/openai` 3; `openai` 6 and `@anthropic-ai/sdk` 1 declare
none). Without Node 18 or newer the test skips (exit 77) saying so, except
under CI=1, where it fails.
"""

import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from proxyutil import (SDK_DIR, Admin, audit_records, both_types, chat_model, check,  # noqa: E402
                       gateway_with_fake, nano, sdk_modules, verify)

NODE_MIN = 18
PRICES = {"input_price": "3", "output_price": "15", "cache_read_price": "1", "cache_write_price": "4"}


def skip(why):
    if os.environ.get("CI") == "1":
        raise AssertionError("under CI=1 this test may not skip: " + why)
    print("SKIP: " + why)
    sys.exit(77)


def ensure_node():
    node = shutil.which("node")
    if node is None:
        skip("node is not installed (the client SDK test needs Node >= %d)" % NODE_MIN)
    v = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    major = int(v.lstrip("v").split(".")[0] or 0)
    if major < NODE_MIN:
        skip("node %s is too old: the pinned SDKs need Node >= %d" % (v, NODE_MIN))
    sdk_modules()
    return node, v


def cost(prompt, completion, cached, cache_write):
    return ((prompt - cached - cache_write) * 3 + cached * 1 + cache_write * 4 + completion * 15) * 1000


def main():
    node, version = ensure_node()
    with gateway_with_fake(workers=2) as (gw, fake):
        adm = Admin(gw)
        oai, anth = both_types(adm, fake)
        gpt = chat_model(adm, "gpt-test", oai, "gpt-up", max_output_tokens=1000, **PRICES)
        claude = chat_model(adm, "claude-test", anth, "claude-up", max_output_tokens=1000, **PRICES)
        emb = adm.add_model("emb-test", [(oai["id"], "up-emb")], capabilities=["embeddings"], **PRICES)
        grp = adm.add_group("g", [gpt["id"], claude["id"], emb["id"]])
        q = adm.add_quota(adm.first_user_id(), grp["id"], period="month", cost_limit="100")
        env = dict(os.environ, TA_BASE_URL=gw.url + "/v1", TA_KEY=q["api_key"],
                   TA_FAKE_URL="http://127.0.0.1:%d" % fake.port)
        p = subprocess.run([node, os.path.join(SDK_DIR, "clients_test.mjs")], cwd=SDK_DIR, env=env,
                           capture_output=True, text=True, timeout=180)
        sys.stdout.write("node %s\n%s" % (version, p.stdout))
        check(p.returncode == 0 and "CLIENTS OK" in p.stdout,
              "clients_test.mjs failed (%d):\n%s\n%s" % (p.returncode, p.stdout, p.stderr))
        calls = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
        check(len(calls) == 23, "every call reported: %d of 23" % len(calls))

        # every call's record: its tokens and its cost to the nano-unit
        recs = audit_records(gw, applied=len(calls))
        free = [r for r in recs if r["endpoint"] == "messages.count_tokens"]
        for c in calls:
            if c["endpoint"] == "messages.count_tokens":
                continue
            p_, c_, k, w = c["charged"]
            mine = [r for r in recs if r["endpoint"] == c["endpoint"] and
                    (r["prompt_tokens"], r["completion_tokens"], r["cached_tokens"], r["cache_write_tokens"]) ==
                    (p_, c_, k, w)]
            check(len(mine) == 1, "%s: one %s record with tokens %r: %r" % (c["check"], c["endpoint"], c["charged"],
                                                                          mine))
            r = mine[0]
            check(r["status"] == 200 and r["error_type"] == "" and not r["usage_estimated"], "%s: %r" % (c["check"], r))
            check(nano(r["cost"]) == cost(p_, c_, k, w),
                  "%s: charged %s, want %d nano" % (c["check"], r["cost"], cost(p_, c_, k, w)))
        check(len(free) == 2 and all(nano(r["cost"]) == 0 for r in free), "count_tokens never charged: %r" % free)
        check(all(r["status"] == 200 for r in recs), "no call failed: %r" % [r for r in recs if r["status"] != 200])

        def settled():
            u = adm.get("/api/admin/quotas/%d/" % q["id"])["usage"]
            return u if u["in_flight"] == 0 and nano(u["cost_held"]) == 0 else None
        u = harness.wait_for(settled, 30, "quota settled")
        check(nano(u["cost_used"]) == sum(nano(r["cost"]) for r in recs),
              "cost_used %s = the sum of the records" % u["cost_used"])
        verify(gw)
    print("ok")


if __name__ == "__main__":
    main()
