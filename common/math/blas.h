/* blas.h - the only door to OpenBLAS. Row-major single precision.
 *
 * fl_blas_sgemm computes C = alpha * op(A) * op(B) + beta * C where op(X) is X
 * or its transpose (trans_a / trans_b non-zero). Sizes: op(A) is m x k, op(B)
 * is k x n, C is m x n; lda/ldb/ldc are row strides of the stored matrices.
 * fl_blas_sgemm_ref is its naive loop twin (double accumulation) used by the
 * tests to check every BLAS path. No other file includes cblas.h.
 */
#ifndef FL_BLAS_H
#define FL_BLAS_H

void fl_blas_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a,
		   int lda, const float *b, int ldb, float beta, float *c, int ldc);
void fl_blas_sgemm_ref(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a,
		       int lda, const float *b, int ldb, float beta, float *c, int ldc);

/* Threads OpenBLAS may use inside one call (>= 1). Process-wide; set it once
 * at start-up, or from the one thread that owns numerics. */
void fl_blas_set_threads(int n);
int fl_blas_get_threads(void);

/* Threads a parallel loop of the numerics (an OpenMP region) may use: the
 * count last given to fl_blas_set_threads (1 before any call). Loops split
 * work statically, so their results do not depend on it. */
int fl_par_threads(void);

#endif
