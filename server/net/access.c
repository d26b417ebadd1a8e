/* access.c - the coordinator's admission state (access.h): its identity,
 * the allow-list and its reload, enrolment tokens (through srv_auth_check,
 * enrol.h) and the Hello identity rule. No sockets, no printing.
 */
#include "access.h"

#include "allowlist.h"
#include "errors.h"
#include "keys_cmd.h"
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct srv_access {
	int insecure;
	char *allow_path;
	struct fl_identity *id;
	struct srv_allowlist *allow; /* swapped by reload; srv_auth holds its address */
	struct srv_enrol *enrol;     /* NULL without enrolment */
	size_t stale;                /* token files removed at startup */
	struct srv_auth auth;
	char *tiers; /* --tier-ids, comma-separated, or NULL */
};

int srv_access_new(const struct srv_access_config *cfg, struct srv_access **out)
{
	*out = NULL;
	struct srv_access *a = calloc(1, sizeof(*a));
	if (!a)
		return fl_error_set(FL_ENOMEM, "out of memory");
	a->insecure = !!cfg->insecure;
	if (a->insecure) {
		*out = a;
		return FL_OK;
	}
	int err = FL_OK;
	if (!cfg->key_path) {
		err = fl_error_set(FL_EINVAL,
				   "no --key: the coordinator needs its secret key (make "
				   "one with 'fedloha-server keygen --out FILE'), or run "
				   "with --insecure on a trusted network");
		goto fail;
	}
	if (!cfg->allow_path) {
		err = fl_error_set(FL_EINVAL,
				   "no --allow: the coordinator needs an allow-list file "
				   "of client keys (lines 'fl1:... NAME'; clients print "
				   "their key with 'fedloha-client keygen')");
		goto fail;
	}
	struct stat st;
	if (stat(cfg->key_path, &st) != 0) {
		err = fl_error_set(FL_ENOTFOUND,
				   "%s: no such key file (make it with "
				   "'fedloha-server keygen --out %s')",
				   cfg->key_path, cfg->key_path);
		goto fail;
	}
	if ((err = fl_identity_load(cfg->key_path, &a->id)))
		goto fail;
	if (!(a->allow_path = strdup(cfg->allow_path))) {
		err = fl_error_set(FL_ENOMEM, "out of memory");
		goto fail;
	}
	err = srv_allowlist_load(cfg->allow_path, &a->allow);
	if (err == FL_ENOTFOUND && cfg->enrol) {
		err = srv_allowlist_new(&a->allow); /* enrolment creates the file */
	} else if (err == FL_ENOTFOUND) {
		err = fl_error_set(FL_ENOTFOUND,
				   "%s: no such allow-list (write one line 'fl1:... "
				   "NAME' per client key, or start with --enrol ID)",
				   cfg->allow_path);
	}
	if (err)
		goto fail;
	if (cfg->enrol && (err = srv_enrol_new(&a->enrol)))
		goto fail;
	if (cfg->enrol && cfg->enrol_dir &&
	    (err = srv_enrol_open_dir(a->enrol, cfg->enrol_dir, &a->stale)))
		goto fail;
	a->auth.allow = &a->allow;
	a->auth.allow_path = a->allow_path;
	a->auth.enrol = a->enrol;
	*out = a;
	return FL_OK;
fail:
	srv_access_free(a);
	return err;
}

void srv_access_free(struct srv_access *a)
{
	if (!a)
		return;
	fl_identity_free(a->id);
	srv_allowlist_free(a->allow);
	srv_enrol_free(a->enrol);
	free(a->allow_path);
	free(a->tiers);
	free(a);
}

int srv_access_insecure(const struct srv_access *a)
{
	return a->insecure;
}

const struct fl_identity *srv_access_identity(const struct srv_access *a)
{
	return a->id;
}

size_t srv_access_count(const struct srv_access *a)
{
	return a->allow ? srv_allowlist_count(a->allow) : 0;
}

int srv_access_enrol_issue(struct srv_access *a, uint64_t valid_ms, const char *client_id,
			   char out[FL_TOKEN_STRING_BYTES], const char **path)
{
	if (!a->enrol)
		return fl_error_set(FL_EINVAL, "enrolment is not enabled (--enrol)");
	if (client_id && srv_allowlist_has_name(a->allow, client_id))
		return fl_error_set(FL_EINVAL,
				    "--enrol %.64s: that client id is already bound to a key in "
				    "%s (remove its line to enrol a new key)",
				    client_id, a->allow_path);
	return srv_enrol_issue(a->enrol, srv_enrol_now_ms(), valid_ms, client_id, out, path);
}

size_t srv_access_stale_removed(const struct srv_access *a)
{
	return a->stale;
}

int srv_access_bound(const struct srv_access *a, const char *client_id)
{
	return a->allow && client_id && srv_allowlist_has_name(a->allow, client_id);
}

/* FL_OK when every comma-separated id of tiers is the name of a key of al;
 * else FL_EAUTH naming the first id that is not. */
static int tiers_bound(const struct srv_allowlist *al, const char *tiers)
{
	for (const char *p = tiers; p && *p;) {
		size_t n = strcspn(p, ",");
		char id[FL_WIRE_CLIENT_ID_MAX + 1];
		snprintf(id, sizeof(id), "%.*s", (int)(n > FL_WIRE_CLIENT_ID_MAX ? 0 : n), p);
		if (!srv_allowlist_has_name(al, id))
			return fl_error_set(FL_EAUTH,
					    "mid-tier id '%.64s' (--tier-ids) is not bound to a "
					    "key of the allow-list (a line 'fl1:... %.64s'): any "
					    "key could claim it",
					    id, id);
		p += n + (p[n] == ',');
	}
	return FL_OK;
}

int srv_access_set_tiers(struct srv_access *a, const char *ids)
{
	if (a->insecure)
		return FL_OK;
	int err = tiers_bound(a->allow, ids);
	if (err)
		return err;
	free(a->tiers);
	a->tiers = NULL;
	if (ids && *ids && !(a->tiers = strdup(ids)))
		return fl_error_set(FL_ENOMEM, "out of memory");
	return FL_OK;
}

int srv_access_reload(struct srv_access *a)
{
	if (a->insecure)
		return FL_OK;
	struct srv_allowlist *al = NULL;
	int err = srv_allowlist_load(a->allow_path, &al);
	if (!err && (err = tiers_bound(al, a->tiers)))
		srv_allowlist_free(al);
	if (err) {
		char why[FL_ERROR_MSG_MAX];
		snprintf(why, sizeof(why), "%s", fl_error_msg());
		return fl_error_set(err,
				    "allow-list NOT reloaded, keys removed from it are still "
				    "admitted: %s (fix the file and send SIGHUP again)",
				    why);
	}
	srv_allowlist_free(a->allow);
	a->allow = al;
	return FL_OK;
}

int srv_access_authorize(void *ctx, const uint8_t pk[FL_PUBKEY_BYTES], const uint8_t *token,
			 char *reason, size_t reason_cap)
{
	struct srv_access *a = ctx;
	return srv_auth_check(&a->auth, pk, token, reason, reason_cap);
}

int srv_access_listed(const struct srv_access *a, const uint8_t pk[FL_PUBKEY_BYTES])
{
	return a->allow && srv_allowlist_contains(a->allow, pk);
}

/* The Hello of a connection authenticated as pk, decoded into *env, and
 * pk's allow-list name in *name (one lookup: membership and name); every
 * other outcome is FL_EAUTH with the reason set. */
static int first_hello(const struct srv_access *a, const uint8_t *pk, const uint8_t *payload,
		       size_t len, uint32_t max_frame, fl_envelope **env, const char **name)
{
	char key[FL_PUBKEY_STRING_BYTES];
	fl_pubkey_format(pk, key);
	*name = a->allow ? srv_allowlist_name(a->allow, pk) : NULL;
	if (!*name)
		return fl_error_set(FL_EAUTH, "client key %s is not in the allow-list", key);
	if (fl_wire_decode(payload, len, max_frame, env) != FL_OK)
		return fl_error_set(FL_EAUTH,
				    "the first frame of key %s does not decode, so it names no "
				    "client id",
				    key);
	if ((*env)->body_case != FEDLOHA__V1__ENVELOPE__BODY_HELLO) {
		fl_wire_envelope_free(*env);
		*env = NULL;
		return fl_error_set(FL_EAUTH, "the first frame of key %s is not a Hello", key);
	}
	return FL_OK;
}

int srv_access_check_first_frame(const struct srv_access *a, const uint8_t pk[FL_PUBKEY_BYTES],
				 const uint8_t *payload, size_t len, uint32_t max_frame)
{
	fl_envelope *env = NULL;
	const char *name = NULL;
	int err = first_hello(a, pk, payload, len, max_frame, &env, &name);
	if (err)
		return err;
	/* a name binds only when it could be a client id; free text and '#'
	 * notes are comments */
	int binds = fl_wire_client_id_valid(name);
	const char *id = env->hello->client_id ? env->hello->client_id : "";
	char key[FL_PUBKEY_STRING_BYTES];
	fl_pubkey_format(pk, key);
	if (!binds) {
		/* an unbound key (a free-text name) may not take the id another
		 * key is bound to */
		if (fl_wire_client_id_valid(id) && srv_allowlist_has_name(a->allow, id))
			err = fl_error_set(FL_EAUTH,
					   "client id '%.64s' belongs to another key on the "
					   "allow-list; key %s may not use it",
					   id, key);
	} else if (strcmp(id, name) != 0) {
		err = fl_error_set(FL_EAUTH,
				   "client id '%.64s' does not match the allow-list name "
				   "'%.64s' of key %s (run the client with --id %.64s)",
				   id, name, key, name);
	}
	fl_wire_envelope_free(env);
	return err;
}

int srv_access_keygen(const char *path, int force, char pub[FL_PUBKEY_STRING_BYTES])
{
	return fl_identity_keygen(path, force, SRV_KEY_REPLACE_HINT, pub);
}
