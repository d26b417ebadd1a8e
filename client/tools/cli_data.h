/* cli_data.h - data sets for `fedloha-client train` and `eval`: the
 * --classes label filter, loading with limits and normalisation, and the
 * normalisation saved in a model folder. */
#ifndef CLI_DATA_H
#define CLI_DATA_H

#include "dataset.h"

#include <stddef.h>
#include <stdint.h>

#define CLI_LABELS_MAX 256 /* labels are bytes */

/* "0-4" or "0,2,5-7" into keep[label] = 1; FL_EINVAL with a message on stderr for
 * an empty, malformed, reversed or out-of-range item. */
int cli_classes_parse(const char *s, uint8_t keep[CLI_LABELS_MAX]);
/* Replaces *ds by the samples whose label keep[] marks (same order). */
int cli_classes_keep(struct fl_dataset **ds, const uint8_t *keep, const char *what);
/* Training and test sets of data set `name`; keep: the labels to keep
 * (NULL = all), before the limits apply; normalised with the training
 * set's statistics. */
int cli_data_load(const char *name, const char *path, const uint8_t *keep, int limit,
		  int test_limit, struct fl_dataset **train, struct fl_dataset **test);
/* {"mean": [...], "std": [...]} of the training set, %.9g so floats round-trip. */
void cli_norm_json(const struct fl_dataset *ds, char *buf, size_t cap);
/* 1 when the model folder dir holds the training-set statistics of
 * `channels` channels (meta.norm), then in mean and std; 0 otherwise. */
int cli_norm_saved(const char *dir, int channels, float *mean, float *std);

#endif
