/* net.c - queued writes, output caps, sealed records, shutdown and
 * close-once of a libuv TCP connection, the log line at the end of its
 * input, and the name lookup both ends start from (net.h). No reading of
 * data, no protocol. */
#include "net.h"

#include "errors.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct wreq {
	uv_write_t req;
	struct fl_buf *buf;
	struct fl_net_conn *n;
	int hs; /* written before the channel was up */
};

void fl_net_conn_init(struct fl_net_conn *n, uv_loop_t *loop, size_t max_output,
		      uv_close_cb on_closed, uint64_t *sock_out, uint64_t *hs_out)
{
	uv_tcp_init(loop, &n->tcp);
	n->max_output = max_output;
	n->on_closed = on_closed;
	n->sock_out = sock_out;
	n->hs_out = hs_out;
}

int fl_net_gone(const struct fl_net_conn *n)
{
	return n->closing || n->cut;
}

void fl_net_cut(struct fl_net_conn *n)
{
	if (n->cut)
		return;
	n->cut = 1;
	uv_close((uv_handle_t *)&n->tcp, n->on_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	(void)status;
	fl_net_cut(req->data);
}

void fl_net_shutdown(struct fl_net_conn *n)
{
	n->closing = 1;
	uv_read_stop((uv_stream_t *)&n->tcp);
	n->sreq.data = n;
	if (uv_shutdown(&n->sreq, (uv_stream_t *)&n->tcp, on_shutdown) != 0)
		fl_net_cut(n);
}

static void on_written(uv_write_t *req, int status)
{
	struct wreq *w = (struct wreq *)req;
	struct fl_net_conn *n = w->n;
	size_t len = w->buf->len;
	n->pending -= len;
	if (status == 0) {
		*n->sock_out += len;
		if (w->hs)
			*n->hs_out += len;
	}
	fl_buf_unref(w->buf);
	free(w);
	if (n->on_written)
		n->on_written(n, len);
	if (status < 0 && status != UV_ECANCELED) {
		fl_log_debug("%s: write failed: %s", n->name, uv_strerror(status));
		fl_net_cut(n);
	}
}

int fl_net_write(struct fl_net_conn *n, struct fl_buf *b, int hs)
{
	if (fl_net_gone(n)) {
		fl_buf_unref(b);
		return FL_EIO;
	}
	if (n->pending + b->len > n->max_output) {
		fl_log_warn("%s: %zu bytes queued, over the output cap of %zu: connection cut",
			    n->name, n->pending + b->len, n->max_output);
		fl_buf_unref(b);
		fl_net_cut(n);
		return FL_EIO;
	}
	struct wreq *w = malloc(sizeof(*w));
	if (!w) {
		fl_buf_unref(b);
		fl_net_cut(n);
		return FL_EIO;
	}
	w->buf = b;
	w->n = n;
	w->hs = hs;
	uv_buf_t ub = uv_buf_init((char *)b->data, (unsigned)b->len);
	int rc = uv_write(&w->req, (uv_stream_t *)&n->tcp, &ub, 1, on_written);
	if (rc != 0) {
		fl_log_debug("%s: write refused: %s", n->name, uv_strerror(rc));
		fl_buf_unref(b);
		free(w);
		fl_net_cut(n);
		return FL_EIO;
	}
	n->pending += b->len;
	return FL_OK;
}

int fl_net_send_sealed(struct fl_net_conn *n, struct fl_channel *ch, struct fl_buf *frame, int hs)
{
	struct fl_buf *rec = NULL;
	int err = fl_channel_seal_buf(ch, frame, &rec);
	fl_buf_unref(frame);
	if (err) {
		fl_log_warn("%s: %s", n->name, fl_error_msg());
		fl_net_cut(n);
		return FL_EIO;
	}
	return fl_net_write(n, rec, hs);
}

int fl_net_close_channel(struct fl_net_conn *n, struct fl_channel *ch, int hs)
{
	if (fl_net_gone(n))
		return FL_EIO;
	struct fl_buf *fin = NULL;
	if (ch && fl_channel_established(ch) && !fl_channel_error(ch) &&
	    fl_channel_close(ch, &fin) == FL_OK && fin)
		fl_net_write(n, fin, hs);
	return n->cut ? FL_EIO : FL_OK;
}

void fl_net_read_end(const struct fl_net_conn *n, struct fl_channel *ch, ssize_t nread,
		     const char *hint)
{
	if (nread != UV_EOF)
		fl_log_info("%s: %s", n->name, uv_strerror((int)nread));
	else if (ch && fl_channel_eof(ch) != FL_OK)
		fl_log_info("%s: %s%s", n->name, fl_error_msg(), hint);
}

int fl_net_resolve(uv_loop_t *loop, uv_getaddrinfo_t *req, uv_getaddrinfo_cb cb, const char *host,
		   int port, int passive)
{
	char service[16];
	snprintf(service, sizeof(service), "%d", port);
	struct addrinfo hints;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if (passive)
		hints.ai_flags = AI_PASSIVE;
	return uv_getaddrinfo(loop, req, cb, host, service, &hints);
}
