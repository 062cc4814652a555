/*
 * tokens.c - see tokens.h for the rule and why it is safe.
 */
#include "worker/tokens.h"

#include <string.h>

#define MAX_DEPTH 32 /* bodies are depth-checked by jansson already; this bounds our walk */

struct acc {
    int64_t bytes, exact, images;
};

/* every string value and object key under v */
static void walk(const json_t *v, struct acc *a, int depth)
{
    if (depth > MAX_DEPTH)
        return;
    switch (json_typeof(v)) {
    case JSON_STRING:
        a->bytes += (int64_t)json_string_length(v);
        break;
    case JSON_OBJECT: {
        const char *k;
        json_t *x;
        const char *type = json_string_value(json_object_get(v, "type"));
        if (type != NULL && (strcmp(type, "image_url") == 0 || strcmp(type, "input_image") == 0 ||
                             strcmp(type, "image") == 0)) {
            a->images++;
            break; /* the URL / base64 bytes are not the image's token cost */
        }
        json_object_foreach((json_t *)v, k, x) {
            a->bytes += (int64_t)strlen(k);
            walk(x, a, depth + 1);
        }
        break;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) walk(x, a, depth + 1);
        break;
    }
    case JSON_INTEGER:
        /* only inside token-id inputs (see input_walk); elsewhere a few bytes */
        a->bytes += 2;
        break;
    default:
        break;
    }
}

/* prompt / input: string, [string], [int] (token ids) or [[int]] */
static void input_walk(const json_t *v, struct acc *a)
{
    if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            if (json_is_integer(x))
                a->exact++;
            else if (json_is_array(x))
                input_walk(x, a);
            else
                walk(x, a, 1);
        }
    } else if (v != NULL) {
        walk(v, a, 1);
    }
}

void ta_tokens_prompt(const json_t *body, ta_tokens_t *out)
{
    struct acc a = {0};
    int64_t messages = 0;
    const json_t *msgs = json_object_get(body, "messages");
    if (json_is_array(msgs)) {
        messages = (int64_t)json_array_size(msgs);
        walk(msgs, &a, 0);
    }
    static const char *const extra[] = {"tools", "functions", "tool_choice", "response_format"};
    for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++) {
        const json_t *x = json_object_get(body, extra[i]);
        if (x != NULL && !json_is_string(x))
            walk(x, &a, 0);
    }
    input_walk(json_object_get(body, "prompt"), &a);
    input_walk(json_object_get(body, "input"), &a);

    int64_t fixed = messages * TA_TOKENS_PER_MESSAGE + TA_TOKENS_REPLY_PRIMING;
    out->messages = messages;
    out->text_bytes = a.bytes;
    out->images = a.images;
    out->estimate = ta_tokens_estimate_bytes(a.bytes) + a.exact + fixed + a.images * 765;
    out->upper = a.bytes + a.exact + fixed + a.images * TA_TOKENS_IMAGE_MAX;
}
