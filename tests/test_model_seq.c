/* test_model_seq.c - whole transformers built from descriptions against
 * PyTorch 1.13 (tests/gen_transformer_golden.sh: tests/torch_model.py in
 * float64, seeded weights with random norms and positions):
 *  - transformer_ops.json: conv2d stride 2, groupnorm, tokens, position, a
 *    pre-LN block (layernorm, attention with 2 heads, MLP with gelu),
 *    layernorm, mean_tokens, linear;
 *  - transformer_tokens.json: token ids through embedding and position,
 *    the same block, mean_tokens, linear.
 * The logits and the gradient of their sum with respect to every weight
 * match within 1e-4 (float32 against float64). Also: the model-zoo counts
 * of models/vgg16-gn.json (the FedPara paper's 15.25M, and 1.55M for the
 * factorised convs at gamma 0.1), models/vit-tiny.json and
 * models/text-tiny.json (the embedding under loha and lowrank, and token
 * data checked against the vocab). */
#include "errors.h"
#include "dataset.h"
#include "model.h"
#include "model_data.h"
#include "model_desc.h"
#include "model_io.h"
#include "peft_config.h"
#include "safetensors.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define B 3

static int pick_all(const struct fl_model_tensor *t)
{
	(void)t;
	return 1;
}

/* Forward and backward of the description in tests/data/model_desc/NAME
 * .json against NAME.safetensors; input_key: the F32 input tensor. */
static void check_golden(const char *name, const char *input_key, const int64_t *xs, int xnd)
{
	char jpath[256], spath[256];
	snprintf(jpath, sizeof(jpath), "model_desc/%s.json", name);
	snprintf(spath, sizeof(spath), "%s", fl_test_data("model_desc/x"));
	snprintf(spath + strlen(spath) - 1, sizeof(spath) - strlen(spath) + 1, "%s.safetensors",
		 name);
	struct fl_model_desc *d = NULL;
	struct fl_model *m = NULL;
	struct fl_st *st = NULL;
	int err = fl_model_desc_load(fl_test_data(jpath), &d);
	if (!err)
		err = fl_model_new_desc(d, NULL, 1, B, &m);
	if (!err)
		err = fl_model_load_picked(m, spath, pick_all, "tensor");
	if (!err)
		err = fl_st_read(spath, &st);
	if (!FL_CHECK_MSG(err == FL_OK, "%s: %s", name, fl_error_msg()))
		goto out;
	size_t xn = 1;
	for (int i = 0; i < xnd; i++)
		xn *= (size_t)xs[i];
	float *x = malloc(sizeof(float) * xn), want[B * 3], ones[B * 3];
	const int64_t ys[2] = {B, 3};
	if (FL_CHECK(fl_st_get_f32(st, input_key, xs, xnd, x) == FL_OK) &&
	    FL_CHECK(fl_st_get_f32(st, "logits", ys, 2, want) == FL_OK)) {
		const float *got = fl_model_forward(m, x, B, 0, NULL);
		FL_CHECK_ARRAY_NEAR(got, want, B * 3, 1e-4, 1e-5);
		for (int i = 0; i < B * 3; i++)
			ones[i] = 1.0f;
		fl_model_zero_grads(m);
		fl_model_backward(m, ones);
		for (size_t i = 0; i < fl_model_tensor_count(m); i++) {
			const struct fl_model_tensor *t = fl_model_tensor_at(m, i);
			char key[FL_MODEL_NAME_MAX + 8];
			snprintf(key, sizeof(key), "grad.%s", t->name);
			float *g = malloc(sizeof(float) * t->numel);
			if (FL_CHECK_MSG(fl_st_get_f32(st, key, t->shape, t->ndim, g) == FL_OK,
					 "%s: %s", name, fl_error_msg()))
				FL_CHECK_ARRAY_NEAR(fl_model_grads(m) + t->offset, g, t->numel,
						    1e-4, 1e-5);
			free(g);
		}
	}
	free(x);
out:
	fl_st_free(st);
	fl_model_free(m);
	fl_model_desc_free(d);
}

static void test_goldens(void)
{
	const int64_t img[4] = {B, 2, 6, 6}, ids[2] = {B, 5};
	check_golden("transformer_ops", "input", img, 4);
	check_golden("transformer_tokens", "input_f32", ids, 2);
}

static struct fl_model *zoo_model(const char *file, const char *config_json)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", FL_MODELS_DIR, file);
	struct fl_model_desc *d = NULL;
	struct fl_peft_config *pc = NULL;
	struct fl_model *m = NULL;
	int err = fl_model_desc_load(path, &d);
	if (!err && config_json)
		err = fl_peft_config_parse(config_json, strlen(config_json), "test", &pc);
	if (!err)
		err = fl_model_new_desc(d, pc, 1, 1, &m);
	FL_CHECK_MSG(err == FL_OK, "%s: %s", file, fl_error_msg());
	fl_peft_config_free(pc);
	fl_model_desc_free(d);
	return m;
}

/* The FedPara paper's Table 5: VGG16 with GroupNorm has 15.25M parameters;
 * FedPara with gamma 0.1 on every conv (Tucker form), the FC head dense,
 * 1.55M. */
static void test_vgg16_counts(void)
{
	struct fl_model *m = zoo_model("vgg16-gn.json", NULL);
	if (m)
		FL_CHECK_MSG(fl_model_param_floats(m) == 15253578, "vgg16-gn: %zu parameters",
			     fl_model_param_floats(m));
	fl_model_free(m);
	m = zoo_model("vgg16-gn.json",
		      "{\"peft_type\": \"LOHA\", \"fedloha_parameterization\": \"fedpara\", "
		      "\"fedloha_gamma\": 0.1, \"use_effective_conv2d\": true, "
		      "\"target_modules\": \".*\\\\.conv\"}");
	if (m)
		FL_CHECK_MSG(fl_model_param_floats(m) == 1546620,
			     "vgg16-gn fedpara gamma 0.1: %zu parameters",
			     fl_model_param_floats(m));
	fl_model_free(m);
}

static void test_vit_tiny(void)
{
	struct fl_model *m = zoo_model("vit-tiny.json", NULL);
	if (m)
		FL_CHECK_MSG(fl_model_param_floats(m) == 138890, "vit-tiny: %zu parameters",
			     fl_model_param_floats(m));
	fl_model_free(m);
	/* PEFT's LoHa example targets q_proj and v_proj; Embedding is refused */
	m = zoo_model("vit-tiny.json", "{\"peft_type\": \"LOHA\", \"r\": 4, \"alpha\": 4, "
				       "\"target_modules\": [\"q_proj\", \"v_proj\"], "
				       "\"modules_to_save\": [\"head\"]}");
	if (m) {
		FL_CHECK(fl_model_tensor_find(m, "layers.3.attn.q_proj.hada_w1_a") != NULL);
		FL_CHECK(fl_model_tensor_find(m, "layers.3.attn.k_proj.hada_w1_a") == NULL);
		const struct fl_model_tensor *h = fl_model_tensor_find(m, "head.weight");
		const struct fl_model_tensor *n = fl_model_tensor_find(m, "norm.weight");
		FL_CHECK(h && (h->flags & FL_TENSOR_GLOBAL) && n && (n->flags & FL_TENSOR_BASE));
	}
	fl_model_free(m);
}

/* A description may come from the network: a model too large to hold is
 * refused before anything model-sized is allocated. */
static void test_size_caps(void)
{
	static const char big[] =
		"{\"format\": \"fedloha-model/1\", \"input\": {\"shape\": [16384]}, "
		"\"classes\": 2, \"modules\": ["
		"{\"op\": \"linear\", \"name\": \"a\", \"in\": 16384, \"out\": 16384},"
		"{\"op\": \"linear\", \"name\": \"b\", \"in\": 16384, \"out\": 16384},"
		"{\"op\": \"linear\", \"name\": \"c\", \"in\": 16384, \"out\": 2}]}";
	struct fl_model_desc *d = NULL;
	struct fl_model *m = NULL;
	if (!FL_CHECK(fl_model_desc_parse(big, strlen(big), "t", &d) == FL_OK))
		return;
	FL_CHECK(fl_model_new_desc(d, NULL, 1, 1, &m) == FL_ERANGE && m == NULL);
	FL_CHECK(strstr(fl_error_msg(), "parameters, more than") != NULL);
	fl_model_desc_free(d);
}

/* text-tiny: 87,812 parameters; loha leaves the embedding dense by
 * default and refuses it as a target (PEFT's LoHa adapts no Embedding);
 * lowrank factorises it. */
static void test_text_tiny(void)
{
	struct fl_model *m = zoo_model("text-tiny.json", NULL);
	if (m)
		FL_CHECK_MSG(fl_model_param_floats(m) == 87812, "text-tiny: %zu parameters",
			     fl_model_param_floats(m));
	fl_model_free(m);
	m = zoo_model("text-tiny.json", "{\"peft_type\": \"LOHA\", \"r\": 4}");
	if (m) {
		const struct fl_model_tensor *e = fl_model_tensor_find(m, "embed.weight");
		FL_CHECK(e && (e->flags & FL_TENSOR_BASE));
		FL_CHECK(fl_model_tensor_find(m, "embed.hada_w1_a") == NULL);
		FL_CHECK(fl_model_tensor_find(m, "layers.0.attn.q_proj.hada_w1_a") != NULL);
	}
	fl_model_free(m);
	m = zoo_model("text-tiny.json", "{\"peft_type\": \"LOHA\", "
					"\"fedloha_parameterization\": \"lowrank\"}");
	if (m)
		FL_CHECK(fl_model_tensor_find(m, "embed.lora_A.weight") != NULL);
	fl_model_free(m);

	char path[512];
	snprintf(path, sizeof(path), "%s/text-tiny.json", FL_MODELS_DIR);
	static const char cfg[] = "{\"peft_type\": \"LOHA\", \"target_modules\": [\"embed\"]}";
	struct fl_model_desc *d = NULL;
	struct fl_peft_config *pc = NULL;
	m = NULL;
	int err = fl_model_desc_load(path, &d);
	if (!err)
		err = fl_peft_config_parse(cfg, strlen(cfg), "test", &pc);
	FL_CHECK_MSG(err == FL_OK, "%s", fl_error_msg());
	if (!err)
		FL_CHECK(fl_test_fails_with(fl_model_new_desc(d, pc, 1, 1, &m), FL_EUNSUPPORTED,
					    "layer embed: PEFT's LoHa does not adapt Embedding"));
	FL_CHECK(m == NULL);
	fl_peft_config_free(pc);

	/* token data: ids below the vocab of 256 fit, 256 does not, features do not */
	struct fl_dataset *ds = NULL;
	if (d && FL_CHECK(fl_dataset_new_f32(2, 1, 1, 64, 4, &ds) == FL_OK)) {
		ds->ndim = 1;
		ds->tokens = 1;
		for (int k = 0; k < 2 * 64; k++)
			ds->values[k] = (float)(k % 256 == 0 ? 255 : k % 200);
		ds->labels[1] = 3;
		FL_CHECK_MSG(fl_model_desc_check_data(d, ds) == FL_OK, "%s", fl_error_msg());
		ds->values[64 + 5] = 256;
		FL_CHECK(
			fl_test_fails_with(fl_model_desc_check_data(d, ds), FL_EINVAL,
					   "sample 1 holds token id 256, outside the model's vocab "
					   "of 256"));
		ds->values[64 + 5] = 5;
		ds->tokens = 0;
		FL_CHECK(fl_test_fails_with(fl_model_desc_check_data(d, ds), FL_ESHAPE,
					    "takes token ids but the data holds features"));
	}
	fl_dataset_free(ds);
	fl_model_desc_free(d);
}

int main(void)
{
	FL_RUN(test_goldens);
	FL_RUN(test_vgg16_counts);
	FL_RUN(test_vit_tiny);
	FL_RUN(test_size_caps);
	FL_RUN(test_text_tiny);
	return fl_test_main_end();
}
