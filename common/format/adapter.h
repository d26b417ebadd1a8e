/* adapter.h - PEFT LoHa adapter folders (adapter_config.json +
 * adapter_model.safetensors): merge into a base model (PEFT
 * merge_and_unload) and describe the adapter module by module.
 *
 * Factor keys are "base_model.model.<module>.hada_w1_a" etc.; other keys
 * "base_model.model.<module>.<param>" are modules_to_save tensors that
 * replace the base tensor "<module>.<param>". Shapes (loha.h):
 *   linear / conv-reshape: hada_w*_a (O, r), hada_w*_b (r, I*K1*K2)
 *   conv-tucker (use_effective_conv2d, kernel not 1x1): hada_t* (r, r, K1, K2),
 *     hada_w*_a (r, O), hada_w*_b (r, I)
 * with r the config's rank of that module (rank_pattern, else r).
 *
 * Merged weights keep the base tensor's dtype: the sum is formed in float32
 * (float64 for F64 weights) and rounded back to nearest-even for F16 / BF16;
 * a sum that is not finite, or overflows the dtype, refuses the merge.
 * Nothing here prints except fl_adapter_inspect() to the FILE it is given.
 */
#ifndef FL_ADAPTER_H
#define FL_ADAPTER_H

#include "adapter_folder.h"
#include "loha.h"

#include <stddef.h>
#include <stdio.h>

struct fl_adapter_merge_opts {
	/* Module that "all-linear" must leave alone (the model's output layer,
	 * e.g. "lm_head"); NULL when there is none. */
	const char *output_layer;
};

struct fl_adapter_merge_stats {
	size_t merged;   /* weights that received a LoHa delta */
	size_t replaced; /* tensors replaced from modules_to_save */
	size_t copied;   /* tensors copied unchanged */
};

/* The composed-weight formula merge applies to a folder of this kind. */
const char *fl_adapter_formula(int pfedpara);
/* Reads base_path and the adapter folder, checks every factor against the
 * base shapes and the config, merges W0 += ΔW (s = alpha / r per module) and
 * writes out_path atomically with the base file's metadata and every other
 * tensor unchanged (any dtype). Fails without writing anything on: a missing
 * file, a bad config, a factor for a module absent from the base or not
 * targeted, a targeted weight without factors, a wrong shape, a non-finite
 * factor or result. opts and stats may be NULL. out_path may equal base_path. */
/* A PEFT LoRA folder (peft_type "LORA", as fedloha writes for lowrank) is
 * merged as W0 += (alpha / r) · lora_B @ lora_A per module (alpha / sqrt(r)
 * with use_rslora; r, alpha from rank_pattern / alpha_pattern, else r /
 * lora_alpha); conv factors are lora_A (r, I, K1, K2), lora_B (O, r, 1, 1).
 * A LoHa folder whose fedloha_parameterization is "pfedpara" is merged as
 * W0 += s · P1 ⊙ (P2 + 1). */
int fl_adapter_merge(const char *base_path, const char *adapter_dir, const char *out_path,
		     const struct fl_adapter_merge_opts *opts,
		     struct fl_adapter_merge_stats *stats);

/* One adapted module as inspect reports it. */
struct fl_adapter_module {
	char *name;
	enum fl_adapter_form form;
	struct fl_loha_dims dims; /* out, in, k1, k2, r */
	double alpha, scale;
	size_t factor_params, dense_params;
	long rank_bound;
};

struct fl_adapter_info {
	struct fl_adapter_module *modules; /* in adapter file order */
	size_t n_modules;
	size_t factor_params, dense_params; /* totals over modules */
	size_t saved_tensors, saved_params; /* modules_to_save tensors */
	int pfedpara; /* fedloha_parameterization "pfedpara": W0 + s · P1 ⊙ (P2 + 1) */
};

/* Describes an adapter folder. Without base_path, dimensions come from the
 * factor shapes alone, so a reshaped conv shows as linear with in = I*K1*K2;
 * with it, the base weights give the true shapes. The same consistency
 * checks as merge apply (ranks, shapes, missing factors). */
int fl_adapter_info_read(const char *adapter_dir, const char *base_path,
			 struct fl_adapter_info **out);
void fl_adapter_info_free(struct fl_adapter_info *info);

/* Prints the description: an aligned table and a totals line, or with json
 * one JSON object per line per module and a last {"total": true, ...}. */
int fl_adapter_inspect(const char *adapter_dir, const char *base_path, int json, FILE *out);

#endif
