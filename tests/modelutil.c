/* modelutil.c - see modelutil.h. */
#include "modelutil.h"

#include "errors.h"
#include "testutil.h"

#include <stdio.h>

struct fl_model *fl_test_model(const char *arch, int c, int h, int w, int classes,
			       const struct fl_peft_config *cfg, uint64_t seed, int max_batch)
{
	struct fl_model *m = NULL;
	int err = fl_model_new(arch, c, h, w, classes, cfg, seed, max_batch, &m);
	FL_CHECK_MSG(err == FL_OK, "fl_model_new(%s): %s", arch, fl_error_msg());
	return err ? NULL : m;
}

int fl_test_next_weight(struct fl_model *m, int *i, struct fl_model_layer_info *li, char name[64])
{
	for (; *i < fl_model_layer_count(m); ++*i) {
		fl_model_layer_info(m, *i, li);
		if (li->kind == FL_LAYER_LINEAR || li->kind == FL_LAYER_CONV2D) {
			snprintf(name, 64, "%s.weight", li->name);
			return 1;
		}
	}
	return 0;
}

struct fl_model *fl_test_small_model(const char *arch, struct fl_peft_config *cfg)
{
	struct fl_model *m = fl_test_model(arch, 1, 8, 8, 4, cfg, 3, 4);
	fl_peft_config_free(cfg);
	return m;
}

struct fl_dataset *fl_test_dataset(int n, int c, int h, int w, int classes, uint64_t seed,
				   fl_test_fill_fn fill)
{
	struct fl_dataset *d = NULL;
	if (fl_dataset_new(n, c, h, w, classes, &d) != FL_OK)
		return NULL;
	struct fl_rng rng;
	fl_rng_seed(&rng, seed);
	size_t px = (size_t)c * h * w;
	for (int i = 0; i < n; i++)
		fill(i, &rng, &d->labels[i], d->pixels + (size_t)i * px);
	return d;
}
