/* test_channel_rekey.c - each direction's key is replaced after a volume
 * of data (docs/SECURITY.md §4): with the thresholds lowered through the
 * channel's test-only fields, both record layers (AES-256-GCM when the CPU
 * has it, and XChaCha20 secretstream) carry far more than the threshold in
 * both directions over many records, records that end exactly on the
 * threshold included, and every byte arrives intact; a receiver whose
 * threshold differs from the sender's fails authentication at the first
 * record under the new key and delivers no wrong byte. */
#include "channel.h"
#include "channel_impl.h" /* rekey_bytes, rekey_records, *_rekeys */
#include "chanpair.h"
#include "errors.h"
#include "identity.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOTAL 20000

struct sink {
	uint8_t data[TOTAL];
	size_t len;
};

static int sink_put(void *ctx, const uint8_t *p, size_t n)
{
	struct sink *s = ctx;
	if (s->len + n > sizeof(s->data))
		return fl_error_set(FL_ERANGE, "test sink full");
	memcpy(s->data + s->len, p, n);
	s->len += n;
	return 0;
}

/* Record i's size: records ending exactly on the threshold first, then a
 * spread from 1 to 2 * threshold bytes. */
static size_t rec_size(size_t i, size_t threshold)
{
	if (i == 0)
		return threshold;
	if (i == 1 || i == 2)
		return threshold / 2;
	return 1 + (i * 37) % (2 * threshold);
}

/* Sends TOTAL bytes from a to b; 0 when all arrived intact, else the
 * receiver's error (and what arrived is still a prefix of what was sent). */
static int transfer(struct fl_channel *a, struct fl_channel *b, size_t threshold)
{
	static uint8_t sent[TOTAL];
	static struct sink got;
	got.len = 0;
	for (size_t i = 0; i < TOTAL; i++)
		sent[i] = (uint8_t)(i * 131 + 7);
	int err = FL_OK;
	for (size_t i = 0, off = 0; off < TOTAL && !err; i++) {
		size_t n = rec_size(i, threshold);
		if (n > TOTAL - off)
			n = TOTAL - off;
		struct fl_buf *rec = NULL, *r = NULL;
		FL_CHECK(fl_channel_seal(a, sent + off, n, &rec) == FL_OK && rec);
		if (!rec)
			return FL_EIO;
		err = fl_channel_recv(b, rec->data, rec->len, sink_put, &got, &r);
		fl_buf_unref(rec);
		fl_buf_unref(r);
		off += n;
	}
	FL_CHECK(memcmp(got.data, sent, got.len) == 0); /* never a wrong byte */
	FL_CHECK(err || got.len == TOTAL);
	return err;
}

static void check_rekeys(int disable_aes, uint64_t bytes, uint64_t records)
{
	struct fl_channel *c = NULL, *s = NULL;
	fl_test_chan_pair(&c, &s, disable_aes);
	if (!c || !s)
		return;
	FL_CHECK(strcmp(fl_channel_cipher(c), disable_aes ? "xchacha20-poly1305" : "aes-256-gcm") ==
			 0 ||
		 !crypto_aead_aes256gcm_is_available());
	c->rekey_bytes = s->rekey_bytes = bytes;
	c->rekey_records = s->rekey_records = records;
	FL_CHECK(transfer(c, s, 64) == FL_OK);
	FL_CHECK(transfer(s, c, 64) == FL_OK);
	/* about 300 records of 64 bytes on average each way */
	FL_CHECK_MSG(c->tx_rekeys >= 20 && c->tx_rekeys == s->rx_rekeys, "%llu / %llu rekeys",
		     (unsigned long long)c->tx_rekeys, (unsigned long long)s->rx_rekeys);
	FL_CHECK(s->tx_rekeys >= 20 && s->tx_rekeys == c->rx_rekeys);
	struct fl_buf *fin = NULL, *r = NULL;
	struct sink none = {.len = 0};
	FL_CHECK(fl_channel_close(c, &fin) == FL_OK && fin);
	FL_CHECK(fin && fl_channel_recv(s, fin->data, fin->len, sink_put, &none, &r) == FL_OK);
	FL_CHECK(fl_channel_peer_closed(s) && fl_channel_eof(s) == FL_OK);
	fl_buf_unref(fin);
	fl_buf_unref(r);
	fl_channel_free(c);
	fl_channel_free(s);
}

static void test_rekey_by_bytes(void)
{
	for (int ss = 0; ss < 2; ss++)
		check_rekeys(ss, 64, UINT64_MAX);
}

static void test_rekey_by_records(void)
{
	for (int ss = 0; ss < 2; ss++)
		check_rekeys(ss, 1u << 30, 5);
}

/* A receiver that does not switch keys with the sender fails. */
static void test_rekey_mismatch(void)
{
	for (int ss = 0; ss < 2; ss++) {
		struct fl_channel *c = NULL, *s = NULL;
		fl_test_chan_pair(&c, &s, ss);
		if (!c || !s)
			return;
		c->rekey_bytes = 64;
		s->rekey_bytes = 65;
		FL_CHECK(transfer(c, s, 64) == FL_EFORMAT);
		FL_CHECK_MSG(strstr(fl_error_msg(), "authentication failed") != NULL, "%s",
			     fl_error_msg());
		fl_channel_free(c);
		fl_channel_free(s);
	}
}

int main(void)
{
	FL_RUN(test_rekey_by_bytes);
	FL_RUN(test_rekey_by_records);
	FL_RUN(test_rekey_mismatch);
	fl_test_chan_pair_end();
	return fl_test_main_end();
}
