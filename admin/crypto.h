/*
 * crypto.h - passwords, API keys, JWTs and sealing of provider keys.
 * Everything here uses OpenSSL (and libjwt for JWTs). No LMDB.
 *
 * Callable from worker and CLI processes.
 */
#ifndef TA_CRYPTO_H
#define TA_CRYPTO_H

#include <stddef.h>
#include <stdint.h>
#include "ledger/apikey.h"
#include "schema/ta.h"

/* ---- passwords: PBKDF2-HMAC-SHA256 ------------------------------------ */
/* Encoded hash: "pbkdf2-sha256$<iterations>$<salt b64>$<hash b64>" (< 128 bytes). */
#define TA_PWHASH_MAX 128
#define TA_PASSWORD_MIN 8
#define TA_PASSWORD_MAX 256

/** Hash a password with a fresh 16-byte salt. out holds TA_PWHASH_MAX bytes.
 *  iterations 0 = default (210000; tests may pass fewer). Returns length or <0. */
int ta_password_hash(const char *password, unsigned iterations, char *out);
/** Verify in constant time (CRYPTO_memcmp). Returns 0 on match, TA_EAUTH on
 *  mismatch, TA_EINVAL on a malformed hash. */
int ta_password_verify(const char *password, const char *hash, size_t hash_len);

/* ---- API keys: ledger/apikey.h (form, Bearer presentation, hash) ------ */

/* ---- sealing (AES-256-GCM under the master key) ------------------------ */
/* Sealed blob: version u8 (1) | nonce 12 | ciphertext | tag 16. */
#define TA_SEAL_OVERHEAD (1 + 12 + 16)

/** Seal plain[0..len) into out (cap >= len + TA_SEAL_OVERHEAD). Returns the
 *  sealed length or <0. */
int ta_seal(const uint8_t key[32], const void *plain, size_t len, uint8_t *out, size_t cap);
/** Open; TA_ECRYPTO when the tag does not match (tampered or wrong key).
 *  Returns the plain length or <0. out gets a NUL after the plaintext, so
 *  cap must be >= sealed_len - TA_SEAL_OVERHEAD + 1. */
int ta_unseal(const uint8_t key[32], const uint8_t *sealed, size_t len, char *out, size_t cap);

/* ---- JWT (HS256 pinned) ------------------------------------------------ */
typedef struct ta_jwt_claims {
    uint64_t user_id;      /* "sub" (decimal string) */
    int role;              /* "role": TA_ROLE_* */
    char jti[40];          /* 32 hex chars */
    int64_t iat, exp;      /* unix s */
    int64_t gen;           /* "gen": the user's token_gen when issued (schema.h), >= 0 */
} ta_jwt_claims_t;

/** Issue a token for user_id/role/gen (gen >= 0, else TA_EINVAL) valid ttl_s
 *  seconds; fills claims (jti, exp). *token is malloc'd (free()). */
int ta_jwt_issue(const uint8_t *secret, size_t secret_len, uint64_t user_id, int role, int64_t gen,
                 int64_t ttl_s, char **token, ta_jwt_claims_t *claims);
/** Verify signature (key always passed), algorithm == HS256, exp > now, and the
 *  claims' presence (a token without an integer "gen" >= 0 is refused).
 *  Revocation and the session generation are checked by the caller against
 *  revoked_jwt and the user record. Returns 0 or TA_EAUTH. */
int ta_jwt_verify(const uint8_t *secret, size_t secret_len, const char *token, size_t len,
                  ta_jwt_claims_t *claims);

/* ---- helpers ----------------------------------------------------------- */
/** Read exactly n bytes of a secret file; refuses a file readable by group or
 *  others (TA_ECONFIG, with the path logged). */
int ta_secret_file_read(const char *path, uint8_t *out, size_t n);
/** Create a secret file of n random bytes with mode 0600 (O_EXCL). */
int ta_secret_file_create(const char *path, size_t n);
/** Lower-case hex of n bytes into out (2n+1). */
void ta_hex(const uint8_t *in, size_t n, char *out);
/** Random bytes (RAND_bytes); TA_ECRYPTO on failure. */
int ta_random(void *out, size_t n);

/* ---- additions (crypto) ------------------------------------------------ */
/* JWT secret length accepted by ta_jwt_issue/ta_jwt_verify (libjwt enforces
 * no minimum; generate one with ta_secret_file_create(path, 32)). Shorter or
 * longer secrets: issue returns TA_EINVAL, verify TA_EAUTH. Tokens longer
 * than TA_JWT_MAX_LEN bytes are rejected before parsing. */
#define TA_JWT_SECRET_MIN 32
#define TA_JWT_SECRET_MAX 1024
#define TA_JWT_MAX_LEN 4096

#endif
