/* loadgen_conn.c - fl-loadgen's sessions (loadgen.h): connect from a
 * loopback source address, the secure channel handshake as client idx,
 * Hello, then per task an Update of the tensors the task carried (learned
 * from the first complete task; values zero or seeded noise, encoded once
 * per round and shared by every session), a Heartbeat for every Heartbeat,
 * and an orderly close after the server's Bye. No training, no model. */
#include "loadgen.h"

#include "errors.h"
#include "rng.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t lg_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void on_closed(uv_handle_t *h)
{
	struct lgc *c = (struct lgc *)h;
	struct lg *g = c->g;
	if (!c->up)
		g->handshaking--;
	unsigned i = c->idx - g->first;
	if (!c->up && !g->stopping && g->attempts[i] < g->max_retries) {
		g->attempts[i]++;
		g->retry[g->nretry++] = c->idx;
		g->retries++;
	} else {
		if (!c->up || !c->bye_done)
			g->failed++;
		g->closed++;
	}
	fl_frame_reader_free(&c->rd);
	fl_channel_free(c->ch);
	fl_identity_free(c->id);
	g->conns[c->idx - g->first] = NULL;
	free(c);
	lg_start_more(g);
	lg_maybe_done(g);
}

static void conn_close(struct lgc *c)
{
	if (fl_net_close_channel(&c->n, c->ch, !c->up) == FL_OK)
		fl_net_shutdown(&c->n);
}

static void send_frame(struct lgc *c, struct fl_buf *frame)
{
	fl_net_send_sealed(&c->n, c->ch, frame, 0);
}

static void send_env(struct lgc *c, const fl_envelope *env)
{
	struct fl_buf *b = NULL;
	if (fl_wire_encode(env, &b) == FL_OK)
		send_frame(c, b);
}

static void send_hello(struct lgc *c)
{
	char id[32];
	snprintf(id, sizeof(id), LG_ID_FMT, c->idx);
	Fedloha__V1__Hello h = FEDLOHA__V1__HELLO__INIT;
	h.protocol_version = FL_WIRE_PROTOCOL_VERSION;
	h.client_id = id;
	h.num_examples = c->g->examples;
	h.preferred_dtype = FEDLOHA__V1__DTYPE__DTYPE_F32;
	fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT;
	env.body_case = FEDLOHA__V1__ENVELOPE__BODY_HELLO;
	env.hello = &h;
	send_env(c, &env);
}

/* The Update header and every tensor's chunks for round r, once. */
static int update_frames(struct lg *g, uint64_t r)
{
	if (g->nupd && g->upd_round == r)
		return FL_OK;
	for (size_t i = 0; i < g->nupd; i++)
		fl_buf_unref(g->upd[i]);
	free(g->upd);
	g->upd = NULL;
	g->nupd = 0;
	Fedloha__V1__Metric m = FEDLOHA__V1__METRIC__INIT, *mp = &m;
	m.name = "train_loss";
	m.value = 1.0;
	Fedloha__V1__Update u = FEDLOHA__V1__UPDATE__INIT;
	u.round = r;
	u.num_examples = g->examples;
	u.num_tensors = (uint32_t)g->K;
	u.n_metrics = 1;
	u.metrics = &mp;
	fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT;
	env.body_case = FEDLOHA__V1__ENVELOPE__BODY_UPDATE;
	env.update = &u;
	g->upd = malloc(sizeof(*g->upd));
	if (!g->upd || fl_wire_encode(&env, &g->upd[0]) != FL_OK)
		return FL_ENOMEM;
	g->nupd = 1;
	struct fl_rng rng;
	fl_rng_seed_stream(&rng, g->seed, r);
	int err = FL_OK;
	for (size_t i = 0; i < g->K && err == FL_OK; i++) {
		const struct lg_tensor *t = &g->ts[i];
		float *v = calloc(t->numel ? t->numel : 1, sizeof(float));
		if (!v)
			return FL_ENOMEM;
		for (size_t j = 0; g->random_values && j < t->numel; j++)
			v[j] = 0.05f * (2.0f * fl_rng_uniform(&rng) - 1.0f);
		struct fl_wire_tensor wt;
		fl_wire_tensor_init(&wt, t->name, t->ndim, t->shape, t->numel, v);
		err = fl_wire_tensor_encode(r, &wt, FL_WIRE_F32, g->chunk_bytes, &g->upd, &g->nupd);
		free(v);
	}
	g->upd_round = r;
	return err;
}

static void send_update(struct lgc *c)
{
	struct lg *g = c->g;
	if (update_frames(g, c->round) != FL_OK) {
		fprintf(stderr, "fl-loadgen: cannot encode the update: %s\n", fl_error_msg());
		g->errors++;
		conn_close(c);
		return;
	}
	for (size_t i = 0; i < g->nupd; i++)
		send_frame(c, fl_buf_ref(g->upd[i]));
	g->updates++;
	if (c->round <= LG_ROUNDS_MAX) {
		g->rt[c->round].update_last = lg_now_ms();
		g->rt[c->round].updates++;
	}
}

/* A chunk of the task: learns the tensor list (first complete task). */
static void on_chunk(struct lgc *c, const Fedloha__V1__TensorChunk *ch)
{
	struct lg *g = c->g;
	if (!g->have_tensors && ch->name) {
		size_t i = 0;
		while (i < g->K && strcmp(g->ts[i].name, ch->name) != 0)
			i++;
		if (i == g->K && g->K < LG_TENSORS_MAX && ch->n_shape <= FL_WIRE_NDIM_MAX) {
			struct lg_tensor *t = &g->ts[g->K++];
			snprintf(t->name, sizeof(t->name), "%s", ch->name);
			t->ndim = (int)ch->n_shape;
			t->numel = 1;
			for (size_t d = 0; d < ch->n_shape; d++) {
				t->shape[d] = (int64_t)ch->shape[d];
				t->numel *= (size_t)ch->shape[d];
			}
		}
	}
	if (!ch->last || ch->round != c->round || ++c->lasts < c->ntens)
		return;
	if (g->K == c->ntens)
		g->have_tensors = 1;
	send_update(c);
}

static void on_task(struct lgc *c, const Fedloha__V1__RoundTask *t)
{
	struct lg *g = c->g;
	c->round = t->round;
	c->ntens = t->num_tensors;
	c->lasts = 0;
	c->tasks++;
	g->tasks++;
	if (t->round > g->rounds_seen)
		g->rounds_seen = t->round;
	if (t->round <= LG_ROUNDS_MAX) {
		struct lg_round_times *r = &g->rt[t->round];
		uint64_t now = lg_now_ms();
		if (!r->tasks++)
			r->task_first = now;
		r->task_last = now;
	}
}

static int handle(struct lgc *c, const fl_envelope *env)
{
	struct lg *g = c->g;
	switch (env->body_case) {
	case FEDLOHA__V1__ENVELOPE__BODY_WELCOME:
		/* the server's chunk size for the updates, as a real client */
		if (env->welcome->limits && env->welcome->limits->chunk_bytes >= 64)
			g->chunk_bytes = env->welcome->limits->chunk_bytes;
		return FL_OK;
	case FEDLOHA__V1__ENVELOPE__BODY_TASK: on_task(c, env->task); return FL_OK;
	case FEDLOHA__V1__ENVELOPE__BODY_CHUNK: on_chunk(c, env->chunk); return FL_OK;
	case FEDLOHA__V1__ENVELOPE__BODY_HEARTBEAT: {
		Fedloha__V1__Heartbeat hb = FEDLOHA__V1__HEARTBEAT__INIT;
		fl_envelope e = FEDLOHA__V1__ENVELOPE__INIT;
		e.body_case = FEDLOHA__V1__ENVELOPE__BODY_HEARTBEAT;
		e.heartbeat = &hb;
		send_env(c, &e);
		g->heartbeats++;
		return FL_OK;
	}
	case FEDLOHA__V1__ENVELOPE__BODY_BYE:
		c->bye_done = env->bye->reason && strcmp(env->bye->reason, "done") == 0;
		if (!c->bye_done)
			fprintf(stderr, "fl-loadgen: " LG_ID_FMT ": Bye '%s'\n", c->idx,
				env->bye->reason ? env->bye->reason : "");
		g->byes_done += (unsigned)c->bye_done;
		conn_close(c);
		return FL_WIRE_FEED_STOP;
	case FEDLOHA__V1__ENVELOPE__BODY_ERROR:
		fprintf(stderr, "fl-loadgen: " LG_ID_FMT ": Error from the server: %s\n", c->idx,
			env->error->message ? env->error->message : "");
		g->errors++;
		conn_close(c);
		return FL_WIRE_FEED_STOP;
	default:
		fprintf(stderr, "fl-loadgen: " LG_ID_FMT ": unexpected message %d\n", c->idx,
			(int)env->body_case);
		g->errors++;
		conn_close(c);
		return FL_WIRE_FEED_STOP;
	}
}

static int on_frame(void *ctx, const uint8_t *payload, size_t n)
{
	struct lgc *c = ctx;
	if (fl_net_gone(&c->n))
		return FL_WIRE_FEED_STOP;
	fl_envelope *env = NULL;
	if (fl_wire_decode(payload, n, FL_WIRE_MAX_FRAME_DEFAULT, &env) != FL_OK) {
		fprintf(stderr, "fl-loadgen: undecodable frame: %s\n", fl_error_msg());
		c->g->errors++;
		conn_close(c);
		return FL_WIRE_FEED_STOP;
	}
	int rc = handle(c, env);
	fl_wire_envelope_free(env);
	return rc;
}

static int deliver(void *ctx, const uint8_t *plain, size_t n)
{
	struct lgc *c = ctx;
	if (!fl_net_gone(&c->n) && fl_frame_reader_feed(&c->rd, plain, n, on_frame, c) < 0) {
		c->g->errors++;
		conn_close(c);
	}
	return 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)suggested;
	struct lgc *c = (struct lgc *)h;
	buf->base = c->g->rbuf;
	buf->len = sizeof(c->g->rbuf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct lgc *c = (struct lgc *)s;
	struct lg *g = c->g;
	if (nread == 0)
		return;
	if (nread < 0) {
		if (!c->bye_done && c->up)
			fprintf(stderr, "fl-loadgen: " LG_ID_FMT ": connection ended (%s)\n",
				c->idx, uv_strerror((int)nread));
		fl_net_cut(&c->n);
		return;
	}
	struct fl_buf *reply = NULL;
	int rc = fl_channel_recv(c->ch, (const uint8_t *)buf->base, (size_t)nread, deliver, c,
				 &reply);
	if (reply)
		fl_net_write(&c->n, reply, !c->up);
	if (rc != FL_OK && rc != FL_WIRE_FEED_STOP && !fl_net_gone(&c->n)) {
		fprintf(stderr, "fl-loadgen: " LG_ID_FMT ": %s\n", c->idx, fl_error_msg());
		g->errors++;
		fl_net_cut(&c->n);
		return;
	}
	if (!c->up && fl_channel_established(c->ch) && !fl_net_gone(&c->n)) {
		c->up = 1;
		g->handshaking--;
		g->up++;
		g->t_last_up = lg_now_ms();
		send_hello(c);
		lg_start_more(g);
	}
}

static void on_connect(uv_connect_t *req, int status)
{
	struct lgc *c = req->data;
	struct fl_buf *msg1 = NULL;
	if (status != 0 || fl_channel_start(c->ch, &msg1) != FL_OK || !msg1 ||
	    uv_read_start((uv_stream_t *)&c->n.tcp, on_alloc, on_read) != 0) {
		fprintf(stderr, "fl-loadgen: " LG_ID_FMT ": connect: %s\n", c->idx,
			status ? uv_strerror(status) : fl_error_msg());
		fl_buf_unref(msg1);
		fl_net_cut(&c->n);
		return;
	}
	fl_net_write(&c->n, msg1, 1);
}

static struct lgc *conn_new(struct lg *g, unsigned idx)
{
	struct lgc *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->g = g;
	c->idx = idx;
	fl_net_conn_init(&c->n, g->loop, (size_t)64 << 20, on_closed, &g->sock_out, &g->hs_out);
	snprintf(c->n.name, sizeof(c->n.name), LG_ID_FMT, idx);
	fl_frame_reader_init(&c->rd, FL_WIRE_MAX_FRAME_DEFAULT);
	struct fl_channel_config cc;
	memset(&cc, 0, sizeof(cc));
	cc.pinned_server_pk = g->server_pk;
	if (lg_identity(g->seed, idx, &c->id) != FL_OK)
		return c;
	cc.self = c->id;
	fl_channel_new(&cc, &c->ch);
	return c;
}

static void start_one(struct lg *g)
{
	unsigned idx = g->nretry ? g->retry[--g->nretry] : g->first + g->next++;
	struct lgc *c = conn_new(g, idx);
	if (!c) {
		g->failed++;
		g->closed++;
		return;
	}
	g->conns[idx - g->first] = c;
	g->handshaking++;
	c->creq.data = c;
	struct sockaddr_in src;
	int rc = -1;
	if (c->ch) {
		rc = 0;
		if (g->sources) {
			unsigned a = 2 + idx % g->sources;
			char ip[32];
			snprintf(ip, sizeof(ip), "127.%u.%u.%u", a >> 16 & 255, a >> 8 & 255,
				 a & 255);
			uv_ip4_addr(ip, 0, &src);
			rc = uv_tcp_bind(&c->n.tcp, (struct sockaddr *)&src, 0);
		}
		if (rc == 0)
			rc = uv_tcp_connect(&c->creq, &c->n.tcp, (struct sockaddr *)&g->target,
					    on_connect);
	}
	if (rc != 0) {
		fprintf(stderr, "fl-loadgen: " LG_ID_FMT ": cannot connect: %s\n", idx,
			c->ch ? uv_strerror(rc) : fl_error_msg());
		fl_net_cut(&c->n);
	}
}

void lg_start_more(struct lg *g)
{
	while ((g->nretry || g->next < g->n) && g->handshaking < g->concurrency && !g->stopping)
		start_one(g);
}
