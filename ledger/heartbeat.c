/*
 * heartbeat.c - the shared liveness page; layout and rules in heartbeat.h.
 *
 * The page is anonymous MAP_SHARED memory mapped once by the master before
 * it forks, so the pointer below is valid, and points at the same physical
 * page, in every child. A child that dies mid-write leaves a torn nothing:
 * every field is a single naturally aligned word written atomically.
 */
#include "ledger/heartbeat.h"

#include <errno.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <time.h>

#define HB_MAGIC 0x54414842u /* "TAHB" */
#define HB_VERSION 1u

struct hb_page {
    uint32_t magic;
    uint32_t version;
    _Atomic int32_t billing_pid;
    _Atomic int64_t billing_beat_ns; /* CLOCK_MONOTONIC; 0 = not yet */
    _Atomic uint64_t generation;
    _Atomic uint64_t billing_events;   /* events applied to both envs, all billings */
    _Atomic uint64_t billing_warnings; /* quota warnings committed, all billings */
};

static struct hb_page *page;

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int ta_heartbeat_create(void)
{
    if (page != NULL)
        return 0;
    void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -errno;
    page = p;
    page->magic = HB_MAGIC;
    page->version = HB_VERSION;
    atomic_store(&page->billing_pid, 0);
    atomic_store(&page->billing_beat_ns, 0);
    atomic_store(&page->generation, 1);
    return 0;
}

void ta_heartbeat_set_billing_pid(pid_t pid)
{
    if (page == NULL)
        return;
    /* Only a reap clears the beat: a fresh billing may beat before the
     * master, returning from fork(), gets here. */
    if (pid == 0)
        atomic_store_explicit(&page->billing_beat_ns, 0, memory_order_relaxed);
    atomic_store_explicit(&page->billing_pid, (int32_t)pid, memory_order_release);
}

void ta_heartbeat_set_generation(uint64_t gen)
{
    if (page != NULL)
        atomic_store_explicit(&page->generation, gen, memory_order_release);
}

uint64_t ta_heartbeat_generation(void)
{
    return page == NULL ? 0 : atomic_load_explicit(&page->generation, memory_order_acquire);
}

void ta_heartbeat_beat(void)
{
    if (page != NULL)
        atomic_store_explicit(&page->billing_beat_ns, mono_ns(), memory_order_release);
}

bool ta_heartbeat_billing_alive(void)
{
    if (page == NULL)
        return true;
    if (atomic_load_explicit(&page->billing_pid, memory_order_acquire) == 0)
        return false;
    int64_t beat = atomic_load_explicit(&page->billing_beat_ns, memory_order_acquire);
    return beat != 0 && mono_ns() - beat < TA_HEARTBEAT_STALE_NS;
}

void ta_heartbeat_billing_progress(uint64_t events, uint64_t warnings)
{
    if (page == NULL)
        return;
    atomic_fetch_add_explicit(&page->billing_events, events, memory_order_relaxed);
    atomic_fetch_add_explicit(&page->billing_warnings, warnings, memory_order_relaxed);
}

void ta_heartbeat_billing_counts(uint64_t *events, uint64_t *warnings)
{
    *events = page == NULL ? 0 : atomic_load_explicit(&page->billing_events, memory_order_relaxed);
    *warnings = page == NULL ? 0
                             : atomic_load_explicit(&page->billing_warnings, memory_order_relaxed);
}

pid_t ta_heartbeat_billing_pid(void)
{
    return page == NULL ? 0 : (pid_t)atomic_load_explicit(&page->billing_pid, memory_order_acquire);
}
