/* log.c - leveled logging to stderr with a UTC timestamp. */
#include "log.h"

#include "errors.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static enum fl_log_level fl_level = FL_LOG_INFO;
static const char *const fl_level_names[] = {"error", "warn", "info", "debug"};

void fl_log_set_level(enum fl_log_level level)
{
	fl_level = level;
}

int fl_log_parse_level(const char *s, enum fl_log_level *out)
{
	for (int i = 0; i <= FL_LOG_DEBUG; i++) {
		if (strcmp(s, fl_level_names[i]) == 0) {
			*out = (enum fl_log_level)i;
			return FL_OK;
		}
	}
	return fl_error_set(FL_EINVAL, "unknown log level '%s' (error, warn, info, debug)", s);
}

void fl_log(enum fl_log_level level, const char *fmt, ...)
{
	if (level > fl_level)
		return;
	char ts[32];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s %-5s %s\n", ts, fl_level_names[level], line);
}
