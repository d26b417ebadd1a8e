/* test_sim_eval.c - what the simulator measures beyond the central test
 * set: with federated evaluation every row carries both the central and the
 * clients' held-out accuracy, the headline is the latter, and evaluating
 * does not disturb training (the central figures are bit-identical to a
 * run without it); the local-only baseline sends nothing, is independent
 * of the thread count, and at lr 0 agrees with an evaluation of the
 * initial model done by hand and with a dense FedAvg round at lr 0 (also
 * the held-out figures the updates carry after local training); the
 * server optimiser's settings reach the engine (FedAdam at server lr 0
 * never moves the global model; tau 0 is refused); bad local-only
 * configurations are refused with a message. */
#include "blas.h"
#include "errors.h"
#include "model.h"
#include "sim.h"
#include "sim_impl.h"
#include "sim_testdata.h"
#include "testutil.h"
#include "train.h"

#include <stdlib.h>
#include <string.h>

static void test_fed_eval_rows(void)
{
	struct srv_sim_data *d = small_data(4, 0.25);
	struct srv_sim_config c;
	small_config(&c);
	c.fed_eval = 1;
	struct srv_sim_result *fed = sim_run(&c, d);
	c.fed_eval = 0;
	struct srv_sim_result *plain = sim_run(&c, d);
	if (fed && plain) {
		FL_CHECK(fed->fed_headline && !plain->fed_headline);
		FL_CHECK(fed->nrows == 3 && plain->nrows == 3);
		for (size_t i = 0; i < fed->nrows && i < plain->nrows; i++) {
			const struct srv_sim_row *f = &fed->rows[i], *p = &plain->rows[i];
			FL_CHECK(f->has_central && f->has_fed);
			FL_CHECK(f->accuracy == f->fed_accuracy && f->loss == f->fed_loss);
			FL_CHECK(f->fed_accuracy > 0 && f->fed_accuracy <= 1);
			FL_CHECK(p->has_central && !p->has_fed);
			FL_CHECK(p->accuracy == p->central_accuracy);
			/* the evaluation tasks do not change what is trained */
			FL_CHECK_MSG(f->central_accuracy == p->central_accuracy &&
					     f->central_loss == p->central_loss,
				     "round %zu: %.6f vs %.6f", i + 1, f->central_accuracy,
				     p->central_accuracy);
			/* every update carries the client's held-out figures after training */
			FL_CHECK(f->has_post && p->has_post &&
				 f->post_accuracy == p->post_accuracy);
			FL_CHECK(f->post_accuracy > 0 && f->post_accuracy <= 1);
			/* but they cost a download of the global tensors each */
			FL_CHECK(f->bytes_down > p->bytes_down && f->bytes_up > p->bytes_up);
		}
		FL_CHECK(fed->n_final_params == plain->n_final_params &&
			 !memcmp(fed->final_params, plain->final_params,
				 plain->n_final_params * sizeof(float)));
	}
	srv_sim_result_free(fed);
	srv_sim_result_free(plain);
	srv_sim_data_free(d);
}

/* The initial model (seed, dense) evaluated by hand on every client's
 * held-out samples with batch B: the weighted mean accuracy and loss. */
static void by_hand(const struct srv_sim_data *d, uint64_t seed, int batch, double *acc,
		    double *loss)
{
	const struct fl_dataset *t = d->train;
	struct fl_model *m = NULL;
	struct fl_trainer *tr = NULL;
	struct fl_optim_config oc;
	fl_optim_config_default(&oc, FL_OPTIM_SGD);
	oc.lr = 0;
	FL_CHECK(fl_model_new("2nn", t->c, t->h, t->w, t->classes, NULL, seed, batch, &m) == FL_OK);
	FL_CHECK(m && fl_trainer_new(m, &oc, batch, &tr) == FL_OK);
	int threads = fl_blas_get_threads();
	fl_blas_set_threads(1); /* as in the simulator's workers */
	double a = 0, l = 0;
	long n = 0;
	for (int i = 0; tr && i < d->part->clients; i++) {
		const struct fl_partition_client *pc = &d->part->client[i];
		struct fl_train_stats st;
		FL_CHECK(fl_trainer_evaluate(tr, t, pc->holdout, pc->n_holdout, &st) == FL_OK);
		a += st.accuracy * st.samples;
		l += st.loss * st.samples;
		n += st.samples;
	}
	fl_blas_set_threads(threads);
	*acc = n ? a / n : -1;
	*loss = n ? l / n : -1;
	fl_trainer_free(tr);
	fl_model_free(m);
}

static void test_local_lr0(void)
{
	struct srv_sim_data *d = small_data(4, 0.25);
	struct srv_sim_config c;
	small_config(&c);
	c.param = FL_PEFT_PARAM_DENSE;
	c.train.rounds = 1;
	c.train.lr = 0;
	c.train.fraction = 1;
	c.eval_batch = c.train.batch; /* the same batches as by hand: identical sums */
	double acc = 0, loss = 0;
	by_hand(d, c.train.seed, c.train.batch, &acc, &loss);
	c.local_only = 1;
	struct srv_sim_result *local = sim_run(&c, d);
	c.local_only = 0;
	c.fed_eval = 1;
	struct srv_sim_result *fed = sim_run(&c, d);
	if (local && fed) {
		const struct srv_sim_row *lr = &local->rows[0], *fr = &fed->rows[0];
		FL_CHECK_MSG(lr->accuracy == acc && lr->loss == loss,
			     "local %.17g/%.17g, by hand %.17g/%.17g", lr->accuracy, lr->loss, acc,
			     loss);
		FL_CHECK(lr->has_fed && !lr->has_central && lr->fed_accuracy == acc);
		/* FedAvg at lr 0: every client returns the initial model */
		FL_CHECK_NEAR(fr->fed_accuracy, acc, 0, 1e-12);
		FL_CHECK_NEAR(fr->fed_loss, loss, 0, 1e-4);
		FL_CHECK(fr->reported == 4);
		/* and after a local epoch at lr 0 the clients still hold it */
		FL_CHECK(fr->has_post && lr->has_post);
		FL_CHECK_NEAR(fr->post_accuracy, acc, 0, 1e-12);
		FL_CHECK(lr->post_accuracy == acc);
	}
	srv_sim_result_free(local);
	srv_sim_result_free(fed);
	srv_sim_data_free(d);
}

static void test_local_threads(void)
{
	struct srv_sim_data *d = small_data(4, 0.25);
	struct srv_sim_config c;
	small_config(&c);
	c.local_only = 1;
	c.train.rounds = 2;
	c.train.lr_decay = 0.5f;
	c.threads = 1;
	struct srv_sim_result *a = sim_run(&c, d);
	c.threads = 2;
	struct srv_sim_result *b = sim_run(&c, d);
	if (a && b) {
		FL_CHECK(!strcmp(a->label, "local-fedpara") && a->local_only && a->fed_headline);
		FL_CHECK(a->nrows == 2 && b->nrows == 2);
		FL_CHECK(a->global_floats == 0 && a->engine_up == 0 && a->engine_down == 0 &&
			 a->chan_up == 0 && a->final_params == NULL);
		for (size_t i = 0; i < a->nrows && i < b->nrows; i++) {
			const struct srv_sim_row *x = &a->rows[i], *y = &b->rows[i];
			FL_CHECK(x->round == i + 1 && x->selected == 4 && x->reported == 4);
			FL_CHECK(x->total_up == 0 && x->total_down == 0 && x->bytes_up == 0);
			FL_CHECK(x->accuracy > 0 && x->accuracy <= 1);
			FL_CHECK(x->accuracy == y->accuracy && x->loss == y->loss &&
				 x->train_loss == y->train_loss);
		}
		/* training happened: the loss on the clients' own samples went down */
		FL_CHECK(a->rows[1].train_loss < a->rows[0].train_loss);
	}
	srv_sim_result_free(a);
	srv_sim_result_free(b);
	srv_sim_data_free(d);
}

static void test_local_refused(void)
{
	struct srv_sim_data *d = small_data(4, 0.25), *d0 = small_data(4, 0.0);
	struct srv_sim_config c;
	struct srv_sim_result *r = NULL;
	small_config(&c);
	c.local_only = 1;
	c.param = FL_PEFT_PARAM_PFEDPARA;
	FL_CHECK(srv_sim_run(&c, d, &r) == FL_EINVAL && !r);
	FL_CHECK(strstr(fl_error_msg(), "local-only") != NULL);
	c.param = FL_PEFT_PARAM_DENSE;
	FL_CHECK(srv_sim_run(&c, d0, &r) == FL_EINVAL && !r);
	FL_CHECK(strstr(fl_error_msg(), "held-out") != NULL);
	c.model_dir = "/nonexistent/model";
	FL_CHECK(srv_sim_run(&c, d, &r) == FL_EINVAL && !r);
	FL_CHECK(strstr(fl_error_msg(), "no global model") != NULL);
	srv_sim_data_free(d);
	srv_sim_data_free(d0);
}

static void test_server_optim(void)
{
	struct srv_sim_data *d = small_data(4, 0.0);
	struct srv_sim_config c;
	small_config(&c);
	c.train.rounds = 2;
	c.train.strategy = SRV_OPTIM_FEDADAM;
	c.train.server_eta = 0;
	struct srv_sim_result *r = sim_run(&c, d);
	char *json = NULL;
	struct fl_peft_config *peft = NULL;
	struct fl_model *m = NULL;
	const struct fl_dataset *t = d->train;
	FL_CHECK(sim_make_config(&c, &json, &peft) == FL_OK);
	FL_CHECK(fl_model_new("2nn", t->c, t->h, t->w, t->classes, peft, c.train.seed, 1, &m) ==
		 FL_OK);
	if (r && m) {
		FL_CHECK(r->n_final_params == fl_model_param_floats(m));
		FL_CHECK_MSG(!memcmp(r->final_params, fl_model_params(m),
				     r->n_final_params * sizeof(float)),
			     "fedadam at server lr 0 moved the global model");
	}
	srv_sim_result_free(r);
	r = NULL;
	/* the default FedAdam does move it */
	c.train.server_eta = -1;
	r = sim_run(&c, d);
	if (r && m)
		FL_CHECK(memcmp(r->final_params, fl_model_params(m),
				r->n_final_params * sizeof(float)));
	srv_sim_result_free(r);
	r = NULL;
	c.train.server_tau = 0; /* adaptive methods need tau > 0 */
	FL_CHECK(srv_sim_run(&c, d, &r) == FL_EINVAL && !r);
	FL_CHECK_MSG(strstr(fl_error_msg(), "tau") != NULL, "%s", fl_error_msg());
	fl_model_free(m);
	fl_peft_config_free(peft);
	free(json);
	srv_sim_data_free(d);
}

int main(void)
{
	FL_RUN(test_fed_eval_rows);
	FL_RUN(test_local_lr0);
	FL_RUN(test_local_threads);
	FL_RUN(test_local_refused);
	FL_RUN(test_server_optim);
	return fl_test_main_end();
}
