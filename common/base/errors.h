/* errors.h - the one error enum of fedloha and a per-thread detail message.
 *
 * Fallible functions return enum fl_err (FL_OK = 0, failures negative) and
 * write results through out-parameters. Where a failure has a useful detail
 * (a file name, a key, an offset) the function also records a one-line
 * message with fl_error_set(); callers print fl_error_msg(). This file does
 * not log and does not exit.
 */
#ifndef FL_ERRORS_H
#define FL_ERRORS_H

#include <stddef.h>
#include <stdint.h>

enum fl_err {
	FL_OK = 0,
	FL_ENOMEM = -1,       /* allocation failed */
	FL_EINVAL = -2,       /* bad argument, flag or configuration value */
	FL_EIO = -3,          /* read/write/open failed */
	FL_EFORMAT = -4,      /* malformed file or message */
	FL_ERANGE = -5,       /* a size or count over its limit */
	FL_ENONFINITE = -6,   /* NaN or infinity where finite values are required */
	FL_ENOTFOUND = -7,    /* a named tensor, key or file is missing */
	FL_EUNSUPPORTED = -8, /* valid input that fedloha does not handle */
	FL_ESHAPE = -9,       /* tensor shapes do not agree */
	FL_EAUTH = -10,       /* a peer failed authentication or is not authorised */
};

#define FL_ERROR_MSG_MAX 512

/* Short static description of a code ("malformed input", ...). */
const char *fl_strerror(int err);

/* Records a printf-style detail for the calling thread and returns err, so
 * `return fl_error_set(FL_EFORMAT, "%s: bad header", path);` reads well. */
int fl_error_set(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The calling thread's last detail, or fl_strerror() of the last code when no
 * detail was given. Never NULL. */
const char *fl_error_msg(void);

/* Forgets the calling thread's last detail. */
void fl_error_clear(void);

/* A string from a file or a peer made safe for a one-line message: control
 * bytes become '?', and a string longer than cap-1 is cut with "...".
 * Returns buf. */
const char *fl_error_safe_str(const char *s, char *buf, size_t cap);
/* "[2, 3]" into buf; returns buf. */
const char *fl_error_shape_str(const int64_t *shape, int ndim, char *buf, size_t cap);

#endif
