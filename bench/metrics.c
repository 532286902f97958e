/* bench_metrics — what observability costs: one rc_hist_observe (the per
 * request cost in api.c and per batch in the engine), alone and with threads
 * contending on the same histogram; and one /metrics page render (loop
 * thread) on an offline engine holding a generated stream.
 *
 *   bench_metrics [--events N] [--threads T] */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/api.h"
#include "recalld/common.h"
#include "recalld/config.h"
#include "recalld/engine.h"
#include "recalld/gen.h"
#include "recalld/metrics.h"

#define OBS 20000000ull

static rc_hist hist;

static void *observer(void *arg)
{
    uint64_t n = *(uint64_t *)arg;
    for (uint64_t i = 0; i < n; i++)
        rc_hist_observe(&hist, (i * 2654435761u) % 3000000);
    return NULL;
}

static double observe_ns(int threads)
{
    pthread_t t[64];
    uint64_t each = OBS / (uint64_t)threads;
    rc_hist_init(&hist, rc_hist_latency_us, rc_hist_latency_us_n, 1e-6);
    uint64_t t0 = rc_now_ns();
    for (int i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, observer, &each);
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    double ns = (double)(rc_now_ns() - t0) / (double)(each * (uint64_t)threads);
    if (rc_hist_count(&hist) != each * (uint64_t)threads)
        abort();
    return ns * threads; /* per observation, per thread */
}

static rc_engine *engine_with_stream(uint64_t events)
{
    rc_config c;
    rc_engine *e = NULL;
    rc_gen *g = NULL;
    rc_gen_opts go = {
        .seed = 1, .events = events, .users = 20000, .items = 20000, .cities = 8, .cates = 6};
    char err[256], line[RC_GEN_LINE_MAX];
    size_t len;
    rc_gen_info info;
    rc_config_defaults(&c);
    if (rc_engine_create(&c, NULL, NULL, NULL, &e, err, sizeof err) ||
        rc_gen_create(&go, &g, err, sizeof err)) {
        fprintf(stderr, "bench_metrics: %s\n", err);
        exit(1);
    }
    for (uint64_t i = 0; i < events && rc_gen_next(g, line, sizeof line, &len, &info) == 0; i++)
        rc_engine_apply_line(e, line, len);
    rc_engine_sync(e);
    rc_gen_destroy(g);
    return e;
}

int main(int argc, char **argv)
{
    uint64_t events = 200000;
    int threads = 2;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--events"))
            events = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[i + 1]);
    }
    if (threads < 1 || threads > 64)
        threads = 2;
    printf("rc_hist_observe: %.1f ns alone, %.1f ns each with %d threads on one histogram\n",
           observe_ns(1), observe_ns(threads), threads);

    static rc_api api;
    rc_engine *e = engine_with_stream(events);
    rc_api_init(&api);
    api.engine = e;
    atomic_store(&api.model_ready, 1);
    rc_metrics_sources src = {.engine = e, .api = &api};
    rc_buf b;
    rc_buf_init(&b, 0);
    enum { RENDERS = 2000 };
    uint64_t t0 = rc_now_ns();
    for (int i = 0; i < RENDERS; i++) {
        rc_buf_reset(&b);
        rc_metrics_render(&src, &b);
    }
    double us = (double)(rc_now_ns() - t0) / RENDERS / 1e3;
    printf("render /metrics: %.1f us per page, %zu bytes (%u items, %llu events, no consumer or "
           "server source)\n",
           us, b.len, rc_table_size(rc_engine_table(e)), (unsigned long long)events);
    rc_buf_free(&b);
    rc_engine_destroy(e);
    return 0;
}
