/* model_builtin.c - the built-in networks (McMahan et al. 2017: "2nn",
 * "cnn"; and a small "mlp") written as fedloha-model/1 descriptions for a
 * given input and number of classes, so they are built exactly like a
 * user's description. models/<name>.json are their Fashion-MNIST
 * instances. */
#include "model_desc.h"

#include "dataset.h"
#include "errors.h"
#include "model_data.h"
#include "model.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* One module: op, name, output features/channels (-1: the number of
 * classes), kernel, stride, padding. */
struct arch_step {
	const char *op, *name;
	int out, k, stride, pad;
};

static const struct arch_step arch_2nn[] = {
	{"flatten", NULL, 0, 0, 0, 0}, {"linear", "fc1", 200, 0, 0, 0},
	{"relu", NULL, 0, 0, 0, 0},    {"linear", "fc2", 200, 0, 0, 0},
	{"relu", NULL, 0, 0, 0, 0},    {"linear", "fc3", -1, 0, 0, 0},
};
static const struct arch_step arch_cnn[] = {
	{"conv2d", "conv1", 32, 5, 1, 2}, {"relu", NULL, 0, 0, 0, 0},
	{"maxpool2d", NULL, 0, 2, 2, 0},  {"conv2d", "conv2", 64, 5, 1, 2},
	{"relu", NULL, 0, 0, 0, 0},       {"maxpool2d", NULL, 0, 2, 2, 0},
	{"flatten", NULL, 0, 0, 0, 0},    {"linear", "fc1", 512, 0, 0, 0},
	{"relu", NULL, 0, 0, 0, 0},       {"linear", "fc2", -1, 0, 0, 0},
};
static const struct arch_step arch_mlp[] = {
	{"flatten", NULL, 0, 0, 0, 0},
	{"linear", "fc1", 256, 0, 0, 0},
	{"relu", NULL, 0, 0, 0, 0},
	{"linear", "fc2", -1, 0, 0, 0},
};

static const struct {
	const char *name;
	const struct arch_step *steps;
	int n;
} arches[] = {
	{"2nn", arch_2nn, (int)(sizeof(arch_2nn) / sizeof(arch_2nn[0]))},
	{"cnn", arch_cnn, (int)(sizeof(arch_cnn) / sizeof(arch_cnn[0]))},
	{"mlp", arch_mlp, (int)(sizeof(arch_mlp) / sizeof(arch_mlp[0]))},
};

int fl_model_desc_builtin_valid(const char *name)
{
	for (size_t i = 0; i < sizeof(arches) / sizeof(arches[0]); i++)
		if (name && strcmp(name, arches[i].name) == 0)
			return 1;
	return 0;
}

/* The module of step s, given the features/channels coming in (*feat and
 * the spatial size *h x *w, updated). */
static json_t *step_json(const struct arch_step *s, int classes, int *feat, int *h, int *w)
{
	json_t *m = json_pack("{s:s}", "op", s->op);
	int out = s->out == -1 ? classes : s->out;
	if (strcmp(s->op, "linear") == 0) {
		json_object_set_new(m, "name", json_string(s->name));
		json_object_set_new(m, "in", json_integer(*feat));
		json_object_set_new(m, "out", json_integer(out));
		*feat = out;
	} else if (strcmp(s->op, "conv2d") == 0) {
		json_object_set_new(m, "name", json_string(s->name));
		json_object_set_new(m, "in", json_integer(*feat));
		json_object_set_new(m, "out", json_integer(out));
		json_object_set_new(m, "kernel", json_integer(s->k));
		json_object_set_new(m, "padding", json_integer(s->pad));
		*h = (*h + 2 * s->pad - s->k) / s->stride + 1;
		*w = (*w + 2 * s->pad - s->k) / s->stride + 1;
		*feat = out;
	} else if (strcmp(s->op, "maxpool2d") == 0) {
		json_object_set_new(m, "kernel", json_integer(s->k));
		*h = (*h - s->k) / s->stride + 1;
		*w = (*w - s->k) / s->stride + 1;
	} else if (strcmp(s->op, "flatten") == 0) {
		*feat = *feat * *h * *w;
		*h = *w = 1;
	}
	return m;
}

int fl_model_desc_builtin(const char *name, const struct fl_desc_shape *input, int classes,
			  struct fl_model_desc **out)
{
	*out = NULL;
	int ai = -1;
	for (size_t i = 0; i < sizeof(arches) / sizeof(arches[0]); i++)
		if (name && strcmp(name, arches[i].name) == 0)
			ai = (int)i;
	if (ai < 0)
		return fl_error_set(FL_EINVAL, "unknown model '%s' (2nn, cnn, mlp)",
				    name ? name : "");
	char b[64];
	size_t numel = input->ndim == 1 || input->ndim == 3 ? fl_desc_shape_numel(input) : 0;
	for (int i = 0; i < input->ndim && numel; i++)
		if (input->dim[i] < 1)
			numel = 0;
	if (numel == 0 || classes < 2 || numel > (1u << 24))
		return fl_error_set(FL_EINVAL, "model %s: bad input %s, %d classes", name,
				    fl_desc_shape_str(input, b, sizeof(b)), classes);
	int flat = input->ndim == 1;
	int c = input->dim[0], h = flat ? 1 : input->dim[1], w = flat ? 1 : input->dim[2];
	json_t *mods = json_array();
	int feat = c, hh = h, ww = w;
	for (int i = 0; i < arches[ai].n; i++)
		json_array_append_new(mods,
				      step_json(&arches[ai].steps[i], classes, &feat, &hh, &ww));
	json_t *shape = flat ? json_pack("[i]", c) : json_pack("[i,i,i]", c, h, w);
	json_t *root = json_pack("{s:s, s:s, s:{s:o}, s:i, s:o}", "format", FL_MODEL_DESC_FORMAT,
				 "name", name, "input", "shape", shape, "classes", classes,
				 "modules", mods);
	char *text = root ? json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(root);
	if (!text)
		return fl_error_set(FL_ENOMEM, "model %s: out of memory", name);
	char origin[32];
	snprintf(origin, sizeof(origin), "model %s", name);
	int err = fl_model_desc_parse(text, strlen(text), origin, out);
	free(text);
	if (!err)
		(*out)->builtin = 1;
	return err;
}

int fl_model_desc_pick(const char *name, const char *file, const struct fl_desc_shape *input,
		       int classes, struct fl_model_desc **out)
{
	if (file)
		return fl_model_desc_load(file, out);
	return fl_model_desc_builtin(name, input, classes, out);
}

struct fl_desc_shape fl_model_data_shape(const struct fl_dataset *ds)
{
	if (ds->ndim == 1)
		return (struct fl_desc_shape){1, {ds->w, 0, 0}, ds->tokens};
	return (struct fl_desc_shape){3, {ds->c, ds->h, ds->w}, 0};
}

int fl_model_new_for_data(const char *name, const char *file, const struct fl_dataset *ds,
			  const struct fl_peft_config *cfg, uint64_t seed, int max_batch,
			  struct fl_model **out)
{
	*out = NULL;
	struct fl_model_desc *d = NULL;
	struct fl_desc_shape in = fl_model_data_shape(ds);
	int err = fl_model_desc_pick(name, file, &in, ds->classes, &d);
	if (!err)
		err = fl_model_desc_check_data(d, ds);
	if (!err)
		err = fl_model_new_desc(d, cfg, seed, max_batch, out);
	fl_model_desc_free(d);
	return err;
}
