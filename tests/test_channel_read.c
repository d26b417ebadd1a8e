/* test_channel_read.c - the secure channel's input side (channel_read.c)
 * with both record layers: records of awkward sizes (empty, 1 byte, around
 * the 16 KiB a channel keeps, over 1 MiB) arrive intact and one delivery
 * per record, whether fed whole (opened from the caller's bytes), in pieces
 * that split headers and bodies (reassembled and opened in place) or all in
 * one call; a large record borrows the thread's spare buffer only while it
 * is read, a second channel on the thread reuses it, a deliver callback may
 * feed another channel, a thread that used the channel ends without a
 * leak, a record's header alone takes no buffer, a destructor of an ending
 * thread may feed and free a channel after the spare is gone, and a
 * corrupted large record fails without delivering anything. */
#include "channel_impl.h" /* small_cap, big: the input buffers */
#include "chanpair.h"
#include "errors.h"
#include "testutil.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BIG ((1u << 20) + 3)

static const size_t sizes[] = {0, 1, 16, 17, 4095, 16383, 16384, 16385, 65543, 1u << 20, BIG};
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

/* What a receiver got: the bytes and the length of every delivery. */
struct sink {
	uint8_t *data;
	size_t len, cap;
	size_t calls, call_len[64];
};

static int sink_put(void *ctx, const uint8_t *p, size_t n)
{
	struct sink *s = ctx;
	if (s->len + n > s->cap)
		return fl_error_set(FL_ERANGE, "test sink full");
	memcpy(s->data + s->len, p, n);
	s->len += n;
	if (s->calls < 64)
		s->call_len[s->calls] = n;
	s->calls++;
	return 0;
}

static void sink_init(struct sink *s, size_t cap)
{
	memset(s, 0, sizeof(*s));
	s->data = malloc(cap);
	s->cap = cap;
}

static uint8_t *pattern(size_t n, unsigned seed)
{
	uint8_t *p = malloc(n ? n : 1);
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)((i + seed) * 2654435761u >> 13);
	return p;
}

/* Seals every size in turn on c: the records back to back in *wire. */
static size_t seal_all(struct fl_channel *c, const uint8_t *src, size_t nsizes, uint8_t **wire)
{
	size_t total = 0;
	for (size_t i = 0; i < nsizes; i++)
		total += 4 + sizes[i] + FL_CHANNEL_RECORD_OVERHEAD;
	*wire = malloc(total);
	size_t off = 0;
	for (size_t i = 0; i < nsizes; i++) {
		struct fl_buf *rec = NULL;
		FL_CHECK(fl_channel_seal(c, src, sizes[i], &rec) == FL_OK && rec);
		if (!rec)
			break;
		memcpy(*wire + off, rec->data, rec->len);
		off += rec->len;
		fl_buf_unref(rec);
	}
	FL_CHECK(off == total);
	return total;
}

/* Every size sealed and fed in pieces of `step` bytes (0: all at once). */
static void check_feed(int disable_aes, size_t step, size_t nsizes)
{
	struct fl_channel *c = NULL, *s = NULL;
	fl_test_chan_pair(&c, &s, disable_aes);
	uint8_t *src = pattern(BIG, 7), *wire = NULL;
	size_t total = seal_all(c, src, nsizes, &wire);
	struct sink got;
	sink_init(&got, nsizes * (size_t)BIG);
	struct fl_buf *r = NULL;
	for (size_t off = 0; off < total;) {
		size_t k = step && step < total - off ? step : total - off;
		FL_CHECK(fl_channel_recv(s, wire + off, k, sink_put, &got, &r) == FL_OK && !r);
		off += k;
	}
	size_t want = 0, calls = 0;
	for (size_t i = 0; i < nsizes; i++) {
		if (!sizes[i])
			continue; /* an empty record delivers nothing */
		FL_CHECK_MSG(calls < got.calls && got.call_len[calls] == sizes[i],
			     "step %zu: record %zu delivered as %zu bytes", step, i,
			     calls < got.calls ? got.call_len[calls] : 0);
		FL_CHECK(want + sizes[i] <= got.len && memcmp(got.data + want, src, sizes[i]) == 0);
		want += sizes[i];
		calls++;
	}
	FL_CHECK(got.len == want && got.calls == calls);
	FL_CHECK(!s->big && s->small_cap <= 16384); /* nothing large held when idle */
	free(got.data);
	free(wire);
	free(src);
	fl_channel_free(c);
	fl_channel_free(s);
}

static void test_sizes_and_pieces(void)
{
	static const size_t steps[] = {0, 3, 4, 5, 4096, 16405, 65536, 262144};
	for (int ss = 0; ss < 2; ss++) {
		check_feed(ss, 1, 8); /* one byte at a time: the sizes up to 16384 */
		for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++)
			check_feed(ss, steps[i], NSIZES);
	}
}

/* Feeds rec to s in two halves: the first half leaves the record pending. */
static void feed_halves(struct fl_channel *s, const struct fl_buf *rec, struct sink *got,
			uint8_t **pending)
{
	struct fl_buf *r = NULL;
	FL_CHECK(fl_channel_recv(s, rec->data, rec->len / 2, sink_put, got, &r) == FL_OK);
	*pending = s->big;
	FL_CHECK(s->big != NULL && fl_ch_spare_debug(NULL) == NULL); /* lent out */
	FL_CHECK(fl_channel_recv(s, rec->data + rec->len / 2, rec->len - rec->len / 2, sink_put,
				 got, &r) == FL_OK);
	FL_CHECK(s->big == NULL);
}

/* A second channel on the thread reads its large record into the buffer the
 * first one handed back. */
static void test_spare_reused(void)
{
	struct fl_channel *c1, *s1, *c2, *s2;
	fl_test_chan_pair(&c1, &s1, 0);
	fl_test_chan_pair(&c2, &s2, 0);
	uint8_t *src = pattern(BIG, 1);
	struct fl_buf *r1 = NULL, *r2 = NULL;
	FL_CHECK(fl_channel_seal(c1, src, BIG, &r1) == FL_OK);
	FL_CHECK(fl_channel_seal(c2, src, BIG, &r2) == FL_OK);
	struct sink got;
	sink_init(&got, 2 * (size_t)BIG);
	uint8_t *first = NULL, *second = NULL;
	feed_halves(s1, r1, &got, &first);
	size_t cap = 0;
	FL_CHECK(first != NULL && fl_ch_spare_debug(&cap) == first && cap >= BIG);
	feed_halves(s2, r2, &got, &second);
	FL_CHECK(first == second && fl_ch_spare_debug(NULL) == first);
	FL_CHECK(got.len == 2 * (size_t)BIG && memcmp(got.data, src, BIG) == 0 &&
		 memcmp(got.data + BIG, src, BIG) == 0);
	fl_buf_unref(r1);
	fl_buf_unref(r2);
	free(got.data);
	free(src);
	fl_channel_free(c1);
	fl_channel_free(s1);
	fl_channel_free(c2);
	fl_channel_free(s2);
}

/* A deliver callback that feeds a large record to another channel while
 * its own large record is being delivered. */
struct nested {
	struct fl_channel *inner;
	struct fl_buf *rec;
	struct sink got;
};

static int feed_inner(void *ctx, const uint8_t *p, size_t n)
{
	struct nested *x = ctx;
	struct fl_buf *r = NULL;
	FL_CHECK(fl_channel_recv(x->inner, x->rec->data, x->rec->len, sink_put, &x->got, &r) ==
		 FL_OK);
	return sink_put(&x->got, p, n);
}

static void test_nested_feed(void)
{
	struct fl_channel *c1, *s1, *c2, *s2;
	fl_test_chan_pair(&c1, &s1, 0);
	fl_test_chan_pair(&c2, &s2, 1);
	uint8_t *a = pattern(BIG, 3), *b = pattern(BIG, 4);
	struct fl_buf *ra = NULL, *r = NULL;
	struct nested x = {.inner = s2};
	sink_init(&x.got, 2 * (size_t)BIG);
	FL_CHECK(fl_channel_seal(c1, a, BIG, &ra) == FL_OK);
	FL_CHECK(fl_channel_seal(c2, b, BIG, &x.rec) == FL_OK);
	FL_CHECK(fl_channel_recv(s1, ra->data, ra->len - 10, feed_inner, &x, &r) == FL_OK);
	FL_CHECK(fl_channel_recv(s1, ra->data + ra->len - 10, 10, feed_inner, &x, &r) == FL_OK);
	FL_CHECK(x.got.len == 2 * (size_t)BIG && memcmp(x.got.data, b, BIG) == 0 &&
		 memcmp(x.got.data + BIG, a, BIG) == 0);
	FL_CHECK(!s1->big && !s2->big);
	fl_buf_unref(ra);
	fl_buf_unref(x.rec);
	free(x.got.data);
	free(a);
	free(b);
	fl_channel_free(c1);
	fl_channel_free(s1);
	fl_channel_free(c2);
	fl_channel_free(s2);
}

static void *thread_main(void *arg)
{
	(void)arg;
	check_feed(0, 65536, NSIZES);
	return NULL;
}

/* The thread's spare buffer goes with the thread (ASan's leak check). */
static void test_thread_exit(void)
{
	pthread_t th;
	FL_CHECK(pthread_create(&th, NULL, thread_main, NULL) == 0);
	pthread_join(th, NULL);
}

/* A large record's header alone takes no buffer (nor the spare); its
 * first body byte does. */
static void test_header_only(void)
{
	struct fl_channel *c, *s;
	fl_test_chan_pair(&c, &s, 0);
	uint8_t *src = pattern(BIG, 6);
	struct fl_buf *rec = NULL, *r = NULL;
	FL_CHECK(fl_channel_seal(c, src, BIG, &rec) == FL_OK);
	struct sink got;
	sink_init(&got, BIG);
	const uint8_t *sp = fl_ch_spare_debug(NULL);
	FL_CHECK(sp != NULL); /* left by the tests before */
	FL_CHECK(fl_channel_recv(s, rec->data, 4, sink_put, &got, &r) == FL_OK);
	FL_CHECK(!s->big && fl_ch_spare_debug(NULL) == sp);
	FL_CHECK(fl_channel_recv(s, rec->data + 4, 1, sink_put, &got, &r) == FL_OK);
	FL_CHECK(s->big == sp && fl_ch_spare_debug(NULL) == NULL);
	FL_CHECK(fl_channel_recv(s, rec->data + 5, rec->len - 5, sink_put, &got, &r) == FL_OK);
	FL_CHECK(!s->big && fl_ch_spare_debug(NULL) == sp);
	FL_CHECK(got.len == BIG && memcmp(got.data, src, BIG) == 0);
	fl_buf_unref(rec);
	free(got.data);
	free(src);
	fl_channel_free(c);
	fl_channel_free(s);
}

/* Channels used by a thread-specific destructor that runs after the
 * spare's (its second round): a large record read whole, then one read in
 * part and freed mid-record. */
struct late {
	struct fl_channel *c, *s;
	struct fl_buf *rec[2];
	uint8_t *src;
	struct sink got;
	int round;
	int ok;
};

static pthread_key_t late_key;

static void late_dtor(void *arg)
{
	struct late *x = arg;
	if (++x->round == 1) { /* the spare's destructor runs in this round */
		pthread_setspecific(late_key, x);
		return;
	}
	struct fl_buf *r = NULL;
	x->ok = fl_ch_spare_debug(NULL) == NULL &&
		fl_channel_recv(x->s, x->rec[0]->data, x->rec[0]->len, sink_put, &x->got, &r) ==
			FL_OK &&
		x->got.len == BIG && memcmp(x->got.data, x->src, BIG) == 0 &&
		fl_channel_recv(x->s, x->rec[1]->data, x->rec[1]->len / 2, sink_put, &x->got, &r) ==
			FL_OK &&
		x->s->big != NULL;
	fl_channel_free(x->s); /* mid-record */
	fl_channel_free(x->c);
}

static void *late_main(void *arg)
{
	struct late *x = arg;
	check_feed(0, 65536, NSIZES); /* the thread has a spare */
	FL_CHECK(fl_ch_spare_debug(NULL) != NULL);
	fl_test_chan_pair(&x->c, &x->s, 0);
	for (int i = 0; i < 2; i++)
		FL_CHECK(fl_channel_seal(x->c, x->src, BIG, &x->rec[i]) == FL_OK);
	pthread_setspecific(late_key, x);
	return NULL;
}

/* A channel fed and freed by a destructor of an ending thread after the
 * spare was freed does not touch the freed spare (ASan: no use after free,
 * no leak). */
static void test_late_destructor(void)
{
	struct late x = {.src = pattern(BIG, 8)};
	sink_init(&x.got, BIG);
	FL_CHECK(pthread_key_create(&late_key, late_dtor) == 0);
	pthread_t th;
	FL_CHECK(pthread_create(&th, NULL, late_main, &x) == 0);
	pthread_join(th, NULL);
	FL_CHECK(x.round == 2 && x.ok);
	pthread_key_delete(late_key);
	fl_buf_unref(x.rec[0]);
	fl_buf_unref(x.rec[1]);
	free(x.got.data);
	free(x.src);
}

/* A flipped bit in a large record read in pieces (opened in place). */
static void test_corrupt_large(void)
{
	for (int ss = 0; ss < 2; ss++) {
		struct fl_channel *c, *s;
		fl_test_chan_pair(&c, &s, ss);
		uint8_t *src = pattern(BIG, 5);
		struct fl_buf *rec = NULL, *r = NULL;
		FL_CHECK(fl_channel_seal(c, src, BIG, &rec) == FL_OK);
		rec->data[4 + BIG / 2] ^= 0x10;
		struct sink got;
		sink_init(&got, BIG);
		FL_CHECK(fl_channel_recv(s, rec->data, 65536, sink_put, &got, &r) == FL_OK);
		FL_CHECK(fl_channel_recv(s, rec->data + 65536, rec->len - 65536, sink_put, &got,
					 &r) == FL_EFORMAT);
		FL_CHECK(strstr(fl_error_msg(), "authentication failed") != NULL);
		FL_CHECK(got.len == 0 && !s->big);
		FL_CHECK(fl_channel_recv(s, rec->data, 4, sink_put, &got, &r) == FL_EFORMAT);
		fl_buf_unref(rec);
		free(got.data);
		free(src);
		fl_channel_free(c);
		fl_channel_free(s);
	}
}

int main(void)
{
	FL_RUN(test_sizes_and_pieces);
	FL_RUN(test_spare_reused);
	FL_RUN(test_nested_feed);
	FL_RUN(test_thread_exit);
	FL_RUN(test_header_only);
	FL_RUN(test_late_destructor);
	FL_RUN(test_corrupt_large);
	fl_test_chan_pair_end();
	return fl_test_main_end();
}
