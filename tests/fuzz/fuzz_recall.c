/* Fuzz target: batch recall requests with large "users" arrays (issue 11),
 * through rc_api_handle on an offline engine seeded with 50 users over 300
 * items in 3 cities. The input drives a structured request: byte 0 picks the
 * options (k, exact, city, mode, categories), byte 1 how many users (up to
 * 300, past recall.max_batch_users = 256), then two bytes per user pick its
 * id: a known user, an unknown one, an integer id, an empty or over-long
 * string, a number, null, an object. The limits are small so that every path
 * is reachable: k x users over recall.max_k_users, exact scans over
 * recall.max_exact_scan, replies over the reply buffer.
 * Properties: never a crash; one JSON object with a boolean "ok"; ok:true
 * has one result per requested user, in order, each naming its user; a
 * request over a cost limit is limit_exceeded, never searched; any other
 * error is one of bad_request, limit_exceeded, reply_too_large. */
#include <jansson.h>
#include <string.h>

#include "fuzz.h"
#include "recalld/api.h"
#include "recalld/common.h"
#include "recalld/config.h"
#include "recalld/engine.h"

#define MAX_USERS 300
#define REPLY_CAP (256 * 1024)

static rc_api api;
static const rc_config *conf;

static void setup(void)
{
    rc_config c;
    fuzz_seeded_config(&c);
    c.max_k_users = 4000;
    c.max_exact_scan = 30000;
    fuzz_seeded_api(&api, &c, "fuzz_recall");
    conf = rc_engine_config(api.engine);
}

/* Appends user j's id, chosen by two bytes, as JSON. 1 when it is a valid id
 * (its decimal or string text in want[]), 0 when the request must fail. */
static int put_user(json_t *users, uint8_t a, uint8_t b, char *want, size_t cap)
{
    char id[200];
    switch (a % 8) {
    case 0:
    case 1:
    case 2:
        snprintf(id, sizeof id, "u%u", b % 60);
        break; /* mostly known */
    case 3:
        snprintf(id, sizeof id, "nobody%u", b);
        break;
    case 4:
        json_array_append_new(users, json_integer(b));
        snprintf(want, cap, "%u", b);
        return 1;
    case 5:
        if (b % 2) {
            json_array_append_new(users, json_string(""));
            return 0;
        }
        memset(id, 'x', 129); /* one byte over the id limit */
        id[129] = '\0';
        json_array_append_new(users, json_string(id));
        return 0;
    case 6:
        json_array_append_new(users, b % 2 ? json_null() : json_real(1.5));
        return 0;
    default:
        json_array_append_new(users, json_integer(-1 - (int)b));
        return 0;
    }
    json_array_append_new(users, json_string(id));
    snprintf(want, cap, "%s", id);
    return 1;
}

/* Builds the request; *valid: every field valid and users within 1..max. */
static json_t *build(const uint8_t *d, size_t n, char (*want)[200], size_t *nusers, int *valid)
{
    static const uint32_t ks[8] = {1, 5, 10, 50, 100, 200, 201, 0};
    uint8_t o = d[0];
    json_t *req = json_object(), *users = json_array();
    json_object_set_new(req, "op", json_string("recall"));
    json_object_set_new(req, "k", json_integer(ks[o % 8]));
    *valid = ks[o % 8] >= 1 && ks[o % 8] <= conf->k_max;
    if (o & 8)
        json_object_set_new(req, "exact", json_true());
    if (o & 16)
        json_object_set_new(req, "city", json_string(o & 32 ? "*" : "1"));
    if (o & 64)
        json_object_set_new(req, "mode", json_string(o & 128 ? "multi_category" : "avg"));
    if ((o & 0xc0) == 0x80) {
        json_t *c = json_array();
        json_array_append_new(c, json_integer(1));
        json_array_append_new(c, json_string("2"));
        json_object_set_new(req, "categories", c);
    }
    *nusers = RC_MIN((size_t)d[1] + (d[1] >= 200 ? 100 : 0), (size_t)MAX_USERS);
    for (size_t j = 0; j < *nusers; j++) {
        size_t at = 2 + 2 * j;
        uint8_t a = at < n ? d[at] : (uint8_t)j, b = at + 1 < n ? d[at + 1] : (uint8_t)(j * 7);
        *valid &= put_user(users, a, b, want[j], sizeof want[j]);
    }
    *valid &= *nusers >= 1 && *nusers <= conf->max_batch_users;
    json_object_set_new(req, "users", users);
    return req;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    static char want[MAX_USERS][200];
    if (!ready) {
        setup();
        ready = 1;
    }
    if (size < 2)
        return 0;
    size_t nusers;
    int valid;
    json_t *req = build(data, size, want, &nusers, &valid);
    char *line = json_dumps(req, JSON_COMPACT);
    FUZZ_CHECK(line != NULL);
    uint32_t k = (uint32_t)json_integer_value(json_object_get(req, "k"));
    int exact = json_is_true(json_object_get(req, "exact"));
    json_decref(req);
    rc_buf reply;
    json_error_t je;
    rc_buf_init(&reply, REPLY_CAP);
    rc_api_handle(&api, line, strlen(line), &reply);
    FUZZ_CHECK(reply.len > 0 && !reply.overflow);
    FUZZ_CHECK(memchr(reply.data, '\n', reply.len) == NULL);
    json_t *r = json_loadb(reply.data, reply.len, 0, &je);
    FUZZ_CHECK(json_is_object(r));
    json_t *ok = json_object_get(r, "ok");
    FUZZ_CHECK(json_is_boolean(ok));
    unsigned long long items = rc_table_size(rc_engine_table(api.engine));
    int over = (unsigned long long)k * nusers > conf->max_k_users ||
               (exact && items * nusers > conf->max_exact_scan);
    if (json_is_true(ok)) {
        json_t *res = json_object_get(r, "results");
        FUZZ_CHECK(valid && !over);
        FUZZ_CHECK(json_array_size(res) == nusers);
        for (size_t j = 0; j < nusers; j++) {
            json_t *one = json_array_get(res, j);
            FUZZ_CHECK(strcmp(json_string_value(json_object_get(one, "user_id")), want[j]) == 0);
            FUZZ_CHECK(json_array_size(json_object_get(one, "items")) <= k);
        }
    } else {
        const char *code = json_string_value(json_object_get(json_object_get(r, "error"), "code"));
        FUZZ_CHECK(code != NULL);
        FUZZ_CHECK(strcmp(code, "bad_request") == 0 || strcmp(code, "limit_exceeded") == 0 ||
                   strcmp(code, "reply_too_large") == 0);
        if (valid && over)
            FUZZ_CHECK(strcmp(code, "limit_exceeded") == 0);
        if (strcmp(code, "limit_exceeded") == 0)
            FUZZ_CHECK(valid && over);
        if (!valid)
            FUZZ_CHECK(strcmp(code, "bad_request") == 0);
    }
    json_decref(r);
    rc_buf_free(&reply);
    free(line);
    return 0;
}
