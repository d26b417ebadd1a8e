/* test_server_optim.c - the server optimisers against their formulas and
 * across a state save / restore; strategy names and unused settings. */
#include "errors.h"
#include "server_optim.h"
#include "testutil.h"

#include <math.h>
#include <string.h>

#define N4 4

static const float X0[N4] = {0.5f, -1.0f, 2.0f, 0.0f};
static const float Y[2][N4] = {
	{0.6f, -1.2f, 2.0f, 0.05f},
	{0.55f, -1.1f, 2.3f, -0.02f},
};

static double sgn(double a)
{
	return (a > 0) - (a < 0);
}

/* One round of the formula in double (t is the 1-based round). */
static void ref_server(double *x, double *m, double *v, const double *y, int t,
		       const struct srv_optim_config *c)
{
	double b1 = c->beta1, b2 = c->beta2, eta = c->eta, tau = c->tau;
	if (c->kind == SRV_OPTIM_FEDADAM && c->bias_correction)
		eta = eta * sqrt(1 - pow(b2, t + 1.0)) / (1 - pow(b1, t + 1.0));
	for (int i = 0; i < N4; i++) {
		double d = y[i] - x[i];
		switch (c->kind) {
		case SRV_OPTIM_FEDAVG: x[i] = y[i]; break;
		case SRV_OPTIM_FEDAVGM:
			m[i] = b1 * m[i] + d;
			x[i] += eta * m[i];
			break;
		default:
			m[i] = b1 * m[i] + (1 - b1) * d;
			if (c->kind == SRV_OPTIM_FEDADAM)
				v[i] = b2 * v[i] + (1 - b2) * d * d;
			else if (c->kind == SRV_OPTIM_FEDYOGI)
				v[i] = v[i] - (1 - b2) * d * d * sgn(v[i] - d * d);
			else
				v[i] = v[i] + d * d;
			x[i] += eta * m[i] / (sqrt(v[i]) + tau);
			break;
		}
	}
}

static void check_server_kind(const struct srv_optim_config *cfg)
{
	struct srv_optim o;
	FL_CHECK(srv_optim_init(&o, cfg, N4) == FL_OK);
	float x[N4];
	double rx[N4], rm[N4] = {0}, rv[N4] = {0};
	memcpy(x, X0, sizeof(x));
	fl_test_widen(rx, X0, N4);
	for (int t = 0; t < 2; t++) {
		double ry[N4];
		fl_test_widen(ry, Y[t], N4);
		FL_CHECK(srv_optim_step(&o, x, Y[t], N4) == FL_OK);
		ref_server(rx, rm, rv, ry, t + 1, cfg);
		for (int i = 0; i < N4; i++) {
			FL_CHECK_MSG(fabs(x[i] - rx[i]) <= 1e-6 * fabs(rx[i]) + 2e-7,
				     "%s round %d x[%d] = %.9g, formula %.9g",
				     srv_optim_name(cfg->kind), t + 1, i, (double)x[i], rx[i]);
			if (o.m)
				FL_CHECK_NEAR(o.m[i], rm[i], 1e-5, 1e-7);
			if (o.v)
				FL_CHECK_NEAR(o.v[i], rv[i], 1e-5, 1e-9);
		}
	}
	FL_CHECK(o.step == 2);
	srv_optim_free(&o);
}

static void test_server_formulas(void)
{
	for (int k = SRV_OPTIM_FEDAVG; k <= SRV_OPTIM_FEDADAGRAD; k++) {
		struct srv_optim_config cfg;
		srv_optim_config_default(&cfg, (enum srv_optim_kind)k);
		check_server_kind(&cfg);
		/* and with non-default settings that make every term matter */
		cfg.eta = 0.5f;
		cfg.beta1 = 0.8f;
		cfg.beta2 = 0.9f;
		cfg.tau = 0.01f;
		check_server_kind(&cfg);
	}
	struct srv_optim_config cfg;
	srv_optim_config_default(&cfg, SRV_OPTIM_FEDADAM);
	cfg.bias_correction = 0;
	check_server_kind(&cfg);

	/* FedAvg copies y; FedAvgM with eta 1, beta 0 lands on y too. */
	float x[N4];
	memcpy(x, X0, sizeof(x));
	struct srv_optim o;
	srv_optim_config_default(&cfg, SRV_OPTIM_FEDAVG);
	FL_CHECK(srv_optim_init(&o, &cfg, N4) == FL_OK);
	FL_CHECK(o.m == NULL && o.v == NULL);
	FL_CHECK(srv_optim_step(&o, x, Y[0], N4) == FL_OK);
	FL_CHECK(memcmp(x, Y[0], sizeof(x)) == 0);
	srv_optim_free(&o);

	/* Defaults as documented (Flower serverapp strategies). */
	srv_optim_config_default(&cfg, SRV_OPTIM_FEDADAM);
	FL_CHECK(cfg.eta == 0.1f && cfg.beta1 == 0.9f && cfg.beta2 == 0.99f && cfg.tau == 1e-3f);
	srv_optim_config_default(&cfg, SRV_OPTIM_FEDYOGI);
	FL_CHECK(cfg.eta == 0.01f && cfg.beta1 == 0.9f && cfg.beta2 == 0.99f && cfg.tau == 1e-3f);
	srv_optim_config_default(&cfg, SRV_OPTIM_FEDADAGRAD);
	FL_CHECK(cfg.eta == 0.1f && cfg.beta1 == 0.0f && cfg.tau == 1e-3f);
	srv_optim_config_default(&cfg, SRV_OPTIM_FEDAVGM);
	FL_CHECK(cfg.eta == 1.0f && cfg.beta1 == 0.9f);
}

static void test_server_errors(void)
{
	struct srv_optim_config cfg;
	struct srv_optim o;
	srv_optim_config_default(&cfg, SRV_OPTIM_FEDYOGI);
	cfg.tau = 0.0f;
	FL_CHECK(srv_optim_init(&o, &cfg, N4) == FL_EINVAL);
	srv_optim_free(&o);
	srv_optim_config_default(&cfg, SRV_OPTIM_FEDAVGM);
	cfg.beta1 = 1.5f;
	FL_CHECK(srv_optim_init(&o, &cfg, N4) == FL_EINVAL);
	cfg.kind = (enum srv_optim_kind)42;
	FL_CHECK(srv_optim_init(&o, &cfg, N4) == FL_EINVAL);

	srv_optim_config_default(&cfg, SRV_OPTIM_FEDADAM);
	FL_CHECK(srv_optim_init(&o, &cfg, N4) == FL_OK);
	float x[N4], y[N4];
	memcpy(x, X0, sizeof(x));
	memcpy(y, Y[0], sizeof(y));
	y[2] = NAN;
	FL_CHECK(srv_optim_step(&o, x, y, N4) == FL_ENONFINITE);
	FL_CHECK(memcmp(x, X0, sizeof(x)) == 0 && o.step == 0 && o.m[0] == 0.0f);
	FL_CHECK(srv_optim_step(&o, x, Y[0], 3) == FL_ESHAPE);
	srv_optim_free(&o);
}

/* Export after two rounds, restore into a fresh optimiser, continue: the
 * third round must be bit-identical. */
static void test_server_restore(void)
{
	const float y3[N4] = {0.7f, -0.9f, 2.1f, 0.01f};
	for (int k = SRV_OPTIM_FEDAVG; k <= SRV_OPTIM_FEDADAGRAD; k++) {
		struct srv_optim_config cfg;
		srv_optim_config_default(&cfg, (enum srv_optim_kind)k);
		struct srv_optim a, b;
		FL_CHECK(srv_optim_init(&a, &cfg, N4) == FL_OK);
		float xa[N4];
		memcpy(xa, X0, sizeof(xa));
		for (int t = 0; t < 2; t++)
			FL_CHECK(srv_optim_step(&a, xa, Y[t], N4) == FL_OK);
		const float *m, *v;
		size_t n;
		uint64_t step;
		srv_optim_state(&a, &m, &v, &n, &step);
		FL_CHECK(n == N4 && step == 2);
		FL_CHECK((m != NULL) == (k != SRV_OPTIM_FEDAVG));
		FL_CHECK((v != NULL) == (k >= SRV_OPTIM_FEDADAM));
		/* a checkpoint copy, as the checkpoint code would write it */
		float ms[N4] = {0}, vs[N4] = {0};
		if (m)
			memcpy(ms, m, sizeof(ms));
		if (v)
			memcpy(vs, v, sizeof(vs));
		float xb[N4];
		memcpy(xb, xa, sizeof(xb));

		FL_CHECK(srv_optim_init(&b, &cfg, N4) == FL_OK);
		/* mismatches are refused */
		FL_CHECK(srv_optim_restore(&b, m ? ms : NULL, v ? vs : NULL, 3, step) == FL_ESHAPE);
		if (m)
			FL_CHECK(srv_optim_restore(&b, NULL, v ? vs : NULL, N4, step) == FL_EINVAL);
		if (v) {
			float bad[N4];
			memcpy(bad, vs, sizeof(bad));
			bad[1] = -1.0f;
			FL_CHECK(srv_optim_restore(&b, ms, bad, N4, step) == FL_ENONFINITE);
			FL_CHECK(srv_optim_restore(&b, ms, NULL, N4, step) == FL_EINVAL);
		} else {
			FL_CHECK(srv_optim_restore(&b, m ? ms : NULL, vs, N4, step) == FL_EINVAL);
		}
		FL_CHECK(b.step == 0);
		FL_CHECK(srv_optim_restore(&b, m ? ms : NULL, v ? vs : NULL, N4, step) == FL_OK);
		FL_CHECK(b.step == 2);

		FL_CHECK(srv_optim_step(&a, xa, y3, N4) == FL_OK);
		FL_CHECK(srv_optim_step(&b, xb, y3, N4) == FL_OK);
		FL_CHECK(memcmp(xa, xb, sizeof(xa)) == 0);
		if (m)
			FL_CHECK(memcmp(a.m, b.m, sizeof(ms)) == 0);
		if (v)
			FL_CHECK(memcmp(a.v, b.v, sizeof(vs)) == 0);
		srv_optim_free(&a);
		srv_optim_free(&b);
	}
}

static void test_server_parse(void)
{
	enum srv_optim_kind k;
	int prox = -1;
	const char *names[] = {"fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad"};
	for (int i = 0; i < 5; i++) {
		FL_CHECK(srv_optim_parse(names[i], &k, &prox) == FL_OK);
		FL_CHECK((int)k == i && prox == 0);
		FL_CHECK(strcmp(srv_optim_name(k), names[i]) == 0);
	}
	FL_CHECK(srv_optim_parse("fedprox", &k, &prox) == FL_OK);
	FL_CHECK(k == SRV_OPTIM_FEDAVG && prox == 1);
	FL_CHECK(srv_optim_parse("fedprox", &k, NULL) == FL_OK);
	FL_CHECK(srv_optim_parse("FedAdam", &k, &prox) == FL_EINVAL);
	FL_CHECK(strstr(fl_error_msg(), "FedAdam") != NULL);
	FL_CHECK(strstr(fl_error_msg(), "fedyogi") != NULL);
	FL_CHECK(srv_optim_parse("", &k, NULL) == FL_EINVAL);
	FL_CHECK(srv_optim_parse(NULL, &k, NULL) == FL_EINVAL);
	FL_CHECK(strcmp(srv_optim_name((enum srv_optim_kind)9), "unknown") == 0);
}

/* Which --server-* settings each strategy uses (optim.c's formulas). */
static void test_server_unused(void)
{
	FL_CHECK(srv_optim_unused(SRV_OPTIM_FEDAVG, 0, 0, 0, 0) == NULL);
	FL_CHECK(!strcmp(srv_optim_unused(SRV_OPTIM_FEDAVG, 1, 0, 0, 0), "server-lr"));
	FL_CHECK(!strcmp(srv_optim_unused(SRV_OPTIM_FEDAVG, 0, 1, 0, 0), "server-beta1"));
	FL_CHECK(srv_optim_unused(SRV_OPTIM_FEDAVGM, 1, 1, 0, 0) == NULL);
	FL_CHECK(!strcmp(srv_optim_unused(SRV_OPTIM_FEDAVGM, 1, 1, 1, 0), "server-beta2"));
	FL_CHECK(!strcmp(srv_optim_unused(SRV_OPTIM_FEDAVGM, 0, 0, 0, 1), "server-tau"));
	FL_CHECK(srv_optim_unused(SRV_OPTIM_FEDADAM, 1, 1, 1, 1) == NULL);
	FL_CHECK(srv_optim_unused(SRV_OPTIM_FEDYOGI, 1, 1, 1, 1) == NULL);
	FL_CHECK(srv_optim_unused(SRV_OPTIM_FEDADAGRAD, 1, 1, 0, 1) == NULL);
	FL_CHECK(!strcmp(srv_optim_unused(SRV_OPTIM_FEDADAGRAD, 0, 0, 1, 0), "server-beta2"));
}

int main(void)
{
	srv_optim_free(NULL);
	FL_RUN(test_server_formulas);
	FL_RUN(test_server_errors);
	FL_RUN(test_server_restore);
	FL_RUN(test_server_parse);
	FL_RUN(test_server_unused);
	return fl_test_main_end();
}
