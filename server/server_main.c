/* server_main.c - fedloha-server: the coordinator daemon.
 *
 *   fedloha-server run [flags]     run federated rounds over TCP
 *   fedloha-server keygen --out FILE [--force]   make the coordinator's key
 *   fedloha-server pubkey --key FILE             print its public key
 *
 * Parses flags and an optional JSON config file (same keys as the long
 * flags, flags win), loads the key and the allow-list (access.h), builds
 * the global model, the round engine and the libuv transport, prints one
 * line per round (and the central evaluation on a test slice when asked),
 * exports the final model. Protocol logic is in engine.c, sockets and the
 * secure channel in transport*.c; this file only wires them up.
 */
#include "access.h"
#include "blas.h"
#include "central_eval.h"
#include "engine.h"
#include "errors.h"
#include "log.h"
#include "model_io.h"
#include "peft_config.h"
#include "channel.h"
#include "transport.h"
#include "cliopt.h"

#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SERVER_VERSION "0.1.0"

struct opts {
	const char *listen, *model, *param, *config, *base, *checkpoint, *out, *strategy;
	const char *optimizer, *data, *eval_data, *data_path, *log_level, *key, *allow;
	double handshake_timeout;
	int insecure, enrol, enrol_minutes;
	double gamma, alpha, fraction, round_timeout, lr, lr_decay, momentum, wd, prox_mu;
	double eta, beta1, beta2, tau; /* server optimiser; < 0 = the strategy's default */
	double heartbeat, idle_timeout;
	int rank, rounds, min_clients, min_fit, min_report, max_retries, epochs, batch;
	int eval_every, eval_limit, threads, max_conns, debug_tensors;
	long long max_frame, chunk, max_output;
	const char *dtype, *require_dtype;
	unsigned long long seed;
	int has_gamma;
};

static const struct option longopts[] = {
	{"listen", 1, 0, 0},        {"model", 1, 0, 0},        {"param", 1, 0, 0},
	{"gamma", 1, 0, 0},         {"rank", 1, 0, 0},         {"alpha", 1, 0, 0},
	{"config", 1, 0, 0},        {"base", 1, 0, 0},         {"rounds", 1, 0, 0},
	{"min-clients", 1, 0, 0},   {"fraction", 1, 0, 0},     {"min-fit", 1, 0, 0},
	{"min-report", 1, 0, 0},    {"max-retries", 1, 0, 0},  {"round-timeout", 1, 0, 0},
	{"epochs", 1, 0, 0},        {"batch", 1, 0, 0},        {"lr", 1, 0, 0},
	{"lr-decay", 1, 0, 0},      {"momentum", 1, 0, 0},     {"weight-decay", 1, 0, 0},
	{"optimizer", 1, 0, 0},     {"strategy", 1, 0, 0},     {"server-lr", 1, 0, 0},
	{"prox-mu", 1, 0, 0},       {"dtype", 1, 0, 0},        {"require-dtype", 1, 0, 0},
	{"eval-every", 1, 0, 0},    {"checkpoint", 1, 0, 0},   {"out", 1, 0, 0},
	{"seed", 1, 0, 0},          {"log-level", 1, 0, 0},    {"data", 1, 0, 0},
	{"eval-data", 1, 0, 0},     {"data-path", 1, 0, 0},    {"eval-limit", 1, 0, 0},
	{"heartbeat", 1, 0, 0},     {"idle-timeout", 1, 0, 0}, {"max-frame", 1, 0, 0},
	{"chunk", 1, 0, 0},         {"max-output", 1, 0, 0},   {"max-conns", 1, 0, 0},
	{"threads", 1, 0, 0},       {"debug-tensors", 0, 0, 0}, {"config-file", 1, 0, 0},
	{"key", 1, 0, 0},           {"allow", 1, 0, 0},        {"enrol", 0, 0, 0},
	{"enrol-minutes", 1, 0, 0}, {"insecure", 0, 0, 0},     {"handshake-timeout", 1, 0, 0},
	{"server-beta1", 1, 0, 0},  {"server-beta2", 1, 0, 0}, {"server-tau", 1, 0, 0},
	{"help", 0, 0, 'h'},        {"version", 0, 0, 'V'},    {0, 0, 0, 0}};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: fedloha-server run [options]\n"
		"       fedloha-server keygen --out FILE [--force]   new key (0600), prints its public key\n"
		"       fedloha-server pubkey --key FILE             prints the public key again\n"
		"Runs federated rounds for fedloha-client daemons over TCP, on a mutually\n"
		"authenticated, encrypted channel (docs/SECURITY.md).\n\n"
		"  --listen HOST:PORT     address to listen on (default 127.0.0.1:7420; port 0 = any)\n"
		"  --config-file FILE     JSON object with the same keys as these flags (flags win)\n"
		"security:\n"
		"  --key FILE             the coordinator's secret key (fedloha-server keygen)\n"
		"  --allow FILE           allow-list: one 'fl1:... NAME' client key a line; re-read on\n"
		"                         SIGHUP; a NAME that is a valid client id binds that key to it\n"
		"  --enrol                print a one-time enrolment token; a client presenting it is\n"
		"                         added to --allow  (--enrol-minutes N, default 30)\n"
		"  --handshake-timeout SEC (10)  --insecure (plaintext, no authentication: tests only)\n"
		"model:\n"
		"  --model NAME           2nn, cnn or mlp (default 2nn)\n"
		"  --param KIND           dense, fedpara, pfedpara, lowrank or loha (default fedpara)\n"
		"  --gamma G | --rank R   factor rank rule (default gamma 0.1); --alpha A for loha\n"
		"  --config FILE          PEFT adapter_config.json (overrides gamma/rank)\n"
		"  --base FILE            loha: frozen base weights served to clients\n"
		"  --data NAME            input shape of fashion-mnist (default), mnist or cifar10\n"
		"rounds:\n"
		"  --rounds N (3)  --min-clients N (1)  --fraction F (1)  --min-fit N (1)\n"
		"  --min-report N (1)  --max-retries N (3)  --round-timeout SEC (60)\n"
		"  --heartbeat SEC (10)  --idle-timeout SEC (60)  --seed S (0)\n"
		"client training:\n"
		"  --epochs N (1)  --batch B (64)  --lr LR (0.1)  --lr-decay D (1)  --momentum M (0)\n"
		"  --weight-decay WD (0)  --optimizer sgd|adam  --prox-mu MU (0)\n"
		"aggregation:\n"
		"  --strategy fedavg|fedavgm|fedadam|fedyogi|fedadagrad|fedprox  --server-lr ETA\n"
		"  --server-beta1 B  --server-beta2 B  --server-tau T   (defaults: the strategy's)\n"
		"wire:\n"
		"  --dtype f32|f16|bf16|int8   encoding offered (a client's preference wins)\n"
		"  --require-dtype DTYPE       force this encoding for every client\n"
		"  --max-frame BYTES (4 MiB)  --chunk BYTES (min(1 MiB, max-frame/2))\n"
		"  --max-output BYTES (64 MiB + twice the model)  --max-conns N (10000)\n"
		"evaluation and output:\n"
		"  --eval-every N         federated evaluation every N rounds (0 = never)\n"
		"  --eval-data NAME       central evaluation on this test set after each round\n"
		"  --data-path DIR        its folder;  --eval-limit N  first N test samples\n"
		"  --checkpoint FILE      checkpoint after every round; resume from it if present\n"
		"  --out DIR              export the final model (fl_model_save folder)\n"
		"  --threads T (1)  --log-level error|warn|info|debug  --debug-tensors\n"
		"  --help  --version\n");
}

static int num(const char *k, const char *v, double lo, double hi, double *out)
{
	char flag[64];
	snprintf(flag, sizeof(flag), "--%s", k);
	if (fl_cliopt_double(flag, v, lo, hi, out)) {
		fprintf(stderr, "fedloha-server: %s\n", fl_error_msg());
		return -1;
	}
	return 0;
}

static int lnum(const char *k, const char *v, double lo, double hi, long long *out)
{
	char flag[64];
	snprintf(flag, sizeof(flag), "--%s", k);
	if (fl_cliopt_llong(flag, v, (long long)lo, (long long)hi, out)) {
		fprintf(stderr, "fedloha-server: %s\n", fl_error_msg());
		return -1;
	}
	return 0;
}

static int inum(const char *k, const char *v, double lo, double hi, int *out)
{
	long long x;
	if (lnum(k, v, lo, hi, &x))
		return -1;
	*out = (int)x;
	return 0;
}

/* One option by its long name; v is owned elsewhere and outlives o. */
static int set_opt(struct opts *o, const char *k, const char *v)
{
	int seed_ok;
	double d;
#define S(name, field)                                                                            \
	if (!strcmp(k, name)) {                                                                   \
		o->field = v;                                                                     \
		return 0;                                                                         \
	}
	S("listen", listen) S("model", model) S("param", param) S("config", config)
	S("base", base) S("checkpoint", checkpoint) S("out", out) S("strategy", strategy)
	S("optimizer", optimizer) S("data", data) S("eval-data", eval_data)
	S("data-path", data_path) S("log-level", log_level) S("dtype", dtype)
	S("require-dtype", require_dtype) S("key", key) S("allow", allow)
#undef S
	if (!strcmp(k, "insecure") || !strcmp(k, "enrol")) {
		int on = strcmp(v, "0") != 0 && strcmp(v, "false") != 0;
		*(!strcmp(k, "insecure") ? &o->insecure : &o->enrol) = on;
		return 0;
	}
	if (!strcmp(k, "enrol-minutes")) return inum(k, v, 1, 1e6, &o->enrol_minutes);
	if (!strcmp(k, "handshake-timeout")) return num(k, v, 0.05, 3600, &o->handshake_timeout);
	if (!strcmp(k, "gamma")) {
		o->has_gamma = 1;
		return num(k, v, 0, 1, &o->gamma);
	}
	if (!strcmp(k, "alpha")) return num(k, v, 1e-6, 1e6, &o->alpha);
	if (!strcmp(k, "fraction")) return num(k, v, 0, 1, &o->fraction);
	if (!strcmp(k, "round-timeout")) return num(k, v, 0.001, 86400, &o->round_timeout);
	if (!strcmp(k, "heartbeat")) return num(k, v, 0, 86400, &o->heartbeat);
	if (!strcmp(k, "idle-timeout")) return num(k, v, 0, 86400, &o->idle_timeout);
	if (!strcmp(k, "lr")) return num(k, v, 0, 100, &o->lr);
	if (!strcmp(k, "lr-decay")) return num(k, v, 1e-6, 1, &o->lr_decay);
	if (!strcmp(k, "momentum")) return num(k, v, 0, 0.9999, &o->momentum);
	if (!strcmp(k, "weight-decay")) return num(k, v, 0, 1, &o->wd);
	if (!strcmp(k, "prox-mu")) return num(k, v, 0, 1e6, &o->prox_mu);
	if (!strcmp(k, "server-lr")) return num(k, v, 0, 1e6, &o->eta);
	if (!strcmp(k, "server-beta1")) return num(k, v, 0, 0.9999, &o->beta1);
	if (!strcmp(k, "server-beta2")) return num(k, v, 0, 0.9999, &o->beta2);
	if (!strcmp(k, "server-tau")) return num(k, v, 1e-12, 1e6, &o->tau);
	if (!strcmp(k, "rank")) return inum(k, v, 1, 1 << 16, &o->rank);
	if (!strcmp(k, "rounds")) return inum(k, v, 1, 1e9, &o->rounds);
	if (!strcmp(k, "min-clients")) return inum(k, v, 1, 1e6, &o->min_clients);
	if (!strcmp(k, "min-fit")) return inum(k, v, 1, 1e6, &o->min_fit);
	if (!strcmp(k, "min-report")) return inum(k, v, 1, 1e6, &o->min_report);
	if (!strcmp(k, "max-retries")) return inum(k, v, 0, 1e6, &o->max_retries);
	if (!strcmp(k, "epochs")) return inum(k, v, 0, 10000, &o->epochs);
	if (!strcmp(k, "batch")) return inum(k, v, 1, 4096, &o->batch);
	if (!strcmp(k, "eval-every")) return inum(k, v, 0, 1e9, &o->eval_every);
	if (!strcmp(k, "eval-limit")) return inum(k, v, 1, 1e9, &o->eval_limit);
	if (!strcmp(k, "threads")) return inum(k, v, 1, 256, &o->threads);
	if (!strcmp(k, "max-conns")) return inum(k, v, 1, 1e7, &o->max_conns);
	if (!strcmp(k, "max-frame")) return lnum(k, v, 2048, 1 << 30, &o->max_frame);
	if (!strcmp(k, "chunk")) return lnum(k, v, 64, 1 << 30, &o->chunk);
	if (!strcmp(k, "max-output")) return lnum(k, v, 4096, 1e12, &o->max_output);
	if (!strcmp(k, "debug-tensors")) {
		o->debug_tensors = strcmp(v, "0") != 0 && strcmp(v, "false") != 0;
		return 0;
	}
	if (!strcmp(k, "seed")) {
		seed_ok = num(k, v, 0, 9007199254740992.0, &d);
		o->seed = (unsigned long long)d;
		return seed_ok;
	}
	fprintf(stderr, "fedloha-server: unknown option '%s'\n", k);
	return -1;
}

/* Keys of a JSON config file become option values (kept alive in *keep). */
static int load_config_file(struct opts *o, const char *path, json_t **keep)
{
	json_error_t je;
	json_t *root = json_load_file(path, 0, &je);
	if (!root) {
		fprintf(stderr, "fedloha-server: %s:%d:%d: %s\n", path, je.line, je.column, je.text);
		return -1;
	}
	*keep = root;
	if (!json_is_object(root)) {
		fprintf(stderr, "fedloha-server: %s: expected a JSON object\n", path);
		return -1;
	}
	json_t *strs = json_array();
	json_object_set_new(root, "\x01strings", strs); /* owns the converted numbers */
	const char *k;
	json_t *v;
	int bad = 0;
	json_object_foreach(root, k, v)
	{
		if (k[0] == '\x01')
			continue;
		char buf[64];
		const char *s = NULL;
		if (json_is_string(v)) {
			s = json_string_value(v);
		} else if (json_is_integer(v)) {
			snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(v));
		} else if (json_is_real(v)) {
			snprintf(buf, sizeof(buf), "%.17g", json_real_value(v));
		} else if (json_is_boolean(v)) {
			snprintf(buf, sizeof(buf), "%d", json_is_true(v));
		} else {
			fprintf(stderr, "fedloha-server: %s: key '%s': expected a string, number or "
					"boolean\n", path, k);
			bad = 1;
			continue;
		}
		if (!s) {
			json_array_append_new(strs, json_string(buf));
			s = json_string_value(json_array_get(strs, json_array_size(strs) - 1));
		}
		if (!strcmp(k, "config-file") || set_opt(o, k, s)) {
			fprintf(stderr, "fedloha-server: %s: key '%s' refused\n", path, k);
			bad = 1;
		}
	}
	return bad ? -1 : 0;
}

/* The PEFT-format config text sent in Welcome: --config's file with --param
 * applied, or one built from the flags. */
static char *make_config_json(const struct opts *o)
{
	json_t *root;
	if (o->config) {
		json_error_t je;
		if (!(root = json_load_file(o->config, 0, &je))) {
			fl_error_set(FL_EFORMAT, "%s:%d:%d: %s", o->config, je.line, je.column, je.text);
			return NULL;
		}
		if (o->param)
			json_object_set_new(root, "fedloha_parameterization", json_string(o->param));
	} else {
		const char *p = o->param ? o->param : "fedpara";
		root = json_object();
		json_object_set_new(root, "peft_type", json_string("LOHA"));
		json_object_set_new(root, "fedloha_parameterization", json_string(p));
		json_object_set_new(root, "use_effective_conv2d", json_boolean(strcmp(p, "loha") != 0));
		if (o->rank > 0) {
			json_object_set_new(root, "r", json_integer(o->rank));
			json_object_set_new(root, "alpha", json_real(o->alpha > 0 ? o->alpha : o->rank));
		} else if (strcmp(p, "loha") != 0) {
			json_object_set_new(root, "fedloha_gamma", json_real(o->gamma));
		}
	}
	char *s = json_dumps(root, JSON_SORT_KEYS | JSON_INDENT(2));
	json_decref(root);
	if (!s)
		fl_error_set(FL_ENOMEM, "out of memory");
	return s;
}

static void data_dims(const char *name, int *c, int *h, int *w, int *classes)
{
	*classes = 10;
	if (name && !strcmp(name, "cifar10"))
		*c = 3, *h = 32, *w = 32;
	else
		*c = 1, *h = 28, *w = 28;
}

/* ---- the running daemon ---- */

struct server {
	struct fl_model *model;
	struct srv_central_eval *ce; /* NULL without --eval-data */
	uint64_t rounds;
	struct srv_transport *t;
	struct srv_transport_stats prev; /* socket counts at the previous round */
};

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
	printf("round %llu/%llu selected %d reported %d dropped %d rejected %d attempts %d "
	       "examples %llu train-loss %.4f train-acc %.4f up %llu down %llu total-up %llu "
	       "total-down %llu %.2fs\n",
	       (unsigned long long)r->round, (unsigned long long)s->rounds, r->selected,
	       r->reported, r->dropped, r->rejected, r->attempts, (unsigned long long)r->examples,
	       r->train_loss, r->train_accuracy, (unsigned long long)r->bytes_up,
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
		       (unsigned long long)r->round, r->eval_accuracy, r->eval_loss, r->eval_clients);
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
}

static int split_listen(const char *s, char *host, size_t cap, int *port)
{
	return fl_cliopt_hostport("--listen", s, 0, host, cap, port) ? -1 : 0;
}

static int run(struct opts *o)
{
	char host[256];
	int port;
	if (split_listen(o->listen, host, sizeof(host), &port)) {
		fprintf(stderr, "fedloha-server: --listen: expected HOST:PORT, got '%s'\n", o->listen);
		return 2;
	}
	if (!fl_model_arch_valid(o->model)) {
		fprintf(stderr, "fedloha-server: --model: unknown model '%s' (2nn, cnn, mlp)\n", o->model);
		return 2;
	}
	struct srv_engine_config ec;
	srv_engine_config_default(&ec);
	ec.rounds = (uint64_t)o->rounds;
	ec.seed = o->seed;
	ec.min_available = o->min_clients;
	ec.min_fit = o->min_fit;
	ec.fraction = o->fraction;
	ec.min_report = o->min_report;
	ec.max_retries = o->max_retries;
	ec.round_timeout_ms = (uint32_t)(o->round_timeout * 1000);
	ec.heartbeat_ms = (uint32_t)(o->heartbeat * 1000);
	ec.idle_timeout_ms = (uint32_t)(o->idle_timeout * 1000);
	ec.epochs = (uint32_t)o->epochs;
	ec.batch_size = (uint32_t)o->batch;
	ec.lr = (float)o->lr;
	ec.lr_decay = (float)o->lr_decay;
	ec.momentum = (float)o->momentum;
	ec.weight_decay = (float)o->wd;
	ec.prox_mu = (float)o->prox_mu;
	ec.optimizer = o->optimizer;
	ec.eval_every = (uint32_t)o->eval_every;
	ec.checkpoint_path = o->checkpoint;
	ec.base_path = o->base;
	ec.max_frame_bytes = (uint32_t)o->max_frame;
	ec.chunk_bytes = (uint32_t)(o->chunk ? o->chunk
					       : (o->max_frame / 2 < FL_WIRE_CHUNK_DEFAULT
							  ? o->max_frame / 2
							  : FL_WIRE_CHUNK_DEFAULT));
	int prox = 0, err = FL_OK, rc = 1;
	enum fl_server_opt_kind kind;
	if (fl_server_opt_parse(o->strategy, &kind, &prox) ||
	    (o->dtype && fl_wire_dtype_parse(o->dtype, &ec.dtype)) ||
	    (o->require_dtype && fl_wire_dtype_parse(o->require_dtype, &ec.dtype))) {
		fprintf(stderr, "fedloha-server: %s\n", fl_error_msg());
		return 2;
	}
	ec.dtype_required = o->require_dtype != NULL;
	const char *unused = fl_server_opt_unused(kind, o->eta >= 0, o->beta1 >= 0, o->beta2 >= 0,
						  o->tau >= 0);
	if (unused) {
		fprintf(stderr, "fedloha-server: --%s has no effect with --strategy %s\n", unused,
			o->strategy);
		return 2;
	}
	fl_server_opt_config_default(&ec.server_opt, kind);
	if (o->eta >= 0)
		ec.server_opt.eta = (float)o->eta;
	if (o->beta1 >= 0)
		ec.server_opt.beta1 = (float)o->beta1;
	if (o->beta2 >= 0)
		ec.server_opt.beta2 = (float)o->beta2;
	if (o->tau >= 0)
		ec.server_opt.tau = (float)o->tau;
	if (prox && o->prox_mu == 0)
		ec.prox_mu = 0.01f;

	struct srv_access *acc = NULL;
	struct srv_access_config ac = {.insecure = o->insecure, .key_path = o->key,
				       .allow_path = o->allow, .enrol = o->enrol};
	if (srv_access_new(&ac, &acc)) {
		fprintf(stderr, "fedloha-server: %s\n", fl_error_msg());
		return 2;
	}
	if (o->insecure) {
		fl_log_warn("--insecure: traffic is neither encrypted nor authenticated");
	} else {
		char pub[FL_PUBKEY_STRING_BYTES], tok[FL_TOKEN_STRING_BYTES];
		fl_identity_public_string(srv_access_identity(acc), pub);
		fl_log_info("server key %s; allow-list %s: %zu client keys", pub, o->allow,
			    srv_access_count(acc));
		if (o->enrol) {
			if (srv_access_enrol_issue(acc, (uint64_t)o->enrol_minutes * 60000, tok)) {
				fprintf(stderr, "fedloha-server: %s\n", fl_error_msg());
				srv_access_free(acc);
				return 1;
			}
			printf("enrolment token %s (one use, valid %d minutes): fedloha-client run "
			       "--key FILE --server-key %s --enrol-token %s ...\n",
			       tok, o->enrol_minutes, pub, tok);
		}
	}
	struct server s = {0};
	uv_loop_t loop;
	struct srv_transport *t = NULL;
	struct srv_engine *e = NULL;
	struct fl_peft_config *pc = NULL;
	char *cfg_json = make_config_json(o);
	int c, h, w, classes;
	data_dims(o->eval_data ? o->eval_data : o->data, &c, &h, &w, &classes);
	if (!cfg_json || (err = fl_peft_config_parse(cfg_json, strlen(cfg_json), "config", &pc)) ||
	    (err = fl_model_new(o->model, c, h, w, classes, pc, o->seed, 1, &s.model)) ||
	    (o->base && (err = fl_model_load_base(s.model, o->base)))) {
		fprintf(stderr, "fedloha-server: %s\n", fl_error_msg());
		free(cfg_json);
		fl_peft_config_free(pc);
		fl_model_free(s.model);
		srv_access_free(acc);
		return 1;
	}
	ec.config_json = cfg_json;
	s.rounds = ec.rounds;
	fl_blas_set_threads(o->threads);

	size_t gbytes = fl_model_count_floats(s.model, FL_TENSOR_GLOBAL) * 4;
	struct srv_transport_config tc;
	srv_transport_config_default(&tc);
	tc.host = host;
	tc.port = port;
	tc.max_frame_bytes = ec.max_frame_bytes;
	/* a BaseRequest queues the whole loha base at once: leave room for it */
	struct stat base_st;
	size_t base_bytes = o->base && stat(o->base, &base_st) == 0 ? (size_t)base_st.st_size : 0;
	tc.max_output_bytes = o->max_output > 0 ? (size_t)o->max_output
						 : SRV_TRANSPORT_OUTPUT_DEFAULT + 2 * gbytes +
							   base_bytes + base_bytes / 64;
	tc.max_conns = (size_t)o->max_conns;
	tc.debug_tensors = o->debug_tensors;
	tc.hook_ctx = &s;
	tc.on_round = on_round;
	tc.access = acc;
	tc.handshake_timeout_ms = (uint32_t)(o->handshake_timeout * 1000);
	uv_loop_init(&loop);
	if (o->eval_data && (err = srv_central_eval_new(&loop, o->eval_data, o->data_path,
							o->eval_limit, s.model, pc, on_central_eval,
							&s, &s.ce)))
		goto out;
	struct srv_engine_io io;
	if ((err = srv_transport_new(&loop, &tc, &t)))
		goto out;
	s.t = t;
	srv_transport_engine_io(t, &io);
	if ((err = srv_engine_new(&ec, s.model, &io, &e)) || (err = srv_engine_restore(e)))
		goto out;
	if (srv_engine_round(e))
		fl_log_info("resumed from %s after round %llu", o->checkpoint,
			    (unsigned long long)srv_engine_round(e));
	printf("model %s (%s): %zu parameters, %zu transmitted (%zu bytes in f32)\n", o->model,
	       fl_peft_param_name(fl_model_param(s.model)), fl_model_param_floats(s.model),
	       gbytes / 4, gbytes);
	if ((err = srv_transport_start(t, e)) == FL_OK)
		printf("listening on %s:%d\n", host, srv_transport_port(t));
	fflush(stdout);
	uv_run(&loop, UV_RUN_DEFAULT);
	if (err)
		goto out;
	const char *why = NULL;
	uint64_t up, down;
	srv_engine_bytes(e, &up, &down);
	if (srv_engine_failed(e, &why)) {
		fl_log_error("failed: %s", why);
	} else if (!srv_engine_finished(e)) {
		int sig = srv_transport_signal(t);
		printf("stopped after round %llu (bytes up %llu down %llu)\n",
		       (unsigned long long)srv_engine_round(e), (unsigned long long)up,
		       (unsigned long long)down);
		print_wire_totals(t, up, down);
		rc = sig ? 128 + sig : 1;
	} else {
		printf("finished %llu rounds (bytes up %llu down %llu)\n",
		       (unsigned long long)srv_engine_round(e), (unsigned long long)up,
		       (unsigned long long)down);
		print_wire_totals(t, up, down);
		rc = 0;
		if (o->out) {
			char meta[512];
			snprintf(meta, sizeof(meta),
				 "{\"rounds\": %llu, \"seed\": %llu, \"strategy\": \"%s\", "
				 "\"bytes_up\": %llu, \"bytes_down\": %llu}",
				 (unsigned long long)srv_engine_round(e), o->seed, o->strategy,
				 (unsigned long long)up, (unsigned long long)down);
			if ((err = fl_model_save(s.model, o->out, meta)) == FL_OK)
				printf("saved %s\n", o->out);
			else
				rc = 1;
		}
	}
	fflush(stdout);
out:
	if (err)
		fprintf(stderr, "fedloha-server: %s\n", fl_error_msg());
	uv_run(&loop, UV_RUN_DEFAULT); /* close whatever is still open */
	srv_engine_free(e);
	srv_transport_free(t);
	srv_central_eval_free(s.ce);
	if (uv_loop_close(&loop) != 0)
		fl_log_error("event loop still busy at exit");
	fl_model_free(s.model);
	fl_peft_config_free(pc);
	free(cfg_json);
	srv_access_free(acc);
	return err ? 1 : rc;
}

/* keygen --out FILE [--force] | pubkey --key FILE */
static int keys_main(int argc, char **argv)
{
	int gen = !strcmp(argv[0], "keygen"), force = 0;
	const char *path = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--force") && gen)
			force = 1;
		else if ((!strcmp(argv[i], "--out") || !strcmp(argv[i], "--key")) && i + 1 < argc)
			path = argv[++i];
		else {
			path = NULL;
			break;
		}
	}
	if (!path) {
		fprintf(stderr, "usage: fedloha-server keygen --out FILE [--force]\n"
				"       fedloha-server pubkey --key FILE\n");
		return 2;
	}
	char pub[FL_PUBKEY_STRING_BYTES];
	struct fl_identity *id = NULL;
	int err = gen ? srv_access_keygen(path, force, pub) : fl_identity_load(path, &id);
	if (err) {
		fprintf(stderr, "fedloha-server: %s\n", fl_error_msg());
		return 1;
	}
	if (id)
		fl_identity_public_string(id, pub);
	fl_identity_free(id);
	if (gen)
		fprintf(stderr, "fedloha-server: secret key written to %s (mode 0600); give clients "
				"this public key (fedloha-client run --server-key ...):\n", path);
	printf("%s\n", pub);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version"))) {
		printf("fedloha-server " SERVER_VERSION "\n");
		return 0;
	}
	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		usage(stdout);
		return 0;
	}
	if (argc >= 2 && (!strcmp(argv[1], "keygen") || !strcmp(argv[1], "pubkey")))
		return keys_main(argc - 1, argv + 1);
	if (argc < 2 || strcmp(argv[1], "run") != 0) {
		usage(stderr);
		return 2;
	}
	argc--, argv++;
	struct opts o = {.listen = "127.0.0.1:7420", .model = "2nn", .strategy = "fedavg",
			 .optimizer = "sgd", .gamma = 0.1, .fraction = 1, .round_timeout = 60,
			 .lr = 0.1, .lr_decay = 1, .eta = -1, .beta1 = -1, .beta2 = -1, .tau = -1, .heartbeat = 10, .idle_timeout = 60,
			 .rounds = 3, .min_clients = 1, .min_fit = 1, .min_report = 1,
			 .max_retries = 3, .epochs = 1, .batch = 64, .threads = 1,
			 .max_conns = SRV_TRANSPORT_CONNS_DEFAULT, .max_frame = FL_WIRE_MAX_FRAME_DEFAULT,
			 .enrol_minutes = 30, .handshake_timeout = FL_CHANNEL_TIMEOUT_DEFAULT_MS / 1000.0};
	json_t *file = NULL;
	int bad = 0, ch, idx;
	for (int i = 1; i < argc; i++) { /* the file first, so flags override it */
		const char *a = argv[i];
		if (!strncmp(a, "--config-file=", 14))
			bad |= load_config_file(&o, a + 14, &file);
		else if (!strcmp(a, "--config-file") && i + 1 < argc)
			bad |= load_config_file(&o, argv[++i], &file);
	}
	optind = 1;
	while (!bad && (ch = getopt_long(argc, argv, "h", longopts, &idx)) != -1) {
		if (ch == 'h') {
			usage(stdout);
			json_decref(file);
			return 0;
		}
		if (ch == 'V') {
			printf("fedloha-server " SERVER_VERSION "\n");
			json_decref(file);
			return 0;
		}
		if (ch != 0) {
			bad = 1;
			break;
		}
		const char *name = longopts[idx].name;
		if (!strcmp(name, "config-file"))
			continue;
		bad |= set_opt(&o, name, optarg ? optarg : "1");
	}
	if (!bad && optind < argc) {
		fprintf(stderr, "fedloha-server: unexpected argument '%s'\n", argv[optind]);
		bad = 1;
	}
	enum fl_log_level lvl = FL_LOG_INFO;
	if (!bad && o.log_level && fl_log_parse_level(o.log_level, &lvl)) {
		fprintf(stderr, "fedloha-server: --log-level: %s\n", fl_error_msg());
		bad = 1;
	}
	if (!bad && o.min_report > o.min_clients)
		fl_log_warn("--min-report %d > --min-clients %d: rounds may need more clients",
			    o.min_report, o.min_clients);
	if (bad) {
		fprintf(stderr, "fedloha-server: try --help\n");
		json_decref(file);
		return 2;
	}
	fl_log_set_level(lvl);
	if (lvl == FL_LOG_DEBUG)
		o.debug_tensors = 1;
	signal(SIGPIPE, SIG_IGN); /* a peer gone mid-write is an error code, not a death */
	int rc = run(&o);
	json_decref(file);
	return rc;
}
