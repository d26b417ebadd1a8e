/* gradcheck.h - helpers of the layer kernel tests: float buffers (plain or
 * filled with uniform noise in [-1, 1)) and the central finite-difference
 * check of an analytic gradient. Plain checks and files: testutil.h. */
#ifndef FL_GRADCHECK_H
#define FL_GRADCHECK_H

#include <stddef.h>
#include <stdint.h>

/* n floats (at least one), malloc'ed; a failed allocation is a failed check. */
float *fl_test_falloc(size_t n);
/* n floats uniform in [-1, 1) from seed, malloc'ed. */
float *fl_test_frand(size_t n, uint64_t seed);

/* Writes the ny floats of the function under test into y. */
typedef void (*fl_test_fd_forward)(void *ctx, float *y);

/* Central differences of L = sum(g ⊙ f()) with respect to each of the n
 * floats at param (step h), each checked against analytic[i] within
 * atol + rtol * |analytic|. Returns the largest |numeric - analytic|. */
double fl_test_fd_check(float *param, size_t n, const float *analytic, fl_test_fd_forward f,
			void *ctx, float *y, const float *g, size_t ny, float h, double rtol,
			double atol);

#endif
