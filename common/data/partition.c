/* partition.c - client partitions of sample indices: IID, Dirichlet label
 * skew and label shards, plus per-client holdout (see partition.h).
 *
 * Every strategy produces one array `order` of sample indices and client
 * boundaries `start` (client c owns order[start[c] .. start[c+1])); a common
 * final step shuffles each client's run, caps it, splits off the holdout and
 * sorts both lists. All randomness comes from one fl_rng seeded by cfg->seed.
 * No pixels are touched and nothing is printed except by the summary.
 */
#include "partition.h"

#include "errors.h"
#include "rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void fl_partition_config_init(struct fl_partition_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->kind = FL_PARTITION_IID;
	cfg->clients = 10;
	cfg->alpha = 0.5;
	cfg->shards_per_client = 2;
	cfg->seed = 0;
	cfg->holdout = 0.0;
	cfg->max_per_client = 0;
	cfg->min_per_client = 0;
}

int fl_partition_parse(const char *spec, struct fl_partition_config *cfg)
{
	static const char usage[] = "use iid, dirichlet:ALPHA (e.g. dirichlet:0.5) or shards:K";
	if (!spec || !*spec)
		return fl_error_set(FL_EINVAL, "partition: empty specification; %s", usage);
	if (!strcasecmp(spec, "iid")) {
		cfg->kind = FL_PARTITION_IID;
		return FL_OK;
	}
	const char *colon = strchr(spec, ':');
	size_t klen = colon ? (size_t)(colon - spec) : strlen(spec);
	const char *arg = colon ? colon + 1 : NULL;
	if (klen == 3 && !strncasecmp(spec, "iid", 3))
		return fl_error_set(FL_EINVAL, "partition '%s': iid takes no argument", spec);
	if (klen == 9 && !strncasecmp(spec, "dirichlet", 9)) {
		if (!arg || !*arg)
			return fl_error_set(FL_EINVAL,
					    "partition '%s': dirichlet needs alpha, e.g. "
					    "dirichlet:0.5",
					    spec);
		char *end;
		double a = strtod(arg, &end);
		if (*end || !isfinite(a) || !(a > 0) || a > 1e6)
			return fl_error_set(FL_EINVAL,
					    "partition '%s': alpha must be a number in (0, 1e6]",
					    spec);
		cfg->kind = FL_PARTITION_DIRICHLET;
		cfg->alpha = a;
		return FL_OK;
	}
	if (klen == 6 && !strncasecmp(spec, "shards", 6)) {
		if (!arg || !*arg)
			return fl_error_set(FL_EINVAL,
					    "partition '%s': shards needs the number of "
					    "shards per client, e.g. shards:2",
					    spec);
		char *end;
		long k = strtol(arg, &end, 10);
		if (*end || k < 1 || k > 100000)
			return fl_error_set(FL_EINVAL,
					    "partition '%s': shards per client must be an integer "
					    "in [1, 100000]",
					    spec);
		cfg->kind = FL_PARTITION_SHARDS;
		cfg->shards_per_client = (int)k;
		return FL_OK;
	}
	return fl_error_set(FL_EINVAL, "partition: unknown kind '%s'; %s", spec, usage);
}

/* ---- strategies ------------------------------------------------------- */

/* order = samples grouped by class (class-major), each class's run shuffled;
 * cstart[k] = where class k begins (classes + 1 entries). */
static void group_by_class(int *order, int *cstart, const int32_t *labels, int n, int classes,
			   struct fl_rng *rng)
{
	memset(cstart, 0, sizeof(int) * (size_t)(classes + 1));
	for (int i = 0; i < n; i++)
		cstart[labels[i] + 1]++;
	for (int k = 0; k < classes; k++)
		cstart[k + 1] += cstart[k];
	/* place with cstart[k] as the fill pointer of class k, then shift back */
	for (int i = 0; i < n; i++)
		order[cstart[labels[i]]++] = i;
	for (int k = classes; k > 0; k--)
		cstart[k] = cstart[k - 1];
	cstart[0] = 0;
	for (int k = 0; k < classes; k++)
		fl_rng_shuffle_int(rng, order + cstart[k], cstart[k + 1] - cstart[k]);
}

static void split_iid(int *order, int *start, int n, int clients, struct fl_rng *rng)
{
	for (int i = 0; i < n; i++)
		order[i] = i;
	fl_rng_shuffle_int(rng, order, n);
	int base = n / clients, rem = n % clients;
	for (int c = 0; c <= clients; c++)
		start[c] = c * base + (c < rem ? c : rem);
}

/* One Dirichlet(alpha) draw per class over the clients; each class's
 * samples (class-major, cstart) go to the clients in those proportions:
 * owner[i] is sample i's client. g holds clients doubles of scratch. */
static void dirichlet_owners(int *owner, const int *cstart, int classes, double *g, int clients,
			     double alpha, struct fl_rng *rng)
{
	for (int k = 0; k < classes; k++) {
		int nk = cstart[k + 1] - cstart[k], *own = owner + cstart[k];
		if (nk == 0)
			continue;
		double sum = 0;
		for (int c = 0; c < clients; c++)
			sum += g[c] = fl_rng_gamma(rng, alpha);
		if (!(sum > 0) || !isfinite(sum)) {
			/* every draw underflowed (tiny alpha): Dir -> one-hot */
			int c = (int)fl_rng_below(rng, (uint64_t)clients);
			for (int i = 0; i < nk; i++)
				own[i] = c;
			continue;
		}
		double cum = 0;
		int from = 0;
		for (int c = 0; c < clients; c++) {
			cum += g[c];
			int to = c == clients - 1 ? nk : (int)floor(cum / sum * nk);
			if (to > nk)
				to = nk;
			for (int i = from; i < to; i++)
				own[i] = c;
			if (to > from)
				from = to;
		}
	}
}

/* Dirichlet label skew. owner[pos] = client of class-major position pos. */
static int split_dirichlet(int *order, int *start, const int32_t *labels, int n, int classes,
			   const struct fl_partition_config *cfg, struct fl_rng *rng)
{
	int clients = cfg->clients, need = cfg->min_per_client > 0 ? cfg->min_per_client : 1;
	int *grouped = malloc(sizeof(int) * (size_t)n);
	int *owner = malloc(sizeof(int) * (size_t)n);
	int *cstart = malloc(sizeof(int) * (size_t)(classes + 1));
	double *g = malloc(sizeof(double) * (size_t)clients);
	int err = FL_OK;
	if (!grouped || !owner || !cstart || !g) {
		err = fl_error_set(FL_ENOMEM, "partition: out of memory");
		goto done;
	}
	group_by_class(grouped, cstart, labels, n, classes, rng);
	int tries, smallest = 0;
	for (tries = 0; tries < FL_PARTITION_DIRICHLET_TRIES; tries++) {
		dirichlet_owners(owner, cstart, classes, g, clients, cfg->alpha, rng);
		memset(start, 0, sizeof(int) * (size_t)(clients + 1));
		for (int i = 0; i < n; i++)
			start[owner[i] + 1]++;
		smallest = n;
		for (int c = 0; c < clients; c++)
			if (start[c + 1] < smallest)
				smallest = start[c + 1];
		if (smallest >= need)
			break;
	}
	if (tries == FL_PARTITION_DIRICHLET_TRIES) {
		err = fl_error_set(FL_ERANGE,
				   "partition: dirichlet:%g left a client with %d < %d samples in "
				   "each of %d draws (%d samples, %d clients); use a larger alpha "
				   "or fewer clients",
				   cfg->alpha, smallest, need, tries, n, clients);
		goto done;
	}
	for (int c = 0; c < clients; c++)
		start[c + 1] += start[c];
	/* counting sort of the class-major samples by owner */
	int *fill = malloc(sizeof(int) * (size_t)clients);
	if (!fill) {
		err = fl_error_set(FL_ENOMEM, "partition: out of memory");
		goto done;
	}
	memcpy(fill, start, sizeof(int) * (size_t)clients);
	for (int i = 0; i < n; i++)
		order[fill[owner[i]]++] = grouped[i];
	free(fill);
done:
	free(grouped);
	free(owner);
	free(cstart);
	free(g);
	return err;
}

static int split_shards(int *order, int *start, const int32_t *labels, int n, int classes,
			const struct fl_partition_config *cfg, struct fl_rng *rng)
{
	int clients = cfg->clients, k = cfg->shards_per_client, shards = clients * k;
	int *grouped = malloc(sizeof(int) * (size_t)n);
	int *cstart = malloc(sizeof(int) * (size_t)(classes + 1));
	int *perm = malloc(sizeof(int) * (size_t)shards);
	if (!grouped || !cstart || !perm) {
		free(grouped);
		free(cstart);
		free(perm);
		return fl_error_set(FL_ENOMEM, "partition: out of memory");
	}
	group_by_class(grouped, cstart, labels, n, classes, rng);
	for (int s = 0; s < shards; s++)
		perm[s] = s;
	fl_rng_shuffle_int(rng, perm, shards);
	int base = n / shards, rem = n % shards, pos = 0;
	for (int c = 0; c < clients; c++) {
		start[c] = pos;
		for (int j = 0; j < k; j++) {
			int s = perm[c * k + j];
			int from = s * base + (s < rem ? s : rem), len = base + (s < rem);
			memcpy(order + pos, grouped + from, sizeof(int) * (size_t)len);
			pos += len;
		}
	}
	start[clients] = pos;
	free(grouped);
	free(cstart);
	free(perm);
	return FL_OK;
}

/* ---- make / free ------------------------------------------------------ */

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;
	return (x > y) - (x < y);
}

static int check_config(const int32_t *labels, int n, int classes,
			const struct fl_partition_config *cfg)
{
	int clients = cfg->clients;
	if (clients < 1 || clients > FL_PARTITION_CLIENTS_MAX)
		return fl_error_set(FL_EINVAL, "partition: %d clients (must be 1..%d)", clients,
				    FL_PARTITION_CLIENTS_MAX);
	if (classes < 1 || classes > FL_DATASET_CLASSES_MAX)
		return fl_error_set(FL_EINVAL, "partition: %d classes (must be 1..%d)", classes,
				    FL_DATASET_CLASSES_MAX);
	if (n < clients)
		return fl_error_set(FL_EINVAL,
				    "partition: %d samples cannot be split among %d "
				    "clients",
				    n, clients);
	for (int i = 0; i < n; i++)
		if (labels[i] < 0 || labels[i] >= classes)
			return fl_error_set(FL_EINVAL,
					    "partition: sample %d has label %d, not in [0, %d)", i,
					    labels[i], classes);
	if (!(cfg->holdout >= 0 && cfg->holdout < 1))
		return fl_error_set(FL_EINVAL, "partition: holdout fraction %g not in [0, 1)",
				    cfg->holdout);
	if (cfg->max_per_client < 0 || cfg->min_per_client < 0)
		return fl_error_set(FL_EINVAL, "partition: negative per-client limit");
	switch (cfg->kind) {
	case FL_PARTITION_IID: return FL_OK;
	case FL_PARTITION_DIRICHLET:
		if (!isfinite(cfg->alpha) || !(cfg->alpha > 0))
			return fl_error_set(FL_EINVAL, "partition: dirichlet alpha %g must be > 0",
					    cfg->alpha);
		if ((int64_t)clients * (cfg->min_per_client > 0 ? cfg->min_per_client : 1) > n)
			return fl_error_set(FL_EINVAL,
					    "partition: %d samples cannot give %d clients "
					    "%d each",
					    n, clients, cfg->min_per_client);
		return FL_OK;
	case FL_PARTITION_SHARDS:
		if (cfg->shards_per_client < 1 || (int64_t)clients * cfg->shards_per_client > n)
			return fl_error_set(
				FL_EINVAL,
				"partition: %d clients x %d shards need at least as many "
				"samples (have %d)",
				clients, cfg->shards_per_client, n);
		return FL_OK;
	}
	return fl_error_set(FL_EINVAL, "partition: unknown kind %d", (int)cfg->kind);
}

int fl_partition_make_labels(const int32_t *labels, int n, int classes,
			     const struct fl_partition_config *cfg, struct fl_partition **out)
{
	*out = NULL;
	int err = check_config(labels, n, classes, cfg);
	if (err)
		return err;
	int clients = cfg->clients;
	struct fl_partition *p = calloc(1, sizeof(*p));
	int *order = malloc(sizeof(int) * (size_t)n);
	int *start = malloc(sizeof(int) * (size_t)(clients + 1));
	if (!p || !order || !start)
		goto nomem;
	p->cfg = *cfg;
	p->clients = clients;
	p->client = calloc((size_t)clients, sizeof(*p->client));
	p->storage = malloc(sizeof(int) * (size_t)n);
	if (!p->client || !p->storage)
		goto nomem;
	struct fl_rng rng;
	fl_rng_seed(&rng, cfg->seed);
	if (cfg->kind == FL_PARTITION_IID)
		split_iid(order, start, n, clients, &rng);
	else if (cfg->kind == FL_PARTITION_DIRICHLET)
		err = split_dirichlet(order, start, labels, n, classes, cfg, &rng);
	else
		err = split_shards(order, start, labels, n, classes, cfg, &rng);
	if (err)
		goto fail;
	int *dst = p->storage;
	for (int c = 0; c < clients; c++) {
		int *seg = order + start[c], m = start[c + 1] - start[c];
		fl_rng_shuffle_int(&rng, seg, m);
		if (cfg->max_per_client > 0 && m > cfg->max_per_client)
			m = cfg->max_per_client;
		int hold = (int)floor(cfg->holdout * m + 1e-9);
		if (hold >= m)
			hold = m > 0 ? m - 1 : 0;
		struct fl_partition_client *pc = &p->client[c];
		pc->n_train = m - hold;
		pc->n_holdout = hold;
		pc->train = dst;
		memcpy(dst, seg, sizeof(int) * (size_t)pc->n_train);
		dst += pc->n_train;
		pc->holdout = dst;
		memcpy(dst, seg + pc->n_train, sizeof(int) * (size_t)hold);
		dst += hold;
		qsort(pc->train, (size_t)pc->n_train, sizeof(int), cmp_int);
		qsort(pc->holdout, (size_t)pc->n_holdout, sizeof(int), cmp_int);
	}
	free(order);
	free(start);
	*out = p;
	return FL_OK;
nomem:
	err = fl_error_set(FL_ENOMEM, "partition: out of memory for %d samples", n);
fail:
	free(order);
	free(start);
	fl_partition_free(p);
	return err;
}

int fl_partition_make(const struct fl_dataset *ds, const struct fl_partition_config *cfg,
		      struct fl_partition **out)
{
	return fl_partition_make_labels(ds->labels, ds->n, ds->classes, cfg, out);
}

void fl_partition_free(struct fl_partition *p)
{
	if (!p)
		return;
	free(p->client);
	free(p->storage);
	free(p);
}

int fl_partition_summary(const struct fl_partition *p, const struct fl_dataset *ds, FILE *out)
{
	int *counts = ds ? calloc((size_t)ds->classes, sizeof(int)) : NULL;
	if (ds && !counts)
		return fl_error_set(FL_ENOMEM, "partition: out of memory");
	for (int c = 0; c < p->clients; c++) {
		const struct fl_partition_client *pc = &p->client[c];
		fprintf(out, "client %d: %d samples (%d train, %d holdout)", c,
			pc->n_train + pc->n_holdout, pc->n_train, pc->n_holdout);
		if (ds) {
			memset(counts, 0, sizeof(int) * (size_t)ds->classes);
			for (int i = 0; i < pc->n_train; i++)
				counts[ds->labels[pc->train[i]]]++;
			for (int i = 0; i < pc->n_holdout; i++)
				counts[ds->labels[pc->holdout[i]]]++;
			fputs(" labels [", out);
			for (int k = 0; k < ds->classes; k++)
				fprintf(out, k ? " %d" : "%d", counts[k]);
			fputc(']', out);
		}
		fputc('\n', out);
	}
	free(counts);
	if (ferror(out))
		return fl_error_set(FL_EIO, "partition: writing the summary failed");
	return FL_OK;
}
