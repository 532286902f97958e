#include "recalld/buf.h"
#include "recalld/common.h"
#include "test.h"

TEST(common_rng_below_in_range)
{
    rc_rng r;
    rc_rng_seed(&r, 42);
    unsigned hist[10] = {0};
    for (int i = 0; i < 100000; i++) {
        uint32_t v = rc_rng_below(&r, 10);
        ASSERT_LT(v, 10);
        hist[v]++;
    }
    for (int i = 0; i < 10; i++)
        ASSERT_GT(hist[i], 9000);
}

TEST(buf_json_escapes_and_limits)
{
    rc_buf b;
    rc_buf_init(&b, 0);
    ASSERT_EQ(rc_buf_json_str(&b, "a\"b\\\n\xff", 6), 0);
    ASSERT_STREQ(b.data, "\"a\\\"b\\\\\\u000a\xef\xbf\xbd\"");
    rc_buf_free(&b);
    rc_buf_init(&b, 8);
    ASSERT_EQ(rc_buf_puts(&b, "12345678"), 0);
    ASSERT_NE(rc_buf_puts(&b, "9"), 0);
    ASSERT_EQ(b.overflow, 1);
    ASSERT_EQ(b.len, 8);
    rc_buf_free(&b);
}
