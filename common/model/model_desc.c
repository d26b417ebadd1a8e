/* model_desc.c - parsing fedloha-model/1 descriptions into a flat list of
 * steps: the top-level fields, the walk over (nested) modules, residuals,
 * and the field readers every op uses. What each op takes and gives is
 * model_desc_ops.c; the built-in networks written as descriptions are
 * model_builtin.c; building a model from the steps is model.c. */
#include "model_desc_impl.h"

#include "errors.h"
#include "fsutil.h"
#include "util.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEPTH_MAX 32 /* nesting of sequential / residual */

static const char *const op_names[] = {
	[FL_OP_LINEAR] = "linear",
	[FL_OP_CONV2D] = "conv2d",
	[FL_OP_RELU] = "relu",
	[FL_OP_MAXPOOL2D] = "maxpool2d",
	[FL_OP_FLATTEN] = "flatten",
	[FL_OP_GELU] = "gelu",
	[FL_OP_AVGPOOL2D] = "avgpool2d",
	[FL_OP_DROPOUT] = "dropout",
	[FL_OP_RESIDUAL_ADD] = "residual",
	[FL_OP_GROUPNORM] = "groupnorm",
	[FL_OP_LAYERNORM] = "layernorm",
	[FL_OP_EMBEDDING] = "embedding",
	[FL_OP_TOKENS] = "tokens",
	[FL_OP_POSITION] = "position",
	[FL_OP_ATTENTION] = "attention",
	[FL_OP_MEAN_TOKENS] = "mean_tokens",
};

const char *fl_desc_op_name(enum fl_desc_op op)
{
	return (unsigned)op < sizeof(op_names) / sizeof(op_names[0]) ? op_names[op] : "?";
}

size_t fl_desc_shape_numel(const struct fl_desc_shape *s)
{
	size_t n = 1;
	for (int i = 0; i < s->ndim; i++)
		n *= (size_t)s->dim[i];
	return n;
}

const char *fl_desc_shape_str(const struct fl_desc_shape *s, char *buf, size_t size)
{
	size_t used = 0;
	buf[0] = 0;
	for (int i = 0; i < s->ndim && used < size; i++)
		used += (size_t)snprintf(buf + used, size - used, "%s%d", i ? "," : "(", s->dim[i]);
	if (used < size)
		snprintf(buf + used, size - used, ")");
	return buf;
}

/* ---- fields ---- */

int fl_desc_bad(struct fl_desc_parser *p, const struct fl_desc_where *w, const char *fmt, ...)
{
	char detail[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	return fl_error_set(FL_EINVAL, "%s: %s%s%s: %s", p->origin, w->path, w->what[0] ? " " : "",
			    w->what, detail);
}

static int listed(const char *const *list, int n, const char *key)
{
	for (int i = 0; i < n && list[i]; i++)
		if (strcmp(list[i], key) == 0)
			return 1;
	return 0;
}

/* Every field is known to the op, every required one present. */
static int check_fields(struct fl_desc_parser *p, const struct fl_desc_where *w, json_t *m,
			const struct fl_desc_op_spec *s)
{
	const char *key;
	json_t *v;
	char b[64];
	json_object_foreach(m, key, v)
	{
		if (strcmp(key, "op") != 0 && !listed(s->required, 5, key) &&
		    !listed(s->optional, 4, key))
			return fl_desc_bad(p, w, "field \"%s\": not an argument of %s",
					   fl_error_safe_str(key, b, sizeof(b)), s->op);
	}
	for (int i = 0; i < 5 && s->required[i]; i++)
		if (!json_object_get(m, s->required[i]))
			return fl_desc_bad(p, w, "field \"%s\": missing", s->required[i]);
	return FL_OK;
}

int fl_desc_int(struct fl_desc_parser *p, const struct fl_desc_where *w, json_t *m, const char *key,
		int lo, int hi, int def, int *out)
{
	json_t *v = json_object_get(m, key);
	if (!v && def >= lo) {
		*out = def;
		return FL_OK;
	}
	if (!json_is_integer(v))
		return fl_desc_bad(p, w, "field \"%s\": expected an integer", key);
	json_int_t x = json_integer_value(v);
	if (x < lo || x > hi)
		return fl_desc_bad(p, w, "field \"%s\": %lld is outside [%d, %d]", key,
				   (long long)x, lo, hi);
	*out = (int)x;
	return FL_OK;
}

int fl_desc_name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n >= FL_MODEL_MODULE_NAME_MAX || s[0] == '.' || s[n - 1] == '.' ||
	    strstr(s, ".."))
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == '-'))
			return 0;
	}
	return 1;
}

int fl_desc_name(struct fl_desc_parser *p, struct fl_desc_where *w, json_t *m,
		 struct fl_desc_step *st)
{
	const char *name = json_string_value(json_object_get(m, "name"));
	if (!name)
		return fl_desc_bad(p, w, "field \"name\": expected a string");
	char b[104];
	if (!fl_desc_name_ok(name))
		return fl_desc_bad(
			p, w,
			"field \"name\": \"%s\" is not a module name (1-%d characters of "
			"A-Z a-z 0-9 _ - and inner dots)",
			fl_error_safe_str(name, b, sizeof(b)), FL_MODEL_MODULE_NAME_MAX - 1);
	snprintf(w->what, sizeof(w->what), "(%s %s)", fl_desc_op_name(st->op), name);
	snprintf(st->name, sizeof(st->name), "%s", name);
	return fl_desc_name_add(p, w, name);
}

int fl_desc_name_add(struct fl_desc_parser *p, const struct fl_desc_where *w, const char *name)
{
	if (json_object_get(p->names, name))
		return fl_desc_bad(p, w, "field \"name\": \"%s\" names an earlier module too",
				   name);
	json_object_set_new(p->names, name, json_true());
	return FL_OK;
}

/* ---- modules ---- */

int fl_desc_add_step(struct fl_desc_parser *p, const struct fl_desc_where *w,
		     struct fl_desc_step **out)
{
	struct fl_model_desc *d = p->d;
	if (d->nsteps == FL_MODEL_DESC_STEPS_MAX)
		return fl_desc_bad(p, w, "more than %d modules", FL_MODEL_DESC_STEPS_MAX);
	if (d->nsteps == p->cap) {
		int cap = p->cap ? 2 * p->cap : 16;
		struct fl_desc_step *s = realloc(d->steps, sizeof(*s) * (size_t)cap);
		if (!s)
			return fl_error_set(FL_ENOMEM, "%s: out of memory", p->origin);
		d->steps = s;
		p->cap = cap;
	}
	*out = &d->steps[d->nsteps++];
	memset(*out, 0, sizeof(**out));
	(*out)->src[0] = d->nsteps - 2;
	(*out)->nsrc = 1;
	return FL_OK;
}

static int walk(struct fl_desc_parser *p, json_t *mods, const char *prefix, int depth,
		struct fl_desc_shape *shape);

/* A residual: its body, then the step adding the body's input. */
static int residual(struct fl_desc_parser *p, struct fl_desc_where *w, json_t *m, int depth,
		    struct fl_desc_shape *shape)
{
	char b1[64], b2[64];
	int from = p->d->nsteps - 1;
	struct fl_desc_shape in = *shape;
	int err = walk(p, json_object_get(m, "modules"), w->path, depth + 1, shape);
	if (err)
		return err;
	if (shape->ndim != in.ndim || memcmp(shape->dim, in.dim, sizeof(int) * (size_t)in.ndim))
		return fl_desc_bad(p, w,
				   "its modules turn %s into %s: x + f(x) needs the same shape",
				   fl_desc_shape_str(&in, b1, sizeof(b1)),
				   fl_desc_shape_str(shape, b2, sizeof(b2)));
	struct fl_desc_step *st;
	if ((err = fl_desc_add_step(p, w, &st)))
		return err;
	st->op = FL_OP_RESIDUAL_ADD;
	st->src[1] = from;
	st->nsrc = 2;
	st->in_shape = st->out_shape = in;
	return FL_OK;
}

static int module(struct fl_desc_parser *p, struct fl_desc_where *w, json_t *m, int depth,
		  struct fl_desc_shape *shape)
{
	if (!json_is_object(m))
		return fl_desc_bad(p, w, "expected an object");
	const char *op = json_string_value(json_object_get(m, "op"));
	if (!op)
		return fl_desc_bad(p, w, "field \"op\": missing or not a string");
	const struct fl_desc_op_spec *s = fl_desc_op_find(op);
	char b[48];
	if (!s)
		return fl_desc_bad(p, w, "field \"op\": unknown op \"%s\"",
				   fl_error_safe_str(op, b, sizeof(b)));
	snprintf(w->what, sizeof(w->what), "(%s)", s->op);
	int err = check_fields(p, w, m, s);
	if (err)
		return err;
	if (s->code == -1 && strcmp(op, "residual") == 0)
		return residual(p, w, m, depth, shape);
	if (s->code == -1)
		return walk(p, json_object_get(m, "modules"), w->path, depth + 1, shape);
	if (s->code == FL_OP_ATTENTION)
		return fl_desc_attention(p, w, m, shape);
	struct fl_desc_step *st;
	if ((err = fl_desc_add_step(p, w, &st)))
		return err;
	st->op = (enum fl_desc_op)s->code;
	st->in_shape = *shape;
	if ((err = fl_desc_op_args(p, w, m, st)))
		return err;
	if (fl_desc_shape_numel(&st->out_shape) > DESC_DIM_MAX)
		return fl_desc_bad(p, w, "output of %zu values per sample is too large",
				   fl_desc_shape_numel(&st->out_shape));
	*shape = st->out_shape;
	return FL_OK;
}

static int walk(struct fl_desc_parser *p, json_t *mods, const char *prefix, int depth,
		struct fl_desc_shape *shape)
{
	struct fl_desc_where w = {{0}, {0}};
	snprintf(w.path, sizeof(w.path), "%s", prefix);
	if (depth > DEPTH_MAX)
		return fl_desc_bad(p, &w, "nested more than %d deep", DEPTH_MAX);
	if (!json_is_array(mods))
		return fl_desc_bad(p, &w, "field \"modules\": expected an array");
	for (size_t i = 0; i < json_array_size(mods); i++) {
		snprintf(w.path, sizeof(w.path), "%s%smodules[%zu]", prefix, prefix[0] ? "." : "",
			 i);
		w.what[0] = 0;
		int err = module(p, &w, json_array_get(mods, i), depth, shape);
		if (err)
			return err;
	}
	return FL_OK;
}

/* ---- the whole description ---- */

/* {"tokens": L, "vocab": V}: integer ids (B, L), each in [0, V). */
static int token_input(struct fl_desc_parser *p, const struct fl_desc_where *w, json_t *in)
{
	const char *key;
	json_t *v;
	char b[64];
	json_object_foreach(in, key, v)
	{
		if (strcmp(key, "tokens") != 0 && strcmp(key, "vocab") != 0)
			return fl_desc_bad(p, w,
					   "field \"%s\": unknown (expected \"tokens\", \"vocab\")",
					   fl_error_safe_str(key, b, sizeof(b)));
	}
	int tokens, vocab;
	int err = fl_desc_int(p, w, in, "tokens", 1, DESC_DIM_MAX, 0, &tokens);
	if (!err)
		err = fl_desc_int(p, w, in, "vocab", 1, DESC_DIM_MAX, 0, &vocab);
	if (err)
		return err;
	p->d->input = (struct fl_desc_shape){1, {tokens, 0, 0}, 1};
	p->d->vocab = vocab;
	return FL_OK;
}

static int top_input(struct fl_desc_parser *p, json_t *root)
{
	struct fl_desc_where w = {"input", ""};
	json_t *in = json_object_get(root, "input");
	if (!json_is_object(in))
		return fl_desc_bad(p, &w, "missing or not an object");
	if (json_object_get(in, "tokens") || json_object_get(in, "vocab"))
		return token_input(p, &w, in);
	const char *key;
	json_t *v;
	char b[64];
	json_object_foreach(in, key, v)
	{
		if (strcmp(key, "shape") != 0)
			return fl_desc_bad(p, &w, "field \"%s\": unknown (expected \"shape\")",
					   fl_error_safe_str(key, b, sizeof(b)));
	}
	json_t *shape = json_object_get(in, "shape");
	if (!json_is_array(shape))
		return fl_desc_bad(p, &w,
				   "field \"shape\": missing or not an array ([F] or [C, H, W])");
	size_t n = json_array_size(shape);
	if (n != 1 && n != 3)
		return fl_desc_bad(p, &w,
				   "field \"shape\": %zu dimensions, expected [F] or [C, H, W]", n);
	struct fl_desc_shape *s = &p->d->input;
	s->ndim = (int)n;
	double numel = 1;
	for (size_t i = 0; i < n; i++) {
		json_t *e = json_array_get(shape, i);
		if (!json_is_integer(e) || json_integer_value(e) < 1 ||
		    json_integer_value(e) > DESC_DIM_MAX)
			return fl_desc_bad(p, &w,
					   "field \"shape\": dimensions are integers in [1, %d]",
					   DESC_DIM_MAX);
		s->dim[i] = (int)json_integer_value(e);
		numel *= s->dim[i];
	}
	if (numel > DESC_DIM_MAX) /* in double: the product of three dims overflows size_t */
		return fl_desc_bad(p, &w, "field \"shape\": more than %d values per sample",
				   DESC_DIM_MAX);
	return FL_OK;
}

static int top_fields(struct fl_desc_parser *p, json_t *root)
{
	struct fl_desc_where w = {"description", ""};
	static const char *const known[] = {"format", "name",    "description",
					    "input",  "classes", "modules"};
	if (!json_is_object(root))
		return fl_desc_bad(p, &w, "expected a JSON object");
	const char *key;
	json_t *v;
	char b[64];
	json_object_foreach(root, key, v)
	{
		if (!listed(known, 6, key))
			return fl_desc_bad(p, &w, "field \"%s\": unknown",
					   fl_error_safe_str(key, b, sizeof(b)));
	}
	const char *fmt = json_string_value(json_object_get(root, "format"));
	if (!fmt || strcmp(fmt, FL_MODEL_DESC_FORMAT) != 0)
		return fl_desc_bad(p, &w, "field \"format\": expected \"%s\"",
				   FL_MODEL_DESC_FORMAT);
	json_t *name = json_object_get(root, "name");
	if (name && (!json_is_string(name) || !fl_desc_name_ok(json_string_value(name)) ||
		     strlen(json_string_value(name)) >= sizeof(p->d->label)))
		return fl_desc_bad(p, &w,
				   "field \"name\": expected a short name (A-Z a-z 0-9 _ - .)");
	snprintf(p->d->label, sizeof(p->d->label), "%s", name ? json_string_value(name) : "custom");
	json_t *desc = json_object_get(root, "description");
	if (desc && !json_is_string(desc))
		return fl_desc_bad(p, &w, "field \"description\": expected a string");
	if (!json_is_integer(json_object_get(root, "classes")) ||
	    json_integer_value(json_object_get(root, "classes")) < 2 ||
	    json_integer_value(json_object_get(root, "classes")) > DESC_DIM_MAX)
		return fl_desc_bad(p, &w, "field \"classes\": expected an integer >= 2");
	p->d->classes = (int)json_integer_value(json_object_get(root, "classes"));
	return top_input(p, root);
}

static int parse_root(struct fl_desc_parser *p, json_t *root)
{
	int err = top_fields(p, root);
	if (err)
		return err;
	struct fl_desc_shape shape = p->d->input;
	if (json_array_size(json_object_get(root, "modules")) == 0) {
		struct fl_desc_where w = {"description", ""};
		return fl_desc_bad(p, &w, "field \"modules\": expected a non-empty array");
	}
	if ((err = walk(p, json_object_get(root, "modules"), "", 0, &shape)))
		return err;
	if (shape.ndim != 1 || shape.dim[0] != p->d->classes) {
		char b[64];
		struct fl_desc_where w = {"description", ""};
		return fl_desc_bad(
			p, &w, "the last module's output is %s, not (%d) for \"classes\" %d",
			fl_desc_shape_str(&shape, b, sizeof(b)), p->d->classes, p->d->classes);
	}
	return FL_OK;
}

int fl_model_desc_parse(const char *text, size_t len, const char *origin,
			struct fl_model_desc **out)
{
	*out = NULL;
	if (!origin)
		origin = "model description";
	if (len > FL_MODEL_DESC_BYTES_MAX)
		return fl_error_set(FL_ERANGE,
				    "%s: %zu bytes, more than the %u a description may have",
				    origin, len, FL_MODEL_DESC_BYTES_MAX);
	json_error_t jerr;
	json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return fl_error_set(FL_EFORMAT, "%s: line %d: %s", origin, jerr.line,
				    fl_error_safe_str(jerr.text, (char[sizeof(jerr.text)]){0},
						      sizeof(jerr.text)));
	struct fl_desc_parser p = {origin, calloc(1, sizeof(struct fl_model_desc)), 0,
				   json_object()};
	int err = p.d && p.names ? parse_root(&p, root) : fl_error_set(FL_ENOMEM, "out of memory");
	if (!err) {
		p.d->text = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
		p.d->text_len = p.d->text ? strlen(p.d->text) : 0;
		if (!p.d->text)
			err = fl_error_set(FL_ENOMEM, "%s: out of memory", origin);
	}
	json_decref(p.names);
	json_decref(root);
	if (err) {
		fl_model_desc_free(p.d);
		return err;
	}
	*out = p.d;
	return FL_OK;
}

int fl_model_desc_load(const char *path, struct fl_model_desc **out)
{
	*out = NULL;
	char *buf = NULL;
	size_t len = 0;
	int err = fl_file_read_all(path, FL_MODEL_DESC_BYTES_MAX, &buf, &len);
	if (err)
		return err;
	err = fl_model_desc_parse(buf, len, path, out);
	free(buf);
	return err;
}

int fl_model_desc_copy(const struct fl_model_desc *d, struct fl_model_desc **out)
{
	int err = fl_model_desc_parse(d->text, d->text_len, d->label, out);
	if (!err)
		(*out)->builtin = d->builtin;
	return err;
}

void fl_model_desc_free(struct fl_model_desc *d)
{
	if (!d)
		return;
	free(d->steps);
	free(d->text);
	free(d);
}
