/* train: the batch trainer recovers the communities planted by rc_gen
 * (neighbour purity measured against chance), in skip-gram and CBOW with two
 * threads; determinism, session masks, min-count, options, the time limit,
 * and the sampler's read-only draw used by the threads. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "recalld/clicklog.h"
#include "recalld/common.h"
#include "recalld/gen.h"
#include "recalld/sampler.h"
#include "recalld/train.h"
#include "recalld/vec.h"
#include "test.h"

#define GEN_ITEMS  600
#define GEN_COMMS  12
#define GEN_EVENTS 40000

static rc_gen_opts gen_opts(uint64_t seed)
{
    return (rc_gen_opts){.seed = seed,
                         .events = GEN_EVENTS,
                         .users = 1500,
                         .items = GEN_ITEMS,
                         .cities = 4,
                         .cates = 4,
                         .communities = GEN_COMMS,
                         .flags = RC_GEN_NO_DEVICE | RC_GEN_NO_TAGS};
}

/* Writes the generator's log as JSON lines; returns the path. */
static const char *gen_log(uint64_t seed, rc_gen **gout)
{
    static char path[2][128];
    static int k;
    k ^= 1;
    snprintf(path[k], sizeof path[k], "/tmp/rc_train_%d_%llu.jsonl", (int)getpid(),
             (unsigned long long)seed);
    rc_gen_opts o = gen_opts(seed);
    rc_gen *g = NULL;
    char err[256], line[RC_GEN_LINE_MAX];
    size_t len;
    ASSERT_EQ(rc_gen_create(&o, &g, err, sizeof err), 0);
    FILE *f = fopen(path[k], "w");
    ASSERT(f != NULL);
    while (rc_gen_next(g, line, sizeof line, &len, NULL) == 0) {
        fwrite(line, 1, len, f);
        fputc('\n', f);
    }
    ASSERT_EQ(fclose(f), 0);
    *gout = g;
    return path[k];
}

static rc_clicklog *load(const char *path)
{
    rc_clicklog_opts o = {.path = path, .quiet = 1};
    rc_clicklog *log = NULL;
    char err[256];
    int rc = rc_clicklog_load(&o, &log, err, sizeof err);
    if (rc)
        RC__FAIL("load: %s", err);
    return log;
}

static rc_table *train(const rc_clicklog *log, rc_train_opts o, const uint8_t *mask,
                       rc_train_result *res)
{
    rc_table *t = NULL;
    char err[256];
    o.quiet = 1;
    o.progress = -1;
    int rc = rc_train_run(&o, log, mask, &t, res, err, sizeof err);
    if (rc)
        RC__FAIL("train: %d %s", rc, err);
    return t;
}

/* Share of the k nearest neighbours (cosine of input vectors) of each item
 * with >= 5 clicks that lie in the item's own community; *chance gets the
 * same share for k items drawn at random (the community sizes' average). */
static double purity(const rc_table *t, const rc_gen *g, uint32_t k, double *chance)
{
    uint32_t n = rc_table_size(t), dim = rc_table_dim(t);
    float *v = malloc((size_t)n * dim * sizeof(float));
    uint32_t *comm = malloc(n * sizeof(uint32_t)), *csize = calloc(GEN_COMMS, sizeof(uint32_t));
    for (uint32_t r = 0; r < n; r++) {
        size_t len;
        const char *id = rc_table_item_id(t, r, &len);
        rc_gen_item it;
        ASSERT_EQ(rc_gen_item_truth(g, id, len, &it), 0);
        comm[r] = it.community;
        csize[it.community]++;
        memcpy(v + (size_t)r * dim, rc_table_in(t, r), dim * sizeof(float));
        rc_vec_normalize(v + (size_t)r * dim, dim);
    }
    double same = 0, total = 0, ch = 0;
    float *best = malloc(k * sizeof(float));
    uint32_t *bi = malloc(k * sizeof(uint32_t));
    for (uint32_t r = 0; r < n; r++) {
        if (rc_table_count(t, r) < 5)
            continue;
        uint32_t m = 0;
        for (uint32_t o = 0; o < n; o++) {
            if (o == r)
                continue;
            float s = rc_vec_dot(v + (size_t)r * dim, v + (size_t)o * dim, dim);
            uint32_t j = m < k ? m++ : k;
            if (j == k && s <= best[k - 1])
                continue;
            j = RC_MIN(j, k - 1);
            while (j > 0 && best[j - 1] < s) {
                best[j] = best[j - 1];
                bi[j] = bi[j - 1];
                j--;
            }
            best[j] = s;
            bi[j] = o;
        }
        for (uint32_t j = 0; j < m; j++)
            same += comm[bi[j]] == comm[r];
        total += m;
        ch += (double)(csize[comm[r]] - 1) / (double)(n - 1) * m;
    }
    free(best);
    free(bi);
    free(v);
    free(comm);
    free(csize);
    *chance = ch / total;
    return same / total;
}

static void communities_case(enum rc_sgns_mode mode)
{
    rc_gen *g = NULL;
    const char *path = gen_log(11, &g);
    rc_clicklog *log = load(path);
    rc_train_result res;
    rc_table *t =
        train(log, (rc_train_opts){.mode = mode, .threads = 2, .epochs = 5, .seed = 3}, NULL, &res);
    double chance, p = purity(t, g, 10, &chance);
    printf("%s: purity@10 %.3f (chance %.3f), %u items, %llu clicks, %llu pairs, loss %.3f\n",
           mode == RC_SGNS_CBOW ? "cbow" : "skipgram", p, chance, res.items,
           (unsigned long long)res.clicks, (unsigned long long)res.pairs, res.loss);
    ASSERT_EQ(res.threads, 2);
    uint64_t corpus = 0; /* clicks of sessions with >= 2 clicks (min_count 1) */
    for (uint32_t s = 0; s < log->nsessions; s++)
        if (log->sess_off[s + 1] - log->sess_off[s] >= 2)
            corpus += log->sess_off[s + 1] - log->sess_off[s];
    ASSERT_EQ(res.clicks, 5 * corpus);
    ASSERT_GT(res.pairs, res.clicks / 2);
    ASSERT(res.loss > 0 && res.loss < 4);
    ASSERT_GT(res.items, GEN_ITEMS * 9 / 10);
    ASSERT_DBL_OP(chance, <, 0.15);
    ASSERT_DBL_OP(p, >, 0.75);
    rc_table_destroy(t);
    rc_clicklog_free(log);
    rc_gen_destroy(g);
    unlink(path);
}

TEST(train_skipgram_recovers_communities) { communities_case(RC_SGNS_SKIPGRAM); }

TEST(train_cbow_recovers_communities) { communities_case(RC_SGNS_CBOW); }

/* An untrained table (epochs of no effect) has chance purity: the measure can fail. */
TEST(train_purity_of_untrained_is_chance)
{
    rc_gen *g = NULL;
    const char *path = gen_log(12, &g);
    rc_clicklog *log = load(path);
    rc_train_result res;
    rc_table *t = train(log, (rc_train_opts){.threads = 1, .epochs = 1, .lr = 1e-7f}, NULL, &res);
    double chance, p = purity(t, g, 10, &chance);
    printf("untrained purity %.3f chance %.3f\n", p, chance);
    ASSERT_DBL_OP(p, <, chance + 0.1);
    rc_table_destroy(t);
    rc_clicklog_free(log);
    rc_gen_destroy(g);
    unlink(path);
}

TEST(train_single_thread_is_deterministic)
{
    rc_gen *g = NULL;
    const char *path = gen_log(13, &g);
    rc_clicklog *log = load(path);
    rc_train_opts o = {.threads = 1, .epochs = 2, .seed = 42, .subsample = 1e-3f};
    rc_table *a = train(log, o, NULL, NULL), *b = train(log, o, NULL, NULL);
    o.seed = 43;
    rc_table *c = train(log, o, NULL, NULL);
    uint32_t n = rc_table_size(a), dim = rc_table_dim(a), differ = 0;
    ASSERT_EQ(rc_table_size(b), n);
    for (uint32_t r = 0; r < n; r++) {
        ASSERT_EQ(memcmp(rc_table_in(a, r), rc_table_in(b, r), dim * sizeof(float)), 0);
        ASSERT_EQ(memcmp(rc_table_out(a, r), rc_table_out(b, r), dim * sizeof(float)), 0);
        differ += memcmp(rc_table_in(a, r), rc_table_in(c, r), dim * sizeof(float)) != 0;
    }
    ASSERT_GT(differ, n / 2);
    rc_table_destroy(a);
    rc_table_destroy(b);
    rc_table_destroy(c);
    rc_clicklog_free(log);
    rc_gen_destroy(g);
    unlink(path);
}

/* Max |a - b| over dim floats. */
static float max_diff(const float *a, const float *b, uint32_t dim)
{
    float m = 0;
    for (uint32_t d = 0; d < dim; d++)
        m = fmaxf(m, fabsf(a[d] - b[d]));
    return m;
}

/* rc_train_opts.init (stream-daily-live's rebuild): rows whose item id the
 * init table holds start from its input and output vectors, the others from
 * the usual random start. At a learning rate of 1e-8 one epoch leaves every
 * vector within a few thousandths of its start (a's rows are ~0.5 a component,
 * the random start ~0.008), so both are visible. */
TEST(train_init_starts_from_a_table)
{
    rc_gen *g = NULL;
    const char *path = gen_log(17, &g);
    rc_clicklog *log = load(path);
    /* a: the rows of items with >= 60 clicks only, trained normally */
    rc_table *a = train(log, (rc_train_opts){.threads = 1, .epochs = 2, .seed = 5, .min_count = 60},
                        NULL, NULL);
    rc_train_opts o = {.threads = 1, .epochs = 1, .seed = 9, .lr = 1e-8f};
    rc_table *cold = train(log, o, NULL, NULL);
    o.init = a;
    rc_table *warm = train(log, o, NULL, NULL);
    uint32_t n = rc_table_size(warm), dim = rc_table_dim(warm), from_a = 0, fresh = 0;
    ASSERT_EQ(rc_table_size(cold), n);
    ASSERT_LT(rc_table_size(a), n);
    for (uint32_t r = 0; r < n; r++) {
        size_t len;
        const char *id = rc_table_item_id(warm, r, &len);
        uint32_t ra, rc;
        ASSERT_EQ(rc_table_find(cold, id, len, &rc), 0);
        if (rc_table_find(a, id, len, &ra) == 0) {
            /* a's vectors, not the random start */
            ASSERT_DBL_OP(max_diff(rc_table_in(warm, r), rc_table_in(a, ra), dim), <, 5e-3f);
            ASSERT_DBL_OP(max_diff(rc_table_out(warm, r), rc_table_out(a, ra), dim), <, 5e-3f);
            ASSERT_DBL_OP(max_diff(rc_table_in(warm, r), rc_table_in(cold, rc), dim), >, 5e-2f);
            from_a++;
        } else {
            ASSERT_DBL_OP(max_diff(rc_table_in(warm, r), rc_table_in(cold, rc), dim), <, 5e-3f);
            fresh++;
        }
    }
    ASSERT_GT(from_a, 10u);
    ASSERT_GT(fresh, 10u);
    rc_table_destroy(a);
    rc_table_destroy(cold);
    rc_table_destroy(warm);
    rc_clicklog_free(log);
    rc_gen_destroy(g);
    unlink(path);
}

TEST(train_mask_and_min_count)
{
    rc_gen *g = NULL;
    const char *path = gen_log(14, &g);
    rc_clicklog *log = load(path);
    uint32_t nitems = rc_dict_size(log->items), ns = log->nsessions;
    uint8_t *mask = calloc(ns, 1);
    for (uint32_t s = 0; s < ns / 2; s++)
        mask[s] = 1;
    const uint32_t minc = 20;
    /* Expected by hand: clicks per item in the first half, then the items
     * of its sessions that keep >= 2 clicks of items with >= minc. */
    uint32_t *cnt = calloc(nitems, sizeof(uint32_t));
    uint8_t *want = calloc(nitems, 1);
    for (size_t i = 0; i < log->sess_off[ns / 2]; i++)
        cnt[log->recs[i].item]++;
    uint32_t nwant = 0, nsess = 0;
    for (uint32_t s = 0; s < ns / 2; s++) {
        uint32_t kept = 0;
        for (size_t i = log->sess_off[s]; i < log->sess_off[s + 1]; i++)
            kept += cnt[log->recs[i].item] >= minc;
        if (kept < 2)
            continue;
        nsess++;
        for (size_t i = log->sess_off[s]; i < log->sess_off[s + 1]; i++)
            if (cnt[log->recs[i].item] >= minc && !want[log->recs[i].item]) {
                want[log->recs[i].item] = 1;
                nwant++;
            }
    }
    rc_train_result res;
    rc_table *t =
        train(log, (rc_train_opts){.threads = 2, .epochs = 1, .min_count = minc}, mask, &res);
    ASSERT_GT(nwant, 10);
    ASSERT_LT(nwant, nitems);
    ASSERT_EQ(rc_table_size(t), nwant);
    ASSERT_EQ(res.items, nwant);
    ASSERT_EQ(res.sessions, nsess);
    uint32_t *rows = malloc(nitems * sizeof(uint32_t));
    rc_train_item_rows(log, t, rows);
    uint32_t prev = 0;
    for (uint32_t i = 0; i < nitems; i++) {
        ASSERT_EQ(rows[i] != UINT32_MAX, want[i]);
        if (rows[i] == UINT32_MAX)
            continue;
        ASSERT_EQ(rc_table_count(t, rows[i]), cnt[i]);
        ASSERT(rows[i] == 0 || rows[i] > prev); /* rows in item id order */
        prev = rows[i];
        /* The item's city and category come from the log. */
        size_t len;
        rc_gen_item truth;
        const char *id = rc_table_item_id(t, rows[i], &len);
        ASSERT_EQ(rc_gen_item_truth(g, id, len, &truth), 0);
        char city[16];
        snprintf(city, sizeof city, "c%u", truth.city);
        ASSERT_STREQ(rc_table_city_name(t, rc_table_city(t, rows[i])), city);
    }
    free(rows);
    free(cnt);
    free(want);
    free(mask);
    rc_table_destroy(t);
    rc_clicklog_free(log);
    rc_gen_destroy(g);
    unlink(path);
}

TEST(train_hard_negatives_and_global)
{
    rc_gen *g = NULL;
    const char *path = gen_log(15, &g);
    rc_clicklog *log = load(path);
    ASSERT(log->has_city && log->has_cate);
    rc_train_opts variants[] = {
        {.threads = 2, .hard_share = 0.4f, .negatives = 8},
        {.threads = 2, .global_negatives = 1, .power = 0.5f, .window = 3},
    };
    for (size_t i = 0; i < RC_ARRAY_LEN(variants); i++) {
        rc_table *t = train(log, variants[i], NULL, NULL);
        double chance, p = purity(t, g, 10, &chance);
        printf("variant %zu: purity %.3f chance %.3f\n", i, p, chance);
        ASSERT_DBL_OP(p, >, 0.6);
        rc_table_destroy(t);
    }
    rc_clicklog_free(log);
    rc_gen_destroy(g);
    unlink(path);
}

TEST(train_options_and_time_limit)
{
    rc_gen *g = NULL;
    const char *path = gen_log(16, &g);
    rc_clicklog *log = load(path);
    rc_table *t = NULL;
    char err[256] = "";
    rc_train_opts bad[] = {{.window = 33},    {.negatives = 65}, {.dim = 12},
                           {.hard_share = 2}, {.subsample = -1}, {.mode = (enum rc_sgns_mode)7},
                           {.cate_prior = -1}};
    for (size_t i = 0; i < RC_ARRAY_LEN(bad); i++) {
        bad[i].quiet = 1;
        ASSERT_EQ(rc_train_run(&bad[i], log, NULL, &t, NULL, err, sizeof err), RC_EINVAL);
        ASSERT(t == NULL);
        ASSERT(strncmp(err, "train: ", 7) == 0);
    }
    uint8_t *none = calloc(log->nsessions, 1);
    rc_train_opts q = {.quiet = 1};
    ASSERT_EQ(rc_train_run(&q, log, none, &t, NULL, err, sizeof err), RC_EINVAL);
    ASSERT(strstr(err, "no session") != NULL);
    free(none);
    /* A tiny time budget: stopped after the first sync, vectors kept. */
    rc_train_result res;
    t = train(log, (rc_train_opts){.threads = 1, .epochs = 50, .max_seconds = 1e-6}, NULL, &res);
    ASSERT_EQ(res.stopped, 1);
    ASSERT_LT(res.clicks, (uint64_t)log->n);
    ASSERT_GT(rc_table_size(t), 0);
    char line[256];
    rc_train_summary(&(rc_train_opts){.epochs = 50}, &res, line, sizeof line);
    ASSERT(strstr(line, "stopped") != NULL);
    rc_table_destroy(t);
    rc_clicklog_free(log);
    rc_gen_destroy(g);
    unlink(path);
}

/* --cate-prior K: each trained input vector v of an item with n clicks ends
 * as (n v + K m) / (n + K), m its category's click-weighted mean of the plain
 * run's vectors; the output vectors are the plain run's. A rare item moves
 * most (toward m), a frequent one barely. */
TEST(train_cate_prior_pulls_rare_items_to_their_category)
{
    rc_gen *g = NULL;
    const char *path = gen_log(17, &g);
    rc_clicklog *log = load(path);
    ASSERT(log->has_cate);
    rc_train_opts o = {.threads = 1, .epochs = 2, .seed = 5};
    rc_table *plain = train(log, o, NULL, NULL);
    o.cate_prior = 4;
    rc_table *pri = train(log, o, NULL, NULL);
    uint32_t n = rc_table_size(plain), dim = rc_table_dim(plain), nc = rc_table_ncates(plain);
    ASSERT_EQ(rc_table_size(pri), n);
    double *m = calloc((size_t)nc * dim, sizeof *m), *w = calloc(nc, sizeof *w);
    for (uint32_t r = 0; r < n; r++) {
        uint32_t c = rc_table_cate(plain, r);
        for (uint32_t d = 0; d < dim; d++)
            m[(size_t)c * dim + d] += rc_table_count(plain, r) * (double)rc_table_in(plain, r)[d];
        w[c] += rc_table_count(plain, r);
    }
    double moved_rare = 0, moved_freq = 0;
    uint32_t rare = 0, freq = 0;
    for (uint32_t r = 0; r < n; r++) {
        uint32_t c = rc_table_cate(plain, r);
        double k = rc_table_count(plain, r), moved = 0;
        ASSERT_EQ(memcmp(rc_table_out(plain, r), rc_table_out(pri, r), dim * sizeof(float)), 0);
        for (uint32_t d = 0; d < dim; d++) {
            double v = rc_table_in(plain, r)[d];
            double want = (k * v + 4 * m[(size_t)c * dim + d] / w[c]) / (k + 4);
            ASSERT_DBL_OP(fabs(rc_table_in(pri, r)[d] - want), <, 1e-5);
            moved += fabs(rc_table_in(pri, r)[d] - v);
        }
        if (k <= 2) {
            moved_rare += moved;
            rare++;
        } else if (k >= 40) {
            moved_freq += moved;
            freq++;
        }
    }
    ASSERT(rare > 0 && freq > 0);
    ASSERT_DBL_OP(moved_rare / rare, >, 3 * moved_freq / freq);
    free(m);
    free(w);
    rc_table_destroy(plain);
    rc_table_destroy(pri);
    rc_clicklog_free(log);
    rc_gen_destroy(g);
    unlink(path);
}

/* The threads' read-only draw is the same draw as the writer's, minus stats. */
TEST(train_sampler_shared_draw_matches)
{
    rc_table_opts to = {.dim = 8};
    rc_table *t = NULL;
    ASSERT_EQ(rc_table_create(&to, &t, NULL, 0), 0);
    for (uint32_t i = 0; i < 400; i++) {
        char id[16];
        uint32_t city, cate, row;
        char cs[8], ks[8];
        snprintf(cs, sizeof cs, "c%u", i % 3);
        snprintf(ks, sizeof ks, "k%u", i % 5);
        ASSERT_EQ(rc_table_city_id(t, cs, strlen(cs), &city), 0);
        ASSERT_EQ(rc_table_cate_id(t, ks, strlen(ks), &cate), 0);
        snprintf(id, sizeof id, "i%u", i);
        ASSERT_EQ(rc_table_upsert(t, id, strlen(id), city, cate, NULL, 0, &row, NULL), 0);
        rc_table_count_add(t, row, 1 + i % 17);
    }
    rc_sampler *s = NULL;
    ASSERT_EQ(rc_sampler_create(NULL, t, &s, NULL, 0), 0);
    rc_rng a, b;
    rc_rng_seed(&a, 9);
    rc_rng_seed(&b, 9);
    uint32_t x[16], y[16];
    rc_sampler_stats before, after;
    rc_sampler_stats_get(s, &before);
    for (uint32_t i = 0; i < 1000; i++) {
        ASSERT_EQ(rc_sampler_draw_shared(s, &a, i % 400, 0.5f, 16, x), 16);
        ASSERT_EQ(rc_sampler_draw(s, &b, i % 400, 0.5f, 16, y), 16);
        ASSERT_EQ(memcmp(x, y, sizeof x), 0);
    }
    rc_sampler_stats_get(s, &after);
    ASSERT_EQ(after.draws - before.draws, 16000); /* only the writer's draws count */
    ASSERT_EQ(rc_sampler_draw_shared(s, &a, 400, 0.5f, 16, x), 0); /* unknown row */
    rc_sampler_destroy(s);
    rc_table_destroy(t);
}
