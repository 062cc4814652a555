/*
 * fuzz_tokens.c - the prompt-token estimate of worker/tokens.h on any request
 * body (json_loadb with JSON_REJECT_DUPLICATES, as worker/proxy.c parses
 * /v1 bodies). Checked (tokens.h): it never fails; 3 <= estimate <= upper;
 * messages counts the messages array; text bytes and images are never
 * negative; upper = text_bytes + 4 per message + 3 + 1600 per image + token
 * ids, so upper >= text_bytes + 4 * messages + 3.
 */
#include "fuzz.h"
#include "worker/tokens.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *body = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (body == NULL)
        return 0;
    ta_tokens_t t;
    ta_tokens_prompt(body, &t);
    FUZZ_CHECK(t.messages >= 0 && t.text_bytes >= 0 && t.images >= 0);
    FUZZ_CHECK(t.estimate >= TA_TOKENS_REPLY_PRIMING);
    FUZZ_CHECK(t.estimate <= t.upper);
    FUZZ_CHECK(t.upper >= t.text_bytes + TA_TOKENS_PER_MESSAGE * t.messages +
                              TA_TOKENS_REPLY_PRIMING + TA_TOKENS_IMAGE_MAX * t.images);
    const json_t *msgs = json_object_get(body, "messages");
    FUZZ_CHECK(t.messages == (json_is_array(msgs) ? (int64_t)json_array_size(msgs) : 0));
    /* the estimate is a function of the body: a second call agrees */
    ta_tokens_t t2;
    ta_tokens_prompt(body, &t2);
    FUZZ_CHECK(t2.estimate == t.estimate && t2.upper == t.upper);
    json_decref(body);
    return 0;
}
