/* test_sim.c - the simulator end to end on a small slice (Fashion-MNIST's
 * first 400 training samples when the Debian package is installed, else a
 * synthetic set of the same shape): 3 rounds with 4 clients complete; the
 * byte counts of the report agree with the frames counted independently on
 * the in-memory wire and with the tensor sizes; the CSV and JSON files
 * parse and hold the rows; the same seed gives bit-identical models and
 * CSVs with 1 and 2 threads (also with client dropout); dropout exercises
 * the quorum; every connection runs over the secure channel by default
 * (channel bytes above frame bytes by the record overhead, one handshake
 * per connection, no channel errors) and a secure and an insecure run
 * give bit-identical models and identical frame byte counts (also with
 * dropout and reconnections); pfedpara never puts a hada_w2 tensor on the wire and reports
 * the federated (personalised) accuracy; bad configurations are refused;
 * the target / reduction arithmetic of the table. */
#include "channel.h"
#include "bytes.h"
#include "errors.h"
#include "fsutil.h"
#include "rng.h"
#include "sim.h"
#include "sim_impl.h"
#include "sim_testdata.h"
#include "testutil.h"
#include "wire.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- an independent count of the in-memory wire ---- */

struct wire_count {
	uint64_t up, down, frames_up, frames_down, bye_down;
	int rows_seen;
	uint64_t last_round;
	int bad_order;
	int w2_chunks, w1_chunks, undecodable;
};

static void count_frame(void *ctx, int up, const uint8_t *frame, size_t len)
{
	struct wire_count *w = ctx;
	FL_CHECK(len >= FL_WIRE_FRAME_HEADER_BYTES);
	uint32_t n = fl_be32_get(frame);
	FL_CHECK(n + FL_WIRE_FRAME_HEADER_BYTES == len);
	fl_envelope *env = NULL;
	if (fl_wire_decode(frame + 4, len - 4, FL_WIRE_MAX_FRAME_DEFAULT, &env) != FL_OK) {
		w->undecodable++;
		return;
	}
	if (up) {
		w->up += len;
		w->frames_up++;
	} else {
		w->down += len;
		w->frames_down++;
		if (env->body_case == FEDLOHA__V1__ENVELOPE__BODY_BYE)
			w->bye_down += len;
	}
	if (env->body_case == FEDLOHA__V1__ENVELOPE__BODY_CHUNK && env->chunk->name) {
		w->w2_chunks += strstr(env->chunk->name, "hada_w2") != NULL;
		w->w1_chunks += strstr(env->chunk->name, "hada_w1") != NULL;
	}
	fl_wire_envelope_free(env);
}

static void count_row(void *ctx, const struct srv_sim_config *cfg, const struct srv_sim_row *row)
{
	struct wire_count *w = ctx;
	w->rows_seen++;
	if (row->round != w->last_round + 1)
		w->bad_order = 1;
	w->last_round = row->round;
	(void)cfg;
}

/* The CSV with its seconds column (7th) removed. */
static char *strip_seconds(const char *csv)
{
	char *out = malloc(strlen(csv) + 1), *o = out;
	int col = 0;
	for (const char *p = csv; *p; p++) {
		if (*p == '\n') {
			col = 0;
			*o++ = *p;
			continue;
		}
		if (*p == ',') {
			col++;
			if (col == 6)
				continue; /* the comma before the seconds */
		}
		if (col != 6)
			*o++ = *p;
	}
	*o = '\0';
	return out;
}

static void test_run_bytes_files(void)
{
	struct srv_sim_data *d = small_data(4, 0.0);
	struct srv_sim_config c;
	small_config(&c);
	struct wire_count w = {0};
	c.cb = (struct srv_sim_callbacks){.ctx = &w, .on_frame = count_frame, .on_row = count_row};
	struct srv_sim_result *r = sim_run(&c, d);
	if (!r) {
		srv_sim_data_free(d);
		return;
	}
	FL_CHECK(r->nrows == 3);
	FL_CHECK(w.rows_seen == 3 && !w.bad_order);
	FL_CHECK(!strcmp(r->label, "fedpara"));
	FL_CHECK(r->clients == 4 && r->selected_per_round == 2);
	FL_CHECK(w.undecodable == 0);
	/* the engine's counts = the frames on the wire */
	FL_CHECK(r->wire_up == w.up && r->wire_down == w.down);
	FL_CHECK(r->frames_up == w.frames_up && r->frames_down == w.frames_down);
	FL_CHECK(r->engine_up == w.up);
	FL_CHECK(r->engine_down == w.down);
	/* the secure channel: one handshake per connection (4, no dropout),
	 * every frame one record (4-byte length + frame + tag), plus at most
	 * the handshake messages and a final record per connection */
	FL_CHECK(r->secure == 1);
	FL_CHECK(r->connections == 4 && r->handshakes == 4);
	FL_CHECK(r->channel_errors == 0);
	FL_CHECK(r->chan_up > r->wire_up && r->chan_down > r->wire_down);
	uint64_t rec = 4 + FL_CHANNEL_RECORD_OVERHEAD;
	uint64_t slack = r->connections * (2 * (4 + FL_CHANNEL_HANDSHAKE_MAX) + rec);
	FL_CHECK(r->chan_down >= r->wire_down + rec * r->frames_down);
	FL_CHECK(r->chan_down <= r->wire_down + rec * r->frames_down + slack);
	FL_CHECK(r->chan_up >= r->wire_up + rec * r->frames_up);
	FL_CHECK(r->chan_up <= r->wire_up + rec * r->frames_up + slack);
	uint64_t up = 0, down = 0;
	size_t tensor_bytes = r->global_floats * 4; /* f32 */
	for (size_t i = 0; i < r->nrows; i++) {
		const struct srv_sim_row *x = &r->rows[i];
		FL_CHECK(x->round == i + 1);
		FL_CHECK(x->selected == 2 && x->reported == 2 && x->attempts == 1);
		up += x->bytes_up;
		down += x->bytes_down;
		FL_CHECK(x->total_up == up && x->total_down == down);
		/* each of the 2 clients got the global tensors and sent them back:
		 * the data plus a little framing (names, shapes, headers) */
		FL_CHECK(x->bytes_down >= 2 * tensor_bytes);
		FL_CHECK(x->bytes_down <= 2 * tensor_bytes + 4000);
		FL_CHECK(x->bytes_up >= 2 * tensor_bytes);
		FL_CHECK(x->bytes_up <= 2 * tensor_bytes + 4000);
		FL_CHECK(x->accuracy > 0.0 && x->accuracy <= 1.0);
		FL_CHECK(x->loss > 0.0);
	}
	FL_CHECK(up == w.up);                  /* nothing goes up after the last round */
	FL_CHECK(down + w.bye_down == w.down); /* only the Byes come after it */
	FL_CHECK_MSG(r->rows[2].accuracy > 0.3, "accuracy after 3 rounds %.3f",
		     r->rows[2].accuracy);
	/* a fedpara 2nn at gamma 0 transmits ~4.5x fewer floats than dense */
	FL_CHECK(r->global_floats * 4 < 199210 && r->global_floats * 5 > 199210);

	/* files */
	const char *dir = fl_test_tmpdir("sim");
	char csv[600], js[600];
	snprintf(csv, sizeof(csv), "%s/fedpara.csv", dir);
	snprintf(js, sizeof(js), "%s/fedpara.json", dir);
	double targets[2] = {0.3, 0.99};
	FL_CHECK(srv_sim_write_csv(r, csv) == FL_OK);
	FL_CHECK(srv_sim_write_json(r, &c, targets, 2, js) == FL_OK);
	char *text = fl_test_read_file(csv, NULL);
	FL_CHECK(text != NULL);
	if (text) {
		FL_CHECK(!strncmp(text, "round,accuracy,loss,bytes_up,bytes_down,cum_mb,seconds,",
				  55));
		char *line = strchr(text, '\n');
		int rows = 0;
		while (line && line[1]) {
			unsigned long long round, bu, bd;
			double acc, loss, mb, sec;
			int n = sscanf(line + 1, "%llu,%lf,%lf,%llu,%llu,%lf,%lf", &round, &acc,
				       &loss, &bu, &bd, &mb, &sec);
			FL_CHECK(n == 7);
			if (n == 7 && rows < 3) {
				const struct srv_sim_row *x = &r->rows[rows];
				FL_CHECK(round == x->round && bu == x->bytes_up &&
					 bd == x->bytes_down);
				FL_CHECK_NEAR(acc, x->accuracy, 0, 1e-6);
				FL_CHECK_NEAR(mb, (double)(x->total_up + x->total_down) / 1e6, 0,
					      1e-6);
			}
			rows++;
			line = strchr(line + 1, '\n');
		}
		FL_CHECK(rows == 3);
		free(text);
	}
	json_error_t je;
	json_t *root = json_load_file(js, 0, &je);
	FL_CHECK_MSG(root != NULL, "json: %s", je.text);
	if (root) {
		FL_CHECK(!strcmp(json_string_value(json_object_get(root, "label")), "fedpara"));
		json_t *rows = json_object_get(root, "rounds");
		FL_CHECK(json_is_array(rows) && json_array_size(rows) == 3);
		FL_CHECK(json_integer_value(json_object_get(root, "bytes_up")) ==
			 (json_int_t)r->engine_up);
		json_t *t0 = json_array_get(json_object_get(root, "targets"), 0);
		FL_CHECK(json_integer_value(json_object_get(t0, "round")) >= 1);
		json_t *t1 = json_array_get(json_object_get(root, "targets"), 1);
		FL_CHECK(json_is_null(json_object_get(t1, "round")));
		FL_CHECK(!strcmp(json_string_value(
					 json_object_get(json_object_get(root, "config"), "param")),
				 "fedpara"));
		FL_CHECK(json_is_true(json_object_get(root, "secure")));
		FL_CHECK(json_is_true(json_object_get(json_object_get(root, "config"), "secure")));
		FL_CHECK(json_integer_value(json_object_get(root, "channel_bytes_up")) ==
			 (json_int_t)r->chan_up);
		FL_CHECK(json_integer_value(json_object_get(root, "channel_bytes_down")) ==
			 (json_int_t)r->chan_down);
		FL_CHECK(json_integer_value(json_object_get(root, "handshakes")) == 4);
		json_decref(root);
	}
	srv_sim_result_free(r);
	srv_sim_data_free(d);
}

/* Runs base twice: run 0 and run 1 with 1 and 2 threads (by_threads), or
 * secure and insecure. Each run's CSV is read back without its seconds.
 * FL_OK when both ran; free with pair_free either way. */
static int run_pair(const struct srv_sim_config *base, const struct srv_sim_data *d,
		    const char *tag, int by_threads, struct srv_sim_result *r[2], char *csv[2])
{
	const char *dir = fl_test_tmpdir(tag);
	for (int i = 0; i < 2; i++) {
		struct srv_sim_config c = *base;
		if (by_threads)
			c.threads = i + 1;
		else
			c.secure = i == 0;
		int err = srv_sim_run(&c, d, &r[i]);
		if (by_threads)
			FL_CHECK_MSG(err == FL_OK, "run with %d threads: %s", i + 1,
				     fl_error_msg());
		else
			FL_CHECK_MSG(err == FL_OK, "%s run: %s", i ? "insecure" : "secure",
				     fl_error_msg());
		if (err)
			return err;
		char path[600];
		snprintf(path, sizeof(path), "%s/run%d.csv", dir, i);
		FL_CHECK(srv_sim_write_csv(r[i], path) == FL_OK);
		char *text = fl_test_read_file(path, NULL);
		csv[i] = text ? strip_seconds(text) : NULL;
		free(text);
	}
	return FL_OK;
}

static void pair_free(struct srv_sim_result *r[2], char *csv[2])
{
	for (int i = 0; i < 2; i++) {
		srv_sim_result_free(r[i]);
		free(csv[i]);
	}
}

/* Same seed, 1 and 2 threads: identical model and CSV (but seconds). */
static void check_same(const struct srv_sim_config *base, const struct srv_sim_data *d,
		       const char *tag)
{
	struct srv_sim_result *r[2] = {NULL, NULL};
	char *csv[2] = {NULL, NULL};
	if (run_pair(base, d, tag, 1, r, csv) == FL_OK) {
		FL_CHECK(r[0]->n_final_params == r[1]->n_final_params);
		FL_CHECK_MSG(!memcmp(r[0]->final_params, r[1]->final_params,
				     r[0]->n_final_params * sizeof(float)),
			     "%s: final models differ between 1 and 2 threads", tag);
		FL_CHECK(csv[0] && csv[1] && !strcmp(csv[0], csv[1]));
		FL_CHECK(r[0]->engine_up == r[1]->engine_up &&
			 r[0]->engine_down == r[1]->engine_down);
		FL_CHECK(r[0]->vanished == r[1]->vanished);
		FL_CHECK(r[0]->chan_up == r[1]->chan_up && r[0]->chan_down == r[1]->chan_down);
		FL_CHECK(r[0]->handshakes == r[1]->handshakes && r[0]->channel_errors == 0);
	}
	pair_free(r, csv);
}

/* The runs with dropout: dense, every client selected, each vanishing with
 * probability 0.3 per round, 4 rounds. */
static void dropout_config(struct srv_sim_config *c)
{
	c->param = FL_PEFT_PARAM_DENSE;
	c->dropout = 0.3;
	c->train.fraction = 1.0;
	c->train.rounds = 4;
}

static void test_determinism(void)
{
	struct srv_sim_data *d = small_data(4, 0.0);
	struct srv_sim_config c;
	small_config(&c);
	check_same(&c, d, "sim-det");
	dropout_config(&c);
	check_same(&c, d, "sim-det-drop");
	srv_sim_data_free(d);
}

/* The channel adds bytes only: a secure and an insecure run agree on the
 * model, every row and every protocol byte count. */
static void check_secure_insecure(const struct srv_sim_config *base, const struct srv_sim_data *d,
				  const char *tag)
{
	struct srv_sim_result *r[2] = {NULL, NULL};
	char *csv[2] = {NULL, NULL};
	if (run_pair(base, d, tag, 0, r, csv) == FL_OK) {
		const struct srv_sim_result *s = r[0], *p = r[1];
		FL_CHECK(s->secure == 1 && p->secure == 0);
		FL_CHECK(s->n_final_params == p->n_final_params);
		FL_CHECK_MSG(!memcmp(s->final_params, p->final_params,
				     s->n_final_params * sizeof(float)),
			     "%s: final models differ between secure and insecure", tag);
		FL_CHECK(csv[0] && csv[1] && !strcmp(csv[0], csv[1]));
		FL_CHECK(s->engine_up == p->engine_up && s->engine_down == p->engine_down);
		FL_CHECK(s->wire_up == p->wire_up && s->wire_down == p->wire_down);
		FL_CHECK(s->frames_up == p->frames_up && s->frames_down == p->frames_down);
		FL_CHECK(s->vanished == p->vanished && s->connections == p->connections);
		FL_CHECK(s->client_errors == 0 && p->client_errors == 0);
		/* secure: a handshake per connection, more bytes; insecure: the frames */
		FL_CHECK(s->handshakes == s->connections && s->channel_errors == 0);
		FL_CHECK(s->chan_up > s->wire_up && s->chan_down > s->wire_down);
		FL_CHECK(p->handshakes == 0 && p->channel_errors == 0);
		FL_CHECK(p->chan_down == p->wire_down && p->chan_up >= p->wire_up);
	}
	pair_free(r, csv);
}

static void test_secure_insecure(void)
{
	struct srv_sim_data *d = small_data(4, 0.0);
	struct srv_sim_config c;
	small_config(&c);
	FL_CHECK(c.secure == 1); /* the default */
	check_secure_insecure(&c, d, "sim-sec");
	/* dropout: vanished clients reconnect with a new handshake */
	dropout_config(&c);
	check_secure_insecure(&c, d, "sim-sec-drop");
	struct srv_sim_result *r = NULL;
	FL_CHECK(srv_sim_run(&c, d, &r) == FL_OK);
	if (r) {
		/* a client vanished in the last round need not come back */
		FL_CHECK_MSG(r->vanished > 0 && r->connections > 4 &&
				     r->connections <= 4 + r->vanished,
			     "vanished %llu, connections %llu", (unsigned long long)r->vanished,
			     (unsigned long long)r->connections);
		FL_CHECK(r->handshakes == r->connections);
	}
	srv_sim_result_free(r);
	srv_sim_data_free(d);
}

/* The coordinator's admission: the simulation's client keys only. */
static void test_authorize(void)
{
	uint8_t keys[3 * FL_PUBKEY_BYTES], other[FL_PUBKEY_BYTES];
	for (int i = 0; i < 3 * FL_PUBKEY_BYTES; i++)
		keys[i] = (uint8_t)(16 * (i / FL_PUBKEY_BYTES) + i % 7); /* sorted by first byte */
	memset(other, 0x55, sizeof(other));
	struct sim s = {.client_pks = keys, .nclients = 3};
	char reason[FL_CHANNEL_REASON_MAX] = "";
	for (int i = 0; i < 3; i++)
		FL_CHECK(sim_authorize(&s, keys + i * FL_PUBKEY_BYTES, NULL, reason,
				       sizeof(reason)) == 0);
	FL_CHECK(sim_authorize(&s, other, NULL, reason, sizeof(reason)) != 0);
	FL_CHECK(strstr(reason, "not in the simulation's set") != NULL);
}

static void test_dropout_quorum(void)
{
	struct srv_sim_data *d = small_data(6, 0.0);
	struct srv_sim_config c;
	small_config(&c);
	c.param = FL_PEFT_PARAM_LOWRANK;
	c.train.rounds = 5;
	c.train.fraction = 1.0;
	c.dropout = 0.4;
	c.train.min_report = 2;
	struct srv_sim_result *r = sim_run(&c, d);
	if (r) {
		FL_CHECK(r->nrows == 5);
		FL_CHECK_MSG(r->vanished >= 3, "vanished %llu", (unsigned long long)r->vanished);
		int dropped = 0, short_rounds = 0;
		for (size_t i = 0; i < r->nrows; i++) {
			const struct srv_sim_row *x = &r->rows[i];
			FL_CHECK(x->reported >= 2);
			FL_CHECK(x->selected ==
				 6); /* the vanished reconnected for the next round */
			FL_CHECK(x->reported + x->dropped == x->selected);
			dropped += x->dropped;
			short_rounds += x->reported < x->selected;
		}
		FL_CHECK(dropped > 0 && short_rounds > 0);
		FL_CHECK(r->client_errors == 0);
		FL_CHECK(r->engine_up == r->wire_up && r->engine_down == r->wire_down);
	}
	srv_sim_result_free(r);
	srv_sim_data_free(d);
}

static void test_pfedpara_wire(void)
{
	struct srv_sim_data *d = small_data(4, 0.25);
	struct srv_sim_config c;
	small_config(&c);
	c.param = FL_PEFT_PARAM_PFEDPARA;
	c.gamma = 0.5;
	c.train.rounds = 2;
	struct wire_count w = {0};
	c.cb = (struct srv_sim_callbacks){.ctx = &w, .on_frame = count_frame, .on_row = count_row};
	struct srv_sim_result *r = sim_run(&c, d);
	if (r) {
		FL_CHECK(r->nrows == 2 && w.rows_seen == 2);
		FL_CHECK(w.w2_chunks == 0);
		FL_CHECK(w.w1_chunks > 0);
		FL_CHECK(r->global_floats < r->param_floats);
		for (size_t i = 0; i < r->nrows; i++)
			FL_CHECK(r->rows[i].accuracy > 0.0 && r->rows[i].accuracy <= 1.0);
		FL_CHECK(r->engine_up == w.up && r->engine_down == w.down);
	}
	srv_sim_result_free(r);
	/* without held-out samples there is nothing to evaluate on */
	struct srv_sim_data *d0 = small_data(4, 0.0);
	int err = srv_sim_run(&c, d0, &r);
	FL_CHECK(err == FL_EINVAL && r == NULL);
	FL_CHECK(strstr(fl_error_msg(), "held-out") != NULL);
	srv_sim_data_free(d0);
	srv_sim_data_free(d);
}

static void test_bad_config(void)
{
	struct srv_sim_data *d = small_data(4, 0.0);
	struct srv_sim_config c;
	struct srv_sim_result *r = NULL;
	small_config(&c);
	c.train.rounds = 0;
	FL_CHECK(srv_sim_run(&c, d, &r) == FL_EINVAL && !r);
	small_config(&c);
	c.arch = "resnet";
	FL_CHECK(srv_sim_run(&c, d, &r) == FL_EINVAL && !r);
	FL_CHECK(strstr(fl_error_msg(), "resnet") != NULL);
	small_config(&c);
	c.dropout = 1.0;
	FL_CHECK(srv_sim_run(&c, d, &r) == FL_EINVAL && !r);
	small_config(&c);
	c.train.fraction = 0;
	FL_CHECK(srv_sim_run(&c, d, &r) == FL_EINVAL && !r);
	srv_sim_data_free(d);
}

/* A fake result: accuracy acc[i] after round i+1, `per_round` bytes each. */
static struct srv_sim_result *fake(const char *label, const double *acc, int n, uint64_t per_round)
{
	struct srv_sim_result *r = calloc(1, sizeof(*r));
	r->rows = calloc((size_t)n, sizeof(*r->rows));
	r->nrows = (size_t)n;
	snprintf(r->label, sizeof(r->label), "%s", label);
	for (int i = 0; i < n; i++) {
		r->rows[i].round = (uint64_t)i + 1;
		r->rows[i].accuracy = acc[i];
		r->rows[i].total_up = r->rows[i].total_down = per_round * (uint64_t)(i + 1) / 2;
	}
	return r;
}

static void test_table(void)
{
	double da[4] = {0.5, 0.8, 0.7, 0.85}, fa[4] = {0.4, 0.75, 0.81, 0.9};
	struct srv_sim_result *r[2] = {fake("dense", da, 4, 3000000),
				       fake("fedpara", fa, 4, 500000)};
	uint64_t bytes = 0;
	FL_CHECK(srv_sim_reach(r[0], 0.8, &bytes) == 2 && bytes == 6000000);
	FL_CHECK(srv_sim_reach(r[1], 0.8, &bytes) == 3 && bytes == 1500000);
	FL_CHECK(srv_sim_reach(r[1], 0.95, &bytes) == 0 && bytes == 0);
	FL_CHECK_NEAR(srv_sim_best_accuracy(r[1]), 0.9, 0, 1e-12);
	double targets[3] = {0.8, 0.85, 0.95};
	FILE *f = tmpfile();
	FL_CHECK(f != NULL);
	if (f) {
		srv_sim_print_table(f, r, 2, targets, 3);
		long n = ftell(f);
		char *buf = calloc(1, (size_t)n + 1);
		rewind(f);
		FL_CHECK(fread(buf, 1, (size_t)n, f) == (size_t)n);
		FL_CHECK_MSG(strstr(buf, "4.00x") != NULL, "table:\n%s", buf); /* 6 MB / 1.5 MB */
		FL_CHECK(strstr(buf, "6.00x") != NULL);                        /* 12 / 2 at 85% */
		FL_CHECK(strstr(buf, "not reached") != NULL);
		free(buf);
		fclose(f);
	}
	for (int i = 0; i < 2; i++)
		srv_sim_result_free(r[i]);
	/* a federated headline counts only the rounds in which clients evaluated */
	double ga[3] = {0.6, 0.0, 0.7};
	struct srv_sim_result *g = fake("pfedpara", ga, 3, 1000000);
	g->fed_headline = 1;
	g->rows[0].has_fed = g->rows[2].has_fed = 1;
	FL_CHECK(srv_sim_reach(g, 0.55, &bytes) == 1);
	g->rows[2].has_fed = 0;
	FL_CHECK_NEAR(srv_sim_best_accuracy(g), 0.6, 0, 1e-12);
	FL_CHECK(srv_sim_reach(g, 0.65, &bytes) == 0);
	srv_sim_result_free(g);
}

int main(void)
{
	FL_RUN(test_run_bytes_files);
	FL_RUN(test_determinism);
	FL_RUN(test_secure_insecure);
	FL_RUN(test_authorize);
	FL_RUN(test_dropout_quorum);
	FL_RUN(test_pfedpara_wire);
	FL_RUN(test_bad_config);
	FL_RUN(test_table);
	return fl_test_main_end();
}
