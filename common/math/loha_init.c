/* loha_init.c - the small LoHa / FedPara helpers around the kernels: rank
 * from gamma (paper §3.1), factor initialisation (PEFT and He), PEFT's rank
 * and module dropouts, merging a delta into a dense weight, and the check
 * that a shape's sizes fit the int arguments of BLAS.
 *
 * Random choices draw from the caller's struct fl_rng; nothing here
 * allocates or logs. The kernels themselves are in loha.c / loha_ref.c.
 */
#include "loha.h"

#include "errors.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>

/* ---- dimension limits ---- */

int fl_loha_dims_check(const struct fl_loha_dims *d)
{
	if (d->out < 1 || d->in < 1 || d->r < 1 || d->k1 < 1 || d->k2 < 1)
		return fl_error_set(
			FL_ERANGE,
			"LoHa dims: out %d, in %d, r %d, kernel %dx%d: each must be >= 1", d->out,
			d->in, d->r, d->k1, d->k2);
	long long kk = (long long)d->k1 * d->k2, cols = kk * d->in;
	if (kk > INT_MAX || cols > INT_MAX)
		return fl_error_set(FL_ERANGE,
				    "LoHa dims: in x kernel = %d x %dx%d = %lld columns, over the "
				    "BLAS limit %d",
				    d->in, d->k1, d->k2, cols, INT_MAX);
	return FL_OK;
}

/* ---- rank from gamma ---- */

static int64_t ceil_sqrt(int64_t x)
{
	int64_t r = (int64_t)sqrt((double)x);
	while (r > 0 && r * r >= x)
		r--;
	while (r * r < x)
		r++;
	return r;
}

/* Factor count at rank r (the same formula as fl_loha_param_count). */
static int64_t params_at(const struct fl_loha_dims *d, int64_t r)
{
	int64_t kk = (int64_t)d->k1 * d->k2;
	if (d->form == FL_LOHA_FORM_TUCKER)
		return 2 * r * ((int64_t)d->out + d->in + r * kk);
	return 2 * r * ((int64_t)d->out + (int64_t)d->in * kk);
}

int fl_loha_rank_min(const struct fl_loha_dims *d)
{
	int64_t m = d->out;
	int64_t n = d->form == FL_LOHA_FORM_TUCKER ? d->in : (int64_t)d->in * d->k1 * d->k2;
	int64_t a = ceil_sqrt(m), b = ceil_sqrt(n);
	int64_t r = a < b ? a : b;
	return r < 1 ? 1 : (int)r;
}

/* Closed form first (linear: mn / (2(m+n)); Tucker: positive root of
 * kk r^2 + (O+I) r - O I kk / 2 = 0), then an exact integer walk so that
 * rounding in the square root can never give params > dense. */
int fl_loha_rank_max(const struct fl_loha_dims *d)
{
	int64_t kk = (int64_t)d->k1 * d->k2, o = d->out, in = d->in;
	int64_t dense = o * in * kk;
	double est;
	if (d->form == FL_LOHA_FORM_TUCKER) {
		double b = (double)(o + in), a = (double)kk;
		est = (-b + sqrt(b * b + 2.0 * a * a * (double)o * (double)in)) / (2.0 * a);
	} else {
		est = (double)dense / (2.0 * (double)(o + in * kk));
	}
	int64_t r = est > 1.0 ? (int64_t)est : 1;
	while (r > 1 && params_at(d, r) > dense)
		r--;
	while (params_at(d, r + 1) <= dense)
		r++;
	return r > INT32_MAX ? INT32_MAX : (int)r;
}

/* Round half up; the 1e-9 makes a value that is exactly k + .5 in real
 * arithmetic but lands just below it in floating point (gamma = 0.1 is not
 * exact) round up like the real-number value. */
int fl_loha_rank_from_gamma(const struct fl_loha_dims *d, double gamma)
{
	if (!(gamma >= 0.0))
		gamma = 0.0;
	if (gamma > 1.0)
		gamma = 1.0;
	double x = (1.0 - gamma) * fl_loha_rank_min(d) + gamma * fl_loha_rank_max(d);
	long r = (long)floor(x + 0.5 + 1e-9);
	return r < 1 ? 1 : (int)r;
}

int fl_lowrank_rank_for_budget(const struct fl_loha_dims *d)
{
	int64_t rowcol = (int64_t)d->out + (int64_t)d->in * d->k1 * d->k2;
	int64_t k = rowcol > 0 ? (int64_t)fl_loha_param_count(d) / rowcol : 1;
	return k < 1 ? 1 : (int)k;
}

/* ---- initialisation ---- */

static void fill_normal(float *x, size_t n, float std, struct fl_rng *rng)
{
	for (size_t i = 0; i < n; i++)
		x[i] = std * fl_rng_normal(rng);
}

/* torch's fan_in of a tensor: shape[1] * prod(shape[2:]). */
void fl_loha_init_peft(struct fl_loha_factors *f, const struct fl_loha_dims *d, int init_weights,
		       struct fl_rng *rng)
{
	int tucker = d->form == FL_LOHA_FORM_TUCKER;
	size_t na = fl_loha_w_a_floats(d), nb = fl_loha_w_b_floats(d), nt = fl_loha_t_floats(d);
	/* linear: w_a (m, r) fan_in r, w_b (r, n) fan_in n;
	 * Tucker: w_a (r, O) fan_in O, w_b (r, I) fan_in I, t (r, r, K1, K2) fan_in r K1 K2 */
	double fa = tucker ? d->out : d->r;
	double fb = tucker ? d->in : (double)d->in * d->k1 * d->k2;
	double ft = (double)d->r * d->k1 * d->k2;
	float ba = (float)(1.0 / sqrt(fa)), bb = (float)(1.0 / sqrt(fb)),
	      bt = (float)(1.0 / sqrt(ft));
	if (tucker)
		fl_rng_fill_uniform(rng, f->t1, nt, bt);
	fl_rng_fill_uniform(rng, f->w1a, na, ba);
	fl_rng_fill_uniform(rng, f->w1b, nb, bb);
	if (tucker)
		fl_rng_fill_uniform(rng, f->t2, nt, bt);
	fl_rng_fill_uniform(rng, f->w2a, na, ba);
	if (init_weights) {
		for (size_t i = 0; i < nb; i++)
			f->w2b[i] = 0.0f;
	} else {
		fl_rng_fill_uniform(rng, f->w2b, nb, bb);
	}
}

/* He variance for the composed weight, target Var(W) = 2 / fan_in.
 *
 * A sum of r products of independent zero-mean factors x_c y_c has
 * Var = sum_c Var(x)Var(y) = r sx^2 sy^2 (the terms are uncorrelated since
 * every cross moment contains a lone zero-mean factor). So, with every
 * factor entry ~ N(0, sigma^2):
 *   linear:  P = sum_c a[i,c] b[c,j]            Var(P) = r sigma^4
 *   Tucker:  P = sum_{i,j} t[i,j,kl] b[j,q] a[i,p]  (r^2 terms of three
 *            factors)                             Var(P) = r^2 sigma^6
 * P1 and P2 are independent and zero-mean, so Var(P1 P2) = Var(P1) Var(P2)
 * and, for pFedPara, Var(P1 (P2 + 1)) = Var(P1) (Var(P2) + 1) (E[P1] = 0).
 * With the same v = Var(P) in both halves and the scale s:
 *   LoHa:      s^2 v^2       = 2/fan_in  ->  v = sqrt(2/fan_in) / |s|
 *   pFedPara:  s^2 v (v + 1) = 2/fan_in  ->  v = (sqrt(1 + 4 (2/fan_in)/s^2) - 1) / 2
 * and sigma = (v / r)^(1/4) (linear) or (v / r^2)^(1/6) (Tucker).
 * Low rank W = s a b with inner k: s^2 k sigma^4 = 2/fan_in.
 * s = 0 would make every W zero; it is treated as s = 1. */
void fl_loha_init_he(struct fl_loha_factors *f, const struct fl_loha_dims *d, float scale,
		     enum fl_loha_mode mode, struct fl_rng *rng)
{
	int tucker = d->form == FL_LOHA_FORM_TUCKER;
	double fan_in = (double)d->in * d->k1 * d->k2;
	double s2 = scale != 0.0f ? (double)scale * scale : 1.0;
	double target = 2.0 / fan_in, v;
	if (mode == FL_LOHA_MODE_PFEDPARA)
		v = (sqrt(1.0 + 4.0 * target / s2) - 1.0) / 2.0;
	else
		v = sqrt(target / s2);
	double r = d->r;
	float sigma = tucker ? (float)pow(v / (r * r), 1.0 / 6.0) : (float)pow(v / r, 0.25);
	size_t na = fl_loha_w_a_floats(d), nb = fl_loha_w_b_floats(d), nt = fl_loha_t_floats(d);
	if (tucker)
		fill_normal(f->t1, nt, sigma, rng);
	fill_normal(f->w1a, na, sigma, rng);
	fill_normal(f->w1b, nb, sigma, rng);
	if (tucker)
		fill_normal(f->t2, nt, sigma, rng);
	fill_normal(f->w2a, na, sigma, rng);
	fill_normal(f->w2b, nb, sigma, rng);
}

void fl_lowrank_init_he(float *a, float *b, int m, int n, int k, float scale, struct fl_rng *rng)
{
	double s2 = scale != 0.0f ? (double)scale * scale : 1.0;
	float sigma = (float)pow(2.0 / ((double)n * s2 * k), 0.25);
	fill_normal(a, (size_t)m * k, sigma, rng);
	fill_normal(b, (size_t)k * n, sigma, rng);
}

/* ---- PEFT dropouts ---- */

int fl_loha_module_dropout(float p, struct fl_rng *rng)
{
	return fl_rng_uniform(rng) < p;
}

int fl_loha_rank_dropout_mask(float *mask, int rows, float p, struct fl_rng *rng)
{
	int kept = 0;
	for (int i = 0; i < rows; i++) {
		mask[i] = fl_rng_uniform(rng) > p ? 1.0f : 0.0f;
		kept += mask[i] != 0.0f;
	}
	if (kept == 0)
		return 0;
	/* keep / mean(keep) = keep * rows / kept */
	float inv_mean = (float)rows / (float)kept;
	for (int i = 0; i < rows; i++)
		mask[i] *= inv_mean;
	return kept;
}

void fl_loha_apply_row_mask(float *w, const float *mask, int rows, long cols)
{
	for (long i = 0; i < rows; i++) {
		float k = mask[i];
		float *wr = w + i * cols;
		for (long j = 0; j < cols; j++)
			wr[j] *= k;
	}
}

/* ---- merge ---- */

void fl_loha_merge(float *w0, const float *dw, size_t n)
{
	for (size_t i = 0; i < n; i++)
		w0[i] += dw[i];
}

void fl_loha_unmerge(float *w0, const float *dw, size_t n)
{
	for (size_t i = 0; i < n; i++)
		w0[i] -= dw[i];
}

int fl_loha_merge_safe(float *w0, const float *dw, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++) {
		float v = w0[i] + dw[i];
		if (!isfinite(v))
			return fl_error_set(FL_ENONFINITE,
					    "%s: merge gives a non-finite value at index %zu",
					    name ? name : "weight", i);
	}
	fl_loha_merge(w0, dw, n);
	return FL_OK;
}
