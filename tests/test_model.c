/* model: the file recalld-train writes and `recalld --model` loads — round
 * trip (bitwise vectors), refusal of corrupt, truncated and foreign files
 * with RC_ECORRUPT and a clear message, and end to end: recalld-train on a
 * generated log, then recalld serving `similar` from that model at once. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "e2e.h"
#include "recalld/checkpoint.h"
#include "recalld/common.h"
#include "recalld/gen.h"
#include "recalld/model.h"
#include "recalld/modelpath.h"
#include "recalld/table.h"
#include "test.h"

static const char *tmp_dir(void)
{
    static char dir[64];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/rc_model_XXXXXX");
        ASSERT(mkdtemp(dir) != NULL);
    }
    return dir;
}

static const char *path_of(const char *name)
{
    static char p[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", tmp_dir(), name);
    return p[k];
}

/* A table of n items over 3 cities and 4 categories with random vectors. */
static rc_table *make_table(uint32_t n, uint32_t dim)
{
    rc_table_opts to = {.dim = dim, .seed = 5};
    rc_table *t = NULL;
    ASSERT_EQ(rc_table_create(&to, &t, NULL, 0), 0);
    rc_rng rng;
    rc_rng_seed(&rng, 77);
    for (uint32_t i = 0; i < n; i++) {
        char id[32], cs[16], ks[16];
        uint32_t city, cate, row;
        snprintf(id, sizeof id, "item-%u", i * 7919u);
        snprintf(cs, sizeof cs, "city%u", i % 3);
        if (i % 4)
            snprintf(ks, sizeof ks, "k%u", i % 4);
        else
            ks[0] = '\0'; /* no category */
        ASSERT_EQ(rc_table_city_id(t, cs, strlen(cs), &city), 0);
        ASSERT_EQ(rc_table_cate_id(t, ks, strlen(ks), &cate), 0);
        ASSERT_EQ(rc_table_upsert(t, id, strlen(id), city, cate, NULL, 0, &row, NULL), 0);
        rc_table_count_add(t, row, i * 13 + 1);
        for (uint32_t d = 0; d < dim; d++) {
            rc_table_in(t, row)[d] = rc_rng_float(&rng) * 2 - 1;
            rc_table_out(t, row)[d] = (float)d * 1e-3f - rc_rng_float(&rng);
        }
    }
    return t;
}

static void assert_same(const rc_table *a, const rc_table *b)
{
    uint32_t n = rc_table_size(a), dim = rc_table_dim(a);
    ASSERT_EQ(rc_table_size(b), n);
    ASSERT_EQ(rc_table_dim(b), dim);
    ASSERT_EQ(rc_table_ncities(b), rc_table_ncities(a));
    ASSERT_EQ(rc_table_ncates(b), rc_table_ncates(a));
    ASSERT_EQ(rc_table_total_count(b), rc_table_total_count(a));
    for (uint32_t r = 0; r < n; r++) {
        size_t la, lb;
        const char *ia = rc_table_item_id(a, r, &la), *ib = rc_table_item_id(b, r, &lb);
        ASSERT_EQ(la, lb);
        ASSERT_EQ(memcmp(ia, ib, la), 0);
        ASSERT_STREQ(rc_table_city_name(b, rc_table_city(b, r)),
                     rc_table_city_name(a, rc_table_city(a, r)));
        ASSERT_STREQ(rc_table_cate_name(b, rc_table_cate(b, r)),
                     rc_table_cate_name(a, rc_table_cate(a, r)));
        ASSERT_EQ(rc_table_count(b, r), rc_table_count(a, r));
        ASSERT_EQ(memcmp(rc_table_in(a, r), rc_table_in(b, r), dim * sizeof(float)), 0);
        ASSERT_EQ(memcmp(rc_table_out(a, r), rc_table_out(b, r), dim * sizeof(float)), 0);
        uint32_t found;
        ASSERT_EQ(rc_table_find(b, ia, la, &found), 0);
        ASSERT_EQ(found, r);
    }
}

static unsigned char *slurp(const char *p, size_t *len)
{
    FILE *f = fopen(p, "rb");
    ASSERT(f != NULL);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*len + 1);
    ASSERT_EQ(fread(b, 1, *len, f), *len);
    fclose(f);
    return b;
}

static void spit(const char *p, const void *b, size_t len)
{
    FILE *f = fopen(p, "wb");
    ASSERT(f != NULL);
    ASSERT_EQ(fwrite(b, 1, len, f), len);
    ASSERT_EQ(fclose(f), 0);
}

/* Loads p expecting rc and a message containing want. */
static void expect_refused(const char *p, int rc, const char *want)
{
    rc_table *t = (rc_table *)1;
    char err[512] = "";
    int got = rc_model_load(p, NULL, &t, err, sizeof err);
    if (got != rc || t != NULL || !strstr(err, want))
        RC__FAIL("load %s: rc %d (want %d), msg \"%s\" (want \"%s\")", p, got, rc, err, want);
    ASSERT(strstr(err, p) != NULL); /* the message names the file */
}

TEST(model_round_trip_bitwise)
{
    uint32_t dims[] = {8, 64, 136};
    for (size_t i = 0; i < RC_ARRAY_LEN(dims); i++) {
        rc_table *a = make_table(i == 1 ? 3000 : 50, dims[i]), *b = NULL;
        const char *p = path_of("rt.rcm");
        char err[256];
        ASSERT_EQ(rc_model_save(a, p, err, sizeof err), 0);
        ASSERT_EQ(rc_model_load(p, NULL, &b, err, sizeof err), 0);
        assert_same(a, b);
        rc_table_destroy(b);
        /* A matching configured dimension is accepted, another refused. */
        rc_table_opts to = {.dim = dims[i]};
        ASSERT_EQ(rc_model_load(p, &to, &b, err, sizeof err), 0);
        rc_table_destroy(b);
        to.dim = dims[i] + 8;
        ASSERT_EQ(rc_model_load(p, &to, &b, err, sizeof err), RC_EINVAL);
        ASSERT(strstr(err, "dimension") != NULL);
        rc_table_destroy(a);
    }
    /* An empty table round-trips too. */
    rc_table *e = make_table(0, 16), *b = NULL;
    ASSERT_EQ(rc_model_save(e, path_of("empty.rcm"), NULL, 0), 0);
    ASSERT_EQ(rc_model_load(path_of("empty.rcm"), NULL, &b, NULL, 0), 0);
    ASSERT_EQ(rc_table_size(b), 0);
    rc_table_destroy(b);
    rc_table_destroy(e);
}

TEST(model_crc32c_check_value)
{
    /* The standard check value of CRC-32C ("123456789"). */
    ASSERT_EQ(rc_crc32c(0, "123456789", 9), 0xE3069283u);
    /* Continuation equals one pass, on lengths that exercise any word path. */
    char buf[1000];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (char)(i * 31 + 7);
    for (size_t cut = 0; cut <= 37; cut++)
        ASSERT_EQ(rc_crc32c(rc_crc32c(0, buf, cut), buf + cut, sizeof buf - cut),
                  rc_crc32c(0, buf, sizeof buf));
}

TEST(model_corrupt_byte_refused)
{
    rc_table *a = make_table(200, 32);
    const char *p = path_of("good.rcm"), *bad = path_of("flip.rcm");
    ASSERT_EQ(rc_model_save(a, p, NULL, 0), 0);
    size_t len;
    unsigned char *b = slurp(p, &len);
    /* One flipped bit anywhere: magic, header, names, ids, vectors, the CRC. */
    size_t where[] = {0, 9, 14, 30, 100, len / 2, len - 200, len - 5, len - 1};
    for (size_t i = 0; i < RC_ARRAY_LEN(where); i++) {
        b[where[i]] ^= 0x10;
        spit(bad, b, len);
        expect_refused(bad, RC_ECORRUPT, "checksum mismatch");
        b[where[i]] ^= 0x10;
    }
    spit(bad, b, len); /* restored: loads */
    rc_table *t = NULL;
    ASSERT_EQ(rc_model_load(bad, NULL, &t, NULL, 0), 0);
    rc_table_destroy(t);
    free(b);
    rc_table_destroy(a);
}

/* A file larger than the loader's read window (1 MiB; ~3.1 MB here): it
 * loads bit-exact, and a flipped bit or a cut anywhere, window boundaries
 * included, is still refused as a checksum mismatch. Then a file whose row
 * records (not only its vectors) cross window boundaries loads bit-exact:
 * an id taken before a refill must not be read after it. */
TEST(model_large_file_streamed)
{
    rc_table *a = make_table(6000, 64);
    const char *p = path_of("large.rcm"), *bad = path_of("large-bad.rcm");
    ASSERT_EQ(rc_model_save(a, p, NULL, 0), 0);
    size_t len;
    unsigned char *b = slurp(p, &len);
    ASSERT_GT(len, 3u << 20);
    rc_table *t = NULL;
    ASSERT_EQ(rc_model_load(p, NULL, &t, NULL, 0), 0);
    assert_same(a, t);
    rc_table_destroy(t);
    size_t where[] = {100, (1u << 20) - 1, 1u << 20, (2u << 20) + 3, len - 4097, len - 5};
    for (size_t i = 0; i < RC_ARRAY_LEN(where); i++) {
        b[where[i]] ^= 0x01;
        spit(bad, b, len);
        expect_refused(bad, RC_ECORRUPT, "checksum mismatch");
        b[where[i]] ^= 0x01;
    }
    size_t cuts[] = {1u << 20, len / 2, len - 1};
    for (size_t i = 0; i < RC_ARRAY_LEN(cuts); i++) {
        spit(bad, b, cuts[i]);
        expect_refused(bad, RC_ECORRUPT, "checksum mismatch");
    }
    free(b);
    rc_table_destroy(a);
    /* rows whose records (id, city, category, count) span window boundaries:
     * 60,000 ids of 23 bytes (records of 37 after a 38-byte header and names)
     * put both boundaries of the rows section inside the 12 bytes that
     * follow an id, where a refill would overwrite an id still to be read */
    rc_table_opts to = {.dim = 8, .seed = 5};
    ASSERT_EQ(rc_table_create(&to, &a, NULL, 0), 0);
    uint32_t city, cate, row;
    ASSERT_EQ(rc_table_city_id(a, "c", 1, &city), 0);
    ASSERT_EQ(rc_table_cate_id(a, "k", 1, &cate), 0);
    for (uint32_t i = 0; i < 60000; i++) {
        char id[64];
        int n = snprintf(id, sizeof id, "item-%018u", i * 2654435761u);
        ASSERT_EQ(rc_table_upsert(a, id, (size_t)n, city, cate, NULL, 0, &row, NULL), 0);
        rc_table_count_add(a, row, i + 1);
        rc_table_in(a, row)[i % 8] = (float)i;
    }
    ASSERT_EQ(rc_model_save(a, p, NULL, 0), 0);
    ASSERT_EQ(rc_model_load(p, NULL, &t, NULL, 0), 0);
    assert_same(a, t);
    rc_table_destroy(t);
    rc_table_destroy(a);
}

TEST(model_truncated_refused)
{
    rc_table *a = make_table(100, 16);
    const char *p = path_of("full.rcm"), *cut = path_of("cut.rcm");
    ASSERT_EQ(rc_model_save(a, p, NULL, 0), 0);
    size_t len;
    unsigned char *b = slurp(p, &len);
    size_t lens[] = {0, 1, 8, 20, 36, 37, len / 3, len - 4, len - 1};
    for (size_t i = 0; i < RC_ARRAY_LEN(lens); i++) {
        spit(cut, b, lens[i]);
        expect_refused(cut, RC_ECORRUPT, lens[i] < 36 ? "truncated" : "checksum mismatch");
    }
    /* Extra bytes after the CRC are no model either. */
    unsigned char *longer = malloc(len + 3);
    memcpy(longer, b, len);
    memcpy(longer + len, "xyz", 3);
    spit(cut, longer, len + 3);
    expect_refused(cut, RC_ECORRUPT, "checksum mismatch");
    free(longer);
    free(b);
    rc_table_destroy(a);
}

/* Well-formed CRC, wrong contents: each is refused by what is wrong. */
TEST(model_foreign_and_inconsistent_refused)
{
    rc_table *a = make_table(20, 8);
    const char *p = path_of("m.rcm"), *bad = path_of("bad.rcm");
    ASSERT_EQ(rc_model_save(a, p, NULL, 0), 0);
    size_t len;
    unsigned char *b = slurp(p, &len);
    struct {
        size_t off;
        unsigned char val;
        const char *msg;
    } cases[] = {
        {0, 'X', "bad magic"},
        {8, 99, "format version 99"},
        {16, 21, "inconsistent contents"}, /* one more row than stored */
        {24, 9, "inconsistent contents"},  /* city count */
    };
    for (size_t i = 0; i < RC_ARRAY_LEN(cases); i++) {
        unsigned char *c = malloc(len);
        memcpy(c, b, len);
        c[cases[i].off] = cases[i].val;
        uint32_t crc = rc_crc32c(0, c, len - 4);
        memcpy(c + len - 4, &crc, 4);
        spit(bad, c, len);
        expect_refused(bad, RC_ECORRUPT, cases[i].msg);
        free(c);
    }
    const char *text = "user,item,time\nthis is a CSV file, not a model at all\n";
    spit(bad, text, strlen(text));
    expect_refused(bad, RC_ECORRUPT, "checksum mismatch");
    rc_table *t = NULL;
    char err[256] = "";
    ASSERT_EQ(rc_model_load(path_of("none.rcm"), NULL, &t, err, sizeof err), RC_ENOENT);
    ASSERT(strstr(err, "none.rcm") != NULL);
    /* Saving into a missing directory fails cleanly, leaving nothing. */
    char nodir[300];
    snprintf(nodir, sizeof nodir, "%s/no/such/dir/m.rcm", tmp_dir());
    ASSERT_EQ(rc_model_save(a, nodir, err, sizeof err), RC_EIO);
    ASSERT(strstr(err, "m.rcm") != NULL);
    free(b);
    rc_table_destroy(a);
}

/* recalld-train on a generated log writes a model; recalld --model serves it
 * before any stream: `similar` for a trained item, items = the model's. */
TEST(model_e2e_train_then_serve)
{
    const char *log = path_of("gen.jsonl"), *model = path_of("e2e.rcm");
    char *out = NULL;
    int st = e2e_sh(&out,
                    RC_BIN("recalld-gen") " --seed 21 --events 30000 --users 1500 --items 500 "
                                          "--cities 2 --cates 3 --communities 10 --out %s 2>&1",
                    log);
    ASSERT_EQ(st, 0);
    free(out);
    st = e2e_sh(&out,
                RC_BIN("recalld-train") " --input %s --output %s --threads 2 --epochs 5 "
                                        "--hard-share 0.2 --json 2>/dev/null",
                log, model);
    ASSERT_EQ(st, 0);
    json_t *rep = e2e_json(out);
    free(out);
    long long items = e2e_int(rep, "train.items");
    ASSERT_GT(items, 400);
    ASSERT_EQ(e2e_int(rep, "dataset.events"), 30000);
    json_decref(rep);
    rc_table *t = NULL;
    ASSERT_EQ(rc_model_load(model, NULL, &t, NULL, 0), 0);
    ASSERT_EQ(rc_table_size(t), items);
    /* The most clicked item, and its community from the generator's truth. */
    uint32_t top = 0;
    for (uint32_t r = 1; r < rc_table_size(t); r++)
        if (rc_table_count(t, r) > rc_table_count(t, top))
            top = r;
    char top_id[64];
    size_t len;
    snprintf(top_id, sizeof top_id, "%s", rc_table_item_id(t, top, &len));
    rc_table_destroy(t);
    rc_gen_opts go = {.seed = 21,
                      .events = 30000,
                      .users = 1500,
                      .items = 500,
                      .cities = 2,
                      .cates = 3,
                      .communities = 10};
    rc_gen *g = NULL;
    ASSERT_EQ(rc_gen_create(&go, &g, NULL, 0), 0);
    rc_gen_item truth;
    ASSERT_EQ(rc_gen_item_truth(g, top_id, strlen(top_id), &truth), 0);

    e2e_daemon d;
    const char *extra[] = {"--model", model, NULL};
    e2e_start(&d, extra);
    json_t *stats = e2e_request(d.sock, "{\"op\":\"stats\"}");
    ASSERT_EQ(e2e_int(stats, "items"), items);
    ASSERT_EQ(e2e_int(stats, "events.consumed"), 0);
    json_decref(stats);
    json_t *sim = e2e_request(d.sock, "{\"op\":\"similar\",\"item_id\":\"%s\",\"k\":10}", top_id);
    json_t *hits = json_object_get(sim, "items");
    ASSERT(json_is_true(json_object_get(sim, "ok")));
    ASSERT_EQ(json_array_size(hits), 10);
    size_t i, same = 0;
    json_t *h;
    json_array_foreach(hits, i, h) {
        const char *id = json_string_value(json_object_get(h, "item_id"));
        rc_gen_item it;
        ASSERT(id != NULL);
        ASSERT(strcmp(id, top_id) != 0);
        ASSERT_EQ(rc_gen_item_truth(g, id, strlen(id), &it), 0);
        same += it.community == truth.community;
    }
    printf("similar(%s): %zu/10 in its community\n", top_id, same);
    ASSERT_GE(same, 7);
    json_decref(sim);
    ASSERT_EQ(e2e_stop(&d), 0);
    rc_gen_destroy(g);
}

static float max_diff(const float *a, const float *b, uint32_t dim)
{
    float m = 0;
    for (uint32_t d = 0; d < dim; d++)
        m = fmaxf(m, fabsf(a[d] - b[d]));
    return m;
}

/* Trains log with a learning rate too small to move a vector (the start
 * stays), init "" or " --init FILE"; returns the model. */
static rc_table *train_nearly_frozen(const char *log, const char *name, const char *init,
                                     long long *matched)
{
    const char *model = path_of(name);
    char *out = NULL;
    int st = e2e_sh(&out,
                    RC_BIN("recalld-train") " --input %s --output %s --threads 1 --epochs 1 "
                                            "--lr 1e-8 --seed 9%s --json 2>%s.err",
                    log, model, init, model);
    if (st != 0)
        RC__FAIL("recalld-train%s failed (%d): see %s.err", init, st, model);
    json_t *rep = e2e_json(out);
    free(out);
    *matched = json_object_get(json_object_get(rep, "train"), "init")
                   ? e2e_int(rep, "train.init.matched")
                   : -1;
    json_decref(rep);
    rc_table *t = NULL;
    ASSERT_EQ(rc_model_load(model, NULL, &t, NULL, 0), 0);
    return t;
}

/* The same items of warm and init: init's vectors; the others: cold's.
 * Returns how many came from init. */
static uint32_t check_started_from(const rc_table *warm, const rc_table *cold, const rc_table *init)
{
    uint32_t n = rc_table_size(warm), dim = rc_table_dim(warm), from = 0;
    ASSERT_EQ(rc_table_size(cold), n);
    for (uint32_t r = 0; r < n; r++) {
        size_t len;
        const char *id = rc_table_item_id(warm, r, &len);
        uint32_t ri, rc;
        ASSERT_EQ(rc_table_find(cold, id, len, &rc), 0);
        if (rc_table_find(init, id, len, &ri) == 0) {
            ASSERT_DBL_OP(max_diff(rc_table_in(warm, r), rc_table_in(init, ri), dim), <, 5e-3f);
            ASSERT_DBL_OP(max_diff(rc_table_out(warm, r), rc_table_out(init, ri), dim), <, 5e-3f);
            ASSERT_DBL_OP(max_diff(rc_table_in(warm, r), rc_table_in(cold, rc), dim), >, 5e-2f);
            from++;
        } else {
            ASSERT_DBL_OP(max_diff(rc_table_in(warm, r), rc_table_in(cold, rc), dim), <, 5e-3f);
        }
    }
    return from;
}

/* recalld-train --init: a rebuild that goes on from a live table, given as a
 * model file or as a daemon checkpoint; items the file lacks start random,
 * a file of another dimension or kind is refused. */
TEST(model_train_init_from_model_or_checkpoint)
{
    char log[256], first[256], *out = NULL, flag[4200];
    snprintf(log, sizeof log, "%s", path_of("init.jsonl"));
    snprintf(first, sizeof first, "%s", path_of("first.rcm"));
    int st = e2e_sh(&out,
                    RC_BIN("recalld-gen") " --seed 23 --events 20000 --users 1000 --items 400 "
                                          "--cities 2 --cates 3 --communities 8 --out %s 2>&1",
                    log);
    ASSERT_EQ(st, 0);
    free(out);
    /* the "live table": the items with >= 60 clicks, trained normally */
    st = e2e_sh(&out,
                RC_BIN("recalld-train") " --input %s --output %s --threads 1 --epochs 2 "
                                        "--min-count 60 2>&1",
                log, first);
    ASSERT_EQ(st, 0);
    free(out);
    rc_table *init = NULL;
    ASSERT_EQ(rc_model_load(first, NULL, &init, NULL, 0), 0);
    long long matched;
    rc_table *cold = train_nearly_frozen(log, "cold.rcm", "", &matched);
    ASSERT_EQ(matched, -1); /* no "init" without --init */
    ASSERT_LT(rc_table_size(init), rc_table_size(cold));
    snprintf(flag, sizeof flag, " --init %s", first);
    rc_table *warm = train_nearly_frozen(log, "warm.rcm", flag, &matched);
    uint32_t from = check_started_from(warm, cold, init);
    ASSERT_EQ(from, rc_table_size(init));
    ASSERT_EQ((long long)from, matched);
    ASSERT_GT(from, 10u);
    rc_table_destroy(warm);
    /* the same table as a checkpoint, as recalld's data_dir holds it */
    rc_checkpoint *ck = NULL;
    rc_checkpoint_meta meta;
    memset(&meta, 0, sizeof meta);
    rc_checkpoint_info info;
    rc_checkpoint_write_opts wo = {.dir = tmp_dir()};
    ASSERT_EQ(rc_checkpoint_create(&ck, NULL, 0), 0);
    ASSERT_EQ(rc_checkpoint_take(ck, init, &meta), 0);
    ASSERT_EQ(rc_checkpoint_write(ck, &wo, &info, NULL, 0), 0);
    rc_checkpoint_destroy(ck);
    snprintf(flag, sizeof flag, " --init %s", info.path);
    warm = train_nearly_frozen(log, "warm2.rcm", flag, &matched);
    ASSERT_EQ(check_started_from(warm, cold, init), from);
    ASSERT_EQ(matched, (long long)from);
    rc_table_destroy(warm);
    /* refused: another dimension, a file of another kind, a missing file */
    st = e2e_sh(&out, RC_BIN("recalld-train") " --input %s --output %s --dim 32 --init %s 2>&1",
                log, path_of("x.rcm"), first);
    ASSERT_EQ(st, 1);
    ASSERT(strstr(out, "dimension 64, --dim 32") != NULL);
    free(out);
    st = e2e_sh(&out, RC_BIN("recalld-train") " --input %s --output %s --init %s 2>&1", log,
                path_of("x.rcm"), log);
    ASSERT_EQ(st, 1);
    ASSERT(strstr(out, "neither a model file nor a checkpoint") != NULL);
    free(out);
    st = e2e_sh(&out, RC_BIN("recalld-train") " --input %s --output %s --init %s/none 2>&1", log,
                path_of("x.rcm"), tmp_dir());
    ASSERT_EQ(st, 1);
    ASSERT(strstr(out, "No such file") != NULL);
    free(out);
    ASSERT_EQ(access(path_of("x.rcm"), F_OK), -1);
    rc_table_destroy(cold);
    rc_table_destroy(init);
}

/* recalld-train --gate-hours H: the rebuild trains on all but the log's last
 * H hours and is judged against --init's table there. The verdict follows
 * the ratio; the file is written only when the rebuild wins (else exit 3,
 * "output": null); a window without a prediction is not judged and the
 * rebuild of the whole log is written. */
static json_t *gate_run(const char *log, const char *init, const char *out, const char *flags,
                        int want_status)
{
    char *text = NULL;
    int st = e2e_sh(&text,
                    RC_BIN("recalld-train") " --input %s --init %s --output %s --threads 1 "
                                            "--json %s 2>/dev/null",
                    log, init, out, flags);
    if (st != want_status)
        RC__FAIL("recalld-train %s: exit %d, want %d", flags, st, want_status);
    json_t *j = e2e_json(text);
    free(text);
    return j;
}

TEST(model_train_gate_writes_only_when_the_rebuild_wins)
{
    char log[256], live[256], *out = NULL;
    snprintf(log, sizeof log, "%s", path_of("gate.jsonl"));
    snprintf(live, sizeof live, "%s", path_of("gate-live.rcm"));
    ASSERT_EQ(e2e_sh(&out,
                     RC_BIN("recalld-gen") " --seed 5 --events 20000 --users 300 --items 400 "
                                           "--out %s 2>&1",
                     log),
              0);
    free(out);
    ASSERT_EQ(
        e2e_sh(&out, RC_BIN("recalld-train") " --input %s --output %s --threads 1 2>&1", log, live),
        0);
    free(out);
    const char *rebuilt = path_of("gate-rebuilt.rcm");
    /* ratio 0.5: a rebuild from the live table is not half as good: written */
    json_t *j = gate_run(log, live, rebuilt, "--gate-hours 6 --gate-ratio 0.5", 0);
    json_t *g = json_object_get(j, "gate");
    ASSERT(json_is_true(json_object_get(g, "judged")));
    ASSERT(json_is_true(json_object_get(g, "install")));
    ASSERT_GT(json_integer_value(json_object_get(g, "predictions")), 100);
    double init_hr = json_number_value(json_object_get(g, "init_hr@50")),
           rebuild_hr = json_number_value(json_object_get(g, "rebuild_hr@50"));
    ASSERT_DBL_OP(init_hr, >, 0.05); /* real scores, not a default */
    ASSERT_DBL_OP(rebuild_hr, >, 0.05);
    ASSERT_STREQ(json_string_value(json_object_get(j, "output")), rebuilt);
    ASSERT_EQ(access(rebuilt, F_OK), 0);
    json_decref(j);
    unlink(rebuilt);
    /* ratio 2: nor twice as good: kept, nothing written, exit 3 */
    j = gate_run(log, live, rebuilt, "--gate-hours 6 --gate-ratio 2", 3);
    g = json_object_get(j, "gate");
    ASSERT(json_is_false(json_object_get(g, "install")));
    ASSERT(json_is_null(json_object_get(j, "output")));
    ASSERT_DBL_OP(json_number_value(json_object_get(g, "init_hr@50")), ==, init_hr);
    ASSERT_EQ(access(rebuilt, F_OK), -1);
    json_decref(j);
    /* ratio 0.5 but a lead of 10 standard errors asked: kept */
    j = gate_run(log, live, rebuilt, "--gate-hours 6 --gate-ratio 0.5 --gate-z 10", 3);
    g = json_object_get(j, "gate");
    ASSERT_DBL_OP(json_number_value(json_object_get(g, "min_z")), ==, 10);
    ASSERT_DBL_OP(json_number_value(json_object_get(g, "z")), <, 10);
    ASSERT_EQ(access(rebuilt, F_OK), -1);
    json_decref(j);
    /* the log's last 6 hours hold one click only (a click 10 h after the
     * rest): no prediction to judge on: not judged, the rebuild written */
    char log2[300], cmd[700];
    snprintf(log2, sizeof log2, "%s", path_of("gate2.jsonl"));
    snprintf(cmd, sizeof cmd, "cp %s %s", log, log2);
    ASSERT_EQ(e2e_sh(NULL, "%s", cmd), 0);
    long long last = 0;
    FILE *f = fopen(log, "r");
    char line[1024];
    ASSERT(f != NULL);
    while (fgets(line, sizeof line, f)) {
        const char *ts = strstr(line, "\"ts\":");
        if (ts && atoll(ts + 5) > last)
            last = atoll(ts + 5);
    }
    fclose(f);
    ASSERT_GT(last, 0);
    ASSERT((f = fopen(log2, "a")) != NULL);
    fprintf(f,
            "{\"user_id\":\"late\",\"item_id\":\"i1\",\"city_id\":\"c1\",\"cate_id\":\"k1\",\"ts\":"
            "%lld}\n",
            last + 36000000LL);
    fclose(f);
    j = gate_run(log2, live, rebuilt, "--gate-hours 6", 0);
    g = json_object_get(j, "gate");
    ASSERT(json_is_false(json_object_get(g, "judged")));
    ASSERT(json_is_true(json_object_get(g, "install")));
    ASSERT_EQ(access(rebuilt, F_OK), 0);
    json_decref(j);
    /* --champion without --init: a rebuild from random vectors judged
     * against the live table; the champion's score is the one above (same
     * table, same window) */
    char *text = NULL;
    int st = e2e_sh(&text,
                    RC_BIN("recalld-train") " --input %s --champion %s --output %s --threads 1 "
                                            "--json --gate-hours 6 --gate-ratio 0.5 2>/dev/null",
                    log, live, rebuilt);
    ASSERT(st == 0 || st == 3); /* the verdict is the scores' */
    j = e2e_json(text);
    free(text);
    g = json_object_get(j, "gate");
    ASSERT_STREQ(json_string_value(json_object_get(g, "champion")), live);
    ASSERT(json_is_true(json_object_get(g, "judged")));
    ASSERT_DBL_OP(json_number_value(json_object_get(g, "champion_hr@50")), ==, init_hr);
    ASSERT_DBL_OP(json_number_value(json_object_get(g, "rebuild_hr@50")), !=, rebuild_hr);
    ASSERT(json_object_get(json_object_get(j, "train"), "init") == NULL);
    ASSERT_EQ(json_is_true(json_object_get(g, "install")), st == 0);
    ASSERT_EQ(json_is_null(json_object_get(j, "output")), st == 3);
    json_decref(j);
    unlink(rebuilt);
    /* the gate needs the live table to judge against; --champion needs the gate */
    ASSERT_EQ(e2e_sh(NULL,
                     RC_BIN("recalld-train") " --input %s --output %s --gate-hours 6 2>/dev/null",
                     log, rebuilt),
              2);
    ASSERT_EQ(e2e_sh(NULL,
                     RC_BIN("recalld-train") " --input %s --output %s --champion %s 2>/dev/null",
                     log, rebuilt, live),
              2);
    ASSERT_EQ(e2e_sh(NULL,
                     RC_BIN("recalld-train") " --input %s --output %s --init %s --gate-hours 0 "
                                             "2>/dev/null",
                     log, rebuilt, live),
              2);
}

/* The daily rebuild end to end, without a restart: the daemon learns a
 * stream and checkpoints; recalld-train rebuilds from a longer log starting
 * from that checkpoint (--init); install_model (recallctl install-model)
 * puts the rebuilt table into the running daemon: its rows hold the file's
 * vectors exactly (the next checkpoint shows them), items new to the daemon
 * are added and searchable. Files outside model.path / model.dir refused. */
/* The newest checkpoint of data with `rows` rows (waits for it); its path
 * into ck. */
static rc_table *checkpoint_with_rows(const char *data, uint32_t rows, char *ck, size_t cap)
{
    long long deadline = e2e_now_ms() + e2e_scaled_ms(120000);
    for (;;) {
        uint64_t seq[1];
        rc_table *t = NULL;
        if (rc_checkpoint_list(data, seq, 1) > 0) {
            snprintf(ck, cap, "%s/checkpoint-%020llu.rcc", data, (unsigned long long)seq[0]);
            rc_checkpoint_meta meta;
            if (rc_checkpoint_load(ck, NULL, &t, &meta, NULL, 0) == 0) {
                rc_checkpoint_meta_free(&meta);
                if (rc_table_size(t) == rows)
                    return t;
                rc_table_destroy(t);
            }
        }
        if (e2e_now_ms() > deadline)
            RC__FAIL("no checkpoint of %u rows in %s", rows, data);
        usleep(100000);
    }
}

TEST(model_install_rebuild_into_the_running_daemon)
{
    char dir[] = "/tmp/rc-install-XXXXXX", cfg[300], models[300], data[300], logf[300],
         rebuilt[400], ck[4200], *out = NULL;
    ASSERT(mkdtemp(dir) != NULL);
    snprintf(models, sizeof models, "%s/models", dir);
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(logf, sizeof logf, "%s/log.jsonl", dir);
    snprintf(rebuilt, sizeof rebuilt, "%s/rebuilt.rcm", models);
    ASSERT_EQ(mkdir(models, 0700), 0);
    ASSERT_EQ(mkdir(data, 0700), 0);
    snprintf(cfg, sizeof cfg, "%s/c.json", dir);
    FILE *f = fopen(cfg, "w");
    ASSERT(f != NULL);
    fprintf(f, "{\"checkpoint\":{\"interval_ms\":300},\"model\":{\"dir\":\"%s\"}}\n", models);
    fclose(f);
    const char *extra[] = {"--config", cfg, "--data-dir", data, NULL};
    e2e_daemon d;
    e2e_start(&d, extra);
    int st = e2e_sh(&out,
                    RC_BIN("recalld-gen") " --brokers '%s' --topic clicks --seed 31 --events 3000 "
                                          "--users 500 --items 300 --cities 2 --cates 2 "
                                          ">/dev/null 2>&1",
                    d.bootstrap);
    ASSERT_EQ(st, 0);
    free(out);
    json_t *s0 = e2e_wait_consumed(d.sock, 3000, 120000);
    ASSERT_EQ(e2e_int(s0, "events.applied"), 3000);
    json_decref(s0);
    /* the newest checkpoint once it covers every item */
    json_t *s = e2e_request(d.sock, "{\"op\":\"stats\"}");
    rc_table *live = checkpoint_with_rows(data, (uint32_t)e2e_int(s, "items"), ck, sizeof ck);
    json_decref(s);
    /* the rebuild: a longer log (more items), starting from the checkpoint */
    st = e2e_sh(&out,
                RC_BIN("recalld-gen") " --seed 32 --events 6000 --users 500 --items 400 "
                                      "--cities 2 --cates 2 --out %s >/dev/null 2>&1",
                logf);
    ASSERT_EQ(st, 0);
    free(out);
    st = e2e_sh(&out,
                RC_BIN("recalld-train") " --input %s --init %s --output %s --threads 1 "
                                        "--epochs 1 --json 2>/dev/null",
                logf, ck, rebuilt);
    ASSERT_EQ(st, 0);
    json_t *tr = e2e_json(out);
    free(out);
    ASSERT_GT(e2e_int(tr, "train.init.matched"), 100);
    json_decref(tr);
    rc_table *model = NULL;
    ASSERT_EQ(rc_model_load(rebuilt, NULL, &model, NULL, 0), 0);
    uint32_t rows = rc_table_size(model), fresh = 0;
    for (uint32_t r = 0; r < rows; r++) {
        size_t len;
        uint32_t lr;
        const char *id = rc_table_item_id(model, r, &len);
        fresh += rc_table_find(live, id, len, &lr) != 0;
    }
    ASSERT_GT(fresh, 0); /* items the daemon never saw */
    /* refused: a file outside model.dir, with one message; no "path" and no model.path */
    json_t *r = e2e_request(d.sock, "{\"op\":\"install_model\",\"path\":\"%s\"}", logf);
    ASSERT_STREQ(json_string_value(json_object_get(json_object_get(r, "error"), "code")),
                 "not_allowed");
    ASSERT_STREQ(json_string_value(json_object_get(json_object_get(r, "error"), "message")),
                 RC_INSTALL_NOT_ALLOWED);
    json_decref(r);
    r = e2e_request(d.sock, "{\"op\":\"install_model\"}");
    ASSERT_STREQ(json_string_value(json_object_get(json_object_get(r, "error"), "code")),
                 "load_failed");
    json_decref(r);
    /* installed by its name in model.dir, through recallctl */
    st = e2e_sh(&out, RC_BIN("recallctl") " --socket %s --raw install-model rebuilt.rcm", d.sock);
    ASSERT_EQ(st, 0);
    r = e2e_json(out);
    free(out);
    ASSERT_EQ(e2e_int(r, "rows"), rows);
    ASSERT_EQ(e2e_int(r, "created"), fresh);
    ASSERT_EQ(e2e_int(r, "replaced"), rows - fresh);
    ASSERT_EQ(e2e_int(r, "refused"), 0);
    json_decref(r);
    s = e2e_request(d.sock, "{\"op\":\"stats\"}");
    ASSERT_EQ(e2e_int(s, "items"), rc_table_size(live) + fresh);
    ASSERT_EQ(e2e_int(s, "training.installs"), 1);
    ASSERT_EQ(e2e_int(s, "training.installed_rows"), rows);
    json_decref(s);
    /* a new item is searchable once indexed */
    size_t len;
    uint32_t any = 0;
    for (uint32_t lr; any < rows; any++)
        if (rc_table_find(live, rc_table_item_id(model, any, &len), len, &lr) != 0)
            break;
    long long deadline = e2e_now_ms() + e2e_scaled_ms(60000);
    for (;;) {
        r = e2e_request(d.sock, "{\"op\":\"similar\",\"item_id\":\"%s\",\"k\":5}",
                        rc_table_item_id(model, any, &len));
        int ok = json_is_true(json_object_get(r, "ok"));
        json_decref(r);
        if (ok)
            break;
        ASSERT(e2e_now_ms() < deadline);
        usleep(50000);
    }
    /* the next checkpoint holds the file's vectors, bit for bit (no click
     * came after the install) */
    uint32_t after = rc_table_size(live) + fresh;
    rc_table_destroy(live);
    live = checkpoint_with_rows(data, after, ck, sizeof ck);
    uint32_t dim = rc_table_dim(model);
    for (uint32_t m = 0; m < rows; m++) {
        const char *id = rc_table_item_id(model, m, &len);
        uint32_t lr;
        ASSERT_EQ(rc_table_find(live, id, len, &lr), 0);
        ASSERT_EQ(memcmp(rc_table_in(live, lr), rc_table_in(model, m), dim * sizeof(float)), 0);
        ASSERT_EQ(memcmp(rc_table_out(live, lr), rc_table_out(model, m), dim * sizeof(float)), 0);
    }
    /* "replace": the file as a whole new table (recallctl replace-model):
     * the daemon's rows the file does not hold start again, counted */
    r = e2e_request(d.sock, "{\"op\":\"install_model\",\"path\":\"rebuilt.rcm\",\"replace\":1}");
    ASSERT_STREQ(json_string_value(json_object_get(json_object_get(r, "error"), "code")),
                 "bad_request");
    json_decref(r);
    st = e2e_sh(&out, RC_BIN("recallctl") " --socket %s --raw replace-model rebuilt.rcm", d.sock);
    ASSERT_EQ(st, 0);
    r = e2e_json(out);
    free(out);
    ASSERT(json_is_true(json_object_get(r, "replace")));
    ASSERT_EQ(e2e_int(r, "replaced"), rows);
    ASSERT_EQ(e2e_int(r, "created"), 0);
    ASSERT_EQ(e2e_int(r, "reset"), after - rows);
    ASSERT_GT(after - rows, 0); /* the daemon's items that the longer log lacks */
    json_decref(r);
    s = e2e_request(d.sock, "{\"op\":\"stats\"}");
    ASSERT_EQ(e2e_int(s, "training.installs"), 2);
    json_decref(s);
    rc_table_destroy(live);
    rc_table_destroy(model);
    ASSERT_EQ(e2e_stop(&d), 0);
    e2e_sh(NULL, "rm -rf %s", dir);
}
