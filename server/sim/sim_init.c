/* sim_init.c - the simulator's starting point: the initial global model
 * read from a PyTorch-named safetensors file (--init) and the check of the
 * loha modules_to_save names. It does not load the frozen base (that is
 * fl_model_load_base, through base_path) and does not touch the clients,
 * which receive the global tensors from the engine every round. */
#include "sim_impl.h"

#include "errors.h"
#include "model.h"
#include "model_io.h"

#include <string.h>

/* Every name of cfg->modules_to_save must be a weight layer of m. */
/* Every item of the comma-separated list names a weight layer of m. */
static int check_layers(const char *list, const char *what, const struct srv_sim_config *cfg,
			const struct fl_model *m)
{
	for (const char *p = list; *p;) {
		size_t len = strcspn(p, ",");
		int found = 0;
		for (int i = 0; i < fl_model_layer_count(m) && !found; i++) {
			struct fl_model_layer_info li;
			fl_model_layer_info(m, i, &li);
			found = (li.kind == FL_LAYER_LINEAR || li.kind == FL_LAYER_CONV2D) &&
				strlen(li.name) == len && strncmp(li.name, p, len) == 0;
		}
		if (!found)
			return fl_error_set(FL_EINVAL, "sim: %s: model %s has no layer '%.*s'",
					    what, cfg->arch, (int)(len < 64 ? len : 64), p);
		p += len + (p[len] == ',');
	}
	return FL_OK;
}

int sim_check_modules_to_save(const struct srv_sim_config *cfg, const struct fl_model *m)
{
	int err = FL_OK;
	if (cfg->param == FL_PEFT_PARAM_LOHA && cfg->modules_to_save)
		err = check_layers(cfg->modules_to_save, "modules_to_save", cfg, m);
	if (!err && cfg->targets && cfg->param != FL_PEFT_PARAM_DENSE)
		err = check_layers(cfg->targets, "target_modules", cfg, m);
	return err;
}

/* The initial global model: every tensor of m that is neither frozen base
 * nor a factor (dense: all of them; loha: modules_to_save) from the
 * PyTorch-named safetensors file at path; shapes must match. */
static int pick_init(const struct fl_model_tensor *t)
{
	return !(t->flags & FL_TENSOR_BASE) && !strstr(t->name, ".hada_") &&
	       !strstr(t->name, ".lora_");
}

int sim_load_init(struct fl_model *m, const char *path)
{
	return fl_model_load_picked(m, path, pick_init, "tensor");
}
