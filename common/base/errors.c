/* errors.c - error strings and the per-thread detail message. */
#include "errors.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char fl_msg[FL_ERROR_MSG_MAX];
static _Thread_local int fl_last;

const char *fl_strerror(int err)
{
	switch (err) {
	case FL_OK: return "success";
	case FL_ENOMEM: return "out of memory";
	case FL_EINVAL: return "invalid argument";
	case FL_EIO: return "input/output error";
	case FL_EFORMAT: return "malformed input";
	case FL_ERANGE: return "value out of range";
	case FL_ENONFINITE: return "non-finite value";
	case FL_ENOTFOUND: return "not found";
	case FL_EUNSUPPORTED: return "unsupported";
	case FL_ESHAPE: return "shape mismatch";
	case FL_EAUTH: return "not authenticated or not authorised";
	default: return "unknown error";
	}
}

/* Formats through a copy, so that an argument may be fl_error_msg() itself
 * (fl_error_set(err, "--flag: %s", fl_error_msg()) prefixes the message). */
int fl_error_set(int err, const char *fmt, ...)
{
	char tmp[FL_ERROR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	memcpy(fl_msg, tmp, sizeof(fl_msg));
	fl_last = err;
	return err;
}

const char *fl_error_msg(void)
{
	if (fl_msg[0])
		return fl_msg;
	return fl_strerror(fl_last);
}

void fl_error_clear(void)
{
	fl_msg[0] = '\0';
	fl_last = FL_OK;
}

const char *fl_error_safe_str(const char *s, char *buf, size_t cap)
{
	size_t i = 0;
	if (cap == 0)
		return buf;
	for (; s && s[i] && i + 1 < cap; i++)
		buf[i] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
	buf[i] = '\0';
	if (s && s[i] && cap >= 4)
		memcpy(buf + cap - 4, "...", 4);
	return buf;
}

const char *fl_error_shape_str(const int64_t *shape, int ndim, char *buf, size_t cap)
{
	size_t k = (size_t)snprintf(buf, cap, "[");
	for (int i = 0; i < ndim && k < cap; i++)
		k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "",
				      (long long)shape[i]);
	if (k < cap)
		snprintf(buf + k, cap - k, "]");
	return buf;
}
