/* half — binary16 <-> binary32 conversions by bit manipulation. */
#include "recalld/half.h"

#include <stdatomic.h>
#include <string.h>

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

uint16_t rc_half_from_float(float f)
{
    uint32_t u = bits_of(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a >= 0x7f800000u) /* inf or NaN (a NaN keeps a mantissa bit) */
        return (uint16_t)(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u : 0));
    if (a >= 0x47800000u) /* 2^16 and beyond (65520..65536 round to inf below too) */
        return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) { /* below 2^-14: a subnormal half (or zero) */
        /* adding 0.5 aligns the value's bits to the half subnormal's
         * quantum (2^-24) and the FPU rounds to nearest even */
        float r = float_of(a) + 0.5f;
        return (uint16_t)(sign | (bits_of(r) - 0x3f000000u));
    }
    uint32_t odd = (a >> 13) & 1u;
    a += 0xc8000fffu + odd; /* rebias the exponent (-112 << 23) and round to nearest even */
    return (uint16_t)(sign | (a >> 13));
}

float rc_half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, a = (uint32_t)(h & 0x7fffu) << 13;
    uint32_t e = a & 0x0f800000u;
    a += 0x38000000u;     /* rebias the exponent: 127 - 15 */
    if (e == 0x0f800000u) /* inf or NaN */
        a += 0x38000000u;
    else if (e == 0) { /* zero or subnormal: renormalise through the FPU */
        a += 1u << 23;
        a = bits_of(float_of(a) - float_of(0x38800000u));
    }
    return float_of(sign | a);
}

/* A stored vector may be rewritten by its writer while another thread reads it
 * (Hogwild-style, as the table's float vectors: recalld/table.h); under
 * ThreadSanitizer the elements are relaxed atomics, as rc_vec_copy's. */
#if defined(__SANITIZE_THREAD__)
#define ST16(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define LD16(p)    __atomic_load_n((p), __ATOMIC_RELAXED)
#else
#define ST16(p, v) (*(p) = (v))
#define LD16(p)    (*(p))
#endif

static void encode_c(uint16_t *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ST16(dst + i, rc_half_from_float(src[i]));
}

static void decode_c(float *dst, const uint16_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = rc_half_to_float(LD16(src + i));
}

/* x86 with F16C (chosen at run time, as src/vec.c chooses AVX2): eight
 * conversions an instruction, the same results (rounding to nearest even;
 * NaN stays NaN). A re-rank decodes 3 x k rows of the mirror: 150 x 64
 * components cost ~25 us in the portable loop, ~1 us here. */
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_F16C_KERNELS 1

__attribute__((target("avx,f16c"))) static void encode_f16c(uint16_t *dst, const float *src,
                                                            size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    encode_c(dst + i, src + i, n - i);
}

__attribute__((target("avx,f16c"))) static void decode_f16c(float *dst, const uint16_t *src,
                                                            size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    decode_c(dst + i, src + i, n - i);
}

__attribute__((target("avx"))) static float hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

__attribute__((target("avx,f16c"))) static float dot_f16c(const float *q, const uint16_t *h,
                                                          size_t n, float *vv)
{
    __m256 d = _mm256_setzero_ps(), s = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i)));
        d = _mm256_add_ps(d, _mm256_mul_ps(_mm256_loadu_ps(q + i), v));
        s = _mm256_add_ps(s, _mm256_mul_ps(v, v));
    }
    float dd = hsum256(d), ss = hsum256(s);
    for (; i < n; i++) {
        float v = rc_half_to_float(h[i]);
        dd += q[i] * v;
        ss += v * v;
    }
    *vv = ss;
    return dd;
}
#endif

static float dot_c(const float *q, const uint16_t *h, size_t n, float *vv)
{
    float dd = 0, ss = 0;
    for (size_t i = 0; i < n; i++) {
        float v = rc_half_to_float(LD16(h + i));
        dd += q[i] * v;
        ss += v * v;
    }
    *vv = ss;
    return dd;
}

/* The kernels, chosen once: F16C's conversions need the AVX state too,
 * which a CPU may report F16C without (an OS or hypervisor that does not
 * enable it). Racing first calls store the same answer. */
#ifdef HAVE_F16C_KERNELS
static int use_f16c(void)
{
    static _Atomic int have = -1;
    int h = atomic_load_explicit(&have, memory_order_relaxed);
    if (h < 0) {
        /* F16C from CPUID leaf 1 (clang 14 knows no "f16c" for __builtin_cpu_supports) */
        unsigned a, b, c, d;
        h = __builtin_cpu_supports("avx") && __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
        atomic_store_explicit(&have, h, memory_order_relaxed);
    }
    return h;
}
#endif

float rc_half_dot(const float *q, const uint16_t *h, size_t n, float *vv)
{
#ifdef HAVE_F16C_KERNELS
    if (use_f16c())
        return dot_f16c(q, h, n, vv);
#endif
    return dot_c(q, h, n, vv);
}

void rc_half_encode(uint16_t *dst, const float *src, size_t n)
{
#ifdef HAVE_F16C_KERNELS
    if (use_f16c()) {
        encode_f16c(dst, src, n);
        return;
    }
#endif
    encode_c(dst, src, n);
}

void rc_half_decode(float *dst, const uint16_t *src, size_t n)
{
#ifdef HAVE_F16C_KERNELS
    if (use_f16c()) {
        decode_f16c(dst, src, n);
        return;
    }
#endif
    decode_c(dst, src, n);
}

const char *rc_half_impl(void)
{
#ifdef HAVE_F16C_KERNELS
    if (use_f16c())
        return "f16c";
#endif
    return "scalar";
}
