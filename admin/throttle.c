/*
 * throttle.c - the shared login throttle table (throttle.h).
 *
 * One anonymous MAP_SHARED mapping, created by the master before its first
 * fork (like the metrics page, worker/metrics.c), so every worker of every
 * generation, reloads and restarts included, counts into the same table:
 *
 *   +------------------------------------------------------------------+
 *   | header: magic u32 | version u32 | lock (pthread mutex,           |
 *   |         PROCESS_SHARED + ROBUST) | hash key (16 random bytes)     |
 *   +------------------------------------------------------------------+
 *   | slots[TH_SLOTS], 32 B each:                                      |
 *   |   key u64 (0 = free) | failures u32 | pad u32                    |
 *   |   last_ms i64 (the last failure) | until_ms i64 (wait ends)       |
 *   +------------------------------------------------------------------+
 *
 * Keys: the first 8 bytes of SHA-256(hash key | kind | name), kind 'a' for
 * an account (the e-mail), 'v' for an address. The hash key is random per
 * master, so nobody can choose names that pile into one region of the
 * table. A key lives in one of TH_PROBE consecutive slots from its home
 * slot; lookups scan all of them (no early stop at a free slot), so a slot
 * is freed by zeroing its key, without tombstones. A new key takes a free
 * slot, else a forgotten one, else the one whose memory ends first: under
 * a flood of names the table forgets the quietest keys, never refuses.
 *
 * Writers and readers: workers only, every access under the one lock (a
 * login does one short critical section before its hash and one after);
 * the master only creates the mapping. The lock orders everything, so the
 * fields need no atomics.
 *
 * Crash behaviour: the mutex is robust: a worker killed while holding it
 * makes the next locker get EOWNERDEAD; it marks the mutex consistent and
 * goes on. The dead worker's update may be half done in one or two slots:
 * each field is independently valid (a count, two times), so the worst is
 * one key counted once more or less. An attempt whose worker dies between
 * begin and ok stays counted as a failure. The mapping dies with the
 * master: a restarted master starts with an empty table (the throttle
 * slows guessing down, it keeps no evidence). Checked at attach: nothing
 * (the mapping never leaves the process tree); magic and version are there
 * for core dumps.
 */
#include "admin/throttle.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>

#include "admin/crypto.h"

#define TH_MAGIC 0x54485254u /* "THRT" */
#define TH_VERSION 1u
#define TH_SLOTS 8192u /* a power of two */
#define TH_PROBE 16u

typedef struct th_slot {
    uint64_t key;
    uint32_t failures;
    uint32_t pad;
    int64_t last_ms;
    int64_t until_ms;
} th_slot_t;

struct ta_throttle {
    uint32_t magic, version;
    pthread_mutex_t lock;
    uint8_t hash_key[16];
    th_slot_t slots[TH_SLOTS];
};

int ta_throttle_create(ta_throttle_t **out)
{
    ta_throttle_t *t;
    int rc;

    *out = NULL;
    t = mmap(NULL, sizeof(*t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (t == MAP_FAILED)
        return -errno;
    /* The mapping is zero-filled: every slot is free. */
    if ((rc = ta_random(t->hash_key, sizeof(t->hash_key))) != 0)
        goto Fail;
    if ((rc = ta_mutex_init_shared(&t->lock)) != 0)
        goto Fail;
    t->magic = TH_MAGIC;
    t->version = TH_VERSION;
    *out = t;
    return 0;
Fail:
    munmap(t, sizeof(*t));
    return rc;
}

void ta_throttle_destroy(ta_throttle_t *t)
{
    if (t == NULL)
        return;
    pthread_mutex_destroy(&t->lock);
    munmap(t, sizeof(*t));
}

static bool th_lock(ta_throttle_t *t)
{
    int rc = pthread_mutex_lock(&t->lock);

    if (rc == EOWNERDEAD) {
        /* A worker died inside; its half-update is harmless (see the top). */
        pthread_mutex_consistent(&t->lock);
        return true;
    }
    if (rc != 0) {
        ta_log(TA_LOG_ERROR, "login throttle: lock: %s", strerror(rc));
        return false;
    }
    return true;
}

/* The key of (kind, name); an address counts per /64 for IPv6 and as its
 * IPv4 address when IPv4-mapped. Never 0 (0 marks a free slot). */
static uint64_t th_key(const ta_throttle_t *t, char kind, const char *name)
{
    uint8_t a6[16], md[EVP_MAX_MD_SIZE];
    const void *id = name;
    size_t idlen = strlen(name);
    EVP_MD_CTX *mc;
    uint64_t k = 0;

    if (kind == 'v' && inet_pton(AF_INET6, name, a6) == 1) {
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a6, mapped, sizeof(mapped)) == 0) {
            kind = '4';
            id = a6 + 12;
            idlen = 4;
        } else {
            kind = '6';
            id = a6;
            idlen = 8;
        }
    } else if (kind == 'v' && inet_pton(AF_INET, name, a6) == 1) {
        kind = '4';
        id = a6;
        idlen = 4;
    }
    /* Out of memory: every name shares key 1, which throttles too much,
     * never too little. */
    if ((mc = EVP_MD_CTX_new()) == NULL)
        return 1;
    if (EVP_DigestInit_ex(mc, EVP_sha256(), NULL) == 1 &&
        EVP_DigestUpdate(mc, t->hash_key, sizeof(t->hash_key)) == 1 &&
        EVP_DigestUpdate(mc, &kind, 1) == 1 && EVP_DigestUpdate(mc, id, idlen) == 1 &&
        EVP_DigestFinal_ex(mc, md, NULL) == 1)
        memcpy(&k, md, sizeof(k));
    EVP_MD_CTX_free(mc);
    return k != 0 ? k : 1;
}

/* When a key's memory ends: quiet for max_ms after its last wait ended. */
static int64_t th_forget_at(const th_slot_t *s, int64_t max_ms)
{
    return (s->until_ms > s->last_ms ? s->until_ms : s->last_ms) + max_ms;
}

static th_slot_t *th_find(ta_throttle_t *t, uint64_t key)
{
    for (uint32_t i = 0; i < TH_PROBE; i++) {
        th_slot_t *s = &t->slots[(key + i) & (TH_SLOTS - 1)];
        if (s->key == key)
            return s;
    }
    return NULL;
}

/* The slot of key, claimed if needed; never `keep` (the other key of the
 * same attempt). max_ms: the longest memory of any key (to tell forgotten
 * slots). */
static th_slot_t *th_claim(ta_throttle_t *t, uint64_t key, const th_slot_t *keep, int64_t max_ms,
                           int64_t now_ms)
{
    th_slot_t *s = th_find(t, key), *victim = NULL;

    if (s != NULL)
        return s;
    for (uint32_t i = 0; i < TH_PROBE; i++) {
        s = &t->slots[(key + i) & (TH_SLOTS - 1)];
        if (s == keep)
            continue;
        if (s->key == 0 || th_forget_at(s, max_ms) <= now_ms) {
            victim = s;
            break;
        }
        if (victim == NULL || th_forget_at(s, max_ms) < th_forget_at(victim, max_ms))
            victim = s;
    }
    memset(victim, 0, sizeof(*victim));
    victim->key = key;
    return victim;
}

static int64_t th_wait_ms(const th_slot_t *s, int64_t now_ms)
{
    return s != NULL && s->until_ms > now_ms ? s->until_ms - now_ms : 0;
}

/* One more failure of s under (limit, backoff, max). */
static void th_fail(th_slot_t *s, int64_t limit, int64_t backoff_ms, int64_t max_ms, int64_t now_ms)
{
    if (s->failures > 0 && th_forget_at(s, max_ms) <= now_ms)
        s->failures = 0;
    if (s->failures < UINT32_MAX)
        s->failures++;
    s->last_ms = now_ms;
    if ((int64_t)s->failures >= limit) {
        int64_t over = (int64_t)s->failures - limit, wait = backoff_ms;
        while (over-- > 0 && wait < max_ms)
            wait *= 2;
        s->until_ms = now_ms + (wait < max_ms ? wait : max_ms);
    }
}

int ta_throttle_login_begin(ta_throttle_t *t, const ta_throttle_conf_t *conf, const char *account,
                            const char *address, int64_t now_ms, ta_throttle_attempt_t *at)
{
    uint64_t ka, kv;
    int64_t wait, w2, max_ms;
    th_slot_t *sa, *sv;

    memset(at, 0, sizeof(*at));
    if (t == NULL)
        return 0;
    ka = th_key(t, 'a', account);
    kv = th_key(t, 'v', address);
    max_ms = conf->account_max_ms > conf->address_max_ms ? conf->account_max_ms : conf->address_max_ms;
    if (!th_lock(t))
        return 0;
    wait = th_wait_ms(th_find(t, ka), now_ms);
    w2 = th_wait_ms(th_find(t, kv), now_ms);
    if (w2 > wait)
        wait = w2;
    if (wait == 0) {
        sa = th_claim(t, ka, NULL, max_ms, now_ms);
        at->account_prev_until_ms = sa->until_ms;
        th_fail(sa, conf->account_failures, conf->backoff_ms, conf->account_max_ms, now_ms);
        at->account_failures = sa->failures;
        sv = th_claim(t, kv, sa, max_ms, now_ms);
        at->address_prev_until_ms = sv->until_ms;
        th_fail(sv, conf->address_failures, conf->backoff_ms, conf->address_max_ms, now_ms);
        at->address_failures = sv->failures;
    }
    pthread_mutex_unlock(&t->lock);
    return wait == 0 ? 0 : (int)((wait + 999) / 1000 < INT32_MAX ? (wait + 999) / 1000 : INT32_MAX);
}

/* Take back one attempt's count from s: its wait too when no other failure
 * came in between (failures still what the attempt left), else only the
 * count, and the wait ends below the limit. */
static void th_withdraw(th_slot_t *s, uint32_t failures_after, int64_t prev_until_ms, int64_t limit)
{
    if (s == NULL || s->failures == 0)
        return;
    if (s->failures == failures_after)
        s->until_ms = prev_until_ms;
    s->failures--;
    if ((int64_t)s->failures < limit)
        s->until_ms = 0;
}

void ta_throttle_login_ok(ta_throttle_t *t, const ta_throttle_conf_t *conf, const char *account,
                          const char *address, const ta_throttle_attempt_t *at)
{
    th_slot_t *s;

    if (t == NULL)
        return;
    uint64_t ka = th_key(t, 'a', account), kv = th_key(t, 'v', address);
    if (!th_lock(t))
        return;
    if ((s = th_find(t, ka)) != NULL)
        memset(s, 0, sizeof(*s));
    th_withdraw(th_find(t, kv), at->address_failures, at->address_prev_until_ms,
                conf->address_failures);
    pthread_mutex_unlock(&t->lock);
}

void ta_throttle_login_cancel(ta_throttle_t *t, const ta_throttle_conf_t *conf,
                              const char *account, const char *address,
                              const ta_throttle_attempt_t *at)
{
    if (t == NULL)
        return;
    uint64_t ka = th_key(t, 'a', account), kv = th_key(t, 'v', address);
    if (!th_lock(t))
        return;
    th_withdraw(th_find(t, ka), at->account_failures, at->account_prev_until_ms,
                conf->account_failures);
    th_withdraw(th_find(t, kv), at->address_failures, at->address_prev_until_ms,
                conf->address_failures);
    pthread_mutex_unlock(&t->lock);
}
