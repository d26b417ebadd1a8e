/* test_aggregate.c - the fixed-point weighted average: order independence
 * (bit-identical over permutations), accuracy against a long-double
 * reference, refusals that leave the accumulator unchanged. */
#include "aggregate.h"
#include "errors.h"
#include "rng.h"
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define N 1000
#define K 6

static float upd[K][N];
static const uint64_t weights[K] = {1, 7, 600, 4294967296ull, 33, 12345};

static void fill(void)
{
	for (int k = 0; k < K; k++) {
		fl_test_fill_uniform(upd[k], N, 100 + (uint64_t)k, -3.0f, 3.0f);
		upd[k][0] = 1e6f;   /* the largest accepted magnitude */
		upd[k][1] = -1e-9f; /* small: quantised to 2^-40 ~ 9.1e-13 */
		upd[k][2] = (float)k * 0.1f;
	}
}

static void run_order(const int *order, float *out)
{
	struct srv_agg *a = NULL;
	FL_CHECK(srv_agg_new(N, &a) == FL_OK);
	for (int i = 0; i < K; i++)
		FL_CHECK(srv_agg_add(a, upd[order[i]], weights[order[i]]) == FL_OK);
	FL_CHECK(srv_agg_count(a) == K);
	FL_CHECK(srv_agg_result(a, out) == FL_OK);
	srv_agg_free(a);
}

static void test_order_independent(void)
{
	fill();
	float ref[N], out[N];
	int order[K];
	for (int i = 0; i < K; i++)
		order[i] = i;
	run_order(order, ref);
	struct fl_rng r;
	fl_rng_seed(&r, 5);
	for (int p = 0; p < 20; p++) {
		fl_rng_shuffle_int(&r, order, K);
		run_order(order, out);
		FL_CHECK(memcmp(ref, out, sizeof(ref)) == 0);
	}
	/* Against the exact weighted mean (long double), within float rounding. */
	long double W = 0;
	for (int k = 0; k < K; k++)
		W += (long double)weights[k];
	int bad = 0;
	for (int i = 0; i < N; i++) {
		long double s = 0;
		for (int k = 0; k < K; k++)
			s += (long double)upd[k][i] * (long double)weights[k];
		double exact = (double)(s / W);
		double tol = fabs(exact) * 1.2e-7 + 2e-12;
		if (fabs((double)ref[i] - exact) > tol)
			bad++;
	}
	FL_CHECK_MSG(bad == 0, "%d elements off the exact weighted mean", bad);
	FL_CHECK(ref[0] == 1e6f);
}

static void test_simple_mean(void)
{
	struct srv_agg *a = NULL;
	FL_CHECK(srv_agg_new(3, &a) == FL_OK);
	float x[3] = {1.0f, 2.0f, -4.0f}, y[3] = {3.0f, 0.0f, 0.5f}, out[3];
	FL_CHECK(srv_agg_result(a, out) == FL_EINVAL); /* nothing added yet */
	FL_CHECK(srv_agg_add(a, x, 1) == FL_OK);
	FL_CHECK(srv_agg_add(a, y, 3) == FL_OK);
	FL_CHECK(srv_agg_total_weight(a) == 4);
	FL_CHECK(srv_agg_result(a, out) == FL_OK);
	FL_CHECK(out[0] == 2.5f);
	FL_CHECK(out[1] == 0.5f);
	FL_CHECK(out[2] == -0.625f);
	srv_agg_reset(a);
	FL_CHECK(srv_agg_count(a) == 0 && srv_agg_total_weight(a) == 0);
	FL_CHECK(srv_agg_add(a, y, 2) == FL_OK);
	FL_CHECK(srv_agg_result(a, out) == FL_OK);
	FL_CHECK(out[0] == 3.0f && out[2] == 0.5f);
	srv_agg_free(a);
	srv_agg_free(NULL);
}

static void test_refusals(void)
{
	struct srv_agg *a = NULL;
	FL_CHECK(srv_agg_new(4, &a) == FL_OK);
	float good[4] = {1, 2, 3, 4}, out[4], before[4];
	FL_CHECK(srv_agg_add(a, good, 2) == FL_OK);
	FL_CHECK(srv_agg_result(a, before) == FL_OK);
	float nan_[4] = {5, 5, 5, NAN}, inf_[4] = {INFINITY, 0, 0, 0};
	float big[4] = {9, 9, 9, 1.5e6f}, nbig[4] = {-2e6f, 0, 0, 0};
	FL_CHECK(srv_agg_add(a, nan_, 1) == FL_ENONFINITE);
	FL_CHECK(srv_agg_add(a, inf_, 1) == FL_ENONFINITE);
	FL_CHECK(srv_agg_add(a, big, 1) == FL_ERANGE);
	FL_CHECK(srv_agg_add(a, nbig, 1) == FL_ERANGE);
	FL_CHECK(srv_agg_add(a, good, 0) == FL_EINVAL);
	FL_CHECK(srv_agg_add(a, good, (1ull << 32) + 1) == FL_EINVAL);
	FL_CHECK(srv_agg_count(a) == 1 && srv_agg_total_weight(a) == 2);
	FL_CHECK(srv_agg_result(a, out) == FL_OK);
	FL_CHECK(memcmp(out, before, sizeof(out)) == 0);
	/* The maximal weight is accepted. */
	FL_CHECK(srv_agg_add(a, good, 1ull << 32) == FL_OK);
	FL_CHECK(srv_agg_result(a, out) == FL_OK);
	FL_CHECK(memcmp(out, good, sizeof(out)) == 0);
	srv_agg_free(a);
}

static void test_extremes(void)
{
	/* Many maximal updates: the 128-bit sum must not overflow. */
	struct srv_agg *a = NULL;
	FL_CHECK(srv_agg_new(2, &a) == FL_OK);
	float x[2] = {1e6f, -1e6f}, out[2];
	for (int i = 0; i < 1000; i++)
		FL_CHECK(srv_agg_add(a, x, 1ull << 32) == FL_OK);
	FL_CHECK(srv_agg_result(a, out) == FL_OK);
	FL_CHECK(out[0] == 1e6f && out[1] == -1e6f);
	srv_agg_free(a);
	/* Zero-size accumulator works. */
	FL_CHECK(srv_agg_new(0, &a) == FL_OK);
	FL_CHECK(srv_agg_add(a, NULL, 1) == FL_OK);
	FL_CHECK(srv_agg_result(a, NULL) == FL_OK);
	srv_agg_free(a);
}

int main(void)
{
	FL_RUN(test_order_independent);
	FL_RUN(test_simple_mean);
	FL_RUN(test_refusals);
	FL_RUN(test_extremes);
	return fl_test_main_end();
}
