#include <stdio.h>

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
        {"{\"socket\":{\"path\":\"\"}}", "socket.path: length 0 is out of range"},
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
