/* server_optim.h - the coordinator's server optimisers (FedAvg, FedAvgM,
 * FedAdam, FedYogi, FedAdagrad) over the flat buffer of transmitted floats.
 *
 * An optimiser owns its state buffers (allocated in _init, freed in _free);
 * steps do not allocate, log or read globals, and are deterministic (plain
 * sequential loops, fixed order). The state is exposed so the checkpoint
 * code can save and restore it. Aggregation itself is aggregate.h.
 */
#ifndef SRV_SERVER_OPTIM_H
#define SRV_SERVER_OPTIM_H

#include <stddef.h>
#include <stdint.h>

/* Given the current global x and the aggregated client average y (the
 * FedAvg result), with pseudo-gradient D = y - x. Rules and defaults follow
 * Flower (flwr.serverapp.strategy, framework/py/flwr/serverapp/strategy/
 * fedavgm.py, fedopt.py, fedadam.py, fedyogi.py, fedadagrad.py, 2025),
 * which implement Reddi et al. 2021, "Adaptive Federated Optimization":
 *   fedavg:     x = y
 *   fedavgm:    m = beta1 m + D (m starts at 0, so the first m = D);
 *               x += eta m                              (Hsu et al. 2019)
 *   fedadam:    m = b1 m + (1-b1) D;  v = b2 v + (1-b2) D^2;
 *               x += eta_t m / (sqrt(v) + tau),
 *               eta_t = eta sqrt(1 - b2^(t+1)) / (1 - b1^(t+1)) with t the
 *               1-based round (Flower's "eta_norm"; bias_correction = 0
 *               gives the paper's eta_t = eta)
 *   fedyogi:    m as fedadam; v = v - (1-b2) D^2 sign(v - D^2);
 *               x += eta m / (sqrt(v) + tau)
 *   fedadagrad: m as fedadam (Flower fixes b1 = 0, so m = D);
 *               v = v + D^2;  x += eta m / (sqrt(v) + tau)
 * m and v start at zero (Flower; the paper allows v_0 >= tau^2). */
enum srv_optim_kind {
	SRV_OPTIM_FEDAVG = 0,
	SRV_OPTIM_FEDAVGM = 1,
	SRV_OPTIM_FEDADAM = 2,
	SRV_OPTIM_FEDYOGI = 3,
	SRV_OPTIM_FEDADAGRAD = 4,
};

struct srv_optim_config {
	enum srv_optim_kind kind;
	float eta;           /* server learning rate */
	float beta1;         /* fedavgm: momentum; adaptive: first moment */
	float beta2;         /* fedadam, fedyogi */
	float tau;           /* adaptivity, added after sqrt(v) */
	int bias_correction; /* fedadam only: Flower's eta_norm (default 1) */
};

/* Defaults (Flower serverapp strategies):
 *   fedavg      -
 *   fedavgm     eta 1.0, beta1 0.9 (Flower's server_momentum default is
 *               0.0, which makes FedAvgM plain FedAvg; 0.9 is the value
 *               of Hsu et al. and of this project's issue)
 *   fedadam     eta 0.1, beta1 0.9, beta2 0.99, tau 1e-3, bias correction
 *   fedyogi     eta 0.01, beta1 0.9, beta2 0.99, tau 1e-3
 *   fedadagrad  eta 0.1, beta1 0.0, tau 1e-3
 * (The older flwr.server.strategy classes use tau 1e-9 for FedAdam and
 * FedAdagrad.) */
void srv_optim_config_default(struct srv_optim_config *cfg, enum srv_optim_kind kind);

/* "fedavg" | "fedavgm" | "fedadam" | "fedyogi" | "fedadagrad" | "fedprox".
 * FedProx aggregates with FedAvg on the server: it gives FEDAVG and sets
 * *prox = 1 (the clients add the proximal term); *prox = 0 otherwise.
 * prox may be NULL. FL_EINVAL with a message listing the names otherwise. */
int srv_optim_parse(const char *s, enum srv_optim_kind *kind, int *prox);
/* Overrides of the defaults: each value < 0 leaves its field as it is. */
void srv_optim_config_set(struct srv_optim_config *cfg, double eta, double beta1, double beta2,
			  double tau);
/* Which given setting the strategy would ignore: the first of eta (server
 * lr), beta1, beta2, tau that is given (flag set) but unused by `kind`, as
 * "server-lr" / "server-beta1" / "server-beta2" / "server-tau"; NULL when
 * every given one is used. */
const char *srv_optim_unused(enum srv_optim_kind kind, int eta, int beta1, int beta2, int tau);
/* "fedavg", ... ; "unknown" for an out-of-range value. */
const char *srv_optim_name(enum srv_optim_kind kind);

/* m: fedavgm momentum / adaptive first moment (NULL for fedavg);
 * v: second moment (NULL for fedavg, fedavgm). step counts the rounds
 * applied. */
struct srv_optim {
	struct srv_optim_config cfg;
	size_t n;
	float *m;
	float *v;
	uint64_t step;
};

/* Validates cfg (finite, eta >= 0, 0 <= beta < 1, tau >= 0, and tau > 0
 * for the adaptive methods) and allocates zeroed state for n floats. On
 * failure o is left safe to _free. */
int srv_optim_init(struct srv_optim *o, const struct srv_optim_config *cfg, size_t n);
void srv_optim_free(struct srv_optim *o);

/* One server round on the n transmitted floats: x (the current global, in
 * place) becomes the new global given y (the aggregated average). n must
 * equal the n given to _init (FL_ESHAPE). A non-finite y is refused with
 * FL_ENONFINITE before anything changes (x, state and step untouched). */
int srv_optim_step(struct srv_optim *o, float *x, const float *y, size_t n);

/* Borrowed views of the state for a checkpoint: *m, *v may be NULL (see
 * above); *n floats each; *step rounds applied. Any out pointer may be
 * NULL. Valid until the next _step, _restore or _free. */
void srv_optim_state(const struct srv_optim *o, const float **m, const float **v, size_t *n,
		     uint64_t *step);
/* Copies saved state back (bit-exact). m / v must be given exactly when the
 * kind keeps them, n must match, values must be finite and v >= 0;
 * otherwise FL_EINVAL / FL_ESHAPE / FL_ENONFINITE and nothing changes. */
int srv_optim_restore(struct srv_optim *o, const float *m, const float *v, size_t n, uint64_t step);

#endif
