/* fsutil.c - atomic writes, capped reads, mkdir -p. */
#include "fsutil.h"

#include "errors.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void fsync_parent(const char *path)
{
	char buf[FL_PATH_MAX];
	snprintf(buf, sizeof(buf), "%s", path);
	int fd = open(dirname(buf), O_RDONLY | O_DIRECTORY);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

int fl_file_write_atomic(const char *path, const void *data, size_t len, int private_)
{
	char tmp[FL_PATH_MAX];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path) >= (int)sizeof(tmp))
		return fl_error_set(FL_EINVAL, "%s: path too long", path);
	int fd = mkstemp(tmp);
	if (fd < 0)
		return fl_error_set(FL_EIO, "%s: cannot create a temporary file: %s", path,
				    strerror(errno));
	int err = FL_OK;
	const char *p = data;
	size_t left = len;
	while (left > 0 && !err) {
		ssize_t w = write(fd, p, left);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			err = fl_error_set(FL_EIO, "%s: write: %s", path, strerror(errno));
		else {
			p += w;
			left -= (size_t)w;
		}
	}
	if (!err && fchmod(fd, private_ ? 0600 : 0644) != 0)
		err = fl_error_set(FL_EIO, "%s: chmod: %s", path, strerror(errno));
	if (!err && fsync(fd) != 0)
		err = fl_error_set(FL_EIO, "%s: fsync: %s", path, strerror(errno));
	if (close(fd) != 0 && !err)
		err = fl_error_set(FL_EIO, "%s: close: %s", path, strerror(errno));
	if (!err && rename(tmp, path) != 0)
		err = fl_error_set(FL_EIO, "%s: rename: %s", path, strerror(errno));
	if (err) {
		unlink(tmp);
		return err;
	}
	fsync_parent(path);
	return FL_OK;
}

int fl_file_read_all(const char *path, size_t max, char **out, size_t *len)
{
	*out = NULL;
	if (len)
		*len = 0;
	FILE *f = fopen(path, "rb");
	if (!f)
		return fl_error_set(errno == ENOENT ? FL_ENOTFOUND : FL_EIO, "%s: %s", path,
				    strerror(errno));
	struct stat st;
	if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
		fclose(f);
		return fl_error_set(FL_EIO, "%s: not a regular file", path);
	}
	if ((unsigned long long)st.st_size > max) {
		fclose(f);
		return fl_error_set(FL_ERANGE, "%s: %lld bytes, more than the limit of %zu", path,
				    (long long)st.st_size, max);
	}
	size_t n = (size_t)st.st_size;
	char *buf = malloc(n + 1);
	if (!buf) {
		fclose(f);
		return fl_error_set(FL_ENOMEM, "%s: out of memory", path);
	}
	size_t got = fread(buf, 1, n, f);
	int rerr = ferror(f);
	fclose(f);
	if (got != n || rerr) {
		free(buf);
		return fl_error_set(FL_EIO, "%s: short read", path);
	}
	buf[n] = '\0';
	*out = buf;
	if (len)
		*len = n;
	return FL_OK;
}

int fl_mkdir_p(const char *path, int private_)
{
	char buf[FL_PATH_MAX];
	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return fl_error_set(FL_EINVAL, "%s: path too long", path);
	mode_t mode = private_ ? 0700 : 0755;
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) != 0 && errno != EEXIST)
			return fl_error_set(FL_EIO, "%s: mkdir: %s", buf, strerror(errno));
		*p = '/';
	}
	if (mkdir(buf, mode) != 0 && errno != EEXIST)
		return fl_error_set(FL_EIO, "%s: mkdir: %s", buf, strerror(errno));
	struct stat st;
	if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
		return fl_error_set(FL_EIO, "%s: not a folder", buf);
	return FL_OK;
}

int fl_mkdir_parent(const char *path, int private_)
{
	char buf[FL_PATH_MAX];
	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return fl_error_set(FL_EINVAL, "%s: path too long", path);
	char *slash = strrchr(buf, '/');
	if (!slash || slash == buf)
		return FL_OK; /* the current folder or / */
	*slash = '\0';
	return fl_mkdir_p(buf, private_);
}

int fl_path_exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}
