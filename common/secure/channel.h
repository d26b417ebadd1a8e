/* channel.h - the secure channel under the wire protocol: a mutually
 * authenticated, encrypted byte pipe built from libsodium only
 * (docs/SECURITY.md has the design and the threat model).
 *
 * Byte in, byte out: the channel never touches a socket. A transport
 *  - calls fl_channel_start() once connected and writes the buffer it gives
 *    (the client's first handshake message; nothing for a server);
 *  - passes every byte it reads to fl_channel_recv(), writes the reply it
 *    gets (handshake messages), and receives the peer's plaintext through
 *    the deliver callback (the protocol's frame stream: feed it to an
 *    fl_frame_reader);
 *  - once fl_channel_established() is 1, turns every outgoing protocol frame
 *    into one record with fl_channel_seal() / fl_channel_seal_buf();
 *  - ends with fl_channel_close() (a final record), and on EOF asks
 *    fl_channel_eof() whether the peer closed properly;
 *  - enforces handshake_timeout_ms itself (fl_channel_handshake_timeout_ms).
 *
 * On the wire every handshake message and every record is a 4-byte
 * big-endian length and that many bytes, like protocol frames. Handshake
 * messages are at most FL_CHANNEL_HANDSHAKE_MAX bytes; a record carries at
 * most max_record plaintext bytes plus FL_CHANNEL_RECORD_OVERHEAD. Lengths
 * are checked before anything is allocated.
 *
 * Any failure (malformed or oversize input, a bad signature, a record that
 * does not authenticate, a replayed, reordered or truncated record) makes
 * the channel dead: that call and every later one return the same error
 * (FL_EFORMAT "authentication failed: ..." for cryptographic failures;
 * FL_ENOTFOUND on both ends when the server refuses the client's key, the
 * client's message quoting the server's reason).
 *
 * The record cipher is negotiated inside the authenticated handshake:
 * AES-256-GCM when both ends have AES-NI (and neither sets disable_aes),
 * else XChaCha20-Poly1305 secretstream; fl_channel_cipher() tells which.
 * Both add FL_CHANNEL_RECORD_OVERHEAD bytes per record.
 *
 * With insecure = 1 the channel is a pass-through (no handshake, bytes
 * unchanged, established at once), so transports have one code path.
 *
 * A channel is used by one thread at a time.
 */
#ifndef FL_CHANNEL_H
#define FL_CHANNEL_H

#include "identity.h"
#include "wire.h"

#include <stddef.h>
#include <stdint.h>

#define FL_CHANNEL_HANDSHAKE_MAX 1024
#define FL_CHANNEL_RECORD_OVERHEAD \
	17 /* both record layers: secretstream ABYTES, or
					* AES-GCM flags byte + 16-byte tag */
#define FL_CHANNEL_TIMEOUT_DEFAULT_MS 10000
#define FL_CHANNEL_REASON_MAX 200 /* a refusal reason sent to the client */

/* Server-side admission: FL_OK admits pk; a negative fl_err (FL_ENOTFOUND
 * for an unknown key) refuses, with a one-line
 * reason (NUL-terminated, fits reason_cap) that is sent to the client.
 * FL_EIO means "not now" (the server could not record an enrolment, say):
 * msg4 then says "retry" and the client's fl_channel_recv fails with FL_EIO
 * instead of the final FL_ENOTFOUND.
 * token is NULL or FL_TOKEN_BYTES (32) bytes of an enrolment token.
 * srv_auth_check (enrol.h) is the coordinator's implementation. */
typedef int (*fl_channel_authorize_fn)(void *ctx, const uint8_t pk[FL_PUBKEY_BYTES],
				       const uint8_t *token, char *reason, size_t reason_cap);

/* Receives decrypted plaintext (valid during the call). Non-zero (a
 * negative fl_err, or FL_WIRE_FEED_STOP when the receiver closed during the
 * call) stops fl_channel_recv, which returns that value; the channel is then
 * dead. */
typedef int (*fl_channel_deliver_fn)(void *ctx, const uint8_t *plain, size_t n);

struct fl_channel_config {
	int is_server;
	int insecure;                      /* pass-through; every field below is then ignored */
	const struct fl_identity *self;    /* our long-term key; must outlive the channel */
	const uint8_t *pinned_server_pk;   /* client: the coordinator's key (required) */
	fl_channel_authorize_fn authorize; /* server (required) */
	void *auth_ctx;
	const char *enrol_token; /* client, optional: the 43-character token */
	size_t max_record;       /* plaintext bytes per record; 0 = FL_WIRE_MAX_FRAME_DEFAULT + 4 */
	uint32_t handshake_timeout_ms; /* 0 = FL_CHANNEL_TIMEOUT_DEFAULT_MS */
	int disable_aes; /* do not offer AES-256-GCM: records use XChaCha20 secretstream
			  * (tests and benchmarks; 0 = offer it when the CPU has AES-NI) */
};

struct fl_channel;

/* Validates the configuration (FL_EINVAL with a reason) and copies what it
 * needs except self. */
int fl_channel_new(const struct fl_channel_config *cfg, struct fl_channel **out);
void fl_channel_free(struct fl_channel *ch); /* wipes all secrets; NULL is a no-op */

/* Call once when the connection is up. *out: bytes to send, or NULL. */
int fl_channel_start(struct fl_channel *ch, struct fl_buf **out);
/* Feeds bytes read from the peer. *reply (set to NULL first) may receive
 * bytes to send: write them even when the call fails, then close (a server
 * refusing a client tells it why). The caller owns *reply. */
int fl_channel_recv(struct fl_channel *ch, const uint8_t *data, size_t len,
		    fl_channel_deliver_fn deliver, void *ctx, struct fl_buf **reply);
/* One record carrying n plaintext bytes (n <= max_record, else FL_ERANGE);
 * only once established. Each direction's key is replaced after 2^35 bytes
 * or 2^31 records (both ends in step, docs/SECURITY.md §4), so volume never
 * ends a channel. */
int fl_channel_seal(struct fl_channel *ch, const uint8_t *plain, size_t n, struct fl_buf **out);
/* The same for a whole frame buffer; in insecure mode *out is in itself
 * (one more reference), so nothing is copied. in stays the caller's. */
int fl_channel_seal_buf(struct fl_channel *ch, struct fl_buf *in, struct fl_buf **out);
/* Orderly close: *out is the final record (NULL in insecure mode); nothing
 * can be sealed afterwards. */
int fl_channel_close(struct fl_channel *ch, struct fl_buf **out);
/* The peer's connection ended (EOF). FL_OK when it had sent its final
 * record (or in insecure mode); else FL_EFORMAT "closed during the
 * handshake" / "truncated: no final record". */
int fl_channel_eof(struct fl_channel *ch);

/* 1 when both ends are authenticated and records may be sealed. */
int fl_channel_established(const struct fl_channel *ch);
/* 1 once the peer's final record arrived. */
int fl_channel_peer_closed(const struct fl_channel *ch);
/* The peer's long-term key once established (NULL before, and always in
 * insecure mode). */
const uint8_t *fl_channel_peer_pk(const struct fl_channel *ch);
/* The sticky error (FL_OK while alive). */
int fl_channel_error(const struct fl_channel *ch);
uint32_t fl_channel_handshake_timeout_ms(const struct fl_channel *ch);
size_t fl_channel_max_record(const struct fl_channel *ch);
int fl_channel_insecure(const struct fl_channel *ch);
/* The negotiated record cipher: "aes-256-gcm" or "xchacha20-poly1305"
 * (known on the server after msg1, on the client after msg2), "" before,
 * "none" in insecure mode. A static string. */
const char *fl_channel_cipher(const struct fl_channel *ch);

#endif
