/* The two-tower mirror in float32 and in fp16 side by side, in one process:
 * two bundles (tower_serve.h) of the same random-weight model over the same
 * word2vec table, then in alternating rounds the latency of the daemon's
 * two_tower search (rc_tower_serve_search: index scan + re-rank of 3 x k
 * candidates from the mirror) for one city and for all cities, recall@50 of
 * each against exact search over the float mirror, and the bundles' bytes.
 *   bench_tower_mirror [--items N] [--queries Q] [--rounds R]
 * Defaults: 200000 items (20 cities x 10 categories, d64), 2000 queries, 3 rounds. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/common.h"
#include "recalld/recall.h"
#include "recalld/table.h"
#include "recalld/tower.h"
#include "recalld/tower_serve.h"
#include "recalld/vec.h"

#define DIM 64u
#define K   50u

static void rand_unit(rc_rng *g, float *v)
{
    for (uint32_t j = 0; j < DIM; j++)
        v[j] = rc_rng_float(g) * 2 - 1;
    rc_vec_normalize(v, DIM);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return v[(int)fmin(n - 1, floor(p * n))];
}

static rc_tower_serve *bundle(const rc_table *w2v, int float_mirror)
{
    rc_tower_config cfg = {
        .w2v_dim = DIM, .dim = DIM, .max_clicks = 50, .features = RC_TOWER_F_ALL};
    rc_tower_model *m;
    rc_tower_serve *b;
    char err[512];
    /* the daemon's index settings (index.* defaults: sq8, ivf_min 4096, nprobe 16) */
    rc_tower_serve_opts o = {.index = {.storage = RC_INDEX_STORAGE_SQ8, .no_background = 1},
                             .float_mirror = float_mirror};
    if (rc_tower_create(&cfg, 1, &m, err, sizeof err) ||
        rc_tower_serve_create(m, w2v, &o, &b, err, sizeof err)) {
        fprintf(stderr, "bench_tower_mirror: %s\n", err);
        exit(1);
    }
    uint64_t t0 = rc_now_ns();
    if (rc_tower_serve_sync_rows(b, UINT32_MAX) < 0) {
        fprintf(stderr, "bench_tower_mirror: sync failed\n");
        exit(1);
    }
    for (int i = 0; i < 3; i++)
        if (rc_tower_serve_flush(b, err, sizeof err) < 0 ||
            rc_tower_serve_maintain(b, err, sizeof err) < 0) {
            fprintf(stderr, "bench_tower_mirror: %s\n", err);
            exit(1);
        }
    rc_tower_serve_stats st;
    rc_tower_serve_stats_get(b, &st);
    rc_index_stats is;
    rc_index_stats_get(rc_tower_serve_index(b), &is);
    printf("%-6s mirror: %u rows in %.1f s; tower bytes %.1f MB (%.0f B/row), its index %.1f MB "
           "(%" PRIu64 " of %" PRIu64 " partitions IVF)\n",
           float_mirror ? "float" : "fp16", st.rows, (double)(rc_now_ns() - t0) / 1e9,
           (double)st.bytes / 1e6, (double)st.bytes / st.rows, (double)is.bytes / 1e6,
           is.ivf_partitions, is.partitions);
    return b;
}

static double overlap(const rc_hit *a, uint32_t na, const rc_hit *b, uint32_t nb)
{
    uint32_t same = 0;
    for (uint32_t i = 0; i < na; i++)
        for (uint32_t j = 0; j < nb; j++)
            same += a[i].row == b[j].row;
    return na ? (double)same / na : 1.0;
}

int main(int argc, char **argv)
{
    uint32_t items = 200000, nq = 2000, rounds = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--items"))
            items = (uint32_t)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--queries"))
            nq = (uint32_t)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--rounds"))
            rounds = (uint32_t)atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: bench_tower_mirror [--items N] [--queries Q] [--rounds R]\n");
            return 2;
        }
    }
    if (!items || !nq || !rounds)
        return 2;
    rc_table *w2v;
    char err[256];
    rc_table_opts to = {.dim = DIM, .max_items = items, .seed = 3};
    if (rc_table_create(&to, &w2v, err, sizeof err)) {
        fprintf(stderr, "bench_tower_mirror: %s\n", err);
        return 1;
    }
    rc_rng g;
    rc_rng_seed(&g, 5);
    uint32_t city[20], cate[10];
    for (int i = 0; i < 20; i++) {
        char s[16];
        snprintf(s, sizeof s, "city-%d", i);
        rc_table_city_id(w2v, s, strlen(s), &city[i]);
    }
    for (int i = 0; i < 10; i++) {
        char s[16];
        snprintf(s, sizeof s, "cate-%d", i);
        rc_table_cate_id(w2v, s, strlen(s), &cate[i]);
    }
    /* items of a (city, category) near one of a few directions of it: a
     * structured catalogue, as a trained word2vec table is */
    float(*cent)[DIM] = malloc(2000 * sizeof *cent);
    for (int i = 0; i < 2000; i++)
        rand_unit(&g, cent[i]);
    for (uint32_t i = 0; i < items; i++) {
        char id[32];
        uint32_t row, c = rc_rng_below(&g, 20), k = rc_rng_below(&g, 10);
        int made;
        snprintf(id, sizeof id, "item-%u", i);
        if (rc_table_upsert(w2v, id, strlen(id), city[c], cate[k], NULL, 0, &row, &made)) {
            fprintf(stderr, "bench_tower_mirror: upsert failed\n");
            return 1;
        }
        float *v = rc_table_in(w2v, row);
        rand_unit(&g, v);
        rc_vec_scale(0.5f, v, DIM);
        rc_vec_axpy(1.0f, cent[(c * 10 + k) * 10 + rc_rng_below(&g, 10)], v, DIM);
    }
    free(cent);
    rc_tower_serve *b[2] = {bundle(w2v, 1), bundle(w2v, 0)};
    const rc_table *ref = rc_tower_serve_table(b[0]);
    /* queries: item-tower vectors of random items plus noise (a user near what
     * they clicked), half of them in the item's city */
    float *q = malloc((size_t)nq * DIM * sizeof *q);
    int64_t *qc = malloc(nq * sizeof *qc);
    for (uint32_t i = 0; i < nq; i++) {
        uint32_t r = rc_rng_below(&g, items);
        float noise[DIM];
        rc_table_in_copy(ref, r, q + (size_t)i * DIM);
        rand_unit(&g, noise);
        rc_vec_axpy(0.7f, noise, q + (size_t)i * DIM, DIM);
        rc_vec_normalize(q + (size_t)i * DIM, DIM);
        qc[i] = i % 2 ? (int64_t)rc_table_city(ref, r) : -1;
    }
    rc_hit *exact = malloc((size_t)nq * K * sizeof *exact);
    uint32_t *nexact = malloc(nq * sizeof *nexact);
    for (uint32_t i = 0; i < nq; i++) {
        rc_index_filter f = {.city = qc[i]};
        rc_recall_exact(ref, q + (size_t)i * DIM, K, 1.0f, &f, NULL, 0, exact + (size_t)i * K,
                        &nexact[i]);
    }
    double *lat[2][2];
    for (int m = 0; m < 2; m++)
        for (int s = 0; s < 2; s++)
            lat[m][s] = malloc((size_t)nq * rounds * sizeof(double));
    double rec[2][2] = {{0}};
    uint32_t n[2][2] = {{0}};
    for (uint32_t r = 0; r < rounds; r++)
        for (int mm = 0; mm < 2; mm++) {
            int m = r % 2 ? 1 - mm : mm; /* alternate which goes first */
            for (uint32_t i = 0; i < nq; i++) {
                int s = qc[i] >= 0; /* 0: all cities, 1: one city */
                rc_index_filter f = {.city = qc[i]};
                rc_hit out[K];
                uint32_t got;
                uint64_t t0 = rc_now_ns();
                rc_tower_serve_search(b[m], q + (size_t)i * DIM, K, 3.0f, &f, NULL, 0, out, &got);
                lat[m][s][n[m][s]++] = (double)(rc_now_ns() - t0) / 1e3;
                if (r == 0)
                    rec[m][s] += overlap(exact + (size_t)i * K, nexact[i], out, got);
            }
        }
    printf("%u items x d64, %u queries (half one city), %u alternating rounds; recall@50 against "
           "exact search over the float mirror\n",
           items, nq, rounds);
    const char *scope[2] = {"all cities", "one city"};
    for (int s = 0; s < 2; s++) {
        double p50[2], p99[2];
        for (int m = 0; m < 2; m++) {
            p50[m] = pct(lat[m][s], (int)n[m][s], 0.5);
            p99[m] = pct(lat[m][s], (int)n[m][s], 0.99);
        }
        printf("%-10s float: p50 %.0f us, p99 %.0f us, recall@50 %.4f | fp16: p50 %.0f us "
               "(%.2fx), p99 %.0f us (%.2fx), recall@50 %.4f\n",
               scope[s], p50[0], p99[0], rec[0][s] / (n[0][s] / rounds), p50[1], p50[1] / p50[0],
               p99[1], p99[1] / p99[0], rec[1][s] / (n[1][s] / rounds));
    }
    for (int m = 0; m < 2; m++) {
        for (int s = 0; s < 2; s++)
            free(lat[m][s]);
        rc_tower_serve_unref(b[m]);
    }
    free(q);
    free(qc);
    free(exact);
    free(nexact);
    rc_table_destroy(w2v);
    return 0;
}
