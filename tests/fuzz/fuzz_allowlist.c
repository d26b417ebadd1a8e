/* fuzz_allowlist.c - fuzz target for the coordinator's allow-list text:
 * arbitrary bytes through srv_allowlist_parse. Invariants checked with
 * abort(): a refusal leaves no set and a one-line message; an accepted set
 * holds at most one key per input line, and every line that starts with a
 * well-formed "fl1:" key (followed by a blank or the line's end) has that
 * key in the set with a name.
 *
 * Built two ways from this one file: with libFuzzer (clang, -DFL_FUZZ=ON)
 * and, with FL_FUZZ_REPLAY defined, as a plain program that runs every file
 * of the given folders or paths through the target (a ctest replaying
 * tests/fuzz/corpus/allowlist). No other I/O.
 */
#include "allowlist.h"
#include "errors.h"
#include "identity.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int last_err;
static size_t last_count;

#define KEY_CHARS (FL_PUBKEY_STRING_BYTES - 1)

/* The key a line starts with must be in the set. */
static void check_line(const struct srv_allowlist *al, const char *line, size_t n)
{
	char key[FL_PUBKEY_STRING_BYTES];
	uint8_t pk[FL_PUBKEY_BYTES];
	if (n < KEY_CHARS || (n > KEY_CHARS && line[KEY_CHARS] != ' ' && line[KEY_CHARS] != '\t'))
		return;
	memcpy(key, line, KEY_CHARS);
	key[KEY_CHARS] = '\0';
	if (fl_pubkey_parse(key, pk) != FL_OK)
		return;
	if (!srv_allowlist_contains(al, pk) || !srv_allowlist_name(al, pk))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct srv_allowlist *al = NULL;
	last_count = 0;
	last_err = srv_allowlist_parse((const char *)data, size, "fuzz", &al);
	if (last_err) {
		if (al || strchr(fl_error_msg(), '\n') || !fl_error_msg()[0])
			abort();
		return 0;
	}
	last_count = srv_allowlist_count(al);
	size_t lines = 0;
	const char *p = (const char *)data, *end = p + size;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		check_line(al, p, n);
		lines++;
		p += n + 1;
	}
	if (last_count > lines)
		abort();
	srv_allowlist_free(al);
	return 0;
}

#ifdef FL_FUZZ_REPLAY
#include "replay.h"

static void report(const char *path, size_t n)
{
	printf("%-60s %6zu bytes, %s, %zu keys\n", path, n, last_err ? fl_strerror(last_err) : "ok",
	       last_count);
}

int main(int argc, char **argv)
{
	return fl_fuzz_replay_main(argc, argv, report);
}
#endif
