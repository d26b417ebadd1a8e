/* server_optim.c - the server optimisers (FedAvg, FedAvgM, FedAdam, FedYogi,
 * FedAdagrad) over flat float buffers.
 *
 * The per-element loops are plain sequential C in float with the operation
 * order of Flower's numpy strategies; scalar coefficients are formed in
 * double and rounded once. Nothing here allocates except _init, and nothing
 * logs.
 */
#include "server_optim.h"

#include "errors.h"
#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const server_names[] = {"fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad"};
#define SERVER_KINDS ((int)(sizeof(server_names) / sizeof(server_names[0])))

static int server_has_m(enum srv_optim_kind k)
{
	return k != SRV_OPTIM_FEDAVG;
}

static int server_has_v(enum srv_optim_kind k)
{
	return k == SRV_OPTIM_FEDADAM || k == SRV_OPTIM_FEDYOGI || k == SRV_OPTIM_FEDADAGRAD;
}

/* The defaults of server_optim.h, by kind. */
static const struct srv_optim_config optim_defaults[] = {
	/* kind, eta, beta1, beta2, tau, bias_correction */
	[SRV_OPTIM_FEDAVG] = {SRV_OPTIM_FEDAVG, 1.0f, 0.0f, 0.0f, 0.0f, 0},
	[SRV_OPTIM_FEDAVGM] = {SRV_OPTIM_FEDAVGM, 1.0f, 0.9f, 0.0f, 0.0f, 0},
	[SRV_OPTIM_FEDADAM] = {SRV_OPTIM_FEDADAM, 0.1f, 0.9f, 0.99f, 1e-3f, 1},
	[SRV_OPTIM_FEDYOGI] = {SRV_OPTIM_FEDYOGI, 0.01f, 0.9f, 0.99f, 1e-3f, 0},
	[SRV_OPTIM_FEDADAGRAD] = {SRV_OPTIM_FEDADAGRAD, 0.1f, 0.0f, 0.0f, 1e-3f, 0},
};

void srv_optim_config_default(struct srv_optim_config *cfg, enum srv_optim_kind kind)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->kind = kind;
	cfg->eta = 1.0f;
	if ((unsigned)kind < sizeof(optim_defaults) / sizeof(optim_defaults[0]))
		*cfg = optim_defaults[kind];
}

int srv_optim_parse(const char *s, enum srv_optim_kind *kind, int *prox)
{
	if (prox)
		*prox = 0;
	if (!s)
		return fl_error_set(FL_EINVAL, "server optimiser: no name given");
	for (int k = 0; k < SERVER_KINDS; k++) {
		if (strcmp(s, server_names[k]) == 0) {
			*kind = (enum srv_optim_kind)k;
			return FL_OK;
		}
	}
	if (strcmp(s, "fedprox") == 0) {
		*kind = SRV_OPTIM_FEDAVG;
		if (prox)
			*prox = 1;
		return FL_OK;
	}
	return fl_error_set(FL_EINVAL,
			    "unknown server optimiser '%.64s' (expected fedavg, fedavgm, fedadam, "
			    "fedyogi, fedadagrad or fedprox)",
			    s);
}

void srv_optim_config_set(struct srv_optim_config *cfg, double eta, double beta1, double beta2,
			  double tau)
{
	if (eta >= 0)
		cfg->eta = (float)eta;
	if (beta1 >= 0)
		cfg->beta1 = (float)beta1;
	if (beta2 >= 0)
		cfg->beta2 = (float)beta2;
	if (tau >= 0)
		cfg->tau = (float)tau;
}

const char *srv_optim_unused(enum srv_optim_kind kind, int eta, int beta1, int beta2, int tau)
{
	int adaptive = kind == SRV_OPTIM_FEDADAM || kind == SRV_OPTIM_FEDYOGI ||
		       kind == SRV_OPTIM_FEDADAGRAD;
	int second = kind == SRV_OPTIM_FEDADAM || kind == SRV_OPTIM_FEDYOGI;
	if (eta && kind == SRV_OPTIM_FEDAVG)
		return "server-lr";
	if (beta1 && kind == SRV_OPTIM_FEDAVG)
		return "server-beta1";
	if (beta2 && !second)
		return "server-beta2";
	if (tau && !adaptive)
		return "server-tau";
	return NULL;
}

const char *srv_optim_name(enum srv_optim_kind kind)
{
	if ((int)kind < 0 || (int)kind >= SERVER_KINDS)
		return "unknown";
	return server_names[kind];
}

static int server_config_check(const struct srv_optim_config *c)
{
	if ((int)c->kind < 0 || (int)c->kind >= SERVER_KINDS)
		return fl_error_set(FL_EINVAL, "server optimiser: unknown kind %d", (int)c->kind);
	const char *name = server_names[c->kind];
	if (c->kind == SRV_OPTIM_FEDAVG)
		return FL_OK;
	if (!fl_optim_finite_nonneg(c->eta))
		return fl_error_set(FL_EINVAL,
				    "%s: server learning rate %g must be finite and >= 0", name,
				    (double)c->eta);
	if (!fl_optim_beta_ok(c->beta1))
		return fl_error_set(FL_EINVAL, "%s: beta1 / momentum %g must be in [0, 1)", name,
				    (double)c->beta1);
	if (!server_has_v(c->kind))
		return FL_OK;
	if (c->kind != SRV_OPTIM_FEDADAGRAD && !fl_optim_beta_ok(c->beta2))
		return fl_error_set(FL_EINVAL, "%s: beta2 %g must be in [0, 1)", name,
				    (double)c->beta2);
	if (!isfinite(c->tau) || c->tau <= 0.0f)
		return fl_error_set(FL_EINVAL, "%s: tau %g must be finite and > 0", name,
				    (double)c->tau);
	return FL_OK;
}

int srv_optim_init(struct srv_optim *o, const struct srv_optim_config *cfg, size_t n)
{
	memset(o, 0, sizeof(*o));
	int err = server_config_check(cfg);
	if (err)
		return err;
	o->cfg = *cfg;
	o->n = n;
	if (fl_optim_moments_alloc(&o->m, &o->v, n, server_has_m(cfg->kind),
				   server_has_v(cfg->kind)) == FL_OK)
		return FL_OK;
	srv_optim_free(o);
	return fl_error_set(FL_ENOMEM, "server optimiser: cannot allocate state for %zu floats", n);
}

void srv_optim_free(struct srv_optim *o)
{
	if (!o)
		return;
	fl_optim_moments_free(&o->m, &o->v);
	o->n = 0;
	o->step = 0;
}

/* x += eta m, m = beta m + (y - x)   (Flower FedAvgM, sign flipped) */
static void server_avgm(float *x, float *m, const float *y, size_t n, float eta, float beta)
{
	for (size_t i = 0; i < n; i++) {
		float d = y[i] - x[i];
		float mi = beta * m[i] + d;
		m[i] = mi;
		x[i] = x[i] + eta * mi;
	}
}

static float sign_f(float a)
{
	return (float)((a > 0.0f) - (a < 0.0f));
}

/* FedAdam / FedYogi / FedAdagrad: shared first moment, kind-specific v. */
static void server_adaptive(float *x, float *m, float *v, const float *y, size_t n,
			    enum srv_optim_kind kind, float eta, float b1, float b2, float tau)
{
	float c1 = (float)(1.0 - (double)b1), c2 = (float)(1.0 - (double)b2);
	for (size_t i = 0; i < n; i++) {
		float d = y[i] - x[i];
		float d2 = d * d;
		float mi = b1 * m[i] + c1 * d;
		float vi = v[i];
		if (kind == SRV_OPTIM_FEDADAM)
			vi = b2 * vi + c2 * d2;
		else if (kind == SRV_OPTIM_FEDYOGI)
			vi = vi - c2 * d2 * sign_f(vi - d2);
		else
			vi = vi + d2;
		m[i] = mi;
		v[i] = vi;
		x[i] = x[i] + eta * mi / (sqrtf(vi) + tau);
	}
}

int srv_optim_step(struct srv_optim *o, float *x, const float *y, size_t n)
{
	if (n != o->n)
		return fl_error_set(FL_ESHAPE, "%s: %zu floats given, optimiser holds %zu",
				    srv_optim_name(o->cfg.kind), n, o->n);
	for (size_t i = 0; i < n; i++) {
		if (!isfinite(y[i]))
			return fl_error_set(FL_ENONFINITE, "%s: aggregated value %zu is not finite",
					    srv_optim_name(o->cfg.kind), i);
	}
	const struct srv_optim_config *c = &o->cfg;
	o->step++;
	switch (c->kind) {
	case SRV_OPTIM_FEDAVG:
		if (n)
			memcpy(x, y, n * sizeof(float));
		break;
	case SRV_OPTIM_FEDAVGM: server_avgm(x, o->m, y, n, c->eta, c->beta1); break;
	case SRV_OPTIM_FEDADAM:
	case SRV_OPTIM_FEDYOGI:
	case SRV_OPTIM_FEDADAGRAD: {
		float eta = c->eta;
		if (c->kind == SRV_OPTIM_FEDADAM && c->bias_correction) {
			/* Flower's eta_norm with server_round = step (1-based):
			 * eta * sqrt(1 - b2^(round+1)) / (1 - b1^(round+1)). */
			double e = (double)o->step + 1.0;
			eta = (float)((double)c->eta * sqrt(1.0 - pow((double)c->beta2, e)) /
				      (1.0 - pow((double)c->beta1, e)));
		}
		server_adaptive(x, o->m, o->v, y, n, c->kind, eta, c->beta1, c->beta2, c->tau);
		break;
	}
	}
	return FL_OK;
}

void srv_optim_state(const struct srv_optim *o, const float **m, const float **v, size_t *n,
		     uint64_t *step)
{
	if (m)
		*m = o->m;
	if (v)
		*v = o->v;
	if (n)
		*n = o->n;
	if (step)
		*step = o->step;
}

int srv_optim_restore(struct srv_optim *o, const float *m, const float *v, size_t n, uint64_t step)
{
	const char *name = srv_optim_name(o->cfg.kind);
	if (n != o->n)
		return fl_error_set(FL_ESHAPE,
				    "%s: saved state has %zu floats, optimiser holds %zu", name, n,
				    o->n);
	if (!m != !o->m)
		return fl_error_set(FL_EINVAL, "%s: saved state %s a first moment", name,
				    m ? "has an unexpected" : "lacks");
	if (!v != !o->v)
		return fl_error_set(FL_EINVAL, "%s: saved state %s a second moment", name,
				    v ? "has an unexpected" : "lacks");
	for (size_t i = 0; m && i < n; i++) {
		if (!isfinite(m[i]))
			return fl_error_set(FL_ENONFINITE,
					    "%s: saved first moment %zu is not finite", name, i);
	}
	for (size_t i = 0; v && i < n; i++) {
		if (!isfinite(v[i]) || v[i] < 0.0f)
			return fl_error_set(FL_ENONFINITE,
					    "%s: saved second moment %zu is negative or not finite",
					    name, i);
	}
	if (m && n)
		memcpy(o->m, m, n * sizeof(float));
	if (v && n)
		memcpy(o->v, v, n * sizeof(float));
	o->step = step;
	return FL_OK;
}
