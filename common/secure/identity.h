/* identity.h - long-term Ed25519 identities of coordinators and clients
 * (libsodium crypto_sign), their secret-key files and the copy-paste form
 * of public keys. See docs/SECURITY.md.
 *
 * Secret-key file: one line "fedloha-secret-key-v1 <base64 of the 64-byte
 * Ed25519 secret key>\n", written atomically with mode 0600; loading refuses
 * a file that group or others may read. Public key: "fl1:" followed by the
 * 32 bytes in unpadded base64url (47 characters, one line).
 *
 * The secret key never leaves identity.c: other modules sign through
 * fl_identity_sign. The key is held in mlock'ed memory where the system
 * allows it and wiped on free. This module does no networking.
 */
#ifndef FL_IDENTITY_H
#define FL_IDENTITY_H

#include <stddef.h>
#include <stdint.h>

#define FL_PUBKEY_BYTES 32
#define FL_SIGNATURE_BYTES 64
#define FL_PUBKEY_PREFIX "fl1:"
#define FL_PUBKEY_STRING_BYTES 48 /* "fl1:" + 43 base64url characters + NUL */
#define FL_KEYFILE_MAX 512

struct fl_identity;

/* Initialises libsodium once (thread-safe, idempotent). Every function of
 * identity / allowlist / enrol / channel calls it; callers need not. */
int fl_crypto_init(void);
/* fl_crypto_init, then size zeroed bytes in *out (freed with free()); or
 * FL_ENOMEM "WHAT: out of memory", *out untouched. */
int fl_crypto_alloc(size_t size, const char *what, void **out);

/* A fresh key pair from the operating system's random generator. */
int fl_identity_generate(struct fl_identity **out);
/* The key pair of a 32-byte seed (deterministic: tests, fuzzing). */
int fl_identity_from_seed(const uint8_t seed[32], struct fl_identity **out);
/* Writes the secret-key file (mode 0600, atomic replace), creating its
 * folder (0700) when missing. Overwrites an
 * existing file: the keygen commands check for one first. */
int fl_identity_save(const struct fl_identity *id, const char *path);
/* Reads a secret-key file. Refuses (FL_EINVAL, "chmod 600 <path>") a file
 * readable or writable by group or others, and a file whose public half does
 * not match its seed or fails fl_pubkey_check. */
int fl_identity_load(const char *path, struct fl_identity **out);
void fl_identity_free(struct fl_identity *id); /* wipes; NULL is a no-op */
/* Reads a secret file (a key, an enrolment token) of at most cap-1 bytes
 * into buf, NUL-terminated. Refuses (FL_EINVAL, "PATH: WHAT file is
 * accessible by group/others ...; run: chmod 600 PATH") a file group or
 * others may access, and anything but a regular file. */
int fl_secret_file_read(const char *path, const char *what, char *buf, size_t cap, size_t *len);

const uint8_t *fl_identity_pk(const struct fl_identity *id);
/* "fl1:..." of this identity's public key. */
void fl_identity_public_string(const struct fl_identity *id, char out[FL_PUBKEY_STRING_BYTES]);
/* Detached Ed25519 signature of msg. */
void fl_identity_sign(const struct fl_identity *id, const uint8_t *msg, size_t n,
		      uint8_t sig[FL_SIGNATURE_BYTES]);

/* "fl1:..." of a public key. */
void fl_pubkey_format(const uint8_t pk[FL_PUBKEY_BYTES], char out[FL_PUBKEY_STRING_BYTES]);
/* The one validity rule for a peer's or a listed Ed25519 public key, used
 * by the handshake (both long-term keys), enrolment, the allow-list parser,
 * fl_pubkey_parse and key-file loading: a canonical encoding of a point in
 * the prime-order subgroup (crypto_core_ed25519_is_valid_point; refuses
 * small-order points and points with a small-order component, which
 * crypto_sign_verify_detached may accept). FL_EFORMAT "public key fl1:...
 * is not a valid Ed25519 key" otherwise. */
int fl_pubkey_check(const uint8_t pk[FL_PUBKEY_BYTES]);
/* Parses exactly one "fl1:..." key (no surrounding spaces). FL_EFORMAT with
 * a one-line reason: missing prefix, bad base64url, wrong length, not a
 * valid Ed25519 point. */
int fl_pubkey_parse(const char *s, uint8_t pk[FL_PUBKEY_BYTES]);
/* For a --server-key flag: the argument itself when it starts with "fl1:",
 * else a file whose first non-blank, non-'#' line starts with a key. */
int fl_pubkey_parse_arg(const char *arg, uint8_t pk[FL_PUBKEY_BYTES]);

#endif
