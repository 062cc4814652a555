/*
 * sse.c - see sse.h. Events end at an empty line ("\n\n" or "\r\n\r\n");
 * bytes are copied once, from the provider's buffer into `out`, event by
 * event, so a dropped event never reaches the client in part.
 */
#include "worker/sse.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "schema/ta.h"
#include "worker/jscan.h"

int ta_bytes_append(ta_bytes_t *b, const char *p, size_t n, size_t bound)
{
    if (n == 0)
        return 0;
    if (b->len + n > bound)
        return TA_ETOOBIG;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n)
            cap *= 2;
        if (cap > bound)
            cap = bound;
        char *q = realloc(b->p, cap);
        if (q == NULL)
            return -ENOMEM;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

void ta_bytes_free(ta_bytes_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

int ta_bytes_append_json(ta_bytes_t *out, json_t *j, size_t bound, const char *pre, const char *post)
{
    if (j == NULL)
        return -ENOMEM;
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (s == NULL)
        return -ENOMEM;
    int rc = ta_bytes_append(out, pre, strlen(pre), bound);
    if (rc == 0)
        rc = ta_bytes_append(out, s, strlen(s), bound);
    if (rc == 0)
        rc = ta_bytes_append(out, post, strlen(post), bound);
    free(s);
    return rc;
}

bool ta_sse_event_data(const char *ev, size_t n, const char **data, size_t *len)
{
    for (const char *line = ev, *end = ev + n; line < end;) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        const char *le = nl != NULL ? nl : end;
        size_t ll = (size_t)(le - line);
        if (ll > 0 && line[ll - 1] == '\r')
            ll--;
        if (ll >= 5 && memcmp(line, "data:", 5) == 0) {
            *data = line + 5;
            *len = ll - 5;
            if (*len > 0 && **data == ' ') {
                (*data)++;
                (*len)--;
            }
            return true;
        }
        line = nl != NULL ? nl + 1 : end;
    }
    *data = NULL;
    *len = 0;
    return false;
}

void ta_sse_framer_init(ta_sse_framer_t *f, size_t max_event)
{
    memset(f, 0, sizeof(*f));
    f->max_event = max_event ? max_event : TA_SSE_DEFAULT_MAX_EVENT;
}

void ta_sse_framer_dispose(ta_sse_framer_t *f) { ta_bytes_free(&f->cur); }

int ta_sse_framer_feed(ta_sse_framer_t *f, const char *p, size_t n, ta_sse_event_cb cb, void *arg,
                       ta_bytes_t *out)
{
    int ret = ta_bytes_append(&f->cur, p, n, f->max_event + n);
    if (ret != 0)
        return ret;
    size_t consumed = 0; /* cur[0..consumed) already handled */
    char *b = f->cur.p;
    while (f->scan < f->cur.len) {
        char *nl = memchr(b + f->scan, '\n', f->cur.len - f->scan);
        if (nl == NULL) {
            f->scan = f->cur.len;
            break;
        }
        size_t end = (size_t)(nl - b) + 1;
        size_t ll = end - 1 - f->line_start;
        if (ll > 0 && b[f->line_start + ll - 1] == '\r')
            ll--;
        if (ll == 0) {
            /* empty line: the event is cur[consumed..end) */
            if ((ret = cb(arg, b + consumed, end - consumed, out)) != 0)
                return ret;
            consumed = end;
        }
        f->scan = end;
        f->line_start = end;
    }
    if (consumed > 0) {
        memmove(b, b + consumed, f->cur.len - consumed);
        f->cur.len -= consumed;
        f->scan -= consumed;
        f->line_start -= consumed;
    }
    if (f->cur.len > f->max_event)
        return TA_ETOOBIG;
    return 0;
}

void ta_sse_init(ta_sse_t *s, bool keep_usage, size_t max_event)
{
    memset(s, 0, sizeof(*s));
    s->keep_usage = keep_usage;
    ta_sse_framer_init(&s->fr, max_event);
}

void ta_sse_dispose(ta_sse_t *s) { ta_sse_framer_dispose(&s->fr); }

/* Usage from the scanner (worker/jscan.h: the texts json_loadb accepts, no
 * tree built): usage.prompt_tokens, .completion_tokens and
 * .prompt_tokens_details.cached_tokens when positive integers, else 0; cached
 * never above prompt. */
static bool usage_from_scan(const ta_jscan_usage_t *j, ta_usage_t *u)
{
    if (!j->usage_object)
        return false;
    u->present = true;
    u->prompt_tokens = j->prompt_tokens;
    u->completion_tokens = j->completion_tokens;
    u->cached_tokens = j->cached_tokens;
    u->cache_write_tokens = 0;
    if (u->cached_tokens > u->prompt_tokens)
        u->cached_tokens = u->prompt_tokens;
    return true;
}

int ta_usage_parse(const char *json, size_t len, ta_usage_t *u)
{
    ta_jscan_usage_t j;
    if (ta_jscan_usage(json, len, &j) != 0)
        return TA_EINVAL;
    return usage_from_scan(&j, u) ? 0 : TA_ENOTFOUND;
}

/* Does the data carry a usage object (not "usage":null)? */
static bool has_usage_object(const char *d, size_t n)
{
    const char *end = d + n, *p = d;
    while (p < end && (p = memmem(p, (size_t)(end - p), "\"usage\"", 7)) != NULL) {
        p += 7;
        while (p < end && (*p == ' ' || *p == ':' || *p == '\t'))
            p++;
        if (p < end && *p == '{')
            return true;
    }
    return false;
}

/* Remove every `,"usage":null` (what include_usage adds to each chunk). */
static size_t strip_usage_null(char *d, size_t n)
{
    static const char pat[] = ",\"usage\":null";
    const size_t pl = sizeof(pat) - 1;
    char *p = d, *end = d + n;
    while ((p = memmem(p, (size_t)(end - p), pat, pl)) != NULL) {
        memmove(p, p + pl, (size_t)(end - (p + pl)));
        end -= pl;
    }
    return (size_t)(end - d);
}

/* data is {"error": ...} (OpenAI's error event inside a stream)? */
static bool is_error_event(const char *d, size_t n)
{
    size_t i = 0;
    while (i < n && (d[i] == ' ' || d[i] == '\t'))
        i++;
    if (i >= n || d[i] != '{')
        return false;
    for (i++; i < n && (d[i] == ' ' || d[i] == '\t' || d[i] == '\r' || d[i] == '\n'); i++)
        ;
    return n - i >= 7 && memcmp(d + i, "\"error\"", 7) == 0;
}

/* One complete event ev[0..n). Appends it to out unless it is dropped. */
static int handle_event(ta_sse_t *s, char *ev, size_t n, ta_bytes_t *out)
{
    s->events++;
    /* the data line (OpenAI sends one per event) */
    const char *data;
    size_t dlen;
    if (ta_sse_event_data(ev, n, &data, &dlen)) {
        if (dlen == 6 && memcmp(data, "[DONE]", 6) == 0) {
            s->done = true;
        } else if (is_error_event(data, dlen)) {
            /* the provider's error in the middle of the stream: passed on as it is */
            s->error_event = true;
            s->error_rate_limit = memmem(data, dlen, "rate_limit", 10) != NULL;
        } else {
            bool empty_choices = memmem(data, dlen, "\"choices\":[]", 12) != NULL;
            if (has_usage_object(data, dlen)) {
                ta_jscan_usage_t j;
                int jr = ta_jscan_usage(data, dlen, &j);
                if (jr >= 0) { /* valid JSON (an array reads as no usage, no choices) */
                    ta_usage_t u = {0};
                    if (usage_from_scan(&j, &u))
                        s->usage = u;
                    empty_choices = j.choices == TA_JSCAN_ABSENT || j.choices == TA_JSCAN_EMPTY;
                }
                if (empty_choices && !s->keep_usage) {
                    s->dropped++;
                    return 0;
                }
            }
            if (!empty_choices)
                s->content_events++;
            if (!s->keep_usage)
                n = strip_usage_null(ev, n);
        }
    }
    return ta_bytes_append(out, ev, n, SIZE_MAX);
}

static int sse_event(void *arg, char *ev, size_t len, ta_bytes_t *out)
{
    return handle_event(arg, ev, len, out);
}

int ta_sse_feed(ta_sse_t *s, const char *p, size_t n, ta_bytes_t *out)
{
    return ta_sse_framer_feed(&s->fr, p, n, sse_event, s, out);
}

int ta_sse_finish(ta_sse_t *s, ta_bytes_t *out)
{
    int ret = ta_bytes_append(out, s->fr.cur.p, s->fr.cur.len, SIZE_MAX);
    s->fr.cur.len = s->fr.scan = s->fr.line_start = 0;
    return ret;
}
