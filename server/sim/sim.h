/* sim.h - fedloha-sim's core: federated rounds simulated in one process with
 * the same round engine (engine.h) and the same client sessions
 * (client/session/session.h) as the daemons. Every message is encoded into a frame
 * and decoded from it exactly as on a socket; frames travel through
 * in-memory queues, so the byte counts are the real ones. Local training
 * and evaluation jobs run on a pool of worker threads; their completions
 * are handled on the calling thread in submission order, and the engine
 * runs on virtual time, so a run is a function of its seed (whatever the
 * thread count) apart from the wall-clock seconds it reports.
 *
 * After every round the global model is evaluated centrally on the test
 * set (a copy of the engine's model, on the pool). With federated
 * evaluation (fed_eval; always for pfedpara) every client also evaluates
 * the model it runs on its held-out samples (global; pfedpara: global + its
 * own local tensors) and that mean is the round's headline accuracy; for
 * pfedpara the global model is no client's model and has no central
 * evaluation. The local-only baseline (sim_local.c) trains one model per
 * client without any communication, as a reference for personalisation.
 *
 * Every virtual connection runs over the real secure channel (channel.h)
 * unless config.secure is 0: the coordinator and every client have their
 * own Ed25519 key (derived from the seed), the coordinator admits exactly
 * the simulation's client keys, each client pins the coordinator's key;
 * the handshake runs when a client connects (and reconnects), and only
 * then do the engine and the session hear of the connection. Every frame
 * travels as one sealed record. Frame byte counts (rows, engine totals)
 * are the protocol's and do not change with the channel; the channel's
 * own totals are reported separately.
 *
 * Client dropout: a selected client vanishes, with probability p per task
 * (seeded), after receiving its task and before reporting; both ends see
 * the disconnect, and it reconnects (a new connection, Hello) once the
 * simulation is idle, i.e. for the next round.
 *
 * This module does not print (results and progress go through callbacks
 * and structs) and does not parse flags; sim_report.c writes result files
 * and tables, sim_main.c is the command line.
 */
#ifndef SRV_SIM_H
#define SRV_SIM_H

#include "dataset.h"
#include "engine_opts.h"
#include "optim.h"
#include "server_optim.h"
#include "partition.h"
#include "peft_config.h"
#include "wire.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SRV_SIM_LABEL_MAX 64
#define SRV_SIM_THREADS_MAX 256
#define SRV_SIM_TARGETS_MAX 16 /* targets the table shows */

/* ---- data: a training and a test set plus the clients' partition ---- */

struct srv_sim_data {
	struct fl_dataset *train, *test; /* owned, normalised with the training statistics */
	struct fl_partition *part;       /* owned; one entry per client */
};

/* Loads data set `name` (fl_dataset_load; NULL = fashion-mnist) from path
 * (NULL = the default folder), keeps the first `limit` training and
 * `test_limit` test samples (0 = all), normalises, and partitions the
 * training set with pc. */
int srv_sim_data_load(const char *name, const char *path, int limit, int test_limit,
		      const struct fl_partition_config *pc, struct srv_sim_data **out);
/* The same from data sets in memory; takes ownership of train and test
 * (also on failure). */
int srv_sim_data_wrap(struct fl_dataset *train, struct fl_dataset *test,
		      const struct fl_partition_config *pc, struct srv_sim_data **out);
void srv_sim_data_free(struct srv_sim_data *d); /* NULL is a no-op */

/* ---- one simulated configuration ---- */

struct srv_sim_row {
	uint64_t round; /* 1-based */
	/* The headline accuracy (what the table, targets and plot use): the
	 * central test set, except with federated evaluation (fed_eval,
	 * pfedpara, local-only), where it is fed_accuracy. */
	double accuracy, loss;
	/* The global model on the central test set (not for pfedpara, whose
	 * global model is no client's model, nor local-only). */
	int has_central;
	double central_accuracy, central_loss;
	/* Federated evaluation: the mean over the evaluating clients, weighted
	 * by their held-out samples, of the accuracy of the model each client
	 * runs (global; pfedpara: global + its own local tensors; local-only:
	 * its own model) on its held-out samples, right after aggregation
	 * (local-only: after its local training). */
	int has_fed;
	double fed_accuracy, fed_loss;
	/* The same measure taken by every reporting client right after its
	 * local training, before aggregation (the personalised model a client
	 * ends its round with): whenever clients hold samples out. */
	int has_post;
	double post_accuracy, post_loss;
	double train_loss, train_accuracy; /* clients' last local epoch, weighted */
	uint64_t bytes_up, bytes_down;     /* whole frames of this round (incl. retries) */
	uint64_t total_up, total_down;     /* cumulative */
	int selected, reported, dropped, attempts;
	double seconds; /* wall clock from the start of the run to this round's end */
};

struct srv_sim_config;

struct srv_sim_callbacks {
	void *ctx;
	/* Every frame on the in-memory wire, whole (4-byte length included),
	 * when it is queued (down: engine -> client) or delivered (up: client ->
	 * engine). May be NULL. */
	void (*on_frame)(void *ctx, int up, const uint8_t *frame, size_t len);
	/* A round's row is complete (its evaluation too); rows arrive in order.
	 * May be NULL. */
	void (*on_row)(void *ctx, const struct srv_sim_config *cfg, const struct srv_sim_row *row);
};

struct srv_sim_config {
	char label[SRV_SIM_LABEL_MAX]; /* "" = the parameterisation's name (+ "-dtype") */
	/* model */
	const char *arch; /* "2nn", "cnn", "mlp" */
	/* A model description (model_desc.h, borrowed) every party builds
	 * instead of the built-in `arch`; NULL = the built-in. */
	const struct fl_model_desc *desc;
	enum fl_peft_param param;
	double gamma; /* rank from gamma (fl_loha_rank_gamma, loha.h) unless rank > 0 */
	int rank;
	int tucker; /* convs in Tucker form (fedpara family) */
	/* Comma-separated layers to parameterise (PEFT target_modules, e.g.
	 * "fc1"); NULL = every weight layer but the output layer. The others
	 * stay dense and travel in full. Ignored by dense. */
	const char *targets;
	const char *base_path; /* loha: frozen base weights (safetensors), or NULL */
	/* The initial global model from a PyTorch-named safetensors file (e.g.
	 * the model.safetensors of a `fedloha-client train --out` folder), or
	 * NULL for the seeded random initialisation. Dense: every weight and
	 * bias. Loha: every transmitted dense tensor (modules_to_save), the
	 * frozen base coming from base_path, which must then be set (it may be
	 * the same file). The factorised kinds refuse it. */
	const char *init_path;
	/* loha: comma-separated modules trained in full and transmitted
	 * (PEFT modules_to_save, e.g. "fc2" so a new task's output layer
	 * learns), or NULL; ignored by the other kinds, which train every
	 * untargeted layer anyway. */
	const char *modules_to_save;
	/* rounds, local training, server strategy, wire dtype, seed: the
	 * options fedloha-server takes too (engine_opts.h). min_report 0 = half
	 * the selected (>= 1); prox_mu reaches the clients with fedprox only. */
	struct srv_train_opts train;
	double dropout; /* probability a task's client vanishes mid-round */
	/* Federated evaluation every round, which then gives the headline
	 * accuracy (always on for pfedpara and local-only). */
	int fed_eval;
	/* Local-only baseline: every client trains its own model (this param,
	 * same initial model) on its own training samples for `epochs` epochs
	 * per round, every round, lr decaying as in the federation; nothing is
	 * sent, nothing aggregated; the accuracy of a round is the weighted
	 * mean of the clients' accuracies on their held-out samples. The
	 * engine, sessions and channel are not used: every byte count is 0. */
	int local_only;
	int threads;           /* worker threads (BLAS runs single-threaded inside) */
	int eval_batch;        /* central evaluation batch */
	const char *model_dir; /* save the final global model there (NULL = no) */
	int secure;            /* every connection over the secure channel (default 1) */
	struct srv_sim_callbacks cb;
};

/* 2nn fedpara gamma 0, 10 rounds, fraction 0.25, E 1, B 32, SGD lr 0.1, no
 * decay, no momentum, fedavg, f32, no dropout, seed 1, 1 thread, secure. */
void srv_sim_config_default(struct srv_sim_config *c);
/* The label used for files and tables (c->label, else derived). */
const char *srv_sim_config_label(const struct srv_sim_config *c, char *buf, size_t cap);
/* The model's name: the description's label when desc is set, else arch. */
const char *srv_sim_config_model(const struct srv_sim_config *c);

struct srv_sim_result {
	char label[SRV_SIM_LABEL_MAX];
	struct srv_sim_row *rows; /* one per completed round */
	size_t nrows;
	size_t param_floats, global_floats; /* model size, transmitted floats */
	int clients, selected_per_round;
	/* counted by the simulator's queues, independently of the engine */
	uint64_t wire_up, wire_down, frames_up, frames_down;
	uint64_t engine_up, engine_down; /* srv_engine_bytes at the end */
	/* the secure channel's bytes written in each direction (socket
	 * equivalent: handshake messages, records, final records; equal to the
	 * frames in insecure mode), completed handshakes, connections made,
	 * and channel errors (failed handshakes or records, unclean closes) */
	uint64_t chan_up, chan_down, handshakes, connections, channel_errors;
	int secure;
	int local_only;   /* a local-only baseline: no bytes, no global model */
	int fed_headline; /* the headline accuracy is the federated evaluation's */
	uint64_t vanished, client_errors;
	double seconds;
	float *final_params; /* the engine's parameter buffer after the last round (NULL
			      * for local-only) */
	size_t n_final_params;
	char last_client_error[256];
	/* MPI (more than one rank): the operations rank 0 ran on client ends
	 * of other ranks, the bytes of those requests and replies, and the wall
	 * seconds rank 0 spent in them (send, the remote work, receive). Not in
	 * the result files: they depend on the number of ranks. */
	uint64_t mpi_calls, mpi_bytes;
	double mpi_seconds;
};

/* Runs one configuration on d (borrowed). FL_OK with *out, or an error
 * (engine failure, stall, bad configuration) with a one-line message.
 * Under MPI (srv_sim_mpi_init) every rank calls it with the same
 * configuration and data: rank 0 runs the engine and gets the result,
 * the others serve their clients and get FL_OK with *out NULL. */
int srv_sim_run(const struct srv_sim_config *cfg, const struct srv_sim_data *d,
		struct srv_sim_result **out);
void srv_sim_result_free(struct srv_sim_result *r); /* NULL is a no-op */

/* ---- MPI (sim_mpi.c) ----
 *
 * Launched by mpirun with K ranks, rank 0 runs the engine, the central
 * evaluation and the output, and the virtual clients are spread over the
 * ranks (client i on rank i % K), each rank training its clients on its
 * own worker pool (config.threads per rank). Every frame still travels
 * encoded, over MPI instead of memory; a run is bit-identical whatever K
 * and the thread counts, and identical to the single-process run. A
 * local-only baseline runs on rank 0 alone. */

/* 1 when the environment says mpirun started the program. */
int srv_sim_mpi_launched(void);
/* Joins the MPI job when launched by mpirun or when forced (--mpi); a
 * plain run stays one process of one rank. Ranks > 0 print nothing (their
 * stdout and stderr go to /dev/null; fatal errors still reach the real
 * stderr). An error when MPI was asked for and this build has none. */
int srv_sim_mpi_init(int *argc, char ***argv, int force);
int srv_sim_mpi_rank(void); /* 0 without MPI */
int srv_sim_mpi_size(void); /* 1 without MPI */
void srv_sim_mpi_finalize(void);
/* Prints "fedloha-sim: [rank R: ]msg" and ends every rank with code. */
void srv_sim_mpi_abort(const char *msg, int code) __attribute__((noreturn));
/* Collective: FL_OK when err is FL_OK on every rank, else (on every rank)
 * the error of the lowest failing rank with its message. */
int srv_sim_mpi_agree(int err);
/* Collective: FL_OK when err is FL_OK and digest (srv_sim_digest's, which
 * returned err) equals rank 0's on every rank, else on every rank an error
 * (FL_EINVAL "rank R: its data/configuration differ from rank 0's" for a
 * mismatch) naming the lowest failing rank. */
#define SRV_SIM_DIGEST_BYTES 32
int srv_sim_mpi_same(int err, const uint8_t digest[SRV_SIM_DIGEST_BYTES]);
/* A BLAKE2b digest of what every rank must share (sim_digest.c): the n
 * configurations (not their thread counts, callbacks or model_dir) and
 * the data (samples, labels, normalisation, partition). */
int srv_sim_digest(const struct srv_sim_config *cfgs, int n, const struct srv_sim_data *d,
		   uint8_t out[SRV_SIM_DIGEST_BYTES]);

/* ---- results (sim_report.c) ---- */

/* First round whose accuracy >= target (a fraction); its cumulative bytes
 * (up + down). 0 when never reached. */
uint64_t srv_sim_reach(const struct srv_sim_result *r, double target, uint64_t *bytes);
double srv_sim_best_accuracy(const struct srv_sim_result *r);
/* DIR/<label>.csv: srv_sim_csv_header, then a srv_sim_csv_line per round
 * (MB = 1e6 bytes; figures not measured are empty), written atomically. */
int srv_sim_write_csv(const struct srv_sim_result *r, const char *path);
#define SRV_SIM_CSV_LINE_MAX 512
extern const char *const srv_sim_csv_header; /* with its newline */
/* One row as a CSV line with its newline; its length (> 0), or FL_ERANGE
 * when cap is too small. */
int srv_sim_csv_line(const struct srv_sim_row *w, char *buf, size_t cap);
/* DIR/<label>.json: the configuration, sizes, per-round rows and the
 * rounds / MB to reach each target. */
int srv_sim_write_json(const struct srv_sim_result *r, const struct srv_sim_config *cfg,
		       const double *targets, int ntargets, const char *path);
/* The comparison table at targets[0] (the main target, a fraction), then
 * MB and reduction versus the first result labelled "dense" (if any) at
 * every target. */
void srv_sim_print_table(FILE *f, struct srv_sim_result *const *r, int n, const double *targets,
			 int ntargets);
/* The secure channel's totals per result: channel bytes (incl. handshakes)
 * next to the protocol's frame bytes, handshakes, channel and client errors,
 * then a line per result with client errors (count and the last one). */
void srv_sim_print_channel(FILE *f, struct srv_sim_result *const *r, int n);
/* Writes DIR/accuracy_vs_mb.gp and runs gnuplot on it to make
 * DIR/accuracy_vs_mb.png. FL_ENOTFOUND when gnuplot is not installed (the
 * script is still written), FL_EIO when it failed. */
int srv_sim_plot(struct srv_sim_result *const *r, int n, const char *dir, double target, char *png,
		 size_t cap);

#endif
