/* vec — float kernels. The AVX2+FMA versions are compiled with a target
 * attribute so the baseline build stays portable; the choice is made once,
 * before main, from the CPU's feature bits, and then read without a lock. */
#include "recalld/vec.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define SIG_MAX  8.0f
#define SIG_SIZE 2048 /* intervals over [-SIG_MAX, SIG_MAX] */

static float sig_tab[SIG_SIZE + 2];
static float logsig_tab[SIG_SIZE + 2];

static inline float lerp_tab(const float *tab, float x)
{
    if (!(x > -SIG_MAX)) /* also catches NaN: treat as the low end */
        return tab[0];
    if (x >= SIG_MAX)
        return tab[SIG_SIZE];
    float f = (x + SIG_MAX) * (SIG_SIZE / (2.0f * SIG_MAX));
    int i = (int)f;
    float w = f - (float)i;
    return tab[i] + w * (tab[i + 1] - tab[i]);
}

static float dot_scalar(const float *a, const float *b, size_t n)
{
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++)
        s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

static void axpy_scalar(float a, const float *x, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

static void scale_scalar(float a, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] *= a;
}

__attribute__((target("avx2,fma"))) static float hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) static float dot_avx2(const float *a, const float *b, size_t n)
{
    /* Two accumulators hide the FMA latency for the usual dims (64..256). */
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    if (i + 8 <= n) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        i += 8;
    }
    float s = hsum256(_mm256_add_ps(s0, s1));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

__attribute__((target("avx2,fma"))) static void axpy_avx2(float a, const float *x, float *y,
                                                          size_t n)
{
    __m256 va = _mm256_set1_ps(a);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i,
                         _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * x[i];
}

__attribute__((target("avx2,fma"))) static void scale_avx2(float a, float *y, size_t n)
{
    __m256 va = _mm256_set1_ps(a);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(va, _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] *= a;
}

static float sgns_out_scalar(float *out, const float *in, float *grad, float lr, int label,
                             size_t n)
{
    float f = dot_scalar(in, out, n);
    float g = lr * ((float)label - lerp_tab(sig_tab, f));
    axpy_scalar(g, out, grad, n);
    axpy_scalar(g, in, out, n);
    return -lerp_tab(logsig_tab, label ? f : -f);
}

/* dot_avx2, sigmoid, then both axpys in one pass: out is read once from
 * memory (its second read hits L1) and there is one call per output row.
 * Same operations in the same order as the separate kernels. */
__attribute__((target("avx2,fma"))) static float
sgns_out_avx2(float *out, const float *in, float *grad, float lr, int label, size_t n)
{
    float f = dot_avx2(in, out, n);
    float g = lr * ((float)label - lerp_tab(sig_tab, f));
    __m256 vg = _mm256_set1_ps(g);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 o = _mm256_loadu_ps(out + i);
        _mm256_storeu_ps(grad + i, _mm256_fmadd_ps(vg, o, _mm256_loadu_ps(grad + i)));
        _mm256_storeu_ps(out + i, _mm256_fmadd_ps(vg, _mm256_loadu_ps(in + i), o));
    }
    for (; i < n; i++) {
        float o = out[i];
        grad[i] += g * o;
        out[i] = o + g * in[i];
    }
    return -lerp_tab(logsig_tab, label ? f : -f);
}

static float dot_i8_scalar(const float *v, const int8_t *q, size_t n, float *vv, float *qq)
{
    float dot = 0, sv = 0, sq = 0;
    for (size_t i = 0; i < n; i++) {
        dot += v[i] * q[i];
        sv += v[i] * v[i];
        sq += (float)(q[i] * q[i]);
    }
    *vv = sv;
    *qq = sq;
    return dot;
}

__attribute__((target("avx2,fma"))) static float dot_i8_avx2(const float *v, const int8_t *q,
                                                             size_t n, float *vv, float *qq)
{
    __m256 d = _mm256_setzero_ps(), sv = _mm256_setzero_ps(), sq = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(v + i);
        __m128i b;
        memcpy(&b, q + i, 8); /* 8 int8, unaligned */
        __m256 y = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
        d = _mm256_fmadd_ps(x, y, d);
        sv = _mm256_fmadd_ps(x, x, sv);
        sq = _mm256_fmadd_ps(y, y, sq);
    }
    float dot = hsum256(d), s1 = hsum256(sv), s2 = hsum256(sq);
    for (; i < n; i++) {
        dot += v[i] * q[i];
        s1 += v[i] * v[i];
        s2 += (float)(q[i] * q[i]);
    }
    *vv = s1;
    *qq = s2;
    return dot;
}

#if defined(__SANITIZE_THREAD__)
/* ThreadSanitizer builds: the table's vectors are shared Hogwild-style (the
 * trainer updates rows in place while recall, the two-tower server and the
 * batch trainer's other threads read or update them, without locks; see
 * recalld/table.h). In C11 terms those are concurrent accesses to the same
 * floats, so these kernels make each element access a relaxed atomic one: the
 * documented semantics (a reader may see a vector mid-update, never a torn
 * float), which on x86 is what the SIMD loads and stores of the other kernels
 * do. TSan then still sees every vector access and reports any that is not
 * through here (a memcpy of a row racing with the trainer, say). Scalar and
 * slower; never used outside a TSan build. */
static inline float ld_relaxed(const float *p)
{
    float v;
    __atomic_load(p, &v, __ATOMIC_RELAXED);
    return v;
}

static inline void st_relaxed(float *p, float v) { __atomic_store(p, &v, __ATOMIC_RELAXED); }

static float dot_relaxed(const float *a, const float *b, size_t n)
{
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += ld_relaxed(a + i) * ld_relaxed(b + i);
        s1 += ld_relaxed(a + i + 1) * ld_relaxed(b + i + 1);
        s2 += ld_relaxed(a + i + 2) * ld_relaxed(b + i + 2);
        s3 += ld_relaxed(a + i + 3) * ld_relaxed(b + i + 3);
    }
    for (; i < n; i++)
        s0 += ld_relaxed(a + i) * ld_relaxed(b + i);
    return (s0 + s1) + (s2 + s3);
}

static void axpy_relaxed(float a, const float *x, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        st_relaxed(y + i, ld_relaxed(y + i) + a * ld_relaxed(x + i));
}

static void scale_relaxed(float a, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        st_relaxed(y + i, ld_relaxed(y + i) * a);
}

static float sgns_out_relaxed(float *out, const float *in, float *grad, float lr, int label,
                              size_t n)
{
    float f = dot_relaxed(in, out, n);
    float g = lr * ((float)label - lerp_tab(sig_tab, f));
    axpy_relaxed(g, out, grad, n);
    axpy_relaxed(g, in, out, n);
    return -lerp_tab(logsig_tab, label ? f : -f);
}

static float dot_i8_relaxed(const float *v, const int8_t *q, size_t n, float *vv, float *qq)
{
    float dot = 0, sv = 0, sq = 0;
    for (size_t i = 0; i < n; i++) {
        float x = ld_relaxed(v + i);
        dot += x * q[i];
        sv += x * x;
        sq += (float)(q[i] * q[i]);
    }
    *vv = sv;
    *qq = sq;
    return dot;
}
#endif

static float (*dot_fn)(const float *, const float *, size_t) = dot_scalar;
static float (*dot_i8_fn)(const float *, const int8_t *, size_t, float *, float *) = dot_i8_scalar;
static float (*sgns_out_fn)(float *, const float *, float *, float, int, size_t) = sgns_out_scalar;
static void (*axpy_fn)(float, const float *, float *, size_t) = axpy_scalar;
static void (*scale_fn)(float, float *, size_t) = scale_scalar;
static const char *impl_name = "scalar";

__attribute__((constructor)) static void vec_init(void)
{
    for (int i = 0; i <= SIG_SIZE + 1; i++) {
        double x = ((double)i / SIG_SIZE * 2.0 - 1.0) * SIG_MAX;
        double s = 1.0 / (1.0 + exp(-x));
        sig_tab[i] = (float)s;
        logsig_tab[i] = (float)-log1p(exp(-x));
    }
#if defined(__SANITIZE_THREAD__)
    dot_fn = dot_relaxed;
    axpy_fn = axpy_relaxed;
    scale_fn = scale_relaxed;
    sgns_out_fn = sgns_out_relaxed;
    dot_i8_fn = dot_i8_relaxed;
    impl_name = "relaxed-atomic (tsan)";
    return;
#endif
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        dot_fn = dot_avx2;
        axpy_fn = axpy_avx2;
        scale_fn = scale_avx2;
        sgns_out_fn = sgns_out_avx2;
        dot_i8_fn = dot_i8_avx2;
        impl_name = "avx2-fma";
    }
}

float rc_vec_dot(const float *a, const float *b, size_t n) { return dot_fn(a, b, n); }

void rc_vec_axpy(float a, const float *x, float *y, size_t n) { axpy_fn(a, x, y, n); }

void rc_vec_scale(float a, float *y, size_t n) { scale_fn(a, y, n); }

float rc_vec_normalize(float *x, size_t n)
{
    float norm = sqrtf(dot_fn(x, x, n));
    if (norm > 0)
        scale_fn(1.0f / norm, x, n);
    return norm;
}

float rc_vec_sgns_out(float *out, const float *in, float *grad, float lr, int label, size_t n)
{
    return sgns_out_fn(out, in, grad, lr, label, n);
}

float rc_vec_dot_i8(const float *v, const int8_t *q, size_t n, float *vv, float *qq)
{
    return dot_i8_fn(v, q, n, vv, qq);
}

void rc_vec_copy(float *dst, const float *src, size_t n)
{
#if defined(__SANITIZE_THREAD__)
    for (size_t i = 0; i < n; i++)
        dst[i] = ld_relaxed(src + i);
#else
    memcpy(dst, src, n * sizeof *dst);
#endif
}

const char *rc_vec_impl(void) { return impl_name; }

float rc_sigmoid(float x) { return lerp_tab(sig_tab, x); }

float rc_log_sigmoid(float x) { return lerp_tab(logsig_tab, x); }
