/*
 * apikey.c - API keys: form, presentation, hash (apikey.h).
 */
#include "ledger/apikey.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "schema/ta.h"

static const char b62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

static bool ows(char c) { return c == ' ' || c == '\t'; }

bool ta_bearer_token(const char *v, size_t len, const char **tok, size_t *tok_len)
{
    const char *end = v + len;
    if (v == NULL || len < 7 || strncasecmp(v, "Bearer", 6) != 0 || !ows(v[6]))
        return false;
    v += 7;
    while (v < end && ows(*v))
        v++;
    while (end > v && ows(end[-1]))
        end--;
    *tok = v;
    *tok_len = (size_t)(end - v);
    return end > v;
}

bool ta_apikey_wellformed(const char *key, size_t len)
{
    if (key == NULL || len != TA_APIKEY_LEN || memcmp(key, "sk-", 3) != 0)
        return false;
    for (size_t i = 3; i < len; i++) {
        char c = key[i];
        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')))
            return false;
    }
    return true;
}

int ta_apikey_generate(char *out)
{
    uint8_t num[32];
    if (RAND_bytes(num, sizeof(num)) != 1)
        return TA_ECRYPTO;
    memcpy(out, "sk-", 3);
    /* 62^43 > 2^256, so 43 digits always suffice; taking every digit (zeros
     * included) from the least significant end gives the fixed width. */
    for (int pos = TA_APIKEY_LEN - 1; pos >= 3; pos--) {
        unsigned rem = 0;
        for (size_t i = 0; i < sizeof(num); i++) {
            unsigned cur = (rem << 8) | num[i];
            num[i] = (uint8_t)(cur / 62);
            rem = cur % 62;
        }
        out[pos] = b62[rem];
    }
    out[TA_APIKEY_LEN] = '\0';
    OPENSSL_cleanse(num, sizeof(num));
    return 0;
}

void ta_apikey_hash(const char *key, size_t len, uint8_t out[32])
{
    SHA256((const unsigned char *)key, len, out);
}

struct ta_apikey_hasher {
    EVP_MD *md;
    EVP_MD_CTX *ctx;
};

ta_apikey_hasher_t *ta_apikey_hasher_create(void)
{
    ta_apikey_hasher_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    h->md = EVP_MD_fetch(NULL, "SHA256", NULL);
    h->ctx = EVP_MD_CTX_new();
    if (h->md == NULL || h->ctx == NULL) {
        ta_apikey_hasher_destroy(h);
        return NULL;
    }
    return h;
}

void ta_apikey_hasher_destroy(ta_apikey_hasher_t *h)
{
    if (h == NULL)
        return;
    EVP_MD_CTX_free(h->ctx);
    EVP_MD_free(h->md);
    free(h);
}

void ta_apikey_hash_with(ta_apikey_hasher_t *h, const char *key, size_t len, uint8_t out[32])
{
    unsigned int ol = 0;
    if (h == NULL || EVP_DigestInit_ex2(h->ctx, h->md, NULL) != 1 || EVP_DigestUpdate(h->ctx, key, len) != 1 ||
        EVP_DigestFinal_ex(h->ctx, out, &ol) != 1 || ol != 32)
        ta_apikey_hash(key, len, out);
}
