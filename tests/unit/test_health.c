/*
 * test_health.c - the provider route health table (ledger/health.h) on its
 * own, with a clock the test moves: failures in a row cool a route down and
 * the order skips it, 4xx and aborted calls do not count, one trial at a
 * time after the cooldown (given back when its request never ran it, taken
 * again once its deadline passed), a trial that fails cools down again
 * without a new event, every route down -> the least recently failed alone,
 * degraded and back by the window's error rate, weights 3:1 exactly,
 * probes instead of trials, the status JSON, one table shared with forked
 * processes, and a process killed while holding the table's lock.
 *
 * health.c is included so that the test can hold the lock itself.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ledger/health.c"

#define SEC 1000000000LL

static int64_t clock_now = 1000 * SEC;
static int64_t fake_clock(void) { return clock_now; }

static ta_health_event_t events[64];
static int nevents;
static void listen_cb(void *arg, const ta_health_event_t *ev)
{
    (void)arg;
    if (nevents < (int)TA_ARRAY_SIZE(events))
        events[nevents] = *ev;
    nevents++;
}

static void set_conf(int failures, int64_t cooldown_s, int64_t probe_s)
{
    ta_health_conf_t c = {.failures = failures, .cooldown_ms = cooldown_s * 1000,
                          .probe_interval_ms = probe_s * 1000, .degraded_percent = 100};
    ta_health_configure(&c);
}

static int setup(void **state)
{
    (void)state;
    assert_int_equal(ta_health_create(), 0);
    ta_health_set_clock(fake_clock);
    ta_health_set_listener(listen_cb, NULL);
    set_conf(3, 30, 0);
    nevents = 0;
    clock_now += 3600 * SEC; /* a fresh window for every test */
    return 0;
}

/* Two routes of one model: provider pid (priority 1) and pid + 1 (priority 2). */
static void two_routes(ta_health_route_t r[2], uint64_t pid)
{
    r[0] = (ta_health_route_t){pid, "m", "primary", 1, 1, 60000};
    r[1] = (ta_health_route_t){pid + 1, "m", "backup", 2, 1, 60000};
}

/* One request: the order, then route 0 of it ends with outcome. Returns the
 * provider the request tried first. */
static uint64_t call(const ta_health_route_t *r, int n, int outcome, int status, ta_health_req_t *keep)
{
    ta_health_req_t hr;
    int order[TA_MODEL_MAX_ROUTES];
    int k = ta_health_order(7, r, n, order, &hr);
    assert_true(k >= 1);
    ta_health_report(&hr, 0, outcome, status, status ? NULL : "connect", 12);
    ta_health_done(&hr);
    if (keep != NULL)
        *keep = hr;
    return r[order[0]].provider_id;
}

static int state_of(uint64_t pid, const char *up)
{
    int si = slot_find(pid, up, false);
    assert_true(si >= 0);
    return (int)pg->slots[si].state;
}

static void test_failures_cool_down(void **state)
{
    (void)state;
    ta_health_route_t r[2];
    two_routes(r, 100);
    /* a 4xx answer breaks a run of failures; a call the gateway aborted
     * counts nothing (degraded_percent 100 here: no degraded state) */
    for (int i = 0; i < 5; i++) {
        assert_int_equal(call(r, 2, TA_HEALTH_FAIL, 503, NULL), 100);
        assert_int_equal(call(r, 2, TA_HEALTH_FAIL, 0, NULL), 100);
        assert_int_equal(call(r, 2, TA_HEALTH_NONE, 0, NULL), 100);
        assert_int_equal(call(r, 2, TA_HEALTH_OK, 404, NULL), 100);
    }
    assert_int_equal(state_of(100, "m"), TA_HEALTH_HEALTHY);
    assert_int_equal(nevents, 0);
    /* three failures in a row: down, one event */
    call(r, 2, TA_HEALTH_FAIL, 502, NULL);
    call(r, 2, TA_HEALTH_NONE, 0, NULL);
    call(r, 2, TA_HEALTH_FAIL, 0, NULL);
    assert_int_equal(nevents, 0);
    call(r, 2, TA_HEALTH_FAIL, 500, NULL);
    assert_int_equal(state_of(100, "m"), TA_HEALTH_DOWN);
    assert_int_equal(nevents, 1);
    assert_int_equal(events[0].old_state, TA_HEALTH_HEALTHY);
    assert_int_equal(events[0].new_state, TA_HEALTH_DOWN);
    assert_int_equal(events[0].provider_id, 100);
    assert_string_equal(events[0].provider_name, "primary");
    assert_string_equal(events[0].upstream, "m");
    assert_non_null(strstr(events[0].reason, "3 failures in a row (last: HTTP 500)"));
    /* while it cools down, requests go straight to the backup, and only to it */
    for (int i = 0; i < 10; i++) {
        ta_health_req_t hr;
        int order[2];
        assert_int_equal(ta_health_order(7, r, 2, order, &hr), 1);
        assert_int_equal(order[0], 1);
        assert_int_equal(hr.trial, 0);
        ta_health_report(&hr, 0, TA_HEALTH_OK, 200, NULL, 5);
    }
    clock_now += 29 * SEC;
    assert_int_equal(call(r, 2, TA_HEALTH_OK, 200, NULL), 101);
    /* the cooldown is over: the next request is the trial (first), the
     * others keep skipping while it runs */
    clock_now += 2 * SEC;
    ta_health_req_t trial;
    int order[2];
    assert_int_equal(ta_health_order(7, r, 2, order, &trial), 2);
    assert_int_equal(order[0], 0);
    assert_int_equal(trial.trial, 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(call(r, 2, TA_HEALTH_OK, 200, NULL), 101);
    /* it answers: healthy, one event */
    nevents = 0;
    ta_health_report(&trial, 0, TA_HEALTH_OK, 200, NULL, 40);
    ta_health_done(&trial);
    assert_int_equal(state_of(100, "m"), TA_HEALTH_HEALTHY);
    assert_int_equal(nevents, 1);
    assert_int_equal(events[0].old_state, TA_HEALTH_DOWN);
    assert_int_equal(events[0].new_state, TA_HEALTH_HEALTHY);
    assert_string_equal(events[0].reason, "the trial request succeeded");
    assert_int_equal(call(r, 2, TA_HEALTH_OK, 200, NULL), 100);
}

static void cool(const ta_health_route_t *r, int n)
{
    for (int i = 0; i < 3; i++) {
        ta_health_req_t hr;
        int order[TA_MODEL_MAX_ROUTES];
        ta_health_order(7, r, n, order, &hr);
        ta_health_report(&hr, 0, TA_HEALTH_FAIL, 503, NULL, 1);
    }
}

static void test_trial_failure_and_give_back(void **state)
{
    (void)state;
    ta_health_route_t r[2];
    two_routes(r, 200);
    cool(r, 1);
    assert_int_equal(state_of(200, "m"), TA_HEALTH_DOWN);
    clock_now += 31 * SEC;
    /* a trial that fails: still down, a new cooldown, no event */
    nevents = 0;
    ta_health_req_t hr;
    int order[2];
    assert_int_equal(ta_health_order(7, r, 2, order, &hr), 2);
    assert_int_equal(order[0], 0);
    ta_health_report(&hr, 0, TA_HEALTH_FAIL, 0, "timeout_connect", -1);
    ta_health_report(&hr, 1, TA_HEALTH_OK, 200, NULL, 3); /* failed over */
    ta_health_done(&hr);
    assert_int_equal(state_of(200, "m"), TA_HEALTH_DOWN);
    assert_int_equal(nevents, 0);
    assert_int_equal(call(r, 2, TA_HEALTH_OK, 200, NULL), 201);
    /* a trial whose request never ran it (refused by its hold) is given back */
    clock_now += 31 * SEC;
    assert_int_equal(ta_health_order(7, r, 2, order, &hr), 2);
    assert_int_equal(hr.trial, 1);
    ta_health_done(&hr);
    ta_health_req_t again;
    assert_int_equal(ta_health_order(7, r, 2, order, &again), 2);
    assert_int_equal(order[0], 0);
    assert_int_equal(again.trial, 1);
    /* one that is never reported (its worker died) expires at its deadline
     * (the route's total timeout, 60 s here) */
    ta_health_req_t other;
    assert_int_equal(ta_health_order(7, r, 2, order, &other), 1);
    clock_now += 61 * SEC;
    assert_int_equal(ta_health_order(7, r, 2, order, &other), 2);
    assert_int_equal(other.trial, 1);
    /* the first one's late end does not take the second one's claim away */
    ta_health_done(&again);
    ta_health_req_t third;
    assert_int_equal(ta_health_order(7, r, 2, order, &third), 1);
    ta_health_report(&other, 0, TA_HEALTH_OK, 200, NULL, 9);
    assert_int_equal(state_of(200, "m"), TA_HEALTH_HEALTHY);
}

static void test_all_down(void **state)
{
    (void)state;
    ta_health_route_t r[3] = {{300, "a", "p1", 1, 1, 60000}, {301, "b", "p2", 1, 1, 60000},
                              {302, "c", "p3", 2, 1, 60000}};
    /* each route fails three times on its own, 300 first, 302 last */
    for (int i = 0; i < 3; i++) {
        cool(&r[i], 1);
        clock_now += SEC;
    }
    /* every route cools down: the least recently failed (300) alone, a
     * failure of it makes 301 the oldest, and so on */
    ta_health_req_t hr;
    int order[3];
    assert_int_equal(ta_health_order(7, r, 3, order, &hr), 1);
    assert_int_equal(order[0], 0);
    ta_health_report(&hr, 0, TA_HEALTH_FAIL, 503, NULL, 1);
    assert_int_equal(ta_health_order(7, r, 3, order, &hr), 1);
    assert_int_equal(order[0], 1);
    /* its success brings it back */
    ta_health_report(&hr, 0, TA_HEALTH_OK, 200, NULL, 1);
    assert_int_equal(state_of(301, "b"), TA_HEALTH_HEALTHY);
    assert_int_equal(ta_health_order(7, r, 3, order, &hr), 1);
    assert_int_equal(order[0], 1);
}

static void test_weights(void **state)
{
    (void)state;
    ta_health_route_t r[3] = {{400, "w", "heavy", 1, 3, 60000}, {401, "w", "light", 1, 1, 60000},
                              {402, "w", "spare", 5, 1, 60000}};
    int first[3] = {0}, prev = -1, runs = 0;
    for (int i = 0; i < 400; i++) {
        ta_health_req_t hr;
        int order[3];
        assert_int_equal(ta_health_order(9, r, 3, order, &hr), 3);
        first[order[0]]++;
        assert_int_equal(order[2], 2); /* the lower priority stays last */
        assert_int_equal(order[0] + order[1], 1);
        runs += order[0] != prev;
        prev = order[0];
    }
    /* smooth weighted round robin: exactly 3 of every 4, interleaved */
    assert_int_equal(first[0], 300);
    assert_int_equal(first[1], 100);
    assert_true(runs >= 199);
    /* a down route leaves the group: its share goes to the others */
    cool(&r[1], 1);
    for (int i = 0; i < 20; i++) {
        ta_health_req_t hr;
        int order[3];
        assert_int_equal(ta_health_order(9, r, 3, order, &hr), 2);
        assert_int_equal(order[0], 0);
    }
}

static void test_degraded(void **state)
{
    (void)state;
    ta_health_route_t r = {500, "d", "flaky", 1, 1, 60000};
    ta_health_configure(&(ta_health_conf_t){.failures = 3, .cooldown_ms = 30000, .degraded_percent = 10});
    nevents = 0;
    /* failures that never come three in a row, 1 in 2: degraded at the 3rd */
    for (int i = 0; i < 3; i++) {
        call(&r, 1, TA_HEALTH_FAIL, 500, NULL);
        call(&r, 1, TA_HEALTH_OK, 200, NULL);
    }
    assert_int_equal(state_of(500, "d"), TA_HEALTH_DEGRADED);
    assert_int_equal(nevents, 1);
    assert_int_equal(events[0].new_state, TA_HEALTH_DEGRADED);
    assert_non_null(strstr(events[0].reason, "3 of 5 calls failed in the last 5 minutes"));
    /* still tried */
    assert_int_equal(call(&r, 1, TA_HEALTH_OK, 200, NULL), 500);
    /* healthy once the rate is below half the threshold (5%): 3 of 60+ */
    for (int i = 0; i < 53; i++)
        call(&r, 1, TA_HEALTH_OK, 200, NULL);
    assert_int_equal(state_of(500, "d"), TA_HEALTH_DEGRADED);
    call(&r, 1, TA_HEALTH_OK, 200, NULL);
    assert_int_equal(state_of(500, "d"), TA_HEALTH_HEALTHY);
    assert_int_equal(nevents, 2);
    /* or once the failures left the window */
    clock_now += (TA_HEALTH_WINDOW_S + 31) * SEC;
    for (int i = 0; i < 3; i++) {
        call(&r, 1, TA_HEALTH_FAIL, 500, NULL);
        call(&r, 1, TA_HEALTH_OK, 200, NULL);
    }
    assert_int_equal(state_of(500, "d"), TA_HEALTH_DEGRADED);
    clock_now += (TA_HEALTH_WINDOW_S + 31) * SEC;
    call(&r, 1, TA_HEALTH_OK, 200, NULL);
    assert_int_equal(state_of(500, "d"), TA_HEALTH_HEALTHY);
    set_conf(3, 30, 0);
}

/* The probes claimed now for provider pid (routes other tests left down
 * are claimed too, and ignored): how many, and the slot of the last. */
static int due_for(uint64_t pid, int32_t *slot)
{
    ta_health_probe_t due[64];
    int n = ta_health_probe_due(due, 64), k = 0;
    for (int i = 0; i < n; i++)
        if (due[i].provider_id == pid) {
            k++;
            *slot = due[i].slot;
        }
    return k;
}

static void test_probes(void **state)
{
    (void)state;
    set_conf(3, 30, 10);
    ta_health_route_t r[2];
    int32_t slot = -1;
    two_routes(r, 600);
    cool(r, 1);
    /* none before the cooldown is over */
    clock_now += 29 * SEC;
    assert_int_equal(due_for(600, &slot), 0);
    clock_now += 2 * SEC;
    /* no client request is a trial */
    ta_health_req_t hr;
    int order[2];
    assert_int_equal(ta_health_order(7, r, 2, order, &hr), 1);
    assert_int_equal(order[0], 1);
    /* one claim per interval, across workers */
    assert_int_equal(due_for(600, &slot), 1);
    assert_int_equal(due_for(600, &slot), 0);
    ta_health_probe_result(slot, false, "HTTP 503", 5);
    assert_int_equal(state_of(600, "m"), TA_HEALTH_DOWN);
    clock_now += 31 * SEC;
    assert_int_equal(due_for(600, &slot), 1);
    nevents = 0;
    ta_health_probe_result(slot, true, NULL, 5);
    assert_int_equal(state_of(600, "m"), TA_HEALTH_HEALTHY);
    assert_int_equal(nevents, 1);
    assert_string_equal(events[0].reason, "the probe succeeded");
    set_conf(3, 30, 0);
}

static void test_status_json(void **state)
{
    (void)state;
    ta_health_route_t r[2] = {{700, "x", "p", 1, 1, 60000}, {700, "y", "p", 1, 1, 60000}};
    for (int i = 0; i < 10; i++)
        call(&r[0], 1, TA_HEALTH_OK, 200, NULL);
    cool(&r[1], 1);
    json_t *j = ta_health_provider_json(700);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "state")), "degraded");
    assert_string_equal(json_string_value(json_object_get(j, "last_error")), "HTTP 503");
    assert_int_equal(json_integer_value(json_object_get(j, "calls")), 13);
    assert_int_equal(json_integer_value(json_object_get(j, "errors")), 3);
    assert_true(json_real_value(json_object_get(j, "error_rate")) > 0.23 &&
                json_real_value(json_object_get(j, "error_rate")) < 0.24);
    assert_int_equal(json_integer_value(json_object_get(j, "p50_ms")), 25); /* 12 ms: the 10..25 bin */
    json_t *routes = json_object_get(j, "routes");
    assert_int_equal(json_array_size(routes), 2);
    json_t *y = json_array_get(routes, 0);
    if (strcmp(json_string_value(json_object_get(y, "upstream_name")), "y") != 0)
        y = json_array_get(routes, 1);
    assert_string_equal(json_string_value(json_object_get(y, "upstream_name")), "y");
    assert_string_equal(json_string_value(json_object_get(y, "state")), "down");
    assert_true(json_is_string(json_object_get(y, "cooldown_until")));
    assert_int_equal(json_integer_value(json_object_get(y, "consecutive_failures")), 3);
    json_decref(j);
    /* a provider never called: healthy, nothing measured */
    j = ta_health_provider_json(799);
    assert_string_equal(json_string_value(json_object_get(j, "state")), "healthy");
    assert_true(json_is_null(json_object_get(j, "error_rate")));
    assert_int_equal(json_array_size(json_object_get(j, "routes")), 0);
    json_decref(j);
}

/* The table is shared with forked processes (workers): what one reports
 * the others see; a process killed while it holds the table's lock does
 * not stop the others (robust mutex). */
static void test_shared_and_robust(void **state)
{
    (void)state;
    ta_health_route_t r[2];
    two_routes(r, 800);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        cool(r, 2);
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_int_equal(state_of(800, "m"), TA_HEALTH_DOWN);
    ta_health_req_t hr;
    int order[2];
    assert_int_equal(ta_health_order(7, r, 2, order, &hr), 1);
    assert_int_equal(order[0], 1);
    /* a child dies holding the lock */
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        lock();
        raise(SIGKILL);
        _exit(1);
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st));
    clock_now += 31 * SEC;
    assert_int_equal(ta_health_order(7, r, 2, order, &hr), 2); /* the trial */
    ta_health_report(&hr, 0, TA_HEALTH_OK, 200, NULL, 1);    /* takes the lock */
    assert_int_equal(state_of(800, "m"), TA_HEALTH_HEALTHY);
}

int main(void)
{
    ta_log_init('T', TA_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_failures_cool_down, setup),
        cmocka_unit_test_setup(test_trial_failure_and_give_back, setup),
        cmocka_unit_test_setup(test_all_down, setup),
        cmocka_unit_test_setup(test_weights, setup),
        cmocka_unit_test_setup(test_degraded, setup),
        cmocka_unit_test_setup(test_probes, setup),
        cmocka_unit_test_setup(test_status_json, setup),
        cmocka_unit_test_setup(test_shared_and_robust, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
