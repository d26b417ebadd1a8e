/* sim_main.c - fedloha-sim: federated rounds simulated on one machine with
 * the real round engine, the real client sessions and the real encoded
 * messages (sim.h). Parses flags, loads and partitions the data once, runs
 * every configuration of --compare on that same partition, shows progress
 * on stderr, and writes CSV / JSON per configuration, the comparison table,
 * the secure channel's byte totals and a plot of accuracy versus MB. Exit
 * codes: 0 ok, 1 failure, 2 usage. */
#include "sim.h"

#include "errors.h"
#include "fsutil.h"
#include "model.h"
#include "cliopt.h"

#include <errno.h>
#include <getopt.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROG "fedloha-sim"
#define CONFIGS_MAX 16
#define NTARGETS 5
/* The built-in default: what `make run` shows. The target is fixed here,
 * before looking at any curve. */
#define DEF_COMPARE "dense,fedpara,lowrank"
#define DEF_MODEL "2nn"
#define DEF_CLIENTS 20
#define DEF_FRACTION 0.25
#define DEF_ROUNDS 30
#define DEF_EPOCHS 2
#define DEF_BATCH 32
#define DEF_LR 0.1
#define DEF_PARTITION "dirichlet:0.5"
#define DEF_TARGET 80.0
#define DEF_OUT "fedloha-sim-results"

struct opts {
	struct srv_sim_config base;
	const char *compare, *param, *partition, *data, *data_path, *out, *strategy;
	int clients, limit, test_limit, quiet, save_model, holdout_set;
	double target, holdout;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " PROG " [options]\n"
		"Simulates federated training on one machine: N clients in one process, driven by\n"
		"the real round engine and client sessions, every message encoded as on the wire.\n"
		"Without options it runs the built-in default (make run): Fashion-MNIST, "
		"%s over\n"
		"%d clients, %.0f%% per round, %s, %d rounds of E=%d B=%d lr %g, comparing\n"
		"%s (gamma 0), target accuracy fixed in advance at %.0f%%.\n\n"
		"model:\n"
		"  --model NAME        2nn, cnn or mlp (default %s)\n"
		"  --param KIND        dense, fedpara, pfedpara, lowrank or loha: one configuration\n"
		"  --compare LIST      several configurations on identical partitions, e.g.\n"
		"                      dense,fedpara,lowrank; an item may add a wire dtype:\n"
		"                      fedpara:int8 (default %s); local (dense) or\n"
		"                      local-fedpara / local-lowrank is the local-only baseline:\n"
		"                      every client trains its own model on its own samples each\n"
		"                      round and sends nothing (turns --fed-eval on for all)\n"
		"  --gamma G           rank from gamma in [0,1] (FedPara rule; default 0)\n"
		"  --rank R            explicit rank instead of gamma\n"
		"  --no-tucker         convs in reshape form instead of Tucker (fedpara family)\n"
		"  --target-modules LIST  layers to parameterise, e.g. fc1 or conv2,fc1 (PEFT's\n"
		"                      target_modules; default: every weight layer but the\n"
		"                      output layer); the others stay dense and travel in full\n"
		"  --base FILE         loha: frozen base weights (safetensors, PyTorch names)\n"
		"  --init FILE         initial global model (safetensors, PyTorch names, e.g. the\n"
		"                      model.safetensors of fedloha-client train --out): dense\n"
		"                      loads every weight and bias, loha the --modules-to-save\n"
		"                      layers (its frozen base is --base, default this file);\n"
		"                      dense and loha only\n"
		"  --modules-to-save LIST  loha: layers trained in full and sent, as PEFT's\n"
		"                      modules_to_save (e.g. fc2, so a new task's head learns)\n"
		"federation:\n"
		"  --clients N         (default %d)\n"
		"  --fraction F        clients selected per round (default %g)\n"
		"  --rounds R          (default %d)\n"
		"  --partition P       iid, dirichlet:ALPHA or shards:K (default %s)\n"
		"  --holdout F         share of each client's samples held out for federated\n"
		"                      evaluation (default 0.2 with pfedpara, local or --fed-eval,\n"
		"                      else 0)\n"
		"  --strategy S        fedavg, fedavgm, fedadam, fedyogi, fedadagrad or fedprox\n"
		"  --prox-mu MU        fedprox proximal weight (default 0.01)\n"
		"  --dtype T           wire encoding f32, f16, bf16 or int8 (default f32)\n"
		"  --dropout P         probability that a selected client vanishes mid-round\n"
		"  --min-report N      updates a round needs (default half of the selected)\n"
		"  --fed-eval          federated evaluation every round: the accuracy of every\n"
		"                      configuration becomes the clients' mean accuracy on their\n"
		"                      held-out samples (central accuracy still in the CSV/JSON);\n"
		"                      always on for pfedpara (personalised accuracy)\n"
		"  --server-lr ETA     server learning rate (fedavgm, fedadam, fedyogi,\n"
		"                      fedadagrad; default the strategy's: 1, 0.1, 0.01, 0.1)\n"
		"  --server-beta1 B    server momentum / first moment (default 0.9; fedadagrad 0)\n"
		"  --server-beta2 B    second moment of fedadam, fedyogi (default 0.99)\n"
		"  --server-tau T      adaptivity of the adaptive strategies (default 1e-3)\n"
		"local training:\n"
		"  --epochs E          (default %d)\n"
		"  --batch B           (default %d)\n"
		"  --lr LR             SGD learning rate (default %g)\n"
		"  --lr-decay D        lr multiplied by D every round (default 1)\n"
		"  --momentum M        (default 0)\n"
		"  --weight-decay WD   (default 0)\n"
		"data:\n"
		"  --data NAME         fashion-mnist (default), mnist or cifar10\n"
		"  --data-path DIR     folder of the data files (default: Debian's Fashion-MNIST)\n"
		"  --limit N           use the first N training samples\n"
		"  --test-limit N      evaluate on the first N test samples\n"
		"run and output:\n"
		"  --seed S            (default 1); results depend only on the seed\n"
		"  --threads T         worker threads (default: online CPUs)\n"
		"  --target ACC        target accuracy in %% for the table (default %.0f); the\n"
		"                      table also shows ACC-6, -4, -2 and +2\n"
		"  --out DIR           results folder (default ./%s): <config>.csv,\n"
		"                      <config>.json, accuracy_vs_mb.gp/.png, table.txt\n"
		"  --save-model        also save each final global model in DIR/<config>-model\n"
		"  --quiet             no progress line\n"
		"  --insecure          plain in-memory connections instead of the secure channel\n"
		"                      (every connection is encrypted and authenticated by\n"
		"                      default; frame bytes and results are the same either way)\n"
		"  --help\n",
		DEF_PARTITION, DEF_CLIENTS, 100 * DEF_FRACTION, DEF_MODEL, DEF_ROUNDS, DEF_EPOCHS,
		DEF_BATCH, DEF_LR, DEF_COMPARE, DEF_TARGET, DEF_MODEL, DEF_COMPARE, DEF_CLIENTS,
		DEF_FRACTION, DEF_ROUNDS, DEF_PARTITION, DEF_EPOCHS, DEF_BATCH, DEF_LR, DEF_TARGET,
		DEF_OUT);
}

static int parse_double(const char *s, const char *flag, double lo, double hi, double *out)
{
	if (fl_cliopt_double(flag, s, lo, hi, out)) {
		fprintf(stderr, PROG ": %s\n", fl_error_msg());
		return FL_EINVAL;
	}
	return FL_OK;
}

static int parse_int(const char *s, const char *flag, long lo, long hi, int *out)
{
	if (fl_cliopt_int(flag, s, lo, hi, out)) {
		fprintf(stderr, PROG ": %s\n", fl_error_msg());
		return FL_EINVAL;
	}
	return FL_OK;
}

static int parse_float(const char *s, const char *flag, double lo, double hi, float *out)
{
	double v;
	if (parse_double(s, flag, lo, hi, &v))
		return FL_EINVAL;
	*out = (float)v;
	return FL_OK;
}

static int default_threads(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : n > 8 ? 8 : (int)n;
}

/* Long options only; the value of `val` picks the case below. */
enum {
	O_MODEL = 256, O_PARAM, O_COMPARE, O_GAMMA, O_RANK, O_NO_TUCKER, O_BASE, O_CLIENTS,
	O_FRACTION, O_ROUNDS, O_PARTITION, O_HOLDOUT, O_STRATEGY, O_PROX_MU, O_DTYPE, O_DROPOUT,
	O_MIN_REPORT, O_FED_EVAL, O_EPOCHS, O_BATCH, O_LR, O_LR_DECAY, O_MOMENTUM, O_WD, O_DATA,
	O_DATA_PATH, O_LIMIT, O_TEST_LIMIT, O_SEED, O_THREADS, O_TARGET, O_OUT, O_SAVE_MODEL,
	O_QUIET, O_INSECURE, O_HELP, O_INIT, O_MODULES_TO_SAVE, O_SERVER_LR, O_SERVER_BETA1,
	O_SERVER_BETA2, O_SERVER_TAU, O_TARGET_MODULES,
};

static const struct option longopts[] = {
	{"model", 1, 0, O_MODEL},	  {"param", 1, 0, O_PARAM},
	{"compare", 1, 0, O_COMPARE},	  {"gamma", 1, 0, O_GAMMA},
	{"rank", 1, 0, O_RANK},		  {"no-tucker", 0, 0, O_NO_TUCKER},
	{"base", 1, 0, O_BASE},		  {"clients", 1, 0, O_CLIENTS},
	{"fraction", 1, 0, O_FRACTION},	  {"rounds", 1, 0, O_ROUNDS},
	{"partition", 1, 0, O_PARTITION}, {"holdout", 1, 0, O_HOLDOUT},
	{"strategy", 1, 0, O_STRATEGY},	  {"prox-mu", 1, 0, O_PROX_MU},
	{"dtype", 1, 0, O_DTYPE},	  {"dropout", 1, 0, O_DROPOUT},
	{"min-report", 1, 0, O_MIN_REPORT}, {"fed-eval", 0, 0, O_FED_EVAL},
	{"epochs", 1, 0, O_EPOCHS},	  {"batch", 1, 0, O_BATCH},
	{"lr", 1, 0, O_LR},		  {"lr-decay", 1, 0, O_LR_DECAY},
	{"momentum", 1, 0, O_MOMENTUM},	  {"weight-decay", 1, 0, O_WD},
	{"data", 1, 0, O_DATA},		  {"data-path", 1, 0, O_DATA_PATH},
	{"limit", 1, 0, O_LIMIT},	  {"test-limit", 1, 0, O_TEST_LIMIT},
	{"seed", 1, 0, O_SEED},		  {"threads", 1, 0, O_THREADS},
	{"target", 1, 0, O_TARGET},	  {"out", 1, 0, O_OUT},
	{"save-model", 0, 0, O_SAVE_MODEL}, {"quiet", 0, 0, O_QUIET},
	{"insecure", 0, 0, O_INSECURE},	  {"help", 0, 0, O_HELP},
	{"init", 1, 0, O_INIT},		  {"modules-to-save", 1, 0, O_MODULES_TO_SAVE},
	{"server-lr", 1, 0, O_SERVER_LR}, {"server-beta1", 1, 0, O_SERVER_BETA1},
	{"server-beta2", 1, 0, O_SERVER_BETA2}, {"server-tau", 1, 0, O_SERVER_TAU},
	{"target-modules", 1, 0, O_TARGET_MODULES},
	{0, 0, 0, 0}};

/* 1 (message printed) for a --server-* setting the strategy would ignore. */
static int check_server_opt(const struct srv_sim_config *c)
{
	const char *flag = srv_optim_unused(c->train.strategy, c->train.server_eta >= 0,
						c->train.server_beta1 >= 0, c->train.server_beta2 >= 0,
						c->train.server_tau >= 0);
	if (!flag)
		return FL_OK;
	fprintf(stderr, PROG ": --%s has no effect with --strategy %s\n", flag,
		c->train.prox ? "fedprox" : srv_optim_name(c->train.strategy));
	return FL_EINVAL;
}

/* 0 ok, 2 --help, anything else a bad value (message printed). */
static int parse_args(int argc, char **argv, struct opts *o)
{
	struct srv_sim_config *c = &o->base;
	int bad = 0, seed;
	double d;
	optind = 1;
	opterr = 0;
	for (;;) {
		int prev = optind, ch = getopt_long(argc, argv, ":", longopts, NULL);
		if (ch == -1)
			break;
		switch (ch) {
		case O_MODEL: c->arch = optarg; break;
		case O_PARAM: o->param = optarg; break;
		case O_COMPARE: o->compare = optarg; break;
		case O_GAMMA: bad |= parse_double(optarg, "--gamma", 0, 1, &c->gamma); break;
		case O_RANK: bad |= parse_int(optarg, "--rank", 1, 4096, &c->rank); break;
		case O_NO_TUCKER: c->tucker = 0; break;
		case O_TARGET_MODULES: c->targets = optarg; break;
		case O_BASE: c->base_path = optarg; break;
		case O_INIT: c->init_path = optarg; break;
		case O_MODULES_TO_SAVE: c->modules_to_save = optarg; break;
		case O_CLIENTS: bad |= parse_int(optarg, "--clients", 1, 100000, &o->clients); break;
		case O_FRACTION: bad |= parse_double(optarg, "--fraction", 1e-9, 1, &c->train.fraction); break;
		case O_ROUNDS:
			bad |= parse_int(optarg, "--rounds", 1, 1000000, &seed);
			c->train.rounds = (uint64_t)seed;
			break;
		case O_PARTITION: o->partition = optarg; break;
		case O_HOLDOUT:
			bad |= parse_double(optarg, "--holdout", 0, 0.9, &o->holdout);
			o->holdout_set = 1;
			break;
		case O_STRATEGY: o->strategy = optarg; break;
		case O_PROX_MU: bad |= parse_float(optarg, "--prox-mu", 0, 1e6, &c->train.prox_mu); break;
		case O_DTYPE:
			if (fl_wire_dtype_parse(optarg, &c->train.dtype)) {
				fprintf(stderr, PROG ": --dtype: expected f32, f16, bf16 or int8, got "
						"'%s'\n", optarg);
				bad = 1;
			}
			break;
		case O_DROPOUT: bad |= parse_double(optarg, "--dropout", 0, 0.99, &c->dropout); break;
		case O_MIN_REPORT:
			bad |= parse_int(optarg, "--min-report", 1, 100000, &c->train.min_report);
			break;
		case O_FED_EVAL: c->fed_eval = 1; break;
		case O_SERVER_LR:
			bad |= parse_float(optarg, "--server-lr", 0, 1e6, &c->train.server_eta);
			break;
		case O_SERVER_BETA1:
			bad |= parse_float(optarg, "--server-beta1", 0, 0.9999, &c->train.server_beta1);
			break;
		case O_SERVER_BETA2:
			bad |= parse_float(optarg, "--server-beta2", 0, 0.9999, &c->train.server_beta2);
			break;
		case O_SERVER_TAU:
			bad |= parse_float(optarg, "--server-tau", 1e-12, 1e6, &c->train.server_tau);
			break;
		case O_EPOCHS: bad |= parse_int(optarg, "--epochs", 1, 10000, &c->train.epochs); break;
		case O_BATCH: bad |= parse_int(optarg, "--batch", 1, 4096, &c->train.batch); break;
		case O_LR: bad |= parse_float(optarg, "--lr", 0, 100, &c->train.lr); break;
		case O_LR_DECAY: bad |= parse_float(optarg, "--lr-decay", 1e-6, 1, &c->train.lr_decay); break;
		case O_MOMENTUM: bad |= parse_float(optarg, "--momentum", 0, 0.9999, &c->train.momentum); break;
		case O_WD: bad |= parse_float(optarg, "--weight-decay", 0, 1, &c->train.weight_decay); break;
		case O_DATA: o->data = optarg; break;
		case O_DATA_PATH: o->data_path = optarg; break;
		case O_LIMIT: bad |= parse_int(optarg, "--limit", 1, 1 << 30, &o->limit); break;
		case O_TEST_LIMIT:
			bad |= parse_int(optarg, "--test-limit", 1, 1 << 30, &o->test_limit);
			break;
		case O_SEED:
			bad |= parse_int(optarg, "--seed", 0, 2147483647, &seed);
			c->train.seed = (uint64_t)seed;
			break;
		case O_THREADS:
			bad |= parse_int(optarg, "--threads", 1, SRV_SIM_THREADS_MAX, &c->threads);
			break;
		case O_TARGET:
			bad |= parse_double(optarg, "--target", 0, 100, &d);
			o->target = d;
			break;
		case O_OUT: o->out = optarg; break;
		case O_SAVE_MODEL: o->save_model = 1; break;
		case O_QUIET: o->quiet = 1; break;
		case O_INSECURE: c->secure = 0; break;
		case O_HELP: return 2;
		case ':':
			fprintf(stderr, PROG ": %s needs a value\n", argv[prev]);
			bad = 1;
			break;
		default:
			fprintf(stderr, PROG ": unknown option '%s'\n", argv[prev]);
			bad = 1;
		}
	}
	if (!bad && optind < argc) {
		fprintf(stderr, PROG ": unexpected argument '%s'\n", argv[optind]);
		bad = 1;
	}
	if (!bad && !fl_model_arch_valid(c->arch)) {
		fprintf(stderr, PROG ": --model: unknown model '%s' (2nn, cnn or mlp)\n", c->arch);
		bad = 1;
	}
	if (!bad && o->strategy) {
		int prox = 0;
		if (srv_optim_parse(o->strategy, &c->train.strategy, &prox)) {
			fprintf(stderr, PROG ": --strategy: %s\n", fl_error_msg());
			bad = 1;
		}
		c->train.prox = prox;
	}
	if (!bad)
		bad = check_server_opt(c);
	return bad;
}

/* --compare / --param into configurations (labels unique). */
static int make_configs(const struct opts *o, struct srv_sim_config *cfgs, int *n)
{
	const char *list = o->compare ? o->compare : o->param ? o->param : DEF_COMPARE;
	if (o->compare && o->param) {
		fprintf(stderr, PROG ": give either --param or --compare\n");
		return FL_EINVAL;
	}
	*n = 0;
	const char *p = list;
	while (*p) {
		size_t len = strcspn(p, ",");
		char item[64];
		if (len == 0 || len >= sizeof(item)) {
			fprintf(stderr, PROG ": --compare: bad item in '%s'\n", list);
			return FL_EINVAL;
		}
		if (*n == CONFIGS_MAX) {
			fprintf(stderr, PROG ": --compare: at most %d configurations\n", CONFIGS_MAX);
			return FL_EINVAL;
		}
		memcpy(item, p, len);
		item[len] = '\0';
		p += len + (p[len] == ',');
		struct srv_sim_config *c = &cfgs[*n];
		*c = o->base;
		char *colon = strchr(item, ':');
		if (colon) {
			*colon = '\0';
			if (fl_wire_dtype_parse(colon + 1, &c->train.dtype)) {
				fprintf(stderr, PROG ": --compare: '%s': dtype must be f32, f16, bf16 or "
						"int8\n", colon + 1);
				return FL_EINVAL;
			}
		}
		const char *kind = item;
		if (!strcmp(item, "local")) {
			c->local_only = 1;
			kind = "dense";
		} else if (!strncmp(item, "local-", 6)) {
			c->local_only = 1;
			kind = item + 6;
		}
		if (fl_peft_param_parse(kind, &c->param)) {
			fprintf(stderr, PROG ": unknown parameterisation '%s' (dense, fedpara, "
					"pfedpara, lowrank, loha, local or local-KIND)\n", kind);
			return FL_EINVAL;
		}
		if (c->local_only && (colon || (c->param != FL_PEFT_PARAM_DENSE &&
						c->param != FL_PEFT_PARAM_FEDPARA &&
						c->param != FL_PEFT_PARAM_LOWRANK))) {
			fprintf(stderr, PROG ": '%s': local-only training takes dense, fedpara or "
					"lowrank and no wire dtype\n", item);
			return FL_EINVAL;
		}
		if (c->local_only && (c->init_path || c->base_path)) {
			fprintf(stderr, PROG ": '%s': local-only training starts from the seeded "
					"model (no --init or --base)\n", item);
			return FL_EINVAL;
		}
		if (c->init_path && c->param != FL_PEFT_PARAM_DENSE && c->param != FL_PEFT_PARAM_LOHA) {
			fprintf(stderr, PROG ": --init works with dense and loha, not %s\n", item);
			return FL_EINVAL;
		}
		if (c->init_path && c->param == FL_PEFT_PARAM_LOHA && !c->base_path)
			c->base_path = c->init_path; /* the pretrained model is the frozen base */
		char label[SRV_SIM_LABEL_MAX], other[SRV_SIM_LABEL_MAX];
		srv_sim_config_label(c, label, sizeof(label));
		for (int i = 0; i < *n; i++) {
			if (!strcmp(label, srv_sim_config_label(&cfgs[i], other, sizeof(other)))) {
				fprintf(stderr, PROG ": --compare: '%s' given twice\n", label);
				return FL_EINVAL;
			}
		}
		(*n)++;
	}
	if (!*n) {
		fprintf(stderr, PROG ": --compare: empty list\n");
		return FL_EINVAL;
	}
	/* a local-only baseline is measured on the clients' held-out samples:
	 * so is everything it is compared with */
	int local = 0;
	for (int i = 0; i < *n; i++)
		local |= cfgs[i].local_only;
	for (int i = 0; local && i < *n; i++)
		cfgs[i].fed_eval = 1;
	return FL_OK;
}

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
	struct opts o = {.clients = DEF_CLIENTS, .target = DEF_TARGET, .out = DEF_OUT,
			 .partition = DEF_PARTITION};
	srv_sim_config_default(&o.base);
	o.base.arch = DEF_MODEL;
	o.base.train.rounds = DEF_ROUNDS;
	o.base.train.fraction = DEF_FRACTION;
	o.base.train.epochs = DEF_EPOCHS;
	o.base.train.batch = DEF_BATCH;
	o.base.train.lr = (float)DEF_LR;
	o.base.threads = default_threads();
	int rc = parse_args(argc, argv, &o);
	if (rc == 2) {
		usage(stdout);
		return 0;
	}
	static struct srv_sim_config cfgs[CONFIGS_MAX];
	int n = 0;
	if (rc || make_configs(&o, cfgs, &n)) {
		fprintf(stderr, PROG ": try --help\n");
		return 2;
	}
	struct fl_partition_config pc;
	fl_partition_config_init(&pc);
	if (fl_partition_parse(o.partition, &pc)) {
		fprintf(stderr, PROG ": --%s\n" PROG ": try --help\n", fl_error_msg());
		return 2;
	}
	int need_holdout = 0;
	for (int i = 0; i < n; i++)
		need_holdout |= cfgs[i].fed_eval || cfgs[i].param == FL_PEFT_PARAM_PFEDPARA;
	pc.clients = o.clients;
	pc.seed = o.base.train.seed;
	pc.holdout = o.holdout_set ? o.holdout : need_holdout ? 0.2 : 0.0;
	pc.min_per_client = 2;
	double target = o.target / 100.0;
	double targets[NTARGETS] = {target, target - 0.06, target - 0.04, target - 0.02,
				    target + 0.02};

	struct srv_sim_data *data = NULL;
	int err = srv_sim_data_load(o.data, o.data_path, o.limit, o.test_limit, &pc, &data);
	if (err) {
		fprintf(stderr, PROG ": %s\n", fl_error_msg());
		return 1;
	}
	if ((err = fl_mkdir_p(o.out, 0))) {
		fprintf(stderr, PROG ": %s\n", fl_error_msg());
		srv_sim_data_free(data);
		return 1;
	}
	printf("fedloha-sim: %s, %d training / %d test samples, %d clients (%s), %.0f%% per "
	       "round\n",
	       o.data ? o.data : "fashion-mnist", data->train->n, data->test->n, o.clients,
	       o.partition, 100 * o.base.train.fraction);
	printf("model %s, %llu rounds, E=%d B=%d lr %g (decay %g), %s, seed %llu, %d threads, "
	       "%s\n",
	       o.base.arch, (unsigned long long)o.base.train.rounds, o.base.train.epochs, o.base.train.batch,
	       (double)o.base.train.lr, (double)o.base.train.lr_decay,
	       o.base.train.prox ? "fedprox" : srv_optim_name(o.base.train.strategy),
	       (unsigned long long)o.base.train.seed, o.base.threads,
	       o.base.secure ? "secure channel" : "--insecure (no channel)");
	if (o.base.init_path)
		printf("initial model %s\n", o.base.init_path);
	fflush(stdout);

	struct srv_sim_result *res[CONFIGS_MAX] = {0}, *done[CONFIGS_MAX] = {0};
	char failed[CONFIGS_MAX][FL_ERROR_MSG_MAX + 64];
	int ndone = 0, nfailed = 0;
	struct progress pr = {.quiet = o.quiet, .tty = isatty(2), .count = n};
	char model_dir[FL_PATH_MAX];
	rc = 0;
	for (int i = 0; i < n; i++) {
		pr.index = i;
		cfgs[i].cb = (struct srv_sim_callbacks){.ctx = &pr, .on_row = on_row};
		if (o.save_model && !cfgs[i].local_only) {
			char label[SRV_SIM_LABEL_MAX];
			snprintf(model_dir, sizeof(model_dir), "%s/%s-model", o.out,
				 srv_sim_config_label(&cfgs[i], label, sizeof(label)));
			cfgs[i].model_dir = model_dir;
		}
		pr.csv = open_live_csv(o.out, &cfgs[i]);
		err = srv_sim_run(&cfgs[i], data, &res[i]);
		if (pr.csv)
			fclose(pr.csv);
		pr.csv = NULL;
		char label[SRV_SIM_LABEL_MAX];
		srv_sim_config_label(&cfgs[i], label, sizeof(label));
		if (err) {
			/* the others still run: a diverging configuration is a result too */
			snprintf(failed[nfailed++], sizeof(failed[0]), "%s: %s", label, fl_error_msg());
			fprintf(stderr, "%s" PROG ": %s\n", pr.tty && !o.quiet ? "\n" : "",
				failed[nfailed - 1]);
			continue;
		}
		if (res[i]->client_errors)
			fprintf(stderr, PROG ": %s: %llu client errors, last: %s\n", res[i]->label,
				(unsigned long long)res[i]->client_errors, res[i]->last_client_error);
		if ((err = write_result(res[i], &cfgs[i], o.out, targets))) {
			fprintf(stderr, PROG ": %s\n", fl_error_msg());
			rc = 1;
		}
		done[ndone++] = res[i];
	}
	if (ndone) {
		srv_sim_print_table(stdout, done, ndone, targets, NTARGETS);
		srv_sim_print_channel(stdout, done, ndone);
		if ((err = write_table(done, ndone, o.out, targets, failed, nfailed))) {
			fprintf(stderr, PROG ": %s\n", fl_error_msg());
			rc = 1;
		}
	}
	print_failed(stdout, failed, nfailed);
	if (nfailed)
		rc = 1;
	if (ndone) {
		char png[FL_PATH_MAX];
		printf("\nresults: %s/ (per configuration: CSV per round, JSON summary)\n", o.out);
		err = srv_sim_plot(done, ndone, o.out, target, png, sizeof(png));
		if (!err)
			printf("plot: %s\n", png);
		else
			printf("plot: not drawn: %s\n", fl_error_msg());
	}
	for (int i = 0; i < n; i++)
		srv_sim_result_free(res[i]);
	srv_sim_data_free(data);
	return rc;
}
