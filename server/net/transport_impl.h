/* transport_impl.h - internals shared by transport.c (sockets, frames,
 * timer, signals, shutdown) and transport_sec.c (the secure channel of each
 * connection, handshake timeouts, the first-frame identity rule, allow-list
 * reloads). Not part of the transport's API.
 */
#ifndef SRV_TRANSPORT_IMPL_H
#define SRV_TRANSPORT_IMPL_H

#include "access.h"
#include "channel.h"
#include "net.h"
#include "transport.h"

#define SRV_TR_HS_POLL_MS 250     /* how often handshake deadlines are checked */
#define SRV_TR_LIMIT_LOG_MS 10000 /* at most one summary of refusals per interval */

struct conn {
	struct fl_net_conn n; /* first, so the handle pointer is the conn pointer */
	struct srv_transport *t;
	uint64_t id; /* (serial << 32) | slot */
	uint32_t slot;
	char peer[64];
	struct fl_frame_reader rd;
	struct fl_channel *ch;       /* secure channel (pass-through with --insecure) */
	int up;                      /* channel established and the engine told */
	int first_seen;              /* the first protocol frame passed the identity rule */
	int replied;                 /* a handshake reply was written (the peer speaks it) */
	uint64_t close_by;           /* flush deadline */
	uint64_t hs_by;              /* handshake deadline (while !up) */
	int32_t addr;                /* its address table entry while unauthenticated, or -1 */
	uint8_t pk[FL_PUBKEY_BYTES]; /* the authenticated client key (secure, once up) */
	struct conn *prev, *next;
	struct conn *pk_next; /* in its bucket of srv_transport.by_pk */
	int pk_in;            /* in by_pk: its first frame passed */
	/* Backpressure (engine io pause / resume): not read while paused; the
	 * frame the engine did not consume and every later one are kept (each
	 * with its 4-byte length) to be delivered again on resume. */
	int paused, pause_now, resume_queued, redelivering;
	uint8_t *held;
	size_t held_len, held_cap;
	struct conn *resume_prev, *resume_next;
	/* Output pacing (transport_out.c): frames not sealed yet, a ring */
	struct fl_buf **outq;
	size_t outq_head, outq_n, outq_cap, outq_bytes;
	int waiting, close_after; /* in the round-robin list of connections to seal for */
	int counted_closing;      /* counted in nclosing (once, until closed) */
	struct conn *wait_prev, *wait_next;
	/* Write progress (transport_out.c): while bytes are unwritten, in the
	 * list of writing connections, oldest progress first. */
	int writing;
	uint64_t wprog_at; /* last progress (ms) */
	size_t wqueue;     /* libuv's write queue size then */
	struct conn *wr_prev, *wr_next;
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
	int insecure;
	struct conn *head; /* every open connection */
	size_t nconns, nclosing, nhandshaking;
	struct conn **slots;
	uint32_t nslots, *free_slots, nfree;
	uint32_t serial;
	struct srv_transport_stats st;
	struct srv_tr_limits *lim;              /* transport_limits.c */
	struct conn *resume_head, *resume_tail; /* paused connections to deliver again */
	int resuming;
	size_t unwritten;                   /* written to libuv, not yet to the kernel */
	struct conn *wait_head, *wait_tail; /* connections with frames queued, served in turn */
	struct conn *wr_head,
		*wr_tail; /* connections with unwritten bytes, oldest progress first */
	/* connections whose first frame passed, chained by the keyed hash of
	 * their client key (transport_sec.c; made on first use) */
	struct conn **by_pk;
	size_t by_pk_mask;
	uint8_t by_pk_key[16];
	char rbuf[SRV_TRANSPORT_READ_BYTES];
};

/* transport.c */
void srv_tr_send_error(struct conn *c, int err, const char *msg);
int srv_tr_read_start(struct conn *c);                            /* uv_read_start's code */
void srv_tr_close(struct conn *c);                                /* final record, flush, close */
void srv_tr_count_closing(struct conn *c);                        /* nclosing counts c, once */
void srv_tr_cut(struct conn *c);                                  /* close now */
int srv_tr_on_frame(void *ctx, const uint8_t *payload, size_t n); /* to the engine */
void srv_tr_conn_up(struct conn *c); /* channel established: tell the engine */

/* transport_limits.c */
int srv_tr_limits_new(struct srv_transport *t);
void srv_tr_limits_free(struct srv_transport *t);
/* A connection just accepted (its peer known, no channel yet): SRV_LIMIT_N
 * admits it (and counts it against its address until
 * srv_tr_addr_release), else the enum srv_transport_limit that refuses it. */
int srv_tr_admit(struct srv_transport *t, struct conn *c);
/* The same for a peer whose address table key is key (NULL: not an IP
 * peer, only the global limits apply) at time now (ms). */
int srv_tr_admit_key(struct srv_transport *t, struct conn *c, const uint8_t *key, uint64_t now);
/* The address table key of sa: IPv4 as ::ffff:a.b.c.d, IPv6 by its /64
 * (an IPv4-mapped one as its IPv4 address). 0 for another family. */
int srv_tr_addr_key(const struct sockaddr *sa, uint8_t key[16]);
/* The connection is authenticated or gone: its address entry forgets it. */
void srv_tr_addr_release(struct srv_transport *t, struct conn *c);
/* Counts a refusal by limit `which` and logs the summary when due. */
void srv_tr_limited(struct srv_transport *t, int which, const char *peer);
/* Logs the refusals not yet logged: when the interval has passed, or now
 * (force). */
void srv_tr_limits_log(struct srv_transport *t, int force);

/* transport_out.c */
int srv_tr_write_raw(struct conn *c, struct fl_buf *b);       /* takes over one reference */
int srv_tr_send_frame(struct conn *c, struct fl_buf *frame);  /* seals; takes over a reference */
int srv_tr_close_channel(struct conn *c);                     /* fl_net_close_channel, counted */
void srv_tr_out_written(struct fl_net_conn *n, size_t bytes); /* the fl_net hook */
void srv_tr_out_pump(struct srv_transport *t);
int srv_tr_out_queued(const struct conn *c); /* 1 when frames wait unsealed */
void srv_tr_out_free(struct conn *c);        /* at close: queued and held frames */
void srv_tr_pause(struct conn *c);
void srv_tr_resume(struct conn *c); /* queued: delivered in srv_tr_resume_pending */
void srv_tr_resume_unlink(struct srv_transport *t, struct conn *c);
int srv_tr_hold_frame(struct conn *c, const uint8_t *payload, size_t n);
void srv_tr_resume_pending(struct srv_transport *t);
/* Cuts connections whose writes made no progress for write_timeout_ms. */
void srv_tr_write_sweep(struct srv_transport *t, uint64_t now);
/* When the next write progress check is due, UINT64_MAX for none. */
uint64_t srv_tr_write_deadline(const struct srv_transport *t);

/* transport_sec.c */
int srv_tr_chan_open(struct conn *c); /* at accept; FL_OK or an error (logged) */
/* Bytes read from the socket: through the channel into the frame reader. */
void srv_tr_feed(struct conn *c, const uint8_t *data, size_t n);
/* The identity rule on the first protocol frame: FL_OK passes; the code sent
 * to the client when refused (the connection is then closing). */
int srv_tr_first_frame(struct conn *c, const uint8_t *payload, size_t n);
/* Drops connections whose handshake is overdue. */
void srv_tr_handshake_sweep(struct srv_transport *t, uint64_t now);
/* "HOST:PORT" of the peer. */
void srv_tr_peer_name(uv_tcp_t *tcp, char *out, size_t cap);
/* Logs a frame's tensor name (debug_tensors) or an Error message it carries. */
void srv_tr_log_frame(const struct conn *c, const char *dir, const uint8_t *payload, size_t len);
/* SIGHUP: re-reads the allow-list, closes connections whose key left it. */
void srv_tr_reload(struct srv_transport *t);
/* The connection is closed: out of the index of live client keys. */
void srv_tr_key_forget(struct conn *c);

#endif
