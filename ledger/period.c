/*
 * period.c - calendar-aligned quota periods (day, ISO week, month) in the
 * quota timezone, and the process timezone they are computed in.
 *
 * Timezone model: a process computes local periods with localtime_r/mktime,
 * which read the process's TZ. ta_quota_set_timezone() validates the name and
 * does setenv("TZ") + tzset() ONCE at startup (the master calls it before
 * fork, so every child inherits it; a child may call it again, it is cheap).
 * ta_period_*() never touch TZ on the hot path:
 *   - UTC names ("UTC", "Etc/UTC", "GMT", "Etc/GMT") use gmtime_r/timegm and
 *     do not depend on TZ at all;
 *   - NULL or "" means "the process timezone";
 *   - any other name equal to the process timezone uses localtime_r/mktime;
 *   - a name different from the process timezone (a test, or a config
 *     reload) switches the process timezone to it (slow path, logged once per
 *     switch). An unknown name falls back to UTC with a warning.
 * Results are memoized in a small per-process cache keyed by (tz, period):
 * the period containing `now` is almost always the cached one, so the hot
 * path is a string compare and two integer compares.
 *
 * DST: local midnight is built with tm_isdst = -1 so mktime picks the offset
 * in force on that date; a day is 23 or 25 hours around a change, and weeks
 * and months simply span the change. In zones whose DST jump happens AT
 * midnight, mktime normalizes the missing 00:00 to the nearest valid time;
 * the guards below keep start <= now < end regardless.
 *
 * Not thread-safe (static cache, setenv): tokenaudit processes are
 * single-threaded event loops. No LMDB here.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "ledger/quota.h"

#define TZ_NAME_MAX 64
#define ZONEINFO_DIR "/usr/share/zoneinfo/"

static char proc_tz[TZ_NAME_MAX] = "UTC"; /* what TZ is set to in this process */
static bool proc_tz_set;                   /* ta_quota_set_timezone() was called */

typedef struct period_cache {
    char tz[TZ_NAME_MAX];
    int period;
    int64_t start, end;
} period_cache_t;
static period_cache_t cache[8];
static unsigned cache_next;

static bool is_utc_name(const char *tz)
{
    return strcmp(tz, "UTC") == 0 || strcmp(tz, "Etc/UTC") == 0 || strcmp(tz, "GMT") == 0 ||
           strcmp(tz, "Etc/GMT") == 0;
}

/* A zone name is a relative path below the zoneinfo directory made of
 * ordinary characters: nothing that could escape it or look like a POSIX TZ
 * rule string ("CET-1CEST,M3.5.0"), which glibc would accept silently. */
static bool tz_name_ok(const char *tz)
{
    size_t n = strlen(tz);
    if (n == 0 || n >= TZ_NAME_MAX || tz[0] == '/' || strstr(tz, "..") != NULL)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = tz[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '/' || c == '_' || c == '-' || c == '+'))
            return false;
    }
    if (is_utc_name(tz))
        return true;
    char path[sizeof(ZONEINFO_DIR) + TZ_NAME_MAX];
    memcpy(path, ZONEINFO_DIR, sizeof(ZONEINFO_DIR) - 1);
    memcpy(path + sizeof(ZONEINFO_DIR) - 1, tz, n + 1);
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

int ta_quota_set_timezone(const char *tz)
{
    if (tz == NULL || !tz_name_ok(tz))
        return TA_EINVAL;
    if (proc_tz_set && strcmp(proc_tz, tz) == 0)
        return 0;
    if (setenv("TZ", tz, 1) == -1)
        return -errno;
    tzset();
    size_t n = strlen(tz);
    memcpy(proc_tz, tz, n + 1);
    proc_tz_set = true;
    return 0;
}

const char *ta_quota_timezone(void)
{
    return proc_tz;
}

/* Resolve the zone a computation runs in: returns true for UTC arithmetic,
 * false for local time (TZ is then set to *name). */
static bool resolve_tz(const char **name)
{
    const char *tz = *name;
    if (tz == NULL || tz[0] == '\0')
        tz = proc_tz;
    *name = tz;
    if (is_utc_name(tz))
        return true;
    if (proc_tz_set && strcmp(tz, proc_tz) == 0)
        return false;
    /* Slow path: a zone other than the process one. */
    if (ta_quota_set_timezone(tz) != 0) {
        ta_log(TA_LOG_WARN, "quota timezone \"%.64s\" is unknown; using UTC", tz);
        *name = "UTC";
        return true;
    }
    ta_log(TA_LOG_INFO, "process timezone switched to %s", tz);
    return false;
}

static void to_tm(int64_t t, bool utc, struct tm *tm)
{
    time_t tt = (time_t)t;
    memset(tm, 0, sizeof(*tm));
    if (utc)
        gmtime_r(&tt, tm);
    else
        localtime_r(&tt, tm);
}

static int64_t from_tm(struct tm *tm, bool utc)
{
    tm->tm_isdst = -1;
    return utc ? (int64_t)timegm(tm) : (int64_t)mktime(tm);
}

static int days_in_month(int year, int mon /* 0..11 */)
{
    static const int d[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mon == 1) {
        int y = year + 1900;
        bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        return leap ? 29 : 28;
    }
    return d[mon];
}

/* Start (local midnight) of the period containing t. */
static int64_t compute_start(int period, int64_t t, bool utc)
{
    struct tm tm;
    to_tm(t, utc, &tm);
    tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
    switch (period) {
    case TA_PERIOD_WEEK:
        tm.tm_mday -= (tm.tm_wday + 6) % 7; /* back to Monday (ISO) */
        break;
    case TA_PERIOD_MONTH:
        tm.tm_mday = 1;
        break;
    default:
        break;
    }
    int64_t s = from_tm(&tm, utc);
    if (s > t) /* a midnight that does not exist normalized forward */
        s = t;
    return s;
}

/* Start of the period after the one that starts at (or contains) start. */
static int64_t compute_next(int period, int64_t start, bool utc)
{
    struct tm tm;
    to_tm(start, utc, &tm);
    tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
    switch (period) {
    case TA_PERIOD_DAY:
        tm.tm_mday += 1;
        break;
    case TA_PERIOD_WEEK:
        tm.tm_mday += 7 - (tm.tm_wday + 6) % 7;
        break;
    default: /* month */
        tm.tm_mday = 1;
        tm.tm_mon += 1;
        break;
    }
    int64_t e = from_tm(&tm, utc);
    if (e <= start) /* midnight normalized back onto start: skip one more day */
        e = compute_next(TA_PERIOD_DAY, start + 86400, utc);
    return e;
}

static period_cache_t *cache_find_containing(const char *tz, int period, int64_t t)
{
    for (size_t i = 0; i < TA_ARRAY_SIZE(cache); i++) {
        period_cache_t *c = &cache[i];
        if (c->period == period && c->start <= t && t < c->end && strcmp(c->tz, tz) == 0)
            return c;
    }
    return NULL;
}

static void cache_add(const char *tz, int period, int64_t start, int64_t end)
{
    period_cache_t *c = &cache[cache_next++ % TA_ARRAY_SIZE(cache)];
    size_t n = strnlen(tz, TZ_NAME_MAX - 1);
    memcpy(c->tz, tz, n);
    c->tz[n] = '\0';
    c->period = period;
    c->start = start;
    c->end = end;
}

int64_t ta_period_start(int period, int64_t now_s, const char *tz)
{
    if (period != TA_PERIOD_DAY && period != TA_PERIOD_WEEK && period != TA_PERIOD_MONTH)
        return 0;
    const char *name = tz;
    if (name == NULL || name[0] == '\0')
        name = proc_tz;
    period_cache_t *c = cache_find_containing(name, period, now_s);
    if (c != NULL)
        return c->start;
    const char *key = name; /* cache under the name asked for, even if it fell back to UTC */
    bool utc = resolve_tz(&name);
    int64_t s = compute_start(period, now_s, utc);
    int64_t e = compute_next(period, s, utc);
    if (e <= now_s) { /* only in a pathological zone: step until now is inside */
        for (int i = 0; i < 4 && e <= now_s; i++) {
            s = e;
            e = compute_next(period, s, utc);
        }
        if (e <= now_s)
            return s;
    }
    cache_add(key, period, s, e);
    return s;
}

int64_t ta_period_end(int period, int64_t start_s, const char *tz)
{
    if (period != TA_PERIOD_DAY && period != TA_PERIOD_WEEK && period != TA_PERIOD_MONTH)
        return INT64_MAX;
    const char *name = tz;
    if (name == NULL || name[0] == '\0')
        name = proc_tz;
    period_cache_t *c = cache_find_containing(name, period, start_s);
    if (c != NULL && c->start == start_s)
        return c->end;
    bool utc = resolve_tz(&name);
    return compute_next(period, start_s, utc);
}

/* t moved k whole periods later, keeping the local clock time; a month step
 * keeps the day of month, clamped to the target month's length (Jan 31 + 1
 * month = Feb 28/29, never Mar 3). */
static int64_t add_periods(int period, int64_t t, int64_t k, bool utc)
{
    struct tm tm;
    to_tm(t, utc, &tm);
    switch (period) {
    case TA_PERIOD_DAY:
        tm.tm_mday += (int)k;
        break;
    case TA_PERIOD_WEEK:
        tm.tm_mday += (int)(7 * k);
        break;
    default: {
        int64_t m = (int64_t)tm.tm_year * 12 + tm.tm_mon + k;
        tm.tm_year = (int)(m / 12);
        tm.tm_mon = (int)(m % 12);
        int dim = days_in_month(tm.tm_year, tm.tm_mon);
        if (tm.tm_mday > dim)
            tm.tm_mday = dim;
        break;
    }
    }
    return from_tm(&tm, utc);
}

int64_t ta_period_renew(int period, int64_t expires_at, int64_t now_s, const char *tz)
{
    if (period != TA_PERIOD_DAY && period != TA_PERIOD_WEEK && period != TA_PERIOD_MONTH)
        return expires_at;
    if (expires_at > now_s)
        return expires_at;
    const char *name = tz;
    bool utc = resolve_tz(&name);
    /* Jump close with a lower bound on the count of periods (a month is at
     * most 31 days, a day at most 25 hours), then step: at most a few steps. */
    int64_t unit = period == TA_PERIOD_DAY ? 90000 : period == TA_PERIOD_WEEK ? 7 * 90000
                                                                               : 31 * 90000;
    int64_t k = (now_s - expires_at) / unit;
    if (k > 1000000)
        k = 1000000; /* ~2700 years of days; beyond that, step from there */
    int64_t e = expires_at;
    for (int i = 0; i < 100000; i++) {
        e = add_periods(period, expires_at, k, utc);
        if (e > now_s)
            return e;
        k++;
    }
    return now_s + 1; /* unreachable for sane inputs; still in the future */
}
