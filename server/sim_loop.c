/* sim_loop.c - the simulator's in-memory transport and event loop. The
 * engine's and the sessions' io callbacks append whole frames to one FIFO
 * (the "wire"); the loop delivers them one at a time by feeding the payload
 * (the bytes after the 4-byte length) to srv_engine_on_frame or
 * cli_session_on_frame, so nothing re-enters the engine or a session.
 * Training and evaluation jobs go to the worker pool; finished client jobs
 * are handed back in submission order, so the sequence of events the
 * engine sees does not depend on thread timing. When nothing is queued or
 * running, vanished clients reconnect, and otherwise virtual time jumps to
 * the engine's next deadline. No model or result bookkeeping here (sim.c).
 */
#include "sim_impl.h"

#include "errors.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The first byte of an Envelope payload is its body's tag (field << 3 |
 * length-delimited): RoundTask = 3, EvalTask = 6 (proto/fedloha.proto). */
#define SIM_TAG_TASK ((3u << 3) | 2u)
#define SIM_TAG_EVAL_TASK ((6u << 3) | 2u)
#define SIM_DROP_STREAM 0x53494d44524f5050ull /* "SIMDROPP" */

double sim_wall_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static struct sim_client *client_by_conn(struct sim *s, uint64_t conn)
{
	if (!conn)
		return NULL;
	for (int i = 0; i < s->nclients; i++)
		if (s->clients[i].conn == conn)
			return &s->clients[i];
	return NULL;
}

static int push(struct sim *s, enum sim_ev_kind kind, int client, uint64_t conn, struct fl_buf *buf)
{
	struct sim_ev *ev = malloc(sizeof(*ev));
	if (!ev) {
		fl_buf_unref(buf);
		if (!s->failed) {
			s->failed = 1;
			snprintf(s->why, sizeof(s->why), "out of memory queueing a frame");
		}
		return -1;
	}
	*ev = (struct sim_ev){.kind = kind, .client = client, .conn = conn, .buf = buf};
	if (s->tail)
		s->tail->next = ev;
	else
		s->head = ev;
	s->tail = ev;
	return 0;
}

void sim_events_free(struct sim *s)
{
	while (s->head) {
		struct sim_ev *ev = s->head;
		s->head = ev->next;
		fl_buf_unref(ev->buf);
		free(ev);
	}
	s->tail = NULL;
}

/* ---- the engine's io ---- */

static int eng_send(void *ctx, uint64_t conn, struct fl_buf *frame)
{
	struct sim *s = ctx;
	struct sim_client *c = client_by_conn(s, conn);
	if (!c || c->engine_closed) {
		fl_buf_unref(frame);
		return -1;
	}
	s->res->wire_down += frame->len;
	s->res->frames_down++;
	if (s->cfg->cb.on_frame)
		s->cfg->cb.on_frame(s->cfg->cb.ctx, 0, frame->data, frame->len);
	return push(s, SIM_EV_DOWN, c->index, conn, frame);
}

static void eng_close(void *ctx, uint64_t conn)
{
	struct sim *s = ctx;
	struct sim_client *c = client_by_conn(s, conn);
	if (!c || c->engine_closed)
		return;
	c->engine_closed = 1;
	push(s, SIM_EV_CLOSE_DOWN, c->index, conn, NULL);
}

static void eng_on_round(void *ctx, const struct srv_round_report *r)
{
	sim_on_report(ctx, r);
}

/* ---- the sessions' io ---- */

static int cli_send(void *ctx, struct fl_buf *frame)
{
	struct sim_client *c = ctx;
	if (!c->conn) {
		fl_buf_unref(frame);
		return -1;
	}
	return push(c->sim, SIM_EV_UP, c->index, c->conn, frame);
}

static void cli_close(void *ctx)
{
	struct sim_client *c = ctx;
	if (c->conn)
		push(c->sim, SIM_EV_CLOSE_UP, c->index, c->conn, NULL);
}

static void client_task_run(struct sim_task *t)
{
	struct sim_client *c = (struct sim_client *)((char *)t - offsetof(struct sim_client, task));
	cli_job_run(c->job);
}

static int cli_submit(void *ctx, struct cli_job *job)
{
	struct sim_client *c = ctx;
	struct sim *s = c->sim;
	c->job = job;
	/* A training task's client may vanish instead of training; one draw per
	 * training task keeps the decision a function of the seed. */
	if (!c->last_task_eval && s->cfg->dropout > 0 &&
	    fl_rng_uniform_double(&c->drop_rng) < s->cfg->dropout) {
		c->vanish = 1;
		return 0;
	}
	c->task.run = client_task_run;
	c->task.ordered = 1;
	c->task.seq = s->next_seq++;
	sim_pool_submit(&s->pool, &c->task);
	return 0;
}

void sim_io_setup(struct sim *s, struct srv_engine_io *eio, struct cli_session_io *cio)
{
	*eio = (struct srv_engine_io){.ctx = s, .send = eng_send, .close = eng_close,
				      .on_round = eng_on_round};
	*cio = (struct cli_session_io){.ctx = NULL, .send = cli_send, .close = cli_close,
				       .submit = cli_submit};
	for (int i = 0; i < s->nclients; i++)
		fl_rng_seed_stream(&s->clients[i].drop_rng, s->cfg->seed ^ SIM_DROP_STREAM,
				   (uint64_t)i);
}

/* ---- delivery ---- */

static void client_connect(struct sim *s, struct sim_client *c)
{
	c->conn = s->next_conn++;
	c->engine_closed = 0;
	c->last_task_eval = 0;
	srv_engine_on_connect(s->engine, c->conn, s->now);
	cli_session_on_connect(c->s, s->now);
}

/* Both ends see the connection go (the engine first, then the session). */
static void client_drop(struct sim *s, struct sim_client *c)
{
	uint64_t conn = c->conn;
	c->conn = 0; /* the engine's close callback for conn is then ignored */
	if (!c->engine_closed)
		srv_engine_on_disconnect(s->engine, conn, s->now);
	cli_session_on_disconnect(c->s);
}

static void client_error(struct sim *s, struct sim_client *c, const char *msg)
{
	s->res->client_errors++;
	snprintf(s->res->last_client_error, sizeof(s->res->last_client_error), "%s: %s", c->id,
		 msg);
	if (++c->errors >= SIM_CLIENT_ERRORS_MAX)
		c->retired = 1;
}

/* A selected client disappears mid-round: its job never runs and its
 * result is dropped (the session restores its local tensors). */
static void client_vanish(struct sim *s, struct sim_client *c)
{
	c->vanish = 0;
	s->res->vanished++;
	client_drop(s, c);
	struct cli_job *job = c->job;
	c->job = NULL;
	cli_session_on_job_done(c->s, job);
}

static void deliver(struct sim *s, struct sim_ev *ev)
{
	struct sim_client *c = &s->clients[ev->client];
	const uint8_t *payload = ev->buf ? ev->buf->data + FL_WIRE_FRAME_HEADER_BYTES : NULL;
	size_t len = ev->buf ? ev->buf->len - FL_WIRE_FRAME_HEADER_BYTES : 0;
	if (c->conn != ev->conn)
		return; /* a frame or close of an earlier connection */
	switch (ev->kind) {
	case SIM_EV_DOWN: {
		if (len && payload[0] == SIM_TAG_TASK)
			c->last_task_eval = 0;
		else if (len && payload[0] == SIM_TAG_EVAL_TASK)
			c->last_task_eval = 1;
		int err = cli_session_on_frame(c->s, payload, len, s->now);
		if (err != FL_OK) {
			client_error(s, c, fl_error_msg());
			client_drop(s, c);
		} else if (c->vanish) {
			client_vanish(s, c);
		}
		break;
	}
	case SIM_EV_UP:
		if (c->engine_closed)
			return; /* the engine forgot this connection */
		s->res->wire_up += ev->buf->len;
		s->res->frames_up++;
		if (s->cfg->cb.on_frame)
			s->cfg->cb.on_frame(s->cfg->cb.ctx, 1, ev->buf->data, ev->buf->len);
		srv_engine_on_frame(s->engine, ev->conn, payload, len, s->now);
		break;
	case SIM_EV_CLOSE_DOWN:
		c->conn = 0;
		cli_session_on_disconnect(c->s);
		break;
	case SIM_EV_CLOSE_UP:
		client_drop(s, c);
		break;
	}
}

/* ---- finished jobs ---- */

static void client_job_done(struct sim *s, struct sim_client *c)
{
	struct cli_job *job = c->job;
	c->job = NULL;
	cli_session_on_job_done(c->s, job);
	if (c->conn)
		c->errors = 0;
}

static void take_finished(struct sim *s, int wait)
{
	struct sim_task *d = sim_pool_take_done(&s->pool, wait);
	while (d) {
		struct sim_task *t = d;
		d = d->next;
		if (!t->ordered) {
			sim_on_eval_done(s, (struct sim_eval *)((char *)t -
								offsetof(struct sim_eval, task)));
			continue;
		}
		/* hold it, sorted by seq */
		struct sim_task **pp = &s->held;
		while (*pp && (*pp)->seq < t->seq)
			pp = &(*pp)->next;
		t->next = *pp;
		*pp = t;
	}
}

/* The held job whose turn it is, if any. */
static struct sim_client *next_in_order(struct sim *s)
{
	struct sim_task *t = s->held;
	if (!t || t->seq != s->deliver_seq)
		return NULL;
	s->held = t->next;
	s->deliver_seq++;
	return (struct sim_client *)((char *)t - offsetof(struct sim_client, task));
}

/* ---- the loop ---- */

static int reconnect_offline(struct sim *s)
{
	int n = 0;
	for (int i = 0; i < s->nclients; i++) {
		struct sim_client *c = &s->clients[i];
		if (c->conn || c->retired || c->job || cli_session_finished(c->s))
			continue;
		client_connect(s, c);
		n++;
	}
	return n;
}

static int stalled(struct sim *s)
{
	int online = 0, retired = 0;
	for (int i = 0; i < s->nclients; i++) {
		online += s->clients[i].conn != 0;
		retired += s->clients[i].retired;
	}
	return fl_error_set(FL_EINVAL,
			    "simulation stalled after round %llu: %d of %d clients connected, %d "
			    "given up after repeated errors (last: %s)",
			    (unsigned long long)srv_engine_round(s->engine), online, s->nclients,
			    retired, s->res->last_client_error[0] ? s->res->last_client_error : "none");
}

int sim_loop_run(struct sim *s)
{
	for (int i = 0; i < s->nclients; i++)
		client_connect(s, &s->clients[i]);
	const char *why = NULL;
	for (;;) {
		if (s->failed)
			break;
		if (s->head) {
			struct sim_ev *ev = s->head;
			s->head = ev->next;
			if (!s->head)
				s->tail = NULL;
			deliver(s, ev);
			fl_buf_unref(ev->buf);
			free(ev);
			continue;
		}
		take_finished(s, 0);
		struct sim_client *c = next_in_order(s);
		if (c) {
			client_job_done(s, c);
			continue;
		}
		if (s->deliver_seq != s->next_seq) { /* a client job is still running */
			take_finished(s, 1);
			continue;
		}
		if (srv_engine_finished(s->engine) || srv_engine_failed(s->engine, &why))
			break;
		if (reconnect_offline(s))
			continue;
		uint64_t d = srv_engine_next_deadline(s->engine);
		if (d == UINT64_MAX)
			return stalled(s);
		if (d > s->now)
			s->now = d;
		srv_engine_tick(s->engine, s->now);
	}
	/* the central evaluations still running */
	for (;;) {
		int busy = sim_pool_outstanding(&s->pool) > 0;
		take_finished(s, busy);
		struct sim_client *c;
		while ((c = next_in_order(s)))
			client_job_done(s, c);
		if (!busy)
			break;
	}
	if (s->failed)
		return fl_error_set(FL_EINVAL, "simulation failed: %s", s->why);
	if (srv_engine_failed(s->engine, &why))
		return fl_error_set(FL_EINVAL, "the round engine failed: %s", why);
	return FL_OK;
}
