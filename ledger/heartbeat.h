/*
 * heartbeat.h - a tiny MAP_SHARED page through which billing tells the
 * workers (and the master) that it is alive, and the master publishes its
 * config generation.
 *
 *   one 4 KiB anonymous MAP_SHARED page, created by the master before the
 *   first fork and inherited by every child (workers, billing, restarts):
 *
 *   +--------+---------+-------------+--------------+----------------+
 *   | magic  | version | billing_pid | billing_beat | generation ... |
 *   | u32    | u32     | i32 (atomic)| i64 mono ns  | u64            |
 *   +--------+---------+-------------+--------------+----------------+
 *   | billing_events u64 | billing_warnings u64 |   (counters, relaxed adds)
 *
 * Writers: the master writes billing_pid (when it forks / reaps billing) and
 * generation (on each SIGHUP reload); billing writes billing_beat with
 * ta_heartbeat_beat() at least every second, and at start before anything
 * slow. Readers: workers (GET /healthz) and the master's log lines.
 * Every field is one aligned word accessed with relaxed/release/acquire
 * atomics; no field depends on another, so no lock is needed.
 *
 * CLOCK_MONOTONIC is system-wide, so a beat written by billing is comparable
 * with the worker's own clock. A billing process that dies leaves its last
 * beat behind: the master zeroes billing_pid when it reaps it, so /healthz
 * turns 503 at once instead of after the staleness bound. Nothing here
 * survives the master (anonymous mapping): a new master starts fresh.
 *
 * Callers: master creates it (ta_heartbeat_create, before fork); billing
 * beats; workers read. Callable in any process after the master created it;
 * a process that never inherited a page (CLI, unit tests) sees every call as
 * a no-op and ta_heartbeat_billing_alive() returns true.
 */
#ifndef TA_HEARTBEAT_H
#define TA_HEARTBEAT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* A billing beat older than this is "not alive" (billing beats every
 * few hundred ms; a long LMDB sync may stall it for a moment). */
#define TA_HEARTBEAT_STALE_NS (10LL * 1000000000LL)

/** Master, before the first fork: map the page (process-global; children
 *  inherit it). Returns 0 or -errno. Idempotent. */
int ta_heartbeat_create(void);
/** Master: billing was forked (pid) or reaped (0; also clears the beat). */
void ta_heartbeat_set_billing_pid(pid_t pid);
/** Master: publish the config generation (1 at start, +1 per reload). */
void ta_heartbeat_set_generation(uint64_t gen);
uint64_t ta_heartbeat_generation(void);
/** Billing: "I am alive" (call at start and at least once a second). */
void ta_heartbeat_beat(void);
/** Workers: billing forked, not reaped, and beat within TA_HEARTBEAT_STALE_NS.
 *  True when there is no page at all (a process not started by the master). */
bool ta_heartbeat_billing_alive(void);
/** Billing, after a batch committed on both sides: add the events it applied
 *  and the quota warnings it raised to the page's counters (they live as long
 *  as the master, across billing restarts: /metrics shows them as
 *  tokenaudit_billing_events_total and tokenaudit_quota_warnings_total). */
void ta_heartbeat_billing_progress(uint64_t events, uint64_t warnings);
/** Workers (/metrics): read those counters (0 without a page). */
void ta_heartbeat_billing_counts(uint64_t *events, uint64_t *warnings);
/** Pid of the current billing process (0 = none / no page). */
pid_t ta_heartbeat_billing_pid(void);

#endif
