/* modelutil.h - model helpers for the tests that link the model library:
 * a model that must build. Plain checks and files: testutil.h. */
#ifndef FL_MODELUTIL_H
#define FL_MODELUTIL_H

#include "model.h"

#include <stdint.h>

/* fl_model_new that must succeed (a failed check naming arch and the error
 * otherwise): the model, or NULL. */
struct fl_model *fl_test_model(const char *arch, int c, int h, int w, int classes,
			       const struct fl_peft_config *cfg, uint64_t seed, int max_batch);

#endif
