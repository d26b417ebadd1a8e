/* modelutil.c - see modelutil.h. */
#include "modelutil.h"

#include "errors.h"
#include "testutil.h"

struct fl_model *fl_test_model(const char *arch, int c, int h, int w, int classes,
			       const struct fl_peft_config *cfg, uint64_t seed, int max_batch)
{
	struct fl_model *m = NULL;
	int err = fl_model_new(arch, c, h, w, classes, cfg, seed, max_batch, &m);
	FL_CHECK_MSG(err == FL_OK, "fl_model_new(%s): %s", arch, fl_error_msg());
	return err ? NULL : m;
}
