/* engine_conn.c - what the engine does with one decoded frame from one
 * connection: Hello / Welcome, BaseRequest, Update and its tensor chunks,
 * EvalResult, Heartbeat, Bye / Error from the peer. Every protocol violation
 * answers Error and closes only that connection. Round progress (folding,
 * aggregation, timers) is in engine_round.c. */
#include "engine_impl.h"

#include "errors.h"
#include "model_desc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int has_cap(const Fedloha__V1__Hello *h, const char *cap)
{
	for (size_t i = 0; i < h->n_capabilities; i++)
		if (h->capabilities[i] && strcmp(h->capabilities[i], cap) == 0)
			return 1;
	return 0;
}

/* f32 is always understood; the others must be announced. */
static int dtype_supported(const Fedloha__V1__Hello *h, enum fl_wire_dtype t)
{
	return t == FL_WIRE_F32 || has_cap(h, fl_wire_dtype_name(t));
}

/* The encoding of this client's tensors: the server's when it requires one
 * (refusing a client that lacks it) or when the client leaves the choice to
 * the server and supports it, else the client's preference, else f32. */
static int choose_dtype(struct srv_engine *e, struct srv_conn *c, const Fedloha__V1__Hello *h,
			enum fl_wire_dtype *out)
{
	enum fl_wire_dtype dt = FL_WIRE_F32;
	if (e->cfg.dtype_required) {
		if (!dtype_supported(h, e->cfg.dtype)) {
			srv_eng_reject(
				e, c, FL_EUNSUPPORTED,
				"this server requires dtype %s, not in the client's capabilities",
				fl_wire_dtype_name(e->cfg.dtype));
			return FL_EUNSUPPORTED;
		}
		dt = e->cfg.dtype;
	} else if (h->dtype_from_server) {
		if (dtype_supported(h, e->cfg.dtype))
			dt = e->cfg.dtype;
	} else if ((unsigned)h->preferred_dtype <= FL_WIRE_INT8 &&
		   dtype_supported(h, (enum fl_wire_dtype)h->preferred_dtype)) {
		dt = (enum fl_wire_dtype)h->preferred_dtype;
	}
	*out = dt;
	return FL_OK;
}

static void on_hello(struct srv_engine *e, struct srv_conn *c, const Fedloha__V1__Hello *h)
{
	if (h->protocol_version != FL_WIRE_PROTOCOL_VERSION) {
		srv_eng_reject(e, c, FL_EUNSUPPORTED, "protocol version %u, this server speaks %u",
			       h->protocol_version, FL_WIRE_PROTOCOL_VERSION);
		return;
	}
	const char *id = h->client_id ? h->client_id : "";
	if (!fl_wire_client_id_valid(id)) {
		srv_eng_reject(e, c, FL_EINVAL,
			       "client id must be 1..%d characters of [A-Za-z0-9._-]",
			       SRV_CLIENT_ID_MAX);
		return;
	}
	if (srv_map_get_name(&e->by_name, id)) {
		srv_eng_reject(e, c, FL_EINVAL, "client id '%s' is already connected", id);
		return;
	}
	enum fl_wire_dtype dt;
	if (choose_dtype(e, c, h, &dt) != FL_OK)
		return;
	snprintf(c->client_id, sizeof(c->client_id), "%s", id);
	if (srv_map_put(&e->by_name, c) != FL_OK) {
		c->client_id[0] = '\0';
		srv_eng_reject(e, c, FL_ENOMEM, "server out of memory");
		return;
	}
	c->dtype = dt;
	c->can_eval = has_cap(h, "eval");
	c->needs_base = e->has_base &&
			!(h->has_base && h->base_sha256.len == sizeof(e->base_sha) &&
			  !memcmp(h->base_sha256.data, e->base_sha, sizeof(e->base_sha)));
	c->needs_desc = e->has_desc && !e->desc_inline;
	c->state = SRV_CONN_READY;

	int ci = 0, hi = 0, wi = 0, classes = 0;
	fl_model_input_dims(e->model, &ci, &hi, &wi, &classes);
	uint32_t input[3] = {(uint32_t)ci, (uint32_t)hi, (uint32_t)wi};
	Fedloha__V1__ModelSpec ms = FEDLOHA__V1__MODEL_SPEC__INIT;
	const struct fl_model_desc *d = fl_model_description(e->model);
	ms.arch = d->builtin ? (char *)d->label : (char *)"";
	if (e->has_desc) {
		ms.description_sha256.data = e->desc_sha;
		ms.description_sha256.len = sizeof(e->desc_sha);
		ms.description_bytes = e->desc_bytes;
		if (e->desc_inline)
			ms.description = d->text;
	}
	ms.n_input = 3;
	ms.input = input;
	ms.classes = (uint32_t)classes;
	ms.config_json = e->config_json;
	if (e->has_base) {
		ms.base_sha256.data = e->base_sha;
		ms.base_sha256.len = sizeof(e->base_sha);
		ms.base_bytes = e->base_bytes;
	}
	Fedloha__V1__Limits lim = FEDLOHA__V1__LIMITS__INIT;
	lim.max_frame_bytes = e->cfg.max_frame_bytes;
	lim.chunk_bytes = e->cfg.chunk_bytes;
	lim.heartbeat_ms = e->cfg.heartbeat_ms;
	lim.idle_timeout_ms = e->cfg.idle_timeout_ms;
	char session[64];
	snprintf(session, sizeof(session), "%016llx-%llu", (unsigned long long)e->cfg.seed,
		 (unsigned long long)c->id);
	Fedloha__V1__Welcome w = FEDLOHA__V1__WELCOME__INIT;
	w.protocol_version = FL_WIRE_PROTOCOL_VERSION;
	w.session_id = session;
	w.model = &ms;
	w.limits = &lim;
	w.dtype = (Fedloha__V1__DType)dt;
	w.seed = e->cfg.seed;
	w.partial_sums = srv_eng_relay_is_tier(e, c->client_id);
	fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT;
	env.body_case = FEDLOHA__V1__ENVELOPE__BODY_WELCOME;
	env.welcome = &w;
	srv_eng_send_env(e, c, &env);
}

static int is_sha(const ProtobufCBinaryData *b, const uint8_t sha[32])
{
	return b->len == 32 && !memcmp(b->data, sha, 32);
}

/* BaseRequest names the loha base or the model description by SHA-256 (an
 * empty sha256 means the base); the answer is its BaseChunk frames. */
static void on_base_request(struct srv_engine *e, struct srv_conn *c,
			    const Fedloha__V1__BaseRequest *r)
{
	int desc = e->has_desc && is_sha(&r->sha256, e->desc_sha);
	if (!desc && !e->has_base) {
		srv_eng_reject(e, c, FL_EUNSUPPORTED, "this server has no base model to send");
		return;
	}
	if (c->state != SRV_CONN_READY) {
		srv_eng_reject(e, c, FL_EINVAL, "BaseRequest is only allowed between rounds");
		return;
	}
	if (desc) {
		srv_eng_send_frames(e, c, &e->descf);
		c->needs_desc = 0;
		return;
	}
	if (r->sha256.len && !is_sha(&r->sha256, e->base_sha)) {
		srv_eng_reject(e, c, FL_ENOTFOUND,
			       "BaseRequest for a base this server does not have");
		return;
	}
	srv_eng_send_frames(e, c, &e->base);
	c->needs_base = 0;
}

static uint64_t cur_round(const struct srv_engine *e)
{
	return e->done + 1;
}

/* An Update or TensorChunk from a connection that owes none. */
static void refuse_unexpected_update(struct srv_engine *e, struct srv_conn *c, uint64_t round)
{
	if (c->state == SRV_CONN_LATE) {
		srv_eng_reject(e, c, FL_ERANGE,
			       "late update for round %llu: its deadline has passed",
			       (unsigned long long)c->task_round);
	} else if (e->phase == SRV_PHASE_TRAIN && c->done_round == cur_round(e) &&
		   c->done_attempt == e->attempt) {
		srv_eng_reject(e, c, FL_EINVAL, "duplicate update for round %llu",
			       (unsigned long long)c->done_round);
	} else {
		srv_eng_reject(e, c, FL_EINVAL, "update for round %llu from a client not selected",
			       (unsigned long long)round);
	}
}

static const double *metric_find(const Fedloha__V1__Update *u, const char *name)
{
	for (size_t i = 0; i < u->n_metrics; i++)
		if (u->metrics[i] && u->metrics[i]->name && strcmp(u->metrics[i]->name, name) == 0)
			return &u->metrics[i]->value;
	return NULL;
}

/* The whole update arrived: folded, or discarded when the server had left
 * it unread past its deadline. */
static void upload_done(struct srv_engine *e, struct srv_conn *c)
{
	if (c->discarding)
		srv_eng_discard_done(e, c);
	else
		srv_eng_update_complete(e, c);
}

static void on_update(struct srv_engine *e, struct srv_conn *c, const Fedloha__V1__Update *u)
{
	if (c->state != SRV_CONN_TASKED && !c->discarding) {
		refuse_unexpected_update(e, c, u->round);
		return;
	}
	if (c->uploading || srv_eng_relay_receiving(e, c->id)) {
		srv_eng_reject(e, c, FL_EINVAL, "duplicate Update for round %llu",
			       (unsigned long long)c->task_round);
		return;
	}
	if (u->round != c->task_round) {
		srv_eng_reject(e, c, FL_EINVAL, "update for round %llu, the current round is %llu",
			       (unsigned long long)u->round, (unsigned long long)c->task_round);
		return;
	}
	if (u->num_tensors != e->K) {
		srv_eng_reject(e, c, FL_EFORMAT, "update announces %u tensors, expected %zu",
			       u->num_tensors, e->K);
		return;
	}
	if (u->num_examples < 1 || u->num_examples > SRV_AGG_WEIGHT_MAX) {
		srv_eng_reject(e, c, FL_ERANGE, "update num_examples %llu outside 1..2^32",
			       (unsigned long long)u->num_examples);
		return;
	}
	const double *loss = metric_find(u, "train_loss"), *acc = metric_find(u, "train_accuracy");
	c->has_loss = loss && isfinite(*loss);
	c->has_acc = acc && isfinite(*acc);
	c->upd_loss = c->has_loss ? *loss : 0.0;
	c->upd_acc = c->has_acc ? *acc : 0.0;
	c->upd_examples = u->num_examples;
	const double *hl = metric_find(u, "holdout_loss"), *ha = metric_find(u, "holdout_accuracy"),
		     *hn = metric_find(u, "holdout_examples");
	/* reporting only: anything implausible is ignored, never an error */
	int hold = hl && ha && hn && *hl >= 0 && *hl <= 1e6 && *ha >= 0 && *ha <= 1 && *hn >= 1 &&
		   *hn <= (double)SRV_AGG_WEIGHT_MAX && *hn == floor(*hn);
	c->upd_hold_loss = hold ? *hl : 0.0;
	c->upd_hold_acc = hold ? *ha : 0.0;
	c->upd_hold_n = hold ? (uint64_t)*hn : 0;
	/* Staging exists only while an update is in flight. */
	int err = srv_eng_upload_begin(e, c);
	if (err == SRV_UPLOAD_PARKED)
		return; /* this header comes again once a slot is free */
	if (err != FL_OK) {
		srv_eng_reject(e, c, err, "server cannot receive the update: %s", fl_error_msg());
		return;
	}
	fl_wire_rx_reset(c->rx, c->task_round);
	c->uploading = 1;
	if (fl_wire_rx_complete(c->rx))
		upload_done(e, c);
}

static void on_chunk(struct srv_engine *e, struct srv_conn *c, const Fedloha__V1__TensorChunk *ch)
{
	if (c->state != SRV_CONN_TASKED && !c->discarding) {
		refuse_unexpected_update(e, c, ch->round);
		return;
	}
	if (!c->uploading) {
		srv_eng_reject(e, c, FL_EFORMAT, "tensor chunk before the Update header");
		return;
	}
	if (ch->round != c->task_round) {
		srv_eng_reject(e, c, FL_EINVAL,
			       "tensor chunk for round %llu, the current round is %llu",
			       (unsigned long long)ch->round, (unsigned long long)c->task_round);
		return;
	}
	int err = fl_wire_rx_chunk(c->rx, ch);
	if (err != FL_OK) {
		srv_eng_reject(e, c, err, "%s", fl_error_msg());
		return;
	}
	if (fl_wire_rx_complete(c->rx))
		upload_done(e, c);
}

static void on_eval_result(struct srv_engine *e, struct srv_conn *c,
			   const Fedloha__V1__EvalResult *r)
{
	if (!c->eval_pending || e->phase != SRV_PHASE_EVAL) {
		/* A result after the evaluation deadline is harmless: ignore it. */
		if (r->round >= 1 && r->round <= e->done)
			return;
		srv_eng_reject(e, c, FL_EINVAL, "EvalResult for round %llu was not asked for",
			       (unsigned long long)r->round);
		return;
	}
	if (r->round != e->done) {
		srv_eng_reject(e, c, FL_EINVAL, "EvalResult for round %llu, expected %llu",
			       (unsigned long long)r->round, (unsigned long long)e->done);
		return;
	}
	/* a mid-tier's result sums its subtree's examples */
	uint64_t max = srv_eng_relay_is_tier(e, c->client_id) ? SRV_EVAL_TIER_MAX
							      : SRV_AGG_WEIGHT_MAX;
	if (r->num_examples > max || !isfinite(r->loss) || !isfinite(r->accuracy)) {
		srv_eng_reject(e, c, FL_ERANGE,
			       "EvalResult with num_examples over %s or non-finite "
			       "loss / accuracy",
			       max == SRV_AGG_WEIGHT_MAX ? "2^32" : "2^62");
		return;
	}
	c->eval_pending = 0;
	e->eval_outstanding--;
	if (r->num_examples) {
		e->eval_clients++;
		e->eval_loss_sum += r->loss * (double)r->num_examples;
		e->eval_acc_sum += r->accuracy * (double)r->num_examples;
		/* saturates: at most 2^62 a result, so a sum past 2^64 needs 4 */
		e->eval_w = r->num_examples > UINT64_MAX - e->eval_w ? UINT64_MAX
								     : e->eval_w + r->num_examples;
	}
}

void srv_eng_handle(struct srv_engine *e, struct srv_conn *c, const fl_envelope *env)
{
	int body = env->body_case;
	if (c->state == SRV_CONN_NEW && body != FEDLOHA__V1__ENVELOPE__BODY_HELLO) {
		srv_eng_reject(e, c, FL_EFORMAT, "expected Hello as the first frame");
		return;
	}
	if (body != FEDLOHA__V1__ENVELOPE__BODY_BASE_REQUEST)
		c->needs_base = c->needs_desc = 0;
	switch (body) {
	case FEDLOHA__V1__ENVELOPE__BODY_HELLO:
		if (c->state != SRV_CONN_NEW)
			srv_eng_reject(e, c, FL_EFORMAT, "Hello after the session started");
		else
			on_hello(e, c, env->hello);
		return;
	case FEDLOHA__V1__ENVELOPE__BODY_UPDATE: on_update(e, c, env->update); return;
	case FEDLOHA__V1__ENVELOPE__BODY_CHUNK: on_chunk(e, c, env->chunk); return;
	case FEDLOHA__V1__ENVELOPE__BODY_EVAL_RESULT:
		on_eval_result(e, c, env->eval_result);
		return;
	case FEDLOHA__V1__ENVELOPE__BODY_BASE_REQUEST:
		on_base_request(e, c, env->base_request);
		return;
	case FEDLOHA__V1__ENVELOPE__BODY_PARTIAL_SUM:
		srv_eng_relay_partial(e, c, env->partial_sum);
		return;
	case FEDLOHA__V1__ENVELOPE__BODY_SUM_CHUNK:
		srv_eng_relay_sum_chunk(e, c, env->sum_chunk);
		return;
	case FEDLOHA__V1__ENVELOPE__BODY_HEARTBEAT: return; /* any frame is a sign of life */
	case FEDLOHA__V1__ENVELOPE__BODY_BYE:
	case FEDLOHA__V1__ENVELOPE__BODY_ERROR:
		srv_eng_drop(e, c); /* the peer is leaving */
		return;
	default:
		srv_eng_reject(e, c, FL_EFORMAT, "a client may not send this message (body %d)",
			       body);
		return;
	}
}
