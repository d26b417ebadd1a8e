/* channel_impl.h - the state shared by channel.c (API, record layer,
 * framing, insecure mode) and handshake.c (the four handshake messages and
 * the key schedule). Not part of the public API. */
#ifndef FL_CHANNEL_IMPL_H
#define FL_CHANNEL_IMPL_H

#include "channel.h"
#include "token.h"
#include "errors.h"

#include <sodium.h>

#define HS_EPH_BYTES crypto_kx_PUBLICKEYBYTES /* 32 */
#define HS_NONCE_BYTES 32
#define HS_HASH_BYTES 32
#define HS_KEY_BYTES 32
#define HS_FLAG_AES 0x01 /* msg1 / msg2 flags: this end can run AES-256-GCM */
/* msg3's plaintext: client key | flags | [token] | signature */
#define HS_P3_MAX (FL_PUBKEY_BYTES + 1 + FL_TOKEN_BYTES + FL_SIGNATURE_BYTES)

/* The record layer, negotiated in msg1 / msg2 (docs/SECURITY.md §3). */
enum fl_ch_cipher {
	FL_CH_SECRETSTREAM = 0, /* crypto_secretstream_xchacha20poly1305 */
	FL_CH_AES256GCM = 1,    /* crypto_aead_aes256gcm, counter nonces */
};
/* Records per direction and AES key, the final record included. */
#define FL_CH_AES_MAX_RECORDS ((uint64_t)1 << 32)
/* Each direction's key is replaced (channel_record.c, rekey) after the
 * record that brings its plaintext bytes to FL_CH_REKEY_BYTES or its
 * records to FL_CH_REKEY_RECORDS: both ends count the same records, so no
 * signal is sent. A key thus protects at most 2^35 bytes plus one record
 * (< 2^36 bytes = 2^32 AES blocks, where the AES-GCM distinguishing
 * advantage is near (2^32)^2 / 2^128 = 2^-64) and fewer than
 * FL_CH_AES_MAX_RECORDS records. */
#define FL_CH_REKEY_BYTES ((uint64_t)1 << 35)
#define FL_CH_REKEY_RECORDS ((uint64_t)1 << 31)
/* The BLAKE2b-256 message keyed with the old key that gives the new one. */
#define FL_CH_REKEY_LABEL "fedloha-hs-v1 rekey"

enum hs_state {
	HS_CLIENT_START, /* client before fl_channel_start */
	HS_CLIENT_WAIT2, /* sent msg1 */
	HS_CLIENT_WAIT4, /* sent msg3 and its stream header */
	HS_SERVER_WAIT1,
	HS_SERVER_WAIT3, /* sent msg2 */
	HS_DONE,
};

struct fl_channel {
	int is_server, insecure;
	enum hs_state hs;
	int err;                    /* sticky */
	char why[FL_ERROR_MSG_MAX]; /* its detail, repeated on later calls */
	const struct fl_identity *self;
	uint8_t pinned[FL_PUBKEY_BYTES];
	fl_channel_authorize_fn authorize;
	void *auth_ctx;
	int has_token;
	uint8_t token[FL_TOKEN_BYTES];
	size_t max_record;
	uint32_t timeout_ms;
	int aes_ok;               /* we offer AES-256-GCM (available, not disabled) */
	enum fl_ch_cipher cipher; /* valid once keys are derived */
	int cipher_known;

	/* handshake secrets and transcript (wiped once keys are derived) */
	uint8_t eph_pk[HS_EPH_BYTES], eph_sk[crypto_kx_SECRETKEYBYTES];
	uint8_t msg1[4 + 1 + 1 + HS_EPH_BYTES + HS_NONCE_BYTES];
	uint8_t h1[HS_HASH_BYTES], h2[HS_HASH_BYTES];
	uint8_t k_c2s[HS_KEY_BYTES], k_s2c[HS_KEY_BYTES]; /* crypto_kx outputs */
	uint8_t peer_pk[FL_PUBKEY_BYTES];
	int peer_known;
	uint8_t p3[HS_P3_MAX]; /* server: msg3 decrypted while it is checked, else zero */

	/* records */
	int tx_ready, rx_ready; /* secretstream states initialised */
	crypto_secretstream_xchacha20poly1305_state tx, rx;
	crypto_aead_aes256gcm_state aes_tx, aes_rx; /* expanded AES keys (16-aligned) */
	uint32_t aes_tx_dir, aes_rx_dir;            /* nonce prefix: 1 = c2s, 2 = s2c */
	uint64_t tx_records;
	uint64_t aes_max_records; /* FL_CH_AES_MAX_RECORDS; tests lower it */
	uint8_t aes_tx_key[HS_KEY_BYTES], aes_rx_key[HS_KEY_BYTES]; /* for the rekey */
	uint64_t tx_bytes, rx_bytes;   /* plaintext bytes sealed / opened under this key */
	uint64_t rekey_bytes;          /* FL_CH_REKEY_BYTES; tests lower it */
	uint64_t rekey_records;        /* FL_CH_REKEY_RECORDS; tests lower it */
	uint64_t tx_rekeys, rx_rekeys; /* keys replaced so far, per direction */
	uint8_t rx_key[HS_KEY_BYTES];  /* until the peer's stream header arrives */
	int rx_key_set;
	int peer_final, sent_final;
	uint64_t rx_records;

	/* incoming messages (channel_read.c) */
	uint8_t hdr[FL_WIRE_FRAME_HEADER_BYTES];
	size_t hdr_have;
	size_t need, have; /* the message being reassembled */
	uint8_t *small;    /* messages and plaintexts up to RX_KEEP bytes (kept) */
	size_t small_cap;
	uint8_t *big; /* a larger one: the thread's spare, during one record */
	size_t big_cap;

	/* bytes to send, collected during one call */
	uint8_t *out;
	size_t out_len, out_cap;
};

/* channel.c */
void fl_ch_wipe_secrets(struct fl_channel *ch);
int fl_ch_fail(struct fl_channel *ch, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int fl_ch_emit(struct fl_channel *ch, const uint8_t *p, size_t n); /* length + bytes */

/* channel_read.c */
/* Feeds bytes from the peer: handshake messages to handshake.c, records
 * opened and their plaintext passed to fn. Fails (sticky) like the
 * message that failed. */
int fl_ch_feed(struct fl_channel *ch, const uint8_t *data, size_t len, fl_channel_deliver_fn fn,
	       void *ctx);
void fl_ch_rx_free(struct fl_channel *ch); /* the input buffers */
/* For tests: the calling thread's spare buffer (NULL when it has none) and
 * its size in *cap (when cap is not NULL). */
const uint8_t *fl_ch_spare_debug(size_t *cap);
/* Passes n plaintext bytes to fn (nothing when n = 0 or fn = NULL); its
 * non-zero return fails the channel with fn's message and is returned. */
int fl_ch_deliver(struct fl_channel *ch, const uint8_t *plain, size_t n, fl_channel_deliver_fn fn,
		  void *ctx);

/* channel_record.c */
/* Both directions' keys are known (ch->cipher chosen): secretstream sets up
 * the send stream (emitting its header record) and remembers the receive
 * key; AES-256-GCM expands both keys, nothing is sent. The caller wipes
 * tx_key / rx_key. */
int fl_ch_keys_ready(struct fl_channel *ch, const uint8_t tx_key[HS_KEY_BYTES],
		     const uint8_t rx_key[HS_KEY_BYTES]);
/* Seals n plaintext bytes into rec (4 + n + FL_CHANNEL_RECORD_OVERHEAD
 * bytes: length, then the record), as the final record when final. */
int fl_ch_record_seal(struct fl_channel *ch, uint8_t *rec, const uint8_t *plain, size_t n,
		      int final);
/* Opens record p (n bytes, n >= FL_CHANNEL_RECORD_OVERHEAD) into plain
 * (n - FL_CHANNEL_RECORD_OVERHEAD bytes): elsewhere, or at p + 1 (in place,
 * p then writable); *final = 1 for the final record.
 * Fails (sticky) when it does not authenticate. */
int fl_ch_record_open(struct fl_channel *ch, uint8_t *plain, const uint8_t *p, size_t n,
		      int *final);
/* A secretstream header from the peer (the first message after the
 * handshake). */
int fl_ch_record_rx_header(struct fl_channel *ch, const uint8_t *p, size_t n);
/* The largest message the record layer accepts now. */
size_t fl_ch_record_limit(const struct fl_channel *ch);

/* handshake.c */
int fl_hs_client_hello(struct fl_channel *ch);
/* One handshake message from the peer, in the current state. */
int fl_hs_on_message(struct fl_channel *ch, const uint8_t *p, size_t n);

#endif
