/* cli_data.c - the data side of `fedloha-client train` and `eval`: the
 * --classes filter, loading and normalising the training and test sets,
 * and the training-set statistics saved with a model (meta.norm). It does
 * not build or train models. */
#include "cli_data.h"

#include "errors.h"
#include "fsutil.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "0-4" or "0,2,5-7" into keep[label] = 1; -1 with a message on stderr for
 * an empty, malformed, reversed or out-of-range item. */
int cli_classes_parse(const char *s, uint8_t keep[CLI_LABELS_MAX])
{
	memset(keep, 0, CLI_LABELS_MAX);
	const char *p = s;
	for (;;) {
		long v[2];
		int nv = 0;
		for (;;) {
			if (*p < '0' || *p > '9')
				goto bad;
			long x = 0;
			while (*p >= '0' && *p <= '9' && x < CLI_LABELS_MAX)
				x = 10 * x + (*p++ - '0');
			if (x >= CLI_LABELS_MAX) {
				fprintf(stderr,
					"fedloha-client: --classes: label out of range in '%s' "
					"(labels are 0..%d)\n",
					s, CLI_LABELS_MAX - 1);
				return FL_EINVAL;
			}
			v[nv++] = x;
			if (nv == 2 || *p != '-')
				break;
			p++;
		}
		if (nv == 1)
			v[1] = v[0];
		if (v[1] < v[0]) {
			fprintf(stderr,
				"fedloha-client: --classes: reversed range %ld-%ld in '%s'\n", v[0],
				v[1], s);
			return FL_EINVAL;
		}
		for (long x = v[0]; x <= v[1]; x++)
			keep[x] = 1;
		if (*p == '\0')
			return FL_OK;
		if (*p++ != ',')
			goto bad;
	}
bad:
	fprintf(stderr,
		"fedloha-client: --classes: expected labels like 0-4 or 0,2,5-7, got '%s'\n", s);
	return FL_EINVAL;
}

/* Replaces *ds by the samples whose label keep[] marks (same order). */
int cli_classes_keep(struct fl_dataset **ds, const uint8_t *keep, const char *what)
{
	struct fl_dataset *d = *ds;
	for (int c = d->classes; c < CLI_LABELS_MAX; c++)
		if (keep[c])
			return fl_error_set(FL_EINVAL,
					    "--classes: label %d, but the %s set has %d "
					    "classes",
					    c, what, d->classes);
	int *idx = malloc((size_t)(d->n ? d->n : 1) * sizeof(int)), n = 0;
	if (!idx)
		return fl_error_set(FL_ENOMEM, "out of memory");
	for (int i = 0; i < d->n; i++)
		if (d->labels[i] < CLI_LABELS_MAX && keep[d->labels[i]])
			idx[n++] = i;
	int err = FL_OK;
	struct fl_dataset *s = NULL;
	if (n == 0)
		err = fl_error_set(FL_EINVAL, "--classes: no %s sample has one of these labels",
				   what);
	else
		err = fl_dataset_subset(d, idx, n, &s);
	free(idx);
	if (!err) {
		fl_dataset_free(d);
		*ds = s;
	}
	return err;
}

/* keep: the labels to keep (NULL = all), before the limits apply. */
int cli_data_load(const char *name, const char *path, const uint8_t *keep, int limit,
		  int test_limit, struct fl_dataset **train, struct fl_dataset **test)
{
	*train = *test = NULL;
	int err = fl_dataset_load(name, path, 1, train);
	if (!err)
		err = fl_dataset_load(name, path, 0, test);
	if (!err && keep)
		err = cli_classes_keep(train, keep, "training");
	if (!err && keep)
		err = cli_classes_keep(test, keep, "test");
	if (!err && limit > 0 && limit < (*train)->n) {
		struct fl_dataset *s;
		err = fl_dataset_subset(*train, NULL, limit, &s);
		if (!err) {
			fl_dataset_free(*train);
			*train = s;
		}
	}
	if (!err && test_limit > 0 && test_limit < (*test)->n) {
		struct fl_dataset *s;
		err = fl_dataset_subset(*test, NULL, test_limit, &s);
		if (!err) {
			fl_dataset_free(*test);
			*test = s;
		}
	}
	if (!err)
		err = fl_dataset_compute_norm(*train);
	if (!err)
		err = fl_dataset_copy_norm(*test, *train);
	return err;
}

/* {"mean": [...], "std": [...]} of the training set, %.9g so floats round-trip. */
void cli_norm_json(const struct fl_dataset *ds, char *buf, size_t cap)
{
	size_t n = 0;
	n += (size_t)snprintf(buf + n, cap - n, "{\"mean\": [");
	for (int c = 0; c < ds->c && n < cap; c++)
		n += (size_t)snprintf(buf + n, cap - n, "%s%.9g", c ? ", " : "",
				      (double)ds->mean[c]);
	if (n < cap)
		n += (size_t)snprintf(buf + n, cap - n, "], \"std\": [");
	for (int c = 0; c < ds->c && n < cap; c++)
		n += (size_t)snprintf(buf + n, cap - n, "%s%.9g", c ? ", " : "",
				      (double)ds->std[c]);
	if (n < cap)
		snprintf(buf + n, cap - n, "]}");
}

/* The training-set statistics saved with a model (meta.norm), if any. */
int cli_norm_saved(const char *dir, int channels, float *mean, float *std)
{
	char path[FL_PATH_MAX];
	snprintf(path, sizeof(path), "%s/fedloha.json", dir);
	json_error_t je;
	json_t *root = json_load_file(path, 0, &je);
	if (!root)
		return 0;
	json_t *norm = json_object_get(json_object_get(root, "meta"), "norm");
	json_t *jm = json_object_get(norm, "mean"), *js = json_object_get(norm, "std");
	int ok = json_is_array(jm) && json_is_array(js) && (int)json_array_size(jm) == channels &&
		 (int)json_array_size(js) == channels;
	for (int c = 0; ok && c < channels; c++) {
		json_t *a = json_array_get(jm, (size_t)c), *b = json_array_get(js, (size_t)c);
		ok = json_is_number(a) && json_is_number(b);
		if (ok) {
			mean[c] = (float)json_number_value(a);
			std[c] = (float)json_number_value(b);
		}
	}
	json_decref(root);
	return ok;
}
