/*
 * ta.c - error strings, validation errors, money, time, logging and UTF-8.
 *
 * Callable from every process. Process-wide state here (log role/level, the
 * test clock offset) is set once after fork and only read afterwards.
 */
#include "ta.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- errors ------------------------------------------------------------- */

const char *ta_strerror(int err)
{
    switch (err) {
    case TA_EOK: return "success";
    case TA_EINVAL: return "invalid input";
    case TA_ENOTFOUND: return "not found";
    case TA_EEXIST: return "already exists";
    case TA_ESCHEMA: return "record written by a newer or unknown schema";
    case TA_ECORRUPT: return "corrupt record";
    case TA_ETOOBIG: return "size bound exceeded";
    case TA_ELMDB: return "LMDB error";
    case TA_ECRYPTO: return "cryptographic failure";
    case TA_EAUTH: return "authentication failed";
    case TA_EFULL: return "no room left";
    case TA_ECONFIG: return "bad configuration";
    case TA_EBUSY: return "resource in use";
    default: break;
    }
    if (err < 0 && err > TA_EBASE)
        return strerror(-err); /* -errno; glibc returns static text for known codes */
    if (err > 0)
        return strerror(err);
    return "unknown error";
}

/* Copy at most cap-1 bytes and always terminate; the bounded strcpy.
 * memmove: callers pass err->field back into ta_err_set(err, err->field, ...). */
static void copy_bounded(char *dst, size_t cap, const char *src)
{
    size_t n = src ? strlen(src) : 0;
    if (n >= cap)
        n = cap - 1;
    if (n)
        memmove(dst, src, n);
    dst[n] = '\0';
}

int ta_err_set(ta_err_t *err, const char *field, const char *rule, const char *fmt, ...)
{
    if (!err)
        return TA_EINVAL;
    copy_bounded(err->field, sizeof(err->field), field);
    copy_bounded(err->rule, sizeof(err->rule), rule);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    if (n < 0)
        err->message[0] = '\0';
    return TA_EINVAL;
}

/* ---- money -------------------------------------------------------------- */

/*
 * Grammar: ["-"] digit+ ["." digit{1,9}]. No "+", no exponent, no
 * whitespace, no ".5" or "1." (a lone point is a typo more often than a
 * number), "-0" is 0. Accumulated negatively so INT64_MIN parses exactly.
 */
int ta_nano_parse(const char *s, size_t len, ta_nano_t *out)
{
    size_t i = 0;
    bool neg = false;
    if (!s || len == 0)
        return TA_EINVAL;
    if (s[0] == '-') {
        neg = true;
        i = 1;
    }
    size_t int_start = i;
    int64_t acc = 0; /* <= 0, holds -value in nano-units so far */
    /* integer part, counted in whole units first; then scaled */
    while (i < len && s[i] >= '0' && s[i] <= '9') {
        int d = s[i] - '0';
        if (acc < (INT64_MIN + d) / 10)
            return TA_EINVAL;
        acc = acc * 10 - d;
        i++;
    }
    if (i == int_start)
        return TA_EINVAL;
    /* scale units to nanos */
    if (acc < INT64_MIN / TA_NANO_PER_UNIT)
        return TA_EINVAL;
    acc *= TA_NANO_PER_UNIT;
    if (i < len) {
        if (s[i] != '.')
            return TA_EINVAL;
        i++;
        size_t frac_start = i;
        int64_t frac = 0, scale = TA_NANO_PER_UNIT;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            if (i - frac_start >= 9)
                return TA_EINVAL; /* a 10th decimal */
            scale /= 10;
            frac += (s[i] - '0') * scale;
            i++;
        }
        if (i == frac_start || i != len)
            return TA_EINVAL;
        if (acc < INT64_MIN + frac)
            return TA_EINVAL;
        acc -= frac;
    }
    if (!neg) {
        if (acc == INT64_MIN)
            return TA_EINVAL;
        acc = -acc;
    }
    *out = acc;
    return 0;
}

char *ta_nano_format(ta_nano_t v, char *buf)
{
    uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    uint64_t units = mag / TA_NANO_PER_UNIT, frac = mag % TA_NANO_PER_UNIT;
    char fbuf[16];
    int n;
    if (frac) {
        /* nine digits, then drop trailing zeros for the shortest form */
        snprintf(fbuf, sizeof(fbuf), "%09llu", (unsigned long long)frac);
        int l = 9;
        while (l > 0 && fbuf[l - 1] == '0')
            l--;
        fbuf[l] = '\0';
        n = snprintf(buf, TA_NANO_STRLEN, "%s%llu.%s", v < 0 ? "-" : "", (unsigned long long)units,
                     fbuf);
    } else {
        n = snprintf(buf, TA_NANO_STRLEN, "%s%llu", v < 0 ? "-" : "", (unsigned long long)units);
    }
    (void)n;
    return buf;
}

/* ceil(tokens * price / 1e6). tokens < 2^64 and price < 2^63, so the
 * product stays below 2^127 and adding 999999 cannot wrap. A negative or
 * zero price costs nothing. */
ta_nano_t ta_nano_price(uint64_t tokens, ta_nano_t price_per_1m)
{
    if (price_per_1m <= 0 || tokens == 0)
        return 0;
    unsigned __int128 p = (unsigned __int128)tokens * (unsigned __int128)(uint64_t)price_per_1m;
    p = (p + 999999u) / 1000000u;
    if (p > (unsigned __int128)INT64_MAX)
        return INT64_MAX;
    return (ta_nano_t)p;
}

/* ---- time --------------------------------------------------------------- */

static int64_t clock_offset_s;

int64_t ta_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec + clock_offset_s * 1000000000LL;
}

int64_t ta_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void ta_clock_set_offset(int64_t seconds) { clock_offset_s = seconds; }

static bool utc_tm(int64_t unix_s, struct tm *tm)
{
    time_t t = (time_t)unix_s;
    return gmtime_r(&t, tm) != NULL && tm->tm_year >= -1900 && tm->tm_year <= 9999 - 1900;
}

char *ta_time_format(int64_t unix_s, char *buf)
{
    struct tm tm;
    if (!utc_tm(unix_s, &tm)) {
        /* outside years 0..9999: RFC 3339 cannot say it; clamp visibly */
        copy_bounded(buf, 32, unix_s < 0 ? "0000-01-01T00:00:00Z" : "9999-12-31T23:59:59Z");
        return buf;
    }
    char tmp[96]; /* roomy for the compiler's worst case; the real text is 20 bytes */
    snprintf(tmp, sizeof(tmp), "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    copy_bounded(buf, 32, tmp);
    return buf;
}

char *ta_time_format_ms(int64_t unix_ns, char *buf)
{
    int64_t s = unix_ns / 1000000000LL, rem = unix_ns % 1000000000LL;
    if (rem < 0) {
        rem += 1000000000LL;
        s--;
    }
    struct tm tm;
    if (!utc_tm(s, &tm)) {
        copy_bounded(buf, 32, unix_ns < 0 ? "0000-01-01T00:00:00.000Z" : "9999-12-31T23:59:59.999Z");
        return buf;
    }
    char tmp[96];
    snprintf(tmp, sizeof(tmp), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(rem / 1000000));
    copy_bounded(buf, 32, tmp);
    return buf;
}

/* n fixed decimal digits at s[*i]; advances *i. */
static bool digits(const char *s, size_t len, size_t *i, int n, int *out)
{
    int v = 0;
    for (int k = 0; k < n; k++) {
        if (*i >= len || s[*i] < '0' || s[*i] > '9')
            return false;
        v = v * 10 + (s[*i] - '0');
        (*i)++;
    }
    *out = v;
    return true;
}

static bool expect(const char *s, size_t len, size_t *i, char c)
{
    if (*i >= len || s[*i] != c)
        return false;
    (*i)++;
    return true;
}

static int days_in_month(int y, int m)
{
    static const int dm[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return dm[m - 1];
}

int ta_time_parse(const char *s, size_t len, int64_t *unix_s)
{
    size_t i = 0;
    int y, mo, d, h = 0, mi = 0, sec = 0, off = 0;
    if (!s)
        return TA_EINVAL;
    if (!digits(s, len, &i, 4, &y) || !expect(s, len, &i, '-') || !digits(s, len, &i, 2, &mo) ||
        !expect(s, len, &i, '-') || !digits(s, len, &i, 2, &d))
        return TA_EINVAL;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo))
        return TA_EINVAL;
    if (i < len) {
        if (s[i] != 'T' && s[i] != 't' && s[i] != ' ')
            return TA_EINVAL;
        i++;
        if (!digits(s, len, &i, 2, &h) || !expect(s, len, &i, ':') || !digits(s, len, &i, 2, &mi) ||
            !expect(s, len, &i, ':') || !digits(s, len, &i, 2, &sec))
            return TA_EINVAL;
        /* 60 is a leap second; timegm carries it into the next minute */
        if (h > 23 || mi > 59 || sec > 60)
            return TA_EINVAL;
        if (i < len && s[i] == '.') {
            i++;
            size_t fs = i;
            while (i < len && s[i] >= '0' && s[i] <= '9')
                i++;
            if (i == fs)
                return TA_EINVAL;
        }
        if (i >= len)
            return TA_EINVAL; /* RFC 3339 requires the offset */
        if (s[i] == 'Z' || s[i] == 'z') {
            i++;
        } else if (s[i] == '+' || s[i] == '-') {
            int sign = s[i] == '-' ? -1 : 1, oh, om;
            i++;
            if (!digits(s, len, &i, 2, &oh) || !expect(s, len, &i, ':') || !digits(s, len, &i, 2, &om))
                return TA_EINVAL;
            if (oh > 23 || om > 59)
                return TA_EINVAL;
            off = sign * (oh * 3600 + om * 60);
        } else {
            return TA_EINVAL;
        }
        if (i != len)
            return TA_EINVAL;
    }
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    time_t t = timegm(&tm);
    /* an offset can move the instant outside UTC years 0000..9999, which
     * ta_time_format cannot print back (it would clamp): refuse it */
    if ((int64_t)t - off < -62167219200LL || (int64_t)t - off > 253402300799LL)
        return TA_EINVAL;
    *unix_s = (int64_t)t - off;
    return 0;
}

/* ---- logging ------------------------------------------------------------ */

static char log_role = '-';
static int log_level = TA_LOG_INFO;

void ta_log_init(char role, int min_level)
{
    log_role = role;
    log_level = min_level;
}

void ta_log_set_level(int min_level) { log_level = min_level; }

/* Lines stay below PIPE_BUF so one write() is atomic even on a pipe shared
 * by every process; longer messages are cut. */
#define LOG_LINE_MAX 4000

void ta_vlog(int level, const char *fmt, va_list ap)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    if (level < log_level)
        return;
    if (level < TA_LOG_DEBUG)
        level = TA_LOG_DEBUG;
    if (level > TA_LOG_ERROR)
        level = TA_LOG_ERROR;
    int saved_errno = errno; /* callers log strerror(errno) after us */
    char line[LOG_LINE_MAX + 2];
    char ts[32];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now); /* real time: logs ignore the test offset */
    ta_time_format_ms((int64_t)now.tv_sec * 1000000000LL + now.tv_nsec, ts);
    int n = snprintf(line, LOG_LINE_MAX, "%s [%ld] %c %s: ", ts, (long)getpid(), log_role,
                     names[level]);
    if (n < 0)
        goto Exit;
    size_t head = (size_t)n < LOG_LINE_MAX ? (size_t)n : LOG_LINE_MAX - 1;
    int m = vsnprintf(line + head, LOG_LINE_MAX - head, fmt, ap);
    size_t total = head;
    if (m > 0)
        total += (size_t)m < LOG_LINE_MAX - head ? (size_t)m : LOG_LINE_MAX - head - 1;
    /* one event, one line: a message cannot forge another log line */
    for (size_t k = head; k < total; k++)
        if (line[k] == '\n' || line[k] == '\r')
            line[k] = ' ';
    line[total++] = '\n';
    size_t off = 0;
    while (off < total) {
        ssize_t w = write(STDERR_FILENO, line + off, total - off);
        if (w == -1) {
            if (errno == EINTR)
                continue;
            break;
        }
        off += (size_t)w;
    }
Exit:
    errno = saved_errno;
}

void ta_log(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ta_vlog(level, fmt, ap);
    va_end(ap);
}

void ta_bug(const char *file, int line, const char *cond)
{
    ta_log(TA_LOG_ERROR, "BUG at %s:%d: %s", file, line, cond);
    abort();
}

/* ---- UTF-8 -------------------------------------------------------------- */

bool ta_utf8_valid(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp, min;
        if (c >= 0xC2 && c <= 0xDF) {
            n = 1, cp = c & 0x1F, min = 0x80;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2, cp = c & 0x0F, min = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false; /* continuation byte, C0/C1 overlong lead, or > U+10FFFF lead */
        }
        if (len - i - 1 < n)
            return false;
        for (size_t k = 1; k <= n; k++) {
            unsigned cc = s[i + k];
            if ((cc & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (cc & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += n + 1;
    }
    return true;
}

int ta_mutex_init_shared(pthread_mutex_t *m)
{
    pthread_mutexattr_t ma;
    int rc = -pthread_mutexattr_init(&ma);
    if (rc != 0)
        return rc;
    rc = -pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    if (rc == 0)
        rc = -pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
    if (rc == 0)
        rc = -pthread_mutex_init(m, &ma);
    pthread_mutexattr_destroy(&ma);
    return rc;
}
