/* safetensors_impl.h - the in-memory form of a safetensors file, shared by
 * the reader (safetensors.c), the builder (safetensors_build.c) and the
 * writer. Not part of the API: callers use safetensors.h. */
#ifndef FL_SAFETENSORS_IMPL_H
#define FL_SAFETENSORS_IMPL_H

#include "safetensors.h"

#include <stddef.h>
#include <stdint.h>

/* One tensor; allocated on its own so fl_st_at() pointers survive fl_st_add(). */
struct st_entry {
	struct fl_st_tensor t;
	void *own;      /* bytes copied by fl_st_add(), or NULL when t.data is in buf */
	uint64_t begin; /* data offset of a read tensor (sort key) */
};

struct st_meta {
	char *key, *value;
};

struct fl_st {
	struct st_entry **v;
	size_t n, cap;
	struct st_meta *meta;
	size_t nmeta, meta_cap;
	unsigned char *buf; /* the whole file, for read tensors; NULL for a new writer */
};

#endif
