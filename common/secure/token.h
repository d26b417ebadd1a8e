/* token.h - one-time enrolment tokens as the client sees them: 32 random
 * bytes shown as 43 characters of unpadded base64url. Issuing, expiring and
 * checking tokens is the coordinator's business (server/net/enrol.h). */
#ifndef FL_TOKEN_H
#define FL_TOKEN_H

#include <stdint.h>

#define FL_TOKEN_BYTES 32
#define FL_TOKEN_STRING_BYTES 44 /* 43 characters + NUL */

/* Parses the 43-character form into token; FL_EFORMAT otherwise. */
int fl_token_parse(const char *s, uint8_t token[FL_TOKEN_BYTES]);

#endif
