/* train.c - mini-batch SGD/Adam epochs and evaluation. */
#include "train.h"

#include "errors.h"
#include "layers.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

struct fl_trainer {
	struct fl_model *model;
	struct fl_optim opt;
	int batch;
	float *x, *probs, *dlogits;
	int *y;
	int *order;
	int order_cap;
	float *anchor; /* FedProx anchor of the global slice */
	size_t n_global;
	float mu;
};

int fl_trainer_new(struct fl_model *m, const struct fl_optim_config *oc, int batch_size,
		   struct fl_trainer **out)
{
	*out = NULL;
	int c, h, w, classes;
	fl_model_input_dims(m, &c, &h, &w, &classes);
	if (batch_size < 1 || batch_size > fl_model_max_batch(m))
		return fl_error_set(FL_EINVAL,
				    "batch size %d not in [1, %d] (the model's largest batch)",
				    batch_size, fl_model_max_batch(m));
	int err = fl_model_buffers(m, 1);
	if (err)
		return err;
	struct fl_trainer *t = calloc(1, sizeof(*t));
	if (!t)
		return fl_error_set(FL_ENOMEM, "trainer: out of memory");
	t->model = m;
	t->batch = batch_size;
	size_t in = (size_t)c * h * w;
	t->x = malloc(sizeof(float) * in * batch_size);
	t->probs = malloc(sizeof(float) * classes * batch_size);
	t->dlogits = malloc(sizeof(float) * classes * batch_size);
	t->y = malloc(sizeof(int) * batch_size);
	if (!t->x || !t->probs || !t->dlogits || !t->y)
		err = fl_error_set(FL_ENOMEM, "trainer: out of memory");
	if (!err)
		err = fl_optim_init(&t->opt, oc, fl_model_param_floats(m));
	if (err) {
		fl_trainer_free(t);
		return err;
	}
	*out = t;
	return FL_OK;
}

void fl_trainer_free(struct fl_trainer *t)
{
	if (!t)
		return;
	fl_optim_free(&t->opt);
	free(t->x);
	free(t->probs);
	free(t->dlogits);
	free(t->y);
	free(t->order);
	free(t->anchor);
	free(t);
}

struct fl_optim *fl_trainer_optim(struct fl_trainer *t)
{
	return &t->opt;
}

int fl_trainer_set_prox(struct fl_trainer *t, float mu)
{
	t->mu = mu;
	if (mu <= 0)
		return FL_OK;
	/* Transmitted tensors come first in the buffer (model.c's layout). */
	size_t n = fl_model_count_floats(t->model, FL_TENSOR_GLOBAL);
	if (n > t->n_global || !t->anchor) {
		float *a = realloc(t->anchor, sizeof(float) * (n ? n : 1));
		if (!a)
			return fl_error_set(FL_ENOMEM, "trainer: out of memory");
		t->anchor = a;
	}
	t->n_global = n;
	memcpy(t->anchor, fl_model_params(t->model), sizeof(float) * n);
	return FL_OK;
}

static int ensure_order(struct fl_trainer *t, int n)
{
	if (n <= t->order_cap)
		return FL_OK;
	int *o = realloc(t->order, sizeof(int) * (size_t)n);
	if (!o)
		return fl_error_set(FL_ENOMEM, "trainer: out of memory");
	t->order = o;
	t->order_cap = n;
	return FL_OK;
}

int fl_trainer_epoch(struct fl_trainer *t, const struct fl_dataset *ds, const int *idx, int n,
		     struct fl_rng *rng, struct fl_train_stats *st)
{
	memset(st, 0, sizeof(*st));
	if (n <= 0)
		return FL_OK;
	int err = ensure_order(t, n);
	if (err)
		return err;
	for (int i = 0; i < n; i++)
		t->order[i] = idx ? idx[i] : i;
	fl_rng_shuffle_int(rng, t->order, n);
	int classes;
	fl_model_input_dims(t->model, NULL, NULL, NULL, &classes);
	size_t nranges;
	const struct fl_optim_range *ranges = fl_model_trainable_ranges(t->model, &nranges);
	double t0 = fl_now_seconds(), loss_sum = 0;
	long correct = 0;
	for (int b0 = 0; b0 < n; b0 += t->batch) {
		int bs = n - b0 < t->batch ? n - b0 : t->batch;
		fl_dataset_gather(ds, t->order + b0, bs, t->x, t->y);
		const float *logits = fl_model_forward(t->model, t->x, bs, 1, rng);
		double loss;
		int corr;
		fl_softmax_ce_forward(&loss, &corr, t->probs, logits, t->y, bs, classes);
		loss_sum += loss * bs;
		correct += corr;
		memset(t->dlogits, 0, sizeof(float) * (size_t)bs * classes);
		fl_softmax_ce_backward(t->dlogits, t->probs, t->y, bs, classes);
		fl_model_zero_grads(t->model);
		fl_model_backward(t->model, t->dlogits);
		float *w = fl_model_params(t->model);
		float *g = fl_model_grads(t->model);
		if (t->mu > 0)
			fl_optim_add_prox(g, w, t->anchor, t->n_global, t->mu);
		err = fl_optim_step(&t->opt, w, g, ranges, nranges);
		if (err)
			return err;
		fl_model_params_changed(t->model);
	}
	st->samples = n;
	st->loss = loss_sum / n;
	st->accuracy = (double)correct / n;
	st->seconds = fl_now_seconds() - t0;
	if (!(st->loss == st->loss) || st->loss > 1e30)
		return fl_error_set(FL_ENONFINITE,
				    "training diverged (loss %g); lower the learning rate",
				    st->loss);
	return FL_OK;
}

int fl_trainer_evaluate(struct fl_trainer *t, const struct fl_dataset *ds, const int *idx, int n,
			struct fl_train_stats *st)
{
	memset(st, 0, sizeof(*st));
	if (n <= 0)
		return FL_OK;
	int classes;
	fl_model_input_dims(t->model, NULL, NULL, NULL, &classes);
	if (!idx) {
		int err = ensure_order(t, n);
		if (err)
			return err;
		for (int i = 0; i < n; i++)
			t->order[i] = i;
		idx = t->order;
	}
	double t0 = fl_now_seconds(), loss_sum = 0;
	long correct = 0;
	for (int b0 = 0; b0 < n; b0 += t->batch) {
		int bs = n - b0 < t->batch ? n - b0 : t->batch;
		fl_dataset_gather(ds, idx + b0, bs, t->x, t->y);
		const float *logits = fl_model_forward(t->model, t->x, bs, 0, NULL);
		double loss;
		int corr;
		fl_softmax_ce_forward(&loss, &corr, NULL, logits, t->y, bs, classes);
		loss_sum += loss * bs;
		correct += corr;
	}
	st->samples = n;
	st->loss = loss_sum / n;
	st->accuracy = (double)correct / n;
	st->seconds = fl_now_seconds() - t0;
	return FL_OK;
}
