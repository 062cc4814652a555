/*
 * codec.c - the one engine behind every record: binary TLV encoding for
 * LMDB, JSON output, JSON input and validation, all driven by the
 * descriptor tables of records.c.
 *
 * Binary value (see schema.h for the picture):
 *
 *   'T' | rectype u8 | version u16 | {tag u8, len u16, bytes[len]}* | 0, 0, 0
 *
 * ta_rec_decode reads bytes that may come from a newer build, a damaged
 * file or a fuzzer: every length is checked against what is left before it
 * is used, nested records are bounded by their container, and any failure
 * leaves the record zeroed. Nesting depth is bounded by the descriptors
 * (a SUB's desc has no SUBs of its own today), not by the input.
 *
 * JSON reals as money: jansson hands us a double, not the text. We recover
 * the literal the client wrote as the shortest decimal that converts back to
 * the same double (at most 15 significant digits, which every double
 * represents uniquely), then parse that decimal exactly with ta_nano_parse.
 * So 2.5, 0.1 and 0.000125 are exactly 2.5, 0.1 and 0.000125; a real that
 * needs 16-17 significant digits is refused (rule "type": send a string).
 * The double is only used to find the digits; no arithmetic touches it.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema.h"

#define PATH_MAX_LEN 64

/* ---- little-endian helpers ---------------------------------------------- */

typedef struct wbuf {
    uint8_t *p;
    size_t len, cap;
    bool full;
} wbuf_t;

static void w_bytes(wbuf_t *w, const void *src, size_t n)
{
    if (w->full || w->cap - w->len < n) {
        w->full = true;
        return;
    }
    if (n)
        memcpy(w->p + w->len, src, n);
    w->len += n;
}

static void w_u8(wbuf_t *w, uint8_t v) { w_bytes(w, &v, 1); }

static void w_u16(wbuf_t *w, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    w_bytes(w, b, 2);
}

static void w_u32(wbuf_t *w, uint32_t v)
{
    uint8_t b[4];
    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    w_bytes(w, b, 4);
}

static void w_u64(wbuf_t *w, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    w_bytes(w, b, 8);
}

static uint16_t r_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static uint32_t r_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t r_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* ---- typed access to a field inside a record ---------------------------- */

static int64_t get_i64(const void *p) { int64_t v; memcpy(&v, p, 8); return v; }
static uint64_t get_u64(const void *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static int32_t get_i32(const void *p) { int32_t v; memcpy(&v, p, 4); return v; }
static uint32_t get_u32(const void *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint16_t get_u16(const void *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static void set_i64(void *p, int64_t v) { memcpy(p, &v, 8); }
static void set_u64(void *p, uint64_t v) { memcpy(p, &v, 8); }
static void set_i32(void *p, int32_t v) { memcpy(p, &v, 4); }
static void set_u32(void *p, uint32_t v) { memcpy(p, &v, 4); }
static void set_u16(void *p, uint16_t v) { memcpy(p, &v, 2); }

static size_t count_names(const char *const *names)
{
    size_t n = 0;
    while (names && names[n])
        n++;
    return n;
}

/* The scalar value of an integer-like field, widened (for bounds and zero tests). */
static int64_t scalar_get(const ta_field_t *f, const uint8_t *base)
{
    const uint8_t *p = base + f->offset;
    switch (f->type) {
    case TA_FT_ID: return (int64_t)get_u64(p);
    case TA_FT_I64: case TA_FT_NANO: case TA_FT_TIME: case TA_FT_TIME_NS: return get_i64(p);
    case TA_FT_I32: return get_i32(p);
    case TA_FT_BOOL: return *(const bool *)p;
    case TA_FT_ENUM: return *p;
    case TA_FT_FLAGS: return get_u32(p);
    default: return 0;
    }
}

static void scalar_set(const ta_field_t *f, uint8_t *base, int64_t v)
{
    uint8_t *p = base + f->offset;
    switch (f->type) {
    case TA_FT_ID: set_u64(p, (uint64_t)v); break;
    case TA_FT_I64: case TA_FT_NANO: case TA_FT_TIME: case TA_FT_TIME_NS: set_i64(p, v); break;
    case TA_FT_I32: set_i32(p, (int32_t)v); break;
    case TA_FT_BOOL: *(bool *)p = v != 0; break;
    case TA_FT_ENUM: *p = (uint8_t)v; break;
    case TA_FT_FLAGS: set_u32(p, (uint32_t)v); break;
    default: break;
    }
}

/* ---- encode ------------------------------------------------------------- */

static int encode_rec(const ta_recdesc_t *d, const uint8_t *base, wbuf_t *w);

/* Write one TLV whose payload is produced after the header: the length is
 * patched in afterwards. Returns the header position or SIZE_MAX when full. */
static size_t tlv_begin(wbuf_t *w, uint8_t tag)
{
    size_t at = w->len;
    w_u8(w, tag);
    w_u16(w, 0);
    return w->full ? SIZE_MAX : at;
}

static int tlv_end(wbuf_t *w, size_t at)
{
    if (w->full)
        return TA_ETOOBIG;
    size_t n = w->len - at - 3;
    if (n > UINT16_MAX)
        return TA_ETOOBIG;
    w->p[at + 1] = (uint8_t)n;
    w->p[at + 2] = (uint8_t)(n >> 8);
    return 0;
}

static int encode_field(const ta_field_t *f, const uint8_t *base, wbuf_t *w)
{
    const uint8_t *p = base + f->offset;
    size_t at;
    int rc;
    switch (f->type) {
    case TA_FT_ID: case TA_FT_I64: case TA_FT_NANO: case TA_FT_TIME: case TA_FT_TIME_NS:
        if (get_u64(p) == 0)
            return 0;
        w_u8(w, f->tag), w_u16(w, 8), w_u64(w, get_u64(p));
        return 0;
    case TA_FT_I32: case TA_FT_FLAGS:
        if (get_u32(p) == 0)
            return 0;
        w_u8(w, f->tag), w_u16(w, 4), w_u32(w, get_u32(p));
        return 0;
    case TA_FT_BOOL:
        if (!*(const bool *)p)
            return 0;
        w_u8(w, f->tag), w_u16(w, 1), w_u8(w, 1);
        return 0;
    case TA_FT_ENUM:
        if (*p == 0)
            return 0;
        w_u8(w, f->tag), w_u16(w, 1), w_u8(w, *p);
        return 0;
    case TA_FT_STR: {
        size_t n = strnlen((const char *)p, f->size);
        if (n == f->size)
            return TA_ETOOBIG; /* not terminated inside its array */
        if (n == 0)
            return 0;
        w_u8(w, f->tag), w_u16(w, (uint16_t)n), w_bytes(w, p, n);
        return 0;
    }
    case TA_FT_BYTES: {
        uint16_t n = get_u16(base + f->len_offset);
        if (n > f->size)
            return TA_ETOOBIG;
        if (n == 0)
            return 0;
        w_u8(w, f->tag), w_u16(w, n), w_bytes(w, p, n);
        return 0;
    }
    case TA_FT_HEX: {
        size_t k = 0;
        while (k < f->size && p[k] == 0)
            k++;
        if (k == f->size)
            return 0;
        if (f->size > UINT16_MAX)
            return TA_ETOOBIG;
        w_u8(w, f->tag), w_u16(w, (uint16_t)f->size), w_bytes(w, p, f->size);
        return 0;
    }
    case TA_FT_ID_LIST: case TA_FT_I32_LIST: {
        uint16_t n = get_u16(base + f->len_offset);
        if (n > f->max_count)
            return TA_ETOOBIG;
        if (n == 0)
            return 0;
        at = tlv_begin(w, f->tag);
        for (uint16_t i = 0; i < n; i++) {
            if (f->type == TA_FT_ID_LIST)
                w_u64(w, get_u64(p + (size_t)i * 8));
            else
                w_u32(w, get_u32(p + (size_t)i * 4));
        }
        return tlv_end(w, at);
    }
    case TA_FT_SUB_LIST: {
        uint16_t n = get_u16(base + f->len_offset);
        if (n > f->max_count)
            return TA_ETOOBIG;
        if (n == 0)
            return 0;
        at = tlv_begin(w, f->tag);
        for (uint16_t i = 0; i < n; i++) {
            size_t el = w->len;
            w_u16(w, 0);
            if ((rc = encode_rec(f->sub, p + (size_t)i * f->size, w)) != 0)
                return rc;
            if (w->full)
                return TA_ETOOBIG;
            size_t en = w->len - el - 2;
            if (en > UINT16_MAX)
                return TA_ETOOBIG;
            w->p[el] = (uint8_t)en;
            w->p[el + 1] = (uint8_t)(en >> 8);
        }
        return tlv_end(w, at);
    }
    case TA_FT_SUB:
        at = tlv_begin(w, f->tag);
        if ((rc = encode_rec(f->sub, p, w)) != 0)
            return rc;
        return tlv_end(w, at);
    }
    return TA_ETOOBIG;
}

static int encode_rec(const ta_recdesc_t *d, const uint8_t *base, wbuf_t *w)
{
    int rc;
    w_u8(w, 'T');
    w_u8(w, d->rectype);
    w_u16(w, d->version);
    for (size_t i = 0; i < d->nfields; i++)
        if ((rc = encode_field(&d->fields[i], base, w)) != 0)
            return rc;
    w_u8(w, 0);
    w_u16(w, 0);
    return w->full ? TA_ETOOBIG : 0;
}

int ta_rec_encode(const ta_recdesc_t *d, const void *rec, uint8_t *buf, size_t cap)
{
    wbuf_t w = {.p = buf, .cap = cap > TA_REC_MAX_ENCODED ? TA_REC_MAX_ENCODED : cap};
    int rc = encode_rec(d, rec, &w);
    if (rc != 0)
        return rc;
    return (int)w.len;
}

/* ---- decode ------------------------------------------------------------- */

static int decode_rec(const ta_recdesc_t *d, const uint8_t *buf, size_t len, uint8_t *base);

static const ta_field_t *field_by_tag(const ta_recdesc_t *d, uint8_t tag)
{
    for (size_t i = 0; i < d->nfields; i++)
        if (d->fields[i].tag == tag)
            return &d->fields[i];
    return NULL;
}

static int decode_field(const ta_field_t *f, const uint8_t *v, size_t n, uint8_t *base)
{
    uint8_t *p = base + f->offset;
    int rc;
    switch (f->type) {
    case TA_FT_ID: case TA_FT_I64: case TA_FT_NANO: case TA_FT_TIME: case TA_FT_TIME_NS:
        if (n != 8)
            return TA_ECORRUPT;
        set_u64(p, r_u64(v));
        return 0;
    case TA_FT_I32: case TA_FT_FLAGS:
        if (n != 4)
            return TA_ECORRUPT;
        set_u32(p, r_u32(v));
        return 0;
    case TA_FT_BOOL:
        if (n != 1 || v[0] > 1)
            return TA_ECORRUPT; /* a bool must hold 0 or 1 */
        *(bool *)p = v[0] == 1;
        return 0;
    case TA_FT_ENUM:
        /* an index we have no name for would be read past `names` later */
        if (n != 1 || v[0] >= count_names(f->names))
            return TA_ECORRUPT;
        *p = v[0];
        return 0;
    case TA_FT_STR:
        /* Invalid UTF-8 is kept, not refused: a worker that cut a client's
         * model name at a byte bound must not make its audit record
         * unreadable. Validation flags it on input; JSON output repairs it. */
        if (n >= f->size || memchr(v, 0, n))
            return TA_ECORRUPT;
        memcpy(p, v, n);
        p[n] = 0;
        return 0;
    case TA_FT_BYTES:
        if (n > f->size)
            return TA_ECORRUPT;
        memcpy(p, v, n);
        set_u16(base + f->len_offset, (uint16_t)n);
        return 0;
    case TA_FT_HEX:
        if (n != f->size)
            return TA_ECORRUPT;
        memcpy(p, v, n);
        return 0;
    case TA_FT_ID_LIST: case TA_FT_I32_LIST: {
        size_t es = f->type == TA_FT_ID_LIST ? 8 : 4;
        if (n % es || n / es > f->max_count)
            return TA_ECORRUPT;
        for (size_t i = 0; i < n / es; i++) {
            if (es == 8)
                set_u64(p + i * 8, r_u64(v + i * 8));
            else
                set_u32(p + i * 4, r_u32(v + i * 4));
        }
        set_u16(base + f->len_offset, (uint16_t)(n / es));
        return 0;
    }
    case TA_FT_SUB_LIST: {
        memset(p, 0, f->size * f->max_count);
        size_t off = 0, cnt = 0;
        while (off < n) {
            if (n - off < 2 || cnt >= f->max_count)
                return TA_ECORRUPT;
            size_t en = r_u16(v + off);
            off += 2;
            if (en > n - off)
                return TA_ECORRUPT;
            if ((rc = decode_rec(f->sub, v + off, en, p + cnt * f->size)) != 0)
                return rc == TA_ESCHEMA ? rc : TA_ECORRUPT;
            off += en;
            cnt++;
        }
        set_u16(base + f->len_offset, (uint16_t)cnt);
        return 0;
    }
    case TA_FT_SUB:
        memset(p, 0, f->size);
        if ((rc = decode_rec(f->sub, v, n, p)) != 0)
            return rc == TA_ESCHEMA ? rc : TA_ECORRUPT;
        return 0;
    }
    return TA_ECORRUPT;
}

static int decode_rec(const ta_recdesc_t *d, const uint8_t *buf, size_t len, uint8_t *base)
{
    int rc;
    if (len < 4 || buf[0] != 'T')
        return TA_ECORRUPT;
    if (buf[1] != d->rectype || r_u16(buf + 2) > d->version)
        return TA_ESCHEMA;
    for (size_t i = 0; i < d->nfields; i++)
        if (d->fields[i].flags & TA_FF_ABSENT_DEFAULT)
            scalar_set(&d->fields[i], base, d->fields[i].def);
    size_t off = 4;
    while (off < len) {
        if (len - off < 3)
            return TA_ECORRUPT;
        uint8_t tag = buf[off];
        size_t n = r_u16(buf + off + 1);
        off += 3;
        if (tag == 0) /* the end marker: empty and last */
            return n == 0 && off == len ? 0 : TA_ECORRUPT;
        if (n > len - off)
            return TA_ECORRUPT;
        const ta_field_t *f = field_by_tag(d, tag);
        if (f && (rc = decode_field(f, buf + off, n, base)) != 0)
            return rc;
        off += n; /* unknown tags (a field of an older build) are skipped */
    }
    return TA_ECORRUPT; /* no end marker: cut short */
}

int ta_rec_decode(const ta_recdesc_t *d, const uint8_t *buf, size_t len, void *rec)
{
    memset(rec, 0, d->size);
    if (!buf)
        return TA_ECORRUPT;
    int rc = decode_rec(d, buf, len, rec);
    if (rc != 0)
        memset(rec, 0, d->size);
    return rc;
}

/* ---- JSON output -------------------------------------------------------- */

static json_t *obj_to_json(const ta_recdesc_t *d, const uint8_t *base, int mode);

static json_t *hex_json(const uint8_t *p, size_t n)
{
    static const char hx[] = "0123456789abcdef";
    char buf[2 * 64 + 1];
    if (n > 64)
        n = 64;
    for (size_t i = 0; i < n; i++) {
        buf[2 * i] = hx[p[i] >> 4];
        buf[2 * i + 1] = hx[p[i] & 15];
    }
    return json_stringn(buf, 2 * n);
}

json_t *ta_json_string_lossy(const char *s, size_t n)
{
    if (ta_utf8_valid(s, n))
        return json_stringn(s, n);
    char *out = malloc(n * 3 + 1);
    if (!out)
        return NULL;
    size_t o = 0, i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        if (len <= n - i && ta_utf8_valid(s + i, len)) {
            memcpy(out + o, s + i, len);
            o += len;
            i += len;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    json_t *j = json_stringn(out, o);
    free(out);
    return j;
}

static json_t *field_to_json(const ta_field_t *f, const uint8_t *base, int mode)
{
    const uint8_t *p = base + f->offset;
    char buf[TA_NANO_STRLEN + 8];
    bool nullable = f->flags & TA_FF_NULLABLE, notnull = f->flags & TA_FF_NOTNULL_OUT;
    switch (f->type) {
    case TA_FT_ID: {
        uint64_t v = get_u64(p);
        if (v == 0)
            return notnull ? json_integer(0) : json_null();
        return json_integer((json_int_t)v);
    }
    case TA_FT_I64: case TA_FT_I32: {
        int64_t v = scalar_get(f, base);
        return v == 0 && nullable ? json_null() : json_integer(v);
    }
    case TA_FT_BOOL: return json_boolean(*(const bool *)p);
    case TA_FT_NANO: {
        int64_t v = get_i64(p);
        return v == 0 && nullable ? json_null() : json_string(ta_nano_format(v, buf));
    }
    case TA_FT_TIME: case TA_FT_TIME_NS: {
        int64_t v = get_i64(p);
        if (v == 0)
            return notnull ? json_string("") : json_null();
        return json_string(f->type == TA_FT_TIME ? ta_time_format(v, buf) : ta_time_format_ms(v, buf));
    }
    case TA_FT_STR: return ta_json_string_lossy((const char *)p, strnlen((const char *)p, f->size));
    case TA_FT_ENUM:
        return *p < count_names(f->names) ? json_string(f->names[*p]) : json_null();
    case TA_FT_FLAGS: {
        json_t *a = json_array();
        uint32_t v = get_u32(p);
        for (size_t i = 0; a && f->names[i] && i < 32; i++)
            if (v & (1u << i))
                json_array_append_new(a, json_string(f->names[i]));
        return a;
    }
    case TA_FT_HEX: return hex_json(p, f->size);
    case TA_FT_ID_LIST: case TA_FT_I32_LIST: case TA_FT_SUB_LIST: {
        json_t *a = json_array();
        uint16_t n = get_u16(base + f->len_offset);
        if (n > f->max_count)
            n = f->max_count;
        for (uint16_t i = 0; a && i < n; i++) {
            json_t *e;
            if (f->type == TA_FT_ID_LIST)
                e = json_integer((json_int_t)get_u64(p + (size_t)i * 8));
            else if (f->type == TA_FT_I32_LIST)
                e = json_integer(get_i32(p + (size_t)i * 4));
            else
                e = obj_to_json(f->sub, p + (size_t)i * f->size, mode);
            if (!e || json_array_append_new(a, e) != 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    case TA_FT_SUB: return obj_to_json(f->sub, p, mode);
    case TA_FT_BYTES: break;
    }
    return NULL;
}

/* The value of d's TA_FF_PRESENCE flag (true when d has none). */
static bool presence_of(const ta_recdesc_t *d, const uint8_t *base)
{
    for (size_t i = 0; i < d->nfields; i++)
        if ((d->fields[i].flags & TA_FF_PRESENCE) && d->fields[i].type == TA_FT_BOOL)
            return *(const bool *)(base + d->fields[i].offset);
    return true;
}

/* d's TA_FF_PRESENCE_BITS field, NULL when it has none. */
static const ta_field_t *presence_bits_field(const ta_recdesc_t *d)
{
    for (size_t i = 0; i < d->nfields; i++)
        if ((d->fields[i].flags & TA_FF_PRESENCE_BITS) && d->fields[i].type == TA_FT_FLAGS)
            return &d->fields[i];
    return NULL;
}

/* The bit of marked field `name` in the presence bits (0: not listed). */
static uint32_t presence_bit(const ta_field_t *bits, const char *name)
{
    for (uint32_t i = 0; bits != NULL && bits->names[i] != NULL && i < 32; i++)
        if (strcmp(bits->names[i], name) == 0)
            return 1u << i;
    return 0;
}

/* Is the marked field f set? (see TA_FF_PRESENCE_BITS) */
static bool marked_set(const ta_recdesc_t *d, const ta_field_t *f, const uint8_t *base)
{
    if (!presence_of(d, base))
        return false;
    const ta_field_t *bits = presence_bits_field(d);
    uint32_t b = presence_bit(bits, f->name);
    if (b == 0)
        return true;
    uint32_t v = get_u32(base + bits->offset);
    return v == 0 || (v & b) != 0;
}

static json_t *obj_to_json(const ta_recdesc_t *d, const uint8_t *base, int mode)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    for (size_t i = 0; i < d->nfields; i++) {
        const ta_field_t *f = &d->fields[i];
        if ((f->flags & TA_FF_SECRET) || f->type == TA_FT_BYTES)
            continue;
        /* an unset price is "not priced" (null), not "free" ("0") */
        json_t *v = (f->flags & TA_FF_MARKS_PRESENCE) && !marked_set(d, f, base) ? json_null()
                                                                                 : field_to_json(f, base, mode);
        if (!v || json_object_set_new(o, f->name, v) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

json_t *ta_rec_to_json(const ta_recdesc_t *d, const void *rec, int mode)
{
    return obj_to_json(d, rec, mode);
}

/* ---- validation --------------------------------------------------------- */

/* Paths longer than ta_err_t.field are cut; the schema's longest real path
 * ("routes[7].upstream_name") is far shorter. */
static void path_join(char *out, const char *prefix, const char *name)
{
    int n;
    if (prefix && prefix[0])
        n = snprintf(out, PATH_MAX_LEN, "%s.%s", prefix, name);
    else
        n = snprintf(out, PATH_MAX_LEN, "%s", name);
    if (n < 0)
        out[0] = 0;
}

static void path_index(char *out, const char *path, unsigned i)
{
    if (snprintf(out, PATH_MAX_LEN, "%s[%u]", path, i) < 0)
        out[0] = 0;
}

static bool bounded(const ta_field_t *f) { return f->min != 0 || f->max != 0; }

static void fmt_bound(const ta_field_t *f, int64_t v, char *buf)
{
    if (f->type == TA_FT_NANO)
        ta_nano_format(v, buf);
    else
        snprintf(buf, TA_NANO_STRLEN, "%lld", (long long)v);
}

static int check_bounds(const ta_field_t *f, int64_t v, const char *path, ta_err_t *err)
{
    char b[TA_NANO_STRLEN];
    if (!bounded(f))
        return 0;
    if (v < f->min) {
        fmt_bound(f, f->min, b);
        return ta_err_set(err, path, "min", "%s: must be at least %s", path, b);
    }
    if (v > f->max) {
        fmt_bound(f, f->max, b);
        return ta_err_set(err, path, "max", "%s: must be at most %s", path, b);
    }
    return 0;
}

static bool email_ok(const char *s, size_t n)
{
    const char *at = memchr(s, '@', n);
    if (!at || memchr(at + 1, '@', n - (size_t)(at - s) - 1))
        return false;
    size_t ln = (size_t)(at - s), dn = n - ln - 1;
    if (ln == 0 || ln > 64 || dn == 0 || dn > 253)
        return false;
    for (size_t i = 0; i < ln; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (i == 0 || i == ln - 1 || s[i - 1] == '.')
                return false;
        } else if (!(c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                     (c >= '0' && c <= '9') || strchr("!#$%&'*+/=?^_`{|}~-", c))) {
            return false;
        }
    }
    const char *dom = at + 1;
    size_t labels = 0, lab = 0;
    for (size_t i = 0; i <= dn; i++) {
        unsigned char c = i < dn ? (unsigned char)dom[i] : '.';
        if (c == '.') {
            if (lab == 0 || lab > 63 || dom[i - 1] == '-' || dom[i - lab] == '-')
                return false;
            labels++;
            lab = 0;
        } else if (c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                   (c >= '0' && c <= '9') || c == '-') {
            lab++;
        } else {
            return false;
        }
    }
    return labels >= 2;
}

/* An absolute http(s) URL with a host (no space, no backslash before the
 * path). Credentials before the host (user:password@) are refused on their
 * own rule: the URL is shown in lists and the dump, while secrets have
 * write-only fields of their own. Control characters were refused before
 * (ta_str_check). */
static int url_check(const char *path, const char *s, size_t n, ta_err_t *err)
{
    size_t i;
    if (n >= 7 && strncasecmp(s, "http://", 7) == 0)
        i = 7;
    else if (n >= 8 && strncasecmp(s, "https://", 8) == 0)
        i = 8;
    else
        return ta_err_set(err, path, "format", "%s: must be an http:// or https:// URL", path);
    size_t host = i;
    while (i < n && s[i] != '/' && s[i] != '?' && s[i] != '#')
        i++;
    if (memchr(s + host, '@', i - host) != NULL)
        return ta_err_set(err, path, "credentials",
                          "%s: must not carry credentials (user:password@ before the host)", path);
    /* a backslash in the authority is read as a slash by some URL parsers
     * and not by others: refused rather than guessed */
    if (i == host || memchr(s, ' ', n) != NULL || memchr(s + host, '\\', i - host) != NULL)
        return ta_err_set(err, path, "format", "%s: must be an http:// or https:// URL", path);
    return 0;
}

int ta_str_check(const char *field, const char *s, size_t n, uint32_t flags, ta_err_t *err)
{
    if (!ta_utf8_valid(s, n))
        return ta_err_set(err, field, "utf8", "%s: must be valid UTF-8", field);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != 0x7f)
            continue;
        if ((flags & TA_FF_TEXT) && (c == '\t' || c == '\n' || c == '\r'))
            continue;
        return ta_err_set(err, field, "control",
                          "%s: must not contain control characters (byte 0x%02x at offset %zu)",
                          field, c, i);
    }
    return 0;
}

static int validate_obj(const ta_recdesc_t *d, const uint8_t *base, const char *prefix, ta_err_t *err);

static int validate_field(const ta_field_t *f, const uint8_t *base, const char *path, ta_err_t *err)
{
    const uint8_t *p = base + f->offset;
    char ep[PATH_MAX_LEN];
    int rc;
    switch (f->type) {
    case TA_FT_ID:
        if ((f->flags & TA_FF_REQUIRED) && get_u64(p) == 0)
            return ta_err_set(err, path, "required", "%s: is required", path);
        return 0;
    case TA_FT_I64: case TA_FT_I32: case TA_FT_NANO:
        return check_bounds(f, scalar_get(f, base), path, err);
    case TA_FT_STR: {
        size_t n = strnlen((const char *)p, f->size);
        size_t max = f->size ? f->size - 1 : 0;
        if (f->max > 0 && (size_t)f->max < max)
            max = (size_t)f->max;
        if (n > max)
            return ta_err_set(err, path, "max_length", "%s: must be at most %zu bytes", path, max);
        if ((rc = ta_str_check(path, (const char *)p, n, f->flags, err)) != 0)
            return rc;
        if (n == 0 && (f->flags & (TA_FF_REQUIRED | TA_FF_NONEMPTY)))
            return ta_err_set(err, path, "required", "%s: must not be empty", path);
        if (n && (f->flags & TA_FF_EMAIL) && !email_ok((const char *)p, n))
            return ta_err_set(err, path, "format", "%s: must be a valid e-mail address", path);
        if (n && (f->flags & TA_FF_URL))
            return url_check(path, (const char *)p, n, err);
        return 0;
    }
    case TA_FT_ENUM:
        if (*p >= count_names(f->names))
            return ta_err_set(err, path, "enum", "%s: unknown value %u", path, *p);
        return 0;
    case TA_FT_FLAGS: {
        size_t k = count_names(f->names);
        uint32_t known = k >= 32 ? UINT32_MAX : (1u << k) - 1;
        if (get_u32(p) & ~known)
            return ta_err_set(err, path, "enum", "%s: unknown flag bits 0x%x", path,
                              (unsigned)(get_u32(p) & ~known));
        return 0;
    }
    case TA_FT_BYTES:
        if (get_u16(base + f->len_offset) > f->size)
            return ta_err_set(err, path, "max_length", "%s: must be at most %zu bytes", path, f->size);
        return 0;
    case TA_FT_ID_LIST: case TA_FT_I32_LIST: case TA_FT_SUB_LIST: {
        uint16_t n = get_u16(base + f->len_offset);
        if (n > f->max_count)
            return ta_err_set(err, path, "max_items", "%s: must have at most %u items", path,
                              (unsigned)f->max_count);
        for (uint16_t i = 0; i < n; i++) {
            path_index(ep, path, i);
            if (f->type == TA_FT_SUB_LIST) {
                if ((rc = validate_obj(f->sub, p + (size_t)i * f->size, ep, err)) != 0)
                    return rc;
            } else if (f->type == TA_FT_I32_LIST) {
                int32_t v = get_i32(p + (size_t)i * 4);
                if ((rc = check_bounds(f, v, ep, err)) != 0)
                    return rc;
                if ((f->flags & TA_FF_ASCENDING) && i > 0 && v <= get_i32(p + (size_t)(i - 1) * 4))
                    return ta_err_set(err, ep, "order", "%s: must be greater than the item before it", ep);
            } else {
                uint64_t v = get_u64(p + (size_t)i * 8);
                if (v == 0)
                    return ta_err_set(err, ep, "min", "%s: must be a positive id", ep);
                if ((f->flags & TA_FF_ASCENDING) && i > 0 && v <= get_u64(p + (size_t)(i - 1) * 8))
                    return ta_err_set(err, ep, "order", "%s: must be greater than the item before it", ep);
                for (uint16_t j = 0; j < i; j++)
                    if (get_u64(p + (size_t)j * 8) == v)
                        return ta_err_set(err, ep, "unique", "%s: duplicate id %llu", ep,
                                          (unsigned long long)v);
            }
        }
        return 0;
    }
    case TA_FT_SUB: return validate_obj(f->sub, p, path, err);
    case TA_FT_BOOL: case TA_FT_TIME: case TA_FT_TIME_NS: case TA_FT_HEX: return 0;
    }
    return 0;
}

static int validate_obj(const ta_recdesc_t *d, const uint8_t *base, const char *prefix, ta_err_t *err)
{
    char path[PATH_MAX_LEN];
    int rc;
    for (size_t i = 0; i < d->nfields; i++) {
        path_join(path, prefix, d->fields[i].name);
        if ((rc = validate_field(&d->fields[i], base, path, err)) != 0)
            return rc;
    }
    return 0;
}

int ta_rec_validate(const ta_recdesc_t *d, const void *rec, ta_err_t *err)
{
    return validate_obj(d, rec, "", err);
}

/* ---- defaults and lookup ------------------------------------------------ */

static void defaults_obj(const ta_recdesc_t *d, uint8_t *base)
{
    for (size_t i = 0; i < d->nfields; i++) {
        const ta_field_t *f = &d->fields[i];
        if (f->type == TA_FT_SUB)
            defaults_obj(f->sub, base + f->offset);
        else if (f->def)
            scalar_set(f, base, f->def);
    }
}

void ta_rec_defaults(const ta_recdesc_t *d, void *rec)
{
    memset(rec, 0, d->size);
    defaults_obj(d, rec);
}

const ta_field_t *ta_rec_field(const ta_recdesc_t *d, const char *name)
{
    for (size_t i = 0; i < d->nfields; i++)
        if (strcmp(d->fields[i].name, name) == 0)
            return &d->fields[i];
    return NULL;
}

/* ---- JSON input --------------------------------------------------------- */

/* The shortest decimal (<= 15 significant digits) that reads back as v, as
 * plain text without exponent; false when v needs more digits (see the
 * comment at the top) or the text would not fit. */
static bool real_to_decimal(double v, char *out, size_t cap)
{
    char e[40];
    int p;
    if (!isfinite(v))
        return false;
    for (p = 1; p <= 15; p++) {
        snprintf(e, sizeof(e), "%.*e", p - 1, v);
        if (strtod(e, NULL) == v)
            break;
    }
    if (p > 15)
        return false;
    /* e = [-]d[.ddd]e[+-]XX: collect the digits and the exponent */
    char dig[20];
    size_t nd = 0, k = 0;
    bool neg = e[0] == '-';
    if (neg)
        k++;
    for (; e[k] && e[k] != 'e'; k++)
        if (e[k] >= '0' && e[k] <= '9')
            dig[nd++] = e[k];
    if (e[k] != 'e')
        return false;
    long ex = strtol(e + k + 1, NULL, 10);
    long point = ex + 1; /* digits before the decimal point */
    if (point > 25 || point < -25)
        return false; /* far outside int64 nano range or far below a nano */
    size_t o = 0;
#define PUT(c)                                                                                     \
    do {                                                                                           \
        if (o + 1 >= cap)                                                                          \
            return false;                                                                          \
        out[o++] = (c);                                                                            \
    } while (0)
    if (neg)
        PUT('-');
    if (point <= 0) {
        PUT('0');
        PUT('.');
        for (long z = 0; z < -point; z++)
            PUT('0');
        for (size_t i = 0; i < nd; i++)
            PUT(dig[i]);
    } else {
        for (long i = 0; i < point; i++)
            PUT((size_t)i < nd ? dig[i] : '0');
        if ((size_t)point < nd) {
            PUT('.');
            for (size_t i = (size_t)point; i < nd; i++)
                PUT(dig[i]);
        }
    }
#undef PUT
    out[o] = 0;
    return true;
}

static int nano_from_json(const ta_field_t *f, const json_t *v, const char *path, ta_nano_t *out,
                          ta_err_t *err)
{
    if (json_is_string(v)) {
        if (ta_nano_parse(json_string_value(v), json_string_length(v), out) != 0)
            return ta_err_set(err, path, "format",
                              "%s: must be a decimal number with at most 9 decimals", path);
        return 0;
    }
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i > INT64_MAX / TA_NANO_PER_UNIT || i < INT64_MIN / TA_NANO_PER_UNIT)
            return ta_err_set(err, path, i > 0 ? "max" : "min", "%s: out of range", path);
        *out = (ta_nano_t)i * TA_NANO_PER_UNIT;
        return 0;
    }
    if (json_is_real(v)) {
        char dec[64];
        if (!real_to_decimal(json_real_value(v), dec, sizeof(dec)))
            return ta_err_set(err, path, "type", "%s: must be a decimal string or an integer", path);
        if (ta_nano_parse(dec, strlen(dec), out) != 0)
            return ta_err_set(err, path, "format",
                              "%s: must be a decimal number with at most 9 decimals", path);
        return 0;
    }
    return ta_err_set(err, path, "type", "%s: must be a decimal string or a number", path);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int apply_obj(const ta_recdesc_t *d, const json_t *in, uint8_t *base, int merge,
                     const char *prefix, ta_err_t *err);

static int type_err(ta_err_t *err, const char *path, const char *what)
{
    return ta_err_set(err, path, "type", "%s: must be %s", path, what);
}

static int apply_value(const ta_field_t *f, const json_t *v, uint8_t *base, int merge,
                       const char *path, ta_err_t *err)
{
    uint8_t *p = base + f->offset;
    char ep[PATH_MAX_LEN];
    int rc;
    bool nullable = f->flags & TA_FF_NULLABLE;

    if (json_is_null(v) && (nullable || f->type == TA_FT_ID)) {
        /* null = none / no limit: the zero value of the field */
        switch (f->type) {
        case TA_FT_STR: p[0] = 0; return 0;
        case TA_FT_ID_LIST: case TA_FT_I32_LIST: case TA_FT_SUB_LIST:
            set_u16(base + f->len_offset, 0);
            return 0;
        case TA_FT_SUB: memset(p, 0, f->size); return 0;
        default: scalar_set(f, base, 0); return 0;
        }
    }
    switch (f->type) {
    case TA_FT_ID:
        if (!json_is_integer(v))
            return type_err(err, path, "an integer id or null");
        if (json_integer_value(v) < 0)
            return ta_err_set(err, path, "min", "%s: must not be negative", path);
        set_u64(p, (uint64_t)json_integer_value(v));
        return 0;
    case TA_FT_I64: case TA_FT_I32:
        if (!json_is_integer(v))
            return type_err(err, path, nullable ? "an integer or null" : "an integer");
        /* bounds before narrowing, so an int32 field never wraps */
        if ((rc = check_bounds(f, json_integer_value(v), path, err)) != 0)
            return rc;
        if (f->type == TA_FT_I32 && (json_integer_value(v) > INT32_MAX || json_integer_value(v) < INT32_MIN))
            return ta_err_set(err, path, json_integer_value(v) > 0 ? "max" : "min", "%s: out of range", path);
        scalar_set(f, base, json_integer_value(v));
        return 0;
    case TA_FT_BOOL:
        if (!json_is_boolean(v))
            return type_err(err, path, "true or false");
        *(bool *)p = json_is_true(v);
        return 0;
    case TA_FT_NANO: {
        ta_nano_t n;
        if ((rc = nano_from_json(f, v, path, &n, err)) != 0)
            return rc;
        set_i64(p, n);
        return 0;
    }
    case TA_FT_TIME: case TA_FT_TIME_NS: {
        int64_t t;
        if (!json_is_string(v))
            return type_err(err, path, nullable ? "an RFC 3339 time or null" : "an RFC 3339 time");
        if (ta_time_parse(json_string_value(v), json_string_length(v), &t) != 0)
            return ta_err_set(err, path, "format",
                              "%s: must be an RFC 3339 time like 2026-11-26T13:09:17Z", path);
        if (f->type == TA_FT_TIME_NS) {
            if (t > INT64_MAX / 1000000000LL || t < INT64_MIN / 1000000000LL)
                return ta_err_set(err, path, "max", "%s: out of range", path);
            t *= 1000000000LL;
        }
        set_i64(p, t);
        return 0;
    }
    case TA_FT_STR: {
        if (!json_is_string(v))
            return type_err(err, path, "a string");
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        /* NUL here: the C string kept would silently end before it */
        if (memchr(s, 0, n))
            return ta_str_check(path, s, n, f->flags, err);
        size_t max = f->size - 1;
        if (f->max > 0 && (size_t)f->max < max)
            max = (size_t)f->max;
        if (n > max)
            return ta_err_set(err, path, "max_length", "%s: must be at most %zu bytes", path, max);
        memcpy(p, s, n);
        p[n] = 0;
        if (f->flags & TA_FF_LOWER)
            for (size_t i = 0; i < n; i++)
                if (p[i] >= 'A' && p[i] <= 'Z')
                    p[i] = (uint8_t)(p[i] - 'A' + 'a');
        return 0;
    }
    case TA_FT_ENUM: {
        if (!json_is_string(v))
            return type_err(err, path, "a string");
        for (size_t i = 0; f->names[i]; i++)
            if (strcmp(f->names[i], json_string_value(v)) == 0 &&
                strlen(f->names[i]) == json_string_length(v)) {
                *p = (uint8_t)i;
                return 0;
            }
        char list[160] = "";
        size_t o = 0;
        for (size_t i = 0; f->names[i] && o < sizeof(list); i++) {
            int w = snprintf(list + o, sizeof(list) - o, "%s%s", i ? ", " : "", f->names[i]);
            if (w < 0)
                break;
            o += (size_t)w;
        }
        return ta_err_set(err, path, "enum", "%s: must be one of %s", path, list);
    }
    case TA_FT_FLAGS: {
        uint32_t bits = 0;
        size_t i;
        json_t *e;
        if (!json_is_array(v))
            return type_err(err, path, "an array of strings");
        json_array_foreach(v, i, e) {
            path_index(ep, path, (unsigned)i);
            if (!json_is_string(e))
                return type_err(err, ep, "a string");
            size_t k;
            for (k = 0; f->names[k]; k++)
                if (strcmp(f->names[k], json_string_value(e)) == 0)
                    break;
            if (!f->names[k] || k >= 32) {
                /* quote at most 64 bytes, cut on a character boundary */
                const char *sv = json_string_value(e);
                int n = (int)strnlen(sv, 64);
                while (n > 0 && ((unsigned char)sv[n] & 0xC0) == 0x80)
                    n--;
                return ta_err_set(err, ep, "enum", "%s: unknown value \"%.*s\"", ep, n, sv);
            }
            bits |= 1u << k;
        }
        set_u32(p, bits);
        return 0;
    }
    case TA_FT_HEX: {
        if (!json_is_string(v) || json_string_length(v) != 2 * f->size)
            return type_err(err, path, "a hex string");
        const char *s = json_string_value(v);
        for (size_t i = 0; i < f->size; i++) {
            int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
            if (hi < 0 || lo < 0)
                return ta_err_set(err, path, "format", "%s: must be hexadecimal", path);
            p[i] = (uint8_t)(hi << 4 | lo);
        }
        return 0;
    }
    case TA_FT_ID_LIST: case TA_FT_I32_LIST: case TA_FT_SUB_LIST: {
        size_t i;
        json_t *e;
        if (!json_is_array(v))
            return type_err(err, path, "an array");
        if (json_array_size(v) > f->max_count)
            return ta_err_set(err, path, "max_items", "%s: must have at most %u items", path,
                              (unsigned)f->max_count);
        json_array_foreach(v, i, e) {
            path_index(ep, path, (unsigned)i);
            uint8_t *ip = p + i * f->size;
            if (f->type == TA_FT_SUB_LIST) {
                /* a list is replaced whole, even by PATCH: each element is new */
                if (!json_is_object(e))
                    return type_err(err, ep, "an object");
                ta_rec_defaults(f->sub, ip);
                if ((rc = apply_obj(f->sub, e, ip, TA_MERGE_CREATE, ep, err)) != 0)
                    return rc;
            } else if (!json_is_integer(e)) {
                return type_err(err, ep, "an integer");
            } else if (f->type == TA_FT_ID_LIST) {
                if (json_integer_value(e) <= 0)
                    return ta_err_set(err, ep, "min", "%s: must be a positive id", ep);
                set_u64(ip, (uint64_t)json_integer_value(e));
            } else {
                json_int_t x = json_integer_value(e);
                if ((rc = check_bounds(f, x, ep, err)) != 0)
                    return rc;
                if (x > INT32_MAX || x < INT32_MIN)
                    return ta_err_set(err, ep, x > 0 ? "max" : "min", "%s: out of range", ep);
                set_i32(ip, (int32_t)x);
            }
        }
        set_u16(base + f->len_offset, (uint16_t)json_array_size(v));
        return 0;
    }
    case TA_FT_SUB:
        if (!json_is_object(v))
            return type_err(err, path, "an object");
        return apply_obj(f->sub, v, p, merge, path, err);
    case TA_FT_BYTES: return 0;
    }
    return 0;
}

/* How many fields of d mark presence (the prices of a model). */
static size_t count_marks(const ta_recdesc_t *d)
{
    size_t n = 0;
    for (size_t i = 0; i < d->nfields; i++)
        if (d->fields[i].flags & TA_FF_MARKS_PRESENCE)
            n++;
    return n;
}

static int apply_obj(const ta_recdesc_t *d, const json_t *in, uint8_t *base, int merge,
                     const char *prefix, ta_err_t *err)
{
    char path[PATH_MAX_LEN];
    bool marked = false;
    size_t nulls = 0;
    int rc;
    const ta_field_t *bits = presence_bits_field(d);
    uint32_t set = 0;
    if (bits != NULL) {
        set = get_u32(base + bits->offset);
        if (set == 0 && presence_of(d, base)) /* written before the bits: every one set */
            for (uint32_t i = 0; bits->names[i] != NULL && i < 32; i++)
                set |= 1u << i;
    }
    for (size_t i = 0; i < d->nfields; i++) {
        const ta_field_t *f = &d->fields[i];
        if ((f->flags & (TA_FF_READONLY | TA_FF_INTERNAL | TA_FF_SECRET)) || f->type == TA_FT_BYTES)
            continue;
        path_join(path, prefix, f->name);
        const json_t *v = json_object_get(in, f->name);
        if (!v) {
            if (merge != TA_MERGE_PATCH && (f->flags & TA_FF_REQUIRED))
                return ta_err_set(err, path, "required", "%s: is required", path);
            continue;
        }
        if ((f->flags & TA_FF_MARKS_PRESENCE) && json_is_null(v)) {
            /* null = not set: clears the value; all of them null clears presence */
            scalar_set(f, base, 0);
            set &= ~presence_bit(bits, f->name);
            nulls++;
            continue;
        }
        if (f->flags & TA_FF_MARKS_PRESENCE) {
            marked = true;
            set |= presence_bit(bits, f->name);
        }
        if ((rc = apply_value(f, v, base, merge, path, err)) != 0)
            return rc;
    }
    if (bits != NULL && (marked || nulls > 0))
        set_u32(base + bits->offset, set);
    if (marked || nulls > 0)
        for (size_t i = 0; i < d->nfields; i++)
            if ((d->fields[i].flags & TA_FF_PRESENCE) && d->fields[i].type == TA_FT_BOOL) {
                bool *flag = (bool *)(base + d->fields[i].offset);
                if (marked)
                    *flag = true;
                else if (nulls == count_marks(d))
                    *flag = false;
            }
    return 0;
}

int ta_rec_from_json(const ta_recdesc_t *d, const json_t *in, void *rec, int merge, ta_err_t *err)
{
    int rc;
    if (!json_is_object(in))
        return ta_err_set(err, "", "type", "the body must be a JSON object");
    /* work on a copy so a refused input leaves rec as it was */
    uint8_t *tmp = malloc(d->size);
    if (!tmp) {
        ta_err_set(err, "", "internal", "out of memory");
        return -ENOMEM;
    }
    memcpy(tmp, rec, d->size);
    if ((rc = apply_obj(d, in, tmp, merge, "", err)) == 0 && (rc = ta_rec_validate(d, tmp, err)) == 0)
        memcpy(rec, tmp, d->size);
    free(tmp);
    return rc;
}
