/* Engine throughput without Kafka: a JSONL click file through the same batch
 * path as the daemon (decode -> sessions -> SGNS -> index). Separates the
 * model's cost from Kafka's.
 *
 *   bench_engine FILE [dim] [--trainer-threads N[,N...]] [--rounds R] [--offline]
 *
 * The file is read into memory first. Each setting of model.trainer_threads
 * (default: 1,2) gets a fresh engine fed the whole file; with --rounds R the
 * settings alternate R times (the machine's load then hits them alike) and
 * each round prints events/s, CPU seconds of the process per million events
 * and the ratio to the first setting of the same round, then the trainer's
 * critical path per event: the CPU time of its busiest thread (the trainer
 * in train_batch, or a shard helper), what a batch would take with a free
 * core per thread and perfect overlap (on a loaded machine the wall clock
 * mostly measures the other load), and the first setting's path over this
 * one's. By default the engine
 * is the daemon's threaded one (decoder thread, trainer thread and its
 * shards, batches handed back through a libuv loop that this thread runs);
 * --offline trains in this thread (rc_engine_submit decodes and trains at
 * once), the trainer's shards still being threads. Replay (train.replay_*,
 * idle trainer time only) is off unless --replay: offline it never yields,
 * and the figure wanted is what a click costs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <time.h>
#include <uv.h>

#include "recalld/common.h"
#include "recalld/config.h"
#include "recalld/engine.h"

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct lines {
    char *buf;
    size_t *off;
    uint32_t *len;
    uint64_t n;
} lines;

static int read_lines(const char *path, lines *L)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        return -1;
    }
    size_t cap = 1 << 20, used = 0, ncap = 1 << 16;
    L->buf = malloc(cap);
    L->off = malloc(ncap * sizeof *L->off);
    L->len = malloc(ncap * sizeof *L->len);
    L->n = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t n;
    while ((n = getline(&line, &lcap, f)) > 0) {
        if (line[n - 1] == '\n')
            n--;
        if (used + (size_t)n > cap) {
            while (used + (size_t)n > cap)
                cap *= 2;
            L->buf = realloc(L->buf, cap);
        }
        if (L->n == ncap) {
            ncap *= 2;
            L->off = realloc(L->off, ncap * sizeof *L->off);
            L->len = realloc(L->len, ncap * sizeof *L->len);
        }
        if (!L->buf || !L->off || !L->len) {
            fprintf(stderr, "bench_engine: out of memory\n");
            return -1;
        }
        memcpy(L->buf + used, line, (size_t)n);
        L->off[L->n] = used;
        L->len[L->n++] = (uint32_t)n;
        used += (size_t)n;
    }
    free(line);
    fclose(f);
    return 0;
}

typedef struct result {
    double s, cpu, path_ms; /* wall, process CPU, the trainer's critical path */
    uint64_t applied, pairs;
    char *stats;
} result;

static int run(const rc_config *cfg, const lines *L, int offline, result *r)
{
    char err[512];
    uv_loop_t loop;
    rc_engine *e;
    if (!offline)
        uv_loop_init(&loop);
    if (rc_engine_create(cfg, offline ? NULL : &loop, NULL, NULL, &e, err, sizeof err)) {
        fprintf(stderr, "bench_engine: %s\n", err);
        return -1;
    }
    double c0 = cpu_s();
    uint64_t t0 = rc_now_ns();
    rc_batch *b = NULL;
    for (uint64_t i = 0; i < L->n; i++) {
        while (!b && !(b = rc_engine_batch_get(e)))
            uv_run(&loop, UV_RUN_ONCE); /* threaded only: batches come back on the loop */
        if (rc_engine_batch_add(b, L->buf + L->off[i], L->len[i], 0, (int64_t)i) == RC_E2BIG) {
            rc_engine_submit(e, b);
            b = NULL;
            i--;
        }
    }
    if (b)
        rc_engine_submit(e, b);
    rc_engine_sync(e); /* every batch trained (the trainer does not need the loop for that) */
    r->s = (double)(rc_now_ns() - t0) / 1e9;
    r->cpu = cpu_s() - c0;
    rc_engine_counters c;
    rc_engine_counters_get(e, &c);
    r->applied = c.applied;
    r->pairs = c.pairs;
    rc_buf st;
    rc_buf_init(&st, 0);
    rc_engine_stats_json(e, &st);
    r->stats = strdup(st.data ? st.data : "");
    rc_buf_free(&st);
    /* The busiest thread of the trainer's work: the trainer's CPU in
     * train_batch (its own shard included) or a helper's (shard 1's with the
     * co-occurrence notes it takes over): what a batch would take with a
     * free core per thread, if their work overlapped perfectly. */
    char *js = malloc(strlen(r->stats) + 3);
    sprintf(js, "{%s}", r->stats);
    json_t *j = json_loads(js, 0, NULL), *tr = json_object_get(j, "training");
    json_t *sh = json_object_get(tr, "shards");
    double path = json_number_value(json_object_get(tr, "cpu_ms"));
    for (size_t k = 1; k < json_array_size(sh); k++) {
        double t = json_number_value(json_object_get(json_array_get(sh, k), "cpu_ms"));
        if (k == 1)
            t += json_number_value(json_object_get(tr, "cooc_cpu_ms"));
        path = t > path ? t : path;
    }
    r->path_ms = path;
    json_decref(j);
    free(js);
    rc_engine_destroy(e);
    if (!offline) {
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    uint32_t dim = 64, threads[16] = {1, 2}, nth = 2, rounds = 1;
    int offline = 0, verbose = 0, replay = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--trainer-threads") && i + 1 < argc) {
            nth = 0;
            for (char *p = strtok(argv[++i], ","); p && nth < 16; p = strtok(NULL, ","))
                threads[nth++] = (uint32_t)atoi(p);
        } else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) {
            rounds = (uint32_t)atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--offline")) {
            offline = 1;
        } else if (!strcmp(argv[i], "--replay")) {
            replay = 1;
        } else if (!strcmp(argv[i], "--stats")) {
            verbose = 1;
        } else if (!path) {
            path = argv[i];
        } else {
            dim = (uint32_t)atoi(argv[i]);
        }
    }
    if (!path || !nth || !rounds) {
        fprintf(stderr, "usage: bench_engine FILE.jsonl [dim] [--trainer-threads N[,N...]] "
                        "[--rounds R] [--offline] [--replay] [--stats]\n");
        return 2;
    }
    lines L;
    if (read_lines(path, &L))
        return 1;
    printf("%llu events, dim %u, %s engine\n", (unsigned long long)L.n, dim,
           offline ? "offline (decode in this thread)" : "threaded (decoder + trainer threads)");
    printf("round  trainer_threads  events/s  ratio  cpu_s/M_events  trainer_path_us/event  "
           "path_ratio  applied  pairs\n");
    for (uint32_t r = 0; r < rounds; r++) {
        double base = 0, base_path = 0;
        for (uint32_t k = 0; k < nth; k++) {
            rc_config cfg;
            rc_config_defaults(&cfg);
            cfg.dim = dim;
            cfg.trainer_threads = threads[k];
            cfg.background_nice = 0; /* the comparison, not the machine's other load */
            if (!replay)
                cfg.replay_clicks = 0; /* idle-time work: offline it never yields */
            result res;
            if (run(&cfg, &L, offline, &res))
                return 1;
            double rate = (double)L.n / res.s;
            double path_us = res.path_ms * 1e3 / (double)L.n;
            if (k == 0) {
                base = rate;
                base_path = path_us;
            }
            printf("%5u  %15u  %8.0f  %5.2f  %14.2f  %21.2f  %10.2f  %7llu  %llu\n", r + 1,
                   threads[k], rate, rate / base, res.cpu / ((double)L.n / 1e6), path_us,
                   base_path / path_us, (unsigned long long)res.applied,
                   (unsigned long long)res.pairs);
            if (verbose)
                printf("{%s}\n", res.stats);
            fflush(stdout);
            free(res.stats);
        }
    }
    free(L.buf);
    free(L.off);
    free(L.len);
    return 0;
}
