/* transport_out.c - the coordinator transport's flow control (transport.h):
 *
 * Output pacing. A round's task is the same frames for every selected
 * client; sealed at once for 10,000 clients it would be 10,000 sealed
 * copies of the model in memory. So a frame is sealed only when it can be
 * written: while the bytes written but not yet accepted by the kernel, over
 * all connections, stay under seal_budget, the connection's own unwritten
 * bytes stay under its share (max(2 x max_frame, seal_budget / 16), or one
 * frame), and the connection has nothing queued before it. Otherwise the
 * connection keeps a reference to the (shared, plaintext) frame in its
 * queue. Connections under their share wait in a round-robin list, served
 * one frame per turn as writes complete; one over its share waits for its
 * own writes (a peer that stops reading holds at most its share). A close
 * asked for while frames are queued happens once they are written. Queued
 * plus unwritten bytes still count against max_output_bytes.
 *
 * Write progress: a connection with unwritten bytes whose writes make no
 * progress for write_timeout_ms (its peer stopped reading) is cut. The
 * writing connections are a list ordered by their last progress, so the
 * check looks only at the expired ones.
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

static void wr_unlink(struct srv_transport *t, struct conn *c)
{
	if (!c->writing)
		return;
	if (c->wr_prev)
		c->wr_prev->wr_next = c->wr_next;
	else
		t->wr_head = c->wr_next;
	if (c->wr_next)
		c->wr_next->wr_prev = c->wr_prev;
	else
		t->wr_tail = c->wr_prev;
	c->wr_prev = c->wr_next = NULL;
	c->writing = 0;
}

/* c made progress now (or started writing): to the tail of the list. */
static void wr_touch(struct conn *c)
{
	struct srv_transport *t = c->t;
	wr_unlink(t, c);
	if (!c->n.pending || fl_net_gone(&c->n))
		return;
	c->wprog_at = uv_now(t->loop);
	c->wqueue = uv_stream_get_write_queue_size((uv_stream_t *)&c->n.tcp);
	c->wr_prev = t->wr_tail;
	if (t->wr_tail)
		t->wr_tail->wr_next = c;
	else
		t->wr_head = c;
	t->wr_tail = c;
	c->writing = 1;
}

uint64_t srv_tr_write_deadline(const struct srv_transport *t)
{
	if (!t->wr_head || !t->cfg.write_timeout_ms)
		return UINT64_MAX;
	return t->wr_head->wprog_at + t->cfg.write_timeout_ms;
}

void srv_tr_write_sweep(struct srv_transport *t, uint64_t now)
{
	while (t->cfg.write_timeout_ms && t->wr_head &&
	       now >= t->wr_head->wprog_at + t->cfg.write_timeout_ms) {
		struct conn *c = t->wr_head;
		size_t q = uv_stream_get_write_queue_size((uv_stream_t *)&c->n.tcp);
		if (q < c->wqueue && !fl_net_gone(&c->n)) { /* the kernel took part of a write */
			wr_touch(c);
			continue;
		}
		wr_unlink(t, c);
		if (!c->n.cut) {
			fl_log_warn("conn %s: %zu bytes not taken by the peer for %u ms "
				    "(--write-timeout): connection cut",
				    c->peer, c->n.pending, t->cfg.write_timeout_ms);
			srv_tr_cut(c);
		}
	}
}

/* fl_net_write through f, with the bytes it queued added to t->unwritten
 * (on_written takes them off as they reach the kernel). */
static void count_pending(struct conn *c, size_t before)
{
	if (c->n.pending > before) {
		c->t->unwritten += c->n.pending - before;
		if (!c->writing)
			wr_touch(c);
	}
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

/* c's own unwritten bytes stay under its share of the budget. */
static int conn_allows(const struct conn *c, size_t len)
{
	size_t two = 2 * (size_t)c->t->cfg.max_frame_bytes, share = c->t->cfg.seal_budget / 16;
	return c->n.pending == 0 || c->n.pending + len <= (two > share ? two : share);
}

static size_t front_len(const struct conn *c)
{
	return c->outq[c->outq_head]->len;
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

/* Serves the connections waiting, one frame each per turn, while the
 * budget allows. A connection over its share leaves the list until its own
 * writes progress; one whose queue emptied closes if that was asked. */
void srv_tr_out_pump(struct srv_transport *t)
{
	while (t->wait_head) {
		struct conn *c = t->wait_head;
		if (c->outq_n && !fl_net_gone(&c->n)) {
			struct fl_buf *f = c->outq[c->outq_head];
			if (!budget_allows(t, f->len))
				return;
			wait_unlink(t, c);
			if (!conn_allows(c, f->len))
				continue;
			c->outq_head = (c->outq_head + 1) % c->outq_cap;
			c->outq_n--;
			c->outq_bytes -= f->len;
			seal_write(c, f);
			if (c->outq_n && !fl_net_gone(&c->n)) {
				wait_append(t, c);
				continue;
			}
		}
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
	wr_touch(c);
	if (c->outq_n && !c->waiting && !fl_net_gone(&c->n) && conn_allows(c, front_len(c)))
		wait_append(t, c);
	srv_tr_out_pump(t);
}

int srv_tr_out_queued(const struct conn *c)
{
	return c->outq_n > 0;
}

void srv_tr_out_free(struct conn *c)
{
	wait_unlink(c->t, c);
	wr_unlink(c->t, c);
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
	if (!c->outq_n && budget_allows(t, frame->len) && conn_allows(c, frame->len))
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
	if (conn_allows(c, front_len(c))) /* else its own next write completion adds it */
		wait_append(t, c);
	return FL_OK;
}

/* ---- input backpressure ---- */

void srv_tr_resume_unlink(struct srv_transport *t, struct conn *c)
{
	if (!c->resume_queued)
		return;
	if (c->resume_prev)
		c->resume_prev->resume_next = c->resume_next;
	else
		t->resume_head = c->resume_next;
	if (c->resume_next)
		c->resume_next->resume_prev = c->resume_prev;
	else
		t->resume_tail = c->resume_prev;
	c->resume_prev = c->resume_next = NULL;
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
	c->resume_prev = t->resume_tail;
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
