/* benchutil.c - median, the sgemm baseline and the common options of the
 * benchmarks. */
#include "benchutil.h"

#include "blas.h"

#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

double fl_bench_median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(double), cmp_double);
	return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int fl_bench_sgemm_init(struct fl_bench_sgemm *g)
{
	size_t nn = (size_t)g->n * g->n;
	g->a = calloc(nn, sizeof(float));
	g->b = calloc(nn, sizeof(float));
	g->c = calloc(nn, sizeof(float));
	if (!g->a || !g->b || !g->c)
		return -1;
	for (size_t i = 0; i < nn; i++)
		g->a[i] = g->b[i] = (float)(i % 7) * 0.25f - 0.75f;
	fl_blas_sgemm(0, 0, g->n, g->n, g->n, 1.0f, g->a, g->n, g->b, g->n, 0.0f, g->c, g->n);
	return 0;
}

void fl_bench_sgemm_free(struct fl_bench_sgemm *g)
{
	free(g->a), free(g->b), free(g->c);
	g->a = g->b = g->c = NULL;
}

double fl_bench_sgemm_sample(const struct fl_bench_sgemm *g, double min_s)
{
	int n = g->n, reps = 0;
	double t0 = fl_now_seconds(), el;
	do {
		fl_blas_sgemm(0, 0, n, n, n, 1.0f, g->a, n, g->b, n, 0.0f, g->c, n);
		reps++;
		el = fl_now_seconds() - t0;
	} while (el < min_s);
	return 2.0 * n * n * (double)n * reps / el * 1e-9;
}

int fl_bench_common_arg(const char *arg, void (*usage)(FILE *), int *quick)
{
	if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
		usage(stdout);
		exit(0);
	}
	if (strcmp(arg, "--quick") != 0)
		return 0;
	*quick = 1;
	return 1;
}

int fl_bench_bad_arg(const char *prog, const char *arg, void (*usage)(FILE *))
{
	fprintf(stderr, "%s: unknown argument '%s'\n", prog, arg);
	usage(stderr);
	return 2;
}
