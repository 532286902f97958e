/* bench_train: batch trainer throughput (rc_train_run), dim 64, window 5,
 * 5 negatives, 5 epochs by default, on a recalld-gen log and on MovieLens-100k
 * (RECALLD_DATA_DIR/movielens-100k/u.data, when RECALLD_DATA_DIR names the
 * directory of the public click datasets, or --movielens FILE). Prints clicks/s of wall time and
 * clicks per CPU-second of the training threads (the per-thread speed, which a busy shared machine
 * does not distort), and the ratio to the reference of a plain C core (0.75M clicks/s per
 * thread).
 *
 *   bench_train [--events N] [--threads N] [--mode skipgram|cbow] [--dim N]
 *               [--window N] [--negatives N] [--epochs N] [--movielens FILE]
 * Default --events 200000 (small); the reported figure uses --events 1000000. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "recalld/clicklog.h"
#include "recalld/common.h"
#include "recalld/gen.h"
#include "recalld/train.h"
#include "recalld/vec.h"

#define REF_CLICKS_PER_S 750000.0

struct args {
    uint64_t events;
    rc_train_opts o;
    const char *movielens; /* NULL: RECALLD_DATA_DIR unset, no --movielens */
    char movielens_buf[4096];
};

static int parse(int argc, char **argv, struct args *a)
{
    a->events = 200000;
    a->o = (rc_train_opts){.dim = 64,
                           .window = 5,
                           .negatives = 5,
                           .epochs = 5,
                           .threads = 1,
                           .quiet = 1,
                           .progress = -1};
    a->movielens = NULL;
    const char *dir = getenv("RECALLD_DATA_DIR");
    if (dir && *dir) {
        snprintf(a->movielens_buf, sizeof a->movielens_buf, "%s/movielens-100k/u.data", dir);
        a->movielens = a->movielens_buf;
    }
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *f = argv[i], *v = argv[i + 1];
        if (!strcmp(f, "--events"))
            a->events = strtoull(v, NULL, 10);
        else if (!strcmp(f, "--threads"))
            a->o.threads = (uint32_t)atoi(v);
        else if (!strcmp(f, "--mode"))
            a->o.mode = strcmp(v, "cbow") ? RC_SGNS_SKIPGRAM : RC_SGNS_CBOW;
        else if (!strcmp(f, "--dim"))
            a->o.dim = (uint32_t)atoi(v);
        else if (!strcmp(f, "--window"))
            a->o.window = (uint32_t)atoi(v);
        else if (!strcmp(f, "--negatives"))
            a->o.negatives = (uint32_t)atoi(v);
        else if (!strcmp(f, "--epochs"))
            a->o.epochs = (uint32_t)atoi(v);
        else if (!strcmp(f, "--movielens"))
            a->movielens = v;
        else
            return fprintf(stderr, "bench_train: unknown flag %s\n", f), 2;
    }
    return 0;
}

static int write_gen(const char *path, uint64_t events)
{
    rc_gen_opts go = {.seed = 7,
                      .events = events,
                      .users = 20000,
                      .items = 20000,
                      .flags = RC_GEN_NO_DEVICE | RC_GEN_NO_TAGS};
    rc_gen *g = NULL;
    char err[256], line[RC_GEN_LINE_MAX];
    size_t len;
    FILE *f = fopen(path, "w");
    if (!f || rc_gen_create(&go, &g, err, sizeof err))
        return fprintf(stderr, "bench_train: cannot generate %s\n", path), 1;
    while (rc_gen_next(g, line, sizeof line, &len, NULL) == 0) {
        fwrite(line, 1, len, f);
        fputc('\n', f);
    }
    rc_gen_destroy(g);
    return fclose(f) ? 1 : 0;
}

static int run(const char *name, const rc_clicklog_opts *lo, const rc_train_opts *o)
{
    rc_clicklog *log = NULL;
    rc_table *t = NULL;
    rc_train_result r;
    char err[256];
    if (rc_clicklog_load(lo, &log, err, sizeof err) ||
        rc_train_run(o, log, NULL, &t, &r, err, sizeof err)) {
        fprintf(stderr, "bench_train: %s: %s\n", name, err);
        rc_clicklog_free(log);
        return 1;
    }
    double per_cpu = r.cpu_seconds > 0 ? (double)r.clicks / r.cpu_seconds : 0;
    printf("%-14s %-8s %u thr  %7.3fM clicks  %6.2f s  wall %.3fM clicks/s  "
           "%.3fM clicks/CPU-s/thread  (%.2fx ref 0.75M)  %.2f pairs/click  loss %.3f\n",
           name, o->mode == RC_SGNS_CBOW ? "cbow" : "skipgram", r.threads, (double)r.clicks / 1e6,
           r.seconds, r.clicks_per_s / 1e6, per_cpu / 1e6, per_cpu / REF_CLICKS_PER_S,
           (double)r.pairs / (double)r.clicks, r.loss);
    rc_table_destroy(t);
    rc_clicklog_free(log);
    return 0;
}

int main(int argc, char **argv)
{
    struct args a;
    if (parse(argc, argv, &a))
        return 2;
    printf("vec kernels: %s; dim %u window %u negatives %u epochs %u\n", rc_vec_impl(), a.o.dim,
           a.o.window, a.o.negatives, a.o.epochs);
    char path[128];
    snprintf(path, sizeof path, "/tmp/bench_train_%d.jsonl", (int)getpid());
    int rc = write_gen(path, a.events);
    if (!rc) {
        rc_clicklog_opts lo = {.path = path, .quiet = 1};
        char name[32];
        snprintf(name, sizeof name, "gen %lluk", (unsigned long long)(a.events / 1000));
        rc = run(name, &lo, &a.o);
    }
    unlink(path);
    if (!a.movielens) {
        printf("movielens-100k: skipped (RECALLD_DATA_DIR not set, no --movielens FILE)\n");
    } else if (access(a.movielens, R_OK) == 0) {
        rc_clicklog_opts lo = {.path = a.movielens,
                               .format = RC_LOG_TSV,
                               .col_user = "0",
                               .col_item = "1",
                               .col_time = "3",
                               .quiet = 1};
        rc |= run("movielens-100k", &lo, &a.o);
    } else {
        printf("movielens-100k: skipped (%s absent)\n", a.movielens);
    }
    return rc;
}
