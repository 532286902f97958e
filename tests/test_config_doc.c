/* The configuration's documentation and example files against the code.
 *
 * docs/CONFIG.md has one table row per key: key, type, range, default, SIGHUP,
 * meaning. The keys the loader accepts are read from src/config.c's key table
 * (plus kafka.config, which the loader handles apart); the keys SIGHUP applies
 * from rc_config_reloadable. Every value the doc states is
 * checked through the real loader: the default must load and equal
 * rc_config_defaults (rc_config_diff finds no difference), the range ends must
 * load and the values just outside must not, every listed enum value must
 * load. conf/recalld.json must name every key with its default (a few
 * site-specific keys excepted), and every file in conf/ must load and
 * validate. */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recalld/common.h"
#include "recalld/config.h"
#include "e2e.h"
#include "test.h"

#define MAX_KEYS 256

/* The text between `open` and the next "};" in src. */
static char *block(const char *src, const char *open, const char *what)
{
    const char *b = strstr(src, open);
    if (!b)
        RC__FAIL("%s: \"%s\" not found (scanner out of step with the code?)", what, open);
    b += strlen(open);
    const char *e = strstr(b, "};");
    ASSERT(e != NULL);
    char *out = malloc((size_t)(e - b) + 1);
    memcpy(out, b, (size_t)(e - b));
    out[e - b] = '\0';
    return out;
}

typedef struct code_key {
    char name[64], type[16];
    int seen;
} code_key;

/* src/config.c: `{"socket.path", K_STR, F(socket_path), 1, 107},` per key. */
static size_t code_keys(code_key *keys)
{
    char *src = e2e_read_file(RC_SOURCE_DIR "/src/config.c");
    char *tab = block(src, "static const struct key keys[] = {", "src/config.c");
    size_t n = 0;
    for (char *p = tab; (p = strstr(p, "{\"")); p++) {
        ASSERT(n < MAX_KEYS - 1);
        if (sscanf(p, "{\"%63[^\"]\", %15[A-Z0-9_]", keys[n].name, keys[n].type) != 2)
            RC__FAIL("src/config.c: cannot read key table entry: %.60s", p);
        keys[n++].seen = 0;
    }
    /* Not in the table: an object of librdkafka properties (set_kafka_extra). */
    ASSERT(strstr(src, "\"kafka.config\"") != NULL);
    snprintf(keys[n].name, sizeof keys[n].name, "kafka.config");
    snprintf(keys[n].type, sizeof keys[n].type, "OBJECT");
    keys[n++].seen = 0;
    free(tab);
    free(src);
    return n;
}

/* The keys SIGHUP applies: the list src/bin/recalld.c reloads by. */
static int reloadable(const char *key) { return rc_config_is_reloadable(key); }

/* {"sec":{"key":value}} (or {"key":value} for a top-level key) through the
 * loader over the defaults. Returns the loader's code; *ndiff = keys that then
 * differ from the defaults. */
static int load_value(const char *key, const char *value, size_t *ndiff, char *err, size_t el)
{
    char json[2048];
    const char *dot = strchr(key, '.');
    if (dot)
        snprintf(json, sizeof json, "{\"%.*s\":{\"%s\":%s}}", (int)(dot - key), key, dot + 1,
                 value);
    else
        snprintf(json, sizeof json, "{\"%s\":%s}", key, value);
    rc_config c, d;
    const char *names[8];
    rc_config_defaults(&c);
    rc_config_defaults(&d);
    err[0] = '\0';
    int rc = rc_config_load_str(&c, json, err, el);
    if (ndiff)
        *ndiff = rc ? 0 : rc_config_diff(&d, &c, names, RC_ARRAY_LEN(names));
    return rc;
}

static void expect_load(const char *key, const char *value, int ok)
{
    char err[512];
    int rc = load_value(key, value, NULL, err, sizeof err);
    if (ok && rc)
        RC__FAIL("docs/CONFIG.md: %s: the loader refuses %.80s: %s", key, value, err);
    if (!ok && !rc)
        RC__FAIL("docs/CONFIG.md: %s: the loader accepts %.80s, outside the documented range", key,
                 value);
}

/* A string of n 'a's as a JSON value. */
static void expect_len(const char *key, long n, int ok)
{
    char *v = malloc((size_t)n + 3);
    v[0] = '"';
    memset(v + 1, 'a', (size_t)n);
    v[n + 1] = '"';
    v[n + 2] = '\0';
    expect_load(key, v, ok);
    free(v);
}

/* The table cells of one markdown row, trimmed; returns how many. */
static int cells(char *line, char **out, int cap)
{
    int n = 0;
    char *p = line + 1, *bar;
    while ((bar = strchr(p, '|')) && n < cap) {
        *bar = '\0';
        while (*p == ' ')
            p++;
        char *e = bar;
        while (e > p && e[-1] == ' ')
            *--e = '\0';
        out[n++] = p;
        p = bar + 1;
    }
    return n;
}

/* `x` -> x (in place). */
static char *unquote(char *s)
{
    size_t n = strlen(s);
    if (n >= 2 && s[0] == '`' && s[n - 1] == '`') {
        s[n - 1] = '\0';
        return s + 1;
    }
    return s;
}

static const char *doc_type(const char *code_type)
{
    static const struct {
        const char *code, *doc;
    } map[] = {{"K_U32", "integer"},       {"K_U64", "integer"},        {"K_I64", "integer"},
               {"K_F32", "number"},        {"K_STR", "string"},         {"K_BOOL", "boolean"},
               {"K_MODE", "octal string"}, {"K_UIDS", "array of uids"}, {"K_SCOPE", "enum"},
               {"K_SGMODE", "enum"},       {"K_LEVEL", "enum"},         {"K_FORMAT", "enum"},
               {"K_STORAGE", "enum"},      {"K_ROLE", "enum"},          {"K_BGPOLICY", "enum"},
               {"K_RMODE", "enum"},        {"OBJECT", "object"}};
    for (size_t i = 0; i < RC_ARRAY_LEN(map); i++)
        if (strcmp(map[i].code, code_type) == 0)
            return map[i].doc;
    RC__FAIL("src/config.c: key type %s unknown to this test: add it to doc_type()", code_type);
}

static void check_range(const char *key, const char *type, const char *range)
{
    char lo[64], hi[64];
    if (!strcmp(type, "boolean") || !strcmp(type, "object")) {
        if (range[0])
            RC__FAIL("docs/CONFIG.md: %s: a %s has no range, found \"%s\"", key, type, range);
        return;
    }
    if (!strcmp(type, "enum")) {
        int n = 0;
        for (const char *p = range; (p = strchr(p, '`')); n++) {
            const char *e = strchr(p + 1, '`');
            ASSERT(e != NULL);
            char v[64];
            snprintf(v, sizeof v, "%.*s", (int)(e - p - 1), p + 1);
            expect_load(key, v, 1);
            p = e + 1;
        }
        if (n < 2)
            RC__FAIL("docs/CONFIG.md: %s: an enum lists its values, found \"%s\"", key, range);
        expect_load(key, "\"no-such-value\"", 0);
        return;
    }
    if (sscanf(range, "%63[^.]..%63s", lo, hi) != 2)
        RC__FAIL("docs/CONFIG.md: %s: range \"%s\" is not LOW..HIGH", key, range);
    char v[160];
    if (!strcmp(type, "integer")) {
        errno = 0;
        long long a = strtoll(lo, NULL, 10), b = strtoll(hi, NULL, 10);
        ASSERT_EQ(errno, 0);
        expect_load(key, lo, 1);
        expect_load(key, hi, 1);
        snprintf(v, sizeof v, "%lld", a - 1);
        expect_load(key, v, 0);
        if (b < LLONG_MAX) {
            snprintf(v, sizeof v, "%lld", b + 1);
            expect_load(key, v, 0);
        }
    } else if (!strcmp(type, "number")) {
        double a = strtod(lo, NULL), b = strtod(hi, NULL);
        expect_load(key, lo, 1);
        expect_load(key, hi, 1);
        snprintf(v, sizeof v, "%.17g", a - (fabs(a) * 1e-3 + 1e-9));
        expect_load(key, v, 0);
        snprintf(v, sizeof v, "%.17g", b + (fabs(b) * 1e-3 + 1e-9));
        expect_load(key, v, 0);
    } else if (!strcmp(type, "string")) {
        long a = strtol(lo, NULL, 10), b = strtol(hi, NULL, 10);
        expect_len(key, a, 1);
        expect_len(key, b, 1);
        if (a > 0)
            expect_len(key, a - 1, 0);
        expect_len(key, b + 1, 0);
    } else if (!strcmp(type, "octal string")) {
        if (strcmp(range, "0..0777"))
            RC__FAIL("docs/CONFIG.md: %s: expected range 0..0777, found %s", key, range);
        expect_load(key, "\"0\"", 1);
        expect_load(key, "\"0777\"", 1);
        expect_load(key, "\"01000\"", 0);
    } else if (!strcmp(type, "array of uids")) {
        snprintf(v, sizeof v, "[%s,%s]", lo, hi);
        expect_load(key, v, 1);
        snprintf(v, sizeof v, "[%lld]", strtoll(hi, NULL, 10) + 1);
        expect_load(key, v, 0);
        snprintf(v, sizeof v, "[%lld]", strtoll(lo, NULL, 10) - 1);
        expect_load(key, v, 0);
    } else
        RC__FAIL("docs/CONFIG.md: %s: unknown type \"%s\"", key, type);
}

/* Every key of the loader is documented, with the code's default, range and
 * reload behaviour; every documented key exists. */
TEST(config_doc_matches_code)
{
    code_key keys[MAX_KEYS];
    size_t nkeys = code_keys(keys);
    ASSERT_GE(nkeys, 60); /* the scanner found the table */
    char *doc = e2e_read_file(RC_SOURCE_DIR "/docs/CONFIG.md");
    int rows = 0;
    char *save = NULL;
    for (char *line = strtok_r(doc, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "| `", 3) != 0)
            continue;
        char *c[8];
        int n = cells(line, c, 8);
        if (n == 2)
            continue; /* the flags table */
        if (n != 6)
            RC__FAIL("docs/CONFIG.md: row with %d cells, want 6 (key, type, range, default, "
                     "SIGHUP, meaning): %.80s",
                     n, line);
        const char *key = unquote(c[0]), *type = c[1], *range = c[2];
        char *def = unquote(c[3]);
        const char *hup = c[4];
        code_key *k = NULL;
        for (size_t i = 0; i < nkeys; i++)
            if (strcmp(keys[i].name, key) == 0)
                k = &keys[i];
        if (!k)
            RC__FAIL("docs/CONFIG.md documents %s, which the loader does not accept", key);
        if (k->seen++)
            RC__FAIL("docs/CONFIG.md documents %s twice", key);
        rows++;
        if (strcmp(type, doc_type(k->type)))
            RC__FAIL("docs/CONFIG.md: %s: type \"%s\", the code's is %s (\"%s\")", key, type,
                     k->type, doc_type(k->type));
        /* The default: loads, and changes nothing. */
        char err[512];
        size_t ndiff = 0;
        if (load_value(key, def, &ndiff, err, sizeof err))
            RC__FAIL("docs/CONFIG.md: %s: default %s does not load: %s", key, def, err);
        if (ndiff)
            RC__FAIL("docs/CONFIG.md: %s: documented default %s is not the code's default "
                     "(rc_config_defaults)",
                     key, def);
        check_range(key, type, range);
        int want = reloadable(key);
        if (strcmp(hup, want ? "yes" : "no"))
            RC__FAIL("docs/CONFIG.md: %s: SIGHUP column \"%s\", src/bin/recalld.c %s it", key, hup,
                     want ? "reloads" : "does not reload");
    }
    for (size_t i = 0; i < nkeys; i++)
        if (!keys[i].seen)
            RC__FAIL("docs/CONFIG.md: key %s (src/config.c) is not documented", keys[i].name);
    ASSERT_EQ(rows, (int)nkeys);
    free(doc);
}

/* conf/recalld.json names every key; its values are the defaults, except the
 * few that describe a site (where the socket, the brokers and the data are). */
TEST(config_doc_example_lists_every_key)
{
    static const char *site[] = {"socket.path", "kafka.brokers", "kafka.config", "data_dir"};
    code_key keys[MAX_KEYS];
    size_t nkeys = code_keys(keys);
    json_error_t je;
    json_t *root = json_load_file(RC_SOURCE_DIR "/conf/recalld.json", JSON_REJECT_DUPLICATES, &je);
    if (!root)
        RC__FAIL("conf/recalld.json:%d:%d: %s", je.line, je.column, je.text);
    for (size_t i = 0; i < nkeys; i++) {
        const char *key = keys[i].name, *dot = strchr(key, '.');
        json_t *v;
        if (dot) {
            char sec[64];
            snprintf(sec, sizeof sec, "%.*s", (int)(dot - key), key);
            v = json_object_get(json_object_get(root, sec), dot + 1);
        } else
            v = json_object_get(root, key);
        if (!v)
            RC__FAIL("conf/recalld.json lacks %s", key);
        int is_site = 0;
        for (size_t j = 0; j < RC_ARRAY_LEN(site); j++)
            is_site |= strcmp(site[j], key) == 0;
        char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        char err[512];
        size_t ndiff = 0;
        if (load_value(key, text, &ndiff, err, sizeof err))
            RC__FAIL("conf/recalld.json: %s: %s", key, err);
        if (!is_site && ndiff)
            RC__FAIL("conf/recalld.json: %s is %s, not the default", key, text);
        free(text);
    }
    json_decref(root);
}

/* Every file in conf/ loads and validates (a new example cannot rot). */
TEST(config_doc_every_conf_file_loads)
{
    DIR *d = opendir(RC_SOURCE_DIR "/conf");
    ASSERT(d != NULL);
    struct dirent *de;
    int files = 0;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        size_t n = strlen(de->d_name);
        if (n < 6 || strcmp(de->d_name + n - 5, ".json"))
            RC__FAIL("conf/%s: not a .json file (conf/ holds configurations only)", de->d_name);
        char path[1024], err[512] = "";
        snprintf(path, sizeof path, "%s/conf/%s", RC_SOURCE_DIR, de->d_name);
        rc_config c;
        rc_config_defaults(&c);
        if (rc_config_load(&c, path, err, sizeof err) || rc_config_validate(&c, err, sizeof err))
            RC__FAIL("%s: %s", path, err);
        files++;
    }
    closedir(d);
    ASSERT_GE(files, 2);
}
