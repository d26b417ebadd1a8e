/* engine_opts.c - the training options shared by fedloha-server and
 * fedloha-sim (engine_opts.h): their flag table and their mapping onto
 * srv_engine_config. No I/O; errors go through fl_error_set. */
#include "engine_opts.h"

#include "cliopt.h"
#include "errors.h"

#include <stdio.h>

#include <stddef.h>
#include <string.h>

/* The flags both commands accept with the same range. */
static const struct train_flag {
	const char *name;
	size_t off; /* of a float, or of an int when is_int */
	int is_int;
	double lo, hi;
} train_flags[] = {
	{"lr", offsetof(struct srv_train_opts, lr), 0, 0, 100},
	{"lr-decay", offsetof(struct srv_train_opts, lr_decay), 0, 1e-6, 1},
	{"momentum", offsetof(struct srv_train_opts, momentum), 0, 0, 0.9999},
	{"weight-decay", offsetof(struct srv_train_opts, weight_decay), 0, 0, 1},
	{"prox-mu", offsetof(struct srv_train_opts, prox_mu), 0, 0, 1e6},
	{"server-lr", offsetof(struct srv_train_opts, server_eta), 0, 0, 1e6},
	{"server-beta1", offsetof(struct srv_train_opts, server_beta1), 0, 0, 0.9999},
	{"server-beta2", offsetof(struct srv_train_opts, server_beta2), 0, 0, 0.9999},
	{"server-tau", offsetof(struct srv_train_opts, server_tau), 0, 1e-12, 1e6},
	{"batch", offsetof(struct srv_train_opts, batch), 1, 1, 4096},
};

int srv_train_opts_set(struct srv_train_opts *t, const char *name, const char *value)
{
	for (size_t i = 0; i < sizeof(train_flags) / sizeof(train_flags[0]); i++) {
		const struct train_flag *f = &train_flags[i];
		if (strcmp(name, f->name) != 0)
			continue;
		char flag[32];
		snprintf(flag, sizeof(flag), "--%s", f->name);
		char *field = (char *)t + f->off;
		if (f->is_int)
			return fl_cliopt_int(flag, value, (long)f->lo, (long)f->hi, (int *)field);
		double d;
		int err = fl_cliopt_double(flag, value, f->lo, f->hi, &d);
		if (!err)
			*(float *)field = (float)d;
		return err;
	}
	return FL_ENOTFOUND;
}

int srv_train_opts_strategy(struct srv_train_opts *t, const char *name)
{
	return srv_optim_parse(name, &t->strategy, &t->prox);
}

int srv_train_opts_check(const struct srv_train_opts *t)
{
	const char *flag = srv_optim_unused(t->strategy, t->server_eta >= 0, t->server_beta1 >= 0,
					    t->server_beta2 >= 0, t->server_tau >= 0);
	if (!flag)
		return FL_OK;
	return fl_error_set(FL_EINVAL, "--%s has no effect with --strategy %s", flag,
			    t->prox ? "fedprox" : srv_optim_name(t->strategy));
}

void srv_train_opts_engine_config(const struct srv_train_opts *t, struct srv_engine_config *ec)
{
	ec->rounds = t->rounds;
	ec->seed = t->seed;
	ec->fraction = t->fraction;
	ec->min_report = t->min_report;
	ec->epochs = (uint32_t)t->epochs;
	ec->batch_size = (uint32_t)t->batch;
	ec->lr = t->lr;
	ec->lr_decay = t->lr_decay;
	ec->momentum = t->momentum;
	ec->weight_decay = t->weight_decay;
	ec->prox_mu = t->prox_mu;
	srv_optim_config_default(&ec->server_opt, t->strategy);
	srv_optim_config_set(&ec->server_opt, t->server_eta, t->server_beta1, t->server_beta2,
			     t->server_tau);
	ec->dtype = t->dtype;
}
