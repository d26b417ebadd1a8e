/* server_cli.c - fedloha-server's options (server_cli.h): the long flags
 * and the JSON config file's keys go through one setter with checked
 * ranges; the file is read first so that flags override it. */
#include "server_cli.h"

#include "channel.h"
#include "cliopt.h"
#include "dataset.h"
#include "errors.h"
#include "transport.h"
#include "wire.h"

#include <getopt.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct option longopts[] = {{"listen", 1, 0, 0},
					 {"model", 1, 0, 0},
					 {"model-file", 1, 0, 0},
					 {"param", 1, 0, 0},
					 {"gamma", 1, 0, 0},
					 {"rank", 1, 0, 0},
					 {"alpha", 1, 0, 0},
					 {"config", 1, 0, 0},
					 {"base", 1, 0, 0},
					 {"rounds", 1, 0, 0},
					 {"min-clients", 1, 0, 0},
					 {"fraction", 1, 0, 0},
					 {"min-fit", 1, 0, 0},
					 {"min-report", 1, 0, 0},
					 {"max-retries", 1, 0, 0},
					 {"round-timeout", 1, 0, 0},
					 {"epochs", 1, 0, 0},
					 {"batch", 1, 0, 0},
					 {"lr", 1, 0, 0},
					 {"lr-decay", 1, 0, 0},
					 {"momentum", 1, 0, 0},
					 {"weight-decay", 1, 0, 0},
					 {"optimizer", 1, 0, 0},
					 {"strategy", 1, 0, 0},
					 {"server-lr", 1, 0, 0},
					 {"prox-mu", 1, 0, 0},
					 {"dtype", 1, 0, 0},
					 {"require-dtype", 1, 0, 0},
					 {"eval-every", 1, 0, 0},
					 {"checkpoint", 1, 0, 0},
					 {"out", 1, 0, 0},
					 {"seed", 1, 0, 0},
					 {"log-level", 1, 0, 0},
					 {"data", 1, 0, 0},
					 {"eval-data", 1, 0, 0},
					 {"data-path", 1, 0, 0},
					 {"eval-limit", 1, 0, 0},
					 {"heartbeat", 1, 0, 0},
					 {"idle-timeout", 1, 0, 0},
					 {"write-timeout", 1, 0, 0},
					 {"max-frame", 1, 0, 0},
					 {"chunk", 1, 0, 0},
					 {"max-output", 1, 0, 0},
					 {"max-conns", 1, 0, 0},
					 {"upload-slots", 1, 0, 0},
					 {"upload-memory", 1, 0, 0},
					 {"reserved-conns", 1, 0, 0},
					 {"max-handshakes", 1, 0, 0},
					 {"addr-conns", 1, 0, 0},
					 {"addr-rate", 1, 0, 0},
					 {"addr-burst", 1, 0, 0},
					 {"threads", 1, 0, 0},
					 {"debug-tensors", 0, 0, 0},
					 {"config-file", 1, 0, 0},
					 {"key", 1, 0, 0},
					 {"allow", 1, 0, 0},
					 {"enrol", 1, 0, 0},
					 {"enrol-minutes", 1, 0, 0},
					 {"enrol-dir", 1, 0, 0},
					 {"insecure", 0, 0, 0},
					 {"handshake-timeout", 1, 0, 0},
					 {"server-beta1", 1, 0, 0},
					 {"server-beta2", 1, 0, 0},
					 {"server-tau", 1, 0, 0},
					 {"init", 1, 0, 0},
					 {"upstream", 1, 0, 0},
					 {"upstream-key", 1, 0, 0},
					 {"upstream-id", 1, 0, 0},
					 {"tier-ids", 1, 0, 0},
					 {"upstream-rate", 1, 0, 0},
					 {"upstream-max-attempts", 1, 0, 0},
					 {"help", 0, 0, 'h'},
					 {"version", 0, 0, 'V'},
					 {0, 0, 0, 0}};

static int num(const char *k, const char *v, double lo, double hi, double *out)
{
	return fl_cliopt_key_double("fedloha-server", k, v, lo, hi, out);
}

static int lnum(const char *k, const char *v, double lo, double hi, long long *out)
{
	return fl_cliopt_key_llong("fedloha-server", k, v, (long long)lo, (long long)hi, out);
}

static int inum(const char *k, const char *v, double lo, double hi, int *out)
{
	return fl_cliopt_key_int("fedloha-server", k, v, (long)lo, (long)hi, out);
}

/* The options whose value is kept as given. */
static const struct fl_cliopt_string string_options[] = {
	{"listen", offsetof(struct srv_opts, listen)},
	{"enrol-dir", offsetof(struct srv_opts, enrol_dir)},
	{"model", offsetof(struct srv_opts, model)},
	{"model-file", offsetof(struct srv_opts, model_file)},
	{"param", offsetof(struct srv_opts, param)},
	{"config", offsetof(struct srv_opts, config)},
	{"base", offsetof(struct srv_opts, base)},
	{"init", offsetof(struct srv_opts, init)},
	{"checkpoint", offsetof(struct srv_opts, checkpoint)},
	{"out", offsetof(struct srv_opts, out)},
	{"strategy", offsetof(struct srv_opts, strategy)},
	{"optimizer", offsetof(struct srv_opts, optimizer)},
	{"data", offsetof(struct srv_opts, data)},
	{"eval-data", offsetof(struct srv_opts, eval_data)},
	{"data-path", offsetof(struct srv_opts, data_path)},
	{"log-level", offsetof(struct srv_opts, log_level)},
	{"dtype", offsetof(struct srv_opts, dtype)},
	{"require-dtype", offsetof(struct srv_opts, require_dtype)},
	{"key", offsetof(struct srv_opts, key)},
	{"allow", offsetof(struct srv_opts, allow)},
	{"upstream", offsetof(struct srv_opts, upstream)},
	{"upstream-key", offsetof(struct srv_opts, upstream_key)},
	{"upstream-id", offsetof(struct srv_opts, upstream_id)},
	{"tier-ids", offsetof(struct srv_opts, tier_ids)},
};

static const char **string_option(struct srv_opts *o, const char *name)
{
	return fl_cliopt_string_slot(string_options,
				     sizeof(string_options) / sizeof(string_options[0]), o, name);
}

/* 1 for a word that once switched enrolment on or off ("enrol": false). */
static int switch_word(const char *id)
{
	static const char *const words[] = {"0", "1", "true", "false", "yes", "no", "on", "off"};
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (!strcasecmp(id, words[i]))
			return 1;
	return 0;
}

/* --enrol's comma-separated client ids, appended to o->enrol_ids. */
static int add_enrol_ids(struct srv_opts *o, const char *v)
{
	for (const char *p = v;;) {
		size_t n = strcspn(p, ",");
		char id[FL_WIRE_CLIENT_ID_MAX + 1];
		snprintf(id, sizeof(id), "%.*s", (int)n, p);
		if (n <= FL_WIRE_CLIENT_ID_MAX && switch_word(id)) {
			fprintf(stderr,
				"fedloha-server: --enrol: '%s' is not taken as a client id: enrol "
				"takes the ids to enrol (\"enrol\": \"site-1,site-2\"); to turn "
				"enrolment off, remove the key\n",
				id);
			return FL_EINVAL;
		}
		if (n > FL_WIRE_CLIENT_ID_MAX || !fl_wire_client_id_valid(id)) {
			fprintf(stderr,
				"fedloha-server: --enrol: '%.*s' is not a client id (1..%d of "
				"[A-Za-z0-9._-]; the ids to enrol, comma-separated)\n",
				(int)(n > 80 ? 80 : n), p, FL_WIRE_CLIENT_ID_MAX);
			return FL_EINVAL;
		}
		for (int i = 0; i < o->n_enrol; i++)
			if (!strcmp(o->enrol_ids[i], id)) {
				fprintf(stderr, "fedloha-server: --enrol: '%s' given twice\n", id);
				return FL_EINVAL;
			}
		if (o->n_enrol == SRV_OPTS_ENROL_MAX) {
			fprintf(stderr, "fedloha-server: --enrol: more than %d client ids\n",
				SRV_OPTS_ENROL_MAX);
			return FL_EINVAL;
		}
		memcpy(o->enrol_ids[o->n_enrol++], id, sizeof(id));
		if (!p[n])
			return FL_OK;
		p += n + 1;
	}
}

/* One option by its long name; v is owned elsewhere and outlives o. */
static int set_opt(struct srv_opts *o, const char *k, const char *v)
{
	int seed_ok;
	double d;
	const char **str = string_option(o, k);
	if (str) {
		*str = v;
		return FL_OK;
	}
	if (!strcmp(k, "insecure")) {
		o->insecure = strcmp(v, "0") != 0 && strcmp(v, "false") != 0;
		return FL_OK;
	}
	if (!strcmp(k, "enrol"))
		return add_enrol_ids(o, v);
	int shared = srv_train_opts_set(&o->train, k, v);
	if (shared != FL_ENOTFOUND) {
		if (shared)
			fprintf(stderr, "fedloha-server: %s\n", fl_error_msg());
		return shared;
	}
	if (!strcmp(k, "enrol-minutes"))
		return inum(k, v, 1, 1e6, &o->enrol_minutes);
	if (!strcmp(k, "handshake-timeout"))
		return num(k, v, 0.05, 3600, &o->handshake_timeout);
	if (!strcmp(k, "addr-rate"))
		return num(k, v, 0, 1e6, &o->addr_rate);
	if (!strcmp(k, "addr-burst"))
		return num(k, v, 1, 1e6, &o->addr_burst);
	if (!strcmp(k, "gamma")) {
		o->has_gamma = 1;
		return num(k, v, 0, 1, &o->gamma);
	}
	if (!strcmp(k, "alpha"))
		return num(k, v, 1e-6, 1e6, &o->alpha);
	if (!strcmp(k, "fraction"))
		return num(k, v, 0, 1, &o->train.fraction);
	if (!strcmp(k, "round-timeout"))
		return num(k, v, 0.001, 86400, &o->round_timeout);
	if (!strcmp(k, "heartbeat"))
		return num(k, v, 0, 86400, &o->heartbeat);
	if (!strcmp(k, "idle-timeout"))
		return num(k, v, 0, 86400, &o->idle_timeout);
	if (!strcmp(k, "write-timeout"))
		return num(k, v, 0, 86400, &o->write_timeout);
	int counted = srv_opts_set_count(o, k, v);
	if (counted != FL_ENOTFOUND)
		return counted;
	if (!strcmp(k, "max-frame"))
		return lnum(k, v, FL_WIRE_MAX_FRAME_OPTION_MIN, 1 << 30, &o->max_frame);
	if (!strcmp(k, "chunk"))
		return lnum(k, v, 64, 1 << 30, &o->chunk);
	if (!strcmp(k, "max-output"))
		return lnum(k, v, 4096, 1e12, &o->max_output);
	if (!strcmp(k, "debug-tensors")) {
		o->debug_tensors = strcmp(v, "0") != 0 && strcmp(v, "false") != 0;
		return 0;
	}
	if (!strcmp(k, "seed")) {
		seed_ok = num(k, v, 0, 9007199254740992.0, &d);
		o->train.seed = (uint64_t)d;
		return seed_ok;
	}
	fprintf(stderr, "fedloha-server: unknown option '%s'\n", k);
	return FL_EINVAL;
}

/* Keys of a JSON config file become option values (kept alive in *keep). */
static int load_config_file(struct srv_opts *o, const char *path, json_t **keep)
{
	json_error_t je;
	char jt[sizeof(je.text)]; /* je.text without control bytes */
	json_t *root = json_load_file(path, 0, &je);
	if (!root) {
		fprintf(stderr, "fedloha-server: %s:%d:%d: %s\n", path, je.line, je.column,
			fl_error_safe_str(je.text, jt, sizeof(jt)));
		return FL_EINVAL;
	}
	*keep = root;
	if (!json_is_object(root)) {
		fprintf(stderr, "fedloha-server: %s: expected a JSON object\n", path);
		return FL_EINVAL;
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
		if (!strcmp(k, "enrol") && json_is_boolean(v)) {
			fprintf(stderr,
				"fedloha-server: %s: key 'enrol' takes the client ids to enrol "
				"(\"enrol\": \"site-1,site-2\"), not a boolean\n",
				path);
			bad = 1;
			continue;
		}
		if (json_is_string(v)) {
			s = json_string_value(v);
		} else if (json_is_integer(v)) {
			snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(v));
		} else if (json_is_real(v)) {
			snprintf(buf, sizeof(buf), "%.17g", json_real_value(v));
		} else if (json_is_boolean(v)) {
			snprintf(buf, sizeof(buf), "%d", json_is_true(v));
		} else {
			fprintf(stderr,
				"fedloha-server: %s: key '%s': expected a string, number or "
				"boolean\n",
				path, k);
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
	return bad ? FL_EINVAL : FL_OK;
}

char *srv_opts_config_json(const struct srv_opts *o)
{
	json_t *root;
	if (o->config) {
		json_error_t je;
		char jt[sizeof(je.text)]; /* je.text without control bytes */
		if (!(root = json_load_file(o->config, 0, &je))) {
			fl_error_set(FL_EFORMAT, "%s:%d:%d: %s", o->config, je.line, je.column,
				     fl_error_safe_str(je.text, jt, sizeof(jt)));
			return NULL;
		}
		if (o->param)
			json_object_set_new(root, "fedloha_parameterization",
					    json_string(o->param));
	} else {
		const char *p = o->param ? o->param : "fedpara";
		root = json_object();
		json_object_set_new(root, "peft_type", json_string("LOHA"));
		json_object_set_new(root, "fedloha_parameterization", json_string(p));
		json_object_set_new(root, "use_effective_conv2d",
				    json_boolean(strcmp(p, "loha") != 0));
		if (o->rank > 0) {
			json_object_set_new(root, "r", json_integer(o->rank));
			json_object_set_new(root, "alpha",
					    json_real(o->alpha > 0 ? o->alpha : o->rank));
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

int srv_opts_data_dims(const char *name, const char *path, int *c, int *h, int *w, int *classes)
{
	*classes = 10;
	if (name && !strcmp(name, "safetensors")) {
		struct fl_dataset *ds;
		int err = fl_dataset_load(name, path, 1, &ds);
		if (err)
			return err;
		*c = ds->c, *h = ds->h, *w = ds->w, *classes = ds->classes;
		fl_dataset_free(ds);
	} else if (name && !strcmp(name, "cifar10")) {
		*c = 3, *h = 32, *w = 32;
	} else {
		*c = 1, *h = 28, *w = 28;
	}
	return FL_OK;
}

/* Every option's default. */
static void opts_default(struct srv_opts *o)
{
	*o = (struct srv_opts){.listen = "127.0.0.1:7420",
			       .model = "2nn",
			       .strategy = "fedavg",
			       .optimizer = "sgd",
			       .gamma = 0.1,
			       .round_timeout = 60,
			       .train = {.rounds = 3,
					 .fraction = 1,
					 .min_report = 1,
					 .epochs = 1,
					 .batch = 64,
					 .lr = 0.1f,
					 .lr_decay = 1,
					 .server_eta = -1,
					 .server_beta1 = -1,
					 .server_beta2 = -1,
					 .server_tau = -1,
					 .dtype = FL_WIRE_F32},
			       .heartbeat = 10,
			       .idle_timeout = 60,
			       .write_timeout = -1,
			       .min_clients = 1,
			       .min_fit = 1,
			       .max_retries = 3,
			       .threads = 1,
			       .max_conns = SRV_TRANSPORT_CONNS_DEFAULT,
			       .upload_slots = -1,
			       .upload_memory = SRV_UPLOAD_MEMORY_DEFAULT_MIB,
			       .reserved_conns = -1,
			       .max_handshakes = SRV_TRANSPORT_HANDSHAKES_DEFAULT,
			       .addr_conns = SRV_TRANSPORT_ADDR_CONNS_DEFAULT,
			       .addr_rate = SRV_TRANSPORT_ADDR_RATE_DEFAULT,
			       .addr_burst = SRV_TRANSPORT_ADDR_BURST_DEFAULT,
			       .max_frame = FL_WIRE_MAX_FRAME_DEFAULT,
			       .enrol_minutes = 30,
			       .upstream_rate = SRV_RELAY_UP_RATE_DEFAULT * 8 / 1e6,
			       .handshake_timeout = SRV_TRANSPORT_HANDSHAKE_MS_DEFAULT / 1000.0};
}

int srv_opts_parse(int argc, char **argv, struct srv_opts *o)
{
	opts_default(o);
	int bad = 0, ch, idx, cli_enrol = 0;
	for (int i = 1; i < argc; i++) { /* the file first, so flags override it */
		const char *a = argv[i];
		if (!strncmp(a, "--config-file=", 14))
			bad |= load_config_file(o, a + 14, &o->file);
		else if (!strcmp(a, "--config-file") && i + 1 < argc)
			bad |= load_config_file(o, argv[++i], &o->file);
	}
	optind = 1;
	while (!bad && (ch = getopt_long(argc, argv, "h", longopts, &idx)) != -1) {
		if (ch == 'h') {
			srv_opts_usage(stdout);
			return 1;
		}
		if (ch == 'V') {
			printf("fedloha-server " SERVER_VERSION "\n");
			return 1;
		}
		if (ch != 0) {
			bad = 1;
			break;
		}
		const char *name = longopts[idx].name;
		if (!strcmp(name, "config-file"))
			continue;
		if (!strcmp(name, "enrol") && !cli_enrol++)
			o->n_enrol = 0; /* the command line's ids replace the file's */
		bad |= set_opt(o, name, optarg ? optarg : "1");
	}
	if (!bad && optind < argc) {
		fprintf(stderr, "fedloha-server: unexpected argument '%s'\n", argv[optind]);
		bad = 1;
	}
	enum fl_log_level lvl = FL_LOG_INFO;
	if (!bad && o->log_level && fl_log_parse_level(o->log_level, &lvl)) {
		fprintf(stderr, "fedloha-server: --log-level: %s\n", fl_error_msg());
		bad = 1;
	}
	if (!bad && o->reserved_conns >= o->max_conns) {
		fprintf(stderr,
			"fedloha-server: --reserved-conns %d must be below --max-conns %d\n",
			o->reserved_conns, o->max_conns);
		bad = 1;
	}
	if (!bad && o->train.min_report > o->min_clients)
		fl_log_warn("--min-report %d > --min-clients %d: rounds may need more clients",
			    o->train.min_report, o->min_clients);
	if (bad) {
		fprintf(stderr, "fedloha-server: try --help\n");
		return 2;
	}
	o->level = lvl;
	if (lvl == FL_LOG_DEBUG)
		o->debug_tensors = 1;
	return 0;
}

void srv_opts_free(struct srv_opts *o)
{
	json_decref(o->file);
	o->file = NULL;
}
