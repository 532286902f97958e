#include "recalld/common.h"

#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

const char *rc_strerror(int rc)
{
    switch (rc) {
    case RC_OK:
        return "ok";
    case RC_EINVAL:
        return "invalid argument";
    case RC_ENOMEM:
        return "out of memory or over a configured bound";
    case RC_EIO:
        return "i/o error";
    case RC_EPROTO:
        return "protocol error";
    case RC_E2BIG:
        return "input too large";
    case RC_EKAFKA:
        return "kafka error";
    case RC_EFAISS:
        return "faiss error";
    case RC_ENOENT:
        return "not found";
    case RC_EAGAIN:
        return "try again";
    case RC_ECORRUPT:
        return "corrupt data";
    default:
        return "unknown error";
    }
}

int rc_err(char *errbuf, size_t errlen, int rc, const char *fmt, ...)
{
    if (errbuf && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errbuf, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

#define HUGE_PAGE ((size_t)2 << 20)

void *rc_alloc_huge(size_t bytes)
{
    size_t sz = (bytes + 63) / 64 * 64;
    void *p = NULL;
    /* posix_memalign: C11's aligned_alloc wants the size a multiple of the
     * alignment, which a chunk is not. */
    if (posix_memalign(&p, sz < HUGE_PAGE ? 64 : HUGE_PAGE, sz ? sz : 64))
        return NULL;
#ifdef MADV_HUGEPAGE
    /* Whole huge pages only: a partial one at the tail would be faulted in
     * as 2 MiB for the few KiB used there. */
    if (sz >= HUGE_PAGE)
        (void)madvise(p, sz / HUGE_PAGE * HUGE_PAGE, MADV_HUGEPAGE);
#endif
    return p;
}

uint64_t rc_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int rc_cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    int rc = pthread_condattr_init(&a);
    if (rc)
        return rc;
    rc = pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
    return rc;
}

int rc_cond_wait_ns(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t ns)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t nsec = (uint64_t)ts.tv_nsec + ns % 1000000000u;
    ts.tv_sec += (time_t)(ns / 1000000000u + nsec / 1000000000u);
    ts.tv_nsec = (long)(nsec % 1000000000u);
    return pthread_cond_timedwait(cv, mu, &ts);
}

int64_t rc_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void rc_rng_seed(rc_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t rc_rng_next(rc_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static int timed_ref_cmp(const void *a, const void *b)
{
    const rc_timed_ref *x = a, *y = b;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    return (x->ref > y->ref) - (x->ref < y->ref);
}

/* A stable LSD radix sort on ts - min, 11 bits a pass and only as many
 * passes as the span needs (a month in ms: 3), so equal times keep the
 * order of ref when v came in ref order, as the loaders build it; qsort on
 * (ts, ref) when the scratch array cannot be had. 1M entries: tens of ms
 * where qsort took a few hundred on a loaded machine. */
void rc_timed_ref_sort(rc_timed_ref *v, size_t n)
{
    enum { BITS = 11, BUCKETS = 1 << BITS };
    if (!v || n < 2)
        return;
    int64_t lo = v[0].ts, hi = v[0].ts;
    int ordered = 1;
    for (size_t i = 1; i < n; i++) {
        lo = RC_MIN(lo, v[i].ts);
        hi = RC_MAX(hi, v[i].ts);
        ordered &= v[i].ref > v[i - 1].ref;
    }
    rc_timed_ref *t = ordered ? malloc(n * sizeof *t) : NULL;
    if (!t) {
        qsort(v, n, sizeof *v, timed_ref_cmp);
        return;
    }
    uint64_t span = (uint64_t)hi - (uint64_t)lo;
    rc_timed_ref *src = v, *dst = t;
    for (unsigned shift = 0; shift < 64 && (shift == 0 || span >> shift); shift += BITS) {
        size_t count[BUCKETS + 1] = {0};
        for (size_t i = 0; i < n; i++)
            count[(((uint64_t)src[i].ts - (uint64_t)lo) >> shift & (BUCKETS - 1)) + 1]++;
        for (unsigned b = 0; b < BUCKETS; b++)
            count[b + 1] += count[b];
        for (size_t i = 0; i < n; i++)
            dst[count[((uint64_t)src[i].ts - (uint64_t)lo) >> shift & (BUCKETS - 1)]++] = src[i];
        rc_timed_ref *x = src;
        src = dst;
        dst = x;
    }
    if (src != v)
        memcpy(v, src, n * sizeof *v);
    free(t);
}

uint64_t rc_hash(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

void rc_heap_bytes(size_t *held, size_t *free_bytes)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
    struct mallinfo2 mi = mallinfo2();
    *held = mi.arena + mi.hblkhd;
    *free_bytes = mi.fordblks;
#else
    *held = *free_bytes = 0;
#endif
}

size_t rc_rss_bytes(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = 0;
    fclose(f);
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

static void swap_u32(uint32_t *a, uint32_t *b)
{
    uint32_t t = *a;
    *a = *b;
    *b = t;
}

/* Moves the element of rank k of v[lo..hi] to v[k], smaller ones before it
 * and larger ones after (Hoare partition around a median of three). */
static void select_u32(uint32_t *v, size_t lo, size_t hi, size_t k)
{
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v[mid] < v[lo])
            swap_u32(&v[mid], &v[lo]);
        if (v[hi] < v[lo])
            swap_u32(&v[hi], &v[lo]);
        if (v[hi] < v[mid])
            swap_u32(&v[hi], &v[mid]);
        uint32_t pivot = v[mid];
        size_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot)
                i++;
            while (v[j] > pivot)
                j--;
            if (i <= j) {
                swap_u32(&v[i], &v[j]);
                i++;
                if (j == 0)
                    break;
                j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return;
    }
}

void rc_quantiles_u32(uint32_t *v, size_t n, const double *q, size_t nq, uint32_t *out)
{
    size_t lo = 0;
    for (size_t i = 0; i < nq; i++) {
        if (n == 0) {
            out[i] = 0;
            continue;
        }
        double f = q[i] < 0 ? 0 : q[i] > 1 ? 1 : q[i];
        size_t k = (size_t)((double)(n - 1) * f);
        if (k < lo)
            k = lo; /* q[] not ascending: still a valid element, not below the last */
        select_u32(v, lo, n - 1, k);
        out[i] = v[k];
        lo = k;
    }
}
