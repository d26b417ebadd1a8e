/* session.c - the client session's lifecycle and connection-level protocol:
 * Hello, Welcome (model spec, limits), the frame dispatch, heartbeats,
 * Error / Bye, byte counters. Model descriptions are in session_desc.c,
 * the loha base in session_base.c, tasks,
 * tensors and jobs in session_task.c, files in state.c. No libuv, no
 * logging, no sleeping. */
#include "session_impl.h"

#include "errors.h"
#include "model_data.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOT_HERE 1 /* dispatch: the message is not allowed in this state */

static const char *state_name(enum cli_state st)
{
	switch (st) {
	case CLI_ST_OFFLINE: return "offline";
	case CLI_ST_HELLO: return "waiting for Welcome";
	case CLI_ST_BASE: return "fetching the base";
	case CLI_ST_READY: return "ready";
	case CLI_ST_RECV_TRAIN: return "receiving a round's tensors";
	case CLI_ST_RECV_EVAL: return "receiving an evaluation's tensors";
	}
	return "?";
}

static const char *body_name(Fedloha__V1__Envelope__BodyCase c)
{
	static const char *names[] = {"nothing",     "Hello",  "Welcome",  "RoundTask",
				      "TensorChunk", "Update", "EvalTask", "EvalResult",
				      "Heartbeat",   "Error",  "Bye",      "BaseRequest",
				      "BaseChunk"};
	unsigned i = (unsigned)c;
	return i < sizeof(names) / sizeof(names[0]) ? names[i] : "unknown message";
}

static uint64_t fnv1a64(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ull;
	}
	return h;
}

static int idx_valid(const int *idx, int n, int limit)
{
	if (n < 0 || (n > 0 && !idx))
		return 0;
	for (int i = 0; i < n; i++)
		if (idx[i] < 0 || idx[i] >= limit)
			return 0;
	return 1;
}

void cli_session_config_default(struct cli_session_config *c)
{
	memset(c, 0, sizeof(*c));
	c->preferred_dtype = FL_WIRE_F32;
	c->max_frame_bytes = FL_WIRE_MAX_FRAME_DEFAULT;
	c->heartbeat_ms = 10000;
	c->threads = 1;
}

int cli_session_new(const struct cli_session_config *cfg, const struct cli_session_io *io,
		    struct cli_session **out)
{
	*out = NULL;
	if (!fl_wire_client_id_valid(cfg->client_id))
		return fl_error_set(FL_EINVAL,
				    "client id '%s': expected 1..%d characters of "
				    "[A-Za-z0-9._-]",
				    cfg->client_id ? cfg->client_id : "", CLI_CLIENT_ID_MAX);
	if (!cfg->data)
		return fl_error_set(FL_EINVAL, "client session: no data set");
	if (!idx_valid(cfg->train_idx, cfg->n_train, cfg->data->n) ||
	    !idx_valid(cfg->eval_idx, cfg->n_eval, cfg->data->n))
		return fl_error_set(FL_EINVAL,
				    "client session: a sample index is outside the data "
				    "set's %d samples",
				    cfg->data->n);
	if ((unsigned)cfg->preferred_dtype > FL_WIRE_INT8)
		return fl_error_set(FL_EINVAL, "client session: unknown dtype %d",
				    (int)cfg->preferred_dtype);
	if (cfg->max_frame_bytes < FL_WIRE_MAX_FRAME_MIN)
		return fl_error_set(FL_EINVAL, "client session: max_frame_bytes %u < %u",
				    cfg->max_frame_bytes, FL_WIRE_MAX_FRAME_MIN);
	if (!io || !io->send || !io->close || !io->submit)
		return fl_error_set(FL_EINVAL, "client session: incomplete io table");
	if (sodium_init() < 0)
		return fl_error_set(FL_EIO, "libsodium failed to initialise");
	struct cli_session *s = calloc(1, sizeof(*s));
	if (!s)
		return fl_error_set(FL_ENOMEM, "out of memory");
	s->cfg = *cfg;
	snprintf(s->client_id, sizeof(s->client_id), "%s", cfg->client_id);
	s->cfg.client_id = s->client_id;
	s->id_hash = fnv1a64(s->client_id);
	s->state_dir = cfg->state_dir ? strdup(cfg->state_dir) : NULL;
	s->base_path = cfg->base_path ? strdup(cfg->base_path) : NULL;
	if ((cfg->state_dir && !s->state_dir) || (cfg->base_path && !s->base_path)) {
		cli_session_free(s);
		return fl_error_set(FL_ENOMEM, "out of memory");
	}
	s->cfg.state_dir = s->state_dir;
	s->cfg.base_path = s->base_path;
	if (s->cfg.threads < 1)
		s->cfg.threads = 1;
	s->io = *io;
	s->fetch.fd = -1;
	s->st = CLI_ST_OFFLINE;
	*out = s;
	return FL_OK;
}

void cli_session_free(struct cli_session *s)
{
	if (!s)
		return;
	assert(!s->busy); /* the transport waits for the job first */
	cli_base_fetch_abort(&s->fetch);
	fl_wire_rx_free(s->rx);
	fl_model_free(s->model);
	fl_peft_config_free(s->peft);
	free(s->spec_arch);
	free(s->spec_json);
	free(s->pending_spec);
	free(s->local_backup);
	free(s->state_dir);
	free(s->base_path);
	free(s);
}

/* ---- sending ---- */

int cli_session_send_frame(struct cli_session *s, struct fl_buf *frame)
{
	s->up += frame->len;
	s->last_send_ms = s->now_ms;
	if (s->io.send(s->io.ctx, frame) != 0)
		return fl_error_set(FL_EIO, "connection: send failed");
	return FL_OK;
}

int cli_session_send_env(struct cli_session *s, const fl_envelope *env)
{
	struct fl_buf *b;
	int err = fl_wire_encode(env, &b);
	if (err)
		return err;
	return cli_session_send_frame(s, b);
}

static void record_error(struct cli_session *s, const char *msg)
{
	snprintf(s->last_error, sizeof(s->last_error), "%s", msg);
}

void cli_session_fail(struct cli_session *s, int err, const char *msg)
{
	record_error(s, msg);
	if (!s->connected)
		return;
	struct fl_buf *b = NULL;
	if (fl_wire_encode_error(err, s->last_error, &b) == FL_OK)
		cli_session_send_frame(s, b); /* best effort: we close anyway */
	s->io.close(s->io.ctx);
}

/* ---- connection ---- */

void cli_session_on_connect(struct cli_session *s, uint64_t now_ms)
{
	if (s->connected)
		cli_session_on_disconnect(s);
	s->connected = 1;
	s->conn_gen++;
	s->now_ms = now_ms;
	s->last_send_ms = s->last_recv_ms = now_ms;
	s->st = CLI_ST_HELLO;
	s->have_train_round = 0;
	s->heartbeat_ms = s->cfg.heartbeat_ms;
	s->idle_timeout_ms = 0;

	static char *caps[] = {"f16", "bf16", "int8", "eval"};
	uint8_t sha[CLI_SHA256_BYTES];
	Fedloha__V1__Hello h = FEDLOHA__V1__HELLO__INIT;
	h.protocol_version = FL_WIRE_PROTOCOL_VERSION;
	h.client_id = s->client_id;
	h.num_examples = (uint64_t)s->cfg.n_train;
	h.n_capabilities = sizeof(caps) / sizeof(caps[0]);
	h.capabilities = caps;
	h.preferred_dtype = (Fedloha__V1__DType)s->cfg.preferred_dtype;
	h.dtype_from_server = s->cfg.dtype_from_server != 0;
	s->hello_has_base = cli_session_local_base_sha(s, sha);
	if (s->hello_has_base) {
		memcpy(s->hello_sha, sha, CLI_SHA256_BYTES);
		h.has_base = 1;
		h.base_sha256.data = sha;
		h.base_sha256.len = CLI_SHA256_BYTES;
	}
	fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT;
	env.body_case = FEDLOHA__V1__ENVELOPE__BODY_HELLO;
	env.hello = &h;
	if (cli_session_send_env(s, &env) != FL_OK) {
		record_error(s, fl_error_msg());
		s->io.close(s->io.ctx);
	}
}

void cli_session_on_disconnect(struct cli_session *s)
{
	s->connected = 0;
	s->st = CLI_ST_OFFLINE;
	cli_base_fetch_abort(&s->fetch);
}

/* ---- Welcome ---- */

int cli_session_set_model(struct cli_session *s, struct fl_model *m, int batch)
{
	size_t nloc = fl_model_count_floats(m, FL_TENSOR_LOCAL);
	float *bk = NULL;
	struct fl_wire_rx *rx = NULL;
	if (nloc && !(bk = malloc(sizeof(float) * nloc)))
		return fl_error_set(FL_ENOMEM, "out of memory");
	int err = cli_session_rx_new(m, s->dtype, &rx);
	if (err) {
		free(bk);
		return err;
	}
	fl_wire_rx_free(s->rx);
	fl_model_free(s->model);
	free(s->local_backup);
	s->rx = rx;
	s->model = m;
	s->model_batch = batch;
	s->local_backup = bk;
	s->local_floats = nloc;
	s->n_global = 0;
	for (size_t i = 0; i < fl_model_tensor_count(m); i++)
		s->n_global += (fl_model_tensor_at(m, i)->flags & FL_TENSOR_GLOBAL) != 0;
	return FL_OK;
}

static int same_spec(const struct cli_session *s, const Fedloha__V1__ModelSpec *M)
{
	if (!s->model || strcmp(s->spec_json, M->config_json ? M->config_json : ""))
		return 0;
	if (M->description_sha256.len || s->spec_has_desc)
		return s->spec_has_desc && M->description_sha256.len == CLI_SHA256_BYTES &&
		       !memcmp(s->spec_desc_sha, M->description_sha256.data, CLI_SHA256_BYTES);
	return !strcmp(s->spec_arch, M->arch) && s->spec_c == (int)M->input[0] &&
	       s->spec_h == (int)M->input[1] && s->spec_w == (int)M->input[2] &&
	       s->spec_classes == (int)M->classes;
}

/* A server could ask for any rank; refuse absurd ones before allocating. */
static int rank_check(const struct fl_peft_config *pc)
{
	int bad = pc->r > CLI_SESSION_RANK_MAX;
	for (size_t i = 0; i < pc->n_rank_pattern; i++)
		bad |= pc->rank_pattern[i].value > CLI_SESSION_RANK_MAX;
	if (bad)
		return fl_error_set(FL_ERANGE, "Welcome.model.config_json: a rank above %d",
				    CLI_SESSION_RANK_MAX);
	return FL_OK;
}

/* The model of spec M: description d when given (the data checked against
 * it), else the built-in network M->arch. */
static int new_model(struct cli_session *s, const Fedloha__V1__ModelSpec *M,
		     const struct fl_model_desc *d, const struct fl_peft_config *pc, uint64_t seed,
		     struct fl_model **m)
{
	if (!d)
		return fl_model_new(M->arch, (int)M->input[0], (int)M->input[1], (int)M->input[2],
				    (int)M->classes, pc, seed, CLI_SESSION_BATCH_DEFAULT, m);
	int err = fl_model_new_desc(d, pc, seed, CLI_SESSION_BATCH_DEFAULT, m);
	return err ? err : fl_model_check_data(*m, s->cfg.data);
}

int cli_session_build_model(struct cli_session *s, const Fedloha__V1__ModelSpec *M,
			    const struct fl_model_desc *d, uint64_t seed)
{
	const char *json = M->config_json ? M->config_json : "";
	struct fl_peft_config *pc = NULL;
	struct fl_model *m = NULL;
	char *arch = strdup(M->arch ? M->arch : ""), *js = strdup(json);
	int err = arch && js ? FL_OK : fl_error_set(FL_ENOMEM, "out of memory");
	if (!err && *json)
		err = fl_peft_config_parse(json, strlen(json), "Welcome.model.config_json", &pc);
	if (!err && pc)
		err = rank_check(pc);
	if (!err)
		err = new_model(s, M, d, pc, seed, &m);
	if (!err && s->state_dir)
		err = cli_state_load_local(m, s->state_dir);
	if (!err)
		err = cli_session_set_model(s, m, CLI_SESSION_BATCH_DEFAULT);
	if (err) {
		fl_model_free(m);
		fl_peft_config_free(pc);
		free(arch);
		free(js);
		return err;
	}
	fl_peft_config_free(s->peft);
	free(s->spec_arch);
	free(s->spec_json);
	s->peft = pc;
	s->spec_arch = arch;
	s->spec_json = js;
	s->spec_has_desc = d != NULL;
	if (d)
		memcpy(s->spec_desc_sha, M->description_sha256.data, CLI_SHA256_BYTES);
	if (!d) {
		s->spec_c = (int)M->input[0];
		s->spec_h = (int)M->input[1];
		s->spec_w = (int)M->input[2];
		s->spec_classes = (int)M->classes;
	}
	s->base_loaded = 0;
	return FL_OK;
}

int cli_session_keep_model(struct cli_session *s)
{
	struct fl_wire_rx *rx;
	int err = cli_session_rx_new(s->model, s->dtype, &rx);
	if (!err) {
		fl_wire_rx_free(s->rx);
		s->rx = rx;
	}
	return err;
}

/* A Welcome without a description: the built-in network M->arch, for
 * inputs and classes the local data must fit. */
static int check_builtin_spec(const struct cli_session *s, const Fedloha__V1__ModelSpec *M)
{
	if (!fl_model_desc_builtin_valid(M->arch))
		return fl_error_set(FL_EUNSUPPORTED, "Welcome: unknown architecture '%s'", M->arch);
	if (M->n_input != 3)
		return fl_error_set(FL_EFORMAT,
				    "Welcome: model input has %zu dims, expected 3 "
				    "(c, h, w)",
				    M->n_input);
	const struct fl_dataset *d = s->cfg.data;
	if ((int64_t)M->input[0] != d->c || (int64_t)M->input[1] != d->h ||
	    (int64_t)M->input[2] != d->w)
		return fl_error_set(FL_ESHAPE,
				    "the server's model takes %ux%ux%u inputs but the "
				    "local data set has %dx%dx%d samples",
				    M->input[0], M->input[1], M->input[2], d->c, d->h, d->w);
	if ((int64_t)M->classes < d->classes || M->classes > CLI_SESSION_CLASSES_MAX)
		return fl_error_set(FL_ESHAPE,
				    "the server's model has %u classes but the local data "
				    "set has %d",
				    M->classes, d->classes);
	return FL_OK;
}

static int on_welcome(struct cli_session *s, const Fedloha__V1__Welcome *w)
{
	if (w->protocol_version != FL_WIRE_PROTOCOL_VERSION)
		return fl_error_set(FL_EUNSUPPORTED, "Welcome: protocol version %u, we speak %d",
				    w->protocol_version, FL_WIRE_PROTOCOL_VERSION);
	const Fedloha__V1__ModelSpec *M = w->model;
	if (!M || !M->arch)
		return fl_error_set(FL_EFORMAT, "Welcome without a model");
	int err = M->description_sha256.len ? FL_OK : check_builtin_spec(s, M);
	if (err)
		return cli_session_refuse(s, err);
	if ((err = cli_session_check_expected(s, M)))
		return err;
	if ((unsigned)w->dtype > FL_WIRE_INT8)
		return fl_error_set(FL_EFORMAT, "Welcome: unknown dtype %d", (int)w->dtype);
	uint32_t peer_max = FL_WIRE_MAX_FRAME_DEFAULT, chunk = FL_WIRE_CHUNK_DEFAULT;
	uint32_t hb = s->cfg.heartbeat_ms, idle = 0;
	if (w->limits) {
		if (w->limits->max_frame_bytes)
			peer_max = w->limits->max_frame_bytes;
		if (w->limits->chunk_bytes)
			chunk = w->limits->chunk_bytes;
		if (w->limits->heartbeat_ms)
			hb = w->limits->heartbeat_ms;
		idle = w->limits->idle_timeout_ms;
	}
	if (peer_max < FL_WIRE_MAX_FRAME_MIN)
		return fl_error_set(FL_ERANGE, "Welcome: max_frame_bytes %u < %u", peer_max,
				    FL_WIRE_MAX_FRAME_MIN);
	if (chunk > peer_max - FL_WIRE_ENVELOPE_SLACK)
		chunk = peer_max - FL_WIRE_ENVELOPE_SLACK;
	if (chunk < 16)
		return fl_error_set(FL_ERANGE, "Welcome: chunk_bytes %u < 16", chunk);
	s->dtype = (enum fl_wire_dtype)w->dtype;
	s->seed = w->seed;
	s->chunk_bytes = chunk;
	s->heartbeat_ms = hb;
	s->idle_timeout_ms = idle;
	if (M->description_sha256.len)
		return cli_session_welcome_desc(s, M, w->seed);
	if (!same_spec(s, M)) {
		if (s->busy)
			return fl_error_set(FL_EINVAL,
					    "the server's model changed while a job runs");
		err = cli_session_build_model(s, M, NULL, w->seed);
	} else { /* the dtype may have changed */
		err = cli_session_keep_model(s);
	}
	if (err)
		return err;
	return cli_session_welcome_base(s, M);
}

static int on_server_error(const Fedloha__V1__Error *e)
{
	return fl_error_set(fl_wire_error_from_code(e->code), "the server refused: %s (code %u)",
			    e->message && *e->message ? e->message : "no reason given", e->code);
}

int cli_session_on_frame(struct cli_session *s, const uint8_t *payload, size_t len, uint64_t now_ms)
{
	s->now_ms = now_ms;
	s->down += len + FL_WIRE_FRAME_HEADER_BYTES;
	s->last_recv_ms = now_ms;
	if (!s->connected)
		return fl_error_set(FL_EINVAL, "a frame arrived with no connection up");
	fl_envelope *env;
	int err = fl_wire_decode(payload, len, s->cfg.max_frame_bytes, &env);
	if (err)
		return err;
	enum cli_state st = s->st;
	switch (env->body_case) {
	case FEDLOHA__V1__ENVELOPE__BODY_HEARTBEAT: break;
	case FEDLOHA__V1__ENVELOPE__BODY_ERROR: err = on_server_error(env->error); break;
	case FEDLOHA__V1__ENVELOPE__BODY_BYE:
		if (env->bye->reason && !strcmp(env->bye->reason, "done"))
			s->finished = 1;
		break;
	case FEDLOHA__V1__ENVELOPE__BODY_WELCOME:
		err = st == CLI_ST_HELLO ? on_welcome(s, env->welcome) : NOT_HERE;
		break;
	case FEDLOHA__V1__ENVELOPE__BODY_BASE_CHUNK:
		err = st == CLI_ST_BASE ? cli_session_on_base_chunk(s, env->base_chunk) : NOT_HERE;
		break;
	case FEDLOHA__V1__ENVELOPE__BODY_TASK:
		err = st == CLI_ST_READY ? cli_session_on_task(s, env->task) : NOT_HERE;
		break;
	case FEDLOHA__V1__ENVELOPE__BODY_EVAL_TASK:
		err = st == CLI_ST_READY ? cli_session_on_eval_task(s, env->eval_task) : NOT_HERE;
		break;
	case FEDLOHA__V1__ENVELOPE__BODY_CHUNK:
		err = st == CLI_ST_RECV_TRAIN || st == CLI_ST_RECV_EVAL
			      ? cli_session_on_chunk(s, env->chunk)
			      : NOT_HERE;
		break;
	default: err = NOT_HERE; break;
	}
	if (err == NOT_HERE)
		err = fl_error_set(FL_EFORMAT, "unexpected %s from the server while %s",
				   body_name(env->body_case), state_name(st));
	fl_wire_envelope_free(env);
	return err;
}

/* ---- timers and accessors ---- */

int cli_session_send_heartbeat(struct cli_session *s)
{
	Fedloha__V1__Heartbeat h = FEDLOHA__V1__HEARTBEAT__INIT;
	h.time_ms = s->now_ms;
	fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT;
	env.body_case = FEDLOHA__V1__ENVELOPE__BODY_HEARTBEAT;
	env.heartbeat = &h;
	return cli_session_send_env(s, &env);
}

void cli_session_tick(struct cli_session *s, uint64_t now_ms)
{
	s->now_ms = now_ms;
	if (!s->connected || !s->heartbeat_ms || now_ms - s->last_send_ms < s->heartbeat_ms)
		return;
	if (cli_session_send_heartbeat(s) != FL_OK) {
		record_error(s, fl_error_msg());
		s->io.close(s->io.ctx);
	}
}

int cli_session_idle_expired(const struct cli_session *s, uint64_t now_ms)
{
	return s->connected && s->st != CLI_ST_HELLO && s->idle_timeout_ms &&
	       now_ms - s->last_recv_ms > s->idle_timeout_ms;
}

int cli_session_finished(const struct cli_session *s)
{
	return s->finished;
}

int cli_session_busy(const struct cli_session *s)
{
	return s->busy;
}

void cli_session_bytes(const struct cli_session *s, uint64_t *up, uint64_t *down)
{
	if (up)
		*up = s->up;
	if (down)
		*down = s->down;
}

struct fl_model *cli_session_model(struct cli_session *s)
{
	return s->model;
}

int cli_session_refused_model(const struct cli_session *s)
{
	return s->refused_model;
}

uint64_t cli_session_rounds_done(const struct cli_session *s)
{
	return s->rounds_done;
}

enum fl_wire_dtype cli_session_dtype(const struct cli_session *s)
{
	return s->dtype;
}

const char *cli_session_last_error(const struct cli_session *s)
{
	return s->last_error;
}
