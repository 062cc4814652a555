/*
 * sse.h - the OpenAI server-sent-events stream as it passes through the proxy:
 * a bounded event splitter that forwards complete events, picks the usage
 * out of the provider's usage chunk, and removes what the gateway itself
 * asked for (the usage-only chunk and the "usage":null members that
 * stream_options.include_usage adds) when the client did not ask for it.
 * Also the usage of a non-streaming answer.
 *
 * No h2o, no curl: plain bytes in, bytes out. Callable from any process.
 */
#ifndef TA_SSE_H
#define TA_SSE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ta_usage {
    bool present;               /* the provider reported usage */
    int64_t prompt_tokens;      /* every input token (cached ones included, OpenAI style) */
    int64_t completion_tokens;
    int64_t cached_tokens;      /* prompt_tokens_details.cached_tokens */
    int64_t cache_write_tokens; /* not reported by OpenAI-compatible providers: 0 */
} ta_usage_t;

/* A growable byte buffer with a hard bound. */
typedef struct ta_bytes {
    char *p;
    size_t len, cap;
} ta_bytes_t;
/** Append; TA_ETOOBIG past `bound` bytes in total, -ENOMEM. */
int ta_bytes_append(ta_bytes_t *b, const char *p, size_t n, size_t bound);
void ta_bytes_free(ta_bytes_t *b);
/** Append pre, the compact JSON text of j, then post (the translators'
 *  answers and events). Steals j (NULL reads as -ENOMEM). Returns 0,
 *  TA_ETOOBIG past `bound`, -ENOMEM. */
int ta_bytes_append_json(ta_bytes_t *out, json_t *j, size_t bound, const char *pre, const char *post);

#define TA_SSE_DEFAULT_MAX_EVENT (4u << 20)

/* Event framing shared by the OpenAI pass-through (ta_sse_t) and the
 * Anthropic translator (worker/anthropic.h): provider bytes in, whole events
 * out. An event ends at an empty line ("\n\n" or "\r\n\r\n") and is handed to
 * the callback with that line; an incomplete event stays buffered, at most
 * max_event bytes. */
typedef struct ta_sse_framer {
    size_t max_event;     /* bound of one event's bytes */
    ta_bytes_t cur;       /* bytes of the event being received */
    size_t scan;          /* cur[0..scan) holds no line end we have not handled */
    size_t line_start;    /* start of the current line in cur */
} ta_sse_framer_t;

/** One complete event ev[0..len) (valid during the call); returns 0 or an error
 *  that stops the feed and is returned by it. */
typedef int (*ta_sse_event_cb)(void *arg, char *ev, size_t len, ta_bytes_t *out);

/** The first `data:` line of one event ev[0..n) (the framer's callback
 *  argument): *data and *len its value, one leading space removed. Returns
 *  false when the event has none (a comment, a blank event). */
bool ta_sse_event_data(const char *ev, size_t n, const char **data, size_t *len);

/** max_event 0 = TA_SSE_DEFAULT_MAX_EVENT. */
void ta_sse_framer_init(ta_sse_framer_t *f, size_t max_event);
void ta_sse_framer_dispose(ta_sse_framer_t *f);
/** Feed bytes; cb runs for each event completed by them. Returns 0, cb's
 *  error, TA_ETOOBIG when the buffered event grows past max_event, or -ENOMEM. */
int ta_sse_framer_feed(ta_sse_framer_t *f, const char *p, size_t n, ta_sse_event_cb cb, void *arg,
                       ta_bytes_t *out);

typedef struct ta_sse {
    bool keep_usage;      /* the client asked for stream_options.include_usage */
    ta_sse_framer_t fr;
    bool done;            /* "data: [DONE]" seen */
    ta_usage_t usage;     /* from the usage chunk, if any */
    int64_t content_events; /* events with a non-empty choices array (about one token each) */
    uint64_t events;      /* complete events seen */
    uint64_t dropped;     /* events removed (usage-only chunks the client did not ask for) */
    bool error_event;     /* an error event ({"error": ...}) was passed on: the stream ended in an error */
    bool error_rate_limit; /* ... and it was a rate limit (type or code rate_limit*) */
} ta_sse_t;

void ta_sse_init(ta_sse_t *s, bool keep_usage, size_t max_event);
void ta_sse_dispose(ta_sse_t *s);

/** Feed provider bytes. Each complete event the client should see is appended,
 *  as it arrived (minus the removals above), to out; an incomplete event stays
 *  inside until its end arrives. Returns 0, TA_ETOOBIG when one event grows
 *  past max_event, or -ENOMEM. */
int ta_sse_feed(ta_sse_t *s, const char *p, size_t n, ta_bytes_t *out);

/** End of the provider's stream: appends a trailing incomplete event as is. */
int ta_sse_finish(ta_sse_t *s, ta_bytes_t *out);

/** Usage of one JSON object (a chunk or a whole non-streaming answer):
 *  `usage.prompt_tokens`, `usage.completion_tokens`,
 *  `usage.prompt_tokens_details.cached_tokens`. Returns 0 with u->present set
 *  when a usage object was there, TA_ENOTFOUND when none, TA_EINVAL when the
 *  bytes are not a JSON object. */
int ta_usage_parse(const char *json, size_t len, ta_usage_t *u);

#endif
