#include "tower_stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

rc_tower_config tower_small_cfg(uint32_t w2v_dim)
{
    return (rc_tower_config){.dim = 16,
                             .w2v_dim = w2v_dim,
                             .hidden = 32,
                             .id_buckets = 4096,
                             .city_buckets = 64,
                             .cate_buckets = 64,
                             .device_buckets = 64,
                             .tag_buckets = 256,
                             .stats_cates = 8,
                             .max_clicks = 8,
                             .features = RC_TOWER_F_ALL};
}

void tower_write_model(const char *path, uint32_t w2v_dim, uint64_t seed)
{
    rc_tower_config c = tower_small_cfg(w2v_dim);
    rc_tower_model *m = NULL;
    char err[256];
    ASSERT_EQ(rc_tower_create(&c, seed, &m, err, sizeof err), 0);
    if (rc_tower_save(m, path, err, sizeof err))
        RC__FAIL("save %s: %s", path, err);
    rc_tower_destroy(m);
}

int tower_event_line(char *buf, size_t cap, uint32_t j, uint32_t nusers, int empty_tag,
                     int64_t *ts_out, uint32_t *user_out)
{
    static const char *const devices[] = {"ios", "android", "web"};
    uint32_t u = j % nusers, step = j / nusers, city = u % NCITIES;
    uint32_t item = (city + NCITIES * ((step * 7 + u * 3) % (NITEMS / NCITIES))) % NITEMS;
    int64_t ts = T0 + (int64_t)step * 60000 + (step / 9) * 40 * 60000LL + u;
    char extra[256] = "";
    if (step % 5 == 1)
        snprintf(extra, sizeof extra, ",\"device\":\"%s\"", devices[(u + step) % 3]);
    else if (step % 7 == 3)
        snprintf(extra, sizeof extra, ",\"tags\":[\"t%u\",%s\"t%u\"]", (u + step) % 5,
                 empty_tag ? "\"\"," : "", (u * step) % 11);
    if (ts_out)
        *ts_out = ts;
    if (user_out)
        *user_out = u;
    return snprintf(buf, cap,
                    "{\"user_id\":\"u%u\",\"item_id\":\"i%u\",\"city_id\":\"c%u\","
                    "\"cate_id\":\"k%u\",\"ts\":%lld%s}",
                    u, item, item % NCITIES, item % 4, (long long)ts, extra);
}

void tower_produce(const e2e_daemon *d, uint32_t first, uint32_t n, uint32_t nusers, int empty_tag)
{
    char path[400], line[512];
    snprintf(path, sizeof path, "%s/kcat.in", d->dir);
    FILE *f = fopen(path, "w");
    ASSERT(f != NULL);
    for (uint32_t j = first; j < first + n; j++) {
        uint32_t u;
        tower_event_line(line, sizeof line, j, nusers, empty_tag, NULL, &u);
        fprintf(f, "u%u\t%s\n", u, line);
    }
    fclose(f);
    e2e_kcat(d, path);
}

void tower_tmp_dir(char *dir, size_t cap, const char *prefix)
{
    /* mkdtemp's template: the prefix, then six placeholder characters */
    int n = snprintf(dir, cap, "/tmp/%s", prefix);
    ASSERT(n > 0 && (size_t)n + 7 <= cap);
    memset(dir + n, 'X', 6);
    dir[n + 6] = '\0';
    ASSERT(mkdtemp(dir) != NULL);
}
