/* channel_record.c - the secure channel's two record layers
 * (docs/SECURITY.md §3), chosen in the handshake:
 *  - AES-256-GCM (crypto_aead_aes256gcm, precomputed key schedule), the
 *    fast path when both ends have AES-NI: record = flags (1 byte, 0 or
 *    FINAL) | ciphertext | 16-byte tag; nonce = 32-bit direction constant
 *    || 64-bit big-endian record counter from 0; associated data = the
 *    4-byte length and the flags byte, so a changed length, a final flag
 *    added or removed, a replayed, reordered or dropped record all fail the
 *    tag check. At most FL_CH_AES_MAX_RECORDS records per direction.
 *  - crypto_secretstream_xchacha20poly1305, one stream per direction (a
 *    24-byte header message, then records of 17 bytes overhead).
 * Both add exactly FL_CHANNEL_RECORD_OVERHEAD (17) bytes per record, and
 * both replace a direction's key after the record that brings it to
 * rekey_bytes plaintext bytes or rekey_records records (channel_impl.h):
 * sender and receiver count the same records, so they switch at the same
 * record boundary without a signal. AES-256-GCM: new key = BLAKE2b-256
 * keyed with the old key over FL_CH_REKEY_LABEL, nonce counter from 0;
 * secretstream: crypto_secretstream_xchacha20poly1305_rekey.
 * No framing, no buffers, no API: channel.c calls these. */
#include "channel_impl.h"

#include "bytes.h"
#include "errors.h"

#include <string.h>

#define SS_HEADER_BYTES crypto_secretstream_xchacha20poly1305_HEADERBYTES
#define SS_ABYTES crypto_secretstream_xchacha20poly1305_ABYTES
#define GCM_ABYTES crypto_aead_aes256gcm_ABYTES
#define GCM_NPUB crypto_aead_aes256gcm_NPUBBYTES
#define REC_FLAG_FINAL 0x01

_Static_assert(FL_CHANNEL_RECORD_OVERHEAD == SS_ABYTES, "record overhead");
_Static_assert(FL_CHANNEL_RECORD_OVERHEAD == 1 + GCM_ABYTES, "record overhead");
_Static_assert(GCM_NPUB == 12, "96-bit GCM nonce");

/* nonce = direction (4 bytes BE) || counter (8 bytes BE) */
static void gcm_nonce(uint8_t nonce[GCM_NPUB], uint32_t dir, uint64_t counter)
{
	fl_be32_put(nonce, dir);
	fl_be32_put(nonce + 4, (uint32_t)(counter >> 32));
	fl_be32_put(nonce + 8, (uint32_t)counter);
}

int fl_ch_keys_ready(struct fl_channel *ch, const uint8_t tx_key[HS_KEY_BYTES],
		     const uint8_t rx_key[HS_KEY_BYTES])
{
	ch->tx_records = 0;
	ch->rx_records = 0;
	ch->tx_bytes = 0;
	ch->rx_bytes = 0;
	if (ch->cipher == FL_CH_AES256GCM) {
		/* c2s records carry direction 1, s2c records direction 2 */
		ch->aes_tx_dir = ch->is_server ? 2 : 1;
		ch->aes_rx_dir = ch->is_server ? 1 : 2;
		memcpy(ch->aes_tx_key, tx_key, HS_KEY_BYTES);
		memcpy(ch->aes_rx_key, rx_key, HS_KEY_BYTES);
		crypto_aead_aes256gcm_beforenm(&ch->aes_tx, tx_key);
		crypto_aead_aes256gcm_beforenm(&ch->aes_rx, rx_key);
		ch->tx_ready = ch->rx_ready = 1;
		return FL_OK;
	}
	uint8_t header[SS_HEADER_BYTES];
	crypto_secretstream_xchacha20poly1305_init_push(&ch->tx, header, tx_key);
	memcpy(ch->rx_key, rx_key, HS_KEY_BYTES);
	ch->rx_key_set = 1;
	ch->tx_ready = 1;
	return fl_ch_emit(ch, header, sizeof(header));
}

int fl_ch_record_rx_header(struct fl_channel *ch, const uint8_t *p, size_t n)
{
	if (ch->cipher != FL_CH_SECRETSTREAM || n != SS_HEADER_BYTES || !ch->rx_key_set)
		return fl_ch_fail(ch, FL_EFORMAT, "bad stream header (%zu bytes)", n);
	crypto_secretstream_xchacha20poly1305_init_pull(&ch->rx, p, ch->rx_key);
	sodium_memzero(ch->rx_key, sizeof(ch->rx_key));
	ch->rx_key_set = 0;
	ch->rx_ready = 1;
	return FL_OK;
}

size_t fl_ch_record_limit(const struct fl_channel *ch)
{
	if (!ch->rx_ready)
		return SS_HEADER_BYTES;
	return ch->max_record + FL_CHANNEL_RECORD_OVERHEAD;
}

/* key <- BLAKE2b-256(key = key, FL_CH_REKEY_LABEL); *st expanded from it. */
static void aes_rekey(uint8_t key[HS_KEY_BYTES], crypto_aead_aes256gcm_state *st)
{
	uint8_t next[HS_KEY_BYTES];
	crypto_generichash(next, sizeof(next), (const uint8_t *)FL_CH_REKEY_LABEL,
			   sizeof(FL_CH_REKEY_LABEL) - 1, key, HS_KEY_BYTES);
	memcpy(key, next, HS_KEY_BYTES);
	sodium_memzero(next, sizeof(next));
	sodium_memzero(st, sizeof(*st));
	crypto_aead_aes256gcm_beforenm(st, key);
}

/* After a record in one direction: a new key once that key has carried
 * rekey_bytes bytes or rekey_records records. */
static void maybe_rekey(struct fl_channel *ch, int tx)
{
	uint64_t *bytes = tx ? &ch->tx_bytes : &ch->rx_bytes;
	uint64_t *records = tx ? &ch->tx_records : &ch->rx_records;
	if (*bytes < ch->rekey_bytes && *records < ch->rekey_records)
		return;
	if (ch->cipher == FL_CH_AES256GCM)
		aes_rekey(tx ? ch->aes_tx_key : ch->aes_rx_key, tx ? &ch->aes_tx : &ch->aes_rx);
	else
		crypto_secretstream_xchacha20poly1305_rekey(tx ? &ch->tx : &ch->rx);
	*records = 0; /* a new key: the AES nonce counter starts again */
	*bytes = 0;
	(*(tx ? &ch->tx_rekeys : &ch->rx_rekeys))++;
}

int fl_ch_record_seal(struct fl_channel *ch, uint8_t *rec, const uint8_t *plain, size_t n,
		      int final)
{
	size_t c = n + FL_CHANNEL_RECORD_OVERHEAD;
	fl_be32_put(rec, (uint32_t)c);
	if (ch->cipher == FL_CH_SECRETSTREAM) {
		crypto_secretstream_xchacha20poly1305_push(
			&ch->tx, rec + 4, NULL, plain, n, NULL, 0,
			final ? crypto_secretstream_xchacha20poly1305_TAG_FINAL
			      : crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
		ch->tx_records++;
		ch->tx_bytes += n;
		maybe_rekey(ch, 1);
		return FL_OK;
	}
	/* The last counter value is kept for the final record, so a channel
	 * at its limit can still close in order. */
	uint64_t room = final ? ch->aes_max_records : ch->aes_max_records - 1;
	if (ch->tx_records >= room)
		return fl_error_set(FL_ERANGE,
				    "secure channel: %llu records sent, the AES-256-GCM limit per "
				    "key; close the channel and reconnect",
				    (unsigned long long)ch->tx_records);
	uint8_t nonce[GCM_NPUB];
	gcm_nonce(nonce, ch->aes_tx_dir, ch->tx_records);
	rec[4] = final ? REC_FLAG_FINAL : 0;
	crypto_aead_aes256gcm_encrypt_detached_afternm(rec + 5, rec + 5 + n, NULL, plain, n, rec, 5,
						       NULL, nonce, &ch->aes_tx);
	ch->tx_records++;
	ch->tx_bytes += n;
	maybe_rekey(ch, 1);
	return FL_OK;
}

static int bad_record(struct fl_channel *ch)
{
	return fl_ch_fail(ch, FL_EFORMAT,
			  "authentication failed: record %llu from the peer is corrupted, "
			  "replayed or out of order",
			  (unsigned long long)ch->rx_records + 1);
}

/* The receiver's count after a record opened; a data record may rekey. */
static int count_rx(struct fl_channel *ch, size_t mlen, int final)
{
	ch->rx_bytes += mlen;
	if (!final)
		maybe_rekey(ch, 0);
	return FL_OK;
}

int fl_ch_record_open(struct fl_channel *ch, uint8_t *plain, const uint8_t *p, size_t n, int *final)
{
	*final = 0;
	if (ch->cipher == FL_CH_SECRETSTREAM) {
		unsigned long long got = 0;
		unsigned char tag = 0;
		int bad = crypto_secretstream_xchacha20poly1305_pull(&ch->rx, plain, &got, &tag, p,
								     n, NULL, 0);
		if (bad)
			return bad_record(ch);
		ch->rx_records++;
		if (tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL)
			*final = 1;
		else if (tag != crypto_secretstream_xchacha20poly1305_TAG_MESSAGE)
			return fl_ch_fail(ch, FL_EFORMAT, "record with unexpected tag %u", tag);
		return count_rx(ch, (size_t)got, *final);
	}
	if (ch->rx_records >= ch->aes_max_records)
		return fl_ch_fail(ch, FL_EFORMAT, "the peer sent more than %llu records",
				  (unsigned long long)ch->aes_max_records);
	size_t mlen = n - FL_CHANNEL_RECORD_OVERHEAD;
	uint8_t ad[5], nonce[GCM_NPUB];
	fl_be32_put(ad, (uint32_t)n);
	ad[4] = p[0];
	gcm_nonce(nonce, ch->aes_rx_dir, ch->rx_records);
	if (crypto_aead_aes256gcm_decrypt_detached_afternm(plain, NULL, p + 1, mlen, p + 1 + mlen,
							   ad, sizeof(ad), nonce, &ch->aes_rx) != 0)
		return bad_record(ch);
	ch->rx_records++;
	if (p[0] & ~REC_FLAG_FINAL) /* authenticated, so a broken peer */
		return fl_ch_fail(ch, FL_EFORMAT, "record with unknown flags 0x%02x", p[0]);
	*final = p[0] == REC_FLAG_FINAL;
	return count_rx(ch, mlen, *final);
}
