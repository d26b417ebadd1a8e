/* model_seq.c - running the sequence and norm layers of a model:
 * GroupNorm, LayerNorm, Embedding (a weight layer: dense, or composed from
 * its factors), tokens, position, the attention core and mean_tokens. The
 * kernels are common/math/layers.h; the other layers run in model_run.c. */
#include "model_impl.h"

#include <assert.h>
#include <string.h>

static float *param(struct fl_model *m, const struct fl_layer *L, int slot)
{
	return fl_model_tensor_ptr(m, L->t[slot]);
}

/* The gradient buffer of a parameter when it is trained, else NULL. */
static float *param_grad(struct fl_model *m, const struct fl_layer *L, int slot)
{
	if (L->t[slot] < 0)
		return NULL;
	const struct fl_model_tensor *t = &m->tensors[L->t[slot]];
	return (t->flags & FL_TENSOR_TRAINABLE) ? m->grads + t->offset : NULL;
}

static const float *source(const struct fl_model *m, const struct fl_layer *L, int j)
{
	return fl_model_layer_output(m, L->src[j]);
}

static float *source_grad(struct fl_model *m, const struct fl_layer *L, int j)
{
	return L->src[j] < 0 ? NULL : m->layers[L->src[j]].dact;
}

void fl_model_seq_forward(struct fl_model *m, int i, const float *in, int batch)
{
	struct fl_layer *L = &m->layers[i];
	size_t half;
	switch (L->kind) {
	case FL_LAYER_GROUPNORM:
		half = (size_t)m->max_batch * L->groups;
		fl_groupnorm_forward(L->act, L->stat, L->stat + half, in, param(m, L, FL_LT_WEIGHT),
				     param(m, L, FL_LT_BIAS), batch, L->in_c, L->in_h * L->in_w,
				     L->groups, L->eps);
		break;
	case FL_LAYER_LAYERNORM:
		half = (size_t)m->max_batch * L->rows;
		fl_layernorm_forward(L->act, L->stat, L->stat + half, in, param(m, L, FL_LT_WEIGHT),
				     param(m, L, FL_LT_BIAS), batch * L->rows, L->dim, L->eps);
		break;
	case FL_LAYER_EMBEDDING:
		fl_embedding_forward(L->act, in, fl_model_layer_weight(m, L), batch * L->rows,
				     L->out_c, L->in_c);
		break;
	case FL_LAYER_TOKENS:
		fl_tokens_forward(L->act, in, batch, L->in_c, L->in_h * L->in_w);
		break;
	case FL_LAYER_POSITION:
		fl_position_forward(L->act, in, param(m, L, FL_LT_WEIGHT), batch, L->tokens,
				    L->dim);
		break;
	case FL_LAYER_ATTENTION:
		fl_attention_forward(L->act, m->attn_work, source(m, L, 0), source(m, L, 1),
				     source(m, L, 2), batch, L->tokens, L->dim, L->heads);
		break;
	case FL_LAYER_MEAN_TOKENS:
		fl_mean_tokens_forward(L->act, in, batch, L->tokens, L->dim);
		break;
	default: assert(0 && "not a sequence layer");
	}
}

/* Embedding: dW into its weight's gradient (dense) or through dweff into
 * its factors; ids have no gradient. */
static void embedding_backward(struct fl_model *m, int i, const float *dy, int batch)
{
	struct fl_layer *L = &m->layers[i];
	float *dw = L->param == FL_PEFT_PARAM_DENSE ? param_grad(m, L, FL_LT_WEIGHT) : L->dweff;
	if (!dw)
		return;
	if (L->param != FL_PEFT_PARAM_DENSE)
		memset(dw, 0, sizeof(float) * (size_t)L->out_c * L->in_c);
	fl_embedding_backward(dw, dy, source(m, L, 0), batch * L->rows, L->out_c, L->in_c);
	if (L->param != FL_PEFT_PARAM_DENSE)
		fl_model_factor_backward(m, i);
}

void fl_model_seq_backward(struct fl_model *m, int i, const float *dy, int batch)
{
	struct fl_layer *L = &m->layers[i];
	const float *in = source(m, L, 0);
	float *dx = source_grad(m, L, 0);
	size_t half;
	switch (L->kind) {
	case FL_LAYER_GROUPNORM:
		half = (size_t)m->max_batch * L->groups;
		fl_groupnorm_backward(dx, param_grad(m, L, FL_LT_WEIGHT),
				      param_grad(m, L, FL_LT_BIAS), dy, in, L->stat, L->stat + half,
				      param(m, L, FL_LT_WEIGHT), batch, L->in_c, L->in_h * L->in_w,
				      L->groups);
		break;
	case FL_LAYER_LAYERNORM:
		half = (size_t)m->max_batch * L->rows;
		fl_layernorm_backward(dx, param_grad(m, L, FL_LT_WEIGHT),
				      param_grad(m, L, FL_LT_BIAS), dy, in, L->stat, L->stat + half,
				      param(m, L, FL_LT_WEIGHT), batch * L->rows, L->dim);
		break;
	case FL_LAYER_EMBEDDING: embedding_backward(m, i, dy, batch); break;
	case FL_LAYER_TOKENS:
		if (dx)
			fl_tokens_backward(dx, dy, batch, L->in_c, L->in_h * L->in_w);
		break;
	case FL_LAYER_POSITION:
		fl_position_backward(dx, param_grad(m, L, FL_LT_WEIGHT), dy, batch, L->tokens,
				     L->dim);
		break;
	case FL_LAYER_ATTENTION:
		fl_attention_backward(source_grad(m, L, 0), source_grad(m, L, 1),
				      source_grad(m, L, 2), m->attn_work, dy, source(m, L, 0),
				      source(m, L, 1), source(m, L, 2), batch, L->tokens, L->dim,
				      L->heads);
		break;
	case FL_LAYER_MEAN_TOKENS:
		if (dx)
			fl_mean_tokens_backward(dx, dy, batch, L->tokens, L->dim);
		break;
	default: assert(0 && "not a sequence layer");
	}
}
