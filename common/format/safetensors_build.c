/* safetensors_build.c - building a struct fl_st in memory: a new empty
 * file, tensors copied in (fl_st_add), metadata. Reading and validating a
 * file is safetensors.c; writing it out is safetensors_write.c. */
#include "safetensors_impl.h"

#include "errors.h"
#include "util.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

int fl_st_new(struct fl_st **out)
{
	*out = calloc(1, sizeof(**out));
	return *out ? FL_OK : fl_error_set(FL_ENOMEM, "out of memory for a safetensors writer");
}

/* Whether jansson will accept s as a JSON string (valid UTF-8). */
static int json_ok_str(const char *s)
{
	json_t *j = json_string(s);
	json_decref(j);
	return j != NULL;
}

int fl_st_add(struct fl_st *st, const char *name, enum fl_dtype dtype, const int64_t *shape,
	      int ndim, const void *data)
{
	char nb[128];
	if (!name)
		return fl_error_set(FL_EINVAL, "fl_st_add: NULL name");
	const char *nm = fl_error_safe_str(name, nb, sizeof(nb));
	if ((unsigned)dtype >= FL_DTYPE_COUNT || ndim < 0 || ndim > FL_ST_NDIM_MAX ||
	    (ndim > 0 && !shape))
		return fl_error_set(FL_EINVAL, "tensor '%s': bad dtype %d or ndim %d", nm,
				    (int)dtype, ndim);
	if (strcmp(name, "__metadata__") == 0 || !json_ok_str(name))
		return fl_error_set(FL_EINVAL, "tensor '%s': reserved name or not UTF-8", nm);
	if (fl_st_find(st, name))
		return fl_error_set(FL_EINVAL, "tensor '%s': already present", nm);
	uint64_t limit = (SIZE_MAX < INT64_MAX ? (uint64_t)SIZE_MAX : (uint64_t)INT64_MAX) /
			 fl_dtype_size(dtype);
	uint64_t numel = 1;
	for (int i = 0; i < ndim; i++) {
		if (shape[i] < 0)
			return fl_error_set(FL_EINVAL, "tensor '%s': negative shape[%d]", nm, i);
		if (shape[i] > 0 && numel > limit / (uint64_t)shape[i])
			return fl_error_set(FL_ERANGE, "tensor '%s': shape product overflows", nm);
		numel *= (uint64_t)shape[i];
	}
	size_t nbytes = (size_t)numel * fl_dtype_size(dtype);
	if (nbytes && !data)
		return fl_error_set(FL_EINVAL, "tensor '%s': NULL data", nm);
	if (st->n == st->cap) {
		size_t cap = st->cap ? 2 * st->cap : 16;
		struct st_entry **v = realloc(st->v, cap * sizeof(*v));
		if (!v)
			return fl_error_set(FL_ENOMEM, "tensor '%s': out of memory", nm);
		st->v = v;
		st->cap = cap;
	}
	struct st_entry *en = calloc(1, sizeof(*en));
	if (en) {
		en->t.name = fl_strdup(name);
		en->own = malloc(nbytes ? nbytes : 1);
	}
	if (!en || !en->t.name || !en->own) {
		if (en) {
			free(en->t.name);
			free(en->own);
		}
		free(en);
		return fl_error_set(FL_ENOMEM, "tensor '%s': out of memory for %zu bytes", nm,
				    nbytes);
	}
	if (nbytes)
		memcpy(en->own, data, nbytes);
	en->t.dtype = dtype;
	en->t.ndim = ndim;
	if (ndim)
		memcpy(en->t.shape, shape, (size_t)ndim * sizeof(shape[0]));
	en->t.numel = (size_t)numel;
	en->t.data = en->own;
	en->t.nbytes = nbytes;
	st->v[st->n++] = en;
	return FL_OK;
}

int fl_st_add_f32(struct fl_st *st, const char *name, const int64_t *shape, int ndim,
		  const float *data)
{
	return fl_st_add(st, name, FL_DTYPE_F32, shape, ndim, data);
}

int fl_st_set_metadata(struct fl_st *st, const char *key, const char *value)
{
	if (!key || !value || !json_ok_str(key) || !json_ok_str(value))
		return fl_error_set(FL_EINVAL, "metadata key or value missing or not UTF-8");
	char *v = fl_strdup(value);
	if (!v)
		return fl_error_set(FL_ENOMEM, "out of memory for metadata");
	for (size_t i = 0; i < st->nmeta; i++) {
		if (strcmp(st->meta[i].key, key) == 0) {
			free(st->meta[i].value);
			st->meta[i].value = v;
			return FL_OK;
		}
	}
	if (st->nmeta == st->meta_cap) {
		size_t cap = st->meta_cap ? 2 * st->meta_cap : 4;
		struct st_meta *m = realloc(st->meta, cap * sizeof(*m));
		if (!m) {
			free(v);
			return fl_error_set(FL_ENOMEM, "out of memory for metadata");
		}
		st->meta = m;
		st->meta_cap = cap;
	}
	char *k = fl_strdup(key);
	if (!k) {
		free(v);
		return fl_error_set(FL_ENOMEM, "out of memory for metadata");
	}
	st->meta[st->nmeta].key = k;
	st->meta[st->nmeta].value = v;
	st->nmeta++;
	return FL_OK;
}
