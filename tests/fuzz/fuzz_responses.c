/*
 * fuzz_responses.c - the Responses API of worker/responses.h.
 *
 * Input: byte 0 picks the mode (bits 0-1) and its options (bits 2-7):
 *   0 request:  the rest is a Responses body; ta_resp_validate, then
 *               ta_resp_to_chat and ta_resp_to_anth, ta_resp_stateful.
 *               opt bits 0-1: fallback_max 0, 1, 8192 or INT64_MAX.
 *   1 answer:   the rest is a chat.completion; ta_resp_from_chat (a fixed
 *               request echoed), ta_resp_usage on the same bytes.
 *               opt bits 0-1: bound 1 MiB, 64, 400 or 2000 bytes.
 *   2 stream:   byte 1 = seed of the chunk sizes, the rest is a stream;
 *               ta_resp_stream_feed. opt bit 0: translating (chat chunks in)
 *               or pass-through (Responses events in); bits 1-2: max_event
 *               default, 64, 300, 4096; bit 3: usage_from set.
 *   3 usage:    the rest is a Response; ta_resp_usage.
 * Checked (abort on a broken promise):
 *   request:  validate, to_chat and to_anth return 0 or TA_EINVAL only; a
 *             refusal fills a field and a valid UTF-8 message that starts with
 *             the field (when it fits), has no output; to_anth's field is a
 *             Responses param (a member of the body, or under input, tools,
 *             text, tool_choice, instructions); to_anth accepts only what
 *             to_chat accepts, with the same verdict for another model and
 *             fallback; an accepted Messages body has the model, a max_tokens
 *             >= 1 and user/assistant messages that alternate; the input is not
 *             changed;
 *   answer:   TA_EINVAL exactly when the bytes are not an object whose
 *             choices[0].message is an object, out then unchanged; out within
 *             the bound; an answer is a Response with the reference's required
 *             members whose usage is the given one; usage counts >= 0, cached
 *             <= prompt, cache writes <= prompt - cached;
 *   stream:   fed whole and in chunks of 0..64 bytes: same return, and with no
 *             error (or the same TA_EINVAL) the same bytes, usage, done, failed
 *             and counts. Pass-through: out is exactly the input's complete
 *             events. Translating: every event is `event: T` + `data: {JSON
 *             with type T and sequence_number 0, 1, 2...}`; the first is
 *             response.created; when done the last is response.completed or
 *             response.incomplete, when failed response.failed, never both;
 *             content_events = the delta events that went out; the buffered
 *             bytes stay within max_event.
 */
#include <string.h>

#include "fuzz.h"
#include "schema/schema.h"
#include "schema/ta.h"
#include "worker/responses.h"

#include <jansson.h>

static void check_usage(const ta_usage_t *u)
{
    FUZZ_CHECK(u->prompt_tokens >= 0 && u->completion_tokens >= 0 && u->cached_tokens >= 0 &&
               u->cache_write_tokens >= 0);
    FUZZ_CHECK(u->cached_tokens <= u->prompt_tokens && u->cache_write_tokens <= u->prompt_tokens - u->cached_tokens);
    FUZZ_CHECK(u->present || (u->prompt_tokens == 0 && u->completion_tokens == 0));
}

static void check_refusal(const ta_err_t *e)
{
    size_t fl = strlen(e->field);
    FUZZ_CHECK(strlen(e->message) > 0 && ta_utf8_valid(e->message, strlen(e->message)));
    FUZZ_CHECK(fl == 0 || fl + 1 >= sizeof(e->field) || (strncmp(e->message, e->field, fl) == 0 &&
                                                         e->message[fl] == ':'));
}

/* ---- mode 0: request ---------------------------------------------------------------- */

static bool responses_param(const json_t *body, const char *field)
{
    static const char *const roots[] = {"input", "tools", "text", "tool_choice", "instructions"};
    size_t root = strcspn(field, "[.");
    for (size_t i = 0; i < TA_ARRAY_SIZE(roots); i++)
        if (strlen(roots[i]) == root && strncmp(field, roots[i], root) == 0)
            return true;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)body, k, v) {
        if (strncmp(k, field, strlen(field)) == 0 || (k[0] == '\0' && strcmp(field, "\"\"") == 0))
            return true; /* an unknown member's name may be cut; "" is named as such */
    }
    return false;
}

static void check_messages_body(const json_t *o, const char *model)
{
    FUZZ_CHECK(json_is_object(o));
    FUZZ_CHECK(strcmp(json_string_value(json_object_get(o, "model")), model) == 0);
    FUZZ_CHECK(json_integer_value(json_object_get(o, "max_tokens")) >= 1);
    const json_t *msgs = json_object_get(o, "messages");
    FUZZ_CHECK(json_is_array(msgs) && json_array_size(msgs) > 0);
    const char *prev = NULL;
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        FUZZ_CHECK(role != NULL && (strcmp(role, "user") == 0 || strcmp(role, "assistant") == 0));
        FUZZ_CHECK(prev == NULL || strcmp(prev, role) != 0);
        FUZZ_CHECK(json_array_size(json_object_get(m, "content")) > 0);
        prev = role;
    }
}

static void fuzz_request(uint8_t opt, const char *p, size_t n)
{
    static const int64_t fallbacks[] = {0, 1, 8192, INT64_MAX};
    json_t *in = json_loadb(p, n, JSON_REJECT_DUPLICATES, NULL);
    if (in == NULL)
        return;
    json_t *copy = json_deep_copy(in);
    ta_err_t e;
    memset(&e, 0, sizeof(e));
    int rc = ta_resp_validate(in, &e);
    FUZZ_CHECK(rc == 0 || rc == TA_EINVAL);
    (void)ta_resp_stateful(in);
    if (rc != 0) {
        check_refusal(&e);
        goto Exit;
    }
    json_t *chat = NULL, *a1 = NULL, *a2 = NULL;
    ta_err_t ec, e1, e2;
    memset(&ec, 0, sizeof(ec));
    memset(&e1, 0, sizeof(e1));
    memset(&e2, 0, sizeof(e2));
    int rcc = ta_resp_to_chat(in, &chat, &ec);
    int rc1 = ta_resp_to_anth(in, "claude-fuzz", fallbacks[opt & 3], &a1, &e1);
    int rc2 = ta_resp_to_anth(in, "m\xc3\xa9", 0, &a2, &e2);
    FUZZ_CHECK(rcc == 0 || rcc == TA_EINVAL);
    FUZZ_CHECK(rc1 == 0 || rc1 == TA_EINVAL);
    FUZZ_CHECK(rc1 == rc2);
    FUZZ_CHECK(json_equal(in, copy)); /* the body is not changed */
    if (rcc != 0) {
        FUZZ_CHECK(chat == NULL && rc1 == TA_EINVAL);
        FUZZ_CHECK(strcmp(ec.field, e1.field) == 0); /* the same refusal, its param named the same way */
        check_refusal(&ec);
    } else {
        FUZZ_CHECK(json_is_array(json_object_get(chat, "messages")));
    }
    if (rc1 != 0) {
        FUZZ_CHECK(a1 == NULL && a2 == NULL);
        check_refusal(&e1);
        FUZZ_CHECK(e1.field[0] != '\0' && responses_param(in, e1.field));
        FUZZ_CHECK(strcmp(e1.field, e2.field) == 0 && strcmp(e1.message, e2.message) == 0);
    } else {
        check_messages_body(a1, "claude-fuzz");
        check_messages_body(a2, "m\xc3\xa9");
        char *s = json_dumps(a1, JSON_COMPACT);
        FUZZ_CHECK(s != NULL);
        free(s);
    }
    json_decref(chat);
    json_decref(a1);
    json_decref(a2);
Exit:
    json_decref(in);
    json_decref(copy);
}

/* ---- mode 1: answer ------------------------------------------------------------------ */

static void fuzz_answer(uint8_t opt, const char *p, size_t n)
{
    static const size_t bounds[] = {1u << 20, 64, 400, 2000};
    size_t bound = bounds[opt & 3];
    json_t *req = json_pack("{s:s,s:s,s:s,s:i}", "model", "m", "input", "x", "instructions", "be brief",
                            "max_output_tokens", 77);
    ta_usage_t u = {.present = true, .prompt_tokens = 10, .completion_tokens = 3, .cached_tokens = 4,
                    .cache_write_tokens = 2};
    ta_bytes_t out = {0};
    int rc = ta_resp_from_chat(req, p, n, &u, &out, bound);
    FUZZ_CHECK(rc == 0 || rc == TA_EINVAL || rc == TA_ETOOBIG);
    FUZZ_CHECK(out.len <= bound);
    json_t *c = json_loadb(p, n, 0, NULL);
    bool shaped = json_is_object(c) &&
                  json_is_object(json_object_get(json_array_get(json_object_get(c, "choices"), 0), "message"));
    FUZZ_CHECK((rc == TA_EINVAL) == !shaped);
    if (rc == TA_EINVAL)
        FUZZ_CHECK(out.len == 0);
    if (rc == 0) {
        json_t *r = json_loadb(out.p, out.len, JSON_REJECT_DUPLICATES, NULL);
        static const char *const required[] = {"id", "object", "created_at", "error", "incomplete_details",
                                               "instructions", "metadata", "model", "output", "parallel_tool_calls",
                                               "temperature", "tool_choice", "tools", "top_p", "status", "usage"};
        FUZZ_CHECK(json_is_object(r));
        for (size_t i = 0; i < TA_ARRAY_SIZE(required); i++)
            FUZZ_CHECK(json_object_get(r, required[i]) != NULL);
        FUZZ_CHECK(json_array_size(json_object_get(r, "output")) > 0);
        const json_t *ru = json_object_get(r, "usage");
        FUZZ_CHECK(json_integer_value(json_object_get(ru, "input_tokens")) == 10 &&
                   json_integer_value(json_object_get(ru, "output_tokens")) == 3 &&
                   json_integer_value(json_object_get(json_object_get(ru, "input_tokens_details"), "cached_tokens")) ==
                       4);
        FUZZ_CHECK(json_integer_value(json_object_get(r, "max_output_tokens")) == 77);
        json_decref(r);
    }
    ta_usage_t pu;
    int ur = ta_resp_usage(p, n, &pu);
    FUZZ_CHECK(ur == 0 || ur == TA_ENOTFOUND || ur == TA_EINVAL);
    FUZZ_CHECK((ur == 0) == pu.present);
    check_usage(&pu);
    json_decref(c);
    json_decref(req);
    ta_bytes_free(&out);
}

/* ---- mode 2: stream -------------------------------------------------------------------- */

typedef struct run {
    int rc;
    ta_bytes_t out;
    ta_resp_stream_t s;
    ta_usage_t from;
} run_t;

static void feed_all(run_t *r, uint8_t opt, const char *p, size_t n, unsigned seed)
{
    static const size_t max_events[] = {0, 64, 300, 4096};
    memset(r, 0, sizeof(*r));
    json_t *req = json_pack("{s:s,s:s,s:[{s:s,s:s}]}", "model", "m", "input", "x", "tools", "type", "function", "name",
                            "f");
    FUZZ_CHECK(ta_resp_stream_init(&r->s, opt & 1, req, "claude-init", max_events[(opt >> 1) & 3], 1u << 20) == 0);
    json_decref(req);
    if (opt & 8) {
        r->from = (ta_usage_t){.present = true, .prompt_tokens = 9, .completion_tokens = 2, .cached_tokens = 1};
        r->s.usage_from = &r->from;
    }
    if (r->s.resp != NULL) /* the same bytes whatever the clock */
        json_object_set_new(r->s.resp, "created_at", json_integer(1700000000));
    size_t off = 0;
    while (off < n && r->rc == 0) {
        size_t k = n - off;
        if (seed != 0) {
            seed = seed * 1103515245u + 12345u;
            size_t c = (seed >> 16) % 65;
            if (c < k)
                k = c;
        }
        r->rc = ta_resp_stream_feed(&r->s, p + off, k, &r->out);
        off += k;
        if (r->rc == 0)
            FUZZ_CHECK(r->s.fr.cur.len <= r->s.fr.max_event);
    }
    FUZZ_CHECK(r->rc == 0 || r->rc == TA_EINVAL || r->rc == TA_ETOOBIG);
}

static void check_translated(const run_t *r)
{
    const ta_resp_stream_t *s = &r->s;
    const char *p = r->out.p, *end = r->out.len > 0 ? r->out.p + r->out.len : r->out.p;
    int64_t seq = 0, deltas = 0;
    char first[64] = "", last[64] = "";
    int terminal = 0;
    while (p < end) {
        const char *e = memmem(p, (size_t)(end - p), "\n\n", 2);
        FUZZ_CHECK(e != NULL && e - p > 7 && memcmp(p, "event: ", 7) == 0);
        const char *nl = memchr(p, '\n', (size_t)(e - p));
        FUZZ_CHECK(nl != NULL && nl - p - 7 < (ptrdiff_t)sizeof(last));
        snprintf(last, sizeof(last), "%.*s", (int)(nl - p - 7), p + 7);
        if (first[0] == '\0')
            snprintf(first, sizeof(first), "%s", last);
        FUZZ_CHECK(e - nl > 7 && memcmp(nl + 1, "data: ", 6) == 0);
        json_t *j = json_loadb(nl + 7, (size_t)(e - nl - 7), JSON_REJECT_DUPLICATES, NULL);
        FUZZ_CHECK(json_is_object(j));
        FUZZ_CHECK(strcmp(json_string_value(json_object_get(j, "type")), last) == 0);
        FUZZ_CHECK(json_integer_value(json_object_get(j, "sequence_number")) == seq++);
        if (strcmp(last, "response.output_text.delta") == 0 ||
            strcmp(last, "response.function_call_arguments.delta") == 0)
            deltas++;
        if (strcmp(last, "response.completed") == 0 || strcmp(last, "response.incomplete") == 0 ||
            strcmp(last, "response.failed") == 0) {
            terminal++;
            const json_t *resp = json_object_get(j, "response");
            FUZZ_CHECK(json_is_object(resp) && json_is_array(json_object_get(resp, "output")));
            if (s->usage_from != NULL)
                FUZZ_CHECK(json_integer_value(json_object_get(json_object_get(resp, "usage"), "input_tokens")) == 9);
        }
        json_decref(j);
        p = e + 2;
    }
    FUZZ_CHECK(seq == 0 || strcmp(first, "response.created") == 0);
    FUZZ_CHECK(terminal <= 1 && !(s->done && s->failed));
    if (s->done)
        FUZZ_CHECK(strcmp(last, "response.completed") == 0 || strcmp(last, "response.incomplete") == 0);
    if (s->failed)
        FUZZ_CHECK(strcmp(last, "response.failed") == 0);
    FUZZ_CHECK(terminal == (s->done || s->failed ? 1 : 0));
    FUZZ_CHECK(deltas == s->content_events);
    check_usage(&s->usage);
}

static void fuzz_stream(uint8_t opt, const uint8_t *data, size_t size)
{
    if (size < 1)
        return;
    unsigned seed = data[0] | 0x100u;
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    run_t whole, pieces;
    feed_all(&whole, opt, p, n, 0);
    feed_all(&pieces, opt, p, n, seed);
    for (run_t *r = &whole; r != NULL; r = r == &whole ? &pieces : NULL) {
        if (r->rc == TA_ETOOBIG)
            continue;
        if (opt & 1) {
            check_translated(r);
        } else {
            /* pass-through: exactly the complete events, as they came */
            FUZZ_CHECK(r->out.len <= n && (r->out.len == 0 || memcmp(r->out.p, p, r->out.len) == 0));
            FUZZ_CHECK(r->out.len + r->s.fr.cur.len == n);
            check_usage(&r->s.usage);
            FUZZ_CHECK((uint64_t)r->s.content_events <= r->s.events);
        }
    }
    if (whole.rc != TA_ETOOBIG && pieces.rc != TA_ETOOBIG) {
        FUZZ_CHECK(whole.rc == pieces.rc);
        FUZZ_CHECK(whole.out.len == pieces.out.len);
        FUZZ_CHECK(whole.out.len == 0 || memcmp(whole.out.p, pieces.out.p, whole.out.len) == 0);
        const ta_resp_stream_t *a = &whole.s, *b = &pieces.s;
        FUZZ_CHECK(a->done == b->done && a->failed == b->failed && a->failed_rate_limit == b->failed_rate_limit);
        FUZZ_CHECK(a->events == b->events && a->content_events == b->content_events);
        FUZZ_CHECK(a->usage.present == b->usage.present && a->usage.prompt_tokens == b->usage.prompt_tokens &&
                   a->usage.completion_tokens == b->usage.completion_tokens &&
                   a->usage.cached_tokens == b->usage.cached_tokens &&
                   a->usage.cache_write_tokens == b->usage.cache_write_tokens);
    }
    ta_resp_stream_dispose(&whole.s);
    ta_resp_stream_dispose(&pieces.s);
    ta_bytes_free(&whole.out);
    ta_bytes_free(&pieces.out);
}

/* ---- mode 3: usage ------------------------------------------------------------------- */

static void fuzz_usage(const char *p, size_t n)
{
    ta_usage_t u;
    int rc = ta_resp_usage(p, n, &u);
    FUZZ_CHECK(rc == 0 || rc == TA_ENOTFOUND || rc == TA_EINVAL);
    check_usage(&u);
    json_t *j = json_loadb(p, n, 0, NULL);
    FUZZ_CHECK((rc == TA_EINVAL) == !json_is_object(j));
    FUZZ_CHECK((rc == 0) == json_is_object(json_object_get(j, "usage")));
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t opt = data[0] >> 2;
    const char *p = (const char *)data + 1;
    switch (data[0] & 3) {
    case 0:
        fuzz_request(opt, p, size - 1);
        break;
    case 1:
        fuzz_answer(opt, p, size - 1);
        break;
    case 2:
        fuzz_stream(opt, data + 1, size - 1);
        break;
    default:
        fuzz_usage(p, size - 1);
        break;
    }
    return 0;
}
