/* model_desc_impl.h - what the description parser's two files share: the
 * parser state, where a module sits (for messages) and the field readers.
 * model_desc.c walks the modules; model_desc_ops.c knows each op. Not part
 * of the public API. */
#ifndef FL_MODEL_DESC_IMPL_H
#define FL_MODEL_DESC_IMPL_H

#include "model_desc.h"

#include <jansson.h>

#define DESC_DIM_MAX (1 << 24)      /* one dimension, and one sample's tensor */
#define DESC_KERNEL_MAX 1024        /* kernel, stride, padding */
#define DESC_WEIGHT_MAX (1ul << 28) /* elements of one weight */

/* Where a module sits, for messages: "modules[3].modules[1] (linear fc1)". */
struct fl_desc_where {
	char path[160];
	char what[FL_MODEL_MODULE_NAME_MAX + 24];
};

struct fl_desc_parser {
	const char *origin;
	struct fl_model_desc *d;
	int cap;
	json_t *names; /* object used as a set of module names */
};

/* The fields an op takes: required ones first, then optional ones. code:
 * enum fl_desc_op, or -1 for the nesting ops (residual, sequential). */
struct fl_desc_op_spec {
	const char *op;
	int code;
	const char *required[5];
	const char *optional[4];
};

/* NULL for an unknown op. */
const struct fl_desc_op_spec *fl_desc_op_find(const char *op);
/* The arguments of step st's op from module m, then its output shape
 * (st->in_shape set by the caller). */
int fl_desc_op_args(struct fl_desc_parser *p, struct fl_desc_where *w, json_t *m,
		    struct fl_desc_step *st);
/* The five steps of an attention module on *shape. */
int fl_desc_attention(struct fl_desc_parser *p, struct fl_desc_where *w, json_t *m,
		      struct fl_desc_shape *shape);

/* FL_EINVAL with "ORIGIN: PATH (WHAT): detail". */
int fl_desc_bad(struct fl_desc_parser *p, const struct fl_desc_where *w, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* An integer field in [lo, hi]; absent -> def (def < lo: required). */
int fl_desc_int(struct fl_desc_parser *p, const struct fl_desc_where *w, json_t *m, const char *key,
		int lo, int hi, int def, int *out);
/* "name": a module name not used before; sets st->name and w->what. */
int fl_desc_name(struct fl_desc_parser *p, struct fl_desc_where *w, json_t *m,
		 struct fl_desc_step *st);
/* Registers a derived module name (attention's q_proj, ...). */
int fl_desc_name_add(struct fl_desc_parser *p, const struct fl_desc_where *w, const char *name);
/* A new step, src[0] = the previous step. */
int fl_desc_add_step(struct fl_desc_parser *p, const struct fl_desc_where *w,
		     struct fl_desc_step **out);
int fl_desc_name_ok(const char *s);

#endif
