/* transport.c - the edge client's libuv transport (transport.h): resolve,
 * connect, reconnect with backoff and jitter, frames out (sealed into
 * records) with a cap on pending output, the final record and the orderly
 * close, the peer's tick, signals and the shutdown. The read path and
 * the secure channel's start are in transport_read.c; the session as the
 * peer, with its jobs on the thread pool, in transport_session.c. The peer
 * makes every protocol decision; this file moves bytes.
 *
 * Ownership: the connection struct embeds its struct fl_net_conn (net.h: the
 * uv_tcp_t, queued writes, close-once) and is freed only in its close
 * callback (which also tells the session and schedules the reconnect).
 */
#include "transport_impl.h"

#include "errors.h"
#include "log.h"

#include <sodium.h>
#include <assert.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
		return fl_error_set(FL_EINVAL,
				    "transport: bad configuration (port %d, backoff "
				    "%u..%u ms, tick %u ms)",
				    cfg->port, cfg->backoff_min_ms, cfg->backoff_max_ms,
				    cfg->tick_ms);
	struct cli_transport *t = calloc(1, sizeof(*t));
	if (!t || !(t->host = strdup(cfg->host))) {
		free(t);
		return fl_error_set(FL_ENOMEM, "transport: out of memory");
	}
	if (!cfg->insecure && (!cfg->identity || !cfg->server_pk)) {
		free(t->host);
		free(t);
		return fl_error_set(FL_EINVAL,
				    "transport: the secure channel needs our key and the "
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

void cli_transport_retry_why(struct cli_transport *t, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(t->retry_why, sizeof(t->retry_why), fmt, ap);
	va_end(ap);
}

static void on_retry(uv_timer_t *h);

static void schedule_retry(struct cli_transport *t)
{
	if (t->stopping)
		return;
	t->attempts++;
	if (t->cfg.max_attempts && t->attempts >= t->cfg.max_attempts) {
		fl_log_error("gave up after %d failed connection attempts%s%s", t->cfg.max_attempts,
			     t->retry_why[0] ? "; the last: " : "", t->retry_why);
		cli_transport_begin_stop(t, CLI_TRANSPORT_GAVE_UP, 0);
		return;
	}
	uint64_t d = t->cfg.backoff_min_ms;
	for (int i = 1; i < t->attempts && d < t->cfg.backoff_max_ms; i++)
		d *= 2;
	if (d > t->cfg.backoff_max_ms)
		d = t->cfg.backoff_max_ms;
	/* jitter above the doubled delay, within [backoff_min, backoff_max] */
	uint64_t hi = 2 * d < t->cfg.backoff_max_ms ? 2 * d : t->cfg.backoff_max_ms;
	d += fl_rng_below(&t->rng, hi - d + 1);
	if (t->retry_why[0])
		fl_log_error("%s; reconnecting to %s:%d in %llu ms", t->retry_why, t->host,
			     t->cfg.port, (unsigned long long)d);
	else
		fl_log_info("reconnecting to %s:%d in %llu ms", t->host, t->cfg.port,
			    (unsigned long long)d);
	t->retry_why[0] = '\0';
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
		t->p.on_disconnect(t->p.ctx);
	if (t->stopping)
		return;
	if (t->refused) {
		cli_transport_begin_stop(t, CLI_TRANSPORT_REFUSED, 0);
		return;
	}
	if (t->p.finished(t->p.ctx)) {
		cli_transport_begin_stop(t, CLI_TRANSPORT_FINISHED, 0);
		return;
	}
	if (was_up)
		fl_log_warn("connection to %s:%d lost", t->host, t->cfg.port);
	schedule_retry(t);
}

void cli_transport_conn_cut(struct cconn *c)
{
	fl_net_cut(&c->n);
}

/* The final record (when the channel is up), flush, close. */
void cli_transport_conn_close(struct cconn *c)
{
	if (fl_net_close_channel(&c->n, c->connected ? c->ch : NULL, 0))
		return;
	if (!c->tcp_up) {
		c->n.closing = 1;
		cli_transport_conn_cut(c);
		return;
	}
	fl_net_shutdown(&c->n);
}

/* ---- writing ---- */

void cli_transport_log_tensor(struct cli_transport *t, const char *dir, const uint8_t *p, size_t n)
{
	fl_envelope *env = NULL;
	if (fl_wire_decode(p, n, t->cfg.max_frame_bytes, &env) != FL_OK)
		return;
	if (env->body_case == FEDLOHA__V1__ENVELOPE__BODY_CHUNK && env->chunk->offset == 0)
		fl_log_debug("%s tensor %s round %llu", dir, env->chunk->name,
			     (unsigned long long)env->chunk->round);
	fl_wire_envelope_free(env);
}

/* Bytes as they go on the socket; takes over one reference to b. */
int cli_transport_write_raw(struct cconn *c, struct fl_buf *b)
{
	return fl_net_write(&c->n, b, !c->connected);
}

/* One protocol frame from the peer: sealed into a record. */
int cli_transport_io_send(void *ctx, struct fl_buf *b)
{
	struct cli_transport *t = ctx;
	struct cconn *c = t->conn;
	if (!c || !c->connected || fl_net_gone(&c->n)) {
		fl_buf_unref(b);
		return FL_EIO;
	}
	if (t->cfg.debug_tensors && b->len > FL_WIRE_FRAME_HEADER_BYTES)
		cli_transport_log_tensor(t, "sent", b->data + FL_WIRE_FRAME_HEADER_BYTES,
					 b->len - FL_WIRE_FRAME_HEADER_BYTES);
	return fl_net_send_sealed(&c->n, c->ch, b, 0);
}

int cli_transport_send(struct cli_transport *t, struct fl_buf *b)
{
	return cli_transport_io_send(t, b);
}

void cli_transport_io_close(void *ctx)
{
	struct cli_transport *t = ctx;
	if (t->conn)
		cli_transport_conn_close(t->conn);
}

/* ---- the peer's errors ---- */

void cli_transport_log_peer_error(struct cli_transport *t)
{
	const char *e = t->p.last_error ? t->p.last_error(t->p.ctx) : NULL;
	if (e && *e && strcmp(e, t->last_err) != 0) {
		fl_log_warn("%s", e);
		snprintf(t->last_err, sizeof(t->last_err), "%s", e);
	}
}

/* ---- connecting ---- */

static void on_connected(uv_connect_t *req, int status)
{
	struct cconn *c = req->data;
	struct cli_transport *t = c->t;
	if (!t->stopping)
		uv_timer_stop(&t->retry); /* the connect timeout */
	if (status < 0 || c->n.cut || t->stopping) {
		if (status < 0 && status != UV_ECANCELED)
			fl_log_info("connect %s:%d: %s", t->host, t->cfg.port, uv_strerror(status));
		cli_transport_conn_cut(c);
		return;
	}
	uv_tcp_nodelay(&c->n.tcp, 1);
	c->tcp_up = 1;
	if (cli_transport_read_start(c) != FL_OK) {
		cli_transport_conn_cut(c);
		return;
	}
	if (fl_channel_established(c->ch)) { /* --insecure */
		c->connected = 1;
		fl_log_info("connected to %s:%d", t->host, t->cfg.port);
		t->p.on_connect(t->p.ctx, uv_now(t->loop));
		cli_transport_log_peer_error(t);
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
	fl_net_conn_init(&c->n, t->loop, t->cfg.max_output_bytes, on_conn_closed, &t->st.sock_out,
			 &t->st.hs_out);
	snprintf(c->n.name, sizeof(c->n.name), "server %s:%d", t->host, t->cfg.port);
	t->conn = c;
	c->creq.data = c;
	int rc = uv_tcp_connect(&c->creq, &c->n.tcp, res->ai_addr, on_connected);
	uv_freeaddrinfo(res);
	if (rc != 0) {
		fl_log_info("connect %s:%d: %s", t->host, t->cfg.port, uv_strerror(rc));
		cli_transport_conn_cut(c); /* the close callback schedules the retry */
		return;
	}
	if (t->cfg.connect_timeout_ms)
		uv_timer_start(&t->retry, on_retry, t->cfg.connect_timeout_ms, 0);
}

static void connect_begin(struct cli_transport *t)
{
	if (t->stopping || t->conn || t->resolving)
		return;
	t->gai.data = t;
	t->resolving = 1;
	int rc = fl_net_resolve(t->loop, &t->gai, on_resolved, t->host, t->cfg.port, 0);
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
			if (t->conn->tcp_up)
				cli_transport_retry_why(
					t,
					"server %s:%d: no secure handshake "
					"within %u ms",
					t->host, t->cfg.port,
					fl_channel_handshake_timeout_ms(t->conn->ch));
			else
				fl_log_info("connect %s:%d: timed out", t->host, t->cfg.port);
			cli_transport_conn_cut(t->conn);
		}
		return;
	}
	connect_begin(t);
}

static void on_tick(uv_timer_t *h)
{
	struct cli_transport *t = h->data;
	struct cconn *c = t->conn;
	if (!c || !c->connected || fl_net_gone(&c->n))
		return;
	uint64_t now = uv_now(t->loop);
	if (t->p.idle_expired(t->p.ctx, now)) {
		fl_log_warn("server %s:%d silent for too long: reconnecting", t->host, t->cfg.port);
		cli_transport_conn_cut(c);
		return;
	}
	t->p.tick(t->p.ctx, now);
	cli_transport_log_peer_error(t);
}

/* ---- signals, start, stop ---- */

static void on_signal(uv_signal_t *h, int signum)
{
	struct cli_transport *t = h->data;
	fl_log_info("%s: shutting down", signum == SIGINT ? "SIGINT" : "SIGTERM");
	cli_transport_begin_stop(t, CLI_TRANSPORT_SIGNALLED, signum);
}

static void close_once(uv_handle_t *h)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

void cli_transport_begin_stop(struct cli_transport *t, enum cli_transport_result r, int sig)
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
	if (c && c->connected && !fl_net_gone(&c->n) && r == CLI_TRANSPORT_SIGNALLED) {
		struct fl_buf *b = NULL;
		if (fl_wire_encode_bye("shutdown", &b) == FL_OK)
			cli_transport_io_send(t, b);
	}
	if (t->conn)
		cli_transport_conn_close(t->conn);
	if (t->jobs)
		fl_log_info("waiting for the running job to end");
	/* The loop ends by itself once the handles are closed and the job is back. */
}

void cli_transport_stop(struct cli_transport *t)
{
	cli_transport_begin_stop(t, CLI_TRANSPORT_FINISHED, 0);
}

int cli_transport_start_peer(struct cli_transport *t, const struct cli_transport_peer *p)
{
	assert(!t->started);
	t->started = 1;
	t->p = *p;
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
	if (t->enrol_token)
		sodium_memzero(t->enrol_token, strlen(t->enrol_token));
	free(t->enrol_token);
	free(t->host);
	free(t);
}
