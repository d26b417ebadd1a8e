/* test_channel_faults.c - the secure channel under attack, in memory: a
 * flipped bit at every byte of every handshake message and of data
 * records, the handshake cut at every byte (then EOF, or then garbage),
 * replayed, reordered, dropped, reflected and cross-session records, an old
 * handshake message replayed into a new session, oversize lengths refused
 * before anything is allocated, and a failing deliver callback; all of it
 * once with AES-256-GCM records (when the CPU has AES-NI) and once with
 * XChaCha20 secretstream records. Also: a downgrade of the negotiated
 * cipher in the handshake, the AES record ceiling per key and its
 * authenticated final flag. The rule checked everywhere: an error on some
 * side, and never a byte of wrong plaintext delivered. */
#include "channel.h"
#include "channel_impl.h" /* aes_max_records, to reach the record limit */
#include "enrol.h"
#include "errors.h"
#include "identity.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sink {
	uint8_t data[256];
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

struct end {
	struct fl_channel *ch;
	struct sink got;
	int err;
};

static struct fl_identity *g_server, *g_client;
static int g_disable_aes; /* make_pair: 1 = secretstream records on both ends */

static int allow_client(void *ctx, const uint8_t pk[32], const uint8_t *token, char *reason,
			size_t cap)
{
	if (memcmp(pk, fl_identity_pk(g_client), 32) == 0)
		return 0;
	snprintf(reason, cap, "unknown");
	return FL_ENOTFOUND;
}

static void make_pair(struct end *c, struct end *s, size_t max_record)
{
	memset(c, 0, sizeof(*c));
	memset(s, 0, sizeof(*s));
	struct fl_channel_config cc = {.self = g_client,
				       .pinned_server_pk = fl_identity_pk(g_server),
				       .max_record = max_record,
				       .disable_aes = g_disable_aes};
	struct fl_channel_config sc = {.is_server = 1,
				       .self = g_server,
				       .authorize = allow_client,
				       .max_record = max_record,
				       .disable_aes = g_disable_aes};
	FL_CHECK(fl_channel_new(&cc, &c->ch) == FL_OK);
	FL_CHECK(fl_channel_new(&sc, &s->ch) == FL_OK);
}

static void free_pair(struct end *c, struct end *s)
{
	fl_channel_free(c->ch);
	fl_channel_free(s->ch);
}

static void note(struct end *e, int err)
{
	if (err && !e->err)
		e->err = err;
}

/* What to do to transfer number k of the handshake (0 = msg1, 1 = msg2,
 * 2 = msg3 (+ client stream header), 3 = msg4 (+ server stream header);
 * the stream headers only with secretstream records). */
struct fault {
	int k;
	size_t pos; /* flip bit (pos % 8) of byte pos */
	int cut;    /* deliver only the first pos bytes, then glen garbage, and stop */
	size_t glen;
};

/* Returns the end that received the faulty transfer (NULL if none). */
static struct end *run(struct end *c, struct end *s, const struct fault *f, size_t *len_k)
{
	struct fl_buf *b = NULL;
	note(c, fl_channel_start(c->ch, &b));
	struct end *to = s, *from = c, *hit = NULL;
	for (int k = 0; b && k < 10; k++) {
		const uint8_t *p = b->data;
		size_t n = b->len;
		uint8_t tmp[2048];
		if (f && k == f->k) {
			hit = to;
			if (len_k)
				*len_k = b->len;
			if (f->cut) {
				n = f->pos < b->len ? f->pos : b->len;
				memcpy(tmp, b->data, n);
				for (size_t i = 0; i < f->glen; i++)
					tmp[n + i] = (uint8_t)(i * 37 + 11);
				n += f->glen;
				p = tmp;
			} else if (f->pos < b->len) {
				b->data[f->pos] ^= (uint8_t)(1u << (f->pos % 8));
			}
		}
		struct fl_buf *r = NULL;
		note(to, fl_channel_recv(to->ch, p, n, sink_put, &to->got, &r));
		fl_buf_unref(b);
		b = r;
		if (f && f->cut && k == f->k) {
			fl_buf_unref(b);
			b = NULL;
		}
		struct end *t = to;
		to = from;
		from = t;
	}
	fl_buf_unref(b);
	return hit;
}

/* Tries "ping" c->s, "pong" s->c, both closes, then EOF on both sides.
 * 1 when some side reported an error anywhere. */
static int finish(struct end *c, struct end *s)
{
	struct end *e[2] = {c, s};
	const char *word[2] = {"ping", "pong"};
	for (int i = 0; i < 2; i++) {
		struct end *a = e[i], *b = e[1 - i];
		struct fl_buf *rec = NULL, *r = NULL;
		if (fl_channel_established(a->ch) &&
		    fl_channel_seal(a->ch, (const uint8_t *)word[i], 4, &rec) == FL_OK) {
			note(b, fl_channel_recv(b->ch, rec->data, rec->len, sink_put, &b->got, &r));
			fl_buf_unref(rec);
			fl_buf_unref(r);
		}
	}
	for (int i = 0; i < 2; i++) {
		struct end *a = e[i], *b = e[1 - i];
		struct fl_buf *rec = NULL, *r = NULL;
		note(a, fl_channel_close(a->ch, &rec));
		if (rec)
			note(b, fl_channel_recv(b->ch, rec->data, rec->len, sink_put, &b->got, &r));
		fl_buf_unref(rec);
		fl_buf_unref(r);
	}
	note(c, fl_channel_eof(c->ch));
	note(s, fl_channel_eof(s->ch));
	/* never wrong plaintext: at most the words that were sent */
	FL_CHECK(s->got.len == 0 || (s->got.len == 4 && memcmp(s->got.data, "ping", 4) == 0));
	FL_CHECK(c->got.len == 0 || (c->got.len == 4 && memcmp(c->got.data, "pong", 4) == 0));
	return c->err || s->err;
}

static void test_clean_run_has_no_error(void)
{
	struct end c, s;
	make_pair(&c, &s, 0);
	run(&c, &s, NULL, NULL);
	FL_CHECK(finish(&c, &s) == 0);
	FL_CHECK(s.got.len == 4 && c.got.len == 4);
	free_pair(&c, &s);
}

static void test_handshake_bit_flips(void)
{
	int trials = 0, missed = 0;
	for (int k = 0; k < 4; k++) {
		size_t len = 1;
		for (size_t pos = 0; pos < len; pos++) {
			struct end c, s;
			make_pair(&c, &s, 0);
			struct fault f = {.k = k, .pos = pos};
			FL_CHECK(run(&c, &s, &f, &len) != NULL);
			if (!finish(&c, &s)) {
				missed++;
				fprintf(stderr, "flip in transfer %d byte %zu went unnoticed\n", k,
					pos);
			}
			trials++;
			free_pair(&c, &s);
		}
	}
	FL_CHECK(missed == 0);
	FL_CHECK_MSG(trials > (g_disable_aes ? 430 : 370), "%d trials", trials);
}

static void test_handshake_cuts(void)
{
	int trials = 0;
	for (int garbage = 0; garbage < 2; garbage++) {
		for (int k = 0; k < 4; k++) {
			size_t len = 1;
			for (size_t pos = 0; pos < len; pos++) {
				struct end c, s;
				make_pair(&c, &s, 0);
				struct fault f = {
					.k = k, .pos = pos, .cut = 1, .glen = garbage ? 40 : 0};
				struct end *hit = run(&c, &s, &f, &len);
				FL_CHECK(hit != NULL);
				/* no false success: the peer that got the cut (or garbage)
				 * fails now or at EOF, and nobody delivered data */
				int err = hit->err ? hit->err : fl_channel_eof(hit->ch);
				FL_CHECK_MSG(err != FL_OK, "cut transfer %d at %zu (garbage %d)", k,
					     pos, garbage);
				FL_CHECK(c.got.len == 0 && s.got.len == 0);
				trials++;
				free_pair(&c, &s);
			}
		}
	}
	FL_CHECK_MSG(trials > (g_disable_aes ? 860 : 740), "%d trials", trials);
}

/* A clean pair and n records of 40 distinct bytes sealed by the client,
 * plus its final record as rec[n]. */
static void sealed_records(struct end *c, struct end *s, struct fl_buf **rec, int n)
{
	make_pair(c, s, 0);
	run(c, s, NULL, NULL);
	FL_CHECK(fl_channel_established(c->ch) && fl_channel_established(s->ch));
	for (int i = 0; i < n; i++) {
		uint8_t m[40];
		memset(m, 'a' + i, sizeof(m));
		FL_CHECK(fl_channel_seal(c->ch, m, sizeof(m), &rec[i]) == FL_OK);
	}
	FL_CHECK(fl_channel_close(c->ch, &rec[n]) == FL_OK);
}

static int feed(struct end *e, const struct fl_buf *b)
{
	struct fl_buf *r = NULL;
	int err = fl_channel_recv(e->ch, b->data, b->len, sink_put, &e->got, &r);
	fl_buf_unref(r);
	note(e, err);
	return err;
}

static void test_data_bit_flips(void)
{
	int trials = 0, missed = 0;
	for (int i = 0; i <= 3; i++) {
		for (size_t pos = 0;; pos++) {
			struct end c, s;
			struct fl_buf *rec[4];
			sealed_records(&c, &s, rec, 3);
			size_t len = rec[i]->len;
			rec[i]->data[pos] ^= (uint8_t)(1u << (pos % 8));
			for (int j = 0; j <= 3 && !s.err; j++)
				feed(&s, rec[j]);
			if (!s.err)
				note(&s, fl_channel_eof(s.ch));
			if (!s.err)
				missed++;
			/* exactly the records before the damaged one arrived */
			FL_CHECK(s.got.len == (size_t)i * 40);
			for (size_t b = 0; b < s.got.len; b++)
				FL_CHECK(s.got.data[b] == 'a' + b / 40);
			for (int j = 0; j <= 3; j++)
				fl_buf_unref(rec[j]);
			free_pair(&c, &s);
			trials++;
			if (pos + 1 == len)
				break;
		}
	}
	FL_CHECK(missed == 0);
	FL_CHECK_MSG(trials == 3 * (4 + 40 + 17) + 4 + 17, "%d trials", trials);
}

static void test_replay_reorder_drop(void)
{
	struct end c, s;
	struct fl_buf *rec[4];
	/* replay */
	sealed_records(&c, &s, rec, 3);
	FL_CHECK(feed(&s, rec[0]) == FL_OK);
	FL_CHECK(feed(&s, rec[0]) == FL_EFORMAT);
	FL_CHECK(strstr(fl_error_msg(), "replayed or out of order") != NULL);
	FL_CHECK(s.got.len == 40);
	for (int j = 0; j < 4; j++)
		fl_buf_unref(rec[j]);
	free_pair(&c, &s);
	/* reorder */
	sealed_records(&c, &s, rec, 3);
	FL_CHECK(feed(&s, rec[1]) == FL_EFORMAT && s.got.len == 0);
	for (int j = 0; j < 4; j++)
		fl_buf_unref(rec[j]);
	free_pair(&c, &s);
	/* drop */
	sealed_records(&c, &s, rec, 3);
	FL_CHECK(feed(&s, rec[0]) == FL_OK && feed(&s, rec[2]) == FL_EFORMAT && s.got.len == 40);
	free_pair(&c, &s);
	/* a record of another session (same identities, new ephemerals) */
	struct end c2, s2;
	make_pair(&c2, &s2, 0);
	run(&c2, &s2, NULL, NULL);
	FL_CHECK(feed(&s2, rec[0]) == FL_EFORMAT && s2.got.len == 0);
	/* reflection: the client's own record sent back to it */
	FL_CHECK(feed(&c2, rec[0]) == FL_EFORMAT && c2.got.len == 0);
	free_pair(&c2, &s2);
	for (int j = 0; j < 4; j++)
		fl_buf_unref(rec[j]);
	/* a truncated stream: records but no final record */
	make_pair(&c2, &s2, 0);
	run(&c2, &s2, NULL, NULL);
	struct fl_buf *r1 = NULL;
	FL_CHECK(fl_channel_seal(c2.ch, (const uint8_t *)"data", 4, &r1) == FL_OK);
	FL_CHECK(feed(&s2, r1) == FL_OK);
	FL_CHECK(fl_channel_eof(s2.ch) == FL_EFORMAT);
	FL_CHECK(strstr(fl_error_msg(), "truncated") != NULL);
	fl_buf_unref(r1);
	/* data after the final record */
	free_pair(&c2, &s2);
	struct fl_buf *fin[1];
	sealed_records(&c2, &s2, fin, 0);
	FL_CHECK(feed(&s2, fin[0]) == FL_OK && fl_channel_peer_closed(s2.ch));
	FL_CHECK(feed(&s2, fin[0]) == FL_EFORMAT);
	FL_CHECK(strstr(fl_error_msg(), "after the peer's final record") != NULL);
	fl_buf_unref(fin[0]);
	free_pair(&c2, &s2);
}

/* msg3 of an old session replayed into a new one */
static void test_handshake_replay(void)
{
	struct end c, s;
	make_pair(&c, &s, 0);
	struct fl_buf *m1 = NULL, *m2 = NULL, *m3 = NULL, *x = NULL;
	FL_CHECK(fl_channel_start(c.ch, &m1) == FL_OK);
	FL_CHECK(fl_channel_recv(s.ch, m1->data, m1->len, sink_put, &s.got, &m2) == FL_OK);
	FL_CHECK(fl_channel_recv(c.ch, m2->data, m2->len, sink_put, &c.got, &m3) == FL_OK);
	struct end c2, s2;
	make_pair(&c2, &s2, 0);
	/* the attacker replays msg1 (gets a fresh msg2) then the old msg3 */
	FL_CHECK(fl_channel_recv(s2.ch, m1->data, m1->len, sink_put, &s2.got, &x) == FL_OK);
	fl_buf_unref(x);
	FL_CHECK(fl_channel_recv(s2.ch, m3->data, m3->len, sink_put, &s2.got, &x) == FL_EFORMAT);
	FL_CHECK(strstr(fl_error_msg(), "does not decrypt") != NULL);
	FL_CHECK(x == NULL && !fl_channel_established(s2.ch));
	/* and an old msg2 replayed to a new client fails its signature check */
	struct fl_buf *n1 = NULL;
	FL_CHECK(fl_channel_start(c2.ch, &n1) == FL_OK);
	FL_CHECK(fl_channel_recv(c2.ch, m2->data, m2->len, sink_put, &c2.got, &x) == FL_EFORMAT);
	FL_CHECK(strstr(fl_error_msg(), "bad server signature") != NULL);
	fl_buf_unref(n1);
	fl_buf_unref(m1);
	fl_buf_unref(m2);
	fl_buf_unref(m3);
	free_pair(&c, &s);
	free_pair(&c2, &s2);
}

static void test_oversize_lengths(void)
{
	struct end c, s;
	struct fl_buf *r = NULL;
	const uint8_t h1025[4] = {0, 0, 4, 1}, hmax[4] = {0xff, 0xff, 0xff, 0xff}, h0[4] = {0};
	make_pair(&c, &s, 0);
	FL_CHECK(fl_channel_recv(s.ch, h1025, 4, sink_put, &s.got, &r) == FL_ERANGE && !r);
	FL_CHECK(strstr(fl_error_msg(), "1025") && strstr(fl_error_msg(), "limit 1024"));
	free_pair(&c, &s);
	make_pair(&c, &s, 0);
	FL_CHECK(fl_channel_recv(s.ch, hmax, 4, sink_put, &s.got, &r) == FL_ERANGE);
	free_pair(&c, &s);
	make_pair(&c, &s, 0);
	FL_CHECK(fl_channel_recv(s.ch, h0, 4, sink_put, &s.got, &r) == FL_EFORMAT);
	free_pair(&c, &s);

	/* records: max_record 100 -> at most 117 bytes on the wire */
	make_pair(&c, &s, 100);
	run(&c, &s, NULL, NULL);
	FL_CHECK(fl_channel_established(s.ch));
	uint8_t m[101] = {0};
	struct fl_buf *rec = NULL;
	FL_CHECK(fl_channel_seal(c.ch, m, 100, &rec) == FL_OK && rec->len == 4 + 117);
	FL_CHECK(feed(&s, rec) == FL_OK && s.got.len == 100);
	fl_buf_unref(rec);
	const uint8_t h118[4] = {0, 0, 0, 118};
	FL_CHECK(fl_channel_recv(s.ch, h118, 4, sink_put, &s.got, &r) == FL_ERANGE);
	FL_CHECK(strstr(fl_error_msg(), "record of 118 bytes") != NULL);
	free_pair(&c, &s);
}

static int failing_deliver(void *ctx, const uint8_t *p, size_t n)
{
	return fl_error_set(FL_ESHAPE, "protocol says no");
}

static void test_deliver_error(void)
{
	struct end c, s;
	make_pair(&c, &s, 0);
	run(&c, &s, NULL, NULL);
	struct fl_buf *rec = NULL, *r = NULL;
	FL_CHECK(fl_channel_seal(c.ch, (const uint8_t *)"x", 1, &rec) == FL_OK);
	FL_CHECK(fl_channel_recv(s.ch, rec->data, rec->len, failing_deliver, NULL, &r) ==
		 FL_ESHAPE);
	FL_CHECK(strstr(fl_error_msg(), "protocol says no") != NULL);
	FL_CHECK(fl_channel_error(s.ch) == FL_ESHAPE && !fl_channel_established(s.ch));
	fl_buf_unref(rec);
	free_pair(&c, &s);
}

/* Both ends can run AES-256-GCM; an attacker clears the client's offer in
 * msg1 or the server's in msg2 so that the weaker (or another) record layer
 * is chosen: the server's signature over H1 no longer verifies at the
 * client, nobody is established, nothing is sealed or delivered. */
static void test_cipher_downgrade(void)
{
	if (!crypto_aead_aes256gcm_is_available()) {
		fl_test_skip("no AES-NI here: no cipher downgrade to test");
		return;
	}
	/* flags_c is byte 4 + 5 of msg1, flags_s byte 4 + 1 of msg2 */
	for (int i = 0; i < 2; i++) {
		struct end c, s;
		make_pair(&c, &s, 0);
		struct fl_buf *m1 = NULL, *m2 = NULL, *m3 = NULL;
		FL_CHECK(fl_channel_start(c.ch, &m1) == FL_OK);
		FL_CHECK(m1->data[4 + 5] == 0x01); /* the client offers AES-256-GCM */
		if (i == 0)
			m1->data[4 + 5] = 0; /* the attacker strips the offer */
		note(&s, fl_channel_recv(s.ch, m1->data, m1->len, sink_put, &s.got, &m2));
		FL_CHECK(s.err == FL_OK && m2);
		FL_CHECK(strcmp(fl_channel_cipher(s.ch),
				i == 0 ? "xchacha20-poly1305" : "aes-256-gcm") == 0);
		FL_CHECK(m2->data[4 + 1] == 0x01); /* so does the server */
		if (i == 1)
			m2->data[4 + 1] = 0; /* the attacker strips the server's support */
		FL_CHECK(fl_channel_recv(c.ch, m2->data, m2->len, sink_put, &c.got, &m3) ==
			 FL_EFORMAT);
		FL_CHECK(strstr(fl_error_msg(), "bad server signature") != NULL);
		FL_CHECK(m3 == NULL && !fl_channel_established(c.ch));
		FL_CHECK(!fl_channel_established(s.ch));
		FL_CHECK(fl_channel_eof(s.ch) == FL_EFORMAT);
		fl_buf_unref(m1);
		fl_buf_unref(m2);
		free_pair(&c, &s);
	}
}

/* AES-GCM: at most aes_max_records records per key and direction (2^32;
 * lowered here), the last one kept for the final record. */
static void test_aes_record_limit(void)
{
	if (!crypto_aead_aes256gcm_is_available())
		return;
	struct end c, s;
	make_pair(&c, &s, 0);
	run(&c, &s, NULL, NULL);
	FL_CHECK(strcmp(fl_channel_cipher(c.ch), "aes-256-gcm") == 0);
	c.ch->aes_max_records = 4;
	struct fl_buf *rec[4] = {0};
	for (int i = 0; i < 3; i++)
		FL_CHECK(fl_channel_seal(c.ch, (const uint8_t *)"abcd", 4, &rec[i]) == FL_OK);
	struct fl_buf *x = NULL;
	FL_CHECK(fl_channel_seal(c.ch, (const uint8_t *)"abcd", 4, &x) == FL_ERANGE && !x);
	FL_CHECK(strstr(fl_error_msg(), "limit") != NULL);
	FL_CHECK(fl_channel_close(c.ch, &rec[3]) == FL_OK && rec[3]);
	for (int i = 0; i < 4; i++)
		FL_CHECK(feed(&s, rec[i]) == FL_OK);
	FL_CHECK(s.got.len == 12 && fl_channel_peer_closed(s.ch) && fl_channel_eof(s.ch) == FL_OK);
	free_pair(&c, &s);
	for (int i = 0; i < 4; i++)
		fl_buf_unref(rec[i]);
	/* a receiver refuses records past the limit */
	make_pair(&c, &s, 0);
	run(&c, &s, NULL, NULL);
	s.ch->aes_max_records = 2;
	for (int i = 0; i < 3; i++)
		FL_CHECK(fl_channel_seal(c.ch, (const uint8_t *)"abcd", 4, &rec[i]) == FL_OK);
	FL_CHECK(feed(&s, rec[0]) == FL_OK && feed(&s, rec[1]) == FL_OK);
	FL_CHECK(feed(&s, rec[2]) == FL_EFORMAT && s.got.len == 8);
	for (int i = 0; i < 3; i++)
		fl_buf_unref(rec[i]);
	free_pair(&c, &s);
}

/* AES-GCM: the final flag is associated data. A data record turned into a
 * final one, or the final record turned into data, does not authenticate
 * (the every-bit flip test flips bit 4 of the flags byte, not bit 0). */
static void test_aes_final_flag(void)
{
	if (!crypto_aead_aes256gcm_is_available())
		return;
	for (int which = 0; which < 2; which++) {
		struct end c, s;
		struct fl_buf *rec[2];
		sealed_records(&c, &s, rec, 1);
		FL_CHECK(strcmp(fl_channel_cipher(c.ch), "aes-256-gcm") == 0);
		FL_CHECK(rec[0]->data[4] == 0 && rec[1]->data[4] == 1 && rec[1]->len == 4 + 17);
		if (which == 0) {
			rec[0]->data[4] ^= 1; /* data record claims to be the final one */
			FL_CHECK(feed(&s, rec[0]) == FL_EFORMAT && s.got.len == 0);
		} else {
			rec[1]->data[4] ^= 1; /* final record passed off as an empty data record */
			FL_CHECK(feed(&s, rec[0]) == FL_OK && s.got.len == 40);
			FL_CHECK(feed(&s, rec[1]) == FL_EFORMAT);
		}
		FL_CHECK(strstr(fl_error_msg(), "authentication failed") != NULL);
		FL_CHECK(!fl_channel_peer_closed(s.ch));
		fl_buf_unref(rec[0]);
		fl_buf_unref(rec[1]);
		free_pair(&c, &s);
	}
}

static void run_record_tests(void)
{
	FL_RUN(test_clean_run_has_no_error);
	FL_RUN(test_handshake_bit_flips);
	FL_RUN(test_handshake_cuts);
	FL_RUN(test_data_bit_flips);
	FL_RUN(test_replay_reorder_drop);
	FL_RUN(test_handshake_replay);
	FL_RUN(test_oversize_lengths);
	FL_RUN(test_deliver_error);
}

int main(void)
{
	FL_CHECK(fl_identity_generate(&g_server) == FL_OK);
	FL_CHECK(fl_identity_generate(&g_client) == FL_OK);
	fprintf(stderr, "-- records: %s\n",
		crypto_aead_aes256gcm_is_available() ? "AES-256-GCM" : "secretstream (no AES-NI)");
	run_record_tests();
	g_disable_aes = 1;
	fprintf(stderr, "-- records: XChaCha20 secretstream\n");
	run_record_tests();
	g_disable_aes = 0;
	FL_RUN(test_cipher_downgrade);
	FL_RUN(test_aes_record_limit);
	FL_RUN(test_aes_final_flag);
	fl_identity_free(g_server);
	fl_identity_free(g_client);
	return fl_test_main_end();
}
