/*
 * throttle.h - the login throttle: failed logins counted per account and per
 * client address in one table shared by every worker process, with a
 * capped exponential wait (429 + Retry-After) checked before any password
 * hash runs. The layout, the lock and the crash behaviour are described at
 * the top of throttle.c.
 *
 * ta_throttle_create: the master, before its first fork (the table is an
 * anonymous shared mapping every worker of every generation inherits).
 * The rest: worker processes, on the loop thread; unit tests.
 */
#ifndef TA_THROTTLE_H
#define TA_THROTTLE_H

#include <stdint.h>

typedef struct ta_throttle ta_throttle_t; /* opaque; the shared table */

/* The policy (settings login_*, master/config.c). A key (an account, an
 * address) may fail `*_failures` times in a row; the failure that reaches
 * that count makes its next logins wait backoff_ms, each further failure
 * doubles the wait, up to `*_max_ms`. A refused (429) attempt counts
 * nothing. A key is forgotten once it has been quiet for its max_ms after
 * its last wait ended. */
typedef struct ta_throttle_conf {
    int64_t account_failures;   /* >= 1 */
    int64_t address_failures;   /* >= 1 */
    int64_t backoff_ms;         /* >= 1 */
    int64_t account_max_ms;     /* >= backoff_ms */
    int64_t address_max_ms;     /* >= backoff_ms */
} ta_throttle_conf_t;

/* What ta_throttle_login_begin counted for the address, so that
 * ta_throttle_login_ok can take exactly that back. */
typedef struct ta_throttle_attempt {
    uint32_t account_failures;     /* the account's count after this attempt's */
    int64_t account_prev_until_ms; /* its wait before this attempt's */
    uint32_t address_failures;     /* the same for the address */
    int64_t address_prev_until_ms;
} ta_throttle_attempt_t;

/** Map a new, empty table (MAP_SHARED | MAP_ANONYMOUS, about 260 KiB) with
 *  a random key for its hash. Returns 0, -errno or TA_ECRYPTO. */
int ta_throttle_create(ta_throttle_t **out);
/** Unmap (the last user; tests). NULL is fine. */
void ta_throttle_destroy(ta_throttle_t *t);

/** Start a login attempt for account (the lower-cased e-mail as sent) from
 *  address (the client's numeric address; IPv6 counts per /64, an
 *  IPv4-mapped IPv6 address as its IPv4 address). Returns 0 when the
 *  attempt may go on (it is then counted as a failure of both keys until
 *  ta_throttle_login_ok withdraws it, so a burst of parallel attempts is
 *  throttled like a sequence), or the seconds to wait (>= 1, for
 *  Retry-After) when either key is waiting; then nothing is counted.
 *  now_ms: a monotonic clock in ms. t NULL: always 0. */
int ta_throttle_login_begin(ta_throttle_t *t, const ta_throttle_conf_t *conf, const char *account,
                            const char *address, int64_t now_ms, ta_throttle_attempt_t *at);
/** The attempt begun by ta_throttle_login_begin (at) succeeded: the
 *  account's failures are cleared; the address gets back the one failure
 *  the attempt counted, and the wait it had before when no other failure
 *  came in between (else only the count: the wait stays, or ends below the
 *  limit), but keeps the others, so logging into one's own account cannot
 *  reset the count of guesses at other accounts from the same address.
 *  t NULL: nothing. */
void ta_throttle_login_ok(ta_throttle_t *t, const ta_throttle_conf_t *conf, const char *account,
                          const char *address, const ta_throttle_attempt_t *at);
/** The attempt begun by ta_throttle_login_begin (at) never ran (the
 *  worker's password queue was full): both keys get back its count, as the
 *  address does in ta_throttle_login_ok. t NULL: nothing. */
void ta_throttle_login_cancel(ta_throttle_t *t, const ta_throttle_conf_t *conf,
                              const char *account, const char *address,
                              const ta_throttle_attempt_t *at);

#endif
