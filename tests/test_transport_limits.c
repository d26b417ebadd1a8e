/* test_transport_limits.c - the coordinator transport's admission limits
 * (server/net/transport_limits.c) without sockets: address keys (IPv4,
 * IPv6 by /64, IPv4-mapped), the per-address connection limit and token
 * bucket on a virtual clock, the global handshake and reserve limits, and
 * the fixed address table filling up and freeing its entries again. The
 * sockets, the eviction under the handshake cap and the log lines are in
 * tests/cli_flood.sh and tests/cli_transport_limits.sh.
 */
#include "testutil.h"
#include "errors.h"
#include "transport_impl.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

static struct srv_transport *make(uv_loop_t *loop, size_t max_conns, size_t reserved,
				  size_t handshakes, uint32_t addr_conns, double rate, double burst)
{
	struct srv_transport_config cfg;
	srv_transport_config_default(&cfg);
	cfg.max_conns = max_conns;
	cfg.reserved_conns = reserved;
	cfg.max_handshakes = handshakes;
	cfg.addr_conns = addr_conns;
	cfg.addr_rate = rate;
	cfg.addr_burst = burst;
	struct srv_transport *t = NULL;
	FL_CHECK(srv_transport_new(loop, &cfg, &t) == FL_OK);
	return t;
}

static void key4(const char *ip, uint8_t key[16])
{
	struct sockaddr_in a;
	uv_ip4_addr(ip, 1, &a);
	FL_CHECK(srv_tr_addr_key((struct sockaddr *)&a, key));
}

static void key6(const char *ip, uint8_t key[16])
{
	struct sockaddr_in6 a;
	uv_ip6_addr(ip, 1, &a);
	FL_CHECK(srv_tr_addr_key((struct sockaddr *)&a, key));
}

static void test_keys(void)
{
	uint8_t a[16], b[16];
	key4("192.0.2.7", a);
	key6("::ffff:192.0.2.7", b);
	FL_CHECK(memcmp(a, b, 16) == 0); /* IPv4-mapped is the IPv4 address */
	key4("192.0.2.8", b);
	FL_CHECK(memcmp(a, b, 16) != 0);
	key6("2001:db8:1:2::1", a);
	key6("2001:db8:1:2:ffff:1:2:3", b);
	FL_CHECK(memcmp(a, b, 16) == 0); /* one /64 */
	key6("2001:db8:1:3::1", b);
	FL_CHECK(memcmp(a, b, 16) != 0);
}

/* Per address: 2 open, a bucket of 3 refilled at 1/s; another address is
 * not affected. */
static void test_per_address(void)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct srv_transport *t = make(&loop, 100, 10, 50, 2, 1, 3);
	struct conn c[6];
	memset(c, 0, sizeof(c));
	uint8_t k[16], other[16];
	key4("198.51.100.1", k);
	key4("198.51.100.2", other);
	FL_CHECK(srv_tr_admit_key(t, &c[0], k, 1000) == SRV_LIMIT_N);
	FL_CHECK(srv_tr_admit_key(t, &c[1], k, 1000) == SRV_LIMIT_N);
	FL_CHECK(srv_tr_admit_key(t, &c[2], k, 1000) == SRV_LIMIT_ADDR_CONNS);
	FL_CHECK(c[2].addr == -1);
	FL_CHECK(srv_tr_admit_key(t, &c[3], other, 1000) == SRV_LIMIT_N);
	srv_tr_addr_release(t, &c[0]);
	FL_CHECK(c[0].addr == -1);
	FL_CHECK(srv_tr_admit_key(t, &c[2], k, 1000) == SRV_LIMIT_N); /* the third token */
	srv_tr_addr_release(t, &c[1]);
	FL_CHECK(srv_tr_admit_key(t, &c[4], k, 1000) == SRV_LIMIT_ADDR_RATE);
	FL_CHECK(srv_tr_admit_key(t, &c[4], k, 1999) == SRV_LIMIT_ADDR_RATE);
	FL_CHECK(srv_tr_admit_key(t, &c[4], k, 2000) == SRV_LIMIT_N);    /* one token a second */
	FL_CHECK(srv_tr_admit_key(t, &c[5], NULL, 2000) == SRV_LIMIT_N); /* no IP: global only */
	FL_CHECK(c[5].addr == -1);
	srv_transport_free(t);
	FL_CHECK(uv_loop_close(&loop) == 0);
}

/* Globally: max_conns - reserved unauthenticated, then the handshake cap. */
static void test_global(void)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct srv_transport *t = make(&loop, 10, 4, 5, 0, 0, 1);
	struct conn c;
	memset(&c, 0, sizeof(c));
	t->nhandshaking = 5;
	FL_CHECK(srv_tr_admit_key(t, &c, NULL, 0) == SRV_LIMIT_HANDSHAKES);
	t->nhandshaking = 6;
	FL_CHECK(srv_tr_admit_key(t, &c, NULL, 0) == SRV_LIMIT_RESERVE);
	t->nhandshaking = 0;
	t->nconns = 11;
	FL_CHECK(srv_tr_admit_key(t, &c, NULL, 0) == SRV_LIMIT_CONNS);
	t->nconns = 10;
	FL_CHECK(srv_tr_admit_key(t, &c, NULL, 0) == SRV_LIMIT_N);
	t->nconns = 0;
	srv_transport_free(t);
	FL_CHECK(uv_loop_close(&loop) == 0);
}

/* Distinct addresses each holding a connection fill the fixed table; once
 * they are gone and their buckets full again, their entries are reused. */
static void test_table(void)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct srv_transport *t = make(&loop, 1000000, 0, 1000000, 16, 20, 40);
	enum {
		N = 20000
	};
	struct conn *c = calloc(N, sizeof(*c));
	int admitted = 0, full = 0;
	for (int i = 0; i < N; i++) {
		uint8_t k[16] = {0x20, 0x01, 0x0d, 0xb8, (uint8_t)(i >> 8), (uint8_t)i};
		int r = srv_tr_admit_key(t, &c[i], k, 0);
		admitted += r == SRV_LIMIT_N;
		full += r == SRV_LIMIT_ADDR_TABLE;
	}
	FL_CHECK_MSG(admitted >= 3000 && admitted <= 4096 && admitted + full == N,
		     "%d admitted, %d refused (table full)", admitted, full);
	for (int i = 0; i < N; i++)
		srv_tr_addr_release(t, &c[i]);
	uint8_t k[16] = {0x20, 0x01, 0x0d, 0xb9};
	FL_CHECK(srv_tr_admit_key(t, &c[0], k, 0) == SRV_LIMIT_ADDR_TABLE ||
		 c[0].addr >= 0); /* buckets still short a token */
	srv_tr_addr_release(t, &c[0]);
	int again = 0;
	for (int i = 0; i < 1000; i++) {
		uint8_t k2[16] = {0x20, 0x01, 0x0d, 0xba, (uint8_t)(i >> 8), (uint8_t)i};
		/* 100 ms apart: an entry this loop used has its token back (20/s)
		 * when the next address probes, so it is idle and reusable too;
		 * at one instant a window of 8 entries of this loop, each a token
		 * short, would refuse the address (rarely: the hash key is random) */
		uint64_t now = 10000 + 100 * (uint64_t)i;
		again += srv_tr_admit_key(t, &c[i], k2, now) == SRV_LIMIT_N; /* refilled */
		srv_tr_addr_release(t, &c[i]);
	}
	FL_CHECK_MSG(again == 1000, "%d of 1000 new addresses admitted after the refill", again);
	free(c);
	srv_transport_free(t);
	FL_CHECK(uv_loop_close(&loop) == 0);
}

int main(void)
{
	FL_RUN(test_keys);
	FL_RUN(test_per_address);
	FL_RUN(test_global);
	FL_RUN(test_table);
	return fl_test_main_end();
}
