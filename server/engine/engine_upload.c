/* engine_upload.c - where an update in flight lives, and the order of
 * connections by their last frame.
 *
 * Upload slots: an update must be checked whole before it is folded (a
 * rejected update leaves no trace in the exact accumulator of aggregate.c),
 * so its values are staged until the last chunk arrives: nglobal floats per
 * update in flight. With cfg.upload_slots = M > 0 the engine holds at most
 * M staging buffers (allocated on first use, reused): M * nglobal * 4 bytes,
 * independent of the number of clients. An Update header that finds every
 * slot busy parks its connection (io->pause: the transport stops reading it
 * and keeps that frame and whatever followed it); when a slot frees, the
 * oldest parked connection gets it (FIFO) and io->resume asks the transport
 * to deliver the kept frames again. With M = 0 every uploading client gets
 * its own buffer (the in-process simulator's choice). A connection still
 * parked when its attempt ends is read anyway, into one shared scratch
 * buffer, and its update discarded (the server chose not to read it in
 * time: not the client's fault); it is then READY again.
 *
 * The idle list: connections in the order of their last frame (time only
 * moves forward, so appending at each frame keeps it sorted); its head
 * gives the next idle deadline in O(1). A parked connection is off the
 * list: it is silent because the transport stopped reading it.
 *
 * No protocol checks here: on_update (engine_conn.c) validates the header
 * before asking for a slot. */
#include "engine_impl.h"

#include "errors.h"

#include <stdlib.h>
#include <string.h>

/* ---- idle list ---- */

void srv_eng_lru_unlink(struct srv_engine *e, struct srv_conn *c)
{
	if (!c->lru_in)
		return;
	if (c->lru_prev)
		c->lru_prev->lru_next = c->lru_next;
	else
		e->lru_head = c->lru_next;
	if (c->lru_next)
		c->lru_next->lru_prev = c->lru_prev;
	else
		e->lru_tail = c->lru_prev;
	c->lru_prev = c->lru_next = NULL;
	c->lru_in = 0;
}

void srv_eng_lru_touch(struct srv_engine *e, struct srv_conn *c)
{
	srv_eng_lru_unlink(e, c);
	c->lru_prev = e->lru_tail;
	if (e->lru_tail)
		e->lru_tail->lru_next = c;
	else
		e->lru_head = c;
	e->lru_tail = c;
	c->lru_in = 1;
}

/* ---- upload slots ---- */

int srv_eng_uploads_init(struct srv_engine *e, uint32_t slots)
{
	struct srv_uploads *u = &e->up;
	u->nslots = slots;
	if (!slots)
		return FL_OK;
	u->buf = calloc(slots, sizeof(*u->buf));
	u->free_idx = malloc(slots * sizeof(*u->free_idx));
	if (!u->buf || !u->free_idx)
		return fl_error_set(FL_ENOMEM, "engine: out of memory for %u upload slots", slots);
	for (uint32_t i = 0; i < slots; i++)
		u->free_idx[i] = slots - 1 - i; /* slot 0 is taken first */
	u->nfree = slots;
	return FL_OK;
}

void srv_eng_uploads_free(struct srv_engine *e)
{
	struct srv_uploads *u = &e->up;
	for (uint32_t i = 0; u->buf && i < u->nslots; i++)
		free(u->buf[i]);
	free(u->buf);
	free(u->free_idx);
	free(u->park);
	free(u->scratch);
	memset(u, 0, sizeof(*u));
}

static int park_push(struct srv_uploads *u, uint64_t id)
{
	if (u->park_n == u->park_cap) {
		size_t cap = u->park_cap ? 2 * u->park_cap : 64;
		uint64_t *p = malloc(cap * sizeof(*p));
		if (!p)
			return fl_error_set(FL_ENOMEM, "engine: out of memory parking an upload");
		for (size_t i = 0; i < u->park_n; i++)
			p[i] = u->park[(u->park_head + i) % u->park_cap];
		free(u->park);
		u->park = p;
		u->park_cap = cap;
		u->park_head = 0;
	}
	u->park[(u->park_head + u->park_n) % u->park_cap] = id;
	u->park_n++;
	return FL_OK;
}

/* The oldest connection still parked (entries of connections that left or
 * were unparked are skipped), or NULL. */
static struct srv_conn *park_pop(struct srv_engine *e)
{
	struct srv_uploads *u = &e->up;
	while (u->park_n) {
		uint64_t id = u->park[u->park_head];
		u->park_head = (u->park_head + 1) % u->park_cap;
		u->park_n--;
		struct srv_conn *c = srv_eng_find(e, id);
		if (c && c->parked)
			return c;
	}
	return NULL;
}

static float *slot_buffer(struct srv_engine *e, uint32_t idx)
{
	struct srv_uploads *u = &e->up;
	if (!u->buf[idx])
		u->buf[idx] = malloc((e->nglobal ? e->nglobal : 1) * sizeof(float));
	return u->buf[idx];
}

/* Slot idx is free: the oldest parked connection gets it, else the pool. */
static void slot_release(struct srv_engine *e, uint32_t idx)
{
	struct srv_uploads *u = &e->up;
	u->in_use--;
	struct srv_conn *c = park_pop(e);
	if (!c) {
		u->free_idx[u->nfree++] = idx;
		return;
	}
	u->in_use++;
	c->parked = 0;
	c->slot = (int32_t)idx;
	c->staging = u->buf[idx];
	e->io.resume(e->io.ctx, c->id);
}

void srv_eng_unpark(struct srv_engine *e, struct srv_conn *c)
{
	if (!c->parked)
		return;
	c->parked = 0;
	e->io.resume(e->io.ctx, c->id);
}

/* c's update reader, writing into buf (nglobal floats). */
static int rx_open(struct srv_engine *e, struct srv_conn *c, float *buf)
{
	struct fl_wire_tensor *ex = malloc((e->K ? e->K : 1) * sizeof(*ex));
	if (!ex)
		return fl_error_set(FL_ENOMEM, "out of memory for the update");
	for (size_t i = 0; i < e->K; i++) {
		ex[i] = e->gt[i];
		ex[i].data = buf + e->goff[i];
	}
	int err = fl_wire_rx_new(ex, e->K, c->dtype, &c->rx);
	free(ex);
	return err;
}

int srv_eng_upload_begin(struct srv_engine *e, struct srv_conn *c)
{
	struct srv_uploads *u = &e->up;
	if (c->discarding) { /* read into the shared scratch buffer, no slot */
		if (!u->scratch)
			u->scratch = malloc((e->nglobal ? e->nglobal : 1) * sizeof(float));
		return u->scratch ? rx_open(e, c, u->scratch)
				  : fl_error_set(FL_ENOMEM, "out of memory for the update");
	}
	if (c->staging) {
		/* a slot handed over while parked */
	} else if (!u->nslots) {
		c->staging = malloc((e->nglobal ? e->nglobal : 1) * sizeof(float));
		if (!c->staging)
			return fl_error_set(FL_ENOMEM, "out of memory for the update");
	} else if (u->nfree) {
		uint32_t idx = u->free_idx[--u->nfree];
		u->in_use++;
		c->slot = (int32_t)idx;
		c->staging = slot_buffer(e, idx);
	} else {
		int err = park_push(u, c->id);
		if (err != FL_OK)
			return err;
		c->parked = 1;
		u->parks++;
		u->frame_parked = 1;
		srv_eng_lru_unlink(e, c);
		e->io.pause(e->io.ctx, c->id);
		return SRV_UPLOAD_PARKED;
	}
	if (u->in_use > u->peak)
		u->peak = u->in_use;
	if (!c->staging) /* a pool buffer that could not be allocated */
		return fl_error_set(FL_ENOMEM, "out of memory for an upload slot");
	return rx_open(e, c, c->staging);
}

void srv_eng_discard_done(struct srv_engine *e, struct srv_conn *c)
{
	fl_wire_rx_free(c->rx);
	c->rx = NULL;
	c->uploading = 0;
	c->discarding = 0;
	c->state = SRV_CONN_READY;
	e->up.discarded++;
}

void srv_eng_upload_free(struct srv_engine *e, struct srv_conn *c)
{
	fl_wire_rx_free(c->rx);
	c->rx = NULL;
	if (c->slot >= 0) {
		uint32_t idx = (uint32_t)c->slot;
		c->slot = -1;
		c->staging = NULL;
		slot_release(e, idx);
	} else {
		free(c->staging);
		c->staging = NULL;
	}
	c->uploading = 0;
}

void srv_eng_park_clear(struct srv_engine *e)
{
	e->up.park_n = 0;
	e->up.park_head = 0;
}

uint32_t srv_engine_upload_slots_for(uint64_t budget_bytes, size_t nglobal)
{
	if ((uint64_t)nglobal > UINT64_MAX / sizeof(float))
		return 1;
	uint64_t update = (uint64_t)nglobal * sizeof(float);
	if (!update || budget_bytes / update >= SRV_UPLOAD_SLOTS_DEFAULT)
		return SRV_UPLOAD_SLOTS_DEFAULT;
	uint64_t n = budget_bytes / update;
	return n ? (uint32_t)n : 1;
}
