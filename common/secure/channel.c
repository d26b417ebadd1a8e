/* channel.c - the secure channel's public API: configuration, sealing,
 * orderly close, truncation detection and the insecure pass-through. The
 * input side (framing, opening records) is in channel_read.c, the handshake
 * messages in handshake.c, the two record layers (AES-256-GCM and XChaCha20
 * secretstream) in channel_record.c. No sockets, no event loop. */
#include "channel_impl.h"

#include "bytes.h"
#include "errors.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RECORD_LIMIT ((size_t)UINT32_MAX - FL_CHANNEL_RECORD_OVERHEAD)

void fl_ch_wipe_secrets(struct fl_channel *ch)
{
	sodium_memzero(ch->eph_sk, sizeof(ch->eph_sk));
	sodium_memzero(ch->k_c2s, sizeof(ch->k_c2s));
	sodium_memzero(ch->k_s2c, sizeof(ch->k_s2c));
	sodium_memzero(ch->rx_key, sizeof(ch->rx_key));
	sodium_memzero(&ch->tx, sizeof(ch->tx));
	sodium_memzero(&ch->rx, sizeof(ch->rx));
	sodium_memzero(&ch->aes_tx, sizeof(ch->aes_tx));
	sodium_memzero(&ch->aes_rx, sizeof(ch->aes_rx));
	sodium_memzero(ch->aes_tx_key, sizeof(ch->aes_tx_key));
	sodium_memzero(ch->aes_rx_key, sizeof(ch->aes_rx_key));
	sodium_memzero(ch->token, sizeof(ch->token));
}

int fl_ch_fail(struct fl_channel *ch, int err, const char *fmt, ...)
{
	static const char prefix[] = "secure channel: ";
	char msg[FL_ERROR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* No double prefix when a message is passed on. */
	size_t off = strncmp(msg, prefix, sizeof(prefix) - 1) ? sizeof(prefix) - 1 : 0;
	memcpy(ch->why, prefix, off);
	size_t ml = strnlen(msg, sizeof(ch->why) - off - 1);
	memcpy(ch->why + off, msg, ml);
	ch->why[off + ml] = '\0';
	ch->err = err;
	ch->tx_ready = ch->rx_ready = 0;
	fl_ch_wipe_secrets(ch);
	return fl_error_set(err, "%s", ch->why);
}

static int dead(const struct fl_channel *ch)
{
	return fl_error_set(ch->err, "%s", ch->why);
}

int fl_channel_new(const struct fl_channel_config *cfg, struct fl_channel **out)
{
	int err = fl_crypto_init();
	if (err)
		return err;
	if (!cfg->insecure) {
		if (!cfg->self)
			return fl_error_set(FL_EINVAL,
					    "secure channel: no identity (secret key) given");
		if (!cfg->is_server && !cfg->pinned_server_pk)
			return fl_error_set(
				FL_EINVAL,
				"secure channel: the client needs the server's public key");
		if (!cfg->is_server && fl_pubkey_check(cfg->pinned_server_pk) != FL_OK)
			return fl_error_set(FL_EINVAL, "secure channel: pinned server %s",
					    fl_error_msg());
		if (cfg->is_server && !cfg->authorize)
			return fl_error_set(FL_EINVAL,
					    "secure channel: the server needs an authoriser");
		if (cfg->max_record > MAX_RECORD_LIMIT)
			return fl_error_set(FL_EINVAL, "secure channel: max_record %zu too large",
					    cfg->max_record);
	}
	struct fl_channel *ch = calloc(1, sizeof(*ch));
	if (!ch)
		return fl_error_set(FL_ENOMEM, "secure channel: out of memory");
	ch->is_server = !!cfg->is_server;
	ch->insecure = !!cfg->insecure;
	ch->max_record = cfg->max_record ? cfg->max_record
					 : FL_WIRE_MAX_FRAME_DEFAULT + FL_WIRE_FRAME_HEADER_BYTES;
	ch->timeout_ms = cfg->handshake_timeout_ms ? cfg->handshake_timeout_ms
						   : FL_CHANNEL_TIMEOUT_DEFAULT_MS;
	if (ch->insecure) {
		ch->hs = HS_DONE;
		*out = ch;
		return FL_OK;
	}
	ch->self = cfg->self;
	ch->aes_ok = !cfg->disable_aes && crypto_aead_aes256gcm_is_available();
	ch->aes_max_records = FL_CH_AES_MAX_RECORDS;
	ch->rekey_bytes = FL_CH_REKEY_BYTES;
	ch->rekey_records = FL_CH_REKEY_RECORDS;
	ch->hs = ch->is_server ? HS_SERVER_WAIT1 : HS_CLIENT_START;
	if (!ch->is_server) {
		memcpy(ch->pinned, cfg->pinned_server_pk, FL_PUBKEY_BYTES);
		if (cfg->enrol_token && cfg->enrol_token[0]) {
			err = fl_token_parse(cfg->enrol_token, ch->token);
			if (err) {
				fl_channel_free(ch);
				return err;
			}
			ch->has_token = 1;
		}
	}
	ch->authorize = cfg->authorize;
	ch->auth_ctx = cfg->auth_ctx;
	*out = ch;
	return FL_OK;
}

void fl_channel_free(struct fl_channel *ch)
{
	if (!ch)
		return;
	fl_ch_rx_free(ch);
	free(ch->out);
	fl_ch_wipe_secrets(ch);
	sodium_memzero(ch, sizeof(*ch));
	free(ch);
}

int fl_ch_emit(struct fl_channel *ch, const uint8_t *p, size_t n)
{
	size_t need = ch->out_len + FL_WIRE_FRAME_HEADER_BYTES + n;
	if (need > ch->out_cap) {
		size_t cap = ch->out_cap ? ch->out_cap : 512;
		while (cap < need)
			cap *= 2;
		uint8_t *o = realloc(ch->out, cap);
		if (!o)
			return fl_ch_fail(ch, FL_ENOMEM, "out of memory");
		ch->out = o;
		ch->out_cap = cap;
	}
	uint8_t *d = ch->out + ch->out_len;
	fl_be32_put(d, (uint32_t)n);
	memcpy(d + 4, p, n);
	ch->out_len = need;
	return FL_OK;
}

/* Moves the collected output into a new buffer (NULL when there is none). */
static int flush(struct fl_channel *ch, struct fl_buf **out)
{
	*out = NULL;
	if (!ch->out_len)
		return FL_OK;
	struct fl_buf *b = fl_buf_new(ch->out_len);
	if (!b) {
		ch->out_len = 0;
		return fl_error_set(FL_ENOMEM, "secure channel: out of memory");
	}
	memcpy(b->data, ch->out, ch->out_len);
	ch->out_len = 0;
	*out = b;
	return FL_OK;
}

int fl_channel_start(struct fl_channel *ch, struct fl_buf **out)
{
	*out = NULL;
	if (ch->err)
		return dead(ch);
	if (ch->insecure || ch->is_server)
		return FL_OK;
	if (ch->hs != HS_CLIENT_START)
		return fl_error_set(FL_EINVAL, "secure channel: started twice");
	int err = fl_hs_client_hello(ch);
	if (err)
		return err;
	return flush(ch, out);
}

int fl_channel_recv(struct fl_channel *ch, const uint8_t *data, size_t len,
		    fl_channel_deliver_fn deliver, void *ctx, struct fl_buf **reply)
{
	*reply = NULL;
	if (ch->err)
		return dead(ch);
	if (ch->insecure)
		return fl_ch_deliver(ch, data, len, deliver, ctx);
	int err = fl_ch_feed(ch, data, len, deliver, ctx);
	if (err && !ch->err)
		fl_ch_fail(ch, err, "%s", fl_error_msg());
	/* Even after a failure: a refusal notice is meant to reach the peer. */
	char why[FL_ERROR_MSG_MAX];
	snprintf(why, sizeof(why), "%s", fl_error_msg());
	int ferr = flush(ch, reply);
	if (err) {
		fl_error_set(err, "%s", why);
		return err;
	}
	return ferr;
}

int fl_channel_seal(struct fl_channel *ch, const uint8_t *plain, size_t n, struct fl_buf **out)
{
	*out = NULL;
	if (ch->err)
		return dead(ch);
	if (ch->sent_final)
		return fl_error_set(FL_EINVAL, "secure channel: seal after close");
	if (ch->insecure) {
		struct fl_buf *b = fl_buf_new(n);
		if (!b)
			return fl_error_set(FL_ENOMEM, "secure channel: out of memory");
		memcpy(b->data, plain, n);
		*out = b;
		return FL_OK;
	}
	if (ch->hs != HS_DONE || !ch->tx_ready)
		return fl_error_set(FL_EINVAL, "secure channel: seal before the handshake ended");
	if (n > ch->max_record)
		return fl_error_set(FL_ERANGE,
				    "secure channel: %zu bytes over the %zu-byte record "
				    "limit",
				    n, ch->max_record);
	struct fl_buf *b = fl_buf_new(FL_WIRE_FRAME_HEADER_BYTES + n + FL_CHANNEL_RECORD_OVERHEAD);
	if (!b)
		return fl_error_set(FL_ENOMEM,
				    "secure channel: out of memory for a %zu-byte record", n);
	int err = fl_ch_record_seal(ch, b->data, plain, n, 0);
	if (err) {
		fl_buf_unref(b);
		return err;
	}
	*out = b;
	return FL_OK;
}

int fl_channel_seal_buf(struct fl_channel *ch, struct fl_buf *in, struct fl_buf **out)
{
	if (ch->insecure && !ch->err && !ch->sent_final) {
		*out = fl_buf_ref(in);
		return FL_OK;
	}
	return fl_channel_seal(ch, in->data, in->len, out);
}

int fl_channel_close(struct fl_channel *ch, struct fl_buf **out)
{
	*out = NULL;
	if (ch->err)
		return dead(ch);
	if (ch->sent_final)
		return FL_OK;
	ch->sent_final = 1;
	if (ch->insecure || ch->hs != HS_DONE || !ch->tx_ready)
		return FL_OK;
	struct fl_buf *b = fl_buf_new(FL_WIRE_FRAME_HEADER_BYTES + FL_CHANNEL_RECORD_OVERHEAD);
	if (!b)
		return fl_error_set(FL_ENOMEM, "secure channel: out of memory");
	int err = fl_ch_record_seal(ch, b->data, NULL, 0, 1);
	sodium_memzero(&ch->tx, sizeof(ch->tx));
	sodium_memzero(&ch->aes_tx, sizeof(ch->aes_tx));
	sodium_memzero(ch->aes_tx_key, sizeof(ch->aes_tx_key));
	ch->tx_ready = 0;
	if (err) {
		fl_buf_unref(b);
		return err;
	}
	*out = b;
	return FL_OK;
}

int fl_channel_eof(struct fl_channel *ch)
{
	if (ch->err)
		return dead(ch);
	if (ch->insecure || ch->peer_final)
		return FL_OK;
	if (ch->hs != HS_DONE)
		return fl_ch_fail(ch, FL_EFORMAT,
				  "the peer closed the connection during the handshake");
	return fl_ch_fail(ch, FL_EFORMAT,
			  "connection truncated: the peer closed without its final record");
}

int fl_channel_established(const struct fl_channel *ch)
{
	return !ch->err && ch->hs == HS_DONE;
}

int fl_channel_peer_closed(const struct fl_channel *ch)
{
	return ch->peer_final;
}

const uint8_t *fl_channel_peer_pk(const struct fl_channel *ch)
{
	return !ch->insecure && ch->peer_known && !ch->err ? ch->peer_pk : NULL;
}

int fl_channel_error(const struct fl_channel *ch)
{
	return ch->err;
}

uint32_t fl_channel_handshake_timeout_ms(const struct fl_channel *ch)
{
	return ch->timeout_ms;
}

size_t fl_channel_max_record(const struct fl_channel *ch)
{
	return ch->max_record;
}

int fl_channel_insecure(const struct fl_channel *ch)
{
	return ch->insecure;
}

const char *fl_channel_cipher(const struct fl_channel *ch)
{
	if (ch->insecure)
		return "none";
	if (!ch->cipher_known)
		return "";
	return ch->cipher == FL_CH_AES256GCM ? "aes-256-gcm" : "xchacha20-poly1305";
}
