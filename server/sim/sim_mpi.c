/* sim_mpi.c - fedloha-sim over MPI: rank 0 runs the loop and the engine
 * (sim_loop.c), the virtual clients are spread over the ranks (client i on
 * rank i % K) and every rank trains its clients on its own worker pool.
 * An operation on a remote client end is a synchronous request (the
 * operation, the connection, the virtual time and the channel bytes going
 * down: several consecutive deliveries to one client travel together and
 * run one after the other) answered by its effects in order (the channel
 * bytes going up are the very bytes the client end wrote); a finished job
 * is announced by its rank asynchronously (MPI_Isend: rank 0 may be
 * sending it a request at the same time) and handed back by rank 0 in
 * submission order. A message longer than 1 GiB travels in pieces. Only
 * the main thread calls MPI (MPI_THREAD_FUNNELED). Waits poll with short
 * sleeps instead of spinning a core. A broken message or an MPI failure
 * (MPI_ERRORS_RETURN) ends the whole job (MPI_Abort) with a one-line
 * message. Without MPI (FL_HAVE_MPI undefined) there is one rank and the
 * remote calls are never made. No simulation logic here.
 */
#include "sim_impl.h"

#include "errors.h"

#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/prctl.h>
#include <unistd.h>

#ifdef FL_HAVE_MPI
#include <mpi.h>
#endif

/* Polls before yielding, and yields before sleeping (sim_backoff). */
#define SPIN_POLLS 2000
#define YIELD_POLLS 64

static int g_rank = 0, g_size = 1;
static FILE *g_err; /* the real stderr of ranks > 0 (their stdio is silenced) */
#ifdef FL_HAVE_MPI
static int g_up = 0; /* MPI_Init_thread succeeded */
#endif

void sim_backoff(unsigned *n)
{
	unsigned k = (*n)++;
	if (k < SPIN_POLLS) /* a reply is usually microseconds away: poll again */
		return;
	if (k < SPIN_POLLS + YIELD_POLLS) {
		sched_yield();
		return;
	}
	/* short sleeps for the first few ms (requests come in bursts), then
	 * longer ones (a rank whose clients train for seconds wakes ~1000 times
	 * a second) */
	k -= SPIN_POLLS + YIELD_POLLS;
	unsigned us = k < 100 ? (k < 2 ? 16u << k : 64u) : k < 140 ? 256u : 1000u;
	struct timespec ts = {0, (long)us * 1000};
	nanosleep(&ts, NULL);
}

int srv_sim_mpi_launched(void)
{
	return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK");
}

int srv_sim_mpi_rank(void)
{
	return g_rank;
}

int srv_sim_mpi_size(void)
{
	return g_size;
}

void srv_sim_mpi_abort(const char *msg, int code)
{
	FILE *f = g_err ? g_err : stderr;
	if (g_size > 1)
		fprintf(f, "fedloha-sim: rank %d: %s\n", g_rank, msg);
	else
		fprintf(f, "fedloha-sim: %s\n", msg);
	fflush(f);
#ifdef FL_HAVE_MPI
	if (g_up)
		MPI_Abort(MPI_COMM_WORLD, code);
#endif
	exit(code);
}

#ifdef FL_HAVE_MPI

enum {
	TAG_REQ = 1,
	TAG_FX,
	TAG_DONE
};
#define REQ_HEAD (5 * sizeof(uint64_t)) /* op, client, conn, now, payloads */
#define CHUNK_MAX ((size_t)1 << 30)     /* bytes in one MPI message */
#define CHUNK_MIN 16

/* Bytes per MPI message: a longer message goes in pieces (send_bytes).
 * Rank 0's value, CHUNK_MAX unless the test knob FL_SIM_MPI_CHUNK says. */
static size_t g_chunk = CHUNK_MAX;

/* A finished job's announcement in flight (MPI_Isend), kept until done. */
struct announce {
	int client;
	MPI_Request req;
	struct announce *next;
};
static struct announce *g_announced;
static int g_double_done; /* test knob FL_SIM_MPI_FAULT=double-done */

static void die(const char *what)
{
	srv_sim_mpi_abort(what, 1);
}

/* An MPI call failed (MPI_ERRORS_RETURN): one line naming it and MPI's
 * reason, then the whole job ends. */
static void check(int rc, const char *what)
{
	if (rc == MPI_SUCCESS)
		return;
	char why[MPI_MAX_ERROR_STRING + 1] = "", msg[MPI_MAX_ERROR_STRING + 96];
	int len = 0;
	if (MPI_Error_string(rc, why, &len) == MPI_SUCCESS && len >= 0 &&
	    len <= MPI_MAX_ERROR_STRING)
		why[len] = 0;
	for (char *c = why; *c; c++)
		if (*c == '\n' || *c == '\r')
			*c = ' ';
	snprintf(msg, sizeof(msg), "%s failed: %s", what, why[0] ? why : "unknown MPI error");
	die(msg);
}

/* The test knobs (docs/SIMULATION_MPI.md): the message size limit, and
 * faults that only the tests inject. */
static void test_knobs(void)
{
	const char *v = getenv("FL_SIM_MPI_CHUNK");
	unsigned long long chunk = g_chunk;
	if (g_rank == 0 && v && *v) {
		char *end = NULL;
		chunk = strtoull(v, &end, 10);
		if (*end || chunk < CHUNK_MIN || chunk > CHUNK_MAX)
			die("FL_SIM_MPI_CHUNK: not a byte count in [16, 2^30]");
	}
	check(MPI_Bcast(&chunk, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD), "MPI_Bcast");
	g_chunk = (size_t)chunk;
	const char *f = getenv("FL_SIM_MPI_FAULT");
	g_double_done = f && strcmp(f, "double-done") == 0;
	if (f && strcmp(f, "mpi-error") == 0 && g_rank == g_size - 1) {
		int x = 0; /* a send to a rank that does not exist */
		check(MPI_Send(&x, 1, MPI_INT, g_size, TAG_DONE, MPI_COMM_WORLD), "MPI_Send");
	}
}

int srv_sim_mpi_init(int *argc, char ***argv, int force)
{
	if (!force && !srv_sim_mpi_launched())
		return FL_OK;
	int provided = 0;
	if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
		return fl_error_set(FL_EIO, "MPI_Init_thread failed");
	g_up = 1;
	/* failures come back to check() instead of MPI's own abort */
	if (MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN) != MPI_SUCCESS)
		die("MPI_Comm_set_errhandler failed");
	if (provided < MPI_THREAD_FUNNELED)
		die("the MPI library does not support MPI_THREAD_FUNNELED");
	check(MPI_Comm_rank(MPI_COMM_WORLD, &g_rank), "MPI_Comm_rank");
	check(MPI_Comm_size(MPI_COMM_WORLD, &g_size), "MPI_Comm_size");
	/* the polling sleeps are short: a timer slack of 1 us instead of the
	 * default 50 us keeps them so */
	prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
	if (g_rank > 0) { /* rank 0 alone prints; the others keep stderr for fatal errors */
		int fd = dup(2);
		g_err = fd >= 0 ? fdopen(fd, "w") : NULL;
		if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr))
			die("cannot silence stdout / stderr");
	}
	test_knobs();
	return FL_OK;
}

void srv_sim_mpi_finalize(void)
{
	if (g_up)
		MPI_Finalize();
	g_up = 0;
}

int srv_sim_mpi_agree(int err)
{
	if (!g_up || g_size == 1)
		return err;
	int mine = err ? g_rank : g_size, low = g_size;
	check(MPI_Allreduce(&mine, &low, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD), "MPI_Allreduce");
	if (low == g_size)
		return FL_OK;
	struct {
		int code;
		char msg[FL_ERROR_MSG_MAX];
	} m = {0};
	if (g_rank == low) {
		m.code = err;
		snprintf(m.msg, sizeof(m.msg), "%s", fl_error_msg());
	}
	check(MPI_Bcast(&m, (int)sizeof(m), MPI_BYTE, low, MPI_COMM_WORLD), "MPI_Bcast");
	if (low == 0)
		return fl_error_set(m.code, "%s", m.msg);
	return fl_error_set(m.code, "rank %d: %s", low, m.msg);
}

int srv_sim_mpi_same(int err, const uint8_t digest[SRV_SIM_DIGEST_BYTES])
{
	if (!g_up || g_size == 1)
		return err;
	uint8_t d0[SRV_SIM_DIGEST_BYTES] = {0};
	if (!err)
		memcpy(d0, digest, sizeof(d0));
	check(MPI_Bcast(d0, (int)sizeof(d0), MPI_BYTE, 0, MPI_COMM_WORLD), "MPI_Bcast");
	if (!err && memcmp(d0, digest, sizeof(d0)) != 0)
		err = fl_error_set(FL_EINVAL, "its data/configuration differ from rank 0's");
	return srv_sim_mpi_agree(err);
}

/* Waits for a message from src with tag (polling, see sim_backoff) and
 * receives it into a new buffer: its pieces while one is g_chunk bytes
 * long (send_bytes). */
static uint8_t *recv_wait(int src, int tag, size_t *n)
{
	MPI_Status st;
	int flag = 0;
	unsigned b = 0;
	for (;;) {
		check(MPI_Iprobe(src, tag, MPI_COMM_WORLD, &flag, &st), "MPI_Iprobe");
		if (flag)
			break;
		sim_backoff(&b);
	}
	uint8_t *buf = NULL;
	size_t have = 0, cap = 0;
	for (;;) {
		int count = 0;
		check(MPI_Get_count(&st, MPI_BYTE, &count), "MPI_Get_count");
		if (have + (size_t)count + 1 > cap) { /* doubling: many pieces stay linear */
			cap = have + (size_t)count + 1 > 2 * cap ? have + (size_t)count + 1
								 : 2 * cap;
			uint8_t *p = realloc(buf, cap);
			if (!p)
				die("out of memory receiving a message");
			buf = p;
		}
		check(MPI_Recv(buf + have, count, MPI_BYTE, src, tag, MPI_COMM_WORLD,
			       MPI_STATUS_IGNORE),
		      "MPI_Recv");
		have += (size_t)count;
		if ((size_t)count != g_chunk)
			break;
		check(MPI_Probe(src, tag, MPI_COMM_WORLD, &st), "MPI_Probe"); /* the next piece */
	}
	*n = have;
	return buf;
}

/* One message in pieces of at most g_chunk bytes; a piece of exactly
 * g_chunk bytes is followed by another (maybe empty), so the receiver
 * knows where the message ends. */
static void send_bytes(const uint8_t *buf, size_t n, int dst, int tag)
{
	for (;;) {
		size_t k = n < g_chunk ? n : g_chunk;
		check(MPI_Send(buf, (int)k, MPI_BYTE, dst, tag, MPI_COMM_WORLD), "MPI_Send");
		if (k < g_chunk)
			return;
		buf += k;
		n -= k;
	}
}

/* ---- rank 0 ---- */

void sim_mpi_call(struct sim *s, int owner, int client, enum sim_op op, uint64_t conn,
		  struct fl_buf *const *bufs, int nbufs, struct sim_fxlist *fx)
{
	double t0 = sim_wall_seconds();
	size_t len = REQ_HEAD;
	for (int i = 0; i < nbufs; i++)
		len += sizeof(uint64_t) + bufs[i]->len;
	uint8_t *req = malloc(len), *p = req;
	if (!req)
		die("out of memory sending a request");
	uint64_t h[5] = {(uint64_t)op, (uint64_t)client, conn, s->now, (uint64_t)nbufs};
	memcpy(p, h, REQ_HEAD);
	p += REQ_HEAD;
	for (int i = 0; i < nbufs; i++) {
		uint64_t n = bufs[i]->len;
		memcpy(p, &n, sizeof(n));
		memcpy(p + sizeof(n), bufs[i]->data, bufs[i]->len);
		p += sizeof(n) + bufs[i]->len;
	}
	send_bytes(req, len, owner, TAG_REQ);
	free(req);
	size_t n = 0;
	uint8_t *resp = recv_wait(owner, TAG_FX, &n);
	if (sim_fx_decode(resp, n, fx))
		die(fl_error_msg());
	free(resp);
	s->res->mpi_calls++;
	s->res->mpi_bytes += len + n;
	s->res->mpi_seconds += sim_wall_seconds() - t0;
}

int sim_mpi_take_done(struct sim *s, void (*done)(struct sim *s, int client))
{
	int n = 0;
	for (;;) {
		MPI_Status st;
		int flag = 0, client = -1;
		check(MPI_Iprobe(MPI_ANY_SOURCE, TAG_DONE, MPI_COMM_WORLD, &flag, &st),
		      "MPI_Iprobe");
		if (!flag)
			return n;
		check(MPI_Recv(&client, 1, MPI_INT, st.MPI_SOURCE, TAG_DONE, MPI_COMM_WORLD,
			       MPI_STATUS_IGNORE),
		      "MPI_Recv");
		if (client < 0 || client >= s->nclients || client % g_size != st.MPI_SOURCE ||
		    !s->clients[client].job)
			die("a finished job of a client without one");
		if (s->clients[client].held) {
			char msg[96];
			snprintf(msg, sizeof(msg), "a second finished job of client %d", client);
			die(msg);
		}
		done(s, client);
		n++;
	}
}

void sim_mpi_end(struct sim *s)
{
	for (int r = 1; r < g_size; r++)
		sim_mpi_call(s, r, 0, SIM_OP_END, 0, NULL, 0, &(struct sim_fxlist){0});
	/* each rank's last message is "ended" (-1): the jobs it announced
	 * before are read and dropped (only a failed run leaves any) */
	for (int r = 1; r < g_size; r++) {
		int client = 0;
		while (client != -1)
			check(MPI_Recv(&client, 1, MPI_INT, r, TAG_DONE, MPI_COMM_WORLD,
				       MPI_STATUS_IGNORE),
			      "MPI_Recv");
	}
}

/* ---- ranks > 0 ---- */

/* Sends `client` to rank 0 without blocking (rank 0 may be sending a
 * request to this rank at the same time); the announcement is kept until
 * MPI is done with it (reap_announced). */
static void announce(int client)
{
	struct announce *a = malloc(sizeof(*a));
	if (!a)
		die("out of memory announcing a finished job");
	a->client = client;
	check(MPI_Isend(&a->client, 1, MPI_INT, 0, TAG_DONE, MPI_COMM_WORLD, &a->req), "MPI_Isend");
	a->next = g_announced;
	g_announced = a;
}

/* Frees the announcements MPI is done with; with `wait`, waits for all. */
static void reap_announced(int wait)
{
	struct announce **pp = &g_announced;
	while (*pp) {
		struct announce *a = *pp;
		int flag = 0;
		if (wait)
			check(MPI_Wait(&a->req, MPI_STATUS_IGNORE), "MPI_Wait");
		else
			check(MPI_Test(&a->req, &flag, MPI_STATUS_IGNORE), "MPI_Test");
		if (wait || flag) {
			*pp = a->next;
			free(a);
		} else {
			pp = &a->next;
		}
	}
}

/* Announces this rank's finished jobs to rank 0; how many. */
static int announce_done(struct sim *s)
{
	int n = 0;
	reap_announced(0);
	struct sim_task *d = sim_pool_take_done(&s->pool, 0);
	while (d) {
		struct sim_task *t = d;
		d = d->next;
		struct sim_cend *ce = sim_cend_of_task(t);
		if (!ce)
			die("a finished task that is no client's job");
		announce(ce->index);
		if (g_double_done)
			announce(ce->index);
		n++;
	}
	return n;
}

/* Runs one request (an operation, once per payload when it has several);
 * 0 once it was the end of the run. */
static int serve_one(struct sim *s)
{
	size_t n = 0;
	uint8_t *req = recv_wait(0, TAG_REQ, &n);
	uint64_t h[5];
	if (n < REQ_HEAD)
		die("a short request");
	memcpy(h, req, REQ_HEAD);
	if (h[0] < SIM_OP_CONNECT || h[0] > SIM_OP_END || h[1] >= (uint64_t)s->nclients ||
	    (h[0] != SIM_OP_END && (int)h[1] % g_size != g_rank) || h[4] > n)
		die("a bad request");
	struct sim_fxlist fx = {0};
	struct sim_cend *ce = &s->cends[h[1]];
	s->now = h[3];
	size_t off = REQ_HEAD;
	for (uint64_t i = 0; i < h[4]; i++) {
		uint64_t len;
		if (n - off < sizeof(len))
			die("a truncated request");
		memcpy(&len, req + off, sizeof(len));
		off += sizeof(len);
		if (len > n - off)
			die("a truncated request");
		sim_cend_op(ce, (enum sim_op)h[0], h[2], req + off, (size_t)len, &fx);
		off += (size_t)len;
	}
	if (off != n)
		die("trailing bytes in a request");
	if (h[4] == 0 && h[0] != SIM_OP_END)
		sim_cend_op(ce, (enum sim_op)h[0], h[2], NULL, 0, &fx);
	free(req);
	size_t len = 0;
	uint8_t *reply = sim_fx_encode(&fx, &len);
	if (!reply)
		die("out of memory sending a client's effects");
	send_bytes(reply, len, 0, TAG_FX);
	free(reply);
	sim_fx_free(&fx);
	return h[0] != SIM_OP_END;
}

void sim_mpi_serve(struct sim *s)
{
	unsigned b = 0;
	for (;;) {
		MPI_Status st;
		int flag = 0;
		check(MPI_Iprobe(0, TAG_REQ, MPI_COMM_WORLD, &flag, &st), "MPI_Iprobe");
		if (flag) {
			if (!serve_one(s))
				break;
			b = 0;
		} else if (announce_done(s)) {
			b = 0;
		} else {
			sim_backoff(&b);
		}
	}
	announce(-1); /* ended */
	reap_announced(1);
}

#else /* one process, no MPI */

int srv_sim_mpi_init(int *argc, char ***argv, int force)
{
	(void)argc;
	(void)argv;
	const char *np = getenv("OMPI_COMM_WORLD_SIZE");
	if (force || (np && atoi(np) > 1))
		return fl_error_set(FL_EINVAL, "this fedloha-sim was built without MPI "
					       "(configure with -DFL_MPI=ON and an MPI library)");
	return FL_OK;
}

void srv_sim_mpi_finalize(void)
{
}

int srv_sim_mpi_agree(int err)
{
	return err;
}

int srv_sim_mpi_same(int err, const uint8_t digest[SRV_SIM_DIGEST_BYTES])
{
	(void)digest;
	return err;
}

void sim_mpi_call(struct sim *s, int owner, int client, enum sim_op op, uint64_t conn,
		  struct fl_buf *const *bufs, int nbufs, struct sim_fxlist *fx)
{
	srv_sim_mpi_abort("no MPI: a client on another rank", 1);
}

int sim_mpi_take_done(struct sim *s, void (*done)(struct sim *s, int client))
{
	return 0;
}

void sim_mpi_end(struct sim *s)
{
}

void sim_mpi_serve(struct sim *s)
{
}

#endif
