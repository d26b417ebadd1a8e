/* sim_data.c - the simulator's data: a training and a test set loaded
 * (or taken over from memory), cut to their first samples when asked,
 * normalised with the training statistics and partitioned among the
 * clients. It does not touch models, sessions or the engine. */
#include "sim.h"

#include "errors.h"

#include <stdlib.h>

void srv_sim_data_free(struct srv_sim_data *d)
{
	if (!d)
		return;
	fl_dataset_free(d->train);
	fl_dataset_free(d->test);
	fl_partition_free(d->part);
	free(d);
}

int srv_sim_data_wrap(struct fl_dataset *train, struct fl_dataset *test,
		      const struct fl_partition_config *pc, struct srv_sim_data **out)
{
	*out = NULL;
	struct srv_sim_data *d = calloc(1, sizeof(*d));
	if (!d) {
		fl_dataset_free(train);
		fl_dataset_free(test);
		return fl_error_set(FL_ENOMEM, "sim: out of memory");
	}
	d->train = train;
	d->test = test;
	int err = fl_dataset_compute_norm(train);
	if (!err)
		err = fl_dataset_copy_norm(test, train);
	if (!err && (train->c != test->c || train->h != test->h || train->w != test->w))
		err = fl_error_set(FL_ESHAPE, "sim: training and test samples differ in shape");
	if (!err)
		err = fl_partition_make(train, pc, &d->part);
	if (err) {
		srv_sim_data_free(d);
		return err;
	}
	*out = d;
	return FL_OK;
}

static int keep_first(struct fl_dataset **ds, int n)
{
	if (n <= 0 || n >= (*ds)->n)
		return FL_OK;
	struct fl_dataset *s = NULL;
	int err = fl_dataset_subset(*ds, NULL, n, &s);
	if (err)
		return err;
	fl_dataset_free(*ds);
	*ds = s;
	return FL_OK;
}

int srv_sim_data_load(const char *name, const char *path, int limit, int test_limit,
		      const struct fl_partition_config *pc, struct srv_sim_data **out)
{
	*out = NULL;
	struct fl_dataset *train = NULL, *test = NULL;
	int err = fl_dataset_load(name, path, 1, &train);
	if (!err)
		err = fl_dataset_load(name, path, 0, &test);
	if (!err)
		err = keep_first(&train, limit);
	if (!err)
		err = keep_first(&test, test_limit);
	if (err) {
		fl_dataset_free(train);
		fl_dataset_free(test);
		return err;
	}
	return srv_sim_data_wrap(train, test, pc, out);
}
