/* test_model_train.c - running and training models: LoHa at init (ΔW = 0)
 * computes the base model exactly, rank / module dropout in training mode
 * (eval stays deterministic; a skipped module gets no gradient),
 * determinism by seed of initialisation and of two training epochs on the
 * tiny MNIST fixture (also across a release of the batch buffers), and a
 * training sanity run (dense and fedpara 2nn) on
 * separable synthetic data. */
#include "dataset.h"
#include "errors.h"
#include "layers.h"
#include "loha.h"
#include "model.h"
#include "modelutil.h"
#include "testutil.h"
#include "train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BS FL_TENSOR_BASE

/* ---- LoHa init and dropouts ---- */

static void test_loha_init_identity(void)
{
	/* A dense model and a loha model with the same seed share the base
	 * weights (the layers draw from per-layer streams in the same order);
	 * with init_weights = 1, hada_w2_b = 0, so ΔW = 0 and the outputs agree
	 * exactly. Copying the base over makes the test independent of that. */
	const int B = 5, C = 1, H = 8, W = 8, K = 4;
	struct fl_peft_config *c = fl_test_peft_config(FL_PEFT_PARAM_LOHA, 0, 0, 3, 6);
	for (int arch = 0; arch < 2; arch++) {
		const char *name = arch ? "cnn" : "2nn";
		struct fl_model *d = fl_test_model(name, C, H, W, K, NULL, 11, 16);
		struct fl_model *l = fl_test_model(name, C, H, W, K, c, 11, 16);
		if (!d || !l) {
			fl_model_free(d);
			fl_model_free(l);
			continue;
		}
		for (size_t i = 0; i < fl_model_tensor_count(d); i++) {
			const struct fl_model_tensor *td = fl_model_tensor_at(d, i);
			const struct fl_model_tensor *tl = fl_model_tensor_find(l, td->name);
			if (!FL_CHECK_MSG(tl && tl->numel == td->numel, "%s", td->name))
				continue;
			FL_CHECK(tl->flags == BS);
			memcpy(fl_model_params(l) + tl->offset, fl_model_params(d) + td->offset,
			       sizeof(float) * td->numel);
		}
		fl_model_params_changed(l);
		const struct fl_model_tensor *w2b = fl_model_tensor_find(l, "fc1.hada_w2_b");
		const struct fl_model_tensor *w1a = fl_model_tensor_find(l, "fc1.hada_w1_a");
		int zeros = 1, nonzero = 0;
		for (size_t k = 0; w2b && k < w2b->numel; k++)
			zeros &= fl_model_params(l)[w2b->offset + k] == 0.0f;
		for (size_t k = 0; w1a && k < w1a->numel; k++)
			nonzero |= fl_model_params(l)[w1a->offset + k] != 0.0f;
		FL_CHECK(w2b && zeros && nonzero);
		float *x = malloc(sizeof(float) * B * C * H * W);
		fl_test_fill_uniform(x, (size_t)B * C * H * W, 3, -1, 1);
		float yd[5 * 4], yl[5 * 4];
		memcpy(yd, fl_model_forward(d, x, B, 0, NULL), sizeof(yd));
		memcpy(yl, fl_model_forward(l, x, B, 0, NULL), sizeof(yl));
		FL_CHECK_MSG(memcmp(yd, yl, sizeof(yd)) == 0, "%s: loha at init != dense base",
			     name);
		/* the composed weight equals W0 */
		float *wc = malloc(sizeof(float) * 512 * 256 * 2);
		struct fl_model_layer_info li;
		char wn[64];
		for (int i = 0; fl_test_next_weight(l, &i, &li, wn); i++) {
			const struct fl_model_tensor *t = fl_model_tensor_find(l, wn);
			fl_model_compose_weight(l, i, wc);
			FL_CHECK(t && memcmp(wc, fl_model_params(l) + t->offset,
					     sizeof(float) * t->numel) == 0);
		}
		free(wc);
		free(x);
		fl_model_free(d);
		fl_model_free(l);
	}
	fl_peft_config_free(c);
}

static void test_loha_dropout(void)
{
	const int B = 4, N = 16, K = 3;
	struct fl_peft_config *c = fl_test_peft_config(FL_PEFT_PARAM_LOHA, 0, 0, 4, 4);
	c->init_weights = 0; /* ΔW != 0, so dropping rows changes the output */
	c->rank_dropout = 0.5;
	struct fl_model *m = fl_test_model("2nn", 1, 4, 4, K, c, 2, 16);
	float x[4 * 16], ye[4 * 3], ye2[4 * 3], yt[4 * 3], yt2[4 * 3];
	fl_test_fill_uniform(x, (size_t)B * N, 9, -1, 1);
	if (m) {
		memcpy(ye, fl_model_forward(m, x, B, 0, NULL), sizeof(ye));
		struct fl_rng rng;
		fl_rng_seed(&rng, 77);
		memcpy(yt, fl_model_forward(m, x, B, 1, &rng), sizeof(yt));
		memcpy(yt2, fl_model_forward(m, x, B, 1, &rng), sizeof(yt2));
		memcpy(ye2, fl_model_forward(m, x, B, 0, NULL), sizeof(ye2));
		FL_CHECK(memcmp(ye, ye2, sizeof(ye)) == 0); /* eval is deterministic */
		FL_CHECK(memcmp(ye, yt, sizeof(ye)) != 0);  /* training drops rows */
		FL_CHECK(memcmp(yt, yt2, sizeof(yt)) != 0); /* fresh draws per step */
		/* the same rng state replays the same training output */
		fl_rng_seed(&rng, 77);
		memcpy(yt2, fl_model_forward(m, x, B, 1, &rng), sizeof(yt2));
		FL_CHECK(memcmp(yt, yt2, sizeof(yt)) == 0);
	}
	fl_model_free(m);

	/* module_dropout: over many draws, some steps skip the adapter (output =
	 * base output), some keep it (output = eval output). */
	c->rank_dropout = 0;
	c->module_dropout = 0.5;
	m = fl_test_model("mlp", 1, 4, 4, K, c, 2, 16);
	struct fl_model *base = fl_test_model("mlp", 1, 4, 4, K, NULL, 2, 16);
	if (m && base) {
		/* base weights of both models are the same draws (same seed/streams) */
		const struct fl_model_tensor *tb = fl_model_tensor_find(base, "fc1.weight");
		const struct fl_model_tensor *tm = fl_model_tensor_find(m, "fc1.weight");
		FL_CHECK(tb && tm &&
			 memcmp(fl_model_params(base) + tb->offset, fl_model_params(m) + tm->offset,
				sizeof(float) * tb->numel) == 0);
		float yb[4 * 3];
		memcpy(yb, fl_model_forward(base, x, B, 0, NULL), sizeof(yb));
		memcpy(ye, fl_model_forward(m, x, B, 0, NULL), sizeof(ye));
		FL_CHECK(memcmp(ye, yb, sizeof(ye)) != 0);
		struct fl_rng rng;
		fl_rng_seed(&rng, 5);
		int skipped = 0, kept = 0, other = 0, grad_skip = 0, grad_kept = 0;
		float dl[4 * 3];
		fl_test_fill_uniform(dl, sizeof(dl) / sizeof(dl[0]), 12, -1, 1);
		for (int i = 0; i < 40; i++) {
			const float *y = fl_model_forward(m, x, B, 1, &rng);
			int skip = memcmp(y, yb, sizeof(yb)) == 0;
			if (skip)
				skipped++;
			else if (memcmp(y, ye, sizeof(ye)) == 0)
				kept++;
			else
				other++;
			/* a skipped step gives no factor gradient, a kept one does */
			fl_model_zero_grads(m);
			fl_model_backward(m, dl);
			size_t nz = 0;
			for (size_t k = 0; k < fl_model_param_floats(m); k++)
				nz += fl_model_grads(m)[k] != 0.0f;
			if (skip)
				grad_skip += nz == 0;
			else
				grad_kept += nz > 0;
		}
		FL_CHECK_MSG(skipped >= 8 && kept >= 8 && other == 0, "skipped %d kept %d other %d",
			     skipped, kept, other);
		FL_CHECK(grad_skip == skipped && grad_kept == kept);
		memcpy(yt, fl_model_forward(m, x, B, 0, NULL), sizeof(yt));
		FL_CHECK(memcmp(yt, ye, sizeof(ye)) == 0);
	}
	fl_model_free(m);
	fl_model_free(base);
	fl_peft_config_free(c);
}

/* ---- determinism ---- */

static int params_equal(struct fl_model *a, struct fl_model *b)
{
	return fl_model_param_floats(a) == fl_model_param_floats(b) &&
	       memcmp(fl_model_params(a), fl_model_params(b),
		      sizeof(float) * fl_model_param_floats(a)) == 0;
}

/* A model for ds's sample shape and its trainer: SGD, lr 0.05, momentum 0.9,
 * batch `batch`. */
static int model_and_trainer(const char *arch, const struct fl_dataset *ds,
			     const struct fl_peft_config *c, uint64_t seed, int batch,
			     struct fl_model **m, struct fl_trainer **t)
{
	struct fl_optim_config oc;
	fl_optim_config_default(&oc, FL_OPTIM_SGD);
	oc.lr = 0.05f;
	oc.momentum = 0.9f;
	int err = fl_model_new(arch, ds->c, ds->h, ds->w, ds->classes, c, seed, batch, m);
	if (!err)
		err = fl_trainer_new(*m, &oc, batch, t);
	return err;
}

/* Trains a fresh model for 2 epochs on ds; returns it. */
static struct fl_model *train_fresh(const char *arch, const struct fl_peft_config *c,
				    const struct fl_dataset *ds, uint64_t seed, int epochs,
				    double *last_loss)
{
	struct fl_model *m = NULL;
	struct fl_trainer *t = NULL;
	int err = model_and_trainer(arch, ds, c, seed, 8, &m, &t);
	struct fl_rng rng;
	fl_rng_seed_stream(&rng, seed, 1);
	struct fl_train_stats st = {0};
	for (int e = 0; e < epochs && !err; e++)
		err = fl_trainer_epoch(t, ds, NULL, ds->n, &rng, &st);
	FL_CHECK_MSG(err == FL_OK, "training %s: %s", arch, fl_error_msg());
	if (last_loss)
		*last_loss = st.loss;
	fl_trainer_free(t);
	if (err) {
		fl_model_free(m);
		return NULL;
	}
	return m;
}

/* The tiny MNIST fixture, normalised; NULL (a failed check) if missing. */
static struct fl_dataset *tiny_mnist(void)
{
	struct fl_dataset *ds = NULL;
	int err = fl_dataset_load("mnist", fl_test_data("dataset/mnist-tiny"), 1, &ds);
	if (!FL_CHECK_MSG(err == FL_OK, "mnist-tiny: %s", fl_error_msg()))
		return NULL;
	FL_CHECK(fl_dataset_compute_norm(ds) == FL_OK);
	return ds;
}

static void test_determinism(void)
{
	struct fl_dataset *ds = tiny_mnist();
	if (!ds)
		return;
	struct fl_peft_config *cf = fl_test_peft_config(FL_PEFT_PARAM_FEDPARA, 1, 0.1, 0, 0);
	struct fl_peft_config *cl = fl_test_peft_config(FL_PEFT_PARAM_LOHA, 0, 0, 4, 4);
	cl->rank_dropout = 0.3;
	cl->module_dropout = 0.2;
	cl->init_weights = 0;
	struct {
		const char *arch;
		const struct fl_peft_config *c;
	} cases[] = {{"2nn", NULL}, {"2nn", cf}, {"cnn", cf}, {"mlp", cl}};
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		struct fl_model *a = NULL, *b = NULL, *d = NULL;
		/* freshly built */
		fl_model_new(cases[k].arch, 1, 28, 28, 10, cases[k].c, 42, 4, &a);
		fl_model_new(cases[k].arch, 1, 28, 28, 10, cases[k].c, 42, 4, &b);
		fl_model_new(cases[k].arch, 1, 28, 28, 10, cases[k].c, 43, 4, &d);
		if (FL_CHECK(a && b && d)) {
			FL_CHECK_MSG(params_equal(a, b), "case %zu: same seed, different init", k);
			FL_CHECK_MSG(!params_equal(a, d), "case %zu: different seed, same init", k);
		}
		fl_model_free(a);
		fl_model_free(b);
		fl_model_free(d);
		/* trained two epochs */
		a = train_fresh(cases[k].arch, cases[k].c, ds, 42, 2, NULL);
		b = train_fresh(cases[k].arch, cases[k].c, ds, 42, 2, NULL);
		d = train_fresh(cases[k].arch, cases[k].c, ds, 43, 2, NULL);
		if (a && b && d) {
			FL_CHECK_MSG(params_equal(a, b), "case %zu: same seed, different training",
				     k);
			FL_CHECK_MSG(!params_equal(a, d), "case %zu: different seed, same training",
				     k);
		}
		fl_model_free(a);
		fl_model_free(b);
		fl_model_free(d);
	}
	fl_peft_config_free(cf);
	fl_peft_config_free(cl);
	fl_dataset_free(ds);
}

/* Releasing the batch buffers before the trainer exists and between two
 * epochs changes nothing: the same parameters as an uninterrupted run. */
static void test_buffers_release(void)
{
	struct fl_dataset *ds = tiny_mnist();
	if (!ds)
		return;
	struct fl_peft_config *cf = fl_test_peft_config(FL_PEFT_PARAM_FEDPARA, 1, 0.1, 0, 0);
	const char *arch[2] = {"cnn", "2nn"};
	for (int k = 0; k < 2; k++) {
		const struct fl_peft_config *c = k ? NULL : cf;
		struct fl_model *a = train_fresh(arch[k], c, ds, 42, 2, NULL), *m = NULL;
		struct fl_trainer *t = NULL;
		struct fl_optim_config oc;
		fl_optim_config_default(&oc, FL_OPTIM_SGD);
		oc.lr = 0.05f;
		oc.momentum = 0.9f;
		int err = fl_model_new(arch[k], ds->c, ds->h, ds->w, ds->classes, c, 42, 8, &m);
		FL_CHECK(!err && fl_model_has_buffers(m));
		if (!err) {
			FL_CHECK(fl_model_buffers(m, 0) == FL_OK && !fl_model_has_buffers(m));
			FL_CHECK(fl_model_buffers(m, 0) == FL_OK); /* twice is fine */
			err = fl_trainer_new(m, &oc, 8, &t);
			FL_CHECK(!err && fl_model_has_buffers(m));
		}
		struct fl_rng rng;
		fl_rng_seed_stream(&rng, 42, 1);
		struct fl_train_stats st;
		for (int e = 0; e < 2 && !err; e++) {
			err = fl_trainer_epoch(t, ds, NULL, ds->n, &rng, &st);
			fl_model_buffers(m, 0);
			if (!err)
				err = fl_model_buffers(m, 1);
		}
		FL_CHECK_MSG(err == FL_OK, "%s: %s", arch[k], fl_error_msg());
		if (a && !err)
			FL_CHECK_MSG(params_equal(a, m), "%s: a release changed training", arch[k]);
		fl_trainer_free(t);
		fl_model_free(m);
		fl_model_free(a);
	}
	fl_peft_config_free(cf);
	fl_dataset_free(ds);
}

/* ---- training sanity ---- */

/* Sample i of class i % 4 lights the k-th 4x4 quadrant (pixels 160..255)
 * over a noisy background (0..95). */
static void quadrant_sample(int i, struct fl_rng *rng, int32_t *label, uint8_t *px)
{
	int k = i % 4;
	*label = (uint8_t)k;
	for (int y = 0; y < 8; y++)
		for (int x = 0; x < 8; x++) {
			int q = (y / 4) * 2 + x / 4;
			int v = q == k ? 160 + (int)fl_rng_below(rng, 96)
				       : (int)fl_rng_below(rng, 96);
			px[y * 8 + x] = (uint8_t)v;
		}
}

/* n samples 1x8x8, 4 classes, normalised (quadrant_sample). */
static struct fl_dataset *separable_set(int n, uint64_t seed)
{
	struct fl_dataset *ds = fl_test_dataset(n, 1, 8, 8, 4, seed, quadrant_sample);
	if (ds)
		fl_dataset_compute_norm(ds);
	return ds;
}

static void test_training_reduces_loss(void)
{
	struct fl_dataset *ds = separable_set(256, 4), *test = separable_set(128, 5);
	if (!FL_CHECK(ds && test)) {
		fl_dataset_free(ds);
		fl_dataset_free(test);
		return;
	}
	fl_dataset_copy_norm(test, ds);
	struct fl_peft_config *cf = fl_test_peft_config(FL_PEFT_PARAM_FEDPARA, 1, 0.5, 0, 0);
	const struct fl_peft_config *cs[2] = {NULL, cf};
	for (int k = 0; k < 2; k++) {
		struct fl_model *m = NULL;
		struct fl_trainer *t = NULL;
		int err = model_and_trainer("2nn", ds, cs[k], 7, 32, &m, &t);
		struct fl_train_stats before = {0}, after = {0}, st = {0};
		if (!err)
			err = fl_trainer_evaluate(t, test, NULL, test->n, &before);
		struct fl_rng rng;
		fl_rng_seed(&rng, 8);
		for (int e = 0; e < 5 && !err; e++)
			err = fl_trainer_epoch(t, ds, NULL, ds->n, &rng, &st);
		if (!err)
			err = fl_trainer_evaluate(t, test, NULL, test->n, &after);
		FL_CHECK_MSG(err == FL_OK, "%s", fl_error_msg());
		printf("  %s: test loss %.4f -> %.4f, accuracy %.3f -> %.3f\n",
		       k ? "fedpara" : "dense", before.loss, after.loss, before.accuracy,
		       after.accuracy);
		FL_CHECK(before.loss > 1.0); /* ~ln 4 at init */
		FL_CHECK(after.loss < 0.1 * before.loss);
		FL_CHECK(after.accuracy >= 0.98);
		FL_CHECK(st.samples == 256 && st.loss < 0.2);
		fl_trainer_free(t);
		fl_model_free(m);
	}
	fl_peft_config_free(cf);
	fl_dataset_free(ds);
	fl_dataset_free(test);
}

int main(void)
{
	FL_RUN(test_loha_init_identity);
	FL_RUN(test_loha_dropout);
	FL_RUN(test_determinism);
	FL_RUN(test_buffers_release);
	FL_RUN(test_training_reduces_loss);
	return fl_test_main_end();
}
