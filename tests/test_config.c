#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "e2e.h"
#include "recalld/common.h"
#include "recalld/config.h"
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
        {"{\"socket\":{\"path\":\"/tmp/a-path-longer-than-the-107-bytes-of-sun-path/0123456789/0123456789/0123456789/0123456789/01234567890123\"}}", "socket.path: length 108 is out of range 0..107"},
        {"{\"kafka\":{\"embedded\":1}}", "kafka.embedded: expected true or false"},
        {"{\"kafka\":{\"brokers\":\"\"}}", "kafka.brokers: required unless kafka.embedded"},
        {"{\"kafka\":{\"config\":{\"a\":1}}}", "kafka.config: values must be strings"},
        {"{\"log\":{\"level\":\"loud\"}}", "log.level: expected debug"},
        {"{\"recall\":{\"scope\":\"planet\"}}", "recall.scope: expected \"user_city\" or \"global\""},
        {"{\"recall\":{\"half_life_ms\":-5}}", "recall.half_life_ms: -5 is out of range"},
        {"{\"recall\":{\"k_default\":50,\"k_max\":10}}", "recall.k_default: must not exceed"},
        {"{\"sessions\":{\"history\":4},\"model\":{\"window\":5}}", "must not exceed sessions.history"},
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
    char many[4096];
    size_t n = (size_t)snprintf(many, sizeof many, "{\"kafka\":{\"config\":{");
    for (int i = 0; i < 33; i++)
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
        {"{\"recall\":{\"scope\":\"planet\"}}", "recall.scope: expected \"user_city\" or \"global\""},
        {"{\"socket\":{\"allow_uids\":7}}", "socket.allow_uids: expected an array of at most"},
        {"{\"socket\":{\"allow_uids\":[\"root\"]}}", "socket.allow_uids: element 0: expected integer uid"},
        {"{\"kafka\":{\"config\":[]}}", "kafka.config: expected an object of librdkafka properties"},
        {many, "kafka.config: too many properties (max 32)"},
        {"{\"sessions\":{\"history\":10},\"recall\":{\"window\":11}}",
         "recall.window: must not exceed sessions.history"},
        {"{\"sessions\":{\"history\":10},\"recall\":{\"window\":5},\"model\":{\"window\":11}}",
         "model.window: must not exceed sessions.history"},
        {"{\"metrics\":{\"bind\":\"localhost\"}}", "metrics.bind: expected an IPv4 or IPv6"},
        {"{\"checkpoint\":{\"interval_ms\":-5}}", "checkpoint.interval_ms: -5 is out of range 0..86400000"},
        {"{\"checkpoint\":{\"keep\":0}}", "checkpoint.keep: 0 is out of range 1..100"},
        {"{\"checkpoint\":{\"max_mb_s\":\"fast\"}}", "checkpoint.max_mb_s: expected number"},
        {"{\"checkpoint\":{\"every\":1}}", "checkpoint.every: unknown key"},
        {"{\"data_dir\":7}", "data_dir: expected string"},
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

/* `recalld --check-config`: exit 0 and "configuration ok", or exit 2 and the
 * message on stderr - for the file, the flags, and validation after both. */
TEST(config_check_config_binary)
{
    char dir[] = "/tmp/rc-checkcfg-XXXXXX", good[128], bad[128], *out = NULL;
    char longsock[300];
    ASSERT(mkdtemp(dir) != NULL);
    snprintf(good, sizeof good, "%s/good.json", dir);
    snprintf(bad, sizeof bad, "%s/bad.json", dir);
    e2e_write_file(good, "{\"checkpoint\":{\"interval_ms\":1000,\"keep\":3},\"data_dir\":\"/tmp/x\"}");
    e2e_write_file(bad, "{\"checkpoint\":{\"keep\":0}}");
    memset(longsock, 'a', 200);
    longsock[200] = '\0';
    struct {
        const char *args, *want;
        int status;
    } cases[] = {
        {"--config %s", "recalld: configuration ok", 0},
        {"--config %s --config /nonexistent.json", "config /nonexistent.json: No such file", 2},
        {"--config %s --dim abc", "recalld: --dim: expected a non-negative integer, got \"abc\"", 2},
        {"--config %s --dim 12", "config: model.dim: must be a multiple of 8", 2},
        {"--config %s --log-level loud", "recalld: --log-level: expected debug, info, warn or error", 2},
        {"--config %s --bogus", "usage: recalld", 2},
        {"--config %s stray", "recalld: unexpected argument \"stray\"", 2},
        {"--config %s --brokers ''", "config: kafka.brokers: required unless kafka.embedded", 2},
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
    ASSERT(strstr(out, "socket.path: at most 107 bytes") != NULL);
    free(out);
    st = e2e_sh(&out, RC_BIN("recalld") " --check-config --data-dir %s%s%s 2>&1", longsock,
                longsock, longsock);
    ASSERT_EQ(st, 2);
    ASSERT(strstr(out, "--data-dir: value too long") != NULL);
    free(out);
    e2e_sh(NULL, "rm -rf %s", dir);
}
