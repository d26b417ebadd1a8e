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

#include <stdio.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fedloha reads safetensors data in place and needs a little-endian host"
#endif

static const struct {
	const char *name;
	size_t size;
} fl_dtypes[FL_DTYPE_COUNT] = {
	[FL_DTYPE_F32] = {"F32", 4}, [FL_DTYPE_F16] = {"F16", 2}, [FL_DTYPE_BF16] = {"BF16", 2},
	[FL_DTYPE_F64] = {"F64", 8}, [FL_DTYPE_I64] = {"I64", 8}, [FL_DTYPE_I32] = {"I32", 4},
	[FL_DTYPE_I16] = {"I16", 2}, [FL_DTYPE_I8] = {"I8", 1},	  [FL_DTYPE_U8] = {"U8", 1},
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

static float bits_to_f32(uint32_t u)
{
	float f;
	memcpy(&f, &u, sizeof(f));
	return f;
}

/* IEEE binary16 -> binary32, exact: normals rebias the exponent, subnormals
 * are m * 2^-24 (exact in float), inf and NaN keep sign and payload. */
static float f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t exp = (h >> 10) & 0x1fu;
	uint32_t man = h & 0x3ffu;
	if (exp == 0x1f)
		return bits_to_f32(sign | 0x7f800000u | (man << 13));
	if (exp != 0)
		return bits_to_f32(sign | ((exp + 127 - 15) << 23) | (man << 13));
	float mag = (float)man * 0x1p-24f;
	return sign ? -mag : mag;
}

/* A tensor name made printable for a one-line message (control bytes become
 * '?', long names are cut). */
static const char *msg_name(const char *name, char *buf, size_t cap)
{
	size_t i = 0;
	for (; name[i] && i + 1 < cap; i++)
		buf[i] = ((unsigned char)name[i] < 0x20 || name[i] == 0x7f) ? '?' : name[i];
	buf[i] = '\0';
	return buf;
}

int fl_st_tensor_to_f32(const struct fl_st_tensor *t, float *dst, size_t numel)
{
	char nb[128];
	if (t->numel != numel)
		return fl_error_set(FL_ESHAPE, "tensor '%s': has %zu elements, caller expects %zu",
				    msg_name(t->name, nb, sizeof(nb)), t->numel, numel);
	const unsigned char *src = t->data;
	switch (t->dtype) {
	case FL_DTYPE_F32:
		if (numel)
			memcpy(dst, src, numel * sizeof(float));
		return FL_OK;
	case FL_DTYPE_F16:
		for (size_t i = 0; i < numel; i++) {
			uint16_t h;
			memcpy(&h, src + 2 * i, 2);
			dst[i] = f16_to_f32(h);
		}
		return FL_OK;
	case FL_DTYPE_BF16:
		for (size_t i = 0; i < numel; i++) {
			uint16_t h;
			memcpy(&h, src + 2 * i, 2);
			dst[i] = bits_to_f32((uint32_t)h << 16);
		}
		return FL_OK;
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
				    msg_name(t->name, nb, sizeof(nb)), fl_dtype_name(t->dtype));
	}
}

/* "[2, 3]" into buf. */
static const char *shape_str(const int64_t *shape, int ndim, char *buf, size_t cap)
{
	size_t k = (size_t)snprintf(buf, cap, "[");
	for (int i = 0; i < ndim && k < cap; i++)
		k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
	if (k < cap)
		snprintf(buf + k, cap - k, "]");
	return buf;
}

int fl_st_get_f32(const struct fl_st *st, const char *name, const int64_t *shape, int ndim,
		  float *dst)
{
	char nb[128], sa[200], sb[200];
	const struct fl_st_tensor *t = fl_st_find(st, name);
	if (!t)
		return fl_error_set(FL_ENOTFOUND, "tensor '%s' not found",
				    msg_name(name, nb, sizeof(nb)));
	int same = t->ndim == ndim;
	for (int i = 0; same && i < ndim; i++)
		same = t->shape[i] == shape[i];
	if (!same)
		return fl_error_set(FL_ESHAPE, "tensor '%s': shape %s, expected %s",
				    msg_name(name, nb, sizeof(nb)),
				    shape_str(t->shape, t->ndim, sa, sizeof(sa)),
				    shape_str(shape, ndim < 0 ? 0 : ndim, sb, sizeof(sb)));
	return fl_st_tensor_to_f32(t, dst, t->numel);
}
