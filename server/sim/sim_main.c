/* sim_main.c - fedloha-sim: federated rounds simulated on one machine with
 * the real round engine, the real client sessions and the real encoded
 * messages (sim.h). Takes its flags from sim_args.c, loads and partitions
 * the data once, runs every configuration of --compare on that same
 * partition, shows progress on stderr, and writes CSV / JSON per
 * configuration, the comparison table, the secure channel's byte totals and
 * a plot of accuracy versus MB. Launched by mpirun (or with --mpi) it joins
 * the MPI job first: every rank parses the same flags and loads the same
 * data, rank 0 runs the engine and writes everything, the other ranks
 * serve their clients. Exit codes: 0 ok, 1 failure, 2 usage. */
#include "sim.h"
#include "sim_args.h"

#include "errors.h"
#include "fsutil.h"

#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROG SRV_SIM_PROG
#define NTARGETS 5

/* ---- progress ---- */

struct progress {
	int quiet, tty, index, count;
	double t0, mb;
	/* DIR/<label>.csv while the configuration runs: a row per round as it
	 * completes, so a run that fails or is killed leaves its rounds behind
	 * (rewritten atomically with the same content at the end) */
	FILE *csv;
};

static void on_row(void *ctx, const struct srv_sim_config *cfg, const struct srv_sim_row *row)
{
	struct progress *p = ctx;
	char line[SRV_SIM_CSV_LINE_MAX];
	if (p->csv && srv_sim_csv_line(row, line, sizeof(line)) > 0) {
		fputs(line, p->csv);
		fflush(p->csv);
	}
	if (p->quiet)
		return;
	uint64_t n = cfg->train.rounds, every = n >= 10 ? n / 10 : 1;
	if (!p->tty && row->round % every != 0 && row->round != n)
		return;
	double el = row->seconds, eta = el / (double)row->round * (double)(n - row->round);
	char label[SRV_SIM_LABEL_MAX];
	fprintf(stderr,
		"%s[%d/%d %s] round %llu/%llu  acc %.2f%%  %.1f MB  elapsed %.0fs  ETA %.0fs%s",
		p->tty ? "\r" : "", p->index + 1, p->count,
		srv_sim_config_label(cfg, label, sizeof(label)), (unsigned long long)row->round,
		(unsigned long long)n, 100 * row->accuracy,
		(double)(row->total_up + row->total_down) / 1e6, el, eta, p->tty ? "\033[K" : "\n");
	if (p->tty && row->round == n)
		fputc('\n', stderr);
	fflush(stderr);
}

/* ---- main ---- */

/* One configuration's CSV and JSON, as soon as it finished. */
static int write_result(const struct srv_sim_result *res, const struct srv_sim_config *cfg,
			const char *dir, const double *targets)
{
	char path[FL_PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s.csv", dir, res->label);
	int err = srv_sim_write_csv(res, path);
	snprintf(path, sizeof(path), "%s/%s.json", dir, res->label);
	if (!err)
		err = srv_sim_write_json(res, cfg, targets, NTARGETS, path);
	return err;
}

/* The live CSV of a configuration about to run (NULL when it cannot be
 * opened: the final CSV is still written). */
static FILE *open_live_csv(const char *dir, const struct srv_sim_config *cfg)
{
	char path[FL_PATH_MAX], label[SRV_SIM_LABEL_MAX];
	snprintf(path, sizeof(path), "%s/%s.csv", dir,
		 srv_sim_config_label(cfg, label, sizeof(label)));
	FILE *f = fopen(path, "w");
	if (f)
		fputs(srv_sim_csv_header, f);
	else
		fprintf(stderr, PROG ": %s: %s (the CSV is written at the end)\n", path,
			strerror(errno));
	return f;
}

static void print_failed(FILE *f, char (*failed)[FL_ERROR_MSG_MAX + 64], int nfailed)
{
	if (!nfailed)
		return;
	fprintf(f, "\nfailed (its CSV holds the rounds it completed):\n");
	for (int i = 0; i < nfailed; i++)
		fprintf(f, "  %s\n", failed[i]);
}

static int write_table(struct srv_sim_result *const *res, int n, const char *dir,
		       const double *targets, char (*failed)[FL_ERROR_MSG_MAX + 64], int nfailed)
{
	char path[FL_PATH_MAX];
	snprintf(path, sizeof(path), "%s/table.txt", dir);
	FILE *f = fopen(path, "w");
	if (!f)
		return fl_error_set(FL_EIO, "%s: %s", path, strerror(errno));
	srv_sim_print_table(f, res, n, targets, NTARGETS);
	print_failed(f, failed, nfailed);
	if (fclose(f) != 0)
		return fl_error_set(FL_EIO, "%s: write failed", path);
	return FL_OK;
}

/* The partition of the training set: --partition, --clients, the seed,
 * and held-out samples when asked or when a configuration needs them. */
static int partition_config(const struct srv_sim_opts *o, const struct srv_sim_config *cfgs, int n,
			    struct fl_partition_config *pc)
{
	fl_partition_config_init(pc);
	if (fl_partition_parse(o->partition, pc)) {
		fprintf(stderr, PROG ": --%s\n" PROG ": try --help\n", fl_error_msg());
		return FL_EINVAL;
	}
	int need_holdout = 0;
	for (int i = 0; i < n; i++)
		need_holdout |= cfgs[i].fed_eval || cfgs[i].param == FL_PEFT_PARAM_PFEDPARA;
	pc->clients = o->clients;
	pc->seed = o->base.train.seed;
	pc->holdout = o->holdout_set ? o->holdout : need_holdout ? 0.2 : 0.0;
	pc->min_per_client = 2;
	return FL_OK;
}

static void print_setting(const struct srv_sim_opts *o, const struct srv_sim_data *data)
{
	const struct srv_sim_config *b = &o->base;
	printf("fedloha-sim: %s, %d training / %d test samples, %d clients (%s), %.0f%% per "
	       "round\n",
	       o->data ? o->data : "fashion-mnist", data->train->n, data->test->n, o->clients,
	       o->partition, 100 * b->train.fraction);
	printf("model %s, %llu rounds, E=%d B=%d lr %g (decay %g), %s, seed %llu, %d threads, "
	       "%s\n",
	       srv_sim_config_model(b), (unsigned long long)b->train.rounds, b->train.epochs,
	       b->train.batch, (double)b->train.lr, (double)b->train.lr_decay,
	       b->train.prox ? "fedprox" : srv_optim_name(b->train.strategy),
	       (unsigned long long)b->train.seed, b->threads,
	       b->secure ? "secure channel" : "--insecure (no channel)");
	if (b->init_path)
		printf("initial model %s\n", b->init_path);
	if (srv_sim_mpi_size() > 1)
		printf("MPI: %d ranks (client i on rank i %% %d), %d threads per rank\n",
		       srv_sim_mpi_size(), srv_sim_mpi_size(), b->threads);
	fflush(stdout);
}

/* Every configuration's run and its result files, one after the other. */
struct runs {
	struct srv_sim_result *res[SRV_SIM_CONFIGS_MAX], *done[SRV_SIM_CONFIGS_MAX];
	char failed[SRV_SIM_CONFIGS_MAX][FL_ERROR_MSG_MAX + 64];
	int ndone, nfailed;
	char model_dir[FL_PATH_MAX]; /* --save-model: the folder of the configuration running */
};

/* Runs cfgs[i]; a failure is recorded and the others still run. The
 * error when its result files could not be written (message printed). */
static int run_one(const struct srv_sim_opts *o, struct srv_sim_config *cfg,
		   const struct srv_sim_data *data, const double *targets, struct progress *pr,
		   struct runs *r, int i)
{
	char label[SRV_SIM_LABEL_MAX];
	pr->index = i;
	cfg->cb = (struct srv_sim_callbacks){.ctx = pr, .on_row = on_row};
	if (o->save_model && !cfg->local_only) {
		snprintf(r->model_dir, sizeof(r->model_dir), "%s/%s-model", o->out,
			 srv_sim_config_label(cfg, label, sizeof(label)));
		cfg->model_dir = r->model_dir;
	}
	pr->csv = open_live_csv(o->out, cfg);
	int err = srv_sim_run(cfg, data, &r->res[i]);
	if (pr->csv)
		fclose(pr->csv);
	pr->csv = NULL;
	srv_sim_config_label(cfg, label, sizeof(label));
	if (err) {
		/* the others still run: a diverging configuration is a result too */
		snprintf(r->failed[r->nfailed++], sizeof(r->failed[0]), "%s: %s", label,
			 fl_error_msg());
		fprintf(stderr, "%s" PROG ": %s\n", pr->tty && !o->quiet ? "\n" : "",
			r->failed[r->nfailed - 1]);
		return FL_OK;
	}
	const struct srv_sim_result *res = r->res[i];
	if (res->client_errors)
		fprintf(stderr, PROG ": %s: %llu client errors, last: %s\n", res->label,
			(unsigned long long)res->client_errors, res->last_client_error);
	if (srv_sim_mpi_size() > 1 && !o->quiet)
		fprintf(stderr,
			PROG ": %s: %llu requests to other ranks, %.1f MB over MPI, "
			     "%.2f s\n",
			res->label, (unsigned long long)res->mpi_calls,
			(double)res->mpi_bytes / 1e6, res->mpi_seconds);
	r->done[r->ndone++] = r->res[i];
	if ((err = write_result(res, cfg, o->out, targets)))
		fprintf(stderr, PROG ": %s\n", fl_error_msg());
	return err;
}

/* The table, the channel totals, the failures and the plot; the exit code
 * (1 when a configuration failed or a file could not be written). */
static int report(const struct srv_sim_opts *o, struct runs *r, const double *targets)
{
	int rc = 0;
	if (r->ndone) {
		srv_sim_print_table(stdout, r->done, r->ndone, targets, NTARGETS);
		srv_sim_print_channel(stdout, r->done, r->ndone);
		if (write_table(r->done, r->ndone, o->out, targets, r->failed, r->nfailed)) {
			fprintf(stderr, PROG ": %s\n", fl_error_msg());
			rc = 1;
		}
	}
	print_failed(stdout, r->failed, r->nfailed);
	if (r->nfailed)
		rc = 1;
	if (r->ndone) {
		char png[FL_PATH_MAX];
		printf("\nresults: %s/ (per configuration: CSV per round, JSON summary)\n", o->out);
		if (!srv_sim_plot(r->done, r->ndone, o->out, targets[0], png, sizeof(png)))
			printf("plot: %s\n", png);
		else
			printf("plot: not drawn: %s\n", fl_error_msg());
	}
	return rc;
}

static int run_all(const struct srv_sim_opts *o, struct srv_sim_config *cfgs, int n);

/* --mpi anywhere before a lone "--" (MPI must start before the flags are
 * parsed, on every rank). */
static int mpi_forced(int argc, char **argv)
{
	for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strcmp(argv[i], "--mpi") == 0)
			return 1;
	return 0;
}

/* The flags, the model file and the configurations; 2 (message printed)
 * when they are refused on any rank (only a file can tell ranks apart),
 * else run_all's exit code. */
static int sim_main(int argc, char **argv)
{
	struct srv_sim_opts o;
	srv_sim_opts_init(&o);
	int rc = srv_sim_opts_parse(argc, argv, &o);
	struct fl_model_desc *desc = NULL;
	static struct srv_sim_config cfgs[SRV_SIM_CONFIGS_MAX];
	int n = 0, bad = 0;
	if (rc == 2) { /* --help: the usage after the agreement every rank joins */
		fl_error_set(FL_EINVAL, "--help was given");
		bad = 1;
	} else if (!rc && o.model_file && fl_model_desc_load(o.model_file, &desc)) {
		fl_error_set(FL_EINVAL, "--model-file: %s", fl_error_msg());
		fprintf(stderr, PROG ": %s\n", fl_error_msg());
		bad = 1;
	}
	o.base.desc = desc;
	if (!bad && (rc || srv_sim_opts_configs(&o, cfgs, &n))) {
		fl_error_set(FL_EINVAL, "the command line was refused (see --help)");
		fprintf(stderr, PROG ": try --help\n");
		bad = 1;
	}
	if (srv_sim_mpi_agree(bad ? FL_EINVAL : FL_OK)) {
		if (rc == 2) {
			srv_sim_opts_usage(stdout);
			return 0;
		}
		if (!bad) /* another rank refused it */
			fprintf(stderr, PROG ": %s\n", fl_error_msg());
		fl_model_desc_free(desc);
		return 2;
	}
	rc = run_all(&o, cfgs, n);
	fl_model_desc_free(desc);
	return rc;
}

int main(int argc, char **argv)
{
#ifdef __GLIBC__
	/* Blocks of 1 MiB and more (frames, staging, the models' batch buffers,
	 * released between rounds) go straight back to the system when freed.
	 * glibc's default threshold rises with the first such free, after which
	 * they stay in the heap: with 100 cnn clients the process then keeps
	 * every buffer it ever used (2.1 GB against 0.8 GB in a 40-client run). */
	mallopt(M_MMAP_THRESHOLD, 1 << 20);
#endif
	if (srv_sim_mpi_init(&argc, &argv, mpi_forced(argc, argv))) {
		fprintf(stderr, PROG ": %s\n", fl_error_msg());
		return 1;
	}
	int rc = sim_main(argc, argv);
	srv_sim_mpi_finalize();
	return rc;
}

/* Ranks > 0: every configuration's clients, in the same order as rank 0
 * (which reports the failures). */
static void serve_all(struct srv_sim_config *cfgs, int n, const struct srv_sim_data *data)
{
	for (int i = 0; i < n; i++) {
		struct srv_sim_result *res = NULL;
		(void)srv_sim_run(&cfgs[i], data, &res);
		srv_sim_result_free(res);
	}
}

/* Every configuration on the same data and partitions, then the report. */
static int run_all(const struct srv_sim_opts *o, struct srv_sim_config *cfgs, int n)
{
	int rc;
	struct fl_partition_config pc;
	int bad = partition_config(o, cfgs, n, &pc); /* message printed */
	if (srv_sim_mpi_agree(bad ? fl_error_set(FL_EINVAL, "--partition refused") : FL_OK))
		return 2;
	double target = o->target / 100.0;
	double targets[NTARGETS] = {target, target - 0.06, target - 0.04, target - 0.02,
				    target + 0.02};
	struct srv_sim_data *data = NULL;
	uint8_t digest[SRV_SIM_DIGEST_BYTES];
	int err = srv_sim_data_load(o->data, o->data_path, o->limit, o->test_limit, &pc, &data);
	if (!err && srv_sim_mpi_rank() == 0)
		err = fl_mkdir_p(o->out, 0);
	/* every rank must run the same configurations on the same data */
	if (!(err = srv_sim_mpi_agree(err)) && srv_sim_mpi_size() > 1)
		err = srv_sim_mpi_same(srv_sim_digest(cfgs, n, data, digest), digest);
	if (err) {
		fprintf(stderr, PROG ": %s\n", fl_error_msg());
		srv_sim_data_free(data);
		return 1;
	}
	if (srv_sim_mpi_rank() > 0) {
		serve_all(cfgs, n, data);
		srv_sim_data_free(data);
		return 0;
	}
	print_setting(o, data);
	static struct runs r;
	struct progress pr = {.quiet = o->quiet, .tty = isatty(2), .count = n};
	rc = 0;
	for (int i = 0; i < n; i++)
		if (run_one(o, &cfgs[i], data, targets, &pr, &r, i))
			rc = 1;
	rc |= report(o, &r, targets);
	for (int i = 0; i < n; i++)
		srv_sim_result_free(r.res[i]);
	srv_sim_data_free(data);
	return rc;
}
