/* dataset.c - in-memory image data sets: IDX (MNIST, Fashion-MNIST) and
 * CIFAR-10 loaders and the data sets by name (normalisation, batch gather
 * and subsets are in dataset_ops.c).
 *
 * Files are untrusted: headers are checked against caps before anything is
 * allocated, raw files against their real size, gzip streams are read in
 * growing chunks so a lying header cannot make us allocate gigabytes for a
 * small file. No partitioning, augmentation or downloading happens here.
 */
#include "dataset.h"

#include "bytes.h"
#include "errors.h"
#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define IDX_MAGIC_IMAGES 0x00000803u
#define IDX_MAGIC_LABELS 0x00000801u
#define IDX_CHUNK_BYTES ((size_t)16 << 20)
#define CIFAR_SIDE 32
#define CIFAR_PIXELS (3 * CIFAR_SIDE * CIFAR_SIDE)
#define CIFAR_RECORD (1 + CIFAR_PIXELS)
#define CIFAR_TRAIN_FILES 5

/* ---- lifecycle -------------------------------------------------------- */

/* The shared part of fl_dataset_new() and fl_dataset_new_f32(). */
static int dataset_alloc(int n, int c, int h, int w, int classes, int f32, struct fl_dataset **out)
{
	*out = NULL;
	if (n < 1 || c < 1 || h < 1 || w < 1 || classes < 1 || classes > FL_DATASET_CLASSES_MAX ||
	    c > FL_DATASET_CHANNELS_MAX)
		return fl_error_set(FL_EINVAL, "dataset: bad shape n=%d c=%d h=%d w=%d classes=%d",
				    n, c, h, w, classes);
	size_t sb = (size_t)c * (size_t)h * (size_t)w, esize = f32 ? sizeof(float) : 1;
	if (n > FL_DATASET_SAMPLES_MAX ||
	    (uint64_t)h * (uint64_t)w * (uint64_t)c > FL_DATASET_SAMPLE_BYTES_MAX ||
	    sb * (size_t)n * esize > FL_DATASET_BYTES_MAX)
		return fl_error_set(FL_ERANGE,
				    "dataset: %d samples of %dx%dx%d exceed the size limit", n, c,
				    h, w);
	struct fl_dataset *ds = calloc(1, sizeof(*ds));
	if (!ds)
		return fl_error_set(FL_ENOMEM, "dataset: out of memory");
	ds->n = n;
	ds->ndim = 3;
	ds->c = c;
	ds->h = h;
	ds->w = w;
	ds->classes = classes;
	void *store = calloc(sb * (size_t)n, esize);
	if (f32)
		ds->values = store;
	else
		ds->pixels = store;
	ds->labels = calloc((size_t)n, sizeof(*ds->labels));
	if (!store || !ds->labels) {
		fl_dataset_free(ds);
		return fl_error_set(FL_ENOMEM, "dataset: out of memory for %zu sample bytes",
				    sb * (size_t)n * esize);
	}
	float mean[FL_DATASET_CHANNELS_MAX] = {0}, std[FL_DATASET_CHANNELS_MAX];
	for (int i = 0; i < FL_DATASET_CHANNELS_MAX; i++)
		std[i] = 1.0f;
	fl_dataset_set_norm(ds, mean, std);
	*out = ds;
	return FL_OK;
}

int fl_dataset_new(int n, int c, int h, int w, int classes, struct fl_dataset **out)
{
	return dataset_alloc(n, c, h, w, classes, 0, out);
}

int fl_dataset_new_f32(int n, int c, int h, int w, int classes, struct fl_dataset **out)
{
	return dataset_alloc(n, c, h, w, classes, 1, out);
}

void fl_dataset_free(struct fl_dataset *ds)
{
	if (!ds)
		return;
	free(ds->pixels);
	free(ds->values);
	free(ds->labels);
	free(ds);
}

/* ---- IDX files -------------------------------------------------------- */

struct idx_file {
	const char *path;
	gzFile gz;
	off_t size; /* on-disk bytes */
};

static int idx_open(struct idx_file *f, const char *path)
{
	f->path = path;
	f->gz = NULL;
	f->size = 0;
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return fl_error_set(errno == ENOENT ? FL_ENOTFOUND : FL_EIO, "%s: %s", path,
				    strerror(errno));
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return fl_error_set(FL_EIO, "%s: not a regular file", path);
	}
	f->size = st.st_size;
	f->gz = gzdopen(fd, "rb");
	if (!f->gz) {
		close(fd);
		return fl_error_set(FL_ENOMEM, "%s: cannot open a zlib stream", path);
	}
	gzbuffer(f->gz, 1u << 17);
	return FL_OK;
}

/* Reads up to len bytes; returns how many arrived (short at end of data or
 * on a stream error, which idx_stream_error() then describes). */
static size_t idx_read(struct idx_file *f, void *buf, size_t len)
{
	size_t got = 0;
	while (got < len) {
		size_t want = len - got;
		if (want > (1u << 30))
			want = 1u << 30;
		int r = gzread(f->gz, (char *)buf + got, (unsigned)want);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	return got;
}

/* The zlib error text after a short read, or "" when the data simply ended. */
static const char *idx_stream_error(struct idx_file *f)
{
	int errnum = Z_OK;
	const char *msg = gzerror(f->gz, &errnum);
	if (errnum == Z_OK || errnum == Z_STREAM_END)
		return "";
	/* zlib prefixes "<fd:N>: " when the stream came from gzdopen() */
	if (!strncmp(msg, "<fd:", 4) && strstr(msg, ": "))
		msg = strstr(msg, ": ") + 2;
	return msg;
}

/* Reads the payload of len bytes that the header announced (hdr bytes) into
 * a fresh buffer, growing it as data actually arrives. */
static int idx_read_payload(struct idx_file *f, size_t hdr, size_t len, const char *what,
			    uint8_t **out)
{
	*out = NULL;
	int direct = gzdirect(f->gz);
	if (direct && (uint64_t)f->size != hdr + len) {
		if ((uint64_t)f->size < hdr + len)
			return fl_error_set(FL_EFORMAT,
					    "%s: truncated: header announces %zu bytes of %s, "
					    "the file holds %lld",
					    f->path, len, what,
					    (long long)f->size - (long long)hdr);
		return fl_error_set(FL_EFORMAT, "%s: %lld bytes after the %zu bytes of %s", f->path,
				    (long long)f->size - (long long)(hdr + len), len, what);
	}
	size_t cap = direct || len < IDX_CHUNK_BYTES ? len : IDX_CHUNK_BYTES, got = 0;
	uint8_t *buf = malloc(cap);
	if (!buf)
		return fl_error_set(FL_ENOMEM, "%s: out of memory for %zu bytes", f->path, cap);
	for (;;) {
		size_t r = idx_read(f, buf + got, cap - got);
		got += r;
		if (got < cap || cap == len)
			break;
		size_t ncap = cap * 2 < len ? cap * 2 : len;
		uint8_t *nb = realloc(buf, ncap);
		if (!nb) {
			free(buf);
			return fl_error_set(FL_ENOMEM, "%s: out of memory for %zu bytes", f->path,
					    ncap);
		}
		buf = nb;
		cap = ncap;
	}
	if (got < len) {
		const char *zerr = idx_stream_error(f);
		free(buf);
		return fl_error_set(
			FL_EFORMAT,
			"%s: truncated: header announces %zu bytes of %s, found %zu%s%s", f->path,
			len, what, got, *zerr ? "; gzip: " : "", zerr);
	}
	uint8_t extra;
	if (idx_read(f, &extra, 1) == 1) {
		free(buf);
		return fl_error_set(FL_EFORMAT, "%s: data continues after the %zu bytes of %s",
				    f->path, len, what);
	}
	const char *zerr = idx_stream_error(f);
	if (*zerr) {
		free(buf);
		return fl_error_set(FL_EFORMAT,
				    "%s: truncated or corrupt gzip stream after the %zu "
				    "bytes of %s (%s)",
				    f->path, len, what, zerr);
	}
	*out = buf;
	return FL_OK;
}

/* Loads one IDX file of unsigned bytes with `ndims` dimensions: dims[] and
 * the data (product of dims bytes). */
static int idx_load(const char *path, uint32_t magic, int ndims, uint32_t *dims, uint8_t **data)
{
	const char *what = magic == IDX_MAGIC_IMAGES ? "image" : "label";
	struct idx_file f;
	int err = idx_open(&f, path);
	if (err)
		return err;
	uint8_t hdr[16];
	size_t hlen = 4 + 4 * (size_t)ndims;
	size_t got = idx_read(&f, hdr, hlen);
	if (got < 4) {
		const char *zerr = idx_stream_error(&f);
		if (*zerr)
			err = fl_error_set(FL_EFORMAT, "%s: corrupt gzip stream (%s)", path, zerr);
		else
			err = fl_error_set(FL_EFORMAT, "%s: too short for an IDX %s file", path,
					   what);
		goto done;
	}
	if (fl_be32_get(hdr) != magic) {
		err = fl_error_set(FL_EFORMAT,
				   "%s: not an IDX %s file (magic 0x%08x, expected 0x%08x)", path,
				   what, fl_be32_get(hdr), magic);
		goto done;
	}
	if (got < hlen) {
		err = fl_error_set(FL_EFORMAT, "%s: truncated IDX header (%zu of %zu bytes)", path,
				   got, hlen);
		goto done;
	}
	/* sample = product of dims[1..], capped at every step so nothing overflows */
	uint64_t sample = 1;
	for (int i = 0; i < ndims; i++) {
		dims[i] = fl_be32_get(hdr + 4 + 4 * i);
		if (dims[i] == 0) {
			err = fl_error_set(FL_EFORMAT, "%s: dimension %d is 0", path, i);
			goto done;
		}
		if (i > 0 && (sample *= dims[i]) > FL_DATASET_SAMPLE_BYTES_MAX) {
			err = fl_error_set(FL_ERANGE,
					   "%s: %ss of more than %u bytes exceed the size "
					   "limit",
					   path, what, FL_DATASET_SAMPLE_BYTES_MAX);
			goto done;
		}
	}
	uint64_t total = dims[0] * sample;
	if (dims[0] > FL_DATASET_SAMPLES_MAX || total > FL_DATASET_BYTES_MAX) {
		err = fl_error_set(FL_ERANGE, "%s: %u %ss of %llu bytes each exceed the size limit",
				   path, dims[0], what, (unsigned long long)sample);
		goto done;
	}
	err = idx_read_payload(&f, hlen, (size_t)total,
			       magic == IDX_MAGIC_IMAGES ? "pixel data" : "labels", data);
done:
	gzclose_r(f.gz);
	return err;
}

int fl_dataset_load_idx(const char *images_path, const char *labels_path, struct fl_dataset **out)
{
	*out = NULL;
	uint32_t idim[3] = {0}, ldim[1] = {0};
	uint8_t *pix = NULL, *lab = NULL;
	struct fl_dataset *ds = NULL;
	int err = idx_load(images_path, IDX_MAGIC_IMAGES, 3, idim, &pix);
	if (err)
		return err;
	err = idx_load(labels_path, IDX_MAGIC_LABELS, 1, ldim, &lab);
	if (err)
		goto fail;
	if (idim[0] != ldim[0]) {
		err = fl_error_set(FL_EFORMAT, "%s holds %u images but %s holds %u labels",
				   images_path, idim[0], labels_path, ldim[0]);
		goto fail;
	}
	int maxlab = 0;
	for (uint32_t i = 0; i < ldim[0]; i++)
		if (lab[i] > maxlab)
			maxlab = lab[i];
	err = fl_dataset_new((int)idim[0], 1, (int)idim[1], (int)idim[2],
			     maxlab + 1 > 10 ? maxlab + 1 : 10, &ds);
	if (err)
		goto fail;
	free(ds->pixels);
	ds->pixels = pix;
	for (uint32_t i = 0; i < ldim[0]; i++)
		ds->labels[i] = lab[i];
	free(lab);
	*out = ds;
	return FL_OK;
fail:
	free(pix);
	free(lab);
	return err;
}

/* ---- CIFAR-10 --------------------------------------------------------- */

/* buf = dir/name, or FL_EINVAL when it does not fit. */
static int path_join(char *buf, size_t cap, const char *dir, const char *name)
{
	int len = snprintf(buf, cap, "%s/%s", dir, name);
	if (len < 0 || (size_t)len >= cap)
		return fl_error_set(FL_EINVAL, "%s: path too long", dir);
	return FL_OK;
}

static int is_dir(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Reads the records of one batch file into ds from sample `first` on. */
static int cifar_read(const char *path, struct fl_dataset *ds, int first, int count)
{
	FILE *fp = fopen(path, "rb");
	if (!fp)
		return fl_error_set(FL_EIO, "%s: %s", path, strerror(errno));
	int err = FL_OK;
	uint8_t rec[CIFAR_RECORD];
	for (int i = 0; i < count; i++) {
		if (fread(rec, 1, CIFAR_RECORD, fp) != CIFAR_RECORD) {
			err = fl_error_set(FL_EFORMAT, "%s: truncated at record %d of %d", path, i,
					   count);
			break;
		}
		if (rec[0] > 9) {
			err = fl_error_set(FL_EFORMAT,
					   "%s: record %d has label %d (CIFAR-10 labels are 0..9)",
					   path, i, rec[0]);
			break;
		}
		ds->labels[first + i] = rec[0];
		memcpy(ds->pixels + (size_t)(first + i) * CIFAR_PIXELS, rec + 1, CIFAR_PIXELS);
	}
	fclose(fp);
	return err;
}

int fl_dataset_load_cifar10(const char *dir_or_file, int train, struct fl_dataset **out)
{
	*out = NULL;
	char paths[CIFAR_TRAIN_FILES][FL_PATH_MAX], dir[FL_PATH_MAX];
	int nfiles = 1, counts[CIFAR_TRAIN_FILES];
	if (strlen(dir_or_file) >= FL_PATH_MAX)
		return fl_error_set(FL_EINVAL, "%s: path too long", dir_or_file);
	if (is_dir(dir_or_file)) {
		if (path_join(dir, sizeof(dir), dir_or_file, "cifar-10-batches-bin"))
			return FL_EINVAL;
		if (!is_dir(dir))
			strcpy(dir, dir_or_file);
		nfiles = train ? CIFAR_TRAIN_FILES : 1;
		for (int i = 0; i < nfiles; i++) {
			char name[32] = "test_batch.bin";
			if (train)
				snprintf(name, sizeof(name), "data_batch_%d.bin", i + 1);
			if (path_join(paths[i], FL_PATH_MAX, dir, name))
				return FL_EINVAL;
		}
	} else {
		strcpy(paths[0], dir_or_file);
	}
	long long total = 0;
	for (int i = 0; i < nfiles; i++) {
		struct stat st;
		if (stat(paths[i], &st) != 0)
			return fl_error_set(errno == ENOENT ? FL_ENOTFOUND : FL_EIO,
					    "CIFAR-10: %s: %s", paths[i], strerror(errno));
		if (!S_ISREG(st.st_mode) || st.st_size == 0 || st.st_size % CIFAR_RECORD != 0)
			return fl_error_set(FL_EFORMAT,
					    "%s: %lld bytes is not a CIFAR-10 batch (a non-zero "
					    "multiple of %d-byte records)",
					    paths[i], (long long)st.st_size, CIFAR_RECORD);
		if (st.st_size / CIFAR_RECORD > FL_DATASET_SAMPLES_MAX)
			return fl_error_set(FL_ERANGE, "%s: too many records", paths[i]);
		counts[i] = (int)(st.st_size / CIFAR_RECORD);
		total += counts[i];
	}
	if (total > FL_DATASET_SAMPLES_MAX)
		return fl_error_set(FL_ERANGE, "CIFAR-10: %lld records exceed the limit", total);
	struct fl_dataset *ds;
	int err = fl_dataset_new((int)total, 3, CIFAR_SIDE, CIFAR_SIDE, 10, &ds);
	if (err)
		return err;
	for (int i = 0, first = 0; i < nfiles; first += counts[i], i++) {
		err = cifar_read(paths[i], ds, first, counts[i]);
		if (err) {
			fl_dataset_free(ds);
			return err;
		}
	}
	*out = ds;
	return FL_OK;
}

/* ---- named data sets -------------------------------------------------- */

/* buf = dir/base.gz if it exists, else dir/base if it exists. */
static int idx_find(char *buf, size_t cap, const char *dir, const char *base)
{
	struct stat st;
	char name[64];
	snprintf(name, sizeof(name), "%s.gz", base);
	if (path_join(buf, cap, dir, name))
		return FL_EINVAL;
	if (stat(buf, &st) == 0)
		return FL_OK;
	if (path_join(buf, cap, dir, base))
		return FL_EINVAL;
	if (stat(buf, &st) == 0)
		return FL_OK;
	return FL_ENOTFOUND;
}

static int load_idx_dir(const char *label, const char *path, int is_default, int train,
			struct fl_dataset **out)
{
	const char *prefix = train ? "train" : "t10k";
	char base[64], img[FL_PATH_MAX], lab[FL_PATH_MAX];
	snprintf(base, sizeof(base), "%s-images-idx3-ubyte", prefix);
	int err = idx_find(img, sizeof(img), path, base);
	if (!err) {
		snprintf(base, sizeof(base), "%s-labels-idx1-ubyte", prefix);
		err = idx_find(lab, sizeof(lab), path, base);
	}
	if (err == FL_EINVAL)
		return err;
	if (err) {
		if (is_default)
			return fl_error_set(FL_ENOTFOUND,
					    "%s not found: no %s[.gz] in %s; run "
					    "deploy/install-deps.sh (Debian package "
					    "dataset-fashion-mnist) or pass a data path",
					    label, base, path);
		return fl_error_set(FL_ENOTFOUND, "%s: no %s or %s.gz in %s", label, base, base,
				    path);
	}
	struct fl_dataset *ds;
	err = fl_dataset_load_idx(img, lab, &ds);
	if (err)
		return err;
	if (ds->classes != 10) {
		int maxlab = ds->classes - 1;
		fl_dataset_free(ds);
		return fl_error_set(FL_EFORMAT, "%s: label %d found; %s labels are 0..9", lab,
				    maxlab, label);
	}
	*out = ds;
	return FL_OK;
}

int fl_dataset_load(const char *name, const char *path, int train, struct fl_dataset **out)
{
	*out = NULL;
	if (!name || !*name || !strcmp(name, "fashion-mnist") || !strcmp(name, "fashion_mnist") ||
	    !strcmp(name, "fmnist")) {
		int is_default = !path || !*path;
		return load_idx_dir("Fashion-MNIST", is_default ? FL_DATASET_DEFAULT_DIR : path,
				    is_default, train, out);
	}
	int needs_path = 0;
	int err = FL_OK;
	if (!strcmp(name, "mnist")) {
		if (!path || !*path)
			needs_path = 1;
		else
			err = load_idx_dir("MNIST", path, 0, train, out);
	} else if (!strcmp(name, "cifar10") || !strcmp(name, "cifar-10")) {
		if (!path || !*path)
			needs_path = 1;
		else
			err = fl_dataset_load_cifar10(path, train, out);
	} else if (!strcmp(name, "safetensors")) {
		if (!path || !*path)
			needs_path = 1;
		else
			err = fl_dataset_load_safetensors(path, train, out);
	} else {
		return fl_error_set(FL_EINVAL,
				    "unknown data set '%s' (known: fashion-mnist, mnist, cifar10, "
				    "safetensors)",
				    name);
	}
	if (needs_path)
		return fl_error_set(FL_EINVAL, "data set '%s' needs a path to its files", name);
	return err;
}
