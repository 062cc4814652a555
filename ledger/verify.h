/*
 * verify.h - `tokenaudit ledger verify`: the two books agree.
 *
 * For every quota, the ledger's used cost of the balance's period equals, to
 * the nano-unit, the sum of the cost of that quota's audit records settled
 * into that period (records carry the period their cost went to); and no
 * hold is older than a bound. Reads one consistent pair of snapshots: a read
 * transaction on each environment taken when both have applied the same
 * ring ticket (retried while billing is between its two commits).
 *
 * Callers: the CLI and tests; read-only, safe while the server runs.
 */
#ifndef TA_VERIFY_H
#define TA_VERIFY_H

#include <stdio.h>
#include "ledger/store.h"

typedef struct ta_verify_opts {
    int64_t max_hold_age_s;   /* default 3900 (longest upstream timeout + margin) */
    int64_t lookback_days;    /* records received this long before the period start are
                               * still read (late settlement); default 35 */
    int wait_ms;              /* how long to wait for billing to commit both sides; default 5000 */
} ta_verify_opts_t;

/** Write the findings to out; *ndiff gets the number of differences (cost
 *  mismatches + stale holds + applied tickets that never matched).
 *  Returns 0 or a store error. */
int ta_ledger_verify(ta_store_t *st, const ta_verify_opts_t *opts, FILE *out, int *ndiff);

/** `tokenaudit ledger verify --data-dir DIR [--max-hold-age S] [--lookback-days D]`;
 *  argv[0] is "verify". Exit code: 0 agree, 1 differences, 2 usage or store error. */
int ta_ledger_verify_cli(int argc, char **argv);

#endif
