/* bench_train.c - fl-bench-train: local training throughput (samples/s) of
 * the built-in 2nn and cnn and of two descriptions, models/vit-tiny.json and
 * models/vgg16-gn.json, dense and fedpara, at 1 and 2 OpenBLAS threads, with
 * a same-run sgemm baseline and, for the dense descriptions, PyTorch's
 * samples/s for the same network (tests/bench_torch.py builds it with
 * tests/torch_model.py), batch and threads, measured right after in the
 * same run. Prints one JSON object per (model, parameterisation, threads)
 * case. This is a program, not a test: it asserts nothing.
 *
 * What one sample measures: fl_trainer_epoch (plain SGD, batch 32 for the
 * 2nn, cnn and vgg16-gn, 64 for vit-tiny, the last partial batch too) over
 * a fixed set of `batches * batch` training samples: gather, forward,
 * softmax cross-entropy, backward, optimiser step, exactly as a federated
 * client trains. The figure is the median over `samples` repeats, after an
 * untimed warm-up. Before each repeat an sgemm 512^3 sample is taken, so
 * the machine load is visible next to the figure:
 * "samples_per_s_per_sgemm_gflop" is the median of the per-repeat ratios
 * (a load-normalised figure to compare runs on a shared machine).
 * "ratio_fedloha_torch" is fedloha's median over PyTorch's (null for
 * fedpara: PyTorch has no FedPara layer, the peer does not build one).
 *
 * Data: the built-ins train on Fashion-MNIST through fl_dataset_load (the
 * Debian package or --data-path), else synthetic random pixels of the same
 * shape (--synthetic forces it); the descriptions, and their PyTorch peer,
 * on random pixels of their input shape. Throughput does not depend on the
 * pixel values.
 */
#include "benchutil.h"
#include "blas.h"
#include "dataset.h"
#include "errors.h"
#include "model.h"
#include "model_desc.h"
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
	int samples;      /* repeats per case */
	double gamma;     /* fedpara rank rule */
	int synthetic;    /* skip the real data set */
	int torch;        /* time the PyTorch peer too */
	const char *only; /* run this model only (NULL: all) */
	const char *data_path;
};

/* One benchmarked model: a built-in (file NULL) or a description in
 * models/, with its batch, batches per repeat and the PEFT config its
 * fedpara case uses (NULL: every weight layer). */
struct bmodel {
	const char *name, *file;
	int c, h, w, batch, batches, quick_batches;
	const char *fedpara_json;
};

static const struct bmodel MODELS[] = {
	{"2nn", NULL, 1, 28, 28, 32, 300, 60, NULL},
	{"cnn", NULL, 1, 28, 28, 32, 12, 4, NULL},
	{"vit-tiny", "vit-tiny.json", 1, 28, 28, 64, 8, 3, NULL},
	/* the FedPara paper's VGG16: convs in Tucker form, the FC head dense */
	{"vgg16-gn", "vgg16-gn.json", 3, 32, 32, 32, 3, 1,
	 "{\"peft_type\": \"LOHA\", \"fedloha_parameterization\": \"fedpara\", "
	 "\"fedloha_gamma\": %.4f, \"use_effective_conv2d\": true, "
	 "\"target_modules\": \".*\\\\.conv\"}"},
};
#define NMODELS ((int)(sizeof(MODELS) / sizeof(MODELS[0])))

static int make_cfg(const struct bmodel *bm, const char *param, double gamma,
		    struct fl_peft_config **out)
{
	struct fl_peft_config *c = NULL;
	int err;
	if (bm->fedpara_json && strcmp(param, "dense")) {
		char json[512];
		snprintf(json, sizeof(json), bm->fedpara_json, gamma);
		return fl_peft_config_parse(json, strlen(json), bm->name, out);
	}
	if ((err = fl_peft_config_new(&c)))
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

static int make_model(const struct bmodel *bm, const struct fl_dataset *ds,
		      const struct fl_peft_config *cfg, struct fl_model **m)
{
	if (!bm->file)
		return fl_model_new(bm->name, ds->c, ds->h, ds->w, ds->classes, cfg, 7, bm->batch,
				    m);
	char path[1024];
	struct fl_model_desc *d = NULL;
	snprintf(path, sizeof(path), "%s/%s", FL_MODELS_DIR, bm->file);
	int err = fl_model_desc_load(path, &d);
	if (!err)
		err = fl_model_new_desc(d, cfg, 7, bm->batch, m);
	fl_model_desc_free(d);
	return err;
}

/* PyTorch 1.13's samples/s for the same description, batch and threads
 * (tests/bench_torch.py; dense only), or -1 when it cannot run. */
static double torch_peer(const struct opts *o, const struct bmodel *bm, int threads, int batches)
{
	char cmd[2048], line[512];
	snprintf(cmd, sizeof(cmd),
		 "/usr/bin/python3 %s/bench_torch.py --model %s/%s --batch %d --threads %d "
		 "--batches %d --repeats %d --warmup %d 2>/dev/null",
		 FL_TESTS_DIR, FL_MODELS_DIR, bm->file, bm->batch, threads, batches, o->samples,
		 batches > 2 ? batches / 2 : 1);
	FILE *p = popen(cmd, "r");
	if (!p)
		return -1.0;
	double sps = -1.0;
	while (fgets(line, sizeof(line), p)) {
		const char *k = strstr(line, "\"samples_per_s\":");
		if (k)
			sps = strtod(k + strlen("\"samples_per_s\":"), NULL);
	}
	return pclose(p) == 0 ? sps : -1.0;
}

struct result {
	double sps, sgemm, ratio, loss;
	size_t nparam, nglobal;
	int n;
};

/* Median samples/s of fl_trainer_epoch over n = batches * batch samples,
 * after a warm-up of a tenth of them (at least one batch). */
static int run_case(const struct opts *o, const struct fl_bench_sgemm *sg,
		    const struct fl_dataset *ds, const struct bmodel *bm, const char *param,
		    int batches, struct result *r)
{
	struct fl_peft_config *cfg = NULL;
	struct fl_model *m = NULL;
	struct fl_trainer *t = NULL;
	int *idx = NULL, n = batches * bm->batch;
	if (n > ds->n)
		n = ds->n;
	int err = make_cfg(bm, param, o->gamma, &cfg);
	if (!err)
		err = make_model(bm, ds, cfg, &m);
	struct fl_optim_config oc;
	fl_optim_config_default(&oc, FL_OPTIM_SGD);
	oc.lr = 0.01f; /* small: the weights stay sane over many repeats */
	if (!err)
		err = fl_trainer_new(m, &oc, bm->batch, &t);
	if (!err && !(idx = malloc(sizeof(int) * (size_t)n)))
		err = fl_error_set(FL_ENOMEM, "out of memory");
	for (int i = 0; !err && i < n; i++)
		idx[i] = i;
	struct fl_rng rng;
	fl_rng_seed(&rng, 3);
	struct fl_train_stats st = {0};
	int warm = n / 10 > bm->batch ? n / 10 : bm->batch;
	if (!err)
		err = fl_trainer_epoch(t, ds, idx, warm > n ? n : warm, &rng, &st);
	double v[SAMPLES_MAX], sg_v[SAMPLES_MAX], ratio[SAMPLES_MAX];
	for (int s = 0; !err && s < o->samples; s++) {
		sg_v[s] = fl_bench_sgemm_sample(sg, 0.05);
		double t0 = fl_now_seconds();
		err = fl_trainer_epoch(t, ds, idx, n, &rng, &st);
		v[s] = (double)n / (fl_now_seconds() - t0);
		ratio[s] = v[s] / sg_v[s];
	}
	if (!err) {
		r->sps = fl_bench_median(v, o->samples);
		r->sgemm = fl_bench_median(sg_v, o->samples);
		r->ratio = fl_bench_median(ratio, o->samples);
		r->nparam = fl_model_param_floats(m);
		r->nglobal = fl_model_count_floats(m, FL_TENSOR_GLOBAL);
		r->loss = st.loss;
		r->n = n;
	}
	free(idx);
	fl_trainer_free(t);
	fl_model_free(m);
	fl_peft_config_free(cfg);
	return err;
}

/* One case: prints one JSON line, with PyTorch's figure for a dense
 * description when the peer runs (null otherwise). */
static void bench_case(const struct opts *o, const struct fl_bench_sgemm *sg,
		       const struct fl_dataset *ds, const struct bmodel *bm, const char *param,
		       int threads, int batches)
{
	struct result r;
	if (run_case(o, sg, ds, bm, param, batches, &r)) {
		fprintf(stderr, "fl-bench-train: %s/%s: %s\n", bm->name, param, fl_error_msg());
		return;
	}
	double tps = -1.0;
	if (o->torch && bm->file && !strcmp(param, "dense"))
		tps = torch_peer(o, bm, threads, batches);
	char tcol[96] = "\"torch_samples_per_s\":null,\"ratio_fedloha_torch\":null";
	if (tps > 0)
		snprintf(tcol, sizeof(tcol),
			 "\"torch_samples_per_s\":%.1f,\"ratio_fedloha_torch\":%.3f", tps,
			 r.sps / tps);
	printf("{\"bench\":\"train\",\"model\":\"%s\",\"param\":\"%s\",\"gamma\":%.2f,"
	       "\"threads\":%d,\"batch\":%d,\"samples_per_repeat\":%d,\"repeats\":%d,"
	       "\"samples_per_s\":%.1f,\"ms_per_batch\":%.3f,%s,\"param_floats\":%zu,"
	       "\"transmitted_floats\":%zu,\"sgemm512_gflops\":%.2f,"
	       "\"samples_per_s_per_sgemm_gflop\":%.2f,\"data\":\"%s\",\"final_train_loss\":%.4f}\n",
	       bm->name, param, !strcmp(param, "dense") ? 0.0 : o->gamma, threads, bm->batch, r.n,
	       o->samples, r.sps, 1e3 * bm->batch / r.sps, tcol, r.nparam, r.nglobal, r.sgemm,
	       r.ratio, bm->file || o->synthetic ? "synthetic" : "fashion-mnist", r.loss);
	fflush(stdout);
}

/* need samples of random pixels, shape (c, h, w), 10 classes. */
static int synthetic_data(int need, int c, int h, int w, struct fl_dataset **out)
{
	struct fl_dataset *ds = NULL;
	int err = fl_dataset_new(need, c, h, w, 10, &ds);
	if (err)
		return err;
	struct fl_rng rng;
	fl_rng_seed(&rng, 5);
	size_t np = (size_t)need * (size_t)(c * h * w);
	for (size_t i = 0; i < np; i++)
		ds->pixels[i] = (uint8_t)(fl_rng_next(&rng) >> 56);
	for (int i = 0; i < need; i++)
		ds->labels[i] = (uint8_t)(fl_rng_next(&rng) % 10);
	fl_dataset_compute_norm(ds);
	*out = ds;
	return FL_OK;
}

/* The built-ins train on Fashion-MNIST if available, else on random pixels
 * of its shape; the descriptions always on random pixels (their PyTorch
 * peer draws the same kind of inputs). */
static int load_data(struct opts *o, const struct bmodel *bm, int need, struct fl_dataset **out)
{
	if (bm->file)
		return synthetic_data(need, bm->c, bm->h, bm->w, out);
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
	return synthetic_data(need, bm->c, bm->h, bm->w, out);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: fl-bench-train [--quick] [--synthetic] [--data-path DIR] [--no-torch]\n"
		   "                      [--only MODEL] [--help]\n"
		   "  Prints JSON lines: local training samples/s (median) of 2nn and cnn\n"
		   "  (batch 32), vit-tiny (batch 64) and vgg16-gn (batch 32; models/*.json),\n"
		   "  dense and fedpara (gamma 0.1), at 1 and 2 threads, with an sgemm 512^3\n"
		   "  baseline measured before every repeat, and for the dense descriptions\n"
		   "  PyTorch's samples/s for the same network, batch and threads, measured\n"
		   "  in the same run (tests/bench_torch.py; null without python3-torch).\n"
		   "  --quick        fewer repeats and batches\n"
		   "  --synthetic    random pixels instead of Fashion-MNIST (2nn, cnn)\n"
		   "  --data-path D  Fashion-MNIST folder (default: the Debian package)\n"
		   "  --no-torch     skip the PyTorch peer\n"
		   "  --only MODEL   2nn, cnn, vit-tiny or vgg16-gn only\n");
}

/* Every case of one model at `threads` threads. */
static int bench_model(struct opts *o, const struct fl_bench_sgemm *sg, const struct bmodel *bm,
		       int quick, int threads)
{
	static const char *const params[] = {"dense", "fedpara"};
	int batches = quick ? bm->quick_batches : bm->batches;
	struct fl_dataset *ds = NULL;
	if (load_data(o, bm, batches * bm->batch, &ds)) {
		fprintf(stderr, "fl-bench-train: %s\n", fl_error_msg());
		return 1;
	}
	for (int p = 0; p < 2; p++)
		bench_case(o, sg, ds, bm, params[p], threads, batches);
	fl_dataset_free(ds);
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o = {5, 0.1, 0, 1, NULL, NULL};
	int quick = 0, rc = 0;
	for (int i = 1; i < argc; i++) {
		if (fl_bench_common_arg(argv[i], usage, &quick)) {
			continue;
		} else if (!strcmp(argv[i], "--synthetic")) {
			o.synthetic = 1;
		} else if (!strcmp(argv[i], "--no-torch")) {
			o.torch = 0;
		} else if (!strcmp(argv[i], "--data-path") && i + 1 < argc) {
			o.data_path = argv[++i];
		} else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
			o.only = argv[++i];
		} else {
			return fl_bench_bad_arg("fl-bench-train", argv[i], usage);
		}
	}
	if (quick)
		o.samples = 3;
	struct fl_bench_sgemm sg = {.n = 512};
	if (fl_bench_sgemm_init(&sg) != 0) {
		fprintf(stderr, "fl-bench-train: out of memory\n");
		fl_bench_sgemm_free(&sg);
		return 1;
	}
	for (int th = 1; th <= 2 && !rc; th++) {
		fl_blas_set_threads(th);
		for (int a = 0; a < NMODELS && !rc; a++)
			if (!o.only || !strcmp(o.only, MODELS[a].name))
				rc = bench_model(&o, &sg, &MODELS[a], quick, th);
	}
	fl_bench_sgemm_free(&sg);
	return rc;
}
