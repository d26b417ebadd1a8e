/* client_cli.h - subcommands of fedloha-client. Each returns the process
 * exit code: 0 success, 1 failure, 2 usage error. */
#ifndef CLI_CLIENT_CLI_H
#define CLI_CLIENT_CLI_H

int cli_train_main(int argc, char **argv);
int cli_eval_main(int argc, char **argv);

/* Shared by the subcommands' flag parsing: one line for a getopt failure
 * (opterr = 0, optstring starting with ':'), and an integer flag in
 * [lo, hi] (FL_EINVAL with the message printed). */
void cli_option_error(const char *cmd, int ch, char **argv);
int cli_parse_int(const char *s, const char *flag, long lo, long hi, int *out);

#endif
