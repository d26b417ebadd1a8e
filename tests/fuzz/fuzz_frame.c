/* fuzz_frame.c - fuzz target for the wire codec: arbitrary bytes through
 * fl_frame_reader_feed -> fl_wire_decode -> fl_wire_encode (round trip) and,
 * for TensorChunk bodies, fl_wire_rx_chunk against a small expected set.
 *
 * Input: byte 0 picks the receiver's dtype (& 3), byte 1 the feed step (0 =
 * all at once, else that many bytes per feed), the rest is the stream. The
 * receiver expects, for round 1: "a" [2, 3], "b" [5], "s" (a scalar) and
 * "e" [0]. Invariants checked with abort(): a re-encoded envelope decodes to
 * the same body, error details are one line, a complete transfer holds only
 * finite values.
 *
 * Built two ways from this one file: with libFuzzer (clang, -DFL_FUZZ=ON)
 * and, with FL_FUZZ_REPLAY defined, as a plain program that runs every file
 * of the given folders or paths through the target (a ctest replaying
 * tests/fuzz/corpus/frame). No other I/O.
 */
#include "errors.h"
#include "wire.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_FRAME 4096

struct fuzz_ctx {
	struct fl_wire_rx *rx;
};

/* What the last input did, for the replay program's listing. */
static int last_frames, last_chunks_ok, last_complete;

static void check_msg(void)
{
	if (strchr(fl_error_msg(), '\n'))
		abort();
}

/* 1 when m or a message inside it kept unknown fields. protobuf-c accepts a
 * field number 0 written as a long varint (0x81 0x00) as unknown, but
 * refuses it when re-packed in canonical form (0x01): such envelopes may not
 * survive a round trip, which is harmless (the field is ignored). */
static int has_unknown(const ProtobufCMessage *m)
{
	if (!m)
		return 0;
	if (m->n_unknown_fields)
		return 1;
	const ProtobufCMessageDescriptor *d = m->descriptor;
	const char *base = (const char *)m;
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		if (f->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n;
			ProtobufCMessage **v;
			memcpy(&n, base + f->quantifier_offset, sizeof(n));
			memcpy(&v, base + f->offset, sizeof(v));
			for (size_t k = 0; k < n; k++)
				if (has_unknown(v[k]))
					return 1;
			continue;
		}
		if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
			uint32_t c;
			memcpy(&c, base + f->quantifier_offset, sizeof(c));
			if (c != f->id)
				continue;
		}
		ProtobufCMessage *sub;
		memcpy(&sub, base + f->offset, sizeof(sub));
		if (has_unknown(sub))
			return 1;
	}
	return 0;
}

static int on_frame(void *vctx, const uint8_t *p, size_t n)
{
	struct fuzz_ctx *ctx = vctx;
	fl_envelope *e = NULL;
	int rc = fl_wire_decode(p, n, FUZZ_MAX_FRAME, &e);
	last_frames++;
	if (rc) {
		check_msg();
		return 0; /* keep going: more of the input gets exercised */
	}
	/* Round trip: what we decoded encodes; without unknown fields it
	 * decodes again to the same body and re-encodes to the same bytes. */
	struct fl_buf *b = NULL, *b2 = NULL;
	if (fl_wire_encode(e, &b) != FL_OK)
		abort();
	fl_envelope *e2 = NULL;
	if (fl_wire_decode(b->data + 4, b->len - 4, SIZE_MAX, &e2) == FL_OK) {
		if (e2->body_case != e->body_case || fl_wire_encode(e2, &b2) != FL_OK)
			abort();
		if (!has_unknown(&e->base) &&
		    (b2->len != b->len || memcmp(b2->data, b->data, b->len) != 0))
			abort();
	} else if (!has_unknown(&e->base)) {
		abort();
	}
	fl_wire_envelope_free(e2);
	fl_buf_unref(b);
	fl_buf_unref(b2);
	if (e->body_case == FEDLOHA__V1__ENVELOPE__BODY_CHUNK) {
		if (fl_wire_rx_chunk(ctx->rx, e->chunk) != FL_OK)
			check_msg();
		else
			last_chunks_ok++;
	}
	fl_wire_envelope_free(e);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	static float a[6], b[5], s[1];
	struct fl_wire_tensor expect[4] = {
		{.name = "a", .ndim = 2, .shape = {2, 3}, .numel = 6, .data = a},
		{.name = "b", .ndim = 1, .shape = {5}, .numel = 5, .data = b},
		{.name = "s", .ndim = 0, .numel = 1, .data = s},
		{.name = "e", .ndim = 1, .shape = {0}, .numel = 0, .data = NULL},
	};
	struct fuzz_ctx ctx = {0};
	last_frames = last_chunks_ok = last_complete = 0;
	if (fl_wire_rx_new(expect, 4, (enum fl_wire_dtype)(data[0] & 3), &ctx.rx) != FL_OK)
		abort();
	fl_wire_rx_reset(ctx.rx, 1);
	size_t step = data[1] ? data[1] : size;
	data += 2;
	size -= 2;
	struct fl_frame_reader r;
	fl_frame_reader_init(&r, FUZZ_MAX_FRAME);
	for (size_t i = 0; i < size; i += step) {
		size_t k = size - i < step ? size - i : step;
		if (fl_frame_reader_feed(&r, data + i, k, on_frame, &ctx) != FL_OK) {
			check_msg();
			break;
		}
	}
	fl_frame_reader_free(&r);
	if ((last_complete = fl_wire_rx_complete(ctx.rx))) {
		for (int i = 0; i < 6; i++)
			if (!isfinite(a[i]) || (i < 5 && !isfinite(b[i])))
				abort();
		if (!isfinite(s[0]))
			abort();
	}
	fl_wire_rx_free(ctx.rx);
	return 0;
}

#ifdef FL_FUZZ_REPLAY
#include "replay.h"

static void report(const char *path, size_t n)
{
	printf("%-60s %5zu bytes, %3d frames, %3d chunks accepted%s\n", path, n, last_frames,
	       last_chunks_ok, last_complete ? ", complete" : "");
}

int main(int argc, char **argv)
{
	return fl_fuzz_replay_main(argc, argv, report);
}
#endif
