/*
 * shared.c - loom.shared(name, size): a dictionary in a shared memory mapping, with TTLs,
 * an atomic incr, add-if-absent, LRU eviction when full, and the token check loom.limit
 * stands on. Knows nothing of HTTP nor of workers beyond the environment handshake below.
 *
 * Sharing. `app:run{workers = N}` starts each worker with uv_spawn (fork + exec of the same
 * script), so an anonymous mapping would not survive: the first process makes a memfd
 * (without close-on-exec), maps it MAP_SHARED and records "pid:fd:size" in the environment
 * variable LOOM_SHARED_<name>. A process whose parent (or itself) made it maps the same fd
 * instead of making one: the workers see the supervisor's dictionary.
 *
 * Layout: a header, a bucket array, then fixed 64-byte cells, all addressed by index
 * (1-based, 0 = none), never by pointer. An entry is a head cell (key, type, TTL, LRU and
 * bucket links, a number inline) followed by continuation cells for the key and string
 * bytes that do not fit. One lock guards everything but one case; no Lua call (which may
 * raise) is made while holding it.
 *
 * The case: d:incr of an integer by an integer, the counter and rate-limit hot path. A
 * head's tag (state, type, sequence number) and its number sit in one 16-byte word changed
 * by a 16-byte compare-and-swap. Each process remembers, per key, the cell and tag it last
 * found (kcache_t); the next incr of that key adds with that compare-and-swap and no lock,
 * no hash, no lookup. Whatever frees a cell, replaces an entry or turns it into a float
 * changes the tag the same way (pair_set, under the lock), so a remembered cell that is no
 * longer that entry fails the swap and the increment takes the lock. Those increments do
 * not move their entry in the LRU list (that would write shared list links on every call);
 * they mark it (`ref`), and eviction gives a marked entry a second chance: the order is an
 * approximate LRU. Without a 16-byte compare-and-swap (not x86-64) every incr locks.
 *
 * The lock is one 32-bit word in the mapping: 0 when free, else the holder's pid (and a bit
 * saying someone sleeps on it). Taking a free lock is one compare-and-swap and releasing it
 * one exchange, as nginx's shm mutex; a taker that finds it held spins a little, then
 * sleeps on the word (a futex) until the holder's release wakes it. A pthread robust mutex
 * did the same job at twice the cost per operation (its robust list is updated on every
 * lock and unlock) and never spins, so two busy workers took turns through the kernel.
 *
 * Crashes. A worker may die holding the lock. A sleeper wakes every 10 ms on its own; if
 * the holder is then gone (no such process, or a zombie), it takes the lock over by
 * compare-and-swap and rebuilds. The only facts trusted after that are a head's state LIVE, its
 * chain and its sequence number: everything else (buckets, LRU list, free list, counts) is rebuilt
 * from them by one scan (recover). So every update writes a new entry's cells fully before marking
 * it LIVE, marks a replacement LIVE before the old one dies (a duplicate is resolved by the higher
 * sequence number), and changes a number in place with one atomic store or swap. A lock-free
 * increment is one atomic instruction: a crash leaves it done or not.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <lauxlib.h>
#include "shared.h"
#include "fail.h"

#define SHARED_MT "loom.shared"
#define SH_MAGIC 0x4c4f4f4d53484433ull /* "LOOMSHD3" */
#define CELL 64
#define HEAD_DATA 8
#define CONT_DATA 52
#define MIN_SIZE 16384

enum { C_FREE = 0, C_LIVE = 1, C_CONT = 2, C_BUILD = 3 };
enum { T_STR = 1, T_INT, T_FLOAT, T_BOOL };

/* A head cell. Its first 16 bytes, tag and number, change together by a 16-byte
 * compare-and-swap (pair_cas), which is what lets d:incr add to a live number without the
 * lock: the tag holds the cell's state (in byte 0, where a continuation or free cell keeps
 * its state too), the entry's type and its sequence number, so a tag names one entry for
 * the life of the mapping and a stale cached tag never matches another entry or cell. */
typedef struct {
    _Alignas(16) uint64_t tag; /* bytes: state, type, sequence number (48 bits) */
    uint64_t num;              /* an integer's or a float's bits */
    uint16_t klen;
    uint8_t ref; /* second chance: set by increments that skip the LRU list */
    uint8_t pad0;
    uint32_t vlen;
    uint32_t next; /* the chain of this entry's cells */
    uint32_t hnext, lprev, lnext, hash, pad;
    double expires; /* CLOCK_MONOTONIC seconds; 0: never */
    char data[HEAD_DATA];
} head_t;

/* A continuation cell, and the view of a free cell (the free list runs through `next`). */
typedef struct {
    uint8_t state, pad[7];
    uint32_t next;
    char data[CONT_DATA];
} cont_t;

typedef struct {
    uint64_t magic;
    _Atomic uint32_t lock; /* 0 free; else the holder's pid | L_SLEEPER */
    uint32_t pad;
    uint64_t size, seq, evictions;
    uint32_t ncells, nbuckets; /* nbuckets: a power of two */
    uint32_t free_head, nfree;
    uint32_t lru_head, lru_tail; /* head: most recently used */
    uint32_t count;
} shm_t;

/* A process's memory of where an integer lives: key -> head cell and tag. The key is known
 * by the address of its bytes in a Lua string that the dict's box keeps alive (a table in
 * its user value, one string per slot), so an equal address is that same string: short
 * strings (up to 40 bytes) are interned, one per content, so every d:incr("hits", ...)
 * passes the same one. The tag is checked by the 16-byte compare-and-swap against the
 * cell's: a cell freed, reused or turned float since fails it, and the increment locks. */
#define KC_SLOTS 64
#define KC_KEY 40 /* LUAI_MAXSHORTLEN: longer strings are not interned */
typedef struct {
    const char *k; /* NULL: empty */
    head_t *e;
    uint64_t tag, last; /* last: the value this process last saw, the first guess */
    double expires;
} kcache_t;

typedef struct {
    shm_t *m;
    const void *self; /* the dict's table */
    size_t size;
    double coarse_res; /* how far CLOCK_MONOTONIC_COARSE may lag CLOCK_MONOTONIC */
    kcache_t cache[KC_SLOTS];
    uint32_t pid; /* this process's, the lock's owner mark */
    int crash;    /* test hook: 1 die holding the lock, 2 die in the middle of a set */
    char name[64];
} dict_t;

_Static_assert(sizeof(head_t) == CELL, "head cell size");
_Static_assert(sizeof(cont_t) == CELL, "continuation cell size");

static uint32_t *buckets(shm_t *m) {
    return (uint32_t *)((char *)m + ((sizeof(shm_t) + 63) & ~(size_t)63));
}

static head_t *cell(shm_t *m, uint32_t i) {
    char *base = (char *)buckets(m) + (size_t)m->nbuckets * 4;
    base = (char *)(((uintptr_t)base + 63) & ~(uintptr_t)63);
    return (head_t *)(base + (size_t)(i - 1) * CELL);
}

/* ---------------------------------------------------------------- tags */

static uint64_t tag_make(unsigned state, unsigned type, uint64_t seq) {
    unsigned char b[8] = {(unsigned char)state, (unsigned char)type};
    for (int k = 0; k < 6; k++)
        b[2 + k] = (unsigned char)(seq >> (8 * k));
    uint64_t t;
    memcpy(&t, b, 8);
    return t;
}

static unsigned tag_state(uint64_t t) {
    unsigned char b[8];
    memcpy(b, &t, 8);
    return b[0];
}

static unsigned tag_type(uint64_t t) {
    unsigned char b[8];
    memcpy(b, &t, 8);
    return b[1];
}

static uint64_t tag_seq(uint64_t t) {
    unsigned char b[8];
    memcpy(b, &t, 8);
    uint64_t seq = 0;
    for (int k = 5; k >= 0; k--)
        seq = seq << 8 | b[2 + k];
    return seq;
}

static uint64_t head_tag(const head_t *e) {
    return __atomic_load_n(&e->tag, __ATOMIC_ACQUIRE);
}

static unsigned cell_state(shm_t *m, uint32_t i) {
    return tag_state(head_tag(cell(m, i))); /* byte 0 in every view of a cell */
}

static unsigned head_type(const head_t *e) {
    return tag_type(head_tag(e));
}

/* The number's bits, read while lock-free increments may change them. */
static uint64_t head_num(const head_t *e) {
    return __atomic_load_n(&e->num, __ATOMIC_RELAXED);
}

/* Sets a cell's first word (its state, for a cell no increment can touch). */
static void cell_set_state(shm_t *m, uint32_t i, unsigned state) {
    __atomic_store_n(&cell(m, i)->tag, tag_make(state, 0, 0), __ATOMIC_RELEASE);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SH_FAST 1
/* Compares the 16 bytes at p with *lo, *hi and, when equal, stores nlo, nhi: 1. Else 0,
 * and *lo, *hi hold what p holds. A full barrier either way. */
static int pair_cas(head_t *e, uint64_t *lo, uint64_t *hi, uint64_t nlo, uint64_t nhi) {
    unsigned char ok;
    __asm__ __volatile__("lock cmpxchg16b %1\n\tsete %0"
                         : "=q"(ok), "+m"(*(volatile unsigned __int128 *)(void *)e), "+a"(*lo),
                           "+d"(*hi)
                         : "b"(nlo), "c"(nhi)
                         : "memory", "cc");
    return ok;
}
#else
#define SH_FAST 0
/* Without a 16-byte compare-and-swap every change takes the lock (no lock-free path runs),
 * so a plain update under it is exact. */
static int pair_cas(head_t *e, uint64_t *lo, uint64_t *hi, uint64_t nlo, uint64_t nhi) {
    if (e->tag != *lo || head_num(e) != *hi) {
        *lo = e->tag, *hi = head_num(e);
        return 0;
    }
    __atomic_store_n(&e->num, nhi, __ATOMIC_RELAXED);
    __atomic_store_n(&e->tag, nlo, __ATOMIC_RELEASE);
    return 1;
}
#endif

/* Sets a live head's tag and number at once (lock held; lock-free increments may race). */
static void pair_set(head_t *e, uint64_t tag, uint64_t num) {
    uint64_t lo = head_tag(e), hi = head_num(e);
    while (!pair_cas(e, &lo, &hi, tag, num)) {
    }
}

static uint64_t bits_of_int(int64_t v) {
    uint64_t b;
    memcpy(&b, &v, 8);
    return b;
}

static uint64_t bits_of_double(double v) {
    uint64_t b;
    memcpy(&b, &v, 8);
    return b;
}

static int64_t int_of_bits(uint64_t b) {
    int64_t v;
    memcpy(&v, &b, 8);
    return v;
}

static double double_of_bits(uint64_t b) {
    double v;
    memcpy(&v, &b, 8);
    return v;
}

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint32_t hash_key(const char *k, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)k[i]) * 16777619u;
    return h;
}

static uint32_t cells_for(size_t bytes) {
    return bytes <= HEAD_DATA ? 1 : 1 + (uint32_t)((bytes - HEAD_DATA + CONT_DATA - 1) / CONT_DATA);
}

static size_t entry_bytes(const head_t *e) {
    return e->klen + (head_type(e) == T_STR ? e->vlen : 0);
}

static cont_t *cont(shm_t *m, uint32_t i) {
    return (cont_t *)cell(m, i);
}

/* The link to the next cell of a chain: a head's own field, or a continuation's. */
static uint32_t *next_of(shm_t *m, uint32_t i, int is_head) {
    return is_head ? &cell(m, i)->next : &cont(m, i)->next;
}

/* Copies n bytes between buf and an entry's key+value area at byte offset off: into the
 * area when into_entry, out of it otherwise. The area runs through the head cell, then
 * each continuation cell of the chain. */
static void entry_copy(shm_t *m, head_t *e, size_t off, char *buf, size_t n, int into_entry) {
    char *area = e->data;
    size_t avail = HEAD_DATA;
    uint32_t next = e->next;
    while (n > 0) {
        if (off >= avail) {
            off -= avail;
        } else {
            size_t k = avail - off < n ? avail - off : n;
            if (into_entry)
                memcpy(area + off, buf, k);
            else
                memcpy(buf, area + off, k);
            buf += k;
            n -= k;
            off = 0;
        }
        if (n == 0 || !next)
            break;
        cont_t *c = (cont_t *)cell(m, next);
        area = c->data;
        avail = CONT_DATA;
        next = c->next;
    }
}

static void entry_read(shm_t *m, const head_t *e, size_t off, char *out, size_t n) {
    entry_copy(m, (head_t *)e, off, out, n, 0);
}

static void entry_write(shm_t *m, head_t *e, size_t off, const char *src, size_t n) {
    entry_copy(m, e, off, (char *)src, n, 1);
}

/* Whether an entry's key is k, compared in place through its cells. */
static int key_equal(shm_t *m, const head_t *e, const char *k, size_t klen) {
    if (e->klen != klen)
        return 0;
    size_t n = klen < HEAD_DATA ? klen : HEAD_DATA;
    for (size_t j = 0; j < n; j++) /* short keys: no call */
        if (e->data[j] != k[j])
            return 0;
    for (uint32_t next = e->next; klen > n && next;) {
        const cont_t *c = (const cont_t *)cell(m, next);
        size_t part = klen - n < CONT_DATA ? klen - n : CONT_DATA;
        if (memcmp(c->data, k + n, part) != 0)
            return 0;
        n += part;
        next = c->next;
    }
    return n == klen;
}

/* ---------------------------------------------------------------- lists (lock held) */

static void lru_unlink(shm_t *m, uint32_t i) {
    head_t *e = cell(m, i);
    if (e->lprev)
        cell(m, e->lprev)->lnext = e->lnext;
    else if (m->lru_head == i)
        m->lru_head = e->lnext;
    if (e->lnext)
        cell(m, e->lnext)->lprev = e->lprev;
    else if (m->lru_tail == i)
        m->lru_tail = e->lprev;
    e->lprev = e->lnext = 0;
}

static void lru_push_front(shm_t *m, uint32_t i) {
    head_t *e = cell(m, i);
    e->lprev = 0;
    e->lnext = m->lru_head;
    if (m->lru_head)
        cell(m, m->lru_head)->lprev = i;
    m->lru_head = i;
    if (!m->lru_tail)
        m->lru_tail = i;
}

static void bucket_unlink(shm_t *m, uint32_t i) {
    head_t *e = cell(m, i);
    uint32_t *p = &buckets(m)[e->hash & (m->nbuckets - 1)];
    while (*p && *p != i)
        p = &cell(m, *p)->hnext;
    if (*p)
        *p = e->hnext;
    e->hnext = 0;
}

static void bucket_insert(shm_t *m, uint32_t i) {
    head_t *e = cell(m, i);
    uint32_t *b = &buckets(m)[e->hash & (m->nbuckets - 1)];
    e->hnext = *b;
    *b = i;
}

/* Frees the cells of the chain that starts with head i. */
static void free_chain(shm_t *m, uint32_t i) {
    for (int is_head = 1; i; is_head = 0) {
        uint32_t next = *next_of(m, i, is_head);
        cell_set_state(m, i, C_FREE);
        cont(m, i)->next = m->free_head;
        m->free_head = i;
        m->nfree++;
        i = next;
    }
}

/* Removes a live entry: dead first (a crash from here on loses only this entry). */
static void entry_remove(shm_t *m, uint32_t i) {
    head_t *e = cell(m, i);
    pair_set(e, tag_make(C_FREE, 0, 0), 0); /* from here no increment lands on it */
    bucket_unlink(m, i);
    lru_unlink(m, i);
    m->count--;
    free_chain(m, i);
}

static uint32_t find(shm_t *m, const char *k, size_t klen, uint32_t h) {
    for (uint32_t i = buckets(m)[h & (m->nbuckets - 1)]; i; i = cell(m, i)->hnext) {
        head_t *e = cell(m, i);
        if (tag_state(head_tag(e)) == C_LIVE && e->hash == h && key_equal(m, e, k, klen))
            return i;
    }
    return 0;
}

/* A live, unexpired entry for k (an expired one is removed on the way), touched as used.
 * `now` 0: read the clock only for an entry with a TTL. */
static uint32_t lookup(shm_t *m, const char *k, size_t klen, uint32_t h, double now) {
    uint32_t i = find(m, k, klen, h);
    if (!i)
        return 0;
    head_t *e = cell(m, i);
    if (e->expires > 0 && e->expires <= (now > 0 ? now : mono_now())) {
        entry_remove(m, i);
        return 0;
    }
    if (m->lru_head != i) {
        lru_unlink(m, i);
        lru_push_front(m, i);
    }
    return i;
}

/* Takes n cells off the free list as a chain (head in state BUILD), evicting the least
 * recently used entries (all but `keep`) until there are enough. 0 when it cannot.
 * Increments without the lock do not move their entry in the LRU list; they set its `ref`
 * mark instead, and a marked entry at the tail gets a second chance: unmarked and moved
 * to the front, once per mark. */
static uint32_t alloc_chain(shm_t *m, uint32_t n, uint32_t keep) {
    if (n > m->ncells)
        return 0;
    for (uint32_t chances = m->count; m->nfree < n;) {
        uint32_t victim = m->lru_tail;
        if (victim == keep && victim)
            victim = cell(m, victim)->lprev;
        if (!victim)
            return 0;
        head_t *v = cell(m, victim);
        if (chances > 0 && __atomic_load_n(&v->ref, __ATOMIC_RELAXED)) {
            chances--;
            __atomic_store_n(&v->ref, 0, __ATOMIC_RELAXED);
            lru_unlink(m, victim);
            lru_push_front(m, victim);
            continue;
        }
        entry_remove(m, victim);
        m->evictions++;
    }
    uint32_t first = 0, prev = 0;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = m->free_head;
        head_t *c = cell(m, i);
        m->free_head = cont(m, i)->next;
        m->nfree--;
        cell_set_state(m, i, k == 0 ? C_BUILD : C_CONT);
        *next_of(m, i, k == 0) = 0;
        if (k == 0)
            c->ref = 0;
        if (prev)
            *next_of(m, prev, prev == first) = i;
        else
            first = i;
        prev = i;
    }
    return first;
}

/* ---------------------------------------------------------------- recovery */

/* Sets the mark of the first `count` cells of the chain at i. */
static void mark_chain(shm_t *m, uint8_t *mark, uint32_t i, uint32_t count, uint8_t v) {
    for (uint32_t k = 0; k < count && i; k++, i = *next_of(m, i, k == 1))
        mark[i] = v;
}

/* Marks (2) the cells of a live head's chain while they are sound (in range, continuation
 * cells, claimed by no other entry nor twice); returns how many it marked, and sets *ok
 * when the chain is exactly `want` cells long. */
static uint32_t claim_chain(shm_t *m, uint8_t *mark, uint32_t i, uint32_t want, int *ok) {
    uint32_t got = 1;
    mark[i] = 2;
    *ok = 0;
    for (uint32_t j = cell(m, i)->next; j; j = cont(m, j)->next) {
        if (j > m->ncells || mark[j] || cell_state(m, j) != C_CONT || got >= want)
            return got;
        mark[j] = 2;
        got++;
    }
    *ok = got == want;
    return got;
}

/* Rebuilds buckets, LRU list, free list and counts from the LIVE heads with sound chains;
 * of two live entries for one key the newer (higher sequence number) stays. */
static void recover(shm_t *m) {
    uint32_t n = m->ncells;
    uint8_t *mark = calloc(n + 1, 1);
    memset(buckets(m), 0, (size_t)m->nbuckets * 4);
    m->lru_head = m->lru_tail = m->free_head = m->nfree = m->count = 0;
    uint64_t maxseq = m->seq;
    char *kb = malloc(65536);
    for (uint32_t i = 1; mark && kb && i <= n; i++) {
        head_t *e = cell(m, i);
        if (tag_state(head_tag(e)) != C_LIVE)
            continue; /* cells nobody claims are freed below */
        uint32_t want = cells_for(entry_bytes(e));
        int ok;
        uint32_t got = claim_chain(m, mark, i, want, &ok);
        if (!ok) {
            mark_chain(m, mark, i, got, 0);
            pair_set(e, tag_make(C_FREE, 0, 0), 0);
            continue;
        }
        size_t klen = e->klen;
        entry_read(m, e, 0, kb, klen);
        uint32_t old = find(m, kb, klen, e->hash);
        if (old) {
            head_t *o = cell(m, old);
            if (tag_seq(head_tag(o)) > tag_seq(head_tag(e))) {
                mark_chain(m, mark, i, want, 0);
                pair_set(e, tag_make(C_FREE, 0, 0), 0);
                continue;
            }
            pair_set(o, tag_make(C_FREE, 0, 0), 0);
            bucket_unlink(m, old);
            lru_unlink(m, old);
            m->count--;
            mark_chain(m, mark, old, cells_for(entry_bytes(o)), 0);
        }
        mark_chain(m, mark, i, want, 1);
        if (tag_seq(head_tag(e)) > maxseq)
            maxseq = tag_seq(head_tag(e));
        e->hnext = e->lprev = e->lnext = 0;
        bucket_insert(m, i);
        lru_push_front(m, i);
        m->count++;
    }
    if (!mark || !kb) { /* without memory to check chains: keep nothing */
        memset(buckets(m), 0, (size_t)m->nbuckets * 4);
        m->lru_head = m->lru_tail = m->count = 0;
    }
    for (uint32_t i = n; i >= 1; i--) {
        if (mark && kb && mark[i])
            continue;
        if (cell_state(m, i) == C_LIVE)
            pair_set(cell(m, i), tag_make(C_FREE, 0, 0), 0);
        else
            cell_set_state(m, i, C_FREE);
        cont(m, i)->next = m->free_head;
        m->free_head = i;
        m->nfree++;
    }
    m->seq = maxseq;
    free(mark);
    free(kb);
}

/* ---------------------------------------------------------------- the lock */

#define L_SLEEPER 0x80000000u /* someone sleeps (or is about to) on the lock word */
#define L_SPINS 200           /* looks at a held lock before sleeping on it */

/* Sleeps while *w is val, at most 10 ms; 1 when that time ran out. */
static int futex_wait(_Atomic uint32_t *w, uint32_t val) {
    struct timespec ts = {0, 10 * 1000 * 1000};
    return syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT, val, &ts, NULL, 0) == -1 &&
           errno == ETIMEDOUT;
}

static void futex_wake(_Atomic uint32_t *w) {
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE, 1, NULL, NULL, 0);
}

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Whether process pid is gone: no such process, or a zombie its parent has not reaped. */
static int holder_gone(uint32_t pid) {
    if (kill((pid_t)pid, 0) != 0 && errno == ESRCH)
        return 1;
    char path[48], buf[512];
    snprintf(path, sizeof path, "/proc/%u/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* "pid (comm) S ...": comm may hold anything */
    return p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
}

/* The lock is held: spin, then sleep on it; take it over from a dead holder. 1 when this
 * process took it from a dead holder (the mapping must then be rebuilt), else 0. */
static int lock_slow(shm_t *m, uint32_t me) {
    uint32_t want = me;
    for (unsigned n = 0;; n++) {
        uint32_t cur = atomic_load_explicit(&m->lock, memory_order_relaxed);
        if (cur == 0) {
            if (atomic_compare_exchange_weak_explicit(&m->lock, &cur, want, memory_order_acquire,
                                                      memory_order_relaxed))
                return 0;
            continue;
        }
        if (n < L_SPINS) {
            cpu_relax();
            continue;
        }
        if (!(cur & L_SLEEPER)) {
            if (!atomic_compare_exchange_weak_explicit(&m->lock, &cur, cur | L_SLEEPER,
                                                       memory_order_relaxed, memory_order_relaxed))
                continue;
            cur |= L_SLEEPER;
        }
        /* having slept, take it marked: others may still sleep on it */
        want = me | L_SLEEPER;
        if (futex_wait(&m->lock, cur) && holder_gone(cur & ~L_SLEEPER) &&
            atomic_compare_exchange_strong_explicit(&m->lock, &cur, want, memory_order_acquire,
                                                    memory_order_relaxed))
            return 1;
    }
}

/* Locks; after a holder died, rebuilds the mapping first. */
static void dict_lock(dict_t *d) {
    uint32_t free_word = 0;
    if (!atomic_compare_exchange_strong_explicit(&d->m->lock, &free_word, d->pid,
                                                 memory_order_acquire, memory_order_relaxed) &&
        lock_slow(d->m, d->pid))
        recover(d->m);
    if (d->crash == 1)
        raise(SIGKILL);
}

static void dict_unlock(dict_t *d) {
    if (atomic_exchange_explicit(&d->m->lock, 0, memory_order_seq_cst) & L_SLEEPER)
        futex_wake(&d->m->lock);
}

/* ---------------------------------------------------------------- values */

typedef struct {
    int type;
    int64_t i;
    double d;
    const char *s;
    size_t len;
} value_t;

static void check_value(lua_State *L, int idx, value_t *v) {
    memset(v, 0, sizeof *v);
    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
        v->type = T_STR;
        v->s = lua_tolstring(L, idx, &v->len);
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            v->type = T_INT, v->i = lua_tointeger(L, idx);
        else
            v->type = T_FLOAT, v->d = lua_tonumber(L, idx);
        break;
    case LUA_TBOOLEAN:
        v->type = T_BOOL, v->i = lua_toboolean(L, idx);
        break;
    default:
        luaL_typeerror(L, idx, "string, number or boolean");
    }
}

/* Writes a new entry for k (replacing a live one): its cell, or 0 when it cannot fit. */
static uint32_t store(dict_t *d, const char *k, size_t klen, uint32_t h, const value_t *v,
                      double expires) {
    shm_t *m = d->m;
    size_t bytes = klen + (v->type == T_STR ? v->len : 0);
    uint32_t old = find(m, k, klen, h);
    uint32_t i = alloc_chain(m, cells_for(bytes), old);
    if (!i)
        return 0;
    head_t *e = cell(m, i);
    e->klen = (uint16_t)klen;
    e->vlen = (uint32_t)(v->type == T_STR ? v->len : 0);
    e->hash = h;
    e->expires = expires;
    __atomic_store_n(&e->num, v->type == T_FLOAT ? bits_of_double(v->d) : bits_of_int(v->i),
                     __ATOMIC_RELAXED);
    entry_write(m, e, 0, k, klen);
    if (v->type == T_STR)
        entry_write(m, e, klen, v->s, v->len);
    old = find(m, k, klen, h); /* eviction may have taken it */
    uint64_t seq = ++m->seq;
    bucket_insert(m, i);
    lru_push_front(m, i);
    m->count++;
    __atomic_store_n(&e->tag, tag_make(C_LIVE, (unsigned)v->type, seq), __ATOMIC_RELEASE);
    if (d->crash == 2 && old)
        raise(SIGKILL); /* test hook: both entries live, the lists half done */
    if (old)
        entry_remove(m, old);
    return i;
}

/* ---------------------------------------------------------------- Lua */

static char dicts_key; /* registry: dict table -> its box (the dict_t), weak-keyed */

/* A dict is a table holding its own methods (closures whose upvalue 1 is the box, the
 * userdata with the dict_t), so `d:incr(...)` finds the method in the table itself: Lua
 * 5.4 goes through no metatable, which is a tenth of what a call costs. The usual call,
 * a dict's method on that dict, costs one comparison; a dict's method called on another
 * (d1.get(d2, k)) takes the slow way through the registry. */
static dict_t *check_dict_slow(lua_State *L) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &dicts_key);
    lua_pushvalue(L, 1);
    dict_t *d = lua_rawget(L, -2) == LUA_TUSERDATA ? lua_touserdata(L, -1) : NULL;
    lua_pop(L, 2);
    if (!d)
        luaL_typeerror(L, 1, SHARED_MT);
    return d;
}

static dict_t *check_dict(lua_State *L) {
    dict_t *d = lua_touserdata(L, lua_upvalueindex(1));
    return lua_topointer(L, 1) == d->self ? d : check_dict_slow(L);
}

static const char *check_key(lua_State *L, size_t *len) {
    const char *k = lua_tolstring(L, 2, len);
    if (!k)
        k = luaL_checklstring(L, 2, len); /* raises */
    if (*len == 0 || *len > 65535)
        luaL_argerror(L, 2, "key of 1 to 65535 bytes expected");
    return k;
}

/* The ttl at idx (nil or none: 0, never expires), checked. */
static double check_ttl_arg(lua_State *L, int idx) {
    if (lua_type(L, idx) <= LUA_TNIL)
        return 0;
    double ttl = luaL_checknumber(L, idx);
    luaL_argcheck(L, ttl >= 0, idx, "ttl must be >= 0");
    return ttl;
}

/* The expiry time of a ttl: 0 (never) for a ttl of 0, without reading the clock. */
static double expiry(double ttl) {
    return ttl > 0 ? mono_now() + ttl : 0;
}

static double check_ttl(lua_State *L, int idx) {
    return expiry(check_ttl_arg(L, idx));
}

static int fail_full(lua_State *L, dict_t *d, size_t bytes) {
    return loom_fail(L, "limit", "shared dict '%s' has no room for %d bytes", d->name, (int)bytes);
}

/* d:get(k) -> value | nil */
static int l_get(lua_State *L) {
    dict_t *d = check_dict(L);
    size_t klen;
    const char *k = check_key(L, &klen);
    uint32_t h = hash_key(k, klen);
    dict_lock(d);
    uint32_t i = lookup(d->m, k, klen, h, 0);
    if (!i) {
        dict_unlock(d);
        lua_pushnil(L);
        return 1;
    }
    head_t *e = cell(d->m, i);
    uint64_t bits = head_num(e);
    value_t v = {.type = (int)head_type(e),
                 .i = int_of_bits(bits),
                 .d = double_of_bits(bits),
                 .len = e->vlen};
    char small[512], *copy = NULL; /* the value, copied out before unlocking */
    if (v.type == T_STR && v.len > 0) {
        copy = v.len <= sizeof small ? small : malloc(v.len);
        if (copy)
            entry_read(d->m, e, e->klen, copy, v.len);
    }
    dict_unlock(d);
    switch (v.type) {
    case T_STR:
        if (v.len > 0 && !copy)
            return luaL_error(L, "out of memory");
        lua_pushlstring(L, copy ? copy : "", v.len);
        if (copy != small)
            free(copy);
        break;
    case T_INT:
        lua_pushinteger(L, v.i);
        break;
    case T_FLOAT:
        lua_pushnumber(L, v.d);
        break;
    default:
        lua_pushboolean(L, (int)v.i);
    }
    return 1;
}

static int set_or_add(lua_State *L, int add) {
    dict_t *d = check_dict(L);
    size_t klen;
    const char *k = check_key(L, &klen);
    uint32_t h = hash_key(k, klen);
    if (lua_isnoneornil(L, 3) && !add) {
        dict_lock(d);
        uint32_t i = find(d->m, k, klen, h);
        if (i)
            entry_remove(d->m, i);
        dict_unlock(d);
        lua_pushboolean(L, 1);
        return 1;
    }
    value_t v;
    check_value(L, 3, &v);
    double expires = check_ttl(L, 4);
    dict_lock(d);
    if (add && lookup(d->m, k, klen, h, 0)) {
        dict_unlock(d);
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "exists");
        return 2;
    }
    uint32_t rc = store(d, k, klen, h, &v, expires);
    dict_unlock(d);
    if (!rc)
        return fail_full(L, d, klen + v.len);
    lua_pushboolean(L, 1);
    return 1;
}

/* d:set(k, v [, ttl]) -> true | nil, "limit: ..." (v nil deletes) */
static int l_set(lua_State *L) {
    return set_or_add(L, 0);
}

/* d:add(k, v [, ttl]) -> true | false, "exists" | nil, "limit: ..." */
static int l_add(lua_State *L) {
    return set_or_add(L, 1);
}

static kcache_t *kc_slot(dict_t *d, const char *k) {
    uintptr_t p = (uintptr_t)k; /* Lua's short strings are interned: one key, one address */
    return &d->cache[((p >> 4) ^ (p >> 10)) & (KC_SLOTS - 1)];
}

/* Notes (lock held) where the integer entry e of key k is; kc_pin completes it. */
static kcache_t *kc_fill(dict_t *d, const char *k, size_t klen, head_t *e, uint64_t last) {
    if (!SH_FAST || klen > KC_KEY)
        return NULL;
    kcache_t *c = kc_slot(d, k);
    c->k = NULL; /* until its string is kept */
    c->e = e;
    c->tag = head_tag(e);
    c->last = last;
    c->expires = e->expires;
    return c;
}

/* Keeps the key string (argument 2) alive in the box's slot table, then makes slot c
 * usable (lock not held: the table may grow, which may raise). Only for a dict's own
 * method: another dict's box is not at hand. */
static void kc_pin(lua_State *L, dict_t *d, kcache_t *c, const char *k) {
    if (!c || d != lua_touserdata(L, lua_upvalueindex(1)))
        return;
    lua_getiuservalue(L, lua_upvalueindex(1), 1);
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, (lua_Integer)(c - d->cache) + 1);
    lua_pop(L, 1);
    c->k = k;
}

/* Whether an entry expiring at `expires` (> 0) is surely alive, by the coarse clock: no
 * system call and no time-stamp counter read; when in doubt the lock and the precise
 * clock decide. */
static int alive_coarse(const dict_t *d, double expires) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 + d->coarse_res < expires;
}

/* d:incr of an integer by an integer without the lock, when this process knows the key's
 * cell: one 16-byte compare-and-swap (usually; a guess of the value that another process
 * made stale costs one more). 1 with *out set, else 0 (the caller takes the lock). */
static int incr_fast(dict_t *d, const char *k, lua_Integer ni, int64_t *out) {
    kcache_t *c = kc_slot(d, k);
    if (c->k != k)
        return 0;
    if (c->expires > 0 && !alive_coarse(d, c->expires))
        return 0;
    head_t *e = c->e;
    uint64_t lo = c->tag, hi = c->last, want;
    for (;;) {
        want = (uint64_t)int_of_bits(hi) + (uint64_t)ni;
        if (pair_cas(e, &lo, &hi, c->tag, want))
            break;
        if (lo != c->tag)
            return 0; /* not the entry it was: freed, replaced, made a float */
    }
    if (!__atomic_load_n(&e->ref, __ATOMIC_RELAXED))
        __atomic_store_n(&e->ref, 1, __ATOMIC_RELAXED);
    c->last = want;
    *out = int_of_bits(want);
    return 1;
}

/* Adds n to the live entry i and unlocks; pushes the new value, or nil, "not a number".
 * Lock-free increments of integers may race with this, so an integer changes by
 * compare-and-swap; a float never does (only under the lock). */
static int incr_entry(lua_State *L, dict_t *d, const char *k, size_t klen, uint32_t i, int n_int,
                      lua_Integer ni, double nd) {
    head_t *e = cell(d->m, i);
    uint64_t tag = head_tag(e), hi = head_num(e);
    unsigned type = tag_type(tag);
    if (type == T_INT && n_int) {
        uint64_t lo = tag, want;
        do
            want = (uint64_t)int_of_bits(hi) + (uint64_t)ni;
        while (!pair_cas(e, &lo, &hi, tag, want));
        kcache_t *c = kc_fill(d, k, klen, e, want);
        dict_unlock(d);
        kc_pin(L, d, c, k);
        lua_pushinteger(L, (lua_Integer)int_of_bits(want));
        return 1;
    }
    if (type == T_INT) { /* becomes a float: a new tag, so cached integer tags fail */
        uint64_t lo = tag, want, ftag = tag_make(C_LIVE, T_FLOAT, tag_seq(tag));
        do
            want = bits_of_double((double)int_of_bits(hi) + nd);
        while (!pair_cas(e, &lo, &hi, ftag, want));
        dict_unlock(d);
        lua_pushnumber(L, double_of_bits(want));
        return 1;
    }
    if (type == T_FLOAT) {
        double now = double_of_bits(hi) + nd;
        __atomic_store_n(&e->num, bits_of_double(now), __ATOMIC_RELAXED);
        dict_unlock(d);
        lua_pushnumber(L, now);
        return 1;
    }
    dict_unlock(d);
    lua_pushnil(L);
    lua_pushliteral(L, "not a number");
    return 2;
}

/* d:incr(k, n [, init [, init_ttl]]) -> new value | nil, "not found" | nil, "not a number".
 * The hot path of counters and rate limits: each Lua API call counts, so the arguments are
 * read with as few calls as the checks allow; init is read (and the clock, for init_ttl)
 * only when the key is absent. */
static int l_incr(lua_State *L) {
    dict_t *d = check_dict(L);
    size_t klen;
    const char *k = check_key(L, &klen);
    int n_int = lua_isinteger(L, 3);
    lua_Integer ni = n_int ? lua_tointeger(L, 3) : 0;
    double nd = n_int ? (double)ni : luaL_checknumber(L, 3);
    int top = lua_gettop(L);
    int init_type = top >= 4 ? lua_type(L, 4) : LUA_TNONE;
    if (init_type != LUA_TNUMBER && init_type > LUA_TNIL)
        luaL_checknumber(L, 4); /* raises, unless a numeric string */
    double ttl = top >= 5 ? check_ttl_arg(L, 5) : 0;
    int64_t now;
    if (SH_FAST && n_int && incr_fast(d, k, ni, &now)) {
        lua_pushinteger(L, (lua_Integer)now);
        return 1;
    }
    uint32_t h = hash_key(k, klen);
    dict_lock(d);
    uint32_t i = lookup(d->m, k, klen, h, 0);
    if (i)
        return incr_entry(L, d, k, klen, i, n_int, ni, nd);
    dict_unlock(d);
    if (init_type <= LUA_TNIL) {
        lua_pushnil(L);
        lua_pushliteral(L, "not found");
        return 2;
    }
    value_t v;
    memset(&v, 0, sizeof v);
    if (lua_isinteger(L, 4) && n_int)
        v.type = T_INT, v.i = (int64_t)((uint64_t)lua_tointeger(L, 4) + (uint64_t)ni);
    else
        v.type = T_FLOAT, v.d = lua_tonumber(L, 4) + nd;
    double expires = expiry(ttl);
    dict_lock(d);
    i = lookup(d->m, k, klen, h, 0); /* another process may have made it meanwhile */
    if (i)
        return incr_entry(L, d, k, klen, i, n_int, ni, nd);
    i = store(d, k, klen, h, &v, expires);
    kcache_t *c = i && v.type == T_INT ? kc_fill(d, k, klen, cell(d->m, i), (uint64_t)v.i) : NULL;
    dict_unlock(d);
    if (!i)
        return fail_full(L, d, klen);
    kc_pin(L, d, c, k);
    if (v.type == T_INT)
        lua_pushinteger(L, v.i);
    else
        lua_pushnumber(L, v.d);
    return 1;
}

/* d:delete(k) -> true */
static int l_delete(lua_State *L) {
    lua_settop(L, 2);
    return set_or_add(L, 0);
}

/* d:ttl(k) -> seconds left (0: never expires) | nil, "not found" */
static int l_ttl(lua_State *L) {
    dict_t *d = check_dict(L);
    size_t klen;
    const char *k = check_key(L, &klen);
    uint32_t h = hash_key(k, klen);
    double now = mono_now();
    dict_lock(d);
    uint32_t i = lookup(d->m, k, klen, h, now);
    double exp = i ? cell(d->m, i)->expires : 0;
    dict_unlock(d);
    if (!i) {
        lua_pushnil(L);
        lua_pushliteral(L, "not found");
        return 2;
    }
    lua_pushnumber(L, exp > 0 ? exp - now : 0);
    return 1;
}

/* d:stats() -> {count, cells, free, evictions} */
static int l_stats(lua_State *L) {
    dict_t *d = check_dict(L);
    dict_lock(d);
    lua_Integer c = d->m->count, n = d->m->ncells, f = d->m->nfree,
                ev = (lua_Integer)d->m->evictions;
    dict_unlock(d);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, c);
    lua_setfield(L, -2, "count");
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "cells");
    lua_pushinteger(L, f);
    lua_setfield(L, -2, "free");
    lua_pushinteger(L, ev);
    lua_setfield(L, -2, "evictions");
    return 1;
}

/* d:_gcra(k, interval, tolerance) -> true, remaining | false, retry_after (seconds): the
 * generic cell rate algorithm, atomically. The key holds the theoretical arrival time. */
static int l_gcra(lua_State *L) {
    dict_t *d = check_dict(L);
    size_t klen;
    const char *k = check_key(L, &klen);
    double T = luaL_checknumber(L, 3), tau = luaL_checknumber(L, 4);
    uint32_t h = hash_key(k, klen);
    double now = mono_now();
    dict_lock(d);
    uint32_t i = lookup(d->m, k, klen, h, now);
    int is_float = i && head_type(cell(d->m, i)) == T_FLOAT; /* floats change only locked */
    double tat = is_float ? double_of_bits(head_num(cell(d->m, i))) : now;
    if (tat < now)
        tat = now;
    double next = tat + T;
    if (next - now > tau + 1e-9) {
        dict_unlock(d);
        lua_pushboolean(L, 0);
        lua_pushnumber(L, next - tau - now);
        return 2;
    }
    if (is_float) {
        head_t *e = cell(d->m, i);
        e->expires = next; /* later: a process's cached expiry errs on the early side */
        __atomic_store_n(&e->num, bits_of_double(next), __ATOMIC_RELAXED);
    } else {
        value_t v = {.type = T_FLOAT, .d = next};
        if (!store(d, k, klen, h, &v, next)) {
            dict_unlock(d);
            return fail_full(L, d, klen);
        }
    }
    dict_unlock(d);
    lua_pushboolean(L, 1);
    lua_pushinteger(L, (lua_Integer)floor((tau - (next - now)) / T + 1e-9));
    return 2;
}

/* d:_crash(point): test hook. "locked": the next lock kills the process holding it;
 * "set": the next set that replaces a key dies with both entries live. */
static int l_crash(lua_State *L) {
    dict_t *d = check_dict(L);
    static const char *const points[] = {"none", "locked", "set", NULL};
    d->crash = luaL_checkoption(L, 2, NULL, points);
    return 0;
}

static int l_gc(lua_State *L) {
    dict_t *d = lua_touserdata(L, 1);
    if (d->m) {
        munmap(d->m, d->size);
        d->m = NULL;
    }
    return 0;
}

static void init_mapping(shm_t *m, size_t size) {
    memset(m, 0, sizeof *m);
    m->size = size;
    size_t room = size - ((sizeof(shm_t) + 63) & ~(size_t)63) - 64;
    uint32_t ncells = (uint32_t)(room / (CELL + 2)); /* ~2 bytes of buckets per cell */
    uint32_t nb = 1;
    while (nb * 2 <= ncells / 2)
        nb *= 2;
    m->nbuckets = nb;
    m->ncells = (uint32_t)((room - (size_t)nb * 4) / CELL);
    for (uint32_t i = m->ncells; i >= 1; i--) {
        cell_set_state(m, i, C_FREE);
        cont(m, i)->next = m->free_head;
        m->free_head = i;
    }
    m->nfree = m->ncells;
    atomic_init(&m->lock, 0);
    m->magic = SH_MAGIC;
}

/* The mapping a parent (or this process) recorded for `name`, or NULL. */
static shm_t *attach(const char *var, size_t *size) {
    const char *s = getenv(var);
    long pid, fd;
    unsigned long long sz;
    if (!s || sscanf(s, "%ld:%ld:%llu", &pid, &fd, &sz) != 3)
        return NULL;
    if (pid != (long)getppid() && pid != (long)getpid())
        return NULL;
    struct stat st;
    if (fstat((int)fd, &st) != 0 || (unsigned long long)st.st_size != sz)
        return NULL;
    void *p = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED, (int)fd, 0);
    if (p == MAP_FAILED)
        return NULL;
    if (((shm_t *)p)->magic != SH_MAGIC) {
        munmap(p, sz);
        return NULL;
    }
    *size = (size_t)sz;
    return p;
}

static const luaL_Reg dict_methods[] = {
    {"get", l_get},       {"set", l_set}, {"add", l_add},     {"incr", l_incr},
    {"delete", l_delete}, {"ttl", l_ttl}, {"stats", l_stats}, {"_gcra", l_gcra},
    {"_crash", l_crash},  {NULL, NULL},
};

/* Replaces the new box at the top (dict d) by the dict's table: its methods, a metatable
 * naming it, and an entry in the registry. The box unmaps the memory when collected, which
 * is once the table and every method taken from it are. */
static void make_table(lua_State *L, dict_t *d) {
    lua_createtable(L, KC_SLOTS, 0); /* the strings of the cached keys */
    lua_setiuservalue(L, -2, 1);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    luaL_newlibtable(L, dict_methods);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, dict_methods, 1);
    lua_createtable(L, 0, 2);
    lua_pushliteral(L, SHARED_MT);
    lua_setfield(L, -2, "__name");
    lua_pushliteral(L, SHARED_MT);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    d->self = lua_topointer(L, -1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &dicts_key);
    lua_pushvalue(L, -2);
    lua_pushvalue(L, -4);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    lua_remove(L, -2);
}

/* core.shared_open(name, size) -> dict | nil, err */
static int l_shared_open(lua_State *L) {
    size_t nlen;
    const char *name = luaL_checklstring(L, 1, &nlen);
    lua_Integer size = luaL_checkinteger(L, 2);
    luaL_argcheck(L,
                  nlen > 0 && nlen < 48 &&
                      strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"
                                   "KLMNOPQRSTUVWXYZ0123456789_") == nlen,
                  1, "name of letters, digits and _ (1 to 47) expected");
    luaL_argcheck(L, size >= MIN_SIZE && size <= ((lua_Integer)1 << 36), 2,
                  "size from 16384 bytes expected");
    char var[80];
    snprintf(var, sizeof var, "LOOM_SHARED_%s", name);
    dict_t *d = lua_newuserdatauv(L, sizeof *d, 1);
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", name);
    d->pid = (uint32_t)getpid();
    struct timespec res;
    /* a tick, twice, and a millisecond: the coarse clock lags by less than a tick */
    d->coarse_res = clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0
                        ? 2 * ((double)res.tv_sec + (double)res.tv_nsec / 1e9) + 0.001
                        : 1e9;
    make_table(L, d);
    d->m = attach(var, &d->size);
    if (d->m)
        return 1;
    char mname[64];
    snprintf(mname, sizeof mname, "loom.shared.%s", name);
    int fd = memfd_create(mname, 0); /* no MFD_CLOEXEC: exec'd workers inherit it */
    if (fd < 0)
        return loom_fail(L, "closed", "memfd_create: %s", strerror(errno));
    if (ftruncate(fd, (off_t)size) != 0) {
        close(fd);
        return loom_fail(L, "closed", "ftruncate: %s", strerror(errno));
    }
    void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        close(fd);
        return loom_fail(L, "closed", "mmap: %s", strerror(errno));
    }
    d->m = p;
    d->size = (size_t)size;
    init_mapping(d->m, d->size);
    char val[64];
    snprintf(val, sizeof val, "%ld:%d:%llu", (long)getpid(), fd, (unsigned long long)size);
    setenv(var, val, 1);
    return 1;
}

static const luaL_Reg shared_funcs[] = {
    {"shared_open", l_shared_open},
    {NULL, NULL},
};

int loom_open_shared(lua_State *L) {
    lua_newtable(L); /* the set of dicts, weak-keyed */
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &dicts_key);
    luaL_setfuncs(L, shared_funcs, 0);
    return 0;
}
