/* checkpoint.c - saving and restoring the coordinator state as one
 * safetensors file (see checkpoint.h). Validation happens in full before
 * the model or the optimiser are touched. No networking, no policy. */
#include "checkpoint.h"

#include "errors.h"
#include "model_desc.h"
#include "safetensors.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OPT_M_NAME "server_opt.m"
#define OPT_V_NAME "server_opt.v"

/* Hex SHA-256 of the model's tensor table (name, shape, flags of every
 * tensor, in table order). */
static void srv_checkpoint_model_digest(const struct fl_model *m,
					char out[SRV_CHECKPOINT_DIGEST_HEX])
{
	crypto_hash_sha256_state st;
	crypto_hash_sha256_init(&st);
	char line[FL_MODEL_NAME_MAX + 160];
	size_t n = fl_model_tensor_count(m);
	for (size_t i = 0; i < n; i++) {
		const struct fl_model_tensor *t = fl_model_tensor_at(m, i);
		int k = snprintf(line, sizeof(line), "%s|%d|", t->name, t->ndim);
		for (int d = 0; d < t->ndim; d++)
			k += snprintf(line + k, sizeof(line) - (size_t)k, "%" PRId64 ",",
				      t->shape[d]);
		k += snprintf(line + k, sizeof(line) - (size_t)k, "|%u\n", t->flags);
		crypto_hash_sha256_update(&st, (const unsigned char *)line, (unsigned long long)k);
	}
	unsigned char h[crypto_hash_sha256_BYTES];
	crypto_hash_sha256_final(&st, h);
	sodium_bin2hex(out, SRV_CHECKPOINT_DIGEST_HEX, h, sizeof(h));
}

/* Hex SHA-256 of the model's description text ("" when it has none). */
static void desc_digest(const struct fl_model *m, char out[SRV_CHECKPOINT_DIGEST_HEX])
{
	const struct fl_model_desc *d = fl_model_description(m);
	out[0] = '\0';
	if (!d || !d->text)
		return;
	unsigned char h[crypto_hash_sha256_BYTES];
	crypto_hash_sha256(h, (const unsigned char *)d->text, d->text_len);
	sodium_bin2hex(out, SRV_CHECKPOINT_DIGEST_HEX, h, sizeof(h));
}

/* The description the model was built from: its text, label and SHA-256. */
static int set_desc(struct fl_st *st, const struct fl_model *m)
{
	const struct fl_model_desc *d = fl_model_description(m);
	char hex[SRV_CHECKPOINT_DIGEST_HEX];
	desc_digest(m, hex);
	if (!hex[0])
		return FL_OK;
	int err = fl_st_set_metadata(st, "model", d->text);
	if (err == FL_OK)
		err = fl_st_set_metadata(st, "model_label", d->label);
	if (err == FL_OK)
		err = fl_st_set_metadata(st, "model_sha256", hex);
	return err;
}

/* A checkpoint that records a description must be of m's description
 * (one without, from before descriptions were recorded, is judged by its
 * tensor table alone). */
static int check_desc(const struct fl_st *st, const char *path, const struct fl_model *m)
{
	const char *want = fl_st_metadata(st, "model_sha256");
	char hex[SRV_CHECKPOINT_DIGEST_HEX];
	desc_digest(m, hex);
	if (!want || !strcmp(want, hex))
		return FL_OK;
	const char *label = fl_st_metadata(st, "model_label");
	const struct fl_model_desc *d = fl_model_description(m);
	return fl_error_set(FL_EINVAL,
			    "%s: checkpoint was written for model description '%s' (sha256 "
			    "%.12s...), this coordinator runs '%s' (sha256 %.12s...)",
			    path, label ? label : "?", want, d ? d->label : "?", hex);
}

static int set_u64(struct fl_st *st, const char *key, uint64_t v)
{
	char buf[32];
	snprintf(buf, sizeof(buf), "%" PRIu64, v);
	return fl_st_set_metadata(st, key, buf);
}

int srv_checkpoint_save(const char *path, struct fl_model *m, const struct srv_optim *opt,
			const struct srv_checkpoint_meta *meta)
{
	struct fl_st *st = NULL;
	int err = fl_st_new(&st);
	if (err != FL_OK)
		return err;
	const float *params = fl_model_params(m);
	size_t n = fl_model_tensor_count(m);
	for (size_t i = 0; i < n && err == FL_OK; i++) {
		const struct fl_model_tensor *t = fl_model_tensor_at(m, i);
		if (t->flags & FL_TENSOR_GLOBAL)
			err = fl_st_add_f32(st, t->name, t->shape, t->ndim, params + t->offset);
	}
	const float *om = NULL, *ov = NULL;
	size_t on = 0;
	uint64_t step = 0;
	if (opt)
		srv_optim_state(opt, &om, &ov, &on, &step);
	int64_t shape1[1] = {(int64_t)on};
	if (err == FL_OK && om)
		err = fl_st_add_f32(st, OPT_M_NAME, shape1, 1, om);
	if (err == FL_OK && ov)
		err = fl_st_add_f32(st, OPT_V_NAME, shape1, 1, ov);
	char digest[SRV_CHECKPOINT_DIGEST_HEX];
	srv_checkpoint_model_digest(m, digest);
	if (err == FL_OK)
		err = fl_st_set_metadata(st, "format", SRV_CHECKPOINT_FORMAT);
	if (err == FL_OK)
		err = fl_st_set_metadata(st, "version", SRV_CHECKPOINT_VERSION);
	if (err == FL_OK)
		err = set_u64(st, "round", meta->round);
	if (err == FL_OK)
		err = set_u64(st, "step", step);
	if (err == FL_OK)
		err = set_u64(st, "bytes_up", meta->bytes_up);
	if (err == FL_OK)
		err = set_u64(st, "bytes_down", meta->bytes_down);
	if (err == FL_OK)
		err = set_u64(st, "seed", meta->seed);
	if (err == FL_OK)
		err = fl_st_set_metadata(st, "server_opt",
					 srv_optim_name(opt ? opt->cfg.kind : SRV_OPTIM_FEDAVG));
	if (err == FL_OK)
		err = fl_st_set_metadata(st, "model_digest", digest);
	if (err == FL_OK)
		err = set_desc(st, m);
	if (err == FL_OK)
		err = fl_st_write(st, path);
	fl_st_free(st);
	return err;
}

static int get_u64(const struct fl_st *st, const char *path, const char *key, uint64_t *out)
{
	const char *s = fl_st_metadata(st, key);
	if (!s)
		return fl_error_set(FL_EFORMAT, "%s: checkpoint metadata lacks \"%s\"", path, key);
	if (*s < '0' || *s > '9')
		return fl_error_set(FL_EFORMAT,
				    "%s: checkpoint metadata \"%s\" = \"%s\" is not a count", path,
				    key, s);
	char *end = NULL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || !end || *end)
		return fl_error_set(FL_EFORMAT,
				    "%s: checkpoint metadata \"%s\" = \"%s\" is not a count", path,
				    key, s);
	*out = (uint64_t)v;
	return FL_OK;
}

static int check_meta_str(const struct fl_st *st, const char *path, const char *key,
			  const char *want)
{
	const char *s = fl_st_metadata(st, key);
	if (!s)
		return fl_error_set(FL_EFORMAT, "%s: checkpoint metadata lacks \"%s\"", path, key);
	if (strcmp(s, want) != 0)
		return fl_error_set(FL_EINVAL, "%s: checkpoint %s is \"%s\", expected \"%s\"", path,
				    key, s, want);
	return FL_OK;
}

/* A finite F32 tensor of exactly `numel` elements and the given shape,
 * converted into dst. */
static int read_f32(const struct fl_st *st, const char *path, const char *name, int ndim,
		    const int64_t *shape, size_t numel, float *dst)
{
	const struct fl_st_tensor *t = fl_st_find(st, name);
	if (!t)
		return fl_error_set(FL_ENOTFOUND, "%s: checkpoint lacks tensor %s", path, name);
	if (t->dtype != FL_DTYPE_F32)
		return fl_error_set(FL_EFORMAT, "%s: checkpoint tensor %s is %s, expected F32",
				    path, name, fl_dtype_name(t->dtype));
	int same = t->ndim == ndim && t->numel == numel;
	for (int d = 0; same && d < ndim; d++)
		same = t->shape[d] == shape[d];
	if (!same)
		return fl_error_set(FL_ESHAPE,
				    "%s: checkpoint tensor %s has another shape than the model's",
				    path, name);
	int err = fl_st_tensor_to_f32(t, dst, numel);
	if (err != FL_OK)
		return err;
	for (size_t i = 0; i < numel; i++)
		if (!isfinite(dst[i]))
			return fl_error_set(FL_ENONFINITE,
					    "%s: checkpoint tensor %s has a non-finite value", path,
					    name);
	return FL_OK;
}

/* The metadata: format, version, the model's digest, the server
 * optimiser, the counters, and the seed when one is expected. */
static int load_meta(const struct fl_st *st, const char *path, const struct fl_model *m,
		     const struct srv_optim *opt, const uint64_t *expect_seed,
		     struct srv_checkpoint_meta *mt)
{
	char digest[SRV_CHECKPOINT_DIGEST_HEX];
	srv_checkpoint_model_digest(m, digest);
	int err;
	if ((err = check_meta_str(st, path, "format", SRV_CHECKPOINT_FORMAT)) != FL_OK ||
	    (err = check_meta_str(st, path, "version", SRV_CHECKPOINT_VERSION)) != FL_OK)
		return err;
	const char *d = fl_st_metadata(st, "model_digest");
	if (!d)
		return fl_error_set(FL_EFORMAT, "%s: checkpoint metadata lacks \"model_digest\"",
				    path);
	if (strcmp(d, digest) != 0)
		return fl_error_set(FL_EINVAL,
				    "%s: checkpoint was written for another model or configuration "
				    "(tensor table digest %.12s..., this model %.12s...)",
				    path, d, digest);
	if ((err = check_desc(st, path, m)) != FL_OK)
		return err;
	enum srv_optim_kind kind = opt ? opt->cfg.kind : SRV_OPTIM_FEDAVG;
	if ((err = check_meta_str(st, path, "server_opt", srv_optim_name(kind))) != FL_OK ||
	    (err = get_u64(st, path, "round", &mt->round)) != FL_OK ||
	    (err = get_u64(st, path, "step", &mt->step)) != FL_OK ||
	    (err = get_u64(st, path, "bytes_up", &mt->bytes_up)) != FL_OK ||
	    (err = get_u64(st, path, "bytes_down", &mt->bytes_down)) != FL_OK ||
	    (err = get_u64(st, path, "seed", &mt->seed)) != FL_OK)
		return err;
	if (expect_seed && mt->seed != *expect_seed)
		return fl_error_set(
			FL_EINVAL, "%s: checkpoint seed %llu differs from the configured %llu",
			path, (unsigned long long)mt->seed, (unsigned long long)*expect_seed);
	return FL_OK;
}

/* Every GLOBAL tensor of m into slice (the global slice's layout);
 * *count += the tensors read. */
static int load_global(const struct fl_st *st, const char *path, const struct fl_model *m,
		       size_t nglobal, float *slice, size_t *count)
{
	size_t nt = fl_model_tensor_count(m);
	for (size_t i = 0; i < nt; i++) {
		const struct fl_model_tensor *t = fl_model_tensor_at(m, i);
		if (!(t->flags & FL_TENSOR_GLOBAL))
			continue;
		/* GLOBAL tensors are the slice [0, nglobal) of the buffer. */
		if (t->offset + t->numel > nglobal)
			return fl_error_set(FL_EINVAL,
					    "model: GLOBAL tensor %s outside the global slice",
					    t->name);
		int err = read_f32(st, path, t->name, t->ndim, t->shape, t->numel,
				   slice + t->offset);
		if (err != FL_OK)
			return err;
		(*count)++;
	}
	return FL_OK;
}

/* One optimiser state vector of n floats into a new *out; *count += 1. */
static int load_state(const struct fl_st *st, const char *path, const char *name, size_t n,
		      float **out, size_t *count)
{
	int64_t shape1[1] = {(int64_t)n};
	if (!(*out = malloc((n ? n : 1) * sizeof(float))))
		return fl_error_set(FL_ENOMEM, "%s: out of memory", path);
	int err = read_f32(st, path, name, 1, shape1, n, *out);
	if (err == FL_OK)
		(*count)++;
	return err;
}

/* The file holds exactly the expected tensors: names the first unknown
 * one, else the count. */
static int check_no_extra(const struct fl_st *st, const char *path, const struct fl_model *m,
			  int has_m, int has_v, size_t expected)
{
	if (fl_st_count(st) == expected)
		return FL_OK;
	for (size_t i = 0; i < fl_st_count(st); i++) {
		const char *name = fl_st_at(st, i)->name;
		const struct fl_model_tensor *t = fl_model_tensor_find(m, name);
		int known = (t && (t->flags & FL_TENSOR_GLOBAL)) ||
			    (has_m && strcmp(name, OPT_M_NAME) == 0) ||
			    (has_v && strcmp(name, OPT_V_NAME) == 0);
		if (!known)
			return fl_error_set(FL_EFORMAT, "%s: checkpoint has unexpected tensor %s",
					    path, name);
	}
	return fl_error_set(FL_EFORMAT, "%s: checkpoint holds %zu tensors, expected %zu", path,
			    fl_st_count(st), expected);
}

int srv_checkpoint_load(const char *path, struct fl_model *m, struct srv_optim *opt,
			const uint64_t *expect_seed, struct srv_checkpoint_meta *meta)
{
	struct fl_st *st = NULL;
	float *slice = NULL, *om = NULL, *ov = NULL;
	int err = fl_st_read(path, &st);
	if (err != FL_OK)
		return err;
	struct srv_checkpoint_meta mt = {0};
	if ((err = load_meta(st, path, m, opt, expect_seed, &mt)) != FL_OK)
		goto done;
	size_t nglobal = fl_model_count_floats(m, FL_TENSOR_GLOBAL);
	slice = malloc((nglobal ? nglobal : 1) * sizeof(float));
	if (!slice) {
		err = fl_error_set(FL_ENOMEM, "%s: out of memory", path);
		goto done;
	}
	size_t expected = 0;
	if ((err = load_global(st, path, m, nglobal, slice, &expected)) != FL_OK)
		goto done;
	const float *cm = NULL, *cv = NULL;
	size_t on = 0;
	if (opt)
		srv_optim_state(opt, &cm, &cv, &on, NULL);
	if ((cm && (err = load_state(st, path, OPT_M_NAME, on, &om, &expected)) != FL_OK) ||
	    (cv && (err = load_state(st, path, OPT_V_NAME, on, &ov, &expected)) != FL_OK) ||
	    (err = check_no_extra(st, path, m, cm != NULL, cv != NULL, expected)) != FL_OK)
		goto done;
	if (opt && (err = srv_optim_restore(opt, om, ov, on, mt.step)) != FL_OK)
		goto done;
	if (nglobal)
		memcpy(fl_model_params(m), slice, nglobal * sizeof(float));
	fl_model_params_changed(m);
	*meta = mt;
done:
	free(slice);
	free(om);
	free(ov);
	fl_st_free(st);
	return err;
}
