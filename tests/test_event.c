#include <stdlib.h>

#include "recalld/common.h"
#include "recalld/event.h"
#include "test.h"

/* Decodes a NUL-terminated literal; the error text goes to err. */
static enum rc_event_reason dec(const char *s, rc_event *ev, char *err, size_t errlen)
{
    return rc_event_decode(s, strlen(s), ev, err, errlen);
}

#define EXPECT(json, reason, needle)                                                               \
    do {                                                                                           \
        char err_[256];                                                                            \
        rc_event ev_;                                                                              \
        enum rc_event_reason r_ = dec(json, &ev_, err_, sizeof err_);                              \
        if (r_ != (reason) || !strstr(err_, needle))                                               \
            RC__FAIL("%s: got %s \"%s\", want %s \"%s\"", json, rc_event_reason_name(r_), err_,    \
                     rc_event_reason_name(reason), needle);                                        \
    } while (0)

#define BASE "\"item_id\":\"i1\",\"city_id\":\"c1\",\"cate_id\":\"k1\",\"ts\":1000"

TEST(event_decode_valid_minimal)
{
    rc_event ev;
    char err[128] = "x";
    ASSERT_EQ(dec("{\"user_id\":\"u1\"," BASE "}", &ev, err, sizeof err), RC_EV_OK);
    ASSERT_STREQ(err, "");
    ASSERT_STREQ(ev.user, "u1");
    ASSERT_EQ(ev.user_len, 2);
    ASSERT_STREQ(ev.item, "i1");
    ASSERT_STREQ(ev.city, "c1");
    ASSERT_STREQ(ev.cate, "k1");
    ASSERT_EQ(ev.ts_ms, 1000);
    ASSERT_STREQ(ev.type, "click");
    ASSERT_STREQ(ev.device, "");
    ASSERT_EQ(ev.device_len, 0);
    ASSERT_EQ(ev.ntags, 0);
}

TEST(event_decode_integer_ids_and_optionals)
{
    rc_event ev;
    const char *s = "{\"user_id\":42,\"item_id\":0,\"city_id\":-3,\"cate_id\":7,"
                    "\"ts\":1700000000123.0,\"event\":\"view\",\"device\":\"ios\","
                    "\"tags\":[\"a\",\"b\\u00e9\"],\"extra\":{\"x\":[1,2]},\"n\":null}";
    ASSERT_EQ(dec(s, &ev, NULL, 0), RC_EV_OK);
    ASSERT_STREQ(ev.user, "42");
    ASSERT_EQ(ev.user_len, 2);
    ASSERT_STREQ(ev.item, "0");
    ASSERT_STREQ(ev.city, "-3");
    ASSERT_STREQ(ev.cate, "7");
    ASSERT_EQ(ev.ts_ms, 1700000000123LL);
    ASSERT_STREQ(ev.type, "view");
    ASSERT_STREQ(ev.device, "ios");
    ASSERT_EQ(ev.ntags, 2);
    ASSERT_STREQ(ev.tags[0], "a");
    ASSERT_STREQ(ev.tags[1], "b\xc3\xa9");
    ASSERT_EQ(ev.tag_len[1], 3);
    /* null optionals are absent */
    ASSERT_EQ(dec("{\"user_id\":\"u\",\"device\":null,\"tags\":null,\"event\":null," BASE "}", &ev,
                  NULL, 0),
              RC_EV_OK);
    ASSERT_STREQ(ev.type, "click");
    ASSERT_EQ(ev.ntags, 0);
}

TEST(event_decode_bad_json_and_top_level)
{
    EXPECT("{\"user_id\":", RC_EV_BAD_JSON, "1:");
    EXPECT("", RC_EV_BAD_JSON, ":");
    EXPECT("{\"user_id\":\"u\"," BASE "} trailing", RC_EV_BAD_JSON, "1:");
    EXPECT("{\"user_id\":\"u\",\"user_id\":\"v\"," BASE "}", RC_EV_BAD_JSON, "duplicate");
    EXPECT("[{\"user_id\":\"u\"," BASE "}]", RC_EV_NOT_OBJECT, "object");
    EXPECT("\"u\"", RC_EV_NOT_OBJECT, "object");
    EXPECT("12", RC_EV_NOT_OBJECT, "object");
    char err[128];
    rc_event ev;
    /* jansson's position is "line:col" */
    ASSERT_EQ(rc_event_decode("{\n  \"a\": tru }", 14, &ev, err, sizeof err), RC_EV_BAD_JSON);
    ASSERT(strncmp(err, "2:", 2) == 0);
    /* the length bounds the parse: no NUL terminator needed */
    const char *two = "{\"user_id\":\"u\"," BASE "}GARBAGE";
    ASSERT_EQ(rc_event_decode(two, strlen(two) - 7, &ev, NULL, 0), RC_EV_OK);
}

TEST(event_decode_too_large)
{
    size_t n = RC_EVENT_MAX + 1;
    char *big = malloc(n);
    ASSERT(big);
    memset(big, ' ', n);
    big[0] = '{';
    big[n - 1] = '}';
    char err[128];
    rc_event ev;
    ASSERT_EQ(rc_event_decode(big, n, &ev, err, sizeof err), RC_EV_TOO_LARGE);
    ASSERT(strstr(err, "65537"));
    /* exactly at the limit is parsed (and then judged on content) */
    ASSERT_EQ(rc_event_decode(big, n - 1, &ev, err, sizeof err), RC_EV_BAD_JSON);
    big[n - 2] = '}';
    ASSERT_EQ(rc_event_decode(big, n - 1, &ev, err, sizeof err), RC_EV_MISSING_FIELD);
    free(big);
}

TEST(event_decode_missing_and_null_fields)
{
    static const char *const keys[] = {"user_id", "item_id", "city_id", "cate_id", "ts"};
    static const char *const vals[] = {"\"u\"", "\"i\"", "1", "2", "5"};
    for (size_t f = 0; f < RC_ARRAY_LEN(keys); f++) {
        /* the object without field f, then with field f null */
        char missing[256] = "{\"other\":1", nulled[256] = "{\"other\":1";
        char want[64], kv[64];
        snprintf(want, sizeof want, "%s: required field missing", keys[f]);
        for (size_t g = 0; g < RC_ARRAY_LEN(keys); g++) {
            snprintf(kv, sizeof kv, ",\"%s\":%s", keys[g], vals[g]);
            if (g != f)
                strcat(missing, kv);
            snprintf(kv, sizeof kv, ",\"%s\":%s", keys[g], g == f ? "null" : vals[g]);
            strcat(nulled, kv);
        }
        strcat(missing, "}");
        strcat(nulled, "}");
        EXPECT(missing, RC_EV_MISSING_FIELD, want);
        EXPECT(nulled, RC_EV_MISSING_FIELD, want);
    }
}

TEST(event_decode_wrong_types)
{
    EXPECT("{\"user_id\":true," BASE "}", RC_EV_WRONG_TYPE,
           "user_id: expected string or non-negative integer");
    EXPECT("{\"user_id\":1.5," BASE "}", RC_EV_WRONG_TYPE, "user_id: expected string");
    EXPECT("{\"user_id\":[\"u\"]," BASE "}", RC_EV_WRONG_TYPE, "user_id:");
    EXPECT("{\"user_id\":\"u\",\"item_id\":{},\"city_id\":1,\"cate_id\":1,\"ts\":1}",
           RC_EV_WRONG_TYPE, "item_id: expected string or non-negative integer");
    EXPECT("{\"user_id\":\"u\",\"item_id\":\"i\",\"city_id\":false,\"cate_id\":1,\"ts\":1}",
           RC_EV_WRONG_TYPE, "city_id: expected string or integer");
    EXPECT("{\"user_id\":\"u\",\"item_id\":\"i\",\"city_id\":1,\"cate_id\":2.5,\"ts\":1}",
           RC_EV_WRONG_TYPE, "cate_id: expected string or integer");
    EXPECT("{\"user_id\":\"u\",\"item_id\":\"i\",\"city_id\":1,\"cate_id\":1,\"ts\":\"1\"}",
           RC_EV_WRONG_TYPE, "ts: expected integer milliseconds");
    EXPECT("{\"user_id\":\"u\"," BASE ",\"device\":3}", RC_EV_WRONG_TYPE,
           "device: expected string");
    EXPECT("{\"user_id\":\"u\"," BASE ",\"event\":1}", RC_EV_WRONG_TYPE, "event: expected string");
    EXPECT("{\"user_id\":\"u\"," BASE ",\"tags\":\"a\"}", RC_EV_WRONG_TYPE, "tags: expected array");
    EXPECT("{\"user_id\":\"u\"," BASE ",\"tags\":[\"a\",1]}", RC_EV_WRONG_TYPE,
           "tags[1]: expected string");
}

TEST(event_decode_bad_values)
{
    EXPECT("{\"user_id\":\"u\",\"item_id\":\"i\",\"city_id\":1,\"cate_id\":1,\"ts\":-1}",
           RC_EV_BAD_VALUE, "ts: negative");
    EXPECT("{\"user_id\":\"u\",\"item_id\":\"i\",\"city_id\":1,\"cate_id\":1,\"ts\":-0.5}",
           RC_EV_BAD_VALUE, "ts: negative");
    EXPECT("{\"user_id\":\"u\",\"item_id\":\"i\",\"city_id\":1,\"cate_id\":1,\"ts\":12.5}",
           RC_EV_BAD_VALUE, "ts: expected integer milliseconds");
    EXPECT("{\"user_id\":\"u\",\"item_id\":\"i\",\"city_id\":1,\"cate_id\":1,\"ts\":1e300}",
           RC_EV_BAD_VALUE, "ts:");
    EXPECT("{\"user_id\":-4," BASE "}", RC_EV_BAD_VALUE, "user_id: negative");
    EXPECT("{\"user_id\":\"\"," BASE "}", RC_EV_BAD_VALUE, "user_id: empty");
    EXPECT("{\"user_id\":\"a\\u0000b\"," BASE "}", RC_EV_BAD_VALUE, "user_id: contains a NUL");
    EXPECT("{\"user_id\":\"u\"," BASE ",\"tags\":[\"x\\u0000\"]}", RC_EV_BAD_VALUE,
           "tags[0]: contains a NUL");
    EXPECT("{\"user_id\":\"u\"," BASE ",\"device\":\"\\u0000\"}", RC_EV_BAD_VALUE, "device:");
    /* a real with no fraction is accepted */
    rc_event ev;
    ASSERT_EQ(dec("{\"user_id\":\"u\",\"item_id\":\"i\",\"city_id\":1,\"cate_id\":1,\"ts\":2e3}",
                  &ev, NULL, 0),
              RC_EV_OK);
    ASSERT_EQ(ev.ts_ms, 2000);
}

TEST(event_decode_oversized)
{
    char id[RC_ID_MAX + 2];
    char json[1024];
    rc_event ev;
    memset(id, 'a', sizeof id);
    id[RC_ID_MAX] = '\0'; /* exactly at the limit: accepted */
    snprintf(json, sizeof json, "{\"user_id\":\"%s\"," BASE "}", id);
    ASSERT_EQ(dec(json, &ev, NULL, 0), RC_EV_OK);
    ASSERT_EQ(ev.user_len, RC_ID_MAX);
    id[RC_ID_MAX] = 'a', id[RC_ID_MAX + 1] = '\0';
    snprintf(json, sizeof json, "{\"user_id\":\"%s\"," BASE "}", id);
    EXPECT(json, RC_EV_OVERSIZED, "user_id: 129 bytes, limit 128");
    snprintf(json, sizeof json,
             "{\"user_id\":\"u\",\"item_id\":\"%s\",\"city_id\":1,"
             "\"cate_id\":1,\"ts\":1}",
             id);
    EXPECT(json, RC_EV_OVERSIZED, "item_id: 129 bytes");
    id[RC_ATTR_MAX + 1] = '\0';
    snprintf(json, sizeof json,
             "{\"user_id\":\"u\",\"item_id\":\"i\",\"city_id\":\"%s\","
             "\"cate_id\":1,\"ts\":1}",
             id);
    EXPECT(json, RC_EV_OVERSIZED, "city_id: 65 bytes, limit 64");
    snprintf(json, sizeof json, "{\"user_id\":\"u\"," BASE ",\"tags\":[\"%s\"]}", id);
    EXPECT(json, RC_EV_OVERSIZED, "tags[0]: 65 bytes");
    snprintf(json, sizeof json, "{\"user_id\":\"u\"," BASE ",\"device\":\"%s\"}", id);
    EXPECT(json, RC_EV_OVERSIZED, "device: 65 bytes");
    /* 16 tags fine, 17 too many */
    strcpy(json, "{\"user_id\":\"u\"," BASE ",\"tags\":[\"t\"");
    for (int i = 1; i < RC_TAGS_MAX; i++)
        strcat(json, ",\"t\"");
    char ok[1024];
    snprintf(ok, sizeof ok, "%s]}", json);
    ASSERT_EQ(dec(ok, &ev, NULL, 0), RC_EV_OK);
    ASSERT_EQ(ev.ntags, RC_TAGS_MAX);
    strcat(json, ",\"t\"]}");
    EXPECT(json, RC_EV_OVERSIZED, "tags: 17 tags, limit 16");
}

TEST(event_encode_round_trip)
{
    rc_event a, b;
    memset(&a, 0, sizeof a);
    strcpy(a.user, "user \"q\"\\\n\x01");
    a.user_len = (uint8_t)strlen(a.user);
    strcpy(a.item, "i\xc3\xa9");
    a.item_len = (uint8_t)strlen(a.item);
    strcpy(a.city, "c3");
    a.city_len = 2;
    strcpy(a.cate, "k2");
    a.cate_len = 2;
    strcpy(a.type, "click");
    a.type_len = 5;
    strcpy(a.device, "android");
    a.device_len = 7;
    a.ntags = 2;
    strcpy(a.tags[0], "t1");
    a.tag_len[0] = 2;
    strcpy(a.tags[1], "/\t");
    a.tag_len[1] = 2;
    a.ts_ms = 1700000000001LL;

    char buf[1024];
    size_t n = rc_event_encode(&a, buf, sizeof buf);
    ASSERT_LT(n, sizeof buf);
    ASSERT_EQ(strlen(buf), n);
    char err[128];
    ASSERT_EQ(rc_event_decode(buf, n, &b, err, sizeof err), RC_EV_OK);
    ASSERT_STREQ(b.user, a.user);
    ASSERT_STREQ(b.item, a.item);
    ASSERT_STREQ(b.city, a.city);
    ASSERT_STREQ(b.cate, a.cate);
    ASSERT_STREQ(b.type, a.type);
    ASSERT_STREQ(b.device, a.device);
    ASSERT_EQ(b.ntags, 2);
    ASSERT_STREQ(b.tags[1], a.tags[1]);
    ASSERT_EQ(b.ts_ms, a.ts_ms);

    /* a short buffer: the needed length is returned, nothing written past cap */
    char small[16];
    memset(small, 'Z', sizeof small);
    ASSERT_EQ(rc_event_encode(&a, small, 10), n);
    for (size_t i = 10; i < sizeof small; i++)
        ASSERT_EQ(small[i], 'Z');

    /* invalid UTF-8 in a field still encodes to parseable JSON */
    a.user[0] = (char)0xff;
    n = rc_event_encode(&a, buf, sizeof buf);
    ASSERT_EQ(rc_event_decode(buf, n, &b, NULL, 0), RC_EV_OK);
    ASSERT(strncmp(b.user, "\xef\xbf\xbd", 3) == 0);
}

TEST(event_reason_names)
{
    ASSERT_STREQ(rc_event_reason_name(RC_EV_OK), "ok");
    ASSERT_STREQ(rc_event_reason_name(RC_EV_BAD_JSON), "bad_json");
    ASSERT_STREQ(rc_event_reason_name(RC_EV_MISSING_FIELD), "missing_field");
    ASSERT_STREQ(rc_event_reason_name(RC_EV_OVERSIZED), "oversized");
    ASSERT_STREQ(rc_event_reason_name(RC_EV_REASON_COUNT), "unknown");
}
