/*
 * tzinfo.c - a TZif reader (RFC 8536) for the statistics' time zones.
 *
 * What is kept of a file: the transition times of its 64-bit block (version
 * 2 and later; the 32-bit block of a version 1 file otherwise), the UTC
 * offset each transition switches to, the offset before the first one
 * (local time type 0, RFC 8536 section 3.2), and the footer's POSIX TZ
 * string (section 3.3), which gives the offsets after the last transition:
 * "CST-8", "EST5EDT,M3.2.0,M11.1.0", "<+1030>-10:30<+11>-11,M10.1.0,M4.1.0".
 * Files are small (a few KiB); a statistics request loads its zone once.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ledger/tzinfo.h"
#include "schema/ta.h"

#define ZONEINFO_DIR "/usr/share/zoneinfo/"
#define TZ_NAME_MAX 64
#define TZ_FILE_MAX (256 * 1024)

/* One rule date of a POSIX TZ string: Jn, n or Mm.w.d, and its local time. */
typedef struct rule_date {
    char kind;    /* 'J' (1..365, no Feb 29), 'N' (0..365), 'M' */
    int n, m, w, d;
    int32_t secs; /* local time of day of the change, may be negative or > 24 h */
} rule_date_t;

struct ta_tz {
    char name[TZ_NAME_MAX];
    size_t n;          /* transitions */
    int64_t *at;       /* transition times, ascending */
    int32_t *off;      /* the offset from at[i] on */
    int32_t off0;      /* before the first transition */
    bool has_rule;     /* the footer gives the offsets after the last transition */
    int32_t std_off, dst_off; /* seconds east of UTC */
    bool has_dst;
    rule_date_t start, end; /* std -> dst at start, dst -> std at end */
};

/* ---- civil dates (proleptic Gregorian) ------------------------------------------------ */

int64_t ta_tz_days(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

void ta_tz_civil(int64_t z, int *year, int *month, int *day)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int d = (int)(doy - (153 * mp + 2) / 5 + 1);
    int m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *year = (int)(y + (m <= 2));
    *month = m;
    *day = d;
}

static bool leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

/* ---- the POSIX TZ string of the footer -------------------------------------------- */

static const char *parse_name(const char *p)
{
    if (*p == '<') {
        const char *e = strchr(p, '>');
        return e != NULL && e > p + 1 ? e + 1 : NULL;
    }
    const char *s = p;
    while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z'))
        p++;
    return p - s >= 3 ? p : NULL;
}

/* [+-]h[h][:mm[:ss]] (hours up to 167 for rule times): seconds. */
static const char *parse_hms(const char *p, int32_t *out)
{
    int sign = 1, h = 0, mi = 0, se = 0, nd = 0;
    if (*p == '+' || *p == '-')
        sign = *p++ == '-' ? -1 : 1;
    while (*p >= '0' && *p <= '9' && nd < 3)
        h = h * 10 + (*p++ - '0'), nd++;
    if (nd == 0 || h > 167)
        return NULL;
    if (*p == ':') {
        p++;
        if (!(p[0] >= '0' && p[0] <= '5' && p[1] >= '0' && p[1] <= '9'))
            return NULL;
        mi = (p[0] - '0') * 10 + (p[1] - '0');
        p += 2;
        if (*p == ':') {
            p++;
            if (!(p[0] >= '0' && p[0] <= '5' && p[1] >= '0' && p[1] <= '9'))
                return NULL;
            se = (p[0] - '0') * 10 + (p[1] - '0');
            p += 2;
        }
    }
    *out = sign * (h * 3600 + mi * 60 + se);
    return p;
}

static const char *parse_int(const char *p, int lo, int hi, int *out)
{
    int v = 0, nd = 0;
    while (*p >= '0' && *p <= '9' && nd < 4)
        v = v * 10 + (*p++ - '0'), nd++;
    if (nd == 0 || v < lo || v > hi)
        return NULL;
    *out = v;
    return p;
}

static const char *parse_date(const char *p, rule_date_t *r)
{
    memset(r, 0, sizeof(*r));
    r->secs = 2 * 3600;
    if (*p == 'J') {
        r->kind = 'J';
        p = parse_int(p + 1, 1, 365, &r->n);
    } else if (*p == 'M') {
        r->kind = 'M';
        p = parse_int(p + 1, 1, 12, &r->m);
        if (p != NULL && *p == '.')
            p = parse_int(p + 1, 1, 5, &r->w);
        else
            p = NULL;
        if (p != NULL && *p == '.')
            p = parse_int(p + 1, 0, 6, &r->d);
        else
            p = NULL;
    } else {
        r->kind = 'N';
        p = parse_int(p, 0, 365, &r->n);
    }
    if (p != NULL && *p == '/')
        p = parse_hms(p + 1, &r->secs);
    return p;
}

/* std offset [dst [offset] [,start[/time],end[/time]]]; POSIX offsets are
 * west of UTC, ours east. Returns false when the string is not understood. */
static bool parse_rule(ta_tz_t *tz, const char *p)
{
    int32_t v;
    if ((p = parse_name(p)) == NULL || (p = parse_hms(p, &v)) == NULL)
        return false;
    tz->std_off = -v;
    tz->has_rule = true;
    if (*p == '\0')
        return true;
    if ((p = parse_name(p)) == NULL)
        return false;
    tz->dst_off = tz->std_off + 3600;
    if (*p != ',' && *p != '\0') {
        if ((p = parse_hms(p, &v)) == NULL)
            return false;
        tz->dst_off = -v;
    }
    /* without rules POSIX leaves the dates to the implementation; US rules
     * are glibc's choice too */
    tz->start = (rule_date_t){.kind = 'M', .m = 3, .w = 2, .d = 0, .secs = 7200};
    tz->end = (rule_date_t){.kind = 'M', .m = 11, .w = 1, .d = 0, .secs = 7200};
    if (*p == ',') {
        if ((p = parse_date(p + 1, &tz->start)) == NULL || *p != ',' ||
            (p = parse_date(p + 1, &tz->end)) == NULL)
            return false;
    }
    tz->has_dst = true;
    return *p == '\0';
}

/* The day number (since 1970) a rule date falls on in year y. */
static int64_t rule_day(const rule_date_t *r, int y)
{
    if (r->kind == 'J')
        return ta_tz_days(y, 1, 1) + r->n - 1 + (leap(y) && r->n >= 60);
    if (r->kind == 'N')
        return ta_tz_days(y, 1, 1) + r->n;
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int64_t first = ta_tz_days(y, r->m, 1);
    int dow1 = (int)(((first % 7) + 11) % 7); /* 1970-01-01 was a Thursday (4) */
    int day = 1 + (r->d - dow1 + 7) % 7 + (r->w - 1) * 7;
    int len = mdays[r->m - 1] + (r->m == 2 && leap(y));
    while (day > len)
        day -= 7;
    return first + day - 1;
}

static int32_t rule_offset(const ta_tz_t *tz, int64_t t)
{
    if (!tz->has_dst)
        return tz->std_off;
    int y, m, d;
    ta_tz_civil(floor_div(t + tz->std_off, 86400), &y, &m, &d);
    /* the year of t in standard time: no zone changes its clock near New
     * Year, so both changes of that year bound t's season */
    int64_t s = rule_day(&tz->start, y) * 86400 + tz->start.secs - tz->std_off;
    int64_t e = rule_day(&tz->end, y) * 86400 + tz->end.secs - tz->dst_off;
    bool dst = s < e ? (t >= s && t < e) : !(t >= e && t < s);
    return dst ? tz->dst_off : tz->std_off;
}

/* ---- the TZif file ---------------------------------------------------------- */

static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static bool name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n >= TZ_NAME_MAX || name[0] == '/' || strstr(name, "..") != NULL)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '/' || c == '_' || c == '-' || c == '+'))
            return false;
    }
    return true;
}

typedef struct hdr {
    uint32_t isut, isstd, leap, time, type, chars;
} hdr_t;

static bool read_hdr(const uint8_t *p, size_t len, hdr_t *h, int *version)
{
    if (len < 44 || memcmp(p, "TZif", 4) != 0)
        return false;
    *version = p[4] == 0 ? 1 : p[4] - '0';
    h->isut = be32(p + 20), h->isstd = be32(p + 24), h->leap = be32(p + 28);
    h->time = be32(p + 32), h->type = be32(p + 36), h->chars = be32(p + 40);
    return h->type >= 1 && h->type <= 256 && h->time <= 100000 && h->chars <= 65536 &&
           h->leap <= 100000 && (h->isut == 0 || h->isut == h->type) &&
           (h->isstd == 0 || h->isstd == h->type);
}

static size_t block_len(const hdr_t *h, size_t tsize)
{
    return (size_t)h->time * tsize + h->time + (size_t)h->type * 6 + h->chars +
           (size_t)h->leap * (tsize + 4) + h->isstd + h->isut;
}

static int parse_file(ta_tz_t *tz, const uint8_t *buf, size_t len)
{
    hdr_t h;
    int version;
    if (!read_hdr(buf, len, &h, &version) || version < 1 || version > 9)
        return TA_EINVAL;
    size_t tsize = 4;
    const uint8_t *p = buf + 44;
    size_t need = 44 + block_len(&h, 4);
    if (need > len)
        return TA_EINVAL;
    if (version >= 2) { /* the 64-bit block follows the 32-bit one */
        if (!read_hdr(buf + need, len - need, &h, &version))
            return TA_EINVAL;
        p = buf + need + 44;
        tsize = 8;
        if ((size_t)(p - buf) + block_len(&h, 8) > len)
            return TA_EINVAL;
    }
    if (h.leap != 0)
        return TA_EINVAL; /* "right/" zones count leap seconds: not a civil clock */
    const uint8_t *times = p, *idx = times + (size_t)h.time * tsize, *types = idx + h.time;
    tz->n = h.time;
    tz->at = calloc(h.time ? h.time : 1, sizeof(*tz->at));
    tz->off = calloc(h.time ? h.time : 1, sizeof(*tz->off));
    if (tz->at == NULL || tz->off == NULL)
        return -ENOMEM;
    for (uint32_t i = 0; i < h.time; i++) {
        int64_t t = tsize == 8 ? (int64_t)(((uint64_t)be32(times + 8 * i) << 32) | be32(times + 8 * i + 4))
                               : (int64_t)(int32_t)be32(times + 4 * i);
        if (idx[i] >= h.type || (i > 0 && t <= tz->at[i - 1]))
            return TA_EINVAL;
        tz->at[i] = t;
        tz->off[i] = (int32_t)be32(types + 6 * idx[i]);
    }
    tz->off0 = (int32_t)be32(types);
    for (uint32_t i = 0; i < h.type; i++) {
        int32_t o = (int32_t)be32(types + 6 * i);
        if (o < -25 * 3600 || o > 26 * 3600)
            return TA_EINVAL;
    }
    if (version >= 2) {
        const uint8_t *f = p + block_len(&h, 8), *end = buf + len;
        if (f < end && *f == '\n') {
            const uint8_t *nl = memchr(f + 1, '\n', (size_t)(end - f - 1));
            char rule[128];
            size_t rl = nl != NULL ? (size_t)(nl - f - 1) : 0;
            if (nl == NULL || rl >= sizeof(rule))
                return TA_EINVAL;
            memcpy(rule, f + 1, rl);
            rule[rl] = '\0';
            if (rl > 0 && !parse_rule(tz, rule))
                return TA_EINVAL;
        }
    }
    return 0;
}

int ta_tz_load(const char *name, ta_tz_t **out)
{
    *out = NULL;
    if (!name_ok(name))
        return TA_EINVAL;
    ta_tz_t *tz = calloc(1, sizeof(*tz));
    if (tz == NULL)
        return -ENOMEM;
    memcpy(tz->name, name, strlen(name) + 1);
    if (strcmp(name, "UTC") == 0 || strcmp(name, "Etc/UTC") == 0 || strcmp(name, "GMT") == 0 ||
        strcmp(name, "Etc/GMT") == 0) {
        *out = tz; /* no transitions, offset 0, whether tzdata is installed or not */
        return 0;
    }
    char path[sizeof(ZONEINFO_DIR) + TZ_NAME_MAX];
    memcpy(path, ZONEINFO_DIR, sizeof(ZONEINFO_DIR) - 1);
    memcpy(path + sizeof(ZONEINFO_DIR) - 1, name, strlen(name) + 1);
    int rc = TA_ENOTFOUND;
    uint8_t *buf = malloc(TZ_FILE_MAX);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (buf == NULL) {
        rc = -ENOMEM;
    } else if (fd >= 0) {
        size_t len = 0;
        ssize_t r;
        while (len < TZ_FILE_MAX && (r = read(fd, buf + len, TZ_FILE_MAX - len)) > 0)
            len += (size_t)r;
        rc = len > 0 && len < TZ_FILE_MAX ? parse_file(tz, buf, len) : TA_EINVAL;
    } else if (errno == EISDIR || errno == ENOTDIR) {
        rc = TA_EINVAL;
    }
    if (fd >= 0)
        close(fd);
    free(buf);
    if (rc != 0) {
        ta_tz_free(tz);
        return rc;
    }
    *out = tz;
    return 0;
}

void ta_tz_free(ta_tz_t *tz)
{
    if (tz == NULL)
        return;
    free(tz->at);
    free(tz->off);
    free(tz);
}

const char *ta_tz_name(const ta_tz_t *tz)
{
    return tz != NULL ? tz->name : "UTC";
}

int32_t ta_tz_offset(const ta_tz_t *tz, int64_t t)
{
    if (tz == NULL)
        return 0;
    if (tz->n == 0 || t < tz->at[0])
        return tz->n == 0 && tz->has_rule ? rule_offset(tz, t) : tz->off0;
    if (t >= tz->at[tz->n - 1] && tz->has_rule)
        return rule_offset(tz, t);
    size_t lo = 0, hi = tz->n; /* the last transition at or before t */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (tz->at[mid] <= t)
            lo = mid;
        else
            hi = mid;
    }
    return tz->off[lo];
}
