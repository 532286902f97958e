/* Writes a two-tower model with random weights (for latency benchmarks: the
 * cost of serving does not depend on the weights' values).
 *   bench_tower_model OUT.tower [W2V_DIM] [DIM] [MAX_CLICKS] [SEED]
 * Defaults: 64 (model.dim), 64, 50, 1; every feature on, default sizes. */
#include <stdio.h>
#include <stdlib.h>

#include "recalld/tower.h"

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 6) {
        fprintf(stderr, "usage: bench_tower_model OUT.tower [W2V_DIM] [DIM] [MAX_CLICKS] [SEED]\n");
        return 2;
    }
    rc_tower_config c = {.w2v_dim = argc > 2 ? (uint32_t)atoi(argv[2]) : 64,
                         .dim = argc > 3 ? (uint32_t)atoi(argv[3]) : 64,
                         .max_clicks = argc > 4 ? (uint32_t)atoi(argv[4]) : 50,
                         .features = RC_TOWER_F_ALL};
    uint64_t seed = argc > 5 ? strtoull(argv[5], NULL, 10) : 1;
    rc_tower_model *m = NULL;
    char err[512];
    if (rc_tower_create(&c, seed, &m, err, sizeof err) ||
        rc_tower_save(m, argv[1], err, sizeof err)) {
        fprintf(stderr, "bench_tower_model: %s\n", err);
        rc_tower_destroy(m);
        return 1;
    }
    printf("%s: %zu parameters, dim %u, w2v_dim %u, max_clicks %u\n", argv[1], rc_tower_params(m),
           rc_tower_config_of(m)->dim, rc_tower_config_of(m)->w2v_dim,
           rc_tower_config_of(m)->max_clicks);
    rc_tower_destroy(m);
    return 0;
}
