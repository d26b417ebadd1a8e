/* test_engine_base.c - the round engine serving the loha base file over a
 * fake transport (a whole fetch; a client welcomed without the base is
 * selected only once its BaseRequest is served) and the wire dtype it offers
 * each client from the Hello's capabilities. The rounds themselves: test_engine.c. */
#include "engine_fake.h"
#include "errors.h"
#include "model.h"
#include "testutil.h"
#include "wireutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void base_config(struct srv_engine_config *c)
{
	fake_engine_config(c, 2, 11, 3);
	c->config_json = "{}";
}

/* A 10000-byte base (byte i = i * mul % mod) in a fresh folder named after
 * tag, path[cap] its name, and the test configuration serving it in 4 KiB
 * chunks. */
static void base_setup(struct srv_engine_config *cfg, char *path, size_t cap, const char *tag,
		       int mul, int mod)
{
	base_config(cfg);
	cfg->chunk_bytes = 4096;
	snprintf(path, cap, "%s/base.bin", fl_test_tmpdir(tag));
	cfg->base_path = path;
	FILE *f = fopen(path, "wb");
	if (!FL_CHECK(f != NULL))
		return;
	for (int i = 0; i < 10000; i++)
		fputc(i * mul % mod, f);
	fclose(f);
}

/* A BaseRequest naming the base by sha (32 bytes), or by nothing (NULL). */
static void send_base_request(struct fake_net *net, struct fake_client *c, uint8_t *sha)
{
	Fedloha__V1__BaseRequest br = FEDLOHA__V1__BASE_REQUEST__INIT;
	if (sha) {
		br.sha256.data = sha;
		br.sha256.len = 32;
	}
	fl_envelope env = fl_test_envelope(&br.base);
	fake_send_env(net, c, &env);
}

static void test_base(void)
{
	struct fl_model *m = fake_small_model(8);
	char path[600];
	struct srv_engine_config cfg;
	base_setup(&cfg, path, sizeof(path), "engine-base", 31, 251);
	struct fake_net *net = fake_net_new(m, &cfg);
	FL_CHECK(net != NULL);
	struct fake_client *a = fake_connect(net, "a", 1, 0, NULL);
	fake_pump(net);
	send_base_request(net, a, NULL);
	fake_pump(net);
	FL_CHECK(a->base_chunks == 3 && a->base_got == 10000 && !a->closed);
	uint8_t wrong[32] = {1};
	send_base_request(net, a, wrong);
	fake_pump(net);
	FL_CHECK(a->closed && a->error_code == (uint32_t)-FL_ENOTFOUND);
	fake_net_free(net);
	fl_model_free(m);
}

/* A client welcomed without the base is not selected until its
 * BaseRequest is served: the base arrives before its first task, and a
 * client that reports the base in its Hello is selected at once. */
static void test_base_fetch_not_selected(void)
{
	struct fl_model *m = fake_small_model(9);
	char path[600];
	struct srv_engine_config cfg;
	base_setup(&cfg, path, sizeof(path), "engine-base-sel", 7, 253);
	cfg.rounds = 1;
	cfg.min_available = 1;
	cfg.min_report = 1;
	struct fake_net *net = fake_net_new(m, &cfg);
	FL_CHECK(net != NULL);
	struct fake_client *a = fake_connect(net, "a", 5, 1.0f, NULL);
	a->hold = 1;
	fake_pump(net);
	/* welcomed, enough clients, but still without the base: no task */
	FL_CHECK(a->welcomed && !a->closed);
	FL_CHECK_MSG(a->tasks == 0, "a client fetching the base got %d task(s)", a->tasks);
	FL_CHECK(srv_engine_round(net->e) == 0);
	fake_tick_at(net, net->now + 20000); /* no deadline ran out: nothing to retry */
	FL_CHECK(a->tasks == 0 && !srv_engine_failed(net->e, NULL));
	send_base_request(net, a, a->base_sha);
	fake_pump(net);
	FL_CHECK(a->base_chunks == 3 && a->base_got == 10000 && !a->closed);
	FL_CHECK(a->tasks == 1 && a->base_chunks_at_task == 3);
	uint8_t sha[32];
	memcpy(sha, a->base_sha, sizeof(sha));

	/* a second client that reports the server's base in its Hello is
	 * selectable straight away (it is picked in the next attempt) */
	struct fake_client *b = fake_connect_raw(net, "b");
	b->num_examples = 7;
	b->value = 2.0f;
	char *caps[] = {"eval"};
	Fedloha__V1__Hello h = FEDLOHA__V1__HELLO__INIT;
	h.protocol_version = FL_WIRE_PROTOCOL_VERSION;
	h.client_id = "b";
	h.num_examples = 7;
	h.n_capabilities = 1;
	h.capabilities = caps;
	h.has_base = 1;
	h.base_sha256.data = sha;
	h.base_sha256.len = 32;
	fl_envelope he = fl_test_envelope(&h.base);
	fake_send_env(net, b, &he);
	fake_pump(net);
	FL_CHECK(b->welcomed && b->tasks == 0); /* the round is under way with a */
	fake_answer(net, a);
	fake_pump(net);
	FL_CHECK(srv_engine_round(net->e) == 1 && srv_engine_finished(net->e));
	FL_CHECK(net->nrep == 1 && net->rep[0].selected == 1 && net->rep[0].reported == 1 &&
		 net->rep[0].examples == 5);
	fake_net_free(net);
	fl_model_free(m);

	/* with b alone: selected in the first round without any BaseRequest */
	m = fake_small_model(9);
	net = fake_net_new(m, &cfg);
	FL_CHECK(net != NULL);
	b = fake_connect_raw(net, "b");
	b->num_examples = 7;
	fake_send_env(net, b, &he);
	fake_pump(net);
	FL_CHECK(b->tasks == 1 && b->base_chunks == 0);
	FL_CHECK(srv_engine_finished(net->e) && net->nrep == 1 && net->rep[0].examples == 7);
	fake_net_free(net);
	fl_model_free(m);
}

static struct fake_client *hello_dtype(struct fake_net *net, const char *id, const char *cap,
				       enum fl_wire_dtype pref, int from_server)
{
	struct fake_client *c = fake_connect_raw(net, id);
	char *caps[] = {"eval", (char *)cap};
	Fedloha__V1__Hello h = FEDLOHA__V1__HELLO__INIT;
	h.protocol_version = FL_WIRE_PROTOCOL_VERSION;
	h.client_id = (char *)id;
	h.num_examples = 1;
	h.n_capabilities = cap ? 2 : 1;
	h.capabilities = caps;
	h.preferred_dtype = (Fedloha__V1__DType)pref;
	h.dtype_from_server = from_server;
	fl_envelope env = fl_test_envelope(&h.base);
	fake_send_env(net, c, &env);
	fake_pump(net);
	return c;
}

/* The coordinator's dtype (not required) goes to the clients that leave
 * the choice to it; a client's own preference wins; required wins over
 * both. */
static void test_dtype_offer(void)
{
	struct fl_model *m = fake_small_model(3);
	struct srv_engine_config cfg;
	base_config(&cfg);
	cfg.dtype = FL_WIRE_F16;
	cfg.min_available = 10; /* no round: only the Welcomes matter */
	struct fake_net *net = fake_net_new(m, &cfg);
	FL_CHECK(net != NULL);
	struct fake_client *a = hello_dtype(net, "a", "f16", FL_WIRE_F32, 1);
	struct fake_client *b = hello_dtype(net, "b", "f16", FL_WIRE_F32, 0);
	struct fake_client *c = hello_dtype(net, "c", "bf16", FL_WIRE_BF16, 1);
	struct fake_client *d = hello_dtype(net, "d", "bf16", FL_WIRE_BF16, 0);
	FL_CHECK(a->welcomed && b->welcomed && c->welcomed && d->welcomed);
	FL_CHECK_MSG(a->dtype == FL_WIRE_F16, "no preference: %d, want f16", (int)a->dtype);
	FL_CHECK(b->dtype == FL_WIRE_F32);  /* its own f32 */
	FL_CHECK(c->dtype == FL_WIRE_F32);  /* cannot take f16: f32 */
	FL_CHECK(d->dtype == FL_WIRE_BF16); /* its own bf16 */
	fake_net_free(net);
	cfg.dtype_required = 1;
	net = fake_net_new(m, &cfg);
	FL_CHECK(net != NULL);
	b = hello_dtype(net, "b", "f16", FL_WIRE_F32, 0);
	FL_CHECK(b->welcomed && b->dtype == FL_WIRE_F16);
	fake_net_free(net);
	fl_model_free(m);
}

int main(void)
{
	FL_RUN(test_base);
	FL_RUN(test_base_fetch_not_selected);
	FL_RUN(test_dtype_offer);
	return fl_test_main_end();
}
