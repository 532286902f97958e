/* clicklog: CSV/TSV/"::"/";" parsing, header names vs indices, malformed rows
 * counted and skipped, gzip and stdin input, ISO times, sessions by gap and by
 * column, the item -> category side file, the shared datasets. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "recalld/clicklog.h"
#include "recalld/common.h"
#include "test.h"

static char tdir[64];

static const char *tmp_path(const char *name)
{
    static char path[4][256];
    static int k;
    if (!tdir[0]) {
        snprintf(tdir, sizeof tdir, "/tmp/rc_clicklog_XXXXXX");
        ASSERT(mkdtemp(tdir) != NULL);
    }
    k = (k + 1) % 4;
    snprintf(path[k], sizeof path[k], "%s/%s", tdir, name);
    return path[k];
}

static const char *write_file(const char *name, const char *text)
{
    const char *p = tmp_path(name);
    FILE *f = fopen(p, "w");
    ASSERT(f != NULL);
    ASSERT_EQ(fwrite(text, 1, strlen(text), f), strlen(text));
    ASSERT_EQ(fclose(f), 0);
    return p;
}

static rc_clicklog *load_ok(rc_clicklog_opts o)
{
    rc_clicklog *log = NULL;
    char err[256] = "";
    o.quiet = 1;
    int rc = rc_clicklog_load(&o, &log, err, sizeof err);
    if (rc)
        RC__FAIL("load %s: %d %s", o.path, rc, err);
    return log;
}

static const char *str_of(rc_dict *d, uint32_t id) { return rc_dict_str(d, id, NULL); }

/* The item ids of session s, space-separated. */
static const char *sess_items(const rc_clicklog *log, uint32_t s)
{
    static char buf[512];
    size_t w = 0;
    buf[0] = '\0';
    for (size_t i = log->sess_off[s]; i < log->sess_off[s + 1]; i++)
        w += (size_t)snprintf(buf + w, sizeof buf - w, "%s%s", w ? " " : "",
                              str_of(log->items, log->recs[i].item));
    return buf;
}

TEST(clicklog_csv_header_names_and_malformed)
{
    const char *p = write_file("a.csv", "ts,user,item,city\n"
                                        "100,u1,i1,c1\n"
                                        "200,u1,i2,c1\n"
                                        "300,u2,i1\n"          /* too few columns */
                                        "400,u2,i3,c2,extra\n" /* too many */
                                        "500,,i3,c2\n"         /* empty user */
                                        "abc,u2,i3,c2\n"       /* bad time */
                                        "\n"                   /* blank: no row */
                                        "-5,u2,i3,c2\n"        /* negative time */
                                        "600,u2,i3,c2\r\n"     /* CRLF is fine */
                                        "700, u2 ,\"i,4\",c2\n");
    rc_clicklog *log = load_ok((rc_clicklog_opts){.path = p,
                                                  .header = 1,
                                                  .col_user = "user",
                                                  .col_item = "item",
                                                  .col_time = "ts",
                                                  .col_city = "city",
                                                  .time_unit = RC_TIME_MS});
    ASSERT_EQ(log->n, 4);
    ASSERT_EQ(log->lines, 9);
    ASSERT_EQ(log->skipped, 5);
    ASSERT_EQ(log->skipped_by_reason[RC_LOG_R_COLUMNS], 2);
    ASSERT_EQ(log->skipped_by_reason[RC_LOG_R_EMPTY_ID], 1);
    ASSERT_EQ(log->skipped_by_reason[RC_LOG_R_BAD_TIME], 2);
    ASSERT_EQ(rc_dict_size(log->users), 2);
    ASSERT_EQ(rc_dict_size(log->items), 4);
    ASSERT(log->has_city && !log->has_cate);
    /* Quoted separator and trimmed spaces. */
    uint32_t id;
    ASSERT_EQ(rc_dict_find(log->items, "i,4", 3, &id), 0);
    ASSERT_EQ(rc_dict_find(log->users, "u2", 2, &id), 0);
    ASSERT_STREQ(rc_clicklog_reason_name(RC_LOG_R_BAD_TIME), "bad_time");
    rc_clicklog_free(log);
}

TEST(clicklog_indices_equal_names)
{
    const char *p = write_file("b.csv", "user;item;time;cate\n"
                                        "u1;i1;10;k1\nu1;i2;20;k2\nu2;i2;15;k2\nu2;i3;40;k1\n");
    rc_clicklog *a = load_ok((rc_clicklog_opts){.path = p,
                                                .header = 1,
                                                .col_user = "0",
                                                .col_item = "1",
                                                .col_time = "2",
                                                .col_cate = "3"});
    rc_clicklog *b = load_ok((rc_clicklog_opts){
        .path = p, .col_user = "USER", .col_item = "item", .col_time = "time", .col_cate = "cate"});
    ASSERT_EQ(a->n, 4);
    ASSERT_EQ(b->n, a->n);
    ASSERT_EQ(a->nsessions, b->nsessions);
    for (size_t i = 0; i < a->n; i++) {
        ASSERT_STREQ(str_of(a->items, a->recs[i].item), str_of(b->items, b->recs[i].item));
        ASSERT_STREQ(str_of(a->cates, a->recs[i].cate), str_of(b->cates, b->recs[i].cate));
        ASSERT_EQ(a->recs[i].ts_ms, b->recs[i].ts_ms);
        ASSERT_EQ(a->recs[i].ts_ms % 1000, 0); /* seconds by default */
    }
    rc_clicklog_free(a);
    rc_clicklog_free(b);
}

TEST(clicklog_unknown_column_refused)
{
    const char *p = write_file("c.csv", "user,item,time\nu1,i1,1\n");
    rc_clicklog *log = NULL;
    char err[256] = "";
    rc_clicklog_opts o = {
        .path = p, .col_user = "user", .col_item = "itm", .col_time = "time", .quiet = 1};
    ASSERT_EQ(rc_clicklog_load(&o, &log, err, sizeof err), RC_EINVAL);
    ASSERT(log == NULL);
    ASSERT(strstr(err, "--item itm") != NULL);
    ASSERT(strstr(err, "user, item, time") != NULL);
    o = (rc_clicklog_opts){.path = tmp_path("absent.csv"), .quiet = 1};
    ASSERT_EQ(rc_clicklog_load(&o, &log, err, sizeof err), RC_ENOENT);
    o = (rc_clicklog_opts){.path = p, .col_user = "0", .col_time = "2", .quiet = 1};
    ASSERT_EQ(rc_clicklog_load(&o, &log, err, sizeof err), RC_EINVAL); /* no --item */
}

TEST(clicklog_double_colon_and_default_columns)
{
    /* MovieLens-1M layout: user::item::rating::seconds, no header, no flags. */
    const char *p = write_file("ratings.dat", "1::1193::5::978300760\n"
                                              "1::661::3::978302109\n"
                                              "2::1357::5::978298709\n"
                                              "2::3068\n"
                                              "2::1537::4::97829x\n");
    rc_clicklog *log = load_ok((rc_clicklog_opts){.path = p});
    ASSERT_EQ(log->n, 3);
    ASSERT_EQ(log->skipped_by_reason[RC_LOG_R_COLUMNS], 1);
    ASSERT_EQ(log->skipped_by_reason[RC_LOG_R_BAD_TIME], 1);
    /* Sessions by start time: user 2 (978298709) comes before user 1's two. */
    ASSERT_EQ(log->nsessions, 2);
    ASSERT_STREQ(sess_items(log, 0), "1357");
    ASSERT_STREQ(sess_items(log, 1), "1193 661"); /* 22.5 min apart: one session */
    ASSERT_EQ(log->recs[0].ts_ms, 978298709000LL);
    rc_clicklog_free(log);
    /* The same with explicit "::" and indices. */
    log = load_ok((rc_clicklog_opts){
        .path = p, .sep = "::", .col_user = "0", .col_item = "1", .col_time = "3"});
    ASSERT_EQ(log->n, 3);
    rc_clicklog_free(log);
}

TEST(clicklog_tsv_and_iso)
{
    const char *p = write_file("d.tsv", "u1\ti1\t2016-05-09T10:00:00Z\n"
                                        "u1\ti2\t2016-05-09 10:10:30.250\n"
                                        "u1\ti3\t2016-05-09T11:00:00+01:00\n" /* = 10:00Z */
                                        "u1\ti4\t2016-02-30\n");
    rc_clicklog *log = load_ok((rc_clicklog_opts){.path = p,
                                                  .format = RC_LOG_TSV,
                                                  .col_user = "0",
                                                  .col_item = "1",
                                                  .col_time = "2",
                                                  .time_unit = RC_TIME_ISO});
    ASSERT_EQ(log->n, 3);
    ASSERT_EQ(log->skipped_by_reason[RC_LOG_R_BAD_TIME], 1);
    struct tm tm = {.tm_year = 116, .tm_mon = 4, .tm_mday = 9, .tm_hour = 10};
    int64_t t10 = (int64_t)timegm(&tm) * 1000;
    ASSERT_EQ(log->nsessions, 1);
    /* i1 and i3 tie at 10:00Z: file order kept. */
    ASSERT_STREQ(sess_items(log, 0), "i1 i3 i2");
    ASSERT_EQ(log->recs[0].ts_ms, t10);
    ASSERT_EQ(log->recs[1].ts_ms, t10);
    ASSERT_EQ(log->recs[2].ts_ms, t10 + 630250);
    rc_clicklog_free(log);
}

TEST(clicklog_parse_iso_cases)
{
    static const struct {
        const char *s;
        int y, mo, d, h, mi, sec, ms, zone_min;
    } ok[] = {
        {"1970-01-01", 1970, 1, 1, 0, 0, 0, 0, 0},
        {"2000-02-29T23:59:59.999Z", 2000, 2, 29, 23, 59, 59, 999, 0},
        {"2016-06-01T08:30", 2016, 6, 1, 8, 30, 0, 0, 0},
        {"1999-12-31T23:00:00-02:30", 1999, 12, 31, 23, 0, 0, 0, -150},
        {"2024-03-10t01:02:03.5+0100", 2024, 3, 10, 1, 2, 3, 500, 60},
        {"1900-03-01", 1900, 3, 1, 0, 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        struct tm tm = {.tm_year = ok[i].y - 1900,
                        .tm_mon = ok[i].mo - 1,
                        .tm_mday = ok[i].d,
                        .tm_hour = ok[i].h,
                        .tm_min = ok[i].mi,
                        .tm_sec = ok[i].sec};
        int64_t want = (int64_t)timegm(&tm) * 1000 + ok[i].ms - ok[i].zone_min * 60000LL, got = -1;
        ASSERT_EQ(rc_clicklog_parse_iso(ok[i].s, strlen(ok[i].s), &got), 0);
        ASSERT_EQ(got, want);
    }
    static const char *const bad[] = {"",
                                      "2016",
                                      "2016-5-09",
                                      "2016-13-01",
                                      "1900-02-29",
                                      "2016-05-09T24:00",
                                      "2016-05-09T10:60",
                                      "2016-05-09X",
                                      "2016-05-09T10:00Zjunk",
                                      "2016-05-09T10:00:00.",
                                      "2016-05-09T10:00+25:00",
                                      "abc"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t v;
        if (rc_clicklog_parse_iso(bad[i], strlen(bad[i]), &v) != RC_EINVAL)
            RC__FAIL("accepted '%s'", bad[i]);
    }
}

TEST(clicklog_sessions_by_gap)
{
    /* gap 30 min: uA 0, 10, 50 min (-> 2 sessions), uB 5 and 5+29 min. */
    const char *p = write_file("e.csv", "uA,a1,0\nuB,b1,300\nuA,a2,600\nuA,a3,3000\n"
                                        "uB,b2,2040\n");
    rc_clicklog *log = load_ok((rc_clicklog_opts){.path = p});
    ASSERT_EQ(log->n, 5);
    ASSERT_EQ(log->nsessions, 3);
    ASSERT_STREQ(sess_items(log, 0), "a1 a2");
    ASSERT_STREQ(sess_items(log, 1), "b1 b2");
    ASSERT_STREQ(sess_items(log, 2), "a3");
    ASSERT_EQ(log->sess_off[0], 0);
    ASSERT_EQ(log->sess_off[3], 5);
    for (uint32_t s = 0; s < log->nsessions; s++)
        for (size_t i = log->sess_off[s]; i < log->sess_off[s + 1]; i++)
            ASSERT_EQ(log->recs[i].session, s);
    rc_clicklog_free(log);
    /* A 20-minute gap splits uA's first session too; exactly-the-gap does not. */
    log = load_ok((rc_clicklog_opts){.path = p, .gap_ms = 600000});
    ASSERT_EQ(log->nsessions, 4);
    ASSERT_STREQ(sess_items(log, 0), "a1 a2");
    rc_clicklog_free(log);
}

TEST(clicklog_sessions_by_column)
{
    /* Diginetica-like: session column, user NA, date + ms offset. */
    const char *p = write_file("f.csv", "session_id;user_id;item_id;timeframe;eventdate\n"
                                        "1;NA;10;5000;2016-05-09\n"
                                        "1;NA;11;1000;2016-05-09\n"
                                        "2;NA;12;0;2016-05-08\n"
                                        "3;7;13;100;2016-05-09\n"
                                        "1;NA;14;9000000;2016-05-09\n"
                                        "3;7;15;x;2016-05-09\n");
    rc_clicklog *log = load_ok((rc_clicklog_opts){.path = p,
                                                  .col_session = "sessionId",
                                                  .col_item = "item_id",
                                                  .col_time = "eventdate",
                                                  .time_unit = RC_TIME_ISO,
                                                  .col_time_offset = "timeframe"});
    ASSERT_EQ(log->n, 5);
    ASSERT_EQ(log->skipped_by_reason[RC_LOG_R_BAD_TIME], 1);
    /* 2.5 h inside session 1: no gap split with a session column. */
    ASSERT_EQ(log->nsessions, 3);
    ASSERT_STREQ(sess_items(log, 0), "12");
    ASSERT_STREQ(sess_items(log, 1), "13");
    ASSERT_STREQ(sess_items(log, 2), "11 10 14");
    ASSERT_EQ(rc_dict_size(log->users), 3); /* no --user: the session is the user */
    ASSERT_EQ(log->recs[2].ts_ms - log->recs[0].ts_ms, 86400000LL + 1000);
    rc_clicklog_free(log);
}

TEST(clicklog_gzip_and_stdin)
{
    const char *text = "u1,i1,1\nu1,i2,2\nbad\nu2,i1,3\n";
    const char *gzp = tmp_path("g.csv.gz");
    gzFile gz = gzopen(gzp, "wb");
    ASSERT(gz != NULL);
    ASSERT_EQ(gzwrite(gz, text, (unsigned)strlen(text)), (int)strlen(text));
    ASSERT_EQ(gzclose(gz), Z_OK);
    rc_clicklog *log = load_ok((rc_clicklog_opts){.path = gzp});
    ASSERT_EQ(log->n, 3);
    ASSERT_EQ(log->skipped, 1);
    ASSERT_EQ(log->nsessions, 2);
    rc_clicklog_free(log);
    /* stdin ("-"), itself gzip: the runner forked this case, stdin is ours. */
    ASSERT(freopen(gzp, "rb", stdin) != NULL);
    log = load_ok((rc_clicklog_opts){.path = "-", .format = RC_LOG_CSV});
    ASSERT_EQ(log->n, 3);
    rc_clicklog_free(log);
    /* A truncated gzip stream is an I/O error, not a silent short log. */
    FILE *f = fopen(gzp, "rb");
    char buf[256];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    const char *cut = tmp_path("cut.csv.gz");
    f = fopen(cut, "wb");
    fwrite(buf, 1, n - 12, f);
    fclose(f);
    rc_clicklog_opts o = {.path = cut, .quiet = 1};
    char err[256] = "";
    ASSERT_EQ(rc_clicklog_load(&o, &log, err, sizeof err), RC_EIO);
    ASSERT(strstr(err, "cut.csv.gz") != NULL);
}

TEST(clicklog_jsonl_events)
{
    const char *p =
        write_file("h.jsonl", "{\"user_id\":\"u1\",\"item_id\":\"i1\",\"city_id\":3,"
                              "\"cate_id\":\"k\",\"ts\":1000}\n"
                              "{\"user_id\":\"u1\",\"item_id\":\"i2\",\"city_id\":3,"
                              "\"cate_id\":\"k\"}\n"
                              "not json\n"
                              "{\"user_id\":\"u1\",\"item_id\":7,\"city_id\":4,\"cate_id\":\"m\","
                              "\"ts\":2000}\n");
    rc_clicklog *log = load_ok((rc_clicklog_opts){.path = p});
    ASSERT_EQ(log->n, 2);
    ASSERT_EQ(log->skipped_by_reason[RC_LOG_R_BAD_EVENT], 2);
    ASSERT(log->has_city && log->has_cate);
    ASSERT_STREQ(sess_items(log, 0), "i1 7");
    ASSERT_STREQ(str_of(log->cities, log->recs[1].city), "4");
    ASSERT_STREQ(str_of(log->cates, log->recs[0].cate), "k");
    rc_clicklog_free(log);
}

TEST(clicklog_long_line_skipped)
{
    size_t big = RC_CLICKLOG_LINE_MAX + 100;
    char *text = malloc(big + 64);
    strcpy(text, "u1,i1,1\nu1,");
    size_t n = strlen(text);
    memset(text + n, 'x', big);
    strcpy(text + n + big, ",2\nu1,i3,3\n");
    rc_clicklog *log = load_ok((rc_clicklog_opts){.path = write_file("long.csv", text)});
    free(text);
    ASSERT_EQ(log->n, 2);
    ASSERT_EQ(log->skipped_by_reason[RC_LOG_R_TOO_LONG], 1);
    ASSERT_STREQ(sess_items(log, 0), "i1 i3");
    rc_clicklog_free(log);
}

TEST(clicklog_item_cates_side_files)
{
    const char *p = write_file("v.csv", "s;i;t\n1;100;1\n1;200;2\n2;300;3\n2;100;4\n");
    const char *cats = write_file("cats.csv", "itemId;categoryId\n100;7\n300;8\n999;9\n");
    rc_clicklog *log = load_ok((rc_clicklog_opts){
        .path = p, .col_session = "s", .col_item = "i", .col_time = "t", .item_cates = cats});
    ASSERT(log->has_cate);
    for (size_t i = 0; i < log->n; i++) {
        const char *it = str_of(log->items, log->recs[i].item);
        const char *k = str_of(log->cates, log->recs[i].cate);
        ASSERT_STREQ(k, !strcmp(it, "100") ? "7" : !strcmp(it, "300") ? "8" : "");
    }
    uint32_t id;
    ASSERT_EQ(rc_dict_find(log->cates, "9", 1, &id), RC_ENOENT); /* not in the log */
    rc_clicklog_free(log);
    /* MovieLens u.item: the first set genre flag of 19. */
    const char *zeros = "|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0";
    char uitem[512];
    snprintf(uitem, sizeof uitem,
             "100|Movie A (1995)|01-Jan-1995||http://x|0|0|1%s\n"
             "200|Movie B (1995)|01-Jan-1995||http://y|0|1|1%s\n",
             zeros, zeros);
    const char *ml = write_file("u.item", uitem);
    log = load_ok((rc_clicklog_opts){.path = p,
                                     .col_session = "s",
                                     .col_item = "i",
                                     .col_time = "t",
                                     .item_cates = ml,
                                     .item_cates_format = "movielens"});
    for (size_t i = 0; i < log->n; i++) {
        const char *it = str_of(log->items, log->recs[i].item);
        const char *k = str_of(log->cates, log->recs[i].cate);
        ASSERT_STREQ(k, !strcmp(it, "100") ? "2" : !strcmp(it, "200") ? "1" : "");
    }
    rc_clicklog_free(log);
}

TEST(clicklog_shared_datasets)
{
    /* RECALLD_DATA_DIR: the directory holding the public click datasets
     * (movielens-100k/u.data, diginetica/sample_train-item-views.csv). */
    const char *dir = getenv("RECALLD_DATA_DIR");
    if (!dir || !*dir)
        RC_SKIP("RECALLD_DATA_DIR not set");
    char ml[4096], dg[4096];
    snprintf(ml, sizeof ml, "%s/movielens-100k/u.data", dir);
    snprintf(dg, sizeof dg, "%s/diginetica/sample_train-item-views.csv", dir);
    if (access(ml, R_OK))
        RC_SKIP("RECALLD_DATA_DIR (%s) has no movielens-100k/u.data", dir);
    if (access(dg, R_OK))
        RC_SKIP("RECALLD_DATA_DIR (%s) has no diginetica/sample_train-item-views.csv", dir);
    /* Counts as stated in the datasets' SOURCES.md (computed from the files). */
    rc_clicklog *log = load_ok((rc_clicklog_opts){
        .path = ml, .format = RC_LOG_TSV, .col_user = "0", .col_item = "1", .col_time = "3"});
    ASSERT_EQ(log->n, 100000);
    ASSERT_EQ(log->skipped, 0);
    ASSERT_EQ(rc_dict_size(log->users), 943);
    ASSERT_EQ(rc_dict_size(log->items), 1682);
    rc_clicklog_free(log);
    log = load_ok((rc_clicklog_opts){.path = dg,
                                     .sep = ";",
                                     .header = 1,
                                     .col_session = "session_id",
                                     .col_item = "item_id",
                                     .col_time = "eventdate",
                                     .time_unit = RC_TIME_ISO,
                                     .col_time_offset = "timeframe"});
    ASSERT_EQ(log->n, 12391);
    ASSERT_EQ(log->nsessions, 2986);
    ASSERT_EQ(rc_dict_size(log->items), 7139);
    uint32_t ge2 = 0;
    for (uint32_t s = 0; s < log->nsessions; s++) {
        ge2 += log->sess_off[s + 1] - log->sess_off[s] >= 2;
        if (s)
            ASSERT_LE(log->recs[log->sess_off[s - 1]].ts_ms, log->recs[log->sess_off[s]].ts_ms);
    }
    ASSERT_EQ(ge2, 2053);
    rc_clicklog_free(log);
}
