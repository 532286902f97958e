#include <jansson.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "e2e.h"
#include "recalld/common.h"
#include "recalld/config.h"
#include "recalld/cpus.h"
#include "test.h"

static int load(const char *json, char *err, size_t n)
{
    rc_config c;
    rc_config_defaults(&c);
    int rc = rc_config_load_str(&c, json, err, n);
    return rc ? rc : rc_config_validate(&c, err, n);
}

TEST(config_examples_load_and_validate)
{
    const char *files[] = {RC_SOURCE_DIR "/conf/recalld.json", RC_SOURCE_DIR "/conf/demo.json"};
    for (size_t i = 0; i < RC_ARRAY_LEN(files); i++) {
        rc_config c;
        char err[512] = "";
        rc_config_defaults(&c);
        int rc = rc_config_load(&c, files[i], err, sizeof err);
        if (rc)
            fprintf(stderr, "%s: %s\n", files[i], err);
        ASSERT_EQ(rc, 0);
        ASSERT_EQ(rc_config_validate(&c, err, sizeof err), 0);
    }
    rc_config c;
    char err[256];
    rc_config_defaults(&c);
    ASSERT_EQ(rc_config_load(&c, RC_SOURCE_DIR "/conf/recalld.json", err, sizeof err), 0);
    ASSERT_EQ(c.socket_mode, 0660);
    ASSERT_EQ(c.nkafka_extra, 2);
    ASSERT_STREQ(c.kafka_extra[0], "session.timeout.ms");
    ASSERT_EQ(c.gap_ms, 1800000);
}

/* SIGHUP applies the reloadable keys (rc_config_copy_reloadable): a file
 * that changes every one of them differs from the running configuration in
 * exactly those keys, and in none once copied. A key added to the list but
 * not copied (recall.popularity_weight was listed, logged as changed and
 * not applied) fails here. */
TEST(config_reload_copies_every_reloadable_key)
{
    rc_config run, next;
    char err[512];
    const char *names[64];
    rc_config_defaults(&run);
    rc_config_defaults(&next);
    ASSERT_EQ(rc_config_load_str(&next,
                                 "{\"log\":{\"level\":\"debug\",\"format\":\"json\","
                                 "\"stats_interval_ms\":1234},"
                                 "\"recall\":{\"k_default\":7,\"k_max\":77,\"window\":3,"
                                 "\"popularity_weight\":0.5,\"mode\":\"avg\"},"
                                 "\"index\":{\"overfetch\":5},"
                                 "\"checkpoint\":{\"interval_ms\":4321,\"keep\":9,"
                                 "\"max_mb_s\":17},"
                                 "\"tower\":{\"model\":\"/nonexistent/t.rtm\","
                                 "\"refresh_rows\":33,\"recompute_per_flush\":44},"
                                 "\"socket\":{\"request_slice_us\":999}}",
                                 err, sizeof err),
              0);
    size_t n = rc_config_diff(&run, &next, names, RC_ARRAY_LEN(names));
    for (size_t i = 0; i < n && i < RC_ARRAY_LEN(names); i++)
        if (!rc_config_is_reloadable(names[i]))
            RC__FAIL("%s changed but is not reloadable", names[i]);
    ASSERT_EQ(n, rc_config_nreloadable); /* the file changes every reloadable key */
    rc_config_copy_reloadable(&run, &next);
    n = rc_config_diff(&run, &next, names, RC_ARRAY_LEN(names));
    if (n)
        RC__FAIL("%s changed and was not copied", names[0]);
    ASSERT_EQ(run.recall_mode, RC_RECALL_MODE_AVG);
    ASSERT_DBL_OP(run.popularity_weight, ==, 0.5);
    ASSERT(!rc_config_is_reloadable("model.dim"));
}

/* recall.mode: the five modes, anything else refused naming them; a mode
 * of the co-occurrence channel refused while the channel is off. */
TEST(config_recall_mode)
{
    rc_config c;
    char err[512];
    for (int m = 0; m < RC_RECALL_NMODES; m++) {
        char json[128];
        rc_config_defaults(&c);
        snprintf(json, sizeof json, "{\"recall\":{\"mode\":\"%s\"}}", rc_recall_mode_names[m]);
        ASSERT_EQ(rc_config_load_str(&c, json, err, sizeof err), 0);
        ASSERT_EQ(c.recall_mode, m);
        ASSERT_EQ(rc_config_validate(&c, err, sizeof err), 0);
    }
    rc_config_defaults(&c);
    ASSERT_EQ(c.recall_mode, RC_RECALL_MODE_FUSED);
    /* the default mode with the channel off loads (it answers as avg, test_cooc.c) ... */
    ASSERT_EQ(rc_config_load_str(&c, "{\"cooc\":{\"max_bytes\":0}}", err, sizeof err), 0);
    ASSERT_EQ(rc_config_validate(&c, err, sizeof err), 0);
    /* ... the same mode set on purpose is refused */
    ASSERT_EQ(rc_config_load_str(&c, "{\"recall\":{\"mode\":\"fused\"}}", err, sizeof err), 0);
    ASSERT_NE(rc_config_validate(&c, err, sizeof err), 0);
    ASSERT(strstr(err, "recall.mode") && strstr(err, "cooc.max_bytes"));
    rc_config_defaults(&c);
    ASSERT_NE(rc_config_load_str(&c, "{\"recall\":{\"mode\":\"knn\"}}", err, sizeof err), 0);
    ASSERT(strstr(err, "recall.mode") && strstr(err, "\"fused\""));
    rc_config_defaults(&c);
    ASSERT_EQ(rc_config_load_str(&c,
                                 "{\"recall\":{\"mode\":\"itemknn\"},\"cooc\":{\"max_bytes\":0}}",
                                 err, sizeof err),
              0);
    ASSERT_NE(rc_config_validate(&c, err, sizeof err), 0);
    ASSERT(strstr(err, "recall.mode") && strstr(err, "cooc.max_bytes"));
}

/* Every error names the key and says what was expected. */
TEST(config_errors_name_the_key)
{
    struct {
        const char *json, *want;
    } cases[] = {
        {"{\"model\":{\"dimm\":64}}", "model.dimm: unknown key"},
        {"{\"bogus\":1}", "bogus: unknown key"},
        {"{\"model\":{\"dim\":\"64\"}}", "model.dim: expected integer"},
        {"{\"model\":{\"dim\":4}}", "model.dim: 4 is out of range"},
        {"{\"model\":{\"dim\":12}}", "model.dim: must be a multiple of 8"},
        {"{\"model\":{\"mode\":\"glove\"}}", "model.mode: expected \"skipgram\" or \"cbow\""},
        {"{\"model\":{\"hard_share\":1.5}}", "model.hard_share: 1.5 is out of range"},
        {"{\"socket\":{\"mode\":\"rw\"}}", "socket.mode: expected an octal mode"},
        {"{\"socket\":{\"path\":\"/tmp/a-path-longer-than-the-107-bytes-of-sun-path/0123456789/"
         "0123456789/0123456789/0123456789/01234567890123\"}}",
         "socket.path: length 108 is out of range 0..107"},
        {"{\"kafka\":{\"embedded\":1}}", "kafka.embedded: expected true or false"},
        {"{\"kafka\":{\"brokers\":\"\"}}", "kafka.brokers: required unless kafka.embedded"},
        {"{\"kafka\":{\"config\":{\"a\":1}}}", "kafka.config: values must be strings"},
        {"{\"log\":{\"level\":\"loud\"}}", "log.level: expected debug"},
        {"{\"recall\":{\"scope\":\"planet\"}}",
         "recall.scope: expected \"user_city\" or \"global\""},
        {"{\"recall\":{\"half_life_ms\":-5}}", "recall.half_life_ms: -5 is out of range"},
        {"{\"recall\":{\"k_default\":50,\"k_max\":10}}", "recall.k_default: must not exceed"},
        {"{\"sessions\":{\"history\":4},\"model\":{\"window\":5}}",
         "must not exceed sessions.history"},
        {"{\"model\":{\"dim\":64,\"dim\":32}}", "duplicate object key"},
        {"{\"model\":", "config:1:"},
        {"[1]", "top level must be an object"},
    };
    for (size_t i = 0; i < RC_ARRAY_LEN(cases); i++) {
        char err[512] = "";
        int rc = load(cases[i].json, err, sizeof err);
        if (rc == 0 || !strstr(err, cases[i].want))
            fprintf(stderr, "case %zu: %s -> rc %d \"%s\"\n", i, cases[i].json, rc, err);
        ASSERT_EQ(rc, RC_EINVAL);
        ASSERT(strstr(err, cases[i].want) != NULL);
    }
}

TEST(config_missing_file_is_enoent)
{
    rc_config c;
    char err[256];
    rc_config_defaults(&c);
    ASSERT_EQ(rc_config_load(&c, "/nonexistent/recalld.json", err, sizeof err), RC_ENOENT);
    ASSERT(strstr(err, "/nonexistent/recalld.json") != NULL);
}

/* The messages the table above does not reach: one case per message of
 * src/config.c (the key named, what was expected). */
TEST(config_every_error_message)
{
    char many[8192];
    size_t n = (size_t)snprintf(many, sizeof many, "{\"kafka\":{\"config\":{");
    for (int i = 0; i < 65; i++)
        n += (size_t)snprintf(many + n, sizeof many - n, "%s\"k%d\":\"v\"", i ? "," : "", i);
    snprintf(many + n, sizeof many - n, "}}}");
    struct {
        const char *json, *want;
    } cases[] = {
        {"{\"model\":{\"lr\":\"fast\"}}", "model.lr: expected number in 1e-06..1"},
        {"{\"model\":{\"seed\":-1}}", "model.seed: -1 is out of range"},
        {"{\"sessions\":{\"gap_ms\":5}}", "sessions.gap_ms: 5 is out of range 1000.."},
        {"{\"socket\":{\"path\":5}}", "socket.path: expected string"},
        {"{\"model\":{\"mode\":1}}", "model.mode: expected string"},
        {"{\"log\":{\"format\":\"xml\"}}", "log.format: expected \"logfmt\" or \"json\""},
        {"{\"recall\":{\"scope\":\"planet\"}}",
         "recall.scope: expected \"user_city\" or \"global\""},
        {"{\"socket\":{\"allow_uids\":7}}", "socket.allow_uids: expected an array of at most"},
        {"{\"socket\":{\"allow_uids\":[\"root\"]}}",
         "socket.allow_uids: element 0: expected integer uid"},
        {"{\"kafka\":{\"config\":[]}}",
         "kafka.config: expected an object of librdkafka properties"},
        {many, "kafka.config: too many properties (at most 64)"},
        {"{\"sessions\":{\"history\":10},\"recall\":{\"window\":11}}",
         "recall.window: must not exceed sessions.history"},
        {"{\"sessions\":{\"history\":10},\"recall\":{\"window\":5},\"model\":{\"window\":11}}",
         "model.window: must not exceed sessions.history"},
        {"{\"metrics\":{\"bind\":\"localhost\"}}", "metrics.bind: expected an IPv4 or IPv6"},
        {"{\"checkpoint\":{\"interval_ms\":-5}}",
         "checkpoint.interval_ms: -5 is out of range 0..86400000"},
        {"{\"checkpoint\":{\"keep\":0}}", "checkpoint.keep: 0 is out of range 1..100"},
        {"{\"checkpoint\":{\"max_mb_s\":\"fast\"}}", "checkpoint.max_mb_s: expected number"},
        {"{\"checkpoint\":{\"every\":1}}", "checkpoint.every: unknown key"},
        {"{\"data_dir\":7}", "data_dir: expected string"},
        {"{\"socket\":{\"request_slice_us\":50}}",
         "socket.request_slice_us: expected 0 (the kernel's default) or 100..100000"},
        {"{\"pipeline\":{\"background_cpus\":\"one\"}}",
         "pipeline.background_cpus: expected \"\" (no pinning), \"auto\" or a core list"},
        {"{\"pipeline\":{\"background_cpus\":\"3-1\"}}", "a range of cores must be a-b"},
        {"{\"pipeline\":{\"background_cpus\":\"1,\"}}", "unexpected \",\" in a core list"},
        {"{\"pipeline\":{\"background_cpus\":\"1-\"}}", "expected a core number after '-'"},
    };
    for (size_t i = 0; i < RC_ARRAY_LEN(cases); i++) {
        char err[512] = "";
        int rc = load(cases[i].json, err, sizeof err);
        if (rc == 0 || !strstr(err, cases[i].want))
            fprintf(stderr, "case %zu: %.80s -> rc %d \"%s\"\n", i, cases[i].json, rc, err);
        ASSERT_EQ(rc, RC_EINVAL);
        ASSERT(strstr(err, cases[i].want) != NULL);
    }
    /* Errors in a file name the file, and the line and column of bad JSON. */
    char path[] = "/tmp/rc-config-XXXXXX", err[512];
    int fd = mkstemp(path);
    ASSERT(fd >= 0);
    ASSERT_EQ(write(fd, "{\n  \"model\": {\"dim\": }\n}\n", 25), 25);
    close(fd);
    rc_config c;
    rc_config_defaults(&c);
    ASSERT_EQ(rc_config_load(&c, path, err, sizeof err), RC_EINVAL);
    ASSERT(strstr(err, path) != NULL && strstr(err, ":2:") != NULL);
    unlink(path);
}

/* cpus.h: the plan splits the allowed cores, a list leaves the rest to the
 * request path, and a list that cannot be honoured says why instead. */
TEST(config_background_cpus_plan)
{
    char err[256] = "";
    ASSERT_EQ(load("{\"pipeline\":{\"background_cpus\":\"0,2-3\"}}", err, sizeof err), 0);
    ASSERT_EQ(load("{\"pipeline\":{\"background_cpus\":\"auto\"}}", err, sizeof err), 0);
    cpu_set_t all, bg, rest, both;
    ASSERT_EQ(sched_getaffinity(0, sizeof all, &all), 0);
    int n = CPU_COUNT(&all);
    ASSERT_EQ(rc_cpus_plan("", &bg, &rest, err, sizeof err), 0);
    ASSERT_STREQ(err, "");
    ASSERT_EQ(rc_cpus_plan("99999", &bg, &rest, err, sizeof err), RC_EINVAL);
    ASSERT_EQ(rc_cpus_plan("1000", &bg, &rest, err, sizeof err), 0); /* no such core here */
    ASSERT(strstr(err, "is allowed to this process") != NULL);
    char list[1024];
    rc_cpus_format(&all, list, sizeof list);
    ASSERT_EQ(rc_cpus_plan(list, &bg, &rest, err, sizeof err), 0); /* every core: none left */
    ASSERT(strstr(err, "leave none for the request path") != NULL);
    if (n < 2) {
        ASSERT_EQ(rc_cpus_plan("auto", &bg, &rest, err, sizeof err), 0);
        RC_SKIP("one core allowed: the split needs two");
    }
    ASSERT_EQ(rc_cpus_plan("auto", &bg, &rest, err, sizeof err), 1);
    ASSERT_EQ(CPU_COUNT(&bg), (n + 1) / 2);
    ASSERT_EQ(CPU_COUNT(&rest), n / 2);
    CPU_AND(&both, &bg, &rest);
    ASSERT_EQ(CPU_COUNT(&both), 0);
    CPU_OR(&both, &bg, &rest);
    ASSERT(CPU_EQUAL(&both, &all));
    /* the background cores are the upper ones */
    int maxrest = -1, minbg = CPU_SETSIZE;
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (CPU_ISSET(c, &rest))
            maxrest = c;
        if (CPU_ISSET(c, &bg) && c < minbg)
            minbg = c;
    }
    ASSERT_LT(maxrest, minbg);
    /* a list of one allowed core: it alone, the others to the request path */
    char one[16];
    snprintf(one, sizeof one, "%d", minbg);
    ASSERT_EQ(rc_cpus_plan(one, &bg, &rest, err, sizeof err), 1);
    ASSERT_EQ(CPU_COUNT(&bg), 1);
    ASSERT(CPU_ISSET(minbg, &bg));
    ASSERT_EQ(CPU_COUNT(&rest), n - 1);
    /* format: ranges collapse */
    CPU_ZERO(&bg);
    CPU_SET(0, &bg);
    CPU_SET(2, &bg);
    CPU_SET(3, &bg);
    CPU_SET(4, &bg);
    rc_cpus_format(&bg, list, sizeof list);
    ASSERT_STREQ(list, "0,2-4");
}

/* `recalld --check-config`: exit 0 and "configuration ok", or exit 2 and the
 * message on stderr - for the file, the flags, and validation after both. */
TEST(config_check_config_binary)
{
    char dir[] = "/tmp/rc-checkcfg-XXXXXX", good[128], bad[128], *out = NULL;
    char longsock[300];
    ASSERT(mkdtemp(dir) != NULL);
    snprintf(good, sizeof good, "%s/good.json", dir);
    snprintf(bad, sizeof bad, "%s/bad.json", dir);
    e2e_write_file(good,
                   "{\"checkpoint\":{\"interval_ms\":1000,\"keep\":3},\"data_dir\":\"/tmp/x\"}");
    e2e_write_file(bad, "{\"checkpoint\":{\"keep\":0}}");
    memset(longsock, 'a', 200);
    longsock[200] = '\0';
    struct {
        const char *args, *want;
        int status;
    } cases[] = {
        {"--config %s", "recalld: configuration ok", 0},
        {"--config %s --config /nonexistent.json", "config /nonexistent.json: No such file", 2},
        {"--config %s --dim abc",
         "recalld: --dim: model.dim: expected integer in 8..1024 (got 'abc')", 2},
        {"--config %s --dim 12", "command line: model.dim: must be a multiple of 8 (got 12)", 2},
        {"--config %s --log-level loud",
         "recalld: --log-level: log.level: expected debug, info, warn, error or off", 2},
        {"--config %s --bogus", "recalld: --bogus: unknown option (try 'recalld --help')", 2},
        {"--config %s stray", "recalld: stray: unexpected argument", 2},
        {"--config %s --brokers ''", "command line: kafka.brokers: required unless kafka.embedded",
         2},
        {"--config %s --embedded-kafka -X bogus.prop=1",
         "recalld: -X: kafka.config: bogus.prop: No such configuration property", 2},
        {"--config %s --embedded-kafka -X session.timeout.ms=soon",
         "-X: kafka.config: session.timeout.ms: Invalid value", 2},
        {"--config %s --embedded-kafka -X nokey", "-X: expected KEY=VALUE", 2},
        {"--config %s --embedded-kafka -Xsession.timeout.ms=7000 -X client.rack=r1",
         "recalld: configuration ok", 0},
    };
    for (size_t i = 0; i < RC_ARRAY_LEN(cases); i++) {
        char args[512];
        snprintf(args, sizeof args, cases[i].args, good);
        int st = e2e_sh(&out, RC_BIN("recalld") " --check-config %s 2>&1", args);
        if (st != cases[i].status || !strstr(out, cases[i].want))
            fprintf(stderr, "case %zu: %s -> %d \"%s\"\n", i, args, st, out);
        ASSERT_EQ(st, cases[i].status);
        ASSERT(strstr(out, cases[i].want) != NULL);
        free(out);
    }
    int st = e2e_sh(&out, RC_BIN("recalld") " --check-config --config %s 2>&1", bad);
    ASSERT_EQ(st, 2);
    ASSERT(strstr(out, "checkpoint.keep: 0 is out of range 1..100") != NULL);
    ASSERT(strstr(out, bad) != NULL); /* the file is named */
    free(out);
    st = e2e_sh(&out, RC_BIN("recalld") " --check-config --socket %s/%s 2>&1", dir, longsock);
    ASSERT_EQ(st, 2);
    ASSERT(strstr(out, "--socket: socket.path: length 224 is out of range 0..107") != NULL);
    free(out);
    st = e2e_sh(&out, RC_BIN("recalld") " --check-config --data-dir %s%s%s 2>&1", longsock,
                longsock, longsock);
    ASSERT_EQ(st, 2);
    ASSERT(strstr(out, "--data-dir: data_dir: length 600 is out of range 0..511") != NULL);
    free(out);
    e2e_sh(NULL, "rm -rf %s", dir);
}

/* Environment overrides: each variable sets its key through the loader's
 * checks; unset or empty changes nothing; errors name the variable. */
TEST(config_env_overrides)
{
    rc_config c;
    char err[512] = "";
    const char *key;
    for (size_t i = 0; rc_config_env_var(i, NULL); i++)
        unsetenv(rc_config_env_var(i, NULL));
    setenv("RECALLD_BROKERS", "k1:9092,k2:9092", 1);
    setenv("RECALLD_TOPIC", "views", 1);
    setenv("RECALLD_GROUP", "", 1); /* empty = unset */
    setenv("RECALLD_SOCKET", "/run/r.sock", 1);
    setenv("RECALLD_STATE_DIR", "/var/lib/recalld", 1);
    setenv("RECALLD_DATA_DIR", "/datasets", 1); /* the datasets, not data_dir */
    setenv("RECALLD_METRICS_PORT", "9999", 1);
    setenv("RECALLD_LOG_FORMAT", "json", 1);
    rc_config_defaults(&c);
    ASSERT_EQ(
        rc_config_load_str(&c, "{\"kafka\":{\"topic\":\"file\",\"group\":\"g\"}}", err, sizeof err),
        0);
    ASSERT_EQ(rc_config_env(&c, err, sizeof err), 0);
    ASSERT_STREQ(c.brokers, "k1:9092,k2:9092");
    ASSERT_STREQ(c.topic, "views"); /* over the file */
    ASSERT_STREQ(c.group, "g");
    ASSERT_STREQ(c.socket_path, "/run/r.sock");
    ASSERT_STREQ(c.data_dir, "/var/lib/recalld");
    ASSERT_EQ(c.metrics_port, 9999);
    ASSERT_STREQ(c.log_format, "json");
    ASSERT_EQ(rc_config_validate(&c, err, sizeof err), 0);
    /* Bad values: the variable, the key, the value. */
    static const char *const bad[][3] = {
        {"RECALLD_METRICS_PORT", "http",
         "environment RECALLD_METRICS_PORT: metrics.port: "
         "expected integer in 0..65535 (got 'http')"},
        {"RECALLD_METRICS_PORT", "70000", "metrics.port: 70000 is out of range 0..65535"},
        {"RECALLD_LOG_LEVEL", "loud", "environment RECALLD_LOG_LEVEL: log.level: expected debug"},
        {"RECALLD_TOPIC", "", NULL},
    };
    for (size_t i = 0; i < RC_ARRAY_LEN(bad); i++) {
        setenv(bad[i][0], bad[i][1], 1);
        rc_config_defaults(&c);
        err[0] = '\0';
        int rc = rc_config_env(&c, err, sizeof err);
        if (bad[i][2] ? rc != RC_EINVAL || !strstr(err, bad[i][2]) : rc != 0)
            RC__FAIL("%s=%s: rc %d \"%s\"", bad[i][0], bad[i][1], rc, err);
        unsetenv(bad[i][0]);
    }
    /* A value set by a variable is named as such when validation refuses it. */
    setenv("RECALLD_METRICS_BIND", "localhost", 1);
    rc_config_defaults(&c);
    ASSERT_EQ(rc_config_env(&c, err, sizeof err), 0);
    ASSERT_EQ(rc_config_validate(&c, err, sizeof err), RC_EINVAL);
    ASSERT(strstr(err, "environment RECALLD_METRICS_BIND: metrics.bind: expected an IPv4 or "
                       "IPv6 address literal (got \"localhost\")") != NULL);
    for (size_t i = 0; rc_config_env_var(i, &key); i++) {
        unsetenv(rc_config_env_var(i, NULL));
        rc_config_defaults(&c);
        ASSERT_EQ(rc_config_set(&c, key, "x", RC_CONF_ENV, "t", err, sizeof err) == 0 ||
                      strstr(err, key) != NULL,
                  1); /* every key of the table exists */
    }
    unsetenv("RECALLD_DATA_DIR");
}

/* defaults < file < environment < command line, through the binary:
 * kafka.brokers "" (invalid without the embedded cluster) in the file, a
 * variable over it, a flag over both; kafka.config in the file under -X. */
TEST(config_precedence_binary)
{
    char dir[] = "/tmp/rc-prec-XXXXXX", file[128], badkafka[128], *out = NULL;
    ASSERT(mkdtemp(dir) != NULL);
    snprintf(file, sizeof file, "%s/f.json", dir);
    snprintf(badkafka, sizeof badkafka, "%s/k.json", dir);
    e2e_write_file(file, "{\"kafka\":{\"brokers\":\"\"}}");
    e2e_write_file(badkafka, "{\"kafka\":{\"config\":{\"session.timeout.ms\":\"soon\"}}}");
    const char *bin = RC_BIN("recalld");
    ASSERT_EQ(e2e_sh(&out, "env -u RECALLD_BROKERS %s --check-config --config %s 2>&1", bin, file),
              2);
    ASSERT(strstr(out, "recalld: config ") && strstr(out, "f.json: kafka.brokers: required"));
    free(out);
    ASSERT_EQ(e2e_sh(&out, "RECALLD_BROKERS=k:9092 %s --check-config --config %s 2>&1", bin, file),
              0);
    ASSERT_STREQ(out, "recalld: configuration ok\n");
    free(out);
    ASSERT_EQ(e2e_sh(&out,
                     "RECALLD_BROKERS=k:9092 %s --check-config --config %s --brokers '' "
                     "2>&1",
                     bin, file),
              2);
    ASSERT(strstr(out, "recalld: command line: kafka.brokers: required") != NULL);
    free(out);
    /* RECALLD_CONFIG is the file when there is no --config. */
    ASSERT_EQ(
        e2e_sh(&out, "env -u RECALLD_BROKERS RECALLD_CONFIG=%s %s --check-config 2>&1", file, bin),
        2);
    ASSERT(strstr(out, "f.json: kafka.brokers: required") != NULL);
    free(out);
    ASSERT_EQ(e2e_sh(&out, "%s --check-config --embedded-kafka --config %s 2>&1", bin, badkafka),
              2);
    ASSERT(strstr(out, "k.json: kafka.config: session.timeout.ms: Invalid value") != NULL);
    free(out);
    ASSERT_EQ(e2e_sh(&out,
                     "%s --check-config --embedded-kafka --config %s "
                     "-X session.timeout.ms=7000 2>&1",
                     bin, badkafka),
              0);
    free(out);
    e2e_sh(NULL, "rm -rf %s", dir);
}

/* librdkafka values up to 1 MiB (an inline PEM bundle), from the file and
 * from -X; longer ones are refused by name; copies of the config keep them. */
TEST(config_long_kafka_values)
{
    size_t n = 300 * 1024;
    char *pem = malloc(n + 1), err[512] = "";
    ASSERT(pem != NULL);
    for (size_t i = 0; i < n; i++)
        pem[i] = (i % 65 == 64) ? '\n' : (char)('A' + i % 26);
    pem[n] = '\0';
    json_t *j = json_pack("{s:{s:{s:s,s:s}}}", "kafka", "config", "ssl.ca.pem", pem,
                          "security.protocol", "ssl");
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    rc_config c;
    rc_config_defaults(&c);
    ASSERT_EQ(rc_config_load_str(&c, text, err, sizeof err), 0);
    ASSERT_EQ(c.nkafka_extra, 2);
    ASSERT_STREQ(c.kafka_extra[0], "ssl.ca.pem");
    ASSERT_EQ(strlen(c.kafka_extra[1]), n);
    ASSERT(memcmp(c.kafka_extra[1], pem, n) == 0);
    rc_config copy = c; /* what the engine and a reload hold */
    ASSERT_EQ(rc_config_kafka_check(&copy, err, sizeof err), 0);
    ASSERT_STREQ(copy.kafka_extra[1], pem);
    /* -X replaces the file's value of the same key, keeps the rest. */
    ASSERT_EQ(
        rc_config_kafka_arg(&c, "security.protocol=plaintext", RC_CONF_CLI, "-X", err, sizeof err),
        0);
    ASSERT_EQ(c.nkafka_extra, 2);
    ASSERT_STREQ(c.kafka_extra[3], "plaintext");
    ASSERT_STREQ(copy.kafka_extra[3], "ssl");
    free(text);
    /* Through the binary: a file with the bundle passes --check-config. */
    char dir[] = "/tmp/rc-pem-XXXXXX", path[128], *out = NULL;
    ASSERT(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/pem.json", dir);
    j = json_pack("{s:{s:{s:s}}}", "kafka", "config", "ssl.ca.pem", pem);
    ASSERT_EQ(json_dump_file(j, path, 0), 0);
    json_decref(j);
    ASSERT_EQ(e2e_sh(&out, "%s --check-config --embedded-kafka --config %s 2>&1", RC_BIN("recalld"),
                     path),
              0);
    ASSERT_STREQ(out, "recalld: configuration ok\n");
    free(out);
    e2e_sh(NULL, "rm -rf %s", dir);
    /* Over the bound: refused, naming the key and the sizes. */
    free(pem);
    n = RC_CONF_KAFKA_VALUE_MAX + 1;
    pem = malloc(n + 1);
    memset(pem, 'A', n);
    pem[n] = '\0';
    rc_config_defaults(&c);
    ASSERT_EQ(rc_config_kafka_set(&c, "ssl.ca.pem", pem, RC_CONF_CLI, "-X", err, sizeof err),
              RC_E2BIG);
    ASSERT(strstr(err, "-X: kafka.config: ssl.ca.pem: value of 1048577 bytes, at most 1048576"));
    pem[n - 1] = '\0'; /* exactly the bound: fine */
    ASSERT_EQ(rc_config_kafka_set(&c, "ssl.ca.pem", pem, RC_CONF_CLI, "-X", err, sizeof err), 0);
    free(pem);
}

/* docs/CONFIG.md has one table of the environment variables: every variable
 * of the code, with the key it sets, and nothing else. */
TEST(config_env_documented)
{
    char *doc = e2e_read_file(RC_SOURCE_DIR "/docs/CONFIG.md");
    const char *sec = strstr(doc, "\n## Environment");
    ASSERT(sec != NULL);
    const char *end = strstr(sec + 1, "\n## ");
    size_t len = end ? (size_t)(end - sec) : strlen(sec);
    char *tab = strndup(sec, len);
    const char *key;
    int nvars = 0;
    for (size_t i = 0; rc_config_env_var(i, &key); i++, nvars++) {
        char row[160];
        snprintf(row, sizeof row, "| `%s` | `%s`", rc_config_env_var(i, NULL), key);
        if (!strstr(tab, row))
            RC__FAIL("docs/CONFIG.md, Environment: no row \"%s ...\"", row);
    }
    int rows = 0;
    for (const char *p = strstr(tab, "\n| `RECALLD_"); p; p = strstr(p + 1, "\n| `RECALLD_"))
        rows++;
    ASSERT_EQ(rows, nvars + 1); /* + RECALLD_CONFIG, the file itself */
    ASSERT(strstr(tab, "| `RECALLD_CONFIG` |") != NULL);
    free(tab);
    free(doc);
}
