/* adapter_folder.h - a PEFT LoHa adapter folder opened and checked:
 * adapter_config.json parsed, adapter_model.safetensors read, its tensors
 * grouped into per-module LoHa factors ("base_model.model.<module>.hada_*")
 * and modules_to_save tensors ("base_model.model.<module>.<param>"), and the
 * factor shapes checked against a base weight or against each other.
 * Used by merge and inspect (adapter.h) and by anything that loads an
 * adapter's factors. It does no arithmetic on tensor values.
 */
#ifndef FL_ADAPTER_FOLDER_H
#define FL_ADAPTER_FOLDER_H

#include "loha.h"
#include "peft_config.h"
#include "safetensors.h"

#include <stddef.h>

/* Factor slots, in the order of struct fl_loha_factors. */
enum {
	FL_ADAPTER_W1A = 0,
	FL_ADAPTER_W1B,
	FL_ADAPTER_W2A,
	FL_ADAPTER_W2B,
	FL_ADAPTER_T1,
	FL_ADAPTER_T2,
	FL_ADAPTER_NFACT
};

enum fl_adapter_form {
	FL_ADAPTER_FORM_LINEAR = 0,   /* 2-D weight */
	FL_ADAPTER_FORM_CONV_RESHAPE, /* conv kernel as O x (I*K1*K2) */
	FL_ADAPTER_FORM_CONV_TUCKER,  /* use_effective_conv2d, kernel not 1x1 */
};

/* "linear", "conv-reshape", "conv-tucker". */
const char *fl_adapter_form_name(enum fl_adapter_form f);

/* The factor tensors of one module (NULL where absent); they point into the
 * folder's safetensors file. */
struct fl_adapter_factors {
	char *name; /* module name, without "base_model.model." */
	const struct fl_st_tensor *t[FL_ADAPTER_NFACT];
};

/* A modules_to_save tensor and the base tensor name it replaces. */
struct fl_adapter_saved {
	char *base_name;
	const struct fl_st_tensor *t;
};

struct fl_adapter_folder {
	char *st_path; /* DIR/adapter_model.safetensors, for messages */
	struct fl_peft_config *cfg;
	struct fl_st *st;
	struct fl_adapter_factors *mods; /* in file order */
	size_t n_mods;
	struct fl_adapter_saved *saved;
	size_t n_saved;
};

/* Opens DIR: a missing folder, config or model file, a config error, a
 * tensor outside "base_model.model.", an unknown hada_* name or a non-factor
 * tensor outside modules_to_save each fail with one clear message. */
int fl_adapter_folder_open(const char *dir, struct fl_adapter_folder **out);
void fl_adapter_folder_free(struct fl_adapter_folder *f);
/* The factors of `module`, or NULL. */
const struct fl_adapter_factors *fl_adapter_folder_find(const struct fl_adapter_folder *f,
							const char *module);

/* The base weight "<module>.weight" of m in base: present, 2-D or 4-D.
 * base_path names the base in messages. */
int fl_adapter_base_weight(const struct fl_adapter_folder *f, const struct fl_st *base,
			   const char *base_path, const struct fl_adapter_factors *m,
			   const struct fl_st_tensor **w);
/* Dimensions and form from a base weight (Tucker when use_effective_conv2d
 * and the kernel is not 1x1, as in PEFT); d->r is left as it was. */
void fl_adapter_dims_from_base(const struct fl_peft_config *cfg, const struct fl_st_tensor *w,
			       struct fl_loha_dims *d, enum fl_adapter_form *form);
/* Dimensions read off the factor shapes when no base is at hand: a reshaped
 * conv then looks linear with in = I*K1*K2. d->r is left as it was. */
int fl_adapter_dims_from_factors(const struct fl_adapter_folder *f,
				 const struct fl_adapter_factors *m, struct fl_loha_dims *d,
				 enum fl_adapter_form *form);
/* Every factor d implies is present (hada_t* exactly in the Tucker form)
 * and has the shape d implies with r = d->r; FL_ESHAPE / FL_ENOTFOUND /
 * FL_EFORMAT naming the tensor, the expected shape and the rank otherwise.
 * First, FL_ERANGE when d has sizes BLAS cannot take (fl_loha_dims_check),
 * so no kernel ever runs on such a module. */
int fl_adapter_factors_check(const struct fl_adapter_folder *f, const struct fl_adapter_factors *m,
			     const struct fl_loha_dims *d);

#endif
