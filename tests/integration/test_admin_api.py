"""test_admin_api.py - the admin API over real HTTP against a real tokenauditd with two
workers: CRUD of every resource, error shapes and status codes, API keys on the user
endpoints, and that a write (and a logout) is seen by every worker at once: each check
after a write is repeated on many fresh connections, which the kernel spreads over both
workers' accept queues."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

FRESH = 40  # fresh connections per visibility check


class AdminApi(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.gw = harness.Gateway(workers=2, env={"TOKENAUDIT_MAX_BODY_SIZE": "8192"})
        cls.tok = cls.gw.login()

    @classmethod
    def tearDownClass(cls):
        cls.gw.stop_and_cleanup()

    # ---- helpers ------------------------------------------------------------
    def call(self, method, path, body=None, token="admin", want=None, **kw):
        tok = self.tok if token == "admin" else token
        r = self.gw.http(method, path, body, token=tok, **kw)
        if want is not None:
            self.assertEqual(r.status, want, "%s %s -> %d %s" % (method, path, r.status, r.body))
        return r

    def assert_error(self, r, status, typ, param=None):
        self.assertEqual(r.status, status, r.body)
        self.assertTrue(r.headers.get("content-type", "").startswith("application/json"))
        e = r.json["error"]
        self.assertEqual(e["type"], typ, r.body)
        self.assertIn("message", e)
        self.assertIn("code", e)
        self.assertEqual(e["param"], param, r.body)
        if param is not None and status == 400:
            self.assertIn(param, e["fields"])

    _n = 0

    def uniq(self, stem):
        AdminApi._n += 1
        return "%s%d" % (stem, AdminApi._n)

    def setup_chain(self):
        """provider -> model -> group; returns their ids."""
        p = self.call("POST", "/api/admin/providers/", {
            "name": self.uniq("prov"), "type": "openai", "base_url": "http://127.0.0.1:9/v1",
            "api_key": "sk-upstream-0123456789abcd"}, want=201).json
        m = self.call("POST", "/api/admin/models/", {
            "name": self.uniq("model"), "routes": [{"provider_id": p["id"], "upstream_name": "x",
                                                    "priority": 1}],
            "input_price": "1.5", "output_price": 2}, want=201).json
        g = self.call("POST", "/api/admin/groups/", {
            "name": self.uniq("group"), "model_ids": [m["id"]],
            "default_quota": {"period": "month", "cost_limit": "10", "rpm": 100}}, want=201).json
        return p, m, g

    def mk_user(self, role="user"):
        email = self.uniq("u") + "@example.com"
        u = self.call("POST", "/api/admin/users/", {"email": email, "password": "pw-" + email,
                                                    "role": role}, want=201).json
        return u, email, "pw-" + email

    # ---- tests ------------------------------------------------------------------
    def test_crud_and_shapes(self):
        p, m, g = self.setup_chain()
        self.assertTrue(p["api_key_set"])
        self.assertEqual(p["api_key_last4"], "abcd")
        self.assertNotIn("api_key", p)
        self.assertNotIn(b"0123456789", self.call("GET", "/api/admin/providers/%d/" % p["id"],
                                                  want=200).body)
        self.assertEqual(m["input_price"], "1.5")
        self.assertEqual(m["output_price"], "2")
        self.assertEqual(g["default_quota"]["cost_limit"], "10")

        u, _, _ = self.mk_user()
        r = self.call("POST", "/api/admin/quotas/", {"user_id": u["id"], "group_id": g["id"],
                                                     "rpm": 7}, want=201)
        q = r.json
        self.assertTrue(r.request_id)
        self.assertTrue(q["api_key"].startswith("sk-"))
        self.assertEqual(q["cost_limit"], "10")   # from the group
        self.assertEqual(q["rpm"], 7)             # from the request
        self.assertEqual(q["period"], "month")
        self.assertEqual(q["usage"]["cost_used"], "0")
        got = self.call("GET", "/api/admin/quotas/%d" % q["id"], want=200).json
        self.assertNotIn("api_key", got)
        self.assertEqual(got["key_prefix"], q["key_prefix"])

        # filters and pagination
        r = self.call("GET", "/api/admin/quotas/?user_id=%d" % u["id"], want=200).json
        self.assertEqual(r["count"], 1)
        r = self.call("GET", "/api/admin/users/?page_size=1", want=200).json
        self.assertGreaterEqual(r["count"], 2)
        self.assertTrue(r["next"].startswith(self.gw.url + "/api/admin/users/?"))
        self.assertIn("page=2", r["next"])
        self.assertIsNone(r["previous"])

        # conflicts
        self.assert_error(self.call("DELETE", "/api/admin/groups/%d/" % g["id"]), 409,
                          "conflict_error")
        self.assert_error(self.call("DELETE", "/api/admin/models/%d/" % m["id"]), 409,
                          "conflict_error")
        self.assert_error(self.call("DELETE", "/api/admin/providers/%d/" % p["id"]), 409,
                          "conflict_error")
        self.assert_error(self.call("POST", "/api/admin/models/", {"name": m["name"]}), 409,
                          "conflict_error", "name")
        # teardown in dependency order
        self.call("DELETE", "/api/admin/quotas/%d/" % q["id"], want=204)
        self.call("DELETE", "/api/admin/groups/%d/" % g["id"], want=204)
        self.call("DELETE", "/api/admin/models/%d/" % m["id"], want=204)
        self.call("DELETE", "/api/admin/providers/%d/" % p["id"], want=204)
        self.call("GET", "/api/admin/providers/%d/" % p["id"], want=404)

    def test_errors(self):
        self.assert_error(self.call("GET", "/api/admin/nothing/"), 404, "not_found_error")
        self.assert_error(self.call("GET", "/api/admin/users/0/"), 404, "not_found_error")
        r = self.call("DELETE", "/api/admin/users/")
        self.assert_error(r, 405, "invalid_request_error")
        self.assertEqual(r.headers.get("allow"), "GET, POST")
        self.assert_error(self.call("GET", "/api/admin/users/", token=None), 401,
                          "authentication_error")
        self.assert_error(self.call("GET", "/api/admin/users/", token="nope"), 401,
                          "authentication_error")
        r = self.call("POST", "/api/admin/users/", '{"email": "x@example.com",',
                      headers={"Content-Type": "application/json"})
        self.assert_error(r, 400, "invalid_request_error")
        self.assertIn("line 1", r.json["error"]["message"])
        self.assert_error(self.call("POST", "/api/admin/users/", [1, 2]), 400,
                          "invalid_request_error")
        self.assert_error(self.call("POST", "/api/admin/users/", {"email": "bad", "password":
                                                                  "long enough"}),
                          400, "invalid_request_error", "email")
        self.assert_error(self.call("GET", "/api/admin/users/?page_size=1000"), 400,
                          "invalid_request_error", "page_size")
        big = '{"name": "%s"}' % ("x" * 10000)
        r = self.call("POST", "/api/admin/users/", big, headers={"Content-Type":
                                                                 "application/json"})
        self.assertEqual(r.status, 413, r.body)
        # a normal user on an admin endpoint
        _, email, pw = self.mk_user()
        utok = self.gw.login(email, pw)
        self.assert_error(self.call("GET", "/api/admin/users/", token=utok), 403,
                          "permission_error")
        # both spellings of a path
        self.call("GET", "/api/auth/me", token=utok, want=200)
        self.call("GET", "/api/auth/me/", token=utok, want=200)

    def test_writes_seen_on_fresh_connections(self):
        for _ in range(3):
            u, email, pw = self.mk_user()
            for _ in range(FRESH):
                r = self.call("GET", "/api/admin/users/%d/" % u["id"])
                self.assertEqual(r.status, 200, r.body)
                self.assertEqual(r.json["email"], email)
            self.call("PATCH", "/api/admin/users/%d/" % u["id"], {"name": "renamed"}, want=200)
            for _ in range(FRESH):
                self.assertEqual(self.call("GET", "/api/admin/users/%d/" % u["id"]).json["name"],
                                 "renamed")

    def test_logout_everywhere(self):
        tok = self.gw.login()
        for _ in range(10):
            self.call("GET", "/api/auth/me/", token=tok, want=200)
        self.call("POST", "/api/auth/logout/", token=tok, want=204)
        for _ in range(FRESH):
            self.assert_error(self.call("GET", "/api/auth/me/", token=tok), 401,
                              "authentication_error")
        # the admin's other token still works
        self.call("GET", "/api/auth/me/", want=200)

    def test_api_keys(self):
        _, _, g = self.setup_chain()
        u, email, pw = self.mk_user()
        other, _, _ = self.mk_user()
        q = self.call("POST", "/api/admin/quotas/", {"user_id": u["id"], "group_id": g["id"]},
                      want=201).json
        self.call("POST", "/api/admin/quotas/", {"user_id": other["id"], "group_id": g["id"]},
                  want=201)
        key = q["api_key"]
        r = self.call("GET", "/api/quotas/", token=key, want=200).json
        self.assertEqual(r["count"], 1)
        self.assertEqual(r["results"][0]["id"], q["id"])
        self.assertIn("usage", r["results"][0])
        utok = self.gw.login(email, pw)
        self.assertEqual(self.call("GET", "/api/quotas/", token=utok, want=200).json["count"], 1)
        self.assertEqual(self.call("GET", "/api/auth/me/", token=key, want=200).json["id"], u["id"])
        self.call("GET", "/api/admin/quotas/", token=key, want=401)

        new = self.call("POST", "/api/admin/quotas/%d/reset_api_key/" % q["id"], want=200).json
        for _ in range(FRESH):
            self.assertEqual(self.call("GET", "/api/auth/me/", token=key).status, 401)
        self.call("GET", "/api/auth/me/", token=new["api_key"], want=200)

        # deleting the user revokes every key of theirs
        self.call("DELETE", "/api/admin/users/%d/" % u["id"], want=204)
        for _ in range(FRESH):
            self.assertEqual(self.call("GET", "/api/quotas/", token=new["api_key"]).status, 401)
        self.assertFalse(self.call("GET", "/api/admin/users/%d/" % u["id"],
                                   want=200).json["is_active"])

    def test_password_change(self):
        _, email, pw = self.mk_user()
        utok = self.gw.login(email, pw)
        self.assert_error(self.call("POST", "/api/auth/password/",
                                    {"old_password": "wrong-one", "new_password": "new-password"},
                                    token=utok), 400, "invalid_request_error", "old_password")
        r = self.call("POST", "/api/auth/password/",
                      {"old_password": pw, "new_password": "new-password"}, token=utok, want=200)
        self.assertEqual(self.call("GET", "/api/auth/me/", token=r.json["access_token"],
                                   want=200).json["email"], email)
        r = self.gw.http("POST", "/api/auth/login/", {"email": email, "password": pw})
        self.assertEqual(r.status, 401)
        self.gw.login(email, "new-password")


if __name__ == "__main__":
    unittest.main(verbosity=2)
