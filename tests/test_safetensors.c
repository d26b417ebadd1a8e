/* test_safetensors.c - safetensors reading, validation, writing and the
 * F16/BF16/F64 conversions; a file from the PyTorch reference writer; a
 * truncate/bit-flip fuzz loop. The malformed headers and files:
 * test_safetensors_bad.c. */
#include "errors.h"
#include "rng.h"
#include "safetensors.h"
#include "testutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- small helpers ---- */

/* Names in dir that contain ".tmp." (leftover temporary files). */
static int count_tmp_files(const char *dir)
{
	DIR *d = opendir(dir);
	int n = 0;
	struct dirent *e;
	while (d && (e = readdir(d)))
		n += strstr(e->d_name, ".tmp.") != NULL;
	if (d)
		closedir(d);
	return n;
}

static float f32_of_bits(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static uint32_t bits_of_f32(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

/* fl_st_tensor_to_f32 of a 1-d tensor of numel elements over data. */
static int to_f32(enum fl_dtype dtype, const void *data, size_t numel, size_t nbytes, float *out)
{
	struct fl_st_tensor t = {.name = "x",
				 .dtype = dtype,
				 .ndim = 1,
				 .shape = {(int64_t)numel},
				 .numel = numel,
				 .data = data,
				 .nbytes = nbytes};
	return fl_st_tensor_to_f32(&t, out, numel);
}

/* ---- tests ---- */

static void test_dtype_table(void)
{
	static const char *names[] = {"F32", "F16", "BF16", "F64", "I64",
				      "I32", "I16", "I8",   "U8",  "BOOL"};
	static const size_t sizes[] = {4, 2, 2, 8, 8, 4, 2, 1, 1, 1};
	for (int i = 0; i < FL_DTYPE_COUNT; i++) {
		enum fl_dtype d;
		FL_CHECK(strcmp(fl_dtype_name((enum fl_dtype)i), names[i]) == 0);
		FL_CHECK(fl_dtype_size((enum fl_dtype)i) == sizes[i]);
		FL_CHECK(fl_dtype_parse(names[i], &d) == FL_OK && d == (enum fl_dtype)i);
	}
	enum fl_dtype d;
	FL_CHECK(fl_dtype_parse("F8_E4M3", &d) == FL_EFORMAT);
	FL_CHECK(fl_dtype_parse("f32", &d) == FL_EFORMAT);
	FL_CHECK(fl_dtype_size(FL_DTYPE_COUNT) == 0);
}

static void test_half_conversions(void)
{
	static const uint16_t h[] = {0x3C00, 0xC100, 0x7BFF, 0x0001, 0x03FF, 0x0400,
				     0x8000, 0x7C00, 0xFC00, 0x7E00, 0x3555};
	static const uint32_t want[] = {
		0x3F800000, /* 1.0 */
		0xC0200000, /* -2.5 */
		0x477FE000, /* 65504 */
		0x33800000, /* 2^-24, smallest subnormal */
		0x387FC000, /* 1023 * 2^-24, largest subnormal */
		0x38800000, /* 2^-14, smallest normal */
		0x80000000, /* -0 */
		0x7F800000, /* inf */
		0xFF800000, /* -inf */
		0x7FC00000, /* quiet NaN */
		0x3EAAA000, /* 0.333251953125 */
	};
	size_t n = sizeof(h) / sizeof(h[0]);
	float out[16];
	FL_CHECK(to_f32(FL_DTYPE_F16, h, n, sizeof(h), out) == FL_OK);
	for (size_t i = 0; i < n; i++)
		FL_CHECK_MSG(bits_of_f32(out[i]) == want[i], "f16 %04x -> %08x, want %08x", h[i],
			     bits_of_f32(out[i]), want[i]);
	FL_CHECK(out[0] == 1.0f && out[1] == -2.5f && out[2] == 65504.0f);
	FL_CHECK(out[3] == ldexpf(1.0f, -24) && isinf(out[7]) && isnan(out[9]));

	static const uint16_t b[] = {0x4049, 0x3F80, 0xC020, 0x7F80,
				     0xFF80, 0x7FC0, 0x0001, 0x8000};
	static const float bw[] = {3.140625f, 1.0f, -2.5f,     INFINITY,
				   -INFINITY, NAN,  0x1p-133f, -0.0f};
	size_t nb = sizeof(b) / sizeof(b[0]);
	FL_CHECK(to_f32(FL_DTYPE_BF16, b, nb, sizeof(b), out) == FL_OK);
	for (size_t i = 0; i < nb; i++) {
		if (isnan(bw[i]))
			FL_CHECK(isnan(out[i]));
		else
			FL_CHECK_MSG(bits_of_f32(out[i]) == bits_of_f32(bw[i]), "bf16 %04x -> %g",
				     b[i], (double)out[i]);
	}

	/* F64 rounds to nearest even; too large becomes inf. */
	static const double d[] = {0.1, 1.0 + 0x1p-24, 1.0 + 0x1.8p-24, 1e300, -1e-50, 3.0};
	size_t nd = sizeof(d) / sizeof(d[0]);
	FL_CHECK(to_f32(FL_DTYPE_F64, d, nd, sizeof(d), out) == FL_OK);
	FL_CHECK(bits_of_f32(out[0]) == 0x3DCCCCCD);
	FL_CHECK(out[1] == 1.0f);
	FL_CHECK(out[2] == 1.0f + 0x1p-23f);
	FL_CHECK(isinf(out[3]) && out[3] > 0);
	FL_CHECK(out[4] == 0.0f && signbit(out[4]));
	FL_CHECK(out[5] == 3.0f);

	/* F32 is a copy, even from an unaligned address. */
	unsigned char raw[13];
	float src[3] = {1.5f, -0.0f, f32_of_bits(0x7F800001)};
	memcpy(raw + 1, src, 12);
	struct fl_st_tensor t = {.name = "f",
				 .dtype = FL_DTYPE_F32,
				 .ndim = 1,
				 .shape = {3},
				 .numel = 3,
				 .data = raw + 1,
				 .nbytes = 12};
	FL_CHECK(fl_st_tensor_to_f32(&t, out, 3) == FL_OK);
	FL_CHECK(memcmp(out, src, 12) == 0);
	FL_CHECK(fl_st_tensor_to_f32(&t, out, 2) == FL_ESHAPE);
	t.dtype = FL_DTYPE_I32;
	FL_CHECK(fl_st_tensor_to_f32(&t, out, 3) == FL_EUNSUPPORTED);
}

static void fill_pattern(unsigned char bytes[256])
{
	for (int i = 0; i < 256; i++)
		bytes[i] = (unsigned char)(i * 37 + 11);
}

/* The tensor of dtype i: names chosen so that name order differs from
 * insertion order. */
static void dtype_tensor_name(char *name, size_t cap, int i)
{
	snprintf(name, cap, "t%d.%s", (FL_DTYPE_COUNT - i) % FL_DTYPE_COUNT,
		 fl_dtype_name((enum fl_dtype)i));
}

/* One tensor of every dtype, with distinct bytes, plus edge shapes. */
static void add_all_dtypes(struct fl_st *st)
{
	unsigned char bytes[256];
	fill_pattern(bytes);
	for (int i = 0; i < FL_DTYPE_COUNT; i++) {
		char name[32];
		dtype_tensor_name(name, sizeof(name), i);
		int64_t shape[2] = {2, 3};
		FL_CHECK(fl_st_add(st, name, (enum fl_dtype)i, shape, 2, bytes + i) == FL_OK);
	}
	int64_t zero[3] = {4, 0, 5};
	FL_CHECK(fl_st_add(st, "empty", FL_DTYPE_F32, zero, 3, NULL) == FL_OK);
	float scalar = 0.25f;
	FL_CHECK(fl_st_add_f32(st, "scalar", NULL, 0, &scalar) == FL_OK);
	FL_CHECK(fl_st_set_metadata(st, "format", "pt") == FL_OK);
	FL_CHECK(fl_st_set_metadata(st, "note", "first") == FL_OK);
	FL_CHECK(fl_st_set_metadata(st, "note", "caf\xc3\xa9 \"quoted\"") == FL_OK);
}

static void check_all_dtypes(const struct fl_st *st)
{
	unsigned char bytes[256];
	fill_pattern(bytes);
	for (int i = 0; i < FL_DTYPE_COUNT; i++) {
		char name[32];
		dtype_tensor_name(name, sizeof(name), i);
		const struct fl_st_tensor *t = fl_st_find(st, name);
		FL_CHECK_MSG(t != NULL, "missing %s", name);
		if (!t)
			continue;
		size_t sz = fl_dtype_size((enum fl_dtype)i);
		FL_CHECK(t->dtype == (enum fl_dtype)i && t->ndim == 2 && t->shape[0] == 2 &&
			 t->shape[1] == 3 && t->numel == 6 && t->nbytes == 6 * sz);
		FL_CHECK(memcmp(t->data, bytes + i, 6 * sz) == 0);
	}
	const struct fl_st_tensor *e = fl_st_find(st, "empty"), *s = fl_st_find(st, "scalar");
	FL_CHECK(e && e->ndim == 3 && e->shape[1] == 0 && e->numel == 0 && e->nbytes == 0);
	FL_CHECK(s && s->ndim == 0 && s->numel == 1 && s->nbytes == 4);
	float v = 0;
	FL_CHECK(fl_st_get_f32(st, "scalar", NULL, 0, &v) == FL_OK && v == 0.25f);
	FL_CHECK(strcmp(fl_st_metadata(st, "format"), "pt") == 0);
	FL_CHECK(strcmp(fl_st_metadata(st, "note"), "caf\xc3\xa9 \"quoted\"") == 0);
	FL_CHECK(fl_st_metadata(st, "missing") == NULL);
	const char *val = NULL;
	FL_CHECK(strcmp(fl_st_metadata_at(st, 0, &val), "format") == 0 && strcmp(val, "pt") == 0);
	FL_CHECK(strcmp(fl_st_metadata_at(st, 1, NULL), "note") == 0);
}

static void test_roundtrip(void)
{
	const char *dir = fl_test_tmpdir("st-roundtrip");
	char p1[600], p2[600];
	snprintf(p1, sizeof(p1), "%s/a.safetensors", dir);
	snprintf(p2, sizeof(p2), "%s/b.safetensors", dir);

	struct fl_st *w;
	FL_CHECK(fl_st_new(&w) == FL_OK);
	add_all_dtypes(w);
	int64_t shape[1] = {1};
	float x = 1;
	FL_CHECK(fl_st_add_f32(w, "scalar", shape, 1, &x) == FL_EINVAL); /* duplicate */
	FL_CHECK(fl_st_add_f32(w, "__metadata__", shape, 1, &x) == FL_EINVAL);
	FL_CHECK(fl_st_add_f32(w, "bad\xff", shape, 1, &x) == FL_EINVAL);
	shape[0] = -1;
	FL_CHECK(fl_st_add_f32(w, "neg", shape, 1, &x) == FL_EINVAL);
	int64_t huge[3] = {INT64_C(1) << 31, INT64_C(1) << 31, INT64_C(1) << 31};
	FL_CHECK(fl_st_add_f32(w, "huge", huge, 3, &x) == FL_ERANGE);
	FL_CHECK(fl_st_count(w) == FL_DTYPE_COUNT + 2);
	FL_CHECK(fl_st_write(w, p1) == FL_OK);
	check_all_dtypes(w);
	fl_st_free(w);

	/* Layout: length multiple of 8, metadata first, data in name order. */
	size_t len;
	unsigned char *raw = (unsigned char *)fl_test_read_file(p1, &len);
	FL_CHECK(raw && len > 8);
	uint64_t hl = 0;
	for (int i = 7; i >= 0; i--)
		hl = (hl << 8) | raw[i];
	FL_CHECK(hl % 8 == 0 && hl + 8 <= len);
	FL_CHECK(memcmp(raw + 8, "{\"__metadata__\":{\"format\":\"pt\",", 31) == 0);
	FL_CHECK(raw[8 + hl - 1] == ' ' || raw[8 + hl - 1] == '}');
	free(raw);

	struct fl_st *r = NULL;
	FL_CHECK(fl_st_read(p1, &r) == FL_OK);
	if (!r)
		return;
	check_all_dtypes(r);
	FL_CHECK(fl_st_metadata_count(r) == 2);
	FL_CHECK(fl_st_metadata_at(r, 2, NULL) == NULL);
	/* File order = ascending offset = name order. */
	for (size_t i = 1; i < fl_st_count(r); i++)
		FL_CHECK(strcmp(fl_st_at(r, i - 1)->name, fl_st_at(r, i)->name) < 0);
	FL_CHECK(fl_st_at(r, fl_st_count(r)) == NULL);

	/* Extend what was read, write it over its own source and elsewhere. */
	const struct fl_st_tensor *keep = fl_st_find(r, "t0.I64");
	float extra[4] = {1, 2, 3, 4};
	int64_t es[2] = {2, 2};
	FL_CHECK(fl_st_add_f32(r, "a.extra", es, 2, extra) == FL_OK);
	FL_CHECK(fl_st_find(r, "t0.I64") == keep); /* pointers survive fl_st_add */
	FL_CHECK(fl_st_set_metadata(r, "round", "7") == FL_OK);
	extra[0] = 99; /* the writer copied the bytes */
	FL_CHECK(fl_st_write(r, p1) == FL_OK);
	FL_CHECK(fl_st_write(r, p2) == FL_OK);
	fl_st_free(r);
	unsigned char *b1 = (unsigned char *)fl_test_read_file(p1, &len);
	size_t len2;
	unsigned char *b2 = (unsigned char *)fl_test_read_file(p2, &len2);
	FL_CHECK(b1 && b2 && len == len2 && memcmp(b1, b2, len) == 0);
	free(b1);
	free(b2);

	FL_CHECK(fl_st_read(p2, &r) == FL_OK);
	if (r) {
		check_all_dtypes(r);
		float got[4];
		FL_CHECK(fl_st_get_f32(r, "a.extra", es, 2, got) == FL_OK);
		FL_CHECK(got[0] == 1 && got[3] == 4);
		FL_CHECK(strcmp(fl_st_metadata(r, "round"), "7") == 0);
		FL_CHECK(fl_st_metadata_count(r) == 3);
		FL_CHECK(strcmp(fl_st_at(r, 0)->name, "a.extra") == 0);
		int64_t wrong[2] = {4, 1};
		FL_CHECK(fl_st_get_f32(r, "a.extra", wrong, 2, got) == FL_ESHAPE);
		FL_CHECK(strstr(fl_error_msg(), "[2, 2]") && strstr(fl_error_msg(), "[4, 1]"));
		FL_CHECK(fl_st_get_f32(r, "nope", es, 2, got) == FL_ENOTFOUND);
		FL_CHECK(fl_st_get_f32(r, "t5.I32", NULL, 0, got) == FL_ESHAPE);
		fl_st_free(r);
	}
	FL_CHECK(count_tmp_files(dir) == 0);

	/* An empty file: "{}" padded to 8. */
	FL_CHECK(fl_st_new(&w) == FL_OK);
	FL_CHECK(fl_st_write(w, p2) == FL_OK);
	fl_st_free(w);
	raw = (unsigned char *)fl_test_read_file(p2, &len);
	FL_CHECK(raw && len == 16 && memcmp(raw, "\x08\0\0\0\0\0\0\0{}      ", 16) == 0);
	free(raw);
	FL_CHECK(fl_st_read(p2, &r) == FL_OK && fl_st_count(r) == 0);
	fl_st_free(r);
	fl_st_free(NULL);
}

/* A file written by the PyTorch reference's st_save (tests/data/safetensors/
 * reference.safetensors); fl_st_write must reproduce it byte for byte. */
static void test_reference_file(void)
{
	const char *path = fl_test_data("safetensors/reference.safetensors");
	struct fl_st *st = NULL;
	FL_CHECK_MSG(fl_st_read(path, &st) == FL_OK, "%s", fl_error_msg());
	if (!st)
		return;
	FL_CHECK(fl_st_count(st) == 4);
	FL_CHECK(strcmp(fl_st_metadata(st, "format"), "pt") == 0);
	FL_CHECK(strcmp(fl_st_metadata(st, "note"), "fedloha test") == 0);
	int64_t s23[2] = {2, 3}, s4[1] = {4}, s1[1] = {1};
	float a[6], h[4], sc;
	static const float wa[6] = {1, -2.5f, 0.5f, 3.25f, -0.125f, 100};
	static const float wh[4] = {1, -2.5f, 65504, 0x1p-24f};
	FL_CHECK(fl_st_get_f32(st, "a.weight", s23, 2, a) == FL_OK);
	FL_CHECK_ARRAY_NEAR(a, wa, 6, 0, 0);
	FL_CHECK(fl_st_get_f32(st, "b.half", s4, 1, h) == FL_OK);
	FL_CHECK_ARRAY_NEAR(h, wh, 4, 0, 0);
	FL_CHECK(fl_st_find(st, "b.half")->dtype == FL_DTYPE_F16);
	FL_CHECK(fl_st_get_f32(st, "d.scale", s1, 1, &sc) == FL_OK && sc == 0.75f);
	const struct fl_st_tensor *c = fl_st_find(st, "c.steps");
	FL_CHECK(c && c->dtype == FL_DTYPE_I64 && c->numel == 2);
	if (c) {
		int64_t cv[2];
		memcpy(cv, c->data, 16);
		FL_CHECK(cv[0] == -3 && cv[1] == INT64_C(1) << 40);
		FL_CHECK(fl_st_tensor_to_f32(c, a, 2) == FL_EUNSUPPORTED);
	}
	char out[600];
	snprintf(out, sizeof(out), "%s/copy.safetensors", fl_test_tmpdir("st-ref"));
	FL_CHECK(fl_st_write(st, out) == FL_OK);
	fl_st_free(st);
	size_t la, lb;
	unsigned char *ra = (unsigned char *)fl_test_read_file(path, &la);
	unsigned char *rb = (unsigned char *)fl_test_read_file(out, &lb);
	FL_CHECK(ra && rb && la == lb && memcmp(ra, rb, la) == 0);
	free(ra);
	free(rb);
}

static void test_write_failures(void)
{
	const char *dir = fl_test_tmpdir("st-wfail");
	char p[600];
	struct fl_st *w;
	FL_CHECK(fl_st_new(&w) == FL_OK);
	float x[2] = {1, 2};
	int64_t s[1] = {2};
	FL_CHECK(fl_st_add_f32(w, "x", s, 1, x) == FL_OK);

	snprintf(p, sizeof(p), "%s/no/such/folder/x.safetensors", dir);
	FL_CHECK(fl_st_write(w, p) == FL_EIO && strstr(fl_error_msg(), p));
	/* Renaming over a non-empty folder fails: the temp file must go. */
	snprintf(p, sizeof(p), "%s/target", dir);
	mkdir(p, 0700);
	char inner[700];
	snprintf(inner, sizeof(inner), "%s/keep", p);
	fl_test_write_file(inner, "k", 1);
	FL_CHECK(fl_st_write(w, p) == FL_EIO);
	FL_CHECK(count_tmp_files(dir) == 0);
	struct stat sb;
	FL_CHECK(stat(inner, &sb) == 0 && sb.st_size == 1);

	/* A relative path (folder ".") works too. */
	char cwd[600];
	FL_CHECK(getcwd(cwd, sizeof(cwd)) != NULL);
	FL_CHECK(chdir(dir) == 0);
	FL_CHECK(fl_st_write(w, "rel.safetensors") == FL_OK);
	struct fl_st *r = NULL;
	FL_CHECK(fl_st_read("rel.safetensors", &r) == FL_OK && fl_st_count(r) == 1);
	fl_st_free(r);
	FL_CHECK(chdir(cwd) == 0);
	fl_st_free(w);
}

/* Reads every tensor of a parsed file so that the sanitizers see any bad
 * pointer; returns a checksum. */
static unsigned touch_all(const struct fl_st *st)
{
	unsigned sum = 0;
	static float buf[4096];
	for (size_t i = 0; i < fl_st_count(st); i++) {
		const struct fl_st_tensor *t = fl_st_at(st, i);
		const unsigned char *d = t->data;
		for (size_t k = 0; k < t->nbytes; k++)
			sum += d[k];
		if (t->numel <= 4096)
			fl_st_tensor_to_f32(t, buf, t->numel);
	}
	return sum;
}

static void test_fuzz(void)
{
	size_t len;
	unsigned char *orig = (unsigned char *)fl_test_read_file(
		fl_test_data("safetensors/reference.safetensors"), &len);
	FL_CHECK(orig != NULL && len > 100);
	if (!orig)
		return;
	unsigned char *b = malloc(len);
	int ok = 0, bad = 0, weird = 0;
	for (size_t pos = 0; pos <= len; pos++) {
		struct fl_st *st = NULL;
		int rc = fl_st_parse(orig, pos, "fuzz", &st);
		if (pos < len)
			FL_CHECK_MSG(rc != FL_OK, "truncated at %zu accepted", pos);
		else
			FL_CHECK(rc == FL_OK);
		fl_st_free(st);
		for (int bit = 0; pos < len && bit < 8; bit++) {
			memcpy(b, orig, len);
			b[pos] ^= (unsigned char)(1u << bit);
			rc = fl_st_parse(b, len, "fuzz", &st);
			if (rc == FL_OK) {
				ok++;
				touch_all(st);
			} else if (rc == FL_EFORMAT || rc == FL_ERANGE) {
				bad++;
				FL_CHECK(st == NULL && !strchr(fl_error_msg(), '\n'));
			} else {
				weird++;
			}
			fl_st_free(st);
		}
	}
	/* Random multi-byte damage, from a fixed seed. */
	struct fl_rng rng;
	fl_rng_seed(&rng, 1234);
	static const unsigned char interesting[] = {'0', '9', '-', '"',  '[', ']',
						    '{', '}', ',', 0xff, 0};
	for (int it = 0; it < 3000; it++) {
		memcpy(b, orig, len);
		int k = 1 + (int)fl_rng_below(&rng, 4);
		for (int j = 0; j < k; j++) {
			size_t pos = fl_rng_below(&rng, (uint32_t)len);
			b[pos] = fl_rng_below(&rng, 2)
					 ? interesting[fl_rng_below(&rng, sizeof(interesting))]
					 : (unsigned char)fl_rng_next(&rng);
		}
		struct fl_st *st = NULL;
		int rc = fl_st_parse(b, len, "fuzz", &st);
		if (rc == FL_OK) {
			ok++;
			touch_all(st);
		} else if (rc == FL_EFORMAT || rc == FL_ERANGE) {
			bad++;
		} else {
			weird++;
		}
		fl_st_free(st);
	}
	printf("     fuzz: %d accepted, %d rejected, %d other codes\n", ok, bad, weird);
	FL_CHECK(weird == 0);
	FL_CHECK(ok > 0 && bad > 0);
	free(b);
	free(orig);
}

int main(void)
{
	FL_RUN(test_dtype_table);
	FL_RUN(test_half_conversions);
	FL_RUN(test_roundtrip);
	FL_RUN(test_reference_file);
	FL_RUN(test_write_failures);
	FL_RUN(test_fuzz);
	return fl_test_main_end();
}
