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
#include "keys_cmd.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *f)
{
	fprintf(f,
		"usage: fedloha-client <command> [options]\n\n"
		"commands:\n"
		"  train    train a model locally on a data set and save it\n"
		"  eval     evaluate a saved model on a test set\n"
		"  run      join a federated session (fedloha-server) and train rounds\n"
		"  keygen   --out FILE [--force]: make this client's key (0600), print its public key\n"
		"  pubkey   --key FILE: print the public key of a key file\n\n"
		"Run 'fedloha-client <command> --help' for the options of a command.\n");
}

static const struct fl_keys_cmd keys_cmd = {
	.prog = "fedloha-client",
	.usage = "usage: fedloha-client keygen --out FILE [--force]\n"
		 "       fedloha-client pubkey --key FILE\n\n"
		 "keygen writes a new secret key to FILE (mode 0600; missing folders are made\n"
		 "0700) and prints its public key (fl1:...) for the coordinator's allow-list;\n"
		 "an existing FILE is kept unless --force. pubkey prints the public key of a\n"
		 "key file again.\n",
	.replace_hint = "the coordinator must then allow the new public key",
	.written_hint = "add this public key to the coordinator's allow-list:",
};

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
		return fl_keys_main(&keys_cmd, argc - 1, argv + 1);
	fprintf(stderr, "fedloha-client: unknown command '%s' (try --help)\n", cmd);
	return 2;
}
