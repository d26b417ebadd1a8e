/* gen_seeds.c - writes the seed corpora of the file-format fuzz targets
 * (safetensors, dataset_st, idx, checkpoint, keys, allowlist, peft_config,
 * peft_regex) into <root>/<target>/: a few valid inputs built with the
 * project's own writers and a few hand-made edge cases. Run by hand when a
 * format changes:
 *   fuzz_gen_seeds tests/fuzz/corpus
 * The files are committed; this program is not a test. Regression inputs
 * found by fuzzing are added next to these by hand (regress-*).
 */
#include "checkpoint.h"
#include "errors.h"
#include "identity.h"
#include "model.h"
#include "safetensors.h"
#include "server_optim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

static const char *root;

static void fail(const char *what)
{
	fprintf(stderr, "gen_seeds: %s: %s\n", what, fl_error_msg());
	exit(1);
}

static const char *path_of(const char *target, const char *name)
{
	static char p[1024];
	snprintf(p, sizeof(p), "%s/%s", root, target);
	mkdir(p, 0755);
	snprintf(p, sizeof(p), "%s/%s/%s", root, target, name);
	return p;
}

static void put(const char *target, const char *name, const void *data, size_t n)
{
	const char *p = path_of(target, name);
	FILE *f = fopen(p, "wb");
	if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) {
		fprintf(stderr, "%s: write failed\n", p);
		exit(1);
	}
}

static void put_str(const char *target, const char *name, const char *s)
{
	put(target, name, s, strlen(s));
}

/* Reads a file written by a project writer, with a prefix byte when
 * prefix >= 0, into <target>/<name>. */
static void copy_file(const char *from, const char *target, const char *name, int prefix)
{
	static uint8_t buf[1 << 16];
	size_t n = 0;
	if (prefix >= 0)
		buf[n++] = (uint8_t)prefix;
	FILE *f = fopen(from, "rb");
	if (!f)
		fail(from);
	n += fread(buf + n, 1, sizeof(buf) - n, f);
	fclose(f);
	put(target, name, buf, n);
}

/* A safetensors header + data by hand: 8-byte length, JSON, bytes. */
static void put_st_raw(const char *target, const char *name, const char *json, const void *data,
		       size_t n)
{
	uint8_t buf[4096];
	uint64_t hl = strlen(json);
	memcpy(buf, &hl, 8);
	memcpy(buf + 8, json, hl);
	memcpy(buf + 8 + hl, data, n);
	put(target, name, buf, 8 + hl + n);
}

static void gen_safetensors(const char *tmp)
{
	struct fl_st *st = NULL;
	float v[6] = {1, -2, 3.5f, 0, 1e-3f, 7};
	int64_t s23[2] = {2, 3}, s6[1] = {6}, s0[1] = {0};
	uint16_t h[6] = {0x3c00, 0xc000, 0x7bff, 0, 1, 0x8000};
	if (fl_st_new(&st) || fl_st_add_f32(st, "w", s23, 2, v) ||
	    fl_st_add(st, "h", FL_DTYPE_F16, s6, 1, h) ||
	    fl_st_add(st, "b", FL_DTYPE_BF16, s6, 1, h) ||
	    fl_st_add(st, "e", FL_DTYPE_F32, s0, 1, NULL) ||
	    fl_st_set_metadata(st, "format", "pt") || fl_st_write(st, tmp))
		fail("safetensors");
	fl_st_free(st);
	copy_file(tmp, "safetensors", "valid-mixed", -1);
	int64_t ids[3] = {1, 2, 3};
	int64_t s3[1] = {3};
	if (fl_st_new(&st) || fl_st_add(st, "i", FL_DTYPE_I64, s3, 1, ids) || fl_st_write(st, tmp))
		fail("safetensors");
	fl_st_free(st);
	copy_file(tmp, "safetensors", "valid-i64", -1);
	put_st_raw("safetensors", "empty-header", "{}", NULL, 0);
	put_st_raw("safetensors", "overlap",
		   "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
		   "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
		   v, 8);
	put_st_raw("safetensors", "huge-shape",
		   "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
		   "\"data_offsets\":[0,4]}}",
		   v, 4);
	put_st_raw("safetensors", "bad-dtype",
		   "{\"a\":{\"dtype\":\"F8\",\"shape\":[1],\"data_offsets\":[0,1]}}", v, 1);
	uint8_t big[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f};
	put("safetensors", "header-length-huge", big, 8);
}

static void gen_dataset_st(const char *tmp)
{
	uint8_t px[16];
	int64_t y[4] = {0, 1, 2, 1};
	int32_t tok[8] = {1, 5, 9, 2, 0, 3, 3, 7};
	float f[8] = {0.5f, -1, 2, 3, 4, 5, 6, 7};
	int64_t sx[4] = {4, 1, 2, 2}, sy[1] = {4}, st2[2] = {4, 2};
	for (int i = 0; i < 16; i++)
		px[i] = (uint8_t)(i * 16);
	struct fl_st *st = NULL;
	if (fl_st_new(&st) || fl_st_add(st, "x", FL_DTYPE_U8, sx, 4, px) ||
	    fl_st_add(st, "y", FL_DTYPE_I64, sy, 1, y) || fl_st_write(st, tmp))
		fail("dataset_st");
	fl_st_free(st);
	copy_file(tmp, "dataset_st", "valid-u8-images", -1);
	if (fl_st_new(&st) || fl_st_add(st, "x", FL_DTYPE_I32, st2, 2, tok) ||
	    fl_st_add(st, "y", FL_DTYPE_I64, sy, 1, y) || fl_st_write(st, tmp))
		fail("dataset_st");
	fl_st_free(st);
	copy_file(tmp, "dataset_st", "valid-i32-tokens", -1);
	if (fl_st_new(&st) || fl_st_add(st, "x", FL_DTYPE_F32, st2, 2, f) ||
	    fl_st_add(st, "y", FL_DTYPE_I64, sy, 1, y) || fl_st_write(st, tmp))
		fail("dataset_st");
	fl_st_free(st);
	copy_file(tmp, "dataset_st", "valid-f32-flat", -1);
	y[2] = -1;
	if (fl_st_new(&st) || fl_st_add(st, "x", FL_DTYPE_U8, sx, 4, px) ||
	    fl_st_add(st, "y", FL_DTYPE_I64, sy, 1, y) || fl_st_write(st, tmp))
		fail("dataset_st");
	fl_st_free(st);
	copy_file(tmp, "dataset_st", "negative-label", -1);
}

/* IDX target input: 2-byte little-endian images length, images, labels. */
static void put_idx(const char *name, const uint8_t *img, size_t ni, const uint8_t *lab, size_t nl)
{
	uint8_t buf[4096];
	buf[0] = (uint8_t)(ni & 0xff);
	buf[1] = (uint8_t)(ni >> 8);
	memcpy(buf + 2, img, ni);
	memcpy(buf + 2 + ni, lab, nl);
	put("idx", name, buf, 2 + ni + nl);
}

static size_t gzip_bytes(const char *tmp, const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
	gzFile g = gzopen(tmp, "wb9");
	if (!g || gzwrite(g, in, (unsigned)n) != (int)n || gzclose(g) != Z_OK)
		fail("gzip");
	FILE *f = fopen(tmp, "rb");
	size_t k = f ? fread(out, 1, cap, f) : 0;
	if (f)
		fclose(f);
	return k;
}

static void gen_idx(const char *tmp)
{
	uint8_t img[16 + 12] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2};
	uint8_t lab[8 + 3] = {0, 0, 8, 1, 0, 0, 0, 3, 0, 9, 4};
	for (int i = 0; i < 12; i++)
		img[16 + i] = (uint8_t)(i * 20);
	put_idx("valid-raw", img, sizeof(img), lab, sizeof(lab));
	uint8_t gi[512], gl[512];
	size_t ngi = gzip_bytes(tmp, img, sizeof(img), gi, sizeof(gi));
	size_t ngl = gzip_bytes(tmp, lab, sizeof(lab), gl, sizeof(gl));
	put_idx("valid-gzip", gi, ngi, gl, ngl);
	put_idx("truncated-images", img, sizeof(img) - 1, lab, sizeof(lab));
	lab[7] = 4;
	put_idx("count-mismatch", img, sizeof(img), lab, sizeof(lab));
	uint8_t huge[16] = {0, 0, 8, 3, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0x7f, 0xff, 0, 0, 0x7f, 0xff};
	put_idx("huge-header", huge, sizeof(huge), lab, 8);
	uint8_t ghuge[512];
	size_t nh = gzip_bytes(tmp, huge, sizeof(huge), ghuge, sizeof(ghuge));
	put_idx("huge-header-gzip", ghuge, nh, lab, 8);
}

static void gen_checkpoint(const char *tmp)
{
	struct fl_model *m = NULL, *other = NULL;
	struct srv_optim o;
	struct srv_optim_config c;
	if (fl_model_new("mlp", 1, 2, 2, 3, NULL, 1, 1, &m) ||
	    fl_model_new("mlp", 1, 2, 2, 4, NULL, 1, 1, &other))
		fail("model");
	size_t n = fl_model_count_floats(m, FL_TENSOR_GLOBAL);
	srv_optim_config_default(&c, SRV_OPTIM_FEDADAM);
	if (srv_optim_init(&o, &c, n))
		fail("optim");
	float *y = calloc(n, sizeof(float));
	if (!y || srv_optim_step(&o, fl_model_params(m), y, n))
		fail("step");
	struct srv_checkpoint_meta meta = {.round = 3, .bytes_up = 10, .bytes_down = 20, .seed = 1};
	if (srv_checkpoint_save(tmp, m, &o, &meta))
		fail("checkpoint");
	copy_file(tmp, "checkpoint", "valid-fedadam", -1);
	if (srv_checkpoint_save(tmp, m, NULL, &meta))
		fail("checkpoint");
	copy_file(tmp, "checkpoint", "no-optimiser", -1);
	srv_optim_free(&o);
	srv_optim_config_default(&c, SRV_OPTIM_FEDADAM);
	size_t n4 = fl_model_count_floats(other, FL_TENSOR_GLOBAL);
	if (srv_optim_init(&o, &c, n4) || srv_checkpoint_save(tmp, other, &o, &meta))
		fail("checkpoint");
	copy_file(tmp, "checkpoint", "other-model", -1);
	srv_optim_free(&o);
	free(y);
	fl_model_free(m);
	fl_model_free(other);
}

static void gen_keys(const char *tmp)
{
	uint8_t seed[32];
	memset(seed, 7, sizeof(seed));
	struct fl_identity *id = NULL;
	char pub[FL_PUBKEY_STRING_BYTES], buf[256];
	if (fl_identity_from_seed(seed, &id) || fl_identity_save(id, tmp))
		fail("identity");
	fl_identity_public_string(id, pub);
	copy_file(tmp, "keys", "secret-valid", 1);
	snprintf(buf, sizeof(buf), "%c%s", 0, pub);
	put("keys", "pub-valid", buf, 1 + strlen(buf + 1));
	snprintf(buf, sizeof(buf), "%cfl1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 0);
	put("keys", "pub-zero-point", buf, 1 + strlen(buf + 1));
	snprintf(buf, sizeof(buf), "%cfl1:%s", 0, "not-base64!");
	put("keys", "pub-bad", buf, 1 + strlen(buf + 1));
	snprintf(buf, sizeof(buf), "%c# the server\n\n%s\n", 2, pub);
	put_str("keys", "pubfile-comment", buf);
	snprintf(buf, sizeof(buf), "%cfedloha-secret-key-v1 AAAA\n", 1);
	put_str("keys", "secret-short", buf);
	fl_identity_free(id);
}

static void gen_allowlist(void)
{
	char buf[512], pub[2][FL_PUBKEY_STRING_BYTES];
	for (int i = 0; i < 2; i++) {
		uint8_t seed[32];
		struct fl_identity *id = NULL;
		memset(seed, 10 + i, sizeof(seed));
		if (fl_identity_from_seed(seed, &id))
			fail("identity");
		fl_identity_public_string(id, pub[i]);
		fl_identity_free(id);
	}
	snprintf(buf, sizeof(buf), "# clients\n%s alice-laptop\n\n%s\n", pub[0], pub[1]);
	put_str("allowlist", "valid", buf);
	snprintf(buf, sizeof(buf), "%s a\n%s b\n", pub[0], pub[0]);
	put_str("allowlist", "duplicate", buf);
	snprintf(buf, sizeof(buf), "%s\r\nfl1:short\n", pub[1]);
	put_str("allowlist", "bad-line", buf);
	put_str("allowlist", "comments-only", "# nothing\n   \n#\n");
}

static void gen_peft(void)
{
	put_str("peft_config", "list",
		"{\"peft_type\": \"LOHA\", \"r\": 4, \"alpha\": 8, "
		"\"target_modules\": [\"fc1\", \"q_proj\"], \"layers_to_transform\": [0, 12], "
		"\"layers_pattern\": \"layers\"}");
	put_str("peft_config", "regex",
		"{\"peft_type\": \"LOHA\", \"r\": 8, \"target_modules\": "
		"\"model\\\\.layers\\\\.\\\\d+\\\\.self_attn\\\\.(q|v)_proj\", "
		"\"exclude_modules\": \".*\\\\.7\\\\..*\"}");
	put_str("peft_config", "all-linear",
		"{\"peft_type\": \"LOHA\", \"r\": 2, \"target_modules\": \"all-linear\", "
		"\"rank_pattern\": {\"fc1\": 3}, \"alpha_pattern\": {\"^head$\": 1.5}, "
		"\"modules_to_save\": [\"head\"], \"use_effective_conv2d\": true}");
	put_str("peft_config", "null-targets",
		"{\"peft_type\": \"LOHA\", \"r\": 1, \"target_modules\": null}");
	put_str("peft_config", "bad-regex",
		"{\"peft_type\": \"LOHA\", \"r\": 1, \"target_modules\": \"(?=x)x\"}");
	put_str("peft_regex", "classes", "[\\w.-]+\\.\\d{1,3}\\.(?:q|k)_proj\nmodel.12.q_proj");
	put_str("peft_regex", "lazy", "a.*?b|c+?\naxxb");
	put_str("peft_regex", "bracket", "[]a-]\\s[^\\d]\n] x");
	put_str("peft_regex", "plain", "fc1\nfc1");
	put_str("peft_regex", "bad-escape", "\\bfc\nfc");
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: fuzz_gen_seeds CORPUS-ROOT\n");
		return 2;
	}
	root = argv[1];
	char tmp[] = "/tmp/fl-gen-seeds-XXXXXX";
	int fd = mkstemp(tmp);
	if (fd < 0)
		return 1;
	gen_safetensors(tmp);
	gen_dataset_st(tmp);
	gen_idx(tmp);
	gen_checkpoint(tmp);
	gen_keys(tmp);
	gen_allowlist();
	gen_peft();
	remove(tmp);
	return 0;
}
