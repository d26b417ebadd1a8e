/* session_impl.h - internals shared by session.c (lifecycle, Hello,
 * Welcome, dispatch), session_task.c (tasks, tensors, jobs, Update) and
 * state.c (local tensors and the loha base on disk). Not part of the API. */
#ifndef CLI_SESSION_IMPL_H
#define CLI_SESSION_IMPL_H

#include "errors.h"
#include "fsutil.h"
#include "model_desc.h"
#include "peft_config.h"
#include "session.h"

#include <sodium.h>
#include <stdint.h>

#define CLI_SHA256_BYTES 32

enum cli_state {
	CLI_ST_OFFLINE = 0, /* no connection */
	CLI_ST_HELLO,       /* Hello sent, waiting for Welcome */
	CLI_ST_BASE,        /* BaseRequest sent, receiving BaseChunk */
	CLI_ST_READY,       /* waiting for a task (a job may be running: busy) */
	CLI_ST_RECV_TRAIN,  /* RoundTask received, receiving its tensors */
	CLI_ST_RECV_EVAL,   /* EvalTask received, receiving its tensors */
};

enum cli_job_kind {
	CLI_JOB_TRAIN = 0,
	CLI_JOB_EVAL
};

struct cli_train_settings {
	int epochs, batch;
	float lr, momentum, weight_decay, prox_mu;
	int adam;
};

struct cli_job {
	enum cli_job_kind kind;
	uint64_t round;
	uint64_t conn_gen; /* the connection it was started on */
	int threads;
	/* inputs (borrowed) */
	struct fl_model *model;
	int model_batch;
	const struct fl_dataset *data;
	const int *idx;
	int n;
	/* train jobs: the held-out samples, evaluated right after training */
	const int *eval_idx;
	int n_eval;
	struct cli_train_settings ts;
	uint64_t rng_seed;
	/* results */
	int err;
	char errmsg[FL_ERROR_MSG_MAX];
	double loss, accuracy, seconds;
	long samples;
	double post_loss, post_accuracy; /* train jobs with n_eval > 0 */
	long post_samples;
};

/* The base file being fetched (fd), or the model description (mem). */
struct cli_base_fetch {
	int fd;       /* -1 when idle or fetching into mem */
	uint8_t *mem; /* a description being fetched (owned), NULL otherwise */
	char tmp[FL_PATH_MAX];
	char path[FL_PATH_MAX];
	crypto_hash_sha256_state sha;
	uint64_t have, total;
	uint8_t want[CLI_SHA256_BYTES];
};

/* A cached SHA-256 of a file, valid while its size and mtime stay. */
struct cli_sha_cache {
	char path[FL_PATH_MAX];
	long long size, mtime_ns;
	uint8_t sha[CLI_SHA256_BYTES];
	int valid;
};

struct cli_session {
	struct cli_session_config cfg; /* strings point at the copies below */
	char client_id[CLI_CLIENT_ID_MAX + 1];
	uint64_t id_hash; /* FNV-1a 64 of client_id */
	char *state_dir, *base_path;
	struct cli_session_io io;

	enum cli_state st;
	int connected;
	uint64_t conn_gen;
	uint64_t now_ms; /* the latest time a caller gave us */
	uint64_t last_send_ms, last_recv_ms;
	uint64_t up, down;
	int finished;
	char last_error[FL_ERROR_MSG_MAX];
	int refused_model; /* we refused the coordinator's model: final */

	/* from the current Welcome */
	enum fl_wire_dtype dtype;
	uint64_t seed;
	uint32_t chunk_bytes, heartbeat_ms, idle_timeout_ms;

	/* the model and the spec it was built from */
	struct fl_model *model;
	struct fl_peft_config *peft;
	char *spec_arch, *spec_json;
	int spec_c, spec_h, spec_w, spec_classes; /* a built-in's */
	int spec_has_desc; /* built from a description, of SHA-256 spec_desc_sha */
	uint8_t spec_desc_sha[CLI_SHA256_BYTES];
	/* the Welcome's ModelSpec (packed) while its description is fetched */
	uint8_t *pending_spec;
	size_t pending_len;
	uint64_t pending_seed;
	int model_batch;
	struct fl_wire_rx *rx;
	size_t n_global;     /* GLOBAL tensors (K) */
	float *local_backup; /* LOCAL tensors before the running job */
	size_t local_floats;

	/* the loha base */
	int base_loaded;
	uint8_t base_sha[CLI_SHA256_BYTES];
	struct cli_base_fetch fetch;
	struct cli_sha_cache sha_cache[2]; /* state_dir/base.safetensors, base_path */
	int hello_has_base;                /* the base our last Hello reported */
	uint8_t hello_sha[CLI_SHA256_BYTES];

	/* the current task */
	uint64_t task_round;
	int have_train_round;
	uint64_t last_train_round;
	struct cli_train_settings ts;
	int busy;
	struct cli_job job;
	uint64_t rounds_done;
};

/* session.c */
/* Sends one frame (takes over the reference), counts its bytes. */
int cli_session_send_frame(struct cli_session *s, struct fl_buf *frame);
/* Encodes and sends one envelope. */
int cli_session_send_env(struct cli_session *s, const fl_envelope *env);
/* A Heartbeat stamped s->now_ms, through cli_session_send_env. */
int cli_session_send_heartbeat(struct cli_session *s);
/* Sends Error{-err, msg} and closes; records msg as the last error. */
void cli_session_fail(struct cli_session *s, int err, const char *msg);
/* Installs m (a receiver for its GLOBAL tensors in the session dtype, the
 * local backup resized) and frees the old model. On failure nothing
 * changed and m is still the caller's. */
int cli_session_set_model(struct cli_session *s, struct fl_model *m, int batch);

/* Builds and installs the model of spec M: description d when not NULL
 * (the local data must fit it: fl_model_check_data), else the built-in
 * M->arch; config parsed, local tensors loaded. On failure the previous
 * model stays. */
int cli_session_build_model(struct cli_session *s, const Fedloha__V1__ModelSpec *M,
			    const struct fl_model_desc *d, uint64_t seed);
/* Keeps the model, with a receiver for the (maybe new) session dtype. */
int cli_session_keep_model(struct cli_session *s);

/* session_desc.c */
/* A Welcome whose ModelSpec names a description: builds it (inline) or
 * fetches it first (BaseRequest; state BASE); a description that cannot
 * be built is refused with Error and the connection closed. */
int cli_session_welcome_desc(struct cli_session *s, const Fedloha__V1__ModelSpec *M, uint64_t seed);
/* Error{err, the current message} to the server, then close; returns err
 * with its message kept. */
int cli_session_refuse(struct cli_session *s, int err);
/* FL_OK when the Welcome's model is cfg.expect_model (or none is
 * expected); else refused as cli_session_refuse does. */
int cli_session_check_expected(struct cli_session *s, const Fedloha__V1__ModelSpec *M);
/* The fetched description (text, len; SHA-256 already checked): builds the
 * pending ModelSpec's model and goes on with its base. Takes text. */
int cli_session_desc_fetched(struct cli_session *s, uint8_t *text, size_t len);

/* session_base.c */
/* The SHA-256 of the base a Hello reports (state_dir's, else base_path's);
 * 1 when sha was filled, 0 when there is none (a flag, not an fl_err). */
int cli_session_local_base_sha(struct cli_session *s, uint8_t sha[CLI_SHA256_BYTES]);
/* After a Welcome's model is in place: the base it names, or base_path
 * when it names none; sets the state (READY, or BASE after a BaseRequest). */
int cli_session_welcome_base(struct cli_session *s, const Fedloha__V1__ModelSpec *M);
int cli_session_on_base_chunk(struct cli_session *s, const Fedloha__V1__BaseChunk *c);

/* session_task.c */
int cli_session_on_task(struct cli_session *s, const Fedloha__V1__RoundTask *t);
int cli_session_on_eval_task(struct cli_session *s, const Fedloha__V1__EvalTask *t);
int cli_session_on_chunk(struct cli_session *s, const Fedloha__V1__TensorChunk *c);
/* A receiver for m's GLOBAL tensors, decoding into m (NULL when none). */
int cli_session_rx_new(struct fl_model *m, enum fl_wire_dtype dtype, struct fl_wire_rx **out);

/* state.c */
/* Loads the LOCAL tensors from state_dir/local.safetensors if it exists;
 * every LOCAL tensor must be there with its shape, and nothing else. */
int cli_state_load_local(struct fl_model *m, const char *dir);
/* Writes the LOCAL tensors to state_dir/local.safetensors (atomic). FL_OK
 * and nothing written when the model has none. */
int cli_state_save_local(struct fl_model *m, const char *dir);
/* SHA-256 of a file, cached; FL_ENOTFOUND when it does not exist. */
int cli_state_file_sha(struct cli_sha_cache *c, const char *path, uint8_t sha[CLI_SHA256_BYTES],
		       long long *size);
/* Starts a fetch of `total` bytes into dir/base.safetensors (via a temp). */
int cli_base_fetch_begin(struct cli_base_fetch *f, const char *dir, uint64_t total,
			 const uint8_t want[CLI_SHA256_BYTES]);
/* One chunk; *done = 1 after the last one (the file is then in place, or
 * f->mem holds the bytes for the caller to take; the SHA-256 checked). Any
 * error removes the temp file or frees mem. */
int cli_base_fetch_chunk(struct cli_base_fetch *f, uint64_t offset, const uint8_t *data, size_t len,
			 int last, int *done);
/* Starts a fetch of `total` bytes into memory (fetch.mem). */
int cli_desc_fetch_begin(struct cli_base_fetch *f, uint64_t total,
			 const uint8_t want[CLI_SHA256_BYTES]);
/* Drops a partial fetch (no-op when idle). */
void cli_base_fetch_abort(struct cli_base_fetch *f);

#endif
