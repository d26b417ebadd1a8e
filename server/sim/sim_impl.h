/* sim_impl.h - the simulator's internals shared by sim.c (set-up, data,
 * keys, teardown), sim_loop.c (the coordinator ends, the in-memory transport
 * over the secure channel and the event loop), sim_cend.c (the client ends),
 * sim_mpi.c (client ends on other MPI ranks), sim_pool.c (worker threads)
 * and sim_init.c (the initial model). Not part of the API. */
#ifndef SRV_SIM_IMPL_H
#define SRV_SIM_IMPL_H

#include "channel.h"
#include "engine.h"
#include "errors.h"
#include "identity.h"
#include "session.h"
#include "sim.h"
#include "train.h"
#include "wire.h"

#include <pthread.h>

/* ---- worker pool (sim_pool.c) ---- */

/* One unit of work; embedded in its owner, never allocated by the pool. */
struct sim_task {
	void (*run)(struct sim_task *t); /* on a worker */
	uint64_t seq;                    /* ordered tasks: handled in seq order */
	int ordered;
	struct sim_task *next;
};

struct sim_pool {
	pthread_mutex_t mu;
	pthread_cond_t work, done_cv;
	struct sim_task *head, *tail; /* FIFO of queued tasks */
	struct sim_task *done;        /* finished tasks, any order */
	int stop;
	int running; /* queued + running */
	pthread_t *threads;
	int nthreads;
};

int sim_pool_init(struct sim_pool *p, int threads);
/* Joins the workers (after the queue drained). */
void sim_pool_destroy(struct sim_pool *p);
void sim_pool_submit(struct sim_pool *p, struct sim_task *t);
/* Finished tasks (a list linked by next, any order), waiting for at least
 * one when `wait` and work is outstanding; NULL when none. */
struct sim_task *sim_pool_take_done(struct sim_pool *p, int wait);
/* Tasks submitted and not yet taken back. */
int sim_pool_outstanding(struct sim_pool *p);

/* ---- the simulation ---- */

/* The wire carries channel bytes: handshake messages and records (in
 * insecure mode the frames themselves). */
enum sim_ev_kind {
	SIM_EV_DOWN = 0,   /* bytes coordinator -> client */
	SIM_EV_UP,         /* bytes client -> coordinator */
	SIM_EV_CLOSE_DOWN, /* the engine closed the conn: the client sees it after the frames */
	SIM_EV_CLOSE_UP,   /* the client closed the conn: the engine sees it after the frames */
};

struct sim_ev {
	enum sim_ev_kind kind;
	int client;
	uint64_t conn;
	struct fl_buf *buf;
	struct sim_ev *next;
};

struct sim;

/* ---- the client end of a virtual client (sim_cend.c) ----
 *
 * Every virtual client has a coordinator end (struct sim_client, rank 0:
 * the engine's side of the channel) and a client end (struct sim_cend, on
 * the rank that owns the client: the session, its side of the channel, its
 * training job). The loop performs an operation on the client end and gets
 * back what it did, in order (its "effects"); the loop applies them where
 * the in-process code used to act, so the events are the same whether the
 * client end lives in this process or on another MPI rank. */

enum sim_op {
	SIM_OP_CONNECT = 1, /* a new connection: the first handshake bytes */
	SIM_OP_UP,          /* the channel is up at once (insecure): the session connects */
	SIM_OP_DOWN,        /* bytes from the coordinator */
	SIM_OP_CLOSE_DOWN,  /* the coordinator closed the connection (EOF) */
	SIM_OP_DISCONNECT,  /* the connection is gone (the session is told) */
	SIM_OP_JOB_DONE,    /* the job finished and its turn came */
	SIM_OP_END,         /* MPI: the configuration's run is over */
};

enum sim_fx_kind {
	SIM_FX_UP = 1,     /* buf: channel bytes to the coordinator */
	SIM_FX_CLOSE_UP,   /* the client closed the connection */
	SIM_FX_SUBMIT,     /* a job was submitted (it runs on the owner's pool) */
	SIM_FX_ERROR,      /* buf: a client error (counts towards retirement) */
	SIM_FX_NOTE,       /* buf: a client error that is only recorded */
	SIM_FX_DROP,       /* the client dropped the connection */
	SIM_FX_VANISH,     /* the client vanished mid-round */
	SIM_FX_CHAN_ERROR, /* a channel error (failed record, unclean close) */
	SIM_FX_FAIL,       /* buf: the simulation cannot go on */
};

struct sim_fx {
	enum sim_fx_kind kind;
	struct fl_buf *buf; /* UP: the bytes; ERROR, NOTE, FAIL: the message (no NUL) */
};

/* The effects of one operation, plus the client end's state after it. */
struct sim_fxlist {
	struct sim_fx *v;
	int n, cap;
	int nomem;    /* an effect could not be recorded */
	int job;      /* a job is in flight (running or vanishing) */
	int finished; /* the session is finished (Bye "done") */
	int ready;    /* CONNECT: the client end's channel is already established */
};

struct sim_cend {
	struct sim *sim;
	int index;
	char id[24];
	struct cli_session *s;
	uint64_t conn;      /* current connection, 0 = offline */
	int last_task_eval; /* the last task header delivered was an EvalTask */
	struct fl_rng drop_rng;
	struct cli_job *job; /* the job in flight (or vanishing), else NULL */
	int vanish;          /* vanish once the current delivery returns */
	struct sim_task task;
	struct fl_identity *key; /* the client's long-term key (secure mode) */
	struct fl_channel *cch;  /* the client end of the channel */
	struct fl_frame_reader crd;
	int cli_up;            /* the channel is established and the session told */
	struct sim_fxlist *fx; /* the running operation's effects; NULL = discarded */
};

/* Builds the client ends of the clients this rank owns (i % nranks ==
 * rank): keys, sessions, dropout streams. */
int sim_cends_setup(struct sim *s);
void sim_cends_free(struct sim *s);
/* Runs op on the client end (conn: the connection it is about; data:
 * SIM_OP_DOWN's bytes; s->now set by the caller); the effects go to fx. */
void sim_cend_op(struct sim_cend *ce, enum sim_op op, uint64_t conn, const uint8_t *data,
		 size_t len, struct sim_fxlist *fx);
/* A pool task of a client end (NULL: another task, e.g. an evaluation). */
struct sim_cend *sim_cend_of_task(struct sim_task *t);
void sim_fx_free(struct sim_fxlist *fx);
/* Appends an effect, taking buf (which may be NULL); nomem on failure. */
void sim_fx_add(struct sim_fxlist *fx, enum sim_fx_kind kind, struct fl_buf *buf);
/* Appends an effect carrying a message. */
void sim_fx_msg(struct sim_fxlist *fx, enum sim_fx_kind kind, const char *msg);
/* The effects and state of fx as one message (malloc'd, *len bytes; NULL
 * when out of memory), and back: appended to fx (FL_EFORMAT with a message
 * when the bytes do not parse). UP, ERROR, NOTE and FAIL always carry a
 * buffer, an empty message as an empty one. */
uint8_t *sim_fx_encode(const struct sim_fxlist *fx, size_t *len);
int sim_fx_decode(const uint8_t *p, size_t n, struct sim_fxlist *fx);

/* ---- the coordinator end of a virtual client (sim_loop.c, rank 0) ---- */

struct sim_client {
	struct sim *sim;
	int index;
	char id[24];
	uint64_t conn;              /* current connection, 0 = offline */
	int engine_closed;          /* the engine forgot conn: frames up are dropped */
	int errors;                 /* consecutive session errors */
	int retired;                /* too many errors: never reconnected */
	int job, finished;          /* the client end's, after its last operation */
	struct sim_task ticket;     /* the job in flight: its seq, then held until its turn */
	int held;                   /* the ticket is in sim.held */
	struct fl_channel *sch;     /* the coordinator end of the channel */
	struct fl_frame_reader srd; /* plaintext -> frames */
	int srv_up;                 /* the channel is established and the engine told */
};

/* A copy of the global model evaluated on the test set after a round. */
struct sim_eval {
	struct sim *sim;
	struct fl_model *model;
	struct fl_trainer *trainer;
	uint64_t round;
	int busy, err;
	double loss, accuracy;
	char errmsg[FL_ERROR_MSG_MAX];
	struct sim_task task;
};

#define SIM_CLIENT_ERRORS_MAX 3

struct sim {
	const struct srv_sim_config *cfg;
	const struct srv_sim_data *data;
	struct srv_sim_result *res;
	int pfed; /* accuracy from the federated evaluation */

	struct fl_model *model; /* the engine's */
	struct fl_peft_config *peft;
	char *config_json;
	struct srv_engine *engine;

	struct sim_client *clients; /* rank 0: every coordinator end */
	struct sim_cend *cends;     /* every rank: the client ends it owns */
	int nclients;
	int rank, nranks;          /* MPI (0 and 1 in a single process) */
	struct fl_identity *coord; /* the coordinator's key (secure mode) */
	uint8_t *client_pks;       /* the admitted client keys, sorted (secure mode) */
	uint64_t next_conn;
	uint64_t now; /* virtual ms */

	struct sim_ev *head, *tail; /* the wire, FIFO */
	struct sim_pool pool;
	int pool_up;
	uint64_t next_seq, deliver_seq;
	struct sim_task *held; /* finished client jobs (tickets) waiting for their turn */

	struct sim_eval **evals;
	int nevals;

	struct srv_sim_row *rows; /* capacity cfg->train.rounds */
	int *row_ready;           /* report in (bit 1), accuracy in (bit 2) */
	size_t rows_emitted;
	double t0;
	int failed;
	char why[FL_ERROR_MSG_MAX + 128];
};

/* sim_loop.c */
void sim_io_setup(struct sim *s, struct srv_engine_io *eio);
/* Connects every client and runs until the engine finished (FL_OK) or
 * failed / stalled (an error with a message). */
int sim_loop_run(struct sim *s);
void sim_events_free(struct sim *s);
/* Frees c's end of the channel and its frame reader. */
void sim_conn_release(struct sim_client *c);
double sim_wall_seconds(void);

/* sim_mpi.c: the client ends of other ranks (the single-process build has
 * stubs: one rank). */
/* Rank 0: runs op on client's end at rank owner (once per buffer when
 * nbufs > 0, e.g. consecutive SIM_OP_DOWN deliveries) and waits for the
 * effects, in order. */
void sim_mpi_call(struct sim *s, int owner, int client, enum sim_op op, uint64_t conn,
		  struct fl_buf *const *bufs, int nbufs, struct sim_fxlist *fx);
/* Rank 0: the clients whose remote jobs finished since the last call,
 * through done(s, client); how many. */
int sim_mpi_take_done(struct sim *s, void (*done)(struct sim *s, int client));
/* Rank 0: the run is over (every other rank leaves sim_mpi_serve). */
void sim_mpi_end(struct sim *s);
/* Ranks > 0: serves rank 0's operations on this rank's client ends until
 * the end of the run. */
void sim_mpi_serve(struct sim *s);
/* One wait of a polling loop: nothing the first 2000 times, then 64
 * yields, then sleeps of 16-64 us for a few ms, then of 256 us and 1 ms;
 * *n = 0 starts over. */
void sim_backoff(unsigned *n);

/* sim_config.c */
/* The values of c are usable with the data d (FL_EINVAL naming the first
 * that is not). */
int sim_check_config(const struct srv_sim_config *c, const struct srv_sim_data *d);
/* The model every party starts from: cfg->desc when set (the data d must
 * fit it: fl_model_check_data), else the built-in cfg->arch for d's
 * samples and classes. */
int sim_model_new(const struct srv_sim_config *cfg, const struct fl_dataset *d,
		  const struct fl_peft_config *peft, uint64_t seed, int max_batch,
		  struct fl_model **out);

/* sim_init.c */
/* 1 when the --target-modules value is "all-linear" (any case): every
 * linear layer but the output layer, as PEFT's string form. */
int sim_targets_all_linear(const char *targets);
/* Every name of cfg->modules_to_save (loha) and of cfg->targets (not
 * dense, not all-linear) is a weight layer of m, in full or as its last
 * dotted components (PEFT's suffix rule). */
int sim_check_modules_to_save(const struct srv_sim_config *cfg, const struct fl_model *m);
/* The initial global model from cfg->init_path (fl_model_load_init, strict:
 * every key and shape must match), then cfg->base_path's frozen base when
 * it is another file. */
int sim_load_init(struct fl_model *m, const struct srv_sim_config *cfg);

/* sim.c */
/* The PEFT-format JSON every party builds the model from ("" for dense)
 * and its parsed form (NULL for dense). */
int sim_make_config(const struct srv_sim_config *cfg, char **json, struct fl_peft_config **peft);
/* The seeded identity of party `stream` (0 = the coordinator, i + 1 =
 * client i). */
int sim_seeded_identity(uint64_t seed, uint64_t stream, struct fl_identity **out);
/* The coordinator's channel authoriser: admits the simulation's client keys. */
int sim_authorize(void *ctx, const uint8_t pk[FL_PUBKEY_BYTES], const uint8_t *token, char *reason,
		  size_t reason_cap);
/* The round's report arrived (from the engine's on_round). */
void sim_on_report(struct sim *s, const struct srv_round_report *r);
/* A central evaluation finished (on the loop thread). */
void sim_on_eval_done(struct sim *s, struct sim_eval *ev);

/* sim_local.c: the local-only baseline (cfg->local_only), checked by
 * srv_sim_run. */
int sim_local_run(const struct srv_sim_config *cfg, const struct srv_sim_data *d,
		  struct srv_sim_result **out);

#endif
