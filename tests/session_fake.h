/* session_fake.h - the fake server shared by tests/test_session*.c (see
 * session_fake.c). */
#ifndef FL_TEST_SESSION_FAKE_H
#define FL_TEST_SESSION_FAKE_H

#include "dataset.h"
#include "model.h"
#include "session.h"
#include "wire.h"

#include <stddef.h>
#include <stdint.h>

#define C_ 1
#define H_ 8
#define W_ 8
#define CLASSES 10
#define N_SAMPLES 80 /* 64 train, 16 held out */
#define SEED 42      /* the Welcome's seed */

extern const char *FEDPARA, *PFEDPARA, *LOHA; /* config_json texts, r = 4 */
extern float g_lr;                            /* the tasks' learning rate */
extern enum fl_wire_dtype g_dtype;            /* the dtype the fake server encodes in */

struct fake {
	struct fl_buf **f; /* frames the session sent */
	size_t n, cap;
	int closed, sync, fail_send;
	struct cli_session *s;
	struct cli_job *pending; /* sync = 0: the job submitted last */
};

int fake_send(void *ctx, struct fl_buf *b);
void fake_close(void *ctx);
int fake_submit(void *ctx, struct cli_job *j);
void fake_clear(struct fake *fk);
/* Decodes frame i (NULL when absent or undecodable). */
fl_envelope *frame_env(struct fake *fk, size_t i);

struct fl_dataset *make_data(void);
/* A session over make_data()'s samples with a synchronous fake. */
struct cli_session *make_session(struct fake *fk, const struct fl_dataset *d, const char *state_dir,
				 const char *id);
/* A session of cfg with a synchronous fake (a failed check, and NULL,
 * when it cannot be made); fk->s is the session. */
struct cli_session *fake_session_new(struct fake *fk, const struct cli_session_config *cfg);
/* A connected session of client `id` over d that finds its base at
 * base_path, with state in state_dir (NULL: none). */
struct cli_session *base_path_session(struct fake *fk, const struct fl_dataset *d, const char *id,
				      const char *state_dir, const char *base_path);
void free_session(struct fake *fk);
/* Encodes env and feeds it to the session at t = 100 (*down += frame bytes). */
int deliver(struct cli_session *s, const fl_envelope *env, uint64_t *down);

struct welcome_opts {
	const char *arch, *json;
	uint32_t version, in_c, in_h, in_w, classes, chunk;
	enum fl_wire_dtype dtype;
	const uint8_t *sha;
	uint64_t base_bytes;
};
struct welcome_opts wopts(const char *json);
int send_welcome(struct cli_session *s, const struct welcome_opts *o, uint64_t *down);

/* A 2nn of config json built like the server would. */
struct fl_model *server_model(const char *json, uint64_t seed);
size_t global_count(struct fl_model *m);
size_t wire_globals(struct fl_model *m, struct fl_wire_tensor *w);
/* RoundTask (k_override = 0: the right K) + srv's global tensors. */
int send_task(struct cli_session *s, struct fl_model *srv, uint64_t round, uint32_t k_override,
	      int batch, uint64_t *down);
/* Checks the Update among the sent frames and decodes its tensors into
 * `into`; returns its frame index or -1. */
int collect_update(struct fake *fk, struct fl_model *into, uint64_t round, int *saw_w1,
		   int *saw_w2);

#endif
