/* model_data.c - a data set's sample shape and labels against a model's
 * description (input shape, classes). It reads the data set, never changes
 * it. */
#include "model_data.h"

#include "errors.h"

#include <stdio.h>
#include <string.h>

int fl_model_desc_check_data(const struct fl_model_desc *d, const struct fl_dataset *ds)
{
	struct fl_desc_shape in = fl_model_data_shape(ds);
	if (d->input.ndim != in.ndim ||
	    memcmp(d->input.dim, in.dim, sizeof(int) * (size_t)in.ndim) != 0) {
		char want[64], got[64];
		return fl_error_set(FL_ESHAPE, "model input %s but the data's samples are %s",
				    fl_desc_shape_str(&d->input, want, sizeof(want)),
				    fl_desc_shape_str(&in, got, sizeof(got)));
	}
	if (d->input.ids != in.ids)
		return fl_error_set(FL_ESHAPE, "the model takes %s but the data holds %s",
				    d->input.ids ? "token ids" : "features",
				    in.ids ? "token ids" : "features");
	for (int i = 0; i < ds->n; i++)
		if (ds->labels[i] < 0 || ds->labels[i] >= d->classes)
			return fl_error_set(FL_EINVAL,
					    "label %d out of range for the model's %d classes",
					    (int)ds->labels[i], d->classes);
	size_t nv = (size_t)ds->n * (size_t)ds->w;
	for (size_t k = 0; in.ids && k < nv; k++)
		if (ds->values[k] >= (float)d->vocab)
			return fl_error_set(
				FL_EINVAL,
				"sample %zu holds token id %.0f, outside the model's vocab "
				"of %d",
				k / (size_t)ds->w, (double)ds->values[k], d->vocab);
	return FL_OK;
}

int fl_model_check_data(const struct fl_model *m, const struct fl_dataset *ds)
{
	const struct fl_model_desc *d = fl_model_description(m);
	if (!d)
		return fl_error_set(FL_EINVAL, "the model has no description");
	return fl_model_desc_check_data(d, ds);
}
