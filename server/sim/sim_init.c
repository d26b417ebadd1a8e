/* sim_init.c - the simulator's starting point: the initial global model
 * read from a PyTorch-named safetensors file (--init) and the check of the
 * loha modules_to_save names. The clients load the frozen base themselves
 * (fl_model_load_base, through base_path) and receive the global tensors
 * from the engine every round; this file does not touch them. */
#include "sim_impl.h"

#include "errors.h"
#include "model.h"
#include "model_io.h"

#include <string.h>
#include <strings.h>

/* 1 when the layer name is the item or ends with "." + item (PEFT's
 * matching of target_modules and modules_to_save list entries). */
static int name_matches(const char *name, const char *item, size_t len)
{
	size_t n = strlen(name);
	if (n < len || strncmp(name + n - len, item, len) != 0)
		return 0;
	return n == len || name[n - len - 1] == '.';
}

/* Every item of the comma-separated list names a weight layer of m, in
 * full or as its last dotted components. */
static int check_layers(const char *list, const char *what, const struct srv_sim_config *cfg,
			const struct fl_model *m)
{
	for (const char *p = list; *p;) {
		size_t len = strcspn(p, ",");
		int found = 0;
		for (int i = 0; i < fl_model_layer_count(m) && !found; i++) {
			struct fl_model_layer_info li;
			fl_model_layer_info(m, i, &li);
			found = fl_layer_kind_weight(li.kind) && name_matches(li.name, p, len);
		}
		if (!found)
			return fl_error_set(FL_EINVAL, "sim: %s: model %s has no layer '%.*s'",
					    what, srv_sim_config_model(cfg),
					    (int)(len < 64 ? len : 64), p);
		p += len + (p[len] == ',');
	}
	return FL_OK;
}

int sim_targets_all_linear(const char *targets)
{
	return strcasecmp(targets, "all-linear") == 0;
}

int sim_check_modules_to_save(const struct srv_sim_config *cfg, const struct fl_model *m)
{
	int err = FL_OK;
	if (cfg->param == FL_PEFT_PARAM_LOHA && cfg->modules_to_save)
		err = check_layers(cfg->modules_to_save, "modules_to_save", cfg, m);
	if (!err && cfg->targets && cfg->param != FL_PEFT_PARAM_DENSE &&
	    !sim_targets_all_linear(cfg->targets))
		err = check_layers(cfg->targets, "target_modules", cfg, m);
	return err;
}

/* The initial global model: fl_model_load_init (dense: every weight and
 * bias; loha: the base and the modules_to_save layers), then the frozen
 * base again when it is another file, so that the engine's base stays the
 * one every client loads. */
int sim_load_init(struct fl_model *m, const struct srv_sim_config *cfg)
{
	int err = fl_model_load_init(m, cfg->init_path);
	if (err)
		return fl_error_set(err, "--init %s", fl_error_msg());
	if (cfg->base_path && strcmp(cfg->base_path, cfg->init_path) != 0)
		err = fl_model_load_base(m, cfg->base_path);
	return err;
}
