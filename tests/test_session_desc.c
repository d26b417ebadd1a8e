/* test_session_desc.c - model descriptions on the wire, between the real
 * round engine and real client sessions joined in memory: a custom
 * description (residual, gelu, avgpool2d, dropout) inline in the Welcome
 * and fetched (BaseRequest / BaseChunk) when over the inline bound, rounds
 * completing with it while a client whose data does not fit is refused
 * and the others go on; a built-in network travelling as its arch alone;
 * and the client's refusals of a Welcome (bad SHA-256, unsupported op,
 * data shape, labels out of range), each an Error with its code. */
#include "engine.h"
#include "errors.h"
#include "model_desc.h"
#include "session_fake.h"
#include "testutil.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NLINK 3

static const char *CUSTOM =
	"{\"format\": \"fedloha-model/1\", \"input\": {\"shape\": [1, 8, 8]}, \"classes\": 10, "
	"\"modules\": [{\"op\": \"conv2d\", \"name\": \"c1\", \"in\": 1, \"out\": 4, "
	"\"kernel\": 3, \"padding\": 1}, {\"op\": \"gelu\"}, {\"op\": \"residual\", "
	"\"modules\": [{\"op\": \"conv2d\", \"name\": \"res.c2\", \"in\": 4, \"out\": 4, "
	"\"kernel\": 3, \"padding\": 1}, {\"op\": \"relu\"}]}, {\"op\": \"avgpool2d\", "
	"\"kernel\": 2}, {\"op\": \"flatten\"}, {\"op\": \"linear\", \"name\": \"fc1\", "
	"\"in\": 64, \"out\": 16}, {\"op\": \"gelu\"}, {\"op\": \"dropout\", \"p\": 0.1}, "
	"{\"op\": \"linear\", \"name\": \"fc2\", \"in\": 16, \"out\": 10}]}";

/* One client joined to the engine: frames the session sent are in fk,
 * frames the engine sent wait in down. */
struct link {
	struct fake fk;
	struct fl_dataset *data;
	struct fl_buf **down;
	size_t ndown, cap;
	int gone, err;
	char msg[FL_ERROR_MSG_MAX];
};

struct world {
	struct srv_engine *e;
	struct link l[NLINK];
	int nlinks;
	int base_requests; /* BaseRequest frames the clients sent */
};

static int eng_send(void *ctx, uint64_t conn, struct fl_buf *frame)
{
	struct link *l = &((struct world *)ctx)->l[conn - 1];
	if (l->ndown == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 16;
		l->down = realloc(l->down, l->cap * sizeof(*l->down));
	}
	l->down[l->ndown++] = frame;
	return FL_OK;
}

static void eng_close(void *ctx, uint64_t conn)
{
	((struct world *)ctx)->l[conn - 1].gone = 1;
}

/* Moves frames both ways until nothing moves. */
static void pump(struct world *w)
{
	for (int moved = 1; moved;) {
		moved = 0;
		for (int i = 0; i < w->nlinks; i++) {
			struct link *l = &w->l[i];
			for (size_t k = 0; k < l->fk.n; k++, moved = 1) {
				fl_envelope *env = frame_env(&l->fk, k);
				w->base_requests +=
					env &&
					env->body_case == FEDLOHA__V1__ENVELOPE__BODY_BASE_REQUEST;
				fl_wire_envelope_free(env);
				srv_engine_on_frame(w->e, (uint64_t)i + 1, l->fk.f[k]->data + 4,
						    l->fk.f[k]->len - 4, 100);
			}
			fake_clear(&l->fk);
			if (l->fk.closed && !l->gone) {
				l->gone = 1;
				srv_engine_on_disconnect(w->e, (uint64_t)i + 1, 100);
			}
			for (size_t k = 0; k < l->ndown; k++, moved = 1) {
				struct fl_buf *b = l->down[k];
				int err = l->gone ? FL_OK
						  : cli_session_on_frame(l->fk.s, b->data + 4,
									 b->len - 4, 100);
				if (err && !l->err) {
					l->err = err;
					snprintf(l->msg, sizeof(l->msg), "%s", fl_error_msg());
				}
				fl_buf_unref(b);
			}
			l->ndown = 0;
		}
	}
}

/* An engine of model m (2 rounds, everyone selected) and n clients over
 * make_data()'s samples; the last client's data is 1x4x4 when misfit. */
static void world_up(struct world *w, struct fl_model *m, int n, uint32_t inline_max, int misfit)
{
	memset(w, 0, sizeof(*w));
	struct srv_engine_config cfg;
	srv_engine_config_default(&cfg);
	cfg.rounds = 2;
	cfg.min_available = cfg.min_fit = cfg.min_report = misfit ? n - 1 : n;
	cfg.fraction = 1.0;
	cfg.batch_size = 16;
	cfg.chunk_bytes = 256;
	cfg.desc_inline_max = inline_max;
	struct srv_engine_io io = {w, eng_send, eng_close, NULL, NULL, NULL};
	FL_CHECK(srv_engine_new(&cfg, m, &io, &w->e) == FL_OK);
	w->nlinks = n;
	for (int i = 0; i < n; i++) {
		char id[16];
		snprintf(id, sizeof(id), "c%d", i);
		w->l[i].data = make_data();
		if (misfit && i == n - 1) {
			fl_dataset_free(w->l[i].data);
			FL_CHECK(fl_dataset_new(N_SAMPLES, 1, 4, 4, CLASSES, &w->l[i].data) ==
				 FL_OK);
		}
		make_session(&w->l[i].fk, w->l[i].data, NULL, id);
		srv_engine_on_connect(w->e, (uint64_t)i + 1, 100);
		cli_session_on_connect(w->l[i].fk.s, 100);
	}
	pump(w);
}

static void world_down(struct world *w)
{
	for (int i = 0; i < w->nlinks; i++) {
		free_session(&w->l[i].fk);
		fl_dataset_free(w->l[i].data);
		for (size_t k = 0; k < w->l[i].ndown; k++)
			fl_buf_unref(w->l[i].down[k]);
		free(w->l[i].down);
	}
	srv_engine_free(w->e);
}

static struct fl_model *desc_model(const char *text)
{
	struct fl_model_desc *d = NULL;
	struct fl_model *m = NULL;
	FL_CHECK(fl_model_desc_parse(text, strlen(text), "test", &d) == FL_OK);
	FL_CHECK(fl_model_new_desc(d, NULL, 3, 16, &m) == FL_OK);
	fl_model_desc_free(d);
	return m;
}

/* Rounds with the custom description; inline_max 64 forces the fetch. The
 * misfit client is refused (Error, closed), the others finish. */
static void run_custom(uint32_t inline_max)
{
	struct fl_model *m = desc_model(CUSTOM);
	struct world w;
	world_up(&w, m, NLINK, inline_max, 1);
	FL_CHECK_MSG(srv_engine_finished(w.e) && srv_engine_round(w.e) == 2,
		     "rounds %llu, failed %d", (unsigned long long)srv_engine_round(w.e),
		     srv_engine_failed(w.e, NULL));
	FL_CHECK(w.base_requests == (inline_max ? NLINK : 0));
	const char *text = fl_model_description(m)->text;
	for (int i = 0; i < NLINK - 1; i++) {
		struct fl_model *cm = cli_session_model(w.l[i].fk.s);
		FL_CHECK(cm && !strcmp(fl_model_description(cm)->text, text));
		FL_CHECK(cli_session_rounds_done(w.l[i].fk.s) == 2 && !w.l[i].err);
	}
	struct link *bad = &w.l[NLINK - 1];
	FL_CHECK_MSG(bad->err == FL_ESHAPE && strstr(bad->msg, "model input (1,8,8) but the "
							       "data's samples are (1,4,4)"),
		     "%d %s", bad->err, bad->msg);
	FL_CHECK(bad->fk.closed && cli_session_rounds_done(bad->fk.s) == 0);
	world_down(&w);
	fl_model_free(m);
}

static void test_inline(void)
{
	run_custom(0);
}

static void test_fetch(void)
{
	run_custom(64);
}

/* A built-in network: arch only, no description fields; rounds complete. */
static void test_builtin(void)
{
	struct fl_model *m = NULL;
	FL_CHECK(fl_model_new("2nn", C_, H_, W_, CLASSES, NULL, 3, 16, &m) == FL_OK);
	struct world w;
	memset(&w, 0, sizeof(w));
	world_up(&w, m, 2, 0, 0);
	FL_CHECK(srv_engine_finished(w.e) && srv_engine_round(w.e) == 2);
	FL_CHECK(!w.l[0].err && cli_session_rounds_done(w.l[0].fk.s) == 2);
	world_down(&w);
	fl_model_free(m);
}

/* A Welcome of description text (sha of `text` unless sha_of is given). */
static int welcome_desc(struct cli_session *s, const char *text, const char *sha_of)
{
	uint8_t sha[32];
	const char *h = sha_of ? sha_of : text;
	crypto_hash_sha256(sha, (const unsigned char *)h, strlen(h));
	uint32_t input[3] = {C_, H_, W_};
	Fedloha__V1__ModelSpec ms = FEDLOHA__V1__MODEL_SPEC__INIT;
	ms.arch = "";
	ms.n_input = 3;
	ms.input = input;
	ms.classes = CLASSES;
	ms.config_json = "";
	ms.description = (char *)text;
	ms.description_sha256.data = sha;
	ms.description_sha256.len = 32;
	ms.description_bytes = strlen(text);
	Fedloha__V1__Welcome wl = FEDLOHA__V1__WELCOME__INIT;
	wl.protocol_version = FL_WIRE_PROTOCOL_VERSION;
	wl.session_id = "t";
	wl.model = &ms;
	fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT;
	env.body_case = FEDLOHA__V1__ENVELOPE__BODY_WELCOME;
	env.welcome = &wl;
	return deliver(s, &env, NULL);
}

/* The session refuses with err: Error{code of err} sent, then closed. */
static void expect_refusal(const char *text, const char *sha_of, int err, const char *needle)
{
	struct fl_dataset *d = make_data();
	struct fake fk;
	struct cli_session *s = make_session(&fk, d, NULL, NULL);
	cli_session_on_connect(s, 100);
	fake_clear(&fk);
	int rc = welcome_desc(s, text, sha_of);
	FL_CHECK_MSG(rc == err && strstr(fl_error_msg(), needle), "got %d '%s', expected %d '%s'",
		     rc, fl_error_msg(), err, needle);
	fl_envelope *env = frame_env(&fk, 0);
	FL_CHECK(env && env->body_case == FEDLOHA__V1__ENVELOPE__BODY_ERROR &&
		 fl_wire_error_from_code(env->error->code) == err &&
		 strstr(env->error->message, needle) && !strchr(env->error->message, '\n'));
	fl_wire_envelope_free(env);
	FL_CHECK(fk.closed == 1 && cli_session_model(s) == NULL);
	free_session(&fk);
	fl_dataset_free(d);
}

static void test_refusals(void)
{
	expect_refusal(CUSTOM, "something else", FL_EFORMAT, "SHA-256");
	const char *unsup = "{\"format\": \"fedloha-model/1\", \"input\": {\"shape\": [1, 8, 8]}, "
			    "\"classes\": 10, \"modules\": [{\"op\": \"rmsnorm\", \"name\": "
			    "\"n\", \"dim\": 8}]}";
	expect_refusal(unsup, NULL, FL_EINVAL, "unknown op \"rmsnorm\"");
	const char *big = "{\"format\": \"fedloha-model/1\", \"input\": {\"shape\": [1, 28, 28]}, "
			  "\"classes\": 10, \"modules\": [{\"op\": \"flatten\"}, {\"op\": "
			  "\"linear\", \"name\": \"fc\", \"in\": 784, \"out\": 10}]}";
	expect_refusal(big, NULL, FL_ESHAPE,
		       "model input (1,28,28) but the data's samples are "
		       "(1,8,8)");
	const char *few = "{\"format\": \"fedloha-model/1\", \"input\": {\"shape\": [1, 8, 8]}, "
			  "\"classes\": 5, \"modules\": [{\"op\": \"flatten\"}, {\"op\": "
			  "\"linear\", \"name\": \"fc\", \"in\": 64, \"out\": 5}]}";
	expect_refusal(few, NULL, FL_EINVAL, "out of range for the model's 5 classes");
}

int main(void)
{
	FL_RUN(test_inline);
	FL_RUN(test_fetch);
	FL_RUN(test_builtin);
	FL_RUN(test_refusals);
	return fl_test_main_end();
}
