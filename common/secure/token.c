/* token.c - the text form of one-time enrolment tokens, shared by the edge
 * client (which presents one) and the coordinator (which issues them, see
 * server/net/enrol.c). */
#include "token.h"

#include "errors.h"
#include "identity.h"

#include <sodium.h>

#include <stdio.h>
#include <string.h>

int fl_token_parse(const char *s, uint8_t token[FL_TOKEN_BYTES])
{
	int err = fl_crypto_init();
	if (err)
		return err;
	size_t got = 0;
	const char *end = NULL;
	if (strlen(s) != FL_TOKEN_STRING_BYTES - 1 ||
	    sodium_base642bin(token, FL_TOKEN_BYTES, s, strlen(s), NULL, &got, &end,
			      sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
	    got != FL_TOKEN_BYTES || *end != '\0')
		return fl_error_set(FL_EFORMAT,
				    "enrolment token must be %d characters of base64url",
				    FL_TOKEN_STRING_BYTES - 1);
	return FL_OK;
}

int fl_token_load(const char *path, char out[FL_TOKEN_STRING_BYTES])
{
	char buf[128];
	size_t len = 0;
	int err = fl_secret_file_read(path, "enrolment token", buf, sizeof(buf), &len);
	if (err)
		return err;
	while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		buf[--len] = '\0';
	uint8_t raw[FL_TOKEN_BYTES];
	err = fl_token_parse(buf, raw);
	sodium_memzero(raw, sizeof(raw));
	if (err) {
		sodium_memzero(buf, sizeof(buf));
		return fl_error_set(err,
				    "%s: not an enrolment token file (want one line of %d "
				    "base64url characters)",
				    path, FL_TOKEN_STRING_BYTES - 1);
	}
	memcpy(out, buf, FL_TOKEN_STRING_BYTES);
	sodium_memzero(buf, sizeof(buf));
	return FL_OK;
}
