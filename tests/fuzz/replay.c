/* replay.c - the replay driver of the fuzz targets (replay.h): reads whole
 * files and calls the target; nothing here checks the target's results. */
#include "replay.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path, void (*report)(const char *path, size_t n))
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "%s: cannot open\n", path);
		return -1;
	}
	uint8_t *buf = NULL;
	size_t n = 0, cap = 0;
	for (;;) {
		if (n == cap) {
			cap = cap ? 2 * cap : 4096;
			uint8_t *nb = realloc(buf, cap);
			if (!nb) {
				free(buf);
				fclose(f);
				return -1;
			}
			buf = nb;
		}
		size_t k = fread(buf + n, 1, cap - n, f);
		n += k;
		if (k == 0)
			break;
	}
	fclose(f);
	LLVMFuzzerTestOneInput(buf, n);
	report(path, n);
	free(buf);
	return 0;
}

static int cmp_str(const void *x, const void *y)
{
	return strcmp(*(char *const *)x, *(char *const *)y);
}

/* Runs every regular file of dir, in name order; the count, or -1. */
static int run_dir(const char *dir, void (*report)(const char *path, size_t n))
{
	DIR *d = opendir(dir);
	if (!d)
		return -1;
	char **names = NULL;
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		char **nn = realloc(names, (n + 1) * sizeof(*names));
		if (!nn)
			break;
		names = nn;
		size_t len = strlen(dir) + strlen(de->d_name) + 2;
		names[n] = malloc(len);
		if (!names[n])
			break;
		snprintf(names[n], len, "%s/%s", dir, de->d_name);
		n++;
	}
	closedir(d);
	qsort(names, n, sizeof(*names), cmp_str);
	int count = 0;
	for (size_t i = 0; i < n; i++) {
		if (run_file(names[i], report) == 0)
			count++;
		free(names[i]);
	}
	free(names);
	return count;
}

int fl_fuzz_replay_main(int argc, char **argv, void (*report)(const char *path, size_t n))
{
	int total = 0;
	for (int i = 1; i < argc; i++) {
		struct stat st;
		if (stat(argv[i], &st) != 0) {
			fprintf(stderr, "%s: not found\n", argv[i]);
			return 1;
		}
		int k = S_ISDIR(st.st_mode) ? run_dir(argv[i], report)
					    : run_file(argv[i], report) == 0;
		if (k < 0) {
			fprintf(stderr, "%s: cannot read\n", argv[i]);
			return 1;
		}
		total += k;
	}
	printf("replayed %d inputs\n", total);
	return total > 0 ? 0 : 1;
}
