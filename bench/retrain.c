/* bench_retrain: the cost of background two-tower retraining (engine.h,
 * tower.retrain_*) on a recalld-gen stream.
 *
 *   bench_retrain [--events N] [--replay N] [--max-seconds S]
 *
 * (a) replay buffer: ns per rc_replay_add (the trainer's cost per click), the
 *     time to snapshot a full buffer of --replay clicks, and the writer's
 *     longest add while snapshots run (how long a snapshot can hold it up);
 * (b) one retrain of the default-size model (d 64, H 128, all features) on
 *     an offline engine fed --events events, 1 epoch, 1 thread: clicks,
 *     examples, training time and rate, the whole retrain (snapshot to
 *     serving) and the peak RSS it added. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "recalld/common.h"
#include "recalld/config.h"
#include "recalld/engine.h"
#include "recalld/gen.h"
#include "recalld/replay.h"
#include "recalld/tower.h"

struct args {
    uint64_t events, replay;
    uint32_t max_seconds;
};

static int parse(int argc, char **argv, struct args *a)
{
    *a = (struct args){.events = 300000, .replay = 1000000, .max_seconds = 120};
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *f = argv[i], *v = argv[i + 1];
        if (!strcmp(f, "--events"))
            a->events = strtoull(v, NULL, 10);
        else if (!strcmp(f, "--replay"))
            a->replay = strtoull(v, NULL, 10);
        else if (!strcmp(f, "--max-seconds"))
            a->max_seconds = (uint32_t)strtoul(v, NULL, 10);
        else
            return fprintf(stderr, "bench_retrain: unknown flag %s\n", f), 2;
    }
    if (argc % 2 == 0)
        return fprintf(stderr, "bench_retrain: flag %s needs a value\n", argv[argc - 1]), 2;
    if (a->replay < 1000 || a->events == 0)
        return fprintf(stderr, "bench_retrain: --replay >= 1000, --events >= 1\n"), 2;
    return 0;
}

static long maxrss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

struct writer {
    rc_replay *r;
    atomic_int stop;
    uint64_t adds, max_ns, over_100us, over_1ms;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    uint64_t tags[2] = {11, 12};
    while (!atomic_load(&w->stop)) {
        uint64_t t0 = rc_now_ns();
        rc_replay_add(w->r, w->adds * 31, (uint32_t)w->adds, (int64_t)w->adds, 0,
                      w->adds % 8 ? NULL : tags, w->adds % 8 ? 0 : 2);
        uint64_t dt = rc_now_ns() - t0;
        w->max_ns = RC_MAX(w->max_ns, dt);
        w->over_100us += dt > 100000;
        w->over_1ms += dt > 1000000;
        w->adds++;
    }
    return NULL;
}

static int bench_replay(uint64_t cap)
{
    rc_replay *r = NULL;
    char err[256];
    if (rc_replay_create(cap, &r, err, sizeof err))
        return fprintf(stderr, "bench_retrain: %s\n", err), 1;
    uint64_t tags[2] = {11, 12}, n = 3 * cap, t0 = rc_now_ns();
    for (uint64_t i = 0; i < n; i++)
        rc_replay_add(r, i * 31, (uint32_t)i, (int64_t)i, i % 5 ? 0 : 7, i % 8 ? NULL : tags,
                      i % 8 ? 0 : 2);
    double ns = (double)(rc_now_ns() - t0) / (double)n;
    rc_replay_snap s;
    t0 = rc_now_ns();
    if (rc_replay_snapshot(r, 0, &s))
        return fprintf(stderr, "bench_retrain: snapshot: out of memory\n"), 1;
    double snap_ms = (double)(rc_now_ns() - t0) / 1e6;
    size_t got = s.n;
    rc_replay_snap_free(&s);
    struct writer w = {.r = r};
    pthread_t th;
    pthread_create(&th, NULL, writer_main, &w);
    int snaps = 0;
    t0 = rc_now_ns();
    while (rc_now_ns() - t0 < 1000000000ull) {
        if (rc_replay_snapshot(r, 0, &s) == 0)
            snaps++;
        rc_replay_snap_free(&s);
    }
    atomic_store(&w.stop, 1);
    pthread_join(th, NULL);
    printf("replay add            %8.1f ns/click   (%llu clicks, buffer %llu, %.1f MB)\n", ns,
           (unsigned long long)n, (unsigned long long)cap, rc_replay_bytes_for(cap) / 1e6);
    printf("replay snapshot       %8.1f ms         (%zu clicks)\n", snap_ms, got);
    printf("writer longest add    %8.1f us         (%d snapshots, %llu adds in 1 s alongside; "
           "%llu over 100 us, %llu over 1 ms)\n",
           (double)w.max_ns / 1e3, snaps, (unsigned long long)w.adds,
           (unsigned long long)w.over_100us, (unsigned long long)w.over_1ms);
    rc_replay_destroy(r);
    return 0;
}

static int bench_retrain(const struct args *a)
{
    char err[512], line[RC_GEN_LINE_MAX], model[64];
    rc_config c;
    rc_config_defaults(&c);
    c.tower_retrain_interval_s = 3600;
    c.tower_replay_clicks = (uint32_t)a->replay;
    c.tower_retrain_min_examples = 1;
    c.tower_retrain_max_seconds = a->max_seconds;
    rc_engine *e = NULL;
    if (rc_engine_create(&c, NULL, NULL, NULL, &e, err, sizeof err))
        return fprintf(stderr, "bench_retrain: %s\n", err), 1;
    rc_gen_opts go = {.seed = 11, .events = a->events, .users = 10000, .items = 5000};
    rc_gen *g = NULL;
    if (rc_gen_create(&go, &g, err, sizeof err))
        return fprintf(stderr, "bench_retrain: %s\n", err), 1;
    size_t len;
    while (rc_gen_next(g, line, sizeof line, &len, NULL) == 0)
        rc_engine_apply_line(e, line, len);
    rc_gen_destroy(g);
    rc_engine_sync(e);
    rc_tower_config tc = {.w2v_dim = c.dim, .features = RC_TOWER_F_ALL};
    rc_tower_model *m = NULL;
    snprintf(model, sizeof model, "/tmp/bench_retrain.%d.tower", (int)getpid());
    if (rc_tower_create(&tc, 1, &m, err, sizeof err) || rc_tower_save(m, model, err, sizeof err) ||
        rc_engine_tower_load(e, model, NULL, err, sizeof err))
        return fprintf(stderr, "bench_retrain: %s\n", err), 1;
    size_t params = rc_tower_params(m);
    rc_tower_destroy(m);
    unlink(model);
    long rss0 = maxrss_kb();
    rc_engine_retrain_info ri;
    int rc = rc_engine_retrain_now(e, &ri, err, sizeof err);
    if (rc)
        return fprintf(stderr, "bench_retrain: retrain: %s\n", err), 1;
    printf("retrain data          %8llu clicks     (%llu users, %llu sessions, %llu examples)\n",
           (unsigned long long)ri.last_clicks, (unsigned long long)ri.last_users,
           (unsigned long long)ri.last_sessions, (unsigned long long)ri.last_examples);
    printf("retrain train         %8.2f s          (%llu examples, %.0f examples/s, 1 thread, "
           "%zu params, loss %.3f -> %.3f)\n",
           ri.last_train_seconds, (unsigned long long)ri.last_trained,
           ri.last_train_seconds > 0 ? (double)ri.last_trained / ri.last_train_seconds : 0, params,
           ri.last_first_loss, ri.last_loss);
    printf("retrain total         %8.2f s          (snapshot, log, history, train, vectorise "
           "%u items, serve)\n",
           ri.last_seconds, rc_table_size(rc_engine_table(e)));
    printf("retrain peak RSS      %8.1f MB added   (%.1f bytes per buffered click)\n",
           (double)(maxrss_kb() - rss0) / 1024.0,
           (double)(maxrss_kb() - rss0) * 1024.0 / (double)(ri.last_clicks ? ri.last_clicks : 1));
    rc_engine_destroy(e);
    return 0;
}

int main(int argc, char **argv)
{
    struct args a;
    int rc = parse(argc, argv, &a);
    if (rc)
        return rc;
    if ((rc = bench_replay(a.replay)))
        return rc;
    return bench_retrain(&a);
}
