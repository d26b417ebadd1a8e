/* upstream.c - a mid-tier aggregator's link to its parent (upstream.h): the
 * edge client's transport driven with the engine's upstream calls instead
 * of a client session, a poll timer that connects once this node's clients
 * are ready and later notices the link stopping, and the coordinator
 * transport's timer re-armed after every engine call. No protocol logic:
 * that is engine_upstream.c. */
#include "upstream.h"

#include "cli_transport.h"
#include "errors.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UP_POLL_MS 100

struct srv_upstream {
	uv_loop_t *loop;
	struct srv_engine *e;
	struct srv_transport *st;
	struct cli_transport *ct;
	uv_timer_t poll;
	char host[256];
	int port, linked, stopped;
};

static void p_on_connect(void *ctx, uint64_t now)
{
	struct srv_upstream *u = ctx;
	srv_engine_relay_on_connect(u->e, now);
	srv_transport_engine_changed(u->st);
}

static int p_on_frame(void *ctx, const uint8_t *p, size_t n, uint64_t now)
{
	struct srv_upstream *u = ctx;
	int err = srv_engine_relay_on_frame(u->e, p, n, now);
	srv_transport_engine_changed(u->st);
	return err;
}

static void p_on_disconnect(void *ctx)
{
	struct srv_upstream *u = ctx;
	srv_engine_relay_on_disconnect(u->e, uv_now(u->loop));
	srv_transport_engine_changed(u->st);
}

static void p_tick(void *ctx, uint64_t now)
{
	struct srv_upstream *u = ctx;
	srv_engine_relay_tick(u->e, now);
}

static int p_idle_expired(void *ctx, uint64_t now)
{
	struct srv_upstream *u = ctx;
	return srv_engine_relay_idle_expired(u->e, now);
}

static int p_finished(void *ctx)
{
	struct srv_upstream *u = ctx;
	return srv_engine_finished(u->e) || srv_engine_failed(u->e, NULL);
}

static int p_refused(void *ctx)
{
	struct srv_upstream *u = ctx;
	return srv_engine_relay_refused(u->e);
}

static int relay_send(void *ctx, struct fl_buf *b)
{
	struct srv_upstream *u = ctx;
	return cli_transport_send(u->ct, b);
}

static void close_poll(struct srv_upstream *u)
{
	if (!uv_is_closing((uv_handle_t *)&u->poll))
		uv_close((uv_handle_t *)&u->poll, NULL);
}

static const char *result_name(enum cli_transport_result r)
{
	switch (r) {
	case CLI_TRANSPORT_FINISHED: return "finished";
	case CLI_TRANSPORT_SIGNALLED: return "signalled";
	case CLI_TRANSPORT_GAVE_UP: return "gave up connecting";
	case CLI_TRANSPORT_REFUSED: return "refused";
	default: return "running";
	}
}

/* Connects once min_available clients are ready; later fails the engine
 * when the link stopped before the engine ended. */
static void on_poll(uv_timer_t *h)
{
	struct srv_upstream *u = h->data;
	int ended = srv_engine_finished(u->e) || srv_engine_failed(u->e, NULL);
	if (!u->linked) {
		if (ended) {
			close_poll(u);
			return;
		}
		if (!srv_engine_relay_ready(u->e))
			return;
		fl_log_info("clients ready: connecting to the parent %s:%d", u->host, u->port);
		const struct cli_transport_peer p = {
			u,      p_on_connect,   p_on_frame, p_on_disconnect,
			p_tick, p_idle_expired, p_finished, p_refused,
			NULL};
		cli_transport_start_peer(u->ct, &p);
		u->linked = 1;
		return;
	}
	enum cli_transport_result r = cli_transport_result(u->ct);
	if (r == CLI_TRANSPORT_RUNNING)
		return;
	if (!ended) {
		char why[FL_ERROR_MSG_MAX + 64];
		const char *err = cli_transport_error(u->ct);
		snprintf(why, sizeof(why), "the link to the parent %s:%d stopped: %s", u->host,
			 u->port, err && *err ? err : result_name(r));
		srv_engine_relay_fail(u->e, why);
		srv_transport_engine_changed(u->st);
	}
	close_poll(u);
}

int srv_upstream_new(uv_loop_t *loop, const struct srv_upstream_config *cfg, struct srv_engine *e,
		     struct srv_transport *t, struct srv_upstream **out)
{
	*out = NULL;
	struct srv_upstream *u = calloc(1, sizeof(*u));
	if (!u)
		return fl_error_set(FL_ENOMEM, "upstream: out of memory");
	struct cli_transport_config tc;
	cli_transport_config_default(&tc);
	tc.host = cfg->host;
	tc.port = cfg->port;
	tc.max_frame_bytes = cfg->max_frame_bytes;
	tc.seed = cfg->seed;
	tc.insecure = cfg->insecure;
	tc.identity = cfg->identity;
	tc.server_pk = cfg->parent_pk;
	tc.handshake_timeout_ms = cfg->handshake_timeout_ms;
	tc.max_attempts = cfg->max_attempts;
	int err = cli_transport_new(loop, &tc, &u->ct);
	if (err) {
		free(u);
		return err;
	}
	u->loop = loop;
	u->e = e;
	u->st = t;
	u->port = cfg->port;
	snprintf(u->host, sizeof(u->host), "%s", cfg->host);
	const struct srv_relay_io rio = {u, relay_send};
	if ((err = srv_engine_relay_start(e, cfg->node_id, &rio))) {
		cli_transport_free(u->ct);
		free(u);
		return err;
	}
	uv_timer_init(loop, &u->poll);
	u->poll.data = u;
	*out = u;
	return FL_OK;
}

int srv_upstream_start(struct srv_upstream *u)
{
	uv_timer_start(&u->poll, on_poll, 0, UP_POLL_MS);
	return FL_OK;
}

void srv_upstream_stop(struct srv_upstream *u)
{
	if (!u || u->stopped)
		return;
	u->stopped = 1;
	if (u->linked)
		cli_transport_stop(u->ct);
	close_poll(u);
}

void srv_upstream_free(struct srv_upstream *u)
{
	if (!u)
		return;
	cli_transport_free(u->ct);
	free(u);
}
