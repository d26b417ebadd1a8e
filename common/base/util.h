/* util.h - two small process helpers shared by every layer: a monotonic
 * clock in seconds (for durations, never wall time) and a strdup that only
 * needs C11. */
#ifndef FL_UTIL_H
#define FL_UTIL_H

/* Seconds on CLOCK_MONOTONIC; only differences mean anything. */
double fl_now_seconds(void);
/* A malloc'd copy of s, or NULL when out of memory. */
char *fl_strdup(const char *s);

#endif
