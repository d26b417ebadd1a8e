/* server_cli_num.c - fedloha-server's whole-number options (rounds,
 * client counts, limits) and the mid-tier's numeric ones (--upstream-rate,
 * --upstream-max-attempts), each checked against its range. The other
 * options and the config file are server_cli.c. */
#include "server_cli.h"

#include "cliopt.h"
#include "errors.h"

#include <string.h>

static int inum(const char *k, const char *v, double lo, double hi, int *out)
{
	return fl_cliopt_key_int("fedloha-server", k, v, (long)lo, (long)hi, out);
}

/* The whole-number options (ranks, rounds, client counts, limits):
 * FL_ENOTFOUND when k is none of them. */
int srv_opts_set_count(struct srv_opts *o, const char *k, const char *v)
{
	if (!strcmp(k, "rank"))
		return inum(k, v, 1, 1 << 16, &o->rank);
	if (!strcmp(k, "rounds")) {
		int rounds;
		if (inum(k, v, 1, 1e9, &rounds))
			return FL_EINVAL;
		o->train.rounds = (uint64_t)rounds;
		return FL_OK;
	}
	if (!strcmp(k, "min-clients"))
		return inum(k, v, 1, 1e6, &o->min_clients);
	if (!strcmp(k, "min-fit"))
		return inum(k, v, 1, 1e6, &o->min_fit);
	if (!strcmp(k, "min-report"))
		return inum(k, v, 1, 1e6, &o->train.min_report);
	if (!strcmp(k, "max-retries"))
		return inum(k, v, 0, 1e6, &o->max_retries);
	if (!strcmp(k, "epochs"))
		return inum(k, v, 0, 10000, &o->train.epochs);
	if (!strcmp(k, "eval-every"))
		return inum(k, v, 0, 1e9, &o->eval_every);
	if (!strcmp(k, "eval-limit"))
		return inum(k, v, 1, 1e9, &o->eval_limit);
	if (!strcmp(k, "threads"))
		return inum(k, v, 1, 256, &o->threads);
	if (!strcmp(k, "max-conns"))
		return inum(k, v, 1, 1e7, &o->max_conns);
	if (!strcmp(k, "upload-slots"))
		return inum(k, v, 1, 1e5, &o->upload_slots);
	if (!strcmp(k, "upload-memory"))
		return inum(k, v, 1, 1e7, &o->upload_memory);
	if (!strcmp(k, "reserved-conns"))
		return inum(k, v, 0, 1e7, &o->reserved_conns);
	if (!strcmp(k, "max-handshakes"))
		return inum(k, v, 1, 1e7, &o->max_handshakes);
	if (!strcmp(k, "addr-conns"))
		return inum(k, v, 0, 1e7, &o->addr_conns);
	if (!strcmp(k, "upstream-max-attempts"))
		return inum(k, v, 0, 1e9, &o->upstream_max_attempts);
	if (!strcmp(k, "upstream-rate"))
		return fl_cliopt_key_double("fedloha-server", k, v, 0.001, 1e6, &o->upstream_rate);
	return FL_ENOTFOUND;
}
