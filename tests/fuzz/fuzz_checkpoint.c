/* fuzz_checkpoint.c - fuzz target for the coordinator's checkpoint reader:
 * the input is written to a temporary file and loaded with
 * srv_checkpoint_load into a fixed small model ("mlp" 1x2x2, 3 classes,
 * seed 1) and a FedAdam optimiser state. Invariants checked with abort(): a
 * refusal has a one-line message and leaves the parameters and the
 * optimiser state bit for bit as they were; an accepted file leaves finite
 * parameters and a finite state (the target then puts the original state
 * back for the next input).
 *
 * Built two ways from this one file: with libFuzzer (clang, -DFL_FUZZ=ON)
 * and, with FL_FUZZ_REPLAY defined, as a plain program that runs every file
 * of the given folders or paths through the target (a ctest replaying
 * tests/fuzz/corpus/checkpoint). Its only I/O is the temporary folder
 * (fuzz_tmp.h).
 */
#include "checkpoint.h"
#include "errors.h"
#include "fuzz_tmp.h"
#include "model.h"
#include "server_optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int last_err;
static struct fl_model *model;
static struct srv_optim opt;
static float *saved_p, *saved_m, *saved_v;
static size_t np, nopt;

static void setup(void)
{
	struct srv_optim_config c;
	if (fl_model_new("mlp", 1, 2, 2, 3, NULL, 1, 1, &model) != FL_OK)
		abort();
	nopt = fl_model_count_floats(model, FL_TENSOR_GLOBAL);
	np = fl_model_param_floats(model);
	srv_optim_config_default(&c, SRV_OPTIM_FEDADAM);
	if (srv_optim_init(&opt, &c, nopt) != FL_OK)
		abort();
	saved_p = malloc(np * sizeof(float));
	saved_m = malloc(nopt * sizeof(float));
	saved_v = malloc(nopt * sizeof(float));
	if (!saved_p || !saved_m || !saved_v)
		abort();
	memcpy(saved_p, fl_model_params(model), np * sizeof(float));
	memcpy(saved_m, opt.m, nopt * sizeof(float));
	memcpy(saved_v, opt.v, nopt * sizeof(float));
}

static int same_state(void)
{
	return memcmp(saved_p, fl_model_params(model), np * sizeof(float)) == 0 &&
	       memcmp(saved_m, opt.m, nopt * sizeof(float)) == 0 &&
	       memcmp(saved_v, opt.v, nopt * sizeof(float)) == 0 && opt.step == 0;
}

static int finite_all(const float *x, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isfinite(x[i]))
			return 0;
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!model)
		setup();
	const char *path = fl_fuzz_tmp_write("ckpt.safetensors", data, size, 0600);
	struct srv_checkpoint_meta meta;
	last_err = srv_checkpoint_load(path, model, &opt, NULL, &meta);
	if (last_err) {
		if (!same_state() || strchr(fl_error_msg(), '\n') || !fl_error_msg()[0])
			abort();
		return 0;
	}
	if (!finite_all(fl_model_params(model), np) || !finite_all(opt.m, nopt) ||
	    !finite_all(opt.v, nopt))
		abort();
	memcpy(fl_model_params(model), saved_p, np * sizeof(float));
	fl_model_params_changed(model);
	if (srv_optim_restore(&opt, saved_m, saved_v, nopt, 0) != FL_OK)
		abort();
	return 0;
}

#ifdef FL_FUZZ_REPLAY
#include "replay.h"

static void report(const char *path, size_t n)
{
	printf("%-60s %6zu bytes, %s\n", path, n, last_err ? fl_strerror(last_err) : "ok");
}

int main(int argc, char **argv)
{
	int rc = fl_fuzz_replay_main(argc, argv, report);
	srv_optim_free(&opt);
	fl_model_free(model);
	free(saved_p);
	free(saved_m);
	free(saved_v);
	return rc;
}
#endif
