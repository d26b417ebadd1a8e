/* model_data.h - whether a data set fits a model: its samples' shape is
 * the model's input and its labels are within the model's classes. Used
 * wherever a model meets local data (the client session, the tools, the
 * simulator, the server's central evaluation).
 *
 * Not here: loading data (dataset.h), building models (model.h).
 */
#ifndef FL_MODEL_DATA_H
#define FL_MODEL_DATA_H

#include "dataset.h"
#include "model.h"
#include "model_desc.h"

/* FL_OK when ds fits description d. FL_ESHAPE when the samples
 * (fl_model_data_shape: [F] for flat data, (C,H,W) for images) are not the
 * model's input, e.g. "model input (1,28,28) but the data's samples are
 * (784)"; FL_EINVAL for a label outside [0, classes), e.g. "label 12 out of
 * range for the model's 10 classes". */
int fl_model_desc_check_data(const struct fl_model_desc *d, const struct fl_dataset *ds);
/* fl_model_desc_check_data with m's description. */
int fl_model_check_data(const struct fl_model *m, const struct fl_dataset *ds);

#endif
