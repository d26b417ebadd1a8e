/* keys_cmd.h - the `keygen` / `pubkey` commands that fedloha-client and
 * fedloha-server both offer: flag parsing, making or loading the key file
 * (identity.h) and printing its public key. Each program supplies its own
 * name, usage text and advice lines; no networking.
 */
#ifndef FL_KEYS_CMD_H
#define FL_KEYS_CMD_H

#include "identity.h"

/* What differs between the programs' key commands. */
struct fl_keys_cmd {
	const char *prog;         /* "fedloha-client": prefix of messages */
	const char *usage;        /* printed for --help (stdout) and bad flags (stderr) */
	const char *replace_hint; /* after "use --force to replace the key; " */
	const char *written_hint; /* after "secret key written to FILE (mode 0600); " */
};

/* A new key pair written to path (0600), refusing to replace an existing
 * file unless force (the error names replace_hint); pub receives its
 * "fl1:..." form. */
int fl_identity_keygen(const char *path, int force, const char *replace_hint,
		       char pub[FL_PUBKEY_STRING_BYTES]);

/* `keygen --out FILE [--force]` or `pubkey --key FILE` (argv[0] names the
 * command): prints the public key on stdout. Returns the exit code: 0, 1 on
 * an error (message on stderr), 2 on bad flags. */
int fl_keys_main(const struct fl_keys_cmd *c, int argc, char **argv);

#endif
