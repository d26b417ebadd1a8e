/* engine_impl.h - the round engine's internal state, shared by engine.c
 * (lifecycle, connections, sending), engine_conn.c (incoming frames) and
 * engine_round.c (selection, aggregation, evaluation, timers). Not part of
 * the public API. */
#ifndef SRV_ENGINE_IMPL_H
#define SRV_ENGINE_IMPL_H

#include "aggregate.h"
#include "engine.h"

#define SRV_CLIENT_ID_MAX FL_WIRE_CLIENT_ID_MAX
#define SRV_WHY_MAX 256
#define SRV_NDTYPES 4

enum srv_conn_state {
	SRV_CONN_NEW = 0, /* only Hello accepted */
	SRV_CONN_READY,   /* welcomed, idle */
	SRV_CONN_TASKED,  /* task of the current attempt sent, update owed */
	SRV_CONN_LATE,    /* missed a deadline: not selectable; its update is refused */
};

struct srv_conn {
	uint64_t id;
	enum srv_conn_state state;
	char client_id[SRV_CLIENT_ID_MAX + 1];
	enum fl_wire_dtype dtype; /* session encoding */
	int can_eval;
	/* Welcomed without our base (loha): not selectable until its
	 * BaseRequest is served (the base frames then precede any task) or it
	 * sends anything else (it found the base itself). */
	int needs_base;
	/* Welcomed without the model description inline: not selectable until
	 * its fetch is served or it sends anything else (it had the model). */
	int needs_desc;
	uint64_t last_rx_ms;
	uint64_t bytes_up, bytes_down;
	/* the update being received (TASKED with uploading set) */
	uint64_t task_round;
	int uploading;
	uint64_t upd_examples;
	double upd_loss, upd_acc;
	int has_loss, has_acc;
	/* the client's held-out samples after its local training, if sent */
	double upd_hold_loss, upd_hold_acc;
	uint64_t upd_hold_n;
	float *staging; /* its upload slot's buffer, or its own when slots are unbounded */
	int32_t slot;   /* the upload slot it holds, -1 for none */
	int parked;     /* at its Update header, waiting for a slot (engine_upload.c) */
	int discarding; /* parked when its attempt ended: its update is read, not used */
	struct fl_wire_rx *rx;
	/* the idle list (engine_upload.c) */
	struct srv_conn *lru_prev, *lru_next;
	int lru_in;
	size_t idx; /* position in srv_engine.conns */
	/* last completed update (duplicate detection) */
	uint64_t done_round;
	int done_attempt;
	int eval_pending;
};

enum srv_phase {
	SRV_PHASE_WAIT = 0, /* waiting for clients to start (or retry) a round */
	SRV_PHASE_TRAIN,    /* tasks out, collecting updates */
	SRV_PHASE_EVAL,     /* evaluation tasks out, collecting results */
	SRV_PHASE_DONE,
	SRV_PHASE_FAILED,
};

/* An open-addressing index of connections (engine_map.c): by id, or by
 * client id (by_name) for the welcomed ones. */
struct srv_conn_map {
	struct srv_conn **t;
	size_t cap, n;
	int by_name;
};

/* The bounded pool of upload slots and the queue of parked uploads. */
struct srv_uploads {
	uint32_t nslots; /* 0 = one buffer per uploading client */
	float **buf;     /* nslots staging buffers of nglobal floats, made on first use */
	uint32_t *free_idx, nfree;
	uint64_t *park; /* FIFO ring of parked connection ids */
	size_t park_head, park_n, park_cap;
	uint32_t in_use, peak;
	uint64_t parks;     /* uploads that had to wait for a slot */
	int frame_parked;   /* the frame being handled parked its connection */
	float *scratch;     /* where discarded updates are read (nglobal floats) */
	uint64_t discarded; /* updates read and discarded: parked past their deadline */
};

#define SRV_UPLOAD_PARKED 1 /* srv_eng_upload_begin: the connection waits */

struct srv_frames {
	struct fl_buf **f;
	size_t n;
};

struct srv_engine {
	struct srv_engine_config cfg; /* strings point at the copies below */
	char *optimizer, *checkpoint_path, *config_json;
	struct fl_model *model;
	struct srv_engine_io io;
	size_t nglobal;
	struct fl_wire_tensor *gt; /* the K global tensors, model order, data = NULL */
	size_t *goff;              /* their offsets in the parameter buffer */
	size_t K;
	struct srv_agg *agg;
	struct srv_optim opt;
	float *result; /* nglobal floats */

	struct srv_conn **conns;
	size_t nconns, cap;
	struct srv_conn_map by_id, by_name;
	struct srv_conn *lru_head, *lru_tail; /* by last frame, oldest first */
	struct srv_uploads up;

	enum srv_phase phase;
	uint64_t done; /* completed rounds; the current round is done + 1 */
	int attempt;
	uint64_t deadline; /* of the training or evaluation phase */
	uint64_t round_start_ms;
	int round_started;
	uint64_t now;
	uint64_t next_hb;
	struct srv_frames task[SRV_NDTYPES], evalf[SRV_NDTYPES];

	/* current attempt */
	int selected, reported, dropped, rejected, outstanding;
	double loss_sum, acc_sum;
	uint64_t loss_w, acc_w, examples;
	double hold_loss_sum, hold_acc_sum;
	uint64_t hold_w;
	int hold_clients;
	/* evaluation */
	int eval_clients, eval_outstanding;
	double eval_loss_sum, eval_acc_sum;
	uint64_t eval_w;
	struct srv_round_report report; /* filled at aggregation, sent after eval */

	uint64_t bytes_up, bytes_down, round_up, round_down;

	int has_base;
	uint8_t base_sha[32];
	uint64_t base_bytes;
	struct srv_frames base;

	/* the model description (fl_model_description(model)->text) when the
	 * model is not a built-in network */
	int has_desc;
	uint8_t desc_sha[32];
	uint64_t desc_bytes;
	int desc_inline; /* small enough for the Welcome */
	struct srv_frames descf;

	/* aggregator trees: partial sums being received, and for a mid-tier
	 * its upstream state (engine_relay.c); NULL until first needed */
	struct srv_relay *relay;

	char why[SRV_WHY_MAX];
};

/* engine.c */
struct srv_conn *srv_eng_find(struct srv_engine *e, uint64_t id);
/* Sends and counts one frame (ownership of one reference passes). */
void srv_eng_send(struct srv_engine *e, struct srv_conn *c, struct fl_buf *frame);
void srv_eng_send_env(struct srv_engine *e, struct srv_conn *c, const fl_envelope *env);
void srv_eng_send_frames(struct srv_engine *e, struct srv_conn *c, const struct srv_frames *fr);
void srv_eng_send_bye(struct srv_engine *e, struct srv_conn *c, const char *reason);
void srv_eng_send_heartbeat(struct srv_engine *e, struct srv_conn *c);
void srv_eng_frames_free(struct srv_frames *fr);
/* Forgets c (counted dropped when it owed an update), then io->close. */
void srv_eng_drop(struct srv_engine *e, struct srv_conn *c);
/* Error{-err, msg} to c (nothing else). */
void srv_eng_send_error(struct srv_engine *e, struct srv_conn *c, int err, const char *msg);
/* Error{-err, message} to c, then dropped (counted rejected when it owed
 * an update). Returns err. */
int srv_eng_reject(struct srv_engine *e, struct srv_conn *c, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Bye to everyone, every connection closed, phase set (DONE or FAILED). */
void srv_eng_fail(struct srv_engine *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* engine_map.c */
int srv_map_put(struct srv_conn_map *m, struct srv_conn *c); /* FL_OK or FL_ENOMEM */
struct srv_conn *srv_map_get_id(const struct srv_conn_map *m, uint64_t id);
struct srv_conn *srv_map_get_name(const struct srv_conn_map *m, const char *name);
void srv_map_del(struct srv_conn_map *m, const struct srv_conn *c);
void srv_map_free(struct srv_conn_map *m);

/* engine_upload.c */
int srv_eng_uploads_init(struct srv_engine *e, uint32_t slots);
void srv_eng_uploads_free(struct srv_engine *e);
/* Forgets every parked connection (the engine is closing them all). */
void srv_eng_park_clear(struct srv_engine *e);
/* A staging buffer and a receiver for c's update: FL_OK, SRV_UPLOAD_PARKED
 * (every slot busy: c parked, io->pause called; the header frame comes
 * again after io->resume), or a negative fl_err. */
int srv_eng_upload_begin(struct srv_engine *e, struct srv_conn *c);
/* Frees a connection's upload state (receiver; its slot goes to the oldest
 * parked connection, or back to the pool). */
void srv_eng_upload_free(struct srv_engine *e, struct srv_conn *c);
/* A parked c stops waiting (its attempt ended): io->resume, so its header
 * comes again and, c discarding, its update is read and discarded. */
void srv_eng_unpark(struct srv_engine *e, struct srv_conn *c);
/* c's frame arrived: it moves to the end of the idle list. */
void srv_eng_lru_touch(struct srv_engine *e, struct srv_conn *c);
/* A discarding connection (parked when its attempt ended; srv_eng_upload_begin
 * reads its update into a shared scratch buffer, no slot) read it whole:
 * READY again, counted. */
void srv_eng_discard_done(struct srv_engine *e, struct srv_conn *c);
void srv_eng_lru_unlink(struct srv_engine *e, struct srv_conn *c);

/* engine_conn.c */
void srv_eng_handle(struct srv_engine *e, struct srv_conn *c, const fl_envelope *env);

/* engine_round.c */
/* Moves the round machine forward after any event. */
void srv_eng_advance(struct srv_engine *e);
/* A completed update of c: fold it (or reject c). */
void srv_eng_update_complete(struct srv_engine *e, struct srv_conn *c);
void srv_eng_timers(struct srv_engine *e);
uint64_t srv_eng_next_deadline(const struct srv_engine *e);
/* The bookkeeping of an update already folded into e->agg: metrics,
 * counts, c back to READY. */
void srv_eng_update_account(struct srv_engine *e, struct srv_conn *c);
/* Connections idle and holding the base (selectable for a task). */
size_t srv_eng_ready_count(const struct srv_engine *e);
/* Clients still owing an update of the running attempt become LATE. */
void srv_eng_end_attempt(struct srv_engine *e);
void srv_eng_free_task_frames(struct srv_engine *e);
/* e->report from the attempt that ended (round t, 1-based). */
void srv_eng_report_attempt(struct srv_engine *e, uint64_t t);
/* Completes e->report (evaluation, bytes, time), hands it to io.on_round,
 * back to WAIT for the next round. */
void srv_eng_emit_report(struct srv_engine *e);

/* engine_relay.c */
/* the most examples a mid-tier's EvalResult may sum (a client's: 2^32) */
#define SRV_EVAL_TIER_MAX ((uint64_t)1 << 62)
void srv_eng_relay_free(struct srv_engine *e);
/* 1 when the client id is one of the mid-tiers (srv_engine_set_tiers). */
int srv_eng_relay_is_tier(const struct srv_engine *e, const char *client_id);
/* PartialSum / SumChunk from c (any engine). */
void srv_eng_relay_partial(struct srv_engine *e, struct srv_conn *c,
			   const Fedloha__V1__PartialSum *p);
void srv_eng_relay_sum_chunk(struct srv_engine *e, struct srv_conn *c,
			     const Fedloha__V1__SumChunk *ch);
/* Drops the partial sum being received from conn (it closed or left). */
void srv_eng_relay_forget(struct srv_engine *e, uint64_t conn);
/* Drops every partial sum being received (the attempt ended). */
void srv_eng_relay_end_attempt(struct srv_engine *e);
/* 1 while a partial sum from conn is being received. */
int srv_eng_relay_receiving(const struct srv_engine *e, uint64_t conn);
/* Mid-tier: 1 when a round for the parent's task should start now (the
 * task installed as the global model and round); 0 when no task is
 * pending, or none of its clients is ready yet. */
int srv_eng_relay_take_task(struct srv_engine *e);
/* Mid-tier: a task that found no client ready waits until its deadline,
 * then goes up as an empty partial sum. */
void srv_eng_relay_timers(struct srv_engine *e);
uint64_t srv_eng_relay_deadline(const struct srv_engine *e);
/* Mid-tier: the parent said Bye("done"). */
int srv_eng_relay_done(const struct srv_engine *e);
/* Mid-tier: the parent's training settings into a task. */
void srv_eng_relay_settings(const struct srv_engine *e, Fedloha__V1__TrainSettings *ts);
/* Evaluation tasks to every ready client that evaluates; phase EVAL. */
void srv_eng_start_eval(struct srv_engine *e);
/* Mid-tier: its clients' evaluation ended; the EvalResult goes up. */
void srv_eng_relay_eval_done(struct srv_engine *e);
/* Mid-tier: the attempt ended; the partial sum goes up, a report out. */
void srv_eng_relay_forward(struct srv_engine *e);

#endif
