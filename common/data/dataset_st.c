/* dataset_st.c - the safetensors data folder: train.safetensors and
 * test.safetensors, each holding x (N, C, H, W) or (N, F) as U8 or F32 and
 * y (N,) as I32 or I64 class labels (format in docs/DATA.md).
 *
 * The safetensors reader (common/format) validates the header, the shapes
 * and the exact tiling of the data area; this file checks what a data set
 * needs on top (names, dtypes, ranks, caps, labels, finite values) before it
 * allocates the data set, and reports one line naming the file and the
 * tensor. It does not normalise, partition or convert token inputs.
 */
#include "dataset.h"

#include "errors.h"
#include "fsutil.h"
#include "safetensors.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The largest file worth reading: the data cap, 8-byte labels for the most
 * samples, the largest header and its length field. */
#define ST_FILE_MAX                                                               \
	((uint64_t)FL_DATASET_BYTES_MAX + 8u * (uint64_t)FL_DATASET_SAMPLES_MAX + \
	 FL_ST_HEADER_MAX + 8u)

/* "(2000, 1, 28, 28)" into buf. */
static const char *shape_str(const struct fl_st_tensor *t, char *buf, size_t cap)
{
	size_t len = 0;
	buf[0] = '\0';
	for (int i = 0; i < t->ndim && len < cap; i++)
		len += (size_t)snprintf(buf + len, cap - len, "%s%lld", i ? ", " : "(",
					(long long)t->shape[i]);
	if (len < cap)
		snprintf(buf + len, cap - len, t->ndim ? ")" : "()");
	return buf;
}

/* The path of the split's file; FL_ENOTFOUND when the folder or the file is
 * missing. */
static int st_path(const char *dir, int train, char *path, size_t cap)
{
	const char *name = train ? "train.safetensors" : "test.safetensors";
	struct stat sb;
	if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
		return fl_error_set(FL_ENOTFOUND,
				    "safetensors data: %s is not a folder (it should hold "
				    "train.safetensors and test.safetensors)",
				    dir);
	int len = snprintf(path, cap, "%s/%s", dir, name);
	if (len < 0 || (size_t)len >= cap)
		return fl_error_set(FL_EINVAL, "%s: path too long", dir);
	if (stat(path, &sb) != 0)
		return fl_error_set(errno == ENOENT ? FL_ENOTFOUND : FL_EIO,
				    "%s: %s (a safetensors data folder holds train.safetensors "
				    "and test.safetensors)",
				    path, strerror(errno));
	if (!S_ISREG(sb.st_mode))
		return fl_error_set(FL_EIO, "%s: not a regular file", path);
	if ((uint64_t)sb.st_size > ST_FILE_MAX)
		return fl_error_set(FL_ERANGE, "%s: %lld bytes exceed the data set size limit",
				    path, (long long)sb.st_size);
	return FL_OK;
}

/* Checks x's dtype, rank, dimensions and size against the caps. */
static int check_x(const char *path, const struct fl_st_tensor *x)
{
	char sb[160];
	int ids = x->dtype == FL_DTYPE_I32 || x->dtype == FL_DTYPE_I64;
	if (ids && x->ndim != 2)
		return fl_error_set(
			FL_ESHAPE,
			"%s: tensor 'x' holds token ids (%s) of shape %s; expected (N, L)", path,
			fl_dtype_name(x->dtype), shape_str(x, sb, sizeof(sb)));
	if (x->dtype != FL_DTYPE_U8 && x->dtype != FL_DTYPE_F32 && !ids)
		return fl_error_set(FL_EFORMAT,
				    "%s: tensor 'x' is %s; expected U8 (scaled by 1/255), F32, or "
				    "I32 / I64 token ids",
				    path, fl_dtype_name(x->dtype));
	if (x->ndim != 2 && x->ndim != 4)
		return fl_error_set(
			FL_ESHAPE, "%s: tensor 'x' has shape %s; expected (N, C, H, W) or (N, F)%s",
			path, shape_str(x, sb, sizeof(sb)),
			x->ndim == 3 ? " (add the channel dimension: x.unsqueeze(1))" : "");
	for (int i = 0; i < x->ndim; i++)
		if (x->shape[i] == 0)
			return fl_error_set(FL_ESHAPE,
					    "%s: tensor 'x' has shape %s: dimension %d is 0", path,
					    shape_str(x, sb, sizeof(sb)), i);
	uint64_t sample = x->numel / (uint64_t)x->shape[0];
	if (x->shape[0] > FL_DATASET_SAMPLES_MAX || sample > FL_DATASET_SAMPLE_BYTES_MAX ||
	    (x->ndim == 4 && x->shape[1] > FL_DATASET_CHANNELS_MAX) ||
	    x->nbytes > FL_DATASET_BYTES_MAX)
		return fl_error_set(
			FL_ERANGE,
			"%s: tensor 'x' of shape %s exceeds the size limits (%d samples, "
			"%d channels, %u values a sample, %zu bytes)",
			path, shape_str(x, sb, sizeof(sb)), FL_DATASET_SAMPLES_MAX,
			FL_DATASET_CHANNELS_MAX, FL_DATASET_SAMPLE_BYTES_MAX, FL_DATASET_BYTES_MAX);
	return FL_OK;
}

/* Checks y's dtype and shape against x's sample count. */
static int check_y(const char *path, const struct fl_st_tensor *y, int64_t n)
{
	char sb[160];
	if (y->dtype != FL_DTYPE_I32 && y->dtype != FL_DTYPE_I64)
		return fl_error_set(FL_EFORMAT, "%s: tensor 'y' is %s; expected I32 or I64 labels",
				    path, fl_dtype_name(y->dtype));
	if (y->ndim != 1)
		return fl_error_set(FL_ESHAPE, "%s: tensor 'y' has shape %s; expected (N,)", path,
				    shape_str(y, sb, sizeof(sb)));
	if (y->shape[0] != n)
		return fl_error_set(FL_ESHAPE,
				    "%s: tensor 'y' holds %lld labels but tensor 'x' %lld samples",
				    path, (long long)y->shape[0], (long long)n);
	return FL_OK;
}

/* Copies the labels into ds->labels and sets ds->classes = max + 1 (>= 2). */
static int read_labels(const char *path, const struct fl_st_tensor *y, struct fl_dataset *ds)
{
	const unsigned char *p = y->data;
	int64_t max = 0;
	for (int i = 0; i < ds->n; i++) {
		int64_t v;
		if (y->dtype == FL_DTYPE_I64) {
			memcpy(&v, p + 8 * (size_t)i, 8);
		} else {
			int32_t v32;
			memcpy(&v32, p + 4 * (size_t)i, 4);
			v = v32;
		}
		if (v < 0)
			return fl_error_set(FL_EFORMAT,
					    "%s: tensor 'y': label y[%d] = %lld is negative", path,
					    i, (long long)v);
		if (v >= FL_DATASET_CLASSES_MAX)
			return fl_error_set(
				FL_ERANGE,
				"%s: tensor 'y': label y[%d] = %lld; at most %d classes "
				"are supported",
				path, i, (long long)v, FL_DATASET_CLASSES_MAX);
		ds->labels[i] = (int32_t)v;
		if (v > max)
			max = v;
	}
	ds->classes = max + 1 > 2 ? (int)max + 1 : 2;
	return FL_OK;
}

/* Token ids into float storage: each in [0, FL_DATASET_TOKEN_MAX), where
 * a float holds it exactly. */
static int read_ids(const char *path, const struct fl_st_tensor *x, struct fl_dataset *ds)
{
	const unsigned char *p = x->data;
	for (size_t k = 0; k < x->numel; k++) {
		int64_t v;
		if (x->dtype == FL_DTYPE_I64) {
			memcpy(&v, p + 8 * k, 8);
		} else {
			int32_t v32;
			memcpy(&v32, p + 4 * k, 4);
			v = v32;
		}
		if (v < 0 || v >= FL_DATASET_TOKEN_MAX)
			return fl_error_set(
				FL_ERANGE,
				"%s: tensor 'x': sample %zu holds token id %lld, outside "
				"[0, %d)",
				path, k / (size_t)ds->w, (long long)v, FL_DATASET_TOKEN_MAX);
		ds->values[k] = (float)v;
	}
	return FL_OK;
}

/* Copies x into the data set's storage; F32 values must be finite. */
static int read_x(const char *path, const struct fl_st_tensor *x, struct fl_dataset *ds)
{
	if (ds->tokens)
		return read_ids(path, x, ds);
	if (x->dtype == FL_DTYPE_U8) {
		memcpy(ds->pixels, x->data, x->nbytes);
		return FL_OK;
	}
	int err = fl_st_tensor_to_f32(x, ds->values, x->numel);
	if (err)
		return err;
	size_t sb = x->numel / (size_t)ds->n;
	for (size_t k = 0; k < x->numel; k++)
		if (!isfinite(ds->values[k]))
			return fl_error_set(
				FL_ENONFINITE,
				"%s: tensor 'x': sample %zu holds a non-finite value (%g)", path,
				k / sb, ds->values[k]);
	return FL_OK;
}

/* A data set for x and y, both checked: shape, storage, labels, values. */
static int build(const char *path, const struct fl_st_tensor *x, const struct fl_st_tensor *y,
		 struct fl_dataset **out)
{
	int n = (int)x->shape[0], image = x->ndim == 4;
	int c = image ? (int)x->shape[1] : 1, h = image ? (int)x->shape[2] : 1;
	int w = image ? (int)x->shape[3] : (int)x->shape[1];
	struct fl_dataset *ds;
	int err = x->dtype != FL_DTYPE_U8 ? fl_dataset_new_f32(n, c, h, w, 2, &ds)
					  : fl_dataset_new(n, c, h, w, 2, &ds);
	if (err)
		return err;
	ds->ndim = image ? 3 : 1;
	ds->tokens = x->dtype == FL_DTYPE_I32 || x->dtype == FL_DTYPE_I64;
	err = read_labels(path, y, ds);
	if (!err)
		err = read_x(path, x, ds);
	if (err) {
		fl_dataset_free(ds);
		return err;
	}
	*out = ds;
	return FL_OK;
}

int fl_dataset_load_safetensors(const char *dir, int train, struct fl_dataset **out)
{
	*out = NULL;
	char path[FL_PATH_MAX];
	int err = st_path(dir, train, path, sizeof(path));
	if (err)
		return err;
	struct fl_st *st;
	if ((err = fl_st_read(path, &st)))
		return err;
	const struct fl_st_tensor *x = fl_st_find(st, "x"), *y = fl_st_find(st, "y");
	if (!x || !y)
		err = fl_error_set(FL_ENOTFOUND,
				   "%s: no tensor '%s' (expected x (N, C, H, W) or "
				   "(N, F) and y (N,))",
				   path, x ? "y" : "x");
	if (!err)
		err = check_x(path, x);
	if (!err)
		err = check_y(path, y, x->shape[0]);
	if (!err)
		err = build(path, x, y, out);
	fl_st_free(st);
	return err;
}
