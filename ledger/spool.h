/*
 * spool.h - events a stopping worker could not hand to billing through the
 * ring (full past shutdown_timeout_ms): written to a file in the data
 * directory at the worker's exit, applied by billing with the worker's
 * dead-worker event, before its remaining holds are released. The format,
 * the ordering and the exactly-once argument are at the top of spool.c.
 *
 * Callers: a worker process at exit (ta_spool_write_pending, after its loop
 * and its proxy are gone, so nothing is submitted after it); billing reads
 * spools (ledger/billing_internal.h). Nothing here touches LMDB on the
 * worker's side.
 */
#ifndef TA_SPOOL_H
#define TA_SPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "ledger/event.h"
#include "ledger/ring.h"

#define TA_SPOOL_DIR "spool" /* under the data directory */

/** Write the n events to DATA_DIR/spool/<pid>.<wall ns>.spool (created 0600
 *  under a ".tmp" name, fsync'ed, renamed, directory fsync'ed: a spool file
 *  is complete or absent). Returns 0 or -errno. Any process; the worker. */
int ta_spool_write(const char *data_dir, int32_t pid, const ta_event_t *evs, size_t n);

/** The worker's exit: one last ta_ring_flush_pending(), then what is still
 *  pending goes to a spool file and the queue is cleared. Returns the number
 *  of events spooled (>= 0) or -errno (they are lost: billing releases
 *  their holds as aborted). Worker only. */
int ta_spool_write_pending(ta_ring_t *r, const char *data_dir);

/** Read a spool file: *evs (malloc'ed, the caller frees) and *n. TA_ECORRUPT
 *  for a file with another magic, version, event size, count or checksum;
 *  -errno when it cannot be read. Any process (billing, the CLI). */
int ta_spool_read(const char *path, ta_event_t **evs, size_t *n, int32_t *pid);

#endif
