/* loha_ref.c - naive loop twins of the LoHa / FedPara and low-rank kernels:
 * every entry written straight from its formula, in double precision, with
 * no BLAS, no work buffer and no blocking. Slow (the backward recomputes
 * products per entry); used by the tests to check the BLAS path in loha.c.
 */
#include "loha.h"

/* Entry (row, col) of P_k, col = q*K1*K2 + kl (kl = k*K2 + l in Tucker).
 *   linear: P[row, col] = sum_c a[row, c] b[c, col]
 *   Tucker: P[p, q, kl] = sum_{i,j} t[i, j, kl] b[j, q] a[i, p]  */
static double ref_p(const float *a, const float *b, const float *t, const struct fl_loha_dims *d,
		    long row, long col)
{
	int r = d->r;
	double acc = 0.0;
	if (d->form != FL_LOHA_FORM_TUCKER) {
		long n = (long)d->in * d->k1 * d->k2;
		for (int c = 0; c < r; c++)
			acc += (double)a[row * r + c] * b[(long)c * n + col];
		return acc;
	}
	long kk = (long)d->k1 * d->k2;
	long q = col / kk, kl = col % kk;
	for (int i = 0; i < r; i++)
		for (int j = 0; j < r; j++)
			acc += (double)t[((long)i * r + j) * kk + kl] * b[(long)j * d->in + q] *
			       a[(long)i * d->out + row];
	return acc;
}

static double ref_p1(const struct fl_loha_factors *f, const struct fl_loha_dims *d, long row,
		     long col)
{
	return ref_p(f->w1a, f->w1b, f->t1, d, row, col);
}

static double ref_p2(const struct fl_loha_factors *f, const struct fl_loha_dims *d, long row,
		     long col)
{
	return ref_p(f->w2a, f->w2b, f->t2, d, row, col);
}

void fl_loha_forward_ref(float *w, const struct fl_loha_factors *f, const struct fl_loha_dims *d,
			 float scale, enum fl_loha_mode mode)
{
	long m = d->out, n = (long)d->in * d->k1 * d->k2;
	double c = mode == FL_LOHA_MODE_PFEDPARA ? 1.0 : 0.0;
	for (long i = 0; i < m; i++)
		for (long j = 0; j < n; j++)
			w[i * n + j] = (float)((double)scale * ref_p1(f, d, i, j) *
					       (ref_p2(f, d, i, j) + c));
}

/* dL/dP_k at (row, col): pair 1 gets s G (P2 + c), pair 2 gets s G P1. */
static double ref_t(int pair, const float *dw, const struct fl_loha_factors *f,
		    const struct fl_loha_dims *d, double s, double c, long row, long col)
{
	long n = (long)d->in * d->k1 * d->k2;
	double g = s * dw[row * n + col];
	if (pair == 1)
		return g * (ref_p2(f, d, row, col) + c);
	return g * ref_p1(f, d, row, col);
}

/* Gradients of one pair in the linear form:
 *   da[i, c] = sum_j T[i, j] b[c, j];   db[c, j] = sum_i a[i, c] T[i, j] */
static void ref_pair_linear(float *ga, float *gb, int pair, const float *a, const float *b,
			    const float *dw, const struct fl_loha_factors *f,
			    const struct fl_loha_dims *d, double s, double c)
{
	long m = d->out, n = (long)d->in * d->k1 * d->k2;
	int r = d->r;
	for (long i = 0; i < m; i++)
		for (int q = 0; q < r; q++) {
			double acc = 0.0;
			for (long j = 0; j < n; j++)
				acc += ref_t(pair, dw, f, d, s, c, i, j) * b[(long)q * n + j];
			ga[i * r + q] += (float)acc;
		}
	for (int q = 0; q < r; q++)
		for (long j = 0; j < n; j++) {
			double acc = 0.0;
			for (long i = 0; i < m; i++)
				acc += (double)a[i * r + q] * ref_t(pair, dw, f, d, s, c, i, j);
			gb[(long)q * n + j] += (float)acc;
		}
}

/* da (side 0) or db (side 1) of one pair in the Tucker form, T = dL/dP
 * (O, I, kk), with the other factor fac (b for da, a for db):
 *   da[i, p] = sum_{q,kl} T[p, q, kl] sum_j t[i, j, kl] b[j, q]
 *   db[j, q] = sum_{p,kl} T[p, q, kl] sum_i t[i, j, kl] a[i, p] */
static void ref_tucker_side(float *g, int side, int pair, const float *fac, const float *t,
			    const float *dw, const struct fl_loha_factors *f,
			    const struct fl_loha_dims *d, double s, double c)
{
	long o = d->out, in = d->in, kk = (long)d->k1 * d->k2;
	long nout = side ? in : o, nsum = side ? o : in;
	int r = d->r;
	for (int x = 0; x < r; x++)
		for (long y = 0; y < nout; y++) {
			double acc = 0.0;
			for (long z = 0; z < nsum; z++)
				for (long kl = 0; kl < kk; kl++) {
					double v = 0.0;
					for (int w = 0; w < r; w++) {
						long core = side ? (long)w * r + x
								 : (long)x * r + w;
						v += (double)t[core * kk + kl] * fac[w * nsum + z];
					}
					long p = side ? z : y, q = side ? y : z;
					acc += ref_t(pair, dw, f, d, s, c, p, q * kk + kl) * v;
				}
			g[x * nout + y] += (float)acc;
		}
}

/* Gradients of one pair in the Tucker form, T = dL/dP (O, I, kk):
 * da and db by ref_tucker_side, then
 *   dt[i, j, kl] = sum_{p,q}  T[p, q, kl] b[j, q] a[i, p]            */
static void ref_pair_tucker(float *ga, float *gb, float *gt, int pair, const float *a,
			    const float *b, const float *t, const float *dw,
			    const struct fl_loha_factors *f, const struct fl_loha_dims *d, double s,
			    double c)
{
	long o = d->out, in = d->in, kk = (long)d->k1 * d->k2;
	int r = d->r;
	ref_tucker_side(ga, 0, pair, b, t, dw, f, d, s, c);
	ref_tucker_side(gb, 1, pair, a, t, dw, f, d, s, c);
	for (int i = 0; i < r; i++)
		for (int j = 0; j < r; j++)
			for (long kl = 0; kl < kk; kl++) {
				double acc = 0.0;
				for (long p = 0; p < o; p++)
					for (long q = 0; q < in; q++)
						acc += ref_t(pair, dw, f, d, s, c, p, q * kk + kl) *
						       b[j * in + q] * a[i * o + p];
				gt[((long)i * r + j) * kk + kl] += (float)acc;
			}
}

void fl_loha_backward_ref(struct fl_loha_factors *grad, const float *dw,
			  const struct fl_loha_factors *f, const struct fl_loha_dims *d,
			  float scale, enum fl_loha_mode mode)
{
	double c = mode == FL_LOHA_MODE_PFEDPARA ? 1.0 : 0.0;
	if (d->form == FL_LOHA_FORM_TUCKER) {
		ref_pair_tucker(grad->w1a, grad->w1b, grad->t1, 1, f->w1a, f->w1b, f->t1, dw, f, d,
				scale, c);
		ref_pair_tucker(grad->w2a, grad->w2b, grad->t2, 2, f->w2a, f->w2b, f->t2, dw, f, d,
				scale, c);
	} else {
		ref_pair_linear(grad->w1a, grad->w1b, 1, f->w1a, f->w1b, dw, f, d, scale, c);
		ref_pair_linear(grad->w2a, grad->w2b, 2, f->w2a, f->w2b, dw, f, d, scale, c);
	}
}

void fl_lowrank_forward_ref(float *w, const float *a, const float *b, int m, int n, int k,
			    float scale)
{
	for (long i = 0; i < m; i++)
		for (long j = 0; j < n; j++) {
			double acc = 0.0;
			for (long q = 0; q < k; q++)
				acc += (double)a[i * k + q] * b[q * n + j];
			w[i * n + j] = (float)(scale * acc);
		}
}

/* g[x, y] += s sum_z p[x*px + z*pz] q[y*qy + z*qz] for x < nx, y < ny
 * (z < nz in order, accumulated in double). */
static void ref_contract(float *g, long nx, long ny, long nz, const float *p, long px, long pz,
			 const float *q, long qy, long qz, float scale)
{
	for (long x = 0; x < nx; x++)
		for (long y = 0; y < ny; y++) {
			double acc = 0.0;
			for (long z = 0; z < nz; z++)
				acc += (double)p[x * px + z * pz] * q[y * qy + z * qz];
			g[x * ny + y] += (float)(scale * acc);
		}
}

/* da[i, q] += s sum_j G[i, j] b[q, j];  db[q, j] += s sum_i a[i, q] G[i, j] */
void fl_lowrank_backward_ref(float *grad_a, float *grad_b, const float *dw, const float *a,
			     const float *b, int m, int n, int k, float scale)
{
	ref_contract(grad_a, m, k, n, dw, n, 1, b, n, 1, scale);
	ref_contract(grad_b, k, n, m, a, 1, k, dw, 1, n, scale);
}
