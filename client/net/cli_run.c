/* cli_run.c - `fedloha-client run`: loads this client's key and the pinned
 * server key (or takes --insecure), its data (a partition of a data set, or
 * its own IDX files), builds the session (session.h) and the libuv
 * transport (transport.h) and runs the loop until the server ends the
 * session, refuses us, or a signal arrives. Protocol and training logic live in the
 * session; this file parses flags and wires the parts together.
 */
#include "cli_run.h"

#include "blas.h"
#include "channel.h"
#include "dataset.h"
#include "token.h"
#include "errors.h"
#include "fsutil.h"
#include "log.h"
#include "model_data.h"
#include "model_desc.h"
#include "partition.h"
#include "session.h"
#include "transport.h"
#include "cliopt.h"

#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <sodium.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct run_opts {
	const char *server, *id, *data, *data_path, *partition, *state_dir, *dtype, *log_level;
	const char *init, *model_file;
	const char *key, *server_key, *enrol_token, *enrol_token_file;
	int num_clients, client_index, limit, threads, max_attempts, debug_tensors, insecure;
	double holdout, backoff_min, backoff_max, handshake_timeout;
	long long max_frame, max_output;
	unsigned long long seed;
};

static void run_usage(FILE *f)
{
	fprintf(f,
		"usage: fedloha-client run --server HOST:PORT --id ID [options]\n"
		"Joins a federated session run by fedloha-server: trains each round on the local\n"
		"data and sends back the transmitted tensors. Exits 0 when the server is done.\n\n"
		"  --server HOST:PORT   coordinator address (default 127.0.0.1:7420)\n"
		"  --id ID              client id, 1..64 of [A-Za-z0-9._-] (default client-INDEX);\n"
		"                       must equal the NAME of our key in the server's allow-list\n"
		"security (docs/SECURITY.md):\n"
		"  --key FILE           this client's secret key (fedloha-client keygen --out FILE)\n"
		"  --server-key KEY     the coordinator's public key: fl1:... or a file holding it\n"
		"  --enrol-token-file FILE  one-time enrolment token (a 0600 file written by\n"
		"                       'fedloha-server run --enrol ID'); default: the systemd\n"
		"                       credential " FL_TOKEN_CREDENTIAL
		" when $CREDENTIALS_DIRECTORY is set\n"
		"  --handshake-timeout SEC (10)\n"
		"  --insecure           plaintext, no authentication (tests; the server needs it too)\n"
		"data (a partition of a data set):\n"
		"  --data NAME          fashion-mnist (default), mnist, cifar10 or safetensors\n"
		"                       (a folder of train/test.safetensors, docs/DATA.md)\n"
		"  --data-path DIR      folder of the data set files (default: Debian's)\n"
		"  --partition SPEC     iid (default), dirichlet:ALPHA or shards:K\n"
		"  --num-clients N      clients in the partition\n"
		"  --client-index I     this client's part, 0..N-1\n"
		"  --seed S             partition seed (default 0)\n"
		"  --limit N            at most N samples for this client\n"
		"  --holdout F          fraction held out for federated evaluation (default 0.1)\n"
		"  without --num-clients, all of --data-path's training files are this client's\n"
		"state and wire:\n"
		"  --state-dir DIR      pFedPara local tensors and a fetched loha base live here\n"
		"  --init FILE          loha: the frozen base, a PyTorch state dict (safetensors;\n"
		"                       the server's --init or --base file): used when its SHA-256\n"
		"                       is the server's, so nothing is fetched. Only the loha base\n"
		"                       comes from it: the coordinator's global weights replace\n"
		"                       the client's own every round. --base FILE is the same\n"
		"  --model-file FILE    the only model this client trains (fedloha-model/1 JSON,\n"
		"                       docs/MODELS.md): a coordinator sending another is refused,\n"
		"                       and the data is checked against it before connecting.\n"
		"                       Without it, the client trains the model the coordinator\n"
		"                       describes in its Welcome\n"
		"  --dtype f32|f16|bf16|int8   preferred tensor encoding (default: the\n"
		"                       coordinator's --dtype)\n"
		"  --max-frame BYTES    largest frame accepted (default 4 MiB)\n"
		"  --max-output BYTES   bytes queued for the server at once before the\n"
		"                       connection is cut and retried (default 256 MiB)\n"
		"  --backoff-min SEC (0.25)  --backoff-max SEC (30)   reconnect delays\n"
		"  --max-attempts N     give up after N failed connects in a row (0 = never)\n"
		"  --threads T          BLAS threads for training (default 1)\n"
		"  --log-level error|warn|info|debug (debug also logs every tensor name on the wire)\n"
		"exit status: 0 done, 1 failure (also --max-attempts reached), 2 bad flags,\n"
		"3 refused by the server in an authenticated message (our key not admitted, an\n"
		"FL_EAUTH Error inside the channel) or its model cannot be trained here (not\n"
		"retried), 128+N after signal N. Failures before the server proved its key (a\n"
		"wrong server key, a bad signature, a plaintext Error, garbage, timeouts) are\n"
		"unauthenticated: logged as errors and retried with backoff, never exit 3\n");
}

static int rnum(const char *k, const char *v, double lo, double hi, double *out)
{
	return fl_cliopt_key_double("fedloha-client", k, v, lo, hi, out);
}

static int rint_(const char *k, const char *v, double lo, double hi, int *out)
{
	return fl_cliopt_key_int("fedloha-client", k, v, (long)lo, (long)hi, out);
}

static int split_hostport(const char *s, char *host, size_t cap, int *port)
{
	return fl_cliopt_hostport("--server", s, 1, host, cap, port) ? FL_EINVAL : FL_OK;
}

/* The options whose value is kept as given. */
static const struct fl_cliopt_string string_options[] = {
	{"server", offsetof(struct run_opts, server)},
	{"id", offsetof(struct run_opts, id)},
	{"data", offsetof(struct run_opts, data)},
	{"data-path", offsetof(struct run_opts, data_path)},
	{"partition", offsetof(struct run_opts, partition)},
	{"state-dir", offsetof(struct run_opts, state_dir)},
	{"init", offsetof(struct run_opts, init)},
	{"base", offsetof(struct run_opts, init)},
	{"model-file", offsetof(struct run_opts, model_file)},
	{"dtype", offsetof(struct run_opts, dtype)},
	{"log-level", offsetof(struct run_opts, log_level)},
	{"key", offsetof(struct run_opts, key)},
	{"server-key", offsetof(struct run_opts, server_key)},
	{"enrol-token", offsetof(struct run_opts, enrol_token)},
	{"enrol-token-file", offsetof(struct run_opts, enrol_token_file)},
};

static const char **string_option(struct run_opts *o, const char *name)
{
	return fl_cliopt_string_slot(string_options,
				     sizeof(string_options) / sizeof(string_options[0]), o, name);
}

/* fedloha-client run's flags; every one but --help is handled by name. */
static const struct option run_longopts[] = {{"server", 1, 0, 0},
					     {"id", 1, 0, 0},
					     {"data", 1, 0, 0},
					     {"data-path", 1, 0, 0},
					     {"partition", 1, 0, 0},
					     {"num-clients", 1, 0, 0},
					     {"client-index", 1, 0, 0},
					     {"seed", 1, 0, 0},
					     {"limit", 1, 0, 0},
					     {"holdout", 1, 0, 0},
					     {"state-dir", 1, 0, 0},
					     {"init", 1, 0, 0},
					     {"base", 1, 0, 0},
					     {"model-file", 1, 0, 0},
					     {"dtype", 1, 0, 0},
					     {"threads", 1, 0, 0},
					     {"log-level", 1, 0, 0},
					     {"max-frame", 1, 0, 0},
					     {"max-output", 1, 0, 0},
					     {"backoff-min", 1, 0, 0},
					     {"backoff-max", 1, 0, 0},
					     {"max-attempts", 1, 0, 0},
					     {"debug-tensors", 0, 0, 0},
					     {"help", 0, 0, 'h'},
					     {"key", 1, 0, 0},
					     {"server-key", 1, 0, 0},
					     {"enrol-token", 1, 0, 0},
					     {"enrol-token-file", 1, 0, 0},
					     {"insecure", 0, 0, 0},
					     {"handshake-timeout", 1, 0, 0},
					     {0, 0, 0, 0}};

/* The numeric options, checked against their ranges: 0 when k was set,
 * nonzero after printing why not. */
static int set_number(struct run_opts *o, const char *k, const char *v)
{
	double d;
	int bad;
	if (!strcmp(k, "handshake-timeout"))
		return rnum(k, v, 0.05, 3600, &o->handshake_timeout);
	else if (!strcmp(k, "num-clients"))
		return rint_(k, v, 1, FL_PARTITION_CLIENTS_MAX, &o->num_clients);
	else if (!strcmp(k, "client-index"))
		return rint_(k, v, 0, FL_PARTITION_CLIENTS_MAX - 1, &o->client_index);
	else if (!strcmp(k, "limit"))
		return rint_(k, v, 1, 1e9, &o->limit);
	else if (!strcmp(k, "threads"))
		return rint_(k, v, 1, 256, &o->threads);
	else if (!strcmp(k, "max-attempts"))
		return rint_(k, v, 0, 1e9, &o->max_attempts);
	else if (!strcmp(k, "holdout"))
		return rnum(k, v, 0, 0.99, &o->holdout);
	else if (!strcmp(k, "backoff-min"))
		return rnum(k, v, 0.001, 3600, &o->backoff_min);
	else if (!strcmp(k, "backoff-max"))
		return rnum(k, v, 0.001, 3600, &o->backoff_max);
	else if (!strcmp(k, "max-frame")) {
		bad = rnum(k, v, FL_WIRE_MAX_FRAME_OPTION_MIN, 1 << 30, &d);
		o->max_frame = (long long)d;
		return bad;
	} else if (!strcmp(k, "max-output")) {
		bad = rnum(k, v, 4096, 1e12, &d);
		o->max_output = (long long)d;
		return bad;
	} else if (!strcmp(k, "seed")) {
		bad = rnum(k, v, 0, 9007199254740992.0, &d);
		o->seed = (unsigned long long)d;
		return bad;
	}
	return 0;
}

/* FL_OK; 1 when --help was printed; FL_EINVAL for a bad flag (told on
 * stderr). */
static int parse_args(int argc, char **argv, struct run_opts *o)
{
	int ch, idx, bad = 0;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "h", run_longopts, &idx)) != -1) {
		if (ch == 'h') {
			run_usage(stdout);
			return 1;
		}
		if (ch != 0) {
			bad = 1;
			continue;
		}
		const char *k = run_longopts[idx].name, *v = optarg;
		const char **str = string_option(o, k);
		if (str)
			*str = v;
		else if (!strcmp(k, "debug-tensors"))
			o->debug_tensors = 1;
		else if (!strcmp(k, "insecure"))
			o->insecure = 1;
		else
			bad |= set_number(o, k, v);
	}
	if (optind < argc) {
		fprintf(stderr, "fedloha-client run: unexpected argument '%s'\n", argv[optind]);
		bad = 1;
	}
	if (!bad && o->num_clients && o->client_index >= o->num_clients) {
		fprintf(stderr,
			"fedloha-client run: --client-index %d is not below --num-clients %d\n",
			o->client_index, o->num_clients);
		bad = 1;
	}
	if (!bad && o->backoff_max < o->backoff_min)
		o->backoff_max = o->backoff_min;
	return bad ? FL_EINVAL : FL_OK;
}

/* Our key and the pinned server key; a clear message when one is missing. */
static int load_keys(const struct run_opts *o, struct fl_identity **id,
		     uint8_t spk[FL_PUBKEY_BYTES])
{
	if (o->insecure) {
		fl_log_warn("--insecure: traffic is neither encrypted nor authenticated");
		return FL_OK;
	}
	if (!o->key)
		return fl_error_set(FL_EINVAL,
				    "no --key: make this client's key with 'fedloha-client "
				    "keygen --out FILE' and send the printed fl1:... line to "
				    "the coordinator's operator (or run both ends with "
				    "--insecure on a trusted network)");
	if (!o->server_key)
		return fl_error_set(FL_EINVAL,
				    "no --server-key: pass the coordinator's public key "
				    "(fl1:..., printed by 'fedloha-server keygen' or "
				    "'fedloha-server pubkey --key FILE'), or a file holding it");
	int err = fl_pubkey_parse_arg(o->server_key, spk);
	if (err)
		return fl_error_set(err, "--server-key: %s", fl_error_msg());
	return fl_identity_load(o->key, id);
}

/* The enrolment token: --enrol-token-file, else the systemd credential;
 * token[0] = 0 when there is none. A token on the command line is refused:
 * every local user could read it in /proc. */
static int load_enrol_token(const struct run_opts *o, char token[FL_TOKEN_STRING_BYTES])
{
	token[0] = '\0';
	if (o->enrol_token)
		return fl_error_set(FL_EINVAL,
				    "--enrol-token is refused: a token on the command line is "
				    "visible to every local user; use --enrol-token-file FILE "
				    "(mode 0600) or the systemd credential " FL_TOKEN_CREDENTIAL);
	if (o->insecure)
		return FL_OK;
	char cred[4096];
	const char *path = o->enrol_token_file;
	const char *dir = getenv("CREDENTIALS_DIRECTORY");
	if (!path && dir && *dir) {
		snprintf(cred, sizeof(cred), "%s/%s", dir, FL_TOKEN_CREDENTIAL);
		if (fl_path_exists(cred))
			path = cred;
	}
	if (!path)
		return FL_OK;
	int err = fl_token_load(path, token);
	if (err)
		return fl_error_set(err, "enrolment token: %s", fl_error_msg());
	return FL_OK;
}

/* This client's samples: a partition of the data set, or all of it. */
static int load_data(const struct run_opts *o, struct fl_dataset **ds, struct fl_partition **part,
		     int *which)
{
	int err = fl_dataset_load(o->data, o->data_path, 1, ds);
	if (!err)
		err = fl_dataset_compute_norm(*ds); /* same statistics as the server's evaluation */
	if (err)
		return err;
	struct fl_partition_config pc;
	fl_partition_config_init(&pc);
	pc.clients = o->num_clients ? o->num_clients : 1;
	pc.seed = o->seed;
	pc.holdout = o->holdout;
	pc.max_per_client = o->limit;
	if (o->partition && (err = fl_partition_parse(o->partition, &pc)))
		return err;
	*which = o->num_clients ? o->client_index : 0;
	return fl_partition_make(*ds, &pc, part);
}

/* The values parse_args keeps as text: --server, --log-level, --dtype.
 * FL_OK, or FL_EINVAL with a message. */
static int resolve_args(const struct run_opts *o, char *host, size_t cap, int *port,
			enum fl_log_level *lvl, enum fl_wire_dtype *dtype)
{
	if (split_hostport(o->server, host, cap, port)) {
		fprintf(stderr, "fedloha-client run: --server: expected HOST:PORT, got '%s'\n",
			o->server);
		return FL_EINVAL;
	}
	if (o->log_level && fl_log_parse_level(o->log_level, lvl)) {
		fprintf(stderr, "fedloha-client run: --log-level: %s\n", fl_error_msg());
		return FL_EINVAL;
	}
	if (o->dtype && fl_wire_dtype_parse(o->dtype, dtype)) {
		fprintf(stderr, "fedloha-client run: --dtype: %s\n", fl_error_msg());
		return FL_EINVAL;
	}
	return FL_OK;
}

/* Everything cli_run_main builds and frees. */
struct run {
	char host[256];
	int port, which, looped;
	enum fl_log_level lvl;
	enum fl_wire_dtype dtype;
	struct fl_identity *ident;
	uint8_t spk[FL_PUBKEY_BYTES];
	char token[FL_TOKEN_STRING_BYTES]; /* "" without enrolment */
	struct fl_dataset *ds;
	struct fl_partition *part;
	struct fl_model_desc *expect; /* --model-file */
	struct cli_transport *t;
	struct cli_session *s;
	uv_loop_t loop;
};

static void transport_config(const struct run_opts *o, struct run *r,
			     struct cli_transport_config *tc)
{
	cli_transport_config_default(tc);
	tc->host = r->host;
	tc->port = r->port;
	tc->max_frame_bytes = (uint32_t)o->max_frame;
	if (o->max_output)
		tc->max_output_bytes = (size_t)o->max_output;
	tc->backoff_min_ms = (uint32_t)(o->backoff_min * 1000 + 0.5);
	tc->backoff_max_ms = (uint32_t)(o->backoff_max * 1000 + 0.5);
	tc->max_attempts = o->max_attempts;
	tc->debug_tensors = o->debug_tensors || r->lvl == FL_LOG_DEBUG;
	tc->seed = o->seed ^ ((uint64_t)r->which * FL_RNG_GOLDEN);
	tc->insecure = o->insecure;
	tc->identity = r->ident;
	tc->server_pk = o->insecure ? NULL : r->spk;
	tc->enrol_token = r->token[0] ? r->token : NULL;
	tc->handshake_timeout_ms = (uint32_t)(o->handshake_timeout * 1000);
}

static void session_config(const struct run_opts *o, const struct run *r,
			   struct cli_session_config *sc)
{
	const struct fl_partition_client *pcl = &r->part->client[r->which];
	cli_session_config_default(sc);
	sc->client_id = o->id;
	sc->data = r->ds;
	sc->train_idx = pcl->train;
	sc->n_train = pcl->n_train;
	sc->eval_idx = pcl->holdout;
	sc->n_eval = pcl->n_holdout;
	sc->preferred_dtype = r->dtype;
	sc->dtype_from_server = o->dtype == NULL;
	sc->state_dir = o->state_dir;
	sc->base_path = o->init;
	sc->max_frame_bytes = (uint32_t)o->max_frame;
	sc->threads = o->threads;
	sc->expect_model = r->expect;
}

/* The data, the transport and the session, started on r->loop. */
static int start(const struct run_opts *o, struct run *r)
{
	int err = load_data(o, &r->ds, &r->part, &r->which);
	if (!err && o->model_file && !(err = fl_model_desc_load(o->model_file, &r->expect)))
		err = fl_model_desc_check_data(r->expect, r->ds);
	if (!err && o->state_dir)
		err = fl_mkdir_p(o->state_dir, 1);
	if (err)
		return err;
	const struct fl_partition_client *pcl = &r->part->client[r->which];
	fl_log_info("client %s: %d training samples, %d held out", o->id, pcl->n_train,
		    pcl->n_holdout);
	struct cli_transport_config tc;
	transport_config(o, r, &tc);
	if (r->ident) {
		char pub[FL_PUBKEY_STRING_BYTES];
		fl_identity_public_string(r->ident, pub);
		fl_log_info("client %s: key %s", o->id, pub);
	}
	uv_loop_init(&r->loop);
	r->looped = 1;
	if ((err = cli_transport_new(&r->loop, &tc, &r->t)))
		return err;
	struct cli_session_config sc;
	session_config(o, r, &sc);
	struct cli_session_io io;
	cli_transport_session_io(r->t, &io);
	if ((err = cli_session_new(&sc, &io, &r->s)))
		return err;
	return cli_transport_start(r->t, r->s);
}

/* "client ID: HOW after N training rounds (bytes up U down D)". */
static void print_rounds(const struct run_opts *o, const struct run *r, const char *how,
			 uint64_t up, uint64_t down)
{
	printf("client %s: %s after %llu training rounds (bytes up %llu down %llu)\n", o->id, how,
	       (unsigned long long)cli_session_rounds_done(r->s), (unsigned long long)up,
	       (unsigned long long)down);
}

/* How the session ended, as lines and the exit code. */
static int report(const struct run_opts *o, const struct run *r)
{
	uint64_t up = 0, down = 0;
	int rc;
	cli_session_bytes(r->s, &up, &down);
	struct cli_transport_stats ts;
	cli_transport_stats(r->t, &ts);
	switch (cli_transport_result(r->t)) {
	case CLI_TRANSPORT_FINISHED:
		print_rounds(o, r, "finished", up, down);
		rc = 0;
		break;
	case CLI_TRANSPORT_SIGNALLED:
		print_rounds(o, r, "stopped", up, down);
		rc = cli_transport_signal(r->t) ? 128 + cli_transport_signal(r->t) : 0;
		break;
	case CLI_TRANSPORT_REFUSED:
		fprintf(stderr, "fedloha-client: %s\n", cli_transport_error(r->t));
		print_rounds(o, r, "refused", up, down);
		rc = 3;
		break;
	default: print_rounds(o, r, "gave up", up, down); rc = 1;
	}
	printf("client %s: socket bytes in %llu out %llu (frames down %llu up %llu; "
	       "handshakes in %llu out %llu; channels %llu)\n",
	       o->id, (unsigned long long)ts.sock_in, (unsigned long long)ts.sock_out,
	       (unsigned long long)down, (unsigned long long)up, (unsigned long long)ts.hs_in,
	       (unsigned long long)ts.hs_out, (unsigned long long)ts.handshakes);
	fflush(stdout);
	return rc;
}

int cli_run_main(int argc, char **argv)
{
	struct run_opts o = {.server = "127.0.0.1:7420",
			     .holdout = 0.1,
			     .threads = 1,
			     .backoff_min = 0.25,
			     .backoff_max = 30,
			     .handshake_timeout = FL_CHANNEL_TIMEOUT_DEFAULT_MS / 1000.0,
			     .max_frame = FL_WIRE_MAX_FRAME_DEFAULT};
	int rc = parse_args(argc, argv, &o);
	if (rc > 0)
		return 0;
	struct run r = {0};
	char idbuf[CLI_CLIENT_ID_MAX + 1];
	r.lvl = FL_LOG_INFO;
	r.dtype = FL_WIRE_F32;
	if (!rc)
		rc = resolve_args(&o, r.host, sizeof(r.host), &r.port, &r.lvl, &r.dtype);
	if (rc) {
		fprintf(stderr, "fedloha-client run: try --help\n");
		return 2;
	}
	if (!o.id) {
		snprintf(idbuf, sizeof(idbuf), "client-%d", o.client_index);
		o.id = idbuf;
	}
	fl_log_set_level(r.lvl);
	fl_blas_set_threads(o.threads);
	signal(SIGPIPE, SIG_IGN);
	if (load_keys(&o, &r.ident, r.spk) || load_enrol_token(&o, r.token)) {
		fprintf(stderr, "fedloha-client run: %s\n", fl_error_msg());
		fl_identity_free(r.ident);
		return 2;
	}
	int err = start(&o, &r);
	sodium_memzero(r.token, sizeof(r.token)); /* the transport has its copy */
	rc = 1;
	if (!err) {
		uv_run(&r.loop, UV_RUN_DEFAULT);
		rc = report(&o, &r);
	}
	if (err)
		fprintf(stderr, "fedloha-client: %s\n", fl_error_msg());
	if (r.looped)
		uv_run(&r.loop, UV_RUN_DEFAULT); /* whatever is still closing */
	cli_session_free(r.s);
	cli_transport_free(r.t);
	if (r.looped && uv_loop_close(&r.loop) != 0)
		fl_log_error("event loop still busy at exit");
	fl_partition_free(r.part);
	fl_dataset_free(r.ds);
	fl_model_desc_free(r.expect);
	fl_identity_free(r.ident);
	return rc;
}
