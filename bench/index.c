/* bench_index — live index search latency and recall@50 at scale.
 *
 * N items x d64 of clustered unit vectors over 20 cities x 10 categories
 * (200 partitions), indexed by rc_index; single-query k=50 latency p50/p99
 * without a filter and with a city filter, recall@50 against exact search
 * (cblas_sgemv over all rows + top-k, timed in the same run as the
 * reference), first quiet, then while a writer thread keeps changing,
 * touching and flushing rows.
 *
 *   bench_index [--items N] [--queries Q] [--lists L] [--sweep] */
#include <cblas.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "recalld/common.h"
#include "recalld/index.h"
#include "recalld/table.h"
#include "recalld/vec.h"

#define DIM    64
#define NCITY  20
#define NCATE  10
#define TOPICS 60 /* per category */
#define K      50

typedef struct bench {
    uint32_t n, nq, lists;
    rc_table *t;
    rc_index *ix;
    float *x;  /* n * DIM: the vectors as first written (exact reference) */
    float *qs; /* queries, nq * DIM, per filter kind */
    uint32_t *qcity;
    uint32_t *ref; /* nq * K exact rows, two filter kinds */
    double ref_us[2];
} bench;

static float gauss(rc_rng *r)
{
    float u = rc_rng_float(r) + 1e-7f, v = rc_rng_float(r);
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

static void rand_unit(rc_rng *r, float *v, float scale)
{
    for (int i = 0; i < DIM; i++)
        v[i] = gauss(r);
    rc_vec_normalize(v, DIM);
    rc_vec_scale(scale, v, DIM);
}

static uint32_t city_of(const bench *b, uint32_t row)
{
    return (uint32_t)((uint64_t)row * NCITY / b->n);
}

/* Rows are laid out city by city (so a city is a contiguous block for the
 * reference) and category by category inside a city. A vector is a topic of
 * its category plus a city direction plus noise. */
static void gen_data(bench *b)
{
    rc_rng r;
    rc_rng_seed(&r, 42);
    float *topic = malloc((size_t)NCATE * TOPICS * DIM * sizeof(float));
    float cityv[NCITY][DIM];
    for (uint32_t i = 0; i < NCATE * TOPICS; i++)
        rand_unit(&r, topic + (size_t)i * DIM, 1.0f);
    for (int c = 0; c < NCITY; c++)
        rand_unit(&r, cityv[c], 0.5f);
    char s[32];
    uint32_t id;
    for (int c = 0; c < NCITY; c++)
        rc_table_city_id(b->t, s, (size_t)snprintf(s, sizeof(s), "c%d", c), &id);
    for (int c = 0; c < NCATE; c++)
        rc_table_cate_id(b->t, s, (size_t)snprintf(s, sizeof(s), "k%d", c), &id);
    for (uint32_t i = 0; i < b->n; i++) {
        uint32_t city = city_of(b, i);
        uint64_t lo = (uint64_t)city * b->n / NCITY, hi = (uint64_t)(city + 1) * b->n / NCITY;
        uint32_t cate = (uint32_t)((i - lo) * NCATE / (hi - lo));
        float *v = b->x + (size_t)i * DIM;
        const float *tp = topic + ((size_t)cate * TOPICS + rc_rng_below(&r, TOPICS)) * DIM;
        for (int j = 0; j < DIM; j++)
            v[j] = tp[j] + cityv[city][j] + 0.1f * gauss(&r);
        rc_vec_normalize(v, DIM);
        uint32_t row;
        int created;
        int n = snprintf(s, sizeof(s), "i%u", i);
        if (rc_table_upsert(b->t, s, (size_t)n, city, cate, NULL, 0, &row, &created) || row != i) {
            fprintf(stderr, "upsert %u failed\n", i);
            exit(1);
        }
        memcpy(rc_table_in(b->t, row), v, DIM * sizeof(float));
    }
    free(topic);
}

/* A user vector: the mean of 4 rows of one city. */
static void gen_queries(bench *b)
{
    rc_rng r;
    rc_rng_seed(&r, 7);
    for (uint32_t i = 0; i < 2 * b->nq; i++) {
        float *q = b->qs + (size_t)i * DIM;
        uint32_t city = rc_rng_below(&r, NCITY);
        uint64_t lo = (uint64_t)city * b->n / NCITY, hi = (uint64_t)(city + 1) * b->n / NCITY;
        memset(q, 0, DIM * sizeof(float));
        for (int j = 0; j < 4; j++)
            rc_vec_axpy(0.25f, b->x + (lo + rc_rng_below(&r, (uint32_t)(hi - lo))) * DIM, q, DIM);
        b->qcity[i] = city;
    }
}

static int dbl_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double *v, uint32_t n, double p)
{
    qsort(v, n, sizeof(double), dbl_cmp);
    uint32_t i = (uint32_t)(p * (n - 1) + 0.5);
    return v[i];
}

/* Exact top-K over rows [lo, hi) of x into out (unordered). */
static void exact(const bench *b, const float *q, uint32_t lo, uint32_t hi, float *sc,
                  uint32_t *out)
{
    uint32_t m = hi - lo, nh = 0;
    float hs[K];
    cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)m, DIM, 1.0f, b->x + (size_t)lo * DIM, DIM, q, 1,
                0.0f, sc, 1);
    for (uint32_t i = 0; i < m; i++) {
        if (nh == K && sc[i] <= hs[0])
            continue;
        uint32_t j = nh < K ? nh++ : 0;
        if (j == 0 && nh == K) { /* replace the root, sift down */
            for (;;) {
                uint32_t c = 2 * j + 1;
                if (c >= K)
                    break;
                if (c + 1 < K && hs[c + 1] < hs[c])
                    c++;
                if (sc[i] <= hs[c])
                    break;
                hs[j] = hs[c];
                out[j] = out[c];
                j = c;
            }
        } else {
            while (j > 0 && hs[(j - 1) / 2] > sc[i]) {
                hs[j] = hs[(j - 1) / 2];
                out[j] = out[(j - 1) / 2];
                j = (j - 1) / 2;
            }
        }
        hs[j] = sc[i];
        out[j] = lo + i;
    }
}

static void compute_refs(bench *b)
{
    float *sc = malloc((size_t)b->n * sizeof(float));
    double *lat = malloc(b->nq * sizeof(double));
    for (int kind = 0; kind < 2; kind++) {
        for (uint32_t i = 0; i < b->nq; i++) {
            uint32_t qi = kind * b->nq + i, city = b->qcity[qi];
            uint32_t lo = 0, hi = b->n;
            if (kind) {
                lo = (uint32_t)((uint64_t)city * b->n / NCITY);
                hi = (uint32_t)((uint64_t)(city + 1) * b->n / NCITY);
            }
            uint64_t t0 = rc_now_ns();
            exact(b, b->qs + (size_t)qi * DIM, lo, hi, sc, b->ref + (size_t)qi * K);
            lat[i] = (double)(rc_now_ns() - t0) / 1e3;
        }
        b->ref_us[kind] = pct(lat, b->nq, 0.5);
    }
    free(lat);
    free(sc);
}

/* Runs the queries of one filter kind; returns recall, fills p50/p99 (us). */
static double run(bench *b, int kind, double *p50, double *p99)
{
    double *lat = malloc(b->nq * sizeof(double));
    uint32_t rows[K], n;
    float sc[K];
    uint64_t hit = 0;
    for (uint32_t i = 0; i < b->nq; i++) {
        uint32_t qi = kind * b->nq + i;
        rc_index_filter f = {kind ? (int64_t)b->qcity[qi] : -1, NULL, 0};
        uint64_t t0 = rc_now_ns();
        if (rc_index_search(b->ix, b->qs + (size_t)qi * DIM, K, &f, rows, sc, &n)) {
            fprintf(stderr, "search failed\n");
            exit(1);
        }
        lat[i] = (double)(rc_now_ns() - t0) / 1e3;
        const uint32_t *ref = b->ref + (size_t)qi * K;
        for (uint32_t a = 0; a < n; a++)
            for (uint32_t c = 0; c < K; c++)
                hit += rows[a] == ref[c];
    }
    *p50 = pct(lat, b->nq, 0.5);
    *p99 = pct(lat, b->nq, 0.99);
    free(lat);
    return (double)hit / ((double)b->nq * K);
}

static void report(bench *b, const char *phase, uint32_t lists)
{
    static const char *names[2] = {"none", "city"};
    for (int kind = 0; kind < 2; kind++) {
        double p50, p99, rec = run(b, kind, &p50, &p99);
        printf("%-7s %-6s %6u %9.0f %9.0f %10.4f %12.0f %8.1fx\n", phase, names[kind], lists, p50,
               p99, rec, b->ref_us[kind], b->ref_us[kind] / p50);
    }
}

typedef struct writer {
    bench *b;
    volatile int stop;
    uint64_t touched, flushed;
    double secs;
} writer;

/* The index's writer: perturbs random rows (mostly below the drift threshold,
 * one in ten above), touches them, flushes and maintains, ~100k touches/s. */
static void *writer_main(void *arg)
{
    writer *w = arg;
    bench *b = w->b;
    rc_rng r;
    rc_rng_seed(&r, 99);
    char err[256];
    uint64_t t0 = rc_now_ns();
    while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
        for (int i = 0; i < 1000; i++) {
            uint32_t row = rc_rng_below(&r, b->n);
            float *v = rc_table_in(b->t, row), amp = rc_rng_below(&r, 10) ? 0.005f : 0.03f;
            for (int j = 0; j < DIM; j++)
                v[j] += amp * gauss(&r);
            rc_vec_normalize(v, DIM);
            rc_index_touch(b->ix, row);
        }
        w->touched += 1000;
        int rc = rc_index_flush(b->ix, 0, err, sizeof(err));
        if (rc < 0 || rc_index_maintain(b->ix, err, sizeof(err)) < 0) {
            fprintf(stderr, "writer: %s\n", err);
            exit(1);
        }
        w->flushed += (uint64_t)rc;
        usleep(10000);
    }
    w->secs = (double)(rc_now_ns() - t0) / 1e9;
    return NULL;
}

static void build(bench *b)
{
    char err[256];
    uint64_t t0 = rc_now_ns();
    for (uint32_t i = 0; i < b->n; i++)
        rc_index_touch(b->ix, i);
    if (rc_index_flush(b->ix, 0, err, sizeof(err)) < 0) {
        fprintf(stderr, "flush: %s\n", err);
        exit(1);
    }
    uint64_t t1 = rc_now_ns();
    do {
        if (rc_index_maintain(b->ix, err, sizeof(err)) < 0) {
            fprintf(stderr, "maintain: %s\n", err);
            exit(1);
        }
        usleep(2000);
    } while (rc_index_training(b->ix));
    uint64_t t2 = rc_now_ns();
    rc_index_stats st;
    rc_index_stats_get(b->ix, &st);
    printf("items %u  dim %d  partitions %" PRIu64 " (ivf %" PRIu64 ")  index MB %.0f\n", b->n, DIM,
           st.partitions, st.ivf_partitions, (double)st.bytes / 1e6);
    printf("build: flush %.2f s (%.0f rows/s), train %.2f s\n", (double)(t1 - t0) / 1e9,
           b->n / ((double)(t1 - t0) / 1e9), (double)(t2 - t1) / 1e9);
}

int main(int argc, char **argv)
{
    bench b = {.n = 1000000, .nq = 300};
    int sweep = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--items") && i + 1 < argc)
            b.n = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--queries") && i + 1 < argc)
            b.nq = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--lists") && i + 1 < argc)
            b.lists = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--sweep"))
            sweep = 1;
        else {
            fprintf(stderr, "usage: %s [--items N] [--queries Q] [--lists L] [--sweep]\n", argv[0]);
            return 2;
        }
    }
    if (b.n < NCITY * NCATE * 10 || b.nq == 0) {
        fprintf(stderr, "need --items >= %d and --queries > 0\n", NCITY * NCATE * 10);
        return 2;
    }
    char err[256];
    rc_table_opts to = {.dim = DIM, .max_items = b.n, .seed = 1};
    rc_index_opts io = {.search_lists = b.lists};
    b.x = malloc((size_t)b.n * DIM * sizeof(float));
    b.qs = malloc((size_t)2 * b.nq * DIM * sizeof(float));
    b.qcity = malloc((size_t)2 * b.nq * sizeof(uint32_t));
    b.ref = malloc((size_t)2 * b.nq * K * sizeof(uint32_t));
    if (!b.x || !b.qs || !b.qcity || !b.ref || rc_table_create(&to, &b.t, err, sizeof(err)) ||
        rc_index_create(&io, b.t, &b.ix, err, sizeof(err))) {
        fprintf(stderr, "setup: %s\n", err);
        return 1;
    }
    uint64_t t0 = rc_now_ns();
    gen_data(&b);
    printf("data: %.2f s (vec kernel %s)\n", (double)(rc_now_ns() - t0) / 1e9, rc_vec_impl());
    build(&b);
    gen_queries(&b);
    compute_refs(&b);
    printf("%-7s %-6s %6s %9s %9s %10s %12s %9s\n", "phase", "filter", "lists", "p50_us", "p99_us",
           "recall@50", "exact_p50_us", "speedup");
    uint32_t def = b.lists ? b.lists : 128; /* index default: 8 * nprobe */
    if (sweep) {
        static const uint32_t ls[] = {64, 128, 256, 512, 1024};
        for (size_t i = 0; i < sizeof(ls) / sizeof(ls[0]); i++) {
            rc_index_set_search_lists(b.ix, ls[i]);
            report(&b, "quiet", ls[i]);
        }
        rc_index_set_search_lists(b.ix, b.lists);
    } else {
        report(&b, "quiet", def);
    }
    writer w = {.b = &b};
    pthread_t th;
    pthread_create(&th, NULL, writer_main, &w);
    usleep(200000);
    report(&b, "writer", def);
    __atomic_store_n(&w.stop, 1, __ATOMIC_RELEASE);
    pthread_join(th, NULL);
    rc_index_stats st;
    rc_index_stats_get(b.ix, &st);
    printf("writer: touched %.0f rows/s, flushed (re-indexed) %.0f rows/s, "
           "skipped small drift "
           "%" PRIu64 ", retrains %" PRIu64 "\n",
           (double)w.touched / w.secs, (double)w.flushed / w.secs, st.skipped_small_drift,
           st.retrains);
    rc_index_destroy(b.ix);
    rc_table_destroy(b.t);
    free(b.x);
    free(b.qs);
    free(b.qcity);
    free(b.ref);
    return 0;
}
