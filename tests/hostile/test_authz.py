"""test_authz.py - hostile authorization.

1. Every /api/admin route, taken from the server's own OpenAPI document
   (`tokenaudit openapi --json`, so a new route is covered without editing
   this file), every method, with every kind of non-admin credential: none,
   a non-Bearer scheme, garbage, a normal user's JWT, an API key as the
   bearer, the JWT of a logged-out admin. {id} is a real object of that kind
   (another user's, for users), and writes carry a plausible body, so a
   missing check would really write: the answer is exactly 401 (403
   permission_denied for the user's JWT), and the ledger dump is unchanged.
   Spellings of the admin prefix (no trailing slash, doubled slashes, dot
   segments, upper case, percent-encoding) are never a way in either.
2. Another user's ids on every user route: the non-admin /api GET routes and
   the /v1 GET routes of the same document, called with user A's JWT and API
   key and B's ids in every query parameter, never show anything of B; A's
   password change with B's id in the body changes A's password only; A's
   key cannot use a model of B's group, and nothing is charged.
"""

import http.client
import json
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hostile import AUDIT, Cases, Snapshot, check, excerpt, expect, finish_gateway, make_user  # noqa: E402
import harness  # noqa: E402  (on the path once hostile is imported)

PW = "user-password-1"
WRITE_BODY = {"name": "hostile", "email": "hostile@example.com", "password": "hostile-pass-1",
              "role": "superadmin", "is_active": False, "type": "openai", "base_url": "http://127.0.0.1:9/v1",
              "api_key": "sk-hostile-000000000000", "model_ids": [], "user_id": 1, "group_id": 1,
              "cost_limit": "0", "routes": []}


def openapi_routes():
    p = harness.run_cli("openapi", "--json")
    doc = json.loads(p.stdout)
    out = []
    for path, item in doc["paths"].items():
        for method in item:
            if method in ("get", "post", "put", "patch", "delete"):
                out.append((method.upper(), path))
    check(out, "the OpenAPI document lists no routes")
    return out


class World:
    def __init__(self, gw):
        self.gw = gw
        self.admin = gw.login()
        ad = self.admin
        self.alice = make_user(gw, ad, "alice@example.com", PW)
        self.bob = make_user(gw, ad, "bob@example.com", PW)
        self.carol = make_user(gw, ad, "carol@example.com", PW)
        prov = self.post("/api/admin/providers/", {"name": "p", "type": "openai", "base_url": "http://127.0.0.1:9/v1",
                                                   "api_key": "sk-up-123456789012"})
        self.provider_id = prov["id"]

        def model(name):
            return self.post("/api/admin/models/", {"name": name, "input_price": "1", "output_price": "1",
                                                    "capabilities": ["chat"],
                                                    "routes": [{"provider_id": prov["id"], "upstream_name": "u",
                                                                "priority": 1}]})
        self.model_a, self.model_b = model("alice-model"), model("bob-secret-model")
        self.group_a = self.post("/api/admin/groups/", {"name": "ga", "model_ids": [self.model_a["id"]]})
        self.group_b = self.post("/api/admin/groups/", {"name": "gb-secret", "model_ids": [self.model_b["id"]]})
        self.quota_a = self.post("/api/admin/quotas/", {"user_id": self.alice["id"], "group_id": self.group_a["id"],
                                                        "period": "month", "cost_limit": "1"})
        self.quota_b = self.post("/api/admin/quotas/", {"user_id": self.bob["id"], "group_id": self.group_b["id"],
                                                        "period": "month", "cost_limit": "1"})
        self.key_a = self.quota_a["api_key"]
        self.alice_tok = gw.login("alice@example.com", PW)
        # a superadmin who logged out: that token is no credential either
        admin2 = make_user(gw, ad, "admin2@example.com", PW, role="superadmin")
        self.loggedout_admin = gw.login(admin2["email"], PW)
        expect("logout of admin2", gw.http("POST", "/api/auth/logout/", token=self.loggedout_admin), 204)
        # an id of each kind, by the collection the path names
        self.ids = {"users": self.bob["id"], "providers": self.provider_id, "models": self.model_b["id"],
                    "groups": self.group_b["id"], "quotas": self.quota_b["id"]}
        # B's things that must never show in an answer to A
        self.b_secrets = ["bob@example.com", "bob-secret-model", "gb-secret", self.quota_b["key_prefix"]]
        # a real audit record, for {request_id}: B's request (refused: no such model)
        r = gw.http("POST", "/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "x"}]},
                    token=self.quota_b["api_key"])
        expect("a request of B's", r, 404)
        self.request_id = r.headers["x-request-id"]
        harness.wait_for(lambda: gw.http("GET", "/api/admin/requests/%s/" % self.request_id,
                                         token=self.admin).status == 200, 30, "the audit record of B's request")

    def post(self, path, body):
        r = self.gw.http("POST", path, body, token=self.admin)
        expect("set-up POST %s" % path, r, 201)
        return r.json

    def concrete(self, path):
        path = path.replace("{request_id}", self.request_id)
        if "{id}" not in path:
            return path
        coll = path.split("/")[3]
        check(coll in self.ids, "no test object for %s: add one to World.ids" % path)
        return path.replace("{id}", str(self.ids[coll]))


# ---- 1. the admin routes with non-admin credentials --------------------------

def credentials(w):
    """(name, headers, expected status, expected code)"""
    return [
        ("none", {}, 401, "not_authenticated"),
        ("basic_scheme", {"Authorization": "Basic YWRtaW5AZXhhbXBsZS5jb206YWRtaW4="}, 401, "not_authenticated"),
        ("empty_bearer", {"Authorization": "Bearer "}, 401, "not_authenticated"),
        ("garbage", {"Authorization": "Bearer ;DROP TABLE users;--"}, 401, "invalid_token"),
        ("user_jwt", {"Authorization": "Bearer " + w.alice_tok}, 403, "permission_denied"),
        ("api_key", {"Authorization": "Bearer " + w.key_a}, 401, "invalid_token"),
        ("logged_out_admin_jwt", {"Authorization": "Bearer " + w.loggedout_admin}, 401, "token_revoked"),
    ]


def admin_route_case(w, method, path, creds):
    real = w.concrete(path)
    snap = Snapshot(w.gw)
    body = json.dumps(WRITE_BODY) if method in ("POST", "PUT", "PATCH") else None
    for name, hdrs, status, code in creds:
        h = dict(hdrs)
        if body is not None:
            h["Content-Type"] = "application/json"
        r = w.gw.http(method, real, raw=body.encode() if body else None, headers=h)
        expect("%s %s with credential %s" % (method, real, name), r, status, code)
    snap.assert_unchanged("%s %s with non-admin credentials" % (method, real))


def admin_spellings_case(w):
    """Other spellings of an admin path, without credentials or with a user's:
    refused (401/403) or unknown (404), never served."""
    snap = Snapshot(w.gw)
    uid = w.bob["id"]
    spellings = ["/api/admin/users", "/api/admin/users/%d" % uid, "//api/admin/users/", "/api//admin/users/",
                 "/api/admin//users/", "/api/./admin/users/", "/api/x/../admin/users/", "/API/admin/users/",
                 "/api/ADMIN/users/", "/api/%61dmin/users/", "/api/admin/users/%2e%2e/users/",
                 "/api/admin/users/%d/?role=superadmin" % uid, "/api/admin/users/;/"]
    for p in spellings:
        for tok in (None, w.alice_tok):
            for method in ("GET", "PATCH", "DELETE"):
                try:
                    r = w.gw.http(method, p, token=tok, body={"role": "superadmin"} if method == "PATCH" else None)
                except (OSError, ValueError, http.client.HTTPException):
                    continue  # the client library refused the path, or the server closed: not served either way
                check(r.status in (400, 401, 403, 404, 405),
                      "%s %r with %s: expected 400/401/403/404/405, got %s; body: %s" %
                      (method, p, "a user's JWT" if tok else "no credential", r.status, excerpt(r.body)))
    snap.assert_unchanged("admin path spellings")


# ---- 2. another user's ids on the user routes --------------------------------

def no_b_data(w, what, r, sent=""):
    """B's data is nowhere in the answer (what the request itself sent, echoed
    in an error message, is not B's data)."""
    text = r.body.decode("utf-8", "replace")
    sent = urllib.parse.unquote(sent)
    leaked = [s for s in w.b_secrets if s in text and s not in sent]
    check(not leaked, "%s: answer %s shows user B's data %r: %s" % (what, r.status, leaked, excerpt(r.body)))


def user_route_case(w, method, path):
    b = w.bob["id"]
    qb = w.quota_b["id"]
    q = "?user_id=%d&quota_id=%d&id=%d&group_id=%d&email=bob%%40example.com&model=bob-secret-model" % (
        b, qb, b, w.group_b["id"])
    real = path.replace("{model}", "bob-secret-model")
    snap = Snapshot(w.gw)
    for cred_name, tok in (("A's JWT", w.alice_tok), ("A's API key", w.key_a)):
        r = w.gw.http(method, real + q, token=tok)
        what = "%s %s with %s and B's ids in the query" % (method, real, cred_name)
        check(r.status in (200, 401, 404), "%s: expected 200 (A's own data), 401 or 404, got %s; body: %s" %
              (what, r.status, excerpt(r.body)))
        no_b_data(w, what, r, real + q)
        if path == "/api/auth/me/" and r.status == 200:
            check(r.json["id"] == w.alice["id"], "%s: answered user %s, not A" % (what, r.json.get("id")))
        if path == "/api/quotas/" and r.status == 200:
            others = [x["id"] for x in r.json["results"] if x.get("user_id") != w.alice["id"]]
            check(not others, "%s: lists quotas of other users: %r" % (what, others))
    snap.assert_unchanged("%s %s with B's ids" % (method, real))


def other_quota_paths_case(w):
    qb = w.quota_b["id"]
    snap = Snapshot(w.gw)
    for p in ("/api/quotas/%d/" % qb, "/api/quotas/%d/requests/" % qb, "/v1/usage/%d" % qb,
              "/api/auth/me/%d/" % w.bob["id"]):
        for tok in (w.alice_tok, w.key_a):
            r = w.gw.http("GET", p, token=tok)
            check(r.status in (401, 403, 404, 405), "GET %s as A: expected 401/403/404/405, got %s; body: %s" %
                  (p, r.status, excerpt(r.body)))
            no_b_data(w, "GET %s as A" % p, r)
    snap.assert_unchanged("B's quota paths as A")


def password_change_with_b_id_case(w):
    carol_tok = w.gw.login("carol@example.com", PW)
    r = w.gw.http("POST", "/api/auth/password/", {"old_password": PW, "new_password": "carol-new-pass-2",
                                                  "user_id": w.bob["id"], "id": w.bob["id"],
                                                  "email": "bob@example.com"}, token=carol_tok)
    check(r.status in (200, 400), "password change with B's id in the body: expected 200 (own password) or 400 "
          "(unknown field), got %s; body: %s" % (r.status, excerpt(r.body)))
    # bob's password is untouched either way
    r = w.gw.http("POST", "/api/auth/login/", {"email": "bob@example.com", "password": PW})
    expect("B's login with B's own password after A's password change", r, 200)


def model_of_b_case(w):
    snap = Snapshot(w.gw, ignore=AUDIT)  # a refused /v1 request leaves its audit record
    before = w.gw.http("GET", "/api/admin/quotas/%d/" % w.quota_a["id"], token=w.admin).json["usage"]
    r = w.gw.http("POST", "/v1/chat/completions", {"model": "bob-secret-model",
                                                   "messages": [{"role": "user", "content": "hi"}]}, token=w.key_a)
    expect("A's key on a model of B's group", r, 403, "model_not_allowed")
    r = w.gw.http("GET", "/v1/models/bob-secret-model", token=w.key_a)
    expect("A's key on GET /v1/models/<B's model>", r, 404)
    r = w.gw.http("GET", "/v1/models", token=w.key_a)
    expect("GET /v1/models with A's key", r, 200)
    no_b_data(w, "GET /v1/models with A's key", r)
    after = w.gw.http("GET", "/api/admin/quotas/%d/" % w.quota_a["id"], token=w.admin).json["usage"]
    check(before["cost_used"] == after["cost_used"] and before["tokens_used"] == after["tokens_used"],
          "a refused request charged A: %r -> %r" % (before, after))
    snap.assert_unchanged("A's key on B's model")


def main():
    cases = Cases("authz")
    routes = openapi_routes()
    with harness.Gateway(workers=2) as gw:
        w = World(gw)
        creds = credentials(w)
        admin_routes = [(m, p) for m, p in routes if p.startswith("/api/admin/")]
        check(len(admin_routes) >= 20, "only %d admin routes in the OpenAPI document" % len(admin_routes))
        for m, p in admin_routes:
            cases.run("admin_route.%s_%s" % (m, p), admin_route_case, w, m, p, creds)
        cases.run("admin_route.spellings", admin_spellings_case, w)
        user_routes = [(m, p) for m, p in routes if m == "GET" and
                       ((p.startswith("/api/") and not p.startswith("/api/admin/")) or p.startswith("/v1/"))]
        for m, p in user_routes:
            cases.run("user_route.%s_%s" % (m, p), user_route_case, w, m, p)
        cases.run("user_route.b_quota_paths", other_quota_paths_case, w)
        cases.run("user_route.password_change_with_b_id", password_change_with_b_id_case, w)
        cases.run("user_route.model_of_b", model_of_b_case, w)
        cases.run("end.ledger_verify_and_no_sanitizer_report", finish_gateway, gw)
    cases.finish()


if __name__ == "__main__":
    main()
