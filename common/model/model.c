/* model.c - building models: architectures, parameterisation of each weight
 * layer, the tensor table and the one parameter buffer, initialisation.
 * Running them (forward/backward) is in model_run.c; saving in model_io.c.
 */
#include "model_impl.h"

#include "errors.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- tensor table ---- */

static int add_tensor(struct fl_model *m, int layer, const char *lname, const char *suffix,
		      unsigned flags, int ndim, const int64_t *shape)
{
	assert(m->ntensors < m->tensors_cap); /* sized by fl_model_new_desc */
	struct fl_model_tensor *t = &m->tensors[m->ntensors];
	memset(t, 0, sizeof(*t));
	snprintf(t->name, sizeof(t->name), "%s.%s", lname, suffix);
	for (size_t i = 0; i < m->ntensors; i++)
		if (strcmp(m->tensors[i].name, t->name) == 0)
			return fl_error_set(FL_EINVAL, "model %s: two tensors named %s", m->arch,
					    t->name);
	t->ndim = ndim;
	t->numel = 1;
	for (int i = 0; i < ndim; i++) {
		t->shape[i] = shape[i];
		t->numel *= (size_t)shape[i];
	}
	t->flags = flags;
	t->layer = layer;
	return (int)m->ntensors++;
}

static int add2(struct fl_model *m, int layer, const char *lname, const char *suffix,
		unsigned flags, int64_t a, int64_t b)
{
	int64_t s[2] = {a, b};
	return add_tensor(m, layer, lname, suffix, flags, 2, s);
}

/* Group of a tensor in the buffer: transmitted first, then local, then base,
 * so the transmitted part of the model is one contiguous slice. */
static int tensor_group(unsigned flags)
{
	if (flags & FL_TENSOR_GLOBAL)
		return 0;
	if (flags & FL_TENSOR_LOCAL)
		return 1;
	return 2;
}

static void layout_tensors(struct fl_model *m)
{
	size_t off = 0;
	for (int g = 0; g < 3; g++) {
		for (size_t i = 0; i < m->ntensors; i++) {
			if (tensor_group(m->tensors[i].flags) != g)
				continue;
			m->tensors[i].offset = off;
			off += m->tensors[i].numel;
		}
	}
	m->nparams = off;
	/* Trainable spans: merge adjacent trainable tensors in buffer order. */
	m->nranges = 0;
	size_t start = 0, end = 0;
	int open = 0;
	for (size_t pos = 0; pos < m->nparams;) {
		const struct fl_model_tensor *t = NULL;
		for (size_t i = 0; i < m->ntensors; i++)
			if (m->tensors[i].offset == pos && m->tensors[i].numel) {
				t = &m->tensors[i];
				break;
			}
		assert(t);
		int tr = (t->flags & FL_TENSOR_TRAINABLE) != 0;
		if (tr && open && end == pos) {
			end = pos + t->numel;
		} else if (tr) {
			if (open)
				m->ranges[m->nranges++] = (struct fl_optim_range){start,
										  end - start};
			start = pos;
			end = pos + t->numel;
			open = 1;
		}
		pos += t->numel;
	}
	if (open)
		m->ranges[m->nranges++] = (struct fl_optim_range){start, end - start};
}

/* ---- parameterisation of one weight layer ---- */

static int choose_param(struct fl_model *m, struct fl_layer *L, const struct fl_peft_config *cfg,
			int is_output)
{
	L->param = FL_PEFT_PARAM_DENSE;
	if (!cfg || cfg->parameterization == FL_PEFT_PARAM_DENSE)
		return FL_OK;
	int targeted = 0, is_linear = L->kind == FL_LAYER_LINEAR;
	int loha = cfg->parameterization == FL_PEFT_PARAM_LOHA;
	if (cfg->target_kind == FL_PEFT_SEL_NULL) {
		/* fedloha's default: every weight layer but the output and
		 * modules_to_save, and no Embedding under loha (PEFT's LoHa has none) */
		targeted = !is_output && !fl_peft_config_is_module_to_save(cfg, L->name) &&
			   !(loha && L->kind == FL_LAYER_EMBEDDING);
	} else {
		int err = fl_peft_config_targets(cfg, L->name, is_linear, is_output, &targeted);
		if (err)
			return err;
	}
	if (!targeted)
		return FL_OK;
	if (loha && L->kind == FL_LAYER_EMBEDDING)
		return fl_error_set(FL_EUNSUPPORTED,
				    "model %s: layer %s: PEFT's LoHa does not adapt Embedding "
				    "layers (leave it out of target_modules, or train it from "
				    "scratch with fedpara or lowrank)",
				    m->arch, L->name);
	L->param = cfg->parameterization;
	int kk = L->kind == FL_LAYER_CONV2D ? L->k : 1;
	L->ld.form = (cfg->use_effective_conv2d && kk > 1) ? FL_LOHA_FORM_TUCKER
							   : FL_LOHA_FORM_LINEAR;
	L->ld.out = L->out_c;
	L->ld.in = L->in_c;
	L->ld.k1 = L->ld.k2 = kk;
	if (cfg->has_gamma && L->param != FL_PEFT_PARAM_LOHA)
		L->ld.r = fl_loha_rank_from_gamma(&L->ld, cfg->gamma);
	else
		L->ld.r = fl_peft_config_rank(cfg, L->name);
	if (L->ld.r < 1)
		return fl_error_set(FL_EINVAL, "model %s: layer %s: rank %d < 1", m->arch, L->name,
				    L->ld.r);
	if (fl_loha_dims_check(&L->ld) != FL_OK)
		return fl_error_set(FL_ERANGE, "model %s: layer %s: %s", m->arch, L->name,
				    fl_error_msg());
	L->scale = L->param == FL_PEFT_PARAM_LOHA ? (float)fl_peft_config_scale(cfg, L->name)
						  : 1.0f;
	if (L->param == FL_PEFT_PARAM_LOWRANK) {
		L->lowrank_tucker = L->ld.form == FL_LOHA_FORM_TUCKER;
		L->lowrank_k = fl_lowrank_rank_for_budget(&L->ld);
		L->ld.form = FL_LOHA_FORM_LINEAR; /* low rank works on the reshaped kernel */
	}
	if (L->param == FL_PEFT_PARAM_LOHA) {
		L->rank_dropout = (float)cfg->rank_dropout;
		L->module_dropout = (float)cfg->module_dropout;
	}
	return FL_OK;
}

/* Registers the tensors of weight layer L (index li). -1 is "absent" in
 * L->t; add_tensor's errors are below -1. */
static int add_layer_tensors(struct fl_model *m, int li, const struct fl_peft_config *cfg)
{
	struct fl_layer *L = &m->layers[li];
	const unsigned G = FL_TENSOR_TRAINABLE | FL_TENSOR_GLOBAL;
	const unsigned LOC = FL_TENSOR_TRAINABLE | FL_TENSOR_LOCAL;
	const unsigned BASE = FL_TENSOR_BASE;
	int64_t o = L->out_c, in = L->in_c, k = L->kind == FL_LAYER_CONV2D ? L->k : 1;
	int64_t n = in * k * k;
	for (int i = 0; i < FL_LT_COUNT; i++)
		L->t[i] = -1;
	unsigned wflags = L->param == FL_PEFT_PARAM_DENSE ? G : BASE;
	if (L->param == FL_PEFT_PARAM_DENSE || L->param == FL_PEFT_PARAM_LOHA) {
		if (L->param == FL_PEFT_PARAM_DENSE && cfg &&
		    cfg->parameterization == FL_PEFT_PARAM_LOHA &&
		    !fl_peft_config_is_module_to_save(cfg, L->name))
			wflags = BASE; /* loha mode: untargeted layers are frozen base too */
		int64_t s4[4] = {o, in, k, k};
		L->t[FL_LT_WEIGHT] = add_tensor(m, li, L->name, "weight", wflags,
						L->kind == FL_LAYER_CONV2D ? 4 : 2, s4);
	}
	unsigned bflags = G;
	if (cfg && cfg->parameterization == FL_PEFT_PARAM_LOHA && !(wflags & FL_TENSOR_GLOBAL))
		bflags = BASE;
	int64_t sb[1] = {o};
	if (L->has_bias)
		L->t[FL_LT_BIAS] = add_tensor(m, li, L->name, "bias", bflags, 1, sb);

	if (L->param == FL_PEFT_PARAM_FEDPARA || L->param == FL_PEFT_PARAM_PFEDPARA ||
	    L->param == FL_PEFT_PARAM_LOHA) {
		unsigned f2 = L->param == FL_PEFT_PARAM_PFEDPARA ? LOC : G;
		int64_t r = L->ld.r;
		if (L->ld.form == FL_LOHA_FORM_TUCKER) {
			int64_t st[4] = {r, r, k, k};
			L->t[FL_LT_T1] = add_tensor(m, li, L->name, "hada_t1", G, 4, st);
			L->t[FL_LT_W1A] = add2(m, li, L->name, "hada_w1_a", G, r, o);
			L->t[FL_LT_W1B] = add2(m, li, L->name, "hada_w1_b", G, r, in);
			L->t[FL_LT_T2] = add_tensor(m, li, L->name, "hada_t2", f2, 4, st);
			L->t[FL_LT_W2A] = add2(m, li, L->name, "hada_w2_a", f2, r, o);
			L->t[FL_LT_W2B] = add2(m, li, L->name, "hada_w2_b", f2, r, in);
		} else {
			L->t[FL_LT_W1A] = add2(m, li, L->name, "hada_w1_a", G, o, r);
			L->t[FL_LT_W1B] = add2(m, li, L->name, "hada_w1_b", G, r, n);
			L->t[FL_LT_W2A] = add2(m, li, L->name, "hada_w2_a", f2, o, r);
			L->t[FL_LT_W2B] = add2(m, li, L->name, "hada_w2_b", f2, r, n);
		}
	} else if (L->param == FL_PEFT_PARAM_LOWRANK) {
		L->t[FL_LT_LORA_B] = add2(m, li, L->name, "lora_B.weight", G, o, L->lowrank_k);
		L->t[FL_LT_LORA_A] = add2(m, li, L->name, "lora_A.weight", G, L->lowrank_k, n);
	}
	for (int i = 0; i < FL_LT_COUNT; i++)
		if (L->t[i] < -1)
			return L->t[i]; /* add_tensor failed */
	return FL_OK;
}

/* ---- build ---- */

static const enum fl_layer_kind op_kind[] = {
	[FL_OP_LINEAR] = FL_LAYER_LINEAR,
	[FL_OP_CONV2D] = FL_LAYER_CONV2D,
	[FL_OP_RELU] = FL_LAYER_RELU,
	[FL_OP_MAXPOOL2D] = FL_LAYER_MAXPOOL,
	[FL_OP_FLATTEN] = FL_LAYER_FLATTEN,
	[FL_OP_GELU] = FL_LAYER_GELU,
	[FL_OP_AVGPOOL2D] = FL_LAYER_AVGPOOL,
	[FL_OP_DROPOUT] = FL_LAYER_DROPOUT,
	[FL_OP_RESIDUAL_ADD] = FL_LAYER_RESIDUAL,
	[FL_OP_GROUPNORM] = FL_LAYER_GROUPNORM,
	[FL_OP_LAYERNORM] = FL_LAYER_LAYERNORM,
	[FL_OP_EMBEDDING] = FL_LAYER_EMBEDDING,
	[FL_OP_TOKENS] = FL_LAYER_TOKENS,
	[FL_OP_POSITION] = FL_LAYER_POSITION,
	[FL_OP_ATTENTION] = FL_LAYER_ATTENTION,
	[FL_OP_MEAN_TOKENS] = FL_LAYER_MEAN_TOKENS,
};

int fl_layer_kind_weight(enum fl_layer_kind kind)
{
	return kind == FL_LAYER_LINEAR || kind == FL_LAYER_CONV2D || kind == FL_LAYER_EMBEDDING;
}

/* Layer L from description step s: kind, name, arguments and shapes (the
 * description has checked and inferred them). */
static void layer_from_step(struct fl_layer *L, const struct fl_desc_step *s)
{
	memset(L, 0, sizeof(*L));
	L->param = FL_PEFT_PARAM_DENSE; /* non-zero: enum value 0 is loha */
	for (int t = 0; t < FL_LT_COUNT; t++)
		L->t[t] = -1;
	L->kind = op_kind[s->op];
	snprintf(L->name, sizeof(L->name), "%s", s->name);
	L->in_numel = fl_desc_shape_numel(&s->in_shape);
	L->out_numel = fl_desc_shape_numel(&s->out_shape);
	const struct fl_desc_shape *in = &s->in_shape, *out = &s->out_shape;
	if (in->ndim == 3) {
		L->in_c = in->dim[0];
		L->in_h = in->dim[1];
		L->in_w = in->dim[2];
	}
	if (out->ndim == 3) {
		L->out_c = out->dim[0];
		L->out_h = out->dim[1];
		L->out_w = out->dim[2];
	}
	L->k = s->kernel;
	L->stride = s->stride;
	L->pad = s->padding;
	L->has_bias = s->bias;
	L->p = s->p;
	L->eps = s->eps;
	L->groups = s->groups;
	L->heads = s->heads;
	L->nsrc = s->nsrc;
	memcpy(L->src, s->src, sizeof(L->src));
	if (in->ndim == 2) {
		L->tokens = in->dim[0];
		L->dim = in->dim[1];
	}
	switch (L->kind) {
	case FL_LAYER_LINEAR:
		L->in_c = s->in;
		L->out_c = s->out;
		L->in_h = L->in_w = L->out_h = L->out_w = 1;
		L->rows = (int)(L->in_numel / (size_t)s->in);
		break;
	case FL_LAYER_LAYERNORM:
		L->dim = s->in;
		L->rows = (int)(L->in_numel / (size_t)s->in);
		break;
	case FL_LAYER_EMBEDDING:
		L->out_c = s->in; /* the weight (num, dim) */
		L->in_c = s->out;
		L->rows = in->dim[0];
		break;
	default: break;
	}
}

/* The dense parameters of a norm or a position: trained and sent, except
 * under loha, where they belong to the frozen base unless modules_to_save
 * names them (as in PEFT). */
static int add_layer_params(struct fl_model *m, int li, const struct fl_peft_config *cfg)
{
	struct fl_layer *L = &m->layers[li];
	unsigned flags = FL_TENSOR_TRAINABLE | FL_TENSOR_GLOBAL;
	if (cfg && cfg->parameterization == FL_PEFT_PARAM_LOHA &&
	    !fl_peft_config_is_module_to_save(cfg, L->name))
		flags = FL_TENSOR_BASE;
	int64_t n = L->kind == FL_LAYER_GROUPNORM ? L->in_c : L->dim;
	if (L->kind == FL_LAYER_POSITION) {
		int64_t s3[3] = {1, L->tokens, L->dim};
		L->t[FL_LT_WEIGHT] = add_tensor(m, li, L->name, "weight", flags, 3, s3);
		return L->t[FL_LT_WEIGHT] < -1 ? L->t[FL_LT_WEIGHT] : FL_OK;
	}
	L->t[FL_LT_WEIGHT] = add_tensor(m, li, L->name, "weight", flags, 1, &n);
	if (L->t[FL_LT_WEIGHT] >= 0)
		L->t[FL_LT_BIAS] = add_tensor(m, li, L->name, "bias", flags, 1, &n);
	return L->t[FL_LT_WEIGHT] < -1 ? L->t[FL_LT_WEIGHT]
	       : L->t[FL_LT_BIAS] < -1 ? L->t[FL_LT_BIAS]
				       : FL_OK;
}

static int build_layers(struct fl_model *m, const struct fl_model_desc *d,
			const struct fl_peft_config *cfg)
{
	int last_weight = -1;
	for (int i = 0; i < d->nsteps; i++)
		if (fl_layer_kind_weight(op_kind[d->steps[i].op]))
			last_weight = i;
	for (int i = 0; i < d->nsteps; i++) {
		struct fl_layer *L = &m->layers[m->nlayers++];
		layer_from_step(L, &d->steps[i]);
		int err = FL_OK;
		if (fl_layer_kind_weight(L->kind)) {
			err = choose_param(m, L, cfg, i == last_weight);
			if (!err)
				err = add_layer_tensors(m, m->nlayers - 1, cfg);
		} else if (L->kind == FL_LAYER_GROUPNORM || L->kind == FL_LAYER_LAYERNORM ||
			   L->kind == FL_LAYER_POSITION) {
			err = add_layer_params(m, m->nlayers - 1, cfg);
		}
		if (err)
			return err;
	}
	return FL_OK;
}

/* The batch-sized buffers: activations and their gradients, pool indices
 * and the convolutions' work area (fl_model_buffers). */
static int alloc_batch_buffers(struct fl_model *m)
{
	size_t B = (size_t)m->max_batch;
	for (int i = 0; i < m->nlayers; i++) {
		struct fl_layer *L = &m->layers[i];
		size_t per = L->out_numel;
		if (!L->act)
			L->act = malloc(sizeof(float) * B * per);
		if (!L->dact)
			L->dact = malloc(sizeof(float) * B * per);
		if (!L->act || !L->dact)
			return fl_error_set(FL_ENOMEM, "model: no memory for activations");
		if (L->kind == FL_LAYER_MAXPOOL && !L->pool_idx) {
			L->pool_idx = malloc(sizeof(int32_t) * B * per);
			if (!L->pool_idx)
				return fl_error_set(FL_ENOMEM, "model: no memory for pool indices");
		}
		if (L->kind == FL_LAYER_DROPOUT && !L->drop_mask) {
			L->drop_mask = malloc(sizeof(float) * B * per);
			if (!L->drop_mask)
				return fl_error_set(FL_ENOMEM,
						    "model: no memory for dropout masks");
		}
		size_t nstat = L->kind == FL_LAYER_GROUPNORM   ? (size_t)L->groups
			       : L->kind == FL_LAYER_LAYERNORM ? (size_t)L->rows
							       : 0;
		if (nstat && !L->stat && !(L->stat = malloc(sizeof(float) * 2 * B * nstat)))
			return fl_error_set(FL_ENOMEM, "model: no memory for norm statistics");
		if (L->kind == FL_LAYER_ATTENTION &&
		    fl_attention_work_floats(L->tokens) > m->attn_work_floats)
			m->attn_work_floats = fl_attention_work_floats(L->tokens);
		if (L->kind == FL_LAYER_CONV2D) {
			struct fl_conv2d_dims d = {m->max_batch, L->in_c,   L->in_h,
						   L->in_w,      L->out_c,  L->k,
						   L->k,         L->stride, L->pad};
			size_t wf = fl_conv2d_work_floats(&d);
			if (wf > m->conv_work_floats)
				m->conv_work_floats = wf;
		}
	}
	if (!m->conv_work)
		m->conv_work = malloc(sizeof(float) * (m->conv_work_floats + 1));
	if (!m->attn_work)
		m->attn_work = malloc(sizeof(float) * (m->attn_work_floats + 1));
	if (!m->conv_work || !m->attn_work)
		return fl_error_set(FL_ENOMEM, "model: no memory for work buffers");
	return FL_OK;
}

static void free_batch_buffers(struct fl_model *m)
{
	for (int i = 0; i < m->nlayers; i++) {
		struct fl_layer *L = &m->layers[i];
		free(L->act);
		free(L->dact);
		free(L->pool_idx);
		free(L->drop_mask);
		free(L->stat);
		L->act = L->dact = L->drop_mask = L->stat = NULL;
		L->pool_idx = NULL;
	}
	free(m->conv_work);
	free(m->attn_work);
	m->conv_work = m->attn_work = NULL;
}

int fl_model_buffers(struct fl_model *m, int on)
{
	if (on)
		return alloc_batch_buffers(m);
	free_batch_buffers(m);
	return FL_OK;
}

int fl_model_has_buffers(const struct fl_model *m)
{
	return m->conv_work != NULL;
}

static int alloc_buffers(struct fl_model *m)
{
	m->params = calloc(m->nparams ? m->nparams : 1, sizeof(float));
	m->grads = calloc(m->nparams ? m->nparams : 1, sizeof(float));
	if (!m->params || !m->grads)
		return fl_error_set(FL_ENOMEM, "model: no memory for %zu parameters", m->nparams);
	int err = alloc_batch_buffers(m);
	if (err)
		return err;
	for (int i = 0; i < m->nlayers; i++) {
		struct fl_layer *L = &m->layers[i];
		if (L->param != FL_PEFT_PARAM_DENSE) {
			size_t wn = (size_t)L->out_c * L->in_c * (L->k ? L->k * L->k : 1);
			L->weff = malloc(sizeof(float) * wn);
			L->dweff = malloc(sizeof(float) * wn);
			L->mask = malloc(sizeof(float) * (size_t)L->out_c);
			if (!L->weff || !L->dweff || !L->mask)
				return fl_error_set(FL_ENOMEM,
						    "model: no memory for composed weights");
			size_t lw = L->param == FL_PEFT_PARAM_LOWRANK ? 0
								      : fl_loha_work_floats(&L->ld);
			if (lw > m->loha_work_floats)
				m->loha_work_floats = lw;
		}
	}
	m->loha_work = malloc(sizeof(float) * (m->loha_work_floats + 1));
	if (!m->loha_work)
		return fl_error_set(FL_ENOMEM, "model: no memory for work buffers");
	return FL_OK;
}

/* Bounds on what a description may make a process allocate (a
 * description can come from the network): parameters, and activations
 * per sample. */
static int check_size(const struct fl_model *m)
{
	size_t acts = 0;
	for (int i = 0; i < m->nlayers; i++)
		acts += m->layers[i].out_numel;
	if (m->nparams > FL_MODEL_PARAMS_MAX)
		return fl_error_set(FL_ERANGE, "model %s: %zu parameters, more than the %u allowed",
				    m->arch, m->nparams, FL_MODEL_PARAMS_MAX);
	if (acts > FL_MODEL_ACTS_MAX)
		return fl_error_set(FL_ERANGE,
				    "model %s: %zu activations per sample, more than the %u "
				    "allowed",
				    m->arch, acts, FL_MODEL_ACTS_MAX);
	return FL_OK;
}

/* The model's tables, sized for description d. */
static int alloc_tables(struct fl_model *m, const struct fl_model_desc *d)
{
	m->tensors_cap = (size_t)d->nsteps * FL_LT_COUNT;
	m->layers = calloc((size_t)d->nsteps, sizeof(*m->layers));
	m->tensors = calloc(m->tensors_cap, sizeof(*m->tensors));
	m->ranges = calloc(m->tensors_cap ? m->tensors_cap : 1, sizeof(*m->ranges));
	if (!m->layers || !m->tensors || !m->ranges)
		return fl_error_set(FL_ENOMEM, "model: out of memory");
	return fl_model_desc_copy(d, &m->desc);
}

int fl_model_new_desc(const struct fl_model_desc *d, const struct fl_peft_config *cfg,
		      uint64_t seed, int max_batch, struct fl_model **out)
{
	*out = NULL;
	if (max_batch < 1)
		return fl_error_set(FL_EINVAL, "model %s: batch %d < 1", d->label, max_batch);
	if (cfg) {
		int err = fl_peft_config_validate(cfg);
		if (err)
			return err;
	}
	struct fl_model *m = calloc(1, sizeof(*m));
	if (!m)
		return fl_error_set(FL_ENOMEM, "model: out of memory");
	snprintf(m->arch, sizeof(m->arch), "%s", d->label);
	const struct fl_desc_shape *in = &d->input;
	m->c = in->ndim == 3 ? in->dim[0] : 1;
	m->h = in->ndim == 3 ? in->dim[1] : 1;
	m->w = in->ndim == 3 ? in->dim[2] : in->dim[0];
	m->classes = d->classes;
	m->max_batch = max_batch;
	m->param = cfg ? cfg->parameterization : FL_PEFT_PARAM_DENSE;
	m->init_weights = cfg ? cfg->init_weights : 1;
	m->stale = 1;
	int err = alloc_tables(m, d);
	if (!err)
		err = build_layers(m, d, cfg);
	if (!err) {
		layout_tensors(m);
		err = check_size(m);
	}
	if (!err)
		err = alloc_buffers(m);
	if (err) {
		fl_model_free(m);
		return err;
	}
	for (int i = 0; i < m->nlayers; i++)
		fl_model_init_layer(m, i, seed);
	*out = m;
	return FL_OK;
}

int fl_model_new(const char *arch, int c, int h, int w, int classes,
		 const struct fl_peft_config *cfg, uint64_t seed, int max_batch,
		 struct fl_model **out)
{
	*out = NULL;
	struct fl_model_desc *d = NULL;
	struct fl_desc_shape in = {3, {c, h, w}, 0};
	int err = fl_model_desc_builtin(arch, &in, classes, &d);
	if (!err)
		err = fl_model_new_desc(d, cfg, seed, max_batch, out);
	fl_model_desc_free(d);
	return err;
}

void fl_model_free(struct fl_model *m)
{
	if (!m)
		return;
	free_batch_buffers(m);
	for (int i = 0; i < m->nlayers; i++) {
		struct fl_layer *L = &m->layers[i];
		free(L->weff);
		free(L->dweff);
		free(L->mask);
	}
	free(m->params);
	free(m->grads);
	free(m->loha_work);
	free(m->layers);
	free(m->tensors);
	free(m->ranges);
	fl_model_desc_free(m->desc);
	free(m);
}
