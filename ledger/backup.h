/*
 * backup.h - `tokenaudit backup`: a consistent copy of a data directory,
 * taken while the server runs.
 *
 * The copy holds both LMDB environments as of one applied ring ticket (the
 * argument is at the top of backup.c), the secret files (mode 0600), and no
 * ring: the gateway started on it creates a fresh one. It is written under
 * DEST.partial-PID and renamed to DEST only when complete, so DEST either
 * does not exist or is a whole backup.
 *
 * Callers: the CLI (and tests). Opens the source read-only; never writes it.
 */
#ifndef TA_BACKUP_H
#define TA_BACKUP_H

#include <stdio.h>
#include "ledger/store.h"

/* Owner pid given to every hold in a copy: above PID_MAX_LIMIT (2^22, see
 * proc(5) /proc/sys/kernel/pid_max), so no process of any host has it and the
 * restored gateway's billing releases those holds at its first sweep. */
#define TA_BACKUP_HOLD_PID INT32_MAX

typedef struct ta_backup_opts {
    const char *data_dir;        /* source */
    const char *dest;            /* must not exist; its parent must */
    const char *jwt_secret_file; /* copied to DEST/jwt.secret */
    const char *master_key_file; /* copied to DEST/master.key */
    int wait_ms;                 /* bound on waiting for equal applied tickets; 0 = 10000 */
} ta_backup_opts_t;

typedef struct ta_backup_result {
    uint64_t ticket;           /* applied ring ticket of both copies */
    uint64_t entries[2];       /* key/value pairs copied per environment */
    uint64_t holds;            /* holds re-owned to TA_BACKUP_HOLD_PID */
    uint64_t bytes[2];         /* data.mdb size of each copy */
} ta_backup_result_t;

/** Begin one read transaction on each environment such that both name the
 *  same applied ticket (*ticket): billing commits the ledger then the audit
 *  side of a batch, so equal tickets mean no batch is half in the pair.
 *  Retries every 20 ms while billing is between its two commits, for at most
 *  wait_ms; then TA_EBUSY (both transactions ended). Returns 0 or a store error. */
int ta_backup_read_pair(ta_store_t *st, int wait_ms, MDB_txn **ltxn, MDB_txn **atxn,
                        uint64_t *ticket);

/** Copy opts->data_dir to opts->dest. Errors: TA_EEXIST (dest exists),
 *  TA_EBUSY (no equal tickets within wait_ms), TA_ENOTFOUND (no ledger),
 *  -errno (files), TA_ELMDB; on failure nothing is left at dest and the
 *  partial directory is removed. Progress and errors go to log (may be NULL). */
int ta_backup(const ta_backup_opts_t *opts, FILE *log, ta_backup_result_t *res);

/** `tokenaudit backup --data-dir DIR --to DEST [--compact]` with the secret
 *  file paths already resolved from the settings. Exit 0 ok, 1 failure. */
int ta_backup_cli(const char *data_dir, const char *dest, const char *jwt_secret_file,
                  const char *master_key_file);

#endif
