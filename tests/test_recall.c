/* Recall on a hand-built table: re-ranking, exclusion, filters, time decay and
 * multi-category quotas. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/common.h"
#include "recalld/index.h"
#include "recalld/recall.h"
#include "recalld/table.h"
#include "recalld/vec.h"
#include "test.h"

#define DIM 16
#define PER 400 /* items per (city, category) group */

/* 2 cities x 3 categories; each group's vectors cluster around its own centre.
 * Rows are grouped: row = (city * 3 + cate) * PER + i. */
static void build(rc_table **t, rc_index **ix)
{
    rc_table_opts to = {.dim = DIM, .seed = 3};
    char err[256];
    ASSERT_EQ(rc_table_create(&to, t, err, sizeof err), 0);
    rc_index_opts io = {.ivf_min = 256, .no_background = 1};
    ASSERT_EQ(rc_index_create(&io, *t, ix, err, sizeof err), 0);
    rc_rng rng;
    rc_rng_seed(&rng, 9);
    float centre[6][DIM];
    for (int g = 0; g < 6; g++)
        for (int d = 0; d < DIM; d++)
            centre[g][d] = rc_rng_float(&rng) - 0.5f;
    for (uint32_t c = 0; c < 2; c++) {
        char name[8];
        uint32_t id;
        snprintf(name, sizeof name, "c%u", c);
        ASSERT_EQ(rc_table_city_id(*t, name, strlen(name), &id), 0);
        ASSERT_EQ(id, c);
    }
    for (uint32_t k = 0; k < 3; k++) {
        char name[8];
        uint32_t id;
        snprintf(name, sizeof name, "k%u", k);
        ASSERT_EQ(rc_table_cate_id(*t, name, strlen(name), &id), 0);
    }
    for (uint32_t g = 0; g < 6; g++)
        for (uint32_t i = 0; i < PER; i++) {
            char id[32];
            uint32_t row;
            int created;
            snprintf(id, sizeof id, "g%u-%u", g, i);
            ASSERT_EQ(rc_table_upsert(*t, id, strlen(id), g / 3, g % 3, NULL, 0, &row, &created),
                      0);
            float *v = rc_table_in(*t, row);
            for (int d = 0; d < DIM; d++)
                v[d] = centre[g][d] + 0.15f * (rc_rng_float(&rng) - 0.5f);
            rc_index_touch(*ix, row);
        }
    ASSERT_GE(rc_index_flush(*ix, 0, err, sizeof err), 0);
    ASSERT_EQ(rc_index_maintain(*ix, err, sizeof err), 0);
    ASSERT_GE(rc_index_flush(*ix, 0, err, sizeof err), 0);
}

static uint32_t row_of(uint32_t city, uint32_t cate, uint32_t i)
{
    return (city * 3 + cate) * PER + i;
}

TEST(recall_search_excludes_and_filters)
{
    rc_table *t;
    rc_index *ix;
    build(&t, &ix);
    uint32_t clicks[3] = {row_of(0, 1, 0), row_of(0, 1, 1), row_of(0, 1, 2)};
    float q[DIM];
    ASSERT_EQ(rc_recall_query_vector(t, clicks, NULL, 3, q), 0);
    rc_hit hits[50];
    uint32_t n;
    ASSERT_EQ(rc_recall_search(t, ix, q, 50, 2.0f, NULL, clicks, 3, hits, &n), 0);
    ASSERT_EQ(n, 50);
    for (uint32_t i = 0; i < n; i++) {
        ASSERT_NE(hits[i].row, clicks[0]);
        ASSERT_NE(hits[i].row, clicks[1]);
        ASSERT_NE(hits[i].row, clicks[2]);
        ASSERT_EQ(rc_table_cate(t, hits[i].row), 1); /* nearest group is its own */
        if (i)
            ASSERT_DBL_OP(hits[i - 1].score, >=, hits[i].score);
    }
    /* City filter: only city 1, although the query sits in city 0. */
    rc_index_filter f = {.city = 1};
    ASSERT_EQ(rc_recall_search(t, ix, q, 50, 2.0f, &f, clicks, 3, hits, &n), 0);
    ASSERT_EQ(n, 50);
    for (uint32_t i = 0; i < n; i++)
        ASSERT_EQ(rc_table_city(t, hits[i].row), 1);
    rc_index_destroy(ix);
    rc_table_destroy(t);
}

/* rc_recall_search_timed: the index stages and the re-rank are measured and
 * added to (two searches: twice the partitions), the answer is the untimed
 * one's. */
TEST(recall_search_timed_adds_stages)
{
    rc_table *t;
    rc_index *ix;
    build(&t, &ix);
    uint32_t clicks[3] = {row_of(0, 1, 0), row_of(0, 1, 1), row_of(0, 1, 2)};
    float q[DIM];
    ASSERT_EQ(rc_recall_query_vector(t, clicks, NULL, 3, q), 0);
    rc_hit a[50], b[50];
    uint32_t na, nb;
    rc_recall_timing tm = {0};
    rc_index_filter f = {.city = 0};
    ASSERT_EQ(rc_recall_search(t, ix, q, 50, 2.0f, &f, clicks, 3, a, &na), 0);
    ASSERT_EQ(rc_recall_search_timed(t, ix, q, 50, 2.0f, &f, clicks, 3, b, &nb, &tm), 0);
    ASSERT_EQ(na, nb);
    ASSERT_EQ(memcmp(a, b, na * sizeof *a), 0);
    ASSERT_GT(tm.parts, 0);
    ASSERT_GT(tm.scan_ns + tm.coarse_ns, 0);
    ASSERT_GT(tm.rerank_ns, 0);
    uint32_t parts = tm.parts;
    uint64_t rerank = tm.rerank_ns;
    ASSERT_EQ(rc_recall_search_timed(t, ix, q, 50, 2.0f, &f, clicks, 3, b, &nb, &tm), 0);
    ASSERT_EQ(tm.parts, 2 * parts);
    ASSERT_GT(tm.rerank_ns, rerank);
    ASSERT_EQ(tm.query_ns, 0);
    rc_index_destroy(ix);
    rc_table_destroy(t);
}

TEST(recall_decay_weights_halve_per_half_life)
{
    int64_t ts[3] = {0, 1000, 3000};
    float w[3];
    rc_recall_decay_weights(ts, 3, 1000, w);
    ASSERT_NEAR(w[2], 1.0, 1e-6);
    ASSERT_NEAR(w[1], 0.25, 1e-6);
    ASSERT_NEAR(w[0], 0.125, 1e-6);
    rc_recall_decay_weights(ts, 3, 0, w);
    ASSERT_NEAR(w[0], 1.0, 1e-6);
}

/* 6 clicks in k0, 3 in k1, 1 in k2 (city 0), k = 20, min quota 1: shares
 * .6/.3/.1 -> 1 + 17 * share -> 11.2, 6.1, 2.7 -> floors 11, 6, 2 = 19, the
 * largest remainder (.7, k2) takes the last slot: 11, 6, 3. */
TEST(recall_multi_category_quotas_and_categories)
{
    rc_table *t;
    rc_index *ix;
    build(&t, &ix);
    uint32_t clicks[10];
    int m = 0;
    for (int i = 0; i < 6; i++)
        clicks[m++] = row_of(0, 0, (uint32_t)i);
    for (int i = 0; i < 3; i++)
        clicks[m++] = row_of(0, 1, (uint32_t)i);
    clicks[m++] = row_of(0, 2, 0);
    rc_hit hits[20];
    rc_mc_quota plan[8];
    uint32_t n, nq;
    rc_mc_opts mo = {.max_cats = 5, .min_quota = 1, .serial = 0};
    ASSERT_EQ(rc_recall_multi_category(t, ix, clicks, NULL, 10, 20, 2.0f, NULL, clicks, 10, &mo,
                                       hits, &n, plan, &nq),
              0);
    ASSERT_EQ(nq, 3);
    ASSERT_EQ(n, 20);
    uint32_t want[3] = {11, 6, 3}, got[3] = {0, 0, 0};
    for (uint32_t i = 0; i < nq; i++) {
        ASSERT_EQ(plan[i].cate, i);
        ASSERT_EQ(plan[i].quota, want[i]);
        ASSERT_EQ(plan[i].filled, want[i]);
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t c = rc_table_cate(t, hits[i].row);
        ASSERT_LT(c, 3);
        got[c]++;
        for (int j = 0; j < m; j++)
            ASSERT_NE(hits[i].row, clicks[j]);
    }
    for (int c = 0; c < 3; c++)
        ASSERT_EQ(got[c], want[c]);

    /* Category-restricted search is near-exact: each category's list equals
     * brute force over that category (re-ranked by the same cosine). */
    float q[DIM];
    uint32_t k0[6];
    for (int i = 0; i < 6; i++)
        k0[i] = clicks[i];
    ASSERT_EQ(rc_recall_query_vector(t, k0, NULL, 6, q), 0);
    rc_index_filter f = {.city = -1, .cates = (uint32_t[]){0}, .ncates = 1};
    rc_hit idx[50];
    uint32_t ni;
    ASSERT_EQ(rc_recall_search(t, ix, q, 50, 2.0f, &f, k0, 6, idx, &ni), 0);
    /* brute force */
    float best[50];
    uint32_t bestr[50], nb = 0;
    for (uint32_t r = 0; r < rc_table_size(t); r++) {
        int skip = rc_table_cate(t, r) != 0;
        for (int i = 0; i < 6 && !skip; i++)
            skip = r == k0[i];
        if (skip)
            continue;
        const float *v = rc_table_in(t, r);
        float s = rc_vec_dot(q, v, DIM) / sqrtf(rc_vec_dot(v, v, DIM));
        uint32_t pos = nb < 50 ? nb++ : 50;
        if (pos == 50 && s <= best[49])
            continue;
        if (pos == 50)
            pos = 49;
        while (pos > 0 && best[pos - 1] < s) {
            best[pos] = best[pos - 1];
            bestr[pos] = bestr[pos - 1];
            pos--;
        }
        best[pos] = s;
        bestr[pos] = r;
    }
    uint32_t agree = 0;
    for (uint32_t i = 0; i < ni; i++)
        for (uint32_t j = 0; j < nb; j++)
            agree += idx[i].row == bestr[j];
    ASSERT_EQ(ni, 50);
    ASSERT_GE(agree, 48); /* recall@50 >= 0.96 against exact search */

    /* City filter applies to every category's search. */
    rc_index_filter city1 = {.city = 1};
    ASSERT_EQ(rc_recall_multi_category(t, ix, clicks, NULL, 10, 20, 2.0f, &city1, clicks, 10, &mo,
                                       hits, &n, plan, &nq),
              0);
    ASSERT_EQ(n, 20);
    for (uint32_t i = 0; i < n; i++)
        ASSERT_EQ(rc_table_city(t, hits[i].row), 1);
    rc_index_destroy(ix);
    rc_table_destroy(t);
}

/* A category with fewer candidates than its quota gives its slots away. */
TEST(recall_multi_category_refills_short_lists)
{
    rc_table *t;
    rc_index *ix;
    build(&t, &ix);
    uint32_t clicks[2] = {row_of(0, 0, 0), row_of(0, 1, 0)};
    rc_hit hits[300];
    rc_mc_quota plan[8];
    uint32_t n, nq;
    /* Exclude all but 5 items of k1 in city 0, and ask for city 0 only. */
    uint32_t *ex = malloc((PER + 2) * sizeof *ex), nex = 0;
    ex[nex++] = clicks[0];
    for (uint32_t i = 0; i < PER - 5; i++)
        ex[nex++] = row_of(0, 1, i);
    rc_index_filter city0 = {.city = 0};
    rc_mc_opts mo = {.serial = 1};
    ASSERT_EQ(rc_recall_multi_category(t, ix, clicks, NULL, 2, 100, 2.0f, &city0, ex, nex, &mo,
                                       hits, &n, plan, &nq),
              0);
    ASSERT_EQ(nq, 2);
    ASSERT_EQ(plan[0].quota + plan[1].quota, 100);
    ASSERT_EQ(n, 100);
    uint32_t k1 = 0;
    for (uint32_t i = 0; i < n; i++)
        k1 += rc_table_cate(t, hits[i].row) == 1;
    ASSERT_EQ(k1, 5);
    free(ex);
    rc_index_destroy(ix);
    rc_table_destroy(t);
}

static int hit_order(const void *a, const void *b)
{
    const rc_hit *x = a, *y = b;
    return rc_hit_better(*x, *y) ? -1 : rc_hit_better(*y, *x) ? 1 : 0;
}

TEST(recall_hit_offer_keeps_best_k_with_ties)
{
    /* k = 1: a tie goes to the lower row, whichever comes first. */
    rc_hit top[8];
    uint32_t n = 0;
    rc_hit_offer(top, &n, 1, (rc_hit){7, 0.5f});
    rc_hit_offer(top, &n, 1, (rc_hit){9, 0.5f});
    ASSERT_EQ(n, 1);
    ASSERT_EQ(top[0].row, 7);
    rc_hit_offer(top, &n, 1, (rc_hit){3, 0.5f});
    ASSERT_EQ(top[0].row, 3);
    rc_hit_offer(top, &n, 1, (rc_hit){20, 0.25f});
    ASSERT_EQ(top[0].row, 3);

    /* Fewer than k offered: all kept, best first. */
    n = 0;
    rc_hit_offer(top, &n, 3, (rc_hit){5, 0.1f});
    rc_hit_offer(top, &n, 3, (rc_hit){4, 0.9f});
    ASSERT_EQ(n, 2);
    ASSERT_EQ(top[0].row, 4);
    ASSERT_EQ(top[1].row, 5);
    /* The k-th fills the list; then a worse one, or an equal one with a higher
     * row, leaves it as it is, and an equal one with a lower row replaces the
     * last. */
    rc_hit_offer(top, &n, 3, (rc_hit){6, 0.1f});
    ASSERT_EQ(n, 3);
    ASSERT_EQ(top[2].row, 6);
    rc_hit_offer(top, &n, 3, (rc_hit){1, 0.05f});
    rc_hit_offer(top, &n, 3, (rc_hit){8, 0.1f});
    ASSERT_EQ(n, 3);
    ASSERT_EQ(top[0].row, 4);
    ASSERT_EQ(top[1].row, 5);
    ASSERT_EQ(top[2].row, 6);
    rc_hit_offer(top, &n, 3, (rc_hit){2, 0.1f});
    ASSERT_EQ(top[1].row, 2);
    ASSERT_EQ(top[2].row, 5);

    /* Against a full sort, with many ties, for every k up to 8 and beyond the
     * number offered. */
    uint64_t rng = 12345;
    for (int round = 0; round < 200; round++) {
        rc_hit all[12];
        uint32_t m = 1 + round % 12, k = 1 + (uint32_t)(round / 12) % 8;
        for (uint32_t i = 0; i < m; i++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            all[i] = (rc_hit){(uint32_t)(rng >> 33) % 16, (float)((rng >> 20) % 3) * 0.5f};
        }
        n = 0;
        for (uint32_t i = 0; i < m; i++)
            rc_hit_offer(top, &n, k, all[i]);
        qsort(all, m, sizeof *all, hit_order);
        ASSERT_EQ(n, RC_MIN(m, k));
        for (uint32_t i = 0; i < n; i++) {
            ASSERT_EQ(top[i].row, all[i].row);
            ASSERT_DBL_OP(top[i].score, ==, all[i].score);
        }
    }
}

/* recall.popularity_weight: every recall ranks by the cosine plus w x ln(1 +
 * clicks), the index's and the brute-force one alike, and reports that sum;
 * rc_recall_search_cos (the `similar` op) keeps the cosine. Item a is nearer
 * the query (cosine .80 against .78), b has 100 clicks to a's 1: b leads with
 * w = .05 (.78 + .05 ln 101 = 1.011 against .80 + .05 ln 2 = .835), a with
 * w = 0. */
TEST(recall_popularity_term_reranks_by_clicks)
{
    rc_table_opts to = {.dim = 8, .seed = 3};
    char err[256];
    rc_table *t = NULL;
    rc_index *ix = NULL;
    ASSERT_EQ(rc_table_create(&to, &t, err, sizeof err), 0);
    rc_index_opts io = {.ivf_min = 256, .no_background = 1};
    ASSERT_EQ(rc_index_create(&io, t, &ix, err, sizeof err), 0);
    uint32_t city, cate;
    ASSERT_EQ(rc_table_city_id(t, "c", 1, &city), 0);
    ASSERT_EQ(rc_table_cate_id(t, "k", 1, &cate), 0);
    const float vec[3][8] = {{0.8f, 0.6f}, {0.78f, 0, 0.6258f}, {0.2f, 0, 0, 0.9798f}};
    const uint32_t clicks[3] = {1, 100, 1000};
    for (uint32_t i = 0; i < 3; i++) {
        char id[2] = {(char)('a' + i), 0};
        uint32_t row;
        int created;
        ASSERT_EQ(rc_table_upsert(t, id, 1, city, cate, NULL, 0, &row, &created), 0);
        ASSERT_EQ(row, i);
        memcpy(rc_table_in(t, row), vec[i], sizeof vec[i]);
        rc_table_count_add(t, row, clicks[i]);
        rc_index_touch(ix, row);
    }
    ASSERT_GE(rc_index_flush(ix, 0, err, sizeof err), 0);
    const float q[8] = {1};
    rc_hit h[3];
    uint32_t n = 0;
    ASSERT(rc_table_pop_weight(t) == 0); /* a new table: the cosine alone */
    for (int exact = 0; exact < 2; exact++) {
        for (int w = 0; w < 2; w++) {
            rc_table_set_pop_weight(t, w ? 0.05f : 0);
            ASSERT_EQ(exact ? rc_recall_exact(t, q, 2, 3, NULL, NULL, 0, h, &n)
                            : rc_recall_search(t, ix, q, 2, 3, NULL, NULL, 0, h, &n),
                      0);
            ASSERT_EQ(n, 2);
            ASSERT_EQ(h[0].row, w ? 1u : 0u);
            ASSERT_EQ(h[1].row, w ? 0u : 1u);
            for (uint32_t i = 0; i < n; i++) {
                float want = vec[h[i].row][0] + (w ? 0.05f * log1pf((float)clicks[h[i].row]) : 0);
                ASSERT_NEAR(h[i].score, want, 1e-3);
                ASSERT_NEAR(rc_recall_score(t, h[i].row, q), want, 1e-3);
            }
        }
        /* Item c (cosine .2, 1,000 clicks) scores .2 + .345: below b, and it
         * is not among the candidates of k = 1 x over-fetch 2 anyway. */
        ASSERT_EQ(exact ? rc_recall_exact(t, q, 1, 2, NULL, NULL, 0, h, &n)
                        : rc_recall_search(t, ix, q, 1, 2, NULL, NULL, 0, h, &n),
                  0);
        ASSERT_EQ(n, 1);
        ASSERT_EQ(h[0].row, 1u);
    }
    ASSERT_EQ(rc_recall_search_cos(t, ix, q, 2, 3, NULL, NULL, 0, h, &n), 0);
    ASSERT_EQ(n, 2);
    ASSERT_EQ(h[0].row, 0u); /* the weight is set: similar ignores it */
    ASSERT_NEAR(h[0].score, 0.8f, 1e-3);
    rc_index_destroy(ix);
    rc_table_destroy(t);
}
