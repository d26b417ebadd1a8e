/* dataset_ops.c - operations on a loaded data set, in uint8 or float
 * storage: normalisation statistics (computed, set, copied), batch gather,
 * subsets and label counts. No file is read here (loaders: dataset.c,
 * dataset_st.c). */
#include "dataset.h"

#include "errors.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Floats of one gathered sample: c*h*w. */
static size_t sample_floats(const struct fl_dataset *ds)
{
	return (size_t)ds->c * (size_t)ds->h * (size_t)ds->w;
}

/* ---- normalisation and gather ----------------------------------------- */

int fl_dataset_set_norm(struct fl_dataset *ds, const float *mean, const float *std)
{
	for (int ch = 0; ch < ds->c; ch++)
		if (!isfinite(mean[ch]) || !isfinite(std[ch]) || !(std[ch] > 0))
			return fl_error_set(FL_EINVAL,
					    "dataset: bad normalisation for channel %d "
					    "(mean %g, std %g)",
					    ch, mean[ch], std[ch]);
	for (int ch = 0; ch < ds->c; ch++) {
		ds->mean[ch] = mean[ch];
		ds->std[ch] = std[ch];
		for (int p = 0; p < 256; p++)
			ds->lut[ch][p] = (float)(((double)p / 255.0 - mean[ch]) / std[ch]);
	}
	return FL_OK;
}

/* Mean and population std of every channel of float storage, in double:
 * the mean first, then the squared deviations from it. */
static void values_norm(const struct fl_dataset *ds, float *mean, float *std)
{
	size_t hw = (size_t)ds->h * (size_t)ds->w, sb = hw * (size_t)ds->c;
	double cnt = (double)ds->n * (double)hw;
	for (int ch = 0; ch < ds->c; ch++) {
		double s = 0, ss = 0;
		for (int i = 0; i < ds->n; i++) {
			const float *p = ds->values + (size_t)i * sb + (size_t)ch * hw;
			for (size_t k = 0; k < hw; k++)
				s += p[k];
		}
		double m = s / cnt;
		for (int i = 0; i < ds->n; i++) {
			const float *p = ds->values + (size_t)i * sb + (size_t)ch * hw;
			for (size_t k = 0; k < hw; k++)
				ss += ((double)p[k] - m) * ((double)p[k] - m);
		}
		double sd = sqrt(ss / cnt);
		mean[ch] = (float)m;
		std[ch] = sd > 1e-12 ? (float)sd : 1.0f;
	}
}

int fl_dataset_compute_norm(struct fl_dataset *ds)
{
	if (ds->n < 1)
		return fl_error_set(FL_EINVAL, "dataset: no samples to compute statistics on");
	if (ds->tokens) /* ids are not features: never normalised */
		return FL_OK;
	if (ds->values) {
		float mean[FL_DATASET_CHANNELS_MAX], std[FL_DATASET_CHANNELS_MAX];
		values_norm(ds, mean, std);
		return fl_dataset_set_norm(ds, mean, std);
	}
	uint64_t hist[FL_DATASET_CHANNELS_MAX][256];
	memset(hist, 0, sizeof(hist));
	size_t hw = (size_t)ds->h * (size_t)ds->w;
	const uint8_t *p = ds->pixels;
	for (int i = 0; i < ds->n; i++)
		for (int ch = 0; ch < ds->c; ch++)
			for (size_t k = 0; k < hw; k++)
				hist[ch][*p++]++;
	float mean[FL_DATASET_CHANNELS_MAX], std[FL_DATASET_CHANNELS_MAX];
	double cnt = (double)ds->n * (double)hw;
	for (int ch = 0; ch < ds->c; ch++) {
		double s = 0, ss = 0;
		for (int v = 0; v < 256; v++)
			s += (double)hist[ch][v] * (v / 255.0);
		double m = s / cnt;
		for (int v = 0; v < 256; v++) {
			double d = v / 255.0 - m;
			ss += (double)hist[ch][v] * d * d;
		}
		double sd = sqrt(ss / cnt);
		mean[ch] = (float)m;
		std[ch] = sd > 1e-12 ? (float)sd : 1.0f;
	}
	return fl_dataset_set_norm(ds, mean, std);
}

int fl_dataset_copy_norm(struct fl_dataset *dst, const struct fl_dataset *src)
{
	if (dst->c != src->c)
		return fl_error_set(FL_ESHAPE,
				    "dataset: cannot copy statistics of %d channels to %d", src->c,
				    dst->c);
	if (dst->ndim != src->ndim || dst->h != src->h || dst->w != src->w ||
	    !dst->values != !src->values || dst->tokens != src->tokens)
		return fl_error_set(FL_ESHAPE,
				    "dataset: test samples are %dx%dx%d %s (ndim %d) but training "
				    "samples are %dx%dx%d %s (ndim %d)",
				    dst->c, dst->h, dst->w, dst->values ? "F32" : "U8", dst->ndim,
				    src->c, src->h, src->w, src->values ? "F32" : "U8", src->ndim);
	if (dst->classes > src->classes)
		return fl_error_set(
			FL_EINVAL, "dataset: the test set has %d classes, the training set only %d",
			dst->classes, src->classes);
	return fl_dataset_set_norm(dst, src->mean, src->std);
}

void fl_dataset_gather(const struct fl_dataset *ds, const int *idx, int count, float *x_out,
		       int *y_out)
{
	size_t hw = (size_t)ds->h * (size_t)ds->w, sb = hw * (size_t)ds->c;
	for (int i = 0; i < count; i++) {
		int s = idx ? idx[i] : i;
		assert(s >= 0 && s < ds->n);
		float *dst = x_out + (size_t)i * sb;
		if (y_out)
			y_out[i] = ds->labels[s];
		if (ds->values) {
			const float *v = ds->values + (size_t)s * sb;
			for (int ch = 0; ch < ds->c; ch++, v += hw, dst += hw)
				for (size_t k = 0; k < hw; k++)
					dst[k] = (v[k] - ds->mean[ch]) / ds->std[ch];
			continue;
		}
		const uint8_t *src = ds->pixels + (size_t)s * sb;
		for (int ch = 0; ch < ds->c; ch++) {
			const float *lut = ds->lut[ch];
			for (size_t k = 0; k < hw; k++)
				dst[k] = lut[src[k]];
			src += hw;
			dst += hw;
		}
	}
}

/* ---- subsets and counts ----------------------------------------------- */

int fl_dataset_subset(const struct fl_dataset *ds, const int *idx, int count,
		      struct fl_dataset **out)
{
	*out = NULL;
	if (count < 1 || (!idx && count > ds->n))
		return fl_error_set(FL_EINVAL, "dataset: subset of %d samples out of %d", count,
				    ds->n);
	if (idx)
		for (int i = 0; i < count; i++)
			if (idx[i] < 0 || idx[i] >= ds->n)
				return fl_error_set(FL_EINVAL,
						    "dataset: subset index %d out of range [0, %d)",
						    idx[i], ds->n);
	struct fl_dataset *sub;
	int err = ds->values ? fl_dataset_new_f32(count, ds->c, ds->h, ds->w, ds->classes, &sub)
			     : fl_dataset_new(count, ds->c, ds->h, ds->w, ds->classes, &sub);
	if (err)
		return err;
	sub->ndim = ds->ndim;
	sub->tokens = ds->tokens;
	size_t sb = sample_floats(ds);
	for (int i = 0; i < count; i++) {
		int s = idx ? idx[i] : i;
		if (ds->values)
			memcpy(sub->values + (size_t)i * sb, ds->values + (size_t)s * sb,
			       sb * sizeof(float));
		else
			memcpy(sub->pixels + (size_t)i * sb, ds->pixels + (size_t)s * sb, sb);
		sub->labels[i] = ds->labels[s];
	}
	memcpy(sub->mean, ds->mean, sizeof(ds->mean));
	memcpy(sub->std, ds->std, sizeof(ds->std));
	memcpy(sub->lut, ds->lut, sizeof(ds->lut));
	*out = sub;
	return FL_OK;
}

void fl_dataset_label_counts(const struct fl_dataset *ds, const int *idx, int count, int *counts)
{
	memset(counts, 0, sizeof(int) * (size_t)ds->classes);
	for (int i = 0; i < count; i++) {
		int s = idx ? idx[i] : i;
		assert(s >= 0 && s < ds->n);
		counts[ds->labels[s]]++;
	}
}
