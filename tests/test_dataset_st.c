/* test_dataset_st.c - safetensors data folders: folders written here with
 * the safetensors writer (U8 image, F32 image, F32 flat, I32 and I64
 * labels), the loaded samples and labels, normalisation against statistics
 * computed here in double, gather, subsets, the split checks of
 * fl_dataset_copy_norm, a partition with holdout over float data, token-id
 * folders (I32 and I64 x: exact ids, never normalised, out-of-range ids
 * refused), and every refusal with a message naming the tensor. */
#include "dataset.h"
#include "errors.h"
#include "partition.h"
#include "safetensors.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *tmp;

/* One tensor to write; data NULL leaves it out. */
struct spec {
	enum fl_dtype dtype;
	int ndim;
	int64_t shape[5];
	const void *data;
};

/* dir/<name> holding x and y (each left out when its data is NULL). */
static void write_st(const char *dir, const char *name, const struct spec *x, const struct spec *y)
{
	struct fl_st *st = NULL;
	FL_CHECK(fl_st_new(&st) == FL_OK);
	if (x && x->data)
		FL_CHECK(fl_st_add(st, "x", x->dtype, x->shape, x->ndim, x->data) == FL_OK);
	if (y && y->data)
		FL_CHECK(fl_st_add(st, "y", y->dtype, y->shape, y->ndim, y->data) == FL_OK);
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FL_CHECK_MSG(fl_st_write(st, path) == FL_OK, "%s", fl_error_msg());
	fl_st_free(st);
}

/* A fresh folder under the test's temporary folder. */
static const char *folder(const char *name)
{
	static char buf[512];
	snprintf(buf, sizeof(buf), "%s/%s", tmp, name);
	mkdir(buf, 0700);
	return buf;
}

/* Mean and population std of channel ch of n samples of c x hw floats. */
static void ref_norm(const float *x, int n, int c, int hw, int ch, double *mean, double *std)
{
	double s = 0, ss = 0;
	for (int i = 0; i < n; i++)
		for (int k = 0; k < hw; k++)
			s += x[((size_t)i * c + ch) * hw + k];
	*mean = s / ((double)n * hw);
	for (int i = 0; i < n; i++)
		for (int k = 0; k < hw; k++) {
			double d = x[((size_t)i * c + ch) * hw + k] - *mean;
			ss += d * d;
		}
	*std = sqrt(ss / ((double)n * hw));
}

static void test_u8_image(void)
{
	enum {
		N = 6,
		C = 3,
		H = 2,
		W = 2,
		S = C * H * W
	};
	uint8_t px[N * S];
	int32_t y[N] = {0, 4, 2, 1, 4, 3}, yt[2] = {1, 2};
	for (int i = 0; i < N * S; i++)
		px[i] = (uint8_t)((i * 37 + 11) % 256);
	const char *dir = folder("u8");
	struct spec xs = {FL_DTYPE_U8, 4, {N, C, H, W}, px}, ys = {FL_DTYPE_I32, 1, {N}, y};
	write_st(dir, "train.safetensors", &xs, &ys);
	struct spec xt = {FL_DTYPE_U8, 4, {2, C, H, W}, px}, yts = {FL_DTYPE_I32, 1, {2}, yt};
	write_st(dir, "test.safetensors", &xt, &yts);

	struct fl_dataset *ds = NULL, *te = NULL;
	FL_CHECK_MSG(fl_dataset_load("safetensors", dir, 1, &ds) == FL_OK, "%s", fl_error_msg());
	FL_CHECK(fl_dataset_load("safetensors", dir, 0, &te) == FL_OK);
	if (!FL_CHECK(ds && te))
		goto out;
	FL_CHECK(ds->n == N && ds->ndim == 3 && ds->c == C && ds->h == H && ds->w == W);
	FL_CHECK(ds->classes == 5 && te->classes == 3 && ds->pixels && !ds->values);
	FL_CHECK(memcmp(ds->pixels, px, sizeof(px)) == 0 && ds->labels[1] == 4);
	FL_CHECK(fl_dataset_compute_norm(ds) == FL_OK);
	FL_CHECK(fl_dataset_copy_norm(te, ds) == FL_OK); /* fewer test classes is fine */
	float scaled[N * S], x[S];
	int lab;
	for (int i = 0; i < N * S; i++)
		scaled[i] = (float)(px[i] / 255.0);
	for (int ch = 0; ch < C; ch++) {
		double m, s;
		ref_norm(scaled, N, C, H * W, ch, &m, &s);
		FL_CHECK_NEAR(ds->mean[ch], m, 1e-6, 1e-7);
		FL_CHECK_NEAR(ds->std[ch], s, 1e-6, 1e-7);
	}
	int idx = 4;
	fl_dataset_gather(ds, &idx, 1, x, &lab);
	FL_CHECK(lab == 4);
	for (int k = 0; k < S; k++)
		FL_CHECK_NEAR(x[k], (px[4 * S + k] / 255.0 - ds->mean[k / 4]) / ds->std[k / 4],
			      1e-5, 1e-6);
out:
	fl_dataset_free(ds);
	fl_dataset_free(te);
}

/* A F32 image folder with I64 labels; values from a fixed generator. */
static void test_f32_image(void)
{
	enum {
		N = 5,
		C = 2,
		H = 2,
		W = 3,
		S = C * H * W
	};
	float v[N * S];
	int64_t y[N] = {2, 0, 7, 1, 1}, yt[N] = {0, 1, 2, 3, 4};
	fl_test_fill_uniform(v, N * S, 9, -3.0f, 5.0f);
	const char *dir = folder("f32");
	struct spec xs = {FL_DTYPE_F32, 4, {N, C, H, W}, v}, ys = {FL_DTYPE_I64, 1, {N}, y};
	write_st(dir, "train.safetensors", &xs, &ys);
	struct spec yts = {FL_DTYPE_I64, 1, {N}, yt};
	write_st(dir, "test.safetensors", &xs, &yts);

	struct fl_dataset *ds = NULL, *te = NULL, *sub = NULL;
	FL_CHECK_MSG(fl_dataset_load_safetensors(dir, 1, &ds) == FL_OK, "%s", fl_error_msg());
	FL_CHECK(fl_dataset_load_safetensors(dir, 0, &te) == FL_OK);
	if (!FL_CHECK(ds && te))
		goto out;
	FL_CHECK(ds->values && !ds->pixels && ds->classes == 8 && ds->labels[2] == 7);
	FL_CHECK(memcmp(ds->values, v, sizeof(v)) == 0 && ds->ndim == 3 && ds->c == C);
	FL_CHECK(fl_dataset_compute_norm(ds) == FL_OK);
	for (int ch = 0; ch < C; ch++) {
		double m, s;
		ref_norm(v, N, C, H * W, ch, &m, &s);
		FL_CHECK_NEAR(ds->mean[ch], m, 1e-6, 1e-7);
		FL_CHECK_NEAR(ds->std[ch], s, 1e-6, 1e-7);
	}
	FL_CHECK(fl_dataset_copy_norm(te, ds) == FL_OK && te->mean[1] == ds->mean[1]);
	int idx[2] = {3, 0}, lab[2];
	float x[2 * S];
	fl_dataset_gather(te, idx, 2, x, lab);
	FL_CHECK(lab[0] == 3 && lab[1] == 0);
	for (int k = 0; k < S; k++) {
		int ch = k / (H * W);
		FL_CHECK(x[k] == (v[3 * S + k] - ds->mean[ch]) / ds->std[ch]);
		FL_CHECK(x[S + k] == (v[k] - ds->mean[ch]) / ds->std[ch]);
	}
	FL_CHECK(fl_dataset_subset(ds, idx, 2, &sub) == FL_OK);
	if (FL_CHECK(sub && sub->values && !sub->pixels)) {
		FL_CHECK(sub->ndim == 3 && sub->classes == 8 && sub->labels[0] == 1);
		FL_CHECK(memcmp(sub->values, v + 3 * S, S * sizeof(float)) == 0);
		FL_CHECK(sub->mean[0] == ds->mean[0] && sub->std[1] == ds->std[1]);
	}
out:
	fl_dataset_free(ds);
	fl_dataset_free(te);
	fl_dataset_free(sub);
}

/* F32 (N, F) features: one channel over every feature; a partition with
 * holdout over them. */
static void test_f32_flat(void)
{
	enum {
		N = 40,
		F = 7
	};
	float v[N * F];
	int32_t y[N];
	fl_test_fill_uniform(v, N * F, 4, -1.0f, 2.0f);
	for (int i = 0; i < N; i++)
		y[i] = i % 4;
	const char *dir = folder("flat");
	struct spec xs = {FL_DTYPE_F32, 2, {N, F}, v}, ys = {FL_DTYPE_I32, 1, {N}, y};
	write_st(dir, "train.safetensors", &xs, &ys);
	struct fl_dataset *ds = NULL;
	struct fl_partition *p = NULL;
	FL_CHECK_MSG(fl_dataset_load_safetensors(dir, 1, &ds) == FL_OK, "%s", fl_error_msg());
	if (!FL_CHECK(ds))
		return;
	FL_CHECK(ds->ndim == 1 && ds->c == 1 && ds->h == 1 && ds->w == F && ds->classes == 4);
	FL_CHECK(fl_dataset_compute_norm(ds) == FL_OK);
	double m, s;
	ref_norm(v, N, 1, F, 0, &m, &s);
	FL_CHECK_NEAR(ds->mean[0], m, 1e-6, 1e-7);
	FL_CHECK_NEAR(ds->std[0], s, 1e-6, 1e-7);

	struct fl_partition_config pc;
	fl_partition_config_init(&pc);
	FL_CHECK(fl_partition_parse("dirichlet:1", &pc) == FL_OK);
	pc.clients = 3;
	pc.holdout = 0.25;
	pc.seed = 5;
	FL_CHECK_MSG(fl_partition_make(ds, &pc, &p) == FL_OK, "%s", fl_error_msg());
	if (!FL_CHECK(p))
		goto out;
	int seen[N] = {0}, total = 0;
	for (int c = 0; c < p->clients; c++) {
		const struct fl_partition_client *pcl = &p->client[c];
		FL_CHECK(pcl->n_holdout == (pcl->n_train + pcl->n_holdout) / 4);
		for (int i = 0; i < pcl->n_train; i++)
			seen[pcl->train[i]]++, total++;
		for (int i = 0; i < pcl->n_holdout; i++)
			seen[pcl->holdout[i]]++, total++;
		if (pcl->n_holdout > 0) {
			float x[F];
			int lab, h0 = pcl->holdout[0];
			fl_dataset_gather(ds, pcl->holdout, 1, x, &lab);
			FL_CHECK(lab == y[h0] &&
				 x[F - 1] == (v[h0 * F + F - 1] - ds->mean[0]) / ds->std[0]);
		}
	}
	int once = total == N;
	for (int i = 0; i < N; i++)
		once &= seen[i] == 1;
	FL_CHECK(once);
out:
	fl_partition_free(p);
	fl_dataset_free(ds);
}

/* Train and test splits that disagree: shape, storage, classes. */
static void test_split_mismatch(void)
{
	float v[24] = {0};
	uint8_t px[24] = {0};
	int32_t y[4] = {0, 1, 0, 1}, yt[4] = {0, 1, 2, 5};
	const char *dir = folder("mismatch");
	struct spec xf = {FL_DTYPE_F32, 4, {4, 1, 2, 3}, v}, ys = {FL_DTYPE_I32, 1, {4}, y};
	struct spec xu = {FL_DTYPE_U8, 4, {4, 1, 2, 3}, px},
		    xw = {FL_DTYPE_F32, 4, {4, 1, 3, 2}, v};
	struct spec yts = {FL_DTYPE_I32, 1, {4}, yt};
	struct fl_dataset *tr = NULL, *te = NULL;
	write_st(dir, "train.safetensors", &xf, &ys);
	FL_CHECK(fl_dataset_load_safetensors(dir, 1, &tr) == FL_OK);
	struct {
		const struct spec *x, *y;
		int err;
		const char *needle;
	} cases[] = {{&xu, &ys, FL_ESHAPE, "U8"},
		     {&xw, &ys, FL_ESHAPE, "1x3x2"},
		     {&xf, &yts, FL_EINVAL, "6 classes"}};
	for (size_t i = 0; tr && i < sizeof(cases) / sizeof(cases[0]); i++) {
		write_st(dir, "test.safetensors", cases[i].x, cases[i].y);
		FL_CHECK(fl_dataset_load_safetensors(dir, 0, &te) == FL_OK);
		if (te)
			FL_CHECK(fl_test_fails_with(fl_dataset_copy_norm(te, tr), cases[i].err,
						    cases[i].needle));
		fl_dataset_free(te);
		te = NULL;
	}
	fl_dataset_free(tr);
}

struct bad_case {
	const char *what;
	struct spec x, y;
	int err;
	const char *needle;
};

static void test_errors(void)
{
	static float fv[12], nanv[12];
	static uint8_t u[5 * 12];
	static int32_t y3[3] = {0, 1, 2}, yneg[3] = {0, -1, 2}, ybig[3] = {0, 70000, 1};
	static int64_t tok[6];
	static uint16_t half[12];
	nanv[7] = NAN;
	const struct bad_case cases[] = {
		{"no x", {0}, {FL_DTYPE_I32, 1, {3}, y3}, FL_ENOTFOUND, "'x'"},
		{"no y", {FL_DTYPE_F32, 2, {3, 4}, fv}, {0}, FL_ENOTFOUND, "'y'"},
		{"3 dims",
		 {FL_DTYPE_U8, 3, {3, 2, 2}, u},
		 {FL_DTYPE_I32, 1, {3}, y3},
		 FL_ESHAPE,
		 "unsqueeze"},
		{"5 dims",
		 {FL_DTYPE_U8, 5, {3, 1, 1, 2, 2}, u},
		 {FL_DTYPE_I32, 1, {3}, y3},
		 FL_ESHAPE,
		 "'x'"},
		{"zero dim",
		 {FL_DTYPE_F32, 2, {3, 0}, fv},
		 {FL_DTYPE_I32, 1, {3}, y3},
		 FL_ESHAPE,
		 "dimension 1 is 0"},
		{"zero n",
		 {FL_DTYPE_F32, 2, {0, 4}, fv},
		 {FL_DTYPE_I32, 1, {0}, y3},
		 FL_ESHAPE,
		 "dimension 0 is 0"},
		{"x f16",
		 {FL_DTYPE_F16, 2, {3, 4}, half},
		 {FL_DTYPE_I32, 1, {3}, y3},
		 FL_EFORMAT,
		 "'x' is F16"},
		{"tokens of 3 dims",
		 {FL_DTYPE_I64, 3, {3, 1, 2}, tok},
		 {FL_DTYPE_I32, 1, {3}, y3},
		 FL_ESHAPE,
		 "holds token ids"},
		{"y f32",
		 {FL_DTYPE_F32, 2, {3, 4}, fv},
		 {FL_DTYPE_F32, 1, {3}, fv},
		 FL_EFORMAT,
		 "'y' is F32"},
		{"y 2 dims",
		 {FL_DTYPE_F32, 2, {3, 4}, fv},
		 {FL_DTYPE_I32, 2, {3, 1}, y3},
		 FL_ESHAPE,
		 "'y'"},
		{"n mismatch",
		 {FL_DTYPE_F32, 2, {2, 4}, fv},
		 {FL_DTYPE_I32, 1, {3}, y3},
		 FL_ESHAPE,
		 "'y' holds 3"},
		{"negative",
		 {FL_DTYPE_F32, 2, {3, 4}, fv},
		 {FL_DTYPE_I32, 1, {3}, yneg},
		 FL_EFORMAT,
		 "'y'"},
		{"too large",
		 {FL_DTYPE_F32, 2, {3, 4}, fv},
		 {FL_DTYPE_I32, 1, {3}, ybig},
		 FL_ERANGE,
		 "'y'"},
		{"nan",
		 {FL_DTYPE_F32, 2, {3, 4}, nanv},
		 {FL_DTYPE_I32, 1, {3}, y3},
		 FL_ENONFINITE,
		 "'x': sample 1"},
		{"channels",
		 {FL_DTYPE_U8, 4, {3, 5, 2, 2}, u},
		 {FL_DTYPE_I32, 1, {3}, y3},
		 FL_ERANGE,
		 "'x'"},
	};
	const char *dir = folder("bad");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct bad_case *b = &cases[i];
		write_st(dir, "train.safetensors", &b->x, &b->y);
		struct fl_dataset *ds = NULL;
		int err = fl_dataset_load_safetensors(dir, 1, &ds);
		FL_CHECK_MSG(fl_test_fails_with(err, b->err, b->needle) &&
				     strstr(fl_error_msg(), "train.safetensors"),
			     "case %s", b->what);
		FL_CHECK(ds == NULL);
		fl_dataset_free(ds);
	}
}

/* Token ids (N, L) as I32 and I64: held exactly as floats with the tokens
 * flag, left as they are by the statistics, gathered unchanged; a negative
 * id and an id of 2^24 are refused with the sample named. */
static void test_tokens(void)
{
	enum {
		N = 3,
		L = 4
	};
	const int64_t ids64[N * L] = {0, 1, 255, 7, 65535, 3, 2, 1, (1 << 24) - 1, 0, 9, 42};
	int32_t ids32[N * L];
	int64_t y[N] = {1, 0, 2};
	for (int k = 0; k < N * L; k++)
		ids32[k] = (int32_t)ids64[k];
	for (int wide = 0; wide < 2; wide++) {
		const char *dir = folder(wide ? "tok64" : "tok32");
		struct spec xs = {wide ? FL_DTYPE_I64 : FL_DTYPE_I32,
				  2,
				  {N, L},
				  wide ? (const void *)ids64 : (const void *)ids32};
		struct spec ys = {FL_DTYPE_I64, 1, {N}, y};
		write_st(dir, "train.safetensors", &xs, &ys);
		struct fl_dataset *ds = NULL;
		int err = fl_dataset_load_safetensors(dir, 1, &ds);
		FL_CHECK_MSG(err == FL_OK, "%s", fl_error_msg());
		if (err)
			continue;
		FL_CHECK(ds->tokens == 1 && ds->ndim == 1 && ds->n == N && ds->w == L);
		FL_CHECK(ds->c == 1 && ds->h == 1 && ds->values && !ds->pixels);
		FL_CHECK(ds->classes == 3);
		for (int k = 0; k < N * L; k++)
			FL_CHECK_MSG(ds->values[k] == (float)ids64[k], "id %d", k);
		FL_CHECK(fl_dataset_compute_norm(ds) == FL_OK);
		FL_CHECK(ds->mean[0] == 0.0f && ds->std[0] == 1.0f);
		float x[N * L];
		int yy[N], idx[N] = {2, 0, 1};
		fl_dataset_gather(ds, idx, N, x, yy);
		for (int i = 0; i < N; i++) {
			FL_CHECK(yy[i] == (int)y[idx[i]]);
			for (int j = 0; j < L; j++)
				FL_CHECK(x[i * L + j] == (float)ids64[idx[i] * L + j]);
		}
		fl_dataset_free(ds);
	}
	const int64_t neg[2 * L] = {0, 1, 2, 3, 4, -1, 6, 7};
	const int32_t big[2 * L] = {0, 1, 2, 3, 4, 5, 6, 1 << 24};
	int64_t y2[2] = {0, 1};
	const struct spec bad[] = {{FL_DTYPE_I64, 2, {2, L}, neg}, {FL_DTYPE_I32, 2, {2, L}, big}};
	const char *needle[] = {"token id -1", "token id 16777216"};
	const char *dir = folder("tokbad");
	for (int i = 0; i < 2; i++) {
		struct spec ys = {FL_DTYPE_I64, 1, {2}, y2};
		write_st(dir, "train.safetensors", &bad[i], &ys);
		struct fl_dataset *ds = NULL;
		int err = fl_dataset_load_safetensors(dir, 1, &ds);
		FL_CHECK_MSG(fl_test_fails_with(err, FL_ERANGE, needle[i]) &&
				     strstr(fl_error_msg(), "sample 1"),
			     "case %d: %s", i, fl_error_msg());
		FL_CHECK(ds == NULL);
	}
}

static void test_missing_and_malformed(void)
{
	struct fl_dataset *ds = NULL;
	const char *path;
	FL_CHECK(fl_test_fails_with(fl_dataset_load_safetensors("/nonexistent/data", 1, &ds),
				    FL_ENOTFOUND, "not a folder"));
	const char *dir = folder("half");
	float v[4] = {1, 2, 3, 4};
	int32_t y[2] = {0, 1};
	struct spec xs = {FL_DTYPE_F32, 2, {2, 2}, v}, ys = {FL_DTYPE_I32, 1, {2}, y};
	write_st(dir, "train.safetensors", &xs, &ys);
	FL_CHECK(fl_test_fails_with(fl_dataset_load_safetensors(dir, 0, &ds), FL_ENOTFOUND,
				    "test.safetensors"));
	path = fl_test_join(dir, "test.safetensors");
	fl_test_write_file(path, "\x10\0\0\0\0\0\0\0{\"x\": 1}garbage", 24);
	FL_CHECK(fl_test_fails_with(fl_dataset_load_safetensors(dir, 0, &ds), FL_EFORMAT,
				    "test.safetensors"));
	fl_test_write_file(path, "\xff\xff", 2);
	FL_CHECK(fl_test_fails_with(fl_dataset_load_safetensors(dir, 0, &ds), FL_EFORMAT, NULL));
	FL_CHECK(fl_test_fails_with(fl_dataset_load("safetensors", NULL, 1, &ds), FL_EINVAL,
				    "path"));
	FL_CHECK(
		fl_test_fails_with(fl_dataset_load("nope", dir, 1, &ds), FL_EINVAL, "safetensors"));
	FL_CHECK(ds == NULL);
}

int main(void)
{
	tmp = fl_test_tmpdir("dataset_st");
	FL_RUN(test_u8_image);
	FL_RUN(test_f32_image);
	FL_RUN(test_f32_flat);
	FL_RUN(test_split_mismatch);
	FL_RUN(test_errors);
	FL_RUN(test_tokens);
	FL_RUN(test_missing_and_malformed);
	return fl_test_main_end();
}
