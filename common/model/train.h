/* train.h - local training and evaluation of a model on a data set:
 * shuffled mini-batches (by seed), softmax cross-entropy, one optimiser step
 * per batch over the model's trainable tensors, the optional FedProx term on
 * the transmitted tensors, and evaluation (loss, accuracy).
 *
 * A trainer owns the batch buffers; the model, optimiser and data set belong
 * to the caller. No printing: callers report progress from the stats. */
#ifndef FL_TRAIN_H
#define FL_TRAIN_H

#include "dataset.h"
#include "model.h"
#include "optim.h"
#include "rng.h"

struct fl_train_stats {
	double loss;     /* mean cross-entropy over the samples seen */
	double accuracy; /* fraction correct */
	long samples;
	double seconds;
};

struct fl_trainer;

/* batch_size >= 1 and <= the model's max batch. */
int fl_trainer_new(struct fl_model *m, const struct fl_optim_config *oc, int batch_size,
		   struct fl_trainer **out);
void fl_trainer_free(struct fl_trainer *t);
struct fl_optim *fl_trainer_optim(struct fl_trainer *t);

/* FedProx: mu/2 ||w - anchor||^2 on the model's transmitted (global) slice,
 * anchor = a copy of that slice taken now (the round's global model).
 * mu = 0 turns it off. */
int fl_trainer_set_prox(struct fl_trainer *t, float mu);

/* One epoch over samples idx[0..n) of ds, order shuffled with rng; the last
 * partial batch is used too. */
int fl_trainer_epoch(struct fl_trainer *t, const struct fl_dataset *ds, const int *idx, int n,
		     struct fl_rng *rng, struct fl_train_stats *st);
/* Loss and accuracy of the model on idx[0..n) (idx NULL: the first n). */
int fl_trainer_evaluate(struct fl_trainer *t, const struct fl_dataset *ds, const int *idx, int n,
			struct fl_train_stats *st);

#endif
