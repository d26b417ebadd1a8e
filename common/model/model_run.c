/* model_run.c - forward and backward passes of a model: composing the
 * weights of parameterised layers (with PEFT's dropouts when training), the
 * layer kernels, and the chain rule back into the factor gradients. */
#include "model_impl.h"
#include "vmath.h"

#include <assert.h>
#include <string.h>

static size_t weight_floats(const struct fl_layer *L)
{
	int kk = L->kind == FL_LAYER_CONV2D ? L->k * L->k : 1;
	return (size_t)L->out_c * L->in_c * kk;
}

/* Composes layer li's effective weight into dst. train: apply loha's module
 * and rank dropout, drawn from rng. */
static void compose(struct fl_model *m, int li, float *dst, int train, struct fl_rng *rng)
{
	struct fl_layer *L = &m->layers[li];
	size_t wn = weight_floats(L);
	struct fl_loha_factors f;
	L->skip = 0;
	L->masked = 0;
	switch (L->param) {
	case FL_PEFT_PARAM_FEDPARA:
	case FL_PEFT_PARAM_PFEDPARA:
		fl_model_layer_factors(m, li, m->params, &f);
		fl_loha_forward(dst, m->loha_work, &f, &L->ld, L->scale,
				L->param == FL_PEFT_PARAM_PFEDPARA ? FL_LOHA_MODE_PFEDPARA
								   : FL_LOHA_MODE_LOHA);
		break;
	case FL_PEFT_PARAM_LOWRANK:
		fl_lowrank_forward(dst, fl_model_tensor_ptr(m, L->t[FL_LT_LORA_B]),
				   fl_model_tensor_ptr(m, L->t[FL_LT_LORA_A]), L->out_c,
				   (int)(wn / (size_t)L->out_c), L->lowrank_k, L->scale);
		break;
	case FL_PEFT_PARAM_LOHA: {
		const float *w0 = fl_model_tensor_ptr(m, L->t[FL_LT_WEIGHT]);
		if (train && L->module_dropout > 0 &&
		    fl_loha_module_dropout(L->module_dropout, rng)) {
			L->skip = 1;
			memcpy(dst, w0, sizeof(float) * wn);
			break;
		}
		fl_model_layer_factors(m, li, m->params, &f);
		fl_loha_forward(dst, m->loha_work, &f, &L->ld, L->scale, FL_LOHA_MODE_LOHA);
		if (train && L->rank_dropout > 0) {
			fl_loha_rank_dropout_mask(L->mask, L->out_c, L->rank_dropout, rng);
			fl_loha_apply_row_mask(dst, L->mask, L->out_c,
					       (long)(wn / (size_t)L->out_c));
			L->masked = 1;
		}
		fl_loha_merge(dst, w0, wn);
		break;
	}
	default: assert(0 && "compose on a dense layer");
	}
}

void fl_model_compose_weight(struct fl_model *m, int layer, float *w)
{
	struct fl_layer *L = &m->layers[layer];
	assert(fl_layer_kind_weight(L->kind));
	if (L->param == FL_PEFT_PARAM_DENSE)
		memcpy(w, fl_model_tensor_ptr(m, L->t[FL_LT_WEIGHT]),
		       sizeof(float) * weight_floats(L));
	else
		compose(m, layer, w, 0, NULL);
}

const float *fl_model_layer_weight(struct fl_model *m, struct fl_layer *L)
{
	return L->param == FL_PEFT_PARAM_DENSE ? fl_model_tensor_ptr(m, L->t[FL_LT_WEIGHT])
					       : L->weff;
}

static struct fl_conv2d_dims conv_dims(const struct fl_layer *L, int batch)
{
	struct fl_conv2d_dims d = {batch, L->in_c, L->in_h,   L->in_w, L->out_c,
				   L->k,  L->k,    L->stride, L->pad};
	return d;
}

static struct fl_pool2d_dims pool_dims(const struct fl_layer *L, int batch)
{
	struct fl_pool2d_dims d = {batch, L->in_c, L->in_h, L->in_w, L->k, L->stride};
	return d;
}

const float *fl_model_layer_output(const struct fl_model *m, int i)
{
	return i < 0 ? m->input : m->layers[i].act;
}

static void layer_forward(struct fl_model *m, int i, const float *in, int batch, int train,
			  struct fl_rng *rng)
{
	struct fl_layer *L = &m->layers[i];
	size_t n_out = (size_t)batch * L->out_numel;
	switch (L->kind) {
	case FL_LAYER_FLATTEN: memcpy(L->act, in, sizeof(float) * n_out); break;
	case FL_LAYER_RELU: fl_relu_forward(L->act, in, n_out); break;
	case FL_LAYER_GELU: fl_gelu_forward(L->act, in, n_out); break;
	case FL_LAYER_DROPOUT:
		L->dropped = train && L->p > 0;
		if (!L->dropped) {
			memcpy(L->act, in, sizeof(float) * n_out);
			break;
		}
		fl_dropout_mask(L->drop_mask, n_out, L->p, rng);
		fl_dropout_forward(L->act, in, L->drop_mask, n_out);
		break;
	case FL_LAYER_RESIDUAL:
		v4_add(L->act, in, fl_model_layer_output(m, L->src[1]), n_out);
		break;
	case FL_LAYER_LINEAR:
		fl_linear_forward(L->act, in, fl_model_layer_weight(m, L),
				  fl_model_tensor_ptr(m, L->t[FL_LT_BIAS]), batch * L->rows,
				  L->in_c, L->out_c);
		break;
	case FL_LAYER_CONV2D: {
		struct fl_conv2d_dims d = conv_dims(L, batch);
		fl_conv2d_forward(L->act, m->conv_work, in, fl_model_layer_weight(m, L),
				  fl_model_tensor_ptr(m, L->t[FL_LT_BIAS]), &d);
		break;
	}
	case FL_LAYER_MAXPOOL: {
		struct fl_pool2d_dims d = pool_dims(L, batch);
		fl_maxpool2d_forward(L->act, L->pool_idx, in, &d);
		break;
	}
	case FL_LAYER_AVGPOOL: {
		struct fl_pool2d_dims d = pool_dims(L, batch);
		fl_avgpool2d_forward(L->act, in, &d);
		break;
	}
	default: fl_model_seq_forward(m, i, in, batch); break;
	}
}

const float *fl_model_forward(struct fl_model *m, const float *x, int batch, int train,
			      struct fl_rng *rng)
{
	assert(batch >= 1 && batch <= m->max_batch);
	assert(!train || rng);
	assert(fl_model_has_buffers(m)); /* fl_model_buffers(m, 1) after a release */
	m->batch = batch;
	m->input = x;
	if (train || m->stale) {
		for (int i = 0; i < m->nlayers; i++)
			if (m->layers[i].param != FL_PEFT_PARAM_DENSE)
				compose(m, i, m->layers[i].weff, train, rng);
	}
	/* Training composes with fresh dropout draws each step and the optimiser
	 * then changes the factors, so only an evaluation result can be reused. */
	m->stale = train;
	for (int i = 0; i < m->nlayers; i++)
		layer_forward(m, i, fl_model_layer_output(m, m->layers[i].src[0]), batch, train,
			      rng);
	return m->layers[m->nlayers - 1].act;
}

void fl_model_zero_grads(struct fl_model *m)
{
	memset(m->grads, 0, sizeof(float) * m->nparams);
}

/* dW of a parameterised layer -> factor gradients. */
void fl_model_factor_backward(struct fl_model *m, int li)
{
	struct fl_layer *L = &m->layers[li];
	size_t wn = weight_floats(L);
	struct fl_loha_factors f, g;
	switch (L->param) {
	case FL_PEFT_PARAM_LOWRANK:
		fl_lowrank_backward(m->grads + m->tensors[L->t[FL_LT_LORA_B]].offset,
				    m->grads + m->tensors[L->t[FL_LT_LORA_A]].offset, L->dweff,
				    fl_model_tensor_ptr(m, L->t[FL_LT_LORA_B]),
				    fl_model_tensor_ptr(m, L->t[FL_LT_LORA_A]), L->out_c,
				    (int)(wn / (size_t)L->out_c), L->lowrank_k, L->scale);
		return;
	case FL_PEFT_PARAM_LOHA:
		if (L->skip)
			return;
		if (L->masked)
			fl_loha_apply_row_mask(L->dweff, L->mask, L->out_c,
					       (long)(wn / (size_t)L->out_c));
		/* fall through */
	case FL_PEFT_PARAM_FEDPARA:
	case FL_PEFT_PARAM_PFEDPARA:
		fl_model_layer_factors(m, li, m->params, &f);
		fl_model_layer_factors(m, li, m->grads, &g);
		fl_loha_backward(&g, m->loha_work, L->dweff, &f, &L->ld, L->scale,
				 L->param == FL_PEFT_PARAM_PFEDPARA ? FL_LOHA_MODE_PFEDPARA
								    : FL_LOHA_MODE_LOHA);
		return;
	default: return;
	}
}

/* dx += the gradient through a weight layer; dw/db of its tensors. */
static void weight_backward(struct fl_model *m, int i, float *dx, const float *dy, const float *in,
			    int batch)
{
	struct fl_layer *L = &m->layers[i];
	float *dw = NULL, *db = NULL;
	if (L->t[FL_LT_BIAS] >= 0) {
		const struct fl_model_tensor *bt = &m->tensors[L->t[FL_LT_BIAS]];
		if (bt->flags & FL_TENSOR_TRAINABLE)
			db = m->grads + bt->offset;
	}
	if (L->param == FL_PEFT_PARAM_DENSE) {
		const struct fl_model_tensor *wt = &m->tensors[L->t[FL_LT_WEIGHT]];
		if (wt->flags & FL_TENSOR_TRAINABLE)
			dw = m->grads + wt->offset;
	} else if (!(L->param == FL_PEFT_PARAM_LOHA && L->skip)) {
		dw = L->dweff;
		memset(dw, 0, sizeof(float) * weight_floats(L));
	}
	const float *w = fl_model_layer_weight(m, L);
	if (L->kind == FL_LAYER_LINEAR) {
		fl_linear_backward(dx, dw, db, dy, in, w, batch * L->rows, L->in_c, L->out_c);
	} else {
		struct fl_conv2d_dims d = conv_dims(L, batch);
		fl_conv2d_backward(dx, dw, db, m->conv_work, dy, in, w, &d);
	}
	if (L->param != FL_PEFT_PARAM_DENSE)
		fl_model_factor_backward(m, i);
}

static float *src_grad(struct fl_model *m, const struct fl_layer *L, int j)
{
	return L->src[j] < 0 ? NULL : m->layers[L->src[j]].dact;
}

/* Adds dy to dx over n values (dx NULL: nothing). */
static void add_into(float *dx, const float *dy, size_t n)
{
	if (dx)
		v4_add(dx, dx, dy, n);
}

/* The gradients of layer i's inputs (and parameters) from dy = dL/d(its
 * output): ADDED into the dact of its source layers. */
static void layer_backward(struct fl_model *m, int i, const float *dy, int batch)
{
	struct fl_layer *L = &m->layers[i];
	const float *in = fl_model_layer_output(m, L->src[0]);
	float *dx = src_grad(m, L, 0);
	size_t n_in = (size_t)batch * L->in_numel;
	switch (L->kind) {
	case FL_LAYER_FLATTEN: add_into(dx, dy, n_in); break;
	case FL_LAYER_RESIDUAL:
		add_into(dx, dy, n_in);
		add_into(src_grad(m, L, 1), dy, n_in);
		break;
	case FL_LAYER_DROPOUT:
		if (dx && L->dropped)
			fl_dropout_backward(dx, dy, L->drop_mask, n_in);
		else
			add_into(dx, dy, n_in);
		break;
	case FL_LAYER_RELU:
		if (dx)
			fl_relu_backward(dx, L->act, dy, n_in);
		break;
	case FL_LAYER_GELU:
		if (dx)
			fl_gelu_backward(dx, in, dy, n_in);
		break;
	case FL_LAYER_MAXPOOL: {
		struct fl_pool2d_dims d = pool_dims(L, batch);
		if (dx)
			fl_maxpool2d_backward(dx, L->pool_idx, dy, &d);
		break;
	}
	case FL_LAYER_AVGPOOL: {
		struct fl_pool2d_dims d = pool_dims(L, batch);
		if (dx)
			fl_avgpool2d_backward(dx, dy, &d);
		break;
	}
	case FL_LAYER_LINEAR:
	case FL_LAYER_CONV2D: weight_backward(m, i, dx, dy, in, batch); break;
	default: fl_model_seq_backward(m, i, dy, batch); break;
	}
}

/* Whether a layer after `after` reads layer s's output. */
static int read_after(const struct fl_model *m, int s, int after)
{
	for (int k = after + 1; k < m->nlayers; k++)
		for (int j = 0; j < m->layers[k].nsrc; j++)
			if (m->layers[k].src[j] == s)
				return 1;
	return 0;
}

static void zero_dact(struct fl_model *m, int s)
{
	memset(m->layers[s].dact, 0, sizeof(float) * (size_t)m->batch * m->layers[s].out_numel);
}

/* Every output gradient (dact) starts at zero and receives what each of
 * its consumers adds, so a layer read by several (a residual's skip,
 * attention's q, k and v projections of one input) gets the sum; layers
 * only read earlier outputs, so going backwards in order completes each
 * dact before its layer runs. A dact is zeroed just before its last reader
 * (the first to run backwards) adds into it, while it is likely to stay in
 * cache; an output nobody reads gets a zero gradient. */
void fl_model_backward(struct fl_model *m, const float *dlogits)
{
	assert(m->batch >= 1);
	for (int i = m->nlayers - 1; i >= 0; i--) {
		const struct fl_layer *L = &m->layers[i];
		if (i < m->nlayers - 1 && !read_after(m, i, i))
			zero_dact(m, i);
		for (int j = 0; j < L->nsrc; j++) {
			int s = L->src[j], seen = 0;
			for (int p = 0; p < j; p++)
				seen |= L->src[p] == s;
			if (s >= 0 && !seen && !read_after(m, s, i))
				zero_dact(m, s);
		}
		layer_backward(m, i, i == m->nlayers - 1 ? dlogits : m->layers[i].dact, m->batch);
	}
}
