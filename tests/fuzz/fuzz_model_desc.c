/* fuzz_model_desc.c - fuzz target for the model description loader: arbitrary
 * bytes through fl_model_desc_parse. Invariants checked with abort(): a
 * refusal leaves no description and a one-line message; an accepted
 * description has 1..FL_MODEL_DESC_STEPS_MAX steps, shapes that chain from
 * the input to (classes), residual adds whose skip has their shape, and a
 * canonical text that parses again to itself with the same steps (and so
 * does fl_model_desc_copy).
 *
 * Built two ways from this one file: with libFuzzer (clang, -DFL_FUZZ=ON)
 * and, with FL_FUZZ_REPLAY defined, as a plain program that runs every file
 * of the given folders or paths through the target (a ctest replaying
 * tests/fuzz/corpus/model_desc). No other I/O.
 */
#include "errors.h"
#include "model_desc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What the last input did, for the replay program's listing. */
static int last_err, last_steps;

static int same_shape(const struct fl_desc_shape *a, const struct fl_desc_shape *b)
{
	if (a->ndim != b->ndim)
		return 0;
	for (int i = 0; i < a->ndim; i++)
		if (a->dim[i] != b->dim[i])
			return 0;
	return 1;
}

static void check_steps(const struct fl_model_desc *d)
{
	if (d->nsteps < 1 || d->nsteps > FL_MODEL_DESC_STEPS_MAX || !d->text ||
	    strlen(d->text) != d->text_len)
		abort();
	const struct fl_desc_shape *prev = &d->input;
	for (int i = 0; i < d->nsteps; i++) {
		const struct fl_desc_step *s = &d->steps[i];
		if (!same_shape(&s->in_shape, prev) || fl_desc_shape_numel(&s->out_shape) == 0)
			abort();
		if (s->op == FL_OP_RESIDUAL_ADD) {
			const struct fl_desc_shape *skip = s->src[1] < 0
								   ? &d->input
								   : &d->steps[s->src[1]].out_shape;
			if (s->src[1] >= i || !same_shape(skip, &s->out_shape) ||
			    !same_shape(&s->in_shape, &s->out_shape))
				abort();
		}
		prev = &s->out_shape;
	}
	if (prev->ndim != 1 || prev->dim[0] != d->classes)
		abort();
}

static void check_same(const struct fl_model_desc *a, const struct fl_model_desc *b)
{
	if (a->text_len != b->text_len || strcmp(a->text, b->text) != 0 || a->nsteps != b->nsteps ||
	    strcmp(a->label, b->label) != 0)
		abort();
	for (int i = 0; i < a->nsteps; i++)
		if (memcmp(&a->steps[i], &b->steps[i], sizeof(a->steps[i])) != 0)
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fl_model_desc *d = NULL, *again = NULL, *copy = NULL;
	last_steps = 0;
	last_err = fl_model_desc_parse((const char *)data, size, "fuzz", &d);
	if (last_err) {
		if (d || strchr(fl_error_msg(), '\n') || !fl_error_msg()[0])
			abort();
		return 0;
	}
	last_steps = d->nsteps;
	check_steps(d);
	if (fl_model_desc_parse(d->text, d->text_len, "again", &again) != FL_OK)
		abort();
	check_same(d, again);
	if (fl_model_desc_copy(d, &copy) != FL_OK)
		abort();
	check_same(d, copy);
	fl_model_desc_free(copy);
	fl_model_desc_free(again);
	fl_model_desc_free(d);
	return 0;
}

#ifdef FL_FUZZ_REPLAY
#include "replay.h"

static void report(const char *path, size_t n)
{
	printf("%-60s %6zu bytes, %s, %d steps\n", path, n, last_err ? fl_strerror(last_err) : "ok",
	       last_steps);
}

int main(int argc, char **argv)
{
	return fl_fuzz_replay_main(argc, argv, report);
}
#endif
