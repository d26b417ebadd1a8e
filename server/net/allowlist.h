/* allowlist.h - the set of client public keys a coordinator accepts.
 *
 * File format (one key a line):
 *     # comment
 *     fl1:3q2-7wAAAA...  alice-laptop      <- the rest of the line is a name
 * Blank lines and lines starting with '#' are ignored. A bad line makes the
 * whole file fail with "path:LINE: reason" (the first bad line, and how many
 * more there are). Duplicate keys keep the first name.
 *
 * In memory the keys form a sorted set with two hash indexes (SipHash,
 * crypto_shorthash, under a key drawn at random for each set): by public
 * key and by name. A key lookup costs O(1) whatever the list's size: the
 * slots of its hash, then one sodium_memcmp on the entry whose hash
 * matches. Its time can tell whether a key is listed, nothing else (see
 * docs/SECURITY.md: the coordinator looks a key up only once its holder
 * has proved it has the secret key). Reloading (SIGHUP) builds a new set and swaps it in
 * only when the file parsed cleanly. This module does no networking and
 * keeps no global state.
 */
#ifndef SRV_ALLOWLIST_H
#define SRV_ALLOWLIST_H

#include "identity.h"

#include <stddef.h>
#include <stdint.h>

#define SRV_ALLOWLIST_NAME_MAX 128
#define SRV_ALLOWLIST_FILE_MAX (16u << 20)

struct srv_allowlist;

int srv_allowlist_new(struct srv_allowlist **out); /* empty */
/* Parses text (len bytes; source names it in errors). */
int srv_allowlist_parse(const char *text, size_t len, const char *source,
			struct srv_allowlist **out);
/* Reads a file; FL_ENOTFOUND when it does not exist. Refuses (FL_EINVAL,
 * one line saying what to fix) a file writable by group or others, or
 * owned by neither this process's user nor root. */
int srv_allowlist_load(const char *path, struct srv_allowlist **out);
/* Loads path; on success frees *current and replaces it, on failure returns
 * the error and leaves *current untouched. */
int srv_allowlist_reload(const char *path, struct srv_allowlist **current);
void srv_allowlist_free(struct srv_allowlist *al);

size_t srv_allowlist_count(const struct srv_allowlist *al);
/* 1 when pk is in the set. */
int srv_allowlist_contains(const struct srv_allowlist *al, const uint8_t pk[FL_PUBKEY_BYTES]);
/* The name written after pk ("" when none), or NULL when pk is absent. Valid
 * until the set is freed or changed. */
const char *srv_allowlist_name(const struct srv_allowlist *al, const uint8_t pk[FL_PUBKEY_BYTES]);
/* 1 when some entry carries exactly this name (names are not secret: a
 * plain comparison). */
int srv_allowlist_has_name(const struct srv_allowlist *al, const char *name);
/* Adds pk (no-op when present). name may be NULL; newlines are refused. */
int srv_allowlist_add(struct srv_allowlist *al, const uint8_t pk[FL_PUBKEY_BYTES],
		      const char *name);
/* Appends "fl1:... name" to the file at path (created when missing) with an
 * atomic rewrite that keeps every existing line, read and rewritten under
 * an exclusive flock on "<path>.lock" (so two enrolments, or a scripted
 * rewrite under `flock <path>.lock`, lose no line). The lock is never
 * waited for: 1 (nothing written, the reason in fl_error_msg()) when
 * another process holds it. FL_EINVAL when the file as read under the lock
 * already lists pk or binds name to another key (a hand edit not yet
 * reloaded), or has a bad line. The file must pass srv_allowlist_load's owner
 * and mode check. A file only its owner could read stays so. */
int srv_allowlist_append_file(const char *path, const uint8_t pk[FL_PUBKEY_BYTES],
			      const char *name);

#endif
