/* test_session_bad.c - hostile or broken server input to the client
 * session: undecodable bytes, messages out of place, bad Welcomes (version,
 * config_json, input dims, classes, architecture, dtype, rank), wrong
 * tensor counts, chunks for unknown tensors or the wrong round, bad
 * training settings, a task while busy, a job outliving its connection, and
 * random / bit-flipped frames: always an error or FL_OK, never a crash. */
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

/* Sends one envelope of body kind `which` with minimal content. */
static int send_simple(struct cli_session *s, Fedloha__V1__Envelope__BodyCase which)
{
	fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT;
	Fedloha__V1__Update u = FEDLOHA__V1__UPDATE__INIT;
	Fedloha__V1__Error er = FEDLOHA__V1__ERROR__INIT;
	Fedloha__V1__BaseChunk bc = FEDLOHA__V1__BASE_CHUNK__INIT;
	Fedloha__V1__Heartbeat hb = FEDLOHA__V1__HEARTBEAT__INIT;
	env.body_case = which;
	switch (which) {
	case FEDLOHA__V1__ENVELOPE__BODY_UPDATE: env.update = &u; break;
	case FEDLOHA__V1__ENVELOPE__BODY_ERROR:
		er.code = fl_wire_error_code(FL_EINVAL);
		er.message = "duplicate client id";
		env.error = &er;
		break;
	case FEDLOHA__V1__ENVELOPE__BODY_BASE_CHUNK: env.base_chunk = &bc; break;
	default:
		env.body_case = FEDLOHA__V1__ENVELOPE__BODY_HEARTBEAT;
		env.heartbeat = &hb;
		break;
	}
	return deliver(s, &env, NULL);
}

static void test_malformed(void)
{
	struct fl_dataset *d = make_data();
	struct fake fk;
	struct cli_session *s = make_session(&fk, d, NULL, NULL);
	struct fl_model *srv = server_model(FEDPARA, 5);
	cli_session_on_connect(s, 0);
	/* undecodable bytes, messages out of place */
	uint8_t junk[7] = {0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02};
	FL_CHECK(cli_session_on_frame(s, junk, sizeof(junk), 1) != FL_OK);
	FL_CHECK(send_task(s, srv, 1, 0, 8, NULL) != FL_OK); /* before Welcome */
	FL_CHECK(send_simple(s, FEDLOHA__V1__ENVELOPE__BODY_UPDATE) != FL_OK);
	FL_CHECK(send_simple(s, FEDLOHA__V1__ENVELOPE__BODY_BASE_CHUNK) != FL_OK);
	FL_CHECK(send_simple(s, FEDLOHA__V1__ENVELOPE__BODY_HEARTBEAT) == FL_OK);
	int err = send_simple(s, FEDLOHA__V1__ENVELOPE__BODY_ERROR);
	FL_CHECK(err != FL_OK && strstr(fl_error_msg(), "duplicate client id"));
	/* bad Welcomes */
	struct welcome_opts wo = wopts(FEDPARA);
	wo.version = 2;
	err = send_welcome(s, &wo, NULL);
	FL_CHECK(err != FL_OK && strstr(fl_error_msg(), "version"));
	wo = wopts("{\"r\": 4,");
	FL_CHECK(send_welcome(s, &wo, NULL) != FL_OK);
	wo = wopts("{\"r\": -3}");
	FL_CHECK(send_welcome(s, &wo, NULL) != FL_OK);
	wo = wopts(FEDPARA);
	wo.in_h = 28;
	wo.in_w = 28;
	err = send_welcome(s, &wo, NULL);
	FL_CHECK(err == FL_ESHAPE && strstr(fl_error_msg(), "28x28"));
	wo = wopts(FEDPARA);
	wo.classes = 5;
	FL_CHECK(send_welcome(s, &wo, NULL) == FL_ESHAPE);
	wo = wopts(FEDPARA);
	wo.arch = "resnet";
	FL_CHECK(send_welcome(s, &wo, NULL) != FL_OK);
	wo = wopts(FEDPARA);
	wo.dtype = (enum fl_wire_dtype)9;
	FL_CHECK(send_welcome(s, &wo, NULL) != FL_OK);
	FL_CHECK(cli_session_model(s) == NULL);
	wo = wopts(FEDPARA);
	FL_CHECK(send_welcome(s, &wo, NULL) == FL_OK);
	FL_CHECK(send_welcome(s, &wo, NULL) != FL_OK); /* a second Welcome */

	/* a task announcing the wrong number of tensors */
	FL_CHECK(send_task(s, srv, 1, 5, 8, NULL) != FL_OK);
	/* a chunk for an unknown tensor, a chunk of the wrong round */
	Fedloha__V1__RoundTask t = FEDLOHA__V1__ROUND_TASK__INIT;
	Fedloha__V1__TrainSettings ts = FEDLOHA__V1__TRAIN_SETTINGS__INIT;
	fl_test_round_task(&t, &ts, 2, 1, 8, 0.01f, 12);
	fl_envelope env = fl_test_envelope(&t.base);
	FL_CHECK(deliver(s, &env, NULL) == FL_OK);
	float vals[4] = {1, 2, 3, 4};
	struct fl_wire_tensor bogus = {"fc9.weight", 1, {4}, 4, vals};
	struct fl_buf **fr = NULL;
	size_t nf = 0;
	FL_CHECK(fl_wire_tensor_encode(2, &bogus, FL_WIRE_F32, 256, &fr, &nf) == FL_OK);
	err = cli_session_on_frame(s, fr[0]->data + 4, fr[0]->len - 4, 5);
	FL_CHECK(err != FL_OK && strstr(fl_error_msg(), "fc9.weight"));
	fl_buf_unref(fr[0]);
	free(fr);
	struct fl_wire_tensor w[64];
	wire_globals(srv, w);
	fr = NULL;
	nf = 0;
	FL_CHECK(fl_wire_tensor_encode(7, &w[0], FL_WIRE_F32, 256, &fr, &nf) == FL_OK);
	err = cli_session_on_frame(s, fr[0]->data + 4, fr[0]->len - 4, 5);
	FL_CHECK(err != FL_OK && strstr(fl_error_msg(), "round 7"));
	for (size_t i = 0; i < nf; i++)
		fl_buf_unref(fr[i]);
	free(fr);
	/* bad training settings */
	ts.batch_size = 0;
	FL_CHECK(deliver(s, &env, NULL) != FL_OK);
	ts.batch_size = 8;
	ts.optimizer = "lbfgs";
	FL_CHECK(deliver(s, &env, NULL) != FL_OK);
	ts.optimizer = "";
	ts.lr = -1;
	FL_CHECK(deliver(s, &env, NULL) != FL_OK);

	/* a task while busy (asynchronous submit: the job waits) */
	cli_session_on_disconnect(s);
	cli_session_on_connect(s, 10);
	FL_CHECK(send_welcome(s, &wo, NULL) == FL_OK);
	fk.sync = 0;
	fake_clear(&fk);
	FL_CHECK(send_task(s, srv, 4, 0, 8, NULL) == FL_OK);
	FL_CHECK(cli_session_busy(s) && fk.pending);
	err = send_task(s, srv, 5, 0, 8, NULL);
	FL_CHECK(err != FL_OK && strstr(fl_error_msg(), "still running"));
	FL_CHECK(send_simple(s, FEDLOHA__V1__ENVELOPE__BODY_HEARTBEAT) == FL_OK);
	FL_CHECK(cli_job_threads(fk.pending) == 1);
	cli_job_run(fk.pending);
	cli_session_on_job_done(s, fk.pending);
	FL_CHECK(!cli_session_busy(s));
	int w1, w2;
	struct fl_model *got = server_model(FEDPARA, 0);
	FL_CHECK(collect_update(&fk, got, 4, &w1, &w2) == 0);
	/* a job whose connection went away sends nothing */
	fake_clear(&fk);
	FL_CHECK(send_task(s, srv, 6, 0, 8, NULL) == FL_OK);
	cli_session_on_disconnect(s);
	cli_job_run(fk.pending);
	cli_session_on_job_done(s, fk.pending);
	FL_CHECK(fk.n == 0 && !cli_session_busy(s));
	FL_CHECK(cli_session_on_frame(s, junk, 1, 5) != FL_OK); /* no connection */

	/* random garbage and mutated valid frames: errors or OK, never a crash */
	cli_session_on_connect(s, 20);
	FL_CHECK(send_welcome(s, &wo, NULL) == FL_OK);
	fk.sync = 1;
	struct fl_rng r;
	fl_rng_seed(&r, 3);
	uint8_t buf[600];
	for (int it = 0; it < 400; it++) {
		size_t n = (size_t)fl_rng_below(&r, sizeof(buf));
		for (size_t i = 0; i < n; i++)
			buf[i] = (uint8_t)fl_rng_next(&r);
		(void)cli_session_on_frame(s, buf, n, 30);
	}
	fr = NULL;
	nf = 0;
	FL_CHECK(fl_wire_tensor_encode(9, &w[1], FL_WIRE_F32, 256, &fr, &nf) == FL_OK);
	for (int it = 0; it < 400; it++) {
		cli_session_on_disconnect(s);
		cli_session_on_connect(s, 40);
		FL_CHECK(send_welcome(s, &wo, NULL) == FL_OK);
		t.round = 9;
		ts.lr = 0.01f;
		(void)deliver(s, &env, NULL);
		size_t n = fr[0]->len - 4;
		memcpy(buf, fr[0]->data + 4, n < sizeof(buf) ? n : sizeof(buf));
		for (int k = 0; k < 3; k++)
			buf[fl_rng_below(&r, n < sizeof(buf) ? n : sizeof(buf))] ^=
				(uint8_t)(1u << fl_rng_below(&r, 8));
		(void)cli_session_on_frame(s, buf, n < sizeof(buf) ? n : sizeof(buf), 50);
	}
	for (size_t i = 0; i < nf; i++)
		fl_buf_unref(fr[i]);
	free(fr);
	/* mutated Welcomes (a hostile rank is refused before any allocation) */
	wo = wopts("{\"peft_type\": \"LOHA\", \"r\": 2000000000, "
		   "\"fedloha_parameterization\": \"fedpara\"}");
	cli_session_on_disconnect(s);
	cli_session_on_connect(s, 60);
	err = send_welcome(s, &wo, NULL);
	FL_CHECK(err == FL_ERANGE && strstr(fl_error_msg(), "rank"));
	struct fl_buf *wb = NULL;
	for (int it = 0; it < 300; it++) {
		cli_session_on_disconnect(s);
		cli_session_on_connect(s, 70);
		fake_clear(&fk);
		if (!wb) { /* capture an encoded Welcome once */
			uint32_t input[3];
			Fedloha__V1__ModelSpec ms = FEDLOHA__V1__MODEL_SPEC__INIT;
			fl_test_model_spec(&ms, input, "2nn", C_, H_, W_, CLASSES);
			ms.config_json = (char *)PFEDPARA;
			Fedloha__V1__Welcome wm = FEDLOHA__V1__WELCOME__INIT;
			wm.protocol_version = FL_WIRE_PROTOCOL_VERSION;
			wm.model = &ms;
			fl_envelope we = fl_test_envelope(&wm.base);
			FL_CHECK(fl_wire_encode(&we, &wb) == FL_OK);
		}
		size_t n = wb->len - 4 < sizeof(buf) ? wb->len - 4 : sizeof(buf);
		memcpy(buf, wb->data + 4, n);
		for (int k = 0; k < 2; k++)
			buf[fl_rng_below(&r, n)] ^= (uint8_t)(1u << fl_rng_below(&r, 8));
		(void)cli_session_on_frame(s, buf, n, 80);
	}
	fl_buf_unref(wb);
	fl_model_free(got);
	fl_model_free(srv);
	free_session(&fk);
	fl_dataset_free(d);
}

int main(void)
{
	FL_RUN(test_malformed);
	return fl_test_main_end();
}
