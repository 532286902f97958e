/* cli: the shared flags of recalld-train / recalld-eval into the plain
 * struct, errors that name the flag, tool extras; and recalld-train's exit
 * codes, usage and malformed-row report as a user sees them. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
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
    ASSERT_EQ(parse(&c, err, sizeof err, "--input", "-", "--format", "tsv", "--sep",
                    "::", "--header", "--user", "0", "--item=item_id", "--time", "ts", "--session",
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
    int st =
        e2e_sh(&out,
               RC_BIN("recalld-train") " --input %s --user user --item item "
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
    ASSERT_EQ(e2e_sh(&out,
                     RC_BIN("recalld-train") " --input %s/absent.csv --output %s/x.rcm "
                                             "2>&1",
                     dir, dir),
              1);
    ASSERT(strstr(out, "absent.csv") != NULL);
    free(out);
}

/* ---- the option parser of the six binaries ---- */

struct seen_calls {
    char got[4][64];
    int n;
};

static int on_call(void *ud, const rc_cli_opt *o, const char *v, char *eb, size_t el)
{
    struct seen_calls *s = ud;
    if (!strcmp(v, "bad"))
        return rc_err(eb, el, RC_EINVAL, "expected good");
    if (s->n < 4)
        snprintf(s->got[s->n++], sizeof s->got[0], "%c=%s", o->shortname ? o->shortname : '-', v);
    return 0;
}

struct parsed {
    int flag, i, argi, rc;
    uint32_t u;
    double d;
    const char *str;
    struct seen_calls calls;
    char err[256];
};

static struct parsed *parse_opts(struct parsed *p, int maxpos, ...)
{
    char *argv[32] = {"prog"};
    int argc = 1;
    va_list ap;
    va_start(ap, maxpos);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL && argc < 31;)
        argv[argc++] = (char *)a;
    va_end(ap);
    memset(p, 0, sizeof *p);
    const rc_cli_opt opts[] = {
        {"flag", 'f', RC_CLI_BOOL, &p->flag, NULL, "a switch", 0, 0, 0},
        {"count", 0, RC_CLI_U32, &p->u, "N", "1..10", 1, 10, 0},
        {"level", 'l', RC_CLI_INT, &p->i, "N", "0..3", 0, 3, 0},
        {"ratio", 0, RC_CLI_DBL, &p->d, "F", "0..1", 0, 1, 0},
        {"name", 0, RC_CLI_STR, &p->str, "S", "a name\nsecond line", 0, 0, 0},
        {"", 'X', RC_CLI_CALL, NULL, "K=V", "repeatable", 0, 0, 0},
    };
    rc_cli_spec s = {.prog = "prog",
                     .opts = opts,
                     .nopts = RC_ARRAY_LEN(opts),
                     .fn = on_call,
                     .ud = &p->calls,
                     .min_args = maxpos ? 1 : 0,
                     .max_args = maxpos};
    p->rc = rc_cli_args_parse(&s, argc, argv, &p->argi, p->err, sizeof p->err);
    return p;
}

TEST(cli_args_parser)
{
    struct parsed p;
    ASSERT_EQ(parse_opts(&p, 0, "--flag", "--count", "7", "--level=2", "--ratio", "0.5", "--name",
                         "n", "-X", "a=1", "-Xb=2", NULL)
                  ->rc,
              0);
    ASSERT_EQ(p.flag, 1);
    ASSERT_EQ(p.u, 7);
    ASSERT_EQ(p.i, 2);
    ASSERT_NEAR(p.d, 0.5, 1e-12);
    ASSERT_STREQ(p.str, "n");
    ASSERT_EQ(p.calls.n, 2); /* repeated: the callback sees each, in order */
    ASSERT_STREQ(p.calls.got[0], "X=a=1");
    ASSERT_STREQ(p.calls.got[1], "X=b=2");
    ASSERT_EQ(parse_opts(&p, 0, "-f", "-l", "3", "--count", "1", "--count", "10", NULL)->rc, 0);
    ASSERT_EQ(p.u, 10); /* the last one wins */
    ASSERT_EQ(p.flag, 1);
    ASSERT_EQ(p.i, 3);
    ASSERT_EQ(parse_opts(&p, 0, "-h", "--bogus", NULL)->rc, RC_CLI_HELP);
    ASSERT_EQ(parse_opts(&p, 0, "--help", NULL)->rc, RC_CLI_HELP);
    ASSERT_EQ(parse_opts(&p, 0, "--version", NULL)->rc, RC_CLI_VERSION);
    /* Positional arguments: options end at the first one, or at "--". */
    ASSERT_EQ(parse_opts(&p, 3, "-f", "recall", "--flag", NULL)->rc, 0);
    ASSERT_EQ(p.argi, 2);
    ASSERT_EQ(parse_opts(&p, 3, "--", "-f", NULL)->rc, 0);
    ASSERT_EQ(p.argi, 2);
    ASSERT_EQ(p.flag, 0);
    ASSERT_EQ(parse_opts(&p, 1, "a", "b", NULL)->rc, RC_EINVAL);
    ASSERT(strstr(p.err, "b: unexpected argument") != NULL);
    ASSERT_EQ(parse_opts(&p, 1, "-f", NULL)->rc, RC_EINVAL);
    ASSERT(strstr(p.err, "missing argument") != NULL);
    static const char *const bad[][3] = {
        {"--count", "0", "--count: expected an integer in 1..10, got '0'"},
        {"--count", "11", "--count: expected an integer in 1..10"},
        {"--count", "-1", "--count: expected an integer"},
        {"--count", "3x", "--count: expected an integer"},
        {"--level", "4", "--level: expected an integer in 0..3"},
        {"--ratio", "1.5", "--ratio: expected a number in 0..1, got '1.5'"},
        {"--ratio", "nan", "--ratio: expected a number"},
        {"--name", "", "--name: expected a non-empty value"},
        {"--name", NULL, "--name: missing value"},
        {"-X", "bad", "-X: expected good"},
        {"--flag=1", NULL, "--flag: takes no value"},
        {"-q", NULL, "-q: unknown option"},
        {"--cou", "5", "--cou: unknown option"},
        {"stray", NULL, "stray: unexpected argument"},
    };
    for (size_t i = 0; i < RC_ARRAY_LEN(bad); i++) {
        parse_opts(&p, 0, bad[i][0], bad[i][1], NULL);
        if (p.rc != RC_EINVAL || !strstr(p.err, bad[i][2]))
            RC__FAIL("%s %s: rc %d \"%s\" (want \"%s\")", bad[i][0], bad[i][1] ? bad[i][1] : "",
                     p.rc, p.err, bad[i][2]);
    }
    /* The help comes from the table. */
    const rc_cli_opt opts[] = {
        {"name", 0, RC_CLI_STR, NULL, "S", "a name\nsecond line", 0, 0, 0},
        {"", 'X', RC_CLI_CALL, NULL, "K=V", "repeatable", 0, 0, 0},
    };
    rc_cli_spec s = {.prog = "prog",
                     .synopsis = "[options] ARG",
                     .about = "About.",
                     .epilog = "After.\n",
                     .opts = opts,
                     .nopts = 2};
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    rc_cli_args_help(f, &s);
    fclose(f);
    ASSERT(strstr(text, "usage: prog [options] ARG\n\nAbout.\n") != NULL);
    ASSERT(strstr(text, "\n      --name S      a name\n" /* continuation: aligned */
                        "                    second line\n") != NULL);
    ASSERT(strstr(text, "\n  -X K=V            repeatable\n") != NULL);
    ASSERT(strstr(text, "  -h, --help") != NULL && strstr(text, "      --version") != NULL);
    ASSERT(strstr(text, "\nAfter.\n") != NULL);
    free(text);
}

/* Every binary: -h and --help print the usage (exit 0), --version its name
 * and version (exit 0), a typo one line on stderr (exit 2). */
TEST(cli_every_binary_help_version_typo)
{
    static const char *const bins[] = {"recalld",      "recalld-gen", "recalld-train",
                                       "recalld-eval", "recallctl",   "recalld-broker"};
    for (size_t i = 0; i < RC_ARRAY_LEN(bins); i++) {
        char *out = NULL, want[128];
        for (int h = 0; h < 2; h++) {
            ASSERT_EQ(
                e2e_sh(&out, "%s/%s %s 2>/dev/null", RC_BUILD_DIR, bins[i], h ? "--help" : "-h"),
                0);
            snprintf(want, sizeof want, "usage: %s ", bins[i]);
            if (strncmp(out, want, strlen(want)) || !strstr(out, "--version"))
                RC__FAIL("%s %s: %.200s", bins[i], h ? "--help" : "-h", out);
            free(out);
        }
        ASSERT_EQ(e2e_sh(&out, "%s/%s --version 2>/dev/null", RC_BUILD_DIR, bins[i]), 0);
        snprintf(want, sizeof want, "%s %s\n", bins[i], RC_VERSION);
        ASSERT_STREQ(out, want);
        free(out);
        ASSERT_EQ(e2e_sh(&out, "%s/%s --bogus-flag 2>&1 >/dev/null", RC_BUILD_DIR, bins[i]), 2);
        snprintf(want, sizeof want, "%s: --bogus-flag: unknown option (try '%s --help')\n", bins[i],
                 bins[i]);
        ASSERT_STREQ(out, want);
        free(out);
    }
}

/* A one-connection server on path: answers the first request line with
 * {"ok":true,"req":LINE}. Returns the child's pid (listening already). */
static pid_t echo_server(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT(fd >= 0);
    ASSERT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ASSERT_EQ(listen(fd, 1), 0);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        char line[4096], reply[4200];
        size_t n = 0;
        int c = accept(fd, NULL, NULL);
        ssize_t r;
        while (c >= 0 && n < sizeof line - 1 && (r = read(c, line + n, sizeof line - 1 - n)) > 0)
            if (memchr(line + n, '\n', (size_t)r) || (n += (size_t)r, 0))
                break;
        line[strcspn(line, "\n")] = '\0';
        int m = snprintf(reply, sizeof reply, "{\"ok\":true,\"req\":%s}\n", line);
        if (c < 0 || write(c, reply, (size_t)m) != m)
            _exit(1);
        _exit(0);
    }
    close(fd);
    return pid;
}

TEST(cli_recallctl_user)
{
    char path[] = "/tmp/rc_ctl_user_XXXXXX", sock[64], *out = NULL;
    ASSERT(mkdtemp(path) != NULL);
    snprintf(sock, sizeof sock, "%s/s", path);
    pid_t pid = echo_server(sock);
    ASSERT_EQ(e2e_sh(&out, "%s --raw --socket %s user u42", RC_BIN("recallctl"), sock), 0);
    ASSERT_STREQ(out, "{\"ok\":true,\"req\":{\"op\":\"user\",\"user_id\":\"u42\"}}\n");
    free(out);
    int st;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* RECALLD_SOCKET finds it too; a missing USER is a usage error. */
    unlink(sock);
    pid = echo_server(sock);
    ASSERT_EQ(e2e_sh(&out, "RECALLD_SOCKET=%s %s --raw user 7", sock, RC_BIN("recallctl")), 0);
    ASSERT(strstr(out, "\"op\":\"user\",\"user_id\":\"7\"") != NULL);
    free(out);
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    ASSERT_EQ(e2e_sh(&out, "%s --socket %s user 2>&1", RC_BIN("recallctl"), sock), 2);
    ASSERT(strstr(out, "cannot understand request 'user'") != NULL);
    free(out);
    e2e_sh(NULL, "rm -rf %s", path);
}

/* recalld-gen -X: properties reach librdkafka (a bad one is refused by name
 * before any connection), and need --brokers. */
TEST(cli_gen_kafka_properties)
{
    char *out = NULL;
    ASSERT_EQ(e2e_sh(&out, "%s --events 1 -X linger.ms=5 2>&1", RC_BIN("recalld-gen")), 2);
    ASSERT(strstr(out, "-X needs --brokers") != NULL);
    free(out);
    ASSERT_EQ(e2e_sh(&out, "%s --events 1 --brokers 127.0.0.1:1 -X bogus.prop=1 2>&1",
                     RC_BIN("recalld-gen")),
              1);
    ASSERT(strstr(out, "recalld-gen: kafka: bogus.prop: No such configuration property") != NULL);
    free(out);
    ASSERT_EQ(e2e_sh(&out,
                     "%s --events 1 --brokers 127.0.0.1:1 -X enable.idempotence=maybe "
                     "2>&1",
                     RC_BIN("recalld-gen")),
              1);
    ASSERT(strstr(out, "kafka: enable.idempotence: Expected bool value") != NULL);
    free(out);
    ASSERT_EQ(
        e2e_sh(&out, "%s --events 1 --brokers 127.0.0.1:1 -X novalue 2>&1", RC_BIN("recalld-gen")),
        2);
    ASSERT(strstr(out, "-X: expected KEY=VALUE") != NULL);
    free(out);
}
