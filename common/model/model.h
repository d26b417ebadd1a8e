/* model.h - a model is a named sequence of layers (PyTorch names) whose
 * parameters live in one contiguous buffer, indexed by a table of named
 * tensors. Every weight layer (Linear, Conv2d) is parameterised one way:
 *
 *   dense     <name>.weight                       trained, transmitted
 *   fedpara   <name>.hada_w1_a/_b, hada_w2_a/_b   W = P1 ⊙ P2 (s = 1), no W0;
 *             (+ hada_t1/_t2 in Tucker form)      all transmitted
 *   pfedpara  the same names;                     W = P1 ⊙ (P2 + 1); pair 1
 *                                                 transmitted, pair 2 local
 *   lowrank   <name>.lora_B.weight (m, k),        W = B A, k chosen so the
 *             <name>.lora_A.weight (k, n)         budget equals fedpara's
 *   loha      <name>.weight frozen (base) +       W = W0 + s P1 ⊙ P2 (PEFT),
 *             hada_* factors                      only the factors travel
 *
 * Biases are <name>.bias: trained and transmitted, except under loha where
 * they belong to the frozen base (as in PEFT). Which weight layers are
 * parameterised comes from a PEFT-format config (peft_config.h): by default
 * every Linear and Conv2d except the output layer.
 *
 * Every tensor carries flags, so the wire and the aggregator never guess.
 * Gradients mirror the parameter buffer. This module builds models and runs
 * them (forward, backward); it does not train (train.h) or save (model_io.h).
 */
#ifndef FL_MODEL_H
#define FL_MODEL_H

#include "loha.h"
#include "model_desc.h"
#include "optim.h"
#include "peft_config.h"
#include "rng.h"

#include <stddef.h>
#include <stdint.h>

#define FL_MODEL_NAME_MAX 128
#define FL_MODEL_PARAMS_MAX (1u << 28) /* floats in one model's parameter buffer (1 GiB) */
#define FL_MODEL_ACTS_MAX (1u << 26)   /* activation values per sample, all layers */
#define FL_MODEL_NDIM_MAX 4

enum fl_tensor_flag {
	FL_TENSOR_TRAINABLE = 1u << 0, /* updated by local training */
	FL_TENSOR_GLOBAL = 1u << 1,    /* sent to / received from the coordinator */
	FL_TENSOR_LOCAL = 1u << 2,     /* client-private, persisted by the client */
	FL_TENSOR_BASE = 1u << 3,      /* frozen pretrained weight (loha mode) */
};

struct fl_model_tensor {
	char name[FL_MODEL_NAME_MAX]; /* "fc1.weight", "fc1.hada_w1_a", ... */
	int ndim;
	int64_t shape[FL_MODEL_NDIM_MAX];
	size_t offset; /* in floats, into params / grads */
	size_t numel;
	unsigned flags;
	int layer; /* index of the owning layer */
};

enum fl_layer_kind {
	FL_LAYER_LINEAR = 0,
	FL_LAYER_CONV2D,
	FL_LAYER_RELU,
	FL_LAYER_MAXPOOL,
	FL_LAYER_FLATTEN,
	FL_LAYER_GELU,
	FL_LAYER_AVGPOOL,
	FL_LAYER_DROPOUT,
	FL_LAYER_RESIDUAL, /* adds the output of an earlier layer (x + f(x)) */
	FL_LAYER_GROUPNORM,
	FL_LAYER_LAYERNORM,
	FL_LAYER_EMBEDDING,
	FL_LAYER_TOKENS,
	FL_LAYER_POSITION,
	FL_LAYER_ATTENTION, /* the core of an attention module; its projections are Linears */
	FL_LAYER_MEAN_TOKENS,
};

/* 1 for the kinds with a weight a PEFT config may target and parameterise:
 * Linear, Conv2d and Embedding. */
int fl_layer_kind_weight(enum fl_layer_kind kind);

/* Opaque: layers, activations, work buffers. */
struct fl_model;

/* Builds the network of description d (model_desc.h). cfg selects and
 * shapes the parameterisation (cfg->parameterization, r / gamma / patterns,
 * alpha, dropouts, use_effective_conv2d, init_weights); NULL = all dense.
 * Parameters are initialised from `seed`: dense layers as PyTorch does
 * (kaiming-uniform a=sqrt 5 weights, U(+-1/sqrt fan_in) biases), fedpara /
 * pfedpara / lowrank factors with fl_loha_init_he, loha factors as PEFT
 * (fl_loha_init_peft; the base weights are initialised too and are then
 * usually replaced by fl_model_load_base). max_batch bounds the batch of
 * forward/backward. Layer i draws its initial values from stream i of
 * seed. */
int fl_model_new_desc(const struct fl_model_desc *d, const struct fl_peft_config *cfg,
		      uint64_t seed, int max_batch, struct fl_model **out);
/* fl_model_new_desc of the built-in network `arch` ("2nn", "cnn", "mlp";
 * fl_model_desc_builtin) for inputs (c, h, w) and `classes` outputs. */
int fl_model_new(const char *arch, int c, int h, int w, int classes,
		 const struct fl_peft_config *cfg, uint64_t seed, int max_batch,
		 struct fl_model **out);
/* The model a command's --model NAME / --model-file FILE ask for, for data
 * set ds (fl_model_desc_pick), after checking that ds's samples have the
 * model's input shape (FL_ESHAPE) and its labels are below the model's
 * classes (FL_EINVAL): fl_model_desc_check_data, model_data.h. */
struct fl_dataset;
int fl_model_new_for_data(const char *name, const char *file, const struct fl_dataset *ds,
			  const struct fl_peft_config *cfg, uint64_t seed, int max_batch,
			  struct fl_model **out);
void fl_model_free(struct fl_model *m);

/* The batch-sized buffers (activations and their gradients, pool indices,
 * the convolutions' work area: most of a model's memory at a large max
 * batch, ~65 MB for the cnn at batch 128) exist from fl_model_new on.
 * on = 0 frees them, e.g. while a client waits for its next round; on = 1
 * allocates whatever is missing (FL_ENOMEM on failure, nothing lost).
 * forward / backward need them: fl_trainer_new calls fl_model_buffers(m, 1).
 * Parameters, gradients and composed weights are never touched. */
int fl_model_buffers(struct fl_model *m, int on);
int fl_model_has_buffers(const struct fl_model *m);

/* The description's label: the built-in's name, its "name" or "custom". */
const char *fl_model_arch(const struct fl_model *m);
/* The description the model was built from (owned by the model). */
const struct fl_model_desc *fl_model_description(const struct fl_model *m);
/* The largest batch forward/backward accept (fl_model_new's max_batch). */
int fl_model_max_batch(const struct fl_model *m);
enum fl_peft_param fl_model_param(const struct fl_model *m);
/* The input as (c, h, w): an image input [C, H, W] as it is, a flat input
 * [F] as (1, 1, F) (the data sets' convention, dataset.h). */
void fl_model_input_dims(const struct fl_model *m, int *c, int *h, int *w, int *classes);

/* The parameter buffer (owned by the model) and its gradient twin. After
 * writing parameters directly, call fl_model_params_changed(). */
float *fl_model_params(struct fl_model *m);
float *fl_model_grads(struct fl_model *m);
size_t fl_model_param_floats(const struct fl_model *m);
void fl_model_params_changed(struct fl_model *m);

size_t fl_model_tensor_count(const struct fl_model *m);
const struct fl_model_tensor *fl_model_tensor_at(const struct fl_model *m, size_t i);
/* NULL when absent. */
const struct fl_model_tensor *fl_model_tensor_find(const struct fl_model *m, const char *name);
/* Floats in tensors having all of `flags`. */
size_t fl_model_count_floats(const struct fl_model *m, unsigned flags);

/* Layer description for summaries and savers. */
struct fl_model_layer_info {
	const char *name; /* "fc1"; "" for ReLU/pool/flatten */
	enum fl_layer_kind kind;
	enum fl_peft_param param; /* FL_PEFT_PARAM_DENSE for unparameterised */
	int out, in, k1, k2;      /* weight (out, in, k1, k2); k = 1 for Linear;
				     Embedding: (num, dim) */
	int rank;                 /* r (LoHa family) or k (lowrank); 0 for dense */
	int tucker;               /* factors in Tucker form */
	float scale;              /* s of the composition */
	int has_bias;
};
int fl_model_layer_count(const struct fl_model *m);
void fl_model_layer_info(const struct fl_model *m, int i, struct fl_model_layer_info *out);

/* Composes the weight of weight layer i into w (out*in*k1*k2 floats) as
 * evaluation sees it (no dropout). For loha this is W0 + ΔW. */
void fl_model_compose_weight(struct fl_model *m, int layer, float *w);

/* Forward pass over a batch x (batch, c*h*w) -> logits (batch, classes),
 * returned as a pointer into the model (valid until the next call). train:
 * rank/module dropout active, drawn from rng (may be NULL when not
 * training). */
const float *fl_model_forward(struct fl_model *m, const float *x, int batch, int train,
			      struct fl_rng *rng);
/* Backward from dlogits (batch, classes) of the last forward: ADDS into the
 * gradient buffer (zero it with fl_model_zero_grads). */
void fl_model_backward(struct fl_model *m, const float *dlogits);
void fl_model_zero_grads(struct fl_model *m);

/* Trainable spans of the buffer (for fl_optim_step), and the spans of the
 * transmitted tensors (for FedProx). Pointers into the model. */
const struct fl_optim_range *fl_model_trainable_ranges(const struct fl_model *m, size_t *n);

#endif
