/* test_model_desc_run.c - models built from a user description with every
 * op (tests/data/model_desc/every_op.json: conv2d stride 2 padding 1
 * without bias, gelu, nested residuals, an empty-body residual, avgpool2d,
 * maxpool2d, dropout, flatten, linear on the last dim of a (C,H,W) tensor):
 *  - forward values against PyTorch (tests/torch_model.py via
 *    gen_desc_golden.sh: weights by name, input, logits) within 1e-5;
 *  - the tensor names and shapes are the state_dict's;
 *  - the same description and seed give bit-identical parameters and
 *    outputs (eval and training mode with the same rng) under every
 *    parameterisation, a different seed different parameters.
 * The finite-difference gradient check of this model is in
 * test_model_grad.c. */
#include "blas.h"
#include "errors.h"
#include "model.h"
#include "model_io.h"
#include "safetensors.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH 5

static struct fl_model_desc *load_desc(void)
{
	struct fl_model_desc *d = NULL;
	int err = fl_model_desc_load(fl_test_data("model_desc/every_op.json"), &d);
	FL_CHECK_MSG(err == FL_OK, "%s", fl_error_msg());
	return d;
}

static int pick_all(const struct fl_model_tensor *t)
{
	(void)t;
	return 1;
}

static void test_golden(void)
{
	struct fl_model_desc *d = load_desc();
	struct fl_model *m = NULL;
	if (!d || !FL_CHECK(fl_model_new_desc(d, NULL, 1, BATCH, &m) == FL_OK)) {
		fl_model_desc_free(d);
		return;
	}
	fl_model_desc_free(d);
	/* the tensors are exactly the state_dict's (stem.conv has no bias) */
	static const char *const names[] = {
		"stem.conv.weight",    "blocks.0.conv.weight", "blocks.0.conv.bias",
		"blocks.0.mix.weight", "blocks.0.mix.bias",    "head.hidden.weight",
		"head.hidden.bias",    "head.fc.weight",       "head.fc.bias"};
	FL_CHECK(fl_model_tensor_count(m) == 9);
	for (int i = 0; i < 9; i++)
		FL_CHECK_MSG(fl_model_tensor_find(m, names[i]) != NULL, "no tensor %s", names[i]);
	const struct fl_model_tensor *t = fl_model_tensor_find(m, "stem.conv.weight");
	FL_CHECK(t && t->ndim == 4 && t->shape[0] == 4 && t->shape[1] == 2 && t->shape[3] == 3);

	const char *path = fl_test_data("model_desc/every_op.safetensors");
	int err = fl_model_load_picked(m, path, pick_all, "tensor");
	FL_CHECK_MSG(err == FL_OK, "%s", fl_error_msg());
	struct fl_st *st = NULL;
	float x[BATCH * 2 * 8 * 8], want[BATCH * 3];
	const int64_t xs[4] = {BATCH, 2, 8, 8}, ys[2] = {BATCH, 3};
	if (FL_CHECK(fl_st_read(path, &st) == FL_OK) &&
	    FL_CHECK(fl_st_get_f32(st, "input", xs, 4, x) == FL_OK) &&
	    FL_CHECK(fl_st_get_f32(st, "logits", ys, 2, want) == FL_OK) && err == FL_OK) {
		const float *got = fl_model_forward(m, x, BATCH, 0, NULL);
		FL_CHECK_ARRAY_NEAR(got, want, BATCH * 3, 1e-5, 1e-5);
		/* dropout is the identity outside training */
		got = fl_model_forward(m, x, 2, 0, NULL);
		FL_CHECK_ARRAY_NEAR(got, want, 2 * 3, 1e-5, 1e-5);
	}
	fl_st_free(st);
	fl_model_free(m);
}

/* Parameters and eval / training outputs of a fresh model. */
static int run_once(const struct fl_model_desc *d, enum fl_peft_param param, uint64_t seed,
		    float **params, size_t *np, float *eval, float *train)
{
	struct fl_peft_config *cfg = NULL;
	if (param != FL_PEFT_PARAM_DENSE)
		cfg = fl_test_peft_config(param, 0, 0, 2, 4.0);
	struct fl_model *m = NULL;
	int err = fl_model_new_desc(d, cfg, seed, BATCH, &m);
	fl_peft_config_free(cfg);
	if (!FL_CHECK_MSG(err == FL_OK, "%s", fl_error_msg()))
		return err;
	*np = fl_model_param_floats(m);
	*params = malloc(sizeof(float) * *np);
	memcpy(*params, fl_model_params(m), sizeof(float) * *np);
	float x[BATCH * 2 * 8 * 8];
	fl_test_fill_uniform(x, sizeof(x) / sizeof(x[0]), 11, -1, 1);
	memcpy(eval, fl_model_forward(m, x, BATCH, 0, NULL), sizeof(float) * BATCH * 3);
	struct fl_rng rng;
	fl_rng_seed(&rng, 77);
	memcpy(train, fl_model_forward(m, x, BATCH, 1, &rng), sizeof(float) * BATCH * 3);
	fl_model_free(m);
	return FL_OK;
}

static void test_determinism(void)
{
	struct fl_model_desc *d = load_desc();
	if (!d)
		return;
	static const enum fl_peft_param params[] = {FL_PEFT_PARAM_DENSE, FL_PEFT_PARAM_FEDPARA,
						    FL_PEFT_PARAM_PFEDPARA, FL_PEFT_PARAM_LOWRANK,
						    FL_PEFT_PARAM_LOHA};
	for (int i = 0; i < 5; i++) {
		float *p1 = NULL, *p2 = NULL, *p3 = NULL;
		size_t n1 = 0, n2 = 0, n3 = 0;
		float e1[BATCH * 3], e2[BATCH * 3], e3[BATCH * 3], t1[BATCH * 3], t2[BATCH * 3],
			t3[BATCH * 3];
		if (run_once(d, params[i], 42, &p1, &n1, e1, t1) == FL_OK &&
		    run_once(d, params[i], 42, &p2, &n2, e2, t2) == FL_OK &&
		    run_once(d, params[i], 43, &p3, &n3, e3, t3) == FL_OK) {
			FL_CHECK_MSG(n1 == n2 && memcmp(p1, p2, sizeof(float) * n1) == 0,
				     "param %d: parameters differ", i);
			FL_CHECK_MSG(memcmp(e1, e2, sizeof(e1)) == 0, "param %d: eval differs", i);
			FL_CHECK_MSG(memcmp(t1, t2, sizeof(t1)) == 0, "param %d: train differs", i);
			/* dropout p = 0.25 is live in training */
			FL_CHECK_MSG(memcmp(e1, t1, sizeof(e1)) != 0, "param %d: no dropout", i);
			FL_CHECK_MSG(n3 == n1 && memcmp(p1, p3, sizeof(float) * n1) != 0,
				     "param %d: seed ignored", i);
		}
		free(p1);
		free(p2);
		free(p3);
	}
	fl_model_desc_free(d);
}

int main(void)
{
	fl_blas_set_threads(1);
	FL_RUN(test_golden);
	FL_RUN(test_determinism);
	return fl_test_main_end();
}
