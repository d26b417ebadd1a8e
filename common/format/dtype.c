/* dtype.c - safetensors element types: sizes, header names, and the exact
 * conversion of floating tensors (F32, F16, BF16, F64) to float32, and the
 * shape-checked lookup fl_st_get_f32().
 *
 * Part of the safetensors module (safetensors.h); the file format itself is
 * in safetensors.c. Tensor bytes are little-endian and may be unaligned, so
 * every load goes through memcpy. Only little-endian hosts are supported.
 */
#include "safetensors.h"

#include "errors.h"
#include "half.h"

#include <stdio.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fedloha reads safetensors data in place and needs a little-endian host"
#endif

static const struct {
	const char *name;
	size_t size;
} fl_dtypes[FL_DTYPE_COUNT] = {
	[FL_DTYPE_F32] = {"F32", 4},   [FL_DTYPE_F16] = {"F16", 2}, [FL_DTYPE_BF16] = {"BF16", 2},
	[FL_DTYPE_F64] = {"F64", 8},   [FL_DTYPE_I64] = {"I64", 8}, [FL_DTYPE_I32] = {"I32", 4},
	[FL_DTYPE_I16] = {"I16", 2},   [FL_DTYPE_I8] = {"I8", 1},   [FL_DTYPE_U8] = {"U8", 1},
	[FL_DTYPE_BOOL] = {"BOOL", 1},
};

size_t fl_dtype_size(enum fl_dtype t)
{
	if ((unsigned)t >= FL_DTYPE_COUNT)
		return 0;
	return fl_dtypes[t].size;
}

const char *fl_dtype_name(enum fl_dtype t)
{
	if ((unsigned)t >= FL_DTYPE_COUNT)
		return "?";
	return fl_dtypes[t].name;
}

int fl_dtype_parse(const char *s, enum fl_dtype *out)
{
	for (int i = 0; s && i < FL_DTYPE_COUNT; i++) {
		if (strcmp(s, fl_dtypes[i].name) == 0) {
			*out = (enum fl_dtype)i;
			return FL_OK;
		}
	}
	return FL_EFORMAT;
}

int fl_st_tensor_to_f32(const struct fl_st_tensor *t, float *dst, size_t numel)
{
	char nb[128];
	if (t->numel != numel)
		return fl_error_set(FL_ESHAPE, "tensor '%s': has %zu elements, caller expects %zu",
				    fl_error_safe_str(t->name, nb, sizeof(nb)), t->numel, numel);
	const unsigned char *src = t->data;
	switch (t->dtype) {
	case FL_DTYPE_F32:
		if (numel)
			memcpy(dst, src, numel * sizeof(float));
		return FL_OK;
	case FL_DTYPE_F16:
	case FL_DTYPE_BF16: {
		int bf = t->dtype == FL_DTYPE_BF16;
		for (size_t i = 0; i < numel; i++) {
			uint16_t h;
			memcpy(&h, src + 2 * i, 2);
			dst[i] = bf ? fl_bf16_to_f32(h) : fl_f16_to_f32(h);
		}
		return FL_OK;
	}
	case FL_DTYPE_F64:
		/* Round to nearest; out-of-range values become +-inf (IEEE 754). */
		for (size_t i = 0; i < numel; i++) {
			double d;
			memcpy(&d, src + 8 * i, 8);
			dst[i] = (float)d;
		}
		return FL_OK;
	default:
		return fl_error_set(FL_EUNSUPPORTED, "tensor '%s': dtype %s is not a floating type",
				    fl_error_safe_str(t->name, nb, sizeof(nb)),
				    fl_dtype_name(t->dtype));
	}
}

int fl_st_get_f32(const struct fl_st *st, const char *name, const int64_t *shape, int ndim,
		  float *dst)
{
	char nb[128], sa[200], sb[200];
	const struct fl_st_tensor *t = fl_st_find(st, name);
	if (!t)
		return fl_error_set(FL_ENOTFOUND, "tensor '%s' not found",
				    fl_error_safe_str(name, nb, sizeof(nb)));
	int same = t->ndim == ndim;
	for (int i = 0; same && i < ndim; i++)
		same = t->shape[i] == shape[i];
	if (!same)
		return fl_error_set(FL_ESHAPE, "tensor '%s': shape %s, expected %s",
				    fl_error_safe_str(name, nb, sizeof(nb)),
				    fl_error_shape_str(t->shape, t->ndim, sa, sizeof(sa)),
				    fl_error_shape_str(shape, ndim < 0 ? 0 : ndim, sb, sizeof(sb)));
	return fl_st_tensor_to_f32(t, dst, t->numel);
}
