/* fuzz_idx.c - fuzz target for the MNIST-style IDX reader (the Fashion-MNIST
 * files): the input is "L (2 bytes, little-endian), L bytes of the images
 * file, the labels file" (L clamped to what is there), both written to
 * temporary files (raw, or gzip when they start with its magic) and read
 * with fl_dataset_load_idx. Invariants checked with abort(): a refusal
 * leaves no data set and a one-line message; an accepted one has n >= 1
 * samples of 1 x rows x cols bytes and every label in [0, classes).
 *
 * Built two ways from this one file: with libFuzzer (clang, -DFL_FUZZ=ON)
 * and, with FL_FUZZ_REPLAY defined, as a plain program that runs every file
 * of the given folders or paths through the target (a ctest replaying
 * tests/fuzz/corpus/idx). Its only I/O is the temporary folder (fuzz_tmp.h).
 */
#include "dataset.h"
#include "errors.h"
#include "fuzz_tmp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int last_err, last_n;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	size_t l = (size_t)data[0] | (size_t)data[1] << 8;
	if (l > size - 2)
		l = size - 2;
	const char *img = fl_fuzz_tmp_write("images", data + 2, l, 0600);
	const char *lab = fl_fuzz_tmp_write("labels", data + 2 + l, size - 2 - l, 0600);
	struct fl_dataset *ds = NULL;
	last_n = 0;
	last_err = fl_dataset_load_idx(img, lab, &ds);
	if (last_err) {
		if (ds || strchr(fl_error_msg(), '\n') || !fl_error_msg()[0])
			abort();
		return 0;
	}
	last_n = ds->n;
	if (ds->n < 1 || ds->c != 1 || ds->h < 1 || ds->w < 1 || !ds->pixels || !ds->labels)
		abort();
	for (int i = 0; i < ds->n; i++)
		if (ds->labels[i] < 0 || ds->labels[i] >= ds->classes)
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
