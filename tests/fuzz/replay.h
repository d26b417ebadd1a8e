/* replay.h - the plain main() of the fuzz targets' replay builds: every
 * argument (a file, or every file of a folder, in name order) goes through
 * LLVMFuzzerTestOneInput once. No libFuzzer, no mutation. */
#ifndef FL_FUZZ_REPLAY_H
#define FL_FUZZ_REPLAY_H

#include <stddef.h>

/* Replays argv[1..]; report(path, n) prints a line after each input. 0 when
 * at least one input ran and every argument was readable, else 1. */
int fl_fuzz_replay_main(int argc, char **argv, void (*report)(const char *path, size_t n));

#endif
