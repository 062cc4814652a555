"""test_sessions.py - a session ends when the user's password, status or role changes.

A real tokenauditd with two workers. Each token is used once before the change
and once after it, on fresh connections (either worker may answer):

  * the user's own password change (POST /api/auth/password/) ends every
    earlier token of the user, the one that made the change included, and
    answers with a fresh token that works;
  * an admin setting the password, deactivating then reactivating the user
    (PATCH is_active, and DELETE then PATCH), or changing the role (both ways)
    ends every earlier token: 401 session_ended (or user_inactive while the
    user is inactive); a new login works;
  * a change of name or e-mail ends nothing.
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


class Sessions(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.gw = harness.Gateway(workers=2)
        cls.admin = cls.gw.login()
        cls.n = 0

    @classmethod
    def tearDownClass(cls):
        cls.gw.stop_and_cleanup()

    def call(self, method, path, body=None, token=None, want=None):
        r = self.gw.http(method, path, body, token=token or self.admin)
        if want is not None:
            self.assertEqual(r.status, want, "%s %s -> %d %s" % (method, path, r.status, r.body))
        return r

    def mk_user(self):
        Sessions.n += 1
        email = "s%d@example.com" % Sessions.n
        u = self.call("POST", "/api/admin/users/", {"email": email, "password": "pw-" + email},
                      want=201).json
        return "/api/admin/users/%d/" % u["id"], email, "pw-" + email

    def assert_works(self, tok):
        self.call("GET", "/api/auth/me/", token=tok, want=200)

    def assert_ended(self, tok, code="session_ended"):
        r = self.call("GET", "/api/auth/me/", token=tok, want=401)
        self.assertEqual(r.json["error"]["code"], code, r.body)
        self.assertEqual(r.json["error"]["type"], "authentication_error", r.body)

    def test_own_password_change(self):
        _, email, pw = self.mk_user()
        tok, other = self.gw.login(email, pw), self.gw.login(email, pw)
        self.assert_works(tok)
        r = self.call("POST", "/api/auth/password/",
                      {"old_password": pw, "new_password": "brand-new-pw"}, token=tok, want=200)
        self.assertEqual(r.json["token_type"], "Bearer")
        self.assertEqual(r.json["user"]["email"], email)
        fresh = r.json["access_token"]
        self.assert_ended(tok)
        self.assert_ended(other)
        self.assert_works(fresh)
        # the fresh token is a full session: it can change the password again
        r = self.call("POST", "/api/auth/password/",
                      {"old_password": "brand-new-pw", "new_password": "third-pw-1"}, token=fresh,
                      want=200)
        self.assert_ended(fresh)
        self.assert_works(r.json["access_token"])
        self.assert_works(self.gw.login(email, "third-pw-1"))

    def test_admin_sets_password(self):
        url, email, pw = self.mk_user()
        tok = self.gw.login(email, pw)
        self.assert_works(tok)
        self.call("PATCH", url, {"password": "set-by-admin"}, want=200)
        self.assert_ended(tok)
        self.assert_works(self.gw.login(email, "set-by-admin"))

    def test_deactivate_and_reactivate(self):
        url, email, pw = self.mk_user()
        tok = self.gw.login(email, pw)
        self.assert_works(tok)
        self.call("PATCH", url, {"is_active": False}, want=200)
        self.assert_ended(tok, "user_inactive")
        self.call("PATCH", url, {"is_active": True}, want=200)
        self.assert_ended(tok)
        tok = self.gw.login(email, pw)
        self.assert_works(tok)
        self.call("DELETE", url, want=204)
        self.call("PATCH", url, {"is_active": True}, want=200)
        self.assert_ended(tok)
        self.assert_works(self.gw.login(email, pw))

    def test_role_change(self):
        url, email, pw = self.mk_user()
        tok = self.gw.login(email, pw)
        self.call("GET", "/api/admin/users/", token=tok, want=403)
        self.call("PATCH", url, {"role": "superadmin"}, want=200)
        self.assert_ended(tok)
        tok = self.gw.login(email, pw)
        self.call("GET", "/api/admin/users/", token=tok, want=200)
        self.call("PATCH", url, {"role": "user"}, want=200)
        self.assert_ended(tok)
        self.call("GET", "/api/admin/users/", token=tok, want=401)
        self.assert_works(self.gw.login(email, pw))

    def test_name_and_email_keep_the_session(self):
        url, email, pw = self.mk_user()
        tok = self.gw.login(email, pw)
        self.call("PATCH", url, {"name": "Renamed", "email": "re-" + email}, want=200)
        self.assertEqual(self.call("GET", "/api/auth/me/", token=tok, want=200).json["email"],
                         "re-" + email)


if __name__ == "__main__":
    unittest.main(verbosity=2)
