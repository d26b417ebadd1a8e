/* session_base.c - the loha base in the client session: the SHA-256 a
 * Hello reports, the base a Welcome names (found locally in state_dir or
 * base_path, else fetched with BaseRequest / BaseChunk into state_dir), and
 * loading it into the model. BaseChunk frames of a model description are
 * handed to session_desc.c. File work is in state.c. */
#include "session_impl.h"

#include "errors.h"
#include "model_io.h"

#include <stdio.h>
#include <string.h>

/* The SHA-256 of the base we would report in Hello: state_dir's fetched
 * copy, else base_path. */
int cli_session_local_base_sha(struct cli_session *s, uint8_t sha[CLI_SHA256_BYTES])
{
	char path[FL_PATH_MAX];
	if (s->state_dir &&
	    snprintf(path, sizeof(path), "%s/%s", s->state_dir, CLI_SESSION_BASE_FILE) <
		    (int)sizeof(path) &&
	    cli_state_file_sha(&s->sha_cache[0], path, sha, NULL) == FL_OK)
		return 1;
	if (s->base_path && cli_state_file_sha(&s->sha_cache[1], s->base_path, sha, NULL) == FL_OK)
		return 1;
	return 0;
}

static int load_base(struct cli_session *s, const char *path, const uint8_t *sha)
{
	int err = fl_model_load_base(s->model, path);
	if (err)
		return err;
	s->base_loaded = 1;
	if (sha)
		memcpy(s->base_sha, sha, CLI_SHA256_BYTES);
	else
		memset(s->base_sha, 0, CLI_SHA256_BYTES);
	return FL_OK;
}

/* The Welcome's base `want` is loaded without a fetch. The server does not
 * give a task to a client whose Hello reported another base until that
 * client sends something: a Heartbeat then says we are ready. */
static int base_ready(struct cli_session *s, const uint8_t *want)
{
	if (s->hello_has_base && !memcmp(s->hello_sha, want, CLI_SHA256_BYTES))
		return FL_OK;
	return cli_session_send_heartbeat(s);
}

/* After the model is in place: the base the Welcome names (or base_path
 * when it names none). Sets the next state. */
int cli_session_welcome_base(struct cli_session *s, const Fedloha__V1__ModelSpec *M)
{
	s->st = CLI_ST_READY;
	if (!M->base_sha256.len) {
		if (s->base_loaded || !s->base_path ||
		    !fl_model_count_floats(s->model, FL_TENSOR_BASE))
			return FL_OK;
		if (s->busy)
			return fl_error_set(FL_EINVAL, "cannot load the base while a job runs");
		return load_base(s, s->base_path, NULL);
	}
	const uint8_t *want = M->base_sha256.data;
	if (M->base_sha256.len != CLI_SHA256_BYTES)
		return fl_error_set(FL_EFORMAT, "Welcome: base_sha256 has %zu bytes, expected %d",
				    M->base_sha256.len, CLI_SHA256_BYTES);
	if (M->base_bytes == 0 || M->base_bytes > CLI_SESSION_BASE_BYTES_MAX)
		return fl_error_set(FL_ERANGE, "Welcome: base_bytes %llu outside [1, %llu]",
				    (unsigned long long)M->base_bytes,
				    (unsigned long long)CLI_SESSION_BASE_BYTES_MAX);
	if (s->base_loaded && !memcmp(s->base_sha, want, CLI_SHA256_BYTES))
		return base_ready(s, want);
	if (s->busy)
		return fl_error_set(FL_EINVAL, "the server's base changed while a job runs");
	char path[FL_PATH_MAX];
	const char *cand[2] = {NULL, s->base_path};
	if (s->state_dir && snprintf(path, sizeof(path), "%s/%s", s->state_dir,
				     CLI_SESSION_BASE_FILE) < (int)sizeof(path))
		cand[0] = path;
	for (int i = 0; i < 2; i++) {
		uint8_t sha[CLI_SHA256_BYTES];
		long long size;
		if (cand[i] && cli_state_file_sha(&s->sha_cache[i], cand[i], sha, &size) == FL_OK &&
		    (uint64_t)size == M->base_bytes && !memcmp(sha, want, CLI_SHA256_BYTES)) {
			int err = load_base(s, cand[i], want);
			return err ? err : base_ready(s, want);
		}
	}
	if (!s->state_dir)
		return fl_error_set(FL_ENOTFOUND,
				    "the server's base model (%llu bytes) is not "
				    "here and there is no state folder to fetch it into",
				    (unsigned long long)M->base_bytes);
	int err = cli_base_fetch_begin(&s->fetch, s->state_dir, M->base_bytes, want);
	if (err)
		return err;
	Fedloha__V1__BaseRequest br = FEDLOHA__V1__BASE_REQUEST__INIT;
	br.sha256.data = (uint8_t *)want;
	br.sha256.len = CLI_SHA256_BYTES;
	fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT;
	env.body_case = FEDLOHA__V1__ENVELOPE__BODY_BASE_REQUEST;
	env.base_request = &br;
	s->st = CLI_ST_BASE;
	return cli_session_send_env(s, &env);
}

int cli_session_on_base_chunk(struct cli_session *s, const Fedloha__V1__BaseChunk *c)
{
	int done, desc = s->fetch.mem != NULL;
	int err = cli_base_fetch_chunk(&s->fetch, c->offset, c->data.data, c->data.len, c->last,
				       &done);
	if (err && desc)
		return cli_session_refuse(s, err);
	if (err || !done)
		return err;
	if (s->fetch.mem) {
		uint8_t *text = s->fetch.mem;
		s->fetch.mem = NULL;
		return cli_session_desc_fetched(s, text, (size_t)s->fetch.total);
	}
	s->sha_cache[0].valid = 0;
	uint8_t want[CLI_SHA256_BYTES];
	memcpy(want, s->fetch.want, CLI_SHA256_BYTES);
	if ((err = load_base(s, s->fetch.path, want)))
		return err;
	s->st = CLI_ST_READY;
	return FL_OK;
}
