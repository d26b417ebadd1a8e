/* test_access.c - the coordinator's identity rule for the first frame: a key
 * bound to a client id must use it, and an unbound key (enrolled, or a
 * free-text name) may not take an id bound to another key. */
#include "access.h"
#include "errors.h"
#include "identity.h"
#include "token.h"
#include "testutil.h"
#include "wire.h"
#include "wireutil.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static struct fl_buf *hello(const char *id)
{
	Fedloha__V1__Hello h = FEDLOHA__V1__HELLO__INIT;
	h.protocol_version = FL_WIRE_PROTOCOL_VERSION;
	h.client_id = (char *)id;
	fl_envelope env = fl_test_envelope(&h.base);
	struct fl_buf *b = NULL;
	FL_CHECK(fl_wire_encode(&env, &b) == FL_OK);
	return b;
}

static int check(struct srv_access *a, const uint8_t *pk, const char *id)
{
	struct fl_buf *b = hello(id);
	int rc = srv_access_check_first_frame(a, pk, b->data + 4, b->len - 4, 1u << 20);
	fl_buf_unref(b);
	return rc;
}

static void test_identity_binding(void)
{
	const char *dir = fl_test_tmpdir("access");
	char key[512], allow[512], pa[FL_PUBKEY_STRING_BYTES], pb[FL_PUBKEY_STRING_BYTES];
	snprintf(key, sizeof(key), "%s/server.key", dir);
	snprintf(allow, sizeof(allow), "%s/allow.txt", dir);
	char dummy[FL_PUBKEY_STRING_BYTES];
	FL_CHECK(srv_access_keygen(key, 0, dummy) == FL_OK);
	struct fl_identity *a = NULL, *b = NULL, *c = NULL;
	FL_CHECK(fl_identity_generate(&a) == FL_OK);
	FL_CHECK(fl_identity_generate(&b) == FL_OK);
	FL_CHECK(fl_identity_generate(&c) == FL_OK);
	if (!a || !b || !c)
		return;
	fl_identity_public_string(a, pa);
	fl_identity_public_string(b, pb);
	FILE *f = fopen(allow, "w");
	FL_CHECK(f != NULL);
	if (!f)
		return;
	fprintf(f, "%s alice\n%s # enrolled 2026-11-28T12:00:00Z\n", pa, pb);
	fclose(f);
	struct srv_access_config cfg = {0, key, allow, 0, NULL};
	struct srv_access *acc = NULL;
	FL_CHECK(srv_access_new(&cfg, &acc) == FL_OK);
	if (acc) {
		FL_CHECK(check(acc, fl_identity_pk(a), "alice") == FL_OK);
		FL_CHECK(check(acc, fl_identity_pk(a), "bob") == FL_EAUTH);
		FL_CHECK(check(acc, fl_identity_pk(b), "bob") == FL_OK);
		/* the squatting case: the unbound key claims alice's id */
		FL_CHECK(check(acc, fl_identity_pk(b), "alice") == FL_EAUTH);
		FL_CHECK(strstr(fl_error_msg(), "belongs to another key") != NULL);
		/* fails closed: no Hello, no identity, no entry */
		const uint8_t junk[] = {0xff, 0xff, 0xff, 0x01};
		FL_CHECK(srv_access_check_first_frame(acc, fl_identity_pk(a), junk, sizeof(junk),
						      1u << 20) == FL_EAUTH);
		Fedloha__V1__Heartbeat hb = FEDLOHA__V1__HEARTBEAT__INIT;
		fl_envelope env = fl_test_envelope(&hb.base);
		struct fl_buf *fb = NULL;
		FL_CHECK(fl_wire_encode(&env, &fb) == FL_OK);
		if (fb) {
			FL_CHECK(srv_access_check_first_frame(acc, fl_identity_pk(a), fb->data + 4,
							      fb->len - 4, 1u << 20) == FL_EAUTH);
			FL_CHECK(strstr(fl_error_msg(), "not a Hello") != NULL);
			fl_buf_unref(fb);
		}
		FL_CHECK(check(acc, fl_identity_pk(c), "carol") == FL_EAUTH);
		FL_CHECK(strstr(fl_error_msg(), "not in the allow-list") != NULL);
		/* a reload (SIGHUP) of a file others could have changed: the
		 * old list stays in force and the error says why */
		fl_identity_public_string(c, pa);
		f = fopen(allow, "a");
		FL_CHECK(f != NULL);
		if (f) {
			fprintf(f, "%s carol\n", pa);
			fclose(f);
		}
		FL_CHECK(chmod(allow, 0666) == 0);
		FL_CHECK(srv_access_reload(acc) == FL_EINVAL && srv_access_count(acc) == 2);
		FL_CHECK_MSG(strstr(fl_error_msg(), "NOT reloaded") &&
				     strstr(fl_error_msg(), "writable by group/others (mode 666)"),
			     "%s", fl_error_msg());
		FL_CHECK(check(acc, fl_identity_pk(c), "carol") == FL_EAUTH);
		FL_CHECK(check(acc, fl_identity_pk(a), "alice") == FL_OK);
		FL_CHECK(chmod(allow, 0644) == 0);
		FL_CHECK(srv_access_reload(acc) == FL_OK && srv_access_count(acc) == 3);
		FL_CHECK(check(acc, fl_identity_pk(c), "carol") == FL_OK);
	}
	srv_access_free(acc);
	fl_identity_free(a);
	fl_identity_free(b);
	fl_identity_free(c);
}

/* An enrolment token is issued for a client id: the enrolled key is written
 * as "fl1:... ID" and may only say Hello as ID. */
static void test_enrolment_binds_id(void)
{
	const char *dir = fl_test_tmpdir("access-enrol");
	char key[512], allow[512], dummy[FL_PUBKEY_STRING_BYTES];
	snprintf(key, sizeof(key), "%s/server.key", dir);
	snprintf(allow, sizeof(allow), "%s/allow.txt", dir);
	FL_CHECK(srv_access_keygen(key, 0, dummy) == FL_OK);
	struct fl_identity *a = NULL, *b = NULL;
	FL_CHECK(fl_identity_generate(&a) == FL_OK && fl_identity_generate(&b) == FL_OK);
	char tdir[512];
	snprintf(tdir, sizeof(tdir), "%s/tokens", dir);
	struct srv_access_config cfg = {0, key, allow, 1, tdir};
	struct srv_access *acc = NULL;
	FL_CHECK(srv_access_new(&cfg, &acc) == FL_OK);
	if (!acc || !a || !b)
		return;
	char tok[FL_TOKEN_STRING_BYTES], tok2[FL_TOKEN_STRING_BYTES], reason[256] = "";
	uint8_t raw[FL_TOKEN_BYTES], raw2[FL_TOKEN_BYTES];
	const char *path = NULL;
	FL_CHECK(srv_access_enrol_issue(acc, 60000, "site-2", tok, &path) == FL_OK);
	/* the token is in tokens/site-2.token, mode 0600, read back by the client's loader */
	char tfile[600], fromfile[FL_TOKEN_STRING_BYTES] = "";
	snprintf(tfile, sizeof(tfile), "%s/site-2.token", tdir);
	FL_CHECK(path && strcmp(path, tfile) == 0);
	struct stat st;
	FL_CHECK(stat(tfile, &st) == 0 && (st.st_mode & 0777) == 0600);
	FL_CHECK(fl_token_load(tfile, fromfile) == FL_OK && strcmp(fromfile, tok) == 0);
	FL_CHECK(chmod(tfile, 0640) == 0 && fl_token_load(tfile, fromfile) == FL_EINVAL);
	FL_CHECK(strstr(fl_error_msg(), "chmod 600") != NULL);
	FL_CHECK(srv_access_enrol_issue(acc, 60000, "site-2", tok2, NULL) == FL_EINVAL);
	FL_CHECK(srv_access_enrol_issue(acc, 60000, "site-3", tok2, NULL) == FL_OK);
	FL_CHECK(fl_token_parse(tok, raw) == FL_OK && fl_token_parse(tok2, raw2) == FL_OK);
	FL_CHECK(srv_access_authorize(acc, fl_identity_pk(a), raw, reason, sizeof(reason)) ==
		 FL_OK);
	FL_CHECK(check(acc, fl_identity_pk(a), "site-2") == FL_OK);
	FL_CHECK(check(acc, fl_identity_pk(a), "site-9") == FL_EAUTH);
	FL_CHECK(stat(tfile, &st) != 0); /* used: its file is gone */
	/* an id bound meanwhile (the operator listed a key as site-3): the
	 * token for it admits no other key */
	FILE *f = fopen(allow, "a");
	FL_CHECK(f != NULL);
	if (f) {
		fprintf(f, "%s site-3\n", dummy);
		fclose(f);
	}
	FL_CHECK(srv_access_reload(acc) == FL_OK && srv_access_count(acc) == 2);
	FL_CHECK(srv_access_authorize(acc, fl_identity_pk(b), raw2, reason, sizeof(reason)) ==
		 FL_ENOTFOUND);
	FL_CHECK_MSG(strstr(reason, "already bound") != NULL, "%s", reason);
	FL_CHECK(srv_access_enrol_issue(acc, 60000, "site-2", tok, NULL) == FL_EINVAL);
	/* the file says the same after a reload */
	FL_CHECK(srv_access_reload(acc) == FL_OK && srv_access_count(acc) == 2);
	/* a bad line on disk: the old list stays, and the error says so */
	f = fopen(allow, "a");
	FL_CHECK(f != NULL);
	if (f) {
		fprintf(f, "fl1:not-a-key x\n");
		fclose(f);
	}
	FL_CHECK(srv_access_reload(acc) == FL_EFORMAT && srv_access_count(acc) == 2);
	FL_CHECK_MSG(strstr(fl_error_msg(), "NOT reloaded") &&
			     strstr(fl_error_msg(), "allow.txt:3:"),
		     "%s", fl_error_msg());
	FL_CHECK(check(acc, fl_identity_pk(a), "site-9") == FL_EAUTH);
	srv_access_free(acc);
	fl_identity_free(a);
	fl_identity_free(b);
}

/* A fresh test folder NAME with a coordinator key: fills key, allow (not
 * made) and tdir (DIR/SUB, not made); returns the folder. */
static const char *setup(const char *name, const char *sub, char key[512], char allow[512],
			 char tdir[512])
{
	const char *dir = fl_test_tmpdir(name);
	char dummy[FL_PUBKEY_STRING_BYTES];
	snprintf(key, 512, "%s/server.key", dir);
	snprintf(allow, 512, "%s/allow.txt", dir);
	snprintf(tdir, 512, "%s/%s", dir, sub);
	FL_CHECK(srv_access_keygen(key, 0, dummy) == FL_OK);
	return dir;
}

/* srv_access_new with enrolment and token folder tdir: its result, the
 * access state freed. */
static int open_with_dir(const char *key, const char *allow, const char *tdir)
{
	struct srv_access_config cfg = {0, key, allow, 1, tdir};
	struct srv_access *acc = NULL;
	int rc = srv_access_new(&cfg, &acc);
	srv_access_free(acc);
	return rc;
}

/* The token folder: made 0700 when missing; a group-writable folder or a
 * symbolic link to one is refused at startup with a one-line reason. */
static void test_token_dir_checked(void)
{
	char key[512], allow[512], tdir[512], link[600];
	snprintf(link, sizeof(link), "%s/link",
		 setup("access-tdir", "new/tokens", key, allow, tdir));
	struct stat st;
	FL_CHECK(open_with_dir(key, allow, tdir) == FL_OK);
	FL_CHECK(stat(tdir, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700);
	FL_CHECK(chmod(tdir, 0770) == 0);
	FL_CHECK(open_with_dir(key, allow, tdir) == FL_EINVAL);
	FL_CHECK_MSG(strstr(fl_error_msg(), "group- or world-writable (mode 770)") &&
			     strstr(fl_error_msg(), tdir) && !strchr(fl_error_msg(), '\n'),
		     "%s", fl_error_msg());
	FL_CHECK(chmod(tdir, 0755) == 0 && open_with_dir(key, allow, tdir) == FL_OK);
	FL_CHECK(symlink(tdir, link) == 0);
	FL_CHECK(open_with_dir(key, allow, link) == FL_EIO);
	FL_CHECK_MSG(strstr(fl_error_msg(), "a symbolic link or not a folder") != NULL, "%s",
		     fl_error_msg());
}

/* Token files left by an earlier start are removed when the folder is
 * opened; other files stay. */
static void test_stale_tokens_removed(void)
{
	char key[512], allow[512], tdir[512], p[600];
	setup("access-stale", "tokens", key, allow, tdir);
	FL_CHECK(mkdir(tdir, 0700) == 0);
	const char *names[] = {"site-1.token", "old.token", "notes.txt"};
	for (size_t i = 0; i < 3; i++) {
		snprintf(p, sizeof(p), "%s/%s", tdir, names[i]);
		FILE *f = fopen(p, "w");
		FL_CHECK(f != NULL);
		if (f)
			fclose(f);
	}
	snprintf(p, sizeof(p), "%s/dir.token", tdir);
	FL_CHECK(mkdir(p, 0700) == 0);
	struct srv_access_config cfg = {0, key, allow, 1, tdir};
	struct srv_access *acc = NULL;
	FL_CHECK(srv_access_new(&cfg, &acc) == FL_OK);
	if (!acc)
		return;
	FL_CHECK_MSG(srv_access_stale_removed(acc) == 2, "%zu", srv_access_stale_removed(acc));
	struct stat st;
	for (size_t i = 0; i < 3; i++) {
		snprintf(p, sizeof(p), "%s/%s", tdir, names[i]);
		FL_CHECK_MSG((stat(p, &st) == 0) == (i == 2), "%s", p);
	}
	snprintf(p, sizeof(p), "%s/dir.token", tdir);
	FL_CHECK(stat(p, &st) == 0); /* not a file: left alone */
	srv_access_free(acc);
}

/* Writes "KEY_A site-a" and "KEY_B # note" (and "KEY_C site-b" when
 * with_b) to allow. */
static void write_tier_list(const char *allow, const char *pa, const char *pb, const char *pc,
			    int with_b)
{
	FILE *f = fopen(allow, "w");
	FL_CHECK(f != NULL);
	if (!f)
		return;
	fprintf(f, "%s site-a\n%s # a free-text note\n", pa, pb);
	if (with_b)
		fprintf(f, "%s site-b\n", pc);
	fclose(f);
}

/* --tier-ids must name keys of the allow-list: an id no key is bound to
 * could be claimed by any listed key, whose partial sum would then count
 * for a subtree. A reload that unbinds one keeps the old list. */
static void test_tier_ids_bound(void)
{
	char key[512], allow[512], tdir[512];
	char pa[FL_PUBKEY_STRING_BYTES], pb[FL_PUBKEY_STRING_BYTES], pc[FL_PUBKEY_STRING_BYTES];
	setup("access_tiers", "tokens", key, allow, tdir);
	struct fl_identity *ids[3] = {NULL, NULL, NULL};
	for (int i = 0; i < 3; i++)
		FL_CHECK(fl_identity_generate(&ids[i]) == FL_OK);
	if (!ids[0] || !ids[1] || !ids[2])
		goto out;
	fl_identity_public_string(ids[0], pa);
	fl_identity_public_string(ids[1], pb);
	fl_identity_public_string(ids[2], pc);
	write_tier_list(allow, pa, pb, pc, 1);
	struct srv_access_config cfg = {0, key, allow, 0, NULL};
	struct srv_access *acc = NULL;
	FL_CHECK(srv_access_new(&cfg, &acc) == FL_OK);
	if (!acc)
		goto out;
	FL_CHECK(srv_access_set_tiers(acc, NULL) == FL_OK);
	FL_CHECK(srv_access_set_tiers(acc, "site-a") == FL_OK);
	FL_CHECK(srv_access_set_tiers(acc, "site-a,site-c") == FL_EAUTH);
	FL_CHECK_MSG(strstr(fl_error_msg(), "'site-c'") &&
			     strstr(fl_error_msg(), "not bound to a key"),
		     "%s", fl_error_msg());
	FL_CHECK(srv_access_set_tiers(acc, "site-a,site-b") == FL_OK);
	write_tier_list(allow, pa, pb, pc, 0); /* site-b's key removed */
	FL_CHECK(srv_access_reload(acc) == FL_EAUTH && srv_access_count(acc) == 3);
	FL_CHECK_MSG(strstr(fl_error_msg(), "NOT reloaded") && strstr(fl_error_msg(), "'site-b'"),
		     "%s", fl_error_msg());
	FL_CHECK(check(acc, fl_identity_pk(ids[2]), "site-b") == FL_OK); /* old list */
	FL_CHECK(srv_access_set_tiers(acc, "site-a") == FL_OK);
	FL_CHECK(srv_access_reload(acc) == FL_OK && srv_access_count(acc) == 2);
	srv_access_free(acc);
	struct srv_access_config icfg = {1, NULL, NULL, 0, NULL};
	FL_CHECK(srv_access_new(&icfg, &acc) == FL_OK && acc);
	if (acc) /* insecure: there is no allow-list to check against */
		FL_CHECK(srv_access_set_tiers(acc, "site-z") == FL_OK);
	srv_access_free(acc);
out:
	for (int i = 0; i < 3; i++)
		fl_identity_free(ids[i]);
}

int main(void)
{
	umask(022); /* the allow-lists written here must not be group-writable */
	FL_RUN(test_identity_binding);
	FL_RUN(test_enrolment_binds_id);
	FL_RUN(test_token_dir_checked);
	FL_RUN(test_stale_tokens_removed);
	FL_RUN(test_tier_ids_bound);
	return fl_test_main_end();
}
