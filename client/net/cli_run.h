/* cli_run.h - `fedloha-client run`: the federated edge client daemon
 * (cli_run.c). Returns the process exit code: 0 when the server finished
 * the session, 128 + signal after SIGINT / SIGTERM, 1 on failure, 2 on a
 * usage error. */
#ifndef CLI_RUN_H
#define CLI_RUN_H

int cli_run_main(int argc, char **argv);

#endif
