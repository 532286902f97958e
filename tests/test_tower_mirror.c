/* The two-tower mirror in fp16 (tower_serve.h, rc_tower_serve_opts.float_mirror
 * 0) against the same bundle in float32: the same vectors to fp16's precision,
 * the same exact and indexed top-50, the same drift recomputations, half the
 * vector bytes. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "recalld/common.h"
#include "recalld/recall.h"
#include "recalld/table.h"
#include "recalld/tower.h"
#include "recalld/tower_serve.h"
#include "recalld/vec.h"
#include "test.h"

#define MW_DIM   32u
#define MW_ITEMS 6000u
#define MW_K     50u

static void rand_unit(rc_rng *g, float *v, uint32_t d)
{
    for (uint32_t j = 0; j < d; j++)
        v[j] = rc_rng_float(g) * 2 - 1;
    rc_vec_normalize(v, d);
}

static rc_tower_serve *mw_bundle_with(const rc_table *w2v, int float_mirror,
                                      const rc_index *w2v_index, float drift)
{
    rc_tower_config cfg = {.dim = MW_DIM, .w2v_dim = MW_DIM, .features = RC_TOWER_F_ALL};
    rc_tower_model *m;
    rc_tower_serve *b;
    char err[256];
    if (rc_tower_create(&cfg, 11, &m, err, sizeof err))
        RC__FAIL("tower: %s", err);
    /* 300-700 rows a partition: IVF partitions (trained in place), as at 1M */
    rc_tower_serve_opts o = {
        .index = {.ivf_min = 256, .no_background = 1, .storage = RC_INDEX_STORAGE_SQ8},
        .float_mirror = float_mirror,
        .w2v_index = w2v_index,
        .drift = drift};
    if (rc_tower_serve_create(m, w2v, &o, &b, err, sizeof err))
        RC__FAIL("bundle: %s", err);
    return b;
}

static rc_tower_serve *mw_bundle(const rc_table *w2v, int float_mirror)
{
    return mw_bundle_with(w2v, float_mirror, NULL, 0);
}

static void mw_settle(rc_tower_serve *b)
{
    char err[256];
    for (int i = 0; i < 4; i++)
        if (rc_tower_serve_flush(b, err, sizeof err) < 0 ||
            rc_tower_serve_maintain(b, err, sizeof err) < 0)
            RC__FAIL("index: %s", err);
}

static double overlap(const rc_hit *a, uint32_t na, const rc_hit *b, uint32_t nb)
{
    uint32_t same = 0;
    for (uint32_t i = 0; i < na; i++)
        for (uint32_t j = 0; j < nb; j++)
            same += a[i].row == b[j].row;
    return na ? (double)same / na : 1.0;
}

/* A word2vec table of MW_ITEMS random unit vectors over 4 cities x 3 categories. */
static rc_table *mw_table(rc_rng *g)
{
    rc_table *w2v;
    char err[256];
    rc_table_opts to = {.dim = MW_DIM, .max_items = 20000, .seed = 3};
    ASSERT_EQ(rc_table_create(&to, &w2v, err, sizeof err), 0);
    uint32_t city[4], cate[3];
    for (int i = 0; i < 4; i++) {
        char s[8];
        snprintf(s, sizeof s, "c%d", i);
        ASSERT_EQ(rc_table_city_id(w2v, s, strlen(s), &city[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        char s[8];
        snprintf(s, sizeof s, "k%d", i);
        ASSERT_EQ(rc_table_cate_id(w2v, s, strlen(s), &cate[i]), 0);
    }
    for (uint32_t i = 0; i < MW_ITEMS; i++) {
        char id[32];
        uint32_t row;
        int made;
        snprintf(id, sizeof id, "item-%u", i);
        ASSERT_EQ(rc_table_upsert(w2v, id, strlen(id), city[i % 4], cate[i / 4 % 3], NULL, 0, &row,
                                  &made),
                  0);
        rand_unit(g, rc_table_in(w2v, row), MW_DIM);
    }
    return w2v;
}

TEST(tower_mirror_fp16_same_topk)
{
    rc_rng g;
    rc_rng_seed(&g, 17);
    rc_table *w2v = mw_table(&g);
    rc_tower_serve *bf = mw_bundle(w2v, 1), *bh = mw_bundle(w2v, 0);
    ASSERT_EQ(rc_tower_serve_sync_rows(bf, UINT32_MAX), (int)MW_ITEMS);
    ASSERT_EQ(rc_tower_serve_sync_rows(bh, UINT32_MAX), (int)MW_ITEMS);
    mw_settle(bf);
    mw_settle(bh);
    const rc_table *mf = rc_tower_serve_table(bf), *mh = rc_tower_serve_table(bh);
    ASSERT_EQ(rc_table_half(mf), 0);
    ASSERT_EQ(rc_table_half(mh), 1);

    /* 1. every vector: the float one rounded to fp16 */
    float buf[MW_DIM];
    for (uint32_t r = 0; r < MW_ITEMS; r++) {
        const float *a = rc_table_in(mf, r), *b = rc_table_in_read(mh, r, buf);
        for (uint32_t j = 0; j < MW_DIM; j++)
            if (fabsf(a[j] - b[j]) > fmaxf(fabsf(a[j]) * ldexpf(1, -11), ldexpf(1, -25)))
                RC__FAIL("row %u [%u]: %g vs %g", r, j, (double)a[j], (double)b[j]);
    }

    /* 2. the same top-50, exact and through the index; half the queries in one city */
    double ex = 0, ixf = 0, ixh = 0, maxd = 0;
    int nq = 200;
    for (int i = 0; i < nq; i++) {
        float q[MW_DIM];
        rand_unit(&g, q, MW_DIM);
        rc_index_filter f = {.city = i % 2 ? (int64_t)(i / 2 % 4) : -1};
        rc_hit ef[MW_K], eh[MW_K], sf[MW_K], sh[MW_K];
        uint32_t nef, neh, nsf, nsh;
        ASSERT_EQ(rc_recall_exact(mf, q, MW_K, 1.0f, &f, NULL, 0, ef, &nef), 0);
        ASSERT_EQ(rc_recall_exact(mh, q, MW_K, 1.0f, &f, NULL, 0, eh, &neh), 0);
        ASSERT_EQ(nef, MW_K);
        ASSERT_EQ(neh, MW_K);
        ASSERT_EQ(rc_tower_serve_search(bf, q, MW_K, 3, &f, NULL, 0, sf, &nsf), 0);
        ASSERT_EQ(rc_tower_serve_search(bh, q, MW_K, 3, &f, NULL, 0, sh, &nsh), 0);
        ex += overlap(ef, nef, eh, neh);
        ixf += overlap(ef, nef, sf, nsf);
        ixh += overlap(ef, nef, sh, nsh);
        for (uint32_t j = 0; j < MW_K; j++)
            maxd = fmax(maxd, fabs((double)ef[j].score - eh[j].score));
    }
    ex /= nq;
    ixf /= nq;
    ixh /= nq;
    printf("    exact fp16 vs float %.4f; index vs float exact: float %.4f, fp16 %.4f; max score "
           "diff %.2g\n",
           ex, ixf, ixh, maxd);
    ASSERT(ex >= 0.99);
    ASSERT(maxd < 2e-3);
    ASSERT(ixf >= 0.8); /* the index finds most of the exact top-50 (IVF, random vectors) */
    ASSERT(ixh >= ixf - 0.01);

    /* 3. drift: the same rows recomputed, and to the same vectors */
    uint32_t rows[500], rf, rh;
    for (uint32_t i = 0; i < 500; i++) {
        rows[i] = i * 7;
        if (i % 2)
            rand_unit(&g, rc_table_in(w2v, rows[i]), MW_DIM); /* moved far */
    }
    ASSERT_EQ(rc_tower_serve_refresh(bf, rows, 500, 0, &rf), 500);
    ASSERT_EQ(rc_tower_serve_refresh(bh, rows, 500, 0, &rh), 500);
    ASSERT_EQ(rf, 250);
    ASSERT_EQ(rh, 250);
    for (uint32_t i = 0; i < 500; i++) {
        const float *a = rc_table_in(mf, rows[i]), *b = rc_table_in_read(mh, rows[i], buf);
        for (uint32_t j = 0; j < MW_DIM; j++)
            ASSERT(fabsf(a[j] - b[j]) <= fmaxf(fabsf(a[j]) * ldexpf(1, -11), ldexpf(1, -25)));
    }
    mw_settle(bf);
    mw_settle(bh);

    /* 4. the bytes: 2 a component less */
    rc_tower_serve_stats sf, sh;
    rc_tower_serve_stats_get(bf, &sf);
    rc_tower_serve_stats_get(bh, &sh);
    ASSERT_EQ(sf.rows, MW_ITEMS);
    ASSERT_EQ(sh.rows, MW_ITEMS);
    ASSERT_GE(sf.bytes - sh.bytes, (size_t)MW_ITEMS * MW_DIM * 2);
    rc_tower_serve_unref(bf);
    rc_tower_serve_unref(bh);
    rc_table_destroy(w2v);
}

static void count_store(void *arg, uint32_t row)
{
    (void)row;
    ++*(uint32_t *)arg;
}

/* With rc_tower_serve_opts.w2v_index (the daemon's bundles) a row's tower
 * vector is recomputed when the word2vec index stored the row's vector again
 * since it was computed, and not before: rows moved far are recomputed once
 * the index re-indexed them (to the vectors a bundle with its own int8 copies
 * computes), rows moved below index.drift never, and each row's reference
 * takes 2 bytes instead of w2v_dim. */
TEST(tower_refresh_follows_w2v_index_generation)
{
    rc_rng g;
    rc_rng_seed(&g, 23);
    rc_table *w2v = mw_table(&g);
    rc_index *ix;
    char err[256];
    rc_index_opts io = {.ivf_min = 256, .no_background = 1, .drift = 0.0005f};
    ASSERT_EQ(rc_index_create(&io, w2v, &ix, err, sizeof err), 0);
    uint32_t stored = 0;
    rc_index_set_on_store(ix, count_store, &stored);
    for (uint32_t r = 0; r < MW_ITEMS; r++)
        rc_index_touch(ix, r);
    while (rc_index_flush(ix, 0, err, sizeof err) > 0)
        ;
    ASSERT_EQ(stored, MW_ITEMS);
    ASSERT_EQ(rc_index_row_gen(ix, 7), 1);
    ASSERT_EQ(rc_index_row_gen(ix, MW_ITEMS + 5), 0); /* never indexed */
    rc_tower_serve *bg = mw_bundle_with(w2v, 1, ix, 0), *bq = mw_bundle_with(w2v, 1, NULL, 0.0005f);
    ASSERT_EQ(rc_tower_serve_sync_rows(bg, UINT32_MAX), (int)MW_ITEMS);
    ASSERT_EQ(rc_tower_serve_sync_rows(bq, UINT32_MAX), (int)MW_ITEMS);
    mw_settle(bg);
    mw_settle(bq);

    /* 600 rows: every second one moved far, every fourth nudged by 1e-5 */
    uint32_t rows[600], re;
    for (uint32_t i = 0; i < 600; i++) {
        rows[i] = i * 9;
        float *v = rc_table_in(w2v, rows[i]);
        if (i % 2)
            rand_unit(&g, v, MW_DIM);
        else if (i % 4 == 0)
            v[0] += 1e-5f;
    }
    /* the index has not seen the moves yet: nothing is stale for bg */
    ASSERT_EQ(rc_tower_serve_refresh(bg, rows, 600, 0, &re), 600);
    ASSERT_EQ(re, 0);
    ASSERT_EQ(rc_tower_serve_refresh(bq, rows, 600, 0, &re), 600);
    ASSERT_EQ(re, 300);
    stored = 0;
    for (uint32_t i = 0; i < 600; i++)
        rc_index_touch(ix, rows[i]);
    while (rc_index_flush(ix, 0, err, sizeof err) > 0)
        ;
    ASSERT_EQ(stored, 300); /* the far moves only */
    for (uint32_t i = 0; i < 600; i++)
        ASSERT_EQ(rc_index_row_gen(ix, rows[i]), i % 2 ? 2 : 1);
    ASSERT_EQ(rc_tower_serve_refresh(bg, rows, 600, 0, &re), 600);
    ASSERT_EQ(re, 300);
    ASSERT_EQ(rc_tower_serve_refresh(bg, rows, 600, 0, &re), 600);
    ASSERT_EQ(re, 0); /* recomputed once */
    const rc_table *mg = rc_tower_serve_table(bg), *mq = rc_tower_serve_table(bq);
    for (uint32_t i = 0; i < 600; i++)
        ASSERT_EQ(
            memcmp(rc_table_in(mg, rows[i]), rc_table_in(mq, rows[i]), MW_DIM * sizeof(float)), 0);
    rc_tower_serve_stats sg, sq;
    rc_tower_serve_stats_get(bg, &sg);
    rc_tower_serve_stats_get(bq, &sq);
    ASSERT_EQ(sq.bytes - sg.bytes, (size_t)16384 * (MW_DIM - 2)); /* one chunk of references */
    rc_tower_serve_unref(bg);
    rc_tower_serve_unref(bq);
    rc_index_destroy(ix);
    rc_table_destroy(w2v);
}
