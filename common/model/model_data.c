/* model_data.c - fl_model_check_data: a data set's sample shape and labels
 * against a model's input and classes. It reads the data set, never
 * changes it. */
#include "model_data.h"

#include "errors.h"
#include "model_desc.h"

#include <stdio.h>

int fl_model_check_data(const struct fl_model *m, const struct fl_dataset *ds)
{
	int c = 0, h = 0, w = 0, classes = 0;
	fl_model_input_dims(m, &c, &h, &w, &classes);
	if (c != ds->c || h != ds->h || w != ds->w) {
		char want[64], got[64];
		const struct fl_model_desc *d = fl_model_description(m);
		struct fl_desc_shape in = {3, {c, h, w}};
		struct fl_desc_shape have = {3, {ds->c, ds->h, ds->w}};
		if (ds->ndim == 1)
			have = (struct fl_desc_shape){1, {ds->w, 0, 0}};
		return fl_error_set(FL_ESHAPE, "model input %s but the data's samples are %s",
				    fl_desc_shape_str(d ? &d->input : &in, want, sizeof(want)),
				    fl_desc_shape_str(&have, got, sizeof(got)));
	}
	for (int i = 0; i < ds->n; i++)
		if (ds->labels[i] < 0 || ds->labels[i] >= classes)
			return fl_error_set(FL_EINVAL,
					    "label %d out of range for the model's %d classes",
					    (int)ds->labels[i], classes);
	return FL_OK;
}
