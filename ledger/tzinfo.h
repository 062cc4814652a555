/*
 * tzinfo.h - UTC offsets of an IANA time zone at any instant, read from the
 * zone's TZif file (RFC 8536) under /usr/share/zoneinfo, without touching
 * the process's TZ (ledger/period.c owns that for quota periods, and a
 * worker must not switch it per request). The statistics place their hour
 * and day buckets with it (ledger/audit.c, docs/API.md "Statistics").
 *
 * Any process, any thread (a loaded zone is immutable). No LMDB.
 */
#ifndef TA_TZINFO_H
#define TA_TZINFO_H

#include <stdbool.h>
#include <stdint.h>

typedef struct ta_tz ta_tz_t;

/** Load zone name ("Asia/Shanghai", "UTC"). The name must be a relative
 *  path of letters, digits, '/', '_', '-', '+' naming a TZif file (no "..",
 *  no POSIX rule string); zones with leap-second records ("right/...") are
 *  refused. Returns 0, TA_EINVAL (not a zone name, or not a zone this reads),
 *  TA_ENOTFOUND (no such zone) or -ENOMEM. */
int ta_tz_load(const char *name, ta_tz_t **out);
void ta_tz_free(ta_tz_t *tz);
/** The zone's name as loaded. */
const char *ta_tz_name(const ta_tz_t *tz);

/** Seconds east of UTC in force at unix time t (NULL: UTC, 0). Past the
 *  file's last transition the footer's POSIX rule decides. */
int32_t ta_tz_offset(const ta_tz_t *tz, int64_t t);

/** Civil date of a day number (days since 1970-01-01) and back. */
void ta_tz_civil(int64_t days, int *year, int *month, int *day);
int64_t ta_tz_days(int year, int month, int day);

#endif
