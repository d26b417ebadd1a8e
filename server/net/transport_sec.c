/* transport_sec.c - the coordinator transport's security glue
 * (transport.h): a secure channel per connection (pass-through with
 * --insecure), bytes in through fl_channel_recv, handshake replies out,
 * handshake deadlines, refusals told to the peer, the identity rule on the
 * first protocol frame, one live connection per client key, and the
 * allow-list reload on SIGHUP. Admission policy itself is in access.c; no
 * protocol decisions beyond the first frame are made here.
 */
#include "transport_impl.h"

#include "errors.h"
#include "log.h"

#include <sodium.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HS_MAGIC "FLH1" /* the first bytes of a client's handshake message */

int srv_tr_chan_open(struct conn *c)
{
	struct srv_transport *t = c->t;
	struct fl_channel_config cc;
	memset(&cc, 0, sizeof(cc));
	cc.is_server = 1;
	cc.insecure = t->insecure;
	if (!t->insecure) {
		cc.self = srv_access_identity(t->cfg.access);
		cc.authorize = srv_access_authorize;
		cc.auth_ctx = t->cfg.access;
		cc.handshake_timeout_ms = t->cfg.handshake_timeout_ms;
		cc.max_record = (size_t)t->cfg.max_frame_bytes + FL_WIRE_FRAME_HEADER_BYTES;
	}
	int err = fl_channel_new(&cc, &c->ch);
	if (err) {
		fl_log_error("conn %s: %s", c->peer, fl_error_msg());
		return err;
	}
	t->nhandshaking++;
	c->hs_by = uv_now(t->loop) + fl_channel_handshake_timeout_ms(c->ch);
	return FL_OK;
}

/* The channel is established: the engine may hear of the connection. */
void srv_tr_conn_up(struct conn *c)
{
	struct srv_transport *t = c->t;
	if (c->up)
		return;
	c->up = 1;
	t->nhandshaking--;
	srv_tr_addr_release(t, c); /* authenticated: no longer counts against its address */
	if (!t->insecure) {
		char key[FL_PUBKEY_STRING_BYTES];
		memcpy(c->pk, fl_channel_peer_pk(c->ch), FL_PUBKEY_BYTES);
		fl_pubkey_format(c->pk, key);
		fl_log_info("conn %s: secure channel up, client key %s", c->peer, key);
		t->st.handshakes++;
	}
	srv_engine_on_connect(t->e, c->id, uv_now(t->loop));
}

static int deliver(void *ctx, const uint8_t *plain, size_t n)
{
	struct conn *c = ctx;
	if (fl_net_gone(&c->n))
		return 0;
	int rc = fl_frame_reader_feed(&c->rd, plain, n, srv_tr_on_frame, c);
	if (rc < 0 && !fl_net_gone(&c->n)) {
		/* A bad frame inside a good record: the channel stays usable, so
		 * the peer can be told why before the final record. */
		fl_log_warn("conn %s: %s: closing", c->peer, fl_error_msg());
		if (rc == FL_ERANGE)
			srv_tr_send_error(c, FL_ERANGE, "frame over the size limit");
		srv_tr_close(c);
	}
	return 0;
}

static void handshake_failed(struct conn *c, int rc)
{
	struct srv_transport *t = c->t;
	char msg[FL_ERROR_MSG_MAX];
	snprintf(msg, sizeof(msg), "%s", fl_error_msg());
	if (rc == FL_ENOTFOUND) {
		t->st.refused++;
		fl_log_warn("conn %s: refused: %s", c->peer, msg);
	} else {
		t->st.failed++;
		fl_log_warn("conn %s: handshake failed: %s: closing", c->peer, msg);
	}
	if (!c->replied && rc == FL_EUNSUPPORTED) {
		/* another handshake version: its peer reads a plaintext Error
		 * while waiting for msg2, so it gets the real reason */
		srv_tr_send_error(c, FL_EUNSUPPORTED, msg);
	} else if (!c->replied) {
		/* We never answered: the peer does not speak the handshake (a
		 * plaintext client, garbage). Tell it in plaintext, the only thing
		 * it can read; nothing secret is in it. */
		srv_tr_send_error(c, FL_EAUTH,
				  "this server requires the fedloha secure channel: run the client "
				  "with --key and --server-key, without --insecure");
	}
	srv_tr_close(c);
}

void srv_tr_feed(struct conn *c, const uint8_t *data, size_t n)
{
	struct fl_buf *reply = NULL;
	int rc = fl_channel_recv(c->ch, data, n, deliver, c, &reply);
	if (reply) { /* handshake messages: written even when the call failed */
		c->replied = 1;
		srv_tr_write_raw(c, reply);
	}
	if (rc == FL_OK) {
		if (!c->up && fl_channel_established(c->ch))
			srv_tr_conn_up(c);
		return;
	}
	if (fl_net_gone(&c->n))
		return;
	if (!c->up) {
		handshake_failed(c, rc);
		return;
	}
	fl_log_warn("conn %s: %s: closing", c->peer, fl_error_msg());
	srv_tr_close(c); /* the channel is dead: no final record */
}

void srv_tr_handshake_sweep(struct srv_transport *t, uint64_t now)
{
	for (struct conn *c = t->head; c; c = c->next) {
		if (!c->ch || c->up || fl_net_gone(&c->n) || now < c->hs_by)
			continue;
		t->st.failed++;
		fl_log_warn("conn %s: no secure handshake within %u ms: closed", c->peer,
			    fl_channel_handshake_timeout_ms(c->ch));
		srv_tr_cut(c);
	}
}

static void refuse(struct conn *c, int err, const char *why)
{
	c->t->st.refused++;
	fl_log_warn("conn %s: refused: %s", c->peer, why);
	srv_tr_send_error(c, err, why);
	srv_tr_close(c);
}

static size_t key_bucket(const struct srv_transport *t, const uint8_t *pk)
{
	uint64_t h;
	unsigned char out[crypto_shorthash_BYTES];
	crypto_shorthash(out, pk, FL_PUBKEY_BYTES, t->by_pk_key);
	memcpy(&h, out, sizeof(h));
	return (size_t)h & t->by_pk_mask;
}

static void key_add(struct conn *c)
{
	struct srv_transport *t = c->t;
	if (c->pk_in || !t->by_pk)
		return;
	size_t b = key_bucket(t, c->pk);
	c->pk_next = t->by_pk[b];
	t->by_pk[b] = c;
	c->pk_in = 1;
}

/* The index of live client keys, one bucket per connection allowed (a
 * power of two, at most 2^22), made on first use with every connection
 * whose first frame passed. Without memory for it key_taken scans. */
static void keys_ready(struct srv_transport *t)
{
	if (t->by_pk)
		return;
	size_t nb = 1024;
	while (nb < t->cfg.max_conns && nb < ((size_t)1 << 22))
		nb *= 2;
	if (!(t->by_pk = calloc(nb, sizeof(*t->by_pk))))
		return;
	t->by_pk_mask = nb - 1;
	crypto_shorthash_keygen(t->by_pk_key);
	for (struct conn *o = t->head; o; o = o->next)
		if (o->up && o->first_seen && !fl_net_gone(&o->n))
			key_add(o);
}

void srv_tr_key_forget(struct conn *c)
{
	if (!c->pk_in)
		return;
	struct conn **p = &c->t->by_pk[key_bucket(c->t, c->pk)];
	while (*p != c)
		p = &(*p)->pk_next;
	*p = c->pk_next;
	c->pk_in = 0;
}

/* 1 when another live connection whose first frame passed has c's key. */
static int key_taken(struct conn *c)
{
	struct srv_transport *t = c->t;
	if (t->by_pk) {
		for (struct conn *o = t->by_pk[key_bucket(t, c->pk)]; o; o = o->pk_next)
			if (o != c && o->up && !fl_net_gone(&o->n) &&
			    memcmp(o->pk, c->pk, FL_PUBKEY_BYTES) == 0)
				return 1;
		return 0;
	}
	for (struct conn *o = t->head; o; o = o->next)
		if (o != c && o->up && o->first_seen && !fl_net_gone(&o->n) &&
		    memcmp(o->pk, c->pk, FL_PUBKEY_BYTES) == 0)
			return 1;
	return 0;
}

int srv_tr_first_frame(struct conn *c, const uint8_t *payload, size_t n)
{
	struct srv_transport *t = c->t;
	c->first_seen = 1;
	if (t->insecure) {
		if (n >= 4 && memcmp(payload, HS_MAGIC, 4) == 0) {
			refuse(c, FL_EAUTH,
			       "this server runs with --insecure (no encryption, no authentication): "
			       "start both ends with --insecure, or neither");
			return FL_EAUTH;
		}
		return FL_OK;
	}
	if (srv_access_check_first_frame(t->cfg.access, c->pk, payload, n,
					 t->cfg.max_frame_bytes) != FL_OK) {
		char why[FL_ERROR_MSG_MAX];
		snprintf(why, sizeof(why), "%s", fl_error_msg());
		refuse(c, FL_EAUTH, why);
		return FL_EAUTH;
	}
	keys_ready(t);
	if (key_taken(c)) {
		char key[FL_PUBKEY_STRING_BYTES], why[160];
		fl_pubkey_format(c->pk, key);
		snprintf(why, sizeof(why), "another connection with client key %s is already open",
			 key);
		refuse(c, FL_EINVAL, why); /* the client retries: the old one may be stale */
		return FL_EINVAL;
	}
	key_add(c);
	return FL_OK;
}

void srv_tr_reload(struct srv_transport *t)
{
	if (t->insecure)
		return;
	struct srv_access *a = t->cfg.access;
	if (srv_access_reload(a) != FL_OK) {
		fl_log_error("reload: %s: keeping the previous allow-list (%zu keys)",
			     fl_error_msg(), srv_access_count(a));
		return;
	}
	fl_log_info("reload: allow-list of %zu keys in force", srv_access_count(a));
	for (struct conn *c = t->head; c; c = c->next) {
		if (!c->up || fl_net_gone(&c->n) || srv_access_listed(a, c->pk))
			continue;
		char key[FL_PUBKEY_STRING_BYTES], why[160];
		fl_pubkey_format(c->pk, key);
		snprintf(why, sizeof(why), "client key %s was removed from the allow-list", key);
		refuse(c, FL_EAUTH, why);
	}
}

void srv_tr_log_frame(const struct conn *c, const char *dir, const uint8_t *payload, size_t len)
{
	const struct srv_transport *t = c->t;
	fl_envelope *env = NULL;
	if (fl_wire_decode(payload, len, t->cfg.max_frame_bytes, &env) != FL_OK)
		return;
	if (t->cfg.debug_tensors && env->body_case == FEDLOHA__V1__ENVELOPE__BODY_CHUNK &&
	    env->chunk->offset == 0)
		fl_log_debug("conn %s: %s tensor %s round %llu", c->peer, dir, env->chunk->name,
			     (unsigned long long)env->chunk->round);
	else if (env->body_case == FEDLOHA__V1__ENVELOPE__BODY_ERROR)
		fl_log_warn("conn %s: %s error: %s", c->peer, dir,
			    env->error->message ? env->error->message : "");
	fl_wire_envelope_free(env);
}

void srv_tr_peer_name(uv_tcp_t *tcp, char *out, size_t cap)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	snprintf(out, cap, "?");
	if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len) != 0)
		return;
	char ip[48] = "?";
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
		uv_ip4_name(a, ip, sizeof(ip));
		snprintf(out, cap, "%s:%d", ip, ntohs(a->sin_port));
	} else if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
		uv_ip6_name(a, ip, sizeof(ip));
		snprintf(out, cap, "[%s]:%d", ip, ntohs(a->sin6_port));
	}
}
