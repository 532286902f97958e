/* Backlog drain through the threaded engine (decoder and trainer threads, the
 * daemon's pipeline without Kafka) with replay off and on, alternately in one
 * process: the cost of train.replay_ratio while events wait (issue 14).
 *   bench_replay_ab FILE.jsonl [ROUNDS] [RATIO]
 * The whole file is the backlog: before every batch the producer reports the
 * events still waiting (rc_engine_set_backlog, what recalld's consumer does
 * with its lag), then submits the batch as soon as one is free. events/s =
 * events / (first submit .. all applied). After each drain the engine idles
 * for 1 s: the replay-on engine replays then. Rounds alternate the order
 * (off, on), (on, off), ...; the ratio on/off is printed per round and for
 * the sums, of wall-clock events/s and of events per CPU second of the
 * process (user + system, producer included): on a shared machine the
 * second is the steadier one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include "recalld/common.h"
#include "recalld/config.h"
#include "recalld/engine.h"

struct lines {
    char *data;
    size_t *off, *len, n;
};

static int load(const char *path, struct lines *L)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    L->data = malloc((size_t)sz + 1);
    if (!L->data || fread(L->data, 1, (size_t)sz, f) != (size_t)sz) {
        fclose(f);
        return -1;
    }
    fclose(f);
    size_t cap = 1 << 20;
    L->off = malloc(cap * sizeof *L->off);
    L->len = malloc(cap * sizeof *L->len);
    L->n = 0;
    for (size_t i = 0; i < (size_t)sz;) {
        char *nl = memchr(L->data + i, '\n', (size_t)sz - i);
        size_t end = nl ? (size_t)(nl - L->data) : (size_t)sz;
        if (end > i) {
            if (L->n == cap) {
                cap *= 2;
                L->off = realloc(L->off, cap * sizeof *L->off);
                L->len = realloc(L->len, cap * sizeof *L->len);
            }
            L->off[L->n] = i;
            L->len[L->n++] = end - i;
        }
        i = end + 1;
    }
    return 0;
}

static long long stat_field(rc_engine *e, const char *key)
{
    rc_buf b;
    rc_buf_init(&b, 0);
    rc_engine_stats_json(e, &b);
    const char *p = strstr(b.data, key);
    long long v = p ? atoll(p + strlen(key)) : -1;
    rc_buf_free(&b);
    return v;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* One drain; returns events/s, *per_cpu events per CPU second. */
static double drain(const struct lines *L, float ratio, const char *name, double *per_cpu)
{
    rc_config c;
    char err[512];
    rc_config_defaults(&c);
    c.replay_ratio = ratio;
    uv_loop_t loop;
    uv_loop_init(&loop);
    rc_engine *e;
    if (rc_engine_create(&c, &loop, NULL, NULL, &e, err, sizeof err)) {
        fprintf(stderr, "bench_replay_ab: %s\n", err);
        exit(1);
    }
    uint64_t t0 = rc_now_ns();
    double c0 = cpu_s();
    size_t i = 0;
    while (i < L->n) {
        rc_engine_set_backlog(e, L->n - i);
        rc_batch *b;
        while (!(b = rc_engine_batch_get(e))) {
            rc_engine_set_backlog(e, L->n - i);
            uv_run(&loop, UV_RUN_NOWAIT);
            usleep(50);
        }
        while (i < L->n &&
               rc_engine_batch_add(b, L->data + L->off[i], L->len[i], 0, (int64_t)i) == 0)
            i++;
        rc_engine_submit(e, b);
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    rc_engine_set_backlog(e, 0);
    rc_engine_sync(e);
    double s = (double)(rc_now_ns() - t0) / 1e9, cpu = cpu_s() - c0;
    *per_cpu = (double)L->n / cpu;
    long long replayed = stat_field(e, "\"replayed\":"), skipped = stat_field(e, "\"skipped\":");
    long long yields = stat_field(e, "\"yields\":"), items = stat_field(e, "\"items\":");
    sleep(1);
    long long idle = stat_field(e, "\"replayed\":") - replayed;
    printf("   %-9s %8.0f events/s, %8.0f events per CPU s (%zu events, %lld items, %.1f s, "
           "%.1f CPU s); during the drain: %lld replayed, %lld given up, %lld yields; 1 s idle "
           "after it: %lld replayed\n",
           name, (double)L->n / s, *per_cpu, L->n, items, s, cpu, replayed, skipped, yields, idle);
    fflush(stdout);
    rc_engine_destroy(e);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return (double)L->n / s;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_replay_ab FILE.jsonl [ROUNDS] [RATIO]\n");
        return 2;
    }
    int rounds = argc > 2 ? atoi(argv[2]) : 3;
    float ratio = argc > 3 ? (float)atof(argv[3]) : 50.0f;
    struct lines L;
    if (load(argv[1], &L)) {
        perror(argv[1]);
        return 1;
    }
    char on_name[32];
    snprintf(on_name, sizeof on_name, "replay %g", (double)ratio);
    double sum_off = 0, sum_on = 0, cpu_off = 0, cpu_on = 0;
    for (int r = 1; r <= rounds; r++) {
        double off, on, coff, con;
        if (r % 2) {
            off = drain(&L, 0, "replay 0", &coff);
            on = drain(&L, ratio, on_name, &con);
        } else {
            on = drain(&L, ratio, on_name, &con);
            off = drain(&L, 0, "replay 0", &coff);
        }
        printf("   round %d on/off: events/s %.3fx, events per CPU s %.3fx\n", r, on / off,
               con / coff);
        sum_off += off;
        sum_on += on;
        cpu_off += coff;
        cpu_on += con;
    }
    printf("== replay %g / replay 0 over %d round(s): events/s %.3fx, events per CPU s %.3fx\n",
           (double)ratio, rounds, sum_on / sum_off, cpu_on / cpu_off);
    free(L.data);
    free(L.off);
    free(L.len);
    return 0;
}
