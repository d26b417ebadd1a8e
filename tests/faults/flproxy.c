/* flproxy.c - fl-faultproxy, a fault-injecting TCP proxy for the fault
 * runs (tests/faults/run.sh), in the manner of toxiproxy's toxics. It
 * accepts on --listen, connects each accepted connection to --upstream and
 * forwards both directions through a queue of timed pieces that the
 * selected faults shape: latency and jitter, a bandwidth cap, stalls (no
 * forwarding for a while), resets (both sides closed with RST), slicing
 * into 1-7 byte writes and bit flips. Every choice comes from a generator
 * seeded with --seed and the connection's number, so a run's fault
 * decisions depend only on the bytes seen. It prints its fault counts on
 * SIGTERM / SIGINT (stderr and --stats FILE). It knows nothing of the
 * fedloha protocol and does not parse what it forwards. */
#include <uv.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HIGH_WATER (4u << 20) /* queued bytes that pause the reading side */
#define LOW_WATER (1u << 20)

struct opts {
	const char *listen, *upstream, *stats;
	uint64_t seed;
	double latency, jitter;   /* ms */
	double bandwidth;         /* KiB/s, 0 = unlimited */
	double stall_p, stall_ms; /* per read */
	double reset_p;           /* per read */
	double slice_p;           /* per read: the read goes out in 1-7 byte writes */
	double corrupt_p;         /* per byte: one random bit flipped */
	uint64_t skip;            /* bytes per direction left alone at a connection's start */
	uint64_t until;           /* no flips from this offset of a direction on (0: none) */
};

struct counts {
	uint64_t conns, resets, stalls, sliced, pieces, flipped, bytes[2];
};

struct piece {
	struct piece *next;
	double due;
	size_t len;
	char data[];
};

struct conn;
struct dir {
	struct conn *c;
	uv_tcp_t *src, *dst;
	uv_timer_t timer;
	struct piece *head, *tail;
	size_t queued; /* in the queue or being written */
	double last_due, next_free;
	uint64_t seen;
	int eof, paused, writing;
};

struct conn {
	uv_tcp_t down, up; /* accepted side, upstream side */
	uv_connect_t creq;
	struct dir d[2]; /* 0: down -> up, 1: up -> down */
	uint64_t rng;
	int closing, open_handles;
};

struct wreq {
	uv_write_t req;
	struct dir *d;
	struct piece *p;
};

static struct opts O = {.stall_ms = 2000};
static struct counts N;
static uv_loop_t *loop;
static struct sockaddr_storage up_addr;

static uint64_t next_u64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static double unif(uint64_t *s)
{
	return (double)(next_u64(s) >> 11) * (1.0 / 9007199254740992.0);
}

/* Sockets carry their conn in data, timers their direction. */
static void free_conn_cb(uv_handle_t *h)
{
	struct conn *c = h->type == UV_TIMER ? ((struct dir *)h->data)->c : h->data;
	if (--c->open_handles)
		return;
	for (int i = 0; i < 2; i++)
		while (c->d[i].head) {
			struct piece *p = c->d[i].head;
			c->d[i].head = p->next;
			free(p);
		}
	free(c);
}

static void close_handle(uv_handle_t *h)
{
	if (!uv_is_closing(h))
		uv_close(h, free_conn_cb);
}

/* Closes both sides (with RST when reset is set) and the timers. */
static void close_conn(struct conn *c, int reset)
{
	if (c->closing)
		return;
	c->closing = 1;
	for (int i = 0; i < 2; i++) {
		uv_tcp_t *t = i ? &c->up : &c->down;
		if (reset && uv_tcp_close_reset(t, free_conn_cb) == 0)
			continue;
		close_handle((uv_handle_t *)t);
	}
	close_handle((uv_handle_t *)&c->d[0].timer);
	close_handle((uv_handle_t *)&c->d[1].timer);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	(void)h;
	buf->base = malloc(hint);
	buf->len = buf->base ? hint : 0;
}

static struct dir *dir_of_src(struct conn *c, uv_stream_t *s)
{
	return (uv_tcp_t *)s == &c->down ? &c->d[0] : &c->d[1];
}

/* A direction whose source ended and whose queue is empty ends the conn. */
static void maybe_finish(struct dir *d)
{
	if (d->eof && !d->head && !d->writing)
		close_conn(d->c, 0);
}

static void write_cb(uv_write_t *req, int status)
{
	struct wreq *w = (struct wreq *)req;
	struct dir *d = w->d;
	d->queued -= w->p->len;
	d->writing--;
	free(w->p);
	free(w);
	if (d->c->closing)
		return;
	if (status < 0) {
		close_conn(d->c, 0);
		return;
	}
	if (d->paused && d->queued < LOW_WATER) {
		d->paused = 0;
		uv_read_start((uv_stream_t *)d->src, alloc_cb, on_read);
	}
	maybe_finish(d);
}

/* Writes every piece that is due; re-arms the timer for the next one. */
static void flush_cb(uv_timer_t *t)
{
	struct dir *d = t->data;
	double now = (double)uv_now(loop);
	while (d->head && d->head->due <= now && !d->c->closing) {
		struct piece *p = d->head;
		d->head = p->next;
		if (!d->head)
			d->tail = NULL;
		struct wreq *w = malloc(sizeof(*w));
		if (!w) {
			free(p);
			close_conn(d->c, 0);
			return;
		}
		w->d = d;
		w->p = p;
		d->writing++;
		uv_buf_t b = uv_buf_init(p->data, (unsigned)p->len);
		if (uv_write(&w->req, (uv_stream_t *)d->dst, &b, 1, write_cb) < 0) {
			d->writing--;
			free(p);
			free(w);
			close_conn(d->c, 0);
			return;
		}
	}
	if (d->c->closing)
		return;
	if (d->head)
		uv_timer_start(&d->timer, flush_cb, (uint64_t)(d->head->due - now) + 1, 0);
	else
		maybe_finish(d);
}

static int enqueue(struct dir *d, const char *data, size_t len, double now)
{
	struct piece *p = malloc(sizeof(*p) + len);
	if (!p)
		return -1;
	memcpy(p->data, data, len);
	p->len = len;
	p->next = NULL;
	double due = now + O.latency + (O.jitter > 0 ? unif(&d->c->rng) * O.jitter : 0);
	if (due < d->last_due)
		due = d->last_due;
	if (due < d->next_free)
		due = d->next_free;
	if (O.bandwidth > 0)
		d->next_free = due + (double)len / (O.bandwidth * 1.024);
	p->due = d->last_due = due;
	if (d->tail)
		d->tail->next = p;
	else
		d->head = p;
	d->tail = p;
	d->queued += len;
	N.pieces++;
	return 0;
}

/* Flips one random bit of a byte with probability corrupt_p per byte,
 * after the first `skip` bytes of the direction and before offset `until`
 * (--corrupt-until 400 reaches only the handshake). */
static void corrupt(struct dir *d, char *b, size_t n)
{
	for (size_t i = 0; i < n; i++, d->seen++)
		if (d->seen >= O.skip && (!O.until || d->seen < O.until) &&
		    unif(&d->c->rng) < O.corrupt_p) {
			b[i] ^= (char)(1u << (next_u64(&d->c->rng) & 7));
			N.flipped++;
		}
}

static void shape(struct dir *d, char *b, size_t n)
{
	struct conn *c = d->c;
	double now = (double)uv_now(loop);
	if (O.stall_p > 0 && unif(&c->rng) < O.stall_p) {
		double from = d->next_free > now ? d->next_free : now;
		d->next_free = from + O.stall_ms;
		N.stalls++;
	}
	if (O.corrupt_p > 0)
		corrupt(d, b, n);
	else
		d->seen += n;
	int slice = O.slice_p > 0 && unif(&c->rng) < O.slice_p;
	N.sliced += (uint64_t)slice;
	for (size_t off = 0; off < n;) {
		size_t k = slice ? 1 + (size_t)(next_u64(&c->rng) % 7) : n - off;
		if (k > n - off)
			k = n - off;
		if (enqueue(d, b + off, k, now) < 0) {
			close_conn(c, 0);
			return;
		}
		off += k;
	}
	if (!uv_is_active((uv_handle_t *)&d->timer) && d->head)
		uv_timer_start(&d->timer, flush_cb, 0, 0);
	if (d->queued > HIGH_WATER && !d->paused) {
		d->paused = 1;
		uv_read_stop((uv_stream_t *)d->src);
	}
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct conn *c = s->data;
	struct dir *d = dir_of_src(c, s);
	if (c->closing || n == 0) {
		free(buf->base);
		return;
	}
	if (n < 0) {
		free(buf->base);
		d->eof = 1;
		uv_read_stop(s);
		maybe_finish(d);
		return;
	}
	N.bytes[d == &c->d[1]] += (uint64_t)n;
	if (O.reset_p > 0 && unif(&c->rng) < O.reset_p) {
		free(buf->base);
		N.resets++;
		close_conn(c, 1);
		return;
	}
	shape(d, buf->base, (size_t)n);
	free(buf->base);
}

static void on_upstream(uv_connect_t *req, int status)
{
	struct conn *c = req->data;
	if (c->closing)
		return;
	if (status < 0) {
		fprintf(stderr, "fl-faultproxy: upstream %s: %s\n", O.upstream,
			uv_strerror(status));
		close_conn(c, 0);
		return;
	}
	uv_tcp_nodelay(&c->up, 1);
	uv_read_start((uv_stream_t *)&c->down, alloc_cb, on_read);
	uv_read_start((uv_stream_t *)&c->up, alloc_cb, on_read);
}

static void on_accept(uv_stream_t *server, int status)
{
	if (status < 0)
		return;
	struct conn *c = calloc(1, sizeof(*c));
	if (!c)
		return;
	c->rng = O.seed * 0x100000001b3ull + N.conns++;
	uv_tcp_init(loop, &c->down);
	uv_tcp_init(loop, &c->up);
	c->open_handles = 4;
	c->down.data = c->up.data = c;
	for (int i = 0; i < 2; i++) {
		struct dir *d = &c->d[i];
		d->c = c;
		d->src = i ? &c->up : &c->down;
		d->dst = i ? &c->down : &c->up;
		uv_timer_init(loop, &d->timer);
		d->timer.data = d;
	}
	c->creq.data = c;
	if (uv_accept(server, (uv_stream_t *)&c->down) < 0 ||
	    uv_tcp_connect(&c->creq, &c->up, (struct sockaddr *)&up_addr, on_upstream) < 0) {
		close_conn(c, 0);
		return;
	}
	uv_tcp_nodelay(&c->down, 1);
}

static void print_counts(FILE *f)
{
	fprintf(f,
		"conns %llu resets %llu stalls %llu sliced %llu pieces %llu flipped %llu "
		"bytes up %llu down %llu\n",
		(unsigned long long)N.conns, (unsigned long long)N.resets,
		(unsigned long long)N.stalls, (unsigned long long)N.sliced,
		(unsigned long long)N.pieces, (unsigned long long)N.flipped,
		(unsigned long long)N.bytes[0], (unsigned long long)N.bytes[1]);
}

static void on_signal(uv_signal_t *s, int signum)
{
	(void)s;
	fprintf(stderr, "fl-faultproxy: signal %d: ", signum);
	print_counts(stderr);
	if (O.stats) {
		FILE *f = fopen(O.stats, "w");
		if (f) {
			print_counts(f);
			fclose(f);
		}
	}
	exit(0);
}

static int parse_addr(const char *s, struct sockaddr_storage *out)
{
	char host[256];
	const char *colon = strrchr(s, ':');
	if (!colon || colon == s || (size_t)(colon - s) >= sizeof(host))
		return -1;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = 0;
	char *end;
	long port = strtol(colon + 1, &end, 10);
	if (*end || port < 0 || port > 65535)
		return -1;
	return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)out) == 0 ? 0 : -1;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: fl-faultproxy --listen HOST:PORT --upstream HOST:PORT [--seed S]\n"
		   "  [--latency MS] [--jitter MS] [--bandwidth KIB_PER_S]\n"
		   "  [--stall P] [--stall-ms MS (2000)] [--reset P] [--slice P]\n"
		   "  [--corrupt P] [--skip BYTES] [--corrupt-until BYTES] [--stats FILE]\n"
		   "P is a probability per read (stall, reset, slice) or per byte (corrupt);\n"
		   "--skip leaves the first BYTES of each direction of a connection alone,\n"
		   "--corrupt-until every byte from offset BYTES on.\n");
}

static int num(const char *name, const char *v, double lo, double hi, double *out)
{
	char *end;
	errno = 0;
	double x = strtod(v, &end);
	if (errno || end == v || *end || !(x >= lo && x <= hi)) {
		fprintf(stderr, "fl-faultproxy: --%s: '%s' is not a number in [%g, %g]\n", name, v,
			lo, hi);
		return -1;
	}
	*out = x;
	return 0;
}

static int parse(int argc, char **argv)
{
	static const struct option lo[] = {{"listen", 1, 0, 'l'},        {"upstream", 1, 0, 'u'},
					   {"seed", 1, 0, 's'},          {"latency", 1, 0, 'L'},
					   {"jitter", 1, 0, 'J'},        {"bandwidth", 1, 0, 'B'},
					   {"stall", 1, 0, 'S'},         {"stall-ms", 1, 0, 'T'},
					   {"reset", 1, 0, 'R'},         {"slice", 1, 0, 'C'},
					   {"corrupt", 1, 0, 'X'},       {"skip", 1, 0, 'K'},
					   {"corrupt-until", 1, 0, 'U'}, {"stats", 1, 0, 'o'},
					   {"help", 0, 0, 'h'},          {0, 0, 0, 0}};
	int ch, bad = 0;
	double x;
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'l': O.listen = optarg; break;
		case 'u': O.upstream = optarg; break;
		case 'o': O.stats = optarg; break;
		case 's':
			bad |= num("seed", optarg, 0, 1e18, &x);
			O.seed = (uint64_t)x;
			break;
		case 'L': bad |= num("latency", optarg, 0, 600000, &O.latency); break;
		case 'J': bad |= num("jitter", optarg, 0, 600000, &O.jitter); break;
		case 'B': bad |= num("bandwidth", optarg, 0, 1e9, &O.bandwidth); break;
		case 'S': bad |= num("stall", optarg, 0, 1, &O.stall_p); break;
		case 'T': bad |= num("stall-ms", optarg, 0, 600000, &O.stall_ms); break;
		case 'R': bad |= num("reset", optarg, 0, 1, &O.reset_p); break;
		case 'C': bad |= num("slice", optarg, 0, 1, &O.slice_p); break;
		case 'X': bad |= num("corrupt", optarg, 0, 1, &O.corrupt_p); break;
		case 'K':
			bad |= num("skip", optarg, 0, 1e15, &x);
			O.skip = (uint64_t)x;
			break;
		case 'U':
			bad |= num("corrupt-until", optarg, 0, 1e15, &x);
			O.until = (uint64_t)x;
			break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return -1;
		}
	}
	if (bad || optind != argc || !O.listen || !O.upstream) {
		if (!bad)
			usage(stderr);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (parse(argc, argv) < 0)
		return 2;
	struct sockaddr_storage la;
	if (parse_addr(O.listen, &la) < 0 || parse_addr(O.upstream, &up_addr) < 0) {
		fprintf(stderr, "fl-faultproxy: --listen / --upstream: want IPv4 HOST:PORT\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN); /* a reset peer is an error to handle, not a death */
	loop = uv_default_loop();
	uv_tcp_t server;
	uv_tcp_init(loop, &server);
	int err = uv_tcp_bind(&server, (struct sockaddr *)&la, 0);
	if (!err)
		err = uv_listen((uv_stream_t *)&server, 128, on_accept);
	if (err) {
		fprintf(stderr, "fl-faultproxy: listen %s: %s\n", O.listen, uv_strerror(err));
		return 1;
	}
	uv_signal_t st, si;
	uv_signal_init(loop, &st);
	uv_signal_init(loop, &si);
	uv_signal_start(&st, on_signal, SIGTERM);
	uv_signal_start(&si, on_signal, SIGINT);
	fprintf(stderr, "fl-faultproxy: %s -> %s\n", O.listen, O.upstream);
	return uv_run(loop, UV_RUN_DEFAULT);
}
