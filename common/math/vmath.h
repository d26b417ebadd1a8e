/* vmath.h - 4-wide float helpers on GCC/Clang vector extensions for the
 * math kernels: a rational erf (Eigen's float erf: odd degree-13 numerator,
 * even degree-8 denominator, within 4e-7 of erf; clamped to [-4, 4] where
 * erf is +-1 in float), exp(a) for a <= 0 (Cephes' expf: a = n ln 2 + r, a
 * degree-6 polynomial in r, 2^n from the exponent bits, about 1 ulp; 0
 * below -87), and loads/stores of n <= 4 floats. Compilers do not vectorise
 * erff / expf; these are branch-free and run 4 lanes at a time. Also the
 * element-wise sums the kernels and the model runner use (GCC's -O2 does
 * not vectorise loops of unknown length; lane by lane they give the same
 * floats as the scalar loops). static inline, nothing exported.
 */
#ifndef FL_VMATH_H
#define FL_VMATH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

static inline v4f v4_select(v4i m, v4f a, v4f b)
{
	return (v4f)((m & (v4i)a) | (~m & (v4i)b));
}

static inline v4f v4_erf(v4f a)
{
	const v4f hi = {4.0f, 4.0f, 4.0f, 4.0f};
	v4f x = v4_select(a > hi, hi, v4_select(a < -hi, -hi, a));
	v4f x2 = x * x;
	v4f p = x2 * -2.72614225801306e-10f + 2.77068142495902e-08f;
	p = x2 * p + -2.10102402082508e-06f;
	p = x2 * p + -5.69250639462346e-05f;
	p = x2 * p + -7.34990630326855e-04f;
	p = x2 * p + -2.95459980854025e-03f;
	p = x2 * p + -1.60960333262415e-02f;
	v4f q = x2 * -1.45660718464996e-05f + -2.13374055278905e-04f;
	q = x2 * q + -1.68282697438203e-03f;
	q = x2 * q + -7.37332916720468e-03f;
	q = x2 * q + -1.42647390514189e-02f;
	return x * p / q;
}

static inline v4f v4_exp_nonpositive(v4f a)
{
	const v4f lo = {-87.0f, -87.0f, -87.0f, -87.0f}, zero = {0};
	v4f x = v4_select(a < lo, lo, a);
	/* round to nearest: truncation of the negative x log2 e - 1/2 */
	v4i n = __builtin_convertvector(x * 1.44269504088896341f - 0.5f, v4i);
	v4f fn = __builtin_convertvector(n, v4f);
	x = x - fn * 0.693359375f + fn * 2.12194440e-4f;
	v4f z = x * x;
	v4f y = 1.9875691500e-4f * x + 1.3981999507e-3f;
	y = y * x + 8.3334519073e-3f;
	y = y * x + 4.1665795894e-2f;
	y = y * x + 1.6666665459e-1f;
	y = y * x + 5.0000001201e-1f;
	y = y * z + x + 1.0f;
	v4f e = (v4f)((n + 127) << 23);
	return v4_select(a < lo, zero, y * e);
}

/* The first n <= 4 floats of p (the rest 0); n == 4 is one unaligned load. */
static inline v4f v4_load(const float *p, size_t n)
{
	v4f v = {0};
	if (n == 4)
		memcpy(&v, p, sizeof(v));
	else
		memcpy(&v, p, sizeof(float) * n);
	return v;
}

static inline void v4_store(float *p, v4f v, size_t n)
{
	if (n == 4)
		memcpy(p, &v, sizeof(v));
	else
		memcpy(p, &v, sizeof(float) * n);
}

/* y (n) = a (n) + b (n); y may be a or b. */
static inline void v4_add(float *y, const float *a, const float *b, size_t n)
{
	for (size_t i = 0; i < n; i += 4) {
		size_t k = n - i < 4 ? n - i : 4;
		v4_store(y + i, v4_load(a + i, k) + v4_load(b + i, k), k);
	}
}

/* y (n) *= s. */
static inline void v4_scale(float *y, float s, size_t n)
{
	for (size_t i = 0; i < n; i += 4) {
		size_t k = n - i < 4 ? n - i : 4;
		v4_store(y + i, v4_load(y + i, k) * s, k);
	}
}

#endif
