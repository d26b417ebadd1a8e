/* channel_impl.h - the state shared by channel.c (API, record layer,
 * framing, insecure mode) and handshake.c (the four handshake messages and
 * the key schedule). Not part of the public API. */
#ifndef FL_CHANNEL_IMPL_H
#define FL_CHANNEL_IMPL_H

#include "channel.h"
#include "enrol.h"
#include "errors.h"

#include <sodium.h>

#define HS_EPH_BYTES crypto_kx_PUBLICKEYBYTES   /* 32 */
#define HS_NONCE_BYTES 32
#define HS_HASH_BYTES 32
#define HS_KEY_BYTES 32

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
	int err;                             /* sticky */
	char why[FL_ERROR_MSG_MAX];          /* its detail, repeated on later calls */
	const struct fl_identity *self;
	uint8_t pinned[FL_PUBKEY_BYTES];
	fl_channel_authorize_fn authorize;
	void *auth_ctx;
	int has_token;
	uint8_t token[FL_TOKEN_BYTES];
	size_t max_record;
	uint32_t timeout_ms;

	/* handshake secrets and transcript (wiped once keys are derived) */
	uint8_t eph_pk[HS_EPH_BYTES], eph_sk[crypto_kx_SECRETKEYBYTES];
	uint8_t msg1[4 + 1 + 1 + HS_EPH_BYTES + HS_NONCE_BYTES];
	uint8_t h1[HS_HASH_BYTES], h2[HS_HASH_BYTES];
	uint8_t k_c2s[HS_KEY_BYTES], k_s2c[HS_KEY_BYTES]; /* crypto_kx outputs */
	uint8_t peer_pk[FL_PUBKEY_BYTES];
	int peer_known;

	/* records */
	int tx_ready, rx_ready; /* secretstream states initialised */
	crypto_secretstream_xchacha20poly1305_state tx, rx;
	uint8_t rx_key[HS_KEY_BYTES]; /* until the peer's stream header arrives */
	int rx_key_set;
	int peer_final, sent_final;
	uint64_t rx_records;

	/* framing of incoming bytes */
	uint8_t hdr[4];
	size_t hdr_have;
	uint8_t *buf; /* reassembles a message split across reads (grow-only) */
	size_t buf_cap, need, have;
	uint8_t *plain; /* decrypted record (grow-only) */
	size_t plain_cap;

	/* bytes to send, collected during one call */
	uint8_t *out;
	size_t out_len, out_cap;
};

/* channel.c */
int fl_ch_fail(struct fl_channel *ch, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int fl_ch_emit(struct fl_channel *ch, const uint8_t *p, size_t n); /* length + bytes */
/* Both directions' keys are known: sets up the send stream (emitting its
 * header record) and remembers the receive key. Wipes tx_key / rx_key. */
int fl_ch_keys_ready(struct fl_channel *ch, uint8_t tx_key[HS_KEY_BYTES],
		     uint8_t rx_key[HS_KEY_BYTES]);

/* handshake.c */
int fl_hs_client_hello(struct fl_channel *ch);
/* One handshake message from the peer, in the current state. */
int fl_hs_on_message(struct fl_channel *ch, const uint8_t *p, size_t n);

#endif
