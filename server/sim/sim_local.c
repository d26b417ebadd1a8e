/* sim_local.c - the local-only baseline of fedloha-sim: every client trains
 * a model of its own on its own training samples and never communicates.
 * It is the reference the personalised methods are measured against (does
 * federating help a client at all?), so it uses the same pieces as a
 * federated client: the same initial model (the seeded global model of
 * round 1), the same local training per round (a fresh SGD trainer with the
 * round's decayed lr, `epochs` epochs over the client's samples, shuffled
 * by a seeded stream per client and round) and the same measure (accuracy
 * on the client's held-out samples, averaged over clients weighted by
 * their held-out counts). Every client trains every round. Clients run in
 * parallel on the simulator's worker pool with single-threaded BLAS; the
 * round's figures are summed in client order, so a run is a function of
 * its seed whatever the thread count. */
#include "sim_impl.h"

#include "blas.h"
#include "errors.h"
#include "optim.h"
#include "rng.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOCAL_SEED_KEY 0x4c4f43414c4f4e4cull /* "LOCALONL" */

struct local_client {
	const struct srv_sim_config *cfg;
	const struct fl_dataset *data;
	const struct fl_partition_client *pc;
	int index;
	struct fl_model *model;
	uint64_t round; /* the round being trained */
	/* the round's results */
	int err;
	char errmsg[FL_ERROR_MSG_MAX];
	double train_loss, train_acc, eval_loss, eval_acc;
	long train_n, eval_n;
	struct sim_task task;
};

static int local_round(struct local_client *c)
{
	const struct srv_sim_config *cfg = c->cfg;
	struct fl_optim_config oc;
	fl_optim_config_default(&oc, FL_OPTIM_SGD);
	oc.lr = (float)fl_optim_round_lr(cfg->train.lr, cfg->train.lr_decay, c->round - 1);
	oc.momentum = cfg->train.momentum;
	oc.weight_decay = cfg->train.weight_decay;
	struct fl_trainer *tr = NULL;
	int err = fl_trainer_new(c->model, &oc, cfg->train.batch, &tr);
	struct fl_rng rng;
	fl_rng_seed_stream(&rng,
			   (cfg->train.seed ^ LOCAL_SEED_KEY) + (uint64_t)c->index * FL_RNG_GOLDEN,
			   c->round);
	struct fl_train_stats st = {0};
	for (int e = 0; e < cfg->train.epochs && !err; e++)
		err = fl_trainer_epoch(tr, c->data, c->pc->train, c->pc->n_train, &rng, &st);
	if (!err) {
		c->train_loss = st.loss;
		c->train_acc = st.accuracy;
		c->train_n = st.samples;
		err = fl_trainer_evaluate(tr, c->data, c->pc->holdout, c->pc->n_holdout, &st);
	}
	if (!err) {
		c->eval_loss = st.loss;
		c->eval_acc = st.accuracy;
		c->eval_n = st.samples;
	}
	fl_trainer_free(tr);
	fl_model_buffers(c->model, 0); /* parameters only until the next round */
	return err;
}

static void local_task_run(struct sim_task *t)
{
	struct local_client *c = (struct local_client *)((char *)t -
							 offsetof(struct local_client, task));
	fl_error_clear();
	c->err = local_round(c);
	if (c->err)
		snprintf(c->errmsg, sizeof(c->errmsg), "%s", fl_error_msg());
}

/* Runs round r on every client and fills row. */
static int run_round(struct sim_pool *pool, struct local_client *cl, int n, uint64_t r,
		     struct srv_sim_row *row)
{
	for (int i = 0; i < n; i++) {
		cl[i].round = r;
		cl[i].task.run = local_task_run;
		cl[i].task.ordered = 0;
		sim_pool_submit(pool, &cl[i].task);
	}
	while (sim_pool_outstanding(pool) > 0)
		(void)sim_pool_take_done(pool, 1);
	double tl = 0, ta = 0, el = 0, ea = 0;
	long tn = 0, en = 0;
	for (int i = 0; i < n; i++) { /* in client order: the sums do not depend on timing */
		const struct local_client *c = &cl[i];
		if (c->err)
			return fl_error_set(FL_EINVAL, "local-only client %d, round %llu: %s", i,
					    (unsigned long long)r, c->errmsg);
		tl += c->train_loss * c->train_n;
		ta += c->train_acc * c->train_n;
		tn += c->train_n;
		el += c->eval_loss * c->eval_n;
		ea += c->eval_acc * c->eval_n;
		en += c->eval_n;
	}
	row->round = r;
	row->train_loss = tn ? tl / (double)tn : 0.0;
	row->train_accuracy = tn ? ta / (double)tn : 0.0;
	row->has_fed = en > 0;
	row->fed_loss = row->loss = en ? el / (double)en : 0.0;
	row->fed_accuracy = row->accuracy = en ? ea / (double)en : 0.0;
	row->has_post = row->has_fed; /* evaluated right after training */
	row->post_accuracy = row->fed_accuracy;
	row->post_loss = row->fed_loss;
	row->selected = row->reported = n;
	row->attempts = 1;
	return FL_OK;
}

int sim_local_run(const struct srv_sim_config *cfg, const struct srv_sim_data *d,
		  struct srv_sim_result **out)
{
	*out = NULL;
	if (cfg->model_dir)
		return fl_error_set(FL_EINVAL, "sim: a local-only run has no global model to save");
	int n = d->part->clients;
	struct srv_sim_result *res = calloc(1, sizeof(*res));
	struct local_client *cl = calloc((size_t)n, sizeof(*cl));
	char *json = NULL;
	struct fl_peft_config *peft = NULL;
	struct sim_pool pool;
	int pool_up = 0;
	int err = res && cl ? FL_OK : fl_error_set(FL_ENOMEM, "sim: out of memory");
	if (!err)
		res->rows = calloc(cfg->train.rounds, sizeof(*res->rows));
	if (!err && !res->rows)
		err = fl_error_set(FL_ENOMEM, "sim: out of memory");
	if (!err)
		err = sim_make_config(cfg, &json, &peft);
	const struct fl_dataset *t = d->train;
	for (int i = 0; !err && i < n; i++) {
		cl[i] = (struct local_client){
			.cfg = cfg, .data = t, .pc = &d->part->client[i], .index = i};
		/* the seeded model: the federation's global model of round 1 */
		err = sim_model_new(cfg, t, peft, cfg->train.seed, cfg->train.batch, &cl[i].model);
		if (!err && i == 0)
			err = sim_check_modules_to_save(cfg, cl[0].model);
		if (!err) /* parameters only until its first round */
			fl_model_buffers(cl[i].model, 0);
	}
	int blas_threads = fl_blas_get_threads();
	fl_blas_set_threads(1);
	double t0 = sim_wall_seconds();
	if (!err && !(err = sim_pool_init(&pool, cfg->threads)))
		pool_up = 1;
	if (!err) {
		srv_sim_config_label(cfg, res->label, sizeof(res->label));
		res->local_only = 1;
		res->fed_headline = 1;
		res->clients = res->selected_per_round = n;
		res->param_floats = fl_model_param_floats(cl[0].model);
	}
	for (uint64_t r = 1; !err && r <= cfg->train.rounds; r++) {
		struct srv_sim_row *row = &res->rows[r - 1];
		err = run_round(&pool, cl, n, r, row);
		if (err)
			break;
		row->seconds = sim_wall_seconds() - t0;
		res->nrows = (size_t)r;
		if (cfg->cb.on_row)
			cfg->cb.on_row(cfg->cb.ctx, cfg, row);
	}
	if (pool_up)
		sim_pool_destroy(&pool);
	fl_blas_set_threads(blas_threads);
	for (int i = 0; cl && i < n; i++)
		fl_model_free(cl[i].model);
	free(cl);
	fl_peft_config_free(peft);
	free(json);
	if (err) {
		srv_sim_result_free(res);
		return err;
	}
	res->seconds = sim_wall_seconds() - t0;
	*out = res;
	return FL_OK;
}
