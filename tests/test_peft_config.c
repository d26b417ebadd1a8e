/* test_peft_config.c - adapter_config.json: parsing, every bad-value message,
 * PEFT's matching rules (list / regex / all-linear, exclude, layer indexes,
 * rank and alpha patterns, modules_to_save), also over the full module
 * names of the model description, and the atomic writer (string and list
 * forms kept). */
#include "errors.h"
#include "peft_config.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct fl_peft_config *parse(const char *json)
{
	struct fl_peft_config *c = NULL;
	int err = fl_peft_config_parse(json, strlen(json), "t.json", &c);
	FL_CHECK_MSG(err == FL_OK, "parse failed: %s (%s)", fl_error_msg(), json);
	return c;
}

static int targets(const struct fl_peft_config *c, const char *m, int lin, int out)
{
	int t = -1;
	int err = fl_peft_config_targets(c, m, lin, out, &t);
	FL_CHECK_MSG(err == FL_OK, "targets(%s): %s", m, fl_error_msg());
	return t;
}

static void test_parse_full(void)
{
	const char *j =
		"{\"alpha\": 31.0, \"alpha_pattern\": {\"conv1\": 15.5}, \"auto_mapping\": null,"
		" \"base_model_name_or_path\": \"my/model\", \"inference_mode\": true,"
		" \"init_weights\": false, \"layers_pattern\": null, \"layers_to_transform\": null,"
		" \"module_dropout\": 0.1, \"modules_to_save\": [\"classifier\"],"
		" \"peft_type\": \"LOHA\", \"r\": 7, \"rank_dropout\": 0.25,"
		" \"rank_pattern\": {\"fc2\": 9}, \"revision\": null,"
		" \"target_modules\": [\"fc1\", \"fc2\", \"conv1\"], \"task_type\": null,"
		" \"use_effective_conv2d\": true, \"some_future_key\": [1, 2]}";
	struct fl_peft_config *c = parse(j);
	if (!c)
		return;
	FL_CHECK(c->r == 7);
	FL_CHECK_NEAR(c->alpha, 31.0, 0, 0);
	FL_CHECK_NEAR(c->rank_dropout, 0.25, 0, 0);
	FL_CHECK_NEAR(c->module_dropout, 0.1, 0, 0);
	FL_CHECK(c->use_effective_conv2d == 1);
	FL_CHECK(c->init_weights == 0);
	FL_CHECK(c->target_kind == FL_PEFT_SEL_LIST && c->n_target_modules == 3);
	FL_CHECK(strcmp(c->target_modules[2], "conv1") == 0);
	FL_CHECK(c->n_rank_pattern == 1 && c->rank_pattern[0].value == 9);
	FL_CHECK(c->n_alpha_pattern == 1 && c->alpha_pattern[0].value == 15.5);
	FL_CHECK(c->n_modules_to_save == 1);
	FL_CHECK(c->parameterization == FL_PEFT_PARAM_LOHA && !c->has_gamma);
	FL_CHECK(c->exclude_kind == FL_PEFT_SEL_NULL && c->layers_to_transform == NULL);
	/* unknown keys are kept for the writer */
	FL_CHECK(c->extra_json && strstr(c->extra_json, "\"some_future_key\":[1,2]"));
	FL_CHECK(c->extra_json && strstr(c->extra_json, "my/model"));
	/* per-module rank, alpha, scale */
	FL_CHECK(fl_peft_config_rank(c, "fc1") == 7);
	FL_CHECK(fl_peft_config_rank(c, "block.0.fc2") == 9);
	FL_CHECK_NEAR(fl_peft_config_alpha(c, "conv1"), 15.5, 0, 0);
	FL_CHECK_NEAR(fl_peft_config_alpha(c, "fc2"), 31.0, 0, 0);
	FL_CHECK_NEAR(fl_peft_config_scale(c, "block.0.fc2"), 31.0 / 9, 1e-15, 0);
	FL_CHECK_NEAR(fl_peft_config_scale(c, "conv1"), 15.5 / 7, 1e-15, 0);
	fl_peft_config_free(c);

	/* defaults of PEFT's LoHaConfig when keys are absent */
	c = parse("{\"peft_type\": \"LOHA\"}");
	if (c) {
		FL_CHECK(c->r == 8 && c->alpha == 8.0 && c->init_weights == 1);
		FL_CHECK(c->target_kind == FL_PEFT_SEL_NULL && c->extra_json == NULL);
		int t = 0;
		FL_CHECK(fl_peft_config_targets(c, "fc1", 1, 0, &t) == FL_EUNSUPPORTED);
		FL_CHECK(strstr(fl_error_msg(), "target_modules") != NULL);
	}
	fl_peft_config_free(c);
	c = parse("{\"peft_type\": \"LOHA\", \"fedloha_parameterization\": \"pfedpara\","
		  " \"fedloha_gamma\": 0.5}");
	if (c)
		FL_CHECK(c->parameterization == FL_PEFT_PARAM_PFEDPARA && c->has_gamma &&
			 c->gamma == 0.5);
	fl_peft_config_free(c);
	fl_peft_config_free(NULL);
}

static void test_list_targets(void)
{
	struct fl_peft_config *c = parse("{\"peft_type\": \"LOHA\", \"target_modules\": [\"fc1\", "
					 "\"attn.q\"], \"exclude_modules\": [\"skip.fc1\"]}");
	if (!c)
		return;
	FL_CHECK(targets(c, "fc1", 1, 0) == 1);
	FL_CHECK(targets(c, "block.0.fc1", 1, 0) == 1);
	FL_CHECK(targets(c, "xfc1", 1, 0) == 0);      /* not a "." boundary */
	FL_CHECK(targets(c, "fc1.inner", 1, 0) == 0); /* must end with the entry */
	FL_CHECK(targets(c, "layers.3.attn.q", 1, 0) == 1);
	FL_CHECK(targets(c, "layers.3.xattn.q", 1, 0) == 0);
	FL_CHECK(targets(c, "a.skip.fc1", 1, 0) == 0); /* excluded */
	FL_CHECK(targets(c, "skip.fc1", 1, 0) == 0);
	FL_CHECK(targets(c, "fc1", 0, 1) == 1); /* lists ignore linear / output flags */
	fl_peft_config_free(c);
}

static void test_regex_targets(void)
{
	struct fl_peft_config *c = parse(
		"{\"peft_type\": \"LOHA\", \"target_modules\": \"model\\\\.layers\\\\.\\\\d+\\\\.(q|v)_proj\","
		" \"exclude_modules\": \".*\\\\.7\\\\..*\"}");
	if (!c)
		return;
	FL_CHECK(targets(c, "model.layers.12.q_proj", 1, 0) == 1);
	FL_CHECK(targets(c, "model.layers.0.v_proj", 1, 0) == 1);
	FL_CHECK(targets(c, "model.layers.0.k_proj", 1, 0) == 0);
	FL_CHECK(targets(c, "model.layers.x.q_proj", 1, 0) == 0);
	FL_CHECK(targets(c, "xmodel.layers.0.q_proj", 1, 0) == 0); /* whole name */
	FL_CHECK(targets(c, "model.layers.0.q_proj.lora", 1, 0) == 0);
	FL_CHECK(targets(c, "model.layers.7.q_proj", 1, 0) == 0); /* excluded by regex */
	fl_peft_config_free(c);

	int m = -1;
	FL_CHECK(fl_peft_regex_fullmatch("\\w+", "a_b1", &m) == FL_OK && m == 1);
	FL_CHECK(fl_peft_regex_fullmatch("\\w+", "a-b", &m) == FL_OK && m == 0);
	FL_CHECK(fl_peft_regex_fullmatch("\\W", "-", &m) == FL_OK && m == 1);
	FL_CHECK(fl_peft_regex_fullmatch("[\\w-]+", "a-b_c", &m) == FL_OK && m == 1);
	FL_CHECK(fl_peft_regex_fullmatch("[\\w.]+", "a.b", &m) == FL_OK && m == 1);
	FL_CHECK(fl_peft_regex_fullmatch("a\\sb\\Sc\\Dd", "a bxc_d", &m) == FL_OK && m == 1);
	FL_CHECK(fl_peft_regex_fullmatch("(?:fc|conv)\\d", "conv2", &m) == FL_OK && m == 1);
	FL_CHECK(fl_peft_regex_fullmatch("a.*?b", "axxb", &m) == FL_OK && m == 1);
	FL_CHECK(fl_peft_regex_fullmatch("fc1|fc2", "fc2", &m) == FL_OK && m == 1);
	FL_CHECK(fl_peft_regex_fullmatch("fc1|fc2", "fc12", &m) == FL_OK && m == 0);
	FL_CHECK(fl_peft_regex_fullmatch("(?=x)x", "x", &m) == FL_EINVAL);
	FL_CHECK(fl_peft_regex_fullmatch("\\bfc", "fc", &m) == FL_EINVAL);
	FL_CHECK(fl_peft_regex_fullmatch("a(b", "ab", &m) == FL_EINVAL);
	FL_CHECK(strstr(fl_error_msg(), "regcomp") != NULL);
}

static void test_all_linear(void)
{
	struct fl_peft_config *c = parse(
		"{\"peft_type\": \"LOHA\", \"target_modules\": \"all-linear\"}");
	if (!c)
		return;
	FL_CHECK(c->target_kind == FL_PEFT_SEL_ALL_LINEAR);
	FL_CHECK(targets(c, "fc1", 1, 0) == 1);
	FL_CHECK(targets(c, "block.0.fc2", 1, 0) == 1);
	FL_CHECK(targets(c, "head", 1, 1) == 0);  /* the output layer */
	FL_CHECK(targets(c, "conv1", 0, 0) == 0); /* not linear */
	fl_peft_config_free(c);
	c = parse("{\"peft_type\": \"LOHA\", \"target_modules\": \"ALL-LINEAR\"}");
	if (c)
		FL_CHECK(c->target_kind == FL_PEFT_SEL_ALL_LINEAR);
	fl_peft_config_free(c);
}

static void test_layers(void)
{
	/* default layer regex .*\.[^.]*\.(\d+)\. */
	struct fl_peft_config *c = parse("{\"peft_type\": \"LOHA\", \"target_modules\": [\"q\"],"
					 " \"layers_to_transform\": [0, 2]}");
	if (!c)
		return;
	FL_CHECK(c->layers_to_transform_is_list && c->n_layers_to_transform == 2);
	FL_CHECK(targets(c, "model.layers.0.attn.q", 1, 0) == 1);
	FL_CHECK(targets(c, "model.layers.2.attn.q", 1, 0) == 1);
	FL_CHECK(targets(c, "model.layers.1.attn.q", 1, 0) == 0);
	FL_CHECK(targets(c, "model.layers.12.attn.q", 1, 0) == 0);
	FL_CHECK(targets(c, "layers.0.q", 1, 0) == 0); /* no "x.<seg>.<n>." form: no index */
	FL_CHECK(targets(c, "attn.q", 1, 0) == 0);     /* no index at all */
	FL_CHECK(targets(c, "q", 1, 0) == 1);          /* exact list match skips the check (PEFT) */
	/* the last index in the name counts (greedy .*) */
	FL_CHECK(targets(c, "enc.blocks.5.layers.2.q", 1, 0) == 1);
	fl_peft_config_free(c);

	/* int form and explicit patterns, tried in order */
	c = parse(
		"{\"peft_type\": \"LOHA\", \"target_modules\": [\"q\"], \"layers_to_transform\": 3,"
		" \"layers_pattern\": [\"h\", \"layers\"]}");
	if (!c)
		return;
	FL_CHECK(!c->layers_to_transform_is_list && c->layers_to_transform[0] == 3);
	FL_CHECK(targets(c, "transformer.h.3.attn.q", 1, 0) == 1);
	FL_CHECK(targets(c, "model.layers.3.attn.q", 1, 0) == 1);
	FL_CHECK(targets(c, "model.layers.4.attn.q", 1, 0) == 0);
	FL_CHECK(targets(c, "model.blocks.3.attn.q", 1, 0) == 0); /* pattern not present */
	fl_peft_config_free(c);

	/* an empty layers_pattern string means the default index regex */
	c = parse(
		"{\"peft_type\": \"LOHA\", \"target_modules\": [\"q\"], \"layers_to_transform\": 1,"
		" \"layers_pattern\": \"\"}");
	if (c)
		FL_CHECK(targets(c, "model.blocks.1.attn.q", 1, 0) == 1);
	fl_peft_config_free(c);

	/* empty list: no layer filtering */
	c = parse(
		"{\"peft_type\": \"LOHA\", \"target_modules\": [\"q\"], \"layers_to_transform\": []}");
	if (c)
		FL_CHECK(targets(c, "attn.q", 1, 0) == 1);
	fl_peft_config_free(c);
}

static void test_patterns(void)
{
	struct fl_peft_config *c = parse(
		"{\"peft_type\": \"LOHA\", \"r\": 8, \"alpha\": 16, \"target_modules\": [\"fc1\"],"
		" \"rank_pattern\": {\"fc1\": 4, \"a.fc1\": 6, \"layers\\\\.\\\\d+\\\\.q\": 2},"
		" \"alpha_pattern\": {\"b\\\\.fc1\": 3.5}}");
	if (!c)
		return;
	FL_CHECK(fl_peft_config_rank(c, "fc1") == 4);
	FL_CHECK(fl_peft_config_rank(c, "x.y.fc1") == 4);
	FL_CHECK(fl_peft_config_rank(c, "a.fc1") == 4); /* first key in file order wins */
	FL_CHECK(fl_peft_config_rank(c, "xfc1") == 8);  /* key "fc1" must not match "xfc1" */
	FL_CHECK(fl_peft_config_rank(c, "fc1x") == 8);
	FL_CHECK(fl_peft_config_rank(c, "m.layers.11.q") == 2);
	FL_CHECK(fl_peft_config_rank(c, "m.layers.11.q.x") == 8);
	FL_CHECK_NEAR(fl_peft_config_alpha(c, "b.fc1"), 3.5, 0, 0);
	FL_CHECK_NEAR(fl_peft_config_alpha(c, "ab.fc1"), 16, 0, 0);
	FL_CHECK_NEAR(fl_peft_config_alpha(c, "z.b.fc1"), 3.5, 0, 0);
	FL_CHECK_NEAR(fl_peft_config_scale(c, "z.b.fc1"), 3.5 / 4, 1e-15, 0);
	FL_CHECK_NEAR(fl_peft_config_scale(c, "other"), 2.0, 0, 0);
	fl_peft_config_free(c);

	c = parse("{\"peft_type\": \"LOHA\", \"rank_pattern\": {\"a.fc1\": 6, \"fc1\": 4}}");
	if (c)
		FL_CHECK(fl_peft_config_rank(c, "a.fc1") == 6);
	fl_peft_config_free(c);

	c = parse("{\"peft_type\": \"LOHA\", \"modules_to_save\": [\"classifier\", \"norm\"]}");
	if (c) {
		FL_CHECK(fl_peft_config_is_module_to_save(c, "classifier") == 1);
		FL_CHECK(fl_peft_config_is_module_to_save(c, "model.classifier") == 1);
		FL_CHECK(fl_peft_config_is_module_to_save(c, "xclassifier") == 0);
		FL_CHECK(fl_peft_config_is_module_to_save(c, "fc1") == 0);
	}
	fl_peft_config_free(c);
}

/* Every bad value: the expected code and a message naming the key. */
static void test_bad_configs(void)
{
	static const struct {
		const char *body, *key;
		int err;
	} cases[] = {
		{"\"r\": -3", "key 'r': expected a positive integer, got -3", FL_EINVAL},
		{"\"r\": 0", "key 'r'", FL_EINVAL},
		{"\"r\": 8.0", "key 'r'", FL_EINVAL},
		{"\"r\": \"8\"", "key 'r'", FL_EINVAL},
		{"\"alpha\": \"x\"", "key 'alpha'", FL_EINVAL},
		{"\"rank_dropout\": 1.0", "key 'rank_dropout': expected a number in [0, 1)",
		 FL_EINVAL},
		{"\"module_dropout\": -0.1", "key 'module_dropout'", FL_EINVAL},
		{"\"use_effective_conv2d\": 1", "key 'use_effective_conv2d'", FL_EINVAL},
		{"\"init_weights\": \"gaussian\"", "key 'init_weights'", FL_EUNSUPPORTED},
		{"\"init_weights\": null", "key 'init_weights'", FL_EINVAL},
		{"\"target_modules\": 3", "key 'target_modules'", FL_EINVAL},
		{"\"target_modules\": [\"a\", 1]", "key 'target_modules'", FL_EINVAL},
		{"\"target_modules\": \"(?<=x)fc\"", "key 'target_modules': regex", FL_EINVAL},
		{"\"target_modules\": \"fc[1\"", "key 'target_modules'", FL_EINVAL},
		{"\"exclude_modules\": 5", "key 'exclude_modules'", FL_EINVAL},
		{"\"layers_to_transform\": [-1]", "key 'layers_to_transform'", FL_EINVAL},
		{"\"layers_to_transform\": \"0\"", "key 'layers_to_transform'", FL_EINVAL},
		{"\"layers_pattern\": 5", "key 'layers_pattern'", FL_EINVAL},
		{"\"layers_pattern\": \"(\"", "key 'layers_pattern'", FL_EINVAL},
		{"\"rank_pattern\": {\"fc1\": 0}", "key 'rank_pattern.fc1'", FL_EINVAL},
		{"\"rank_pattern\": {\"fc1\": 2.5}", "key 'rank_pattern.fc1'", FL_EINVAL},
		{"\"rank_pattern\": [1]", "key 'rank_pattern'", FL_EINVAL},
		{"\"rank_pattern\": {\"\\\\bx\": 2}", "key 'rank_pattern'", FL_EINVAL},
		{"\"alpha_pattern\": {\"fc1\": \"x\"}", "key 'alpha_pattern.fc1'", FL_EINVAL},
		{"\"modules_to_save\": \"head\"", "key 'modules_to_save'", FL_EINVAL},
		{"\"fedloha_parameterization\": \"foo\"", "key 'fedloha_parameterization'",
		 FL_EINVAL},
		{"\"fedloha_gamma\": 2", "key 'fedloha_gamma'", FL_EINVAL},
		/* control bytes of a file's key or value never reach the message */
		{"\"rank_pattern\": {\"x\\ny\": -1}", "key 'rank_pattern.x?y'", FL_EINVAL},
		{"\"rank_pattern\": {\"x\\ny\": 2.5}", "key 'rank_pattern.x?y'", FL_EINVAL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char j[512];
		snprintf(j, sizeof(j), "{\"peft_type\": \"LOHA\", %s}", cases[i].body);
		struct fl_peft_config *c = (struct fl_peft_config *)1;
		int err = fl_peft_config_parse(j, strlen(j), "adapter_config.json", &c);
		FL_CHECK_MSG(err == cases[i].err, "%s: got %d (%s)", cases[i].body, err,
			     fl_error_msg());
		FL_CHECK(c == NULL && !strchr(fl_error_msg(), '\n'));
		FL_CHECK_MSG(strncmp(fl_error_msg(), "adapter_config.json: ", 21) == 0 &&
				     strstr(fl_error_msg(), cases[i].key),
			     "%s: message '%s' lacks '%s'", cases[i].body, fl_error_msg(),
			     cases[i].key);
	}
	struct fl_peft_config *c = NULL;
	const char *lora = "{\"peft_type\": \"LORA\", \"r\": 8}";
	FL_CHECK(fl_peft_config_parse(lora, strlen(lora), "a.json", &c) == FL_EUNSUPPORTED);
	FL_CHECK(strstr(fl_error_msg(), "key 'peft_type'") && strstr(fl_error_msg(), "\"LORA\""));
	/* a backslash then a raw newline: jansson quotes both in its text */
	const char *raw = "{\"peft_type\": \"LOHA\", \"x\": \"a\\\nb\"}";
	FL_CHECK(fl_peft_config_parse(raw, strlen(raw), "a.json", &c) == FL_EFORMAT);
	FL_CHECK(!strchr(fl_error_msg(), '\n') && strstr(fl_error_msg(), "a.json:"));
	const char *nl = "{\"peft_type\": \"LO\\nHA\", \"r\": 8}";
	FL_CHECK(fl_peft_config_parse(nl, strlen(nl), "a.json", &c) == FL_EUNSUPPORTED);
	FL_CHECK(strstr(fl_error_msg(), "\"LO?HA\"") && !strchr(fl_error_msg(), '\n'));
	const char *none = "{\"r\": 8}";
	FL_CHECK(fl_peft_config_parse(none, strlen(none), "a.json", &c) == FL_EINVAL);
	FL_CHECK(strstr(fl_error_msg(), "'peft_type'") != NULL);
	const char *syntax = "{\n  \"peft_type\": \"LOHA\",\n  \"r\": 8,,\n}";
	FL_CHECK(fl_peft_config_parse(syntax, strlen(syntax), "a.json", &c) == FL_EFORMAT);
	FL_CHECK_MSG(strncmp(fl_error_msg(), "a.json:3:", 9) == 0, "%s", fl_error_msg());
	const char *arr = "[1, 2]";
	FL_CHECK(fl_peft_config_parse(arr, strlen(arr), "a.json", &c) == FL_EFORMAT);
	FL_CHECK(fl_peft_config_parse("", 0, "a.json", &c) == FL_EFORMAT);
	FL_CHECK(fl_peft_config_read("/nonexistent/adapter_config.json", &c) == FL_ENOTFOUND);
	FL_CHECK(strstr(fl_error_msg(), "/nonexistent/adapter_config.json") != NULL);
}

static void test_write_roundtrip(void)
{
	const char *dir = fl_test_tmpdir("peftcfg");
	char path[600];
	snprintf(path, sizeof(path), "%s/adapter_config.json", dir);
	struct fl_peft_config *c = parse(
		"{\"peft_type\": \"LOHA\", \"r\": 5, \"alpha\": 0.05, \"rank_dropout\": 0.1,"
		" \"target_modules\": \"fc\\\\d\", \"layers_to_transform\": 1,"
		" \"layers_pattern\": \"h\", \"rank_pattern\": {\"fc2\": 3, \"fc1\": 2},"
		" \"alpha_pattern\": {\"fc2\": 1.5}, \"modules_to_save\": [\"head\"],"
		" \"task_type\": \"CAUSAL_LM\", \"fedloha_gamma\": 0.3}");
	if (!c)
		return;
	FL_CHECK(fl_peft_config_write(c, path) == FL_OK);
	char *text = fl_test_read_file(path, NULL);
	FL_CHECK(text != NULL);
	if (text) {
		/* sorted, indented, short reals, PEFT base keys present */
		char *a = strstr(text, "\n  \"alpha\": 0.05,");
		char *b = strstr(text, "\n  \"alpha_pattern\"");
		char *z = strstr(text, "\n  \"use_effective_conv2d\": false");
		FL_CHECK(a && b && z && a < b && b < z);
		FL_CHECK(strstr(text, "\"peft_type\": \"LOHA\"") != NULL);
		FL_CHECK(strstr(text, "\"task_type\": \"CAUSAL_LM\"") != NULL);
		FL_CHECK(strstr(text, "\"inference_mode\": true") != NULL);
		FL_CHECK(strstr(text, "\"revision\": null") != NULL);
		FL_CHECK(strstr(text, "\"layers_to_transform\": 1,") != NULL);
		FL_CHECK(strstr(text, "\"layers_pattern\": \"h\",") != NULL);
		FL_CHECK(strstr(text, "\"fedloha_gamma\": 0.3") != NULL);
		FL_CHECK(strstr(text, "fedloha_parameterization") == NULL); /* default omitted */
		FL_CHECK(strstr(text, "exclude_modules") == NULL);
		FL_CHECK(text[strlen(text) - 1] == '\n');
	}
	free(text);
	struct fl_peft_config *d = NULL;
	FL_CHECK(fl_peft_config_read(path, &d) == FL_OK);
	if (d) {
		FL_CHECK(d->r == 5 && d->alpha == 0.05 && d->rank_dropout == 0.1);
		FL_CHECK(d->target_kind == FL_PEFT_SEL_REGEX &&
			 strcmp(d->target_modules[0], "fc\\d") == 0);
		FL_CHECK(!d->layers_to_transform_is_list && d->layers_to_transform[0] == 1);
		FL_CHECK(!d->layers_pattern_is_list && strcmp(d->layers_pattern[0], "h") == 0);
		FL_CHECK(d->n_rank_pattern == 2 && d->n_alpha_pattern == 1);
		FL_CHECK(fl_peft_config_rank(d, "x.fc1") == 2 &&
			 fl_peft_config_rank(d, "fc2") == 3);
		FL_CHECK(d->has_gamma && d->gamma == 0.3);
		FL_CHECK(d->n_modules_to_save == 1);
	}
	fl_peft_config_free(d);
	fl_peft_config_free(c);

	/* a programmatic config: defaults, a list target, non-default mode */
	FL_CHECK(fl_peft_config_new(&c) == FL_OK);
	c->target_kind = FL_PEFT_SEL_LIST;
	c->target_modules = calloc(1, sizeof(char *));
	c->target_modules[0] = strdup("fc1");
	c->n_target_modules = 1;
	c->parameterization = FL_PEFT_PARAM_FEDPARA;
	FL_CHECK(fl_peft_config_write(c, path) == FL_OK);
	FL_CHECK(fl_peft_config_read(path, &d) == FL_OK);
	if (d) {
		FL_CHECK(d->r == 8 && d->alpha == 8 &&
			 d->parameterization == FL_PEFT_PARAM_FEDPARA);
		FL_CHECK(targets(d, "a.fc1", 1, 0) == 1);
	}
	fl_peft_config_free(d);
	/* invalid values are refused before anything is written */
	c->r = 0;
	FL_CHECK(fl_peft_config_write(c, path) == FL_EINVAL);
	FL_CHECK(fl_peft_config_write(c, "/nonexistent/dir/x.json") == FL_EINVAL);
	c->r = 2;
	FL_CHECK(fl_peft_config_write(c, "/nonexistent/dir/x.json") == FL_EIO);
	fl_peft_config_free(c);
}

/* The module names of the description format, given in full. */
static const char *const N1 = "layers.3.fc1", *const N2 = "encoder.layers.10.attn.q_proj",
			 *const N3 = "fc1";

/* Which of N1, N2, N3 a config targets, as "110" (N3 the output layer). */
static const char *which(const char *json)
{
	static char out[4];
	struct fl_peft_config *c = parse(json);
	const char *n[3] = {N1, N2, N3};
	for (int i = 0; i < 3; i++)
		out[i] = c && targets(c, n[i], 1, i == 2) == 1 ? '1' : '0';
	out[3] = '\0';
	fl_peft_config_free(c);
	return out;
}

#define EXPECT_WHICH(json, want) \
	FL_CHECK_MSG(strcmp(which(json), want) == 0, "%s: %s, want %s", json, which(json), want)

static void test_module_names(void)
{
	/* lists: the entry or a "."-suffix */
	EXPECT_WHICH("{\"peft_type\": \"LOHA\", \"target_modules\": [\"fc1\", \"q_proj\"]}", "111");
	EXPECT_WHICH("{\"peft_type\": \"LOHA\", \"target_modules\": [\"attn.q_proj\"]}", "010");
	EXPECT_WHICH("{\"peft_type\": \"LOHA\", \"target_modules\": [\"3.fc1\", \"proj\"]}", "100");
	/* a string is a regex matched against the whole name, not searched */
	EXPECT_WHICH("{\"peft_type\": \"LOHA\", \"target_modules\": \"fc1\"}", "001");
	EXPECT_WHICH("{\"peft_type\": \"LOHA\", \"target_modules\": \"q_proj\"}", "000");
	EXPECT_WHICH("{\"peft_type\": \"LOHA\", \"target_modules\": \".*\\\\.(fc1|q_proj)\"}",
		     "110");
	EXPECT_WHICH("{\"peft_type\": \"LOHA\", \"target_modules\": \"(.*\\\\.)?fc\\\\d\"}", "101");
	/* all-linear: every linear layer but the output */
	EXPECT_WHICH("{\"peft_type\": \"LOHA\", \"target_modules\": \"all-linear\"}", "110");
	/* exclude_modules: list and regex, before any target rule */
	EXPECT_WHICH(
		"{\"peft_type\": \"LOHA\", \"target_modules\": \"all-linear\", \"exclude_modules\": [\"3.fc1\"]}",
		"010");
	EXPECT_WHICH("{\"peft_type\": \"LOHA\", \"target_modules\": [\"fc1\", \"q_proj\"],"
		     " \"exclude_modules\": \"encoder\\\\..*\"}",
		     "101");
	EXPECT_WHICH(
		"{\"peft_type\": \"LOHA\", \"target_modules\": [\"fc1\", \"q_proj\"], \"exclude_modules\": [\"fc1\"]}",
		"010");
	/* modules_to_save are trained dense, never adapted */
	EXPECT_WHICH(
		"{\"peft_type\": \"LOHA\", \"target_modules\": [\"fc1\", \"q_proj\"], \"modules_to_save\": [\"fc1\"]}",
		"010");
	EXPECT_WHICH(
		"{\"peft_type\": \"LOHA\", \"target_modules\": [\"fc1\", \"q_proj\"], \"modules_to_save\": [\"attn\"]}",
		"101");
	/* layers_to_transform without layers_pattern: any ".<word>.<n>." (a
	 * top-level "layers.3." has no dot before it: no index, as in PEFT);
	 * an exact name skips the filter */
	EXPECT_WHICH(
		"{\"peft_type\": \"LOHA\", \"target_modules\": [\"fc1\", \"q_proj\"], \"layers_to_transform\": 10}",
		"011");
	EXPECT_WHICH(
		"{\"peft_type\": \"LOHA\", \"target_modules\": [\"fc1\", \"q_proj\"], \"layers_to_transform\": [3]}",
		"001");
	/* with layers_pattern, a string or a list tried in order */
	EXPECT_WHICH(
		"{\"peft_type\": \"LOHA\", \"target_modules\": [\"q_proj\"], \"layers_to_transform\": [10, 11],"
		" \"layers_pattern\": \"layers\"}",
		"010");
	EXPECT_WHICH(
		"{\"peft_type\": \"LOHA\", \"target_modules\": [\"q_proj\"], \"layers_to_transform\": [10],"
		" \"layers_pattern\": \"blocks\"}",
		"000");
	EXPECT_WHICH(
		"{\"peft_type\": \"LOHA\", \"target_modules\": [\"q_proj\"], \"layers_to_transform\": [10],"
		" \"layers_pattern\": [\"blocks\", \"layers\"]}",
		"010");
	/* a regex target is never filtered by layer (PEFT) */
	EXPECT_WHICH(
		"{\"peft_type\": \"LOHA\", \"target_modules\": \".*q_proj\", \"layers_to_transform\": [0]}",
		"010");

	/* rank_pattern with a regex key, alpha_pattern; s = alpha / r per layer */
	struct fl_peft_config *c = parse(
		"{\"peft_type\": \"LOHA\", \"r\": 8, \"alpha\": 16, \"target_modules\": [\"fc1\", \"q_proj\"],"
		" \"rank_pattern\": {\"layers\\\\.\\\\d+\\\\.attn\\\\.q_proj\": 2, \"fc1\": 4},"
		" \"alpha_pattern\": {\"q_proj\": 3, \"layers\\\\.3\\\\.fc1\": 6}}");
	if (!c)
		return;
	FL_CHECK(fl_peft_config_rank(c, N2) == 2 && fl_peft_config_rank(c, N1) == 4 &&
		 fl_peft_config_rank(c, N3) == 4);
	FL_CHECK(fl_peft_config_rank(c, "layers.3.attn.q_proj") == 2); /* (.*\.)? is optional */
	FL_CHECK(fl_peft_config_rank(c, "layers.x.attn.q_proj") == 8);
	FL_CHECK_NEAR(fl_peft_config_scale(c, N2), 3.0 / 2, 0, 0);
	FL_CHECK_NEAR(fl_peft_config_scale(c, N1), 6.0 / 4, 0, 0);
	FL_CHECK_NEAR(fl_peft_config_scale(c, N3), 16.0 / 4, 0, 0);
	fl_peft_config_free(c);
}

/* The list forms of the selection keys round-trip through the writer
 * (strings stay strings, lists stay lists, as PEFT writes them). */
static void test_write_lists(void)
{
	char path[600];
	snprintf(path, sizeof(path), "%s/adapter_config.json", fl_test_tmpdir("peftlists"));
	struct fl_peft_config *c = parse(
		"{\"peft_type\": \"LOHA\", \"target_modules\": [\"fc1\", \"q_proj\"], \"exclude_modules\": [\"3.fc1\"],"
		" \"layers_to_transform\": [10, 2], \"layers_pattern\": [\"blocks\", \"layers\"],"
		" \"rank_pattern\": {\"layers\\\\.\\\\d+\\\\.attn\\\\.q_proj\": 2},"
		" \"alpha_pattern\": {\"q_proj\": 3}, \"modules_to_save\": [\"head\"]}");
	struct fl_peft_config *d = NULL;
	if (!c || !FL_CHECK(fl_peft_config_write(c, path) == FL_OK))
		goto out;
	char *text = fl_test_read_file(path, NULL);
	FL_CHECK(text && strstr(text, "\"exclude_modules\": [\n    \"3.fc1\"\n  ]"));
	FL_CHECK(text && strstr(text, "\"layers_to_transform\": [\n    10,\n    2\n  ]"));
	FL_CHECK(text &&
		 strstr(text, "\"layers_pattern\": [\n    \"blocks\",\n    \"layers\"\n  ]"));
	FL_CHECK(text && strstr(text, "\"layers\\\\.\\\\d+\\\\.attn\\\\.q_proj\": 2"));
	free(text);
	if (!FL_CHECK(fl_peft_config_read(path, &d) == FL_OK))
		goto out;
	FL_CHECK(d->exclude_kind == FL_PEFT_SEL_LIST && d->n_exclude_modules == 1);
	FL_CHECK(d->layers_to_transform_is_list && d->n_layers_to_transform == 2 &&
		 d->layers_to_transform[0] == 10);
	FL_CHECK(d->layers_pattern_is_list && d->n_layers_pattern == 2);
	FL_CHECK(targets(d, N2, 1, 0) == 1 && targets(d, N1, 1, 0) == 0);
	FL_CHECK(fl_peft_config_rank(d, N2) == 2 && fl_peft_config_alpha(d, N2) == 3);
	fl_peft_config_free(d);
	d = NULL;
	/* a regex exclude stays a string */
	free(c->exclude_modules[0]);
	c->exclude_modules[0] = strdup("encoder\\..*");
	c->exclude_kind = FL_PEFT_SEL_REGEX;
	FL_CHECK(fl_peft_config_write(c, path) == FL_OK);
	if (FL_CHECK(fl_peft_config_read(path, &d) == FL_OK)) {
		FL_CHECK(d->exclude_kind == FL_PEFT_SEL_REGEX &&
			 !strcmp(d->exclude_modules[0], "encoder\\..*"));
		FL_CHECK(targets(d, N2, 1, 0) == 0);
	}
out:
	fl_peft_config_free(c);
	fl_peft_config_free(d);
}

int main(void)
{
	FL_RUN(test_parse_full);
	FL_RUN(test_list_targets);
	FL_RUN(test_regex_targets);
	FL_RUN(test_all_linear);
	FL_RUN(test_layers);
	FL_RUN(test_patterns);
	FL_RUN(test_bad_configs);
	FL_RUN(test_write_roundtrip);
	FL_RUN(test_module_names);
	FL_RUN(test_write_lists);
	return fl_test_main_end();
}
