/* fuzz_seeded_engine, fuzz_seeded_config, fuzz_seeded_api: see fuzz.h. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "fuzz.h"
#include "recalld/api.h"
#include "recalld/engine.h"

rc_engine *fuzz_seeded_engine(const rc_config *c, const char *who)
{
    rc_engine *e = NULL;
    char err[256], line[256];
    if (rc_engine_create(c, NULL, NULL, NULL, &e, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", who, err);
        abort();
    }
    for (int i = 0; i < 3000; i++) {
        int n = snprintf(line, sizeof line,
                         "{\"user_id\":\"u%d\",\"item_id\":\"i%d\",\"city_id\":%d,\"cate_id\":%d,"
                         "\"ts\":%lld}",
                         i % 50, (i * 7) % 300, i % 3, (i / 3) % 4, 1700000000000LL + i * 1000);
        rc_engine_apply_line(e, line, (size_t)n);
    }
    rc_engine_sync(e);
    return e;
}

void fuzz_seeded_config(rc_config *c)
{
    rc_config_defaults(c);
    c->dim = 16;
    c->max_items = 4096;
    c->max_users = 1024;
    c->k_max = 200;
}

void fuzz_seeded_api(rc_api *api, const rc_config *c, const char *who)
{
    rc_engine *e = fuzz_seeded_engine(c, who);
    rc_api_init(api);
    api->engine = e;
    atomic_store(&api->model_ready, 1);
    atomic_store(&api->assigned, 1);
}
