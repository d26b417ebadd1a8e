/* cliopt.h - checked parsing of command-line values shared by every
 * fedloha executable: numbers within a range and HOST:PORT. Failures return
 * FL_EINVAL with a one-line reason through fl_error_set() naming the flag
 * ("--rounds: expected an integer in [1, 1000000], got 'x'"); the caller
 * prints it with its program name, or lets fl_cliopt_report and the
 * fl_cliopt_key_* forms print it. Nothing here exits. */
#ifndef FL_CLIOPT_H
#define FL_CLIOPT_H

#include <stddef.h>

/* flag is shown as given ("--lr"). */
int fl_cliopt_double(const char *flag, const char *v, double lo, double hi, double *out);
int fl_cliopt_int(const char *flag, const char *v, long lo, long hi, int *out);
int fl_cliopt_llong(const char *flag, const char *v, long long lo, long long hi, long long *out);
/* "host:port" or "[v6]:port"; port in [min_port, 65535] (0 allows "any"). */
int fl_cliopt_hostport(const char *flag, const char *v, int min_port, char *host, size_t cap,
		       int *port);

/* err unchanged; when it is not FL_OK, prints "PROG: <fl_error_msg()>" to
 * stderr and returns FL_EINVAL. */
int fl_cliopt_report(const char *prog, int err);
/* The checks above for the flag "--KEY", reported with fl_cliopt_report. */
int fl_cliopt_key_double(const char *prog, const char *key, const char *v, double lo, double hi,
			 double *out);
int fl_cliopt_key_int(const char *prog, const char *key, const char *v, long lo, long hi, int *out);
int fl_cliopt_key_llong(const char *prog, const char *key, const char *v, long long lo,
			long long hi, long long *out);

/* A flag whose value is kept as given: its name without "--" and the
 * offset of its `const char *` field in the caller's options struct. */
struct fl_cliopt_string {
	const char *name;
	size_t off;
};
/* The field of opts that --name sets, or NULL when name is not in table. */
const char **fl_cliopt_string_slot(const struct fl_cliopt_string *table, size_t n, void *opts,
				   const char *name);

#endif
