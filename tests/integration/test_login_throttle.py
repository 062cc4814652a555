"""test_login_throttle.py - failed logins slow down, per account and per client address.

A real tokenauditd with two workers (the throttle's table is shared: either
worker may answer any login) and small throttle settings, so the waits are
one second:

  * after login_max_failures wrong passwords for one account, its next login
    is 429 login_throttled with Retry-After, even with the right password;
    after waiting Retry-After seconds, the right password logs in;
  * another account from the same address is not throttled by that: its own
    wrong passwords answer 401 until the address's count
    (login_address_max_failures) is reached, then its right password is 429;
  * a burst of wrong passwords sent at once gets no more than
    login_max_failures answers of 401: the rest, and the right password
    after them, are 429.
Waits are the server's Retry-After (never timed assertions).
"""

import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

ACCOUNT_MAX = 3
ADDRESS_MAX = 5
THROTTLE = {
    "TOKENAUDIT_LOGIN_MAX_FAILURES": str(ACCOUNT_MAX),
    "TOKENAUDIT_LOGIN_ADDRESS_MAX_FAILURES": str(ADDRESS_MAX),
    "TOKENAUDIT_LOGIN_BACKOFF_MS": "1000",
    "TOKENAUDIT_LOGIN_BACKOFF_MAX_MS": "1000",
    "TOKENAUDIT_LOGIN_ADDRESS_BACKOFF_MAX_MS": "1000",
}


class LoginThrottle(unittest.TestCase):
    def setUp(self):
        self.gw = harness.Gateway(workers=2, env=THROTTLE)
        admin = self.gw.login()
        for name in ("alice", "bob", "carol"):
            r = self.gw.http("POST", "/api/admin/users/",
                             {"email": name + "@example.com", "password": name + "-password"},
                             token=admin)
            self.assertEqual(r.status, 201, r.body)

    def tearDown(self):
        self.gw.stop_and_cleanup()

    def login(self, name, password):
        return self.gw.http("POST", "/api/auth/login/",
                            {"email": name + "@example.com", "password": password})

    def assert_status(self, r, want):
        self.assertEqual(r.status, want, r.body)
        return r

    def assert_throttled(self, r):
        self.assertEqual(r.status, 429, r.body)
        self.assertTrue(r.headers.get("retry-after", "").isdigit(), r.headers)
        wait = int(r.headers["retry-after"])
        self.assertGreaterEqual(wait, 1)
        self.assertEqual(r.json["error"]["type"], "rate_limit_error", r.body)
        self.assertEqual(r.json["error"]["code"], "login_throttled", r.body)
        self.assertIsNone(r.json["error"]["param"], r.body)
        return wait

    def test_account_then_address(self):
        for _ in range(ACCOUNT_MAX):
            self.assert_status(self.login("alice", "not-her-password"), 401)
        wait = self.assert_throttled(self.login("alice", "alice-password"))
        # bob, same address: only his own failures and the address's count matter
        # (the address is at ACCOUNT_MAX of ADDRESS_MAX; the 429 counted nothing)
        for _ in range(ADDRESS_MAX - ACCOUNT_MAX):
            self.assert_status(self.login("bob", "not-his-password"), 401)
        wait = max(wait, self.assert_throttled(self.login("bob", "bob-password")))
        self.assert_throttled(self.login("carol", "carol-password"))
        time.sleep(wait)
        tok = self.assert_status(self.login("alice", "alice-password"), 200).json["access_token"]
        self.assert_status(self.gw.http("GET", "/api/auth/me/", token=tok), 200)
        self.assert_status(self.login("bob", "bob-password"), 200)

    def test_burst(self):
        n = 12
        answers = [None] * n

        def guess(i):
            answers[i] = self.login("carol", "guess-%d" % i).status

        threads = [threading.Thread(target=guess, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertTrue(set(answers) <= {401, 429}, answers)
        self.assertLessEqual(answers.count(401), ACCOUNT_MAX, answers)
        self.assert_throttled(self.login("carol", "carol-password"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
