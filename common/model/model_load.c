/* model_load.c - rebuilding a saved model (fedloha.json + safetensors) and
 * loading frozen base weights from a PyTorch file. Every value read from a
 * file is checked (types, ranges, shapes) before it is used. */
#include "model_io.h"

#include "errors.h"
#include "fsutil.h"
#include "model_impl.h"
#include "safetensors.h"
#include "util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PEFT_PREFIX "base_model.model."
/* A saved rank above this is not a model fedloha wrote: refuse it before
 * allocating factor tensors of r x n (or r x r x k x k) floats. */
#define FL_MODEL_RANK_MAX 4096

static int json_int_in(json_t *v, const char *path, const char *key, int lo, int hi, int *out)
{
	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
		return fl_error_set(FL_EFORMAT, "%s: key '%s': expected an integer in [%d, %d]",
				    path, key, lo, hi);
	*out = (int)json_integer_value(v);
	return FL_OK;
}

/* Builds the PEFT config that recreates the saved per-layer forms. */
static int config_from_json(json_t *root, const char *path, struct fl_peft_config **out)
{
	*out = NULL;
	json_t *param = json_object_get(root, "parameterization");
	json_t *layers = json_object_get(root, "layers");
	if (!json_is_string(param))
		return fl_error_set(FL_EFORMAT, "%s: key 'parameterization': expected a string",
				    path);
	if (!json_is_array(layers) || json_array_size(layers) > 64)
		return fl_error_set(FL_EFORMAT, "%s: key 'layers': expected a list", path);
	struct fl_peft_config *c;
	int err = fl_peft_config_new(&c);
	if (err)
		return err;
	err = fl_peft_param_parse(json_string_value(param), &c->parameterization);
	size_t n = json_array_size(layers);
	c->target_kind = FL_PEFT_SEL_LIST;
	c->target_modules = calloc(n + 1, sizeof(char *));
	c->rank_pattern = calloc(n + 1, sizeof(*c->rank_pattern));
	c->alpha_pattern = calloc(n + 1, sizeof(*c->alpha_pattern));
	c->modules_to_save = calloc(n + 1, sizeof(char *));
	if (!err &&
	    (!c->target_modules || !c->rank_pattern || !c->alpha_pattern || !c->modules_to_save))
		err = fl_error_set(FL_ENOMEM, "load: out of memory");
	for (size_t i = 0; i < n && !err; i++) {
		json_t *l = json_array_get(layers, i);
		const char *name = json_string_value(json_object_get(l, "name"));
		const char *lp = json_string_value(json_object_get(l, "param"));
		json_t *alpha = json_object_get(l, "alpha");
		int r = 0;
		if (!name || !lp || !*name || strlen(name) > 30 ||
		    strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_.") != strlen(name)) {
			err = fl_error_set(FL_EFORMAT, "%s: layers[%zu]: bad 'name' or 'param'",
					   path, i);
			break;
		}
		if (strcmp(lp, "dense") == 0) {
			if (json_is_true(json_object_get(l, "module_to_save")) &&
			    !(c->modules_to_save[c->n_modules_to_save++] = fl_strdup(name)))
				err = fl_error_set(FL_ENOMEM, "load: out of memory");
			continue;
		}
		err = json_int_in(json_object_get(l, "r"), path, "layers[].r", 1, FL_MODEL_RANK_MAX,
				  &r);
		if (!err && !json_is_number(alpha))
			err = fl_error_set(FL_EFORMAT, "%s: layers[%zu].alpha: expected a number",
					   path, i);
		if (err)
			break;
		size_t j = c->n_target_modules;
		c->target_modules[j] = fl_strdup(name);
		c->n_target_modules++;
		c->rank_pattern[j].key = fl_strdup(name);
		c->rank_pattern[j].value = r;
		c->n_rank_pattern++;
		c->alpha_pattern[j].key = fl_strdup(name);
		c->alpha_pattern[j].value = json_number_value(alpha);
		c->n_alpha_pattern++;
		if (!c->target_modules[j] || !c->rank_pattern[j].key || !c->alpha_pattern[j].key)
			err = fl_error_set(FL_ENOMEM, "load: out of memory");
		if (j == 0) {
			c->r = r;
			c->alpha = json_number_value(alpha);
			c->rank_dropout = json_number_value(json_object_get(l, "rank_dropout"));
			c->module_dropout = json_number_value(json_object_get(l, "module_dropout"));
		}
		if (json_is_true(json_object_get(l, "tucker")))
			c->use_effective_conv2d = 1;
	}
	if (err) {
		fl_peft_config_free(c);
		return err;
	}
	*out = c;
	return FL_OK;
}

static int load_tensor(struct fl_model *m, const struct fl_model_tensor *t, const struct fl_st *src,
		       const char *key, const char *what)
{
	const struct fl_st_tensor *st = fl_st_find(src, key);
	if (!st)
		return FL_ENOTFOUND;
	int same = st->ndim == t->ndim;
	for (int i = 0; same && i < t->ndim; i++)
		same = st->shape[i] == t->shape[i];
	/* lowrank conv factors are stored 4-D as PEFT's LoRA Conv2d layers */
	if (!same && strstr(t->name, ".lora_") && st->numel == t->numel && st->ndim == 4 &&
	    st->shape[0] == t->shape[0])
		same = 1;
	if (!same)
		return fl_error_set(FL_ESHAPE, "%s: tensor '%s' has the wrong shape for model %s",
				    what, key, m->arch);
	int err = fl_st_tensor_to_f32(st, m->params + t->offset, t->numel);
	if (err)
		return err;
	return FL_OK;
}

static const char *const saved_files[3] = {"adapter_model.safetensors", "base_model.safetensors",
					   "model.safetensors"};

/* The model fedloha.json (root, read from path) describes, with its
 * weights still at their seeded values. */
/* The description under "model" (folders saved before it existed name a
 * built-in under "arch" and "input"). */
static int saved_description(json_t *root, const char *path, struct fl_model_desc **d)
{
	json_t *model = json_object_get(root, "model");
	if (!model)
		return FL_ENOTFOUND;
	char *text = json_dumps(model, JSON_COMPACT | JSON_SORT_KEYS);
	if (!text)
		return fl_error_set(FL_EFORMAT, "%s: key 'model': not a description", path);
	char origin[FL_PATH_MAX + 16];
	snprintf(origin, sizeof(origin), "%s: model", path);
	int err = fl_model_desc_parse(text, strlen(text), origin, d);
	free(text);
	if (!err && fl_model_desc_builtin_valid((*d)->label))
		(*d)->builtin = 1;
	return err;
}

/* The redundant keys next to "model" must agree with it. */
static int check_agrees(const struct fl_model_desc *d, const char *path, const char *arch, int c,
			int h, int w, int classes)
{
	const struct fl_desc_shape *in = &d->input;
	int dc = in->ndim == 3 ? in->dim[0] : 1, dh = in->ndim == 3 ? in->dim[1] : 1;
	int dw = in->ndim == 3 ? in->dim[2] : in->dim[0];
	if (strcmp(arch, d->label) != 0)
		return fl_error_set(FL_EFORMAT, "%s: key 'arch': '%s' but the model is '%s'", path,
				    arch, d->label);
	if (c != dc || h != dh || w != dw || classes != d->classes)
		return fl_error_set(FL_EFORMAT,
				    "%s: keys 'input' / 'classes' disagree with 'model'", path);
	return FL_OK;
}

static int model_from_json(json_t *root, const char *path, int max_batch, struct fl_model **m)
{
	struct fl_peft_config *cfg = NULL;
	struct fl_model_desc *d = NULL;
	const char *arch = json_string_value(json_object_get(root, "arch"));
	json_t *input = json_object_get(root, "input");
	int c = 0, h = 0, w = 0, classes = 0, err = FL_OK;
	if (!json_is_string(json_object_get(root, "format")) ||
	    strcmp(json_string_value(json_object_get(root, "format")), "fedloha-model") != 0)
		err = fl_error_set(FL_EFORMAT, "%s: not a fedloha model file (key 'format')", path);
	else if ((err = saved_description(root, path, &d)) == FL_ENOTFOUND)
		err = FL_OK;
	if (!err && (!arch || (!d && !fl_model_desc_builtin_valid(arch))))
		err = fl_error_set(FL_EFORMAT, "%s: key 'arch': unknown model", path);
	else if (!err && (!json_is_array(input) || json_array_size(input) != 3))
		err = fl_error_set(FL_EFORMAT, "%s: key 'input': expected [c, h, w]", path);
	if (!err)
		err = json_int_in(json_array_get(input, 0), path, "input", 1, 1 << 24, &c);
	if (!err)
		err = json_int_in(json_array_get(input, 1), path, "input", 1, 1 << 24, &h);
	if (!err)
		err = json_int_in(json_array_get(input, 2), path, "input", 1, 1 << 24, &w);
	if (!err)
		err = json_int_in(json_object_get(root, "classes"), path, "classes", 2, 1 << 24,
				  &classes);
	if (!err && d)
		err = check_agrees(d, path, arch, c, h, w, classes);
	if (!err)
		err = config_from_json(root, path, &cfg);
	if (!err && d)
		err = fl_model_new_desc(d, cfg, 0, max_batch, m);
	else if (!err)
		err = fl_model_new(arch, c, h, w, classes, cfg, 0, max_batch, m);
	fl_peft_config_free(cfg);
	fl_model_desc_free(d);
	return err;
}

/* The safetensors files of the folder that the kind of m needs. */
static int read_saved_files(const char *dir, const struct fl_model *m, struct fl_st *files[3])
{
	char path[FL_PATH_MAX];
	int err = FL_OK;
	for (int i = 0; i < 3 && !err; i++) {
		if (i < 2 && m->param == FL_PEFT_PARAM_DENSE)
			continue; /* stale adapter files of an older save */
		snprintf(path, sizeof(path), "%s/%s", dir, saved_files[i]);
		if (fl_path_exists(path))
			err = fl_st_read(path, &files[i]);
	}
	if (!err && !files[2])
		err = fl_error_set(FL_ENOTFOUND, "%s/model.safetensors: missing", dir);
	if (!err && m->param == FL_PEFT_PARAM_LOHA && !files[1])
		err = fl_error_set(FL_ENOTFOUND, "%s/base_model.safetensors: missing", dir);
	if (!err && m->param != FL_PEFT_PARAM_DENSE && !files[0])
		err = fl_error_set(FL_ENOTFOUND, "%s/adapter_model.safetensors: missing", dir);
	return err;
}

/* Every tensor of m: the adapter file by its PEFT name first, then (not
 * for factors) the base file, then (not for the frozen base) the model. */
static int load_tensors(const char *dir, struct fl_model *m, struct fl_st *const files[3])
{
	for (size_t i = 0; i < fl_model_tensor_count(m); i++) {
		const struct fl_model_tensor *t = fl_model_tensor_at(m, i);
		char key[256];
		snprintf(key, sizeof(key), PEFT_PREFIX "%s", t->name);
		int r = files[0] ? load_tensor(m, t, files[0], key, saved_files[0]) : FL_ENOTFOUND;
		if (r == FL_ENOTFOUND && !strstr(t->name, ".hada_") && !strstr(t->name, ".lora_")) {
			int last = (t->flags & FL_TENSOR_BASE) ? 2 : 3; /* W0 only from the base */
			for (int f = 1; f < last && r == FL_ENOTFOUND; f++)
				if (files[f])
					r = load_tensor(m, t, files[f], t->name, saved_files[f]);
		}
		if (r == FL_ENOTFOUND)
			return fl_error_set(FL_ENOTFOUND,
					    "%s: tensor '%s' not found in the saved files", dir,
					    t->name);
		if (r)
			return r;
	}
	return FL_OK;
}

int fl_model_load(const char *dir, int max_batch, struct fl_model **out)
{
	*out = NULL;
	char path[FL_PATH_MAX], *text = NULL;
	snprintf(path, sizeof(path), "%s/fedloha.json", dir);
	int err = fl_file_read_all(path, 1u << 20, &text, NULL);
	if (err)
		return err;
	json_error_t je;
	char jt[sizeof(je.text)]; /* je.text without control bytes */
	json_t *root = json_loads(text, 0, &je);
	free(text);
	if (!root)
		return fl_error_set(FL_EFORMAT, "%s:%d:%d: %s", path, je.line, je.column,
				    fl_error_safe_str(je.text, jt, sizeof(jt)));
	struct fl_model *m = NULL;
	struct fl_st *files[3] = {NULL, NULL, NULL};
	err = model_from_json(root, path, max_batch, &m);
	if (!err)
		err = read_saved_files(dir, m, files);
	if (!err)
		err = load_tensors(dir, m, files);
	for (int i = 0; i < 3; i++)
		fl_st_free(files[i]);
	json_decref(root);
	if (err) {
		fl_model_free(m);
		return err;
	}
	fl_model_params_changed(m);
	*out = m;
	return FL_OK;
}

int fl_model_load_picked(struct fl_model *m, const char *path,
			 int (*pick)(const struct fl_model_tensor *t), const char *what)
{
	struct fl_st *st;
	int err = fl_st_read(path, &st);
	if (err)
		return err;
	for (size_t i = 0; i < m->ntensors && !err; i++) {
		const struct fl_model_tensor *t = &m->tensors[i];
		if (!pick(t))
			continue;
		int r = load_tensor(m, t, st, t->name, path);
		if (r == FL_ENOTFOUND)
			err = fl_error_set(FL_ENOTFOUND, "%s: %s '%s' is missing", path, what,
					   t->name);
		else
			err = r;
	}
	fl_st_free(st);
	fl_model_params_changed(m);
	return err;
}

static int pick_base(const struct fl_model_tensor *t)
{
	return (t->flags & FL_TENSOR_BASE) != 0;
}

int fl_model_load_base(struct fl_model *m, const char *path)
{
	return fl_model_load_picked(m, path, pick_base, "base tensor");
}
