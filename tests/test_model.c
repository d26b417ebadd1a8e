/* test_model.c - model building: parameter counts of the classic FL models,
 * tensor names, shapes and flags per parameterisation, the buffer layout
 * (transmitted slice first, no overlap, trainable ranges = TRAINABLE
 * tensors), explicit targets and rank / alpha patterns, bad arguments.
 * Running and training: test_model_train.c; gradients: test_model_grad.c;
 * files: test_model_io.c and test_model_load.c. */
#include "errors.h"
#include "model.h"
#include "modelutil.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GT (FL_TENSOR_GLOBAL | FL_TENSOR_TRAINABLE)
#define LT (FL_TENSOR_LOCAL | FL_TENSOR_TRAINABLE)
#define BS FL_TENSOR_BASE

/* The expected tensors of each model the tests build, under a key naming
 * the test and the model: the name, exact flags, rank and shape. R in a
 * shape stands for the layer rank the test passes along. */
#define R (-1)
static const struct tensor_want {
	const char *key, *name;
	unsigned flags;
	int ndim;
	int64_t s[4];
} tensor_wants[] = {
	{"dense 2nn", "fc1.weight", GT, 2, {200, 784, 0, 0}},
	{"dense 2nn", "fc1.bias", GT, 1, {200, 0, 0, 0}},
	{"dense 2nn", "fc2.weight", GT, 2, {200, 200, 0, 0}},
	{"dense 2nn", "fc3.weight", GT, 2, {10, 200, 0, 0}},
	{"dense 2nn", "fc3.bias", GT, 1, {10, 0, 0, 0}},
	{"dense cnn", "conv1.weight", GT, 4, {32, 1, 5, 5}},
	{"dense cnn", "conv1.bias", GT, 1, {32, 0, 0, 0}},
	{"dense cnn", "conv2.weight", GT, 4, {64, 32, 5, 5}},
	{"dense cnn", "fc1.weight", GT, 2, {512, 3136, 0, 0}},
	{"dense cnn", "fc2.weight", GT, 2, {10, 512, 0, 0}},
	{"dense cnn", "fc2.bias", GT, 1, {10, 0, 0, 0}},
	{"dense mlp", "fc1.weight", GT, 2, {256, 784, 0, 0}},
	{"dense mlp", "fc2.weight", GT, 2, {10, 256, 0, 0}},
	{"fedpara 2nn", "fc1.hada_w1_a", GT, 2, {200, 21, 0, 0}},
	{"fedpara 2nn", "fc1.hada_w1_b", GT, 2, {21, 784, 0, 0}},
	{"fedpara 2nn", "fc1.hada_w2_a", GT, 2, {200, 21, 0, 0}},
	{"fedpara 2nn", "fc1.hada_w2_b", GT, 2, {21, 784, 0, 0}},
	{"fedpara 2nn", "fc1.bias", GT, 1, {200, 0, 0, 0}},
	{"fedpara 2nn", "fc2.hada_w1_a", GT, 2, {200, 19, 0, 0}},
	{"fedpara 2nn", "fc2.hada_w2_b", GT, 2, {19, 200, 0, 0}},
	{"fedpara 2nn", "fc3.weight", GT, 2, {10, 200, 0, 0}}, /* output layer stays dense */
	{"fedpara 2nn", "fc3.bias", GT, 1, {10, 0, 0, 0}},
	{"fedpara cnn", "conv1.hada_t1", GT, 4, {1, 1, 5, 5}},
	{"fedpara cnn", "conv1.hada_t2", GT, 4, {1, 1, 5, 5}},
	{"fedpara cnn", "conv1.hada_w1_a", GT, 2, {1, 32, 0, 0}},
	{"fedpara cnn", "conv1.hada_w1_b", GT, 2, {1, 1, 0, 0}},
	{"fedpara cnn", "conv2.hada_t1", GT, 4, {8, 8, 5, 5}},
	{"fedpara cnn", "conv2.hada_w1_a", GT, 2, {8, 64, 0, 0}},
	{"fedpara cnn", "conv2.hada_w2_b", GT, 2, {8, 32, 0, 0}},
	{"fedpara cnn", "conv2.bias", GT, 1, {64, 0, 0, 0}},
	{"fedpara cnn", "fc1.hada_w1_a", GT, 2, {512, 43, 0, 0}},
	{"fedpara cnn", "fc1.hada_w2_b", GT, 2, {43, 3136, 0, 0}},
	{"fedpara cnn", "fc2.weight", GT, 2, {10, 512, 0, 0}},
	{"fedpara cnn reshaped conv2", "conv2.hada_w1_a", GT, 2, {64, R, 0, 0}},
	{"fedpara cnn reshaped conv2", "conv2.hada_w1_b", GT, 2, {R, 800, 0, 0}},
	{"fedpara cnn reshaped conv2", "conv2.hada_w2_b", GT, 2, {R, 800, 0, 0}},
	{"fedpara cnn reshaped conv1", "conv1.hada_w1_b", GT, 2, {R, 25, 0, 0}},
	{"pfedpara mlp", "fc1.hada_w1_a", GT, 2, {256, R, 0, 0}},
	{"pfedpara mlp", "fc1.hada_w1_b", GT, 2, {R, 784, 0, 0}},
	{"pfedpara mlp", "fc1.hada_w2_a", LT, 2, {256, R, 0, 0}},
	{"pfedpara mlp", "fc1.hada_w2_b", LT, 2, {R, 784, 0, 0}},
	{"pfedpara mlp", "fc1.bias", GT, 1, {256, 0, 0, 0}},
	{"pfedpara mlp", "fc2.weight", GT, 2, {10, 256, 0, 0}},
	{"lowrank 2nn", "fc1.lora_B.weight", GT, 2, {200, 42, 0, 0}},
	{"lowrank 2nn", "fc1.lora_A.weight", GT, 2, {42, 784, 0, 0}},
	{"lowrank 2nn", "fc2.lora_B.weight", GT, 2, {200, 38, 0, 0}},
	{"lowrank 2nn", "fc2.lora_A.weight", GT, 2, {38, 200, 0, 0}},
	{"lowrank 2nn", "fc3.weight", GT, 2, {10, 200, 0, 0}},
	{"lowrank cnn", "conv2.lora_B.weight", GT, 2, {64, 5, 0, 0}},
	{"lowrank cnn", "conv2.lora_A.weight", GT, 2, {5, 800, 0, 0}},
	{"loha 2nn", "fc1.weight", BS, 2, {200, 784, 0, 0}},
	{"loha 2nn", "fc1.bias", BS, 1, {200, 0, 0, 0}},
	{"loha 2nn", "fc1.hada_w1_a", GT, 2, {200, 4, 0, 0}},
	{"loha 2nn", "fc1.hada_w2_b", GT, 2, {4, 784, 0, 0}},
	{"loha 2nn", "fc2.weight", BS, 2, {200, 200, 0, 0}},
	{"loha 2nn", "fc2.hada_w1_b", GT, 2, {4, 200, 0, 0}},
	/* the untargeted output layer is part of the frozen base too */
	{"loha 2nn", "fc3.weight", BS, 2, {10, 200, 0, 0}},
	{"loha 2nn", "fc3.bias", BS, 1, {10, 0, 0, 0}},
	{"loha 2nn modules_to_save", "fc3.weight", GT, 2, {10, 200, 0, 0}},
	{"loha 2nn modules_to_save", "fc3.bias", GT, 1, {10, 0, 0, 0}},
	{"loha 2nn modules_to_save", "fc2.bias", BS, 1, {200, 0, 0, 0}},
	{"loha cnn", "conv1.weight", BS, 4, {32, 1, 5, 5}},
	{"loha cnn", "conv1.hada_w1_a", GT, 2, {32, 4, 0, 0}},
	{"loha cnn", "conv1.hada_w1_b", GT, 2, {4, 25, 0, 0}},
	{"loha cnn", "conv2.hada_w2_b", GT, 2, {4, 800, 0, 0}},
	{"loha 2nn rank_pattern", "fc2.hada_w1_a", GT, 2, {200, 2, 0, 0}},
	{"loha 2nn rank_pattern", "fc1.hada_w1_a", GT, 2, {200, 4, 0, 0}},
	{"targets cnn", "conv1.weight", GT, 4, {32, 1, 5, 5}},
	{"targets cnn", "conv2.weight", GT, 4, {64, 32, 5, 5}},
	{"targets cnn", "fc1.hada_w1_a", GT, 2, {512, 43, 0, 0}},
};
#undef R

/* Checks that every tensor listed under `key` exists with its shape (R
 * taken as `rank`) and exactly its flags. */
static void expect_tensors(struct fl_model *m, const char *key, int64_t rank)
{
	int listed = 0;
	for (size_t k = 0; k < sizeof tensor_wants / sizeof tensor_wants[0]; k++) {
		const struct tensor_want *w = &tensor_wants[k];
		if (strcmp(w->key, key) != 0)
			continue;
		listed++;
		const struct fl_model_tensor *t = fl_model_tensor_find(m, w->name);
		if (!FL_CHECK_MSG(t != NULL, "tensor %s missing", w->name))
			continue;
		FL_CHECK_MSG(t->ndim == w->ndim, "%s: ndim %d, expected %d", w->name, t->ndim,
			     w->ndim);
		size_t numel = 1;
		for (int i = 0; i < w->ndim && i < t->ndim; i++) {
			int64_t s = w->s[i] < 0 ? rank : w->s[i];
			FL_CHECK_MSG(t->shape[i] == s, "%s: shape[%d] = %lld, expected %lld",
				     w->name, i, (long long)t->shape[i], (long long)s);
			numel *= (size_t)s;
		}
		FL_CHECK_MSG(t->numel == numel, "%s: numel %zu, expected %zu", w->name, t->numel,
			     numel);
		FL_CHECK_MSG(t->flags == w->flags, "%s: flags 0x%x, expected 0x%x", w->name,
			     t->flags, w->flags);
	}
	FL_CHECK_MSG(listed > 0, "no tensors listed under %s", key);
}

static void expect_absent(struct fl_model *m, const char *name)
{
	FL_CHECK_MSG(fl_model_tensor_find(m, name) == NULL, "tensor %s should not exist", name);
}

/* Layout invariants that hold for every model: tensors tile the buffer
 * without overlap, GLOBAL tensors form the prefix [0, n_global), the
 * trainable ranges cover exactly the TRAINABLE tensors. */
static void check_layout(struct fl_model *m)
{
	size_t n = fl_model_param_floats(m), nt = fl_model_tensor_count(m);
	size_t n_global = fl_model_count_floats(m, FL_TENSOR_GLOBAL);
	unsigned char *cover = calloc(n ? n : 1, 1), *trn = calloc(n ? n : 1, 1);
	size_t sum = 0;
	for (size_t i = 0; i < nt; i++) {
		const struct fl_model_tensor *t = fl_model_tensor_at(m, i);
		sum += t->numel;
		FL_CHECK_MSG(t->offset + t->numel <= n, "%s beyond the buffer", t->name);
		if (t->flags & FL_TENSOR_GLOBAL)
			FL_CHECK_MSG(t->offset + t->numel <= n_global, "%s: GLOBAL outside prefix",
				     t->name);
		else
			FL_CHECK_MSG(t->offset >= n_global, "%s: non-GLOBAL inside the prefix",
				     t->name);
		/* LOCAL and GLOBAL are exclusive; BASE is never trainable */
		FL_CHECK(!((t->flags & FL_TENSOR_LOCAL) && (t->flags & FL_TENSOR_GLOBAL)));
		FL_CHECK(!((t->flags & FL_TENSOR_BASE) && (t->flags & FL_TENSOR_TRAINABLE)));
		for (size_t k = t->offset; k < t->offset + t->numel && k < n; k++) {
			cover[k]++;
			trn[k] = (t->flags & FL_TENSOR_TRAINABLE) != 0;
		}
	}
	FL_CHECK(sum == n);
	int overlap = 0;
	for (size_t k = 0; k < n; k++)
		overlap += cover[k] != 1;
	FL_CHECK_MSG(overlap == 0, "%d floats covered != 1 times", overlap);
	size_t nr;
	const struct fl_optim_range *r = fl_model_trainable_ranges(m, &nr);
	unsigned char *in_range = calloc(n ? n : 1, 1);
	for (size_t i = 0; i < nr; i++)
		for (size_t k = r[i].off; k < r[i].off + r[i].len && k < n; k++)
			in_range[k]++;
	int mism = 0;
	for (size_t k = 0; k < n; k++)
		mism += in_range[k] != trn[k];
	FL_CHECK_MSG(mism == 0, "%d floats: trainable ranges disagree with flags", mism);
	free(cover);
	free(trn);
	free(in_range);
}

static void test_dense_counts(void)
{
	struct fl_model *m = fl_test_model("2nn", 1, 28, 28, 10, NULL, 1, 16);
	if (m) {
		FL_CHECK(fl_model_param_floats(m) == 199210);
		FL_CHECK(fl_model_count_floats(m, GT) == 199210);
		FL_CHECK(fl_model_tensor_count(m) == 6);
		expect_tensors(m, "dense 2nn", 0);
		FL_CHECK(fl_model_param(m) == FL_PEFT_PARAM_DENSE);
		FL_CHECK(strcmp(fl_model_arch(m), "2nn") == 0);
		check_layout(m);
	}
	fl_model_free(m);
	m = fl_test_model("cnn", 1, 28, 28, 10, NULL, 1, 16);
	if (m) {
		FL_CHECK(fl_model_param_floats(m) == 1663370);
		expect_tensors(m, "dense cnn", 0);
		check_layout(m);
	}
	fl_model_free(m);
	m = fl_test_model("mlp", 1, 28, 28, 10, NULL, 1, 16);
	if (m) {
		FL_CHECK(fl_model_param_floats(m) == 784 * 256 + 256 + 256 * 10 + 10);
		expect_tensors(m, "dense mlp", 0);
		check_layout(m);
	}
	fl_model_free(m);
	/* an explicit dense config is the same model, bit for bit */
	struct fl_peft_config *c = fl_test_peft_config(FL_PEFT_PARAM_DENSE, 0, 0.1, 0, 0);
	struct fl_model *a = fl_test_model("cnn", 3, 32, 32, 10, NULL, 5, 16);
	struct fl_model *b = fl_test_model("cnn", 3, 32, 32, 10, c, 5, 16);
	if (a && b) {
		/* 32x32 RGB: conv1 3*32*25+32, conv2 51264, fc1 4096*512+512, fc2 5130 */
		FL_CHECK(fl_model_param_floats(a) == 2432 + 51264 + 2097664 + 5130);
		FL_CHECK(fl_model_param_floats(a) == fl_model_param_floats(b));
		FL_CHECK(memcmp(fl_model_params(a), fl_model_params(b),
				sizeof(float) * fl_model_param_floats(a)) == 0);
	}
	fl_model_free(a);
	fl_model_free(b);
	fl_peft_config_free(c);
}

static void test_bad_args(void)
{
	struct fl_model *m = (struct fl_model *)1;
	FL_CHECK(fl_model_new("resnet", 1, 28, 28, 10, NULL, 1, 8, &m) == FL_EINVAL && m == NULL);
	FL_CHECK(fl_model_new(NULL, 1, 28, 28, 10, NULL, 1, 8, &m) == FL_EINVAL);
	FL_CHECK(fl_model_new("2nn", 0, 28, 28, 10, NULL, 1, 8, &m) == FL_EINVAL);
	FL_CHECK(fl_model_new("2nn", 1, -28, 28, 10, NULL, 1, 8, &m) == FL_EINVAL);
	FL_CHECK(fl_model_new("2nn", 1, 28, 28, 1, NULL, 1, 8, &m) == FL_EINVAL);
	FL_CHECK(fl_model_new("2nn", 1, 28, 28, 10, NULL, 1, 0, &m) == FL_EINVAL);
	/* the cnn needs at least a 4x4 input (two 2x2 pools) */
	FL_CHECK(fl_model_new("cnn", 1, 3, 3, 10, NULL, 1, 8, &m) != FL_OK && m == NULL);
	FL_CHECK(fl_model_desc_builtin_valid("cnn") && fl_model_desc_builtin_valid("2nn") &&
		 fl_model_desc_builtin_valid("mlp") && !fl_model_desc_builtin_valid("CNN") &&
		 !fl_model_desc_builtin_valid(NULL));
	/* invalid config values are refused */
	struct fl_peft_config *c = fl_test_peft_config(FL_PEFT_PARAM_LOHA, 0, 0, 4, 4);
	c->rank_dropout = 1.5;
	FL_CHECK(fl_model_new("2nn", 1, 28, 28, 10, c, 1, 8, &m) == FL_EINVAL && m == NULL);
	fl_peft_config_free(c);
}

/* FedPara factor count of one layer from its info. */
static size_t fedpara_floats(const struct fl_model_layer_info *li)
{
	if (li->tucker)
		return 2u * li->rank * (li->out + li->in + li->rank * li->k1 * li->k2);
	return 2u * li->rank * (li->out + li->in * li->k1 * li->k2);
}

static const struct fl_model_layer_info *find_layer(struct fl_model *m, const char *name,
						    struct fl_model_layer_info *li)
{
	for (int i = 0; i < fl_model_layer_count(m); i++) {
		fl_model_layer_info(m, i, li);
		if (strcmp(li->name, name) == 0)
			return li;
	}
	return NULL;
}

static void test_fedpara_tensors(void)
{
	/* 2nn, gamma 0.1: fc1 (200x784) r_min 15, r_max 79 -> round(13.5 + 7.9) =
	 * 21; fc2 (200x200) r_min 15, r_max 50 -> round(18.5) = 19 */
	struct fl_peft_config *c = fl_test_peft_config(FL_PEFT_PARAM_FEDPARA, 1, 0.1, 0, 0);
	struct fl_model *m = fl_test_model("2nn", 1, 28, 28, 10, c, 1, 16);
	if (m) {
		expect_tensors(m, "fedpara 2nn", 0);
		expect_absent(m, "fc1.weight");
		expect_absent(m, "fc2.weight");
		expect_absent(m, "fc3.hada_w1_a");
		size_t want = 2 * 21 * (200 + 784) + 200 + 2 * 19 * 400 + 200 + 2010;
		FL_CHECK(fl_model_param_floats(m) == want);
		FL_CHECK(fl_model_count_floats(m, GT) == want);
		struct fl_model_layer_info li;
		if (FL_CHECK(find_layer(m, "fc1", &li) != NULL))
			FL_CHECK(li.param == FL_PEFT_PARAM_FEDPARA && li.rank == 21 && !li.tucker &&
				 li.scale == 1.0f && li.has_bias);
		check_layout(m);
	}
	fl_model_free(m);

	/* cnn Tucker, gamma 0.1: conv1 (32,1,5,5) r_min 1 -> 1; conv2 (64,32,5,5)
	 * r_min 6, r_max 30 -> round(8.4) = 8; fc1 (512x3136) r_min 23, r_max 220
	 * -> round(42.7) = 43 */
	m = fl_test_model("cnn", 1, 28, 28, 10, c, 1, 16);
	if (m) {
		expect_tensors(m, "fedpara cnn", 0);
		expect_absent(m, "conv1.weight");
		expect_absent(m, "fc1.weight");
		size_t want = 0;
		for (int i = 0; i < fl_model_layer_count(m); i++) {
			struct fl_model_layer_info li;
			fl_model_layer_info(m, i, &li);
			if (li.kind != FL_LAYER_LINEAR && li.kind != FL_LAYER_CONV2D)
				continue;
			want += (size_t)li.out; /* bias */
			if (li.param == FL_PEFT_PARAM_DENSE)
				want += (size_t)li.out * li.in * li.k1 * li.k2;
			else
				want += fedpara_floats(&li);
			if (li.kind == FL_LAYER_CONV2D)
				FL_CHECK(li.tucker && li.param == FL_PEFT_PARAM_FEDPARA);
		}
		FL_CHECK(want == 2 * 1 * (32 + 1 + 25) + 32 + 2 * 8 * (64 + 32 + 200) + 64 +
					 2 * 43 * (512 + 3136) + 512 + 5130);
		FL_CHECK(fl_model_param_floats(m) == want);
		check_layout(m);
	}
	fl_model_free(m);

	/* reshape convs: hada_w*_a (O, r), hada_w*_b (r, I*K*K); r_min on
	 * in*k*k: conv2 min(8, 29) = 8 */
	c->use_effective_conv2d = 0;
	m = fl_test_model("cnn", 1, 28, 28, 10, c, 1, 16);
	if (m) {
		struct fl_model_layer_info li;
		if (FL_CHECK(find_layer(m, "conv2", &li) != NULL)) {
			FL_CHECK(!li.tucker);
			expect_tensors(m, "fedpara cnn reshaped conv2", li.rank);
		}
		if (FL_CHECK(find_layer(m, "conv1", &li) != NULL))
			expect_tensors(m, "fedpara cnn reshaped conv1", li.rank);
		expect_absent(m, "conv2.hada_t1");
		check_layout(m);
	}
	fl_model_free(m);
	fl_peft_config_free(c);
}

static void test_pfedpara_tensors(void)
{
	struct fl_peft_config *c = fl_test_peft_config(FL_PEFT_PARAM_PFEDPARA, 1, 0.5, 0, 0);
	struct fl_model *m = fl_test_model("mlp", 1, 28, 28, 10, c, 1, 16);
	if (m) {
		struct fl_model_layer_info li;
		int r = find_layer(m, "fc1", &li) ? li.rank : -1;
		/* fc1 256x784, gamma 0.5: r_min 16, r_max floor(200704/2080) = 96 -> 56 */
		FL_CHECK(r == 56);
		expect_tensors(m, "pfedpara mlp", r);
		size_t pair = (size_t)r * (256 + 784);
		FL_CHECK(fl_model_count_floats(m, FL_TENSOR_LOCAL) == pair);
		FL_CHECK(fl_model_count_floats(m, FL_TENSOR_GLOBAL) == pair + 256 + 2570);
		FL_CHECK(fl_model_count_floats(m, FL_TENSOR_TRAINABLE) == fl_model_param_floats(m));
		check_layout(m);
	}
	fl_model_free(m);
	m = fl_test_model("cnn", 1, 28, 28, 10, c, 1, 16);
	if (m) {
		const struct fl_model_tensor *t1 = fl_model_tensor_find(m, "conv2.hada_t1");
		const struct fl_model_tensor *t2 = fl_model_tensor_find(m, "conv2.hada_t2");
		FL_CHECK(t1 && t1->flags == GT);
		FL_CHECK(t2 && t2->flags == LT);
		const struct fl_model_tensor *b = fl_model_tensor_find(m, "conv2.hada_w2_b");
		FL_CHECK(b && b->flags == LT && b->ndim == 2 && b->shape[1] == 32);
		check_layout(m);
	}
	fl_model_free(m);
	fl_peft_config_free(c);
}

static void test_lowrank_tensors(void)
{
	struct fl_peft_config *c = fl_test_peft_config(FL_PEFT_PARAM_LOWRANK, 1, 0.1, 0, 0);
	struct fl_model *m = fl_test_model("2nn", 1, 28, 28, 10, c, 1, 16);
	if (m) {
		/* the fedpara budget at r = 21 is 2*21*(m+n): k = 42 */
		expect_tensors(m, "lowrank 2nn", 0);
		expect_absent(m, "fc1.weight");
		expect_absent(m, "fc1.hada_w1_a");
		FL_CHECK(fl_model_param_floats(m) == 42 * 984 + 200 + 38 * 400 + 200 + 2010);
		struct fl_model_layer_info li;
		if (FL_CHECK(find_layer(m, "fc1", &li) != NULL))
			FL_CHECK(li.param == FL_PEFT_PARAM_LOWRANK && li.rank == 42);
		check_layout(m);
	}
	fl_model_free(m);
	/* conv: budget of the Tucker fedpara layer, on the reshaped kernel */
	m = fl_test_model("cnn", 1, 28, 28, 10, c, 1, 16);
	if (m) {
		struct fl_model_layer_info li;
		if (FL_CHECK(find_layer(m, "conv2", &li) != NULL)) {
			/* conv2 Tucker r = 8: 2*8*(64+32+200) = 4736 over (64 + 800) -> k = 5 */
			FL_CHECK(li.rank == 5);
			expect_tensors(m, "lowrank cnn", 0);
		}
		check_layout(m);
	}
	fl_model_free(m);
	fl_peft_config_free(c);
}

static void test_loha_tensors(void)
{
	struct fl_peft_config *c = fl_test_peft_config(FL_PEFT_PARAM_LOHA, 0, 0, 4, 8);
	struct fl_model *m = fl_test_model("2nn", 1, 28, 28, 10, c, 1, 16);
	if (m) {
		expect_tensors(m, "loha 2nn", 0);
		size_t factors = 2 * 4 * (200 + 784) + 2 * 4 * 400;
		FL_CHECK(fl_model_count_floats(m, GT) == factors);
		FL_CHECK(fl_model_count_floats(m, FL_TENSOR_TRAINABLE) == factors);
		FL_CHECK(fl_model_count_floats(m, BS) == 199210);
		struct fl_model_layer_info li;
		if (FL_CHECK(find_layer(m, "fc1", &li) != NULL))
			FL_CHECK(li.param == FL_PEFT_PARAM_LOHA && li.rank == 4 &&
				 li.scale == 2.0f);
		check_layout(m);
	}
	fl_model_free(m);
	/* modules_to_save: fc3 is trained and transmitted (weight and bias) */
	c->modules_to_save = calloc(1, sizeof(char *));
	c->modules_to_save[0] = strdup("fc3");
	c->n_modules_to_save = 1;
	m = fl_test_model("2nn", 1, 28, 28, 10, c, 1, 16);
	if (m) {
		expect_tensors(m, "loha 2nn modules_to_save", 0);
		check_layout(m);
	}
	fl_model_free(m);
	/* cnn, reshape convs (PEFT default) */
	m = fl_test_model("cnn", 1, 28, 28, 10, c, 1, 16);
	if (m) {
		expect_tensors(m, "loha cnn", 0);
		check_layout(m);
	}
	fl_model_free(m);
	/* rank_pattern / alpha_pattern give per-layer r and scale */
	c->rank_pattern = calloc(1, sizeof(*c->rank_pattern));
	c->rank_pattern[0].key = strdup("fc2");
	c->rank_pattern[0].value = 2;
	c->n_rank_pattern = 1;
	c->alpha_pattern = calloc(1, sizeof(*c->alpha_pattern));
	c->alpha_pattern[0].key = strdup("fc2");
	c->alpha_pattern[0].value = 1;
	c->n_alpha_pattern = 1;
	m = fl_test_model("2nn", 1, 28, 28, 10, c, 1, 16);
	if (m) {
		expect_tensors(m, "loha 2nn rank_pattern", 0);
		struct fl_model_layer_info li;
		if (FL_CHECK(find_layer(m, "fc2", &li) != NULL))
			FL_CHECK(li.rank == 2 && li.scale == 0.5f);
	}
	fl_model_free(m);
	fl_peft_config_free(c);
}

/* An explicit target list overrides "every weight layer but the output". */
static void test_targets(void)
{
	struct fl_peft_config *c = fl_test_peft_config(FL_PEFT_PARAM_FEDPARA, 1, 0.1, 0, 0);
	c->target_kind = FL_PEFT_SEL_LIST;
	c->target_modules = calloc(1, sizeof(char *));
	c->target_modules[0] = strdup("fc1");
	c->n_target_modules = 1;
	struct fl_model *m = fl_test_model("cnn", 1, 28, 28, 10, c, 1, 16);
	if (m) {
		expect_tensors(m, "targets cnn", 0);
		expect_absent(m, "fc1.weight");
		check_layout(m);
	}
	fl_model_free(m);
	fl_peft_config_free(c);
}

int main(void)
{
	FL_RUN(test_dense_counts);
	FL_RUN(test_bad_args);
	FL_RUN(test_fedpara_tensors);
	FL_RUN(test_pfedpara_tensors);
	FL_RUN(test_lowrank_tensors);
	FL_RUN(test_loha_tensors);
	FL_RUN(test_targets);
	return fl_test_main_end();
}
