/* shard: model.trainer_threads (src/engine_shard.c). One thread is the single
 * writer's path, bit for bit; two and three threads train every click exactly
 * once (the same applied, pairs and per-item counts as one thread) into a
 * table of the same quality; the helpers are named and run at the trainer's
 * nice value in a threaded engine. */
#include <errno.h>
#include <sched.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include "e2e.h"
#include "recalld/common.h"
#include "recalld/config.h"
#include "recalld/engine.h"
#include "recalld/table.h"
#include "test.h"

#define PATIENCE_MS 120000
#define T0          1700000000000LL
#define USERS       1500
#define ITEMS       1200
#define COMM        20 /* items per community; a community is in one city */
#define CITIES      7
#define BATCH       256
#define EVENTS      (60 * BATCH) /* whole batches: all of them take the parallel path */

/* Click k of a deterministic stream: each user browses one community (one
 * city) with a stray click to a random item (any city) one time in eight,
 * ten seconds apart, users interleaved. */
typedef struct click {
    int user, item, city, cate;
    int64_t ts;
} click;

static int city_of(int item) { return (item / COMM) % CITIES; }

static click stream_click(uint32_t k)
{
    uint64_t h = (uint64_t)k * 0x9e3779b97f4a7c15ull;
    h ^= h >> 29;
    int user = (int)(h % USERS);
    int comm = user % (ITEMS / COMM);
    uint64_t r = (h >> 20) * 0xbf58476d1ce4e5b9ull;
    int item = (r >> 60) == 0 ? (int)((r >> 8) % ITEMS) : comm * COMM + (int)((r >> 30) % COMM);
    return (click){user, item, city_of(item), item % 3, T0 + (int64_t)k * 10};
}

static int click_json(char *buf, size_t cap, const click *c)
{
    return snprintf(buf, cap,
                    "{\"user_id\":\"u%d\",\"item_id\":\"i%d\",\"city_id\":\"c%d\","
                    "\"cate_id\":\"k%d\",\"ts\":%lld}",
                    c->user, c->item, c->city, c->cate, (long long)c->ts);
}

/* Submits clicks from..from+BATCH-1 of the stream to a threaded engine as one
 * batch, running its loop until a batch is free. */
static void submit_batch(rc_engine *e, uv_loop_t *loop, uint32_t from)
{
    char line[256];
    rc_batch *b;
    while (!(b = rc_engine_batch_get(e)))
        uv_run(loop, UV_RUN_NOWAIT);
    for (uint32_t k = from; k < from + BATCH; k++) {
        click ck = stream_click(k);
        int n = click_json(line, sizeof line, &ck);
        ASSERT_EQ(rc_engine_batch_add(b, line, (size_t)n, 0, k), 0);
    }
    rc_engine_submit(e, b);
}

static void shard_config(rc_config *c, uint32_t threads)
{
    rc_config_defaults(c);
    c->dim = 16;
    c->seed = 5;
    c->kafka_batch = BATCH;
    c->replay_clicks = 0; /* replay runs after a batch, at other points offline */
    c->trainer_threads = threads;
    c->min_city_items = 20;
}

/* The stream through batches of BATCH events (rc_engine_submit, offline). */
static rc_engine *train_batches(uint32_t threads)
{
    rc_config c;
    shard_config(&c, threads);
    rc_engine *e = e2e_engine_offline(&c);
    char line[256];
    rc_batch *b = NULL;
    for (uint32_t k = 0; k < EVENTS; k++) {
        if (!b)
            ASSERT((b = rc_engine_batch_get(e)) != NULL);
        click ck = stream_click(k);
        int n = click_json(line, sizeof line, &ck);
        ASSERT_EQ(rc_engine_batch_add(b, line, (size_t)n, 0, k), 0);
        if (rc_engine_batch_count(b) == BATCH || k + 1 == EVENTS) {
            rc_engine_submit(e, b);
            b = NULL;
        }
    }
    rc_engine_sync(e);
    return e;
}

static json_t *stats_of(rc_engine *e)
{
    rc_buf o;
    rc_buf_init(&o, 0);
    rc_buf_puts(&o, "{");
    rc_engine_stats_json(e, &o);
    rc_buf_puts(&o, "}");
    json_t *j = e2e_json(o.data);
    rc_buf_free(&o);
    return j;
}

static int tables_identical(const rc_table *a, const rc_table *b)
{
    uint32_t dim = rc_table_dim(a);
    if (rc_table_size(a) != rc_table_size(b))
        return 0;
    for (uint32_t r = 0; r < rc_table_size(a); r++)
        if (memcmp(rc_table_in(a, r), rc_table_in(b, r), dim * sizeof(float)) ||
            memcmp(rc_table_out(a, r), rc_table_out(b, r), dim * sizeof(float)))
            return 0;
    return 1;
}

static double cosine(const float *x, const float *y, uint32_t dim)
{
    double xy = 0, xx = 0, yy = 0;
    for (uint32_t i = 0; i < dim; i++) {
        xy += (double)x[i] * y[i];
        xx += (double)x[i] * x[i];
        yy += (double)y[i] * y[i];
    }
    return xx > 0 && yy > 0 ? xy / sqrt(xx * yy) : 0;
}

/* Mean cosine of two items of one community minus that of two items of
 * different communities (input vectors): what the planted structure taught. */
static double community_margin(rc_engine *e)
{
    const rc_table *t = rc_engine_table(e);
    uint32_t dim = rc_table_dim(t), a, b;
    double same = 0, other = 0;
    int ns = 0, no = 0;
    char id[32];
    for (int i = 0; i < ITEMS; i += 3) {
        int j = (i / COMM) * COMM + (i + 7) % COMM, x = (i + 5 * COMM + 3) % ITEMS;
        snprintf(id, sizeof id, "i%d", i);
        if (rc_table_find(t, id, strlen(id), &a))
            continue;
        snprintf(id, sizeof id, "i%d", j);
        if (j != i && rc_table_find(t, id, strlen(id), &b) == 0) {
            same += cosine(rc_table_in(t, a), rc_table_in(t, b), dim);
            ns++;
        }
        snprintf(id, sizeof id, "i%d", x);
        if (rc_table_find(t, id, strlen(id), &b) == 0) {
            other += cosine(rc_table_in(t, a), rc_table_in(t, b), dim);
            no++;
        }
    }
    ASSERT_GT(ns, ITEMS / 6);
    ASSERT_GT(no, ITEMS / 6);
    return same / ns - other / no;
}

/* CONFIG.md model.trainer_threads = 1 is the single writer's path: a batch
 * trains exactly what rc_engine_apply_click (which never defers) trains click
 * by click with the same batch boundaries (rc_engine_flush_index where a batch
 * ends), so the tables agree bit for bit. Two threads on batches too small to
 * fan out take that path too. */
TEST(shard_one_thread_is_the_single_writer_bit_for_bit)
{
    rc_engine *e1 = train_batches(1);
    rc_config c;
    shard_config(&c, 1);
    rc_engine *ref = e2e_engine_offline(&c);
    char u[16], it[16], ci[16], ca[16];
    for (uint32_t k = 0; k < EVENTS; k++) {
        click ck = stream_click(k);
        snprintf(u, sizeof u, "u%d", ck.user);
        snprintf(it, sizeof it, "i%d", ck.item);
        snprintf(ci, sizeof ci, "c%d", ck.city);
        snprintf(ca, sizeof ca, "k%d", ck.cate);
        e2e_engine_click(ref, u, it, ci, ca, ck.ts);
        if ((k + 1) % BATCH == 0)
            rc_engine_flush_index(ref);
    }
    rc_engine_sync(ref);
    rc_engine_counters c1, cr;
    rc_engine_counters_get(e1, &c1);
    rc_engine_counters_get(ref, &cr);
    ASSERT_EQ(c1.applied, EVENTS);
    ASSERT_EQ(c1.pairs, cr.pairs);
    ASSERT_GT(c1.pairs, EVENTS);
    ASSERT(tables_identical(rc_engine_table(e1), rc_engine_table(ref)));
    json_t *st = stats_of(e1);
    ASSERT_EQ(e2e_int(st, "training.threads"), 1);
    json_decref(st);
    rc_engine_destroy(ref);

    /* model.trainer_threads 2, batches of 32 events: below the fan-out. */
    shard_config(&c, 2);
    c.kafka_batch = 32;
    rc_engine *e2 = e2e_engine_offline(&c);
    char line[256];
    rc_batch *b = NULL;
    for (uint32_t k = 0; k < EVENTS; k++) {
        if (!b)
            ASSERT((b = rc_engine_batch_get(e2)) != NULL);
        click ck = stream_click(k);
        int n = click_json(line, sizeof line, &ck);
        ASSERT_EQ(rc_engine_batch_add(b, line, (size_t)n, 0, k), 0);
        if (rc_engine_batch_count(b) == 32 || k + 1 == EVENTS) {
            rc_engine_submit(e2, b);
            b = NULL;
        }
    }
    rc_engine_sync(e2);
    rc_engine *e1s = NULL;
    {
        /* the one-thread run with the same batch boundaries */
        shard_config(&c, 1);
        c.kafka_batch = 32;
        e1s = e2e_engine_offline(&c);
        for (uint32_t k = 0; k < EVENTS; k++) {
            if (!b)
                ASSERT((b = rc_engine_batch_get(e1s)) != NULL);
            click ck = stream_click(k);
            int n = click_json(line, sizeof line, &ck);
            ASSERT_EQ(rc_engine_batch_add(b, line, (size_t)n, 0, k), 0);
            if (rc_engine_batch_count(b) == 32 || k + 1 == EVENTS) {
                rc_engine_submit(e1s, b);
                b = NULL;
            }
        }
        rc_engine_sync(e1s);
    }
    ASSERT(tables_identical(rc_engine_table(e2), rc_engine_table(e1s)));
    st = stats_of(e2);
    ASSERT_EQ(e2e_int(st, "training.threads"), 2);
    ASSERT_EQ(e2e_int(st, "training.fanouts"), 0);
    json_decref(st);
    rc_engine_destroy(e1s);
    rc_engine_destroy(e2);
    rc_engine_destroy(e1);
}

/* model.trainer_threads 2 and 3: every click is trained exactly once (applied,
 * pairs and every item's count as with one thread, each shard's examples
 * summing to what was trained, every shard given work), the table differs
 * (other generators, Hogwild) and has learnt the communities as well. */
TEST(shard_threads_train_every_click_once)
{
    rc_engine *e1 = train_batches(1);
    rc_engine_counters c1;
    rc_engine_counters_get(e1, &c1);
    double m1 = community_margin(e1);
    json_t *s1 = stats_of(e1);
    double loss1 = json_real_value(json_object_get(json_object_get(s1, "training"), "loss"));
    long long hard1 = e2e_int(s1, "training.hard_negatives");
    json_decref(s1);
    fprintf(stderr, "1 thread: community margin %.3f\n", m1);
    ASSERT_DBL_OP(m1, >, 0.2);
    for (uint32_t threads = 2; threads <= 3; threads++) {
        rc_engine *e = train_batches(threads);
        rc_engine_counters c;
        rc_engine_counters_get(e, &c);
        ASSERT_EQ(c.applied, c1.applied);
        ASSERT_EQ(c.new_items, c1.new_items);
        ASSERT_EQ(c.pairs, c1.pairs);
        const rc_table *t = rc_engine_table(e), *t1 = rc_engine_table(e1);
        ASSERT_EQ(rc_table_size(t), rc_table_size(t1));
        for (uint32_t r = 0; r < rc_table_size(t); r++)
            ASSERT_EQ(rc_table_count(t, r), rc_table_count(t1, r));
        ASSERT(!tables_identical(t, t1));
        json_t *st = stats_of(e);
        json_t *shards = json_object_get(json_object_get(st, "training"), "shards");
        ASSERT_EQ(e2e_int(st, "training.threads"), threads);
        ASSERT_GT(e2e_int(st, "training.fanouts"), 0);
        ASSERT_EQ(json_array_size(shards), threads);
        long long pairs = 0;
        for (size_t k = 0; k < threads; k++) {
            json_t *sh = json_array_get(shards, k);
            ASSERT_GT(json_integer_value(json_object_get(sh, "examples")), 0);
            pairs += json_integer_value(json_object_get(sh, "pairs"));
        }
        ASSERT_EQ(pairs, (long long)c.pairs);
        /* every draw counted once: as many hard negatives as with one thread
         * (k per pair, the same pairs), give or take the clicks a shard
         * trained without a sampler table (none here) */
        ASSERT_EQ(e2e_int(st, "training.hard_negatives"), hard1);
        double loss = json_real_value(json_object_get(json_object_get(st, "training"), "loss"));
        ASSERT_DBL_OP(loss, >, 0.8 * loss1);
        ASSERT_DBL_OP(loss, <, 1.25 * loss1);
        json_decref(st);
        double m = community_margin(e);
        fprintf(stderr, "threads %u: community margin %.3f (1 thread %.3f), loss %.4f (%.4f)\n",
                threads, m, m1, loss, loss1);
        ASSERT_DBL_OP(m, >, 0.85 * m1);
        rc_engine_destroy(e);
    }
    rc_engine_destroy(e1);
}

/* The nice value and name of this process's threads called name (comm). */
static int thread_nice(const char *name, int *nice)
{
    char path[96], buf[1024];
    uv_fs_t req;
    uv_dirent_t d;
    int found = 0;
    if (uv_fs_scandir(NULL, &req, "/proc/self/task", 0, NULL) < 0)
        RC__FAIL("scandir /proc/self/task");
    /* Every entry is taken, even after a match: libuv frees the entry it
     * returned last only on the next call, so stopping early leaks it. */
    while (uv_fs_scandir_next(&req, &d) != UV_EOF) {
        if (found)
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/stat", d.name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = '\0';
        char *open = strchr(buf, '('), *close = strrchr(buf, ')');
        if (!open || !close || (size_t)(close - open - 1) != strlen(name) ||
            strncmp(open + 1, name, strlen(name)) != 0)
            continue;
        int field = 2;
        char *p = close;
        for (; *p && field < 19; p++)
            if (*p == ' ')
                field++;
        found = sscanf(p, "%d", nice) == 1;
    }
    uv_fs_req_cleanup(&req);
    return found;
}

struct until_applied {
    rc_engine *e;
    uint64_t n;
};

static int applied_reached(void *ud)
{
    struct until_applied *u = ud;
    return rc_engine_applied(u->e) >= u->n;
}

/* Calls fn(tid, is_background, ud) for each thread of this process that is
 * still there; is_background: named rc-* (the engine's background threads,
 * and the index retrains, which keep the trainer's name). */
static void rc_threads_each(void (*fn)(pid_t tid, int bg, void *ud), void *ud)
{
    char path[96], comm[32];
    uv_fs_t req;
    uv_dirent_t d;
    if (uv_fs_scandir(NULL, &req, "/proc/self/task", 0, NULL) < 0)
        RC__FAIL("scandir /proc/self/task");
    while (uv_fs_scandir_next(&req, &d) != UV_EOF) {
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", d.name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue; /* exited meanwhile */
        size_t len = fread(comm, 1, sizeof comm - 1, f);
        fclose(f);
        comm[len] = '\0';
        fn((pid_t)atoi(d.name), strncmp(comm, "rc-", 3) == 0, ud);
    }
    uv_fs_req_cleanup(&req);
}

struct policies {
    int idle, other, others_idle;
};

static void count_policy(pid_t tid, int bg, void *ud)
{
    struct policies *p = ud;
    int pol = sched_getscheduler(tid);
    if (pol < 0)
        return; /* exited meanwhile */
    if (bg)
        (pol == SCHED_IDLE ? &p->idle : &p->other)[0]++;
    else
        p->others_idle += pol == SCHED_IDLE;
}

/* Scheduling policy of this process's threads: *idle / *other count the
 * rc-* threads at SCHED_IDLE and at any other policy; *others_idle counts
 * the other threads at SCHED_IDLE. */
static void rc_thread_policies(int *idle, int *other, int *others_idle)
{
    struct policies p = {0, 0, 0};
    rc_threads_each(count_policy, &p);
    *idle = p.idle;
    *other = p.other;
    *others_idle = p.others_idle;
}

struct cpus_seen {
    const cpu_set_t *bg;
    int on_bg, off_bg, others_on_bg;
};

static void count_cpus(pid_t tid, int bg, void *ud)
{
    struct cpus_seen *c = ud;
    cpu_set_t s, both;
    if (sched_getaffinity(tid, sizeof s, &s))
        return; /* exited meanwhile */
    CPU_AND(&both, &s, c->bg);
    if (bg)
        (CPU_EQUAL(&s, c->bg) ? &c->on_bg : &c->off_bg)[0]++;
    else
        c->others_on_bg += CPU_COUNT(&both) > 0;
}

/* The cores of this process's threads: *on_bg counts the rc-* threads whose
 * allowed set is exactly bg, *off_bg the rc-* threads with any other set;
 * *others_on_bg the other threads allowed any core of bg. */
static void rc_thread_cpus(const cpu_set_t *bg, int *on_bg, int *off_bg, int *others_on_bg)
{
    struct cpus_seen c = {bg, 0, 0, 0};
    rc_threads_each(count_cpus, &c);
    *on_bg = c.on_bg;
    *off_bg = c.off_bg;
    *others_on_bg = c.others_on_bg;
}

/* CONFIG.md pipeline.background_cpus "auto": the decoder, the trainer, its
 * shard helpers and the checkpoint writer run on the upper half of the
 * allowed cores; the caller (the loop thread, which the daemon pins to the
 * other half itself) keeps its set. */
TEST(shard_threaded_engine_background_cpus)
{
    cpu_set_t all, bg, rest;
    if (!e2e_cpus_auto(&all, &bg, &rest))
        RC_SKIP("one core allowed: nothing to pin apart");
    rc_config c;
    shard_config(&c, 2);
    snprintf(c.background_cpus, sizeof c.background_cpus, "auto");
    uv_loop_t loop;
    rc_engine *e = e2e_engine_threaded(&c, &loop, NULL, NULL);
    for (uint32_t k = 0; k < 4 * BATCH; k += BATCH)
        submit_batch(e, &loop, k);
    e2e_loop_until(&loop, applied_reached, &(struct until_applied){e, 4 * BATCH},
                   (int)e2e_scaled_ms(PATIENCE_MS), "every event applied");
    int on = 0, off = 0, others = 0;
    rc_thread_cpus(&bg, &on, &off, &others);
    ASSERT_EQ(off, 0);
    ASSERT_GE(on, 3); /* decoder, trainer, shard helper (the writer only with a data dir) */
    cpu_set_t mine;
    ASSERT_EQ(sched_getaffinity(0, sizeof mine, &mine), 0);
    ASSERT(CPU_EQUAL(&mine, &all)); /* the caller keeps its cores */
    e2e_engine_threaded_close(e, &loop);
    /* Without the key nothing is pinned. */
    shard_config(&c, 2);
    e = e2e_engine_threaded(&c, &loop, NULL, NULL);
    submit_batch(e, &loop, 0);
    e2e_loop_until(&loop, applied_reached, &(struct until_applied){e, BATCH},
                   (int)e2e_scaled_ms(PATIENCE_MS), "every event applied");
    rc_thread_cpus(&all, &on, &off, &others);
    ASSERT_EQ(off, 0);
    ASSERT_GE(on, 3);
    e2e_engine_threaded_close(e, &loop);
}

/* CONFIG.md pipeline.background_policy "idle": the decoder, the trainer, the
 * shard helpers it starts and the checkpoint writer run SCHED_IDLE (and so do
 * the index retrains the trainer starts: counted when one runs at the time of
 * a look); the request workers and the caller keep their policy. */
TEST(shard_threaded_engine_background_policy_idle)
{
    rc_config c;
    shard_config(&c, 2);
    c.background_idle = 1;
    c.ivf_min = 64; /* IVF partitions, so that retrains start from the trainer */
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/rc-shard-idle-XXXXXX");
    ASSERT(mkdtemp(dir) != NULL);
    snprintf(c.data_dir, sizeof c.data_dir, "%s", dir);
    c.ckpt_interval_ms = 50;
    int mine = sched_getscheduler(0), idle = 0, other = 0, others_idle = 0, most = 0;
    int before_others;
    rc_thread_policies(&idle, &other, &before_others); /* 0 unless this runner is SCHED_IDLE */
    uv_loop_t loop;
    rc_engine *e = e2e_engine_threaded(&c, &loop, NULL, NULL);
    for (uint32_t k = 0; k < 8 * BATCH; k += BATCH) {
        submit_batch(e, &loop, k);
        /* (a thread starting may be at SCHED_IDLE before its rc- name) */
        rc_thread_policies(&idle, &other, &others_idle);
        ASSERT_EQ(other, 0);
        most = RC_MAX(most, idle);
    }
    e2e_loop_until(&loop, applied_reached, &(struct until_applied){e, 8 * BATCH},
                   (int)e2e_scaled_ms(PATIENCE_MS), "every event applied");
    rc_thread_policies(&idle, &other, &others_idle);
    ASSERT_EQ(other, 0);
    ASSERT_EQ(others_idle, before_others);       /* request workers, loop, librdkafka: unchanged */
    ASSERT(thread_nice("rc-shard1", &(int){0})); /* the helper exists */
    ASSERT(thread_nice("rc-checkpoint", &(int){0})); /* and the writer */
    ASSERT_GE(RC_MAX(most, idle), 4);                /* decoder, trainer, shard, writer */
    ASSERT_EQ(sched_getscheduler(0), mine);          /* the caller keeps its policy */
    json_t *st = stats_of(e);
    ASSERT_GT(e2e_int(st, "training.fanouts"), 0);
    json_decref(st);
    e2e_engine_threaded_close(e, &loop);
    e2e_sh(NULL, "rm -rf %s", dir);
}

/* DESIGN.md "Threads": in the daemon's threaded engine the shard helpers are
 * started by the trainer, named rc-shardN and at its nice value; the batches
 * are trained by them, and destroy joins them. */
TEST(shard_threaded_engine_helpers_at_trainer_nice)
{
    rc_config c;
    shard_config(&c, 2);
    c.background_nice = 3;
    errno = 0;
    int base = getpriority(PRIO_PROCESS, 0);
    ASSERT_EQ(errno, 0);
    if (base > 19 - 3)
        RC_SKIP("already at nice %d", base);
    uv_loop_t loop;
    rc_engine *e = e2e_engine_threaded(&c, &loop, NULL, NULL);
    for (uint32_t k = 0; k < 4 * BATCH; k += BATCH)
        submit_batch(e, &loop, k);
    e2e_loop_until(&loop, applied_reached, &(struct until_applied){e, 4 * BATCH}, PATIENCE_MS,
                   "every event applied");
    int tn = 0, sn = 0;
    ASSERT(thread_nice("rc-trainer", &tn));
    ASSERT(thread_nice("rc-shard1", &sn));
    ASSERT_EQ(tn, base + 3);
    ASSERT_EQ(sn, tn);
    json_t *st = stats_of(e);
    ASSERT_GT(e2e_int(st, "training.fanouts"), 0);
    json_decref(st);
    e2e_engine_threaded_close(e, &loop);
}
