/* transport_read.c - the edge client transport's read path and secure
 * channel glue (transport.h): the channel's start and first handshake
 * message, bytes from the socket through fl_channel_recv into the frame
 * reader, handshake replies out, the channel coming up (the session told
 * on_connect), a refusal by the server (its authenticated handshake
 * message 4, or an FL_EAUTH Error as the first frame) recorded as final,
 * and unauthenticated handshake failures recorded for the retry log. No protocol decisions beyond that first frame; no connecting,
 * writing queue or closing logic (transport.c).
 */
#include "transport_impl.h"

#include "bytes.h"
#include "errors.h"
#include "log.h"

#include <stdio.h>
#include <string.h>

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct cconn *c = (struct cconn *)h;
	buf->base = c->t->rbuf;
	buf->len = sizeof(c->t->rbuf);
}

/* Stop for good: the server refused us (authenticated). */
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
	    fl_wire_error_from_code(env->error->code) == FL_EAUTH) {
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
	if (fl_net_gone(&c->n))
		return FL_WIRE_FEED_STOP;
	if (t->cfg.debug_tensors)
		cli_transport_log_tensor(t, "received", payload, n);
	if (!c->first_seen)
		peek_first(c, payload, n);
	int err = t->p.on_frame(t->p.ctx, payload, n, uv_now(t->loop));
	if (err != FL_OK && !t->refused && t->p.refused(t->p.ctx)) {
		char why[FL_ERROR_MSG_MAX];
		snprintf(why, sizeof(why), "%s", fl_error_msg());
		refuse(c, why);
	}
	if (err != FL_OK) {
		if (!t->refused)
			fl_log_warn("server %s:%d: %s", t->host, t->cfg.port, fl_error_msg());
		cli_transport_conn_close(c);
		return FL_WIRE_FEED_STOP;
	}
	t->attempts = 0; /* the server accepted us: the backoff starts over */
	return fl_net_gone(&c->n) ? FL_WIRE_FEED_STOP : FL_OK;
}

static int deliver(void *ctx, const uint8_t *plain, size_t n)
{
	struct cconn *c = ctx;
	if (fl_net_gone(&c->n))
		return 0;
	int rc = fl_frame_reader_feed(&c->rd, plain, n, on_frame, c);
	if (rc < 0) { /* a framing error leaves the stream unusable: reconnect */
		fl_log_warn("server %s:%d: %s", c->t->host, c->t->cfg.port, fl_error_msg());
		cli_transport_conn_close(c);
	}
	return 0;
}

/* The channel failed before it was up. Final only when the server refused
 * us in handshake message 4, which it can only write with the keys of a
 * handshake it signed with the pinned key (fl_channel_recv's FL_ENOTFOUND,
 * channel.h). Anything else (bad magic or signature, another server key, a
 * plaintext Error, a message that does not decrypt) is unauthenticated:
 * anyone on the path can forge it, so it is logged and retried. A plaintext
 * Error frame is quoted sanitised. */
static void handshake_failed(struct cconn *c, const uint8_t *data, size_t n)
{
	struct cli_transport *t = c->t;
	char why[FL_ERROR_MSG_MAX];
	snprintf(why, sizeof(why), "%s", fl_error_msg()); /* "secure channel: ..." */
	if (fl_channel_error(c->ch) == FL_ENOTFOUND) {
		refuse(c, why);
		cli_transport_conn_cut(c);
		return;
	}
	fl_envelope *env = NULL;
	size_t len = n >= 4 ? fl_be32_get(data) : 0;
	if (c->rx == n && len && len <= n - 4 &&
	    fl_wire_decode(data + 4, len, t->cfg.max_frame_bytes, &env) == FL_OK) {
		if (env->body_case == FEDLOHA__V1__ENVELOPE__BODY_ERROR) {
			/* anyone on the path could have written it: printable ASCII
			 * only, and said to be unauthenticated */
			char safe[FL_ERROR_MSG_MAX / 2];
			fl_error_safe_str(env->error->message, safe, sizeof(safe));
			for (char *p = safe; *p; p++)
				if ((unsigned char)*p >= 0x7f)
					*p = '?';
			snprintf(why, sizeof(why),
				 "unauthenticated message from the peer (plaintext): %s", safe);
		}
		fl_wire_envelope_free(env);
	}
	cli_transport_retry_why(t,
				"server %s:%d: %s (unauthenticated: possibly an attacker or a "
				"misconfiguration)",
				t->host, t->cfg.port, why);
	cli_transport_conn_cut(c);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct cconn *c = (struct cconn *)st;
	struct cli_transport *t = c->t;
	if (nread == 0)
		return;
	if (nread < 0) {
		fl_net_read_end(&c->n, c->connected ? c->ch : NULL, nread, "");
		if (!c->connected)
			cli_transport_retry_why(t,
						"server %s:%d: the connection ended during "
						"the secure handshake",
						t->host, t->cfg.port);
		cli_transport_conn_cut(c);
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
		cli_transport_write_raw(c, reply);
	if (rc != FL_OK && !c->connected && !fl_net_gone(&c->n)) {
		handshake_failed(c, data, n);
	} else if (rc != FL_OK && !fl_net_gone(&c->n)) {
		fl_log_warn("server %s:%d: %s", t->host, t->cfg.port, fl_error_msg());
		cli_transport_conn_cut(c); /* the channel is dead: no final record */
	} else if (rc == FL_OK && !c->connected && fl_channel_established(c->ch)) {
		c->connected = 1;
		uv_timer_stop(&t->retry); /* the handshake timeout */
		if (t->cfg.insecure) {
			fl_log_info("connected to %s:%d", t->host, t->cfg.port);
		} else {
			t->st.handshakes++;
			fl_log_info("connected to %s:%d: secure channel up", t->host, t->cfg.port);
		}
		t->p.on_connect(t->p.ctx, uv_now(t->loop));
	}
	cli_transport_log_peer_error(t);
	if (!t->stopping && t->p.finished(t->p.ctx))
		cli_transport_begin_stop(t, CLI_TRANSPORT_FINISHED, 0);
}

/* ---- starting ---- */

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
	if (hello && cli_transport_write_raw(c, hello))
		return FL_EIO;
	return FL_OK;
}

int cli_transport_read_start(struct cconn *c)
{
	int err = chan_start(c);
	if (err)
		return err;
	if (uv_read_start((uv_stream_t *)&c->n.tcp, on_alloc, on_read) != 0)
		return FL_EIO;
	return FL_OK;
}
