/* test_loha.c - LoHa / FedPara kernels: BLAS path against the naive twins
 * on odd sizes (several row blocks, r = 1, m = 1, n = 1), central finite
 * differences in double for every factor of every form and mode and for
 * low rank, and the rank property (LoHa full rank where plain low rank with
 * the same budget is not). Golden files against PyTorch: test_loha_golden.c;
 * sizes, gamma, init, dropouts, merge: test_loha_misc.c. */
#include "loha.h"
#include "rng.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The six factors in one allocation. */
struct case_buf {
	struct fl_loha_dims d;
	struct fl_loha_factors f;
	float *mem;
	size_t na, nb, nt, total;
};

static void case_init(struct case_buf *c, enum fl_loha_form form, int out, int in, int k1, int k2,
		      int r)
{
	struct fl_loha_dims d = {form, out, in, k1, k2, r};
	c->d = d;
	c->na = fl_loha_w_a_floats(&d);
	c->nb = fl_loha_w_b_floats(&d);
	c->nt = fl_loha_t_floats(&d);
	c->total = 2 * (c->na + c->nb + c->nt);
	FL_CHECK(c->total == fl_loha_param_count(&d));
	c->mem = calloc(c->total + 1, sizeof(float));
	float *p = c->mem;
	c->f.w1a = p, p += c->na;
	c->f.w1b = p, p += c->nb;
	c->f.w2a = p, p += c->na;
	c->f.w2b = p, p += c->nb;
	c->f.t1 = c->nt ? p : NULL, p += c->nt;
	c->f.t2 = c->nt ? p : NULL;
}

static void case_free(struct case_buf *c)
{
	free(c->mem);
}

/* max |a - b| <= tol * (max |b| + 1e-3) elementwise, i.e. relative to the
 * array's scale: sums of many terms can cancel to values near zero. */
static void check_close(const float *a, const float *b, size_t n, double tol, const char *what)
{
	double mx = 0.0, err = 0.0;
	size_t at = 0;
	for (size_t i = 0; i < n; i++)
		if (fabs(b[i]) > mx)
			mx = fabs(b[i]);
	for (size_t i = 0; i < n; i++) {
		double e = fabs((double)a[i] - b[i]);
		if (e > err)
			err = e, at = i;
	}
	FL_CHECK_MSG(err <= tol * (mx + 1e-3), "%s: max err %.3g at %zu (scale %.3g)", what, err,
		     at, mx);
}

static const char *mode_name(enum fl_loha_mode mode)
{
	return mode == FL_LOHA_MODE_PFEDPARA ? "pfedpara" : "loha";
}

/* BLAS path against the twins for one shape, both modes. The multi-block
 * shapes below assume loha.c's blocking (about 512K floats per block
 * buffer, 32..256 rows); other sizes are odd on purpose. */
static void blas_vs_ref(enum fl_loha_form form, int out, int in, int k1, int k2, int r)
{
	for (int mode = 0; mode < 2; mode++) {
		struct case_buf c, g1, g2;
		case_init(&c, form, out, in, k1, k2, r);
		case_init(&g1, form, out, in, k1, k2, r);
		case_init(&g2, form, out, in, k1, k2, r);
		fl_test_fill_uniform(c.mem, c.total, 11 + mode, -1.0f, 1.0f);
		/* backward adds into the gradients: start from the same non-zero values */
		fl_test_fill_uniform(g1.mem, g1.total, 12, -0.5f, 0.5f);
		memcpy(g2.mem, g1.mem, g1.total * sizeof(float));
		size_t nw = fl_loha_dense_count(&c.d);
		float *w = malloc(nw * sizeof(float)), *wr = malloc(nw * sizeof(float));
		float *dw = malloc(nw * sizeof(float));
		float *work = malloc((fl_loha_work_floats(&c.d) + 1) * sizeof(float));
		fl_test_fill_uniform(dw, nw, 13, -1.0f, 1.0f);
		float s = 0.75f;
		fl_loha_forward(w, work, &c.f, &c.d, s, mode);
		fl_loha_forward_ref(wr, &c.f, &c.d, s, mode);
		char what[128];
		snprintf(what, sizeof(what), "fwd form %d %dx%dx%dx%d r%d %s", form, out, in, k1,
			 k2, r, mode_name(mode));
		check_close(w, wr, nw, 1e-5, what);
		fl_loha_backward(&g1.f, work, dw, &c.f, &c.d, s, mode);
		fl_loha_backward_ref(&g2.f, dw, &c.f, &c.d, s, mode);
		const char *names[6] = {"w1a", "w1b", "w2a", "w2b", "t1", "t2"};
		float *pa[6] = {g1.f.w1a, g1.f.w1b, g1.f.w2a, g1.f.w2b, g1.f.t1, g1.f.t2};
		float *pb[6] = {g2.f.w1a, g2.f.w1b, g2.f.w2a, g2.f.w2b, g2.f.t1, g2.f.t2};
		size_t ns[6] = {c.na, c.nb, c.na, c.nb, c.nt, c.nt};
		for (int k = 0; k < 6; k++) {
			if (!ns[k])
				continue;
			snprintf(what, sizeof(what), "bwd %s form %d %dx%dx%dx%d r%d %s", names[k],
				 form, out, in, k1, k2, r, mode_name(mode));
			check_close(pa[k], pb[k], ns[k], 2e-5, what);
		}
		free(w), free(wr), free(dw), free(work);
		case_free(&c), case_free(&g1), case_free(&g2);
	}
}

static void test_blas_vs_ref_linear(void)
{
	blas_vs_ref(FL_LOHA_FORM_LINEAR, 1, 9, 1, 1, 3);      /* m = 1 */
	blas_vs_ref(FL_LOHA_FORM_LINEAR, 7, 1, 1, 1, 2);      /* n = 1 */
	blas_vs_ref(FL_LOHA_FORM_LINEAR, 13, 17, 1, 1, 1);    /* r = 1 */
	blas_vs_ref(FL_LOHA_FORM_LINEAR, 300, 37, 1, 1, 3);   /* 256 + 44 rows */
	blas_vs_ref(FL_LOHA_FORM_LINEAR, 600, 5, 1, 1, 2);    /* 256 + 256 + 88 rows */
	blas_vs_ref(FL_LOHA_FORM_LINEAR, 130, 4100, 1, 1, 2); /* 127 + 3 rows */
	blas_vs_ref(FL_LOHA_FORM_LINEAR, 5, 3, 3, 3, 2);      /* reshape conv */
	blas_vs_ref(FL_LOHA_FORM_LINEAR, 9, 2, 1, 5, 4);      /* reshape conv 1x5 */
}

static void test_blas_vs_ref_tucker(void)
{
	blas_vs_ref(FL_LOHA_FORM_TUCKER, 1, 2, 3, 3, 2);
	blas_vs_ref(FL_LOHA_FORM_TUCKER, 5, 4, 3, 3, 1);
	blas_vs_ref(FL_LOHA_FORM_TUCKER, 7, 3, 1, 1, 3);
	blas_vs_ref(FL_LOHA_FORM_TUCKER, 6, 5, 3, 2, 3);
	blas_vs_ref(FL_LOHA_FORM_TUCKER, 260, 3, 3, 3, 2); /* two row blocks */
}

static void test_lowrank_vs_ref(void)
{
	int shapes[][3] = {{1, 9, 2}, {13, 17, 1}, {37, 29, 6}, {120, 301, 8}};
	for (int t = 0; t < 4; t++) {
		int m = shapes[t][0], n = shapes[t][1], k = shapes[t][2];
		float *a = malloc(sizeof(float) * m * k), *b = malloc(sizeof(float) * k * n);
		float *w = malloc(sizeof(float) * m * n), *wr = malloc(sizeof(float) * m * n);
		float *ga = malloc(sizeof(float) * m * k), *gb = malloc(sizeof(float) * k * n);
		float *ga2 = malloc(sizeof(float) * m * k), *gb2 = malloc(sizeof(float) * k * n);
		fl_test_fill_uniform(a, (size_t)m * k, 1, -1, 1);
		fl_test_fill_uniform(b, (size_t)k * n, 2, -1, 1);
		fl_test_fill_uniform(ga, (size_t)m * k, 3, -1, 1);
		fl_test_fill_uniform(gb, (size_t)k * n, 4, -1, 1);
		memcpy(ga2, ga, sizeof(float) * m * k);
		memcpy(gb2, gb, sizeof(float) * k * n);
		fl_lowrank_forward(w, a, b, m, n, k, 1.5f);
		fl_lowrank_forward_ref(wr, a, b, m, n, k, 1.5f);
		check_close(w, wr, (size_t)m * n, 1e-5, "lowrank fwd");
		fl_test_fill_uniform(w, (size_t)m * n, 5, -1, 1); /* w is now dL/dW */
		fl_lowrank_backward(ga, gb, w, a, b, m, n, k, 1.5f);
		fl_lowrank_backward_ref(ga2, gb2, w, a, b, m, n, k, 1.5f);
		check_close(ga, ga2, (size_t)m * k, 2e-5, "lowrank da");
		check_close(gb, gb2, (size_t)k * n, 2e-5, "lowrank db");
		free(a), free(b), free(w), free(wr), free(ga), free(gb), free(ga2), free(gb2);
	}
}

/* ---- finite differences in double ---- */

/* P_k entry in double from double factors (a third, independent formula). */
static double dbl_p(const double *a, const double *b, const double *t, const struct fl_loha_dims *d,
		    long row, long col)
{
	double acc = 0.0;
	int r = d->r;
	if (d->form == FL_LOHA_FORM_LINEAR) {
		long n = (long)d->in * d->k1 * d->k2;
		for (int c = 0; c < r; c++)
			acc += a[row * r + c] * b[c * n + col];
		return acc;
	}
	long kk = (long)d->k1 * d->k2, q = col / kk, kl = col % kk;
	for (int j = 0; j < r; j++) {
		double bt = 0.0; /* sum_i a[i, row] t[i, j, kl] */
		for (int i = 0; i < r; i++)
			bt += a[(long)i * d->out + row] * t[((long)i * r + j) * kk + kl];
		acc += bt * b[(long)j * d->in + q];
	}
	return acc;
}

/* L = sum G ⊙ W in double; x holds the factors in case_buf order. */
static double dbl_loss(const double *x, const struct case_buf *c, const float *g, double s,
		       double off)
{
	const double *w1a = x, *w1b = w1a + c->na, *w2a = w1b + c->nb, *w2b = w2a + c->na;
	const double *t1 = w2b + c->nb, *t2 = t1 + c->nt;
	long m = c->d.out, n = (long)c->d.in * c->d.k1 * c->d.k2;
	double l = 0.0;
	for (long i = 0; i < m; i++)
		for (long j = 0; j < n; j++)
			l += g[i * n + j] * s * dbl_p(w1a, w1b, t1, &c->d, i, j) *
			     (dbl_p(w2a, w2b, t2, &c->d, i, j) + off);
	return l;
}

static void fd_case(enum fl_loha_form form, int out, int in, int k1, int k2, int r, int mode)
{
	struct case_buf c, g;
	case_init(&c, form, out, in, k1, k2, r);
	case_init(&g, form, out, in, k1, k2, r);
	fl_test_fill_uniform(c.mem, c.total, 21, -1.0f, 1.0f);
	size_t nw = fl_loha_dense_count(&c.d);
	float *dw = malloc(nw * sizeof(float));
	float *work = malloc((fl_loha_work_floats(&c.d) + 1) * sizeof(float));
	fl_test_fill_uniform(dw, nw, 22, -1.0f, 1.0f);
	double s = 0.6, off = mode == FL_LOHA_MODE_PFEDPARA ? 1.0 : 0.0;
	fl_loha_backward(&g.f, work, dw, &c.f, &c.d, (float)s, mode);
	double *x = malloc(c.total * sizeof(double));
	for (size_t i = 0; i < c.total; i++)
		x[i] = c.mem[i];
	double h = 1e-5, worst = 0.0;
	size_t bad = 0;
	for (size_t i = 0; i < c.total; i++) {
		double keep = x[i];
		x[i] = keep + h;
		double lp = dbl_loss(x, &c, dw, s, off);
		x[i] = keep - h;
		double lm = dbl_loss(x, &c, dw, s, off);
		x[i] = keep;
		double fd = (lp - lm) / (2 * h), an = g.mem[i];
		double e = fabs(fd - an) / (fabs(fd) + 1e-2);
		if (e > worst)
			worst = e;
		bad += e > 1e-4;
	}
	FL_CHECK_MSG(bad == 0, "fd form %d %dx%dx%dx%d r%d %s: %zu of %zu bad, worst rel %.3g",
		     form, out, in, k1, k2, r, mode_name(mode), bad, c.total, worst);
	free(x), free(dw), free(work);
	case_free(&c), case_free(&g);
}

static void test_finite_differences(void)
{
	for (int mode = 0; mode < 2; mode++) {
		fd_case(FL_LOHA_FORM_LINEAR, 5, 7, 1, 1, 3, mode);
		fd_case(FL_LOHA_FORM_LINEAR, 4, 2, 3, 3, 2, mode); /* reshape conv */
		fd_case(FL_LOHA_FORM_TUCKER, 4, 3, 3, 2, 3, mode);
		fd_case(FL_LOHA_FORM_TUCKER, 3, 2, 1, 1, 2, mode);
	}
}

static void test_finite_differences_lowrank(void)
{
	int m = 6, n = 5, k = 3;
	float a[18], b[15], dw[30], ga[18] = {0}, gb[15] = {0};
	fl_test_fill_uniform(a, 18, 31, -1, 1);
	fl_test_fill_uniform(b, 15, 32, -1, 1);
	fl_test_fill_uniform(dw, 30, 33, -1, 1);
	double s = 0.8, x[33];
	fl_lowrank_backward(ga, gb, dw, a, b, m, n, k, (float)s);
	for (int i = 0; i < 18; i++)
		x[i] = a[i];
	for (int i = 0; i < 15; i++)
		x[18 + i] = b[i];
	int bad = 0;
	for (int p = 0; p < 33; p++) {
		double l[2], keep = x[p];
		for (int sgn = 0; sgn < 2; sgn++) {
			x[p] = keep + (sgn ? -1e-5 : 1e-5);
			double acc = 0.0;
			for (int i = 0; i < m; i++)
				for (int j = 0; j < n; j++) {
					double w = 0.0;
					for (int q = 0; q < k; q++)
						w += x[i * k + q] * x[18 + q * n + j];
					acc += dw[i * n + j] * s * w;
				}
			l[sgn] = acc;
		}
		x[p] = keep;
		double fd = (l[0] - l[1]) / 2e-5, an = p < 18 ? ga[p] : gb[p - 18];
		bad += fabs(fd - an) > 1e-4 * (fabs(fd) + 1e-2);
	}
	FL_CHECK(bad == 0);
}

/* ---- rank ---- */

/* Numerical rank: Gaussian elimination with partial pivoting in double; a
 * column whose best pivot is below tol * max|a| adds nothing. W is float,
 * so spurious pivots reach ~2e-6 * max|a| here; genuine ones are >= 4e-3
 * in the cases below, and tol = 1e-5 sits well between them. */
static int numeric_rank(const float *w, int m, int n, double tol)
{
	double *a = malloc(sizeof(double) * m * n), mx = 0.0;
	for (long i = 0; i < (long)m * n; i++) {
		a[i] = w[i];
		if (fabs(a[i]) > mx)
			mx = fabs(a[i]);
	}
	int row = 0;
	for (int col = 0; col < n && row < m; col++) {
		int piv = row;
		for (int i = row + 1; i < m; i++)
			if (fabs(a[(long)i * n + col]) > fabs(a[(long)piv * n + col]))
				piv = i;
		if (fabs(a[(long)piv * n + col]) <= tol * mx)
			continue;
		for (int j = 0; j < n; j++) {
			double t = a[(long)row * n + j];
			a[(long)row * n + j] = a[(long)piv * n + j];
			a[(long)piv * n + j] = t;
		}
		for (int i = row + 1; i < m; i++) {
			double f = a[(long)i * n + col] / a[(long)row * n + col];
			for (int j = col; j < n; j++)
				a[(long)i * n + j] -= f * a[(long)row * n + j];
		}
		row++;
	}
	free(a);
	return row;
}

static void test_rank_property(void)
{
	/* linear 20 x 24, r = 5: r^2 = 25 >= 20 -> full rank 20; low rank with
	 * the same budget has k = 2r = 10 -> rank 10 */
	struct case_buf c;
	case_init(&c, FL_LOHA_FORM_LINEAR, 20, 24, 1, 1, 5);
	struct fl_rng rng;
	fl_rng_seed(&rng, 5);
	fl_loha_init_he(&c.f, &c.d, 1.0f, FL_LOHA_MODE_LOHA, &rng);
	float w[20 * 24];
	float *work = malloc(fl_loha_work_floats(&c.d) * sizeof(float));
	fl_loha_forward(w, work, &c.f, &c.d, 1.0f, FL_LOHA_MODE_LOHA);
	FL_CHECK(numeric_rank(w, 20, 24, 1e-5) == 20);
	FL_CHECK(fl_loha_rank_bound(&c.d, FL_LOHA_MODE_LOHA) == 20);
	int k = fl_lowrank_rank_for_budget(&c.d);
	FL_CHECK(k == 10);
	float a[20 * 10], b[10 * 24];
	fl_lowrank_init_he(a, b, 20, 24, k, 1.0f, &rng);
	fl_lowrank_forward(w, a, b, 20, 24, k, 1.0f);
	FL_CHECK(numeric_rank(w, 20, 24, 1e-5) == 10);
	/* r = 3: r^2 = 9 < 20, so LoHa is rank-limited to 9 */
	struct case_buf c3;
	case_init(&c3, FL_LOHA_FORM_LINEAR, 20, 24, 1, 1, 3);
	fl_loha_init_he(&c3.f, &c3.d, 1.0f, FL_LOHA_MODE_LOHA, &rng);
	fl_loha_forward(w, work, &c3.f, &c3.d, 1.0f, FL_LOHA_MODE_LOHA);
	FL_CHECK(numeric_rank(w, 20, 24, 1e-5) == 9);
	/* pFedPara at r = 3 reaches r^2 + r = 12 */
	fl_loha_forward(w, work, &c3.f, &c3.d, 1.0f, FL_LOHA_MODE_PFEDPARA);
	FL_CHECK_MSG(numeric_rank(w, 20, 24, 1e-5) == 12, "rank %d", numeric_rank(w, 20, 24, 1e-5));
	FL_CHECK(fl_loha_rank_bound(&c3.d, FL_LOHA_MODE_PFEDPARA) == 12);
	free(work);
	case_free(&c), case_free(&c3);

	/* Tucker 16 x 16 x 3 x 3, r = 4: unfolding 16 x 144 reaches rank 16 */
	struct case_buf t;
	case_init(&t, FL_LOHA_FORM_TUCKER, 16, 16, 3, 3, 4);
	fl_loha_init_he(&t.f, &t.d, 1.0f, FL_LOHA_MODE_LOHA, &rng);
	float *wt = malloc(16 * 144 * sizeof(float));
	work = malloc(fl_loha_work_floats(&t.d) * sizeof(float));
	fl_loha_forward(wt, work, &t.f, &t.d, 1.0f, FL_LOHA_MODE_LOHA);
	FL_CHECK(numeric_rank(wt, 16, 144, 1e-5) == 16);
	free(wt), free(work);
	case_free(&t);
}

int main(void)
{
	FL_RUN(test_blas_vs_ref_linear);
	FL_RUN(test_blas_vs_ref_tucker);
	FL_RUN(test_lowrank_vs_ref);
	FL_RUN(test_finite_differences);
	FL_RUN(test_finite_differences_lowrank);
	FL_RUN(test_rank_property);
	return fl_test_main_end();
}
