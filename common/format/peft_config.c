/* peft_config.c - read, validate and write adapter_config.json (PEFT LoHa).
 * The module-selection rules and regexes are in peft_match.c. This file does
 * not touch tensors and does not print.
 */
#include "peft_config.h"

#include "errors.h"
#include "fsutil.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PEFT_GOT_MAX 64
#define PEFT_FILE_MAX (16u << 20) /* adapter_config.json is a few KB */

static const char *const peft_param_names[] = {"loha", "dense", "fedpara", "pfedpara", "lowrank"};

static const char *const peft_known_keys[] = {
	"peft_type",
	"r",
	"alpha",
	"rank_dropout",
	"module_dropout",
	"use_effective_conv2d",
	"target_modules",
	"exclude_modules",
	"init_weights",
	"layers_to_transform",
	"layers_pattern",
	"rank_pattern",
	"alpha_pattern",
	"modules_to_save",
	"fedloha_parameterization",
	"fedloha_gamma",
};

const char *fl_peft_param_name(enum fl_peft_param p)
{
	if ((unsigned)p < sizeof(peft_param_names) / sizeof(peft_param_names[0]))
		return peft_param_names[p];
	return "?";
}

int fl_peft_param_parse(const char *s, enum fl_peft_param *out)
{
	for (size_t i = 0; i < sizeof(peft_param_names) / sizeof(peft_param_names[0]); i++) {
		if (strcmp(s, peft_param_names[i]) == 0) {
			*out = (enum fl_peft_param)i;
			return FL_OK;
		}
	}
	return fl_error_set(
		FL_EINVAL,
		"unknown parameterization '%s' (loha, dense, fedpara, pfedpara, lowrank)", s);
}

/* ---- lifecycle ---- */

static void peft_strv_free(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

static void peft_patterns_free(struct fl_peft_pattern *p, size_t n)
{
	for (size_t i = 0; p && i < n; i++)
		free(p[i].key);
	free(p);
}

void fl_peft_config_free(struct fl_peft_config *c)
{
	if (!c)
		return;
	peft_strv_free(c->target_modules, c->n_target_modules);
	peft_strv_free(c->exclude_modules, c->n_exclude_modules);
	free(c->layers_to_transform);
	peft_strv_free(c->layers_pattern, c->n_layers_pattern);
	peft_patterns_free(c->rank_pattern, c->n_rank_pattern);
	peft_patterns_free(c->alpha_pattern, c->n_alpha_pattern);
	peft_strv_free(c->modules_to_save, c->n_modules_to_save);
	free(c->extra_json);
	free(c);
}

int fl_peft_config_new(struct fl_peft_config **out)
{
	struct fl_peft_config *c = calloc(1, sizeof(*c));
	*out = c;
	if (!c)
		return fl_error_set(FL_ENOMEM, "peft config: out of memory");
	c->r = 8;
	c->alpha = 8.0;
	c->init_weights = 1;
	c->target_kind = FL_PEFT_SEL_NULL;
	c->exclude_kind = FL_PEFT_SEL_NULL;
	c->parameterization = FL_PEFT_PARAM_LOHA;
	return FL_OK;
}

/* ---- parsing ---- */

/* "what: key 'k': expected <expected>, got <json>" */
static int peft_bad(int err, const char *what, const char *key, const char *expected, json_t *got)
{
	char buf[PEFT_GOT_MAX + 4] = "?";
	char *s = got ? json_dumps(got, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
	if (s) {
		snprintf(buf, sizeof(buf), "%s", s);
		if (strlen(s) > PEFT_GOT_MAX)
			strcpy(buf + PEFT_GOT_MAX - 3, "...");
		free(s);
	}
	char kb[104]; /* a pattern key comes from the file: no control bytes in the message */
	return fl_error_set(err, "%s: key '%s': expected %s, got %s", what,
			    fl_error_safe_str(key, kb, sizeof(kb)), expected, buf);
}

/* Copies a JSON string or list of strings into a vector. */
static int peft_get_strv(json_t *v, const char *what, const char *key, char ***out, size_t *n)
{
	size_t cnt = json_is_string(v) ? 1 : json_array_size(v);
	char **s = calloc(cnt ? cnt : 1, sizeof(*s));
	if (!s)
		return fl_error_set(FL_ENOMEM, "%s: out of memory", what);
	*out = s;
	*n = 0;
	for (size_t i = 0; i < cnt; i++) {
		json_t *e = json_is_string(v) ? v : json_array_get(v, i);
		if (!json_is_string(e))
			return peft_bad(FL_EINVAL, what, key, "a list of strings", v);
		if (!(s[i] = strdup(json_string_value(e))))
			return fl_error_set(FL_ENOMEM, "%s: out of memory", what);
		(*n)++;
	}
	return FL_OK;
}

static int peft_get_prob(json_t *v, const char *what, const char *key, double *out)
{
	if (!json_is_number(v) || !(json_number_value(v) >= 0.0 && json_number_value(v) < 1.0))
		return peft_bad(FL_EINVAL, what, key, "a number in [0, 1)", v);
	*out = json_number_value(v);
	return FL_OK;
}

static int peft_get_patterns(json_t *v, const char *what, const char *key, int integer,
			     struct fl_peft_pattern **out, size_t *n)
{
	*n = 0;
	if (json_is_null(v))
		return FL_OK;
	if (!json_is_object(v))
		return peft_bad(FL_EINVAL, what, key, "an object of name -> number", v);
	size_t cnt = json_object_size(v);
	*out = calloc(cnt ? cnt : 1, sizeof(**out));
	if (!*out)
		return fl_error_set(FL_ENOMEM, "%s: out of memory", what);
	const char *k;
	json_t *x;
	json_object_foreach(v, k, x)
	{
		if (integer ? !json_is_integer(x) || json_integer_value(x) < 1 ||
				      json_integer_value(x) > INT_MAX
			    : !json_is_number(x)) {
			char kk[256];
			snprintf(kk, sizeof(kk), "%s.%s", key, k);
			return peft_bad(FL_EINVAL, what, kk,
					integer ? "a positive integer" : "a number", x);
		}
		if (!((*out)[*n].key = strdup(k)))
			return fl_error_set(FL_ENOMEM, "%s: out of memory", what);
		(*out)[(*n)++].value = json_number_value(x);
	}
	return FL_OK;
}

static int peft_get_sel(json_t *v, const char *what, const char *key, int allow_all_linear,
			enum fl_peft_sel *kind, char ***out, size_t *n)
{
	if (json_is_null(v)) {
		*kind = FL_PEFT_SEL_NULL;
		return FL_OK;
	}
	if (json_is_string(v) && allow_all_linear &&
	    strcasecmp(json_string_value(v), "all-linear") == 0) {
		*kind = FL_PEFT_SEL_ALL_LINEAR;
		return FL_OK;
	}
	if (!json_is_string(v) && !json_is_array(v))
		return peft_bad(FL_EINVAL, what, key, "a list of names, a regex string or null", v);
	*kind = json_is_string(v) ? FL_PEFT_SEL_REGEX : FL_PEFT_SEL_LIST;
	return peft_get_strv(v, what, key, out, n);
}

/* The scalar keys (peft_type, r, alpha, dropouts, use_effective_conv2d,
 * init_weights) into c; 1 when key is none of them. */
static int peft_parse_scalar(struct fl_peft_config *c, const char *what, const char *key, json_t *v)
{
	if (strcmp(key, "peft_type") == 0) {
		if (!json_is_string(v))
			return peft_bad(FL_EINVAL, what, key, "\"LOHA\"", v);
		char sb[68];
		if (strcmp(json_string_value(v), "LOHA") != 0)
			return fl_error_set(
				FL_EUNSUPPORTED,
				"%s: key 'peft_type': expected \"LOHA\", got \"%s\" "
				"(fedloha reads LoHa adapters only)",
				what, fl_error_safe_str(json_string_value(v), sb, sizeof(sb)));
	} else if (strcmp(key, "r") == 0) {
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > INT_MAX)
			return peft_bad(FL_EINVAL, what, key, "a positive integer", v);
		c->r = (int)json_integer_value(v);
	} else if (strcmp(key, "alpha") == 0) {
		if (!json_is_number(v))
			return peft_bad(FL_EINVAL, what, key, "a number", v);
		c->alpha = json_number_value(v);
	} else if (strcmp(key, "rank_dropout") == 0) {
		return peft_get_prob(v, what, key, &c->rank_dropout);
	} else if (strcmp(key, "module_dropout") == 0) {
		return peft_get_prob(v, what, key, &c->module_dropout);
	} else if (strcmp(key, "use_effective_conv2d") == 0) {
		if (!json_is_boolean(v))
			return peft_bad(FL_EINVAL, what, key, "true or false", v);
		c->use_effective_conv2d = json_is_true(v);
	} else if (strcmp(key, "init_weights") == 0) {
		if (json_is_string(v))
			return peft_bad(FL_EUNSUPPORTED, what, key,
					"true or false (string values choose initialisations of "
					"other PEFT adapters, not LoHa)",
					v);
		if (!json_is_boolean(v))
			return peft_bad(FL_EINVAL, what, key, "true or false", v);
		c->init_weights = json_is_true(v);
	} else {
		return 1;
	}
	return FL_OK;
}

/* layers_to_transform: an integer, a list of them, or null. */
static int peft_get_layers(struct fl_peft_config *c, const char *what, const char *key, json_t *v)
{
	if (json_is_null(v))
		return FL_OK;
	size_t cnt = json_is_array(v) ? json_array_size(v) : 1;
	if (!json_is_array(v) && !json_is_integer(v))
		return peft_bad(FL_EINVAL, what, key, "an integer, a list of integers or null", v);
	c->layers_to_transform_is_list = json_is_array(v);
	if (!(c->layers_to_transform = calloc(cnt ? cnt : 1, sizeof(int))))
		return fl_error_set(FL_ENOMEM, "%s: out of memory", what);
	for (size_t i = 0; i < cnt; i++) {
		json_t *e = json_is_array(v) ? json_array_get(v, i) : v;
		if (!json_is_integer(e) || json_integer_value(e) < 0 ||
		    json_integer_value(e) > INT_MAX)
			return peft_bad(FL_EINVAL, what, key,
					"a non-negative integer or a list of them", v);
		c->layers_to_transform[c->n_layers_to_transform++] = (int)json_integer_value(e);
	}
	return FL_OK;
}

/* Interprets one known key into c. */
static int peft_parse_key(struct fl_peft_config *c, const char *what, const char *key, json_t *v)
{
	int err = peft_parse_scalar(c, what, key, v);
	if (err <= 0)
		return err;
	if (strcmp(key, "target_modules") == 0) {
		return peft_get_sel(v, what, key, 1, &c->target_kind, &c->target_modules,
				    &c->n_target_modules);
	} else if (strcmp(key, "exclude_modules") == 0) {
		return peft_get_sel(v, what, key, 0, &c->exclude_kind, &c->exclude_modules,
				    &c->n_exclude_modules);
	} else if (strcmp(key, "layers_to_transform") == 0) {
		return peft_get_layers(c, what, key, v);
	} else if (strcmp(key, "layers_pattern") == 0) {
		if (json_is_null(v))
			return FL_OK;
		if (!json_is_string(v) && !json_is_array(v))
			return peft_bad(FL_EINVAL, what, key, "a string, a list of strings or null",
					v);
		c->layers_pattern_is_list = json_is_array(v);
		return peft_get_strv(v, what, key, &c->layers_pattern, &c->n_layers_pattern);
	} else if (strcmp(key, "rank_pattern") == 0) {
		return peft_get_patterns(v, what, key, 1, &c->rank_pattern, &c->n_rank_pattern);
	} else if (strcmp(key, "alpha_pattern") == 0) {
		return peft_get_patterns(v, what, key, 0, &c->alpha_pattern, &c->n_alpha_pattern);
	} else if (strcmp(key, "modules_to_save") == 0) {
		if (json_is_null(v))
			return FL_OK;
		if (!json_is_array(v))
			return peft_bad(FL_EINVAL, what, key, "a list of names or null", v);
		return peft_get_strv(v, what, key, &c->modules_to_save, &c->n_modules_to_save);
	} else if (strcmp(key, "fedloha_parameterization") == 0) {
		if (json_is_null(v))
			return FL_OK;
		if (!json_is_string(v) ||
		    fl_peft_param_parse(json_string_value(v), &c->parameterization) != FL_OK)
			return peft_bad(
				FL_EINVAL, what, key,
				"\"loha\", \"dense\", \"fedpara\", \"pfedpara\" or \"lowrank\"", v);
	} else if (strcmp(key, "fedloha_gamma") == 0) {
		if (json_is_null(v))
			return FL_OK;
		if (!json_is_number(v) || !(json_number_value(v) >= 0 && json_number_value(v) <= 1))
			return peft_bad(FL_EINVAL, what, key, "a number in [0, 1] or null", v);
		c->has_gamma = 1;
		c->gamma = json_number_value(v);
	}
	return FL_OK;
}

static int peft_is_known(const char *key)
{
	for (size_t i = 0; i < sizeof(peft_known_keys) / sizeof(peft_known_keys[0]); i++)
		if (strcmp(key, peft_known_keys[i]) == 0)
			return 1;
	return 0;
}

static int peft_validate_as(const struct fl_peft_config *c, const char *what);

int fl_peft_config_parse(const char *json, size_t len, const char *what,
			 struct fl_peft_config **out)
{
	*out = NULL;
	json_error_t jerr;
	json_t *root = json_loadb(json, len, 0, &jerr);
	char tb[JSON_ERROR_TEXT_LENGTH]; /* jansson quotes the bad token raw */
	if (!root)
		return fl_error_set(FL_EFORMAT, "%s:%d:%d: %s", what, jerr.line, jerr.column,
				    fl_error_safe_str(jerr.text, tb, sizeof(tb)));
	struct fl_peft_config *c = NULL;
	json_t *extra = NULL;
	int err;
	if (!json_is_object(root)) {
		err = fl_error_set(FL_EFORMAT, "%s: expected a JSON object at the top level", what);
		goto fail;
	}
	if (!json_object_get(root, "peft_type")) {
		err = fl_error_set(FL_EINVAL, "%s: key 'peft_type' is missing (expected \"LOHA\")",
				   what);
		goto fail;
	}
	if ((err = fl_peft_config_new(&c)) != FL_OK)
		goto fail;
	if (!(extra = json_object())) {
		err = fl_error_set(FL_ENOMEM, "%s: out of memory", what);
		goto fail;
	}
	const char *key;
	json_t *v;
	json_object_foreach(root, key, v)
	{
		if (!peft_is_known(key)) {
			json_object_set(extra, key, v);
			continue;
		}
		if ((err = peft_parse_key(c, what, key, v)) != FL_OK)
			goto fail;
	}
	if (json_object_size(extra) > 0 &&
	    !(c->extra_json = json_dumps(extra, JSON_COMPACT | JSON_SORT_KEYS))) {
		err = fl_error_set(FL_ENOMEM, "%s: out of memory", what);
		goto fail;
	}
	if ((err = peft_validate_as(c, what)) != FL_OK)
		goto fail;
	json_decref(extra);
	json_decref(root);
	*out = c;
	return FL_OK;
fail:
	json_decref(extra);
	json_decref(root);
	fl_peft_config_free(c);
	return err;
}

int fl_peft_config_read(const char *path, struct fl_peft_config **out)
{
	char *buf;
	size_t len;
	*out = NULL;
	int err = fl_file_read_all(path, PEFT_FILE_MAX, &buf, &len);
	if (err != FL_OK)
		return err;
	err = fl_peft_config_parse(buf, len, path, out);
	free(buf);
	return err;
}

/* ---- validation ---- */

static int peft_validate_as(const struct fl_peft_config *c, const char *what)
{
	if (c->r < 1)
		return fl_error_set(FL_EINVAL, "%s: key 'r': expected a positive integer, got %d",
				    what, c->r);
	if (!isfinite(c->alpha))
		return fl_error_set(FL_EINVAL, "%s: key 'alpha': expected a finite number", what);
	if (!(c->rank_dropout >= 0 && c->rank_dropout < 1))
		return fl_error_set(FL_EINVAL,
				    "%s: key 'rank_dropout': expected a number in [0, 1)", what);
	if (!(c->module_dropout >= 0 && c->module_dropout < 1))
		return fl_error_set(FL_EINVAL,
				    "%s: key 'module_dropout': expected a number in [0, 1)", what);
	if (c->has_gamma && !(c->gamma >= 0 && c->gamma <= 1))
		return fl_error_set(FL_EINVAL,
				    "%s: key 'fedloha_gamma': expected a number in [0, 1]", what);
	if ((unsigned)c->parameterization > FL_PEFT_PARAM_LOWRANK)
		return fl_error_set(FL_EINVAL, "%s: key 'fedloha_parameterization': unknown value",
				    what);
	if (c->exclude_kind == FL_PEFT_SEL_ALL_LINEAR)
		return fl_error_set(
			FL_EINVAL,
			"%s: key 'exclude_modules': \"all-linear\" is only for target_modules",
			what);
	if ((c->target_kind == FL_PEFT_SEL_REGEX && c->n_target_modules != 1) ||
	    (c->exclude_kind == FL_PEFT_SEL_REGEX && c->n_exclude_modules != 1))
		return fl_error_set(FL_EINVAL, "%s: key 'target_modules': a regex needs one string",
				    what);
	char kb[104];
	for (size_t i = 0; i < c->n_rank_pattern; i++) {
		double v = c->rank_pattern[i].value;
		if (!(v >= 1 && v <= INT_MAX && v == floor(v)))
			return fl_error_set(
				FL_EINVAL, "%s: key 'rank_pattern.%s': expected a positive integer",
				what, fl_error_safe_str(c->rank_pattern[i].key, kb, sizeof(kb)));
	}
	for (size_t i = 0; i < c->n_alpha_pattern; i++)
		if (!isfinite(c->alpha_pattern[i].value))
			return fl_error_set(
				FL_EINVAL, "%s: key 'alpha_pattern.%s': expected a finite number",
				what, fl_error_safe_str(c->alpha_pattern[i].key, kb, sizeof(kb)));
	return fl_peft_config_check_patterns(c, what);
}

int fl_peft_config_validate(const struct fl_peft_config *c)
{
	return peft_validate_as(c, "peft config");
}

/* ---- writing ---- */

/* A double that "%.15g" prints exactly (0.05 stays "0.05"). */
static int peft_real_short(double v)
{
	char b[40];
	snprintf(b, sizeof(b), "%.15g", v);
	return strtod(b, NULL) == v;
}

static json_t *peft_strv_json(char **v, size_t n, int as_list)
{
	if (!v)
		return json_null();
	if (!as_list)
		return json_string(v[0]);
	json_t *a = json_array();
	for (size_t i = 0; a && i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

static json_t *peft_sel_json(enum fl_peft_sel kind, char **v, size_t n)
{
	switch (kind) {
	case FL_PEFT_SEL_LIST: return peft_strv_json(v, n, 1);
	case FL_PEFT_SEL_REGEX: return json_string(v[0]);
	case FL_PEFT_SEL_ALL_LINEAR: return json_string("all-linear");
	default: return json_null();
	}
}

static json_t *peft_patterns_json(const struct fl_peft_pattern *p, size_t n, int integer,
				  int *short_reals)
{
	json_t *o = json_object();
	for (size_t i = 0; o && i < n; i++) {
		*short_reals &= peft_real_short(p[i].value);
		json_object_set_new(o, p[i].key,
				    integer ? json_integer((json_int_t)p[i].value)
					    : json_real(p[i].value));
	}
	return o;
}

int fl_peft_config_write(const struct fl_peft_config *c, const char *path)
{
	int err = peft_validate_as(c, path);
	if (err != FL_OK)
		return err;
	json_t *root = c->extra_json ? json_loads(c->extra_json, 0, NULL) : json_object();
	if (!json_is_object(root)) {
		json_decref(root);
		return fl_error_set(FL_EINVAL, "%s: extra_json is not a JSON object", path);
	}
	/* PeftConfig's own keys, when extra_json did not carry them. */
	static const char *const base_null[] = {"auto_mapping", "base_model_name_or_path",
						"revision", "task_type"};
	for (size_t i = 0; i < sizeof(base_null) / sizeof(base_null[0]); i++)
		if (!json_object_get(root, base_null[i]))
			json_object_set_new(root, base_null[i], json_null());
	if (!json_object_get(root, "inference_mode"))
		json_object_set_new(root, "inference_mode", json_true());

	int short_reals = peft_real_short(c->alpha) && peft_real_short(c->rank_dropout) &&
			  peft_real_short(c->module_dropout) && peft_real_short(c->gamma);
	int bad = 0;
	bad |= json_object_set_new(root, "peft_type", json_string("LOHA"));
	bad |= json_object_set_new(root, "r", json_integer(c->r));
	bad |= json_object_set_new(root, "alpha", json_real(c->alpha));
	bad |= json_object_set_new(root, "rank_dropout", json_real(c->rank_dropout));
	bad |= json_object_set_new(root, "module_dropout", json_real(c->module_dropout));
	bad |= json_object_set_new(root, "use_effective_conv2d",
				   json_boolean(c->use_effective_conv2d));
	bad |= json_object_set_new(root, "init_weights", json_boolean(c->init_weights));
	bad |= json_object_set_new(
		root, "target_modules",
		peft_sel_json(c->target_kind, c->target_modules, c->n_target_modules));
	if (c->exclude_kind != FL_PEFT_SEL_NULL)
		bad |= json_object_set_new(
			root, "exclude_modules",
			peft_sel_json(c->exclude_kind, c->exclude_modules, c->n_exclude_modules));
	json_t *ltt = json_null();
	if (c->layers_to_transform && !c->layers_to_transform_is_list)
		ltt = json_integer(c->layers_to_transform[0]);
	else if (c->layers_to_transform && (ltt = json_array()))
		for (size_t i = 0; i < c->n_layers_to_transform; i++)
			json_array_append_new(ltt, json_integer(c->layers_to_transform[i]));
	bad |= json_object_set_new(root, "layers_to_transform", ltt);
	bad |= json_object_set_new(
		root, "layers_pattern",
		peft_strv_json(c->layers_pattern, c->n_layers_pattern, c->layers_pattern_is_list));
	bad |= json_object_set_new(
		root, "rank_pattern",
		peft_patterns_json(c->rank_pattern, c->n_rank_pattern, 1, &short_reals));
	bad |= json_object_set_new(
		root, "alpha_pattern",
		peft_patterns_json(c->alpha_pattern, c->n_alpha_pattern, 0, &short_reals));
	bad |= json_object_set_new(root, "modules_to_save",
				   peft_strv_json(c->modules_to_save, c->n_modules_to_save, 1));
	if (c->parameterization != FL_PEFT_PARAM_LOHA)
		bad |= json_object_set_new(root, "fedloha_parameterization",
					   json_string(fl_peft_param_name(c->parameterization)));
	if (c->has_gamma)
		bad |= json_object_set_new(root, "fedloha_gamma", json_real(c->gamma));
	char *text = bad ? NULL
			 : json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS |
						    JSON_REAL_PRECISION(short_reals ? 15 : 17));
	json_decref(root);
	if (!text)
		return fl_error_set(FL_ENOMEM, "%s: out of memory", path);
	size_t len = strlen(text);
	char *nl = realloc(text, len + 2);
	if (!nl) {
		free(text);
		return fl_error_set(FL_ENOMEM, "%s: out of memory", path);
	}
	nl[len] = '\n';
	nl[len + 1] = '\0';
	err = fl_file_write_atomic(path, nl, len + 1, 0);
	free(nl);
	return err;
}
