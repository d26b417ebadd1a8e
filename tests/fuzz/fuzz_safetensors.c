/* fuzz_safetensors.c - fuzz target for the safetensors reader: arbitrary
 * bytes through fl_st_parse (8-byte header length, JSON header, tensor
 * data). Invariants checked with abort(): a refusal leaves no file and a
 * one-line message; an accepted file has tensors whose byte counts are
 * numel x dtype size and lie inside the input, that fl_st_find finds by
 * name, metadata entries that fl_st_metadata finds, and floating tensors
 * that convert to float32 (integer ones are refused as unsupported).
 *
 * Built two ways from this one file: with libFuzzer (clang, -DFL_FUZZ=ON)
 * and, with FL_FUZZ_REPLAY defined, as a plain program that runs every file
 * of the given folders or paths through the target (a ctest replaying
 * tests/fuzz/corpus/safetensors). No other I/O.
 */
#include "errors.h"
#include "safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int last_err;
static size_t last_count;

static void check_tensor(const struct fl_st *st, const struct fl_st_tensor *t, size_t size)
{
	size_t es = fl_dtype_size(t->dtype);
	if (!t->name || es == 0 || t->ndim < 0 || t->ndim > FL_ST_NDIM_MAX ||
	    t->nbytes != t->numel * es || t->nbytes > size || fl_st_find(st, t->name) != t)
		abort();
	size_t numel = 1;
	for (int i = 0; i < t->ndim; i++) {
		if (t->shape[i] < 0)
			abort();
		numel *= (size_t)t->shape[i];
	}
	if (numel != t->numel)
		abort();
	float *dst = malloc((t->numel ? t->numel : 1) * sizeof(float));
	if (!dst)
		return;
	int err = fl_st_tensor_to_f32(t, dst, t->numel);
	if (err != FL_OK && err != FL_EUNSUPPORTED)
		abort();
	free(dst);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fl_st *st = NULL;
	last_count = 0;
	last_err = fl_st_parse(data, size, "fuzz", &st);
	if (last_err) {
		if (st || strchr(fl_error_msg(), '\n') || !fl_error_msg()[0])
			abort();
		return 0;
	}
	last_count = fl_st_count(st);
	for (size_t i = 0; i < last_count; i++)
		check_tensor(st, fl_st_at(st, i), size);
	for (size_t i = 0; i < fl_st_metadata_count(st); i++) {
		const char *v = NULL, *k = fl_st_metadata_at(st, i, &v);
		if (!k || !v || !fl_st_metadata(st, k))
			abort();
	}
	fl_st_free(st);
	return 0;
}

#ifdef FL_FUZZ_REPLAY
#include "replay.h"

static void report(const char *path, size_t n)
{
	printf("%-60s %6zu bytes, %s, %zu tensors\n", path, n,
	       last_err ? fl_strerror(last_err) : "ok", last_count);
}

int main(int argc, char **argv)
{
	return fl_fuzz_replay_main(argc, argv, report);
}
#endif
