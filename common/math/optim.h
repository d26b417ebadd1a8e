/* optim.h - the client's local optimisers over flat parameter buffers (SGD
 * with momentum, Adam / AdamW), the per-round learning-rate schedule and the
 * FedProx gradient term. The coordinator's server optimisers are in
 * server/engine/server_optim.h.
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
 * checkpoints.
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

/* Helpers for every optimiser's state, the server's too: the checks of a
 * finite x >= 0 and of a beta in [0, 1); zeroed moment buffers of n floats
 * (*m when want_m, *v when want_v; FL_ENOMEM without a message, whatever
 * was allocated stays for _moments_free), and their release (NULLed). */
int fl_optim_finite_nonneg(float x);
int fl_optim_beta_ok(float b);
int fl_optim_moments_alloc(float **m, float **v, size_t n, int want_m, int want_v);
void fl_optim_moments_free(float **m, float **v);

/* Validates cfg (lr >= 0, 0 <= momentum, 0 <= beta < 1, eps > 0, finite
 * values, nesterov only with momentum) and allocates zeroed state for n
 * floats. On failure o is left safe to _free. */
int fl_optim_init(struct fl_optim *o, const struct fl_optim_config *cfg, size_t n);
/* Frees the state; NULL is a no-op. */
void fl_optim_free(struct fl_optim *o);
/* Changes the learning rate for the following steps (e.g. per round). */
void fl_optim_set_lr(struct fl_optim *o, float lr);

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
int fl_optim_step(struct fl_optim *o, float *w, const float *g, const struct fl_optim_range *ranges,
		  size_t nranges);

/* lr * decay^round, round counted from 0 (FedPara: 0.1 * 0.992^round).
 * In double, so a config's decimal decay (0.992) is not rounded to float
 * before the power; pass the result to fl_optim_set_lr. */
double fl_optim_round_lr(double lr, double decay, uint64_t round);

/* FedProx: grad += mu * (w - w_global), the gradient of
 * mu/2 ||w - w_global||^2, over n floats. The caller applies it only to the
 * transmitted tensors' ranges (pass pointers offset into the buffers). */
void fl_optim_add_prox(float *grad, const float *w, const float *w_global, size_t n, float mu);

#endif
