/* test_model_init.c - fl_model_load_init, initial weights by name from a
 * PyTorch state dict: a dense round trip, a loha base (factors kept), the
 * from-scratch parameterisations, every problem of a file in one message
 * (missing, unexpected, shape, capped lists), F16 files and non-finite
 * values. Folders saved by fl_model_save: test_model_io.c. */
#include "errors.h"
#include "half.h"
#include "model.h"
#include "model_io.h"
#include "modelutil.h"
#include "safetensors.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The 2nn on 1x8x8 inputs, 4 classes, with cfg (freed; NULL = dense). */
static struct fl_model *small_2nn(struct fl_peft_config *cfg, uint64_t seed)
{
	struct fl_model *m = fl_test_model("2nn", 1, 8, 8, 4, cfg, seed, 4);
	fl_peft_config_free(cfg);
	return m;
}

/* A copy of m's parameters, to check they did not change. */
static float *params_copy(struct fl_model *m)
{
	size_t n = fl_model_param_floats(m);
	float *p = malloc(n * sizeof(float));
	if (p)
		memcpy(p, fl_model_params(m), n * sizeof(float));
	return p;
}

static int params_equal(struct fl_model *m, const float *p)
{
	return memcmp(fl_model_params(m), p, fl_model_param_floats(m) * sizeof(float)) == 0;
}

/* The dense state dict of `from` at path, with `drop` left out (NULL:
 * none), every tensor in dtype (F32 or F16) and `nan_in` (NULL: none)
 * holding a NaN. */
static void write_state(struct fl_model *from, const char *path, const char *drop,
			enum fl_dtype dtype, const char *nan_in)
{
	struct fl_st *st = NULL;
	FL_CHECK(fl_st_new(&st) == FL_OK);
	for (size_t i = 0; st && i < fl_model_tensor_count(from); i++) {
		const struct fl_model_tensor *t = fl_model_tensor_at(from, i);
		if (drop && !strcmp(t->name, drop))
			continue;
		float *v = params_copy(from) + t->offset;
		uint16_t *h = malloc(t->numel * sizeof(uint16_t));
		if (nan_in && !strcmp(t->name, nan_in))
			v[t->numel - 1] = NAN;
		for (size_t k = 0; k < t->numel; k++)
			h[k] = fl_f32_to_f16(v[k]);
		FL_CHECK(fl_st_add(st, t->name, dtype, t->shape, t->ndim,
				   dtype == FL_DTYPE_F16 ? (const void *)h : (const void *)v) ==
			 FL_OK);
		free(h);
		free(v - t->offset);
	}
	FL_CHECK(st && fl_st_write(st, path) == FL_OK);
	fl_st_free(st);
}

static void test_dense_round_trip(void)
{
	const char *path = fl_test_join(fl_test_tmpdir("init-dense"), "model.safetensors");
	struct fl_model *a = small_2nn(NULL, 100), *b = small_2nn(NULL, 7);
	if (!a || !b)
		goto out;
	FL_CHECK(fl_model_save_dense(a, path) == FL_OK);
	FL_CHECK(!params_equal(b, fl_model_params(a)));
	FL_CHECK_MSG(fl_model_load_init(b, path) == FL_OK, "%s", fl_error_msg());
	FL_CHECK(params_equal(b, fl_model_params(a)));
out:
	fl_model_free(a);
	fl_model_free(b);
}

/* loha: the base (weights and biases) from the file, the factors as seeded. */
static void test_loha_base(void)
{
	const char *path = fl_test_join(fl_test_tmpdir("init-loha"), "model.safetensors");
	struct fl_model *d = small_2nn(NULL, 100);
	struct fl_model *l = small_2nn(fl_test_peft_config(FL_PEFT_PARAM_LOHA, 0, 0, 4, 4), 1);
	float *before = l ? params_copy(l) : NULL;
	if (!d || !l || !before)
		goto out;
	FL_CHECK(fl_model_save_dense(d, path) == FL_OK);
	FL_CHECK_MSG(fl_model_load_init(l, path) == FL_OK, "%s", fl_error_msg());
	for (size_t i = 0; i < fl_model_tensor_count(l); i++) {
		const struct fl_model_tensor *t = fl_model_tensor_at(l, i);
		const struct fl_model_tensor *s = fl_model_tensor_find(d, t->name);
		const float *now = fl_model_params(l) + t->offset;
		const float *want = s ? fl_model_params(d) + s->offset : before + t->offset;
		FL_CHECK_MSG(!memcmp(now, want, t->numel * sizeof(float)), "%s", t->name);
		FL_CHECK_MSG(!!s == !strstr(t->name, ".hada_"), "%s", t->name);
	}
	float x[2 * 64], ya[2 * 4];
	fl_test_fill_uniform(x, 128, 2, -1, 1);
	memcpy(ya, fl_model_forward(d, x, 2, 0, NULL), sizeof(ya));
	FL_CHECK(!memcmp(ya, fl_model_forward(l, x, 2, 0, NULL), sizeof(ya)));
out:
	free(before);
	fl_model_free(d);
	fl_model_free(l);
}

/* fedpara: biases and the untargeted output layer load; a targeted
 * layer's dense weight is refused. */
static void test_from_scratch(void)
{
	const char *dir = fl_test_tmpdir("init-fedpara");
	char full[700], part[700];
	snprintf(full, sizeof(full), "%s/full.safetensors", dir);
	snprintf(part, sizeof(part), "%s/part.safetensors", dir);
	struct fl_model *d = small_2nn(NULL, 100);
	struct fl_model *f = small_2nn(fl_test_peft_config(FL_PEFT_PARAM_FEDPARA, 0, 0.5, 0, 0), 1);
	float *before = f ? params_copy(f) : NULL;
	if (!d || !f || !before)
		goto out;
	FL_CHECK(fl_model_save_dense(d, full) == FL_OK);
	int err = fl_model_load_init(f, full);
	FL_CHECK_MSG(err == FL_ESHAPE &&
			     strstr(fl_error_msg(), "from-scratch layers have no dense weight: "
						    "fc1.weight, fc2.weight") &&
			     !strstr(fl_error_msg(), "fc3"),
		     "%d %s", err, fl_error_msg());
	FL_CHECK(params_equal(f, before));
	struct fl_st *in = NULL, *out = NULL;
	if (FL_CHECK(fl_st_read(full, &in) == FL_OK && fl_st_new(&out) == FL_OK)) {
		for (size_t i = 0; i < fl_st_count(in); i++) {
			const struct fl_st_tensor *t = fl_st_at(in, i);
			if (strcmp(t->name, "fc1.weight") && strcmp(t->name, "fc2.weight"))
				fl_st_add(out, t->name, t->dtype, t->shape, t->ndim, t->data);
		}
		FL_CHECK(fl_st_write(out, part) == FL_OK);
		FL_CHECK_MSG(fl_model_load_init(f, part) == FL_OK, "%s", fl_error_msg());
		const struct fl_model_tensor *b = fl_model_tensor_find(f, "fc1.bias");
		const struct fl_model_tensor *db = fl_model_tensor_find(d, "fc1.bias");
		FL_CHECK(b && db &&
			 !memcmp(fl_model_params(f) + b->offset, fl_model_params(d) + db->offset,
				 b->numel * sizeof(float)));
	}
	fl_st_free(in);
	fl_st_free(out);
out:
	free(before);
	fl_model_free(d);
	fl_model_free(f);
}

/* Missing, unexpected and mis-shaped keys in one message; m untouched. */
static void test_problems_listed(void)
{
	const char *path = fl_test_join(fl_test_tmpdir("init-bad"), "bad.safetensors");
	struct fl_model *d = small_2nn(NULL, 100), *m = small_2nn(NULL, 7);
	float *before = m ? params_copy(m) : NULL;
	struct fl_st *in = NULL, *out = NULL;
	if (!d || !m || !before)
		goto out;
	FL_CHECK(fl_model_save_dense(d, path) == FL_OK);
	if (!FL_CHECK(fl_st_read(path, &in) == FL_OK && fl_st_new(&out) == FL_OK))
		goto out;
	float small[15] = {0};
	int64_t s35[2] = {3, 5}, s1[1] = {1};
	for (size_t i = 0; i < fl_st_count(in); i++) {
		const struct fl_st_tensor *t = fl_st_at(in, i);
		if (!strcmp(t->name, "fc1.weight"))
			fl_st_add_f32(out, t->name, s35, 2, small);
		else if (strcmp(t->name, "fc2.weight"))
			fl_st_add(out, t->name, t->dtype, t->shape, t->ndim, t->data);
	}
	fl_st_add_f32(out, "extra.weight", s1, 1, small);
	FL_CHECK(fl_st_write(out, path) == FL_OK);
	int err = fl_model_load_init(m, path);
	const char *msg = fl_error_msg();
	FL_CHECK_MSG(err == FL_ESHAPE && strstr(msg, path) &&
			     strstr(msg,
				    ": missing keys: fc2.weight; unexpected keys: extra.weight; "
				    "shape mismatch: fc1.weight file [3, 5] model [200, 64]"),
		     "%d %s", err, msg);
	FL_CHECK(params_equal(m, before));
	/* 20 unexpected keys: the first names, then how many more */
	for (int i = 0; i < 20; i++) {
		char name[32];
		snprintf(name, sizeof(name), "zz%02d", i);
		fl_st_add_f32(out, name, s1, 1, small);
	}
	FL_CHECK(fl_st_write(out, path) == FL_OK);
	err = fl_model_load_init(m, path);
	FL_CHECK_MSG(err == FL_ESHAPE && strstr(fl_error_msg(), "and 13 more"), "%d %s", err,
		     fl_error_msg());
	FL_CHECK(fl_model_load_init(m, "/nonexistent/x.safetensors") != FL_OK);
out:
	fl_st_free(in);
	fl_st_free(out);
	free(before);
	fl_model_free(d);
	fl_model_free(m);
}

/* F16 tensors are widened; a NaN is refused and nothing is loaded. */
static void test_f16_and_nonfinite(void)
{
	const char *dir = fl_test_tmpdir("init-f16");
	char f16[700], nan[700];
	snprintf(f16, sizeof(f16), "%s/f16.safetensors", dir);
	snprintf(nan, sizeof(nan), "%s/nan.safetensors", dir);
	struct fl_model *d = small_2nn(NULL, 100), *m = small_2nn(NULL, 7);
	if (!d || !m)
		goto out;
	write_state(d, f16, NULL, FL_DTYPE_F16, NULL);
	FL_CHECK_MSG(fl_model_load_init(m, f16) == FL_OK, "%s", fl_error_msg());
	int same = 1;
	for (size_t i = 0; i < fl_model_param_floats(m); i++)
		same &= fl_model_params(m)[i] ==
			fl_f16_to_f32(fl_f32_to_f16(fl_model_params(d)[i]));
	FL_CHECK(same);
	float *before = params_copy(m);
	write_state(d, nan, NULL, FL_DTYPE_F32, "fc2.bias");
	int err = fl_model_load_init(m, nan);
	FL_CHECK_MSG(err == FL_ENONFINITE && strstr(fl_error_msg(), "non-finite values: fc2.bias"),
		     "%d %s", err, fl_error_msg());
	FL_CHECK(before && params_equal(m, before));
	free(before);
out:
	fl_model_free(d);
	fl_model_free(m);
}

int main(void)
{
	FL_RUN(test_dense_round_trip);
	FL_RUN(test_loha_base);
	FL_RUN(test_from_scratch);
	FL_RUN(test_problems_listed);
	FL_RUN(test_f16_and_nonfinite);
	return fl_test_main_end();
}
