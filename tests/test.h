/* Minimal test harness: TEST(name) defines a case; the runner (tests/runner.c)
 * forks each case with a timeout. Assertions print both operands and abort.
 * RC_SKIP("reason %s", ...) ends a case that cannot run here (its data is
 * absent): the runner reports "skip NAME reason", never "ok". */
#ifndef RC_TEST_H
#define RC_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEST(name)                                                                                 \
    void rc_test_##name(void);                                                                     \
    void rc_test_##name(void)

#define RC__FAIL(...)                                                                              \
    do {                                                                                           \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                                            \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
        abort();                                                                                   \
    } while (0)

/* Exit status of a skipped case (ctest's SKIP_RETURN_CODE, as in automake). */
#define RC_SKIP_EXIT 77

/* Implemented by tests/runner.c: prints the reason, hands it to the runner
 * and exits with RC_SKIP_EXIT. */
void rc_test_skip(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));
#define RC_SKIP(...) rc_test_skip(__FILE__, __LINE__, __VA_ARGS__)

#define ASSERT(c)                                                                                  \
    do {                                                                                           \
        if (!(c))                                                                                  \
            RC__FAIL("assertion failed: %s", #c);                                                  \
    } while (0)

#define ASSERT_INT_OP(a, op, b)                                                                    \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (!(a_ op b_))                                                                           \
            RC__FAIL("%s %s %s: %lld vs %lld", #a, #op, #b, a_, b_);                               \
    } while (0)
#define ASSERT_EQ(a, b) ASSERT_INT_OP(a, ==, b)
#define ASSERT_NE(a, b) ASSERT_INT_OP(a, !=, b)
#define ASSERT_LT(a, b) ASSERT_INT_OP(a, <, b)
#define ASSERT_LE(a, b) ASSERT_INT_OP(a, <=, b)
#define ASSERT_GT(a, b) ASSERT_INT_OP(a, >, b)
#define ASSERT_GE(a, b) ASSERT_INT_OP(a, >=, b)

#define ASSERT_DBL_OP(a, op, b)                                                                    \
    do {                                                                                           \
        double a_ = (double)(a), b_ = (double)(b);                                                 \
        if (!(a_ op b_))                                                                           \
            RC__FAIL("%s %s %s: %.6g vs %.6g", #a, #op, #b, a_, b_);                               \
    } while (0)
#define ASSERT_NEAR(a, b, eps)                                                                     \
    do {                                                                                           \
        double a_ = (double)(a), b_ = (double)(b);                                                 \
        if (!(a_ - b_ <= (eps) && b_ - a_ <= (eps)))                                               \
            RC__FAIL("%s ~ %s: %.9g vs %.9g (eps %g)", #a, #b, a_, b_, (double)(eps));             \
    } while (0)

#define ASSERT_STREQ(a, b)                                                                         \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (!a_ || !b_ || strcmp(a_, b_) != 0)                                                     \
            RC__FAIL("%s == %s: \"%s\" vs \"%s\"", #a, #b, a_ ? a_ : "(null)",                     \
                     b_ ? b_ : "(null)");                                                          \
    } while (0)

/* Paths of the build tree and the binaries, for end-to-end tests. */
#define RC_BIN(name) RC_BUILD_DIR "/" name

#endif
