/* engine_fake.c - the fake transport and fake clients of engine_fake.h. */
#include "engine_fake.h"

#include "errors.h"
#include "model.h"
#include "testutil.h"
#include "wireutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct fake_client *by_conn(struct fake_net *net, uint64_t conn)
{
	for (int i = 0; i < net->n; i++)
		if (net->cl[i]->conn == conn)
			return net->cl[i];
	return NULL;
}

static int io_send(void *ctx, uint64_t conn, struct fl_buf *frame)
{
	struct fake_net *net = ctx;
	struct fake_client *c = by_conn(net, conn);
	net->sent_bytes += frame->len;
	if (!c || c->closed) {
		fprintf(stderr, "fake: frame to unknown or closed conn %llu\n",
			(unsigned long long)conn);
		fl_buf_unref(frame);
		return 0;
	}
	if (c->nq == c->cap) {
		c->cap = c->cap ? 2 * c->cap : 64;
		c->q = realloc(c->q, c->cap * sizeof(*c->q));
	}
	c->q[c->nq++] = frame;
	return 0;
}

static void io_close(void *ctx, uint64_t conn)
{
	struct fake_client *c = by_conn(ctx, conn);
	if (c)
		c->closed = 1;
}

static void io_pause(void *ctx, uint64_t conn)
{
	struct fake_net *net = ctx;
	struct fake_client *c = by_conn(net, conn);
	net->pauses++;
	if (c)
		c->paused = c->pause_now = 1;
}

static void io_resume(void *ctx, uint64_t conn)
{
	struct fake_net *net = ctx;
	struct fake_client *c = by_conn(net, conn);
	net->resumes++;
	if (!c || !c->paused || c->resume_queued || net->nres == FAKE_MAX_CLIENTS)
		return;
	c->resume_queued = 1;
	net->resq[net->nres++] = c;
}

static void hold(struct fake_client *c, const uint8_t *p, size_t n)
{
	if (c->nheld == c->heldcap) {
		c->heldcap = c->heldcap ? 2 * c->heldcap : 16;
		c->held = realloc(c->held, c->heldcap * sizeof(*c->held));
	}
	struct fl_buf *b = fl_buf_new(n);
	memcpy(b->data, p, n);
	b->len = n;
	c->held[c->nheld++] = b;
}

static void deliver(struct fake_net *net, struct fake_client *c, const uint8_t *p, size_t n)
{
	net->recv_bytes += n + FL_WIRE_FRAME_HEADER_BYTES;
	srv_engine_on_frame(net->e, c->conn, p, n, net->now);
}

/* Resumed clients get their held frames delivered again, in order, until
 * one pauses again. */
static void resume_pending(struct fake_net *net)
{
	while (net->nres) {
		struct fake_client *c = net->resq[0];
		memmove(net->resq, net->resq + 1, (size_t)--net->nres * sizeof(*net->resq));
		c->resume_queued = 0;
		c->paused = 0;
		size_t k = 0;
		while (k < c->nheld && !c->closed && !c->paused) {
			deliver(net, c, c->held[k]->data, c->held[k]->len);
			if (c->paused) {
				c->pause_now = 0;
				net->recv_bytes -= c->held[k]->len + FL_WIRE_FRAME_HEADER_BYTES;
				break;
			}
			fl_buf_unref(c->held[k++]);
		}
		memmove(c->held, c->held + k, (c->nheld - k) * sizeof(*c->held));
		c->nheld -= k;
	}
}

static void io_on_round(void *ctx, const struct srv_round_report *r)
{
	struct fake_net *net = ctx;
	if (net->nrep < FAKE_MAX_REPORTS)
		net->rep[net->nrep++] = *r;
}

struct fl_model *fake_small_model(uint64_t seed)
{
	struct fl_model *m = NULL;
	int err = fl_model_new("mlp", 1, 2, 2, 3, NULL, seed, 1, &m);
	FL_CHECK_MSG(err == FL_OK, "model: %s", fl_error_msg());
	return m;
}

void fake_engine_config(struct srv_engine_config *c, uint64_t rounds, uint64_t seed, int min_report)
{
	srv_engine_config_default(c);
	c->rounds = rounds;
	c->seed = seed;
	c->min_available = 3;
	c->min_report = min_report;
	c->round_timeout_ms = 10000;
	c->heartbeat_ms = c->idle_timeout_ms = 0; /* no heartbeat, no idle timeout */
	c->chunk_bytes = 2048;
	c->max_frame_bytes = 65536;
}

static struct fake_net *net_new(struct fl_model *model, const struct srv_engine_config *cfg, int bp)
{
	struct fake_net *net = calloc(1, sizeof(*net));
	net->model = model;
	net->nglobal = fl_model_count_floats(model, FL_TENSOR_GLOBAL);
	net->now = 1000;
	net->next_conn = 100;
	struct srv_engine_io io = {net, io_send, io_close, io_on_round, NULL, NULL};
	if (bp) {
		io.pause = io_pause;
		io.resume = io_resume;
	}
	if (srv_engine_new(cfg, model, &io, &net->e) != FL_OK) {
		free(net);
		return NULL;
	}
	return net;
}

struct fake_net *fake_net_new(struct fl_model *model, const struct srv_engine_config *cfg)
{
	return net_new(model, cfg, 0);
}

struct fake_net *fake_net_new_bp(struct fl_model *model, const struct srv_engine_config *cfg)
{
	return net_new(model, cfg, 1);
}

struct fake_net *fake_net_own(uint64_t seed, const struct srv_engine_config *cfg)
{
	struct fl_model *m = fake_small_model(seed);
	struct fake_net *net = m ? fake_net_new(m, cfg) : NULL;
	if (!FL_CHECK_MSG(net != NULL, "fake net: %s", fl_error_msg()))
		abort();
	net->owns_model = 1;
	return net;
}

static void client_free(struct fake_client *c)
{
	for (size_t i = 0; i < c->nq; i++)
		fl_buf_unref(c->q[i]);
	free(c->q);
	for (size_t i = 0; i < c->nheld; i++)
		fl_buf_unref(c->held[i]);
	free(c->held);
	fl_wire_rx_free(c->rx);
	free(c->global);
	free(c);
}

void fake_net_free(struct fake_net *net)
{
	if (!net)
		return;
	srv_engine_free(net->e);
	for (int i = 0; i < net->n; i++)
		client_free(net->cl[i]);
	if (net->owns_model)
		fl_model_free(net->model);
	free(net);
}

struct fake_client *fake_connect_raw(struct fake_net *net, const char *id)
{
	struct fake_client *c = calloc(1, sizeof(*c));
	c->conn = net->next_conn++;
	snprintf(c->id, sizeof(c->id), "%s", id);
	c->num_examples = 1;
	c->base_chunks_at_task = -1;
	c->global = calloc(net->nglobal ? net->nglobal : 1, sizeof(float));
	net->cl[net->n++] = c;
	srv_engine_on_connect(net->e, c->conn, net->now);
	return c;
}

void fake_send_raw(struct fake_net *net, struct fake_client *c, const uint8_t *p, size_t n)
{
	if (c->closed)
		return;
	if (c->paused) { /* the transport stopped reading it */
		hold(c, p, n);
		return;
	}
	deliver(net, c, p, n);
	if (c->pause_now) { /* not consumed: counted when delivered again */
		c->pause_now = 0;
		net->recv_bytes -= n + FL_WIRE_FRAME_HEADER_BYTES;
		hold(c, p, n);
	}
	resume_pending(net);
}

void fake_send_env(struct fake_net *net, struct fake_client *c, const fl_envelope *env)
{
	struct fl_buf *b = NULL;
	if (fl_wire_encode(env, &b) != FL_OK) {
		fprintf(stderr, "fake: encode failed: %s\n", fl_error_msg());
		return;
	}
	fake_send_raw(net, c, b->data + FL_WIRE_FRAME_HEADER_BYTES,
		      b->len - FL_WIRE_FRAME_HEADER_BYTES);
	fl_buf_unref(b);
}

void fake_send_hello(struct fake_net *net, struct fake_client *c, uint32_t version, const char *id,
		     const char *caps, enum fl_wire_dtype preferred)
{
	char buf[128], *capv[8];
	size_t ncap = 0;
	snprintf(buf, sizeof(buf), "%s", caps ? caps : "");
	for (char *s = strtok(buf, ","); s && ncap < 8; s = strtok(NULL, ","))
		capv[ncap++] = s;
	Fedloha__V1__Hello h = FEDLOHA__V1__HELLO__INIT;
	h.protocol_version = version;
	h.client_id = (char *)id;
	h.num_examples = c->num_examples;
	h.n_capabilities = ncap;
	h.capabilities = capv;
	h.preferred_dtype = (Fedloha__V1__DType)preferred;
	fl_envelope env = fl_test_envelope(&h.base);
	fake_send_env(net, c, &env);
}

struct fake_client *fake_connect(struct fake_net *net, const char *id, uint64_t num_examples,
				 float value, const char *caps)
{
	struct fake_client *c = fake_connect_raw(net, id);
	c->num_examples = num_examples;
	c->value = value;
	char all[128];
	snprintf(all, sizeof(all), "eval%s%s", caps ? "," : "", caps ? caps : "");
	enum fl_wire_dtype pref = FL_WIRE_F32;
	if (caps && strstr(caps, "f16"))
		pref = FL_WIRE_F16;
	fake_send_hello(net, c, FL_WIRE_PROTOCOL_VERSION, id, all, pref);
	return c;
}

void fake_disconnect(struct fake_net *net, struct fake_client *c)
{
	c->closed = 1;
	srv_engine_on_disconnect(net->e, c->conn, net->now);
	resume_pending(net);
}

void fake_send_update_header(struct fake_net *net, struct fake_client *c, uint64_t round,
			     uint64_t num_examples, uint32_t num_tensors)
{
	Fedloha__V1__Metric m = FEDLOHA__V1__METRIC__INIT, *mp = &m;
	m.name = "train_loss";
	m.value = c->loss;
	Fedloha__V1__Update u = FEDLOHA__V1__UPDATE__INIT;
	fl_test_update(&u, round, num_examples, num_tensors, &mp, 1);
	fl_envelope env = fl_test_envelope(&u.base);
	fake_send_env(net, c, &env);
}

void fake_send_chunk(struct fake_net *net, struct fake_client *c, uint64_t round, const char *name,
		     const int64_t *shape, int ndim, enum fl_wire_dtype dtype, uint64_t offset,
		     const void *data, size_t bytes, int last)
{
	uint64_t sh[8];
	for (int d = 0; d < ndim; d++)
		sh[d] = (uint64_t)shape[d];
	Fedloha__V1__TensorChunk ch = FEDLOHA__V1__TENSOR_CHUNK__INIT;
	ch.round = round;
	ch.name = (char *)name;
	ch.n_shape = (size_t)ndim;
	ch.shape = sh;
	ch.dtype = (Fedloha__V1__DType)dtype;
	ch.scale = 1.0f;
	ch.offset = offset;
	ch.data.data = (uint8_t *)data;
	ch.data.len = bytes;
	ch.last = last;
	fl_envelope env = fl_test_envelope(&ch.base);
	fake_send_env(net, c, &env);
}

/* The model's GLOBAL tensors as wire descriptors over buf. */
static size_t global_tensors(struct fake_net *net, float *buf, struct fl_wire_tensor *out)
{
	size_t k = 0;
	for (size_t i = 0; i < fl_model_tensor_count(net->model); i++) {
		const struct fl_model_tensor *t = fl_model_tensor_at(net->model, i);
		if (!(t->flags & FL_TENSOR_GLOBAL))
			continue;
		fl_wire_tensor_init(&out[k++], t->name, t->ndim, t->shape, t->numel,
				    buf + t->offset);
	}
	return k;
}

void fake_send_update(struct fake_net *net, struct fake_client *c, uint64_t round,
		      uint64_t num_examples, const float *values)
{
	fake_send_update_parts(net, c, round, num_examples, values, FAKE_HEADER | FAKE_CHUNKS);
}

void fake_send_update_parts(struct fake_net *net, struct fake_client *c, uint64_t round,
			    uint64_t num_examples, const float *values, int parts)
{
	struct fl_wire_tensor ts[64];
	size_t k = global_tensors(net, (float *)values, ts);
	if (parts & FAKE_HEADER)
		fake_send_update_header(net, c, round, num_examples, (uint32_t)k);
	for (size_t i = 0; i < k && !c->closed && (parts & FAKE_CHUNKS); i++) {
		struct fl_buf **frames = NULL;
		size_t nf = 0;
		if (fl_wire_tensor_encode(round, &ts[i], c->dtype, 4096, &frames, &nf) != FL_OK)
			fprintf(stderr, "fake: tensor encode failed: %s\n", fl_error_msg());
		for (size_t j = 0; j < nf; j++) {
			fake_send_raw(net, c, frames[j]->data + FL_WIRE_FRAME_HEADER_BYTES,
				      frames[j]->len - FL_WIRE_FRAME_HEADER_BYTES);
			fl_buf_unref(frames[j]);
		}
		free(frames);
	}
	if (parts & FAKE_CHUNKS)
		c->updates_sent++;
}

static void start_rx(struct fake_net *net, struct fake_client *c, uint64_t round, int is_eval)
{
	struct fl_wire_tensor ts[64];
	size_t k = global_tensors(net, c->global, ts);
	fl_wire_rx_free(c->rx);
	c->rx = NULL;
	if (fl_wire_rx_new(ts, k, c->dtype, &c->rx) != FL_OK) {
		fprintf(stderr, "fake: rx_new failed: %s\n", fl_error_msg());
		return;
	}
	fl_wire_rx_reset(c->rx, round);
	c->task_round = round;
	c->rx_is_eval = is_eval;
	c->rx_done = 0;
}

void fake_answer(struct fake_net *net, struct fake_client *c)
{
	if (c->rx_is_eval) {
		Fedloha__V1__EvalResult r = FEDLOHA__V1__EVAL_RESULT__INIT;
		r.round = c->task_round;
		r.num_examples = c->num_examples;
		r.loss = c->loss;
		r.accuracy = c->value;
		fl_envelope env = fl_test_envelope(&r.base);
		fake_send_env(net, c, &env);
		return;
	}
	float *u = malloc((net->nglobal ? net->nglobal : 1) * sizeof(float));
	for (size_t i = 0; i < net->nglobal; i++)
		u[i] = c->mix * c->global[i] + c->value;
	fake_send_update(net, c, c->task_round, c->num_examples, u);
	free(u);
}

static void handle(struct fake_net *net, struct fake_client *c, const fl_envelope *env)
{
	switch (env->body_case) {
	case FEDLOHA__V1__ENVELOPE__BODY_WELCOME:
		c->welcomed = 1;
		c->dtype = (enum fl_wire_dtype)env->welcome->dtype;
		if (env->welcome->model && env->welcome->model->base_sha256.len == 32)
			memcpy(c->base_sha, env->welcome->model->base_sha256.data, 32);
		break;
	case FEDLOHA__V1__ENVELOPE__BODY_TASK:
		if (!c->tasks++)
			c->base_chunks_at_task = c->base_chunks;
		if (c->drop_on_task) {
			fake_disconnect(net, c);
			return;
		}
		start_rx(net, c, env->task->round, 0);
		break;
	case FEDLOHA__V1__ENVELOPE__BODY_EVAL_TASK:
		c->evals++;
		start_rx(net, c, env->eval_task->round, 1);
		break;
	case FEDLOHA__V1__ENVELOPE__BODY_CHUNK:
		if (!c->rx)
			return; /* after our own disconnect */
		if (fl_wire_rx_chunk(c->rx, env->chunk) != FL_OK) {
			fprintf(stderr, "fake %s: bad chunk: %s\n", c->id, fl_error_msg());
			return;
		}
		if (fl_wire_rx_complete(c->rx) && !c->rx_done) {
			c->rx_done = 1;
			if (!c->hold || c->rx_is_eval)
				fake_answer(net, c);
		}
		break;
	case FEDLOHA__V1__ENVELOPE__BODY_HEARTBEAT: c->heartbeats++; break;
	case FEDLOHA__V1__ENVELOPE__BODY_ERROR:
		c->error_code = env->error->code;
		snprintf(c->error_msg, sizeof(c->error_msg), "%s", env->error->message);
		break;
	case FEDLOHA__V1__ENVELOPE__BODY_BYE:
		c->byes++;
		snprintf(c->bye, sizeof(c->bye), "%s", env->bye->reason);
		break;
	case FEDLOHA__V1__ENVELOPE__BODY_BASE_CHUNK:
		c->base_chunks++;
		c->base_got += env->base_chunk->data.len;
		break;
	default: fprintf(stderr, "fake %s: unexpected body %d\n", c->id, (int)env->body_case);
	}
}

void fake_pump(struct fake_net *net)
{
	for (int progress = 1; progress;) {
		progress = 0;
		for (int i = 0; i < net->n; i++) {
			struct fake_client *c = net->cl[i];
			/* Frames queued before a close are still delivered (flush). */
			size_t k = 0;
			while (k < c->nq) {
				struct fl_buf *b = c->q[k++];
				fl_envelope *env = NULL;
				if (fl_wire_decode(b->data + FL_WIRE_FRAME_HEADER_BYTES,
						   b->len - FL_WIRE_FRAME_HEADER_BYTES, 1u << 26,
						   &env) != FL_OK) {
					fprintf(stderr,
						"fake: undecodable frame from the engine\n");
				} else {
					handle(net, c, env);
					fl_wire_envelope_free(env);
				}
				fl_buf_unref(b);
				progress = 1;
			}
			if (k)
				memmove(c->q, c->q + k, (c->nq - k) * sizeof(*c->q));
			c->nq -= k;
		}
	}
}

void fake_tick_at(struct fake_net *net, uint64_t t)
{
	if (t > net->now)
		net->now = t;
	srv_engine_tick(net->e, net->now);
	resume_pending(net);
	fake_pump(net);
}

int fake_run(struct fake_net *net, uint64_t limit_ms)
{
	uint64_t end = net->now + limit_ms;
	fake_pump(net);
	while (!srv_engine_finished(net->e) && !srv_engine_failed(net->e, NULL)) {
		uint64_t d = srv_engine_next_deadline(net->e);
		if (d == UINT64_MAX || d > end)
			break;
		fake_tick_at(net, d);
	}
	return srv_engine_finished(net->e);
}
