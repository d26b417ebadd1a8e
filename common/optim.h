/* optim.h - optimisers over flat parameter buffers: the client's local
 * optimisers (SGD with momentum, Adam / AdamW), the per-round learning-rate
 * schedule, the FedProx gradient term, and the coordinator's server
 * optimisers (FedAvg, FedAvgM, FedAdam, FedYogi, FedAdagrad).
 *
 * All parameters of a model live in one contiguous float buffer; gradients
 * and optimiser state mirror it. An optimiser owns its state buffers
 * (allocated in _init, freed in _free). Steps do not allocate, log or read
 * globals, and are deterministic (plain sequential loops, fixed order).
 *
 * Trainable subsets are given as ranges: an array of [off, off + len) spans
 * of floats in the flat buffer (NULL = every float). A model's tensors are
 * contiguous views, so a frozen tensor (e.g. the base weight under a LoHa
 * adapter) is simply left out of the list and stays bit-identical; its
 * optimiser state is not touched either.
 *
 * This module does not compute gradients, aggregate client updates or write
 * checkpoints; it exposes the server state so the checkpoint code can.
 */
#ifndef FL_OPTIM_H
#define FL_OPTIM_H

#include <stddef.h>
#include <stdint.h>

/* One span of trainable floats: [off, off + len). */
struct fl_optim_range {
	size_t off, len;
};

/* ---- client optimisers ---- */

enum fl_optim_kind {
	FL_OPTIM_SGD = 0,  /* torch.optim.SGD (dampening 0) */
	FL_OPTIM_ADAM = 1, /* torch.optim.Adam, or AdamW with decoupled = 1 */
};

struct fl_optim_config {
	enum fl_optim_kind kind;
	float lr;
	float weight_decay; /* SGD and Adam: coupled L2 (g += wd * w); AdamW: decoupled */
	/* SGD */
	float momentum; /* 0 = plain SGD, no state buffer */
	int nesterov;   /* needs momentum > 0 */
	/* Adam */
	float beta1, beta2, eps;
	int decoupled; /* 1 = AdamW: w *= 1 - lr * wd before the Adam step */
};

/* PyTorch defaults: SGD lr 0.1 (FedPara paper), momentum 0, wd 0;
 * Adam lr 1e-3, betas (0.9, 0.999), eps 1e-8, wd 0 (AdamW: wd 1e-2). */
void fl_optim_config_default(struct fl_optim_config *cfg, enum fl_optim_kind kind);

/* State mirrors the n parameters. m: SGD momentum buffer or Adam exp_avg
 * (NULL for plain SGD); v: Adam exp_avg_sq (NULL for SGD). step counts
 * fl_optim_step calls (Adam's bias correction uses it). */
struct fl_optim {
	struct fl_optim_config cfg;
	size_t n;
	float *m;
	float *v;
	uint64_t step;
};

/* Validates cfg (lr >= 0, 0 <= momentum, 0 <= beta < 1, eps > 0, finite
 * values, nesterov only with momentum) and allocates zeroed state for n
 * floats. On failure o is left safe to _free. */
int fl_optim_init(struct fl_optim *o, const struct fl_optim_config *cfg, size_t n);
/* Frees the state; NULL is a no-op. */
void fl_optim_free(struct fl_optim *o);
/* Changes the learning rate for the following steps (e.g. per round). */
void fl_optim_set_lr(struct fl_optim *o, float lr);
/* Zeroes the state and the step count (a fresh local optimiser per round). */
void fl_optim_reset(struct fl_optim *o);

/* One step: w -= update(g) over the given ranges (NULL, 0 = all n floats).
 * Floats outside the ranges, in w and in the state, are not touched.
 * Ranges must lie inside [0, n) (FL_EINVAL otherwise, nothing changed);
 * they should not overlap. PyTorch semantics:
 *   SGD:  d = g + wd*w; buf = momentum*buf + d (first step buf = d, the
 *         zero-initialised buffer gives exactly that since dampening is 0);
 *         d = nesterov ? d + momentum*buf : buf; w -= lr*d.
 *   Adam: g += wd*w (coupled) or w *= 1 - lr*wd (AdamW);
 *         m += (1-b1)(g - m); v = b2 v + (1-b2) g^2;
 *         w -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps).
 * The step count is shared by all ranges: pass the same trainable set at
 * every step of one optimiser's life (as a torch param group would). */
int fl_optim_step(struct fl_optim *o, float *w, const float *g,
		  const struct fl_optim_range *ranges, size_t nranges);

/* lr * decay^round, round counted from 0 (FedPara: 0.1 * 0.992^round).
 * In double, so a config's decimal decay (0.992) is not rounded to float
 * before the power; pass the result to fl_optim_set_lr. */
double fl_optim_round_lr(double lr, double decay, uint64_t round);

/* FedProx: grad += mu * (w - w_global), the gradient of
 * mu/2 ||w - w_global||^2, over n floats. The caller applies it only to the
 * transmitted tensors' ranges (pass pointers offset into the buffers). */
void fl_optim_add_prox(float *grad, const float *w, const float *w_global, size_t n, float mu);

/* ---- server optimisers ---- */

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
enum fl_server_opt_kind {
	FL_SERVER_OPT_FEDAVG = 0,
	FL_SERVER_OPT_FEDAVGM = 1,
	FL_SERVER_OPT_FEDADAM = 2,
	FL_SERVER_OPT_FEDYOGI = 3,
	FL_SERVER_OPT_FEDADAGRAD = 4,
};

struct fl_server_opt_config {
	enum fl_server_opt_kind kind;
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
void fl_server_opt_config_default(struct fl_server_opt_config *cfg, enum fl_server_opt_kind kind);

/* "fedavg" | "fedavgm" | "fedadam" | "fedyogi" | "fedadagrad" | "fedprox".
 * FedProx aggregates with FedAvg on the server: it gives FEDAVG and sets
 * *prox = 1 (the clients add the proximal term); *prox = 0 otherwise.
 * prox may be NULL. FL_EINVAL with a message listing the names otherwise. */
int fl_server_opt_parse(const char *s, enum fl_server_opt_kind *kind, int *prox);
/* Overrides of the defaults: each value < 0 leaves its field as it is. */
void fl_server_opt_config_set(struct fl_server_opt_config *cfg, double eta, double beta1,
			      double beta2, double tau);
/* Which given setting the strategy would ignore: the first of eta (server
 * lr), beta1, beta2, tau that is given (flag set) but unused by `kind`, as
 * "server-lr" / "server-beta1" / "server-beta2" / "server-tau"; NULL when
 * every given one is used. */
const char *fl_server_opt_unused(enum fl_server_opt_kind kind, int eta, int beta1, int beta2,
				 int tau);
/* "fedavg", ... ; "unknown" for an out-of-range value. */
const char *fl_server_opt_name(enum fl_server_opt_kind kind);

/* m: fedavgm momentum / adaptive first moment (NULL for fedavg);
 * v: second moment (NULL for fedavg, fedavgm). step counts the rounds
 * applied. */
struct fl_server_opt {
	struct fl_server_opt_config cfg;
	size_t n;
	float *m;
	float *v;
	uint64_t step;
};

/* Validates cfg (finite, eta >= 0, 0 <= beta < 1, tau >= 0, and tau > 0
 * for the adaptive methods) and allocates zeroed state for n floats. On
 * failure o is left safe to _free. */
int fl_server_opt_init(struct fl_server_opt *o, const struct fl_server_opt_config *cfg, size_t n);
void fl_server_opt_free(struct fl_server_opt *o);

/* One server round on the n transmitted floats: x (the current global, in
 * place) becomes the new global given y (the aggregated average). n must
 * equal the n given to _init (FL_ESHAPE). A non-finite y is refused with
 * FL_ENONFINITE before anything changes (x, state and step untouched). */
int fl_server_opt_step(struct fl_server_opt *o, float *x, const float *y, size_t n);

/* Borrowed views of the state for a checkpoint: *m, *v may be NULL (see
 * above); *n floats each; *step rounds applied. Any out pointer may be
 * NULL. Valid until the next _step, _restore or _free. */
void fl_server_opt_state(const struct fl_server_opt *o, const float **m, const float **v,
			 size_t *n, uint64_t *step);
/* Copies saved state back (bit-exact). m / v must be given exactly when the
 * kind keeps them, n must match, values must be finite and v >= 0;
 * otherwise FL_EINVAL / FL_ESHAPE / FL_ENONFINITE and nothing changes. */
int fl_server_opt_restore(struct fl_server_opt *o, const float *m, const float *v, size_t n,
			  uint64_t step);

#endif
