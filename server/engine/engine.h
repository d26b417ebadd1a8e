/* engine.h - the coordinator's round engine: a transport-agnostic state
 * machine (proto/PROTOCOL.md). A transport (the libuv daemon, the
 * in-process simulator, a test) feeds it connection events, frame payloads
 * and the clock; the engine answers through srv_engine_io callbacks with
 * encoded frames. It never calls libuv, never sleeps and never reads the
 * clock itself: time is the now_ms the caller passes (any monotonic ms).
 *
 * Per round: select among the welcomed, idle clients that hold the loha
 * base, if there is one (sorted by client_id,
 * RNG stream seed/(round*FL_RNG_ROUND_STREAMS + attempt), so a restart replays the same
 * selection), encode the global tensors once per dtype in use and send the
 * same frames to every selected client, check and fold each update as it
 * arrives into an order-independent accumulator (server/engine/aggregate.h),
 * aggregate when everyone reported or at the deadline with min_report
 * updates (else retry), apply the server optimiser, checkpoint atomically,
 * optionally run a federated evaluation, report, next round.
 *
 * Memory: the engine holds nothing model-sized per client. An update in
 * flight is staged whole (checked chunk by chunk as it arrives, folded into
 * the accumulator only when complete, dropped without a trace when refused)
 * in one of upload_slots buffers of nglobal floats; an Update header that
 * finds them all busy parks its connection (io->pause) until a slot frees
 * (io->resume; oldest parked first). Model-sized memory is then
 * (upload_slots + a few) * nglobal * 4 bytes whatever the number of clients
 * (engine_upload.c). upload_slots = 0 gives every uploading client a buffer
 * of its own and needs no pause / resume.
 *
 * Callbacks must not re-enter the engine (queue frames, deliver later).
 * Round numbers on the wire are 1-based: the first round is round 1.
 */
#ifndef SRV_ENGINE_H
#define SRV_ENGINE_H

#include "model.h"
#include "optim.h"
#include "server_optim.h"
#include "wire.h"

#include <stddef.h>
#include <stdint.h>

/* fedloha-server: without --upload-slots, the slots --upload-memory (MiB)
 * holds, at most SRV_UPLOAD_SLOTS_DEFAULT (srv_engine_upload_slots_for) */
#define SRV_UPLOAD_SLOTS_DEFAULT 1024
#define SRV_UPLOAD_MEMORY_DEFAULT_MIB 256

struct srv_engine_config {
	uint64_t rounds; /* rounds to run */
	uint64_t seed;
	int min_available;         /* clients connected before a round starts (>= 1) */
	int min_fit;               /* at least this many selected */
	double fraction;           /* selected = max(min_fit, ceil(fraction * available)), capped */
	int min_report;            /* updates needed at the deadline, else the round is retried */
	int max_retries;           /* per round, then the engine fails */
	uint32_t round_timeout_ms; /* deadline after the task is sent (also for evaluation) */
	uint32_t heartbeat_ms, idle_timeout_ms; /* 0 = off */
	/* client training settings */
	uint32_t epochs, batch_size;
	float lr, lr_decay; /* round t (1-based) gets lr * lr_decay^(t-1) */
	float momentum, weight_decay, prox_mu;
	const char *optimizer; /* "sgd" | "adam" */
	/* server strategy */
	struct srv_optim_config server_opt; /* fedavg/fedavgm/fedadam/fedyogi/fedadagrad */
	/* the encoding offered to clients that leave the choice to the server
	 * (Hello.dtype_from_server), or forced on all with dtype_required;
	 * other clients get their preferred dtype */
	enum fl_wire_dtype dtype;
	int dtype_required;
	uint32_t max_frame_bytes, chunk_bytes;
	uint32_t eval_every; /* federated evaluation every N rounds and after the last (0 = never) */
	const char *checkpoint_path; /* NULL = no checkpoints */
	const char *config_json;     /* PEFT-format config text sent in Welcome */
	const char *base_path; /* loha: frozen base safetensors served to clients (NULL = none) */
	/* The model description travels inline in the Welcome up to this many
	 * bytes, else clients fetch it. 0 = the automatic bound, which is also
	 * the most allowed: half of max_frame_bytes less the envelope slack and
	 * config_json, so the Welcome always fits in a frame. */
	uint32_t desc_inline_max;
	/* Updates staged at once (0 = no bound); > 0 needs io pause and resume. */
	uint32_t upload_slots;
	/* A mid-tier aggregator (engine_relay.c): rounds come from the parent
	 * (srv_engine_relay_*), not from rounds / fraction / min_report. */
	int relay;
	/* A mid-tier's assumed upload rate to its parent, bytes per second:
	 * its deadline keeps the partial sum's bytes at this rate before the
	 * parent's (default 12.5e6, 100 Mbit/s). */
	uint64_t relay_up_rate;
};

#define SRV_RELAY_UP_RATE_DEFAULT 12500000u /* bytes/s: 100 Mbit/s */

struct srv_round_report {
	uint64_t round;                            /* 1-based number of the round just aggregated */
	int selected, reported, dropped, rejected; /* of the attempt that succeeded */
	int attempts;                              /* 1 + retries */
	double train_loss, train_accuracy;         /* weighted by num_examples */
	uint64_t examples;                         /* sum of num_examples aggregated */
	uint64_t bytes_up, bytes_down;             /* this round (since the previous report) */
	uint64_t total_up, total_down;
	int eval_clients;
	double eval_loss, eval_accuracy; /* federated eval, if this round had one */
	/* The updates' held-out figures (clients that hold samples out report
	 * their model right after local training, before aggregation),
	 * weighted by held-out samples; holdout_clients = 0 when none did. */
	int holdout_clients;
	double holdout_loss, holdout_accuracy;
	double seconds; /* from the first task to the report */
};

struct srv_engine_io {
	void *ctx;
	/* Queues a whole frame (4-byte length included); takes over one
	 * reference. FL_OK, or a negative fl_err when the frame could not be
	 * queued (the transport will report the disconnect). */
	int (*send)(void *ctx, uint64_t conn, struct fl_buf *frame);
	/* Flush queued frames, then close; the engine has already forgotten conn. */
	void (*close)(void *ctx, uint64_t conn);
	/* After each aggregated round (and its evaluation); may be NULL. */
	void (*on_round)(void *ctx, const struct srv_round_report *r);
	/* Backpressure for upload slots (NULL when upload_slots is 0). pause:
	 * the frame being delivered was not consumed; stop reading conn and
	 * keep that frame and every later one. resume: deliver them again, in
	 * order, then read on (after the engine call returns: never from
	 * inside the callback). A pause without a resume happens only when the
	 * engine then closes conn. */
	void (*pause)(void *ctx, uint64_t conn);
	void (*resume)(void *ctx, uint64_t conn);
};

struct srv_upload_stats {
	uint32_t slots;     /* the bound (0 = none) */
	uint32_t in_use;    /* slots holding or reserved for an update */
	uint32_t peak;      /* most in use at once */
	uint64_t parked;    /* uploads that waited for a slot */
	uint64_t discarded; /* still waiting at their deadline: read and discarded */
};

struct srv_engine;

/* 3 rounds, all clients, fedavg, f32, 60 s round timeout, heartbeat 10 s,
 * idle timeout 60 s, 1 epoch, batch 64, SGD lr 0.1 decay 1, 4 MiB frames,
 * 1 MiB chunks, no checkpoint, no evaluation. */
void srv_engine_config_default(struct srv_engine_config *c);

/* model is borrowed and must outlive the engine; its GLOBAL slice is the
 * global model (updated in place after each round). The config strings are
 * copied. The base file (if any) is read, hashed and cut into frames here. */
int srv_engine_new(const struct srv_engine_config *cfg, struct fl_model *model,
		   const struct srv_engine_io *io, struct srv_engine **out);
/* From cfg->checkpoint_path if the file exists (FL_OK if there is none or
 * no path). Call before the first connection; nothing changes on error. */
int srv_engine_restore(struct srv_engine *e);
/* Forgets every connection without calling io. NULL is a no-op. */
void srv_engine_free(struct srv_engine *e);

void srv_engine_on_connect(struct srv_engine *e, uint64_t conn, uint64_t now_ms);
/* One frame payload (without its 4-byte length). */
void srv_engine_on_frame(struct srv_engine *e, uint64_t conn, const uint8_t *payload, size_t len,
			 uint64_t now_ms);
/* The peer went away (or the transport closed it); unknown conns are ignored. */
void srv_engine_on_disconnect(struct srv_engine *e, uint64_t conn, uint64_t now_ms);
/* Deadlines, heartbeats, idle timeouts. Call at srv_engine_next_deadline. */
void srv_engine_tick(struct srv_engine *e, uint64_t now_ms);
/* Absolute ms of the next thing tick must handle; UINT64_MAX if none. */
uint64_t srv_engine_next_deadline(const struct srv_engine *e);

int srv_engine_finished(const struct srv_engine *e); /* all rounds done (Bye sent to everyone) */
int srv_engine_failed(const struct srv_engine *e, const char **why);
uint64_t srv_engine_round(const struct srv_engine *e); /* completed rounds */
void srv_engine_bytes(const struct srv_engine *e, uint64_t *up, uint64_t *down);
/* Connections the engine knows (any state). */
size_t srv_engine_conn_count(const struct srv_engine *e);
/* Bytes received from / sent to one known connection (frames with their
 * length prefix); 1 when conn is known, 0 when not (a flag, not an fl_err). */
int srv_engine_conn_bytes(const struct srv_engine *e, uint64_t conn, uint64_t *up, uint64_t *down);
void srv_engine_upload_stats(const struct srv_engine *e, struct srv_upload_stats *out);
/* The upload slots a staging budget of budget_bytes holds for updates of
 * nglobal floats (4 bytes each): budget / (4 nglobal), at least 1 and at
 * most SRV_UPLOAD_SLOTS_DEFAULT (the most when nglobal is 0). */
uint32_t srv_engine_upload_slots_for(uint64_t budget_bytes, size_t nglobal);

/* ---- aggregator trees (engine_relay.c, proto/PROTOCOL.md) ----
 * An engine accepts, from a client it selected and named in
 * srv_engine_set_tiers, a PartialSum + SumChunk frames instead of an Update: the exact fixed-point sums of a subtree,
 * folded into the round's accumulator with the subtree's weight and count
 * (srv_agg_fold), so a tree aggregates bit for bit what one flat
 * coordinator over the same clients would.
 *
 * A mid-tier engine (cfg.relay) is also a client of its parent: the
 * functions below are its side of that connection, which the caller's
 * transport carries. On the parent's Welcome it checks that the parent's
 * model (built-in name or description SHA-256, config text, loha base) and
 * seed are its own (else refused: the caller should stop). A RoundTask with
 * the global tensors becomes a round for every ready client of its own with
 * the parent's training settings verbatim and a deadline before the
 * parent's; when all reported, or at that deadline, it sends the partial
 * sum of what it got (an empty one when nothing came: the parent counts a
 * dropout) and waits for the next task. An EvalTask goes to its evaluating
 * clients the same way and comes back as one EvalResult for the subtree.
 * Bye("done") from the parent ends the engine (Bye to its clients). No
 * server optimiser, no checkpoint runs on a mid-tier. */
/* The client ids (comma-separated) that may answer a task with a partial
 * sum: the mid-tiers under this node. A partial sum from any other client
 * is refused (FL_EAUTH), since its weight may reach 2^62 where an update's
 * is at most 2^32. NULL or "" = none (the default). Copied; FL_EINVAL for a
 * list with an invalid id. With e NULL the list is only checked. */
int srv_engine_set_tiers(struct srv_engine *e, const char *ids);

struct srv_relay_io {
	void *ctx;
	/* Queues a whole frame to the parent; takes over one reference. */
	int (*send)(void *ctx, struct fl_buf *frame);
};
/* node_id is the client id this node gives its parent (copied). */
int srv_engine_relay_start(struct srv_engine *e, const char *node_id,
			   const struct srv_relay_io *io);
/* The upstream connection is up: Hello. */
void srv_engine_relay_on_connect(struct srv_engine *e, uint64_t now_ms);
/* One frame payload from the parent. FL_OK, or an error (fl_error_msg):
 * the caller closes the upstream connection (and reconnects unless
 * srv_engine_relay_refused). */
int srv_engine_relay_on_frame(struct srv_engine *e, const uint8_t *payload, size_t len,
			      uint64_t now_ms);
void srv_engine_relay_on_disconnect(struct srv_engine *e, uint64_t now_ms);
/* Heartbeat to the parent when nothing was sent for its heartbeat_ms. */
void srv_engine_relay_tick(struct srv_engine *e, uint64_t now_ms);
/* 1 when the parent has been silent for its idle_timeout_ms. */
int srv_engine_relay_idle_expired(const struct srv_engine *e, uint64_t now_ms);
/* 1 when min_available of its own clients are ready to train. */
int srv_engine_relay_ready(const struct srv_engine *e);
/* 1 once the parent's model or seed was found not to be this node's. */
int srv_engine_relay_refused(const struct srv_engine *e);
/* Ends the engine as failed (e.g. its upstream link gave up). */
void srv_engine_relay_fail(struct srv_engine *e, const char *why);

#endif
