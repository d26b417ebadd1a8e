/* adapter_lora.c - merge a PEFT LoRA adapter folder (peft_type "LORA",
 * e.g. fedloha's lowrank) into a base model: W0 += scale * B A per module,
 * r and alpha from adapter_config.json. The LoHa merge, inspect and the
 * store of a merged weight are adapter.c. Library code: errors go through
 * fl_error_set(); nothing prints.
 */
#include "adapter_merge.h"

#include "errors.h"
#include "fsutil.h"

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define AD_NAME_MAX 160

#define AD_LORA_PREFIX "base_model.model."

struct ad_lora_mod {
	char *name;
	const struct fl_st_tensor *a, *b; /* lora_A.weight (r, in...), lora_B.weight (out, r...) */
};

/* peft_type of DIR/adapter_config.json into buf ("" when unreadable: the
 * LoHa path then reports the problem). */
void fl_adapter_peft_type(const char *dir, char *buf, size_t cap)
{
	char path[FL_PATH_MAX];
	buf[0] = '\0';
	if (snprintf(path, sizeof(path), "%s/adapter_config.json", dir) >= (int)sizeof(path))
		return;
	json_t *j = json_load_file(path, 0, NULL);
	const char *t = j ? json_string_value(json_object_get(j, "peft_type")) : NULL;
	if (t)
		snprintf(buf, cap, "%s", t);
	json_decref(j);
}

/* PEFT's pattern rule: a key applies to a module equal to it or ending in
 * "." + key. */
static json_t *ad_pattern(json_t *pat, const char *module)
{
	const char *k;
	json_t *v;
	size_t n = strlen(module);
	json_object_foreach(pat, k, v)
	{
		size_t kn = strlen(k);
		if (!strcmp(k, module) ||
		    (kn < n && module[n - kn - 1] == '.' && !strcmp(module + n - kn, k)))
			return v;
	}
	return NULL;
}

static int ad_lora_num(json_t *cfg, const char *key, const char *path, double dflt, double *out)
{
	json_t *v = json_object_get(cfg, key);
	*out = dflt;
	if (!v || json_is_null(v))
		return FL_OK;
	if (!json_is_number(v) || !isfinite(json_number_value(v)))
		return fl_error_set(FL_EINVAL, "%s: key '%s': expected a number", path, key);
	*out = json_number_value(v);
	return FL_OK;
}

/* ΔW = scale · B A of one module merged into base weight w (out, in) or
 * (O, I, K1, K2): A (r, in) or (r, I, K1, K2), B (out, r) or (O, r, 1, 1). */
static int ad_lora_merge_module(const struct ad_lora_mod *m, const struct fl_st_tensor *w, long r,
				double scale, const char *st_path, struct fl_st *out)
{
	char nb[AD_NAME_MAX], sa[96], sb[96], sw[96];
	const struct fl_st_tensor *A = m->a, *B = m->b;
	int conv = w->ndim == 4;
	int64_t O = w->shape[0], in = (int64_t)(w->numel / (size_t)(O ? O : 1));
	int ok = A->ndim == w->ndim && B->ndim == w->ndim && A->shape[0] == r && B->shape[0] == O &&
		 B->shape[1] == r && A->shape[1] == w->shape[1];
	if (ok && conv)
		ok = A->shape[2] == w->shape[2] && A->shape[3] == w->shape[3] && B->shape[2] == 1 &&
		     B->shape[3] == 1;
	if (!ok)
		return fl_error_set(FL_ESHAPE,
				    "%s: module '%s': lora_A %s and lora_B %s do not fit "
				    "the base weight %s with r = %ld",
				    st_path, fl_error_safe_str(m->name, nb, AD_NAME_MAX),
				    fl_error_shape_str(A->shape, A->ndim, sa, sizeof(sa)),
				    fl_error_shape_str(B->shape, B->ndim, sb, sizeof(sb)),
				    fl_error_shape_str(w->shape, w->ndim, sw, sizeof(sw)), r);
	float *a = malloc(A->numel * sizeof(float) + 1), *b = malloc(B->numel * sizeof(float) + 1);
	float *dw = malloc(w->numel * sizeof(float) + 1);
	int err = a && b && dw ? FL_OK : fl_error_set(FL_ENOMEM, "out of memory merging LoRA");
	if (err == FL_OK && (err = fl_st_tensor_to_f32(A, a, A->numel)) == FL_OK)
		err = fl_st_tensor_to_f32(B, b, B->numel);
	for (size_t i = 0; err == FL_OK && i < A->numel + B->numel; i++)
		if (!isfinite(i < A->numel ? a[i] : b[i - A->numel]))
			err = fl_error_set(FL_ENONFINITE, "%s: module '%s': non-finite LoRA factor",
					   st_path, fl_error_safe_str(m->name, nb, AD_NAME_MAX));
	for (int64_t o = 0; err == FL_OK && o < O; o++)
		for (int64_t j = 0; j < in; j++) {
			double acc = 0;
			for (long k = 0; k < r; k++)
				acc += (double)b[o * r + k] * (double)a[k * in + j];
			dw[o * in + j] = (float)(scale * acc);
		}
	if (err == FL_OK)
		err = fl_adapter_store_merged(out, w, dw);
	free(a);
	free(b);
	free(dw);
	return err;
}

static void ad_lora_free(struct ad_lora_mod *mods, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(mods[i].name);
	free(mods);
}

/* Collects the lora_A / lora_B pairs of st; anything else is refused. */
static int ad_lora_collect(const struct fl_st *st, const char *st_path, struct ad_lora_mod **out,
			   size_t *nout)
{
	char nb[AD_NAME_MAX];
	size_t n = 0, cnt = fl_st_count(st), pl = strlen(AD_LORA_PREFIX);
	struct ad_lora_mod *mods = calloc(cnt + 1, sizeof(*mods));
	if (!mods)
		return fl_error_set(FL_ENOMEM, "out of memory");
	for (size_t i = 0; i < cnt; i++) {
		const struct fl_st_tensor *t = fl_st_at(st, i);
		size_t len = strlen(t->name);
		int isa = len > pl + 14 && !strcmp(t->name + len - 14, ".lora_A.weight");
		int isb = len > pl + 14 && !strcmp(t->name + len - 14, ".lora_B.weight");
		if (strncmp(t->name, AD_LORA_PREFIX, pl) != 0 || (!isa && !isb)) {
			ad_lora_free(mods, n);
			return fl_error_set(
				FL_EFORMAT,
				"%s: tensor '%s' is not a LoRA factor "
				"(peft_type \"LORA\" wants base_model.model.<module>."
				"lora_A.weight / lora_B.weight; LoRA modules_to_save are not "
				"supported)",
				st_path, fl_error_safe_str(t->name, nb, AD_NAME_MAX));
		}
		char *name = strndup(t->name + pl, len - pl - 14);
		if (!name) {
			ad_lora_free(mods, n);
			return fl_error_set(FL_ENOMEM, "out of memory");
		}
		size_t k = 0;
		while (k < n && strcmp(mods[k].name, name) != 0)
			k++;
		if (k == n)
			mods[n++].name = name;
		else
			free(name);
		if (isa)
			mods[k].a = t;
		else
			mods[k].b = t;
	}
	for (size_t k = 0; k < n; k++)
		if (!mods[k].a || !mods[k].b) {
			int e = fl_error_set(FL_ENOTFOUND,
					     "%s: module '%s' has lora_%s but no lora_%s", st_path,
					     fl_error_safe_str(mods[k].name, nb, AD_NAME_MAX),
					     mods[k].a ? "A" : "B", mods[k].a ? "B" : "A");
			ad_lora_free(mods, n);
			return e;
		}
	*out = mods;
	*nout = n;
	return FL_OK;
}

/* Every module with LoRA factors has a 2-D or 4-D weight in the base. */
static int ad_lora_check_base(const struct ad_lora_mod *mods, size_t nmods,
			      const struct fl_st *base, const char *spath, const char *base_path)
{
	char nb[AD_NAME_MAX];
	for (size_t i = 0; i < nmods; i++) {
		char wn[AD_NAME_MAX + 8];
		snprintf(wn, sizeof(wn), "%s.weight", mods[i].name);
		const struct fl_st_tensor *w = fl_st_find(base, wn);
		if (!w || (w->ndim != 2 && w->ndim != 4))
			return fl_error_set(FL_ENOTFOUND,
					    "%s has LoRA factors for module '%s' but %s "
					    "has no 2-D or 4-D '%s.weight'",
					    spath, fl_error_safe_str(mods[i].name, nb, AD_NAME_MAX),
					    base_path, mods[i].name);
	}
	return FL_OK;
}

/* The module whose weight the base tensor `name` is ("MODULE.weight"), or NULL. */
static const struct ad_lora_mod *ad_lora_find(const struct ad_lora_mod *mods, size_t nmods,
					      const char *name)
{
	size_t len = strlen(name);
	for (size_t k = 0; k < nmods; k++)
		if (len == strlen(mods[k].name) + 7 && !strncmp(name, mods[k].name, len - 7) &&
		    !strcmp(name + len - 7, ".weight"))
			return &mods[k];
	return NULL;
}

/* Merges a PEFT LoRA folder: W0 += (alpha / r) · lora_B @ lora_A per module
 * (alpha / sqrt(r) with use_rslora), r and alpha from rank_pattern /
 * alpha_pattern, else r / lora_alpha (PEFT's defaults 8 and 8). */
int fl_adapter_merge_lora(const char *base_path, const char *dir, const char *out_path,
			  struct fl_adapter_merge_stats *stats)
{
	char cpath[FL_PATH_MAX], spath[FL_PATH_MAX], nb[AD_NAME_MAX];
	snprintf(cpath, sizeof(cpath), "%s/adapter_config.json", dir);
	snprintf(spath, sizeof(spath), "%s/adapter_model.safetensors", dir);
	json_error_t je;
	char jt[sizeof(je.text)]; /* je.text without control bytes */
	json_t *cfg = json_load_file(cpath, 0, &je);
	struct fl_st *ad = NULL, *base = NULL, *out = NULL;
	struct ad_lora_mod *mods = NULL;
	size_t nmods = 0;
	struct fl_adapter_merge_stats st = {0};
	double r0, alpha0;
	int err = FL_OK;
	if (!cfg || !json_is_object(cfg)) {
		err = fl_error_set(FL_EFORMAT, "%s: %s", cpath,
				   cfg ? "not a JSON object"
				       : fl_error_safe_str(je.text, jt, sizeof(jt)));
		goto done;
	}
	if ((err = ad_lora_num(cfg, "r", cpath, 8, &r0)) ||
	    (err = ad_lora_num(cfg, "lora_alpha", cpath, 8, &alpha0)))
		goto done;
	json_t *rp = json_object_get(cfg, "rank_pattern"),
	       *ap = json_object_get(cfg, "alpha_pattern");
	int rslora = json_is_true(json_object_get(cfg, "use_rslora"));
	if (json_is_true(json_object_get(cfg, "use_dora")) ||
	    json_is_true(json_object_get(cfg, "fan_in_fan_out"))) {
		err = fl_error_set(FL_EUNSUPPORTED,
				   "%s: use_dora / fan_in_fan_out LoRA adapters "
				   "cannot be merged here",
				   cpath);
		goto done;
	}
	if ((err = fl_st_read(spath, &ad)) || (err = ad_lora_collect(ad, spath, &mods, &nmods)) ||
	    (err = fl_st_read(base_path, &base)) || (err = fl_st_new(&out)))
		goto done;
	if ((err = ad_lora_check_base(mods, nmods, base, spath, base_path)))
		goto done;
	for (size_t i = 0; i < fl_st_metadata_count(base) && !err; i++) {
		const char *v, *k = fl_st_metadata_at(base, i, &v);
		err = fl_st_set_metadata(out, k, v);
	}
	for (size_t i = 0; i < fl_st_count(base) && !err; i++) {
		const struct fl_st_tensor *t = fl_st_at(base, i);
		const struct ad_lora_mod *m = ad_lora_find(mods, nmods, t->name);
		if (!m) {
			st.copied++;
			err = fl_st_add(out, t->name, t->dtype, t->shape, t->ndim, t->data);
			continue;
		}
		json_t *rv = ad_pattern(rp, m->name), *av = ad_pattern(ap, m->name);
		double r = rv && json_is_number(rv) ? json_number_value(rv) : r0;
		double alpha = av && json_is_number(av) ? json_number_value(av) : alpha0;
		if (!(r >= 1 && r <= 1e6 && r == floor(r)) || !isfinite(alpha)) {
			err = fl_error_set(FL_EINVAL,
					   "%s: module '%s': r %g / lora_alpha %g invalid", cpath,
					   fl_error_safe_str(m->name, nb, AD_NAME_MAX), r, alpha);
			break;
		}
		double scale = alpha / (rslora ? sqrt(r) : r);
		err = ad_lora_merge_module(m, t, (long)r, scale, spath, out);
		st.merged++;
	}
	if (!err)
		err = fl_st_write(out, out_path);
	if (!err && stats)
		*stats = st;
done:
	ad_lora_free(mods, nmods);
	fl_st_free(out);
	fl_st_free(base);
	fl_st_free(ad);
	json_decref(cfg);
	return err;
}
