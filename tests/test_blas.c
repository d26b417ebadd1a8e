/* test_blas.c - the OpenBLAS wrapper against its naive twin, all transposes. */
#include "blas.h"
#include "testutil.h"

#include <stdlib.h>

static void test_sgemm_transposes(void)
{
	int m = 13, n = 17, k = 11;
	float *a = malloc(sizeof(float) * m * k), *b = malloc(sizeof(float) * k * n);
	float *c1 = malloc(sizeof(float) * m * n), *c2 = malloc(sizeof(float) * m * n);
	fl_test_fill_uniform(a, (size_t)m * k, 1, -1, 1);
	fl_test_fill_uniform(b, (size_t)k * n, 2, -1, 1);
	for (int ta = 0; ta < 2; ta++) {
		for (int tb = 0; tb < 2; tb++) {
			int lda = ta ? m : k, ldb = tb ? k : n;
			fl_test_fill_uniform(c1, (size_t)m * n, 3, -1, 1);
			fl_test_fill_uniform(c2, (size_t)m * n, 3, -1, 1);
			fl_blas_sgemm(ta, tb, m, n, k, 0.7f, a, lda, b, ldb, 0.3f, c1, n);
			fl_blas_sgemm_ref(ta, tb, m, n, k, 0.7f, a, lda, b, ldb, 0.3f, c2, n);
			FL_CHECK_ARRAY_NEAR(c1, c2, (size_t)m * n, 1e-5, 1e-6);
		}
	}
	free(a);
	free(b);
	free(c1);
	free(c2);
}

int main(void)
{
	FL_RUN(test_sgemm_transposes);
	return fl_test_main_end();
}
