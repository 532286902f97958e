/* ufeat — user features from a log's JSON events (last non-empty wins) and
 * from a --user-features file (header, '|' tags, numeric buckets, unknown
 * users, refused shapes), and the clicklog keeping profiles only for JSONL. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "e2e.h"
#include "recalld/clicklog.h"
#include "recalld/common.h"
#include "recalld/tower.h"
#include "recalld/ufeat.h"
#include "test.h"

static void tmp_dir(char *buf, size_t n)
{
    snprintf(buf, n, "/tmp/rc_ufeat_XXXXXX");
    ASSERT(mkdtemp(buf) != NULL);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ASSERT(f != NULL);
    fputs(text, f);
    ASSERT_EQ(fclose(f), 0);
}

static rc_clicklog *load(const char *path)
{
    rc_clicklog_opts o = {.path = path, .quiet = 1};
    rc_clicklog *log = NULL;
    char err[256] = "";
    if (rc_clicklog_load(&o, &log, err, sizeof err))
        RC__FAIL("load %s: %s", path, err);
    return log;
}

static uint32_t user(const rc_clicklog *log, const char *name)
{
    uint32_t id = UINT32_MAX;
    ASSERT_EQ(rc_dict_find(log->users, name, strlen(name), &id), 0);
    return id;
}

static uint64_t H(const char *s) { return rc_tower_hash(s, strlen(s)); }

/* 1 when user u's tags are exactly want[0..n) (in order). */
static int tags_are(const rc_ufeat *f, uint32_t u, const char *const *want, uint32_t n)
{
    if (f->tag_off[u + 1] - f->tag_off[u] != n)
        return 0;
    for (uint32_t i = 0; i < n; i++)
        if (f->tags[f->tag_off[u] + i] != H(want[i]))
            return 0;
    return 1;
}

/* 1 when user u has tag s (any position). */
static int has_tag(const rc_ufeat *f, uint32_t u, const char *s)
{
    for (uint32_t i = f->tag_off[u]; i < f->tag_off[u + 1]; i++)
        if (f->tags[i] == H(s))
            return 1;
    return 0;
}

static const char events[] =
    "{\"user_id\":\"u1\",\"item_id\":\"i1\",\"city_id\":\"c\",\"cate_id\":\"k\",\"ts\":1000,"
    "\"device\":\"d1\",\"tags\":[\"a\"]}\n"
    "{\"user_id\":\"u2\",\"item_id\":\"i2\",\"city_id\":\"c\",\"cate_id\":\"k\",\"ts\":1500}\n"
    "{\"user_id\":\"u1\",\"item_id\":\"i2\",\"city_id\":\"c\",\"cate_id\":\"k\",\"ts\":2000,"
    "\"device\":\"d2\",\"tags\":[\"b\",\"c\"]}\n"
    /* empty device and tags: absent, the earlier values stay */
    "{\"user_id\":\"u1\",\"item_id\":\"i3\",\"city_id\":\"c\",\"cate_id\":\"k\",\"ts\":3000,"
    "\"device\":\"\",\"tags\":[]}\n"
    "{\"user_id\":\"u3\",\"item_id\":\"i1\",\"city_id\":\"c\",\"cate_id\":\"k\",\"ts\":3500,"
    "\"tags\":[\"x\",\"y\",\"z\",\"w\",\"v\"]}\n"
    /* a shorter list later replaces the longer one (rewritten in its slot) */
    "{\"user_id\":\"u3\",\"item_id\":\"i2\",\"city_id\":\"c\",\"cate_id\":\"k\",\"ts\":3600,"
    "\"device\":\"d9\",\"tags\":[\"q\"]}\n"
    "{\"user_id\":\"u3\",\"item_id\":\"i3\",\"city_id\":\"c\",\"cate_id\":\"k\",\"ts\":3700}\n";

TEST(ufeat_from_jsonl_events)
{
    char dir[64], path[128];
    tmp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/log.jsonl", dir);
    write_file(path, events);
    rc_clicklog *log = load(path);
    ASSERT_EQ(log->n, 7);
    ASSERT(log->profiles != NULL);
    rc_ufeat *f = NULL;
    ASSERT_EQ(rc_ufeat_from_log(log, &f), 0);
    ASSERT_EQ(f->nusers, 3);
    uint32_t u1 = user(log, "u1"), u2 = user(log, "u2"), u3 = user(log, "u3");
    /* u1: the last non-empty device and tags (the empty ones of its last event do not count) */
    ASSERT(f->device[u1] == H("d2"));
    static const char *const t1[] = {"b", "c"}, *const t3[] = {"q"};
    ASSERT(tags_are(f, u1, t1, 2));
    /* u2: nothing = absent */
    ASSERT(f->device[u2] == 0);
    ASSERT_EQ(f->tag_off[u2 + 1] - f->tag_off[u2], 0);
    ASSERT(f->device[u3] == H("d9"));
    ASSERT(tags_are(f, u3, t3, 1));
    ASSERT_EQ(f->users_with_device, 2);
    ASSERT_EQ(f->users_with_tags, 2);
    rc_ufeat_free(f);
    rc_ufeat_free(NULL);
    rc_clicklog_free(log);
    ASSERT_EQ(e2e_sh(NULL, "rm -rf '%s'", dir), 0);
}

TEST(ufeat_csv_log_has_no_profile)
{
    char dir[64], path[128];
    tmp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/log.tsv", dir);
    write_file(path, "1\t10\t5\t100\n1\t11\t5\t101\n2\t10\t3\t102\n");
    rc_clicklog *log = load(path);
    ASSERT_EQ(log->n, 3);
    ASSERT_EQ(rc_dict_size(log->users), 2);
    ASSERT(log->profiles == NULL && log->devices == NULL && log->nprofiles == 0);
    rc_ufeat *f = NULL;
    ASSERT_EQ(rc_ufeat_from_log(log, &f), 0);
    ASSERT_EQ(f->nusers, 2);
    ASSERT_EQ(f->users_with_device + f->users_with_tags, 0);
    ASSERT_EQ(f->tag_off[2], 0);
    rc_ufeat_free(f);
    rc_clicklog_free(log);
    ASSERT_EQ(e2e_sh(NULL, "rm -rf '%s'", dir), 0);
}

TEST(ufeat_file_parsing)
{
    char dir[64], path[128], feats[128], err[256] = "";
    tmp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/log.jsonl", dir);
    snprintf(feats, sizeof feats, "%s/users.csv", dir);
    write_file(path, events);
    /* u1..u3 are in the log, u7/u8 are not; ages 10..80 make 8 buckets. */
    write_file(feats, "user_id,age,Device,genres\n"
                      "u1,10,ios,drama|comedy\n"
                      "u7,20,,x\n"
                      "\n"
                      "u3,30,android,\n"
                      "u8,40,,\n"
                      "u9,50,,\n"
                      "u10,60,,\n"
                      "u11,70,,\n"
                      "u12,80,, a | b \n");
    rc_clicklog *log = load(path);
    rc_ufeat *f = NULL;
    uint64_t unknown = 0;
    ASSERT_EQ(rc_ufeat_from_log(log, &f), 0);
    int rc = rc_ufeat_load_file(f, log, feats, &unknown, err, sizeof err);
    if (rc)
        RC__FAIL("load_file: %s", err);
    ASSERT_EQ(unknown, 6);
    uint32_t u1 = user(log, "u1"), u2 = user(log, "u2"), u3 = user(log, "u3");
    /* the file replaces the log's features of the users it lists */
    ASSERT(f->device[u1] == H("ios"));
    static const char *const t1[] = {"age=q0", "genres=drama", "genres=comedy"};
    ASSERT(tags_are(f, u1, t1, 3));
    ASSERT(f->device[u3] == H("android"));
    static const char *const t3[] = {"age=q2"};
    ASSERT(tags_are(f, u3, t3, 1));
    ASSERT(!has_tag(f, u3, "q"));
    /* u2 is not in the file: nothing from it */
    ASSERT(f->device[u2] == 0 && f->tag_off[u2 + 1] == f->tag_off[u2]);
    ASSERT_EQ(f->users_with_device, 2);
    ASSERT_EQ(f->users_with_tags, 2);
    rc_ufeat_free(f);

    /* A file without a device column keeps the log's devices. */
    write_file(feats, "user\tgender\nu1\tF\nu2\tM\n");
    ASSERT_EQ(rc_ufeat_from_log(log, &f), 0);
    ASSERT_EQ(rc_ufeat_load_file(f, log, feats, NULL, err, sizeof err), 0);
    ASSERT(f->device[u1] == H("d2"));
    static const char *const g1[] = {"gender=F"}, *const g2[] = {"gender=M"};
    ASSERT(tags_are(f, u1, g1, 1) && tags_are(f, u2, g2, 1));
    ASSERT_EQ(f->users_with_tags, 3); /* u3 keeps its log tags */
    rc_ufeat_free(f);
    rc_clicklog_free(log);
    ASSERT_EQ(e2e_sh(NULL, "rm -rf '%s'", dir), 0);
}

TEST(ufeat_file_numeric_buckets)
{
    char dir[64], path[128], feats[128], err[256] = "";
    tmp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/log.tsv", dir);
    snprintf(feats, sizeof feats, "%s/users.tsv", dir);
    /* 16 users; the score column has 2 distinct values (2 buckets), the
     * level column mixes numbers and words (categorical). */
    FILE *lf = fopen(path, "w"), *ff = fopen(feats, "w");
    ASSERT(lf && ff);
    fprintf(ff, "user\tscore\tlevel\n");
    for (int u = 0; u < 16; u++) {
        fprintf(lf, "%d\t%d\t%d\n", u, u % 5, 100 + u);
        fprintf(ff, "%d\t%d\t%s\n", u, u < 12 ? 1 : 7, u == 3 ? "high" : "2");
    }
    ASSERT_EQ(fclose(lf), 0);
    ASSERT_EQ(fclose(ff), 0);
    rc_clicklog *log = load(path);
    rc_ufeat *f = NULL;
    ASSERT_EQ(rc_ufeat_from_log(log, &f), 0);
    ASSERT_EQ(rc_ufeat_load_file(f, log, feats, NULL, err, sizeof err), 0);
    ASSERT(has_tag(f, user(log, "0"), "score=q0"));
    ASSERT(has_tag(f, user(log, "15"), "score=q1"));
    ASSERT(has_tag(f, user(log, "3"), "level=high"));
    ASSERT(has_tag(f, user(log, "4"), "level=2"));
    ASSERT(!has_tag(f, user(log, "4"), "level=q0"));
    ASSERT_EQ(f->users_with_tags, 16);
    rc_ufeat_free(f);
    rc_clicklog_free(log);
    ASSERT_EQ(e2e_sh(NULL, "rm -rf '%s'", dir), 0);
}

TEST(ufeat_file_refused)
{
    char dir[64], path[128], feats[128], err[256] = "";
    tmp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/log.jsonl", dir);
    snprintf(feats, sizeof feats, "%s/users.csv", dir);
    write_file(path, events);
    rc_clicklog *log = load(path);
    rc_ufeat *f = NULL;
    ASSERT_EQ(rc_ufeat_from_log(log, &f), 0);
    uint64_t before = f->device[user(log, "u1")];

    /* a ragged row names its line */
    write_file(feats, "user,age,gender\nu1,30,F\n\nu2,40\n");
    ASSERT_EQ(rc_ufeat_load_file(f, log, feats, NULL, err, sizeof err), RC_EINVAL);
    ASSERT(strstr(err, "line 4") && strstr(err, "2 fields") && strstr(err, "users.csv"));
    /* a refused file changes nothing */
    ASSERT(f->device[user(log, "u1")] == before);

    /* missing file */
    char missing[160];
    snprintf(missing, sizeof missing, "%s/absent.csv", dir);
    ASSERT_EQ(rc_ufeat_load_file(f, log, missing, NULL, err, sizeof err), RC_ENOENT);
    ASSERT(strstr(err, "absent.csv") != NULL);

    /* no header at all, a header without feature columns, an empty user id */
    write_file(feats, "");
    ASSERT_EQ(rc_ufeat_load_file(f, log, feats, NULL, err, sizeof err), RC_EINVAL);
    ASSERT(strstr(err, "header") != NULL);
    write_file(feats, "user\nu1\n");
    ASSERT_EQ(rc_ufeat_load_file(f, log, feats, NULL, err, sizeof err), RC_EINVAL);
    ASSERT(strstr(err, "line 1") != NULL);
    write_file(feats, "user,age\nu1,3\n,4\n");
    ASSERT_EQ(rc_ufeat_load_file(f, log, feats, NULL, err, sizeof err), RC_EINVAL);
    ASSERT(strstr(err, "line 3") && strstr(err, "empty user id"));
    rc_ufeat_free(f);
    rc_clicklog_free(log);
    ASSERT_EQ(e2e_sh(NULL, "rm -rf '%s'", dir), 0);
}
