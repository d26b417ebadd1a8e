/* sim_digest.c - the digest every MPI rank of fedloha-sim compares with
 * rank 0's before the first configuration runs (srv_sim_mpi_same): a
 * BLAKE2b hash of the configurations (every field that shapes a run, the
 * model description's canonical text included; not the thread count, the
 * callbacks or the output folder, which may differ between ranks) and of
 * the data (both sets' shapes, samples, labels and normalisation, and the
 * clients' partition). It reads no file and does not talk to MPI. */
#include "sim.h"

#include "errors.h"
#include "model_desc.h"

#include <sodium.h>
#include <string.h>

static void add(crypto_generichash_state *h, const void *p, size_t n)
{
	if (n)
		crypto_generichash_update(h, p, n);
}

static void add_u64(crypto_generichash_state *h, uint64_t v)
{
	add(h, &v, sizeof(v));
}

static void add_f64(crypto_generichash_state *h, double v)
{
	add(h, &v, sizeof(v));
}

/* A string with its length; NULL differs from "". */
static void add_str(crypto_generichash_state *h, const char *s)
{
	add_u64(h, s ? strlen(s) + 1 : 0);
	if (s)
		add(h, s, strlen(s));
}

static void add_train(crypto_generichash_state *h, const struct srv_train_opts *t)
{
	add_u64(h, t->rounds);
	add_u64(h, t->seed);
	add_f64(h, t->fraction);
	const int64_t ints[] = {t->min_report, t->epochs, t->batch, t->strategy, t->prox, t->dtype};
	for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++)
		add_u64(h, (uint64_t)ints[i]);
	const float fl[] = {t->lr,           t->lr_decay,     t->momentum,
			    t->weight_decay, t->prox_mu,      t->server_eta,
			    t->server_beta1, t->server_beta2, t->server_tau};
	for (size_t i = 0; i < sizeof(fl) / sizeof(fl[0]); i++)
		add_f64(h, (double)fl[i]);
}

static void add_config(crypto_generichash_state *h, const struct srv_sim_config *c)
{
	add_str(h, c->label);
	add_str(h, c->arch);
	add_u64(h, c->desc ? c->desc->text_len + 1 : 0);
	if (c->desc)
		add(h, c->desc->text, c->desc->text_len);
	const int64_t ints[] = {c->param,      c->rank,       c->tucker, c->fed_eval,
				c->local_only, c->eval_batch, c->secure};
	for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++)
		add_u64(h, (uint64_t)ints[i]);
	add_f64(h, c->gamma);
	add_f64(h, c->dropout);
	add_str(h, c->targets);
	add_str(h, c->base_path);
	add_str(h, c->init_path);
	add_str(h, c->modules_to_save);
	add_train(h, &c->train);
}

static void add_dataset(crypto_generichash_state *h, const struct fl_dataset *d)
{
	const int64_t ints[] = {d->n, d->ndim, d->tokens, d->c, d->h, d->w, d->classes};
	for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++)
		add_u64(h, (uint64_t)ints[i]);
	size_t per = (size_t)d->c * (size_t)d->h * (size_t)d->w, n = (size_t)d->n;
	add_u64(h, d->pixels != NULL);
	if (d->pixels)
		add(h, d->pixels, n * per);
	if (d->values)
		add(h, d->values, n * per * sizeof(float));
	add(h, d->labels, n * sizeof(*d->labels));
	add(h, d->mean, sizeof(d->mean));
	add(h, d->std, sizeof(d->std));
}

static void add_partition(crypto_generichash_state *h, const struct fl_partition *p)
{
	add_u64(h, (uint64_t)p->clients);
	for (int i = 0; i < p->clients; i++) {
		const struct fl_partition_client *pc = &p->client[i];
		add_u64(h, (uint64_t)pc->n_train);
		add(h, pc->train, (size_t)pc->n_train * sizeof(int));
		add_u64(h, (uint64_t)pc->n_holdout);
		add(h, pc->holdout, (size_t)pc->n_holdout * sizeof(int));
	}
}

int srv_sim_digest(const struct srv_sim_config *cfgs, int n, const struct srv_sim_data *d,
		   uint8_t out[SRV_SIM_DIGEST_BYTES])
{
	crypto_generichash_state h;
	if (sodium_init() < 0 || crypto_generichash_init(&h, NULL, 0, SRV_SIM_DIGEST_BYTES))
		return fl_error_set(FL_EIO, "sim: libsodium could not start");
	add_u64(&h, (uint64_t)n);
	for (int i = 0; i < n; i++)
		add_config(&h, &cfgs[i]);
	add_dataset(&h, d->train);
	add_dataset(&h, d->test);
	add_partition(&h, d->part);
	crypto_generichash_final(&h, out, SRV_SIM_DIGEST_BYTES);
	return FL_OK;
}
