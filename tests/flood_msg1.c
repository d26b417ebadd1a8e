/* flood_msg1.c - fl-flood: a pre-authentication load generator for
 * fedloha-server on this machine's loopback only. It keeps --conns TCP
 * connections busy, each bound to one of --sources source addresses
 * (127.0.0.2, 127.0.0.3, ...: Linux routes all of 127.0.0.0/8 to lo), and
 * on each sends one fixed, valid-looking handshake message 1 (the same
 * bytes every time, as a replay would) and waits: handshake message 2 back
 * means the server spent a keypair, a DH and a signature on it; the
 * connection closing first means it was refused. Either way it closes and
 * starts over, as fast as the server answers, for --seconds (or until the
 * server refuses a TCP connect: it is gone), then prints its counts. It never sends message 3. A test tool: the target must be a
 * loopback address.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define MSG1_BYTES (4 + 70)
#define MSG2_BYTES (4 + 162)

struct flood {
	uv_loop_t *loop;
	struct sockaddr_in target;
	int sources, first_source, hold;
	uint64_t end_ms;
	uint64_t connects, handshakes, refused, errors;
	uint8_t msg1[MSG1_BYTES];
	unsigned next_source;
};

struct fconn {
	uv_tcp_t tcp;
	uv_connect_t creq;
	uv_write_t wreq;
	struct flood *f;
	size_t got;
	int counted;
	char buf[256];
};

static void start_one(struct flood *f);

static void on_closed(uv_handle_t *h)
{
	struct fconn *c = (struct fconn *)h;
	struct flood *f = c->f;
	free(c);
	if (uv_now(f->loop) < f->end_ms)
		start_one(f);
}

static void finish(struct fconn *c, uint64_t *counter)
{
	if (!c->counted && counter)
		(*counter)++;
	c->counted = 1;
	if (!uv_is_closing((uv_handle_t *)&c->tcp))
		uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
	(void)sz;
	struct fconn *c = (struct fconn *)h;
	b->base = c->buf;
	b->len = sizeof(c->buf);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	(void)b;
	struct fconn *c = (struct fconn *)s;
	if (n < 0) {
		finish(c, &c->f->refused);
		return;
	}
	c->got += (size_t)n;
	if (c->got >= MSG2_BYTES && !c->counted) {
		c->f->handshakes++;
		c->counted = 1;
		if (!c->f->hold)
			finish(c, NULL);
	}
}

static void on_connect(uv_connect_t *req, int status)
{
	struct fconn *c = req->data;
	if (status < 0) {
		if (status == UV_ECONNREFUSED) /* the server is gone: stop */
			c->f->end_ms = uv_now(c->f->loop);
		finish(c, &c->f->errors);
		return;
	}
	c->f->connects++;
	uv_buf_t b = uv_buf_init((char *)c->f->msg1, MSG1_BYTES);
	if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, NULL) != 0 ||
	    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
		finish(c, &c->f->refused);
}

static void start_one(struct flood *f)
{
	struct fconn *c = calloc(1, sizeof(*c));
	if (!c)
		return;
	c->f = f;
	uv_tcp_init(f->loop, &c->tcp);
	struct sockaddr_in src;
	char ip[32];
	unsigned a = 2 + (unsigned)f->first_source + f->next_source;
	snprintf(ip, sizeof(ip), "127.0.%u.%u", a / 256 % 256, a % 256);
	f->next_source = (f->next_source + 1) % (unsigned)f->sources;
	uv_ip4_addr(ip, 0, &src);
	c->creq.data = c;
	if (uv_tcp_bind(&c->tcp, (struct sockaddr *)&src, 0) != 0 ||
	    uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&f->target, on_connect) != 0)
		finish(c, &f->errors);
}

static void usage(FILE *o)
{
	fprintf(o,
		"usage: fl-flood --port PORT [--conns N (64)] [--sources N (8)] [--seconds S (3)]\n"
		"                [--first-source K (0)] [--hold]\n"
		"Floods 127.0.0.1:PORT with replayed secure-handshake message 1 from\n"
		"127.0.0.(2+K).. (loopback only) and prints what the server answered.\n"
		"--hold keeps each connection open after message 2 until the server\n"
		"drops it (its handshake timeout) instead of starting over at once.\n");
}

int main(int argc, char **argv)
{
	int port = 0, conns = 64, sources = 8, hold = 0, first = 0;
	double seconds = 3;
	for (int i = 1; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		} else if (v && !strcmp(argv[i], "--port"))
			port = atoi(v), i++;
		else if (v && !strcmp(argv[i], "--conns"))
			conns = atoi(v), i++;
		else if (v && !strcmp(argv[i], "--sources"))
			sources = atoi(v), i++;
		else if (!strcmp(argv[i], "--hold"))
			hold = 1;
		else if (v && !strcmp(argv[i], "--first-source"))
			first = atoi(v), i++;
		else if (v && !strcmp(argv[i], "--seconds"))
			seconds = atof(v), i++;
		else {
			usage(stderr);
			return 2;
		}
	}
	if (port < 1 || port > 65535 || conns < 1 || conns > 10000 || sources < 1 ||
	    sources > 60000 || first < 0 || first + sources > 60000 ||
	    !(seconds > 0 && seconds <= 60)) {
		usage(stderr);
		return 2;
	}
	struct flood f = {
		.loop = uv_default_loop(), .sources = sources, .first_source = first, .hold = hold};
	uv_ip4_addr("127.0.0.1", port, &f.target);
	/* "FLH1", version 2, no AES flag, a fixed ephemeral key and nonce */
	uint8_t *m = f.msg1;
	m[3] = 70;
	memcpy(m + 4, "FLH1", 4);
	m[8] = 2;
	for (int i = 0; i < 64; i++)
		m[10 + i] = (uint8_t)(0x5a ^ (i * 37));
	uv_update_time(f.loop);
	uint64_t t0 = uv_now(f.loop);
	f.end_ms = t0 + (uint64_t)(seconds * 1000);
	for (int i = 0; i < conns; i++)
		start_one(&f);
	uv_run(f.loop, UV_RUN_DEFAULT);
	double s = (double)(uv_now(f.loop) - t0) / 1000.0;
	printf("flood%s: %.2f s, %d connections at a time from %d addresses: connects %llu, "
	       "handshakes %llu (%.0f/s), refused before message 2 %llu, connect errors %llu\n",
	       hold ? " --hold" : "", s, conns, sources, (unsigned long long)f.connects,
	       (unsigned long long)f.handshakes, (double)f.handshakes / s,
	       (unsigned long long)f.refused, (unsigned long long)f.errors);
	uv_loop_close(f.loop);
	return 0;
}
