/* cli: the shared flags of recalld-train / recalld-eval into the plain
 * struct, errors that name the flag, tool extras; and recalld-train's exit
 * codes, usage and malformed-row report as a user sees them. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "e2e.h"
#include "recalld/cli.h"
#include "recalld/common.h"
#include "test.h"

static int parse(rc_cli *c, char *err, size_t errlen, ...)
{
    char *argv[128] = {"tool"};
    int argc = 1;
    va_list ap;
    va_start(ap, errlen);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL && argc < 127;)
        argv[argc++] = (char *)a;
    va_end(ap);
    rc_cli_init(c);
    err[0] = '\0';
    return rc_cli_parse(c, argc, argv, NULL, 0, NULL, NULL, err, errlen);
}

TEST(cli_common_flags)
{
    rc_cli c;
    char err[256];
    ASSERT_EQ(parse(&c, err, sizeof err, "--input", "-", "--format", "tsv", "--sep", "::",
                    "--header", "--user", "0", "--item=item_id", "--time", "ts", "--session",
                    "sid", "--city", "3", "--cate", "cat", "--time-unit", "iso", "--time-offset",
                    "tf", "--gap-ms", "60000", "--item-cates", "c.csv", "--item-cates-format",
                    "movielens", "--test-ratio", "0.25", "--methods", "sgns,itemknn", "--mode",
                    "cbow", "--dim", "32", "--window", "7", "--negatives", "10", "--epochs", "3",
                    "--threads", "2", "--seed", "99", "--min-count", "4", "--subsample", "1e-4",
                    "--lr", "0.05", "--power", "0.5", "--hard-share", "0.3", "--global-negatives",
                    "--tune", "--tune-seconds", "12.5", "--output", "m.rcm", "--json", NULL),
              0);
    ASSERT_STREQ(c.log.path, "-");
    ASSERT_EQ(c.log.format, RC_LOG_TSV);
    ASSERT_STREQ(c.log.sep, "::");
    ASSERT_EQ(c.log.header, 1);
    ASSERT_STREQ(c.log.col_user, "0");
    ASSERT_STREQ(c.log.col_item, "item_id");
    ASSERT_STREQ(c.log.col_time, "ts");
    ASSERT_STREQ(c.log.col_session, "sid");
    ASSERT_STREQ(c.log.col_city, "3");
    ASSERT_STREQ(c.log.col_cate, "cat");
    ASSERT_EQ(c.log.time_unit, RC_TIME_ISO);
    ASSERT_STREQ(c.log.col_time_offset, "tf");
    ASSERT_EQ(c.log.gap_ms, 60000);
    ASSERT_STREQ(c.log.item_cates, "c.csv");
    ASSERT_STREQ(c.log.item_cates_format, "movielens");
    ASSERT_NEAR(c.test_ratio, 0.25, 1e-12);
    ASSERT(rc_cli_has_method(&c, "sgns", 0) && rc_cli_has_method(&c, "itemknn", 0));
    ASSERT(!rc_cli_has_method(&c, "sgn", 1) && !rc_cli_has_method(&c, "cbow", 1));
    ASSERT_EQ(c.train.mode, RC_SGNS_CBOW);
    ASSERT_EQ(c.train.dim, 32);
    ASSERT_EQ(c.train.window, 7);
    ASSERT_EQ(c.train.negatives, 10);
    ASSERT_EQ(c.train.epochs, 3);
    ASSERT_EQ(c.train.threads, 2);
    ASSERT_EQ(c.train.seed, 99);
    ASSERT_EQ(c.train.min_count, 4);
    ASSERT_NEAR(c.train.subsample, 1e-4, 1e-9);
    ASSERT_NEAR(c.train.lr, 0.05, 1e-7);
    ASSERT_NEAR(c.train.power, 0.5, 1e-7);
    ASSERT_NEAR(c.train.hard_share, 0.3, 1e-7);
    ASSERT_EQ(c.train.global_negatives, 1);
    ASSERT_EQ(c.tune, 1);
    ASSERT_NEAR(c.tune_seconds, 12.5, 1e-12);
    ASSERT_STREQ(c.output, "m.rcm");
    ASSERT_EQ(c.json, 1);
    ASSERT(c.set_mask & RC_CLI_SET_WINDOW && c.set_mask & RC_CLI_SET_LR &&
           c.set_mask & RC_CLI_SET_MODE && c.set_mask & RC_CLI_SET_TEST_RATIO);
    /* Defaults. */
    ASSERT_EQ(parse(&c, err, sizeof err, "--input", "x", NULL), 0);
    ASSERT_NEAR(c.test_ratio, 0.2, 1e-12);
    ASSERT_NEAR(c.tune_seconds, 60, 1e-12);
    ASSERT_EQ(c.set_mask, 0);
    ASSERT(rc_cli_has_method(&c, "popularity", 1) && !rc_cli_has_method(&c, "popularity", 0));
    ASSERT_EQ(parse(&c, err, sizeof err, "-h", NULL), 0);
    ASSERT_EQ(c.help, 1);
}

TEST(cli_errors_name_the_flag)
{
    static const char *const cases[][3] = {
        {"--bogus", NULL, "--bogus: unknown option"},
        {"--dim", "12", "--dim: expected"},
        {"--dim", "abc", "--dim: expected"},
        {"--window", "0", "--window: expected 1..32"},
        {"--window", "33", "--window: expected 1..32"},
        {"--negatives", "-1", "--negatives: expected"},
        {"--test-ratio", "1", "--test-ratio: expected a number in (0,1)"},
        {"--test-ratio", "0", "--test-ratio"},
        {"--lr", "0", "--lr: expected"},
        {"--format", "xml", "--format: expected jsonl, csv or tsv"},
        {"--time-unit", "h", "--time-unit: expected s, ms or iso"},
        {"--mode", "glove", "--mode: expected skipgram or cbow"},
        {"--epochs", "5x", "--epochs"},
        {"--input", NULL, "--input: missing value"},
        {"--header=1", NULL, "--header: takes no value"},
        {"stray", NULL, "stray: unexpected argument"},
        {"--dimm", "8", "--dimm: unknown option"}, /* no abbreviations, no guesses */
        {"--di", "8", "--di: unknown option"},
        {"--sep", "", "--sep: expected a non-empty value"},
    };
    for (size_t i = 0; i < RC_ARRAY_LEN(cases); i++) {
        rc_cli c;
        char err[256];
        int rc = parse(&c, err, sizeof err, cases[i][0], cases[i][1], NULL);
        if (rc != RC_EINVAL || !strstr(err, cases[i][2]))
            RC__FAIL("%s %s: rc %d, \"%s\" (want \"%s\")", cases[i][0],
                     cases[i][1] ? cases[i][1] : "", rc, err, cases[i][2]);
    }
}

struct extra_seen {
    int k, verbose;
};

static int on_extra(void *ud, size_t idx, const char *v, char *err, size_t errlen)
{
    struct extra_seen *s = ud;
    if (idx == 1) {
        s->verbose = 1;
        return 0;
    }
    s->k = atoi(v);
    if (s->k <= 0) {
        snprintf(err, errlen, "expected k >= 1");
        return RC_EINVAL;
    }
    return 0;
}

TEST(cli_tool_extras)
{
    static const rc_cli_flag extra[] = {{"--k", "N", "list length"}, {"--verbose", NULL, "more"}};
    char *argv[] = {"eval", "--k", "50", "--input", "f", "--verbose", "--k=7"};
    rc_cli c;
    struct extra_seen s = {0};
    char err[256] = "";
    rc_cli_init(&c);
    ASSERT_EQ(rc_cli_parse(&c, 7, argv, extra, 2, on_extra, &s, err, sizeof err), 0);
    ASSERT_EQ(s.k, 7);
    ASSERT_EQ(s.verbose, 1);
    ASSERT_STREQ(c.log.path, "f");
    char *bad[] = {"eval", "--k", "0"};
    ASSERT_EQ(rc_cli_parse(&c, 3, bad, extra, 2, on_extra, &s, err, sizeof err), RC_EINVAL);
    ASSERT_STREQ(err, "--k: expected k >= 1");
    /* The usage lists common and extra flags. */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    rc_cli_usage(f, "recalld-eval", "Evaluates.", extra, 2);
    fclose(f);
    ASSERT(strstr(text, "usage: recalld-eval") && strstr(text, "--time-unit U") &&
           strstr(text, "--k N") && strstr(text, "--verbose") && strstr(text, "--time-offset"));
    free(text);
}

TEST(cli_recalld_train_binary)
{
    char *out = NULL;
    ASSERT_EQ(e2e_sh(&out, RC_BIN("recalld-train") " --help"), 0);
    ASSERT(strstr(out, "usage: recalld-train") && strstr(out, "Diginetica"));
    free(out);
    /* A typo: one line naming it, not the whole help. */
    ASSERT_EQ(e2e_sh(&out, RC_BIN("recalld-train") " --input x --nope 2>&1"), 2);
    ASSERT_STREQ(out, "recalld-train: --nope: unknown option (try 'recalld-train --help')\n");
    free(out);
    ASSERT_EQ(e2e_sh(&out, RC_BIN("recalld-train") " --input x 2>&1"), 2); /* no --output */
    free(out);
    /* Malformed rows: reported with line numbers, counted, skipped; still trains. */
    char dir[] = "/tmp/rc_cli_XXXXXX";
    ASSERT(mkdtemp(dir) != NULL);
    char path[128];
    snprintf(path, sizeof path, "%s/log.csv", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "user;item;time\n");
    for (int i = 0; i < 200; i++)
        fprintf(f, "u%d;i%d;%d\n", i % 20, (i * 7) % 30, 1000 + i);
    fprintf(f, "u1;;5\nu2;i3\nu3;i4;yesterday\n");
    fclose(f);
    int st = e2e_sh(&out, RC_BIN("recalld-train") " --input %s --user user --item item "
                          "--time time --output %s/m.rcm --epochs 1 --threads 1 2>&1",
                    path, dir);
    ASSERT_EQ(st, 0);
    ASSERT(strstr(out, "log.csv:202: skipped (empty_id)") != NULL);
    ASSERT(strstr(out, "log.csv:203: skipped (columns)") != NULL);
    ASSERT(strstr(out, "log.csv:204: skipped (bad_time)") != NULL);
    ASSERT(strstr(out, "3 skipped columns=1 empty_id=1 bad_time=1") != NULL);
    ASSERT(strstr(out, "train: skipgram, 1 epochs, 1 threads") != NULL);
    free(out);
    ASSERT_EQ(access(strcat(path, ".none"), F_OK), -1);
    char model[160];
    snprintf(model, sizeof model, "%s/m.rcm", dir);
    ASSERT_EQ(access(model, R_OK), 0);
    /* An unreadable input: exit 1 with the file named. */
    ASSERT_EQ(e2e_sh(&out, RC_BIN("recalld-train") " --input %s/absent.csv --output %s/x.rcm "
                           "2>&1", dir, dir), 1);
    ASSERT(strstr(out, "absent.csv") != NULL);
    free(out);
}
