#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "recalld/common.h"
#include "recalld/half.h"
#include "recalld/table.h"
#include "recalld/vec.h"
#include "test.h"

static rc_table *mk(uint32_t dim, uint32_t max, uint32_t chunk_rows)
{
    rc_table_opts o = {.dim = dim, .max_items = max, .seed = 1, .chunk_rows = chunk_rows};
    rc_table *t = NULL;
    char err[128];
    if (rc_table_create(&o, &t, err, sizeof(err)) != 0)
        RC__FAIL("create: %s", err);
    return t;
}

static uint32_t add(rc_table *t, const char *id, uint32_t city, uint32_t cate, const uint32_t *ctx,
                    uint32_t nctx)
{
    uint32_t row;
    int created;
    int rc = rc_table_upsert(t, id, strlen(id), city, cate, ctx, nctx, &row, &created);
    if (rc != 0 || !created)
        RC__FAIL("upsert %s: rc %d created %d", id, rc, created);
    return row;
}

TEST(table_rejects_bad_options)
{
    rc_table *t = NULL;
    rc_table_opts o = {.dim = 12};
    char err[128] = "";
    ASSERT_EQ(rc_table_create(&o, &t, err, sizeof(err)), RC_EINVAL);
    ASSERT(strstr(err, "dim") != NULL);
    o = (rc_table_opts){.chunk_rows = 100};
    ASSERT_EQ(rc_table_create(&o, &t, NULL, 0), RC_EINVAL);
    ASSERT_EQ(rc_table_create(NULL, &t, NULL, 0), 0);
    ASSERT_EQ(rc_table_dim(t), 64);
    rc_table_destroy(t);
    rc_table_destroy(NULL);
}

TEST(table_attrs_ids_counts)
{
    rc_table *t = mk(16, 0, 0);
    uint32_t c0, c1, k0, k1, x;
    ASSERT_EQ(rc_table_city_id(t, "bj", 2, &c0), 0);
    ASSERT_EQ(rc_table_city_id(t, "sh", 2, &c1), 0);
    ASSERT_EQ(rc_table_city_id(t, "bj", 2, &x), 0);
    ASSERT_EQ(x, c0);
    ASSERT_EQ(rc_table_cate_id(t, "rent", 4, &k0), 0);
    ASSERT_EQ(rc_table_cate_id(t, "sale", 4, &k1), 0);
    ASSERT_EQ(rc_table_ncities(t), 2);
    ASSERT_EQ(rc_table_ncates(t), 2);
    ASSERT_STREQ(rc_table_city_name(t, c1), "sh");
    ASSERT_STREQ(rc_table_cate_name(t, k1), "sale");
    ASSERT_EQ(rc_table_find_city(t, "gz", 2, &x), RC_ENOENT);
    ASSERT_EQ(rc_table_find_cate(t, "sale", 4, &x), 0);
    ASSERT_EQ(x, k1);

    uint32_t r = add(t, "i1", c1, k1, NULL, 0), r2;
    int created;
    /* The first city/cate seen wins. */
    ASSERT_EQ(rc_table_upsert(t, "i1", 2, c0, k0, NULL, 0, &r2, &created), 0);
    ASSERT_EQ(created, 0);
    ASSERT_EQ(r2, r);
    ASSERT_EQ(rc_table_city(t, r), c1);
    ASSERT_EQ(rc_table_cate(t, r), k1);
    ASSERT_EQ(rc_table_upsert(t, "i2", 2, 7, k0, NULL, 0, &r2, &created), RC_EINVAL);
    uint32_t bad_ctx = 5;
    ASSERT_EQ(rc_table_upsert(t, "i2", 2, c0, k0, &bad_ctx, 1, &r2, &created), RC_EINVAL);
    ASSERT_EQ(rc_table_find(t, "i2", 2, &r2), RC_ENOENT);
    ASSERT_EQ(rc_table_find(t, "i1", 2, &r2), 0);
    size_t len;
    ASSERT_STREQ(rc_table_item_id(t, r, &len), "i1");
    ASSERT_EQ(len, 2);

    ASSERT_EQ(rc_table_count(t, r), 0);
    rc_table_count_add(t, r, 3);
    rc_table_count_add(t, r, UINT32_MAX);
    ASSERT_EQ(rc_table_count(t, r), UINT32_MAX);
    ASSERT_EQ(rc_table_total_count(t), 3 + (uint64_t)UINT32_MAX);
    const float *o = rc_table_out(t, r);
    for (int k = 0; k < 16; k++)
        ASSERT_EQ(o[k], 0);
    ASSERT_GT(rc_table_bytes(t), 16 * 4 * 2);
    rc_table_destroy(t);
}

/* A table of input vectors only (the two-tower mirror): no output vectors,
 * less memory, the rest unchanged. */
TEST(table_input_only)
{
    rc_table *full, *half;
    char err[256];
    ASSERT_EQ(
        rc_table_create(&(rc_table_opts){.dim = 64, .chunk_rows = 1024}, &full, err, sizeof err),
        0);
    ASSERT_EQ(rc_table_create(&(rc_table_opts){.dim = 64, .chunk_rows = 1024, .input_only = 1},
                              &half, err, sizeof err),
              0);
    uint32_t c, k, r = 0, r2 = 0;
    int created;
    ASSERT_EQ(rc_table_city_id(half, "bj", 2, &c), 0);
    ASSERT_EQ(rc_table_cate_id(half, "rent", 4, &k), 0);
    ASSERT_EQ(rc_table_city_id(full, "bj", 2, &c), 0);
    ASSERT_EQ(rc_table_cate_id(full, "rent", 4, &k), 0);
    for (int i = 0; i < 3000; i++) {
        char id[16];
        int n = snprintf(id, sizeof id, "i%d", i);
        ASSERT_EQ(rc_table_upsert(half, id, (size_t)n, c, k, NULL, 0, &r, &created), 0);
        ASSERT_EQ(rc_table_upsert(full, id, (size_t)n, c, k, NULL, 0, &r2, &created), 0);
        rc_table_prefetch(half, id, (size_t)n, 1);
        rc_table_in(half, r)[0] = (float)i;
    }
    ASSERT(rc_table_out(half, r) == NULL);
    ASSERT(rc_table_out(full, r2) != NULL);
    ASSERT_EQ(rc_table_size(half), 3000);
    ASSERT_EQ(rc_table_city(half, r), c);
    ASSERT_EQ(rc_table_cate(half, r), k);
    ASSERT_DBL_OP(rc_table_in(half, 1234)[0], ==, 1234.0);
    /* 3 chunks of 1024 rows x 64 floats: the output half is 3 x 256 KiB */
    ASSERT_GE(rc_table_bytes(full) - rc_table_bytes(half), 3 * 1024 * 64 * sizeof(float));
    rc_table_destroy(full);
    rc_table_destroy(half);
}

/* A table of numbered rows (no_ids): appends without ids, in order, up to
 * max_items; finds nothing by id; and holds no id dictionary. */
TEST(table_no_ids_numbers_rows)
{
    rc_table *ids, *num;
    char err[256];
    rc_table_opts o = {.dim = 64, .chunk_rows = 1024, .max_items = 3000, .input_only = 1};
    ASSERT_EQ(rc_table_create(&o, &ids, err, sizeof err), 0);
    o.no_ids = 1;
    ASSERT_EQ(rc_table_create(&o, &num, err, sizeof err), 0);
    uint32_t c, k, r = 0, r2 = 0;
    ASSERT_EQ(rc_table_city_id(num, "bj", 2, &c), 0);
    ASSERT_EQ(rc_table_cate_id(num, "rent", 4, &k), 0);
    ASSERT_EQ(rc_table_city_id(ids, "bj", 2, &c), 0);
    ASSERT_EQ(rc_table_cate_id(ids, "rent", 4, &k), 0);
    for (uint32_t i = 0; i < 3000; i++) {
        char id[40];
        int n = snprintf(id, sizeof id, "a-rather-long-item-id-%u", i);
        ASSERT_EQ(rc_table_append(ids, id, (size_t)n, c, k, 1, &r), 0);
        ASSERT_EQ(rc_table_append(num, NULL, 0, c, k, 1, &r2), 0);
        ASSERT_EQ(r2, i);
    }
    uint32_t x;
    ASSERT_EQ(rc_table_append(num, NULL, 0, c, k, 1, &x), RC_ENOMEM); /* max_items */
    ASSERT_EQ(rc_table_append(ids, NULL, 0, c, k, 1, &x), RC_EINVAL); /* ids need an id */
    ASSERT_EQ(rc_table_size(num), 3000);
    ASSERT_EQ(rc_table_find(num, "a-rather-long-item-id-7", 23, &x), RC_ENOENT);
    ASSERT_EQ(rc_table_find(ids, "a-rather-long-item-id-7", 23, &x), 0);
    size_t len = 99;
    ASSERT(rc_table_item_id(num, 7, &len) == NULL);
    ASSERT_EQ(len, 0);
    int created;
    ASSERT_EQ(rc_table_upsert(num, "z", 1, c, k, NULL, 0, &x, &created), RC_EINVAL);
    /* 3,000 ids of ~25 bytes and their hash slots are not held */
    ASSERT_GE(rc_table_bytes(ids) - rc_table_bytes(num), 3000 * 25);
    rc_table_destroy(ids);
    rc_table_destroy(num);
}

TEST(table_stable_pointers_across_growth_and_max_items)
{
    rc_table *t = mk(8, 1000, 64);
    uint32_t city, cate;
    ASSERT_EQ(rc_table_city_id(t, "c", 1, &city), 0);
    ASSERT_EQ(rc_table_cate_id(t, "k", 1, &cate), 0);
    float *first_in = NULL;
    const char *first_id = NULL;
    char id[32];
    size_t b0 = rc_table_bytes(t);
    for (uint32_t i = 0; i < 1000; i++) {
        snprintf(id, sizeof(id), "item%u", i);
        uint32_t r = add(t, id, city, cate, NULL, 0);
        ASSERT_EQ(r, i);
        rc_table_in(t, r)[0] = (float)i;
        if (i == 0) {
            first_in = rc_table_in(t, 0);
            first_id = rc_table_item_id(t, 0, NULL);
        }
    }
    ASSERT_GT(rc_table_bytes(t), b0);
    ASSERT(first_in == rc_table_in(t, 0));
    ASSERT(first_id == rc_table_item_id(t, 0, NULL));
    for (uint32_t i = 0; i < 1000; i++)
        ASSERT_EQ(rc_table_in(t, i)[0], (float)i);
    /* Rows in different chunks do not overlap. */
    ASSERT(rc_table_in(t, 64) != rc_table_in(t, 0));
    uint32_t r;
    int created;
    ASSERT_EQ(rc_table_upsert(t, "extra", 5, city, cate, NULL, 0, &r, &created), RC_ENOMEM);
    ASSERT_EQ(rc_table_size(t), 1000);
    ASSERT_EQ(rc_table_upsert(t, "item999", 7, city, cate, NULL, 0, &r, &created), 0);
    ASSERT_EQ(r, 999);
    ASSERT_EQ(created, 0);
    rc_table_destroy(t);
}

static double dist_to(const float *a, const float *b, uint32_t dim)
{
    double m = 0;
    for (uint32_t k = 0; k < dim; k++)
        m = fmax(m, fabs((double)a[k] - b[k]));
    return m;
}

static void set_vec(rc_table *t, uint32_t row, float base)
{
    float *v = rc_table_in(t, row);
    for (uint32_t k = 0; k < rc_table_dim(t); k++)
        v[k] = base + 0.01f * (float)k;
}

TEST(table_cold_start_uses_context_mean)
{
    const uint32_t dim = 32;
    rc_table *t = mk(dim, 0, 0);
    uint32_t city, cate;
    ASSERT_EQ(rc_table_city_id(t, "c", 1, &city), 0);
    ASSERT_EQ(rc_table_cate_id(t, "k", 1, &cate), 0);
    uint32_t a = add(t, "a", city, cate, NULL, 0);
    uint32_t b = add(t, "b", city, cate, NULL, 0);
    uint32_t c = add(t, "c", city, cate, NULL, 0);
    set_vec(t, a, 1.0f);
    set_vec(t, b, 2.0f);
    set_vec(t, c, -6.0f);
    uint32_t ctx[2] = {a, b};
    uint32_t n = add(t, "new", city, cate, ctx, 2);
    float want[32];
    for (uint32_t k = 0; k < dim; k++)
        want[k] = 1.5f + 0.01f * (float)k;
    double noise = RC_TABLE_COLD_NOISE / dim + 1e-6;
    ASSERT_LE(dist_to(rc_table_in(t, n), want, dim), noise);
    /* The noise is there: two items from the same context differ. */
    uint32_t n2 = add(t, "new2", city, cate, ctx, 2);
    ASSERT_DBL_OP(dist_to(rc_table_in(t, n), rc_table_in(t, n2), dim), >, 0);
    for (uint32_t k = 0; k < dim; k++)
        ASSERT_EQ(rc_table_out(t, n)[k], 0);
    rc_table_destroy(t);
}

/* Each component of word2vec's random start lies within +-0.5/dim. */
static void assert_random_start(const rc_table *t, uint32_t row)
{
    const float *v = rc_table_in(t, row);
    double norm = 0;
    for (uint32_t k = 0; k < rc_table_dim(t); k++) {
        ASSERT_LE(fabs(v[k]), 0.5 / rc_table_dim(t) + 1e-6);
        norm += fabs(v[k]);
    }
    ASSERT_DBL_OP(norm, >, 0);
}

TEST(table_cold_start_category_group_else_random)
{
    const uint32_t dim = 16;
    rc_table *t = mk(dim, 0, 0);
    uint32_t c0, c1, k0, k1, none;
    ASSERT_EQ(rc_table_city_id(t, "c0", 2, &c0), 0);
    ASSERT_EQ(rc_table_city_id(t, "c1", 2, &c1), 0);
    ASSERT_EQ(rc_table_cate_id(t, "k0", 2, &k0), 0);
    ASSERT_EQ(rc_table_cate_id(t, "k1", 2, &k1), 0);
    ASSERT_EQ(rc_table_cate_id(t, "", 0, &none), 0);
    /* 20 rows in (c0,k0): only the last 16 form the group's ring. */
    char id[32];
    for (int i = 0; i < 20; i++) {
        snprintf(id, sizeof(id), "g%d", i);
        set_vec(t, add(t, id, c0, k0, NULL, 0), i < 4 ? 100.0f : 1.0f);
    }
    set_vec(t, add(t, "x1", c1, k1, NULL, 0), 3.0f);
    /* 4 rows in c0 without a category, far from the origin */
    for (int i = 0; i < 4; i++) {
        snprintf(id, sizeof(id), "u%d", i);
        set_vec(t, add(t, id, c0, none, NULL, 0), 5.0f);
    }
    float want[16];
    double noise = RC_TABLE_COLD_NOISE / dim + 1e-5;

    uint32_t g = add(t, "new-group", c0, k0, NULL, 0);
    for (uint32_t k = 0; k < dim; k++)
        want[k] = 1.0f + 0.01f * (float)k;
    ASSERT_LE(dist_to(rc_table_in(t, g), want, dim), noise);

    /* (c1,k0) is a new group: no prior, though city c1 holds x1. */
    assert_random_start(t, add(t, "new-group-city-known", c1, k0, NULL, 0));
    /* No category: the group of the unnamed category is unrelated items. */
    assert_random_start(t, add(t, "no-category", c0, none, NULL, 0));
    /* A session context places an item whatever its category. */
    uint32_t ctx[1];
    ASSERT_EQ(rc_table_find(t, "u0", 2, &ctx[0]), 0);
    uint32_t s = add(t, "no-category-in-session", c0, none, ctx, 1);
    for (uint32_t k = 0; k < dim; k++)
        want[k] = 5.0f + 0.01f * (float)k;
    ASSERT_LE(dist_to(rc_table_in(t, s), want, dim), noise);
    rc_table_destroy(t);

    /* One named category for every item (a producer's constant) separates
     * nothing: its group is every item, and its mean no prior. Once a
     * second category exists, the group's ring (kept meanwhile) is one. */
    t = mk(dim, 0, 0);
    ASSERT_EQ(rc_table_city_id(t, "c0", 2, &c0), 0);
    ASSERT_EQ(rc_table_cate_id(t, "", 0, &none), 0);
    ASSERT_EQ(rc_table_cate_id(t, "k0", 2, &k0), 0);
    for (int i = 0; i < 16; i++) {
        snprintf(id, sizeof(id), "g%d", i);
        set_vec(t, add(t, id, c0, k0, NULL, 0), 2.0f);
    }
    assert_random_start(t, add(t, "only-category", c0, k0, NULL, 0));
    ASSERT_EQ(rc_table_cate_id(t, "k1", 2, &k1), 0);
    g = add(t, "two-categories", c0, k0, NULL, 0);
    float sum[16] = {0};
    uint32_t m = 0;
    for (int i = 1; i < 16; i++, m++) { /* the ring's last 16: g1..g15 and only-category */
        snprintf(id, sizeof(id), "g%d", i);
        uint32_t r;
        ASSERT_EQ(rc_table_find(t, id, strlen(id), &r), 0);
        for (uint32_t k = 0; k < dim; k++)
            sum[k] += rc_table_in(t, r)[k];
    }
    uint32_t oc;
    ASSERT_EQ(rc_table_find(t, "only-category", 13, &oc), 0);
    for (uint32_t k = 0; k < dim; k++)
        want[k] = (sum[k] + rc_table_in(t, oc)[k]) / (float)(m + 1);
    ASSERT_LE(dist_to(rc_table_in(t, g), want, dim), noise);
    rc_table_destroy(t);
}

struct rd_arg {
    rc_table *t;
    atomic_int stop;
    atomic_long seen;
};

static void *table_reader(void *p)
{
    struct rd_arg *a = p;
    rc_rng rng;
    rc_rng_seed(&rng, 3);
    char id[32];
    while (!atomic_load(&a->stop)) {
        uint32_t n = rc_table_size(a->t);
        if (!n)
            continue;
        uint32_t i = rc_rng_below(&rng, n), r;
        snprintf(id, sizeof(id), "it%u", i);
        if (rc_table_find(a->t, id, strlen(id), &r) != 0 || r != i)
            RC__FAIL("find %s", id);
        const char *s = rc_table_item_id(a->t, r, NULL);
        if (!s || strcmp(s, id) != 0)
            RC__FAIL("item id of %u", r);
        /* Row r was fully written before size covered it. */
        if (rc_table_city(a->t, r) != i % 3)
            RC__FAIL("city of %u", r);
        volatile float x = rc_table_in(a->t, r)[7];
        (void)x;
        atomic_fetch_add(&a->seen, 1);
    }
    return NULL;
}

TEST(table_reader_thread_while_writer_adds)
{
    struct rd_arg a = {.t = mk(8, 0, 256)};
    uint32_t city[3], cate;
    for (int i = 0; i < 3; i++) {
        char c[4] = {'c', (char)('0' + i), 0};
        ASSERT_EQ(rc_table_city_id(a.t, c, 2, &city[i]), 0);
        ASSERT_EQ(city[i], (uint32_t)i);
    }
    ASSERT_EQ(rc_table_cate_id(a.t, "k", 1, &cate), 0);
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, table_reader, &a), 0);
    char id[32];
    long seen = 0;
    for (uint32_t i = 0; i < 100000; i++) {
        snprintf(id, sizeof(id), "it%u", i);
        uint32_t ctx = i ? i - 1 : 0;
        ASSERT_EQ(add(a.t, id, city[i % 3], cate, &ctx, i ? 1 : 0), i);
        /* Every 10000 rows the writer waits for 20 more reads: the reader
         * runs while the table grows however the threads are scheduled. */
        if (i % 10000 == 9999) {
            while (atomic_load(&a.seen) < seen + 20)
                sched_yield();
            seen = atomic_load(&a.seen);
        }
    }
    atomic_store(&a.stop, 1);
    pthread_join(th, NULL);
    ASSERT_GE(atomic_load(&a.seen), 200);
    rc_table_destroy(a.t);
}

/* binary16 conversions: exact values, rounding to nearest even, the range's
 * ends, and every half value through a round trip. */
TEST(table_half_codec)
{
    ASSERT_EQ(rc_half_from_float(1.0f), 0x3c00);
    ASSERT_EQ(rc_half_from_float(-2.0f), 0xc000);
    ASSERT_EQ(rc_half_from_float(0.0f), 0x0000);
    ASSERT_EQ(rc_half_from_float(-0.0f), 0x8000);
    ASSERT_EQ(rc_half_from_float(65504.0f), 0x7bff);
    ASSERT_EQ(rc_half_from_float(65519.0f), 0x7bff); /* below the midpoint to 2^16 */
    ASSERT_EQ(rc_half_from_float(65520.0f), 0x7c00); /* the tie goes to even: inf */
    ASSERT_EQ(rc_half_from_float(1e6f), 0x7c00);
    ASSERT_EQ(rc_half_from_float(-INFINITY), 0xfc00);
    ASSERT_EQ(rc_half_from_float(NAN) & 0x7c00, 0x7c00);
    ASSERT(rc_half_from_float(NAN) & 0x3ff);
    ASSERT_EQ(rc_half_from_float(ldexpf(1, -24)), 0x0001);           /* the smallest subnormal */
    ASSERT_EQ(rc_half_from_float(ldexpf(1, -26)), 0x0000);           /* a quarter of it */
    ASSERT_EQ(rc_half_from_float(ldexpf(3, -26)), 0x0001);           /* three quarters */
    ASSERT_EQ(rc_half_from_float(ldexpf(1, -14)), 0x0400);           /* the smallest normal */
    ASSERT_EQ(rc_half_from_float(1.0f + ldexpf(1, -11)), 0x3c00);    /* tie: to even */
    ASSERT_EQ(rc_half_from_float(1.0f + ldexpf(3, -11)), 0x3c02);    /* tie: to even */
    ASSERT_EQ(rc_half_from_float(1.0f + ldexpf(1.5f, -11)), 0x3c01); /* above the tie */
    ASSERT_EQ(rc_half_from_float(0.1f), 0x2e66);
    ASSERT(rc_half_to_float(0x3555) == 0.333251953125f);
    ASSERT(rc_half_to_float(0x0001) == ldexpf(1, -24));
    ASSERT(rc_half_to_float(0x83ff) == -ldexpf(1023, -24));
    ASSERT(isinf(rc_half_to_float(0x7c00)) && rc_half_to_float(0xfc00) < 0);
    ASSERT(isnan(rc_half_to_float(0x7e00)));
    /* every non-NaN half decodes to a float that encodes back to it */
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff))
            continue;
        if (rc_half_from_float(rc_half_to_float((uint16_t)h)) != h)
            RC__FAIL("half 0x%04x -> %a -> 0x%04x", h, (double)rc_half_to_float((uint16_t)h),
                     rc_half_from_float(rc_half_to_float((uint16_t)h)));
    }
    /* in [-1, 1] (unit vectors' components) the error is at most half a step:
     * 2^-11 relative for normal values, 2^-25 absolute for subnormal ones */
    rc_rng rng;
    rc_rng_seed(&rng, 3);
    for (int i = 0; i < 200000; i++) {
        float x = ldexpf(rc_rng_float(&rng) * 2 - 1, -(int)rc_rng_below(&rng, 20));
        float y = rc_half_to_float(rc_half_from_float(x));
        float bound = fmaxf(fabsf(x) * ldexpf(1, -11), ldexpf(1, -25));
        if (fabsf(x - y) > bound)
            RC__FAIL("%a -> %a", (double)x, (double)y);
    }
    /* the array kernels (F16C when the CPU has it) give the scalar results bit
     * for bit: every non-NaN half decoded, and floats across the whole range
     * (subnormal, normal, overflowing) encoded */
    static uint16_t hs[65536], he[65536];
    static float fs[65536];
    for (uint32_t h = 0; h < 65536; h++)
        hs[h] = (h & 0x7c00) == 0x7c00 && (h & 0x3ff) ? 0x3c00 : (uint16_t)h;
    rc_half_decode(fs, hs, 65536);
    for (uint32_t h = 0; h < 65536; h++)
        if (memcmp(&fs[h], &(float){rc_half_to_float(hs[h])}, sizeof(float)))
            RC__FAIL("%s decode of 0x%04x: %a", rc_half_impl(), hs[h], (double)fs[h]);
    for (uint32_t i = 0; i < 65536; i++) {
        uint32_t u = (uint32_t)rc_rng_next(&rng);
        if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu))
            u &= ~0x7f800000u; /* no NaN */
        memcpy(&fs[i], &u, sizeof u);
        if (i % 4 == 0) /* a quarter in [-2, 2] where unit vectors live */
            fs[i] = ldexpf(rc_rng_float(&rng) * 2 - 1, 1 - (int)rc_rng_below(&rng, 30));
    }
    rc_half_encode(he, fs, 65536);
    for (uint32_t i = 0; i < 65536; i++)
        if (he[i] != rc_half_from_float(fs[i]))
            RC__FAIL("%s encode of %a: 0x%04x, scalar 0x%04x", rc_half_impl(), (double)fs[i], he[i],
                     rc_half_from_float(fs[i]));
    printf("    half array kernels: %s\n", rc_half_impl());
}

/* A half table stores its input vectors in fp16: read back within the codec's
 * error, half the vector bytes, no float pointer handed out. */
TEST(table_half_rows)
{
    rc_table *f, *h;
    char err[256];
    rc_table_opts o = {.dim = 64, .max_items = 5000, .input_only = 1, .no_ids = 1, .half = 1};
    o.no_ids = 0;
    ASSERT_EQ(rc_table_create(&o, &h, err, sizeof err), RC_EINVAL); /* needs no_ids */
    ASSERT(strstr(err, "half"));
    o.no_ids = 1;
    o.input_only = 0;
    ASSERT_EQ(rc_table_create(&o, &h, err, sizeof err), RC_EINVAL); /* and input_only */
    o.input_only = 1;
    ASSERT_EQ(rc_table_create(&o, &h, err, sizeof err), 0);
    o.half = 0;
    ASSERT_EQ(rc_table_create(&o, &f, err, sizeof err), 0);
    ASSERT_EQ(rc_table_half(h), 1);
    ASSERT_EQ(rc_table_half(f), 0);
    uint32_t c, k, r;
    ASSERT_EQ(rc_table_city_id(h, "bj", 2, &c), 0);
    ASSERT_EQ(rc_table_cate_id(h, "rent", 4, &k), 0);
    ASSERT_EQ(rc_table_city_id(f, "bj", 2, &c), 0);
    ASSERT_EQ(rc_table_cate_id(f, "rent", 4, &k), 0);
    rc_rng rng;
    rc_rng_seed(&rng, 9);
    float v[64], buf[64], cp[64];
    for (uint32_t i = 0; i < 5000; i++) {
        for (int j = 0; j < 64; j++)
            v[j] = rc_rng_float(&rng) * 2 - 1;
        ASSERT_EQ(rc_table_append(h, NULL, 0, c, k, 0, &r), 0);
        rc_table_in_write(h, r, v);
        ASSERT_EQ(rc_table_append(f, NULL, 0, c, k, 0, &r), 0);
        rc_table_in_write(f, r, v);
    }
    ASSERT(rc_table_in(h, 7) == NULL);
    ASSERT(rc_table_in_read(f, 7, buf) == rc_table_in(f, 7)); /* float: no copy */
    rc_rng_seed(&rng, 9);
    for (uint32_t i = 0; i < 5000; i++) {
        for (int j = 0; j < 64; j++)
            v[j] = rc_rng_float(&rng) * 2 - 1;
        const float *x = rc_table_in_read(h, i, buf);
        ASSERT(x == buf);
        rc_table_in_copy(h, i, cp);
        for (int j = 0; j < 64; j++) {
            ASSERT(fabsf(x[j] - v[j]) <= fmaxf(fabsf(v[j]) * ldexpf(1, -11), ldexpf(1, -25)));
            ASSERT(cp[j] == x[j]);
            ASSERT(rc_table_in(f, i)[j] == v[j]);
        }
        ASSERT_EQ(rc_table_city(h, i), c);
        ASSERT_EQ(rc_table_cate(h, i), k);
        /* the re-rank's score, in one pass over the fp16 row: the cosine of
         * the decoded vector (and in a float table exactly the old formula) */
        float q[64], qv = 0, vv = 0, fq = 0, fv = 0;
        for (int j = 0; j < 64; j++)
            q[j] = (float)((i * 31 + (uint32_t)j * 7) % 13) - 6.0f;
        for (int j = 0; j < 64; j++) {
            qv += (double)q[j] * x[j];
            vv += (double)x[j] * x[j];
        }
        ASSERT_NEAR(rc_table_in_cos(h, i, q), qv / sqrt(vv), 1e-4);
        const float *fr = rc_table_in(f, i);
        fq = rc_vec_dot(q, fr, 64);
        fv = rc_vec_dot(fr, fr, 64);
        ASSERT(rc_table_in_cos(f, i, q) == fq / sqrtf(fv));
    }
    /* 5,000 rows x 64 components: 2 bytes each less than in float (whole chunks) */
    ASSERT_GE(rc_table_bytes(f) - rc_table_bytes(h), 5000 * 64 * 2);
    ASSERT_LT(rc_table_bytes(h), rc_table_bytes(f) * 6 / 10);
    rc_table_destroy(h);
    rc_table_destroy(f);
}
