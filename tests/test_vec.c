#include <math.h>

#include "recalld/common.h"
#include "recalld/vec.h"
#include "test.h"

static void fill(rc_rng *r, float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = rc_rng_float(r) * 2.0f - 1.0f;
}

TEST(vec_kernels_match_reference_on_odd_lengths)
{
    rc_rng r;
    rc_rng_seed(&r, 11);
    static float a[1100], b[1100], y[1100], want[1100];
    printf("vec impl: %s\n", rc_vec_impl());
    ASSERT(strcmp(rc_vec_impl(), "avx2-fma") == 0 || strcmp(rc_vec_impl(), "scalar") == 0 ||
           strcmp(rc_vec_impl(), "relaxed-atomic (tsan)") == 0);
    for (size_t n = 0; n <= 1030; n += (n < 70 ? 1 : 97)) {
        /* Offsets 0..3 make the pointers unaligned for the vector loads. */
        size_t off = n % 4;
        fill(&r, a, n + off);
        fill(&r, b, n + off);
        double ref = 0;
        for (size_t i = 0; i < n; i++)
            ref += (double)a[off + i] * b[off + i];
        ASSERT_NEAR(rc_vec_dot(a + off, b + off, n), ref, 1e-5 * (double)(n + 1));

        fill(&r, y, n + off);
        for (size_t i = 0; i < n; i++)
            want[i] = y[off + i] + 0.37f * a[off + i];
        float guard = y[off + n];
        rc_vec_axpy(0.37f, a + off, y + off, n);
        for (size_t i = 0; i < n; i++)
            ASSERT_NEAR(y[off + i], want[i], 1e-6);
        ASSERT_EQ(y[off + n], guard); /* nothing written past n */

        for (size_t i = 0; i < n; i++)
            want[i] = y[off + i] * -1.5f;
        rc_vec_scale(-1.5f, y + off, n);
        for (size_t i = 0; i < n; i++)
            ASSERT_NEAR(y[off + i], want[i], 1e-6);
        ASSERT_EQ(y[off + n], guard);
    }
}

TEST(vec_normalize_unit_and_zero)
{
    float x[13] = {3, 4};
    ASSERT_NEAR(rc_vec_normalize(x, 13), 5.0, 1e-6);
    ASSERT_NEAR(x[0], 0.6, 1e-6);
    ASSERT_NEAR(x[1], 0.8, 1e-6);
    ASSERT_NEAR(rc_vec_dot(x, x, 13), 1.0, 1e-6);
    float z[9] = {0};
    ASSERT_EQ(rc_vec_normalize(z, 9), 0);
    for (int i = 0; i < 9; i++)
        ASSERT_EQ(z[i], 0);
}

TEST(vec_sigmoid_accuracy_and_clipping)
{
    double worst = 0, worst_log = 0;
    for (double x = -7.999; x < 8.0; x += 0.0007) {
        double s = 1.0 / (1.0 + exp(-x));
        worst = fmax(worst, fabs(rc_sigmoid((float)x) - s));
        worst_log = fmax(worst_log, fabs(rc_log_sigmoid((float)x) - log(s)));
    }
    ASSERT_DBL_OP(worst, <, 1e-5);
    ASSERT_DBL_OP(worst_log, <, 1e-4);
    ASSERT_NEAR(rc_sigmoid(0), 0.5, 1e-6);
    ASSERT_NEAR(rc_sigmoid(100), 1.0 / (1.0 + exp(-8.0)), 1e-6);
    ASSERT_NEAR(rc_sigmoid(-100), 1.0 / (1.0 + exp(8.0)), 1e-6);
    ASSERT_NEAR(rc_log_sigmoid(-1000), -8.000335, 1e-4);
    ASSERT_DBL_OP(rc_sigmoid(NAN), <, 0.001);
    /* Monotone: the table never steps backwards. */
    float prev = rc_sigmoid(-9);
    for (float x = -9; x < 9; x += 0.001f) {
        ASSERT_DBL_OP(rc_sigmoid(x), >=, prev);
        prev = rc_sigmoid(x);
    }
}
