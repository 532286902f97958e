/* bench_index — live index storage, search latency and recall@50 at scale.
 *
 * N items x d64 of clustered unit vectors over 20 cities x 10 categories
 * (200 partitions) in one table, indexed once per index.storage (flat, fp16,
 * sq8: the same nlist and nprobe) in the same process. For each: the bytes
 * of the index (FAISS list capacity included), build time, recall@50 against
 * exact search (cblas_sgemv over all rows + top-k, also timed as the
 * reference) of the index alone and of the daemon's path (overfetch x k
 * candidates re-scored with the table's vectors, rc_recall_search), single
 * query k=50 latency p50/p99 without a filter and with a city filter in
 * rounds that alternate the storages (ratios to flat), then update
 * throughput: rows moved past the drift threshold, touched and flushed in
 * batches, the same rows for every storage; last, latency while a writer
 * thread keeps moving rows in every index.
 *
 *   bench_index [--items N] [--queries Q] [--lists L] [--sweep] [--quiet-only] [--scan-ab]
 *               [--storage flat,fp16,sq8] [--rounds R] [--overfetch F] [--ivf-min N]
 * --ivf-min above N/200 keeps every partition flat (what a city's partitions
 * below index.ivf_min are in the daemon); with --scan-ab that compares their
 * int8 scan with the float sgemv. */
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
#include "recalld/recall.h"
#include "recalld/table.h"
#include "recalld/vec.h"

#define DIM    64
#define NCITY  20
#define NCATE  10
#define TOPICS 60 /* per category */
#define K      50
#define MAXV   12 /* storages, each twice with --scan-ab, each per --ivf-min value */

/* One index over the shared table, with its measurements. */
typedef struct variant {
    int storage;
    int ref;    /* 1: FAISS scans the lists (rc_index_set_faiss_scan), the path before the int8
                   scan; --scan-ab measures it beside the default on the same index */
    int shared; /* 1: the index is the previous variant's (the same storage, ref 1) */
    uint32_t ivf_min; /* rc_index_opts.ivf_min, 0 = the index's default */
    char name[24];    /* storage, "-ref" for the reference scan, "@N" for --ivf-min N */
    rc_index *ix;
    double flush_s, train_s;
    double rss_mb; /* growth of the process's VmRSS while this index was built */
    rc_index_stats st;
    double rec_raw[2], rec_rr[2]; /* per filter kind: none, city */
    double *lat[2][2];            /* [raw, re-ranked][kind]: rounds * nq latencies, us */
    uint32_t nlat[2][2];
    double upd_s, *flush_ms; /* update phase: total flush time, per-flush times */
    uint64_t upd_rows;
    uint32_t nflush;
    double wr_p50[2], wr_p99[2]; /* re-ranked, while the writer runs */
} variant;

typedef struct bench {
    uint32_t n, nq, lists, rounds;
    uint32_t ivf_min[2]; /* --ivf-min A[,B]: 0 = the index's default; above the partitions'
                            size (n / 200), they stay flat; two values: every variant twice */
    uint32_t nivf;
    float overfetch;
    rc_table *t;
    variant v[MAXV];
    uint32_t nv;
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

/* Recall@K of one variant, kind: rr = the daemon's path (re-ranked). */
static double recall(bench *b, variant *v, int kind, int rr)
{
    uint32_t rows[K], n;
    float sc[K];
    rc_hit hits[K];
    uint64_t hit = 0;
    for (uint32_t i = 0; i < b->nq; i++) {
        uint32_t qi = kind * b->nq + i;
        rc_index_filter f = {kind ? (int64_t)b->qcity[qi] : -1, NULL, 0};
        const float *q = b->qs + (size_t)qi * DIM;
        rc_index_set_faiss_scan(v->ix, v->ref);
        int rc = rr ? rc_recall_search(b->t, v->ix, q, K, b->overfetch, &f, NULL, 0, hits, &n)
                    : rc_index_search(v->ix, q, K, &f, rows, sc, &n);
        if (rc) {
            fprintf(stderr, "search failed\n");
            exit(1);
        }
        const uint32_t *ref = b->ref + (size_t)qi * K;
        for (uint32_t a = 0; a < n; a++)
            for (uint32_t c = 0; c < K; c++)
                hit += (rr ? hits[a].row : rows[a]) == ref[c];
    }
    return (double)hit / ((double)b->nq * K);
}

/* Times every query of one kind once on v, appending to v->lat[rr][kind]. */
static void timed_pass(bench *b, variant *v, int kind, int rr)
{
    uint32_t rows[K], n;
    float sc[K];
    rc_hit hits[K];
    double *lat = v->lat[rr][kind] + v->nlat[rr][kind];
    for (uint32_t i = 0; i < b->nq; i++) {
        uint32_t qi = kind * b->nq + i;
        rc_index_filter f = {kind ? (int64_t)b->qcity[qi] : -1, NULL, 0};
        const float *q = b->qs + (size_t)qi * DIM;
        rc_index_set_faiss_scan(v->ix, v->ref);
        uint64_t t0 = rc_now_ns();
        int rc = rr ? rc_recall_search(b->t, v->ix, q, K, b->overfetch, &f, NULL, 0, hits, &n)
                    : rc_index_search(v->ix, q, K, &f, rows, sc, &n);
        lat[i] = (double)(rc_now_ns() - t0) / 1e3;
        if (rc) {
            fprintf(stderr, "search failed\n");
            exit(1);
        }
    }
    v->nlat[rr][kind] += b->nq;
}

/* Quiet latency and recall at the current search_lists: b->rounds rounds,
 * each running every variant in turn (the order rotated per round), so load
 * changes on a shared machine spread over all of them. */
static void quiet(bench *b, uint32_t lists)
{
    static const char *kinds[2] = {"none", "city"};
    for (uint32_t i = 0; i < b->nv; i++) {
        variant *v = &b->v[i];
        rc_index_set_search_lists(v->ix, lists);
        memset(v->nlat, 0, sizeof(v->nlat));
        for (int kind = 0; kind < 2; kind++) {
            v->rec_raw[kind] = recall(b, v, kind, 0);
            v->rec_rr[kind] = recall(b, v, kind, 1);
        }
    }
    for (uint32_t r = 0; r < b->rounds; r++)
        for (uint32_t j = 0; j < b->nv; j++) {
            variant *v = &b->v[(j + r) % b->nv];
            for (int kind = 0; kind < 2; kind++)
                for (int rr = 0; rr < 2; rr++)
                    timed_pass(b, v, kind, rr);
        }
    for (int kind = 0; kind < 2; kind++) {
        double f50[2] = {0, 0}, f99[2] = {0, 0};
        for (uint32_t i = 0; i < b->nv; i++) {
            variant *v = &b->v[i];
            double p50[2], p99[2];
            for (int rr = 0; rr < 2; rr++) {
                p50[rr] = pct(v->lat[rr][kind], v->nlat[rr][kind], 0.5);
                p99[rr] = pct(v->lat[rr][kind], v->nlat[rr][kind], 0.99);
                if (i == 0) {
                    f50[rr] = p50[rr];
                    f99[rr] = p99[rr];
                }
            }
            printf("%-12s %-5s %5u  %8.0f %8.0f %5.2fx %5.2fx  %8.0f %8.0f %5.2fx %5.2fx  %7.4f "
                   "%7.4f %+8.4f  %9.0f\n",
                   v->name, kinds[kind], lists, p50[0], p99[0], p50[0] / f50[0], p99[0] / f99[0],
                   p50[1], p99[1], p50[1] / f50[1], p99[1] / f99[1], v->rec_raw[kind],
                   v->rec_rr[kind], v->rec_rr[kind] - b->v[0].rec_rr[kind], b->ref_us[kind]);
        }
    }
}

/* Where the index's own search spends its time (rc_index_search_timed), per
 * storage and filter kind: p50 of coarse and scan, mean lists and rows. */
static void breakdown(bench *b)
{
    static const char *kinds[2] = {"none", "city"};
    uint32_t want = (uint32_t)ceilf(K * b->overfetch), *rows = malloc(want * sizeof(uint32_t)), n;
    float *sc = malloc(want * sizeof(float));
    double *co = malloc(b->nq * sizeof(double)), *sn = malloc(b->nq * sizeof(double));
    printf("stages of the index alone (k = %u, the re-ranked path's candidates): p50 us of "
           "coarse and scan, mean lists and rows scored per search\n",
           want);
    printf("%-12s %-5s %9s %9s %9s %10s\n", "store", "filt", "coarse", "scan", "lists", "rows");
    for (uint32_t i = 0; i < b->nv; i++)
        for (int kind = 0; kind < 2; kind++) {
            variant *v = &b->v[i];
            double nl = 0, nr = 0;
            for (uint32_t j = 0; j < b->nq; j++) {
                uint32_t qi = kind * b->nq + j;
                rc_index_filter f = {kind ? (int64_t)b->qcity[qi] : -1, NULL, 0};
                rc_index_timing tm;
                rc_index_set_faiss_scan(v->ix, v->ref);
                if (rc_index_search_timed(v->ix, b->qs + (size_t)qi * DIM, want, &f, rows, sc, &n,
                                          &tm)) {
                    fprintf(stderr, "search failed\n");
                    exit(1);
                }
                co[j] = (double)tm.coarse_ns / 1e3;
                sn[j] = (double)tm.scan_ns / 1e3;
                nl += tm.lists;
                nr += (double)tm.rows;
            }
            printf("%-12s %-5s %9.0f %9.0f %9.1f %10.0f\n", v->name, kinds[kind],
                   pct(co, b->nq, 0.5), pct(sn, b->nq, 0.5), nl / b->nq, nr / b->nq);
        }
    free(rows);
    free(sc);
    free(co);
    free(sn);
}

static void quiet_header(void)
{
    printf("quiet: latency us (p50, p99 and their ratios to the first storage) of the index alone "
           "and of the daemon's path (re-ranked), recall@50 vs exact\n");
    printf("%-12s %-5s %5s  %8s %8s %6s %6s  %8s %8s %6s %6s  %7s %7s %8s  %9s\n", "store", "filt",
           "lists", "idx_p50", "idx_p99", "r50", "r99", "rr_p50", "rr_p99", "r50", "r99", "rec_idx",
           "rec_rr", "d_rec_rr", "exact_p50");
}

/* Update throughput: rounds of nrows random rows moved by a perturbation
 * past the drift threshold (written to the table once), then touched and
 * flushed in every index in turn (order rotated), in flushes of 1,000 rows:
 * the same rows and vectors for every storage. */
static void updates(bench *b, uint32_t rounds, uint32_t nrows)
{
    rc_rng r;
    rc_rng_seed(&r, 1234);
    uint32_t *rows = malloc(nrows * sizeof(uint32_t));
    char err[256];
    for (uint32_t i = 0; i < b->nv; i++) {
        b->v[i].flush_ms = malloc((size_t)rounds * (nrows / 1000 + 1) * sizeof(double));
        b->v[i].nflush = 0;
    }
    for (uint32_t rd = 0; rd < rounds; rd++) {
        for (uint32_t i = 0; i < nrows; i++) {
            rows[i] = rc_rng_below(&r, b->n);
            float *v = rc_table_in(b->t, rows[i]);
            for (int j = 0; j < DIM; j++)
                v[j] += 0.03f * gauss(&r);
            rc_vec_normalize(v, DIM);
        }
        for (uint32_t j = 0; j < b->nv; j++) {
            variant *v = &b->v[(j + rd) % b->nv];
            if (v->shared)
                continue;
            for (uint32_t i0 = 0; i0 < nrows; i0 += 1000) {
                uint32_t m = RC_MIN(1000, nrows - i0);
                for (uint32_t i = 0; i < m; i++)
                    rc_index_touch(v->ix, rows[i0 + i]);
                uint64_t t0 = rc_now_ns();
                int rc = rc_index_flush(v->ix, 0, err, sizeof(err));
                double ms = (double)(rc_now_ns() - t0) / 1e6;
                if (rc < 0) {
                    fprintf(stderr, "flush: %s\n", err);
                    exit(1);
                }
                v->upd_s += ms / 1e3;
                v->upd_rows += (uint64_t)rc;
                v->flush_ms[v->nflush++] = ms;
            }
        }
    }
    printf("updates: %u rounds of %u rows moved (0.03 x gaussian noise, renormalised), flushed per "
           "1,000 touched rows\n",
           rounds, nrows);
    printf("%-12s %12s %9s %12s %12s %9s\n", "store", "reindexed/s", "ratio", "flush_p50_ms",
           "flush_p99_ms", "p99_ratio");
    double f_rate = 0, f99 = 0;
    for (uint32_t i = 0; i < b->nv; i++) {
        variant *v = &b->v[i];
        if (v->shared)
            continue;
        double rate = (double)v->upd_rows / v->upd_s, p50 = pct(v->flush_ms, v->nflush, 0.5),
               p99 = pct(v->flush_ms, v->nflush, 0.99);
        if (i == 0) {
            f_rate = rate;
            f99 = p99;
        }
        printf("%-12s %12.0f %8.2fx %12.2f %12.2f %8.2fx\n", v->name, rate, rate / f_rate, p50, p99,
               p99 / f99);
    }
    free(rows);
}

/* Recall@50 once rows have moved and been re-indexed (update_vectors on the
 * lists' codes): the exact reference is recomputed from the table's current
 * vectors. */
static void after_updates(bench *b, uint32_t lists)
{
    static const char *kinds[2] = {"none", "city"};
    for (uint32_t i = 0; i < b->n; i++) /* row by row: the table is chunked */
        memcpy(b->x + (size_t)i * DIM, rc_table_in(b->t, i), DIM * sizeof(float));
    compute_refs(b);
    printf("after the updates: recall@50 vs exact over the current vectors, lists %u\n", lists);
    printf("%-12s %-5s %7s %7s %8s\n", "store", "filt", "rec_idx", "rec_rr", "d_rec_rr");
    for (int kind = 0; kind < 2; kind++)
        for (uint32_t i = 0; i < b->nv; i++) {
            variant *v = &b->v[i];
            rc_index_set_search_lists(v->ix, lists);
            double raw = recall(b, v, kind, 0), rr = recall(b, v, kind, 1);
            if (i == 0)
                b->v[0].rec_rr[kind] = rr;
            printf("%-12s %-5s %7.4f %7.4f %+8.4f\n", v->name, kinds[kind], raw, rr,
                   rr - b->v[0].rec_rr[kind]);
        }
}

typedef struct writer {
    bench *b;
    volatile int stop;
    uint64_t touched, flushed;
    double secs;
} writer;

/* The indexes' writer: perturbs random rows (mostly below the drift
 * threshold, one in ten above), touches them in every index, flushes and
 * maintains each, ~100k touches/s. */
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
            for (uint32_t k = 0; k < b->nv; k++)
                if (!b->v[k].shared)
                    rc_index_touch(b->v[k].ix, row);
        }
        w->touched += 1000;
        for (uint32_t k = 0; k < b->nv; k++) {
            if (b->v[k].shared)
                continue;
            int rc = rc_index_flush(b->v[k].ix, 0, err, sizeof(err));
            if (rc < 0 || rc_index_maintain(b->v[k].ix, err, sizeof(err)) < 0) {
                fprintf(stderr, "writer: %s\n", err);
                exit(1);
            }
            w->flushed += (uint64_t)rc;
        }
        usleep(10000);
    }
    w->secs = (double)(rc_now_ns() - t0) / 1e9;
    return NULL;
}

/* Re-ranked latency while the writer runs (the reference vectors are stale
 * by then: no recall here), storages alternating per round. */
static void with_writer(bench *b, uint32_t lists)
{
    static const char *kinds[2] = {"none", "city"};
    for (uint32_t i = 0; i < b->nv; i++) {
        rc_index_set_search_lists(b->v[i].ix, lists);
        memset(b->v[i].nlat, 0, sizeof(b->v[i].nlat));
    }
    writer w = {.b = b};
    pthread_t th;
    pthread_create(&th, NULL, writer_main, &w);
    usleep(200000);
    for (uint32_t r = 0; r < b->rounds; r++)
        for (uint32_t j = 0; j < b->nv; j++)
            for (int kind = 0; kind < 2; kind++)
                timed_pass(b, &b->v[(j + r) % b->nv], kind, 1);
    __atomic_store_n(&w.stop, 1, __ATOMIC_RELEASE);
    pthread_join(th, NULL);
    printf("writer: touched %.0f rows/s into each index, flushed (re-indexed) %.0f rows/s over "
           "all\n",
           (double)w.touched / w.secs, (double)w.flushed / w.secs);
    printf("%-12s %-5s %8s %8s %6s %6s\n", "store", "filt", "rr_p50", "rr_p99", "r50", "r99");
    for (int kind = 0; kind < 2; kind++) {
        double f50 = 0, f99 = 0;
        for (uint32_t i = 0; i < b->nv; i++) {
            variant *v = &b->v[i];
            double p50 = pct(v->lat[1][kind], v->nlat[1][kind], 0.5),
                   p99 = pct(v->lat[1][kind], v->nlat[1][kind], 0.99);
            if (i == 0) {
                f50 = p50;
                f99 = p99;
            }
            printf("%-12s %-5s %8.0f %8.0f %5.2fx %5.2fx\n", v->name, kinds[kind], p50, p99,
                   p50 / f50, p99 / f99);
        }
    }
}

/* VmRSS of this process, MB (0 when /proc is not there). */
static double rss_mb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = 0;
    while (f && fgets(line, sizeof(line), f))
        if (!strncmp(line, "VmRSS:", 6))
            kb = strtod(line + 6, NULL);
    if (f)
        fclose(f);
    return kb / 1024.0;
}

static void build(bench *b, variant *v)
{
    char err[256];
    double rss0 = rss_mb();
    uint64_t t0 = rc_now_ns();
    for (uint32_t i = 0; i < b->n; i++)
        rc_index_touch(v->ix, i);
    if (rc_index_flush(v->ix, 0, err, sizeof(err)) < 0) {
        fprintf(stderr, "flush: %s\n", err);
        exit(1);
    }
    uint64_t t1 = rc_now_ns();
    do {
        if (rc_index_maintain(v->ix, err, sizeof(err)) < 0) {
            fprintf(stderr, "maintain: %s\n", err);
            exit(1);
        }
        usleep(2000);
    } while (rc_index_training(v->ix));
    uint64_t t2 = rc_now_ns();
    v->flush_s = (double)(t1 - t0) / 1e9;
    v->train_s = (double)(t2 - t1) / 1e9;
    rc_index_stats_get(v->ix, &v->st);
    v->rss_mb = rss_mb() - rss0;
}

static void print_memory(const bench *b)
{
    printf("memory: index_bytes = the index's own counter (FAISS storage incl. the lists' reserved "
           "capacity, per-row state: int8 drift copy, location); vec = FAISS storage; lists = IVF "
           "codes + ids as stored\n");
    printf("rss_MB: growth of this process's VmRSS while the index was built (the indexes are "
           "built one after the other and all kept)\n");
    printf("%-12s %10s %7s %10s %7s %10s %7s %8s %8s %7s %10s %10s\n", "store", "index_MB", "ratio",
           "vec_MB", "ratio", "lists_MB", "ratio", "B/row", "rss_MB", "ratio", "flush_s",
           "train_s");
    const rc_index_stats *f = &b->v[0].st;
    for (uint32_t i = 0; i < b->nv; i++) {
        const variant *v = &b->v[i];
        const rc_index_stats *s = &v->st;
        printf("%-12s %10.1f %6.2fx %10.1f %6.2fx %10.1f %6.2fx %8.0f %8.1f %6.2fx %10.2f "
               "%10.2f\n",
               v->name, (double)s->bytes / 1e6, (double)s->bytes / (double)f->bytes,
               (double)s->vec_bytes / 1e6,
               (double)s->vec_bytes / (double)(f->vec_bytes ? f->vec_bytes : 1),
               (double)s->list_bytes / 1e6,
               (double)s->list_bytes / (double)(f->list_bytes ? f->list_bytes : 1),
               (double)s->bytes / b->n, v->rss_mb * 1.048576,
               v->rss_mb / (b->v[0].rss_mb > 0 ? b->v[0].rss_mb : 1), v->flush_s, v->train_s);
    }
}

static int parse_storages(bench *b, const char *arg)
{
    char buf[64];
    snprintf(buf, sizeof(buf), "%s", arg);
    b->nv = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        int s = rc_index_storage_parse(tok);
        if (s < 0 || b->nv == MAXV)
            return -1;
        b->v[b->nv++].storage = s;
    }
    return b->nv ? 0 : -1;
}

int main(int argc, char **argv)
{
    bench b = {.n = 1000000, .nq = 300, .rounds = 3, .overfetch = 3.0f};
    int sweep = 0, quiet_only = 0, scan_ab = 0;
    uint32_t upd_rounds = 3, upd_rows = 20000;
    parse_storages(&b, "flat,fp16,sq8");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--items") && i + 1 < argc)
            b.n = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--queries") && i + 1 < argc)
            b.nq = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--lists") && i + 1 < argc)
            b.lists = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--ivf-min") && i + 1 < argc) {
            char *end;
            b.nivf = 0;
            for (const char *p = argv[++i]; b.nivf < 2; p = end + 1) {
                b.ivf_min[b.nivf++] = (uint32_t)strtoul(p, &end, 10);
                if (*end != ',')
                    break;
            }
        } else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            b.rounds = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--overfetch") && i + 1 < argc)
            b.overfetch = strtof(argv[++i], NULL);
        else if (!strcmp(argv[i], "--updates") && i + 1 < argc)
            upd_rows = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--storage") && i + 1 < argc) {
            if (parse_storages(&b, argv[++i])) {
                fprintf(stderr, "--storage: a comma list of flat, fp16, sq8 (at most 3)\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "--sweep"))
            sweep = 1;
        else if (!strcmp(argv[i], "--quiet-only"))
            quiet_only = 1;
        else if (!strcmp(argv[i], "--scan-ab"))
            scan_ab = 1;
        else {
            fprintf(stderr,
                    "usage: %s [--items N] [--queries Q] [--lists L] [--sweep] [--quiet-only] "
                    "[--scan-ab]\n"
                    "       [--storage flat,fp16,sq8] [--rounds R] [--overfetch F] [--updates "
                    "ROWS] [--ivf-min N]\n"
                    "  one index per storage over the same rows, measured side by side; ratios "
                    "are to the first storage listed\n",
                    argv[0]);
            return 2;
        }
    }
    if (b.n < NCITY * NCATE * 10 || b.nq == 0 || b.rounds == 0 || b.overfetch < 1 ||
        upd_rows == 0) {
        fprintf(stderr,
                "need --items >= %d, --queries, --rounds, --updates > 0, --overfetch >= 1\n",
                NCITY * NCATE * 10);
        return 2;
    }
    if (scan_ab) { /* each storage twice: FAISS's list scan (the reference) first */
        for (uint32_t i = b.nv; i-- > 0;) {
            b.v[2 * i] = (variant){.storage = b.v[i].storage, .ref = 1};
            b.v[2 * i + 1] = (variant){.storage = b.v[i].storage, .shared = 1};
        }
        b.nv *= 2;
    }
    for (uint32_t i = 0; i < b.nv; i++) /* every variant once per --ivf-min value */
        for (uint32_t m = b.nivf; m-- > 0;) {
            b.v[m * b.nv + i] = b.v[i];
            b.v[m * b.nv + i].ivf_min = b.ivf_min[m];
        }
    b.nv *= b.nivf ? b.nivf : 1;
    for (uint32_t i = 0; i < b.nv; i++) {
        char at[16] = "";
        if (b.nivf > 1)
            snprintf(at, sizeof(at), "@%u", b.v[i].ivf_min);
        snprintf(b.v[i].name, sizeof(b.v[i].name), "%s%s%s", rc_index_storage_name(b.v[i].storage),
                 b.v[i].ref ? "-ref" : "", at);
    }
    char err[256];
    rc_table_opts to = {.dim = DIM, .max_items = b.n, .seed = 1};
    b.x = malloc((size_t)b.n * DIM * sizeof(float));
    b.qs = malloc((size_t)2 * b.nq * DIM * sizeof(float));
    b.qcity = malloc((size_t)2 * b.nq * sizeof(uint32_t));
    b.ref = malloc((size_t)2 * b.nq * K * sizeof(uint32_t));
    if (!b.x || !b.qs || !b.qcity || !b.ref || rc_table_create(&to, &b.t, err, sizeof(err))) {
        fprintf(stderr, "setup: %s\n", err);
        return 1;
    }
    uint64_t t0 = rc_now_ns();
    gen_data(&b);
    printf("data: %.2f s (vec kernel %s), items %u, dim %d, overfetch %.1f, drift 0.0005 (the "
           "daemon's default)\n",
           (double)(rc_now_ns() - t0) / 1e9, rc_vec_impl(), b.n, DIM, b.overfetch);
    for (uint32_t i = 0; i < b.nv; i++) {
        variant *v = &b.v[i];
        rc_index_opts io = {.search_lists = b.lists,
                            .drift = 0.0005f,
                            .storage = v->storage,
                            .ivf_min = v->ivf_min};
        for (int rr = 0; rr < 2; rr++)
            for (int kind = 0; kind < 2; kind++)
                v->lat[rr][kind] = malloc((size_t)b.rounds * b.nq * sizeof(double));
        if (v->shared) {
            v->ix = b.v[i - 1].ix;
            v->st = b.v[i - 1].st;
            continue;
        }
        if (rc_index_create(&io, b.t, &v->ix, err, sizeof(err))) {
            fprintf(stderr, "setup: %s\n", err);
            return 1;
        }
        build(&b, v);
        printf("built %s: partitions %" PRIu64 " (ivf %" PRIu64 "), flush %.2f s, train %.2f s\n",
               v->name, v->st.partitions, v->st.ivf_partitions, v->flush_s, v->train_s);
        fflush(stdout);
    }
    print_memory(&b);
    gen_queries(&b);
    compute_refs(&b);
    uint32_t def = b.lists ? b.lists : 128; /* index default: 8 * nprobe */
    quiet_header();
    if (sweep) {
        static const uint32_t ls[] = {64, 128, 256, 512, 1024};
        for (size_t i = 0; i < sizeof(ls) / sizeof(ls[0]); i++)
            quiet(&b, ls[i]);
    } else {
        quiet(&b, def);
    }
    breakdown(&b);
    fflush(stdout);
    if (!quiet_only) {
        updates(&b, upd_rounds, upd_rows);
        after_updates(&b, def);
        fflush(stdout);
        with_writer(&b, def);
    }
    for (uint32_t i = b.nv; i-- > 0;) { /* a shared index goes with its owner, before it */
        variant *v = &b.v[i];
        rc_index_stats st;
        rc_index_stats_get(v->ix, &st);
        printf("%s at the end: index MB %.1f, retrains %" PRIu64 ", skipped small drift %" PRIu64
               "\n",
               v->name, (double)st.bytes / 1e6, st.retrains, st.skipped_small_drift);
        if (!v->shared)
            rc_index_destroy(v->ix);
        for (int rr = 0; rr < 2; rr++)
            for (int kind = 0; kind < 2; kind++)
                free(v->lat[rr][kind]);
        free(v->flush_ms);
    }
    rc_table_destroy(b.t);
    free(b.x);
    free(b.qs);
    free(b.qcity);
    free(b.ref);
    return 0;
}
