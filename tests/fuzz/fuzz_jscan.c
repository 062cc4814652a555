/*
 * fuzz_jscan.c - differential: worker/jscan.h's scanner against jansson.
 * jscan.h promises to accept exactly the texts json_loadb(text, len, 0, NULL)
 * accepts and to read usage and choices as a jansson tree would (last
 * duplicate key wins). Both run on the input; any disagreement aborts.
 */
#include <string.h>

#include "fuzz.h"
#include "schema/ta.h"
#include "worker/jscan.h"

#include <jansson.h>

static int64_t pos_int(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (int64_t)json_integer_value(v) : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ta_jscan_usage_t j;
    memset(&j, 0x5a, sizeof(j));
    int rc = ta_jscan_usage((const char *)data, size, &j);
    json_t *root = json_loadb((const char *)data, size, 0, NULL);

    if (root == NULL) {
        if (rc != TA_EINVAL)
            fprintf(stderr, "jscan accepted (%d) what jansson refuses\n", rc);
        FUZZ_CHECK(rc == TA_EINVAL);
        return 0;
    }
    if (rc == TA_EINVAL)
        fprintf(stderr, "jscan refused what jansson accepts\n");
    FUZZ_CHECK(rc != TA_EINVAL);
    if (!json_is_object(root)) {
        FUZZ_CHECK(json_is_array(root) && rc == 1);
        json_decref(root);
        return 0;
    }
    FUZZ_CHECK(rc == 0);
    const json_t *us = json_object_get(root, "usage");
    FUZZ_CHECK(j.usage_object == json_is_object(us));
    if (json_is_object(us)) {
        FUZZ_CHECK(j.prompt_tokens == pos_int(us, "prompt_tokens"));
        FUZZ_CHECK(j.completion_tokens == pos_int(us, "completion_tokens"));
        FUZZ_CHECK(j.cached_tokens == pos_int(json_object_get(us, "prompt_tokens_details"),
                                              "cached_tokens"));
    }
    const json_t *ch = json_object_get(root, "choices");
    int want = ch == NULL ? TA_JSCAN_ABSENT
               : json_is_array(ch) ? (json_array_size(ch) == 0 ? TA_JSCAN_EMPTY : TA_JSCAN_ITEMS)
                                   : TA_JSCAN_OTHER;
    FUZZ_CHECK(j.choices == want);
    json_decref(root);
    return 0;
}
