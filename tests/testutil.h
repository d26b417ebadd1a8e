/* testutil.h - plain ctest helpers: checks that count failures and report
 * them with file and line, random fills, a temporary folder and whole-file
 * reads and writes. */
#ifndef FL_TESTUTIL_H
#define FL_TESTUTIL_H

#include "peft_config.h"

#include <stddef.h>
#include <stdint.h>

extern int fl_test_failures;
extern int fl_test_checks;

#define FL_CHECK(cond) fl_test_check_impl(!!(cond), __FILE__, __LINE__, "%s", #cond)
#define FL_CHECK_MSG(cond, ...) fl_test_check_impl(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
/* |a - b| <= atol + rtol * |b| */
#define FL_CHECK_NEAR(a, b, rtol, atol) \
	fl_test_near_impl((double)(a), (double)(b), (rtol), (atol), __FILE__, __LINE__, #a, #b)
/* Every element of a within atol + rtol*|b| of b. */
#define FL_CHECK_ARRAY_NEAR(a, b, n, rtol, atol) \
	fl_test_array_near_impl((a), (b), (n), (rtol), (atol), __FILE__, __LINE__, #a)

int fl_test_check_impl(int ok, const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
int fl_test_near_impl(double a, double b, double rtol, double atol, const char *file, int line,
		      const char *an, const char *bn);
int fl_test_array_near_impl(const float *a, const float *b, size_t n, double rtol, double atol,
			    const char *file, int line, const char *name);

/* Runs a test function and prints its name; fl_test_main_end prints the
 * closing "N passed, N failed" line and returns the exit code. */
#define FL_RUN(fn) fl_test_run(#fn, fn)
void fl_test_run(const char *name, void (*fn)(void));
int fl_test_main_end(void);
/* Says that a part of the test could not run (a missing prerequisite): the
 * program then exits 77 (ctest: skipped) unless a check failed. */
void fl_test_skip(const char *why);

/* 1 when got == want and the last error message contains needle (NULL:
 * any message), else 0 with both on stderr; FL_TEST_VERBOSE=1 prints every
 * message checked. */
int fl_test_fails_with(int got, int want, const char *needle);

/* Fills with uniform values in [lo, hi) from a seeded generator. */
void fl_test_fill_uniform(float *x, size_t n, uint64_t seed, float lo, float hi);
/* Copies n floats into doubles (the reference computations' state). */
void fl_test_widen(double *d, const float *s, size_t n);
/* A fresh empty folder under $FL_TMP or /tmp; returns a static path. */
const char *fl_test_tmpdir(const char *tag);
/* Path of a file in tests/data (static buffer, one at a time). */
const char *fl_test_data(const char *rel);
/* dir/name in a static buffer (one at a time). */
char *fl_test_join(const char *dir, const char *name);

/* The whole file, NUL-terminated and malloc'd (*len: its size without the
 * NUL, when len is not NULL), or NULL. */
char *fl_test_read_file(const char *path, size_t *len);
/* Writes n bytes to path; a failed open or write is a failed check. */
void fl_test_write_file(const char *path, const void *p, size_t n);

/* A PEFT-format config for parameterisation p: rank from gamma (fedpara
 * family) when r == 0, else explicit r with alpha. NULL on failure; free
 * with fl_peft_config_free. */
struct fl_peft_config *fl_test_peft_config(enum fl_peft_param p, int tucker, double gamma, int r,
					   double alpha);

#endif
