/* conv.c - Conv2d forward/backward (im2col + sgemm, col2im) and the naive
 * direct-loop twins the tests compare them with. Shapes and conventions are
 * in layers.h. Samples go through in chunks; a chunk's input is first copied
 * into zero-padded planes so that building the columns is branch-free row
 * copies (col2im likewise adds into padded planes, then into dx). The
 * columns are not cached between forward and backward: rebuilding them is
 * cheap next to the matrix products and saves B*C*K1*K2*OH*OW floats per
 * layer. Nothing here allocates, logs or reads globals.
 */
#include "layers.h"

#include "blas.h"
#include "errors.h"

#include <assert.h>
#include <limits.h>
#include <string.h>

/* Samples are processed in chunks of about this many output pixels: large
 * enough that the sgemm calls run near peak, small enough that the columns
 * of a chunk stay a few MB. */
#define CONV_CHUNK_COLS 1024

/* Meaningful for dims that pass fl_conv2d_dims_check (no overflow otherwise). */
int fl_conv2d_out_h(const struct fl_conv2d_dims *d)
{
	return (int)(((long long)d->in_h + 2LL * d->pad - d->k_h) / d->stride + 1);
}

int fl_conv2d_out_w(const struct fl_conv2d_dims *d)
{
	return (int)(((long long)d->in_w + 2LL * d->pad - d->k_w) / d->stride + 1);
}

/* Samples per chunk; never decreases with the batch size. */
static int conv_chunk(const struct fl_conv2d_dims *d)
{
	long ohw = (long)fl_conv2d_out_h(d) * fl_conv2d_out_w(d);
	long nb = (CONV_CHUNK_COLS + ohw - 1) / ohw;
	return nb < d->batch ? (int)nb : d->batch;
}

static const char *conv_dims_problem(const struct fl_conv2d_dims *d)
{
	if (d->batch < 1 || d->in_c < 1 || d->in_h < 1 || d->in_w < 1 || d->out_c < 1 ||
	    d->k_h < 1 || d->k_w < 1)
		return "sizes must be positive";
	if (d->stride < 1 || d->pad < 0)
		return "stride must be >= 1 and padding >= 0";
	long long ph = (long long)d->in_h + 2LL * d->pad, pw = (long long)d->in_w + 2LL * d->pad;
	if (ph > INT_MAX || pw > INT_MAX)
		return "padded input too large";
	if (d->k_h > ph || d->k_w > pw)
		return "kernel larger than the padded input";
	long long oh = (ph - d->k_h) / d->stride + 1, ow = (pw - d->k_w) / d->stride + 1;
	long long ckk = (long long)d->in_c * d->k_h * d->k_w;
	if ((long long)d->batch * d->in_c * ph * pw > INT_MAX ||
	    (long long)d->batch * d->out_c * oh * ow > INT_MAX || ckk * d->out_c > INT_MAX)
		return "tensor too large";
	/* The work buffer, as conv_chunk and fl_conv2d_work_floats size it. */
	long long nb = (CONV_CHUNK_COLS + oh * ow - 1) / (oh * ow);
	if (nb > d->batch)
		nb = d->batch;
	if ((ckk + d->out_c) * nb * oh * ow + nb * d->in_c * ph * pw > INT_MAX)
		return "work buffer too large";
	return NULL;
}

int fl_conv2d_dims_check(const struct fl_conv2d_dims *d)
{
	const char *why = conv_dims_problem(d);
	if (why)
		return fl_error_set(FL_EINVAL,
				    "conv2d: %s (batch %d, %d->%d channels, input %dx%d, kernel "
				    "%dx%d, stride %d, padding %d)",
				    why, d->batch, d->in_c, d->out_c, d->in_h, d->in_w, d->k_h,
				    d->k_w, d->stride, d->pad);
	return FL_OK;
}

/* The work buffer of one chunk of nb samples, N = nb*OH*OW columns:
 *   col  (C*K1*K2, N)        the columns, or their gradient in backward
 *   blk  (O, N)              the output block, or dy gathered into that layout
 *   xpad (nb, C, PH, PW)     the zero-padded input, or the padded dx
 *                            (PH = H + 2p, PW = W + 2p; absent when p = 0) */
struct conv_work {
	float *col, *blk, *xpad;
};

static struct conv_work conv_work_split(float *work, const struct fl_conv2d_dims *d)
{
	size_t n = (size_t)conv_chunk(d) * fl_conv2d_out_h(d) * fl_conv2d_out_w(d);
	struct conv_work cw;
	cw.col = work;
	cw.blk = cw.col + (size_t)d->in_c * d->k_h * d->k_w * n;
	cw.xpad = cw.blk + (size_t)d->out_c * n;
	return cw;
}

size_t fl_conv2d_work_floats(const struct fl_conv2d_dims *d)
{
	assert(!conv_dims_problem(d));
	size_t n = (size_t)conv_chunk(d) * fl_conv2d_out_h(d) * fl_conv2d_out_w(d);
	size_t pad = 0;
	if (d->pad > 0)
		pad = (size_t)conv_chunk(d) * d->in_c * (size_t)(d->in_h + 2 * d->pad) *
		      (d->in_w + 2 * d->pad);
	return ((size_t)d->in_c * d->k_h * d->k_w + (size_t)d->out_c) * n + pad;
}

/* xpad (nb, C, PH, PW) = x[n0 .. n0 + nb) with p zeros around every plane. */
static void conv_pad(float *restrict xpad, const float *restrict x, int nb,
		     const struct fl_conv2d_dims *d)
{
	int h = d->in_h, w = d->in_w, p = d->pad, pw = w + 2 * p;
	size_t planes = (size_t)nb * d->in_c;
	for (size_t q = 0; q < planes; q++) {
		float *dst = xpad + q * (h + 2 * p) * pw;
		const float *src = x + q * h * w;
		memset(dst, 0, sizeof(float) * p * pw);
		dst += (size_t)p * pw;
		for (int i = 0; i < h; i++, dst += pw, src += w) {
			for (int j = 0; j < p; j++)
				dst[j] = 0.0f;
			memcpy(dst + p, src, sizeof(float) * w);
			for (int j = p + w; j < pw; j++)
				dst[j] = 0.0f;
		}
		memset(dst, 0, sizeof(float) * p * pw);
	}
}

/* dx[n0 .. n0 + nb) += the interior of dxpad (nb, C, PH, PW). */
static void conv_unpad_add(float *restrict dx, const float *restrict dxpad, int nb,
			   const struct fl_conv2d_dims *d)
{
	int h = d->in_h, w = d->in_w, p = d->pad, pw = w + 2 * p;
	size_t planes = (size_t)nb * d->in_c;
	for (size_t q = 0; q < planes; q++) {
		const float *src = dxpad + q * (h + 2 * p) * pw + (size_t)p * pw + p;
		float *dst = dx + q * h * w;
		for (int i = 0; i < h; i++, dst += w, src += pw)
			for (int j = 0; j < w; j++)
				dst[j] += src[j];
	}
}

/* dst[j] = src[j*s] for j < n; the unit stride gets its own loop so that it
 * vectorises. */
static inline void conv_row_gather(float *restrict dst, const float *restrict src, int n, int s)
{
	if (s == 1) {
		for (int j = 0; j < n; j++)
			dst[j] = src[j];
	} else {
		for (int j = 0; j < n; j++)
			dst[j] = src[j * s];
	}
}

/* dst[j*s] += src[j] for j < n. */
static inline void conv_row_scatter_add(float *restrict dst, const float *restrict src, int n,
					int s)
{
	if (s == 1) {
		for (int j = 0; j < n; j++)
			dst[j] += src[j];
	} else {
		for (int j = 0; j < n; j++)
			dst[j * s] += src[j];
	}
}

/* The column matrix col (C*K1*K2, nb*OH*OW) against the padded input xp
 * (nb, C, PH, PW) of nb samples, row by row:
 * col[(c*K1 + u)*K2 + v, t*OH*OW + i*OW + j] ~ xp[t, c, i*s + u, j*s + v].
 * adjoint 0: col = im2col(xp); 1: xp += col2im(col). */
static void conv_col_rows(float *restrict col, float *restrict xp, int nb, int ph, int pw,
			  const struct fl_conv2d_dims *d, int adjoint)
{
	int s = d->stride, oh = fl_conv2d_out_h(d), ow = fl_conv2d_out_w(d);
	size_t ohw = (size_t)oh * ow, ncols = (size_t)nb * ohw, plane = (size_t)ph * pw;
	for (int c = 0; c < d->in_c; c++) {
		for (int u = 0; u < d->k_h; u++) {
			for (int v = 0; v < d->k_w; v++) {
				float *cr = col + ((size_t)(c * d->k_h + u) * d->k_w + v) * ncols;
				for (int t = 0; t < nb; t++) {
					float *xr = xp + ((size_t)t * d->in_c + c) * plane +
						    (size_t)u * pw + v;
					for (int i = 0; i < oh;
					     i++, cr += ow, xr += (size_t)s * pw) {
						if (adjoint)
							conv_row_scatter_add(xr, cr, ow, s);
						else
							conv_row_gather(cr, xr, ow, s);
					}
				}
			}
		}
	}
}

/* xp (nb, C, PH, PW), the padded input of nb samples -> col (C*K1*K2, nb*OH*OW). */
static void conv_im2col(float *col, const float *xp, int nb, int ph, int pw,
			const struct fl_conv2d_dims *d)
{
	conv_col_rows(col, (float *)xp, nb, ph, pw, d, 0);
}

/* The adjoint of conv_im2col: dxp (nb, C, PH, PW) += col2im(dcol). */
static void conv_col2im(float *dxp, const float *dcol, int nb, int ph, int pw,
			const struct fl_conv2d_dims *d)
{
	conv_col_rows((float *)dcol, dxp, nb, ph, pw, d, 1);
}

/* The columns of samples [n0, n0 + nb) into cw->col (padding through cw->xpad). */
static void conv_columns(const struct conv_work *cw, const float *x, int n0, int nb,
			 const struct fl_conv2d_dims *d)
{
	size_t in_sample = (size_t)d->in_c * d->in_h * d->in_w;
	int p = d->pad;
	if (p == 0) {
		conv_im2col(cw->col, x + n0 * in_sample, nb, d->in_h, d->in_w, d);
	} else {
		conv_pad(cw->xpad, x + n0 * in_sample, nb, d);
		conv_im2col(cw->col, cw->xpad, nb, d->in_h + 2 * p, d->in_w + 2 * p, d);
	}
}

/* x (B, C, H, W), w (O, C, K1, K2), b (O) or NULL -> y (B, O, OH, OW) */
void fl_conv2d_forward(float *y, float *work, const float *x, const float *w, const float *b,
		       const struct fl_conv2d_dims *d)
{
	assert(!conv_dims_problem(d));
	int O = d->out_c, ckk = d->in_c * d->k_h * d->k_w;
	int ohw = fl_conv2d_out_h(d) * fl_conv2d_out_w(d);
	int chunk = conv_chunk(d);
	struct conv_work cw = conv_work_split(work, d);
	for (int n0 = 0; n0 < d->batch; n0 += chunk) {
		int nb = d->batch - n0 < chunk ? d->batch - n0 : chunk;
		int ncols = nb * ohw;
		conv_columns(&cw, x, n0, nb, d);
		/* blk (O, nb*OHW) = w (O, CKK) * col (CKK, nb*OHW) */
		fl_blas_sgemm(0, 0, O, ncols, ckk, 1.0f, w, ckk, cw.col, ncols, 0.0f, cw.blk,
			      ncols);
		/* blk[o, t*OHW + q] -> y[n0 + t, o, q], plus the bias. */
		for (int t = 0; t < nb; t++) {
			for (int o = 0; o < O; o++) {
				float *dst = y + ((size_t)(n0 + t) * O + o) * ohw;
				const float *src = cw.blk + (size_t)o * ncols + (size_t)t * ohw;
				float bo = b ? b[o] : 0.0f;
				for (int q = 0; q < ohw; q++)
					dst[q] = src[q] + bo;
			}
		}
	}
}

/* dy (B, O, OH, OW), x (B, C, H, W), w (O, C, K1, K2) ->
 * dx (B, C, H, W) +=, dw (O, C, K1, K2) +=, db (O) += */
void fl_conv2d_backward(float *dx, float *dw, float *db, float *work, const float *dy,
			const float *x, const float *w, const struct fl_conv2d_dims *d)
{
	assert(!conv_dims_problem(d));
	int O = d->out_c, ckk = d->in_c * d->k_h * d->k_w;
	int ohw = fl_conv2d_out_h(d) * fl_conv2d_out_w(d);
	if (db) {
		for (int n = 0; n < d->batch; n++) {
			for (int o = 0; o < O; o++) {
				const float *src = dy + ((size_t)n * O + o) * ohw;
				float acc = 0.0f;
				for (int q = 0; q < ohw; q++)
					acc += src[q];
				db[o] += acc;
			}
		}
	}
	if (!dw && !dx)
		return;
	int chunk = conv_chunk(d), p = d->pad, ph = d->in_h + 2 * p, pw = d->in_w + 2 * p;
	size_t in_sample = (size_t)d->in_c * d->in_h * d->in_w;
	struct conv_work cw = conv_work_split(work, d);
	for (int n0 = 0; n0 < d->batch; n0 += chunk) {
		int nb = d->batch - n0 < chunk ? d->batch - n0 : chunk;
		int ncols = nb * ohw;
		/* dy[n0 + t, o, q] -> blk[o, t*OHW + q] */
		for (int t = 0; t < nb; t++)
			for (int o = 0; o < O; o++)
				memcpy(cw.blk + (size_t)o * ncols + (size_t)t * ohw,
				       dy + ((size_t)(n0 + t) * O + o) * ohw, sizeof(float) * ohw);
		if (dw) {
			conv_columns(&cw, x, n0, nb, d);
			/* dw (O, CKK) += blk (O, nb*OHW) * col^T (nb*OHW, CKK): col stored
			 * (CKK, nb*OHW), transposed. */
			fl_blas_sgemm(0, 1, O, ckk, ncols, 1.0f, cw.blk, ncols, cw.col, ncols, 1.0f,
				      dw, ckk);
		}
		if (dx) {
			/* dcol (CKK, nb*OHW) = w^T (CKK, O) * blk (O, nb*OHW): w stored (O, CKK),
			 * transposed. The columns buffer is reused. */
			fl_blas_sgemm(1, 0, ckk, ncols, O, 1.0f, w, ckk, cw.blk, ncols, 0.0f,
				      cw.col, ncols);
			if (p == 0) {
				conv_col2im(dx + n0 * in_sample, cw.col, nb, ph, pw, d);
			} else {
				memset(cw.xpad, 0, sizeof(float) * nb * d->in_c * ph * pw);
				conv_col2im(cw.xpad, cw.col, nb, ph, pw, d);
				conv_unpad_add(dx + n0 * in_sample, cw.xpad, nb, d);
			}
		}
	}
}

/* ---- naive twins --------------------------------------------------------- */

static size_t conv_w_index(const struct fl_conv2d_dims *d, int o, int c, int u, int v)
{
	return (((size_t)o * d->in_c + c) * d->k_h + u) * d->k_w + v;
}

static size_t conv_y_index(const struct fl_conv2d_dims *d, int n, int o, int i, int j)
{
	return (((size_t)n * d->out_c + o) * fl_conv2d_out_h(d) + i) * fl_conv2d_out_w(d) + j;
}

/* x at (n, c, ih, iw) with zero padding outside the plane. */
static double conv_x_at(const float *x, const struct fl_conv2d_dims *d, int n, int c, int ih,
			int iw)
{
	if (ih < 0 || ih >= d->in_h || iw < 0 || iw >= d->in_w)
		return 0.0;
	return x[(((size_t)n * d->in_c + c) * d->in_h + ih) * d->in_w + iw];
}

/* Output index along one axis that reads input position a through kernel tap
 * u, or -1 when there is none. */
static int conv_out_index(int a, int u, int s, int p, int out)
{
	int t = a + p - u;
	if (t < 0 || t % s)
		return -1;
	t /= s;
	return t < out ? t : -1;
}

/* sum_{c,u,v} w[o,c,u,v] x[n, c, i*s + u - p, j*s + v - p] */
static double conv_ref_out(const float *x, const float *w, const struct fl_conv2d_dims *d, int n,
			   int o, int i, int j)
{
	int s = d->stride, p = d->pad;
	double acc = 0.0;
	for (int c = 0; c < d->in_c; c++)
		for (int u = 0; u < d->k_h; u++)
			for (int v = 0; v < d->k_w; v++)
				acc += w[conv_w_index(d, o, c, u, v)] *
				       conv_x_at(x, d, n, c, i * s + u - p, j * s + v - p);
	return acc;
}

/* dL/dw[o,c,u,v] = sum_{n,i,j} dy[n,o,i,j] x[n, c, i*s + u - p, j*s + v - p] */
static double conv_ref_dw(const float *dy, const float *x, const struct fl_conv2d_dims *d, int o,
			  int c, int u, int v)
{
	int s = d->stride, p = d->pad;
	double acc = 0.0;
	for (int n = 0; n < d->batch; n++)
		for (int i = 0; i < fl_conv2d_out_h(d); i++)
			for (int j = 0; j < fl_conv2d_out_w(d); j++)
				acc += dy[conv_y_index(d, n, o, i, j)] *
				       conv_x_at(x, d, n, c, i * s + u - p, j * s + v - p);
	return acc;
}

/* dL/dx[n,c,a,e] = sum over the (o, i, j, u, v) with i*s + u - p = a and
 * j*s + v - p = e of dy[n,o,i,j] w[o,c,u,v] */
static double conv_ref_dx(const float *dy, const float *w, const struct fl_conv2d_dims *d, int n,
			  int c, int a, int e)
{
	double acc = 0.0;
	for (int u = 0; u < d->k_h; u++) {
		int i = conv_out_index(a, u, d->stride, d->pad, fl_conv2d_out_h(d));
		for (int v = 0; i >= 0 && v < d->k_w; v++) {
			int j = conv_out_index(e, v, d->stride, d->pad, fl_conv2d_out_w(d));
			if (j < 0)
				continue;
			for (int o = 0; o < d->out_c; o++)
				acc += (double)dy[conv_y_index(d, n, o, i, j)] *
				       w[conv_w_index(d, o, c, u, v)];
		}
	}
	return acc;
}

void fl_conv2d_forward_ref(float *y, const float *x, const float *w, const float *b,
			   const struct fl_conv2d_dims *d)
{
	for (int n = 0; n < d->batch; n++)
		for (int o = 0; o < d->out_c; o++)
			for (int i = 0; i < fl_conv2d_out_h(d); i++)
				for (int j = 0; j < fl_conv2d_out_w(d); j++)
					y[conv_y_index(d, n, o, i, j)] =
						(float)((b ? b[o] : 0.0) +
							conv_ref_out(x, w, d, n, o, i, j));
}

void fl_conv2d_backward_ref(float *dx, float *dw, float *db, const float *dy, const float *x,
			    const float *w, const struct fl_conv2d_dims *d)
{
	int oh = fl_conv2d_out_h(d), ow = fl_conv2d_out_w(d);
	for (int o = 0; db && o < d->out_c; o++) {
		double acc = 0.0;
		for (int n = 0; n < d->batch; n++)
			for (int i = 0; i < oh; i++)
				for (int j = 0; j < ow; j++)
					acc += dy[conv_y_index(d, n, o, i, j)];
		db[o] += (float)acc;
	}
	for (int o = 0; dw && o < d->out_c; o++)
		for (int c = 0; c < d->in_c; c++)
			for (int u = 0; u < d->k_h; u++)
				for (int v = 0; v < d->k_w; v++)
					dw[conv_w_index(d, o, c, u, v)] += (float)conv_ref_dw(
						dy, x, d, o, c, u, v);
	for (int n = 0; dx && n < d->batch; n++)
		for (int c = 0; c < d->in_c; c++)
			for (int a = 0; a < d->in_h; a++)
				for (int e = 0; e < d->in_w; e++)
					dx[(((size_t)n * d->in_c + c) * d->in_h + a) * d->in_w +
					   e] += (float)conv_ref_dx(dy, w, d, n, c, a, e);
}
