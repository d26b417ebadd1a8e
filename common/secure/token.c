/* token.c - the text form of one-time enrolment tokens, shared by the edge
 * client (which presents one) and the coordinator (which issues them, see
 * server/net/enrol.c). */
#include "token.h"

#include "errors.h"
#include "identity.h"

#include <sodium.h>

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
