/*
 * jscan.c - see jscan.h. A recursive descent over the bytes, mirroring
 * jansson 2.14's load.c decision for decision (which texts are errors), with
 * a context per value saying which usage field, if any, it is.
 */
#include "worker/jscan.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "schema/ta.h"

#define MAX_DEPTH 2048 /* jansson's JSON_PARSER_MAX_DEPTH */

enum ctx { C_NONE, C_ROOT, C_USAGE, C_DETAILS, C_PROMPT, C_COMPLETION, C_CACHED, C_CHOICES };

typedef struct scan {
    const unsigned char *p, *end;
    ta_jscan_usage_t *u;
} scan_t;

static inline bool is_digit(unsigned c) { return c >= '0' && c <= '9'; }

static inline void skip_ws(scan_t *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

/* Length of the UTF-8 sequence at p (jansson's utf8_check_first/full: no
 * overlong forms, no surrogates, nothing past U+10FFFF), 0 if invalid. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned u = p[0];
    size_t n;
    uint32_t v;
    if (u >= 0xC2 && u <= 0xDF) {
        n = 2;
        v = u & 0x1F;
    } else if (u >= 0xE0 && u <= 0xEF) {
        n = 3;
        v = u & 0x0F;
    } else if (u >= 0xF0 && u <= 0xF4) {
        n = 4;
        v = u & 0x07;
    } else {
        return 0;
    }
    if ((size_t)(end - p) < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
        v = (v << 6) | (p[i] & 0x3F);
    }
    if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF) || (n == 3 && v < 0x800) || (n == 4 && v < 0x10000))
        return 0;
    return n;
}

/* jansson quirk, kept so both accept the same texts: after a number or a
 * literal its lexer "ungets" the byte that ended the token, and a NUL byte
 * ungot that way is dropped (stream_get takes a NUL in its buffer for
 * "empty"), so one raw NUL right after such a token is ignored. */
static inline void skip_nul(scan_t *s)
{
    if (s->p < s->end && *s->p == '\0')
        s->p++;
}

static int hex4(const unsigned char *p, const unsigned char *end, uint32_t *v)
{
    if (end - p < 4)
        return -1;
    uint32_t r = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i];
        r <<= 4;
        if (is_digit(c))
            r |= c - '0';
        else if (c >= 'a' && c <= 'f')
            r |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            r |= c - 'A' + 10;
        else
            return -1;
    }
    *v = r;
    return 0;
}

static inline void put(char *buf, size_t cap, size_t *n, unsigned char c)
{
    if (*n < cap)
        buf[*n] = (char)c;
    (*n)++;
}

/* The string at s->p (its opening quote). Decoded bytes go to buf while they
 * fit; *len is the whole decoded length. */
static int scan_string(scan_t *s, char *buf, size_t cap, size_t *len)
{
    const unsigned char *p = s->p + 1, *end = s->end;
    size_t n = 0;
    for (;;) {
        if (p >= end)
            return -1;
        unsigned c = *p;
        if (c == '"') {
            p++;
            break;
        }
        if (c < 0x20)
            return -1;
        if (c == '\\') {
            if (end - p < 2)
                return -1;
            unsigned e = p[1];
            if (e == 'u') {
                uint32_t cp, lo;
                if (hex4(p + 2, end, &cp) != 0)
                    return -1;
                p += 6;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, end, &lo) != 0 || lo < 0xDC00 ||
                        lo > 0xDFFF)
                        return -1;
                    p += 6;
                    cp = ((cp - 0xD800) << 10) + (lo - 0xDC00) + 0x10000;
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    return -1;
                }
                if (cp == 0) /* jansson refuses NUL in keys and (without JSON_ALLOW_NUL) in values */
                    return -1;
                if (cp < 0x80) {
                    put(buf, cap, &n, (unsigned char)cp);
                } else if (cp < 0x800) {
                    put(buf, cap, &n, (unsigned char)(0xC0 | (cp >> 6)));
                    put(buf, cap, &n, (unsigned char)(0x80 | (cp & 0x3F)));
                } else if (cp < 0x10000) {
                    put(buf, cap, &n, (unsigned char)(0xE0 | (cp >> 12)));
                    put(buf, cap, &n, (unsigned char)(0x80 | ((cp >> 6) & 0x3F)));
                    put(buf, cap, &n, (unsigned char)(0x80 | (cp & 0x3F)));
                } else {
                    put(buf, cap, &n, (unsigned char)(0xF0 | (cp >> 18)));
                    put(buf, cap, &n, (unsigned char)(0x80 | ((cp >> 12) & 0x3F)));
                    put(buf, cap, &n, (unsigned char)(0x80 | ((cp >> 6) & 0x3F)));
                    put(buf, cap, &n, (unsigned char)(0x80 | (cp & 0x3F)));
                }
                continue;
            }
            unsigned d;
            switch (e) {
            case '"': case '\\': case '/': d = e; break;
            case 'b': d = '\b'; break;
            case 'f': d = '\f'; break;
            case 'n': d = '\n'; break;
            case 'r': d = '\r'; break;
            case 't': d = '\t'; break;
            default: return -1;
            }
            put(buf, cap, &n, (unsigned char)d);
            p += 2;
            continue;
        }
        if (c < 0x80) {
            put(buf, cap, &n, (unsigned char)c);
            p++;
            continue;
        }
        size_t k = utf8_len(p, end);
        if (k == 0)
            return -1;
        for (size_t i = 0; i < k; i++)
            put(buf, cap, &n, p[i]);
        p += k;
    }
    s->p = p;
    *len = n;
    return 0;
}

/* A number at s->p; *ival is set for an integer token (jansson's
 * TOKEN_INTEGER: no fraction, no exponent), *is_int says which. */
static int scan_number(scan_t *s, int64_t *ival, bool *is_int)
{
    const unsigned char *p = s->p, *end = s->end, *start = s->p;
    bool neg = false, real = false;
    if (p < end && *p == '-') {
        neg = true;
        p++;
    }
    const unsigned char *digits = p;
    if (p < end && *p == '0') {
        p++;
        if (p < end && is_digit(*p))
            return -1;
    } else if (p < end && is_digit(*p)) {
        while (p < end && is_digit(*p))
            p++;
    } else {
        return -1;
    }
    const unsigned char *int_end = p;
    if (p < end && *p == '.') {
        p++;
        if (p >= end || !is_digit(*p))
            return -1;
        while (p < end && is_digit(*p))
            p++;
        real = true;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || !is_digit(*p))
            return -1;
        while (p < end && is_digit(*p))
            p++;
        real = true;
    }
    s->p = p;
    *is_int = !real;
    if (!real) {
        /* strtoll's range: ERANGE is jansson's "too big integer" */
        uint64_t lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, v = 0;
        for (const unsigned char *q = digits; q < int_end; q++) {
            unsigned dg = *q - '0';
            if (v > (lim - dg) / 10)
                return -1;
            v = v * 10 + dg;
        }
        *ival = neg ? (int64_t)(0 - v) : (int64_t)v;
        return 0;
    }
    /* jansson's jsonp_strtod: only an overflow to +-HUGE_VAL is an error */
    char small[64], *tmp = small;
    size_t tl = (size_t)(p - start);
    if (tl >= sizeof(small) && (tmp = malloc(tl + 1)) == NULL)
        return -1;
    memcpy(tmp, start, tl);
    tmp[tl] = '\0';
    errno = 0;
    double d = strtod(tmp, NULL);
    int err = errno;
    if (tmp != small)
        free(tmp);
    if ((d == HUGE_VAL || d == -HUGE_VAL) && err == ERANGE)
        return -1;
    return 0;
}

static int key_ctx(int parent, const char *k, size_t n)
{
#define IS(lit) (n == sizeof(lit) - 1 && memcmp(k, lit, n) == 0)
    switch (parent) {
    case C_ROOT:
        return IS("usage") ? C_USAGE : IS("choices") ? C_CHOICES : C_NONE;
    case C_USAGE:
        return IS("prompt_tokens")           ? C_PROMPT
               : IS("completion_tokens")     ? C_COMPLETION
               : IS("prompt_tokens_details") ? C_DETAILS
                                             : C_NONE;
    case C_DETAILS:
        return IS("cached_tokens") ? C_CACHED : C_NONE;
    default:
        return C_NONE;
    }
#undef IS
}

static int64_t *int_target(ta_jscan_usage_t *u, int ctx)
{
    switch (ctx) {
    case C_PROMPT: return &u->prompt_tokens;
    case C_COMPLETION: return &u->completion_tokens;
    case C_CACHED: return &u->cached_tokens;
    default: return NULL;
    }
}

static int scan_value(scan_t *s, int depth, int ctx)
{
    ta_jscan_usage_t *u = s->u;
    if (depth > MAX_DEPTH || s->p >= s->end)
        return -1;
    int64_t *target = int_target(u, ctx);
    if (target != NULL)
        *target = 0; /* a later duplicate replaces an earlier one, as in jansson */
    if (ctx == C_USAGE) {
        u->usage_object = false;
        u->prompt_tokens = u->completion_tokens = u->cached_tokens = 0;
    } else if (ctx == C_DETAILS) {
        u->cached_tokens = 0;
    } else if (ctx == C_CHOICES) {
        u->choices = TA_JSCAN_OTHER;
    }
    unsigned c = *s->p;
    if (c == '{') {
        if (ctx == C_USAGE)
            u->usage_object = true;
        s->p++;
        skip_ws(s);
        if (s->p < s->end && *s->p == '}') {
            s->p++;
            return 0;
        }
        for (;;) {
            char key[24];
            size_t kl;
            if (s->p >= s->end || *s->p != '"' || scan_string(s, key, sizeof(key), &kl) != 0)
                return -1;
            int kctx = kl <= sizeof(key) ? key_ctx(ctx, key, kl) : C_NONE;
            skip_ws(s);
            if (s->p >= s->end || *s->p != ':')
                return -1;
            s->p++;
            skip_ws(s);
            if (scan_value(s, depth + 1, kctx) != 0)
                return -1;
            skip_ws(s);
            if (s->p < s->end && *s->p == ',') {
                s->p++;
                skip_ws(s);
                continue;
            }
            if (s->p < s->end && *s->p == '}') {
                s->p++;
                return 0;
            }
            return -1;
        }
    }
    if (c == '[') {
        s->p++;
        skip_ws(s);
        if (s->p < s->end && *s->p == ']') {
            s->p++;
            if (ctx == C_CHOICES)
                u->choices = TA_JSCAN_EMPTY;
            return 0;
        }
        if (ctx == C_CHOICES)
            u->choices = TA_JSCAN_ITEMS;
        for (;;) {
            if (scan_value(s, depth + 1, C_NONE) != 0)
                return -1;
            skip_ws(s);
            if (s->p < s->end && *s->p == ',') {
                s->p++;
                skip_ws(s);
                continue;
            }
            if (s->p < s->end && *s->p == ']') {
                s->p++;
                return 0;
            }
            return -1;
        }
    }
    if (c == '"') {
        size_t n;
        return scan_string(s, NULL, 0, &n);
    }
    if (c == '-' || is_digit(c)) {
        int64_t v = 0;
        bool is_int = false;
        if (scan_number(s, &v, &is_int) != 0)
            return -1;
        if (target != NULL && is_int && v > 0)
            *target = v;
        skip_nul(s);
        return 0;
    }
    static const char *const lits[] = {"true", "false", "null"};
    for (size_t i = 0; i < 3; i++) {
        size_t l = strlen(lits[i]);
        if ((size_t)(s->end - s->p) >= l && memcmp(s->p, lits[i], l) == 0) {
            s->p += l;
            skip_nul(s);
            return 0; /* a letter right after it fails at the caller, as in jansson */
        }
    }
    return -1;
}

int ta_jscan_usage(const char *json, size_t len, ta_jscan_usage_t *out)
{
    memset(out, 0, sizeof(*out));
    scan_t s = {.p = (const unsigned char *)json, .end = (const unsigned char *)json + len, .u = out};
    skip_ws(&s);
    if (s.p >= s.end || (*s.p != '{' && *s.p != '['))
        return TA_EINVAL;
    bool object = *s.p == '{';
    if (scan_value(&s, 1, object ? C_ROOT : C_NONE) != 0) {
        memset(out, 0, sizeof(*out));
        return TA_EINVAL;
    }
    skip_ws(&s);
    if (s.p != s.end) {
        memset(out, 0, sizeof(*out));
        return TA_EINVAL;
    }
    return object ? 0 : 1;
}
