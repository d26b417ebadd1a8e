/* safetensors_write.c - fl_st_write(): serialises a struct fl_st (read or
 * built with fl_st_add) the way the Python reference writer does, and
 * replaces the target file atomically.
 *
 * Tensors go in name order (byte order, like Python's sorted()), the header
 * is compact JSON with "__metadata__" first, padded with spaces to a
 * multiple of 8, and the data follows contiguously in the same order. The
 * bytes go to PATH.tmp.XXXXXX in the same folder, which is fsync'ed and
 * renamed over PATH, then the folder is fsync'ed. Building and reading
 * files is in safetensors.c; this file uses only the public accessors.
 */
#include "safetensors.h"

#include "errors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int cmp_name(const void *pa, const void *pb)
{
	const struct fl_st_tensor *a = *(const struct fl_st_tensor *const *)pa;
	const struct fl_st_tensor *b = *(const struct fl_st_tensor *const *)pb;
	return strcmp(a->name, b->name); /* compares unsigned bytes: code point order */
}

/* The compact header JSON for the n tensors in `order`: __metadata__ first,
 * then each tensor at consecutive offsets. NULL when out of memory. */
static char *build_header(const struct fl_st *st, const struct fl_st_tensor **order, size_t n)
{
	json_t *root = json_object();
	int bad = !root;
	size_t nmeta = fl_st_metadata_count(st);
	if (!bad && nmeta) {
		json_t *m = json_object();
		bad |= json_object_set_new(root, "__metadata__", m) != 0;
		for (size_t i = 0; !bad && i < nmeta; i++) {
			const char *value, *key = fl_st_metadata_at(st, i, &value);
			bad |= json_object_set_new(m, key, json_string(value)) != 0;
		}
	}
	uint64_t off = 0;
	for (size_t i = 0; !bad && i < n; i++) {
		const struct fl_st_tensor *t = order[i];
		json_t *e = json_object(), *shape = json_array(), *offs = json_array();
		bad |= json_object_set_new(root, t->name, e) != 0;
		bad |= json_object_set_new(e, "dtype", json_string(fl_dtype_name(t->dtype))) != 0;
		bad |= json_object_set_new(e, "shape", shape) != 0;
		bad |= json_object_set_new(e, "data_offsets", offs) != 0;
		for (int d = 0; !bad && d < t->ndim; d++)
			bad |= json_array_append_new(shape, json_integer(t->shape[d])) != 0;
		bad |= json_array_append_new(offs, json_integer((json_int_t)off)) != 0;
		off += t->nbytes;
		bad |= json_array_append_new(offs, json_integer((json_int_t)off)) != 0;
	}
	char *s = bad ? NULL : json_dumps(root, JSON_COMPACT | JSON_ENSURE_ASCII);
	json_decref(root);
	return s;
}

static int write_all(int fd, const void *p, size_t n)
{
	const unsigned char *c = p;
	while (n) {
		ssize_t w = write(fd, c, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return FL_EIO;
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

/* fsync of the folder holding path, so the rename itself is durable. */
static int sync_parent(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
	if (!dir)
		return FL_ENOMEM;
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(dir);
	if (fd < 0)
		return FL_EIO;
	int r = fsync(fd);
	if (r != 0 && (errno == EINVAL || errno == EROFS))
		r = 0; /* file systems whose folders cannot be synced */
	close(fd);
	return r ? FL_EIO : FL_OK;
}

/* Writes length, padded header and data to fd; FL_OK or FL_EIO with errno
 * set. */
static int write_body(int fd, const char *hdr, size_t hl, size_t padded,
		      const struct fl_st_tensor **order, size_t n)
{
	unsigned char lenbuf[8];
	for (int i = 0; i < 8; i++)
		lenbuf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
	static const char spaces[8] = "       ";
	if (write_all(fd, lenbuf, 8) || write_all(fd, hdr, hl) ||
	    write_all(fd, spaces, padded - hl))
		return FL_EIO;
	for (size_t i = 0; i < n; i++)
		if (write_all(fd, order[i]->data, order[i]->nbytes))
			return FL_EIO;
	if (fchmod(fd, 0644) || fsync(fd))
		return FL_EIO;
	return 0;
}

int fl_st_write(const struct fl_st *st, const char *path)
{
	int rc = FL_OK, fd = -1;
	char *hdr = NULL, *tmp = NULL;
	size_t n = fl_st_count(st);
	const struct fl_st_tensor **order = malloc((n ? n : 1) * sizeof(*order));
	if (!order)
		return fl_error_set(FL_ENOMEM, "%s: out of memory", path);
	for (size_t i = 0; i < n; i++)
		order[i] = fl_st_at(st, i);
	if (n > 1)
		qsort(order, n, sizeof(*order), cmp_name);
	hdr = build_header(st, order, n);
	if (!hdr) {
		rc = fl_error_set(FL_ENOMEM, "%s: out of memory for the header", path);
		goto done;
	}
	size_t hl = strlen(hdr), padded = (hl + 7) & ~(size_t)7;
	if (padded > FL_ST_HEADER_MAX) {
		rc = fl_error_set(FL_ERANGE, "%s: header of %zu bytes exceeds the limit of %u",
				  path, padded, FL_ST_HEADER_MAX);
		goto done;
	}
	size_t plen = strlen(path);
	tmp = malloc(plen + sizeof(".tmp.XXXXXX"));
	if (!tmp) {
		rc = fl_error_set(FL_ENOMEM, "%s: out of memory", path);
		goto done;
	}
	memcpy(tmp, path, plen);
	memcpy(tmp + plen, ".tmp.XXXXXX", sizeof(".tmp.XXXXXX"));
	fd = mkstemp(tmp);
	if (fd < 0) {
		rc = fl_error_set(FL_EIO, "%s: cannot create a temporary file: %s", path,
				  strerror(errno));
		free(tmp);
		tmp = NULL; /* nothing was created: nothing to unlink */
		goto done;
	}
	int bad = write_body(fd, hdr, hl, padded, order, n);
	int err = errno;
	if (close(fd) != 0 && !bad) {
		bad = 1;
		err = errno;
	}
	if (bad) {
		rc = fl_error_set(FL_EIO, "%s: cannot write %s: %s", path, tmp, strerror(err));
		goto done;
	}
	if (rename(tmp, path) != 0) {
		rc = fl_error_set(FL_EIO, "%s: cannot rename %s over it: %s", path, tmp,
				  strerror(errno));
		goto done;
	}
	free(tmp);
	tmp = NULL;
	if (sync_parent(path) != 0)
		rc = fl_error_set(FL_EIO, "%s: written, but syncing its folder failed: %s", path,
				  strerror(errno));
done:
	if (tmp)
		unlink(tmp);
	free(tmp);
	free(hdr);
	free(order);
	return rc;
}
