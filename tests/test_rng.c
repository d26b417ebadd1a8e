/* test_rng.c - the seeded generator: replay, ranges, moments. */
#include "rng.h"
#include "testutil.h"

#include <math.h>

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
	FL_RUN(test_replay);
	FL_RUN(test_moments);
	FL_RUN(test_shuffle);
	return fl_test_main_end();
}
