/* test_peft_regex.c - the limits of the PEFT regex translator: over-long
 * patterns, counted repetitions whose expansion would blow up glibc's
 * regcomp, stacked quantifiers; refused with a message, in the regex call
 * and in a config read (a Welcome's target_modules reaches the same
 * parser). */
#include "errors.h"
#include "peft_config.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Over-long patterns are refused with a message, in the regex call and in
 * a config read (a Welcome's target_modules reaches the same parser); the
 * longest accepted one, made of the escapes that grow most, still works. */
static void test_regex_limits(void)
{
	int m = -1;
	char *p = malloc(4096);
	FL_CHECK(p != NULL);
	if (!p)
		return;
	memset(p, 'a', 2000);
	p[2000] = '\0';
	FL_CHECK(fl_peft_regex_fullmatch(p, p, &m) == FL_EINVAL);
	FL_CHECK(strstr(fl_error_msg(), "longer than 1024") != NULL);
	char json[4200];
	snprintf(json, sizeof(json), "{\"peft_type\": \"LOHA\", \"target_modules\": \"%s\"}", p);
	struct fl_peft_config *c = NULL;
	FL_CHECK(fl_peft_config_parse(json, strlen(json), "t.json", &c) == FL_EINVAL && !c);
	FL_CHECK(strstr(fl_error_msg(), "longer than 1024") != NULL);
	for (int i = 0; i < 512; i++)
		memcpy(p + 2 * i, "\\W", 2);
	p[1024] = '\0';
	FL_CHECK(fl_peft_regex_fullmatch(p, "-", &m) == FL_OK && m == 0);
	memset(p, '-', 512);
	p[512] = '\0';
	char *q = malloc(4096);
	FL_CHECK(q != NULL);
	if (q) {
		for (int i = 0; i < 512; i++)
			memcpy(q + 2 * i, "\\W", 2);
		q[1024] = '\0';
		FL_CHECK(fl_peft_regex_fullmatch(q, p, &m) == FL_OK && m == 1);
	}
	free(q);
	free(p);
	/* Counted repetitions are bounded by their expanded size: glibc's
	 * regcomp copies an atom once per count (the first one took 11 GB). */
	FL_CHECK(fl_peft_regex_fullmatch("(((a{255}){255}){255}){255}", "a", &m) == FL_EINVAL);
	FL_CHECK(strstr(fl_error_msg(), "2000") != NULL);
	FL_CHECK(fl_peft_regex_fullmatch("(a{200}){200}", "a", &m) == FL_EINVAL);
	FL_CHECK(fl_peft_regex_fullmatch("(a{200}){200", "a", &m) == FL_EINVAL);
	FL_CHECK(fl_peft_regex_fullmatch("(a{30}){30}", "a", &m) == FL_OK && m == 0);
	/* a repeated operand that can be empty: glibc's epsilon closures took
	 * 11 s on "(){2255}+b" (fuzz_peft_regex), 12 GB on "(a*){9000}b" and
	 * 1.5 GB on "(a|b*|){128}b"; counts stay within 32, groups count */
	FL_CHECK(fl_peft_regex_fullmatch("(){2255}+b", "b", &m) == FL_EINVAL);
	FL_CHECK(fl_peft_regex_fullmatch("(a*){9000}b", "b", &m) == FL_EINVAL);
	FL_CHECK(fl_peft_regex_fullmatch("(a|b*|){128}b", "b", &m) == FL_EINVAL);
	FL_CHECK(strstr(fl_error_msg(), "over 32") != NULL);
	FL_CHECK(fl_peft_regex_fullmatch("(a|b*|){32}b", "b", &m) == FL_OK && m == 1);
	FL_CHECK(fl_peft_regex_fullmatch("layers\\.\\d{1,3}\\.fc", "layers.12.fc", &m) == FL_OK &&
		 m == 1);
	FL_CHECK(fl_peft_regex_fullmatch("a{3,}", "aaaa", &m) == FL_OK && m == 1);
	/* '+' is copied too (x+ = x x*): 120 of them in a row took over 2 GB
	 * (fuzz_peft_config); '*' and '?' keep the operand for a later count. */
	char plus[130] = "a";
	memset(plus + 1, '+', 120);
	plus[121] = '\0';
	FL_CHECK(fl_peft_regex_fullmatch(plus, "a", &m) == FL_EINVAL);
	FL_CHECK(fl_peft_regex_fullmatch("a{200}*{200}", "a", &m) == FL_EINVAL);
	FL_CHECK(fl_peft_regex_fullmatch("(fc|conv)+\\d+?", "fcconv1", &m) == FL_OK && m == 1);
	/* A quantifier right after another is refused, as Python does: glibc
	 * took 18 s on the 47-byte "')++++++++*+++++..." (fuzz_peft_regex). */
	FL_CHECK(fl_peft_regex_fullmatch("a**", "a", &m) == FL_EINVAL);
	FL_CHECK(strstr(fl_error_msg(), "quantifier right after another") != NULL);
	FL_CHECK(fl_peft_regex_fullmatch("a{2}+", "aa", &m) == FL_EINVAL);
	FL_CHECK(fl_peft_regex_fullmatch("mi+++++++++++:+)++++++od", "mi", &m) == FL_EINVAL);
	FL_CHECK(fl_peft_regex_fullmatch("a*?b+?c??d{1,2}?", "bd", &m) == FL_OK && m == 1);
	FL_CHECK(fl_peft_regex_fullmatch("\\|+x", "||x", &m) == FL_OK && m == 1);
}

int main(void)
{
	FL_RUN(test_regex_limits);
	return fl_test_main_end();
}
