/* transport.h - the coordinator's libuv TCP transport: it accepts
 * connections, runs a secure channel on each (common/secure/channel.h: handshake
 * with a timeout, admission by srv_access, encrypted records; a
 * pass-through with --insecure), reassembles frames (a length over
 * max_frame_bytes closes that connection before anything is allocated),
 * applies the identity rule to the first frame (access.h) and a one-live-
 * connection-per-key rule, hands payloads, connects,
 * disconnects and the clock to the round engine (engine.h), and writes the
 * frames the engine queues. It owns one uv_timer (re-armed to
 * srv_engine_next_deadline after every engine call), the listening socket
 * and the SIGINT / SIGTERM / SIGHUP handlers.
 *
 * The engine hears of a connection only once its channel is established.
 * SIGHUP re-reads the allow-list (a bad file keeps the old one) and closes
 * connections whose key is no longer listed.
 *
 * It does no protocol logic: rounds, timeouts and checks are the engine's.
 * Every socket and engine call happens on the loop thread.
 *
 * Lifecycle:
 *   srv_transport_new(loop, cfg, &t)
 *   srv_transport_engine_io(t, &io)      io for srv_engine_new
 *   srv_engine_new(..., &io, &e); srv_engine_restore(e)
 *   srv_transport_start(t, e)            bind, listen, signals, timer
 *   uv_run(loop, UV_RUN_DEFAULT)         returns when the engine finished or
 *                                        failed, or after a signal, once
 *                                        every handle is closed
 *   srv_transport_free(t); uv_loop_close(loop) == 0
 *
 * Shutdown (engine done, SIGINT/SIGTERM): the listener
 * closes first; on a signal every client gets Bye("shutdown") and the
 * engine is not told (it already checkpointed its last completed round);
 * each connection is flushed (at most flush_timeout_ms) and closed.
 */
#ifndef SRV_TRANSPORT_H
#define SRV_TRANSPORT_H

#include "engine.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define SRV_TRANSPORT_READ_BYTES 65536 /* one shared read buffer */
#define SRV_TRANSPORT_OUTPUT_DEFAULT ((size_t)64 << 20)
#define SRV_TRANSPORT_CONNS_DEFAULT 10000
#define SRV_TRANSPORT_HANDSHAKES_DEFAULT 256  /* handshakes in progress at once */
#define SRV_TRANSPORT_ADDR_CONNS_DEFAULT 16   /* unauthenticated connections per address */
#define SRV_TRANSPORT_ADDR_RATE_DEFAULT 20.0  /* new handshakes per second per address */
#define SRV_TRANSPORT_ADDR_BURST_DEFAULT 40.0 /* ... and the bucket's size */
#define SRV_TRANSPORT_HANDSHAKE_MS_DEFAULT 3000
#define SRV_TRANSPORT_SEAL_BUDGET ((size_t)32 << 20)

/* The limits that refuse a connection at accept (srv_transport_stats). */
enum srv_transport_limit {
	SRV_LIMIT_CONNS,      /* max_conns connections open */
	SRV_LIMIT_RESERVE,    /* unauthenticated ones at max_conns - reserved_conns */
	SRV_LIMIT_HANDSHAKES, /* max_handshakes in progress */
	SRV_LIMIT_ADDR_CONNS, /* addr_conns unauthenticated ones from this address */
	SRV_LIMIT_ADDR_RATE,  /* this address's handshake bucket is empty */
	SRV_LIMIT_ADDR_TABLE, /* no room to track this address */
	SRV_LIMIT_N
};

struct srv_transport_config {
	const char *host;         /* numeric address or name to bind (copied) */
	int port;                 /* 0 = any free port (see srv_transport_port) */
	int backlog;              /* listen(2) backlog */
	uint32_t max_frame_bytes; /* larger incoming frames close the connection */
	size_t max_output_bytes;  /* bytes queued but not yet written, per connection:
				      above it the slow reader is closed */
	size_t max_conns;         /* further connections are accepted and closed at once */
	/* Limits on connections whose channel is not established yet, checked
	 * at accept before any cryptography; a connection over one is closed at
	 * once and counted (stats.limited), one warning line per 10 s. With
	 * max_handshakes reached, a peer with no handshake in progress takes
	 * the slot of the oldest handshake of the busiest address (two or more
	 * in progress; stats.evicted). */
	size_t reserved_conns;     /* of max_conns, for authenticated clients only */
	size_t max_handshakes;     /* in progress at once */
	uint32_t addr_conns;       /* open per source address (IPv6: per /64); 0 = no limit */
	double addr_rate;          /* new handshakes per second per address; 0 = no limit */
	double addr_burst;         /* the per-address bucket (>= 1 when addr_rate > 0) */
	uint32_t flush_timeout_ms; /* a closing connection still unflushed after this is cut */
	/* Bytes sealed and written but not yet taken by the kernel, over all
	 * connections, before further frames wait unsealed in their
	 * connection's queue (transport_out.c; 0 = SRV_TRANSPORT_SEAL_BUDGET).
	 * One connection holds at most max(2 x max_frame_bytes, seal_budget /
	 * 16) of it (or one frame), and connections waiting are served one
	 * frame each in turn. */
	size_t seal_budget;
	/* A connection with bytes written but not taken by the kernel for this
	 * long (its peer stopped reading) is cut; 0 = never. */
	uint32_t write_timeout_ms;
	int debug_tensors;             /* log every tensor name sent / received (debug level) */
	struct srv_access *access;     /* borrowed: identity, allow-list; NULL = insecure */
	uint32_t handshake_timeout_ms; /* a channel not established by then is dropped
					  (0 = SRV_TRANSPORT_HANDSHAKE_MS_DEFAULT) */
	/* Hooks on the loop thread; any may be NULL. */
	void *hook_ctx;
	void (*on_round)(void *ctx, const struct srv_round_report *r);
	void (*on_reload)(void *ctx); /* SIGHUP, after the allow-list reload */
	void (*on_stop)(void *ctx);   /* the transport began its shutdown */
};

/* Socket-level byte counts (what really crossed the network: handshakes,
 * record headers and tags included), next to the engine's frame counts. */
struct srv_transport_stats {
	uint64_t sock_in, sock_out; /* every byte read from / written to a socket */
	uint64_t hs_in, hs_out;     /* the part before a channel was established */
	uint64_t handshakes;        /* channels established */
	uint64_t refused;           /* clients refused (allow-list, identity rule, duplicate key) */
	uint64_t failed;            /* handshakes that failed otherwise (garbage, timeout, ...) */
	uint64_t limited[SRV_LIMIT_N]; /* connections closed at accept, per limit */
	uint64_t evicted;              /* handshakes cut to make room under max_handshakes for a
			     peer with none in progress */
};

struct srv_transport;

/* Defaults: 127.0.0.1:7420, backlog 511, 4 MiB frames, 64 MiB output, 10000
 * connections of which 1000 reserved, 256 handshakes, 16 per address and
 * 20/s (burst 40) per address, handshake timeout 3 s, flush 2 s, write
 * timeout 60 s, no hooks. */
void srv_transport_config_default(struct srv_transport_config *c);
/* loop is borrowed and must outlive the transport. Nothing is bound yet. */
int srv_transport_new(uv_loop_t *loop, const struct srv_transport_config *cfg,
		      struct srv_transport **out);
/* The send / close / on_round table for srv_engine_new (ctx = t). */
void srv_transport_engine_io(struct srv_transport *t, struct srv_engine_io *io);
/* Binds and listens (FL_EIO with the address and reason on failure), starts
 * the signal handlers and the timer. e is borrowed; it must outlive the
 * loop run. An engine that is already finished (restored from a final
 * checkpoint) makes the transport stop at once. */
int srv_transport_start(struct srv_transport *t, struct srv_engine *e);
/* The engine was called from outside the transport (a mid-tier's upstream
 * link, upstream.h): stop if it ended, re-arm the timer to its next
 * deadline. */
void srv_transport_engine_changed(struct srv_transport *t);
/* The bound port (after start), e.g. when cfg.port was 0. */
int srv_transport_port(const struct srv_transport *t);
/* The signal that stopped the transport, 0 if none. */
int srv_transport_signal(const struct srv_transport *t);
void srv_transport_stats(const struct srv_transport *t, struct srv_transport_stats *out);
/* "per-address rate (--addr-rate)" etc. for an enum srv_transport_limit. */
const char *srv_transport_limit_name(int which);
/* Only after uv_run returned (every handle closed); NULL is a no-op. */
void srv_transport_free(struct srv_transport *t);

#endif
