/* fuzz_peft_config.c - fuzz target for adapter_config.json: arbitrary bytes
 * through fl_peft_config_parse (the text a coordinator's Welcome and an
 * adapter folder carry), then the module-selection rules on a few module
 * names. Invariants checked with abort(): a refusal leaves no config and a
 * one-line message; an accepted config validates, has r >= 1, and every
 * selection call on it returns FL_OK, FL_EUNSUPPORTED (target_modules null)
 * or FL_EINVAL with a one-line message.
 *
 * Built two ways from this one file: with libFuzzer (clang, -DFL_FUZZ=ON)
 * and, with FL_FUZZ_REPLAY defined, as a plain program that runs every file
 * of the given folders or paths through the target (a ctest replaying
 * tests/fuzz/corpus/peft_config). No other I/O.
 */
#include "errors.h"
#include "peft_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int last_err, last_targeted;

static const char *const modules[] = {
	"fc1", "layers.0.fc1", "model.layers.12.self_attn.q_proj", "conv.0", "head",
};

static void check_rc(int rc)
{
	if (rc != FL_OK && rc != FL_EUNSUPPORTED && rc != FL_EINVAL)
		abort();
	if (rc != FL_OK && (strchr(fl_error_msg(), '\n') || !fl_error_msg()[0]))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fl_peft_config *c = NULL;
	last_targeted = 0;
	last_err = fl_peft_config_parse((const char *)data, size, "fuzz", &c);
	if (last_err) {
		if (c || strchr(fl_error_msg(), '\n') || !fl_error_msg()[0])
			abort();
		return 0;
	}
	if (fl_peft_config_validate(c) != FL_OK || c->r < 1)
		abort();
	for (size_t i = 0; i < sizeof(modules) / sizeof(modules[0]); i++) {
		int t = 0;
		check_rc(fl_peft_config_targets(c, modules[i], (int)(i & 1), i == 4, &t));
		last_targeted += t;
		(void)fl_peft_config_scale(c, modules[i]);
		(void)fl_peft_config_is_module_to_save(c, modules[i]);
	}
	fl_peft_config_free(c);
	return 0;
}

#ifdef FL_FUZZ_REPLAY
#include "replay.h"

static void report(const char *path, size_t n)
{
	printf("%-60s %6zu bytes, %s, %d targeted\n", path, n,
	       last_err ? fl_strerror(last_err) : "ok", last_targeted);
}

int main(int argc, char **argv)
{
	return fl_fuzz_replay_main(argc, argv, report);
}
#endif
