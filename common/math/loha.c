/* loha.c - LoHa / FedPara composed weights and factor gradients through
 * BLAS: sizes, the blocked linear path, the Tucker (effective conv2d) path
 * and the plain low-rank baseline.
 *
 * Both forms reduce to one row-blocked engine: a pair k gives
 * P_k = op(a_k) @ b_k (m x n) where, in the linear form, a_k = hada_wk_a
 * (m x r) and b_k = hada_wk_b (r x n); in the Tucker form a_k = hada_wk_a^T
 * (stored r x O, used transposed) and b_k = U_k (r x I*K1*K2), the core
 * contracted with hada_wk_b. The engine computes P1 and P2 for one block of
 * rows at a time, so the two full m x n products never exist together.
 *
 * This file does not allocate, log or draw random numbers; the naive twins
 * live in loha_ref.c, rank / init / dropout / merge helpers in loha_init.c.
 */
#include "loha.h"

#include "blas.h"

/* Rows per block: about FL_LOHA_BLOCK_TARGET floats per block buffer (two
 * buffers alive), clamped to [BLOCK_MIN, BLOCK_MAX] rows and to m. Tuned
 * with fl-bench on 4096 x 4096 r64 (128-row blocks): 64-row blocks make the
 * dw_b products (inner dimension = block rows) slower, 256 rows gained
 * nothing measurable on one thread and doubles the work buffer. */
#ifndef FL_LOHA_BLOCK_TARGET
#define FL_LOHA_BLOCK_TARGET (512L * 1024L)
#endif
#ifndef FL_LOHA_BLOCK_MIN
#define FL_LOHA_BLOCK_MIN 32L
#endif
#ifndef FL_LOHA_BLOCK_MAX
#define FL_LOHA_BLOCK_MAX 256L
#endif

/* m = rows of the matrix view, n = columns (in*k1*k2 in both forms). */
static long loha_rows(const struct fl_loha_dims *d)
{
	return d->out;
}

static long loha_cols(const struct fl_loha_dims *d)
{
	return (long)d->in * d->k1 * d->k2;
}

static long loha_block_rows(long m, long n)
{
	long mb = FL_LOHA_BLOCK_TARGET / (n > 0 ? n : 1);
	if (mb < FL_LOHA_BLOCK_MIN)
		mb = FL_LOHA_BLOCK_MIN;
	if (mb > FL_LOHA_BLOCK_MAX)
		mb = FL_LOHA_BLOCK_MAX;
	if (mb > m)
		mb = m;
	return mb < 1 ? 1 : mb;
}

size_t fl_loha_w_a_floats(const struct fl_loha_dims *d)
{
	return (size_t)d->out * (size_t)d->r;
}

size_t fl_loha_w_b_floats(const struct fl_loha_dims *d)
{
	if (d->form == FL_LOHA_FORM_TUCKER)
		return (size_t)d->r * (size_t)d->in;
	return (size_t)d->r * (size_t)loha_cols(d);
}

size_t fl_loha_t_floats(const struct fl_loha_dims *d)
{
	if (d->form != FL_LOHA_FORM_TUCKER)
		return 0;
	return (size_t)d->r * (size_t)d->r * (size_t)d->k1 * (size_t)d->k2;
}

size_t fl_loha_param_count(const struct fl_loha_dims *d)
{
	return 2 * (fl_loha_w_a_floats(d) + fl_loha_w_b_floats(d) + fl_loha_t_floats(d));
}

struct fl_loha_factors fl_loha_factors_packed(const struct fl_loha_dims *d, float *p)
{
	size_t na = fl_loha_w_a_floats(d), nb = fl_loha_w_b_floats(d), nt = fl_loha_t_floats(d);
	struct fl_loha_factors f = {p, p + na, p + na + nb, p + 2 * na + nb, NULL, NULL};
	if (nt) {
		f.t1 = p + 2 * (na + nb);
		f.t2 = f.t1 + nt;
	}
	return f;
}

size_t fl_loha_dense_count(const struct fl_loha_dims *d)
{
	return (size_t)d->out * (size_t)loha_cols(d);
}

long fl_loha_rank_bound(const struct fl_loha_dims *d, enum fl_loha_mode mode)
{
	long r = d->r, m = loha_rows(d), n = loha_cols(d);
	long b = r * r + (mode == FL_LOHA_MODE_PFEDPARA ? r : 0);
	if (b > m)
		b = m;
	if (b > n)
		b = n;
	return b;
}

/* Work layout: [U1 | U2 | dU1 | dU2] (Tucker only, r x n each), then two
 * block buffers of mb x n. Forward uses the same layout (dU unused). */
size_t fl_loha_work_floats(const struct fl_loha_dims *d)
{
	long m = loha_rows(d), n = loha_cols(d);
	size_t blk = 2 * (size_t)loha_block_rows(m, n) * (size_t)n;
	if (d->form == FL_LOHA_FORM_TUCKER)
		blk += 4 * (size_t)d->r * (size_t)n;
	return blk;
}

/* One factor pair as the engine sees it: op(a) is m x r, b is r x n.
 * trans = 0: a is m x r row-major (lda = r), its gradient likewise.
 * trans = 1: a is stored r x m (lda = m) and used transposed. */
struct loha_pair {
	const float *a, *b;
	float *ga, *gb; /* gradients (backward only) */
	int trans;
};

/* P_blk (mb x n) = op(a)[i0 : i0+mb, :] @ b */
static void pair_block(float *p, const struct loha_pair *q, long i0, long mb, long m, long n, int r)
{
	if (q->trans)
		/* a stored r x m: rows i0.. of a^T are columns i0.. of a */
		fl_blas_sgemm(1, 0, (int)mb, (int)n, r, 1.0f, q->a + i0, (int)m, q->b, (int)n, 0.0f,
			      p, (int)n);
	else
		fl_blas_sgemm(0, 0, (int)mb, (int)n, r, 1.0f, q->a + i0 * r, r, q->b, (int)n, 0.0f,
			      p, (int)n);
}

/* Gradients of one pair from T = dL/dP for rows i0..i0+mb:
 *   d op(a)[blk] += T @ b^T      (mb x r)
 *   d b          += op(a)[blk]^T @ T   (r x n) */
static void pair_grad_block(const struct loha_pair *q, const float *t, long i0, long mb, long m,
			    long n, int r)
{
	if (q->trans) {
		/* d a (r x m), columns blk: += b (r x n) @ T^T (n x mb) */
		fl_blas_sgemm(0, 1, r, (int)mb, (int)n, 1.0f, q->b, (int)n, t, (int)n, 1.0f,
			      q->ga + i0, (int)m);
		/* op(a)[blk]^T = a[:, blk] (r x mb), stored with lda = m */
		fl_blas_sgemm(0, 0, r, (int)n, (int)mb, 1.0f, q->a + i0, (int)m, t, (int)n, 1.0f,
			      q->gb, (int)n);
	} else {
		/* T (mb x n) @ b^T (n x r) */
		fl_blas_sgemm(0, 1, (int)mb, r, (int)n, 1.0f, t, (int)n, q->b, (int)n, 1.0f,
			      q->ga + i0 * r, r);
		/* a[blk]^T (r x mb) @ T (mb x n) */
		fl_blas_sgemm(1, 0, r, (int)n, (int)mb, 1.0f, q->a + i0 * r, r, t, (int)n, 1.0f,
			      q->gb, (int)n);
	}
}

/* The elementwise steps. Written 8 lanes at a time so that -O2 (whose
 * loop vectoriser refuses loops that need a scalar tail) vectorises the
 * body as a straight-line block; restrict rules out aliasing. */
#define FL_LOHA_LANES 8

static void ew_forward(float *restrict w, const float *restrict x, const float *restrict y, long e,
		       float s, float c)
{
	long k = 0;
	for (; k + FL_LOHA_LANES <= e; k += FL_LOHA_LANES)
		for (int u = 0; u < FL_LOHA_LANES; u++)
			w[k + u] = s * x[k + u] * (y[k + u] + c);
	for (; k < e; k++)
		w[k] = s * x[k] * (y[k] + c);
}

/* x = P1 -> T1 = s G ⊙ (P2 + c);  y = P2 -> T2 = s G ⊙ P1 */
static void ew_backward(float *restrict x, float *restrict y, const float *restrict g, long e,
			float s, float c)
{
	long k = 0;
	for (; k + FL_LOHA_LANES <= e; k += FL_LOHA_LANES)
		for (int u = 0; u < FL_LOHA_LANES; u++) {
			float sg = s * g[k + u], p1 = x[k + u], p2 = y[k + u];
			x[k + u] = sg * (p2 + c);
			y[k + u] = sg * p1;
		}
	for (; k < e; k++) {
		float sg = s * g[k], p1 = x[k], p2 = y[k];
		x[k] = sg * (p2 + c);
		y[k] = sg * p1;
	}
}

/* Block by block, P1 and P2 recomputed in work. Forward (g NULL):
 * w (m x n) = s * P1 ⊙ (P2 + c), c = 1 for pFedPara. Backward (w NULL):
 * T1 = s G ⊙ (P2 + c) overwrites P1's buffer and T2 = s G ⊙ P1 overwrites
 * P2's; then the four gradient products. */
static void engine_blocks(float *w, float *work, const float *g, const struct loha_pair *q1,
			  const struct loha_pair *q2, long m, long n, int r, float s, float c)
{
	long mbmax = loha_block_rows(m, n);
	float *x = work, *y = work + mbmax * n;
	for (long i0 = 0; i0 < m; i0 += mbmax) {
		long mb = m - i0 < mbmax ? m - i0 : mbmax;
		pair_block(x, q1, i0, mb, m, n, r);
		pair_block(y, q2, i0, mb, m, n, r);
		if (!g) {
			ew_forward(w + i0 * n, x, y, mb * n, s, c);
			continue;
		}
		ew_backward(x, y, g + i0 * n, mb * n, s, c);
		pair_grad_block(q1, x, i0, mb, m, n, r);
		pair_grad_block(q2, y, i0, mb, m, n, r);
	}
}

/* Tucker core contraction, kk = K1*K2, I = in, N = I*kk:
 *   U[i] (I x kk) = B^T (I x r) @ t[i] (r x kk)   for i < r, U is r x N. */
static void tucker_u(float *u, const float *t, const float *b, int r, int in, int kk)
{
	long nn = (long)in * kk;
	for (int i = 0; i < r; i++)
		fl_blas_sgemm(1, 0, in, kk, r, 1.0f, b, in, t + (long)i * r * kk, kk, 0.0f,
			      u + i * nn, kk);
}

/* From dU (r x N): dt[i] += B @ dU[i];  dB += sum_i t[i] @ dU[i]^T. */
static void tucker_u_backward(float *gt, float *gb, const float *du, const float *t, const float *b,
			      int r, int in, int kk)
{
	long nn = (long)in * kk;
	for (int i = 0; i < r; i++) {
		fl_blas_sgemm(0, 0, r, kk, in, 1.0f, b, in, du + i * nn, kk, 1.0f,
			      gt + (long)i * r * kk, kk);
		fl_blas_sgemm(0, 1, r, in, kk, 1.0f, t + (long)i * r * kk, kk, du + i * nn, kk,
			      1.0f, gb, in);
	}
}

static float mode_offset(enum fl_loha_mode mode)
{
	return mode == FL_LOHA_MODE_PFEDPARA ? 1.0f : 0.0f;
}

/* w (O, I, K1, K2) viewed as m x n, m = O, n = I*K1*K2. Forward: w = the
 * weight (grad and dw NULL); backward: grad += the factor gradients of
 * dL/dw = dw (w NULL). The Tucker form goes through U = T x B per pair
 * (work: U1, U2, dU1, dU2, then the blocks). */
static void loha_pass(float *w, struct fl_loha_factors *grad, float *work, const float *dw,
		      const struct fl_loha_factors *f, const struct fl_loha_dims *d, float scale,
		      enum fl_loha_mode mode)
{
	long m = loha_rows(d), n = loha_cols(d);
	int r = d->r;
	if (m <= 0 || n <= 0)
		return;
	if (d->form == FL_LOHA_FORM_TUCKER) {
		int kk = d->k1 * d->k2;
		float *u1 = work, *u2 = u1 + (long)r * n;
		float *du1 = u2 + (long)r * n, *du2 = du1 + (long)r * n;
		float *blk = du2 + (long)r * n;
		tucker_u(u1, f->t1, f->w1b, r, d->in, kk);
		tucker_u(u2, f->t2, f->w2b, r, d->in, kk);
		if (grad)
			for (long k = 0; k < 2L * r * n; k++)
				du1[k] = 0.0f;
		struct loha_pair q1 = {f->w1a, u1, grad ? grad->w1a : NULL, grad ? du1 : NULL, 1};
		struct loha_pair q2 = {f->w2a, u2, grad ? grad->w2a : NULL, grad ? du2 : NULL, 1};
		engine_blocks(w, blk, dw, &q1, &q2, m, n, r, scale, mode_offset(mode));
		if (grad) {
			tucker_u_backward(grad->t1, grad->w1b, du1, f->t1, f->w1b, r, d->in, kk);
			tucker_u_backward(grad->t2, grad->w2b, du2, f->t2, f->w2b, r, d->in, kk);
		}
	} else {
		struct loha_pair q1 = {f->w1a, f->w1b, grad ? grad->w1a : NULL,
				       grad ? grad->w1b : NULL, 0};
		struct loha_pair q2 = {f->w2a, f->w2b, grad ? grad->w2a : NULL,
				       grad ? grad->w2b : NULL, 0};
		engine_blocks(w, work, dw, &q1, &q2, m, n, r, scale, mode_offset(mode));
	}
}

void fl_loha_forward(float *w, float *work, const struct fl_loha_factors *f,
		     const struct fl_loha_dims *d, float scale, enum fl_loha_mode mode)
{
	loha_pass(w, NULL, work, NULL, f, d, scale, mode);
}

void fl_loha_backward(struct fl_loha_factors *grad, float *work, const float *dw,
		      const struct fl_loha_factors *f, const struct fl_loha_dims *d, float scale,
		      enum fl_loha_mode mode)
{
	loha_pass(NULL, grad, work, dw, f, d, scale, mode);
}

/* ---- plain low rank: W (m x n) = s * a (m x k) @ b (k x n) ---- */
void fl_lowrank_forward(float *w, const float *a, const float *b, int m, int n, int k, float scale)
{
	fl_blas_sgemm(0, 0, m, n, k, scale, a, k, b, n, 0.0f, w, n);
}

/* d a += s * G @ b^T (m x k);  d b += s * a^T @ G (k x n). */
void fl_lowrank_backward(float *grad_a, float *grad_b, const float *dw, const float *a,
			 const float *b, int m, int n, int k, float scale)
{
	fl_blas_sgemm(0, 1, m, k, n, scale, dw, n, b, n, 1.0f, grad_a, k);
	fl_blas_sgemm(1, 0, k, n, m, scale, a, k, dw, n, 1.0f, grad_b, n);
}
