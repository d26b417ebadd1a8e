/* layers_seq_ref.c - naive twins of the LayerNorm, GroupNorm and attention
 * kernels for the tests: plain loops in double, two-pass statistics, no
 * caches and no work buffer (attention recomputes every softmax row it
 * needs, which costs O(T^3 hd^2) in backward: small sizes only). Not for
 * training; the kernels are in layers_seq.c and attention.c.
 */
#include "layers.h"

#include <assert.h>
#include <math.h>

/* ---- Normalisation ------------------------------------------------------- */

/* Two-pass mean and 1 / sqrt(var + eps) of n floats. */
static void stats_ref(const float *x, size_t n, float eps, double *mean, double *rstd)
{
	double s = 0.0, v = 0.0;
	for (size_t i = 0; i < n; i++)
		s += x[i];
	*mean = s / (double)n;
	for (size_t i = 0; i < n; i++)
		v += (x[i] - *mean) * (x[i] - *mean);
	*rstd = 1.0 / sqrt(v / (double)n + eps);
}

/* One normalised block of n = nw * per values; value i uses w[i / per]. */
static void norm_forward_ref(float *y, const float *x, const float *w, const float *b, int nw,
			     int per, float eps)
{
	size_t n = (size_t)nw * per;
	double m, rs;
	stats_ref(x, n, eps, &m, &rs);
	for (size_t i = 0; i < n; i++)
		y[i] = (float)((x[i] - m) * rs * w[i / per] + b[i / per]);
}

static void norm_backward_ref(float *dx, float *dw, float *db, const float *dy, const float *x,
			      const float *w, int nw, int per, float eps)
{
	size_t n = (size_t)nw * per;
	double m, rs, sg = 0.0, sgx = 0.0;
	stats_ref(x, n, eps, &m, &rs);
	for (int c = 0; c < nw; c++) {
		double s = 0.0, sx = 0.0;
		for (int i = c * per; i < (c + 1) * per; i++) {
			s += dy[i];
			sx += dy[i] * (x[i] - m) * rs;
		}
		sg += s * w[c], sgx += sx * w[c];
		if (dw)
			dw[c] = (float)(dw[c] + sx);
		if (db)
			db[c] = (float)(db[c] + s);
	}
	if (!dx)
		return;
	for (size_t i = 0; i < n; i++) {
		double xh = (x[i] - m) * rs;
		dx[i] = (float)(dx[i] + rs * ((double)dy[i] * w[i / per] - sg / n - xh * sgx / n));
	}
}

void fl_layernorm_forward_ref(float *y, const float *x, const float *w, const float *b, int rows,
			      int dim, float eps)
{
	for (int r = 0; r < rows; r++)
		norm_forward_ref(y + (size_t)r * dim, x + (size_t)r * dim, w, b, dim, 1, eps);
}

void fl_layernorm_backward_ref(float *dx, float *dw, float *db, const float *dy, const float *x,
			       const float *w, int rows, int dim, float eps)
{
	for (int r = 0; r < rows; r++) {
		size_t o = (size_t)r * dim;
		norm_backward_ref(dx ? dx + o : NULL, dw, db, dy + o, x + o, w, dim, 1, eps);
	}
}

void fl_groupnorm_forward_ref(float *y, const float *x, const float *w, const float *b, int batch,
			      int channels, int hw, int groups, float eps)
{
	assert(groups >= 1 && channels % groups == 0);
	int cg = channels / groups;
	for (int n = 0; n < batch; n++)
		for (int g = 0; g < groups; g++) {
			size_t o = ((size_t)n * channels + (size_t)g * cg) * hw;
			norm_forward_ref(y + o, x + o, w + g * cg, b + g * cg, cg, hw, eps);
		}
}

void fl_groupnorm_backward_ref(float *dx, float *dw, float *db, const float *dy, const float *x,
			       const float *w, int batch, int channels, int hw, int groups,
			       float eps)
{
	assert(groups >= 1 && channels % groups == 0);
	int cg = channels / groups;
	for (int n = 0; n < batch; n++)
		for (int g = 0; g < groups; g++) {
			size_t o = ((size_t)n * channels + (size_t)g * cg) * hw;
			norm_backward_ref(dx ? dx + o : NULL, dw ? dw + g * cg : NULL,
					  db ? db + g * cg : NULL, dy + o, x + o, w + g * cg, cg,
					  hw, eps);
		}
}

/* ---- Attention ----------------------------------------------------------- */

/* One (sample, head): q, k, v, dout are (T, hd) views, leading dimension ld. */
struct head_ref {
	const float *q, *k, *v, *dout;
	int tokens, hd, ld;
	double scale;
};

static double dot_ref(const float *a, const float *b, int n)
{
	double s = 0.0;
	for (int e = 0; e < n; e++)
		s += (double)a[e] * b[e];
	return s;
}

static double score_ref(const struct head_ref *h, int i, int j)
{
	return h->scale * dot_ref(h->q + (size_t)i * h->ld, h->k + (size_t)j * h->ld, h->hd);
}

/* Softmax row i: its max score and sum of exponentials. */
static void row_ref(const struct head_ref *h, int i, double *mx, double *z)
{
	*mx = score_ref(h, i, 0);
	for (int j = 1; j < h->tokens; j++)
		*mx = fmax(*mx, score_ref(h, i, j));
	*z = 0.0;
	for (int j = 0; j < h->tokens; j++)
		*z += exp(score_ref(h, i, j) - *mx);
}

static double prob_ref(const struct head_ref *h, int i, int j)
{
	double mx, z;
	row_ref(h, i, &mx, &z);
	return exp(score_ref(h, i, j) - mx) / z;
}

/* The gradient of score (i, j) before the scale: P_ij (dP_ij - sum_l P_il dP_il). */
static double dscore_ref(const struct head_ref *h, int i, int j)
{
	const float *g = h->dout + (size_t)i * h->ld;
	double c = 0.0;
	for (int l = 0; l < h->tokens; l++)
		c += prob_ref(h, i, l) * dot_ref(g, h->v + (size_t)l * h->ld, h->hd);
	double dp = dot_ref(g, h->v + (size_t)j * h->ld, h->hd);
	return prob_ref(h, i, j) * (dp - c);
}

static struct head_ref head_at(const float *q, const float *k, const float *v, const float *dout,
			       int n, int hh, int tokens, int dim, int heads)
{
	int hd = dim / heads;
	size_t off = (size_t)n * tokens * dim + (size_t)hh * hd;
	struct head_ref h = {q + off, k + off, v + off, dout ? dout + off : NULL,
			     tokens,  hd,      dim,     1.0 / sqrt((double)hd)};
	return h;
}

void fl_attention_forward_ref(float *o, const float *q, const float *k, const float *v, int batch,
			      int tokens, int dim, int heads)
{
	assert(heads >= 1 && dim % heads == 0);
	for (int n = 0; n < batch; n++)
		for (int hh = 0; hh < heads; hh++) {
			struct head_ref h = head_at(q, k, v, NULL, n, hh, tokens, dim, heads);
			float *oh = o + (h.q - q);
			for (int i = 0; i < tokens; i++)
				for (int e = 0; e < h.hd; e++) {
					double acc = 0.0;
					for (int j = 0; j < tokens; j++)
						acc += prob_ref(&h, i, j) *
						       h.v[(size_t)j * dim + e];
					oh[(size_t)i * dim + e] = (float)acc;
				}
		}
}

/* dq, dk, dv of one head, each (T, hd) with leading dimension ld, or NULL. */
static void head_backward_ref(float *dq, float *dk, float *dv, const struct head_ref *h)
{
	int ld = h->ld;
	for (int i = 0; i < h->tokens; i++)
		for (int e = 0; e < h->hd; e++) {
			double aq = 0.0, ak = 0.0, av = 0.0;
			for (int j = 0; j < h->tokens; j++) {
				if (dq)
					aq += dscore_ref(h, i, j) * h->k[(size_t)j * ld + e];
				if (dk)
					ak += dscore_ref(h, j, i) * h->q[(size_t)j * ld + e];
				if (dv)
					av += prob_ref(h, j, i) * h->dout[(size_t)j * ld + e];
			}
			size_t o = (size_t)i * ld + e;
			if (dq)
				dq[o] = (float)(dq[o] + h->scale * aq);
			if (dk)
				dk[o] = (float)(dk[o] + h->scale * ak);
			if (dv)
				dv[o] = (float)(dv[o] + av);
		}
}

void fl_attention_backward_ref(float *dq, float *dk, float *dv, const float *dout, const float *q,
			       const float *k, const float *v, int batch, int tokens, int dim,
			       int heads)
{
	assert(heads >= 1 && dim % heads == 0);
	for (int n = 0; n < batch; n++)
		for (int hh = 0; hh < heads; hh++) {
			struct head_ref h = head_at(q, k, v, dout, n, hh, tokens, dim, heads);
			size_t off = (size_t)(h.q - q);
			head_backward_ref(dq ? dq + off : NULL, dk ? dk + off : NULL,
					  dv ? dv + off : NULL, &h);
		}
}
