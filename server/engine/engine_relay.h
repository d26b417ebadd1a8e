/* engine_relay.h - the aggregator-tree state of one engine, shared by
 * engine_relay.c (a parent receiving partial sums) and engine_upstream.c (a
 * mid-tier's link to its parent). Not part of the public API (engine.h
 * has that). */
#ifndef SRV_ENGINE_RELAY_H
#define SRV_ENGINE_RELAY_H

#include "engine_impl.h"

#define SRV_RELAY_SUM_BYTES 16 /* one 128-bit sum on the wire */
#define SRV_RELAY_OPT_MAX 16   /* TrainSettings.optimizer, with its NUL */
/* at most this many updates in one partial sum (its held-out client count
 * stays far from INT_MAX) */
#define SRV_RELAY_UPDATES_MAX ((uint64_t)1 << 30)

/* A partial sum being received from one selected connection. */
struct srv_relay_part {
	uint64_t conn, round, weight, count;
	uint64_t hold_clients; /* clients behind its held-out figures */
	size_t ti;             /* the tensor being received */
	size_t off;            /* its elements received so far */
	__int128 *sums;        /* nglobal, at the offsets of the global tensors */
};

struct srv_relay {
	/* parent side: the mid-tiers' client ids, comma-separated (NULL =
	 * none), and receptions in progress (a few mid-tiers at most) */
	char *tiers;
	struct srv_relay_part *parts;
	size_t nparts;

	/* mid-tier side (cfg.relay) */
	struct srv_relay_io io;
	char node_id[FL_WIRE_CLIENT_ID_MAX + 1];
	int connected, welcomed, refused, done;
	uint64_t gen; /* upstream connections so far */
	uint64_t last_tx, last_rx;
	uint32_t hb_ms, idle_ms, chunk_bytes; /* the parent's limits */
	uint32_t own_timeout_ms;              /* this node's --round-timeout */
	enum fl_wire_dtype dtype;             /* the upstream session's */
	float *rxbuf;                         /* the task's tensors as they arrive */
	struct fl_wire_rx *rx;
	int receiving;     /* RoundTask or EvalTask seen, its tensors arriving */
	int eval;          /* ... and it is an EvalTask */
	uint64_t eval_gen; /* the connection of the evaluation running */
	int pending;       /* a complete task waits for the round machine */
	int serving;       /* a local round of task_round runs */
	int waiting;       /* a task waits for a client of this node to be ready */
	uint64_t wait_until;
	int repeat; /* the task arriving repeats the running round's round and
			  settings (a retry, or a parent resumed from its checkpoint) */
	uint64_t task_round, task_gen, task_rx_ms;
	uint32_t task_deadline_ms;
	Fedloha__V1__TrainSettings ts;
	char optimizer[SRV_RELAY_OPT_MAX];
};

/* The margin a mid-tier keeps before its parent's deadline, left_ms away:
 * a tenth of it (at least 0.5 s, at most half), or the time sum_bytes take
 * at rate bytes/s when longer (rate 0: not counted); at most left_ms. */
uint64_t srv_relay_keep_ms(uint64_t left_ms, uint64_t sum_bytes, uint64_t rate);

/* The engine's relay state, made on first use; NULL when out of memory
 * (the error set). */
struct srv_relay *srv_eng_relay_get(struct srv_engine *e);

static inline void srv_relay_i128_put(uint8_t *p, __int128 v)
{
	unsigned __int128 u = (unsigned __int128)v;
	for (int i = 0; i < SRV_RELAY_SUM_BYTES; i++, u >>= 8)
		p[i] = (uint8_t)u;
}

static inline __int128 srv_relay_i128_get(const uint8_t *p)
{
	unsigned __int128 u = 0;
	for (int i = SRV_RELAY_SUM_BYTES - 1; i >= 0; i--)
		u = (u << 8) | p[i];
	return (__int128)u;
}

#endif
