/* test_optim.c - client optimisers against PyTorch formulas (and numbers
 * from torch.optim), trainable ranges, the round schedule and the FedProx
 * term. The server optimisers are test_server_optim.c. */
#include "errors.h"
#include "optim.h"
#include "testutil.h"

#include <math.h>
#include <string.h>

#define N4 4
static const float W0[N4] = {0.5f, -1.0f, 2.0f, -0.25f};
static const float G[3][N4] = {
	{0.1f, -0.2f, 0.3f, 0.05f},
	{-0.05f, 0.4f, 0.1f, -0.3f},
	{0.2f, 0.1f, -0.25f, 0.15f},
};

/* Generated once with torch 1.13 (Debian python3-torch) by
 *   p = Parameter(tensor(W0, float32)); opt = torch.optim.X(...)
 *   for g in G: p.grad = tensor(g); opt.step()
 * and pasted here; rows are p after each step. */
static const float TORCH_ADAM[3][N4] = {
	/* Adam(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01) */
	{0.49000001f, -0.99000001f, 1.99000001f, -0.25999999f},
	{0.486781836f, -0.993378162f, 1.98111367f, -0.253687143f},
	{0.479990721f, -0.997210443f, 1.97898948f, -0.252062887f},
};
static const float TORCH_ADAMW[3][N4] = {
	/* AdamW(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1) */
	{0.489500016f, -0.989000022f, 1.98800004f, -0.259750009f},
	{0.486347139f, -0.991672099f, 1.97730148f, -0.253251076f},
	{0.479279667f, -0.994836986f, 1.97400808f, -0.251499623f},
};
static const float TORCH_SGD_NESTEROV[3][N4] = {
	/* SGD(lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True) */
	{0.480952501f, -0.961905003f, 1.94280994f, -0.259476244f},
	{0.482286572f, -1.02157319f, 1.89924443f, -0.20649147f},
	{0.44096306f, -1.05822074f, 1.91644239f, -0.214297235f},
};

/* PyTorch SGD in double: d = g + wd w; buf = mom buf + d (first: d);
 * d = nesterov ? d + mom buf : buf; w -= lr d. */
static void ref_sgd(double *w, double *buf, const float *g, size_t n, double lr, double wd,
		    double mom, int nesterov, int first)
{
	for (size_t i = 0; i < n; i++) {
		double d = g[i] + wd * w[i];
		if (mom != 0.0) {
			buf[i] = first ? d : mom * buf[i] + d;
			d = nesterov ? d + mom * buf[i] : buf[i];
		}
		w[i] -= lr * d;
	}
}

/* PyTorch Adam / AdamW in double. */
static void ref_adam(double *w, double *m, double *v, const float *g, size_t n, int t, double lr,
		     double b1, double b2, double eps, double wd, int decoupled)
{
	for (size_t i = 0; i < n; i++) {
		double gi = g[i];
		if (decoupled)
			w[i] *= 1.0 - lr * wd;
		else
			gi += wd * w[i];
		m[i] = b1 * m[i] + (1.0 - b1) * gi;
		v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
		double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t);
		w[i] -= lr / bc1 * m[i] / (sqrt(v[i]) / sqrt(bc2) + eps);
	}
}

/* Dyadic values: every float operation of three momentum steps is exact, so
 * the float optimiser must equal the double formula bit for bit. */
static void test_sgd_exact_dyadic(void)
{
	float w[N4] = {1.0f, -2.0f, 0.5f, 3.0f};
	const float g[3][N4] = {
		{0.25f, -0.5f, 1.0f, 0.125f},
		{-0.75f, 0.5f, 0.25f, -1.0f},
		{0.5f, 0.25f, -0.125f, 0.375f},
	};
	double rw[N4], rb[N4] = {0};
	fl_test_widen(rw, w, N4);
	struct fl_optim_config cfg;
	fl_optim_config_default(&cfg, FL_OPTIM_SGD);
	cfg.lr = 0.5f;
	cfg.momentum = 0.5f;
	cfg.weight_decay = 0.25f;
	struct fl_optim o;
	FL_CHECK(fl_optim_init(&o, &cfg, N4) == FL_OK);
	FL_CHECK(o.m != NULL && o.v == NULL);
	for (int t = 0; t < 3; t++) {
		FL_CHECK(fl_optim_step(&o, w, g[t], NULL, 0) == FL_OK);
		ref_sgd(rw, rb, g[t], N4, 0.5, 0.25, 0.5, 0, t == 0);
		for (int i = 0; i < N4; i++) {
			FL_CHECK_MSG(w[i] == (float)rw[i], "step %d w[%d] %.9g != %.9g", t, i,
				     (double)w[i], rw[i]);
			FL_CHECK(o.m[i] == (float)rb[i]);
		}
	}
	FL_CHECK(o.step == 3);
	fl_optim_free(&o);
}

static void test_sgd_momentum_wd(void)
{
	for (int nesterov = 0; nesterov <= 1; nesterov++) {
		float w[N4];
		double rw[N4], rb[N4] = {0};
		memcpy(w, W0, sizeof(w));
		fl_test_widen(rw, W0, N4);
		struct fl_optim_config cfg;
		fl_optim_config_default(&cfg, FL_OPTIM_SGD);
		cfg.lr = 0.1f;
		cfg.momentum = 0.9f;
		cfg.weight_decay = 5e-4f;
		cfg.nesterov = nesterov;
		struct fl_optim o;
		FL_CHECK(fl_optim_init(&o, &cfg, N4) == FL_OK);
		for (int t = 0; t < 3; t++) {
			FL_CHECK(fl_optim_step(&o, w, G[t], NULL, 0) == FL_OK);
			ref_sgd(rw, rb, G[t], N4, cfg.lr, cfg.weight_decay, cfg.momentum, nesterov,
				t == 0);
			for (int i = 0; i < N4; i++)
				FL_CHECK_NEAR(w[i], rw[i], 1e-6, 1e-7);
			if (nesterov)
				FL_CHECK_ARRAY_NEAR(w, TORCH_SGD_NESTEROV[t], N4, 1e-6, 1e-7);
		}
		fl_optim_free(&o);
	}
	/* momentum 0: plain SGD keeps no state */
	struct fl_optim_config cfg;
	fl_optim_config_default(&cfg, FL_OPTIM_SGD);
	struct fl_optim o;
	FL_CHECK(fl_optim_init(&o, &cfg, N4) == FL_OK);
	FL_CHECK(o.m == NULL && o.v == NULL);
	float w[N4];
	memcpy(w, W0, sizeof(w));
	FL_CHECK(fl_optim_step(&o, w, G[0], NULL, 0) == FL_OK);
	for (int i = 0; i < N4; i++)
		FL_CHECK(w[i] == W0[i] - 0.1f * G[0][i]);
	fl_optim_free(&o);
}

static void test_adam(void)
{
	for (int decoupled = 0; decoupled <= 1; decoupled++) {
		struct fl_optim_config cfg;
		fl_optim_config_default(&cfg, FL_OPTIM_ADAM);
		FL_CHECK(cfg.beta1 == 0.9f && cfg.beta2 == 0.999f && cfg.eps == 1e-8f);
		cfg.lr = 0.01f;
		cfg.weight_decay = decoupled ? 0.1f : 0.01f;
		cfg.decoupled = decoupled;
		struct fl_optim o;
		FL_CHECK(fl_optim_init(&o, &cfg, N4) == FL_OK);
		float w[N4];
		double rw[N4], rm[N4] = {0}, rv[N4] = {0};
		memcpy(w, W0, sizeof(w));
		fl_test_widen(rw, W0, N4);
		for (int t = 0; t < 3; t++) {
			FL_CHECK(fl_optim_step(&o, w, G[t], NULL, 0) == FL_OK);
			/* the formula with torch's double hyper-parameters */
			ref_adam(rw, rm, rv, G[t], N4, t + 1, 0.01, 0.9, 0.999, 1e-8,
				 decoupled ? 0.1 : 0.01, decoupled);
			for (int i = 0; i < N4; i++)
				FL_CHECK_NEAR(w[i], rw[i], 1e-6, 0);
			FL_CHECK_ARRAY_NEAR(w, decoupled ? TORCH_ADAMW[t] : TORCH_ADAM[t], N4, 1e-6,
					    0);
		}
		fl_optim_free(&o);
	}
}

/* Steps on ranges leave the rest of w and of the state bit-identical, and
 * the trained spans move exactly as a full step on their own would. */
static void test_ranges(void)
{
	enum {
		N = 12
	};
	float w[N], g[N], w0[N];
	fl_test_fill_uniform(w, N, 1, -1.0f, 1.0f);
	fl_test_fill_uniform(g, N, 2, -1.0f, 1.0f);
	memcpy(w0, w, sizeof(w));
	const struct fl_optim_range r[2] = {{1, 3}, {7, 4}};
	for (int kind = 0; kind <= 1; kind++) {
		struct fl_optim_config cfg;
		fl_optim_config_default(&cfg, (enum fl_optim_kind)kind);
		cfg.momentum = 0.9f;
		cfg.weight_decay = 0.01f;
		struct fl_optim o, s;
		FL_CHECK(fl_optim_init(&o, &cfg, N) == FL_OK);
		FL_CHECK(fl_optim_init(&s, &cfg, 3) == FL_OK); /* twin on span [1, 4) alone */
		memcpy(w, w0, sizeof(w));
		float ws[3];
		memcpy(ws, w0 + 1, sizeof(ws));
		for (int t = 0; t < 3; t++) {
			FL_CHECK(fl_optim_step(&o, w, g, r, 2) == FL_OK);
			FL_CHECK(fl_optim_step(&s, ws, g + 1, NULL, 0) == FL_OK);
		}
		FL_CHECK(memcmp(ws, w + 1, sizeof(ws)) == 0);
		const int frozen[] = {0, 4, 5, 6, 11};
		for (size_t k = 0; k < sizeof(frozen) / sizeof(frozen[0]); k++) {
			int i = frozen[k];
			FL_CHECK(memcmp(&w[i], &w0[i], sizeof(float)) == 0);
			FL_CHECK(o.m[i] == 0.0f);
			FL_CHECK(!o.v || o.v[i] == 0.0f);
		}
		for (int i = 7; i < 11; i++)
			FL_CHECK(w[i] != w0[i]);
		/* out-of-bounds and overflowing ranges are refused, nothing moves */
		float before[N];
		memcpy(before, w, sizeof(w));
		const struct fl_optim_range bad1[2] = {{0, 2}, {10, 3}};
		const struct fl_optim_range bad2[1] = {{5, (size_t)-1}};
		FL_CHECK(fl_optim_step(&o, w, g, bad1, 2) == FL_EINVAL);
		FL_CHECK(fl_optim_step(&o, w, g, bad2, 1) == FL_EINVAL);
		FL_CHECK(memcmp(before, w, sizeof(w)) == 0);
		FL_CHECK(o.step == 3);
		/* an empty range list steps nothing */
		FL_CHECK(fl_optim_step(&o, w, g, r, 0) == FL_OK);
		FL_CHECK(memcmp(before, w, sizeof(w)) == 0);
		fl_optim_free(&o);
		fl_optim_free(&s);
	}
}

static void test_config_errors(void)
{
	struct fl_optim o;
	struct fl_optim_config cfg;
	fl_optim_config_default(&cfg, FL_OPTIM_SGD);
	cfg.lr = NAN;
	FL_CHECK(fl_optim_init(&o, &cfg, 4) == FL_EINVAL);
	fl_optim_free(&o); /* safe after a failed init */
	fl_optim_config_default(&cfg, FL_OPTIM_SGD);
	cfg.nesterov = 1;
	FL_CHECK(fl_optim_init(&o, &cfg, 4) == FL_EINVAL);
	FL_CHECK(strstr(fl_error_msg(), "nesterov") != NULL);
	fl_optim_config_default(&cfg, FL_OPTIM_ADAM);
	cfg.beta2 = 1.0f;
	FL_CHECK(fl_optim_init(&o, &cfg, 4) == FL_EINVAL);
	fl_optim_config_default(&cfg, FL_OPTIM_ADAM);
	cfg.weight_decay = -1.0f;
	FL_CHECK(fl_optim_init(&o, &cfg, 4) == FL_EINVAL);
	fl_optim_free(NULL);
	/* n = 0 is a valid, empty optimiser */
	fl_optim_config_default(&cfg, FL_OPTIM_ADAM);
	FL_CHECK(fl_optim_init(&o, &cfg, 0) == FL_OK);
	FL_CHECK(fl_optim_step(&o, NULL, NULL, NULL, 0) == FL_OK);
	fl_optim_free(&o);
}

static void test_round_lr(void)
{
	FL_CHECK(fl_optim_round_lr(0.1, 0.992, 0) == 0.1);
	FL_CHECK_NEAR(fl_optim_round_lr(0.1, 0.992, 1), 0.0992, 1e-15, 0);
	/* Python: 0.1 * 0.992 ** 100, 0.1 * 0.992 ** 500 */
	FL_CHECK_NEAR(fl_optim_round_lr(0.1, 0.992, 100), 0.04478857194030783, 1e-14, 0);
	FL_CHECK_NEAR(fl_optim_round_lr(0.1, 0.992, 500), 0.0018023373266311074, 1e-14, 0);
	FL_CHECK(fl_optim_round_lr(0.05, 1.0, 1000) == 0.05);
	struct fl_optim o;
	struct fl_optim_config cfg;
	fl_optim_config_default(&cfg, FL_OPTIM_SGD);
	FL_CHECK(fl_optim_init(&o, &cfg, 1) == FL_OK);
	fl_optim_set_lr(&o, (float)fl_optim_round_lr(0.1, 0.992, 3));
	FL_CHECK_NEAR(o.cfg.lr, 0.1 * pow(0.992, 3), 1e-6, 0);
	fl_optim_free(&o);
}

static void test_prox(void)
{
	float grad[3] = {1.0f, -2.0f, 0.5f};
	const float w[3] = {0.5f, 1.0f, -1.0f};
	const float wg[3] = {0.25f, 2.0f, -1.0f};
	fl_optim_add_prox(grad, w, wg, 3, 0.5f);
	FL_CHECK(grad[0] == 1.125f);
	FL_CHECK(grad[1] == -2.5f);
	FL_CHECK(grad[2] == 0.5f);
	/* mu = 0 leaves the gradient alone; the term matches a finite
	 * difference of mu/2 ||w - wg||^2 */
	float g2[1] = {0.0f};
	const float w1[1] = {0.3f}, wg1[1] = {-0.2f};
	fl_optim_add_prox(g2, w1, wg1, 1, 0.0f);
	FL_CHECK(g2[0] == 0.0f);
	fl_optim_add_prox(g2, w1, wg1, 1, 0.01f);
	double h = 1e-4, mu = 0.01, a = 0.3 + h - -0.2, b = 0.3 - h - -0.2;
	FL_CHECK_NEAR(g2[0], (mu / 2 * a * a - mu / 2 * b * b) / (2 * h), 1e-5, 0);
}

int main(void)
{
	FL_RUN(test_sgd_exact_dyadic);
	FL_RUN(test_sgd_momentum_wd);
	FL_RUN(test_adam);
	FL_RUN(test_ranges);
	FL_RUN(test_config_errors);
	FL_RUN(test_round_lr);
	FL_RUN(test_prox);
	return fl_test_main_end();
}
