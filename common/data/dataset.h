/* dataset.h - classification data sets held in memory, as uint8 pixels or
 * as float32 values: loaders for MNIST / Fashion-MNIST (IDX files, gzip or
 * raw), CIFAR-10 (binary batches) and safetensors data folders (docs/DATA.md),
 * per-channel normalisation statistics, and the batch gather that turns
 * samples into normalised float inputs (pixel/255 or the float value, then
 * the training split's per-channel mean and std, as torchvision's Normalize).
 *
 * Layout: sample i occupies pixels[i * c*h*w ...] (uint8 storage) or
 * values[i * c*h*w ...] (float storage; pixels is then NULL), channel-major
 * (NCHW per sample, PyTorch order); labels[i] in [0, classes). A gathered
 * input is (pixel / 255 - mean[ch]) / std[ch], or (value - mean[ch]) /
 * std[ch].
 *
 * Sample shape: ndim 3 is an image (c, h, w); ndim 1 is a flat feature
 * vector of F values, stored as c = 1, h = 1, w = F (one normalisation
 * channel for all features). IDX and CIFAR-10 sets are images.
 *
 * Loaders validate every header and size against the actual file before they
 * trust it, cap sizes before allocating, and report one clear line through
 * fl_error_set(). This module does not partition data (see partition.h),
 * does not augment and does not download anything.
 */
#ifndef FL_DATASET_H
#define FL_DATASET_H

#include <stddef.h>
#include <stdint.h>

#define FL_DATASET_CHANNELS_MAX 4
#define FL_DATASET_CLASSES_MAX 65536
#define FL_DATASET_SAMPLES_MAX 100000000       /* samples in one data set */
#define FL_DATASET_SAMPLE_BYTES_MAX (1u << 24) /* c*h*w of one sample */
#define FL_DATASET_BYTES_MAX ((size_t)8 << 30) /* pixel or value bytes of one data set */
#define FL_DATASET_TOKEN_MAX (1 << 24)         /* token ids are below this (exact as floats) */
#ifndef FL_DATASET_DEFAULT_DIR                 /* overridable at build time for packagers */
#define FL_DATASET_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"
#endif

struct fl_dataset {
	int n;           /* samples */
	int ndim;        /* 3: image (c, h, w); 1: flat (F), stored as 1 x 1 x F */
	int tokens;      /* 1: token ids (flat, ndim 1, stored as F32 values; never normalised) */
	int c, h, w;     /* channels, height, width of one sample */
	int classes;     /* labels are in [0, classes) */
	uint8_t *pixels; /* n * c*h*w bytes, owned; NULL for float storage */
	float *values;   /* n * c*h*w floats, owned; NULL for uint8 storage */
	int32_t *labels; /* n labels, owned */
	/* Normalisation; mean 0, std 1 after loading (plain pixel/255 or value). Change
	 * them only through fl_dataset_set_norm() and friends, which keep lut in
	 * step. */
	float mean[FL_DATASET_CHANNELS_MAX];
	float std[FL_DATASET_CHANNELS_MAX];
	float lut[FL_DATASET_CHANNELS_MAX][256]; /* lut[ch][p] = (p/255 - mean) / std */
};

/* A zero-filled data set of n image samples (c x h x w, ndim 3) in uint8
 * storage with the given number of classes; for synthetic data and tests.
 * FL_EINVAL / FL_ERANGE / FL_ENOMEM. */
int fl_dataset_new(int n, int c, int h, int w, int classes, struct fl_dataset **out);
/* The same in float storage (values set, pixels NULL). */
int fl_dataset_new_f32(int n, int c, int h, int w, int classes, struct fl_dataset **out);
/* Frees everything; NULL is a no-op. */
void fl_dataset_free(struct fl_dataset *ds);

/* MNIST-style IDX files: images magic 0x00000803 (n, rows, cols), labels
 * magic 0x00000801 (n); each file gzip-compressed or raw (detected by its
 * first bytes). classes = max(max label + 1, 10). The counts must agree and
 * each file must hold exactly the bytes its header announces. */
int fl_dataset_load_idx(const char *images_path, const char *labels_path, struct fl_dataset **out);

/* CIFAR-10 binary version: records of 1 label byte + 3072 pixel bytes
 * (3 x 32 x 32, channel-major), labels 0..9. dir_or_file is either one batch
 * file (loaded whatever `train` says) or a folder holding data_batch_1..5.bin
 * (train) / test_batch.bin (test), directly or in cifar-10-batches-bin/. */
int fl_dataset_load_cifar10(const char *dir_or_file, int train, struct fl_dataset **out);

/* A safetensors data folder: dir/train.safetensors (train) or
 * dir/test.safetensors, holding x (N, C, H, W) or (N, F) as U8 (scaled by
 * 1/255, uint8 storage) or F32 (float storage, finite), or token ids x
 * (N, L) as I32 or I64 in [0, FL_DATASET_TOKEN_MAX) (held exactly in float
 * storage, tokens set, never normalised), and y (N,) as I32 or I64 labels
 * in [0, FL_DATASET_CLASSES_MAX); classes = max label + 1, at least 2.
 * Every malformed input is refused with one line naming the file and the
 * tensor (FL_ENOTFOUND, FL_EFORMAT, FL_ESHAPE, FL_ERANGE, FL_ENONFINITE). */
int fl_dataset_load_safetensors(const char *dir, int train, struct fl_dataset **out);

/* Loads a named data set: "fashion-mnist" (path NULL = FL_DATASET_DEFAULT_DIR,
 * the Debian package dataset-fashion-mnist), "mnist", "cifar10" or
 * "safetensors" (path required: the folder of fl_dataset_load_safetensors). For the IDX sets the folder holds train-images-idx3-ubyte,
 * train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte,
 * each as .gz or raw; labels must be < 10. name NULL means "fashion-mnist". */
int fl_dataset_load(const char *name, const char *path, int train, struct fl_dataset **out);

/* Sets mean/std for every channel (arrays of ds->c values; std finite and
 * > 0) and rebuilds the lookup table. FL_OK or FL_EINVAL. */
int fl_dataset_set_norm(struct fl_dataset *ds, const float *mean, const float *std);
/* Per-channel mean and (population) standard deviation of pixel/255 (exactly,
 * from a histogram) or of the float values (in double, two passes) over the
 * whole set; a channel with std 0 gets std 1. FL_OK or FL_EINVAL for an
 * empty set. */
int fl_dataset_compute_norm(struct fl_dataset *ds);
/* dst uses src's statistics (test set normalised like the training set).
 * The two must hold samples of the same shape (ndim, c, h, w) and storage,
 * and dst no more classes than src: FL_OK, FL_ESHAPE or FL_EINVAL. */
int fl_dataset_copy_norm(struct fl_dataset *dst, const struct fl_dataset *src);

/* x_out (count, c*h*w) = normalised inputs of samples idx[0..count), y_out
 * (count) = their labels (y_out may be NULL). idx NULL means samples 0..count.
 * Every index must be in [0, n) (asserted: indices come from code, not
 * input). Does not allocate; safe to call from several threads at once. */
void fl_dataset_gather(const struct fl_dataset *ds, const int *idx, int count, float *x_out,
		       int *y_out);

/* A new data set holding copies of samples idx[0..count) in that order (idx
 * NULL: the first count samples), with the same classes and normalisation.
 * The result is independent of ds. FL_EINVAL for a bad index or count. */
int fl_dataset_subset(const struct fl_dataset *ds, const int *idx, int count,
		      struct fl_dataset **out);

/* counts[0..classes) = how many of samples idx[0..count) carry each label
 * (idx NULL: samples 0..count). */
void fl_dataset_label_counts(const struct fl_dataset *ds, const int *idx, int count, int *counts);

#endif
