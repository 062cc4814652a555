#!/usr/bin/env python3
"""Configure a fresh tokenauditd for bench/proxy_bench.sh through its admin API.

login -> provider (the fake upstream) -> model with prices -> group ->
user -> quota with a very large cost limit; prints the quota's API key on
stdout. Every request a benchmark then sends with that key takes the whole
path: key lookup, hold, upstream call, event, billing.

Any failure names the request, the status and the answer's body on stderr
and exits 1 (the admin API may not be finished yet; the message says where
it stopped). Standard library only.
"""
import argparse
import json
import sys
import urllib.error
import urllib.request


def call(base, method, path, body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw = e.read()
        status = e.code
    except (urllib.error.URLError, OSError) as e:
        sys.exit("setup_gateway: %s %s: no answer (%s)" % (method, path, e))
    text = raw.decode("utf-8", "replace")
    if status // 100 != 2:
        sys.exit("setup_gateway: %s %s answered %d: %s" % (method, path, status, text[:500]))
    try:
        return json.loads(text) if text else {}
    except ValueError:
        sys.exit("setup_gateway: %s %s answered %d with non-JSON: %s"
                 % (method, path, status, text[:500]))


def need(obj, field, what):
    if not isinstance(obj, dict) or field not in obj:
        sys.exit("setup_gateway: %s: answer has no %r: %s" % (what, field, json.dumps(obj)[:500]))
    return obj[field]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="gateway base URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("--email", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--upstream", required=True, help="provider base_url, e.g. http://127.0.0.1:9000/v1")
    ap.add_argument("--model", default="bench-model")
    a = ap.parse_args()
    base = a.url.rstrip("/")

    login = call(base, "POST", "/api/auth/login/", {"email": a.email, "password": a.password})
    tok = need(login, "access_token", "login")

    prov = call(base, "POST", "/api/admin/providers/", {
        "name": "bench-upstream", "type": "openai", "base_url": a.upstream,
        "api_key": "sk-upstream-bench", "timeout_s": 60}, tok)
    prov_id = need(prov, "id", "provider")

    model = call(base, "POST", "/api/admin/models/", {
        "name": a.model,
        "routes": [{"provider_id": prov_id, "upstream_name": a.model, "priority": 0}],
        "input_price": "0.15", "output_price": "0.6",
        "capabilities": ["chat", "streaming"]}, tok)
    model_id = need(model, "id", "model")

    group = call(base, "POST", "/api/admin/groups/", {
        "name": "bench-group", "description": "proxy benchmark",
        "model_ids": [model_id], "default_quota": {"period": "none"}}, tok)
    group_id = need(group, "id", "group")

    user = call(base, "POST", "/api/admin/users/", {
        "email": "bench-user@example.com", "password": "bench user password 1",
        "name": "Bench", "role": "user"}, tok)
    user_id = need(user, "id", "user")

    # A cost limit no benchmark can reach, so every request is held and
    # settled against a real limit rather than skipping the budget check.
    quota = call(base, "POST", "/api/admin/quotas/", {
        "user_id": user_id, "group_id": group_id, "period": "none",
        "cost_limit": "100000000"}, tok)
    key = need(quota, "api_key", "quota")
    print(key)


if __name__ == "__main__":
    main()
