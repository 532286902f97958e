/* half — IEEE 754 binary16 ("fp16") storage of float vectors: half the bytes
 * of float32 at a relative error of at most 2^-11 for normal values (the
 * two-tower mirror's unit vectors lose nothing a top-k order sees). Encoding
 * rounds to nearest even; values beyond the half range become +-inf, NaN
 * stays NaN. Portable C, with F16C kernels for arrays when the CPU has them;
 * thread-safe. */
#ifndef RECALLD_HALF_H
#define RECALLD_HALF_H

#include <stddef.h>
#include <stdint.h>

uint16_t rc_half_from_float(float f);
float rc_half_to_float(uint16_t h);
/* dst[0..n) = half(src[0..n)) */
void rc_half_encode(uint16_t *dst, const float *src, size_t n);
/* dst[0..n) = float(src[0..n)) */
void rc_half_decode(float *dst, const uint16_t *src, size_t n);
/* q . v and *vv = v . v for v = float(h[0..n)), in one pass without
 * decoding into memory (the re-rank's inner loop over an fp16 table). */
float rc_half_dot(const float *q, const uint16_t *h, size_t n, float *vv);
/* The array kernels in use: "f16c" (x86 F16C, chosen at run time) or "scalar". */
const char *rc_half_impl(void);

#endif
