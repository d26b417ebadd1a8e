/* engine_upstream.c - a mid-tier aggregator's side of its link to its
 * parent (engine.h "aggregator trees"): Hello, the check of the parent's
 * Welcome against this node's model and seed, a RoundTask and its tensors
 * turned into a local round (the parent's training settings verbatim, a
 * deadline before the parent's), the partial sum of that round sent up
 * (PartialSum + SumChunk frames), an EvalTask passed on to its clients and
 * their results summed into one EvalResult, heartbeats and the parent's
 * Bye("done").
 * No I/O: frames go out through srv_relay_io. The parent's reception of
 * partial sums is engine_relay.c; the round machine is engine_round.c. */
#include "engine_relay.h"

#include "errors.h"
#include "model_desc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UP_MARGIN_MIN_MS 500 /* kept before the parent's deadline, at least */

static void up_send(struct srv_engine *e, const fl_envelope *env)
{
	struct srv_relay *r = e->relay;
	struct fl_buf *b = NULL;
	if (fl_wire_encode(env, &b) != FL_OK)
		return;
	r->io.send(r->io.ctx, b);
	r->last_tx = e->now;
}

int srv_engine_relay_start(struct srv_engine *e, const char *node_id, const struct srv_relay_io *io)
{
	if (!e->cfg.relay)
		return fl_error_set(FL_EINVAL, "engine: not configured as a mid-tier");
	if (!fl_wire_client_id_valid(node_id))
		return fl_error_set(FL_EINVAL,
				    "the upstream client id must be 1..%d characters of "
				    "[A-Za-z0-9._-]",
				    FL_WIRE_CLIENT_ID_MAX);
	struct srv_relay *r = srv_eng_relay_get(e);
	if (!r)
		return FL_ENOMEM;
	if (!(r->rxbuf = calloc(e->nglobal ? e->nglobal : 1, sizeof(float))))
		return fl_error_set(FL_ENOMEM, "engine: out of memory");
	snprintf(r->node_id, sizeof(r->node_id), "%s", node_id);
	r->io = *io;
	r->own_timeout_ms = e->cfg.round_timeout_ms;
	e->cfg.fraction = 1.0; /* every ready client of the subtree trains */
	return FL_OK;
}

void srv_engine_relay_on_connect(struct srv_engine *e, uint64_t now_ms)
{
	struct srv_relay *r = e->relay;
	e->now = now_ms;
	r->connected = 1;
	r->welcomed = r->receiving = r->pending = 0;
	r->gen++;
	r->last_rx = now_ms;
	static const char *caps[] = {"f16", "bf16", "int8", "eval"};
	Fedloha__V1__Hello h = FEDLOHA__V1__HELLO__INIT;
	h.protocol_version = FL_WIRE_PROTOCOL_VERSION;
	h.client_id = r->node_id;
	h.n_capabilities = 4;
	h.capabilities = (char **)caps;
	/* f32 unless the parent requires a dtype: the global reaches this
	 * node's clients quantised only by this node's own --dtype, as under a
	 * flat coordinator with those flags */
	h.preferred_dtype = FEDLOHA__V1__DTYPE__DTYPE_F32;
	h.dtype_from_server = 0;
	if (e->has_base) {
		h.has_base = 1;
		h.base_sha256.data = e->base_sha;
		h.base_sha256.len = sizeof(e->base_sha);
	}
	fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT;
	env.body_case = FEDLOHA__V1__ENVELOPE__BODY_HELLO;
	env.hello = &h;
	up_send(e, &env);
}

void srv_engine_relay_on_disconnect(struct srv_engine *e, uint64_t now_ms)
{
	struct srv_relay *r = e->relay;
	e->now = now_ms;
	r->connected = r->welcomed = r->receiving = r->pending = r->waiting = 0;
}

static int same_sha(const ProtobufCBinaryData *b, int have, const uint8_t sha[32])
{
	return have ? b->len == 32 && !memcmp(b->data, sha, 32) : b->len == 0;
}

/* What of the parent's model differs from this node's, or NULL. */
static const char *model_differs(const struct srv_engine *e, const Fedloha__V1__ModelSpec *ms)
{
	const struct fl_model_desc *d = fl_model_description(e->model);
	const char *arch = d->builtin ? d->label : "";
	if (strcmp(ms->arch ? ms->arch : "", arch) != 0)
		return "the built-in model (--model)";
	if (!same_sha(&ms->description_sha256, e->has_desc, e->desc_sha))
		return "the model description (--model-file)";
	if (strcmp(ms->config_json ? ms->config_json : "", e->config_json ? e->config_json : ""))
		return "the PEFT config (--param, --rank, --gamma, --config ...)";
	if (!same_sha(&ms->base_sha256, e->has_base, e->base_sha))
		return "the loha base (--base / --init)";
	return NULL;
}

static int on_welcome(struct srv_engine *e, const Fedloha__V1__Welcome *w)
{
	struct srv_relay *r = e->relay;
	if (r->welcomed)
		return fl_error_set(FL_EFORMAT, "the parent sent a second Welcome");
	if (w->protocol_version != FL_WIRE_PROTOCOL_VERSION || !w->model ||
	    (unsigned)w->dtype > FL_WIRE_INT8)
		return fl_error_set(
			FL_EFORMAT, "the parent's Welcome: protocol %u, model %s, dtype %d",
			w->protocol_version, w->model ? "present" : "missing", (int)w->dtype);
	const char *diff = model_differs(e, w->model);
	if (diff || w->seed != e->cfg.seed) {
		r->refused = 1;
		if (diff)
			return fl_error_set(FL_EINVAL,
					    "the parent's model is not this node's: %s differs "
					    "(start the mid-tier with the parent's model flags)",
					    diff);
		return fl_error_set(FL_EINVAL,
				    "the parent's seed %llu is not this node's --seed %llu (a "
				    "tree needs one seed)",
				    (unsigned long long)w->seed, (unsigned long long)e->cfg.seed);
	}
	if (!w->partial_sums) {
		r->refused = 1;
		return fl_error_set(FL_EAUTH,
				    "the parent takes no partial sums from '%s' (list it in the "
				    "parent's --tier-ids)",
				    r->node_id);
	}
	const Fedloha__V1__Limits *lim = w->limits;
	r->hb_ms = lim ? lim->heartbeat_ms : 0;
	r->idle_ms = lim ? lim->idle_timeout_ms : 0;
	r->chunk_bytes = lim && lim->chunk_bytes >= SRV_RELAY_SUM_BYTES &&
					 lim->chunk_bytes <= e->cfg.chunk_bytes
				 ? lim->chunk_bytes
				 : e->cfg.chunk_bytes;
	r->dtype = (enum fl_wire_dtype)w->dtype;
	struct fl_wire_tensor *ex = malloc((e->K ? e->K : 1) * sizeof(*ex));
	if (!ex)
		return fl_error_set(FL_ENOMEM, "engine: out of memory");
	for (size_t i = 0; i < e->K; i++) {
		ex[i] = e->gt[i];
		ex[i].data = r->rxbuf + e->goff[i];
	}
	fl_wire_rx_free(r->rx);
	r->rx = NULL;
	int err = fl_wire_rx_new(ex, e->K, r->dtype, &r->rx);
	free(ex);
	if (err != FL_OK)
		return err;
	r->welcomed = 1;
	/* any frame tells the parent we hold its model and base already */
	Fedloha__V1__Heartbeat hb = FEDLOHA__V1__HEARTBEAT__INIT;
	hb.time_ms = e->now;
	fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT;
	env.body_case = FEDLOHA__V1__ENVELOPE__BODY_HEARTBEAT;
	env.heartbeat = &hb;
	up_send(e, &env);
	return FL_OK;
}

static int same_settings(const Fedloha__V1__TrainSettings *a, const Fedloha__V1__TrainSettings *b)
{
	return a->epochs == b->epochs && a->batch_size == b->batch_size && a->lr == b->lr &&
	       a->momentum == b->momentum && a->weight_decay == b->weight_decay &&
	       a->prox_mu == b->prox_mu &&
	       !strcmp(a->optimizer ? a->optimizer : "", b->optimizer ? b->optimizer : "");
}

static int on_task(struct srv_engine *e, const Fedloha__V1__RoundTask *t)
{
	struct srv_relay *r = e->relay;
	const Fedloha__V1__TrainSettings *ts = t->train;
	if (t->round < 1 || t->num_tensors != e->K || !ts)
		return fl_error_set(FL_EFORMAT,
				    "the parent's RoundTask: round %llu, %u tensors (this model "
				    "has %zu), settings %s",
				    (unsigned long long)t->round, t->num_tensors, e->K,
				    ts ? "present" : "missing");
	const char *opt = ts->optimizer ? ts->optimizer : "";
	if (strlen(opt) >= sizeof(r->optimizer))
		return fl_error_set(FL_EINVAL, "the parent's RoundTask: optimizer name too long");
	r->repeat = r->serving && t->round == r->task_round && same_settings(&r->ts, ts);
	r->ts = *ts;
	snprintf(r->optimizer, sizeof(r->optimizer), "%s", opt);
	r->ts.optimizer = r->optimizer;
	r->task_round = t->round;
	r->task_deadline_ms = t->deadline_ms > UINT32_MAX ? UINT32_MAX : (uint32_t)t->deadline_ms;
	r->task_rx_ms = e->now;
	r->task_gen = r->gen;
	r->pending = 0;
	fl_wire_rx_reset(r->rx, t->round);
	r->receiving = 1;
	r->eval = 0;
	return FL_OK;
}

/* The parent's federated evaluation of its global model after round
 * et->round: its tensors arrive like a task's. */
static int on_eval_task(struct srv_engine *e, const Fedloha__V1__EvalTask *et)
{
	struct srv_relay *r = e->relay;
	if (et->round < 1 || et->num_tensors != e->K)
		return fl_error_set(FL_EFORMAT,
				    "the parent's EvalTask: round %llu, %u tensors (this model "
				    "has %zu)",
				    (unsigned long long)et->round, et->num_tensors, e->K);
	fl_wire_rx_reset(r->rx, et->round);
	r->receiving = 1;
	r->eval = 1;
	r->task_round = et->round;
	r->task_rx_ms = e->now;
	return FL_OK;
}

/* Another task while a local round runs: that round is abandoned (its
 * clients' updates are refused as late; the parent moved on). The same
 * task again (a retry of the round, or a parent resumed from its
 * checkpoint: same round, settings and global tensors) is answered by the
 * running round instead. */
static void abandon_round(struct srv_engine *e)
{
	if (e->phase != SRV_PHASE_TRAIN)
		return;
	srv_eng_end_attempt(e);
	srv_eng_free_task_frames(e);
	srv_agg_reset(e->agg);
	e->relay->serving = 0;
	e->round_started = 0;
	e->phase = SRV_PHASE_WAIT;
}

static uint32_t local_deadline(const struct srv_engine *e);

/* The evaluation tensors become the global model; every ready client of
 * this node that evaluates gets them, with a deadline before the parent's
 * (taken as the last task's). */
static void start_relay_eval(struct srv_engine *e)
{
	struct srv_relay *r = e->relay;
	abandon_round(e);
	r->waiting = r->pending = 0;
	float *g = fl_model_params(e->model);
	for (size_t i = 0; i < e->K; i++)
		memcpy(g + e->goff[i], r->rxbuf + e->goff[i], e->gt[i].numel * sizeof(float));
	fl_model_params_changed(e->model);
	e->done = r->task_round;
	e->cfg.round_timeout_ms = local_deadline(e);
	r->eval_gen = r->gen;
	srv_eng_start_eval(e);
}

/* The task's tensors are the global model of the running round. */
static int same_global(const struct srv_engine *e)
{
	const float *g = fl_model_params(e->model);
	for (size_t i = 0; i < e->K; i++)
		if (memcmp(g + e->goff[i], e->relay->rxbuf + e->goff[i],
			   e->gt[i].numel * sizeof(float)))
			return 0;
	return 1;
}

static int on_chunk(struct srv_engine *e, const Fedloha__V1__TensorChunk *ch)
{
	struct srv_relay *r = e->relay;
	if (!r->receiving)
		return fl_error_set(FL_EFORMAT, "the parent sent a tensor chunk outside a task");
	int err = fl_wire_rx_chunk(r->rx, ch);
	if (err != FL_OK)
		return err;
	if (fl_wire_rx_complete(r->rx) && r->eval) {
		r->receiving = 0;
		start_relay_eval(e);
	} else if (fl_wire_rx_complete(r->rx)) {
		r->receiving = 0;
		r->waiting = 0;
		if (e->phase == SRV_PHASE_TRAIN && r->repeat && same_global(e)) {
			r->task_gen = r->gen; /* the running round answers it */
			return FL_OK;
		}
		r->pending = 1;
		abandon_round(e);
	}
	return FL_OK;
}

static int dispatch(struct srv_engine *e, const fl_envelope *env)
{
	struct srv_relay *r = e->relay;
	int body = env->body_case;
	if (!r->welcomed && body != FEDLOHA__V1__ENVELOPE__BODY_WELCOME &&
	    body != FEDLOHA__V1__ENVELOPE__BODY_ERROR && body != FEDLOHA__V1__ENVELOPE__BODY_BYE)
		return fl_error_set(FL_EFORMAT, "the parent's first frame is not a Welcome");
	switch (body) {
	case FEDLOHA__V1__ENVELOPE__BODY_WELCOME: return on_welcome(e, env->welcome);
	case FEDLOHA__V1__ENVELOPE__BODY_TASK: return on_task(e, env->task);
	case FEDLOHA__V1__ENVELOPE__BODY_EVAL_TASK: return on_eval_task(e, env->eval_task);
	case FEDLOHA__V1__ENVELOPE__BODY_CHUNK: return on_chunk(e, env->chunk);
	case FEDLOHA__V1__ENVELOPE__BODY_HEARTBEAT: return FL_OK;
	case FEDLOHA__V1__ENVELOPE__BODY_BYE:
		if (env->bye->reason && strcmp(env->bye->reason, "done") == 0)
			r->done = 1;
		return FL_OK;
	case FEDLOHA__V1__ENVELOPE__BODY_ERROR:
		/* an authenticated refusal (e.g. not among the parent's mid-tiers) is final */
		r->refused |= fl_wire_error_from_code(env->error->code) == FL_EAUTH;
		return fl_error_set(fl_wire_error_from_code(env->error->code),
				    "the parent refused this node: %s",
				    env->error->message ? env->error->message : "");
	default:
		return fl_error_set(FL_EFORMAT,
				    "the parent sent a message a mid-tier does not serve (body %d)",
				    body);
	}
}

int srv_engine_relay_on_frame(struct srv_engine *e, const uint8_t *payload, size_t len,
			      uint64_t now_ms)
{
	struct srv_relay *r = e->relay;
	e->now = now_ms;
	r->last_rx = now_ms;
	fl_envelope *env = NULL;
	int err = fl_wire_decode(payload, len, e->cfg.max_frame_bytes, &env);
	if (err == FL_OK) {
		err = dispatch(e, env);
		fl_wire_envelope_free(env);
	}
	srv_eng_advance(e);
	return err;
}

uint64_t srv_relay_keep_ms(uint64_t left_ms, uint64_t sum_bytes, uint64_t rate)
{
	uint64_t keep = left_ms / 10 > UP_MARGIN_MIN_MS ? left_ms / 10 : UP_MARGIN_MIN_MS;
	if (keep > left_ms / 2)
		keep = left_ms / 2;
	if (rate) {
		uint64_t send = (sum_bytes * 1000 + rate - 1) / rate; /* ms, rounded up */
		if (send > keep)
			keep = send;
	}
	return keep > left_ms ? left_ms : keep;
}

/* The local deadline: the time left of the parent's less the margin of
 * srv_relay_keep_ms for the partial sum to travel up, and never more than
 * this node's --round-timeout. */
static uint32_t local_deadline(const struct srv_engine *e)
{
	const struct srv_relay *r = e->relay;
	if (!r->task_deadline_ms)
		return r->own_timeout_ms;
	uint64_t gone = e->now - r->task_rx_ms;
	uint64_t left = r->task_deadline_ms > gone ? r->task_deadline_ms - gone : 0;
	/* 16 bytes a value and about 64 of framing per chunk */
	uint64_t per = r->chunk_bytes / SRV_RELAY_SUM_BYTES ? r->chunk_bytes / SRV_RELAY_SUM_BYTES
							    : 1;
	uint64_t bytes = (uint64_t)e->nglobal * SRV_RELAY_SUM_BYTES +
			 (e->nglobal / per + e->K) * 64;
	uint64_t d = left - srv_relay_keep_ms(left, bytes, e->cfg.relay_up_rate);
	if (d > r->own_timeout_ms)
		d = r->own_timeout_ms;
	return d ? (uint32_t)d : 1;
}

static void send_partial(struct srv_engine *e, uint64_t round);

/* The pending task becomes the global model and the current round. */
static void install_task(struct srv_engine *e)
{
	struct srv_relay *r = e->relay;
	float *g = fl_model_params(e->model);
	for (size_t i = 0; i < e->K; i++)
		memcpy(g + e->goff[i], r->rxbuf + e->goff[i], e->gt[i].numel * sizeof(float));
	fl_model_params_changed(e->model);
	e->done = r->task_round - 1;
	e->attempt = 0;
	r->wait_until = e->now + local_deadline(e);
	r->waiting = 1;
}

int srv_eng_relay_take_task(struct srv_engine *e)
{
	struct srv_relay *r = e->relay;
	if (r && r->pending) {
		r->pending = 0;
		if (r->connected && r->task_gen == r->gen)
			install_task(e);
	}
	if (!r || !r->waiting || !srv_eng_ready_count(e))
		return 0;
	r->waiting = 0;
	if (!r->connected || r->task_gen != r->gen)
		return 0;
	e->cfg.round_timeout_ms = r->wait_until > e->now ? (uint32_t)(r->wait_until - e->now) : 1;
	r->serving = 1;
	return 1;
}

void srv_eng_relay_timers(struct srv_engine *e)
{
	struct srv_relay *r = e->relay;
	if (!r || !r->waiting || e->now < r->wait_until)
		return;
	r->waiting = 0;
	if (r->connected && r->task_gen == r->gen) {
		srv_agg_reset(e->agg);
		send_partial(e, r->task_round); /* empty: a dropout for the parent */
	}
}

uint64_t srv_eng_relay_deadline(const struct srv_engine *e)
{
	return e->relay && e->relay->waiting ? e->relay->wait_until : UINT64_MAX;
}

int srv_eng_relay_done(const struct srv_engine *e)
{
	return e->relay && e->relay->done;
}

void srv_eng_relay_settings(const struct srv_engine *e, Fedloha__V1__TrainSettings *ts)
{
	const Fedloha__V1__TrainSettings *p = &e->relay->ts;
	ts->epochs = p->epochs;
	ts->batch_size = p->batch_size;
	ts->lr = p->lr;
	ts->momentum = p->momentum;
	ts->weight_decay = p->weight_decay;
	ts->prox_mu = p->prox_mu;
	ts->optimizer = p->optimizer;
}

/* Every tensor's sums as SumChunk frames of at most chunk_bytes. */
static int send_sums(struct srv_engine *e, uint64_t round)
{
	struct srv_relay *r = e->relay;
	const __int128 *sums = srv_agg_sums(e->agg);
	size_t per = r->chunk_bytes / SRV_RELAY_SUM_BYTES;
	uint8_t *buf = malloc(per * SRV_RELAY_SUM_BYTES);
	if (!buf)
		return fl_error_set(FL_ENOMEM, "engine: out of memory");
	for (size_t i = 0; i < e->K; i++) {
		const struct fl_wire_tensor *t = &e->gt[i];
		size_t off = 0;
		do {
			size_t n = t->numel - off < per ? t->numel - off : per;
			for (size_t k = 0; k < n; k++)
				srv_relay_i128_put(buf + k * SRV_RELAY_SUM_BYTES,
						   sums[e->goff[i] + off + k]);
			Fedloha__V1__SumChunk ch = FEDLOHA__V1__SUM_CHUNK__INIT;
			ch.round = round;
			ch.name = (char *)t->name;
			ch.offset = off;
			ch.data.data = buf;
			ch.data.len = n * SRV_RELAY_SUM_BYTES;
			off += n;
			ch.last = off == t->numel;
			fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT;
			env.body_case = FEDLOHA__V1__ENVELOPE__BODY_SUM_CHUNK;
			env.sum_chunk = &ch;
			up_send(e, &env);
		} while (off < t->numel);
	}
	free(buf);
	return FL_OK;
}

static void add_metric(Fedloha__V1__PartialSum *ps, Fedloha__V1__Metric *m, const char *name,
		       double value)
{
	m[ps->n_metrics].name = (char *)name;
	m[ps->n_metrics++].value = value;
}

static void send_partial(struct srv_engine *e, uint64_t round)
{
	uint64_t w = srv_agg_total_weight(e->agg);
	Fedloha__V1__Metric m[6], *mp[6];
	for (int i = 0; i < 6; i++) {
		m[i] = (Fedloha__V1__Metric)FEDLOHA__V1__METRIC__INIT;
		mp[i] = &m[i];
	}
	Fedloha__V1__PartialSum ps = FEDLOHA__V1__PARTIAL_SUM__INIT;
	ps.round = round;
	ps.weight = w;
	ps.num_updates = w ? srv_agg_count(e->agg) : 0;
	ps.num_tensors = w ? (uint32_t)e->K : 0;
	ps.metrics = mp;
	if (w && e->loss_w)
		add_metric(&ps, m, "train_loss", e->loss_sum / (double)e->loss_w);
	if (w && e->acc_w)
		add_metric(&ps, m, "train_accuracy", e->acc_sum / (double)e->acc_w);
	if (w && e->hold_w) {
		add_metric(&ps, m, "holdout_loss", e->hold_loss_sum / (double)e->hold_w);
		add_metric(&ps, m, "holdout_accuracy", e->hold_acc_sum / (double)e->hold_w);
		add_metric(&ps, m, "holdout_examples", (double)e->hold_w);
		add_metric(&ps, m, "holdout_clients", (double)e->hold_clients);
	}
	fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT;
	env.body_case = FEDLOHA__V1__ENVELOPE__BODY_PARTIAL_SUM;
	env.partial_sum = &ps;
	up_send(e, &env);
	if (w && send_sums(e, round) != FL_OK)
		srv_eng_fail(e, "round %llu: cannot send the partial sum: %s",
			     (unsigned long long)round, fl_error_msg());
}

void srv_eng_relay_forward(struct srv_engine *e)
{
	struct srv_relay *r = e->relay;
	uint64_t t = e->done + 1;
	r->serving = 0;
	srv_eng_free_task_frames(e);
	if (r->connected && r->task_gen == r->gen)
		send_partial(e, t);
	srv_eng_report_attempt(e, t);
	e->done = t;
	srv_agg_reset(e->agg);
	srv_eng_emit_report(e);
}

void srv_engine_relay_tick(struct srv_engine *e, uint64_t now_ms)
{
	struct srv_relay *r = e->relay;
	e->now = now_ms;
	if (!r->connected || !r->welcomed || !r->hb_ms || now_ms - r->last_tx < r->hb_ms)
		return;
	Fedloha__V1__Heartbeat hb = FEDLOHA__V1__HEARTBEAT__INIT;
	hb.time_ms = now_ms;
	fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT;
	env.body_case = FEDLOHA__V1__ENVELOPE__BODY_HEARTBEAT;
	env.heartbeat = &hb;
	up_send(e, &env);
}

int srv_engine_relay_idle_expired(const struct srv_engine *e, uint64_t now_ms)
{
	const struct srv_relay *r = e->relay;
	return r->connected && r->idle_ms && now_ms - r->last_rx >= r->idle_ms;
}

int srv_engine_relay_ready(const struct srv_engine *e)
{
	return srv_eng_ready_count(e) >= (size_t)e->cfg.min_available;
}

int srv_engine_relay_refused(const struct srv_engine *e)
{
	return e->relay && e->relay->refused;
}

void srv_engine_relay_fail(struct srv_engine *e, const char *why)
{
	srv_eng_fail(e, "%s", why);
}

void srv_eng_relay_eval_done(struct srv_engine *e)
{
	struct srv_relay *r = e->relay;
	e->phase = SRV_PHASE_WAIT;
	if (!r->connected || r->eval_gen != r->gen)
		return;
	Fedloha__V1__EvalResult er = FEDLOHA__V1__EVAL_RESULT__INIT;
	er.round = e->done;
	/* the parent takes at most 2^62 from a mid-tier: a larger subtree
	 * total (more than 2^30 clients of 2^32 examples) is clamped, which
	 * only changes this result's weight at the parent */
	er.num_examples = e->eval_w > SRV_EVAL_TIER_MAX ? SRV_EVAL_TIER_MAX : e->eval_w;
	er.loss = e->eval_w ? e->eval_loss_sum / (double)e->eval_w : 0.0;
	er.accuracy = e->eval_w ? e->eval_acc_sum / (double)e->eval_w : 0.0;
	fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT;
	env.body_case = FEDLOHA__V1__ENVELOPE__BODY_EVAL_RESULT;
	env.eval_result = &er;
	up_send(e, &env);
}
