/*
 * dead_letter.c - events set aside so that one bad event cannot stop
 * settlement (the format and the rules are in billing.h, "Dead letters").
 *
 * Written by billing (in the transaction that moves an environment's
 * applied_ticket past the event, so the set-aside and the skip commit
 * together: exactly once); read by `ledger verify` and `ledger dump` through
 * ta_dead_letter_walk(). Nothing deletes them: an operator does.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ledger/billing_internal.h"

#define DL_MAGIC "TADL"
#define DL_HDR 40 /* value header before the event bytes (billing.h) */

/* Errors that are the event's own (or its records') fault: retrying cannot
 * help, so the event is set aside. Anything else (map full, out of memory,
 * an LMDB or I/O failure) stops billing and nothing is skipped. */
bool ta_dead_letter_eligible(int rc)
{
    switch (rc) {
    case TA_EINVAL: case TA_ENOTFOUND: case TA_EEXIST: case TA_ESCHEMA:
    case TA_ECORRUPT: case TA_ETOOBIG: case TA_EBUSY:
        return true;
    default:
        return false;
    }
}

static void dl_key(char *buf, size_t cap, uint64_t ticket, uint64_t ring_id)
{
    snprintf(buf, cap, TA_DEAD_LETTER_PREFIX "%020" PRIu64 ".%016" PRIx64, ticket, ring_id);
}

static void be32_put(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

static uint32_t be32_get(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Store ticket t's event as a dead letter in env's meta, in txn (the one
 * that also moves env's applied_ticket past t). */
int ta_dead_letter_put(ta_billing_t *b, MDB_txn *txn, ta_envid_t env, uint64_t t,
                       const ta_event_t *ev, int err)
{
    uint8_t buf[DL_HDR + sizeof(ta_event_t)];
    char key[96], rid[33];
    memcpy(buf, DL_MAGIC, 4);
    buf[4] = 1;
    buf[5] = (uint8_t)env;
    buf[6] = buf[7] = 0;
    be32_put(buf + 8, (uint32_t)err);
    ta_be64_put(buf + 12, (uint64_t)ta_now_ns());
    ta_be64_put(buf + 20, b->ring_id);
    ta_be64_put(buf + 28, t);
    be32_put(buf + 36, (uint32_t)sizeof(ta_event_t));
    memcpy(buf + DL_HDR, ev, sizeof(*ev));
    dl_key(key, sizeof(key), t, b->ring_id);
    MDB_val k = {strlen(key), key}, v = {sizeof(buf), buf};
    int mrc = mdb_put(txn, ta_store_dbi(b->st, env == TA_ENV_AUDIT ? TA_DB_AUDIT_META : TA_DB_META),
                      &k, &v, 0);
    if (mrc != 0) {
        ta_log(TA_LOG_ERROR, "billing: write dead letter %s: %s", key, mdb_strerror(mrc));
        return mrc == MDB_MAP_FULL ? TA_EFULL : TA_ELMDB;
    }
    for (int i = 0; i < 16; i++)
        snprintf(rid + 2 * i, 3, "%02x", ev->request_id[i]);
    ta_log(TA_LOG_ERROR, "billing: ticket %" PRIu64 " (request %s, kind %u, quota %" PRIu64
           "): %s pass failed: %s; event set aside as dead letter %s (ledger verify lists it)",
           t, rid, ev->kind, ev->quota_id, env == TA_ENV_AUDIT ? "audit" : "ledger",
           ta_strerror(err), key);
    b->stats.dead_letters++;
    return 0;
}

/* Whether the ledger pass dead-lettered ticket t (when its note was lost). */
bool ta_dead_letter_exists(ta_billing_t *b, MDB_txn *ltxn, uint64_t t)
{
    char key[96];
    dl_key(key, sizeof(key), t, b->ring_id);
    MDB_val k = {strlen(key), key}, v;
    return mdb_get(ltxn, ta_store_dbi(b->st, TA_DB_META), &k, &v) == 0;
}

int ta_dead_letter_walk(ta_store_t *st, MDB_txn *txn, ta_envid_t env, ta_dead_letter_cb cb,
                        void *arg)
{
    MDB_cursor *cur;
    MDB_val k, v;
    size_t plen = strlen(TA_DEAD_LETTER_PREFIX);
    int rc = 0, mrc = mdb_cursor_open(txn, ta_store_dbi(st, env == TA_ENV_AUDIT ? TA_DB_AUDIT_META
                                                                               : TA_DB_META), &cur);
    if (mrc != 0)
        return TA_ELMDB;
    k.mv_size = plen, k.mv_data = (void *)TA_DEAD_LETTER_PREFIX;
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size < plen || memcmp(k.mv_data, TA_DEAD_LETTER_PREFIX, plen) != 0)
            break;
        ta_dead_letter_t dl;
        const uint8_t *p = v.mv_data;
        char num[24];
        size_t nl = k.mv_size - plen < sizeof(num) - 1 ? k.mv_size - plen : sizeof(num) - 1;
        memset(&dl, 0, sizeof(dl));
        memcpy(num, (const char *)k.mv_data + plen, nl);
        num[nl] = '\0';
        dl.ticket = strtoull(num, NULL, 10); /* from the key, in case the value is damaged */
        dl.side = env;
        if (v.mv_size >= DL_HDR && memcmp(p, DL_MAGIC, 4) == 0) {
            dl.error = (int32_t)be32_get(p + 8);
            dl.at_ns = (int64_t)ta_be64_get(p + 12);
            dl.ring_id = ta_be64_get(p + 20);
            dl.ticket = ta_be64_get(p + 28);
            dl.ev_size = be32_get(p + 36);
            dl.raw = p + DL_HDR;
            dl.raw_len = v.mv_size - DL_HDR;
            memcpy(&dl.ev, dl.raw, dl.raw_len < sizeof(dl.ev) ? dl.raw_len : sizeof(dl.ev));
            dl.intact = p[4] == 1 && dl.ev_size == sizeof(ta_event_t) && dl.raw_len == dl.ev_size;
        } else {
            dl.raw = p;
            dl.raw_len = v.mv_size;
        }
        if ((rc = cb(&dl, arg)) < 0)
            break;
        rc = 0;
    }
    mdb_cursor_close(cur);
    if (rc == 0 && mrc != 0 && mrc != MDB_NOTFOUND)
        rc = TA_ELMDB;
    return rc;
}
