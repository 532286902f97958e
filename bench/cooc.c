/* The co-occurrence channel's cost on the trainer and on a recall: a JSONL
 * click file through an offline engine with the channel off (the reference)
 * and on (the defaults), alternately `rounds` times in one process; then
 * `recalls` avg, itemknn and fused recalls of the file's users on the last
 * engine.
 * Prints events/s of each and the ratios (on / off), which are what to read
 * on a shared machine.
 *   bench_cooc FILE.jsonl [rounds] [recalls]                                 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/common.h"
#include "recalld/config.h"
#include "recalld/engine.h"

static double feed(rc_engine *e, char **lines, size_t *lens, size_t n)
{
    uint64_t t0 = rc_now_ns();
    rc_batch *b = rc_engine_batch_get(e);
    for (size_t i = 0; i < n; i++) {
        if (rc_engine_batch_add(b, lines[i], lens[i], 0, (int64_t)i) == RC_E2BIG) {
            rc_engine_submit(e, b);
            b = rc_engine_batch_get(e);
            rc_engine_batch_add(b, lines[i], lens[i], 0, (int64_t)i);
        }
    }
    rc_engine_submit(e, b);
    rc_engine_sync(e);
    return (double)(rc_now_ns() - t0) / 1e9;
}

/* Seconds for `recalls` recalls of users u0.. (recalld-gen's ids) in a mode:
 * 0 avg, 1 itemknn, 2 fused. */
static double recalls(rc_engine *e, int n, int mode)
{
    rc_hit hits[50];
    uint64_t t0 = rc_now_ns();
    for (int i = 0; i < n; i++) {
        char user[32];
        uint32_t got = 0;
        int fb = 0;
        int len = snprintf(user, sizeof user, "u%d", i % 1000);
        rc_recall_req q = {
            .user = user, .ulen = (size_t)len, .k = 50, .itemknn = mode == 1, .fused = mode == 2};
        rc_engine_recall(e, &q, hits, &got, &fb);
    }
    return (double)(rc_now_ns() - t0) / 1e9;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_cooc FILE.jsonl [rounds] [recalls]\n");
        return 2;
    }
    int rounds = argc > 2 ? atoi(argv[2]) : 2, nrec = argc > 3 ? atoi(argv[3]) : 2000;
    FILE *f = fopen(argv[1], "r");
    if (!f) {
        perror(argv[1]);
        return 1;
    }
    size_t n = 0, cap = 0, lcap = 0;
    char **lines = NULL, *line = NULL;
    size_t *lens = NULL;
    ssize_t len;
    while ((len = getline(&line, &lcap, f)) > 0) {
        if (n == cap) {
            cap = cap ? cap * 2 : 4096;
            lines = realloc(lines, cap * sizeof *lines);
            lens = realloc(lens, cap * sizeof *lens);
            if (!lines || !lens)
                return 1;
        }
        lens[n] = (size_t)len - (line[len - 1] == '\n');
        lines[n] = strndup(line, lens[n]);
        n++;
    }
    fclose(f);
    free(line);
    double t[2] = {0, 0}, rk = 0, ra = 0, rf = 0;
    for (int r = 0; r < rounds; r++)
        for (int on = 0; on <= 1; on++) {
            rc_config cfg;
            char err[512];
            rc_engine *e;
            rc_config_defaults(&cfg);
            if (!on)
                cfg.cooc_max_bytes = 0;
            if (rc_engine_create(&cfg, NULL, NULL, NULL, &e, err, sizeof err)) {
                fprintf(stderr, "bench_cooc: %s\n", err);
                return 1;
            }
            t[on] += feed(e, lines, lens, n);
            if (on && r == rounds - 1) {
                ra = recalls(e, nrec, 0);
                rk = recalls(e, nrec, 1);
                rf = recalls(e, nrec, 2);
            }
            rc_engine_destroy(e);
        }
    printf("%zu events x %d rounds: channel off %.0f events/s, on %.0f events/s, on/off %.3f\n", n,
           rounds, (double)n * rounds / t[0], (double)n * rounds / t[1], t[0] / t[1]);
    printf("%d recalls k=50: avg %.1f us, itemknn %.1f us, fused %.1f us; itemknn/avg %.3f, "
           "fused/avg %.3f\n",
           nrec, ra / nrec * 1e6, rk / nrec * 1e6, rf / nrec * 1e6, rk / ra, rf / ra);
    for (size_t i = 0; i < n; i++)
        free(lines[i]);
    free(lines);
    free(lens);
    return 0;
}
