/* model_query.c - read-only questions about a built model: its
 * architecture, sizes, parameter and gradient buffers, tensors by index or
 * name, trainable ranges and layer summaries. Building is model.c. */
#include "model_impl.h"

#include "errors.h"

#include <stdlib.h>
#include <string.h>

/* ---- accessors ---- */

const char *fl_model_arch(const struct fl_model *m)
{
	return m->arch;
}
const struct fl_model_desc *fl_model_description(const struct fl_model *m)
{
	return m->desc;
}
int fl_model_max_batch(const struct fl_model *m)
{
	return m->max_batch;
}
enum fl_peft_param fl_model_param(const struct fl_model *m)
{
	return m->param;
}
float *fl_model_params(struct fl_model *m)
{
	return m->params;
}
float *fl_model_grads(struct fl_model *m)
{
	return m->grads;
}
size_t fl_model_param_floats(const struct fl_model *m)
{
	return m->nparams;
}
void fl_model_params_changed(struct fl_model *m)
{
	m->stale = 1;
}
size_t fl_model_tensor_count(const struct fl_model *m)
{
	return m->ntensors;
}
int fl_model_layer_count(const struct fl_model *m)
{
	return m->nlayers;
}

void fl_model_input_dims(const struct fl_model *m, int *c, int *h, int *w, int *classes)
{
	if (c)
		*c = m->c;
	if (h)
		*h = m->h;
	if (w)
		*w = m->w;
	if (classes)
		*classes = m->classes;
}

const struct fl_model_tensor *fl_model_tensor_at(const struct fl_model *m, size_t i)
{
	return i < m->ntensors ? &m->tensors[i] : NULL;
}

const struct fl_model_tensor *fl_model_tensor_find(const struct fl_model *m, const char *name)
{
	for (size_t i = 0; i < m->ntensors; i++)
		if (strcmp(m->tensors[i].name, name) == 0)
			return &m->tensors[i];
	return NULL;
}

size_t fl_model_count_floats(const struct fl_model *m, unsigned flags)
{
	size_t n = 0;
	for (size_t i = 0; i < m->ntensors; i++)
		if ((m->tensors[i].flags & flags) == flags)
			n += m->tensors[i].numel;
	return n;
}

const struct fl_optim_range *fl_model_trainable_ranges(const struct fl_model *m, size_t *n)
{
	*n = m->nranges;
	return m->ranges;
}

void fl_model_layer_info(const struct fl_model *m, int i, struct fl_model_layer_info *out)
{
	const struct fl_layer *L = &m->layers[i];
	memset(out, 0, sizeof(*out));
	out->name = L->name;
	out->kind = L->kind;
	out->param = L->param;
	if (!fl_layer_kind_weight(L->kind))
		return;
	out->out = L->out_c;
	out->in = L->in_c;
	out->k1 = out->k2 = L->kind == FL_LAYER_CONV2D ? L->k : 1;
	out->rank = L->param == FL_PEFT_PARAM_LOWRANK ? L->lowrank_k
		    : L->param == FL_PEFT_PARAM_DENSE ? 0
						      : L->ld.r;
	out->tucker = L->param != FL_PEFT_PARAM_DENSE && L->param != FL_PEFT_PARAM_LOWRANK &&
		      L->ld.form == FL_LOHA_FORM_TUCKER;
	out->scale = L->scale;
	out->has_bias = L->t[FL_LT_BIAS] >= 0;
}
