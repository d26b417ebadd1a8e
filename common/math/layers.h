/* layers.h - forward/backward kernels of the layers local training needs:
 * Linear, Conv2d, ReLU, GELU, MaxPool2d, AvgPool2d, dropout and softmax
 * cross-entropy. Batched, NCHW,
 * PyTorch weight layouts (Linear weight (out, in), Conv2d weight
 * (O, C, K1, K2)), single precision.
 *
 * Conventions (llm.c style):
 * - Argument order: outputs, caches/work, inputs, parameters, sizes.
 * - Backward ADDS into every gradient it produces, parameter gradients and
 *   the input gradient dx alike; the caller zeroes them. Any gradient pointer
 *   may be NULL and is then skipped (dx NULL for a first layer, dw NULL for a
 *   frozen weight).
 * - Kernels never allocate, log or read globals. Conv2d needs a work buffer
 *   of fl_conv2d_work_floats() floats, passed in by the caller.
 * - Matrix products go through fl_blas_sgemm; Linear and Conv2d have naive
 *   loop twins (_ref, double accumulation, no work buffer) for the tests.
 * - Sizes are trusted: a layer's dims are validated once, when the model is
 *   built (fl_conv2d_dims_check, fl_pool2d_dims_check); kernels assert.
 *
 * Flatten needs no kernel: an NCHW tensor (B, C, H, W) stored contiguously is
 * already the (B, C*H*W) matrix PyTorch's flatten(1) produces, in the same
 * order, and its gradient is the same memory too.
 *
 * The sequence and normalisation kernels (LayerNorm, GroupNorm, Embedding,
 * tokens, position, attention, mean over tokens) follow at the end; they
 * live in layers_seq.c, attention.c and layers_seq_ref.c.
 *
 * Not here: LoHa / FedPara weight composition (loha.h), optimisers, model
 * graphs.
 */
#ifndef FL_LAYERS_H
#define FL_LAYERS_H

#include <stddef.h>
#include <stdint.h>

struct fl_rng;

/* ---- Linear --------------------------------------------------------------
 * x (B, in), w (out, in), b (out) or NULL, y (B, out):
 *   y = x w^T + b
 * backward (each term skipped when its output is NULL):
 *   dw += dy^T x    db += sum_B dy    dx += dy w
 */
void fl_linear_forward(float *y, const float *x, const float *w, const float *b, int batch, int in,
		       int out);
void fl_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
			const float *w, int batch, int in, int out);
void fl_linear_forward_ref(float *y, const float *x, const float *w, const float *b, int batch,
			   int in, int out);
void fl_linear_backward_ref(float *dx, float *dw, float *db, const float *dy, const float *x,
			    const float *w, int batch, int in, int out);

/* ---- Conv2d --------------------------------------------------------------
 * x (B, C, H, W), w (O, C, K1, K2), b (O) or NULL, y (B, O, OH, OW),
 * symmetric zero padding p, stride s (both directions):
 *   OH = (H + 2p - K1) / s + 1,  OW = (W + 2p - K2) / s + 1
 *   y[n,o,i,j] = b[o] + sum_{c,u,v} w[o,c,u,v] x[n, c, i*s+u-p, j*s+v-p]
 * Implemented as im2col + sgemm over chunks of samples (the columns are
 * recomputed in backward, nothing is cached); backward: dw, db, dx (col2im).
 */
struct fl_conv2d_dims {
	int batch;
	int in_c, in_h, in_w;
	int out_c;
	int k_h, k_w;
	int stride, pad;
};

int fl_conv2d_out_h(const struct fl_conv2d_dims *d);
int fl_conv2d_out_w(const struct fl_conv2d_dims *d);
/* FL_OK, or FL_EINVAL (with a detail) for impossible dims: non-positive
 * sizes or stride, negative padding, a kernel larger than the padded input,
 * or tensors too large for int indexing. */
int fl_conv2d_dims_check(const struct fl_conv2d_dims *d);
/* Floats of scratch space forward and backward need (the same for both).
 * Never decreases as the batch grows: a buffer sized for the largest batch
 * serves every smaller one. Dims must pass fl_conv2d_dims_check. */
size_t fl_conv2d_work_floats(const struct fl_conv2d_dims *d);

void fl_conv2d_forward(float *y, float *work, const float *x, const float *w, const float *b,
		       const struct fl_conv2d_dims *d);
void fl_conv2d_backward(float *dx, float *dw, float *db, float *work, const float *dy,
			const float *x, const float *w, const struct fl_conv2d_dims *d);
void fl_conv2d_forward_ref(float *y, const float *x, const float *w, const float *b,
			   const struct fl_conv2d_dims *d);
void fl_conv2d_backward_ref(float *dx, float *dw, float *db, const float *dy, const float *x,
			    const float *w, const struct fl_conv2d_dims *d);

/* ---- ReLU ----------------------------------------------------------------
 * y = max(x, 0) over n floats; y == x (in place) is allowed.
 * backward uses the output: dx += dy where y > 0.
 */
void fl_relu_forward(float *y, const float *x, size_t n);
void fl_relu_backward(float *dx, const float *y, const float *dy, size_t n);

/* ---- MaxPool2d -----------------------------------------------------------
 * x (B, C, H, W), y (B, C, OH, OW), kernel k x k, stride s, no padding,
 * floor mode (PyTorch defaults): OH = (H - k) / s + 1, OW = (W - k) / s + 1.
 * idx (B, C, OH, OW) caches the argmax of each window as an offset within its
 * (H, W) input plane (as PyTorch's return_indices). Ties go to the first
 * element in row-major window order; a NaN wins over numbers.
 * backward: dx[plane + idx] += dy.
 */
struct fl_pool2d_dims {
	int batch, channels;
	int in_h, in_w;
	int k, stride;
};

int fl_pool2d_out_h(const struct fl_pool2d_dims *d);
int fl_pool2d_out_w(const struct fl_pool2d_dims *d);
/* FL_OK, or FL_EINVAL (with a detail) for impossible dims. */
int fl_pool2d_dims_check(const struct fl_pool2d_dims *d);

void fl_maxpool2d_forward(float *y, int32_t *idx, const float *x, const struct fl_pool2d_dims *d);
void fl_maxpool2d_backward(float *dx, const int32_t *idx, const float *dy,
			   const struct fl_pool2d_dims *d);

/* ---- AvgPool2d -----------------------------------------------------------
 * x (B, C, H, W), y (B, C, OH, OW), the dims and output size of MaxPool2d
 * (F.avg_pool2d without padding, floor mode): y = the mean of each k x k
 * window. backward: dx += dy / (k*k) over each window (windows overlap when
 * stride < k, and their shares add). The _ref twins are naive loops with
 * double accumulation, for the tests.
 */
void fl_avgpool2d_forward(float *y, const float *x, const struct fl_pool2d_dims *d);
void fl_avgpool2d_backward(float *dx, const float *dy, const struct fl_pool2d_dims *d);
void fl_avgpool2d_forward_ref(float *y, const float *x, const struct fl_pool2d_dims *d);
void fl_avgpool2d_backward_ref(float *dx, const float *dy, const struct fl_pool2d_dims *d);

/* ---- GELU ----------------------------------------------------------------
 * The exact (erf) form, F.gelu's default: y = 0.5 x (1 + erf(x / sqrt 2))
 * over n floats; y == x (in place) is allowed.
 * backward uses the input: dx += dy * (Phi(x) + x phi(x)), Phi and phi the
 * standard normal CDF and density. erf and exp are vmath.h's vectorised
 * approximations (erf within 4e-7, exp within about an ulp), not erff/expf.
 */
void fl_gelu_forward(float *y, const float *x, size_t n);
void fl_gelu_backward(float *dx, const float *x, const float *dy, size_t n);

/* ---- Dropout -------------------------------------------------------------
 * nn.Dropout in training mode, with p in [0, 1). fl_dropout_mask draws one
 * fl_rng_uniform u in [0, 1) per element, in order: u < p drops (mask 0),
 * else the element is kept with mask 1 / (1 - p). p == 0 keeps everything
 * (mask 1) and still draws n numbers, so the stream position depends only on
 * n. forward: y = x * mask (y == x allowed); backward: dx += dy * mask.
 */
void fl_dropout_mask(float *mask, size_t n, float p, struct fl_rng *rng);
void fl_dropout_forward(float *y, const float *x, const float *mask, size_t n);
void fl_dropout_backward(float *dx, const float *dy, const float *mask, size_t n);

/* ---- Softmax cross-entropy -----------------------------------------------
 * logits (B, C), labels (B) in [0, C) (out of range is a caller bug: assert).
 * forward: *loss = mean over the batch of -log softmax(logits)[label]
 * (log-sum-exp with max subtraction, accumulated in double); *correct = the
 * number of rows whose argmax (first on ties) equals the label. loss,
 * correct and probs may each be NULL; probs (B, C), when given, receives
 * softmax(logits) and is the cache backward needs.
 * backward: dlogits += (probs - onehot(labels)) / B  (adds, like every
 * backward here).
 */
void fl_softmax_ce_forward(double *loss, int *correct, float *probs, const float *logits,
			   const int *labels, int batch, int classes);
void fl_softmax_ce_backward(float *dlogits, const float *probs, const int *labels, int batch,
			    int classes);

/* ---- LayerNorm -----------------------------------------------------------
 * nn.LayerNorm over the last dim: x (rows, dim), w, b (dim);
 *   y = (x - mean) * rstd * w + b,  rstd = 1 / sqrt(var + eps),
 * var the population variance of the row (statistics in double). mean and
 * rstd (rows each) are written by forward and are the caches of backward:
 *   dw += sum_rows dy * xhat   db += sum_rows dy
 *   dx += rstd * (g - mean(g) - xhat * mean(g * xhat)),  g = dy * w,
 * xhat = (x - mean) * rstd. The _ref twins are naive double loops (the
 * reference backward recomputes the statistics, it reads no cache).
 */
void fl_layernorm_forward(float *y, float *mean, float *rstd, const float *x, const float *w,
			  const float *b, int rows, int dim, float eps);
void fl_layernorm_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
			   const float *mean, const float *rstd, const float *w, int rows, int dim);
void fl_layernorm_forward_ref(float *y, const float *x, const float *w, const float *b, int rows,
			      int dim, float eps);
void fl_layernorm_backward_ref(float *dx, float *dw, float *db, const float *dy, const float *x,
			       const float *w, int rows, int dim, float eps);

/* ---- GroupNorm -----------------------------------------------------------
 * nn.GroupNorm: x (B, C, HW), `groups` divides C; the statistics of each
 * (sample, group) run over its (C / groups) * HW values (contiguous in
 * memory); w, b per channel (C). mean and rstd (B * groups) are the caches.
 * Backward is LayerNorm's per group, with w per channel.
 */
void fl_groupnorm_forward(float *y, float *mean, float *rstd, const float *x, const float *w,
			  const float *b, int batch, int channels, int hw, int groups, float eps);
void fl_groupnorm_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
			   const float *mean, const float *rstd, const float *w, int batch,
			   int channels, int hw, int groups);
void fl_groupnorm_forward_ref(float *y, const float *x, const float *w, const float *b, int batch,
			      int channels, int hw, int groups, float eps);
void fl_groupnorm_backward_ref(float *dx, float *dw, float *db, const float *dy, const float *x,
			       const float *w, int batch, int channels, int hw, int groups,
			       float eps);

/* ---- Embedding -----------------------------------------------------------
 * nn.Embedding: ids (n) are floats holding integers in [0, num) (checked by
 * the caller; asserted), w (num, dim); y (n, dim) = w[id].
 * backward: dw[id] += dy row by row (repeated ids add up).
 */
void fl_embedding_forward(float *y, const float *ids, const float *w, int n, int num, int dim);
void fl_embedding_backward(float *dw, const float *dy, const float *ids, int n, int num, int dim);

/* ---- Tokens --------------------------------------------------------------
 * x (B, C, HW) -> y (B, HW, C), x.flatten(2).transpose(1, 2);
 * backward: dx (B, C, HW) += the transpose of dy back.
 */
void fl_tokens_forward(float *y, const float *x, int batch, int channels, int hw);
void fl_tokens_backward(float *dx, const float *dy, int batch, int channels, int hw);

/* ---- Position ------------------------------------------------------------
 * y (B, T, D) = x + p (T, D) broadcast over B; y == x allowed.
 * backward: dx += dy, dp += sum over B of dy.
 */
void fl_position_forward(float *y, const float *x, const float *p, int batch, int tokens, int dim);
void fl_position_backward(float *dx, float *dp, const float *dy, int batch, int tokens, int dim);

/* ---- Multi-head self-attention core --------------------------------------
 * No mask. q, k, v, o (B, T, D), D = heads * hd; for each sample and head h
 * (columns h*hd .. (h+1)*hd - 1 of every row):
 *   o_h = softmax(q_h k_h^T / sqrt(hd)) v_h.
 * The heads are strided views of the rows (leading dimension D) handed to
 * fl_blas_sgemm; nothing is copied out. Nothing (B, heads, T, T)-sized is
 * held: forward computes one (T, T) probability block at a time, backward
 * recomputes each block from q and k with the same code, so the only scratch
 * is work, fl_attention_work_floats(T) = 2 T^2 floats (forward uses the
 * first T^2; backward the probabilities and their gradient).
 * backward ADDS into dq, dk, dv (each may be NULL). The _ref twins are naive
 * double loops that need no work buffer (they recompute softmax rows, and
 * are slow beyond a few dozen tokens: tests only).
 */
size_t fl_attention_work_floats(int tokens);
void fl_attention_forward(float *o, float *work, const float *q, const float *k, const float *v,
			  int batch, int tokens, int dim, int heads);
void fl_attention_backward(float *dq, float *dk, float *dv, float *work, const float *dout,
			   const float *q, const float *k, const float *v, int batch, int tokens,
			   int dim, int heads);
void fl_attention_forward_ref(float *o, const float *q, const float *k, const float *v, int batch,
			      int tokens, int dim, int heads);
void fl_attention_backward_ref(float *dq, float *dk, float *dv, const float *dout, const float *q,
			       const float *k, const float *v, int batch, int tokens, int dim,
			       int heads);

/* ---- Mean over tokens ----------------------------------------------------
 * x (B, T, D) -> y (B, D) = x.mean(1); backward: dx += dy / T.
 */
void fl_mean_tokens_forward(float *y, const float *x, int batch, int tokens, int dim);
void fl_mean_tokens_backward(float *dx, const float *dy, int batch, int tokens, int dim);

#endif
