/* cli_train.c - `fedloha-client train` and `fedloha-client eval`: local,
 * centralised training on a data set with any parameterisation, progress
 * per epoch, and the saved model folder (model_io.h). The data sets and
 * the --classes filter are in cli_data.c. */
#include "client_cli.h"
#include "cli_data.h"

#include "blas.h"
#include "dataset.h"
#include "errors.h"
#include "model_data.h"
#include "model_io.h"
#include "optim.h"
#include "peft_config.h"
#include "train.h"
#include "cliopt.h"

#include <jansson.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct train_opts {
	const char *model, *model_file, *param, *config, *base, *init, *targets, *data, *data_path,
		*out, *classes;
	double gamma, alpha, lr, momentum, wd, lr_decay;
	int rank, epochs, batch, threads, limit, test_limit, tucker, optim_adam, quiet;
	unsigned long long seed;
};

static void train_usage(FILE *f)
{
	fprintf(f,
		"usage: fedloha-client train [options]\n"
		"Trains a model locally (centralised) and evaluates it on the test set.\n\n"
		"model:\n"
		"  --model NAME        built-in 2nn, cnn or mlp (default cnn), sized for the data\n"
		"  --model-file FILE   any model description (fedloha-model/1 JSON,\n"
		"                      docs/MODELS.md) instead of --model\n"
		"  --param KIND        dense, fedpara, pfedpara, lowrank or loha (default dense)\n"
		"  --gamma G           rank from gamma in [0,1] (paper rule; default 0.1)\n"
		"  --rank R            explicit rank r instead of gamma\n"
		"  --alpha A           loha scale alpha (scale = alpha / r; default = r)\n"
		"  --target LIST       comma-separated modules to parameterise\n"
		"                      (default: every Linear/Conv2d but the output layer)\n"
		"  --no-tucker         convs in reshape form instead of Tucker (fedpara family)\n"
		"  --config FILE       a PEFT adapter_config.json (LoHa); overrides the above\n"
		"  --init FILE         initial weights: a PyTorch state dict (safetensors, e.g.\n"
		"                      the model.safetensors of train --out), strict as\n"
		"                      load_state_dict: every key and shape must match. dense:\n"
		"                      every weight and bias; loha: the frozen base (factors keep\n"
		"                      their PEFT init); fedpara, pfedpara, lowrank: biases and\n"
		"                      untargeted layers only (targeted layers start from scratch)\n"
		"  --base FILE         loha: frozen base weights only (safetensors, PyTorch names;\n"
		"                      extra tensors ignored); applied after --init\n"
		"data:\n"
		"  --data NAME         fashion-mnist (default), mnist, cifar10 or safetensors\n"
		"                      (a folder of train/test.safetensors, docs/DATA.md)\n"
		"  --data-path DIR     folder of the data set files (default: Debian's)\n"
		"  --limit N           use only the first N training samples\n"
		"  --test-limit N      evaluate on the first N test samples\n"
		"  --classes LIST      keep only training and test samples with these labels,\n"
		"                      e.g. 0-4 or 0,2,5-7 (the model keeps every output);\n"
		"                      --limit / --test-limit count the kept samples\n"
		"training:\n"
		"  --epochs N          (default 5)\n"
		"  --batch B           (default 32)\n"
		"  --optim sgd|adam    (default sgd)\n"
		"  --lr LR             (default 0.01 for sgd, 0.001 for adam)\n"
		"  --momentum M        sgd momentum (default 0.9)\n"
		"  --weight-decay WD   (default 0)\n"
		"  --lr-decay D        lr multiplied by D after every epoch (default 0.8)\n"
		"  --seed S            (default 1)\n"
		"  --threads T         BLAS threads (default 2)\n"
		"output:\n"
		"  --out DIR           save the trained model there (see README: model folders)\n"
		"  --quiet             no progress lines\n");
}

void cli_option_error(const char *cmd, int ch, char **argv)
{
	if (ch == ':')
		fprintf(stderr, "fedloha-client %s: option %s needs a value\n", cmd,
			argv[optind - 1]);
	else
		fprintf(stderr, "fedloha-client %s: unknown option '%s' (try --help)\n", cmd,
			argv[optind - 1]);
}

static int parse_double(const char *s, const char *flag, double lo, double hi, double *out)
{
	return fl_cliopt_report("fedloha-client", fl_cliopt_double(flag, s, lo, hi, out));
}

int cli_parse_int(const char *s, const char *flag, long lo, long hi, int *out)
{
	return fl_cliopt_report("fedloha-client", fl_cliopt_int(flag, s, lo, hi, out));
}

/* Builds the PEFT-format config from the flags (or reads --config). */
static int make_config(const struct train_opts *o, struct fl_peft_config **out)
{
	int err;
	struct fl_peft_config *c = NULL;
	if (o->config) {
		err = fl_peft_config_read(o->config, &c);
		if (err)
			return err;
		if (o->param && (err = fl_peft_param_parse(o->param, &c->parameterization)))
			goto fail;
		*out = c;
		return FL_OK;
	}
	if ((err = fl_peft_config_new(&c)))
		return err;
	if ((err = fl_peft_param_parse(o->param ? o->param : "dense", &c->parameterization)))
		goto fail;
	c->use_effective_conv2d = c->parameterization != FL_PEFT_PARAM_LOHA && o->tucker;
	if (o->rank > 0) {
		c->r = o->rank;
		c->alpha = o->alpha > 0 ? o->alpha : o->rank;
	} else if (c->parameterization == FL_PEFT_PARAM_LOHA) {
		c->r = 8;
		c->alpha = o->alpha > 0 ? o->alpha : 8;
	} else {
		c->has_gamma = 1;
		c->gamma = o->gamma;
	}
	if (o->targets) {
		size_t n = 1;
		for (const char *p = o->targets; *p; p++)
			n += *p == ',';
		c->target_modules = calloc(n, sizeof(char *));
		if (!c->target_modules) {
			err = fl_error_set(FL_ENOMEM, "out of memory");
			goto fail;
		}
		c->target_kind = FL_PEFT_SEL_LIST;
		const char *p = o->targets;
		while (*p) {
			size_t len = strcspn(p, ",");
			if (len) {
				char *s = malloc(len + 1);
				if (!s) {
					err = fl_error_set(FL_ENOMEM, "out of memory");
					goto fail;
				}
				memcpy(s, p, len);
				s[len] = '\0';
				c->target_modules[c->n_target_modules++] = s;
			}
			p += len + (p[len] == ',');
		}
	}
	*out = c;
	return FL_OK;
fail:
	fl_peft_config_free(c);
	return err;
}

static void print_model_summary(struct fl_model *m)
{
	size_t total = fl_model_param_floats(m);
	size_t train = fl_model_count_floats(m, FL_TENSOR_TRAINABLE);
	size_t glob = fl_model_count_floats(m, FL_TENSOR_GLOBAL);
	printf("model %s (%s): %zu parameters, %zu trainable, %zu transmitted\n", fl_model_arch(m),
	       fl_peft_param_name(fl_model_param(m)), total, train, glob);
	for (int i = 0; i < fl_model_layer_count(m); i++) {
		struct fl_model_layer_info li;
		fl_model_layer_info(m, i, &li);
		if (!fl_layer_kind_weight(li.kind))
			continue;
		printf("  %-6s %-8s out %d in %d k %dx%d", li.name, fl_peft_param_name(li.param),
		       li.out, li.in, li.k1, li.k2);
		if (li.param != FL_PEFT_PARAM_DENSE)
			printf("  rank %d%s scale %g", li.rank, li.tucker ? " (tucker)" : "",
			       (double)li.scale);
		printf("\n");
	}
}

static const struct option train_longopts[] = {{"model", 1, 0, 'm'},
					       {"param", 1, 0, 'p'},
					       {"gamma", 1, 0, 'g'},
					       {"rank", 1, 0, 'r'},
					       {"alpha", 1, 0, 'a'},
					       {"target", 1, 0, 'T'},
					       {"no-tucker", 0, 0, 'N'},
					       {"config", 1, 0, 'c'},
					       {"base", 1, 0, 'B'},
					       {"init", 1, 0, 'I'},
					       {"data", 1, 0, 'd'},
					       {"data-path", 1, 0, 'D'},
					       {"limit", 1, 0, 'l'},
					       {"test-limit", 1, 0, 'L'},
					       {"epochs", 1, 0, 'e'},
					       {"batch", 1, 0, 'b'},
					       {"optim", 1, 0, 'O'},
					       {"lr", 1, 0, 'R'},
					       {"momentum", 1, 0, 'M'},
					       {"weight-decay", 1, 0, 'W'},
					       {"lr-decay", 1, 0, 'y'},
					       {"seed", 1, 0, 's'},
					       {"threads", 1, 0, 't'},
					       {"out", 1, 0, 'o'},
					       {"quiet", 0, 0, 'q'},
					       {"classes", 1, 0, 'C'},
					       {"model-file", 1, 0, 'F'},
					       {"help", 0, 0, 'h'},
					       {0, 0, 0, 0}};

/* A flag that takes a string or no value; FL_ENOTFOUND when ch is not
 * one of them, FL_EINVAL when its value is bad (message printed). */
static int train_set_string(struct train_opts *o, int ch, const char *v, uint8_t *keep)
{
	enum fl_peft_param pp;
	switch (ch) {
	case 'm': o->model = v; return FL_OK;
	case 'F': o->model_file = v; return FL_OK;
	case 'p':
		o->param = v;
		if (!fl_peft_param_parse(v, &pp))
			return FL_OK;
		fprintf(stderr, "fedloha-client: --param: %s\n", fl_error_msg());
		return FL_EINVAL;
	case 'T': o->targets = v; return FL_OK;
	case 'N': o->tucker = 0; return FL_OK;
	case 'c': o->config = v; return FL_OK;
	case 'B': o->base = v; return FL_OK;
	case 'I': o->init = v; return FL_OK;
	case 'd': o->data = v; return FL_OK;
	case 'D': o->data_path = v; return FL_OK;
	case 'C': o->classes = v; return cli_classes_parse(v, keep);
	case 'O':
		if (strcmp(v, "sgd") == 0 || strcmp(v, "adam") == 0) {
			o->optim_adam = strcmp(v, "adam") == 0;
			return FL_OK;
		}
		fprintf(stderr, "fedloha-client: --optim: expected sgd or adam, got '%s'\n", v);
		return FL_EINVAL;
	case 'o': o->out = v; return FL_OK;
	case 'q': o->quiet = 1; return FL_OK;
	default: return FL_ENOTFOUND;
	}
}

/* A numeric flag; FL_ENOTFOUND when ch is not one, FL_EINVAL when its
 * value is bad. */
static int train_set_number(struct train_opts *o, int ch, const char *v)
{
	int seed = 0, bad;
	switch (ch) {
	case 'g': return parse_double(v, "--gamma", 0, 1, &o->gamma);
	case 'r': return cli_parse_int(v, "--rank", 1, 1 << 16, &o->rank);
	case 'a': return parse_double(v, "--alpha", 1e-6, 1e6, &o->alpha);
	case 'l': return cli_parse_int(v, "--limit", 1, 1 << 30, &o->limit);
	case 'L': return cli_parse_int(v, "--test-limit", 1, 1 << 30, &o->test_limit);
	case 'e': return cli_parse_int(v, "--epochs", 0, 100000, &o->epochs);
	case 'b': return cli_parse_int(v, "--batch", 1, 65536, &o->batch);
	case 'R': return parse_double(v, "--lr", 0, 100, &o->lr);
	case 'M': return parse_double(v, "--momentum", 0, 0.9999, &o->momentum);
	case 'W': return parse_double(v, "--weight-decay", 0, 1, &o->wd);
	case 'y': return parse_double(v, "--lr-decay", 0, 1, &o->lr_decay);
	case 's':
		bad = cli_parse_int(v, "--seed", 0, 2147483647, &seed);
		o->seed = (unsigned long long)seed;
		return bad;
	case 't': return cli_parse_int(v, "--threads", 1, 256, &o->threads);
	default: return FL_ENOTFOUND;
	}
}

/* FL_OK: go on; 1: --help printed; FL_EINVAL: a bad flag (message
 * printed). */
static int parse_train_args(int argc, char **argv, struct train_opts *o, uint8_t *keep)
{
	int ch, bad = 0;
	optind = 1;
	opterr = 0;
	while (!bad && (ch = getopt_long(argc, argv, ":h", train_longopts, NULL)) != -1) {
		if (ch == 'h') {
			train_usage(stdout);
			return 1;
		}
		int r = train_set_string(o, ch, optarg, keep);
		if (r == FL_ENOTFOUND)
			r = train_set_number(o, ch, optarg);
		if (r == FL_ENOTFOUND) {
			cli_option_error("train", ch, argv);
			r = FL_EINVAL;
		}
		bad = r != FL_OK;
	}
	if (!bad && optind < argc) {
		fprintf(stderr, "fedloha-client train: unexpected argument '%s'\n", argv[optind]);
		bad = 1;
	}
	if (bad)
		return FL_EINVAL;
	if (!o->model_file && !fl_model_desc_builtin_valid(o->model)) {
		fprintf(stderr,
			"fedloha-client: --model: unknown model '%s' (2nn, cnn, mlp; "
			"--model-file for any other)\n",
			o->model);
		return FL_EINVAL;
	}
	return FL_OK;
}

/* What cli_train_main builds and frees. */
struct train_run {
	struct fl_peft_config *cfg;
	struct fl_dataset *train, *test;
	struct fl_model *m;
	struct fl_trainer *tr;
	struct fl_optim_config oc;
};

/* The config, the data, the model and its trainer; the error is set. */
static int train_setup(const struct train_opts *o, const uint8_t *keep, struct train_run *r)
{
	int err = make_config(o, &r->cfg);
	if (!err && r->cfg->parameterization == FL_PEFT_PARAM_LOHA && !o->base && !o->init)
		fprintf(stderr,
			"fedloha-client: warning: loha without --init or --base adapts a randomly "
			"initialised base\n");
	if (!err)
		err = cli_data_load(o->data, o->data_path, o->classes ? keep : NULL, o->limit,
				    o->test_limit, &r->train, &r->test);
	if (!err)
		err = fl_model_new_for_data(o->model, o->model_file, r->train, r->cfg, o->seed,
					    o->batch, &r->m);
	if (!err && (err = fl_model_check_data(r->m, r->test)))
		err = fl_error_set(err, "test split: %s", fl_error_msg());
	if (!err && o->init && (err = fl_model_load_init(r->m, o->init)))
		err = fl_error_set(err, "--init %s", fl_error_msg());
	if (!err && o->base)
		err = fl_model_load_base(r->m, o->base);
	fl_optim_config_default(&r->oc, o->optim_adam ? FL_OPTIM_ADAM : FL_OPTIM_SGD);
	r->oc.lr = (float)(o->lr >= 0 ? o->lr : (o->optim_adam ? 0.001 : 0.01));
	if (!o->optim_adam)
		r->oc.momentum = (float)o->momentum;
	r->oc.weight_decay = (float)o->wd;
	if (!err)
		err = fl_trainer_new(r->m, &r->oc, o->batch, &r->tr);
	return err;
}

/* The epochs, each followed by a test evaluation (just the evaluation
 * with 0 epochs); 1 with a message printed on failure. */
static int train_epochs(const struct train_opts *o, struct train_run *r, struct fl_train_stats *ev,
			double *total_s)
{
	struct fl_rng rng;
	fl_rng_seed_stream(&rng, o->seed, 0x7261696eULL);
	struct fl_train_stats st = {0};
	*total_s = 0;
	for (int e = 0; e < o->epochs; e++) {
		fl_optim_set_lr(fl_trainer_optim(r->tr),
				(float)fl_optim_round_lr(r->oc.lr, o->lr_decay, (uint64_t)e));
		int err = fl_trainer_epoch(r->tr, r->train, NULL, r->train->n, &rng, &st);
		if (!err)
			err = fl_trainer_evaluate(r->tr, r->test, NULL, r->test->n, ev);
		if (err) {
			fprintf(stderr, "fedloha-client: epoch %d: %s\n", e + 1, fl_error_msg());
			return 1;
		}
		*total_s += st.seconds;
		if (!o->quiet)
			printf("epoch %d/%d  loss %.4f  train-acc %.2f%%  test-loss %.4f  test-acc %.2f%%  "
			       "%.0f samples/s  %.1fs\n",
			       e + 1, o->epochs, st.loss, 100 * st.accuracy, ev->loss,
			       100 * ev->accuracy,
			       st.samples / (st.seconds > 0 ? st.seconds : 1e-9), st.seconds);
		fflush(stdout);
	}
	if (o->epochs == 0 && fl_trainer_evaluate(r->tr, r->test, NULL, r->test->n, ev)) {
		fprintf(stderr, "fedloha-client: %s\n", fl_error_msg());
		return 1;
	}
	return 0;
}

/* --out: the model folder with what it was trained on and how it scored. */
static int train_save(const struct train_opts *o, const struct train_run *r,
		      const struct fl_train_stats *ev)
{
	char meta[1024], norm[256];
	cli_norm_json(r->train, norm, sizeof(norm));
	snprintf(
		meta, sizeof(meta),
		"{\"data\": \"%s\", \"classes\": \"%s\", \"epochs\": %d, \"seed\": %llu, \"test_accuracy\": %.6f, "
		"\"test_loss\": %.6f, \"test_samples\": %d, \"train_samples\": %d, \"norm\": %s}",
		o->data ? o->data : "fashion-mnist", o->classes ? o->classes : "all", o->epochs,
		o->seed, ev->accuracy, ev->loss, r->test->n, r->train->n, norm);
	if (fl_model_save(r->m, o->out, meta)) {
		fprintf(stderr, "fedloha-client: %s\n", fl_error_msg());
		return 1;
	}
	printf("saved %s\n", o->out);
	return 0;
}

int cli_train_main(int argc, char **argv)
{
	struct train_opts o = {.model = "cnn",
			       .gamma = 0.1,
			       .lr = -1,
			       .momentum = 0.9,
			       .lr_decay = 0.8,
			       .epochs = 5,
			       .batch = 32,
			       .threads = 2,
			       .tucker = 1,
			       .seed = 1};
	uint8_t keep[CLI_LABELS_MAX];
	int rc = parse_train_args(argc, argv, &o, keep);
	if (rc)
		return rc == 1 ? 0 : 2;
	fl_blas_set_threads(o.threads);
	struct train_run r = {0};
	struct fl_train_stats ev = {0};
	double total_s = 0;
	rc = 1;
	if (train_setup(&o, keep, &r)) {
		fprintf(stderr, "fedloha-client: %s\n", fl_error_msg());
		goto out;
	}
	if (!o.quiet)
		print_model_summary(r.m);
	if (train_epochs(&o, &r, &ev, &total_s))
		goto out;
	printf("final test-acc %.2f%%  test-loss %.4f  train %.1fs  %.0f samples/s\n",
	       100 * ev.accuracy, ev.loss, total_s,
	       total_s > 0 ? (double)r.train->n * o.epochs / total_s : 0.0);
	if (o.out && train_save(&o, &r, &ev))
		goto out;
	rc = 0;
out:
	fl_trainer_free(r.tr);
	fl_model_free(r.m);
	fl_dataset_free(r.train);
	fl_dataset_free(r.test);
	fl_peft_config_free(r.cfg);
	return rc;
}
