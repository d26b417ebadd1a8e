/* safetensors.c - read and validate safetensors files (format in
 * safetensors.h) and build new ones in memory.
 *
 * The reader loads the whole file into one buffer, parses the JSON header
 * with jansson and checks every field, every offset and the exact tiling of
 * the data area before any tensor is exposed; tensors then point into that
 * buffer. fl_st_add() keeps its own copies of added bytes. Element types and
 * the float32 conversions live in dtype.c, fl_st_write() in
 * safetensors_write.c. No memory mapping, no streaming: files are held in
 * memory whole.
 */
#include "safetensors_impl.h"

#include "errors.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers ---- */

static uint64_t load_le64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

/* Checks the header length N against the format, the limit and the bytes
 * that follow the 8-byte length field. */
static int check_header_len(uint64_t hlen, uint64_t avail, const char *what)
{
	if (hlen < 2)
		return fl_error_set(FL_EFORMAT, "%s: header length %llu is too small", what,
				    (unsigned long long)hlen);
	if (hlen > FL_ST_HEADER_MAX)
		return fl_error_set(FL_ERANGE,
				    "%s: header length %llu exceeds the limit of %u bytes", what,
				    (unsigned long long)hlen, FL_ST_HEADER_MAX);
	if (hlen > avail)
		return fl_error_set(FL_EFORMAT,
				    "%s: header length %llu exceeds the %llu bytes that follow it "
				    "(truncated file?)",
				    what, (unsigned long long)hlen, (unsigned long long)avail);
	return FL_OK;
}

/* ---- reading ---- */

static int parse_metadata(struct fl_st *st, json_t *obj, const char *what)
{
	char kb[96];
	if (!json_is_object(obj))
		return fl_error_set(FL_EFORMAT, "%s: \"__metadata__\" is not an object", what);
	size_t count = json_object_size(obj);
	st->meta = calloc(count ? count : 1, sizeof(*st->meta));
	if (!st->meta)
		return fl_error_set(FL_ENOMEM, "%s: out of memory for metadata", what);
	st->meta_cap = count;
	const char *key;
	json_t *val;
	json_object_foreach(obj, key, val)
	{
		if (!json_is_string(val))
			return fl_error_set(
				FL_EFORMAT,
				"%s: \"__metadata__\" value of key '%s' is not a string", what,
				fl_error_safe_str(key, kb, sizeof(kb)));
		struct st_meta *m = &st->meta[st->nmeta];
		m->key = fl_strdup(key);
		m->value = fl_strdup(json_string_value(val));
		st->nmeta++;
		if (!m->key || !m->value)
			return fl_error_set(FL_ENOMEM, "%s: out of memory for metadata", what);
	}
	return FL_OK;
}

/* "shape" into t's shape, ndim, numel and nbytes (t->dtype set): at most
 * FL_ST_NDIM_MAX non-negative integers whose product in bytes fits size_t
 * and int64. */
static int parse_shape(json_t *js, const char *nm, const char *what, struct fl_st_tensor *t)
{
	int64_t *shape = t->shape;
	size_t dsize = fl_dtype_size(t->dtype);
	if (!json_is_array(js))
		return fl_error_set(FL_EFORMAT, "%s: tensor '%s': \"shape\" is not an array", what,
				    nm);
	size_t ndim = json_array_size(js);
	if (ndim > FL_ST_NDIM_MAX)
		return fl_error_set(FL_ERANGE,
				    "%s: tensor '%s': %zu dimensions, at most %d supported", what,
				    nm, ndim, FL_ST_NDIM_MAX);
	int has_zero = 0;
	for (size_t i = 0; i < ndim; i++) {
		json_t *d = json_array_get(js, i);
		if (!json_is_integer(d))
			return fl_error_set(FL_EFORMAT,
					    "%s: tensor '%s': shape[%zu] is not an integer", what,
					    nm, i);
		shape[i] = json_integer_value(d);
		if (shape[i] < 0)
			return fl_error_set(FL_EFORMAT,
					    "%s: tensor '%s': shape[%zu] = %lld is negative", what,
					    nm, i, (long long)shape[i]);
		has_zero |= shape[i] == 0;
	}
	/* numel * dsize must fit both size_t and the int64 offsets. */
	uint64_t limit = (SIZE_MAX < INT64_MAX ? (uint64_t)SIZE_MAX : (uint64_t)INT64_MAX) / dsize;
	uint64_t numel = 1;
	for (size_t i = 0; i < ndim && !has_zero; i++) {
		if (numel > limit / (uint64_t)shape[i])
			return fl_error_set(
				FL_ERANGE,
				"%s: tensor '%s': shape product overflows (dimension %zu)", what,
				nm, i);
		numel *= (uint64_t)shape[i];
	}
	t->ndim = (int)ndim;
	t->numel = (size_t)(has_zero ? 0 : numel);
	t->nbytes = t->numel * dsize;
	return FL_OK;
}

/* Validates one tensor entry and appends it (offsets are checked against the
 * data area here; the tiling is checked once all entries are in). */
static int parse_entry(struct fl_st *st, const char *name, json_t *obj, const unsigned char *data,
		       size_t data_len, const char *what)
{
	char nb[128], db[40];
	const char *nm = fl_error_safe_str(name, nb, sizeof(nb));
	if (!json_is_object(obj))
		return fl_error_set(FL_EFORMAT, "%s: tensor '%s': entry is not an object", what,
				    nm);
	json_t *jd = json_object_get(obj, "dtype");
	json_t *js = json_object_get(obj, "shape");
	json_t *jo = json_object_get(obj, "data_offsets");
	if (!jd || !js || !jo)
		return fl_error_set(FL_EFORMAT, "%s: tensor '%s': missing \"%s\"", what, nm,
				    !jd   ? "dtype"
				    : !js ? "shape"
					  : "data_offsets");

	struct fl_st_tensor t = {0};
	if (!json_is_string(jd))
		return fl_error_set(FL_EFORMAT, "%s: tensor '%s': \"dtype\" is not a string", what,
				    nm);
	if (fl_dtype_parse(json_string_value(jd), &t.dtype) != FL_OK)
		return fl_error_set(FL_EFORMAT, "%s: tensor '%s': unknown dtype \"%s\"", what, nm,
				    fl_error_safe_str(json_string_value(jd), db, sizeof(db)));
	int err = parse_shape(js, nm, what, &t);
	if (err)
		return err;
	if (!json_is_array(jo) || json_array_size(jo) != 2 ||
	    !json_is_integer(json_array_get(jo, 0)) || !json_is_integer(json_array_get(jo, 1)))
		return fl_error_set(
			FL_EFORMAT,
			"%s: tensor '%s': \"data_offsets\" is not [begin, end] integers", what, nm);
	json_int_t b = json_integer_value(json_array_get(jo, 0));
	json_int_t e = json_integer_value(json_array_get(jo, 1));
	if (b < 0 || e < 0)
		return fl_error_set(FL_EFORMAT,
				    "%s: tensor '%s': negative data_offsets [%lld, %lld]", what, nm,
				    (long long)b, (long long)e);
	if (e < b)
		return fl_error_set(FL_EFORMAT,
				    "%s: tensor '%s': data_offsets [%lld, %lld] end before begin",
				    what, nm, (long long)b, (long long)e);
	if ((uint64_t)(e - b) != t.nbytes)
		return fl_error_set(
			FL_EFORMAT,
			"%s: tensor '%s': data_offsets [%lld, %lld] span %lld bytes, but "
			"%llu elements of %s need %llu",
			what, nm, (long long)b, (long long)e, (long long)(e - b),
			(unsigned long long)t.numel, fl_dtype_name(t.dtype),
			(unsigned long long)t.nbytes);
	if ((uint64_t)e > data_len)
		return fl_error_set(
			FL_EFORMAT,
			"%s: tensor '%s': data_offsets [%lld, %lld] outside the data area "
			"of %zu bytes",
			what, nm, (long long)b, (long long)e, data_len);
	struct st_entry *en = calloc(1, sizeof(*en));
	if (!en || !(t.name = fl_strdup(name))) {
		free(en);
		return fl_error_set(FL_ENOMEM, "%s: out of memory", what);
	}
	t.data = data + b;
	en->t = t;
	en->begin = (uint64_t)b;
	st->v[st->n++] = en;
	return FL_OK;
}

static int cmp_offset(const void *pa, const void *pb)
{
	const struct st_entry *a = *(struct st_entry *const *)pa;
	const struct st_entry *b = *(struct st_entry *const *)pb;
	uint64_t ea = a->begin + a->t.nbytes, eb = b->begin + b->t.nbytes;
	if (a->begin != b->begin)
		return a->begin < b->begin ? -1 : 1;
	if (ea != eb)
		return ea < eb ? -1 : 1;
	return strcmp(a->t.name, b->t.name);
}

/* Sorts the tensors by offset and checks that they cover the data area
 * exactly once: no overlap, no hole, nothing after the last one. */
static int check_tiling(struct fl_st *st, size_t data_len, const char *what)
{
	char nb[100], pb[100];
	if (st->n > 1)
		qsort(st->v, st->n, sizeof(st->v[0]), cmp_offset);
	uint64_t pos = 0;
	const struct st_entry *prev = NULL;
	for (size_t i = 0; i < st->n; i++) {
		const struct st_entry *e = st->v[i];
		if (e->begin < pos)
			return fl_error_set(
				FL_EFORMAT,
				"%s: tensors '%s' and '%s' are overlapping (offset %llu < %llu)",
				what, fl_error_safe_str(prev->t.name, pb, sizeof(pb)),
				fl_error_safe_str(e->t.name, nb, sizeof(nb)),
				(unsigned long long)e->begin, (unsigned long long)pos);
		if (e->begin > pos)
			return fl_error_set(
				FL_EFORMAT,
				"%s: hole of %llu bytes at data offset %llu, before tensor '%s'",
				what, (unsigned long long)(e->begin - pos), (unsigned long long)pos,
				fl_error_safe_str(e->t.name, nb, sizeof(nb)));
		pos = e->begin + e->t.nbytes;
		prev = e;
	}
	if (pos != data_len) {
		if (prev)
			return fl_error_set(FL_EFORMAT,
					    "%s: %llu trailing bytes after the last tensor '%s'",
					    what, (unsigned long long)(data_len - pos),
					    fl_error_safe_str(prev->t.name, nb, sizeof(nb)));
		return fl_error_set(FL_EFORMAT, "%s: %zu trailing bytes and no tensors", what,
				    data_len);
	}
	return FL_OK;
}

/* Parses a whole file held in buf (malloc'ed; ownership moves here). */
static int parse_owned(unsigned char *buf, size_t len, const char *what, struct fl_st **out)
{
	json_t *root = NULL;
	int rc;
	struct fl_st *st = calloc(1, sizeof(*st));
	if (!st) {
		free(buf);
		return fl_error_set(FL_ENOMEM, "%s: out of memory", what);
	}
	st->buf = buf;
	if (len < 8) {
		rc = fl_error_set(FL_EFORMAT, "%s: %zu bytes, too short for a safetensors file",
				  what, len);
		goto fail;
	}
	uint64_t hlen = load_le64(buf);
	rc = check_header_len(hlen, len - 8, what);
	if (rc)
		goto fail;
	json_error_t jerr;
	root = json_loadb((const char *)buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		char tb[JSON_ERROR_TEXT_LENGTH];
		rc = fl_error_set(
			FL_EFORMAT, "%s: header is not valid JSON: line %d, column %d: %s", what,
			jerr.line, jerr.column, fl_error_safe_str(jerr.text, tb, sizeof(tb)));
		goto fail;
	}
	if (!json_is_object(root)) {
		rc = fl_error_set(FL_EFORMAT, "%s: header is not a JSON object", what);
		goto fail;
	}
	size_t count = json_object_size(root);
	st->v = calloc(count ? count : 1, sizeof(st->v[0]));
	if (!st->v) {
		rc = fl_error_set(FL_ENOMEM, "%s: out of memory for %zu tensors", what, count);
		goto fail;
	}
	st->cap = count;
	const unsigned char *data = buf + 8 + hlen;
	size_t data_len = len - 8 - (size_t)hlen;
	const char *key;
	json_t *val;
	json_object_foreach(root, key, val)
	{
		if (strcmp(key, "__metadata__") == 0)
			rc = parse_metadata(st, val, what);
		else
			rc = parse_entry(st, key, val, data, data_len, what);
		if (rc)
			goto fail;
	}
	rc = check_tiling(st, data_len, what);
	if (rc)
		goto fail;
	json_decref(root);
	*out = st;
	return FL_OK;
fail:
	json_decref(root);
	fl_st_free(st);
	return rc;
}

int fl_st_parse(const void *buf, size_t len, const char *what, struct fl_st **out)
{
	*out = NULL;
	if (!what)
		what = "<buffer>";
	if (!buf && len)
		return fl_error_set(FL_EINVAL, "%s: NULL buffer", what);
	unsigned char *copy = malloc(len ? len : 1);
	if (!copy)
		return fl_error_set(FL_ENOMEM, "%s: out of memory for %zu bytes", what, len);
	if (len)
		memcpy(copy, buf, len);
	return parse_owned(copy, len, what, out);
}

/* pread until n bytes or end of file; returns bytes read or -1. */
static ssize_t read_at(int fd, unsigned char *p, size_t n, off_t off)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = pread(fd, p + got, n - got, off + (off_t)got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

int fl_st_read(const char *path, struct fl_st **out)
{
	*out = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fl_error_set(errno == ENOENT ? FL_ENOTFOUND : FL_EIO, "%s: cannot open: %s",
				    path, strerror(errno));
	int rc;
	unsigned char *buf = NULL;
	struct stat sb;
	if (fstat(fd, &sb) != 0) {
		rc = fl_error_set(FL_EIO, "%s: cannot stat: %s", path, strerror(errno));
		goto fail;
	}
	if (!S_ISREG(sb.st_mode)) {
		rc = fl_error_set(FL_EIO, "%s: not a regular file", path);
		goto fail;
	}
	uint64_t size = (uint64_t)sb.st_size;
	if (size < 8) {
		rc = fl_error_set(FL_EFORMAT, "%s: %llu bytes, too short for a safetensors file",
				  path, (unsigned long long)size);
		goto fail;
	}
	if (size > SIZE_MAX) {
		rc = fl_error_set(FL_ERANGE, "%s: %llu bytes do not fit in memory", path,
				  (unsigned long long)size);
		goto fail;
	}
	/* Check the header length against the file size before allocating. */
	unsigned char lenbuf[8];
	if (read_at(fd, lenbuf, 8, 0) != 8) {
		rc = fl_error_set(FL_EIO, "%s: cannot read the header length: %s", path,
				  strerror(errno));
		goto fail;
	}
	rc = check_header_len(load_le64(lenbuf), size - 8, path);
	if (rc)
		goto fail;
	buf = malloc((size_t)size);
	if (!buf) {
		rc = fl_error_set(FL_ENOMEM, "%s: out of memory for %llu bytes", path,
				  (unsigned long long)size);
		goto fail;
	}
	ssize_t got = read_at(fd, buf, (size_t)size, 0);
	if (got < 0 || (uint64_t)got != size) {
		rc = fl_error_set(FL_EIO, "%s: %s", path,
				  got < 0 ? strerror(errno) : "file shrank while being read");
		goto fail;
	}
	close(fd);
	return parse_owned(buf, (size_t)size, path, out);
fail:
	free(buf);
	close(fd);
	return rc;
}

void fl_st_free(struct fl_st *st)
{
	if (!st)
		return;
	for (size_t i = 0; i < st->n; i++) {
		free(st->v[i]->t.name);
		free(st->v[i]->own);
		free(st->v[i]);
	}
	for (size_t i = 0; i < st->nmeta; i++) {
		free(st->meta[i].key);
		free(st->meta[i].value);
	}
	free(st->v);
	free(st->meta);
	free(st->buf);
	free(st);
}

/* ---- access ---- */

size_t fl_st_count(const struct fl_st *st)
{
	return st->n;
}

const struct fl_st_tensor *fl_st_at(const struct fl_st *st, size_t i)
{
	return i < st->n ? &st->v[i]->t : NULL;
}

const struct fl_st_tensor *fl_st_find(const struct fl_st *st, const char *name)
{
	for (size_t i = 0; i < st->n; i++)
		if (strcmp(st->v[i]->t.name, name) == 0)
			return &st->v[i]->t;
	return NULL;
}

size_t fl_st_metadata_count(const struct fl_st *st)
{
	return st->nmeta;
}

const char *fl_st_metadata_at(const struct fl_st *st, size_t i, const char **value)
{
	if (i >= st->nmeta)
		return NULL;
	if (value)
		*value = st->meta[i].value;
	return st->meta[i].key;
}

const char *fl_st_metadata(const struct fl_st *st, const char *key)
{
	for (size_t i = 0; i < st->nmeta; i++)
		if (strcmp(st->meta[i].key, key) == 0)
			return st->meta[i].value;
	return NULL;
}

/* ---- writing ---- */
