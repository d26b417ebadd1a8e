/* sim_loop.c - the simulator's in-memory transport and event loop (rank
 * 0). Every connection has a client end and a coordinator end of the secure
 * channel (channel.h; pass-through when the configuration is insecure); the
 * bytes they write (handshake messages, records) go into one FIFO (the
 * "wire"), and the loop delivers them one event at a time: to the
 * coordinator end here (fl_channel_recv, a frame reader,
 * srv_engine_on_frame), to the client end through an operation on it
 * (sim_cend.c in this process, sim_mpi.c on another rank) whose effects are
 * applied in order when it returns, so nothing re-enters the engine or a
 * session. The engine and a session hear of a connection only once their
 * end of the channel is established. Training jobs run on the pool of the
 * rank owning the client; finished client jobs are handed back in
 * submission order, so the sequence of events the engine sees does not
 * depend on thread timing or on the number of ranks. When nothing is queued
 * or running, vanished clients reconnect (a new channel and handshake), and
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

#define SIM_MAX_FRAME FL_WIRE_MAX_FRAME_DEFAULT /* the engine's and the sessions' */
#define SIM_BATCH_MAX 64                        /* DOWN events in one MPI request */
#define SIM_BATCH_BYTES ((size_t)64 << 20)      /* and their bytes (one may be larger) */

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
	fl_channel_free(c->sch);
	c->sch = NULL;
	fl_frame_reader_free(&c->srd);
	c->srv_up = 0;
}

/* A fresh coordinator end of the channel for a new connection. */
static int conn_channel(struct sim *s, struct sim_client *c)
{
	sim_conn_release(c);
	fl_frame_reader_init(&c->srd, SIM_MAX_FRAME);
	struct fl_channel_config sc;
	memset(&sc, 0, sizeof(sc));
	sc.insecure = !s->cfg->secure;
	sc.is_server = 1;
	if (s->cfg->secure) {
		sc.self = s->coord;
		sc.authorize = sim_authorize;
		sc.auth_ctx = s;
	}
	return fl_channel_new(&sc, &c->sch);
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

void sim_io_setup(struct sim *s, struct srv_engine_io *eio)
{
	*eio = (struct srv_engine_io){
		.ctx = s, .send = eng_send, .close = eng_close, .on_round = eng_on_round};
}

/* ---- the client ends' effects ---- */

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

/* The coordinator's side of a dropped connection: the engine hears of it
 * (when it knew of it) before the session does. */
static void coord_drop(struct sim *s, struct sim_client *c)
{
	uint64_t conn = c->conn;
	c->conn = 0; /* the engine's close callback for conn is then ignored */
	if (c->srv_up && !c->engine_closed)
		srv_engine_on_disconnect(s->engine, conn, s->now);
}

static void apply_fx(struct sim *s, struct sim_client *c, struct sim_fx *fx)
{
	char msg[FL_ERROR_MSG_MAX + 1];
	msg[0] = 0; /* a kind without a buffer has no message */
	if (fx->buf && fx->kind != SIM_FX_UP) {
		size_t n = fx->buf->len < FL_ERROR_MSG_MAX ? fx->buf->len : FL_ERROR_MSG_MAX;
		memcpy(msg, fx->buf->data, n);
		msg[n] = 0;
	}
	switch (fx->kind) {
	case SIM_FX_UP:
		push_bytes(s, SIM_EV_UP, c, c->conn, fx->buf);
		fx->buf = NULL;
		break;
	case SIM_FX_CLOSE_UP: push(s, SIM_EV_CLOSE_UP, c->index, c->conn, NULL); break;
	case SIM_FX_SUBMIT: c->ticket.seq = s->next_seq++; break;
	case SIM_FX_ERROR: client_error(s, c, msg); break;
	case SIM_FX_NOTE: note_client_error(s, c, msg); break;
	case SIM_FX_DROP: coord_drop(s, c); break;
	case SIM_FX_VANISH: s->res->vanished++; break;
	case SIM_FX_CHAN_ERROR: s->res->channel_errors++; break;
	case SIM_FX_FAIL: loop_fail(s, msg, NULL); break;
	}
}

/* Runs op on c's client end, wherever it lives (once per buffer: several
 * only for a client on another rank), and applies its effects in order. */
static void client_op(struct sim *s, struct sim_client *c, enum sim_op op,
		      struct fl_buf *const *bufs, int nbufs, struct sim_fxlist *fx)
{
	*fx = (struct sim_fxlist){0};
	int owner = c->index % s->nranks;
	if (owner != s->rank)
		sim_mpi_call(s, owner, c->index, op, c->conn, bufs, nbufs, fx);
	else if (nbufs == 1)
		sim_cend_op(&s->cends[c->index], op, c->conn, bufs[0]->data, bufs[0]->len, fx);
	else
		sim_cend_op(&s->cends[c->index], op, c->conn, NULL, 0, fx);
	c->job = fx->job;
	c->finished = fx->finished;
	for (int i = 0; i < fx->n; i++)
		apply_fx(s, c, &fx->v[i]);
	if (fx->nomem)
		loop_fail(s, "out of memory recording a client's effects", NULL);
}

static void client_call(struct sim *s, struct sim_client *c, enum sim_op op)
{
	struct sim_fxlist fx;
	client_op(s, c, op, NULL, 0, &fx);
	sim_fx_free(&fx);
}

/* ---- connections ---- */

/* The engine hears of the connection once the coordinator's end of the
 * channel is up (at once in insecure mode). */
static void conn_check_up(struct sim *s, struct sim_client *c)
{
	if (c->conn && !c->srv_up && !c->engine_closed && fl_channel_established(c->sch)) {
		c->srv_up = 1;
		if (s->cfg->secure)
			s->res->handshakes++;
		srv_engine_on_connect(s->engine, c->conn, s->now);
	}
}

/* The client end starts first (its first handshake bytes go up), then the
 * coordinator's end; the engine then the session hear of a connection that
 * is up at once. */
static void client_connect(struct sim *s, struct sim_client *c)
{
	c->conn = s->next_conn++;
	c->engine_closed = 0;
	s->res->connections++;
	struct sim_fxlist fx;
	client_op(s, c, SIM_OP_CONNECT, NULL, 0, &fx);
	int ready = fx.ready;
	sim_fx_free(&fx);
	if (s->failed)
		return;
	if (conn_channel(s, c)) {
		loop_fail(s, "secure channel", fl_error_msg());
		return;
	}
	struct fl_buf *out = NULL;
	if (fl_channel_start(c->sch, &out) != FL_OK) {
		loop_fail(s, "secure channel (coordinator)", fl_error_msg());
		return;
	}
	if (out)
		push_bytes(s, SIM_EV_DOWN, c, c->conn, out);
	conn_check_up(s, c);
	if (ready)
		client_call(s, c, SIM_OP_UP);
}

/* Both ends see the connection go (the engine first, then the session);
 * an end that never heard of it is not told. */
static void client_drop(struct sim *s, struct sim_client *c)
{
	coord_drop(s, c);
	client_call(s, c, SIM_OP_DISCONNECT);
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

/* Bytes down to a client end. For a client on another rank the DOWN
 * events right behind this one on the same connection go with it (one
 * request): nothing but the effects of the earlier ones, which only append
 * to the wire or drop the connection (the later ones are then skipped on
 * both sides), would have come between them. */
static void deliver_down(struct sim *s, struct sim_client *c, struct sim_ev *ev)
{
	struct fl_buf *bufs[SIM_BATCH_MAX];
	struct sim_ev *taken[SIM_BATCH_MAX];
	int n = 0;
	size_t bytes = ev->buf->len;
	bufs[n++] = ev->buf;
	while (c->index % s->nranks != s->rank && n < SIM_BATCH_MAX && s->head &&
	       s->head->kind == SIM_EV_DOWN && s->head->client == ev->client &&
	       s->head->conn == ev->conn && bytes + s->head->buf->len <= SIM_BATCH_BYTES) {
		struct sim_ev *e = s->head;
		s->head = e->next;
		if (!s->head)
			s->tail = NULL;
		bytes += e->buf->len;
		taken[n] = e;
		bufs[n++] = e->buf;
	}
	struct sim_fxlist fx;
	client_op(s, c, SIM_OP_DOWN, bufs, n, &fx);
	sim_fx_free(&fx);
	for (int i = 1; i < n; i++) {
		fl_buf_unref(taken[i]->buf);
		free(taken[i]);
	}
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
		client_call(s, c, SIM_OP_CLOSE_DOWN);
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
	client_call(s, c, SIM_OP_JOB_DONE);
	if (c->conn)
		c->errors = 0;
}

/* Holds client's finished job, sorted by seq, until its turn. */
static void hold(struct sim *s, int client)
{
	struct sim_task *t = &s->clients[client].ticket;
	struct sim_task **pp = &s->held;
	while (*pp && (*pp)->seq < t->seq)
		pp = &(*pp)->next;
	t->next = *pp;
	*pp = t;
	s->clients[client].held = 1;
}

/* Finished tasks of this rank's pool (waiting for one when `wait`) and of
 * the other ranks; how many. */
static int take_finished(struct sim *s, int wait)
{
	int n = 0;
	struct sim_task *d = sim_pool_take_done(&s->pool, wait);
	while (d) {
		struct sim_task *t = d;
		d = d->next;
		n++;
		struct sim_cend *ce = sim_cend_of_task(t);
		if (ce)
			hold(s, ce->index);
		else
			sim_on_eval_done(s, (struct sim_eval *)((char *)t -
								offsetof(struct sim_eval, task)));
	}
	if (s->nranks > 1)
		n += sim_mpi_take_done(s, hold);
	return n;
}

/* Waits until a job or an evaluation finished: on the pool alone in a
 * single process, else polling the pool and the other ranks. */
static void wait_finished(struct sim *s)
{
	if (s->nranks == 1) {
		take_finished(s, 1);
		return;
	}
	unsigned us = 0;
	while (!take_finished(s, 0))
		sim_backoff(&us);
}

/* The held job whose turn it is, if any. */
static struct sim_client *next_in_order(struct sim *s)
{
	struct sim_task *t = s->held;
	if (!t || t->seq != s->deliver_seq)
		return NULL;
	s->held = t->next;
	s->deliver_seq++;
	struct sim_client *c = (struct sim_client *)((char *)t -
						     offsetof(struct sim_client, ticket));
	c->held = 0;
	return c;
}

/* ---- the loop ---- */

/* Connects every client that is offline and not done; how many. */
static int reconnect_offline(struct sim *s)
{
	int n = 0;
	for (int i = 0; i < s->nclients; i++) {
		struct sim_client *c = &s->clients[i];
		if (c->conn || c->retired || c->job || c->finished)
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

/* One step: a wire event, a finished job whose turn it is, a wait for a
 * running job, reconnections or a jump to the engine's next deadline. 1
 * to go on, 0 when the engine finished or failed, an error when stalled. */
static int step(struct sim *s)
{
	const char *why = NULL;
	if (s->head) {
		struct sim_ev *ev = s->head;
		s->head = ev->next;
		if (!s->head)
			s->tail = NULL;
		deliver(s, ev);
		fl_buf_unref(ev->buf);
		free(ev);
		return 1;
	}
	take_finished(s, 0);
	struct sim_client *c = next_in_order(s);
	if (c) {
		client_job_done(s, c);
		return 1;
	}
	if (s->deliver_seq != s->next_seq) { /* a client job is still running */
		wait_finished(s);
		return 1;
	}
	if (srv_engine_finished(s->engine) || srv_engine_failed(s->engine, &why))
		return 0;
	if (reconnect_offline(s))
		return 1;
	uint64_t d = srv_engine_next_deadline(s->engine);
	if (d == UINT64_MAX)
		return stalled(s);
	if (d > s->now)
		s->now = d;
	srv_engine_tick(s->engine, s->now);
	return 1;
}

int sim_loop_run(struct sim *s)
{
	for (int i = 0; i < s->nclients && !s->failed; i++)
		client_connect(s, &s->clients[i]);
	int rc = 1;
	while (!s->failed && (rc = step(s)) == 1)
		;
	if (!s->failed && rc < 0)
		return rc;
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
	const char *why = NULL;
	if (s->failed)
		return fl_error_set(FL_EINVAL, "simulation failed: %s", s->why);
	if (srv_engine_failed(s->engine, &why))
		return fl_error_set(FL_EINVAL, "the round engine failed: %s%s%s", why,
				    s->res->last_client_error[0] ? "; last client error: " : "",
				    s->res->last_client_error);
	return FL_OK;
}
