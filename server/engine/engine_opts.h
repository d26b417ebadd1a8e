/* engine_opts.h - the training options fedloha-server and fedloha-sim
 * share: one struct, one table of the flags both accept with the same
 * ranges, and the one mapping from those options to the round engine's
 * config (engine.h). Nothing here prints: failures set the error
 * (fl_error_set) and the command prints it with its name. */
#ifndef SRV_ENGINE_OPTS_H
#define SRV_ENGINE_OPTS_H

#include "engine.h"
#include "server_optim.h"
#include "wire.h"

#include <stdint.h>

struct srv_train_opts {
	uint64_t rounds, seed;
	double fraction;   /* clients selected per round */
	int min_report;    /* updates a round needs */
	int epochs, batch; /* clients' local training */
	float lr, lr_decay, momentum, weight_decay;
	float prox_mu; /* sent to the clients as is */
	enum srv_optim_kind strategy;
	int prox; /* fedprox: fedavg on the server, proximal term on the clients */
	/* Server optimiser settings over the strategy's defaults
	 * (srv_optim_config_default); negative = the default. */
	float server_eta, server_beta1, server_beta2, server_tau;
	enum fl_wire_dtype dtype;
};

/* One of the shared flags by its long name without "--" (lr, lr-decay,
 * momentum, weight-decay, prox-mu, server-lr, server-beta1, server-beta2,
 * server-tau, batch), its value range-checked. FL_OK: set; FL_ENOTFOUND:
 * name is not a shared flag (nothing changed, no error set); FL_EINVAL: a
 * bad value, the error names the flag. */
int srv_train_opts_set(struct srv_train_opts *t, const char *name, const char *value);
/* --strategy NAME into t->strategy and t->prox (srv_optim_parse). */
int srv_train_opts_strategy(struct srv_train_opts *t, const char *name);
/* FL_EINVAL ("--server-tau has no effect with --strategy fedavg") when a
 * given server optimiser setting is one the strategy ignores. */
int srv_train_opts_check(const struct srv_train_opts *t);
/* The training part of ec from t: rounds, seed, fraction, min_report,
 * epochs, batch, lr and its decay, momentum, weight decay, prox_mu, the
 * server optimiser and the dtype; the rest of ec is left as it is.
 * Settings the strategy ignores are ignored (srv_train_opts_check tells). */
void srv_train_opts_engine_config(const struct srv_train_opts *t, struct srv_engine_config *ec);

#endif
