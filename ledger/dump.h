/*
 * dump.h - `tokenaudit ledger dump`: a read-only listing of the ledger for
 * operators.
 *
 * Prints users, providers, models, groups, quotas (each with its balance),
 * keys (first 8 hex chars of the key hash + quota), holds, the revoked-JWT
 * count, audit table sizes and the meta of both environments (schema version,
 * instance id, next ids, the applied ring ticket). Every record goes through
 * its schema descriptor (ta_rec_to_json, TA_JSON_DUMP), so SECRET fields
 * (password hashes, sealed provider keys, full key hashes) never appear.
 *
 * Uses one read transaction per environment: safe while the server runs,
 * with a store opened readonly. Callers: the CLI (and tests).
 */
#ifndef TA_DUMP_H
#define TA_DUMP_H

#include <stdio.h>
#include "ledger/store.h"

/** Write the dump to out: text (one section per table, `key=value` pairs per
 *  record) or, with json, one JSON document {"users":[...], ...}.
 *  A record that fails to decode is listed with an "error" and the dump goes
 *  on; the first such error (or a store error) is returned after printing.
 *  Returns 0, TA_ECORRUPT/TA_ESCHEMA (some record undecodable), TA_ELMDB,
 *  -ENOMEM, or -EIO if writing to out failed. */
int ta_ledger_dump(ta_store_t *st, FILE *out, bool json);

#endif
