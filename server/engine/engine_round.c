/* engine_round.c - the round machine: selection, one encoding of the task
 * per dtype, folding completed updates, aggregation with the server
 * optimiser, checkpoints, retries, federated evaluation, reports, and the
 * timers (deadlines, heartbeats, idle timeouts). Frame parsing is in
 * engine_conn.c. */
#include "engine_impl.h"

#include "checkpoint.h"
#include "errors.h"
#include "rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t cur_round(const struct srv_engine *e)
{
	return e->done + 1;
}

static float *global_slice(struct srv_engine *e)
{
	return fl_model_params(e->model);
}

/* Header frame + every global tensor's chunks, in model order. */
static int encode_tensors(struct srv_engine *e, const fl_envelope *head, uint64_t round,
			  enum fl_wire_dtype dt, struct srv_frames *out)
{
	struct fl_buf *h = NULL;
	int err = fl_wire_encode(head, &h);
	if (err != FL_OK)
		return err;
	out->f = malloc(sizeof(*out->f));
	if (!out->f) {
		fl_buf_unref(h);
		return fl_error_set(FL_ENOMEM, "engine: out of memory");
	}
	out->f[0] = h;
	out->n = 1;
	float *g = global_slice(e);
	for (size_t i = 0; i < e->K && err == FL_OK; i++) {
		struct fl_wire_tensor t = e->gt[i];
		t.data = g + e->goff[i];
		err = fl_wire_tensor_encode(round, &t, dt, e->cfg.chunk_bytes, &out->f, &out->n);
	}
	if (err != FL_OK)
		srv_eng_frames_free(out);
	return err;
}

static int task_frames(struct srv_engine *e, enum fl_wire_dtype dt, struct srv_frames **out)
{
	struct srv_frames *fr = &e->task[dt];
	if (!fr->n) {
		uint64_t t = cur_round(e);
		Fedloha__V1__TrainSettings ts = FEDLOHA__V1__TRAIN_SETTINGS__INIT;
		ts.epochs = e->cfg.epochs;
		ts.batch_size = e->cfg.batch_size;
		ts.lr = (float)fl_optim_round_lr(e->cfg.lr, e->cfg.lr_decay, t - 1);
		ts.momentum = e->cfg.momentum;
		ts.weight_decay = e->cfg.weight_decay;
		ts.prox_mu = e->cfg.prox_mu;
		ts.optimizer = e->optimizer;
		if (e->cfg.relay)
			srv_eng_relay_settings(e, &ts);
		Fedloha__V1__RoundTask rt = FEDLOHA__V1__ROUND_TASK__INIT;
		rt.round = t;
		rt.deadline_ms = e->cfg.round_timeout_ms;
		rt.train = &ts;
		rt.num_tensors = (uint32_t)e->K;
		fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT;
		env.body_case = FEDLOHA__V1__ENVELOPE__BODY_TASK;
		env.task = &rt;
		int err = encode_tensors(e, &env, t, dt, fr);
		if (err != FL_OK)
			return err;
	}
	*out = fr;
	return FL_OK;
}

static int eval_frames(struct srv_engine *e, enum fl_wire_dtype dt, struct srv_frames **out)
{
	struct srv_frames *fr = &e->evalf[dt];
	if (!fr->n) {
		Fedloha__V1__EvalTask et = FEDLOHA__V1__EVAL_TASK__INIT;
		et.round = e->done;
		et.num_tensors = (uint32_t)e->K;
		fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT;
		env.body_case = FEDLOHA__V1__ENVELOPE__BODY_EVAL_TASK;
		env.eval_task = &et;
		int err = encode_tensors(e, &env, e->done, dt, fr);
		if (err != FL_OK)
			return err;
	}
	*out = fr;
	return FL_OK;
}

static void free_frames(struct srv_frames *set)
{
	for (int d = 0; d < SRV_NDTYPES; d++)
		srv_eng_frames_free(&set[d]);
}

static int cmp_conn_id(const void *a, const void *b)
{
	const struct srv_conn *x = *(struct srv_conn *const *)a, *y = *(struct srv_conn *const *)b;
	return strcmp(x->client_id, y->client_id);
}

/* Idle and holding the base: may get a training or evaluation task. */
static int selectable(const struct srv_conn *c)
{
	return c->state == SRV_CONN_READY && !c->needs_base && !c->needs_desc;
}

static size_t ready_count(const struct srv_engine *e)
{
	size_t n = 0;
	for (size_t i = 0; i < e->nconns; i++)
		n += selectable(e->conns[i]);
	return n;
}

static void start_round(struct srv_engine *e)
{
	size_t avail = ready_count(e);
	struct srv_conn **cand = malloc(avail * sizeof(*cand));
	int *idx = malloc(avail * sizeof(*idx));
	if (!cand || !idx) {
		free(cand);
		free(idx);
		srv_eng_fail(e, "out of memory selecting clients");
		return;
	}
	size_t k = 0;
	for (size_t i = 0; i < e->nconns; i++)
		if (selectable(e->conns[i]))
			cand[k++] = e->conns[i];
	qsort(cand, avail, sizeof(*cand), cmp_conn_id);
	/* ceil with a tolerance: 0.7 * 10 is 7.000000000000001 in double */
	size_t want = (size_t)ceil(e->cfg.fraction * (double)avail - 1e-9);
	if (want < (size_t)e->cfg.min_fit)
		want = (size_t)e->cfg.min_fit;
	if (want > avail)
		want = avail;
	struct fl_rng rng;
	fl_rng_seed_stream(&rng, e->cfg.seed,
			   cur_round(e) * FL_RNG_ROUND_STREAMS + (uint64_t)e->attempt);
	for (size_t i = 0; i < avail; i++)
		idx[i] = (int)i;
	fl_rng_shuffle_int(&rng, idx, (int)avail);

	if (!e->round_started) {
		e->round_started = 1;
		e->round_start_ms = e->now;
	}
	e->phase = SRV_PHASE_TRAIN;
	e->deadline = e->now + e->cfg.round_timeout_ms;
	e->selected = (int)want;
	e->outstanding = (int)want;
	e->reported = e->dropped = e->rejected = 0;
	e->loss_sum = e->acc_sum = 0;
	e->loss_w = e->acc_w = e->examples = 0;
	e->hold_loss_sum = e->hold_acc_sum = 0;
	e->hold_w = 0;
	e->hold_clients = 0;
	srv_agg_reset(e->agg);
	for (size_t i = 0; i < want; i++) {
		struct srv_conn *c = cand[idx[i]];
		struct srv_frames *fr = NULL;
		int err = task_frames(e, c->dtype, &fr);
		if (err != FL_OK) {
			free(cand);
			free(idx);
			srv_eng_fail(e, "round %llu: cannot encode the task: %s",
				     (unsigned long long)cur_round(e), fl_error_msg());
			return;
		}
		c->state = SRV_CONN_TASKED;
		c->task_round = cur_round(e);
		srv_eng_send_frames(e, c, fr);
	}
	free(cand);
	free(idx);
}

void srv_eng_update_complete(struct srv_engine *e, struct srv_conn *c)
{
	int err = srv_agg_add(e->agg, c->staging, c->upd_examples);
	if (err != FL_OK) {
		srv_eng_reject(e, c, err, "update refused: %s", fl_error_msg());
		return;
	}
	srv_eng_update_account(e, c);
}

void srv_eng_update_account(struct srv_engine *e, struct srv_conn *c)
{
	double w = (double)c->upd_examples;
	if (c->has_loss) {
		e->loss_sum += w * c->upd_loss;
		e->loss_w += c->upd_examples;
	}
	if (c->has_acc) {
		e->acc_sum += w * c->upd_acc;
		e->acc_w += c->upd_examples;
	}
	if (c->upd_hold_n) {
		e->hold_loss_sum += (double)c->upd_hold_n * c->upd_hold_loss;
		e->hold_acc_sum += (double)c->upd_hold_n * c->upd_hold_acc;
		e->hold_w += c->upd_hold_n;
		e->hold_clients++;
	}
	e->examples += c->upd_examples;
	e->reported++;
	e->outstanding--;
	srv_eng_upload_free(e, c);
	c->state = SRV_CONN_READY;
	c->done_round = c->task_round;
	c->done_attempt = e->attempt;
}

void srv_eng_report_attempt(struct srv_engine *e, uint64_t t)
{
	struct srv_round_report *r = &e->report;
	memset(r, 0, sizeof(*r));
	r->round = t;
	r->selected = e->selected;
	r->reported = e->reported;
	r->dropped = e->dropped;
	r->rejected = e->rejected;
	r->attempts = e->attempt + 1;
	r->examples = e->examples;
	r->train_loss = e->loss_w ? e->loss_sum / (double)e->loss_w : 0.0;
	r->train_accuracy = e->acc_w ? e->acc_sum / (double)e->acc_w : 0.0;
	r->holdout_clients = e->hold_clients;
	r->holdout_loss = e->hold_w ? e->hold_loss_sum / (double)e->hold_w : 0.0;
	r->holdout_accuracy = e->hold_w ? e->hold_acc_sum / (double)e->hold_w : 0.0;
}

static void emit_report(struct srv_engine *e)
{
	struct srv_round_report *r = &e->report;
	r->eval_clients = e->eval_clients;
	r->eval_loss = e->eval_w ? e->eval_loss_sum / (double)e->eval_w : 0.0;
	r->eval_accuracy = e->eval_w ? e->eval_acc_sum / (double)e->eval_w : 0.0;
	r->bytes_up = e->round_up;
	r->bytes_down = e->round_down;
	r->total_up = e->bytes_up;
	r->total_down = e->bytes_down;
	r->seconds = (double)(e->now - e->round_start_ms) / 1000.0;
	e->round_up = e->round_down = 0;
	e->round_started = 0;
	e->attempt = 0;
	e->phase = SRV_PHASE_WAIT;
	if (e->io.on_round)
		e->io.on_round(e->io.ctx, r);
}

static void start_eval(struct srv_engine *e)
{
	e->eval_clients = e->eval_outstanding = 0;
	e->eval_loss_sum = e->eval_acc_sum = 0;
	e->eval_w = 0;
	for (size_t i = 0; i < e->nconns; i++) {
		struct srv_conn *c = e->conns[i];
		if (!selectable(c) || !c->can_eval)
			continue;
		struct srv_frames *fr = NULL;
		if (eval_frames(e, c->dtype, &fr) != FL_OK) {
			srv_eng_fail(e, "round %llu: cannot encode the evaluation task: %s",
				     (unsigned long long)e->done, fl_error_msg());
			return;
		}
		c->eval_pending = 1;
		e->eval_outstanding++;
		srv_eng_send_frames(e, c, fr);
	}
	e->phase = SRV_PHASE_EVAL;
	e->deadline = e->now + e->cfg.round_timeout_ms;
}

static void end_eval(struct srv_engine *e)
{
	for (size_t i = 0; i < e->nconns; i++)
		e->conns[i]->eval_pending = 0;
	e->eval_outstanding = 0;
	free_frames(e->evalf);
	if (e->cfg.relay) {
		srv_eng_relay_eval_done(e);
		return;
	}
	emit_report(e);
}

static void aggregate(struct srv_engine *e)
{
	uint64_t t = cur_round(e);
	int err = srv_agg_result(e->agg, e->result);
	if (err == FL_OK)
		err = srv_optim_step(&e->opt, global_slice(e), e->result, e->nglobal);
	if (err != FL_OK) {
		srv_eng_fail(e, "round %llu: aggregation failed: %s", (unsigned long long)t,
			     fl_error_msg());
		return;
	}
	fl_model_params_changed(e->model);
	e->done = t;
	free_frames(e->task);
	srv_eng_report_attempt(e, t);
	srv_agg_reset(e->agg);
	if (e->checkpoint_path) {
		struct srv_checkpoint_meta meta = {.round = e->done,
						   .bytes_up = e->bytes_up,
						   .bytes_down = e->bytes_down,
						   .seed = e->cfg.seed};
		err = srv_checkpoint_save(e->checkpoint_path, e->model, &e->opt, &meta);
		if (err != FL_OK) {
			srv_eng_fail(e, "round %llu: checkpoint failed: %s", (unsigned long long)t,
				     fl_error_msg());
			return;
		}
	}
	e->eval_clients = 0;
	e->eval_w = 0;
	int eval = e->cfg.eval_every &&
		   (e->done % e->cfg.eval_every == 0 || e->done == e->cfg.rounds);
	if (eval)
		start_eval(e);
	else
		emit_report(e);
}

/* Clients still owing an update of the ending attempt become LATE; one
 * the server did not read (parked at its Update header, waiting for a slot)
 * gets its update read and discarded, then is READY again. */
static void end_attempt(struct srv_engine *e)
{
	/* first the parked ones: a slot freed below must not go to them */
	for (size_t i = 0; i < e->nconns; i++) {
		struct srv_conn *c = e->conns[i];
		if (c->state == SRV_CONN_TASKED && c->parked) {
			c->discarding = 1;
			srv_eng_unpark(e, c); /* its frames come again after this call */
		}
	}
	for (size_t i = 0; i < e->nconns; i++) {
		struct srv_conn *c = e->conns[i];
		if (c->state == SRV_CONN_TASKED) {
			srv_eng_upload_free(e, c);
			c->state = SRV_CONN_LATE;
		}
	}
	srv_eng_relay_end_attempt(e); /* a partial sum not complete is late */
	e->outstanding = 0;
}

static void retry(struct srv_engine *e)
{
	uint64_t t = cur_round(e);
	int got = e->reported, sel = e->selected;
	srv_agg_reset(e->agg);
	free_frames(e->task);
	if (e->attempt >= e->cfg.max_retries) {
		srv_eng_fail(e, "round %llu: %d of %d updates (%d needed) after %d attempts",
			     (unsigned long long)t, got, sel, e->cfg.min_report, e->attempt + 1);
		return;
	}
	e->attempt++;
	e->phase = SRV_PHASE_WAIT;
}

static void end_train(struct srv_engine *e)
{
	end_attempt(e);
	if (e->cfg.relay) {
		srv_eng_relay_forward(e);
		return;
	}
	if (e->reported >= e->cfg.min_report)
		aggregate(e);
	else
		retry(e);
}

static void finish_all(struct srv_engine *e)
{
	e->phase = SRV_PHASE_DONE;
	srv_eng_park_clear(e);
	while (e->nconns) {
		struct srv_conn *c = e->conns[e->nconns - 1];
		if (c->state != SRV_CONN_NEW)
			srv_eng_send_bye(e, c, "done");
		srv_eng_drop(e, c);
	}
}

void srv_eng_advance(struct srv_engine *e)
{
	for (;;) {
		switch (e->phase) {
		case SRV_PHASE_TRAIN:
			if (e->outstanding > 0)
				return;
			end_train(e);
			continue;
		case SRV_PHASE_EVAL:
			if (e->eval_outstanding > 0)
				return;
			end_eval(e);
			continue;
		case SRV_PHASE_WAIT:
			if (e->cfg.relay ? srv_eng_relay_done(e) : e->done >= e->cfg.rounds) {
				finish_all(e);
				return;
			}
			/* nconns bounds the ready count: no scan while too few
			 * are even connected (the ramp-up to --min-clients) */
			if (e->cfg.relay ? !srv_eng_relay_take_task(e)
					 : e->nconns < (size_t)e->cfg.min_available ||
						   ready_count(e) < (size_t)e->cfg.min_available)
				return;
			start_round(e);
			continue;
		case SRV_PHASE_DONE:
		case SRV_PHASE_FAILED: return;
		}
	}
}

void srv_eng_timers(struct srv_engine *e)
{
	uint64_t now = e->now;
	/* the idle list is ordered by last frame, oldest first: only its
	 * expired head entries are looked at (parked connections are off it:
	 * silent because they are not read) */
	while (e->cfg.idle_timeout_ms && e->lru_head) {
		struct srv_conn *c = e->lru_head;
		if (now < c->last_rx_ms || now - c->last_rx_ms < e->cfg.idle_timeout_ms)
			break;
		if (c->parked) {
			srv_eng_lru_unlink(e, c);
			continue;
		}
		srv_eng_send_error(e, c, FL_EIO, "idle timeout: closing");
		srv_eng_drop(e, c); /* counted dropped, not rejected; off the list */
	}
	if (e->cfg.heartbeat_ms && e->next_hb && now >= e->next_hb) {
		for (size_t i = 0; i < e->nconns; i++)
			if (e->conns[i]->state != SRV_CONN_NEW)
				srv_eng_send_heartbeat(e, e->conns[i]);
		e->next_hb = now + e->cfg.heartbeat_ms;
	}
	if (e->cfg.relay)
		srv_eng_relay_timers(e);
	if (e->phase == SRV_PHASE_TRAIN && now >= e->deadline)
		end_train(e);
	else if (e->phase == SRV_PHASE_EVAL && now >= e->deadline)
		end_eval(e);
}

uint64_t srv_eng_next_deadline(const struct srv_engine *e)
{
	if (e->phase == SRV_PHASE_DONE || e->phase == SRV_PHASE_FAILED)
		return UINT64_MAX;
	uint64_t d = UINT64_MAX;
	if (e->phase == SRV_PHASE_TRAIN || e->phase == SRV_PHASE_EVAL)
		d = e->deadline;
	if (e->cfg.relay && srv_eng_relay_deadline(e) < d)
		d = srv_eng_relay_deadline(e);
	if (e->cfg.heartbeat_ms && e->next_hb && e->nconns && e->next_hb < d)
		d = e->next_hb;
	if (e->cfg.idle_timeout_ms && e->lru_head) {
		uint64_t x = e->lru_head->last_rx_ms + e->cfg.idle_timeout_ms;
		if (x < d)
			d = x;
	}
	return d;
}

/* ---- for a mid-tier (engine_upstream.c) ---- */

size_t srv_eng_ready_count(const struct srv_engine *e)
{
	return ready_count(e);
}

void srv_eng_end_attempt(struct srv_engine *e)
{
	end_attempt(e);
}

void srv_eng_emit_report(struct srv_engine *e)
{
	emit_report(e);
}

void srv_eng_free_task_frames(struct srv_engine *e)
{
	free_frames(e->task);
}

void srv_eng_start_eval(struct srv_engine *e)
{
	start_eval(e);
}
