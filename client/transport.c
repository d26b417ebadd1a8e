/* transport.c - the edge client's libuv transport (transport.h): resolve,
 * connect, the secure channel (handshake, records, final record), reconnect
 * with backoff and jitter, frames in and out, jobs on the thread pool, the
 * session tick, signals and the orderly shutdown. The session makes every
 * protocol decision; this file moves bytes (it only peeks at the first
 * frame of a connection for an authentication refusal).
 *
 * Ownership: the connection struct embeds its uv_tcp_t and is freed only in
 * its close callback (which also tells the session and schedules the
 * reconnect); a write owns one frame reference until its callback.
 */
#include "transport.h"

#include "channel.h"
#include "errors.h"
#include "log.h"
#include "rng.h"

#include <assert.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cconn {
	uv_tcp_t tcp; /* first: the handle pointer is the conn pointer */
	struct cli_transport *t;
	uv_connect_t creq;
	uv_shutdown_t sreq;
	struct fl_frame_reader rd;
	struct fl_channel *ch; /* from the TCP connect on */
	size_t pending;
	int tcp_up;     /* TCP connected; the handshake runs */
	int connected;  /* channel established and the session told on_connect */
	int first_seen; /* the first protocol frame was looked at */
	uint64_t rx;    /* bytes read on this connection */
	int closing, cut;
};

struct wreq {
	uv_write_t req;
	struct fl_buf *buf;
	struct cconn *c;
	int hs; /* written before the channel was up */
};

struct jreq {
	uv_work_t req;
	struct cli_transport *t;
	struct cli_job *job;
};

struct cli_transport {
	uv_loop_t *loop;
	struct cli_transport_config cfg;
	char *host;
	struct cli_session *s;
	uv_timer_t tick, retry;
	uv_signal_t sig[2];
	struct cconn *conn; /* the current connection (connecting or up), or NULL */
	uv_getaddrinfo_t gai;
	int resolving, started, stopping, sig_got, jobs;
	enum cli_transport_result result;
	int attempts; /* failed connects in a row */
	int refused;  /* authentication failed: stop instead of reconnecting */
	uint8_t server_pk[FL_PUBKEY_BYTES];
	char *enrol_token;
	struct cli_transport_stats st;
	struct fl_rng rng;
	char last_err[FL_ERROR_MSG_MAX];
	char fatal[FL_ERROR_MSG_MAX + 320];
	char rbuf[CLI_TRANSPORT_READ_BYTES];
};

static void begin_stop(struct cli_transport *t, enum cli_transport_result r, int sig);
static void connect_begin(struct cli_transport *t);

void cli_transport_config_default(struct cli_transport_config *c)
{
	memset(c, 0, sizeof(*c));
	c->host = "127.0.0.1";
	c->port = 7420;
	c->max_frame_bytes = FL_WIRE_MAX_FRAME_DEFAULT;
	c->max_output_bytes = (size_t)256 << 20;
	c->backoff_min_ms = 250;
	c->backoff_max_ms = 30000;
	c->connect_timeout_ms = 10000;
	c->tick_ms = 500;
}

int cli_transport_new(uv_loop_t *loop, const struct cli_transport_config *cfg,
		      struct cli_transport **out)
{
	*out = NULL;
	if (!cfg->host || cfg->port < 1 || cfg->port > 65535 || cfg->max_frame_bytes < 64 ||
	    cfg->backoff_min_ms < 1 || cfg->backoff_max_ms < cfg->backoff_min_ms ||
	    cfg->tick_ms < 1 || cfg->max_attempts < 0)
		return fl_error_set(FL_EINVAL, "transport: bad configuration (port %d, backoff "
					       "%u..%u ms, tick %u ms)",
				    cfg->port, cfg->backoff_min_ms, cfg->backoff_max_ms, cfg->tick_ms);
	struct cli_transport *t = calloc(1, sizeof(*t));
	if (!t || !(t->host = strdup(cfg->host))) {
		free(t);
		return fl_error_set(FL_ENOMEM, "transport: out of memory");
	}
	if (!cfg->insecure && (!cfg->identity || !cfg->server_pk)) {
		free(t->host);
		free(t);
		return fl_error_set(FL_EINVAL, "transport: the secure channel needs our key and the "
					       "server's public key");
	}
	t->loop = loop;
	t->cfg = *cfg;
	t->cfg.host = t->host;
	if (cfg->server_pk)
		memcpy(t->server_pk, cfg->server_pk, FL_PUBKEY_BYTES);
	t->cfg.server_pk = t->server_pk;
	if (cfg->enrol_token && !(t->enrol_token = strdup(cfg->enrol_token))) {
		free(t->host);
		free(t);
		return fl_error_set(FL_ENOMEM, "transport: out of memory");
	}
	t->cfg.enrol_token = t->enrol_token;
	fl_rng_seed_stream(&t->rng, cfg->seed, 0x6a6974746572ULL); /* "jitter" */
	*out = t;
	return FL_OK;
}

/* ---- closing and reconnecting ---- */

static void on_retry(uv_timer_t *h);

static void schedule_retry(struct cli_transport *t)
{
	if (t->stopping)
		return;
	t->attempts++;
	if (t->cfg.max_attempts && t->attempts > t->cfg.max_attempts) {
		fl_log_error("gave up after %d failed connection attempts", t->cfg.max_attempts);
		begin_stop(t, CLI_TRANSPORT_GAVE_UP, 0);
		return;
	}
	uint64_t d = t->cfg.backoff_min_ms;
	for (int i = 1; i < t->attempts && d < t->cfg.backoff_max_ms; i++)
		d *= 2;
	if (d > t->cfg.backoff_max_ms)
		d = t->cfg.backoff_max_ms;
	d = d / 2 + fl_rng_below(&t->rng, d / 2 + 1); /* "equal jitter" */
	fl_log_info("reconnecting to %s:%d in %llu ms", t->host, t->cfg.port,
		    (unsigned long long)d);
	uv_timer_start(&t->retry, on_retry, d, 0);
}

static void on_conn_closed(uv_handle_t *h)
{
	struct cconn *c = (struct cconn *)h;
	struct cli_transport *t = c->t;
	if (t->conn == c)
		t->conn = NULL;
	int was_up = c->connected;
	fl_frame_reader_free(&c->rd);
	fl_channel_free(c->ch);
	free(c);
	if (was_up)
		cli_session_on_disconnect(t->s);
	if (t->stopping)
		return;
	if (t->refused) {
		begin_stop(t, CLI_TRANSPORT_REFUSED, 0);
		return;
	}
	if (cli_session_finished(t->s)) {
		begin_stop(t, CLI_TRANSPORT_FINISHED, 0);
		return;
	}
	if (was_up)
		fl_log_warn("connection to %s:%d lost", t->host, t->cfg.port);
	schedule_retry(t);
}

static void conn_cut(struct cconn *c)
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

static int write_raw(struct cconn *c, struct fl_buf *b);

/* The final record (when the channel is up), flush, close. */
static void conn_close(struct cconn *c)
{
	if (c->cut || c->closing)
		return;
	struct fl_buf *fin = NULL;
	if (c->connected && !fl_channel_error(c->ch) && fl_channel_close(c->ch, &fin) == FL_OK &&
	    fin)
		write_raw(c, fin);
	if (c->cut)
		return;
	c->closing = 1;
	if (!c->tcp_up) {
		conn_cut(c);
		return;
	}
	uv_read_stop((uv_stream_t *)&c->tcp);
	c->sreq.data = c;
	if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
		conn_cut(c);
}

/* ---- writing ---- */

static void log_tensor(struct cli_transport *t, const char *dir, const uint8_t *p, size_t n)
{
	fl_envelope *env = NULL;
	if (fl_wire_decode(p, n, t->cfg.max_frame_bytes, &env) != FL_OK)
		return;
	if (env->body_case == FEDLOHA__V1__ENVELOPE__BODY_CHUNK && env->chunk->offset == 0)
		fl_log_debug("%s tensor %s round %llu", dir, env->chunk->name,
			     (unsigned long long)env->chunk->round);
	fl_wire_envelope_free(env);
}

static void on_written(uv_write_t *req, int status)
{
	struct wreq *w = (struct wreq *)req;
	w->c->pending -= w->buf->len;
	if (status == 0) {
		w->c->t->st.sock_out += w->buf->len;
		if (w->hs)
			w->c->t->st.hs_out += w->buf->len;
	}
	fl_buf_unref(w->buf);
	if (status < 0 && status != UV_ECANCELED) {
		fl_log_debug("write failed: %s", uv_strerror(status));
		conn_cut(w->c);
	}
	free(w);
}

/* Bytes as they go on the socket; takes over one reference to b. */
static int write_raw(struct cconn *c, struct fl_buf *b)
{
	struct cli_transport *t = c->t;
	if (c->closing || c->cut) {
		fl_buf_unref(b);
		return -1;
	}
	if (c->pending + b->len > t->cfg.max_output_bytes) {
		fl_log_warn("%zu bytes queued for the server (cap %zu): connection cut",
			    c->pending + b->len, t->cfg.max_output_bytes);
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
	w->buf = b;
	w->c = c;
	w->hs = !c->connected;
	uv_buf_t ub = uv_buf_init((char *)b->data, (unsigned)b->len);
	if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &ub, 1, on_written) != 0) {
		fl_buf_unref(b);
		free(w);
		conn_cut(c);
		return -1;
	}
	c->pending += b->len;
	return 0;
}

/* One protocol frame from the session: sealed into a record. */
static int io_send(void *ctx, struct fl_buf *b)
{
	struct cli_transport *t = ctx;
	struct cconn *c = t->conn;
	if (!c || !c->connected || c->closing || c->cut) {
		fl_buf_unref(b);
		return -1;
	}
	if (t->cfg.debug_tensors && b->len > FL_WIRE_FRAME_HEADER_BYTES)
		log_tensor(t, "sent", b->data + FL_WIRE_FRAME_HEADER_BYTES,
			   b->len - FL_WIRE_FRAME_HEADER_BYTES);
	struct fl_buf *rec = NULL;
	int err = fl_channel_seal_buf(c->ch, b, &rec);
	fl_buf_unref(b);
	if (err) {
		fl_log_warn("server %s:%d: %s", t->host, t->cfg.port, fl_error_msg());
		conn_cut(c);
		return -1;
	}
	return write_raw(c, rec);
}

static void io_close(void *ctx)
{
	struct cli_transport *t = ctx;
	if (t->conn)
		conn_close(t->conn);
}

/* ---- jobs ---- */

static void log_session_error(struct cli_transport *t)
{
	const char *e = cli_session_last_error(t->s);
	if (e && *e && strcmp(e, t->last_err) != 0) {
		fl_log_warn("%s", e);
		snprintf(t->last_err, sizeof(t->last_err), "%s", e);
	}
}

static void job_work(uv_work_t *req)
{
	cli_job_run(((struct jreq *)req)->job);
}

static void job_done(uv_work_t *req, int status)
{
	struct jreq *j = (struct jreq *)req;
	struct cli_transport *t = j->t;
	t->jobs--;
	cli_session_on_job_done(t->s, j->job);
	free(j);
	log_session_error(t);
	if (!t->stopping && cli_session_finished(t->s))
		begin_stop(t, CLI_TRANSPORT_FINISHED, 0);
}

static int io_submit(void *ctx, struct cli_job *job)
{
	struct cli_transport *t = ctx;
	struct jreq *j = malloc(sizeof(*j));
	if (!j)
		return -1;
	j->t = t;
	j->job = job;
	if (uv_queue_work(t->loop, &j->req, job_work, job_done) != 0) {
		free(j);
		return -1;
	}
	t->jobs++;
	return 0;
}

void cli_transport_session_io(struct cli_transport *t, struct cli_session_io *io)
{
	memset(io, 0, sizeof(*io));
	io->ctx = t;
	io->send = io_send;
	io->close = io_close;
	io->submit = io_submit;
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct cconn *c = (struct cconn *)h;
	buf->base = c->t->rbuf;
	buf->len = sizeof(c->t->rbuf);
}

/* Stop for good: authentication failed or the server refused us. */
static void refuse(struct cconn *c, const char *why)
{
	struct cli_transport *t = c->t;
	t->refused = 1; /* cli_transport_error() tells the caller */
	snprintf(t->fatal, sizeof(t->fatal), "server %.256s:%d: %s", t->host, t->cfg.port, why);
}

/* The answer to our Hello: an Error with code FL_EAUTH (the identity rule,
 * or a server asking for the secure channel) is final. */
static void peek_first(struct cconn *c, const uint8_t *payload, size_t n)
{
	fl_envelope *env = NULL;
	c->first_seen = 1;
	if (fl_wire_decode(payload, n, c->t->cfg.max_frame_bytes, &env) != FL_OK)
		return;
	if (env->body_case == FEDLOHA__V1__ENVELOPE__BODY_ERROR &&
	    env->error->code == (uint32_t)-FL_EAUTH) {
		char why[FL_ERROR_MSG_MAX];
		snprintf(why, sizeof(why), "the server refused this client: %s",
			 env->error->message ? env->error->message : "");
		refuse(c, why);
	}
	fl_wire_envelope_free(env);
}

static int on_frame(void *ctx, const uint8_t *payload, size_t n)
{
	struct cconn *c = ctx;
	struct cli_transport *t = c->t;
	if (c->closing || c->cut)
		return 1;
	if (t->cfg.debug_tensors)
		log_tensor(t, "received", payload, n);
	if (!c->first_seen)
		peek_first(c, payload, n);
	int err = cli_session_on_frame(t->s, payload, n, uv_now(t->loop));
	if (err != FL_OK) {
		if (!t->refused)
			fl_log_warn("server %s:%d: %s", t->host, t->cfg.port, fl_error_msg());
		conn_close(c);
		return 1;
	}
	t->attempts = 0; /* the server accepted us: the backoff starts over */
	return c->closing || c->cut;
}

static int deliver(void *ctx, const uint8_t *plain, size_t n)
{
	struct cconn *c = ctx;
	if (c->closing || c->cut)
		return 0;
	int rc = fl_frame_reader_feed(&c->rd, plain, n, on_frame, c);
	if (rc == FL_ERANGE) {
		fl_log_warn("server %s:%d: %s", c->t->host, c->t->cfg.port, fl_error_msg());
		conn_close(c);
	}
	return 0;
}

/* The channel failed before it was up. A reply that is a plaintext Error
 * frame comes from a server without the secure channel (or one refusing
 * our first message): quote it. */
static void handshake_failed(struct cconn *c, const uint8_t *data, size_t n)
{
	char why[FL_ERROR_MSG_MAX];
	snprintf(why, sizeof(why), "%s", fl_error_msg()); /* "secure channel: ..." */
	fl_envelope *env = NULL;
	size_t len = n >= 4 ? (size_t)data[0] << 24 | (size_t)data[1] << 16 |
				      (size_t)data[2] << 8 | data[3]
			    : 0;
	if (c->rx == n && len && len <= n - 4 &&
	    fl_wire_decode(data + 4, len, c->t->cfg.max_frame_bytes, &env) == FL_OK) {
		if (env->body_case == FEDLOHA__V1__ENVELOPE__BODY_ERROR)
			snprintf(why, sizeof(why), "the server answered in plaintext: %s",
				 env->error->message ? env->error->message : "");
		fl_wire_envelope_free(env);
	}
	refuse(c, why);
	conn_cut(c);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct cconn *c = (struct cconn *)st;
	struct cli_transport *t = c->t;
	if (nread == 0)
		return;
	if (nread < 0) {
		if (nread != UV_EOF)
			fl_log_info("server %s:%d: %s", t->host, t->cfg.port, uv_strerror((int)nread));
		else if (c->connected && fl_channel_eof(c->ch) != FL_OK)
			fl_log_info("server %s:%d: %s", t->host, t->cfg.port, fl_error_msg());
		conn_cut(c);
		return;
	}
	const uint8_t *data = (const uint8_t *)buf->base;
	size_t n = (size_t)nread;
	c->rx += n;
	t->st.sock_in += n;
	if (!c->connected)
		t->st.hs_in += n;
	struct fl_buf *reply = NULL;
	int rc = fl_channel_recv(c->ch, data, n, deliver, c, &reply);
	if (reply)
		write_raw(c, reply);
	if (rc != FL_OK && !c->connected && !c->closing && !c->cut) {
		handshake_failed(c, data, n);
	} else if (rc != FL_OK && !c->closing && !c->cut) {
		fl_log_warn("server %s:%d: %s", t->host, t->cfg.port, fl_error_msg());
		conn_cut(c); /* the channel is dead: no final record */
	} else if (rc == FL_OK && !c->connected && fl_channel_established(c->ch)) {
		c->connected = 1;
		uv_timer_stop(&t->retry); /* the handshake timeout */
		if (t->cfg.insecure) {
			fl_log_info("connected to %s:%d", t->host, t->cfg.port);
		} else {
			t->st.handshakes++;
			fl_log_info("connected to %s:%d: secure channel up", t->host, t->cfg.port);
		}
		cli_session_on_connect(t->s, uv_now(t->loop));
	}
	log_session_error(t);
	if (!t->stopping && cli_session_finished(t->s))
		begin_stop(t, CLI_TRANSPORT_FINISHED, 0);
}

/* ---- connecting ---- */

static int chan_start(struct cconn *c)
{
	struct cli_transport *t = c->t;
	struct fl_channel_config cc;
	memset(&cc, 0, sizeof(cc));
	cc.insecure = t->cfg.insecure;
	cc.self = t->cfg.identity;
	cc.pinned_server_pk = t->server_pk;
	cc.enrol_token = t->enrol_token;
	cc.max_record = (size_t)t->cfg.max_frame_bytes + FL_WIRE_FRAME_HEADER_BYTES;
	cc.handshake_timeout_ms = t->cfg.handshake_timeout_ms;
	struct fl_buf *hello = NULL;
	int err = fl_channel_new(&cc, &c->ch);
	if (!err)
		err = fl_channel_start(c->ch, &hello);
	if (err) {
		fl_log_error("%s", fl_error_msg());
		return err;
	}
	if (hello && write_raw(c, hello))
		return FL_EIO;
	return FL_OK;
}

static void on_connected(uv_connect_t *req, int status)
{
	struct cconn *c = req->data;
	struct cli_transport *t = c->t;
	if (!t->stopping)
		uv_timer_stop(&t->retry); /* the connect timeout */
	if (status < 0 || c->cut || t->stopping) {
		if (status < 0 && status != UV_ECANCELED)
			fl_log_info("connect %s:%d: %s", t->host, t->cfg.port, uv_strerror(status));
		conn_cut(c);
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	c->tcp_up = 1;
	if (chan_start(c) != FL_OK ||
	    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
		conn_cut(c);
		return;
	}
	if (fl_channel_established(c->ch)) { /* --insecure */
		c->connected = 1;
		fl_log_info("connected to %s:%d", t->host, t->cfg.port);
		cli_session_on_connect(t->s, uv_now(t->loop));
		log_session_error(t);
	} else {
		uv_timer_start(&t->retry, on_retry, fl_channel_handshake_timeout_ms(c->ch), 0);
	}
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct cli_transport *t = req->data;
	t->resolving = 0;
	if (t->stopping) {
		uv_freeaddrinfo(res);
		return;
	}
	if (status < 0) {
		fl_log_warn("resolve %s: %s", t->host, uv_strerror(status));
		uv_freeaddrinfo(res);
		schedule_retry(t);
		return;
	}
	struct cconn *c = calloc(1, sizeof(*c));
	if (!c) {
		uv_freeaddrinfo(res);
		schedule_retry(t);
		return;
	}
	c->t = t;
	fl_frame_reader_init(&c->rd, t->cfg.max_frame_bytes);
	uv_tcp_init(t->loop, &c->tcp);
	t->conn = c;
	c->creq.data = c;
	int rc = uv_tcp_connect(&c->creq, &c->tcp, res->ai_addr, on_connected);
	uv_freeaddrinfo(res);
	if (rc != 0) {
		fl_log_info("connect %s:%d: %s", t->host, t->cfg.port, uv_strerror(rc));
		conn_cut(c); /* the close callback schedules the retry */
		return;
	}
	if (t->cfg.connect_timeout_ms)
		uv_timer_start(&t->retry, on_retry, t->cfg.connect_timeout_ms, 0);
}

static void connect_begin(struct cli_transport *t)
{
	if (t->stopping || t->conn || t->resolving)
		return;
	char port[16];
	snprintf(port, sizeof(port), "%d", t->cfg.port);
	struct addrinfo hints;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	t->gai.data = t;
	t->resolving = 1;
	int rc = uv_getaddrinfo(t->loop, &t->gai, on_resolved, t->host, port, &hints);
	if (rc != 0) {
		t->resolving = 0;
		fl_log_warn("resolve %s: %s", t->host, uv_strerror(rc));
		schedule_retry(t);
	}
}

static void on_retry(uv_timer_t *h)
{
	struct cli_transport *t = h->data;
	if (t->conn) { /* still connecting: the connect or the handshake timed out */
		if (!t->conn->connected) {
			fl_log_info("connect %s:%d: %s timed out", t->host, t->cfg.port,
				    t->conn->tcp_up ? "secure handshake" : "connect");
			conn_cut(t->conn);
		}
		return;
	}
	connect_begin(t);
}

static void on_tick(uv_timer_t *h)
{
	struct cli_transport *t = h->data;
	struct cconn *c = t->conn;
	if (!c || !c->connected || c->closing || c->cut)
		return;
	uint64_t now = uv_now(t->loop);
	if (cli_session_idle_expired(t->s, now)) {
		fl_log_warn("server %s:%d silent for too long: reconnecting", t->host, t->cfg.port);
		conn_cut(c);
		return;
	}
	cli_session_tick(t->s, now);
	log_session_error(t);
}

/* ---- signals, start, stop ---- */

static void on_signal(uv_signal_t *h, int signum)
{
	struct cli_transport *t = h->data;
	fl_log_info("%s: shutting down", signum == SIGINT ? "SIGINT" : "SIGTERM");
	begin_stop(t, CLI_TRANSPORT_SIGNALLED, signum);
}

static void close_once(uv_handle_t *h)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static void begin_stop(struct cli_transport *t, enum cli_transport_result r, int sig)
{
	if (t->stopping)
		return;
	t->stopping = 1;
	t->result = r;
	t->sig_got = sig;
	for (int i = 0; i < 2; i++)
		close_once((uv_handle_t *)&t->sig[i]);
	close_once((uv_handle_t *)&t->tick);
	close_once((uv_handle_t *)&t->retry);
	if (t->resolving)
		uv_cancel((uv_req_t *)&t->gai);
	struct cconn *c = t->conn;
	if (c && c->connected && !c->closing && !c->cut && r == CLI_TRANSPORT_SIGNALLED) {
		Fedloha__V1__Bye bye = FEDLOHA__V1__BYE__INIT;
		bye.reason = "shutdown";
		fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT;
		env.body_case = FEDLOHA__V1__ENVELOPE__BODY_BYE;
		env.bye = &bye;
		struct fl_buf *b = NULL;
		if (fl_wire_encode(&env, &b) == FL_OK)
			io_send(t, b);
	}
	if (t->conn)
		conn_close(t->conn);
	if (t->jobs)
		fl_log_info("waiting for the running job to end");
	/* The loop ends by itself once the handles are closed and the job is back. */
}

int cli_transport_start(struct cli_transport *t, struct cli_session *s)
{
	assert(!t->started);
	t->started = 1;
	t->s = s;
	uv_timer_init(t->loop, &t->tick);
	uv_timer_init(t->loop, &t->retry);
	t->tick.data = t->retry.data = t;
	static const int sigs[2] = {SIGINT, SIGTERM};
	for (int i = 0; i < 2; i++) {
		uv_signal_init(t->loop, &t->sig[i]);
		t->sig[i].data = t;
		uv_signal_start(&t->sig[i], on_signal, sigs[i]);
	}
	uv_timer_start(&t->tick, on_tick, t->cfg.tick_ms, t->cfg.tick_ms);
	connect_begin(t);
	return FL_OK;
}

void cli_transport_stop(struct cli_transport *t)
{
	begin_stop(t, CLI_TRANSPORT_SIGNALLED, 0);
}

enum cli_transport_result cli_transport_result(const struct cli_transport *t)
{
	return t->result;
}

int cli_transport_signal(const struct cli_transport *t)
{
	return t->sig_got;
}

const char *cli_transport_error(const struct cli_transport *t)
{
	return t->fatal;
}

void cli_transport_stats(const struct cli_transport *t, struct cli_transport_stats *out)
{
	*out = t->st;
}

void cli_transport_free(struct cli_transport *t)
{
	if (!t)
		return;
	assert(!t->conn && !t->jobs && "cli_transport_free before the loop ended");
	free(t->enrol_token);
	free(t->host);
	free(t);
}
