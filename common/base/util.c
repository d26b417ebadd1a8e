/* util.c - the monotonic clock and fl_strdup (see util.h). */
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

double fl_now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

char *fl_strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = malloc(n);
	if (d)
		memcpy(d, s, n);
	return d;
}
