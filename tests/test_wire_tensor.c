/* test_wire_tensor.c - tensors on the wire: f32 / f16 / bf16 / int8 round
 * trips and bit patterns, chunking, byte sizes, and every check of the
 * receiver (struct fl_wire_rx). Frames and messages: test_wire.c. */
#include "errors.h"
#include "testutil.h"
#include "wire.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct frames {
	struct fl_buf **v;
	size_t n;
};

static void frames_free(struct frames *f)
{
	for (size_t i = 0; i < f->n; i++)
		fl_buf_unref(f->v[i]);
	free(f->v);
	f->v = NULL;
	f->n = 0;
}

static fl_envelope *frame_decode(const struct fl_buf *b)
{
	fl_envelope *e = NULL;
	FL_CHECK(fl_wire_decode(b->data + 4, b->len - 4, FL_WIRE_MAX_FRAME_DEFAULT, &e) == FL_OK);
	FL_CHECK(e && e->body_case == FEDLOHA__V1__ENVELOPE__BODY_CHUNK);
	return e;
}

/* Decodes every frame into rx; the first error, else FL_OK. */
static int deliver(struct fl_wire_rx *rx, const struct frames *f)
{
	for (size_t i = 0; i < f->n; i++) {
		fl_envelope *e = frame_decode(f->v[i]);
		if (!e)
			return FL_EFORMAT;
		int rc = fl_wire_rx_chunk(rx, e->chunk);
		fl_wire_envelope_free(e);
		if (rc)
			return rc;
	}
	return FL_OK;
}

static struct fl_wire_tensor tensor(const char *name, float *data, int ndim, int64_t d0, int64_t d1)
{
	struct fl_wire_tensor t = {.name = name, .ndim = ndim, .data = data};
	t.shape[0] = d0;
	t.shape[1] = d1;
	t.numel = ndim == 0 ? 1 : ndim == 1 ? (size_t)d0 : (size_t)(d0 * d1);
	return t;
}

/* Sends src (numel elements, shape [numel]) in dtype and chunk size through
 * a receiver into dst; checks chunk layout and byte count. */
static void send_one(const float *src, float *dst, size_t numel, enum fl_wire_dtype dtype,
		     size_t chunk_bytes)
{
	struct fl_wire_tensor ts = tensor("w", (float *)src, 1, (int64_t)numel, 0);
	struct fl_wire_tensor td = ts;
	td.data = dst;
	struct frames f = {0};
	struct fl_wire_rx *rx = NULL;
	FL_CHECK(fl_wire_tensor_encode(5, &ts, dtype, chunk_bytes, &f.v, &f.n) == FL_OK);
	FL_CHECK(fl_wire_rx_new(&td, 1, dtype, &rx) == FL_OK);
	if (!rx)
		return;
	fl_wire_rx_reset(rx, 5);
	size_t esz = fl_wire_dtype_bytes(dtype), per = chunk_bytes / esz, bytes = 0;
	FL_CHECK(f.n == (numel + per - 1) / per);
	for (size_t i = 0; i < f.n; i++) {
		fl_envelope *e = frame_decode(f.v[i]);
		if (!e)
			continue;
		Fedloha__V1__TensorChunk *c = e->chunk;
		FL_CHECK(c->round == 5 && strcmp(c->name, "w") == 0 && c->n_shape == 1 &&
			 c->shape[0] == numel && (int)c->dtype == (int)dtype);
		FL_CHECK(c->offset == i * per && c->data.len <= chunk_bytes &&
			 c->data.len % esz == 0);
		FL_CHECK(c->last == (i + 1 == f.n));
		FL_CHECK(fl_wire_rx_complete(rx) == 0);
		bytes += c->data.len;
		FL_CHECK(fl_wire_rx_chunk(rx, c) == FL_OK);
		fl_wire_envelope_free(e);
	}
	FL_CHECK(bytes == fl_wire_tensor_data_bytes(numel, dtype));
	FL_CHECK(fl_wire_rx_complete(rx) == 1);
	fl_wire_rx_free(rx);
	frames_free(&f);
}

static void fill(float *x, size_t n, unsigned seed)
{
	fl_test_fill_uniform(x, n, seed, -3.0f, 3.0f);
	x[0] = 0.0f;
	x[1] = -2.75f;
	x[2] = 1e-3f;
}

static void test_roundtrip_dtypes(void)
{
	enum {
		N = 1000
	};
	static float src[N], dst[N], ref[N];
	fill(src, N, 1);
	/* f32: exact, whatever the chunk size. */
	send_one(src, dst, N, FL_WIRE_F32, FL_WIRE_CHUNK_DEFAULT);
	FL_CHECK(memcmp(src, dst, sizeof(src)) == 0);
	memset(dst, 0, sizeof(dst));
	send_one(src, dst, N, FL_WIRE_F32, 7); /* one element per chunk: 1000 chunks */
	FL_CHECK(memcmp(src, dst, sizeof(src)) == 0);
	/* f16: relative error <= 2^-11 in the normal range. */
	send_one(src, dst, N, FL_WIRE_F16, FL_WIRE_CHUNK_DEFAULT);
	FL_CHECK_ARRAY_NEAR(dst, src, N, 0x1p-11, 0x1p-25);
	send_one(src, ref, N, FL_WIRE_F16, 6); /* 3 elements per chunk */
	FL_CHECK(memcmp(ref, dst, sizeof(dst)) == 0);
	/* bf16: relative error <= 2^-8. */
	send_one(src, dst, N, FL_WIRE_BF16, FL_WIRE_CHUNK_DEFAULT);
	FL_CHECK_ARRAY_NEAR(dst, src, N, 0x1p-8, 0);
	send_one(src, ref, N, FL_WIRE_BF16, 2);
	FL_CHECK(memcmp(ref, dst, sizeof(dst)) == 0);
	/* int8: |error| <= scale / 2, scale = max|x| / 127. */
	float amax = 0;
	for (int i = 0; i < N; i++)
		amax = fmaxf(amax, fabsf(src[i]));
	float scale = amax / 127.0f;
	send_one(src, dst, N, FL_WIRE_INT8, FL_WIRE_CHUNK_DEFAULT);
	FL_CHECK_ARRAY_NEAR(dst, src, N, 0, scale * 0.5f * 1.0001f);
	send_one(src, ref, N, FL_WIRE_INT8, 5);
	FL_CHECK(memcmp(ref, dst, sizeof(dst)) == 0);
	/* Each decoded int8 value is an integer multiple of the scale. */
	int multiples = 1;
	for (int i = 0; i < N; i++)
		multiples &= fabsf(dst[i] / scale - roundf(dst[i] / scale)) < 1e-3f;
	FL_CHECK(multiples);
	/* An all-zero tensor: scale 1, zeros back. */
	float z[4] = {0}, zd[4] = {1, 1, 1, 1};
	send_one(z, zd, 4, FL_WIRE_INT8, 64);
	FL_CHECK(zd[0] == 0 && zd[3] == 0);
}

/* The data bytes of a single-chunk encoding of vals. */
static const uint8_t *encode_bytes(const float *vals, size_t n, enum fl_wire_dtype dtype,
				   fl_envelope **keep, float *scale)
{
	struct fl_wire_tensor t = tensor("b", (float *)vals, 1, (int64_t)n, 0);
	struct frames f = {0};
	*keep = NULL;
	if (!FL_CHECK(fl_wire_tensor_encode(0, &t, dtype, 4096, &f.v, &f.n) == FL_OK && f.n == 1))
		return NULL;
	*keep = frame_decode(f.v[0]);
	frames_free(&f);
	if (!*keep)
		return NULL;
	if (scale)
		*scale = (*keep)->chunk->scale;
	FL_CHECK((*keep)->chunk->data.len == n * fl_wire_dtype_bytes(dtype));
	return (*keep)->chunk->data.data;
}

static void check_u16(const float *vals, const uint16_t *want, size_t n, enum fl_wire_dtype dtype)
{
	fl_envelope *e;
	const uint8_t *p = encode_bytes(vals, n, dtype, &e, NULL);
	for (size_t i = 0; p && i < n; i++) {
		uint16_t h = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
		FL_CHECK_MSG(h == want[i], "%s [%zu] %.9g: 0x%04x, want 0x%04x",
			     fl_wire_dtype_name(dtype), i, (double)vals[i], h, want[i]);
	}
	fl_wire_envelope_free(e);
}

static void test_bit_patterns(void)
{
	const float h_in[] = {1.0f,     -2.0f,        65504.0f, 65519.0f,        0x1p-24f,
			      0x1p-25f, 0x1.8p-25f,   0.1f,     1.0f + 0x1p-11f, 1.0f + 0x3p-11f,
			      0x1p-14f, 0x1.ffcp-15f, -0.0f,    0x1p-26f,        3.140625f};
	const uint16_t h_want[] = {0x3c00, 0xc000, 0x7bff, 0x7bff, 0x0001, 0x0000, 0x0001, 0x2e66,
				   0x3c00, 0x3c02, 0x0400, 0x0400, 0x8000, 0x0000, 0x4248};
	check_u16(h_in, h_want, sizeof(h_in) / sizeof(h_in[0]), FL_WIRE_F16);
	const float b_in[] = {1.0f,           -3.0f,     0.1f,   1.0f + 0x1p-8f,
			      1.0f + 0x3p-8f, 0x1p-133f, 3.0e38f};
	const uint16_t b_want[] = {0x3f80, 0xc040, 0x3dcd, 0x3f80, 0x3f82, 0x0001, 0x7f62};
	check_u16(b_in, b_want, sizeof(b_in) / sizeof(b_in[0]), FL_WIRE_BF16);

	/* int8: q = round(x / scale), the extreme is +-127. */
	const float q_in[] = {2.54f, -2.54f, 0.009f, 0.031f, 1.28f, 0.0f};
	const int8_t q_want[] = {127, -127, 0, 2, 64, 0};
	fl_envelope *e;
	float scale = 0;
	const uint8_t *p = encode_bytes(q_in, 6, FL_WIRE_INT8, &e, &scale);
	FL_CHECK(scale == 2.54f / 127.0f);
	for (int i = 0; p && i < 6; i++)
		FL_CHECK_MSG((int8_t)p[i] == q_want[i], "int8 [%d]: %d, want %d", i, (int8_t)p[i],
			     q_want[i]);
	fl_wire_envelope_free(e);

	/* Values that overflow f16 / bf16 are refused, not sent as inf. */
	float big[2] = {1.0f, 65520.0f}, huge[2] = {1.0f, FLT_MAX};
	struct fl_wire_tensor t = tensor("big", big, 1, 2, 0);
	struct frames f = {0};
	FL_CHECK(fl_wire_tensor_encode(0, &t, FL_WIRE_F16, 4096, &f.v, &f.n) == FL_ERANGE &&
		 f.n == 0);
	FL_CHECK(strstr(fl_error_msg(), "'big'") != NULL);
	t.data = huge;
	FL_CHECK(fl_wire_tensor_encode(0, &t, FL_WIRE_BF16, 4096, &f.v, &f.n) == FL_ERANGE &&
		 f.n == 0);
	FL_CHECK(fl_wire_tensor_encode(0, &t, FL_WIRE_F32, 4096, &f.v, &f.n) == FL_OK && f.n == 1);
	frames_free(&f);
}

static void test_encode_refusals(void)
{
	float x[6] = {1, 2, 3, 4, 5, 6};
	struct fl_wire_tensor t = tensor("x", x, 2, 2, 3);
	struct frames f = {0};
	/* Two good frames first, so a failure must leave them alone. */
	FL_CHECK(fl_wire_tensor_encode(0, &t, FL_WIRE_F32, 12, &f.v, &f.n) == FL_OK && f.n == 2);
	for (int d = 0; d < 4; d++) {
		x[4] = NAN;
		FL_CHECK(fl_wire_tensor_encode(0, &t, (enum fl_wire_dtype)d, 4, &f.v, &f.n) ==
			 FL_ENONFINITE);
		x[4] = -INFINITY;
		FL_CHECK(fl_wire_tensor_encode(0, &t, (enum fl_wire_dtype)d, 4, &f.v, &f.n) ==
			 FL_ENONFINITE);
		FL_CHECK(f.n == 2);
	}
	x[4] = 5;
	FL_CHECK(fl_wire_tensor_encode(0, &t, FL_WIRE_F32, 3, &f.v, &f.n) == FL_EINVAL);
	FL_CHECK(fl_wire_tensor_encode(0, &t, (enum fl_wire_dtype)9, 64, &f.v, &f.n) == FL_EINVAL);
	t.numel = 5;
	FL_CHECK(fl_wire_tensor_encode(0, &t, FL_WIRE_F32, 64, &f.v, &f.n) == FL_ESHAPE);
	FL_CHECK(f.n == 2);
	frames_free(&f);
}

/* Three tensors (a matrix, a scalar, an empty one) in one receiver. */
static void test_multiple(void)
{
	float a[12], s[1] = {-0.5f}, e[1] = {0};
	float ad[12] = {0}, sd[1] = {0};
	fill(a, 12, 3);
	struct fl_wire_tensor src[3] = {tensor("layer.a", a, 2, 4, 3),
					tensor("layer.s", s, 0, 0, 0),
					tensor("layer.e", e, 2, 0, 5)};
	struct fl_wire_tensor dst[3] = {src[0], src[1], src[2]};
	dst[0].data = ad;
	dst[1].data = sd;
	dst[2].data = NULL;
	struct frames f = {0};
	for (int i = 0; i < 3; i++)
		FL_CHECK(fl_wire_tensor_encode(2, &src[i], FL_WIRE_F32, 8, &f.v, &f.n) == FL_OK);
	FL_CHECK(f.n == 6 + 1 + 1);
	struct fl_wire_rx *rx = NULL;
	FL_CHECK(fl_wire_rx_new(dst, 3, FL_WIRE_F32, &rx) == FL_OK);
	if (!rx)
		return;
	fl_wire_rx_reset(rx, 2);
	FL_CHECK(deliver(rx, &f) == FL_OK && fl_wire_rx_complete(rx));
	FL_CHECK(memcmp(a, ad, sizeof(a)) == 0 && sd[0] == -0.5f);
	/* A new round forgets the progress. */
	fl_wire_rx_reset(rx, 3);
	FL_CHECK(!fl_wire_rx_complete(rx));
	FL_CHECK(deliver(rx, &f) == FL_EFORMAT); /* frames are for round 2 */
	fl_wire_rx_reset(rx, 2);
	/* The tensors in reverse order (each one in order) are fine too. */
	struct frames one;
	int ok = 1;
	size_t starts[4] = {0, 6, 7, 8};
	for (int k = 2; k >= 0; k--) {
		one.v = f.v + starts[k];
		one.n = starts[k + 1] - starts[k];
		ok &= deliver(rx, &one) == FL_OK;
		ok &= fl_wire_rx_complete(rx) == (k == 0);
	}
	FL_CHECK(ok);
	fl_wire_rx_free(rx);
	fl_wire_rx_free(NULL);
	frames_free(&f);

	/* Receiver construction refuses bad descriptors. */
	struct fl_wire_tensor dup[2] = {dst[0], dst[0]};
	FL_CHECK(fl_wire_rx_new(dup, 2, FL_WIRE_F32, &rx) == FL_EINVAL && rx == NULL);
	dup[1].name = "other";
	dup[1].numel = 11;
	FL_CHECK(fl_wire_rx_new(dup, 2, FL_WIRE_F32, &rx) == FL_ESHAPE && rx == NULL);
	FL_CHECK(fl_wire_rx_new(dup, 1, (enum fl_wire_dtype)4, &rx) == FL_EINVAL && rx == NULL);
	FL_CHECK(fl_wire_rx_new(NULL, 0, FL_WIRE_F16, &rx) == FL_OK && fl_wire_rx_complete(rx));
	fl_wire_rx_free(rx);
}

/* ---- receiver violations ---- */

static float vdst[6];
static uint8_t vdata[64];

/* A valid first chunk of "v" (shape [2, 3]) in dtype, 2 elements. */
static Fedloha__V1__TensorChunk vchunk(enum fl_wire_dtype dtype, uint64_t *shape)
{
	Fedloha__V1__TensorChunk c = FEDLOHA__V1__TENSOR_CHUNK__INIT;
	shape[0] = 2;
	shape[1] = 3;
	c.round = 7;
	c.name = "v";
	c.n_shape = 2;
	c.shape = shape;
	c.dtype = (Fedloha__V1__DType)dtype;
	c.scale = dtype == FL_WIRE_INT8 ? 0.5f : 0.0f;
	memset(vdata, 0, sizeof(vdata));
	vdata[0] = 0x3c; /* small finite values in every dtype */
	c.data = (ProtobufCBinaryData){2 * fl_wire_dtype_bytes(dtype), vdata};
	return c;
}

static struct fl_wire_rx *vrx(enum fl_wire_dtype dtype)
{
	struct fl_wire_tensor t = tensor("v", vdst, 2, 2, 3);
	struct fl_wire_rx *rx = NULL;
	FL_CHECK(fl_wire_rx_new(&t, 1, dtype, &rx) == FL_OK);
	if (rx)
		fl_wire_rx_reset(rx, 7);
	return rx;
}

/* rc of one modified first chunk; the message must name the tensor. */
#define VCASE(dtype, expect, mod)                                                               \
	do {                                                                                    \
		uint64_t sh_[3];                                                                \
		struct fl_wire_rx *rx_ = vrx(dtype);                                            \
		Fedloha__V1__TensorChunk c = vchunk(dtype, sh_);                                \
		mod;                                                                            \
		int rc_ = rx_ ? fl_wire_rx_chunk(rx_, &c) : -100;                               \
		FL_CHECK_MSG(rc_ == (expect), "%s: rc %d, want %d (%s)", #mod, rc_, expect,     \
			     fl_error_msg());                                                   \
		if ((expect) != FL_OK) {                                                        \
			FL_CHECK(strstr(fl_error_msg(), "'") && !strchr(fl_error_msg(), '\n')); \
			FL_CHECK(rx_ && !fl_wire_rx_complete(rx_));                             \
		}                                                                               \
		fl_wire_rx_free(rx_);                                                           \
	} while (0)

/* int8 has one scale per tensor (PROTOCOL.md): a later chunk of the same
 * tensor with another scale is refused, the same scale is taken, and the
 * next round's first chunk may bring a new one. */
static void test_rx_int8_scale(void)
{
	uint64_t sh[3];
	struct fl_wire_rx *rx = vrx(FL_WIRE_INT8);
	if (!rx)
		return;
	Fedloha__V1__TensorChunk c = vchunk(FL_WIRE_INT8, sh);
	FL_CHECK(fl_wire_rx_chunk(rx, &c) == FL_OK);
	c.offset = 2;
	c.scale = 0.25f;
	FL_CHECK(fl_wire_rx_chunk(rx, &c) == FL_EFORMAT && !fl_wire_rx_complete(rx));
	FL_CHECK(strstr(fl_error_msg(), "differs") && strstr(fl_error_msg(), "'v'"));
	c.scale = 0.5f;
	FL_CHECK(fl_wire_rx_chunk(rx, &c) == FL_OK);
	c.offset = 4;
	c.last = 1;
	FL_CHECK(fl_wire_rx_chunk(rx, &c) == FL_OK && fl_wire_rx_complete(rx));
	FL_CHECK(vdst[0] == (float)0x3c * 0.5f);
	fl_wire_rx_reset(rx, 7);
	c = vchunk(FL_WIRE_INT8, sh);
	c.scale = 2.0f;
	FL_CHECK(fl_wire_rx_chunk(rx, &c) == FL_OK);
	c.offset = 2;
	c.scale = 0.5f;
	FL_CHECK(fl_wire_rx_chunk(rx, &c) == FL_EFORMAT);
	fl_wire_rx_free(rx);
}

static void test_rx_violations(void)
{
	VCASE(FL_WIRE_F32, FL_OK, (void)0);
	VCASE(FL_WIRE_F32, FL_ENOTFOUND, c.name = "w");
	VCASE(FL_WIRE_F32, FL_ESHAPE, c.shape[1] = 4);
	VCASE(FL_WIRE_F32, FL_ESHAPE, c.n_shape = 1);
	VCASE(FL_WIRE_F32, FL_ESHAPE, (c.n_shape = 3, c.shape[2] = 1));
	VCASE(FL_WIRE_F32, FL_EFORMAT, c.dtype = FEDLOHA__V1__DTYPE__DTYPE_F16);
	VCASE(FL_WIRE_F32, FL_EFORMAT, c.dtype = (Fedloha__V1__DType)77);
	VCASE(FL_WIRE_F32, FL_EFORMAT, c.round = 6);
	VCASE(FL_WIRE_F32, FL_EFORMAT, c.offset = 1); /* gap */
	VCASE(FL_WIRE_F32, FL_EFORMAT, c.data.len = 6);
	VCASE(FL_WIRE_F16, FL_EFORMAT, c.data.len = 3);
	VCASE(FL_WIRE_F32, FL_ERANGE, c.data.len = 7 * 4);
	VCASE(FL_WIRE_F32, FL_EFORMAT, c.data.len = 0);     /* empty chunk */
	VCASE(FL_WIRE_F32, FL_EFORMAT, c.last = 1);         /* last, yet 4 elements missing */
	VCASE(FL_WIRE_F32, FL_EFORMAT, c.data.len = 6 * 4); /* ends without last */
	VCASE(FL_WIRE_F32, FL_OK, (c.data.len = 6 * 4, c.last = 1));
	/* Non-finite decoded values, per dtype. */
	VCASE(FL_WIRE_F32, FL_ENONFINITE,
	      (vdata[4] = 0, vdata[5] = 0, vdata[6] = 0xc0, vdata[7] = 0x7f));
	VCASE(FL_WIRE_F32, FL_ENONFINITE, (vdata[6] = 0x80, vdata[7] = 0xff));
	VCASE(FL_WIRE_F16, FL_ENONFINITE, (vdata[2] = 0x00, vdata[3] = 0x7c));
	VCASE(FL_WIRE_F16, FL_ENONFINITE, (vdata[2] = 0x01, vdata[3] = 0xfe));
	VCASE(FL_WIRE_BF16, FL_ENONFINITE, (vdata[2] = 0xc0, vdata[3] = 0x7f));
	VCASE(FL_WIRE_INT8, FL_ENONFINITE, (vdata[1] = 100, c.scale = FLT_MAX)); /* q*scale = inf */
	/* int8 scale. */
	VCASE(FL_WIRE_INT8, FL_ENONFINITE, c.scale = INFINITY);
	VCASE(FL_WIRE_INT8, FL_ENONFINITE, c.scale = NAN);
	VCASE(FL_WIRE_INT8, FL_EFORMAT, c.scale = 0.0f);
	VCASE(FL_WIRE_INT8, FL_EFORMAT, c.scale = -1.0f);
	VCASE(FL_WIRE_INT8, FL_OK, c.scale = 1e-30f);
	VCASE(FL_WIRE_F32, FL_OK, c.scale = NAN); /* scale is int8-only, ignored */

	/* Sequences: duplicate, chunk after completion, then a correct finish. */
	uint64_t sh[3];
	struct fl_wire_rx *rx = vrx(FL_WIRE_F32);
	if (!rx)
		return;
	Fedloha__V1__TensorChunk c = vchunk(FL_WIRE_F32, sh);
	float v[6] = {1, 2, 3, 4, 5, 6};
	c.data.data = (uint8_t *)v;
	FL_CHECK(fl_wire_rx_chunk(rx, &c) == FL_OK);
	FL_CHECK(fl_wire_rx_chunk(rx, &c) == FL_EFORMAT); /* duplicate offset 0 */
	c.offset = 2;
	c.data.data = (uint8_t *)(v + 2);
	FL_CHECK(fl_wire_rx_chunk(rx, &c) == FL_OK);
	c.offset = 4;
	c.data.data = (uint8_t *)(v + 4);
	c.last = 1;
	FL_CHECK(fl_wire_rx_chunk(rx, &c) == FL_OK && fl_wire_rx_complete(rx));
	FL_CHECK(memcmp(vdst, v, sizeof(v)) == 0);
	FL_CHECK(fl_wire_rx_chunk(rx, &c) == FL_EFORMAT); /* after completion */
	FL_CHECK(strstr(fl_error_msg(), "complete") != NULL);
	c.offset = 6;
	FL_CHECK(fl_wire_rx_chunk(rx, &c) == FL_EFORMAT);
	FL_CHECK(fl_wire_rx_complete(rx));
	fl_wire_rx_free(rx);

	/* A NaN sent by a (broken) peer as f32 never reaches a complete tensor. */
	float nanv[6] = {1, 2, NAN, 4, 5, 6};
	rx = vrx(FL_WIRE_F32);
	c = vchunk(FL_WIRE_F32, sh);
	c.data = (ProtobufCBinaryData){24, (uint8_t *)nanv};
	c.last = 1;
	FL_CHECK(rx && fl_wire_rx_chunk(rx, &c) == FL_ENONFINITE && !fl_wire_rx_complete(rx));
	FL_CHECK(strstr(fl_error_msg(), "at 2") != NULL);
	fl_wire_rx_free(rx);

	/* Control bytes in a peer's name are not echoed raw. */
	rx = vrx(FL_WIRE_F32);
	c = vchunk(FL_WIRE_F32, sh);
	c.name = "bad\nname\x1b";
	FL_CHECK(rx && fl_wire_rx_chunk(rx, &c) == FL_ENOTFOUND);
	FL_CHECK(!strchr(fl_error_msg(), '\n') && !strchr(fl_error_msg(), '\x1b'));
	fl_wire_rx_free(rx);
}

static void test_data_bytes(void)
{
	FL_CHECK(fl_wire_tensor_data_bytes(1000, FL_WIRE_F32) == 4000);
	FL_CHECK(fl_wire_tensor_data_bytes(1000, FL_WIRE_F16) == 2000);
	FL_CHECK(fl_wire_tensor_data_bytes(1000, FL_WIRE_BF16) == 2000);
	FL_CHECK(fl_wire_tensor_data_bytes(1000, FL_WIRE_INT8) == 1000);
	FL_CHECK(fl_wire_tensor_data_bytes(0, FL_WIRE_INT8) == 0);
	/* The bytes actually produced are checked per dtype in send_one(); here
	 * a tensor that does not divide into chunks evenly. */
	float x[37];
	fill(x, 37, 9);
	for (int d = 0; d < 4; d++) {
		struct fl_wire_tensor t = tensor("x", x, 1, 37, 0);
		struct frames f = {0};
		FL_CHECK(fl_wire_tensor_encode(0, &t, (enum fl_wire_dtype)d, 10, &f.v, &f.n) ==
			 FL_OK);
		size_t sum = 0;
		for (size_t i = 0; i < f.n; i++) {
			fl_envelope *e = frame_decode(f.v[i]);
			sum += e ? e->chunk->data.len : 0;
			fl_wire_envelope_free(e);
		}
		FL_CHECK(sum == fl_wire_tensor_data_bytes(37, (enum fl_wire_dtype)d));
		frames_free(&f);
	}
}

int main(void)
{
	FL_RUN(test_roundtrip_dtypes);
	FL_RUN(test_bit_patterns);
	FL_RUN(test_encode_refusals);
	FL_RUN(test_multiple);
	FL_RUN(test_rx_violations);
	FL_RUN(test_rx_int8_scale);
	FL_RUN(test_data_bytes);
	return fl_test_main_end();
}
