/* bench_channel.c - fl-bench-channel: what the secure channel costs, for
 * both record layers (AES-256-GCM, the default where the CPU has AES-NI,
 * and XChaCha20 secretstream, the fallback):
 *
 *  1. handshake: the full four-message handshake in memory, median of 200;
 *  2. a 10 MiB update in 1 MiB frames, in memory: seal, open, and seal +
 *     open versus a plain memcpy of the same bytes; for AES-256-GCM also
 *     libsodium's cipher alone on the same records in the same pattern
 *     (raw_libsodium_*_MBps, the ceiling) and the channel's fraction of it
 *     (seal_of_raw, open_of_raw);
 *  3. the same update end to end over a loopback TCP connection and over an
 *     AF_UNIX socketpair (a writer thread, the reader here): plain frames
 *     through an fl_frame_reader versus sealed records through
 *     fl_channel_recv and the same reader, "serial" (the writer seals then
 *     writes; the reader reads then opens, like the daemons' loop) and
 *     "pipelined" (a sealing thread feeds a writing thread through a small
 *     queue, a reading thread feeds the opening one, so crypto overlaps the
 *     socket copies; how a transport could do it with a worker thread).
 *  4. the TCP run once more with the writer paced to a real link's speed
 *     (default 125 MB/s = 1 Gbit/s): what the channel costs when the
 *     network, not the loopback copy, sets the pace.
 * Each figure is the median of reps repetitions (plain and secure runs
 * interleaved); one JSON line per measurement on stdout, ratio = secure /
 * plain time, overhead_pct = 100 * (ratio - 1), and the CPU time both ends
 * spent (plain_cpu_ms, secure_cpu_ms: all threads, user + system; with both
 * ends on one machine, time >= CPU time / cores).
 * Usage: fl-bench-channel [total_MiB] [frame_KiB] [reps] [paced_link_MBps]
 */
#include "benchutil.h"
#include "bytes.h"
#include "channel.h"
#include "errors.h"
#include "identity.h"
#include "wire.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct fl_identity *g_server, *g_client;

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

/* mode: 0 plain (insecure), 1 AES-256-GCM, 2 secretstream */
enum {
	PLAIN,
	AES,
	CHACHA
};
static const char *const mode_name[] = {"plain", "aes-256-gcm", "xchacha20-poly1305"};

static void make_pair(struct fl_channel **c, struct fl_channel **s, int mode)
{
	struct fl_channel_config cc = {.insecure = mode == PLAIN,
				       .self = g_client,
				       .pinned_server_pk = fl_identity_pk(g_server),
				       .disable_aes = mode == CHACHA};
	struct fl_channel_config sc = {.insecure = mode == PLAIN,
				       .is_server = 1,
				       .self = g_server,
				       .authorize = allow_all,
				       .disable_aes = mode == CHACHA};
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
	if (strcmp(fl_channel_cipher(*c), mode == PLAIN ? "none" : mode_name[mode]) != 0)
		die("unexpected cipher");
}

static void bench_handshake(int mode)
{
	enum {
		N = 200
	};
	double t[N];
	for (int i = 0; i < N; i++) {
		struct fl_channel *c, *s;
		double t0 = (1e3 * fl_now_seconds());
		make_pair(&c, &s, mode);
		t[i] = (1e3 * fl_now_seconds()) - t0;
		fl_channel_free(c);
		fl_channel_free(s);
	}
	printf("{\"bench\":\"channel_handshake\",\"cipher\":\"%s\",\"n\":%d,\"median_ms\":%.4f}\n",
	       mode_name[mode], N, fl_bench_median(t, N));
}

/* libsodium's AES-256-GCM alone, the ceiling of the channel's AES record
 * layer: the same records (frame bytes, 5 bytes of associated data, a
 * counter nonce) in the same pattern as bench_memory (each record sealed
 * into one reused buffer, then opened into another); ms per total bytes. */
static void raw_aes(const uint8_t *src, size_t total, size_t frame, double *enc, double *dec)
{
	static crypto_aead_aes256gcm_state st;
	uint8_t key[32], nonce[12] = {0}, ad[5] = {0}, tag[16];
	randombytes_buf(key, sizeof(key));
	crypto_aead_aes256gcm_beforenm(&st, key);
	uint8_t *ct = malloc(frame), *pt = malloc(frame);
	*enc = *dec = 0;
	for (size_t off = 0; off < total; off += frame) {
		nonce[11]++;
		double t1 = (1e3 * fl_now_seconds());
		crypto_aead_aes256gcm_encrypt_detached_afternm(ct, tag, NULL, src + off, frame, ad,
							       sizeof(ad), NULL, nonce, &st);
		double t2 = (1e3 * fl_now_seconds());
		if (crypto_aead_aes256gcm_decrypt_detached_afternm(pt, NULL, ct, frame, tag, ad,
								   sizeof(ad), nonce, &st))
			die("raw open");
		double t3 = (1e3 * fl_now_seconds());
		*enc += t2 - t1;
		*dec += t3 - t2;
	}
	free(ct);
	free(pt);
}

/* Seal and open alternate frame by frame (one record alive at a time, as
 * in a transport), each call timed on its own; with AES-256-GCM, the raw
 * libsodium loop of the same records runs in each repetition too. */
static void bench_memory(const uint8_t *src, size_t total, size_t frame, int reps, int mode)
{
	double tp[64], tseal[64], topen[64], both[64], renc[64], rdec[64];
	uint8_t *dst = malloc(total);
	for (int r = 0; r < reps; r++) {
		double t0 = (1e3 * fl_now_seconds());
		for (size_t off = 0; off < total; off += frame)
			memcpy(dst + off, src + off, frame);
		tp[r] = (1e3 * fl_now_seconds()) - t0;
		if (mode == AES)
			raw_aes(src, total, frame, &renc[r], &rdec[r]);
		struct fl_channel *c, *s;
		make_pair(&c, &s, mode);
		size_t got = 0;
		tseal[r] = topen[r] = 0;
		for (size_t off = 0; off < total; off += frame) {
			struct fl_buf *rec = NULL, *reply = NULL;
			double t1 = (1e3 * fl_now_seconds());
			if (fl_channel_seal(c, src + off, frame, &rec))
				die("seal");
			double t2 = (1e3 * fl_now_seconds());
			if (fl_channel_recv(s, rec->data, rec->len, count_bytes, &got, &reply))
				die("open");
			double t3 = (1e3 * fl_now_seconds());
			tseal[r] += t2 - t1;
			topen[r] += t3 - t2;
			fl_buf_unref(rec);
		}
		both[r] = tseal[r] + topen[r];
		if (got != total)
			die("lost bytes");
		fl_channel_free(c);
		fl_channel_free(s);
	}
	free(dst);
	double p = fl_bench_median(tp, reps), so = fl_bench_median(both, reps);
	double se = fl_bench_median(tseal, reps), op = fl_bench_median(topen, reps);
	printf("{\"bench\":\"channel_memory\",\"cipher\":\"%s\",\"bytes\":%zu,\"frame\":%zu,"
	       "\"plain_memcpy_ms\":%.3f,\"seal_ms\":%.3f,\"open_ms\":%.3f,\"seal_MBps\":%.1f,"
	       "\"open_MBps\":%.1f,\"seal_open_ms\":%.3f,\"overhead_pct\":%.1f",
	       mode_name[mode], total, frame, p, se, op, (double)total / 1e3 / se,
	       (double)total / 1e3 / op, so, 100.0 * (so - p) / p);
	if (mode == AES) {
		double re = fl_bench_median(renc, reps), rd = fl_bench_median(rdec, reps);
		printf(",\"raw_libsodium_seal_MBps\":%.1f,\"raw_libsodium_open_MBps\":%.1f,"
		       "\"seal_of_raw\":%.3f,\"open_of_raw\":%.3f",
		       (double)total / 1e3 / re, (double)total / 1e3 / rd, re / se, rd / op);
	}
	printf("}\n");
}

/* ---- a small blocking queue between pipeline stages ---- */
#define QCAP 2 /* records or chunks in flight between two stages */
struct queue {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	void *item[QCAP];
	size_t len[QCAP];
	int head, count;
};

static void queue_init(struct queue *q)
{
	memset(q, 0, sizeof(*q));
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->cv, NULL);
}

static void queue_free(struct queue *q)
{
	pthread_mutex_destroy(&q->mu);
	pthread_cond_destroy(&q->cv);
}

static void queue_push(struct queue *q, void *item, size_t len)
{
	pthread_mutex_lock(&q->mu);
	while (q->count == QCAP)
		pthread_cond_wait(&q->cv, &q->mu);
	int i = (q->head + q->count) % QCAP;
	q->item[i] = item;
	q->len[i] = len;
	q->count++;
	pthread_cond_broadcast(&q->cv);
	pthread_mutex_unlock(&q->mu);
}

static void *queue_pop(struct queue *q, size_t *len)
{
	pthread_mutex_lock(&q->mu);
	while (q->count == 0)
		pthread_cond_wait(&q->cv, &q->mu);
	void *item = q->item[q->head];
	*len = q->len[q->head];
	q->head = (q->head + 1) % QCAP;
	q->count--;
	pthread_cond_broadcast(&q->cv);
	pthread_mutex_unlock(&q->mu);
	return item;
}

/* ---- streaming over a socket ---- */
struct writer {
	int fd, pipelined;
	double link_MBps, t0; /* > 0: the writer paces itself to this link speed */
	size_t sent;
	struct fl_channel *ch; /* insecure: plain frames */
	struct fl_buf **frames;
	size_t nframes;
	struct queue q; /* pipelined: sealed records, NULL at the end */
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

/* A link of link_MBps: the next byte leaves no earlier than its slot. */
static void pace_and_write(struct writer *w, const uint8_t *p, size_t n)
{
	if (w->link_MBps > 0) {
		double due = w->t0 + (double)w->sent / 1e3 / w->link_MBps;
		double wait = due - (1e3 * fl_now_seconds());
		if (wait > 0) {
			long long ns = (long long)(wait * 1e6);
			struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
			nanosleep(&ts, NULL);
		}
	}
	write_all(w->fd, p, n);
	w->sent += n;
}

static void *sealer_main(void *arg)
{
	struct writer *w = arg;
	for (size_t i = 0; i < w->nframes; i++) {
		struct fl_buf *out = NULL;
		if (fl_channel_seal_buf(w->ch, w->frames[i], &out))
			die("seal");
		queue_push(&w->q, out, 0);
	}
	queue_push(&w->q, NULL, 0);
	return NULL;
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	if (w->pipelined) {
		pthread_t th;
		pthread_create(&th, NULL, sealer_main, w);
		size_t unused;
		struct fl_buf *out;
		while ((out = queue_pop(&w->q, &unused)) != NULL) {
			pace_and_write(w, out->data, out->len);
			fl_buf_unref(out);
		}
		pthread_join(th, NULL);
		return NULL;
	}
	for (size_t i = 0; i < w->nframes; i++) {
		struct fl_buf *out = NULL;
		if (fl_channel_seal_buf(w->ch, w->frames[i], &out))
			die("seal");
		pace_and_write(w, out->data, out->len);
		fl_buf_unref(out);
	}
	return NULL;
}

static void tcp_pair(int *a, int *b)
{
	int l = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in addr = {.sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
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

/* pipelined receive: this thread reads into rotating chunks, the opener
 * (the caller) decrypts them. NCHUNK > QCAP + 1 so a chunk is never reused
 * while queued or being opened. */
#define CHUNK (1 << 18)
#define NCHUNK (QCAP + 2)
struct reader {
	int fd;
	size_t want; /* bytes on the wire */
	uint8_t *chunk[NCHUNK];
	struct queue q;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	size_t got = 0;
	for (int k = 0; got < r->want; k = (k + 1) % NCHUNK) {
		ssize_t n = read(r->fd, r->chunk[k], CHUNK);
		if (n <= 0) {
			perror("read");
			exit(1);
		}
		got += (size_t)n;
		queue_push(&r->q, r->chunk[k], (size_t)n);
	}
	return NULL;
}

/* The process's CPU time (all threads, user + system), ms. */
static double cpu_ms(void)
{
	struct rusage u;
	getrusage(RUSAGE_SELF, &u);
	return 1e3 * (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
	       1e-3 * (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

/* ms to move the frames from a writer thread to here; *cpu: the CPU ms
 * both ends spent meanwhile. */
static double stream_once(struct fl_buf **frames, size_t nframes, size_t payload, int mode,
			  int unix_sock, int pipelined, double link_MBps, double *cpu)
{
	struct fl_channel *c, *s;
	make_pair(&c, &s, mode);
	int a, b, sv[2];
	if (unix_sock) {
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) {
			perror("socketpair");
			exit(1);
		}
		a = sv[0];
		b = sv[1];
	} else {
		tcp_pair(&a, &b);
	}
	size_t wire = 0;
	for (size_t i = 0; i < nframes; i++)
		wire += frames[i]->len + (mode == PLAIN ? 0 : 4 + FL_CHANNEL_RECORD_OVERHEAD);
	struct rx rx;
	fl_frame_reader_init(&rx.fr, FL_WIRE_MAX_FRAME_DEFAULT);
	rx.payload = 0;
	static uint8_t buf[CHUNK];
	struct writer w = {.fd = a,
			   .pipelined = pipelined,
			   .ch = c,
			   .frames = frames,
			   .nframes = nframes,
			   .link_MBps = link_MBps};
	struct reader rd = {.fd = b, .want = wire};
	queue_init(&w.q);
	queue_init(&rd.q);
	if (pipelined)
		for (int k = 0; k < NCHUNK; k++)
			rd.chunk[k] = malloc(CHUNK);
	double c0 = cpu_ms(), t0 = (1e3 * fl_now_seconds());
	w.t0 = t0;
	pthread_t th, thr;
	pthread_create(&th, NULL, writer_main, &w);
	if (pipelined)
		pthread_create(&thr, NULL, reader_main, &rd);
	while (rx.payload < payload) {
		const uint8_t *p = buf;
		size_t len;
		if (pipelined) {
			p = queue_pop(&rd.q, &len);
		} else {
			ssize_t r = read(b, buf, sizeof(buf));
			if (r <= 0) {
				perror("read");
				exit(1);
			}
			len = (size_t)r;
		}
		struct fl_buf *reply = NULL;
		if (fl_channel_recv(s, p, len, to_reader, &rx, &reply))
			die("recv");
	}
	double t = (1e3 * fl_now_seconds()) - t0;
	pthread_join(th, NULL);
	if (pipelined)
		pthread_join(thr, NULL);
	*cpu = cpu_ms() - c0;
	if (pipelined) {
		for (int k = 0; k < NCHUNK; k++)
			free(rd.chunk[k]);
	}
	queue_free(&w.q);
	queue_free(&rd.q);
	close(a);
	close(b);
	fl_frame_reader_free(&rx.fr);
	fl_channel_free(c);
	fl_channel_free(s);
	return t;
}

static void bench_stream(const uint8_t *src, size_t total, size_t frame, int reps, int unix_sock,
			 double link_MBps)
{
	size_t n = total / frame;
	struct fl_buf **frames = calloc(n, sizeof(*frames));
	for (size_t i = 0; i < n; i++) {
		frames[i] = fl_buf_new(4 + frame);
		fl_be32_put(frames[i]->data, (uint32_t)frame);
		memcpy(frames[i]->data + 4, src + i * frame, frame);
	}
	/* [0] plain, then per cipher: [1 + 2 * (mode - 1) + pipelined] */
	double t[5][64], cpu[5][64];
	int have_aes = crypto_aead_aes256gcm_is_available();
	stream_once(frames, n, n * frame, PLAIN, unix_sock, 0, link_MBps, cpu[0]); /* warm-up */
	for (int r = 0; r < reps; r++) {
		t[0][r] = stream_once(frames, n, n * frame, PLAIN, unix_sock, 0, link_MBps,
				      &cpu[0][r]);
		for (int mode = AES; mode <= CHACHA; mode++) {
			if (mode == AES && !have_aes)
				continue;
			for (int pl = 0; pl < 2; pl++) {
				int k = 1 + 2 * (mode - 1) + pl;
				t[k][r] = stream_once(frames, n, n * frame, mode, unix_sock, pl,
						      link_MBps, &cpu[k][r]);
			}
		}
	}
	double p = fl_bench_median(t[0], reps), pc = fl_bench_median(cpu[0], reps);
	const char *link = unix_sock       ? "unix_socketpair"
			   : link_MBps > 0 ? "tcp_loopback_paced"
					   : "tcp_loopback";
	for (int mode = AES; mode <= CHACHA; mode++) {
		if (mode == AES && !have_aes)
			continue;
		for (int pl = 0; pl < 2; pl++) {
			int k = 1 + 2 * (mode - 1) + pl;
			double s = fl_bench_median(t[k], reps), sc = fl_bench_median(cpu[k], reps);
			printf("{\"bench\":\"channel_%s\",\"cipher\":\"%s\",\"style\":\"%s\","
			       "\"link_MBps\":%.0f,"
			       "\"bytes\":%zu,\"frame\":%zu,\"reps\":%d,\"plain_ms\":%.3f,"
			       "\"secure_ms\":%.3f,\"ratio\":%.2f,\"plain_MBps\":%.1f,"
			       "\"secure_MBps\":%.1f,\"overhead_pct\":%.1f,\"plain_cpu_ms\":%.2f,"
			       "\"secure_cpu_ms\":%.2f}\n",
			       link, mode_name[mode], pl ? "pipelined" : "serial", link_MBps,
			       n * frame, frame, reps, p, s, s / p, (double)(n * frame) / 1e3 / p,
			       (double)(n * frame) / 1e3 / s, 100.0 * (s - p) / p, pc, sc);
		}
	}
	for (size_t i = 0; i < n; i++)
		fl_buf_unref(frames[i]);
	free(frames);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: fl-bench-channel [total_MiB] [frame_KiB <= 4096] "
		   "[reps <= 64] [paced_link_MBps, 0 = none]\n");
}

int main(int argc, char **argv)
{
	if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		usage(stdout);
		return 0;
	}
	size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 10;
	size_t frame = (argc > 2 ? (size_t)atol(argv[2]) : 1024) * 1024;
	int reps = argc > 3 ? atoi(argv[3]) : 15;
	double link_MBps = argc > 4 ? atof(argv[4]) : 125; /* 1 Gbit/s; 0 = skip */
	if (!mib || !frame || reps < 1 || reps > 64 || frame > FL_WIRE_MAX_FRAME_DEFAULT) {
		usage(stderr);
		return 2;
	}
	if (fl_identity_generate(&g_server) || fl_identity_generate(&g_client))
		die("keys");
	size_t total = mib << 20;
	total -= total % frame;
	uint8_t *src = malloc(total);
	for (size_t i = 0; i < total; i++)
		src[i] = (uint8_t)(i * 2654435761u >> 11);
	int first = crypto_aead_aes256gcm_is_available() ? AES : CHACHA;
	if (first == CHACHA)
		fprintf(stderr, "fl-bench-channel: no AES-NI here, AES-256-GCM not measured\n");
	for (int mode = first; mode <= CHACHA; mode++)
		bench_handshake(mode);
	for (int mode = first; mode <= CHACHA; mode++)
		bench_memory(src, total, frame, reps, mode);
	bench_stream(src, total, frame, reps, 0, 0);
	bench_stream(src, total, frame, reps, 1, 0);
	if (link_MBps > 0)
		bench_stream(src, total, frame, reps, 0, link_MBps);
	free(src);
	fl_identity_free(g_server);
	fl_identity_free(g_client);
	return 0;
}
