/* fuzz_peft_regex.c - fuzz target for the translation of PEFT's Python
 * regexes (target_modules and the pattern keys) to POSIX: the input is
 * "pattern\nsubject" (no newline: the whole input is the pattern and the
 * subject is empty), run through fl_peft_regex_fullmatch. Invariants
 * checked with abort(): the result is FL_OK with matched 0 or 1, or
 * FL_EINVAL with a one-line message; a pattern made of letters and digits
 * only matches exactly itself.
 *
 * Built two ways from this one file: with libFuzzer (clang, -DFL_FUZZ=ON)
 * and, with FL_FUZZ_REPLAY defined, as a plain program that runs every file
 * of the given folders or paths through the target (a ctest replaying
 * tests/fuzz/corpus/peft_regex). No other I/O.
 */
#include "errors.h"
#include "peft_config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int last_err, last_matched;

static int plain(const char *s)
{
	if (!*s)
		return 0;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s))
			return 0;
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';
	char *nl = memchr(buf, '\n', size);
	const char *subject = "";
	if (nl) {
		*nl = '\0';
		subject = nl + 1;
	}
	int m = -1;
	last_err = fl_peft_regex_fullmatch(buf, subject, &m);
	last_matched = m;
	if (last_err == FL_OK) {
		if (m != 0 && m != 1)
			abort();
		if (plain(buf) && m != (strcmp(buf, subject) == 0))
			abort();
	} else if (last_err != FL_EINVAL || strchr(fl_error_msg(), '\n') || !fl_error_msg()[0]) {
		abort();
	}
	free(buf);
	return 0;
}

#ifdef FL_FUZZ_REPLAY
#include "replay.h"

static void report(const char *path, size_t n)
{
	printf("%-60s %6zu bytes, %s, matched %d\n", path, n,
	       last_err ? fl_strerror(last_err) : "ok", last_matched);
}

int main(int argc, char **argv)
{
	return fl_fuzz_replay_main(argc, argv, report);
}
#endif
