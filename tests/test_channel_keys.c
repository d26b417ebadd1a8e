/* test_channel_keys.c - identities and key files (0600, refused when
 * group/other-readable, damage detected), the "fl1:" public-key form,
 * allow-list files (names, comments, duplicates, errors with line numbers,
 * reload keeps the old set on error, atomic append) and enrolment tokens
 * (issue, consume once, expiry, parse). */
#include "allowlist.h"
#include "enrol.h"
#include "errors.h"
#include "fsutil.h"
#include "identity.h"
#include "testutil.h"

#include <sodium.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char g_path[600];

static const char *tmp_file(const char *name)
{
	static const char *dir;
	if (!dir)
		dir = fl_test_tmpdir("chan-keys");
	snprintf(g_path, sizeof(g_path), "%s/%s", dir, name);
	return g_path;
}

static void write_text(const char *path, const char *text)
{
	FL_CHECK(fl_file_write_atomic(path, text, strlen(text), 0) == FL_OK);
}

static void test_identity_files(void)
{
	struct fl_identity *id = NULL, *back = NULL;
	FL_CHECK(fl_identity_generate(&id) == FL_OK);
	const char *path = tmp_file("server.key");
	FL_CHECK(fl_identity_save(id, path) == FL_OK);
	struct stat st;
	FL_CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
	char *text = NULL;
	size_t len = 0;
	FL_CHECK(fl_file_read_all(path, 1024, &text, &len) == FL_OK);
	FL_CHECK(strncmp(text, "fedloha-secret-key-v1 ", 22) == 0 && text[len - 1] == '\n');
	FL_CHECK(fl_identity_load(path, &back) == FL_OK);
	FL_CHECK(memcmp(fl_identity_pk(id), fl_identity_pk(back), 32) == 0);
	/* the loaded key signs like the original */
	uint8_t sig[FL_SIGNATURE_BYTES];
	fl_identity_sign(back, (const uint8_t *)"msg", 3, sig);
	FL_CHECK(crypto_sign_verify_detached(sig, (const uint8_t *)"msg", 3, fl_identity_pk(id)) ==
		 0);
	fl_identity_free(back);
	back = NULL;

	/* readable by group: refused with the fix in the message */
	FL_CHECK(chmod(path, 0640) == 0);
	FL_CHECK(fl_identity_load(path, &back) == FL_EINVAL && back == NULL);
	FL_CHECK(strstr(fl_error_msg(), "chmod 600") != NULL);
	FL_CHECK(chmod(path, 0604) == 0);
	FL_CHECK(fl_identity_load(path, &back) == FL_EINVAL);
	FL_CHECK(chmod(path, 0600) == 0);

	/* damage: public half not matching, bad base64, wrong tag, missing */
	char *bad = strdup(text);
	size_t b64 = 22;
	/* the last 32 bytes of the key are the public half: change a character
	 * well inside the last third of the base64 */
	bad[b64 + 70] = bad[b64 + 70] == 'A' ? 'B' : 'A';
	FILE *f = fopen(path, "w");
	fputs(bad, f);
	fclose(f);
	chmod(path, 0600);
	FL_CHECK(fl_identity_load(path, &back) == FL_EFORMAT);
	FL_CHECK(strstr(fl_error_msg(), "does not match") != NULL);
	strcpy(bad, "fedloha-secret-key-v1 !!!notbase64\n");
	f = fopen(path, "w");
	fputs(bad, f);
	fclose(f);
	FL_CHECK(fl_identity_load(path, &back) == FL_EFORMAT);
	f = fopen(path, "w");
	fputs("ssh-ed25519 AAAA\n", f);
	fclose(f);
	FL_CHECK(fl_identity_load(path, &back) == FL_EFORMAT);
	FL_CHECK(strstr(fl_error_msg(), "not a fedloha secret key file") != NULL);
	FL_CHECK(fl_identity_load(tmp_file("missing.key"), &back) == FL_ENOTFOUND);
	free(bad);
	free(text);
	fl_identity_free(id);
	fl_identity_free(NULL);
}

static void test_identity_from_seed(void)
{
	uint8_t seed[32], pk[32], sk[64];
	memset(seed, 7, sizeof(seed));
	crypto_sign_seed_keypair(pk, sk, seed);
	struct fl_identity *a = NULL, *b = NULL;
	FL_CHECK(fl_identity_from_seed(seed, &a) == FL_OK &&
		 fl_identity_from_seed(seed, &b) == FL_OK);
	FL_CHECK(memcmp(fl_identity_pk(a), pk, 32) == 0 && memcmp(fl_identity_pk(b), pk, 32) == 0);
	fl_identity_free(a);
	fl_identity_free(b);
}

static void test_pubkey_strings(void)
{
	struct fl_identity *id = NULL;
	FL_CHECK(fl_identity_generate(&id) == FL_OK);
	char s[FL_PUBKEY_STRING_BYTES];
	fl_identity_public_string(id, s);
	FL_CHECK(strlen(s) == 47 && strncmp(s, "fl1:", 4) == 0);
	FL_CHECK(strspn(s + 4,
			"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == 43);
	uint8_t pk[32];
	FL_CHECK(fl_pubkey_parse(s, pk) == FL_OK && memcmp(pk, fl_identity_pk(id), 32) == 0);

	char t[64];
	FL_CHECK(fl_pubkey_parse(s + 4, pk) == FL_EFORMAT);
	FL_CHECK(strstr(fl_error_msg(), "does not start with 'fl1:'") != NULL);
	snprintf(t, sizeof(t), "%s=", s);
	FL_CHECK(fl_pubkey_parse(t, pk) == FL_EFORMAT && strstr(fl_error_msg(), "characters"));
	snprintf(t, sizeof(t), "%.46s", s);
	FL_CHECK(fl_pubkey_parse(t, pk) == FL_EFORMAT);
	snprintf(t, sizeof(t), "%s", s);
	t[10] = '+';
	FL_CHECK(fl_pubkey_parse(t, pk) == FL_EFORMAT && strstr(fl_error_msg(), "base64url"));
	/* control bytes of a flag or a file are not echoed raw (fuzz_keys) */
	FL_CHECK(fl_pubkey_parse("# a\001b\nfl1:x\033[2J", pk) == FL_EFORMAT);
	FL_CHECK(!strchr(fl_error_msg(), '\n') && !strchr(fl_error_msg(), '\033') &&
		 strstr(fl_error_msg(), "'# a?b?fl1:x?[2J'"));
	FL_CHECK(fl_pubkey_parse("fl1:\n", pk) == FL_EFORMAT && !strchr(fl_error_msg(), '\n'));
	/* all-zero key: a small-order point */
	uint8_t zero[32] = {0};
	fl_pubkey_format(zero, t);
	FL_CHECK(fl_pubkey_parse(t, pk) == FL_EFORMAT && strstr(fl_error_msg(), "Ed25519"));

	/* --server-key: the string itself or a file holding it */
	const char *path = tmp_file("server.pub");
	char text[128];
	snprintf(text, sizeof(text), "# coordinator key\n\n  %s  prod\n", s);
	write_text(path, text);
	memset(pk, 0, sizeof(pk));
	FL_CHECK(fl_pubkey_parse_arg(path, pk) == FL_OK && memcmp(pk, fl_identity_pk(id), 32) == 0);
	FL_CHECK(fl_pubkey_parse_arg(s, pk) == FL_OK);
	FL_CHECK(fl_pubkey_parse_arg(tmp_file("nope.pub"), pk) == FL_ENOTFOUND);
	write_text(path, "# nothing\n");
	FL_CHECK(fl_pubkey_parse_arg(path, pk) == FL_EFORMAT);
	fl_identity_free(id);
}

static void test_allowlist_parse(void)
{
	uint8_t k[4][32];
	char ks[4][FL_PUBKEY_STRING_BYTES];
	for (int i = 0; i < 4; i++) {
		struct fl_identity *id = NULL;
		FL_CHECK(fl_identity_generate(&id) == FL_OK);
		memcpy(k[i], fl_identity_pk(id), 32);
		fl_pubkey_format(k[i], ks[i]);
		fl_identity_free(id);
	}
	char text[1024];
	snprintf(text, sizeof(text),
		 "# clients\n\n%s alice laptop\n   %s\tbob  \r\n%s\n%s carol-dup\n", ks[0], ks[1],
		 ks[2], ks[0]);
	struct srv_allowlist *al = NULL;
	FL_CHECK(srv_allowlist_parse(text, strlen(text), "allow", &al) == FL_OK);
	FL_CHECK(srv_allowlist_count(al) == 3);
	FL_CHECK(srv_allowlist_contains(al, k[0]) && srv_allowlist_contains(al, k[1]) &&
		 srv_allowlist_contains(al, k[2]) && !srv_allowlist_contains(al, k[3]));
	FL_CHECK(strcmp(srv_allowlist_name(al, k[0]), "alice laptop") == 0);
	FL_CHECK(strcmp(srv_allowlist_name(al, k[1]), "bob") == 0);
	FL_CHECK(strcmp(srv_allowlist_name(al, k[2]), "") == 0);
	FL_CHECK(srv_allowlist_name(al, k[3]) == NULL);
	FL_CHECK(srv_allowlist_add(al, k[3], "dave") == FL_OK && srv_allowlist_count(al) == 4);
	FL_CHECK(srv_allowlist_add(al, k[3], "again") == FL_OK && srv_allowlist_count(al) == 4);
	FL_CHECK(srv_allowlist_add(al, k[3], "bad\nname") == FL_EINVAL);
	srv_allowlist_free(al);

	/* errors name the file and line */
	snprintf(text, sizeof(text), "# ok\n%s\nfl1:tooshort x\n", ks[0]);
	al = NULL;
	FL_CHECK(srv_allowlist_parse(text, strlen(text), "allow.txt", &al) == FL_EFORMAT && !al);
	FL_CHECK_MSG(strncmp(fl_error_msg(), "allow.txt:3: ", 13) == 0, "%s", fl_error_msg());
	snprintf(text, sizeof(text), "ssh-rsa AAAA\n%s\n\nnot-a-key\n%s\n", ks[0], ks[1]);
	FL_CHECK(srv_allowlist_parse(text, strlen(text), "a", &al) == FL_EFORMAT);
	FL_CHECK_MSG(strncmp(fl_error_msg(), "a:1: ", 5) == 0 &&
			     strstr(fl_error_msg(), "(and 1 more bad lines)"),
		     "%s", fl_error_msg());
	const char nul[] = "# a\0b\n";
	FL_CHECK(srv_allowlist_parse(nul, sizeof(nul) - 1, "n", &al) == FL_EFORMAT);
	FL_CHECK(srv_allowlist_parse("", 0, "empty", &al) == FL_OK && srv_allowlist_count(al) == 0);
	srv_allowlist_free(al);
}

/* A FIFO where the allow-list or a key file should be is refused at once
 * (an open without O_NONBLOCK waited for a writer: the daemon hung). */
static void test_fifo_refused(void)
{
	const char *path = tmp_file("fifo");
	unlink(path);
	FL_CHECK(mkfifo(path, 0600) == 0);
	struct srv_allowlist *al = NULL;
	FL_CHECK(srv_allowlist_load(path, &al) == FL_EINVAL && !al);
	FL_CHECK_MSG(strstr(fl_error_msg(), "not a regular file"), "%s", fl_error_msg());
	struct fl_identity *id = NULL;
	FL_CHECK(fl_identity_load(path, &id) == FL_EINVAL && !id);
	unlink(path);
}

static void test_allowlist_reload_and_append(void)
{
	struct fl_identity *a = NULL, *b = NULL;
	FL_CHECK(fl_identity_generate(&a) == FL_OK && fl_identity_generate(&b) == FL_OK);
	char as[FL_PUBKEY_STRING_BYTES], bs[FL_PUBKEY_STRING_BYTES], text[256];
	fl_identity_public_string(a, as);
	fl_identity_public_string(b, bs);
	const char *path = tmp_file("allow.txt");
	snprintf(text, sizeof(text), "# team\n%s alice", as); /* no final newline */
	write_text(path, text);
	struct srv_allowlist *cur = NULL;
	FL_CHECK(srv_allowlist_load(path, &cur) == FL_OK && srv_allowlist_count(cur) == 1);
	struct srv_allowlist *before = cur;

	/* a bad file: error, the current set is untouched */
	snprintf(text, sizeof(text), "%s alice\n%s.bob\n", as, bs);
	write_text(path, text);
	FL_CHECK(srv_allowlist_reload(path, &cur) == FL_EFORMAT);
	FL_CHECK_MSG(strstr(fl_error_msg(), "allow.txt:2:") != NULL, "%s", fl_error_msg());
	FL_CHECK(cur == before && srv_allowlist_contains(cur, fl_identity_pk(a)));
	FL_CHECK(srv_allowlist_reload(tmp_file("gone.txt"), &cur) == FL_ENOTFOUND && cur == before);

	/* a good file: swapped in */
	snprintf(text, sizeof(text), "# team\n%s alice", as);
	write_text(path, text);
	FL_CHECK(srv_allowlist_append_file(path, fl_identity_pk(b), "bob") == FL_OK);
	char *got = NULL;
	size_t len = 0;
	FL_CHECK(fl_file_read_all(path, 4096, &got, &len) == FL_OK);
	char want[256];
	snprintf(want, sizeof(want), "# team\n%s alice\n%s bob\n", as, bs);
	FL_CHECK_MSG(strcmp(got, want) == 0, "%s", got);
	free(got);
	FL_CHECK(srv_allowlist_reload(path, &cur) == FL_OK);
	FL_CHECK(srv_allowlist_count(cur) == 2 && srv_allowlist_contains(cur, fl_identity_pk(b)));
	FL_CHECK(strcmp(srv_allowlist_name(cur, fl_identity_pk(b)), "bob") == 0);

	/* append creates a missing file; a private file stays private */
	const char *p2 = tmp_file("new-allow.txt");
	FL_CHECK(srv_allowlist_append_file(p2, fl_identity_pk(a), NULL) == FL_OK);
	FL_CHECK(chmod(p2, 0600) == 0);
	FL_CHECK(srv_allowlist_append_file(p2, fl_identity_pk(b), "b") == FL_OK);
	struct stat st;
	FL_CHECK(stat(p2, &st) == 0 && (st.st_mode & 0777) == 0600);
	struct srv_allowlist *al2 = NULL;
	FL_CHECK(srv_allowlist_load(p2, &al2) == FL_OK && srv_allowlist_count(al2) == 2);
	srv_allowlist_free(al2);
	srv_allowlist_free(cur);
	fl_identity_free(a);
	fl_identity_free(b);
}

static void test_tokens(void)
{
	struct srv_enrol *e = NULL;
	FL_CHECK(srv_enrol_new(&e) == FL_OK);
	char t1[FL_TOKEN_STRING_BYTES], t2[FL_TOKEN_STRING_BYTES];
	FL_CHECK(srv_enrol_issue(e, 100, 1000, "c1", t1, NULL) == FL_OK);
	FL_CHECK(srv_enrol_issue(e, 100, 50, "c2", t2, NULL) == FL_OK);
	FL_CHECK(srv_enrol_issue(e, 100, 0, "c2", t2, NULL) == FL_EINVAL);
	FL_CHECK(srv_enrol_issue(e, 100, 10, "not an id", t2, NULL) == FL_EINVAL);
	uint8_t r1[32], r2[32];
	FL_CHECK(fl_token_parse(t1, r1) == FL_OK && fl_token_parse(t2, r2) == FL_OK);
	FL_CHECK(srv_enrol_count(e, 100) == 2);
	FL_CHECK(srv_enrol_consume(e, r2, 150) == FL_ENOTFOUND); /* expired at 150 */
	FL_CHECK(srv_enrol_count(e, 150) == 1);
	uint8_t wrong[32];
	memcpy(wrong, r1, 32);
	wrong[31] ^= 0x80;
	FL_CHECK(srv_enrol_consume(e, wrong, 200) == FL_ENOTFOUND);
	FL_CHECK(srv_enrol_consume(e, r1, 200) == FL_OK);
	FL_CHECK(srv_enrol_consume(e, r1, 200) == FL_ENOTFOUND); /* one time only */
	FL_CHECK(srv_enrol_count(e, 200) == 0);
	FL_CHECK(fl_token_parse("abc", r1) == FL_EFORMAT);
	char bad[FL_TOKEN_STRING_BYTES];
	memcpy(bad, t1, sizeof(bad));
	bad[5] = '/';
	FL_CHECK(fl_token_parse(bad, r1) == FL_EFORMAT);
	/* the store is bounded */
	int err = FL_OK;
	for (int i = 0; i < SRV_ENROL_MAX_TOKENS + 1 && !err; i++) {
		char id[16];
		snprintf(id, sizeof(id), "c-%d", i);
		err = srv_enrol_issue(e, 300, 1000, id, t1, NULL);
	}
	FL_CHECK(err == FL_ERANGE && srv_enrol_count(e, 300) == SRV_ENROL_MAX_TOKENS);
	FL_CHECK(srv_enrol_count(e, 1300) == 0);
	srv_enrol_free(e);
	srv_enrol_free(NULL);
}

/* A token's file goes when the store is next touched after the token
 * expired (srv_enrol_count, srv_enrol_consume), the others' stay. */
static void test_token_file_expiry(void)
{
	struct srv_enrol *e = NULL;
	FL_CHECK(srv_enrol_new(&e) == FL_OK);
	if (!e)
		return;
	char dir[600], f1[700], f2[700], t[FL_TOKEN_STRING_BYTES];
	snprintf(dir, sizeof(dir), "%s", tmp_file("tokens"));
	snprintf(f1, sizeof(f1), "%s/c1.token", dir);
	snprintf(f2, sizeof(f2), "%s/c2.token", dir);
	FL_CHECK(srv_enrol_open_dir(e, dir, NULL) == FL_OK);
	const char *path = NULL;
	FL_CHECK(srv_enrol_issue(e, 100, 50, "c1", t, &path) == FL_OK);
	FL_CHECK(path && !strcmp(path, f1));
	FL_CHECK(srv_enrol_issue(e, 100, 1000, "c2", t, NULL) == FL_OK);
	struct stat st;
	FL_CHECK(srv_enrol_count(e, 149) == 2 && stat(f1, &st) == 0 && stat(f2, &st) == 0);
	FL_CHECK(srv_enrol_count(e, 150) == 1);
	FL_CHECK(stat(f1, &st) != 0 && errno == ENOENT); /* expired: its file is gone */
	FL_CHECK(stat(f2, &st) == 0);
	uint8_t wrong[FL_TOKEN_BYTES] = {0};
	FL_CHECK(srv_enrol_consume(e, wrong, 1100) == FL_ENOTFOUND);
	FL_CHECK(stat(f2, &st) != 0 && errno == ENOENT);
	srv_enrol_free(e);
}

/* A key with a small-order component: a valid key plus the point of order
 * 2. crypto_sign_verify_detached accepts some signatures for it, the
 * allow-list parser does not: enrolment must refuse it before writing. */
static void mixed_order_key(const struct fl_identity *id, uint8_t out[32])
{
	uint8_t t2[32];
	memset(t2, 0xff, sizeof(t2));
	t2[0] = 0xec;
	t2[31] = 0x7f; /* (0, -1) */
	FL_CHECK(crypto_core_ed25519_add(out, fl_identity_pk(id), t2) == 0);
}

static void test_small_order_component(void)
{
	struct fl_identity *a = NULL;
	FL_CHECK(fl_identity_generate(&a) == FL_OK);
	uint8_t bad[32];
	mixed_order_key(a, bad);
	FL_CHECK(fl_pubkey_check(fl_identity_pk(a)) == FL_OK);
	FL_CHECK(fl_pubkey_check(bad) == FL_EFORMAT);
	FL_CHECK(strstr(fl_error_msg(), "not a valid Ed25519 key") != NULL);
	char s[FL_PUBKEY_STRING_BYTES];
	uint8_t back[32];
	fl_pubkey_format(bad, s);
	FL_CHECK(fl_pubkey_parse(s, back) == FL_EFORMAT);

	/* enrolment with a valid token refuses the key and writes nothing */
	const char *path = tmp_file("allow-mixed.txt");
	write_text(path, "# list\n");
	struct srv_allowlist *al = NULL;
	struct srv_enrol *e = NULL;
	FL_CHECK(srv_allowlist_new(&al) == FL_OK && srv_enrol_new(&e) == FL_OK);
	char tok[FL_TOKEN_STRING_BYTES], reason[256] = "";
	uint8_t raw[32];
	FL_CHECK(srv_enrol_issue(e, 100, 1000, "m", tok, NULL) == FL_OK &&
		 fl_token_parse(tok, raw) == FL_OK);
	struct srv_auth auth = {.allow = &al, .allow_path = path, .enrol = e, .now_ms = 200};
	FL_CHECK(srv_auth_check(&auth, bad, raw, reason, sizeof(reason)) != FL_OK);
	FL_CHECK_MSG(strstr(reason, "not a valid Ed25519 key") != NULL, "%s", reason);
	FL_CHECK(srv_allowlist_count(al) == 0 && srv_enrol_count(e, 200) == 1);
	FL_CHECK(srv_allowlist_add(al, bad, "x") == FL_EFORMAT);
	FL_CHECK(srv_allowlist_append_file(path, bad, "x") == FL_EFORMAT);
	struct srv_allowlist *reread = NULL;
	FL_CHECK(srv_allowlist_load(path, &reread) == FL_OK);
	srv_allowlist_free(reread);
	srv_allowlist_free(al);
	srv_enrol_free(e);
	fl_identity_free(a);
}

/* The allow-list's owner and mode are checked on load. */
static void test_allowlist_mode(void)
{
	struct fl_identity *a = NULL, *b = NULL;
	FL_CHECK(fl_identity_generate(&a) == FL_OK && fl_identity_generate(&b) == FL_OK);
	char as[FL_PUBKEY_STRING_BYTES], text[256];
	fl_identity_public_string(a, as);
	const char *path = tmp_file("allow-mode.txt");
	snprintf(text, sizeof(text), "%s alice\n", as);
	write_text(path, text);
	struct srv_allowlist *al = NULL;
	FL_CHECK(chmod(path, 0664) == 0);
	FL_CHECK(srv_allowlist_load(path, &al) == FL_EINVAL && !al);
	FL_CHECK_MSG(strstr(fl_error_msg(), "writable by group/others") != NULL, "%s",
		     fl_error_msg());
	FL_CHECK(srv_allowlist_append_file(path, fl_identity_pk(b), "bob") == FL_EINVAL);
	FL_CHECK(chmod(path, 0644) == 0);
	FL_CHECK(srv_allowlist_load(path, &al) == FL_OK);
	srv_allowlist_free(al);
	fl_identity_free(a);
	fl_identity_free(b);
}

/* A lock held by another process (a scripted rewrite under flock(1))
 * refuses the enrolment at once, as busy, and leaves its token valid; once
 * the lock is gone the same token enrols. */
static void test_allowlist_lock_busy(void)
{
	struct fl_identity *a = NULL, *b = NULL;
	FL_CHECK(fl_identity_generate(&a) == FL_OK && fl_identity_generate(&b) == FL_OK);
	char as[FL_PUBKEY_STRING_BYTES], bs[FL_PUBKEY_STRING_BYTES], text[256];
	fl_identity_public_string(a, as);
	fl_identity_public_string(b, bs);
	const char *path = tmp_file("allow-lock.txt");
	snprintf(text, sizeof(text), "%s alice\n", as);
	write_text(path, text);
	char lp[700];
	snprintf(lp, sizeof(lp), "%s.lock", path);
	int lk = open(lp, O_RDWR | O_CREAT, 0600);
	FL_CHECK(lk >= 0 && flock(lk, LOCK_EX) == 0);
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) { /* the daemon; the inherited lock descriptor is not its own */
		close(lk);
		alarm(5); /* a rewrite that waits for the lock dies here */
		struct srv_enrol *e = NULL;
		char tok[FL_TOKEN_STRING_BYTES], reason[300] = "";
		uint8_t raw[FL_TOKEN_BYTES];
		if (srv_enrol_new(&e) || srv_enrol_issue(e, 1, 60000, "bob", tok, NULL) ||
		    fl_token_parse(tok, raw))
			_exit(2);
		struct srv_auth au = {NULL, path, e, 2};
		int rc = srv_auth_check(&au, fl_identity_pk(b), raw, reason, sizeof(reason));
		if (rc != FL_EIO || !strstr(reason, "allow-list busy, retry") ||
		    srv_enrol_count(e, 2) != 1)
			_exit(3);
		_exit(0);
	}
	int st = -1;
	FL_CHECK(waitpid(pid, &st, 0) == pid);
	FL_CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the busy enrolment: status %d", st);
	char *got = NULL;
	size_t len = 0;
	FL_CHECK(fl_file_read_all(path, 4096, &got, &len) == FL_OK);
	FL_CHECK_MSG(got && strcmp(got, text) == 0, "written under another's lock: %s", got);
	free(got);
	close(lk);
	FL_CHECK(srv_allowlist_append_file(path, fl_identity_pk(b), "bob") == FL_OK);
	FL_CHECK(fl_file_read_all(path, 4096, &got, &len) == FL_OK);
	FL_CHECK_MSG(got && strstr(got, bs), "%s", got);
	free(got);
	fl_identity_free(a);
	fl_identity_free(b);
}

/* Two processes appending at once: each retries while the other holds the
 * lock, and no line is lost. */
static void test_allowlist_concurrent_appends(void)
{
	enum {
		N = 2,
		EACH = 20
	};
	const char *path = tmp_file("allow-conc.txt");
	write_text(path, "# two writers\n");
	fflush(NULL);
	pid_t pid[N];
	for (int w = 0; w < N; w++) {
		if ((pid[w] = fork()) != 0)
			continue;
		for (int i = 0; i < EACH; i++) {
			struct fl_identity *id = NULL;
			char name[32];
			snprintf(name, sizeof(name), "w%d-%d", w, i);
			if (fl_identity_generate(&id))
				_exit(2);
			int rc;
			while ((rc = srv_allowlist_append_file(path, fl_identity_pk(id), name)) ==
			       1)
				nanosleep(&(struct timespec){0, 1000 * 1000}, NULL);
			fl_identity_free(id);
			if (rc)
				_exit(3);
		}
		_exit(0);
	}
	for (int w = 0; w < N; w++) {
		int st = -1;
		FL_CHECK(waitpid(pid[w], &st, 0) == pid[w] && WIFEXITED(st) &&
			 WEXITSTATUS(st) == 0);
	}
	struct srv_allowlist *al = NULL;
	FL_CHECK(srv_allowlist_load(path, &al) == FL_OK);
	FL_CHECK_MSG(al && srv_allowlist_count(al) == N * EACH, "%zu keys",
		     al ? srv_allowlist_count(al) : 0);
	srv_allowlist_free(al);
}

/* A lock file the daemon may not write (made by root's flock(1), 0644;
 * without root: a 0400 file of its own) still serves as the lock. */
static void test_allowlist_foreign_lock_file(void)
{
	char dir[] = "/tmp/fl-lockown.XXXXXX";
	FL_CHECK(mkdtemp(dir) != NULL && chmod(dir, 0755) == 0);
	char path[100], lp[110];
	snprintf(path, sizeof(path), "%s/allow.txt", dir);
	snprintf(lp, sizeof(lp), "%s.lock", path);
	write_text(path, "# empty\n");
	int lk = open(lp, O_RDWR | O_CREAT, 0644);
	FL_CHECK(lk >= 0);
	close(lk);
	int root = geteuid() == 0;
	uid_t nobody = 65534;
	if (root)
		FL_CHECK(chown(dir, nobody, nobody) == 0 && chown(path, nobody, nobody) == 0);
	else
		FL_CHECK(chmod(lp, 0400) == 0);
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		if (root && (setgid(nobody) != 0 || setuid(nobody) != 0))
			_exit(2);
		struct fl_identity *b = NULL;
		if (fl_identity_generate(&b))
			_exit(3);
		int rc = srv_allowlist_append_file(path, fl_identity_pk(b), "bob");
		if (rc)
			fprintf(stderr, "append: %d %s\n", rc, fl_error_msg());
		_exit(rc ? 1 : 0);
	}
	int st = -1;
	FL_CHECK(waitpid(pid, &st, 0) == pid);
	FL_CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "append with a foreign lock file: %d",
		     st);
	unlink(lp);
	unlink(path);
	rmdir(dir);
}

/* The rewrite checks the file as it reads it under the lock: a hand edit
 * not yet reloaded that lists the key, or binds the id to another key, is
 * not doubled. */
static void test_allowlist_append_clash(void)
{
	struct fl_identity *a = NULL, *b = NULL;
	FL_CHECK(fl_identity_generate(&a) == FL_OK && fl_identity_generate(&b) == FL_OK);
	char as[FL_PUBKEY_STRING_BYTES], text[256];
	fl_identity_public_string(a, as);
	const char *path = tmp_file("allow-clash.txt");
	snprintf(text, sizeof(text), "%s site-3\n", as);
	write_text(path, text);
	FL_CHECK(srv_allowlist_append_file(path, fl_identity_pk(b), "site-3") == FL_EINVAL);
	FL_CHECK_MSG(strstr(fl_error_msg(), "already binds client id 'site-3'"), "%s",
		     fl_error_msg());
	FL_CHECK(srv_allowlist_append_file(path, fl_identity_pk(a), "site-4") == FL_EINVAL);
	FL_CHECK_MSG(strstr(fl_error_msg(), "already lists this key"), "%s", fl_error_msg());
	char *got = NULL;
	size_t len = 0;
	FL_CHECK(fl_file_read_all(path, 4096, &got, &len) == FL_OK);
	FL_CHECK_MSG(got && strcmp(got, text) == 0, "%s", got);
	free(got);
	fl_identity_free(a);
	fl_identity_free(b);
}

int main(void)
{
	FL_RUN(test_identity_files);
	FL_RUN(test_identity_from_seed);
	FL_RUN(test_pubkey_strings);
	FL_RUN(test_allowlist_parse);
	FL_RUN(test_fifo_refused);
	FL_RUN(test_allowlist_reload_and_append);
	FL_RUN(test_tokens);
	FL_RUN(test_token_file_expiry);
	FL_RUN(test_small_order_component);
	FL_RUN(test_allowlist_mode);
	FL_RUN(test_allowlist_lock_busy);
	FL_RUN(test_allowlist_concurrent_appends);
	FL_RUN(test_allowlist_foreign_lock_file);
	FL_RUN(test_allowlist_append_clash);
	return fl_test_main_end();
}
