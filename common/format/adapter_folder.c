/* adapter_folder.c - open a PEFT LoHa adapter folder, group its tensors by
 * module and check factor shapes (see adapter_folder.h). No arithmetic on
 * tensor values, no printing.
 */
#include "adapter_folder.h"

#include "errors.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define AD_PREFIX "base_model.model."
#define AD_NAME_MAX 160

static const char *const ad_fact_names[FL_ADAPTER_NFACT] = {"hada_w1_a", "hada_w1_b", "hada_w2_a",
							    "hada_w2_b", "hada_t1",   "hada_t2"};

const char *fl_adapter_form_name(enum fl_adapter_form f)
{
	switch (f) {
	case FL_ADAPTER_FORM_LINEAR: return "linear";
	case FL_ADAPTER_FORM_CONV_RESHAPE: return "conv-reshape";
	case FL_ADAPTER_FORM_CONV_TUCKER: return "conv-tucker";
	}
	return "?";
}

static char *ad_join(const char *a, const char *b)
{
	size_t n = strlen(a) + strlen(b) + 2;
	char *s = malloc(n);
	if (s)
		snprintf(s, n, "%s/%s", a, b);
	return s;
}

void fl_adapter_folder_free(struct fl_adapter_folder *f)
{
	if (!f)
		return;
	for (size_t i = 0; i < f->n_mods; i++)
		free(f->mods[i].name);
	for (size_t i = 0; i < f->n_saved; i++)
		free(f->saved[i].base_name);
	free(f->mods);
	free(f->saved);
	fl_st_free(f->st);
	fl_peft_config_free(f->cfg);
	free(f->st_path);
	free(f);
}

static struct fl_adapter_factors *ad_find(const struct fl_adapter_folder *f, const char *name)
{
	for (size_t i = 0; i < f->n_mods; i++)
		if (strcmp(f->mods[i].name, name) == 0)
			return &f->mods[i];
	return NULL;
}

/* Sorts one adapter tensor into a module's factors or the saved list. */
static int ad_folder_add(struct fl_adapter_folder *f, const struct fl_st_tensor *t)
{
	char nb[AD_NAME_MAX];
	size_t pl = strlen(AD_PREFIX);
	if (strncmp(t->name, AD_PREFIX, pl) != 0)
		return fl_error_set(FL_EFORMAT,
				    "%s: tensor '%s' does not start with '" AD_PREFIX
				    "' (not a PEFT adapter file)",
				    f->st_path, fl_error_safe_str(t->name, nb, AD_NAME_MAX));
	const char *rest = t->name + pl, *dot = strrchr(rest, '.');
	if (!dot || dot == rest || !dot[1])
		return fl_error_set(FL_EFORMAT, "%s: tensor '%s' has no module name", f->st_path,
				    fl_error_safe_str(t->name, nb, AD_NAME_MAX));
	char *module = strndup(rest, (size_t)(dot - rest));
	if (!module)
		return fl_error_set(FL_ENOMEM, "%s: out of memory", f->st_path);
	if (strncmp(dot + 1, "hada_", 5) == 0) {
		int k = 0;
		while (k < FL_ADAPTER_NFACT && strcmp(dot + 1, ad_fact_names[k]) != 0)
			k++;
		if (k == FL_ADAPTER_NFACT) {
			free(module);
			return fl_error_set(FL_EFORMAT, "%s: tensor '%s': unknown LoHa factor name",
					    f->st_path,
					    fl_error_safe_str(t->name, nb, AD_NAME_MAX));
		}
		struct fl_adapter_factors *m = ad_find(f, module);
		if (m) {
			free(module);
		} else {
			struct fl_adapter_factors *nm = realloc(f->mods,
								(f->n_mods + 1) * sizeof(*nm));
			if (!nm) {
				free(module);
				return fl_error_set(FL_ENOMEM, "%s: out of memory", f->st_path);
			}
			f->mods = nm;
			m = &f->mods[f->n_mods++];
			memset(m, 0, sizeof(*m));
			m->name = module;
		}
		m->t[k] = t;
		return FL_OK;
	}
	int save = fl_peft_config_is_module_to_save(f->cfg, module);
	free(module);
	if (!save)
		return fl_error_set(
			FL_EFORMAT,
			"%s: tensor '%s' is neither a LoHa factor (hada_*) nor part of a "
			"module in modules_to_save",
			f->st_path, fl_error_safe_str(t->name, nb, AD_NAME_MAX));
	struct fl_adapter_saved *ns = realloc(f->saved, (f->n_saved + 1) * sizeof(*ns));
	if (!ns)
		return fl_error_set(FL_ENOMEM, "%s: out of memory", f->st_path);
	f->saved = ns;
	if (!(ns[f->n_saved].base_name = strdup(rest)))
		return fl_error_set(FL_ENOMEM, "%s: out of memory", f->st_path);
	ns[f->n_saved++].t = t;
	return FL_OK;
}

const struct fl_adapter_factors *fl_adapter_folder_find(const struct fl_adapter_folder *f,
							const char *module)
{
	return ad_find(f, module);
}

int fl_adapter_folder_open(const char *dir, struct fl_adapter_folder **out)
{
	struct stat sb;
	*out = NULL;
	if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
		return fl_error_set(FL_ENOTFOUND, "%s: no such adapter folder", dir);
	struct fl_adapter_folder *f = calloc(1, sizeof(*f));
	char *cfg_path = ad_join(dir, "adapter_config.json");
	int err;
	if (!f || !cfg_path || !(f->st_path = ad_join(dir, "adapter_model.safetensors"))) {
		err = fl_error_set(FL_ENOMEM, "%s: out of memory", dir);
		goto fail;
	}
	if ((err = fl_peft_config_read(cfg_path, &f->cfg)) != FL_OK)
		goto fail;
	if (access(f->st_path, F_OK) != 0) {
		int e = errno;
		char *bin = ad_join(dir, "adapter_model.bin");
		int has_bin = bin && access(bin, F_OK) == 0;
		free(bin);
		err = has_bin ? fl_error_set(
					FL_EUNSUPPORTED,
					"%s: missing; adapter_model.bin (a pickle) is not read, "
					"save the adapter with safe_serialization=True",
					f->st_path)
			      : fl_error_set(e == ENOENT ? FL_ENOTFOUND : FL_EIO, "%s: %s",
					     f->st_path, strerror(e));
		goto fail;
	}
	if ((err = fl_st_read(f->st_path, &f->st)) != FL_OK)
		goto fail;
	for (size_t i = 0; i < fl_st_count(f->st); i++)
		if ((err = ad_folder_add(f, fl_st_at(f->st, i))) != FL_OK)
			goto fail;
	free(cfg_path);
	*out = f;
	return FL_OK;
fail:
	free(cfg_path);
	fl_adapter_folder_free(f);
	return err;
}

/* ---- shapes ---- */

/* The base weight of m: present, 2-D or 4-D, dimensions within int. */
int fl_adapter_base_weight(const struct fl_adapter_folder *f, const struct fl_st *base,
			   const char *base_path, const struct fl_adapter_factors *m,
			   const struct fl_st_tensor **w)
{
	char nb[AD_NAME_MAX];
	size_t n = strlen(m->name) + 8;
	char *wn = malloc(n);
	if (!wn)
		return fl_error_set(FL_ENOMEM, "out of memory");
	snprintf(wn, n, "%s.weight", m->name);
	*w = fl_st_find(base, wn);
	free(wn);
	if (!*w)
		return fl_error_set(
			FL_ENOTFOUND,
			"%s has LoHa factors for module '%s', but %s has no tensor '%s.weight'",
			f->st_path, fl_error_safe_str(m->name, nb, AD_NAME_MAX), base_path,
			fl_error_safe_str(m->name, nb, AD_NAME_MAX));
	if ((*w)->ndim != 2 && (*w)->ndim != 4)
		return fl_error_set(
			FL_EUNSUPPORTED,
			"%s: module '%s': base weight is %d-D; LoHa adapts only linear (2-D) "
			"and conv (4-D) weights",
			base_path, fl_error_safe_str(m->name, nb, AD_NAME_MAX), (*w)->ndim);
	for (int i = 0; i < (*w)->ndim; i++)
		if ((*w)->shape[i] < 1 || (*w)->shape[i] > INT_MAX / 16)
			return fl_error_set(FL_ERANGE,
					    "%s: module '%s': weight dimension %lld unsupported",
					    base_path, fl_error_safe_str(m->name, nb, AD_NAME_MAX),
					    (long long)(*w)->shape[i]);
	return FL_OK;
}

void fl_adapter_dims_from_base(const struct fl_peft_config *cfg, const struct fl_st_tensor *w,
			       struct fl_loha_dims *d, enum fl_adapter_form *form)
{
	d->out = (int)w->shape[0];
	d->in = (int)w->shape[1];
	d->k1 = w->ndim == 4 ? (int)w->shape[2] : 1;
	d->k2 = w->ndim == 4 ? (int)w->shape[3] : 1;
	/* PEFT ignores use_effective_conv2d for 1x1 kernels */
	int tucker = w->ndim == 4 && cfg->use_effective_conv2d && !(d->k1 == 1 && d->k2 == 1);
	d->form = tucker ? FL_LOHA_FORM_TUCKER : FL_LOHA_FORM_LINEAR;
	*form = w->ndim == 2 ? FL_ADAPTER_FORM_LINEAR
		: tucker     ? FL_ADAPTER_FORM_CONV_TUCKER
			     : FL_ADAPTER_FORM_CONV_RESHAPE;
}

/* Without a base: dimensions read off the factor shapes. */
int fl_adapter_dims_from_factors(const struct fl_adapter_folder *f,
				 const struct fl_adapter_factors *m, struct fl_loha_dims *d,
				 enum fl_adapter_form *form)
{
	char nb[AD_NAME_MAX];
	const struct fl_st_tensor *a = m->t[FL_ADAPTER_W1A], *b = m->t[FL_ADAPTER_W1B];
	const struct fl_st_tensor *t = m->t[FL_ADAPTER_T1];
	if (!a || !b || a->ndim != 2 || b->ndim != 2 || (t && t->ndim != 4))
		return fl_error_set(a && b ? FL_ESHAPE : FL_ENOTFOUND,
				    "%s: module '%s': hada_w1_a / hada_w1_b %s", f->st_path,
				    fl_error_safe_str(m->name, nb, AD_NAME_MAX),
				    a && b ? "are not 2-D" : "missing");
	int64_t o = t ? a->shape[1] : a->shape[0], i = b->shape[1];
	int64_t k1 = t ? t->shape[2] : 1, k2 = t ? t->shape[3] : 1;
	if (o < 1 || i < 1 || k1 < 1 || k2 < 1 || o > INT_MAX / 16 || i > INT_MAX / 16 ||
	    k1 > 4096 || k2 > 4096)
		return fl_error_set(FL_ERANGE, "%s: module '%s': unsupported factor shapes",
				    f->st_path, fl_error_safe_str(m->name, nb, AD_NAME_MAX));
	d->out = (int)o;
	d->in = (int)i;
	d->k1 = (int)k1;
	d->k2 = (int)k2;
	d->form = t ? FL_LOHA_FORM_TUCKER : FL_LOHA_FORM_LINEAR;
	*form = t ? FL_ADAPTER_FORM_CONV_TUCKER : FL_ADAPTER_FORM_LINEAR;
	return FL_OK;
}

/* Every factor of m present (t1/t2 exactly in the Tucker form) with the
 * shape d implies, r being the config's rank of the module. */
int fl_adapter_factors_check(const struct fl_adapter_folder *f, const struct fl_adapter_factors *m,
			     const struct fl_loha_dims *d)
{
	char nb[AD_NAME_MAX], tb[AD_NAME_MAX], sa[96], se[96];
	if (fl_loha_dims_check(d) != FL_OK) /* the message is copied before the write */
		return fl_error_set(FL_ERANGE, "%s: module '%s': %s", f->st_path,
				    fl_error_safe_str(m->name, nb, AD_NAME_MAX), fl_error_msg());
	int tucker = d->form == FL_LOHA_FORM_TUCKER;
	int64_t nb_cols = tucker ? d->in : (int64_t)d->in * d->k1 * d->k2;
	for (int k = 0; k < FL_ADAPTER_NFACT; k++) {
		const struct fl_st_tensor *t = m->t[k];
		int need = k < FL_ADAPTER_T1 || tucker;
		if (!need && t)
			return fl_error_set(
				FL_EFORMAT,
				"%s: module '%s' has %s, but it takes the linear / reshape "
				"form (use_effective_conv2d %s, kernel %dx%d)",
				f->st_path, fl_error_safe_str(m->name, nb, AD_NAME_MAX),
				ad_fact_names[k], f->cfg->use_effective_conv2d ? "true" : "false",
				d->k1, d->k2);
		if (!need)
			continue;
		if (!t)
			return fl_error_set(FL_ENOTFOUND, "%s: module '%s': factor %s is missing",
					    f->st_path, fl_error_safe_str(m->name, nb, AD_NAME_MAX),
					    ad_fact_names[k]);
		int64_t e[4];
		int nd = 2;
		if (k >= FL_ADAPTER_T1) {
			e[0] = e[1] = d->r;
			e[2] = d->k1;
			e[3] = d->k2;
			nd = 4;
		} else if (k == FL_ADAPTER_W1A || k == FL_ADAPTER_W2A) {
			e[0] = tucker ? d->r : d->out;
			e[1] = tucker ? d->out : d->r;
		} else {
			e[0] = d->r;
			e[1] = nb_cols;
		}
		int same = t->ndim == nd;
		for (int i = 0; same && i < nd; i++)
			same = t->shape[i] == e[i];
		if (!same)
			return fl_error_set(
				FL_ESHAPE,
				"%s: tensor '%s' has shape %s, expected %s (weight %dx%dx%dx%d, "
				"r = %d for '%s' in the config)",
				f->st_path, fl_error_safe_str(t->name, tb, AD_NAME_MAX),
				fl_error_shape_str(t->shape, t->ndim, sa, sizeof(sa)),
				fl_error_shape_str(e, nd, se, sizeof(se)), d->out, d->in, d->k1,
				d->k2, d->r, fl_error_safe_str(m->name, nb, AD_NAME_MAX));
	}
	return FL_OK;
}
