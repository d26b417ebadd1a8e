/* wire.c - frames of the fedloha wire protocol (wire.h, proto/PROTOCOL.md):
 * reference-counted frame buffers, envelope encode / decode with the
 * receiver's limits, and the streaming frame reader.
 *
 * Frames are a 4-byte big-endian length then one packed Envelope; protobuf-c
 * does the packing and unpacking (its default allocator), this file adds the
 * limits: frame size before any allocation, a body must be set, names and
 * shapes bounded. Tensor chunks (encode, receive checks) are in
 * wire_tensor.c. No I/O, no connection state, no logging.
 */
#include "wire.h"

#include "bytes.h"
#include "errors.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

static const char *const dtype_names[] = {"f32", "f16", "bf16", "int8"};
static const size_t dtype_sizes[] = {4, 2, 2, 1};
#define NDTYPES (sizeof(dtype_names) / sizeof(dtype_names[0]))

const char *fl_wire_dtype_name(enum fl_wire_dtype t)
{
	if ((unsigned)t >= NDTYPES)
		return "?";
	return dtype_names[t];
}

int fl_wire_client_id_valid(const char *id)
{
	size_t n = id ? strlen(id) : 0;
	if (n < 1 || n > FL_WIRE_CLIENT_ID_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = id[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

/* The one table between fl_err and ErrorCode; the numbers on the wire are
 * fixed (PROTOCOL.md, "Error codes"). */
static const struct {
	int err;
	uint32_t code;
} error_codes[] = {
	{FL_ENOMEM, FEDLOHA__V1__ERROR_CODE__ERROR_CODE_NOMEM},
	{FL_EINVAL, FEDLOHA__V1__ERROR_CODE__ERROR_CODE_INVALID},
	{FL_EIO, FEDLOHA__V1__ERROR_CODE__ERROR_CODE_IO},
	{FL_EFORMAT, FEDLOHA__V1__ERROR_CODE__ERROR_CODE_FORMAT},
	{FL_ERANGE, FEDLOHA__V1__ERROR_CODE__ERROR_CODE_RANGE},
	{FL_ENONFINITE, FEDLOHA__V1__ERROR_CODE__ERROR_CODE_NONFINITE},
	{FL_ENOTFOUND, FEDLOHA__V1__ERROR_CODE__ERROR_CODE_NOTFOUND},
	{FL_EUNSUPPORTED, FEDLOHA__V1__ERROR_CODE__ERROR_CODE_UNSUPPORTED},
	{FL_ESHAPE, FEDLOHA__V1__ERROR_CODE__ERROR_CODE_SHAPE},
	{FL_EAUTH, FEDLOHA__V1__ERROR_CODE__ERROR_CODE_AUTH},
};
#define NERROR_CODES (sizeof(error_codes) / sizeof(error_codes[0]))

uint32_t fl_wire_error_code(int err)
{
	for (size_t i = 0; i < NERROR_CODES; i++)
		if (error_codes[i].err == err)
			return error_codes[i].code;
	return FEDLOHA__V1__ERROR_CODE__ERROR_CODE_UNSPECIFIED;
}

int fl_wire_error_from_code(uint32_t code)
{
	for (size_t i = 0; i < NERROR_CODES; i++)
		if (error_codes[i].code == code)
			return error_codes[i].err;
	return FL_EINVAL;
}

int fl_wire_dtype_parse(const char *s, enum fl_wire_dtype *out)
{
	for (size_t i = 0; s && i < NDTYPES; i++) {
		if (strcmp(s, dtype_names[i]) == 0) {
			*out = (enum fl_wire_dtype)i;
			return FL_OK;
		}
	}
	return fl_error_set(FL_EINVAL, "unknown wire dtype '%.32s' (f32, f16, bf16, int8)",
			    s ? s : "(null)");
}

size_t fl_wire_dtype_bytes(enum fl_wire_dtype t)
{
	if ((unsigned)t >= NDTYPES)
		return 0;
	return dtype_sizes[t];
}

/* ---- buffers ---- */

struct fl_buf *fl_buf_new(size_t len)
{
	if (len > SIZE_MAX - sizeof(struct fl_buf))
		return NULL;
	struct fl_buf *b = malloc(sizeof(*b) + len);
	if (!b)
		return NULL;
	b->refs = 1;
	b->len = len;
	return b;
}

struct fl_buf *fl_buf_ref(struct fl_buf *b)
{
	assert(b && b->refs > 0);
	b->refs++;
	return b;
}

void fl_buf_unref(struct fl_buf *b)
{
	if (!b)
		return;
	assert(b->refs > 0);
	if (--b->refs == 0)
		free(b);
}

/* ---- envelopes ---- */

int fl_wire_encode(const fl_envelope *env, struct fl_buf **out)
{
	*out = NULL;
	if (env->body_case == FEDLOHA__V1__ENVELOPE__BODY__NOT_SET)
		return fl_error_set(FL_EINVAL, "wire encode: envelope has no body");
	size_t n = fedloha__v1__envelope__get_packed_size(env);
	if (n > UINT32_MAX)
		return fl_error_set(FL_ERANGE,
				    "wire encode: %zu-byte envelope does not fit a frame", n);
	struct fl_buf *b = fl_buf_new(FL_WIRE_FRAME_HEADER_BYTES + n);
	if (!b)
		return fl_error_set(FL_ENOMEM, "wire encode: out of memory for a %zu-byte frame",
				    n);
	fl_be32_put(b->data, (uint32_t)n);
	size_t packed = fedloha__v1__envelope__pack(env, b->data + FL_WIRE_FRAME_HEADER_BYTES);
	assert(packed == n);
	(void)packed;
	*out = b;
	return FL_OK;
}

/* FL_OK when s is at most FL_WIRE_NAME_MAX bytes. */
static int check_name(const char *s, const char *what)
{
	size_t n = s ? strnlen(s, FL_WIRE_NAME_MAX + 1) : 0;
	if (n > FL_WIRE_NAME_MAX)
		return fl_error_set(FL_ERANGE, "wire decode: %s longer than %d bytes", what,
				    FL_WIRE_NAME_MAX);
	return FL_OK;
}

/* The limits protobuf-c cannot know: names and shapes. */
static int check_envelope(const fl_envelope *e)
{
	switch (e->body_case) {
	case FEDLOHA__V1__ENVELOPE__BODY__NOT_SET:
		return fl_error_set(FL_EFORMAT, "wire decode: envelope has no (known) body");
	case FEDLOHA__V1__ENVELOPE__BODY_HELLO:
		return check_name(e->hello->client_id, "hello client_id");
	case FEDLOHA__V1__ENVELOPE__BODY_CHUNK:
		if (e->chunk->n_shape > FL_WIRE_NDIM_MAX)
			return fl_error_set(FL_ERANGE,
					    "wire decode: tensor chunk has %zu dims (max %d)",
					    e->chunk->n_shape, FL_WIRE_NDIM_MAX);
		return check_name(e->chunk->name, "tensor chunk name");
	case FEDLOHA__V1__ENVELOPE__BODY_UPDATE:
		for (size_t i = 0; i < e->update->n_metrics; i++) {
			int rc = check_name(e->update->metrics[i]->name, "update metric name");
			if (rc)
				return rc;
		}
		return FL_OK;
	case FEDLOHA__V1__ENVELOPE__BODY_PARTIAL_SUM:
		for (size_t i = 0; i < e->partial_sum->n_metrics; i++) {
			int rc = check_name(e->partial_sum->metrics[i]->name,
					    "partial sum metric name");
			if (rc)
				return rc;
		}
		return FL_OK;
	case FEDLOHA__V1__ENVELOPE__BODY_SUM_CHUNK:
		return check_name(e->sum_chunk->name, "sum chunk name");
	default: return FL_OK;
	}
}

/* protobuf-c turns every 2-byte repeated entry into a struct and a pointer,
 * so a 4 MiB frame of empty metrics would otherwise unpack into ~112 MiB.
 * Decoding draws from a budget proportional to the frame instead; a frame
 * that needs more is refused as malformed. */
#define FL_WIRE_DECODE_FACTOR 4
#define FL_WIRE_DECODE_SLACK (64u << 10)

struct decode_budget {
	size_t left;
};

static void *budget_alloc(void *data, size_t size)
{
	struct decode_budget *b = data;
	if (b && size > b->left)
		return NULL;
	if (b)
		b->left -= size;
	return malloc(size ? size : 1);
}

static void budget_free(void *data, void *p)
{
	(void)data;
	free(p);
}

/* Frees what budget_alloc gave; the budget itself is not needed for that. */
static ProtobufCAllocator free_allocator = {budget_alloc, budget_free, NULL};

int fl_wire_decode(const uint8_t *payload, size_t len, size_t max_frame, fl_envelope **out)
{
	*out = NULL;
	if (len > max_frame)
		return fl_error_set(FL_ERANGE,
				    "wire decode: %zu-byte frame over the %zu-byte limit", len,
				    max_frame);
	struct decode_budget budget = {FL_WIRE_DECODE_FACTOR * len + FL_WIRE_DECODE_SLACK};
	ProtobufCAllocator alloc = {budget_alloc, budget_free, &budget};
	fl_envelope *e = fedloha__v1__envelope__unpack(&alloc, len, payload);
	if (!e)
		return fl_error_set(
			FL_EFORMAT,
			"wire decode: %zu-byte frame is not a valid envelope (or unpacks "
			"to more than %u times its size)",
			len, FL_WIRE_DECODE_FACTOR);
	int rc = check_envelope(e);
	if (rc) {
		fedloha__v1__envelope__free_unpacked(e, &free_allocator);
		return rc;
	}
	*out = e;
	return FL_OK;
}

void fl_wire_envelope_free(fl_envelope *env)
{
	if (env)
		fedloha__v1__envelope__free_unpacked(env, &free_allocator);
}

int fl_wire_encode_error(int err, const char *msg, struct fl_buf **out)
{
	Fedloha__V1__Error er = FEDLOHA__V1__ERROR__INIT;
	er.code = fl_wire_error_code(err);
	er.message = (char *)msg;
	fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT;
	env.body_case = FEDLOHA__V1__ENVELOPE__BODY_ERROR;
	env.error = &er;
	return fl_wire_encode(&env, out);
}

int fl_wire_encode_bye(const char *reason, struct fl_buf **out)
{
	Fedloha__V1__Bye bye = FEDLOHA__V1__BYE__INIT;
	bye.reason = (char *)reason;
	fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT;
	env.body_case = FEDLOHA__V1__ENVELOPE__BODY_BYE;
	env.bye = &bye;
	return fl_wire_encode(&env, out);
}

/* ---- frame reader ---- */

void fl_frame_reader_init(struct fl_frame_reader *r, size_t max_frame)
{
	memset(r, 0, sizeof(*r));
	r->max_frame = max_frame;
}

void fl_frame_reader_free(struct fl_frame_reader *r)
{
	if (!r)
		return;
	free(r->buf);
	r->buf = NULL;
	r->hdr_have = r->need = r->have = 0;
}

/* Ends a frame: the reader waits for the next header. */
static void frame_done(struct fl_frame_reader *r)
{
	free(r->buf);
	r->buf = NULL;
	r->hdr_have = r->need = r->have = 0;
}

static int reader_fail(struct fl_frame_reader *r, int err)
{
	frame_done(r);
	r->err = err;
	return err;
}

/* A frame payload travels to on_frame straight from the caller's bytes when
 * it arrived whole in one feed; only a frame split across feeds is copied
 * into a buffer of exactly its size, freed once delivered. So an idle
 * connection holds no payload memory and a peer can make the reader allocate
 * at most max_frame bytes. */
int fl_frame_reader_feed(struct fl_frame_reader *r, const uint8_t *data, size_t len,
			 int (*on_frame)(void *ctx, const uint8_t *payload, size_t n), void *ctx)
{
	if (r->err)
		return r->err;
	size_t i = 0;
	while (i < len) {
		if (r->hdr_have < FL_WIRE_FRAME_HEADER_BYTES) {
			size_t k = FL_WIRE_FRAME_HEADER_BYTES - r->hdr_have;
			if (k > len - i)
				k = len - i;
			memcpy(r->hdr + r->hdr_have, data + i, k);
			r->hdr_have += k;
			i += k;
			if (r->hdr_have < FL_WIRE_FRAME_HEADER_BYTES)
				break;
			uint32_t n = fl_be32_get(r->hdr);
			if ((n == 0 || n > r->max_frame) && r->refuse)
				return reader_fail(r, r->refuse(ctx, n, r->max_frame));
			if (n == 0) {
				fl_error_set(FL_EFORMAT,
					     "frame of length 0 (an envelope is never empty)");
				return reader_fail(r, FL_EFORMAT);
			}
			if (n > r->max_frame) {
				fl_error_set(FL_ERANGE, "frame of %u bytes over the %zu-byte limit",
					     n, r->max_frame);
				return reader_fail(r, FL_ERANGE);
			}
			r->need = n;
			r->have = 0;
			if (len - i >= n) {
				int rc = on_frame(ctx, data + i, n);
				i += n;
				frame_done(r);
				if (rc)
					return reader_fail(r, rc);
				continue;
			}
			r->buf = malloc(n);
			if (!r->buf) {
				fl_error_set(FL_ENOMEM, "frame reader: out of memory for %u bytes",
					     n);
				return reader_fail(r, FL_ENOMEM);
			}
		}
		size_t k = r->need - r->have;
		if (k > len - i)
			k = len - i;
		memcpy(r->buf + r->have, data + i, k);
		r->have += k;
		i += k;
		if (r->have == r->need) {
			int rc = on_frame(ctx, r->buf, r->need);
			frame_done(r);
			if (rc)
				return reader_fail(r, rc);
		}
	}
	return FL_OK;
}
