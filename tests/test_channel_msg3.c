/* test_channel_msg3.c - the server's handling of handshake message 3 from
 * a hand-made client (the key schedule of common/secure/handshake.c
 * written out again here): a client key with a small-order component is
 * refused before its signature is checked (crypto_sign_verify_detached
 * alone accepts about half of such signatures), and msg3's decrypted
 * contents (the enrolment token) are wiped on every outcome. */
#include "bytes.h"
#include "channel.h"
#include "channel_impl.h" /* p3: the server's copy of msg3's plaintext */
#include "errors.h"
#include "identity.h"
#include "testutil.h"

#include <sodium.h>

#include <stdio.h>
#include <string.h>

#define MSG1_BYTES 70
#define MSG2_SIGNED 98
#define MSG2_BYTES 162

static struct fl_identity *g_server;
static int g_authorised; /* authorize calls */

static int allow_all(void *ctx, const uint8_t pk[32], const uint8_t *token, char *reason,
		     size_t cap)
{
	(void)ctx, (void)pk, (void)token;
	g_authorised++;
	snprintf(reason, cap, "refused by the test");
	return ctx ? FL_ENOTFOUND : FL_OK;
}

static void kdf(uint8_t out[32], const uint8_t key[32], const char *label, const uint8_t h[32])
{
	crypto_generichash_state st;
	static const char prefix[] = "fedloha-hs-v1 key ";
	crypto_generichash_init(&st, key, 32, 32);
	crypto_generichash_update(&st, (const uint8_t *)prefix, sizeof(prefix) - 1);
	crypto_generichash_update(&st, (const uint8_t *)label, strlen(label));
	crypto_generichash_update(&st, h, 32);
	crypto_generichash_final(&st, out, 32);
}

/* What the hand-made client puts in msg3. */
struct p3_spec {
	const uint8_t *sk; /* seed || public key used in the signature */
	const uint8_t *pk; /* the key sent */
	uint8_t flags;     /* 0, 1 (token follows) or a bad value */
	int bad_sig;
};

/* Feeds msg1 and msg3 to server channel s. Returns fl_channel_recv's result
 * for msg3. */
static int handshake(struct fl_channel *s, const struct p3_spec *sp)
{
	uint8_t eph_pk[32], eph_sk[32], m1[4 + MSG1_BYTES];
	crypto_kx_keypair(eph_pk, eph_sk);
	fl_be32_put(m1, MSG1_BYTES);
	memcpy(m1 + 4, "FLH1\x02\x00", 6);
	memcpy(m1 + 10, eph_pk, 32);
	randombytes_buf(m1 + 42, 32);
	struct fl_buf *r = NULL;
	FL_CHECK(fl_channel_recv(s, m1, sizeof(m1), NULL, NULL, &r) == FL_OK);
	if (!r || r->len != 4 + MSG2_BYTES) {
		fl_buf_unref(r);
		return FL_EINVAL;
	}
	const uint8_t *m2 = r->data + 4;
	uint8_t h1[32], h2[32], rx[32], tx[32], k3[32];
	crypto_generichash_state st;
	crypto_generichash_init(&st, NULL, 0, 32);
	crypto_generichash_update(&st, (const uint8_t *)"fedloha-hs-v1 transcript", 24);
	crypto_generichash_update(&st, m1 + 4, MSG1_BYTES);
	crypto_generichash_update(&st, m2, MSG2_SIGNED);
	crypto_generichash_final(&st, h1, 32);
	FL_CHECK(crypto_kx_client_session_keys(rx, tx, eph_pk, eph_sk, m2 + 2) == 0);
	fl_buf_unref(r);

	uint8_t p3[HS_P3_MAX], sig_in[64];
	size_t sl = 0;
	memcpy(p3, sp->pk, 32);
	sl = 32;
	p3[sl++] = sp->flags;
	if (sp->flags == 1) {
		memset(p3 + sl, 0x5a, FL_TOKEN_BYTES);
		sl += FL_TOKEN_BYTES;
	}
	crypto_generichash_init(&st, NULL, 0, 32);
	crypto_generichash_update(&st, (const uint8_t *)"fedloha-hs-v1 msg3 transcript", 29);
	crypto_generichash_update(&st, h1, 32);
	crypto_generichash_update(&st, p3, sl);
	crypto_generichash_final(&st, h2, 32);
	memcpy(sig_in, "fedloha-hs-v1 client signature", 30);
	memcpy(sig_in + 30, h2, 32);
	crypto_sign_detached(p3 + sl, NULL, sig_in, 62, sp->sk);
	if (sp->bad_sig)
		p3[sl] ^= 1;
	kdf(k3, tx, "msg3", h1);
	uint8_t m3[4 + 1 + HS_P3_MAX + 16], nonce[24] = {0};
	unsigned long long clen = 0;
	m3[4] = 0x03;
	crypto_aead_xchacha20poly1305_ietf_encrypt(m3 + 5, &clen, p3, sl + 64, h1, 32, NULL, nonce,
						   k3);
	fl_be32_put(m3, (uint32_t)(1 + clen));
	r = NULL;
	int rc = fl_channel_recv(s, m3, 5 + (size_t)clen, NULL, NULL, &r);
	fl_buf_unref(r);
	return rc;
}

static struct fl_channel *server(void *ctx)
{
	struct fl_channel_config sc = {
		.is_server = 1, .self = g_server, .authorize = allow_all, .auth_ctx = ctx};
	struct fl_channel *s = NULL;
	FL_CHECK(fl_channel_new(&sc, &s) == FL_OK);
	return s;
}

static int all_zero(const uint8_t *p, size_t n)
{
	uint8_t acc = 0;
	for (size_t i = 0; i < n; i++)
		acc |= p[i];
	return acc == 0;
}

/* A valid key plus the point of order 2: half of its signatures verify. */
static void test_mixed_order_client_key(void)
{
	uint8_t t2[32], sk[64];
	memset(t2, 0xff, sizeof(t2));
	t2[0] = 0xec;
	t2[31] = 0x7f;
	randombytes_buf(sk, 32);
	uint8_t pk[32], sk_real[64];
	crypto_sign_seed_keypair(pk, sk_real, sk);
	FL_CHECK(crypto_core_ed25519_add(sk + 32, pk, t2) == 0);
	struct p3_spec sp = {.sk = sk, .pk = sk + 32, .flags = 0};
	g_authorised = 0;
	int established = 0;
	for (int i = 0; i < 24; i++) {
		struct fl_channel *s = server(NULL);
		int rc = handshake(s, &sp);
		established += fl_channel_established(s);
		FL_CHECK(rc == FL_EFORMAT);
		FL_CHECK_MSG(strstr(fl_error_msg(), "not a valid Ed25519 key") != NULL, "%s",
			     fl_error_msg());
		fl_channel_free(s);
	}
	FL_CHECK(established == 0 && g_authorised == 0);
	/* the same client with its proper key gets in */
	struct p3_spec ok = {.sk = sk_real, .pk = pk, .flags = 0};
	struct fl_channel *s = server(NULL);
	FL_CHECK(handshake(s, &ok) == FL_OK && fl_channel_established(s));
	fl_channel_free(s);
}

/* msg3's plaintext (with its token) is wiped whatever the outcome. */
static void test_msg3_wiped(void)
{
	uint8_t seed[32], pk[32], sk[64];
	randombytes_buf(seed, 32);
	crypto_sign_seed_keypair(pk, sk, seed);
	int refuse = 1;
	const struct {
		struct p3_spec sp;
		void *ctx;
		int want;
		const char *msg;
	} cases[] = {
		{{sk, pk, 2, 0}, NULL, FL_EFORMAT, "message 3 contents"},
		{{sk, pk, 1, 1}, NULL, FL_EFORMAT, "bad client signature"},
		{{sk, pk, 1, 0}, &refuse, FL_ENOTFOUND, "refused by the test"},
		{{sk, pk, 1, 0}, NULL, FL_OK, ""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fl_channel *s = server(cases[i].ctx);
		int rc = handshake(s, &cases[i].sp);
		FL_CHECK_MSG(rc == cases[i].want, "case %zu: %d %s", i, rc, fl_error_msg());
		FL_CHECK(rc == FL_OK || strstr(fl_error_msg(), cases[i].msg) != NULL);
		FL_CHECK_MSG(all_zero(s->p3, sizeof(s->p3)), "case %zu: msg3 not wiped", i);
		fl_channel_free(s);
	}
}

int main(void)
{
	FL_CHECK(fl_identity_generate(&g_server) == FL_OK);
	FL_RUN(test_mixed_order_client_key);
	FL_RUN(test_msg3_wiped);
	fl_identity_free(g_server);
	return fl_test_main_end();
}
