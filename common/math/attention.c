/* attention.c - the multi-head self-attention core (no mask, no
 * projections): forward and backward over (B, T, D) rows, one (T, T) block
 * of probabilities at a time. Each head is a strided view (leading dimension
 * D) of q, k, v and o handed to fl_blas_sgemm; nothing is copied out.
 * Backward recomputes the probabilities with forward's own code, so the
 * scratch is the caller's work buffer of fl_attention_work_floats(T) floats.
 * Softmax exponentials run 4 lanes wide (vmath.h).
 * The naive twins are in layers_seq_ref.c; shapes in layers.h.
 */
#include "layers.h"

#include "blas.h"
#include "vmath.h"

#include <assert.h>
#include <math.h>

size_t fl_attention_work_floats(int tokens)
{
	assert(tokens >= 0);
	return 2 * (size_t)tokens * (size_t)tokens;
}

/* Softmax of the n floats at r in place: max subtraction, the max, the
 * exponentials (vmath.h) and their float sum 4 lanes at a time. */
static void softmax_row(float *r, int n)
{
	int n4 = n & ~3;
	float mx = r[0];
	if (n4) {
		v4f m4 = v4_load(r, 4);
		for (int j = 4; j < n4; j += 4) {
			v4f v = v4_load(r + j, 4);
			m4 = v4_select(v > m4, v, m4);
		}
		for (int l = 0; l < 4; l++)
			mx = m4[l] > mx ? m4[l] : mx;
	}
	for (int j = n4; j < n; j++)
		mx = r[j] > mx ? r[j] : mx;
	v4f s4 = {0};
	for (int j = 0; j < n4; j += 4) {
		v4f e = v4_exp_nonpositive(v4_load(r + j, 4) - mx);
		v4_store(r + j, e, 4);
		s4 += e;
	}
	float s = (s4[0] + s4[1]) + (s4[2] + s4[3]);
	if (n4 < n) {
		v4f e = v4_exp_nonpositive(v4_load(r + n4, (size_t)(n - n4)) - mx);
		v4_store(r + n4, e, (size_t)(n - n4));
		for (int l = 0; l < n - n4; l++)
			s += e[l];
	}
	v4_scale(r, 1.0f / s, (size_t)n);
}

/* p (T, T) = softmax(q_h k_h^T * scale) row by row; q_h, k_h are (T, hd)
 * views with leading dimension ld. */
static void attention_probs(float *p, const float *qh, const float *kh, int tokens, int hd, int ld,
			    float scale)
{
	fl_blas_sgemm(0, 1, tokens, tokens, hd, scale, qh, ld, kh, ld, 0.0f, p, tokens);
	for (int i = 0; i < tokens; i++)
		softmax_row(p + (size_t)i * tokens, tokens);
}

/* q, k, v (B, T, D) -> o (B, T, D); work: T * T floats used */
void fl_attention_forward(float *o, float *work, const float *q, const float *k, const float *v,
			  int batch, int tokens, int dim, int heads)
{
	assert(batch >= 0 && tokens >= 1 && heads >= 1 && dim % heads == 0);
	int hd = dim / heads;
	float scale = (float)(1.0 / sqrt((double)hd));
	for (int n = 0; n < batch; n++) {
		for (int h = 0; h < heads; h++) {
			size_t off = (size_t)n * tokens * dim + (size_t)h * hd;
			attention_probs(work, q + off, k + off, tokens, hd, dim, scale);
			/* o_h (T, hd) = P (T, T) v_h (T, hd) */
			fl_blas_sgemm(0, 0, tokens, hd, tokens, 1.0f, work, tokens, v + off, dim,
				      0.0f, o + off, dim);
		}
	}
}

/* dP (T, T) -> dS = P * (dP - rowsum(P * dP)), the gradient of the scaled
 * scores (before the scale), in place over dp; the row sums in float, 4
 * lanes wide. */
static void softmax_backward_rows(float *dp, const float *p, int tokens)
{
	for (int i = 0; i < tokens; i++) {
		const float *pr = p + (size_t)i * tokens;
		float *dr = dp + (size_t)i * tokens;
		v4f c4 = {0};
		for (int j = 0; j < tokens; j += 4) {
			size_t k = tokens - j < 4 ? (size_t)(tokens - j) : 4;
			c4 += v4_load(pr + j, k) * v4_load(dr + j, k);
		}
		float cf = (c4[0] + c4[1]) + (c4[2] + c4[3]);
		for (int j = 0; j < tokens; j += 4) {
			size_t k = tokens - j < 4 ? (size_t)(tokens - j) : 4;
			v4_store(dr + j, v4_load(pr + j, k) * (v4_load(dr + j, k) - cf), k);
		}
	}
}

/* dout, q, k, v (B, T, D) -> dq, dk, dv (B, T, D) +=; work: 2 T^2 floats */
void fl_attention_backward(float *dq, float *dk, float *dv, float *work, const float *dout,
			   const float *q, const float *k, const float *v, int batch, int tokens,
			   int dim, int heads)
{
	assert(batch >= 0 && tokens >= 1 && heads >= 1 && dim % heads == 0);
	if (!dq && !dk && !dv)
		return;
	int hd = dim / heads;
	float scale = (float)(1.0 / sqrt((double)hd));
	float *p = work, *dp = work + (size_t)tokens * tokens;
	for (int n = 0; n < batch; n++) {
		for (int h = 0; h < heads; h++) {
			size_t off = (size_t)n * tokens * dim + (size_t)h * hd;
			const float *qh = q + off, *kh = k + off, *go = dout + off;
			attention_probs(p, qh, kh, tokens, hd, dim, scale);
			/* dv_h (T, hd) += P^T (T, T) dout_h (T, hd) */
			if (dv)
				fl_blas_sgemm(1, 0, tokens, hd, tokens, 1.0f, p, tokens, go, dim,
					      1.0f, dv + off, dim);
			if (!dq && !dk)
				continue;
			/* dP (T, T) = dout_h (T, hd) v_h^T (hd, T) */
			fl_blas_sgemm(0, 1, tokens, tokens, hd, 1.0f, go, dim, v + off, dim, 0.0f,
				      dp, tokens);
			softmax_backward_rows(dp, p, tokens);
			/* dq_h += scale dS k_h;  dk_h += scale dS^T q_h */
			if (dq)
				fl_blas_sgemm(0, 0, tokens, hd, tokens, scale, dp, tokens, kh, dim,
					      1.0f, dq + off, dim);
			if (dk)
				fl_blas_sgemm(1, 0, tokens, hd, tokens, scale, dp, tokens, qh, dim,
					      1.0f, dk + off, dim);
		}
	}
}
