/* sim_report.c - what fedloha-sim leaves behind: a per-round CSV and a JSON
 * summary per configuration, the comparison table (accuracy, rounds and
 * MB to a target accuracy, reduction versus dense, at several targets) and
 * a gnuplot script + PNG of accuracy versus cumulative MB, and the secure
 * channel's byte totals. MB = 10^6 bytes of whole frames, upload +
 * download (the channel's bytes are reported apart). Runs no simulation. */
#include "sim.h"

#include "errors.h"
#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MB 1e6

static uint64_t row_bytes(const struct srv_sim_row *r)
{
	return r->total_up + r->total_down;
}

/* The row's headline accuracy was measured (a federated evaluation in
 * which no client took part leaves it at 0, and it does not count). */
static int measured(const struct srv_sim_result *r, const struct srv_sim_row *w)
{
	return !r->fed_headline || w->has_fed;
}

uint64_t srv_sim_reach(const struct srv_sim_result *r, double target, uint64_t *bytes)
{
	for (size_t i = 0; i < r->nrows; i++) {
		if (measured(r, &r->rows[i]) && r->rows[i].accuracy >= target) {
			if (bytes)
				*bytes = row_bytes(&r->rows[i]);
			return r->rows[i].round;
		}
	}
	if (bytes)
		*bytes = 0;
	return 0;
}

double srv_sim_best_accuracy(const struct srv_sim_result *r)
{
	double best = 0;
	for (size_t i = 0; i < r->nrows; i++)
		if (measured(r, &r->rows[i]) && r->rows[i].accuracy > best)
			best = r->rows[i].accuracy;
	return best;
}

/* What the headline accuracy of r measures. */
static const char *accuracy_kind(const struct srv_sim_result *r)
{
	return r->fed_headline ? "clients' held-out samples" : "central test set";
}

static double final_accuracy(const struct srv_sim_result *r)
{
	for (size_t i = r->nrows; i > 0; i--)
		if (measured(r, &r->rows[i - 1]))
			return r->rows[i - 1].accuracy;
	return 0.0;
}

/* A growing text buffer; `bad` once an allocation failed. */
struct text {
	char *p;
	size_t len, cap;
	int bad;
};

static void text_add(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_add(struct text *t, const char *fmt, ...)
{
	if (t->bad)
		return;
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(t->p ? t->p + t->len : NULL, t->p ? t->cap - t->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			t->bad = 1;
			return;
		}
		if (t->p && t->len + (size_t)n < t->cap) {
			t->len += (size_t)n;
			return;
		}
		size_t cap = t->cap ? t->cap * 2 : 4096;
		while (cap < t->len + (size_t)n + 1)
			cap *= 2;
		char *q = realloc(t->p, cap);
		if (!q) {
			t->bad = 1;
			return;
		}
		t->p = q;
		t->cap = cap;
	}
}

static int text_write(struct text *t, const char *path)
{
	int err = t->bad ? fl_error_set(FL_ENOMEM, "%s: out of memory", path)
			 : fl_file_write_atomic(path, t->p ? t->p : "", t->len, 0);
	free(t->p);
	*t = (struct text){0};
	return err;
}

const char *const srv_sim_csv_header =
	"round,accuracy,loss,bytes_up,bytes_down,cum_mb,seconds,train_loss,selected,reported,"
	"dropped,attempts,central_accuracy,central_loss,fed_accuracy,fed_loss,"
	"post_train_accuracy,post_train_loss\n";

/* An optional figure: empty when not measured. */
static int csv_opt(char *buf, size_t cap, int has, double v)
{
	return has ? snprintf(buf, cap, ",%.6f", v) : snprintf(buf, cap, ",");
}

int srv_sim_csv_line(const struct srv_sim_row *w, char *buf, size_t cap)
{
	size_t n = (size_t)snprintf(
		buf, cap, "%llu,%.6f,%.6f,%llu,%llu,%.6f,%.3f,%.6f,%d,%d,%d,%d",
		(unsigned long long)w->round, w->accuracy, w->loss, (unsigned long long)w->bytes_up,
		(unsigned long long)w->bytes_down, (double)row_bytes(w) / MB, w->seconds,
		w->train_loss, w->selected, w->reported, w->dropped, w->attempts);
	const int has[6] = {w->has_central, w->has_central, w->has_fed,
			    w->has_fed,     w->has_post,    w->has_post};
	const double v[6] = {w->central_accuracy, w->central_loss,  w->fed_accuracy,
			     w->fed_loss,         w->post_accuracy, w->post_loss};
	for (int i = 0; i < 6 && n < cap; i++)
		n += (size_t)csv_opt(buf + n, cap - n, has[i], v[i]);
	if (n < cap)
		n += (size_t)snprintf(buf + n, cap - n, "\n");
	return n < cap ? (int)n : FL_ERANGE;
}

int srv_sim_write_csv(const struct srv_sim_result *r, const char *path)
{
	struct text t = {0};
	text_add(&t, "%s", srv_sim_csv_header);
	for (size_t i = 0; i < r->nrows; i++) {
		char line[SRV_SIM_CSV_LINE_MAX];
		if (srv_sim_csv_line(&r->rows[i], line, sizeof(line)) < 0)
			t.bad = 1;
		else
			text_add(&t, "%s", line);
	}
	return text_write(&t, path);
}

static json_t *config_json(const struct srv_sim_config *c)
{
	json_t *o = json_object();
	json_object_set_new(o, "model", json_string(srv_sim_config_model(c)));
	json_object_set_new(o, "param", json_string(fl_peft_param_name(c->param)));
	if (c->rank > 0)
		json_object_set_new(o, "rank", json_integer(c->rank));
	else
		json_object_set_new(o, "gamma", json_real(c->gamma));
	if (c->targets)
		json_object_set_new(o, "target_modules", json_string(c->targets));
	json_object_set_new(o, "rounds", json_integer((json_int_t)c->train.rounds));
	json_object_set_new(o, "fraction", json_real(c->train.fraction));
	json_object_set_new(o, "epochs", json_integer(c->train.epochs));
	json_object_set_new(o, "batch", json_integer(c->train.batch));
	json_object_set_new(o, "lr", json_real(c->train.lr));
	json_object_set_new(o, "lr_decay", json_real(c->train.lr_decay));
	json_object_set_new(o, "momentum", json_real(c->train.momentum));
	json_object_set_new(o, "strategy",
			    json_string(c->local_only   ? "local-only"
					: c->train.prox ? "fedprox"
							: srv_optim_name(c->train.strategy)));
	json_object_set_new(o, "local_only", json_boolean(c->local_only));
	json_object_set_new(o, "fed_eval", json_boolean(c->fed_eval));
	if (c->train.server_eta >= 0)
		json_object_set_new(o, "server_lr", json_real(c->train.server_eta));
	if (c->train.server_beta1 >= 0)
		json_object_set_new(o, "server_beta1", json_real(c->train.server_beta1));
	if (c->train.server_beta2 >= 0)
		json_object_set_new(o, "server_beta2", json_real(c->train.server_beta2));
	if (c->train.server_tau >= 0)
		json_object_set_new(o, "server_tau", json_real(c->train.server_tau));
	if (c->train.prox)
		json_object_set_new(o, "prox_mu", json_real(c->train.prox_mu));
	json_object_set_new(o, "dtype", json_string(fl_wire_dtype_name(c->train.dtype)));
	json_object_set_new(o, "dropout", json_real(c->dropout));
	json_object_set_new(o, "seed", json_integer((json_int_t)c->train.seed));
	json_object_set_new(o, "threads", json_integer(c->threads));
	json_object_set_new(o, "secure", json_boolean(c->secure));
	return o;
}

/* "<what>_accuracy" and "<what>_loss" of a round: null when not measured. */
static void set_measured(json_t *e, const char *what, int has, double accuracy, double loss)
{
	char key[64];
	snprintf(key, sizeof(key), "%s_accuracy", what);
	json_object_set_new(e, key, has ? json_real(accuracy) : json_null());
	snprintf(key, sizeof(key), "%s_loss", what);
	json_object_set_new(e, key, has ? json_real(loss) : json_null());
}

int srv_sim_write_json(const struct srv_sim_result *r, const struct srv_sim_config *cfg,
		       const double *targets, int ntargets, const char *path)
{
	json_t *o = json_object();
	json_object_set_new(o, "label", json_string(r->label));
	json_object_set_new(o, "config", config_json(cfg));
	json_object_set_new(o, "clients", json_integer(r->clients));
	json_object_set_new(o, "selected_per_round", json_integer(r->selected_per_round));
	json_object_set_new(o, "param_floats", json_integer((json_int_t)r->param_floats));
	json_object_set_new(o, "transmitted_floats", json_integer((json_int_t)r->global_floats));
	json_object_set_new(o, "accuracy_kind", json_string(accuracy_kind(r)));
	json_object_set_new(o, "final_accuracy", json_real(final_accuracy(r)));
	json_object_set_new(o, "best_accuracy", json_real(srv_sim_best_accuracy(r)));
	json_object_set_new(o, "bytes_up", json_integer((json_int_t)r->engine_up));
	json_object_set_new(o, "bytes_down", json_integer((json_int_t)r->engine_down));
	json_object_set_new(o, "frames_up", json_integer((json_int_t)r->frames_up));
	json_object_set_new(o, "frames_down", json_integer((json_int_t)r->frames_down));
	json_object_set_new(o, "secure", json_boolean(r->secure));
	json_object_set_new(o, "channel_bytes_up", json_integer((json_int_t)r->chan_up));
	json_object_set_new(o, "channel_bytes_down", json_integer((json_int_t)r->chan_down));
	json_object_set_new(o, "handshakes", json_integer((json_int_t)r->handshakes));
	json_object_set_new(o, "connections", json_integer((json_int_t)r->connections));
	json_object_set_new(o, "channel_errors", json_integer((json_int_t)r->channel_errors));
	json_object_set_new(o, "vanished", json_integer((json_int_t)r->vanished));
	json_object_set_new(o, "client_errors", json_integer((json_int_t)r->client_errors));
	json_object_set_new(o, "seconds", json_real(r->seconds));
	json_t *ts = json_array();
	for (int i = 0; i < ntargets; i++) {
		uint64_t bytes = 0, round = srv_sim_reach(r, targets[i], &bytes);
		json_t *e = json_object();
		json_object_set_new(e, "target", json_real(targets[i]));
		json_object_set_new(e, "round",
				    round ? json_integer((json_int_t)round) : json_null());
		json_object_set_new(e, "mb", round ? json_real((double)bytes / MB) : json_null());
		json_array_append_new(ts, e);
	}
	json_object_set_new(o, "targets", ts);
	json_t *rows = json_array();
	for (size_t i = 0; i < r->nrows; i++) {
		const struct srv_sim_row *w = &r->rows[i];
		json_t *e = json_object();
		json_object_set_new(e, "round", json_integer((json_int_t)w->round));
		json_object_set_new(e, "accuracy", json_real(w->accuracy));
		json_object_set_new(e, "loss", json_real(w->loss));
		set_measured(e, "central", w->has_central, w->central_accuracy, w->central_loss);
		set_measured(e, "fed", w->has_fed, w->fed_accuracy, w->fed_loss);
		set_measured(e, "post_train", w->has_post, w->post_accuracy, w->post_loss);
		json_object_set_new(e, "train_loss", json_real(w->train_loss));
		json_object_set_new(e, "bytes_up", json_integer((json_int_t)w->bytes_up));
		json_object_set_new(e, "bytes_down", json_integer((json_int_t)w->bytes_down));
		json_object_set_new(e, "cum_mb", json_real((double)row_bytes(w) / MB));
		json_object_set_new(e, "selected", json_integer(w->selected));
		json_object_set_new(e, "reported", json_integer(w->reported));
		json_object_set_new(e, "dropped", json_integer(w->dropped));
		json_object_set_new(e, "attempts", json_integer(w->attempts));
		json_object_set_new(e, "seconds", json_real(w->seconds));
		json_array_append_new(rows, e);
	}
	json_object_set_new(o, "rounds", rows);
	char *text = json_dumps(o, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
	json_decref(o);
	if (!text)
		return fl_error_set(FL_ENOMEM, "%s: out of memory", path);
	struct text t = {.p = text, .len = strlen(text), .cap = strlen(text) + 1};
	text_add(&t, "\n");
	return text_write(&t, path);
}

/* ---- the table ---- */

static const struct srv_sim_result *find_dense(struct srv_sim_result *const *r, int n)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(r[i]->label, "dense"))
			return r[i];
	return NULL;
}

static void fmt_factor(char *buf, size_t cap, const struct srv_sim_result *dense,
		       const struct srv_sim_result *r, double target)
{
	uint64_t bd = 0, b = 0;
	if (!dense || !srv_sim_reach(dense, target, &bd) || !srv_sim_reach(r, target, &b) || !b)
		snprintf(buf, cap, "-");
	else
		snprintf(buf, cap, "%.2fx", (double)bd / (double)b);
}

void srv_sim_print_channel(FILE *f, struct srv_sim_result *const *r, int n)
{
	int any = 0;
	for (int i = 0; i < n; i++)
		any |= !r[i]->local_only;
	if (!any)
		return;
	fprintf(f, "\nchannel bytes (socket equivalent: %s, up + down) vs protocol frames\n",
		r[0]->secure ? "secure channel records and handshakes"
			     : "--insecure, no channel: the frames themselves");
	fprintf(f, "%-16s %12s %12s %9s %10s %8s %8s\n", "configuration", "channel MB", "frame MB",
		"overhead", "handshakes", "channel", "client");
	for (int i = 0; i < n; i++) {
		const struct srv_sim_result *x = r[i];
		if (x->local_only)
			continue; /* no connections */
		uint64_t ch = x->chan_up + x->chan_down, fr = x->engine_up + x->engine_down;
		fprintf(f, "%-16s %12.3f %12.3f %8.3f%% %10llu %8llu %8llu\n", x->label,
			(double)ch / MB, (double)fr / MB,
			fr ? 100.0 * ((double)ch - (double)fr) / (double)fr : 0.0,
			(unsigned long long)x->handshakes, (unsigned long long)x->channel_errors,
			(unsigned long long)x->client_errors);
	}
	fprintf(f, "errors: channel = secure channels that failed; client = updates lost to a "
		   "client error (local training diverged, update refused by the coordinator): "
		   "not aggregated, the round went on with the others\n");
	for (int i = 0; i < n; i++)
		if (!r[i]->local_only && r[i]->client_errors)
			fprintf(f, "%s: %llu client errors, last: %s\n", r[i]->label,
				(unsigned long long)r[i]->client_errors, r[i]->last_client_error);
}

static void print_targets(FILE *f, struct srv_sim_result *const *r, int n, const double *targets,
			  int ntargets, const struct srv_sim_result *dense);

/* The clients' held-out accuracy right after local training, for the
 * results that have it (clients held samples out). */
static void print_post(FILE *f, struct srv_sim_result *const *r, int n)
{
	int any = 0;
	for (int i = 0; i < n; i++)
		for (size_t k = 0; k < r[i]->nrows && !any; k++)
			any = r[i]->rows[k].has_post;
	if (!any)
		return;
	fprintf(f,
		"\nclients' held-out accuracy right after local training (before aggregation)\n"
		"%-16s %9s %9s\n",
		"configuration", "final", "best");
	for (int i = 0; i < n; i++) {
		const struct srv_sim_result *x = r[i];
		double best = -1, last = -1;
		for (size_t k = 0; k < x->nrows; k++) {
			if (!x->rows[k].has_post)
				continue;
			last = x->rows[k].post_accuracy;
			if (last > best)
				best = last;
		}
		if (best < 0)
			fprintf(f, "%-16s %9s %9s\n", x->label, "-", "-");
		else
			fprintf(f, "%-16s %8.2f%% %8.2f%%\n", x->label, 100 * last, 100 * best);
	}
}

void srv_sim_print_table(FILE *f, struct srv_sim_result *const *r, int n, const double *targets,
			 int ntargets)
{
	if (n < 1 || ntargets < 1)
		return;
	const struct srv_sim_result *dense = find_dense(r, n);
	double t0 = targets[0];
	fprintf(f, "\ntarget accuracy %.1f%% (MB = 10^6 bytes of frames, up + down)\n", 100 * t0);
	int fed = 0, central = 0;
	for (int i = 0; i < n; i++)
		*(r[i]->fed_headline ? &fed : &central) = 1;
	if (fed && central)
		fprintf(f, "accuracy: central test set, except for the configurations with "
			   "federated evaluation (see accuracy_kind in their JSON)\n");
	else if (fed)
		fprintf(f, "accuracy: the clients' mean accuracy on their own held-out samples "
			   "(federated evaluation)\n");
	fprintf(f, "%-16s %9s %9s %9s %8s %13s %10s\n", "configuration", "final", "best",
		"MB/round", "rounds", "MB to target", "vs dense");
	for (int i = 0; i < n; i++) {
		const struct srv_sim_result *x = r[i];
		uint64_t bytes = 0, round = srv_sim_reach(x, t0, &bytes);
		double per_round = x->nrows ? (double)row_bytes(&x->rows[x->nrows - 1]) /
						      (double)x->nrows / MB
					    : 0.0;
		char rs[32], ms[32], fs[32];
		if (round) {
			snprintf(rs, sizeof(rs), "%llu", (unsigned long long)round);
			snprintf(ms, sizeof(ms), "%.2f", (double)bytes / MB);
		} else {
			snprintf(rs, sizeof(rs), "-");
			snprintf(ms, sizeof(ms), "not reached");
		}
		fmt_factor(fs, sizeof(fs), dense, x, t0);
		fprintf(f, "%-16s %8.2f%% %8.2f%% %9.3f %8s %13s %10s\n", x->label,
			100 * final_accuracy(x), 100 * srv_sim_best_accuracy(x), per_round, rs, ms,
			fs);
	}
	if (ntargets >= 2)
		print_targets(f, r, n, targets, ntargets, dense);
	print_post(f, r, n);
}

static void print_targets(FILE *f, struct srv_sim_result *const *r, int n, const double *targets,
			  int ntargets, const struct srv_sim_result *dense)
{
	fprintf(f, "\nMB to reach each target (reduction vs dense; * = the main target)\n%-9s",
		"target");
	for (int i = 0; i < n; i++)
		fprintf(f, " %20s", r[i]->label);
	fprintf(f, "\n");
	/* ascending targets */
	int order[SRV_SIM_TARGETS_MAX],
		m = ntargets < SRV_SIM_TARGETS_MAX ? ntargets : SRV_SIM_TARGETS_MAX;
	for (int k = 0; k < m; k++) {
		int j = k;
		while (j > 0 && targets[order[j - 1]] > targets[k]) {
			order[j] = order[j - 1];
			j--;
		}
		order[j] = k;
	}
	for (int kk = 0; kk < m; kk++) {
		int k = order[kk];
		fprintf(f, "%7.1f%%%c", 100 * targets[k], k == 0 ? '*' : ' ');
		for (int i = 0; i < n; i++) {
			uint64_t bytes = 0;
			char cell[64], fs[32];
			if (srv_sim_reach(r[i], targets[k], &bytes)) {
				fmt_factor(fs, sizeof(fs), dense, r[i], targets[k]);
				snprintf(cell, sizeof(cell), "%.2f (%s)", (double)bytes / MB, fs);
			} else {
				snprintf(cell, sizeof(cell), "not reached");
			}
			fprintf(f, " %20s", cell);
		}
		fprintf(f, "\n");
	}
}

/* ---- the plot ---- */

/* Runs `gnuplot script` in dir with no output; its exit status (not an
 * fl_err): 127 when it could not be started, -1 when fork / wait failed or a
 * signal ended it. */
static int run_gnuplot(const char *dir, const char *script)
{
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int fd = open("/dev/null", O_RDWR);
		if (fd >= 0) {
			dup2(fd, 0);
			dup2(fd, 1);
			dup2(fd, 2);
		}
		if (chdir(dir) != 0)
			_exit(126);
		execlp("gnuplot", "gnuplot", script, (char *)NULL);
		_exit(127);
	}
	int st = 0;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* gnuplot single-quoted string: a quote is written twice. */
static void text_quoted(struct text *t, const char *s)
{
	text_add(t, "'");
	for (; *s; s++)
		text_add(t, *s == '\'' ? "''" : "%c", *s);
	text_add(t, "'");
}

int srv_sim_plot(struct srv_sim_result *const *r, int n, const char *dir, double target, char *png,
		 size_t cap)
{
	struct text t = {0};
	text_add(&t, "# accuracy versus cumulative communication; run: gnuplot accuracy_vs_mb.gp\n"
		     "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
		     "  set terminal pngcairo size 960,600 noenhanced\n"
		     "} else {\n"
		     "  set terminal png size 960,600 noenhanced\n"
		     "}\n"
		     "set output 'accuracy_vs_mb.png'\n"
		     "set datafile separator ','\n"
		     "set key bottom right\n"
		     "set grid\n"
		     "set logscale x\n"
		     "set xlabel 'cumulative communication, MB (upload + download)'\n"
		     "set title 'fedloha-sim: accuracy versus communication'\n");
	int fed = 0, central = 0;
	for (int i = 0; i < n; i++)
		*(r[i]->fed_headline ? &fed : &central) = 1;
	text_add(&t, "set ylabel '%saccuracy (%%)'\n",
		 fed && central ? ""
		 : fed          ? "clients held-out "
				: "test ");
	text_add(&t, "plot \\\n");
	for (int i = 0; i < n; i++) {
		char file[SRV_SIM_LABEL_MAX + 8];
		if (r[i]->local_only) { /* no communication: its final accuracy as a level */
			text_add(&t, "  %.4f with lines dt 3 lw 2 title ",
				 100 * final_accuracy(r[i]));
			char title[SRV_SIM_LABEL_MAX + 32];
			snprintf(title, sizeof(title), "%s (0 MB, final)", r[i]->label);
			text_quoted(&t, title);
			text_add(&t, ", \\\n");
			continue;
		}
		snprintf(file, sizeof(file), "%s.csv", r[i]->label);
		text_add(&t, "  ");
		text_quoted(&t, file);
		text_add(&t, " using 6:($2*100) skip 1 with linespoints pt 7 ps 0.5 title ");
		text_quoted(&t, r[i]->label);
		text_add(&t, ", \\\n");
	}
	text_add(&t, "  %.4f with lines dt 2 lc rgb 'gray40' title 'target %.1f%%'\n", 100 * target,
		 100 * target);
	char path[FL_PATH_MAX];
	snprintf(path, sizeof(path), "%s/accuracy_vs_mb.gp", dir);
	int err = text_write(&t, path);
	if (err)
		return err;
	snprintf(png, cap, "%s/accuracy_vs_mb.png", dir);
	int rc = run_gnuplot(dir, "accuracy_vs_mb.gp");
	if (rc == 127)
		return fl_error_set(FL_ENOTFOUND,
				    "gnuplot is not installed (apt-get install "
				    "gnuplot-nox); the script is %s",
				    path);
	if (rc != 0)
		return fl_error_set(FL_EIO, "gnuplot failed on %s (exit %d)", path, rc);
	return FL_OK;
}
