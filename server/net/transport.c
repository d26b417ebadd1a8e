/* transport.c - the coordinator's libuv TCP transport (transport.h):
 * accept, frame reassembly, writes with per-connection output caps, the
 * engine's timer, signals and the orderly shutdown. The secure channel of
 * each connection is in transport_sec.c. No protocol decisions: the engine
 * makes them; this file only moves bytes and clock ticks.
 *
 * Ownership: a connection struct embeds its struct fl_net_conn (net.h: the
 * uv_tcp_t, queued writes, close-once) and is freed only in the close
 * callback.
 */
#include "transport_impl.h"

#include "bytes.h"
#include "errors.h"
#include "log.h"

#include <assert.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FLUSH_POLL_MS 100  /* how often closing connections are checked */
#define LOG_FRAME_MAX 1024 /* smaller frames sent are peeked at to log Error messages */

static void after_engine(struct srv_transport *t);
static void begin_stop(struct srv_transport *t, int sig);

void srv_transport_config_default(struct srv_transport_config *c)
{
	memset(c, 0, sizeof(*c));
	c->host = "127.0.0.1";
	c->port = 7420;
	c->backlog = 511;
	c->max_frame_bytes = FL_WIRE_MAX_FRAME_DEFAULT;
	c->max_output_bytes = SRV_TRANSPORT_OUTPUT_DEFAULT;
	c->max_conns = SRV_TRANSPORT_CONNS_DEFAULT;
	c->reserved_conns = SRV_TRANSPORT_CONNS_DEFAULT / 10;
	c->max_handshakes = SRV_TRANSPORT_HANDSHAKES_DEFAULT;
	c->addr_conns = SRV_TRANSPORT_ADDR_CONNS_DEFAULT;
	c->addr_rate = SRV_TRANSPORT_ADDR_RATE_DEFAULT;
	c->addr_burst = SRV_TRANSPORT_ADDR_BURST_DEFAULT;
	c->handshake_timeout_ms = SRV_TRANSPORT_HANDSHAKE_MS_DEFAULT;
	c->flush_timeout_ms = 2000;
	c->write_timeout_ms = 60000;
	c->seal_budget = SRV_TRANSPORT_SEAL_BUDGET;
}

int srv_transport_new(uv_loop_t *loop, const struct srv_transport_config *cfg,
		      struct srv_transport **out)
{
	*out = NULL;
	if (!cfg->host || cfg->port < 0 || cfg->port > 65535 || cfg->max_frame_bytes < 64 ||
	    cfg->max_output_bytes < cfg->max_frame_bytes || cfg->max_conns < 1)
		return fl_error_set(FL_EINVAL,
				    "transport: bad configuration (port %d, max frame %u, "
				    "max output %zu)",
				    cfg->port, cfg->max_frame_bytes, cfg->max_output_bytes);
	if (cfg->reserved_conns >= cfg->max_conns || cfg->max_handshakes < 1 ||
	    cfg->addr_rate < 0 || (cfg->addr_rate > 0 && cfg->addr_burst < 1))
		return fl_error_set(FL_EINVAL,
				    "transport: bad limits (%zu of %zu connections reserved, %zu "
				    "handshakes, per address rate %g burst %g)",
				    cfg->reserved_conns, cfg->max_conns, cfg->max_handshakes,
				    cfg->addr_rate, cfg->addr_burst);
	struct srv_transport *t = calloc(1, sizeof(*t));
	if (!t || !(t->host = strdup(cfg->host))) {
		free(t);
		return fl_error_set(FL_ENOMEM, "transport: out of memory");
	}
	t->loop = loop;
	t->cfg = *cfg;
	t->cfg.host = t->host;
	t->insecure = !cfg->access || srv_access_insecure(cfg->access);
	if (!t->cfg.handshake_timeout_ms)
		t->cfg.handshake_timeout_ms = SRV_TRANSPORT_HANDSHAKE_MS_DEFAULT;
	if (!t->cfg.seal_budget)
		t->cfg.seal_budget = SRV_TRANSPORT_SEAL_BUDGET;
	if (srv_tr_limits_new(t) != FL_OK) {
		free(t->host);
		free(t);
		return FL_ENOMEM;
	}
	*out = t;
	return FL_OK;
}

/* ---- connection table: id -> conn in O(1) ---- */

static struct conn *conn_find(struct srv_transport *t, uint64_t id)
{
	uint32_t slot = (uint32_t)(id & 0xffffffffu);
	if (slot >= t->nslots || !t->slots[slot] || t->slots[slot]->id != id)
		return NULL;
	return t->slots[slot];
}

static int slot_take(struct srv_transport *t, struct conn *c)
{
	uint32_t slot;
	if (t->nfree) {
		slot = t->free_slots[--t->nfree];
	} else {
		if (t->nslots == UINT32_MAX)
			return FL_ERANGE;
		struct conn **s = realloc(t->slots, (t->nslots + 1) * sizeof(*s));
		uint32_t *f = s ? realloc(t->free_slots, (t->nslots + 1) * sizeof(*f)) : NULL;
		if (s)
			t->slots = s;
		if (!f)
			return FL_ENOMEM;
		t->free_slots = f;
		slot = t->nslots++;
	}
	t->slots[slot] = c;
	c->slot = slot;
	c->id = ((uint64_t)++t->serial << 32) | slot;
	return 0;
}

static void slot_release(struct srv_transport *t, struct conn *c)
{
	if (c->slot < t->nslots && t->slots[c->slot] == c) {
		t->slots[c->slot] = NULL;
		t->free_slots[t->nfree++] = c->slot;
	}
}

/* ---- closing ---- */

static void maybe_done(struct srv_transport *t)
{
	if (!t->head && t->nclosing) /* each closing connection is counted once */
		fl_log_error("transport: %zu connections counted as closing after the last closed",
			     t->nclosing);
	if (t->stopping && !t->head && !t->timer_closed) {
		t->timer_closed = 1;
		uv_close((uv_handle_t *)&t->timer, NULL);
	}
}

static void on_conn_closed(uv_handle_t *h)
{
	struct conn *c = (struct conn *)h;
	struct srv_transport *t = c->t;
	if (c->prev)
		c->prev->next = c->next;
	else
		t->head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	t->nconns--;
	if (c->counted_closing)
		t->nclosing--;
	if (!c->up && c->ch)
		t->nhandshaking--;
	srv_tr_addr_release(t, c);
	srv_tr_key_forget(c);
	slot_release(t, c);
	uint64_t id = c->id;
	int was_up = c->up;
	if (c->slot != UINT32_MAX)
		fl_log_info("conn %s: closed", c->peer);
	fl_frame_reader_free(&c->rd);
	fl_channel_free(c->ch);
	srv_tr_out_free(c);
	if (c->resume_queued)
		srv_tr_resume_unlink(t, c);
	free(c);
	if (!t->quiet && t->e && was_up) {
		/* Unknown ids (the engine closed it itself) are ignored there. */
		srv_engine_on_disconnect(t->e, id, uv_now(t->loop));
		after_engine(t);
	}
	maybe_done(t);
}

void srv_tr_cut(struct conn *c)
{
	fl_net_cut(&c->n);
}

void srv_tr_count_closing(struct conn *c)
{
	if (c->counted_closing)
		return;
	c->counted_closing = 1;
	c->t->nclosing++;
	c->close_by = uv_now(c->t->loop) + c->t->cfg.flush_timeout_ms;
}

/* The final record (when the channel is up), flush what is queued, close.
 * With frames still waiting to be sealed, that happens once they are. */
void srv_tr_close(struct conn *c)
{
	if (srv_tr_out_queued(c) && !fl_net_gone(&c->n)) {
		c->close_after = 1;
		srv_tr_count_closing(c);
		return;
	}
	if (srv_tr_close_channel(c))
		return;
	srv_tr_count_closing(c);
	fl_net_shutdown(&c->n);
}

/* ---- writing ---- */

/* Error or Bye from the transport itself (outside the engine's protocol):
 * sealed once the channel is up, else in plaintext (a peer that is no
 * secure client: it could read nothing else). */
static void conn_send(struct conn *c, struct fl_buf *b)
{
	if (fl_channel_established(c->ch))
		srv_tr_send_frame(c, b);
	else
		srv_tr_write_raw(c, b);
}

void srv_tr_send_error(struct conn *c, int err, const char *msg)
{
	struct fl_buf *b = NULL;
	if (fl_wire_encode_error(err, msg, &b) == FL_OK)
		conn_send(c, b);
}

static void conn_send_bye(struct conn *c, const char *reason)
{
	struct fl_buf *b = NULL;
	if (fl_wire_encode_bye(reason, &b) == FL_OK)
		conn_send(c, b);
}

/* ---- engine io ---- */

static int io_send(void *ctx, uint64_t id, struct fl_buf *frame)
{
	struct srv_transport *t = ctx;
	struct conn *c = conn_find(t, id);
	if (!c) {
		fl_buf_unref(frame);
		return FL_EIO;
	}
	return srv_tr_send_frame(c, frame);
}

static void io_pause(void *ctx, uint64_t id)
{
	struct conn *c = conn_find(ctx, id);
	if (c)
		srv_tr_pause(c);
}

static void io_resume(void *ctx, uint64_t id)
{
	struct conn *c = conn_find(ctx, id);
	if (c)
		srv_tr_resume(c);
}

static void io_close(void *ctx, uint64_t id)
{
	struct conn *c = conn_find(ctx, id);
	if (c)
		srv_tr_close(c);
}

static void io_on_round(void *ctx, const struct srv_round_report *r)
{
	struct srv_transport *t = ctx;
	if (t->cfg.on_round)
		t->cfg.on_round(t->cfg.hook_ctx, r);
}

void srv_transport_engine_io(struct srv_transport *t, struct srv_engine_io *io)
{
	memset(io, 0, sizeof(*io));
	io->ctx = t;
	io->send = io_send;
	io->close = io_close;
	io->on_round = io_on_round;
	io->pause = io_pause;
	io->resume = io_resume;
}

/* ---- timer ---- */

static void on_timer(uv_timer_t *h);

static void rearm(struct srv_transport *t)
{
	if (t->timer_closed)
		return;
	uint64_t now = uv_now(t->loop);
	uint64_t d = t->stopping ? UINT64_MAX : srv_engine_next_deadline(t->e);
	if (t->nclosing && d > now + FLUSH_POLL_MS)
		d = now + FLUSH_POLL_MS;
	if (t->nhandshaking && d > now + SRV_TR_HS_POLL_MS)
		d = now + SRV_TR_HS_POLL_MS;
	uint64_t w = srv_tr_write_deadline(t);
	if (w < d)
		d = w;
	if (d == UINT64_MAX) {
		uv_timer_stop(&t->timer);
		return;
	}
	uv_timer_start(&t->timer, on_timer, d > now ? d - now : 0, 0);
}

static void after_engine(struct srv_transport *t)
{
	srv_tr_resume_pending(t);
	if (!t->stopping && (srv_engine_finished(t->e) || srv_engine_failed(t->e, NULL)))
		begin_stop(t, 0);
	rearm(t);
}

static void on_timer(uv_timer_t *h)
{
	struct srv_transport *t = h->data;
	uint64_t now = uv_now(t->loop);
	if (t->nclosing) {
		for (struct conn *c = t->head; c; c = c->next)
			if (c->counted_closing && !c->n.cut && now >= c->close_by) {
				fl_log_warn("conn %s: not flushed within %u ms: closed", c->peer,
					    t->cfg.flush_timeout_ms);
				srv_tr_cut(c);
			}
	}
	if (t->nhandshaking)
		srv_tr_handshake_sweep(t, now);
	srv_tr_write_sweep(t, now);
	srv_tr_limits_log(t, 0);
	if (!t->stopping) {
		srv_engine_tick(t->e, now);
		after_engine(t);
	} else {
		rearm(t);
	}
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct conn *c = (struct conn *)h;
	buf->base = c->t->rbuf;
	buf->len = sizeof(c->t->rbuf);
}

int srv_tr_on_frame(void *ctx, const uint8_t *payload, size_t n)
{
	struct conn *c = ctx;
	struct srv_transport *t = c->t;
	if (fl_net_gone(&c->n) || t->stopping)
		return FL_WIRE_FEED_STOP;
	if (!c->up)
		srv_tr_conn_up(c); /* records right behind the last handshake message */
	if (t->cfg.debug_tensors || n + FL_WIRE_FRAME_HEADER_BYTES <= LOG_FRAME_MAX)
		srv_tr_log_frame(c, "received", payload, n);
	if (!c->first_seen && srv_tr_first_frame(c, payload, n))
		return FL_WIRE_FEED_STOP;
	if (c->paused) /* bytes read before the pause: kept for the resume */
		return srv_tr_hold_frame(c, payload, n) == FL_OK ? FL_OK : FL_WIRE_FEED_STOP;
	srv_engine_on_frame(t->e, c->id, payload, n, uv_now(t->loop));
	if (c->pause_now && !c->redelivering) { /* the engine did not consume this frame */
		c->pause_now = 0;
		if (srv_tr_hold_frame(c, payload, n) != FL_OK) {
			srv_tr_cut(c);
			return FL_WIRE_FEED_STOP;
		}
	}
	/* stop feeding a closed stream */
	return fl_net_gone(&c->n) || t->stopping ? FL_WIRE_FEED_STOP : FL_OK;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct conn *c = (struct conn *)s;
	struct srv_transport *t = c->t;
	if (nread == 0)
		return;
	if (nread < 0) {
		fl_net_read_end(&c->n, c->ch, nread,
				c->up ? "" : " (a client that does not trust this server's key?)");
		if (!c->up && c->ch)
			t->st.failed++;
		srv_tr_cut(c);
		return;
	}
	t->st.sock_in += (uint64_t)nread;
	if (!c->up)
		t->st.hs_in += (uint64_t)nread;
	srv_tr_feed(c, (const uint8_t *)buf->base, (size_t)nread);
	after_engine(t);
}

int srv_tr_read_start(struct conn *c)
{
	return uv_read_start((uv_stream_t *)&c->n.tcp, on_alloc, on_read);
}

/* ---- accepting ---- */

static void on_connection(uv_stream_t *server, int status)
{
	struct srv_transport *t = server->data;
	if (status < 0) {
		fl_log_warn("accept: %s", uv_strerror(status));
		return;
	}
	struct conn *c = calloc(1, sizeof(*c));
	if (!c) {
		fl_log_error("accept: out of memory");
		return;
	}
	c->t = t;
	c->slot = UINT32_MAX;
	c->addr = -1;
	fl_net_conn_init(&c->n, t->loop, t->cfg.max_output_bytes, on_conn_closed, &t->st.sock_out,
			 &t->st.hs_out);
	c->n.on_written = srv_tr_out_written;
	c->next = t->head;
	if (t->head)
		t->head->prev = c;
	t->head = c;
	t->nconns++;
	fl_frame_reader_init(&c->rd, t->cfg.max_frame_bytes);
	if (uv_accept(server, (uv_stream_t *)&c->n.tcp) != 0) {
		srv_tr_cut(c);
		return;
	}
	srv_tr_peer_name(&c->n.tcp, c->peer, sizeof(c->peer));
	snprintf(c->n.name, sizeof(c->n.name), "conn %s", c->peer);
	int limit = t->stopping ? SRV_LIMIT_N : srv_tr_admit(t, c);
	if (t->stopping || limit != SRV_LIMIT_N || slot_take(t, c) != 0) {
		if (limit != SRV_LIMIT_N)
			srv_tr_limited(t, limit, c->peer);
		else if (!t->stopping)
			fl_log_error("conn %s: refused: out of memory", c->peer);
		c->id = 0;
		srv_tr_cut(c);
		return;
	}
	uv_tcp_nodelay(&c->n.tcp, 1);
	fl_log_info("conn %s: connected", c->peer);
	if (srv_tr_chan_open(c) != FL_OK || srv_tr_read_start(c) != 0) {
		srv_tr_cut(c);
		return;
	}
	if (fl_channel_established(c->ch)) /* --insecure: nothing to negotiate */
		srv_tr_conn_up(c);
	after_engine(t);
}

/* ---- signals and shutdown ---- */

static void on_signal(uv_signal_t *h, int signum)
{
	struct srv_transport *t = h->data;
	if (signum == SIGHUP) {
		fl_log_info("SIGHUP: reloading");
		srv_tr_reload(t);
		if (t->cfg.on_reload)
			t->cfg.on_reload(t->cfg.hook_ctx);
		return;
	}
	fl_log_info("%s: shutting down after round %llu", signum == SIGINT ? "SIGINT" : "SIGTERM",
		    (unsigned long long)srv_engine_round(t->e));
	begin_stop(t, signum);
}

static void begin_stop(struct srv_transport *t, int sig)
{
	if (t->stopping)
		return;
	t->stopping = 1;
	t->sig_got = sig;
	if (sig)
		t->quiet = 1; /* the engine keeps its last checkpoint; tell it nothing more */
	if (t->listening) {
		t->listening = 0;
		uv_close((uv_handle_t *)&t->listener, NULL);
	}
	for (int i = 0; i < 3; i++)
		if (!uv_is_closing((uv_handle_t *)&t->sig[i]))
			uv_close((uv_handle_t *)&t->sig[i], NULL);
	for (struct conn *c = t->head; c; c = c->next) {
		if (sig && c->up && !fl_net_gone(&c->n))
			conn_send_bye(c, "shutdown");
		srv_tr_close(c);
	}
	if (t->cfg.on_stop)
		t->cfg.on_stop(t->cfg.hook_ctx);
	srv_tr_limits_log(t, 1);
	maybe_done(t);
	rearm(t);
}

void srv_transport_engine_changed(struct srv_transport *t)
{
	if (t->started)
		after_engine(t);
}

int srv_transport_signal(const struct srv_transport *t)
{
	return t->sig_got;
}

void srv_transport_stats(const struct srv_transport *t, struct srv_transport_stats *out)
{
	*out = t->st;
}

int srv_transport_port(const struct srv_transport *t)
{
	return t->port;
}

static int bind_listen(struct srv_transport *t)
{
	uv_getaddrinfo_t req;
	int rc = fl_net_resolve(t->loop, &req, NULL, t->host, t->cfg.port, 1);
	if (rc != 0)
		return fl_error_set(FL_EIO, "listen %s:%d: %s", t->host, t->cfg.port,
				    uv_strerror(rc));
	rc = UV_EADDRNOTAVAIL;
	for (struct addrinfo *a = req.addrinfo; a; a = a->ai_next) {
		if ((rc = uv_tcp_bind(&t->listener, a->ai_addr, 0)) == 0)
			break;
	}
	uv_freeaddrinfo(req.addrinfo);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&t->listener, t->cfg.backlog, on_connection);
	if (rc != 0)
		return fl_error_set(FL_EIO, "listen %s:%d: %s", t->host, t->cfg.port,
				    uv_strerror(rc));
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	if (uv_tcp_getsockname(&t->listener, (struct sockaddr *)&ss, &len) == 0)
		t->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
							 : ((struct sockaddr_in *)&ss)->sin_port);
	return FL_OK;
}

int srv_transport_start(struct srv_transport *t, struct srv_engine *e)
{
	assert(!t->started);
	t->started = 1;
	t->e = e;
	uv_timer_init(t->loop, &t->timer);
	t->timer.data = t;
	static const int sigs[3] = {SIGINT, SIGTERM, SIGHUP};
	for (int i = 0; i < 3; i++) {
		uv_signal_init(t->loop, &t->sig[i]);
		t->sig[i].data = t;
		uv_signal_start(&t->sig[i], on_signal, sigs[i]);
	}
	uv_tcp_init(t->loop, &t->listener);
	t->listener.data = t;
	t->listening = 1;
	int err = bind_listen(t);
	if (err != FL_OK) {
		begin_stop(t, 0);
		return err;
	}
	after_engine(t); /* an engine restored as finished stops at once */
	return FL_OK;
}

void srv_transport_free(struct srv_transport *t)
{
	if (!t)
		return;
	assert(!t->head && "srv_transport_free before the loop closed every connection");
	srv_tr_limits_free(t);
	free(t->by_pk);
	free(t->slots);
	free(t->free_slots);
	free(t->host);
	free(t);
}
