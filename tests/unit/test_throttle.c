/*
 * test_throttle.c - the login throttle table (admin/throttle.h) on its own,
 * with a clock the test moves: the waits, their doubling and bound, the
 * per-account and per-address counts, what a success clears, IPv6 /64
 * grouping, forgetting, a flood of names, and one table shared with a
 * forked process as workers share it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "admin/throttle.h"

static const ta_throttle_conf_t conf = {
    .account_failures = 3,
    .address_failures = 5,
    .backoff_ms = 1000,
    .account_max_ms = 4000,
    .address_max_ms = 60000,
};

static int setup(void **state)
{
    ta_throttle_t *t;
    assert_int_equal(ta_throttle_create(&t), 0);
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    ta_throttle_destroy(*state);
    return 0;
}

static ta_throttle_attempt_t last; /* of the latest begin() */

static int begin(ta_throttle_t *t, const char *acct, const char *addr, int64_t now)
{
    return ta_throttle_login_begin(t, &conf, acct, addr, now, &last);
}

/* The latest begin() succeeded. */
static void ok(ta_throttle_t *t, const char *acct, const char *addr)
{
    ta_throttle_login_ok(t, &conf, acct, addr, &last);
}

/* An account fails account_failures times; then every login of it waits,
 * from any address, with the right password too (the caller never hashes).
 * The wait doubles with each failure and stops at account_max_ms. */
static void test_account_backoff(void **state)
{
    ta_throttle_t *t = *state;
    int64_t now = 1000000;

    assert_int_equal(begin(t, "a@x", "10.0.0.1", now), 0);
    assert_int_equal(begin(t, "a@x", "10.0.0.1", now), 0);
    assert_int_equal(begin(t, "a@x", "10.0.0.1", now), 0); /* the third failure: wait 1 s */
    assert_int_equal(begin(t, "a@x", "10.0.0.1", now), 1);
    assert_int_equal(begin(t, "a@x", "10.0.0.2", now + 999), 1);
    /* refused attempts counted nothing: the wait is still 1 s from the failure */
    assert_int_equal(begin(t, "a@x", "10.0.0.3", now + 1000), 0); /* 4th: 2 s */
    assert_int_equal(begin(t, "a@x", "10.0.0.3", now + 1000), 2);
    assert_int_equal(begin(t, "a@x", "10.0.0.4", now + 3000), 0); /* 5th: 4 s */
    assert_int_equal(begin(t, "a@x", "10.0.0.4", now + 3000), 4);
    assert_int_equal(begin(t, "a@x", "10.0.0.5", now + 7000), 0); /* 6th: 8 s, bound 4 s */
    assert_int_equal(begin(t, "a@x", "10.0.0.5", now + 7000), 4);
    assert_int_equal(begin(t, "a@x", "10.0.0.5", now + 10001), 1); /* rounded up */
    /* another account is not concerned */
    assert_int_equal(begin(t, "b@x", "10.0.0.9", now + 7000), 0);
    /* a success clears the account */
    assert_int_equal(begin(t, "a@x", "10.0.0.6", now + 11000), 0);
    ok(t, "a@x", "10.0.0.6");
    assert_int_equal(begin(t, "a@x", "10.0.0.6", now + 11000), 0);
    assert_int_equal(begin(t, "a@x", "10.0.0.6", now + 11000), 0);
    assert_int_equal(begin(t, "a@x", "10.0.0.6", now + 11000), 0);
    assert_int_equal(begin(t, "a@x", "10.0.0.6", now + 11000), 1);
}

/* One address fails for several accounts: each account waits past its own
 * count; the address waits past the address count, for every account. */
static void test_address_count(void **state)
{
    ta_throttle_t *t = *state;
    int64_t now = 5000;

    for (int i = 0; i < 3; i++)
        assert_int_equal(begin(t, "a@x", "192.0.2.7", now), 0);
    assert_int_equal(begin(t, "a@x", "192.0.2.7", now), 1);   /* the account */
    assert_int_equal(begin(t, "b@x", "192.0.2.7", now), 0);   /* 4th of the address */
    assert_int_equal(begin(t, "c@x", "192.0.2.7", now), 0);   /* 5th: the address waits */
    assert_int_equal(begin(t, "d@x", "192.0.2.7", now), 1);
    /* elsewhere, d logs in */
    assert_int_equal(begin(t, "d@x", "192.0.2.8", now), 0);
    ok(t, "d@x", "192.0.2.8");
    /* a success from the address gives back its own count only: b's login
     * after the wait counts (6th, 2 s wait), its success withdraws it, and
     * the address still has its five failures */
    assert_int_equal(begin(t, "b@x", "192.0.2.7", now + 1000), 0);
    ok(t, "b@x", "192.0.2.7");
    assert_int_equal(begin(t, "e@x", "192.0.2.7", now + 1000), 0); /* 6th again: wait 2 s */
    assert_int_equal(begin(t, "f@x", "192.0.2.7", now + 1000), 2);
}

/* The success of an attempt that was the one to reach the address count
 * ends the wait it started; failures of other accounts stay. */
static void test_success_withdraws(void **state)
{
    ta_throttle_t *t = *state;
    int64_t now = 7000;

    for (int i = 0; i < 4; i++) {
        char acct[16];
        snprintf(acct, sizeof(acct), "u%d@x", i);
        assert_int_equal(begin(t, acct, "198.51.100.1", now), 0);
    }
    assert_int_equal(begin(t, "me@x", "198.51.100.1", now), 0); /* 5th: wait starts */
    ok(t, "me@x", "198.51.100.1");     /* ... and ends */
    assert_int_equal(begin(t, "me@x", "198.51.100.1", now), 0);
    assert_int_equal(begin(t, "u9@x", "198.51.100.1", now), 1); /* 5 failures in all */
}

/* An attempt that never ran gives both counts back, its wait too. */
static void test_cancel(void **state)
{
    ta_throttle_t *t = *state;
    int64_t now = 8000;

    assert_int_equal(begin(t, "c@x", "10.5.0.1", now), 0);
    assert_int_equal(begin(t, "c@x", "10.5.0.1", now), 0);
    assert_int_equal(begin(t, "c@x", "10.5.0.1", now), 0); /* the wait starts ... */
    ta_throttle_login_cancel(t, &conf, "c@x", "10.5.0.1", &last); /* ... and ends */
    assert_int_equal(begin(t, "c@x", "10.5.0.1", now), 0);
    assert_int_equal(begin(t, "c@x", "10.5.0.1", now), 1);
}

/* IPv6 counts per /64; an IPv4-mapped address counts as the IPv4 one. */
static void test_addresses(void **state)
{
    ta_throttle_t *t = *state;
    int64_t now = 9000;
    char acct[16];

    for (int i = 0; i < 5; i++) {
        char addr[64];
        snprintf(addr, sizeof(addr), "2001:db8:1:2::%x", i + 1);
        snprintf(acct, sizeof(acct), "v6-%d@x", i);
        assert_int_equal(begin(t, acct, addr, now), 0);
    }
    assert_int_equal(begin(t, "other@x", "2001:db8:1:2:ffff::9", now), 1);
    assert_int_equal(begin(t, "other@x", "2001:db8:1:3::1", now), 0);

    for (int i = 0; i < 4; i++) {
        snprintf(acct, sizeof(acct), "v4-%d@x", i);
        assert_int_equal(begin(t, acct, "203.0.113.5", now), 0);
    }
    assert_int_equal(begin(t, "v4-9@x", "::ffff:203.0.113.5", now), 0);
    assert_int_equal(begin(t, "v4-10@x", "203.0.113.5", now), 1);
}

/* Failures are forgotten once quiet for the bound after the wait ended, not
 * before: one attempt per wait keeps the count. */
static void test_forget(void **state)
{
    ta_throttle_t *t = *state;
    int64_t now = 100000;

    for (int i = 0; i < 3; i++)
        assert_int_equal(begin(t, "f@x", "10.1.0.1", now), 0);
    /* the wait (1 s) ended at +1000; the count is forgotten at +1000 + 4000 */
    assert_int_equal(begin(t, "f@x", "10.1.0.2", now + 4999), 0); /* 4th: 2 s */
    assert_int_equal(begin(t, "f@x", "10.1.0.2", now + 4999), 2);
    assert_int_equal(begin(t, "f@x", "10.1.0.2", now + 6999 + 4000), 0); /* forgotten: 1st */
    assert_int_equal(begin(t, "f@x", "10.1.0.3", now + 10999), 0);
    assert_int_equal(begin(t, "f@x", "10.1.0.4", now + 10999), 0);  /* 3rd: wait */
    assert_int_equal(begin(t, "f@x", "10.1.0.4", now + 10999), 1);
}

/* Far more names than slots: the table forgets the quietest, a busy key
 * keeps its count. */
static void test_flood(void **state)
{
    ta_throttle_t *t = *state;
    int64_t now = 200000;
    char acct[32], addr[32];

    for (int i = 0; i < 3; i++)
        assert_int_equal(begin(t, "victim@x", "10.2.0.1", now), 0);
    for (int i = 0; i < 40000; i++) {
        snprintf(acct, sizeof(acct), "n%d@x", i);
        snprintf(addr, sizeof(addr), "10.3.%d.%d", (i >> 8) & 255, i & 255);
        begin(t, acct, addr, now - 10 + (i % 5));
    }
    /* every flooding name failed before the victim's last failure, so
     * each slot the flood wanted held an older one than the victim's: its
     * wait is still there, and the table keeps counting new names */
    assert_int_equal(begin(t, "victim@x", "10.2.0.9", now), 1);
    assert_int_equal(begin(t, "fresh@x", "10.9.9.9", now), 0);
    assert_int_equal(begin(t, "fresh@x", "10.9.9.9", now), 0);
    assert_int_equal(begin(t, "fresh@x", "10.9.9.9", now), 0);
    assert_int_equal(begin(t, "fresh@x", "10.9.9.9", now), 1);
}

/* A forked process (another worker) counts into the same table. */
static void test_shared_across_fork(void **state)
{
    ta_throttle_t *t = *state;
    int64_t now = 300000;
    int st;
    pid_t pid = fork();

    assert_true(pid >= 0);
    if (pid == 0) {
        int ok = 1;
        for (int i = 0; i < 3; i++)
            ok &= begin(t, "shared@x", "10.4.0.1", now) == 0;
        _exit(ok ? 0 : 1);
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_int_equal(begin(t, "shared@x", "10.4.0.2", now), 1);
}

static void test_null_table(void **state)
{
    (void)state;
    ta_throttle_attempt_t at;
    for (int i = 0; i < 10; i++)
        assert_int_equal(ta_throttle_login_begin(NULL, &conf, "a@x", "10.0.0.1", 0, &at), 0);
    ta_throttle_login_ok(NULL, &conf, "a@x", "10.0.0.1", &at);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_account_backoff),
        T(test_address_count),
        T(test_success_withdraws),
        T(test_cancel),
        T(test_addresses),
        T(test_forget),
        T(test_flood),
        T(test_shared_across_fork),
        cmocka_unit_test(test_null_table),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
