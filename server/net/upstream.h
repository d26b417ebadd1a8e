/* upstream.h - a mid-tier aggregator's link to its parent coordinator: the
 * edge client's libuv transport (client/net: connect, secure channel
 * against the pinned parent key, reconnect with backoff) carrying the round
 * engine's upstream side (engine.h, srv_engine_relay_*). It connects once
 * min_available of this node's own clients are ready, and re-arms the
 * coordinator transport's timer after every call into the engine. When the
 * link stops for good (the parent refused this node or its model, or
 * max_attempts connects failed in a row; with max_attempts 0 it retries
 * forever) the engine fails, which stops the coordinator side with a Bye
 * to this node's clients;
 * when the coordinator side stops, srv_upstream_stop ends the link.
 *
 * Lifecycle: srv_upstream_new after the engine and the coordinator
 * transport, srv_upstream_start after srv_transport_start, uv_run,
 * srv_upstream_free after uv_run returned. Loop thread only. */
#ifndef SRV_UPSTREAM_H
#define SRV_UPSTREAM_H

#include "engine.h"
#include "transport.h"

#include <stdint.h>
#include <uv.h>

struct fl_identity;

struct srv_upstream_config {
	const char *host; /* the parent (copied) */
	int port;
	const char *node_id;                /* this node's client id at the parent */
	int insecure;                       /* plaintext: identity and parent_pk are ignored */
	const struct fl_identity *identity; /* this node's key (borrowed) */
	const uint8_t *parent_pk;           /* the pinned parent key (copied) */
	uint32_t max_frame_bytes;
	uint32_t handshake_timeout_ms; /* 0 = the channel's default */
	uint64_t seed;                 /* reconnect jitter */
	int max_attempts;              /* failed connects in a row before giving up (0 = never) */
};

struct srv_upstream;

/* e (cfg.relay set) and t are borrowed and must outlive the loop run. */
int srv_upstream_new(uv_loop_t *loop, const struct srv_upstream_config *cfg, struct srv_engine *e,
		     struct srv_transport *t, struct srv_upstream **out);
/* Starts waiting for this node's clients, then connects. */
int srv_upstream_start(struct srv_upstream *u);
/* Ends the link (idempotent; the loop run then ends once its handles are
 * closed). */
void srv_upstream_stop(struct srv_upstream *u);
/* Only after uv_run returned; NULL is a no-op. */
void srv_upstream_free(struct srv_upstream *u);

#endif
