/* loadgen.h - fl-loadgen, a load generator for fedloha-server on this
 * machine's loopback: one process runs many real client sessions on one
 * libuv loop (secure channel handshake with seeded identities, Hello, a
 * real Update of the right tensors for every task, Heartbeat answers) so
 * the coordinator does exactly the work of real clients, without training.
 * loadgen_main.c: options, the allow-list, the report; loadgen_conn.c: the
 * connections and the protocol. A test tool, not part of a deployment. */
#ifndef FL_LOADGEN_H
#define FL_LOADGEN_H

#include "channel.h"
#include "net.h"
#include "wire.h"

#include <stdint.h>
#include <uv.h>

#define LG_ROUNDS_MAX 1024 /* rounds with timing records */
#define LG_TENSORS_MAX 256
#define LG_ID_FMT "lg-%05u"

struct lg_tensor {
	char name[FL_WIRE_NAME_MAX + 1];
	int ndim;
	int64_t shape[FL_WIRE_NDIM_MAX];
	size_t numel;
};

struct lg_round_times {
	uint64_t task_first, task_last; /* a RoundTask header arrived (ms, CLOCK_MONOTONIC) */
	uint64_t update_last;           /* the last Update of this process was queued */
	uint32_t tasks, updates;
};

struct lg {
	uv_loop_t *loop;
	struct sockaddr_in target;
	uint8_t server_pk[FL_PUBKEY_BYTES];
	uint64_t seed;
	unsigned first, n, sources, concurrency;
	int random_values; /* else zeros */
	uint32_t examples;
	uint32_t chunk_bytes; /* the Welcome's limits.chunk_bytes */
	uv_timer_t deadline;
	/* the global tensors, learned from the first complete task */
	struct lg_tensor ts[LG_TENSORS_MAX];
	size_t K;
	int have_tensors;
	/* the Update frames of round upd_round, shared by every session */
	uint64_t upd_round;
	struct fl_buf **upd;
	size_t nupd;
	/* progress */
	unsigned next, handshaking, up, closed, failed, errors, byes_done;
	/* sessions whose handshake failed, to try again (a real client retries) */
	unsigned *retry, nretry, max_retries, retries;
	uint8_t *attempts;
	int stopping;
	uint64_t t_start, t_last_up; /* ms */
	uint64_t tasks, updates, heartbeats;
	uint64_t sock_out, hs_out; /* bytes written (fl_net counters) */
	uint64_t rounds_seen;
	struct lg_round_times rt[LG_ROUNDS_MAX + 1];
	struct lgc **conns;
	char rbuf[65536];
};

struct lgc {
	struct fl_net_conn n; /* first: the handle pointer is the conn pointer */
	uv_connect_t creq;
	struct lg *g;
	unsigned idx;
	struct fl_identity *id;
	struct fl_channel *ch;
	struct fl_frame_reader rd;
	int up, bye_done, counted;
	uint64_t round;        /* of the task being received */
	uint32_t ntens, lasts; /* tensors announced / complete */
	uint32_t tasks;
};

/* The identity of client idx (0-based) under seed. */
int lg_identity(uint64_t seed, unsigned idx, struct fl_identity **out);
/* ms on CLOCK_MONOTONIC, comparable between processes of this machine. */
uint64_t lg_now_ms(void);
/* Opens connections until concurrency handshakes are in progress. */
void lg_start_more(struct lg *g);
/* Every connection closed: stop the loop. */
void lg_maybe_done(struct lg *g);

#endif
