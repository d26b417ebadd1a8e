/* engine_fake.h - a test harness for the round engine: a fake transport
 * (frames queued per connection, closes recorded, virtual time) and fake
 * clients that speak raw envelopes through common/wire/wire.h. Not a library. */
#ifndef FL_ENGINE_FAKE_H
#define FL_ENGINE_FAKE_H

#include "engine.h"
#include "wire.h"

#define FAKE_MAX_CLIENTS 32
#define FAKE_MAX_REPORTS 32

struct fake_client {
	uint64_t conn;
	char id[80];
	struct fl_buf **q; /* frames the engine sent, not yet processed */
	size_t nq, cap;
	int closed; /* the engine called io->close */
	int welcomed;
	enum fl_wire_dtype dtype;
	uint32_t error_code; /* last Error received (0 = none) */
	char error_msg[256];
	int byes;
	char bye[128];
	int heartbeats, tasks, evals, base_chunks;
	uint64_t base_got;       /* bytes of BaseChunk data received */
	int base_chunks_at_task; /* base_chunks when the first RoundTask arrived (-1 = none yet) */
	uint8_t base_sha[32];    /* Welcome.model.base_sha256 */
	/* the task / eval being received */
	struct fl_wire_rx *rx;
	float *global;
	uint64_t task_round;
	int rx_is_eval, rx_done;
	/* behaviour */
	uint64_t num_examples;
	float value, mix; /* update = mix * received + value */
	int hold;         /* do not answer tasks (the test answers by hand) */
	int drop_on_task; /* disconnect when a task arrives */
	double loss;      /* train_loss metric and eval loss */
	int updates_sent;
	/* backpressure: frames the engine did not consume (paused) or that
	 * came after, delivered again on resume */
	int paused, pause_now, resume_queued;
	struct fl_buf **held;
	size_t nheld, heldcap;
};

struct fake_net {
	struct srv_engine *e;
	struct fl_model *model;
	int owns_model; /* fake_net_own: fake_net_free frees model */
	size_t nglobal;
	uint64_t now;
	struct fake_client *cl[FAKE_MAX_CLIENTS];
	int n;
	uint64_t next_conn;
	uint64_t sent_bytes, recv_bytes; /* as seen by the fake transport */
	struct srv_round_report rep[FAKE_MAX_REPORTS];
	int nrep;
	struct fake_client *resq[FAKE_MAX_CLIENTS]; /* resumed, not yet delivered again */
	int nres;
	int pauses, resumes; /* io calls seen */
};

/* The engine tests' configuration: the defaults with 3 clients to start a
 * round, min_report updates to end it, a 10 s round timeout, no heartbeat
 * or idle timeout, 2 KiB chunks and 64 KiB frames. */
void fake_engine_config(struct srv_engine_config *c, uint64_t rounds, uint64_t seed,
			int min_report);
/* The engine tests' model: an mlp over 1x2x2 inputs, 3 classes, from seed;
 * a failed check (and NULL) when it cannot be built. */
struct fl_model *fake_small_model(uint64_t seed);
/* Builds the engine over model (borrowed). NULL on failure (message in
 * fl_error_msg). */
struct fake_net *fake_net_new(struct fl_model *model, const struct srv_engine_config *cfg);
/* Builds the engine over its own fake_small_model(seed), which
 * fake_net_free frees; aborts, after a failed check, when it cannot. */
struct fake_net *fake_net_own(uint64_t seed, const struct srv_engine_config *cfg);
void fake_net_free(struct fake_net *net);

/* fake_net_new with io pause / resume (needed when cfg->upload_slots > 0). */
struct fake_net *fake_net_new_bp(struct fl_model *model, const struct srv_engine_config *cfg);

/* A new connection; no Hello yet. */
struct fake_client *fake_connect_raw(struct fake_net *net, const char *id);
/* Connects and sends a valid Hello (capabilities "eval" plus caps, may be NULL). */
struct fake_client *fake_connect(struct fake_net *net, const char *id, uint64_t num_examples,
				 float value, const char *caps);
void fake_send_hello(struct fake_net *net, struct fake_client *c, uint32_t version, const char *id,
		     const char *caps, enum fl_wire_dtype preferred);
void fake_send_env(struct fake_net *net, struct fake_client *c, const fl_envelope *env);
void fake_send_raw(struct fake_net *net, struct fake_client *c, const uint8_t *p, size_t n);
void fake_disconnect(struct fake_net *net, struct fake_client *c);

void fake_send_update_header(struct fake_net *net, struct fake_client *c, uint64_t round,
			     uint64_t num_examples, uint32_t num_tensors);
/* One f32 TensorChunk (data: count floats). */
void fake_send_chunk(struct fake_net *net, struct fake_client *c, uint64_t round, const char *name,
		     const int64_t *shape, int ndim, enum fl_wire_dtype dtype, uint64_t offset,
		     const void *data, size_t bytes, int last);
/* The full update of c for `round`: header + every tensor from `values`
 * (nglobal floats), in c's session dtype. */
void fake_send_update(struct fake_net *net, struct fake_client *c, uint64_t round,
		      uint64_t num_examples, const float *values);

/* The header (FAKE_HEADER), the tensor chunks (FAKE_CHUNKS) or both of
 * that update. */
#define FAKE_HEADER 1
#define FAKE_CHUNKS 2
void fake_send_update_parts(struct fake_net *net, struct fake_client *c, uint64_t round,
			    uint64_t num_examples, const float *values, int parts);

/* Answers the task (or evaluation) c last received completely. */
void fake_answer(struct fake_net *net, struct fake_client *c);
/* Processes every queued frame of every client (answers tasks unless
 * hold), until nothing is left. */
void fake_pump(struct fake_net *net);
/* Moves time to t and ticks. */
void fake_tick_at(struct fake_net *net, uint64_t t);
/* Pumps and ticks at the engine's deadlines until it finishes or fails,
 * or virtual time passes limit_ms. Returns 1 when finished. */
int fake_run(struct fake_net *net, uint64_t limit_ms);

#endif
