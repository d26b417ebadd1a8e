/* test_sim_fx.c - what fedloha-sim's MPI ranks exchange, without MPI: a
 * client end's effects encoded as one message decode to the same list
 * (an empty ERROR / NOTE / FAIL message stays an empty buffer, not a
 * missing one), and malformed messages are refused; the digest the ranks
 * compare (srv_sim_digest) is the same for equal configurations and data,
 * ignores the thread count, and changes with a configuration field, a
 * label, a sample or the partition. */
#include "errors.h"
#include "sim.h"
#include "sim_impl.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

static struct fl_buf *bytes(const char *s)
{
	struct fl_buf *b = fl_buf_new(strlen(s));
	memcpy(b->data, s, strlen(s));
	return b;
}

static void test_roundtrip(void)
{
	struct sim_fxlist fx = {0}, back = {0};
	sim_fx_add(&fx, SIM_FX_UP, bytes("channel bytes"));
	sim_fx_msg(&fx, SIM_FX_ERROR, "");
	sim_fx_msg(&fx, SIM_FX_NOTE, "diverged");
	sim_fx_add(&fx, SIM_FX_CLOSE_UP, NULL);
	sim_fx_msg(&fx, SIM_FX_FAIL, "");
	fx.job = 1;
	fx.finished = 1;
	size_t n = 0;
	uint8_t *m = sim_fx_encode(&fx, &n);
	FL_CHECK(m != NULL);
	FL_CHECK(sim_fx_decode(m, n, &back) == FL_OK);
	FL_CHECK(back.n == fx.n && back.job == 1 && back.finished == 1 && !back.ready);
	for (int i = 0; i < fx.n && i < back.n; i++) {
		FL_CHECK(back.v[i].kind == fx.v[i].kind);
		FL_CHECK_MSG(!fx.v[i].buf == !back.v[i].buf, "effect %d: buffer %p vs %p", i,
			     (void *)fx.v[i].buf, (void *)back.v[i].buf);
		if (fx.v[i].buf && back.v[i].buf)
			FL_CHECK(fx.v[i].buf->len == back.v[i].buf->len &&
				 memcmp(fx.v[i].buf->data, back.v[i].buf->data, fx.v[i].buf->len) ==
					 0);
	}
	/* the empty messages: a buffer of 0 bytes, as in one process */
	FL_CHECK(back.n > 4 && back.v[1].buf && back.v[1].buf->len == 0);
	FL_CHECK(back.n > 4 && back.v[4].buf && back.v[4].buf->len == 0);
	sim_fx_free(&back);

	/* malformed: short, truncated, trailing bytes, a bad kind, a length on
	 * a kind without a buffer */
	FL_CHECK(fl_test_fails_with(sim_fx_decode(m, 8, &back), FL_EFORMAT, "short"));
	sim_fx_free(&back);
	FL_CHECK(fl_test_fails_with(sim_fx_decode(m, n - 1, &back), FL_EFORMAT, NULL));
	sim_fx_free(&back);
	uint8_t *longer = malloc(n + 1);
	memcpy(longer, m, n);
	longer[n] = 0;
	FL_CHECK(fl_test_fails_with(sim_fx_decode(longer, n + 1, &back), FL_EFORMAT, "trailing"));
	sim_fx_free(&back);
	uint64_t kind = 99;
	memcpy(longer + 5 * sizeof(uint64_t), &kind, sizeof(kind));
	FL_CHECK(fl_test_fails_with(sim_fx_decode(longer, n, &back), FL_EFORMAT, "bad effect"));
	sim_fx_free(&back);
	free(longer);
	struct sim_fxlist one = {0};
	sim_fx_add(&one, SIM_FX_CLOSE_UP, NULL);
	size_t n1 = 0;
	uint8_t *m1 = sim_fx_encode(&one, &n1);
	uint8_t *m2 = malloc(n1 + 3);
	memcpy(m2, m1, n1);
	uint64_t len = 3;
	memcpy(m2 + 6 * sizeof(uint64_t), &len, sizeof(len));
	FL_CHECK(fl_test_fails_with(sim_fx_decode(m2, n1 + 3, &back), FL_EFORMAT, "bad effect"));
	sim_fx_free(&back);
	free(m1);
	free(m2);
	sim_fx_free(&one);
	free(m);
	sim_fx_free(&fx);
}

static struct srv_sim_data *make_data(int poke_label, double holdout)
{
	struct fl_dataset *tr = NULL, *te = NULL;
	FL_CHECK(fl_dataset_new(40, 1, 4, 4, 3, &tr) == FL_OK);
	FL_CHECK(fl_dataset_new(10, 1, 4, 4, 3, &te) == FL_OK);
	for (int i = 0; i < 40 * 16; i++)
		tr->pixels[i] = (uint8_t)(i * 7);
	for (int i = 0; i < 40; i++)
		tr->labels[i] = i % 3;
	if (poke_label)
		tr->labels[5] = (tr->labels[5] + 1) % 3;
	struct fl_partition_config pc;
	fl_partition_config_init(&pc);
	pc.clients = 4;
	pc.seed = 3;
	pc.holdout = holdout;
	struct srv_sim_data *d = NULL;
	FL_CHECK(srv_sim_data_wrap(tr, te, &pc, &d) == FL_OK);
	return d;
}

static void test_digest(void)
{
	struct srv_sim_config c[2];
	srv_sim_config_default(&c[0]);
	srv_sim_config_default(&c[1]);
	c[1].param = FL_PEFT_PARAM_DENSE;
	struct srv_sim_data *d = make_data(0, 0.2), *same = make_data(0, 0.2);
	struct srv_sim_data *label = make_data(1, 0.2), *part = make_data(0, 0.4);
	uint8_t a[SRV_SIM_DIGEST_BYTES], b[SRV_SIM_DIGEST_BYTES];
	FL_CHECK(srv_sim_digest(c, 2, d, a) == FL_OK);
	FL_CHECK(srv_sim_digest(c, 2, same, b) == FL_OK && memcmp(a, b, sizeof(a)) == 0);
	c[1].threads = 7; /* per rank: not shared */
	FL_CHECK(srv_sim_digest(c, 2, d, b) == FL_OK && memcmp(a, b, sizeof(a)) == 0);
	c[1].train.rounds++;
	FL_CHECK(srv_sim_digest(c, 2, d, b) == FL_OK && memcmp(a, b, sizeof(a)) != 0);
	c[1].train.rounds--;
	FL_CHECK(srv_sim_digest(c, 1, d, b) == FL_OK && memcmp(a, b, sizeof(a)) != 0);
	FL_CHECK(srv_sim_digest(c, 2, label, b) == FL_OK && memcmp(a, b, sizeof(a)) != 0);
	FL_CHECK(srv_sim_digest(c, 2, part, b) == FL_OK && memcmp(a, b, sizeof(a)) != 0);
	d->train->pixels[17] ^= 1;
	FL_CHECK(srv_sim_digest(c, 2, d, b) == FL_OK && memcmp(a, b, sizeof(a)) != 0);
	srv_sim_data_free(d);
	srv_sim_data_free(same);
	srv_sim_data_free(label);
	srv_sim_data_free(part);
}

int main(void)
{
	FL_RUN(test_roundtrip);
	FL_RUN(test_digest);
	return fl_test_main_end();
}
