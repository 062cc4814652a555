/*
 * fuzz_anthropic.c - the Anthropic adapter of worker/anthropic.h.
 *
 * Input: byte 0 picks the mode (bits 0-1) and its options (bits 2-7):
 *   0 request:  the rest is an OpenAI chat body; ta_anth_request.
 *               opt bits 0-1: fallback_max 0, 1, 8192 or INT64_MAX.
 *   1 response: the rest is a Messages answer; ta_anth_response.
 *               opt bits 0-1: bound 1 MiB, 48, 200 or 1000 bytes;
 *               bit 2: out already holds a prefix (the answer is appended).
 *   2 stream:   byte 1 = seed of the chunk sizes, the rest is an Anthropic
 *               SSE stream; ta_anth_stream_feed.
 *               opt bit 0: keep_usage; bits 1-2: max_event default, 64, 300,
 *               4096; bit 3: no model given at init.
 *   3 error:    byte 1 picks an HTTP status, the rest is an error body;
 *               ta_anth_error, ta_anth_error_status.
 * Checked (abort on a broken promise):
 *   request:  only 0 or TA_EINVAL; a refusal has no output, a field whose
 *             root is an OpenAI param and a valid UTF-8 message that starts
 *             with the field (the proxy sends it to the client as JSON); an
 *             accepted body dumps to JSON that loads again, has the given
 *             model, the promised max_tokens, user/assistant messages that
 *             alternate with non-empty content and no empty text block; the
 *             input is not changed; a second run with another model and
 *             fallback gives the same verdict and the same body apart from
 *             model and max_tokens (the proxy checks once with fallback 0 and
 *             builds later: only -ENOMEM may differ);
 *   response: TA_EINVAL exactly when the body is not an object with a content
 *             array, out then unchanged; out within the bound; an answer is a
 *             chat.completion whose usage is the normalized usage
 *             (prompt = input + cache read + cache write, all >= 0), whose
 *             finish_reason is ta_anth_finish_reason(stop_reason), whose tool
 *             arguments are JSON objects; a second run gives the same answer
 *             (apart from "created");
 *   stream:   fed whole and in chunks of 0..64 bytes: same return, and with
 *             no error (or the same TA_EINVAL) the same bytes, usage, done,
 *             failed and counts; every emitted event is `data: <JSON
 *             object>` or `data: [DONE]` (last, once, exactly when done);
 *             failed exactly when an error event went out; usage >= 0,
 *             cached and cache writes <= prompt, no prompt without usage
 *             (deltas before any message_start do count as output),
 *             completion at least the deltas passed on until message_delta;
 *             content_events = the content and argument deltas that went
 *             out; the usage chunk (only
 *             with keep_usage) equals the final usage; the buffered bytes
 *             stay within max_event;
 *   error:    always 0 with {"error":{message,type,code,param:null}}, the
 *             status mapped (529 -> 503), the provider's short message kept.
 */
#include <string.h>

#include "fuzz.h"
#include "schema/schema.h"
#include "schema/ta.h"
#include "worker/anthropic.h"

#include <jansson.h>

/* ---- shared ---------------------------------------------------------------------- */

static int64_t count_of(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (int64_t)json_integer_value(v) : 0;
}

static int64_t sat_add(int64_t a, int64_t b) { return a > INT64_MAX - b ? INT64_MAX : a + b; }

/* stream: deltas before any message_start count as output although no usage
 * is present (the proxy then estimates, from content_events) */
static void check_usage(const ta_usage_t *u, bool stream)
{
    FUZZ_CHECK(u->prompt_tokens >= 0 && u->completion_tokens >= 0);
    FUZZ_CHECK(u->cached_tokens >= 0 && u->cache_write_tokens >= 0);
    FUZZ_CHECK(u->cached_tokens <= u->prompt_tokens && u->cache_write_tokens <= u->prompt_tokens);
    FUZZ_CHECK(u->present || (u->prompt_tokens == 0 && (stream || u->completion_tokens == 0) &&
                              u->cached_tokens == 0 && u->cache_write_tokens == 0));
}

/* the OpenAI usage object `o` says what u says */
static void check_oai_usage(const json_t *o, const ta_usage_t *u)
{
    FUZZ_CHECK(json_is_object(o));
    FUZZ_CHECK(json_integer_value(json_object_get(o, "prompt_tokens")) == u->prompt_tokens);
    FUZZ_CHECK(json_integer_value(json_object_get(o, "completion_tokens")) == u->completion_tokens);
    FUZZ_CHECK(json_integer_value(json_object_get(o, "total_tokens")) ==
               sat_add(u->prompt_tokens, u->completion_tokens));
    FUZZ_CHECK(json_integer_value(json_object_get(json_object_get(o, "prompt_tokens_details"), "cached_tokens")) ==
               u->cached_tokens);
}

/* ---- mode 0: request ---------------------------------------------------------------- */

static bool known_param(const char *field)
{
    static const char *const params[] = {"n", "messages", "tools", "tool_choice", "stop", "temperature", "top_p"};
    size_t root = strcspn(field, "[.");
    for (size_t i = 0; i < TA_ARRAY_SIZE(params); i++)
        if (strlen(params[i]) == root && strncmp(field, params[i], root) == 0)
            return true;
    return false;
}

static void check_text_blocks(const json_t *blocks)
{
    FUZZ_CHECK(json_is_array(blocks) && json_array_size(blocks) > 0);
    size_t i;
    json_t *b;
    json_array_foreach(blocks, i, b) {
        const char *type = json_string_value(json_object_get(b, "type"));
        FUZZ_CHECK(type != NULL);
        if (strcmp(type, "text") == 0) /* Anthropic refuses empty text blocks */
            FUZZ_CHECK(json_string_length(json_object_get(b, "text")) > 0);
    }
}

static void check_messages_body(const json_t *o, const json_t *in, const char *model, int64_t fallback)
{
    FUZZ_CHECK(json_is_object(o));
    FUZZ_CHECK(strcmp(json_string_value(json_object_get(o, "model")), model) == 0);

    json_t *mt = json_object_get(in, "max_completion_tokens");
    if (!json_is_integer(mt) || json_integer_value(mt) < 1)
        mt = json_object_get(in, "max_tokens");
    int64_t want = json_is_integer(mt) && json_integer_value(mt) >= 1 ? (int64_t)json_integer_value(mt)
                   : fallback > 0                                      ? fallback
                                                                       : TA_ANTH_DEFAULT_MAX_TOKENS;
    FUZZ_CHECK(json_is_integer(json_object_get(o, "max_tokens")));
    FUZZ_CHECK(json_integer_value(json_object_get(o, "max_tokens")) == want);

    json_t *msgs = json_object_get(o, "messages");
    FUZZ_CHECK(json_is_array(msgs) && json_array_size(msgs) > 0);
    const char *prev = NULL;
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        FUZZ_CHECK(role != NULL && (strcmp(role, "user") == 0 || strcmp(role, "assistant") == 0));
        FUZZ_CHECK(prev == NULL || strcmp(prev, role) != 0); /* roles alternate */
        check_text_blocks(json_object_get(m, "content"));
        prev = role;
    }
    json_t *sys = json_object_get(o, "system");
    if (sys != NULL)
        check_text_blocks(sys);
    if (json_object_get(o, "stream") != NULL)
        FUZZ_CHECK(json_is_true(json_object_get(o, "stream")) && json_is_true(json_object_get(in, "stream")));
    json_t *n = json_object_get(in, "n");
    FUZZ_CHECK(!json_is_integer(n) || json_integer_value(n) == 1); /* n > 1 must have been refused */
}

static void fuzz_request(uint8_t opt, const char *p, size_t n)
{
    static const int64_t fallbacks[] = {0, 1, 8192, INT64_MAX};
    int64_t fallback = fallbacks[opt & 3];
    /* the way the proxy reads a request body */
    json_t *in = json_loadb(p, n, JSON_REJECT_DUPLICATES, NULL);
    if (in == NULL)
        return;
    json_t *copy = json_deep_copy(in);
    FUZZ_CHECK(copy != NULL);

    json_t *o1 = NULL, *o2 = NULL;
    ta_err_t e1, e2;
    memset(&e1, 0, sizeof(e1));
    memset(&e2, 0, sizeof(e2));
    int rc1 = ta_anth_request(in, "claude-fuzz", fallback, &o1, &e1);
    FUZZ_CHECK(rc1 == 0 || rc1 == TA_EINVAL);
    FUZZ_CHECK(json_equal(in, copy)); /* `oai` is not changed */
    /* the proxy's check: another model, fallback 0 */
    int rc2 = ta_anth_request(in, "m\xc3\xa9", 0, &o2, &e2);
    FUZZ_CHECK(rc2 == rc1);

    if (rc1 == TA_EINVAL) {
        FUZZ_CHECK(o1 == NULL && o2 == NULL);
        FUZZ_CHECK(e1.field[0] != '\0' && known_param(e1.field));
        size_t fl = strlen(e1.field);
        FUZZ_CHECK(strlen(e1.message) > 0);
        FUZZ_CHECK(ta_utf8_valid(e1.message, strlen(e1.message))); /* sent to the client in JSON */
        FUZZ_CHECK(fl + 1 >= sizeof(e1.field) || (strncmp(e1.message, e1.field, fl) == 0 && e1.message[fl] == ':'));
        FUZZ_CHECK(strcmp(e1.field, e2.field) == 0 && strcmp(e1.message, e2.message) == 0 &&
                   strcmp(e1.rule, e2.rule) == 0);
        goto Exit;
    }
    check_messages_body(o1, in, "claude-fuzz", fallback);
    check_messages_body(o2, in, "m\xc3\xa9", 0);

    /* what the proxy sends upstream: dumps, and that loads again to the same tree */
    char *s = json_dumps(o1, JSON_COMPACT);
    FUZZ_CHECK(s != NULL);
    json_t *back = json_loads(s, JSON_REJECT_DUPLICATES, NULL);
    FUZZ_CHECK(back != NULL);
    FUZZ_CHECK(json_equal(back, o1));
    json_decref(back);
    free(s);

    /* the same body apart from model and max_tokens */
    json_object_del(o1, "model");
    json_object_del(o2, "model");
    json_object_del(o1, "max_tokens");
    json_object_del(o2, "max_tokens");
    FUZZ_CHECK(json_equal(o1, o2));
Exit:
    json_decref(o1);
    json_decref(o2);
    json_decref(in);
    json_decref(copy);
}

/* ---- mode 1: response -------------------------------------------------------------- */

#define PREFIX "PRE:"

/* run ta_anth_response; returns rc, *answer the parsed answer (rc 0) */
static int response_once(const char *p, size_t n, size_t bound, bool prefix, ta_usage_t *u, json_t **answer)
{
    ta_bytes_t out = {0};
    size_t pre = prefix ? strlen(PREFIX) : 0;
    *answer = NULL;
    if (prefix)
        FUZZ_CHECK(ta_bytes_append(&out, PREFIX, pre, SIZE_MAX) == 0);
    memset(u, 0x5a, sizeof(*u));
    int rc = ta_anth_response(p, n, &out, bound, u);
    FUZZ_CHECK(rc == 0 || rc == TA_EINVAL || rc == TA_ETOOBIG);
    FUZZ_CHECK(out.len <= bound);
    FUZZ_CHECK(out.len >= pre && (pre == 0 || memcmp(out.p, PREFIX, pre) == 0));
    if (rc == TA_EINVAL)
        FUZZ_CHECK(out.len == pre);
    if (rc == 0) {
        check_usage(u, false);
        *answer = json_loadb(out.p + pre, out.len - pre, JSON_REJECT_DUPLICATES, NULL);
        FUZZ_CHECK(json_is_object(*answer));
    }
    ta_bytes_free(&out);
    return rc;
}

static void fuzz_response(uint8_t opt, const char *p, size_t n)
{
    static const size_t bounds[] = {1u << 20, 48, 200, 1000};
    size_t bound = bounds[opt & 3];
    bool prefix = opt & 4;
    ta_usage_t u1, u2;
    json_t *a1, *a2;
    int rc1 = response_once(p, n, bound, prefix, &u1, &a1);
    int rc2 = response_once(p, n, bound, prefix, &u2, &a2);
    FUZZ_CHECK(rc1 == rc2);

    json_t *in = json_loadb(p, n, 0, NULL);
    bool messages_shape = json_is_object(in) && json_is_array(json_object_get(in, "content"));
    FUZZ_CHECK((rc1 == TA_EINVAL) == !messages_shape);
    if (rc1 != 0)
        goto Exit;

    /* usage normalization, from the input directly */
    json_t *iu = json_object_get(in, "usage");
    FUZZ_CHECK(u1.present == json_is_object(iu));
    if (u1.present) {
        int64_t cr = count_of(iu, "cache_read_input_tokens"), cw = count_of(iu, "cache_creation_input_tokens");
        FUZZ_CHECK(u1.prompt_tokens == sat_add(sat_add(count_of(iu, "input_tokens"), cr), cw));
        FUZZ_CHECK(u1.cached_tokens == cr && u1.cache_write_tokens == cw);
        FUZZ_CHECK(u1.completion_tokens == count_of(iu, "output_tokens"));
        check_oai_usage(json_object_get(a1, "usage"), &u1);
    } else {
        FUZZ_CHECK(json_object_get(a1, "usage") == NULL);
    }
    FUZZ_CHECK(u1.present == u2.present && u1.prompt_tokens == u2.prompt_tokens &&
               u1.completion_tokens == u2.completion_tokens && u1.cached_tokens == u2.cached_tokens &&
               u1.cache_write_tokens == u2.cache_write_tokens);

    /* the chat.completion shape */
    FUZZ_CHECK(strcmp(json_string_value(json_object_get(a1, "object")), "chat.completion") == 0);
    FUZZ_CHECK(json_is_string(json_object_get(a1, "id")) && json_is_string(json_object_get(a1, "model")));
    FUZZ_CHECK(json_is_integer(json_object_get(a1, "created")));
    json_t *choices = json_object_get(a1, "choices");
    FUZZ_CHECK(json_is_array(choices) && json_array_size(choices) == 1);
    json_t *c = json_array_get(choices, 0);
    const char *fr = ta_anth_finish_reason(json_string_value(json_object_get(in, "stop_reason")));
    json_t *jfr = json_object_get(c, "finish_reason");
    FUZZ_CHECK(fr != NULL ? json_is_string(jfr) && strcmp(json_string_value(jfr), fr) == 0 : json_is_null(jfr));
    json_t *msg = json_object_get(c, "message");
    FUZZ_CHECK(strcmp(json_string_value(json_object_get(msg, "role")), "assistant") == 0);
    json_t *calls = json_object_get(msg, "tool_calls");
    json_t *content = json_object_get(msg, "content");
    FUZZ_CHECK(json_is_string(content) || (json_is_null(content) && json_array_size(calls) > 0));
    if (calls != NULL) {
        FUZZ_CHECK(json_is_array(calls) && json_array_size(calls) > 0);
        size_t i;
        json_t *call;
        json_array_foreach(calls, i, call) {
            json_t *fn = json_object_get(call, "function");
            FUZZ_CHECK(json_is_string(json_object_get(call, "id")) && json_is_string(json_object_get(fn, "name")));
            const char *args = json_string_value(json_object_get(fn, "arguments"));
            FUZZ_CHECK(args != NULL);
            json_t *aj = json_loads(args, 0, NULL);
            FUZZ_CHECK(json_is_object(aj));
            json_decref(aj);
        }
    }
    /* deterministic apart from the clock */
    json_object_del(a1, "created");
    json_object_del(a2, "created");
    FUZZ_CHECK(json_equal(a1, a2));
Exit:
    json_decref(in);
    json_decref(a1);
    json_decref(a2);
}

/* ---- mode 2: stream ---------------------------------------------------------------- */

typedef struct run {
    int rc;
    ta_bytes_t out;
    ta_anth_stream_t s;
} run_t;

static void feed_all(run_t *r, uint8_t opt, const char *p, size_t n, unsigned seed)
{
    static const size_t max_events[] = {0, 64, 300, 4096};
    memset(r, 0, sizeof(*r));
    ta_anth_stream_init(&r->s, opt & 1, (opt & 8) ? NULL : "claude-init", max_events[(opt >> 1) & 3]);
    r->s.created = 1700000000; /* the same bytes whatever the clock */
    size_t off = 0;
    while (off < n && r->rc == 0) {
        size_t k = n - off;
        if (seed != 0) {
            seed = seed * 1103515245u + 12345u;
            size_t c = (seed >> 16) % 65; /* 0..64: empty reads too */
            if (c < k)
                k = c;
        }
        r->rc = ta_anth_stream_feed(&r->s, p + off, k, &r->out);
        off += k;
        if (r->rc == 0)
            FUZZ_CHECK(r->s.fr.cur.len <= r->s.fr.max_event); /* what stays buffered is bounded */
    }
    FUZZ_CHECK(r->rc == 0 || r->rc == TA_EINVAL || r->rc == TA_ETOOBIG);
}

/* The events in out: each `data: ` + one line + a blank line. */
static void check_stream_out(const run_t *r)
{
    const ta_anth_stream_t *s = &r->s;
    const char *p = r->out.p, *end = r->out.len > 0 ? r->out.p + r->out.len : r->out.p; /* p may be NULL */
    size_t ndone = 0, nerr = 0, nusage = 0;
    int64_t deltas = 0;
    json_t *last_usage = NULL;
    while (p < end) {
        FUZZ_CHECK(ndone == 0); /* nothing after [DONE] */
        const char *e = memmem(p, (size_t)(end - p), "\n\n", 2);
        FUZZ_CHECK(e != NULL);
        FUZZ_CHECK(e - p >= 6 && memcmp(p, "data: ", 6) == 0);
        const char *d = p + 6;
        size_t dl = (size_t)(e - d);
        FUZZ_CHECK(memchr(d, '\n', dl) == NULL && memchr(d, '\r', dl) == NULL);
        if (dl == 6 && memcmp(d, "[DONE]", 6) == 0) {
            ndone++;
        } else {
            json_t *j = json_loadb(d, dl, JSON_REJECT_DUPLICATES, NULL);
            FUZZ_CHECK(json_is_object(j));
            json_t *err = json_object_get(j, "error");
            if (err != NULL) {
                nerr++;
                FUZZ_CHECK(json_is_string(json_object_get(err, "message")));
                FUZZ_CHECK(json_is_string(json_object_get(err, "type")));
            } else {
                FUZZ_CHECK(strcmp(json_string_value(json_object_get(j, "object")), "chat.completion.chunk") == 0);
                FUZZ_CHECK(json_is_string(json_object_get(j, "id")) && json_is_string(json_object_get(j, "model")));
                FUZZ_CHECK(json_integer_value(json_object_get(j, "created")) == 1700000000);
                json_t *choices = json_object_get(j, "choices");
                FUZZ_CHECK(json_is_array(choices));
                if (json_array_size(choices) == 0) {
                    nusage++;
                    json_decref(last_usage);
                    last_usage = json_incref(json_object_get(j, "usage"));
                    FUZZ_CHECK(last_usage != NULL);
                } else {
                    FUZZ_CHECK(json_array_size(choices) == 1 && json_object_get(j, "usage") == NULL);
                    json_t *delta = json_object_get(json_array_get(choices, 0), "delta");
                    FUZZ_CHECK(json_is_object(delta));
                    json_t *content = json_object_get(delta, "content");
                    if (json_is_string(content) && json_string_length(content) > 0)
                        deltas++;
                    json_t *tc = json_array_get(json_object_get(delta, "tool_calls"), 0);
                    if (tc != NULL && json_object_get(tc, "id") == NULL)
                        deltas++; /* an arguments delta */
                }
            }
            json_decref(j);
        }
        p = e + 2;
    }
    FUZZ_CHECK(ndone == (s->done ? 1u : 0u));
    FUZZ_CHECK(s->failed == (nerr > 0));
    FUZZ_CHECK(deltas == s->content_events);
    FUZZ_CHECK((uint64_t)s->content_events <= s->events);
    check_usage(&s->usage, true);
    if (!s->final_usage)
        FUZZ_CHECK(s->usage.completion_tokens >= s->content_events);
    if (!s->keep_usage)
        FUZZ_CHECK(nusage == 0);
    else if (s->done) /* nothing counts after message_stop: the usage chunk is the final usage */
        check_oai_usage(last_usage, &s->usage);
    json_decref(last_usage);
}

static void fuzz_stream(uint8_t opt, const uint8_t *data, size_t size)
{
    if (size < 1)
        return;
    unsigned seed = data[0] | 0x100u; /* never 0: 0 means one piece */
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    run_t whole, pieces;
    feed_all(&whole, opt, p, n, 0);
    feed_all(&pieces, opt, p, n, seed);
    if (whole.rc == 0 || whole.rc == TA_EINVAL)
        check_stream_out(&whole);
    if (pieces.rc == 0 || pieces.rc == TA_EINVAL)
        check_stream_out(&pieces);
    /* chunking must not change what the client sees (a too big event may be
     * caught in one feeding only: the whole one holds it all at once) */
    if (whole.rc != TA_ETOOBIG && pieces.rc != TA_ETOOBIG) {
        FUZZ_CHECK(whole.rc == pieces.rc);
        FUZZ_CHECK(whole.out.len == pieces.out.len);
        FUZZ_CHECK(whole.out.len == 0 || memcmp(whole.out.p, pieces.out.p, whole.out.len) == 0);
        const ta_anth_stream_t *a = &whole.s, *b = &pieces.s;
        FUZZ_CHECK(a->done == b->done && a->failed == b->failed && a->started == b->started);
        FUZZ_CHECK(a->events == b->events && a->content_events == b->content_events);
        FUZZ_CHECK(a->usage.present == b->usage.present && a->usage.prompt_tokens == b->usage.prompt_tokens &&
                   a->usage.completion_tokens == b->usage.completion_tokens &&
                   a->usage.cached_tokens == b->usage.cached_tokens &&
                   a->usage.cache_write_tokens == b->usage.cache_write_tokens);
    }
    ta_anth_stream_dispose(&whole.s);
    ta_anth_stream_dispose(&pieces.s);
    ta_bytes_free(&whole.out);
    ta_bytes_free(&pieces.out);
}

/* ---- mode 3: error ----------------------------------------------------------------- */

static void fuzz_error(const uint8_t *data, size_t size)
{
    static const int statuses[] = {400, 401, 403, 404, 413, 429, 500, 502, 503, 504, 529, 200, 302, 418, 599, 0};
    if (size < 1)
        return;
    int status = statuses[data[0] & 15];
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    FUZZ_CHECK(ta_anth_error_status(status) == (status == 529 ? 503 : status));
    ta_bytes_t out = {0};
    FUZZ_CHECK(ta_anth_error(status, p, n, &out) == 0);
    json_t *j = json_loadb(out.p, out.len, JSON_REJECT_DUPLICATES, NULL);
    json_t *e = json_object_get(j, "error");
    FUZZ_CHECK(json_is_object(e));
    const char *msg = json_string_value(json_object_get(e, "message"));
    FUZZ_CHECK(msg != NULL && json_is_string(json_object_get(e, "type")) &&
               json_is_string(json_object_get(e, "code")));
    FUZZ_CHECK(json_is_null(json_object_get(e, "param")));
    if (status >= 500)
        FUZZ_CHECK(strcmp(json_string_value(json_object_get(e, "type")), "upstream_error") == 0);
    /* the provider's message, kept when short */
    json_t *in = n > 0 ? json_loadb(p, n, 0, NULL) : NULL;
    json_t *am = json_object_get(json_object_get(in, "error"), "message");
    if (json_is_string(am) && json_string_length(am) < 256 && strlen(json_string_value(am)) == json_string_length(am))
        FUZZ_CHECK(strcmp(msg, json_string_value(am)) == 0);
    json_decref(in);
    json_decref(j);
    ta_bytes_free(&out);
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
        fuzz_response(opt, p, size - 1);
        break;
    case 2:
        fuzz_stream(opt, data + 1, size - 1);
        break;
    default:
        fuzz_error(data + 1, size - 1);
        break;
    }
    return 0;
}
