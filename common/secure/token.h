/* token.h - one-time enrolment tokens as the client sees them: 32 random
 * bytes shown as 43 characters of unpadded base64url, kept in a token file
 * (the 43 characters and a newline, mode 0600). Issuing, expiring and
 * checking tokens is the coordinator's business (server/net/enrol.h). */
#ifndef FL_TOKEN_H
#define FL_TOKEN_H

#include <stdint.h>

#define FL_TOKEN_BYTES 32
#define FL_TOKEN_STRING_BYTES 44 /* 43 characters + NUL */

/* Parses the 43-character form into token; FL_EFORMAT otherwise. */
int fl_token_parse(const char *s, uint8_t token[FL_TOKEN_BYTES]);
/* Reads a token file (one line; refused when group or others may access
 * it, like key files) into out, checked with fl_token_parse. Errors name
 * the file. */
int fl_token_load(const char *path, char out[FL_TOKEN_STRING_BYTES]);
/* The systemd credential a client reads its token from when
 * $CREDENTIALS_DIRECTORY is set (LoadCredential=fedloha-enrol-token:FILE). */
#define FL_TOKEN_CREDENTIAL "fedloha-enrol-token"

#endif
