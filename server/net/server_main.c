/* server_main.c - fedloha-server: the coordinator daemon.
 *
 *   fedloha-server run [flags]     run federated rounds over TCP
 *   fedloha-server keygen --out FILE [--force]   make the coordinator's key
 *   fedloha-server pubkey --key FILE             print its public key
 *
 * Takes its options from server_cli.c (flags and an optional JSON config
 * file), loads the key and the allow-list (access.h), builds
 * the global model, the round engine and the libuv transport, prints one
 * line per round (and the central evaluation on a test slice when asked),
 * exports the final model. With --upstream the node is a mid-tier
 * aggregator: its engine serves its parent's rounds over upstream.c.
 * Protocol logic is in engine*.c, sockets and the secure channel in
 * transport*.c; this file only wires them up.
 */
#include "access.h"
#include "blas.h"
#include "central_eval.h"
#include "engine.h"
#include "errors.h"
#include "fsutil.h"
#include "log.h"
#include "model_io.h"
#include "peft_config.h"
#include "channel.h"
#include "transport.h"
#include "cliopt.h"
#include "server_cli.h"
#include "keys_cmd.h"
#include "engine_opts.h"
#include "upstream.h"

#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- the running daemon ---- */

struct server {
	struct fl_model *model;
	struct srv_central_eval *ce; /* NULL without --eval-data */
	uint64_t rounds;
	struct srv_transport *t;
	struct srv_transport_stats prev; /* socket counts at the previous round */
	struct srv_upstream *up;         /* a mid-tier's link to its parent, else NULL */
};

/* The coordinator side began its shutdown: a mid-tier's link ends too. */
static void on_stop(void *ctx)
{
	srv_upstream_stop(((struct server *)ctx)->up);
}

static void on_central_eval(void *ctx, uint64_t round, int err, const char *msg,
			    const struct fl_train_stats *st)
{
	if (err)
		fl_log_error("round %llu: central evaluation failed: %s", (unsigned long long)round,
			     msg);
	else
		printf("round %llu central test-acc %.4f test-loss %.4f samples %ld\n",
		       (unsigned long long)round, st->accuracy, st->loss, st->samples);
	fflush(stdout);
}

static void on_round(void *ctx, const struct srv_round_report *r)
{
	struct server *s = ctx;
	/* a mid-tier does not know how many rounds its parent runs */
	char total[32] = "";
	if (!s->up)
		snprintf(total, sizeof(total), "/%llu", (unsigned long long)s->rounds);
	printf("round %llu%s selected %d reported %d dropped %d rejected %d attempts %d "
	       "examples %llu train-loss %.4f train-acc %.4f up %llu down %llu total-up %llu "
	       "total-down %llu %.2fs\n",
	       (unsigned long long)r->round, total, r->selected, r->reported, r->dropped,
	       r->rejected, r->attempts, (unsigned long long)r->examples, r->train_loss,
	       r->train_accuracy, (unsigned long long)r->bytes_up,
	       (unsigned long long)r->bytes_down, (unsigned long long)r->total_up,
	       (unsigned long long)r->total_down, r->seconds);
	if (s->t) {
		struct srv_transport_stats st;
		srv_transport_stats(s->t, &st);
		fl_log_info("round %llu: socket bytes in %llu out %llu (frames up %llu down %llu)",
			    (unsigned long long)r->round,
			    (unsigned long long)(st.sock_in - s->prev.sock_in),
			    (unsigned long long)(st.sock_out - s->prev.sock_out),
			    (unsigned long long)r->bytes_up, (unsigned long long)r->bytes_down);
		s->prev = st;
	}
	if (r->holdout_clients)
		printf("round %llu post-train holdout-acc %.4f holdout-loss %.4f clients %d\n",
		       (unsigned long long)r->round, r->holdout_accuracy, r->holdout_loss,
		       r->holdout_clients);
	if (r->eval_clients)
		printf("round %llu federated eval-acc %.4f eval-loss %.4f clients %d\n",
		       (unsigned long long)r->round, r->eval_accuracy, r->eval_loss,
		       r->eval_clients);
	fflush(stdout);
	/* Snapshot now: the engine changes the model at the next aggregation. */
	if (s->ce && srv_central_eval_submit(s->ce, s->model, r->round) != FL_OK)
		fl_log_warn("round %llu: %s", (unsigned long long)r->round, fl_error_msg());
}

/* The protocol bytes (frames) against what really crossed the sockets. */
static void print_wire_totals(struct srv_transport *t, uint64_t up, uint64_t down)
{
	struct srv_transport_stats st;
	srv_transport_stats(t, &st);
	printf("socket bytes in %llu out %llu (frames up %llu down %llu; handshakes in %llu out "
	       "%llu; channels %llu refused %llu failed %llu)\n",
	       (unsigned long long)st.sock_in, (unsigned long long)st.sock_out,
	       (unsigned long long)up, (unsigned long long)down, (unsigned long long)st.hs_in,
	       (unsigned long long)st.hs_out, (unsigned long long)st.handshakes,
	       (unsigned long long)st.refused, (unsigned long long)st.failed);
	uint64_t limited = 0;
	for (int i = 0; i < SRV_LIMIT_N; i++)
		limited += st.limited[i];
	if (st.evicted)
		printf("handshakes cut for a newcomer under --max-handshakes: %llu\n",
		       (unsigned long long)st.evicted);
	if (!limited)
		return;
	printf("connections closed at accept by a limit: %llu (", (unsigned long long)limited);
	for (int i = 0, first = 1; i < SRV_LIMIT_N; i++)
		if (st.limited[i]) {
			printf("%s%s %llu", first ? "" : ", ", srv_transport_limit_name(i),
			       (unsigned long long)st.limited[i]);
			first = 0;
		}
	printf(")\n");
}

static int split_listen(const char *s, char *host, size_t cap, int *port)
{
	return fl_cliopt_hostport("--listen", s, 0, host, cap, port) ? FL_EINVAL : FL_OK;
}

/* The engine's config: the shared training options (strategy and dtype
 * resolved from their names), then the daemon's own. 2 with a message. */
static int engine_config(struct srv_opts *o, struct srv_engine_config *ec)
{
	struct srv_train_opts *t = &o->train;
	if (srv_train_opts_strategy(t, o->strategy) ||
	    (o->dtype && fl_wire_dtype_parse(o->dtype, &t->dtype)) ||
	    (o->require_dtype && fl_wire_dtype_parse(o->require_dtype, &t->dtype)) ||
	    srv_train_opts_check(t)) {
		fprintf(stderr, "fedloha-server: %s\n", fl_error_msg());
		return 2;
	}
	if (t->prox && t->prox_mu == 0)
		t->prox_mu = 0.01f;
	srv_engine_config_default(ec);
	srv_train_opts_engine_config(t, ec);
	ec->min_available = o->min_clients;
	ec->min_fit = o->min_fit;
	ec->max_retries = o->max_retries;
	ec->round_timeout_ms = (uint32_t)(o->round_timeout * 1000);
	ec->upload_slots = o->upload_slots > 0 ? (uint32_t)o->upload_slots
					       : SRV_UPLOAD_SLOTS_DEFAULT;
	ec->heartbeat_ms = (uint32_t)(o->heartbeat * 1000);
	ec->idle_timeout_ms = (uint32_t)(o->idle_timeout * 1000);
	ec->optimizer = o->optimizer;
	ec->eval_every = (uint32_t)o->eval_every;
	ec->checkpoint_path = o->checkpoint;
	ec->max_frame_bytes = (uint32_t)o->max_frame;
	ec->chunk_bytes = (uint32_t)(o->chunk ? o->chunk
					      : (o->max_frame / 2 < FL_WIRE_CHUNK_DEFAULT
							 ? o->max_frame / 2
							 : FL_WIRE_CHUNK_DEFAULT));
	ec->dtype_required = o->require_dtype != NULL;
	return 0;
}

/* --enrol-dir, else the folder "enrol-tokens" next to the allow-list. */
static void enrol_dir(const struct srv_opts *o, char *dir, size_t cap)
{
	if (o->enrol_dir) {
		snprintf(dir, cap, "%s", o->enrol_dir);
		return;
	}
	const char *allow = o->allow ? o->allow : "";
	const char *slash = strrchr(allow, '/');
	if (!slash)
		snprintf(dir, cap, "enrol-tokens");
	else
		snprintf(dir, cap, "%.*s/enrol-tokens", (int)(slash - allow), allow);
}

/* The key, the allow-list and the enrolment token files (their names
 * printed). 0, or the
 * exit code with a message. */
static int setup_access(const struct srv_opts *o, struct srv_access **out)
{
	struct srv_access *acc = NULL;
	char dir[4096];
	enrol_dir(o, dir, sizeof(dir));
	struct srv_access_config ac = {.insecure = o->insecure,
				       .key_path = o->key,
				       .allow_path = o->allow,
				       .enrol = o->n_enrol > 0,
				       .enrol_dir = dir};
	*out = NULL;
	if (o->insecure && o->n_enrol > 0) {
		fprintf(stderr, "fedloha-server: --enrol needs the secure channel: it issues no "
				"tokens with --insecure\n");
		return 2;
	}
	if (srv_access_new(&ac, &acc)) {
		fprintf(stderr, "fedloha-server: %s\n", fl_error_msg());
		return 2;
	}
	if (o->insecure) {
		fl_log_warn("--insecure: traffic is neither encrypted nor authenticated");
		*out = acc;
		return 0;
	}
	char pub[FL_PUBKEY_STRING_BYTES], tok[FL_TOKEN_STRING_BYTES];
	fl_identity_public_string(srv_access_identity(acc), pub);
	fl_log_info("server key %s; allow-list %s: %zu client keys", pub, o->allow,
		    srv_access_count(acc));
	if (o->n_enrol > 0)
		fl_log_info("enrolment token folder %s: %zu stale token files removed", dir,
			    srv_access_stale_removed(acc));
	for (int i = 0; i < o->n_enrol; i++) {
		const char *id = o->enrol_ids[i];
		const char *path = NULL;
		if (srv_access_bound(acc, id)) {
			fl_log_warn("%s is already enrolled, no token issued", id);
			continue;
		}
		if (srv_access_enrol_issue(acc, (uint64_t)o->enrol_minutes * 60000, id, tok,
					   &path)) {
			fprintf(stderr, "fedloha-server: %s\n", fl_error_msg());
			srv_access_free(acc);
			return 2;
		}
		sodium_memzero(tok, sizeof(tok));
		printf("enrolment token for client id %s in %s (one use, valid %d minutes): copy "
		       "it to the client (mode 0600) and run: fedloha-client run --id %s --key "
		       "FILE --server-key %s --enrol-token-file FILE ...\n",
		       id, path ? path : "?", o->enrol_minutes, id, pub);
	}
	*out = acc;
	return 0;
}

/* Everything run builds and frees. */
struct daemon {
	struct server s;
	uv_loop_t loop;
	int loop_up;
	struct srv_access *acc;
	struct srv_transport *t;
	struct srv_engine *e;
	struct fl_peft_config *pc;
	char *cfg_json;
	char host[256];
	int port;
	char up_host[256]; /* --upstream */
	int up_port;
	uint8_t up_pk[FL_PUBKEY_BYTES];
};

/* The config text, the global model, its --init weights and its frozen
 * base (--base after --init). */
static int build_model(const struct srv_opts *o, struct daemon *d)
{
	int c = 0, h = 0, w = 0, classes = 0, err;
	d->cfg_json = srv_opts_config_json(o);
	if (!d->cfg_json)
		return FL_EINVAL;
	struct fl_model_desc *desc = NULL;
	if (!o->model_file)
		err = srv_opts_data_dims(o->eval_data ? o->eval_data : o->data, o->data_path, &c,
					 &h, &w, &classes);
	else
		err = fl_model_desc_load(o->model_file, &desc);
	if (!err)
		err = fl_peft_config_parse(d->cfg_json, strlen(d->cfg_json), "config", &d->pc);
	if (!err && desc)
		err = fl_model_new_desc(desc, d->pc, o->train.seed, 1, &d->s.model);
	else if (!err)
		err = fl_model_new(o->model, c, h, w, classes, d->pc, o->train.seed, 1,
				   &d->s.model);
	fl_model_desc_free(desc);
	if (err)
		return err;
	if (o->init && (err = fl_model_load_init(d->s.model, o->init)))
		return fl_error_set(err, "--init %s", fl_error_msg());
	return o->base ? fl_model_load_base(d->s.model, o->base) : FL_OK;
}

/* The file served to clients as the loha frozen base: --base, else the
 * --init state dict when the model has a base; NULL for none. */
static const char *served_base(const struct srv_opts *o, const struct fl_model *m)
{
	if (o->base)
		return o->base;
	return o->init && fl_model_count_floats(m, FL_TENSOR_BASE) ? o->init : NULL;
}

static void transport_config(const struct srv_opts *o, struct daemon *d,
			     const struct srv_engine_config *ec, struct srv_transport_config *tc)
{
	size_t gbytes = fl_model_count_floats(d->s.model, FL_TENSOR_GLOBAL) * 4;
	srv_transport_config_default(tc);
	tc->host = d->host;
	tc->port = d->port;
	tc->max_frame_bytes = ec->max_frame_bytes;
	/* a BaseRequest queues the whole loha base at once: leave room for it */
	struct stat base_st;
	size_t base_bytes = ec->base_path && stat(ec->base_path, &base_st) == 0
				    ? (size_t)base_st.st_size
				    : 0;
	tc->max_output_bytes = o->max_output > 0 ? (size_t)o->max_output
						 : SRV_TRANSPORT_OUTPUT_DEFAULT + 2 * gbytes +
							   base_bytes + base_bytes / 64;
	tc->max_conns = (size_t)o->max_conns;
	tc->reserved_conns = o->reserved_conns >= 0 ? (size_t)o->reserved_conns
						    : (size_t)o->max_conns / 10;
	tc->max_handshakes = (size_t)o->max_handshakes;
	tc->addr_conns = (uint32_t)o->addr_conns;
	tc->addr_rate = o->addr_rate;
	tc->addr_burst = o->addr_burst;
	tc->debug_tensors = o->debug_tensors;
	tc->hook_ctx = &d->s;
	tc->on_round = on_round;
	tc->on_stop = on_stop;
	tc->access = d->acc;
	tc->handshake_timeout_ms = (uint32_t)(o->handshake_timeout * 1000);
	tc->write_timeout_ms =
		(uint32_t)((o->write_timeout >= 0 ? o->write_timeout : o->idle_timeout) * 1000);
}

/* A mid-tier's link to its parent (--upstream), on this node's key. */
static int start_upstream(const struct srv_opts *o, struct daemon *d)
{
	struct srv_upstream_config uc = {
		.host = d->up_host,
		.port = d->up_port,
		.node_id = o->upstream_id,
		.insecure = o->insecure,
		.identity = o->insecure ? NULL : srv_access_identity(d->acc),
		.parent_pk = o->insecure ? NULL : d->up_pk,
		.max_frame_bytes = (uint32_t)o->max_frame,
		.handshake_timeout_ms = (uint32_t)(o->handshake_timeout * 1000),
		.max_attempts = o->upstream_max_attempts,
		.seed = o->train.seed};
	int err = srv_upstream_new(&d->loop, &uc, d->e, d->t, &d->s.up);
	if (!err)
		fl_log_info("mid-tier: client '%s' of the parent %s:%d", o->upstream_id, d->up_host,
			    d->up_port);
	return err;
}

/* The central evaluation, the transport and the engine (restored from its
 * checkpoint), then the listening socket. */
static int start(const struct srv_opts *o, struct daemon *d, const struct srv_engine_config *ec)
{
	struct srv_transport_config tc;
	struct srv_engine_io io;
	int err;
	transport_config(o, d, ec, &tc);
	uv_loop_init(&d->loop);
	d->loop_up = 1;
	if (o->eval_data &&
	    (err = srv_central_eval_new(&d->loop, o->eval_data, o->data_path, o->eval_limit,
					d->s.model, d->pc, on_central_eval, &d->s, &d->s.ce)))
		return err;
	if ((err = srv_transport_new(&d->loop, &tc, &d->t)))
		return err;
	d->s.t = d->t;
	srv_transport_engine_io(d->t, &io);
	if ((err = srv_engine_new(ec, d->s.model, &io, &d->e)) || (err = srv_engine_restore(d->e)))
		return err;
	if ((err = srv_engine_set_tiers(d->e, o->tier_ids)) ||
	    (err = srv_access_set_tiers(d->acc, o->tier_ids)))
		return err;
	if (o->upstream && (err = start_upstream(o, d)))
		return err;
	if (srv_engine_round(d->e))
		fl_log_info("resumed from %s after round %llu", o->checkpoint,
			    (unsigned long long)srv_engine_round(d->e));
	size_t gbytes = fl_model_count_floats(d->s.model, FL_TENSOR_GLOBAL) * 4;
	printf("model %s (%s): %zu parameters, %zu transmitted (%zu bytes in f32)\n",
	       fl_model_arch(d->s.model), fl_peft_param_name(fl_model_param(d->s.model)),
	       fl_model_param_floats(d->s.model), gbytes / 4, gbytes);
	printf("upload slots: %u (%.1f MiB)\n", ec->upload_slots,
	       (double)ec->upload_slots * (double)gbytes / (1 << 20));
	if ((err = srv_transport_start(d->t, d->e)) == FL_OK)
		printf("listening on %s:%d\n", d->host, srv_transport_port(d->t));
	if (!err && d->s.up)
		err = srv_upstream_start(d->s.up);
	fflush(stdout);
	return err;
}

/* After the loop: how the rounds ended, and the final model. Sets *err
 * when the export failed. */
static int conclude(const struct srv_opts *o, struct daemon *d, int *err)
{
	const char *why = NULL;
	uint64_t up, down;
	srv_engine_bytes(d->e, &up, &down);
	if (srv_engine_failed(d->e, &why)) {
		fl_log_error("failed: %s", why);
		return 1;
	}
	int finished = srv_engine_finished(d->e);
	printf(finished ? "finished %llu rounds (bytes up %llu down %llu)\n"
			: "stopped after round %llu (bytes up %llu down %llu)\n",
	       (unsigned long long)srv_engine_round(d->e), (unsigned long long)up,
	       (unsigned long long)down);
	print_wire_totals(d->t, up, down);
	struct srv_upload_stats us;
	srv_engine_upload_stats(d->e, &us);
	printf("upload slots %u: at most %u in use, %llu uploads waited for one, %llu discarded "
	       "(not read before their deadline)\n",
	       us.slots, us.peak, (unsigned long long)us.parked, (unsigned long long)us.discarded);
	if (!finished) {
		int sig = srv_transport_signal(d->t);
		return sig ? 128 + sig : 1;
	}
	if (!o->out)
		return 0;
	char meta[512];
	snprintf(meta, sizeof(meta),
		 "{\"rounds\": %llu, \"seed\": %llu, \"strategy\": \"%s\", "
		 "\"bytes_up\": %llu, \"bytes_down\": %llu}",
		 (unsigned long long)srv_engine_round(d->e), (unsigned long long)o->train.seed,
		 o->strategy, (unsigned long long)up, (unsigned long long)down);
	if ((*err = fl_model_save(d->s.model, o->out, meta)) != FL_OK)
		return 1;
	printf("saved %s\n", o->out);
	return 0;
}

static void daemon_free(struct daemon *d)
{
	if (d->loop_up) {
		srv_upstream_stop(d->s.up);
		uv_run(&d->loop, UV_RUN_DEFAULT); /* close whatever is still open */
		srv_upstream_free(d->s.up);
		srv_engine_free(d->e);
		srv_transport_free(d->t);
		srv_central_eval_free(d->s.ce);
		if (uv_loop_close(&d->loop) != 0)
			fl_log_error("event loop still busy at exit");
	}
	fl_model_free(d->s.model);
	fl_peft_config_free(d->pc);
	free(d->cfg_json);
	srv_access_free(d->acc);
}

/* --upstream and what goes with it; 2 with a message. */
static int upstream_opts(const struct srv_opts *o, struct daemon *d)
{
	const char *bad = NULL;
	if (fl_cliopt_report("fedloha-server",
			     fl_cliopt_hostport("--upstream", o->upstream, 1, d->up_host,
						sizeof(d->up_host), &d->up_port)))
		return 2;
	if (!o->upstream_id || !fl_wire_client_id_valid(o->upstream_id))
		bad = "--upstream needs --upstream-id ID (1..64 of [A-Za-z0-9._-]): this node's "
		      "client id at its parent";
	else if (!o->insecure && !o->upstream_key)
		bad = "--upstream needs --upstream-key KEY: the parent's public key (fl1:... or a "
		      "file holding it)";
	else if (o->checkpoint)
		bad = "--checkpoint: a mid-tier keeps no rounds of its own (each task brings the "
		      "global model); checkpoint the root";
	else if (o->out)
		bad = "--out: a mid-tier never holds the final model; export it at the root";
	else if (o->eval_every)
		bad = "--eval-every: a mid-tier evaluates when its parent asks (the parent's "
		      "--eval-every)";
	if (bad) {
		fprintf(stderr, "fedloha-server: %s\n", bad);
		return 2;
	}
	if (!o->insecure && fl_pubkey_parse_arg(o->upstream_key, d->up_pk)) {
		fprintf(stderr, "fedloha-server: --upstream-key: %s\n", fl_error_msg());
		return 2;
	}
	return 0;
}

static int run(struct srv_opts *o)
{
	struct daemon d = {0};
	if (split_listen(o->listen, d.host, sizeof(d.host), &d.port)) {
		fprintf(stderr, "fedloha-server: --listen: expected HOST:PORT, got '%s'\n",
			o->listen);
		return 2;
	}
	if (!o->model_file && !fl_model_desc_builtin_valid(o->model)) {
		fprintf(stderr,
			"fedloha-server: --model: unknown model '%s' (2nn, cnn, mlp; --model-file "
			"for any other)\n",
			o->model);
		return 2;
	}
	if (o->upstream && upstream_opts(o, &d))
		return 2;
	if (srv_engine_set_tiers(NULL, o->tier_ids)) {
		fprintf(stderr, "fedloha-server: --tier-ids: %s\n", fl_error_msg());
		return 2;
	}
	struct srv_engine_config ec;
	int rc = engine_config(o, &ec);
	ec.relay = o->upstream != NULL;
	ec.relay_up_rate = (uint64_t)(o->upstream_rate * 1e6 / 8);
	if (!rc && o->checkpoint && fl_mkdir_parent(o->checkpoint, 0)) {
		fprintf(stderr, "fedloha-server: --checkpoint: %s\n", fl_error_msg());
		rc = 1;
	}
	if (!rc)
		rc = setup_access(o, &d.acc);
	if (rc)
		return rc;
	int err = build_model(o, &d);
	if (err) {
		fprintf(stderr, "fedloha-server: %s\n", fl_error_msg());
		daemon_free(&d);
		return 1;
	}
	ec.config_json = d.cfg_json;
	ec.base_path = served_base(o, d.s.model);
	if (o->upload_slots < 0)
		ec.upload_slots = srv_engine_upload_slots_for(
			(uint64_t)o->upload_memory << 20,
			fl_model_count_floats(d.s.model, FL_TENSOR_GLOBAL));
	d.s.rounds = ec.rounds;
	fl_blas_set_threads(o->threads);
	err = start(o, &d, &ec);
	if (d.loop_up)
		uv_run(&d.loop, UV_RUN_DEFAULT);
	if (!err) {
		rc = conclude(o, &d, &err);
		fflush(stdout);
	}
	if (err)
		fprintf(stderr, "fedloha-server: %s\n", fl_error_msg());
	daemon_free(&d);
	return err ? 1 : rc;
}

static const struct fl_keys_cmd keys_cmd = {
	.prog = "fedloha-server",
	.usage = "usage: fedloha-server keygen --out FILE [--force]\n"
		 "       fedloha-server pubkey --key FILE\n\n"
		 "keygen writes the coordinator's new secret key to FILE (mode 0600; missing\n"
		 "folders are made 0700) and prints its public key (fl1:...) for the clients'\n"
		 "--server-key; an existing FILE is kept unless --force. pubkey prints the\n"
		 "public key of a key file again.\n",
	.replace_hint = SRV_KEY_REPLACE_HINT,
	.written_hint = "give clients this public key (fedloha-client run --server-key ...):",
};

int main(int argc, char **argv)
{
	if (argc >= 2 && (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version"))) {
		printf("fedloha-server " SERVER_VERSION "\n");
		return 0;
	}
	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		srv_opts_usage(stdout);
		return 0;
	}
	if (argc >= 2 && (!strcmp(argv[1], "keygen") || !strcmp(argv[1], "pubkey")))
		return fl_keys_main(&keys_cmd, argc - 1, argv + 1);
	if (argc < 2 || strcmp(argv[1], "run") != 0) {
		srv_opts_usage(stderr);
		return 2;
	}
	argc--, argv++;
	struct srv_opts o;
	int prc = srv_opts_parse(argc, argv, &o);
	if (prc) {
		srv_opts_free(&o);
		return prc == 1 ? 0 : 2;
	}
	fl_log_set_level(o.level);
	signal(SIGPIPE, SIG_IGN); /* a peer gone mid-write is an error code, not a death */
	int rc = run(&o);
	srv_opts_free(&o);
	return rc;
}
