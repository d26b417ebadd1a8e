/* optim.c - client optimisers (SGD with momentum, Adam / AdamW), the round
 * learning-rate schedule and the FedProx term over flat float buffers.
 *
 * The per-element loops are plain sequential C in float with the operation
 * order of PyTorch's single-tensor optimisers; scalar coefficients are formed
 * in double and rounded once. Nothing here allocates except _init, and nothing logs. Gradients,
 * aggregation and checkpoint files live elsewhere.
 */
#include "optim.h"

#include "errors.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void fl_optim_config_default(struct fl_optim_config *cfg, enum fl_optim_kind kind)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->kind = kind;
	if (kind == FL_OPTIM_SGD) {
		cfg->lr = 0.1f;
	} else {
		cfg->lr = 1e-3f;
	}
	cfg->beta1 = 0.9f;
	cfg->beta2 = 0.999f;
	cfg->eps = 1e-8f;
}

int fl_optim_finite_nonneg(float x)
{
	return isfinite(x) && x >= 0.0f;
}

int fl_optim_beta_ok(float b)
{
	return isfinite(b) && b >= 0.0f && b < 1.0f;
}

int fl_optim_moments_alloc(float **m, float **v, size_t n, int want_m, int want_v)
{
	size_t alloc = n ? n : 1;
	if (want_m && !(*m = calloc(alloc, sizeof(float))))
		return FL_ENOMEM;
	if (want_v && !(*v = calloc(alloc, sizeof(float))))
		return FL_ENOMEM;
	return FL_OK;
}

void fl_optim_moments_free(float **m, float **v)
{
	free(*m);
	free(*v);
	*m = NULL;
	*v = NULL;
}

static int optim_config_check(const struct fl_optim_config *c)
{
	if (c->kind != FL_OPTIM_SGD && c->kind != FL_OPTIM_ADAM)
		return fl_error_set(FL_EINVAL, "optimiser: unknown kind %d", (int)c->kind);
	if (!fl_optim_finite_nonneg(c->lr))
		return fl_error_set(FL_EINVAL,
				    "optimiser: learning rate %g must be finite and >= 0",
				    (double)c->lr);
	if (!fl_optim_finite_nonneg(c->weight_decay))
		return fl_error_set(FL_EINVAL, "optimiser: weight decay %g must be finite and >= 0",
				    (double)c->weight_decay);
	if (c->kind == FL_OPTIM_SGD) {
		if (!fl_optim_finite_nonneg(c->momentum))
			return fl_error_set(FL_EINVAL, "sgd: momentum %g must be finite and >= 0",
					    (double)c->momentum);
		if (c->nesterov && c->momentum <= 0.0f)
			return fl_error_set(FL_EINVAL, "sgd: nesterov needs momentum > 0");
	} else {
		if (!fl_optim_beta_ok(c->beta1) || !fl_optim_beta_ok(c->beta2))
			return fl_error_set(FL_EINVAL, "adam: betas (%g, %g) must be in [0, 1)",
					    (double)c->beta1, (double)c->beta2);
		if (!fl_optim_finite_nonneg(c->eps))
			return fl_error_set(FL_EINVAL, "adam: eps %g must be finite and >= 0",
					    (double)c->eps);
	}
	return FL_OK;
}

int fl_optim_init(struct fl_optim *o, const struct fl_optim_config *cfg, size_t n)
{
	memset(o, 0, sizeof(*o));
	int err = optim_config_check(cfg);
	if (err)
		return err;
	o->cfg = *cfg;
	o->n = n;
	int adam = cfg->kind == FL_OPTIM_ADAM;
	if (fl_optim_moments_alloc(&o->m, &o->v, n, adam || cfg->momentum > 0.0f, adam) == FL_OK)
		return FL_OK;
	fl_optim_free(o);
	return fl_error_set(FL_ENOMEM, "optimiser: cannot allocate state for %zu floats", n);
}

void fl_optim_free(struct fl_optim *o)
{
	if (!o)
		return;
	fl_optim_moments_free(&o->m, &o->v);
	o->n = 0;
	o->step = 0;
}

void fl_optim_set_lr(struct fl_optim *o, float lr)
{
	o->cfg.lr = lr;
}

/* Plain SGD, coupled weight decay: w -= lr * (g + wd w). */
static void sgd_plain(float *w, const float *g, size_t n, float lr, float wd)
{
	for (size_t i = 0; i < n; i++) {
		float d = g[i] + wd * w[i];
		w[i] = w[i] + -lr * d;
	}
}

/* torch.optim.SGD with momentum (dampening 0). buf starts at zero, so the
 * first step gives buf = d exactly as torch's clone does. */
static void sgd_momentum(float *w, float *buf, const float *g, size_t n, float lr, float wd,
			 float mom, int nesterov)
{
	for (size_t i = 0; i < n; i++) {
		float d = g[i] + wd * w[i];
		float b = buf[i] * mom + d;
		buf[i] = b;
		if (nesterov)
			d = d + mom * b;
		else
			d = b;
		w[i] = w[i] + -lr * d;
	}
}

/* torch.optim.Adam / AdamW, single-tensor path (no amsgrad, not capturable):
 *   denom = sqrt(v) / sqrt(bc2) + eps;  w += (-step_size * m) / denom. */
static void adam_kernel(float *w, float *m, float *v, const float *g, size_t n, float b1, float b2,
			float l2, float decay_mul, float neg_step_size, float bc2_sqrt, float eps)
{
	float c1 = (float)(1.0 - (double)b1), c2 = (float)(1.0 - (double)b2);
	for (size_t i = 0; i < n; i++) {
		float wi = w[i] * decay_mul;
		float gi = g[i] + l2 * wi;
		float mi = m[i] * b1 + c1 * gi;
		float vi = v[i] * b2 + c2 * (gi * gi);
		m[i] = mi;
		v[i] = vi;
		float denom = sqrtf(vi) / bc2_sqrt + eps;
		w[i] = wi + neg_step_size * mi / denom;
	}
}

static int ranges_check(const struct fl_optim_range *r, size_t nr, size_t n)
{
	for (size_t k = 0; k < nr; k++) {
		if (r[k].off > n || r[k].len > n - r[k].off)
			return fl_error_set(FL_EINVAL,
					    "optimiser: range %zu [%zu, +%zu) outside %zu floats",
					    k, r[k].off, r[k].len, n);
	}
	return FL_OK;
}

int fl_optim_step(struct fl_optim *o, float *w, const float *g, const struct fl_optim_range *ranges,
		  size_t nranges)
{
	struct fl_optim_range all = {0, o->n};
	if (!ranges) {
		ranges = &all;
		nranges = 1;
	}
	int err = ranges_check(ranges, nranges, o->n);
	if (err)
		return err;
	const struct fl_optim_config *c = &o->cfg;
	o->step++;
	if (c->kind == FL_OPTIM_SGD) {
		for (size_t k = 0; k < nranges; k++) {
			size_t off = ranges[k].off, len = ranges[k].len;
			if (!len)
				continue;
			if (c->momentum > 0.0f)
				sgd_momentum(w + off, o->m + off, g + off, len, c->lr,
					     c->weight_decay, c->momentum, c->nesterov);
			else
				sgd_plain(w + off, g + off, len, c->lr, c->weight_decay);
		}
		return FL_OK;
	}
	double t = (double)o->step;
	double bc1 = 1.0 - pow((double)c->beta1, t);
	double bc2 = 1.0 - pow((double)c->beta2, t);
	float neg_step_size = (float)-((double)c->lr / bc1);
	float bc2_sqrt = (float)sqrt(bc2);
	float l2 = c->decoupled ? 0.0f : c->weight_decay;
	/* torch AdamW: param.mul_(1 - lr * weight_decay), the factor a double */
	float decay_mul = c->decoupled ? (float)(1.0 - (double)c->lr * (double)c->weight_decay)
				       : 1.0f;
	for (size_t k = 0; k < nranges; k++) {
		size_t off = ranges[k].off, len = ranges[k].len;
		if (!len)
			continue;
		adam_kernel(w + off, o->m + off, o->v + off, g + off, len, c->beta1, c->beta2, l2,
			    decay_mul, neg_step_size, bc2_sqrt, c->eps);
	}
	return FL_OK;
}

double fl_optim_round_lr(double lr, double decay, uint64_t round)
{
	return lr * pow(decay, (double)round);
}

void fl_optim_add_prox(float *grad, const float *w, const float *w_global, size_t n, float mu)
{
	for (size_t i = 0; i < n; i++)
		grad[i] += mu * (w[i] - w_global[i]);
}
