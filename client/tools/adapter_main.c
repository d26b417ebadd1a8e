/* adapter_main.c - fedloha-adapter: PEFT LoHa adapter tools on the command
 * line (merge, inspect). Only argument parsing and messages live here; the
 * work is common/format/adapter.c. Errors: one line "fedloha-adapter: ..." on
 * stderr, exit 1; usage errors exit 2.
 */
#include "adapter.h"
#include "errors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef FL_VERSION
#define FL_VERSION "0.1.0"
#endif

#define PROG "fedloha-adapter"

static const char usage_main[] =
	"usage: " PROG " COMMAND [OPTIONS]\n"
	"\n"
	"Tools for HuggingFace PEFT LoHa adapter folders (adapter_config.json +\n"
	"adapter_model.safetensors); merge also takes PEFT LoRA folders (fedloha's\n"
	"lowrank models).\n"
	"\n"
	"commands:\n"
	"  merge     merge an adapter into a base model (PEFT merge_and_unload)\n"
	"  inspect   describe an adapter module by module\n"
	"\n"
	"options:\n"
	"  -h, --help     this text; `" PROG " COMMAND --help` for a command\n"
	"  --version      print the version\n"
	"\n"
	"Errors print one line on stderr; exit status 1 on failure, 2 on bad usage.\n";

static const char usage_merge[] =
	"usage: " PROG " merge --base BASE.safetensors --adapter DIR --out OUT.safetensors\n"
	"                       [--output-layer NAME]\n"
	"\n"
	"Adds each adapter delta dW to the targeted weights of BASE, replaces the\n"
	"modules_to_save tensors, copies every other tensor unchanged, and writes OUT\n"
	"atomically with BASE's metadata. With s = alpha / r (r and alpha per module from\n"
	"rank_pattern and alpha_pattern) and (.) the element-wise product:\n"
	"  LoHa (peft_type LOHA):  dW = s * (w1_a @ w1_b) (.) (w2_a @ w2_b)  (Tucker form\n"
	"                          for convs when use_effective_conv2d)\n"
	"  pFedPara (a fedloha LOHA folder with fedloha_parameterization \"pfedpara\"):\n"
	"                          dW = s * P1 (.) (P2 + 1),  P1 = w1_a @ w1_b, P2 = w2_a @ w2_b\n"
	"  LoRA (peft_type LORA):  dW = (lora_alpha / r) * lora_B @ lora_A  (alpha / sqrt(r)\n"
	"                          with use_rslora; conv lora_A (r,I,K1,K2), lora_B (O,r,1,1))\n"
	"\n"
	"Merged weights keep BASE's dtype: the sum is formed in float32 (float64 for F64\n"
	"weights) and rounded to nearest-even for F16 / BF16. Nothing is written when a\n"
	"factor is missing, has a wrong shape or a non-finite value, when the adapter\n"
	"names a module BASE lacks or the config does not target, or when a merged\n"
	"value is not finite in the output dtype.\n"
	"\n"
	"options:\n"
	"  --base FILE          base model weights (PyTorch names, safetensors)\n"
	"  --adapter DIR        PEFT LoHa or LoRA adapter folder\n"
	"  --out FILE           merged weights to write (may equal --base)\n"
	"  --output-layer NAME  module that target_modules \"all-linear\" leaves alone\n"
	"                       (e.g. lm_head); default: none\n"
	"  -h, --help           this text\n";

static const char usage_inspect[] =
	"usage: " PROG " inspect DIR [--base BASE.safetensors] [--json]\n"
	"\n"
	"Prints one line per adapted module: name, form (linear, conv-reshape,\n"
	"conv-tucker), out, in, k1, k2, r, alpha, scale = alpha / r, factor and dense\n"
	"parameter counts, the rank bound min(r^2, out, in*k1*k2) and the compression\n"
	"ratio dense / factors; then the totals. The adapter is checked as merge checks\n"
	"it. Without --base, shapes come from the factors alone, so a reshaped conv\n"
	"shows as linear with in = I*k1*k2. The last line names the formula merge\n"
	"applies: LoHa, or pFedPara's W0 + s * P1 (.) (P2 + 1) for a fedloha pFedPara\n"
	"folder (fedloha_parameterization \"pfedpara\"). LoRA folders merge but are not\n"
	"inspected.\n"
	"\n"
	"options:\n"
	"  --base FILE   take the true weight shapes from this base model\n"
	"  --json        one JSON object per module per line, then {\"total\": true, ...}\n"
	"  -h, --help    this text\n";

static int usage_error(const char *cmd, const char *fmt, const char *arg)
{
	fprintf(stderr, PROG ": ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, " (see " PROG "%s%s --help)\n", cmd ? " " : "", cmd ? cmd : "");
	return 2;
}

static int fail(void)
{
	fprintf(stderr, PROG ": %s\n", fl_error_msg());
	return 1;
}

static int is_help(const char *a)
{
	return strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0;
}

/* Matches "--name VALUE" or "--name=VALUE"; advances *i. 1 matched, 0 not,
 * -1 when the value is missing. */
static int opt_value(int argc, char **argv, int *i, const char *name, const char **val)
{
	size_t n = strlen(name);
	if (strncmp(argv[*i], name, n) != 0)
		return 0;
	if (argv[*i][n] == '=') {
		*val = argv[*i] + n + 1;
		return 1;
	}
	if (argv[*i][n] != '\0')
		return 0;
	if (*i + 1 >= argc)
		return -1;
	*val = argv[++*i];
	return 1;
}

static int cmd_merge(int argc, char **argv)
{
	const char *base = NULL, *adapter = NULL, *out = NULL, *output_layer = NULL;
	for (int i = 2; i < argc; i++) {
		int r;
		if (is_help(argv[i])) {
			fputs(usage_merge, stdout);
			return 0;
		}
		if ((r = opt_value(argc, argv, &i, "--base", &base)) ||
		    (r = opt_value(argc, argv, &i, "--adapter", &adapter)) ||
		    (r = opt_value(argc, argv, &i, "--out", &out)) ||
		    (r = opt_value(argc, argv, &i, "--output-layer", &output_layer))) {
			if (r < 0)
				return usage_error("merge", "option %s needs a value", argv[i]);
			continue;
		}
		return usage_error("merge", "unexpected argument '%s'", argv[i]);
	}
	if (!base || !adapter || !out)
		return usage_error("merge", "%s", "merge needs --base, --adapter and --out");
	struct fl_adapter_merge_opts opts = {.output_layer = output_layer};
	struct fl_adapter_merge_stats st;
	if (fl_adapter_merge(base, adapter, out, &opts, &st) != FL_OK)
		return fail();
	printf("merged %zu adapted weights into %s (%zu replaced from modules_to_save, "
	       "%zu copied unchanged)\n",
	       st.merged, out, st.replaced, st.copied);
	return 0;
}

static int cmd_inspect(int argc, char **argv)
{
	const char *dir = NULL, *base = NULL;
	int json = 0;
	for (int i = 2; i < argc; i++) {
		int r;
		if (is_help(argv[i])) {
			fputs(usage_inspect, stdout);
			return 0;
		}
		if (strcmp(argv[i], "--json") == 0) {
			json = 1;
		} else if ((r = opt_value(argc, argv, &i, "--base", &base)) != 0) {
			if (r < 0)
				return usage_error("inspect", "option %s needs a value", argv[i]);
		} else if (argv[i][0] == '-' && argv[i][1] != '\0') {
			return usage_error("inspect", "unknown option '%s'", argv[i]);
		} else if (dir) {
			return usage_error("inspect", "unexpected argument '%s'", argv[i]);
		} else {
			dir = argv[i];
		}
	}
	if (!dir)
		return usage_error("inspect", "%s", "inspect needs an adapter folder");
	if (fl_adapter_inspect(dir, base, json, stdout) != FL_OK)
		return fail();
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return usage_error(NULL, "%s", "missing command");
	const char *cmd = argv[1];
	if (is_help(cmd)) {
		fputs(usage_main, stdout);
		return 0;
	}
	if (strcmp(cmd, "--version") == 0) {
		printf(PROG " " FL_VERSION "\n");
		return 0;
	}
	if (strcmp(cmd, "merge") == 0)
		return cmd_merge(argc, argv);
	if (strcmp(cmd, "inspect") == 0)
		return cmd_inspect(argc, argv);
	return usage_error(NULL, "unknown command '%s'", cmd);
}
