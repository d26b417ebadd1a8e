/* session_task.c - the client session's work: RoundTask / EvalTask checks,
 * the K global tensors received straight into the model's GLOBAL slice,
 * the training or evaluation job (cli_job_run, on a worker thread), and
 * what its end sends back (Update + tensors, or EvalResult). Connection-level
 * messages are in session.c. */
#include "session_impl.h"

#include "errors.h"
#include "optim.h"
#include "train.h"
#include "util.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void wire_tensor_of(struct fl_model *m, const struct fl_model_tensor *t,
			   struct fl_wire_tensor *w)
{
	fl_wire_tensor_init(w, t->name, t->ndim, t->shape, t->numel,
			    fl_model_params(m) + t->offset);
}

int cli_session_rx_new(struct fl_model *m, enum fl_wire_dtype dtype, struct fl_wire_rx **out)
{
	*out = NULL;
	size_t n = 0;
	for (size_t i = 0; i < fl_model_tensor_count(m); i++)
		n += (fl_model_tensor_at(m, i)->flags & FL_TENSOR_GLOBAL) != 0;
	if (!n)
		return FL_OK;
	struct fl_wire_tensor *ex = calloc(n, sizeof(*ex));
	if (!ex)
		return fl_error_set(FL_ENOMEM, "out of memory");
	size_t k = 0;
	for (size_t i = 0; i < fl_model_tensor_count(m); i++) {
		const struct fl_model_tensor *t = fl_model_tensor_at(m, i);
		if (t->flags & FL_TENSOR_GLOBAL)
			wire_tensor_of(m, t, &ex[k++]);
	}
	int err = fl_wire_rx_new(ex, k, dtype, out);
	free(ex);
	return err;
}

/* ---- local tensors around a job ---- */

static void locals_copy(struct cli_session *s, int restore)
{
	float *p = fl_model_params(s->model), *b = s->local_backup;
	for (size_t i = 0; i < fl_model_tensor_count(s->model) && b; i++) {
		const struct fl_model_tensor *t = fl_model_tensor_at(s->model, i);
		if (!(t->flags & FL_TENSOR_LOCAL))
			continue;
		if (restore)
			memcpy(p + t->offset, b, sizeof(float) * t->numel);
		else
			memcpy(b, p + t->offset, sizeof(float) * t->numel);
		b += t->numel;
	}
	if (restore && s->local_backup)
		fl_model_params_changed(s->model);
}

/* ---- tasks ---- */

static int settings_parse(const Fedloha__V1__TrainSettings *t, struct cli_train_settings *ts)
{
	if (!t)
		return fl_error_set(FL_EFORMAT, "RoundTask without training settings");
	if (t->epochs > CLI_SESSION_EPOCHS_MAX)
		return fl_error_set(FL_ERANGE, "RoundTask: %u epochs (at most %d)", t->epochs,
				    CLI_SESSION_EPOCHS_MAX);
	if (t->batch_size < 1 || t->batch_size > CLI_SESSION_BATCH_MAX)
		return fl_error_set(FL_ERANGE, "RoundTask: batch size %u outside [1, %d]",
				    t->batch_size, CLI_SESSION_BATCH_MAX);
	if (!isfinite(t->lr) || t->lr < 0 || !isfinite(t->momentum) || t->momentum < 0 ||
	    t->momentum >= 1 || !isfinite(t->weight_decay) || t->weight_decay < 0 ||
	    !isfinite(t->prox_mu) || t->prox_mu < 0)
		return fl_error_set(FL_EINVAL,
				    "RoundTask: bad training settings (lr %g, momentum "
				    "%g, weight decay %g, prox mu %g)",
				    (double)t->lr, (double)t->momentum, (double)t->weight_decay,
				    (double)t->prox_mu);
	const char *o = t->optimizer ? t->optimizer : "";
	if (*o && strcmp(o, "sgd") && strcmp(o, "adam"))
		return fl_error_set(FL_EUNSUPPORTED,
				    "RoundTask: unknown optimizer '%s' (sgd, adam)", o);
	ts->epochs = (int)t->epochs;
	ts->batch = (int)t->batch_size;
	ts->lr = t->lr;
	ts->momentum = t->momentum;
	ts->weight_decay = t->weight_decay;
	ts->prox_mu = t->prox_mu;
	ts->adam = !strcmp(o, "adam");
	return FL_OK;
}

/* The model's batch buffers must hold the task's batch: rebuild it bigger,
 * with the same parameters. */
static int grow_batch(struct cli_session *s, int batch)
{
	struct fl_model *m;
	int err = fl_model_new_desc(fl_model_description(s->model), s->peft, s->seed, batch, &m);
	if (err)
		return err;
	assert(fl_model_param_floats(m) == fl_model_param_floats(s->model));
	memcpy(fl_model_params(m), fl_model_params(s->model),
	       sizeof(float) * fl_model_param_floats(m));
	fl_model_params_changed(m);
	if ((err = cli_session_set_model(s, m, batch)))
		fl_model_free(m); /* not installed */
	return err;
}

static int start_job(struct cli_session *s, enum cli_job_kind kind)
{
	struct cli_job *j = &s->job;
	memset(j, 0, sizeof(*j));
	j->kind = kind;
	j->round = s->task_round;
	j->conn_gen = s->conn_gen;
	j->threads = s->cfg.threads;
	j->model = s->model;
	j->model_batch = s->model_batch;
	j->data = s->cfg.data;
	if (kind == CLI_JOB_TRAIN) {
		j->idx = s->cfg.train_idx;
		j->n = s->cfg.n_train;
		j->ts = s->ts;
		j->rng_seed = s->seed ^ s->id_hash;
		j->eval_idx = s->cfg.eval_idx;
		j->n_eval = s->cfg.n_eval;
		locals_copy(s, 0);
	} else {
		j->idx = s->cfg.eval_idx;
		j->n = s->cfg.n_eval;
	}
	fl_model_params_changed(s->model);
	s->st = CLI_ST_READY;
	s->busy = 1;
	/* A synchronous submit runs the job and on_job_done right here: touch
	 * nothing after it. */
	if (s->io.submit(s->io.ctx, j) != 0) {
		s->busy = 0;
		return fl_error_set(FL_EIO, "could not queue the local %s job",
				    kind == CLI_JOB_TRAIN ? "training" : "evaluation");
	}
	return FL_OK;
}

static int begin_transfer(struct cli_session *s, uint64_t round, uint32_t k, const char *what)
{
	if (k != s->n_global)
		return fl_error_set(FL_EFORMAT,
				    "%s for round %llu announces %u tensors, the model "
				    "transmits %zu",
				    what, (unsigned long long)round, k, s->n_global);
	if (s->n_global && !s->rx)
		return fl_error_set(FL_EINVAL, "no tensor receiver (an earlier failure)");
	s->task_round = round;
	if (s->rx)
		fl_wire_rx_reset(s->rx, round);
	return FL_OK;
}

/* A task (what: "RoundTask" / "EvalTask") may not arrive while a job runs. */
static int refuse_if_busy(const struct cli_session *s, const char *what, uint64_t round)
{
	if (!s->busy)
		return FL_OK;
	return fl_error_set(FL_EINVAL,
			    "%s for round %llu while the job of round %llu is still running", what,
			    (unsigned long long)round, (unsigned long long)s->job.round);
}

int cli_session_on_task(struct cli_session *s, const Fedloha__V1__RoundTask *t)
{
	int err = refuse_if_busy(s, "RoundTask", t->round);
	if (err)
		return err;
	struct cli_train_settings ts;
	err = settings_parse(t->train, &ts);
	if (err)
		return err;
	if (s->have_train_round && t->round < s->last_train_round)
		return fl_error_set(FL_EFORMAT, "RoundTask for round %llu after round %llu",
				    (unsigned long long)t->round,
				    (unsigned long long)s->last_train_round);
	if ((err = begin_transfer(s, t->round, t->num_tensors, "RoundTask")))
		return err;
	if (ts.batch > s->model_batch && (err = grow_batch(s, ts.batch)))
		return err;
	if (s->rx)
		fl_wire_rx_reset(s->rx, t->round); /* grow_batch made a new receiver */
	s->ts = ts;
	s->have_train_round = 1;
	s->last_train_round = t->round;
	s->st = CLI_ST_RECV_TRAIN;
	return s->n_global ? FL_OK : start_job(s, CLI_JOB_TRAIN);
}

int cli_session_on_eval_task(struct cli_session *s, const Fedloha__V1__EvalTask *t)
{
	int err = refuse_if_busy(s, "EvalTask", t->round);
	if (err)
		return err;
	err = begin_transfer(s, t->round, t->num_tensors, "EvalTask");
	if (err)
		return err;
	s->st = CLI_ST_RECV_EVAL;
	return s->n_global ? FL_OK : start_job(s, CLI_JOB_EVAL);
}

int cli_session_on_chunk(struct cli_session *s, const Fedloha__V1__TensorChunk *c)
{
	if (c->round != s->task_round)
		return fl_error_set(FL_EFORMAT, "TensorChunk '%s' for round %llu during round %llu",
				    c->name ? c->name : "", (unsigned long long)c->round,
				    (unsigned long long)s->task_round);
	int err = fl_wire_rx_chunk(s->rx, c);
	if (err)
		return err;
	if (!fl_wire_rx_complete(s->rx))
		return FL_OK;
	return start_job(s, s->st == CLI_ST_RECV_TRAIN ? CLI_JOB_TRAIN : CLI_JOB_EVAL);
}

/* ---- the job (worker thread) ---- */

int cli_job_threads(const struct cli_job *job)
{
	return job->threads;
}

const char *cli_job_error(const struct cli_job *job)
{
	return job->err ? job->errmsg : NULL;
}

static int job_train(struct cli_job *j, struct fl_trainer **tr)
{
	struct fl_optim_config oc;
	fl_optim_config_default(&oc, j->ts.adam ? FL_OPTIM_ADAM : FL_OPTIM_SGD);
	oc.lr = j->ts.lr;
	oc.weight_decay = j->ts.weight_decay;
	if (!j->ts.adam)
		oc.momentum = j->ts.momentum;
	int err = fl_trainer_new(j->model, &oc, j->ts.batch, tr);
	if (!err && j->ts.prox_mu > 0)
		err = fl_trainer_set_prox(*tr, j->ts.prox_mu);
	struct fl_rng rng;
	fl_rng_seed_stream(&rng, j->rng_seed, j->round);
	for (int e = 0; e < j->ts.epochs && !err; e++) {
		struct fl_train_stats st;
		err = fl_trainer_epoch(*tr, j->data, j->idx, j->n, &rng, &st);
		j->loss = st.loss;
		j->accuracy = st.accuracy;
		j->samples = st.samples;
	}
	/* the model as local training left it (personalised, before any
	 * aggregation) on the held-out samples: reported with the update */
	if (!err && j->n_eval > 0) {
		struct fl_train_stats st;
		err = fl_trainer_evaluate(*tr, j->data, j->eval_idx, j->n_eval, &st);
		j->post_loss = st.loss;
		j->post_accuracy = st.accuracy;
		j->post_samples = st.samples;
	}
	return err;
}

static int job_eval(struct cli_job *j, struct fl_trainer **tr)
{
	struct fl_optim_config oc;
	fl_optim_config_default(&oc, FL_OPTIM_SGD);
	oc.momentum = 0; /* no optimiser state: evaluation only */
	int err = fl_trainer_new(j->model, &oc, j->model_batch, tr);
	struct fl_train_stats st;
	if (!err)
		err = fl_trainer_evaluate(*tr, j->data, j->idx, j->n, &st);
	if (!err) {
		j->loss = st.loss;
		j->accuracy = st.accuracy;
		j->samples = st.samples;
	}
	return err;
}

void cli_job_run(struct cli_job *job)
{
	double t0 = fl_now_seconds();
	struct fl_trainer *tr = NULL;
	fl_error_clear();
	job->err = job->kind == CLI_JOB_TRAIN ? job_train(job, &tr) : job_eval(job, &tr);
	fl_trainer_free(tr);
	/* Between rounds the model keeps its parameters only: the batch-sized
	 * buffers (most of a cnn's memory) come back with the next trainer. */
	fl_model_buffers(job->model, 0);
	if (job->err)
		snprintf(job->errmsg, sizeof(job->errmsg), "%s", fl_error_msg());
	job->seconds = fl_now_seconds() - t0;
}

/* ---- results (session thread) ---- */

static int send_update(struct cli_session *s, const struct cli_job *j)
{
	struct fl_buf **frames = NULL;
	size_t nframes = 0;
	int err = FL_OK;
	for (size_t i = 0; i < fl_model_tensor_count(s->model) && !err; i++) {
		const struct fl_model_tensor *t = fl_model_tensor_at(s->model, i);
		if (!(t->flags & FL_TENSOR_GLOBAL))
			continue;
		struct fl_wire_tensor w;
		wire_tensor_of(s->model, t, &w);
		err = fl_wire_tensor_encode(j->round, &w, s->dtype, s->chunk_bytes, &frames,
					    &nframes);
	}
	Fedloha__V1__Metric m[6], *mp[6];
	for (int i = 0; i < 6; i++) {
		m[i] = (Fedloha__V1__Metric)FEDLOHA__V1__METRIC__INIT;
		mp[i] = &m[i];
	}
	m[0].name = "train_loss";
	m[0].value = j->loss;
	m[1].name = "train_accuracy";
	m[1].value = j->accuracy;
	m[2].name = "seconds";
	m[2].value = j->seconds;
	size_t nm = 3;
	if (j->post_samples > 0) {
		m[3].name = "holdout_loss";
		m[3].value = j->post_loss;
		m[4].name = "holdout_accuracy";
		m[4].value = j->post_accuracy;
		m[5].name = "holdout_examples";
		m[5].value = (double)j->post_samples;
		nm = 6;
	}
	Fedloha__V1__Update u = FEDLOHA__V1__UPDATE__INIT;
	u.round = j->round;
	u.num_examples = (uint64_t)s->cfg.n_train;
	u.num_tensors = (uint32_t)s->n_global;
	u.n_metrics = nm;
	u.metrics = mp;
	fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT;
	env.body_case = FEDLOHA__V1__ENVELOPE__BODY_UPDATE;
	env.update = &u;
	if (!err)
		err = cli_session_send_env(s, &env);
	size_t i = 0;
	for (; i < nframes && !err; i++)
		err = cli_session_send_frame(s, frames[i]);
	for (; i < nframes; i++)
		fl_buf_unref(frames[i]);
	free(frames);
	return err;
}

static int send_eval_result(struct cli_session *s, const struct cli_job *j)
{
	Fedloha__V1__EvalResult r = FEDLOHA__V1__EVAL_RESULT__INIT;
	r.round = j->round;
	r.num_examples = (uint64_t)j->n;
	r.loss = j->loss;
	r.accuracy = j->accuracy;
	fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT;
	env.body_case = FEDLOHA__V1__ENVELOPE__BODY_EVAL_RESULT;
	env.eval_result = &r;
	return cli_session_send_env(s, &env);
}

void cli_session_on_job_done(struct cli_session *s, struct cli_job *job)
{
	assert(job == &s->job && s->busy);
	s->busy = 0;
	int train = job->kind == CLI_JOB_TRAIN;
	const char *what = train ? "training" : "evaluation";
	int stale = !s->connected || job->conn_gen != s->conn_gen;
	char msg[FL_ERROR_MSG_MAX + 64];
	if (train && (job->err || stale))
		locals_copy(s, 1); /* the round did not count: back to the state before it */
	if (stale)
		return;
	if (job->err) {
		snprintf(msg, sizeof(msg), "local %s of round %llu failed: %s", what,
			 (unsigned long long)job->round, job->errmsg);
		cli_session_fail(s, job->err, msg);
		return;
	}
	int err = FL_OK;
	if (train && s->state_dir && s->local_floats &&
	    (err = cli_state_save_local(s->model, s->state_dir))) {
		snprintf(msg, sizeof(msg), "saving the local tensors: %s", fl_error_msg());
		locals_copy(s, 1);
		cli_session_fail(s, err, msg);
		return;
	}
	err = train ? send_update(s, job) : send_eval_result(s, job);
	if (err) {
		snprintf(msg, sizeof(msg), "sending the %s result of round %llu: %s", what,
			 (unsigned long long)job->round, fl_error_msg());
		cli_session_fail(s, err, msg);
		return;
	}
	if (train)
		s->rounds_done++;
}
