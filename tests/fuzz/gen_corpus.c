/* gen_corpus.c - writes the seed corpus of fuzz_frame.c into a folder:
 * small valid and invalid streams in its input format (byte 0 dtype, byte 1
 * feed step, then frames). Run by hand when the format changes:
 *   fuzz_gen_corpus tests/fuzz/corpus/frame
 * The files are committed; this program is not a test.
 */
#include "errors.h"
#include "wire.h"
#include "wireutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint8_t out[1 << 16];
static size_t out_len;
static const char *out_dir;

static void begin(int dtype, int step)
{
	out[0] = (uint8_t)dtype;
	out[1] = (uint8_t)step;
	out_len = 2;
}

static void raw(const void *p, size_t n)
{
	if (out_len + n > sizeof(out))
		abort();
	memcpy(out + out_len, p, n);
	out_len += n;
}

/* Appends an encoded frame (err: what the encoder returned). */
static void frame(int err, struct fl_buf **b)
{
	if (err != 0)
		abort();
	raw((*b)->data, (*b)->len);
	fl_buf_unref(*b);
}

/* Appends the frame of an envelope carrying msg (wireutil.h). */
static void body(ProtobufCMessage *msg)
{
	fl_envelope e = fl_test_envelope(msg);
	struct fl_buf *b = NULL;
	frame(fl_wire_encode(&e, &b), &b);
}

static void finish(const char *name)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", out_dir, name);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(out, 1, out_len, f) != out_len || fclose(f) != 0) {
		fprintf(stderr, "%s: write failed\n", path);
		exit(1);
	}
}

static float va[6] = {0.5f, -1.25f, 2.0f, 0.0f, 3.5f, -0.125f};
static float vb[5] = {1, 2, 3, 4, 5};
static float vs[1] = {-7.0f};

/* The four expected tensors, valid, in dtype and chunk size. */
static void tensors(uint64_t round, int dtype, size_t chunk)
{
	struct fl_wire_tensor t[4] = {
		{.name = "a", .ndim = 2, .shape = {2, 3}, .numel = 6, .data = va},
		{.name = "b", .ndim = 1, .shape = {5}, .numel = 5, .data = vb},
		{.name = "s", .ndim = 0, .numel = 1, .data = vs},
		{.name = "e", .ndim = 1, .shape = {0}, .numel = 0, .data = NULL},
	};
	for (int i = 0; i < 4; i++) {
		struct fl_buf **v = NULL;
		size_t n = 0;
		if (fl_wire_tensor_encode(round, &t[i], (enum fl_wire_dtype)dtype, chunk, &v, &n) !=
		    0)
			abort();
		for (size_t k = 0; k < n; k++) {
			raw(v[k]->data, v[k]->len);
			fl_buf_unref(v[k]);
		}
		free(v);
	}
}

/* One hand-made chunk of "a" (or another name). */
static void chunk(const char *name, uint64_t round, int dtype, uint64_t d1, uint64_t offset,
		  const void *data, size_t len, float scale, int last)
{
	uint64_t shape[9] = {2, d1, 1, 1, 1, 1, 1, 1, 1};
	Fedloha__V1__TensorChunk c = FEDLOHA__V1__TENSOR_CHUNK__INIT;
	c.round = round;
	c.name = (char *)name;
	c.n_shape = d1 == 0 ? 9 : 2;
	c.shape = shape;
	c.dtype = (Fedloha__V1__DType)dtype;
	c.scale = scale;
	c.offset = offset;
	c.data = (ProtobufCBinaryData){len, (uint8_t *)data};
	c.last = last;
	body(&c.base);
}

static void session_frames(void)
{
	Fedloha__V1__Hello h = FEDLOHA__V1__HELLO__INIT;
	char *caps[] = {"f16", "int8"};
	h.protocol_version = 1;
	h.client_id = "client-1";
	h.num_examples = 60;
	h.n_capabilities = 2;
	h.capabilities = caps;
	body(&h.base);
	Fedloha__V1__ModelSpec ms = FEDLOHA__V1__MODEL_SPEC__INIT;
	Fedloha__V1__Limits lim = FEDLOHA__V1__LIMITS__INIT;
	Fedloha__V1__Welcome w = FEDLOHA__V1__WELCOME__INIT;
	uint32_t input[3];
	fl_test_model_spec(&ms, input, "2nn", 1, 28, 28, 10);
	lim.max_frame_bytes = 4096;
	w.session_id = "s";
	w.model = &ms;
	w.limits = &lim;
	body(&w.base);
	Fedloha__V1__TrainSettings ts = FEDLOHA__V1__TRAIN_SETTINGS__INIT;
	Fedloha__V1__RoundTask rt = FEDLOHA__V1__ROUND_TASK__INIT;
	fl_test_round_task(&rt, &ts, 1, 1, 0, 0.1f, 4);
	ts.optimizer = "sgd";
	body(&rt.base);
}

static void other_frames(void)
{
	Fedloha__V1__Metric m = FEDLOHA__V1__METRIC__INIT, *mv[1] = {&m};
	Fedloha__V1__Update up = FEDLOHA__V1__UPDATE__INIT;
	m.name = "train_loss";
	m.value = 0.5;
	fl_test_update(&up, 1, 60, 4, mv, 1);
	body(&up.base);
	Fedloha__V1__EvalTask et = FEDLOHA__V1__EVAL_TASK__INIT;
	et.round = 1;
	body(&et.base);
	Fedloha__V1__EvalResult er = FEDLOHA__V1__EVAL_RESULT__INIT;
	er.loss = 0.25;
	body(&er.base);
	Fedloha__V1__Heartbeat hb = FEDLOHA__V1__HEARTBEAT__INIT;
	hb.time_ms = 12345;
	body(&hb.base);
	struct fl_buf *b = NULL;
	frame(fl_wire_encode_error(FL_EFORMAT, "bad", &b), &b);
	uint8_t sha[32] = {1, 2, 3};
	Fedloha__V1__BaseRequest br = FEDLOHA__V1__BASE_REQUEST__INIT;
	br.sha256 = (ProtobufCBinaryData){32, sha};
	body(&br.base);
	Fedloha__V1__BaseChunk bc = FEDLOHA__V1__BASE_CHUNK__INIT;
	bc.data = (ProtobufCBinaryData){8, sha};
	bc.last = 1;
	body(&bc.base);
	frame(fl_wire_encode_bye("done", &b), &b);
}

/* A mid-tier's answer: PartialSum, then SumChunk frames (16 bytes an
 * element), and an empty PartialSum. */
static void tree_frames(void)
{
	Fedloha__V1__Metric m = FEDLOHA__V1__METRIC__INIT, *mv[1] = {&m};
	Fedloha__V1__PartialSum ps = FEDLOHA__V1__PARTIAL_SUM__INIT;
	m.name = "train_loss";
	m.value = 0.5;
	ps.round = 1;
	ps.weight = 90;
	ps.num_updates = 2;
	ps.num_tensors = 4;
	ps.n_metrics = 1;
	ps.metrics = mv;
	body(&ps.base);
	uint8_t sums[32] = {0,    0,    0,    0,    0,    1,    0,    0,    0,    0,   0,
			    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,   0xff,
			    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
	Fedloha__V1__SumChunk sc = FEDLOHA__V1__SUM_CHUNK__INIT;
	sc.round = 1;
	sc.name = "a";
	sc.data = (ProtobufCBinaryData){32, sums};
	body(&sc.base);
	sc.offset = 2;
	sc.data.len = 16;
	sc.last = 1;
	body(&sc.base);
	Fedloha__V1__PartialSum empty = FEDLOHA__V1__PARTIAL_SUM__INIT;
	empty.round = 2;
	body(&empty.base);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	out_dir = argv[1];
	const float two[2] = {1.0f, 2.0f}, nan2[2] = {1.0f, NAN};
	const char *dn[4] = {"f32", "f16", "bf16", "int8"};
	char name[64];
	for (int d = 0; d < 4; d++) {
		begin(d, 0);
		tensors(1, d, 8);
		snprintf(name, sizeof(name), "valid-%s", dn[d]);
		finish(name);
	}
	begin(0, 1), tensors(1, 0, 4), finish("valid-f32-bytewise");
	begin(3, 13), tensors(1, 3, 2), finish("valid-int8-step13");
	begin(0, 0), session_frames(), finish("session");
	begin(0, 5), other_frames(), finish("messages");
	begin(0, 0), tree_frames(), finish("tree");
	begin(0, 0), raw("\0\0\0\0", 4), finish("zero-length");
	begin(0, 0), raw("\xff\xff\xff\xff\x01", 5), finish("oversize");
	begin(0, 0), raw("\0\0\0\x03\xff\xff\xff", 7), finish("garbage");
	begin(0, 0), raw("\0\0\0\x02\x68\x05", 6), finish("unknown-body");
	begin(0, 0), tensors(1, 0, 8), out_len -= 3, finish("truncated");
	begin(0, 0), chunk("a", 2, 0, 3, 0, two, 8, 0, 0), finish("wrong-round");
	begin(0, 0), chunk("zz", 1, 0, 3, 0, two, 8, 0, 0), finish("unknown-name");
	begin(0, 0), chunk("a", 1, 0, 4, 0, two, 8, 0, 0), finish("shape-mismatch");
	begin(0, 0), chunk("a", 1, 0, 0, 0, two, 8, 0, 0), finish("nine-dims");
	begin(0, 0), chunk("a", 1, 0, 3, 0, two, 8, 0, 0), chunk("a", 1, 0, 3, 4, two, 8, 0, 0),
		finish("offset-gap");
	begin(0, 0), chunk("a", 1, 0, 3, 0, two, 8, 0, 0), chunk("a", 1, 0, 3, 0, two, 8, 0, 0),
		finish("duplicate");
	begin(3, 0), chunk("a", 1, 3, 3, 0, two, 2, 0.0f, 0), finish("int8-scale-zero");
	begin(0, 0), chunk("a", 1, 0, 3, 0, nan2, 8, 0, 0), finish("nan");
	begin(0, 0), chunk("a", 1, 0, 3, 0, two, 6, 0, 0), finish("partial-element");
	begin(0, 0), chunk("a", 1, 0, 3, 0, two, 8, 0, 1), finish("early-last");
	char longname[130];
	memset(longname, 'n', 129);
	longname[129] = '\0';
	begin(0, 0), chunk(longname, 1, 0, 3, 0, two, 8, 0, 0), finish("long-name");
	return 0;
}
