/* test_engine_faults.c - every malformed input gets Error + close for that
 * connection only, while the round carries on with the others: frame
 * before Hello, wrong protocol version, bad / duplicate client id, required
 * dtype missing, undecodable bytes, unknown tensor, wrong shape, wrong
 * dtype, NaN, too-large values, wrong round, num_tensors and num_examples
 * out of range, chunk before the header, duplicate update, update from an
 * unselected client, a server-only message from a client. */
#include "engine_fake.h"
#include "errors.h"
#include "model.h"
#include "testutil.h"
#include "wireutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fixture {
	struct fl_model *m;
	struct fake_net *net;
	struct fake_client *g1, *g2, *x;
	const struct fl_model_tensor *t0; /* the first global tensor */
};

static void config(struct srv_engine_config *c)
{
	fake_engine_config(c, 1, 3, 2);
}

/* Two good clients and x, which holds its task: round 1 is running. */
static void setup(struct fixture *f)
{
	memset(f, 0, sizeof(*f));
	FL_CHECK(fl_model_new("mlp", 1, 2, 2, 3, NULL, 9, 1, &f->m) == FL_OK);
	struct srv_engine_config cfg;
	config(&cfg);
	f->net = fake_net_new(f->m, &cfg);
	f->g1 = fake_connect(f->net, "good-1", 10, 1.0f, NULL);
	f->g2 = fake_connect(f->net, "good-2", 30, 2.0f, NULL);
	f->x = fake_connect(f->net, "x", 5, 50.0f, NULL);
	f->x->hold = 1;
	fake_pump(f->net);
	FL_CHECK(f->x->tasks == 1 && f->g1->updates_sent == 1 && f->net->nrep == 0);
	f->t0 = fl_model_tensor_at(f->m, 0);
}

/* x was refused with `code`; the round completed with the two others. */
static void finish(struct fixture *f, int code, const char *what)
{
	fake_pump(f->net);
	FL_CHECK_MSG(f->x->closed, "%s: not closed", what);
	FL_CHECK_MSG(f->x->error_code == (uint32_t)-code, "%s: error code %u (%s), expected %d",
		     what, f->x->error_code, f->x->error_msg, -code);
	FL_CHECK(fake_run(f->net, 100000));
	FL_CHECK_MSG(f->net->nrep == 1 && f->net->rep[0].reported == 2 &&
			     f->net->rep[0].rejected == 1,
		     "%s: round not completed by the others", what);
	FL_CHECK(fl_model_params(f->m)[0] == 1.75f);
	FL_CHECK(!f->g1->error_code && !f->g2->error_code && f->g1->byes == 1);
	fake_net_free(f->net);
	fl_model_free(f->m);
}

static void test_bad_chunks(void)
{
	struct fixture f;
	const int64_t *sh;
	float vals[4] = {0.5f, 0.5f, 0.5f, 0.5f};

	setup(&f); /* unknown tensor name */
	sh = f.t0->shape;
	fake_send_update_header(f.net, f.x, 1, 5, 4);
	fake_send_chunk(f.net, f.x, 1, "fc9.weight", sh, f.t0->ndim, FL_WIRE_F32, 0, vals, 16, 0);
	finish(&f, FL_ENOTFOUND, "unknown tensor");

	setup(&f); /* wrong shape */
	int64_t bad_shape[2] = {f.t0->shape[0], f.t0->shape[1] + 1};
	fake_send_update_header(f.net, f.x, 1, 5, 4);
	fake_send_chunk(f.net, f.x, 1, f.t0->name, bad_shape, 2, FL_WIRE_F32, 0, vals, 16, 0);
	finish(&f, FL_ESHAPE, "wrong shape");

	setup(&f); /* wrong dtype: the session is f32 */
	uint16_t h[4] = {0x3c00, 0x3c00, 0x3c00, 0x3c00};
	fake_send_update_header(f.net, f.x, 1, 5, 4);
	fake_send_chunk(f.net, f.x, 1, f.t0->name, f.t0->shape, f.t0->ndim, FL_WIRE_F16, 0, h, 8,
			0);
	finish(&f, FL_EFORMAT, "wrong dtype");

	setup(&f); /* NaN */
	float nanv[4] = {0.5f, NAN, 0.5f, 0.5f};
	fake_send_update_header(f.net, f.x, 1, 5, 4);
	fake_send_chunk(f.net, f.x, 1, f.t0->name, f.t0->shape, f.t0->ndim, FL_WIRE_F32, 0, nanv,
			16, 0);
	finish(&f, FL_ENONFINITE, "NaN");

	setup(&f); /* values beyond the aggregator's range */
	size_t n = fl_model_count_floats(f.m, FL_TENSOR_GLOBAL);
	float *big = malloc(n * sizeof(float));
	for (size_t i = 0; i < n; i++)
		big[i] = i == n - 1 ? 2e6f : 0.0f;
	fake_send_update(f.net, f.x, 1, 5, big);
	free(big);
	finish(&f, FL_ERANGE, "too large");

	setup(&f); /* chunk of the wrong round */
	fake_send_update_header(f.net, f.x, 1, 5, 4);
	fake_send_chunk(f.net, f.x, 2, f.t0->name, f.t0->shape, f.t0->ndim, FL_WIRE_F32, 0, vals,
			16, 0);
	finish(&f, FL_EINVAL, "chunk round");

	setup(&f); /* chunk before the Update header */
	fake_send_chunk(f.net, f.x, 1, f.t0->name, f.t0->shape, f.t0->ndim, FL_WIRE_F32, 0, vals,
			16, 0);
	finish(&f, FL_EFORMAT, "chunk first");
}

static void test_bad_headers(void)
{
	struct fixture f;
	setup(&f);
	fake_send_update_header(f.net, f.x, 7, 5, 4);
	finish(&f, FL_EINVAL, "wrong round");

	setup(&f);
	fake_send_update_header(f.net, f.x, 1, 5, 5);
	finish(&f, FL_EFORMAT, "num_tensors");

	setup(&f);
	fake_send_update_header(f.net, f.x, 1, 0, 4);
	finish(&f, FL_ERANGE, "num_examples 0");

	setup(&f);
	fake_send_update_header(f.net, f.x, 1, (1ull << 32) + 1, 4);
	finish(&f, FL_ERANGE, "num_examples > 2^32");

	setup(&f); /* a second Update while the first is still arriving */
	fake_send_update_header(f.net, f.x, 1, 5, 4);
	fake_send_update_header(f.net, f.x, 1, 5, 4);
	finish(&f, FL_EINVAL, "second header");

	setup(&f); /* undecodable bytes */
	const uint8_t junk[5] = {0xff, 0xff, 0xff, 0xff, 0x0f};
	fake_send_raw(f.net, f.x, junk, sizeof(junk));
	finish(&f, FL_EFORMAT, "undecodable");

	setup(&f); /* a message only the server sends */
	Fedloha__V1__EvalTask et = FEDLOHA__V1__EVAL_TASK__INIT;
	fl_envelope env = fl_test_envelope(&et.base);
	fake_send_env(f.net, f.x, &env);
	finish(&f, FL_EFORMAT, "server message");

	setup(&f); /* a second Hello */
	fake_send_hello(f.net, f.x, FL_WIRE_PROTOCOL_VERSION, "x", "", FL_WIRE_F32);
	finish(&f, FL_EFORMAT, "second hello");

	setup(&f); /* BaseRequest without a base */
	Fedloha__V1__BaseRequest br = FEDLOHA__V1__BASE_REQUEST__INIT;
	env = fl_test_envelope(&br.base);
	fake_send_env(f.net, f.x, &env);
	finish(&f, FL_EUNSUPPORTED, "base request");
}

static void test_duplicate_and_unselected(void)
{
	/* Duplicate: a second Update after a completed one, while the round is
	 * still open (h holds, the round ends at the deadline). */
	struct fl_model *m = NULL;
	FL_CHECK(fl_model_new("mlp", 1, 2, 2, 3, NULL, 9, 1, &m) == FL_OK);
	struct srv_engine_config cfg;
	config(&cfg);
	cfg.min_available = 4;
	struct fake_net *net = fake_net_new(m, &cfg);
	struct fake_client *g1 = fake_connect(net, "g1", 10, 1.0f, NULL);
	struct fake_client *g2 = fake_connect(net, "g2", 30, 2.0f, NULL);
	struct fake_client *x = fake_connect(net, "x", 60, -0.5f, NULL);
	struct fake_client *h = fake_connect(net, "h", 5, 9.0f, NULL);
	h->hold = 1;
	fake_pump(net);
	FL_CHECK(x->updates_sent == 1 && !x->closed);
	fake_send_update_header(net, x, 1, 60, 4);
	fake_pump(net);
	FL_CHECK(x->closed && x->error_code == (uint32_t)-FL_EINVAL);
	FL_CHECK(strstr(x->error_msg, "duplicate") != NULL);
	/* An update from a client that was never selected (joined late). */
	struct fake_client *u = fake_connect(net, "u", 5, 0.0f, NULL);
	fake_pump(net);
	FL_CHECK(u->welcomed && u->tasks == 0);
	fake_send_update_header(net, u, 1, 5, 4);
	fake_pump(net);
	FL_CHECK(u->closed && strstr(u->error_msg, "not selected") != NULL);
	fake_tick_at(net, net->now + cfg.round_timeout_ms);
	FL_CHECK(net->nrep == 1 && net->rep[0].reported == 3);
	/* x's accepted update still counts: (10*1 + 30*2 + 60*-0.5) / 100 */
	FL_CHECK(fl_model_params(m)[5] == 0.4f);
	FL_CHECK(srv_engine_finished(net->e) && g1->byes == 1 && g2->byes == 1);
	fake_net_free(net);
	fl_model_free(m);
}

static void test_hello_refusals(void)
{
	struct fl_model *m = NULL;
	FL_CHECK(fl_model_new("mlp", 1, 2, 2, 3, NULL, 9, 1, &m) == FL_OK);
	struct srv_engine_config cfg;
	config(&cfg);
	cfg.dtype = FL_WIRE_F16;
	cfg.dtype_required = 1;
	struct fake_net *net = fake_net_new(m, &cfg);
	struct fake_client *c;

	c = fake_connect_raw(net, "early"); /* a frame before Hello */
	fake_send_update_header(net, c, 1, 5, 4);
	fake_pump(net);
	FL_CHECK(c->closed && c->error_code == (uint32_t)-FL_EFORMAT && !c->welcomed);

	c = fake_connect_raw(net, "v2");
	fake_send_hello(net, c, FL_WIRE_PROTOCOL_VERSION + 1, "v2", "f16", FL_WIRE_F16);
	fake_pump(net);
	FL_CHECK(c->closed && c->error_code == (uint32_t)-FL_EUNSUPPORTED);

	const char *bad_ids[3] = {"", "bad id!", NULL};
	char long_id[80];
	memset(long_id, 'a', 65);
	long_id[65] = 0;
	bad_ids[2] = long_id;
	for (int i = 0; i < 3; i++) {
		c = fake_connect_raw(net, "bad");
		fake_send_hello(net, c, FL_WIRE_PROTOCOL_VERSION, bad_ids[i], "f16", FL_WIRE_F16);
		fake_pump(net);
		FL_CHECK_MSG(c->closed && c->error_code == (uint32_t)-FL_EINVAL, "id '%s'",
			     bad_ids[i]);
	}

	c = fake_connect(net, "no-f16", 5, 0, NULL); /* f16 required, not offered */
	fake_pump(net);
	FL_CHECK(c->closed && c->error_code == (uint32_t)-FL_EUNSUPPORTED);

	struct fake_client *a = fake_connect(net, "dup", 5, 0, "f16");
	struct fake_client *b = fake_connect(net, "dup", 5, 0, "f16");
	fake_pump(net);
	FL_CHECK(a->welcomed && !a->closed && a->dtype == FL_WIRE_F16);
	FL_CHECK(b->closed && b->error_code == (uint32_t)-FL_EINVAL && !b->welcomed);
	FL_CHECK(srv_engine_conn_count(net->e) == 1);
	/* The refused ones did not disturb a: a round with f16 tensors works. */
	struct fake_client *d = fake_connect(net, "d2", 5, 0, "f16");
	struct fake_client *e = fake_connect(net, "e2", 5, 0, "f16");
	a->value = 0.5f;
	d->value = 0.5f;
	e->value = 0.5f;
	FL_CHECK(fake_run(net, 100000));
	FL_CHECK(fl_model_params(m)[3] == 0.5f && d->dtype == FL_WIRE_F16);
	fake_net_free(net);
	fl_model_free(m);
}

int main(void)
{
	FL_RUN(test_bad_chunks);
	FL_RUN(test_bad_headers);
	FL_RUN(test_duplicate_and_unselected);
	FL_RUN(test_hello_refusals);
	return fl_test_main_end();
}
