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
/* Initial weights by name from a PyTorch state dict (safetensors, F32, F16,
 * BF16 or F64), strict like load_state_dict(strict=True). The file must
 * hold exactly the dense tensors of m, each with its shape and finite
 * values:
 *   dense     every <name>.weight and <name>.bias;
 *   loha      the frozen base (every weight and bias) and the dense trained
 *             modules_to_save; the hada_* factors keep their PEFT init, so
 *             the model starts as the file's model (w2_b = 0);
 *   fedpara, pfedpara, lowrank
 *             the biases and the untargeted layers; a targeted layer is
 *             trained from scratch and has no dense weight to initialise,
 *             so its <name>.weight in the file is refused (the factors keep
 *             their seeded init).
 * Every problem is collected into one message, "path: missing keys: a, b;
 * unexpected keys: c; shape mismatch: fc1.weight file [10, 20] model
 * [10, 784]" (the first names of each kind, then "and N more"), and m is
 * left untouched; FL_ENONFINITE when the only problem is a NaN or an
 * infinity, else FL_ESHAPE. Calls fl_model_params_changed on success. */
int fl_model_load_init(struct fl_model *m, const char *path);
/* Copies into m every tensor t with pick(t) != 0 from the PyTorch-named
 * safetensors file at path, by its own name; shapes must match. what names
 * such a tensor in the message for a missing one ("base tensor"). */
int fl_model_load_picked(struct fl_model *m, const char *path,
			 int (*pick)(const struct fl_model_tensor *t), const char *what);

#endif
