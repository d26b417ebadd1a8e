/* sim_args.h - fedloha-sim's command line: its options, --help, the flag
 * parser and the configurations --compare / --param describe. Used by
 * sim_main.c only; messages go to stderr with the program's name. */
#ifndef SRV_SIM_ARGS_H
#define SRV_SIM_ARGS_H

#include "sim.h"

#include <stdio.h>

#define SRV_SIM_PROG "fedloha-sim"
#define SRV_SIM_CONFIGS_MAX 16

struct srv_sim_opts {
	struct srv_sim_config base;
	const char *compare, *param, *partition, *data, *data_path, *out, *strategy;
	const char *model_file; /* --model-file: loaded into base.desc by the caller */
	int clients, limit, test_limit, quiet, save_model, holdout_set;
	double target, holdout;
};

/* The built-in default (what `make run` shows). */
void srv_sim_opts_init(struct srv_sim_opts *o);
void srv_sim_opts_usage(FILE *f);
/* FL_OK, 2 for --help, FL_EINVAL for a bad value (message printed). */
int srv_sim_opts_parse(int argc, char **argv, struct srv_sim_opts *o);
/* --compare / --param into configurations with unique labels (at most
 * SRV_SIM_CONFIGS_MAX); FL_EINVAL with a message printed when the list
 * is bad. */
int srv_sim_opts_configs(const struct srv_sim_opts *o, struct srv_sim_config *cfgs, int *n);

#endif
