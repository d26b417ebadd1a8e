/* test_session_state.c - what the client session keeps on disk: pFedPara
 * sends only hada_w1_* and keeps hada_w2_* at home, persists them, and a new
 * session reloads them bit for bit (a file of another model is an error
 * naming it); the loha base fetched over BaseRequest / BaseChunk with a
 * wrong SHA-256 (refused, nothing left behind) and the right one (written,
 * loaded, reported in the next Hello). */
#include "dataset.h"
#include "errors.h"
#include "fsutil.h"
#include "model.h"
#include "safetensors.h"
#include "session.h"
#include "session_fake.h"
#include "testutil.h"
#include "wire.h"
#include "wireutil.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One round of pFedPara with a state folder, then new sessions over it. */
static void test_pfedpara_local(void)
{
	struct fl_dataset *d = make_data();
	const char *tmp = fl_test_tmpdir("session-pfp");
	char dir[600], file[700];
	snprintf(dir, sizeof(dir), "%s/state", tmp);
	snprintf(file, sizeof(file), "%s/local.safetensors", dir);
	struct fake fk;
	struct cli_session *s = make_session(&fk, d, dir, NULL);
	cli_session_on_connect(s, 0);
	struct welcome_opts wo = wopts(PFEDPARA);
	FL_CHECK(send_welcome(s, &wo, NULL) == FL_OK);
	struct fl_model *m = cli_session_model(s);
	struct fl_model *srv = server_model(PFEDPARA, 99), *got = server_model(PFEDPARA, 0);
	struct fl_model *fresh = server_model(PFEDPARA, SEED); /* the client's initial state */
	FL_CHECK(global_count(srv) == 8);
	FL_CHECK(!fl_path_exists(file));
	int err = send_task(s, srv, 0, 0, 32, NULL);
	FL_CHECK_MSG(err == FL_OK, "task: %s", fl_error_msg());
	int w1, w2;
	FL_CHECK(collect_update(&fk, got, 0, &w1, &w2) == 1);
	FL_CHECK_MSG(w1 && !w2, "hada_w1 sent: %d, hada_w2 sent: %d", w1, w2);
	FL_CHECK(fl_path_exists(file));
	size_t nloc = fl_model_count_floats(m, FL_TENSOR_LOCAL);
	size_t off = fl_model_count_floats(m, FL_TENSOR_GLOBAL); /* locals follow the globals */
	FL_CHECK(nloc > 0);
	FL_CHECK_MSG(memcmp(fl_model_params(m) + off, fl_model_params(fresh) + off,
			    sizeof(float) * nloc) != 0,
		     "local tensors not trained");
	float *keep = malloc(sizeof(float) * nloc);
	memcpy(keep, fl_model_params(m) + off, sizeof(float) * nloc);
	free_session(&fk);

	/* a new session over the same folder reloads them bit for bit */
	s = make_session(&fk, d, dir, NULL);
	cli_session_on_connect(s, 0);
	err = send_welcome(s, &wo, NULL);
	FL_CHECK_MSG(err == FL_OK, "Welcome: %s", fl_error_msg());
	m = cli_session_model(s);
	FL_CHECK(m && !memcmp(fl_model_params(m) + off, keep, sizeof(float) * nloc));
	free_session(&fk);

	/* a local file of another model is an error naming it */
	struct fl_st *st;
	FL_CHECK(fl_st_new(&st) == FL_OK);
	int64_t shp[2] = {200, 5};
	float z[1000] = {0};
	FL_CHECK(fl_st_add_f32(st, "fc1.hada_w2_a", shp, 2, z) == FL_OK);
	FL_CHECK(fl_st_write(st, file) == FL_OK);
	fl_st_free(st);
	s = make_session(&fk, d, dir, NULL);
	cli_session_on_connect(s, 0);
	err = send_welcome(s, &wo, NULL);
	FL_CHECK(err != FL_OK && strstr(fl_error_msg(), "local.safetensors"));
	FL_CHECK(cli_session_model(s) == NULL);
	free_session(&fk);
	free(keep);
	fl_model_free(srv);
	fl_model_free(got);
	fl_model_free(fresh);
	fl_dataset_free(d);
}

/* A base file with the BASE tensors of the loha 2nn. */
static uint8_t *make_base(const char *path, size_t *len)
{
	struct fl_model *dense = server_model(NULL, 777); /* "pretrained" */
	struct fl_st *st;
	fl_st_new(&st);
	for (size_t i = 0; i < fl_model_tensor_count(dense); i++) {
		const struct fl_model_tensor *t = fl_model_tensor_at(dense, i);
		fl_st_add_f32(st, t->name, t->shape, t->ndim, fl_model_params(dense) + t->offset);
	}
	FL_CHECK(fl_st_write(st, path) == FL_OK);
	fl_st_free(st);
	fl_model_free(dense);
	char *data = NULL;
	FL_CHECK(fl_file_read_all(path, 1u << 26, &data, len) == FL_OK);
	return (uint8_t *)data;
}

/* Answers a BaseRequest (checked) with the bytes in 1000-byte chunks. */
static int serve_base(struct cli_session *s, struct fake *fk, const uint8_t *sha,
		      const uint8_t *data, size_t len)
{
	fl_envelope *e = frame_env(fk, fk->n - 1);
	int ok = FL_CHECK(e && e->body_case == FEDLOHA__V1__ENVELOPE__BODY_BASE_REQUEST &&
			  e->base_request->sha256.len == 32 &&
			  !memcmp(e->base_request->sha256.data, sha, 32));
	fl_wire_envelope_free(e);
	if (!ok)
		return -100;
	int err = FL_OK;
	for (size_t off = 0; off < len && !err; off += 1000) {
		Fedloha__V1__BaseChunk bc = FEDLOHA__V1__BASE_CHUNK__INIT;
		bc.offset = off;
		bc.data.data = (uint8_t *)data + off;
		bc.data.len = len - off < 1000 ? len - off : 1000;
		bc.last = off + bc.data.len == len;
		fl_envelope env = fl_test_envelope(&bc.base);
		err = deliver(s, &env, NULL);
	}
	return err;
}

/* The session's model holds `name` as a frozen base tensor equal to the
 * tensor of that name in the safetensors file `path`. */
static void expect_base_tensor(struct cli_session *s, const char *path, const char *name)
{
	struct fl_model *m = cli_session_model(s);
	const struct fl_model_tensor *t = m ? fl_model_tensor_find(m, name) : NULL;
	FL_CHECK_MSG(t && (t->flags & FL_TENSOR_BASE), "%s: no base tensor", name);
	struct fl_st *st = NULL;
	if (!FL_CHECK(fl_st_read(path, &st) == FL_OK))
		return;
	const struct fl_st_tensor *ft = fl_st_find(st, name);
	FL_CHECK(t && ft && !memcmp(ft->data, fl_model_params(m) + t->offset, ft->nbytes));
	fl_st_free(st);
}

static void test_loha_base(void)
{
	struct fl_dataset *d = make_data();
	const char *tmp = fl_test_tmpdir("session-base");
	char dir[600], srcpath[600], dst[700], part[700];
	snprintf(dir, sizeof(dir), "%s/state", tmp);
	snprintf(srcpath, sizeof(srcpath), "%s/served.safetensors", tmp);
	snprintf(dst, sizeof(dst), "%s/base.safetensors", dir);
	snprintf(part, sizeof(part), "%s/base.safetensors.part", dir);
	size_t len = 0;
	uint8_t *data = make_base(srcpath, &len);
	uint8_t sha[32], wrong[32];
	crypto_hash_sha256(sha, data, len);
	memcpy(wrong, sha, 32);
	wrong[0] ^= 1;

	/* the Welcome names another sha than the bytes served: refused, nothing left */
	struct fake fk;
	struct cli_session *s = make_session(&fk, d, dir, NULL);
	cli_session_on_connect(s, 0);
	struct welcome_opts wo = wopts(LOHA);
	wo.sha = wrong;
	wo.base_bytes = len;
	FL_CHECK(send_welcome(s, &wo, NULL) == FL_OK);
	int err = serve_base(s, &fk, wrong, data, len);
	FL_CHECK(err != FL_OK && err != -100 && strstr(fl_error_msg(), "SHA-256"));
	FL_CHECK(!fl_path_exists(dst) && !fl_path_exists(part));
	cli_session_on_disconnect(s);
	FL_CHECK(!fl_path_exists(part));
	free_session(&fk);

	/* the right sha: fetched, written, loaded; a round sends only the factors */
	s = make_session(&fk, d, dir, NULL);
	cli_session_on_connect(s, 0);
	wo.sha = sha;
	FL_CHECK(send_welcome(s, &wo, NULL) == FL_OK);
	struct fl_model *srv = server_model(LOHA, 1);
	FL_CHECK(send_task(s, srv, 1, 0, 8, NULL) != FL_OK); /* still fetching */
	err = serve_base(s, &fk, sha, data, len);
	FL_CHECK_MSG(err == FL_OK, "base fetch: %s", fl_error_msg());
	char *back = NULL;
	size_t blen = 0;
	FL_CHECK(fl_file_read_all(dst, 1u << 26, &back, &blen) == FL_OK && blen == len &&
		 !memcmp(back, data, len));
	free(back);
	FL_CHECK(!fl_path_exists(part));
	expect_base_tensor(s, dst, "fc1.weight");
	FL_CHECK(global_count(srv) == 8); /* fc1, fc2 factors; biases and fc3 are base */
	fake_clear(&fk);
	err = send_task(s, srv, 1, 0, 8, NULL);
	FL_CHECK_MSG(err == FL_OK, "loha task: %s", fl_error_msg());
	struct fl_model *got = server_model(LOHA, 0);
	int w1, w2;
	FL_CHECK(collect_update(&fk, got, 1, &w1, &w2) == 0 && w1 && w2);
	free_session(&fk);

	/* a later session has the base: Hello says so, no BaseRequest */
	s = make_session(&fk, d, dir, NULL);
	cli_session_on_connect(s, 0);
	fl_envelope *e = frame_env(&fk, 0);
	FL_CHECK(e && e->hello->has_base && e->hello->base_sha256.len == 32 &&
		 !memcmp(e->hello->base_sha256.data, sha, 32));
	fl_wire_envelope_free(e);
	FL_CHECK(send_welcome(s, &wo, NULL) == FL_OK);
	FL_CHECK(fk.n == 1);
	expect_base_tensor(s, srcpath, "fc2.weight");
	free_session(&fk);

	/* no state folder but base_path holds the right file: used as is */
	{
		FL_CHECK(base_path_session(&fk, d, "client-9", NULL, srcpath) != NULL);
		err = send_welcome(fk.s, &wo, NULL);
		FL_CHECK_MSG(err == FL_OK, "Welcome with base_path: %s", fl_error_msg());
		FL_CHECK(fk.n == 1); /* Hello only: no BaseRequest */
		expect_base_tensor(fk.s, srcpath, "fc3.weight");
		free_session(&fk);
	}

	/* the state folder holds another base, base_path the right one: the
	 * Hello reports the stale one, so after loading base_path the session
	 * sends a Heartbeat to tell the server it needs no fetch */
	{
		char stale_dir[700], stale[800];
		snprintf(stale_dir, sizeof(stale_dir), "%s/stale", tmp);
		snprintf(stale, sizeof(stale), "%s/base.safetensors", stale_dir);
		FL_CHECK(fl_mkdir_p(stale_dir, 0) == FL_OK);
		FL_CHECK(fl_file_write_atomic(stale, "not the base", 12, 0) == FL_OK);
		FL_CHECK(base_path_session(&fk, d, "client-8", stale_dir, srcpath) != NULL);
		e = frame_env(&fk, 0);
		FL_CHECK(e && e->hello->has_base && memcmp(e->hello->base_sha256.data, sha, 32));
		fl_wire_envelope_free(e);
		err = send_welcome(fk.s, &wo, NULL);
		FL_CHECK_MSG(err == FL_OK, "Welcome with a stale state base: %s", fl_error_msg());
		FL_CHECK(fk.n == 2);
		e = frame_env(&fk, 1);
		FL_CHECK(e && e->body_case == FEDLOHA__V1__ENVELOPE__BODY_HEARTBEAT);
		fl_wire_envelope_free(e);
		fake_clear(&fk);
		err = send_task(fk.s, srv, 1, 0, 8, NULL);
		FL_CHECK_MSG(err == FL_OK, "task after the Heartbeat: %s", fl_error_msg());
		free_session(&fk);
	}

	/* no state folder and no base: a clear error */
	s = make_session(&fk, d, NULL, NULL);
	cli_session_on_connect(s, 0);
	err = send_welcome(s, &wo, NULL);
	FL_CHECK(err == FL_ENOTFOUND && strstr(fl_error_msg(), "state folder"));
	free_session(&fk);
	fl_model_free(srv);
	fl_model_free(got);
	free(data);
	fl_dataset_free(d);
}

int main(void)
{
	FL_RUN(test_pfedpara_local);
	FL_RUN(test_loha_base);
	return fl_test_main_end();
}
