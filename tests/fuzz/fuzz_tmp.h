/* fuzz_tmp.h - temporary files for the fuzz targets whose parser reads a
 * path (IDX files, data folders, key files, checkpoints): one private
 * folder per process, removed at exit. Used by the libFuzzer and the
 * replay builds alike; nothing here checks a target's results. */
#ifndef FL_FUZZ_TMP_H
#define FL_FUZZ_TMP_H

#include <stddef.h>
#include <stdint.h>

/* The process's folder (created mode 0700 on first use); aborts when it
 * cannot be made. */
const char *fl_fuzz_tmp_dir(void);
/* Writes n bytes to <folder>/name with the given mode (replacing the file)
 * and returns its path, held in one of four static buffers used in turn
 * (the last four paths stay valid). Aborts on an I/O error. */
const char *fl_fuzz_tmp_write(const char *name, const uint8_t *data, size_t n, unsigned mode);
/* Removes <folder>/name when it exists. */
void fl_fuzz_tmp_remove(const char *name);

#endif
