/* test_layers.c - Linear and Conv2d against their naive twins, a hand-computed
 * convolution, dims validation, and central finite-difference gradient checks
 * of every layer (Linear, Conv2d, ReLU, MaxPool2d, softmax cross-entropy)
 * with respect to every input and parameter. The gradients are checked on
 * L = sum(g ⊙ y) for a fixed random g, so backward's dy is g. */
#include "errors.h"
#include "gradcheck.h"
#include "layers.h"
#include "rng.h"
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- Linear -------------------------------------------------------------- */

static void test_linear_vs_ref(void)
{
	static const int cfg[][3] = {{1, 7, 5}, {3, 13, 11}, {3, 1, 1}, {5, 33, 17}};
	for (size_t t = 0; t < sizeof(cfg) / sizeof(cfg[0]); t++) {
		int B = cfg[t][0], in = cfg[t][1], out = cfg[t][2];
		for (int with_bias = 0; with_bias < 2; with_bias++) {
			float *x = fl_test_frand((size_t)B * in, 1),
			      *w = fl_test_frand((size_t)out * in, 2);
			float *b = with_bias ? fl_test_frand(out, 3) : NULL;
			float *dy = fl_test_frand((size_t)B * out, 4);
			float *y1 = fl_test_frand((size_t)B * out, 5),
			      *y2 = fl_test_frand((size_t)B * out, 6);
			fl_linear_forward(y1, x, w, b, B, in, out);
			fl_linear_forward_ref(y2, x, w, b, B, in, out);
			FL_CHECK_ARRAY_NEAR(y1, y2, (size_t)B * out, 1e-5, 1e-5);
			/* Gradients start non-zero: backward must add. */
			float *dx1 = fl_test_frand((size_t)B * in, 7),
			      *dx2 = fl_test_frand((size_t)B * in, 7);
			float *dw1 = fl_test_frand((size_t)out * in, 8),
			      *dw2 = fl_test_frand((size_t)out * in, 8);
			float *db1 = fl_test_frand(out, 9), *db2 = fl_test_frand(out, 9);
			fl_linear_backward(dx1, dw1, db1, dy, x, w, B, in, out);
			fl_linear_backward_ref(dx2, dw2, db2, dy, x, w, B, in, out);
			FL_CHECK_ARRAY_NEAR(dx1, dx2, (size_t)B * in, 1e-5, 1e-5);
			FL_CHECK_ARRAY_NEAR(dw1, dw2, (size_t)out * in, 1e-5, 1e-5);
			FL_CHECK_ARRAY_NEAR(db1, db2, out, 1e-5, 1e-5);
			/* NULL gradients are skipped; the others are unchanged by that. */
			float *dw3 = fl_test_frand((size_t)out * in, 8);
			fl_linear_backward(NULL, dw3, NULL, dy, x, w, B, in, out);
			FL_CHECK_ARRAY_NEAR(dw3, dw2, (size_t)out * in, 1e-5, 1e-5);
			free(x), free(w), free(b), free(dy), free(y1), free(y2);
			free(dx1), free(dx2), free(dw1), free(dw2), free(db1), free(db2), free(dw3);
		}
	}
}

struct linear_ctx {
	float *x, *w, *b;
	int B, in, out;
};

static void linear_fd_forward(void *p, float *y)
{
	struct linear_ctx *c = p;
	fl_linear_forward(y, c->x, c->w, c->b, c->B, c->in, c->out);
}

static void test_linear_grad(void)
{
	struct linear_ctx c = {0};
	c.B = 3, c.in = 7, c.out = 5;
	c.x = fl_test_frand((size_t)c.B * c.in, 11);
	c.w = fl_test_frand((size_t)c.out * c.in, 12);
	c.b = fl_test_frand(c.out, 13);
	size_t ny = (size_t)c.B * c.out;
	float *g = fl_test_frand(ny, 14), *y = fl_test_falloc(ny);
	float *dx = calloc((size_t)c.B * c.in, sizeof(float));
	float *dw = calloc((size_t)c.out * c.in, sizeof(float));
	float *db = calloc(c.out, sizeof(float));
	fl_linear_backward(dx, dw, db, g, c.x, c.w, c.B, c.in, c.out);
	fl_test_fd_check(c.x, (size_t)c.B * c.in, dx, linear_fd_forward, &c, y, g, ny, 1e-2f, 1e-3,
			 1e-4);
	fl_test_fd_check(c.w, (size_t)c.out * c.in, dw, linear_fd_forward, &c, y, g, ny, 1e-2f,
			 1e-3, 1e-4);
	fl_test_fd_check(c.b, c.out, db, linear_fd_forward, &c, y, g, ny, 1e-2f, 1e-3, 1e-4);
	free(c.x), free(c.w), free(c.b), free(g), free(y), free(dx), free(dw), free(db);
}

/* ---- Conv2d -------------------------------------------------------------- */

static size_t conv_x_n(const struct fl_conv2d_dims *d)
{
	return (size_t)d->batch * d->in_c * d->in_h * d->in_w;
}

static size_t conv_y_n(const struct fl_conv2d_dims *d)
{
	return (size_t)d->batch * d->out_c * fl_conv2d_out_h(d) * fl_conv2d_out_w(d);
}

static size_t conv_w_n(const struct fl_conv2d_dims *d)
{
	return (size_t)d->out_c * d->in_c * d->k_h * d->k_w;
}

static void conv_compare(const struct fl_conv2d_dims *d, int with_bias, uint64_t seed)
{
	FL_CHECK(fl_conv2d_dims_check(d) == FL_OK);
	size_t nx = conv_x_n(d), ny = conv_y_n(d), nw = conv_w_n(d);
	float *x = fl_test_frand(nx, seed), *w = fl_test_frand(nw, seed + 1);
	float *b = with_bias ? fl_test_frand(d->out_c, seed + 2) : NULL;
	float *dy = fl_test_frand(ny, seed + 3);
	float *work = fl_test_falloc(fl_conv2d_work_floats(d));
	float *y1 = fl_test_frand(ny, seed + 4), *y2 = fl_test_frand(ny, seed + 5);
	fl_conv2d_forward(y1, work, x, w, b, d);
	fl_conv2d_forward_ref(y2, x, w, b, d);
	FL_CHECK_ARRAY_NEAR(y1, y2, ny, 1e-5, 1e-5);
	float *dx1 = fl_test_frand(nx, seed + 6), *dx2 = fl_test_frand(nx, seed + 6);
	float *dw1 = fl_test_frand(nw, seed + 7), *dw2 = fl_test_frand(nw, seed + 7);
	float *db1 = fl_test_frand(d->out_c, seed + 8), *db2 = fl_test_frand(d->out_c, seed + 8);
	fl_conv2d_backward(dx1, dw1, db1, work, dy, x, w, d);
	fl_conv2d_backward_ref(dx2, dw2, db2, dy, x, w, d);
	FL_CHECK_ARRAY_NEAR(dx1, dx2, nx, 1e-5, 1e-5);
	FL_CHECK_ARRAY_NEAR(dw1, dw2, nw, 1e-5, 1e-5);
	FL_CHECK_ARRAY_NEAR(db1, db2, d->out_c, 1e-5, 1e-5);
	/* Each gradient alone (the others NULL) gives the same values. */
	float *dx3 = fl_test_frand(nx, seed + 6), *dw3 = fl_test_frand(nw, seed + 7),
	      *db3 = fl_test_frand(d->out_c, seed + 8);
	fl_conv2d_backward(dx3, NULL, NULL, work, dy, x, w, d);
	fl_conv2d_backward(NULL, dw3, NULL, work, dy, x, w, d);
	fl_conv2d_backward(NULL, NULL, db3, work, dy, x, w, d);
	FL_CHECK_ARRAY_NEAR(dx3, dx2, nx, 1e-5, 1e-5);
	FL_CHECK_ARRAY_NEAR(dw3, dw2, nw, 1e-5, 1e-5);
	FL_CHECK_ARRAY_NEAR(db3, db2, d->out_c, 1e-5, 1e-5);
	free(x), free(w), free(b), free(dy), free(work), free(y1), free(y2);
	free(dx1), free(dx2), free(dw1), free(dw2), free(db1), free(db2);
	free(dx3), free(dw3), free(db3);
}

static void test_conv_vs_ref(void)
{
	/* batch, in_c, in_h, in_w, out_c, k_h, k_w, stride, pad */
	static const struct fl_conv2d_dims cfg[] = {
		{1, 1, 5, 5, 1, 3, 3, 1, 0},
		{3, 2, 7, 5, 3, 3, 3, 1, 1},
		{3, 3, 9, 8, 4, 5, 5, 1, 2},
		{1, 2, 9, 7, 5, 3, 2, 2, 1},
		{3, 3, 8, 11, 2, 2, 3, 2, 0},
		{3, 4, 7, 7, 3, 1, 1, 1, 0},
		{1, 3, 6, 5, 2, 5, 3, 2, 2},
		{3, 1, 4, 4, 2, 4, 4, 1, 0},
		{3, 2, 3, 3, 2, 5, 5, 1, 2},
		{1, 1, 1, 1, 2, 3, 3, 2, 1},
		{3, 5, 10, 9, 6, 3, 1, 3, 1},
		{2, 3, 14, 14, 4, 5, 5, 1, 2},
		/* OH*OW = 16: 64 samples per chunk, so 70 samples take two chunks. */
		{70, 2, 4, 4, 3, 3, 3, 1, 1},
	};
	for (size_t t = 0; t < sizeof(cfg) / sizeof(cfg[0]); t++) {
		conv_compare(&cfg[t], 1, 100 + 10 * t);
		conv_compare(&cfg[t], 0, 200 + 10 * t);
	}
}

/* x = 1..9 in a 3x3 plane, w = [[1, 2], [3, 4]], bias 0.5. */
static void test_conv_hand(void)
{
	float x[9], w[4] = {1, 2, 3, 4}, b = 0.5f, y[4], work[64];
	for (int i = 0; i < 9; i++)
		x[i] = (float)(i + 1);
	struct fl_conv2d_dims d = {1, 1, 3, 3, 1, 2, 2, 1, 0};
	FL_CHECK(fl_conv2d_out_h(&d) == 2 && fl_conv2d_out_w(&d) == 2);
	FL_CHECK(fl_conv2d_work_floats(&d) <= 64);
	fl_conv2d_forward(y, work, x, w, &b, &d);
	static const float want[4] = {37.5f, 47.5f, 67.5f, 77.5f};
	for (int i = 0; i < 4; i++)
		FL_CHECK(y[i] == want[i]);
	/* Padding 1, stride 2: the windows start at (-1, -1), (-1, 1), (1, -1), (1, 1). */
	struct fl_conv2d_dims d2 = {1, 1, 3, 3, 1, 2, 2, 2, 1};
	FL_CHECK(fl_conv2d_out_h(&d2) == 2 && fl_conv2d_out_w(&d2) == 2);
	FL_CHECK(fl_conv2d_work_floats(&d2) <= 64);
	fl_conv2d_forward(y, work, x, w, NULL, &d2);
	static const float want2[4] = {4.0f, 18.0f, 36.0f, 77.0f};
	for (int i = 0; i < 4; i++)
		FL_CHECK(y[i] == want2[i]);
	/* Its backward with dy = 1: dw[u][v] = sum of the x each tap saw. */
	float dy[4] = {1, 1, 1, 1}, dx[9] = {0}, dw[4] = {0}, db = 0;
	fl_conv2d_backward(dx, dw, &db, work, dy, x, w, &d2);
	static const float want_dw[4] = {5.0f, 10.0f, 10.0f, 20.0f};
	static const float want_dx[9] = {4, 3, 4, 2, 1, 2, 4, 3, 4};
	for (int i = 0; i < 4; i++)
		FL_CHECK(dw[i] == want_dw[i]);
	for (int i = 0; i < 9; i++)
		FL_CHECK(dx[i] == want_dx[i]);
	FL_CHECK(db == 4.0f);
}

static void test_conv_dims(void)
{
	struct fl_conv2d_dims conv2 = {64, 32, 14, 14, 64, 5, 5, 1, 2};
	FL_CHECK(fl_conv2d_dims_check(&conv2) == FL_OK);
	FL_CHECK(fl_conv2d_out_h(&conv2) == 14 && fl_conv2d_out_w(&conv2) == 14);
	struct fl_conv2d_dims s2 = {1, 3, 32, 31, 8, 3, 3, 2, 1};
	FL_CHECK(fl_conv2d_out_h(&s2) == 16 && fl_conv2d_out_w(&s2) == 16);
	/* The work size never shrinks as the batch grows (allocate for the largest). */
	size_t prev = 0;
	for (int bsz = 1; bsz <= 64; bsz++) {
		conv2.batch = bsz;
		size_t wf = fl_conv2d_work_floats(&conv2);
		FL_CHECK(wf >= prev);
		prev = wf;
	}
	static const struct fl_conv2d_dims bad[] = {
		{0, 1, 5, 5, 1, 3, 3, 1, 0},          {1, 0, 5, 5, 1, 3, 3, 1, 0},
		{1, 1, 5, 5, 0, 3, 3, 1, 0},          {1, 1, 5, 5, 1, 0, 3, 1, 0},
		{1, 1, 5, 5, 1, 3, 3, 0, 0},          {1, 1, 5, 5, 1, 3, 3, 1, -1},
		{1, 1, 2, 5, 1, 3, 3, 1, 0},          {1, 1, 5, 2, 1, 3, 3, 1, 0},
		{1, 1, 1, 1, 1, 4, 4, 1, 1},          {1, 1, 5, 5, 1, 3, 3, 1, 2000000000},
		{1 << 20, 64, 64, 64, 1, 1, 1, 1, 0},
	};
	for (size_t t = 0; t < sizeof(bad) / sizeof(bad[0]); t++) {
		FL_CHECK_MSG(fl_conv2d_dims_check(&bad[t]) == FL_EINVAL, "bad dims %zu accepted",
			     t);
		FL_CHECK(strstr(fl_error_msg(), "conv2d") != NULL);
	}
	/* Kernel exactly the padded input: one output pixel. */
	struct fl_conv2d_dims edge = {1, 1, 1, 1, 1, 3, 3, 1, 1};
	FL_CHECK(fl_conv2d_dims_check(&edge) == FL_OK);
	FL_CHECK(fl_conv2d_out_h(&edge) == 1 && fl_conv2d_out_w(&edge) == 1);
}

struct conv_ctx {
	float *x, *w, *b, *work;
	struct fl_conv2d_dims d;
};

static void conv_fd_forward(void *p, float *y)
{
	struct conv_ctx *c = p;
	fl_conv2d_forward(y, c->work, c->x, c->w, c->b, &c->d);
}

static void conv_grad(const struct fl_conv2d_dims *d, uint64_t seed)
{
	struct conv_ctx c = {0};
	c.d = *d;
	size_t nx = conv_x_n(d), ny = conv_y_n(d), nw = conv_w_n(d);
	c.x = fl_test_frand(nx, seed);
	c.w = fl_test_frand(nw, seed + 1);
	c.b = fl_test_frand(d->out_c, seed + 2);
	c.work = fl_test_falloc(fl_conv2d_work_floats(d));
	float *g = fl_test_frand(ny, seed + 3), *y = fl_test_falloc(ny);
	float *dx = calloc(nx, sizeof(float)), *dw = calloc(nw, sizeof(float));
	float *db = calloc(d->out_c, sizeof(float));
	fl_conv2d_backward(dx, dw, db, c.work, g, c.x, c.w, d);
	fl_test_fd_check(c.x, nx, dx, conv_fd_forward, &c, y, g, ny, 1e-2f, 1e-3, 1e-4);
	fl_test_fd_check(c.w, nw, dw, conv_fd_forward, &c, y, g, ny, 1e-2f, 1e-3, 1e-4);
	fl_test_fd_check(c.b, d->out_c, db, conv_fd_forward, &c, y, g, ny, 1e-2f, 1e-3, 1e-4);
	free(c.x), free(c.w), free(c.b), free(c.work), free(g), free(y);
	free(dx), free(dw), free(db);
}

static void test_conv_grad(void)
{
	struct fl_conv2d_dims a = {2, 3, 7, 6, 4, 3, 2, 2, 1};
	struct fl_conv2d_dims b = {3, 2, 6, 6, 3, 5, 5, 1, 2};
	conv_grad(&a, 300);
	conv_grad(&b, 400);
}

/* ---- ReLU ---------------------------------------------------------------- */

struct relu_ctx {
	float *x;
	size_t n;
};

static void relu_fd_forward(void *p, float *y)
{
	struct relu_ctx *c = p;
	fl_relu_forward(y, c->x, c->n);
}

static void test_relu(void)
{
	size_t n = 257;
	float *x = fl_test_frand(n, 21), *y = fl_test_falloc(n), *g = fl_test_frand(n, 22);
	/* |x| in [0.1, 1]: a step of 1e-2 never crosses the kink. */
	for (size_t i = 0; i < n; i++)
		x[i] = x[i] < 0 ? x[i] * 0.9f - 0.1f : x[i] * 0.9f + 0.1f;
	fl_relu_forward(y, x, n);
	for (size_t i = 0; i < n; i++)
		FL_CHECK(y[i] == (x[i] > 0 ? x[i] : 0.0f));
	float *dx = calloc(n, sizeof(float));
	fl_relu_backward(dx, y, g, n);
	struct relu_ctx c = {x, n};
	fl_test_fd_check(x, n, dx, relu_fd_forward, &c, y, g, n, 1e-2f, 1e-3, 1e-4);
	/* Backward adds. */
	fl_relu_forward(y, x, n);
	fl_relu_backward(dx, y, g, n);
	for (size_t i = 0; i < n; i++)
		FL_CHECK(dx[i] == (x[i] > 0 ? 2.0f * g[i] : 0.0f));
	/* In place. */
	fl_relu_forward(x, x, n);
	FL_CHECK_ARRAY_NEAR(x, y, n, 0, 0);
	free(x), free(y), free(g), free(dx);
}

/* ---- MaxPool2d ----------------------------------------------------------- */

static void test_maxpool_hand(void)
{
	/* One 4x5 plane, 2x2 stride 2: output 2x2, the last column dropped. */
	float x[20] = {1, 5, 2, 2, 9, 3, 4, 8, 0, 9, -1, -2, 7, 7, 9, -3, -4, 7, 6, 9};
	float y[4], dx[20] = {0}, dy[4] = {1, 2, 3, 4};
	int32_t idx[4];
	struct fl_pool2d_dims d = {1, 1, 4, 5, 2, 2};
	FL_CHECK(fl_pool2d_dims_check(&d) == FL_OK);
	FL_CHECK(fl_pool2d_out_h(&d) == 2 && fl_pool2d_out_w(&d) == 2);
	fl_maxpool2d_forward(y, idx, x, &d);
	static const float want[4] = {5, 8, -1, 7};
	static const int32_t want_idx[4] = {1, 7, 10, 12}; /* 7 ties: first in the window */
	for (int i = 0; i < 4; i++) {
		FL_CHECK(y[i] == want[i]);
		FL_CHECK(idx[i] == want_idx[i]);
	}
	fl_maxpool2d_backward(dx, idx, dy, &d);
	for (int i = 0; i < 20; i++) {
		float e = i == 1 ? 1 : i == 7 ? 2 : i == 10 ? 3 : i == 12 ? 4 : 0;
		FL_CHECK(dx[i] == e);
	}
	/* NaN propagates, as in PyTorch. */
	x[5] = NAN;
	fl_maxpool2d_forward(y, idx, x, &d);
	FL_CHECK(isnan(y[0]) && idx[0] == 5);
	static const struct fl_pool2d_dims bad[] = {
		{0, 1, 4, 4, 2, 2}, {1, 0, 4, 4, 2, 2}, {1, 1, 4, 4, 0, 2},
		{1, 1, 4, 4, 2, 0}, {1, 1, 1, 4, 2, 2}, {1, 1, 4, 1, 2, 2},
	};
	for (size_t t = 0; t < sizeof(bad) / sizeof(bad[0]); t++)
		FL_CHECK(fl_pool2d_dims_check(&bad[t]) == FL_EINVAL);
}

struct pool_ctx {
	float *x;
	int32_t *idx;
	struct fl_pool2d_dims d;
};

static void pool_fd_forward(void *p, float *y)
{
	struct pool_ctx *c = p;
	fl_maxpool2d_forward(y, c->idx, c->x, &c->d);
}

static void pool_grad(const struct fl_pool2d_dims *d, uint64_t seed)
{
	struct pool_ctx c = {0};
	c.d = *d;
	size_t nx = (size_t)d->batch * d->channels * d->in_h * d->in_w;
	size_t ny = (size_t)d->batch * d->channels * fl_pool2d_out_h(d) * fl_pool2d_out_w(d);
	/* Distinct values 0.1 apart in random order: a step of 1e-2 never changes
	 * which element wins a window. */
	int *perm = malloc(sizeof(int) * nx);
	for (size_t i = 0; i < nx; i++)
		perm[i] = (int)i;
	struct fl_rng rng;
	fl_rng_seed(&rng, seed);
	fl_rng_shuffle_int(&rng, perm, (int)nx);
	c.x = fl_test_falloc(nx);
	for (size_t i = 0; i < nx; i++)
		c.x[i] = 0.1f * (float)perm[i] - 0.05f * (float)nx;
	c.idx = malloc(sizeof(int32_t) * ny);
	float *g = fl_test_frand(ny, seed + 1), *y = fl_test_falloc(ny),
	      *dx = calloc(nx, sizeof(float));
	fl_maxpool2d_forward(y, c.idx, c.x, d);
	fl_maxpool2d_backward(dx, c.idx, g, d);
	fl_test_fd_check(c.x, nx, dx, pool_fd_forward, &c, y, g, ny, 1e-2f, 1e-3, 1e-4);
	free(perm), free(c.x), free(c.idx), free(g), free(y), free(dx);
}

static void test_maxpool_grad(void)
{
	struct fl_pool2d_dims a = {2, 3, 6, 5, 2, 2};
	struct fl_pool2d_dims b = {1, 2, 7, 7, 3, 2}; /* overlapping windows */
	pool_grad(&a, 31);
	pool_grad(&b, 32);
}

/* ---- Softmax cross-entropy ----------------------------------------------- */

static void test_softmax_ce_values(void)
{
	/* Uniform logits: loss log C, argmax the first class. */
	float u[2 * 7] = {0};
	for (int i = 7; i < 14; i++)
		u[i] = 3.25f;
	int lu[2] = {0, 4};
	double loss = -1;
	int correct = -1;
	fl_softmax_ce_forward(&loss, &correct, NULL, u, lu, 2, 7);
	FL_CHECK_NEAR(loss, log(7.0), 0, 1e-12);
	FL_CHECK(correct == 1);
	/* Hand case (values from log-sum-exp in double):
	 * (1, 2, 3) label 2: log(1 + e^-1 + e^-2) = 0.40760596444438...
	 * (0, 0, 0) label 0: log 3
	 * (5, -1, 0) label 1: 6 + log(1 + e^-6 + e^-5) */
	float l[9] = {1, 2, 3, 0, 0, 0, 5, -1, 0}, probs[9], dl[9];
	int lab[3] = {2, 0, 1};
	double want = (log(1 + exp(-1.0) + exp(-2.0)) + log(3.0) +
		       (6 + log(1 + exp(-6.0) + exp(-5.0)))) /
		      3.0;
	fl_softmax_ce_forward(&loss, &correct, probs, l, lab, 3, 3);
	FL_CHECK_NEAR(loss, want, 0, 1e-7);
	FL_CHECK_NEAR(loss, 2.5051309125680747, 0, 1e-6);
	FL_CHECK(correct == 2);
	for (int n = 0; n < 3; n++)
		FL_CHECK_NEAR(probs[3 * n] + probs[3 * n + 1] + probs[3 * n + 2], 1.0, 0, 1e-6);
	FL_CHECK_NEAR(probs[3], 1.0 / 3.0, 0, 1e-7);
	/* Backward adds (probs - onehot) / B. */
	for (int i = 0; i < 9; i++)
		dl[i] = 1.0f;
	fl_softmax_ce_backward(dl, probs, lab, 3, 3);
	for (int i = 0; i < 9; i++)
		FL_CHECK_NEAR(dl[i], 1.0 + (probs[i] - (i % 3 == lab[i / 3])) / 3.0, 0, 1e-7);
	/* Large logits stay finite. */
	float big[2] = {1000.0f, 0.0f};
	int lb = 1;
	fl_softmax_ce_forward(&loss, &correct, probs, big, &lb, 1, 2);
	FL_CHECK_NEAR(loss, 1000.0, 1e-9, 0);
	FL_CHECK(correct == 0);
	FL_CHECK(probs[0] == 1.0f && probs[1] == 0.0f);
	/* Outputs are optional. */
	fl_softmax_ce_forward(NULL, NULL, NULL, big, &lb, 1, 2);
}

static void test_softmax_ce_grad(void)
{
	int B = 4, C = 6;
	float *l = fl_test_frand((size_t)B * C, 41), *probs = fl_test_falloc((size_t)B * C);
	for (int i = 0; i < B * C; i++)
		l[i] *= 3.0f;
	int lab[4] = {0, 5, 2, 2};
	float *dl = calloc((size_t)B * C, sizeof(float));
	double loss;
	fl_softmax_ce_forward(&loss, NULL, probs, l, lab, B, C);
	fl_softmax_ce_backward(dl, probs, lab, B, C);
	for (int i = 0; i < B * C; i++) {
		float v = l[i], h = 1e-2f, vp = v + h, vm = v - h;
		double lp, lm;
		l[i] = vp;
		fl_softmax_ce_forward(&lp, NULL, NULL, l, lab, B, C);
		l[i] = vm;
		fl_softmax_ce_forward(&lm, NULL, NULL, l, lab, B, C);
		l[i] = v;
		FL_CHECK_NEAR((lp - lm) / ((double)vp - vm), dl[i], 1e-3, 1e-5);
	}
	free(l), free(probs), free(dl);
}

int main(void)
{
	FL_RUN(test_linear_vs_ref);
	FL_RUN(test_linear_grad);
	FL_RUN(test_conv_vs_ref);
	FL_RUN(test_conv_hand);
	FL_RUN(test_conv_dims);
	FL_RUN(test_conv_grad);
	FL_RUN(test_relu);
	FL_RUN(test_maxpool_hand);
	FL_RUN(test_maxpool_grad);
	FL_RUN(test_softmax_ce_values);
	FL_RUN(test_softmax_ce_grad);
	return fl_test_main_end();
}
