/* transport_impl.h - internals shared by transport.c (connect, reconnect,
 * writes, tick, signals, shutdown), transport_read.c (the read path and the
 * secure channel glue of the connection) and transport_session.c (the
 * session as the peer, its jobs). Not part of the
 * transport's API.
 */
#ifndef CLI_TRANSPORT_IMPL_H
#define CLI_TRANSPORT_IMPL_H

#include "channel.h"
#include "errors.h"
#include "net.h"
#include "rng.h"
#include "transport.h"

struct cconn {
	struct fl_net_conn n; /* first: the handle pointer is the conn pointer */
	struct cli_transport *t;
	uv_connect_t creq;
	struct fl_frame_reader rd;
	struct fl_channel *ch; /* from the TCP connect on */
	int tcp_up;            /* TCP connected; the handshake runs */
	int connected;         /* channel established and the session told on_connect */
	int first_seen;        /* the first protocol frame was looked at */
	uint64_t rx;           /* bytes read on this connection */
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
	struct cli_session *s;       /* NULL when a peer other than a session runs */
	struct cli_transport_peer p; /* the session's calls, or those of start_peer */
	uv_timer_t tick, retry;
	uv_signal_t sig[2];
	struct cconn *conn; /* the current connection (connecting or up), or NULL */
	uv_getaddrinfo_t gai;
	int resolving, started, stopping, sig_got, jobs;
	enum cli_transport_result result;
	int attempts; /* failed connects in a row */
	int refused;  /* an authenticated refusal: stop instead of reconnecting */
	/* Why the last attempt failed before the channel was up (unauthenticated:
	 * retried); logged with the reconnect delay, then cleared. */
	char retry_why[FL_ERROR_MSG_MAX + 160];
	uint8_t server_pk[FL_PUBKEY_BYTES];
	char *enrol_token;
	struct cli_transport_stats st;
	struct fl_rng rng;
	char last_err[FL_ERROR_MSG_MAX];
	char fatal[FL_ERROR_MSG_MAX + 320];
	char rbuf[CLI_TRANSPORT_READ_BYTES];
};

/* transport.c */
/* The peer's send / close (ctx = the transport). */
int cli_transport_io_send(void *ctx, struct fl_buf *b);
void cli_transport_io_close(void *ctx);
/* Bytes as they go on the socket; takes over one reference to b. */
int cli_transport_write_raw(struct cconn *c, struct fl_buf *b);
void cli_transport_conn_close(struct cconn *c); /* final record, flush, close */
void cli_transport_conn_cut(struct cconn *c);   /* close now */
void cli_transport_begin_stop(struct cli_transport *t, enum cli_transport_result r, int sig);
/* Logs the tensor name of a Chunk frame's first piece (debug_tensors). */
void cli_transport_log_tensor(struct cli_transport *t, const char *dir, const uint8_t *p, size_t n);
/* Logs the peer's last error once (not again while it stays the same). */
void cli_transport_log_peer_error(struct cli_transport *t);
/* Records why this attempt failed before the channel was up (printf
 * format); schedule_retry logs it at error level with the delay. */
void cli_transport_retry_why(struct cli_transport *t, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* transport_read.c */
/* TCP is up: starts the channel (its first handshake message written) and
 * the reads. FL_OK, or an error (logged); the caller cuts the connection. */
int cli_transport_read_start(struct cconn *c);

#endif
