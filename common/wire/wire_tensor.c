/* wire_tensor.c - tensors on the wire (wire.h): float32 to f32 / f16 / bf16
 * / int8 TensorChunk frames, and the receiver that checks every chunk and
 * decodes it straight into the caller's floats.
 *
 * Conversions: f16 and bf16 round to nearest, ties to even; int8 uses one
 * scale per tensor, max|x| / 127 (1 when all zero), q = clamp(round(x /
 * scale), -127, 127), value = q * scale (the 16-bit conversions are
 * half.h's). Elements are little-endian; only little-endian hosts are
 * supported. Framing is in wire.c; no I/O here.
 */
#include "wire.h"

#include "errors.h"
#include "half.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fedloha sends f32 tensors in place and needs a little-endian host"
#endif

/* ---- element conversions ---- */

static int8_t f32_to_q8(float x, float scale)
{
	float q = roundf(x / scale);
	if (q > 127.0f)
		q = 127.0f;
	if (q < -127.0f)
		q = -127.0f;
	return (int8_t)q;
}

/* numel from a shape; 0 when a dim is negative or the product overflows. */
static int shape_numel(const int64_t *shape, int ndim, size_t *numel)
{
	size_t n = 1;
	for (int i = 0; i < ndim; i++) {
		if (shape[i] < 0 || (uint64_t)shape[i] > SIZE_MAX)
			return 0;
		size_t d = (size_t)shape[i];
		if (d && n > SIZE_MAX / d)
			return 0;
		n *= d;
	}
	*numel = n;
	return 1;
}

/* Checks a descriptor; what = "encode" / "rx". */
static int check_tensor(const struct fl_wire_tensor *t, const char *what)
{
	char nb[64];
	size_t numel;
	if (!t->name || !t->name[0] || strlen(t->name) > FL_WIRE_NAME_MAX)
		return fl_error_set(FL_EINVAL, "wire %s: tensor name '%s' empty or over %d bytes",
				    what, fl_error_safe_str(t->name, nb, sizeof(nb)),
				    FL_WIRE_NAME_MAX);
	if (t->ndim < 0 || t->ndim > FL_WIRE_NDIM_MAX || !shape_numel(t->shape, t->ndim, &numel) ||
	    numel != t->numel)
		return fl_error_set(
			FL_ESHAPE, "wire %s: tensor '%s': bad shape (%d dims) for %zu elements",
			what, fl_error_safe_str(t->name, nb, sizeof(nb)), t->ndim, t->numel);
	if (t->numel && !t->data)
		return fl_error_set(FL_EINVAL, "wire %s: tensor '%s' has no data", what,
				    fl_error_safe_str(t->name, nb, sizeof(nb)));
	return FL_OK;
}

size_t fl_wire_tensor_data_bytes(size_t numel, enum fl_wire_dtype dtype)
{
	return numel * fl_wire_dtype_bytes(dtype);
}

/* ---- sending ---- */

/* Fills dst with elements src[0..n) in dtype; FL_ERANGE at the first value
 * that overflows f16 / bf16 (its index through *bad). */
static int convert_out(void *dst, const float *src, size_t n, enum fl_wire_dtype dtype, float scale,
		       size_t *bad)
{
	uint8_t *d = dst;
	for (size_t i = 0; i < n; i++) {
		uint16_t h;
		switch (dtype) {
		case FL_WIRE_F16:
			h = fl_f32_to_f16(src[i]);
			if ((h & 0x7c00u) == 0x7c00u)
				goto overflow;
			memcpy(d + 2 * i, &h, 2);
			break;
		case FL_WIRE_BF16:
			h = fl_f32_to_bf16(src[i]);
			if ((h & 0x7f80u) == 0x7f80u)
				goto overflow;
			memcpy(d + 2 * i, &h, 2);
			break;
		case FL_WIRE_INT8: d[i] = (uint8_t)f32_to_q8(src[i], scale); break;
		default: memcpy(d + 4 * i, src + i, 4); break;
		}
		continue;
	overflow:
		*bad = i;
		return FL_ERANGE;
	}
	return FL_OK;
}

void fl_wire_tensor_init(struct fl_wire_tensor *w, const char *name, int ndim, const int64_t *shape,
			 size_t numel, float *data)
{
	memset(w, 0, sizeof(*w));
	w->name = name;
	w->ndim = ndim;
	for (int d = 0; d < ndim; d++)
		w->shape[d] = shape[d];
	w->numel = numel;
	w->data = data;
}

/* Every value finite; *scale: int8's max|x| / 127 (0 for the others). */
static int encode_scale(const struct fl_wire_tensor *t, enum fl_wire_dtype dtype, float *scale)
{
	char nb[64];
	/* Finite check and max|x| over the whole tensor before any frame. */
	float amax = 0.0f;
	for (size_t i = 0; i < t->numel; i++) {
		if (!isfinite(t->data[i]))
			return fl_error_set(FL_ENONFINITE,
					    "wire encode: tensor '%s': non-finite value at %zu",
					    fl_error_safe_str(t->name, nb, sizeof(nb)), i);
		if (fabsf(t->data[i]) > amax)
			amax = fabsf(t->data[i]);
	}
	*scale = 0.0f;
	if (dtype == FL_WIRE_INT8) {
		*scale = amax > 0.0f ? amax / 127.0f : 1.0f;
		if (*scale == 0.0f) /* max|x| so tiny that the division underflowed */
			*scale = 0x1p-149f;
	}
	return FL_OK;
}

/* One TensorChunk frame: cnt elements from off (scratch holds cnt
 * converted elements for the dtypes other than f32). */
static int encode_chunk(uint64_t round, const struct fl_wire_tensor *t, enum fl_wire_dtype dtype,
			float scale, uint64_t *shape, size_t off, size_t cnt, int last,
			uint8_t *scratch, struct fl_buf **frame)
{
	char nb[64];
	size_t bad = 0;
	Fedloha__V1__TensorChunk ch = FEDLOHA__V1__TENSOR_CHUNK__INIT;
	ch.round = round;
	ch.name = (char *)t->name;
	ch.n_shape = (size_t)t->ndim;
	ch.shape = shape;
	ch.dtype = (Fedloha__V1__DType)dtype;
	ch.scale = scale;
	ch.offset = off;
	ch.last = last;
	ch.data.len = cnt * fl_wire_dtype_bytes(dtype);
	if (dtype == FL_WIRE_F32) {
		ch.data.data = cnt ? (uint8_t *)(t->data + off) : NULL;
	} else if (convert_out(scratch, t->data + off, cnt, dtype, scale, &bad)) {
		return fl_error_set(
			FL_ERANGE, "wire encode: tensor '%s': value %g at %zu overflows %s",
			fl_error_safe_str(t->name, nb, sizeof(nb)), (double)t->data[off + bad],
			off + bad, fl_wire_dtype_name(dtype));
	} else {
		ch.data.data = scratch;
	}
	Fedloha__V1__Envelope env = FEDLOHA__V1__ENVELOPE__INIT;
	env.body_case = FEDLOHA__V1__ENVELOPE__BODY_CHUNK;
	env.chunk = &ch;
	return fl_wire_encode(&env, frame);
}

int fl_wire_tensor_encode(uint64_t round, const struct fl_wire_tensor *t, enum fl_wire_dtype dtype,
			  size_t chunk_bytes, struct fl_buf ***frames, size_t *nframes)
{
	size_t esz = fl_wire_dtype_bytes(dtype);
	int rc = check_tensor(t, "encode");
	if (rc)
		return rc;
	if (!esz)
		return fl_error_set(FL_EINVAL, "wire encode: unknown dtype %d", (int)dtype);
	if (chunk_bytes < esz)
		return fl_error_set(FL_EINVAL,
				    "wire encode: chunk of %zu bytes holds no %s element",
				    chunk_bytes, fl_wire_dtype_name(dtype));
	float scale = 0.0f;
	if ((rc = encode_scale(t, dtype, &scale)))
		return rc;
	size_t per = chunk_bytes / esz;
	if (per > t->numel)
		per = t->numel;
	size_t nchunks = t->numel ? (t->numel + per - 1) / per : 1;
	size_t n0 = *nframes;
	if (nchunks > (SIZE_MAX / sizeof(**frames)) - n0)
		return fl_error_set(FL_ERANGE, "wire encode: too many chunks");
	struct fl_buf **v = realloc(*frames, (n0 + nchunks) * sizeof(*v));
	if (!v)
		return fl_error_set(FL_ENOMEM, "wire encode: out of memory for %zu frames",
				    nchunks);
	*frames = v;
	uint8_t *scratch = NULL;
	if (dtype != FL_WIRE_F32 && per) {
		scratch = malloc(per * esz);
		if (!scratch) {
			rc = fl_error_set(FL_ENOMEM, "wire encode: out of memory");
			goto fail;
		}
	}
	uint64_t shape[FL_WIRE_NDIM_MAX];
	for (int i = 0; i < t->ndim; i++)
		shape[i] = (uint64_t)t->shape[i];
	for (size_t c = 0; c < nchunks; c++) {
		size_t off = c * per, cnt = t->numel - off < per ? t->numel - off : per;
		rc = encode_chunk(round, t, dtype, scale, shape, off, cnt, c + 1 == nchunks,
				  scratch, &v[*nframes]);
		if (rc)
			goto fail;
		(*nframes)++;
	}
	free(scratch);
	return FL_OK;
fail:
	/* Leave the caller's list as it was. */
	while (*nframes > n0)
		fl_buf_unref(v[--*nframes]);
	free(scratch);
	return rc;
}

/* ---- receiving ---- */

struct rx_tensor {
	struct fl_wire_tensor t; /* name owned by the receiver */
	size_t next;             /* next expected element offset */
	float scale;             /* int8: the scale of the tensor's first chunk */
	int done;
};

struct fl_wire_rx {
	enum fl_wire_dtype dtype;
	uint64_t round;
	size_t n, ncomplete, hint;
	struct rx_tensor v[];
};

int fl_wire_rx_new(const struct fl_wire_tensor *expect, size_t n, enum fl_wire_dtype dtype,
		   struct fl_wire_rx **out)
{
	char nb[64];
	*out = NULL;
	if (!fl_wire_dtype_bytes(dtype))
		return fl_error_set(FL_EINVAL, "wire rx: unknown dtype %d", (int)dtype);
	for (size_t i = 0; i < n; i++) {
		int rc = check_tensor(&expect[i], "rx");
		if (rc)
			return rc;
		for (size_t j = 0; j < i; j++)
			if (strcmp(expect[i].name, expect[j].name) == 0)
				return fl_error_set(
					FL_EINVAL, "wire rx: tensor '%s' expected twice",
					fl_error_safe_str(expect[i].name, nb, sizeof(nb)));
	}
	if (n > (SIZE_MAX - sizeof(struct fl_wire_rx)) / sizeof(struct rx_tensor))
		return fl_error_set(FL_ERANGE, "wire rx: too many tensors");
	struct fl_wire_rx *rx = calloc(1, sizeof(*rx) + n * sizeof(rx->v[0]));
	if (!rx)
		return fl_error_set(FL_ENOMEM, "wire rx: out of memory");
	rx->dtype = dtype;
	rx->n = n;
	for (size_t i = 0; i < n; i++) {
		rx->v[i].t = expect[i];
		rx->v[i].t.name = strdup(expect[i].name);
		if (!rx->v[i].t.name) {
			fl_wire_rx_free(rx);
			return fl_error_set(FL_ENOMEM, "wire rx: out of memory");
		}
	}
	*out = rx;
	return FL_OK;
}

void fl_wire_rx_free(struct fl_wire_rx *rx)
{
	if (!rx)
		return;
	for (size_t i = 0; i < rx->n; i++)
		free((char *)rx->v[i].t.name);
	free(rx);
}

void fl_wire_rx_reset(struct fl_wire_rx *rx, uint64_t round)
{
	rx->round = round;
	rx->ncomplete = 0;
	rx->hint = 0;
	for (size_t i = 0; i < rx->n; i++) {
		rx->v[i].next = 0;
		rx->v[i].done = 0;
	}
}

int fl_wire_rx_complete(const struct fl_wire_rx *rx)
{
	return rx->ncomplete == rx->n;
}

/* Tensors usually arrive in order: try the last one used and its successor
 * before scanning. */
static struct rx_tensor *rx_find(struct fl_wire_rx *rx, const char *name)
{
	for (size_t k = 0; k < 2 && rx->n; k++) {
		size_t i = (rx->hint + k) % rx->n;
		if (strcmp(rx->v[i].t.name, name) == 0) {
			rx->hint = i;
			return &rx->v[i];
		}
	}
	for (size_t i = 0; i < rx->n; i++) {
		if (strcmp(rx->v[i].t.name, name) == 0) {
			rx->hint = i;
			return &rx->v[i];
		}
	}
	return NULL;
}

/* Decodes cnt elements into dst; FL_ENONFINITE at the first non-finite
 * decoded value (its index through *bad). */
static int convert_in(float *dst, const uint8_t *src, size_t cnt, enum fl_wire_dtype dtype,
		      float scale, size_t *bad)
{
	if (dtype == FL_WIRE_F32 && cnt)
		memcpy(dst, src, cnt * 4);
	for (size_t i = 0; i < cnt; i++) {
		uint16_t h;
		switch (dtype) {
		case FL_WIRE_F16:
			memcpy(&h, src + 2 * i, 2);
			dst[i] = fl_f16_to_f32(h);
			break;
		case FL_WIRE_BF16:
			memcpy(&h, src + 2 * i, 2);
			dst[i] = fl_bf16_to_f32(h);
			break;
		case FL_WIRE_INT8: dst[i] = (float)(int8_t)src[i] * scale; break;
		default: break;
		}
		if (!isfinite(dst[i])) {
			*bad = i;
			return FL_ENONFINITE;
		}
	}
	return FL_OK;
}

int fl_wire_rx_chunk(struct fl_wire_rx *rx, const Fedloha__V1__TensorChunk *c)
{
	char nb[64];
	const char *cname = c->name ? c->name : "";
	if (c->round != rx->round)
		return fl_error_set(FL_EFORMAT,
				    "tensor '%s': chunk for round %llu, expected round %llu",
				    fl_error_safe_str(cname, nb, sizeof(nb)),
				    (unsigned long long)c->round, (unsigned long long)rx->round);
	struct rx_tensor *r = rx_find(rx, cname);
	if (!r)
		return fl_error_set(FL_ENOTFOUND, "tensor '%s': not an expected tensor",
				    fl_error_safe_str(cname, nb, sizeof(nb)));
	const char *name = fl_error_safe_str(r->t.name, nb, sizeof(nb));
	if ((int)c->dtype != (int)rx->dtype)
		return fl_error_set(FL_EFORMAT, "tensor '%s': dtype %d, session dtype is %s", name,
				    (int)c->dtype, fl_wire_dtype_name(rx->dtype));
	int same = c->n_shape == (size_t)r->t.ndim;
	for (int i = 0; same && i < r->t.ndim; i++)
		same = c->shape[i] == (uint64_t)r->t.shape[i];
	if (!same)
		return fl_error_set(FL_ESHAPE,
				    "tensor '%s': chunk shape differs from the expected one", name);
	if (r->done)
		return fl_error_set(FL_EFORMAT, "tensor '%s': chunk after the tensor was complete",
				    name);
	if (c->offset != r->next)
		return fl_error_set(FL_EFORMAT, "tensor '%s': chunk at offset %llu, expected %zu",
				    name, (unsigned long long)c->offset, r->next);
	size_t esz = fl_wire_dtype_bytes(rx->dtype);
	if (c->data.len % esz)
		return fl_error_set(FL_EFORMAT,
				    "tensor '%s': %zu data bytes, not whole %s elements", name,
				    c->data.len, fl_wire_dtype_name(rx->dtype));
	size_t cnt = c->data.len / esz, left = r->t.numel - r->next;
	if (cnt > left)
		return fl_error_set(FL_ERANGE,
				    "tensor '%s': chunk of %zu elements at %zu overruns %zu", name,
				    cnt, r->next, r->t.numel);
	if (cnt == 0 && r->t.numel != 0)
		return fl_error_set(FL_EFORMAT, "tensor '%s': empty chunk", name);
	int ends = cnt == left;
	if (c->last && !ends)
		return fl_error_set(FL_EFORMAT, "tensor '%s': last flag at element %zu of %zu",
				    name, r->next + cnt, r->t.numel);
	if (!c->last && ends)
		return fl_error_set(FL_EFORMAT, "tensor '%s': final chunk without the last flag",
				    name);
	if (rx->dtype == FL_WIRE_INT8) {
		if (!isfinite(c->scale))
			return fl_error_set(FL_ENONFINITE, "tensor '%s': int8 scale is not finite",
					    name);
		if (!(c->scale > 0.0f))
			return fl_error_set(FL_EFORMAT, "tensor '%s': int8 scale %g is not > 0",
					    name, (double)c->scale);
		if (r->next == 0)
			r->scale = c->scale;
		else if (c->scale != r->scale)
			return fl_error_set(
				FL_EFORMAT,
				"tensor '%s': int8 scale %g at element %zu differs from "
				"the tensor's scale %g",
				name, (double)c->scale, r->next, (double)r->scale);
	}
	size_t bad = 0;
	if (cnt && convert_in(r->t.data + r->next, c->data.data, cnt, rx->dtype, c->scale, &bad))
		return fl_error_set(FL_ENONFINITE, "tensor '%s': non-finite value at %zu", name,
				    r->next + bad);
	r->next += cnt;
	if (ends) {
		r->done = 1;
		rx->ncomplete++;
	}
	return FL_OK;
}
