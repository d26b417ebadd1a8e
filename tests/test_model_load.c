/* test_model_load.c - loading model folders when something is wrong:
 * missing or malformed fedloha.json, missing / truncated / mis-shaped
 * safetensors files and tensors (clean errors: one line, no model, no
 * leak), saving over an older folder, a loha folder without its base file,
 * unwritable targets, and fl_model_load_base (values, shape mismatch,
 * missing tensor). Round trips: test_model_io.c. */
#include "errors.h"
#include "model.h"
#include "model_io.h"
#include "safetensors.h"
#include "modelutil.h"
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -1;
	fputs(text, f);
	return fclose(f);
}

static void copy_file(const char *from, const char *to)
{
	char *s = NULL;
	FILE *f = fopen(from, "rb");
	long n = 0;
	if (f) {
		fseek(f, 0, SEEK_END);
		n = ftell(f);
		fseek(f, 0, SEEK_SET);
		s = malloc((size_t)n + 1);
		if (fread(s, 1, (size_t)n, f) != (size_t)n)
			n = 0;
		fclose(f);
	}
	FILE *g = fopen(to, "wb");
	if (g && s)
		fwrite(s, 1, (size_t)n, g);
	if (g)
		fclose(g);
	free(s);
}

/* A copy of folder `src` as `dst` (files model.safetensors, fedloha.json and
 * the adapter files when present). */
static void copy_folder(const char *src, const char *dst)
{
	const char *names[] = {"model.safetensors", "fedloha.json", "adapter_model.safetensors",
			       "adapter_config.json", "base_model.safetensors"};
	char cmd[2048];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mkdir -p '%s'", dst, dst);
	if (system(cmd) != 0)
		return;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char a[1024], b[1024];
		snprintf(a, sizeof(a), "%s/%s", src, names[i]);
		snprintf(b, sizeof(b), "%s/%s", dst, names[i]);
		if (access(a, F_OK) == 0)
			copy_file(a, b);
	}
}
/* ---- broken folders ---- */

static int load_fails(const char *dir, int expect_err, const char *what)
{
	struct fl_model *m = (struct fl_model *)1;
	fl_error_clear();
	int err = fl_model_load(dir, 4, &m);
	int ok = err != FL_OK && m == NULL && (expect_err == 0 || err == expect_err) &&
		 strlen(fl_error_msg()) > 0 && strchr(fl_error_msg(), '\n') == NULL;
	FL_CHECK_MSG(ok, "%s: load gave %d (%s), expected failure %d", what, err, fl_error_msg(),
		     expect_err);
	if (err == FL_OK)
		fl_model_free(m);
	return ok;
}

/* Replaces the first occurrence of `from` in dir/fedloha.json by `to`. */
static void edit_json(const char *dir, const char *from, const char *to)
{
	char *s = fl_test_read_file(fl_test_join(dir, "fedloha.json"), NULL);
	if (!s)
		return;
	char *p = strstr(s, from);
	FL_CHECK_MSG(p != NULL, "'%s' not in fedloha.json", from);
	if (p) {
		size_t n = strlen(s) + strlen(to) + 1;
		char *t = malloc(n);
		memcpy(t, s, (size_t)(p - s));
		strcpy(t + (p - s), to);
		strcat(t, p + strlen(from));
		write_text(fl_test_join(dir, "fedloha.json"), t);
		free(t);
	}
	free(s);
}

/* Rewrites dir/adapter_model.safetensors with tensor `key` replaced by one
 * of shape `shape` (or dropped when ndim == 0). */
static void edit_adapter(const char *dir, const char *key, const int64_t *shape, int ndim)
{
	struct fl_st *in = NULL, *out = NULL;
	if (!FL_CHECK(fl_st_read(fl_test_join(dir, "adapter_model.safetensors"), &in) == FL_OK))
		return;
	FL_CHECK(fl_st_new(&out) == FL_OK);
	FL_CHECK(fl_st_find(in, key) != NULL);
	for (size_t i = 0; i < fl_st_count(in); i++) {
		const struct fl_st_tensor *t = fl_st_at(in, i);
		if (strcmp(t->name, key) != 0) {
			fl_st_add(out, t->name, t->dtype, t->shape, t->ndim, t->data);
		} else if (ndim > 0) {
			size_t n = 1;
			for (int k = 0; k < ndim; k++)
				n *= (size_t)shape[k];
			float *z = calloc(n, sizeof(float));
			fl_st_add_f32(out, t->name, shape, ndim, z);
			free(z);
		}
	}
	FL_CHECK(fl_st_write(out, fl_test_join(dir, "adapter_model.safetensors")) == FL_OK);
	fl_st_free(in);
	fl_st_free(out);
}

static void test_bad_folders(void)
{
	struct fl_model *m = fl_test_small_model(
		"2nn", fl_test_peft_config(FL_PEFT_PARAM_FEDPARA, 0, 0.2, 0, 0));
	if (!m)
		return;
	char good[600], bad[700];
	snprintf(good, sizeof(good), "%s", fl_test_tmpdir("model-bad"));
	snprintf(bad, sizeof(bad), "%s/bad", good);
	strcat(good, "/good");
	if (!FL_CHECK(fl_model_save(m, good, "{\"x\": 1}") == FL_OK)) {
		fl_model_free(m);
		return;
	}
	struct fl_model *l = NULL;
	FL_CHECK(fl_model_load(good, 4, &l) == FL_OK);
	fl_model_free(l);

	load_fails("/nonexistent/fedloha-model", 0, "no folder");
	copy_folder(good, bad);
	unlink(fl_test_join(bad, "fedloha.json"));
	load_fails(bad, 0, "missing fedloha.json");

	const struct {
		const char *from, *to, *what;
	} edits[] = {
		{"\"2nn\"", "\"resnet\"", "unknown arch"},
		{"\"2nn\"", "2", "arch not a string"},
		{"\"fedloha-model\"", "\"other\"", "wrong format"},
		{"\"input\": [\n    1,", "\"input\": [\n    -1,", "negative channels"},
		{"\"input\": [\n    1,\n    8,", "\"input\": [\n    1,\n    0,", "zero height"},
		{"\"input\": [\n    1,\n    8,", "\"input\": [\n    1,\n    8.5,",
		 "fractional height"},
		{"\"input\": [\n    1,\n    8,\n    8\n  ]", "\"input\": [1, 8]",
		 "input of 2 dims"},
		{"\"classes\": 4", "\"classes\": 1", "one class"},
		{"\"classes\": 4", "\"classes\": 7", "classes != saved tensors"},
		{"\"classes\": 4", "\"classes\": \"4\"", "classes a string"},
		{"\"parameterization\": \"fedpara\"", "\"parameterization\": \"magic\"",
		 "unknown parameterization"},
		{"\"r\": ", "\"r\": -", "negative rank"},
		{"\"r\": ", "\"r\": 1000", "rank != saved tensors"},
		{"\"layers\": [", "\"layers\": 3, \"x\": [", "layers not a list"},
		{"\"name\": \"fc1\"", "\"name\": \"fc1; rm -rf\"", "bad layer name"},
		{"\"name\": \"fc1\"", "\"name\": 5", "layer name not a string"},
		{"\"version\": 1\n}", "\"version\": 1\n", "truncated JSON"},
		{"{", "[", "not an object"},
	};
	for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
		copy_folder(good, bad);
		edit_json(bad, edits[i].from, edits[i].to);
		load_fails(bad, 0, edits[i].what);
	}
	copy_folder(good, bad);
	write_text(fl_test_join(bad, "fedloha.json"), "");
	load_fails(bad, FL_EFORMAT, "empty fedloha.json");

	/* tensors */
	copy_folder(good, bad);
	unlink(fl_test_join(bad, "model.safetensors"));
	load_fails(bad, FL_ENOTFOUND, "missing model.safetensors");
	copy_folder(good, bad);
	unlink(fl_test_join(bad, "adapter_model.safetensors"));
	load_fails(bad, 0, "missing adapter_model.safetensors");
	const struct fl_model_tensor *t = fl_model_tensor_find(m, "fc1.hada_w1_a");
	if (FL_CHECK(t != NULL)) {
		int64_t transposed[2] = {t->shape[1], t->shape[0]},
			bigger[2] = {t->shape[0] + 1, t->shape[1]};
		int64_t flat[1] = {(int64_t)t->numel};
		copy_folder(good, bad);
		edit_adapter(bad, "base_model.model.fc1.hada_w1_a", transposed, 2);
		load_fails(bad, FL_ESHAPE, "transposed factor");
		copy_folder(good, bad);
		edit_adapter(bad, "base_model.model.fc1.hada_w1_a", bigger, 2);
		load_fails(bad, FL_ESHAPE, "factor with an extra row");
		copy_folder(good, bad);
		edit_adapter(bad, "base_model.model.fc1.hada_w1_a", flat, 1);
		load_fails(bad, FL_ESHAPE, "flattened factor");
		copy_folder(good, bad);
		edit_adapter(bad, "base_model.model.fc2.hada_w2_b", NULL, 0);
		load_fails(bad, FL_ENOTFOUND, "missing factor");
	}
	/* a truncated safetensors file */
	copy_folder(good, bad);
	if (truncate(fl_test_join(bad, "model.safetensors"), 100) == 0)
		load_fails(bad, FL_EFORMAT, "truncated model.safetensors");
	copy_folder(good, bad);
	if (truncate(fl_test_join(bad, "adapter_model.safetensors"), 12) == 0)
		load_fails(bad, FL_EFORMAT, "truncated adapter_model.safetensors");
	/* a dense folder whose model.safetensors has a wrong shape */
	struct fl_model *d = NULL, *d5 = NULL;
	char dense_dir[700];
	snprintf(dense_dir, sizeof(dense_dir), "%s/dense", good);
	if (FL_CHECK(fl_model_new("2nn", 1, 8, 8, 4, NULL, 3, 4, &d) == FL_OK &&
		     fl_model_new("2nn", 1, 8, 8, 5, NULL, 3, 4, &d5) == FL_OK)) {
		FL_CHECK(fl_model_save(d, dense_dir, NULL) == FL_OK);
		FL_CHECK(fl_model_save_dense(d5, fl_test_join(dense_dir, "model.safetensors")) ==
			 FL_OK);
		load_fails(dense_dir, FL_ESHAPE, "dense: output layer of 5 classes");
	}
	fl_model_free(d);
	fl_model_free(d5);
	fl_model_free(m);
}

/* Saving a model into a folder that held another save: loading gives the
 * model saved last (no stale adapter or base file is read). */
/* jansson's error text quotes the bytes near the error, a raw newline
 * included: the message stays one line. */
static void test_json_error_one_line(void)
{
	const char *dir = fl_test_tmpdir("model-jsonerr");
	char path[512];
	snprintf(path, sizeof(path), "%s/fedloha.json", dir);
	const char *raw = "{\"arch\": \"a\\\nb\"}";
	fl_test_write_file(path, raw, strlen(raw));
	struct fl_model *m = NULL;
	FL_CHECK(fl_model_load(dir, 1, &m) == FL_EFORMAT && !m);
	FL_CHECK_MSG(!strchr(fl_error_msg(), '\n'), "%s", fl_error_msg());
}

static void test_save_over_old_folder(void)
{
	struct fl_peft_config *cfg = fl_test_peft_config(FL_PEFT_PARAM_FEDPARA, 0, 0.2, 0, 0);
	struct fl_model *f = NULL, *d = NULL, *l = NULL;
	int err = fl_model_new("2nn", 1, 8, 8, 4, cfg, 3, 4, &f);
	if (!err)
		err = fl_model_new("2nn", 1, 8, 8, 4, NULL, 4, 4, &d);
	fl_peft_config_free(cfg);
	const char *dir = fl_test_tmpdir("model-over");
	if (FL_CHECK(err == FL_OK) && FL_CHECK(fl_model_save(f, dir, NULL) == FL_OK) &&
	    FL_CHECK(fl_model_save(d, dir, NULL) == FL_OK)) {
		err = fl_model_load(dir, 4, &l);
		if (FL_CHECK_MSG(err == FL_OK, "%s", fl_error_msg()))
			FL_CHECK_MSG(fl_model_param_floats(l) == fl_model_param_floats(d) &&
					     memcmp(fl_model_params(l), fl_model_params(d),
						    sizeof(float) * fl_model_param_floats(d)) == 0,
				     "dense save over a fedpara folder: stale weights loaded");
	}
	fl_model_free(f);
	fl_model_free(d);
	fl_model_free(l);
}

/* A loha folder without base_model.safetensors: model.safetensors holds
 * W0 + ΔW under "<name>.weight", which is not the frozen W0. Loading must
 * either fail or still give the saved model, never W0 + 2ΔW. */
static void test_loha_missing_base(void)
{
	struct fl_model *m = fl_test_small_model(
		"2nn", fl_test_peft_config(FL_PEFT_PARAM_LOHA, 0, 0, 2, 2));
	struct fl_model *l = NULL;
	if (!m)
		return;
	fl_test_fill_uniform(fl_model_params(m), fl_model_param_floats(m), 5, -0.3f, 0.3f);
	fl_model_params_changed(m);
	const char *dir = fl_test_tmpdir("model-nobase");
	if (FL_CHECK(fl_model_save(m, dir, NULL) == FL_OK)) {
		unlink(fl_test_join(dir, "base_model.safetensors"));
		int err = fl_model_load(dir, 4, &l);
		if (err == FL_OK) {
			float x[2 * 64], ya[2 * 4], yb[2 * 4];
			fl_test_fill_uniform(x, 128, 6, -1, 1);
			memcpy(ya, fl_model_forward(m, x, 2, 0, NULL), sizeof(ya));
			memcpy(yb, fl_model_forward(l, x, 2, 0, NULL), sizeof(yb));
			FL_CHECK_MSG(
				memcmp(ya, yb, sizeof(ya)) == 0,
				"loha folder without base_model.safetensors loads as another model "
				"(W0 taken from the composed model.safetensors)");
		}
	}
	fl_model_free(m);
	fl_model_free(l);
}

/* Saving into a path that cannot be a folder fails cleanly. */
static void test_save_errors(void)
{
	struct fl_model *m = NULL;
	if (!FL_CHECK(fl_model_new("mlp", 1, 4, 4, 3, NULL, 1, 2, &m) == FL_OK))
		return;
	const char *dir = fl_test_tmpdir("model-save");
	char file[700];
	snprintf(file, sizeof(file), "%s/plainfile", dir);
	write_text(file, "x");
	char sub[800];
	snprintf(sub, sizeof(sub), "%s/sub", file);
	FL_CHECK(fl_model_save(m, sub, NULL) != FL_OK);
	FL_CHECK(fl_model_save(m, dir, "{not json") != FL_OK);
	fl_model_free(m);
}

/* ---- fl_model_load_base ---- */

static void test_load_base(void)
{
	const char *dir = fl_test_tmpdir("model-base");
	char path[700], path5[700], path_cnn[700], path_partial[700];
	snprintf(path, sizeof(path), "%s/base.safetensors", dir);
	snprintf(path5, sizeof(path5), "%s/base5.safetensors", dir);
	snprintf(path_cnn, sizeof(path_cnn), "%s/cnn.safetensors", dir);
	snprintf(path_partial, sizeof(path_partial), "%s/partial.safetensors", dir);
	struct fl_model *dense = NULL, *dense5 = NULL, *cnn = NULL, *l = NULL;
	struct fl_peft_config *cfg = fl_test_peft_config(FL_PEFT_PARAM_LOHA, 0, 0, 4, 4);
	int err = fl_model_new("2nn", 1, 8, 8, 4, NULL, 100, 4, &dense);
	if (!err)
		err = fl_model_new("2nn", 1, 8, 8, 5, NULL, 100, 4, &dense5);
	if (!err)
		err = fl_model_new("cnn", 1, 8, 8, 4, NULL, 100, 4, &cnn);
	if (!err)
		err = fl_model_new("2nn", 1, 8, 8, 4, cfg, 1, 4, &l);
	fl_peft_config_free(cfg);
	if (!FL_CHECK_MSG(err == FL_OK, "%s", fl_error_msg()))
		goto out;
	FL_CHECK(fl_model_save_dense(dense, path) == FL_OK);
	FL_CHECK(fl_model_save_dense(dense5, path5) == FL_OK);
	FL_CHECK(fl_model_save_dense(cnn, path_cnn) == FL_OK);
	size_t np = fl_model_param_floats(l);
	float *before = malloc(sizeof(float) * np);
	memcpy(before, fl_model_params(l), sizeof(float) * np);
	FL_CHECK(fl_model_load_base(l, path) == FL_OK);
	for (size_t i = 0; i < fl_model_tensor_count(l); i++) {
		const struct fl_model_tensor *t = fl_model_tensor_at(l, i);
		const float *now = fl_model_params(l) + t->offset;
		if (t->flags & FL_TENSOR_BASE) {
			const struct fl_model_tensor *s = fl_model_tensor_find(dense, t->name);
			FL_CHECK_MSG(s && memcmp(now, fl_model_params(dense) + s->offset,
						 sizeof(float) * t->numel) == 0,
				     "%s not loaded", t->name);
		} else {
			FL_CHECK_MSG(memcmp(now, before + t->offset, sizeof(float) * t->numel) == 0,
				     "%s changed by load_base", t->name);
		}
	}
	/* ΔW = 0 at init: the adapted model computes the base model */
	float x[2 * 64], ya[2 * 4], yb[2 * 4];
	fl_test_fill_uniform(x, 128, 2, -1, 1);
	memcpy(ya, fl_model_forward(dense, x, 2, 0, NULL), sizeof(ya));
	memcpy(yb, fl_model_forward(l, x, 2, 0, NULL), sizeof(yb));
	FL_CHECK(memcmp(ya, yb, sizeof(ya)) == 0);

	fl_error_clear();
	err = fl_model_load_base(l, path5);
	FL_CHECK_MSG(err == FL_ESHAPE && strstr(fl_error_msg(), "fc3"), "5 classes: %d %s", err,
		     fl_error_msg());
	fl_error_clear();
	err = fl_model_load_base(l, path_cnn);
	FL_CHECK_MSG(err == FL_ENOTFOUND || err == FL_ESHAPE, "cnn file: %d %s", err,
		     fl_error_msg());
	FL_CHECK(strlen(fl_error_msg()) > 0);
	/* a file without fc2.weight */
	struct fl_st *in = NULL, *out = NULL;
	if (FL_CHECK(fl_st_read(path, &in) == FL_OK && fl_st_new(&out) == FL_OK)) {
		for (size_t i = 0; i < fl_st_count(in); i++) {
			const struct fl_st_tensor *t = fl_st_at(in, i);
			if (strcmp(t->name, "fc2.weight") != 0)
				fl_st_add(out, t->name, t->dtype, t->shape, t->ndim, t->data);
		}
		FL_CHECK(fl_st_write(out, path_partial) == FL_OK);
		fl_error_clear();
		err = fl_model_load_base(l, path_partial);
		FL_CHECK_MSG(err == FL_ENOTFOUND && strstr(fl_error_msg(), "fc2.weight"),
			     "missing fc2.weight: %d %s", err, fl_error_msg());
	}
	fl_st_free(in);
	fl_st_free(out);
	err = fl_model_load_base(l, "/nonexistent/base.safetensors");
	FL_CHECK(err != FL_OK);
	free(before);
out:
	fl_model_free(dense);
	fl_model_free(dense5);
	fl_model_free(cnn);
	fl_model_free(l);
}

int main(void)
{
	FL_RUN(test_bad_folders);
	FL_RUN(test_json_error_one_line);
	FL_RUN(test_save_over_old_folder);
	FL_RUN(test_loha_missing_base);
	FL_RUN(test_save_errors);
	FL_RUN(test_load_base);
	return fl_test_main_end();
}
