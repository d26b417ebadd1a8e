/* loha.h - the LoHa / FedPara factor core: composed weights from factors and
 * factor gradients from the weight gradient, for linear layers and Conv2d
 * (reshape and Tucker forms), pFedPara, and the plain low-rank baseline.
 *
 * Shapes and names follow HuggingFace PEFT's LoHa layer (peft/tuners/loha):
 *   linear / reshape conv, m = out, n = in (x K1 x K2 for a conv kernel):
 *     hada_w1_a (m, r)  hada_w1_b (r, n)  hada_w2_a (m, r)  hada_w2_b (r, n)
 *     P_k = w_k_a @ w_k_b                              (m, n)
 *   Tucker ("effective conv2d"), kernel (O, I, K1, K2):
 *     hada_t1, hada_t2 (r, r, K1, K2)  hada_w*_a (r, O)  hada_w*_b (r, I)
 *     P_k = einsum("i j k l, j r, i p -> p r k l", t_k, w_k_b, w_k_a)
 *   modes:
 *     FL_LOHA_MODE_LOHA      W = s * P1 ⊙ P2           (LoHa ΔW, FedPara W)
 *     FL_LOHA_MODE_PFEDPARA  W = s * P1 ⊙ (P2 + 1)     (pFedPara; pair 1 global)
 *   low rank baseline: W = s * A @ B, A (m, k), B (k, n).
 *
 * Kernels do not allocate, log or read globals: the caller passes a work
 * buffer of fl_loha_work_floats() floats. Backward adds into the gradients
 * (zeroing is the caller's step). The BLAS path never keeps both m x n
 * products alive at once; it works on blocks of rows. Every kernel has a
 * naive twin (_ref) used by the tests.
 */
#ifndef FL_LOHA_H
#define FL_LOHA_H

#include "rng.h"

#include <stddef.h>

enum fl_loha_form {
	FL_LOHA_FORM_LINEAR = 0, /* linear, or conv kernel reshaped to O x (I*K1*K2) */
	FL_LOHA_FORM_TUCKER = 1, /* PEFT use_effective_conv2d (k x k kernels only) */
};

enum fl_loha_mode {
	FL_LOHA_MODE_LOHA = 0,
	FL_LOHA_MODE_PFEDPARA = 1,
};

/* out = O (rows), in = I; k1 = k2 = 1 for linear layers. For the linear form
 * the matrix is out x (in * k1 * k2). */
struct fl_loha_dims {
	enum fl_loha_form form;
	int out, in, k1, k2;
	int r;
};

/* Pointers to the six factor tensors (t1, t2 NULL in the linear form). The
 * same struct names parameters and their gradients. */
struct fl_loha_factors {
	float *w1a, *w1b, *w2a, *w2b, *t1, *t2;
};

/* FL_OK when every size the kernels pass to BLAS as an int fits one: out,
 * in, r, k1, k2 >= 1 and out, in, r, k1*k2 and in*k1*k2 <= INT_MAX.
 * FL_ERANGE with a message naming the dimension otherwise. Shapes read from
 * a file or a peer go through it before any kernel runs; it needs no
 * factor memory. */
int fl_loha_dims_check(const struct fl_loha_dims *d);

/* Number of floats in each factor tensor (0 for t1/t2 in the linear form). */
size_t fl_loha_w_a_floats(const struct fl_loha_dims *d);
size_t fl_loha_w_b_floats(const struct fl_loha_dims *d);
size_t fl_loha_t_floats(const struct fl_loha_dims *d);
/* Total factor parameters: linear 2r(m+n); Tucker 2r(O+I+r*K1*K2). */
size_t fl_loha_param_count(const struct fl_loha_dims *d);
/* Views of the six factors packed back to back in p (fl_loha_param_count
 * floats): w1a, w1b, w2a, w2b, then t1, t2 in the Tucker form (NULL
 * otherwise). */
struct fl_loha_factors fl_loha_factors_packed(const struct fl_loha_dims *d, float *p);
/* Dense parameters of the weight: out*in*k1*k2. */
size_t fl_loha_dense_count(const struct fl_loha_dims *d);
/* Upper bound of the rank of the composed weight (reshaped to out x rest):
 * min(r^2, m, n) for LoHa; min(r^2 + r, m, n) for pFedPara
 * (W1 ⊙ W2 + W1 has rank at most r^2 + r). */
long fl_loha_rank_bound(const struct fl_loha_dims *d, enum fl_loha_mode mode);
/* Floats of scratch space forward/backward need. */
size_t fl_loha_work_floats(const struct fl_loha_dims *d);

/* w (out, in, k1, k2) = composed weight. */
void fl_loha_forward(float *w, float *work, const struct fl_loha_factors *f,
		     const struct fl_loha_dims *d, float scale, enum fl_loha_mode mode);
/* Adds dL/d(factor) into grad given dw = dL/dW. */
void fl_loha_backward(struct fl_loha_factors *grad, float *work, const float *dw,
		      const struct fl_loha_factors *f, const struct fl_loha_dims *d, float scale,
		      enum fl_loha_mode mode);
/* Naive loop twins (no BLAS, no work buffer, double accumulation). */
void fl_loha_forward_ref(float *w, const struct fl_loha_factors *f, const struct fl_loha_dims *d,
			 float scale, enum fl_loha_mode mode);
void fl_loha_backward_ref(struct fl_loha_factors *grad, const float *dw,
			  const struct fl_loha_factors *f, const struct fl_loha_dims *d,
			  float scale, enum fl_loha_mode mode);

/* Plain low-rank baseline W = s * a @ b, a (m, k), b (k, n). */
void fl_lowrank_forward(float *w, const float *a, const float *b, int m, int n, int k, float scale);
void fl_lowrank_backward(float *grad_a, float *grad_b, const float *dw, const float *a,
			 const float *b, int m, int n, int k, float scale);
void fl_lowrank_forward_ref(float *w, const float *a, const float *b, int m, int n, int k,
			    float scale);
void fl_lowrank_backward_ref(float *grad_a, float *grad_b, const float *dw, const float *a,
			     const float *b, int m, int n, int k, float scale);

/* ---- rank from gamma (FedPara paper, arXiv 2108.06098, §3.1) ---- */
/* r_min = min(ceil(sqrt(m)), ceil(sqrt(n))), m = out, n = in (Tucker) or
 * in*k1*k2 (linear form). */
int fl_loha_rank_min(const struct fl_loha_dims *d);
/* Largest r whose factor count does not exceed the dense count (>= 1). */
int fl_loha_rank_max(const struct fl_loha_dims *d);
/* round((1-gamma) r_min + gamma r_max), gamma in [0, 1]; d->r is ignored. */
int fl_loha_rank_from_gamma(const struct fl_loha_dims *d, double gamma);
/* Inner dimension k of the low-rank baseline with the budget of FedPara at
 * rank r: floor(2r(m+n) / (m+n)) = 2r in the linear form, and
 * floor(params(d) / (out + in*k1*k2)) in general (>= 1). */
int fl_lowrank_rank_for_budget(const struct fl_loha_dims *d);

/* ---- initialisation ---- */
/* PEFT: init_weights=1 -> kaiming-uniform(a=sqrt 5), i.e. U(+-1/sqrt(fan_in))
 * with torch's fan_in = shape[1]*prod(shape[2:]), on w1a, w1b, w2a, t1, t2
 * and zeros on w2b (W = 0); init_weights=0 -> kaiming-uniform on all.
 * Draw order: t1, w1a, w1b, t2, w2a, w2b (skipping absent tensors). */
void fl_loha_init_peft(struct fl_loha_factors *f, const struct fl_loha_dims *d, int init_weights,
		       struct fl_rng *rng);
/* From-scratch FedPara / pFedPara: i.i.d. normal factors whose composed W
 * has the variance of a He-initialised dense layer, 2 / fan_in (fan_in =
 * in*k1*k2); see the derivation in loha.c. scale is the s used in forward. */
void fl_loha_init_he(struct fl_loha_factors *f, const struct fl_loha_dims *d, float scale,
		     enum fl_loha_mode mode, struct fl_rng *rng);
/* Low-rank baseline with the same He variance. */
void fl_lowrank_init_he(float *a, float *b, int m, int n, int k, float scale, struct fl_rng *rng);

/* ---- PEFT dropouts (training only) ---- */
/* 1 when the whole adapter is skipped this step (uniform draw < p). */
int fl_loha_module_dropout(float p, struct fl_rng *rng);
/* mask[i] = keep_i / mean(keep) over rows, keep_i = (uniform > p); all zeros
 * when every row is dropped (PEFT would divide by zero). Returns the number
 * of kept rows. */
int fl_loha_rank_dropout_mask(float *mask, int rows, float p, struct fl_rng *rng);
/* w[i, :] *= mask[i] for rows x cols; also used on dL/dW in backward. */
void fl_loha_apply_row_mask(float *w, const float *mask, int rows, long cols);

/* ---- merge ---- */
/* w0 += dw / w0 -= dw over n floats. */
void fl_loha_merge(float *w0, const float *dw, size_t n);
void fl_loha_unmerge(float *w0, const float *dw, size_t n);
/* Checks that every w0 + dw is finite before changing anything; returns
 * FL_ENONFINITE (with a message naming `name` and the first bad index) and
 * leaves w0 untouched otherwise. */
int fl_loha_merge_safe(float *w0, const float *dw, size_t n, const char *name);

#endif
