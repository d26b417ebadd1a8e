/* transport_session.c - the client session as the transport's peer
 * (transport.h): cli_transport_start, the session's I/O table and its
 * training / evaluation jobs on the libuv thread pool. Kept apart from
 * transport.c so that a peer other than a session (a mid-tier
 * aggregator's link to its parent) links no session code. */
#include "transport_impl.h"

#include <stdlib.h>
#include <string.h>

static void job_work(uv_work_t *req)
{
	cli_job_run(((struct jreq *)req)->job);
}

static void job_done(uv_work_t *req, int status)
{
	struct jreq *j = (struct jreq *)req;
	struct cli_transport *t = j->t;
	t->jobs--;
	cli_session_on_job_done(t->s, j->job);
	free(j);
	cli_transport_log_peer_error(t);
	if (!t->stopping && t->p.finished(t->p.ctx))
		cli_transport_begin_stop(t, CLI_TRANSPORT_FINISHED, 0);
}

static int io_submit(void *ctx, struct cli_job *job)
{
	struct cli_transport *t = ctx;
	struct jreq *j = malloc(sizeof(*j));
	if (!j)
		return FL_EIO;
	j->t = t;
	j->job = job;
	if (uv_queue_work(t->loop, &j->req, job_work, job_done) != 0) {
		free(j);
		return FL_EIO;
	}
	t->jobs++;
	return 0;
}

void cli_transport_session_io(struct cli_transport *t, struct cli_session_io *io)
{
	memset(io, 0, sizeof(*io));
	io->ctx = t;
	io->send = cli_transport_io_send;
	io->close = cli_transport_io_close;
	io->submit = io_submit;
}

/* ---- the session as a peer ---- */

static void ses_on_connect(void *ctx, uint64_t now)
{
	cli_session_on_connect(ctx, now);
}

static int ses_on_frame(void *ctx, const uint8_t *p, size_t n, uint64_t now)
{
	return cli_session_on_frame(ctx, p, n, now);
}

static void ses_on_disconnect(void *ctx)
{
	cli_session_on_disconnect(ctx);
}

static void ses_tick(void *ctx, uint64_t now)
{
	cli_session_tick(ctx, now);
}

static int ses_idle_expired(void *ctx, uint64_t now)
{
	return cli_session_idle_expired(ctx, now);
}

static int ses_finished(void *ctx)
{
	return cli_session_finished(ctx);
}

static int ses_refused(void *ctx)
{
	return cli_session_refused_model(ctx);
}

static const char *ses_last_error(void *ctx)
{
	return cli_session_last_error(ctx);
}

int cli_transport_start(struct cli_transport *t, struct cli_session *s)
{
	const struct cli_transport_peer p = {s,
					     ses_on_connect,
					     ses_on_frame,
					     ses_on_disconnect,
					     ses_tick,
					     ses_idle_expired,
					     ses_finished,
					     ses_refused,
					     ses_last_error};
	int err = cli_transport_start_peer(t, &p);
	t->s = s;
	return err;
}
