/* session_desc.c - the model description a Welcome names: taken inline or
 * fetched (BaseRequest with the description's SHA-256, BaseChunk frames
 * into memory through the base's fetch in state.c), checked against its
 * SHA-256, parsed (origin "Welcome"), built, and the local data checked
 * against it. A description that cannot be built is refused: Error with
 * its code and one line, then the connection closes. Not here: the
 * built-in path and the rest of the Welcome (session.c), the loha base
 * (session_base.c). */
#include "session_impl.h"

#include "errors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_session_refuse(struct cli_session *s, int err)
{
	char msg[FL_ERROR_MSG_MAX];
	snprintf(msg, sizeof(msg), "%s", fl_error_msg());
	s->refused_model = 1;
	cli_session_fail(s, err, msg);
	return fl_error_set(err, "%s", msg);
}

/* Builds the model of M from description text (its SHA-256 checked). */
static int build(struct cli_session *s, const Fedloha__V1__ModelSpec *M, uint64_t seed,
		 const char *text, size_t len)
{
	uint8_t got[CLI_SHA256_BYTES];
	crypto_hash_sha256(got, (const unsigned char *)text, len);
	if (len != M->description_bytes ||
	    sodium_memcmp(got, M->description_sha256.data, CLI_SHA256_BYTES) != 0)
		return cli_session_refuse(
			s, fl_error_set(FL_EFORMAT,
					"Welcome: the model description does not match "
					"its SHA-256 (%zu bytes)",
					len));
	if (s->busy)
		return fl_error_set(FL_EINVAL, "the server's model changed while a job runs");
	struct fl_model_desc *d = NULL;
	int err = fl_model_desc_parse(text, len, "Welcome", &d);
	if (!err)
		err = cli_session_build_model(s, M, d, seed);
	fl_model_desc_free(d);
	if (err)
		return cli_session_refuse(s, err);
	return cli_session_welcome_base(s, M);
}

static int request(struct cli_session *s, const Fedloha__V1__ModelSpec *M, uint64_t seed)
{
	size_t n = fedloha__v1__model_spec__get_packed_size(M);
	uint8_t *p = malloc(n ? n : 1);
	if (!p)
		return fl_error_set(FL_ENOMEM, "out of memory");
	fedloha__v1__model_spec__pack(M, p);
	int err = cli_desc_fetch_begin(&s->fetch, M->description_bytes, M->description_sha256.data);
	if (err) {
		free(p);
		return err;
	}
	free(s->pending_spec);
	s->pending_spec = p;
	s->pending_len = n;
	s->pending_seed = seed;
	Fedloha__V1__BaseRequest br = FEDLOHA__V1__BASE_REQUEST__INIT;
	br.sha256 = M->description_sha256;
	fl_envelope env = FEDLOHA__V1__ENVELOPE__INIT;
	env.body_case = FEDLOHA__V1__ENVELOPE__BODY_BASE_REQUEST;
	env.base_request = &br;
	s->st = CLI_ST_BASE;
	return cli_session_send_env(s, &env);
}

int cli_session_welcome_desc(struct cli_session *s, const Fedloha__V1__ModelSpec *M, uint64_t seed)
{
	if (M->description_sha256.len != CLI_SHA256_BYTES)
		return cli_session_refuse(
			s, fl_error_set(FL_EFORMAT,
					"Welcome: description_sha256 has %zu bytes, "
					"expected %d",
					M->description_sha256.len, CLI_SHA256_BYTES));
	if (M->description_bytes == 0 || M->description_bytes > FL_MODEL_DESC_BYTES_MAX)
		return cli_session_refuse(
			s,
			fl_error_set(FL_ERANGE, "Welcome: description_bytes %llu outside [1, %u]",
				     (unsigned long long)M->description_bytes,
				     FL_MODEL_DESC_BYTES_MAX));
	const char *text = M->description ? M->description : "";
	const struct fl_model_desc *mine = s->cfg.expect_model;
	if (!*text && mine) /* checked to be this one: no fetch */
		return build(s, M, seed, mine->text, mine->text_len);
	if (s->model && s->spec_has_desc &&
	    !memcmp(s->spec_desc_sha, M->description_sha256.data, CLI_SHA256_BYTES) &&
	    !strcmp(s->spec_json, M->config_json ? M->config_json : "")) {
		int err = cli_session_keep_model(s);
		/* not inline: the server waits for a sign from us before any task */
		if (!err && !*text)
			err = cli_session_send_heartbeat(s);
		return err ? err : cli_session_welcome_base(s, M);
	}
	if (*text)
		return build(s, M, seed, text, strlen(text));
	return request(s, M, seed);
}

int cli_session_desc_fetched(struct cli_session *s, uint8_t *text, size_t len)
{
	Fedloha__V1__ModelSpec *M = fedloha__v1__model_spec__unpack(NULL, s->pending_len,
								    s->pending_spec);
	free(s->pending_spec);
	s->pending_spec = NULL;
	int err = M ? build(s, M, s->pending_seed, (const char *)text, len)
		    : fl_error_set(FL_ENOMEM, "out of memory");
	if (M)
		fedloha__v1__model_spec__free_unpacked(M, NULL);
	free(text);
	return err;
}

/* The description of a Welcome without one: the built-in M->arch. */
static int builtin_of(const Fedloha__V1__ModelSpec *M, struct fl_model_desc **d)
{
	struct fl_desc_shape in = {3, {0, 0, 0}, 0};
	for (size_t i = 0; i < 3 && i < M->n_input; i++)
		in.dim[i] = M->input[i] > (1u << 24) ? 0 : (int)M->input[i];
	return fl_model_desc_builtin(M->arch, &in, (int)M->classes, d);
}

int cli_session_check_expected(struct cli_session *s, const Fedloha__V1__ModelSpec *M)
{
	const struct fl_model_desc *mine = s->cfg.expect_model;
	if (!mine)
		return FL_OK;
	uint8_t want[CLI_SHA256_BYTES];
	crypto_hash_sha256(want, (const unsigned char *)mine->text, mine->text_len);
	int same;
	if (M->description_sha256.len) {
		same = M->description_sha256.len == CLI_SHA256_BYTES &&
		       !sodium_memcmp(want, M->description_sha256.data, CLI_SHA256_BYTES);
	} else {
		struct fl_model_desc *d = NULL;
		same = builtin_of(M, &d) == FL_OK && d->text_len == mine->text_len &&
		       !memcmp(d->text, mine->text, d->text_len);
		fl_model_desc_free(d);
	}
	if (same)
		return FL_OK;
	char ab[48];
	return cli_session_refuse(
		s, fl_error_set(FL_EINVAL,
				"the coordinator's model ('%s') is not the one this client "
				"trains (--model-file: '%s')",
				*M->arch ? fl_error_safe_str(M->arch, ab, sizeof(ab))
					 : "a description",
				mine->label));
}
