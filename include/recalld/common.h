/* recalld — shared definitions: error codes, clocks, a small PRNG, error text. */
#ifndef RECALLD_COMMON_H
#define RECALLD_COMMON_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* Error codes: 0 ok, negative on failure (libuv style). */
enum {
    RC_OK = 0,
    RC_EINVAL = -1,   /* bad argument or malformed input */
    RC_ENOMEM = -2,   /* allocation failed or a configured bound was reached */
    RC_EIO = -3,      /* system call or file failure */
    RC_EPROTO = -4,   /* protocol violation (socket, wire format) */
    RC_E2BIG = -5,    /* input over a size limit */
    RC_EKAFKA = -6,   /* librdkafka failure */
    RC_EFAISS = -7,   /* FAISS failure */
    RC_ENOENT = -8,   /* unknown id / missing file */
    RC_EAGAIN = -9,   /* try again later (queue full, not ready) */
    RC_ECORRUPT = -10 /* checksum, magic or version mismatch in a file */
};

/* Static text for an RC_E* code. Thread-safe. */
const char *rc_strerror(int rc);

/* Formats "what: why" into errbuf (NULL or errlen 0: no-op). Returns rc unchanged
 * so callers can write `return rc_err(errbuf, errlen, RC_EINVAL, "...")`. */
int rc_err(char *errbuf, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Monotonic clock in nanoseconds. */
uint64_t rc_now_ns(void);

/* Resident set size of this process in bytes (0 if /proc is unreadable). */
size_t rc_rss_bytes(void);
/* malloc's figures (glibc mallinfo2; 0 elsewhere): held = bytes taken from the
 * system (all arenas + mmapped blocks), free_bytes = free bytes inside the
 * arenas (allocator slack that RSS may still count). Walks every arena. */
void rc_heap_bytes(size_t *held, size_t *free_bytes);
/* A block for randomly accessed rows (the table's chunks). From 2 MiB up it
 * is 2 MiB aligned and its whole 2 MiB pages are advised for transparent huge
 * pages, so a random row costs no TLB walk over 4 KiB pages; a smaller one is
 * 64-byte aligned. Freed with free(); NULL when out of memory. The advice is
 * best effort (THP "never" leaves 4 KiB pages). */
void *rc_alloc_huge(size_t bytes);
/* Wall clock, milliseconds since the epoch. */
int64_t rc_wall_ms(void);

/* xoshiro256** PRNG: small, fast, good enough for sampling. Not thread-safe:
 * one state per thread. */
typedef struct rc_rng {
    uint64_t s[4];
} rc_rng;
void rc_rng_seed(rc_rng *r, uint64_t seed);
uint64_t rc_rng_next(rc_rng *r);
/* Uniform in [0, n); n > 0. */
static inline uint32_t rc_rng_below(rc_rng *r, uint32_t n)
{
    return (uint32_t)(((rc_rng_next(r) >> 32) * (uint64_t)n) >> 32);
}
/* Uniform float in [0, 1). */
static inline float rc_rng_float(rc_rng *r)
{
    return (float)(rc_rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

/* Quantiles of a sample: out[i] is the element of rank floor((n - 1) * q[i])
 * (0-based, ascending) for each q[i] in [0, 1], q[] ascending. v[0..n) is
 * reordered in place (selection, O(n) on average: no sort). n == 0: out[] = 0. */
void rc_quantiles_u32(uint32_t *v, size_t n, const double *q, size_t nq, uint32_t *out);

/* An entry of a saved blob (ref: its offset) and the time that orders it:
 * the session and profile stores save their users in memory order and
 * load them oldest first. rc_timed_ref_sort orders v by ts, then ref
 * (stable radix passes when v comes in ref order, else qsort). */
typedef struct rc_timed_ref {
    int64_t ts;
    uint64_t ref;
} rc_timed_ref;
void rc_timed_ref_sort(rc_timed_ref *v, size_t n);

/* 64-bit hash of a byte string (FNV-1a folded with a murmur finaliser). */
uint64_t rc_hash(const void *p, size_t n);

#define RC_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define RC_MIN(a, b)    ((a) < (b) ? (a) : (b))
#define RC_MAX(a, b)    ((a) > (b) ? (a) : (b))

/* Condition variables whose timed waits run on CLOCK_MONOTONIC: a step of
 * the wall clock (NTP, a resumed VM) neither stretches nor cuts a wait. Init
 * with rc_cond_init_mono, wait at most ns with rc_cond_wait_ns (returns
 * pthread_cond_timedwait's result: 0, ETIMEDOUT). */
int rc_cond_init_mono(pthread_cond_t *cv);
int rc_cond_wait_ns(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t ns);

#endif
