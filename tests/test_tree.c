/* test_tree.c - aggregator trees below the network: folding partial sums
 * (srv_agg_fold) gives the accumulator of adding every update to one
 * srv_agg, bit for bit, and refuses bad sums without changing anything; an
 * engine that receives a PartialSum + SumChunk frames from a selected
 * client ends the round with exactly the model of a flat round over the
 * same updates; an empty PartialSum is a dropout; every malformed partial
 * sum, and any from a client not named as a mid-tier, gets Error + close
 * for that connection only. */
#include "aggregate.h"
#include "engine_fake.h"
#include "engine_impl.h"
#include "engine_relay.h"
#include "errors.h"
#include "model.h"
#include "testutil.h"
#include "wireutil.h"

#include <stdlib.h>
#include <string.h>

#define N 500
#define K 6

static float upd[K][N];
static const uint64_t weights[K] = {1, 7, 600, 4294967296ull, 33, 12345};

static struct srv_agg *agg_of(int from, int to)
{
	struct srv_agg *a = NULL;
	FL_CHECK(srv_agg_new(N, &a) == FL_OK);
	for (int k = from; k < to; k++)
		FL_CHECK(srv_agg_add(a, upd[k], weights[k]) == FL_OK);
	return a;
}

static void test_fold_is_flat(void)
{
	for (int k = 0; k < K; k++) {
		fl_test_fill_uniform(upd[k], N, 300 + (uint64_t)k, -3.0f, 3.0f);
		upd[k][0] = k % 2 ? 1e6f : -1e6f;
	}
	struct srv_agg *flat = agg_of(0, K), *a = agg_of(0, 2), *b = agg_of(2, K), *root = NULL;
	FL_CHECK(srv_agg_new(N, &root) == FL_OK);
	FL_CHECK(srv_agg_fold(root, srv_agg_sums(b), srv_agg_total_weight(b), srv_agg_count(b)) ==
		 FL_OK);
	FL_CHECK(srv_agg_fold(root, srv_agg_sums(a), srv_agg_total_weight(a), srv_agg_count(a)) ==
		 FL_OK);
	FL_CHECK(srv_agg_count(root) == K &&
		 srv_agg_total_weight(root) == srv_agg_total_weight(flat));
	FL_CHECK(!memcmp(srv_agg_sums(root), srv_agg_sums(flat), N * sizeof(__int128)));
	static float r1[N], r2[N];
	FL_CHECK(srv_agg_result(flat, r1) == FL_OK && srv_agg_result(root, r2) == FL_OK);
	FL_CHECK(!memcmp(r1, r2, sizeof(r1)));

	/* refusals leave the accumulator as it was */
	static __int128 before[N], bad[N];
	memcpy(before, srv_agg_sums(root), sizeof(before));
	memcpy(bad, srv_agg_sums(a), sizeof(bad));
	uint64_t w = srv_agg_total_weight(a);
	FL_CHECK(srv_agg_fold(root, bad, 0, 0) == FL_EINVAL);
	FL_CHECK(srv_agg_fold(root, bad, w, 0) == FL_EINVAL);
	FL_CHECK(srv_agg_fold(root, bad, 3, 4) == FL_EINVAL); /* 4 updates cannot weigh 3 */
	FL_CHECK(srv_agg_fold(root, bad, ((uint64_t)1 << 62) + 1, 1) == FL_EINVAL);
	bad[N - 1] = (__int128)w * (__int128)(1e6 * 1099511627776.0) + 1; /* over w * 1e6 * 2^40 */
	FL_CHECK(srv_agg_fold(root, bad, w, 2) == FL_ERANGE);
	bad[N - 1] = -bad[N - 1];
	FL_CHECK(srv_agg_fold(root, bad, w, 2) == FL_ERANGE);
	bad[N - 1] = 0;
	FL_CHECK(srv_agg_fold(root, bad, ((uint64_t)1 << 62) - 1, 1) == FL_ERANGE); /* total */
	FL_CHECK(srv_agg_count(root) == K &&
		 srv_agg_total_weight(root) == srv_agg_total_weight(flat));
	FL_CHECK(!memcmp(srv_agg_sums(root), before, sizeof(before)));
	srv_agg_free(flat);
	srv_agg_free(a);
	srv_agg_free(b);
	srv_agg_free(root);
}

/* ---- the engine ---- */

struct fixture {
	struct fl_model *m;
	struct fake_net *net;
	struct fake_client *g1, *g2, *x;
	size_t n;            /* global floats */
	struct srv_agg *sub; /* x's subtree: 2 updates, 5.0 (weight 2) and 7.0 (weight 3) */
	const struct fl_model_tensor *gt[16]; /* global tensors, model order */
	size_t k;
};

static void setup_report(struct fixture *f, int min_available, int min_report, uint32_t eval_every)
{
	memset(f, 0, sizeof(*f));
	FL_CHECK(fl_model_new("mlp", 1, 2, 2, 3, NULL, 9, 1, &f->m) == FL_OK);
	struct srv_engine_config cfg;
	fake_engine_config(&cfg, 1, 3, min_report);
	cfg.min_available = min_available;
	cfg.chunk_bytes = 64; /* 4 sums a SumChunk at most */
	cfg.eval_every = eval_every;
	f->net = fake_net_new(f->m, &cfg);
	FL_CHECK(srv_engine_set_tiers(f->net->e, "tier-y,tier-x") == FL_OK);
	f->n = fl_model_count_floats(f->m, FL_TENSOR_GLOBAL);
	for (size_t i = 0; i < fl_model_tensor_count(f->m) && f->k < 16; i++)
		if (fl_model_tensor_at(f->m, i)->flags & FL_TENSOR_GLOBAL)
			f->gt[f->k++] = fl_model_tensor_at(f->m, i);
	FL_CHECK(srv_agg_new(f->n, &f->sub) == FL_OK);
	float *v = malloc(f->n * sizeof(float));
	for (int j = 0; j < 2; j++) {
		for (size_t i = 0; i < f->n; i++)
			v[i] = j ? 7.0f : 5.0f;
		FL_CHECK(srv_agg_add(f->sub, v, j ? 3 : 2) == FL_OK);
	}
	free(v);
	f->g1 = fake_connect(f->net, "good-1", 10, 1.0f, NULL);
	f->g2 = fake_connect(f->net, "good-2", 30, 2.0f, NULL);
}

static void setup(struct fixture *f, int min_available)
{
	setup_report(f, min_available, 2, 0);
}

/* x joins and holds its task: round 1 is running. */
static void setup_x(struct fixture *f)
{
	setup(f, 3);
	f->x = fake_connect(f->net, "tier-x", 0, 0.0f, "");
	f->x->hold = 1;
	fake_pump(f->net);
	FL_CHECK(f->x->tasks == 1 && f->g1->updates_sent == 1 && f->net->nrep == 0);
}

static void teardown(struct fixture *f)
{
	srv_agg_free(f->sub);
	fake_net_free(f->net);
	fl_model_free(f->m);
}

static void send_header(struct fixture *f, uint64_t round, uint64_t weight, uint64_t count,
			uint32_t ntensors)
{
	Fedloha__V1__PartialSum p = FEDLOHA__V1__PARTIAL_SUM__INIT;
	p.round = round;
	p.weight = weight;
	p.num_updates = count;
	p.num_tensors = ntensors;
	fl_envelope env = fl_test_envelope(&p.base);
	fake_send_env(f->net, f->x, &env);
}

static void send_chunk(struct fixture *f, uint64_t round, const char *name, uint64_t off,
		       const __int128 *v, size_t n, size_t extra_bytes, int last)
{
	size_t bytes = n * 16 + extra_bytes;
	uint8_t *buf = calloc(bytes ? bytes : 1, 1);
	for (size_t i = 0; i < n; i++) {
		unsigned __int128 u = (unsigned __int128)v[i];
		for (int b = 0; b < 16; b++, u >>= 8)
			buf[i * 16 + (size_t)b] = (uint8_t)u;
	}
	Fedloha__V1__SumChunk c = FEDLOHA__V1__SUM_CHUNK__INIT;
	c.round = round;
	c.name = (char *)name;
	c.offset = off;
	c.data.data = buf;
	c.data.len = bytes;
	c.last = last;
	fl_envelope env = fl_test_envelope(&c.base);
	fake_send_env(f->net, f->x, &env);
	free(buf);
}

/* The whole partial sum of `sums` in chunks of 3 elements. */
static void send_sums(struct fixture *f, uint64_t weight, uint64_t count, const __int128 *sums)
{
	send_header(f, 1, weight, count, (uint32_t)f->k);
	for (size_t i = 0; i < f->k && !f->x->closed; i++) {
		const struct fl_model_tensor *t = f->gt[i];
		for (size_t off = 0; off < t->numel; off += 3) {
			size_t n = t->numel - off < 3 ? t->numel - off : 3;
			send_chunk(f, 1, t->name, off, sums + t->offset + off, n, 0,
				   off + n == t->numel);
		}
	}
}

static void test_partial_equals_flat(void)
{
	/* flat: four clients */
	struct fixture a;
	setup(&a, 4);
	fake_connect(a.net, "y-1", 2, 5.0f, NULL);
	fake_connect(a.net, "y-2", 3, 7.0f, NULL);
	FL_CHECK(fake_run(a.net, 100000) && a.net->nrep == 1 && a.net->rep[0].reported == 4);
	/* tree: two clients and x with the partial sum of the other two */
	struct fixture b;
	setup_x(&b);
	send_sums(&b, srv_agg_total_weight(b.sub), srv_agg_count(b.sub), srv_agg_sums(b.sub));
	fake_pump(b.net);
	FL_CHECK_MSG(!b.x->error_code, "partial sum refused: %s", b.x->error_msg);
	FL_CHECK(fake_run(b.net, 100000) && b.net->nrep == 1);
	const struct srv_round_report *r = &b.net->rep[0];
	FL_CHECK(r->reported == 3 && r->dropped == 0 && r->rejected == 0 && r->examples == 45);
	FL_CHECK(!memcmp(fl_model_params(a.m), fl_model_params(b.m), a.n * sizeof(float)));
	FL_CHECK(fl_model_params(b.m)[0] == (10.0f + 60.0f + 10.0f + 21.0f) / 45.0f);
	teardown(&a);
	teardown(&b);
}

static void test_empty_is_dropout(void)
{
	struct fixture f;
	setup_x(&f);
	send_header(&f, 1, 0, 0, 0);
	fake_pump(f.net);
	FL_CHECK_MSG(!f.x->error_code, "empty partial sum refused: %s", f.x->error_msg);
	FL_CHECK(fake_run(f.net, 100000) && f.net->nrep == 1);
	const struct srv_round_report *r = &f.net->rep[0];
	FL_CHECK(r->reported == 2 && r->dropped == 1 && r->rejected == 0);
	FL_CHECK(fl_model_params(f.m)[0] == 1.75f);
	teardown(&f);
}

/* x was refused with `code`; the round completed with the two others. */
static void finish(struct fixture *f, int code, const char *what)
{
	fake_pump(f->net);
	FL_CHECK_MSG(f->x->closed, "%s: not closed", what);
	FL_CHECK_MSG(f->x->error_code == (uint32_t)-code, "%s: error code %u (%s), expected %d",
		     what, f->x->error_code, f->x->error_msg, -code);
	FL_CHECK(fake_run(f->net, 100000));
	FL_CHECK_MSG(f->net->nrep == 1 && f->net->rep[0].reported == 2 &&
			     f->net->rep[0].rejected == 1,
		     "%s: round not completed by the others", what);
	FL_CHECK(fl_model_params(f->m)[0] == 1.75f);
	teardown(f);
}

static void test_bad_headers(void)
{
	static const struct {
		uint64_t round, weight, count;
		int extra_tensors, twice, code;
		const char *what;
	} cases[] = {
		{2, 5, 2, 0, 0, FL_EINVAL, "wrong round"},
		{1, 5, 2, 1, 0, FL_EFORMAT, "num_tensors"},
		{1, 5, 6, 0, 0, FL_ERANGE, "more updates than weight"},
		{1, 5, 0, 0, 0, FL_ERANGE, "no updates"},
		{1, ((uint64_t)1 << 62) + 1, 1, 0, 0, FL_ERANGE, "weight over 2^62"},
		{1, 5, 2, 0, 1, FL_EINVAL, "second header"},
		{1, ((uint64_t)1 << 33) + 1, 2, 0, 0, FL_ERANGE, "over 2^32 per update"},
		{1, (uint64_t)1 << 31, (uint64_t)1 << 31, 0, 0, FL_ERANGE, "over 2^30 updates"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fixture f;
		setup_x(&f);
		for (int k = 0; k <= cases[i].twice; k++)
			send_header(&f, cases[i].round, cases[i].weight, cases[i].count,
				    (uint32_t)((int)f.k + cases[i].extra_tensors));
		finish(&f, cases[i].code, cases[i].what);
	}
	struct fixture f;
	setup_x(&f);
	send_header(&f, 1, 0, 1, 0);
	finish(&f, FL_EFORMAT, "empty with updates");
}

static void test_bad_chunks(void)
{
	static const struct {
		int header;              /* a valid PartialSum first */
		uint64_t round, offset;  /* of the chunk */
		int tensor, extra, last; /* tensor index, bytes past 16 * 1, last flag */
		int code;
		const char *what;
	} cases[] = {
		{0, 1, 0, 0, 0, 0, FL_EFORMAT, "chunk first"},
		{1, 1, 0, 1, 0, 0, FL_EFORMAT, "tensor out of order"},
		{1, 1, 1, 0, 0, 0, FL_EFORMAT, "offset gap"},
		{1, 1, 0, 0, 5, 0, FL_ESHAPE, "not 16 bytes an element"},
		{1, 1, 0, 0, 0, 1, FL_EFORMAT, "last too early"},
		{1, 2, 0, 0, 0, 0, FL_EINVAL, "chunk round"},
		{1, 1, 0, 0, 64, 0, FL_EFORMAT, "over chunk_bytes"}, /* 80 bytes */
	};
	struct fixture f;
	__int128 v[1] = {0};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		setup_x(&f);
		if (cases[i].header)
			send_header(&f, 1, 5, 2, (uint32_t)f.k);
		send_chunk(&f, cases[i].round, f.gt[cases[i].tensor]->name, cases[i].offset, v, 1,
			   (size_t)cases[i].extra, cases[i].last);
		finish(&f, cases[i].code, cases[i].what);
	}

	setup_x(&f); /* one sum beyond weight * 1e6 * 2^40: refused when complete */
	__int128 *s = calloc(f.n, sizeof(*s));
	memcpy(s, srv_agg_sums(f.sub), f.n * sizeof(*s));
	s[f.n - 1] = (__int128)5 * (__int128)(1e6 * 1099511627776.0) + 1;
	send_sums(&f, 5, 2, s);
	free(s);
	finish(&f, FL_ERANGE, "sum too large");
}

static void test_not_a_tier(void)
{
	struct fixture f;
	setup(&f, 3);
	FL_CHECK(srv_engine_set_tiers(NULL, "a,b.c") == FL_OK);
	FL_CHECK(srv_engine_set_tiers(NULL, "a,,b") == FL_EINVAL);
	FL_CHECK(srv_engine_set_tiers(NULL, "a,b c") == FL_EINVAL);
	f.x = fake_connect(f.net, "tier-x2", 0, 0.0f, ""); /* not in the list */
	f.x->hold = 1;
	fake_pump(f.net);
	send_sums(&f, srv_agg_total_weight(f.sub), srv_agg_count(f.sub), srv_agg_sums(f.sub));
	finish(&f, FL_EAUTH, "not a mid-tier");
}

static void test_not_selected(void)
{
	struct fixture f;
	setup_x(&f);
	struct fake_client *late = fake_connect(f.net, "late", 1, 0.0f, NULL);
	struct fake_client *x = f.x;
	f.x = late;
	send_header(&f, 1, 5, 2, (uint32_t)f.k);
	fake_pump(f.net);
	FL_CHECK(late->closed && late->error_code == (uint32_t)-FL_EINVAL);
	FL_CHECK(strstr(late->error_msg, "not selected") != NULL);
	f.x = x;
	fake_disconnect(f.net, x);
	FL_CHECK(fake_run(f.net, 100000) && f.net->nrep == 1 && f.net->rep[0].reported == 2);
	teardown(&f);
}

/* A PartialSum and an Update from one connection in one round: the second
 * header is refused whichever came first. */
static void test_partial_update_mix(void)
{
	struct fixture f;
	setup_x(&f);
	send_header(&f, 1, 5, 2, (uint32_t)f.k);
	fake_send_update_header(f.net, f.x, 1, 5, (uint32_t)f.k);
	finish(&f, FL_EINVAL, "Update after PartialSum");
	setup_x(&f);
	fake_send_update_header(f.net, f.x, 1, 5, (uint32_t)f.k);
	send_header(&f, 1, 5, 2, (uint32_t)f.k);
	finish(&f, FL_EINVAL, "PartialSum after Update");
}

/* A partial sum cut by the attempt's deadline is dropped with it (its
 * 16 bytes an element freed), and its later chunks are refused as late;
 * a partial sum of a closed connection is dropped too. */
static void test_stale_parts(void)
{
	struct fixture f;
	setup_report(&f, 3, 3, 0);
	f.x = fake_connect(f.net, "tier-x", 0, 0.0f, "");
	f.x->hold = 1;
	fake_pump(f.net);
	FL_CHECK(f.x->tasks == 1);
	const __int128 *sums = srv_agg_sums(f.sub);
	const struct fl_model_tensor *t0 = f.gt[0];
	send_header(&f, 1, srv_agg_total_weight(f.sub), srv_agg_count(f.sub), (uint32_t)f.k);
	send_chunk(&f, 1, t0->name, 0, sums + t0->offset, 1, 0, t0->numel == 1);
	fake_pump(f.net);
	FL_CHECK_MSG(!f.x->closed, "first chunk refused: %s", f.x->error_msg);
	FL_CHECK(srv_eng_relay_receiving(f.net->e, f.x->conn));
	fake_tick_at(f.net, f.net->now + 10001); /* the attempt's deadline */
	FL_CHECK(!f.x->closed && !srv_eng_relay_receiving(f.net->e, f.x->conn));
	send_chunk(&f, 1, t0->name, 1, sums + t0->offset + 1, 1, 0, t0->numel == 2);
	fake_pump(f.net);
	FL_CHECK_MSG(f.x->closed && f.x->error_code == (uint32_t)-FL_ERANGE,
		     "late chunk: closed %d, error %u (%s)", f.x->closed, f.x->error_code,
		     f.x->error_msg);
	teardown(&f);

	setup_x(&f);
	send_header(&f, 1, 5, 2, (uint32_t)f.k);
	fake_pump(f.net);
	uint64_t conn = f.x->conn;
	FL_CHECK(srv_eng_relay_receiving(f.net->e, conn));
	fake_disconnect(f.net, f.x);
	FL_CHECK(!srv_eng_relay_receiving(f.net->e, conn));
	FL_CHECK(fake_run(f.net, 100000) && f.net->nrep == 1 && f.net->rep[0].reported == 2);
	teardown(&f);
}

/* A mid-tier's EvalResult sums its subtree's examples: over 2^32 is taken
 * from a mid-tier (up to 2^62), not from a client. */
static void test_tier_eval_examples(void)
{
	struct fixture f;
	setup_report(&f, 3, 2, 1);
	f.x = fake_connect(f.net, "tier-x", (uint64_t)1 << 33, 0.5f, "");
	f.x->hold = 1;
	fake_pump(f.net);
	FL_CHECK(f.x->tasks == 1);
	send_sums(&f, srv_agg_total_weight(f.sub), srv_agg_count(f.sub), srv_agg_sums(f.sub));
	FL_CHECK(fake_run(f.net, 100000) && f.net->nrep == 1);
	FL_CHECK_MSG(!f.x->error_code, "mid-tier refused: %s", f.x->error_msg);
	FL_CHECK(f.x->evals == 1 && f.net->rep[0].eval_clients == 3);
	teardown(&f);
}

/* The margin before the parent's deadline counts the partial sum's upload
 * at the assumed rate (160 MB at 100 Mbit/s: 12.8 s). */
static void test_tier_margin(void)
{
	FL_CHECK(srv_relay_keep_ms(20000, 1200000, 12500000) == 2000);    /* a tenth */
	FL_CHECK(srv_relay_keep_ms(20000, 160000000, 12500000) == 12800); /* the upload */
	FL_CHECK(srv_relay_keep_ms(600, 0, 12500000) == 300);             /* at most half */
	FL_CHECK(srv_relay_keep_ms(5000, 160000000, 12500000) == 5000);   /* all there is */
	FL_CHECK(srv_relay_keep_ms(20000, 160000000, 0) == 2000);         /* not counted */
}

static int capture_send(void *ctx, struct fl_buf *frame)
{
	struct fl_buf **slot = ctx;
	if (*slot)
		fl_buf_unref(*slot);
	*slot = frame;
	return FL_OK;
}

/* The dtype a parent with --dtype f16 (required or not) gives the Hello a
 * mid-tier sends. */
static enum fl_wire_dtype tier_dtype(int required)
{
	struct srv_engine_config cfg;
	fake_engine_config(&cfg, 1, 3, 2);
	cfg.relay = 1;
	struct fake_net *tier = fake_net_own(9, &cfg);
	struct fl_buf *hello = NULL;
	struct srv_relay_io rio = {&hello, capture_send};
	FL_CHECK(srv_engine_relay_start(tier->e, "tier-x", &rio) == FL_OK);
	srv_engine_relay_on_connect(tier->e, 1000);
	FL_CHECK(hello != NULL);
	fake_engine_config(&cfg, 1, 3, 2);
	cfg.dtype = FL_WIRE_F16;
	cfg.dtype_required = required;
	struct fake_net *root = fake_net_own(9, &cfg);
	FL_CHECK(srv_engine_set_tiers(root->e, "tier-x") == FL_OK);
	struct fake_client *x = fake_connect_raw(root, "tier-x");
	enum fl_wire_dtype dt = (enum fl_wire_dtype) - 1;
	if (hello) {
		fake_send_raw(root, x, hello->data + FL_WIRE_FRAME_HEADER_BYTES,
			      hello->len - FL_WIRE_FRAME_HEADER_BYTES);
		fake_pump(root);
		FL_CHECK_MSG(x->welcomed && !x->closed, "the mid-tier's Hello refused: %s",
			     x->error_msg);
		dt = x->dtype;
		fl_buf_unref(hello);
	}
	fake_net_free(root);
	fake_net_free(tier);
	return dt;
}

/* A mid-tier asks its parent for f32 unless the parent requires a dtype:
 * the global its clients get is then encoded only by the mid-tier's own
 * --dtype, as under a flat coordinator. */
static void test_tier_asks_f32(void)
{
	FL_CHECK(tier_dtype(0) == FL_WIRE_F32);
	FL_CHECK(tier_dtype(1) == FL_WIRE_F16);
}

int main(void)
{
	FL_RUN(test_fold_is_flat);
	FL_RUN(test_partial_equals_flat);
	FL_RUN(test_empty_is_dropout);
	FL_RUN(test_bad_headers);
	FL_RUN(test_bad_chunks);
	FL_RUN(test_not_a_tier);
	FL_RUN(test_not_selected);
	FL_RUN(test_partial_update_mix);
	FL_RUN(test_stale_parts);
	FL_RUN(test_tier_asks_f32);
	FL_RUN(test_tier_eval_examples);
	FL_RUN(test_tier_margin);
	return fl_test_main_end();
}
