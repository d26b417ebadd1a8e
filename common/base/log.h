/* log.h - leveled logging to stderr. Kernels never log; front ends and
 * daemons do. The level is process-wide and set once at start-up. */
#ifndef FL_LOG_H
#define FL_LOG_H

enum fl_log_level {
	FL_LOG_ERROR = 0,
	FL_LOG_WARN,
	FL_LOG_INFO,
	FL_LOG_DEBUG
};

void fl_log_set_level(enum fl_log_level level);
/* Parses "error", "warn", "info" or "debug"; returns FL_OK or FL_EINVAL. */
int fl_log_parse_level(const char *s, enum fl_log_level *out);
void fl_log(enum fl_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define fl_log_error(...) fl_log(FL_LOG_ERROR, __VA_ARGS__)
#define fl_log_warn(...) fl_log(FL_LOG_WARN, __VA_ARGS__)
#define fl_log_info(...) fl_log(FL_LOG_INFO, __VA_ARGS__)
#define fl_log_debug(...) fl_log(FL_LOG_DEBUG, __VA_ARGS__)

#endif
