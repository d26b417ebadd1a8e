/* loadgen_main.c - fl-loadgen's command line (loadgen.h): `allow` writes
 * the allow-list of N seeded client keys (each line naming the client id
 * it must use), `run` opens this process's share of the sessions against
 * 127.0.0.1:PORT and prints one summary line and one line per round
 * (CLOCK_MONOTONIC ms, so several processes' lines can be merged). Exit 0
 * when every session was established and ended with the server's
 * Bye("done"), 1 otherwise, 2 for a usage error. */
#include "loadgen.h"

#include "cliopt.h"
#include "errors.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int lg_identity(uint64_t seed, unsigned idx, struct fl_identity **out)
{
	uint8_t in[8 + 4 + 10], s32[32];
	memcpy(in, "fl-loadgen", 10);
	for (int i = 0; i < 8; i++)
		in[10 + i] = (uint8_t)(seed >> (8 * i));
	for (int i = 0; i < 4; i++)
		in[18 + i] = (uint8_t)(idx >> (8 * i));
	crypto_generichash(s32, sizeof(s32), in, sizeof(in), NULL, 0);
	int err = fl_identity_from_seed(s32, out);
	sodium_memzero(s32, sizeof(s32));
	return err;
}

static int write_allow(const char *path, uint64_t seed, unsigned n)
{
	FILE *f = fopen(path, "w");
	if (!f) {
		fprintf(stderr, "fl-loadgen: cannot write %s\n", path);
		return 1;
	}
	chmod(path, 0600);
	for (unsigned i = 0; i < n; i++) {
		struct fl_identity *id = NULL;
		if (lg_identity(seed, i, &id) != FL_OK) {
			fprintf(stderr, "fl-loadgen: %s\n", fl_error_msg());
			fclose(f);
			return 1;
		}
		char pk[FL_PUBKEY_STRING_BYTES];
		fl_identity_public_string(id, pk);
		fprintf(f, "%s " LG_ID_FMT "\n", pk, i);
		fl_identity_free(id);
	}
	return fclose(f) == 0 ? 0 : 1;
}

void lg_maybe_done(struct lg *g)
{
	if (g->closed == g->n && !uv_is_closing((uv_handle_t *)&g->deadline))
		uv_close((uv_handle_t *)&g->deadline, NULL);
}

static void on_deadline(uv_timer_t *t)
{
	struct lg *g = t->data;
	fprintf(stderr, "fl-loadgen: time limit: %u of %u sessions still open\n", g->n - g->closed,
		g->n);
	for (unsigned i = 0; i < g->n; i++)
		if (g->conns[i] && !fl_net_gone(&g->conns[i]->n))
			fl_net_cut(&g->conns[i]->n);
	g->stopping = 1; /* start nothing more */
}

static void report(const struct lg *g)
{
	double hs_s = (double)(g->t_last_up - g->t_start) / 1000.0;
	uint32_t tmin = UINT32_MAX, tmax = 0;
	for (uint64_t r = 1; r <= g->rounds_seen && r <= LG_ROUNDS_MAX; r++) {
		const struct lg_round_times *t = &g->rt[r];
		printf("round %llu tasks %u updates %u task_first_ms %llu task_last_ms %llu "
		       "update_last_ms %llu\n",
		       (unsigned long long)r, t->tasks, t->updates,
		       (unsigned long long)t->task_first, (unsigned long long)t->task_last,
		       (unsigned long long)t->update_last);
		if (t->tasks < tmin)
			tmin = t->tasks;
		if (t->tasks > tmax)
			tmax = t->tasks;
	}
	printf("loadgen: sessions %u up %u failed %u errors %u byes_done %u retries %u "
	       "start_ms %llu "
	       "last_up_ms %llu handshake_seconds %.3f handshakes_per_s %.1f tasks %llu "
	       "updates %llu heartbeats %llu bytes_out %llu\n",
	       g->n, g->up, g->failed, g->errors, g->byes_done, g->retries,
	       (unsigned long long)g->t_start, (unsigned long long)g->t_last_up, hs_s,
	       hs_s > 0 ? g->up / hs_s : 0.0, (unsigned long long)g->tasks,
	       (unsigned long long)g->updates, (unsigned long long)g->heartbeats,
	       (unsigned long long)g->sock_out);
}

static void usage(FILE *o)
{
	fprintf(o, "usage: fl-loadgen allow --clients N [--seed S] --out FILE\n"
		   "       fl-loadgen run --port PORT --server-key fl1:...|FILE --clients N\n"
		   "                  [--first I (0)] [--seed S (1)] [--sources K (0)]\n"
		   "                  [--concurrency C (64)] [--values random|zeros]\n"
		   "                  [--examples N (100)] [--seconds T (600)]\n"
		   "                  [--retries R (5)]\n"
		   "allow writes the allow-list of clients 0..N-1 (keys from --seed, ids\n"
		   "lg-00000...). run opens sessions I..I+N-1 to 127.0.0.1:PORT over the secure\n"
		   "channel (at most C handshakes at once; --sources K binds them to K loopback\n"
		   "source addresses 127.0.0.2...; a failed handshake is tried again up to R\n"
		   "times), answers every task with an Update of the\n"
		   "task's tensors and prints its counts; exit 0 when every session ended with\n"
		   "the server's Bye(\"done\").\n");
}

struct lg_args {
	const char *cmd, *out, *server_key, *values;
	int port, clients, first, sources, concurrency, examples, retries;
	double seconds;
	long long seed;
};

static int parse(int argc, char **argv, struct lg_args *a)
{
	*a = (struct lg_args){.seed = 1,
			      .concurrency = 64,
			      .examples = 100,
			      .seconds = 600,
			      .values = "random",
			      .retries = 5};
	if (argc < 2)
		return 2;
	a->cmd = argv[1];
	for (int i = 2; i < argc; i++) {
		const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		int err = FL_OK;
		if (!v || strncmp(k, "--", 2) != 0)
			return 2;
		i++;
		if (!strcmp(k, "--out"))
			a->out = v;
		else if (!strcmp(k, "--server-key"))
			a->server_key = v;
		else if (!strcmp(k, "--values"))
			a->values = v;
		else if (!strcmp(k, "--port"))
			err = fl_cliopt_int(k, v, 1, 65535, &a->port);
		else if (!strcmp(k, "--clients"))
			err = fl_cliopt_int(k, v, 1, 1000000, &a->clients);
		else if (!strcmp(k, "--first"))
			err = fl_cliopt_int(k, v, 0, 1000000, &a->first);
		else if (!strcmp(k, "--sources"))
			err = fl_cliopt_int(k, v, 0, 1 << 20, &a->sources);
		else if (!strcmp(k, "--concurrency"))
			err = fl_cliopt_int(k, v, 1, 100000, &a->concurrency);
		else if (!strcmp(k, "--retries"))
			err = fl_cliopt_int(k, v, 0, 100, &a->retries);
		else if (!strcmp(k, "--examples"))
			err = fl_cliopt_int(k, v, 1, 1 << 30, &a->examples);
		else if (!strcmp(k, "--seconds"))
			err = fl_cliopt_double(k, v, 0.1, 1e6, &a->seconds);
		else if (!strcmp(k, "--seed"))
			err = fl_cliopt_llong(k, v, 0, (1LL << 62), &a->seed);
		else
			return 2;
		if (err != FL_OK)
			return fl_cliopt_report("fl-loadgen", err);
	}
	return 0;
}

static int run(const struct lg_args *a)
{
	static struct lg g; /* large (per-round records); one per process */
	g.loop = uv_default_loop();
	g.seed = (uint64_t)a->seed;
	g.first = (unsigned)a->first;
	g.n = (unsigned)a->clients;
	g.sources = (unsigned)a->sources;
	g.concurrency = (unsigned)a->concurrency;
	g.examples = (uint32_t)a->examples;
	g.chunk_bytes = FL_WIRE_CHUNK_DEFAULT;
	g.random_values = strcmp(a->values, "zeros") != 0;
	if (strcmp(a->values, "zeros") && strcmp(a->values, "random")) {
		fprintf(stderr, "fl-loadgen: --values must be random or zeros\n");
		return 2;
	}
	if (fl_pubkey_parse_arg(a->server_key, g.server_pk) != FL_OK) {
		fprintf(stderr, "fl-loadgen: --server-key: %s\n", fl_error_msg());
		return 2;
	}
	uv_ip4_addr("127.0.0.1", a->port, &g.target);
	g.max_retries = (unsigned)a->retries;
	g.conns = calloc(g.n, sizeof(*g.conns));
	g.retry = calloc(g.n, sizeof(*g.retry));
	g.attempts = calloc(g.n, 1);
	if (!g.conns || !g.retry || !g.attempts)
		return 1;
	uv_timer_init(g.loop, &g.deadline);
	g.deadline.data = &g;
	uv_timer_start(&g.deadline, on_deadline, (uint64_t)(a->seconds * 1000), 0);
	g.t_start = g.t_last_up = lg_now_ms();
	lg_start_more(&g);
	uv_run(g.loop, UV_RUN_DEFAULT);
	report(&g);
	free(g.conns);
	free(g.retry);
	free(g.attempts);
	for (size_t i = 0; i < g.nupd; i++)
		fl_buf_unref(g.upd[i]);
	free(g.upd);
	uv_loop_close(g.loop);
	return g.up == g.n && g.byes_done == g.n && !g.errors ? 0 : 1;
}

int main(int argc, char **argv)
{
	struct lg_args a;
	int rc = parse(argc, argv, &a);
	if (rc || fl_crypto_init() != FL_OK) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(a.cmd, "allow") && a.out && a.clients)
		return write_allow(a.out, (uint64_t)a.seed, (unsigned)a.clients);
	if (!strcmp(a.cmd, "run") && a.port && a.server_key && a.clients)
		return run(&a);
	usage(stderr);
	return 2;
}
