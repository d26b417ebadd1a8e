/* test_partition.c - client partitions: coverage (every sample exactly once),
 * IID balance, Dirichlet skew versus alpha, shards' label limit, holdout,
 * caps, determinism by seed, parsing, summary; on synthetic labels and, when
 * installed, on the real Fashion-MNIST training labels. */
#include "partition.h"
#include "errors.h"
#include "rng.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

enum {
	N = 6000,
	CLASSES = 10
};
static int32_t labels[N]; /* 600 of each class, in random order */

static void make_labels(void)
{
	struct fl_rng r;
	fl_rng_seed(&r, 99);
	int idx[N];
	for (int i = 0; i < N; i++)
		idx[i] = i;
	fl_rng_shuffle_int(&r, idx, N);
	for (int i = 0; i < N; i++)
		labels[idx[i]] = (uint8_t)(i % CLASSES);
}

static struct fl_partition_config config(enum fl_partition_kind kind, int clients, uint64_t seed)
{
	struct fl_partition_config cfg;
	fl_partition_config_init(&cfg);
	cfg.kind = kind;
	cfg.clients = clients;
	cfg.seed = seed;
	return cfg;
}

/* Every index in [0, n) used at most once (exactly once unless capped), lists
 * sorted, holdout = floor(f * size). Returns 1 when all hold. */
static int check_cover(const struct fl_partition *p, int n, int exact, double holdout)
{
	char *seen = calloc((size_t)n, 1);
	int ok = 1, total = 0;
	for (int c = 0; c < p->clients; c++) {
		const struct fl_partition_client *pc = &p->client[c];
		int m = pc->n_train + pc->n_holdout;
		int want = (int)(holdout * m + 1e-9);
		if (want >= m)
			want = m - 1;
		ok &= pc->n_holdout == want && pc->n_train >= 1;
		for (int part = 0; part < 2; part++) {
			const int *v = part ? pc->holdout : pc->train;
			int len = part ? pc->n_holdout : pc->n_train;
			for (int i = 0; i < len; i++) {
				ok &= v[i] >= 0 && v[i] < n && (i == 0 || v[i - 1] < v[i]);
				if (v[i] >= 0 && v[i] < n)
					ok &= !seen[v[i]]++;
			}
			total += len;
		}
	}
	if (exact)
		ok &= total == n;
	free(seen);
	return ok;
}

static void client_counts(const struct fl_partition *p, int c, const int32_t *lab, int *counts)
{
	memset(counts, 0, sizeof(int) * CLASSES);
	const struct fl_partition_client *pc = &p->client[c];
	for (int i = 0; i < pc->n_train; i++)
		counts[lab[pc->train[i]]]++;
	for (int i = 0; i < pc->n_holdout; i++)
		counts[lab[pc->holdout[i]]]++;
}

/* Mean over clients of (largest class count / client size). */
static double mean_max_share(const struct fl_partition *p, const int32_t *lab)
{
	double s = 0;
	for (int c = 0; c < p->clients; c++) {
		int counts[CLASSES], mx = 0, tot = 0;
		client_counts(p, c, lab, counts);
		for (int k = 0; k < CLASSES; k++) {
			mx = counts[k] > mx ? counts[k] : mx;
			tot += counts[k];
		}
		s += (double)mx / tot;
	}
	return s / p->clients;
}

static int same_partition(const struct fl_partition *a, const struct fl_partition *b)
{
	if (a->clients != b->clients)
		return 0;
	for (int c = 0; c < a->clients; c++) {
		const struct fl_partition_client *x = &a->client[c], *y = &b->client[c];
		if (x->n_train != y->n_train || x->n_holdout != y->n_holdout ||
		    memcmp(x->train, y->train, sizeof(int) * (size_t)x->n_train) ||
		    memcmp(x->holdout, y->holdout, sizeof(int) * (size_t)x->n_holdout))
			return 0;
	}
	return 1;
}

static void test_iid(void)
{
	struct fl_partition_config cfg = config(FL_PARTITION_IID, 7, 1);
	cfg.holdout = 0.2;
	struct fl_partition *p = NULL;
	FL_CHECK(fl_partition_make_labels(labels, N, CLASSES, &cfg, &p) == FL_OK);
	if (!p)
		return;
	FL_CHECK(check_cover(p, N, 1, 0.2));
	int lo = N, hi = 0;
	for (int c = 0; c < 7; c++) {
		int m = p->client[c].n_train + p->client[c].n_holdout;
		lo = m < lo ? m : lo;
		hi = m > hi ? m : hi;
	}
	FL_CHECK(lo == 857 && hi == 858); /* 6000 = 7 * 857 + 1 */
	FL_CHECK(p->client[0].n_holdout == 171);
	FL_CHECK(mean_max_share(p, labels) < 0.14); /* near 1/10 */
	fl_partition_free(p);
	fl_partition_free(NULL);
}

static void test_dirichlet_skew(void)
{
	struct fl_partition *p = NULL;
	struct fl_partition_config cfg = config(FL_PARTITION_DIRICHLET, 20, 5);
	double share[3];
	double alphas[3] = {0.1, 0.5, 1000};
	for (int a = 0; a < 3; a++) {
		cfg.alpha = alphas[a];
		cfg.holdout = 0.1;
		FL_CHECK(fl_partition_make_labels(labels, N, CLASSES, &cfg, &p) == FL_OK);
		if (!p)
			return;
		FL_CHECK(check_cover(p, N, 1, 0.1));
		share[a] = mean_max_share(p, labels);
		fl_partition_free(p);
	}
	printf("  mean max-class share: alpha 0.1 %.3f, 0.5 %.3f, 1000 %.3f\n", share[0], share[1],
	       share[2]);
	FL_CHECK(share[0] > 0.5);
	FL_CHECK(share[1] > 0.25 && share[1] < share[0]);
	FL_CHECK(share[2] < 0.13);

	/* min_per_client is honoured */
	cfg.alpha = 0.3;
	cfg.min_per_client = 50;
	FL_CHECK(fl_partition_make_labels(labels, N, CLASSES, &cfg, &p) == FL_OK);
	for (int c = 0; p && c < cfg.clients; c++)
		FL_CHECK(p->client[c].n_train + p->client[c].n_holdout >= 50);
	fl_partition_free(p);

	/* impossible: 10 classes, tiny alpha, 100 clients each needing a sample */
	cfg = config(FL_PARTITION_DIRICHLET, 100, 1);
	cfg.alpha = 1e-4;
	static struct fl_partition dummy;
	p = &dummy; /* must come back NULL */
	FL_CHECK(fl_partition_make_labels(labels, N, CLASSES, &cfg, &p) == FL_ERANGE);
	FL_CHECK(p == NULL && strstr(fl_error_msg(), "larger alpha"));
}

static void test_shards(void)
{
	struct fl_partition_config cfg = config(FL_PARTITION_SHARDS, 10, 3);
	struct fl_partition *p = NULL;
	FL_CHECK(fl_partition_make_labels(labels, N, CLASSES, &cfg, &p) == FL_OK);
	if (!p)
		return;
	FL_CHECK(check_cover(p, N, 1, 0));
	for (int c = 0; c < 10; c++) {
		int counts[CLASSES], present = 0;
		client_counts(p, c, labels, counts);
		for (int k = 0; k < CLASSES; k++)
			present += counts[k] > 0;
		FL_CHECK(present >= 1 && present <= 2);
		FL_CHECK(p->client[c].n_train == 600);
	}
	fl_partition_free(p);
	/* uneven: 6000 / (7 * 3) shards, sizes 285 or 286 */
	cfg = config(FL_PARTITION_SHARDS, 7, 3);
	cfg.shards_per_client = 3;
	cfg.holdout = 0.5;
	FL_CHECK(fl_partition_make_labels(labels, N, CLASSES, &cfg, &p) == FL_OK);
	FL_CHECK(p && check_cover(p, N, 1, 0.5));
	for (int c = 0; p && c < 7; c++) {
		int m = p->client[c].n_train + p->client[c].n_holdout;
		FL_CHECK(m >= 3 * 285 && m <= 3 * 286);
	}
	fl_partition_free(p);
}

static void test_determinism_and_caps(void)
{
	enum fl_partition_kind kinds[3] = {FL_PARTITION_IID, FL_PARTITION_DIRICHLET,
					   FL_PARTITION_SHARDS};
	for (int k = 0; k < 3; k++) {
		struct fl_partition_config cfg = config(kinds[k], 12, 42);
		cfg.holdout = 0.25;
		struct fl_partition *a = NULL, *b = NULL, *c = NULL;
		FL_CHECK(fl_partition_make_labels(labels, N, CLASSES, &cfg, &a) == FL_OK);
		FL_CHECK(fl_partition_make_labels(labels, N, CLASSES, &cfg, &b) == FL_OK);
		cfg.seed = 43;
		FL_CHECK(fl_partition_make_labels(labels, N, CLASSES, &cfg, &c) == FL_OK);
		FL_CHECK(a && b && c && same_partition(a, b) && !same_partition(a, c));
		fl_partition_free(a);
		fl_partition_free(b);
		fl_partition_free(c);
		/* a cap keeps every client at most max samples, none used twice */
		cfg.max_per_client = 100;
		FL_CHECK(fl_partition_make_labels(labels, N, CLASSES, &cfg, &a) == FL_OK);
		FL_CHECK(a && check_cover(a, N, 0, 0.25));
		for (int i = 0; a && i < 12; i++)
			FL_CHECK(a->client[i].n_train == 75 && a->client[i].n_holdout == 25);
		fl_partition_free(a);
	}
	/* one sample per client: holdout never takes the last one */
	struct fl_partition_config cfg = config(FL_PARTITION_IID, 5, 1);
	cfg.holdout = 0.9;
	struct fl_partition *p = NULL;
	FL_CHECK(fl_partition_make_labels(labels, 5, CLASSES, &cfg, &p) == FL_OK);
	FL_CHECK(p && check_cover(p, 5, 1, 0.9) && p->client[4].n_train == 1);
	fl_partition_free(p);
}

static void test_bad_config(void)
{
	struct fl_partition *p = NULL;
	struct fl_partition_config cfg = config(FL_PARTITION_IID, 0, 1);
	FL_CHECK(fl_partition_make_labels(labels, N, CLASSES, &cfg, &p) == FL_EINVAL);
	cfg.clients = 10;
	FL_CHECK(fl_partition_make_labels(labels, 9, CLASSES, &cfg, &p) == FL_EINVAL);
	FL_CHECK(strstr(fl_error_msg(), "9 samples") != NULL);
	cfg.holdout = 1.0;
	FL_CHECK(fl_partition_make_labels(labels, N, CLASSES, &cfg, &p) == FL_EINVAL);
	cfg.holdout = -0.1;
	FL_CHECK(fl_partition_make_labels(labels, N, CLASSES, &cfg, &p) == FL_EINVAL);
	cfg.holdout = 0;
	FL_CHECK(fl_partition_make_labels(labels, N, 5, &cfg, &p) == FL_EINVAL); /* label 9 >= 5 */
	cfg.kind = FL_PARTITION_SHARDS;
	cfg.shards_per_client = 700;
	FL_CHECK(fl_partition_make_labels(labels, N, CLASSES, &cfg, &p) == FL_EINVAL);
	cfg.kind = FL_PARTITION_DIRICHLET;
	cfg.alpha = 0;
	FL_CHECK(fl_partition_make_labels(labels, N, CLASSES, &cfg, &p) == FL_EINVAL);
	FL_CHECK(p == NULL);
}

static void test_parse(void)
{
	struct fl_partition_config cfg;
	fl_partition_config_init(&cfg);
	cfg.clients = 33;
	FL_CHECK(fl_partition_parse("dirichlet:0.25", &cfg) == FL_OK);
	FL_CHECK(cfg.kind == FL_PARTITION_DIRICHLET && cfg.alpha == 0.25 && cfg.clients == 33);
	FL_CHECK(fl_partition_parse("shards:3", &cfg) == FL_OK);
	FL_CHECK(cfg.kind == FL_PARTITION_SHARDS && cfg.shards_per_client == 3);
	FL_CHECK(fl_partition_parse("IID", &cfg) == FL_OK && cfg.kind == FL_PARTITION_IID);
	const char *bad[] = {"",
			     "dirichlet",
			     "dirichlet:",
			     "dirichlet:abc",
			     "dirichlet:-1",
			     "dirichlet:0",
			     "dirichlet:nan",
			     "dirichlet:0.5x",
			     "shards",
			     "shards:0",
			     "shards:2x",
			     "shards:-3",
			     "iid:3",
			     "pathological"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct fl_partition_config before = cfg;
		FL_CHECK_MSG(fl_partition_parse(bad[i], &cfg) == FL_EINVAL, "parse '%s'", bad[i]);
		FL_CHECK(!memcmp(&before, &cfg, sizeof(cfg)));
	}
	FL_CHECK(fl_partition_parse(NULL, &cfg) == FL_EINVAL);
	fl_partition_parse("dirichlet", &cfg);
	FL_CHECK(strstr(fl_error_msg(), "dirichlet:0.5") != NULL);
}

static void test_summary(void)
{
	struct fl_dataset *ds = NULL;
	FL_CHECK(fl_dataset_new(N, 1, 1, 1, CLASSES, &ds) == FL_OK);
	if (!ds)
		return;
	memcpy(ds->labels, labels, sizeof(labels));
	struct fl_partition_config cfg = config(FL_PARTITION_SHARDS, 10, 3);
	cfg.holdout = 0.1;
	struct fl_partition *p = NULL;
	FL_CHECK(fl_partition_make(ds, &cfg, &p) == FL_OK);
	FILE *f = tmpfile();
	FL_CHECK(f && p && fl_partition_summary(p, ds, f) == FL_OK);
	if (f && p) {
		rewind(f);
		char line[512];
		int lines = 0, label_total = 0;
		while (fgets(line, sizeof(line), f)) {
			lines++;
			if (lines == 1) {
				const char *want =
					"client 0: 600 samples (540 train, 60 holdout) labels [";
				FL_CHECK(!strncmp(line, want, strlen(want)));
			}
			char *lb = strchr(line, '[');
			for (char *t = lb ? strtok(lb + 1, " ]\n") : NULL; t;
			     t = strtok(NULL, " ]\n"))
				label_total += atoi(t);
		}
		FL_CHECK(lines == 10 && label_total == N);
	}
	if (f)
		fclose(f);
	fl_partition_free(p);
	fl_dataset_free(ds);
}

/* The real labels: 100 clients as in McMahan et al. and FedPara. */
static void test_fashion_mnist(void)
{
	struct fl_dataset *ds = NULL;
	int err = fl_dataset_load("fashion-mnist", NULL, 1, &ds);
	if (err == FL_ENOTFOUND) {
		printf("skip: Fashion-MNIST not installed (%s)\n", fl_error_msg());
		return;
	}
	FL_CHECK(err == FL_OK);
	if (!ds)
		return;
	struct fl_partition *p = NULL;
	struct fl_partition_config cfg = config(FL_PARTITION_SHARDS, 100, 7);
	FL_CHECK(fl_partition_make(ds, &cfg, &p) == FL_OK);
	FL_CHECK(p && check_cover(p, ds->n, 1, 0));
	int max_labels = 0;
	for (int c = 0; p && c < 100; c++) {
		int counts[CLASSES], present = 0;
		client_counts(p, c, ds->labels, counts);
		for (int k = 0; k < CLASSES; k++)
			present += counts[k] > 0;
		max_labels = present > max_labels ? present : max_labels;
		FL_CHECK(p->client[c].n_train == 600);
	}
	FL_CHECK(max_labels == 2);
	fl_partition_free(p);
	FL_CHECK(fl_partition_parse("dirichlet:0.5", &cfg) == FL_OK);
	cfg.holdout = 0.2;
	FL_CHECK(fl_partition_make(ds, &cfg, &p) == FL_OK);
	FL_CHECK(p && check_cover(p, ds->n, 1, 0.2));
	if (p)
		printf("  fashion-mnist dirichlet:0.5, 100 clients: mean max-class share %.3f\n",
		       mean_max_share(p, ds->labels));
	FL_CHECK(p && mean_max_share(p, ds->labels) > 0.3);
	fl_partition_free(p);
	fl_dataset_free(ds);
}

int main(void)
{
	make_labels();
	FL_RUN(test_iid);
	FL_RUN(test_dirichlet_skew);
	FL_RUN(test_shards);
	FL_RUN(test_determinism_and_caps);
	FL_RUN(test_bad_config);
	FL_RUN(test_parse);
	FL_RUN(test_summary);
	FL_RUN(test_fashion_mnist);
	return fl_test_main_end();
}
