/* bench_train.c - fl-bench-train: local training throughput (samples/s) of
 * the built-in models, dense and fedpara, at 1 and 2 OpenBLAS threads, with
 * a same-run sgemm baseline. Prints one JSON object per line, one per
 * (model, parameterisation, threads) case, the baseline inside it. This is
 * a program, not a test: it asserts nothing.
 *
 * What one sample measures: fl_trainer_epoch (plain SGD, batch 32 by
 * default, the last partial batch too) over a fixed set of `batches * batch`
 * training samples: gather, forward, softmax cross-entropy, backward,
 * optimiser step, exactly as a federated client trains. The figure is the
 * median over `samples` repeats. Before each repeat an sgemm 512^3 sample
 * is taken, so the machine load is visible next to the figure:
 * "samples_per_s_per_sgemm_gflop" is the median of the per-repeat ratios
 * (a load-normalised figure to compare runs on a shared machine).
 *
 * Data: Fashion-MNIST through fl_dataset_load (the Debian package or
 * --data-path), else synthetic random pixels of the same shape (--synthetic
 * forces it); throughput does not depend on the pixel values.
 */
#include "benchutil.h"
#include "blas.h"
#include "dataset.h"
#include "errors.h"
#include "model.h"
#include "optim.h"
#include "peft_config.h"
#include "rng.h"
#include "train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SAMPLES_MAX 32

struct opts {
	int samples;     /* repeats per case */
	int batch;       /* mini-batch size */
	int batches_2nn; /* batches per repeat, 2nn */
	int batches_cnn; /* batches per repeat, cnn (about 50x slower per sample) */
	double gamma;    /* fedpara rank rule */
	int synthetic;   /* skip the real data set */
	const char *data_path;
};

static int make_cfg(const char *param, double gamma, struct fl_peft_config **out)
{
	struct fl_peft_config *c = NULL;
	int err = fl_peft_config_new(&c);
	if (err)
		return err;
	if ((err = fl_peft_param_parse(param, &c->parameterization))) {
		fl_peft_config_free(c);
		return err;
	}
	c->use_effective_conv2d = c->parameterization != FL_PEFT_PARAM_LOHA; /* Tucker convs */
	c->has_gamma = 1;
	c->gamma = gamma;
	*out = c;
	return FL_OK;
}

/* One case: median samples/s of fl_trainer_epoch over n = batches * batch
 * samples; prints one JSON line. Returns the median samples/s, or -1. */
static double bench_case(const struct opts *o, const struct fl_bench_sgemm *sg,
			 const struct fl_dataset *ds, const char *arch, const char *param,
			 int threads, int batches)
{
	struct fl_peft_config *cfg = NULL;
	struct fl_model *m = NULL;
	struct fl_trainer *t = NULL;
	int *idx = NULL, n = batches * o->batch;
	double sps = -1.0;
	if (n > ds->n)
		n = ds->n;
	int err = make_cfg(param, o->gamma, &cfg);
	if (!err)
		err = fl_model_new(arch, ds->c, ds->h, ds->w, ds->classes, cfg, 7, o->batch, &m);
	struct fl_optim_config oc;
	fl_optim_config_default(&oc, FL_OPTIM_SGD);
	oc.lr = 0.01f; /* small: the weights stay sane over many repeats */
	if (!err)
		err = fl_trainer_new(m, &oc, o->batch, &t);
	if (!err && !(idx = malloc(sizeof(int) * (size_t)n)))
		err = fl_error_set(FL_ENOMEM, "out of memory");
	if (err) {
		fprintf(stderr, "fl-bench-train: %s/%s: %s\n", arch, param, fl_error_msg());
		goto done;
	}
	for (int i = 0; i < n; i++)
		idx[i] = i;
	struct fl_rng rng;
	fl_rng_seed(&rng, 3);
	struct fl_train_stats st;
	/* warm-up: a tenth of the set (at least one batch) */
	int warm = n / 10 > o->batch ? n / 10 : o->batch;
	if (warm > n)
		warm = n;
	fl_trainer_epoch(t, ds, idx, warm, &rng, &st);
	double v[SAMPLES_MAX], sg_v[SAMPLES_MAX], ratio[SAMPLES_MAX];
	for (int s = 0; s < o->samples; s++) {
		sg_v[s] = fl_bench_sgemm_sample(sg, 0.05);
		double t0 = fl_now_seconds();
		if ((err = fl_trainer_epoch(t, ds, idx, n, &rng, &st))) {
			fprintf(stderr, "fl-bench-train: %s/%s: %s\n", arch, param, fl_error_msg());
			goto done;
		}
		v[s] = (double)n / (fl_now_seconds() - t0);
		ratio[s] = v[s] / sg_v[s];
	}
	sps = fl_bench_median(v, o->samples);
	double sgm = fl_bench_median(sg_v, o->samples), rat = fl_bench_median(ratio, o->samples);
	size_t nparam = fl_model_param_floats(m);
	size_t nglobal = fl_model_count_floats(m, FL_TENSOR_GLOBAL);
	printf("{\"bench\":\"train\",\"model\":\"%s\",\"param\":\"%s\",\"gamma\":%.2f,"
	       "\"threads\":%d,\"batch\":%d,\"samples_per_repeat\":%d,\"repeats\":%d,"
	       "\"samples_per_s\":%.1f,\"ms_per_batch\":%.3f,\"param_floats\":%zu,"
	       "\"transmitted_floats\":%zu,\"sgemm512_gflops\":%.2f,"
	       "\"samples_per_s_per_sgemm_gflop\":%.2f,\"data\":\"%s\",\"final_train_loss\":%.4f}\n",
	       arch, param, !strcmp(param, "dense") ? 0.0 : o->gamma, threads, o->batch, n,
	       o->samples, sps, 1e3 * o->batch / sps, nparam, nglobal, sgm, rat,
	       o->synthetic ? "synthetic" : "fashion-mnist", st.loss);
	fflush(stdout);
done:
	free(idx);
	fl_trainer_free(t);
	fl_model_free(m);
	fl_peft_config_free(cfg);
	return sps;
}

/* Fashion-MNIST if available, else random pixels of its shape. */
static int load_data(struct opts *o, int need, struct fl_dataset **out)
{
	if (!o->synthetic) {
		struct fl_dataset *ds = NULL;
		if (fl_dataset_load("fashion-mnist", o->data_path, 1, &ds) == FL_OK) {
			fl_dataset_compute_norm(ds);
			*out = ds;
			return FL_OK;
		}
		fprintf(stderr, "fl-bench-train: %s; using synthetic data\n", fl_error_msg());
		o->synthetic = 1;
	}
	struct fl_dataset *ds = NULL;
	int err = fl_dataset_new(need, 1, 28, 28, 10, &ds);
	if (err)
		return err;
	struct fl_rng rng;
	fl_rng_seed(&rng, 5);
	size_t np = (size_t)need * 28 * 28;
	for (size_t i = 0; i < np; i++)
		ds->pixels[i] = (uint8_t)(fl_rng_next(&rng) >> 56);
	for (int i = 0; i < need; i++)
		ds->labels[i] = (uint8_t)(fl_rng_next(&rng) % 10);
	fl_dataset_compute_norm(ds);
	*out = ds;
	return FL_OK;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: fl-bench-train [--quick] [--synthetic] [--data-path DIR] [--help]\n"
		   "  Prints JSON lines: local training samples/s (median) of 2nn and cnn,\n"
		   "  dense and fedpara (gamma 0.1), batch 32, at 1 and 2 OpenBLAS threads,\n"
		   "  with an sgemm 512^3 baseline measured before every repeat.\n"
		   "  --quick        fewer repeats and batches\n"
		   "  --synthetic    random pixels instead of Fashion-MNIST\n"
		   "  --data-path D  Fashion-MNIST folder (default: the Debian package)\n");
}

int main(int argc, char **argv)
{
	struct opts o = {5, 32, 300, 12, 0.1, 0, NULL};
	int quick = 0;
	for (int i = 1; i < argc; i++) {
		if (fl_bench_common_arg(argv[i], usage, &quick)) {
			continue;
		} else if (!strcmp(argv[i], "--synthetic")) {
			o.synthetic = 1;
		} else if (!strcmp(argv[i], "--data-path") && i + 1 < argc) {
			o.data_path = argv[++i];
		} else {
			return fl_bench_bad_arg("fl-bench-train", argv[i], usage);
		}
	}
	if (quick) {
		o.samples = 3;
		o.batches_2nn = 60;
		o.batches_cnn = 4;
	}
	int need = o.batches_2nn * o.batch;
	if (o.batches_cnn * o.batch > need)
		need = o.batches_cnn * o.batch;
	struct fl_dataset *ds = NULL;
	if (load_data(&o, need, &ds)) {
		fprintf(stderr, "fl-bench-train: %s\n", fl_error_msg());
		return 1;
	}
	struct fl_bench_sgemm sg = {.n = 512};
	if (fl_bench_sgemm_init(&sg) != 0) {
		fprintf(stderr, "fl-bench-train: out of memory\n");
		fl_bench_sgemm_free(&sg);
		fl_dataset_free(ds);
		return 1;
	}
	static const char *const archs[] = {"2nn", "cnn"};
	static const char *const params[] = {"dense", "fedpara"};
	for (int th = 1; th <= 2; th++) {
		fl_blas_set_threads(th);
		for (int a = 0; a < 2; a++)
			for (int p = 0; p < 2; p++)
				bench_case(&o, &sg, ds, archs[a], params[p], th,
					   a == 0 ? o.batches_2nn : o.batches_cnn);
	}
	fl_bench_sgemm_free(&sg);
	fl_dataset_free(ds);
	return 0;
}
