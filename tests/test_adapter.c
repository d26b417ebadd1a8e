/* test_adapter.c - merging PEFT LoHa adapter folders: golden cases from the
 * PyTorch reference (tests/data/adapter, regenerate with
 * tests/gen_adapter_golden.sh), base dtypes and metadata, modules_to_save,
 * every refusal (nothing written), and the inspect description. */
#include "adapter.h"
#include "errors.h"
#include "peft_config.h"
#include "safetensors.h"
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const cases[] = {"seed2", "seed3", "seed2-eff", "seed3-eff"};
#define NCASES (sizeof(cases) / sizeof(cases[0]))

static char *path2(const char *a, const char *b)
{
	static char buf[4][700];
	static int k;
	k = (k + 1) % 4;
	int n = snprintf(buf[k], sizeof(buf[k]), "%s/%s", a, b);
	FL_CHECK(n > 0 && (size_t)n < sizeof(buf[k]));
	return buf[k];
}

static char *case_dir(const char *name)
{
	static char out[600];
	int n = snprintf(out, sizeof(out), "%s/%s", fl_test_data("adapter"), name);
	FL_CHECK(n > 0 && (size_t)n < sizeof(out));
	return out;
}

static float *to_f32(const struct fl_st_tensor *t)
{
	float *x = malloc(t->numel * sizeof(float) + 1);
	FL_CHECK(x && fl_st_tensor_to_f32(t, x, t->numel) == FL_OK);
	return x;
}

static int exists(const char *p)
{
	return access(p, F_OK) == 0;
}

static void test_golden(void)
{
	const char *tmp = fl_test_tmpdir("adapter-golden");
	for (size_t c = 0; c < NCASES; c++) {
		char dir[700], out[700];
		snprintf(dir, sizeof(dir), "%s", case_dir(cases[c]));
		snprintf(out, sizeof(out), "%s/%s.safetensors", tmp, cases[c]);
		struct fl_adapter_merge_stats st = {0};
		int err = fl_adapter_merge(path2(dir, "base.safetensors"), path2(dir, "adapter"),
					   out, NULL, &st);
		FL_CHECK_MSG(err == FL_OK, "%s: %s", cases[c], fl_error_msg());
		FL_CHECK(st.merged == 3 && st.copied == 5 && st.replaced == 0);
		struct fl_st *got = NULL, *exp = NULL, *base = NULL;
		FL_CHECK(fl_st_read(out, &got) == FL_OK);
		FL_CHECK(fl_st_read(path2(dir, "expected_merged.safetensors"), &exp) == FL_OK);
		FL_CHECK(fl_st_read(path2(dir, "base.safetensors"), &base) == FL_OK);
		if (!got || !exp || !base)
			goto next;
		FL_CHECK(fl_st_count(got) == fl_st_count(exp) && fl_st_count(got) == 8);
		for (size_t i = 0; i < fl_st_count(exp); i++) {
			const struct fl_st_tensor *e = fl_st_at(exp, i),
						  *g = fl_st_find(got, e->name);
			FL_CHECK_MSG(g != NULL, "%s: %s missing", cases[c], e->name);
			if (!g)
				continue;
			FL_CHECK(g->dtype == FL_DTYPE_F32 && g->ndim == e->ndim &&
				 g->numel == e->numel);
			float *a = to_f32(g), *b = to_f32(e);
			FL_CHECK_ARRAY_NEAR(a, b, e->numel, 1e-5, 1e-6);
			free(a);
			free(b);
			/* untargeted tensors (head, every bias) are bit-identical to the base */
			int untargeted = strncmp(e->name, "head.", 5) == 0 ||
					 strstr(e->name, ".bias");
			const struct fl_st_tensor *bt = fl_st_find(base, e->name);
			if (untargeted)
				FL_CHECK_MSG(bt && bt->nbytes == g->nbytes &&
						     memcmp(bt->data, g->data, g->nbytes) == 0,
					     "%s: %s changed", cases[c], e->name);
			else /* and the merged ones really changed */
				FL_CHECK(bt && memcmp(bt->data, g->data, g->nbytes) != 0);
		}
	next:
		fl_st_free(got);
		fl_st_free(exp);
		fl_st_free(base);
	}
}

/* ---- variants of a good case ---- */

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char *buf = calloc(1, 1 << 16);
	if (buf)
		(void)fread(buf, 1, (1 << 16) - 1, f);
	fclose(f);
	return buf;
}

static void spit(const char *path, const char *text)
{
	FILE *f = fopen(path, "wb");
	FL_CHECK(f != NULL);
	if (f) {
		fputs(text, f);
		fclose(f);
	}
}

/* Replaces the first `from` in s (a 64 KiB buffer) by `to`. */
static void replace(char *s, const char *from, const char *to)
{
	char *p = strstr(s, from);
	FL_CHECK_MSG(p != NULL, "'%s' not in config", from);
	if (!p)
		return;
	memmove(p + strlen(to), p + strlen(from), strlen(p + strlen(from)) + 1);
	memcpy(p, to, strlen(to));
}

/* Extra tensor for an adapter variant. */
struct extra {
	const char *name;
	int ndim;
	int64_t shape[4];
	float fill; /* NAN for one NaN at [3] and 0.01 elsewhere */
};

/* The four LoHa factors of `module` (out x in, rank r), filled with 0.1,
 * as extra tensors; names holds their names. */
static void loha_factors(struct extra x[4], char names[4][64], const char *module, int64_t out,
			 int64_t r, int64_t in)
{
	for (int k = 0; k < 4; k++) {
		snprintf(names[k], 64, "base_model.model.%s.hada_w%d_%c", module, 1 + k / 2,
			 k % 2 ? 'b' : 'a');
		x[k] = (struct extra){names[k], 2, {k % 2 ? r : out, k % 2 ? in : r}, 0.1f};
	}
}

/* DIR/<tag>/adapter: the config of `from` after `edit` (NULL-terminated
 * from/to pairs) and its tensors except `drop`, plus `extra`. */
static const char *make_variant(const char *tag, const char *from, const char **edit,
				const char *drop, const struct extra *extra, int nextra)
{
	static char dir[700];
	snprintf(dir, sizeof(dir), "%s", fl_test_tmpdir(tag));
	char ad[760];
	snprintf(ad, sizeof(ad), "%s/adapter", dir);
	mkdir(ad, 0700);
	char *cfg = slurp(path2(case_dir(from), "adapter/adapter_config.json"));
	FL_CHECK(cfg != NULL);
	if (!cfg)
		return dir;
	for (int i = 0; edit && edit[i]; i += 2)
		replace(cfg, edit[i], edit[i + 1]);
	spit(path2(ad, "adapter_config.json"), cfg);
	free(cfg);
	struct fl_st *in = NULL, *out = NULL;
	FL_CHECK(fl_st_read(path2(case_dir(from), "adapter/adapter_model.safetensors"), &in) ==
		 FL_OK);
	FL_CHECK(fl_st_new(&out) == FL_OK);
	for (size_t i = 0; in && out && i < fl_st_count(in); i++) {
		const struct fl_st_tensor *t = fl_st_at(in, i);
		if (!drop || strcmp(t->name, drop) != 0)
			FL_CHECK(fl_st_add(out, t->name, t->dtype, t->shape, t->ndim, t->data) ==
				 FL_OK);
	}
	for (int i = 0; out && i < nextra; i++) {
		size_t n = 1;
		for (int k = 0; k < extra[i].ndim; k++)
			n *= (size_t)extra[i].shape[k];
		float *x = malloc(n * sizeof(float));
		for (size_t k = 0; x && k < n; k++)
			x[k] = isnan(extra[i].fill) ? (k == 3 ? NAN : 0.01f) : extra[i].fill;
		FL_CHECK(fl_st_add_f32(out, extra[i].name, extra[i].shape, extra[i].ndim, x) ==
			 FL_OK);
		free(x);
	}
	FL_CHECK(out && fl_st_set_metadata(out, "format", "pt") == FL_OK);
	FL_CHECK(out && fl_st_write(out, path2(ad, "adapter_model.safetensors")) == FL_OK);
	fl_st_free(in);
	fl_st_free(out);
	return dir;
}

/* Merging the variant fails with `err`, a message containing `needle`, and
 * no output file. */
static void expect_refusal(const char *dir, const char *from, int err, const char *needle)
{
	char out[760];
	snprintf(out, sizeof(out), "%s/merged.safetensors", dir);
	int got = fl_adapter_merge(path2(case_dir(from), "base.safetensors"), path2(dir, "adapter"),
				   out, NULL, NULL);
	FL_CHECK_MSG(got == err, "%s: got %d want %d (%s)", dir, got, err, fl_error_msg());
	FL_CHECK_MSG(strstr(fl_error_msg(), needle) != NULL, "message '%s' lacks '%s'",
		     fl_error_msg(), needle);
	FL_CHECK(strchr(fl_error_msg(), '\n') == NULL);
	FL_CHECK(!exists(out));
}

static void test_refusals(void)
{
	const char *fc1 = "base_model.model.fc1.";
	char n1[128], n2[128];
	/* seed2: fc1 (78, 46), r 5; block.0.fc2 r 7; conv1 (12, 6, 3, 3) reshape */
	snprintf(n1, sizeof(n1), "%shada_w1_a", fc1);
	struct extra wrong = {n1, 2, {78, 6}, 0.01f};
	expect_refusal(make_variant("ad-shape", "seed2", NULL, n1, &wrong, 1), "seed2", FL_ESHAPE,
		       "hada_w1_a' has shape [78, 6], expected [78, 5]");
	snprintf(n2, sizeof(n2), "%shada_w2_b", fc1);
	struct extra nan = {n2, 2, {5, 46}, NAN};
	expect_refusal(make_variant("ad-nan", "seed2", NULL, n2, &nan, 1), "seed2", FL_ENONFINITE,
		       "non-finite");
	expect_refusal(make_variant("ad-missing", "seed2", NULL, n2, NULL, 0), "seed2",
		       FL_ENOTFOUND, "factor hada_w2_b is missing");
	struct extra fx[4];
	char names[4][64];
	loha_factors(fx, names, "ghost", 4, 5, 4);
	expect_refusal(make_variant("ad-ghost", "seed2", NULL, NULL, fx, 4), "seed2", FL_ENOTFOUND,
		       "no tensor 'ghost.weight'");
	loha_factors(fx, names, "head", 10, 5, 17);
	expect_refusal(make_variant("ad-untargeted", "seed2", NULL, NULL, fx, 4), "seed2",
		       FL_EINVAL, "module 'head', which the config does not target");
	const char *tgt_head[] = {"\"conv1\"\n", "\"conv1\", \"head\"\n", NULL};
	expect_refusal(make_variant("ad-nofactors", "seed2", tgt_head, NULL, NULL, 0), "seed2",
		       FL_ENOTFOUND, "module 'head' is targeted");
	struct extra save = {"base_model.model.head.weight", 2, {10, 17}, 0.5f};
	expect_refusal(make_variant("ad-notsaved", "seed2", NULL, NULL, &save, 1), "seed2",
		       FL_EFORMAT, "modules_to_save");
	const char *save_head[] = {"\"modules_to_save\": null", "\"modules_to_save\": [\"head\"]",
				   NULL};
	struct extra save_bad = {"base_model.model.head.weight", 2, {10, 18}, 0.5f};
	expect_refusal(make_variant("ad-savedshape", "seed2", save_head, NULL, &save_bad, 1),
		       "seed2", FL_ESHAPE, "modules_to_save tensor");
	const char *lora[] = {"\"LOHA\"", "\"LORA\"", NULL};
	/* a LORA config over LoHa factors: merged as LoRA, which they are not */
	expect_refusal(make_variant("ad-lora", "seed2", lora, NULL, NULL, 0), "seed2", FL_EFORMAT,
		       "is not a LoRA factor (peft_type \"LORA\" wants");
	const char *badr[] = {"\"r\": 5", "\"r\": 6", NULL};
	expect_refusal(make_variant("ad-rank", "seed2", badr, NULL, NULL, 0), "seed2", FL_ESHAPE,
		       "expected [12, 6] (weight 12x6x3x3, r = 6 for 'conv1'");
	const char *badjson[] = {"\"r\": 5,", "\"r\": 5,,", NULL};
	expect_refusal(make_variant("ad-json", "seed2", badjson, NULL, NULL, 0), "seed2",
		       FL_EFORMAT, "adapter_config.json:");
	/* Tucker factors while the config says reshape form, and the reverse */
	const char *noeff[] = {"\"use_effective_conv2d\": true", "\"use_effective_conv2d\": false",
			       NULL};
	expect_refusal(make_variant("ad-noeff", "seed2-eff", noeff, NULL, NULL, 0), "seed2-eff",
		       FL_ESHAPE, "conv1.hada_w1_a");
	const char *eff[] = {"\"use_effective_conv2d\": false", "\"use_effective_conv2d\": true",
			     NULL};
	expect_refusal(make_variant("ad-eff", "seed2", eff, NULL, NULL, 0), "seed2", FL_ESHAPE,
		       "conv1.hada_w1_a");
	/* missing files */
	const char *dir = make_variant("ad-nofile", "seed2", NULL, NULL, NULL, 0);
	unlink(path2(dir, "adapter/adapter_model.safetensors"));
	expect_refusal(dir, "seed2", FL_ENOTFOUND, "adapter_model.safetensors");
	spit(path2(dir, "adapter/adapter_model.bin"), "pickle");
	expect_refusal(dir, "seed2", FL_EUNSUPPORTED, "safe_serialization");
	unlink(path2(dir, "adapter/adapter_config.json"));
	expect_refusal(dir, "seed2", FL_ENOTFOUND, "adapter_config.json");
	expect_refusal(path2(dir, "nothere"), "seed2", FL_ENOTFOUND, "no such adapter folder");
	int err = fl_adapter_merge("/nonexistent/base.safetensors",
				   path2(case_dir("seed2"), "adapter"), path2(dir, "x.safetensors"),
				   NULL, NULL);
	FL_CHECK(err != FL_OK && strstr(fl_error_msg(), "/nonexistent/base.safetensors"));
}

static void test_modules_to_save(void)
{
	const char *save_head[] = {"\"modules_to_save\": null", "\"modules_to_save\": [\"head\"]",
				   NULL};
	struct extra save = {"base_model.model.head.weight", 2, {10, 17}, 0.5f};
	const char *dir = make_variant("ad-saved", "seed2", save_head, NULL, &save, 1);
	const char *out = path2(dir, "merged.safetensors");
	struct fl_adapter_merge_stats st;
	int err = fl_adapter_merge(path2(case_dir("seed2"), "base.safetensors"),
				   path2(dir, "adapter"), out, NULL, &st);
	FL_CHECK_MSG(err == FL_OK, "%s", fl_error_msg());
	FL_CHECK(st.merged == 3 && st.replaced == 1 && st.copied == 4);
	struct fl_st *got = NULL;
	FL_CHECK(fl_st_read(out, &got) == FL_OK);
	const struct fl_st_tensor *h = got ? fl_st_find(got, "head.weight") : NULL;
	FL_CHECK(h && h->numel == 170);
	if (h) {
		float *x = to_f32(h);
		float half[170];
		for (int i = 0; i < 170; i++)
			half[i] = 0.5f;
		FL_CHECK_ARRAY_NEAR(x, half, 170, 0, 0);
		free(x);
	}
	fl_st_free(got);
}

/* IEEE half of a value exactly representable in it (normal range). */
static uint16_t half_exact(float v)
{
	if (v == 0)
		return 0;
	int e = 0;
	float m = frexpf(fabsf(v), &e); /* v = m 2^e, m in [0.5, 1) */
	uint16_t bits = (uint16_t)(((e - 1 + 15) << 10) | (uint16_t)((m * 2 - 1) * 1024));
	return (uint16_t)(v < 0 ? bits | 0x8000 : bits);
}

/* A base for seed2 whose fc1.weight holds values exact in every float type,
 * stored as `dtype`, with metadata. */
static void write_base(const char *path, enum fl_dtype dtype, int poison)
{
	struct fl_st *in = NULL, *out = NULL;
	FL_CHECK(fl_st_read(path2(case_dir("seed2"), "base.safetensors"), &in) == FL_OK);
	FL_CHECK(fl_st_new(&out) == FL_OK);
	for (size_t i = 0; in && out && i < fl_st_count(in); i++) {
		const struct fl_st_tensor *t = fl_st_at(in, i);
		if (strcmp(t->name, "fc1.weight") != 0) {
			FL_CHECK(fl_st_add(out, t->name, t->dtype, t->shape, t->ndim, t->data) ==
				 FL_OK);
			continue;
		}
		size_t n = t->numel;
		unsigned char *buf = malloc(n * 8);
		for (size_t k = 0; buf && k < n; k++) {
			float v = (float)((int)(k % 61) - 30) / 256.0f;
			if (poison && k == 5)
				v = NAN;
			uint32_t u;
			memcpy(&u, &v, 4);
			uint16_t h = dtype == FL_DTYPE_F16 ? half_exact(v) : (uint16_t)(u >> 16);
			double d = v;
			if (dtype == FL_DTYPE_F32)
				memcpy(buf + 4 * k, &v, 4);
			else if (dtype == FL_DTYPE_F64)
				memcpy(buf + 8 * k, &d, 8);
			else
				memcpy(buf + 2 * k, &h, 2);
		}
		FL_CHECK(fl_st_add(out, t->name, dtype, t->shape, t->ndim, buf) == FL_OK);
		free(buf);
	}
	FL_CHECK(fl_st_set_metadata(out, "format", "pt") == FL_OK);
	FL_CHECK(fl_st_set_metadata(out, "origin", "test_adapter") == FL_OK);
	FL_CHECK(fl_st_write(out, path) == FL_OK);
	fl_st_free(in);
	fl_st_free(out);
}

static void test_dtypes(void)
{
	const char *tmp = fl_test_tmpdir("adapter-dtype");
	char ad[700];
	snprintf(ad, sizeof(ad), "%s", path2(case_dir("seed2"), "adapter"));
	static const enum fl_dtype types[] = {FL_DTYPE_F32, FL_DTYPE_F64, FL_DTYPE_F16,
					      FL_DTYPE_BF16};
	/* round-to-nearest: within half an ulp (2^-11 for F16, 2^-8 for BF16) */
	static const double tol[] = {0, 1e-6, 1.0 / 2048, 1.0 / 256};
	float *ref = NULL;
	for (int i = 0; i < 4; i++) {
		char base[760], out[760];
		snprintf(base, sizeof(base), "%s/base-%s.safetensors", tmp,
			 fl_dtype_name(types[i]));
		snprintf(out, sizeof(out), "%s/out-%s.safetensors", tmp, fl_dtype_name(types[i]));
		write_base(base, types[i], 0);
		int err = fl_adapter_merge(base, ad, out, NULL, NULL);
		FL_CHECK_MSG(err == FL_OK, "%s: %s", fl_dtype_name(types[i]), fl_error_msg());
		struct fl_st *got = NULL;
		FL_CHECK(fl_st_read(out, &got) == FL_OK);
		if (!got)
			continue;
		const char *v = fl_st_metadata(got, "origin");
		FL_CHECK(v && strcmp(v, "test_adapter") == 0);
		const struct fl_st_tensor *t = fl_st_find(got, "fc1.weight");
		FL_CHECK(t && t->dtype == types[i] && t->numel == 78 * 46);
		if (t) {
			float *x = to_f32(t);
			if (i == 0)
				ref = x; /* the float32 merge is the reference */
			else {
				FL_CHECK_ARRAY_NEAR(x, ref, t->numel, tol[i], 1e-6);
				free(x);
			}
		}
		fl_st_free(got);
	}
	free(ref);
	/* a non-finite base value refuses the merge */
	char base[760], out[760];
	snprintf(base, sizeof(base), "%s/base-nan.safetensors", tmp);
	snprintf(out, sizeof(out), "%s/out-nan.safetensors", tmp);
	write_base(base, FL_DTYPE_F32, 1);
	FL_CHECK(fl_adapter_merge(base, ad, out, NULL, NULL) == FL_ENONFINITE);
	FL_CHECK(!exists(out));
}

/* A 1x1 conv under use_effective_conv2d keeps the reshape form (as PEFT);
 * the delta is checked against a direct loop. */
static void test_pointwise_conv(void)
{
	const char *dir = fl_test_tmpdir("adapter-1x1");
	char ad[700], base[700], out[700];
	snprintf(ad, sizeof(ad), "%s/adapter", dir);
	snprintf(base, sizeof(base), "%s/base.safetensors", dir);
	snprintf(out, sizeof(out), "%s/out.safetensors", dir);
	mkdir(ad, 0700);
	spit(path2(ad, "adapter_config.json"),
	     "{\"peft_type\": \"LOHA\", \"r\": 2, \"alpha\": 3, \"use_effective_conv2d\": true,"
	     " \"target_modules\": [\"pw\"]}");
	float w0[12], a1[8], b1[6], a2[8], b2[6];
	fl_test_fill_uniform(w0, 12, 1, -1, 1);
	fl_test_fill_uniform(a1, 8, 2, -1, 1);
	fl_test_fill_uniform(b1, 6, 3, -1, 1);
	fl_test_fill_uniform(a2, 8, 4, -1, 1);
	fl_test_fill_uniform(b2, 6, 5, -1, 1);
	struct fl_st *st = NULL;
	int64_t ws[4] = {4, 3, 1, 1}, sa[2] = {4, 2}, sb[2] = {2, 3};
	FL_CHECK(fl_st_new(&st) == FL_OK);
	FL_CHECK(fl_st_add_f32(st, "pw.weight", ws, 4, w0) == FL_OK);
	FL_CHECK(fl_st_write(st, base) == FL_OK);
	fl_st_free(st);
	FL_CHECK(fl_st_new(&st) == FL_OK);
	FL_CHECK(fl_st_add_f32(st, "base_model.model.pw.hada_w1_a", sa, 2, a1) == FL_OK);
	FL_CHECK(fl_st_add_f32(st, "base_model.model.pw.hada_w1_b", sb, 2, b1) == FL_OK);
	FL_CHECK(fl_st_add_f32(st, "base_model.model.pw.hada_w2_a", sa, 2, a2) == FL_OK);
	FL_CHECK(fl_st_add_f32(st, "base_model.model.pw.hada_w2_b", sb, 2, b2) == FL_OK);
	FL_CHECK(fl_st_write(st, path2(ad, "adapter_model.safetensors")) == FL_OK);
	fl_st_free(st);
	int err = fl_adapter_merge(base, ad, out, NULL, NULL);
	FL_CHECK_MSG(err == FL_OK, "%s", fl_error_msg());
	float want[12];
	for (int o = 0; o < 4; o++)
		for (int i = 0; i < 3; i++) {
			double p1 = 0, p2 = 0;
			for (int k = 0; k < 2; k++) {
				p1 += (double)a1[o * 2 + k] * b1[k * 3 + i];
				p2 += (double)a2[o * 2 + k] * b2[k * 3 + i];
			}
			want[o * 3 + i] = (float)(w0[o * 3 + i] + p1 * p2 * 1.5);
		}
	FL_CHECK(fl_st_read(out, &st) == FL_OK);
	const struct fl_st_tensor *t = st ? fl_st_find(st, "pw.weight") : NULL;
	FL_CHECK(t && t->ndim == 4 && t->numel == 12);
	if (t) {
		float *x = to_f32(t);
		FL_CHECK_ARRAY_NEAR(x, want, 12, 1e-6, 1e-6);
		free(x);
	}
	fl_st_free(st);
}

static void test_inspect(void)
{
	struct fl_adapter_info *info = NULL;
	struct fl_peft_config *cfg = NULL;
	const char *dir = case_dir("seed2-eff");
	FL_CHECK(fl_peft_config_read(path2(dir, "adapter/adapter_config.json"), &cfg) == FL_OK);
	FL_CHECK(fl_adapter_info_read(path2(dir, "adapter"), NULL, &info) == FL_OK);
	if (!info || !cfg)
		goto done;
	FL_CHECK(info->n_modules == 3);
	size_t fsum = 0;
	for (size_t i = 0; i < info->n_modules; i++) {
		const struct fl_adapter_module *m = &info->modules[i];
		const struct fl_loha_dims *d = &m->dims;
		FL_CHECK(d->r == fl_peft_config_rank(cfg, m->name));
		FL_CHECK_NEAR(m->scale, fl_peft_config_alpha(cfg, m->name) / d->r, 1e-12, 0);
		if (strcmp(m->name, "conv1") == 0) {
			FL_CHECK(m->form == FL_ADAPTER_FORM_CONV_TUCKER);
			FL_CHECK(d->out == 12 && d->in == 6 && d->k1 == 3 && d->k2 == 3 &&
				 d->r == 5);
			FL_CHECK(m->factor_params == (size_t)(2 * 5 * (12 + 6 + 5 * 9)));
			FL_CHECK(m->dense_params == 12 * 6 * 9 && m->rank_bound == 12);
			FL_CHECK_NEAR(m->scale, 1.5 / 5, 1e-12, 0);
		} else if (strcmp(m->name, "fc1") == 0) {
			FL_CHECK(m->form == FL_ADAPTER_FORM_LINEAR);
			FL_CHECK(d->out == 78 && d->in == 46 && d->r == 5);
			FL_CHECK(m->factor_params == 2 * 5 * (78 + 46) && m->rank_bound == 25);
		} else {
			FL_CHECK(strcmp(m->name, "block.0.fc2") == 0 && d->r == 7);
			FL_CHECK(m->rank_bound == 8);
		}
		fsum += m->factor_params;
	}
	FL_CHECK(info->factor_params == fsum && info->saved_tensors == 0);
	fl_adapter_info_free(info);
	info = NULL;
	/* reshape conv: linear-looking without the base, conv-reshape with it */
	dir = case_dir("seed2");
	FL_CHECK(fl_adapter_info_read(path2(dir, "adapter"), NULL, &info) == FL_OK);
	for (size_t i = 0; info && i < info->n_modules; i++)
		if (strcmp(info->modules[i].name, "conv1") == 0)
			FL_CHECK(info->modules[i].form == FL_ADAPTER_FORM_LINEAR &&
				 info->modules[i].dims.in == 54);
	fl_adapter_info_free(info);
	info = NULL;
	FL_CHECK(fl_adapter_info_read(path2(dir, "adapter"), path2(dir, "base.safetensors"),
				      &info) == FL_OK);
	for (size_t i = 0; info && i < info->n_modules; i++)
		if (strcmp(info->modules[i].name, "conv1") == 0)
			FL_CHECK(info->modules[i].form == FL_ADAPTER_FORM_CONV_RESHAPE &&
				 info->modules[i].dims.in == 6 && info->modules[i].dims.k1 == 3);

	/* the printed forms */
	for (int json = 0; json < 2; json++) {
		FILE *f = tmpfile();
		FL_CHECK(f && fl_adapter_inspect(path2(dir, "adapter"), NULL, json, f) == FL_OK);
		if (!f)
			continue;
		rewind(f);
		char line[512];
		int lines = 0, total = 0;
		while (fgets(line, sizeof(line), f)) {
			lines++;
			if (!json) {
				total += strncmp(line, "total: 3 modules", 16) == 0;
				continue;
			}
			json_error_t je;
			json_t *o = json_loads(line, 0, &je);
			FL_CHECK_MSG(o != NULL, "bad JSON line: %s", line);
			if (json_is_true(json_object_get(o, "total")))
				total++;
			else
				FL_CHECK(json_is_string(json_object_get(o, "form")) &&
					 json_is_integer(json_object_get(o, "rank_bound")) &&
					 json_is_number(json_object_get(o, "scale")));
			json_decref(o);
		}
		FL_CHECK(lines == (json ? 4 : 6) && total == 1); /* table: + the formula line */
		fclose(f);
	}
done:
	fl_adapter_info_free(info);
	fl_peft_config_free(cfg);
}

int main(void)
{
	FL_RUN(test_golden);
	FL_RUN(test_refusals);
	FL_RUN(test_modules_to_save);
	FL_RUN(test_dtypes);
	FL_RUN(test_pointwise_conv);
	FL_RUN(test_inspect);
	return fl_test_main_end();
}
