/* transport_limits.c - the coordinator transport's admission limits on
 * unauthenticated connections (transport.h), checked when a connection is
 * accepted, before its channel exists and so before any cryptography:
 * connections in all, handshakes in progress, the slots reserved for
 * authenticated clients, and per source address the unauthenticated
 * connections open and a token bucket of new handshakes. Source addresses
 * live in a fixed table (SRV_TR_ADDR_SLOTS entries, keyed by a keyed hash
 * with a random key, IPv4 as itself, IPv6 by its /64): memory is bounded
 * whatever the number of peers. Refusals are counted per limit and logged
 * as one summary line per SRV_TR_LIMIT_LOG_MS. When the handshake cap is
 * full, a peer with no handshake in progress takes the slot of the oldest
 * handshake of the address holding the most. No reading, writing or
 * channel work here (transport.c, transport_sec.c).
 */
#include "transport_impl.h"

#include "errors.h"
#include "log.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SRV_TR_ADDR_SLOTS 4096 /* a power of two */
#define SRV_TR_ADDR_PROBE 8    /* entries looked at per address */

struct addr_entry {
	uint8_t key[16];
	uint8_t used;
	uint32_t conns; /* unauthenticated connections open */
	double tokens;  /* the handshake bucket */
	uint64_t at_ms; /* when tokens was last refilled */
};

struct srv_tr_limits {
	struct addr_entry e[SRV_TR_ADDR_SLOTS];
	uint8_t hkey[crypto_shorthash_KEYBYTES];
	uint64_t pending[SRV_LIMIT_N]; /* refusals not yet logged */
	uint64_t pending_evicted;
	size_t multi; /* entries with two or more connections: eviction candidates */
	uint64_t next_log_ms;
	char last_peer[64];
};

static const char *const limit_names[SRV_LIMIT_N] = {
	"connections (--max-conns)",      "reserve for clients (--reserved-conns)",
	"handshakes (--max-handshakes)",  "per-address connections (--addr-conns)",
	"per-address rate (--addr-rate)", "address table full",
};

const char *srv_transport_limit_name(int which)
{
	return which >= 0 && which < SRV_LIMIT_N ? limit_names[which] : "?";
}

int srv_tr_limits_new(struct srv_transport *t)
{
	if (!(t->lim = calloc(1, sizeof(*t->lim))))
		return fl_error_set(FL_ENOMEM, "transport: out of memory");
	crypto_shorthash_keygen(t->lim->hkey);
	return FL_OK;
}

void srv_tr_limits_free(struct srv_transport *t)
{
	free(t->lim);
	t->lim = NULL;
}

int srv_tr_addr_key(const struct sockaddr *sa, uint8_t key[16])
{
	memset(key, 0, 16);
	if (sa->sa_family == AF_INET) {
		key[10] = key[11] = 0xff;
		memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return 1;
	}
	if (sa->sa_family != AF_INET6)
		return 0;
	const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
	static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	memcpy(key, a, memcmp(a, v4mapped, 12) == 0 ? 16 : 8);
	return 1;
}

static void refill(const struct srv_transport_config *cfg, struct addr_entry *e, uint64_t now)
{
	if (now > e->at_ms)
		e->tokens += cfg->addr_rate * (double)(now - e->at_ms) / 1000.0;
	if (e->tokens > cfg->addr_burst)
		e->tokens = cfg->addr_burst;
	e->at_ms = now;
}

/* The entry of key: its own, else a free one or an idle one (no open
 * connection and a full bucket: forgetting it changes nothing) in its probe
 * window, made fresh. NULL when the window is all busy. */
static struct addr_entry *lookup(struct srv_transport *t, const uint8_t key[16], uint64_t now)
{
	struct srv_tr_limits *l = t->lim;
	uint64_t h;
	crypto_shorthash((uint8_t *)&h, key, 16, l->hkey);
	struct addr_entry *spare = NULL;
	for (int i = 0; i < SRV_TR_ADDR_PROBE; i++) {
		struct addr_entry *e = &l->e[(h + (uint64_t)i) & (SRV_TR_ADDR_SLOTS - 1)];
		if (e->used && memcmp(e->key, key, 16) == 0) {
			refill(&t->cfg, e, now);
			return e;
		}
		if (!spare && !e->used)
			spare = e;
		if (!spare && !e->conns) {
			refill(&t->cfg, e, now);
			if (e->tokens >= t->cfg.addr_burst)
				spare = e;
		}
	}
	if (spare) {
		memcpy(spare->key, key, 16);
		spare->used = 1;
		spare->conns = 0;
		spare->tokens = t->cfg.addr_burst;
		spare->at_ms = now;
	}
	return spare;
}

/* The handshake cap is full and a peer with no handshake in progress
 * knocks: the oldest handshake of the address holding the most (at least
 * two) makes room, so a flood from a few addresses cannot starve newcomers.
 * 1 when one was cut. */
static int evict_for_newcomer(struct srv_transport *t)
{
	if (!t->lim->multi) /* nobody holds two: skip the walk over every connection */
		return 0;
	struct conn *victim = NULL;
	uint32_t most = 1;
	for (struct conn *o = t->head; o; o = o->next) {
		if (o->up || !o->ch || o->addr < 0 || fl_net_gone(&o->n))
			continue;
		uint32_t n = t->lim->e[o->addr].conns;
		if (n > most || (n == most && victim && o->hs_by < victim->hs_by)) {
			most = n;
			victim = o;
		}
	}
	if (!victim)
		return 0;
	t->st.evicted++;
	t->lim->pending_evicted++;
	srv_tr_addr_release(t, victim);
	srv_tr_cut(victim);
	return 1;
}

int srv_tr_admit(struct srv_transport *t, struct conn *c)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	uint8_t key[16];
	int known = uv_tcp_getpeername(&c->n.tcp, (struct sockaddr *)&ss, &len) == 0 &&
		    srv_tr_addr_key((struct sockaddr *)&ss, key);
	return srv_tr_admit_key(t, c, known ? key : NULL, uv_now(t->loop));
}

int srv_tr_admit_key(struct srv_transport *t, struct conn *c, const uint8_t *key, uint64_t now)
{
	const struct srv_transport_config *cfg = &t->cfg;
	struct addr_entry *e = NULL;
	c->addr = -1;
	if (cfg->addr_conns || cfg->addr_rate > 0) {
		if (key && !(e = lookup(t, key, now)))
			return SRV_LIMIT_ADDR_TABLE;
		if (e && cfg->addr_conns && e->conns >= cfg->addr_conns)
			return SRV_LIMIT_ADDR_CONNS;
		if (e && cfg->addr_rate > 0 && e->tokens < 1)
			return SRV_LIMIT_ADDR_RATE;
	}
	if (t->nconns > cfg->max_conns)
		return SRV_LIMIT_CONNS;
	/* handshakes in progress: the smaller of the cap and what the reserve
	 * leaves; a newcomer may make room under either */
	size_t unauth = cfg->max_conns - cfg->reserved_conns;
	size_t cap = cfg->max_handshakes < unauth ? cfg->max_handshakes : unauth;
	if (t->nhandshaking + 1 > cap && !(e && !e->conns && evict_for_newcomer(t)))
		return t->nhandshaking + 1 > unauth ? SRV_LIMIT_RESERVE : SRV_LIMIT_HANDSHAKES;
	if (e) {
		if (++e->conns == 2)
			t->lim->multi++;
		if (cfg->addr_rate > 0)
			e->tokens -= 1;
		c->addr = (int32_t)(e - t->lim->e);
	}
	return SRV_LIMIT_N;
}

void srv_tr_addr_release(struct srv_transport *t, struct conn *c)
{
	if (c->addr < 0)
		return;
	struct addr_entry *e = &t->lim->e[c->addr];
	if (e->conns && e->conns-- == 2)
		t->lim->multi--;
	c->addr = -1;
}

void srv_tr_limits_log(struct srv_transport *t, int force)
{
	struct srv_tr_limits *l = t->lim;
	uint64_t now = uv_now(t->loop), n = 0;
	for (int i = 0; i < SRV_LIMIT_N; i++)
		n += l->pending[i];
	if ((!n && !l->pending_evicted) || (!force && now < l->next_log_ms))
		return;
	char line[512];
	size_t at = 0;
	for (int i = 0; i < SRV_LIMIT_N && at < sizeof(line); i++)
		if (l->pending[i])
			at += (size_t)snprintf(line + at, sizeof(line) - at, "%s%s %llu",
					       at ? ", " : "", limit_names[i],
					       (unsigned long long)l->pending[i]);
	if (!at)
		snprintf(line, sizeof(line), "none");
	fl_log_warn("refused %llu connections at accept, before any cryptography (%s; the "
		    "last from %s), cut %llu handshakes of the busiest addresses for newcomers; "
		    "the next summary in %u s at the earliest",
		    (unsigned long long)n, line, l->last_peer,
		    (unsigned long long)l->pending_evicted, SRV_TR_LIMIT_LOG_MS / 1000);
	memset(l->pending, 0, sizeof(l->pending));
	l->pending_evicted = 0;
	l->next_log_ms = now + SRV_TR_LIMIT_LOG_MS;
}

void srv_tr_limited(struct srv_transport *t, int which, const char *peer)
{
	t->st.limited[which]++;
	t->lim->pending[which]++;
	snprintf(t->lim->last_peer, sizeof(t->lim->last_peer), "%s", peer);
	srv_tr_limits_log(t, 0);
}
