/* test_engine.c - the round engine driven by fake clients over a fake
 * transport in virtual time: exact FedAvg over two rounds, selection
 * (fraction, min_fit, replay), quorum with a dropped client, retry after a
 * deadline and a late update, failure after max_retries, checkpoint +
 * restore equal to an uninterrupted run (bit-identical), FedAdam against its
 * formula, byte counters, federated evaluation, heartbeats / idle timeout.
 * Serving the loha base and the dtype offer: test_engine_base.c; malformed
 * input: test_engine_faults.c. */
#include "checkpoint.h"
#include "engine_fake.h"
#include "errors.h"
#include "model.h"
#include "safetensors.h"
#include "testutil.h"
#include "wireutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The tests' configuration: `rounds` rounds of 3 clients, each ending with
 * min_report updates, seed 11, an empty PEFT config. */
static struct srv_engine_config base_config(uint64_t rounds, int min_report)
{
	struct srv_engine_config c;
	fake_engine_config(&c, rounds, 11, min_report);
	c.config_json = "{}";
	return c;
}

/* The exact weighted mean of u_k = mix * g + v_k, rounded to float. */
static float expected_mean(float g, float mix, const float *v, const uint64_t *w, int k)
{
	long double s = 0, W = 0;
	for (int i = 0; i < k; i++) {
		float u = mix * g + v[i];
		s += (long double)u * (long double)w[i];
		W += (long double)w[i];
	}
	return (float)(s / W);
}

static void test_fedavg_two_rounds(void)
{
	struct fl_model *m = fake_small_model(1);
	size_t n = fl_model_count_floats(m, FL_TENSOR_GLOBAL);
	FL_CHECK(n == 4 * 256 + 256 + 256 * 3 + 3);
	float *g0 = malloc(n * sizeof(float));
	memcpy(g0, fl_model_params(m), n * sizeof(float));
	struct srv_engine_config cfg = base_config(2, 3);
	struct fake_net *net = fake_net_new(m, &cfg);
	FL_CHECK(net != NULL);
	const float v[3] = {1.0f, 2.0f, -0.5f};
	const uint64_t w[3] = {10, 30, 60};
	struct fake_client *c[3];
	c[0] = fake_connect(net, "alice", w[0], v[0], NULL);
	c[1] = fake_connect(net, "bob", w[1], v[1], NULL);
	FL_CHECK(c[0]->tasks == 0); /* min_available 3 not reached */
	c[2] = fake_connect(net, "carol", w[2], v[2], NULL);
	for (int i = 0; i < 3; i++) {
		c[i]->mix = 0.5f;
		c[i]->loss = 1.0 + i;
	}
	uint64_t cu = 0, cd = 0;
	FL_CHECK(srv_engine_conn_bytes(net->e, c[0]->conn, &cu, &cd) && cu > 0 && cd > 0);
	FL_CHECK(!srv_engine_conn_bytes(net->e, 999999, NULL, NULL));
	FL_CHECK(fake_run(net, 100000));
	FL_CHECK(srv_engine_round(net->e) == 2);
	FL_CHECK(net->nrep == 2);
	/* Round 1 from g0, round 2 from its result. */
	const float *g = fl_model_params(m);
	int bad = 0;
	for (size_t i = 0; i < n; i++) {
		float r1 = expected_mean(g0[i], 0.5f, v, w, 3);
		float r2 = expected_mean(r1, 0.5f, v, w, 3);
		if (g[i] != r2) /* exact: the u_k are multiples of 2^-40 */
			bad++;
	}
	FL_CHECK_MSG(bad == 0, "%d of %zu global floats differ from the weighted mean", bad, n);
	FL_CHECK(net->rep[0].round == 1 && net->rep[1].round == 2);
	FL_CHECK(net->rep[1].selected == 3 && net->rep[1].reported == 3);
	FL_CHECK(net->rep[0].dropped == 0 && net->rep[0].rejected == 0);
	FL_CHECK(net->rep[0].examples == 100);
	FL_CHECK_NEAR(net->rep[0].train_loss, (10 * 1.0 + 30 * 2.0 + 60 * 3.0) / 100.0, 1e-12, 0);
	for (int i = 0; i < 3; i++) {
		FL_CHECK(c[i]->tasks == 2 && c[i]->updates_sent == 2);
		FL_CHECK(c[i]->byes == 1 && strcmp(c[i]->bye, "done") == 0 && c[i]->closed);
		FL_CHECK(c[i]->error_code == 0);
	}
	FL_CHECK(srv_engine_finished(net->e) && !srv_engine_failed(net->e, NULL));
	FL_CHECK(srv_engine_conn_count(net->e) == 0);
	/* Byte counters: what the engine counted is what the transport carried. */
	uint64_t up = 0, down = 0, sum_up = 0;
	srv_engine_bytes(net->e, &up, &down);
	FL_CHECK(up == net->recv_bytes && down == net->sent_bytes);
	for (int r = 0; r < net->nrep; r++)
		sum_up += net->rep[r].bytes_up;
	FL_CHECK(sum_up == up && net->rep[1].total_up == up);
	FL_CHECK(net->rep[1].total_down <= down && net->rep[1].total_down > 6 * n * 4);
	/* One task per round is f32: at least 3 clients x n floats x 4 bytes. */
	FL_CHECK(net->rep[0].bytes_down > 3 * n * 4 && net->rep[0].bytes_up > 3 * n * 4);
	fake_net_free(net);
	free(g0);
	fl_model_free(m);
}

/* The set of clients tasked in round 1 as a bit mask. */
static unsigned selection(uint64_t seed, double fraction, int min_fit, int *selected)
{
	struct srv_engine_config cfg = base_config(1, 1);
	cfg.seed = seed;
	cfg.min_available = 10;
	cfg.fraction = fraction;
	cfg.min_fit = min_fit;
	struct fake_net *net = fake_net_own(1, &cfg);
	struct fake_client *c[10];
	char id[16];
	/* Connect in a scrambled order: selection must not depend on it. */
	for (int i = 0; i < 10; i++) {
		snprintf(id, sizeof(id), "c%02d", (i * 7) % 10);
		c[i] = fake_connect(net, id, 5, 1.0f, NULL);
	}
	FL_CHECK(fake_run(net, 100000));
	unsigned mask = 0;
	for (int i = 0; i < 10; i++)
		if (c[i]->tasks)
			mask |= 1u << ((i * 7) % 10);
	*selected = net->rep[0].selected;
	fake_net_free(net);
	return mask;
}

static void test_selection(void)
{
	int sel = 0;
	unsigned a = selection(5, 0.3, 2, &sel);
	FL_CHECK(sel == 3 && __builtin_popcount(a) == 3);
	unsigned b = selection(5, 0.3, 2, &sel);
	FL_CHECK(a == b); /* same seed, same round: same clients */
	selection(5, 0.1, 2, &sel);
	FL_CHECK(sel == 2); /* min_fit wins over ceil(0.1 * 10) = 1 */
	selection(5, 0.7, 1, &sel);
	FL_CHECK(sel == 7); /* 0.7 * 10 is 7.000000000000001 in double */
	unsigned c = selection(5, 0.0, 4, &sel);
	FL_CHECK(sel == 4 && __builtin_popcount(c) == 4);
	int differs = 0;
	for (uint64_t s = 6; s < 12; s++)
		differs |= selection(s, 0.3, 2, &sel) != a;
	FL_CHECK(differs);
}

static void test_quorum_with_drop(void)
{
	struct srv_engine_config cfg = base_config(1, 2);
	struct fake_net *net = fake_net_own(2, &cfg);
	struct fl_model *m = net->model;
	fake_connect(net, "a", 10, 1.0f, NULL);
	fake_connect(net, "b", 30, 2.0f, NULL);
	struct fake_client *d = fake_connect(net, "c", 60, 100.0f, NULL);
	d->drop_on_task = 1;
	uint64_t t0 = net->now;
	FL_CHECK(fake_run(net, 100000));
	FL_CHECK(net->now == t0); /* no need to wait for the deadline */
	FL_CHECK(net->rep[0].selected == 3 && net->rep[0].reported == 2 &&
		 net->rep[0].dropped == 1);
	const float *g = fl_model_params(m);
	FL_CHECK(g[0] == 1.75f && g[100] == 1.75f); /* (10*1 + 30*2) / 40 */
	fake_net_free(net);
}

/* The retry tests' net: model seed 3; clients a, b and c of 10 samples
 * each, sending 1, 3 and 5. */
static struct fake_net *abc_net(const struct srv_engine_config *cfg, struct fake_client *cl[3])
{
	struct fake_net *net = fake_net_own(3, cfg);
	const char *id[3] = {"a", "b", "c"};
	for (int i = 0; i < 3; i++)
		cl[i] = fake_connect(net, id[i], 10, 1.0f + 2.0f * (float)i, NULL);
	return net;
}

static void test_retry_and_late(void)
{
	struct srv_engine_config cfg = base_config(1, 2);
	cfg.max_retries = 2;
	struct fake_client *k[3];
	struct fake_net *net = abc_net(&cfg, k);
	struct fake_client *a = k[0], *b = k[1], *c = k[2];
	a->hold = b->hold = 1;
	fake_pump(net);
	FL_CHECK(c->updates_sent == 1 && net->nrep == 0);
	uint64_t t0 = net->now;
	FL_CHECK(srv_engine_next_deadline(net->e) == t0 + cfg.round_timeout_ms);
	fake_tick_at(net, t0 + cfg.round_timeout_ms - 1);
	FL_CHECK(net->nrep == 0);
	fake_tick_at(net, t0 + cfg.round_timeout_ms); /* 1 < 2 reports: retry */
	FL_CHECK(net->nrep == 0 && !srv_engine_failed(net->e, NULL));
	/* a and b missed the deadline: not selectable; two fresh clients come. */
	struct fake_client *d = fake_connect(net, "d", 10, 7.0f, NULL);
	struct fake_client *e = fake_connect(net, "e", 30, 9.0f, NULL);
	FL_CHECK(fake_run(net, 100000));
	FL_CHECK(net->nrep == 1 && net->rep[0].attempts == 2 && net->rep[0].reported == 3);
	FL_CHECK(c->tasks == 2 && d->tasks == 1 && e->tasks == 1 && a->tasks == 1);
	const float *g = fl_model_params(net->model);
	FL_CHECK(g[7] == (float)((10 * 5.0 + 10 * 7.0 + 30 * 9.0) / 50.0));
	fake_net_free(net);

	/* Late: the held client answers after the deadline of an aggregated round. */
	cfg.rounds = 2;
	net = abc_net(&cfg, k);
	a = k[0], b = k[1], c = k[2];
	c->hold = 1;
	fake_pump(net);
	fake_tick_at(net, net->now + cfg.round_timeout_ms);
	FL_CHECK(net->nrep == 1 && net->rep[0].reported == 2);
	FL_CHECK(a->tasks == 1); /* c is LATE, not available: round 2 waits for a third */
	struct fake_client *d2 = fake_connect(net, "d", 10, 5.0f, NULL);
	d2->hold = 1;
	fake_pump(net);
	FL_CHECK(a->tasks == 2 && d2->tasks == 1 && c->tasks == 1); /* round 2 without c */
	fake_answer(net, c);
	fake_pump(net);
	FL_CHECK(c->closed && c->error_code == (uint32_t)-FL_ERANGE);
	FL_CHECK(strstr(c->error_msg, "late") != NULL);
	FL_CHECK(!a->closed && !d2->closed);
	FL_CHECK(fake_run(net, 100000));
	FL_CHECK(net->nrep == 2 && net->rep[1].reported == 2);
	fake_net_free(net);

	/* Too few reports at every attempt: the engine fails. */
	cfg.rounds = 1;
	cfg.max_retries = 0;
	net = abc_net(&cfg, k);
	a = k[0], b = k[1], c = k[2];
	a->hold = b->hold = 1;
	FL_CHECK(!fake_run(net, 100000));
	const char *why = NULL;
	FL_CHECK(srv_engine_failed(net->e, &why) && why && strstr(why, "round 1"));
	FL_CHECK(a->closed && c->closed && strstr(c->bye, "failed") != NULL);
	fake_net_free(net);
}

/* Three rounds of fedadam with 3 of 4 clients selected per round; when
 * ckpt is set, the run stops after `stop` rounds and a fresh engine restores
 * and finishes. The final global slice goes to out. */
static void adam_run(const char *ckpt, int stop, float *out, size_t n)
{
	struct srv_engine_config cfg = base_config(3, 3);
	cfg.min_available = 4;
	cfg.fraction = 0.75;
	srv_optim_config_default(&cfg.server_opt, SRV_OPTIM_FEDADAM);
	cfg.checkpoint_path = ckpt;
	int phases = ckpt ? 2 : 1;
	for (int p = 0; p < phases; p++) {
		struct fl_model *m = fake_small_model(4);
		cfg.rounds = ckpt && p == 0 ? (uint64_t)stop : 3;
		struct fake_net *net = fake_net_new(m, &cfg);
		FL_CHECK(srv_engine_restore(net->e) == FL_OK);
		if (p == 1) {
			FL_CHECK(srv_engine_round(net->e) == (uint64_t)stop);
			uint64_t up = 0;
			srv_engine_bytes(net->e, &up, NULL);
			FL_CHECK(up > 0);
		}
		const char *ids[4] = {"w", "x", "y", "z"};
		for (int i = 0; i < 4; i++) {
			struct fake_client *c = fake_connect(net, ids[i], 10 + 7 * (uint64_t)i,
							     0.25f * (float)i, NULL);
			c->mix = 0.9f;
		}
		FL_CHECK(fake_run(net, 100000));
		FL_CHECK(srv_engine_round(net->e) == cfg.rounds);
		memcpy(out, fl_model_params(m), n * sizeof(float));
		fake_net_free(net);
		fl_model_free(m);
	}
}

static void test_checkpoint_restore(void)
{
	struct fl_model *m = fake_small_model(4);
	size_t n = fl_model_count_floats(m, FL_TENSOR_GLOBAL);
	fl_model_free(m);
	float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
	char path[600];
	snprintf(path, sizeof(path), "%s/ckpt.safetensors", fl_test_tmpdir("engine-ckpt"));
	adam_run(NULL, 0, a, n);
	adam_run(path, 2, b, n);
	FL_CHECK(memcmp(a, b, n * sizeof(float)) == 0);
	struct fl_st *st = NULL;
	FL_CHECK(fl_st_read(path, &st) == FL_OK);
	FL_CHECK(st && strcmp(fl_st_metadata(st, "round"), "3") == 0);
	FL_CHECK(st && strcmp(fl_st_metadata(st, "server_opt"), "fedadam") == 0);
	FL_CHECK(st && fl_st_find(st, "server_opt.v") != NULL);
	fl_st_free(st);
	/* Restoring a checkpoint of the last round: finished at once. */
	struct fl_model *m2 = fake_small_model(4);
	struct srv_engine_config cfg = base_config(3, 3);
	cfg.seed = 11;
	srv_optim_config_default(&cfg.server_opt, SRV_OPTIM_FEDADAM);
	cfg.checkpoint_path = path;
	struct fake_net *net = fake_net_new(m2, &cfg);
	FL_CHECK(srv_engine_restore(net->e) == FL_OK && srv_engine_finished(net->e));
	FL_CHECK(memcmp(fl_model_params(m2), a, n * sizeof(float)) == 0);
	fake_net_free(net);
	/* Another strategy or seed: refused, nothing changed. */
	cfg.seed = 12;
	net = fake_net_new(m2, &cfg);
	FL_CHECK(srv_engine_restore(net->e) == FL_EINVAL && srv_engine_round(net->e) == 0);
	fake_net_free(net);
	fl_model_free(m2);
	free(a);
	free(b);
}

static void test_fedadam_formula(void)
{
	struct fl_model *m = fake_small_model(5);
	size_t n = fl_model_count_floats(m, FL_TENSOR_GLOBAL);
	float *x0 = malloc(n * sizeof(float));
	memcpy(x0, fl_model_params(m), n * sizeof(float));
	struct srv_engine_config cfg = base_config(1, 3);
	srv_optim_config_default(&cfg.server_opt, SRV_OPTIM_FEDADAM);
	struct fake_net *net = fake_net_new(m, &cfg);
	fake_connect(net, "a", 10, 1.0f, NULL);
	fake_connect(net, "b", 30, 2.0f, NULL);
	fake_connect(net, "c", 60, -0.5f, NULL);
	FL_CHECK(fake_run(net, 100000));
	const struct srv_optim_config *o = &cfg.server_opt;
	double b1 = o->beta1, b2 = o->beta2;
	double eta = o->eta * sqrt(1 - b2 * b2) / (1 - b1 * b1); /* Flower eta_norm, round 1 */
	const float *x = fl_model_params(m);
	int bad = 0, moved = 0;
	for (size_t i = 0; i < n; i++) {
		double d = 0.4 - (double)x0[i]; /* y = FedAvg = 0.4 */
		double mm = (1 - b1) * d, vv = (1 - b2) * d * d;
		double want = x0[i] + eta * mm / (sqrt(vv) + o->tau);
		if (fabs(x[i] - want) > 1e-5 * (1 + fabs(want)))
			bad++;
		moved += fabsf(x[i] - 0.4f) > 1e-3f;
	}
	FL_CHECK_MSG(bad == 0, "%d floats differ from the FedAdam formula", bad);
	FL_CHECK(moved > (int)n / 2); /* not the FedAvg result */
	fake_net_free(net);
	free(x0);
	fl_model_free(m);
}

static void test_eval(void)
{
	struct srv_engine_config cfg = base_config(3, 3);
	cfg.eval_every = 2; /* after rounds 2 and 3 (the last) */
	struct fake_net *net = fake_net_own(6, &cfg);
	struct fake_client *c[3];
	c[0] = fake_connect(net, "a", 10, 0.5f, NULL);
	c[1] = fake_connect(net, "b", 30, 0.7f, NULL);
	c[2] = fake_connect_raw(net, "c"); /* no "eval" capability */
	c[2]->num_examples = 60;
	fake_send_hello(net, c[2], FL_WIRE_PROTOCOL_VERSION, "c", "", FL_WIRE_F32);
	c[0]->loss = 2.0;
	c[1]->loss = 1.0;
	FL_CHECK(fake_run(net, 100000));
	FL_CHECK(net->nrep == 3);
	FL_CHECK(net->rep[0].eval_clients == 0);
	FL_CHECK(net->rep[1].eval_clients == 2 && net->rep[2].eval_clients == 2);
	FL_CHECK_NEAR(net->rep[1].eval_loss, (10 * 2.0 + 30 * 1.0) / 40.0, 1e-12, 0);
	FL_CHECK_NEAR(net->rep[2].eval_accuracy, (10 * 0.5 + 30 * 0.7) / 40.0, 1e-6, 0);
	FL_CHECK(c[0]->evals == 2 && c[2]->evals == 0);
	fake_net_free(net);
}

static void test_heartbeat_idle(void)
{
	struct srv_engine_config cfg = base_config(2, 3);
	cfg.heartbeat_ms = 1000;
	cfg.idle_timeout_ms = 3500;
	struct fake_net *net = fake_net_own(7, &cfg);
	uint64_t t0 = net->now;
	struct fake_client *a = fake_connect(net, "a", 1, 0, NULL);
	struct fake_client *raw = fake_connect_raw(net, "never-says-hello");
	FL_CHECK(srv_engine_next_deadline(net->e) == t0 + 1000);
	fake_tick_at(net, t0 + 1000);
	fake_tick_at(net, t0 + 2000);
	FL_CHECK(a->heartbeats == 2 && raw->heartbeats == 0);
	/* a stays alive by sending heartbeats; raw goes silent. */
	Fedloha__V1__Heartbeat hb = FEDLOHA__V1__HEARTBEAT__INIT;
	fl_envelope env = fl_test_envelope(&hb.base);
	fake_send_env(net, a, &env);
	fake_tick_at(net, t0 + 3500);
	FL_CHECK(raw->closed && raw->error_code == (uint32_t)-FL_EIO);
	FL_CHECK(!a->closed);
	fake_tick_at(net, t0 + 2000 + 3500);
	FL_CHECK(a->closed && srv_engine_conn_count(net->e) == 0);
	fake_net_free(net);
}

int main(void)
{
	FL_RUN(test_fedavg_two_rounds);
	FL_RUN(test_selection);
	FL_RUN(test_quorum_with_drop);
	FL_RUN(test_retry_and_late);
	FL_RUN(test_checkpoint_restore);
	FL_RUN(test_fedadam_formula);
	FL_RUN(test_eval);
	FL_RUN(test_heartbeat_idle);
	return fl_test_main_end();
}
