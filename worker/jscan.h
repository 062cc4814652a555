/*
 * jscan.h - the usage of an OpenAI answer without building a JSON tree.
 *
 * jansson's json_loadb() allocates a node, a hash table and a string for
 * every member of the provider's answer; taking `usage` out of a small chat
 * answer that way cost ~7 us per request, about a tenth of a worker's CPU per
 * proxied request. This scanner accepts exactly the texts json_loadb(text,
 * len, 0, NULL) accepts (RFC 8259 grammar, top level an object or an array,
 * only ' ' '\t' '\n' '\r' as white space, strict UTF-8, no \u0000, paired
 * surrogate escapes, integers within int64, reals that do not overflow a
 * double, nesting depth <= 2048) and reads the members the proxy uses,
 * with jansson's rule for duplicate keys (the last one wins). Nothing is
 * allocated. tests/unit/test_jscan.c compares it with jansson.
 *
 * No h2o, no curl, no LMDB: callable from any process.
 */
#ifndef TA_JSCAN_H
#define TA_JSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ta_jscan_usage {
    bool usage_object;         /* top-level "usage" is an object */
    /* as the proxy reads them: a positive integer, else 0 */
    int64_t prompt_tokens;     /* usage.prompt_tokens */
    int64_t completion_tokens; /* usage.completion_tokens */
    int64_t cached_tokens;     /* usage.prompt_tokens_details.cached_tokens */
    int choices;               /* top-level "choices": TA_JSCAN_ABSENT, _EMPTY (an empty
                                * array), _ITEMS (a non-empty array) or _OTHER */
} ta_jscan_usage_t;

#define TA_JSCAN_ABSENT 0
#define TA_JSCAN_EMPTY 1
#define TA_JSCAN_ITEMS 2
#define TA_JSCAN_OTHER 3

/** Scan json[0..len). Returns 0 for a JSON object (*out filled), 1 for valid
 *  JSON whose top level is an array (*out says absent/0), TA_EINVAL where
 *  json_loadb(json, len, 0, NULL) would return NULL. */
int ta_jscan_usage(const char *json, size_t len, ta_jscan_usage_t *out);

#endif
