/*
 * apikey.h - the one rule for API keys, below both worker/ (/v1) and admin/
 * (/api): their form, how a request presents one, and the hash that keys
 * the `keys` table (ledger/store.h). No LMDB, no h2o.
 *
 *   key:  "sk-" + 43 base62 characters (32 random bytes) = TA_APIKEY_LEN chars
 *   presented as:  Authorization: Bearer <key>
 *                  the scheme case-insensitive; spaces and tabs around the key
 *                  are not part of it (RFC 9110's optional whitespace), on
 *                  /v1 and /api alike
 *   stored as:     SHA-256 of the key's bytes; only the first
 *                  TA_KEY_PREFIX_LEN characters are kept in clear (logs, UI)
 *
 * Any process, any thread (a ta_apikey_hasher_t belongs to one thread).
 */
#ifndef TA_APIKEY_H
#define TA_APIKEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TA_APIKEY_LEN 46     /* "sk-" + base62 of 32 random bytes (43 chars) */
#define TA_KEY_PREFIX_LEN 11 /* "sk-" + 8 chars: shown to humans and in logs */

/** The credentials of an Authorization header value v[0..len): "Bearer",
 *  case-insensitive, at least one space or tab, then the token with spaces
 *  and tabs trimmed on both sides. Sets *tok (pointing into v) and *tok_len;
 *  false when the value is not of the Bearer scheme or the token is empty. */
bool ta_bearer_token(const char *v, size_t len, const char **tok, size_t *tok_len);

/** Is key[0..len) of our form (prefix, length, alphabet)? A key of another
 *  form is refused before any lookup. */
bool ta_apikey_wellformed(const char *key, size_t len);

/** A fresh key (NUL-terminated; out holds TA_APIKEY_LEN + 1) from RAND_bytes.
 *  Returns 0 or TA_ECRYPTO. */
int ta_apikey_generate(char *out);

/** SHA-256 of key[0..len). */
void ta_apikey_hash(const char *key, size_t len, uint8_t out[32]);

/** A reusable hashing context: OpenSSL 3's one-shot SHA256() fetches the
 *  algorithm and allocates a context every call (0.42 us against 0.11 us).
 *  NULL on failure; ta_apikey_hash_with(NULL, ...) is the one-shot. */
typedef struct ta_apikey_hasher ta_apikey_hasher_t;
ta_apikey_hasher_t *ta_apikey_hasher_create(void);
void ta_apikey_hasher_destroy(ta_apikey_hasher_t *h);
/** Same result as ta_apikey_hash(). */
void ta_apikey_hash_with(ta_apikey_hasher_t *h, const char *key, size_t len, uint8_t out[32]);

#endif
