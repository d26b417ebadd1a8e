/* sim_impl.h - the simulator's internals shared by sim.c (set-up, data,
 * keys, teardown), sim_loop.c (the in-memory transport over the secure
 * channel and the event loop), sim_pool.c (worker threads) and sim_init.c
 * (the initial model). Not part of the API. */
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

struct sim_client {
	struct sim *sim;
	int index;
	char id[24];
	struct cli_session *s;
	uint64_t conn;      /* current connection, 0 = offline */
	int engine_closed;  /* the engine forgot conn: frames up are dropped */
	int last_task_eval; /* the last task header delivered was an EvalTask */
	struct fl_rng drop_rng;
	struct cli_job *job; /* the job in flight (or vanishing), else NULL */
	int vanish;          /* vanish once the current delivery returns */
	int errors;          /* consecutive session errors */
	int retired;         /* too many errors: never reconnected */
	struct sim_task task;
	/* the secure channel of the current connection, both ends */
	struct fl_identity *key;         /* the client's long-term key (secure mode) */
	struct fl_channel *cch, *sch;    /* client end, coordinator end */
	struct fl_frame_reader crd, srd; /* plaintext -> frames at each end */
	int cli_up, srv_up; /* that end's channel is established (session / engine told) */
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

	struct sim_client *clients;
	int nclients;
	struct fl_identity *coord; /* the coordinator's key (secure mode) */
	uint8_t *client_pks;       /* the admitted client keys, sorted (secure mode) */
	uint64_t next_conn;
	uint64_t now; /* virtual ms */

	struct sim_ev *head, *tail; /* the wire, FIFO */
	struct sim_pool pool;
	int pool_up;
	uint64_t next_seq, deliver_seq;
	struct sim_task *held; /* finished ordered tasks waiting for their turn */

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
void sim_io_setup(struct sim *s, struct srv_engine_io *eio, struct cli_session_io *cio);
/* Connects every client and runs until the engine finished (FL_OK) or
 * failed / stalled (an error with a message). */
int sim_loop_run(struct sim *s);
void sim_events_free(struct sim *s);
/* Frees c's channels and frame readers. */
void sim_conn_release(struct sim_client *c);
double sim_wall_seconds(void);

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
