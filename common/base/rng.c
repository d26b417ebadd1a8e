/* rng.c - xoshiro256** (Blackman & Vigna) with splitmix64 seeding. */
#include "rng.h"

#include <assert.h>
#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += FL_RNG_GOLDEN);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

void fl_rng_seed(struct fl_rng *rng, uint64_t seed)
{
	uint64_t x = seed;
	for (int i = 0; i < 4; i++)
		rng->s[i] = splitmix64(&x);
}

void fl_rng_seed_stream(struct fl_rng *rng, uint64_t seed, uint64_t stream)
{
	uint64_t x = seed;
	uint64_t mixed = splitmix64(&x) ^ (stream * 0xd1342543de82ef95ULL + 0x632be59bd9b4e019ULL);
	fl_rng_seed(rng, mixed);
}

uint64_t fl_rng_next(struct fl_rng *rng)
{
	uint64_t *s = rng->s;
	uint64_t result = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

float fl_rng_uniform(struct fl_rng *rng)
{
	return (float)(fl_rng_next(rng) >> 40) * (1.0f / 16777216.0f);
}

double fl_rng_uniform_double(struct fl_rng *rng)
{
	return (double)(fl_rng_next(rng) >> 11) * (1.0 / 9007199254740992.0);
}

uint64_t fl_rng_below(struct fl_rng *rng, uint64_t n)
{
	assert(n > 0);
	uint64_t limit = UINT64_MAX - UINT64_MAX % n;
	uint64_t x;
	do
		x = fl_rng_next(rng);
	while (x >= limit);
	return x % n;
}

float fl_rng_normal(struct fl_rng *rng)
{
	double u1 = 1.0 - fl_rng_uniform_double(rng); /* (0, 1] */
	double u2 = fl_rng_uniform_double(rng);
	return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925 * u2));
}

double fl_rng_gamma(struct fl_rng *rng, double shape)
{
	assert(shape > 0);
	if (shape < 1.0) {
		/* Gamma(a) = Gamma(a + 1) * U^(1/a) */
		double u = 1.0 - fl_rng_uniform_double(rng);
		return fl_rng_gamma(rng, shape + 1.0) * pow(u, 1.0 / shape);
	}
	double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
	for (;;) {
		double x = fl_rng_normal(rng), v = 1.0 + c * x;
		if (v <= 0)
			continue;
		v = v * v * v;
		double u = 1.0 - fl_rng_uniform_double(rng);
		if (log(u) < 0.5 * x * x + d - d * v + d * log(v))
			return d * v;
	}
}

void fl_rng_fill_uniform(struct fl_rng *rng, float *x, size_t n, float bound)
{
	for (size_t i = 0; i < n; i++)
		x[i] = (2.0f * fl_rng_uniform(rng) - 1.0f) * bound;
}

void fl_rng_shuffle_int(struct fl_rng *rng, int *v, int n)
{
	for (int i = n - 1; i > 0; i--) {
		int j = (int)fl_rng_below(rng, (uint64_t)i + 1);
		int t = v[i];
		v[i] = v[j];
		v[j] = t;
	}
}
