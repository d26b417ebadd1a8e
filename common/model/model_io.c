/* model_io.c - model.safetensors (PyTorch), PEFT adapter folders and
 * fedloha.json; see model_io.h for the folder layout. */
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
#include <unistd.h>

#define PEFT_PREFIX "base_model.model."
#define FEDLOHA_JSON_MAX (1u << 20)

static int is_weight_layer(const struct fl_layer *L)
{
	return fl_layer_kind_weight(L->kind);
}

static int weight_shape(const struct fl_layer *L, int64_t *s)
{
	s[0] = L->out_c;
	s[1] = L->in_c;
	if (L->kind != FL_LAYER_CONV2D)
		return 2;
	s[2] = s[3] = L->k;
	return 4;
}

static size_t weight_floats(const struct fl_layer *L)
{
	int64_t s[4];
	int nd = weight_shape(L, s);
	size_t n = 1;
	for (int i = 0; i < nd; i++)
		n *= (size_t)s[i];
	return n;
}

static size_t max_weight_floats(const struct fl_model *m)
{
	size_t mx = 1;
	for (int i = 0; i < m->nlayers; i++)
		if (is_weight_layer(&m->layers[i]) && weight_floats(&m->layers[i]) > mx)
			mx = weight_floats(&m->layers[i]);
	return mx;
}

static int add_named(struct fl_st *st, const char *prefix, const char *name, const int64_t *shape,
		     int ndim, const float *data)
{
	char key[256];
	snprintf(key, sizeof(key), "%s%s", prefix, name);
	return fl_st_add_f32(st, key, shape, ndim, data);
}

/* The parameters of a norm or a position, as they are. */
static int write_layer_params(struct fl_model *m, struct fl_st *st, const struct fl_layer *L)
{
	int err = FL_OK;
	for (int slot = FL_LT_WEIGHT; slot <= FL_LT_BIAS && !err; slot++) {
		if (L->t[slot] < 0)
			continue;
		const struct fl_model_tensor *t = &m->tensors[L->t[slot]];
		err = add_named(st, "", t->name, t->shape, t->ndim,
				fl_model_tensor_ptr(m, L->t[slot]));
	}
	return err;
}

/* Composed weights and biases. zero_factored: write zeros for layers whose
 * weight exists only as factors (the from-scratch base) and W0 for loha. */
static int write_dense(struct fl_model *m, const char *path, int base_only)
{
	struct fl_st *st = NULL;
	float *w = malloc(sizeof(float) * max_weight_floats(m));
	int err = w ? fl_st_new(&st) : fl_error_set(FL_ENOMEM, "save: out of memory");
	if (!err)
		err = fl_st_set_metadata(st, "format", "pt");
	for (int i = 0; i < m->nlayers && !err; i++) {
		struct fl_layer *L = &m->layers[i];
		if (!is_weight_layer(L)) {
			err = write_layer_params(m, st, L);
			continue;
		}
		int64_t s[4];
		int nd = weight_shape(L, s);
		char name[FL_MODEL_NAME_MAX + 8];
		if (!base_only)
			fl_model_compose_weight(m, i, w);
		else if (L->t[FL_LT_WEIGHT] >= 0)
			memcpy(w, fl_model_tensor_ptr(m, L->t[FL_LT_WEIGHT]),
			       sizeof(float) * weight_floats(L));
		else
			memset(w, 0, sizeof(float) * weight_floats(L));
		snprintf(name, sizeof(name), "%s.weight", L->name);
		err = add_named(st, "", name, s, nd, w);
		if (!err && L->t[FL_LT_BIAS] >= 0) {
			const struct fl_model_tensor *b = &m->tensors[L->t[FL_LT_BIAS]];
			err = add_named(st, "", b->name, b->shape, 1,
					fl_model_tensor_ptr(m, L->t[FL_LT_BIAS]));
		}
	}
	if (!err)
		err = fl_st_write(st, path);
	fl_st_free(st);
	free(w);
	return err;
}

int fl_model_save_dense(struct fl_model *m, const char *path)
{
	return write_dense(m, path, 0);
}

static int is_factor_name(const char *name)
{
	return strstr(name, ".hada_") || strstr(name, ".lora_");
}

/* Factors (PEFT keys) and, under loha, the trained dense modules. */
static int write_adapter_tensors(struct fl_model *m, const char *path)
{
	struct fl_st *st = NULL;
	int err = fl_st_new(&st);
	if (!err)
		err = fl_st_set_metadata(st, "format", "pt");
	for (size_t i = 0; i < m->ntensors && !err; i++) {
		const struct fl_model_tensor *t = &m->tensors[i];
		const struct fl_layer *L = &m->layers[t->layer];
		int factor = is_factor_name(t->name);
		if (!factor && !(m->param == FL_PEFT_PARAM_LOHA && (t->flags & FL_TENSOR_GLOBAL)))
			continue;
		int64_t s[4];
		int nd = t->ndim;
		memcpy(s, t->shape, sizeof(s));
		if (L->param == FL_PEFT_PARAM_LOWRANK && L->kind == FL_LAYER_CONV2D) {
			/* PEFT LoRA conv: lora_A Conv2d (k, I, K1, K2), lora_B (O, k, 1, 1) */
			nd = 4;
			if (strstr(t->name, "lora_A")) {
				s[0] = L->lowrank_k, s[1] = L->in_c, s[2] = s[3] = L->k;
			} else {
				s[0] = L->out_c, s[1] = L->lowrank_k, s[2] = s[3] = 1;
			}
		}
		err = add_named(st, PEFT_PREFIX, t->name, s, nd, m->params + t->offset);
	}
	if (!err)
		err = fl_st_write(st, path);
	fl_st_free(st);
	return err;
}

/* A PEFT config naming every parameterised layer with its own r and alpha,
 * so rebuilding never depends on the gamma rule or on defaults. */
static int explicit_config(const struct fl_model *m, struct fl_peft_config **out)
{
	struct fl_peft_config *c;
	int err = fl_peft_config_new(&c);
	if (err)
		return err;
	c->parameterization = m->param;
	size_t n = 0;
	for (int i = 0; i < m->nlayers; i++)
		n += m->layers[i].param != FL_PEFT_PARAM_DENSE;
	c->target_kind = FL_PEFT_SEL_LIST;
	c->target_modules = calloc(n + 1, sizeof(char *));
	c->rank_pattern = calloc(n + 1, sizeof(*c->rank_pattern));
	c->alpha_pattern = calloc(n + 1, sizeof(*c->alpha_pattern));
	if (!c->target_modules || !c->rank_pattern || !c->alpha_pattern)
		err = fl_error_set(FL_ENOMEM, "save: out of memory");
	int first = 1;
	for (int i = 0; i < m->nlayers && !err; i++) {
		const struct fl_layer *L = &m->layers[i];
		if (L->param == FL_PEFT_PARAM_DENSE)
			continue;
		double alpha = (double)L->scale * L->ld.r;
		if (first) {
			c->r = L->ld.r;
			c->alpha = alpha;
			c->rank_dropout = L->rank_dropout;
			c->module_dropout = L->module_dropout;
			first = 0;
		}
		if (L->ld.form == FL_LOHA_FORM_TUCKER)
			c->use_effective_conv2d = 1;
		size_t j = c->n_target_modules;
		c->target_modules[j] = fl_strdup(L->name);
		c->n_target_modules++;
		c->rank_pattern[j].key = fl_strdup(L->name);
		c->rank_pattern[j].value = L->ld.r;
		c->n_rank_pattern++;
		c->alpha_pattern[j].key = fl_strdup(L->name);
		c->alpha_pattern[j].value = alpha;
		c->n_alpha_pattern++;
		if (!c->target_modules[j] || !c->rank_pattern[j].key || !c->alpha_pattern[j].key)
			err = fl_error_set(FL_ENOMEM, "save: out of memory");
	}
	/* loha: trained dense layers are PEFT's modules_to_save */
	if (!err && m->param == FL_PEFT_PARAM_LOHA) {
		size_t ns = 0;
		for (int i = 0; i < m->nlayers; i++) {
			const struct fl_layer *L = &m->layers[i];
			ns += is_weight_layer(L) && L->param == FL_PEFT_PARAM_DENSE &&
			      (m->tensors[L->t[FL_LT_WEIGHT]].flags & FL_TENSOR_GLOBAL);
		}
		if (ns) {
			c->modules_to_save = calloc(ns, sizeof(char *));
			if (!c->modules_to_save)
				err = fl_error_set(FL_ENOMEM, "save: out of memory");
			for (int i = 0; i < m->nlayers && !err; i++) {
				const struct fl_layer *L = &m->layers[i];
				if (is_weight_layer(L) && L->param == FL_PEFT_PARAM_DENSE &&
				    (m->tensors[L->t[FL_LT_WEIGHT]].flags & FL_TENSOR_GLOBAL)) {
					c->modules_to_save[c->n_modules_to_save] = fl_strdup(
						L->name);
					if (!c->modules_to_save[c->n_modules_to_save++])
						err = fl_error_set(FL_ENOMEM,
								   "save: out of memory");
				}
			}
		}
	}
	if (err) {
		fl_peft_config_free(c);
		return err;
	}
	*out = c;
	return FL_OK;
}

static int dump_json_atomic(json_t *j, const char *path)
{
	char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
	if (!text)
		return fl_error_set(FL_ENOMEM, "%s: cannot encode JSON", path);
	size_t len = strlen(text);
	char *buf = malloc(len + 2);
	int err;
	if (!buf) {
		err = fl_error_set(FL_ENOMEM, "%s: out of memory", path);
	} else {
		memcpy(buf, text, len);
		buf[len] = '\n';
		err = fl_file_write_atomic(path, buf, len + 1, 0);
	}
	free(buf);
	free(text);
	return err;
}

/* PEFT LoRA config for the low-rank baseline (W = B A, scale 1). */
static int write_lora_config(const struct fl_peft_config *c, const char *path)
{
	json_t *j = json_object(), *targets = json_array(), *rp = json_object(),
	       *ap = json_object();
	for (size_t i = 0; i < c->n_target_modules; i++)
		json_array_append_new(targets, json_string(c->target_modules[i]));
	json_object_set_new(j, "peft_type", json_string("LORA"));
	json_object_set_new(j, "target_modules", targets);
	json_object_set_new(j, "rank_pattern", rp);
	json_object_set_new(j, "alpha_pattern", ap);
	json_object_set_new(j, "lora_dropout", json_real(0.0));
	json_object_set_new(j, "bias", json_string("none"));
	json_object_set_new(j, "fan_in_fan_out", json_false());
	json_object_set_new(j, "init_lora_weights", json_true());
	json_object_set_new(j, "inference_mode", json_true());
	json_object_set_new(j, "modules_to_save", json_null());
	json_object_set_new(j, "task_type", json_null());
	json_object_set_new(j, "base_model_name_or_path", json_null());
	json_object_set_new(j, "fedloha_parameterization", json_string("lowrank"));
	int err = dump_json_atomic(j, path);
	json_decref(j);
	return err;
}

static int fix_lora_config(struct fl_model *m, const char *path)
{
	/* rank_pattern / alpha_pattern hold k (the LoRA rank) with alpha = k. */
	json_error_t je;
	char jt[sizeof(je.text)]; /* je.text without control bytes */
	json_t *j = json_load_file(path, 0, &je);
	if (!j)
		return fl_error_set(FL_EIO, "%s: %s", path,
				    fl_error_safe_str(je.text, jt, sizeof(jt)));
	json_t *rp = json_object_get(j, "rank_pattern"), *ap = json_object_get(j, "alpha_pattern");
	int r0 = 0;
	for (int i = 0; i < m->nlayers; i++) {
		const struct fl_layer *L = &m->layers[i];
		if (L->param != FL_PEFT_PARAM_LOWRANK)
			continue;
		if (!r0)
			r0 = L->lowrank_k;
		json_object_set_new(rp, L->name, json_integer(L->lowrank_k));
		json_object_set_new(ap, L->name, json_integer(L->lowrank_k));
	}
	json_object_set_new(j, "r", json_integer(r0 ? r0 : 8));
	json_object_set_new(j, "lora_alpha", json_integer(r0 ? r0 : 8));
	int err = dump_json_atomic(j, path);
	json_decref(j);
	return err;
}

/* The model description, indented, for people and tools
 * (tests/torch_model.py builds the PyTorch module from it). */
static int write_description(const struct fl_model *m, const char *path)
{
	json_t *j = json_loads(m->desc->text, 0, NULL);
	if (!j)
		return fl_error_set(FL_ENOMEM, "save: out of memory");
	int err = dump_json_atomic(j, path);
	json_decref(j);
	return err;
}

static int write_fedloha_json(const struct fl_model *m, const char *path, const char *meta_json)
{
	json_t *j = json_object(), *layers = json_array();
	json_object_set_new(j, "format", json_string("fedloha-model"));
	json_object_set_new(j, "version", json_integer(1));
	json_object_set_new(j, "arch", json_string(m->arch));
	json_object_set_new(j, "model", json_loads(m->desc->text, 0, NULL));
	json_object_set_new(j, "input", json_pack("[iii]", m->c, m->h, m->w));
	json_object_set_new(j, "classes", json_integer(m->classes));
	json_object_set_new(j, "parameterization", json_string(fl_peft_param_name(m->param)));
	for (int i = 0; i < m->nlayers; i++) {
		const struct fl_layer *L = &m->layers[i];
		if (!is_weight_layer(L))
			continue;
		json_t *l = json_pack("{s:s, s:s, s:i, s:f, s:b, s:f, s:f}", "name", L->name,
				      "param", fl_peft_param_name(L->param), "r", L->ld.r, "alpha",
				      (double)L->scale * L->ld.r, "tucker",
				      L->ld.form == FL_LOHA_FORM_TUCKER || L->lowrank_tucker,
				      "rank_dropout", (double)L->rank_dropout, "module_dropout",
				      (double)L->module_dropout);
		if (m->param == FL_PEFT_PARAM_LOHA && L->param == FL_PEFT_PARAM_DENSE &&
		    (m->tensors[L->t[FL_LT_WEIGHT]].flags & FL_TENSOR_GLOBAL))
			json_object_set_new(l, "module_to_save", json_true());
		json_array_append_new(layers, l);
	}
	json_object_set_new(j, "layers", layers);
	if (meta_json) {
		json_error_t je;
		char jt[sizeof(je.text)]; /* je.text without control bytes */
		json_t *meta = json_loads(meta_json, 0, &je);
		if (!meta) {
			json_decref(j);
			return fl_error_set(FL_EINVAL, "save: bad metadata JSON: %s",
					    fl_error_safe_str(je.text, jt, sizeof(jt)));
		}
		json_object_set_new(j, "meta", meta);
	}
	int err = dump_json_atomic(j, path);
	json_decref(j);
	return err;
}

int fl_model_save(struct fl_model *m, const char *dir, const char *meta_json)
{
	char path[FL_PATH_MAX];
	int err = fl_mkdir_p(dir, 0);
	if (err)
		return err;
	snprintf(path, sizeof(path), "%s/model.safetensors", dir);
	if ((err = write_dense(m, path, 0)))
		return err;
	if (m->param == FL_PEFT_PARAM_DENSE) {
		/* a dense model has no adapter: drop those of an older save */
		static const char *const stale[] = {"adapter_model.safetensors",
						    "base_model.safetensors",
						    "adapter_config.json"};
		for (size_t i = 0; i < sizeof(stale) / sizeof(stale[0]); i++) {
			snprintf(path, sizeof(path), "%s/%s", dir, stale[i]);
			if (fl_path_exists(path) && unlink(path) != 0)
				return fl_error_set(FL_EIO, "%s: cannot remove a stale file", path);
		}
	} else {
		snprintf(path, sizeof(path), "%s/adapter_model.safetensors", dir);
		if ((err = write_adapter_tensors(m, path)))
			return err;
		snprintf(path, sizeof(path), "%s/base_model.safetensors", dir);
		if ((err = write_dense(m, path, 1)))
			return err;
		struct fl_peft_config *c;
		if ((err = explicit_config(m, &c)))
			return err;
		snprintf(path, sizeof(path), "%s/adapter_config.json", dir);
		if (m->param == FL_PEFT_PARAM_LOWRANK) {
			err = write_lora_config(c, path);
			if (!err)
				err = fix_lora_config(m, path);
		} else {
			err = fl_peft_config_write(c, path);
		}
		fl_peft_config_free(c);
		if (err)
			return err;
	}
	snprintf(path, sizeof(path), "%s/model.json", dir);
	if ((err = write_description(m, path)))
		return err;
	snprintf(path, sizeof(path), "%s/fedloha.json", dir);
	return write_fedloha_json(m, path, meta_json);
}
