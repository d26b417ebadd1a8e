/* enrol.h - one-time enrolment tokens and the coordinator's authorisation
 * check used by the secure channel.
 *
 * A token is 32 random bytes shown as 43 characters of unpadded base64url,
 * issued FOR one client id. The coordinator issues one (valid for a few
 * minutes), hands it to the new client out of band, and the client
 * presents it inside the encrypted part of the handshake; when it is still
 * valid the client's key is appended to the allow-list file as
 * "fl1:... ID" (and to the in-memory set with name ID), so the allow-list's
 * id binding applies: that key may only say Hello as ID. The token is then
 * gone. Tokens live in memory only (a restart forgets them) and are
 * compared in constant time against every stored token. A token issued
 * with a folder (srv_enrol_issue) is also written to a file there: the file
 * is removed when the token is used, when the store is next touched after
 * the token expired, or when the store is freed. Times are explicit milliseconds
 * of a monotonic clock (srv_enrol_now_ms), so tests control expiry.
 * No networking, no global state.
 */
#ifndef SRV_ENROL_H
#define SRV_ENROL_H

#include "allowlist.h"
#include "token.h"

#include <stddef.h>
#include <stdint.h>

#define SRV_ENROL_MAX_TOKENS 1024

struct srv_enrol;

int srv_enrol_new(struct srv_enrol **out);
void srv_enrol_free(struct srv_enrol *e); /* wipes; NULL is a no-op */
/* CLOCK_MONOTONIC in milliseconds. */
uint64_t srv_enrol_now_ms(void);
/* Opens dir as the token folder: made 0700 when missing (its parents 0700
 * too), opened O_DIRECTORY | O_NOFOLLOW (a symbolic link is refused), and
 * refused (FL_EINVAL, a one-line reason) unless owned by the effective uid
 * and neither group- nor world-writable. Then removes every *.token file
 * in it (left by an earlier start: tokens live in memory only) and stores
 * how many in *stale (when not NULL). Once per store, before any token is
 * issued (else FL_EINVAL). */
int srv_enrol_open_dir(struct srv_enrol *e, const char *dir, size_t *stale);
/* Issues a token for client_id (a valid Hello client id, else FL_EINVAL)
 * valid until now_ms + valid_ms; writes its string form to out. With a
 * token folder, also the token file DIR/ID.token (created O_EXCL |
 * O_NOFOLLOW, mode 0600; one left there meanwhile is replaced),
 * removed when the token is used, found expired or the store is freed;
 * FL_EINVAL while a token for that id is outstanding. *path (when
 * path is not NULL) is its name or NULL, valid while the
 * token lives. FL_ERANGE when SRV_ENROL_MAX_TOKENS unexpired tokens are
 * outstanding. */
int srv_enrol_issue(struct srv_enrol *e, uint64_t now_ms, uint64_t valid_ms, const char *client_id,
		    char out[FL_TOKEN_STRING_BYTES], const char **path);
/* Consumes a valid token: FL_OK, else FL_ENOTFOUND ("unknown, used or
 * expired"). Expired tokens are dropped on the way. */
int srv_enrol_consume(struct srv_enrol *e, const uint8_t token[FL_TOKEN_BYTES], uint64_t now_ms);
/* Unexpired tokens outstanding. */
size_t srv_enrol_count(struct srv_enrol *e, uint64_t now_ms);

/* The coordinator's policy, for fl_channel_config.authorize / auth_ctx:
 * a key in *allow passes (a token it presents is left unused); otherwise a
 * valid token enrols it as the token's client id: "fl1:... ID" is appended
 * to allow_path (when set) and added to *allow, then the token is consumed.
 * Refused when another key of *allow already carries that id. enrol may be NULL (no
 * enrolment); now_ms 0 means srv_enrol_now_ms(). */
struct srv_auth {
	struct srv_allowlist **allow; /* the daemon's current set (swapped on reload) */
	const char *allow_path;
	struct srv_enrol *enrol;
	uint64_t now_ms;
};
/* Returns 0 when admitted, else FL_ENOTFOUND / FL_EIO with a one-line reason
 * in reason (also told to the client). */
int srv_auth_check(void *auth, const uint8_t pk[FL_PUBKEY_BYTES], const uint8_t *token,
		   char *reason, size_t reason_cap);

#endif
