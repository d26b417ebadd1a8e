/* client_cli.h - subcommands of fedloha-client. Each returns the process
 * exit code: 0 success, 1 failure, 2 usage error. */
#ifndef CLI_CLIENT_CLI_H
#define CLI_CLIENT_CLI_H

int cli_train_main(int argc, char **argv);
int cli_eval_main(int argc, char **argv);

#endif
