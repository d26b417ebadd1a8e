/* transport_out.c - the coordinator transport's flow control (transport.h):
 *
 * Output pacing. A round's task is the same frames for every selected
 * client; sealed at once for 10,000 clients it would be 10,000 sealed
 * copies of the model in memory. So a frame is sealed only when it can be
 * written: while the bytes written but not yet accepted by the kernel, over
 * all connections, stay under seal_budget, and the connection has nothing
 * queued before it. Otherwise the connection keeps a reference to the
 * (shared, plaintext) frame in its queue, and waits in a FIFO of
 * connections; every completed write seals and writes more, draining one
 * connection's queue before the next (its client can start training
 * early). A close asked for while frames are queued happens once they are
 * written. Queued plus unwritten bytes still count against max_output_bytes
 * (a reader too slow is cut).
 *
 * Input backpressure (engine io pause / resume, the engine's upload slots):
 * a paused connection is not read; the frame the engine did not consume and
 * every later one already read are kept (each with its length) and
 * delivered again, in order, on resume, after the engine call returns.
 *
 * No protocol decisions here. */
#include "transport_impl.h"

#include "bytes.h"
#include "errors.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

#define LOG_FRAME_MAX 1024 /* smaller frames sent are peeked at to log Error messages */

/* ---- output ---- */

/* fl_net_write through f, with the bytes it queued added to t->unwritten
 * (on_written takes them off as they reach the kernel). */
static void count_pending(struct conn *c, size_t before)
{
	if (c->n.pending > before)
		c->t->unwritten += c->n.pending - before;
}

int srv_tr_write_raw(struct conn *c, struct fl_buf *b)
{
	size_t before = c->n.pending;
	int rc = fl_net_write(&c->n, b, !c->up);
	count_pending(c, before);
	return rc;
}

static int seal_write(struct conn *c, struct fl_buf *frame)
{
	size_t before = c->n.pending;
	int rc = fl_net_send_sealed(&c->n, c->ch, frame, !c->up);
	count_pending(c, before);
	return rc;
}

int srv_tr_close_channel(struct conn *c)
{
	size_t before = c->n.pending;
	int rc = fl_net_close_channel(&c->n, c->ch, !c->up);
	count_pending(c, before);
	return rc;
}

static void wait_unlink(struct srv_transport *t, struct conn *c)
{
	if (!c->waiting)
		return;
	if (c->wait_prev)
		c->wait_prev->wait_next = c->wait_next;
	else
		t->wait_head = c->wait_next;
	if (c->wait_next)
		c->wait_next->wait_prev = c->wait_prev;
	else
		t->wait_tail = c->wait_prev;
	c->wait_prev = c->wait_next = NULL;
	c->waiting = 0;
}

static void wait_append(struct srv_transport *t, struct conn *c)
{
	if (c->waiting)
		return;
	c->wait_prev = t->wait_tail;
	c->wait_next = NULL;
	if (t->wait_tail)
		t->wait_tail->wait_next = c;
	else
		t->wait_head = c;
	t->wait_tail = c;
	c->waiting = 1;
}

static int budget_allows(const struct srv_transport *t, size_t len)
{
	return t->unwritten == 0 || t->unwritten + len <= t->cfg.seal_budget;
}

static int queue_push(struct conn *c, struct fl_buf *frame)
{
	if (c->outq_n == c->outq_cap) {
		size_t cap = c->outq_cap ? 2 * c->outq_cap : 16;
		struct fl_buf **q = malloc(cap * sizeof(*q));
		if (!q)
			return fl_error_set(FL_ENOMEM, "out of memory queueing a frame");
		for (size_t i = 0; i < c->outq_n; i++)
			q[i] = c->outq[(c->outq_head + i) % c->outq_cap];
		free(c->outq);
		c->outq = q;
		c->outq_cap = cap;
		c->outq_head = 0;
	}
	c->outq[(c->outq_head + c->outq_n) % c->outq_cap] = frame;
	c->outq_n++;
	c->outq_bytes += frame->len;
	return FL_OK;
}

/* Seals and writes c's queued frames while the budget allows; 1 when its
 * queue is empty. */
static int drain(struct conn *c)
{
	struct srv_transport *t = c->t;
	while (c->outq_n && !fl_net_gone(&c->n)) {
		struct fl_buf *f = c->outq[c->outq_head];
		if (!budget_allows(t, f->len))
			return 0;
		c->outq_head = (c->outq_head + 1) % c->outq_cap;
		c->outq_n--;
		c->outq_bytes -= f->len;
		seal_write(c, f);
	}
	return 1;
}

void srv_tr_out_pump(struct srv_transport *t)
{
	while (t->wait_head) {
		struct conn *c = t->wait_head;
		if (!drain(c))
			return;
		wait_unlink(t, c);
		if (c->close_after) {
			c->close_after = 0;
			srv_tr_close(c);
		}
	}
}

void srv_tr_out_written(struct fl_net_conn *n, size_t bytes)
{
	struct conn *c = (struct conn *)n;
	struct srv_transport *t = c->t;
	t->unwritten -= bytes < t->unwritten ? bytes : t->unwritten;
	srv_tr_out_pump(t);
}

int srv_tr_out_queued(const struct conn *c)
{
	return c->outq_n > 0;
}

void srv_tr_out_free(struct conn *c)
{
	wait_unlink(c->t, c);
	for (size_t i = 0; i < c->outq_n; i++)
		fl_buf_unref(c->outq[(c->outq_head + i) % c->outq_cap]);
	free(c->outq);
	c->outq = NULL;
	c->outq_n = c->outq_cap = 0;
	c->outq_bytes = 0;
	free(c->held);
	c->held = NULL;
}

/* One protocol frame: sealed into a record (as is with --insecure), now or
 * once its turn comes. */
int srv_tr_send_frame(struct conn *c, struct fl_buf *frame)
{
	struct srv_transport *t = c->t;
	if (fl_net_gone(&c->n) || !fl_channel_established(c->ch)) {
		fl_buf_unref(frame);
		return FL_EIO;
	}
	if ((t->cfg.debug_tensors || frame->len <= LOG_FRAME_MAX) &&
	    frame->len > FL_WIRE_FRAME_HEADER_BYTES)
		srv_tr_log_frame(c, "sent", frame->data + FL_WIRE_FRAME_HEADER_BYTES,
				 frame->len - FL_WIRE_FRAME_HEADER_BYTES);
	if (!c->outq_n && budget_allows(t, frame->len))
		return seal_write(c, frame);
	if (c->n.pending + c->outq_bytes + frame->len > c->n.max_output) {
		fl_log_warn("%s: %zu bytes queued, over the output cap of %zu: connection cut",
			    c->n.name, c->n.pending + c->outq_bytes + frame->len, c->n.max_output);
		fl_buf_unref(frame);
		srv_tr_cut(c);
		return FL_EIO;
	}
	if (queue_push(c, frame) != FL_OK) {
		fl_buf_unref(frame);
		srv_tr_cut(c);
		return FL_EIO;
	}
	wait_append(t, c);
	return FL_OK;
}

/* ---- input backpressure ---- */

void srv_tr_resume_unlink(struct srv_transport *t, struct conn *c)
{
	struct conn **p = &t->resume_head, *prev = NULL;
	while (*p && *p != c) {
		prev = *p;
		p = &(*p)->resume_next;
	}
	if (!*p)
		return;
	*p = c->resume_next;
	if (t->resume_tail == c)
		t->resume_tail = prev;
	c->resume_next = NULL;
	c->resume_queued = 0;
}

/* Keeps one frame of a paused connection (its length prefix included). */
int srv_tr_hold_frame(struct conn *c, const uint8_t *payload, size_t n)
{
	size_t need = c->held_len + FL_WIRE_FRAME_HEADER_BYTES + n;
	if (need > c->held_cap) {
		size_t cap = need; /* exact: many parked connections hold frames at once */
		uint8_t *h = realloc(c->held, cap);
		if (!h)
			return fl_error_set(FL_ENOMEM,
					    "out of memory holding a paused connection's "
					    "frames");
		c->held = h;
		c->held_cap = cap;
	}
	fl_be32_put(c->held + c->held_len, (uint32_t)n);
	memcpy(c->held + c->held_len + FL_WIRE_FRAME_HEADER_BYTES, payload, n);
	c->held_len = need;
	return FL_OK;
}

void srv_tr_pause(struct conn *c)
{
	if (fl_net_gone(&c->n))
		return;
	c->paused = c->pause_now = 1;
	uv_read_stop((uv_stream_t *)&c->n.tcp);
}

void srv_tr_resume(struct conn *c)
{
	struct srv_transport *t = c->t;
	if (!c->paused || c->resume_queued)
		return;
	c->resume_queued = 1;
	c->resume_next = NULL;
	if (t->resume_tail)
		t->resume_tail->resume_next = c;
	else
		t->resume_head = c;
	t->resume_tail = c;
}

/* Delivers a resumed connection's kept frames; a new pause keeps the rest. */
static void redeliver(struct conn *c)
{
	c->paused = 0;
	size_t off = 0;
	while (off < c->held_len && !fl_net_gone(&c->n) && !c->paused) {
		uint32_t n = fl_be32_get(c->held + off);
		const uint8_t *p = c->held + off + FL_WIRE_FRAME_HEADER_BYTES;
		c->redelivering = 1;
		int rc = srv_tr_on_frame(c, p, n);
		c->redelivering = 0;
		if (c->paused) { /* the engine paused again at this frame: keep it */
			c->pause_now = 0;
			break;
		}
		off += FL_WIRE_FRAME_HEADER_BYTES + n;
		if (rc != FL_OK)
			break;
	}
	if (off && off < c->held_len)
		memmove(c->held, c->held + off, c->held_len - off);
	c->held_len -= off < c->held_len ? off : c->held_len;
	if (!c->paused) { /* everything delivered: an idle connection keeps no buffer */
		free(c->held);
		c->held = NULL;
		c->held_len = c->held_cap = 0;
	}
	if (!c->paused && !fl_net_gone(&c->n)) {
		if (srv_tr_read_start(c) != 0)
			srv_tr_cut(c);
	}
}

void srv_tr_resume_pending(struct srv_transport *t)
{
	if (t->resuming)
		return;
	t->resuming = 1;
	while (t->resume_head && !t->stopping) {
		struct conn *c = t->resume_head;
		srv_tr_resume_unlink(t, c);
		if (!fl_net_gone(&c->n))
			redeliver(c);
	}
	t->resuming = 0;
}
