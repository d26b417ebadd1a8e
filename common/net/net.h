/* net.h - the output side of one libuv TCP connection, shared by the
 * coordinator's and the edge client's transports: writes that own their
 * buffer until the write callback, a cap on queued output, sealing into
 * the secure channel's records, the orderly shutdown and a close that
 * happens once, the log line at the end of the input and the address
 * lookup. Nothing here reads data or makes protocol decisions: the
 * transports do that and embed a struct fl_net_conn first in
 * their connection struct, so the handle pointer is the connection pointer.
 */
#ifndef FL_NET_H
#define FL_NET_H

#include "channel.h"
#include "wire.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct fl_net_conn {
	uv_tcp_t tcp; /* first: the handle pointer is the conn pointer */
	uv_shutdown_t sreq;
	size_t pending;        /* bytes queued, not yet written */
	size_t max_output;     /* a write that would queue more cuts the connection */
	int closing;           /* shutting down: nothing more is written */
	int cut;               /* uv_close called */
	uv_close_cb on_closed; /* the owner frees its connection there */
	/* Optional: after each write left the queue (written, failed or
	 * cancelled), with its byte count, once pending is updated. */
	void (*on_written)(struct fl_net_conn *n, size_t bytes);
	uint64_t *sock_out; /* the owner's counter of bytes written */
	uint64_t *hs_out;   /* ... and of those written before the channel was up */
	char name[96];      /* names the connection in log lines */
};

/* Initialises the handle on loop (calloc'd memory assumed). */
void fl_net_conn_init(struct fl_net_conn *n, uv_loop_t *loop, size_t max_output,
		      uv_close_cb on_closed, uint64_t *sock_out, uint64_t *hs_out);
/* 1 once the connection is closing or closed: it takes no more work. */
int fl_net_gone(const struct fl_net_conn *n);
/* Queues b (takes over one reference; hs: count it as handshake bytes).
 * FL_OK, or FL_EIO when the connection is closing, over its output cap
 * (logged), or the write failed; the last two cut the connection. */
int fl_net_write(struct fl_net_conn *n, struct fl_buf *b, int hs);
/* Seals one protocol frame into a record of ch and queues it (takes over
 * the frame's reference). A sealing failure is logged and cuts. */
int fl_net_send_sealed(struct fl_net_conn *n, struct fl_channel *ch, struct fl_buf *frame, int hs);
/* The start of an orderly close: queues ch's final record when ch is
 * established and healthy (ch NULL: none). FL_OK when the connection may
 * now be shut down, FL_EIO when it is already closing or was cut meanwhile. */
int fl_net_close_channel(struct fl_net_conn *n, struct fl_channel *ch, int hs);
/* Closes now, once: on_closed runs later from the loop. */
void fl_net_cut(struct fl_net_conn *n);
/* Stops reading, flushes what is queued, then closes (cut when the
 * shutdown cannot start). */
void fl_net_shutdown(struct fl_net_conn *n);

/* At the end of the input (nread < 0 in a read callback): logs a read
 * error, or at EOF a channel ch that did not end with its closing record
 * (ch NULL: nothing to check), followed by hint (""), naming the
 * connection. The caller closes. */
void fl_net_read_end(const struct fl_net_conn *n, struct fl_channel *ch, ssize_t nread,
		     const char *hint);
/* uv_getaddrinfo for a TCP stream to host:port, any address family
 * (passive: for binding). cb NULL: synchronous. The libuv return code. */
int fl_net_resolve(uv_loop_t *loop, uv_getaddrinfo_t *req, uv_getaddrinfo_cb cb, const char *host,
		   int port, int passive);

#endif
