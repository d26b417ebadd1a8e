/* blas.c - thin row-major wrappers over OpenBLAS and their naive twins. */
#include "blas.h"

#include <cblas.h>

void fl_blas_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a,
		   int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
	if (m <= 0 || n <= 0)
		return;
	if (k <= 0) {
		/* BLAS leaves C untouched when k == 0 only if beta == 1; be explicit. */
		for (int i = 0; i < m; i++)
			for (int j = 0; j < n; j++)
				c[(long)i * ldc + j] = beta == 0.0f ? 0.0f
								    : beta * c[(long)i * ldc + j];
		return;
	}
	cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
		    trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c,
		    ldc);
}

void fl_blas_sgemm_ref(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a,
		       int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
	for (int i = 0; i < m; i++) {
		for (int j = 0; j < n; j++) {
			double acc = 0.0;
			for (int p = 0; p < k; p++) {
				float av = trans_a ? a[(long)p * lda + i] : a[(long)i * lda + p];
				float bv = trans_b ? b[(long)j * ldb + p] : b[(long)p * ldb + j];
				acc += (double)av * bv;
			}
			float *cv = &c[(long)i * ldc + j];
			*cv = (float)(alpha * acc + (beta == 0.0f ? 0.0 : (double)beta * *cv));
		}
	}
}

/* Written by fl_blas_set_threads only (the thread that owns numerics). */
static int par_threads = 1;

void fl_blas_set_threads(int n)
{
	par_threads = n < 1 ? 1 : n;
	openblas_set_num_threads(par_threads);
}

int fl_par_threads(void)
{
	return par_threads;
}

int fl_blas_get_threads(void)
{
	return openblas_get_num_threads();
}
