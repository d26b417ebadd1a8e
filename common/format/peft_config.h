/* peft_config.h - the PEFT LoHa adapter configuration (adapter_config.json):
 * parse, validate, write, and the module-selection rules PEFT applies
 * (target_modules, exclude_modules, layers_to_transform / layers_pattern,
 * rank_pattern / alpha_pattern, modules_to_save), as HuggingFace PEFT does.
 *
 * Matching follows current PEFT's check_target_module_exists (exclude
 * first, exact list match skips the layer filter) and get_pattern_key in its
 * `(.*\.)?(k)$` form (older releases used `.*\.k$`, which never matches a
 * top-level module; the exact release of the change was not verified):
 *   - modules_to_save: a module equal to an entry, ending with "." + entry
 *     or inside such a module (`(.*\.)?entry(\..*)?` as a whole-name regex)
 *     is never targeted (PEFT keeps adapters off the modules it trains in
 *     full); the module itself is then trained and saved dense.
 *   - exclude_modules (checked first) and target_modules: a list matches a
 *     module name n when n == entry or n ends with "." + entry; a string is a
 *     regex that must match the whole of n; "all-linear" (any case) selects
 *     every linear layer except the output layer.
 *   - layers_to_transform (int or non-empty list) applies only to list
 *     (and all-linear) targets matched through the "." + entry suffix, never
 *     to a regex target nor to an exact name (as in PEFT): the layer
 *     index is the (\d+) of `.*\.[^.]*\.(\d+)\.` when layers_pattern is
 *     empty, else of `.*\.<pattern>\.(\d+)\.` for the first pattern that
 *     matches; a module without an index is not targeted.
 *   - rank_pattern / alpha_pattern: key k applies to n when `(.*\.)?(k)$`
 *     matches n from its start; the first such key in file order wins,
 *     otherwise r / alpha. The scale of a module is alpha / r.
 * Python regexes are run with POSIX extended regexes: \d \w \s \D \W \S are
 * translated to bracket expressions and (?:...) to (...); lazy quantifiers
 * become greedy (whole-name matching does not depend on greediness); any
 * other construct POSIX cannot express is refused when the file is read, and
 * so is a pattern longer than 1024 characters, one with a quantifier right
 * after another ("a**", as Python), or one whose repetitions ({m,n} copies,
 * '+' twice) would expand it beyond 2000 atoms in regcomp, or that count
 * a {m,n} over 32.
 *
 * This module does no tensor work and no training; it does not print.
 */
#ifndef FL_PEFT_CONFIG_H
#define FL_PEFT_CONFIG_H

#include "peft_match.h"

#include <stddef.h>

/* fedloha_parameterization: how a targeted weight is represented. */
enum fl_peft_param {
	FL_PEFT_PARAM_LOHA = 0, /* W0 frozen + LoHa delta (PEFT; the default) */
	FL_PEFT_PARAM_DENSE,    /* plain dense weight */
	FL_PEFT_PARAM_FEDPARA,  /* W = P1 ⊙ P2, no W0 */
	FL_PEFT_PARAM_PFEDPARA, /* W = P1 ⊙ (P2 + 1), pair 2 local */
	FL_PEFT_PARAM_LOWRANK,  /* W = A B, same budget */
};

/* Shape of target_modules / exclude_modules. */
enum fl_peft_sel {
	FL_PEFT_SEL_NULL = 0,   /* null or absent */
	FL_PEFT_SEL_LIST,       /* list of names (suffix match) */
	FL_PEFT_SEL_REGEX,      /* one regex, whole-name match */
	FL_PEFT_SEL_ALL_LINEAR, /* "all-linear" (target_modules only) */
};

/* One rank_pattern / alpha_pattern entry, in file order. */
struct fl_peft_pattern {
	char *key;
	double value; /* an integer >= 1 for rank_pattern */
};

/* A parsed configuration. Every pointer is owned by the struct and freed by
 * fl_peft_config_free(); callers may edit fields (strings with malloc) and
 * call fl_peft_config_validate() afterwards. */
struct fl_peft_config {
	int r;
	double alpha;
	double rank_dropout;   /* 0 <= p < 1 */
	double module_dropout; /* 0 <= p < 1 */
	int use_effective_conv2d;
	int init_weights; /* 1 = PEFT default init (w2_b = 0), 0 = all random */

	enum fl_peft_sel target_kind;
	char **target_modules; /* list entries, or [0] = the regex; NULL for null/all-linear */
	size_t n_target_modules;
	enum fl_peft_sel exclude_kind; /* NULL, LIST or REGEX */
	char **exclude_modules;
	size_t n_exclude_modules;

	int *layers_to_transform; /* NULL = null */
	size_t n_layers_to_transform;
	int layers_to_transform_is_list; /* 0: written back as a plain int */
	char **layers_pattern;           /* NULL = null */
	size_t n_layers_pattern;
	int layers_pattern_is_list; /* 0: written back as a plain string */

	struct fl_peft_pattern *rank_pattern;
	size_t n_rank_pattern;
	struct fl_peft_pattern *alpha_pattern;
	size_t n_alpha_pattern;

	char **modules_to_save; /* NULL = null */
	size_t n_modules_to_save;

	enum fl_peft_param parameterization; /* "fedloha_parameterization" */
	int has_gamma;                       /* "fedloha_gamma" not null */
	double gamma;                        /* in [0, 1] when has_gamma */

	/* Keys fedloha does not interpret (task_type, base_model_name_or_path,
	 * ...) as a compact JSON object, written back unchanged; NULL if none. */
	char *extra_json;
};

/* A configuration with PEFT's LoHaConfig defaults (r 8, alpha 8, no
 * dropout, init_weights true, target_modules null, ...). */
int fl_peft_config_new(struct fl_peft_config **out);
/* Reads a file. JSON syntax errors give "path:line:column: reason"; a bad
 * value gives "path: key 'r': expected a positive integer, got -3". *out is
 * NULL on failure. */
int fl_peft_config_read(const char *path, struct fl_peft_config **out);
/* The same from memory; `what` names the input in messages. */
int fl_peft_config_parse(const char *json, size_t len, const char *what,
			 struct fl_peft_config **out);
void fl_peft_config_free(struct fl_peft_config *c);
/* Checks every value and compiles every pattern; FL_EINVAL naming the key. */
int fl_peft_config_validate(const struct fl_peft_config *c);
/* Writes a file PEFT can load: every PEFT LoHa key, sorted, indented by 2,
 * plus the keys of extra_json; the fedloha_* keys only when they differ from
 * the PEFT defaults (loha, null), exclude_modules only when not null.
 * Atomic: temporary file, fsync, rename. */
int fl_peft_config_write(const struct fl_peft_config *c, const char *path);

/* "loha", "dense", ... and back (FL_EINVAL for an unknown name). */
const char *fl_peft_param_name(enum fl_peft_param p);
int fl_peft_param_parse(const char *s, enum fl_peft_param *out);

#endif
