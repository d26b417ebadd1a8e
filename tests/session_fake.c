/* session_fake.c - a fake server for the client-session tests: a transport
 * that collects frames and runs jobs inline (or holds them), a small
 * synthetic data set, and helpers that encode Welcome / RoundTask + tensors
 * and decode the Update that comes back. */
#include "session_fake.h"

#include "errors.h"
#include "testutil.h"
#include "wireutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *FEDPARA = "{\"peft_type\": \"LOHA\", \"r\": 4, \"alpha\": 4, "
		      "\"fedloha_parameterization\": \"fedpara\"}";
const char *PFEDPARA = "{\"peft_type\": \"LOHA\", \"r\": 4, \"alpha\": 4, "
		       "\"fedloha_parameterization\": \"pfedpara\"}";
const char *LOHA = "{\"peft_type\": \"LOHA\", \"r\": 4, \"alpha\": 8}";

/* ---- a fake transport ---- */

int fake_send(void *ctx, struct fl_buf *b)
{
	struct fake *fk = ctx;
	if (fk->fail_send) {
		fl_buf_unref(b);
		return -1;
	}
	if (fk->n == fk->cap) {
		fk->cap = fk->cap ? 2 * fk->cap : 16;
		fk->f = realloc(fk->f, sizeof(*fk->f) * fk->cap);
	}
	fk->f[fk->n++] = b;
	return 0;
}

void fake_close(void *ctx)
{
	((struct fake *)ctx)->closed++;
}

int fake_submit(void *ctx, struct cli_job *j)
{
	struct fake *fk = ctx;
	if (!fk->sync) {
		fk->pending = j;
		return 0;
	}
	cli_job_run(j);
	cli_session_on_job_done(fk->s, j);
	return 0;
}

void fake_clear(struct fake *fk)
{
	for (size_t i = 0; i < fk->n; i++)
		fl_buf_unref(fk->f[i]);
	fk->n = 0;
}

fl_envelope *frame_env(struct fake *fk, size_t i)
{
	fl_envelope *e = NULL;
	if (i >= fk->n)
		return NULL;
	if (fl_wire_decode(fk->f[i]->data + 4, fk->f[i]->len - 4, FL_WIRE_MAX_FRAME_DEFAULT, &e))
		return NULL;
	return e;
}

/* ---- fixture ---- */

struct fl_dataset *make_data(void)
{
	struct fl_dataset *d = NULL;
	if (fl_dataset_new(N_SAMPLES, C_, H_, W_, CLASSES, &d))
		return NULL;
	struct fl_rng r;
	fl_rng_seed(&r, 7);
	for (int i = 0; i < N_SAMPLES; i++) {
		d->labels[i] = (uint8_t)(i % CLASSES);
		for (int p = 0; p < C_ * H_ * W_; p++) /* a label-dependent bright pixel + noise */
			d->pixels[i * C_ * H_ * W_ + p] =
				(uint8_t)(p == d->labels[i] * 3 ? 250 : fl_rng_below(&r, 60));
	}
	return d;
}

static int g_train[64], g_eval[16];

struct cli_session *make_session(struct fake *fk, const struct fl_dataset *d, const char *state_dir,
				 const char *id)
{
	for (int i = 0; i < 64; i++)
		g_train[i] = i;
	for (int i = 0; i < 16; i++)
		g_eval[i] = 64 + i;
	struct cli_session_config cfg;
	cli_session_config_default(&cfg);
	cfg.client_id = id ? id : "client-7";
	cfg.data = d;
	cfg.train_idx = g_train;
	cfg.n_train = 64;
	cfg.eval_idx = g_eval;
	cfg.n_eval = 16;
	cfg.preferred_dtype = FL_WIRE_BF16;
	cfg.state_dir = state_dir;
	cfg.heartbeat_ms = 1000;
	return fake_session_new(fk, &cfg);
}

struct cli_session *fake_session_new(struct fake *fk, const struct cli_session_config *cfg)
{
	memset(fk, 0, sizeof(*fk));
	fk->sync = 1;
	struct cli_session_io io = {fk, fake_send, fake_close, fake_submit};
	struct cli_session *s = NULL;
	int err = cli_session_new(cfg, &io, &s);
	FL_CHECK_MSG(err == FL_OK, "cli_session_new: %s", fl_error_msg());
	fk->s = s;
	return s;
}

struct cli_session *base_path_session(struct fake *fk, const struct fl_dataset *d, const char *id,
				      const char *state_dir, const char *base_path)
{
	struct cli_session_config cfg;
	cli_session_config_default(&cfg);
	cfg.client_id = id;
	cfg.data = d;
	cfg.state_dir = state_dir;
	cfg.base_path = base_path;
	struct cli_session *s = fake_session_new(fk, &cfg);
	if (s)
		cli_session_on_connect(s, 0);
	return s;
}

void free_session(struct fake *fk)
{
	cli_session_free(fk->s);
	fake_clear(fk);
	free(fk->f);
	fk->f = NULL;
}

int deliver(struct cli_session *s, const fl_envelope *env, uint64_t *down)
{
	struct fl_buf *b;
	int err = fl_wire_encode(env, &b);
	if (err)
		return err;
	if (down)
		*down += b->len;
	err = cli_session_on_frame(s, b->data + 4, b->len - 4, 100);
	fl_buf_unref(b);
	return err;
}

struct welcome_opts wopts(const char *json)
{
	struct welcome_opts o = {
		"2nn", json, FL_WIRE_PROTOCOL_VERSION, C_, H_, W_, CLASSES, 256, FL_WIRE_F32,
		NULL,  0};
	return o;
}

int send_welcome(struct cli_session *s, const struct welcome_opts *o, uint64_t *down)
{
	uint32_t input[3];
	Fedloha__V1__ModelSpec m = FEDLOHA__V1__MODEL_SPEC__INIT;
	fl_test_model_spec(&m, input, o->arch, o->in_c, o->in_h, o->in_w, o->classes);
	m.config_json = (char *)o->json;
	if (o->sha) {
		m.base_sha256.data = (uint8_t *)o->sha;
		m.base_sha256.len = 32;
		m.base_bytes = o->base_bytes;
	}
	Fedloha__V1__Limits l = FEDLOHA__V1__LIMITS__INIT;
	l.chunk_bytes = o->chunk;
	l.heartbeat_ms = 1000;
	l.idle_timeout_ms = 5000;
	Fedloha__V1__Welcome w = FEDLOHA__V1__WELCOME__INIT;
	w.protocol_version = o->version;
	w.session_id = "sess-1";
	w.model = &m;
	w.limits = &l;
	w.dtype = (Fedloha__V1__DType)o->dtype;
	w.seed = SEED;
	fl_envelope env = fl_test_envelope(&w.base);
	return deliver(s, &env, down);
}

struct fl_model *server_model(const char *json, uint64_t seed)
{
	struct fl_peft_config *pc = NULL;
	struct fl_model *m = NULL;
	if (json && fl_peft_config_parse(json, strlen(json), "test", &pc))
		return NULL;
	int err = fl_model_new("2nn", C_, H_, W_, CLASSES, pc, seed, 16, &m);
	FL_CHECK_MSG(err == FL_OK, "server model: %s", fl_error_msg());
	fl_peft_config_free(pc);
	return m;
}

size_t global_count(struct fl_model *m)
{
	size_t k = 0;
	for (size_t i = 0; i < fl_model_tensor_count(m); i++)
		k += (fl_model_tensor_at(m, i)->flags & FL_TENSOR_GLOBAL) != 0;
	return k;
}

/* The model's GLOBAL tensors as wire descriptors (data in the model). */
size_t wire_globals(struct fl_model *m, struct fl_wire_tensor *w)
{
	size_t k = 0;
	for (size_t i = 0; i < fl_model_tensor_count(m); i++) {
		const struct fl_model_tensor *t = fl_model_tensor_at(m, i);
		if (!(t->flags & FL_TENSOR_GLOBAL))
			continue;
		fl_wire_tensor_init(&w[k++], t->name, t->ndim, t->shape, t->numel,
				    fl_model_params(m) + t->offset);
	}
	return k;
}

float g_lr = 0.05f;
enum fl_wire_dtype g_dtype = FL_WIRE_F32;

/* RoundTask for `round` + the server model's global tensors. */
int send_task(struct cli_session *s, struct fl_model *srv, uint64_t round, uint32_t k_override,
	      int batch, uint64_t *down)
{
	Fedloha__V1__TrainSettings ts = FEDLOHA__V1__TRAIN_SETTINGS__INIT;
	Fedloha__V1__RoundTask t = FEDLOHA__V1__ROUND_TASK__INIT;
	fl_test_round_task(&t, &ts, round, 2, (uint32_t)batch, g_lr,
			   k_override ? k_override : (uint32_t)global_count(srv));
	ts.momentum = 0.9f;
	ts.optimizer = "sgd";
	t.deadline_ms = 60000;
	fl_envelope env = fl_test_envelope(&t.base);
	int err = deliver(s, &env, down);
	if (err)
		return err;
	struct fl_wire_tensor w[64];
	size_t k = wire_globals(srv, w);
	for (size_t i = 0; i < k && !err; i++) {
		struct fl_buf **fr = NULL;
		size_t nf = 0;
		err = fl_wire_tensor_encode(round, &w[i], g_dtype, 256, &fr, &nf);
		for (size_t j = 0; j < nf; j++) {
			if (!err) {
				if (down)
					*down += fr[j]->len;
				err = cli_session_on_frame(s, fr[j]->data + 4, fr[j]->len - 4, 100);
			}
			fl_buf_unref(fr[j]);
		}
		free(fr);
	}
	return err;
}

/* Finds the Update among the fake's frames and decodes the chunks after it
 * into `into` (a model of the same spec). Returns the Update's index or -1;
 * names of the received tensors go to saw_w2 / saw_w1. */
int collect_update(struct fake *fk, struct fl_model *into, uint64_t round, int *saw_w1, int *saw_w2)
{
	int at = -1;
	for (size_t i = 0; i < fk->n && at < 0; i++) {
		fl_envelope *e = frame_env(fk, i);
		if (e && e->body_case == FEDLOHA__V1__ENVELOPE__BODY_UPDATE) {
			at = (int)i;
			FL_CHECK(e->update->round == round);
			FL_CHECK(e->update->num_examples == 64);
			FL_CHECK(e->update->num_tensors == global_count(into));
			/* 3, plus 3 held-out figures when the client holds samples out */
			size_t nm = e->update->n_metrics;
			FL_CHECK(nm == 3 || nm == 6);
			if (nm == 3 || nm == 6) {
				FL_CHECK(!strcmp(e->update->metrics[0]->name, "train_loss"));
				FL_CHECK(e->update->metrics[0]->value > 0);
				FL_CHECK(!strcmp(e->update->metrics[1]->name, "train_accuracy"));
				FL_CHECK(!strcmp(e->update->metrics[2]->name, "seconds"));
			}
			if (nm == 6) {
				FL_CHECK(!strcmp(e->update->metrics[3]->name, "holdout_loss"));
				FL_CHECK(!strcmp(e->update->metrics[4]->name, "holdout_accuracy"));
				FL_CHECK(e->update->metrics[4]->value >= 0 &&
					 e->update->metrics[4]->value <= 1);
				FL_CHECK(!strcmp(e->update->metrics[5]->name, "holdout_examples"));
				FL_CHECK(e->update->metrics[5]->value >= 1);
			}
		}
		fl_wire_envelope_free(e);
	}
	if (!FL_CHECK_MSG(at >= 0, "no Update sent"))
		return -1;
	struct fl_wire_tensor w[64];
	size_t k = wire_globals(into, w);
	struct fl_wire_rx *rx = NULL;
	FL_CHECK(fl_wire_rx_new(w, k, g_dtype, &rx) == FL_OK);
	fl_wire_rx_reset(rx, round);
	*saw_w1 = *saw_w2 = 0;
	for (size_t i = (size_t)at + 1; i < fk->n; i++) {
		fl_envelope *e = frame_env(fk, i);
		if (FL_CHECK(e && e->body_case == FEDLOHA__V1__ENVELOPE__BODY_CHUNK)) {
			*saw_w1 |= strstr(e->chunk->name, "hada_w1_") != NULL;
			*saw_w2 |= strstr(e->chunk->name, "hada_w2_") != NULL;
			FL_CHECK(e->chunk->dtype == (Fedloha__V1__DType)g_dtype &&
				 e->chunk->round == round);
			int err = fl_wire_rx_chunk(rx, e->chunk);
			FL_CHECK_MSG(err == FL_OK, "update chunk: %s", fl_error_msg());
		}
		fl_wire_envelope_free(e);
	}
	FL_CHECK_MSG(fl_wire_rx_complete(rx), "update incomplete");
	fl_wire_rx_free(rx);
	return at;
}
