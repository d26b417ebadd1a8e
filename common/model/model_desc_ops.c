/* model_desc_ops.c - each op of fedloha-model/1: its fields, their ranges
 * and defaults, and the output shape it gives (or the one-line refusal
 * when its input does not fit). Walking the modules is model_desc.c. */
#include "model_desc_impl.h"

#include "errors.h"

#include <stdio.h>
#include <string.h>

static const struct fl_desc_op_spec specs[] = {
	{"linear", FL_OP_LINEAR, {"name", "in", "out"}, {"bias"}},
	{"conv2d", FL_OP_CONV2D, {"name", "in", "out", "kernel"}, {"stride", "padding", "bias"}},
	{"relu", FL_OP_RELU, {0}, {0}},
	{"gelu", FL_OP_GELU, {0}, {0}},
	{"maxpool2d", FL_OP_MAXPOOL2D, {"kernel"}, {"stride"}},
	{"avgpool2d", FL_OP_AVGPOOL2D, {"kernel"}, {"stride"}},
	{"flatten", FL_OP_FLATTEN, {0}, {0}},
	{"dropout", FL_OP_DROPOUT, {"p"}, {0}},
	{"groupnorm", FL_OP_GROUPNORM, {"name", "groups", "channels"}, {"eps"}},
	{"layernorm", FL_OP_LAYERNORM, {"name", "dim"}, {"eps"}},
	{"embedding", FL_OP_EMBEDDING, {"name", "num", "dim"}, {0}},
	{"tokens", FL_OP_TOKENS, {0}, {0}},
	{"position", FL_OP_POSITION, {"name", "tokens", "dim"}, {0}},
	{"attention", FL_OP_ATTENTION, {"name", "dim", "heads"}, {0}},
	{"mean_tokens", FL_OP_MEAN_TOKENS, {0}, {0}},
	{"residual", -1, {"modules"}, {0}},
	{"sequential", -1, {"modules"}, {0}},
};

const struct fl_desc_op_spec *fl_desc_op_find(const char *op)
{
	for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++)
		if (strcmp(specs[i].op, op) == 0)
			return &specs[i];
	return NULL;
}

/* ---- input checks ---- */

static int want_ndim(struct fl_desc_parser *p, const struct fl_desc_where *w,
		     const struct fl_desc_shape *s, int ndim, const char *what)
{
	char b[64];
	if (s->ids)
		return fl_desc_bad(p, w, "takes features, not token ids: put an embedding first");
	if (ndim && s->ndim != ndim)
		return fl_desc_bad(p, w, "needs a %s input, got %s", what,
				   fl_desc_shape_str(s, b, sizeof(b)));
	return FL_OK;
}

static int want_image(struct fl_desc_parser *p, const struct fl_desc_where *w,
		      const struct fl_desc_shape *s)
{
	return want_ndim(p, w, s, 3, "(C,H,W)");
}

/* A field that must equal a dimension of the input. */
static int want_dim(struct fl_desc_parser *p, const struct fl_desc_where *w, const char *key, int v,
		    const struct fl_desc_shape *s, int axis, const char *what)
{
	char b[64];
	if (v != s->dim[axis])
		return fl_desc_bad(p, w, "field \"%s\": %d, but the input %s has %d %s", key, v,
				   fl_desc_shape_str(s, b, sizeof(b)), s->dim[axis], what);
	return FL_OK;
}

static int eps_field(struct fl_desc_parser *p, const struct fl_desc_where *w, json_t *m, float *out)
{
	json_t *v = json_object_get(m, "eps");
	double x = v ? json_number_value(v) : 1e-5;
	if ((v && !json_is_number(v)) || !(x > 0 && x < 1))
		return fl_desc_bad(p, w, "field \"eps\": expected a number in (0, 1)");
	*out = (float)x;
	return FL_OK;
}

static int bool_field(struct fl_desc_parser *p, const struct fl_desc_where *w, json_t *m,
		      const char *key, int *out)
{
	json_t *v = json_object_get(m, key);
	if (!v) {
		*out = 1;
		return FL_OK;
	}
	if (!json_is_boolean(v))
		return fl_desc_bad(p, w, "field \"%s\": expected true or false", key);
	*out = json_is_true(v);
	return FL_OK;
}

/* ---- the ops with weights ---- */

/* name, in, out and bias: what linear and conv2d share. */
static int weight_fields(struct fl_desc_parser *p, struct fl_desc_where *w, json_t *m,
			 struct fl_desc_step *st)
{
	int err = fl_desc_name(p, w, m, st);
	if (!err)
		err = fl_desc_int(p, w, m, "in", 1, DESC_DIM_MAX, 0, &st->in);
	if (!err)
		err = fl_desc_int(p, w, m, "out", 1, DESC_DIM_MAX, 0, &st->out);
	return err ? err : bool_field(p, w, m, "bias", &st->bias);
}

static int linear_args(struct fl_desc_parser *p, struct fl_desc_where *w, json_t *m,
		       struct fl_desc_step *st)
{
	const struct fl_desc_shape *s = &st->in_shape;
	int err = weight_fields(p, w, m, st);
	if (!err)
		err = want_ndim(p, w, s, 0, "");
	if (!err)
		err = want_dim(p, w, "in", st->in, s, s->ndim - 1, "features in its last dim");
	if (err)
		return err;
	if ((double)st->out * st->in > (double)DESC_WEIGHT_MAX)
		return fl_desc_bad(p, w, "weight of %d x %d is too large", st->out, st->in);
	st->out_shape = *s;
	st->out_shape.dim[s->ndim - 1] = st->out;
	return FL_OK;
}

static int conv_args(struct fl_desc_parser *p, struct fl_desc_where *w, json_t *m,
		     struct fl_desc_step *st)
{
	const struct fl_desc_shape *s = &st->in_shape;
	int err = weight_fields(p, w, m, st);
	if (!err)
		err = fl_desc_int(p, w, m, "kernel", 1, DESC_KERNEL_MAX, 0, &st->kernel);
	if (!err)
		err = fl_desc_int(p, w, m, "stride", 1, DESC_KERNEL_MAX, 1, &st->stride);
	if (!err)
		err = fl_desc_int(p, w, m, "padding", 0, DESC_KERNEL_MAX, 0, &st->padding);
	if (!err)
		err = want_image(p, w, s);
	if (!err)
		err = want_dim(p, w, "in", st->in, s, 0, "channels");
	if (err)
		return err;
	if ((double)st->out * st->in * st->kernel * st->kernel > (double)DESC_WEIGHT_MAX)
		return fl_desc_bad(p, w, "weight of %d x %d x %d x %d is too large", st->out,
				   st->in, st->kernel, st->kernel);
	int ph = s->dim[1] + 2 * st->padding, pw = s->dim[2] + 2 * st->padding;
	if (ph < st->kernel || pw < st->kernel)
		return fl_desc_bad(p, w,
				   "field \"kernel\": %d is larger than the padded input %dx%d",
				   st->kernel, ph, pw);
	st->out_shape = (struct fl_desc_shape){
		3,
		{st->out, (ph - st->kernel) / st->stride + 1, (pw - st->kernel) / st->stride + 1},
		0};
	return FL_OK;
}

/* embedding: st->in = num (rows of the weight), st->out = dim. */
static int embedding_args(struct fl_desc_parser *p, struct fl_desc_where *w, json_t *m,
			  struct fl_desc_step *st)
{
	const struct fl_desc_shape *s = &st->in_shape;
	char b[64];
	int err = fl_desc_name(p, w, m, st);
	if (!err)
		err = fl_desc_int(p, w, m, "num", 1, DESC_DIM_MAX, 0, &st->in);
	if (!err)
		err = fl_desc_int(p, w, m, "dim", 1, DESC_DIM_MAX, 0, &st->out);
	if (err)
		return err;
	if (!s->ids || s->ndim != 1)
		return fl_desc_bad(p, w,
				   "takes token ids (the input {\"tokens\", \"vocab\"}), got %s",
				   fl_desc_shape_str(s, b, sizeof(b)));
	if (st->in < p->d->vocab)
		return fl_desc_bad(p, w, "field \"num\": %d rows for a vocab of %d ids", st->in,
				   p->d->vocab);
	if ((double)st->in * st->out > (double)DESC_WEIGHT_MAX)
		return fl_desc_bad(p, w, "weight of %d x %d is too large", st->in, st->out);
	st->out_shape = (struct fl_desc_shape){2, {s->dim[0], st->out, 0}, 0};
	return FL_OK;
}

/* groupnorm: st->in = channels; layernorm: st->in = dim. */
static int norm_args(struct fl_desc_parser *p, struct fl_desc_where *w, json_t *m,
		     struct fl_desc_step *st)
{
	const struct fl_desc_shape *s = &st->in_shape;
	int group = st->op == FL_OP_GROUPNORM;
	int err = fl_desc_name(p, w, m, st);
	if (!err)
		err = fl_desc_int(p, w, m, group ? "channels" : "dim", 1, DESC_DIM_MAX, 0, &st->in);
	if (!err && group)
		err = fl_desc_int(p, w, m, "groups", 1, DESC_DIM_MAX, 0, &st->groups);
	if (!err)
		err = eps_field(p, w, m, &st->eps);
	if (!err)
		err = group ? want_image(p, w, s) : want_ndim(p, w, s, 0, "");
	if (!err && group)
		err = want_dim(p, w, "channels", st->in, s, 0, "channels");
	else if (!err)
		err = want_dim(p, w, "dim", st->in, s, s->ndim - 1, "features in its last dim");
	if (!err && group && st->in % st->groups)
		err = fl_desc_bad(p, w, "field \"groups\": %d does not divide %d channels",
				  st->groups, st->in);
	st->out_shape = *s;
	return err;
}

/* position: st->in = tokens, st->out = dim. */
static int position_args(struct fl_desc_parser *p, struct fl_desc_where *w, json_t *m,
			 struct fl_desc_step *st)
{
	const struct fl_desc_shape *s = &st->in_shape;
	int err = fl_desc_name(p, w, m, st);
	if (!err)
		err = fl_desc_int(p, w, m, "tokens", 1, DESC_DIM_MAX, 0, &st->in);
	if (!err)
		err = fl_desc_int(p, w, m, "dim", 1, DESC_DIM_MAX, 0, &st->out);
	if (!err)
		err = want_ndim(p, w, s, 2, "(T,D)");
	if (!err)
		err = want_dim(p, w, "tokens", st->in, s, 0, "tokens");
	if (!err)
		err = want_dim(p, w, "dim", st->out, s, 1, "features");
	st->out_shape = *s;
	return err;
}

/* ---- the ops without weights ---- */

static int pool_args(struct fl_desc_parser *p, struct fl_desc_where *w, json_t *m,
		     struct fl_desc_step *st)
{
	const struct fl_desc_shape *s = &st->in_shape;
	int err = fl_desc_int(p, w, m, "kernel", 1, DESC_KERNEL_MAX, 0, &st->kernel);
	if (!err)
		err = fl_desc_int(p, w, m, "stride", 1, DESC_KERNEL_MAX, st->kernel, &st->stride);
	if (!err)
		err = want_image(p, w, s);
	if (err)
		return err;
	if (s->dim[1] < st->kernel || s->dim[2] < st->kernel)
		return fl_desc_bad(p, w, "field \"kernel\": %d is larger than the input %dx%d",
				   st->kernel, s->dim[1], s->dim[2]);
	st->out_shape = (struct fl_desc_shape){3,
					       {s->dim[0],
						(s->dim[1] - st->kernel) / st->stride + 1,
						(s->dim[2] - st->kernel) / st->stride + 1},
					       0};
	return FL_OK;
}

static int reshape_args(struct fl_desc_parser *p, struct fl_desc_where *w, struct fl_desc_step *st)
{
	const struct fl_desc_shape *s = &st->in_shape;
	int err;
	switch (st->op) {
	case FL_OP_TOKENS:
		if ((err = want_image(p, w, s)))
			return err;
		st->out_shape = (struct fl_desc_shape){2, {s->dim[1] * s->dim[2], s->dim[0], 0}, 0};
		return FL_OK;
	case FL_OP_MEAN_TOKENS:
		if ((err = want_ndim(p, w, s, 2, "(T,D)")))
			return err;
		st->out_shape = (struct fl_desc_shape){1, {s->dim[1], 0, 0}, 0};
		return FL_OK;
	case FL_OP_FLATTEN:
		if ((err = want_ndim(p, w, s, 0, "")))
			return err;
		st->out_shape = (struct fl_desc_shape){1, {(int)fl_desc_shape_numel(s), 0, 0}, 0};
		return FL_OK;
	default: st->out_shape = *s; return want_ndim(p, w, s, 0, "");
	}
}

int fl_desc_op_args(struct fl_desc_parser *p, struct fl_desc_where *w, json_t *m,
		    struct fl_desc_step *st)
{
	switch (st->op) {
	case FL_OP_LINEAR: return linear_args(p, w, m, st);
	case FL_OP_CONV2D: return conv_args(p, w, m, st);
	case FL_OP_EMBEDDING: return embedding_args(p, w, m, st);
	case FL_OP_GROUPNORM:
	case FL_OP_LAYERNORM: return norm_args(p, w, m, st);
	case FL_OP_POSITION: return position_args(p, w, m, st);
	case FL_OP_MAXPOOL2D:
	case FL_OP_AVGPOOL2D: return pool_args(p, w, m, st);
	case FL_OP_DROPOUT: {
		json_t *v = json_object_get(m, "p");
		double x = json_number_value(v);
		if (!json_is_number(v) || !(x >= 0 && x < 1))
			return fl_desc_bad(p, w, "field \"p\": expected a number in [0, 1)");
		st->p = (float)x;
		return reshape_args(p, w, st);
	}
	default: return reshape_args(p, w, st);
	}
}

/* ---- attention: five steps ---- */

/* A Linear(dim, dim) step named <attn>.<sub> reading step src. */
static int attention_linear(struct fl_desc_parser *p, const struct fl_desc_where *w,
			    const char *attn, const char *sub, int src,
			    const struct fl_desc_shape *s, int *index)
{
	struct fl_desc_step *st;
	int err = fl_desc_add_step(p, w, &st);
	if (err)
		return err;
	st->op = FL_OP_LINEAR;
	if (snprintf(st->name, sizeof(st->name), "%s.%s", attn, sub) >= (int)sizeof(st->name))
		return fl_desc_bad(p, w, "field \"name\": too long for its %s", sub);
	st->in = st->out = s->dim[1];
	st->bias = 1;
	st->src[0] = src;
	st->in_shape = st->out_shape = *s;
	*index = p->d->nsteps - 1;
	return fl_desc_name_add(p, w, st->name);
}

int fl_desc_attention(struct fl_desc_parser *p, struct fl_desc_where *w, json_t *m,
		      struct fl_desc_shape *shape)
{
	struct fl_desc_step core = {.op = FL_OP_ATTENTION};
	int err = fl_desc_name(p, w, m, &core);
	if (!err)
		err = fl_desc_int(p, w, m, "dim", 1, DESC_DIM_MAX, 0, &core.in);
	if (!err)
		err = fl_desc_int(p, w, m, "heads", 1, DESC_DIM_MAX, 0, &core.heads);
	if (!err)
		err = want_ndim(p, w, shape, 2, "(T,D)");
	if (!err)
		err = want_dim(p, w, "dim", core.in, shape, 1, "features");
	if (!err && core.in % core.heads)
		err = fl_desc_bad(p, w, "field \"heads\": %d does not divide dim %d", core.heads,
				  core.in);
	if (!err && (double)core.in * core.in > (double)DESC_WEIGHT_MAX)
		err = fl_desc_bad(p, w, "weights of %d x %d are too large", core.in, core.in);
	if (err)
		return err;
	int x = p->d->nsteps - 1, q, k, v, c;
	if ((err = attention_linear(p, w, core.name, "q_proj", x, shape, &q)) ||
	    (err = attention_linear(p, w, core.name, "k_proj", x, shape, &k)) ||
	    (err = attention_linear(p, w, core.name, "v_proj", x, shape, &v)))
		return err;
	struct fl_desc_step *st;
	if ((err = fl_desc_add_step(p, w, &st)))
		return err;
	*st = core;
	st->src[0] = q, st->src[1] = k, st->src[2] = v, st->nsrc = 3;
	st->in_shape = st->out_shape = *shape;
	c = p->d->nsteps - 1;
	return attention_linear(p, w, core.name, "out_proj", c, shape, &c);
}
