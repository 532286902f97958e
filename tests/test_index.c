#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "recalld/common.h"
#include "recalld/index.h"
#include "index_int.h"
#include "recalld/recall.h"
#include "recalld/table.h"
#include "recalld/vec.h"
#include "test.h"

#define DIM 64

/* Clustered unit vectors: ncl random centres, each row a centre plus noise. */
typedef struct gen {
    rc_rng rng;
    uint32_t ncl;
    float *cent;
} gen;

static float gauss(rc_rng *r)
{
    float u = rc_rng_float(r) + 1e-7f, v = rc_rng_float(r);
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

static void gen_init(gen *g, uint32_t ncl, uint64_t seed)
{
    rc_rng_seed(&g->rng, seed);
    g->ncl = ncl;
    g->cent = malloc((size_t)ncl * DIM * sizeof(float));
    for (uint32_t c = 0; c < ncl; c++) {
        for (int i = 0; i < DIM; i++)
            g->cent[c * DIM + i] = gauss(&g->rng);
        rc_vec_normalize(g->cent + c * DIM, DIM);
    }
}

static void gen_vec(gen *g, uint32_t cl, float noise, float *v)
{
    for (int i = 0; i < DIM; i++)
        v[i] = g->cent[cl * DIM + i] + noise * gauss(&g->rng);
    rc_vec_normalize(v, DIM);
}

static rc_table *mk_table(uint32_t ncities, uint32_t ncates)
{
    rc_table_opts o = {0};
    o.seed = 7;
    rc_table *t = NULL;
    ASSERT_EQ(rc_table_create(&o, &t, NULL, 0), 0);
    char s[32];
    uint32_t id;
    for (uint32_t i = 0; i < ncities; i++) {
        int n = snprintf(s, sizeof(s), "city%u", i);
        ASSERT_EQ(rc_table_city_id(t, s, (size_t)n, &id), 0);
        ASSERT_EQ(id, i);
    }
    for (uint32_t i = 0; i < ncates; i++) {
        int n = snprintf(s, sizeof(s), "cate%u", i);
        ASSERT_EQ(rc_table_cate_id(t, s, (size_t)n, &id), 0);
        ASSERT_EQ(id, i);
    }
    return t;
}

static uint32_t add_row(rc_table *t, uint32_t city, uint32_t cate, const float *v)
{
    char s[32];
    int n = snprintf(s, sizeof(s), "item%u", rc_table_size(t));
    uint32_t row;
    int created = 0;
    ASSERT_EQ(rc_table_upsert(t, s, (size_t)n, city, cate, NULL, 0, &row, &created), 0);
    ASSERT_EQ(created, 1);
    memcpy(rc_table_in(t, row), v, DIM * sizeof(float));
    return row;
}

/* n rows over ncities x ncates; cluster depends on (row % ncl). */
static void fill(rc_table *t, gen *g, uint32_t n, uint32_t ncities, uint32_t ncates, float noise)
{
    float v[DIM];
    for (uint32_t i = 0; i < n; i++) {
        uint32_t city = rc_rng_below(&g->rng, ncities), cate = rc_rng_below(&g->rng, ncates);
        gen_vec(g, rc_rng_below(&g->rng, g->ncl), noise, v);
        add_row(t, city, cate, v);
    }
}

static rc_index *mk_index(rc_table *t, uint32_t ivf_min)
{
    rc_index_opts o = {0};
    o.ivf_min = ivf_min;
    o.no_background = 1;
    rc_index *ix = NULL;
    char err[256] = "";
    ASSERT_EQ(rc_index_create(&o, t, &ix, err, sizeof(err)), 0);
    return ix;
}

static void touch_all(rc_index *ix, rc_table *t, uint32_t from)
{
    for (uint32_t r = from; r < rc_table_size(t); r++)
        rc_index_touch(ix, r);
}

/* An index over t with options o, every row of t touched (not yet flushed). */
static rc_index *index_filled(const rc_index_opts *o, rc_table *t)
{
    rc_index *ix = NULL;
    char err[256] = "";
    if (rc_index_create(o, t, &ix, err, sizeof(err)) != 0)
        RC__FAIL("rc_index_create: %s", err);
    touch_all(ix, t, 0);
    return ix;
}

static void flush_all(rc_index *ix)
{
    char err[256] = "";
    int rc = rc_index_flush(ix, 0, err, sizeof(err));
    if (rc < 0)
        RC__FAIL("flush: %d %s", rc, err);
    rc = rc_index_maintain(ix, err, sizeof(err));
    if (rc < 0)
        RC__FAIL("maintain: %d %s", rc, err);
}

/* One city, ncates categories, rows planted rows in 200 clusters (seed),
 * indexed with storage and flushed in the foreground: every partition of
 * 4,096 rows or more is IVF. */
static rc_index *ivf_built(gen *g, uint64_t seed, uint32_t rows, uint32_t ncates, int storage,
                           rc_table **t)
{
    gen_init(g, 200, seed);
    *t = mk_table(1, ncates);
    fill(*t, g, rows, 1, ncates, 0.12f);
    rc_index_opts o = {0};
    o.ivf_min = 4096;
    o.no_background = 1;
    o.storage = storage;
    rc_index *ix = index_filled(&o, *t);
    flush_all(ix);
    return ix;
}

static int matches(const rc_table *t, uint32_t row, const rc_index_filter *f)
{
    if (!f)
        return 1;
    if (f->city >= 0 && rc_table_city(t, row) != (uint32_t)f->city)
        return 0;
    if (!f->ncates)
        return 1;
    for (uint32_t i = 0; i < f->ncates; i++)
        if (f->cates[i] == rc_table_cate(t, row))
            return 1;
    return 0;
}

/* Exact top-k by inner product with normalised table vectors; returns count. */
static uint32_t brute(const rc_table *t, const float *q, uint32_t k, const rc_index_filter *f,
                      uint32_t *rows, float *scores)
{
    uint32_t n = 0;
    float v[DIM];
    for (uint32_t r = 0; r < rc_table_size(t); r++) {
        if (!matches(t, r, f))
            continue;
        memcpy(v, rc_table_in(t, r), sizeof(v));
        rc_vec_normalize(v, DIM);
        float s = rc_vec_dot(q, v, DIM);
        if (n == k && s <= scores[n - 1])
            continue;
        uint32_t i = n < k ? n++ : n - 1;
        while (i > 0 && scores[i - 1] < s) {
            scores[i] = scores[i - 1];
            rows[i] = rows[i - 1];
            i--;
        }
        scores[i] = s;
        rows[i] = r;
    }
    return n;
}

static void mk_query(const rc_table *t, rc_rng *r, float *q)
{
    memset(q, 0, DIM * sizeof(float));
    for (int i = 0; i < 3; i++)
        rc_vec_axpy(1.0f, rc_table_in(t, rc_rng_below(r, rc_table_size(t))), q, DIM);
}

/* For each of nf filters, nq random queries: the index's top-50 equals brute
 * force (same count, rows passing the filter, same scores). Flat only. */
static void check_filters_exact(rc_index *ix, const rc_table *t, const rc_index_filter *fs, int nf,
                                int nq, uint64_t seed)
{
    rc_rng r;
    rc_rng_seed(&r, seed);
    uint32_t got[50], want[50], n;
    float gs[50], ws[50], q[DIM];
    for (int fi = 0; fi < nf; fi++) {
        for (int i = 0; i < nq; i++) {
            mk_query(t, &r, q);
            uint32_t m = brute(t, q, 50, &fs[fi], want, ws);
            ASSERT_EQ(rc_index_search(ix, q, 50, &fs[fi], got, gs, &n), 0);
            ASSERT_EQ(n, m);
            for (uint32_t j = 0; j < n; j++) {
                ASSERT(matches(t, got[j], &fs[fi]));
                ASSERT_NEAR(gs[j], ws[j], 1e-4);
            }
        }
    }
}

static double recall_at(rc_index *ix, const rc_table *t, uint32_t nq, uint32_t k,
                        const rc_index_filter *f, uint64_t seed)
{
    rc_rng r;
    rc_rng_seed(&r, seed);
    uint32_t *got = malloc(k * sizeof(uint32_t)), *want = malloc(k * sizeof(uint32_t));
    float *gs = malloc(k * sizeof(float)), *ws = malloc(k * sizeof(float)), q[DIM];
    uint64_t hit = 0, tot = 0;
    for (uint32_t i = 0; i < nq; i++) {
        mk_query(t, &r, q);
        uint32_t n = 0, m = brute(t, q, k, f, want, ws);
        ASSERT_EQ(rc_index_search(ix, q, k, f, got, gs, &n), 0);
        ASSERT_EQ(n, m);
        for (uint32_t a = 0; a < m; a++)
            for (uint32_t b = 0; b < n; b++)
                hit += want[a] == got[b];
        tot += m;
    }
    free(got);
    free(want);
    free(gs);
    free(ws);
    return tot ? (double)hit / (double)tot : 1.0;
}

TEST(index_flat_equals_brute_force)
{
    gen g;
    gen_init(&g, 20, 1);
    rc_table *t = mk_table(3, 2);
    fill(t, &g, 2000, 3, 2, 0.3f);
    rc_index *ix = mk_index(t, 0);
    touch_all(ix, t, 0);
    flush_all(ix);
    rc_index_stats st;
    rc_index_stats_get(ix, &st);
    ASSERT_EQ(st.size, 2000);
    ASSERT_EQ(st.partitions, 6);
    ASSERT_EQ(st.ivf_partitions, 0);
    rc_rng r;
    rc_rng_seed(&r, 3);
    uint32_t got[50], want[50], n;
    float gs[50], ws[50], q[DIM];
    for (int i = 0; i < 30; i++) {
        mk_query(t, &r, q);
        ASSERT_EQ(brute(t, q, 50, NULL, want, ws), 50);
        ASSERT_EQ(rc_index_search(ix, q, 50, NULL, got, gs, &n), 0);
        ASSERT_EQ(n, 50);
        for (int j = 0; j < 50; j++) {
            ASSERT_NEAR(gs[j], ws[j], 1e-4);
            if (j > 0)
                ASSERT_DBL_OP(gs[j - 1], >=, gs[j]);
        }
        ASSERT_EQ(got[0], want[0]);
    }
    rc_index_destroy(ix);
    rc_table_destroy(t);
    free(g.cent);
}

TEST(index_filter_city_cate)
{
    gen g;
    gen_init(&g, 20, 2);
    rc_table *t = mk_table(4, 5);
    fill(t, &g, 3000, 4, 5, 0.3f);
    rc_index *ix = mk_index(t, 0);
    touch_all(ix, t, 0);
    flush_all(ix);
    uint32_t cates[2] = {1, 3};
    rc_index_filter fs[3] = {{2, NULL, 0}, {-1, cates, 2}, {0, cates, 1}};
    check_filters_exact(ix, t, fs, 3, 10, 4);
    uint32_t got[50], n;
    float gs[50], q[DIM];
    memcpy(q, rc_table_in(t, 0), sizeof(q));
    rc_index_filter none = {99, NULL, 0};
    ASSERT_EQ(rc_index_search(ix, q, 50, &none, got, gs, &n), 0);
    ASSERT_EQ(n, 0);
    rc_index_destroy(ix);
    rc_table_destroy(t);
    free(g.cent);
}

TEST(index_ivf_recall_after_ivf_min)
{
    gen g;
    gen_init(&g, 200, 5);
    rc_table *t = mk_table(3, 1);
    fill(t, &g, 30000, 3, 1, 0.12f);
    rc_index *ix = mk_index(t, 4096);
    touch_all(ix, t, 0);
    char err[256] = "";
    ASSERT_EQ(rc_index_flush(ix, 0, err, sizeof(err)), 30000);
    rc_index_stats st;
    rc_index_stats_get(ix, &st);
    ASSERT_EQ(st.ivf_partitions, 0);
    ASSERT_EQ(rc_index_maintain(ix, err, sizeof(err)), 0);
    rc_index_stats_get(ix, &st);
    ASSERT_EQ(st.ivf_partitions, 3);
    ASSERT_EQ(st.retrains, 3);
    double rec = recall_at(ix, t, 100, 50, NULL, 9);
    fprintf(stderr, "recall@50 all: %.4f\n", rec);
    ASSERT_DBL_OP(rec, >=, 0.95);
    rc_index_filter f = {1, NULL, 0};
    rec = recall_at(ix, t, 100, 50, &f, 10);
    fprintf(stderr, "recall@50 city 1: %.4f\n", rec);
    ASSERT_DBL_OP(rec, >=, 0.95);
    rc_index_destroy(ix);
    rc_table_destroy(t);
    free(g.cent);
}

/* A small change is absorbed; a large one is re-indexed and searchable. Run
 * on a flat and on an IVF partition. */
static void drift_case(uint32_t nrows, uint32_t ivf_min, int want_ivf)
{
    gen g;
    gen_init(&g, 50, 11);
    rc_table *t = mk_table(1, 1);
    fill(t, &g, nrows, 1, 1, 0.3f);
    rc_index *ix = mk_index(t, ivf_min);
    touch_all(ix, t, 0);
    flush_all(ix);
    rc_index_stats st0, st;
    rc_index_stats_get(ix, &st0);
    ASSERT_EQ(st0.ivf_partitions, want_ivf);
    uint32_t row = 17, got[5], n;
    float *v = rc_table_in(t, row), gs[5];
    v[0] += 0.01f;
    rc_index_touch(ix, row);
    rc_index_touch(ix, row); /* deduplicated */
    rc_index_stats_get(ix, &st);
    ASSERT_EQ(st.pending, 1);
    flush_all(ix);
    rc_index_stats_get(ix, &st);
    ASSERT_EQ(st.pending, 0);
    ASSERT_EQ(st.skipped_small_drift, st0.skipped_small_drift + 1);
    ASSERT_EQ(st.reindexed, st0.reindexed);
    /* Far from everything: a fresh direction. */
    float w[DIM];
    for (int i = 0; i < DIM; i++)
        w[i] = (i % 2 ? 1.0f : -1.0f) * (float)(i % 7);
    rc_vec_normalize(w, DIM);
    memcpy(v, w, sizeof(w));
    ASSERT_EQ(rc_index_search(ix, w, 1, NULL, got, gs, &n), 0);
    ASSERT_EQ(n, 1);
    ASSERT_NE(got[0], row);
    rc_index_touch(ix, row);
    flush_all(ix);
    rc_index_stats_get(ix, &st);
    ASSERT_EQ(st.reindexed, st0.reindexed + 1);
    ASSERT_EQ(rc_index_search(ix, w, 1, NULL, got, gs, &n), 0);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(got[0], row);
    ASSERT_NEAR(gs[0], 1.0, 1e-4);
    ASSERT_EQ(st.size, nrows);
    rc_index_destroy(ix);
    rc_table_destroy(t);
    free(g.cent);
}

TEST(index_drift_rule_flat) { drift_case(1000, 0, 0); }

TEST(index_drift_rule_ivf) { drift_case(6000, 4096, 1); }

TEST(index_new_rows_searchable_after_flush)
{
    gen g;
    gen_init(&g, 10, 12);
    rc_table *t = mk_table(2, 2);
    fill(t, &g, 500, 2, 2, 0.3f);
    rc_index *ix = mk_index(t, 0);
    touch_all(ix, t, 0);
    flush_all(ix);
    float v[DIM];
    for (int i = 0; i < DIM; i++)
        v[i] = (float)((i * 37) % 11) - 5.0f;
    rc_vec_normalize(v, DIM);
    uint32_t row = add_row(t, 1, 0, v);
    ASSERT(!rc_index_contains(ix, row));
    rc_index_touch(ix, row);
    usleep(2000);
    rc_index_stats st;
    rc_index_stats_get(ix, &st);
    ASSERT_EQ(st.pending, 1);
    ASSERT_DBL_OP(st.staleness_ms, >=, 1.0);
    uint32_t got[3], n;
    float gs[3];
    ASSERT_EQ(rc_index_search(ix, v, 3, NULL, got, gs, &n), 0);
    for (uint32_t i = 0; i < n; i++)
        ASSERT_NE(got[i], row);
    char err[256];
    ASSERT_EQ(rc_index_flush(ix, 0, err, sizeof(err)), 1);
    ASSERT(rc_index_contains(ix, row));
    ASSERT_EQ(rc_index_search(ix, v, 3, NULL, got, gs, &n), 0);
    ASSERT_EQ(got[0], row);
    rc_index_filter f = {1, NULL, 0};
    ASSERT_EQ(rc_index_search(ix, v, 3, &f, got, gs, &n), 0);
    ASSERT_EQ(got[0], row);
    rc_index_stats_get(ix, &st);
    ASSERT_EQ(st.pending, 0);
    ASSERT_DBL_OP(st.staleness_ms, ==, 0);
    ASSERT_EQ(st.added, 501);
    ASSERT_GE(st.fresh_p99_us, st.fresh_p50_us);
    rc_index_destroy(ix);
    rc_table_destroy(t);
    free(g.cent);
}

/* flush(max_rows) applies part of the queue, oldest first. */
static uint64_t hist_total(const rc_hist_snap *h)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i <= h->nb; i++)
        n += h->n[i];
    return n;
}

TEST(index_flush_max_rows_and_stats)
{
    gen g;
    gen_init(&g, 10, 13);
    rc_table *t = mk_table(1, 3);
    fill(t, &g, 1000, 1, 3, 0.3f);
    rc_index *ix = mk_index(t, 0);
    touch_all(ix, t, 0);
    char err[256];
    rc_index_stats st;
    rc_index_stats_get(ix, &st);
    ASSERT_EQ(hist_total(&st.write_hold_hist), 0); /* nothing written yet */
    ASSERT_EQ(st.write_hold_max_us, 0);
    ASSERT_EQ(rc_index_flush(ix, 300, err, sizeof(err)), 300);
    rc_index_stats_get(ix, &st);
    /* 300 rows over 3 partitions: at least one write-lock hold each, and
     * the recent quantiles ordered */
    ASSERT_GE(hist_total(&st.write_hold_hist), 3);
    ASSERT(st.write_hold_p50_us <= st.write_hold_p99_us);
    ASSERT(st.write_hold_p99_us <= st.write_hold_max_us);
    ASSERT_EQ(st.size, 300);
    ASSERT_EQ(st.pending, 700);
    ASSERT(rc_index_contains(ix, 299));
    ASSERT(!rc_index_contains(ix, 300));
    ASSERT_EQ(rc_index_flush(ix, 0, err, sizeof(err)), 700);
    rc_index_stats_get(ix, &st);
    ASSERT_EQ(st.size, 1000);
    ASSERT_EQ(st.partitions, 3);
    ASSERT_EQ(st.added, 1000);
    ASSERT_GT(st.bytes, 1000 * DIM * 4);
    ASSERT_EQ(rc_index_flush(ix, 0, err, sizeof(err)), 0);
    rc_index_destroy(ix);
    rc_table_destroy(t);
    free(g.cent);
}

/* 5000 rows of 60 clusters in one city x category, touched (not flushed) in
 * an index with background training, ivf_min 2048 and retrain_growth 0.5: the
 * first flush and maintain start its IVF training. */
static rc_index *retrain_case(gen *g, uint64_t seed, rc_table **t)
{
    gen_init(g, 60, seed);
    *t = mk_table(1, 1);
    fill(*t, g, 5000, 1, 1, 0.12f);
    rc_index_opts o = {0};
    o.ivf_min = 2048;
    o.retrain_growth = 0.5f;
    return index_filled(&o, *t);
}

/* Waits (maintaining) until no training is in flight. */
static void until_trained(rc_index *ix)
{
    char err[256] = "";
    while (rc_index_training(ix)) {
        ASSERT_EQ(rc_index_maintain(ix, err, sizeof(err)), 0);
        usleep(1000);
    }
}

/* Growth past retrain_growth retrains; rows added and changed while a
 * background training runs are all present after the swap. */
TEST(index_background_retrain_catches_up)
{
    gen g;
    rc_table *t;
    rc_index *ix = retrain_case(&g, 14, &t);
    char err[256] = "";
    ASSERT_EQ(rc_index_flush(ix, 0, err, sizeof(err)), 5000);
    ASSERT_EQ(rc_index_maintain(ix, err, sizeof(err)), 0);
    ASSERT(rc_index_training(ix));
    /* While it trains: new rows and big changes to old ones. */
    fill(t, &g, 4000, 1, 1, 0.12f);
    touch_all(ix, t, 5000);
    rc_rng r;
    rc_rng_seed(&r, 15);
    float v[DIM];
    for (uint32_t i = 0; i < 200; i++) {
        uint32_t row = rc_rng_below(&r, 5000);
        gen_vec(&g, rc_rng_below(&g.rng, g.ncl), 0.12f, v);
        memcpy(rc_table_in(t, row), v, sizeof(v));
        rc_index_touch(ix, row);
    }
    ASSERT_GT(rc_index_flush(ix, 0, err, sizeof(err)), 4000);
    until_trained(ix);
    rc_index_stats st;
    rc_index_stats_get(ix, &st);
    ASSERT_EQ(st.ivf_partitions, 1);
    ASSERT_GE(st.retrains, 1);
    ASSERT_EQ(st.size, 9000);
    /* 9000 > 1.5 * 5000: a second training is due (or already started). */
    for (uint64_t t0 = rc_now_ns(); st.retrains < 2 && rc_now_ns() - t0 < 120000000000ull;) {
        ASSERT_EQ(rc_index_maintain(ix, err, sizeof(err)), 0);
        usleep(1000);
        rc_index_stats_get(ix, &st);
    }
    ASSERT_EQ(st.retrains, 2);
    /* Every row finds itself first with its current vector. */
    uint32_t got[1], n;
    float gs[1];
    for (uint32_t row = 0; row < 9000; row += 7) {
        memcpy(v, rc_table_in(t, row), sizeof(v));
        ASSERT_EQ(rc_index_search(ix, v, 1, NULL, got, gs, &n), 0);
        ASSERT_EQ(n, 1);
        ASSERT_NEAR(gs[0], 1.0, 1e-3);
    }
    ASSERT_DBL_OP(recall_at(ix, t, 50, 50, NULL, 16), >=, 0.95);
    rc_index_destroy(ix);
    rc_table_destroy(t);
    free(g.cent);
}

/* rc_index_set_background(ix, 0) on an index made with background training
 * (the evaluator's engine): the partition that passes ivf_min is IVF when the
 * rc_index_maintain that started its training returns, and nothing is left
 * in flight; on again, the next training goes to a thread as before. */
TEST(index_set_background_off_trains_inside_maintain)
{
    gen g;
    rc_table *t;
    rc_index *ix = retrain_case(&g, 16, &t);
    char err[256] = "";
    rc_index_set_background(ix, 0);
    ASSERT_EQ(rc_index_flush(ix, 0, err, sizeof(err)), 5000);
    ASSERT_EQ(rc_index_maintain(ix, err, sizeof(err)), 0);
    ASSERT(!rc_index_training(ix));
    rc_index_stats st;
    rc_index_stats_get(ix, &st);
    ASSERT_EQ(st.ivf_partitions, 1);
    ASSERT_EQ(st.retrains, 1);
    /* Background again: 9000 > 1.5 * 5000 rows starts a training that the
     * maintain call leaves running (or finished, but not yet taken in). */
    rc_index_set_background(ix, 1);
    fill(t, &g, 4000, 1, 1, 0.12f);
    touch_all(ix, t, 5000);
    ASSERT_EQ(rc_index_flush(ix, 0, err, sizeof(err)), 4000);
    ASSERT_EQ(rc_index_maintain(ix, err, sizeof(err)), 0);
    ASSERT(rc_index_training(ix));
    rc_index_stats_get(ix, &st);
    ASSERT_EQ(st.retrains, 1);
    until_trained(ix);
    rc_index_stats_get(ix, &st);
    ASSERT_EQ(st.retrains, 2);
    rc_index_destroy(ix);
    rc_table_destroy(t);
    free(g.cent);
}

/* index.retrain_fit: one IVF partition of 6000 rows in 60 clusters, trained;
 * then every row moves (an install_model of a model trained elsewhere: the
 * same items, another geometry) to 60 new clusters. Neither growth nor
 * imbalance changes (both triggers set out of reach), so only the fit can
 * tell that the centroids no longer fit: with it, the partition is retrained
 * and the fit is back at ~1; without it (retrain_fit < 0) nothing retrains
 * and the fit ratio stays high. Rows that move within their clusters (what
 * training does) leave the fit alone: no retrain. */
static rc_index *fit_index(rc_table *t, float retrain_fit)
{
    rc_index_opts o = {0};
    o.ivf_min = 2048;
    o.retrain_growth = 100.0f;
    o.max_imbalance = 1000.0f;
    o.retrain_fit = retrain_fit;
    o.no_background = 1;
    rc_index *ix = index_filled(&o, t);
    flush_all(ix);
    return ix;
}

static void fit_move(rc_index *ix, rc_table *t, gen *g)
{
    float v[DIM];
    for (uint32_t r = 0; r < rc_table_size(t); r++) {
        gen_vec(g, r % g->ncl, 0.12f, v);
        memcpy(rc_table_in(t, r), v, sizeof(v));
        rc_index_touch(ix, r);
    }
    flush_all(ix);
}

TEST(index_retrain_when_centroids_no_longer_fit)
{
    gen g1, g2;
    gen_init(&g1, 60, 21);
    gen_init(&g2, 60, 22);
    rc_table *ta = mk_table(1, 1), *tb = mk_table(1, 1);
    float v[DIM];
    for (uint32_t i = 0; i < 6000; i++) {
        gen_vec(&g1, i % 60, 0.12f, v);
        add_row(ta, 0, 0, v);
        add_row(tb, 0, 0, v);
    }
    rc_index *on = fit_index(ta, 0.0f), *off = fit_index(tb, -1.0f);
    rc_index_stats st, so;
    rc_index_stats_get(on, &st);
    ASSERT_EQ(st.retrains, 1);
    ASSERT_DBL_OP(st.fit_worst, ==, 0.0); /* nothing measured since training */
    /* moves within the clusters: measured, fits as at training */
    fit_move(on, ta, &g1);
    rc_index_stats_get(on, &st);
    ASSERT_EQ(st.retrains, 1);
    ASSERT_EQ(st.retrains_fit, 0);
    ASSERT_DBL_OP(st.fit_worst, >, 0.8);
    ASSERT_DBL_OP(st.fit_worst, <, 1.2);
    /* every row to new clusters */
    fit_move(on, ta, &g2);
    fit_move(off, tb, &g2);
    rc_index_stats_get(off, &so);
    ASSERT_EQ(so.retrains, 1);
    ASSERT_DBL_OP(so.fit_worst, >, 1.5);
    char err[256] = "";
    ASSERT_EQ(rc_index_maintain(on, err, sizeof err), 0);
    rc_index_stats_get(on, &st);
    ASSERT_EQ(st.retrains, 2);
    ASSERT_EQ(st.retrains_fit, 1);
    double r_on = recall_at(on, ta, 200, 50, NULL, 23),
           r_off = recall_at(off, tb, 200, 50, NULL, 23);
    fprintf(stderr, "    fit %.3f without the fit retrain, recall@50 %.4f with it, %.4f without\n",
            so.fit_worst, r_on, r_off);
    ASSERT_DBL_OP(r_on, >=, 0.95);
    ASSERT_DBL_OP(r_on, >=, r_off);
    /* measured again against the new centroids: fits */
    fit_move(on, ta, &g2);
    ASSERT_EQ(rc_index_maintain(on, err, sizeof err), 0);
    rc_index_stats_get(on, &st);
    ASSERT_EQ(st.retrains, 2);
    ASSERT_DBL_OP(st.fit_worst, <, 1.2);
    rc_index_destroy(on);
    rc_index_destroy(off);
    rc_table_destroy(ta);
    rc_table_destroy(tb);
    free(g1.cent);
    free(g2.cent);
}

/* A search holds one partition's read lock at a time: the lists it chose
 * under the first may belong to centroids a retrain replaced before it locks
 * the partition again to scan them. Here the retrain happens between the two
 * passes (the hook runs the writer there, no lock held): every row moves to
 * new clusters and the partition is retrained for the fit. The search must
 * choose its lists again from the new centroids and find the row; with the
 * stale choice (list numbers of the old centroids) it scans lists that no
 * longer hold it. */
typedef struct repass {
    rc_index *ix;
    rc_table *t;
    gen *g;
    int fired;
} repass;

static void retrain_between_passes(void *arg)
{
    repass *rp = arg;
    if (rp->fired++)
        return;
    char err[256] = "";
    fit_move(rp->ix, rp->t, rp->g);
    if (rc_index_maintain(rp->ix, err, sizeof err))
        fprintf(stderr, "maintain: %s\n", err);
}

TEST(index_search_retrained_between_passes_chooses_lists_again)
{
    gen g1, g2;
    gen_init(&g1, 60, 31);
    gen_init(&g2, 60, 32);
    rc_table *t = mk_table(1, 1);
    float v[DIM];
    for (uint32_t i = 0; i < 6000; i++) {
        gen_vec(&g1, i % 60, 0.12f, v);
        add_row(t, 0, 0, v);
    }
    rc_index *ix = fit_index(t, 0.0f);
    rc_index_set_search_lists(ix, 4);
    rc_index_stats st;
    rc_index_stats_get(ix, &st);
    ASSERT_EQ(st.retrains, 1);
    /* fit_move draws row r's new vector from cluster r % 60 of g2: row 7's is
     * known only after the move, so the query is a fresh draw of its cluster,
     * which finds a row of that cluster among its best */
    repass rp = {ix, t, &g2, 0};
    rc__index_between_passes_arg = &rp;
    rc__index_between_passes = retrain_between_passes;
    float q[DIM];
    gen_vec(&g2, 7, 0.0f, q);
    uint32_t got[10], n = 0;
    float gs[10];
    int rc = rc_index_search(ix, q, 10, NULL, got, gs, &n);
    rc__index_between_passes = NULL;
    ASSERT_EQ(rc, 0);
    ASSERT_EQ(rp.fired, 1);
    rc_index_stats_get(ix, &st);
    ASSERT_EQ(st.retrains, 2); /* the retrain did happen in between */
    ASSERT_EQ(n, 10);
    for (uint32_t i = 0; i < n; i++)
        ASSERT_EQ(got[i] % 60, 7); /* all from the query's new cluster */
    rc_index_destroy(ix);
    rc_table_destroy(t);
    free(g1.cent);
    free(g2.cent);
}

/* A search that finds a partition's write lock taken reads the others first
 * and waits for that one last (each_part): here another thread holds city
 * 0's partition for 500 ms; the search reports the visit put off, waits, and
 * returns what it returns with nothing locked. */
typedef struct wholder {
    pthread_rwlock_t *l;
    int locked;
} wholder;

static void *hold_write(void *arg)
{
    wholder *h = arg;
    pthread_rwlock_wrlock(h->l);
    __atomic_store_n(&h->locked, 1, __ATOMIC_RELEASE);
    usleep(500 * 1000);
    pthread_rwlock_unlock(h->l);
    return NULL;
}

TEST(index_search_puts_off_a_write_locked_partition)
{
    gen g;
    gen_init(&g, 20, 41);
    rc_table *t = mk_table(3, 1);
    fill(t, &g, 3000, 3, 1, 0.3f);
    rc_index *ix = mk_index(t, 0);
    touch_all(ix, t, 0);
    flush_all(ix);
    float q[DIM];
    memcpy(q, rc_table_in(t, 5), sizeof q);
    uint32_t ref[20], got[20], nref = 0, n = 0;
    float rs[20], gs[20];
    rc_index_timing tm;
    ASSERT_EQ(rc_index_search_timed(ix, q, 20, NULL, ref, rs, &nref, &tm), 0);
    ASSERT_EQ(tm.deferred, 0);
    ASSERT_EQ(tm.parts, 3);
    wholder h = {NULL, 0};
    for (uint32_t i = 0; i < ix->nparts; i++)
        if (ix->parts[i]->city == 0 && !ix->parts[i]->overflow)
            h.l = &ix->parts[i]->lock;
    ASSERT(h.l != NULL);
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, hold_write, &h), 0);
    while (!__atomic_load_n(&h.locked, __ATOMIC_ACQUIRE))
        usleep(100);
    ASSERT_EQ(rc_index_search_timed(ix, q, 20, NULL, got, gs, &n, &tm), 0);
    pthread_join(th, NULL);
    ASSERT_EQ(tm.deferred, 1);
    ASSERT_GT(tm.lock_ns, 1000000); /* it did wait, last */
    ASSERT_EQ(n, nref);
    for (uint32_t i = 0; i < n; i++) {
        ASSERT_EQ(got[i], ref[i]);
        ASSERT_NEAR(gs[i], rs[i], 1e-6);
    }
    rc_index_destroy(ix);
    rc_table_destroy(t);
    free(g.cent);
}

/* index_destroy_hurries_an_idle_retrain: the writer thread that starts the
 * retrain runs SCHED_IDLE (pipeline.background_policy "idle"), so the retrain
 * thread inherits SCHED_IDLE and its name. */
typedef struct idle_writer {
    rc_index *ix;
    int rc;
} idle_writer;

static void *idle_writer_main(void *arg)
{
    idle_writer *w = arg;
    char err[256];
    struct sched_param sp = {.sched_priority = 0};
    pthread_setname_np(pthread_self(), "t-idle-writer");
    if (sched_setscheduler(0, SCHED_IDLE, &sp) || rc_index_flush(w->ix, 0, err, sizeof err) < 0 ||
        rc_index_maintain(w->ix, err, sizeof err) || !rc_index_training(w->ix))
        w->rc = -1;
    return NULL;
}

/* The kernel id of this process's thread named name, or 0. */
static pid_t tid_named(const char *name)
{
    pid_t found = 0;
    DIR *d = opendir("/proc/self/task");
    struct dirent *de;
    char path[300], comm[32];
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t n = fread(comm, 1, sizeof comm - 1, f);
        fclose(f);
        comm[n] = '\0';
        if (n && comm[n - 1] == '\n')
            comm[n - 1] = '\0';
        if (!strcmp(comm, name))
            found = (pid_t)atoi(de->d_name);
    }
    if (d)
        closedir(d);
    return found;
}

typedef struct policy_watch {
    pid_t tid;
    int stop;      /* atomic */
    int saw_other; /* the thread was seen at SCHED_OTHER */
} policy_watch;

static void *policy_watch_main(void *arg)
{
    policy_watch *w = arg;
    while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
        if (sched_getscheduler(w->tid) == SCHED_OTHER)
            w->saw_other = 1;
        usleep(100);
    }
    return NULL;
}

/* rc_index_destroy while a retrain runs under SCHED_IDLE: the retrain gets
 * the caller's policy back before the join (on a busy machine a SCHED_IDLE
 * k-means may get no CPU at all), as it gets the caller's nice value back. */
TEST(index_destroy_hurries_an_idle_retrain)
{
    if (sched_getscheduler(0) != SCHED_OTHER)
        RC_SKIP("this runner is not SCHED_OTHER");
    gen g;
    gen_init(&g, 60, 17);
    rc_table *t = mk_table(1, 1);
    fill(t, &g, 20000, 1, 1, 0.12f); /* nlist 566: seconds of k-means */
    rc_index_opts o = {0};
    o.ivf_min = 2048;
    rc_index *ix = NULL;
    char err[256] = "";
    ASSERT_EQ(rc_index_create(&o, t, &ix, err, sizeof(err)), 0);
    touch_all(ix, t, 0);
    idle_writer w = {.ix = ix};
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, idle_writer_main, &w), 0);
    pthread_join(th, NULL);
    ASSERT_EQ(w.rc, 0);
    policy_watch pw = {.tid = tid_named("t-idle-writer")};
    if (!pw.tid && !rc_index_training(ix))
        RC_SKIP("the retrain finished before it could be looked at");
    ASSERT_GT(pw.tid, 0);
    int pol = sched_getscheduler(pw.tid);
    if (pol < 0)
        RC_SKIP("the retrain finished before it could be looked at");
    ASSERT_EQ(pol, SCHED_IDLE); /* inherited from the writer */
    ASSERT_EQ(pthread_create(&th, NULL, policy_watch_main, &pw), 0);
    rc_index_destroy(ix);
    __atomic_store_n(&pw.stop, 1, __ATOMIC_RELEASE);
    pthread_join(th, NULL);
    ASSERT(pw.saw_other);
    rc_table_destroy(t);
    free(g.cent);
}

typedef struct searcher {
    rc_index *ix;
    rc_table *t;
    volatile int *stop;
    uint64_t nsearch;
    int bad;
} searcher;

static void *search_loop(void *arg)
{
    searcher *s = arg;
    rc_rng r;
    rc_rng_seed(&r, (uint64_t)(uintptr_t)s);
    uint32_t rows[50], n, cates[1];
    float sc[50], q[DIM];
    while (!__atomic_load_n(s->stop, __ATOMIC_ACQUIRE)) {
        for (int i = 0; i < DIM; i++)
            q[i] = rc_rng_float(&r) - 0.5f;
        cates[0] = rc_rng_below(&r, 3);
        rc_index_filter f = {(int64_t)rc_rng_below(&r, 3) - 1, cates, rc_rng_below(&r, 2)};
        if (rc_index_search(s->ix, q, 50, &f, rows, sc, &n) != 0)
            s->bad++;
        uint32_t size = rc_table_size(s->t);
        for (uint32_t i = 0; i < n; i++) {
            if (rows[i] >= size || (i > 0 && sc[i] > sc[i - 1]))
                s->bad++;
            else if (f.city >= 0 && rc_table_city(s->t, rows[i]) != (uint32_t)f.city)
                s->bad++;
        }
        __atomic_fetch_add(&s->nsearch, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

TEST(index_concurrent_search_while_writing)
{
    gen g;
    gen_init(&g, 40, 17);
    rc_table *t = mk_table(2, 3);
    fill(t, &g, 3000, 2, 3, 0.3f);
    rc_index_opts o = {0};
    o.ivf_min = 1024;
    o.retrain_growth = 0.3f;
    o.batch = 64;
    char err[256] = "";
    rc_index *ix = index_filled(&o, t);
    ASSERT_EQ(rc_index_flush(ix, 0, err, sizeof(err)), 3000);
    volatile int stop = 0;
    searcher s[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        s[i] = (searcher){ix, t, &stop, 0, 0};
        ASSERT_EQ(pthread_create(&th[i], NULL, search_loop, &s[i]), 0);
    }
    rc_rng r;
    rc_rng_seed(&r, 18);
    float v[DIM];
    /* A fixed amount of writing (to 40000 rows: two IVF retrains at growth
     * 0.3), and after each round the writer waits until every searcher has
     * completed a search that started after it: the searches race every round
     * of writes however the threads are scheduled. */
    while (rc_table_size(t) < 40000) {
        uint64_t before[3];
        for (int i = 0; i < 3; i++)
            before[i] = __atomic_load_n(&s[i].nsearch, __ATOMIC_RELAXED);
        uint32_t base = rc_table_size(t);
        fill(t, &g, 200, 2, 3, 0.3f);
        touch_all(ix, t, base);
        for (int i = 0; i < 300; i++) {
            uint32_t row = rc_rng_below(&r, rc_table_size(t));
            gen_vec(&g, rc_rng_below(&g.rng, g.ncl), 0.3f, v);
            memcpy(rc_table_in(t, row), v, sizeof(v));
            rc_index_touch(ix, row);
        }
        int rc = rc_index_flush(ix, 0, err, sizeof(err));
        if (rc < 0)
            RC__FAIL("flush: %s", err);
        ASSERT_EQ(rc_index_maintain(ix, err, sizeof(err)), 0);
        for (int i = 0; i < 3; i++)
            while (__atomic_load_n(&s[i].nsearch, __ATOMIC_RELAXED) < before[i] + 2)
                sched_yield();
    }
    __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
    uint64_t total = 0;
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        ASSERT_EQ(s[i].bad, 0);
        total += s[i].nsearch;
    }
    rc_index_stats st;
    rc_index_stats_get(ix, &st);
    fprintf(stderr,
            "searches %" PRIu64 ", rows %" PRIu64 ", ivf %" PRIu64 ", retrains %" PRIu64
            ", reindexed %" PRIu64 "\n",
            total, st.size, st.ivf_partitions, st.retrains, st.reindexed);
    ASSERT_GT(total, 3 * 2 * 100); /* > 100 rounds, two searches each */
    ASSERT_GE(st.ivf_partitions, 1);
    ASSERT_GE(st.retrains, 2);
    ASSERT_GT(st.reindexed, 0);
    rc_index_destroy(ix);
    rc_table_destroy(t);
    free(g.cent);
}

/* Issue 11, probe 1: the partition limit never freezes the index. With
 * max_partitions = 4 and 6 cities x 3 categories, the pairs beyond the first
 * four go to the overflow partition: every row is indexed, nothing stays
 * pending, filtered searches equal brute force (overflow rows filtered one by
 * one), rows of existing and of new pairs added afterwards are searchable,
 * and the overflow partition never turns IVF. */
static void overflow_case(uint32_t ivf_min)
{
    gen g;
    gen_init(&g, 20, 21);
    rc_table *t = mk_table(6, 3);
    fill(t, &g, 2000, 6, 3, 0.3f);
    rc_index_opts o = {0};
    o.no_background = 1;
    o.ivf_min = ivf_min;
    o.max_partitions = 4;
    rc_index *ix = index_filled(&o, t);
    flush_all(ix);
    rc_index_stats st;
    rc_index_stats_get(ix, &st);
    ASSERT_EQ(st.pending, 0);
    ASSERT_EQ(st.size, 2000);
    ASSERT_EQ(st.partitions, 5); /* four regular + the overflow */
    ASSERT_EQ(st.max_partitions, 4);
    ASSERT_GT(st.overflow_rows, 1000); /* 14 of 18 pairs */
    ASSERT_LT(st.overflow_rows, 2000);
    ASSERT_EQ(st.partition_errors, 0);
    ASSERT_EQ(st.ivf_partitions, ivf_min < 2000 ? 4 : 0);
    for (uint32_t r = 0; r < 2000; r++)
        ASSERT(rc_index_contains(ix, r));
    uint32_t cates[2] = {1, 2};
    rc_index_filter fs[9] = {{0, NULL, 0},   {1, NULL, 0},  {2, NULL, 0},
                             {3, NULL, 0},   {4, NULL, 0},  {5, NULL, 0},
                             {-1, cates, 1}, {4, cates, 2}, {-1, NULL, 0}};
    if (ivf_min > 2000) /* all flat: exact */
        check_filters_exact(ix, t, fs, 9, 5, 22);
    uint32_t got[3], n;
    float gs[3];
    /* New rows after the limit: one of a regular pair, one of an overflow
     * pair; both searchable under their own filter. */
    uint32_t rows[2], c0 = rc_table_city(t, 0), k0 = rc_table_cate(t, 0);
    float v[DIM];
    for (int i = 0; i < 2; i++) {
        for (int j = 0; j < DIM; j++)
            v[j] = (float)(((j + 7 * i) * 37) % 11) - 5.0f;
        rc_vec_normalize(v, DIM);
        /* (5, 2): one of the 14 pairs without a partition of their own, unless
         * the seed put it among the first four; either way it must be found */
        uint32_t city = i == 0 ? c0 : 5, cate = i == 0 ? k0 : 2;
        rows[i] = add_row(t, city, cate, v);
        rc_index_touch(ix, rows[i]);
    }
    flush_all(ix);
    for (int i = 0; i < 2; i++) {
        ASSERT(rc_index_contains(ix, rows[i]));
        rc_index_filter f = {rc_table_city(t, rows[i]), NULL, 0};
        memcpy(v, rc_table_in(t, rows[i]), sizeof(v));
        ASSERT_EQ(rc_index_search(ix, v, 3, &f, got, gs, &n), 0);
        ASSERT_GE(n, 1);
        ASSERT_EQ(got[0], rows[i]);
    }
    rc_index_stats_get(ix, &st);
    ASSERT_EQ(st.pending, 0);
    ASSERT_EQ(st.partitions, 5);
    rc_index_destroy(ix);
    rc_table_destroy(t);
    free(g.cent);
}

TEST(index_partition_limit_overflow_flat) { overflow_case(4096); }

TEST(index_partition_limit_overflow_never_ivf) { overflow_case(64); }

/* Recall@k of rc_recall_search (index candidates, overfetch x k, re-scored
 * with the table's vectors: the daemon's path) against brute force. */
static double recall_rerank(rc_index *ix, const rc_table *t, uint32_t nq, uint32_t k,
                            float overfetch, uint64_t seed)
{
    rc_rng r;
    rc_rng_seed(&r, seed);
    uint32_t want[50], n;
    float ws[50], q[DIM];
    rc_hit got[50];
    uint64_t hit = 0, tot = 0;
    ASSERT_LE(k, 50);
    for (uint32_t i = 0; i < nq; i++) {
        mk_query(t, &r, q);
        uint32_t m = brute(t, q, k, NULL, want, ws);
        ASSERT_EQ(rc_recall_search(t, ix, q, k, overfetch, NULL, NULL, 0, got, &n), 0);
        ASSERT_EQ(n, m);
        for (uint32_t a = 0; a < m; a++)
            for (uint32_t b = 0; b < n; b++)
                hit += want[a] == got[b].row;
        tot += m;
    }
    return tot ? (double)hit / (double)tot : 1.0;
}

/* index.storage: one IVF partition whose lists hold float32 vectors, fp16 or
 * sq8 codes. Its lists hold one code of the storage's size and an id per row;
 * re-ranked recall@50 against exact search holds; a moved vector is found at
 * its new place after a flush (update_vectors on the IVF-SQ index); rows
 * added to the IVF partition are searchable; after a retrain (from the
 * table's vectors for fp16/sq8) every row still finds itself first. */
static void storage_case(int storage, float score_tol)
{
    gen g;
    rc_table *t;
    rc_index *ix = ivf_built(&g, 31, 6000, 1, storage, &t);
    rc_index_stats st;
    rc_index_stats_get(ix, &st);
    ASSERT_EQ(st.ivf_partitions, 1);
    ASSERT_EQ(st.storage, storage);
    ASSERT_STREQ(rc_index_storage_name(storage), rc_index_storage_name(st.storage));
    uint64_t code = storage == RC_INDEX_STORAGE_FLAT   ? DIM * 4
                    : storage == RC_INDEX_STORAGE_FP16 ? DIM * 2
                    : storage == RC_INDEX_STORAGE_SQ8  ? DIM
                                                       : 1;
    ASSERT_EQ(st.list_bytes, 6000 * (code + 8));
    ASSERT_GE(st.vec_bytes, st.list_bytes);
    /* int8's lists are 9 bytes a row: the direct map and centroids outweigh them */
    if (storage != RC_INDEX_STORAGE_INT8)
        ASSERT_LE(st.vec_bytes, 3 * st.list_bytes);
    ASSERT_GT(st.bytes, st.vec_bytes);
    double raw = recall_at(ix, t, 60, 50, NULL, 32), rr = recall_rerank(ix, t, 60, 50, 3.0f, 32);
    fprintf(stderr, "%s: recall@50 raw %.4f, re-ranked %.4f, list bytes %zu, vec bytes %zu\n",
            rc_index_storage_name(storage), raw, rr, st.list_bytes, st.vec_bytes);
    ASSERT_DBL_OP(rr, >=, 0.95);

    /* A moved vector: a fresh direction, far from every row. */
    uint32_t row = 17, got[3], n;
    float w[DIM], gs[3];
    for (int i = 0; i < DIM; i++)
        w[i] = (i % 2 ? 1.0f : -1.0f) * (float)(i % 7);
    rc_vec_normalize(w, DIM);
    ASSERT_EQ(rc_index_search(ix, w, 1, NULL, got, gs, &n), 0);
    ASSERT_NE(got[0], row);
    memcpy(rc_table_in(t, row), w, sizeof(w));
    rc_index_touch(ix, row);
    flush_all(ix);
    ASSERT_EQ(rc_index_search(ix, w, 1, NULL, got, gs, &n), 0);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(got[0], row);
    ASSERT_NEAR(gs[0], 1.0, score_tol);

    /* New rows in the IVF partition, each found first with its own vector. */
    rc_rng r;
    rc_rng_seed(&r, 33);
    float v[DIM];
    uint32_t base = rc_table_size(t);
    for (int i = 0; i < 40; i++) {
        for (int j = 0; j < DIM; j++)
            v[j] = gauss(&r);
        rc_vec_normalize(v, DIM);
        add_row(t, 0, 0, v);
    }
    touch_all(ix, t, base);
    flush_all(ix);
    double dev = 0;
    for (uint32_t i = base; i < base + 40; i++) {
        ASSERT(rc_index_contains(ix, i));
        memcpy(v, rc_table_in(t, i), sizeof(v));
        ASSERT_EQ(rc_index_search(ix, v, 1, NULL, got, gs, &n), 0);
        ASSERT_EQ(got[0], i);
        ASSERT_NEAR(gs[0], 1.0, score_tol);
        dev = fmax(dev, fabs(gs[0] - 1.0));
    }
    /* The scores tell what FAISS holds: float32 vectors score themselves 1
     * to rounding, fp16 and sq8 codes do not. */
    if (storage == RC_INDEX_STORAGE_FLAT)
        ASSERT_DBL_OP(dev, <=, 1e-5);
    else
        ASSERT_DBL_OP(dev, >, 1e-5);

    /* Grow past 2x the trained rows: a retrain (synchronous here). */
    base = rc_table_size(t);
    fill(t, &g, 6100, 1, 1, 0.12f);
    touch_all(ix, t, base);
    flush_all(ix);
    rc_index_stats_get(ix, &st);
    ASSERT_EQ(st.retrains, 2);
    ASSERT_EQ(st.size, base + 6100);
    ASSERT_EQ(st.list_bytes, st.size * (code + 8));
    for (uint32_t i = 0; i < st.size; i += 11) {
        memcpy(v, rc_table_in(t, i), sizeof(v));
        rc_vec_normalize(v, DIM);
        ASSERT_EQ(rc_index_search(ix, v, 1, NULL, got, gs, &n), 0);
        ASSERT_EQ(got[0], i);
        ASSERT_NEAR(gs[0], 1.0, score_tol);
    }
    ASSERT_EQ(rc_index_search(ix, w, 1, NULL, got, gs, &n), 0);
    ASSERT_EQ(got[0], row);
    rr = recall_rerank(ix, t, 60, 50, 3.0f, 34);
    fprintf(stderr, "%s after retrain: recall@50 re-ranked %.4f\n", rc_index_storage_name(storage),
            rr);
    ASSERT_DBL_OP(rr, >=, 0.95);
    rc_index_destroy(ix);
    rc_table_destroy(t);
    free(g.cent);
}

TEST(index_storage_flat) { storage_case(RC_INDEX_STORAGE_FLAT, 1e-4f); }

TEST(index_storage_fp16) { storage_case(RC_INDEX_STORAGE_FP16, 2e-3f); }

TEST(index_storage_sq8) { storage_case(RC_INDEX_STORAGE_SQ8, 0.015f); }

TEST(index_storage_int8) { storage_case(RC_INDEX_STORAGE_INT8, 0.015f); }

TEST(index_storage_names_and_unknown)
{
    ASSERT_EQ(rc_index_storage_parse("flat"), RC_INDEX_STORAGE_FLAT);
    ASSERT_EQ(rc_index_storage_parse("fp16"), RC_INDEX_STORAGE_FP16);
    ASSERT_EQ(rc_index_storage_parse("sq8"), RC_INDEX_STORAGE_SQ8);
    ASSERT_EQ(rc_index_storage_parse("int8"), RC_INDEX_STORAGE_INT8);
    ASSERT_EQ(rc_index_storage_parse("pq"), -1);
    ASSERT(rc_index_storage_name(4) == NULL);
    rc_table *t = mk_table(1, 1);
    rc_index_opts o = {0};
    o.storage = 4;
    rc_index *ix = NULL;
    char err[256] = "";
    ASSERT_EQ(rc_index_create(&o, t, &ix, err, sizeof(err)), RC_EINVAL);
    ASSERT(ix == NULL);
    rc_table_destroy(t);
}

/* sq8 partitions are scanned with the index's int8 copies (scan_lists), not
 * FAISS's codes: the same lists, the same rows scored, scores within int8
 * rounding of the exact inner product with the indexed vector, and top-50
 * lists that agree with FAISS's own scan of those lists (the reference,
 * rc_index_set_faiss_scan) and find the exact top 50 as well as it does. */
TEST(index_sq8_int8_scan_matches_faiss_scan)
{
    gen g;
    rc_table *t;
    rc_index *ix = ivf_built(&g, 41, 12000, 2, RC_INDEX_STORAGE_SQ8, &t);
    rc_index_stats st;
    rc_index_stats_get(ix, &st);
    ASSERT_EQ(st.ivf_partitions, 2);
    rc_rng r;
    rc_rng_seed(&r, 42);
    uint32_t own[50], ref[50], want[50], n1, n2;
    float s1[50], s2[50], ws[50], q[DIM], v[DIM];
    uint64_t agree = 0, hit_own = 0, hit_ref = 0, tot = 0;
    double dev = 0;
    for (int i = 0; i < 60; i++) {
        mk_query(t, &r, q);
        float qn = sqrtf(rc_vec_dot(q, q, DIM));
        rc_index_timing t1, t2;
        ASSERT_EQ(rc_index_search_timed(ix, q, 50, NULL, own, s1, &n1, &t1), 0);
        rc_index_set_faiss_scan(ix, 1);
        ASSERT_EQ(rc_index_search_timed(ix, q, 50, NULL, ref, s2, &n2, &t2), 0);
        rc_index_set_faiss_scan(ix, 0);
        uint32_t m = brute(t, q, 50, NULL, want, ws);
        ASSERT_EQ(n1, 50);
        ASSERT_EQ(n2, 50);
        ASSERT_EQ(t1.lists, t2.lists);
        ASSERT_EQ(t1.rows, t2.rows);
        ASSERT_GT(t1.rows, 50);
        ASSERT_LT(t1.rows, 12000); /* only the chosen lists */
        for (uint32_t a = 0; a < 50; a++) {
            if (a > 0)
                ASSERT_DBL_OP(s1[a], <=, s1[a - 1]);
            memcpy(v, rc_table_in(t, own[a]), sizeof(v));
            rc_vec_normalize(v, DIM);
            dev = fmax(dev, fabs(s1[a] - rc_vec_dot(q, v, DIM)) / qn);
            for (uint32_t b = 0; b < 50; b++) {
                agree += own[a] == ref[b];
                hit_own += b < m && own[a] == want[b];
                hit_ref += b < m && ref[a] == want[b];
            }
        }
        tot += 50;
    }
    double ag = (double)agree / (double)tot, ro = (double)hit_own / (double)tot,
           rf = (double)hit_ref / (double)tot;
    fprintf(stderr,
            "int8 scan: agreement with FAISS's scan %.4f, recall@50 %.4f (FAISS %.4f), "
            "max score deviation %.5f\n",
            ag, ro, rf, dev);
    ASSERT_DBL_OP(dev, <=, 0.01);
    ASSERT_DBL_OP(ag, >=, 0.9);
    ASSERT_DBL_OP(ro, >=, rf - 0.005);
    ASSERT_DBL_OP(ro, >=, 0.9);
    rc_index_destroy(ix);
    rc_table_destroy(t);
    free(g.cent);
}

/* Flat sq8 partitions (below ivf_min) are scored with the int8 copies too:
 * every row scored, scores within int8 rounding of the exact inner product,
 * and top-50 lists that agree with the float sgemv (the reference,
 * rc_index_set_faiss_scan) — also after rows moved and were re-indexed,
 * which must update the copies the search reads. */
TEST(index_sq8_flat_partitions_scan_int8_copies)
{
    gen g;
    gen_init(&g, 200, 43);
    rc_table *t = mk_table(1, 2);
    fill(t, &g, 3000, 1, 2, 0.12f);
    rc_index_opts o = {0};
    o.ivf_min = 4096; /* two partitions of ~1,500 rows: flat */
    o.no_background = 1;
    o.storage = RC_INDEX_STORAGE_SQ8;
    rc_index *ix = index_filled(&o, t);
    flush_all(ix);
    rc_index_stats st;
    rc_index_stats_get(ix, &st);
    ASSERT_EQ(st.ivf_partitions, 0);
    ASSERT_EQ(st.size, 3000);
    /* No FAISS float storage behind flat sq8 partitions: their int8 copies
     * and the table are all they need. */
    ASSERT_EQ(st.vec_bytes, 0);
    rc_rng r;
    rc_rng_seed(&r, 44);
    uint32_t own[50], ref[50], want[50], n1, n2;
    float s1[50], s2[50], ws[50], q[DIM], v[DIM];
    for (int round = 0; round < 2; round++) {
        uint64_t agree = 0, hit_own = 0, tot = 0;
        double dev = 0;
        for (int i = 0; i < 40; i++) {
            mk_query(t, &r, q);
            float qn = sqrtf(rc_vec_dot(q, q, DIM));
            rc_index_timing t1;
            ASSERT_EQ(rc_index_search_timed(ix, q, 50, NULL, own, s1, &n1, &t1), 0);
            rc_index_set_faiss_scan(ix, 1);
            ASSERT_EQ(rc_index_search(ix, q, 50, NULL, ref, s2, &n2), 0);
            rc_index_set_faiss_scan(ix, 0);
            uint32_t m = brute(t, q, 50, NULL, want, ws);
            ASSERT_EQ(n1, 50);
            ASSERT_EQ(n2, 50);
            ASSERT_EQ(t1.rows, 3000); /* flat: every row of both partitions */
            for (uint32_t a = 0; a < 50; a++) {
                memcpy(v, rc_table_in(t, own[a]), sizeof(v));
                rc_vec_normalize(v, DIM);
                dev = fmax(dev, fabs(s1[a] - rc_vec_dot(q, v, DIM)) / qn);
                for (uint32_t b = 0; b < 50; b++) {
                    agree += own[a] == ref[b];
                    hit_own += b < m && own[a] == want[b];
                }
            }
            tot += 50;
        }
        double ag = (double)agree / (double)tot, ro = (double)hit_own / (double)tot;
        fprintf(stderr,
                "flat int8 scan (round %d): agreement with sgemv %.4f, recall@50 %.4f, "
                "max score deviation %.5f\n",
                round, ag, ro, dev);
        ASSERT_DBL_OP(dev, <=, 0.01);
        ASSERT_DBL_OP(ag, >=, 0.9);
        ASSERT_DBL_OP(ro, >=, 0.9);
        /* Move a third of the rows far from where they were, then re-index:
         * the second round must score the moved vectors. */
        for (uint32_t row = 0; round == 0 && row < 3000; row += 3) {
            float *x = rc_table_in(t, row);
            for (uint32_t d = 0; d < DIM; d++)
                x[d] = -x[d];
            rc_index_touch(ix, row);
        }
        flush_all(ix);
    }
    rc_index_destroy(ix);
    rc_table_destroy(t);
    free(g.cent);
}

/* The int8 scoring kernel the search uses (AVX2 where the CPU has it, a
 * scalar tail past the last 16 components) against double arithmetic, for
 * dimensions that are and are not multiples of 16, several row counts and an
 * all-zero row (score 0). */
TEST(index_int8_kernel_any_dim)
{
    static const size_t dims[] = {1, 15, 16, 20, 33, 64, 100, 256};
    rc_rng r;
    rc_rng_seed(&r, 45);
    for (size_t di = 0; di < sizeof(dims) / sizeof(dims[0]); di++) {
        size_t d = dims[di];
        for (size_t m = 0; m <= 7; m++) {
            float q[256], out[8];
            int8_t rows[8][256];
            const int8_t *xp[8];
            for (size_t i = 0; i < d; i++)
                q[i] = rc_rng_float(&r) * 2.0f - 1.0f;
            for (size_t j = 0; j < m; j++) {
                for (size_t i = 0; i < d; i++)
                    rows[j][i] = (int8_t)((int)rc_rng_below(&r, 255) - 127);
                if (j == 3)
                    memset(rows[j], 0, d);
                xp[j] = rows[j];
            }
            rc__index_score(q, xp, m, d, out);
            for (size_t j = 0; j < m; j++) {
                double dot = 0, xx = 0;
                for (size_t i = 0; i < d; i++) {
                    dot += (double)q[i] * rows[j][i];
                    xx += (double)rows[j][i] * rows[j][i];
                }
                double want = xx > 0 ? dot / sqrt(xx) : 0.0;
                ASSERT_DBL_OP(fabs(out[j] - want), <=, 1e-4 * (1.0 + fabs(want)));
            }
        }
    }
}
