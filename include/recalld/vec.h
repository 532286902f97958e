/* vec — float vector kernels for training and scoring (SIMD C; AVX2+FMA chosen
 * at run time when the CPU has it, portable loop otherwise). Thread-safe. */
#ifndef RECALLD_VEC_H
#define RECALLD_VEC_H

#include <stddef.h>
#include <stdint.h>

float rc_vec_dot(const float *a, const float *b, size_t n);
/* y += a * x */
void rc_vec_axpy(float a, const float *x, float *y, size_t n);
/* y = a * y */
void rc_vec_scale(float a, float *y, size_t n);
/* Scales x to unit L2 norm in place; returns the old norm (x untouched if 0). */
float rc_vec_normalize(float *x, size_t n);
/* One SGNS output row step, the inner loop of training: f = in . out,
 * g = lr * (label - rc_sigmoid(f)); grad += g * out (old out), then
 * out += g * in. Returns the pair's loss term -rc_log_sigmoid(label ? f : -f).
 * The same arithmetic as rc_vec_dot + rc_sigmoid + two rc_vec_axpy, fused. */
float rc_vec_sgns_out(float *out, const float *in, float *grad, float lr, int label, size_t n);
/* v . q for a float and an int8 vector (a quantised copy), with *vv = v . v
 * and *qq = q . q: the terms of their cosine, in one pass. */
float rc_vec_dot_i8(const float *v, const int8_t *q, size_t n, float *vv, float *qq);
/* dst = src[0..n) where src may be a vector another thread updates meanwhile
 * (the item table's vectors are trained in place, Hogwild-style: see
 * recalld/table.h): memcpy, or relaxed atomic loads element by element in
 * ThreadSanitizer builds, like every kernel above there. */
void rc_vec_copy(float *dst, const float *src, size_t n);
/* Name of the kernel in use ("avx2-fma" or "scalar"; "relaxed-atomic (tsan)" in
 * ThreadSanitizer builds). */
const char *rc_vec_impl(void);

/* Fast logistic for SGNS: 1 / (1 + exp(-x)), clipped to [-8, 8]. Table lookup
 * with linear interpolation: absolute error < 1e-5. */
float rc_sigmoid(float x);
/* log(sigmoid(x)) for the SGNS loss, x clipped to [-8, 8] (so >= -8.0004);
 * absolute error < 1e-4. */
float rc_log_sigmoid(float x);

#endif
