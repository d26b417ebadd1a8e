/* handshake.c - the secure channel's handshake (docs/SECURITY.md §2):
 * four messages, ephemeral X25519 (crypto_kx) for forward secrecy, Ed25519
 * signatures over transcript hashes for mutual authentication, the client's
 * identity sent encrypted. Builds and checks messages and derives the keys;
 * framing, records and the public API are in channel.c.
 *
 *   msg1 c->s  "FLH1" | version 2 | flags_c | client eph pk | client nonce   (70 B)
 *   msg2 s->c  0x02 | flags_s | server eph pk | server nonce | server id | sig_s
 *                                                                          (162 B)
 *              H1 = BLAKE2b-256(D_T || msg1 || msg2 without sig_s)
 *              sig_s = Ed25519(server, D_S || H1)
 *   msg3 c->s  0x03 | AEAD(k3, ad = H1; client id | flags | [token] | sig_c)
 *              H2 = BLAKE2b-256(D_T3 || H1 || client id | flags | [token])
 *              sig_c = Ed25519(client, D_C || H2)
 *   msg4 s->c  0x04 | AEAD(k4, ad = H2; status | reason)
 *
 * (tx_c, rx_c) = crypto_kx_client_session_keys(client eph, server eph), i.e.
 * K_c2s = tx_c = rx_s and K_s2c = rx_c = tx_s. With KDF(K, label, H) =
 * BLAKE2b-256 keyed by K over (label || H):
 *   k3 = KDF(K_c2s, "msg3", H1)   k4 = KDF(K_s2c, "msg4", H2)
 *   data keys: KDF(K_c2s, "c2s", H2) and KDF(K_s2c, "s2c", H2) for
 *   secretstream, KDF(K_c2s, "c2s aes256gcm", H2) and
 *   KDF(K_s2c, "s2c aes256gcm", H2) for AES-256-GCM.
 * Cipher negotiation: bit 0 of flags_c / flags_s (HS_FLAG_AES) says "this
 * end can run AES-256-GCM"; both set -> AES-256-GCM records, else
 * secretstream. Both flags are in H1, which the server signs and which H2
 * (signed by the client) extends, so an attacker who changes either is
 * caught by a signature check before any record is sealed.
 * AEAD is XChaCha20-Poly1305-IETF with a zero nonce: k3 and k4 encrypt one
 * message each.
 */
#include "channel_impl.h"

#include "errors.h"

#include <stdio.h>
#include <string.h>

#define HS_MAGIC "FLH1"
#define HS_VERSION 2 /* 2: cipher flags in msg1 / msg2 */
#define MSG1_BYTES (4 + 1 + 1 + HS_EPH_BYTES + HS_NONCE_BYTES)
#define MSG2_SIGNED (2 + HS_EPH_BYTES + HS_NONCE_BYTES + FL_PUBKEY_BYTES)
#define MSG2_BYTES (MSG2_SIGNED + FL_SIGNATURE_BYTES)
#define AEAD_ABYTES crypto_aead_xchacha20poly1305_ietf_ABYTES
#define P3_MIN (FL_PUBKEY_BYTES + 1 + FL_SIGNATURE_BYTES)
#define P3_MAX (P3_MIN + FL_TOKEN_BYTES)
_Static_assert(P3_MAX == HS_P3_MAX, "msg3 plaintext size");
#define MSG4_STATUS_OK 0
#define MSG4_STATUS_REFUSED 1
#define MSG4_STATUS_RETRY 2 /* not admitted now, for a passing reason */

static const char D_T[] = "fedloha-hs-v1 transcript";
static const char D_T3[] = "fedloha-hs-v1 msg3 transcript";
static const char D_S[] = "fedloha-hs-v1 server signature";
static const char D_C[] = "fedloha-hs-v1 client signature";

static void kdf(uint8_t out[HS_KEY_BYTES], const uint8_t key[HS_KEY_BYTES], const char *label,
		const uint8_t h[HS_HASH_BYTES])
{
	crypto_generichash_state st;
	static const char prefix[] = "fedloha-hs-v1 key ";
	crypto_generichash_init(&st, key, HS_KEY_BYTES, HS_KEY_BYTES);
	crypto_generichash_update(&st, (const uint8_t *)prefix, sizeof(prefix) - 1);
	crypto_generichash_update(&st, (const uint8_t *)label, strlen(label));
	crypto_generichash_update(&st, h, HS_HASH_BYTES);
	crypto_generichash_final(&st, out, HS_KEY_BYTES);
	sodium_memzero(&st, sizeof(st));
}

/* The signed text: domain || hash. */
static void sig_input(uint8_t *buf, const char *domain, const uint8_t h[HS_HASH_BYTES])
{
	size_t d = strlen(domain);
	memcpy(buf, domain, d);
	memcpy(buf + d, h, HS_HASH_BYTES);
}
#define SIG_INPUT_MAX 64

static void hash_h1(struct fl_channel *ch, const uint8_t *msg2_signed)
{
	crypto_generichash_state st;
	crypto_generichash_init(&st, NULL, 0, HS_HASH_BYTES);
	crypto_generichash_update(&st, (const uint8_t *)D_T, sizeof(D_T) - 1);
	crypto_generichash_update(&st, ch->msg1, MSG1_BYTES);
	crypto_generichash_update(&st, msg2_signed, MSG2_SIGNED);
	crypto_generichash_final(&st, ch->h1, HS_HASH_BYTES);
}

static void hash_h2(struct fl_channel *ch, const uint8_t *p3, size_t signed_len)
{
	crypto_generichash_state st;
	crypto_generichash_init(&st, NULL, 0, HS_HASH_BYTES);
	crypto_generichash_update(&st, (const uint8_t *)D_T3, sizeof(D_T3) - 1);
	crypto_generichash_update(&st, ch->h1, HS_HASH_BYTES);
	crypto_generichash_update(&st, p3, signed_len);
	crypto_generichash_final(&st, ch->h2, HS_HASH_BYTES);
}

static const uint8_t zero_nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];

/* Derives both data keys from H2 and hands them to the record layer. */
static int derive_data_keys(struct fl_channel *ch)
{
	uint8_t c2s[HS_KEY_BYTES], s2c[HS_KEY_BYTES];
	int aes = ch->cipher == FL_CH_AES256GCM;
	kdf(c2s, ch->k_c2s, aes ? "c2s aes256gcm" : "c2s", ch->h2);
	kdf(s2c, ch->k_s2c, aes ? "s2c aes256gcm" : "s2c", ch->h2);
	int err = ch->is_server ? fl_ch_keys_ready(ch, s2c, c2s) : fl_ch_keys_ready(ch, c2s, s2c);
	sodium_memzero(c2s, sizeof(c2s));
	sodium_memzero(s2c, sizeof(s2c));
	return err;
}

int fl_hs_client_hello(struct fl_channel *ch)
{
	crypto_kx_keypair(ch->eph_pk, ch->eph_sk);
	uint8_t *m = ch->msg1;
	memcpy(m, HS_MAGIC, 4);
	m[4] = HS_VERSION;
	m[5] = ch->aes_ok ? HS_FLAG_AES : 0;
	memcpy(m + 6, ch->eph_pk, HS_EPH_BYTES);
	randombytes_buf(m + 6 + HS_EPH_BYTES, HS_NONCE_BYTES);
	ch->hs = HS_CLIENT_WAIT2;
	return fl_ch_emit(ch, m, MSG1_BYTES);
}

static int server_on_msg1(struct fl_channel *ch, const uint8_t *p, size_t n)
{
	if (n < 4 || memcmp(p, HS_MAGIC, 4) != 0)
		return fl_ch_fail(ch, FL_EFORMAT,
				  "the peer did not start a fedloha secure handshake (a plaintext "
				  "client? then both ends need the same security setting)");
	if (n >= 5 && p[4] != HS_VERSION)
		return fl_ch_fail(ch, FL_EUNSUPPORTED,
				  "handshake version %u, this server speaks %u", p[4], HS_VERSION);
	if (n != MSG1_BYTES || (p[5] & ~HS_FLAG_AES) != 0)
		return fl_ch_fail(ch, FL_EFORMAT, "malformed handshake message 1 (%zu bytes)", n);
	memcpy(ch->msg1, p, MSG1_BYTES);
	const uint8_t *c_eph = p + 6;
	uint8_t flags_s = ch->aes_ok ? HS_FLAG_AES : 0;
	ch->cipher = (p[5] & flags_s & HS_FLAG_AES) ? FL_CH_AES256GCM : FL_CH_SECRETSTREAM;
	ch->cipher_known = 1;

	uint8_t m[MSG2_BYTES];
	crypto_kx_keypair(ch->eph_pk, ch->eph_sk);
	m[0] = 0x02;
	m[1] = flags_s;
	memcpy(m + 2, ch->eph_pk, HS_EPH_BYTES);
	randombytes_buf(m + 2 + HS_EPH_BYTES, HS_NONCE_BYTES);
	memcpy(m + 2 + HS_EPH_BYTES + HS_NONCE_BYTES, fl_identity_pk(ch->self), FL_PUBKEY_BYTES);
	int bad = crypto_kx_server_session_keys(ch->k_c2s, ch->k_s2c, ch->eph_pk, ch->eph_sk,
						c_eph);
	sodium_memzero(ch->eph_sk, sizeof(ch->eph_sk));
	if (bad)
		return fl_ch_fail(ch, FL_EFORMAT,
				  "authentication failed: bad client ephemeral key");
	hash_h1(ch, m);
	uint8_t si[SIG_INPUT_MAX];
	sig_input(si, D_S, ch->h1);
	fl_identity_sign(ch->self, si, sizeof(D_S) - 1 + HS_HASH_BYTES, m + MSG2_SIGNED);
	ch->hs = HS_SERVER_WAIT3;
	return fl_ch_emit(ch, m, MSG2_BYTES);
}

static int client_on_msg2(struct fl_channel *ch, const uint8_t *p, size_t n)
{
	if (n != MSG2_BYTES || p[0] != 0x02 || (p[1] & ~HS_FLAG_AES) != 0)
		return fl_ch_fail(ch, FL_EFORMAT, "malformed handshake message 2 (%zu bytes)", n);
	const uint8_t *s_eph = p + 2;
	const uint8_t *s_id = p + 2 + HS_EPH_BYTES + HS_NONCE_BYTES;
	if (fl_pubkey_check(s_id) != FL_OK)
		return fl_ch_fail(ch, FL_EFORMAT, "authentication failed: %s", fl_error_msg());
	if (sodium_memcmp(s_id, ch->pinned, FL_PUBKEY_BYTES) != 0) {
		char got[FL_PUBKEY_STRING_BYTES], want[FL_PUBKEY_STRING_BYTES];
		fl_pubkey_format(s_id, got);
		fl_pubkey_format(ch->pinned, want);
		return fl_ch_fail(ch, FL_EFORMAT,
				  "authentication failed: the server's key %s is not the pinned "
				  "key %s",
				  got, want);
	}
	hash_h1(ch, p);
	uint8_t si[SIG_INPUT_MAX];
	sig_input(si, D_S, ch->h1);
	if (crypto_sign_verify_detached(p + MSG2_SIGNED, si, sizeof(D_S) - 1 + HS_HASH_BYTES,
					s_id) != 0)
		return fl_ch_fail(ch, FL_EFORMAT, "authentication failed: bad server signature");
	/* both flags are now known to be the ones the server saw and signed */
	ch->cipher = (ch->msg1[5] & p[1] & HS_FLAG_AES) ? FL_CH_AES256GCM : FL_CH_SECRETSTREAM;
	ch->cipher_known = 1;
	int bad = crypto_kx_client_session_keys(ch->k_s2c, ch->k_c2s, ch->eph_pk, ch->eph_sk,
						s_eph);
	sodium_memzero(ch->eph_sk, sizeof(ch->eph_sk));
	if (bad)
		return fl_ch_fail(ch, FL_EFORMAT,
				  "authentication failed: bad server ephemeral key");
	memcpy(ch->peer_pk, s_id, FL_PUBKEY_BYTES);

	/* msg3: our identity (and token), signed, encrypted under k3. */
	uint8_t p3[P3_MAX];
	size_t sl = 0;
	memcpy(p3, fl_identity_pk(ch->self), FL_PUBKEY_BYTES);
	sl += FL_PUBKEY_BYTES;
	p3[sl++] = ch->has_token ? 1 : 0;
	if (ch->has_token) {
		memcpy(p3 + sl, ch->token, FL_TOKEN_BYTES);
		sl += FL_TOKEN_BYTES;
	}
	hash_h2(ch, p3, sl);
	sig_input(si, D_C, ch->h2);
	fl_identity_sign(ch->self, si, sizeof(D_C) - 1 + HS_HASH_BYTES, p3 + sl);
	size_t plen = sl + FL_SIGNATURE_BYTES;

	uint8_t m[1 + P3_MAX + AEAD_ABYTES], k3[HS_KEY_BYTES];
	unsigned long long clen = 0;
	kdf(k3, ch->k_c2s, "msg3", ch->h1);
	m[0] = 0x03;
	crypto_aead_xchacha20poly1305_ietf_encrypt(m + 1, &clen, p3, plen, ch->h1, HS_HASH_BYTES,
						   NULL, zero_nonce, k3);
	sodium_memzero(k3, sizeof(k3));
	sodium_memzero(p3, sizeof(p3));
	int err = fl_ch_emit(ch, m, 1 + (size_t)clen);
	if (!err)
		err = derive_data_keys(ch);
	ch->hs = HS_CLIENT_WAIT4;
	return err;
}

/* msg4 with a status and an optional reason. */
static int server_send_msg4(struct fl_channel *ch, uint8_t status, const char *reason)
{
	uint8_t p4[1 + FL_CHANNEL_REASON_MAX];
	size_t rl = reason ? strnlen(reason, FL_CHANNEL_REASON_MAX) : 0;
	p4[0] = status;
	if (rl)
		memcpy(p4 + 1, reason, rl);
	uint8_t m[1 + sizeof(p4) + AEAD_ABYTES], k4[HS_KEY_BYTES];
	unsigned long long clen = 0;
	kdf(k4, ch->k_s2c, "msg4", ch->h2);
	m[0] = 0x04;
	crypto_aead_xchacha20poly1305_ietf_encrypt(m + 1, &clen, p4, 1 + rl, ch->h2, HS_HASH_BYTES,
						   NULL, zero_nonce, k4);
	sodium_memzero(k4, sizeof(k4));
	return fl_ch_emit(ch, m, 1 + (size_t)clen);
}

/* Decrypts handshake message 3 or 4 (p[1..n), after its type byte) into out
 * with the key derived from secret and the transcript hash h, which is
 * also the associated data. */
static int hs_open(struct fl_channel *ch, uint8_t *out, unsigned long long *plen, const uint8_t *p,
		   size_t n, const uint8_t *secret, const uint8_t *h, int msg)
{
	uint8_t k[HS_KEY_BYTES];
	kdf(k, secret, msg == 3 ? "msg3" : "msg4", h);
	int bad = crypto_aead_xchacha20poly1305_ietf_decrypt(out, plen, NULL, p + 1, n - 1, h,
							     HS_HASH_BYTES, zero_nonce, k);
	sodium_memzero(k, sizeof(k));
	if (bad)
		return fl_ch_fail(ch, FL_EFORMAT,
				  "authentication failed: handshake message %d does not decrypt",
				  msg);
	return FL_OK;
}

/* msg3 decrypted into ch->p3 (plen bytes): checks it and asks the
 * authoriser. The caller wipes ch->p3 whatever the outcome. */
static int server_check_p3(struct fl_channel *ch, size_t plen)
{
	const uint8_t *p3 = ch->p3;
	uint8_t flags = p3[FL_PUBKEY_BYTES];
	size_t sl = FL_PUBKEY_BYTES + 1 + (flags == 1 ? FL_TOKEN_BYTES : 0);
	if (flags > 1 || plen != sl + FL_SIGNATURE_BYTES)
		return fl_ch_fail(ch, FL_EFORMAT, "malformed handshake message 3 contents");
	if (fl_pubkey_check(p3) != FL_OK)
		return fl_ch_fail(ch, FL_EFORMAT, "authentication failed: client %s",
				  fl_error_msg());
	hash_h2(ch, p3, sl);
	uint8_t si[SIG_INPUT_MAX];
	sig_input(si, D_C, ch->h2);
	if (crypto_sign_verify_detached(p3 + sl, si, sizeof(D_C) - 1 + HS_HASH_BYTES, p3) != 0)
		return fl_ch_fail(ch, FL_EFORMAT, "authentication failed: bad client signature");
	memcpy(ch->peer_pk, p3, FL_PUBKEY_BYTES);

	char reason[FL_CHANNEL_REASON_MAX + 1] = "";
	int rc = ch->authorize(ch->auth_ctx, ch->peer_pk,
			       flags == 1 ? p3 + FL_PUBKEY_BYTES + 1 : NULL, reason,
			       sizeof(reason));
	if (rc != 0) {
		if (!reason[0])
			snprintf(reason, sizeof(reason), "client key not authorised");
		for (char *c = reason; *c; c++)
			if ((unsigned char)*c < 0x20)
				*c = ' ';
		int err = server_send_msg4(
			ch, rc == FL_EIO ? MSG4_STATUS_RETRY : MSG4_STATUS_REFUSED, reason);
		if (err)
			return err;
		return fl_ch_fail(ch, rc < 0 ? rc : FL_ENOTFOUND, "client refused: %s", reason);
	}
	return FL_OK;
}

static int server_on_msg3(struct fl_channel *ch, const uint8_t *p, size_t n)
{
	if (n < 1 + P3_MIN + AEAD_ABYTES || n > 1 + P3_MAX + AEAD_ABYTES || p[0] != 0x03)
		return fl_ch_fail(ch, FL_EFORMAT, "malformed handshake message 3 (%zu bytes)", n);
	unsigned long long plen = 0;
	int err = hs_open(ch, ch->p3, &plen, p, n, ch->k_c2s, ch->h1, 3);
	if (!err)
		err = server_check_p3(ch, (size_t)plen);
	sodium_memzero(ch->p3, sizeof(ch->p3)); /* the token, on every path */
	if (err)
		return err;
	err = server_send_msg4(ch, MSG4_STATUS_OK, NULL);
	if (!err)
		err = derive_data_keys(ch);
	if (err)
		return err;
	ch->peer_known = 1;
	ch->hs = HS_DONE;
	return FL_OK;
}

static int client_on_msg4(struct fl_channel *ch, const uint8_t *p, size_t n)
{
	if (n < 1 + 1 + AEAD_ABYTES || n > 1 + 1 + FL_CHANNEL_REASON_MAX + AEAD_ABYTES ||
	    p[0] != 0x04)
		return fl_ch_fail(ch, FL_EFORMAT, "malformed handshake message 4 (%zu bytes)", n);
	uint8_t p4[1 + FL_CHANNEL_REASON_MAX + 1];
	unsigned long long plen = 0;
	int opened = hs_open(ch, p4, &plen, p, n, ch->k_s2c, ch->h2, 4);
	if (opened != FL_OK)
		return opened;
	if (p4[0] == MSG4_STATUS_REFUSED || p4[0] == MSG4_STATUS_RETRY) {
		p4[plen] = '\0';
		for (size_t i = 1; i < plen; i++)
			if (p4[i] < 0x20 || p4[i] > 0x7e)
				p4[i] = '?';
		if (p4[0] == MSG4_STATUS_RETRY)
			return fl_ch_fail(ch, FL_EIO, "the server cannot admit this client now: %s",
					  (const char *)p4 + 1);
		return fl_ch_fail(ch, FL_ENOTFOUND, "the server refused this client: %s",
				  (const char *)p4 + 1);
	}
	if (p4[0] != MSG4_STATUS_OK || plen != 1)
		return fl_ch_fail(ch, FL_EFORMAT, "malformed handshake message 4 contents");
	ch->peer_known = 1;
	ch->hs = HS_DONE;
	return FL_OK;
}

int fl_hs_on_message(struct fl_channel *ch, const uint8_t *p, size_t n)
{
	switch (ch->hs) {
	case HS_SERVER_WAIT1: return server_on_msg1(ch, p, n);
	case HS_CLIENT_WAIT2: return client_on_msg2(ch, p, n);
	case HS_SERVER_WAIT3: return server_on_msg3(ch, p, n);
	case HS_CLIENT_WAIT4: return client_on_msg4(ch, p, n);
	case HS_CLIENT_START:
		return fl_ch_fail(ch, FL_EFORMAT, "the server spoke before the client's hello");
	case HS_DONE: break;
	}
	return fl_ch_fail(ch, FL_EFORMAT, "handshake message after the handshake");
}
