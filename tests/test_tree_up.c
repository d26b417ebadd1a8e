/* test_tree_up.c - a mid-tier engine's side of its link to its parent
 * (engine_upstream.c), both engines in-process: the frames one sends the
 * other are handed over by the test. A parent with another seed or model
 * is refused with the reason; a task that finds no client of the mid-tier
 * ready is answered at the mid-tier's deadline with an empty partial sum,
 * which the parent counts as a dropout. The full tree over TCP is
 * cli_tree.sh. */
#include "engine_fake.h"
#include "errors.h"
#include "model.h"
#include "testutil.h"
#include "wireutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Frames the mid-tier sent its parent, not yet handed over. */
struct upq {
	struct fl_buf *f[64];
	size_t n;
};

static int up_capture(void *ctx, struct fl_buf *frame)
{
	struct upq *q = ctx;
	if (q->n < sizeof(q->f) / sizeof(q->f[0]))
		q->f[q->n++] = frame;
	else
		fl_buf_unref(frame);
	return FL_OK;
}

struct link {
	struct fake_net *root, *tier;
	struct fake_client *x; /* the mid-tier as the root's client */
	struct upq up;
	int down_err;  /* the first error srv_engine_relay_on_frame returned */
	char why[256]; /* its message; the link is then cut (no more frames) */
};

/* Hands the mid-tier's frames to the root, then the root's to the mid-tier,
 * until neither has any. */
static void shuttle(struct link *l)
{
	for (int moved = 1; moved;) {
		moved = 0;
		for (size_t i = 0; i < l->up.n; i++, moved = 1) {
			struct fl_buf *b = l->up.f[i];
			fake_send_raw(l->root, l->x, b->data + FL_WIRE_FRAME_HEADER_BYTES,
				      b->len - FL_WIRE_FRAME_HEADER_BYTES);
			fl_buf_unref(b);
		}
		l->up.n = 0;
		struct fake_client *x = l->x;
		for (size_t i = 0; i < x->nq; i++, moved = 1) {
			struct fl_buf *b = x->q[i];
			int err = l->down_err ? FL_OK
					      : srv_engine_relay_on_frame(
							l->tier->e,
							b->data + FL_WIRE_FRAME_HEADER_BYTES,
							b->len - FL_WIRE_FRAME_HEADER_BYTES,
							l->tier->now);
			if (err) {
				l->down_err = err;
				snprintf(l->why, sizeof(l->why), "%s", fl_error_msg());
			}
			fl_buf_unref(b);
		}
		x->nq = 0;
	}
}

/* A root (min_available 1, one round) naming "tier-x", and a mid-tier of
 * model seed tier_seed and config seed cfg_seed, connected. */
static void link_up(struct link *l, uint64_t tier_seed, uint64_t cfg_seed)
{
	memset(l, 0, sizeof(*l));
	struct srv_engine_config cfg;
	fake_engine_config(&cfg, 1, 3, 1);
	cfg.min_available = 1;
	cfg.round_timeout_ms = 4000;
	l->root = fake_net_own(9, &cfg);
	FL_CHECK(srv_engine_set_tiers(l->root->e, "tier-x") == FL_OK);
	fake_engine_config(&cfg, 1, cfg_seed, 1);
	cfg.relay = 1;
	cfg.min_available = 1;
	l->tier = fake_net_own(tier_seed, &cfg);
	struct srv_relay_io rio = {&l->up, up_capture};
	FL_CHECK(srv_engine_relay_start(l->tier->e, "tier-x", &rio) == FL_OK);
	l->x = fake_connect_raw(l->root, "tier-x");
	l->x->hold = 1;
	srv_engine_relay_on_connect(l->tier->e, l->tier->now);
	shuttle(l);
}

static void link_down(struct link *l)
{
	for (size_t i = 0; i < l->up.n; i++)
		fl_buf_unref(l->up.f[i]);
	fake_net_free(l->tier);
	fake_net_free(l->root);
}

static void test_welcome_mismatch(void)
{
	struct link l;
	link_up(&l, 9, 8); /* the root's seed is 3 */
	FL_CHECK(l.down_err == FL_EINVAL && srv_engine_relay_refused(l.tier->e));
	FL_CHECK_MSG(strstr(l.why, "the parent's seed 3 is not this node's --seed 8"), "%s", l.why);
	link_down(&l);

	link_up(&l, 10, 3); /* another model: its initial weights differ, not the spec */
	FL_CHECK_MSG(l.down_err == FL_OK && !srv_engine_relay_refused(l.tier->e),
		     "same spec refused: %s", l.why);
	link_down(&l);
}

/* No client of the mid-tier: the root's task waits for one until the
 * mid-tier's deadline, then an empty partial sum goes up; the root counts
 * the mid-tier dropped. */
static void test_empty_at_deadline(void)
{
	struct link l;
	link_up(&l, 9, 3);
	FL_CHECK_MSG(l.down_err == FL_OK, "the Welcome refused: %s", l.why);
	srv_engine_tick(l.tier->e, l.tier->now);
	FL_CHECK(l.up.n == 0); /* still waiting for a client */
	/* the root's 4 s less the 0.5 s margin */
	l.tier->now += 3400;
	srv_engine_tick(l.tier->e, l.tier->now);
	FL_CHECK(l.up.n == 0);
	l.tier->now += 200;
	srv_engine_tick(l.tier->e, l.tier->now);
	FL_CHECK_MSG(l.up.n == 1, "%zu frames up at the deadline", l.up.n);
	if (l.up.n == 1) {
		fl_envelope *env = NULL;
		struct fl_buf *b = l.up.f[0];
		FL_CHECK(fl_wire_decode(b->data + FL_WIRE_FRAME_HEADER_BYTES,
					b->len - FL_WIRE_FRAME_HEADER_BYTES, 1u << 20,
					&env) == FL_OK);
		FL_CHECK(env && env->body_case == FEDLOHA__V1__ENVELOPE__BODY_PARTIAL_SUM &&
			 env->partial_sum->weight == 0 && env->partial_sum->num_updates == 0 &&
			 env->partial_sum->round == 1);
		fl_wire_envelope_free(env);
	}
	l.root->now += 3600;
	shuttle(&l);
	FL_CHECK_MSG(!l.x->closed && !l.x->error_code, "empty partial sum refused: %s",
		     l.x->error_msg);
	/* a dropout: min_report 1 is not met, no round is reported, and the
	 * retry tasks the mid-tier again */
	FL_CHECK(l.root->nrep == 0);
	link_down(&l);
}

int main(void)
{
	FL_RUN(test_welcome_mismatch);
	FL_RUN(test_empty_at_deadline);
	return fl_test_main_end();
}
