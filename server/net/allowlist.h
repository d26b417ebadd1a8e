/* allowlist.h - the set of client public keys a coordinator accepts.
 *
 * File format (one key a line):
 *     # comment
 *     fl1:3q2-7wAAAA...  alice-laptop      <- the rest of the line is a name
 * Blank lines and lines starting with '#' are ignored. A bad line makes the
 * whole file fail with "path:LINE: reason" (the first bad line, and how many
 * more there are). Duplicate keys keep the first name.
 *
 * In memory the keys form a sorted set; a lookup compares the key with every
 * entry using sodium_memcmp and no early exit, so its time depends on the
 * size of the list only. Reloading (SIGHUP) builds a new set and swaps it in
 * only when the file parsed cleanly. This module does no networking and
 * keeps no global state.
 */
#ifndef FL_ALLOWLIST_H
#define FL_ALLOWLIST_H

#include "identity.h"

#include <stddef.h>
#include <stdint.h>

#define FL_ALLOWLIST_NAME_MAX 128
#define FL_ALLOWLIST_FILE_MAX (16u << 20)

struct fl_allowlist;

int fl_allowlist_new(struct fl_allowlist **out); /* empty */
/* Parses text (len bytes; source names it in errors). */
int fl_allowlist_parse(const char *text, size_t len, const char *source,
		       struct fl_allowlist **out);
/* Reads a file; FL_ENOTFOUND when it does not exist. */
int fl_allowlist_load(const char *path, struct fl_allowlist **out);
/* Loads path; on success frees *current and replaces it, on failure returns
 * the error and leaves *current untouched. */
int fl_allowlist_reload(const char *path, struct fl_allowlist **current);
void fl_allowlist_free(struct fl_allowlist *al);

size_t fl_allowlist_count(const struct fl_allowlist *al);
/* 1 when pk is in the set. */
int fl_allowlist_contains(const struct fl_allowlist *al, const uint8_t pk[FL_PUBKEY_BYTES]);
/* The name written after pk ("" when none), or NULL when pk is absent. Valid
 * until the set is freed or changed. */
const char *fl_allowlist_name(const struct fl_allowlist *al, const uint8_t pk[FL_PUBKEY_BYTES]);
/* 1 when some entry carries exactly this name (names are not secret: a
 * plain comparison). */
int fl_allowlist_has_name(const struct fl_allowlist *al, const char *name);
/* Adds pk (no-op when present). name may be NULL; newlines are refused. */
int fl_allowlist_add(struct fl_allowlist *al, const uint8_t pk[FL_PUBKEY_BYTES], const char *name);
/* Appends "fl1:... name" to the file at path (created when missing) with an
 * atomic rewrite that keeps every existing line. A file only its owner could
 * read stays so. */
int fl_allowlist_append_file(const char *path, const uint8_t pk[FL_PUBKEY_BYTES],
			     const char *name);

#endif
