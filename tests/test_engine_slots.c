/* test_engine_slots.c - the engine's bounded upload slots
 * (engine_upload.c): with one slot, uploads that arrive together park at
 * their Update header and resume in order; the aggregate is bit for bit
 * the one of unbounded staging; an update refused mid-upload leaves no
 * trace (the same model as when that client never answered); a connection
 * parked past the deadline has its update read and discarded (no slot),
 * then is selectable again; parked and idle, it is not dropped by the idle
 * timeout; 20 seeded random interleavings of 30 clients' headers and
 * chunks over 1-3 slots give the unbounded model; the number of slots a
 * memory budget holds (srv_engine_upload_slots_for). */
#include "engine_fake.h"
#include "errors.h"
#include "model.h"
#include "testutil.h"
#include "wireutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NCL 4

enum scenario {
	ALL_GOOD,  /* everyone uploads, c0's chunks last */
	C0_REJECT, /* c0 sends its header, then a NaN chunk */
	C0_SILENT, /* c0 never answers and disconnects */
};

struct run {
	struct fl_model *m;
	struct fake_net *net;
	struct fake_client *c[NCL];
	float *vals[NCL];
	size_t n;
};

static void run_start(struct run *r, uint32_t slots, uint32_t idle_ms)
{
	memset(r, 0, sizeof(*r));
	r->m = fake_small_model(1);
	r->n = fl_model_count_floats(r->m, FL_TENSOR_GLOBAL);
	struct srv_engine_config cfg;
	fake_engine_config(&cfg, 1, 11, 3);
	cfg.min_available = NCL;
	cfg.upload_slots = slots;
	cfg.idle_timeout_ms = idle_ms;
	r->net = slots ? fake_net_new_bp(r->m, &cfg) : fake_net_new(r->m, &cfg);
	FL_CHECK(r->net != NULL);
	for (int i = 0; i < NCL; i++) {
		char id[16];
		snprintf(id, sizeof(id), "c%d", i);
		r->c[i] = fake_connect(r->net, id, (uint64_t)(10 + 7 * i), 0.0f, NULL);
		r->c[i]->hold = 1;
		r->vals[i] = malloc(r->n * sizeof(float));
		for (size_t j = 0; j < r->n; j++)
			r->vals[i][j] = 0.25f * (float)(i + 1) + 1e-3f * (float)(j % 97);
	}
	fake_pump(r->net);
	for (int i = 0; i < NCL; i++)
		FL_CHECK(r->c[i]->tasks == 1);
}

static void run_free(struct run *r)
{
	fake_net_free(r->net);
	for (int i = 0; i < NCL; i++)
		free(r->vals[i]);
	fl_model_free(r->m);
}

static void send(struct run *r, int i, int parts)
{
	fake_send_update_parts(r->net, r->c[i], 1, r->c[i]->num_examples, r->vals[i], parts);
}

/* The scenario's frames in an order that makes uploads overlap; returns
 * the final global model (n floats, malloc'd). */
static float *play(uint32_t slots, enum scenario sc, struct srv_upload_stats *st)
{
	struct run r;
	run_start(&r, slots, 0);
	if (sc != C0_SILENT)
		send(&r, 0, FAKE_HEADER);
	send(&r, 1, FAKE_HEADER | FAKE_CHUNKS);
	send(&r, 2, FAKE_HEADER | FAKE_CHUNKS);
	send(&r, 3, FAKE_HEADER);
	if (slots == 1 && sc != C0_SILENT) /* c0 holds the slot: 1, 2, 3 wait */
		FL_CHECK(r.net->pauses == 3 && r.c[1]->paused && r.c[3]->nheld == 1);
	if (sc == ALL_GOOD) {
		send(&r, 0, FAKE_CHUNKS);
	} else if (sc == C0_REJECT) {
		const struct fl_model_tensor *t = fl_model_tensor_at(r.m, 0);
		float bad[4] = {1.0f, NAN, 2.0f, 3.0f};
		fake_send_chunk(r.net, r.c[0], 1, t->name, t->shape, t->ndim, FL_WIRE_F32, 0, bad,
				sizeof(bad), 0);
		fake_pump(r.net);
		FL_CHECK_MSG(r.c[0]->closed && r.c[0]->error_code == (uint32_t)-FL_ENONFINITE,
			     "NaN chunk: error %u (%s)", r.c[0]->error_code, r.c[0]->error_msg);
	} else {
		fake_disconnect(r.net, r.c[0]);
	}
	send(&r, 3, FAKE_CHUNKS);
	FL_CHECK(fake_run(r.net, 100000));
	FL_CHECK(r.net->nrep == 1);
	const struct srv_round_report *rep = &r.net->rep[0];
	FL_CHECK(rep->reported == (sc == ALL_GOOD ? 4 : 3));
	FL_CHECK(rep->rejected == (sc == C0_REJECT) && rep->dropped == (sc == C0_SILENT));
	for (int i = 1; i < NCL; i++)
		FL_CHECK(!r.c[i]->error_code && r.c[i]->nheld == 0 && !r.c[i]->paused);
	uint64_t up = 0;
	srv_engine_bytes(r.net->e, &up, NULL);
	FL_CHECK_MSG(up == r.net->recv_bytes, "engine counted %llu bytes up, transport %llu",
		     (unsigned long long)up, (unsigned long long)r.net->recv_bytes);
	srv_engine_upload_stats(r.net->e, st);
	FL_CHECK(st->in_use == 0);
	float *out = malloc(r.n * sizeof(float));
	memcpy(out, fl_model_params(r.m), r.n * sizeof(float));
	run_free(&r);
	return out;
}

static void test_same_results(void)
{
	struct srv_upload_stats st;
	struct fl_model *m = fake_small_model(1);
	size_t n = fl_model_count_floats(m, FL_TENSOR_GLOBAL);
	fl_model_free(m);
	float *ref = play(0, ALL_GOOD, &st);
	FL_CHECK(st.slots == 0 && st.parked == 0);
	float *one = play(1, ALL_GOOD, &st);
	FL_CHECK(st.slots == 1 && st.peak == 1 && st.parked == 3);
	float *two = play(2, ALL_GOOD, &st);
	FL_CHECK(st.peak == 2 && st.parked == 0); /* 1 and 2 finish before 3 starts */
	FL_CHECK(memcmp(ref, one, n * sizeof(float)) == 0);
	FL_CHECK(memcmp(ref, two, n * sizeof(float)) == 0);
	free(ref);
	free(one);
	free(two);
}

static void test_reject_leaves_no_trace(void)
{
	struct srv_upload_stats st;
	struct fl_model *m = fake_small_model(1);
	size_t n = fl_model_count_floats(m, FL_TENSOR_GLOBAL);
	fl_model_free(m);
	float *silent = play(0, C0_SILENT, &st);
	float *rej1 = play(1, C0_REJECT, &st);
	FL_CHECK(st.parked == 3);
	float *rej0 = play(0, C0_REJECT, &st);
	FL_CHECK(memcmp(silent, rej1, n * sizeof(float)) == 0);
	FL_CHECK(memcmp(silent, rej0, n * sizeof(float)) == 0);
	free(silent);
	free(rej1);
	free(rej0);
}

static void heartbeat(struct run *r, int i)
{
	Fedloha__V1__Heartbeat hb = FEDLOHA__V1__HEARTBEAT__INIT;
	hb.time_ms = r->net->now;
	fl_envelope env = fl_test_envelope(&hb.base);
	fake_send_env(r->net, r->c[i], &env);
}

/* Parked longer than the idle timeout (4 s) while the others talk: kept.
 * Still parked at the round's deadline (10 s): resumed, its update read
 * and discarded (not the client's fault: the server chose not to read it),
 * then READY: with three new clients the retried attempt selects it. */
static void test_parked_late_and_idle(void)
{
	struct run r;
	run_start(&r, 1, 4000);
	uint64_t t0 = r.net->now;
	send(&r, 0, FAKE_HEADER);
	send(&r, 1, FAKE_HEADER | FAKE_CHUNKS);
	FL_CHECK(r.c[1]->paused && r.net->pauses == 1);
	for (uint64_t t = t0 + 1000; t <= t0 + 9000; t += 1000) {
		fake_tick_at(r.net, t);
		for (int i = 0; i < NCL; i++)
			if (i != 1)
				heartbeat(&r, i);
	}
	FL_CHECK_MSG(!r.c[1]->closed && r.c[1]->paused, "a parked client was dropped as idle");
	fake_tick_at(r.net, t0 + 10000);
	FL_CHECK(r.net->resumes == 1 && !r.c[1]->paused);
	FL_CHECK_MSG(!r.c[1]->closed && !r.c[1]->error_code && r.c[1]->nheld == 0,
		     "parked past the deadline: error %u (%s)", r.c[1]->error_code,
		     r.c[1]->error_msg);
	struct srv_upload_stats st;
	srv_engine_upload_stats(r.net->e, &st);
	FL_CHECK(st.in_use == 0 && st.discarded == 1);
	FL_CHECK(r.net->nrep == 0 && r.c[1]->tasks == 1);
	struct fake_client *more[3];
	for (int i = 0; i < 3; i++) {
		char id[16];
		snprintf(id, sizeof(id), "n%d", i);
		more[i] = fake_connect(r.net, id, 5, 0.0f, NULL);
	}
	fake_pump(r.net);
	FL_CHECK_MSG(r.c[1]->tasks == 2 && more[0]->tasks == 1,
		     "the discarded client was not selected again: %d tasks", r.c[1]->tasks);
	run_free(&r);
}

/* upload_slots without pause / resume is refused at creation. */
static void test_needs_backpressure(void)
{
	struct fl_model *m = fake_small_model(1);
	struct srv_engine_config cfg;
	fake_engine_config(&cfg, 1, 11, 3);
	cfg.upload_slots = 2;
	FL_CHECK(fake_net_new(m, &cfg) == NULL);
	FL_CHECK(strstr(fl_error_msg(), "pause") != NULL);
	fl_model_free(m);
}

/* 30 clients with distinct values and weights, 1-3 slots, every update's
 * frames sent in random pieces interleaved at random (seeded): every
 * update counted, the model bit for bit the one of unbounded staging (an
 * update staged in another client's slot would change it). */
static float *stress(uint32_t slots, uint64_t seed)
{
	struct fl_model *m = fake_small_model(1);
	size_t n = fl_model_count_floats(m, FL_TENSOR_GLOBAL);
	struct srv_engine_config cfg;
	fake_engine_config(&cfg, 2, 11, 30);
	cfg.min_available = 30;
	cfg.upload_slots = slots;
	struct fake_net *net = slots ? fake_net_new_bp(m, &cfg) : fake_net_new(m, &cfg);
	struct fake_client *c[30];
	float *vals = malloc(30 * n * sizeof(float));
	for (size_t i = 0; i < 30; i++)
		for (size_t j = 0; j < n; j++)
			vals[i * n + j] = 0.01f * (float)(j % 13) + 0.037f * (float)i;
	for (int i = 0; i < 30; i++) {
		char id[16];
		snprintf(id, sizeof(id), "s%02d", i);
		c[i] = fake_connect(net, id, (uint64_t)(1 + 3 * i), 0.0f, NULL);
		c[i]->hold = 1;
	}
	uint64_t x = seed;
	for (uint64_t r = 1; r <= 2; r++) {
		fake_pump(net);
		int part[30] = {0}, left = 30;
		while (left) { /* header (1), then chunks (2), per client, interleaved */
			x = x * 6364136223846793005ull + 1442695040888963407ull;
			int i = (int)((x >> 33) % 30);
			if (part[i] == 2)
				continue;
			part[i]++;
			fake_send_update_parts(net, c[i], r, c[i]->num_examples,
					       vals + (size_t)i * n,
					       part[i] == 1 ? FAKE_HEADER : FAKE_CHUNKS);
			if (part[i] == 2)
				left--;
		}
		fake_pump(net);
		FL_CHECK_MSG(net->nrep == (int)r && net->rep[r - 1].reported == 30,
			     "stress seed %llu round %llu: %d reports, %d reported",
			     (unsigned long long)seed, (unsigned long long)r, net->nrep,
			     net->nrep ? net->rep[net->nrep - 1].reported : -1);
		if (net->nrep != (int)r)
			break;
	}
	float *out = malloc(n * sizeof(float));
	memcpy(out, fl_model_params(m), n * sizeof(float));
	free(vals);
	fake_net_free(net);
	fl_model_free(m);
	return out;
}

static void test_stress(void)
{
	struct fl_model *m = fake_small_model(1);
	size_t n = fl_model_count_floats(m, FL_TENSOR_GLOBAL);
	fl_model_free(m);
	float *ref = stress(0, 1);
	for (uint64_t seed = 1; seed <= 20; seed++) {
		float *got = stress(seed % 3 + 1, seed);
		FL_CHECK(memcmp(ref, got, n * sizeof(float)) == 0);
		free(got);
	}
	free(ref);
}

/* budget / (4 nglobal), clamped to 1..SRV_UPLOAD_SLOTS_DEFAULT */
static void test_slots_for_budget(void)
{
	const uint64_t mib = 1u << 20;
	FL_CHECK(srv_engine_upload_slots_for(256 * mib, 58938) == 1024); /* 2nn: 1138 fit */
	FL_CHECK(srv_engine_upload_slots_for(10 * mib, 58938) == 44);
	FL_CHECK(srv_engine_upload_slots_for(256 * mib, 25000000) == 2); /* a 100 MB model */
	FL_CHECK(srv_engine_upload_slots_for(256 * mib, 50000000) == 1); /* over the budget */
	FL_CHECK(srv_engine_upload_slots_for(256 * mib, 16 * mib) == 4);
	FL_CHECK(srv_engine_upload_slots_for(256 * mib - 1, 16 * mib) == 3);
	FL_CHECK(srv_engine_upload_slots_for(4096, 1) == 1024);
	FL_CHECK(srv_engine_upload_slots_for(4095, 1) == 1023);
	FL_CHECK(srv_engine_upload_slots_for(1, 0) == 1024); /* no global tensors */
	FL_CHECK(srv_engine_upload_slots_for(0, 1) == 1);
	FL_CHECK(srv_engine_upload_slots_for(UINT64_MAX, (size_t)1 << 40) == 1024);
	FL_CHECK(srv_engine_upload_slots_for(UINT64_MAX, SIZE_MAX / 8) == 2);
	FL_CHECK(srv_engine_upload_slots_for(UINT64_MAX, SIZE_MAX) == 1); /* no overflow */
}

int main(void)
{
	FL_RUN(test_slots_for_budget);
	FL_RUN(test_same_results);
	FL_RUN(test_reject_leaves_no_trace);
	FL_RUN(test_parked_late_and_idle);
	FL_RUN(test_needs_backpressure);
	FL_RUN(test_stress);
	return fl_test_main_end();
}
