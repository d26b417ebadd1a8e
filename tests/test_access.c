/* test_access.c - the coordinator's identity rule for the first frame: a key
 * bound to a client id must use it, and an unbound key (enrolled, or a
 * free-text name) may not take an id bound to another key. */
#include "access.h"
#include "errors.h"
#include "identity.h"
#include "token.h"
#include "testutil.h"
#include "wire.h"
#include "wireutil.h"

#include <stdio.h>
#include <string.h>

static struct fl_buf *hello(const char *id)
{
	Fedloha__V1__Hello h = FEDLOHA__V1__HELLO__INIT;
	h.protocol_version = FL_WIRE_PROTOCOL_VERSION;
	h.client_id = (char *)id;
	fl_envelope env = fl_test_envelope(&h.base);
	struct fl_buf *b = NULL;
	FL_CHECK(fl_wire_encode(&env, &b) == FL_OK);
	return b;
}

static int check(struct srv_access *a, const uint8_t *pk, const char *id)
{
	struct fl_buf *b = hello(id);
	int rc = srv_access_check_first_frame(a, pk, b->data + 4, b->len - 4, 1u << 20);
	fl_buf_unref(b);
	return rc;
}

static void test_identity_binding(void)
{
	const char *dir = fl_test_tmpdir("access");
	char key[512], allow[512], pa[FL_PUBKEY_STRING_BYTES], pb[FL_PUBKEY_STRING_BYTES];
	snprintf(key, sizeof(key), "%s/server.key", dir);
	snprintf(allow, sizeof(allow), "%s/allow.txt", dir);
	char dummy[FL_PUBKEY_STRING_BYTES];
	FL_CHECK(srv_access_keygen(key, 0, dummy) == FL_OK);
	struct fl_identity *a = NULL, *b = NULL;
	FL_CHECK(fl_identity_generate(&a) == FL_OK);
	FL_CHECK(fl_identity_generate(&b) == FL_OK);
	if (!a || !b)
		return;
	fl_identity_public_string(a, pa);
	fl_identity_public_string(b, pb);
	FILE *f = fopen(allow, "w");
	FL_CHECK(f != NULL);
	if (!f)
		return;
	fprintf(f, "%s alice\n%s # enrolled 2026-11-28T12:00:00Z\n", pa, pb);
	fclose(f);
	struct srv_access_config cfg = {0, key, allow, 0};
	struct srv_access *acc = NULL;
	FL_CHECK(srv_access_new(&cfg, &acc) == FL_OK);
	if (acc) {
		FL_CHECK(check(acc, fl_identity_pk(a), "alice") == FL_OK);
		FL_CHECK(check(acc, fl_identity_pk(a), "bob") == FL_EAUTH);
		FL_CHECK(check(acc, fl_identity_pk(b), "bob") == FL_OK);
		/* the squatting case: the unbound key claims alice's id */
		FL_CHECK(check(acc, fl_identity_pk(b), "alice") == FL_EAUTH);
		FL_CHECK(strstr(fl_error_msg(), "belongs to another key") != NULL);
	}
	srv_access_free(acc);
	fl_identity_free(a);
	fl_identity_free(b);
}

/* An enrolment token is issued for a client id: the enrolled key is written
 * as "fl1:... ID" and may only say Hello as ID. */
static void test_enrolment_binds_id(void)
{
	const char *dir = fl_test_tmpdir("access-enrol");
	char key[512], allow[512], dummy[FL_PUBKEY_STRING_BYTES];
	snprintf(key, sizeof(key), "%s/server.key", dir);
	snprintf(allow, sizeof(allow), "%s/allow.txt", dir);
	FL_CHECK(srv_access_keygen(key, 0, dummy) == FL_OK);
	struct fl_identity *a = NULL, *b = NULL;
	FL_CHECK(fl_identity_generate(&a) == FL_OK && fl_identity_generate(&b) == FL_OK);
	struct srv_access_config cfg = {0, key, allow, 1};
	struct srv_access *acc = NULL;
	FL_CHECK(srv_access_new(&cfg, &acc) == FL_OK);
	if (!acc || !a || !b)
		return;
	char tok[FL_TOKEN_STRING_BYTES], tok2[FL_TOKEN_STRING_BYTES], reason[256] = "";
	uint8_t raw[FL_TOKEN_BYTES], raw2[FL_TOKEN_BYTES];
	FL_CHECK(srv_access_enrol_issue(acc, 60000, "site-2", tok) == FL_OK);
	FL_CHECK(srv_access_enrol_issue(acc, 60000, "site-2", tok2) == FL_OK);
	FL_CHECK(fl_token_parse(tok, raw) == FL_OK && fl_token_parse(tok2, raw2) == FL_OK);
	FL_CHECK(srv_access_authorize(acc, fl_identity_pk(a), raw, reason, sizeof(reason)) ==
		 FL_OK);
	FL_CHECK(check(acc, fl_identity_pk(a), "site-2") == FL_OK);
	FL_CHECK(check(acc, fl_identity_pk(a), "site-9") == FL_EAUTH);
	/* the id is now bound: a second token for it admits no other key */
	FL_CHECK(srv_access_authorize(acc, fl_identity_pk(b), raw2, reason, sizeof(reason)) ==
		 FL_ENOTFOUND);
	FL_CHECK_MSG(strstr(reason, "already bound") != NULL, "%s", reason);
	FL_CHECK(srv_access_enrol_issue(acc, 60000, "site-2", tok) == FL_EINVAL);
	/* the file says the same after a reload */
	FL_CHECK(srv_access_reload(acc) == FL_OK && srv_access_count(acc) == 1);
	FL_CHECK(check(acc, fl_identity_pk(a), "site-9") == FL_EAUTH);
	srv_access_free(acc);
	fl_identity_free(a);
	fl_identity_free(b);
}

int main(void)
{
	FL_RUN(test_identity_binding);
	FL_RUN(test_enrolment_binds_id);
	return fl_test_main_end();
}
