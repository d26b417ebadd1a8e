/* test_wire.c - wire frames: every message type through encode / decode,
 * the decode limits, and the streaming frame reader under arbitrary
 * fragmentation. Tensor chunks and the receiver: test_wire_tensor.c. */
#include "bytes.h"
#include "errors.h"
#include "rng.h"
#include "testutil.h"
#include "wire.h"
#include "wireutil.h"

#include <stdlib.h>
#include <string.h>

/* Encodes env, checks the length prefix, decodes the payload. */
static fl_envelope *roundtrip(const fl_envelope *env)
{
	struct fl_buf *b = NULL;
	if (!FL_CHECK(fl_wire_encode(env, &b) == FL_OK))
		return NULL;
	FL_CHECK(b->refs == 1);
	size_t n = fl_be32_get(b->data);
	FL_CHECK(n + 4 == b->len);
	FL_CHECK(n == fedloha__v1__envelope__get_packed_size(env));
	fl_envelope *out = NULL;
	FL_CHECK(fl_wire_decode(b->data + 4, n, FL_WIRE_MAX_FRAME_DEFAULT, &out) == FL_OK);
	fl_buf_unref(b);
	if (out)
		FL_CHECK(out->body_case == env->body_case);
	return out;
}

static void test_messages(void)
{
	fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT, *d;
	uint8_t sha[32];
	for (int i = 0; i < 32; i++)
		sha[i] = (uint8_t)(i * 7 + 1);

	Fedloha__V1__Hello h = FEDLOHA__V1__HELLO__INIT;
	char *caps[] = {"f16", "int8", "eval"};
	h.protocol_version = 1;
	h.client_id = "client-7";
	h.num_examples = 600;
	h.n_capabilities = 3;
	h.capabilities = caps;
	h.preferred_dtype = FEDLOHA__V1__DTYPE__DTYPE_INT8;
	h.has_base = 1;
	h.base_sha256 = (ProtobufCBinaryData){32, sha};
	env = fl_test_envelope(&h.base);
	if ((d = roundtrip(&env))) {
		FL_CHECK(d->hello->protocol_version == 1 && d->hello->num_examples == 600);
		FL_CHECK(strcmp(d->hello->client_id, "client-7") == 0);
		FL_CHECK(d->hello->n_capabilities == 3 &&
			 strcmp(d->hello->capabilities[2], "eval") == 0);
		FL_CHECK(d->hello->preferred_dtype == FEDLOHA__V1__DTYPE__DTYPE_INT8);
		FL_CHECK(d->hello->has_base && d->hello->base_sha256.len == 32 &&
			 memcmp(d->hello->base_sha256.data, sha, 32) == 0);
		fl_wire_envelope_free(d);
	}

	Fedloha__V1__ModelSpec ms = FEDLOHA__V1__MODEL_SPEC__INIT;
	Fedloha__V1__Limits lim = FEDLOHA__V1__LIMITS__INIT;
	Fedloha__V1__Welcome w = FEDLOHA__V1__WELCOME__INIT;
	uint32_t input[3];
	fl_test_model_spec(&ms, input, "cnn", 3, 32, 32, 10);
	ms.config_json = "{\"r\": 8}";
	ms.base_sha256 = (ProtobufCBinaryData){32, sha};
	ms.base_bytes = 123456789;
	lim.max_frame_bytes = 4u << 20;
	lim.chunk_bytes = 1u << 20;
	lim.heartbeat_ms = 5000;
	lim.idle_timeout_ms = 30000;
	w.protocol_version = 1;
	w.session_id = "s-1";
	w.model = &ms;
	w.limits = &lim;
	w.dtype = FEDLOHA__V1__DTYPE__DTYPE_BF16;
	w.seed = 0x123456789abcdefull;
	env = fl_test_envelope(&w.base);
	if ((d = roundtrip(&env))) {
		Fedloha__V1__Welcome *x = d->welcome;
		FL_CHECK(x->protocol_version == 1 && strcmp(x->session_id, "s-1") == 0);
		FL_CHECK(x->dtype == FEDLOHA__V1__DTYPE__DTYPE_BF16 &&
			 x->seed == 0x123456789abcdefull);
		FL_CHECK(x->model && strcmp(x->model->arch, "cnn") == 0 && x->model->n_input == 3 &&
			 x->model->input[1] == 32 && x->model->classes == 10);
		FL_CHECK(x->model && strcmp(x->model->config_json, "{\"r\": 8}") == 0 &&
			 x->model->base_bytes == 123456789 && x->model->base_sha256.len == 32);
		FL_CHECK(x->limits && x->limits->max_frame_bytes == (4u << 20) &&
			 x->limits->chunk_bytes == (1u << 20) && x->limits->heartbeat_ms == 5000 &&
			 x->limits->idle_timeout_ms == 30000);
		fl_wire_envelope_free(d);
	}

	Fedloha__V1__TrainSettings ts = FEDLOHA__V1__TRAIN_SETTINGS__INIT;
	Fedloha__V1__RoundTask rt = FEDLOHA__V1__ROUND_TASK__INIT;
	fl_test_round_task(&rt, &ts, 17, 2, 32, 0.05f, 12);
	ts.momentum = 0.9f;
	ts.weight_decay = 1e-4f;
	ts.prox_mu = 0.01f;
	ts.optimizer = "adam";
	rt.deadline_ms = 60000;
	env = fl_test_envelope(&rt.base);
	if ((d = roundtrip(&env))) {
		FL_CHECK(d->task->round == 17 && d->task->deadline_ms == 60000 &&
			 d->task->num_tensors == 12);
		FL_CHECK(d->task->train && d->task->train->epochs == 2 &&
			 d->task->train->batch_size == 32);
		FL_CHECK(d->task->train && d->task->train->lr == 0.05f &&
			 d->task->train->momentum == 0.9f &&
			 d->task->train->weight_decay == 1e-4f &&
			 d->task->train->prox_mu == 0.01f &&
			 strcmp(d->task->train->optimizer, "adam") == 0);
		fl_wire_envelope_free(d);
	}

	Fedloha__V1__TensorChunk tc = FEDLOHA__V1__TENSOR_CHUNK__INIT;
	uint64_t shape[2] = {4, 3};
	uint8_t bytes[6] = {1, 2, 3, 250, 0, 9};
	tc.round = 3;
	tc.name = "fc1.hada_w1_a";
	tc.n_shape = 2;
	tc.shape = shape;
	tc.dtype = FEDLOHA__V1__DTYPE__DTYPE_INT8;
	tc.scale = 0.125f;
	tc.offset = 6;
	tc.data = (ProtobufCBinaryData){6, bytes};
	tc.last = 1;
	env = fl_test_envelope(&tc.base);
	if ((d = roundtrip(&env))) {
		Fedloha__V1__TensorChunk *x = d->chunk;
		FL_CHECK(x->round == 3 && strcmp(x->name, "fc1.hada_w1_a") == 0 &&
			 x->n_shape == 2 && x->shape[0] == 4 && x->shape[1] == 3);
		FL_CHECK(x->dtype == FEDLOHA__V1__DTYPE__DTYPE_INT8 && x->scale == 0.125f &&
			 x->offset == 6 && x->last);
		FL_CHECK(x->data.len == 6 && memcmp(x->data.data, bytes, 6) == 0);
		fl_wire_envelope_free(d);
	}

	Fedloha__V1__Metric m1 = FEDLOHA__V1__METRIC__INIT, m2 = FEDLOHA__V1__METRIC__INIT;
	Fedloha__V1__Metric *ms2[2] = {&m1, &m2};
	Fedloha__V1__Update up = FEDLOHA__V1__UPDATE__INIT;
	m1.name = "train_loss";
	m1.value = 0.3125;
	m2.name = "seconds";
	m2.value = 12.5;
	fl_test_update(&up, 9, 500, 4, ms2, 2);
	env = fl_test_envelope(&up.base);
	if ((d = roundtrip(&env))) {
		FL_CHECK(d->update->round == 9 && d->update->num_examples == 500 &&
			 d->update->num_tensors == 4 && d->update->n_metrics == 2);
		FL_CHECK(d->update->n_metrics == 2 &&
			 strcmp(d->update->metrics[1]->name, "seconds") == 0 &&
			 d->update->metrics[0]->value == 0.3125);
		fl_wire_envelope_free(d);
	}

	Fedloha__V1__EvalTask et = FEDLOHA__V1__EVAL_TASK__INIT;
	et.round = 4;
	et.num_tensors = 6;
	env = fl_test_envelope(&et.base);
	if ((d = roundtrip(&env))) {
		FL_CHECK(d->eval_task->round == 4 && d->eval_task->num_tensors == 6);
		fl_wire_envelope_free(d);
	}

	Fedloha__V1__EvalResult er = FEDLOHA__V1__EVAL_RESULT__INIT;
	er.round = 4;
	er.num_examples = 100;
	er.loss = 1.25;
	er.accuracy = 0.875;
	env = fl_test_envelope(&er.base);
	if ((d = roundtrip(&env))) {
		FL_CHECK(d->eval_result->round == 4 && d->eval_result->num_examples == 100 &&
			 d->eval_result->loss == 1.25 && d->eval_result->accuracy == 0.875);
		fl_wire_envelope_free(d);
	}

	/* A heartbeat at time 0 has an empty body message, still a set body. */
	Fedloha__V1__Heartbeat hb = FEDLOHA__V1__HEARTBEAT__INIT;
	env = fl_test_envelope(&hb.base);
	if ((d = roundtrip(&env))) {
		FL_CHECK(d->heartbeat->time_ms == 0);
		fl_wire_envelope_free(d);
	}
	hb.time_ms = 1700000000123ull;
	if ((d = roundtrip(&env))) {
		FL_CHECK(d->heartbeat->time_ms == 1700000000123ull);
		fl_wire_envelope_free(d);
	}

	Fedloha__V1__Error err = FEDLOHA__V1__ERROR__INIT;
	err.code = (uint32_t)-FL_ESHAPE;
	err.message = "tensor 'x': shape differs";
	env = fl_test_envelope(&err.base);
	if ((d = roundtrip(&env))) {
		FL_CHECK(d->error->code == 9 &&
			 strcmp(d->error->message, "tensor 'x': shape differs") == 0);
		fl_wire_envelope_free(d);
	}

	Fedloha__V1__Bye bye = FEDLOHA__V1__BYE__INIT;
	bye.reason = "done";
	env = fl_test_envelope(&bye.base);
	if ((d = roundtrip(&env))) {
		FL_CHECK(strcmp(d->bye->reason, "done") == 0);
		fl_wire_envelope_free(d);
	}

	Fedloha__V1__BaseRequest br = FEDLOHA__V1__BASE_REQUEST__INIT;
	br.sha256 = (ProtobufCBinaryData){32, sha};
	env = fl_test_envelope(&br.base);
	if ((d = roundtrip(&env))) {
		FL_CHECK(d->base_request->sha256.len == 32 &&
			 memcmp(d->base_request->sha256.data, sha, 32) == 0);
		fl_wire_envelope_free(d);
	}

	Fedloha__V1__BaseChunk bc = FEDLOHA__V1__BASE_CHUNK__INIT;
	bc.offset = 1u << 20;
	bc.data = (ProtobufCBinaryData){6, bytes};
	bc.last = 1;
	env = fl_test_envelope(&bc.base);
	if ((d = roundtrip(&env))) {
		FL_CHECK(d->base_chunk->offset == (1u << 20) && d->base_chunk->last &&
			 d->base_chunk->data.len == 6 &&
			 memcmp(d->base_chunk->data.data, bytes, 6) == 0);
		fl_wire_envelope_free(d);
	}

	/* No body: refused at encode. */
	fl_envelope empty = FEDLOHA__V1__ENVELOPE__INIT;
	struct fl_buf *b = (struct fl_buf *)&empty; /* must be reset to NULL */
	FL_CHECK(fl_wire_encode(&empty, &b) == FL_EINVAL && b == NULL);
	fl_wire_envelope_free(NULL);
}

/* Decodes raw payload bytes; returns the error code and frees any result. */
static int decode_rc(const uint8_t *p, size_t n, size_t max)
{
	fl_envelope *e = (fl_envelope *)&e;
	int rc = fl_wire_decode(p, n, max, &e);
	FL_CHECK(rc == FL_OK ? e != NULL : e == NULL);
	fl_wire_envelope_free(e);
	return rc;
}

/* Packs env's payload (no length prefix) into buf; returns its length. */
static size_t pack_payload(const fl_envelope *env, uint8_t *buf, size_t cap)
{
	size_t n = fedloha__v1__envelope__get_packed_size(env);
	if (n > cap)
		return 0;
	return fedloha__v1__envelope__pack(env, buf);
}

static void test_decode_limits(void)
{
	static uint8_t buf[4096];
	char name[FL_WIRE_NAME_MAX + 2];
	fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT;

	/* Empty payload, garbage, unknown body field, truncated. */
	FL_CHECK(decode_rc(buf, 0, 100) == FL_EFORMAT);
	const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0xff};
	FL_CHECK(decode_rc(garbage, sizeof(garbage), 100) == FL_EFORMAT);
	const uint8_t unknown[] = {13 << 3, 5}; /* field 13, varint 5: no body */
	FL_CHECK(decode_rc(unknown, sizeof(unknown), 100) == FL_EFORMAT);
	const uint8_t hb[] = {8 << 3 | 2, 2, 8, 42}; /* heartbeat{time_ms=42} */
	FL_CHECK(decode_rc(hb, sizeof(hb), 100) == FL_OK);
	FL_CHECK(decode_rc(hb, sizeof(hb) - 1, 100) == FL_EFORMAT);
	FL_CHECK(decode_rc(hb, sizeof(hb), 3) == FL_ERANGE);
	FL_CHECK(decode_rc(hb, sizeof(hb), 4) == FL_OK);

	/* Names: FL_WIRE_NAME_MAX bytes pass, one more is refused. */
	memset(name, 'a', sizeof(name));
	name[FL_WIRE_NAME_MAX] = '\0';
	Fedloha__V1__TensorChunk tc = FEDLOHA__V1__TENSOR_CHUNK__INIT;
	uint64_t shape[FL_WIRE_NDIM_MAX + 1] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
	tc.name = name;
	tc.n_shape = FL_WIRE_NDIM_MAX;
	tc.shape = shape;
	env = fl_test_envelope(&tc.base);
	FL_CHECK(decode_rc(buf, pack_payload(&env, buf, sizeof(buf)), 4096) == FL_OK);
	tc.n_shape = FL_WIRE_NDIM_MAX + 1;
	FL_CHECK(decode_rc(buf, pack_payload(&env, buf, sizeof(buf)), 4096) == FL_ERANGE);
	tc.n_shape = 2;
	name[FL_WIRE_NAME_MAX] = 'a';
	name[FL_WIRE_NAME_MAX + 1] = '\0';
	FL_CHECK(decode_rc(buf, pack_payload(&env, buf, sizeof(buf)), 4096) == FL_ERANGE);

	Fedloha__V1__Hello h = FEDLOHA__V1__HELLO__INIT;
	h.client_id = name;
	env = fl_test_envelope(&h.base);
	FL_CHECK(decode_rc(buf, pack_payload(&env, buf, sizeof(buf)), 4096) == FL_ERANGE);
	FL_CHECK(strchr(fl_error_msg(), '\n') == NULL);
	h.client_id = "client-1";
	FL_CHECK(decode_rc(buf, pack_payload(&env, buf, sizeof(buf)), 4096) == FL_OK);

	Fedloha__V1__Metric m1 = FEDLOHA__V1__METRIC__INIT, m2 = FEDLOHA__V1__METRIC__INIT;
	Fedloha__V1__Metric *mv[2] = {&m1, &m2};
	Fedloha__V1__Update up = FEDLOHA__V1__UPDATE__INIT;
	m1.name = "train_loss";
	m2.name = name;
	up.n_metrics = 2;
	up.metrics = mv;
	env = fl_test_envelope(&up.base);
	FL_CHECK(decode_rc(buf, pack_payload(&env, buf, sizeof(buf)), 4096) == FL_ERANGE);
	m2.name = "seconds";
	FL_CHECK(decode_rc(buf, pack_payload(&env, buf, sizeof(buf)), 4096) == FL_OK);
}

/* ---- frame reader ---- */

struct sink {
	int n;
	uint64_t times[64];
	int stop_at; /* return an error on this frame number (0 = never) */
};

static int on_frame(void *ctx, const uint8_t *p, size_t n)
{
	struct sink *s = ctx;
	fl_envelope *e = NULL;
	int rc = fl_wire_decode(p, n, FL_WIRE_MAX_FRAME_DEFAULT, &e);
	if (rc)
		return rc;
	if (s->n < 64)
		s->times[s->n] = e->body_case == FEDLOHA__V1__ENVELOPE__BODY_HEARTBEAT
					 ? e->heartbeat->time_ms
					 : (e->body_case == FEDLOHA__V1__ENVELOPE__BODY_BYE
						    ? strlen(e->bye->reason)
						    : 0);
	s->n++;
	fl_wire_envelope_free(e);
	return s->stop_at && s->n == s->stop_at ? 77 : 0;
}

/* A stream of 6 frames: heartbeats with time k*1000+1 and, in the middle, a
 * 3000-byte Bye (reason of 2999 'x'). Expected values through *times. */
static uint8_t *make_stream(size_t *len, uint64_t *times)
{
	static char reason[3000];
	memset(reason, 'x', sizeof(reason) - 1);
	reason[sizeof(reason) - 1] = '\0';
	uint8_t *s = NULL;
	*len = 0;
	for (int k = 0; k < 6; k++) {
		fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT;
		Fedloha__V1__Heartbeat hb = FEDLOHA__V1__HEARTBEAT__INIT;
		Fedloha__V1__Bye bye = FEDLOHA__V1__BYE__INIT;
		if (k == 3) {
			bye.reason = reason;
			env = fl_test_envelope(&bye.base);
			times[k] = sizeof(reason) - 1;
		} else {
			hb.time_ms = (uint64_t)k * 1000 + 1;
			env = fl_test_envelope(&hb.base);
			times[k] = hb.time_ms;
		}
		struct fl_buf *b = NULL;
		FL_CHECK(fl_wire_encode(&env, &b) == FL_OK);
		s = realloc(s, *len + b->len);
		memcpy(s + *len, b->data, b->len);
		*len += b->len;
		fl_buf_unref(b);
	}
	return s;
}

static void test_reader_fragmentation(void)
{
	size_t len;
	uint64_t times[6];
	uint8_t *s = make_stream(&len, times);
	struct fl_rng rng;
	fl_rng_seed(&rng, 11);
	/* mode 0: whole; 1: byte at a time; 2..: random splits */
	for (int mode = 0; mode < 12; mode++) {
		struct fl_frame_reader r;
		struct sink sk = {0};
		fl_frame_reader_init(&r, FL_WIRE_MAX_FRAME_DEFAULT);
		size_t i = 0;
		int rc = FL_OK;
		while (i < len && rc == FL_OK) {
			size_t k = mode == 0 ? len : mode == 1 ? 1 : 1 + fl_rng_below(&rng, 700);
			if (k > len - i)
				k = len - i;
			rc = fl_frame_reader_feed(&r, s + i, k, on_frame, &sk);
			i += k;
		}
		FL_CHECK(rc == FL_OK);
		FL_CHECK_MSG(sk.n == 6, "mode %d: %d frames", mode, sk.n);
		for (int k = 0; k < 6 && k < sk.n; k++)
			FL_CHECK(sk.times[k] == times[k]);
		FL_CHECK(r.hdr_have == 0 && r.buf == NULL);
		/* Nothing at all, then empty feeds, are fine. */
		FL_CHECK(fl_frame_reader_feed(&r, s, 0, on_frame, &sk) == FL_OK && sk.n == 6);
		fl_frame_reader_free(&r);
	}
	/* A frame half-received when the reader is freed: no leak (ASan). */
	struct fl_frame_reader r;
	struct sink sk = {0};
	fl_frame_reader_init(&r, FL_WIRE_MAX_FRAME_DEFAULT);
	FL_CHECK(fl_frame_reader_feed(&r, s, len - 5, on_frame, &sk) == FL_OK && sk.n == 5);
	FL_CHECK(r.buf != NULL);
	fl_frame_reader_free(&r);
	fl_frame_reader_free(NULL);

	/* on_frame's error stops the feed and sticks. */
	struct sink stop = {.stop_at = 2};
	fl_frame_reader_init(&r, FL_WIRE_MAX_FRAME_DEFAULT);
	FL_CHECK(fl_frame_reader_feed(&r, s, len, on_frame, &stop) == 77 && stop.n == 2);
	FL_CHECK(fl_frame_reader_feed(&r, s, len, on_frame, &stop) == 77 && stop.n == 2);
	fl_frame_reader_free(&r);
	/* A frame that does not decode: the decode error comes back. */
	uint8_t bad[] = {0, 0, 0, 2, 0xff, 0xff};
	struct sink sb = {0};
	fl_frame_reader_init(&r, 100);
	FL_CHECK(fl_frame_reader_feed(&r, bad, sizeof(bad), on_frame, &sb) == FL_EFORMAT &&
		 sb.n == 0);
	fl_frame_reader_free(&r);
	free(s);
}

static void test_reader_limits(void)
{
	struct fl_frame_reader r;
	struct sink sk = {0};
	/* 0xffffffff bytes announced: refused at the header, nothing allocated
	 * (an allocation of 4 GiB would also trip ASan's allocation limit). */
	const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff, 1, 2, 3};
	fl_frame_reader_init(&r, FL_WIRE_MAX_FRAME_DEFAULT);
	FL_CHECK(fl_frame_reader_feed(&r, huge, 3, on_frame, &sk) == FL_OK);
	FL_CHECK(fl_frame_reader_feed(&r, huge + 3, 4, on_frame, &sk) == FL_ERANGE);
	FL_CHECK(r.buf == NULL && sk.n == 0);
	FL_CHECK(strstr(fl_error_msg(), "4294967295") != NULL);
	FL_CHECK(fl_frame_reader_feed(&r, huge, 1, on_frame, &sk) == FL_ERANGE); /* sticky */
	fl_frame_reader_free(&r);

	/* Exactly max_frame passes, one more is refused. */
	uint8_t at[4 + 4] = {0, 0, 0, 4, 8 << 3 | 2, 2, 8, 42};
	fl_frame_reader_init(&r, 4);
	FL_CHECK(fl_frame_reader_feed(&r, at, 6, on_frame, &sk) == FL_OK);
	FL_CHECK(r.buf != NULL && r.need == 4);
	FL_CHECK(fl_frame_reader_feed(&r, at + 6, 2, on_frame, &sk) == FL_OK && sk.n == 1);
	fl_frame_reader_free(&r);
	fl_frame_reader_init(&r, 3);
	FL_CHECK(fl_frame_reader_feed(&r, at, sizeof(at), on_frame, &sk) == FL_ERANGE && sk.n == 1);
	FL_CHECK(r.buf == NULL);
	fl_frame_reader_free(&r);

	/* Zero length: an empty envelope is never valid. */
	const uint8_t zero[] = {0, 0, 0, 0, 0, 0, 0, 4};
	fl_frame_reader_init(&r, 100);
	FL_CHECK(fl_frame_reader_feed(&r, zero, sizeof(zero), on_frame, &sk) == FL_EFORMAT);
	FL_CHECK(fl_frame_reader_feed(&r, at, sizeof(at), on_frame, &sk) == FL_EFORMAT &&
		 sk.n == 1);
	fl_frame_reader_free(&r);
}

static void test_buf_and_dtypes(void)
{
	struct fl_buf *b = fl_buf_new(10);
	FL_CHECK(b && b->refs == 1 && b->len == 10);
	FL_CHECK(fl_buf_ref(b) == b && b->refs == 2);
	fl_buf_unref(b);
	FL_CHECK(b->refs == 1);
	fl_buf_unref(b);
	fl_buf_unref(NULL);
	FL_CHECK(fl_buf_new(SIZE_MAX) == NULL);

	const char *names[] = {"f32", "f16", "bf16", "int8"};
	const size_t sizes[] = {4, 2, 2, 1};
	for (int i = 0; i < 4; i++) {
		enum fl_wire_dtype t = FL_WIRE_F32;
		FL_CHECK(strcmp(fl_wire_dtype_name((enum fl_wire_dtype)i), names[i]) == 0);
		FL_CHECK(fl_wire_dtype_parse(names[i], &t) == FL_OK && (int)t == i);
		FL_CHECK(fl_wire_dtype_bytes((enum fl_wire_dtype)i) == sizes[i]);
	}
	FL_CHECK((int)FL_WIRE_INT8 == (int)FEDLOHA__V1__DTYPE__DTYPE_INT8 &&
		 (int)FL_WIRE_BF16 == (int)FEDLOHA__V1__DTYPE__DTYPE_BF16);
	enum fl_wire_dtype t;
	FL_CHECK(fl_wire_dtype_parse("fp16", &t) == FL_EINVAL);
	FL_CHECK(fl_wire_dtype_parse(NULL, &t) == FL_EINVAL);
	FL_CHECK(fl_wire_dtype_bytes((enum fl_wire_dtype)7) == 0);
	FL_CHECK(strcmp(fl_wire_dtype_name((enum fl_wire_dtype)7), "?") == 0);
}

/* A frame of 2-byte empty repeated entries must not unpack into dozens of
 * times its size (protobuf-c allocates a struct + pointer per entry). */
static void test_decode_amplification(void)
{
	size_t n = 200000, body = 2 * n, len = 1 + 3 + body;
	uint8_t *p = malloc(len);
	FL_CHECK(p != NULL);
	if (!p)
		return;
	p[0] = 0x2a; /* Envelope.update, length-delimited */
	p[1] = (uint8_t)(0x80 | (body & 0x7f));
	p[2] = (uint8_t)(0x80 | ((body >> 7) & 0x7f));
	p[3] = (uint8_t)(body >> 14);
	for (size_t i = 0; i < n; i++) {
		p[4 + 2 * i] = 0x22; /* Update.metrics, empty */
		p[5 + 2 * i] = 0x00;
	}
	fl_envelope *env = NULL;
	int rc = fl_wire_decode(p, len, 8u << 20, &env);
	FL_CHECK(rc == FL_EFORMAT);
	FL_CHECK(env == NULL);
	/* a handful of metrics in a small frame still decodes */
	size_t small = 1 + 1 + 2 * 10;
	p[1] = 20;
	memmove(p + 2, p + 4, 20);
	rc = fl_wire_decode(p, small, 8u << 20, &env);
	FL_CHECK(rc == FL_OK);
	FL_CHECK(env && env->update && env->update->n_metrics == 10);
	fl_wire_envelope_free(env);
	free(p);
}

/* Every fl_err crosses the wire and comes back as itself, with the fixed
 * numbers of PROTOCOL.md; anything else is sent as 0 and read as FL_EINVAL.
 * Then the Hello.client_id rule both ends check. */
static void test_error_codes_and_ids(void)
{
	static const int errs[] = {FL_ENOMEM, FL_EINVAL,     FL_EIO,       FL_EFORMAT,
				   FL_ERANGE, FL_ENONFINITE, FL_ENOTFOUND, FL_EUNSUPPORTED,
				   FL_ESHAPE, FL_EAUTH};
	static const uint32_t codes[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
	for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
		FL_CHECK(fl_wire_error_code(errs[i]) == codes[i]);
		FL_CHECK(fl_wire_error_from_code(codes[i]) == errs[i]);
	}
	/* an fl_err without a wire number (or a number shared) fails here */
	for (int e = -1; e >= -64; e--) {
		int known = strcmp(fl_strerror(e), "unknown error") != 0;
		uint32_t c = fl_wire_error_code(e);
		FL_CHECK_MSG(known == (c != 0), "fl_err %d: wire code %u", e, c);
		if (known)
			FL_CHECK_MSG(fl_wire_error_from_code(c) == e, "fl_err %d: wire code %u", e,
				     c);
	}
	FL_CHECK(fl_wire_error_code(FL_OK) == 0 && fl_wire_error_code(1) == 0 &&
		 fl_wire_error_code(-1000) == 0);
	FL_CHECK(fl_wire_error_from_code(0) == FL_EINVAL &&
		 fl_wire_error_from_code(11) == FL_EINVAL &&
		 fl_wire_error_from_code(UINT32_MAX) == FL_EINVAL);

	Fedloha__V1__Error er = FEDLOHA__V1__ERROR__INIT;
	er.code = fl_wire_error_code(FL_EAUTH);
	er.message = "no";
	fl_envelope env = fl_test_envelope(&er.base);
	fl_envelope *d = roundtrip(&env);
	if (d) {
		FL_CHECK(fl_wire_error_from_code(d->error->code) == FL_EAUTH);
		fl_wire_envelope_free(d);
	}

	char id[FL_WIRE_CLIENT_ID_MAX + 2];
	memset(id, 'a', sizeof(id) - 1);
	id[sizeof(id) - 1] = '\0';
	FL_CHECK(!fl_wire_client_id_valid(id)); /* one character over */
	id[FL_WIRE_CLIENT_ID_MAX] = '\0';
	FL_CHECK(fl_wire_client_id_valid(id) && fl_wire_client_id_valid("client-7._Z"));
	FL_CHECK(!fl_wire_client_id_valid("") && !fl_wire_client_id_valid(NULL) &&
		 !fl_wire_client_id_valid("a b") && !fl_wire_client_id_valid("a/b"));
}

int main(void)
{
	FL_RUN(test_error_codes_and_ids);
	FL_RUN(test_messages);
	FL_RUN(test_decode_amplification);
	FL_RUN(test_decode_limits);
	FL_RUN(test_reader_fragmentation);
	FL_RUN(test_reader_limits);
	FL_RUN(test_buf_and_dtypes);
	return fl_test_main_end();
}
