/* sim_loop.c - the simulator's in-memory transport and event loop. Every
 * connection has a client end and a coordinator end of the secure channel
 * (channel.h; pass-through when the configuration is insecure); the bytes
 * they write (handshake messages, records) go into one FIFO (the "wire"),
 * and the loop delivers them one event at a time through fl_channel_recv
 * and a frame reader to srv_engine_on_frame or cli_session_on_frame, so
 * nothing re-enters the engine or a session. The engine and a session hear
 * of a connection only once their end of the channel is established.
 * Training and evaluation jobs go to the worker pool; finished client jobs
 * are handed back in submission order, so the sequence of events the
 * engine sees does not depend on thread timing. When nothing is queued or
 * running, vanished clients reconnect (a new channel and handshake), and
 * otherwise virtual time jumps to the engine's next deadline. No model,
 * key or result bookkeeping here (sim.c).
 */
#include "sim_impl.h"

#include "errors.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The first byte of an Envelope payload is its body's tag: the oneof field
 * number (the generated body case) << 3 | length-delimited. One byte while
 * the field number is below 16. */
#define SIM_BODY_TAG(body) (((unsigned)(body) << 3) | PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED)
#define SIM_TAG_TASK SIM_BODY_TAG(FEDLOHA__V1__ENVELOPE__BODY_TASK)
#define SIM_TAG_EVAL_TASK SIM_BODY_TAG(FEDLOHA__V1__ENVELOPE__BODY_EVAL_TASK)
_Static_assert(FEDLOHA__V1__ENVELOPE__BODY_TASK < 16 && FEDLOHA__V1__ENVELOPE__BODY_EVAL_TASK < 16,
	       "a body tag of one byte");
#define SIM_DROP_STREAM 0x53494d44524f5050ull   /* "SIMDROPP" */
#define SIM_MAX_FRAME FL_WIRE_MAX_FRAME_DEFAULT /* the engine's and the sessions' */

double sim_wall_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void loop_fail(struct sim *s, const char *what, const char *detail)
{
	if (s->failed)
		return;
	s->failed = 1;
	snprintf(s->why, sizeof(s->why), "%s%s%s", what, detail ? ": " : "", detail ? detail : "");
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
		loop_fail(s, "out of memory queueing a frame", NULL);
		return FL_ENOMEM;
	}
	*ev = (struct sim_ev){.kind = kind, .client = client, .conn = conn, .buf = buf};
	if (s->tail)
		s->tail->next = ev;
	else
		s->head = ev;
	s->tail = ev;
	return 0;
}

/* Channel bytes onto the wire (counted as written, like a socket's). */
static int push_bytes(struct sim *s, enum sim_ev_kind kind, struct sim_client *c, uint64_t conn,
		      struct fl_buf *buf)
{
	if (kind == SIM_EV_UP)
		s->res->chan_up += buf->len;
	else
		s->res->chan_down += buf->len;
	return push(s, kind, c->index, conn, buf);
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

void sim_conn_release(struct sim_client *c)
{
	fl_channel_free(c->cch);
	fl_channel_free(c->sch);
	c->cch = c->sch = NULL;
	fl_frame_reader_free(&c->crd);
	fl_frame_reader_free(&c->srd);
	c->cli_up = c->srv_up = 0;
}

/* A fresh pair of channel ends for a new connection. */
static int conn_channels(struct sim *s, struct sim_client *c)
{
	sim_conn_release(c);
	fl_frame_reader_init(&c->crd, SIM_MAX_FRAME);
	fl_frame_reader_init(&c->srd, SIM_MAX_FRAME);
	struct fl_channel_config cc, sc;
	memset(&cc, 0, sizeof(cc));
	memset(&sc, 0, sizeof(sc));
	cc.insecure = sc.insecure = !s->cfg->secure;
	sc.is_server = 1;
	if (s->cfg->secure) {
		cc.self = c->key;
		cc.pinned_server_pk = fl_identity_pk(s->coord);
		sc.self = s->coord;
		sc.authorize = sim_authorize;
		sc.auth_ctx = s;
	}
	int err = fl_channel_new(&cc, &c->cch);
	if (!err)
		err = fl_channel_new(&sc, &c->sch);
	return err;
}

/* ---- the engine's io ---- */

static int eng_send(void *ctx, uint64_t conn, struct fl_buf *frame)
{
	struct sim *s = ctx;
	struct sim_client *c = client_by_conn(s, conn);
	if (!c || c->engine_closed || !c->srv_up) {
		fl_buf_unref(frame);
		return FL_EIO;
	}
	s->res->wire_down += frame->len;
	s->res->frames_down++;
	if (s->cfg->cb.on_frame)
		s->cfg->cb.on_frame(s->cfg->cb.ctx, 0, frame->data, frame->len);
	struct fl_buf *rec = NULL;
	int err = fl_channel_seal_buf(c->sch, frame, &rec);
	fl_buf_unref(frame);
	if (err) {
		loop_fail(s, "sealing a frame to the client", fl_error_msg());
		return FL_EIO;
	}
	return push_bytes(s, SIM_EV_DOWN, c, conn, rec);
}

static void eng_close(void *ctx, uint64_t conn)
{
	struct sim *s = ctx;
	struct sim_client *c = client_by_conn(s, conn);
	if (!c || c->engine_closed)
		return;
	c->engine_closed = 1;
	struct fl_buf *fin = NULL;
	if (fl_channel_close(c->sch, &fin) == FL_OK && fin)
		push_bytes(s, SIM_EV_DOWN, c, conn, fin);
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
	if (!c->conn || !c->cli_up) {
		fl_buf_unref(frame);
		return FL_EIO;
	}
	struct fl_buf *rec = NULL;
	int err = fl_channel_seal_buf(c->cch, frame, &rec);
	fl_buf_unref(frame);
	if (err) {
		loop_fail(c->sim, "sealing a frame to the coordinator", fl_error_msg());
		return FL_EIO;
	}
	return push_bytes(c->sim, SIM_EV_UP, c, c->conn, rec);
}

static void cli_close(void *ctx)
{
	struct sim_client *c = ctx;
	if (!c->conn)
		return;
	struct fl_buf *fin = NULL;
	if (c->cli_up && fl_channel_close(c->cch, &fin) == FL_OK && fin)
		push_bytes(c->sim, SIM_EV_UP, c, c->conn, fin);
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
	*eio = (struct srv_engine_io){
		.ctx = s, .send = eng_send, .close = eng_close, .on_round = eng_on_round};
	*cio = (struct cli_session_io){
		.ctx = NULL, .send = cli_send, .close = cli_close, .submit = cli_submit};
	for (int i = 0; i < s->nclients; i++)
		fl_rng_seed_stream(&s->clients[i].drop_rng, s->cfg->train.seed ^ SIM_DROP_STREAM,
				   (uint64_t)i);
}

/* ---- connections ---- */

/* Each end hears of the connection once its channel is up (at once in
 * insecure mode): the engine first, then the session (which sends Hello). */
static void conn_check_up(struct sim *s, struct sim_client *c)
{
	uint64_t conn = c->conn;
	if (conn && !c->srv_up && !c->engine_closed && fl_channel_established(c->sch)) {
		c->srv_up = 1;
		if (s->cfg->secure)
			s->res->handshakes++;
		srv_engine_on_connect(s->engine, conn, s->now);
	}
	if (c->conn == conn && conn && !c->cli_up && fl_channel_established(c->cch)) {
		c->cli_up = 1;
		cli_session_on_connect(c->s, s->now);
	}
}

static void client_connect(struct sim *s, struct sim_client *c)
{
	c->conn = s->next_conn++;
	c->engine_closed = 0;
	c->last_task_eval = 0;
	s->res->connections++;
	if (conn_channels(s, c)) {
		loop_fail(s, "secure channel", fl_error_msg());
		return;
	}
	struct fl_buf *out = NULL;
	if (fl_channel_start(c->cch, &out) != FL_OK) {
		loop_fail(s, "secure channel (client)", fl_error_msg());
		return;
	}
	if (out)
		push_bytes(s, SIM_EV_UP, c, c->conn, out);
	out = NULL;
	if (fl_channel_start(c->sch, &out) != FL_OK) {
		loop_fail(s, "secure channel (coordinator)", fl_error_msg());
		return;
	}
	if (out)
		push_bytes(s, SIM_EV_DOWN, c, c->conn, out);
	conn_check_up(s, c);
}

/* Both ends see the connection go (the engine first, then the session);
 * an end that never heard of it is not told. */
static void client_drop(struct sim *s, struct sim_client *c)
{
	uint64_t conn = c->conn;
	c->conn = 0; /* the engine's close callback for conn is then ignored */
	if (c->srv_up && !c->engine_closed)
		srv_engine_on_disconnect(s->engine, conn, s->now);
	if (c->cli_up)
		cli_session_on_disconnect(c->s);
}

/* Counts and keeps the message of an error at client c. */
static void note_client_error(struct sim *s, const struct sim_client *c, const char *msg)
{
	s->res->client_errors++;
	snprintf(s->res->last_client_error, sizeof(s->res->last_client_error), "%s: %.220s", c->id,
		 msg);
}

static void client_error(struct sim *s, struct sim_client *c, const char *msg)
{
	note_client_error(s, c, msg);
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

/* The coordinator's end failed (a bad record, a refused handshake, an
 * oversize frame): it closes the connection, without a final record. */
static void coord_cut(struct sim *s, struct sim_client *c, const char *msg)
{
	char what[FL_ERROR_MSG_MAX + 32];
	snprintf(what, sizeof(what), "coordinator: %s", msg);
	client_error(s, c, what);
	if (c->srv_up)
		srv_engine_on_disconnect(s->engine, c->conn, s->now);
	c->engine_closed = 1;
	push(s, SIM_EV_CLOSE_DOWN, c->index, c->conn, NULL);
}

/* ---- delivery ---- */

/* A frame at the client's end. Non-zero stops the reader: the connection
 * went away during the call. */
static int cli_frame(void *ctx, const uint8_t *payload, size_t len)
{
	struct sim_client *c = ctx;
	struct sim *s = c->sim;
	uint64_t conn = c->conn;
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
	return c->conn == conn ? FL_OK : FL_WIRE_FEED_STOP;
}

static int cli_plain(void *ctx, const uint8_t *plain, size_t n)
{
	struct sim_client *c = ctx;
	return fl_frame_reader_feed(&c->crd, plain, n, cli_frame, c);
}

/* A frame at the coordinator's end; non-zero once the engine closed. */
static int srv_frame(void *ctx, const uint8_t *payload, size_t len)
{
	struct sim_client *c = ctx;
	srv_engine_on_frame(c->sim->engine, c->conn, payload, len, c->sim->now);
	return c->engine_closed ? FL_WIRE_FEED_STOP : FL_OK;
}

/* A record's plaintext (one whole frame) at the coordinator's end. */
static int srv_plain(void *ctx, const uint8_t *plain, size_t n)
{
	struct sim_client *c = ctx;
	struct sim *s = c->sim;
	if (c->engine_closed)
		return FL_WIRE_FEED_STOP;
	s->res->wire_up += n;
	s->res->frames_up++;
	if (s->cfg->cb.on_frame)
		s->cfg->cb.on_frame(s->cfg->cb.ctx, 1, plain, n);
	return fl_frame_reader_feed(&c->srd, plain, n, srv_frame, c);
}

static void deliver_down(struct sim *s, struct sim_client *c, struct sim_ev *ev)
{
	struct fl_buf *reply = NULL;
	int rc = fl_channel_recv(c->cch, ev->buf->data, ev->buf->len, cli_plain, c, &reply);
	if (c->conn != ev->conn) { /* dropped or vanished during the delivery */
		fl_buf_unref(reply);
		return;
	}
	if (reply)
		push_bytes(s, SIM_EV_UP, c, c->conn, reply);
	if (rc != FL_OK) {
		char msg[FL_ERROR_MSG_MAX];
		snprintf(msg, sizeof(msg), "%s", fl_error_msg());
		s->res->channel_errors++;
		client_error(s, c, msg);
		client_drop(s, c);
		return;
	}
	conn_check_up(s, c);
}

static void deliver_up(struct sim *s, struct sim_client *c, struct sim_ev *ev)
{
	if (c->engine_closed)
		return; /* the coordinator forgot this connection */
	struct fl_buf *reply = NULL;
	int rc = fl_channel_recv(c->sch, ev->buf->data, ev->buf->len, srv_plain, c, &reply);
	if (reply)
		push_bytes(s, SIM_EV_DOWN, c, ev->conn, reply);
	if (c->engine_closed || c->conn != ev->conn)
		return;
	if (rc != FL_OK) {
		coord_cut(s, c, fl_error_msg());
		return;
	}
	conn_check_up(s, c);
}

static void deliver(struct sim *s, struct sim_ev *ev)
{
	struct sim_client *c = &s->clients[ev->client];
	if (c->conn != ev->conn)
		return; /* bytes or a close of an earlier connection */
	switch (ev->kind) {
	case SIM_EV_DOWN: deliver_down(s, c, ev); break;
	case SIM_EV_UP: deliver_up(s, c, ev); break;
	case SIM_EV_CLOSE_DOWN:
		c->conn = 0;
		if (c->cli_up) {
			if (fl_channel_eof(c->cch) != FL_OK)
				s->res->channel_errors++;
			cli_session_on_disconnect(c->s);
		}
		break;
	case SIM_EV_CLOSE_UP:
		if (!c->engine_closed && fl_channel_eof(c->sch) != FL_OK)
			s->res->channel_errors++;
		client_drop(s, c);
		break;
	}
}

/* ---- finished jobs ---- */

static void client_job_done(struct sim *s, struct sim_client *c)
{
	struct cli_job *job = c->job;
	c->job = NULL;
	/* the session reports a failed job to the coordinator and closes; the
	 * reason is kept for the failure message (e.g. a diverged model) */
	const char *why = cli_job_error(job);
	if (why)
		note_client_error(s, c, why);
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

/* Connects every client that is offline and not done; how many. */
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
			    retired,
			    s->res->last_client_error[0] ? s->res->last_client_error : "none");
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
		return fl_error_set(FL_EINVAL, "the round engine failed: %s%s%s", why,
				    s->res->last_client_error[0] ? "; last client error: " : "",
				    s->res->last_client_error);
	return FL_OK;
}
