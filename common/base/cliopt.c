/* cliopt.c - range-checked flag values (see cliopt.h). */
#include "cliopt.h"

#include "errors.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int fl_cliopt_double(const char *flag, const char *v, double lo, double hi, double *out)
{
	char *end;
	errno = 0;
	double x = strtod(v, &end);
	if (errno || end == v || *end || !isfinite(x) || x < lo || x > hi)
		return fl_error_set(FL_EINVAL, "%s: expected a number in [%g, %g], got '%s'", flag, lo,
				    hi, v);
	*out = x;
	return FL_OK;
}

int fl_cliopt_llong(const char *flag, const char *v, long long lo, long long hi, long long *out)
{
	char *end;
	errno = 0;
	long long x = strtoll(v, &end, 10);
	if (errno || end == v || *end || x < lo || x > hi)
		return fl_error_set(FL_EINVAL, "%s: expected an integer in [%lld, %lld], got '%s'",
				    flag, lo, hi, v);
	*out = x;
	return FL_OK;
}

int fl_cliopt_int(const char *flag, const char *v, long lo, long hi, int *out)
{
	long long x = 0;
	if (lo < INT_MIN)
		lo = INT_MIN;
	if (hi > INT_MAX)
		hi = INT_MAX;
	int err = fl_cliopt_llong(flag, v, lo, hi, &x);
	if (!err)
		*out = (int)x;
	return err;
}

int fl_cliopt_hostport(const char *flag, const char *v, int min_port, char *host, size_t cap,
		       int *port)
{
	const char *colon = strrchr(v, ':');
	size_t hl = colon ? (size_t)(colon - v) : 0;
	const char *h = v;
	if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']')
		h++, hl -= 2;
	char *end;
	long p = colon ? strtol(colon + 1, &end, 10) : -1;
	if (!colon || hl == 0 || hl >= cap || end == colon + 1 || *end || p < min_port || p > 65535)
		return fl_error_set(FL_EINVAL, "%s: expected HOST:PORT (port %d..65535), got '%s'",
				    flag, min_port, v);
	memcpy(host, h, hl);
	host[hl] = '\0';
	*port = (int)p;
	return FL_OK;
}
