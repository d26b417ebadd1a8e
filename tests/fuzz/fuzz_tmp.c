/* fuzz_tmp.c - the temporary folder of the path-reading fuzz targets
 * (fuzz_tmp.h). */
#include "fuzz_tmp.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmp_dir[256];

static void tmp_cleanup(void)
{
	DIR *d = opendir(tmp_dir);
	if (d) {
		struct dirent *de;
		char p[512];
		while ((de = readdir(d))) {
			if (de->d_name[0] == '.')
				continue;
			snprintf(p, sizeof(p), "%s/%s", tmp_dir, de->d_name);
			unlink(p);
		}
		closedir(d);
	}
	rmdir(tmp_dir);
}

const char *fl_fuzz_tmp_dir(void)
{
	if (tmp_dir[0])
		return tmp_dir;
	const char *base = getenv("TMPDIR");
	snprintf(tmp_dir, sizeof(tmp_dir), "%s/fl-fuzz-XXXXXX", base && base[0] ? base : "/tmp");
	if (!mkdtemp(tmp_dir)) {
		perror("fuzz: mkdtemp");
		abort();
	}
	atexit(tmp_cleanup);
	return tmp_dir;
}

const char *fl_fuzz_tmp_write(const char *name, const uint8_t *data, size_t n, unsigned mode)
{
	static char paths[4][512];
	static int next;
	char *p = paths[next];
	next = (next + 1) % 4;
	snprintf(p, sizeof(paths[0]), "%s/%s", fl_fuzz_tmp_dir(), name);
	unlink(p);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, (mode_t)mode);
	if (fd < 0) {
		perror("fuzz: open");
		abort();
	}
	size_t off = 0;
	while (off < n) {
		ssize_t k = write(fd, data + off, n - off);
		if (k <= 0) {
			perror("fuzz: write");
			abort();
		}
		off += (size_t)k;
	}
	if (close(fd) != 0)
		abort();
	return p;
}

void fl_fuzz_tmp_remove(const char *name)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", fl_fuzz_tmp_dir(), name);
	unlink(p);
}
