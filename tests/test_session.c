/* test_session.c - the client session driven by a fake server
 * (session_fake.c): Hello contents and heartbeats; Welcome + RoundTask +
 * tensors giving an Update with the model's K global tensors, trained;
 * EvalTask -> EvalResult; reconnects reuse or rebuild the model; Bye;
 * byte counters; two sessions with the same inputs send bit-identical
 * updates; an int8 session; a diverging job sends Error and restores the
 * local tensors; the idle timeout. State files: test_session_state.c;
 * hostile input: test_session_bad.c. */
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

static void test_hello(void)
{
	struct fl_dataset *d = make_data();
	struct fake fk;
	struct cli_session *s = make_session(&fk, d, NULL, NULL);
	FL_CHECK(cli_session_model(s) == NULL);
	cli_session_on_connect(s, 0);
	FL_CHECK(fk.n == 1);
	fl_envelope *e = frame_env(&fk, 0);
	if (FL_CHECK(e && e->body_case == FEDLOHA__V1__ENVELOPE__BODY_HELLO)) {
		Fedloha__V1__Hello *h = e->hello;
		FL_CHECK(h->protocol_version == FL_WIRE_PROTOCOL_VERSION);
		FL_CHECK(!strcmp(h->client_id, "client-7"));
		FL_CHECK(h->num_examples == 64);
		FL_CHECK(h->n_capabilities == 4);
		if (h->n_capabilities == 4)
			FL_CHECK(!strcmp(h->capabilities[0], "f16") &&
				 !strcmp(h->capabilities[1], "bf16") &&
				 !strcmp(h->capabilities[2], "int8") &&
				 !strcmp(h->capabilities[3], "eval"));
		FL_CHECK(h->preferred_dtype == FEDLOHA__V1__DTYPE__DTYPE_BF16);
		FL_CHECK(!h->dtype_from_server); /* it has a preference */
		FL_CHECK(!h->has_base && h->base_sha256.len == 0);
	}
	fl_wire_envelope_free(e);
	uint64_t up, down;
	cli_session_bytes(s, &up, &down);
	FL_CHECK(up == fk.f[0]->len && down == 0);
	/* heartbeats: nothing sent for heartbeat_ms */
	cli_session_tick(s, 999);
	FL_CHECK(fk.n == 1);
	cli_session_tick(s, 1000);
	FL_CHECK(fk.n == 2);
	e = frame_env(&fk, 1);
	FL_CHECK(e && e->body_case == FEDLOHA__V1__ENVELOPE__BODY_HEARTBEAT &&
		 e->heartbeat->time_ms == 1000);
	fl_wire_envelope_free(e);
	cli_session_tick(s, 1500);
	FL_CHECK(fk.n == 2);
	/* bad configs */
	struct cli_session_config cfg;
	cli_session_config_default(&cfg);
	cfg.data = d;
	struct cli_session_io io = {&fk, fake_send, fake_close, fake_submit};
	struct cli_session *bad = NULL;
	const char *ids[] = {"", "a b", "x/y", NULL};
	for (int i = 0; i < 4; i++) {
		cfg.client_id = ids[i];
		FL_CHECK(cli_session_new(&cfg, &io, &bad) == FL_EINVAL && !bad);
	}
	char longid[70];
	memset(longid, 'a', 65);
	longid[65] = 0;
	cfg.client_id = longid;
	FL_CHECK(cli_session_new(&cfg, &io, &bad) == FL_EINVAL);
	int oob = N_SAMPLES;
	cfg.client_id = "ok";
	cfg.train_idx = &oob;
	cfg.n_train = 1;
	FL_CHECK(cli_session_new(&cfg, &io, &bad) == FL_EINVAL);
	free_session(&fk);
	fl_dataset_free(d);
}

static void test_round_fedpara(void)
{
	struct fl_dataset *d = make_data();
	struct fake fk;
	struct cli_session *s = make_session(&fk, d, NULL, NULL);
	cli_session_on_connect(s, 0);
	uint64_t down = 0;
	struct welcome_opts wo = wopts(FEDPARA);
	int err = send_welcome(s, &wo, &down);
	FL_CHECK_MSG(err == FL_OK, "Welcome: %s", fl_error_msg());
	struct fl_model *m = cli_session_model(s);
	FL_CHECK(m && fl_model_param(m) == FL_PEFT_PARAM_FEDPARA);
	FL_CHECK(cli_session_dtype(s) == FL_WIRE_F32);
	struct fl_model *srv = server_model(FEDPARA, 1234), *got = server_model(FEDPARA, 0);
	FL_CHECK(global_count(srv) == 12); /* fc1, fc2: 4 factors + bias; fc3 weight + bias */
	err = send_task(s, srv, 3, 0, 16, &down);
	FL_CHECK_MSG(err == FL_OK, "task: %s", fl_error_msg());
	FL_CHECK(!cli_session_busy(s));
	FL_CHECK(cli_session_rounds_done(s) == 1);
	int w1, w2;
	int at = collect_update(&fk, got, 3, &w1, &w2);
	FL_CHECK(at == 1 && w1 && w2);
	/* training happened: every global tensor moved away from what was sent */
	for (size_t i = 0; i < fl_model_tensor_count(srv); i++) {
		const struct fl_model_tensor *t = fl_model_tensor_at(srv, i);
		if (!(t->flags & FL_TENSOR_GLOBAL))
			continue;
		const float *a = fl_model_params(srv) + t->offset,
			    *b = fl_model_params(got) + t->offset;
		double diff = 0;
		for (size_t j = 0; j < t->numel; j++)
			diff += a[j] > b[j] ? a[j] - b[j] : b[j] - a[j];
		FL_CHECK_MSG(diff > 0, "%s unchanged by training", t->name);
		/* and the client's model holds the trained values it sent */
		FL_CHECK(!memcmp(fl_model_params(m) + t->offset, b, sizeof(float) * t->numel));
	}
	uint64_t up = 0, cup, cdown;
	for (size_t i = 0; i < fk.n; i++)
		up += fk.f[i]->len;
	cli_session_bytes(s, &cup, &cdown);
	FL_CHECK(cup == up && cdown == down);

	/* a batch above the model's (64): the model grows, parameters kept */
	fake_clear(&fk);
	err = send_task(s, srv, 4, 0, 100, NULL);
	FL_CHECK_MSG(err == FL_OK, "batch 100: %s", fl_error_msg());
	FL_CHECK(collect_update(&fk, got, 4, &w1, &w2) == 0);
	m = cli_session_model(s);
	FL_CHECK(cli_session_rounds_done(s) == 2);
	FL_CHECK(send_task(s, srv, 5, 0, 5000, NULL) == FL_ERANGE); /* over the cap */

	/* evaluation */
	fake_clear(&fk);
	Fedloha__V1__EvalTask et = FEDLOHA__V1__EVAL_TASK__INIT;
	et.round = 3;
	et.num_tensors = 12;
	fl_envelope env = fl_test_envelope(&et.base);
	FL_CHECK(deliver(s, &env, NULL) == FL_OK);
	struct fl_wire_tensor w[64];
	size_t k = wire_globals(srv, w);
	for (size_t i = 0; i < k; i++) {
		struct fl_buf **fr = NULL;
		size_t nf = 0;
		FL_CHECK(fl_wire_tensor_encode(3, &w[i], FL_WIRE_F32, 256, &fr, &nf) == FL_OK);
		for (size_t j = 0; j < nf; j++) {
			err = cli_session_on_frame(s, fr[j]->data + 4, fr[j]->len - 4, 200);
			FL_CHECK_MSG(err == FL_OK, "eval chunk: %s", fl_error_msg());
			fl_buf_unref(fr[j]);
		}
		free(fr);
	}
	FL_CHECK(fk.n == 1);
	fl_envelope *e = frame_env(&fk, 0);
	if (FL_CHECK(e && e->body_case == FEDLOHA__V1__ENVELOPE__BODY_EVAL_RESULT)) {
		FL_CHECK(e->eval_result->round == 3 && e->eval_result->num_examples == 16);
		FL_CHECK(e->eval_result->loss > 0 && e->eval_result->accuracy >= 0 &&
			 e->eval_result->accuracy <= 1);
	}
	fl_wire_envelope_free(e);
	/* the eval put the server's globals into the model */
	FL_CHECK(!memcmp(fl_model_params(m), fl_model_params(srv),
			 sizeof(float) * fl_model_count_floats(srv, FL_TENSOR_GLOBAL)));

	/* reconnect with the same spec reuses the model; Bye("done") finishes */
	cli_session_on_disconnect(s);
	cli_session_on_connect(s, 300);
	FL_CHECK(send_welcome(s, &wo, NULL) == FL_OK && cli_session_model(s) == m);
	FL_CHECK(!memcmp(fl_model_params(m), fl_model_params(srv),
			 sizeof(float) * fl_model_count_floats(srv, FL_TENSOR_GLOBAL)));
	Fedloha__V1__Bye bye = FEDLOHA__V1__BYE__INIT;
	bye.reason = "done";
	env = fl_test_envelope(&bye.base);
	FL_CHECK(!cli_session_finished(s));
	FL_CHECK(deliver(s, &env, NULL) == FL_OK && cli_session_finished(s));
	/* a different spec rebuilds the model */
	cli_session_on_disconnect(s);
	cli_session_on_connect(s, 400);
	wo.json = "{\"peft_type\": \"LOHA\", \"r\": 3, \"alpha\": 3, "
		  "\"fedloha_parameterization\": \"fedpara\"}";
	FL_CHECK(send_welcome(s, &wo, NULL) == FL_OK);
	const struct fl_model_tensor *t = fl_model_tensor_find(cli_session_model(s),
							       "fc1.hada_w1_a");
	FL_CHECK(t && t->shape[1] == 3);
	fl_model_free(srv);
	fl_model_free(got);
	free_session(&fk);
	fl_dataset_free(d);
}

static void test_determinism(void)
{
	struct fl_dataset *d = make_data();
	struct fake a, b, c;
	struct cli_session *sa = make_session(&a, d, NULL, NULL);
	struct cli_session *sb = make_session(&b, d, NULL, NULL);
	struct cli_session *sc = make_session(&c, d, NULL, "client-8");
	struct cli_session *ss[3] = {sa, sb, sc};
	struct fl_model *srv = server_model(FEDPARA, 5);
	for (int i = 0; i < 3; i++) {
		cli_session_on_connect(ss[i], 0);
		struct welcome_opts wo = wopts(FEDPARA);
		FL_CHECK(send_welcome(ss[i], &wo, NULL) == FL_OK);
		FL_CHECK(send_task(ss[i], srv, 5, 0, 8, NULL) == FL_OK);
	}
	/* frames after Hello and Update: the tensor chunks */
	FL_CHECK(a.n == b.n && a.n > 3);
	int same = a.n == b.n, diff_c = 0;
	for (size_t i = 2; i < a.n && same; i++)
		same = a.f[i]->len == b.f[i]->len &&
		       !memcmp(a.f[i]->data, b.f[i]->data, a.f[i]->len);
	for (size_t i = 2; i < a.n && i < c.n; i++)
		diff_c |= a.f[i]->len != c.f[i]->len ||
			  memcmp(a.f[i]->data, c.f[i]->data, a.f[i]->len);
	FL_CHECK_MSG(same, "two identical sessions sent different updates");
	FL_CHECK_MSG(diff_c, "another client id should shuffle differently");
	free_session(&a);
	free_session(&b);
	free_session(&c);
	fl_model_free(srv);
	fl_dataset_free(d);
}

/* int8 session; a diverging job sends Error, closes and restores the local
 * tensors; the idle timeout. */
static void test_int8_and_failure(void)
{
	struct fl_dataset *d = make_data();
	struct fake fk;
	struct cli_session *s = make_session(&fk, d, NULL, NULL);
	cli_session_on_connect(s, 0);
	struct welcome_opts wo = wopts(PFEDPARA);
	wo.dtype = FL_WIRE_INT8;
	FL_CHECK(send_welcome(s, &wo, NULL) == FL_OK);
	FL_CHECK(cli_session_dtype(s) == FL_WIRE_INT8);
	struct fl_model *srv = server_model(PFEDPARA, 3), *got = server_model(PFEDPARA, 0);
	g_dtype = FL_WIRE_F32;
	FL_CHECK(send_task(s, srv, 1, 0, 8, NULL) != FL_OK); /* f32 chunks in an int8 session */
	cli_session_on_disconnect(s);
	cli_session_on_connect(s, 0);
	FL_CHECK(send_welcome(s, &wo, NULL) == FL_OK);
	fake_clear(&fk);
	g_dtype = FL_WIRE_INT8;
	int err = send_task(s, srv, 1, 0, 8, NULL);
	FL_CHECK_MSG(err == FL_OK, "int8 task: %s", fl_error_msg());
	int w1, w2;
	FL_CHECK(collect_update(&fk, got, 1, &w1, &w2) == 0 && w1 && !w2);
	FL_CHECK(cli_session_rounds_done(s) == 1 && fk.closed == 0);

	/* divergence */
	struct fl_model *m = cli_session_model(s);
	size_t nloc = fl_model_count_floats(m, FL_TENSOR_LOCAL);
	size_t off = fl_model_count_floats(m, FL_TENSOR_GLOBAL);
	float *before = malloc(sizeof(float) * nloc);
	memcpy(before, fl_model_params(m) + off, sizeof(float) * nloc);
	fake_clear(&fk);
	g_lr = 1e30f;
	err = send_task(s, srv, 2, 0, 8, NULL);
	g_lr = 0.05f;
	FL_CHECK(err == FL_OK); /* the protocol was fine; the job failed */
	FL_CHECK(fk.closed == 1 && fk.n == 1);
	fl_envelope *e = frame_env(&fk, 0);
	FL_CHECK(e && e->body_case == FEDLOHA__V1__ENVELOPE__BODY_ERROR &&
		 strstr(e->error->message, "round 2"));
	fl_wire_envelope_free(e);
	FL_CHECK(strstr(cli_session_last_error(s), "training") != NULL);
	FL_CHECK(!memcmp(before, fl_model_params(m) + off, sizeof(float) * nloc));
	FL_CHECK(cli_session_rounds_done(s) == 1);
	free(before);

	/* idle timeout from the Welcome's limits (the fake delivers at t = 100) */
	cli_session_on_disconnect(s);
	cli_session_on_connect(s, 0);
	FL_CHECK(!cli_session_idle_expired(s, 1000000)); /* no Welcome yet: no limit known */
	FL_CHECK(send_welcome(s, &wo, NULL) == FL_OK);
	FL_CHECK(!cli_session_idle_expired(s, 5100) && cli_session_idle_expired(s, 5101));
	cli_session_on_disconnect(s);
	FL_CHECK(!cli_session_idle_expired(s, 1000000));
	g_dtype = FL_WIRE_F32;
	fl_model_free(srv);
	fl_model_free(got);
	free_session(&fk);
	fl_dataset_free(d);
}

int main(void)
{
	FL_RUN(test_hello);
	FL_RUN(test_round_fedpara);
	FL_RUN(test_determinism);
	FL_RUN(test_int8_and_failure);
	return fl_test_main_end();
}
