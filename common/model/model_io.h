/* model_io.h - saving and loading models in files PyTorch and PEFT read.
 *
 * fl_model_save(DIR) writes:
 *   DIR/model.safetensors          the composed dense model, PyTorch names
 *                                  (fc1.weight (out, in), conv1.weight
 *                                  (O, I, K1, K2), *.bias): load_state_dict
 *                                  of the same architecture takes it.
 *   DIR/fedloha.json               what fedloha needs to rebuild the model
 *                                  (architecture, input, per-layer form and
 *                                  rank) plus caller-provided metadata.
 * and, for every parameterisation but dense:
 *   DIR/adapter_model.safetensors  factors as PEFT writes them
 *                                  (base_model.model.<name>.hada_w1_a, ...;
 *                                  lowrank: .lora_A.weight / .lora_B.weight)
 *                                  and modules_to_save weights.
 *   DIR/adapter_config.json        PEFT config: LOHA (loha, fedpara,
 *                                  pfedpara) with explicit rank_pattern /
 *                                  alpha_pattern per module, or LORA
 *                                  (lowrank).
 *   DIR/base_model.safetensors     the dense base the adapter applies to:
 *                                  the frozen W0 (loha) or zeros where a
 *                                  from-scratch layer has no W0, and every
 *                                  bias and untargeted layer. For loha and
 *                                  fedpara, `fedloha-adapter merge --base
 *                                  DIR/base_model.safetensors --adapter DIR`
 *                                  reproduces DIR/model.safetensors.
 * Every file is written atomically.
 */
#ifndef FL_MODEL_IO_H
#define FL_MODEL_IO_H

#include "model.h"

/* meta_json: a JSON object text stored under "meta" in fedloha.json (NULL
 * for none); e.g. training settings and metrics. */
int fl_model_save(struct fl_model *m, const char *dir, const char *meta_json);
/* Rebuilds and loads a model saved by fl_model_save. */
int fl_model_load(const char *dir, int max_batch, struct fl_model **out);
/* Only model.safetensors (dense weights, PyTorch names). */
int fl_model_save_dense(struct fl_model *m, const char *path);
/* Loads the frozen base weights of a loha model (and every other tensor
 * flagged BASE) from a PyTorch-written safetensors file; shapes must match. */
int fl_model_load_base(struct fl_model *m, const char *path);
/* Copies into m every tensor t with pick(t) != 0 from the PyTorch-named
 * safetensors file at path, by its own name; shapes must match. what names
 * such a tensor in the message for a missing one ("base tensor"). */
int fl_model_load_picked(struct fl_model *m, const char *path,
			 int (*pick)(const struct fl_model_tensor *t), const char *what);

#endif
