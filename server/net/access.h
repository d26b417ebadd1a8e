/* access.h - who may talk to the coordinator (docs/SECURITY.md): its own
 * identity (secret-key file), the client allow-list (re-read on SIGHUP),
 * one-time enrolment tokens, and the identity rule applied to the first
 * protocol frame of an authenticated connection (the Hello's client_id must
 * equal the allow-list name of the client's key, when the entry has one).
 *
 * The transport hands srv_access_authorize to every secure channel it
 * creates (fl_channel_config.authorize, auth_ctx = the srv_access). This
 * module does no networking, keeps no global state and prints nothing:
 * failures come back as enum fl_err with a one-line fl_error_msg().
 */
#ifndef SRV_ACCESS_H
#define SRV_ACCESS_H

#include "enrol.h"
#include "identity.h"

#include <stddef.h>
#include <stdint.h>

struct srv_access_config {
	int insecure;           /* no identity, no allow-list: everything else is ignored */
	const char *key_path;   /* the coordinator's secret-key file (required) */
	const char *allow_path; /* the allow-list file (required; may be missing with enrol) */
	int enrol;              /* accept enrolment tokens (srv_access_enrol_issue) */
	const char *enrol_dir;  /* token files go here (NULL: no files, tests);
				 * checked by srv_enrol_open_dir */
};

struct srv_access;

/* Loads the key and the allow-list. Errors say what is missing and how to
 * make it ("fedloha-server keygen --out FILE"). */
int srv_access_new(const struct srv_access_config *cfg, struct srv_access **out);
void srv_access_free(struct srv_access *a); /* NULL is a no-op */

int srv_access_insecure(const struct srv_access *a);
/* NULL in insecure mode. Valid while a lives. */
const struct fl_identity *srv_access_identity(const struct srv_access *a);
/* Keys in the current allow-list. */
size_t srv_access_count(const struct srv_access *a);

/* A one-time enrolment token for client_id valid for valid_ms, also
 * written to enrol_dir/ID.token when the config has enrol_dir (*path, see
 * srv_enrol_issue) (FL_EINVAL
 * without enrol, for an invalid id, or for an id another key of the
 * allow-list is already bound to). */
int srv_access_enrol_issue(struct srv_access *a, uint64_t valid_ms, const char *client_id,
			   char out[FL_TOKEN_STRING_BYTES], const char **path);
/* Stale *.token files srv_access_new removed from enrol_dir (left by an
 * earlier start; the daemon logs how many). */
size_t srv_access_stale_removed(const struct srv_access *a);
/* 1 when a key of the current allow-list is bound to client_id (its
 * name): the daemon issues no token for it at startup. */
int srv_access_bound(const struct srv_access *a, const char *client_id);
/* Re-reads the allow-list file: on success the new list is in force; on
 * failure (a bad line, an unreadable file, a bad owner or mode) the old one
 * stays and the error says so loudly ("allow-list NOT reloaded, keys
 * removed from it are still admitted: path:LINE: ..."); the daemon logs it
 * at error level. */
int srv_access_reload(struct srv_access *a);
/* Records the mid-tier ids (--tier-ids, comma-separated client ids, NULL =
 * none) after checking that each is the name of a key of the allow-list
 * (FL_EAUTH otherwise): a mid-tier's partial sum speaks for its subtree, so
 * its id may not be one an unbound key could claim. A reload whose new list
 * leaves one of them unbound is refused like a bad file (the old list
 * stays). No-op when insecure. */
int srv_access_set_tiers(struct srv_access *a, const char *ids);

/* fl_channel_authorize_fn: ctx is the srv_access. */
int srv_access_authorize(void *ctx, const uint8_t pk[FL_PUBKEY_BYTES], const uint8_t *token,
			 char *reason, size_t reason_cap);
/* 1 when pk is in the current allow-list. */
int srv_access_listed(const struct srv_access *a, const uint8_t pk[FL_PUBKEY_BYTES]);

/* The identity rule for the first frame (payload without its length) of a
 * connection authenticated as pk. It fails closed: FL_EAUTH (reason in
 * fl_error_msg()) unless pk is in the current allow-list and the frame
 * decodes as a Hello; then, when pk's entry has a name that is a valid
 * client id (1..64 of [A-Za-z0-9._-]), the Hello's client_id must equal
 * that name (an enrolled key is written with the id its token was issued
 * for, so it binds). Other names (free text, a "# ..." note) are comments
 * and bind nothing, but such a key may not take an id bound to another. */
int srv_access_check_first_frame(const struct srv_access *a, const uint8_t pk[FL_PUBKEY_BYTES],
				 const uint8_t *payload, size_t len, uint32_t max_frame);

/* `keygen`: a new key pair written to path (0600), refusing to replace an
 * existing file unless force; pub receives its "fl1:..." form
 * (`fedloha-server keygen`). */
int srv_access_keygen(const char *path, int force, char pub[FL_PUBKEY_STRING_BYTES]);
/* What the refusal to replace a coordinator key adds. */
#define SRV_KEY_REPLACE_HINT "clients pinning it must then be given the new public key"

#endif
