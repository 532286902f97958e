#include <math.h>

#include "recalld/common.h"
#include "recalld/sampler.h"
#include "recalld/sgns.h"
#include "recalld/table.h"
#include "recalld/vec.h"
#include "test.h"

#define NCOMM  20
#define PER    25
#define NITEMS (NCOMM * PER)
#define DIM    32

struct corpus {
    rc_table *t;
    rc_sampler *s;
    uint32_t row[NITEMS]; /* item i is in community i / PER */
};

/* Items are created up front with no context, in shuffled order, and their
 * categories cut across communities, so the cold-start vectors carry no
 * community signal: anything found later comes from training. */
static void corpus_init(struct corpus *c, rc_rng *rng)
{
    rc_table_opts to = {.dim = DIM, .seed = 9};
    ASSERT_EQ(rc_table_create(&to, &c->t, NULL, 0), 0);
    uint32_t city[2], cate[4];
    ASSERT_EQ(rc_table_city_id(c->t, "c0", 2, &city[0]), 0);
    ASSERT_EQ(rc_table_city_id(c->t, "c1", 2, &city[1]), 0);
    for (int k = 0; k < 4; k++) {
        char n[3] = {'k', (char)('0' + k), 0};
        ASSERT_EQ(rc_table_cate_id(c->t, n, 2, &cate[k]), 0);
    }
    uint32_t order[NITEMS];
    for (uint32_t i = 0; i < NITEMS; i++)
        order[i] = i;
    for (uint32_t i = NITEMS - 1; i > 0; i--) {
        uint32_t j = rc_rng_below(rng, i + 1), x = order[i];
        order[i] = order[j];
        order[j] = x;
    }
    for (uint32_t n = 0; n < NITEMS; n++) {
        uint32_t i = order[n], comm = i / PER;
        char id[16];
        snprintf(id, sizeof(id), "i%u", i);
        int created;
        ASSERT_EQ(rc_table_upsert(c->t, id, strlen(id), city[comm % 2], cate[rc_rng_below(rng, 4)],
                                  NULL, 0, &c->row[i], &created),
                  0);
    }
    ASSERT_EQ(rc_sampler_create(NULL, c->t, &c->s, NULL, 0), 0);
}

static double avg_loss(const rc_sgns_work *w, double *loss0, uint64_t *pairs0)
{
    double l = (w->loss_sum - *loss0) / (double)(w->pairs - *pairs0);
    *loss0 = w->loss_sum;
    *pairs0 = w->pairs;
    return l;
}

/* Streams sessions of 8 clicks inside one community; returns loss per pair in
 * the first and the last tenth of the stream. */
static void train(struct corpus *c, rc_rng *rng, const rc_sgns_opts *o, double *first, double *last)
{
    rc_sgns_work w;
    ASSERT_EQ(rc_sgns_work_init(&w, DIM), 0);
    const int sessions = 6000;
    double l0 = 0;
    uint64_t p0 = 0;
    for (int s = 0; s < sessions; s++) {
        uint32_t comm = rc_rng_below(rng, NCOMM), ctx[8], n = 0;
        for (int k = 0; k < 8; k++) {
            uint32_t r = c->row[comm * PER + rc_rng_below(rng, PER)];
            rc_table_count_add(c->t, r, 1);
            rc_sampler_note(c->s, r);
            rc_sgns_click(c->t, c->s, rng, o, 0.025f, r, ctx, n, rc_table_total_count(c->t), &w);
            ctx[n++] = r;
        }
        if (s % 200 == 0)
            rc_sampler_maintain(c->s);
        if (s == sessions / 10 - 1)
            *first = avg_loss(&w, &l0, &p0);
        if (s == sessions - sessions / 10 - 1)
            avg_loss(&w, &l0, &p0);
    }
    *last = avg_loss(&w, &l0, &p0);
    rc_sgns_work_free(&w);
}

/* Share of each item's 5 nearest neighbours (cosine, input vectors) that are
 * in its community. */
static double purity(const struct corpus *c)
{
    static float v[NITEMS][DIM];
    for (int i = 0; i < NITEMS; i++) {
        memcpy(v[i], rc_table_in(c->t, c->row[i]), sizeof(v[i]));
        rc_vec_normalize(v[i], DIM);
    }
    int good = 0;
    for (int i = 0; i < NITEMS; i++) {
        float best[5] = {-2, -2, -2, -2, -2};
        int who[5] = {0};
        for (int j = 0; j < NITEMS; j++) {
            if (j == i)
                continue;
            float d = rc_vec_dot(v[i], v[j], DIM);
            int k = 4;
            if (d <= best[k])
                continue;
            while (k > 0 && d > best[k - 1]) {
                best[k] = best[k - 1];
                who[k] = who[k - 1];
                k--;
            }
            best[k] = d;
            who[k] = j;
        }
        for (int k = 0; k < 5; k++)
            good += who[k] / PER == i / PER;
    }
    return (double)good / (NITEMS * 5);
}

static void run_mode(enum rc_sgns_mode mode)
{
    rc_rng rng;
    rc_rng_seed(&rng, 77);
    struct corpus c;
    corpus_init(&c, &rng);
    double before = purity(&c);
    rc_sgns_opts o = {.mode = mode, .window = 5, .negatives = 5, .hard_share = 0.2f};
    double first = 0, last = 0;
    train(&c, &rng, &o, &first, &last);
    double after = purity(&c);
    printf("mode %d: purity %.3f -> %.3f, loss/pair %.3f -> %.3f\n", (int)mode, before, after,
           first, last);
    ASSERT_DBL_OP(before, <, 0.3);
    ASSERT_DBL_OP(after, >, 0.8);
    ASSERT_DBL_OP(last, <, first * 0.8);
    rc_sampler_destroy(c.s);
    rc_table_destroy(c.t);
}

TEST(sgns_skipgram_learns_communities) { run_mode(RC_SGNS_SKIPGRAM); }

TEST(sgns_cbow_learns_communities) { run_mode(RC_SGNS_CBOW); }

TEST(sgns_pair_moves_input_toward_positive)
{
    rc_table_opts to = {.dim = 16, .seed = 1};
    rc_table *t;
    ASSERT_EQ(rc_table_create(&to, &t, NULL, 0), 0);
    uint32_t c, k, a, b;
    int cr;
    ASSERT_EQ(rc_table_city_id(t, "c", 1, &c), 0);
    ASSERT_EQ(rc_table_cate_id(t, "k", 1, &k), 0);
    ASSERT_EQ(rc_table_upsert(t, "a", 1, c, k, NULL, 0, &a, &cr), 0);
    ASSERT_EQ(rc_table_upsert(t, "b", 1, c, k, NULL, 0, &b, &cr), 0);
    rc_sgns_work w;
    ASSERT_EQ(rc_sgns_work_init(&w, 16), 0);
    rc_rng rng;
    rc_rng_seed(&rng, 1);
    rc_sgns_opts o = {.mode = RC_SGNS_SKIPGRAM};
    /* Without a sampler: positives only. Output starts at zero, so the first
     * step's loss is log 2 and moves b's output along a's input. */
    float *in = rc_table_in(t, a), *out = rc_table_out(t, b);
    float loss = rc_sgns_pair(t, NULL, &rng, &o, 0.5f, in, w.grad, b, &w);
    memset(w.grad, 0, 16 * sizeof(float));
    ASSERT_NEAR(loss, log(2.0), 1e-3);
    ASSERT_DBL_OP(rc_vec_dot(in, out, 16), >, 0);
    for (int i = 0; i < 200; i++) {
        ASSERT_EQ(rc_sgns_click(t, NULL, &rng, &o, 0.1f, b, &a, 1, 0, &w), 2);
    }
    ASSERT_DBL_OP(rc_sigmoid(rc_vec_dot(rc_table_in(t, a), rc_table_out(t, b), 16)), >, 0.9);
    ASSERT_DBL_OP(rc_sigmoid(rc_vec_dot(rc_table_in(t, b), rc_table_out(t, a), 16)), >, 0.9);
    /* Same item as context is skipped; so is everything with no context. */
    ASSERT_EQ(rc_sgns_click(t, NULL, &rng, &o, 0.1f, b, &b, 1, 0, &w), 0);
    ASSERT_EQ(rc_sgns_click(t, NULL, &rng, &o, 0.1f, b, NULL, 0, 0, &w), 0);
    rc_sgns_work_free(&w);
    rc_table_destroy(t);
}

TEST(sgns_subsampling_skips_frequent_context)
{
    rc_table_opts to = {.dim = 8, .seed = 1};
    rc_table *t;
    ASSERT_EQ(rc_table_create(&to, &t, NULL, 0), 0);
    uint32_t c, k, hot, cold, center;
    int cr;
    ASSERT_EQ(rc_table_city_id(t, "c", 1, &c), 0);
    ASSERT_EQ(rc_table_cate_id(t, "k", 1, &k), 0);
    ASSERT_EQ(rc_table_upsert(t, "hot", 3, c, k, NULL, 0, &hot, &cr), 0);
    ASSERT_EQ(rc_table_upsert(t, "cold", 4, c, k, NULL, 0, &cold, &cr), 0);
    ASSERT_EQ(rc_table_upsert(t, "x", 1, c, k, NULL, 0, &center, &cr), 0);
    rc_table_count_add(t, hot, 1000000);
    rc_table_count_add(t, cold, 1);
    rc_sgns_work w;
    ASSERT_EQ(rc_sgns_work_init(&w, 8), 0);
    rc_rng rng;
    rc_rng_seed(&rng, 2);
    rc_sgns_opts o = {.subsample = 1e-3f};
    uint64_t total = 1000001;
    uint32_t hot_pairs = 0, cold_pairs = 0;
    for (int i = 0; i < 2000; i++) {
        hot_pairs += rc_sgns_click(t, NULL, &rng, &o, 0.001f, center, &hot, 1, total, &w);
        cold_pairs += rc_sgns_click(t, NULL, &rng, &o, 0.001f, center, &cold, 1, total, &w);
    }
    /* hot: f ~ 1, keep p = (sqrt(1000) + 1) / 1000 ~ 0.033. */
    ASSERT_EQ(cold_pairs, 4000);
    ASSERT_GT(hot_pairs, 2 * 2000 * 0.02);
    ASSERT_LT(hot_pairs, 2 * 2000 * 0.05);
    rc_sgns_work_free(&w);
    rc_table_destroy(t);
}
