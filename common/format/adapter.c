/* adapter.c - merge a PEFT LoHa adapter folder into a base model (PEFT
 * merge_and_unload) and describe it module by module (`fedloha-adapter
 * inspect`). Folder reading and shape checks are adapter_folder.c, LoRA
 * folders adapter_lora.c, the factor math fl_loha_forward (loha.c).
 * Library code: errors go through fl_error_set(); only fl_adapter_inspect()
 * prints, to the FILE it gets.
 */
#include "adapter.h"
#include "adapter_merge.h"

#include "errors.h"
#include "fsutil.h"
#include "half.h"

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define AD_NAME_MAX 160

/* ---- merge ---- */

/* w0 + dw in the dtype of w, added to out. */
int fl_adapter_store_merged(struct fl_st *out, const struct fl_st_tensor *w, const float *dw)
{
	char nb[AD_NAME_MAX];
	size_t n = w->numel;
	int err = FL_OK;
	if (w->dtype == FL_DTYPE_F64) {
		double *s = malloc(n * sizeof(double) + 1);
		if (!s)
			return fl_error_set(FL_ENOMEM, "out of memory merging '%s'",
					    fl_error_safe_str(w->name, nb, AD_NAME_MAX));
		memcpy(s, w->data, n * sizeof(double));
		for (size_t i = 0; i < n && err == FL_OK; i++)
			if (!isfinite(s[i] + (double)dw[i]))
				err = fl_error_set(FL_ENONFINITE,
						   "merge of '%s': non-finite value at index %zu",
						   fl_error_safe_str(w->name, nb, AD_NAME_MAX), i);
		for (size_t i = 0; i < n && err == FL_OK; i++)
			s[i] += (double)dw[i];
		if (err == FL_OK)
			err = fl_st_add(out, w->name, w->dtype, w->shape, w->ndim, s);
		free(s);
		return err;
	}
	float *s = malloc(n * sizeof(float) + 1);
	uint16_t *h = w->dtype == FL_DTYPE_F32 ? NULL : malloc(n * sizeof(uint16_t) + 1);
	if (!s || (w->dtype != FL_DTYPE_F32 && !h)) {
		err = fl_error_set(FL_ENOMEM, "out of memory merging '%s'",
				   fl_error_safe_str(w->name, nb, AD_NAME_MAX));
		goto done;
	}
	if ((err = fl_st_tensor_to_f32(w, s, n)) != FL_OK)
		goto done;
	if ((err = fl_loha_merge_safe(s, dw, n, w->name)) != FL_OK)
		goto done;
	if (w->dtype == FL_DTYPE_F32) {
		err = fl_st_add(out, w->name, w->dtype, w->shape, w->ndim, s);
		goto done;
	}
	for (size_t i = 0; i < n; i++) {
		h[i] = w->dtype == FL_DTYPE_F16 ? fl_f32_to_f16(s[i]) : fl_f32_to_bf16(s[i]);
		uint16_t inf = w->dtype == FL_DTYPE_F16 ? 0x7c00u : 0x7f80u;
		if ((h[i] & 0x7fffu) == inf) {
			err = fl_error_set(FL_ENONFINITE,
					   "merge of '%s': %g at index %zu overflows %s",
					   fl_error_safe_str(w->name, nb, AD_NAME_MAX),
					   (double)s[i], i, fl_dtype_name(w->dtype));
			goto done;
		}
	}
	err = fl_st_add(out, w->name, w->dtype, w->shape, w->ndim, h);
done:
	free(s);
	free(h);
	return err;
}

/* ΔW of m (scale alpha / r of the module) merged into base weight w. */
static int ad_merge_module(const struct fl_adapter_folder *f, const struct fl_adapter_factors *m,
			   const struct fl_st_tensor *w, const struct fl_loha_dims *d,
			   struct fl_st *out)
{
	char nb[AD_NAME_MAX];
	float *buf[FL_ADAPTER_NFACT] = {0}, *dw = NULL, *work = NULL;
	int err = FL_OK;
	size_t n = fl_loha_dense_count(d);
	if (n != w->numel)
		return fl_error_set(FL_ESHAPE, "module '%s': dimension mismatch",
				    fl_error_safe_str(m->name, nb, AD_NAME_MAX));
	for (int k = 0; k < FL_ADAPTER_NFACT && err == FL_OK; k++) {
		const struct fl_st_tensor *t = m->t[k];
		if (!t || (k >= FL_ADAPTER_T1 && d->form != FL_LOHA_FORM_TUCKER))
			continue;
		if (!(buf[k] = malloc(t->numel * sizeof(float) + 1))) {
			err = fl_error_set(FL_ENOMEM, "out of memory reading '%s'",
					   fl_error_safe_str(t->name, nb, AD_NAME_MAX));
			break;
		}
		if ((err = fl_st_tensor_to_f32(t, buf[k], t->numel)) != FL_OK)
			break;
		for (size_t i = 0; i < t->numel; i++) {
			if (!isfinite(buf[k][i])) {
				err = fl_error_set(FL_ENONFINITE,
						   "%s: tensor '%s' has a non-finite value "
						   "(%g) at index %zu",
						   f->st_path,
						   fl_error_safe_str(t->name, nb, AD_NAME_MAX),
						   (double)buf[k][i], i);
				break;
			}
		}
	}
	if (err != FL_OK)
		goto done;
	dw = malloc(n * sizeof(float) + 1);
	work = malloc(fl_loha_work_floats(d) * sizeof(float) + 1);
	if (!dw || !work) {
		err = fl_error_set(FL_ENOMEM, "out of memory merging '%s'",
				   fl_error_safe_str(m->name, nb, AD_NAME_MAX));
		goto done;
	}
	struct fl_loha_factors fac = {buf[FL_ADAPTER_W1A], buf[FL_ADAPTER_W1B], buf[FL_ADAPTER_W2A],
				      buf[FL_ADAPTER_W2B], buf[FL_ADAPTER_T1],  buf[FL_ADAPTER_T2]};
	double scale = fl_peft_config_scale(f->cfg, m->name);
	fl_loha_forward(dw, work, &fac, d, (float)scale,
			f->cfg->parameterization == FL_PEFT_PARAM_PFEDPARA ? FL_LOHA_MODE_PFEDPARA
									   : FL_LOHA_MODE_LOHA);
	err = fl_adapter_store_merged(out, w, dw);
done:
	for (int k = 0; k < FL_ADAPTER_NFACT; k++)
		free(buf[k]);
	free(dw);
	free(work);
	return err;
}

/* Decides what happens to one base tensor and does it. */
static int ad_merge_tensor(const struct fl_adapter_folder *f, const struct fl_st_tensor *t,
			   const struct fl_adapter_merge_opts *opts, struct fl_st *out,
			   struct fl_adapter_merge_stats *st)
{
	char nb[AD_NAME_MAX];
	for (size_t i = 0; i < f->n_saved; i++) {
		if (strcmp(f->saved[i].base_name, t->name) == 0) {
			const struct fl_st_tensor *s = f->saved[i].t;
			st->replaced++;
			return fl_st_add(out, t->name, s->dtype, s->shape, s->ndim, s->data);
		}
	}
	size_t len = strlen(t->name);
	if ((t->ndim == 2 || t->ndim == 4) && len > 7 &&
	    strcmp(t->name + len - 7, ".weight") == 0) {
		char *module = strndup(t->name, len - 7);
		if (!module)
			return fl_error_set(FL_ENOMEM, "out of memory");
		int out_layer = opts && opts->output_layer &&
				strcmp(opts->output_layer, module) == 0;
		int tg = 0,
		    err = fl_peft_config_targets(f->cfg, module, t->ndim == 2, out_layer, &tg);
		const struct fl_adapter_factors *m = fl_adapter_folder_find(f, module);
		if (err == FL_OK && tg && !m)
			err = fl_error_set(
				FL_ENOTFOUND,
				"module '%s' is targeted by the config but %s has no factors "
				"for it%s",
				fl_error_safe_str(module, nb, AD_NAME_MAX), f->st_path,
				f->cfg->target_kind == FL_PEFT_SEL_ALL_LINEAR
					? " (all-linear: name the output layer if it is one)"
					: "");
		else if (err == FL_OK && !tg && m)
			err = fl_error_set(
				FL_EINVAL,
				"%s has LoHa factors for module '%s', which the config does "
				"not target",
				f->st_path, fl_error_safe_str(module, nb, AD_NAME_MAX));
		free(module);
		if (err != FL_OK)
			return err;
		if (m) {
			struct fl_loha_dims d = {.r = fl_peft_config_rank(f->cfg, m->name)};
			enum fl_adapter_form form;
			fl_adapter_dims_from_base(f->cfg, t, &d, &form);
			if ((err = fl_adapter_factors_check(f, m, &d)) != FL_OK ||
			    (err = ad_merge_module(f, m, t, &d, out)) != FL_OK)
				return err;
			st->merged++;
			return FL_OK;
		}
	}
	st->copied++;
	return fl_st_add(out, t->name, t->dtype, t->shape, t->ndim, t->data);
}

int fl_adapter_merge(const char *base_path, const char *adapter_dir, const char *out_path,
		     const struct fl_adapter_merge_opts *opts, struct fl_adapter_merge_stats *stats)
{
	char ptype[16];
	fl_adapter_peft_type(adapter_dir, ptype, sizeof(ptype));
	if (!strcmp(ptype, "LORA"))
		return fl_adapter_merge_lora(base_path, adapter_dir, out_path, stats);
	struct fl_adapter_folder *f;
	struct fl_st *base = NULL, *out = NULL;
	struct fl_adapter_merge_stats st = {0};
	char nb[AD_NAME_MAX], sa[96], sb[96];
	int err = fl_adapter_folder_open(adapter_dir, &f);
	if (err != FL_OK)
		return err;
	if ((err = fl_st_read(base_path, &base)) != FL_OK)
		goto done;
	for (size_t i = 0; i < f->n_mods; i++) {
		const struct fl_st_tensor *w;
		if ((err = fl_adapter_base_weight(f, base, base_path, &f->mods[i], &w)) != FL_OK)
			goto done;
	}
	for (size_t i = 0; i < f->n_saved; i++) {
		const struct fl_st_tensor *s = f->saved[i].t,
					  *b = fl_st_find(base, f->saved[i].base_name);
		int same = b && b->ndim == s->ndim;
		for (int k = 0; same && k < s->ndim; k++)
			same = b->shape[k] == s->shape[k];
		if (!b)
			err = fl_error_set(FL_ENOTFOUND,
					   "modules_to_save tensor '%s' has no counterpart "
					   "in %s",
					   fl_error_safe_str(s->name, nb, AD_NAME_MAX), base_path);
		else if (!same)
			err = fl_error_set(FL_ESHAPE,
					   "modules_to_save tensor '%s' has shape %s, the "
					   "base has %s",
					   fl_error_safe_str(s->name, nb, AD_NAME_MAX),
					   fl_error_shape_str(s->shape, s->ndim, sa, sizeof(sa)),
					   fl_error_shape_str(b->shape, b->ndim, sb, sizeof(sb)));
		if (err != FL_OK)
			goto done;
	}
	if ((err = fl_st_new(&out)) != FL_OK)
		goto done;
	for (size_t i = 0; i < fl_st_metadata_count(base); i++) {
		const char *v, *k = fl_st_metadata_at(base, i, &v);
		if ((err = fl_st_set_metadata(out, k, v)) != FL_OK)
			goto done;
	}
	for (size_t i = 0; i < fl_st_count(base); i++)
		if ((err = ad_merge_tensor(f, fl_st_at(base, i), opts, out, &st)) != FL_OK)
			goto done;
	err = fl_st_write(out, out_path);
	if (err == FL_OK && stats)
		*stats = st;
done:
	fl_st_free(out);
	fl_st_free(base);
	fl_adapter_folder_free(f);
	return err;
}

/* ---- inspect ---- */

const char *fl_adapter_formula(int pfedpara)
{
	return pfedpara ? "pFedPara: W = W0 + s * P1 (.) (P2 + 1), P1 = w1_a @ w1_b, "
			  "P2 = w2_a @ w2_b, s = alpha / r"
			: "LoHa: W = W0 + s * (w1_a @ w1_b) (.) (w2_a @ w2_b), s = alpha / r";
}

void fl_adapter_info_free(struct fl_adapter_info *info)
{
	if (!info)
		return;
	for (size_t i = 0; i < info->n_modules; i++)
		free(info->modules[i].name);
	free(info->modules);
	free(info);
}

static int ad_info_module(const struct fl_adapter_folder *f, const struct fl_st *base,
			  const char *base_path, const struct fl_adapter_factors *m,
			  struct fl_adapter_module *im)
{
	struct fl_loha_dims d = {.r = fl_peft_config_rank(f->cfg, m->name)};
	enum fl_adapter_form form;
	const struct fl_st_tensor *w;
	char nb[AD_NAME_MAX];
	int err, tg = 1;
	if (base) {
		if ((err = fl_adapter_base_weight(f, base, base_path, m, &w)) != FL_OK)
			return err;
		fl_adapter_dims_from_base(f->cfg, w, &d, &form);
	} else if ((err = fl_adapter_dims_from_factors(f, m, &d, &form)) != FL_OK) {
		return err;
	}
	if ((err = fl_adapter_factors_check(f, m, &d)) != FL_OK)
		return err;
	if (f->cfg->target_kind != FL_PEFT_SEL_NULL &&
	    (err = fl_peft_config_targets(f->cfg, m->name, form == FL_ADAPTER_FORM_LINEAR, 0,
					  &tg)) != FL_OK)
		return err;
	if (!tg)
		return fl_error_set(FL_EINVAL,
				    "%s has LoHa factors for module '%s', which the config "
				    "does not target",
				    f->st_path, fl_error_safe_str(m->name, nb, AD_NAME_MAX));
	if (!(im->name = strdup(m->name)))
		return fl_error_set(FL_ENOMEM, "out of memory");
	im->form = form;
	im->dims = d;
	im->alpha = fl_peft_config_alpha(f->cfg, m->name);
	im->scale = im->alpha / d.r;
	im->factor_params = fl_loha_param_count(&d);
	im->dense_params = fl_loha_dense_count(&d);
	im->rank_bound = fl_loha_rank_bound(&d, FL_LOHA_MODE_LOHA);
	return FL_OK;
}

int fl_adapter_info_read(const char *adapter_dir, const char *base_path,
			 struct fl_adapter_info **out)
{
	struct fl_adapter_folder *f;
	struct fl_st *base = NULL;
	struct fl_adapter_info *info = NULL;
	*out = NULL;
	int err = fl_adapter_folder_open(adapter_dir, &f);
	if (err != FL_OK)
		return err;
	if (base_path && (err = fl_st_read(base_path, &base)) != FL_OK)
		goto fail;
	info = calloc(1, sizeof(*info));
	if (!info || !(info->modules = calloc(f->n_mods + 1, sizeof(*info->modules)))) {
		err = fl_error_set(FL_ENOMEM, "out of memory");
		goto fail;
	}
	info->pfedpara = f->cfg->parameterization == FL_PEFT_PARAM_PFEDPARA;
	for (size_t i = 0; i < f->n_mods; i++) {
		struct fl_adapter_module *im = &info->modules[i];
		if ((err = ad_info_module(f, base, base_path, &f->mods[i], im)) != FL_OK)
			goto fail;
		info->n_modules++;
		info->factor_params += im->factor_params;
		info->dense_params += im->dense_params;
	}
	for (size_t i = 0; i < f->n_saved; i++) {
		info->saved_tensors++;
		info->saved_params += f->saved[i].t->numel;
	}
	fl_st_free(base);
	fl_adapter_folder_free(f);
	*out = info;
	return FL_OK;
fail:
	fl_adapter_info_free(info);
	fl_st_free(base);
	fl_adapter_folder_free(f);
	return err;
}

static double ad_ratio(size_t dense, size_t factors)
{
	return factors ? (double)dense / (double)factors : 0.0;
}

static int ad_print_json(const struct fl_adapter_info *info, FILE *out)
{
	for (size_t i = 0; i <= info->n_modules; i++) {
		const struct fl_adapter_module *m = i < info->n_modules ? &info->modules[i] : NULL;
		json_t *o =
			m ? json_pack(
				    "{s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:I, s:I, s:I, s:f}",
				    "module", m->name, "form", fl_adapter_form_name(m->form), "out",
				    m->dims.out, "in", m->dims.in, "k1", m->dims.k1, "k2",
				    m->dims.k2, "r", m->dims.r, "alpha", m->alpha, "scale",
				    m->scale, "factor_params", (json_int_t)m->factor_params,
				    "dense_params", (json_int_t)m->dense_params, "rank_bound",
				    (json_int_t)m->rank_bound, "compression",
				    ad_ratio(m->dense_params, m->factor_params))
			  : json_pack("{s:b, s:I, s:I, s:I, s:f, s:I, s:I, s:s}", "total", 1,
				      "modules", (json_int_t)info->n_modules, "factor_params",
				      (json_int_t)info->factor_params, "dense_params",
				      (json_int_t)info->dense_params, "compression",
				      ad_ratio(info->dense_params, info->factor_params),
				      "saved_tensors", (json_int_t)info->saved_tensors,
				      "saved_params", (json_int_t)info->saved_params, "formula",
				      fl_adapter_formula(info->pfedpara));
		char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER |
						    JSON_REAL_PRECISION(10))
			    : NULL;
		json_decref(o);
		if (!s)
			return fl_error_set(FL_ENOMEM, "inspect: out of memory");
		fprintf(out, "%s\n", s);
		free(s);
	}
	return FL_OK;
}

static void ad_print_table(const struct fl_adapter_info *info, FILE *out)
{
	int w = 6;
	for (size_t i = 0; i < info->n_modules; i++)
		if ((int)strlen(info->modules[i].name) > w)
			w = (int)strlen(info->modules[i].name);
	fprintf(out, "%-*s  %-12s %6s %6s %3s %3s %4s %8s %9s %13s %13s %10s %8s\n", w, "module",
		"form", "out", "in", "k1", "k2", "r", "alpha", "scale", "factor_params",
		"dense_params", "rank_bound", "ratio");
	for (size_t i = 0; i < info->n_modules; i++) {
		const struct fl_adapter_module *m = &info->modules[i];
		fprintf(out,
			"%-*s  %-12s %6d %6d %3d %3d %4d %8.6g %9.6g %13zu %13zu %10ld %7.2fx\n", w,
			m->name, fl_adapter_form_name(m->form), m->dims.out, m->dims.in, m->dims.k1,
			m->dims.k2, m->dims.r, m->alpha, m->scale, m->factor_params,
			m->dense_params, m->rank_bound,
			ad_ratio(m->dense_params, m->factor_params));
	}
	fprintf(out, "total: %zu modules, %zu factor parameters for %zu dense parameters (%.2fx)\n",
		info->n_modules, info->factor_params, info->dense_params,
		ad_ratio(info->dense_params, info->factor_params));
	if (info->saved_tensors)
		fprintf(out, "modules_to_save: %zu tensors, %zu parameters\n", info->saved_tensors,
			info->saved_params);
	fprintf(out, "formula: %s ((.) = element-wise product)\n",
		fl_adapter_formula(info->pfedpara));
}

int fl_adapter_inspect(const char *adapter_dir, const char *base_path, int json, FILE *out)
{
	struct fl_adapter_info *info;
	int err = fl_adapter_info_read(adapter_dir, base_path, &info);
	if (err != FL_OK)
		return err;
	if (json)
		err = ad_print_json(info, out);
	else
		ad_print_table(info, out);
	if (err == FL_OK && (fflush(out) != 0 || ferror(out)))
		err = fl_error_set(FL_EIO, "inspect: write error");
	fl_adapter_info_free(info);
	return err;
}
