/* sim_cend.c - the client ends of the simulator's virtual clients: the
 * real client session, its end of the secure channel and frame reader, the
 * dropout draw and the training job on this rank's worker pool. The loop
 * (sim_loop.c, directly or over MPI through sim_mpi.c) performs one
 * operation at a time on a client end; everything the operation does that
 * the coordinator must see (bytes written, a close, a job submitted, an
 * error, the connection dropped) is recorded as an effect, in order, for
 * the loop to apply. Nothing here touches the engine, the wire or the
 * results.
 */
#include "sim_impl.h"

#include "errors.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* ---- effects ---- */

void sim_fx_add(struct sim_fxlist *fx, enum sim_fx_kind kind, struct fl_buf *buf)
{
	if (!fx) {
		fl_buf_unref(buf);
		return;
	}
	if (fx->n == fx->cap) {
		int cap = fx->cap ? 2 * fx->cap : 8;
		struct sim_fx *v = realloc(fx->v, (size_t)cap * sizeof(*v));
		if (!v) {
			fl_buf_unref(buf);
			fx->nomem = 1;
			return;
		}
		fx->v = v;
		fx->cap = cap;
	}
	fx->v[fx->n++] = (struct sim_fx){.kind = kind, .buf = buf};
}

void sim_fx_msg(struct sim_fxlist *fx, enum sim_fx_kind kind, const char *msg)
{
	size_t n = strlen(msg);
	struct fl_buf *b = fx ? fl_buf_new(n) : NULL;
	if (!b) {
		if (fx)
			fx->nomem = 1;
		return;
	}
	memcpy(b->data, msg, n);
	sim_fx_add(fx, kind, b);
}

void sim_fx_free(struct sim_fxlist *fx)
{
	for (int i = 0; i < fx->n; i++)
		fl_buf_unref(fx->v[i].buf);
	free(fx->v);
	*fx = (struct sim_fxlist){0};
}

/* ---- effects as bytes (a reply over MPI, sim_mpi.c) ---- */

#define FX_HEAD (5 * sizeof(uint64_t)) /* count, job, finished, ready, nomem */
#define FX_ITEM (2 * sizeof(uint64_t)) /* kind, length */

uint8_t *sim_fx_encode(const struct sim_fxlist *fx, size_t *len)
{
	size_t n = FX_HEAD;
	for (int i = 0; i < fx->n; i++)
		n += FX_ITEM + (fx->v[i].buf ? fx->v[i].buf->len : 0);
	uint8_t *buf = malloc(n), *p = buf;
	if (!buf)
		return NULL;
	uint64_t h[5] = {(uint64_t)fx->n, (uint64_t)fx->job, (uint64_t)fx->finished,
			 (uint64_t)fx->ready, (uint64_t)fx->nomem};
	memcpy(p, h, FX_HEAD);
	p += FX_HEAD;
	for (int i = 0; i < fx->n; i++) {
		uint64_t k = fx->v[i].buf ? fx->v[i].buf->len : 0;
		uint64_t item[2] = {(uint64_t)fx->v[i].kind, k};
		memcpy(p, item, FX_ITEM);
		p += FX_ITEM;
		if (k)
			memcpy(p, fx->v[i].buf->data, k);
		p += k;
	}
	*len = n;
	return buf;
}

/* The kinds whose effect carries a buffer (a message may be empty). */
static int fx_has_buf(uint64_t kind)
{
	return kind == SIM_FX_UP || kind == SIM_FX_ERROR || kind == SIM_FX_NOTE ||
	       kind == SIM_FX_FAIL;
}

int sim_fx_decode(const uint8_t *p, size_t n, struct sim_fxlist *fx)
{
	uint64_t h[5];
	if (n < FX_HEAD)
		return fl_error_set(FL_EFORMAT, "a short effects message");
	memcpy(h, p, FX_HEAD);
	size_t off = FX_HEAD;
	fx->job = h[1] != 0;
	fx->finished = h[2] != 0;
	fx->ready = h[3] != 0;
	fx->nomem = h[4] != 0;
	for (uint64_t i = 0; i < h[0]; i++) {
		uint64_t item[2];
		if (n - off < FX_ITEM)
			return fl_error_set(FL_EFORMAT, "a truncated effects message");
		memcpy(item, p + off, FX_ITEM);
		off += FX_ITEM;
		if (item[0] < SIM_FX_UP || item[0] > SIM_FX_FAIL || item[1] > n - off ||
		    (item[1] && !fx_has_buf(item[0])))
			return fl_error_set(FL_EFORMAT, "a bad effect in an effects message");
		struct fl_buf *b = NULL;
		if (fx_has_buf(item[0])) {
			if (!(b = fl_buf_new((size_t)item[1])))
				return fl_error_set(FL_ENOMEM, "out of memory receiving effects");
			memcpy(b->data, p + off, (size_t)item[1]);
		}
		off += (size_t)item[1];
		sim_fx_add(fx, (enum sim_fx_kind)item[0], b);
	}
	if (off != n)
		return fl_error_set(FL_EFORMAT, "trailing bytes in an effects message");
	return FL_OK;
}

/* ---- the session's io ---- */

static void cend_fail(struct sim_cend *ce, const char *what)
{
	char msg[FL_ERROR_MSG_MAX + 64];
	snprintf(msg, sizeof(msg), "%s: %s", what, fl_error_msg());
	sim_fx_msg(ce->fx, SIM_FX_FAIL, msg);
}

static int cli_send(void *ctx, struct fl_buf *frame)
{
	struct sim_cend *ce = ctx;
	if (!ce->conn || !ce->cli_up) {
		fl_buf_unref(frame);
		return FL_EIO;
	}
	struct fl_buf *rec = NULL;
	int err = fl_channel_seal_buf(ce->cch, frame, &rec);
	fl_buf_unref(frame);
	if (err) {
		cend_fail(ce, "sealing a frame to the coordinator");
		return FL_EIO;
	}
	sim_fx_add(ce->fx, SIM_FX_UP, rec);
	return FL_OK;
}

static void cli_close(void *ctx)
{
	struct sim_cend *ce = ctx;
	if (!ce->conn)
		return;
	struct fl_buf *fin = NULL;
	if (ce->cli_up && fl_channel_close(ce->cch, &fin) == FL_OK && fin)
		sim_fx_add(ce->fx, SIM_FX_UP, fin);
	sim_fx_add(ce->fx, SIM_FX_CLOSE_UP, NULL);
}

static void client_task_run(struct sim_task *t)
{
	struct sim_cend *ce = (struct sim_cend *)((char *)t - offsetof(struct sim_cend, task));
	cli_job_run(ce->job);
}

struct sim_cend *sim_cend_of_task(struct sim_task *t)
{
	if (!t->ordered)
		return NULL;
	return (struct sim_cend *)((char *)t - offsetof(struct sim_cend, task));
}

static int cli_submit(void *ctx, struct cli_job *job)
{
	struct sim_cend *ce = ctx;
	struct sim *s = ce->sim;
	ce->job = job;
	/* A training task's client may vanish instead of training; one draw per
	 * training task keeps the decision a function of the seed. */
	if (!ce->last_task_eval && s->cfg->dropout > 0 &&
	    fl_rng_uniform_double(&ce->drop_rng) < s->cfg->dropout) {
		ce->vanish = 1;
		return 0;
	}
	ce->task.run = client_task_run;
	ce->task.ordered = 1;
	sim_fx_add(ce->fx, SIM_FX_SUBMIT, NULL);
	sim_pool_submit(&s->pool, &ce->task);
	return 0;
}

/* ---- connections ---- */

static void cend_release(struct sim_cend *ce)
{
	fl_channel_free(ce->cch);
	ce->cch = NULL;
	fl_frame_reader_free(&ce->crd);
	ce->cli_up = 0;
}

static void cend_connect(struct sim_cend *ce, uint64_t conn)
{
	struct sim *s = ce->sim;
	ce->conn = conn;
	ce->last_task_eval = 0;
	cend_release(ce);
	fl_frame_reader_init(&ce->crd, SIM_MAX_FRAME);
	struct fl_channel_config cc;
	memset(&cc, 0, sizeof(cc));
	cc.insecure = !s->cfg->secure;
	if (s->cfg->secure) {
		cc.self = ce->key;
		cc.pinned_server_pk = fl_identity_pk(s->coord);
	}
	if (fl_channel_new(&cc, &ce->cch) != FL_OK) {
		cend_fail(ce, "secure channel");
		return;
	}
	struct fl_buf *out = NULL;
	if (fl_channel_start(ce->cch, &out) != FL_OK) {
		cend_fail(ce, "secure channel (client)");
		return;
	}
	if (out)
		sim_fx_add(ce->fx, SIM_FX_UP, out);
	if (ce->fx)
		ce->fx->ready = fl_channel_established(ce->cch);
}

/* The session hears of the connection once its end of the channel is up. */
static void cend_check_up(struct sim_cend *ce)
{
	if (ce->conn && !ce->cli_up && fl_channel_established(ce->cch)) {
		ce->cli_up = 1;
		cli_session_on_connect(ce->s, ce->sim->now);
	}
}

/* The client's side of a dropped connection (the coordinator's side is
 * the DROP effect, applied first). */
static void cend_drop(struct sim_cend *ce)
{
	ce->conn = 0;
	sim_fx_add(ce->fx, SIM_FX_DROP, NULL);
	if (ce->cli_up)
		cli_session_on_disconnect(ce->s);
}

/* A selected client disappears mid-round: its job never runs and its
 * result is dropped (the session restores its local tensors). */
static void cend_vanish(struct sim_cend *ce)
{
	ce->vanish = 0;
	sim_fx_add(ce->fx, SIM_FX_VANISH, NULL);
	cend_drop(ce);
	struct cli_job *job = ce->job;
	ce->job = NULL;
	cli_session_on_job_done(ce->s, job);
}

/* ---- delivery ---- */

/* A frame at the client's end. Non-zero stops the reader: the connection
 * went away during the call. */
static int cli_frame(void *ctx, const uint8_t *payload, size_t len)
{
	struct sim_cend *ce = ctx;
	uint64_t conn = ce->conn;
	if (len && payload[0] == SIM_TAG_TASK)
		ce->last_task_eval = 0;
	else if (len && payload[0] == SIM_TAG_EVAL_TASK)
		ce->last_task_eval = 1;
	int err = cli_session_on_frame(ce->s, payload, len, ce->sim->now);
	if (err != FL_OK) {
		sim_fx_msg(ce->fx, SIM_FX_ERROR, fl_error_msg());
		cend_drop(ce);
	} else if (ce->vanish) {
		cend_vanish(ce);
	}
	return ce->conn == conn ? FL_OK : FL_WIRE_FEED_STOP;
}

static int cli_plain(void *ctx, const uint8_t *plain, size_t n)
{
	struct sim_cend *ce = ctx;
	return fl_frame_reader_feed(&ce->crd, plain, n, cli_frame, ce);
}

static void cend_down(struct sim_cend *ce, uint64_t conn, const uint8_t *data, size_t len)
{
	struct fl_buf *reply = NULL;
	int rc = fl_channel_recv(ce->cch, data, len, cli_plain, ce, &reply);
	if (ce->conn != conn) { /* dropped or vanished during the delivery */
		fl_buf_unref(reply);
		return;
	}
	if (reply)
		sim_fx_add(ce->fx, SIM_FX_UP, reply);
	if (rc != FL_OK) {
		sim_fx_add(ce->fx, SIM_FX_CHAN_ERROR, NULL);
		sim_fx_msg(ce->fx, SIM_FX_ERROR, fl_error_msg());
		cend_drop(ce);
		return;
	}
	cend_check_up(ce);
}

static void cend_close_down(struct sim_cend *ce)
{
	ce->conn = 0;
	if (ce->cli_up) {
		if (fl_channel_eof(ce->cch) != FL_OK)
			sim_fx_add(ce->fx, SIM_FX_CHAN_ERROR, NULL);
		cli_session_on_disconnect(ce->s);
	}
}

static void cend_job_done(struct sim_cend *ce)
{
	struct cli_job *job = ce->job;
	ce->job = NULL;
	/* the session reports a failed job to the coordinator and closes; the
	 * reason is kept for the failure message (e.g. a diverged model) */
	const char *why = cli_job_error(job);
	if (why)
		sim_fx_msg(ce->fx, SIM_FX_NOTE, why);
	cli_session_on_job_done(ce->s, job);
}

void sim_cend_op(struct sim_cend *ce, enum sim_op op, uint64_t conn, const uint8_t *data,
		 size_t len, struct sim_fxlist *fx)
{
	ce->fx = fx;
	switch (op) {
	case SIM_OP_CONNECT: cend_connect(ce, conn); break;
	case SIM_OP_UP: cend_check_up(ce); break;
	case SIM_OP_DOWN:
		if (ce->conn == conn)
			cend_down(ce, conn, data, len);
		break;
	case SIM_OP_CLOSE_DOWN: cend_close_down(ce); break;
	case SIM_OP_DISCONNECT:
		ce->conn = 0;
		if (ce->cli_up)
			cli_session_on_disconnect(ce->s);
		break;
	case SIM_OP_JOB_DONE:
		if (ce->job)
			cend_job_done(ce);
		break;
	case SIM_OP_END: break;
	}
	if (fx) {
		fx->job = ce->job != NULL;
		fx->finished = cli_session_finished(ce->s);
	}
	ce->fx = NULL;
}

/* ---- set-up and teardown ---- */

static int cend_session(struct sim *s, struct sim_cend *ce)
{
	const struct srv_sim_data *d = s->data;
	const struct fl_partition_client *pc = &d->part->client[ce->index];
	struct cli_session_config cc;
	cli_session_config_default(&cc);
	cc.client_id = ce->id;
	cc.data = d->train;
	cc.train_idx = pc->train;
	cc.n_train = pc->n_train;
	cc.eval_idx = pc->holdout;
	cc.n_eval = pc->n_holdout;
	cc.preferred_dtype = s->cfg->train.dtype;
	cc.base_path = s->cfg->base_path;
	cc.heartbeat_ms = 0;
	cc.threads = 1;
	struct cli_session_io cio = {
		.ctx = ce, .send = cli_send, .close = cli_close, .submit = cli_submit};
	return cli_session_new(&cc, &cio, &ce->s);
}

int sim_cends_setup(struct sim *s)
{
	s->cends = calloc((size_t)s->nclients, sizeof(*s->cends));
	if (!s->cends)
		return fl_error_set(FL_ENOMEM, "sim: out of memory");
	int err = s->cfg->secure ? sim_seeded_identity(s->cfg->train.seed, 0, &s->coord) : FL_OK;
	for (int i = s->rank; !err && i < s->nclients; i += s->nranks) {
		struct sim_cend *ce = &s->cends[i];
		ce->sim = s;
		ce->index = i;
		snprintf(ce->id, sizeof(ce->id), "client-%05d", i);
		fl_rng_seed_stream(&ce->drop_rng, s->cfg->train.seed ^ SIM_DROP_STREAM,
				   (uint64_t)i);
		if (s->cfg->secure)
			err = sim_seeded_identity(s->cfg->train.seed, (uint64_t)i + 1, &ce->key);
		if (!err)
			err = cend_session(s, ce);
	}
	return err;
}

void sim_cends_free(struct sim *s)
{
	for (int i = 0; s->cends && i < s->nclients; i++) {
		struct sim_cend *ce = &s->cends[i];
		if (ce->job && ce->s) /* a job the run ended without (it ran: the pool is gone) */
			cli_session_on_job_done(ce->s, ce->job);
		cli_session_free(ce->s);
		cend_release(ce);
		fl_identity_free(ce->key);
	}
	free(s->cends);
	s->cends = NULL;
}
