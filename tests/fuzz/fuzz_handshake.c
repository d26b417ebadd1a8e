/* fuzz_handshake.c - fuzz target for the secure channel: arbitrary bytes
 * from a hostile peer into fl_channel_recv, then EOF.
 *
 * Input: byte 0 picks the scene (& 3):
 *   0  a fresh server reads the bytes (msg1, msg3, records ...);
 *   1  a client that sent msg1 reads them (msg2, msg4 ...);
 *   2  a server that got a genuine msg1 and answered reads them (msg3 ...);
 *   3  a server with a completed genuine handshake reads them as records;
 * bit 2 of byte 0 disables AES-256-GCM on both ends (scene 3 then reads
 * XChaCha20 secretstream records; without it AES-256-GCM records where the
 * CPU has AES-NI);
 * byte 1 the feed step (0 = all at once, else that many bytes per call);
 * the rest is the stream. Invariants checked with abort(): no channel is
 * established in scenes 0 and 1 (nobody can forge the other side), nothing
 * is ever delivered (no record can authenticate), errors are sticky and one
 * line, EOF after unauthenticated bytes is an error. The identities come
 * from fixed seeds (server: 32 x 0x01, client: 32 x 0x02) so that corpus
 * files can carry the pinned server key and reach the signature check.
 *
 * Built two ways from this one file: with libFuzzer (clang, -DFL_FUZZ=ON)
 * and, with FL_FUZZ_REPLAY defined, as a plain program that runs every file
 * of the given folders or paths through the target (a ctest replaying
 * tests/fuzz/corpus/handshake). No other I/O.
 */
#include "channel.h"
#include "errors.h"
#include "identity.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct fl_identity *g_server, *g_client;
static int last_scene, last_err;

static int allow_all(void *ctx, const uint8_t pk[32], const uint8_t *token, char *reason,
		     size_t cap)
{
	return 0;
}

static int no_delivery(void *ctx, const uint8_t *p, size_t n)
{
	abort(); /* a forged record was accepted */
}

static void check_msg(void)
{
	if (strchr(fl_error_msg(), '\n'))
		abort();
}

static void setup(void)
{
	if (g_server)
		return;
	/* fixed keys, so corpus files can carry the pinned server key */
	uint8_t seed[32];
	memset(seed, 1, sizeof(seed));
	if (fl_identity_from_seed(seed, &g_server))
		abort();
	memset(seed, 2, sizeof(seed));
	if (fl_identity_from_seed(seed, &g_client))
		abort();
}

static struct fl_channel *make(int server, int no_aes)
{
	struct fl_channel_config cfg = {.is_server = server,
					.self = server ? g_server : g_client,
					.pinned_server_pk = fl_identity_pk(g_server),
					.authorize = allow_all,
					.max_record = 4096,
					.disable_aes = no_aes};
	struct fl_channel *ch = NULL;
	if (fl_channel_new(&cfg, &ch))
		abort();
	return ch;
}

/* Passes b to ch and returns its reply (aborts on failure: genuine traffic). */
static struct fl_buf *pass(struct fl_channel *ch, struct fl_buf *b)
{
	struct fl_buf *r = NULL;
	if (fl_channel_recv(ch, b->data, b->len, no_delivery, NULL, &r))
		abort();
	fl_buf_unref(b);
	return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	setup();
	int scene = data[0] & 3;
	int no_aes = (data[0] >> 2) & 1;
	size_t step = data[1];
	data += 2;
	size -= 2;
	struct fl_channel *victim = NULL, *peer = NULL;
	struct fl_buf *b = NULL;
	if (scene == 0) {
		victim = make(1, no_aes);
	} else if (scene == 1) {
		victim = make(0, no_aes);
		if (fl_channel_start(victim, &b))
			abort();
		fl_buf_unref(b);
	} else {
		peer = make(0, no_aes);
		victim = make(1, no_aes);
		if (fl_channel_start(peer, &b))
			abort();
		b = pass(victim, b); /* msg2 */
		if (scene == 3) {
			b = pass(peer, b);   /* msg3 (+ stream header) */
			b = pass(victim, b); /* msg4 (+ stream header) */
			fl_buf_unref(pass(peer, b));
			if (!fl_channel_established(victim) || !fl_channel_established(peer))
				abort();
		} else {
			fl_buf_unref(b);
		}
	}
	int err = FL_OK;
	for (size_t i = 0; i < size && !err;) {
		size_t n = step ? step : size;
		if (n > size - i)
			n = size - i;
		struct fl_buf *r = NULL;
		err = fl_channel_recv(victim, data + i, n, no_delivery, NULL, &r);
		fl_buf_unref(r);
		i += n;
	}
	if (err) {
		check_msg();
		struct fl_buf *r = NULL;
		if (fl_channel_recv(victim, data, size, no_delivery, NULL, &r) != err || r)
			abort(); /* not sticky */
	}
	if (scene < 2 && fl_channel_established(victim))
		abort();
	int eof = fl_channel_eof(victim);
	if (size && eof == FL_OK && scene != 3)
		abort();
	if (eof)
		check_msg();
	last_scene = scene;
	last_err = eof;
	fl_channel_free(victim);
	fl_channel_free(peer);
	return 0;
}

#ifdef FL_FUZZ_REPLAY
#include "replay.h"

static void report(const char *path, size_t n)
{
	printf("%-60s %5zu bytes, scene %d: %s\n", path, n, last_scene,
	       last_err ? fl_error_msg() : "ok");
}

int main(int argc, char **argv)
{
	int rc = fl_fuzz_replay_main(argc, argv, report);
	fl_identity_free(g_server);
	fl_identity_free(g_client);
	return rc;
}
#endif
