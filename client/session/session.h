/* session.h - the edge client's side of one federated session
 * (proto/PROTOCOL.md), as a transport-agnostic state machine: the libuv
 * daemon and the in-process simulator feed it connection events, frames and
 * timer ticks, and it answers through a small I/O table (send a frame, close
 * the connection, run a job off the event loop).
 *
 *   on_connect  -> Hello
 *   Welcome     -> build (or reuse) the model from the server's spec, load
 *                  the pFedPara local tensors from state_dir, fetch the loha
 *                  base over BaseRequest / BaseChunk if we lack it
 *   RoundTask   -> receive the K global tensors straight into the model,
 *                  then a training job; its end sends Update + K tensors
 *   EvalTask    -> receive the K global tensors, an evaluation job,
 *                  EvalResult
 *   Error       -> on_frame returns an error (the caller closes)
 *   Bye("done") -> finished
 *
 * Everything from the server is validated; a violation makes on_frame
 * return an error with a one-line fl_error_msg(), never a crash. The session
 * never calls libuv, never logs and never sleeps. All calls but
 * cli_job_run() happen on one thread (the session's); cli_job_run() touches
 * only the job's model and data, and while a job runs (cli_session_busy)
 * the session does not touch the model either.
 */
#ifndef CLI_SESSION_H
#define CLI_SESSION_H

#include "dataset.h"
#include "model.h"
#include "wire.h"

#include <stdint.h>

#define CLI_CLIENT_ID_MAX FL_WIRE_CLIENT_ID_MAX
#define CLI_SESSION_BATCH_DEFAULT 64 /* the model's batch until a task asks for more */
#define CLI_SESSION_BATCH_MAX 4096   /* TrainSettings.batch_size above this is refused */
#define CLI_SESSION_EPOCHS_MAX 10000
#define CLI_SESSION_RANK_MAX 4096     /* r / rank_pattern values a Welcome may ask for */
#define CLI_SESSION_CLASSES_MAX 65536 /* classes a Welcome may ask for */
#define CLI_SESSION_BASE_BYTES_MAX ((uint64_t)4 << 30) /* a fetched base file */
#define CLI_SESSION_LOCAL_FILE "local.safetensors"     /* in state_dir */
#define CLI_SESSION_BASE_FILE "base.safetensors"       /* in state_dir */

struct cli_session_config {
	const char *client_id;         /* 1..64 of [A-Za-z0-9._-] (copied) */
	const struct fl_dataset *data; /* borrowed, normalised by the caller */
	const int *train_idx;          /* local training samples (borrowed) */
	int n_train;
	const int *eval_idx; /* held-out samples for federated evaluation (borrowed) */
	int n_eval;
	enum fl_wire_dtype preferred_dtype;
	int dtype_from_server;    /* no preference: the server's offered dtype */
	const char *state_dir;    /* pFedPara local tensors + fetched base live here;
					      NULL = in memory only (copied) */
	const char *base_path;    /* loha: an existing base file (optional, copied) */
	uint32_t max_frame_bytes; /* largest frame we accept */
	uint32_t heartbeat_ms;    /* send a Heartbeat if we have sent nothing for this
					      long (Welcome.limits.heartbeat_ms overrides; 0 = never) */
	int threads;              /* BLAS threads inside a job (the caller sets
					      fl_blas_set_threads; see cli_job_threads) */
	/* The only model this client trains (borrowed; NULL = whatever the
	 * coordinator sends): a Welcome naming another model is refused, and
	 * a description sent by SHA-256 only is taken from here, not fetched. */
	const struct fl_model_desc *expect_model;
};

struct cli_session;
struct cli_job; /* one local training or evaluation run, opaque, owned by the session */

struct cli_session_io {
	void *ctx;
	/* Queues one frame; takes over one reference (also on failure).
	 * FL_OK, or a negative fl_err: the connection is unusable. */
	int (*send)(void *ctx, struct fl_buf *frame);
	/* Flush and close the connection (the caller later reports
	 * cli_session_on_disconnect). */
	void (*close)(void *ctx);
	/* Run cli_job_run(job) off the event loop, then call
	 * cli_session_on_job_done(s, job) on the session's thread. May run the
	 * job inline (the simulator). FL_OK, or a negative fl_err: not queued. */
	int (*submit)(void *ctx, struct cli_job *job);
};

/* Defaults: no data, f32, no state_dir, FL_WIRE_MAX_FRAME_DEFAULT,
 * heartbeat 10 s, 1 thread. */
void cli_session_config_default(struct cli_session_config *c);
/* Validates cfg (client id, index ranges against data) and copies the
 * strings; the data set and index arrays stay borrowed for the session's
 * life. io is copied. */
int cli_session_new(const struct cli_session_config *cfg, const struct cli_session_io *io,
		    struct cli_session **out);
/* NULL is a no-op. Must not be called while a job is queued or running
 * (cli_session_busy): wait for its on_job_done first. */
void cli_session_free(struct cli_session *s);

/* A new connection is up: sends Hello. */
void cli_session_on_connect(struct cli_session *s, uint64_t now_ms);
/* One frame payload (without its 4-byte length). Returns FL_OK, or an error
 * when the server violated the protocol or refused us (the caller then
 * closes and may reconnect with backoff). */
int cli_session_on_frame(struct cli_session *s, const uint8_t *payload, size_t len,
			 uint64_t now_ms);
/* The connection is gone. Keeps the model and local tensors for the
 * reconnect; aborts a partial transfer (a half-fetched base file is
 * removed). A job still running finishes, but its result is dropped and
 * the local tensors it changed are restored. */
void cli_session_on_disconnect(struct cli_session *s);

/* Worker thread: trains or evaluates; touches only the job's model/data. */
void cli_job_run(struct cli_job *job);
/* BLAS threads the job wants (cli_session_config.threads). */
int cli_job_threads(const struct cli_job *job);
/* After the job ran: why it failed, or NULL when it succeeded. */
const char *cli_job_error(const struct cli_job *job);
/* Session thread, after cli_job_run: persists the local tensors and sends
 * Update + tensors (training) or EvalResult (evaluation). A failed job
 * (diverged, ...) sends Error and closes the connection; the local tensors
 * are restored to their state before the job. */
void cli_session_on_job_done(struct cli_session *s, struct cli_job *job);

/* Timer: sends a Heartbeat when nothing was sent for heartbeat_ms. */
void cli_session_tick(struct cli_session *s, uint64_t now_ms);
/* 1 when the server has been silent for longer than Welcome's
 * idle_timeout_ms (0 there = never); the caller should close and reconnect. */
int cli_session_idle_expired(const struct cli_session *s, uint64_t now_ms);

int cli_session_finished(const struct cli_session *s); /* the server said Bye("done") */
int cli_session_busy(const struct cli_session *s);     /* a job is queued or running */
/* Bytes per direction, whole frames including the 4-byte prefix, summed
 * over all connections. Either pointer may be NULL. */
void cli_session_bytes(const struct cli_session *s, uint64_t *up, uint64_t *down);
/* NULL before the first Welcome. Do not touch it while busy. */
struct fl_model *cli_session_model(struct cli_session *s);
/* Training rounds whose Update was sent. */
uint64_t cli_session_rounds_done(const struct cli_session *s);
/* 1 once the session refused the coordinator's model (it cannot build it,
 * its data does not fit, or it is not cfg.expect_model): reconnecting
 * would meet the same model, so the caller should stop. */
int cli_session_refused_model(const struct cli_session *s);
/* The session dtype of the current connection (valid after Welcome). */
enum fl_wire_dtype cli_session_dtype(const struct cli_session *s);
/* The last failure the session saw on its own (a failed job, a send that
 * failed in on_connect / on_job_done / tick), for the caller to log; ""
 * when none. on_frame errors are reported through fl_error_msg() as
 * usual. */
const char *cli_session_last_error(const struct cli_session *s);

#endif
