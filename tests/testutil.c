/* testutil.c - helpers for the plain ctest executables. */
#include "testutil.h"

#include "errors.h"
#include "fsutil.h"
#include "rng.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fl_test_failures;
int fl_test_checks;
static int fl_tests_passed, fl_tests_failed, fl_tests_skipped;

int fl_test_check_impl(int ok, const char *file, int line, const char *fmt, ...)
{
	fl_test_checks++;
	if (ok)
		return 1;
	fl_test_failures++;
	fprintf(stderr, "%s:%d: check failed: ", file, line);
	va_list ap;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 0;
}

int fl_test_near_impl(double a, double b, double rtol, double atol, const char *file, int line,
		      const char *an, const char *bn)
{
	int ok = isfinite(a) && isfinite(b) && fabs(a - b) <= atol + rtol * fabs(b);
	return fl_test_check_impl(ok, file, line, "%s = %.9g not near %s = %.9g (rtol %g, atol %g)",
				  an, a, bn, b, rtol, atol);
}

int fl_test_array_near_impl(const float *a, const float *b, size_t n, double rtol, double atol,
			    const char *file, int line, const char *name)
{
	size_t worst = 0;
	double worst_excess = -1;
	int bad = 0;
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)a[i] - b[i]), lim = atol + rtol * fabs((double)b[i]);
		if (!(d <= lim)) {
			bad++;
			if (d - lim > worst_excess || isnan(d)) {
				worst_excess = d - lim;
				worst = i;
			}
		}
	}
	if (bad == 0)
		return fl_test_check_impl(1, file, line, "%s", name);
	return fl_test_check_impl(0, file, line,
				  "%s: %d of %zu elements differ; worst [%zu] %.9g vs %.9g", name,
				  bad, n, worst, (double)a[worst], (double)b[worst]);
}

void fl_test_run(const char *name, void (*fn)(void))
{
	int before = fl_test_failures;
	fn();
	if (fl_test_failures == before) {
		fl_tests_passed++;
		printf("ok   %s\n", name);
	} else {
		fl_tests_failed++;
		printf("FAIL %s (%d checks failed)\n", name, fl_test_failures - before);
	}
	fflush(stdout);
}

int fl_test_main_end(void)
{
	printf("%d passed, %d failed\n", fl_tests_passed, fl_tests_failed);
	if (fl_tests_failed)
		return 1;
	if (fl_tests_skipped) {
		printf("%d part(s) skipped: reported as skipped\n", fl_tests_skipped);
		return 77;
	}
	return 0;
}

void fl_test_skip(const char *why)
{
	printf("skip: %s\n", why);
	fl_tests_skipped++;
}

void fl_test_fill_uniform(float *x, size_t n, uint64_t seed, float lo, float hi)
{
	struct fl_rng rng;
	fl_rng_seed(&rng, seed);
	for (size_t i = 0; i < n; i++)
		x[i] = lo + (hi - lo) * fl_rng_uniform(&rng);
}

void fl_test_widen(double *d, const float *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		d[i] = s[i];
}

const char *fl_test_tmpdir(const char *tag)
{
	static char path[512];
	const char *base = getenv("FL_TMP");
	if (!base || !*base)
		base = "/tmp";
	mkdir(base, 0700);
	snprintf(path, sizeof(path), "%s/fl-%s-%ld", base, tag, (long)getpid());
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
	if (system(cmd) != 0)
		fprintf(stderr, "warning: could not clean %s\n", path);
	mkdir(path, 0700);
	return path;
}

const char *fl_test_data(const char *rel)
{
	static char path[512];
	const char *base = getenv("FL_TEST_DATA");
	if (!base || !*base)
		base = FL_TEST_DATA;
	snprintf(path, sizeof(path), "%s/%s", base, rel);
	return path;
}

char *fl_test_join(const char *dir, const char *name)
{
	static char path[1024];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return path;
}

struct fl_peft_config *fl_test_peft_config(enum fl_peft_param p, int tucker, double gamma, int r,
					   double alpha)
{
	struct fl_peft_config *c = NULL;
	if (fl_peft_config_new(&c) != FL_OK)
		return NULL;
	c->parameterization = p;
	c->use_effective_conv2d = tucker;
	if (r > 0) {
		c->r = r;
		c->alpha = alpha;
	} else {
		c->has_gamma = 1;
		c->gamma = gamma;
	}
	return c;
}

char *fl_test_read_file(const char *path, size_t *len)
{
	char *s = NULL;
	size_t n = 0;
	if (fl_file_read_all(path, (size_t)1 << 30, &s, &n) != FL_OK)
		return NULL;
	if (len)
		*len = n;
	return s;
}

void fl_test_write_file(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");
	if (!FL_CHECK_MSG(f != NULL, "cannot write %s", path))
		return;
	FL_CHECK(fwrite(p, 1, n, f) == n);
	fclose(f);
}

int fl_test_fails_with(int got, int want, const char *needle)
{
	const char *msg = fl_error_msg();
	int ok = got == want && (!needle || strstr(msg, needle));
	if (getenv("FL_TEST_VERBOSE"))
		printf("  error %d: %s\n", got, msg);
	if (!ok)
		fprintf(stderr, "  got %d (%s), want %d with '%s'\n", got, msg, want,
			needle ? needle : "");
	return ok;
}
