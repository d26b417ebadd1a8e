/* fuzz_keys.c - fuzz target for the key formats of identity.c. Byte 0 picks
 * the reader (% 3), the rest is its input:
 *   0  fl_pubkey_parse on the text (up to its first NUL);
 *   1  fl_identity_load on a secret-key file (mode 0600) of those bytes;
 *   2  fl_pubkey_parse_arg on a file of those bytes (the --server-key form).
 * Invariants checked with abort(): a refusal leaves no identity and a
 * one-line message; an accepted public key formats to a string that parses
 * back to the same key; a loaded identity's public string parses to its
 * public key.
 *
 * Built two ways from this one file: with libFuzzer (clang, -DFL_FUZZ=ON)
 * and, with FL_FUZZ_REPLAY defined, as a plain program that runs every file
 * of the given folders or paths through the target (a ctest replaying
 * tests/fuzz/corpus/keys). Its only I/O is the temporary folder
 * (fuzz_tmp.h).
 */
#include "errors.h"
#include "fuzz_tmp.h"
#include "identity.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int last_err, last_mode;

static void check_refusal(void)
{
	if (strchr(fl_error_msg(), '\n') || !fl_error_msg()[0])
		abort();
}

static void check_key(const uint8_t pk[FL_PUBKEY_BYTES])
{
	char s[FL_PUBKEY_STRING_BYTES];
	uint8_t again[FL_PUBKEY_BYTES];
	fl_pubkey_format(pk, s);
	if (fl_pubkey_parse(s, again) != FL_OK || memcmp(pk, again, FL_PUBKEY_BYTES) != 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t pk[FL_PUBKEY_BYTES];
	last_mode = data[0] % 3;
	if (last_mode == 0) {
		char *s = malloc(size);
		if (!s)
			return 0;
		memcpy(s, data + 1, size - 1);
		s[size - 1] = '\0';
		last_err = fl_pubkey_parse(s, pk);
		free(s);
	} else if (last_mode == 1) {
		const char *path = fl_fuzz_tmp_write("key", data + 1, size - 1, 0600);
		struct fl_identity *id = NULL;
		last_err = fl_identity_load(path, &id);
		if (last_err == FL_OK) {
			char s[FL_PUBKEY_STRING_BYTES];
			fl_identity_public_string(id, s);
			if (fl_pubkey_parse(s, pk) != FL_OK ||
			    memcmp(pk, fl_identity_pk(id), FL_PUBKEY_BYTES) != 0)
				abort();
		} else if (id) {
			abort();
		} else {
			check_refusal();
		}
		fl_identity_free(id);
		return 0;
	} else {
		const char *path = fl_fuzz_tmp_write("server.pub", data + 1, size - 1, 0644);
		last_err = fl_pubkey_parse_arg(path, pk);
	}
	if (last_err)
		check_refusal();
	else
		check_key(pk);
	return 0;
}

#ifdef FL_FUZZ_REPLAY
#include "replay.h"

static void report(const char *path, size_t n)
{
	printf("%-60s %6zu bytes, mode %d, %s\n", path, n, last_mode,
	       last_err ? fl_strerror(last_err) : "ok");
}

int main(int argc, char **argv)
{
	return fl_fuzz_replay_main(argc, argv, report);
}
#endif
