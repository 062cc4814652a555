/*
 * ring.h - the event ring: a file-backed MAP_SHARED array of fixed-size slots
 * through which workers (and the master, for control events) hand finished
 * requests to billing (docs/ARCHITECTURE.md, "The ring and billing"). The layout, the ordering
 * argument and the crash behaviour are described at the top of ring.c.
 *
 * Tickets start at 1 and only grow; ticket t lives in slot t & (nslots - 1).
 * A ticket is "applied" to an LMDB environment when that environment's meta
 * "applied_ticket" is >= t (billing stores it in the same transaction).
 *
 * Processes:
 *   master  ta_ring_create_or_attach() before the first fork (children inherit
 *           the mapping), ta_ring_push_control() when a worker dies.
 *   worker  ta_ring_submit() / ta_ring_flush_pending() / ta_ring_has_pending()
 *           (the pending queue is the process's own memory: after fork every
 *           child starts with the copy it inherited, so the master must never
 *           queue anything in it).
 *   billing the consumer calls (ta_ring_consume_*, ta_ring_release, ta_ring_wait).
 *   tools   ta_ring_attach() (tests, the producer tool, the CLI).
 * Nothing here touches LMDB.
 */
#ifndef TA_RING_H
#define TA_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "ledger/event.h"

#define TA_RING_MAGIC 0x474e4952u /* "RING" little-endian */
#define TA_RING_VERSION 1u
#define TA_RING_SLOT_SIZE 512u
#define TA_RING_MIN_SLOTS 8u
#define TA_RING_MAX_SLOTS (1u << 24)
#define TA_RING_DEFAULT_SLOTS 65536u
/* default bound after which a claimed but unpublished slot is skipped */
#define TA_RING_SKIP_NS_DEFAULT (2LL * 1000000000LL)
/* default bound of a process's pending queue (events) */
#define TA_RING_PENDING_MAX_DEFAULT 4096u

typedef struct ta_ring ta_ring_t; /* opaque; one per process (inherited across fork) */

/** Master (before fork) or tools: open DATA_DIR/ring, creating it with nslots
 *  slots (a power of two in [TA_RING_MIN_SLOTS, TA_RING_MAX_SLOTS]) when it
 *  does not exist. An existing file whose magic, version or slot size differ
 *  is refused (TA_ECONFIG, logged). One whose slot count differs is recreated
 *  with the new size when it is drained (every claimed ticket freed: nothing
 *  can be lost), ticket numbering continuing; otherwise refused (TA_ECONFIG:
 *  start with the old ring_slots, let billing drain, then change it).
 *  Returns 0, TA_EINVAL (bad nslots), TA_ECONFIG or -errno. */
int ta_ring_create_or_attach(const char *path, uint32_t nslots, ta_ring_t **out);
/** Attach an existing ring, whatever its slot count. TA_ENOTFOUND when the
 *  file does not exist, TA_ECONFIG on a header mismatch. Tools and tests. */
int ta_ring_attach(const char *path, ta_ring_t **out);
/** Unmap and free (the file stays). Any process. */
void ta_ring_close(ta_ring_t *r);

uint32_t ta_ring_nslots(const ta_ring_t *r);
/** Random id chosen when the file was created (billing stores it beside the
 *  applied tickets to notice a ring that was replaced). */
uint64_t ta_ring_id(const ta_ring_t *r);
/** head (next ticket to claim) and tail (first ticket not yet freed). */
uint64_t ta_ring_head(const ta_ring_t *r);
uint64_t ta_ring_tail(const ta_ring_t *r);
/** Claimed tickets not yet freed (head - tail): the ring depth for /metrics. */
uint64_t ta_ring_depth(const ta_ring_t *r);

/* ---- producers (workers, master for control events) -------------------- */

/** Claim a ticket and return the slot's event storage. Fails with TA_EFULL
 *  (nothing claimed) when head - tail == nslots: by construction a claim never
 *  overtakes an unfreed slot. Between claim and ta_ring_publish() the caller
 *  only copies into *slot: nothing may block there. Low-level: use
 *  ta_ring_push() unless you test the claim/publish window. */
int ta_ring_claim(ta_ring_t *r, uint64_t *ticket, ta_event_t **slot);
/** Publish a claimed ticket (release order) and wake billing if it sleeps.
 *  TA_EFULL when billing skipped the slot meanwhile (the claim outlived the
 *  skip bound): the event was not delivered; ta_ring_push() then queues it
 *  again. */
int ta_ring_publish(ta_ring_t *r, uint64_t ticket);
/** Claim, copy, publish. 0, or TA_EFULL when the ring is full (nothing
 *  changed). ticket may be NULL. */
int ta_ring_push(ta_ring_t *r, const ta_event_t *ev, uint64_t *ticket);
/** Master: push a control event (TA_EV_WORKER_DEAD, pid). Never blocks; on a
 *  full ring retries for up to ~1 s, then TA_EFULL (logged). */
int ta_ring_push_control(ta_ring_t *r, uint32_t kind, int32_t pid);

/* ---- the worker's bounded pending queue (process-local) ---------------- */

/** Hand an event to billing: straight into the ring when nothing is pending
 *  and there is room, else appended to the local pending queue (FIFO, so
 *  this process's events keep their order). TA_ETOOBIG (logged, event lost)
 *  only when the pending queue is at its bound. Worker. */
int ta_ring_submit(ta_ring_t *r, const ta_event_t *ev);
/** Append to the pending queue without trying the ring. TA_ETOOBIG at the bound. */
int ta_ring_pending_push(ta_ring_t *r, const ta_event_t *ev);
/** Move pending events into the ring while there is room (each loop turn).
 *  Returns how many remain pending. */
size_t ta_ring_flush_pending(ta_ring_t *r);
/** While true the worker answers new /v1 requests 503 + Retry-After. */
bool ta_ring_has_pending(const ta_ring_t *r);
size_t ta_ring_pending_count(const ta_ring_t *r);
/** Bound of the pending queue (default TA_RING_PENDING_MAX_DEFAULT). */
void ta_ring_set_pending_max(ta_ring_t *r, size_t max);
/** The i-th pending event, oldest first (i < ta_ring_pending_count()), valid
 *  until the queue next changes. Worker (its spool at exit, ledger/spool.h). */
const ta_event_t *ta_ring_pending_at(const ta_ring_t *r, size_t i);
/** Drop the pending queue (a child of the master right after fork). */
void ta_ring_pending_clear(ta_ring_t *r);

/* ---- the consumer (billing only: one consumer at a time) --------------- */

/** Bound after which a claimed but unpublished slot whose producer is gone
 *  (or that was never tagged with its producer's pid) is skipped; a slot
 *  whose producer is still alive is waited for up to 30 times as long. */
void ta_ring_set_skip_ns(ta_ring_t *r, int64_t ns);

typedef struct ta_ring_item {
    uint64_t ticket;
    ta_event_t ev;   /* a copy: valid after the slot is freed */
} ta_ring_item_t;

/** Copy up to max published events in ticket order starting at *cursor
 *  (start from ta_ring_tail()). Stops at the first claimed-but-unpublished
 *  slot unless it passed the skip bound, in which case it is skipped (logged,
 *  no item) and the cursor moves on. Returns the number of items; *cursor is
 *  the next ticket to read. Nothing is freed: call ta_ring_release(). */
size_t ta_ring_consume(ta_ring_t *r, uint64_t *cursor, ta_ring_item_t *items, size_t max);
/** Free every slot with ticket < upto (both environments committed them):
 *  producers may reuse them. upto must not exceed the consume cursor. */
void ta_ring_release(ta_ring_t *r, uint64_t upto);
/** Sleep on the ring's futex until a producer publishes or timeout_ms passes,
 *  unless ticket `cursor` is already claimed. Returns 1 when there may be
 *  work, 0 on timeout/interrupt. */
int ta_ring_wait(ta_ring_t *r, uint64_t cursor, int timeout_ms);
/** Skips done by this process's consumer calls (tests, metrics). */
uint64_t ta_ring_skipped(const ta_ring_t *r);
/** A 64-bit word per slot that only the consumer uses, kept until the slot
 *  is freed: billing notes there what its ledger pass decided (the balance
 *  period a settlement went to) so a restarted billing that must redo only
 *  the audit pass finds it. */
void ta_ring_set_note(ta_ring_t *r, uint64_t ticket, int64_t v);
int64_t ta_ring_note(const ta_ring_t *r, uint64_t ticket);

#endif
