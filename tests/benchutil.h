/* benchutil.h - what the benchmark programs share: the monotonic clock
 * (fl_now_seconds of util.h), the median of samples, and the OpenBLAS sgemm
 * baseline measured in the same run, the options every benchmark takes
 * (--help, --quick) and its unknown-argument exit. Benchmarks print figures; they assert
 * nothing. */
#ifndef FL_BENCHUTIL_H
#define FL_BENCHUTIL_H

#include "util.h"

#include <stdio.h>

/* Median of n samples (sorts v in place). */
double fl_bench_median(double *v, int n);

/* An n x n x n sgemm; set n, then init (allocates, fills, warms up). */
struct fl_bench_sgemm {
	int n;
	float *a, *b, *c;
};
int fl_bench_sgemm_init(struct fl_bench_sgemm *g);
void fl_bench_sgemm_free(struct fl_bench_sgemm *g);
/* GFLOP/s of sgemm calls repeated for at least min_s seconds. */
double fl_bench_sgemm_sample(const struct fl_bench_sgemm *g, double min_s);

/* The options every benchmark takes: --help or -h prints usage on stdout
 * and exits 0; --quick sets *quick. Returns 1 when arg was one of them. */
int fl_bench_common_arg(const char *arg, void (*usage)(FILE *), int *quick);
/* Says "PROG: unknown argument 'ARG'" and the usage on stderr; returns 2,
 * the exit status for bad usage. */
int fl_bench_bad_arg(const char *prog, const char *arg, void (*usage)(FILE *));

#endif
