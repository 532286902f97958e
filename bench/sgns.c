/* bench_sgns: single-thread rc_sgns_click throughput, skip-gram, dim 64,
 * window 5, 5 negatives (1 hard), 100k items in 20 cities. Prints clicks/s. */
#include <stdio.h>
#include <stdlib.h>

#include "recalld/common.h"
#include "recalld/sampler.h"
#include "recalld/sgns.h"
#include "recalld/table.h"
#include "recalld/vec.h"

#define NITEMS  100000u
#define NCLICKS 2000000u

static int setup(rc_table **t, rc_sampler **s, rc_rng *rng)
{
    rc_table_opts to = {.dim = 64, .seed = 1};
    char err[128] = "";
    if (rc_table_create(&to, t, err, sizeof(err)))
        return fprintf(stderr, "%s\n", err), 1;
    for (uint32_t i = 0; i < NITEMS; i++) {
        char id[32];
        uint32_t city, cate, row;
        int n = snprintf(id, sizeof(id), "c%u", i % 20), created;
        rc_table_city_id(*t, id, (size_t)n, &city);
        n = snprintf(id, sizeof(id), "k%u", (i / 20) % 10);
        rc_table_cate_id(*t, id, (size_t)n, &cate);
        n = snprintf(id, sizeof(id), "item%u", i);
        if (rc_table_upsert(*t, id, (size_t)n, city, cate, NULL, 0, &row, &created))
            return 1;
        /* Zipf-like counts: a few hot items, a long tail. */
        rc_table_count_add(*t, row, 1 + 100000 / (1 + rc_rng_below(rng, NITEMS)));
    }
    return rc_sampler_create(NULL, *t, s, err, sizeof(err)) ? (fprintf(stderr, "%s\n", err), 1) : 0;
}

int main(void)
{
    rc_rng rng;
    rc_rng_seed(&rng, 42);
    rc_table *t;
    rc_sampler *s;
    if (setup(&t, &s, &rng))
        return 1;
    rc_sgns_work w;
    rc_sgns_work_init(&w, 64);
    rc_sgns_opts o = {.mode = RC_SGNS_SKIPGRAM, .window = 5, .negatives = 5, .hard_share = 0.2f};
    static uint32_t clicks[NCLICKS];
    for (uint32_t i = 0; i < NCLICKS; i++) {
        /* Sessions stay in one city, as users do. */
        uint32_t city = (i / 8) % 20;
        clicks[i] = city + 20 * rc_rng_below(&rng, NITEMS / 20);
    }
    uint64_t pairs = 0, t0 = rc_now_ns();
    for (uint32_t i = 0; i < NCLICKS; i++) {
        uint32_t pos = i % 8, nctx = RC_MIN(pos, 5);
        pairs += rc_sgns_click(t, s, &rng, &o, 0.025f, clicks[i], clicks + i - nctx, nctx,
                               rc_table_total_count(t), &w);
    }
    double sec = (double)(rc_now_ns() - t0) / 1e9;
    printf("sgns_click: %.0f clicks/s (%.2f us/click, %.1f pairs/click, %s, loss/pair %.3f)\n",
           NCLICKS / sec, sec * 1e6 / NCLICKS, (double)pairs / NCLICKS, rc_vec_impl(),
           w.loss_sum / (double)w.pairs);
    rc_sgns_work_free(&w);
    rc_sampler_destroy(s);
    rc_table_destroy(t);
    return 0;
}
