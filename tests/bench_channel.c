/* bench_channel.c - fl-bench-channel: what the secure channel costs.
 *
 *  1. handshake: the full four-message handshake in memory, median of 200;
 *  2. a 10 MiB update in 1 MiB frames, in memory: seal + open versus a plain
 *     memcpy of the same bytes;
 *  3. the same update end to end over a loopback TCP connection (a writer
 *     thread, the reader here): plain frames through an fl_frame_reader
 *     versus sealed records through fl_channel_recv and the same reader.
 * Each figure is the median of several repetitions; one JSON line per
 * measurement on stdout, overhead_pct = 100 * (secure - plain) / plain.
 * Usage: fl-bench-channel [total_MiB] [frame_KiB] [reps]
 */
#include "channel.h"
#include "errors.h"
#include "identity.h"
#include "wire.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct fl_identity *g_server, *g_client;

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void die(const char *what)
{
	fprintf(stderr, "fl-bench-channel: %s: %s\n", what, fl_error_msg());
	exit(1);
}

static int allow_all(void *ctx, const uint8_t pk[32], const uint8_t *token, char *reason,
		     size_t cap)
{
	return 0;
}

static int count_bytes(void *ctx, const uint8_t *p, size_t n)
{
	*(size_t *)ctx += n;
	return 0;
}

static void make_pair(struct fl_channel **c, struct fl_channel **s, int insecure)
{
	struct fl_channel_config cc = {.insecure = insecure, .self = g_client,
				       .pinned_server_pk = fl_identity_pk(g_server)};
	struct fl_channel_config sc = {.insecure = insecure, .is_server = 1, .self = g_server,
				       .authorize = allow_all};
	if (fl_channel_new(&cc, c) || fl_channel_new(&sc, s))
		die("channel");
	struct fl_buf *b = NULL;
	if (fl_channel_start(*c, &b))
		die("start");
	struct fl_channel *to = *s, *from = *c;
	size_t junk = 0;
	while (b) {
		struct fl_buf *r = NULL;
		if (fl_channel_recv(to, b->data, b->len, count_bytes, &junk, &r))
			die("handshake");
		fl_buf_unref(b);
		b = r;
		struct fl_channel *t = to;
		to = from;
		from = t;
	}
	if (!fl_channel_established(*c) || !fl_channel_established(*s))
		die("not established");
}

static void bench_handshake(void)
{
	enum { N = 200 };
	double t[N];
	for (int i = 0; i < N; i++) {
		struct fl_channel *c, *s;
		double t0 = now_ms();
		make_pair(&c, &s, 0);
		t[i] = now_ms() - t0;
		fl_channel_free(c);
		fl_channel_free(s);
	}
	printf("{\"bench\":\"channel_handshake\",\"n\":%d,\"median_ms\":%.4f}\n", N, median(t, N));
}

static void bench_memory(const uint8_t *src, size_t total, size_t frame, int reps)
{
	double tp[64], ts[64];
	uint8_t *dst = malloc(total);
	for (int r = 0; r < reps; r++) {
		double t0 = now_ms();
		for (size_t off = 0; off < total; off += frame)
			memcpy(dst + off, src + off, frame);
		tp[r] = now_ms() - t0;
		struct fl_channel *c, *s;
		make_pair(&c, &s, 0);
		size_t got = 0;
		t0 = now_ms();
		for (size_t off = 0; off < total; off += frame) {
			struct fl_buf *rec = NULL, *reply = NULL;
			if (fl_channel_seal(c, src + off, frame, &rec) ||
			    fl_channel_recv(s, rec->data, rec->len, count_bytes, &got, &reply))
				die("seal/open");
			fl_buf_unref(rec);
		}
		ts[r] = now_ms() - t0;
		if (got != total)
			die("lost bytes");
		fl_channel_free(c);
		fl_channel_free(s);
	}
	free(dst);
	double p = median(tp, reps), s = median(ts, reps);
	printf("{\"bench\":\"channel_memory\",\"bytes\":%zu,\"frame\":%zu,\"plain_memcpy_ms\":%.3f,"
	       "\"seal_open_ms\":%.3f,\"seal_open_MBps\":%.1f,\"overhead_pct\":%.1f}\n",
	       total, frame, p, s, (double)total / 1e3 / s, 100.0 * (s - p) / p);
}

/* ---- loopback TCP ---- */
struct writer {
	int fd;
	struct fl_channel *ch; /* NULL: plain frames */
	struct fl_buf **frames;
	size_t nframes;
};

static void write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w <= 0) {
			perror("write");
			exit(1);
		}
		p += w;
		n -= (size_t)w;
	}
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	for (size_t i = 0; i < w->nframes; i++) {
		struct fl_buf *out = w->frames[i];
		if (w->ch && fl_channel_seal_buf(w->ch, w->frames[i], &out))
			die("seal");
		write_all(w->fd, out->data, out->len);
		if (w->ch)
			fl_buf_unref(out);
	}
	return NULL;
}

static void tcp_pair(int *a, int *b)
{
	int l = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(addr);
	if (l < 0 || bind(l, (struct sockaddr *)&addr, sizeof(addr)) || listen(l, 1) ||
	    getsockname(l, (struct sockaddr *)&addr, &len)) {
		perror("listen");
		exit(1);
	}
	*a = socket(AF_INET, SOCK_STREAM, 0);
	if (*a < 0 || connect(*a, (struct sockaddr *)&addr, sizeof(addr))) {
		perror("connect");
		exit(1);
	}
	*b = accept(l, NULL, NULL);
	close(l);
	int one = 1;
	setsockopt(*a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int on_frame(void *ctx, const uint8_t *payload, size_t n)
{
	*(size_t *)ctx += n;
	return 0;
}

struct rx {
	struct fl_frame_reader fr;
	size_t payload;
};

static int to_reader(void *ctx, const uint8_t *p, size_t n)
{
	struct rx *rx = ctx;
	return fl_frame_reader_feed(&rx->fr, p, n, on_frame, &rx->payload);
}

/* ms to move the frames from a writer thread to here. */
static double tcp_once(struct fl_buf **frames, size_t nframes, size_t payload, int secure)
{
	struct fl_channel *c, *s;
	make_pair(&c, &s, !secure);
	int a, b;
	tcp_pair(&a, &b);
	struct rx rx;
	fl_frame_reader_init(&rx.fr, FL_WIRE_MAX_FRAME_DEFAULT);
	rx.payload = 0;
	static uint8_t buf[1 << 16];
	struct writer w = {a, c, frames, nframes};
	double t0 = now_ms();
	pthread_t th;
	pthread_create(&th, NULL, writer_main, &w);
	while (rx.payload < payload) {
		ssize_t r = read(b, buf, sizeof(buf));
		if (r <= 0) {
			perror("read");
			exit(1);
		}
		struct fl_buf *reply = NULL;
		if (fl_channel_recv(s, buf, (size_t)r, to_reader, &rx, &reply))
			die("recv");
	}
	double t = now_ms() - t0;
	pthread_join(th, NULL);
	close(a);
	close(b);
	fl_frame_reader_free(&rx.fr);
	fl_channel_free(c);
	fl_channel_free(s);
	return t;
}

static void bench_tcp(const uint8_t *src, size_t total, size_t frame, int reps)
{
	size_t n = total / frame;
	struct fl_buf **frames = calloc(n, sizeof(*frames));
	for (size_t i = 0; i < n; i++) {
		frames[i] = fl_buf_new(4 + frame);
		frames[i]->data[0] = (uint8_t)(frame >> 24);
		frames[i]->data[1] = (uint8_t)(frame >> 16);
		frames[i]->data[2] = (uint8_t)(frame >> 8);
		frames[i]->data[3] = (uint8_t)frame;
		memcpy(frames[i]->data + 4, src + i * frame, frame);
	}
	double tp[64], ts[64];
	tcp_once(frames, n, n * frame, 0); /* warm-up */
	for (int r = 0; r < reps; r++) {
		tp[r] = tcp_once(frames, n, n * frame, 0);
		ts[r] = tcp_once(frames, n, n * frame, 1);
	}
	double p = median(tp, reps), s = median(ts, reps);
	printf("{\"bench\":\"channel_tcp_loopback\",\"bytes\":%zu,\"frame\":%zu,\"reps\":%d,"
	       "\"plain_ms\":%.3f,\"secure_ms\":%.3f,\"plain_MBps\":%.1f,\"secure_MBps\":%.1f,"
	       "\"overhead_pct\":%.1f}\n",
	       n * frame, frame, reps, p, s, (double)(n * frame) / 1e3 / p,
	       (double)(n * frame) / 1e3 / s, 100.0 * (s - p) / p);
	for (size_t i = 0; i < n; i++)
		fl_buf_unref(frames[i]);
	free(frames);
}

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 10;
	size_t frame = (argc > 2 ? (size_t)atol(argv[2]) : 1024) * 1024;
	int reps = argc > 3 ? atoi(argv[3]) : 9;
	if (!mib || !frame || reps < 1 || reps > 64 || frame > FL_WIRE_MAX_FRAME_DEFAULT) {
		fprintf(stderr, "usage: fl-bench-channel [total_MiB] [frame_KiB <= 4096] [reps <= 64]\n");
		return 2;
	}
	if (fl_identity_generate(&g_server) || fl_identity_generate(&g_client))
		die("keys");
	size_t total = mib << 20;
	total -= total % frame;
	uint8_t *src = malloc(total);
	for (size_t i = 0; i < total; i++)
		src[i] = (uint8_t)(i * 2654435761u >> 11);
	bench_handshake();
	bench_memory(src, total, frame, reps);
	bench_tcp(src, total, frame, reps);
	free(src);
	fl_identity_free(g_server);
	fl_identity_free(g_client);
	return 0;
}
