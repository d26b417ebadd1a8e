/* test_checkpoint.c - coordinator checkpoints: bit-exact round trip of the
 * global slice and the server optimiser state, metadata, and refusals that
 * leave the model and the optimiser untouched (another model, another
 * strategy, another seed, a non-finite value, an extra tensor, a missing
 * file, another model description with the same tensors). */
#include "checkpoint.h"
#include "errors.h"
#include "model_desc.h"
#include "safetensors.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct fl_model *model(int classes, uint64_t seed)
{
	struct fl_model *m = NULL;
	FL_CHECK(fl_model_new("mlp", 1, 2, 2, classes, NULL, seed, 1, &m) == FL_OK);
	return m;
}

static void opt_init(struct srv_optim *o, enum srv_optim_kind k, size_t n)
{
	struct srv_optim_config c;
	srv_optim_config_default(&c, k);
	FL_CHECK(srv_optim_init(o, &c, n) == FL_OK);
}

static void test_roundtrip(void)
{
	const char *dir = fl_test_tmpdir("ckpt");
	char path[600];
	snprintf(path, sizeof(path), "%s/state.safetensors", dir);
	struct fl_model *a = model(3, 1), *b = model(3, 2);
	size_t n = fl_model_count_floats(a, FL_TENSOR_GLOBAL);
	struct srv_optim oa, ob;
	opt_init(&oa, SRV_OPTIM_FEDYOGI, n);
	opt_init(&ob, SRV_OPTIM_FEDYOGI, n);
	float *y = malloc(n * sizeof(float));
	fl_test_fill_uniform(y, n, 9, -1, 1);
	FL_CHECK(srv_optim_step(&oa, fl_model_params(a), y, n) == FL_OK);
	FL_CHECK(srv_optim_step(&oa, fl_model_params(a), y, n) == FL_OK);
	struct srv_checkpoint_meta meta = {
		.round = 2, .bytes_up = 123, .bytes_down = 4567, .seed = 42};
	FL_CHECK(srv_checkpoint_save(path, a, &oa, &meta) == FL_OK);

	struct srv_checkpoint_meta got;
	memset(&got, 0xee, sizeof(got));
	uint64_t seed = 42;
	FL_CHECK(srv_checkpoint_load(path, b, &ob, &seed, &got) == FL_OK);
	FL_CHECK(got.round == 2 && got.step == 2 && got.bytes_up == 123 && got.bytes_down == 4567 &&
		 got.seed == 42);
	FL_CHECK(memcmp(fl_model_params(a), fl_model_params(b), n * sizeof(float)) == 0);
	const float *ma, *va, *mb, *vb;
	uint64_t sa, sb;
	srv_optim_state(&oa, &ma, &va, NULL, &sa);
	srv_optim_state(&ob, &mb, &vb, NULL, &sb);
	FL_CHECK(sa == sb && memcmp(ma, mb, n * sizeof(float)) == 0 &&
		 memcmp(va, vb, n * sizeof(float)) == 0);
	/* Non-global floats are not in the file and not touched (all global here). */
	struct fl_st *st = NULL;
	FL_CHECK(fl_st_read(path, &st) == FL_OK);
	FL_CHECK(strcmp(fl_st_metadata(st, "format"), "fedloha-checkpoint") == 0);
	FL_CHECK(strcmp(fl_st_metadata(st, "version"), "1") == 0);
	FL_CHECK(strlen(fl_st_metadata(st, "model_digest")) == 64);
	FL_CHECK(fl_st_count(st) == 4 + 2);
	fl_st_free(st);

	/* The same step sequence continues identically. */
	FL_CHECK(srv_optim_step(&oa, fl_model_params(a), y, n) == FL_OK);
	FL_CHECK(srv_optim_step(&ob, fl_model_params(b), y, n) == FL_OK);
	FL_CHECK(memcmp(fl_model_params(a), fl_model_params(b), n * sizeof(float)) == 0);
	free(y);
	srv_optim_free(&oa);
	srv_optim_free(&ob);
	fl_model_free(a);
	fl_model_free(b);
}

/* Loading fails with err and leaves m and o exactly as they were. */
static void expect_refused(const char *path, struct fl_model *m, struct srv_optim *o,
			   const uint64_t *seed, int err, const char *needle)
{
	size_t n = fl_model_count_floats(m, FL_TENSOR_GLOBAL);
	float *before = malloc(n * sizeof(float));
	memcpy(before, fl_model_params(m), n * sizeof(float));
	uint64_t step0 = o->step;
	struct srv_checkpoint_meta got = {0};
	int rc = srv_checkpoint_load(path, m, o, seed, &got);
	FL_CHECK_MSG(rc == err, "got %d (%s), expected %d", rc, fl_error_msg(), err);
	FL_CHECK_MSG(!needle || strstr(fl_error_msg(), needle), "message '%s' lacks '%s'",
		     fl_error_msg(), needle);
	FL_CHECK(memcmp(before, fl_model_params(m), n * sizeof(float)) == 0);
	FL_CHECK(o->step == step0 && got.round == 0);
	free(before);
}

/* Copies a checkpoint, optionally with a NaN in server_opt.m or an extra
 * tensor. */
static void rewrite(const char *src, const char *dst, int nan_, int extra)
{
	struct fl_st *st = NULL, *w = NULL;
	FL_CHECK(fl_st_read(src, &st) == FL_OK);
	FL_CHECK(fl_st_new(&w) == FL_OK);
	for (size_t i = 0; i < fl_st_metadata_count(st); i++) {
		const char *v = NULL, *k = fl_st_metadata_at(st, i, &v);
		fl_st_set_metadata(w, k, v);
	}
	for (size_t i = 0; i < fl_st_count(st); i++) {
		const struct fl_st_tensor *t = fl_st_at(st, i);
		float *buf = malloc(t->numel * sizeof(float));
		FL_CHECK(fl_st_tensor_to_f32(t, buf, t->numel) == FL_OK);
		if (nan_ && strcmp(t->name, "server_opt.m") == 0)
			buf[3] = NAN;
		fl_st_add_f32(w, t->name, t->shape, t->ndim, buf);
		free(buf);
	}
	float z = 0;
	int64_t one = 1;
	if (extra)
		fl_st_add_f32(w, "extra", &one, 1, &z);
	FL_CHECK(fl_st_write(w, dst) == FL_OK);
	fl_st_free(w);
	fl_st_free(st);
}

static void test_refusals(void)
{
	const char *dir = fl_test_tmpdir("ckpt-bad");
	char path[600], bad[600];
	snprintf(path, sizeof(path), "%s/ok.safetensors", dir);
	struct fl_model *a = model(3, 1);
	size_t n = fl_model_count_floats(a, FL_TENSOR_GLOBAL);
	struct srv_optim oa;
	opt_init(&oa, SRV_OPTIM_FEDAVGM, n);
	struct srv_checkpoint_meta meta = {.round = 1, .seed = 7};
	FL_CHECK(srv_checkpoint_save(path, a, &oa, &meta) == FL_OK);

	struct fl_model *other = model(4, 1); /* another head: another digest */
	struct srv_optim oo;
	opt_init(&oo, SRV_OPTIM_FEDAVGM, fl_model_count_floats(other, FL_TENSOR_GLOBAL));
	expect_refused(path, other, &oo, NULL, FL_EINVAL, "another model");
	srv_optim_free(&oo);
	fl_model_free(other);

	struct fl_model *b = model(3, 5);
	struct srv_optim adam;
	opt_init(&adam, SRV_OPTIM_FEDADAM, n);
	expect_refused(path, b, &adam, NULL, FL_EINVAL, "server_opt");
	srv_optim_free(&adam);

	struct srv_optim ob;
	opt_init(&ob, SRV_OPTIM_FEDAVGM, n);
	uint64_t seed = 8;
	expect_refused(path, b, &ob, &seed, FL_EINVAL, "seed");

	snprintf(bad, sizeof(bad), "%s/missing.safetensors", dir);
	expect_refused(bad, b, &ob, NULL, FL_ENOTFOUND, NULL);

	/* A NaN in the optimiser state, and an unexpected extra tensor. */
	snprintf(bad, sizeof(bad), "%s/nan.safetensors", dir);
	rewrite(path, bad, 1, 0);
	expect_refused(bad, b, &ob, NULL, FL_ENONFINITE, "server_opt.m");
	snprintf(bad, sizeof(bad), "%s/extra.safetensors", dir);
	rewrite(path, bad, 0, 1);
	expect_refused(bad, b, &ob, NULL, FL_EFORMAT, "extra");

	/* The good file still loads into b. */
	struct srv_checkpoint_meta got;
	FL_CHECK(srv_checkpoint_load(path, b, &ob, NULL, &got) == FL_OK && got.round == 1);
	FL_CHECK(memcmp(fl_model_params(a), fl_model_params(b), n * sizeof(float)) == 0);
	srv_optim_free(&ob);
	srv_optim_free(&oa);
	fl_model_free(a);
	fl_model_free(b);
}

static struct fl_model *desc_model(const char *act)
{
	char text[512];
	snprintf(text, sizeof(text),
		 "{\"format\": \"fedloha-model/1\", \"input\": {\"shape\": [4]}, "
		 "\"classes\": 3, \"modules\": [{\"op\": \"linear\", \"name\": \"fc1\", "
		 "\"in\": 4, \"out\": 5}, {\"op\": \"%s\"}, {\"op\": \"linear\", "
		 "\"name\": \"fc2\", \"in\": 5, \"out\": 3}]}",
		 act);
	struct fl_model_desc *d = NULL;
	struct fl_model *m = NULL;
	FL_CHECK(fl_model_desc_parse(text, strlen(text), "test", &d) == FL_OK);
	FL_CHECK(fl_model_new_desc(d, NULL, 1, 1, &m) == FL_OK);
	fl_model_desc_free(d);
	return m;
}

/* The description is recorded; one with the same tensor table but another
 * op is refused, the same one resumes. */
static void test_description(void)
{
	const char *dir = fl_test_tmpdir("ckpt-desc");
	char path[600];
	snprintf(path, sizeof(path), "%s/ckpt.safetensors", dir);
	struct fl_model *a = desc_model("relu"), *b = desc_model("gelu"), *c = desc_model("relu");
	struct srv_checkpoint_meta meta = {.round = 2, .seed = 7}, got;
	struct srv_optim o;
	opt_init(&o, SRV_OPTIM_FEDAVG, fl_model_count_floats(a, FL_TENSOR_GLOBAL));
	FL_CHECK(srv_checkpoint_save(path, a, &o, &meta) == FL_OK);
	struct fl_st *st = NULL;
	FL_CHECK(fl_st_read(path, &st) == FL_OK);
	FL_CHECK(strcmp(fl_st_metadata(st, "model"), fl_model_description(a)->text) == 0);
	FL_CHECK(strlen(fl_st_metadata(st, "model_sha256")) == 64);
	fl_st_free(st);
	expect_refused(path, b, &o, NULL, FL_EINVAL, "model description");
	FL_CHECK(srv_checkpoint_load(path, c, &o, NULL, &got) == FL_OK && got.round == 2);
	srv_optim_free(&o);
	fl_model_free(a);
	fl_model_free(b);
	fl_model_free(c);
}

int main(void)
{
	FL_RUN(test_roundtrip);
	FL_RUN(test_refusals);
	FL_RUN(test_description);
	return fl_test_main_end();
}
