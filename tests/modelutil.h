/* modelutil.h - model helpers for the tests that link the model library:
 * a model that must build, its weight layers, a synthetic data set filled sample by sample.
 * Plain checks and files: testutil.h. */
#ifndef FL_MODELUTIL_H
#define FL_MODELUTIL_H

#include "dataset.h"
#include "model.h"
#include "rng.h"

#include <stdint.h>

/* fl_model_new that must succeed (a failed check naming arch and the error
 * otherwise): the model, or NULL. */
struct fl_model *fl_test_model(const char *arch, int c, int h, int w, int classes,
			       const struct fl_peft_config *cfg, uint64_t seed, int max_batch);

/* Moves *i to the first layer at or after *i that holds a weight (linear
 * or conv) and fills li and name with "<layer>.weight"; 0 when no layer is
 * left. Loop: for (int i = 0; fl_test_next_weight(m, &i, &li, name); i++). */
int fl_test_next_weight(struct fl_model *m, int *i, struct fl_model_layer_info *li, char name[64]);

/* The small model of the file tests: arch on 1x8x8 inputs, 4 classes,
 * seed 3, batches up to 4, with the PEFT config cfg, which it frees (NULL
 * for dense). NULL, after a failed check, when it does not build. */
struct fl_model *fl_test_small_model(const char *arch, struct fl_peft_config *cfg);

/* Fills sample i: its label and its c*h*w pixels, drawing noise from rng. */
typedef void (*fl_test_fill_fn)(int i, struct fl_rng *rng, int32_t *label, uint8_t *px);

/* A data set of n samples c x h x w over `classes`, every sample filled in
 * order by fill from one generator seeded with seed; NULL when it cannot be
 * allocated. */
struct fl_dataset *fl_test_dataset(int n, int c, int h, int w, int classes, uint64_t seed,
				   fl_test_fill_fn fill);

#endif
