/* server_cli.h - fedloha-server's options: the flags, the JSON config file
 * (same keys as the long flags, flags win), their checked values and the
 * model config they describe. Only server_main.c uses it. */
#ifndef SRV_SERVER_CLI_H
#define SRV_SERVER_CLI_H

#include "engine_opts.h"
#include "log.h"
#include "wire.h"

#include <jansson.h>
#include <stdio.h>

#define SERVER_VERSION "0.1.0"
#define SRV_OPTS_ENROL_MAX 64 /* client ids of --enrol per start */

struct srv_opts {
	const char *listen, *model, *model_file, *param, *config, *base, *init, *checkpoint, *out,
		*strategy;
	const char *optimizer, *data, *eval_data, *data_path, *log_level, *key, *allow, *enrol_dir;
	/* a mid-tier aggregator: its parent, the parent's key, its id there */
	const char *upstream, *upstream_key, *upstream_id;
	const char *tier_ids;      /* the mid-tiers below: client ids that may send partial sums */
	double upstream_rate;      /* Mbit/s assumed for a partial sum's upload */
	int upstream_max_attempts; /* failed connects in a row before a mid-tier stops (0 = never) */
	double handshake_timeout;
	int insecure, enrol_minutes;
	/* --enrol ID[,ID...] (repeatable): one enrolment token per client id */
	int n_enrol;
	char enrol_ids[SRV_OPTS_ENROL_MAX][FL_WIRE_CLIENT_ID_MAX + 1];
	/* limits on unauthenticated connections (transport.h); reserved_conns
	 * -1 = max_conns / 10 */
	int reserved_conns, max_handshakes, addr_conns;
	double addr_rate, addr_burst;
	/* rounds, seed, fraction, min-report, local training, server optimiser
	 * (the options fedloha-sim takes too); strategy and dtype are resolved
	 * from their names by run */
	struct srv_train_opts train;
	double gamma, alpha, round_timeout;
	double heartbeat, idle_timeout;
	double write_timeout; /* < 0: the idle timeout */
	int rank, min_clients, min_fit, max_retries;
	int eval_every, eval_limit, threads, max_conns, debug_tensors;
	int upload_slots;  /* engine.h: updates staged at once; -1: from upload_memory */
	int upload_memory; /* MiB of staging that sets upload_slots when not given */
	long long max_frame, chunk, max_output;
	const char *dtype, *require_dtype;
	int has_gamma;
	enum fl_log_level level; /* from --log-level */
	json_t *file;            /* the config file's values live here */
};

void srv_opts_usage(FILE *f);
/* Parses `run` and its flags (argv[0] = "run") into o, defaults first.
 * 0: run; 1: --help / --version was printed (exit 0); 2: a bad flag or
 * value, told on stderr (exit 2). Free with srv_opts_free in every case. */
int srv_opts_parse(int argc, char **argv, struct srv_opts *o);
void srv_opts_free(struct srv_opts *o);
/* The whole-number options and the mid-tier's numeric ones
 * (server_cli_num.c): FL_OK, FL_EINVAL (told on stderr), or FL_ENOTFOUND
 * when k is none of them. */
int srv_opts_set_count(struct srv_opts *o, const char *k, const char *v);
/* The PEFT-format config text sent in Welcome: --config's file with --param
 * applied, or one built from the flags; NULL with the error set. */
char *srv_opts_config_json(const struct srv_opts *o);
/* Input shape and classes of the data set by name: cifar10 3x32x32,
 * safetensors those of the training split in the folder `path` (loaded to
 * read them), else 28x28 grey; 10 classes for the built-in sets. FL_OK or
 * the loader's error. */
int srv_opts_data_dims(const char *name, const char *path, int *c, int *h, int *w, int *classes);

#endif
