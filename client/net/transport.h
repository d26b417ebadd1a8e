/* transport.h - the edge client's libuv TCP transport: it resolves and
 * connects to the coordinator, runs the secure channel (common/secure/channel.h:
 * the handshake against the pinned server key, with a timeout, then
 * encrypted records; a pass-through with --insecure), reconnects with
 * exponential backoff and seeded jitter when the connection fails or goes
 * away, reassembles frames
 * for the session (session.h), writes the frames it queues, runs its
 * training / evaluation jobs on the libuv thread pool (uv_queue_work), ticks
 * it on a timer (heartbeats, server silence) and stops in order on SIGINT /
 * SIGTERM or when the session is finished (Bye "done").
 *
 * The session hears of a connection only once the channel is established.
 * Only an authenticated refusal is final: the server refusing our key in
 * the handshake's last message (which only the holder of the pinned key
 * can write), an Error with code FL_EAUTH in answer to our Hello or a model
 * the session refuses (both inside the established channel, or anything
 * with --insecure, which authenticates nothing). The transport then stops
 * with CLI_TRANSPORT_REFUSED and cli_transport_error() says why. Every
 * failure before the channel is up that anyone on the path could forge
 * (bad magic or signature, another server key, a plaintext Error, a
 * handshake timeout, a reset) is logged at error level with the reconnect
 * delay and retried with the usual backoff.
 *
 * No protocol logic here: the session decides everything. Socket and
 * session calls happen on the loop thread only; cli_job_run() runs on a
 * pool thread.
 *
 * Lifecycle:
 *   cli_transport_new(loop, cfg, &t)
 *   cli_transport_session_io(t, &io)     io for cli_session_new
 *   cli_session_new(..., &io, &s)
 *   cli_transport_start(t, s)            first connection attempt, timers,
 *                                        signals
 *   uv_run(loop, UV_RUN_DEFAULT)         returns once every handle is closed
 *                                        and no job is left
 *   cli_transport_result(t)              why it stopped
 *   cli_session_free(s); cli_transport_free(t); uv_loop_close(loop) == 0
 */
#ifndef CLI_TRANSPORT_H
#define CLI_TRANSPORT_H

#include "identity.h"
#include "session.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define CLI_TRANSPORT_READ_BYTES 65536

struct cli_transport_config {
	const char *host; /* name or address of the coordinator (copied) */
	int port;
	uint32_t max_frame_bytes;    /* larger incoming frames close the connection */
	size_t max_output_bytes;     /* queued, unwritten bytes before the connection is cut */
	uint32_t backoff_min_ms;     /* shortest reconnect delay (the first is in [min, 2 min]) */
	uint32_t backoff_max_ms;     /* longest reconnect delay (cap of the doubling) */
	uint32_t connect_timeout_ms; /* a connect (or resolve) taking longer is retried */
	uint32_t tick_ms;            /* session tick period */
	int max_attempts;            /* consecutive failed connects before giving up (0 = never) */
	uint64_t seed;               /* jitter stream */
	int debug_tensors;           /* log tensor names sent / received (debug level) */
	int insecure;                /* plaintext pass-through: the fields below are ignored */
	const struct fl_identity *identity; /* our key (borrowed, outlives the transport) */
	const uint8_t *server_pk;      /* the pinned coordinator key, FL_PUBKEY_BYTES (copied) */
	const char *enrol_token;       /* optional one-time enrolment token (copied) */
	uint32_t handshake_timeout_ms; /* 0 = FL_CHANNEL_TIMEOUT_DEFAULT_MS; then retried */
};

/* Socket-level byte counts (handshakes, record headers and tags included),
 * next to the session's frame counts (cli_session_bytes). */
struct cli_transport_stats {
	uint64_t sock_in, sock_out; /* every byte read from / written to the socket */
	uint64_t hs_in, hs_out;     /* the part before a channel was established */
	uint64_t handshakes;        /* channels established */
};

enum cli_transport_result {
	CLI_TRANSPORT_RUNNING = 0,
	CLI_TRANSPORT_FINISHED, /* the session got Bye("done") */
	CLI_TRANSPORT_SIGNALLED,
	CLI_TRANSPORT_GAVE_UP, /* max_attempts connects failed in a row */
	CLI_TRANSPORT_REFUSED, /* an authenticated refusal (see above): not retried */
};

struct cli_transport;

/* What the transport drives: the session (cli_transport_start), or any
 * other speaker of the client side of the protocol (cli_transport_start_peer),
 * e.g. a mid-tier aggregator's link to its parent. Every call happens on the
 * loop thread with the peer's ctx. */
struct cli_transport_peer {
	void *ctx;
	void (*on_connect)(void *ctx, uint64_t now_ms); /* the channel is up */
	/* FL_OK, or an error (fl_error_msg says why): the connection closes */
	int (*on_frame)(void *ctx, const uint8_t *payload, size_t len, uint64_t now_ms);
	void (*on_disconnect)(void *ctx);
	void (*tick)(void *ctx, uint64_t now_ms);
	int (*idle_expired)(void *ctx, uint64_t now_ms); /* 1: the server is silent too long */
	int (*finished)(void *ctx);                      /* 1: stop, the work is done */
	int (*refused)(void *ctx);            /* 1 after an on_frame error that is final */
	const char *(*last_error)(void *ctx); /* the peer's own last failure, "" if none */
};

/* Defaults: 127.0.0.1:7420, 4 MiB frames, 256 MiB output, backoff 250 ms
 * .. 30 s, connect timeout 10 s, tick 500 ms, retry forever, seed 0. */
void cli_transport_config_default(struct cli_transport_config *c);
/* loop is borrowed and must outlive the transport. */
int cli_transport_new(uv_loop_t *loop, const struct cli_transport_config *cfg,
		      struct cli_transport **out);
/* send / close / submit for cli_session_new (ctx = t). */
void cli_transport_session_io(struct cli_transport *t, struct cli_session_io *io);
/* Starts connecting (s is borrowed until the loop run ends). */
int cli_transport_start(struct cli_transport *t, struct cli_session *s);
/* The same for another peer (copied; its ctx is borrowed until the loop run
 * ends). Such a peer submits no jobs. */
int cli_transport_start_peer(struct cli_transport *t, const struct cli_transport_peer *p);
/* Queues one frame to the server (sealed into a record); takes over one
 * reference. FL_EIO when no channel is up (the frame is dropped). */
int cli_transport_send(struct cli_transport *t, struct fl_buf *b);
/* Stops as if finished: the connection is closed, the loop run ends once
 * every handle is closed. */
void cli_transport_stop(struct cli_transport *t);
enum cli_transport_result cli_transport_result(const struct cli_transport *t);
int cli_transport_signal(const struct cli_transport *t); /* the signal received, or 0 */
/* Why it stopped with CLI_TRANSPORT_REFUSED ("" otherwise). */
const char *cli_transport_error(const struct cli_transport *t);
void cli_transport_stats(const struct cli_transport *t, struct cli_transport_stats *out);
/* Only after uv_run returned; NULL is a no-op. */
void cli_transport_free(struct cli_transport *t);

#endif
