/* peft_match.h - the module-selection rules of a PEFT LoHa configuration:
 * target_modules / exclude_modules, layers_to_transform / layers_pattern,
 * rank_pattern / alpha_pattern and modules_to_save, with Python-syntax
 * regexes run through POSIX regcomp. The exact semantics are documented in
 * peft_config.h, which includes this header; include that one.
 */
#ifndef FL_PEFT_MATCH_H
#define FL_PEFT_MATCH_H

struct fl_peft_config;

/* *targeted = 1 when `module` gets an adapter. is_linear: the module is a
 * linear layer (its weight is 2-D); is_output_layer: it is the model's output
 * layer (only "all-linear" looks at it). FL_EUNSUPPORTED when target_modules
 * is null (PEFT then picks defaults by model type). */
int fl_peft_config_targets(const struct fl_peft_config *c, const char *module, int is_linear,
			   int is_output_layer, int *targeted);
/* r and alpha of a module after rank_pattern / alpha_pattern. */
int fl_peft_config_rank(const struct fl_peft_config *c, const char *module);
double fl_peft_config_alpha(const struct fl_peft_config *c, const char *module);
/* alpha / r of a module. */
double fl_peft_config_scale(const struct fl_peft_config *c, const char *module);
/* 1 when module equals a modules_to_save entry or ends with "." + entry. */
int fl_peft_config_is_module_to_save(const struct fl_peft_config *c, const char *module);

/* Compiles every regex of c (target/exclude regex, layers_pattern, pattern
 * keys); FL_EINVAL with "what: key 'k': regex '...': reason" otherwise. */
int fl_peft_config_check_patterns(const struct fl_peft_config *c, const char *what);

/* Whole-string match of a Python-syntax regex; FL_EINVAL with a message when
 * the pattern cannot be used. Exposed for the tests and for callers that
 * select modules themselves. */
int fl_peft_regex_fullmatch(const char *pattern, const char *s, int *matched);

#endif
