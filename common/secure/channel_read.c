/* channel_read.c - the secure channel's input side: incoming bytes cut into
 * handshake messages and records (each a 4-byte big-endian length and that
 * many bytes, checked against the limit of the state the channel is in when
 * the message begins), handshake messages passed to handshake.c, records
 * opened (channel_record.c) and their plaintext delivered.
 *
 * Copies: a message that arrived whole in one call is used straight from the
 * caller's bytes (a record is opened from there into a buffer); a message
 * split across calls is reassembled into a buffer, and a record there is
 * opened in place. So every record byte is written once by the cipher and
 * at most once by a copy.
 *
 * Memory: a channel keeps a buffer of up to RX_KEEP bytes between messages.
 * A message in progress (at least one body byte received) holds a buffer of
 * its announced size, up to the state's limit (max_record + 17 bytes for a
 * record), until it completes or the channel is freed, even when the peer
 * stops sending. A buffer over RX_KEEP bytes is the calling thread's spare
 * when it has one (else a new one), borrowed for one message and handed
 * back once it is delivered: the spare keeps the size of the largest
 * message the thread has read, until the thread ends. One connection per
 * thread reading large records thus reuses one buffer (no allocation, no
 * fresh pages per record); with several connections on a thread whose
 * records interleave, a record that finds the spare lent out allocates its
 * own. No cipher code, no API (channel.c). */
#include "channel_impl.h"

#include "bytes.h"
#include "errors.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Buffers up to this size stay with their channel between messages. */
#define RX_KEEP 16384

/* The thread's spare buffer for records over RX_KEEP bytes; freed when the
 * thread ends (the key's destructor, which also forgets it, so a channel
 * freed or fed by a later destructor of the same thread allocates anew). */
static _Thread_local uint8_t *spare;
static _Thread_local size_t spare_cap;
static pthread_once_t spare_once = PTHREAD_ONCE_INIT;
static pthread_key_t spare_key;
static int spare_key_ok;

static void spare_dtor(void *p)
{
	free(p);
	spare = NULL;
	spare_cap = 0;
}

static void spare_key_init(void)
{
	spare_key_ok = pthread_key_create(&spare_key, spare_dtor) == 0;
}

const uint8_t *fl_ch_spare_debug(size_t *cap)
{
	if (cap)
		*cap = spare_cap;
	return spare;
}

static void spare_set(uint8_t *p, size_t cap)
{
	spare = p;
	spare_cap = cap;
	pthread_setspecific(spare_key, p);
}

/* Hands a large buffer back to the thread: it becomes the spare, or is
 * freed when the spare is at least as large. */
static void big_release(struct fl_channel *ch)
{
	if (!ch->big)
		return;
	pthread_once(&spare_once, spare_key_init);
	if (spare_key_ok && ch->big_cap > spare_cap) {
		free(spare);
		spare_set(ch->big, ch->big_cap);
	} else {
		free(ch->big);
	}
	ch->big = NULL;
	ch->big_cap = 0;
}

/* Makes *buf hold at least n bytes. */
static int grow(uint8_t **buf, size_t *cap, size_t n)
{
	if (n <= *cap)
		return FL_OK;
	uint8_t *b = realloc(*buf, n);
	if (!b)
		return FL_ENOMEM;
	*buf = b;
	*cap = n;
	return FL_OK;
}

/* A buffer of at least n bytes for the current message. */
static uint8_t *rx_buf(struct fl_channel *ch, size_t n)
{
	if (n > RX_KEEP && !ch->big && spare) {
		ch->big = spare;
		ch->big_cap = spare_cap;
		spare_set(NULL, 0);
	}
	int small = n <= RX_KEEP;
	if (grow(small ? &ch->small : &ch->big, small ? &ch->small_cap : &ch->big_cap, n)) {
		fl_ch_fail(ch, FL_ENOMEM, "out of memory for a %zu-byte message", n);
		return NULL;
	}
	return small ? ch->small : ch->big;
}

void fl_ch_rx_free(struct fl_channel *ch)
{
	free(ch->small);
	ch->small = NULL;
	ch->small_cap = 0;
	big_release(ch);
	ch->hdr_have = ch->need = ch->have = 0;
}

/* The largest message acceptable in the current state. */
static size_t limit(const struct fl_channel *ch)
{
	if (ch->hs != HS_DONE)
		return FL_CHANNEL_HANDSHAKE_MAX;
	return fl_ch_record_limit(ch);
}

int fl_ch_deliver(struct fl_channel *ch, const uint8_t *plain, size_t n, fl_channel_deliver_fn fn,
		  void *ctx)
{
	if (!n || !fn)
		return FL_OK;
	int rc = fn(ctx, plain, n);
	if (rc) {
		char why[FL_ERROR_MSG_MAX];
		snprintf(why, sizeof(why), "%s", fl_error_msg());
		rc = fl_ch_fail(ch, rc, "%s", why);
	}
	return rc;
}

/* Record p (n bytes); own = 1 when p is the channel's reassembly buffer,
 * which the record is then opened in (plaintext at p + 1). */
static int on_record(struct fl_channel *ch, uint8_t *own, const uint8_t *p, size_t n,
		     fl_channel_deliver_fn fn, void *ctx)
{
	if (ch->peer_final)
		return fl_ch_fail(ch, FL_EFORMAT, "data after the peer's final record");
	if (n < FL_CHANNEL_RECORD_OVERHEAD)
		return fl_ch_fail(ch, FL_EFORMAT, "record of %zu bytes is too short", n);
	size_t mlen = n - FL_CHANNEL_RECORD_OVERHEAD;
	uint8_t *plain = own ? own + 1 : rx_buf(ch, mlen ? mlen : 1);
	if (!plain)
		return ch->err;
	int final = 0;
	int rc = fl_ch_record_open(ch, plain, p, n, &final);
	if (rc)
		return rc;
	if (final)
		ch->peer_final = 1;
	return fl_ch_deliver(ch, plain, mlen, fn, ctx);
}

/* One complete message; own as for on_record. */
static int on_message(struct fl_channel *ch, uint8_t *own, const uint8_t *p, size_t n,
		      fl_channel_deliver_fn fn, void *ctx)
{
	int err;
	if (ch->hs != HS_DONE) {
		err = fl_hs_on_message(ch, p, n);
		if (!err && ch->hs == HS_DONE) {
			/* handshake secrets are no longer needed */
			sodium_memzero(ch->k_c2s, sizeof(ch->k_c2s));
			sodium_memzero(ch->k_s2c, sizeof(ch->k_s2c));
			sodium_memzero(ch->token, sizeof(ch->token));
		}
	} else if (!ch->rx_ready) {
		err = fl_ch_record_rx_header(ch, p, n);
	} else {
		err = on_record(ch, own, p, n, fn, ctx);
	}
	big_release(ch);
	return err;
}

/* The header announces n bytes: 0 or over the limit is refused. */
static int refuse(struct fl_channel *ch, size_t n, size_t max)
{
	return fl_ch_fail(ch, n ? FL_ERANGE : FL_EFORMAT,
			  "%s of %zu bytes from the peer (limit %zu)",
			  ch->hs != HS_DONE ? "handshake message" : "record", n, max);
}

/* Completes the 4-byte header from data at *i; 1 when it is complete and
 * announces an acceptable length (ch->need), 0 when more bytes are needed,
 * else the refusal. */
static int header(struct fl_channel *ch, const uint8_t *data, size_t len, size_t *i)
{
	size_t k = FL_WIRE_FRAME_HEADER_BYTES - ch->hdr_have;
	if (k > len - *i)
		k = len - *i;
	memcpy(ch->hdr + ch->hdr_have, data + *i, k);
	ch->hdr_have += k;
	*i += k;
	if (ch->hdr_have < FL_WIRE_FRAME_HEADER_BYTES)
		return 0;
	size_t n = fl_be32_get(ch->hdr), max = limit(ch);
	if (n == 0 || n > max)
		return refuse(ch, n, max);
	ch->need = n;
	ch->have = 0;
	return 1;
}

int fl_ch_feed(struct fl_channel *ch, const uint8_t *data, size_t len, fl_channel_deliver_fn fn,
	       void *ctx)
{
	size_t i = 0;
	while (i < len) {
		if (ch->hdr_have < FL_WIRE_FRAME_HEADER_BYTES) {
			int rc = header(ch, data, len, &i);
			if (rc <= 0)
				return rc;
			if (len - i >= ch->need) { /* whole: no copy */
				size_t n = ch->need;
				ch->hdr_have = 0;
				i += n;
				rc = on_message(ch, NULL, data + i - n, n, fn, ctx);
				if (rc)
					return rc;
				continue;
			}
			if (i == len) /* no body byte yet: no buffer yet */
				break;
		}
		uint8_t *buf = rx_buf(ch, ch->need);
		if (!buf)
			return ch->err;
		size_t k = ch->need - ch->have;
		if (k > len - i)
			k = len - i;
		memcpy(buf + ch->have, data + i, k);
		ch->have += k;
		i += k;
		if (ch->have == ch->need) {
			ch->hdr_have = 0;
			int rc = on_message(ch, buf, buf, ch->need, fn, ctx);
			if (rc)
				return rc;
		}
	}
	return FL_OK;
}
