/* test_allowlist_index.c - the allow-list's hash indexes (allowlist.c)
 * against a plain reference: a linear scan over the file's lines where the
 * first line of a key wins. Seeded random lists (duplicate keys, shared,
 * empty and client-id names), keys added after parsing, srv_allowlist_reload
 * (new list in force, a bad file leaves the old one) and the id rule of the
 * first frame through srv_access. Does not test the file format's errors
 * (test_channel_keys) or the network. */
#include "access.h"
#include "allowlist.h"
#include "errors.h"
#include "testutil.h"
#include "wire.h"

#include <sodium.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAXK 3000

/* The reference: the lines as written (key, name), in order. */
struct ref {
	uint8_t pk[MAXK][FL_PUBKEY_BYTES];
	char name[MAXK][32];
	size_t n;
};

static uint64_t mix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* A valid Ed25519 public key from the seed stream. */
static void seeded_key(uint64_t *s, uint8_t pk[FL_PUBKEY_BYTES])
{
	unsigned char seed[crypto_sign_SEEDBYTES], sk[crypto_sign_SECRETKEYBYTES];
	for (size_t i = 0; i < sizeof(seed); i += 8) {
		uint64_t v = mix(s);
		memcpy(seed + i, &v, 8);
	}
	crypto_sign_seed_keypair(pk, sk, seed);
}

/* The first line's name for pk, or NULL. */
static const char *ref_name(const struct ref *r, const uint8_t *pk)
{
	for (size_t i = 0; i < r->n; i++)
		if (memcmp(r->pk[i], pk, FL_PUBKEY_BYTES) == 0)
			return r->name[i];
	return NULL;
}

/* 1 when the first line of some key carries name. */
static int ref_has_name(const struct ref *r, const char *name)
{
	for (size_t i = 0; i < r->n; i++)
		if (strcmp(r->name[i], name) == 0 && ref_name(r, r->pk[i]) == r->name[i])
			return 1;
	return 0;
}

static size_t ref_count(const struct ref *r)
{
	size_t n = 0;
	for (size_t i = 0; i < r->n; i++)
		n += ref_name(r, r->pk[i]) == r->name[i];
	return n;
}

/* n lines: about 1 in 8 repeats an earlier key under another name, names
 * are client ids, shared ids, free text or empty. */
static char *make_list(struct ref *r, size_t n, uint64_t *s)
{
	char *text = malloc(n * (FL_PUBKEY_STRING_BYTES + 32) + 1);
	size_t len = 0;
	if (!text)
		abort();
	text[0] = '\0';
	r->n = 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t v = mix(s);
		if (i > 0 && v % 8 == 0)
			memcpy(r->pk[i], r->pk[mix(s) % i], FL_PUBKEY_BYTES);
		else
			seeded_key(s, r->pk[i]);
		switch ((v >> 8) % 4) {
		case 0: snprintf(r->name[i], sizeof(r->name[i]), "site-%zu", i); break;
		case 1:
			snprintf(r->name[i], sizeof(r->name[i]), "shared-%u",
				 (unsigned)(v >> 16) % 5);
			break;
		case 2: snprintf(r->name[i], sizeof(r->name[i]), "note %zu", i); break;
		default: r->name[i][0] = '\0';
		}
		char key[FL_PUBKEY_STRING_BYTES];
		fl_pubkey_format(r->pk[i], key);
		len += (size_t)sprintf(text + len, "%s %s\n", key, r->name[i]);
		r->n++;
	}
	return text;
}

/* Every listed key, some unlisted ones and every name agree with the
 * reference. */
static void check_same(const struct srv_allowlist *al, const struct ref *r, uint64_t *s)
{
	FL_CHECK(srv_allowlist_count(al) == ref_count(r));
	size_t bad = 0;
	for (size_t i = 0; i < r->n; i++) {
		const char *got = srv_allowlist_name(al, r->pk[i]);
		bad += !got || strcmp(got, ref_name(r, r->pk[i])) != 0;
		bad += !srv_allowlist_contains(al, r->pk[i]);
		bad += srv_allowlist_has_name(al, r->name[i]) != ref_has_name(r, r->name[i]);
	}
	for (int i = 0; i < 200; i++) {
		uint8_t pk[FL_PUBKEY_BYTES];
		seeded_key(s, pk);
		bad += srv_allowlist_contains(al, pk) != (ref_name(r, pk) != NULL);
		pk[(size_t)i % FL_PUBKEY_BYTES] ^= 1; /* one bit off a key */
		bad += srv_allowlist_name(al, pk) != NULL && !ref_name(r, pk);
		char nm[32];
		snprintf(nm, sizeof(nm), "site-%d", i * 17);
		bad += srv_allowlist_has_name(al, nm) != ref_has_name(r, nm);
	}
	bad += srv_allowlist_has_name(al, "absent") != 0;
	FL_CHECK_MSG(bad == 0, "%zu lookups differ from the reference scan", bad);
}

static struct ref R;

static void test_random_lists(void)
{
	static const size_t sizes[] = {0, 1, 2, 7, 64, 500, 2500};
	uint64_t s = 11;
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		char *text = make_list(&R, sizes[k], &s);
		struct srv_allowlist *al = NULL;
		FL_CHECK(srv_allowlist_parse(text, strlen(text), "rand", &al) == FL_OK);
		free(text);
		if (!al)
			return;
		check_same(al, &R, &s);
		/* keys added later (enrolment), through the growth of the index */
		for (int j = 0; j < 40 && R.n < MAXK; j++) {
			seeded_key(&s, R.pk[R.n]);
			snprintf(R.name[R.n], sizeof(R.name[R.n]), "added-%d", j);
			FL_CHECK(srv_allowlist_add(al, R.pk[R.n], R.name[R.n]) == FL_OK);
			R.n++;
		}
		if (R.n) /* a listed key again: no-op, the first name stays */
			FL_CHECK(srv_allowlist_add(al, R.pk[0], "other") == FL_OK);
		check_same(al, &R, &s);
		srv_allowlist_free(al);
	}
}

static void write_list(const char *path, const char *text)
{
	fl_test_write_file(path, text, strlen(text));
	FL_CHECK(chmod(path, 0644) == 0);
}

static void test_reload(void)
{
	const char *dir = fl_test_tmpdir("allowlist_index");
	char path[1024];
	snprintf(path, sizeof(path), "%s/allow.txt", dir);
	uint64_t s = 5;
	char *text = make_list(&R, 300, &s);
	write_list(path, text);
	free(text);
	struct srv_allowlist *al = NULL;
	FL_CHECK(srv_allowlist_load(path, &al) == FL_OK);
	if (!al)
		return;
	check_same(al, &R, &s);
	/* a new file: the new set, its own index */
	text = make_list(&R, 200, &s);
	write_list(path, text);
	free(text);
	FL_CHECK(srv_allowlist_reload(path, &al) == FL_OK);
	check_same(al, &R, &s);
	/* a bad line: refused, the previous set stays whole */
	write_list(path, "fl1:tooshort x\n");
	const struct srv_allowlist *before = al;
	FL_CHECK(srv_allowlist_reload(path, &al) == FL_EFORMAT && al == before);
	check_same(al, &R, &s);
	srv_allowlist_free(al);
}

/* The first frame's Hello of key pk saying client_id. */
static int first_frame(struct srv_access *a, const uint8_t *pk, const char *client_id)
{
	Fedloha__V1__Hello h = FEDLOHA__V1__HELLO__INIT;
	h.client_id = (char *)client_id;
	fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT;
	env.body_case = FEDLOHA__V1__ENVELOPE__BODY_HELLO;
	env.hello = &h;
	struct fl_buf *b = NULL;
	if (fl_wire_encode(&env, &b) != FL_OK)
		return FL_EIO;
	int rc = srv_access_check_first_frame(a, pk, b->data + 4, b->len - 4, 1u << 20);
	fl_buf_unref(b);
	return rc;
}

/* The id rule on a large list, for every line, against the reference: a
 * client-id name binds its key; another key may not take a bound id. */
static void test_ids(void)
{
	const char *dir = fl_test_tmpdir("allowlist_ids");
	char key[1024], path[1024];
	snprintf(key, sizeof(key), "%s/server.key", dir);
	snprintf(path, sizeof(path), "%s/allow.txt", dir);
	char pub[FL_PUBKEY_STRING_BYTES];
	FL_CHECK(srv_access_keygen(key, 0, pub) == FL_OK);
	uint64_t s = 9;
	char *text = make_list(&R, 1000, &s);
	write_list(path, text);
	free(text);
	struct srv_access_config cfg = {0, key, path, 0, NULL};
	struct srv_access *a = NULL;
	FL_CHECK(srv_access_new(&cfg, &a) == FL_OK);
	size_t bad = 0;
	for (size_t i = 0; a && i < R.n; i++) {
		const char *own = ref_name(&R, R.pk[i]);
		int binds = fl_wire_client_id_valid(own);
		char other[32];
		snprintf(other, sizeof(other), "free-%zu", i);
		/* its own id, the id of a line i names, a fresh id */
		bad += first_frame(a, R.pk[i], binds ? own : other) != FL_OK;
		const char *claim = R.name[(i * 7 + 3) % R.n];
		int want_ok = binds ? strcmp(claim, own) == 0
				    : !(fl_wire_client_id_valid(claim) && ref_has_name(&R, claim));
		if (fl_wire_client_id_valid(claim))
			bad += (first_frame(a, R.pk[i], claim) == FL_OK) != want_ok;
	}
	uint8_t pk[FL_PUBKEY_BYTES];
	seeded_key(&s, pk);
	if (a)
		bad += first_frame(a, pk, "site-1") != FL_EAUTH;
	FL_CHECK_MSG(bad == 0, "%zu first-frame verdicts differ from the reference", bad);
	srv_access_free(a);
}

int main(void)
{
	if (sodium_init() < 0)
		return 1;
	FL_RUN(test_random_lists);
	FL_RUN(test_reload);
	FL_RUN(test_ids);
	return fl_test_main_end();
}
