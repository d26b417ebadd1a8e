/* keys_cmd.c - the keygen / pubkey commands shared by fedloha-client and
 * fedloha-server (keys_cmd.h). Prints to stdout (the public key) and stderr
 * (usage, errors, advice); the key file work is identity.c.
 */
#include "keys_cmd.h"

#include "errors.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

int fl_identity_keygen(const char *path, int force, const char *replace_hint,
		       char pub[FL_PUBKEY_STRING_BYTES])
{
	struct stat st;
	if (!force && lstat(path, &st) == 0)
		return fl_error_set(FL_EINVAL,
				    "%s already exists: not overwritten (use --force to "
				    "replace the key; %s)",
				    path, replace_hint);
	struct fl_identity *id = NULL;
	int err = fl_identity_generate(&id);
	if (!err)
		err = fl_identity_save(id, path);
	if (!err)
		fl_identity_public_string(id, pub);
	fl_identity_free(id);
	return err;
}

/* The key file of argv (NULL on a bad or missing flag); *force for keygen. */
static const char *keys_path(int argc, char **argv, int gen, int *force, int *help)
{
	const char *path = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			*help = 1;
			return NULL;
		}
		if (!strcmp(argv[i], "--force") && gen)
			*force = 1;
		else if ((!strcmp(argv[i], "--out") || !strcmp(argv[i], "--key")) && i + 1 < argc)
			path = argv[++i];
		else
			return NULL;
	}
	return path;
}

int fl_keys_main(const struct fl_keys_cmd *c, int argc, char **argv)
{
	int gen = !strcmp(argv[0], "keygen"), force = 0, help = 0;
	const char *path = keys_path(argc, argv, gen, &force, &help);
	if (!path) {
		fputs(c->usage, help ? stdout : stderr);
		return help ? 0 : 2;
	}
	char pub[FL_PUBKEY_STRING_BYTES];
	struct fl_identity *id = NULL;
	int err = gen ? fl_identity_keygen(path, force, c->replace_hint, pub)
		      : fl_identity_load(path, &id);
	if (err) {
		fprintf(stderr, "%s: %s\n", c->prog, fl_error_msg());
		return 1;
	}
	if (id)
		fl_identity_public_string(id, pub);
	fl_identity_free(id);
	if (gen)
		fprintf(stderr, "%s: secret key written to %s (mode 0600); %s\n", c->prog, path,
			c->written_hint);
	printf("%s\n", pub);
	return 0;
}
