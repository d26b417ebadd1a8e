/* central_eval.c - central evaluation of the global model on a test slice,
 * off the loop thread (central_eval.h). The worker only touches the twin
 * model, its trainer and the test set; the queue is touched on the loop
 * thread only. */
#include "central_eval.h"

#include "dataset.h"
#include "errors.h"
#include "model_data.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct job {
	uv_work_t req;
	struct srv_central_eval *ce;
	uint64_t round;
	float *params;
	int err;
	char msg[FL_ERROR_MSG_MAX];
	struct fl_train_stats st;
	struct job *next;
};

struct srv_central_eval {
	uv_loop_t *loop;
	struct fl_dataset *test;
	struct fl_model *model;
	struct fl_trainer *tr;
	srv_central_eval_cb cb;
	void *ctx;
	struct job *queue, *running;
};

int srv_central_eval_new(uv_loop_t *loop, const char *data, const char *path, int limit,
			 const struct fl_model *like, const struct fl_peft_config *pc,
			 srv_central_eval_cb cb, void *ctx, struct srv_central_eval **out)
{
	*out = NULL;
	struct srv_central_eval *ce = calloc(1, sizeof(*ce));
	if (!ce)
		return fl_error_set(FL_ENOMEM, "central evaluation: out of memory");
	ce->loop = loop;
	ce->cb = cb;
	ce->ctx = ctx;
	struct fl_dataset *train = NULL;
	int err = fl_dataset_load(data, path, 1, &train);
	if (!err)
		err = fl_dataset_compute_norm(train);
	if (!err)
		err = fl_dataset_load(data, path, 0, &ce->test);
	if (!err)
		err = fl_dataset_copy_norm(ce->test, train);
	fl_dataset_free(train);
	if (!err && limit > 0 && limit < ce->test->n) {
		struct fl_dataset *sub;
		if (!(err = fl_dataset_subset(ce->test, NULL, limit, &sub))) {
			fl_dataset_free(ce->test);
			ce->test = sub;
		}
	}
	if (!err && (err = fl_model_check_data(like, ce->test))) {
		char msg[FL_ERROR_MSG_MAX];
		snprintf(msg, sizeof(msg), "%s", fl_error_msg());
		err = fl_error_set(err, "evaluation data: %s", msg);
	}
	if (!err)
		err = fl_model_new_desc(fl_model_description(like), pc, 0, 256, &ce->model);
	if (!err && fl_model_param_floats(ce->model) != fl_model_param_floats(like))
		err = fl_error_set(FL_ESHAPE, "evaluation model differs from the global model");
	struct fl_optim_config oc;
	fl_optim_config_default(&oc, FL_OPTIM_SGD);
	if (!err)
		err = fl_trainer_new(ce->model, &oc, 256, &ce->tr);
	if (err) {
		srv_central_eval_free(ce);
		return err;
	}
	*out = ce;
	return FL_OK;
}

static void work(uv_work_t *req)
{
	struct job *j = req->data;
	struct srv_central_eval *ce = j->ce;
	memcpy(fl_model_params(ce->model), j->params,
	       sizeof(float) * fl_model_param_floats(ce->model));
	fl_model_params_changed(ce->model);
	j->err = fl_trainer_evaluate(ce->tr, ce->test, NULL, ce->test->n, &j->st);
	if (j->err)
		snprintf(j->msg, sizeof(j->msg), "%s", fl_error_msg());
}

static void next(struct srv_central_eval *ce);

static void done(uv_work_t *req, int status)
{
	struct job *j = req->data;
	struct srv_central_eval *ce = j->ce;
	ce->running = NULL;
	if (status == UV_ECANCELED && !j->err) {
		j->err = FL_EIO;
		snprintf(j->msg, sizeof(j->msg), "cancelled");
	}
	ce->cb(ce->ctx, j->round, j->err, j->msg, &j->st);
	free(j->params);
	free(j);
	next(ce);
}

static void next(struct srv_central_eval *ce)
{
	if (ce->running || !ce->queue)
		return;
	struct job *j = ce->queue;
	ce->queue = j->next;
	ce->running = j;
	j->req.data = j;
	if (uv_queue_work(ce->loop, &j->req, work, done) != 0) {
		ce->running = NULL;
		ce->cb(ce->ctx, j->round, FL_EIO, "cannot queue the evaluation", &j->st);
		free(j->params);
		free(j);
	}
}

int srv_central_eval_submit(struct srv_central_eval *ce, struct fl_model *m, uint64_t round)
{
	size_t n = fl_model_param_floats(m);
	struct job *j = calloc(1, sizeof(*j));
	if (!j || !(j->params = malloc(n * sizeof(float)))) {
		free(j);
		return fl_error_set(FL_ENOMEM, "central evaluation: out of memory");
	}
	memcpy(j->params, fl_model_params(m), n * sizeof(float));
	j->ce = ce;
	j->round = round;
	struct job **p = &ce->queue;
	while (*p)
		p = &(*p)->next;
	*p = j;
	next(ce);
	return FL_OK;
}

void srv_central_eval_free(struct srv_central_eval *ce)
{
	if (!ce)
		return;
	assert(!ce->running && "srv_central_eval_free while an evaluation runs");
	while (ce->queue) {
		struct job *j = ce->queue;
		ce->queue = j->next;
		free(j->params);
		free(j);
	}
	fl_trainer_free(ce->tr);
	fl_model_free(ce->model);
	fl_dataset_free(ce->test);
	free(ce);
}
