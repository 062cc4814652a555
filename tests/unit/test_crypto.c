/*
 * test_crypto.c - admin/crypto.c against real OpenSSL, real libjwt and real
 * files in a mkdtemp() directory. The JWT attack tokens (HS512 under the same
 * secret, alg "none", missing or mistyped claims) are built with libjwt or by
 * hand, so each rejection is proven against a token that libjwt itself
 * would accept.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jwt.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "admin/crypto.h"
#include "schema/schema.h"

#define ITER 1000 /* the minimum the verifier accepts; keeps the tests quick */

static const uint8_t SECRET[32] = "0123456789abcdef0123456789abcdef";

/* ---- passwords -------------------------------------------------------- */

static void test_password_roundtrip(void **state)
{
    char h[TA_PWHASH_MAX];
    int n = ta_password_hash("correct horse", ITER, h);
    assert_true(n > 0 && n < TA_PWHASH_MAX);
    assert_int_equal((size_t)n, strlen(h));
    assert_memory_equal(h, "pbkdf2-sha256$1000$", 19);
    assert_int_equal(ta_password_verify("correct horse", h, (size_t)n), 0);
    assert_int_equal(ta_password_verify("correct horsf", h, (size_t)n), TA_EAUTH);
    assert_int_equal(ta_password_verify("correct hors", h, (size_t)n), TA_EAUTH);
    assert_int_equal(ta_password_verify("", h, (size_t)n), TA_EAUTH);
    assert_int_equal(ta_password_verify(NULL, h, (size_t)n), TA_EAUTH);
}

static void test_password_default_iterations(void **state)
{
    char h[TA_PWHASH_MAX];
    int n = ta_password_hash("a default password", 0, h);
    assert_true(n > 0);
    assert_memory_equal(h, "pbkdf2-sha256$210000$", 21);
    assert_int_equal(ta_password_verify("a default password", h, (size_t)n), 0);
}

static void test_password_salted(void **state)
{
    char a[TA_PWHASH_MAX], b[TA_PWHASH_MAX];
    assert_true(ta_password_hash("same password", ITER, a) > 0);
    assert_true(ta_password_hash("same password", ITER, b) > 0);
    assert_string_not_equal(a, b);
    /* the salts differ, not just the hashes */
    assert_memory_not_equal(a + 19, b + 19, 24);
    assert_int_equal(ta_password_verify("same password", a, strlen(a)), 0);
    assert_int_equal(ta_password_verify("same password", b, strlen(b)), 0);
}

static void test_password_length_rules(void **state)
{
    char h[TA_PWHASH_MAX], pw[TA_PASSWORD_MAX + 2];
    memset(pw, 'x', sizeof(pw));
    pw[TA_PASSWORD_MIN - 1] = '\0';
    assert_int_equal(ta_password_hash(pw, ITER, h), TA_EINVAL);
    pw[TA_PASSWORD_MIN - 1] = 'x';
    pw[TA_PASSWORD_MIN] = '\0';
    assert_true(ta_password_hash(pw, ITER, h) > 0);
    pw[TA_PASSWORD_MIN] = 'x';
    pw[TA_PASSWORD_MAX] = '\0';
    int n = ta_password_hash(pw, ITER, h);
    assert_true(n > 0);
    assert_int_equal(ta_password_verify(pw, h, (size_t)n), 0);
    pw[TA_PASSWORD_MAX] = 'x';
    pw[TA_PASSWORD_MAX + 1] = '\0';
    assert_int_equal(ta_password_hash(pw, ITER, h), TA_EINVAL);
    assert_int_equal(ta_password_verify(pw, h, (size_t)n), TA_EAUTH);
    /* iteration bounds */
    assert_int_equal(ta_password_hash("long enough", 999, h), TA_EINVAL);
    assert_int_equal(ta_password_hash("long enough", 10000001, h), TA_EINVAL);
}

static void test_password_malformed(void **state)
{
    char good[TA_PWHASH_MAX], bad[TA_PWHASH_MAX * 2];
    int n = ta_password_hash("password123", ITER, good);
    assert_true(n > 0);
    /* good = prefix(14) "1000" '$' salt(24) '$' hash(44) */
    const char *salt = good + 19, *hash = good + 19 + 25;
    assert_int_equal(n, 19 + 24 + 1 + 44);

    const char *cases[] = {
        "",
        "pbkdf2-sha256$",
        "pbkdf2-sha1$1000$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "pbkdf2-sha256$1000$AAAAAAAAAAAAAAAAAAAAAA==",
        "pbkdf2-sha256$1000$AAAAAAAAAAAAAAAAAAAAAA==$",
        "pbkdf2-sha256$$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    };
    for (size_t i = 0; i < TA_ARRAY_SIZE(cases); i++)
        assert_int_equal(ta_password_verify("password123", cases[i], strlen(cases[i])), TA_EINVAL);
    assert_int_equal(ta_password_verify("password123", NULL, 10), TA_EINVAL);

    struct { const char *iter; const char *salt; const char *hash; const char *tail; } v[] = {
        {"999", salt, hash, ""},           /* below the bound */
        {"10000001", salt, hash, ""},      /* above the bound */
        {"01000", salt, hash, ""},         /* leading zero */
        {"+1000", salt, hash, ""},
        {"-1000", salt, hash, ""},
        {"1000 ", salt, hash, ""},
        {"99999999999999999999999", salt, hash, ""},
        {"1000", "AAAAAAAAAAAAAAAAAAAAA==", hash, ""},     /* short salt */
        {"1000", "AAAAAAAAAAAAAAAAAAAAAAA=", hash, ""},    /* bad padding */
        {"1000", "AAAAAAAAAAAAAAAAAAAAAB==", hash, ""},    /* non-canonical trailing bits */
        {"1000", "AAAAAAAAAAAAAAAAAAAA*A==", hash, ""},    /* bad alphabet */
        {"1000", salt, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", ""}, /* short hash */
        {"1000", salt, hash, "$"},                          /* extra field */
        {"1000", salt, hash, "="},                          /* trailing junk */
        {"1000", salt, hash, "\n"},
    };
    for (size_t i = 0; i < TA_ARRAY_SIZE(v); i++) {
        int m;
        if (v[i].hash == hash)
            m = snprintf(bad, sizeof(bad), "pbkdf2-sha256$%s$%.24s$%.44s%s", v[i].iter, v[i].salt, v[i].hash,
                         v[i].tail);
        else
            m = snprintf(bad, sizeof(bad), "pbkdf2-sha256$%s$%.24s$%s%s", v[i].iter, v[i].salt, v[i].hash,
                         v[i].tail);
        assert_true(m > 0);
        assert_int_equal(ta_password_verify("password123", bad, (size_t)m), TA_EINVAL);
    }
    /* The well-formed one, rebuilt the same way, still verifies. */
    int m = snprintf(bad, sizeof(bad), "pbkdf2-sha256$%s$%.24s$%.44s", "1000", salt, hash);
    assert_int_equal(ta_password_verify("password123", bad, (size_t)m), 0);
    /* hash_len is honoured: a truncated length is malformed, not read past. */
    assert_int_equal(ta_password_verify("password123", good, (size_t)n - 1), TA_EINVAL);
    /* oversize input */
    memset(bad, 'A', sizeof(bad));
    assert_int_equal(ta_password_verify("password123", bad, sizeof(bad)), TA_EINVAL);
}

/* ---- API keys --------------------------------------------------------- */

static int cmp_key(const void *a, const void *b) { return memcmp(a, b, TA_APIKEY_LEN + 1); }

static void test_apikey_format_unique(void **state)
{
    enum { N = 1000 };
    char(*keys)[TA_APIKEY_LEN + 1] = calloc(N, TA_APIKEY_LEN + 1);
    assert_non_null(keys);
    bool seen_upper = false, seen_lower = false, seen_digit = false;
    for (int i = 0; i < N; i++) {
        assert_int_equal(ta_apikey_generate(keys[i]), 0);
        assert_int_equal(strlen(keys[i]), TA_APIKEY_LEN);
        assert_memory_equal(keys[i], "sk-", 3);
        assert_true(ta_apikey_wellformed(keys[i], TA_APIKEY_LEN));
        for (int k = 3; k < TA_APIKEY_LEN; k++) {
            char c = keys[i][k];
            seen_upper |= c >= 'A' && c <= 'Z';
            seen_lower |= c >= 'a' && c <= 'z';
            seen_digit |= c >= '0' && c <= '9';
        }
    }
    assert_true(seen_upper && seen_lower && seen_digit);
    qsort(keys, N, TA_APIKEY_LEN + 1, cmp_key);
    for (int i = 1; i < N; i++)
        assert_true(memcmp(keys[i - 1], keys[i], TA_APIKEY_LEN) != 0);
    free(keys);
}

static void test_apikey_wellformed(void **state)
{
    char k[TA_APIKEY_LEN + 2];
    assert_int_equal(ta_apikey_generate(k), 0);
    assert_true(ta_apikey_wellformed(k, TA_APIKEY_LEN));
    assert_false(ta_apikey_wellformed(k, TA_APIKEY_LEN - 1));
    k[TA_APIKEY_LEN] = 'a';
    k[TA_APIKEY_LEN + 1] = '\0';
    assert_false(ta_apikey_wellformed(k, TA_APIKEY_LEN + 1));
    k[TA_APIKEY_LEN] = '\0';
    char c = k[10];
    const char bad[] = {'-', '_', '+', '/', '=', ' ', '\0', (char)0xc3};
    for (size_t i = 0; i < sizeof(bad); i++) {
        k[10] = bad[i];
        assert_false(ta_apikey_wellformed(k, TA_APIKEY_LEN));
    }
    k[10] = c;
    k[0] = 'S';
    assert_false(ta_apikey_wellformed(k, TA_APIKEY_LEN));
    k[0] = 's';
    k[2] = '_';
    assert_false(ta_apikey_wellformed(k, TA_APIKEY_LEN));
    assert_false(ta_apikey_wellformed(NULL, 0));
    assert_false(ta_apikey_wellformed("", 0));
}

static void test_apikey_hash_vector(void **state)
{
    /* FIPS 180-2 test vector: SHA-256("abc"). */
    static const uint8_t want[32] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40,
                                     0xde, 0x5d, 0xae, 0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17,
                                     0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
    uint8_t got[32];
    char hex[65];
    ta_apikey_hash("abc", 3, got);
    assert_memory_equal(got, want, 32);
    ta_hex(got, 32, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    /* length is honoured, not strlen */
    ta_apikey_hash("abcd", 3, got);
    assert_memory_equal(got, want, 32);
}

/* ---- sealing ---------------------------------------------------------- */

static void test_seal_roundtrip(void **state)
{
    uint8_t key[32], sealed[256];
    char out[256];
    const char *msg = "sk-upstream-provider-key-0123456789";
    size_t len = strlen(msg);
    assert_int_equal(ta_random(key, sizeof(key)), 0);

    int n = ta_seal(key, msg, len, sealed, sizeof(sealed));
    assert_int_equal(n, (int)(len + TA_SEAL_OVERHEAD));
    assert_int_equal(sealed[0], 1);
    assert_null(memmem(sealed, (size_t)n, msg, len));
    memset(out, 'Z', sizeof(out));
    assert_int_equal(ta_unseal(key, sealed, (size_t)n, out, len + 1), (int)len);
    assert_string_equal(out, msg);
    assert_int_equal(out[len + 1], 'Z'); /* nothing past cap */

    /* a fresh nonce each time */
    uint8_t sealed2[256];
    assert_int_equal(ta_seal(key, msg, len, sealed2, sizeof(sealed2)), n);
    assert_memory_not_equal(sealed + 1, sealed2 + 1, 12);

    /* empty plaintext */
    n = ta_seal(key, "", 0, sealed, sizeof(sealed));
    assert_int_equal(n, TA_SEAL_OVERHEAD);
    assert_int_equal(ta_unseal(key, sealed, (size_t)n, out, 1), 0);
    assert_int_equal(out[0], '\0');

    /* cap too small on either side */
    assert_true(ta_seal(key, msg, len, sealed, len + TA_SEAL_OVERHEAD - 1) < 0);
    n = ta_seal(key, msg, len, sealed, sizeof(sealed));
    memset(out, 'Z', sizeof(out));
    assert_true(ta_unseal(key, sealed, (size_t)n, out, len) < 0);
    for (size_t i = len; i < sizeof(out); i++)
        assert_int_equal(out[i], 'Z');
}

static void test_seal_bitflips(void **state)
{
    uint8_t key[32], sealed[128], copy[128];
    char out[128];
    const char msg[] = "a provider key worth protecting";
    assert_int_equal(ta_random(key, sizeof(key)), 0);
    int n = ta_seal(key, msg, sizeof(msg) - 1, sealed, sizeof(sealed));
    assert_true(n > 0);
    for (int byte = 0; byte < n; byte++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(copy, sealed, (size_t)n);
            copy[byte] ^= (uint8_t)(1u << bit);
            memset(out, 'Z', sizeof(out));
            assert_int_equal(ta_unseal(key, copy, (size_t)n, out, sizeof(out)), TA_ECRYPTO);
            /* no unauthenticated plaintext left behind */
            assert_null(memmem(out, sizeof(out), "provider", 8));
        }
    }
    assert_int_equal(ta_unseal(key, sealed, (size_t)n, out, sizeof(out)), (int)sizeof(msg) - 1);
}

static void test_seal_wrong_key_truncated(void **state)
{
    uint8_t key[32], key2[32], sealed[128];
    char out[128];
    const char msg[] = "secret";
    assert_int_equal(ta_random(key, sizeof(key)), 0);
    memcpy(key2, key, sizeof(key));
    key2[31] ^= 1;
    int n = ta_seal(key, msg, sizeof(msg) - 1, sealed, sizeof(sealed));
    assert_true(n > 0);
    assert_int_equal(ta_unseal(key2, sealed, (size_t)n, out, sizeof(out)), TA_ECRYPTO);
    /* truncation: shorter than the overhead is malformed; otherwise the tag breaks */
    for (int l = 0; l < n; l++) {
        int rc = ta_unseal(key, sealed, (size_t)l, out, sizeof(out));
        if (l < TA_SEAL_OVERHEAD)
            assert_int_equal(rc, TA_EINVAL);
        else
            assert_int_equal(rc, TA_ECRYPTO);
    }
    /* extended by a byte */
    sealed[n] = 0;
    assert_int_equal(ta_unseal(key, sealed, (size_t)n + 1, out, sizeof(out)), TA_ECRYPTO);
    assert_int_equal(ta_unseal(key, sealed, (size_t)n, out, sizeof(out)), (int)sizeof(msg) - 1);
}

/* ---- JWT -------------------------------------------------------------- */

static void b64url(const void *in, size_t n, char *out)
{
    int m = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    int w = 0;
    for (int i = 0; i < m; i++) {
        if (out[i] == '=')
            break;
        out[w++] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    }
    out[w] = '\0';
}

/* Mint a token with libjwt directly: alg, and which claims to include. */
enum { C_SUB = 1, C_ROLE = 2, C_JTI = 4, C_IAT = 8, C_EXP = 16, C_GEN = 32, C_ALL = 63 };
static char *mint(jwt_alg_t alg, const uint8_t *key, size_t klen, int which, const char *extra_json)
{
    jwt_t *j = NULL;
    long now = (long)ta_now_s();
    assert_int_equal(jwt_new(&j), 0);
    assert_int_equal(jwt_set_alg(j, alg, key, (int)klen), 0);
    if (which & C_SUB)
        assert_int_equal(jwt_add_grant(j, "sub", "42"), 0);
    if (which & C_ROLE)
        assert_int_equal(jwt_add_grant_int(j, "role", TA_ROLE_SUPERADMIN), 0);
    if (which & C_JTI)
        assert_int_equal(jwt_add_grant(j, "jti", "0123456789abcdef0123456789abcdef"), 0);
    if (which & C_IAT)
        assert_int_equal(jwt_add_grant_int(j, "iat", now), 0);
    if (which & C_EXP)
        assert_int_equal(jwt_add_grant_int(j, "exp", now + 600), 0);
    if (which & C_GEN)
        assert_int_equal(jwt_add_grant_int(j, "gen", 3), 0);
    if (extra_json)
        assert_int_equal(jwt_add_grants_json(j, extra_json), 0);
    char *t = jwt_encode_str(j);
    assert_non_null(t);
    jwt_free(j);
    return t;
}

static int verify(const char *t)
{
    ta_jwt_claims_t c;
    return ta_jwt_verify(SECRET, sizeof(SECRET), t, strlen(t), &c);
}

static void test_jwt_ok(void **state)
{
    char *t = NULL;
    ta_jwt_claims_t c, v;
    assert_int_equal(ta_jwt_issue(SECRET, sizeof(SECRET), 12345678901234ULL, TA_ROLE_SUPERADMIN, 41, 3600, &t, &c), 0);
    assert_non_null(t);
    assert_int_equal(strlen(c.jti), 32);
    assert_int_equal(c.exp - c.iat, 3600);
    memset(&v, 0, sizeof(v));
    assert_int_equal(ta_jwt_verify(SECRET, sizeof(SECRET), t, strlen(t), &v), 0);
    assert_int_equal(v.user_id, 12345678901234ULL);
    assert_int_equal(v.role, TA_ROLE_SUPERADMIN);
    assert_string_equal(v.jti, c.jti);
    assert_int_equal(v.iat, c.iat);
    assert_int_equal(v.exp, c.exp);
    assert_int_equal(v.gen, 41);

    /* two tokens differ in jti */
    char *t2 = NULL;
    ta_jwt_claims_t c2;
    assert_int_equal(ta_jwt_issue(SECRET, sizeof(SECRET), 1, TA_ROLE_USER, 0, 60, &t2, &c2), 0);
    assert_string_not_equal(c.jti, c2.jti);
    assert_int_equal(ta_jwt_verify(SECRET, sizeof(SECRET), t2, strlen(t2), &v), 0);
    assert_int_equal(v.user_id, 1);
    assert_int_equal(v.role, TA_ROLE_USER);

    /* a libjwt-minted HS256 token with every claim is accepted: the attack
     * tokens below differ from it in one respect each */
    char *m = mint(JWT_ALG_HS256, SECRET, sizeof(SECRET), C_ALL, NULL);
    assert_int_equal(verify(m), 0);
    free(m);
    /* len is honoured: trailing bytes beyond len are not part of the token */
    size_t tl = strlen(t);
    char *padded = malloc(tl + 8);
    memcpy(padded, t, tl);
    memcpy(padded + tl, "garbage", 8);
    assert_int_equal(ta_jwt_verify(SECRET, sizeof(SECRET), padded, tl, &v), 0);
    assert_int_equal(ta_jwt_verify(SECRET, sizeof(SECRET), padded, tl + 7, &v), TA_EAUTH);
    free(padded);
    free(t);
    free(t2);

    /* bad issue arguments */
    assert_int_equal(ta_jwt_issue(SECRET, 16, 1, TA_ROLE_USER, 0, 60, &t, &c), TA_EINVAL);
    assert_int_equal(ta_jwt_issue(SECRET, sizeof(SECRET), 1, 7, 0, 60, &t, &c), TA_EINVAL);
    assert_int_equal(ta_jwt_issue(SECRET, sizeof(SECRET), 1, TA_ROLE_USER, -1, 60, &t, &c), TA_EINVAL);
}

static void test_jwt_hs512_same_secret(void **state)
{
    char *t = mint(JWT_ALG_HS512, SECRET, sizeof(SECRET), C_ALL, NULL);
    /* libjwt itself accepts it under our key: the pin is what rejects it */
    jwt_t *j = NULL;
    assert_int_equal(jwt_decode(&j, t, SECRET, sizeof(SECRET)), 0);
    jwt_free(j);
    assert_int_equal(verify(t), TA_EAUTH);
    free(t);
    t = mint(JWT_ALG_HS384, SECRET, sizeof(SECRET), C_ALL, NULL);
    assert_int_equal(verify(t), TA_EAUTH);
    free(t);
}

static void test_jwt_alg_none(void **state)
{
    char h[128], p[512], tok[1024];
    const char *hdr = "{\"alg\":\"none\",\"typ\":\"JWT\"}";
    char payload[256];
    long now = (long)ta_now_s();
    snprintf(payload, sizeof(payload),
             "{\"sub\":\"42\",\"role\":1,\"jti\":\"0123456789abcdef0123456789abcdef\",\"iat\":%ld,\"exp\":%ld}", now,
             now + 600);
    b64url(hdr, strlen(hdr), h);
    b64url(payload, strlen(payload), p);
    snprintf(tok, sizeof(tok), "%s.%s.", h, p);
    assert_int_equal(verify(tok), TA_EAUTH);
    /* and with the HS256 signature of a real token glued on */
    char *real = mint(JWT_ALG_HS256, SECRET, sizeof(SECRET), C_ALL, NULL);
    snprintf(tok, sizeof(tok), "%s.%s.%s", h, p, strrchr(real, '.') + 1);
    assert_int_equal(verify(tok), TA_EAUTH);
    /* "None"/"HS256 " spellings */
    const char *hdr2 = "{\"alg\":\"None\",\"typ\":\"JWT\"}";
    b64url(hdr2, strlen(hdr2), h);
    snprintf(tok, sizeof(tok), "%s.%s.", h, p);
    assert_int_equal(verify(tok), TA_EAUTH);
    free(real);
}

static void test_jwt_expired(void **state)
{
    char *t = NULL;
    ta_jwt_claims_t c;
    assert_int_equal(ta_jwt_issue(SECRET, sizeof(SECRET), 7, TA_ROLE_USER, 0, -10, &t, &c), 0);
    assert_int_equal(verify(t), TA_EAUTH);
    free(t);
    /* ttl 0: exp == now is already expired */
    assert_int_equal(ta_jwt_issue(SECRET, sizeof(SECRET), 7, TA_ROLE_USER, 0, 0, &t, &c), 0);
    assert_int_equal(verify(t), TA_EAUTH);
    free(t);
    /* valid now, expired after the clock moves past exp */
    assert_int_equal(ta_jwt_issue(SECRET, sizeof(SECRET), 7, TA_ROLE_USER, 0, 3600, &t, &c), 0);
    assert_int_equal(verify(t), 0);
    ta_clock_set_offset(3601);
    assert_int_equal(verify(t), TA_EAUTH);
    ta_clock_set_offset(0);
    assert_int_equal(verify(t), 0);
    free(t);
}

static void test_jwt_tampered(void **state)
{
    char *t = NULL;
    ta_jwt_claims_t c;
    assert_int_equal(ta_jwt_issue(SECRET, sizeof(SECRET), 99, TA_ROLE_USER, 0, 3600, &t, &c), 0);
    char *d1 = strchr(t, '.'), *d2 = strrchr(t, '.');
    assert_true(d1 && d2 && d2 > d1 + 4);

    /* every character of the payload changed to another base64url character */
    for (char *p = d1 + 1; p < d2; p++) {
        char o = *p;
        *p = o == 'A' ? 'B' : 'A';
        assert_int_equal(verify(t), TA_EAUTH);
        *p = o;
    }
    /* every character of the signature */
    for (char *p = d2 + 1; *p; p++) {
        char o = *p;
        *p = o == 'A' ? 'B' : 'A';
        assert_int_equal(verify(t), TA_EAUTH);
        *p = o;
    }
    /* every character of the header */
    for (char *p = t; p < d1; p++) {
        char o = *p;
        *p = o == 'A' ? 'B' : 'A';
        assert_int_equal(verify(t), TA_EAUTH);
        *p = o;
    }
    /* payload swapped for a re-encoded superadmin payload, signature kept */
    char p[512], tok[2048], payload[256];
    snprintf(payload, sizeof(payload),
             "{\"sub\":\"99\",\"role\":1,\"jti\":\"%s\",\"iat\":%lld,\"exp\":%lld}", c.jti, (long long)c.iat,
             (long long)c.exp);
    b64url(payload, strlen(payload), p);
    snprintf(tok, sizeof(tok), "%.*s.%s%s", (int)(d1 - t), t, p, d2);
    assert_int_equal(verify(tok), TA_EAUTH);
    /* signature stripped */
    snprintf(tok, sizeof(tok), "%.*s", (int)(d2 - t + 1), t);
    assert_int_equal(verify(tok), TA_EAUTH);
    assert_int_equal(verify(t), 0);
    free(t);
}

static void test_jwt_wrong_secret(void **state)
{
    uint8_t other[32];
    memcpy(other, SECRET, 32);
    other[0] ^= 0x20;
    char *t = NULL;
    ta_jwt_claims_t c;
    assert_int_equal(ta_jwt_issue(other, sizeof(other), 5, TA_ROLE_USER, 0, 3600, &t, &c), 0);
    assert_int_equal(verify(t), TA_EAUTH);
    assert_int_equal(ta_jwt_verify(other, sizeof(other), t, strlen(t), &c), 0);
    /* a prefix of the right secret is not the secret */
    assert_int_equal(ta_jwt_verify(other, 31, t, strlen(t), &c), TA_EAUTH);
    free(t);
}

static void test_jwt_claims(void **state)
{
    /* one claim missing at a time */
    const int missing[] = {C_SUB, C_ROLE, C_JTI, C_IAT, C_EXP, C_GEN};
    for (size_t i = 0; i < TA_ARRAY_SIZE(missing); i++) {
        char *t = mint(JWT_ALG_HS256, SECRET, sizeof(SECRET), C_ALL & ~missing[i], NULL);
        assert_int_equal(verify(t), TA_EAUTH);
        free(t);
    }
    /* wrong types or values, each properly signed. libjwt 1.10's
     * jwt_get_grant_int reads "1", 1.0, true and null all as 0 with errno 0:
     * these cases are what proves the verifier does not rely on it. */
    long now = (long)ta_now_s();
    char json[256];
    struct { int which; const char *fmt; } bad[] = {
        {C_ALL & ~C_SUB, "{\"sub\":42}"},
        {C_ALL & ~C_SUB, "{\"sub\":\"\"}"},
        {C_ALL & ~C_SUB, "{\"sub\":\"042\"}"},
        {C_ALL & ~C_SUB, "{\"sub\":\"-1\"}"},
        {C_ALL & ~C_SUB, "{\"sub\":\"4x\"}"},
        {C_ALL & ~C_SUB, "{\"sub\":\"18446744073709551616\"}"},
        {C_ALL & ~C_ROLE, "{\"role\":\"1\"}"},
        {C_ALL & ~C_ROLE, "{\"role\":-1}"},
        {C_ALL & ~C_ROLE, "{\"role\":2}"},
        {C_ALL & ~C_ROLE, "{\"role\":1.0}"},
        {C_ALL & ~C_ROLE, "{\"role\":true}"},
        {C_ALL & ~C_ROLE, "{\"role\":null}"},
        {C_ALL & ~C_ROLE, "{\"role\":[1]}"},
        {C_ALL & ~C_JTI, "{\"jti\":\"0123456789abcdef0123456789abcde\"}"},
        {C_ALL & ~C_JTI, "{\"jti\":\"0123456789ABCDEF0123456789ABCDEF\"}"},
        {C_ALL & ~C_JTI, "{\"jti\":12}"},
        {C_ALL & ~C_EXP, "{\"exp\":\"%ld\"}"},
        {C_ALL & ~C_EXP, "{\"exp\":%ld.5}"},
        {C_ALL & ~C_IAT, "{\"iat\":\"%ld\"}"},
        {C_ALL & ~C_IAT, "{\"iat\":null}"},
        {C_ALL & ~C_IAT, "{\"iat\":-1}"},
        {C_ALL & ~C_EXP, "{\"exp\":true}"},
        {C_ALL & ~C_IAT, "{\"iat\":%ld}"}, /* iat after exp (now + 600 + 1000) */
        {C_ALL & ~C_GEN, "{\"gen\":-1}"},
        {C_ALL & ~C_GEN, "{\"gen\":\"3\"}"},
        {C_ALL & ~C_GEN, "{\"gen\":3.0}"},
        {C_ALL & ~C_GEN, "{\"gen\":null}"},
    };
    for (size_t i = 0; i < TA_ARRAY_SIZE(bad); i++) {
        long val = now + 600;
        if (strstr(bad[i].fmt, "\"iat\":%ld}"))
            val = now + 1600;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        snprintf(json, sizeof(json), bad[i].fmt, val);
#pragma GCC diagnostic pop
        char *t = mint(JWT_ALG_HS256, SECRET, sizeof(SECRET), bad[i].which, json);
        if (verify(t) != TA_EAUTH)
            fail_msg("accepted: %s", json);
        free(t);
    }
    /* the largest user id round-trips */
    char *t = mint(JWT_ALG_HS256, SECRET, sizeof(SECRET), C_ALL & ~C_SUB, "{\"sub\":\"18446744073709551615\"}");
    ta_jwt_claims_t c;
    assert_int_equal(ta_jwt_verify(SECRET, sizeof(SECRET), t, strlen(t), &c), 0);
    assert_true(c.user_id == UINT64_MAX);
    free(t);
}

static void test_jwt_garbage(void **state)
{
    const char *g[] = {
        "", ".", "..", "...", "a.b.c", "abc", "eyJhbGciOiJIUzI1NiJ9", "eyJhbGciOiJIUzI1NiJ9..",
        "eyJhbGciOiJIUzI1NiJ9.e30.", "eyJhbGciOiJIUzI1NiJ9.e30.AAAA", "{}.{}.{}", "Bearer x.y.z",
        "\xff\xfe\xfd.\x01\x02.\x03", "=====.=====.=====", "eyJ.eyJ.eyJ",
    };
    for (size_t i = 0; i < TA_ARRAY_SIZE(g); i++)
        assert_int_equal(verify(g[i]), TA_EAUTH);
    assert_int_equal(ta_jwt_verify(SECRET, sizeof(SECRET), NULL, 0, NULL), TA_EAUTH);
    /* embedded NUL inside len */
    char *t = NULL;
    ta_jwt_claims_t c;
    assert_int_equal(ta_jwt_issue(SECRET, sizeof(SECRET), 3, TA_ROLE_USER, 0, 60, &t, &c), 0);
    size_t n = strlen(t);
    char *z = malloc(n + 2);
    memcpy(z, t, n + 1);
    z[n + 1] = 'x';
    assert_int_equal(ta_jwt_verify(SECRET, sizeof(SECRET), z, n + 2, &c), TA_EAUTH);
    free(z);
    free(t);
}

static void test_jwt_oversize(void **state)
{
    /* A validly signed token over the bound is refused before parsing. */
    char pad[TA_JWT_MAX_LEN];
    memset(pad, 'a', sizeof(pad));
    memcpy(pad, "{\"pad\":\"", 8);
    memcpy(pad + 3500, "\"}", 3);
    char *t = mint(JWT_ALG_HS256, SECRET, sizeof(SECRET), C_ALL, pad);
    assert_true(strlen(t) > TA_JWT_MAX_LEN);
    assert_int_equal(verify(t), TA_EAUTH);
    free(t);
    /* and one just under it with the same padding scheme is accepted */
    memcpy(pad + 2000, "\"}", 3);
    t = mint(JWT_ALG_HS256, SECRET, sizeof(SECRET), C_ALL, pad);
    assert_true(strlen(t) <= TA_JWT_MAX_LEN);
    assert_int_equal(verify(t), 0);
    free(t);
    /* a huge garbage string */
    size_t big = 1 << 20;
    char *g = malloc(big + 1);
    memset(g, 'e', big);
    g[big] = '\0';
    g[100] = '.';
    g[200] = '.';
    assert_int_equal(ta_jwt_verify(SECRET, sizeof(SECRET), g, big, NULL), TA_EAUTH);
    free(g);
}

/* ---- secret files ----------------------------------------------------- */

static char tmpdir[64];

static int setup_dir(void **state)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/ta_crypto_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
    char p[128];
    const char *names[] = {"jwt.secret", "big", "link"};
    for (size_t i = 0; i < TA_ARRAY_SIZE(names); i++) {
        snprintf(p, sizeof(p), "%s/%s", tmpdir, names[i]);
        unlink(p);
    }
    return rmdir(tmpdir);
}

static void test_secret_files(void **state)
{
    char p[128];
    uint8_t a[32], b[32], zero[32] = {0};
    struct stat st;
    snprintf(p, sizeof(p), "%s/jwt.secret", tmpdir);

    mode_t old = umask(0);
    assert_int_equal(ta_secret_file_create(p, 32), 0);
    umask(old);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(st.st_size, 32);
    assert_int_equal(ta_secret_file_read(p, a, 32), 0);
    assert_memory_not_equal(a, zero, 32);
    assert_int_equal(ta_secret_file_read(p, b, 32), 0);
    assert_memory_equal(a, b, 32);

    /* O_EXCL: never overwritten */
    assert_int_equal(ta_secret_file_create(p, 32), -EEXIST);
    assert_int_equal(ta_secret_file_read(p, b, 32), 0);
    assert_memory_equal(a, b, 32);

    /* wrong size either way */
    uint8_t big[64];
    assert_int_equal(ta_secret_file_read(p, big, 31), TA_ECONFIG);
    assert_int_equal(ta_secret_file_read(p, big, 33), TA_ECONFIG);

    /* readable by group or others */
    const mode_t modes[] = {0644, 0640, 0604, 0601, 0610, 0660};
    for (size_t i = 0; i < TA_ARRAY_SIZE(modes); i++) {
        assert_int_equal(chmod(p, modes[i]), 0);
        assert_int_equal(ta_secret_file_read(p, b, 32), TA_ECONFIG);
    }
    assert_int_equal(chmod(p, 0400), 0);
    assert_int_equal(ta_secret_file_read(p, b, 32), 0);
    assert_memory_equal(a, b, 32);
    assert_int_equal(chmod(p, 0600), 0);

    /* through a symlink is refused on create */
    char l[128];
    snprintf(l, sizeof(l), "%s/link", tmpdir);
    assert_int_equal(symlink(p, l), 0);
    assert_true(ta_secret_file_create(l, 32) < 0);

    /* missing file, directory */
    char q[128];
    snprintf(q, sizeof(q), "%s/none", tmpdir);
    assert_int_equal(ta_secret_file_read(q, b, 32), -ENOENT);
    assert_int_equal(ta_secret_file_read(tmpdir, b, 32), TA_ECONFIG);

    /* a 32-byte secret file feeds the JWT functions */
    char *t = NULL;
    ta_jwt_claims_t c;
    assert_int_equal(ta_jwt_issue(a, 32, 8, TA_ROLE_USER, 0, 60, &t, &c), 0);
    assert_int_equal(ta_jwt_verify(a, 32, t, strlen(t), &c), 0);
    free(t);

    /* a different size */
    snprintf(q, sizeof(q), "%s/big", tmpdir);
    assert_int_equal(ta_secret_file_create(q, 64), 0);
    assert_int_equal(ta_secret_file_read(q, big, 64), 0);
    assert_int_equal(ta_secret_file_create(q, 0) < 0, 1);
}

static void test_hex_random(void **state)
{
    const uint8_t in[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
    char out[13];
    ta_hex(in, sizeof(in), out);
    assert_string_equal(out, "00017f80abff");
    ta_hex(in, 0, out);
    assert_string_equal(out, "");
    uint8_t r1[32], r2[32];
    assert_int_equal(ta_random(r1, sizeof(r1)), 0);
    assert_int_equal(ta_random(r2, sizeof(r2)), 0);
    assert_memory_not_equal(r1, r2, 32);
    assert_int_equal(ta_random(r1, 0), 0);
}

int main(void)
{
    ta_log_init('C', TA_LOG_ERROR + 1); /* the refusals below log by design */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_password_roundtrip),
        cmocka_unit_test(test_password_default_iterations),
        cmocka_unit_test(test_password_salted),
        cmocka_unit_test(test_password_length_rules),
        cmocka_unit_test(test_password_malformed),
        cmocka_unit_test(test_apikey_format_unique),
        cmocka_unit_test(test_apikey_wellformed),
        cmocka_unit_test(test_apikey_hash_vector),
        cmocka_unit_test(test_seal_roundtrip),
        cmocka_unit_test(test_seal_bitflips),
        cmocka_unit_test(test_seal_wrong_key_truncated),
        cmocka_unit_test(test_jwt_ok),
        cmocka_unit_test(test_jwt_hs512_same_secret),
        cmocka_unit_test(test_jwt_alg_none),
        cmocka_unit_test(test_jwt_expired),
        cmocka_unit_test(test_jwt_tampered),
        cmocka_unit_test(test_jwt_wrong_secret),
        cmocka_unit_test(test_jwt_claims),
        cmocka_unit_test(test_jwt_garbage),
        cmocka_unit_test(test_jwt_oversize),
        cmocka_unit_test_setup_teardown(test_secret_files, setup_dir, teardown_dir),
        cmocka_unit_test(test_hex_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
