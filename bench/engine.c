/* Engine throughput without Kafka: a JSONL click file through the same batch
 * path as the daemon (decode -> sessions -> SGNS -> index), in one thread
 * (offline engine). Separates the model's cost from Kafka's.
 *   bench_engine FILE [dim]                                                   */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/common.h"
#include "recalld/config.h"
#include "recalld/engine.h"

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_engine FILE.jsonl [dim]\n");
        return 2;
    }
    rc_config cfg;
    char err[512];
    rc_config_defaults(&cfg);
    if (argc > 2)
        cfg.dim = (uint32_t)atoi(argv[2]);
    rc_engine *e;
    if (rc_engine_create(&cfg, NULL, NULL, NULL, &e, err, sizeof err)) {
        fprintf(stderr, "bench_engine: %s\n", err);
        return 1;
    }
    FILE *f = fopen(argv[1], "r");
    if (!f) {
        perror(argv[1]);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    uint64_t events = 0, t0 = rc_now_ns();
    rc_batch *b = rc_engine_batch_get(e);
    while ((n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] == '\n')
            n--;
        if (rc_engine_batch_add(b, line, (size_t)n, 0, (int64_t)events) == RC_E2BIG) {
            rc_engine_submit(e, b);
            b = rc_engine_batch_get(e);
            rc_engine_batch_add(b, line, (size_t)n, 0, (int64_t)events);
        }
        events++;
    }
    rc_engine_submit(e, b);
    rc_engine_sync(e);
    double s = (double)(rc_now_ns() - t0) / 1e9;
    rc_buf st;
    rc_buf_init(&st, 0);
    rc_engine_stats_json(e, &st);
    printf("%llu events in %.2f s = %.0f events/s (one thread: decode + train + index)\n",
           (unsigned long long)events, s, (double)events / s);
    printf("{%s}\n", st.data);
    rc_buf_free(&st);
    free(line);
    fclose(f);
    rc_engine_destroy(e);
    return 0;
}
