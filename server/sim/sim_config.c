/* sim_config.c - a simulated configuration's defaults, its label and the
 * check of its values against the data before a run. It does not run
 * anything and does not print. */
#include "sim_impl.h"

#include "errors.h"
#include "model.h"
#include "model_data.h"
#include "model_desc.h"

#include <stdio.h>
#include <string.h>

void srv_sim_config_default(struct srv_sim_config *c)
{
	memset(c, 0, sizeof(*c));
	c->arch = "2nn";
	c->param = FL_PEFT_PARAM_FEDPARA;
	c->gamma = 0.0;
	c->tucker = 1;
	c->train.rounds = 10;
	c->train.fraction = 0.25;
	c->train.epochs = 1;
	c->train.batch = 32;
	c->train.lr = 0.1f;
	c->train.lr_decay = 1.0f;
	c->train.strategy = SRV_OPTIM_FEDAVG;
	c->train.server_eta = c->train.server_beta1 = -1.0f;
	c->train.server_beta2 = c->train.server_tau = -1.0f;
	c->train.prox_mu = 0.01f;
	c->train.dtype = FL_WIRE_F32;
	c->train.seed = 1;
	c->threads = 1;
	c->eval_batch = 128;
	c->secure = 1;
}

const char *srv_sim_config_label(const struct srv_sim_config *c, char *buf, size_t cap)
{
	if (c->label[0])
		snprintf(buf, cap, "%s", c->label);
	else if (c->local_only)
		snprintf(buf, cap, c->param == FL_PEFT_PARAM_DENSE ? "local" : "local-%s",
			 fl_peft_param_name(c->param));
	else if (c->train.dtype != FL_WIRE_F32)
		snprintf(buf, cap, "%s-%s", fl_peft_param_name(c->param),
			 fl_wire_dtype_name(c->train.dtype));
	else
		snprintf(buf, cap, "%s", fl_peft_param_name(c->param));
	return buf;
}

int sim_model_new(const struct srv_sim_config *cfg, const struct fl_dataset *d,
		  const struct fl_peft_config *peft, uint64_t seed, int max_batch,
		  struct fl_model **out)
{
	if (!cfg->desc)
		return fl_model_new(cfg->arch, d->c, d->h, d->w, d->classes, peft, seed, max_batch,
				    out);
	int err = fl_model_new_desc(cfg->desc, peft, seed, max_batch, out);
	if (!err && (err = fl_model_check_data(*out, d))) {
		fl_model_free(*out);
		*out = NULL;
	}
	return err;
}

const char *srv_sim_config_model(const struct srv_sim_config *cfg)
{
	return cfg->desc ? cfg->desc->label : cfg->arch;
}

int sim_check_config(const struct srv_sim_config *c, const struct srv_sim_data *d)
{
	if (!c->desc && (!c->arch || !fl_model_desc_builtin_valid(c->arch)))
		return fl_error_set(FL_EINVAL, "sim: unknown model '%s' (2nn, cnn or mlp)",
				    c->arch ? c->arch : "");
	int err = c->desc ? fl_model_desc_check_data(c->desc, d->train) : FL_OK;
	if (!err && c->desc && (err = fl_model_desc_check_data(c->desc, d->test)))
		return fl_error_set(err, "test split: %s", fl_error_msg());
	if (err)
		return err;
	if (c->train.rounds < 1 || c->train.epochs < 1 || c->train.batch < 1 ||
	    c->train.batch > CLI_SESSION_BATCH_MAX)
		return fl_error_set(FL_EINVAL, "sim: rounds, epochs >= 1 and batch in [1, %d]",
				    CLI_SESSION_BATCH_MAX);
	if (!(c->train.fraction > 0 && c->train.fraction <= 1))
		return fl_error_set(FL_EINVAL, "sim: fraction %g outside (0, 1]",
				    c->train.fraction);
	if (!(c->dropout >= 0 && c->dropout < 1))
		return fl_error_set(FL_EINVAL, "sim: dropout %g outside [0, 1)", c->dropout);
	if (c->threads < 1 || c->threads > SRV_SIM_THREADS_MAX)
		return fl_error_set(FL_EINVAL, "sim: threads %d outside [1, %d]", c->threads,
				    SRV_SIM_THREADS_MAX);
	if (c->eval_batch < 1 || c->eval_batch > 4096)
		return fl_error_set(FL_EINVAL, "sim: eval batch %d outside [1, 4096]",
				    c->eval_batch);
	if (!(c->gamma >= 0 && c->gamma <= 1) || c->rank < 0)
		return fl_error_set(FL_EINVAL, "sim: gamma in [0, 1] and rank >= 0");
	if (c->init_path && c->param != FL_PEFT_PARAM_DENSE && c->param != FL_PEFT_PARAM_LOHA)
		return fl_error_set(FL_EINVAL,
				    "sim: an initial model needs dense or loha (%s layers "
				    "have no dense weight to load)",
				    fl_peft_param_name(c->param));
	if (c->init_path && c->param == FL_PEFT_PARAM_LOHA && !c->base_path)
		return fl_error_set(FL_EINVAL,
				    "sim: loha with an initial model needs the frozen base "
				    "(base_path; it may be the same file)");
	if (!d || !d->part || d->part->clients < 1)
		return fl_error_set(FL_EINVAL, "sim: no clients");
	if (c->local_only && (c->param == FL_PEFT_PARAM_PFEDPARA || c->param == FL_PEFT_PARAM_LOHA))
		return fl_error_set(FL_EINVAL,
				    "sim: local-only training takes dense, fedpara or "
				    "lowrank, not %s",
				    fl_peft_param_name(c->param));
	if (c->local_only && (c->init_path || c->base_path))
		return fl_error_set(FL_EINVAL, "sim: local-only training starts from the seeded "
					       "random model (no initial model or base)");
	int fed = c->param == FL_PEFT_PARAM_PFEDPARA || c->fed_eval || c->local_only;
	for (int i = 0; fed && i < d->part->clients; i++)
		if (d->part->client[i].n_holdout < 1)
			return fl_error_set(FL_EINVAL,
					    "sim: federated evaluation (pfedpara, local-only or "
					    "fed_eval) needs held-out samples on every client; "
					    "client %d has none",
					    i);
	return FL_OK;
}
