/* enrol.c - in-memory one-time enrolment tokens with expiry, and the
 * coordinator's allow-list / enrolment check (srv_auth_check). Does not
 * talk to the network; the channel calls srv_auth_check during a handshake. */
#include "enrol.h"

#include "errors.h"
#include "fsutil.h"
#include "log.h"
#include "wire.h"

#include <sodium.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct token {
	uint8_t t[FL_TOKEN_BYTES];
	uint64_t expires_ms;
	char id[FL_WIRE_CLIENT_ID_MAX + 1]; /* the client id it enrols */
	char *path;                         /* its token file, or NULL */
};

struct srv_enrol {
	struct token tok[SRV_ENROL_MAX_TOKENS];
	size_t n;
	int dfd;   /* the token folder (srv_enrol_open_dir), or -1 */
	char *dir; /* its name, for messages */
};

int srv_enrol_new(struct srv_enrol **out)
{
	void *p = NULL;
	int err = fl_crypto_alloc(sizeof(struct srv_enrol), "enrolment tokens", &p);
	if (!err) {
		((struct srv_enrol *)p)->dfd = -1;
		*out = p;
	}
	return err;
}

/* "ID.token": a token file's name inside the folder. */
static void file_name(const char *id, char name[FL_WIRE_CLIENT_ID_MAX + 8])
{
	snprintf(name, FL_WIRE_CLIENT_ID_MAX + 8, "%s.token", id);
}

static void forget_file(struct srv_enrol *e, struct token *t)
{
	if (!t->path)
		return;
	char name[FL_WIRE_CLIENT_ID_MAX + 8];
	file_name(t->id, name);
	unlinkat(e->dfd, name, 0);
	free(t->path);
	t->path = NULL;
}

void srv_enrol_free(struct srv_enrol *e)
{
	if (!e)
		return;
	for (size_t i = 0; i < e->n; i++)
		forget_file(e, &e->tok[i]); /* a restart forgets the tokens */
	if (e->dfd >= 0)
		close(e->dfd);
	free(e->dir);
	sodium_memzero(e, sizeof(*e));
	free(e);
}

/* Refuses a folder others could write to or that this user does not own. */
static int check_dir(int dfd, const char *dir)
{
	struct stat st;
	if (fstat(dfd, &st) != 0)
		return fl_error_set(FL_EIO, "enrolment token folder %s: %s", dir, strerror(errno));
	if (st.st_uid != geteuid())
		return fl_error_set(FL_EINVAL,
				    "enrolment token folder %s is owned by uid %u, not by this "
				    "daemon's uid %u (give it to that user, or choose another "
				    "folder with --enrol-dir)",
				    dir, (unsigned)st.st_uid, (unsigned)geteuid());
	if (st.st_mode & 022)
		return fl_error_set(FL_EINVAL,
				    "enrolment token folder %s is group- or world-writable "
				    "(mode %03o): run chmod 700 %s",
				    dir, (unsigned)(st.st_mode & 0777), dir);
	return FL_OK;
}

/* Removes every *.token file in the folder; called when it is opened,
 * before this store has issued a token, so none is live. */
static size_t remove_stale(int dfd)
{
	int d2 = dup(dfd);
	DIR *d = d2 >= 0 ? fdopendir(d2) : NULL;
	if (!d) {
		if (d2 >= 0)
			close(d2);
		return 0;
	}
	size_t n = 0;
	for (struct dirent *de; (de = readdir(d));) {
		size_t len = strlen(de->d_name);
		if (len > 6 && !strcmp(de->d_name + len - 6, ".token") &&
		    unlinkat(dfd, de->d_name, 0) == 0)
			n++;
	}
	closedir(d);
	return n;
}

int srv_enrol_open_dir(struct srv_enrol *e, const char *dir, size_t *stale)
{
	if (e->dfd >= 0 || e->n)
		return fl_error_set(FL_EINVAL, "enrolment token folder: opened once, before any "
					       "token is issued");
	if (strlen(dir) >= 4000)
		return fl_error_set(FL_EINVAL, "enrolment token folder %.80s: path too long", dir);
	int err = fl_mkdir_parent(dir, 1);
	if (err)
		return err;
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return fl_error_set(FL_EIO, "enrolment token folder %s: mkdir: %s", dir,
				    strerror(errno));
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return fl_error_set(FL_EIO, "enrolment token folder %s: %s", dir,
				    errno == ELOOP || errno == ENOTDIR
					    ? "a symbolic link or not a folder"
					    : strerror(errno));
	char *copy = NULL;
	if ((err = check_dir(dfd, dir)) || !(copy = strdup(dir))) {
		close(dfd);
		return err ? err : fl_error_set(FL_ENOMEM, "out of memory");
	}
	e->dfd = dfd;
	e->dir = copy;
	size_t n = remove_stale(dfd);
	if (stale)
		*stale = n;
	return FL_OK;
}

uint64_t srv_enrol_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void drop(struct srv_enrol *e, size_t i)
{
	forget_file(e, &e->tok[i]);
	e->tok[i] = e->tok[e->n - 1];
	sodium_memzero(&e->tok[e->n - 1], sizeof(e->tok[0]));
	e->n--;
}

static void expire(struct srv_enrol *e, uint64_t now_ms)
{
	for (size_t i = 0; i < e->n;) {
		if (e->tok[i].expires_ms <= now_ms)
			drop(e, i);
		else
			i++;
	}
}

size_t srv_enrol_count(struct srv_enrol *e, uint64_t now_ms)
{
	expire(e, now_ms);
	return e->n;
}

/* Writes ID.token (0600, O_EXCL | O_NOFOLLOW) holding text in the token
 * folder; a file of that name put there since startup (no live token has
 * one) is replaced. */
static int write_token_file(struct srv_enrol *e, const char *id, const char *text, char **path_out)
{
	char name[FL_WIRE_CLIENT_ID_MAX + 8], path[4200];
	file_name(id, name);
	snprintf(path, sizeof(path), "%s/%s", e->dir, name);
	if (unlinkat(e->dfd, name, 0) != 0 && errno != ENOENT)
		return fl_error_set(FL_EIO, "%s: %s", path, strerror(errno));
	int fd = openat(e->dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return fl_error_set(FL_EIO, "%s: %s", path, strerror(errno));
	size_t n = strlen(text);
	int ok = write(fd, text, n) == (ssize_t)n && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
	int err = errno;
	if (close(fd) != 0 && ok) {
		ok = 0;
		err = errno;
	}
	if (!ok) {
		unlinkat(e->dfd, name, 0);
		return fl_error_set(FL_EIO, "%s: write: %s", path, strerror(err));
	}
	if (!(*path_out = strdup(path))) {
		unlinkat(e->dfd, name, 0);
		return fl_error_set(FL_ENOMEM, "out of memory");
	}
	return FL_OK;
}

int srv_enrol_issue(struct srv_enrol *e, uint64_t now_ms, uint64_t valid_ms, const char *client_id,
		    char out[FL_TOKEN_STRING_BYTES], const char **path)
{
	if (!fl_wire_client_id_valid(client_id))
		return fl_error_set(FL_EINVAL,
				    "enrolment: '%.80s' is not a client id (1..%d of "
				    "[A-Za-z0-9._-])",
				    client_id ? client_id : "", FL_WIRE_CLIENT_ID_MAX);
	expire(e, now_ms);
	if (e->n == SRV_ENROL_MAX_TOKENS)
		return fl_error_set(FL_ERANGE, "too many enrolment tokens outstanding (%d)",
				    SRV_ENROL_MAX_TOKENS);
	if (valid_ms == 0 || valid_ms > UINT64_MAX - now_ms)
		return fl_error_set(FL_EINVAL, "enrolment token validity must be > 0");
	for (size_t i = 0; i < e->n; i++)
		if (!strcmp(e->tok[i].id, client_id))
			return fl_error_set(FL_EINVAL,
					    "an enrolment token for client id '%s' is already "
					    "outstanding",
					    client_id);
	struct token *t = &e->tok[e->n];
	memset(t, 0, sizeof(*t));
	randombytes_buf(t->t, sizeof(t->t));
	t->expires_ms = now_ms + valid_ms;
	snprintf(t->id, sizeof(t->id), "%s", client_id);
	sodium_bin2base64(out, FL_TOKEN_STRING_BYTES, t->t, sizeof(t->t),
			  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	if (e->dfd >= 0) {
		int err = write_token_file(e, client_id, out, &t->path);
		if (err) {
			sodium_memzero(t, sizeof(*t));
			sodium_memzero(out, FL_TOKEN_STRING_BYTES);
			return err;
		}
	}
	if (path)
		*path = t->path;
	e->n++;
	return FL_OK;
}

/* Index of a valid token or -1; compares with every stored token. */
static long find(const struct srv_enrol *e, const uint8_t *token)
{
	long hit = -1;
	for (size_t i = 0; i < e->n; i++) {
		long mask = -(long)(sodium_memcmp(e->tok[i].t, token, FL_TOKEN_BYTES) == 0);
		hit = (hit & ~mask) | ((long)i & mask);
	}
	return hit;
}

int srv_enrol_consume(struct srv_enrol *e, const uint8_t token[FL_TOKEN_BYTES], uint64_t now_ms)
{
	expire(e, now_ms);
	long i = find(e, token);
	if (i < 0)
		return fl_error_set(FL_ENOTFOUND,
				    "enrolment token unknown, already used or expired");
	drop(e, (size_t)i);
	return FL_OK;
}

/* Appends pk as id to the file and the in-memory set. */
static int record(struct srv_auth *a, const uint8_t *pk, const char *id, char *reason,
		  size_t reason_cap)
{
	int err = FL_OK;
	if (a->allow_path)
		err = srv_allowlist_append_file(a->allow_path, pk, id);
	if (!err && a->allow && *a->allow)
		err = srv_allowlist_add(*a->allow, pk, id);
	if (err == 1) {
		snprintf(reason, reason_cap,
			 "allow-list busy, retry: %s is being rewritten; the enrolment token "
			 "stays valid",
			 a->allow_path);
		return FL_EIO;
	}
	if (err) {
		fl_log_error("enrolment of client id '%s' not recorded: %s", id, fl_error_msg());
		snprintf(reason, reason_cap, "server could not record the enrolment");
	}
	return err;
}

int srv_auth_check(void *ctx, const uint8_t pk[FL_PUBKEY_BYTES], const uint8_t *token, char *reason,
		   size_t reason_cap)
{
	struct srv_auth *a = ctx;
	char key[FL_PUBKEY_STRING_BYTES];
	fl_pubkey_format(pk, key);
	if (fl_pubkey_check(pk) != FL_OK) {
		/* never listed, never written: the allow-list parser refuses it */
		snprintf(reason, reason_cap, "%s", fl_error_msg());
		return FL_EFORMAT;
	}
	if (a->allow && *a->allow && srv_allowlist_contains(*a->allow, pk))
		return FL_OK;
	if (!token || !a->enrol) {
		snprintf(reason, reason_cap, "client key %s is not in the allow-list", key);
		return FL_ENOTFOUND;
	}
	uint64_t now = a->now_ms ? a->now_ms : srv_enrol_now_ms();
	expire(a->enrol, now);
	long i = find(a->enrol, token);
	if (i < 0) {
		snprintf(reason, reason_cap,
			 "client key %s is not in the allow-list and its enrolment token is "
			 "unknown, already used or expired",
			 key);
		return FL_ENOTFOUND;
	}
	char id[FL_WIRE_CLIENT_ID_MAX + 1];
	snprintf(id, sizeof(id), "%s", a->enrol->tok[i].id);
	if (a->allow && *a->allow && srv_allowlist_has_name(*a->allow, id)) {
		snprintf(reason, reason_cap,
			 "enrolment token for client id '%s' refused: that id is already bound "
			 "to another key on the allow-list",
			 id);
		return FL_ENOTFOUND;
	}
	/* Record first, consume after: a failed write leaves the token usable. */
	int err = record(a, pk, id, reason, reason_cap);
	if (err)
		return err;
	drop(a->enrol, (size_t)i);
	return FL_OK;
}
