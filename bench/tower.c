/* bench_tower: two-tower training throughput and inference latency at the
 * default sizes (d 64, H 128, w2v 64, batch 256, 128 easy + 4 hard negatives,
 * 50 recent clicks, all features) on a recalld-gen log.
 *
 *   bench_tower [--events N] [--threads N] [--seconds S] [--requests N]
 *
 * (a) training examples/s with 1 thread and with --threads (0 = all cores),
 *     each run capped at --seconds of wall time;
 * (b) user-tower latency p50/p99 per request with 50 clicks (one thread, its
 *     own rc_tower_work) and item-tower time per item.
 * One aligned line per figure; the `train` lines are what bench/tower.sh
 * compares with bench/tower_torch.py. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "recalld/clicklog.h"
#include "recalld/common.h"
#include "recalld/gen.h"
#include "recalld/tower.h"
#include "recalld/train.h"
#include "recalld/ufeat.h"

struct args {
    uint64_t events;
    uint32_t threads, requests;
    double seconds;
};

static int parse(int argc, char **argv, struct args *a)
{
    *a = (struct args){.events = 300000, .threads = 0, .requests = 20000, .seconds = 10};
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *f = argv[i], *v = argv[i + 1];
        if (!strcmp(f, "--events"))
            a->events = strtoull(v, NULL, 10);
        else if (!strcmp(f, "--threads"))
            a->threads = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(f, "--seconds"))
            a->seconds = strtod(v, NULL);
        else if (!strcmp(f, "--requests"))
            a->requests = (uint32_t)strtoul(v, NULL, 10);
        else
            return fprintf(stderr, "bench_tower: unknown flag %s\n", f), 2;
    }
    if (argc % 2 == 0)
        return fprintf(stderr, "bench_tower: flag %s needs a value\n", argv[argc - 1]), 2;
    return 0;
}

static int gen_log(const char *path, uint64_t events, rc_gen **g)
{
    rc_gen_opts go = {.seed = 11, .events = events, .users = 10000, .items = 5000};
    if (rc_gen_create(&go, g, NULL, 0))
        return -1;
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    char line[RC_GEN_LINE_MAX];
    size_t len;
    while (rc_gen_next(*g, line, sizeof line, &len, NULL) == 0)
        fprintf(f, "%s\n", line);
    return fclose(f);
}

/* Device and tags of every log user from the generator's truth (the planted
 * structure the events carry). */
static int truth_features(const rc_clicklog *log, const rc_gen *g, rc_ufeat *f)
{
    uint32_t nu = rc_dict_size(log->users);
    f->nusers = nu;
    f->device = calloc(nu, sizeof(uint64_t));
    f->tag_off = calloc(nu + 1, sizeof(uint32_t));
    f->tags = calloc((size_t)nu * 2, sizeof(uint64_t));
    if (!f->device || !f->tag_off || !f->tags)
        return -1;
    for (uint32_t u = 0; u < nu; u++) {
        size_t l;
        const char *id = rc_dict_str(log->users, u, &l);
        rc_gen_user t = {0};
        rc_gen_user_truth(g, id, l, &t);
        char s[32];
        int n = snprintf(s, sizeof s, "dev%u", t.fav_cate);
        f->device[u] = rc_tower_hash(s, (size_t)n);
        f->tag_off[u + 1] = f->tag_off[u];
        for (int j = 0; j < 2; j++) {
            n = snprintf(s, sizeof s, "t%u_%d", t.fav_cate, j);
            f->tags[f->tag_off[u + 1]++] = rc_tower_hash(s, (size_t)n);
        }
    }
    return 0;
}

static rc_tower_train_opts train_opts(uint32_t threads, double seconds)
{
    rc_tower_train_opts o = {.batch = 256,
                             .epochs = 100,
                             .easy_negatives = 128,
                             .hard_negatives = 4,
                             .threads = threads,
                             .seed = 1,
                             .progress = -1,
                             .quiet = 1,
                             .max_seconds = seconds};
    o.cfg =
        (rc_tower_config){.dim = 64, .hidden = 128, .max_clicks = 50, .features = RC_TOWER_F_ALL};
    return o;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Users with a full history of 50 clicks (the request shape of the target). */
static void latency(const rc_tower_model *m, const rc_tower_history *h, const rc_clicklog *log,
                    uint32_t requests)
{
    rc_tower_work *w;
    if (rc_tower_work_create(m, &w))
        return;
    uint64_t *ns = malloc(requests * sizeof(uint64_t));
    rc_tower_item_in *cl = malloc(50 * sizeof(rc_tower_item_in));
    int64_t ts[50];
    float v[64];
    rc_rng r;
    rc_rng_seed(&r, 3);
    uint32_t done = 0, tries = 0;
    while (done < requests && tries++ < requests * 1000u) {
        size_t rec = rc_rng_below(&r, (uint32_t)log->n);
        rc_tower_user_in in;
        if (rc_tower_history_user_in(h, rec, 50, cl, ts, &in) < 50)
            continue;
        uint64_t t0 = rc_now_ns();
        rc_tower_user_vector(m, w, &in, v, NULL, NULL);
        ns[done++] = rc_now_ns() - t0;
    }
    if (done) {
        qsort(ns, done, sizeof *ns, cmp_u64);
        printf("user_tower     50 clicks  %u requests  p50 %6.1f us  p99 %6.1f us  (target p99 <= "
               "200 us)\n",
               done, ns[done / 2] / 1e3, ns[(size_t)(done * 0.99)] / 1e3);
    }
    uint32_t nitems = rc_dict_size(log->items), n = 0;
    uint64_t t0 = rc_now_ns();
    for (uint32_t k = 0; k < 20; k++)
        for (uint32_t it = 0; it < nitems; it++, n++) {
            rc_tower_item_in in;
            rc_tower_history_item_in(h, it, &in);
            rc_tower_item_vector(m, w, &in, v);
        }
    double per = (double)(rc_now_ns() - t0) / n;
    printf("item_tower     %u items  %6.2f us per item  %.0f items/s\n", n, per / 1e3, 1e9 / per);
    free(cl);
    free(ns);
    rc_tower_work_destroy(w);
}

int main(int argc, char **argv)
{
    struct args a;
    int rc = parse(argc, argv, &a);
    if (rc)
        return rc;
    char path[128], err[512] = "";
    snprintf(path, sizeof path, "/tmp/bench_tower_%d.jsonl", (int)getpid());
    rc_gen *g = NULL;
    if (gen_log(path, a.events, &g))
        return fprintf(stderr, "bench_tower: cannot generate %s\n", path), 1;
    rc_clicklog_opts lo = {.path = path, .format = RC_LOG_JSONL, .quiet = 1};
    rc_clicklog *log = NULL;
    rc = rc_clicklog_load(&lo, &log, err, sizeof err);
    unlink(path);
    if (rc)
        return fprintf(stderr, "bench_tower: %s\n", err), 1;
    rc_train_opts to = {.dim = 64, .epochs = 1, .quiet = 1, .progress = -1};
    rc_table *w2v = NULL;
    if (rc_train_run(&to, log, NULL, &w2v, NULL, err, sizeof err))
        return fprintf(stderr, "bench_tower: w2v: %s\n", err), 1;
    uint32_t *rows = malloc(rc_dict_size(log->items) * sizeof(uint32_t));
    rc_ufeat f = {0};
    rc_tower_history *h = NULL;
    if (!rows || truth_features(log, g, &f))
        return fprintf(stderr, "bench_tower: out of memory\n"), 1;
    rc_train_item_rows(log, w2v, rows);
    if (rc_tower_history_create(log, w2v, rows, &f, &h))
        return fprintf(stderr, "bench_tower: history: out of memory\n"), 1;
    printf("tower bench: %zu clicks, d 64, H 128, w2v 64, batch 256, 128 easy + 4 hard "
           "negatives, 50 clicks, all features\n",
           log->n);
    uint32_t th[2] = {1, a.threads};
    rc_tower_model *m = NULL;
    for (int k = 0; k < 2; k++) {
        if (k == 1 && a.threads == 1)
            break;
        rc_tower_train_opts o = train_opts(th[k], a.seconds);
        rc_tower_train_result res;
        rc_tower_model *mk = NULL;
        if (rc_tower_train(&o, h, NULL, &mk, &res, err, sizeof err))
            return fprintf(stderr, "bench_tower: train: %s\n", err), 1;
        printf("train          %2u threads  %8llu examples  %6.2f s  %8.0f examples/s  "
               "loss %.3f -> %.3f\n",
               res.threads, (unsigned long long)res.examples, res.seconds, res.examples_per_s,
               res.first_loss, res.loss);
        rc_tower_destroy(m);
        m = mk;
    }
    openblas_set_num_threads(1);
    latency(m, h, log, a.requests);
    rc_tower_destroy(m);
    rc_tower_history_destroy(h);
    free(f.device);
    free(f.tag_off);
    free(f.tags);
    free(rows);
    rc_table_destroy(w2v);
    rc_clicklog_free(log);
    rc_gen_destroy(g);
    return 0;
}
