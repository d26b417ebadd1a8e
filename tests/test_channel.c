/* test_channel.c - the secure channel end to end in memory: handshake and
 * data both ways, close and EOF, refusal of an unknown client, a wrong
 * pinned server key, enrolment with one-time tokens (valid, reused, expired,
 * wrong), plaintext peers, version mismatch, the insecure pass-through,
 * API misuse and the record-cipher negotiation (data runs over both
 * AES-256-GCM and XChaCha20 secretstream). Fault injection (bit flips, truncation, replay) is in
 * test_channel_faults.c. */
#include "allowlist.h"
#include "channel.h"
#include "enrol.h"
#include "errors.h"
#include "fsutil.h"
#include "identity.h"
#include "testutil.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_disable_aes; /* both ends of make_pair: 1 = secretstream records */

struct sink {
	uint8_t *data;
	size_t len, cap;
};

static int sink_put(void *ctx, const uint8_t *p, size_t n)
{
	struct sink *s = ctx;
	if (s->len + n > s->cap) {
		s->cap = (s->len + n) * 2;
		s->data = realloc(s->data, s->cap);
		if (!s->data)
			abort();
	}
	memcpy(s->data + s->len, p, n);
	s->len += n;
	return 0;
}

struct end {
	struct fl_channel *ch;
	struct sink got;
	int err;
	char msg[FL_ERROR_MSG_MAX];
};

static void end_free(struct end *e)
{
	fl_channel_free(e->ch);
	free(e->got.data);
	memset(e, 0, sizeof(*e));
}

/* Passes buffers back and forth from the client's first message until
 * nobody has anything to say; records each side's first error. */
static void run_handshake(struct end *c, struct end *s)
{
	struct fl_buf *b = NULL;
	c->err = fl_channel_start(c->ch, &b);
	struct end *to = s, *from = c;
	for (int k = 0; b && k < 10; k++) {
		struct fl_buf *r = NULL;
		int err = fl_channel_recv(to->ch, b->data, b->len, sink_put, &to->got, &r);
		if (err && !to->err) {
			to->err = err;
			snprintf(to->msg, sizeof(to->msg), "%s", fl_error_msg());
		}
		fl_buf_unref(b);
		b = r;
		struct end *t = to;
		to = from;
		from = t;
	}
	fl_buf_unref(b);
}

/* Seals n bytes on a and feeds the record to b. */
static int send_bytes(struct end *a, struct end *b, const uint8_t *p, size_t n)
{
	struct fl_buf *rec = NULL, *reply = NULL;
	int err = fl_channel_seal(a->ch, p, n, &rec);
	if (err)
		return err;
	err = fl_channel_recv(b->ch, rec->data, rec->len, sink_put, &b->got, &reply);
	FL_CHECK(reply == NULL);
	fl_buf_unref(rec);
	return err;
}

struct keys {
	struct fl_identity *server, *client, *other;
	struct srv_allowlist *allow;
	struct srv_enrol *enrol;
	struct srv_auth auth;
};

static void keys_init(struct keys *k, int allow_client)
{
	memset(k, 0, sizeof(*k));
	FL_CHECK(fl_identity_generate(&k->server) == FL_OK);
	FL_CHECK(fl_identity_generate(&k->client) == FL_OK);
	FL_CHECK(fl_identity_generate(&k->other) == FL_OK);
	FL_CHECK(srv_allowlist_new(&k->allow) == FL_OK);
	if (allow_client)
		FL_CHECK(srv_allowlist_add(k->allow, fl_identity_pk(k->client), "alice") == FL_OK);
	FL_CHECK(srv_enrol_new(&k->enrol) == FL_OK);
	k->auth.allow = &k->allow;
	k->auth.enrol = k->enrol;
	k->auth.now_ms = 1000;
}

static void keys_free(struct keys *k)
{
	fl_identity_free(k->server);
	fl_identity_free(k->client);
	fl_identity_free(k->other);
	srv_allowlist_free(k->allow);
	srv_enrol_free(k->enrol);
}

/* A client (identity cid, pinning pin) and a server of k. */
static void make_pair(struct keys *k, const struct fl_identity *cid, const uint8_t *pin,
		      const char *token, struct end *c, struct end *s)
{
	memset(c, 0, sizeof(*c));
	memset(s, 0, sizeof(*s));
	struct fl_channel_config cc = {.self = cid,
				       .pinned_server_pk = pin,
				       .enrol_token = token,
				       .disable_aes = g_disable_aes};
	struct fl_channel_config sc = {.is_server = 1,
				       .self = k->server,
				       .authorize = srv_auth_check,
				       .auth_ctx = &k->auth,
				       .disable_aes = g_disable_aes};
	FL_CHECK(fl_channel_new(&cc, &c->ch) == FL_OK);
	FL_CHECK(fl_channel_new(&sc, &s->ch) == FL_OK);
}

static void test_handshake_and_data(void)
{
	struct keys k;
	keys_init(&k, 1);
	struct end c, s;
	make_pair(&k, k.client, fl_identity_pk(k.server), NULL, &c, &s);
	FL_CHECK(!fl_channel_established(c.ch) && !fl_channel_established(s.ch));
	FL_CHECK(fl_channel_peer_pk(s.ch) == NULL);
	FL_CHECK(strcmp(fl_channel_cipher(c.ch), "") == 0);
	run_handshake(&c, &s);
	FL_CHECK_MSG(c.err == FL_OK && s.err == FL_OK, "client: %s / server: %s", c.msg, s.msg);
	FL_CHECK(fl_channel_established(c.ch) && fl_channel_established(s.ch));
	const char *want = !g_disable_aes && crypto_aead_aes256gcm_is_available()
				   ? "aes-256-gcm"
				   : "xchacha20-poly1305";
	FL_CHECK_MSG(strcmp(fl_channel_cipher(c.ch), want) == 0 &&
			     strcmp(fl_channel_cipher(s.ch), want) == 0,
		     "%s / %s, want %s", fl_channel_cipher(c.ch), fl_channel_cipher(s.ch), want);
	FL_CHECK(fl_channel_peer_pk(s.ch) &&
		 memcmp(fl_channel_peer_pk(s.ch), fl_identity_pk(k.client), 32) == 0);
	FL_CHECK(fl_channel_peer_pk(c.ch) &&
		 memcmp(fl_channel_peer_pk(c.ch), fl_identity_pk(k.server), 32) == 0);
	FL_CHECK(strcmp(srv_allowlist_name(k.allow, fl_channel_peer_pk(s.ch)), "alice") == 0);
	FL_CHECK(c.got.len == 0 && s.got.len == 0);

	/* data both ways: small, empty, 1 MiB; the receiver sees the byte stream */
	size_t big = 1u << 20;
	uint8_t *src = malloc(big);
	for (size_t i = 0; i < big; i++)
		src[i] = (uint8_t)(i * 2654435761u >> 13);
	FL_CHECK(send_bytes(&c, &s, (const uint8_t *)"hello", 5) == FL_OK);
	FL_CHECK(send_bytes(&c, &s, src, 0) == FL_OK);
	FL_CHECK(send_bytes(&c, &s, src, big) == FL_OK);
	FL_CHECK(send_bytes(&s, &c, src + 7, 1000) == FL_OK);
	FL_CHECK(send_bytes(&s, &c, (const uint8_t *)"bye", 3) == FL_OK);
	FL_CHECK(s.got.len == 5 + big && memcmp(s.got.data, "hello", 5) == 0 &&
		 memcmp(s.got.data + 5, src, big) == 0);
	FL_CHECK(c.got.len == 1003 && memcmp(c.got.data, src + 7, 1000) == 0 &&
		 memcmp(c.got.data + 1000, "bye", 3) == 0);

	/* records fed one byte at a time arrive the same */
	struct fl_buf *rec = NULL, *reply = NULL;
	FL_CHECK(fl_channel_seal(c.ch, src, 300, &rec) == FL_OK);
	FL_CHECK(rec->len == 4 + 300 + FL_CHANNEL_RECORD_OVERHEAD);
	for (size_t i = 0; i < rec->len; i++)
		FL_CHECK(fl_channel_recv(s.ch, rec->data + i, 1, sink_put, &s.got, &reply) ==
			 FL_OK);
	fl_buf_unref(rec);
	FL_CHECK(s.got.len == 5 + big + 300 && memcmp(s.got.data + 5 + big, src, 300) == 0);

	/* the ciphertext does not contain the plaintext */
	FL_CHECK(fl_channel_seal(c.ch, src, 4096, &rec) == FL_OK);
	FL_CHECK(memcmp(rec->data + 4, src, 64) != 0);
	FL_CHECK(fl_channel_recv(s.ch, rec->data, rec->len, sink_put, &s.got, &reply) == FL_OK);
	fl_buf_unref(rec);

	/* EOF before the final record is a truncation */
	FL_CHECK(fl_channel_peer_closed(s.ch) == 0);
	/* orderly close from the client, then the server */
	FL_CHECK(fl_channel_close(c.ch, &rec) == FL_OK && rec);
	FL_CHECK(fl_channel_recv(s.ch, rec->data, rec->len, sink_put, &s.got, &reply) == FL_OK);
	fl_buf_unref(rec);
	FL_CHECK(fl_channel_peer_closed(s.ch) == 1);
	FL_CHECK(fl_channel_eof(s.ch) == FL_OK);
	FL_CHECK(fl_channel_seal(c.ch, src, 1, &rec) == FL_EINVAL && rec == NULL);
	FL_CHECK(fl_channel_close(s.ch, &rec) == FL_OK && rec);
	FL_CHECK(fl_channel_recv(c.ch, rec->data, rec->len, sink_put, &c.got, &reply) == FL_OK);
	fl_buf_unref(rec);
	FL_CHECK(fl_channel_eof(c.ch) == FL_OK);
	free(src);
	end_free(&c);
	end_free(&s);
	keys_free(&k);
}

static void test_handshake_and_data_secretstream(void)
{
	g_disable_aes = 1;
	test_handshake_and_data();
	g_disable_aes = 0;
}

/* AES-256-GCM only when both ends offer it; otherwise secretstream, and
 * data flows either way. */
static void test_cipher_negotiation(void)
{
	struct keys k;
	keys_init(&k, 1);
	int aes = crypto_aead_aes256gcm_is_available();
	for (int m = 0; m < 4; m++) {
		struct end c = {0}, s = {0};
		struct fl_channel_config cc = {.self = k.client,
					       .pinned_server_pk = fl_identity_pk(k.server),
					       .disable_aes = m & 1};
		struct fl_channel_config sc = {.is_server = 1,
					       .self = k.server,
					       .authorize = srv_auth_check,
					       .auth_ctx = &k.auth,
					       .disable_aes = (m >> 1) & 1};
		FL_CHECK(fl_channel_new(&cc, &c.ch) == FL_OK);
		FL_CHECK(fl_channel_new(&sc, &s.ch) == FL_OK);
		run_handshake(&c, &s);
		FL_CHECK(c.err == FL_OK && s.err == FL_OK);
		const char *want = m == 0 && aes ? "aes-256-gcm" : "xchacha20-poly1305";
		FL_CHECK_MSG(strcmp(fl_channel_cipher(c.ch), want) == 0 &&
				     strcmp(fl_channel_cipher(s.ch), want) == 0,
			     "mode %d: %s / %s", m, fl_channel_cipher(c.ch),
			     fl_channel_cipher(s.ch));
		FL_CHECK(send_bytes(&c, &s, (const uint8_t *)"ping", 4) == FL_OK);
		FL_CHECK(send_bytes(&s, &c, (const uint8_t *)"pong", 4) == FL_OK);
		FL_CHECK(s.got.len == 4 && memcmp(s.got.data, "ping", 4) == 0);
		FL_CHECK(c.got.len == 4 && memcmp(c.got.data, "pong", 4) == 0);
		end_free(&c);
		end_free(&s);
	}
	struct fl_channel_config icfg = {.insecure = 1};
	struct fl_channel *ich = NULL;
	FL_CHECK(fl_channel_new(&icfg, &ich) == FL_OK);
	FL_CHECK(strcmp(fl_channel_cipher(ich), "none") == 0);
	fl_channel_free(ich);
	keys_free(&k);
}

static int auth_busy(void *ctx, const uint8_t pk[FL_PUBKEY_BYTES], const uint8_t *token,
		     char *reason, size_t reason_cap)
{
	(void)ctx, (void)pk, (void)token;
	snprintf(reason, reason_cap, "allow-list busy, retry");
	return FL_EIO;
}

/* An admission that fails for a passing reason (FL_EIO) reaches the client
 * as "retry" (FL_EIO), not as the final refusal (FL_ENOTFOUND). */
static void test_admission_retry(void)
{
	struct keys k;
	keys_init(&k, 1);
	struct end c = {0}, s = {0};
	struct fl_channel_config cc = {.self = k.client,
				       .pinned_server_pk = fl_identity_pk(k.server)};
	struct fl_channel_config sc = {.is_server = 1, .self = k.server, .authorize = auth_busy};
	FL_CHECK(fl_channel_new(&cc, &c.ch) == FL_OK);
	FL_CHECK(fl_channel_new(&sc, &s.ch) == FL_OK);
	run_handshake(&c, &s);
	FL_CHECK(s.err == FL_EIO);
	FL_CHECK_MSG(c.err == FL_EIO && strstr(c.msg, "cannot admit this client now") &&
			     strstr(c.msg, "allow-list busy, retry"),
		     "%d %s", c.err, c.msg);
	FL_CHECK(!fl_channel_established(c.ch) && !fl_channel_established(s.ch));
	end_free(&c);
	end_free(&s);
	keys_free(&k);
}

static void test_unknown_client_refused(void)
{
	struct keys k;
	keys_init(&k, 1);
	struct end c, s;
	make_pair(&k, k.other, fl_identity_pk(k.server), NULL, &c, &s);
	run_handshake(&c, &s);
	FL_CHECK(s.err == FL_ENOTFOUND);
	FL_CHECK_MSG(strstr(s.msg, "not in the allow-list") != NULL, "%s", s.msg);
	/* the client learns why, through the authenticated msg4 */
	FL_CHECK(c.err == FL_ENOTFOUND);
	FL_CHECK_MSG(strstr(c.msg, "server refused this client") &&
			     strstr(c.msg, "not in the allow-list"),
		     "%s", c.msg);
	FL_CHECK(!fl_channel_established(c.ch) && !fl_channel_established(s.ch));
	FL_CHECK(fl_channel_peer_pk(s.ch) == NULL);
	/* dead channels stay dead with the same error */
	struct fl_buf *b = NULL;
	FL_CHECK(fl_channel_seal(s.ch, (const uint8_t *)"x", 1, &b) == FL_ENOTFOUND && !b);
	FL_CHECK(fl_channel_recv(s.ch, (const uint8_t *)"abcd", 4, sink_put, &s.got, &b) ==
		 FL_ENOTFOUND);
	end_free(&c);
	end_free(&s);
	keys_free(&k);
}

static void test_wrong_pinned_key(void)
{
	struct keys k;
	keys_init(&k, 1);
	struct end c, s;
	make_pair(&k, k.client, fl_identity_pk(k.other), NULL, &c, &s);
	run_handshake(&c, &s);
	FL_CHECK(c.err == FL_EFORMAT);
	FL_CHECK_MSG(strstr(c.msg, "authentication failed") && strstr(c.msg, "not the pinned key"),
		     "%s", c.msg);
	/* the server saw msg1 only, then the connection closed */
	FL_CHECK(s.err == FL_OK && !fl_channel_established(s.ch));
	FL_CHECK(fl_channel_eof(s.ch) == FL_EFORMAT);
	FL_CHECK(strstr(fl_error_msg(), "during the handshake") != NULL);
	end_free(&c);
	end_free(&s);
	keys_free(&k);
}

static void test_enrolment(void)
{
	const char *dir = fl_test_tmpdir("chan-enrol");
	char path[600];
	snprintf(path, sizeof(path), "%s/allow.txt", dir);
	const char *initial = "# coordinator allow-list\n";
	FL_CHECK(fl_file_write_atomic(path, initial, strlen(initial), 0) == FL_OK);
	struct keys k;
	keys_init(&k, 0);
	k.auth.allow_path = path;
	char tok[FL_TOKEN_STRING_BYTES], tok2[FL_TOKEN_STRING_BYTES];
	FL_CHECK(srv_enrol_issue(k.enrol, 1000, 60000, "site-2", tok, NULL) == FL_OK);
	FL_CHECK(srv_enrol_issue(k.enrol, 1000, 500, "site-3", tok2, NULL) == FL_OK);
	FL_CHECK(strlen(tok) == 43 && strcmp(tok, tok2) != 0);
	FL_CHECK(srv_enrol_count(k.enrol, 1000) == 2);

	/* a wrong token is refused */
	uint8_t raw[FL_TOKEN_BYTES];
	FL_CHECK(fl_token_parse(tok, raw) == FL_OK);
	char wrong[FL_TOKEN_STRING_BYTES];
	memcpy(wrong, tok, sizeof(wrong));
	wrong[0] = wrong[0] == 'A' ? 'B' : 'A';
	struct end c, s;
	make_pair(&k, k.client, fl_identity_pk(k.server), wrong, &c, &s);
	run_handshake(&c, &s);
	FL_CHECK(s.err == FL_ENOTFOUND && c.err == FL_ENOTFOUND);
	FL_CHECK_MSG(strstr(c.msg, "unknown, already used or expired") != NULL, "%s", c.msg);
	end_free(&c);
	end_free(&s);

	/* the valid token admits the client and records its key */
	make_pair(&k, k.client, fl_identity_pk(k.server), tok, &c, &s);
	run_handshake(&c, &s);
	FL_CHECK_MSG(c.err == FL_OK && s.err == FL_OK, "%s / %s", c.msg, s.msg);
	FL_CHECK(fl_channel_established(s.ch));
	FL_CHECK(srv_allowlist_contains(k.allow, fl_identity_pk(k.client)));
	FL_CHECK(srv_enrol_count(k.enrol, 1000) == 1);
	struct srv_allowlist *reread = NULL;
	FL_CHECK(srv_allowlist_load(path, &reread) == FL_OK);
	FL_CHECK(reread && srv_allowlist_count(reread) == 1 &&
		 srv_allowlist_contains(reread, fl_identity_pk(k.client)));
	srv_allowlist_free(reread);
	char *text = NULL;
	size_t len = 0;
	FL_CHECK(fl_file_read_all(path, 4096, &text, &len) == FL_OK);
	char pks[FL_PUBKEY_STRING_BYTES];
	fl_identity_public_string(k.client, pks);
	char line[FL_PUBKEY_STRING_BYTES + 16];
	snprintf(line, sizeof(line), "%s site-2\n", pks); /* bound to the token's id */
	FL_CHECK_MSG(strncmp(text, initial, strlen(initial)) == 0 && strstr(text, line), "%s",
		     text);
	FL_CHECK(strcmp(srv_allowlist_name(k.allow, fl_identity_pk(k.client)), "site-2") == 0);
	free(text);
	end_free(&c);
	end_free(&s);

	/* the token is used up: another key presenting it is refused */
	make_pair(&k, k.other, fl_identity_pk(k.server), tok, &c, &s);
	run_handshake(&c, &s);
	FL_CHECK(s.err == FL_ENOTFOUND && c.err == FL_ENOTFOUND);
	end_free(&c);
	end_free(&s);
	/* the enrolled client comes back without a token */
	make_pair(&k, k.client, fl_identity_pk(k.server), NULL, &c, &s);
	run_handshake(&c, &s);
	FL_CHECK(c.err == FL_OK && s.err == FL_OK && fl_channel_established(c.ch));
	end_free(&c);
	end_free(&s);

	/* an expired token is refused (tok2 was valid for 500 ms) */
	k.auth.now_ms = 1000 + 501;
	make_pair(&k, k.other, fl_identity_pk(k.server), tok2, &c, &s);
	run_handshake(&c, &s);
	FL_CHECK(s.err == FL_ENOTFOUND && c.err == FL_ENOTFOUND);
	FL_CHECK(!srv_allowlist_contains(k.allow, fl_identity_pk(k.other)));
	FL_CHECK(srv_enrol_count(k.enrol, k.auth.now_ms) == 0);
	end_free(&c);
	end_free(&s);

	/* a malformed token is a configuration error on the client */
	struct fl_channel *ch = NULL;
	struct fl_channel_config cc = {.self = k.client,
				       .pinned_server_pk = fl_identity_pk(k.server),
				       .enrol_token = "short"};
	FL_CHECK(fl_channel_new(&cc, &ch) == FL_EFORMAT && ch == NULL);
	keys_free(&k);
}

static void test_plaintext_peer_and_version(void)
{
	struct keys k;
	keys_init(&k, 1);
	struct end c, s;
	make_pair(&k, k.client, fl_identity_pk(k.server), NULL, &c, &s);
	/* a plaintext client's first frame (some protobuf bytes) */
	const uint8_t plain_hello[] = {0, 0, 0, 6, 0x0a, 0x04, 0x08, 0x01, 0x12, 0x00};
	struct fl_buf *r = NULL;
	FL_CHECK(fl_channel_recv(s.ch, plain_hello, sizeof(plain_hello), sink_put, &s.got, &r) ==
		 FL_EFORMAT);
	FL_CHECK(strstr(fl_error_msg(), "plaintext") != NULL);
	FL_CHECK(r == NULL);
	end_free(&c);
	end_free(&s);

	/* a future handshake version */
	make_pair(&k, k.client, fl_identity_pk(k.server), NULL, &c, &s);
	struct fl_buf *b = NULL;
	FL_CHECK(fl_channel_start(c.ch, &b) == FL_OK && b && b->len == 4 + 70);
	b->data[8] = 3;
	FL_CHECK(fl_channel_recv(s.ch, b->data, b->len, sink_put, &s.got, &r) == FL_EUNSUPPORTED);
	FL_CHECK(strstr(fl_error_msg(), "version 3") != NULL);
	fl_buf_unref(b);
	/* the client never hears from a plaintext server that speaks first */
	FL_CHECK(fl_channel_recv(c.ch, plain_hello, sizeof(plain_hello), sink_put, &c.got, &r) ==
		 FL_EFORMAT);
	end_free(&c);
	end_free(&s);
	keys_free(&k);
}

static void test_insecure_passthrough(void)
{
	struct fl_channel_config cfg = {.insecure = 1};
	struct fl_channel *ch = NULL;
	FL_CHECK(fl_channel_new(&cfg, &ch) == FL_OK);
	FL_CHECK(fl_channel_established(ch) && fl_channel_insecure(ch));
	struct fl_buf *b = NULL, *r = NULL;
	FL_CHECK(fl_channel_start(ch, &b) == FL_OK && b == NULL);
	struct fl_buf *frame = fl_buf_new(10);
	memcpy(frame->data, "0123456789", 10);
	FL_CHECK(fl_channel_seal_buf(ch, frame, &b) == FL_OK && b == frame && frame->refs == 2);
	fl_buf_unref(b);
	FL_CHECK(fl_channel_seal(ch, frame->data, 10, &b) == FL_OK && b->len == 10 &&
		 memcmp(b->data, "0123456789", 10) == 0);
	fl_buf_unref(b);
	fl_buf_unref(frame);
	struct sink got = {0};
	FL_CHECK(fl_channel_recv(ch, (const uint8_t *)"abc", 3, sink_put, &got, &r) == FL_OK);
	FL_CHECK(r == NULL && got.len == 3 && memcmp(got.data, "abc", 3) == 0);
	FL_CHECK(fl_channel_peer_pk(ch) == NULL);
	FL_CHECK(fl_channel_close(ch, &b) == FL_OK && b == NULL);
	FL_CHECK(fl_channel_eof(ch) == FL_OK);
	free(got.data);
	fl_channel_free(ch);
	fl_channel_free(NULL);
}

static void test_config_and_misuse(void)
{
	struct keys k;
	keys_init(&k, 1);
	struct fl_channel *ch = NULL;
	struct fl_channel_config cfg = {.self = k.client};
	FL_CHECK(fl_channel_new(&cfg, &ch) == FL_EINVAL && ch == NULL); /* no pinned key */
	FL_CHECK(strstr(fl_error_msg(), "server's public key") != NULL);
	struct fl_channel_config scfg = {.is_server = 1, .self = k.server};
	FL_CHECK(fl_channel_new(&scfg, &ch) == FL_EINVAL); /* no authoriser */
	struct fl_channel_config none = {.is_server = 1};
	FL_CHECK(fl_channel_new(&none, &ch) == FL_EINVAL); /* no identity */

	struct end c, s;
	make_pair(&k, k.client, fl_identity_pk(k.server), NULL, &c, &s);
	FL_CHECK(fl_channel_handshake_timeout_ms(c.ch) == FL_CHANNEL_TIMEOUT_DEFAULT_MS);
	FL_CHECK(fl_channel_max_record(c.ch) == FL_WIRE_MAX_FRAME_DEFAULT + 4);
	struct fl_buf *b = NULL;
	FL_CHECK(fl_channel_seal(c.ch, (const uint8_t *)"x", 1, &b) == FL_EINVAL && !b);
	FL_CHECK(fl_channel_start(s.ch, &b) == FL_OK && b == NULL); /* the server waits */
	run_handshake(&c, &s);
	FL_CHECK(c.err == FL_OK && s.err == FL_OK);
	FL_CHECK(fl_channel_start(c.ch, &b) == FL_EINVAL);
	/* over max_record: refused, the channel stays usable */
	size_t over = fl_channel_max_record(c.ch) + 1;
	uint8_t *big = calloc(1, over);
	FL_CHECK(fl_channel_seal(c.ch, big, over, &b) == FL_ERANGE && !b);
	FL_CHECK(send_bytes(&c, &s, big, 16) == FL_OK && s.got.len == 16);
	free(big);
	end_free(&c);
	end_free(&s);
	keys_free(&k);
}

int main(void)
{
	FL_RUN(test_handshake_and_data);
	FL_RUN(test_handshake_and_data_secretstream);
	FL_RUN(test_cipher_negotiation);
	FL_RUN(test_unknown_client_refused);
	FL_RUN(test_admission_retry);
	FL_RUN(test_wrong_pinned_key);
	FL_RUN(test_enrolment);
	FL_RUN(test_plaintext_peer_and_version);
	FL_RUN(test_insecure_passthrough);
	FL_RUN(test_config_and_misuse);
	return fl_test_main_end();
}
