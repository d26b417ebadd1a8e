/* test_safetensors_bad.c - every malformed safetensors header the parser
 * refuses (its error code and a one-line message naming the buffer and the
 * fault) and the length-field and file-level cases through the file
 * reader. Valid files, conversions and the fuzz loop: test_safetensors.c. */
#include "errors.h"
#include "safetensors.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A file made of: u64 length of hdr, hdr, data_len bytes 0..255 repeating. */
static unsigned char *make_file(const char *hdr, uint64_t hlen_field, size_t data_len, size_t *len)
{
	size_t hl = strlen(hdr);
	*len = 8 + hl + data_len;
	unsigned char *b = malloc(*len);
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(hlen_field >> (8 * i));
	memcpy(b + 8, hdr, hl);
	for (size_t i = 0; i < data_len; i++)
		b[8 + hl + i] = (unsigned char)i;
	return b;
}

/* Parses hdr + data_len bytes; checks the code and that the message names
 * the buffer and contains each of the NULL-terminated words. */
static void expect_bad(const char *hdr, size_t data_len, int want, const char *w1, const char *w2)
{
	size_t len;
	unsigned char *b = make_file(hdr, strlen(hdr), data_len, &len);
	struct fl_st *st = (struct fl_st *)1;
	fl_error_clear();
	int rc = fl_st_parse(b, len, "bad.safetensors", &st);
	const char *msg = fl_error_msg();
	FL_CHECK_MSG(rc == want, "header %s: rc %d, want %d (%s)", hdr, rc, want, msg);
	FL_CHECK(st == NULL);
	FL_CHECK_MSG(strstr(msg, "bad.safetensors") != NULL, "message without file name: %s", msg);
	FL_CHECK_MSG(!strchr(msg, '\n'), "message is not one line: %s", msg);
	FL_CHECK_MSG(!w1 || strstr(msg, w1), "message '%s' lacks '%s'", msg, w1);
	FL_CHECK_MSG(!w2 || strstr(msg, w2), "message '%s' lacks '%s'", msg, w2);
	free(b);
}

static void test_malformed_headers(void)
{
	const char *ok = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
	size_t len;
	unsigned char *b = make_file(ok, strlen(ok), 8, &len);
	struct fl_st *st = NULL;
	FL_CHECK(fl_st_parse(b, len, "ok", &st) == FL_OK && fl_st_count(st) == 1);
	fl_st_free(st);
	free(b);

	expect_bad("{\"w\":{\"dtype\":\"F32\",", 0, FL_EFORMAT, "line 1", "column");
	expect_bad("{\"w\" 5}", 0, FL_EFORMAT, "line 1, column", NULL);
	expect_bad("[1, 2, 3]", 0, FL_EFORMAT, "not a JSON object", NULL);
	expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
		   "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
		   16, FL_EFORMAT, "duplicate", NULL);
	expect_bad("{\"w\":[1]}", 0, FL_EFORMAT, "'w'", "not an object");
	expect_bad("{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, FL_EFORMAT, "'w'",
		   "missing \"dtype\"");
	expect_bad("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, FL_EFORMAT, "'w'",
		   "missing \"shape\"");
	expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, FL_EFORMAT, "'w'",
		   "missing \"data_offsets\"");
	expect_bad("{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2,
		   FL_EFORMAT, "'w'", "unknown dtype \"F8_E4M3\"");
	expect_bad("{\"w\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,1]}}", 1, FL_EFORMAT,
		   "'w'", "\"Q4\"");
	expect_bad("{\"w\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, FL_EFORMAT,
		   "'w'", "dtype");
	expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8,
		   FL_EFORMAT, "'w'", "negative");
	expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8,
		   FL_EFORMAT, "'w'", "not an integer");
	expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8, FL_EFORMAT,
		   "'w'", "not an array");
	expect_bad(
		"{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}",
		1, FL_ERANGE, "'w'", "dimensions");
	expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
		   "\"data_offsets\":[0,8]}}",
		   8, FL_ERANGE, "'w'", "overflow");
	expect_bad("{\"w\":{\"dtype\":\"U8\",\"shape\":[9223372036854775807,3],"
		   "\"data_offsets\":[0,8]}}",
		   8, FL_ERANGE, "'w'", "overflow");
	expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 8,
		   FL_EFORMAT, "'w'", "outside the data area");
	expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],"
		   "\"data_offsets\":[9223372036854775799,9223372036854775807]}}",
		   8, FL_EFORMAT, "'w'", "outside the data area");
	expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8,
		   FL_EFORMAT, "'w'", "end before begin");
	expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8,
		   FL_EFORMAT, "'w'", "negative");
	expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8, FL_EFORMAT,
		   "'w'", "data_offsets");
	expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
		   FL_EFORMAT, "'w'", "need 12");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
		   "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
		   12, FL_EFORMAT, "overlapping", "'b'");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
		   "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}",
		   8, FL_EFORMAT, "overlapping", "'z'");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
		   "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
		   20, FL_EFORMAT, "hole of 4 bytes", "'b'");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
		   FL_EFORMAT, "hole", "'a'");
	expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 11,
		   FL_EFORMAT, "3 trailing bytes", "'a'");
	expect_bad("{}", 5, FL_EFORMAT, "trailing bytes", NULL);
	expect_bad("{\"__metadata__\":{\"format\":1}}", 0, FL_EFORMAT, "'format'", "not a string");
	expect_bad("{\"__metadata__\":[\"pt\"]}", 0, FL_EFORMAT, "__metadata__", "not an object");
	expect_bad("{\"bad\\nname\":{\"dtype\":\"X\",\"shape\":[],\"data_offsets\":[0,0]}}", 0,
		   FL_EFORMAT, "'bad?name'", NULL);

	/* Zero-element tensors anywhere on a boundary are fine. */
	const char *zeros = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
			    "\"z\":{\"dtype\":\"BF16\",\"shape\":[3,0],\"data_offsets\":[8,8]},"
			    "\"y\":{\"dtype\":\"I8\",\"shape\":[0],\"data_offsets\":[0,0]}}";
	b = make_file(zeros, strlen(zeros), 8, &len);
	FL_CHECK(fl_st_parse(b, len, "zeros", &st) == FL_OK);
	FL_CHECK(st && fl_st_count(st) == 3 && strcmp(fl_st_at(st, 0)->name, "y") == 0 &&
		 strcmp(fl_st_at(st, 2)->name, "z") == 0);
	fl_st_free(st);
	free(b);
}

/* Length-field and file-level cases, through the file reader. */
static void test_malformed_files(void)
{
	const char *dir = fl_test_tmpdir("st-bad");
	char p[600];
	snprintf(p, sizeof(p), "%s/x.safetensors", dir);
	struct fl_st *st = (struct fl_st *)1;

	fl_test_write_file(p, "", 0);
	FL_CHECK(fl_st_read(p, &st) == FL_EFORMAT && st == NULL);
	FL_CHECK(strstr(fl_error_msg(), p) != NULL);
	fl_test_write_file(p, "\x10\0\0\0\0\0\0", 7);
	FL_CHECK(fl_st_read(p, &st) == FL_EFORMAT && strstr(fl_error_msg(), "too short"));

	size_t len;
	const char *hdr = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
	unsigned char *b = make_file(hdr, strlen(hdr) + 20, 8, &len); /* 20 bytes too long */
	fl_test_write_file(p, b, len);
	FL_CHECK(fl_st_read(p, &st) == FL_EFORMAT && strstr(fl_error_msg(), "exceeds the"));
	FL_CHECK(fl_st_parse(b, len, "buf", &st) == FL_EFORMAT);
	free(b);
	b = make_file(hdr, UINT64_C(1) << 63, 8, &len);
	fl_test_write_file(p, b, len);
	FL_CHECK(fl_st_read(p, &st) == FL_ERANGE && strstr(fl_error_msg(), "limit"));
	FL_CHECK(fl_st_parse(b, len, "buf", &st) == FL_ERANGE);
	free(b);
	b = make_file(hdr, 1, 8, &len);
	FL_CHECK(fl_st_parse(b, len, "buf", &st) == FL_EFORMAT);
	free(b);
	/* A NUL byte inside the header is not JSON. */
	b = make_file("{\"a\":1} ", 8, 0, &len);
	b[10] = 0;
	FL_CHECK(fl_st_parse(b, len, "buf", &st) == FL_EFORMAT);
	FL_CHECK(strstr(fl_error_msg(), "column") != NULL);
	free(b);

	FL_CHECK(fl_st_parse(NULL, 0, NULL, &st) == FL_EFORMAT && st == NULL);
	snprintf(p, sizeof(p), "%s/missing.safetensors", dir);
	FL_CHECK(fl_st_read(p, &st) == FL_ENOTFOUND && st == NULL);
	FL_CHECK(fl_st_read(dir, &st) == FL_EIO && st == NULL);
}

int main(void)
{
	FL_RUN(test_malformed_headers);
	FL_RUN(test_malformed_files);
	return fl_test_main_end();
}
