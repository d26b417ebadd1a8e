/* sim_mpi.c - fedloha-sim over MPI: rank 0 runs the loop and the engine
 * (sim_loop.c), the virtual clients are spread over the ranks (client i on
 * rank i % K) and every rank trains its clients on its own worker pool.
 * An operation on a remote client end is a synchronous request (the
 * operation, the connection, the virtual time and the channel bytes going
 * down: several consecutive deliveries to one client travel together and
 * run one after the other) answered by its effects in order (the channel bytes going up are
 * the very bytes the client end wrote); a finished job is announced by its
 * rank asynchronously and handed back by rank 0 in submission order. Only
 * the main thread calls MPI (MPI_THREAD_FUNNELED). Waits poll with short
 * sleeps instead of spinning a core. A broken message or an MPI failure
 * ends the whole job (MPI_Abort) with a one-line message. Without MPI
 * (FL_HAVE_MPI undefined) there is one rank and the remote calls are never
 * made. No simulation logic here.
 */
#include "sim_impl.h"

#include "errors.h"

#include <limits.h>
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
#define FX_HEAD (5 * sizeof(uint64_t))  /* count, job, finished, ready, nomem */
#define FX_ITEM (2 * sizeof(uint64_t))  /* kind, length */

static void die(const char *what)
{
	srv_sim_mpi_abort(what, 1);
}

static void check(int rc, const char *what)
{
	if (rc != MPI_SUCCESS)
		die(what);
}

int srv_sim_mpi_init(int *argc, char ***argv, int force)
{
	if (!force && !srv_sim_mpi_launched())
		return FL_OK;
	int provided = 0;
	if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
		return fl_error_set(FL_EIO, "MPI_Init_thread failed");
	g_up = 1;
	if (provided < MPI_THREAD_FUNNELED)
		die("the MPI library does not support MPI_THREAD_FUNNELED");
	check(MPI_Comm_rank(MPI_COMM_WORLD, &g_rank), "MPI_Comm_rank failed");
	check(MPI_Comm_size(MPI_COMM_WORLD, &g_size), "MPI_Comm_size failed");
	/* the polling sleeps are short: a timer slack of 1 us instead of the
	 * default 50 us keeps them so */
	prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
	if (g_rank > 0) { /* rank 0 alone prints; the others keep stderr for fatal errors */
		int fd = dup(2);
		g_err = fd >= 0 ? fdopen(fd, "w") : NULL;
		if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr))
			die("cannot silence stdout / stderr");
	}
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
	check(MPI_Allreduce(&mine, &low, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD),
	      "MPI_Allreduce failed");
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
	check(MPI_Bcast(&m, (int)sizeof(m), MPI_BYTE, low, MPI_COMM_WORLD), "MPI_Bcast failed");
	if (low == 0)
		return fl_error_set(m.code, "%s", m.msg);
	return fl_error_set(m.code, "rank %d: %s", low, m.msg);
}

/* Waits for a message from src with tag (polling, see sim_backoff) and
 * receives it into a new buffer. */
static uint8_t *recv_wait(int src, int tag, size_t *n)
{
	MPI_Status st;
	int flag = 0;
	unsigned b = 0;
	for (;;) {
		check(MPI_Iprobe(src, tag, MPI_COMM_WORLD, &flag, &st), "MPI_Iprobe failed");
		if (flag)
			break;
		sim_backoff(&b);
	}
	int count = 0;
	check(MPI_Get_count(&st, MPI_BYTE, &count), "MPI_Get_count failed");
	uint8_t *buf = malloc(count > 0 ? (size_t)count : 1);
	if (!buf)
		die("out of memory receiving a message");
	check(MPI_Recv(buf, count, MPI_BYTE, src, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE),
	      "MPI_Recv failed");
	*n = (size_t)count;
	return buf;
}

static void send_bytes(const uint8_t *buf, size_t n, int dst, int tag)
{
	if (n > INT_MAX)
		die("a message over 2 GB");
	check(MPI_Send(buf, (int)n, MPI_BYTE, dst, tag, MPI_COMM_WORLD), "MPI_Send failed");
}

/* ---- effects on the wire ---- */

static void fx_send(const struct sim_fxlist *fx, int dst)
{
	size_t n = FX_HEAD;
	for (int i = 0; i < fx->n; i++)
		n += FX_ITEM + (fx->v[i].buf ? fx->v[i].buf->len : 0);
	uint8_t *buf = malloc(n), *p = buf;
	if (!buf)
		die("out of memory sending a client's effects");
	uint64_t h[5] = {(uint64_t)fx->n, (uint64_t)fx->job, (uint64_t)fx->finished,
			 (uint64_t)fx->ready, (uint64_t)fx->nomem};
	memcpy(p, h, FX_HEAD);
	p += FX_HEAD;
	for (int i = 0; i < fx->n; i++) {
		uint64_t len = fx->v[i].buf ? fx->v[i].buf->len : 0;
		uint64_t item[2] = {(uint64_t)fx->v[i].kind, len};
		memcpy(p, item, FX_ITEM);
		p += FX_ITEM;
		if (len)
			memcpy(p, fx->v[i].buf->data, len);
		p += len;
	}
	send_bytes(buf, n, dst, TAG_FX);
	free(buf);
}

/* A message of a known kind and length that does not parse: not our peer. */
static void fx_decode(const uint8_t *p, size_t n, struct sim_fxlist *fx)
{
	uint64_t h[5];
	if (n < FX_HEAD)
		die("a short effects message");
	memcpy(h, p, FX_HEAD);
	size_t off = FX_HEAD;
	fx->job = h[1] != 0;
	fx->finished = h[2] != 0;
	fx->ready = h[3] != 0;
	fx->nomem = h[4] != 0;
	for (uint64_t i = 0; i < h[0]; i++) {
		uint64_t item[2];
		if (n - off < FX_ITEM)
			die("a truncated effects message");
		memcpy(item, p + off, FX_ITEM);
		off += FX_ITEM;
		if (item[0] < SIM_FX_UP || item[0] > SIM_FX_FAIL || item[1] > n - off)
			die("a bad effect in an effects message");
		struct fl_buf *b = NULL;
		if (item[0] == SIM_FX_UP || item[1] > 0) {
			if (!(b = fl_buf_new((size_t)item[1])))
				die("out of memory receiving a client's effects");
			memcpy(b->data, p + off, (size_t)item[1]);
		}
		off += (size_t)item[1];
		sim_fx_add(fx, (enum sim_fx_kind)item[0], b);
	}
	if (off != n)
		die("trailing bytes in an effects message");
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
	fx_decode(resp, n, fx);
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
		      "MPI_Iprobe failed");
		if (!flag)
			return n;
		check(MPI_Recv(&client, 1, MPI_INT, st.MPI_SOURCE, TAG_DONE, MPI_COMM_WORLD,
			       MPI_STATUS_IGNORE),
		      "MPI_Recv failed");
		if (client < 0 || client >= s->nclients || client % g_size != st.MPI_SOURCE ||
		    !s->clients[client].job)
			die("a finished job of a client without one");
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
			      "MPI_Recv failed");
	}
}

/* ---- ranks > 0 ---- */

/* Announces this rank's finished jobs to rank 0; how many. */
static int announce_done(struct sim *s)
{
	int n = 0;
	struct sim_task *d = sim_pool_take_done(&s->pool, 0);
	while (d) {
		struct sim_task *t = d;
		d = d->next;
		struct sim_cend *ce = sim_cend_of_task(t);
		if (!ce)
			die("a finished task that is no client's job");
		check(MPI_Send(&ce->index, 1, MPI_INT, 0, TAG_DONE, MPI_COMM_WORLD),
		      "MPI_Send failed");
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
	fx_send(&fx, 0);
	sim_fx_free(&fx);
	return h[0] != SIM_OP_END;
}

void sim_mpi_serve(struct sim *s)
{
	unsigned b = 0;
	for (;;) {
		MPI_Status st;
		int flag = 0;
		check(MPI_Iprobe(0, TAG_REQ, MPI_COMM_WORLD, &flag, &st), "MPI_Iprobe failed");
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
	int ended = -1;
	check(MPI_Send(&ended, 1, MPI_INT, 0, TAG_DONE, MPI_COMM_WORLD), "MPI_Send failed");
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
