/* test_sim_desc.c - the simulator with a model description that is not a
 * built-in network (srv_sim_config.desc: a residual block, gelu, avgpool2d):
 * two rounds, dense and fedpara, through the real engine and sessions (the
 * Welcome carries the description, and the clients build it); local-only
 * training builds it too; a description the data does not fit is
 * refused. */
#include "errors.h"
#include "model.h"
#include "model_desc.h"
#include "sim_testdata.h"
#include "testutil.h"

#include <math.h>
#include <string.h>

static const char *DESC =
	"{\"format\": \"fedloha-model/1\", \"name\": \"resgelu\", \"input\": {\"shape\": [1, 28, "
	"28]}, \"classes\": 10, \"modules\": [{\"op\": \"conv2d\", \"name\": \"c1\", \"in\": 1, "
	"\"out\": 4, \"kernel\": 5, \"padding\": 2}, {\"op\": \"gelu\"}, {\"op\": \"residual\", "
	"\"modules\": [{\"op\": \"conv2d\", \"name\": \"res.c2\", \"in\": 4, \"out\": 4, "
	"\"kernel\": 3, \"padding\": 1}, {\"op\": \"relu\"}]}, {\"op\": \"avgpool2d\", "
	"\"kernel\": 4}, {\"op\": \"flatten\"}, {\"op\": \"linear\", \"name\": \"fc1\", \"in\": "
	"196, \"out\": 32}, {\"op\": \"gelu\"}, {\"op\": \"linear\", \"name\": \"fc2\", \"in\": 32, "
	"\"out\": 10}]}";

/* Two rounds of param; the floats that travel (0 when the run failed). */
static size_t run_param(const struct fl_model_desc *desc, const struct srv_sim_data *d,
			enum fl_peft_param param, int local_only)
{
	struct srv_sim_config c;
	small_config(&c);
	c.desc = desc;
	c.param = param;
	c.gamma = 0.5;
	c.train.rounds = 2;
	c.local_only = local_only;
	struct srv_sim_result *r = sim_run(&c, d);
	if (!r)
		return 0;
	FL_CHECK(r->nrows == 2);
	for (size_t i = 0; i < r->nrows; i++)
		FL_CHECK_MSG(r->rows[i].accuracy > 0.0 && r->rows[i].accuracy <= 1.0 &&
				     isfinite(r->rows[i].loss),
			     "%s round %zu: accuracy %g loss %g", r->label, i + 1,
			     r->rows[i].accuracy, r->rows[i].loss);
	FL_CHECK(!strcmp(srv_sim_config_model(&c), "resgelu"));
	size_t global = r->global_floats;
	srv_sim_result_free(r);
	return global;
}

static void test_desc_runs(void)
{
	struct fl_model_desc *desc = NULL;
	FL_CHECK(fl_model_desc_parse(DESC, strlen(DESC), "test", &desc) == FL_OK);
	struct srv_sim_data *d = small_data(4, 0.25);
	size_t dense = run_param(desc, d, FL_PEFT_PARAM_DENSE, 0);
	size_t fedpara = run_param(desc, d, FL_PEFT_PARAM_FEDPARA, 0);
	FL_CHECK_MSG(dense && fedpara && fedpara != dense, "dense %zu, fedpara %zu floats", dense,
		     fedpara);
	run_param(desc, d, FL_PEFT_PARAM_DENSE, 1);
	srv_sim_data_free(d);
	fl_model_desc_free(desc);
}

static void test_desc_misfit(void)
{
	struct fl_model_desc *desc = NULL;
	struct fl_desc_shape in = {3, {1, 8, 8}, 0};
	FL_CHECK(fl_model_desc_builtin("2nn", &in, 10, &desc) == FL_OK);
	struct srv_sim_data *d = small_data(4, 0.25);
	struct srv_sim_config c;
	small_config(&c);
	c.desc = desc;
	c.train.rounds = 1;
	struct srv_sim_result *r = NULL;
	int err = srv_sim_run(&c, d, &r);
	FL_CHECK_MSG(err == FL_ESHAPE && !r && strstr(fl_error_msg(), "model input (1,8,8)"),
		     "%d %s", err, fl_error_msg());
	srv_sim_data_free(d);
	fl_model_desc_free(desc);
}

int main(void)
{
	FL_RUN(test_desc_runs);
	FL_RUN(test_desc_misfit);
	return fl_test_main_end();
}
