"""test_auth.py - hostile authentication: forged and tampered JWTs, and tokens
that must stop working (logout, password change by the user or an admin,
deactivation and reactivation, deletion, role change), API keys of a
deactivated user, and the login throttle.

Every refusal is checked for its exact status and code, and that it wrote
nothing (ledger dump before and after). The forged tokens are made here with
the server's own secret (DATA_DIR/jwt.secret), so only the server's checks
stand between them and the API.
"""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hostile import (AUDIT, Cases, Snapshot, b64url, check, expect, finish_gateway, jwt_make, jwt_parts,  # noqa: E402
                     jwt_secret, make_user)
import harness  # noqa: E402  (on the path once hostile is imported)

PW = "user-password-1"
ME = "/api/auth/me/"
ADMIN_ROUTE = "/api/admin/users/"


class World:
    def __init__(self, gw):
        self.gw = gw
        self.admin = gw.login()
        self.secret = jwt_secret(gw)
        # a user with a quota (an API key) to test keys of a deactivated user
        prov = self.post("/api/admin/providers/", {"name": "p", "type": "openai", "base_url": "http://127.0.0.1:9/v1",
                                                   "api_key": "sk-up-123456789012"})
        model = self.post("/api/admin/models/", {"name": "m", "input_price": "1", "output_price": "1",
                                                 "routes": [{"provider_id": prov["id"], "upstream_name": "u",
                                                             "priority": 1}]})
        self.group = self.post("/api/admin/groups/", {"name": "g", "model_ids": [model["id"]]})
        self.alice = make_user(gw, self.admin, "alice@example.com", PW)
        self.alice_tok = gw.login("alice@example.com", PW)

    def post(self, path, body):
        r = self.gw.http("POST", path, body, token=self.admin)
        expect("set-up POST %s" % path, r, 201)
        return r.json

    def patch_user(self, uid, body):
        r = self.gw.http("PATCH", "/api/admin/users/%d/" % uid, body, token=self.admin)
        expect("PATCH user %d %r" % (uid, body), r, 200)
        return r.json

    def refused(self, what, tok, path=ME, status=401, code=None):
        """tok is refused on path (exact status/code) and nothing was written."""
        snap = Snapshot(self.gw, with_revoked=True)
        r = self.gw.http("GET", path, token=tok)
        expect("%s on GET %s" % (what, path), r, status, code)
        snap.assert_unchanged(what)

    def accepted(self, what, tok, path=ME):
        expect("%s on GET %s" % (what, path), self.gw.http("GET", path, token=tok), 200)


# ---- forged and tampered tokens ------------------------------------------

def jwt_cases(cases, w):
    hdr, payload, sig = jwt_parts(w.alice_tok)
    admin_hdr, admin_payload, admin_sig = jwt_parts(w.admin)
    now = int(time.time())
    cases.run("jwt.genuine_token_works", w.accepted, "alice's own token", w.alice_tok)
    cases.run("jwt.genuine_user_token_not_admin", w.refused, "a user's token on an admin route", w.alice_tok,
              ADMIN_ROUTE, 403, "permission_denied")

    def forged(name, tok, path=ME, status=401, code="invalid_token"):
        cases.run("jwt." + name, w.refused, name, tok, path, status, code)

    # algorithm confusion
    forged("alg_none_unsigned", jwt_make(dict(admin_hdr, alg="none"), admin_payload, None, alg=None),
           ADMIN_ROUTE)
    forged("alg_none_lowercase_keeps_signature",
           jwt_make(dict(hdr, alg="none"), payload, None, alg=None) + sig)
    forged("alg_None_capital", jwt_make(dict(admin_hdr, alg="None"), admin_payload, None, alg=None), ADMIN_ROUTE)
    forged("alg_hs512_same_secret", jwt_make(dict(admin_hdr, alg="HS512"), admin_payload, w.secret, "HS512"),
           ADMIN_ROUTE)
    forged("alg_hs384_same_secret", jwt_make(dict(hdr, alg="HS384"), payload, w.secret, "HS384"))
    forged("alg_rs256_with_secret_as_hmac", jwt_make(dict(hdr, alg="RS256"), payload, w.secret, "HS256"))
    forged("header_not_json", b64url(b"{alg:HS256") + "." + w.alice_tok.split(".", 1)[1])
    # tampering
    promoted = dict(payload, role=admin_payload["role"])
    forged("payload_role_changed_keeps_signature", jwt_make(hdr, promoted, None, alg=None) + sig, ADMIN_ROUTE)
    forged("payload_sub_changed_keeps_signature",
           jwt_make(hdr, dict(payload, sub=admin_payload["sub"]), None, alg=None) + sig, ADMIN_ROUTE)
    forged("payload_exp_extended_keeps_signature",
           jwt_make(hdr, dict(payload, exp=payload["exp"] + 86400), None, alg=None) + sig)
    forged("signed_with_wrong_secret", jwt_make(hdr, promoted, b"x" * 32), ADMIN_ROUTE)
    forged("signed_with_empty_secret", jwt_make(hdr, promoted, b""), ADMIN_ROUTE)
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    forged("signature_one_char_changed", w.alice_tok.rsplit(".", 1)[0] + "." + flipped)
    forged("signature_removed", w.alice_tok.rsplit(".", 1)[0] + ".")
    forged("expired", jwt_make(hdr, dict(payload, iat=now - 7200, exp=now - 10), w.secret))
    forged("exp_missing", jwt_make(hdr, {k: v for k, v in payload.items() if k != "exp"}, w.secret))
    forged("exp_as_string", jwt_make(hdr, dict(payload, exp=str(now + 3600)), w.secret))
    forged("iat_after_exp", jwt_make(hdr, dict(payload, iat=now + 7200, exp=now + 3600), w.secret))
    forged("jti_missing", jwt_make(hdr, {k: v for k, v in payload.items() if k != "jti"}, w.secret))
    forged("sub_not_a_number", jwt_make(hdr, dict(payload, sub="1 OR 1=1"), w.secret))
    forged("sub_unknown_user", jwt_make(admin_hdr, dict(admin_payload, sub="999999"), w.secret), ME, 401,
           "user_inactive")
    forged("duplicate_claim_sub", w.alice_tok.split(".")[0] + "." +
           b64url(('{"sub":"%s","sub":"%s","role":%d,"jti":"%s","iat":%d,"exp":%d}' %
                   (payload["sub"], admin_payload["sub"], payload["role"], payload["jti"], now,
                    now + 3600)).encode()) + ".", ADMIN_ROUTE)
    forged("three_dots", w.alice_tok + ".x")
    forged("huge_token", "eyJ" + "A" * 100000)
    forged("garbage", "not-a-token")
    # a valid signature over a role claim the server does not trust: the stored role decides
    cases.run("jwt.role_claim_is_not_trusted", w.refused, "alice's token re-signed with role superadmin",
              jwt_make(hdr, promoted, w.secret), ADMIN_ROUTE, 403, "permission_denied")


# ---- sessions that must end ------------------------------------------------

def logout_case(w):
    u = make_user(w.gw, w.admin, "logout@example.com", PW)
    t1, t2 = w.gw.login(u["email"], PW), w.gw.login(u["email"], PW)
    expect("logout", w.gw.http("POST", "/api/auth/logout/", token=t1), 204)
    w.refused("the token after logout", t1, ME, 401, "token_revoked")
    w.refused("the token after logout, on logout again", t1, ME, 401, "token_revoked")
    w.accepted("the same user's other session after a logout", t2)


def own_password_change_case(w):
    u = make_user(w.gw, w.admin, "pwself@example.com", PW)
    t1, t2 = w.gw.login(u["email"], PW), w.gw.login(u["email"], PW)
    r = w.gw.http("POST", "/api/auth/password/", {"old_password": PW, "new_password": "a-new-password-2"}, token=t1)
    # docs/API.md: 200 with the login answer; every earlier token, the caller's included, has ended
    expect("POST /api/auth/password/", r, 200)
    w.refused("a session opened before the user changed their password", t2)
    w.refused("the token that changed the password", t1)
    w.accepted("the token the password change answered with", r.json["access_token"])
    w.accepted("a login with the new password", w.gw.login(u["email"], "a-new-password-2"))


def admin_password_change_case(w):
    u = make_user(w.gw, w.admin, "pwadmin@example.com", PW)
    t = w.gw.login(u["email"], PW)
    w.patch_user(u["id"], {"password": "set-by-admin-3"})
    w.refused("a session opened before an admin set the user's password", t)
    w.accepted("a login with the password the admin set", w.gw.login(u["email"], "set-by-admin-3"))


def deactivation_case(w):
    u = make_user(w.gw, w.admin, "deact@example.com", PW)
    t = w.gw.login(u["email"], PW)
    w.patch_user(u["id"], {"is_active": False})
    w.refused("the token of a deactivated user", t, ME, 401)
    w.patch_user(u["id"], {"is_active": True})
    w.refused("a session opened before a deactivation, after the reactivation", t)
    w.accepted("a login after the reactivation", w.gw.login(u["email"], PW))


def deleted_user_case(w):
    u = make_user(w.gw, w.admin, "deleted@example.com", PW)
    t = w.gw.login(u["email"], PW)
    expect("DELETE user", w.gw.http("DELETE", "/api/admin/users/%d/" % u["id"], token=w.admin), 204)
    w.refused("the token of a deleted user", t, ME, 401)
    w.patch_user(u["id"], {"is_active": True})
    w.refused("a session opened before a deletion, after the user was reactivated", t)


def role_change_case(w, before, after):
    u = make_user(w.gw, w.admin, "role-%s-%s@example.com" % (before, after), PW, role=before)
    t = w.gw.login(u["email"], PW)
    w.patch_user(u["id"], {"role": after})
    w.refused("a session opened before a role change %s -> %s" % (before, after), t)
    if before == "superadmin":
        # whatever the session rule, a demoted admin is never an admin again
        r = w.gw.http("GET", ADMIN_ROUTE, token=t)
        check(r.status in (401, 403), "a demoted superadmin's old token on an admin route: %s %s" %
              (r.status, r.body[:200]))


def api_key_of_inactive_user_case(w):
    u = make_user(w.gw, w.admin, "keyowner@example.com", PW)
    q = w.post("/api/admin/quotas/", {"user_id": u["id"], "group_id": w.group["id"], "period": "month"})
    key = q["api_key"]
    w.accepted("the user's API key on /api/auth/me/", key)
    expect("GET /v1/models with the key", w.gw.http("GET", "/v1/models", token=key), 200)
    w.patch_user(u["id"], {"is_active": False})
    w.refused("the API key of a deactivated user", key, ME, 401, "user_inactive")
    snap = Snapshot(w.gw, ignore=AUDIT)  # a refused /v1 request leaves its audit record
    # docs/API.md: /v1 answers a key whose owner is inactive 401 or 403 quota_inactive
    expect("the API key of a deactivated user on /v1/models", w.gw.http("GET", "/v1/models", token=key), (401, 403))
    snap.assert_unchanged("/v1/models with the key of a deactivated user")
    w.refused("the API key as the bearer of an admin route", key, ADMIN_ROUTE, 401)


def login_throttle_case(w):
    """40 wrong passwords at once, then the right one: the throttle answers 429
    with Retry-After instead of letting the guessing go on."""
    u = make_user(w.gw, w.admin, "victim@example.com", PW)
    results = []
    lock = threading.Lock()

    def guess(i):
        r = w.gw.http("POST", "/api/auth/login/", {"email": u["email"], "password": "wrong-%d" % i}, timeout=120)
        with lock:
            results.append(r)

    ths = [threading.Thread(target=guess, args=(i,)) for i in range(40)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(180)
    check(len(results) == 40, "every guess answered: %d" % len(results))
    bad = [r for r in results if r.status not in (401, 429, 503)]
    check(not bad, "a wrong password answered %s: %s" % (bad and bad[0].status, bad and bad[0].body[:200]))
    r = w.gw.http("POST", "/api/auth/login/", {"email": u["email"], "password": PW}, timeout=120)
    statuses = sorted(x.status for x in results)
    check(r.status == 429, "after 40 wrong passwords the right one must be throttled (429), got %s %s; "
          "the guesses got %s" % (r.status, r.body[:200], {s: statuses.count(s) for s in set(statuses)}))
    check(int(r.headers.get("retry-after", "0")) >= 1, "429 without Retry-After: %r" % r.headers)


def main():
    cases = Cases("auth")
    with harness.Gateway(workers=2) as gw:
        w = World(gw)
        jwt_cases(cases, w)
        cases.run("session.logout", logout_case, w)
        cases.run("session.own_password_change", own_password_change_case, w)
        cases.run("session.admin_sets_password", admin_password_change_case, w)
        cases.run("session.deactivate_then_reactivate", deactivation_case, w)
        cases.run("session.deleted_user", deleted_user_case, w)
        cases.run("session.role_user_to_superadmin", role_change_case, w, "user", "superadmin")
        cases.run("session.role_superadmin_to_user", role_change_case, w, "superadmin", "user")
        cases.run("apikey.inactive_user", api_key_of_inactive_user_case, w)
        # last: a throttle may hold back further logins from this address
        cases.run("login.throttle", login_throttle_case, w)
        cases.run("end.ledger_verify_and_no_sanitizer_report", finish_gateway, gw)
    cases.finish()


if __name__ == "__main__":
    main()
