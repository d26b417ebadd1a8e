/* cli_train.c - `fedloha-client train` and `fedloha-client eval`: local,
 * centralised training on a data set with any parameterisation, progress
 * per epoch, and the saved model folder (model_io.h). */
#include "client_cli.h"

#include "blas.h"
#include "dataset.h"
#include "errors.h"
#include "fsutil.h"
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

#define LABELS_MAX 256 /* labels are bytes */

struct train_opts {
	const char *model, *param, *config, *base, *targets, *data, *data_path, *out, *classes;
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
		"  --model NAME        2nn, cnn or mlp (default cnn)\n"
		"  --param KIND        dense, fedpara, pfedpara, lowrank or loha (default dense)\n"
		"  --gamma G           rank from gamma in [0,1] (paper rule; default 0.1)\n"
		"  --rank R            explicit rank r instead of gamma\n"
		"  --alpha A           loha scale alpha (scale = alpha / r; default = r)\n"
		"  --target LIST       comma-separated modules to parameterise\n"
		"                      (default: every Linear/Conv2d but the output layer)\n"
		"  --no-tucker         convs in reshape form instead of Tucker (fedpara family)\n"
		"  --config FILE       a PEFT adapter_config.json (LoHa); overrides the above\n"
		"  --base FILE         frozen base weights (safetensors, PyTorch names) for loha\n"
		"data:\n"
		"  --data NAME         fashion-mnist (default), mnist or cifar10\n"
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

/* One line for a getopt failure (opterr = 0, optstring starting with ':'). */
static void option_error(const char *cmd, int ch, char **argv)
{
	if (ch == ':')
		fprintf(stderr, "fedloha-client %s: option %s needs a value\n", cmd, argv[optind - 1]);
	else
		fprintf(stderr, "fedloha-client %s: unknown option '%s' (try --help)\n", cmd,
			argv[optind - 1]);
}

static int parse_double(const char *s, const char *flag, double lo, double hi, double *out)
{
	if (fl_cliopt_double(flag, s, lo, hi, out)) {
		fprintf(stderr, "fedloha-client: %s\n", fl_error_msg());
		return FL_EINVAL;
	}
	return FL_OK;
}

static int parse_int(const char *s, const char *flag, long lo, long hi, int *out)
{
	if (fl_cliopt_int(flag, s, lo, hi, out)) {
		fprintf(stderr, "fedloha-client: %s\n", fl_error_msg());
		return FL_EINVAL;
	}
	return FL_OK;
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

/* "0-4" or "0,2,5-7" into keep[label] = 1; -1 with a message on stderr for
 * an empty, malformed, reversed or out-of-range item. */
static int parse_classes(const char *s, uint8_t keep[LABELS_MAX])
{
	memset(keep, 0, LABELS_MAX);
	const char *p = s;
	for (;;) {
		long v[2];
		int nv = 0;
		for (;;) {
			if (*p < '0' || *p > '9')
				goto bad;
			long x = 0;
			while (*p >= '0' && *p <= '9' && x < LABELS_MAX)
				x = 10 * x + (*p++ - '0');
			if (x >= LABELS_MAX) {
				fprintf(stderr, "fedloha-client: --classes: label out of range in '%s' "
						"(labels are 0..%d)\n", s, LABELS_MAX - 1);
				return FL_EINVAL;
			}
			v[nv++] = x;
			if (nv == 2 || *p != '-')
				break;
			p++;
		}
		if (nv == 1)
			v[1] = v[0];
		if (v[1] < v[0]) {
			fprintf(stderr, "fedloha-client: --classes: reversed range %ld-%ld in '%s'\n",
				v[0], v[1], s);
			return FL_EINVAL;
		}
		for (long x = v[0]; x <= v[1]; x++)
			keep[x] = 1;
		if (*p == '\0')
			return FL_OK;
		if (*p++ != ',')
			goto bad;
	}
bad:
	fprintf(stderr, "fedloha-client: --classes: expected labels like 0-4 or 0,2,5-7, got '%s'\n",
		s);
	return FL_EINVAL;
}

/* Replaces *ds by the samples whose label keep[] marks (same order). */
static int keep_classes(struct fl_dataset **ds, const uint8_t *keep, const char *what)
{
	struct fl_dataset *d = *ds;
	for (int c = d->classes; c < LABELS_MAX; c++)
		if (keep[c])
			return fl_error_set(FL_EINVAL, "--classes: label %d, but the %s set has %d "
					    "classes", c, what, d->classes);
	int *idx = malloc((size_t)(d->n ? d->n : 1) * sizeof(int)), n = 0;
	if (!idx)
		return fl_error_set(FL_ENOMEM, "out of memory");
	for (int i = 0; i < d->n; i++)
		if (keep[d->labels[i]])
			idx[n++] = i;
	int err = FL_OK;
	struct fl_dataset *s = NULL;
	if (n == 0)
		err = fl_error_set(FL_EINVAL, "--classes: no %s sample has one of these labels", what);
	else
		err = fl_dataset_subset(d, idx, n, &s);
	free(idx);
	if (!err) {
		fl_dataset_free(d);
		*ds = s;
	}
	return err;
}

/* keep: the labels to keep (NULL = all), before the limits apply. */
static int load_data(const char *name, const char *path, const uint8_t *keep, int limit,
		     int test_limit, struct fl_dataset **train, struct fl_dataset **test)
{
	*train = *test = NULL;
	int err = fl_dataset_load(name, path, 1, train);
	if (!err)
		err = fl_dataset_load(name, path, 0, test);
	if (!err && keep)
		err = keep_classes(train, keep, "training");
	if (!err && keep)
		err = keep_classes(test, keep, "test");
	if (!err && limit > 0 && limit < (*train)->n) {
		struct fl_dataset *s;
		err = fl_dataset_subset(*train, NULL, limit, &s);
		if (!err) {
			fl_dataset_free(*train);
			*train = s;
		}
	}
	if (!err && test_limit > 0 && test_limit < (*test)->n) {
		struct fl_dataset *s;
		err = fl_dataset_subset(*test, NULL, test_limit, &s);
		if (!err) {
			fl_dataset_free(*test);
			*test = s;
		}
	}
	if (!err)
		err = fl_dataset_compute_norm(*train);
	if (!err)
		err = fl_dataset_copy_norm(*test, *train);
	return err;
}

/* {"mean": [...], "std": [...]} of the training set, %.9g so floats round-trip. */
static void norm_json(const struct fl_dataset *ds, char *buf, size_t cap)
{
	size_t n = 0;
	n += (size_t)snprintf(buf + n, cap - n, "{\"mean\": [");
	for (int c = 0; c < ds->c && n < cap; c++)
		n += (size_t)snprintf(buf + n, cap - n, "%s%.9g", c ? ", " : "", (double)ds->mean[c]);
	if (n < cap)
		n += (size_t)snprintf(buf + n, cap - n, "], \"std\": [");
	for (int c = 0; c < ds->c && n < cap; c++)
		n += (size_t)snprintf(buf + n, cap - n, "%s%.9g", c ? ", " : "", (double)ds->std[c]);
	if (n < cap)
		snprintf(buf + n, cap - n, "]}");
}

/* The training-set statistics saved with a model (meta.norm), if any. */
static int saved_norm(const char *dir, int channels, float *mean, float *std)
{
	char path[FL_PATH_MAX];
	snprintf(path, sizeof(path), "%s/fedloha.json", dir);
	json_error_t je;
	json_t *root = json_load_file(path, 0, &je);
	if (!root)
		return 0;
	json_t *norm = json_object_get(json_object_get(root, "meta"), "norm");
	json_t *jm = json_object_get(norm, "mean"), *js = json_object_get(norm, "std");
	int ok = json_is_array(jm) && json_is_array(js) && (int)json_array_size(jm) == channels &&
		 (int)json_array_size(js) == channels;
	for (int c = 0; ok && c < channels; c++) {
		json_t *a = json_array_get(jm, (size_t)c), *b = json_array_get(js, (size_t)c);
		ok = json_is_number(a) && json_is_number(b);
		if (ok) {
			mean[c] = (float)json_number_value(a);
			std[c] = (float)json_number_value(b);
		}
	}
	json_decref(root);
	return ok;
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
		if (li.kind != FL_LAYER_LINEAR && li.kind != FL_LAYER_CONV2D)
			continue;
		printf("  %-6s %-8s out %d in %d k %dx%d", li.name, fl_peft_param_name(li.param),
		       li.out, li.in, li.k1, li.k2);
		if (li.param != FL_PEFT_PARAM_DENSE)
			printf("  rank %d%s scale %g", li.rank, li.tucker ? " (tucker)" : "",
			       (double)li.scale);
		printf("\n");
	}
}

int cli_train_main(int argc, char **argv)
{
	struct train_opts o = {.model = "cnn", .gamma = 0.1, .lr = -1, .momentum = 0.9,
			       .lr_decay = 0.8, .epochs = 5, .batch = 32, .threads = 2, .tucker = 1,
			       .seed = 1};
	static const struct option longopts[] = {
		{"model", 1, 0, 'm'},        {"param", 1, 0, 'p'},     {"gamma", 1, 0, 'g'},
		{"rank", 1, 0, 'r'},         {"alpha", 1, 0, 'a'},     {"target", 1, 0, 'T'},
		{"no-tucker", 0, 0, 'N'},    {"config", 1, 0, 'c'},    {"base", 1, 0, 'B'},
		{"data", 1, 0, 'd'},         {"data-path", 1, 0, 'D'}, {"limit", 1, 0, 'l'},
		{"test-limit", 1, 0, 'L'},   {"epochs", 1, 0, 'e'},    {"batch", 1, 0, 'b'},
		{"optim", 1, 0, 'O'},        {"lr", 1, 0, 'R'},        {"momentum", 1, 0, 'M'},
		{"weight-decay", 1, 0, 'W'}, {"lr-decay", 1, 0, 'y'},  {"seed", 1, 0, 's'},
		{"threads", 1, 0, 't'},      {"out", 1, 0, 'o'},       {"quiet", 0, 0, 'q'},
		{"classes", 1, 0, 'C'},      {"help", 0, 0, 'h'},      {0, 0, 0, 0}};
	uint8_t keep[LABELS_MAX];
	int ch, bad = 0;
	optind = 1;
	opterr = 0;
	while (!bad && (ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		int seed = 0;
		enum fl_peft_param pp;
		switch (ch) {
		case 'm': o.model = optarg; break;
		case 'p':
			o.param = optarg;
			if (fl_peft_param_parse(optarg, &pp)) {
				fprintf(stderr, "fedloha-client: --param: %s\n", fl_error_msg());
				bad = 1;
			}
			break;
		case 'g': bad |= parse_double(optarg, "--gamma", 0, 1, &o.gamma); break;
		case 'r': bad |= parse_int(optarg, "--rank", 1, 1 << 16, &o.rank); break;
		case 'a': bad |= parse_double(optarg, "--alpha", 1e-6, 1e6, &o.alpha); break;
		case 'T': o.targets = optarg; break;
		case 'N': o.tucker = 0; break;
		case 'c': o.config = optarg; break;
		case 'B': o.base = optarg; break;
		case 'd': o.data = optarg; break;
		case 'D': o.data_path = optarg; break;
		case 'l': bad |= parse_int(optarg, "--limit", 1, 1 << 30, &o.limit); break;
		case 'L': bad |= parse_int(optarg, "--test-limit", 1, 1 << 30, &o.test_limit); break;
		case 'C':
			o.classes = optarg;
			bad |= parse_classes(optarg, keep) != 0;
			break;
		case 'e': bad |= parse_int(optarg, "--epochs", 0, 100000, &o.epochs); break;
		case 'b': bad |= parse_int(optarg, "--batch", 1, 65536, &o.batch); break;
		case 'O':
			if (strcmp(optarg, "sgd") == 0)
				o.optim_adam = 0;
			else if (strcmp(optarg, "adam") == 0)
				o.optim_adam = 1;
			else {
				fprintf(stderr, "fedloha-client: --optim: expected sgd or adam, got '%s'\n",
					optarg);
				bad = 1;
			}
			break;
		case 'R': bad |= parse_double(optarg, "--lr", 0, 100, &o.lr); break;
		case 'M': bad |= parse_double(optarg, "--momentum", 0, 0.9999, &o.momentum); break;
		case 'W': bad |= parse_double(optarg, "--weight-decay", 0, 1, &o.wd); break;
		case 'y': bad |= parse_double(optarg, "--lr-decay", 0, 1, &o.lr_decay); break;
		case 's':
			bad |= parse_int(optarg, "--seed", 0, 2147483647, &seed);
			o.seed = (unsigned long long)seed;
			break;
		case 't': bad |= parse_int(optarg, "--threads", 1, 256, &o.threads); break;
		case 'o': o.out = optarg; break;
		case 'q': o.quiet = 1; break;
		case 'h': train_usage(stdout); return 0;
		default: option_error("train", ch, argv); bad = 1;
		}
	}
	if (!bad && optind < argc) {
		fprintf(stderr, "fedloha-client train: unexpected argument '%s'\n", argv[optind]);
		bad = 1;
	}
	if (bad)
		return 2;
	if (!fl_model_arch_valid(o.model)) {
		fprintf(stderr, "fedloha-client: --model: unknown model '%s' (2nn, cnn, mlp)\n", o.model);
		return 2;
	}
	fl_blas_set_threads(o.threads);

	struct fl_peft_config *cfg = NULL;
	struct fl_dataset *train = NULL, *test = NULL;
	struct fl_model *m = NULL;
	struct fl_trainer *tr = NULL;
	int rc = 1;
	int err = make_config(&o, &cfg);
	if (!err && cfg->parameterization == FL_PEFT_PARAM_LOHA && !o.base)
		fprintf(stderr, "fedloha-client: warning: loha without --base adapts a randomly "
				"initialised base\n");
	if (!err)
		err = load_data(o.data, o.data_path, o.classes ? keep : NULL, o.limit, o.test_limit,
				&train, &test);
	if (!err)
		err = fl_model_new(o.model, train->c, train->h, train->w, train->classes, cfg, o.seed,
				   o.batch, &m);
	if (!err && o.base)
		err = fl_model_load_base(m, o.base);
	struct fl_optim_config oc;
	fl_optim_config_default(&oc, o.optim_adam ? FL_OPTIM_ADAM : FL_OPTIM_SGD);
	oc.lr = (float)(o.lr >= 0 ? o.lr : (o.optim_adam ? 0.001 : 0.01));
	if (!o.optim_adam)
		oc.momentum = (float)o.momentum;
	oc.weight_decay = (float)o.wd;
	if (!err)
		err = fl_trainer_new(m, &oc, o.batch, &tr);
	if (err) {
		fprintf(stderr, "fedloha-client: %s\n", fl_error_msg());
		goto out;
	}
	if (!o.quiet)
		print_model_summary(m);
	struct fl_rng rng;
	fl_rng_seed_stream(&rng, o.seed, 0x7261696eULL);
	struct fl_train_stats st = {0}, ev = {0};
	double total_s = 0;
	for (int e = 0; e < o.epochs; e++) {
		fl_optim_set_lr(fl_trainer_optim(tr), (float)fl_optim_round_lr(oc.lr, o.lr_decay, (uint64_t)e));
		err = fl_trainer_epoch(tr, train, NULL, train->n, &rng, &st);
		if (!err)
			err = fl_trainer_evaluate(tr, test, NULL, test->n, &ev);
		if (err) {
			fprintf(stderr, "fedloha-client: epoch %d: %s\n", e + 1, fl_error_msg());
			goto out;
		}
		total_s += st.seconds;
		if (!o.quiet)
			printf("epoch %d/%d  loss %.4f  train-acc %.2f%%  test-loss %.4f  test-acc %.2f%%  "
			       "%.0f samples/s  %.1fs\n",
			       e + 1, o.epochs, st.loss, 100 * st.accuracy, ev.loss, 100 * ev.accuracy,
			       st.samples / (st.seconds > 0 ? st.seconds : 1e-9), st.seconds);
		fflush(stdout);
	}
	if (o.epochs == 0) {
		if ((err = fl_trainer_evaluate(tr, test, NULL, test->n, &ev))) {
			fprintf(stderr, "fedloha-client: %s\n", fl_error_msg());
			goto out;
		}
	}
	printf("final test-acc %.2f%%  test-loss %.4f  train %.1fs  %.0f samples/s\n",
	       100 * ev.accuracy, ev.loss, total_s,
	       total_s > 0 ? (double)train->n * o.epochs / total_s : 0.0);
	if (o.out) {
		char meta[1024], norm[256];
		norm_json(train, norm, sizeof(norm));
		snprintf(meta, sizeof(meta),
			 "{\"data\": \"%s\", \"classes\": \"%s\", \"epochs\": %d, \"seed\": %llu, \"test_accuracy\": %.6f, "
			 "\"test_loss\": %.6f, \"test_samples\": %d, \"train_samples\": %d, \"norm\": %s}",
			 o.data ? o.data : "fashion-mnist", o.classes ? o.classes : "all", o.epochs,
			 o.seed, ev.accuracy, ev.loss,
			 test->n, train->n, norm);
		if ((err = fl_model_save(m, o.out, meta))) {
			fprintf(stderr, "fedloha-client: %s\n", fl_error_msg());
			goto out;
		}
		printf("saved %s\n", o.out);
	}
	rc = 0;
out:
	fl_trainer_free(tr);
	fl_model_free(m);
	fl_dataset_free(train);
	fl_dataset_free(test);
	fl_peft_config_free(cfg);
	return rc;
}

static void eval_usage(FILE *f)
{
	fprintf(f, "usage: fedloha-client eval --in DIR [--data NAME] [--data-path DIR]\n"
		   "                           [--test-limit N] [--classes LIST] [--batch B]\n"
		   "                           [--threads T]\n"
		   "Evaluates a model folder saved by 'fedloha-client train --out DIR' on the\n"
		   "test set (normalised with the training set's statistics).\n");
}

int cli_eval_main(int argc, char **argv)
{
	const char *in = NULL, *data = NULL, *data_path = NULL, *class_list = NULL;
	uint8_t keep[LABELS_MAX];
	int test_limit = 0, batch = 256, threads = 2, bad = 0, ch;
	static const struct option longopts[] = {
		{"in", 1, 0, 'i'},      {"data", 1, 0, 'd'},    {"data-path", 1, 0, 'D'},
		{"test-limit", 1, 0, 'L'}, {"batch", 1, 0, 'b'}, {"threads", 1, 0, 't'},
		{"classes", 1, 0, 'C'}, {"help", 0, 0, 'h'},    {0, 0, 0, 0}};
	optind = 1;
	opterr = 0;
	while (!bad && (ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'i': in = optarg; break;
		case 'd': data = optarg; break;
		case 'D': data_path = optarg; break;
		case 'L': bad |= parse_int(optarg, "--test-limit", 1, 1 << 30, &test_limit); break;
		case 'b': bad |= parse_int(optarg, "--batch", 1, 65536, &batch); break;
		case 't': bad |= parse_int(optarg, "--threads", 1, 256, &threads); break;
		case 'C':
			class_list = optarg;
			bad |= parse_classes(optarg, keep) != 0;
			break;
		case 'h': eval_usage(stdout); return 0;
		default: option_error("eval", ch, argv); bad = 1;
		}
	}
	if (!bad && optind < argc) {
		fprintf(stderr, "fedloha-client eval: unexpected argument '%s'\n", argv[optind]);
		bad = 1;
	}
	if (!bad && !in) {
		fprintf(stderr, "fedloha-client eval: --in DIR is required (try --help)\n");
		bad = 1;
	}
	if (bad)
		return 2;
	fl_blas_set_threads(threads);
	struct fl_dataset *train = NULL, *test = NULL;
	struct fl_model *m = NULL;
	struct fl_trainer *tr = NULL;
	struct fl_optim_config oc;
	fl_optim_config_default(&oc, FL_OPTIM_SGD);
	struct fl_train_stats ev;
	int rc = 1;
	int err = fl_model_load(in, batch, &m);
	int mc = 0;
	float mean[FL_DATASET_CHANNELS_MAX], std[FL_DATASET_CHANNELS_MAX];
	if (!err)
		fl_model_input_dims(m, &mc, NULL, NULL, NULL);
	if (!err && mc <= FL_DATASET_CHANNELS_MAX && saved_norm(in, mc, mean, std)) {
		/* normalise exactly as in training, without loading the training set */
		err = fl_dataset_load(data, data_path, 0, &test);
		if (!err && class_list)
			err = keep_classes(&test, keep, "test");
		if (!err && test_limit > 0 && test_limit < test->n) {
			struct fl_dataset *s;
			err = fl_dataset_subset(test, NULL, test_limit, &s);
			if (!err) {
				fl_dataset_free(test);
				test = s;
			}
		}
		if (!err && test->c != mc)
			err = fl_error_set(FL_ESHAPE, "%s: model has %d input channels, data %d", in, mc,
					   test->c);
		if (!err)
			err = fl_dataset_set_norm(test, mean, std);
	} else if (!err) {
		err = load_data(data, data_path, class_list ? keep : NULL, 0, test_limit, &train, &test);
	}
	if (!err) {
		int c, h, w, classes;
		fl_model_input_dims(m, &c, &h, &w, &classes);
		if (c != test->c || h != test->h || w != test->w || classes < test->classes)
			err = fl_error_set(FL_ESHAPE, "%s: model input %dx%dx%d (%d classes) does not fit "
					   "the data (%dx%dx%d, %d classes)", in, c, h, w, classes,
					   test->c, test->h, test->w, test->classes);
	}
	if (!err)
		err = fl_trainer_new(m, &oc, batch, &tr);
	if (!err)
		err = fl_trainer_evaluate(tr, test, NULL, test->n, &ev);
	if (err) {
		fprintf(stderr, "fedloha-client: %s\n", fl_error_msg());
	} else {
		printf("test-acc %.2f%%  test-loss %.4f  samples %ld\n", 100 * ev.accuracy, ev.loss,
		       ev.samples);
		rc = 0;
	}
	fl_trainer_free(tr);
	fl_model_free(m);
	fl_dataset_free(train);
	fl_dataset_free(test);
	return rc;
}
