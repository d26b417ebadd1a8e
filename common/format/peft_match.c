/* peft_match.c - PEFT's module-selection rules (target/exclude modules,
 * layer indexes, rank/alpha patterns, modules_to_save) and the translation of
 * Python regexes to POSIX extended regexes. Semantics: peft_config.h. This
 * file does not parse JSON and keeps no compiled state: patterns are compiled
 * per call (a few microseconds; adapters have hundreds of modules at most).
 */
#include "peft_config.h"

#include "errors.h"

#include <ctype.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- regex translation (Python syntax -> POSIX ERE) ---- */

/* Longest Python pattern translated; longer ones are refused (PEFT patterns
 * are module names with a few alternatives, far below this). */
#define PEFT_REGEX_MAX 1024
/* Room of the translated POSIX text: prefix + translation + suffix. */
#define PEFT_POSIX_MAX (16 * PEFT_REGEX_MAX)

/* A length-tracked output buffer: every append checks the room and sets
 * `full` instead of writing past the end. */
struct peft_out {
	char buf[PEFT_POSIX_MAX + 1];
	size_t len;
	int full;
};

static void out_str(struct peft_out *o, const char *s)
{
	size_t n = strlen(s);
	if (o->full || n > PEFT_POSIX_MAX - o->len) {
		o->full = 1;
		return;
	}
	memcpy(o->buf + o->len, s, n + 1);
	o->len += n;
}

static void out_ch(struct peft_out *o, char c)
{
	char s[2] = {c, '\0'};
	out_str(o, s);
}

/* The POSIX form of escape \e outside [...], appended to o. Returns NULL
 * or a static reason. */
static const char *peft_escape_outside(char e, struct peft_out *o)
{
	const char *rep = NULL;
	switch (e) {
	case 'd': rep = "[0-9]"; break;
	case 'D': rep = "[^0-9]"; break;
	case 'w': rep = "[A-Za-z0-9_]"; break;
	case 'W': rep = "[^A-Za-z0-9_]"; break;
	case 's': rep = "[[:space:]]"; break;
	case 'S': rep = "[^[:space:]]"; break;
	case 'n': rep = "\n"; break;
	case 't': rep = "\t"; break;
	default:
		if (isalnum((unsigned char)e))
			return "unsupported escape (only \\d \\w \\s \\D \\W \\S \\n \\t)";
		if (strchr(".^$*+?()[]{}|\\", e))
			out_ch(o, '\\');
		out_ch(o, e);
		return NULL;
	}
	out_str(o, rep);
	return NULL;
}

/* The same inside [...]: *br_start says whether the set has a member yet,
 * *br_dash whether an escaped '-' goes at its end. */
static const char *peft_escape_inside(char e, struct peft_out *o, int *br_start, int *br_dash)
{
	const char *rep = NULL;
	switch (e) {
	case 'd': rep = "0-9"; break;
	case 'w': rep = "A-Za-z0-9_"; break;
	case 's': rep = "[:space:]"; break;
	case 'n': rep = "\n"; break;
	case 't': rep = "\t"; break;
	case '-': *br_dash = *br_start = 1; return NULL;
	case ']': return "\\] inside [...] is not supported";
	case '^':
		if (!*br_start)
			return "\\^ inside [...] is not supported";
		rep = "^";
		break;
	default:
		if (isalnum((unsigned char)e))
			return "unsupported escape inside [...]";
		out_ch(o, e);
		return NULL;
	}
	out_str(o, rep);
	*br_start = 1;
	return NULL;
}

/* Largest size of a pattern with its repetitions expanded as glibc's
 * regcomp expands them: it copies an atom once per count of {m,n} and
 * twice for '+' ("((a{255}){255}){255}" or "a+++...+" would take gigabytes).
 * The size counts one per atom, times the upper bound (or the lower one when
 * open) of each {m,n} around it and 2 for each '+'. */
#define PEFT_REGEX_EXPANDED_MAX 2000L
/* glibc's epsilon closures grow much faster than the expanded size when
 * the repeated operand can match the empty string: "(a|b*|){128}" took
 * 1.5 GB, "(a*){9000}" 12 GB; a count stays within 32 */
#define PEFT_REGEX_COUNT_MAX 32
#define PEFT_REGEX_DEPTH_MAX 64

static const char too_heavy[] =
	"its repetitions expand it beyond 2000 atoms, or a {m,n} counts over 32";

static long weight_mul(long a, long b)
{
	return a > PEFT_REGEX_EXPANDED_MAX / (b ? b : 1) ? PEFT_REGEX_EXPANDED_MAX + 1 : a * b;
}

/* A "{m}", "{m,}" or "{m,n}" at p: its largest count through *count and
 * its length, or 0 when p does not start a bound (then '{' is a literal). */
static size_t peft_bound(const char *p, long *count)
{
	const char *q = p + 1;
	long m = 0, n = -1;
	if (*q < '0' || *q > '9')
		return 0;
	while (*q >= '0' && *q <= '9')
		m = m < 100000 ? m * 10 + (*q++ - '0') : (q++, m);
	if (*q == ',') {
		q++;
		if (*q >= '0' && *q <= '9')
			for (n = 0; *q >= '0' && *q <= '9'; q++)
				n = n < 100000 ? n * 10 + (*q - '0') : n;
	}
	if (*q != '}')
		return 0;
	*count = n > m ? n : m;
	return (size_t)(q - p) + 1;
}

/* Length of the bracket expression starting at p ('['), or 0 when it is
 * not closed. */
static size_t peft_bracket_len(const char *p)
{
	const char *q = p + 1;
	if (*q == '^')
		q++;
	if (*q == ']')
		q++;
	for (; *q && *q != ']'; q++)
		if (*q == '\\' && q[1])
			q++;
	return *q ? (size_t)(q - p) + 1 : 0;
}

/* The quantifier at p ('*', '+', '?' or a {m,n} bound, with a lazy '?'
 * after it) applied to an operand of weight *last: its length, or 0 when p
 * holds none. *added: the weight it adds to the group. */
static size_t peft_quantifier(const char *p, long *last, long *added)
{
	long count;
	size_t n = 0;
	*added = 0;
	if (*p == '{' && (n = peft_bound(p, &count)) > 0) {
		if (count > PEFT_REGEX_COUNT_MAX) /* refused by the caller */
			count = PEFT_REGEX_EXPANDED_MAX + 1;
		*added = weight_mul(*last, count > 1 ? count - 1 : 0);
		*last = weight_mul(*last, count);
	} else if (*p == '+') { /* regcomp copies x+ as x x* */
		*added = *last;
		*last = weight_mul(*last, 2);
		n = 1;
	} else if (*p == '*' || *p == '?') { /* no copy; x stays the operand */
		n = 1;
	}
	if (n && p[n] == '?')
		n++;
	return n;
}

/* NULL when the expanded size of py stays within PEFT_REGEX_EXPANDED_MAX,
 * groups nest at most PEFT_REGEX_DEPTH_MAX deep and no quantifier follows
 * another (Python refuses "a**" too; regcomp takes seconds on "a+++++"),
 * else a static reason. */
static const char *peft_regex_weight(const char *py)
{
	long sum[PEFT_REGEX_DEPTH_MAX + 1] = {0}, last = 0, added;
	int depth = 0, quant = 0;
	for (const char *p = py; *p;) {
		size_t n;
		if (*p == '(' || (*p == ')' && depth > 0)) {
			if (*p == '(' && depth == PEFT_REGEX_DEPTH_MAX)
				return "groups nested deeper than 64";
			if (*p == '(') {
				sum[++depth] = 0;
				last = 0;
			} else { /* a group is a node of its own, empty or not */
				last = sum[depth--] + 1;
				sum[depth] += last;
			}
			quant = 0;
			p++;
		} else if (last && (n = peft_quantifier(p, &last, &added)) > 0) {
			if (quant)
				return "a quantifier right after another (as in a** or a{2}+) is "
				       "not supported";
			sum[depth] += added;
			quant = 1;
			p += n;
		} else {
			last = *p != '|'; /* an alternative starts with no operand */
			n = *p == '[' ? peft_bracket_len(p) : 0;
			p += n ? n : (*p == '\\' && p[1]) ? 2 : 1;
			sum[depth] += last;
			quant = 0;
		}
		if (sum[depth] > PEFT_REGEX_EXPANDED_MAX)
			return too_heavy;
	}
	for (; depth > 0; depth--) /* unclosed groups: regcomp refuses them after expanding */
		sum[depth - 1] += sum[depth];
	return sum[0] > PEFT_REGEX_EXPANDED_MAX ? too_heavy : NULL;
}

/* Appends the POSIX form of Python regex `py` to o. Returns NULL or a
 * static reason. */
static const char *peft_regex_translate(const char *py, struct peft_out *o)
{
	int in_br = 0, br_dash = 0, br_start = 0;
	if (strlen(py) > PEFT_REGEX_MAX)
		return "longer than 1024 characters";
	const char *heavy = peft_regex_weight(py);
	if (heavy)
		return heavy;
	for (const char *p = py; *p; p++) {
		char ch = *p;
		if (ch == '\\') {
			char e = *++p;
			if (!e)
				return "trailing backslash";
			const char *why = in_br ? peft_escape_inside(e, o, &br_start, &br_dash)
						: peft_escape_outside(e, o);
			if (why)
				return why;
			continue;
		}
		if (in_br) {
			if (ch == ']' && br_start) {
				if (br_dash)
					out_ch(o, '-');
				in_br = 0;
			}
			out_ch(o, ch);
			br_start = 1;
			continue;
		}
		if (ch == '(' && p[1] == '?') {
			if (p[2] != ':')
				return "(?...) groups other than (?:...) are not supported";
			out_ch(o, '(');
			p += 2;
			continue;
		}
		if (strchr("*+?}", ch) && p[1] == '?') { /* lazy -> greedy */
			out_ch(o, ch);
			p++;
			continue;
		}
		out_ch(o, ch);
		if (ch == '[') {
			in_br = 1;
			br_dash = 0;
			br_start = 0;
			if (p[1] == '^')
				out_ch(o, *++p);
			if (p[1] == ']') { /* a leading ] is literal */
				out_ch(o, *++p);
				br_start = 1;
			}
		}
	}
	return in_br ? "unterminated [...]" : NULL;
}

/* Compiles prefix + translate(py) + suffix. Returns FL_OK or FL_EINVAL with
 * a message naming the regex. */
static int peft_regex_compile(regex_t *re, const char *prefix, const char *py, const char *suffix)
{
	struct peft_out *o = malloc(sizeof(*o));
	if (!o)
		return fl_error_set(FL_ENOMEM, "regex: out of memory");
	o->len = 0;
	o->full = 0;
	o->buf[0] = '\0';
	out_str(o, prefix);
	const char *why = peft_regex_translate(py, o);
	out_str(o, suffix);
	if (!why && o->full)
		why = "its POSIX translation is too long";
	char pb[104];
	if (why) {
		free(o);
		return fl_error_set(FL_EINVAL, "regex '%s': %s",
				    fl_error_safe_str(py, pb, sizeof(pb)), why);
	}
	int rc = regcomp(re, o->buf, REG_EXTENDED);
	free(o);
	if (rc != 0) {
		char msg[128];
		regerror(rc, re, msg, sizeof(msg));
		return fl_error_set(FL_EINVAL, "regex '%s': POSIX regcomp cannot compile it: %s",
				    fl_error_safe_str(py, pb, sizeof(pb)), msg);
	}
	return FL_OK;
}

static int peft_regex_match(const char *prefix, const char *py, const char *suffix, const char *s,
			    int *matched)
{
	regex_t re;
	int err = peft_regex_compile(&re, prefix, py, suffix);
	if (err != FL_OK)
		return err;
	*matched = regexec(&re, s, 0, NULL, 0) == 0;
	regfree(&re);
	return FL_OK;
}

int fl_peft_regex_fullmatch(const char *pattern, const char *s, int *matched)
{
	*matched = 0;
	return peft_regex_match("^(", pattern, ")$", s, matched);
}

/* Layer index of `module` per layers_pattern (see the header); -1 if none. */
static int peft_layer_index(const struct fl_peft_config *c, const char *module, long *index)
{
	*index = -1;
	size_t np = c->n_layers_pattern;
	if (np == 1 && !c->layers_pattern_is_list && c->layers_pattern[0][0] == '\0')
		np = 0; /* "" counts as empty, as in PEFT */
	for (size_t i = 0; i < (np ? np : 1); i++) {
		regex_t re;
		int err = np ? peft_regex_compile(&re, "^.*\\.(", c->layers_pattern[i],
						  ")\\.([0-9]+)\\.")
			     : peft_regex_compile(&re, "^.*\\.[^.]*\\.([0-9]+)\\.", "", "");
		if (err != FL_OK)
			return err;
		regmatch_t m[32];
		size_t g = re.re_nsub; /* the digits are the last group */
		int ok = g < 32 && regexec(&re, module, g + 1, m, 0) == 0 && m[g].rm_so >= 0;
		regfree(&re);
		if (ok) {
			*index = strtol(module + m[g].rm_so, NULL, 10);
			return FL_OK;
		}
	}
	return FL_OK;
}

/* Re-records the current detail prefixed with "what: key 'key': ". */
static int peft_wrap(int err, const char *what, const char *key)
{
	char msg[FL_ERROR_MSG_MAX];
	snprintf(msg, sizeof(msg), "%s", fl_error_msg());
	return fl_error_set(err, "%s: key '%s': %s", what, key, msg);
}

int fl_peft_config_check_patterns(const struct fl_peft_config *c, const char *what)
{
	int m, err;
	if (c->target_kind == FL_PEFT_SEL_REGEX &&
	    (err = fl_peft_regex_fullmatch(c->target_modules[0], "", &m)) != FL_OK)
		return peft_wrap(err, what, "target_modules");
	if (c->exclude_kind == FL_PEFT_SEL_REGEX &&
	    (err = fl_peft_regex_fullmatch(c->exclude_modules[0], "", &m)) != FL_OK)
		return peft_wrap(err, what, "exclude_modules");
	for (size_t i = 0; i < c->n_layers_pattern; i++) {
		regex_t re;
		if ((err = peft_regex_compile(&re, "^.*\\.(", c->layers_pattern[i],
					      ")\\.([0-9]+)\\.")) != FL_OK)
			return peft_wrap(err, what, "layers_pattern");
		regfree(&re);
	}
	for (size_t i = 0; i < c->n_modules_to_save; i++)
		if ((err = peft_regex_match("^(.*\\.)?(", c->modules_to_save[i], ")(\\..*)?$", "",
					    &m)) != FL_OK)
			return peft_wrap(err, what, "modules_to_save");
	for (size_t i = 0; i < c->n_rank_pattern; i++)
		if ((err = peft_regex_match("^(.*\\.)?(", c->rank_pattern[i].key, ")$", "", &m)) !=
		    FL_OK)
			return peft_wrap(err, what, "rank_pattern");
	for (size_t i = 0; i < c->n_alpha_pattern; i++)
		if ((err = peft_regex_match("^(.*\\.)?(", c->alpha_pattern[i].key, ")$", "", &m)) !=
		    FL_OK)
			return peft_wrap(err, what, "alpha_pattern");
	return FL_OK;
}

/* ---- matching ---- */

static int peft_list_match(char **v, size_t n, const char *module, int *exact)
{
	size_t ml = strlen(module);
	*exact = 0;
	for (size_t i = 0; i < n; i++)
		if (strcmp(module, v[i]) == 0)
			return *exact = 1;
	for (size_t i = 0; i < n; i++) {
		size_t el = strlen(v[i]);
		if (ml > el && module[ml - el - 1] == '.' && strcmp(module + ml - el, v[i]) == 0)
			return 1;
	}
	return 0;
}

int fl_peft_config_targets(const struct fl_peft_config *c, const char *module, int is_linear,
			   int is_output_layer, int *targeted)
{
	int m = 0, exact = 0, err;
	*targeted = 0;
	if (c->exclude_kind == FL_PEFT_SEL_REGEX) {
		if ((err = fl_peft_regex_fullmatch(c->exclude_modules[0], module, &m)) != FL_OK)
			return err;
		if (m)
			return FL_OK;
	} else if (c->exclude_kind == FL_PEFT_SEL_LIST &&
		   peft_list_match(c->exclude_modules, c->n_exclude_modules, module, &exact)) {
		return FL_OK;
	}
	/* PEFT never puts an adapter on a module to save (or inside one) */
	for (size_t i = 0; i < c->n_modules_to_save; i++) {
		if ((err = peft_regex_match("^(.*\\.)?(", c->modules_to_save[i], ")(\\..*)?$",
					    module, &m)) != FL_OK)
			return err;
		if (m)
			return FL_OK;
	}
	switch (c->target_kind) {
	case FL_PEFT_SEL_NULL:
		return fl_error_set(
			FL_EUNSUPPORTED,
			"target_modules is null (PEFT then picks modules by model type, "
			"which fedloha cannot know): list them in adapter_config.json");
	case FL_PEFT_SEL_REGEX:
		return fl_peft_regex_fullmatch(c->target_modules[0], module, targeted);
	case FL_PEFT_SEL_ALL_LINEAR:
		/* PEFT expands to the base names of the linear layers. */
		if (!is_linear || is_output_layer)
			return FL_OK;
		m = 1;
		exact = strchr(module, '.') == NULL;
		break;
	case FL_PEFT_SEL_LIST:
		m = peft_list_match(c->target_modules, c->n_target_modules, module, &exact);
		break;
	}
	/* the layer filter applies to list targets matched by suffix only */
	if (m && !exact && c->target_kind != FL_PEFT_SEL_REGEX && c->layers_to_transform &&
	    c->n_layers_to_transform > 0) {
		long idx;
		if ((err = peft_layer_index(c, module, &idx)) != FL_OK)
			return err;
		m = 0;
		for (size_t i = 0; idx >= 0 && i < c->n_layers_to_transform; i++)
			if (c->layers_to_transform[i] == idx)
				m = 1;
	}
	*targeted = m;
	return FL_OK;
}

static const struct fl_peft_pattern *peft_pattern_find(const struct fl_peft_pattern *p, size_t n,
						       const char *module)
{
	for (size_t i = 0; i < n; i++) {
		int m = 0;
		if (peft_regex_match("^(.*\\.)?(", p[i].key, ")$", module, &m) == FL_OK && m)
			return &p[i];
	}
	return NULL;
}

int fl_peft_config_rank(const struct fl_peft_config *c, const char *module)
{
	const struct fl_peft_pattern *p = peft_pattern_find(c->rank_pattern, c->n_rank_pattern,
							    module);
	return p ? (int)p->value : c->r;
}

double fl_peft_config_alpha(const struct fl_peft_config *c, const char *module)
{
	const struct fl_peft_pattern *p = peft_pattern_find(c->alpha_pattern, c->n_alpha_pattern,
							    module);
	return p ? p->value : c->alpha;
}

double fl_peft_config_scale(const struct fl_peft_config *c, const char *module)
{
	return fl_peft_config_alpha(c, module) / fl_peft_config_rank(c, module);
}

int fl_peft_config_is_module_to_save(const struct fl_peft_config *c, const char *module)
{
	int exact;
	return peft_list_match(c->modules_to_save, c->n_modules_to_save, module, &exact);
}
