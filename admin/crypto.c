/*
 * crypto.c - passwords (PBKDF2-HMAC-SHA256), API keys, AES-256-GCM sealing,
 * HS256 JWTs (libjwt 1.10) and secret files.
 *
 * libjwt 1.10 is used only for the parts it gets right (HMAC over the
 * base64url segments, JSON parsing). Everything security-relevant that it
 * does not do is done here: the key is always passed to jwt_decode (a NULL key
 * skips the signature check), the algorithm is pinned to HS256 after decoding
 * (a token signed HS512 with the same secret verifies otherwise), exp is
 * checked against ta_now_s() (1.10 has no validation), and every claim is
 * checked for presence and type on the parsed grants (jwt_get_grant returns
 * NULL for numbers; jwt_get_grant_int returns 0 without an errno for a claim
 * of the wrong type, so it is not used).
 *
 * No LMDB, no shared memory. Callable from worker and CLI processes.
 */
#include "admin/crypto.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <jwt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "schema/schema.h"

/* ---- small helpers ---------------------------------------------------- */

int ta_random(void *out, size_t n)
{
    uint8_t *p = out;
    while (n > 0) {
        int chunk = n > (size_t)INT_MAX ? INT_MAX : (int)n;
        if (RAND_bytes(p, chunk) != 1)
            return TA_ECRYPTO;
        p += chunk;
        n -= (size_t)chunk;
    }
    return 0;
}

void ta_hex(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0xf];
    }
    out[2 * n] = '\0';
}

/* Canonical unsigned decimal: 1..20 digits, no sign, no leading zero (except
 * "0"), no overflow. Used for iteration counts and the JWT "sub". */
static int parse_u64(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0 || len > 20 || (len > 1 && s[0] == '0'))
        return TA_EINVAL;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return TA_EINVAL;
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, (uint64_t)(s[i] - '0'), &v))
            return TA_EINVAL;
    }
    *out = v;
    return 0;
}

/* Strict base64 decode of exactly want bytes: the text must be the canonical
 * encoding (re-encoding the result gives the same text back), so padding,
 * whitespace and trailing bits cannot vary between stored hashes. */
static int b64_decode_exact(const char *s, size_t len, uint8_t *out, size_t want)
{
    uint8_t tmp[64], re[96];
    size_t enc_len = 4 * ((want + 2) / 3);
    int rc = TA_EINVAL;

    if (want > 48 || len != enc_len)
        return TA_EINVAL;
    if (EVP_DecodeBlock(tmp, (const unsigned char *)s, (int)len) < (int)want)
        goto Exit;
    if (EVP_EncodeBlock(re, tmp, (int)want) != (int)enc_len || memcmp(re, s, len) != 0)
        goto Exit;
    memcpy(out, tmp, want);
    rc = 0;
Exit:
    OPENSSL_cleanse(tmp, sizeof(tmp));
    return rc;
}

/* ---- passwords -------------------------------------------------------- */

#define PW_PREFIX "pbkdf2-sha256$"
#define PW_SALT_LEN 16
#define PW_HASH_LEN 32
#define PW_ITER_DEFAULT 210000u
/* Bounds on the stored count: below is too weak to accept, above would let a
 * crafted hash burn minutes of CPU per login attempt. */
#define PW_ITER_MIN 1000u
#define PW_ITER_MAX 10000000u

static int pw_derive(const char *password, size_t pwlen, const uint8_t *salt, unsigned iter,
                     uint8_t out[PW_HASH_LEN])
{
    if (PKCS5_PBKDF2_HMAC(password, (int)pwlen, salt, PW_SALT_LEN, (int)iter, EVP_sha256(), PW_HASH_LEN,
                          out) != 1)
        return TA_ECRYPTO;
    return 0;
}

int ta_password_hash(const char *password, unsigned iterations, char *out)
{
    uint8_t salt[PW_SALT_LEN], dk[PW_HASH_LEN];
    char salt_b64[32], dk_b64[48];
    size_t pwlen;
    int rc, n;

    if (!password || !out)
        return TA_EINVAL;
    if (iterations == 0)
        iterations = PW_ITER_DEFAULT;
    if (iterations < PW_ITER_MIN || iterations > PW_ITER_MAX)
        return TA_EINVAL;
    pwlen = strnlen(password, TA_PASSWORD_MAX + 1);
    if (pwlen < TA_PASSWORD_MIN || pwlen > TA_PASSWORD_MAX)
        return TA_EINVAL;

    if ((rc = ta_random(salt, sizeof(salt))) < 0)
        goto Exit;
    if ((rc = pw_derive(password, pwlen, salt, iterations, dk)) < 0)
        goto Exit;
    EVP_EncodeBlock((unsigned char *)salt_b64, salt, sizeof(salt));
    EVP_EncodeBlock((unsigned char *)dk_b64, dk, sizeof(dk));
    n = snprintf(out, TA_PWHASH_MAX, PW_PREFIX "%u$%s$%s", iterations, salt_b64, dk_b64);
    rc = (n > 0 && n < TA_PWHASH_MAX) ? n : TA_ETOOBIG;
Exit:
    OPENSSL_cleanse(dk, sizeof(dk));
    OPENSSL_cleanse(dk_b64, sizeof(dk_b64));
    return rc;
}

int ta_password_verify(const char *password, const char *hash, size_t hash_len)
{
    uint8_t salt[PW_SALT_LEN], want[PW_HASH_LEN], got[PW_HASH_LEN];
    const char *p, *end, *d1, *d2;
    uint64_t iter;
    size_t pwlen;
    int rc = TA_EINVAL;

    if (!hash || hash_len >= TA_PWHASH_MAX || hash_len <= sizeof(PW_PREFIX) - 1)
        return TA_EINVAL;
    if (memcmp(hash, PW_PREFIX, sizeof(PW_PREFIX) - 1) != 0)
        return TA_EINVAL;
    p = hash + sizeof(PW_PREFIX) - 1;
    end = hash + hash_len;
    d1 = memchr(p, '$', (size_t)(end - p));
    if (!d1)
        return TA_EINVAL;
    d2 = memchr(d1 + 1, '$', (size_t)(end - d1 - 1));
    if (!d2 || memchr(d2 + 1, '$', (size_t)(end - d2 - 1)))
        return TA_EINVAL;
    if (parse_u64(p, (size_t)(d1 - p), &iter) < 0 || iter < PW_ITER_MIN || iter > PW_ITER_MAX)
        return TA_EINVAL;
    if (b64_decode_exact(d1 + 1, (size_t)(d2 - d1 - 1), salt, sizeof(salt)) < 0)
        goto Exit;
    if (b64_decode_exact(d2 + 1, (size_t)(end - d2 - 1), want, sizeof(want)) < 0)
        goto Exit;

    /* The hash is well-formed from here on: every failure is a plain mismatch. */
    rc = TA_EAUTH;
    if (!password)
        goto Exit;
    pwlen = strnlen(password, TA_PASSWORD_MAX + 1);
    if (pwlen < TA_PASSWORD_MIN || pwlen > TA_PASSWORD_MAX)
        goto Exit;
    if ((rc = pw_derive(password, pwlen, salt, (unsigned)iter, got)) < 0)
        goto Exit;
    rc = CRYPTO_memcmp(got, want, sizeof(want)) == 0 ? 0 : TA_EAUTH;
Exit:
    OPENSSL_cleanse(want, sizeof(want));
    OPENSSL_cleanse(got, sizeof(got));
    return rc;
}

/* API keys: ledger/apikey.c (the one rule for /v1 and /api). */

/* ---- sealing ---------------------------------------------------------- */

#define SEAL_VERSION 1
#define SEAL_NONCE 12
#define SEAL_TAG 16

int ta_seal(const uint8_t key[32], const void *plain, size_t len, uint8_t *out, size_t cap)
{
    EVP_CIPHER_CTX *ctx = NULL;
    uint8_t *nonce = out + 1, *ct = out + 1 + SEAL_NONCE;
    int outl = 0, fin = 0, rc = TA_ECRYPTO;

    if (!key || !out || (len > 0 && !plain))
        return TA_EINVAL;
    if (len > (size_t)INT_MAX - TA_SEAL_OVERHEAD)
        return TA_ETOOBIG;
    if (cap < len + TA_SEAL_OVERHEAD)
        return TA_ETOOBIG;

    out[0] = SEAL_VERSION;
    if (ta_random(nonce, SEAL_NONCE) < 0)
        return TA_ECRYPTO;
    if (!(ctx = EVP_CIPHER_CTX_new()))
        return TA_ECRYPTO;
    if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, SEAL_NONCE, NULL) != 1 ||
        EVP_EncryptInit_ex(ctx, NULL, NULL, key, nonce) != 1)
        goto Exit;
    /* The version byte is authenticated so a blob cannot be relabelled. */
    if (EVP_EncryptUpdate(ctx, NULL, &outl, out, 1) != 1)
        goto Exit;
    outl = 0;
    if (len > 0 && EVP_EncryptUpdate(ctx, ct, &outl, plain, (int)len) != 1)
        goto Exit;
    if (EVP_EncryptFinal_ex(ctx, ct + outl, &fin) != 1 || (size_t)(outl + fin) != len)
        goto Exit;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, SEAL_TAG, ct + len) != 1)
        goto Exit;
    rc = (int)(len + TA_SEAL_OVERHEAD);
Exit:
    EVP_CIPHER_CTX_free(ctx);
    if (rc < 0)
        OPENSSL_cleanse(out, len + TA_SEAL_OVERHEAD);
    return rc;
}

int ta_unseal(const uint8_t key[32], const uint8_t *sealed, size_t len, char *out, size_t cap)
{
    EVP_CIPHER_CTX *ctx = NULL;
    const uint8_t *nonce, *ct, *tag;
    uint8_t tagbuf[SEAL_TAG];
    size_t ptlen;
    int outl = 0, fin = 0, rc = TA_ECRYPTO;

    if (!key || !sealed || !out || len < TA_SEAL_OVERHEAD)
        return TA_EINVAL;
    if (len > (size_t)INT_MAX)
        return TA_ETOOBIG;
    ptlen = len - TA_SEAL_OVERHEAD;
    if (cap < ptlen + 1)
        return TA_ETOOBIG;
    if (sealed[0] != SEAL_VERSION)
        return TA_ECRYPTO;
    nonce = sealed + 1;
    ct = sealed + 1 + SEAL_NONCE;
    tag = ct + ptlen;
    memcpy(tagbuf, tag, SEAL_TAG); /* the ctrl takes a non-const pointer */

    if (!(ctx = EVP_CIPHER_CTX_new()))
        return TA_ECRYPTO;
    if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, SEAL_NONCE, NULL) != 1 ||
        EVP_DecryptInit_ex(ctx, NULL, NULL, key, nonce) != 1)
        goto Exit;
    if (EVP_DecryptUpdate(ctx, NULL, &outl, sealed, 1) != 1)
        goto Exit;
    outl = 0;
    if (ptlen > 0 && EVP_DecryptUpdate(ctx, (uint8_t *)out, &outl, ct, (int)ptlen) != 1)
        goto Exit;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, SEAL_TAG, tagbuf) != 1)
        goto Exit;
    if (EVP_DecryptFinal_ex(ctx, (uint8_t *)out + outl, &fin) != 1 || (size_t)(outl + fin) != ptlen)
        goto Exit;
    out[ptlen] = '\0';
    rc = (int)ptlen;
Exit:
    EVP_CIPHER_CTX_free(ctx);
    /* Never hand out unauthenticated plaintext. */
    if (rc < 0)
        OPENSSL_cleanse(out, ptlen + 1);
    return rc;
}

/* ---- JWT -------------------------------------------------------------- */

#define JWT_MAX_TOKEN TA_JWT_MAX_LEN

static int jwt_secret_ok(const uint8_t *secret, size_t secret_len)
{
    return secret && secret_len >= TA_JWT_SECRET_MIN && secret_len <= TA_JWT_SECRET_MAX;
}

int ta_jwt_issue(const uint8_t *secret, size_t secret_len, uint64_t user_id, int role, int64_t gen,
                 int64_t ttl_s, char **token, ta_jwt_claims_t *claims)
{
    jwt_t *j = NULL;
    char *enc = NULL, sub[24];
    uint8_t jti_raw[16];
    ta_jwt_claims_t c;
    int64_t now;
    int rc;

    if (!token || !jwt_secret_ok(secret, secret_len))
        return TA_EINVAL;
    *token = NULL;
    if ((role != TA_ROLE_USER && role != TA_ROLE_SUPERADMIN) || gen < 0 || gen > (int64_t)LONG_MAX)
        return TA_EINVAL;
    memset(&c, 0, sizeof(c));
    c.user_id = user_id;
    c.role = role;
    c.gen = gen;
    now = ta_now_s();
    c.iat = now;
    /* exp and iat go through jwt_add_grant_int's long; keep them in range. */
    if (__builtin_add_overflow(now, ttl_s, &c.exp) || c.exp < 0 || c.exp > (int64_t)LONG_MAX)
        return TA_EINVAL;
    if ((rc = ta_random(jti_raw, sizeof(jti_raw))) < 0)
        return rc;
    ta_hex(jti_raw, sizeof(jti_raw), c.jti);
    snprintf(sub, sizeof(sub), "%llu", (unsigned long long)user_id);

    rc = TA_ECRYPTO;
    if (jwt_new(&j) != 0)
        goto Exit;
    if (jwt_set_alg(j, JWT_ALG_HS256, secret, (int)secret_len) != 0 || jwt_add_grant(j, "sub", sub) != 0 ||
        jwt_add_grant_int(j, "role", role) != 0 || jwt_add_grant(j, "jti", c.jti) != 0 ||
        jwt_add_grant_int(j, "iat", (long)c.iat) != 0 || jwt_add_grant_int(j, "exp", (long)c.exp) != 0 ||
        jwt_add_grant_int(j, "gen", (long)c.gen) != 0)
        goto Exit;
    /* libjwt 1.10 has no allocator hooks: the string is malloc'd, free() it. */
    if (!(enc = jwt_encode_str(j)))
        goto Exit;
    *token = enc;
    enc = NULL;
    if (claims)
        *claims = c;
    rc = 0;
Exit:
    jwt_free(j);
    return rc;
}

/* A claim that is present and a JSON integer. Not jwt_get_grant_int: in
 * 1.10 it returns 0 with errno 0 for a present claim of any other type
 * ("1", 1.0, true, null), so types are checked on the parsed grants. */
static int claim_int(json_t *grants, const char *name, int64_t *out)
{
    json_t *v = json_object_get(grants, name);
    if (!v || !json_is_integer(v))
        return TA_EAUTH;
    *out = (int64_t)json_integer_value(v);
    return 0;
}

/* A string claim and its JSON length (a "\u0000" inside must not shorten it). */
static const char *claim_str(json_t *grants, const char *name, size_t *len)
{
    json_t *v = json_object_get(grants, name);
    if (!v || !json_is_string(v))
        return NULL;
    *len = json_string_length(v);
    return json_string_value(v);
}

int ta_jwt_verify(const uint8_t *secret, size_t secret_len, const char *token, size_t len,
                  ta_jwt_claims_t *claims)
{
    char buf[JWT_MAX_TOKEN + 1];
    jwt_t *j = NULL;
    char *gjson = NULL;
    json_t *grants = NULL;
    const char *sub, *jti;
    size_t sub_len = 0, jti_len = 0;
    int64_t role, iat, exp, gen;
    ta_jwt_claims_t c;
    int rc = TA_EAUTH;

    if (!token || !jwt_secret_ok(secret, secret_len))
        return TA_EAUTH;
    /* Bound the work an unauthenticated caller can make libjwt do. */
    if (len == 0 || len > JWT_MAX_TOKEN || memchr(token, '\0', len))
        return TA_EAUTH;
    memcpy(buf, token, len);
    buf[len] = '\0';

    /* The key is always passed: with NULL, libjwt 1.10 skips the signature. */
    if (jwt_decode(&j, buf, secret, (int)secret_len) != 0 || !j)
        goto Exit;
    /* Pinned: HS384/HS512 under the same secret, or "none", verify otherwise. */
    if (jwt_get_alg(j) != JWT_ALG_HS256)
        goto Exit;

    /* The payload as libjwt parsed it (jansson underneath), re-serialised. */
    if (!(gjson = jwt_get_grants_json(j, NULL)))
        goto Exit;
    if (!(grants = json_loads(gjson, JSON_REJECT_DUPLICATES, NULL)) || !json_is_object(grants))
        goto Exit;

    memset(&c, 0, sizeof(c));
    sub = claim_str(grants, "sub", &sub_len);
    if (!sub || parse_u64(sub, sub_len, &c.user_id) < 0)
        goto Exit;
    if (claim_int(grants, "role", &role) < 0 || (role != TA_ROLE_USER && role != TA_ROLE_SUPERADMIN))
        goto Exit;
    c.role = (int)role;
    jti = claim_str(grants, "jti", &jti_len);
    if (!jti || jti_len != 32)
        goto Exit;
    for (size_t i = 0; i < 32; i++)
        if (!((jti[i] >= '0' && jti[i] <= '9') || (jti[i] >= 'a' && jti[i] <= 'f')))
            goto Exit;
    memcpy(c.jti, jti, 33);
    if (claim_int(grants, "iat", &iat) < 0 || claim_int(grants, "exp", &exp) < 0)
        goto Exit;
    if (iat < 0 || exp < iat)
        goto Exit;
    if (claim_int(grants, "gen", &gen) < 0 || gen < 0)
        goto Exit;
    c.gen = gen;
    /* libjwt 1.10 never looks at exp. */
    if (exp <= ta_now_s())
        goto Exit;
    c.iat = iat;
    c.exp = exp;
    if (claims)
        *claims = c;
    rc = 0;
Exit:
    json_decref(grants);
    free(gjson);
    jwt_free(j);
    OPENSSL_cleanse(buf, len + 1);
    return rc;
}

/* ---- secret files ----------------------------------------------------- */

#define SECRET_FILE_MAX 4096

int ta_secret_file_read(const char *path, uint8_t *out, size_t n)
{
    struct stat st;
    size_t got = 0;
    int fd, rc;

    if (!path || !out || n == 0)
        return TA_EINVAL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        rc = -errno;
        ta_log(TA_LOG_ERROR, "secret file %s: cannot open: %s", path, strerror(-rc));
        return rc;
    }
    /* Check the opened file, not the name, so a swap between stat and open
     * cannot slip a different file past the checks. */
    if (fstat(fd, &st) == -1) {
        rc = -errno;
        ta_log(TA_LOG_ERROR, "secret file %s: cannot stat: %s", path, strerror(-rc));
        goto Exit;
    }
    if (!S_ISREG(st.st_mode)) {
        ta_log(TA_LOG_ERROR, "secret file %s: not a regular file", path);
        rc = TA_ECONFIG;
        goto Exit;
    }
    if (st.st_mode & 077) {
        ta_log(TA_LOG_ERROR, "secret file %s: mode %04o is readable by group or others; chmod 600 it",
               path, (unsigned)(st.st_mode & 07777));
        rc = TA_ECONFIG;
        goto Exit;
    }
    if (st.st_size < 0 || (uint64_t)st.st_size != (uint64_t)n) {
        ta_log(TA_LOG_ERROR, "secret file %s: size %lld, expected %zu bytes", path, (long long)st.st_size,
               n);
        rc = TA_ECONFIG;
        goto Exit;
    }
    while (got < n) {
        ssize_t r = read(fd, out + got, n - got);
        if (r == -1) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            ta_log(TA_LOG_ERROR, "secret file %s: read: %s", path, strerror(-rc));
            goto Exit;
        }
        if (r == 0) {
            ta_log(TA_LOG_ERROR, "secret file %s: shorter than %zu bytes", path, n);
            rc = TA_ECONFIG;
            goto Exit;
        }
        got += (size_t)r;
    }
    rc = 0;
Exit:
    close(fd);
    if (rc < 0)
        OPENSSL_cleanse(out, n);
    return rc;
}

/* fsync the directory holding path so the new name survives a crash. */
static int fsync_parent(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    size_t dlen;
    int fd, rc = 0;

    if (!slash) {
        dir[0] = '.';
        dlen = 1;
    } else {
        dlen = slash == path ? 1 : (size_t)(slash - path);
        if (dlen >= sizeof(dir))
            return -ENAMETOOLONG;
        memcpy(dir, path, dlen);
    }
    dir[dlen] = '\0';
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd == -1)
        return -errno;
    if (fsync(fd) == -1)
        rc = -errno;
    close(fd);
    return rc;
}

int ta_secret_file_create(const char *path, size_t n)
{
    uint8_t buf[SECRET_FILE_MAX];
    size_t done = 0;
    bool created = false;
    int fd = -1, rc;

    if (!path || n == 0 || n > sizeof(buf))
        return TA_EINVAL;
    if ((rc = ta_random(buf, n)) < 0)
        goto Exit;
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd == -1) {
        rc = -errno;
        ta_log(TA_LOG_ERROR, "secret file %s: cannot create: %s", path, strerror(-rc));
        goto Exit;
    }
    created = true;
    /* The umask can only narrow 0600, but make the mode exact anyway. */
    if (fchmod(fd, 0600) == -1) {
        rc = -errno;
        goto Fail;
    }
    while (done < n) {
        ssize_t w = write(fd, buf + done, n - done);
        if (w == -1) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            goto Fail;
        }
        done += (size_t)w;
    }
    if (fsync(fd) == -1) {
        rc = -errno;
        goto Fail;
    }
    if (close(fd) == -1) {
        fd = -1;
        rc = -errno;
        goto Fail;
    }
    fd = -1;
    if ((rc = fsync_parent(path)) < 0)
        goto Fail;
    rc = 0;
    goto Exit;
Fail:
    ta_log(TA_LOG_ERROR, "secret file %s: cannot write: %s", path, ta_strerror(rc));
Exit:
    if (fd != -1)
        close(fd);
    if (rc < 0 && created)
        unlink(path);
    OPENSSL_cleanse(buf, sizeof(buf));
    return rc;
}
