/* test_rng.c - the seeded generator: known answers, replay, ranges,
 * moments. The known answers are the published first outputs of splitmix64
 * (state 0) and xoshiro256** (state {1, 2, 3, 4}), and values from an
 * independent Python implementation of the seeding, streams and draws. */
#include "rng.h"
#include "testutil.h"

#include <math.h>

/* splitmix64 from state 0 fills the state; xoshiro256** from {1,2,3,4}. */
static void test_known_generators(void)
{
	struct fl_rng r;
	fl_rng_seed(&r, 0);
	FL_CHECK(r.s[0] == 0xe220a8397b1dcdafull);
	FL_CHECK(r.s[1] == 0x6e789e6aa1b965f4ull);
	FL_CHECK(r.s[2] == 0x06c45d188009454full);
	FL_CHECK(r.s[3] == 0xf88bb8a8724c81ecull);
	struct fl_rng x = {{1, 2, 3, 4}};
	const uint64_t want[6] = {11520ull,
				  0ull,
				  1509978240ull,
				  1215971899390074240ull,
				  1216172134540287360ull,
				  607988272756665600ull};
	for (int i = 0; i < 6; i++)
		FL_CHECK(fl_rng_next(&x) == want[i]);
}

/* Seeds, streams and the derived draws, against the Python reference. */
static void test_known_draws(void)
{
	struct fl_rng r;
	fl_rng_seed(&r, 42);
	FL_CHECK(fl_rng_next(&r) == 0x15780b2e0c2ec716ull);
	FL_CHECK(fl_rng_next(&r) == 0x6104d9866d113a7eull);
	fl_rng_seed_stream(&r, 42, 7);
	FL_CHECK(fl_rng_next(&r) == 0xeb79258aaf49652dull);
	FL_CHECK(fl_rng_next(&r) == 0x2668af30afd641a7ull);
	fl_rng_seed(&r, 1);
	FL_CHECK(fl_rng_uniform(&r) == 0.7029218077659607f);
	FL_CHECK(fl_rng_uniform(&r) == 0.5204365849494934f);
	fl_rng_seed(&r, 1);
	FL_CHECK_NEAR(fl_rng_normal(&r), -1.5452228371402943, 1e-6, 0);
	fl_rng_seed(&r, 3);
	const uint64_t below[8] = {8, 0, 5, 2, 6, 7, 8, 8};
	for (int i = 0; i < 8; i++)
		FL_CHECK(fl_rng_below(&r, 10) == below[i]);
}

static void test_replay(void)
{
	struct fl_rng a, b, c;
	fl_rng_seed(&a, 42);
	fl_rng_seed(&b, 42);
	fl_rng_seed_stream(&c, 42, 1);
	int same_c = 1;
	for (int i = 0; i < 1000; i++) {
		uint64_t x = fl_rng_next(&a), y = fl_rng_next(&b);
		FL_CHECK(x == y);
		if (fl_rng_next(&c) != x)
			same_c = 0;
	}
	FL_CHECK(!same_c);
}

static void test_moments(void)
{
	struct fl_rng r;
	fl_rng_seed(&r, 7);
	int n = 200000;
	double su = 0, sn = 0, sn2 = 0, sg = 0;
	for (int i = 0; i < n; i++) {
		float u = fl_rng_uniform(&r);
		FL_CHECK(u >= 0.0f && u < 1.0f);
		su += u;
		float z = fl_rng_normal(&r);
		sn += z;
		sn2 += (double)z * z;
		sg += fl_rng_gamma(&r, 0.5);
	}
	FL_CHECK_NEAR(su / n, 0.5, 0, 0.005);
	FL_CHECK_NEAR(sn / n, 0.0, 0, 0.01);
	FL_CHECK_NEAR(sn2 / n, 1.0, 0, 0.01);
	FL_CHECK_NEAR(sg / n, 0.5, 0, 0.01);
	int counts[5] = {0};
	for (int i = 0; i < 50000; i++)
		counts[fl_rng_below(&r, 5)]++;
	for (int i = 0; i < 5; i++)
		FL_CHECK_NEAR(counts[i] / 50000.0, 0.2, 0, 0.01);
}

static void test_shuffle(void)
{
	struct fl_rng r;
	fl_rng_seed(&r, 3);
	int v[100], seen[100] = {0};
	for (int i = 0; i < 100; i++)
		v[i] = i;
	fl_rng_shuffle_int(&r, v, 100);
	int moved = 0;
	for (int i = 0; i < 100; i++) {
		seen[v[i]]++;
		moved += v[i] != i;
	}
	for (int i = 0; i < 100; i++)
		FL_CHECK(seen[i] == 1);
	FL_CHECK(moved > 80);
}

int main(void)
{
	FL_RUN(test_known_generators);
	FL_RUN(test_known_draws);
	FL_RUN(test_replay);
	FL_RUN(test_moments);
	FL_RUN(test_shuffle);
	return fl_test_main_end();
}
