/* benchutil.h - what the benchmark programs share: the monotonic clock
 * (fl_now_seconds of util.h), the median of samples, and the OpenBLAS sgemm
 * baseline measured in the same run. Benchmarks print figures; they assert
 * nothing. */
#ifndef FL_BENCHUTIL_H
#define FL_BENCHUTIL_H

#include "util.h"

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

#endif
