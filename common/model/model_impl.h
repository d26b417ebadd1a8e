/* model_impl.h - the model's private structures, shared by model.c,
 * model_run.c and model_io.c only. Not part of the public API. */
#ifndef FL_MODEL_IMPL_H
#define FL_MODEL_IMPL_H

#include "layers.h"
#include "model.h"
#include "model_desc.h"

/* Slots of a weight layer's tensors in the model's tensor table. */
enum fl_layer_tensor {
	FL_LT_WEIGHT = 0,
	FL_LT_BIAS,
	FL_LT_W1A,
	FL_LT_W1B,
	FL_LT_W2A,
	FL_LT_W2B,
	FL_LT_T1,
	FL_LT_T2,
	FL_LT_LORA_A, /* (k, n) */
	FL_LT_LORA_B, /* (m, k) */
	FL_LT_COUNT
};

struct fl_layer {
	enum fl_layer_kind kind;
	char name[FL_MODEL_MODULE_NAME_MAX];
	/* Conv2d, pools, GroupNorm, tokens: the input and output images;
	 * Linear: in_c = in features, out_c = out; Embedding: the weight
	 * (num, dim) as out_c = num, in_c = dim */
	int in_c, in_h, in_w;
	int out_c, out_h, out_w;
	size_t in_numel, out_numel; /* values per sample in and out (every kind) */
	int rows; /* Linear, LayerNorm: rows per sample (the leading dims); Embedding: ids */
	int k, stride, pad; /* Conv2d / pools */
	int has_bias;
	float p;           /* Dropout */
	int src[3], nsrc;  /* layers whose outputs are the inputs, -1 = the model's input */
	int tokens, dim;   /* (T, D) of position, attention, mean_tokens; LayerNorm: dim */
	int heads, groups; /* attention; GroupNorm */
	float eps;         /* norms */
	float *stat;       /* norms: mean and rstd, (2, max_batch, groups or rows) */
	enum fl_peft_param param;
	struct fl_loha_dims ld; /* LoHa family */
	int lowrank_k;
	int lowrank_tucker; /* lowrank: k from the Tucker fedpara budget */
	float scale;
	float rank_dropout, module_dropout; /* loha only */
	int t[FL_LT_COUNT];                 /* tensor indices, -1 when absent */
	float *act, *dact;                  /* output and its gradient, (max_batch, out) */
	int32_t *pool_idx;                  /* MaxPool2d argmax cache */
	float *drop_mask;                   /* Dropout: this step's mask (max_batch, out) */
	int dropped;                        /* Dropout: the mask applies this step */
	float *weff, *dweff;                /* composed weight and dL/dW (parameterised) */
	float *mask;                        /* rank-dropout row mask (loha) */
	int skip, masked;                   /* module dropped / rows masked this step */
};

struct fl_model {
	char arch[64]; /* the description's label */
	struct fl_model_desc *desc;
	int c, h, w, classes;
	enum fl_peft_param param;
	int init_weights;
	int nlayers;
	struct fl_layer *layers;         /* one per description step */
	struct fl_model_tensor *tensors; /* at most FL_LT_COUNT per layer */
	size_t ntensors, tensors_cap;
	float *params, *grads;
	size_t nparams;
	struct fl_optim_range *ranges; /* at most one per tensor */
	size_t nranges;
	int max_batch, batch;
	const float *input;
	float *conv_work, *loha_work, *attn_work;
	size_t conv_work_floats, loha_work_floats, attn_work_floats;
	int stale; /* composed weights must be recomputed before evaluation */
};

/* Pointer to tensor t's values (NULL for t < 0). */
float *fl_model_tensor_ptr(struct fl_model *m, int t);
/* The factor pointers of layer li inside `base` (params or grads). */
void fl_model_layer_factors(struct fl_model *m, int li, float *base, struct fl_loha_factors *f);

/* Layer li's initial values from stream li of seed (model_values.c). */
void fl_model_init_layer(struct fl_model *m, int li, uint64_t seed);
/* The output of layer i (i = -1: the model's input). */
const float *fl_model_layer_output(const struct fl_model *m, int i);
/* The weight a weight layer computes with: its own, or the composed one. */
const float *fl_model_layer_weight(struct fl_model *m, struct fl_layer *L);
/* dW (L->dweff) of parameterised layer li into its factors' gradients. */
void fl_model_factor_backward(struct fl_model *m, int li);
/* Forward and backward of the sequence and norm layers (model_seq.c):
 * GroupNorm, LayerNorm, Embedding, tokens, position, attention,
 * mean_tokens. Backward ADDS into the dact of the layer's sources. */
void fl_model_seq_forward(struct fl_model *m, int i, const float *in, int batch);
void fl_model_seq_backward(struct fl_model *m, int i, const float *dy, int batch);

#endif
