/* safetensors.h - read and write the safetensors format (HuggingFace).
 *
 * A file is: u64 little-endian header length N, N bytes of JSON
 * ({"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets"}}),
 * then the tensor bytes, little-endian, row-major; offsets are relative to the
 * end of the header and must tile the data area exactly (no holes, no
 * overlaps). Reading validates everything before trusting it and reports one
 * clear line through fl_error_set(). Writing goes to a temporary file that is
 * fsync'ed and renamed, so a crash never leaves a half-written file.
 */
#ifndef FL_SAFETENSORS_H
#define FL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

enum fl_dtype {
	FL_DTYPE_F32 = 0,
	FL_DTYPE_F16,
	FL_DTYPE_BF16,
	FL_DTYPE_F64,
	FL_DTYPE_I64,
	FL_DTYPE_I32,
	FL_DTYPE_I16,
	FL_DTYPE_I8,
	FL_DTYPE_U8,
	FL_DTYPE_BOOL,
	FL_DTYPE_COUNT
};

#define FL_ST_NDIM_MAX 8
#define FL_ST_HEADER_MAX (100u * 1024u * 1024u) /* the reference reader's limit */

/* Bytes per element; the name as written in the header ("F32", ...). */
size_t fl_dtype_size(enum fl_dtype t);
const char *fl_dtype_name(enum fl_dtype t);
/* Parses a header dtype name; FL_OK or FL_EFORMAT. */
int fl_dtype_parse(const char *s, enum fl_dtype *out);

/* One tensor of a file: owned by its struct fl_st. */
struct fl_st_tensor {
	char *name;
	enum fl_dtype dtype;
	int ndim;
	int64_t shape[FL_ST_NDIM_MAX];
	size_t numel;
	const void *data; /* raw little-endian bytes inside the file buffer */
	size_t nbytes;
};

/* An open file (read) or a file being built (write). Opaque. */
struct fl_st;

/* Reads and validates a whole file. *out is NULL on failure. */
int fl_st_read(const char *path, struct fl_st **out);
/* The same from a memory buffer (copied); `what` names it in messages. */
int fl_st_parse(const void *buf, size_t len, const char *what, struct fl_st **out);
void fl_st_free(struct fl_st *st);

/* Tensors in file order (ascending data offset), then those added with
 * fl_st_add() in the order added. Pointers stay valid until fl_st_free(). */
size_t fl_st_count(const struct fl_st *st);
const struct fl_st_tensor *fl_st_at(const struct fl_st *st, size_t i);
/* NULL when absent. */
const struct fl_st_tensor *fl_st_find(const struct fl_st *st, const char *name);
/* A __metadata__ value, or NULL. */
const char *fl_st_metadata(const struct fl_st *st, const char *key);
/* The __metadata__ entries in order: the i-th key (value through *value if
 * not NULL), or NULL when i >= fl_st_metadata_count(). */
size_t fl_st_metadata_count(const struct fl_st *st);
const char *fl_st_metadata_at(const struct fl_st *st, size_t i, const char **value);

/* Copies a floating tensor (F32, F16, BF16 or F64) into dst as float32;
 * FL_EUNSUPPORTED for integer dtypes, FL_ESHAPE when numel differs. */
int fl_st_tensor_to_f32(const struct fl_st_tensor *t, float *dst, size_t numel);
/* Looks up `name`, checks it has exactly the given shape, converts to F32. */
int fl_st_get_f32(const struct fl_st *st, const char *name, const int64_t *shape, int ndim,
		  float *dst);

/* ---- writing ---- */
/* An empty writer. */
int fl_st_new(struct fl_st **out);
/* Adds a tensor; the bytes are copied. Names must be unique. */
int fl_st_add(struct fl_st *st, const char *name, enum fl_dtype dtype, const int64_t *shape,
	      int ndim, const void *data);
int fl_st_add_f32(struct fl_st *st, const char *name, const int64_t *shape, int ndim,
		  const float *data);
int fl_st_set_metadata(struct fl_st *st, const char *key, const char *value);
/* Writes every tensor (read or added), sorted by name like the Python
 * writer, header padded with spaces to a multiple of 8; atomic replace. */
int fl_st_write(const struct fl_st *st, const char *path);

#endif
