/* engine.c - the round engine's lifecycle, public entry points and the
 * connection table: creating and restoring the engine, sending and counting
 * frames, dropping and rejecting connections (looked up through the
 * indexes of engine_map.c; upload slots are in engine_upload.c). Incoming frames are handled
 * in engine_conn.c, rounds and timers in engine_round.c. No I/O here: every
 * byte leaves through srv_engine_io. */
#include "engine_impl.h"

#include "checkpoint.h"
#include "errors.h"
#include "fsutil.h"
#include "model_desc.h"

#include <assert.h>
#include <math.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BASE_FILE_MAX ((size_t)1 << 34) /* 16 GiB */

void srv_engine_config_default(struct srv_engine_config *c)
{
	memset(c, 0, sizeof(*c));
	c->rounds = 3;
	c->seed = 0;
	c->min_available = 1;
	c->min_fit = 1;
	c->fraction = 1.0;
	c->min_report = 1;
	c->max_retries = 3;
	c->round_timeout_ms = 60000;
	c->relay_up_rate = SRV_RELAY_UP_RATE_DEFAULT;
	c->heartbeat_ms = 10000;
	c->idle_timeout_ms = 60000;
	c->epochs = 1;
	c->batch_size = 64;
	c->lr = 0.1f;
	c->lr_decay = 1.0f;
	c->optimizer = "sgd";
	srv_optim_config_default(&c->server_opt, SRV_OPTIM_FEDAVG);
	c->dtype = FL_WIRE_F32;
	c->max_frame_bytes = FL_WIRE_MAX_FRAME_DEFAULT;
	c->chunk_bytes = FL_WIRE_CHUNK_DEFAULT;
}

static int check_config(const struct srv_engine_config *c)
{
	if (c->rounds == 0)
		return fl_error_set(FL_EINVAL, "engine: rounds must be >= 1");
	if (c->min_available < 1 || c->min_fit < 1 || c->min_report < 1 || c->max_retries < 0)
		return fl_error_set(FL_EINVAL, "engine: min_available, min_fit, min_report must be "
					       ">= 1 and max_retries >= 0");
	if (!(c->fraction >= 0.0 && c->fraction <= 1.0))
		return fl_error_set(FL_EINVAL, "engine: fraction %g outside [0, 1]", c->fraction);
	if (c->round_timeout_ms == 0)
		return fl_error_set(FL_EINVAL, "engine: round_timeout_ms must be > 0");
	if (!isfinite(c->lr) || c->lr < 0 || !isfinite(c->lr_decay) || c->lr_decay <= 0 ||
	    !isfinite(c->momentum) || !isfinite(c->weight_decay) || !isfinite(c->prox_mu) ||
	    c->prox_mu < 0)
		return fl_error_set(FL_EINVAL, "engine: training settings must be finite "
					       "(lr >= 0, lr_decay > 0, prox_mu >= 0)");
	if (c->optimizer && strcmp(c->optimizer, "sgd") != 0 && strcmp(c->optimizer, "adam") != 0)
		return fl_error_set(FL_EINVAL, "engine: optimizer '%s' is not sgd or adam",
				    c->optimizer);
	if ((unsigned)c->dtype > FL_WIRE_INT8)
		return fl_error_set(FL_EINVAL, "engine: unknown dtype %d", (int)c->dtype);
	if (c->chunk_bytes < 64 || c->max_frame_bytes < FL_WIRE_MAX_FRAME_MIN ||
	    (uint64_t)c->chunk_bytes + FL_WIRE_ENVELOPE_SLACK > c->max_frame_bytes)
		return fl_error_set(FL_EINVAL,
				    "engine: chunk_bytes %u must be >= 64 and leave %u bytes of "
				    "max_frame_bytes %u for the envelope",
				    c->chunk_bytes, FL_WIRE_ENVELOPE_SLACK, c->max_frame_bytes);
	return FL_OK;
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

/* Cuts len bytes into BaseChunk frames (one empty frame when len is 0);
 * every requesting client is sent the same frames. */
static int chunk_frames(struct srv_engine *e, const char *data, size_t len, struct srv_frames *fr)
{
	size_t chunk = e->cfg.chunk_bytes, n = len ? (len + chunk - 1) / chunk : 1;
	fr->f = calloc(n, sizeof(*fr->f));
	if (!fr->f)
		return fl_error_set(FL_ENOMEM, "engine: out of memory for BaseChunk frames");
	int err = FL_OK;
	for (size_t i = 0; i < n && !err; i++) {
		size_t off = i * chunk, k = len - off < chunk ? len - off : chunk;
		Fedloha__V1__BaseChunk bc = FEDLOHA__V1__BASE_CHUNK__INIT;
		bc.offset = off;
		bc.data.data = (uint8_t *)data + off;
		bc.data.len = k;
		bc.last = i + 1 == n;
		fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT;
		env.body_case = FEDLOHA__V1__ENVELOPE__BODY_BASE_CHUNK;
		env.base_chunk = &bc;
		if ((err = fl_wire_encode(&env, &fr->f[i])) == FL_OK)
			fr->n++;
	}
	return err;
}

/* Reads the base file, hashes it and cuts it into frames once. */
static int load_base(struct srv_engine *e, const char *path)
{
	char *data = NULL;
	size_t len = 0;
	int err = fl_file_read_all(path, BASE_FILE_MAX, &data, &len);
	if (err != FL_OK)
		return err;
	crypto_hash_sha256(e->base_sha, (const unsigned char *)data, len);
	e->base_bytes = len;
	err = chunk_frames(e, data, len, &e->base);
	free(data);
	e->has_base = err == FL_OK;
	return err;
}

/* A model built from a description that is not a built-in network: its
 * SHA-256, whether it fits in the Welcome (the bound of engine.h), and its
 * frames for clients that fetch it. A built-in travels as its arch alone. */
static int load_desc(struct srv_engine *e)
{
	const struct fl_model_desc *d = fl_model_description(e->model);
	if (!d || !d->text)
		return fl_error_set(FL_EINVAL, "engine: the model has no description");
	if (d->builtin)
		return FL_OK;
	e->has_desc = 1;
	crypto_hash_sha256(e->desc_sha, (const unsigned char *)d->text, d->text_len);
	e->desc_bytes = d->text_len;
	size_t js = strlen(e->config_json), half = e->cfg.max_frame_bytes / 2;
	size_t bound = half > FL_WIRE_ENVELOPE_SLACK + js ? half - FL_WIRE_ENVELOPE_SLACK - js : 0;
	if (e->cfg.desc_inline_max && e->cfg.desc_inline_max < bound)
		bound = e->cfg.desc_inline_max;
	e->desc_inline = d->text_len <= bound;
	return chunk_frames(e, d->text, d->text_len, &e->descf);
}

int srv_engine_new(const struct srv_engine_config *cfg, struct fl_model *model,
		   const struct srv_engine_io *io, struct srv_engine **out)
{
	*out = NULL;
	int err = check_config(cfg);
	if (err != FL_OK)
		return err;
	if (!io || !io->send || !io->close)
		return fl_error_set(FL_EINVAL, "engine: io needs send and close");
	if (cfg->upload_slots && (!io->pause || !io->resume))
		return fl_error_set(FL_EINVAL, "engine: upload_slots needs io pause and resume");
	if (sodium_init() < 0)
		return fl_error_set(FL_EIO, "engine: libsodium failed to initialise");
	struct srv_engine *e = calloc(1, sizeof(*e));
	if (!e)
		return fl_error_set(FL_ENOMEM, "engine: out of memory");
	e->cfg = *cfg;
	e->model = model;
	e->io = *io;
	e->optimizer = strdup(cfg->optimizer ? cfg->optimizer : "sgd");
	e->checkpoint_path = dup_or_null(cfg->checkpoint_path);
	e->config_json = strdup(cfg->config_json ? cfg->config_json : "");
	if (!e->optimizer || !e->config_json || (cfg->checkpoint_path && !e->checkpoint_path)) {
		err = fl_error_set(FL_ENOMEM, "engine: out of memory");
		goto fail;
	}
	e->cfg.optimizer = e->optimizer;
	e->cfg.checkpoint_path = e->checkpoint_path;
	e->cfg.config_json = e->config_json;
	e->cfg.base_path = NULL;

	e->nglobal = fl_model_count_floats(model, FL_TENSOR_GLOBAL);
	size_t nt = fl_model_tensor_count(model);
	e->gt = calloc(nt ? nt : 1, sizeof(*e->gt));
	e->goff = calloc(nt ? nt : 1, sizeof(*e->goff));
	e->result = malloc((e->nglobal ? e->nglobal : 1) * sizeof(float));
	if (!e->gt || !e->goff || !e->result) {
		err = fl_error_set(FL_ENOMEM, "engine: out of memory");
		goto fail;
	}
	for (size_t i = 0; i < nt; i++) {
		const struct fl_model_tensor *t = fl_model_tensor_at(model, i);
		if (!(t->flags & FL_TENSOR_GLOBAL))
			continue;
		/* The GLOBAL tensors form the slice [0, nglobal) (model.h). */
		assert(t->offset + t->numel <= e->nglobal);
		fl_wire_tensor_init(&e->gt[e->K++], t->name, t->ndim, t->shape, t->numel, NULL);
		e->goff[e->K - 1] = t->offset;
	}
	e->by_name.by_name = 1;
	if ((err = srv_eng_uploads_init(e, cfg->upload_slots)) != FL_OK)
		goto fail;
	if ((err = srv_agg_new(e->nglobal, &e->agg)) != FL_OK)
		goto fail;
	if ((err = srv_optim_init(&e->opt, &cfg->server_opt, e->nglobal)) != FL_OK)
		goto fail;
	if (cfg->base_path && (err = load_base(e, cfg->base_path)) != FL_OK)
		goto fail;
	if ((err = load_desc(e)) != FL_OK)
		goto fail;
	e->phase = SRV_PHASE_WAIT;
	*out = e;
	return FL_OK;
fail:
	srv_engine_free(e);
	return err;
}

int srv_engine_restore(struct srv_engine *e)
{
	if (!e->checkpoint_path || !fl_path_exists(e->checkpoint_path))
		return FL_OK;
	if (e->nconns || e->done || e->phase != SRV_PHASE_WAIT)
		return fl_error_set(FL_EINVAL, "engine: restore only before the first connection");
	/* The seed must match: selections replay from it. */
	struct srv_checkpoint_meta meta;
	int err = srv_checkpoint_load(e->checkpoint_path, e->model, &e->opt, &e->cfg.seed, &meta);
	if (err != FL_OK)
		return err;
	e->done = meta.round;
	e->bytes_up = meta.bytes_up;
	e->bytes_down = meta.bytes_down;
	srv_eng_advance(e); /* every round already done: finished */
	return FL_OK;
}

static void conn_free(struct srv_engine *e, struct srv_conn *c)
{
	if (!c)
		return;
	srv_eng_upload_free(e, c);
	free(c);
}

void srv_eng_frames_free(struct srv_frames *fr)
{
	for (size_t i = 0; i < fr->n; i++)
		fl_buf_unref(fr->f[i]);
	free(fr->f);
	fr->f = NULL;
	fr->n = 0;
}

void srv_engine_free(struct srv_engine *e)
{
	if (!e)
		return;
	srv_eng_park_clear(e);
	for (size_t i = 0; i < e->nconns; i++)
		conn_free(e, e->conns[i]);
	free(e->conns);
	srv_map_free(&e->by_id);
	srv_map_free(&e->by_name);
	srv_eng_uploads_free(e);
	srv_eng_relay_free(e);
	for (int d = 0; d < SRV_NDTYPES; d++) {
		srv_eng_frames_free(&e->task[d]);
		srv_eng_frames_free(&e->evalf[d]);
	}
	srv_eng_frames_free(&e->base);
	srv_eng_frames_free(&e->descf);
	srv_agg_free(e->agg);
	srv_optim_free(&e->opt);
	free(e->result);
	free(e->gt);
	free(e->goff);
	free(e->optimizer);
	free(e->checkpoint_path);
	free(e->config_json);
	free(e);
}

/* ---- connections ---- */

struct srv_conn *srv_eng_find(struct srv_engine *e, uint64_t id)
{
	return srv_map_get_id(&e->by_id, id);
}

/* The last connection takes c's place in the table. */
static void conn_remove(struct srv_engine *e, struct srv_conn *c)
{
	assert(c->idx < e->nconns && e->conns[c->idx] == c);
	struct srv_conn *last = e->conns[--e->nconns];
	e->conns[c->idx] = last;
	last->idx = c->idx;
	srv_map_del(&e->by_id, c);
	if (c->state != SRV_CONN_NEW)
		srv_map_del(&e->by_name, c);
	srv_eng_lru_unlink(e, c);
}

void srv_eng_send(struct srv_engine *e, struct srv_conn *c, struct fl_buf *frame)
{
	size_t len = frame->len;
	if (e->io.send(e->io.ctx, c->id, frame) != 0)
		return;
	c->bytes_down += len;
	e->bytes_down += len;
	e->round_down += len;
}

void srv_eng_send_env(struct srv_engine *e, struct srv_conn *c, const fl_envelope *env)
{
	struct fl_buf *b = NULL;
	if (fl_wire_encode(env, &b) != FL_OK)
		return; /* only an allocation can fail here; the peer times out */
	srv_eng_send(e, c, b);
}

void srv_eng_send_frames(struct srv_engine *e, struct srv_conn *c, const struct srv_frames *fr)
{
	for (size_t i = 0; i < fr->n; i++)
		srv_eng_send(e, c, fl_buf_ref(fr->f[i]));
}

void srv_eng_send_bye(struct srv_engine *e, struct srv_conn *c, const char *reason)
{
	struct fl_buf *b = NULL;
	if (fl_wire_encode_bye(reason, &b) == FL_OK)
		srv_eng_send(e, c, b);
}

void srv_eng_send_heartbeat(struct srv_engine *e, struct srv_conn *c)
{
	Fedloha__V1__Heartbeat hb = FEDLOHA__V1__HEARTBEAT__INIT;
	hb.time_ms = e->now;
	fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT;
	env.body_case = FEDLOHA__V1__ENVELOPE__BODY_HEARTBEAT;
	env.heartbeat = &hb;
	srv_eng_send_env(e, c, &env);
}

static void conn_forget(struct srv_engine *e, struct srv_conn *c, int rejected)
{
	if (c->state == SRV_CONN_TASKED && e->phase == SRV_PHASE_TRAIN) {
		e->outstanding--;
		if (rejected)
			e->rejected++;
		else
			e->dropped++;
	}
	if (c->eval_pending && e->phase == SRV_PHASE_EVAL)
		e->eval_outstanding--;
	uint64_t id = c->id;
	srv_eng_relay_forget(e, id);
	conn_remove(e, c);
	conn_free(e, c);
	e->io.close(e->io.ctx, id);
}

void srv_eng_drop(struct srv_engine *e, struct srv_conn *c)
{
	conn_forget(e, c, 0);
}

void srv_eng_send_error(struct srv_engine *e, struct srv_conn *c, int err, const char *msg)
{
	struct fl_buf *b = NULL;
	if (fl_wire_encode_error(err, msg, &b) == FL_OK)
		srv_eng_send(e, c, b);
}

int srv_eng_reject(struct srv_engine *e, struct srv_conn *c, int err, const char *fmt, ...)
{
	char msg[SRV_WHY_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	srv_eng_send_error(e, c, err, msg);
	conn_forget(e, c, 1);
	return err;
}

void srv_eng_fail(struct srv_engine *e, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->why, sizeof(e->why), fmt, ap);
	va_end(ap);
	char reason[SRV_WHY_MAX + 16];
	snprintf(reason, sizeof(reason), "failed: %s", e->why);
	e->phase = SRV_PHASE_FAILED;
	srv_eng_park_clear(e);
	while (e->nconns) {
		struct srv_conn *c = e->conns[e->nconns - 1];
		if (c->state != SRV_CONN_NEW)
			srv_eng_send_bye(e, c, reason);
		conn_forget(e, c, 0);
	}
}

/* ---- public entry points ---- */

void srv_engine_on_connect(struct srv_engine *e, uint64_t conn, uint64_t now_ms)
{
	e->now = now_ms;
	if (srv_eng_find(e, conn))
		return; /* a transport bug; keep the existing state */
	if (e->phase == SRV_PHASE_DONE || e->phase == SRV_PHASE_FAILED) {
		e->io.close(e->io.ctx, conn);
		return;
	}
	struct srv_conn *c = calloc(1, sizeof(*c));
	if (c) {
		c->id = conn;
		if (srv_map_put(&e->by_id, c) != FL_OK) {
			free(c);
			c = NULL;
		}
	}
	if (c && e->nconns == e->cap) {
		size_t cap = e->cap ? 2 * e->cap : 16;
		struct srv_conn **p = realloc(e->conns, cap * sizeof(*p));
		if (!p) {
			srv_map_del(&e->by_id, c);
			free(c);
			c = NULL;
		} else {
			e->conns = p;
			e->cap = cap;
		}
	}
	if (!c) {
		e->io.close(e->io.ctx, conn);
		return;
	}
	c->state = SRV_CONN_NEW;
	c->slot = -1;
	c->last_rx_ms = now_ms;
	c->idx = e->nconns;
	e->conns[e->nconns++] = c;
	srv_eng_lru_touch(e, c);
	if (e->cfg.heartbeat_ms && e->next_hb == 0)
		e->next_hb = now_ms + e->cfg.heartbeat_ms;
}

void srv_engine_on_frame(struct srv_engine *e, uint64_t conn, const uint8_t *payload, size_t len,
			 uint64_t now_ms)
{
	e->now = now_ms;
	struct srv_conn *c = srv_eng_find(e, conn);
	if (!c)
		return;
	uint64_t n = (uint64_t)len + FL_WIRE_FRAME_HEADER_BYTES;
	c->bytes_up += n;
	e->bytes_up += n;
	e->round_up += n;
	c->last_rx_ms = now_ms;
	srv_eng_lru_touch(e, c);
	fl_envelope *env = NULL;
	int err = fl_wire_decode(payload, len, e->cfg.max_frame_bytes, &env);
	if (err != FL_OK) {
		srv_eng_reject(e, c, err, "undecodable frame: %s", fl_error_msg());
	} else {
		e->up.frame_parked = 0;
		srv_eng_handle(e, c, env);
		fl_wire_envelope_free(env);
		if (e->up.frame_parked) { /* not consumed: counted when it comes again */
			c->bytes_up -= n;
			e->bytes_up -= n;
			e->round_up -= n;
		}
	}
	srv_eng_advance(e);
}

void srv_engine_on_disconnect(struct srv_engine *e, uint64_t conn, uint64_t now_ms)
{
	e->now = now_ms;
	struct srv_conn *c = srv_eng_find(e, conn);
	if (!c)
		return;
	srv_eng_drop(e, c);
	srv_eng_advance(e);
}

void srv_engine_tick(struct srv_engine *e, uint64_t now_ms)
{
	e->now = now_ms;
	srv_eng_timers(e);
	srv_eng_advance(e);
}

uint64_t srv_engine_next_deadline(const struct srv_engine *e)
{
	return srv_eng_next_deadline(e);
}

int srv_engine_finished(const struct srv_engine *e)
{
	return e->phase == SRV_PHASE_DONE;
}

int srv_engine_failed(const struct srv_engine *e, const char **why)
{
	if (why)
		*why = e->phase == SRV_PHASE_FAILED ? e->why : NULL;
	return e->phase == SRV_PHASE_FAILED;
}

uint64_t srv_engine_round(const struct srv_engine *e)
{
	return e->done;
}

void srv_engine_bytes(const struct srv_engine *e, uint64_t *up, uint64_t *down)
{
	if (up)
		*up = e->bytes_up;
	if (down)
		*down = e->bytes_down;
}

size_t srv_engine_conn_count(const struct srv_engine *e)
{
	return e->nconns;
}

int srv_engine_conn_bytes(const struct srv_engine *e, uint64_t conn, uint64_t *up, uint64_t *down)
{
	const struct srv_conn *c = srv_map_get_id(&e->by_id, conn);
	if (!c)
		return 0;
	if (up)
		*up = c->bytes_up;
	if (down)
		*down = c->bytes_down;
	return 1;
}

void srv_engine_upload_stats(const struct srv_engine *e, struct srv_upload_stats *out)
{
	out->slots = e->up.nslots;
	out->in_use = e->up.in_use;
	out->peak = e->up.peak;
	out->parked = e->up.parks;
	out->discarded = e->up.discarded;
}
