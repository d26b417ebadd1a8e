/* layers.c - Linear, ReLU, GELU, MaxPool2d, AvgPool2d, dropout and softmax
 * cross-entropy kernels, and the Linear and AvgPool2d naive twins. Conv2d
 * lives in conv.c. Shapes and conventions are
 * in layers.h; nothing here allocates, logs or reads globals.
 */
#include "layers.h"

#include "blas.h"
#include "errors.h"
#include "rng.h"
#include "vmath.h"

#include <assert.h>
#include <limits.h>
#include <math.h>
#include <string.h>

/* ---- Linear -------------------------------------------------------------- */

/* x (B, in), w (out, in), b (out) or NULL -> y (B, out) */
void fl_linear_forward(float *y, const float *x, const float *w, const float *b, int batch, int in,
		       int out)
{
	assert(batch >= 0 && in >= 0 && out >= 0);
	if (b) {
		for (int n = 0; n < batch; n++)
			memcpy(y + (size_t)n * out, b, sizeof(float) * (size_t)out);
	}
	/* y (B, out) = x (B, in) * w^T (in, out) [+ y]: w stored (out, in), transposed. */
	fl_blas_sgemm(0, 1, batch, out, in, 1.0f, x, in, w, in, b ? 1.0f : 0.0f, y, out);
}

/* dy (B, out), x (B, in), w (out, in) -> dx (B, in) +=, dw (out, in) +=, db (out) += */
void fl_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
			const float *w, int batch, int in, int out)
{
	assert(batch >= 0 && in >= 0 && out >= 0);
	if (batch == 0)
		return;
	/* dw (out, in) += dy^T (out, B) * x (B, in): dy stored (B, out), transposed. */
	if (dw)
		fl_blas_sgemm(1, 0, out, in, batch, 1.0f, dy, out, x, in, 1.0f, dw, in);
	if (db) {
		for (int n = 0; n < batch; n++)
			v4_add(db, db, dy + (size_t)n * out, (size_t)out);
	}
	/* dx (B, in) += dy (B, out) * w (out, in). */
	if (dx)
		fl_blas_sgemm(0, 0, batch, in, out, 1.0f, dy, out, w, in, 1.0f, dx, in);
}

void fl_linear_forward_ref(float *y, const float *x, const float *w, const float *b, int batch,
			   int in, int out)
{
	for (int n = 0; n < batch; n++) {
		for (int o = 0; o < out; o++) {
			double acc = b ? b[o] : 0.0;
			for (int i = 0; i < in; i++)
				acc += (double)x[(size_t)n * in + i] * w[(size_t)o * in + i];
			y[(size_t)n * out + o] = (float)acc;
		}
	}
}

/* g[p, i] += sum_k dy[p*ps + k*ks] * m[k, i] for p < np, i < in (k < nk,
 * in order, accumulated in double). */
static void ref_grad_rows(float *g, const float *dy, size_t ps, size_t ks, const float *m, int np,
			  int nk, int in)
{
	for (int p = 0; p < np; p++) {
		for (int i = 0; i < in; i++) {
			double acc = 0.0;
			for (int k = 0; k < nk; k++)
				acc += (double)dy[(size_t)p * ps + (size_t)k * ks] *
				       m[(size_t)k * in + i];
			g[(size_t)p * in + i] += (float)acc;
		}
	}
}

void fl_linear_backward_ref(float *dx, float *dw, float *db, const float *dy, const float *x,
			    const float *w, int batch, int in, int out)
{
	if (dw)
		ref_grad_rows(dw, dy, 1, (size_t)out, x, out, batch, in);
	if (db) {
		for (int o = 0; o < out; o++) {
			double acc = 0.0;
			for (int n = 0; n < batch; n++)
				acc += dy[(size_t)n * out + o];
			db[o] += (float)acc;
		}
	}
	if (dx)
		ref_grad_rows(dx, dy, (size_t)out, 1, w, batch, out, in);
}

/* ---- ReLU ---------------------------------------------------------------- */

/* x (n) -> y (n); y may equal x */
void fl_relu_forward(float *y, const float *x, size_t n)
{
	const v4f zero = {0};
	for (size_t i = 0; i < n; i += 4) {
		size_t k = n - i < 4 ? n - i : 4;
		v4f v = v4_load(x + i, k);
		v4_store(y + i, v4_select(v > zero, v, zero), k);
	}
}

/* y (n) the forward output, dy (n) -> dx (n) += */
void fl_relu_backward(float *dx, const float *y, const float *dy, size_t n)
{
	const v4f zero = {0};
	for (size_t i = 0; i < n; i += 4) {
		size_t k = n - i < 4 ? n - i : 4;
		v4f g = v4_select(v4_load(y + i, k) > zero, v4_load(dy + i, k), zero);
		v4_store(dx + i, v4_load(dx + i, k) + g, k);
	}
}

/* ---- MaxPool2d ----------------------------------------------------------- */

int fl_pool2d_out_h(const struct fl_pool2d_dims *d)
{
	return (d->in_h - d->k) / d->stride + 1;
}

int fl_pool2d_out_w(const struct fl_pool2d_dims *d)
{
	return (d->in_w - d->k) / d->stride + 1;
}

static int pool2d_dims_ok(const struct fl_pool2d_dims *d)
{
	if (d->batch < 1 || d->channels < 1 || d->in_h < 1 || d->in_w < 1 || d->k < 1 ||
	    d->stride < 1 || d->k > d->in_h || d->k > d->in_w)
		return 0;
	long long plane = (long long)d->in_h * d->in_w;
	return plane <= INT32_MAX && plane * d->channels * d->batch <= (long long)INT_MAX;
}

int fl_pool2d_dims_check(const struct fl_pool2d_dims *d)
{
	if (!pool2d_dims_ok(d))
		return fl_error_set(FL_EINVAL,
				    "pool2d: bad dims (batch %d, channels %d, input %dx%d, "
				    "kernel %d, stride %d)",
				    d->batch, d->channels, d->in_h, d->in_w, d->k, d->stride);
	return FL_OK;
}

/* x (B, C, H, W) -> y (B, C, OH, OW), idx (B, C, OH, OW) offsets in the (H, W) plane */
void fl_maxpool2d_forward(float *y, int32_t *idx, const float *x, const struct fl_pool2d_dims *d)
{
	assert(pool2d_dims_ok(d));
	int h = d->in_h, w = d->in_w, k = d->k, s = d->stride;
	int oh = fl_pool2d_out_h(d), ow = fl_pool2d_out_w(d);
	size_t planes = (size_t)d->batch * d->channels;
	for (size_t p = 0; p < planes; p++) {
		const float *xp = x + p * h * w;
		float *yp = y + p * oh * ow;
		int32_t *ip = idx + p * oh * ow;
		for (int i = 0; i < oh; i++) {
			for (int j = 0; j < ow; j++) {
				int best = i * s * w + j * s;
				float bv = xp[best];
				for (int u = 0; u < k; u++) {
					const float *row = xp + (i * s + u) * w + j * s;
					for (int v = 0; v < k; v++) {
						if (row[v] > bv || (isnan(row[v]) && !isnan(bv))) {
							bv = row[v];
							best = (i * s + u) * w + j * s + v;
						}
					}
				}
				yp[i * ow + j] = bv;
				ip[i * ow + j] = best;
			}
		}
	}
}

/* dy (B, C, OH, OW), idx from forward -> dx (B, C, H, W) += */
void fl_maxpool2d_backward(float *dx, const int32_t *idx, const float *dy,
			   const struct fl_pool2d_dims *d)
{
	assert(pool2d_dims_ok(d));
	size_t plane = (size_t)d->in_h * d->in_w;
	size_t oplane = (size_t)fl_pool2d_out_h(d) * fl_pool2d_out_w(d);
	size_t planes = (size_t)d->batch * d->channels;
	for (size_t p = 0; p < planes; p++) {
		float *dxp = dx + p * plane;
		const float *dyp = dy + p * oplane;
		const int32_t *ip = idx + p * oplane;
		for (size_t q = 0; q < oplane; q++) {
			assert(ip[q] >= 0 && (size_t)ip[q] < plane);
			dxp[ip[q]] += dyp[q];
		}
	}
}

/* ---- AvgPool2d ----------------------------------------------------------- */

/* Every window of an average pool, in output order: forward (dx NULL)
 * writes y = the window's mean of x; backward adds dy / (k*k) to each
 * element of the window in dx. */
static void avgpool_windows(float *y, float *dx, const float *x, const float *dy,
			    const struct fl_pool2d_dims *d)
{
	assert(pool2d_dims_ok(d));
	int h = d->in_h, w = d->in_w, k = d->k, s = d->stride;
	int oh = fl_pool2d_out_h(d), ow = fl_pool2d_out_w(d);
	float inv = 1.0f / (float)(k * k);
	size_t planes = (size_t)d->batch * d->channels, in = (size_t)h * w, out = (size_t)oh * ow;
	for (size_t p = 0; p < planes; p++) {
		for (int i = 0; i < oh; i++) {
			for (int j = 0; j < ow; j++) {
				size_t o = p * out + (size_t)i * ow + j;
				size_t at = p * in + (size_t)(i * s) * w + (size_t)j * s;
				float acc = 0.0f, g = dx ? dy[o] * inv : 0.0f;
				for (int u = 0; u < k; u++, at += (size_t)w)
					for (int v = 0; v < k; v++) {
						if (dx)
							dx[at + v] += g;
						else
							acc += x[at + v];
					}
				if (!dx)
					y[o] = acc * inv;
			}
		}
	}
}

void fl_avgpool2d_forward(float *y, const float *x, const struct fl_pool2d_dims *d)
{
	avgpool_windows(y, NULL, x, NULL, d);
}

void fl_avgpool2d_backward(float *dx, const float *dy, const struct fl_pool2d_dims *d)
{
	avgpool_windows(NULL, dx, NULL, dy, d);
}

/* Input position (plane offset) of element (u, v) of output (i, j)'s window. */
static size_t pool_at(const struct fl_pool2d_dims *d, int i, int j, int u, int v)
{
	return (size_t)(i * d->stride + u) * d->in_w + (size_t)(j * d->stride + v);
}

void fl_avgpool2d_forward_ref(float *y, const float *x, const struct fl_pool2d_dims *d)
{
	int oh = fl_pool2d_out_h(d), ow = fl_pool2d_out_w(d), k = d->k;
	size_t plane = (size_t)d->in_h * d->in_w, oplane = (size_t)oh * ow;
	for (size_t p = 0; p < (size_t)d->batch * d->channels; p++)
		for (int i = 0; i < oh; i++)
			for (int j = 0; j < ow; j++) {
				double acc = 0.0;
				for (int u = 0; u < k; u++)
					for (int v = 0; v < k; v++)
						acc += x[p * plane + pool_at(d, i, j, u, v)];
				y[p * oplane + (size_t)i * ow + j] = (float)(acc / (k * k));
			}
}

/* Gathers, for each input element, the dy of every window holding it. */
void fl_avgpool2d_backward_ref(float *dx, const float *dy, const struct fl_pool2d_dims *d)
{
	int oh = fl_pool2d_out_h(d), ow = fl_pool2d_out_w(d), k = d->k;
	size_t plane = (size_t)d->in_h * d->in_w, oplane = (size_t)oh * ow;
	for (size_t p = 0; p < (size_t)d->batch * d->channels; p++)
		for (size_t q = 0; q < plane; q++) {
			double acc = 0.0;
			for (int i = 0; i < oh; i++)
				for (int j = 0; j < ow; j++)
					for (int u = 0; u < k; u++)
						for (int v = 0; v < k; v++)
							if (pool_at(d, i, j, u, v) == q)
								acc += dy[p * oplane +
									  (size_t)i * ow + j];
			dx[p * plane + q] += (float)(acc / (k * k));
		}
}

/* ---- GELU ---------------------------------------------------------------- */

#define SQRT1_2 0.70710678118654752f      /* 1 / sqrt 2 */
#define INV_SQRT_2PI 0.39894228040143268f /* 1 / sqrt(2 pi) */

/* x (n) -> y (n) = 0.5 x (1 + erf(x / sqrt 2)); y may equal x */
/* GELU through vmath.h's vectorised erf and exp, 4 floats at a time:
 * compilers do not vectorise erff / expf. */
static inline v4f gelu4(v4f x)
{
	return 0.5f * x * (1.0f + v4_erf(x * SQRT1_2));
}

void fl_gelu_forward(float *y, const float *x, size_t n)
{
	for (size_t i = 0; i < n; i += 4) {
		size_t k = n - i < 4 ? n - i : 4;
		v4_store(y + i, gelu4(v4_load(x + i, k)), k);
	}
}

/* x (n) the forward input, dy (n) -> dx (n) += dy * (Phi(x) + x phi(x)) */
void fl_gelu_backward(float *dx, const float *x, const float *dy, size_t n)
{
	for (size_t i = 0; i < n; i += 4) {
		size_t k = n - i < 4 ? n - i : 4;
		v4f v = v4_load(x + i, k);
		v4f cdf = 0.5f * (1.0f + v4_erf(v * SQRT1_2));
		v4f pdf = INV_SQRT_2PI * v4_exp_nonpositive(-0.5f * v * v);
		v4_store(dx + i, v4_load(dx + i, k) + v4_load(dy + i, k) * (cdf + v * pdf), k);
	}
}

/* ---- Dropout ------------------------------------------------------------- */

/* mask (n): 0 where a uniform draw u < p, else 1 / (1 - p) */
void fl_dropout_mask(float *mask, size_t n, float p, struct fl_rng *rng)
{
	assert(p >= 0.0f && p < 1.0f);
	float keep = (float)(1.0 / (1.0 - (double)p));
	for (size_t i = 0; i < n; i++)
		mask[i] = fl_rng_uniform(rng) < p ? 0.0f : keep;
}

/* x (n), mask (n) -> y (n) = x * mask; y may equal x */
void fl_dropout_forward(float *y, const float *x, const float *mask, size_t n)
{
	for (size_t i = 0; i < n; i++)
		y[i] = x[i] * mask[i];
}

/* dy (n), mask (n) -> dx (n) += dy * mask */
void fl_dropout_backward(float *dx, const float *dy, const float *mask, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dx[i] += dy[i] * mask[i];
}

/* ---- Softmax cross-entropy ----------------------------------------------- */

/* logits (B, C), labels (B) -> loss (mean), correct (count), probs (B, C) */
void fl_softmax_ce_forward(double *loss, int *correct, float *probs, const float *logits,
			   const int *labels, int batch, int classes)
{
	assert(batch >= 0 && classes >= 1);
	double total = 0.0;
	int hits = 0;
	for (int n = 0; n < batch; n++) {
		const float *l = logits + (size_t)n * classes;
		int label = labels[n];
		assert(label >= 0 && label < classes);
		int arg = 0;
		for (int c = 1; c < classes; c++)
			if (l[c] > l[arg])
				arg = c;
		double mx = l[arg];
		double sum = 1.0; /* exp(l[arg] - mx) */
		for (int c = 0; c < classes; c++)
			if (c != arg)
				sum += exp((double)l[c] - mx);
		total += mx + log(sum) - l[label];
		hits += arg == label;
		if (probs) {
			float *pr = probs + (size_t)n * classes;
			for (int c = 0; c < classes; c++)
				pr[c] = (float)(exp((double)l[c] - mx) / sum);
		}
	}
	if (loss)
		*loss = batch > 0 ? total / batch : 0.0;
	if (correct)
		*correct = hits;
}

/* probs (B, C) from forward, labels (B) -> dlogits (B, C) += (probs - onehot) / B */
void fl_softmax_ce_backward(float *dlogits, const float *probs, const int *labels, int batch,
			    int classes)
{
	assert(batch >= 0 && classes >= 1);
	if (batch == 0)
		return;
	float inv = 1.0f / (float)batch;
	for (int n = 0; n < batch; n++) {
		const float *pr = probs + (size_t)n * classes;
		float *dl = dlogits + (size_t)n * classes;
		int label = labels[n];
		assert(label >= 0 && label < classes);
		for (int c = 0; c < classes; c++)
			dl[c] += (pr[c] - (c == label ? 1.0f : 0.0f)) * inv;
	}
}
