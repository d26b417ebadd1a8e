/* fuzz_dataset_st.c - fuzz target for the safetensors data folder: the
 * input is written as <tmp>/train.safetensors and read with
 * fl_dataset_load_safetensors (x and y tensors, dtypes, shapes, label and
 * token ranges). Invariants checked with abort(): a refusal leaves no data
 * set and a one-line message; an accepted one has n >= 1 samples, exactly
 * one storage (bytes or floats), finite float values, labels in
 * [0, classes) with classes >= 2.
 *
 * Built two ways from this one file: with libFuzzer (clang, -DFL_FUZZ=ON)
 * and, with FL_FUZZ_REPLAY defined, as a plain program that runs every file
 * of the given folders or paths through the target (a ctest replaying
 * tests/fuzz/corpus/dataset_st). Its only I/O is the temporary folder
 * (fuzz_tmp.h).
 */
#include "dataset.h"
#include "errors.h"
#include "fuzz_tmp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int last_err, last_n;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fl_fuzz_tmp_write("train.safetensors", data, size, 0600);
	struct fl_dataset *ds = NULL;
	last_n = 0;
	last_err = fl_dataset_load_safetensors(fl_fuzz_tmp_dir(), 1, &ds);
	if (last_err) {
		if (ds || strchr(fl_error_msg(), '\n') || !fl_error_msg()[0])
			abort();
		return 0;
	}
	last_n = ds->n;
	size_t per = (size_t)ds->c * (size_t)ds->h * (size_t)ds->w;
	if (ds->n < 1 || per == 0 || !ds->labels || ds->classes < 2 || !ds->pixels == !ds->values)
		abort();
	for (int i = 0; i < ds->n; i++)
		if (ds->labels[i] < 0 || ds->labels[i] >= ds->classes)
			abort();
	for (size_t i = 0; ds->values && i < per * (size_t)ds->n; i++)
		if (!isfinite(ds->values[i]))
			abort();
	fl_dataset_free(ds);
	return 0;
}

#ifdef FL_FUZZ_REPLAY
#include "replay.h"

static void report(const char *path, size_t n)
{
	printf("%-60s %6zu bytes, %s, %d samples\n", path, n,
	       last_err ? fl_strerror(last_err) : "ok", last_n);
}

int main(int argc, char **argv)
{
	return fl_fuzz_replay_main(argc, argv, report);
}
#endif
