/*
 * ta.h - the few things every tokenaudit process and library shares:
 * error codes, money, time, validation errors and logging.
 *
 * Callable from every process (master, worker, billing, CLI). Nothing here
 * touches LMDB, h2o or curl.
 */
#ifndef TA_H
#define TA_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <pthread.h>
#include <stdint.h>

/* Money: a signed count of nano-units (1e-9) of the account currency.
 * Never a float. */
typedef int64_t ta_nano_t;
#define TA_NANO_PER_UNIT 1000000000LL

/* Error codes: functions return 0, a negative TA_E* code, or -errno. */
enum {
    TA_EOK = 0,
    TA_EBASE = -10000,
    TA_EINVAL = TA_EBASE - 1,     /* bad input (see the ta_err_t for what) */
    TA_ENOTFOUND = TA_EBASE - 2,  /* no such record */
    TA_EEXIST = TA_EBASE - 3,     /* duplicate (unique index) */
    TA_ESCHEMA = TA_EBASE - 4,    /* data written by a newer/unknown schema */
    TA_ECORRUPT = TA_EBASE - 5,   /* undecodable record */
    TA_ETOOBIG = TA_EBASE - 6,    /* a bound was exceeded */
    TA_ELMDB = TA_EBASE - 7,      /* an LMDB call failed (logged with detail) */
    TA_ECRYPTO = TA_EBASE - 8,    /* OpenSSL failure or authentication tag mismatch */
    TA_EAUTH = TA_EBASE - 9,      /* bad credentials / token */
    TA_EFULL = TA_EBASE - 10,     /* no room (ring full, map full) */
    TA_ECONFIG = TA_EBASE - 11,   /* bad configuration */
    TA_EBUSY = TA_EBASE - 12,     /* resource in use (e.g. group used by quotas) */
};

/** Message for a TA_E* code or a -errno value. Never NULL; static storage. */
const char *ta_strerror(int err);

/* A validation failure: which field, which rule, and a sentence for humans.
 * Filled by schema validation and by the config parser; the HTTP layer turns it
 * into {"error":{..., "param": field, "fields": {field: message}}}. */
typedef struct ta_err {
    char field[64];    /* "email", "routes[0].priority", "listen" ... ; "" if none */
    char rule[32];     /* "required", "type", "max_length", "min", "max", "enum", "format", "unique" ... */
    char message[256]; /* "email: must be a valid e-mail address" */
} ta_err_t;

/** Fill err (may be NULL) and return TA_EINVAL. printf-style message. */
int ta_err_set(ta_err_t *err, const char *field, const char *rule, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- money ------------------------------------------------------------ */

/** Parse a decimal string ("2.5", "0.000000001", "-3") into nano-units.
 *  Rejects more than 9 decimals, exponents, empty strings, overflow of int64.
 *  Returns 0 or TA_EINVAL. */
int ta_nano_parse(const char *s, size_t len, ta_nano_t *out);

/** Format nano-units as the shortest decimal string ("2.5", "0", "0.000125").
 *  buf must hold at least TA_NANO_STRLEN bytes. Returns buf. */
#define TA_NANO_STRLEN 32
char *ta_nano_format(ta_nano_t v, char *buf);

/** cost of tokens at price_per_1m (nano per 1M tokens), 128-bit intermediate,
 *  rounded up to a whole nano-unit. Saturates at INT64_MAX. */
ta_nano_t ta_nano_price(uint64_t tokens, ta_nano_t price_per_1m);

/* ---- time ------------------------------------------------------------- */

/** Wall-clock time in ns since the Unix epoch, plus the test-only clock offset
 *  (setting `test_clock_offset_s`), so period tests can move time. */
int64_t ta_now_ns(void);
static inline int64_t ta_now_s(void) { return ta_now_ns() / 1000000000LL; }
/** Monotonic ns (no offset); for timeouts and latency. */
int64_t ta_mono_ns(void);
/** Set the test-only clock offset (seconds). */
void ta_clock_set_offset(int64_t seconds);

/** Format unix seconds as RFC 3339 UTC ("2026-11-26T13:09:17Z"); buf >= 32 bytes. */
char *ta_time_format(int64_t unix_s, char *buf);
/** Parse RFC 3339 ("...Z" or "+hh:mm", optional fraction, which is dropped) or a
 *  bare date "2026-11-26" (midnight UTC). Returns 0 or TA_EINVAL. */
int ta_time_parse(const char *s, size_t len, int64_t *unix_s);

/* A mutex in memory shared by forked processes (MAP_SHARED), robust: a
 * process that dies holding it leaves it to the next locker with
 * EOWNERDEAD instead of blocking everyone. 0 or -errno. */
int ta_mutex_init_shared(pthread_mutex_t *m);
/** Format unix ns as RFC 3339 UTC with milliseconds ("2026-11-26T13:09:17.123Z");
 *  buf >= 32 bytes. Used for TIME_NS fields and log lines. */
char *ta_time_format_ms(int64_t unix_ns, char *buf);

/* ---- logging ---------------------------------------------------------- */

enum { TA_LOG_DEBUG = 0, TA_LOG_INFO, TA_LOG_WARN, TA_LOG_ERROR };

/** Set once per process after fork: role is 'M' master, 'W' worker,
 *  'B' billing, 'C' command line. */
void ta_log_init(char role, int min_level);
void ta_log_set_level(int min_level);
/** One line to stderr: "2026-11-26T13:09:17.123Z [pid] W info: message".
 *  Never pass secrets; log key prefixes only. */
void ta_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ta_vlog(int level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* Cheap invariant that stays on in release builds. */
#define TA_BUG_ON(cond)                                                                            \
    do {                                                                                           \
        if (__builtin_expect(!!(cond), 0))                                                         \
            ta_bug(__FILE__, __LINE__, #cond);                                                     \
    } while (0)
void ta_bug(const char *file, int line, const char *cond) __attribute__((noreturn));

#define TA_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
