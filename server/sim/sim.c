/* sim.c - fedloha-sim's set-up and bookkeeping: the PEFT-format model
 * config every party builds from, the engine and its model, the keys of the
 * secure channel (seeded) and their admission, the rows of results (engine
 * reports + central evaluations on copies of the global model), what each
 * MPI rank sets up, and teardown. The transport and the loop are in
 * sim_loop.c, the client ends (sessions) in sim_cend.c, MPI in sim_mpi.c
 * (the digest the ranks compare in sim_digest.c), the worker threads in
 * sim_pool.c, result files in sim_report.c, the initial model (--init) in
 * sim_init.c, the data in sim_data.c, the config's defaults and checks in
 * sim_config.c. */
#include "sim_impl.h"

#include "blas.h"
#include "errors.h"
#include "model_io.h"
#include "rng.h"

#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the model config every party builds from ---- */

/* The PEFT-format JSON sent in Welcome ("" for dense: no config). */
/* o[key] = the items of the comma-separated list: FL_OK, FL_ENOMEM, or
 * FL_EINVAL for a bad item (the error set). */
static int add_list(json_t *o, const char *key, const char *list)
{
	json_t *a = json_array();
	if (!a || json_object_set_new(o, key, a))
		return FL_ENOMEM;
	for (const char *p = list; *p;) {
		size_t len = strcspn(p, ",");
		if (len == 0 || len >= 64)
			return fl_error_set(FL_EINVAL, "sim: %s: bad item in '%s'", key, list);
		if (json_array_append_new(a, json_stringn(p, len)))
			return FL_ENOMEM;
		p += len + (p[len] == ',');
	}
	return FL_OK;
}

int sim_make_config(const struct srv_sim_config *cfg, char **json, struct fl_peft_config **peft)
{
	*json = NULL;
	*peft = NULL;
	if (cfg->param == FL_PEFT_PARAM_DENSE) {
		*json = strdup("");
		return *json ? FL_OK : fl_error_set(FL_ENOMEM, "sim: out of memory");
	}
	int r = cfg->rank > 0 ? cfg->rank : 8;
	json_t *o = json_object();
	int bad = !o;
	bad = bad || json_object_set_new(o, "peft_type", json_string("LOHA"));
	bad = bad || json_object_set_new(o, "r", json_integer(r));
	bad = bad || json_object_set_new(o, "alpha", json_real((double)r));
	bad = bad ||
	      json_object_set_new(o, "use_effective_conv2d",
				  json_boolean(cfg->tucker && cfg->param != FL_PEFT_PARAM_LOHA));
	bad = bad || json_object_set_new(o, "fedloha_parameterization",
					 json_string(fl_peft_param_name(cfg->param)));
	if (cfg->rank <= 0 && cfg->param != FL_PEFT_PARAM_LOHA)
		bad = bad || json_object_set_new(o, "fedloha_gamma", json_real(cfg->gamma));
	if (!bad && cfg->param == FL_PEFT_PARAM_LOHA && cfg->modules_to_save)
		bad = add_list(o, "modules_to_save", cfg->modules_to_save);
	if (!bad && cfg->targets && sim_targets_all_linear(cfg->targets))
		bad = json_object_set_new(o, "target_modules", json_string("all-linear"));
	else if (!bad && cfg->targets)
		bad = add_list(o, "target_modules", cfg->targets);
	if (bad == FL_EINVAL) {
		json_decref(o);
		return FL_EINVAL;
	}
	char *text = bad ? NULL : json_dumps(o, JSON_SORT_KEYS | JSON_COMPACT);
	json_decref(o);
	if (!text)
		return fl_error_set(FL_ENOMEM, "sim: out of memory");
	int err = fl_peft_config_parse(text, strlen(text), "sim model config", peft);
	if (err) {
		free(text);
		return err;
	}
	*json = text;
	return FL_OK;
}

static int new_model(const struct sim *s, int max_batch, struct fl_model **out)
{
	const struct fl_dataset *d = s->data->train;
	int err = sim_model_new(s->cfg, d, s->peft, s->cfg->train.seed, max_batch, out);
	if (!err && s->cfg->base_path && (err = fl_model_load_base(*out, s->cfg->base_path))) {
		fl_model_free(*out);
		*out = NULL;
	}
	return err;
}

/* ---- rows ---- */

static void emit_rows(struct sim *s)
{
	while (s->rows_emitted < s->cfg->train.rounds && s->row_ready[s->rows_emitted] == 3) {
		if (s->cfg->cb.on_row)
			s->cfg->cb.on_row(s->cfg->cb.ctx, s->cfg, &s->rows[s->rows_emitted]);
		s->rows_emitted++;
	}
}

static void fail(struct sim *s, const char *what)
{
	if (s->failed)
		return;
	s->failed = 1;
	snprintf(s->why, sizeof(s->why), "%s", what);
}

static void eval_task_run(struct sim_task *t)
{
	struct sim_eval *ev = (struct sim_eval *)((char *)t - offsetof(struct sim_eval, task));
	const struct fl_dataset *test = ev->sim->data->test;
	struct fl_train_stats st;
	fl_error_clear();
	ev->err = fl_trainer_evaluate(ev->trainer, test, NULL, test->n, &st);
	if (ev->err)
		snprintf(ev->errmsg, sizeof(ev->errmsg), "%s", fl_error_msg());
	ev->loss = st.loss;
	ev->accuracy = st.accuracy;
}

static struct sim_eval *eval_slot(struct sim *s)
{
	for (int i = 0; i < s->nevals; i++)
		if (!s->evals[i]->busy)
			return s->evals[i];
	struct sim_eval **p = realloc(s->evals, (size_t)(s->nevals + 1) * sizeof(*p));
	if (!p)
		return NULL;
	s->evals = p;
	struct sim_eval *ev = calloc(1, sizeof(*ev));
	if (!ev)
		return NULL;
	ev->sim = s;
	ev->task.run = eval_task_run;
	struct fl_optim_config oc;
	fl_optim_config_default(&oc, FL_OPTIM_SGD);
	oc.momentum = 0;
	if (new_model(s, s->cfg->eval_batch, &ev->model) ||
	    fl_trainer_new(ev->model, &oc, s->cfg->eval_batch, &ev->trainer)) {
		fl_model_free(ev->model);
		free(ev);
		return NULL;
	}
	s->evals[s->nevals++] = ev;
	return ev;
}

void sim_on_report(struct sim *s, const struct srv_round_report *r)
{
	if (r->round < 1 || r->round > s->cfg->train.rounds)
		return;
	size_t i = (size_t)(r->round - 1);
	struct srv_sim_row *row = &s->rows[i];
	row->round = r->round;
	row->train_loss = r->train_loss;
	row->train_accuracy = r->train_accuracy;
	row->bytes_up = r->bytes_up;
	row->bytes_down = r->bytes_down;
	row->total_up = r->total_up;
	row->total_down = r->total_down;
	row->selected = r->selected;
	row->reported = r->reported;
	row->dropped = r->dropped;
	row->attempts = r->attempts;
	row->seconds = sim_wall_seconds() - s->t0;
	s->row_ready[i] |= 1;
	if (r->holdout_clients > 0) {
		row->has_post = 1;
		row->post_accuracy = r->holdout_accuracy;
		row->post_loss = r->holdout_loss;
	}
	if (r->eval_clients > 0) {
		row->has_fed = 1;
		row->fed_accuracy = r->eval_accuracy;
		row->fed_loss = r->eval_loss;
	}
	if (s->res->fed_headline) { /* 0 when no client evaluated (has_fed 0) */
		row->accuracy = r->eval_accuracy;
		row->loss = r->eval_loss;
	}
	if (s->pfed) {
		s->row_ready[i] |= 2; /* no central evaluation: no client runs the global model */
	} else {
		struct sim_eval *ev = eval_slot(s);
		if (!ev) {
			char msg[FL_ERROR_MSG_MAX + 64];
			snprintf(msg, sizeof(msg), "central evaluation model: %s", fl_error_msg());
			fail(s, msg);
			return;
		}
		memcpy(fl_model_params(ev->model), fl_model_params(s->model),
		       sizeof(float) * fl_model_param_floats(s->model));
		fl_model_params_changed(ev->model);
		ev->round = r->round;
		ev->busy = 1;
		ev->task.ordered = 0;
		sim_pool_submit(&s->pool, &ev->task);
	}
	emit_rows(s);
}

void sim_on_eval_done(struct sim *s, struct sim_eval *ev)
{
	ev->busy = 0;
	if (ev->err) {
		char msg[FL_ERROR_MSG_MAX + 64];
		snprintf(msg, sizeof(msg), "central evaluation of round %llu: %s",
			 (unsigned long long)ev->round, ev->errmsg);
		fail(s, msg);
		return;
	}
	struct srv_sim_row *row = &s->rows[ev->round - 1];
	row->has_central = 1;
	row->central_accuracy = ev->accuracy;
	row->central_loss = ev->loss;
	if (!s->res->fed_headline) {
		row->accuracy = ev->accuracy;
		row->loss = ev->loss;
	}
	s->row_ready[ev->round - 1] |= 2;
	emit_rows(s);
}

/* ---- keys of the secure channel ---- */

#define SIM_KEY_STREAM 0x53494d4b45595321ull /* "SIMKEYS!" */

int sim_seeded_identity(uint64_t seed, uint64_t stream, struct fl_identity **out)
{
	struct fl_rng rng;
	uint8_t bytes[32];
	fl_rng_seed_stream(&rng, seed ^ SIM_KEY_STREAM, stream);
	for (int i = 0; i < 4; i++) {
		uint64_t v = fl_rng_next(&rng);
		for (int b = 0; b < 8; b++)
			bytes[8 * i + b] = (uint8_t)(v >> (8 * b));
	}
	int err = fl_identity_from_seed(bytes, out);
	memset(bytes, 0, sizeof(bytes));
	return err;
}

static int key_cmp(const void *a, const void *b)
{
	return memcmp(a, b, FL_PUBKEY_BYTES);
}

int sim_authorize(void *ctx, const uint8_t pk[FL_PUBKEY_BYTES], const uint8_t *token, char *reason,
		  size_t reason_cap)
{
	const struct sim *s = ctx;
	(void)token;
	if (bsearch(pk, s->client_pks, (size_t)s->nclients, FL_PUBKEY_BYTES, key_cmp))
		return 0;
	snprintf(reason, reason_cap, "client key not in the simulation's set");
	return FL_ENOTFOUND;
}

/* The admitted client keys (the coordinator's key is the client ends'
 * s->coord, sim_cends_setup). */
static int setup_keys(struct sim *s)
{
	s->client_pks = malloc((size_t)s->nclients * FL_PUBKEY_BYTES);
	if (!s->client_pks)
		return fl_error_set(FL_ENOMEM, "sim: out of memory");
	for (int i = 0; i < s->nclients; i++) {
		struct fl_identity *key = NULL;
		int err = sim_seeded_identity(s->cfg->train.seed, (uint64_t)i + 1, &key);
		if (err)
			return err;
		memcpy(s->client_pks + (size_t)i * FL_PUBKEY_BYTES, fl_identity_pk(key),
		       FL_PUBKEY_BYTES);
		fl_identity_free(key);
	}
	qsort(s->client_pks, (size_t)s->nclients, FL_PUBKEY_BYTES, key_cmp);
	return FL_OK;
}

/* ---- set-up and teardown ---- */

/* The global model the engine starts from, its config text and the
 * --init weights. */
static int setup_model(struct sim *s)
{
	const struct srv_sim_config *cfg = s->cfg;
	int err = sim_make_config(cfg, &s->config_json, &s->peft);
	if (!err)
		err = new_model(s, 1, &s->model);
	if (!err)
		err = sim_check_modules_to_save(cfg, s->model);
	/* the engine sends the global tensors every round and the clients load
	 * the same base, so the engine's model is the only one to initialise */
	if (!err && cfg->init_path)
		err = sim_load_init(s->model, cfg);
	return err;
}

/* The rows, the coordinator ends with their ids, and the admitted keys. */
static int setup_clients(struct sim *s, int n)
{
	s->rows = calloc(s->cfg->train.rounds, sizeof(*s->rows));
	s->row_ready = calloc(s->cfg->train.rounds, sizeof(*s->row_ready));
	s->clients = calloc((size_t)n, sizeof(*s->clients));
	if (!s->rows || !s->row_ready || !s->clients)
		return fl_error_set(FL_ENOMEM, "sim: out of memory");
	s->next_conn = 1;
	for (int i = 0; i < n; i++) {
		s->clients[i].sim = s;
		s->clients[i].index = i;
		snprintf(s->clients[i].id, sizeof(s->clients[i].id), "client-%05d", i);
	}
	return s->cfg->secure ? setup_keys(s) : FL_OK;
}

/* Clients selected per round: ceil(fraction * n) within [1, n]. */
static int selected_per_round(const struct srv_sim_config *cfg, int n)
{
	int selected = (int)ceil(cfg->train.fraction * n);
	if (selected < 1)
		selected = 1;
	return selected > n ? n : selected;
}

/* The engine's config: the shared training options, then what the
 * simulation fixes (everyone connected, virtual deadlines, no heartbeat,
 * the dtype forced). */
static void engine_config(const struct sim *s, int n, int selected, struct srv_engine_config *ec)
{
	const struct srv_sim_config *cfg = s->cfg;
	struct srv_train_opts t = cfg->train;
	t.min_report = t.min_report > 0 ? t.min_report : selected / 2;
	if (t.min_report < 1)
		t.min_report = 1;
	if (t.min_report > selected)
		t.min_report = selected;
	if (!t.prox)
		t.prox_mu = 0.0f;
	srv_engine_config_default(ec);
	srv_train_opts_engine_config(&t, ec);
	ec->min_available = n; /* every client is connected before a round starts */
	ec->min_fit = 1;
	ec->max_retries = 20;
	ec->round_timeout_ms = 3600u * 1000u; /* virtual: only a stuck client reaches it */
	ec->heartbeat_ms = 0;
	ec->idle_timeout_ms = 0;
	ec->optimizer = "sgd";
	ec->dtype_required = 1;
	ec->eval_every = s->pfed || cfg->fed_eval ? 1 : 0;
	ec->config_json = s->config_json;
	ec->base_path = cfg->base_path;
}

/* Rank 0: the model, the engine, the coordinator ends; every rank: the
 * client ends it owns and its worker pool. */
static int setup(struct sim *s)
{
	int n = s->data->part->clients;
	s->nclients = n;
	int err = s->rank == 0 ? setup_model(s) : FL_OK;
	if (!err && s->rank == 0)
		err = setup_clients(s, n);
	if (!err)
		err = sim_cends_setup(s);
	if (!err && (err = sim_pool_init(&s->pool, s->cfg->threads)) == FL_OK)
		s->pool_up = 1;
	if (err || s->rank > 0)
		return err;
	int selected = selected_per_round(s->cfg, n);
	struct srv_engine_config ec;
	engine_config(s, n, selected, &ec);
	struct srv_engine_io eio;
	sim_io_setup(s, &eio);
	if ((err = srv_engine_new(&ec, s->model, &eio, &s->engine)))
		return err;
	s->res->clients = n;
	s->res->selected_per_round = selected;
	s->res->param_floats = fl_model_param_floats(s->model);
	s->res->global_floats = fl_model_count_floats(s->model, FL_TENSOR_GLOBAL);
	return FL_OK;
}

static void teardown(struct sim *s)
{
	if (s->pool_up)
		sim_pool_destroy(&s->pool); /* every job has been handed back by now */
	sim_events_free(s);
	sim_cends_free(s);
	for (int i = 0; s->clients && i < s->nclients; i++)
		sim_conn_release(&s->clients[i]);
	fl_identity_free(s->coord);
	free(s->client_pks);
	free(s->clients);
	for (int i = 0; i < s->nevals; i++) {
		fl_trainer_free(s->evals[i]->trainer);
		fl_model_free(s->evals[i]->model);
		free(s->evals[i]);
	}
	free(s->evals);
	srv_engine_free(s->engine);
	fl_model_free(s->model);
	fl_peft_config_free(s->peft);
	free(s->config_json);
	free(s->rows);
	free(s->row_ready);
}

static int finish(struct sim *s)
{
	struct srv_sim_result *res = s->res;
	res->nrows = s->rows_emitted;
	res->rows = malloc((res->nrows ? res->nrows : 1) * sizeof(*res->rows));
	res->n_final_params = fl_model_param_floats(s->model);
	res->final_params = malloc(res->n_final_params * sizeof(float));
	if (!res->rows || !res->final_params)
		return fl_error_set(FL_ENOMEM, "sim: out of memory");
	memcpy(res->rows, s->rows, res->nrows * sizeof(*res->rows));
	memcpy(res->final_params, fl_model_params(s->model), res->n_final_params * sizeof(float));
	srv_engine_bytes(s->engine, &res->engine_up, &res->engine_down);
	res->seconds = sim_wall_seconds() - s->t0;
	if (s->cfg->model_dir) {
		char meta[512];
		const struct srv_sim_row *last = res->nrows ? &res->rows[res->nrows - 1] : NULL;
		snprintf(
			meta, sizeof(meta),
			"{\"simulation\": {\"label\": \"%s\", \"rounds\": %zu, \"accuracy\": %.6f, "
			"\"seed\": %llu}}",
			res->label, res->nrows, last ? last->accuracy : 0.0,
			(unsigned long long)s->cfg->train.seed);
		int err = fl_model_save(s->model, s->cfg->model_dir, meta);
		if (err)
			return err;
	}
	return FL_OK;
}

/* Every rank's checks of the configuration and its result struct, agreed
 * (one failing rank fails it on every rank, so that every rank skips it);
 * local-only: rank 0's run. 1 when the run goes on (*res set on every
 * rank), else 0 with *err set. */
static int run_start(const struct srv_sim_config *cfg, const struct srv_sim_data *d, int rank,
		     struct srv_sim_result **res, struct srv_sim_result **out, int *err)
{
	*res = NULL;
	*err = sim_check_config(cfg, d);
	if (!*err && !cfg->local_only && !(*res = calloc(1, sizeof(**res))))
		*err = fl_error_set(FL_ENOMEM, "sim: out of memory");
	*err = srv_sim_mpi_agree(*err);
	if (!*err && cfg->local_only) /* no communication: rank 0 runs it alone */
		*err = rank == 0 ? sim_local_run(cfg, d, out) : FL_OK;
	if (!*err && !cfg->local_only)
		return 1;
	free(*res);
	*res = NULL;
	return 0;
}

int srv_sim_run(const struct srv_sim_config *cfg, const struct srv_sim_data *d,
		struct srv_sim_result **out)
{
	*out = NULL;
	struct sim s = {.cfg = cfg,
			.data = d,
			.pfed = cfg->param == FL_PEFT_PARAM_PFEDPARA,
			.rank = srv_sim_mpi_rank(),
			.nranks = srv_sim_mpi_size()};
	int err;
	if (!run_start(cfg, d, s.rank, &s.res, out, &err))
		return err;
	srv_sim_config_label(cfg, s.res->label, sizeof(s.res->label));
	s.res->secure = cfg->secure != 0;
	s.res->fed_headline = s.pfed || cfg->fed_eval;
	/* Jobs run on T workers: BLAS stays single-threaded inside them, which
	 * also keeps every result bit-identical whatever T is. */
	int blas_threads = fl_blas_get_threads();
	fl_blas_set_threads(1);
	s.t0 = sim_wall_seconds();
	err = setup(&s);
	if (s.nranks > 1 && (err = srv_sim_mpi_agree(err)) == FL_OK) {
		if (s.rank > 0) {
			sim_mpi_serve(&s); /* until rank 0's loop ended */
		} else {
			err = sim_loop_run(&s);
			sim_mpi_end(&s);
		}
	} else if (!err) {
		err = sim_loop_run(&s);
	}
	if (!err && s.rank == 0)
		err = finish(&s);
	teardown(&s);
	fl_blas_set_threads(blas_threads);
	if (err || s.rank > 0) {
		srv_sim_result_free(s.res);
		return err;
	}
	*out = s.res;
	return FL_OK;
}

void srv_sim_result_free(struct srv_sim_result *r)
{
	if (!r)
		return;
	free(r->rows);
	free(r->final_params);
	free(r);
}
