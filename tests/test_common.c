#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/buf.h"
#include "recalld/common.h"
#include "test.h"

TEST(common_rng_below_in_range)
{
    rc_rng r;
    rc_rng_seed(&r, 42);
    unsigned hist[10] = {0};
    for (int i = 0; i < 100000; i++) {
        uint32_t v = rc_rng_below(&r, 10);
        ASSERT_LT(v, 10);
        hist[v]++;
    }
    for (int i = 0; i < 10; i++)
        ASSERT_GT(hist[i], 9000);
}

TEST(buf_json_escapes_and_limits)
{
    rc_buf b;
    rc_buf_init(&b, 0);
    ASSERT_EQ(rc_buf_json_str(&b, "a\"b\\\n\xff", 6), 0);
    ASSERT_STREQ(b.data, "\"a\\\"b\\\\\\u000a\xef\xbf\xbd\"");
    rc_buf_free(&b);
    rc_buf_init(&b, 8);
    ASSERT_EQ(rc_buf_puts(&b, "12345678"), 0);
    ASSERT_NE(rc_buf_puts(&b, "9"), 0);
    ASSERT_EQ(b.overflow, 1);
    ASSERT_EQ(b.len, 8);
    rc_buf_free(&b);
}

static int cmp_u32_ref(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Selection agrees with a full sort at every rank asked, on sizes 1..300 with
 * few distinct values (ties), many, and sorted/reversed inputs. */
TEST(common_quantiles_match_sorted_ranks)
{
    rc_rng r;
    rc_rng_seed(&r, 7);
    static uint32_t v[300], ref[300];
    const double q[] = {0, 0.25, 0.5, 0.9, 0.99, 1};
    for (uint32_t n = 1; n <= 300; n++) {
        for (int shape = 0; shape < 4; shape++) {
            for (uint32_t i = 0; i < n; i++)
                v[i] = shape == 0   ? rc_rng_below(&r, 4)
                       : shape == 1 ? rc_rng_below(&r, 1000000)
                       : shape == 2 ? i
                                    : n - i;
            memcpy(ref, v, n * sizeof *v);
            qsort(ref, n, sizeof *ref, cmp_u32_ref);
            uint32_t out[6];
            rc_quantiles_u32(v, n, q, 6, out);
            for (int k = 0; k < 6; k++)
                ASSERT_EQ(out[k], ref[(size_t)((double)(n - 1) * q[k])]);
        }
    }
    uint32_t none[1] = {0}, out0 = 99;
    rc_quantiles_u32(none, 0, q, 1, &out0);
    ASSERT_EQ(out0, 0u);
}

/* rc_cond_wait_ns's deadline is on the monotonic clock, and so is the wait
 * of a cond from rc_cond_init_mono: a cond on the wall clock would take the
 * (small) monotonic deadline as long past and return at once. A wall clock
 * stepped back stretches no wait then (the daemon's trainer tick, the
 * publisher, the retrainer, the watchdog). */
static int cmp_timed_ref(const void *a, const void *b)
{
    const rc_timed_ref *x = a, *y = b;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    return (x->ref > y->ref) - (x->ref < y->ref);
}

/* rc_timed_ref_sort orders by time, then ref, as a comparison sort does:
 * many ties, negative times, spans of 0, a few bits, a month in ms and the
 * whole int64 range (the radix passes), and refs that do not come in order
 * (its qsort path). */
TEST(common_timed_ref_sort_by_time_then_ref)
{
    rc_rng rng;
    rc_rng_seed(&rng, 17);
    static const int64_t spans[] = {1, 7, 2592000000LL, INT64_MAX};
    for (unsigned si = 0; si < RC_ARRAY_LEN(spans); si++)
        for (int ordered = 0; ordered < 2; ordered++)
            for (size_t n = 0; n < 5000; n = n * 3 + 1) {
                rc_timed_ref *v = malloc((n + 1) * sizeof *v), *w = malloc((n + 1) * sizeof *w);
                ASSERT(v && w);
                for (size_t i = 0; i < n; i++) {
                    uint64_t r = rc_rng_next(&rng);
                    int64_t ts = spans[si] == INT64_MAX ? (int64_t)r
                                                        : (int64_t)(r % (uint64_t)spans[si]) - 3;
                    if (i % 4 == 1) /* a tie with the one before */
                        ts = v[i - 1].ts;
                    v[i] = (rc_timed_ref){ts, ordered ? i * 10 : rc_rng_next(&rng) % 1000};
                }
                memcpy(w, v, n * sizeof *v);
                qsort(w, n, sizeof *w, cmp_timed_ref);
                rc_timed_ref_sort(v, n);
                for (size_t i = 0; i < n; i++) {
                    ASSERT_EQ(v[i].ts, w[i].ts);
                    ASSERT_EQ(v[i].ref, w[i].ref);
                }
                free(v);
                free(w);
            }
    rc_timed_ref_sort(NULL, 3); /* NULL-safe */
}

TEST(common_cond_wait_runs_on_the_monotonic_clock)
{
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv;
    ASSERT_EQ(rc_cond_init_mono(&cv), 0);
    pthread_mutex_lock(&mu);
    uint64_t t0 = rc_now_ns();
    int rc;
    do /* a spurious wake-up returns 0 early: wait again */
        rc = rc_cond_wait_ns(&cv, &mu, 50 * 1000000u);
    while (rc == 0 && rc_now_ns() - t0 < 50 * 1000000u);
    uint64_t waited = rc_now_ns() - t0;
    pthread_mutex_unlock(&mu);
    ASSERT_EQ(rc, ETIMEDOUT);
    ASSERT(waited >= 50 * 1000000u); /* no upper bound: a loaded machine */
    pthread_cond_destroy(&cv);
}

/* The smaps record of the mapping holding p: "THPeligible:" (1 = the kernel
 * may back it with huge pages), -1 if not found. */
static int thp_eligible(const void *p)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return -1;
    char line[256];
    int in = 0, r = -1;
    uintptr_t a = (uintptr_t)p;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            in = a >= lo && a < hi;
            continue;
        }
        if (in && sscanf(line, "THPeligible: %d", &r) == 1)
            break;
    }
    fclose(f);
    return r;
}

TEST(common_alloc_huge_aligns_and_advises_whole_huge_pages)
{
    size_t big = (5u << 20) + 12345; /* two whole huge pages and a tail */
    char *p = rc_alloc_huge(big), *s = rc_alloc_huge(1000);
    ASSERT(p && s);
    ASSERT_EQ((uintptr_t)p % (2u << 20), 0);
    ASSERT_EQ((uintptr_t)s % 64, 0);
    memset(p, 1, big); /* all of it is usable */
    memset(s, 2, 1000);
    ASSERT_EQ(p[big - 1], 1);
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    char mode[128] = "";
    if (f) {
        if (!fgets(mode, sizeof mode, f))
            mode[0] = 0;
        fclose(f);
    }
    /* With THP in "madvise" mode the advice is what makes the pages eligible
     * (in "always" they are anyway, in "never" never). */
    if (strstr(mode, "[madvise]") && !getenv("GLIBC_TUNABLES")) {
        ASSERT_EQ(thp_eligible(p), 1);
        char *plain = malloc(big); /* the control: malloc's own mapping is not advised */
        ASSERT(plain);
        ASSERT_EQ(thp_eligible(plain), 0);
        free(plain);
    }
    free(p);
    free(s);
}
