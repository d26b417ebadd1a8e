/* aggregate.c - the fixed-point weighted-average accumulator and the fold
 * of partial sums (see aggregate.h). Plain sequential loops; no server
 * optimiser, no I/O. */
#include "aggregate.h"

#include "errors.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct srv_agg {
	size_t n;
	size_t count;
	uint64_t weight;
	__int128 *acc;
};

#define AGG_SCALE ((double)((uint64_t)1 << SRV_AGG_FRAC_BITS)) /* 2^40 */
#define AGG_WEIGHT_TOTAL_MAX ((uint64_t)1 << 62)

int srv_agg_new(size_t n, struct srv_agg **out)
{
	*out = NULL;
	struct srv_agg *a = calloc(1, sizeof(*a));
	if (!a)
		return fl_error_set(FL_ENOMEM, "aggregate: out of memory");
	a->n = n;
	if (n) {
		if (n > SIZE_MAX / sizeof(__int128)) {
			free(a);
			return fl_error_set(FL_ERANGE, "aggregate: %zu elements is too many", n);
		}
		a->acc = calloc(n, sizeof(__int128));
		if (!a->acc) {
			free(a);
			return fl_error_set(FL_ENOMEM, "aggregate: out of memory for %zu elements",
					    n);
		}
	}
	*out = a;
	return FL_OK;
}

void srv_agg_free(struct srv_agg *a)
{
	if (!a)
		return;
	free(a->acc);
	free(a);
}

void srv_agg_reset(struct srv_agg *a)
{
	if (a->n)
		memset(a->acc, 0, a->n * sizeof(__int128));
	a->count = 0;
	a->weight = 0;
}

int srv_agg_add(struct srv_agg *a, const float *x, uint64_t w)
{
	if (w == 0 || w > SRV_AGG_WEIGHT_MAX)
		return fl_error_set(FL_EINVAL, "aggregate: weight %llu is outside 1..2^32",
				    (unsigned long long)w);
	if (a->weight + w > AGG_WEIGHT_TOTAL_MAX)
		return fl_error_set(FL_ERANGE, "aggregate: total weight over 2^62");
	for (size_t i = 0; i < a->n; i++) {
		if (!isfinite(x[i]))
			return fl_error_set(FL_ENONFINITE, "aggregate: value %zu is not finite", i);
		if (fabs((double)x[i]) > SRV_AGG_ABS_MAX)
			return fl_error_set(FL_ERANGE,
					    "aggregate: value %zu (%g) exceeds |x| <= %g", i,
					    (double)x[i], SRV_AGG_ABS_MAX);
	}
	/* |x| * 2^40 <= 1e6 * 2^40 < 2^60 fits a long long; times w <= 2^32
	 * gives < 2^92 per update, so 2^35 updates fit the 127-bit sum. */
	__int128 wi = (__int128)w;
	for (size_t i = 0; i < a->n; i++)
		a->acc[i] += (__int128)llround((double)x[i] * AGG_SCALE) * wi;
	a->weight += w;
	a->count++;
	return FL_OK;
}

const __int128 *srv_agg_sums(const struct srv_agg *a)
{
	return a->acc;
}

/* |round(x * 2^40)| for the largest |x| an update may hold: 1e6 * 2^40 is an
 * integer below 2^60. */
#define AGG_ELEM_MAX ((int64_t)(SRV_AGG_ABS_MAX * AGG_SCALE))

int srv_agg_fold(struct srv_agg *a, const __int128 *sums, uint64_t weight, uint64_t count)
{
	if (weight == 0 || weight > AGG_WEIGHT_TOTAL_MAX)
		return fl_error_set(FL_EINVAL,
				    "aggregate: partial sum weight %llu is outside 1..2^62",
				    (unsigned long long)weight);
	if (count == 0 || count > weight)
		return fl_error_set(FL_EINVAL,
				    "aggregate: partial sum of %llu updates with weight %llu "
				    "(each update weighs at least 1)",
				    (unsigned long long)count, (unsigned long long)weight);
	if (a->weight + weight > AGG_WEIGHT_TOTAL_MAX)
		return fl_error_set(FL_ERANGE, "aggregate: total weight over 2^62");
	/* weight <= 2^62 times < 2^60 stays below 2^122 */
	__int128 lim = (__int128)weight * AGG_ELEM_MAX;
	for (size_t i = 0; i < a->n; i++)
		if (sums[i] > lim || sums[i] < -lim)
			return fl_error_set(FL_ERANGE,
					    "aggregate: partial sum %zu exceeds weight * %g * 2^%d",
					    i, SRV_AGG_ABS_MAX, SRV_AGG_FRAC_BITS);
	for (size_t i = 0; i < a->n; i++)
		a->acc[i] += sums[i];
	a->weight += weight;
	a->count += (size_t)count;
	return FL_OK;
}

/* An exact int128 as long double: the high and low halves are converted
 * separately (each exactly up to 64 bits) and joined, so the only rounding
 * is that of the final sum. */
static long double i128_to_ld(__int128 v)
{
	int neg = v < 0;
	unsigned __int128 u = neg ? -(unsigned __int128)v : (unsigned __int128)v;
	uint64_t hi = (uint64_t)(u >> 64), lo = (uint64_t)u;
	long double r = (long double)hi * 18446744073709551616.0L + (long double)lo;
	return neg ? -r : r;
}

int srv_agg_result(const struct srv_agg *a, float *out)
{
	if (a->count == 0)
		return fl_error_set(FL_EINVAL, "aggregate: no update to average");
	long double den = (long double)a->weight * (long double)AGG_SCALE;
	for (size_t i = 0; i < a->n; i++)
		out[i] = (float)(i128_to_ld(a->acc[i]) / den);
	return FL_OK;
}

size_t srv_agg_count(const struct srv_agg *a)
{
	return a->count;
}

uint64_t srv_agg_total_weight(const struct srv_agg *a)
{
	return a->weight;
}
