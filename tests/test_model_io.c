/* test_model_io.c - saving model folders (model_io.h): save/load round
 * trips for every parameterisation (bit-identical parameters and logits,
 * the tensor table with its flags), the PyTorch names and composed values
 * in model.safetensors, the PEFT keys in adapter_model.safetensors, and
 * base_model.safetensors + adapter merged with fl_adapter_merge reproducing
 * model.safetensors. Broken folders and fl_model_load_base:
 * test_model_load.c. */
#include "adapter.h"
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

/* ---- round trips ---- */

struct rt_case {
	const char *what, *arch;
	int c, h, w, classes;
	enum fl_peft_param param;
	int tucker, r;
	double alpha, rank_dropout, module_dropout;
	int save_fc_out; /* loha: modules_to_save = the output layer */
};

/* Every model.safetensors tensor: PyTorch name, shape, composed value. */
static void check_dense_file(struct fl_model *m, const char *path, const char *what)
{
	struct fl_st *st = NULL;
	if (!FL_CHECK_MSG(fl_st_read(path, &st) == FL_OK, "%s: %s", what, fl_error_msg()))
		return;
	FL_CHECK(fl_st_metadata(st, "format") && strcmp(fl_st_metadata(st, "format"), "pt") == 0);
	size_t expected = 0;
	float *w = malloc(sizeof(float) * 3136 * 512);
	struct fl_model_layer_info li;
	char name[64];
	for (int i = 0; fl_test_next_weight(m, &i, &li, name); i++) {
		const struct fl_st_tensor *t = fl_st_find(st, name);
		expected += 2;
		if (!FL_CHECK_MSG(t != NULL, "%s: %s missing", what, name))
			continue;
		int conv = li.kind == FL_LAYER_CONV2D;
		FL_CHECK(t->dtype == FL_DTYPE_F32);
		FL_CHECK_MSG(t->ndim == (conv ? 4 : 2) && t->shape[0] == li.out &&
				     t->shape[1] == li.in &&
				     (!conv || (t->shape[2] == li.k1 && t->shape[3] == li.k2)),
			     "%s: %s has the wrong shape", what, name);
		fl_model_compose_weight(m, i, w);
		FL_CHECK_MSG(t->numel * 4 == t->nbytes && memcmp(t->data, w, t->nbytes) == 0,
			     "%s: %s differs from the composed weight", what, name);
		snprintf(name, sizeof(name), "%s.bias", li.name);
		t = fl_st_find(st, name);
		const struct fl_model_tensor *b = fl_model_tensor_find(m, name);
		if (FL_CHECK_MSG(t && b, "%s: %s missing", what, name))
			FL_CHECK(t->ndim == 1 && t->shape[0] == li.out &&
				 memcmp(t->data, fl_model_params(m) + b->offset, t->nbytes) == 0);
	}
	FL_CHECK_MSG(fl_st_count(st) == expected,
		     "%s: %zu tensors in model.safetensors, expected %zu", what, fl_st_count(st),
		     expected);
	free(w);
	fl_st_free(st);
}

/* adapter_model.safetensors holds base_model.model.<name> for every factor
 * (lowrank conv factors 4-D as PEFT's LoRA Conv2d) and, under loha, the
 * trained dense modules; nothing else. */
static void check_adapter_file(struct fl_model *m, const char *path, const char *what)
{
	struct fl_st *st = NULL;
	if (!FL_CHECK_MSG(fl_st_read(path, &st) == FL_OK, "%s: %s", what, fl_error_msg()))
		return;
	size_t expected = 0;
	for (size_t i = 0; i < fl_model_tensor_count(m); i++) {
		const struct fl_model_tensor *t = fl_model_tensor_at(m, i);
		int factor = strstr(t->name, ".hada_") || strstr(t->name, ".lora_");
		int saved = fl_model_param(m) == FL_PEFT_PARAM_LOHA &&
			    (t->flags & FL_TENSOR_GLOBAL);
		char key[FL_MODEL_NAME_MAX + 32];
		snprintf(key, sizeof(key), "base_model.model.%s", t->name);
		const struct fl_st_tensor *s = fl_st_find(st, key);
		if (!factor && !saved) {
			FL_CHECK_MSG(s == NULL, "%s: %s should not be in the adapter", what, key);
			continue;
		}
		expected++;
		if (!FL_CHECK_MSG(s != NULL, "%s: %s missing from the adapter", what, key))
			continue;
		FL_CHECK(s->numel == t->numel &&
			 memcmp(s->data, fl_model_params(m) + t->offset, s->nbytes) == 0);
		int same = s->ndim == t->ndim;
		for (int k = 0; same && k < t->ndim; k++)
			same = s->shape[k] == t->shape[k];
		if (strstr(t->name, ".lora_") && strstr(t->name, "conv"))
			FL_CHECK_MSG(s->ndim == 4, "%s: %s: LoRA conv factors are 4-D", what, key);
		else
			FL_CHECK_MSG(same, "%s: %s has the wrong shape", what, key);
	}
	FL_CHECK_MSG(fl_st_count(st) == expected, "%s: %zu adapter tensors, expected %zu", what,
		     fl_st_count(st), expected);
	fl_st_free(st);
}

/* Max over tensors of max |a - b| / max |b| (BLAS blocking and thread
 * counts change the rounding of composed weights); -1 when the name sets or
 * shapes differ. */
static double max_rel_diff(const char *a_path, const char *b_path)
{
	struct fl_st *a = NULL, *b = NULL;
	double worst = -1;
	if (fl_st_read(a_path, &a) || fl_st_read(b_path, &b))
		goto out;
	if (fl_st_count(a) != fl_st_count(b))
		goto out;
	worst = 0;
	for (size_t i = 0; i < fl_st_count(a); i++) {
		const struct fl_st_tensor *ta = fl_st_at(a, i), *tb = fl_st_find(b, ta->name);
		if (!tb || tb->numel != ta->numel || ta->ndim != tb->ndim ||
		    memcmp(ta->shape, tb->shape, sizeof(int64_t) * (size_t)ta->ndim) != 0 ||
		    ta->dtype != FL_DTYPE_F32 || tb->dtype != FL_DTYPE_F32) {
			worst = -1;
			goto out;
		}
		const float *x = ta->data, *y = tb->data;
		double d = 0, mx = 1e-30;
		for (size_t k = 0; k < ta->numel; k++) {
			d = fmax(d, fabs((double)x[k] - y[k]));
			mx = fmax(mx, fabs((double)y[k]));
		}
		worst = fmax(worst, d / mx);
	}
out:
	fl_st_free(a);
	fl_st_free(b);
	return worst;
}

static void round_trip(const struct rt_case *rc)
{
	struct fl_peft_config *cfg = NULL;
	if (rc->param != FL_PEFT_PARAM_DENSE) {
		cfg = fl_test_peft_config(rc->param, rc->tucker, 0.2, rc->r, rc->alpha);
		cfg->rank_dropout = rc->rank_dropout;
		cfg->module_dropout = rc->module_dropout;
		if (rc->save_fc_out) {
			cfg->modules_to_save = calloc(1, sizeof(char *));
			cfg->modules_to_save[0] = strdup(strcmp(rc->arch, "2nn") == 0 ? "fc3"
										      : "fc2");
			cfg->n_modules_to_save = 1;
		}
	}
	struct fl_model *m = NULL, *l = NULL;
	int err = fl_model_new(rc->arch, rc->c, rc->h, rc->w, rc->classes, cfg, 3, 8, &m);
	fl_peft_config_free(cfg);
	if (!FL_CHECK_MSG(err == FL_OK, "%s: %s", rc->what, fl_error_msg()))
		return;
	/* trained-looking values everywhere (loha: w2_b no longer zero) */
	size_t np = fl_model_param_floats(m);
	fl_test_fill_uniform(fl_model_params(m), np, 8, -0.2f, 0.2f);
	fl_model_params_changed(m);
	char dir[600];
	snprintf(dir, sizeof(dir), "%s/%s", fl_test_tmpdir("model-io"), "out");
	err = fl_model_save(m, dir, "{\"note\": \"round trip\", \"test_accuracy\": 0.5}");
	if (!FL_CHECK_MSG(err == FL_OK, "%s: save: %s", rc->what, fl_error_msg()))
		goto out;
	err = fl_model_load(dir, 4, &l);
	if (!FL_CHECK_MSG(err == FL_OK, "%s: load: %s", rc->what, fl_error_msg()))
		goto out;
	/* the same model: arch, dims, tensor table, flags, values */
	int c, h, w, k;
	fl_model_input_dims(l, &c, &h, &w, &k);
	FL_CHECK(c == rc->c && h == rc->h && w == rc->w && k == rc->classes);
	FL_CHECK(strcmp(fl_model_arch(l), rc->arch) == 0);
	FL_CHECK(fl_model_param(l) == rc->param);
	FL_CHECK_MSG(fl_model_param_floats(l) == np, "%s: %zu floats loaded, %zu saved", rc->what,
		     fl_model_param_floats(l), np);
	FL_CHECK(fl_model_tensor_count(l) == fl_model_tensor_count(m));
	for (size_t i = 0; i < fl_model_tensor_count(m); i++) {
		const struct fl_model_tensor *a = fl_model_tensor_at(m, i);
		const struct fl_model_tensor *b = fl_model_tensor_find(l, a->name);
		if (!FL_CHECK_MSG(b != NULL, "%s: %s not in the loaded model", rc->what, a->name))
			continue;
		FL_CHECK_MSG(b->flags == a->flags, "%s: %s: flags 0x%x after load, 0x%x saved",
			     rc->what, a->name, b->flags, a->flags);
		FL_CHECK_MSG(b->numel == a->numel && b->ndim == a->ndim &&
				     memcmp(b->shape, a->shape, sizeof(a->shape)) == 0,
			     "%s: %s: shape differs after load", rc->what, a->name);
		FL_CHECK_MSG(b->numel == a->numel && memcmp(fl_model_params(l) + b->offset,
							    fl_model_params(m) + a->offset,
							    sizeof(float) * a->numel) == 0,
			     "%s: %s: values differ after load", rc->what, a->name);
	}
	for (int i = 0; i < fl_model_layer_count(m); i++) {
		struct fl_model_layer_info a, b;
		fl_model_layer_info(m, i, &a);
		fl_model_layer_info(l, i, &b);
		FL_CHECK(a.param == b.param && a.rank == b.rank && a.tucker == b.tucker &&
			 a.scale == b.scale);
	}
	size_t nin = (size_t)rc->c * rc->h * rc->w;
	float *x = malloc(sizeof(float) * nin * 4), ya[4 * 10], yb[4 * 10];
	fl_test_fill_uniform(x, nin * 4, 21, -1, 1);
	memcpy(ya, fl_model_forward(m, x, 4, 0, NULL), sizeof(float) * 4 * rc->classes);
	memcpy(yb, fl_model_forward(l, x, 4, 0, NULL), sizeof(float) * 4 * rc->classes);
	FL_CHECK_MSG(memcmp(ya, yb, sizeof(float) * 4 * rc->classes) == 0,
		     "%s: logits differ after load", rc->what);
	free(x);

	/* the files */
	check_dense_file(m, fl_test_join(dir, "model.safetensors"), rc->what);
	int adapter = rc->param != FL_PEFT_PARAM_DENSE;
	FL_CHECK(access(fl_test_join(dir, "adapter_model.safetensors"), F_OK) ==
		 (adapter ? 0 : -1));
	FL_CHECK(access(fl_test_join(dir, "adapter_config.json"), F_OK) == (adapter ? 0 : -1));
	FL_CHECK(access(fl_test_join(dir, "base_model.safetensors"), F_OK) == (adapter ? 0 : -1));
	if (adapter)
		check_adapter_file(m, fl_test_join(dir, "adapter_model.safetensors"), rc->what);
	json_error_t je;
	json_t *root = json_load_file(fl_test_join(dir, "fedloha.json"), 0, &je);
	if (FL_CHECK_MSG(root != NULL, "%s: fedloha.json: %s", rc->what, je.text)) {
		json_t *meta = json_object_get(root, "meta");
		FL_CHECK(json_is_string(json_object_get(meta, "note")));
		FL_CHECK(json_real_value(json_object_get(meta, "test_accuracy")) == 0.5);
		FL_CHECK(strcmp(json_string_value(json_object_get(root, "arch")), rc->arch) == 0);
	}
	json_decref(root);
	if (adapter) {
		json_t *ac = json_load_file(fl_test_join(dir, "adapter_config.json"), 0, &je);
		const char *pt = json_string_value(json_object_get(ac, "peft_type"));
		FL_CHECK(pt &&
			 strcmp(pt, rc->param == FL_PEFT_PARAM_LOWRANK ? "LORA" : "LOHA") == 0);
		json_decref(ac);
	}
	/* base_model.safetensors + adapter = model.safetensors (PEFT merge) */
	if (rc->param == FL_PEFT_PARAM_FEDPARA || rc->param == FL_PEFT_PARAM_LOHA) {
		char base[1024], merged[1024];
		snprintf(base, sizeof(base), "%s/base_model.safetensors", dir);
		snprintf(merged, sizeof(merged), "%s/merged.safetensors", dir);
		struct fl_adapter_merge_stats ms;
		err = fl_adapter_merge(base, dir, merged, NULL, &ms);
		if (FL_CHECK_MSG(err == FL_OK, "%s: merge: %s", rc->what, fl_error_msg())) {
			double d = max_rel_diff(merged, fl_test_join(dir, "model.safetensors"));
			FL_CHECK_MSG(d >= 0 && d <= 1e-5,
				     "%s: merged base + adapter differs from "
				     "model.safetensors by %g",
				     rc->what, d);
		}
	}
out:
	fl_model_free(m);
	fl_model_free(l);
}

static const struct rt_case rt_cases[] = {
	{"2nn dense", "2nn", 1, 28, 28, 10, FL_PEFT_PARAM_DENSE, 0, 0, 0, 0, 0, 0},
	{"cnn dense", "cnn", 1, 16, 16, 10, FL_PEFT_PARAM_DENSE, 0, 0, 0, 0, 0, 0},
	{"cnn fedpara tucker", "cnn", 1, 16, 16, 10, FL_PEFT_PARAM_FEDPARA, 1, 0, 0, 0, 0, 0},
	{"cnn fedpara reshape", "cnn", 3, 12, 12, 10, FL_PEFT_PARAM_FEDPARA, 0, 0, 0, 0, 0, 0},
	{"2nn fedpara", "2nn", 1, 28, 28, 10, FL_PEFT_PARAM_FEDPARA, 0, 0, 0, 0, 0, 0},
	{"mlp pfedpara", "mlp", 1, 28, 28, 10, FL_PEFT_PARAM_PFEDPARA, 0, 0, 0, 0, 0, 0},
	{"cnn pfedpara tucker", "cnn", 1, 12, 12, 10, FL_PEFT_PARAM_PFEDPARA, 1, 0, 0, 0, 0, 0},
	{"cnn lowrank", "cnn", 1, 12, 12, 10, FL_PEFT_PARAM_LOWRANK, 1, 0, 0, 0, 0, 0},
	{"2nn lowrank", "2nn", 1, 28, 28, 10, FL_PEFT_PARAM_LOWRANK, 0, 0, 0, 0, 0, 0},
	{"2nn loha", "2nn", 1, 28, 28, 10, FL_PEFT_PARAM_LOHA, 0, 4, 8, 0.25, 0.125, 0},
	{"cnn loha", "cnn", 1, 12, 12, 10, FL_PEFT_PARAM_LOHA, 0, 3, 1.5, 0, 0, 0},
	{"cnn loha tucker", "cnn", 1, 12, 12, 10, FL_PEFT_PARAM_LOHA, 1, 2, 4, 0, 0, 0},
	{"2nn loha modules_to_save", "2nn", 1, 28, 28, 10, FL_PEFT_PARAM_LOHA, 0, 4, 4, 0, 0, 1},
};

static void test_round_trips(void)
{
	for (size_t i = 0; i < sizeof(rt_cases) / sizeof(rt_cases[0]); i++) {
		int before = fl_test_failures;
		round_trip(&rt_cases[i]);
		printf("  %-26s %s\n", rt_cases[i].what,
		       fl_test_failures == before ? "ok" : "FAIL");
	}
}

/* pFedPara folders: the PEFT LoHa merge computes W0 + P1 ⊙ P2, not
 * P1 ⊙ (P2 + 1); merging one must either reproduce model.safetensors or be
 * refused, never silently write other weights. */
static void test_pfedpara_merge(void)
{
	struct fl_model *m = fl_test_small_model(
		"mlp", fl_test_peft_config(FL_PEFT_PARAM_PFEDPARA, 0, 0.2, 0, 0));
	if (!m)
		return;
	const char *dir = fl_test_tmpdir("model-pfed");
	if (FL_CHECK(fl_model_save(m, dir, NULL) == FL_OK)) {
		char base[1024], merged[1024];
		snprintf(base, sizeof(base), "%s/base_model.safetensors", dir);
		snprintf(merged, sizeof(merged), "%s/merged.safetensors", dir);
		int err = fl_adapter_merge(base, dir, merged, NULL, NULL);
		if (err == FL_OK) {
			double d = max_rel_diff(merged, fl_test_join(dir, "model.safetensors"));
			FL_CHECK_MSG(
				d >= 0 && d <= 1e-5,
				"pfedpara: merge succeeded but gives other weights (max rel diff %g)",
				d);
		}
	}
	fl_model_free(m);
}

int main(void)
{
	FL_RUN(test_round_trips);
	FL_RUN(test_pfedpara_merge);
	return fl_test_main_end();
}
