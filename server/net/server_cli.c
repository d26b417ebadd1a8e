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
					 {"help", 0, 0, 'h'},
					 {"version", 0, 0, 'V'},
					 {0, 0, 0, 0}};

void srv_opts_usage(FILE *f)
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
		"  --enrol ID[,ID...]     issue a one-time enrolment token for each client id\n"
		"                         (repeatable); a client presenting it is added to --allow\n"
		"                         as 'fl1:... ID' (--enrol-minutes N, default 30); each\n"
		"                         token is written to DIR/ID.token (0600) for the client's\n"
		"                         --enrol-token-file  (--enrol-dir DIR, default the\n"
		"                         folder 'enrol-tokens' next to --allow)\n"
		"  --handshake-timeout SEC (3)  --insecure (plaintext, no authentication: tests only)\n"
		"  limits on connections not yet authenticated, checked at accept before any\n"
		"  cryptography (over one: closed at once, counted, one log line per 10 s):\n"
		"  --max-handshakes N (256)  in progress at once\n"
		"  --reserved-conns N (--max-conns / 10)  of --max-conns, kept for clients\n"
		"                         whose channel is up\n"
		"  --addr-conns N (16)    open per source address (IPv6: per /64; 0 = no limit)\n"
		"  --addr-rate R (20)  --addr-burst B (40)   new handshakes per second per\n"
		"                         address, a token bucket (0 = no limit)\n"
		"model:\n"
		"  --model NAME           built-in 2nn, cnn or mlp (default 2nn), sized for --data\n"
		"  --model-file FILE      any model description (fedloha-model/1 JSON,\n"
		"                         docs/MODELS.md) instead of --model; sent to clients\n"
		"  --param KIND           dense, fedpara, pfedpara, lowrank or loha (default fedpara)\n"
		"  --gamma G | --rank R   factor rank rule (default gamma 0.1); --alpha A for loha\n"
		"  --config FILE          PEFT adapter_config.json (overrides gamma/rank)\n"
		"  --init FILE            initial global model: a PyTorch state dict (safetensors),\n"
		"                         strict (every key and shape must match): dense loads\n"
		"                         every weight and bias; loha the frozen base, which is\n"
		"                         then also the base served to clients (unless --base);\n"
		"                         fedpara, pfedpara, lowrank the biases and untargeted\n"
		"                         layers (targeted layers are trained from scratch)\n"
		"  --base FILE            loha: frozen base weights served to clients (applied\n"
		"                         after --init; extra tensors are ignored)\n"
		"  --data NAME            input shape of fashion-mnist (default), mnist, cifar10 or\n"
		"                         safetensors (a folder: --data-path DIR, docs/DATA.md)\n"
		"rounds:\n"
		"  --rounds N (3)  --min-clients N (1)  --fraction F (1)  --min-fit N (1)\n"
		"  --min-report N (1)  --max-retries N (3)  --round-timeout SEC (60)\n"
		"  --heartbeat SEC (10)  --idle-timeout SEC (60)  --seed S (0)\n"
		"  --write-timeout SEC (the idle timeout; 0 = never: a client whose socket\n"
		"                      takes no output for this long is cut)\n"
		"client training:\n"
		"  --epochs N (1)  --batch B (64)  --lr LR (0.1)  --lr-decay D (1)  --momentum M (0)\n"
		"  --weight-decay WD (0)  --optimizer sgd|adam  --prox-mu MU (0)\n"
		"aggregation:\n"
		"  --strategy fedavg|fedavgm|fedadam|fedyogi|fedadagrad|fedprox  --server-lr ETA\n"
		"  --server-beta1 B  --server-beta2 B  --server-tau T   (defaults: the strategy's)\n"
		"wire:\n"
		"  --dtype f32|f16|bf16|int8   encoding for clients without their own --dtype\n"
		"                              (f32; a client's --dtype wins)\n"
		"  --require-dtype DTYPE       force this encoding for every client\n"
		"  --max-frame BYTES (4 MiB)  --chunk BYTES (min(1 MiB, max-frame/2))\n"
		"  --max-output BYTES (64 MiB + twice the model)  --max-conns N (10000)\n"
		"  --upload-slots N  updates received at once (N x the model); more wait\n"
		"  --upload-memory MIB (256)  without --upload-slots: N = MIB / model, 1..1024\n"
		"evaluation and output:\n"
		"  --eval-every N         federated evaluation every N rounds (0 = never)\n"
		"  --eval-data NAME       central evaluation on this test set after each round\n"
		"  --data-path DIR        its folder (and --data's);  --eval-limit N  first N test\n"
		"                         samples\n"
		"  --checkpoint FILE      checkpoint after every round; resume from it if present\n"
		"  --out DIR              export the final model (fl_model_save folder)\n"
		"  --threads T (1)  --log-level error|warn|info|debug  --debug-tensors\n"
		"  --help  --version\n");
}

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
};

static const char **string_option(struct srv_opts *o, const char *name)
{
	return fl_cliopt_string_slot(string_options,
				     sizeof(string_options) / sizeof(string_options[0]), o, name);
}

/* The whole-number options (ranks, rounds, client counts, limits):
 * FL_ENOTFOUND when k is none of them. */
static int set_count(struct srv_opts *o, const char *k, const char *v)
{
	if (!strcmp(k, "rank"))
		return inum(k, v, 1, 1 << 16, &o->rank);
	if (!strcmp(k, "rounds")) {
		int rounds;
		if (inum(k, v, 1, 1e9, &rounds))
			return FL_EINVAL;
		o->train.rounds = (uint64_t)rounds;
		return FL_OK;
	}
	if (!strcmp(k, "min-clients"))
		return inum(k, v, 1, 1e6, &o->min_clients);
	if (!strcmp(k, "min-fit"))
		return inum(k, v, 1, 1e6, &o->min_fit);
	if (!strcmp(k, "min-report"))
		return inum(k, v, 1, 1e6, &o->train.min_report);
	if (!strcmp(k, "max-retries"))
		return inum(k, v, 0, 1e6, &o->max_retries);
	if (!strcmp(k, "epochs"))
		return inum(k, v, 0, 10000, &o->train.epochs);
	if (!strcmp(k, "eval-every"))
		return inum(k, v, 0, 1e9, &o->eval_every);
	if (!strcmp(k, "eval-limit"))
		return inum(k, v, 1, 1e9, &o->eval_limit);
	if (!strcmp(k, "threads"))
		return inum(k, v, 1, 256, &o->threads);
	if (!strcmp(k, "max-conns"))
		return inum(k, v, 1, 1e7, &o->max_conns);
	if (!strcmp(k, "upload-slots"))
		return inum(k, v, 1, 1e5, &o->upload_slots);
	if (!strcmp(k, "upload-memory"))
		return inum(k, v, 1, 1e7, &o->upload_memory);
	if (!strcmp(k, "reserved-conns"))
		return inum(k, v, 0, 1e7, &o->reserved_conns);
	if (!strcmp(k, "max-handshakes"))
		return inum(k, v, 1, 1e7, &o->max_handshakes);
	if (!strcmp(k, "addr-conns"))
		return inum(k, v, 0, 1e7, &o->addr_conns);
	return FL_ENOTFOUND;
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
	int counted = set_count(o, k, v);
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
