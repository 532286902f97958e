#include <math.h>

#include "recalld/common.h"
#include "recalld/sampler.h"
#include "recalld/table.h"
#include "test.h"

static rc_table *mk_table(void)
{
    rc_table_opts o = {.dim = 8, .seed = 5};
    rc_table *t = NULL;
    ASSERT_EQ(rc_table_create(&o, &t, NULL, 0), 0);
    return t;
}

/* Adds n items "<prefix><i>" to city/cate with the given count; returns the first row. */
static uint32_t add_items(rc_table *t, const char *prefix, const char *city, const char *cate,
                          uint32_t n, uint32_t count)
{
    uint32_t c, k, first = UINT32_MAX;
    ASSERT_EQ(rc_table_city_id(t, city, strlen(city), &c), 0);
    ASSERT_EQ(rc_table_cate_id(t, cate, strlen(cate), &k), 0);
    for (uint32_t i = 0; i < n; i++) {
        char id[64];
        snprintf(id, sizeof(id), "%s%u", prefix, i);
        uint32_t row;
        int created;
        ASSERT_EQ(rc_table_upsert(t, id, strlen(id), c, k, NULL, 0, &row, &created), 0);
        ASSERT_EQ(created, 1);
        rc_table_count_add(t, row, count);
        if (first == UINT32_MAX)
            first = row;
    }
    return first;
}

static rc_sampler *mk_sampler(const rc_table *t, uint32_t min_items)
{
    rc_sampler_opts o = {.min_city_items = min_items};
    rc_sampler *s = NULL;
    ASSERT_EQ(rc_sampler_create(&o, t, &s, NULL, 0), 0);
    return s;
}

TEST(sampler_draws_only_same_city_for_big_city)
{
    rc_table *t = mk_table();
    uint32_t a = add_items(t, "a", "A", "k", 200, 3);
    uint32_t b = add_items(t, "b", "B", "k", 200, 3);
    rc_sampler *s = mk_sampler(t, 50);
    rc_rng rng;
    rc_rng_seed(&rng, 1);
    uint32_t out[16];
    for (int i = 0; i < 5000; i++) {
        uint32_t pos = (i & 1) ? a + (uint32_t)(i % 200) : b + (uint32_t)(i % 200);
        ASSERT_EQ(rc_sampler_draw(s, &rng, pos, 0.0f, 16, out), 16);
        for (int j = 0; j < 16; j++) {
            ASSERT_EQ(rc_table_city(t, out[j]), rc_table_city(t, pos));
            ASSERT_NE(out[j], pos);
        }
    }
    rc_sampler_stats st;
    rc_sampler_stats_get(s, &st);
    ASSERT_EQ(st.cities, 2);
    ASSERT_EQ(st.fallback_draws, 0);
    ASSERT_EQ(st.draws, 5000 * 16);
    rc_sampler_destroy(s);
    rc_table_destroy(t);
}

TEST(sampler_hard_negatives_have_other_category)
{
    rc_table *t = mk_table();
    uint32_t x = add_items(t, "x", "A", "rent", 200, 1);
    add_items(t, "y", "A", "sale", 100, 1);
    add_items(t, "z", "A", "shop", 100, 1);
    add_items(t, "w", "B", "sale", 100, 1);
    rc_sampler *s = mk_sampler(t, 50);
    rc_rng rng;
    rc_rng_seed(&rng, 2);
    uint32_t out[10], other = 0, hard_other = 0;
    for (int i = 0; i < 3000; i++) {
        uint32_t pos = x + (uint32_t)(i % 200);
        /* 0.5 of 10: the first 5 are hard. */
        ASSERT_EQ(rc_sampler_draw(s, &rng, pos, 0.5f, 10, out), 10);
        for (int j = 0; j < 10; j++) {
            ASSERT_EQ(rc_table_city(t, out[j]), rc_table_city(t, pos));
            ASSERT_NE(out[j], pos);
            uint32_t o = rc_table_cate(t, out[j]) != rc_table_cate(t, pos);
            if (j < 5)
                hard_other += o;
            else
                other += o;
        }
    }
    /* Half the city is another category: 8 rejection tries fail 1 in 256. */
    ASSERT_GE(hard_other, 15000 * 99 / 100);
    /* The ordinary share keeps the city distribution: about half. */
    ASSERT_GT(other, 15000 * 45 / 100);
    ASSERT_LT(other, 15000 * 55 / 100);
    rc_sampler_stats st;
    rc_sampler_stats_get(s, &st);
    ASSERT_EQ(st.hard_draws, 3000 * 5);
    rc_sampler_destroy(s);
    rc_table_destroy(t);
}

/* Pearson chi-square of draws for pos over rows [first, first+n) vs count^0.75. */
static double chi_square(rc_table *t, rc_sampler *s, uint32_t first, uint32_t n, uint32_t pos,
                         uint32_t draws)
{
    static uint32_t hist[1000];
    memset(hist, 0, sizeof(hist));
    rc_rng rng;
    rc_rng_seed(&rng, 3);
    uint32_t out[20];
    for (uint32_t i = 0; i < draws / 20; i++) {
        ASSERT_EQ(rc_sampler_draw(s, &rng, pos, 0.0f, 20, out), 20);
        for (int j = 0; j < 20; j++) {
            ASSERT(out[j] >= first && out[j] < first + n);
            hist[out[j] - first]++;
        }
    }
    ASSERT_EQ(hist[pos - first], 0);
    double wsum = 0, chi = 0;
    for (uint32_t i = 0; i < n; i++)
        if (first + i != pos)
            wsum += pow(rc_table_count(t, first + i), 0.75);
    for (uint32_t i = 0; i < n; i++) {
        if (first + i == pos)
            continue;
        double e = draws * pow(rc_table_count(t, first + i), 0.75) / wsum;
        chi += (hist[i] - e) * (hist[i] - e) / e;
    }
    return chi;
}

TEST(sampler_distribution_follows_count_power)
{
    rc_table *t = mk_table();
    uint32_t first = add_items(t, "p", "A", "k", 100, 1);
    for (uint32_t i = 0; i < 100; i++)
        rc_table_count_add(t, first + i, i * i); /* counts 1 .. 9802 */
    rc_sampler *s = mk_sampler(t, 50);
    /* 98 degrees of freedom: mean 98, sd 14; 170 is > 5 sd. */
    double chi = chi_square(t, s, first, 100, first, 400000);
    ASSERT_DBL_OP(chi, <, 170);

    /* Counts change: after note + maintain the table follows the new counts. */
    for (uint32_t i = 0; i < 100; i += 2) {
        rc_table_count_add(t, first + i, 5000);
        rc_sampler_note(s, first + i);
    }
    ASSERT_GE(rc_sampler_maintain(s), 1);
    ASSERT_EQ(rc_sampler_maintain(s), 0);
    chi = chi_square(t, s, first, 100, first + 1, 400000);
    ASSERT_DBL_OP(chi, <, 170);
    rc_sampler_destroy(s);
    rc_table_destroy(t);
}

/* memory.sampler_bytes: per item a 16-byte record, a 4-byte city member and a
 * 16-byte slot in both its city's alias table and the global one - between
 * that and twice it (arrays double), plus a fixed part; no scratch grows with
 * the largest table (the alias method is built in place). */
TEST(sampler_bytes_follow_items)
{
    rc_table *t = mk_table();
    rc_sampler *s = mk_sampler(t, 10);
    rc_sampler_stats st;
    rc_sampler_stats_get(s, &st);
    const uint64_t fixed = st.bytes;
    for (uint32_t round = 1; round <= 3; round++) {
        char p[8];
        snprintf(p, sizeof p, "r%u_", round);
        uint32_t first = add_items(t, p, round == 2 ? "B" : "A", "k", 20000, 3);
        for (uint32_t i = 0; i < 20000; i++)
            rc_sampler_note(s, first + i);
        while (rc_sampler_maintain(s) > 0)
            ;
        rc_sampler_stats_get(s, &st);
        uint64_t n = 20000ull * round, per = 16 + 4 + 16 + 16;
        ASSERT_GE(st.bytes, fixed + n * per);
        ASSERT_LE(st.bytes, fixed + 2 * n * per + 64 * 1024);
        ASSERT_GE(st.cities, round >= 2 ? 2u : 1u);
    }
    rc_sampler_destroy(s);
    rc_table_destroy(t);
}

TEST(sampler_small_city_falls_back_to_global)
{
    rc_table *t = mk_table();
    uint32_t small = add_items(t, "s", "S", "k", 5, 1);
    add_items(t, "b", "B", "k", 300, 1);
    rc_sampler *s = mk_sampler(t, 50);
    rc_rng rng;
    rc_rng_seed(&rng, 4);
    uint32_t out[8], in_big = 0;
    for (int i = 0; i < 1000; i++) {
        ASSERT_EQ(rc_sampler_draw(s, &rng, small, 0.0f, 8, out), 8);
        for (int j = 0; j < 8; j++) {
            ASSERT_NE(out[j], small);
            in_big += rc_table_city(t, out[j]) != rc_table_city(t, small);
        }
    }
    ASSERT_GT(in_big, 7000); /* 300 of 304 candidates are in B */
    /* Hard negatives of a small city still stay in it (other cate impossible here). */
    ASSERT_EQ(rc_sampler_draw(s, &rng, small, 1.0f, 8, out), 8);
    for (int j = 0; j < 8; j++)
        ASSERT_EQ(rc_table_city(t, out[j]), rc_table_city(t, small));
    rc_sampler_stats st;
    rc_sampler_stats_get(s, &st);
    ASSERT_EQ(st.cities, 1);
    ASSERT_EQ(st.fallback_draws, 8000);
    rc_sampler_destroy(s);
    rc_table_destroy(t);
}

TEST(sampler_new_items_drawn_before_rebuild)
{
    rc_table *t = mk_table();
    uint32_t old = add_items(t, "o", "A", "k", 200, 1);
    rc_sampler *s = mk_sampler(t, 50);
    rc_sampler_stats st;
    rc_sampler_stats_get(s, &st);
    uint64_t rebuilds = st.rebuilds;
    uint32_t fresh = add_items(t, "n", "A", "k", 20, 1);
    for (uint32_t i = 0; i < 20; i++)
        rc_sampler_note(s, fresh + i);
    rc_rng rng;
    rc_rng_seed(&rng, 5);
    uint32_t out[10], hits = 0, seen[20] = {0};
    for (int i = 0; i < 4000; i++) {
        ASSERT_EQ(rc_sampler_draw(s, &rng, old, 0.0f, 10, out), 10);
        for (int j = 0; j < 10; j++) {
            if (out[j] >= fresh) {
                hits++;
                seen[out[j] - fresh] = 1;
            }
        }
    }
    rc_sampler_stats_get(s, &st);
    ASSERT_EQ(st.rebuilds, rebuilds);
    /* Equal counts: the 20 new items should get ~20/219 of 40000 draws. */
    ASSERT_GT(hits, 3000);
    ASSERT_LT(hits, 4300);
    for (int i = 0; i < 20; i++)
        ASSERT_EQ(seen[i], 1);
    /* 20 new of 200 built is past the 5% ratio: maintain rebuilds city and global. */
    ASSERT_EQ(rc_sampler_maintain(s), 2);
    rc_sampler_destroy(s);
    rc_table_destroy(t);
}

TEST(sampler_never_returns_pos_unless_alone)
{
    rc_table *t = mk_table();
    rc_sampler *s = mk_sampler(t, 1);
    rc_rng rng;
    rc_rng_seed(&rng, 6);
    uint32_t out[4];
    ASSERT_EQ(rc_sampler_draw(s, &rng, 0, 0.0f, 4, out), 0); /* empty table */
    uint32_t heavy = add_items(t, "h", "A", "k", 1, 1000000);
    rc_sampler_note(s, heavy);
    ASSERT_EQ(rc_sampler_draw(s, &rng, heavy, 0.5f, 4, out), 4);
    for (int j = 0; j < 4; j++)
        ASSERT_EQ(out[j], heavy); /* the only candidate */
    uint32_t light = add_items(t, "l", "A", "k", 1, 1);
    rc_sampler_note(s, light);
    rc_sampler_maintain(s);
    for (int i = 0; i < 1000; i++) {
        ASSERT_EQ(rc_sampler_draw(s, &rng, heavy, 0.5f, 4, out), 4);
        for (int j = 0; j < 4; j++)
            ASSERT_EQ(out[j], light);
    }
    rc_sampler_destroy(s);
    rc_table_destroy(t);
}
