/* rng.h - explicit, seeded random numbers (xoshiro256**, seeded by
 * splitmix64). Every random choice in fedloha draws from a struct fl_rng the
 * caller owns, so runs replay exactly; there is no global generator. */
#ifndef FL_RNG_H
#define FL_RNG_H

#include <stddef.h>
#include <stdint.h>

struct fl_rng {
	uint64_t s[4];
};

void fl_rng_seed(struct fl_rng *rng, uint64_t seed);
/* Streams each round owns when a choice is drawn afresh within the round:
 * stream round * FL_RNG_ROUND_STREAMS + attempt (the engine's client
 * selection, retried rounds included). Attempts stay below this, else they
 * would draw the next round's stream. */
#define FL_RNG_ROUND_STREAMS 1000u
/* 2^64 / golden ratio, odd: the splitmix64 increment, and the step between
 * the seeds of numbered parties (seed + k * FL_RNG_GOLDEN) so nearby k
 * give far-apart seeds. */
#define FL_RNG_GOLDEN 0x9e3779b97f4a7c15ull

/* An independent stream derived from (seed, stream), e.g. one per client. */
void fl_rng_seed_stream(struct fl_rng *rng, uint64_t seed, uint64_t stream);
uint64_t fl_rng_next(struct fl_rng *rng);
/* Uniform in [0, 1) with 24 random bits (exactly representable as float). */
float fl_rng_uniform(struct fl_rng *rng);
/* Uniform in [0, 1) with 53 random bits. */
double fl_rng_uniform_double(struct fl_rng *rng);
/* Uniform integer in [0, n), n > 0, without modulo bias. */
uint64_t fl_rng_below(struct fl_rng *rng, uint64_t n);
/* Standard normal (Box-Muller, no cached second value, so the stream
 * position depends only on the number of calls). */
float fl_rng_normal(struct fl_rng *rng);
/* Gamma(shape, 1) for shape > 0 (Marsaglia-Tsang), used by Dirichlet. */
double fl_rng_gamma(struct fl_rng *rng, double shape);
/* x[i] = uniform in [-bound, bound) for i < n, one draw each, in order. */
void fl_rng_fill_uniform(struct fl_rng *rng, float *x, size_t n, float bound);
/* Fisher-Yates shuffle of n ints. */
void fl_rng_shuffle_int(struct fl_rng *rng, int *v, int n);

#endif
