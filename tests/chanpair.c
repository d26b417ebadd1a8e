/* chanpair.c - a client and a server secure channel connected in memory
 * (chanpair.h): the handshake's messages passed back and forth until
 * neither side has anything to send. No sockets, no data records. */
#include "chanpair.h"

#include "errors.h"
#include "identity.h"
#include "testutil.h"

static struct fl_identity *g_server, *g_client;

static int allow_all(void *ctx, const uint8_t pk[32], const uint8_t *token, char *reason,
		     size_t cap)
{
	(void)ctx, (void)pk, (void)token, (void)reason, (void)cap;
	return 0;
}

void fl_test_chan_pair(struct fl_channel **c, struct fl_channel **s, int disable_aes)
{
	if (!g_server) {
		FL_CHECK(fl_identity_generate(&g_server) == FL_OK);
		FL_CHECK(fl_identity_generate(&g_client) == FL_OK);
	}
	struct fl_channel_config cc = {.self = g_client,
				       .pinned_server_pk = fl_identity_pk(g_server),
				       .disable_aes = disable_aes};
	struct fl_channel_config sc = {.is_server = 1,
				       .self = g_server,
				       .authorize = allow_all,
				       .disable_aes = disable_aes};
	FL_CHECK(fl_channel_new(&cc, c) == FL_OK && fl_channel_new(&sc, s) == FL_OK);
	struct fl_buf *b = NULL;
	FL_CHECK(fl_channel_start(*c, &b) == FL_OK);
	struct fl_channel *to = *s, *from = *c;
	for (int k = 0; b && k < 10; k++) {
		struct fl_buf *r = NULL;
		FL_CHECK(fl_channel_recv(to, b->data, b->len, NULL, NULL, &r) == FL_OK);
		fl_buf_unref(b);
		b = r;
		struct fl_channel *t = to;
		to = from;
		from = t;
	}
	fl_buf_unref(b);
	FL_CHECK(fl_channel_established(*c) && fl_channel_established(*s));
}

void fl_test_chan_pair_end(void)
{
	fl_identity_free(g_server);
	fl_identity_free(g_client);
	g_server = g_client = NULL;
}
