/* layers_seq.c - LayerNorm, GroupNorm, Embedding, tokens, position and mean
 * over tokens kernels (shapes and conventions in layers.h). Normalisation
 * statistics are accumulated in double, one pass for the statistics and one
 * for the output; LayerNorm backward sums in float, 4 lanes wide
 * (vmath.h). Attention lives in attention.c, the naive twins in
 * layers_seq_ref.c; nothing here allocates, logs or reads globals.
 */
#include "layers.h"

#include "vmath.h"

#include <assert.h>
#include <math.h>
#include <string.h>

/* Mean and 1 / sqrt(var + eps) of the n floats at x, population variance,
 * in one pass of double sums (four independent pairs, so the additions
 * overlap). */
static void norm_stats(const float *x, size_t n, float eps, float *mean, float *rstd)
{
	double s[4] = {0}, ss[4] = {0};
	size_t i = 0;
	for (; i + 4 <= n; i += 4)
		for (int l = 0; l < 4; l++) {
			double v = x[i + l];
			s[l] += v;
			ss[l] += v * v;
		}
	for (; i < n; i++) {
		double v = x[i];
		s[0] += v;
		ss[0] += v * v;
	}
	double m = ((s[0] + s[1]) + (s[2] + s[3])) / (double)n;
	double var = ((ss[0] + ss[1]) + (ss[2] + ss[3])) / (double)n - m * m;
	if (var < 0.0)
		var = 0.0;
	*mean = (float)m;
	*rstd = (float)(1.0 / sqrt(var + (double)eps));
}

/* ---- LayerNorm ----------------------------------------------------------- */

/* x (rows, dim), w, b (dim) -> y (rows, dim), mean, rstd (rows) */
void fl_layernorm_forward(float *y, float *mean, float *rstd, const float *x, const float *w,
			  const float *b, int rows, int dim, float eps)
{
	assert(rows >= 0 && dim >= 1);
	for (int r = 0; r < rows; r++) {
		const float *xr = x + (size_t)r * dim;
		float *yr = y + (size_t)r * dim;
		float m, rs;
		norm_stats(xr, (size_t)dim, eps, &m, &rs);
		for (int i = 0; i < dim; i += 4) {
			size_t k = dim - i < 4 ? (size_t)(dim - i) : 4;
			v4f xh = (v4_load(xr + i, k) - m) * rs;
			v4_store(yr + i, xh * v4_load(w + i, k) + v4_load(b + i, k), k);
		}
		mean[r] = m;
		rstd[r] = rs;
	}
}

static inline float v4_sum(v4f v)
{
	return (v[0] + v[1]) + (v[2] + v[3]);
}

/* One row's sums of g = dy * w and of g * xhat (4 float lanes each), with
 * dw += dy * xhat and db += dy on the way; xhat = (x - m) rs. */
static void layernorm_row_sums(float *sg, float *sgx, float *dw, float *db, const float *gr,
			       const float *xr, const float *w, float m, float rs, int dim)
{
	v4f asg = {0}, asgx = {0};
	for (int i = 0; i < dim; i += 4) {
		size_t k = dim - i < 4 ? (size_t)(dim - i) : 4;
		v4f g4 = v4_load(gr + i, k), xh = (v4_load(xr + i, k) - m) * rs;
		v4f g = g4 * v4_load(w + i, k);
		asg += g;
		asgx += g * xh;
		if (dw)
			v4_store(dw + i, v4_load(dw + i, k) + g4 * xh, k);
		if (db)
			v4_store(db + i, v4_load(db + i, k) + g4, k);
	}
	*sg = v4_sum(asg);
	*sgx = v4_sum(asgx);
}

/* dy, x (rows, dim), mean, rstd (rows), w (dim) -> dx +=, dw +=, db +=.
 * The row sums are float, 4 lanes wide (the forward statistics are the
 * exact double ones). */
void fl_layernorm_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
			   const float *mean, const float *rstd, const float *w, int rows, int dim)
{
	assert(rows >= 0 && dim >= 1);
	for (int r = 0; r < rows; r++) {
		const float *xr = x + (size_t)r * dim, *gr = dy + (size_t)r * dim;
		float m = mean[r], rs = rstd[r], sg, sgx;
		layernorm_row_sums(&sg, &sgx, dw, db, gr, xr, w, m, rs, dim);
		if (!dx)
			continue;
		float *dr = dx + (size_t)r * dim;
		float a = sg / (float)dim, c = sgx / (float)dim;
		for (int i = 0; i < dim; i += 4) {
			size_t k = dim - i < 4 ? (size_t)(dim - i) : 4;
			v4f xh = (v4_load(xr + i, k) - m) * rs;
			v4f d = rs * (v4_load(gr + i, k) * v4_load(w + i, k) - a - xh * c);
			v4_store(dr + i, v4_load(dr + i, k) + d, k);
		}
	}
}

/* ---- GroupNorm ----------------------------------------------------------- */

/* x (B, C, HW), w, b (C) -> y (B, C, HW), mean, rstd (B * groups) */
void fl_groupnorm_forward(float *y, float *mean, float *rstd, const float *x, const float *w,
			  const float *b, int batch, int channels, int hw, int groups, float eps)
{
	assert(batch >= 0 && hw >= 1 && groups >= 1 && channels % groups == 0);
	int cg = channels / groups;
	for (int n = 0; n < batch; n++) {
		for (int g = 0; g < groups; g++) {
			size_t off = ((size_t)n * channels + (size_t)g * cg) * hw;
			float m, rs;
			norm_stats(x + off, (size_t)cg * hw, eps, &m, &rs);
			mean[n * groups + g] = m;
			rstd[n * groups + g] = rs;
			for (int c = g * cg; c < (g + 1) * cg; c++) {
				const float *xc = x + ((size_t)n * channels + c) * hw;
				float *yc = y + ((size_t)n * channels + c) * hw;
				float scale = rs * w[c], shift = b[c];
				for (int i = 0; i < hw; i++)
					yc[i] = (xc[i] - m) * scale + shift;
			}
		}
	}
}

/* The sums of one (sample, group) backward needs: per channel c of the group
 * sum dy and sum dy * xhat (added to db, dw), and over the group sum g and
 * sum g * xhat, g = dy * w. */
static void groupnorm_sums(double *sg, double *sgx, float *dw, float *db, const float *dy,
			   const float *x, const float *w, float m, float rs, int c0, int cg,
			   int hw)
{
	*sg = 0.0, *sgx = 0.0;
	for (int c = c0; c < c0 + cg; c++) {
		const float *xc = x + (size_t)(c - c0) * hw, *gc = dy + (size_t)(c - c0) * hw;
		double s = 0.0, sx = 0.0;
		for (int i = 0; i < hw; i++) {
			s += gc[i];
			sx += (double)gc[i] * ((xc[i] - m) * rs);
		}
		if (dw)
			dw[c] += (float)sx;
		if (db)
			db[c] += (float)s;
		*sg += s * w[c];
		*sgx += sx * w[c];
	}
}

/* dy, x (B, C, HW), mean, rstd (B * groups), w (C) -> dx +=, dw +=, db += */
void fl_groupnorm_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
			   const float *mean, const float *rstd, const float *w, int batch,
			   int channels, int hw, int groups)
{
	assert(batch >= 0 && hw >= 1 && groups >= 1 && channels % groups == 0);
	int cg = channels / groups;
	double cnt = (double)cg * hw;
	for (int n = 0; n < batch; n++) {
		for (int g = 0; g < groups; g++) {
			size_t off = ((size_t)n * channels + (size_t)g * cg) * hw;
			float m = mean[n * groups + g], rs = rstd[n * groups + g];
			double sg, sgx;
			groupnorm_sums(&sg, &sgx, dw, db, dy + off, x + off, w, m, rs, g * cg, cg,
				       hw);
			if (!dx)
				continue;
			float a = (float)(sg / cnt), k = (float)(sgx / cnt);
			for (int c = 0; c < cg; c++) {
				size_t o = off + (size_t)c * hw;
				float wc = w[g * cg + c];
				for (int i = 0; i < hw; i++) {
					float xh = (x[o + i] - m) * rs;
					dx[o + i] += rs * (dy[o + i] * wc - a - xh * k);
				}
			}
		}
	}
}

/* ---- Embedding ----------------------------------------------------------- */

/* The row index an id float holds. */
static size_t embedding_row(float id, int num)
{
	int r = (int)id;
	assert((float)r == id && r >= 0 && r < num);
	(void)num;
	return (size_t)r;
}

/* ids (n), w (num, dim) -> y (n, dim) */
void fl_embedding_forward(float *y, const float *ids, const float *w, int n, int num, int dim)
{
	assert(n >= 0 && dim >= 0);
	for (int i = 0; i < n; i++)
		memcpy(y + (size_t)i * dim, w + embedding_row(ids[i], num) * dim,
		       sizeof(float) * (size_t)dim);
}

/* dy (n, dim), ids (n) -> dw (num, dim) += */
void fl_embedding_backward(float *dw, const float *dy, const float *ids, int n, int num, int dim)
{
	assert(n >= 0 && dim >= 0);
	if (!dw)
		return;
	for (int i = 0; i < n; i++) {
		float *d = dw + embedding_row(ids[i], num) * dim;
		const float *g = dy + (size_t)i * dim;
		for (int j = 0; j < dim; j++)
			d[j] += g[j];
	}
}

/* ---- Tokens -------------------------------------------------------------- */

/* x (B, C, HW) -> y (B, HW, C) */
void fl_tokens_forward(float *y, const float *x, int batch, int channels, int hw)
{
	assert(batch >= 0 && channels >= 0 && hw >= 0);
	size_t plane = (size_t)channels * hw;
	for (int n = 0; n < batch; n++) {
		const float *xs = x + n * plane;
		float *ys = y + n * plane;
		for (int t = 0; t < hw; t++)
			for (int c = 0; c < channels; c++)
				ys[(size_t)t * channels + c] = xs[(size_t)c * hw + t];
	}
}

/* dy (B, HW, C) -> dx (B, C, HW) += */
void fl_tokens_backward(float *dx, const float *dy, int batch, int channels, int hw)
{
	assert(batch >= 0 && channels >= 0 && hw >= 0);
	if (!dx)
		return;
	size_t plane = (size_t)channels * hw;
	for (int n = 0; n < batch; n++) {
		float *ds = dx + n * plane;
		const float *gs = dy + n * plane;
		for (int c = 0; c < channels; c++)
			for (int t = 0; t < hw; t++)
				ds[(size_t)c * hw + t] += gs[(size_t)t * channels + c];
	}
}

/* ---- Position ------------------------------------------------------------ */

/* x (B, T, D), p (T, D) -> y (B, T, D); y may equal x */
void fl_position_forward(float *y, const float *x, const float *p, int batch, int tokens, int dim)
{
	assert(batch >= 0 && tokens >= 0 && dim >= 0);
	size_t plane = (size_t)tokens * dim;
	for (int n = 0; n < batch; n++) {
		const float *xs = x + n * plane;
		float *ys = y + n * plane;
		v4_add(ys, xs, p, plane);
	}
}

/* dy (B, T, D) -> dx (B, T, D) +=, dp (T, D) += */
void fl_position_backward(float *dx, float *dp, const float *dy, int batch, int tokens, int dim)
{
	assert(batch >= 0 && tokens >= 0 && dim >= 0);
	size_t plane = (size_t)tokens * dim;
	for (int n = 0; n < batch; n++) {
		const float *gs = dy + n * plane;
		if (dx) {
			float *ds = dx + n * plane;
			v4_add(ds, ds, gs, plane);
		}
		if (dp)
			v4_add(dp, dp, gs, plane);
	}
}

/* ---- Mean over tokens ---------------------------------------------------- */

/* x (B, T, D) -> y (B, D): row sums in float, vectorised along D */
void fl_mean_tokens_forward(float *y, const float *x, int batch, int tokens, int dim)
{
	assert(batch >= 0 && tokens >= 1 && dim >= 0);
	float inv = 1.0f / (float)tokens;
	for (int n = 0; n < batch; n++) {
		float *yr = y + (size_t)n * dim;
		const float *xs = x + (size_t)n * tokens * dim;
		memset(yr, 0, sizeof(float) * (size_t)dim);
		for (int t = 0; t < tokens; t++)
			for (int d = 0; d < dim; d++)
				yr[d] += xs[(size_t)t * dim + d];
		for (int d = 0; d < dim; d++)
			yr[d] *= inv;
	}
}

/* dy (B, D) -> dx (B, T, D) += dy / T */
void fl_mean_tokens_backward(float *dx, const float *dy, int batch, int tokens, int dim)
{
	assert(batch >= 0 && tokens >= 1 && dim >= 0);
	if (!dx)
		return;
	float inv = 1.0f / (float)tokens;
	for (int n = 0; n < batch; n++) {
		const float *g = dy + (size_t)n * dim;
		float *ds = dx + (size_t)n * tokens * dim;
		for (int t = 0; t < tokens; t++)
			for (int d = 0; d < dim; d++)
				ds[(size_t)t * dim + d] += g[d] * inv;
	}
}
