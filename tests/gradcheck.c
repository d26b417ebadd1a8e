/* gradcheck.c - buffers and the finite-difference gradient check of the
 * layer kernel tests (gradcheck.h). */
#include "gradcheck.h"

#include "testutil.h"

#include <math.h>
#include <stdlib.h>

float *fl_test_falloc(size_t n)
{
	float *p = malloc(sizeof(float) * (n ? n : 1));
	FL_CHECK(p != NULL);
	return p;
}

float *fl_test_frand(size_t n, uint64_t seed)
{
	float *p = fl_test_falloc(n);
	fl_test_fill_uniform(p, n, seed, -1.0f, 1.0f);
	return p;
}

static double dotd(const float *a, const float *b, size_t n)
{
	double s = 0.0;
	for (size_t i = 0; i < n; i++)
		s += (double)a[i] * b[i];
	return s;
}

double fl_test_fd_check(float *param, size_t n, const float *analytic, fl_test_fd_forward f,
			void *ctx, float *y, const float *g, size_t ny, float h, double rtol,
			double atol)
{
	double worst = 0.0;
	for (size_t i = 0; i < n; i++) {
		float v = param[i];
		float vp = v + h, vm = v - h;
		param[i] = vp;
		f(ctx, y);
		double lp = dotd(g, y, ny);
		param[i] = vm;
		f(ctx, y);
		double lm = dotd(g, y, ny);
		param[i] = v;
		double num = (lp - lm) / ((double)vp - vm);
		double err = fabs(num - analytic[i]);
		if (err > worst)
			worst = err;
		FL_CHECK_NEAR(num, analytic[i], rtol, atol);
	}
	return worst;
}
