/* identity.c - Ed25519 identities, secret-key files (0600, atomic) and the
 * "fl1:" public-key form. No networking, no allow-lists (allowlist.c). */
#include "identity.h"

#include "errors.h"
#include "fsutil.h"

#include <sodium.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEYFILE_TAG "fedloha-secret-key-v1"

struct fl_identity {
	uint8_t sk[crypto_sign_SECRETKEYBYTES]; /* first: the mlock'ed part */
	uint8_t pk[crypto_sign_PUBLICKEYBYTES];
	int locked;
};

int fl_crypto_init(void)
{
	if (sodium_init() < 0)
		return fl_error_set(FL_EIO, "libsodium failed to initialise");
	return FL_OK;
}

int fl_crypto_alloc(size_t size, const char *what, void **out)
{
	int err = fl_crypto_init();
	if (err)
		return err;
	void *p = calloc(1, size);
	if (!p)
		return fl_error_set(FL_ENOMEM, "%s: out of memory", what);
	*out = p;
	return FL_OK;
}

static int identity_alloc(struct fl_identity **out)
{
	void *p = NULL;
	int err = fl_crypto_alloc(sizeof(struct fl_identity), "identity", &p);
	if (err)
		return err;
	struct fl_identity *id = p;
	/* Best effort: keep the secret out of swap. A low RLIMIT_MEMLOCK is not
	 * an error. */
	id->locked = sodium_mlock(id->sk, sizeof(id->sk)) == 0;
	*out = id;
	return FL_OK;
}

void fl_identity_free(struct fl_identity *id)
{
	if (!id)
		return;
	if (id->locked)
		sodium_munlock(id->sk, sizeof(id->sk)); /* wipes too */
	sodium_memzero(id, sizeof(*id));
	free(id);
}

int fl_identity_generate(struct fl_identity **out)
{
	struct fl_identity *id;
	int err = identity_alloc(&id);
	if (err)
		return err;
	crypto_sign_keypair(id->pk, id->sk);
	*out = id;
	return FL_OK;
}

int fl_identity_from_seed(const uint8_t seed[32], struct fl_identity **out)
{
	struct fl_identity *id;
	int err = identity_alloc(&id);
	if (err)
		return err;
	crypto_sign_seed_keypair(id->pk, id->sk, seed);
	*out = id;
	return FL_OK;
}

int fl_identity_save(const struct fl_identity *id, const char *path)
{
	char b64[sodium_base64_ENCODED_LEN(crypto_sign_SECRETKEYBYTES,
					   sodium_base64_VARIANT_ORIGINAL)];
	char line[sizeof(KEYFILE_TAG) + sizeof(b64) + 2];
	sodium_bin2base64(b64, sizeof(b64), id->sk, sizeof(id->sk), sodium_base64_VARIANT_ORIGINAL);
	int n = snprintf(line, sizeof(line), "%s %s\n", KEYFILE_TAG, b64);
	int err = fl_mkdir_parent(path, 1);
	if (!err)
		err = fl_file_write_atomic(path, line, (size_t)n, 1);
	sodium_memzero(b64, sizeof(b64));
	sodium_memzero(line, sizeof(line));
	return err;
}

int fl_secret_file_read(const char *path, const char *what, char *buf, size_t cap, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block */
	if (fd < 0) {
		int e = errno;
		return fl_error_set(e == ENOENT ? FL_ENOTFOUND : FL_EIO, "%s: %s", path,
				    strerror(e));
	}
	struct stat st;
	if (fstat(fd, &st) != 0) {
		int e = errno;
		close(fd);
		return fl_error_set(FL_EIO, "%s: stat: %s", path, strerror(e));
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return fl_error_set(FL_EINVAL, "%s: not a regular file", path);
	}
	if (st.st_mode & 077) {
		close(fd);
		return fl_error_set(FL_EINVAL,
				    "%s: %s file is accessible by group/others (mode %03o); "
				    "run: chmod 600 %s",
				    path, what, (unsigned)(st.st_mode & 0777), path);
	}
	size_t have = 0;
	for (;;) {
		ssize_t r = read(fd, buf + have, cap - 1 - have);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			close(fd);
			return fl_error_set(FL_EIO, "%s: read: %s", path, strerror(e));
		}
		if (r == 0)
			break;
		have += (size_t)r;
		if (have == cap - 1) {
			close(fd);
			return fl_error_set(FL_ERANGE, "%s: longer than a %s file can be", path,
					    what);
		}
	}
	close(fd);
	buf[have] = '\0';
	*len = have;
	return FL_OK;
}

int fl_identity_load(const char *path, struct fl_identity **out)
{
	char buf[FL_KEYFILE_MAX];
	size_t len = 0;
	int err = fl_secret_file_read(path, "secret key", buf, sizeof(buf), &len);
	if (err)
		return err;
	struct fl_identity *id = NULL;
	size_t tag = strlen(KEYFILE_TAG);
	const char *end = NULL;
	size_t got = 0;
	if (len < tag + 1 || memcmp(buf, KEYFILE_TAG, tag) != 0 || buf[tag] != ' ') {
		err = fl_error_set(FL_EFORMAT, "%s: not a fedloha secret key file (want '%s ...')",
				   path, KEYFILE_TAG);
		goto done;
	}
	err = identity_alloc(&id);
	if (err)
		goto done;
	if (sodium_base642bin(id->sk, sizeof(id->sk), buf + tag + 1, len - tag - 1, NULL, &got,
			      &end, sodium_base64_VARIANT_ORIGINAL) != 0 ||
	    got != sizeof(id->sk) || (*end != '\0' && strcmp(end, "\n") != 0)) {
		err = fl_error_set(FL_EFORMAT, "%s: damaged secret key (bad base64 or length)",
				   path);
		goto done;
	}
	/* The public half must be the one derived from the seed. */
	uint8_t seed[crypto_sign_SEEDBYTES], pk[crypto_sign_PUBLICKEYBYTES];
	uint8_t sk2[crypto_sign_SECRETKEYBYTES];
	crypto_sign_ed25519_sk_to_seed(seed, id->sk);
	crypto_sign_seed_keypair(pk, sk2, seed);
	int same = sodium_memcmp(sk2, id->sk, sizeof(sk2)) == 0;
	sodium_memzero(seed, sizeof(seed));
	sodium_memzero(sk2, sizeof(sk2));
	if (!same) {
		err = fl_error_set(FL_EFORMAT,
				   "%s: damaged secret key (public half does not match)", path);
		goto done;
	}
	memcpy(id->pk, pk, sizeof(pk));
	err = fl_pubkey_check(id->pk);
	if (err) {
		char why[FL_ERROR_MSG_MAX];
		snprintf(why, sizeof(why), "%s", fl_error_msg());
		err = fl_error_set(err, "%s: %s", path, why);
	}
done:
	sodium_memzero(buf, sizeof(buf));
	if (err) {
		fl_identity_free(id);
		return err;
	}
	*out = id;
	return FL_OK;
}

const uint8_t *fl_identity_pk(const struct fl_identity *id)
{
	return id->pk;
}

void fl_identity_public_string(const struct fl_identity *id, char out[FL_PUBKEY_STRING_BYTES])
{
	fl_pubkey_format(id->pk, out);
}

void fl_identity_sign(const struct fl_identity *id, const uint8_t *msg, size_t n,
		      uint8_t sig[FL_SIGNATURE_BYTES])
{
	crypto_sign_detached(sig, NULL, msg, n, id->sk);
}

void fl_pubkey_format(const uint8_t pk[FL_PUBKEY_BYTES], char out[FL_PUBKEY_STRING_BYTES])
{
	memcpy(out, FL_PUBKEY_PREFIX, 4);
	sodium_bin2base64(out + 4, FL_PUBKEY_STRING_BYTES - 4, pk, FL_PUBKEY_BYTES,
			  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

int fl_pubkey_check(const uint8_t pk[FL_PUBKEY_BYTES])
{
	int err = fl_crypto_init();
	if (err)
		return err;
	if (crypto_core_ed25519_is_valid_point(pk))
		return FL_OK;
	char key[FL_PUBKEY_STRING_BYTES];
	fl_pubkey_format(pk, key);
	return fl_error_set(FL_EFORMAT,
			    "public key %s is not a valid Ed25519 key (small-order or "
			    "non-canonical point)",
			    key);
}

int fl_pubkey_parse(const char *s, uint8_t pk[FL_PUBKEY_BYTES])
{
	char sb[64]; /* s may come from a file or a flag: no control bytes in messages */
	int err = fl_crypto_init();
	if (err)
		return err;
	fl_error_safe_str(s, sb, sizeof(sb));
	if (strncmp(s, FL_PUBKEY_PREFIX, 4) != 0)
		return fl_error_set(FL_EFORMAT, "public key '%s' does not start with '%s'", sb,
				    FL_PUBKEY_PREFIX);
	size_t n = strlen(s + 4);
	size_t want = FL_PUBKEY_STRING_BYTES - 1 - 4;
	uint8_t tmp[FL_PUBKEY_BYTES];
	size_t got = 0;
	if (n != want)
		return fl_error_set(FL_EFORMAT,
				    "public key '%s' has %zu characters after '%s', want %zu", sb,
				    n, FL_PUBKEY_PREFIX, want);
	if (sodium_base642bin(tmp, sizeof(tmp), s + 4, n, NULL, &got, NULL,
			      sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
	    got != sizeof(tmp))
		return fl_error_set(FL_EFORMAT, "public key '%s' is not valid base64url", sb);
	/* The canonical encoding only: re-encode and compare, so one key has
	 * exactly one spelling. */
	char back[FL_PUBKEY_STRING_BYTES];
	fl_pubkey_format(tmp, back);
	if (strcmp(back, s) != 0)
		return fl_error_set(FL_EFORMAT, "public key '%s' is not in canonical form", sb);
	err = fl_pubkey_check(tmp);
	if (err)
		return err;
	memcpy(pk, tmp, sizeof(tmp));
	return FL_OK;
}

int fl_pubkey_parse_arg(const char *arg, uint8_t pk[FL_PUBKEY_BYTES])
{
	if (strncmp(arg, FL_PUBKEY_PREFIX, 4) == 0)
		return fl_pubkey_parse(arg, pk);
	char *text = NULL;
	size_t len = 0;
	int err = fl_file_read_all(arg, 64 * 1024, &text, &len);
	if (err) {
		char why[FL_ERROR_MSG_MAX];
		snprintf(why, sizeof(why), "%s", fl_error_msg());
		return fl_error_set(err,
				    "server key '%s': not an 'fl1:' key nor a readable file (%s)",
				    arg, why);
	}
	err = fl_error_set(FL_EFORMAT, "%s: no 'fl1:' public key found", arg);
	for (char *line = text; line && *line;) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = '\0';
		line += strspn(line, " \t\r");
		if (*line && *line != '#') {
			line[strcspn(line, " \t\r")] = '\0';
			err = fl_pubkey_parse(line, pk);
			if (err) {
				char why[FL_ERROR_MSG_MAX];
				snprintf(why, sizeof(why), "%s", fl_error_msg());
				err = fl_error_set(err, "%s: %s", arg, why);
			}
			break;
		}
		line = nl ? nl + 1 : NULL;
	}
	free(text);
	return err;
}
