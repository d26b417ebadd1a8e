/* state.c - what an edge client keeps on disk between sessions: the
 * pFedPara local tensors (state_dir/local.safetensors, checked tensor by
 * tensor when loaded, replaced atomically when saved) and the loha base
 * file (SHA-256 of candidates, and a fetch streamed into a temporary file
 * that is renamed into place only once its SHA-256 matches; the same
 * chunked fetch fills memory for a model description). It does not
 * speak the protocol; session.c decides when these run. */
#include "session_impl.h"

#include "errors.h"
#include "fsutil.h"
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int join(char *buf, size_t cap, const char *dir, const char *name)
{
	if (snprintf(buf, cap, "%s/%s", dir, name) >= (int)cap)
		return fl_error_set(FL_EINVAL, "%s: path too long", dir);
	return FL_OK;
}

/* ---- local tensors ---- */

int cli_state_load_local(struct fl_model *m, const char *dir)
{
	char path[FL_PATH_MAX];
	int err = join(path, sizeof(path), dir, CLI_SESSION_LOCAL_FILE);
	if (err || !fl_path_exists(path))
		return err;
	struct fl_st *st;
	if ((err = fl_st_read(path, &st)))
		return err;
	size_t nlocal = 0;
	for (size_t i = 0; i < fl_model_tensor_count(m) && !err; i++) {
		const struct fl_model_tensor *t = fl_model_tensor_at(m, i);
		if (!(t->flags & FL_TENSOR_LOCAL))
			continue;
		nlocal++;
		const struct fl_st_tensor *ft = fl_st_find(st, t->name);
		if (!ft) {
			err = fl_error_set(FL_ENOTFOUND,
					   "%s: local tensor '%s' is missing (the file belongs to "
					   "another model; move it away to start afresh)",
					   path, t->name);
			break;
		}
		err = fl_st_get_f32(st, t->name, t->shape, t->ndim, fl_model_params(m) + t->offset);
		if (err) {
			char why[FL_ERROR_MSG_MAX];
			snprintf(why, sizeof(why), "%s", fl_error_msg());
			err = fl_error_set(err, "%s: local tensor '%s': %s", path, t->name, why);
		}
	}
	if (!err && fl_st_count(st) != nlocal) {
		for (size_t i = 0; i < fl_st_count(st); i++) {
			const struct fl_model_tensor *t = fl_model_tensor_find(
				m, fl_st_at(st, i)->name);
			if (!t || !(t->flags & FL_TENSOR_LOCAL)) {
				err = fl_error_set(FL_EFORMAT,
						   "%s: tensor '%s' is not a local tensor of this "
						   "model (the file belongs to another model)",
						   path, fl_st_at(st, i)->name);
				break;
			}
		}
	}
	fl_st_free(st);
	fl_model_params_changed(m);
	return err;
}

int cli_state_save_local(struct fl_model *m, const char *dir)
{
	if (!fl_model_count_floats(m, FL_TENSOR_LOCAL))
		return FL_OK;
	char path[FL_PATH_MAX];
	int err = join(path, sizeof(path), dir, CLI_SESSION_LOCAL_FILE);
	if (err)
		return err;
	if ((err = fl_mkdir_p(dir, 1)))
		return err;
	struct fl_st *st;
	if ((err = fl_st_new(&st)))
		return err;
	err = fl_st_set_metadata(st, "format", "pt");
	if (!err)
		err = fl_st_set_metadata(st, "fedloha", "pfedpara local tensors");
	if (!err)
		err = fl_st_set_metadata(st, "arch", fl_model_arch(m));
	for (size_t i = 0; i < fl_model_tensor_count(m) && !err; i++) {
		const struct fl_model_tensor *t = fl_model_tensor_at(m, i);
		if (t->flags & FL_TENSOR_LOCAL)
			err = fl_st_add_f32(st, t->name, t->shape, t->ndim,
					    fl_model_params(m) + t->offset);
	}
	if (!err)
		err = fl_st_write(st, path);
	fl_st_free(st);
	return err;
}

/* ---- SHA-256 of files ---- */

int cli_state_file_sha(struct cli_sha_cache *c, const char *path, uint8_t sha[CLI_SHA256_BYTES],
		       long long *size)
{
	struct stat sb;
	if (stat(path, &sb) != 0)
		return fl_error_set(errno == ENOENT ? FL_ENOTFOUND : FL_EIO, "%s: %s", path,
				    strerror(errno));
	if (!S_ISREG(sb.st_mode))
		return fl_error_set(FL_EIO, "%s: not a regular file", path);
	long long mt = (long long)sb.st_mtim.tv_sec * 1000000000LL + sb.st_mtim.tv_nsec;
	if (size)
		*size = (long long)sb.st_size;
	if (c->valid && !strcmp(c->path, path) && c->size == (long long)sb.st_size &&
	    c->mtime_ns == mt) {
		memcpy(sha, c->sha, CLI_SHA256_BYTES);
		return FL_OK;
	}
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return fl_error_set(FL_EIO, "%s: %s", path, strerror(errno));
	const size_t cap = (size_t)1 << 16;
	unsigned char *buf = malloc(cap);
	if (!buf) {
		close(fd);
		return fl_error_set(FL_ENOMEM, "out of memory");
	}
	crypto_hash_sha256_state h;
	crypto_hash_sha256_init(&h);
	int err = FL_OK;
	for (;;) {
		ssize_t r = read(fd, buf, cap);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			err = fl_error_set(FL_EIO, "%s: read: %s", path, strerror(errno));
			break;
		}
		if (r == 0)
			break;
		crypto_hash_sha256_update(&h, buf, (unsigned long long)r);
	}
	close(fd);
	free(buf);
	if (err)
		return err;
	crypto_hash_sha256_final(&h, sha);
	c->valid = snprintf(c->path, sizeof(c->path), "%s", path) < (int)sizeof(c->path);
	c->size = (long long)sb.st_size;
	c->mtime_ns = mt;
	memcpy(c->sha, sha, CLI_SHA256_BYTES);
	return FL_OK;
}

/* ---- base fetch ---- */

static void fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

void cli_base_fetch_abort(struct cli_base_fetch *f)
{
	free(f->mem);
	f->mem = NULL;
	if (f->fd < 0)
		return;
	close(f->fd);
	unlink(f->tmp);
	f->fd = -1;
}

int cli_base_fetch_begin(struct cli_base_fetch *f, const char *dir, uint64_t total,
			 const uint8_t want[CLI_SHA256_BYTES])
{
	cli_base_fetch_abort(f);
	int err = join(f->path, sizeof(f->path), dir, CLI_SESSION_BASE_FILE);
	if (!err)
		err = join(f->tmp, sizeof(f->tmp), dir, CLI_SESSION_BASE_FILE ".part");
	if (!err)
		err = fl_mkdir_p(dir, 1);
	if (err)
		return err;
	f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (f->fd < 0)
		return fl_error_set(FL_EIO, "%s: %s", f->tmp, strerror(errno));
	crypto_hash_sha256_init(&f->sha);
	f->have = 0;
	f->total = total;
	memcpy(f->want, want, CLI_SHA256_BYTES);
	return FL_OK;
}

int cli_desc_fetch_begin(struct cli_base_fetch *f, uint64_t total,
			 const uint8_t want[CLI_SHA256_BYTES])
{
	cli_base_fetch_abort(f);
	if (!(f->mem = malloc(total ? total : 1)))
		return fl_error_set(FL_ENOMEM, "out of memory for the model description");
	crypto_hash_sha256_init(&f->sha);
	f->have = 0;
	f->total = total;
	memcpy(f->want, want, CLI_SHA256_BYTES);
	return FL_OK;
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
	while (len > 0) {
		ssize_t w = write(fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return FL_EIO;
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

int cli_base_fetch_chunk(struct cli_base_fetch *f, uint64_t offset, const uint8_t *data, size_t len,
			 int last, int *done)
{
	*done = 0;
	int err = FL_OK;
	if (f->fd < 0 && !f->mem)
		return fl_error_set(FL_EFORMAT, "BaseChunk without a BaseRequest");
	if (offset != f->have)
		err = fl_error_set(FL_EFORMAT, "BaseChunk at offset %llu, expected %llu",
				   (unsigned long long)offset, (unsigned long long)f->have);
	else if (len > f->total - f->have)
		err = fl_error_set(FL_ERANGE, "BaseChunk runs past the announced %llu bytes",
				   (unsigned long long)f->total);
	else if (!!last != (f->have + len == f->total))
		err = fl_error_set(FL_EFORMAT, "BaseChunk: %s at %llu of %llu bytes",
				   last ? "last chunk" : "no last flag",
				   (unsigned long long)(f->have + len),
				   (unsigned long long)f->total);
	else if (f->mem)
		memcpy(f->mem + f->have, data, len);
	else if (write_all(f->fd, data, len) != 0)
		err = fl_error_set(FL_EIO, "%s: write: %s", f->tmp, strerror(errno));
	if (err) {
		cli_base_fetch_abort(f);
		return err;
	}
	crypto_hash_sha256_update(&f->sha, data, len);
	f->have += len;
	if (!last)
		return FL_OK;
	uint8_t got[CLI_SHA256_BYTES];
	crypto_hash_sha256_final(&f->sha, got);
	if (sodium_memcmp(got, f->want, CLI_SHA256_BYTES) != 0) {
		const char *what = f->mem ? "model description" : "base file";
		cli_base_fetch_abort(f);
		return fl_error_set(FL_EFORMAT,
				    "%s from the server: SHA-256 does not match the "
				    "Welcome's (%llu bytes discarded)",
				    what, (unsigned long long)f->total);
	}
	if (f->mem) {
		*done = 1;
		return FL_OK;
	}
	if (fsync(f->fd) != 0) {
		err = fl_error_set(FL_EIO, "%s: fsync: %s", f->tmp, strerror(errno));
		cli_base_fetch_abort(f);
		return err;
	}
	int cr = close(f->fd);
	f->fd = -1;
	if (cr != 0 || rename(f->tmp, f->path) != 0) {
		err = fl_error_set(FL_EIO, "%s: %s", f->path, strerror(errno));
		unlink(f->tmp);
		return err;
	}
	char dir[FL_PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", f->path);
	char *slash = strrchr(dir, '/');
	if (slash) {
		*slash = '\0';
		fsync_dir(dir[0] ? dir : "/");
	}
	*done = 1;
	return FL_OK;
}
