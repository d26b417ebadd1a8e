/* partition.h - split a data set's sample indices among federated clients:
 * IID, Dirichlet label skew, or label shards (McMahan et al. 2017), each
 * client's samples further split into training and held-out indices (for
 * personalised evaluation).
 *
 *   IID        shuffle all samples, cut into `clients` parts whose sizes
 *              differ by at most one.
 *   DIRICHLET  for every class, proportions p ~ Dir(alpha) over the clients;
 *              the class's shuffled samples are cut at floor(cumsum(p) * n_k)
 *              (FedLab / Flower). Draws are repeated (up to
 *              FL_PARTITION_DIRICHLET_TRIES times) until every client holds at
 *              least min_per_client samples, else FL_ERANGE.
 *   SHARDS     samples sorted by label (random order inside a label), cut
 *              into clients*k shards of equal size (+-1), each client gets k
 *              random shards. A client sees at most k labels when the class
 *              sizes are multiples of the shard size; otherwise a shard can
 *              straddle two labels.
 *
 * Then, per client: shuffle, keep at most max_per_client samples, and move
 * floor(holdout * n) of them (never all) to the held-out list. Both lists
 * come out sorted ascending. The same config and seed always give the same
 * partition. This module only deals in indices; it never copies pixels.
 */
#ifndef FL_PARTITION_H
#define FL_PARTITION_H

#include "dataset.h"

#include <stdint.h>
#include <stdio.h>

#define FL_PARTITION_CLIENTS_MAX 1000000
#define FL_PARTITION_DIRICHLET_TRIES 100

enum fl_partition_kind {
	FL_PARTITION_IID = 0,
	FL_PARTITION_DIRICHLET = 1,
	FL_PARTITION_SHARDS = 2,
};

struct fl_partition_config {
	enum fl_partition_kind kind;
	int clients;           /* >= 1 */
	double alpha;          /* Dirichlet concentration, > 0 */
	int shards_per_client; /* k for SHARDS, >= 1 */
	uint64_t seed;
	double holdout;     /* fraction of each client's samples held out, [0, 1) */
	int max_per_client; /* 0 = no limit */
	int min_per_client; /* Dirichlet only: redraw until every client has this
			       many samples; 0 means 1 */
};

struct fl_partition_client {
	int *train; /* n_train sample indices, ascending */
	int n_train;
	int *holdout; /* n_holdout sample indices, ascending */
	int n_holdout;
};

struct fl_partition {
	struct fl_partition_config cfg; /* the config it was made with */
	int clients;
	struct fl_partition_client *client; /* clients entries */
	int *storage;                       /* all index lists, owned; the clients point into it */
};

/* Defaults: IID, 10 clients, alpha 0.5, 2 shards per client, seed 0, no
 * holdout, no cap, min 1. */
void fl_partition_config_init(struct fl_partition_config *cfg);

/* Parses "iid", "dirichlet:ALPHA" or "shards:K" into cfg->kind and
 * cfg->alpha / cfg->shards_per_client; other fields are left alone.
 * FL_OK or FL_EINVAL with a message. */
int fl_partition_parse(const char *spec, struct fl_partition_config *cfg);

/* Partitions samples 0..n of a label array (labels < classes). FL_EINVAL for
 * a bad config (too few samples for the clients, ...), FL_ERANGE when
 * Dirichlet cannot give every client enough samples, FL_ENOMEM. */
int fl_partition_make_labels(const int32_t *labels, int n, int classes,
			     const struct fl_partition_config *cfg, struct fl_partition **out);
/* The same on a data set's labels. */
int fl_partition_make(const struct fl_dataset *ds, const struct fl_partition_config *cfg,
		      struct fl_partition **out);
/* NULL is a no-op. */
void fl_partition_free(struct fl_partition *p);

/* One line per client:
 *   client 3: 6000 samples (5400 train, 600 holdout) labels [600 600 ...]
 * with per-label counts over train + holdout. FL_OK or FL_EIO. */
int fl_partition_summary(const struct fl_partition *p, const struct fl_dataset *ds, FILE *out);

#endif
