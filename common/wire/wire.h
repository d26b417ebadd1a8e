/* wire.h - what travels between coordinator and clients (proto/PROTOCOL.md,
 * proto/fedloha.proto): length-prefixed frames, envelopes, and tensors in
 * f32 / f16 / bf16 / int8 chunks.
 *
 * Frames: a 4-byte big-endian length N then N bytes of one encoded
 * fedloha.v1.Envelope. A frame reader reassembles them from a byte stream
 * and refuses a length above its maximum before allocating anything.
 *
 * Tensors: a sender cuts each tensor into TensorChunk frames of at most
 * chunk_bytes of data; a receiver (struct fl_wire_rx) knows which tensors
 * it expects (names, shapes, destination floats), checks every chunk
 * (known name, same shape, agreed dtype, in-order offsets, no overrun,
 * finite values, int8 scale finite, > 0 and the same on every chunk of a
 * tensor) and decodes straight into the
 * destination, so memory stays bounded on both sides.
 *
 * Encoded frames live in reference-counted buffers (struct fl_buf) so one
 * encoding of the global model can be queued to many connections.
 * This module does no I/O and keeps no connection state.
 */
#ifndef FL_WIRE_H
#define FL_WIRE_H

#include "fedloha.pb-c.h"

#include <stddef.h>
#include <stdint.h>

#define FL_WIRE_PROTOCOL_VERSION 1
#define FL_WIRE_FRAME_HEADER_BYTES 4
#define FL_WIRE_MAX_FRAME_DEFAULT (4u << 20) /* 4 MiB */
#define FL_WIRE_CHUNK_DEFAULT (1u << 20)     /* 1 MiB of tensor data per chunk */
#define FL_WIRE_NAME_MAX 128
#define FL_WIRE_CLIENT_ID_MAX 64 /* Hello.client_id: 1..64 of [A-Za-z0-9._-] */
/* The smallest max_frame_bytes either end accepts. */
#define FL_WIRE_MAX_FRAME_MIN 1024u
/* Room a TensorChunk frame needs beside its chunk_bytes of data: the 4-byte
 * length, the envelope's body tag and length, round, offset, a name of
 * FL_WIRE_NAME_MAX bytes, FL_WIRE_NDIM_MAX shape entries, dtype, scale,
 * last and the data's tag and length come to about 260 bytes at their
 * largest. The coordinator refuses chunk_bytes + FL_WIRE_ENVELOPE_SLACK over
 * max_frame_bytes, and a client cuts a Welcome's chunk_bytes down to
 * max_frame_bytes - FL_WIRE_ENVELOPE_SLACK, so both ends apply the same
 * bound; 1 KiB leaves the worst case a margin of about four times. */
#define FL_WIRE_ENVELOPE_SLACK 1024u
/* The smallest --max-frame the programs take: the default chunk_bytes
 * (max-frame / 2) still leaves FL_WIRE_ENVELOPE_SLACK. Both ends share it
 * so that a client can take the chunks of any coordinator. */
#define FL_WIRE_MAX_FRAME_OPTION_MIN (2 * FL_WIRE_ENVELOPE_SLACK)

typedef Fedloha__V1__Envelope fl_envelope; /* the generated type, renamed once */

enum fl_wire_dtype {
	FL_WIRE_F32 = 0, /* values equal FEDLOHA__V1__DTYPE__DTYPE_* */
	FL_WIRE_F16 = 1,
	FL_WIRE_BF16 = 2,
	FL_WIRE_INT8 = 3,
};

/* "f32", "f16", "bf16", "int8". */
const char *fl_wire_dtype_name(enum fl_wire_dtype t);
int fl_wire_dtype_parse(const char *s, enum fl_wire_dtype *out);
size_t fl_wire_dtype_bytes(enum fl_wire_dtype t);

/* ---- reference-counted frame buffers ---- */
struct fl_buf {
	int refs;   /* touched only on the thread that owns the buffer */
	size_t len; /* bytes in data: 4-byte length + payload */
	uint8_t data[];
};
struct fl_buf *fl_buf_new(size_t len);
struct fl_buf *fl_buf_ref(struct fl_buf *b);
void fl_buf_unref(struct fl_buf *b); /* NULL is a no-op */

/* ---- frames ---- */
/* Packs env into a new frame buffer (refs = 1). */
int fl_wire_encode(const fl_envelope *env, struct fl_buf **out);
/* The frame of an Error envelope (code = fl_wire_error_code(err)) or of a
 * Bye envelope, as fl_wire_encode makes it. */
int fl_wire_encode_error(int err, const char *msg, struct fl_buf **out);
int fl_wire_encode_bye(const char *reason, struct fl_buf **out);
/* Unpacks one frame payload (without its 4-byte length) into an envelope
 * owned by the caller (free with fl_wire_envelope_free). Rejects: payload
 * over max_frame, undecodable protobuf, an envelope with no body, strings
 * over FL_WIRE_NAME_MAX where names are expected, more than
 * FL_WIRE_NDIM_MAX shape entries. */
#define FL_WIRE_NDIM_MAX 8
int fl_wire_decode(const uint8_t *payload, size_t len, size_t max_frame, fl_envelope **out);
void fl_wire_envelope_free(fl_envelope *env);

/* Reassembles frames from a stream. */
struct fl_frame_reader {
	uint8_t hdr[FL_WIRE_FRAME_HEADER_BYTES];
	size_t hdr_have;
	uint8_t *buf; /* a fragmented frame being reassembled, else NULL */
	size_t need, have;
	size_t max_frame; /* read at every header: a stream may change it between frames */
	int err;          /* sticky: once a feed failed, every later feed returns it */
	/* Optional: words the refusal of a header announcing n bytes (0, or over
	 * max_frame) and returns the error. NULL: FL_EFORMAT for 0, FL_ERANGE for
	 * too long, with the reader's own message. Called with feed's ctx. */
	int (*refuse)(void *ctx, size_t n, size_t max_frame);
};
void fl_frame_reader_init(struct fl_frame_reader *r, size_t max_frame);
void fl_frame_reader_free(struct fl_frame_reader *r);
/* What an on_frame callback returns to stop the feed without an error (its
 * connection closed during the call). The one positive value a feed
 * returns; every failure is a negative fl_err. */
#define FL_WIRE_FEED_STOP 1
/* Feeds len bytes; calls on_frame(ctx, payload, n) for every complete frame
 * (the payload is valid during the call only). on_frame returns FL_OK to go
 * on, FL_WIRE_FEED_STOP or a negative fl_err to stop. Returns FL_OK,
 * FL_ERANGE for a frame over max_frame (nothing allocated; the stream is
 * then unusable), or the first non-zero value on_frame returned. */
int fl_frame_reader_feed(struct fl_frame_reader *r, const uint8_t *data, size_t len,
			 int (*on_frame)(void *ctx, const uint8_t *payload, size_t n), void *ctx);

/* 1 when id is a valid Hello.client_id (1..FL_WIRE_CLIENT_ID_MAX characters
 * of [A-Za-z0-9._-]), else 0; NULL is not. */
int fl_wire_client_id_valid(const char *id);

/* ---- Error.code ---- */
/* The ErrorCode (proto/fedloha.proto) an Error carries for err: every fl_err
 * has its own fixed number (-err); FL_OK and anything that is not an fl_err
 * give ERROR_CODE_UNSPECIFIED (0). */
uint32_t fl_wire_error_code(int err);
/* The fl_err a received Error.code stands for: the inverse of
 * fl_wire_error_code, and FL_EINVAL for ERROR_CODE_UNSPECIFIED or a number
 * this build does not know. Never FL_OK. */
int fl_wire_error_from_code(uint32_t code);

/* ---- tensors ---- */
struct fl_wire_tensor {
	const char *name;
	int ndim;
	int64_t shape[FL_WIRE_NDIM_MAX];
	size_t numel;
	float *data; /* source when sending, destination when receiving */
};

/* Fills w (every field): ndim shape entries, numel floats at data. */
void fl_wire_tensor_init(struct fl_wire_tensor *w, const char *name, int ndim, const int64_t *shape,
			 size_t numel, float *data);

/* Appends the TensorChunk frames of one tensor to *frames (grown with
 * realloc; *nframes updated). int8 uses one scale per tensor: max|x| / 127
 * (1 for an all-zero tensor). data must be finite (FL_ENONFINITE). */
int fl_wire_tensor_encode(uint64_t round, const struct fl_wire_tensor *t, enum fl_wire_dtype dtype,
			  size_t chunk_bytes, struct fl_buf ***frames, size_t *nframes);
/* Encoded wire size of a tensor's data in dtype (no framing), for reports. */
size_t fl_wire_tensor_data_bytes(size_t numel, enum fl_wire_dtype dtype);

/* A receiver for a known set of tensors. The descriptors are copied; the
 * destination buffers stay the caller's. */
struct fl_wire_rx;
int fl_wire_rx_new(const struct fl_wire_tensor *expect, size_t n, enum fl_wire_dtype dtype,
		   struct fl_wire_rx **out);
void fl_wire_rx_free(struct fl_wire_rx *rx);
/* Starts a new transfer for `round` (forgets all progress). */
void fl_wire_rx_reset(struct fl_wire_rx *rx, uint64_t round);
/* Checks and decodes one chunk. Any problem gives an error with a one-line
 * reason naming the tensor (FL_EFORMAT, FL_ESHAPE, FL_ENONFINITE, ...); the
 * destination of that tensor may then be partly written. */
int fl_wire_rx_chunk(struct fl_wire_rx *rx, const Fedloha__V1__TensorChunk *c);
/* 1 when every expected tensor has arrived completely. */
int fl_wire_rx_complete(const struct fl_wire_rx *rx);

#endif
