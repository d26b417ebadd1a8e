/* cli_eval.c - `fedloha-client eval`: a saved model folder, or a model
 * description with a PyTorch state dict, evaluated on a test set
 * normalised as in training, optionally writing the logits of the evaluated
 * samples (--dump-logits). Training is cli_train.c. */
#include "blas.h"
#include "cli_data.h"
#include "client_cli.h"
#include "errors.h"
#include "model_data.h"
#include "model_io.h"
#include "safetensors.h"
#include "train.h"

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void eval_usage(FILE *f)
{
	fprintf(f, "usage: fedloha-client eval (--in DIR | --model-file FILE --weights FILE)\n"
		   "                           [--data NAME] [--data-path DIR] [--test-limit N]\n"
		   "                           [--classes LIST] [--batch B] [--threads T]\n"
		   "                           [--dump-logits FILE.safetensors]\n"
		   "Evaluates a model folder saved by 'fedloha-client train --out DIR' (or by\n"
		   "fedloha-server / fedloha-sim) on the test set, normalised with the training\n"
		   "set's statistics. --model-file and --weights instead evaluate any model\n"
		   "description with a PyTorch state dict (safetensors, strict names and shapes).\n"
		   "--data is fashion-mnist (default), mnist, cifar10 or safetensors.\n"
		   "--dump-logits writes the logits of the evaluated samples (F32, (N, classes))\n"
		   "and their labels (y, I32, (N)) to a safetensors file.\n");
}

struct eval_opts {
	const char *in, *model_file, *weights, *data, *data_path, *class_list, *dump_logits;
	int test_limit, batch, threads;
};

/* FL_OK: go on; 1: --help printed; FL_EINVAL: a bad flag (message
 * printed). */
static int parse_eval_args(int argc, char **argv, struct eval_opts *o, uint8_t *keep)
{
	static const struct option longopts[] = {
		{"in", 1, 0, 'i'},         {"data", 1, 0, 'd'},        {"data-path", 1, 0, 'D'},
		{"test-limit", 1, 0, 'L'}, {"batch", 1, 0, 'b'},       {"threads", 1, 0, 't'},
		{"classes", 1, 0, 'C'},    {"help", 0, 0, 'h'},        {"model-file", 1, 0, 'F'},
		{"weights", 1, 0, 'W'},    {"dump-logits", 1, 0, 'O'}, {0, 0, 0, 0}};
	int bad = 0, ch;
	optind = 1;
	opterr = 0;
	while (!bad && (ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'i': o->in = optarg; break;
		case 'F': o->model_file = optarg; break;
		case 'W': o->weights = optarg; break;
		case 'O': o->dump_logits = optarg; break;
		case 'd': o->data = optarg; break;
		case 'D': o->data_path = optarg; break;
		case 'L':
			bad |= cli_parse_int(optarg, "--test-limit", 1, 1 << 30, &o->test_limit);
			break;
		case 'b': bad |= cli_parse_int(optarg, "--batch", 1, 65536, &o->batch); break;
		case 't': bad |= cli_parse_int(optarg, "--threads", 1, 256, &o->threads); break;
		case 'C':
			o->class_list = optarg;
			bad |= cli_classes_parse(optarg, keep) != FL_OK;
			break;
		case 'h': eval_usage(stdout); return 1;
		default: cli_option_error("eval", ch, argv); bad = 1;
		}
	}
	if (!bad && optind < argc) {
		fprintf(stderr, "fedloha-client eval: unexpected argument '%s'\n", argv[optind]);
		bad = 1;
	}
	if (!bad && !o->in == !(o->model_file && o->weights)) {
		fprintf(stderr, "fedloha-client eval: give --in DIR, or --model-file FILE and "
				"--weights FILE (try --help)\n");
		bad = 1;
	}
	return bad ? FL_EINVAL : FL_OK;
}

/* The test set normalised exactly as in training with the statistics
 * saved in the model folder, without loading the training set. */
static int load_test_saved_norm(const struct eval_opts *o, const uint8_t *keep, int mc,
				const float *mean, const float *std, struct fl_dataset **test)
{
	int err = fl_dataset_load(o->data, o->data_path, 0, test);
	if (!err && o->class_list)
		err = cli_classes_keep(test, keep, "test");
	if (!err && o->test_limit > 0 && o->test_limit < (*test)->n) {
		struct fl_dataset *s;
		err = fl_dataset_subset(*test, NULL, o->test_limit, &s);
		if (!err) {
			fl_dataset_free(*test);
			*test = s;
		}
	}
	if (!err && (*test)->c != mc)
		err = fl_error_set(FL_ESHAPE, "%s: model has %d input channels, data %d", o->in, mc,
				   (*test)->c);
	if (!err)
		err = fl_dataset_set_norm(*test, mean, std);
	return err;
}

/* The model's input, classes and vocabulary cover the test samples. */
static int check_fits(const char *in, const struct fl_model *m, const struct fl_dataset *test)
{
	int c, h, w, classes;
	fl_model_input_dims(m, &c, &h, &w, &classes);
	if (c != test->c || h != test->h || w != test->w || classes < test->classes)
		return fl_error_set(FL_ESHAPE,
				    "%s: model input %dx%dx%d (%d classes) does not fit "
				    "the data (%dx%dx%d, %d classes)",
				    in, c, h, w, classes, test->c, test->h, test->w, test->classes);
	if (fl_model_description(m) && fl_model_check_data(m, test)) /* token ids vs the vocab */
		return fl_error_set(FL_EINVAL, "%s: %s", in, fl_error_msg());
	return FL_OK;
}

/* --model-file and --weights: the dense model of the description with the
 * state dict's values, and the data normalised by its training set. */
static int eval_from_weights(const struct eval_opts *o, const uint8_t *keep,
			     struct fl_dataset **train, struct fl_dataset **test,
			     struct fl_model **m)
{
	int err = cli_data_load(o->data, o->data_path, o->class_list ? keep : NULL, 0,
				o->test_limit, train, test);
	if (!err)
		err = fl_model_new_for_data(NULL, o->model_file, *train, NULL, 0, o->batch, m);
	if (!err && (err = fl_model_load_init(*m, o->weights)))
		err = fl_error_set(err, "--weights %s", fl_error_msg());
	return err;
}

/* The logits of every sample of ds, in order, and their labels, written to
 * path (a safetensors file: logits F32 (n, classes), y I32 (n)). */
static int dump_logits(struct fl_model *m, const struct fl_dataset *ds, int batch, const char *path)
{
	int classes;
	fl_model_input_dims(m, NULL, NULL, NULL, &classes);
	size_t per = (size_t)ds->c * (size_t)ds->h * (size_t)ds->w;
	float *x = malloc(sizeof(float) * per * (size_t)batch);
	float *lg = malloc(sizeof(float) * (size_t)ds->n * (size_t)classes);
	int *idx = malloc(sizeof(int) * (size_t)batch);
	struct fl_st *st = NULL;
	int err = x && lg && idx ? fl_st_new(&st) : fl_error_set(FL_ENOMEM, "--dump-logits");
	for (int b0 = 0; !err && b0 < ds->n; b0 += batch) {
		int bs = ds->n - b0 < batch ? ds->n - b0 : batch;
		for (int i = 0; i < bs; i++)
			idx[i] = b0 + i;
		fl_dataset_gather(ds, idx, bs, x, NULL);
		memcpy(lg + (size_t)b0 * (size_t)classes, fl_model_forward(m, x, bs, 0, NULL),
		       sizeof(float) * (size_t)bs * (size_t)classes);
	}
	const int64_t ls[2] = {ds->n, classes}, ys[1] = {ds->n};
	if (!err)
		err = fl_st_add_f32(st, "logits", ls, 2, lg);
	if (!err)
		err = fl_st_add(st, "y", FL_DTYPE_I32, ys, 1, ds->labels);
	if (!err && (err = fl_st_write(st, path)))
		err = fl_error_set(err, "--dump-logits %s: %s", path, fl_error_msg());
	fl_st_free(st);
	free(idx);
	free(lg);
	free(x);
	return err;
}

int cli_eval_main(int argc, char **argv)
{
	struct eval_opts o = {.batch = 256, .threads = 2};
	uint8_t keep[CLI_LABELS_MAX];
	int rc = parse_eval_args(argc, argv, &o, keep);
	if (rc)
		return rc == 1 ? 0 : 2;
	fl_blas_set_threads(o.threads);
	struct fl_dataset *train = NULL, *test = NULL;
	struct fl_model *m = NULL;
	struct fl_trainer *tr = NULL;
	struct fl_optim_config oc;
	fl_optim_config_default(&oc, FL_OPTIM_SGD);
	struct fl_train_stats ev;
	int err = o.in ? fl_model_load(o.in, o.batch, &m) : FL_OK;
	int mc = 0;
	float mean[FL_DATASET_CHANNELS_MAX], std[FL_DATASET_CHANNELS_MAX];
	if (!err && m)
		fl_model_input_dims(m, &mc, NULL, NULL, NULL);
	if (!err && !o.in)
		err = eval_from_weights(&o, keep, &train, &test, &m);
	else if (!err && mc <= FL_DATASET_CHANNELS_MAX && cli_norm_saved(o.in, mc, mean, std))
		err = load_test_saved_norm(&o, keep, mc, mean, std, &test);
	else if (!err)
		err = cli_data_load(o.data, o.data_path, o.class_list ? keep : NULL, 0,
				    o.test_limit, &train, &test);
	if (!err)
		err = check_fits(o.in ? o.in : o.model_file, m, test);
	if (!err)
		err = fl_trainer_new(m, &oc, o.batch, &tr);
	if (!err)
		err = fl_trainer_evaluate(tr, test, NULL, test->n, &ev);
	if (!err && o.dump_logits)
		err = dump_logits(m, test, o.batch, o.dump_logits);
	rc = 1;
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
