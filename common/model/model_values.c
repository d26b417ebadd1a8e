/* model_values.c - where the values of a model's tensors live (pointers
 * into the one parameter buffer) and their initial values: PyTorch's for
 * dense layers, norms and positions, He or PEFT initialisation for the
 * factors. Building the tensor table is model.c. */
#include "model_impl.h"

#include <math.h>
#include <string.h>

float *fl_model_tensor_ptr(struct fl_model *m, int t)
{
	return t < 0 ? NULL : m->params + m->tensors[t].offset;
}

void fl_model_layer_factors(struct fl_model *m, int li, float *base, struct fl_loha_factors *f)
{
	struct fl_layer *L = &m->layers[li];
	const int idx[6] = {FL_LT_W1A, FL_LT_W1B, FL_LT_W2A, FL_LT_W2B, FL_LT_T1, FL_LT_T2};
	float **dst[6] = {&f->w1a, &f->w1b, &f->w2a, &f->w2b, &f->t1, &f->t2};
	for (int i = 0; i < 6; i++)
		*dst[i] = L->t[idx[i]] < 0 ? NULL : base + m->tensors[L->t[idx[i]]].offset;
}

/* PyTorch's initial values of the parameters of a norm (weight 1, bias 0)
 * or a position (zeros). */
static void init_params(struct fl_model *m, int li)
{
	struct fl_layer *L = &m->layers[li];
	float *w = fl_model_tensor_ptr(m, L->t[FL_LT_WEIGHT]);
	size_t n = m->tensors[L->t[FL_LT_WEIGHT]].numel;
	for (size_t i = 0; i < n; i++)
		w[i] = L->kind == FL_LAYER_POSITION ? 0.0f : 1.0f;
	if (L->t[FL_LT_BIAS] >= 0)
		memset(fl_model_tensor_ptr(m, L->t[FL_LT_BIAS]), 0, sizeof(float) * n);
}

void fl_model_init_layer(struct fl_model *m, int li, uint64_t seed)
{
	struct fl_layer *L = &m->layers[li];
	if (!fl_layer_kind_weight(L->kind)) {
		if (L->t[FL_LT_WEIGHT] >= 0)
			init_params(m, li);
		return;
	}
	struct fl_rng rng;
	fl_rng_seed_stream(&rng, seed, (uint64_t)li);
	int kk = L->kind == FL_LAYER_CONV2D ? L->k : 1;
	float bound = 1.0f / sqrtf((float)L->in_c * kk * kk); /* PyTorch default for w and b */
	float *w = fl_model_tensor_ptr(m, L->t[FL_LT_WEIGHT]);
	size_t wn = L->t[FL_LT_WEIGHT] >= 0 ? m->tensors[L->t[FL_LT_WEIGHT]].numel : 0;
	if (L->kind == FL_LAYER_EMBEDDING) /* nn.Embedding: N(0, 1) */
		for (size_t i = 0; i < wn; i++)
			w[i] = fl_rng_normal(&rng);
	else if (w)
		fl_rng_fill_uniform(&rng, w, wn, bound);
	if (L->t[FL_LT_BIAS] >= 0)
		fl_rng_fill_uniform(&rng, fl_model_tensor_ptr(m, L->t[FL_LT_BIAS]),
				    m->tensors[L->t[FL_LT_BIAS]].numel, bound);
	struct fl_loha_factors f;
	switch (L->param) {
	case FL_PEFT_PARAM_FEDPARA:
	case FL_PEFT_PARAM_PFEDPARA:
		fl_model_layer_factors(m, li, m->params, &f);
		fl_loha_init_he(&f, &L->ld, L->scale,
				L->param == FL_PEFT_PARAM_PFEDPARA ? FL_LOHA_MODE_PFEDPARA
								   : FL_LOHA_MODE_LOHA,
				&rng);
		break;
	case FL_PEFT_PARAM_LOHA:
		fl_model_layer_factors(m, li, m->params, &f);
		fl_loha_init_peft(&f, &L->ld, m->init_weights, &rng);
		break;
	case FL_PEFT_PARAM_LOWRANK:
		fl_lowrank_init_he(fl_model_tensor_ptr(m, L->t[FL_LT_LORA_B]),
				   fl_model_tensor_ptr(m, L->t[FL_LT_LORA_A]), L->out_c,
				   L->in_c * kk * kk, L->lowrank_k, L->scale, &rng);
		break;
	default: break;
	}
}
