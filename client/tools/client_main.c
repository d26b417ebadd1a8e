/* client_main.c - fedloha-client: the edge-side command line.
 *
 *   fedloha-client train   local (centralised) training and evaluation
 *   fedloha-client eval    evaluate a saved model on a test set
 *   fedloha-client run     the federated client daemon (cli_run.c)
 *   fedloha-client keygen  a new secret key (0600); prints the public key
 *   fedloha-client pubkey  prints the public key of a key file
 *
 * This file parses flags and reports progress; the work is in libfedloha.
 */
#include "cli_run.h"
#include "client_cli.h"
#include "errors.h"
#include "identity.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static void usage(FILE *f)
{
	fprintf(f, "usage: fedloha-client <command> [options]\n\n"
		   "commands:\n"
		   "  train    train a model locally on a data set and save it\n"
		   "  eval     evaluate a saved model on a test set\n"
		   "  run      join a federated session (fedloha-server) and train rounds\n"
		   "  keygen   --out FILE [--force]: make this client's key (0600), print its public key\n"
		   "  pubkey   --key FILE: print the public key of a key file\n\n"
		   "Run 'fedloha-client <command> --help' for the options of a command.\n");
}

static void keys_usage(FILE *f)
{
	fprintf(f, "usage: fedloha-client keygen --out FILE [--force]\n"
		   "       fedloha-client pubkey --key FILE\n\n"
		   "keygen writes a new secret key to FILE (mode 0600; missing folders are made\n"
		   "0700) and prints its public key (fl1:...) for the coordinator's allow-list;\n"
		   "an existing FILE is kept unless --force. pubkey prints the public key of a\n"
		   "key file again.\n");
}

/* keygen --out FILE [--force] | pubkey --key FILE */
static int keys_main(int argc, char **argv)
{
	int gen = !strcmp(argv[0], "keygen"), force = 0;
	const char *path = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			keys_usage(stdout);
			return 0;
		}
		if (!strcmp(argv[i], "--force") && gen) {
			force = 1;
		} else if ((!strcmp(argv[i], "--out") || !strcmp(argv[i], "--key")) && i + 1 < argc) {
			path = argv[++i];
		} else {
			path = NULL;
			break;
		}
	}
	if (!path) {
		keys_usage(stderr);
		return 2;
	}
	struct stat st;
	struct fl_identity *id = NULL;
	int err;
	if (gen && !force && lstat(path, &st) == 0)
		err = fl_error_set(FL_EINVAL, "%s already exists: not overwritten (use --force to "
					      "replace the key; the coordinator must then allow the "
					      "new public key)",
				   path);
	else if (gen && !(err = fl_identity_generate(&id)))
		err = fl_identity_save(id, path);
	else if (!gen)
		err = fl_identity_load(path, &id);
	if (err) {
		fprintf(stderr, "fedloha-client: %s\n", fl_error_msg());
		fl_identity_free(id);
		return 1;
	}
	char pub[FL_PUBKEY_STRING_BYTES];
	fl_identity_public_string(id, pub);
	fl_identity_free(id);
	if (gen)
		fprintf(stderr, "fedloha-client: secret key written to %s (mode 0600); add this "
				"public key to the coordinator's allow-list:\n", path);
	printf("%s\n", pub);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[1];
	if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(cmd, "--version") == 0) {
		printf("fedloha-client 0.1.0\n");
		return 0;
	}
	if (strcmp(cmd, "train") == 0)
		return cli_train_main(argc - 1, argv + 1);
	if (strcmp(cmd, "eval") == 0)
		return cli_eval_main(argc - 1, argv + 1);
	if (strcmp(cmd, "run") == 0)
		return cli_run_main(argc - 1, argv + 1);
	if (strcmp(cmd, "keygen") == 0 || strcmp(cmd, "pubkey") == 0)
		return keys_main(argc - 1, argv + 1);
	fprintf(stderr, "fedloha-client: unknown command '%s' (try --help)\n", cmd);
	return 2;
}
