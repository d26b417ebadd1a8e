/* cliopt.c - range-checked flag values (see cliopt.h). */
#include "cliopt.h"

#include "errors.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fl_cliopt_double(const char *flag, const char *v, double lo, double hi, double *out)
{
	char *end;
	errno = 0;
	double x = strtod(v, &end);
	if (errno || end == v || *end || !isfinite(x) || x < lo || x > hi)
		return fl_error_set(FL_EINVAL, "%s: expected a number in [%g, %g], got '%s'", flag,
				    lo, hi, v);
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

int fl_cliopt_report(const char *prog, int err)
{
	if (err == FL_OK)
		return FL_OK;
	fprintf(stderr, "%s: %s\n", prog, fl_error_msg());
	return FL_EINVAL;
}

/* "--KEY" in buf. */
static const char *dashed(const char *key, char buf[64])
{
	snprintf(buf, 64, "--%s", key);
	return buf;
}

int fl_cliopt_key_double(const char *prog, const char *key, const char *v, double lo, double hi,
			 double *out)
{
	char f[64];
	return fl_cliopt_report(prog, fl_cliopt_double(dashed(key, f), v, lo, hi, out));
}

int fl_cliopt_key_int(const char *prog, const char *key, const char *v, long lo, long hi, int *out)
{
	char f[64];
	return fl_cliopt_report(prog, fl_cliopt_int(dashed(key, f), v, lo, hi, out));
}

int fl_cliopt_key_llong(const char *prog, const char *key, const char *v, long long lo,
			long long hi, long long *out)
{
	char f[64];
	return fl_cliopt_report(prog, fl_cliopt_llong(dashed(key, f), v, lo, hi, out));
}

const char **fl_cliopt_string_slot(const struct fl_cliopt_string *table, size_t n, void *opts,
				   const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(table[i].name, name))
			return (const char **)(void *)((char *)opts + table[i].off);
	return NULL;
}
