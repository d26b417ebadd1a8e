/* allowlist.c - allow-list files: parse with line numbers, sorted key set
 * with hash indexes by key and by name (keyed SipHash, open addressing),
 * swap on reload, atomic append. No enrolment tokens (enrol.c). */
#include "allowlist.h"

#include "errors.h"
#include "fsutil.h"

#include <sodium.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

struct entry {
	uint8_t pk[FL_PUBKEY_BYTES];
	char name[SRV_ALLOWLIST_NAME_MAX + 1];
	size_t line; /* for stable sorting: the first occurrence wins */
};

/* One slot of an index: the keyed hash and 1 + the entry's position (0:
 * empty). */
struct slot {
	uint64_t h;
	size_t at;
};

struct srv_allowlist {
	struct entry *e; /* sorted by key, no duplicates */
	size_t n, cap;
	/* open-addressing indexes over e, nslots a power of two >= 2 n (0:
	 * none yet); the SipHash key is random per set */
	struct slot *by_pk, *by_name;
	size_t nslots;
	unsigned char hkey[crypto_shorthash_KEYBYTES];
};

int srv_allowlist_new(struct srv_allowlist **out)
{
	void *p = NULL;
	int err = fl_crypto_alloc(sizeof(struct srv_allowlist), "allow-list", &p);
	if (err)
		return err;
	struct srv_allowlist *al = p;
	randombytes_buf(al->hkey, sizeof(al->hkey));
	*out = al;
	return FL_OK;
}

void srv_allowlist_free(struct srv_allowlist *al)
{
	if (!al)
		return;
	free(al->e);
	free(al->by_pk);
	free(al->by_name);
	free(al);
}

size_t srv_allowlist_count(const struct srv_allowlist *al)
{
	return al->n;
}

static int entry_cmp(const void *a, const void *b)
{
	const struct entry *x = a, *y = b;
	int c = memcmp(x->pk, y->pk, FL_PUBKEY_BYTES);
	if (c)
		return c;
	return (x->line > y->line) - (x->line < y->line);
}

static int push(struct srv_allowlist *al, const uint8_t *pk, const char *name, size_t nlen,
		size_t line)
{
	if (al->n == al->cap) {
		size_t cap = al->cap ? al->cap * 2 : 16;
		struct entry *e = realloc(al->e, cap * sizeof(*e));
		if (!e)
			return fl_error_set(FL_ENOMEM, "allow-list: out of memory");
		al->e = e;
		al->cap = cap;
	}
	struct entry *e = &al->e[al->n++];
	memcpy(e->pk, pk, FL_PUBKEY_BYTES);
	if (nlen > SRV_ALLOWLIST_NAME_MAX)
		nlen = SRV_ALLOWLIST_NAME_MAX;
	memcpy(e->name, name, nlen);
	e->name[nlen] = '\0';
	e->line = line;
	return FL_OK;
}

/* Sorts and drops later duplicates. */
static void normalise(struct srv_allowlist *al)
{
	if (al->n < 2)
		return;
	qsort(al->e, al->n, sizeof(*al->e), entry_cmp);
	size_t k = 1;
	for (size_t i = 1; i < al->n; i++)
		if (memcmp(al->e[i].pk, al->e[k - 1].pk, FL_PUBKEY_BYTES) != 0)
			al->e[k++] = al->e[i];
	al->n = k;
}

static uint64_t hash(const struct srv_allowlist *al, const void *p, size_t len)
{
	unsigned char h[crypto_shorthash_BYTES];
	crypto_shorthash(h, p, len, al->hkey);
	uint64_t v = 0;
	memcpy(&v, h, sizeof(v));
	return v;
}

/* Makes room in the indexes for n entries (their contents are then stale
 * until index_fill). Allocates only when they grow. */
static int index_reserve(struct srv_allowlist *al, size_t n)
{
	if (2 * n <= al->nslots && al->nslots)
		return FL_OK;
	size_t ns = 16;
	while (ns < 2 * n)
		ns *= 2;
	struct slot *a = calloc(ns, sizeof(*a)), *b = calloc(ns, sizeof(*b));
	if (!a || !b) {
		free(a);
		free(b);
		return fl_error_set(FL_ENOMEM, "allow-list: out of memory");
	}
	free(al->by_pk);
	free(al->by_name);
	al->by_pk = a;
	al->by_name = b;
	al->nslots = ns;
	return FL_OK;
}

static void slot_put(struct slot *t, size_t mask, uint64_t h, size_t at)
{
	size_t i = (size_t)h & mask;
	while (t[i].at)
		i = (i + 1) & mask;
	t[i].h = h;
	t[i].at = at;
}

/* Rebuilds both indexes over e (after index_reserve for al->n). */
static void index_fill(struct srv_allowlist *al)
{
	size_t mask = al->nslots - 1;
	memset(al->by_pk, 0, al->nslots * sizeof(*al->by_pk));
	memset(al->by_name, 0, al->nslots * sizeof(*al->by_name));
	for (size_t i = 0; i < al->n; i++) {
		const struct entry *e = &al->e[i];
		slot_put(al->by_pk, mask, hash(al, e->pk, FL_PUBKEY_BYTES), i + 1);
		slot_put(al->by_name, mask, hash(al, e->name, strlen(e->name)), i + 1);
	}
}

/* One line (not NUL-terminated, no '\n'). 0 = ok or skipped; else an error
 * with the reason in fl_error_msg(). */
static int parse_line(struct srv_allowlist *al, const char *s, size_t len, size_t lineno)
{
	size_t i = 0;
	while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r'))
		i++;
	if (i == len || s[i] == '#')
		return FL_OK;
	size_t k = i;
	while (k < len && s[k] != ' ' && s[k] != '\t' && s[k] != '\r')
		k++;
	char key[FL_PUBKEY_STRING_BYTES + 16];
	if (k - i >= sizeof(key))
		return fl_error_set(FL_EFORMAT, "public key '%.20s...' too long", s + i);
	memcpy(key, s + i, k - i);
	key[k - i] = '\0';
	uint8_t pk[FL_PUBKEY_BYTES];
	int err = fl_pubkey_parse(key, pk);
	if (err)
		return err;
	while (k < len && (s[k] == ' ' || s[k] == '\t'))
		k++;
	size_t end = len;
	while (end > k && (s[end - 1] == ' ' || s[end - 1] == '\t' || s[end - 1] == '\r'))
		end--;
	for (size_t j = k; j < end; j++)
		if ((unsigned char)s[j] < 0x20 && s[j] != '\t')
			return fl_error_set(FL_EFORMAT, "control character in the name");
	return push(al, pk, s + k, end - k, lineno);
}

int srv_allowlist_parse(const char *text, size_t len, const char *source,
			struct srv_allowlist **out)
{
	struct srv_allowlist *al = NULL;
	int err = srv_allowlist_new(&al);
	if (err)
		return err;
	int first_err = FL_OK;
	size_t first_line = 0, nbad = 0;
	char first_msg[FL_ERROR_MSG_MAX] = "";
	size_t lineno = 0;
	for (size_t pos = 0; pos < len;) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t l = nl ? (size_t)(nl - (text + pos)) : len - pos;
		lineno++;
		if (memchr(text + pos, '\0', l))
			err = fl_error_set(FL_EFORMAT, "NUL byte in the line");
		else
			err = parse_line(al, text + pos, l, lineno);
		if (err == FL_ENOMEM) {
			srv_allowlist_free(al);
			return err;
		}
		if (err) {
			if (!nbad++) {
				first_err = err;
				first_line = lineno;
				snprintf(first_msg, sizeof(first_msg), "%s", fl_error_msg());
			}
		}
		pos += l + (nl ? 1 : 0);
	}
	if (nbad) {
		srv_allowlist_free(al);
		if (nbad > 1)
			return fl_error_set(first_err, "%s:%zu: %s (and %zu more bad lines)",
					    source, first_line, first_msg, nbad - 1);
		return fl_error_set(first_err, "%s:%zu: %s", source, first_line, first_msg);
	}
	normalise(al);
	err = index_reserve(al, al->n);
	if (err) {
		srv_allowlist_free(al);
		return err;
	}
	index_fill(al);
	*out = al;
	return FL_OK;
}

/* Refuses an allow-list others could have changed: writable by group or
 * others, or owned by neither this process's user nor root. */
static int check_owner_mode(const char *path, const struct stat *st)
{
	if (!S_ISREG(st->st_mode))
		return fl_error_set(FL_EINVAL, "%s: allow-list is not a regular file", path);
	if (st->st_mode & 022)
		return fl_error_set(FL_EINVAL,
				    "%s: allow-list is writable by group/others (mode %03o); run: "
				    "chmod go-w %s",
				    path, (unsigned)(st->st_mode & 0777), path);
	if (st->st_uid != geteuid() && st->st_uid != 0)
		return fl_error_set(FL_EINVAL,
				    "%s: allow-list is owned by uid %u, neither this daemon's "
				    "user (uid %u) nor root",
				    path, (unsigned)st->st_uid, (unsigned)geteuid());
	return FL_OK;
}

/* Reads the allow-list through one descriptor after check_owner_mode;
 * *mode receives its permission bits. */
static int read_checked(const char *path, char **text, size_t *len, mode_t *mode)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block */
	if (fd < 0) {
		int e = errno;
		return fl_error_set(e == ENOENT ? FL_ENOTFOUND : FL_EIO, "%s: %s", path,
				    strerror(e));
	}
	struct stat st;
	int err = fstat(fd, &st) != 0 ? fl_error_set(FL_EIO, "%s: stat: %s", path, strerror(errno))
				      : check_owner_mode(path, &st);
	if (!err && st.st_size > (off_t)SRV_ALLOWLIST_FILE_MAX)
		err = fl_error_set(FL_ERANGE, "%s: larger than %u bytes", path,
				   SRV_ALLOWLIST_FILE_MAX);
	char *buf = err ? NULL : malloc((size_t)st.st_size + 1);
	if (!err && !buf)
		err = fl_error_set(FL_ENOMEM, "%s: out of memory", path);
	size_t have = 0;
	while (!err && have < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + have, (size_t)st.st_size - have);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			err = fl_error_set(FL_EIO, "%s: read: %s", path, strerror(errno));
		if (r <= 0)
			break;
		have += (size_t)r;
	}
	close(fd);
	if (err) {
		free(buf);
		return err;
	}
	buf[have] = '\0';
	*text = buf;
	*len = have;
	*mode = st.st_mode & 0777;
	return FL_OK;
}

int srv_allowlist_load(const char *path, struct srv_allowlist **out)
{
	char *text = NULL;
	size_t len = 0;
	mode_t mode = 0;
	int err = read_checked(path, &text, &len, &mode);
	if (err)
		return err;
	err = srv_allowlist_parse(text, len, path, out);
	free(text);
	return err;
}

int srv_allowlist_reload(const char *path, struct srv_allowlist **current)
{
	struct srv_allowlist *al = NULL;
	int err = srv_allowlist_load(path, &al);
	if (err)
		return err;
	srv_allowlist_free(*current);
	*current = al;
	return FL_OK;
}

/* Index of pk or -1: the slots of its keyed hash, then sodium_memcmp on a
 * candidate whose 64-bit hash matches (so one comparison, barring a hash
 * collision). */
static long find(const struct srv_allowlist *al, const uint8_t *pk)
{
	if (!al->nslots)
		return -1;
	size_t mask = al->nslots - 1;
	uint64_t h = hash(al, pk, FL_PUBKEY_BYTES);
	for (size_t i = (size_t)h & mask; al->by_pk[i].at; i = (i + 1) & mask) {
		const struct slot *s = &al->by_pk[i];
		if (s->h == h && sodium_memcmp(al->e[s->at - 1].pk, pk, FL_PUBKEY_BYTES) == 0)
			return (long)(s->at - 1);
	}
	return -1;
}

int srv_allowlist_contains(const struct srv_allowlist *al, const uint8_t pk[FL_PUBKEY_BYTES])
{
	return find(al, pk) >= 0;
}

const char *srv_allowlist_name(const struct srv_allowlist *al, const uint8_t pk[FL_PUBKEY_BYTES])
{
	long i = find(al, pk);
	return i >= 0 ? al->e[i].name : NULL;
}

int srv_allowlist_has_name(const struct srv_allowlist *al, const char *name)
{
	if (!al->nslots)
		return 0;
	size_t mask = al->nslots - 1;
	uint64_t h = hash(al, name, strlen(name));
	for (size_t i = (size_t)h & mask; al->by_name[i].at; i = (i + 1) & mask) {
		const struct slot *s = &al->by_name[i];
		if (s->h == h && strcmp(al->e[s->at - 1].name, name) == 0)
			return 1;
	}
	return 0;
}

static int check_name(const char *name)
{
	for (const char *p = name; *p; p++)
		if ((unsigned char)*p < 0x20 && *p != '\t')
			return fl_error_set(FL_EINVAL, "allow-list name with a control character");
	return FL_OK;
}

int srv_allowlist_add(struct srv_allowlist *al, const uint8_t pk[FL_PUBKEY_BYTES], const char *name)
{
	if (!name)
		name = "";
	int err = check_name(name);
	if (!err)
		err = fl_pubkey_check(pk);
	if (err)
		return err;
	if (find(al, pk) >= 0)
		return FL_OK;
	err = index_reserve(al, al->n + 1);
	if (err)
		return err;
	err = push(al, pk, name, strlen(name), (size_t)-1);
	if (!err)
		normalise(al);
	index_fill(al); /* also after a failed push: the reserve emptied it */
	return err;
}

/* An exclusive flock on "<path>.lock" (created 0600), taken without
 * waiting: held across an enrolment's read-modify-write; a scripted rewrite
 * takes it with flock(1). Opened read-only (flock needs no write access),
 * so a lock file another user made, e.g. root's flock(1), still serves.
 * *fd receives the locked descriptor. 1 when another process holds it
 * (nothing locked). */
static int lock_file(const char *path, int *fd)
{
	char lp[4096];
	if ((size_t)snprintf(lp, sizeof(lp), "%s.lock", path) >= sizeof(lp))
		return fl_error_set(FL_EINVAL, "%s: path too long", path);
	*fd = open(lp, O_RDONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (*fd < 0)
		return fl_error_set(FL_EIO, "%s: %s", lp, strerror(errno));
	while (flock(*fd, LOCK_EX | LOCK_NB) != 0) {
		if (errno == EINTR)
			continue;
		int e = errno;
		close(*fd);
		if (e == EWOULDBLOCK) {
			fl_error_set(FL_EIO, "%s is held by another process", lp);
			return 1;
		}
		return fl_error_set(FL_EIO, "%s: flock: %s", lp, strerror(e));
	}
	return FL_OK;
}

/* The file's text with "key name\n" appended, written atomically. */
static int append_line(const char *path, const char *text, size_t len, int private_,
		       const uint8_t *pk, const char *name)
{
	char key[FL_PUBKEY_STRING_BYTES];
	fl_pubkey_format(pk, key);
	size_t nlen = strnlen(name, SRV_ALLOWLIST_NAME_MAX);
	size_t cap = len + 1 + sizeof(key) + 1 + nlen + 2;
	char *buf = malloc(cap);
	if (!buf)
		return fl_error_set(FL_ENOMEM, "%s: out of memory", path);
	size_t n = 0;
	if (len) {
		memcpy(buf, text, len);
		n = len;
		if (buf[n - 1] != '\n')
			buf[n++] = '\n';
	}
	n += (size_t)snprintf(buf + n, cap - n, "%s%s%.*s\n", key, nlen ? " " : "", (int)nlen,
			      name);
	int err = fl_file_write_atomic(path, buf, n, private_);
	free(buf);
	return err;
}

/* The file as read under the lock (it may have been edited since the last
 * load): refuses when pk is listed already or another key carries name. */
static int check_clash(const char *path, const char *text, size_t len, const uint8_t *pk,
		       const char *name)
{
	struct srv_allowlist *now = NULL;
	int err = srv_allowlist_parse(text ? text : "", text ? len : 0, path, &now);
	if (err)
		return err;
	const char *had = srv_allowlist_name(now, pk);
	if (had)
		err = fl_error_set(FL_EINVAL, "%s already lists this key (as '%.64s')", path, had);
	else if (name[0] && srv_allowlist_has_name(now, name))
		err = fl_error_set(FL_EINVAL, "%s already binds client id '%.64s' to another key",
				   path, name);
	srv_allowlist_free(now);
	return err;
}

int srv_allowlist_append_file(const char *path, const uint8_t pk[FL_PUBKEY_BYTES], const char *name)
{
	if (!name)
		name = "";
	int err = check_name(name);
	if (!err)
		err = fl_pubkey_check(pk); /* the parser would refuse the line */
	if (err)
		return err;
	int lock = -1;
	err = lock_file(path, &lock);
	if (err) /* 1: busy */
		return err;
	char *text = NULL;
	size_t len = 0;
	mode_t mode = 0;
	err = read_checked(path, &text, &len, &mode);
	if (err == FL_ENOTFOUND) {
		err = FL_OK;
		len = 0;
	}
	if (!err)
		err = check_clash(path, text, len, pk, name);
	if (!err)
		err = append_line(path, text, len, text ? !(mode & 077) : 0, pk, name);
	free(text);
	close(lock); /* releases the flock */
	return err;
}
