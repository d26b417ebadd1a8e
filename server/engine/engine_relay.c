/* engine_relay.c - a parent's side of an aggregator tree: a selected client
 * may answer its RoundTask with PartialSum + SumChunk frames (a mid-tier's
 * exact fixed-point sums, proto/PROTOCOL.md "Aggregator trees") instead of
 * Update + TensorChunk. Each chunk is checked as it arrives (round, tensor
 * order, offsets, sizes); the complete sum is checked against its weight
 * and folded into the round's accumulator (srv_agg_fold), then counted like
 * an update of that weight. Only the clients named as mid-tiers
 * (srv_engine_set_tiers) may send one. A bad one is refused like a bad update: Error,
 * the connection closed, the round goes on. An empty one (weight 0) is a
 * dropout. The mid-tier's own side is engine_upstream.c. */
#include "engine_relay.h"

#include "errors.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct srv_relay *srv_eng_relay_get(struct srv_engine *e)
{
	if (!e->relay && !(e->relay = calloc(1, sizeof(*e->relay))))
		fl_error_set(FL_ENOMEM, "engine: out of memory");
	return e->relay;
}

static void part_remove(struct srv_relay *r, size_t i)
{
	free(r->parts[i].sums);
	r->parts[i] = r->parts[--r->nparts];
}

static struct srv_relay_part *part_find(struct srv_relay *r, uint64_t conn)
{
	for (size_t i = 0; r && i < r->nparts; i++)
		if (r->parts[i].conn == conn)
			return &r->parts[i];
	return NULL;
}

void srv_eng_relay_forget(struct srv_engine *e, uint64_t conn)
{
	struct srv_relay_part *part = part_find(e->relay, conn);
	if (part)
		part_remove(e->relay, (size_t)(part - e->relay->parts));
}

void srv_eng_relay_end_attempt(struct srv_engine *e)
{
	struct srv_relay *r = e->relay;
	while (r && r->nparts)
		part_remove(r, r->nparts - 1);
}

int srv_eng_relay_receiving(const struct srv_engine *e, uint64_t conn)
{
	return part_find(e->relay, conn) != NULL;
}

void srv_eng_relay_free(struct srv_engine *e)
{
	struct srv_relay *r = e->relay;
	if (!r)
		return;
	while (r->nparts)
		part_remove(r, r->nparts - 1);
	free(r->parts);
	free(r->tiers);
	fl_wire_rx_free(r->rx);
	free(r->rxbuf);
	free(r);
	e->relay = NULL;
}

int srv_engine_set_tiers(struct srv_engine *e, const char *ids)
{
	for (const char *p = ids; p && *p;) {
		size_t n = strcspn(p, ",");
		char id[FL_WIRE_CLIENT_ID_MAX + 1];
		snprintf(id, sizeof(id), "%.*s", (int)(n > FL_WIRE_CLIENT_ID_MAX ? 0 : n), p);
		if (!fl_wire_client_id_valid(id))
			return fl_error_set(FL_EINVAL,
					    "mid-tier ids: '%.*s' is not a client id (1..%d of "
					    "[A-Za-z0-9._-], comma-separated)",
					    (int)(n > 80 ? 80 : n), p, FL_WIRE_CLIENT_ID_MAX);
		p += n + (p[n] == ',');
	}
	if (!e)
		return FL_OK;
	struct srv_relay *r = srv_eng_relay_get(e);
	if (!r)
		return FL_ENOMEM;
	free(r->tiers);
	r->tiers = NULL;
	if (ids && *ids && !(r->tiers = strdup(ids)))
		return fl_error_set(FL_ENOMEM, "engine: out of memory");
	return FL_OK;
}

int srv_eng_relay_is_tier(const struct srv_engine *e, const char *id)
{
	size_t len = strlen(id);
	for (const char *p = e->relay ? e->relay->tiers : NULL; p && *p;) {
		size_t n = strcspn(p, ",");
		if (n == len && !memcmp(p, id, n))
			return 1;
		p += n + (p[n] == ',');
	}
	return 0;
}

/* A PartialSum or SumChunk from c, which must owe this round's update. */
static int owes_update(struct srv_engine *e, struct srv_conn *c, uint64_t round)
{
	if (c->state == SRV_CONN_TASKED)
		return 1;
	if (c->state == SRV_CONN_LATE)
		srv_eng_reject(e, c, FL_ERANGE,
			       "late partial sum for round %llu: its deadline has passed",
			       (unsigned long long)c->task_round);
	else
		srv_eng_reject(e, c, FL_EINVAL,
			       "partial sum for round %llu from a client not selected",
			       (unsigned long long)round);
	return 0;
}

static const double *metric_find(const Fedloha__V1__PartialSum *p, const char *name)
{
	for (size_t i = 0; i < p->n_metrics; i++)
		if (p->metrics[i] && p->metrics[i]->name && strcmp(p->metrics[i]->name, name) == 0)
			return &p->metrics[i]->value;
	return NULL;
}

/* The subtree's training means, weighted by its weight like an update's,
 * and its held-out figures (means over holdout_examples samples of
 * holdout_clients clients); implausible figures are ignored, as in an
 * update. Returns the clients behind the held-out figures (0: none). */
static uint64_t take_metrics(struct srv_conn *c, const Fedloha__V1__PartialSum *p)
{
	const double *loss = metric_find(p, "train_loss"), *acc = metric_find(p, "train_accuracy");
	c->has_loss = loss && isfinite(*loss);
	c->has_acc = acc && isfinite(*acc);
	c->upd_loss = c->has_loss ? *loss : 0.0;
	c->upd_acc = c->has_acc ? *acc : 0.0;
	c->upd_examples = p->weight;
	const double *hl = metric_find(p, "holdout_loss"), *ha = metric_find(p, "holdout_accuracy"),
		     *hn = metric_find(p, "holdout_examples"),
		     *hc = metric_find(p, "holdout_clients");
	int hold = hl && ha && hn && hc && *hl >= 0 && *hl <= 1e6 && *ha >= 0 && *ha <= 1 &&
		   *hn >= 1 && *hn <= 0x1p62 && *hn == floor(*hn) && *hc >= 1 &&
		   *hc <= (double)p->num_updates && *hc == floor(*hc);
	c->upd_hold_loss = hold ? *hl : 0.0;
	c->upd_hold_acc = hold ? *ha : 0.0;
	c->upd_hold_n = hold ? (uint64_t)*hn : 0;
	return hold ? (uint64_t)*hc : 0;
}

/* Weight 0: the subtree had no update by its deadline, a dropout. */
static void empty_partial(struct srv_engine *e, struct srv_conn *c,
			  const Fedloha__V1__PartialSum *p)
{
	if (p->num_updates || p->num_tensors) {
		srv_eng_reject(e, c, FL_EFORMAT,
			       "an empty partial sum (weight 0) announces %llu updates and %u "
			       "tensors",
			       (unsigned long long)p->num_updates, p->num_tensors);
		return;
	}
	c->state = SRV_CONN_READY;
	c->done_round = c->task_round;
	c->done_attempt = e->attempt;
	e->dropped++;
	e->outstanding--;
}

static void part_complete(struct srv_engine *e, struct srv_conn *c)
{
	struct srv_relay *r = e->relay;
	struct srv_relay_part *part = part_find(r, c->id);
	int err = srv_agg_fold(e->agg, part->sums, part->weight, part->count);
	uint64_t hold_clients = part->hold_clients;
	part_remove(r, (size_t)(part - r->parts));
	if (err != FL_OK) {
		srv_eng_reject(e, c, err, "partial sum refused: %s", fl_error_msg());
		return;
	}
	srv_eng_update_account(e, c); /* counts one held-out client */
	/* hold_clients <= num_updates <= SRV_RELAY_UPDATES_MAX; the total
	 * saturates at INT_MAX */
	if (hold_clients > 1)
		e->hold_clients = hold_clients - 1 > (uint64_t)(INT_MAX - e->hold_clients)
					  ? INT_MAX
					  : e->hold_clients + (int)(hold_clients - 1);
}

/* Checks the header; 1 when a reception may start. */
static int partial_ok(struct srv_engine *e, struct srv_conn *c, const Fedloha__V1__PartialSum *p)
{
	if (c->uploading || part_find(e->relay, c->id)) {
		srv_eng_reject(e, c, FL_EINVAL, "duplicate update for round %llu",
			       (unsigned long long)c->task_round);
		return 0;
	}
	if (p->round != c->task_round) {
		srv_eng_reject(e, c, FL_EINVAL,
			       "partial sum for round %llu, the current round is %llu",
			       (unsigned long long)p->round, (unsigned long long)c->task_round);
		return 0;
	}
	if (p->num_tensors != e->K) {
		srv_eng_reject(e, c, FL_EFORMAT, "partial sum announces %u tensors, expected %zu",
			       p->num_tensors, e->K);
		return 0;
	}
	if (p->weight > ((uint64_t)1 << 62) || p->num_updates < 1 || p->num_updates > p->weight ||
	    p->num_updates > SRV_RELAY_UPDATES_MAX ||
	    (p->weight - 1) / SRV_AGG_WEIGHT_MAX >= p->num_updates) {
		srv_eng_reject(e, c, FL_ERANGE,
			       "partial sum of %llu updates with weight %llu (weight at most "
			       "2^62 and at most 2^32 per update, 1..2^30 updates)",
			       (unsigned long long)p->num_updates, (unsigned long long)p->weight);
		return 0;
	}
	return 1;
}

void srv_eng_relay_partial(struct srv_engine *e, struct srv_conn *c,
			   const Fedloha__V1__PartialSum *p)
{
	if (!owes_update(e, c, p->round))
		return;
	if (!srv_eng_relay_is_tier(e, c->client_id)) {
		srv_eng_reject(e, c, FL_EAUTH,
			       "client '%s' may not send partial sums: it is not one of this "
			       "coordinator's mid-tiers (--tier-ids)",
			       c->client_id);
		return;
	}
	if (p->weight == 0 && p->round == c->task_round && !c->uploading &&
	    !part_find(e->relay, c->id)) {
		empty_partial(e, c, p);
		return;
	}
	if (!partial_ok(e, c, p))
		return;
	struct srv_relay *r = srv_eng_relay_get(e);
	struct srv_relay_part *np = r ? realloc(r->parts, (r->nparts + 1) * sizeof(*np)) : NULL;
	__int128 *sums = calloc(e->nglobal ? e->nglobal : 1, sizeof(*sums));
	if (np)
		r->parts = np;
	if (!np || !sums) {
		free(sums);
		srv_eng_reject(e, c, FL_ENOMEM, "server cannot receive the partial sum");
		return;
	}
	r->parts[r->nparts++] = (struct srv_relay_part){.hold_clients = take_metrics(c, p),
							.conn = c->id,
							.round = p->round,
							.weight = p->weight,
							.count = p->num_updates,
							.sums = sums};
	if (e->K == 0)
		part_complete(e, c);
}

/* Checks one chunk against the reception's position; FL_OK or the
 * rejection's error (c is then gone). */
static int chunk_check(struct srv_engine *e, struct srv_conn *c, const struct srv_relay_part *part,
		       const Fedloha__V1__SumChunk *ch, size_t *count)
{
	const struct fl_wire_tensor *t = &e->gt[part->ti];
	if (ch->round != c->task_round || part->round != c->task_round)
		return srv_eng_reject(
			e, c, FL_EINVAL, "sum chunk for round %llu, the current round is %llu",
			(unsigned long long)ch->round, (unsigned long long)c->task_round);
	if (e->cfg.chunk_bytes && ch->data.len > e->cfg.chunk_bytes)
		return srv_eng_reject(e, c, FL_EFORMAT,
				      "sum chunk of '%s' carries %zu bytes, more than the "
				      "server's chunk_bytes %u",
				      t->name, ch->data.len, (unsigned)e->cfg.chunk_bytes);
	if (!ch->name || strcmp(ch->name, t->name) != 0)
		return srv_eng_reject(e, c, FL_EFORMAT, "sum chunk for '%s', expected '%s'",
				      ch->name ? ch->name : "", t->name);
	if (ch->offset != part->off)
		return srv_eng_reject(e, c, FL_EFORMAT,
				      "sum chunk of '%s' at offset %llu, expected %zu", t->name,
				      (unsigned long long)ch->offset, part->off);
	size_t n = ch->data.len / SRV_RELAY_SUM_BYTES;
	if (ch->data.len % SRV_RELAY_SUM_BYTES || n > t->numel - part->off)
		return srv_eng_reject(e, c, FL_ESHAPE,
				      "sum chunk of '%s': %zu bytes at element %zu of %zu (16 "
				      "bytes per element)",
				      t->name, ch->data.len, part->off, t->numel);
	int ends = part->off + n == t->numel;
	if (ends != (int)ch->last || (n == 0 && t->numel))
		return srv_eng_reject(e, c, FL_EFORMAT,
				      "sum chunk of '%s' ends at element %zu of %zu with last=%d",
				      t->name, part->off + n, t->numel, (int)ch->last);
	*count = n;
	return FL_OK;
}

void srv_eng_relay_sum_chunk(struct srv_engine *e, struct srv_conn *c,
			     const Fedloha__V1__SumChunk *ch)
{
	if (!owes_update(e, c, ch->round))
		return;
	struct srv_relay_part *part = part_find(e->relay, c->id);
	if (!part) {
		srv_eng_reject(e, c, FL_EFORMAT, "sum chunk before the PartialSum header");
		return;
	}
	size_t n = 0;
	if (chunk_check(e, c, part, ch, &n) != FL_OK)
		return;
	__int128 *dst = part->sums + e->goff[part->ti] + part->off;
	for (size_t i = 0; i < n; i++)
		dst[i] = srv_relay_i128_get(ch->data.data + i * SRV_RELAY_SUM_BYTES);
	part->off += n;
	if (ch->last) {
		part->ti++;
		part->off = 0;
	}
	if (part->ti == e->K)
		part_complete(e, c);
}
