/* bench.c - fl-bench: throughput of the LoHa / FedPara kernels against
 * OpenBLAS sgemm measured in the same run. Prints one JSON object per line:
 * first sgemm at 1024^3, then ΔW forward + backward for a few layer shapes,
 * each with its ratio to sgemm. Medians over several samples, since the
 * machines are shared and noisy. This is a program, not a test: it asserts
 * nothing.
 *
 * Flop model ("flops"): the algorithmic count, forward = 2 products P1, P2
 * (2 m n r each) + 2 m n elementwise; backward = 4 gradient products
 * (2 m n r each) + 3 m n elementwise. Tucker adds the core contractions
 * U_k = w_k_b^T t_k (2 r^2 n per pair, forward) and their gradients (dt_k,
 * dw_k_b: 2 x 2 r^2 n per pair). "executed_flops" also counts what the
 * backward recomputes (P1, P2 and, for Tucker, U1, U2), since backward only
 * receives dL/dW and the factors.
 *
 * What bounds the ratio: the backward must recompute P1 and P2, so
 * executed = 16 m n r against 12 m n r algorithmic flops (at best 0.75 x the
 * gemm efficiency); the products have inner dimension r (or the block
 * height), which runs at roughly 85-95% of the square 1024^3 sgemm; the
 * elementwise passes (read dL/dW, write W) run on one thread, which weighs
 * more when OpenBLAS has two.
 *
 * Aggregation ("agg_add"): GB/s of update bytes (n floats x 4) folded by
 * srv_agg_add (a check pass, then round(x * 2^40) * w into 128-bit fixed
 * point, 16 bytes of state per float), against a plain streaming float add
 * y += x over the same updates, timed back to back in each sample. Several
 * distinct update buffers are cycled, as updates come from different
 * clients; for the large case they do not fit in cache. Single-threaded
 * (srv_agg_add uses no BLAS), so --threads does not change it.
 */
#include "benchutil.h"
#include "aggregate.h"
#include "blas.h"
#include "loha.h"
#include "rng.h"

#include <stdint.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void fill(float *x, size_t n, struct fl_rng *rng)
{
	for (size_t i = 0; i < n; i++)
		x[i] = 2.0f * fl_rng_uniform(rng) - 1.0f;
}

struct bench_opts {
	int threads, samples;
	double min_sample_s; /* repeat a call until one sample lasts this long */
};

static double bench_sgemm(const struct bench_opts *o, const struct fl_bench_sgemm *g)
{
	double gf[32];
	for (int s = 0; s < o->samples; s++)
		gf[s] = fl_bench_sgemm_sample(g, o->min_sample_s);
	double med = fl_bench_median(gf, o->samples);
	printf("{\"bench\":\"sgemm\",\"m\":%d,\"n\":%d,\"k\":%d,\"threads\":%d,\"samples\":%d,"
	       "\"median_ms\":%.3f,\"gflops\":%.2f}\n",
	       g->n, g->n, g->n, o->threads, o->samples,
	       2.0 * g->n * g->n * (double)g->n / med * 1e-6, med);
	fflush(stdout);
	return med;
}

/* Each sample times sgemm and then the case back to back, so that the
 * per-sample ratio sees the same machine load; the reported ratios are the
 * medians of those per-sample ratios. */
static void bench_loha(const struct bench_opts *o, const struct fl_bench_sgemm *sg,
		       const char *label, enum fl_loha_form form, int out, int in, int k, int r)
{
	struct fl_loha_dims d = {form, out, in, k, k, r};
	size_t np = fl_loha_param_count(&d), nw = fl_loha_dense_count(&d);
	size_t nwork = fl_loha_work_floats(&d);
	float *mem = malloc(sizeof(float) * (2 * np + 2 * nw + nwork));
	if (!mem) {
		fprintf(stderr, "fl-bench: out of memory for %s\n", label);
		return;
	}
	float *p = mem, *gp = mem + np, *w = gp + np, *dw = w + nw, *work = dw + nw;
	struct fl_loha_factors f = fl_loha_factors_packed(&d, p);
	struct fl_loha_factors g = fl_loha_factors_packed(&d, gp);
	struct fl_rng rng;
	fl_rng_seed(&rng, 2);
	fl_loha_init_he(&f, &d, 1.0f, FL_LOHA_MODE_LOHA, &rng);
	fill(dw, nw, &rng);
	memset(gp, 0, sizeof(float) * np);

	double m = out, n = (double)in * k * k, rr = r;
	double prod = 2.0 * m * n * rr; /* one m x n x r product */
	double core = 0.0;              /* Tucker U_k, one pair */
	if (form == FL_LOHA_FORM_TUCKER)
		core = 2.0 * rr * rr * n;
	double flops = 2 * (prod + core) + 2 * m * n            /* forward */
		       + 2 * (2 * prod + 2 * core) + 3 * m * n; /* backward gradients */
	double executed = flops + 2 * (prod + core);            /* backward recomputes P, U */

	fl_loha_forward(w, work, &f, &d, 1.0f, FL_LOHA_MODE_LOHA); /* warm up */
	fl_loha_backward(&g, work, dw, &f, &d, 1.0f, FL_LOHA_MODE_LOHA);
	double t[32], tf[32], ratio[32], sgs[32];
	for (int s = 0; s < o->samples; s++) {
		sgs[s] = fl_bench_sgemm_sample(sg, o->min_sample_s);
		int reps = 0;
		double t0 = fl_now_seconds(), el, fwd = 0.0;
		do {
			double a = fl_now_seconds();
			fl_loha_forward(w, work, &f, &d, 1.0f, FL_LOHA_MODE_LOHA);
			fwd += fl_now_seconds() - a;
			fl_loha_backward(&g, work, dw, &f, &d, 1.0f, FL_LOHA_MODE_LOHA);
			reps++;
			el = fl_now_seconds() - t0;
		} while (el < o->min_sample_s);
		t[s] = el / reps;
		tf[s] = fwd / reps;
		ratio[s] = flops / t[s] * 1e-9 / sgs[s];
	}
	double med = fl_bench_median(t, o->samples), medf = fl_bench_median(tf, o->samples);
	double rat = fl_bench_median(ratio, o->samples), sgm = fl_bench_median(sgs, o->samples);
	double gf = flops / med * 1e-9, egf = executed / med * 1e-9;
	printf("{\"bench\":\"loha_fwd_bwd\",\"case\":\"%s\",\"form\":\"%s\",\"mode\":\"loha\","
	       "\"out\":%d,\"in\":%d,\"k1\":%d,\"k2\":%d,\"r\":%d,\"m\":%.0f,\"n\":%.0f,"
	       "\"threads\":%d,\"samples\":%d,\"median_ms\":%.3f,\"forward_median_ms\":%.3f,"
	       "\"flops\":%.0f,\"gflops\":%.2f,\"sgemm_gflops\":%.2f,\"ratio_to_sgemm\":%.3f,"
	       "\"executed_flops\":%.0f,\"executed_gflops\":%.2f,"
	       "\"executed_ratio_to_sgemm\":%.3f,\"work_floats\":%zu,\"flop_model\":\"%s\"}\n",
	       label, form == FL_LOHA_FORM_TUCKER ? "tucker" : "linear", out, in, k, k, r, m, n,
	       o->threads, o->samples, med * 1e3, medf * 1e3, flops, gf, sgm, rat, executed, egf,
	       rat * executed / flops, nwork,
	       form == FL_LOHA_FORM_TUCKER
		       ? "flops = fwd 2*(2mnr + 2r^2n) + 2mn, bwd 2*(2*2mnr + 2*2r^2n) + 3mn; "
			 "executed_flops adds the backward recompute 2*(2mnr + 2r^2n)"
		       : "flops = fwd 2*2mnr + 2mn, bwd 4*2mnr + 3mn; executed_flops adds the "
			 "backward recompute of P1, P2: 2*2mnr");
	fflush(stdout);
	free(mem);
}

/* The streaming baseline; noinline so that it is timed as one call. */
__attribute__((noinline)) static void stream_add(float *restrict y, const float *restrict x,
						 size_t n)
{
	for (size_t i = 0; i < n; i++)
		y[i] += x[i];
}

/* Each sample folds every one of the nbuf updates once through srv_agg_add
 * (reset first) and once through stream_add, repeated until each side lasts
 * min_sample_s; GB/s = update bytes read / time. */
static void bench_agg(const struct bench_opts *o, const char *label, size_t n, int nbuf)
{
	float *mem = malloc(sizeof(float) * n * (size_t)(nbuf + 2));
	struct srv_agg *agg = NULL;
	if (!mem || srv_agg_new(n, &agg) != 0) {
		fprintf(stderr, "fl-bench: out of memory for %s\n", label);
		free(mem);
		return;
	}
	float *y = mem + n * (size_t)nbuf, *res = y + n;
	struct fl_rng rng;
	fl_rng_seed(&rng, 4);
	fill(mem, n * (size_t)nbuf, &rng);
	memset(y, 0, sizeof(float) * n);
	double bytes = 4.0 * (double)n * nbuf;
	double ga[32], gs[32], ratio[32];
	int bad = 0;
	for (int s = 0; s < o->samples; s++) {
		int reps = 0;
		double t0 = fl_now_seconds(), el;
		do {
			srv_agg_reset(agg);
			for (int b = 0; b < nbuf; b++)
				bad |= srv_agg_add(agg, mem + n * (size_t)b, 600) != 0;
			reps++;
			el = fl_now_seconds() - t0;
		} while (el < o->min_sample_s);
		ga[s] = bytes * reps / el * 1e-9;
		reps = 0;
		t0 = fl_now_seconds();
		do {
			for (int b = 0; b < nbuf; b++)
				stream_add(y, mem + n * (size_t)b, n);
			reps++;
			el = fl_now_seconds() - t0;
		} while (el < o->min_sample_s);
		gs[s] = bytes * reps / el * 1e-9;
		ratio[s] = ga[s] / gs[s];
	}
	double t0 = fl_now_seconds();
	bad |= srv_agg_result(agg, res) != 0;
	double result_ms = (fl_now_seconds() - t0) * 1e3;
	double mga = fl_bench_median(ga, o->samples), mgs = fl_bench_median(gs, o->samples);
	double rat = fl_bench_median(ratio, o->samples);
	printf("{\"bench\":\"agg_add\",\"case\":\"%s\",\"floats\":%zu,\"update_bytes\":%zu,"
	       "\"updates_per_pass\":%d,\"samples\":%d,\"agg_gbps\":%.3f,"
	       "\"agg_ms_per_update\":%.3f,\"stream_add_gbps\":%.3f,\"ratio_to_stream_add\":%.3f,"
	       "\"result_ms\":%.3f,\"errors\":%d,\"checksum\":%.6g}\n",
	       label, n, 4 * n, nbuf, o->samples, mga, 4.0 * (double)n / mga * 1e-6, mgs, rat,
	       result_ms, bad, (double)y[n / 2] + (double)res[n / 3]);
	fflush(stdout);
	srv_agg_free(agg);
	free(mem);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: fl-bench [--threads N] [--quick] [--help]\n"
		   "  Prints JSON lines: OpenBLAS sgemm GFLOP/s at 1024^3, then LoHa dW\n"
		   "  forward+backward GFLOP/s (median) and the ratio to sgemm for linear\n"
		   "  256x256 r16, 256x784 r16, 4096x4096 r64 and Tucker conv 64x32x3x3 r8,\n"
		   "  then srv_agg_add GB/s against a streaming y += x for 320k and 4M floats.\n"
		   "  --threads N  OpenBLAS threads (default 1)\n"
		   "  --quick      fewer, shorter samples\n");
}

int main(int argc, char **argv)
{
	struct bench_opts o = {1, 7, 0.25};
	int quick = 0;
	for (int i = 1; i < argc; i++) {
		if (fl_bench_common_arg(argv[i], usage, &quick)) {
			continue;
		} else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
			char *end;
			long v = strtol(argv[++i], &end, 10);
			if (*end || v < 1 || v > 256) {
				fprintf(stderr, "fl-bench: --threads wants 1..256, got '%s'\n",
					argv[i]);
				return 2;
			}
			o.threads = (int)v;
		} else {
			return fl_bench_bad_arg("fl-bench", argv[i], usage);
		}
	}
	if (quick) {
		o.samples = 3;
		o.min_sample_s = 0.05;
	}
	fl_blas_set_threads(o.threads);
	struct fl_bench_sgemm sg = {.n = 1024};
	if (fl_bench_sgemm_init(&sg) != 0) {
		fprintf(stderr, "fl-bench: out of memory\n");
		fl_bench_sgemm_free(&sg);
		return 1;
	}
	bench_sgemm(&o, &sg);
	/* linear m x n = out x in: 256x256, the pFedPara fc1 (784 -> 256) */
	bench_loha(&o, &sg, "linear_256x256_r16", FL_LOHA_FORM_LINEAR, 256, 256, 1, 16);
	bench_loha(&o, &sg, "linear_256x784_r16", FL_LOHA_FORM_LINEAR, 256, 784, 1, 16);
	bench_loha(&o, &sg, "linear_4096x4096_r64", FL_LOHA_FORM_LINEAR, 4096, 4096, 1, 64);
	bench_loha(&o, &sg, "tucker_64x32x3x3_r8", FL_LOHA_FORM_TUCKER, 64, 32, 3, 8);
	/* a cnn fedpara gamma 0.1 update (324318 floats, fl-bench-train), and 4M floats */
	bench_agg(&o, "agg_cnn_fedpara_g0.1", 324318, 8);
	bench_agg(&o, "agg_4M", (size_t)4 << 20, 4);
	fl_bench_sgemm_free(&sg);
	return 0;
}
