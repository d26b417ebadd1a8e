/* transport.c - the coordinator's libuv TCP transport (transport.h):
 * accept, frame reassembly, writes with per-connection output caps, the
 * engine's timer, signals and the orderly shutdown. No protocol decisions:
 * the engine makes them; this file only moves bytes and clock ticks.
 *
 * Ownership: a connection struct embeds its uv_tcp_t and is freed only in
 * the close callback; a write owns one reference to its frame until the
 * write callback; closing twice is harmless (flag checked first).
 */
#include "transport.h"

#include "errors.h"
#include "log.h"

#include <assert.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FLUSH_POLL_MS 100 /* how often closing connections are checked */
#define LOG_FRAME_MAX 1024 /* smaller frames sent are peeked at to log Error messages */

struct conn {
	uv_tcp_t tcp; /* first, so the handle pointer is the conn pointer */
	struct srv_transport *t;
	uint64_t id; /* (serial << 32) | slot */
	uint32_t slot;
	char peer[64];
	struct fl_frame_reader rd;
	size_t pending;    /* bytes queued, not yet written */
	int closing;       /* flush, then close */
	int cut;           /* uv_close called */
	uint64_t close_by; /* flush deadline */
	uv_shutdown_t sreq;
	struct conn *prev, *next;
};

struct wreq {
	uv_write_t req;
	struct fl_buf *buf;
	struct conn *c;
};

struct srv_transport {
	uv_loop_t *loop;
	struct srv_transport_config cfg;
	char *host;
	struct srv_engine *e;
	uv_tcp_t listener;
	uv_timer_t timer;
	uv_signal_t sig[3];
	int started, listening, stopping, quiet, sig_got, port;
	int timer_closed;
	struct conn *head; /* every open connection */
	size_t nconns, nclosing;
	struct conn **slots;
	uint32_t nslots, *free_slots, nfree;
	uint32_t serial;
	char rbuf[SRV_TRANSPORT_READ_BYTES];
};

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
	c->flush_timeout_ms = 2000;
}

int srv_transport_new(uv_loop_t *loop, const struct srv_transport_config *cfg,
		      struct srv_transport **out)
{
	*out = NULL;
	if (!cfg->host || cfg->port < 0 || cfg->port > 65535 || cfg->max_frame_bytes < 64 ||
	    cfg->max_output_bytes < cfg->max_frame_bytes || cfg->max_conns < 1)
		return fl_error_set(FL_EINVAL, "transport: bad configuration (port %d, max frame %u, "
					       "max output %zu)",
				    cfg->port, cfg->max_frame_bytes, cfg->max_output_bytes);
	struct srv_transport *t = calloc(1, sizeof(*t));
	if (!t || !(t->host = strdup(cfg->host))) {
		free(t);
		return fl_error_set(FL_ENOMEM, "transport: out of memory");
	}
	t->loop = loop;
	t->cfg = *cfg;
	t->cfg.host = t->host;
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
			return -1;
		struct conn **s = realloc(t->slots, (t->nslots + 1) * sizeof(*s));
		uint32_t *f = s ? realloc(t->free_slots, (t->nslots + 1) * sizeof(*f)) : NULL;
		if (s)
			t->slots = s;
		if (!f)
			return -1;
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
	if (c->closing)
		t->nclosing--;
	slot_release(t, c);
	uint64_t id = c->id;
	if (c->slot != UINT32_MAX)
		fl_log_info("conn %s: closed", c->peer);
	fl_frame_reader_free(&c->rd);
	free(c);
	if (!t->quiet && t->e) {
		/* Unknown ids (the engine closed it itself) are ignored there. */
		srv_engine_on_disconnect(t->e, id, uv_now(t->loop));
		after_engine(t);
	}
	maybe_done(t);
}

static void conn_cut(struct conn *c)
{
	if (c->cut)
		return;
	c->cut = 1;
	uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	conn_cut(req->data);
}

/* Flush what is queued, then close. */
static void conn_close(struct conn *c)
{
	if (c->cut || c->closing)
		return;
	struct srv_transport *t = c->t;
	c->closing = 1;
	t->nclosing++;
	c->close_by = uv_now(t->loop) + t->cfg.flush_timeout_ms;
	uv_read_stop((uv_stream_t *)&c->tcp);
	c->sreq.data = c;
	if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
		conn_cut(c);
}

/* ---- writing ---- */

static void log_tensor(struct srv_transport *t, const struct conn *c, const char *dir,
		       const uint8_t *payload, size_t len)
{
	fl_envelope *env = NULL;
	if (fl_wire_decode(payload, len, t->cfg.max_frame_bytes, &env) != FL_OK)
		return;
	if (t->cfg.debug_tensors && env->body_case == FEDLOHA__V1__ENVELOPE__BODY_CHUNK &&
	    env->chunk->offset == 0)
		fl_log_debug("conn %s: %s tensor %s round %llu", c->peer, dir, env->chunk->name,
			     (unsigned long long)env->chunk->round);
	else if (env->body_case == FEDLOHA__V1__ENVELOPE__BODY_ERROR)
		fl_log_warn("conn %s: %s error: %s", c->peer, dir,
			    env->error->message ? env->error->message : "");
	fl_wire_envelope_free(env);
}

static void on_written(uv_write_t *req, int status)
{
	struct wreq *w = (struct wreq *)req;
	struct conn *c = w->c;
	c->pending -= w->buf->len;
	fl_buf_unref(w->buf);
	free(w);
	if (status < 0 && status != UV_ECANCELED) {
		fl_log_debug("conn %s: write failed: %s", c->peer, uv_strerror(status));
		conn_cut(c);
	}
}

/* Takes over one reference to b. */
static int conn_write(struct conn *c, struct fl_buf *b)
{
	struct srv_transport *t = c->t;
	if (c->cut || c->closing) {
		fl_buf_unref(b);
		return -1;
	}
	if (c->pending + b->len > t->cfg.max_output_bytes) {
		fl_log_warn("conn %s: %zu bytes queued, over the output cap of %zu: slow reader "
			    "closed",
			    c->peer, c->pending + b->len, t->cfg.max_output_bytes);
		fl_buf_unref(b);
		conn_cut(c);
		return -1;
	}
	struct wreq *w = malloc(sizeof(*w));
	if (!w) {
		fl_buf_unref(b);
		conn_cut(c);
		return -1;
	}
	if ((t->cfg.debug_tensors || b->len <= LOG_FRAME_MAX) &&
	    b->len > FL_WIRE_FRAME_HEADER_BYTES)
		log_tensor(t, c, "sent", b->data + FL_WIRE_FRAME_HEADER_BYTES,
			   b->len - FL_WIRE_FRAME_HEADER_BYTES);
	w->buf = b;
	w->c = c;
	uv_buf_t ub = uv_buf_init((char *)b->data, (unsigned)b->len);
	int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &ub, 1, on_written);
	if (rc != 0) {
		fl_log_debug("conn %s: write refused: %s", c->peer, uv_strerror(rc));
		fl_buf_unref(b);
		free(w);
		conn_cut(c);
		return -1;
	}
	c->pending += b->len;
	return 0;
}

/* Error or Bye from the transport itself (outside the engine's protocol). */
static void conn_send_env(struct conn *c, const fl_envelope *env)
{
	struct fl_buf *b = NULL;
	if (fl_wire_encode(env, &b) == FL_OK)
		conn_write(c, b);
}

static void conn_send_error(struct conn *c, int err, const char *msg)
{
	Fedloha__V1__Error er = FEDLOHA__V1__ERROR__INIT;
	er.code = (uint32_t)(err < 0 ? -err : err);
	er.message = (char *)msg;
	fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT;
	env.body_case = FEDLOHA__V1__ENVELOPE__BODY_ERROR;
	env.error = &er;
	conn_send_env(c, &env);
}

static void conn_send_bye(struct conn *c, const char *reason)
{
	Fedloha__V1__Bye bye = FEDLOHA__V1__BYE__INIT;
	bye.reason = (char *)reason;
	fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT;
	env.body_case = FEDLOHA__V1__ENVELOPE__BODY_BYE;
	env.bye = &bye;
	conn_send_env(c, &env);
}

/* ---- engine io ---- */

static int io_send(void *ctx, uint64_t id, struct fl_buf *frame)
{
	struct srv_transport *t = ctx;
	struct conn *c = conn_find(t, id);
	if (!c) {
		fl_buf_unref(frame);
		return -1;
	}
	return conn_write(c, frame);
}

static void io_close(void *ctx, uint64_t id)
{
	struct conn *c = conn_find(ctx, id);
	if (c)
		conn_close(c);
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
	if (d == UINT64_MAX) {
		uv_timer_stop(&t->timer);
		return;
	}
	uv_timer_start(&t->timer, on_timer, d > now ? d - now : 0, 0);
}

static void after_engine(struct srv_transport *t)
{
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
			if (c->closing && !c->cut && now >= c->close_by) {
				fl_log_warn("conn %s: not flushed within %u ms: closed", c->peer,
					    t->cfg.flush_timeout_ms);
				conn_cut(c);
			}
	}
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

static int on_frame(void *ctx, const uint8_t *payload, size_t n)
{
	struct conn *c = ctx;
	struct srv_transport *t = c->t;
	if (c->closing || c->cut || t->stopping)
		return 1;
	if (t->cfg.debug_tensors || n + FL_WIRE_FRAME_HEADER_BYTES <= LOG_FRAME_MAX)
		log_tensor(t, c, "received", payload, n);
	srv_engine_on_frame(t->e, c->id, payload, n, uv_now(t->loop));
	return c->closing || c->cut || t->stopping; /* stop feeding a closed stream */
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct conn *c = (struct conn *)s;
	struct srv_transport *t = c->t;
	if (nread == 0)
		return;
	if (nread < 0) {
		if (nread != UV_EOF)
			fl_log_info("conn %s: %s", c->peer, uv_strerror((int)nread));
		conn_cut(c);
		return;
	}
	int rc = fl_frame_reader_feed(&c->rd, (const uint8_t *)buf->base, (size_t)nread, on_frame, c);
	if (rc == FL_ERANGE) {
		fl_log_warn("conn %s: %s: closing", c->peer, fl_error_msg());
		conn_send_error(c, FL_ERANGE, "frame over the size limit");
		conn_close(c);
	} else if (rc < 0 && !c->closing && !c->cut) {
		fl_log_warn("conn %s: %s: closing", c->peer, fl_error_msg());
		conn_close(c);
	}
	after_engine(t);
}

/* ---- accepting ---- */

static void peer_name(uv_tcp_t *tcp, char *out, size_t cap)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	snprintf(out, cap, "?");
	if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len) != 0)
		return;
	char ip[48] = "?";
	int port = 0;
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
		uv_ip4_name(a, ip, sizeof(ip));
		port = ntohs(a->sin_port);
		snprintf(out, cap, "%s:%d", ip, port);
	} else if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
		uv_ip6_name(a, ip, sizeof(ip));
		port = ntohs(a->sin6_port);
		snprintf(out, cap, "[%s]:%d", ip, port);
	}
}

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
	uv_tcp_init(t->loop, &c->tcp);
	c->next = t->head;
	if (t->head)
		t->head->prev = c;
	t->head = c;
	t->nconns++;
	fl_frame_reader_init(&c->rd, t->cfg.max_frame_bytes);
	if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
		conn_cut(c);
		return;
	}
	peer_name(&c->tcp, c->peer, sizeof(c->peer));
	if (t->stopping || t->nconns > t->cfg.max_conns || slot_take(t, c) != 0) {
		fl_log_warn("conn %s: refused (%zu connections, limit %zu)", c->peer, t->nconns,
			    t->cfg.max_conns);
		c->id = 0;
		conn_cut(c);
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	fl_log_info("conn %s: connected", c->peer);
	if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
		conn_cut(c);
		return;
	}
	srv_engine_on_connect(t->e, c->id, uv_now(t->loop));
	after_engine(t);
}

/* ---- signals and shutdown ---- */

static void on_signal(uv_signal_t *h, int signum)
{
	struct srv_transport *t = h->data;
	if (signum == SIGHUP) {
		fl_log_info("SIGHUP: reloading");
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
		if (sig && !c->closing && !c->cut)
			conn_send_bye(c, "shutdown");
		conn_close(c);
	}
	if (t->cfg.on_stop)
		t->cfg.on_stop(t->cfg.hook_ctx);
	maybe_done(t);
	rearm(t);
}

void srv_transport_stop(struct srv_transport *t, int sig)
{
	begin_stop(t, sig ? sig : SIGTERM);
	t->sig_got = sig;
}

int srv_transport_signal(const struct srv_transport *t)
{
	return t->sig_got;
}

size_t srv_transport_conn_count(const struct srv_transport *t)
{
	return t->nconns;
}

int srv_transport_port(const struct srv_transport *t)
{
	return t->port;
}

static int bind_listen(struct srv_transport *t)
{
	char port[16];
	snprintf(port, sizeof(port), "%d", t->cfg.port);
	struct addrinfo hints;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	uv_getaddrinfo_t req;
	int rc = uv_getaddrinfo(t->loop, &req, NULL, t->host, port, &hints);
	if (rc != 0)
		return fl_error_set(FL_EIO, "listen %s:%d: %s", t->host, t->cfg.port, uv_strerror(rc));
	rc = UV_EADDRNOTAVAIL;
	for (struct addrinfo *a = req.addrinfo; a; a = a->ai_next) {
		if ((rc = uv_tcp_bind(&t->listener, a->ai_addr, 0)) == 0)
			break;
	}
	uv_freeaddrinfo(req.addrinfo);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&t->listener, t->cfg.backlog, on_connection);
	if (rc != 0)
		return fl_error_set(FL_EIO, "listen %s:%d: %s", t->host, t->cfg.port, uv_strerror(rc));
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	if (uv_tcp_getsockname(&t->listener, (struct sockaddr *)&ss, &len) == 0)
		t->port = ntohs(ss.ss_family == AF_INET6
					? ((struct sockaddr_in6 *)&ss)->sin6_port
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
	free(t->slots);
	free(t->free_slots);
	free(t->host);
	free(t);
}
