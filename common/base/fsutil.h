/* fsutil.h - small file-system helpers: atomic whole-file writes (temp file
 * in the same folder, fsync, rename, folder fsync), whole-file reads with a
 * size cap, and mkdir -p. Nothing here interprets file contents. */
#ifndef FL_FSUTIL_H
#define FL_FSUTIL_H

#include <stddef.h>

/* Bytes of a path buffer, NUL included: the kernel's own limit (Linux
 * PATH_MAX), so a path cut to fit could not have been opened anyway. */
#define FL_PATH_MAX 4096

/* Replaces path with len bytes of data, atomically: readers see either the
 * old file or the whole new one, even after a crash. Mode 0644 (or 0600 when
 * private is set). */
int fl_file_write_atomic(const char *path, const void *data, size_t len, int private_);
/* Reads a whole file (at most max bytes, else FL_ERANGE) into a malloc'd,
 * NUL-terminated buffer. FL_ENOTFOUND when it does not exist. */
int fl_file_read_all(const char *path, size_t max, char **out, size_t *len);
/* Creates path and its parents (0755 or 0700 when private). */
int fl_mkdir_p(const char *path, int private_);
/* Creates the folder that holds the file path (with its parents, as
 * fl_mkdir_p) when it is missing; FL_OK when path has no folder part. */
int fl_mkdir_parent(const char *path, int private_);
/* 1 when path exists (any type). */
int fl_path_exists(const char *path);

#endif
