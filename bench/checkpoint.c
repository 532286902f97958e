/* Checkpoint cost and restore time.
 *
 *   bench_checkpoint [--items N (100000)] [--dim D (64)] [--takes K (20)]
 *                    [--dir DIR (/tmp)] [--max-mb-s R (0)] [--keep] [--users U (0)]
 *                    [--tower-clicks C (0)]
 *
 * Fills an item table directly (N items over 8 cities x 6 categories, random
 * vectors), then measures:
 *   take     the trainer's pause: rc_checkpoint_take (copy of counts and both
 *            vectors) K times after one reserve, p50/p99/max in ms;
 *   write    rc_checkpoint_write (temp file, fsync, rename, fsync dir): s, MB/s;
 *   load     rc_checkpoint_load alone (ids + vectors, CRCs): s;
 *   restore  an offline engine created on the directory: restore + sampler +
 *            index rebuild, i.e. the time until recalld could serve: s.
 *   state    with --users U (0 = skip): U users' sessions (1..20 clicks each,
 *            then one more each in a random order, as a live stream mixes users;
 *            sessions.history 20) and the co-occurrence channel they feed
 *            (defaults: 500 neighbours, 128 MiB): the state section a take
 *            adds (rc_session_save + rc_cooc_save: bytes, ms, next to the
 *            take's own pause) and its load.
 *   tower    with --tower-clicks C (0 = skip): the tower retrainer's replay
 *            buffer of C clicks (one in ten with 4 tags) in the state section
 *            (checkpoint.tower_replay): rc_replay_save's bytes and ms in the
 *            pause, rc_replay_load's s; the restore below loads it.
 * The target: restore <= 2 s at 1M x 64 (`--items 1000000`). */
#include <getopt.h>
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "recalld/buf.h"
#include "recalld/checkpoint.h"
#include "recalld/common.h"
#include "recalld/cooc.h"
#include "recalld/replay.h"
#include "recalld/profile.h"
#include "recalld/session.h"
#include "recalld/config.h"
#include "recalld/engine.h"
#include "recalld/table.h"

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* CPU seconds (user + system, all threads) used so far: on a shared machine
 * the wall clock also counts other processes' time. */
static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static rc_table *fill(uint32_t n, uint32_t dim)
{
    rc_table_opts o = {.dim = dim, .max_items = n};
    rc_table *t;
    rc_rng rng;
    char err[256], id[32], name[16];
    if (rc_table_create(&o, &t, err, sizeof err)) {
        fprintf(stderr, "bench_checkpoint: %s\n", err);
        exit(1);
    }
    rc_rng_seed(&rng, 7);
    for (uint32_t i = 0; i < 8; i++) {
        uint32_t x;
        snprintf(name, sizeof name, "c%u", i);
        rc_table_city_id(t, name, strlen(name), &x);
    }
    for (uint32_t i = 0; i < 6; i++) {
        uint32_t x;
        snprintf(name, sizeof name, "k%u", i);
        rc_table_cate_id(t, name, strlen(name), &x);
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t row;
        int len = snprintf(id, sizeof id, "item-%u", i);
        if (rc_table_append(t, id, (size_t)len, i % 8, (i / 8) % 6, 1 + rc_rng_below(&rng, 100),
                            &row)) {
            fprintf(stderr, "bench_checkpoint: append failed at %u\n", i);
            exit(1);
        }
        float *in = rc_table_in(t, row), *out = rc_table_out(t, row);
        for (uint32_t d = 0; d < dim; d++) {
            in[d] = rc_rng_float(&rng) - 0.5f;
            out[d] = (rc_rng_float(&rng) - 0.5f) * 0.1f;
        }
    }
    return t;
}

/* Appends a section of the engine's state blob (src/engine_state.c: u32
 * tag, u64 length, bytes) holding p[0..len). */
static void blob_section(rc_buf *o, uint32_t tag, const void *p, uint64_t len)
{
    rc_buf_append(o, &tag, 4);
    rc_buf_append(o, &len, 8);
    rc_buf_append(o, p, len);
}

/* The state section of `users` users over n items; take_ms: the take's p50.
 * blob: the same as the engine's state section, for the checkpoint written
 * next (so the engine's restore below loads it). */
static void bench_state(uint32_t n, uint32_t users, double take_ms, rc_buf *blob)
{
    rc_session_opts so = {.max_users = users, .history = 20};
    rc_cooc_opts co = {.max_items = n, .neighbors = 500, .window = 20};
    rc_session *s, *s2;
    rc_cooc *c, *c2;
    rc_profile_opts po = {.max_users = users};
    rc_profile *pf, *pf2;
    rc_rng rng;
    char err[256], user[32];
    uint32_t ctx[64], nctx;
    if (rc_session_create(&so, &s, err, sizeof err) || rc_cooc_create(&co, &c, err, sizeof err) ||
        rc_profile_create(&po, &pf, err, sizeof err)) {
        fprintf(stderr, "bench_checkpoint: %s\n", err);
        exit(1);
    }
    rc_rng_seed(&rng, 9);
    uint64_t clicks = 0, t0 = rc_now_ns();
    for (uint32_t u = 0; u < users; u++) {
        int len = snprintf(user, sizeof user, "user-%u", u);
        uint32_t k = 1 + rc_rng_below(&rng, 20), home = rc_rng_below(&rng, n);
        uint64_t tags[3] = {rc_rng_below(&rng, 50), 50 + rc_rng_below(&rng, 50), 100};
        rc_profile_note(pf, user, (size_t)len, 1700000000000LL, 1 + rc_rng_below(&rng, 9), tags,
                        rc_rng_below(&rng, 4), k, 1);
        for (uint32_t i = 0; i < k; i++) {
            uint32_t row = (home + rc_rng_below(&rng, 200)) % n;
            rc_session_add(s, user, (size_t)len, row, 1700000000000LL + i * 60000, ctx, 64, &nctx,
                           NULL);
            rc_cooc_click(c, row, ctx, nctx, 1700000000000LL + i * 60000);
            clicks++;
        }
    }
    /* then one more click each for the users in a random order: in a live
     * daemon the activity order is not the order the records were made in */
    uint32_t *perm = malloc((size_t)users * sizeof *perm);
    for (uint32_t u = 0; perm && u < users; u++)
        perm[u] = u;
    for (uint32_t u = users; perm && u > 1; u--) {
        uint32_t j = rc_rng_below(&rng, u), t = perm[u - 1];
        perm[u - 1] = perm[j];
        perm[j] = t;
    }
    for (uint32_t i = 0; perm && i < users; i++) {
        int len = snprintf(user, sizeof user, "user-%u", perm[i]);
        int64_t ts = 1700000000000LL + 20 * 60000 + (int64_t)i;
        uint32_t row = rc_rng_below(&rng, n);
        rc_profile_note(pf, user, (size_t)len, ts, 0, NULL, 0, 1, 0);
        rc_session_add(s, user, (size_t)len, row, ts, ctx, 64, &nctx, NULL);
        rc_cooc_click(c, row, ctx, nctx, ts);
        clicks++;
    }
    free(perm);
    printf("state: %u users, %llu clicks filled in %.2f s (the last click of each in a random "
           "order)\n",
           users, (unsigned long long)clicks, (rc_now_ns() - t0) / 1e9);
    rc_buf b;
    rc_buf_init(&b, 0);
    /* reserved before the pause as the engine does on its first checkpoint:
     * what the sessions and the channel hold in memory */
    rc_session_stats sst;
    rc_cooc_stats cst;
    rc_profile_stats pst;
    rc_session_stats_get(s, &sst);
    rc_cooc_stats_get(c, &cst);
    rc_profile_stats_get(pf, &pst);
    size_t want = sst.bytes + cst.bytes + pst.bytes;
    t0 = rc_now_ns();
    rc_buf_reserve_touched(&b, want);
    printf("state reserve (checkpoint thread, before the pause): %.1f MB in %.1f ms\n", want / 1e6,
           (rc_now_ns() - t0) / 1e6);
    t0 = rc_now_ns();
    rc_session_save(s, &b);
    uint64_t ss = rc_now_ns() - t0;
    size_t sb = b.len;
    t0 = rc_now_ns();
    rc_cooc_save(c, &b);
    uint64_t cs = rc_now_ns() - t0;
    size_t cb = b.len - sb;
    t0 = rc_now_ns();
    rc_profile_save(pf, &b);
    uint64_t ps = rc_now_ns() - t0;
    rc_cooc_stats st;
    rc_cooc_stats_get(c, &st);
    printf("state save (added to the trainer's pause): sessions %.1f MB in %.1f ms, "
           "profiles %.1f MB in %.1f ms, co-occurrence %.1f MB (%llu items, %llu entries) in "
           "%.1f ms; %.2fx the take's p50 (%.1f ms)\n",
           sb / 1e6, ss / 1e6, (b.len - sb - cb) / 1e6, ps / 1e6, cb / 1e6,
           (unsigned long long)st.items, (unsigned long long)st.entries, cs / 1e6,
           (ss + cs + ps) / 1e6 / take_ms, take_ms);
    /* into a buffer that grows in the pause (no reserve) */
    rc_buf g;
    rc_buf_init(&g, 0);
    t0 = rc_now_ns();
    rc_session_save(s, &g);
    rc_cooc_save(c, &g);
    rc_profile_save(pf, &g);
    printf("state save without the reserve (grows in the pause): %.1f ms\n",
           (rc_now_ns() - t0) / 1e6);
    rc_buf_free(&g);
    rc_session_create(&so, &s2, err, sizeof err);
    rc_cooc_create(&co, &c2, err, sizeof err);
    t0 = rc_now_ns();
    rc_session_load(s2, b.data, sb, n, NULL, NULL);
    uint64_t sl = rc_now_ns() - t0;
    t0 = rc_now_ns();
    rc_cooc_load(c2, b.data + sb, cb, n, NULL);
    uint64_t cl = rc_now_ns() - t0;
    rc_profile_create(&po, &pf2, err, sizeof err);
    t0 = rc_now_ns();
    rc_profile_load(pf2, b.data + sb + cb, b.len - sb - cb, NULL);
    printf("state load (restart): sessions %.2f s, profiles %.2f s, co-occurrence %.2f s\n",
           sl / 1e9, (rc_now_ns() - t0) / 1e9, cl / 1e9);
    /* the engine's layout (src/engine_state.c): sessions (1), profiles (3),
     * co-occurrence (2) after the head main wrote */
    blob_section(blob, 1, b.data, sb);
    blob_section(blob, 3, b.data + sb + cb, b.len - sb - cb);
    blob_section(blob, 2, b.data + sb, cb);
    rc_profile_destroy(pf);
    rc_profile_destroy(pf2);
    rc_buf_free(&b);
    rc_session_destroy(s);
    rc_session_destroy(s2);
    rc_cooc_destroy(c);
    rc_cooc_destroy(c2);
}

/* The tower retrainer's buffer of `clicks` clicks over n items as section 4
 * of blob; take_ms: the take's p50. */
static void bench_tower_replay(uint32_t n, uint32_t clicks, double take_ms, rc_buf *blob)
{
    rc_replay *r, *back;
    char err[256];
    if (rc_replay_create(clicks, &r, err, sizeof err) ||
        rc_replay_create(clicks, &back, err, sizeof err)) {
        fprintf(stderr, "bench_checkpoint: %s\n", err);
        exit(1);
    }
    rc_rng rng;
    rc_rng_seed(&rng, 11);
    for (uint32_t i = 0; i < clicks; i++) {
        uint64_t tags[4] = {1 + i % 97, 200 + i % 13, 300, 400 + i % 7};
        rc_replay_add(r, rc_rng_below(&rng, clicks / 10 + 1), rc_rng_below(&rng, n),
                      1700000000000LL + i, i % 5 ? 0 : 1 + i % 9, i % 10 ? NULL : tags,
                      i % 10 ? 0 : 4);
    }
    rc_buf b;
    rc_buf_init(&b, 0);
    rc_buf_reserve_touched(&b, (size_t)clicks * 40 + 8); /* before the pause, as the engine */
    uint64_t t0 = rc_now_ns();
    rc_replay_save(r, &b);
    uint64_t save = rc_now_ns() - t0;
    t0 = rc_now_ns();
    uint64_t count = 0;
    int rc = rc_replay_load(back, b.data, b.len, n, &count, NULL);
    printf("tower replay buffer (checkpoint.tower_replay): %u clicks, %.1f MB, save %.1f ms "
           "(added to the trainer's pause; %.2fx the take's p50), load %.2f s (%s, %llu clicks)\n",
           clicks, b.len / 1e6, save / 1e6, save / 1e6 / take_ms, (rc_now_ns() - t0) / 1e9,
           rc ? "failed" : "ok", (unsigned long long)count);
    blob_section(blob, 4, b.data, b.len);
    rc_buf_free(&b);
    rc_replay_destroy(r);
    rc_replay_destroy(back);
}

/* An offline engine created on cfg's data directory (the restore), timed;
 * NULL (said) when it cannot start. */
static rc_engine *timed_restore(const rc_config *cfg, const char *what)
{
    char err[512];
    rc_engine *e;
    double c0 = cpu_s();
    uint64_t t0 = rc_now_ns();
    if (rc_engine_create(cfg, NULL, NULL, NULL, &e, err, sizeof err)) {
        fprintf(stderr, "bench_checkpoint: %s\n", err);
        return NULL;
    }
    printf("%s: %.2f s wall, %.2f s CPU\n", what, (rc_now_ns() - t0) / 1e9, cpu_s() - c0);
    return e;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"items", 1, 0, 'n'}, {"dim", 1, 0, 'd'},          {"takes", 1, 0, 'k'},
        {"dir", 1, 0, 'o'},   {"max-mb-s", 1, 0, 'r'},     {"keep", 0, 0, 'K'},
        {"users", 1, 0, 'u'}, {"tower-clicks", 1, 0, 'T'}, {0, 0, 0, 0}};
    uint32_t n = 100000, dim = 64, takes = 20, users = 0, tclicks = 0;
    double max_mb_s = 0;
    const char *base = "/tmp";
    char dir[400], err[512];
    int c, keep = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            n = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'd':
            dim = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'k':
            takes = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'o':
            base = optarg;
            break;
        case 'r':
            max_mb_s = atof(optarg);
            break;
        case 'K':
            keep = 1;
            break;
        case 'u':
            users = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'T':
            tclicks = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        default:
            fprintf(stderr, "usage: see bench/checkpoint.c\n");
            return 2;
        }
    }
    if (n == 0 || takes == 0) {
        fprintf(stderr, "bench_checkpoint: --items and --takes must be >= 1\n");
        return 2;
    }
    snprintf(dir, sizeof dir, "%s/rc-bench-ckpt-XXXXXX", base);
    if (!mkdtemp(dir)) {
        perror(dir);
        return 1;
    }
    uint64_t t0 = rc_now_ns();
    rc_table *t = fill(n, dim);
    printf("items %u dim %u: table filled in %.2f s\n", n, dim, (rc_now_ns() - t0) / 1e9);

    rc_checkpoint *ck;
    rc_checkpoint_meta m = {0};
    snprintf(m.topic, sizeof m.topic, "clicks");
    rc_checkpoint_meta_set(&m, "applied", 123);
    rc_checkpoint_create(&ck, err, sizeof err);
    t0 = rc_now_ns();
    rc_checkpoint_reserve(ck, n, dim);
    printf("reserve (checkpoint thread, before the pause): %.1f ms\n", (rc_now_ns() - t0) / 1e6);
    uint64_t *ns = calloc(takes, sizeof *ns);
    for (uint32_t i = 0; i < takes; i++) {
        t0 = rc_now_ns();
        rc_checkpoint_take(ck, t, &m);
        ns[i] = rc_now_ns() - t0;
    }
    qsort(ns, takes, sizeof *ns, cmp_u64);
    double mb = (double)n * dim * 8 / 1e6;
    printf("take (trainer pause), %u takes: p50 %.1f ms  p99 %.1f ms  max %.1f ms  "
           "(%.0f MB of vectors, %.1f GB/s)\n",
           takes, ns[takes / 2] / 1e6, ns[(size_t)((takes - 1) * 0.99)] / 1e6, ns[takes - 1] / 1e6,
           mb, mb / 1e3 / (ns[takes / 2] / 1e9));
    rc_buf blob;
    rc_buf_init(&blob, 0);
    if (users || tclicks) { /* the engine's state section (src/engine_state.c) */
        const uint32_t head[2] = {0x54534352u, 1}; /* "RCST", version 1 */
        rc_buf_append(&blob, head, sizeof head);
        if (users)
            bench_state(n, users, ns[takes / 2] / 1e6, &blob);
        if (tclicks)
            bench_tower_replay(n, tclicks, ns[takes / 2] / 1e6, &blob);
        rc_checkpoint_swap_aux(ck, &blob); /* written with the table, restored below */
    }

    rc_checkpoint_write_opts wo = {.dir = dir, .max_mb_s = max_mb_s};
    rc_checkpoint_info info;
    if (rc_checkpoint_write(ck, &wo, &info, err, sizeof err)) {
        fprintf(stderr, "bench_checkpoint: %s\n", err);
        return 1;
    }
    printf("write: %.2f s, %.1f MB, %.0f MB/s (temp file, fsync, rename, fsync dir)\n",
           info.write_ns / 1e9, info.bytes / 1e6, info.bytes / 1e6 / (info.write_ns / 1e9));
    rc_checkpoint_destroy(ck);
    rc_table_destroy(t);

    rc_table *back;
    rc_checkpoint_meta got;
    rc_table_opts to = {.dim = dim, .max_items = n};
    double lc0 = cpu_s();
    t0 = rc_now_ns();
    if (rc_checkpoint_load(info.path, &to, &back, &got, err, sizeof err)) {
        fprintf(stderr, "bench_checkpoint: %s\n", err);
        return 1;
    }
    printf("load: %.2f s wall, %.2f s CPU (ids, counts, vectors, CRCs)\n", (rc_now_ns() - t0) / 1e9,
           cpu_s() - lc0);
    rc_table_destroy(back);
    rc_checkpoint_meta_free(&got);

    rc_config cfg;
    rc_config_defaults(&cfg);
    cfg.dim = dim;
    cfg.max_items = n;
    snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s", dir);
    if (tclicks) { /* retraining on (no model: it never runs here), its buffer restored */
        cfg.tower_retrain_interval_s = 3600;
        cfg.tower_replay_clicks = RC_MAX(tclicks, 1000);
        cfg.tower_retrain_min_examples = 1;
    }
    rc_engine *e = timed_restore(&cfg, "restore (engine: load + samplers + index rebuild, "
                                       "ready to serve)");
    if (!e)
        return 1;
    if (users || tclicks) {
        rc_buf st;
        rc_buf_init(&st, 0);
        rc_engine_stats_json(e, &st);
        const char *u = strstr(st.data ? st.data : "", "\"restored_users\"");
        printf("  with the state section, loaded side by side: %.170s\n", u ? u : "(not reported)");
        rc_buf_free(&st);
    }
    rc_engine_destroy(e);
    if (users || tclicks) { /* the same file, the sections skipped: the reference of the same run */
        cfg.ckpt_sessions = cfg.ckpt_cooc = cfg.ckpt_tower_replay = 0;
        if (!(e = timed_restore(&cfg, "restore with checkpoint.sessions, checkpoint.cooc and "
                                      "checkpoint.tower_replay false")))
            return 1;
        rc_engine_destroy(e);
    }
    rc_buf_free(&blob);
    free(ns);
    char cmd[4200];
    if (keep) {
        printf("kept: %s\n", info.path);
        return 0;
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
