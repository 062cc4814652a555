/*
 * fuzz_sse.c - the SSE splitter of worker/sse.h on provider bytes.
 *
 * Input: byte 0 = options (bit 0 keep_usage, bits 1-2 pick max_event: the
 * default or a small bound that the fuzzer can reach), byte 1 = seed of the
 * chunk sizes, the rest = the provider's stream. The stream is fed twice: in
 * one piece and in pseudo-random chunks (1..64 bytes, the way TCP reads cut
 * it). Checked:
 *   - with no error, both feedings give the same client bytes, usage, done,
 *     and event counts (chunking must not change what the client sees);
 *   - with keep_usage nothing is removed: the client bytes equal the input;
 *   - counts are consistent (dropped <= events; content_events <= events);
 *   - usage numbers are never negative and cached <= prompt.
 * ta_usage_parse also runs on the whole stream (non-streaming answers).
 */
#include <string.h>

#include "fuzz.h"
#include "schema/ta.h"
#include "worker/sse.h"

typedef struct run {
    int rc;
    ta_bytes_t out;
    ta_sse_t s;
} run_t;

static void feed_all(run_t *r, bool keep, size_t max_event, const char *p, size_t n,
                     unsigned seed)
{
    memset(r, 0, sizeof(*r));
    ta_sse_init(&r->s, keep, max_event);
    size_t off = 0;
    while (off < n && r->rc == 0) {
        size_t k = n - off;
        if (seed != 0) {
            seed = seed * 1103515245u + 12345u;
            size_t c = 1 + ((seed >> 16) % 64);
            if (c < k)
                k = c;
        }
        r->rc = ta_sse_feed(&r->s, p + off, k, &r->out);
        off += k;
    }
    if (r->rc == 0)
        r->rc = ta_sse_finish(&r->s, &r->out);
    FUZZ_CHECK(r->rc == 0 || r->rc == TA_ETOOBIG);
}

static void check_usage(const ta_usage_t *u)
{
    FUZZ_CHECK(u->prompt_tokens >= 0 && u->completion_tokens >= 0 && u->cached_tokens >= 0);
    FUZZ_CHECK(u->cached_tokens <= u->prompt_tokens);
    FUZZ_CHECK(u->present || (u->prompt_tokens == 0 && u->completion_tokens == 0));
}

static void dispose(run_t *r)
{
    ta_sse_dispose(&r->s);
    ta_bytes_free(&r->out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t max_events[] = {0, 64, 300, 4096};
    if (size < 2)
        return 0;
    bool keep = data[0] & 1;
    size_t max_event = max_events[(data[0] >> 1) & 3];
    unsigned seed = data[1] | 0x100u; /* never 0: 0 means one piece */
    const char *p = (const char *)data + 2;
    size_t n = size - 2;
    run_t whole, pieces;

    feed_all(&whole, keep, max_event, p, n, 0);
    feed_all(&pieces, keep, max_event, p, n, seed);
    for (run_t *r = &whole; r != NULL; r = r == &whole ? &pieces : NULL) {
        FUZZ_CHECK(r->s.dropped <= r->s.events);
        FUZZ_CHECK((uint64_t)r->s.content_events <= r->s.events);
        check_usage(&r->s.usage);
        FUZZ_CHECK(r->out.len <= n);
        if (r->rc == 0 && keep) {
            FUZZ_CHECK(r->s.dropped == 0);
            FUZZ_CHECK(r->out.len == n && (n == 0 || memcmp(r->out.p, p, n) == 0));
        }
    }
    if (whole.rc == 0 && pieces.rc == 0) {
        FUZZ_CHECK(whole.out.len == pieces.out.len);
        FUZZ_CHECK(whole.out.len == 0 || memcmp(whole.out.p, pieces.out.p, whole.out.len) == 0);
        FUZZ_CHECK(whole.s.events == pieces.s.events && whole.s.dropped == pieces.s.dropped);
        FUZZ_CHECK(whole.s.content_events == pieces.s.content_events);
        FUZZ_CHECK(whole.s.done == pieces.s.done);
        const ta_usage_t *a = &whole.s.usage, *b = &pieces.s.usage;
        FUZZ_CHECK(a->present == b->present && a->prompt_tokens == b->prompt_tokens &&
                   a->completion_tokens == b->completion_tokens &&
                   a->cached_tokens == b->cached_tokens &&
                   a->cache_write_tokens == b->cache_write_tokens);
    }
    dispose(&whole);
    dispose(&pieces);

    ta_usage_t u;
    memset(&u, 0, sizeof(u));
    int rc = ta_usage_parse(p, n, &u);
    FUZZ_CHECK(rc == 0 || rc == TA_ENOTFOUND || rc == TA_EINVAL);
    FUZZ_CHECK((rc == 0) == u.present);
    check_usage(&u);
    return 0;
}
