/* model_init.c - initial weights by name from a PyTorch state dict
 * (fl_model_load_init, model_io.h): strict like load_state_dict(strict=True),
 * every problem of the file collected into one message. It reads only dense
 * tensors (weights and biases) and never touches adapter factors; it does
 * not load folders saved by fl_model_save (model_load.c). */
#include "model_io.h"

#include "errors.h"
#include "safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Names listed per kind of problem, and the characters they may take. */
#define INIT_LIST_NAMES 8
#define INIT_LIST_CHARS 120

enum init_problem {
	P_MISSING,
	P_UNEXPECTED,
	P_SCRATCH,
	P_SHAPE,
	P_DTYPE,
	P_NONFINITE,
	P_COUNT
};

static const char *const problem_title[P_COUNT] = {
	"missing keys",   "unexpected keys",   "from-scratch layers have no dense weight",
	"shape mismatch", "unsupported dtype", "non-finite values",
};

/* The problems of one file, P_COUNT lists of names. */
struct init_report {
	char list[P_COUNT][INIT_LIST_CHARS];
	int listed[P_COUNT], total[P_COUNT];
};

static void report_add(struct init_report *r, enum init_problem p, const char *item)
{
	char *l = r->list[p];
	size_t used = strlen(l);
	r->total[p]++;
	if (r->listed[p] >= INIT_LIST_NAMES || used + strlen(item) + 3 > sizeof(r->list[p]))
		return;
	snprintf(l + used, sizeof(r->list[p]) - used, "%s%s", used ? ", " : "", item);
	r->listed[p]++;
}

static int report_any(const struct init_report *r)
{
	for (int p = 0; p < P_COUNT; p++)
		if (r->total[p])
			return 1;
	return 0;
}

/* "path: missing keys: a, b; shape mismatch: ..." as the error message. */
static int report_error(const struct init_report *r, const char *path)
{
	char msg[FL_ERROR_MSG_MAX];
	size_t n = (size_t)snprintf(msg, sizeof(msg), "%s:", path);
	int first = 1;
	for (int p = 0; p < P_COUNT && n < sizeof(msg); p++) {
		if (!r->total[p])
			continue;
		n += (size_t)snprintf(msg + n, sizeof(msg) - n, "%s %s: %s", first ? "" : ";",
				      problem_title[p], r->list[p]);
		if (n < sizeof(msg) && r->total[p] > r->listed[p])
			n += (size_t)snprintf(msg + n, sizeof(msg) - n, " and %d more",
					      r->total[p] - r->listed[p]);
		first = 0;
	}
	int only_nonfinite = 1;
	for (int p = 0; p < P_COUNT; p++)
		only_nonfinite &= p == P_NONFINITE || !r->total[p];
	int err = only_nonfinite ? FL_ENONFINITE : FL_ESHAPE;
	return fl_error_set(err, "%s", msg);
}

static int is_factor(const struct fl_model_tensor *t)
{
	return strstr(t->name, ".hada_") != NULL || strstr(t->name, ".lora_") != NULL;
}

/* Checks a file tensor against the model tensor t and converts it into
 * dst (t->numel floats), or records why not. */
static void take_tensor(const struct fl_model_tensor *t, const struct fl_st_tensor *st, float *dst,
			struct init_report *r)
{
	char item[FL_MODEL_NAME_MAX + 64], fs[48], ms[48];
	int same = st->ndim == t->ndim;
	for (int i = 0; same && i < t->ndim; i++)
		same = st->shape[i] == t->shape[i];
	if (!same) {
		snprintf(item, sizeof(item), "%s file %s model %s", t->name,
			 fl_error_shape_str(st->shape, st->ndim, fs, sizeof(fs)),
			 fl_error_shape_str(t->shape, t->ndim, ms, sizeof(ms)));
		report_add(r, P_SHAPE, item);
		return;
	}
	if (st->dtype != FL_DTYPE_F32 && st->dtype != FL_DTYPE_F16 && st->dtype != FL_DTYPE_BF16 &&
	    st->dtype != FL_DTYPE_F64) {
		snprintf(item, sizeof(item), "%s (%s)", t->name, fl_dtype_name(st->dtype));
		report_add(r, P_DTYPE, item);
		return;
	}
	if (fl_st_tensor_to_f32(st, dst, t->numel) != FL_OK) {
		report_add(r, P_DTYPE, t->name);
		return;
	}
	for (size_t i = 0; i < t->numel; i++) {
		if (!isfinite(dst[i])) {
			report_add(r, P_NONFINITE, t->name);
			return;
		}
	}
}

/* A file key naming the dense weight of a layer that has factors only
 * (fedpara, pfedpara, lowrank: trained from scratch, no W0). */
static int is_scratch_weight(const struct fl_model *m, const char *key)
{
	size_t len = strlen(key);
	if (len <= 7 || strcmp(key + len - 7, ".weight") != 0)
		return 0;
	for (int i = 0; i < fl_model_layer_count(m); i++) {
		struct fl_model_layer_info li;
		fl_model_layer_info(m, i, &li);
		if (li.param != FL_PEFT_PARAM_DENSE && li.param != FL_PEFT_PARAM_LOHA &&
		    strlen(li.name) == len - 7 && strncmp(li.name, key, len - 7) == 0)
			return 1;
	}
	return 0;
}

/* Every non-factor tensor of m from st into stage (a copy of the
 * parameters); every file key that is not one of them is reported. */
static void collect(const struct fl_model *m, const struct fl_st *st, float *stage,
		    struct init_report *r)
{
	for (size_t i = 0; i < fl_model_tensor_count(m); i++) {
		const struct fl_model_tensor *t = fl_model_tensor_at(m, i);
		if (is_factor(t))
			continue;
		const struct fl_st_tensor *s = fl_st_find(st, t->name);
		if (s)
			take_tensor(t, s, stage + t->offset, r);
		else
			report_add(r, P_MISSING, t->name);
	}
	for (size_t i = 0; i < fl_st_count(st); i++) {
		const char *key = fl_st_at(st, i)->name;
		const struct fl_model_tensor *t = fl_model_tensor_find(m, key);
		char safe[FL_MODEL_NAME_MAX + 16];
		fl_error_safe_str(key, safe, sizeof(safe));
		if (t && !is_factor(t))
			continue;
		report_add(r, is_scratch_weight(m, key) ? P_SCRATCH : P_UNEXPECTED, safe);
	}
}

int fl_model_load_init(struct fl_model *m, const char *path)
{
	struct fl_st *st;
	int err = fl_st_read(path, &st);
	if (err)
		return err;
	size_t n = fl_model_param_floats(m);
	float *stage = malloc((n ? n : 1) * sizeof(float));
	if (!stage) {
		fl_st_free(st);
		return fl_error_set(FL_ENOMEM, "%s: out of memory", path);
	}
	memcpy(stage, fl_model_params(m), n * sizeof(float));
	struct init_report r;
	memset(&r, 0, sizeof(r));
	collect(m, st, stage, &r);
	if (report_any(&r)) {
		err = report_error(&r, path);
	} else {
		memcpy(fl_model_params(m), stage, n * sizeof(float));
		fl_model_params_changed(m);
	}
	free(stage);
	fl_st_free(st);
	return err;
}
