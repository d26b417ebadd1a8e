/* sim_testdata.c - see sim_testdata.h. */
#include "sim_testdata.h"

#include "errors.h"
#include "fsutil.h"
#include "modelutil.h"
#include "rng.h"
#include "testutil.h"

#include <stdio.h>

/* Class k: a bright bar at rows 2k..2k+5 plus noise (synthetic fallback). */
static void bar_sample(int i, struct fl_rng *rng, int32_t *label, uint8_t *px)
{
	(void)i;
	int k = (int)fl_rng_below(rng, 10);
	*label = (uint8_t)k;
	for (int p = 0; p < 784; p++) {
		int row = p / 28, v = (int)fl_rng_below(rng, 60);
		if (row >= 2 * k && row < 2 * k + 6)
			v += 150;
		px[p] = (uint8_t)v;
	}
}

static struct fl_dataset *synthetic(int n, uint64_t seed)
{
	return fl_test_dataset(n, 1, 28, 28, 10, seed, bar_sample);
}

struct srv_sim_data *small_data(int clients, double holdout)
{
	struct fl_partition_config pc;
	fl_partition_config_init(&pc);
	pc.kind = FL_PARTITION_IID;
	pc.clients = clients;
	pc.seed = 3;
	pc.holdout = holdout;
	struct srv_sim_data *d = NULL;
	int err;
	if (fl_path_exists(FL_DATASET_DEFAULT_DIR "/train-images-idx3-ubyte.gz")) {
		err = srv_sim_data_load(NULL, NULL, TRAIN_N, TEST_N, &pc, &d);
	} else {
		fprintf(stderr, "note: Fashion-MNIST not installed, using synthetic data\n");
		err = srv_sim_data_wrap(synthetic(TRAIN_N, 1), synthetic(TEST_N, 2), &pc, &d);
	}
	FL_CHECK_MSG(err == FL_OK, "data: %s", fl_error_msg());
	return d;
}

void small_config(struct srv_sim_config *c)
{
	srv_sim_config_default(c);
	c->arch = "2nn";
	c->param = FL_PEFT_PARAM_FEDPARA;
	c->train.rounds = 3;
	c->train.fraction = 0.5;
	c->train.epochs = 1;
	c->train.batch = 16;
	c->train.lr = 0.1f;
	c->train.seed = 7;
	c->threads = 2;
	c->eval_batch = 64;
}

struct srv_sim_result *sim_run(const struct srv_sim_config *c, const struct srv_sim_data *d)
{
	struct srv_sim_result *r = NULL;
	int err = srv_sim_run(c, d, &r);
	FL_CHECK_MSG(err == FL_OK, "run %s: %s", c->label, fl_error_msg());
	return err ? NULL : r;
}
