/* sim_args.c - fedloha-sim's flags (sim_args.h): the built-in default,
 * --help, parsing (the training flags it shares with fedloha-server go
 * through engine_opts.h) and the list of configurations to compare. It
 * does not load data or run anything. */
#include "sim_args.h"

#include "cliopt.h"
#include "engine_opts.h"
#include "errors.h"
#include "model.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROG SRV_SIM_PROG
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

/* Long options only; the value of `val` picks the case below. The training
 * flags fedloha-server shares (engine_opts.h) all take O_TRAIN. */
enum {
	O_MODEL = 256,
	O_MODEL_FILE,
	O_PARAM,
	O_COMPARE,
	O_GAMMA,
	O_RANK,
	O_NO_TUCKER,
	O_BASE,
	O_CLIENTS,
	O_FRACTION,
	O_ROUNDS,
	O_PARTITION,
	O_HOLDOUT,
	O_STRATEGY,
	O_DTYPE,
	O_DROPOUT,
	O_MIN_REPORT,
	O_FED_EVAL,
	O_EPOCHS,
	O_TRAIN,
	O_DATA,
	O_DATA_PATH,
	O_LIMIT,
	O_TEST_LIMIT,
	O_SEED,
	O_THREADS,
	O_TARGET,
	O_OUT,
	O_SAVE_MODEL,
	O_QUIET,
	O_INSECURE,
	O_HELP,
	O_INIT,
	O_MODULES_TO_SAVE,
	O_TARGET_MODULES,
	O_MPI,
};

static const struct option longopts[] = {{"model", 1, 0, O_MODEL},
					 {"model-file", 1, 0, O_MODEL_FILE},
					 {"param", 1, 0, O_PARAM},
					 {"compare", 1, 0, O_COMPARE},
					 {"gamma", 1, 0, O_GAMMA},
					 {"rank", 1, 0, O_RANK},
					 {"no-tucker", 0, 0, O_NO_TUCKER},
					 {"base", 1, 0, O_BASE},
					 {"clients", 1, 0, O_CLIENTS},
					 {"fraction", 1, 0, O_FRACTION},
					 {"rounds", 1, 0, O_ROUNDS},
					 {"partition", 1, 0, O_PARTITION},
					 {"holdout", 1, 0, O_HOLDOUT},
					 {"strategy", 1, 0, O_STRATEGY},
					 {"prox-mu", 1, 0, O_TRAIN},
					 {"dtype", 1, 0, O_DTYPE},
					 {"dropout", 1, 0, O_DROPOUT},
					 {"min-report", 1, 0, O_MIN_REPORT},
					 {"fed-eval", 0, 0, O_FED_EVAL},
					 {"epochs", 1, 0, O_EPOCHS},
					 {"batch", 1, 0, O_TRAIN},
					 {"lr", 1, 0, O_TRAIN},
					 {"lr-decay", 1, 0, O_TRAIN},
					 {"momentum", 1, 0, O_TRAIN},
					 {"weight-decay", 1, 0, O_TRAIN},
					 {"data", 1, 0, O_DATA},
					 {"data-path", 1, 0, O_DATA_PATH},
					 {"limit", 1, 0, O_LIMIT},
					 {"test-limit", 1, 0, O_TEST_LIMIT},
					 {"seed", 1, 0, O_SEED},
					 {"threads", 1, 0, O_THREADS},
					 {"target", 1, 0, O_TARGET},
					 {"out", 1, 0, O_OUT},
					 {"save-model", 0, 0, O_SAVE_MODEL},
					 {"quiet", 0, 0, O_QUIET},
					 {"insecure", 0, 0, O_INSECURE},
					 {"help", 0, 0, O_HELP},
					 {"init", 1, 0, O_INIT},
					 {"modules-to-save", 1, 0, O_MODULES_TO_SAVE},
					 {"server-lr", 1, 0, O_TRAIN},
					 {"server-beta1", 1, 0, O_TRAIN},
					 {"server-beta2", 1, 0, O_TRAIN},
					 {"server-tau", 1, 0, O_TRAIN},
					 {"target-modules", 1, 0, O_TARGET_MODULES},
					 {"mpi", 0, 0, O_MPI},
					 {0, 0, 0, 0}};

/* The online CPUs (at most 8), shared by the ranks of an MPI job that run
 * on this machine (OMPI_COMM_WORLD_LOCAL_SIZE). */
static int default_threads(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	const char *local = srv_sim_mpi_size() > 1 ? getenv("OMPI_COMM_WORLD_LOCAL_SIZE") : NULL;
	long ranks = local ? strtol(local, NULL, 10) : 1;
	if (ranks > 1)
		n /= ranks;
	return n < 1 ? 1 : n > 8 ? 8 : (int)n;
}

void srv_sim_opts_init(struct srv_sim_opts *o)
{
	*o = (struct srv_sim_opts){.clients = DEF_CLIENTS,
				   .target = DEF_TARGET,
				   .out = DEF_OUT,
				   .partition = DEF_PARTITION};
	srv_sim_config_default(&o->base);
	o->base.arch = DEF_MODEL;
	o->base.train.rounds = DEF_ROUNDS;
	o->base.train.fraction = DEF_FRACTION;
	o->base.train.epochs = DEF_EPOCHS;
	o->base.train.batch = DEF_BATCH;
	o->base.train.lr = (float)DEF_LR;
	o->base.threads = default_threads();
}

/* What the simulator does and its built-in default. */
static void usage_intro(FILE *f)
{
	fprintf(f,
		"usage: " PROG " [options]\n"
		"Simulates federated training on one machine: N clients in one process, driven by\n"
		"the real round engine and client sessions, every message encoded as on the wire.\n"
		"Without options it runs the built-in default (make run): Fashion-MNIST, "
		"%s over\n"
		"%d clients, %.0f%% per round, %s, %d rounds of E=%d B=%d lr %g, comparing\n"
		"%s (gamma 0), target accuracy fixed in advance at %.0f%%.\n\n",
		DEF_PARTITION, DEF_CLIENTS, 100 * DEF_FRACTION, DEF_MODEL, DEF_ROUNDS, DEF_EPOCHS,
		DEF_BATCH, DEF_LR, DEF_COMPARE, DEF_TARGET);
}

/* The model flags. */
static void usage_model(FILE *f)
{
	fprintf(f,
		"model:\n"
		"  --model NAME        built-in 2nn, cnn or mlp (default %s), sized for the data\n"
		"  --model-file FILE   any model description (fedloha-model/1 JSON,\n"
		"                      docs/MODELS.md) instead of --model\n"
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
		"                      target_modules: a name or its last dotted parts, e.g.\n"
		"                      q_proj,v_proj; all-linear = every Linear but the output\n"
		"                      layer; default: every weight layer but the output\n"
		"                      layer); the others stay dense and travel in full\n"
		"  --base FILE         loha: frozen base weights (safetensors, PyTorch names)\n"
		"  --init FILE         initial model of the server and every client (a PyTorch\n"
		"                      state dict, safetensors F32/F16/BF16, e.g. the\n"
		"                      model.safetensors of fedloha-client train --out), strict\n"
		"                      as load_state_dict: every key and shape must match.\n"
		"                      dense loads every weight and bias; loha the frozen base\n"
		"                      and the --modules-to-save layers (a --base file replaces\n"
		"                      the base; the factors keep their PEFT init); dense and\n"
		"                      loha only\n"
		"  --modules-to-save LIST  loha: layers trained in full and sent, as PEFT's\n"
		"                      modules_to_save (e.g. fc2, so a new task's head learns)\n",
		DEF_MODEL, DEF_COMPARE);
}

/* The federation flags. */
static void usage_federation(FILE *f)
{
	fprintf(f,
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
		"  --server-tau T      adaptivity of the adaptive strategies (default 1e-3)\n",
		DEF_CLIENTS, DEF_FRACTION, DEF_ROUNDS, DEF_PARTITION);
}

/* Local training, data, run and output flags. */
static void usage_training_and_output(FILE *f)
{
	fprintf(f,
		"local training:\n"
		"  --epochs E          (default %d)\n"
		"  --batch B           (default %d)\n"
		"  --lr LR             SGD learning rate (default %g)\n"
		"  --lr-decay D        lr multiplied by D every round (default 1)\n"
		"  --momentum M        (default 0)\n"
		"  --weight-decay WD   (default 0)\n"
		"data:\n"
		"  --data NAME         fashion-mnist (default), mnist, cifar10 or safetensors\n"
		"                      (a folder of train/test.safetensors, docs/DATA.md)\n"
		"  --data-path DIR     folder of the data files (default: Debian's Fashion-MNIST)\n"
		"  --limit N           use the first N training samples\n"
		"  --test-limit N      evaluate on the first N test samples\n"
		"run and output:\n"
		"  --seed S            (default 1); results depend only on the seed\n"
		"  --threads T         worker threads (default: online CPUs, at most 8; under\n"
		"                      MPI per rank, the CPUs shared by this machine's ranks)\n"
		"  --target ACC        target accuracy in %% for the table (default %.0f); the\n"
		"                      table also shows ACC-6, -4, -2 and +2\n"
		"  --out DIR           results folder (default ./%s): <config>.csv,\n"
		"                      <config>.json, accuracy_vs_mb.gp/.png, table.txt\n"
		"  --save-model        also save each final global model in DIR/<config>-model\n"
		"  --quiet             no progress line\n"
		"  --insecure          plain in-memory connections instead of the secure channel\n"
		"                      (every connection is encrypted and authenticated by\n"
		"                      default; frame bytes and results are the same either way)\n"
		"  --mpi               join an MPI job even when the environment does not show\n"
		"                      mpirun (under mpirun -np K it is joined anyway): rank 0\n"
		"                      runs the engine, client i trains on rank i %% K with\n"
		"                      --threads T per rank; results as in one process\n"
		"  --help\n",
		DEF_EPOCHS, DEF_BATCH, DEF_LR, DEF_TARGET, DEF_OUT);
}

void srv_sim_opts_usage(FILE *f)
{
	usage_intro(f);
	usage_model(f);
	usage_federation(f);
	usage_training_and_output(f);
}

static int parse_double(const char *s, const char *flag, double lo, double hi, double *out)
{
	return fl_cliopt_report(PROG, fl_cliopt_double(flag, s, lo, hi, out));
}

static int parse_int(const char *s, const char *flag, long lo, long hi, int *out)
{
	return fl_cliopt_report(PROG, fl_cliopt_int(flag, s, lo, hi, out));
}

static int parse_u64(const char *s, const char *flag, long lo, long hi, uint64_t *out)
{
	int v;
	int bad = parse_int(s, flag, lo, hi, &v);
	*out = (uint64_t)v;
	return bad;
}

/* A flag that names a string: stored as given. FL_ENOTFOUND when ch is
 * not one. */
static int set_string(struct srv_sim_opts *o, int ch, const char *v)
{
	struct srv_sim_config *c = &o->base;
	switch (ch) {
	case O_MODEL: c->arch = v; break;
	case O_MODEL_FILE: o->model_file = v; break;
	case O_PARAM: o->param = v; break;
	case O_COMPARE: o->compare = v; break;
	case O_TARGET_MODULES: c->targets = v; break;
	case O_BASE: c->base_path = v; break;
	case O_INIT: c->init_path = v; break;
	case O_MODULES_TO_SAVE: c->modules_to_save = v; break;
	case O_PARTITION: o->partition = v; break;
	case O_STRATEGY: o->strategy = v; break;
	case O_DATA: o->data = v; break;
	case O_DATA_PATH: o->data_path = v; break;
	case O_OUT: o->out = v; break;
	default: return FL_ENOTFOUND;
	}
	return FL_OK;
}

/* A switch without a value. FL_ENOTFOUND when ch is not one. */
static int set_switch(struct srv_sim_opts *o, int ch)
{
	switch (ch) {
	case O_NO_TUCKER: o->base.tucker = 0; break;
	case O_FED_EVAL: o->base.fed_eval = 1; break;
	case O_SAVE_MODEL: o->save_model = 1; break;
	case O_QUIET: o->quiet = 1; break;
	case O_INSECURE: o->base.secure = 0; break;
	case O_MPI: break; /* taken by main before the flags (srv_sim_mpi_init) */
	default: return FL_ENOTFOUND;
	}
	return FL_OK;
}

/* A numeric flag of the simulator's own (ranges of its own); FL_EINVAL
 * (printed) on a bad value, FL_ENOTFOUND when ch is not one. */
static int set_number(struct srv_sim_opts *o, int ch, const char *v)
{
	struct srv_sim_config *c = &o->base;
	struct srv_train_opts *t = &c->train;
	switch (ch) {
	case O_GAMMA: return parse_double(v, "--gamma", 0, 1, &c->gamma);
	case O_RANK: return parse_int(v, "--rank", 1, 4096, &c->rank);
	case O_CLIENTS: return parse_int(v, "--clients", 1, 100000, &o->clients);
	case O_FRACTION: return parse_double(v, "--fraction", 1e-9, 1, &t->fraction);
	case O_ROUNDS: return parse_u64(v, "--rounds", 1, 1000000, &t->rounds);
	case O_HOLDOUT:
		o->holdout_set = 1;
		return parse_double(v, "--holdout", 0, 0.9, &o->holdout);
	case O_DROPOUT: return parse_double(v, "--dropout", 0, 0.99, &c->dropout);
	case O_MIN_REPORT: return parse_int(v, "--min-report", 1, 100000, &t->min_report);
	case O_EPOCHS: return parse_int(v, "--epochs", 1, 10000, &t->epochs);
	case O_LIMIT: return parse_int(v, "--limit", 1, 1 << 30, &o->limit);
	case O_TEST_LIMIT: return parse_int(v, "--test-limit", 1, 1 << 30, &o->test_limit);
	case O_SEED: return parse_u64(v, "--seed", 0, 2147483647, &t->seed);
	case O_THREADS: return parse_int(v, "--threads", 1, SRV_SIM_THREADS_MAX, &c->threads);
	case O_TARGET: return parse_double(v, "--target", 0, 100, &o->target);
	default: return FL_ENOTFOUND;
	}
}

/* One parsed option; FL_EINVAL when it was bad (message printed). */
static int set_option(struct srv_sim_opts *o, int ch, const char *name, const char *v,
		      const char *arg)
{
	if (ch == O_TRAIN) {
		if (srv_train_opts_set(&o->base.train, name, v) == FL_OK)
			return FL_OK;
		fprintf(stderr, PROG ": %s\n", fl_error_msg());
		return FL_EINVAL;
	}
	if (ch == O_DTYPE) {
		if (!fl_wire_dtype_parse(v, &o->base.train.dtype))
			return FL_OK;
		fprintf(stderr, PROG ": --dtype: expected f32, f16, bf16 or int8, got '%s'\n", v);
		return FL_EINVAL;
	}
	int err = set_string(o, ch, v);
	if (err == FL_ENOTFOUND)
		err = set_switch(o, ch);
	if (err == FL_ENOTFOUND)
		err = set_number(o, ch, v);
	if (err != FL_ENOTFOUND)
		return err;
	if (ch == ':')
		fprintf(stderr, PROG ": %s needs a value\n", arg);
	else
		fprintf(stderr, PROG ": unknown option '%s'\n", arg);
	return FL_EINVAL;
}

/* What can only be checked once every flag is in. */
static int check_options(int argc, char **argv, struct srv_sim_opts *o)
{
	struct srv_sim_config *c = &o->base;
	if (optind < argc) {
		fprintf(stderr, PROG ": unexpected argument '%s'\n", argv[optind]);
		return FL_EINVAL;
	}
	if (!o->model_file && !fl_model_desc_builtin_valid(c->arch)) {
		fprintf(stderr, PROG ": --model: unknown model '%s' (2nn, cnn or mlp)\n", c->arch);
		return FL_EINVAL;
	}
	if (o->strategy && srv_train_opts_strategy(&c->train, o->strategy)) {
		fprintf(stderr, PROG ": --strategy: %s\n", fl_error_msg());
		return FL_EINVAL;
	}
	if (srv_train_opts_check(&c->train)) {
		fprintf(stderr, PROG ": %s\n", fl_error_msg());
		return FL_EINVAL;
	}
	return FL_OK;
}

int srv_sim_opts_parse(int argc, char **argv, struct srv_sim_opts *o)
{
	int bad = 0;
	optind = 1;
	opterr = 0;
	for (;;) {
		int prev = optind, idx = -1, ch = getopt_long(argc, argv, ":", longopts, &idx);
		if (ch == -1)
			break;
		if (ch == O_HELP)
			return 2;
		bad |= set_option(o, ch, idx >= 0 ? longopts[idx].name : "", optarg, argv[prev]) !=
		       FL_OK;
	}
	return bad ? FL_EINVAL : check_options(argc, argv, o);
}

/* One --compare item ("KIND[:DTYPE]", "local", "local-KIND") over the
 * base configuration already in c; item is cut at its colon. */
static int config_from_item(char *item, struct srv_sim_config *c)
{
	char *colon = strchr(item, ':');
	if (colon) {
		*colon = '\0';
		if (fl_wire_dtype_parse(colon + 1, &c->train.dtype)) {
			fprintf(stderr,
				PROG ": --compare: '%s': dtype must be f32, f16, bf16 or "
				     "int8\n",
				colon + 1);
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
		fprintf(stderr,
			PROG ": unknown parameterisation '%s' (dense, fedpara, "
			     "pfedpara, lowrank, loha, local or local-KIND)\n",
			kind);
		return FL_EINVAL;
	}
	if (c->local_only &&
	    (colon || (c->param != FL_PEFT_PARAM_DENSE && c->param != FL_PEFT_PARAM_FEDPARA &&
		       c->param != FL_PEFT_PARAM_LOWRANK))) {
		fprintf(stderr,
			PROG ": '%s': local-only training takes dense, fedpara or "
			     "lowrank and no wire dtype\n",
			item);
		return FL_EINVAL;
	}
	return FL_OK;
}

/* What the item's configuration allows of --init and --base. */
static int check_init(const char *item, struct srv_sim_config *c)
{
	if (c->local_only && (c->init_path || c->base_path)) {
		fprintf(stderr,
			PROG ": '%s': local-only training starts from the seeded "
			     "model (no --init or --base)\n",
			item);
		return FL_EINVAL;
	}
	if (c->init_path && c->param != FL_PEFT_PARAM_DENSE && c->param != FL_PEFT_PARAM_LOHA) {
		fprintf(stderr, PROG ": --init works with dense and loha, not %s\n", item);
		return FL_EINVAL;
	}
	if (c->init_path && c->param == FL_PEFT_PARAM_LOHA && !c->base_path)
		c->base_path = c->init_path; /* the pretrained model is the frozen base */
	return FL_OK;
}

/* FL_EINVAL (message printed) when cfgs[n]'s label is one of
 * cfgs[0..n-1]'s. */
static int label_taken(const struct srv_sim_config *cfgs, int n)
{
	char label[SRV_SIM_LABEL_MAX], other[SRV_SIM_LABEL_MAX];
	srv_sim_config_label(&cfgs[n], label, sizeof(label));
	for (int i = 0; i < n; i++) {
		if (!strcmp(label, srv_sim_config_label(&cfgs[i], other, sizeof(other)))) {
			fprintf(stderr, PROG ": --compare: '%s' given twice\n", label);
			return FL_EINVAL;
		}
	}
	return FL_OK;
}

int srv_sim_opts_configs(const struct srv_sim_opts *o, struct srv_sim_config *cfgs, int *n)
{
	const char *list = o->compare ? o->compare : o->param ? o->param : DEF_COMPARE;
	if (o->compare && o->param) {
		fprintf(stderr, PROG ": give either --param or --compare\n");
		return FL_EINVAL;
	}
	*n = 0;
	for (const char *p = list; *p;) {
		size_t len = strcspn(p, ",");
		char item[64];
		if (len == 0 || len >= sizeof(item)) {
			fprintf(stderr, PROG ": --compare: bad item in '%s'\n", list);
			return FL_EINVAL;
		}
		if (*n == SRV_SIM_CONFIGS_MAX) {
			fprintf(stderr, PROG ": --compare: at most %d configurations\n",
				SRV_SIM_CONFIGS_MAX);
			return FL_EINVAL;
		}
		memcpy(item, p, len);
		item[len] = '\0';
		p += len + (p[len] == ',');
		cfgs[*n] = o->base;
		if (config_from_item(item, &cfgs[*n]) || check_init(item, &cfgs[*n]) ||
		    label_taken(cfgs, *n))
			return FL_EINVAL;
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
