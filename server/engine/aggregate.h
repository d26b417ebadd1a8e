/* aggregate.h - order-independent weighted averaging of client updates.
 *
 * Every update x (n floats) with an integer weight w (its num_examples,
 * 1..2^32) is added as round(x[i] * 2^40) * w into a 128-bit fixed-point
 * accumulator per element. Integer sums are exact, so the result does not
 * depend on the order in which updates arrive (bit-identical over any
 * permutation); it equals the exact weighted mean up to the 2^-40
 * quantisation of each value and the final rounding to float.
 *
 * An update is checked whole before anything is added: a non-finite value
 * (FL_ENONFINITE) or one with |x| > SRV_AGG_ABS_MAX (FL_ERANGE) refuses the
 * whole update and leaves the accumulator unchanged.
 *
 * Partial sums: the raw accumulators of one srv_agg (srv_agg_sums) can be
 * folded into another (srv_agg_fold) with their total weight and count.
 * Integer addition is associative, so folding the partial sums of any
 * split of a set of updates gives exactly the accumulator of adding them
 * all to one srv_agg: an aggregator tree computes the flat result bit for
 * bit.
 *
 * This module does not apply server optimisers (optim.h) and keeps no
 * per-client state; memory is 16 bytes per element whatever the number of
 * clients.
 */
#ifndef SRV_AGGREGATE_H
#define SRV_AGGREGATE_H

#include <stddef.h>
#include <stdint.h>

#define SRV_AGG_ABS_MAX 1e6
#define SRV_AGG_WEIGHT_MAX ((uint64_t)1 << 32)
#define SRV_AGG_FRAC_BITS 40

/* Opaque: n accumulators, the total weight and the number of updates. */
struct srv_agg;

/* An empty accumulator over n floats (n may be 0). */
int srv_agg_new(size_t n, struct srv_agg **out);
void srv_agg_free(struct srv_agg *a);
/* Forgets every update. */
void srv_agg_reset(struct srv_agg *a);
/* Adds n floats (the n of _new) with weight w in 1..SRV_AGG_WEIGHT_MAX
 * (FL_EINVAL otherwise). FL_ENONFINITE / FL_ERANGE as above, and FL_ERANGE
 * when the total weight would exceed 2^62; nothing changes on error. */
int srv_agg_add(struct srv_agg *a, const float *x, uint64_t w);
/* out[i] = sum_k w_k x_k[i] / sum_k w_k, rounded to float. FL_EINVAL when
 * no update was added. */
int srv_agg_result(const struct srv_agg *a, float *out);
/* The n raw accumulators (sum_k round(x_k[i] * 2^40) * w_k); valid until
 * the next change of a. */
const __int128 *srv_agg_sums(const struct srv_agg *a);
/* Adds another accumulator's n sums, made of `count` updates of total
 * weight `weight`. Checked whole first: weight in 1..2^62 (FL_EINVAL),
 * count in 1..weight (each update weighs at least 1; FL_EINVAL), every
 * |sums[i]| <= weight * SRV_AGG_ABS_MAX * 2^40, the most updates of that
 * weight can add up to (FL_ERANGE), the total weight at most 2^62
 * (FL_ERANGE); nothing changes on error. */
int srv_agg_fold(struct srv_agg *a, const __int128 *sums, uint64_t weight, uint64_t count);
/* Updates added since _new / _reset (folded ones by their count). */
size_t srv_agg_count(const struct srv_agg *a);
uint64_t srv_agg_total_weight(const struct srv_agg *a);

#endif
