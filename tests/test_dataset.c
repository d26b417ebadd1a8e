/* test_dataset.c - IDX and CIFAR-10 loaders (fixtures written here, committed
 * tiny files, the real Fashion-MNIST when installed), validation errors,
 * normalisation statistics, gather and subsets. */
#include "dataset.h"
#include "bytes.h"
#include "errors.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

static const char *tmp;

/* ---- fixture writers -------------------------------------------------- */

static void write_bytes(const char *path, int gz, const uint8_t *a, size_t alen, const uint8_t *b,
			size_t blen)
{
	if (gz) {
		gzFile f = gzopen(path, "wb");
		FL_CHECK(f != NULL);
		if (alen)
			FL_CHECK(gzwrite(f, a, (unsigned)alen) == (int)alen);
		if (blen)
			FL_CHECK(gzwrite(f, b, (unsigned)blen) == (int)blen);
		FL_CHECK(gzclose(f) == Z_OK);
	} else {
		FILE *f = fopen(path, "wb");
		FL_CHECK(f != NULL);
		FL_CHECK(fwrite(a, 1, alen, f) == alen);
		if (blen)
			FL_CHECK(fwrite(b, 1, blen, f) == blen);
		fclose(f);
	}
}

/* An IDX file: magic, dims, then `len` data bytes (len may differ from the
 * product of dims to make broken files). */
static void write_idx(const char *path, int gz, uint32_t magic, const uint32_t *dims, int ndims,
		      const uint8_t *data, size_t len)
{
	uint8_t hdr[16];
	fl_be32_put(hdr, magic);
	for (int i = 0; i < ndims; i++)
		fl_be32_put(hdr + 4 + 4 * i, dims[i]);
	write_bytes(path, gz, hdr, 4 + 4 * (size_t)ndims, data, len);
}

static const char *tpath(const char *name)
{
	static char buf[4][600];
	static int next;
	char *p = buf[next++ % 4];
	snprintf(p, 600, "%s/%s", tmp, name);
	return p;
}

static uint8_t pix_pattern(int i, int r, int c)
{
	return (uint8_t)((i * 37 + r * 11 + c * 5) % 256);
}

/* n images of h x w with pix_pattern and labels i % 10 (raw or gz). */
static void write_mnist(const char *img, const char *lab, int gz, int n, int h, int w)
{
	uint8_t *pix = malloc((size_t)n * h * w), *labels = malloc((size_t)n);
	for (int i = 0; i < n; i++) {
		labels[i] = (uint8_t)(i % 10);
		for (int r = 0; r < h; r++)
			for (int c = 0; c < w; c++)
				pix[((size_t)i * h + r) * w + c] = pix_pattern(i, r, c);
	}
	uint32_t idim[3] = {(uint32_t)n, (uint32_t)h, (uint32_t)w}, ldim[1] = {(uint32_t)n};
	write_idx(img, gz, 0x803, idim, 3, pix, (size_t)n * h * w);
	write_idx(lab, gz, 0x801, ldim, 1, labels, (size_t)n);
	free(pix);
	free(labels);
}

static int check_pattern(const struct fl_dataset *ds, int n, int h, int w)
{
	int ok = ds->n == n && ds->c == 1 && ds->h == h && ds->w == w && ds->classes == 10;
	for (int i = 0; ok && i < n; i++) {
		ok = ds->labels[i] == i % 10;
		for (int r = 0; ok && r < h; r++)
			for (int c = 0; ok && c < w; c++)
				ok = ds->pixels[((size_t)i * h + r) * w + c] ==
				     pix_pattern(i, r, c);
	}
	return ok;
}

/* ---- IDX -------------------------------------------------------------- */

static void test_idx_raw_and_gz(void)
{
	for (int gz = 0; gz < 2; gz++) {
		const char *img = tpath(gz ? "img.gz" : "img"), *lab = tpath(gz ? "lab.gz" : "lab");
		write_mnist(img, lab, gz, 13, 5, 7);
		struct fl_dataset *ds = NULL;
		FL_CHECK(fl_dataset_load_idx(img, lab, &ds) == FL_OK);
		FL_CHECK(ds && check_pattern(ds, 13, 5, 7));
		FL_CHECK(ds && ds->mean[0] == 0.0f && ds->std[0] == 1.0f);
		fl_dataset_free(ds);
	}
	fl_dataset_free(NULL);
}

static void test_idx_errors(void)
{
	const char *img = tpath("e-img"), *lab = tpath("e-lab"), *bad = tpath("e-bad");
	write_mnist(img, lab, 0, 4, 3, 3);
	static struct fl_dataset dummy;
	struct fl_dataset *ds = &dummy; /* loaders reset it to NULL */
	uint8_t data[64] = {0};
	uint32_t dims[3] = {4, 3, 3};

	/* truncated raw image data (35 of 36 bytes) */
	write_idx(bad, 0, 0x803, dims, 3, data, 35);
	FL_CHECK(fl_test_fails_with(fl_dataset_load_idx(bad, lab, &ds), FL_EFORMAT, "truncated"));
	FL_CHECK(ds == NULL);
	FL_CHECK(strstr(fl_error_msg(), bad) && strstr(fl_error_msg(), "36"));
	/* truncated gzip: valid stream cut short */
	write_idx(bad, 1, 0x803, dims, 3, data, 20);
	FL_CHECK(fl_test_fails_with(fl_dataset_load_idx(bad, lab, &ds), FL_EFORMAT, "truncated"));
	const char *gzcut = tpath("e-cut.gz");
	write_idx(gzcut, 1, 0x803, dims, 3, data, 36);
	struct stat st;
	stat(gzcut, &st);
	FL_CHECK(truncate(gzcut, st.st_size - 6) == 0);
	FL_CHECK(fl_test_fails_with(fl_dataset_load_idx(gzcut, lab, &ds), FL_EFORMAT,
				    "truncated or corrupt"));
	FL_CHECK(strstr(fl_error_msg(), gzcut) != NULL);
	/* gzip cut in the middle of the compressed data, and corrupted */
	enum {
		N = 50,
		SIDE = 20
	};
	static uint8_t noise[N * SIDE * SIDE];
	for (size_t i = 0; i < sizeof(noise); i++)
		noise[i] = (uint8_t)((i * 2654435761u) >> 13);
	uint32_t ndims[3] = {N, SIDE, SIDE};
	write_idx(gzcut, 1, 0x803, ndims, 3, noise, sizeof(noise));
	stat(gzcut, &st);
	FL_CHECK(st.st_size > 1000);
	FL_CHECK(truncate(gzcut, st.st_size / 2) == 0);
	FL_CHECK(fl_test_fails_with(fl_dataset_load_idx(gzcut, lab, &ds), FL_EFORMAT, "truncated"));
	FL_CHECK(strstr(fl_error_msg(), "20000 bytes of pixel data") != NULL);
	write_idx(gzcut, 1, 0x803, ndims, 3, noise, sizeof(noise));
	FILE *fp = fopen(gzcut, "r+b");
	for (long off = 40; off < st.st_size - 40; off += 97) {
		fseek(fp, off, SEEK_SET);
		fputc(0x5A, fp);
	}
	fclose(fp);
	FL_CHECK(fl_test_fails_with(fl_dataset_load_idx(gzcut, lab, &ds), FL_EFORMAT,
				    "corrupt gzip"));
	/* header shorter than its dimensions */
	write_bytes(bad, 0, (const uint8_t *)"\0\0\x08\x03\0\0\0\x04", 8, NULL, 0);
	FL_CHECK(fl_test_fails_with(fl_dataset_load_idx(bad, lab, &ds), FL_EFORMAT, "header"));
	write_bytes(bad, 0, (const uint8_t *)"\0\0", 2, NULL, 0);
	FL_CHECK(fl_test_fails_with(fl_dataset_load_idx(bad, lab, &ds), FL_EFORMAT, "too short"));
	/* extra bytes after the data */
	write_idx(bad, 0, 0x803, dims, 3, data, 40);
	FL_CHECK(fl_test_fails_with(fl_dataset_load_idx(bad, lab, &ds), FL_EFORMAT, "after"));
	write_idx(bad, 1, 0x803, dims, 3, data, 40);
	FL_CHECK(fl_test_fails_with(fl_dataset_load_idx(bad, lab, &ds), FL_EFORMAT, "continues"));
	/* wrong magic: files swapped, and a 4-byte-element IDX */
	FL_CHECK(fl_test_fails_with(fl_dataset_load_idx(lab, img, &ds), FL_EFORMAT,
				    "magic 0x00000801"));
	write_idx(bad, 0, 0xC03, dims, 3, data, 36);
	FL_CHECK(fl_test_fails_with(fl_dataset_load_idx(bad, lab, &ds), FL_EFORMAT,
				    "not an IDX image"));
	/* counts differ */
	uint32_t ldim[1] = {5};
	write_idx(bad, 0, 0x801, ldim, 1, data, 5);
	FL_CHECK(fl_test_fails_with(fl_dataset_load_idx(img, bad, &ds), FL_EFORMAT, "5 labels"));
	/* zero dimension, sizes over the caps (checked before allocating) */
	uint32_t zero[3] = {4, 0, 3};
	write_idx(bad, 0, 0x803, zero, 3, data, 0);
	FL_CHECK(fl_test_fails_with(fl_dataset_load_idx(bad, lab, &ds), FL_EFORMAT, "is 0"));
	uint32_t huge[3] = {4000000000u, 28, 28};
	write_idx(bad, 1, 0x803, huge, 3, data, 36);
	FL_CHECK(fl_test_fails_with(fl_dataset_load_idx(bad, lab, &ds), FL_ERANGE, "limit"));
	uint32_t over[3] = {0xFFFFFFFFu, 0xFFFFu, 0xFFFFu}; /* product overflows 64 bits */
	write_idx(bad, 0, 0x803, over, 3, data, 36);
	FL_CHECK(fl_test_fails_with(fl_dataset_load_idx(bad, lab, &ds), FL_ERANGE, "limit"));
	uint32_t wide[3] = {1, 100000, 100000};
	write_idx(bad, 0, 0x803, wide, 3, data, 36);
	FL_CHECK(fl_test_fails_with(fl_dataset_load_idx(bad, lab, &ds), FL_ERANGE, bad));
	/* a gzip file whose header claims 7.8 GB: fails as truncated without
	 * allocating it all */
	uint32_t big[3] = {10000000, 28, 28};
	write_idx(bad, 1, 0x803, big, 3, data, 36);
	FL_CHECK(fl_test_fails_with(fl_dataset_load_idx(bad, lab, &ds), FL_EFORMAT, "found 36"));
	/* missing file */
	FL_CHECK(fl_test_fails_with(fl_dataset_load_idx(tpath("nope"), lab, &ds), FL_ENOTFOUND,
				    "nope"));
	FL_CHECK(fl_test_fails_with(fl_dataset_load_idx(tmp, lab, &ds), FL_EIO, "regular"));
	FL_CHECK(ds == NULL);
}

static void test_idx_classes(void)
{
	/* labels up to 14: generic loader gives 15 classes, "mnist" refuses */
	char dir[600];
	snprintf(dir, sizeof(dir), "%s/l15", tmp);
	mkdir(dir, 0700);
	char img[700], lab[700];
	snprintf(img, sizeof(img), "%s/train-images-idx3-ubyte", dir);
	snprintf(lab, sizeof(lab), "%s/train-labels-idx1-ubyte", dir);
	write_mnist(img, lab, 0, 3, 2, 2);
	uint8_t labels[3] = {0, 14, 3};
	uint32_t ldim[1] = {3};
	write_idx(lab, 0, 0x801, ldim, 1, labels, 3);
	struct fl_dataset *ds = NULL;
	FL_CHECK(fl_dataset_load_idx(img, lab, &ds) == FL_OK);
	FL_CHECK(ds && ds->classes == 15 && ds->labels[1] == 14);
	fl_dataset_free(ds);
	FL_CHECK(fl_test_fails_with(fl_dataset_load("mnist", dir, 1, &ds), FL_EFORMAT, "label 14"));
}

/* ---- named loads and committed fixtures ------------------------------- */

static void test_load_named(void)
{
	struct fl_dataset *ds = NULL;
	/* committed gz fixtures */
	FL_CHECK(fl_dataset_load("mnist", fl_test_data("dataset/mnist-tiny"), 1, &ds) == FL_OK);
	FL_CHECK(ds && check_pattern(ds, 20, 28, 28));
	fl_dataset_free(ds);
	FL_CHECK(fl_dataset_load("mnist", fl_test_data("dataset/mnist-tiny"), 0, &ds) == FL_OK);
	FL_CHECK(ds && check_pattern(ds, 10, 28, 28));
	fl_dataset_free(ds);
	/* unzipped names in a folder, also accepted as fashion-mnist with a path */
	char dir[600], img[700], lab[700];
	snprintf(dir, sizeof(dir), "%s/raw", tmp);
	mkdir(dir, 0700);
	snprintf(img, sizeof(img), "%s/t10k-images-idx3-ubyte", dir);
	snprintf(lab, sizeof(lab), "%s/t10k-labels-idx1-ubyte", dir);
	write_mnist(img, lab, 0, 7, 28, 28);
	FL_CHECK(fl_dataset_load("fashion-mnist", dir, 0, &ds) == FL_OK);
	FL_CHECK(ds && check_pattern(ds, 7, 28, 28));
	fl_dataset_free(ds);
	FL_CHECK(fl_test_fails_with(fl_dataset_load("mnist", dir, 1, &ds), FL_ENOTFOUND,
				    "train-images-idx3-ubyte"));
	FL_CHECK(fl_test_fails_with(fl_dataset_load("mnist", NULL, 1, &ds), FL_EINVAL,
				    "needs a path"));
	FL_CHECK(fl_test_fails_with(fl_dataset_load("cifar10", "", 1, &ds), FL_EINVAL,
				    "needs a path"));
	FL_CHECK(fl_test_fails_with(fl_dataset_load("imagenet", dir, 1, &ds), FL_EINVAL,
				    "imagenet"));
	FL_CHECK(ds == NULL);
}

static uint8_t cifar_pattern(int g, int ch, int y, int x)
{
	return (uint8_t)((g * 13 + ch * 50 + y * 3 + x) % 256);
}

static int check_cifar(const struct fl_dataset *ds, int i, int g, int label)
{
	if (ds->labels[i] != label)
		return 0;
	const uint8_t *p = ds->pixels + (size_t)i * 3072;
	for (int ch = 0; ch < 3; ch++)
		for (int y = 0; y < 32; y++)
			for (int x = 0; x < 32; x++)
				if (*p++ != cifar_pattern(g, ch, y, x))
					return 0;
	return 1;
}

static void test_cifar10(void)
{
	struct fl_dataset *ds = NULL;
	const char *dir = fl_test_data("dataset/cifar10-tiny");
	char file[700];
	FL_CHECK(fl_dataset_load("cifar10", dir, 1, &ds) == FL_OK);
	FL_CHECK(ds && ds->n == 5 && ds->c == 3 && ds->h == 32 && ds->w == 32 && ds->classes == 10);
	for (int g = 0; ds && g < 5; g++)
		FL_CHECK(check_cifar(ds, g, g, g % 10));
	fl_dataset_free(ds);
	snprintf(file, sizeof(file), "%s/test_batch.bin", dir);
	FL_CHECK(fl_dataset_load_cifar10(file, 1, &ds) == FL_OK);
	FL_CHECK(ds && ds->n == 3);
	for (int g = 0; ds && g < 3; g++)
		FL_CHECK(check_cifar(ds, g, g, (g + 7) % 10));
	fl_dataset_free(ds);

	/* a folder holding cifar-10-batches-bin/, as the tarball extracts */
	char sub[600];
	snprintf(sub, sizeof(sub), "%s/cifar/cifar-10-batches-bin", tmp);
	snprintf(file, sizeof(file), "%s/cifar", tmp);
	mkdir(file, 0700);
	mkdir(sub, 0700);
	uint8_t rec[3 * 3073];
	for (int r = 0; r < 3; r++) {
		rec[r * 3073] = (uint8_t)(9 - r);
		for (int k = 0; k < 3072; k++)
			rec[r * 3073 + 1 + k] = (uint8_t)(k * (r + 1));
	}
	snprintf(file, sizeof(file), "%s/test_batch.bin", sub);
	write_bytes(file, 0, rec, sizeof(rec), NULL, 0);
	snprintf(file, sizeof(file), "%s/cifar", tmp);
	FL_CHECK(fl_dataset_load_cifar10(file, 0, &ds) == FL_OK);
	FL_CHECK(ds && ds->n == 3 && ds->labels[0] == 9 && ds->labels[2] == 7 &&
		 ds->pixels[3072 + 5] == 10 && ds->pixels[2 * 3072 + 100] == (uint8_t)300);
	fl_dataset_free(ds);
	FL_CHECK(fl_test_fails_with(fl_dataset_load_cifar10(file, 1, &ds), FL_ENOTFOUND,
				    "data_batch_1.bin"));

	/* wrong size, bad label, empty */
	snprintf(file, sizeof(file), "%s/bad.bin", tmp);
	write_bytes(file, 0, rec, sizeof(rec) - 1, NULL, 0);
	FL_CHECK(fl_test_fails_with(fl_dataset_load_cifar10(file, 1, &ds), FL_EFORMAT,
				    "multiple of 3073"));
	rec[3073] = 10;
	write_bytes(file, 0, rec, sizeof(rec), NULL, 0);
	FL_CHECK(fl_test_fails_with(fl_dataset_load_cifar10(file, 1, &ds), FL_EFORMAT,
				    "record 1 has label 10"));
	write_bytes(file, 0, rec, 0, NULL, 0);
	FL_CHECK(fl_test_fails_with(fl_dataset_load_cifar10(file, 1, &ds), FL_EFORMAT, "0 bytes"));
	FL_CHECK(ds == NULL);
}

/* ---- normalisation, gather, subset ------------------------------------ */

static void test_norm_gather_subset(void)
{
	struct fl_dataset *ds = NULL;
	FL_CHECK(fl_dataset_new(4, 3, 2, 2, 10, &ds) == FL_OK);
	if (!ds)
		return;
	/* channel ch of sample i: all pixels = 10*i + 100*ch */
	for (int i = 0; i < 4; i++)
		for (int ch = 0; ch < 3; ch++)
			for (int k = 0; k < 4; k++)
				ds->pixels[i * 12 + ch * 4 + k] = (uint8_t)(10 * i + 100 * ch);
	for (int i = 0; i < 4; i++)
		ds->labels[i] = (uint8_t)(3 * i);
	FL_CHECK(fl_dataset_compute_norm(ds) == FL_OK);
	for (int ch = 0; ch < 3; ch++) {
		double m = (15.0 + 100 * ch) / 255.0,
		       sd = sqrt(125.0) / 255.0; /* values 0,10,20,30 */
		FL_CHECK_NEAR(ds->mean[ch], m, 1e-6, 0);
		FL_CHECK_NEAR(ds->std[ch], sd, 1e-6, 0);
	}
	int idx[3] = {3, 0, 3}, y[3];
	float x[36];
	fl_dataset_gather(ds, idx, 3, x, y);
	FL_CHECK(y[0] == 9 && y[1] == 0 && y[2] == 9);
	for (int i = 0; i < 3; i++)
		for (int ch = 0; ch < 3; ch++)
			for (int k = 0; k < 4; k++) {
				float want = ((10.0f * idx[i] + 100 * ch) / 255.0f - ds->mean[ch]) /
					     ds->std[ch];
				FL_CHECK_NEAR(x[i * 12 + ch * 4 + k], want, 1e-5, 1e-6);
			}
	/* idx NULL = first samples; y may be NULL */
	fl_dataset_gather(ds, NULL, 1, x, NULL);
	FL_CHECK_NEAR(x[0], -15.0 / sqrt(125.0), 1e-5, 0);

	/* test set uses the training statistics */
	struct fl_dataset *other = NULL, *gray = NULL;
	FL_CHECK(fl_dataset_new(2, 3, 2, 2, 10, &other) == FL_OK);
	FL_CHECK(fl_dataset_copy_norm(other, ds) == FL_OK);
	FL_CHECK(other && other->mean[2] == ds->mean[2] && other->std[1] == ds->std[1]);
	fl_dataset_gather(other, NULL, 1, x, NULL);
	FL_CHECK_NEAR(x[4], (0.0 - ds->mean[1]) / ds->std[1], 1e-5, 0);
	FL_CHECK(fl_dataset_new(2, 1, 2, 2, 10, &gray) == FL_OK);
	FL_CHECK(fl_test_fails_with(fl_dataset_copy_norm(gray, ds), FL_ESHAPE, "channels"));
	float bm[3] = {0, 0, 0}, bs[3] = {1, 0, 1};
	FL_CHECK(fl_test_fails_with(fl_dataset_set_norm(other, bm, bs), FL_EINVAL, "channel 1"));
	/* constant data: std falls back to 1 */
	FL_CHECK(fl_dataset_compute_norm(gray) == FL_OK);
	FL_CHECK(gray && gray->mean[0] == 0.0f && gray->std[0] == 1.0f);

	/* subsets copy samples, labels and statistics */
	struct fl_dataset *sub = NULL;
	int pick[2] = {2, 1};
	FL_CHECK(fl_dataset_subset(ds, pick, 2, &sub) == FL_OK);
	FL_CHECK(sub && sub->n == 2 && sub->labels[0] == 6 && sub->pixels[0] == 20 &&
		 sub->pixels[12 + 4] == 110 && sub->std[2] == ds->std[2]);
	fl_dataset_free(sub);
	FL_CHECK(fl_dataset_subset(ds, NULL, 3, &sub) == FL_OK);
	FL_CHECK(sub && sub->n == 3 && sub->labels[2] == 6 && sub->pixels[12] == 10);
	fl_dataset_free(sub);
	int badidx[1] = {4};
	FL_CHECK(fl_test_fails_with(fl_dataset_subset(ds, badidx, 1, &sub), FL_EINVAL,
				    "out of range"));
	FL_CHECK(fl_test_fails_with(fl_dataset_subset(ds, NULL, 5, &sub), FL_EINVAL, "subset"));
	FL_CHECK(sub == NULL);

	int counts[10];
	fl_dataset_label_counts(ds, NULL, 4, counts);
	FL_CHECK(counts[0] == 1 && counts[3] == 1 && counts[9] == 1 && counts[1] == 0);
	fl_dataset_label_counts(ds, idx, 3, counts);
	FL_CHECK(counts[9] == 2 && counts[0] == 1 && counts[3] == 0);

	FL_CHECK(fl_test_fails_with(fl_dataset_new(0, 1, 1, 1, 10, &sub), FL_EINVAL, "n=0"));
	FL_CHECK(fl_test_fails_with(fl_dataset_new(1, 5, 1, 1, 10, &sub), FL_EINVAL, "c=5"));
	FL_CHECK(fl_test_fails_with(fl_dataset_new(1000, 1, 65536, 65536, 10, &sub), FL_ERANGE,
				    "limit"));
	fl_dataset_free(ds);
	fl_dataset_free(other);
	fl_dataset_free(gray);
}

/* ---- the real Fashion-MNIST ------------------------------------------- */

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void test_fashion_mnist(void)
{
	struct fl_dataset *train = NULL, *test = NULL;
	double t0 = now();
	int err = fl_dataset_load("fashion-mnist", NULL, 1, &train);
	if (err == FL_ENOTFOUND) {
		fl_test_skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)");
		return;
	}
	double t1 = now();
	FL_CHECK(err == FL_OK);
	FL_CHECK(fl_dataset_load(NULL, NULL, 0, &test) == FL_OK);
	if (!train || !test)
		goto done;
	printf("  load train set: %.2f s\n", t1 - t0);
	FL_CHECK(train->n == 60000 && test->n == 10000);
	FL_CHECK(train->c == 1 && train->h == 28 && train->w == 28 && train->classes == 10);
	FL_CHECK(test->c == 1 && test->h == 28 && test->w == 28 && test->classes == 10);
	int counts[10];
	fl_dataset_label_counts(train, NULL, train->n, counts);
	for (int k = 0; k < 10; k++)
		FL_CHECK(counts[k] == 6000);
	fl_dataset_label_counts(test, NULL, test->n, counts);
	for (int k = 0; k < 10; k++)
		FL_CHECK(counts[k] == 1000);
	/* the first training sample is an ankle boot (label 9) */
	FL_CHECK(train->labels[0] == 9 && test->labels[0] == 9);

	FL_CHECK(fl_dataset_compute_norm(train) == FL_OK);
	FL_CHECK_NEAR(train->mean[0], 0.2860, 0, 5e-4);
	FL_CHECK_NEAR(train->std[0], 0.3530, 0, 5e-4);
	printf("  train mean %.6f std %.6f\n", train->mean[0], train->std[0]);
	FL_CHECK(fl_dataset_copy_norm(test, train) == FL_OK);

	/* gather the whole training set in batches of 64: mean 0, variance 1 */
	enum {
		B = 64
	};
	static float x[B * 784];
	int idx[B], y[B];
	double s = 0, ss = 0;
	double g0 = now();
	for (int start = 0; start < train->n; start += B) {
		int cnt = train->n - start < B ? train->n - start : B;
		for (int i = 0; i < cnt; i++)
			idx[i] = start + i;
		fl_dataset_gather(train, idx, cnt, x, y);
		for (int i = 0; i < cnt * 784; i++) {
			s += x[i];
			ss += (double)x[i] * x[i];
		}
	}
	double g1 = now();
	double cnt = 60000.0 * 784;
	FL_CHECK_NEAR(s / cnt, 0.0, 0, 1e-5);
	FL_CHECK_NEAR(ss / cnt - (s / cnt) * (s / cnt), 1.0, 0, 1e-4);
	/* random batches: time the gather alone */
	int ridx[B];
	for (int i = 0; i < B; i++)
		ridx[i] = (i * 7919) % train->n;
	double r0 = now();
	for (int rep = 0; rep < 2000; rep++)
		fl_dataset_gather(train, ridx, B, x, y);
	double r1 = now();
	printf("  gather+sum of 60000 samples: %.3f s; gather of 2000 x 64 random samples: "
	       "%.3f s (%.0f MB/s of floats)\n",
	       g1 - g0, r1 - r0, 2000.0 * B * 784 * 4 / (r1 - r0) / 1e6);
	for (int i = 0; i < 784; i++)
		FL_CHECK_NEAR(
			x[(B - 1) * 784 + i],
			(train->pixels[(size_t)ridx[B - 1] * 784 + i] / 255.0 - train->mean[0]) /
				train->std[0],
			1e-5, 1e-6);
done:
	fl_dataset_free(train);
	fl_dataset_free(test);
}

int main(void)
{
	tmp = fl_test_tmpdir("dataset");
	FL_RUN(test_idx_raw_and_gz);
	FL_RUN(test_idx_errors);
	FL_RUN(test_idx_classes);
	FL_RUN(test_load_named);
	FL_RUN(test_cifar10);
	FL_RUN(test_norm_gather_subset);
	FL_RUN(test_fashion_mnist);
	return fl_test_main_end();
}
