/* model_desc.h - model descriptions: the JSON files ("format":
 * "fedloha-model/1") that say which network to build, and the three
 * built-in networks written as such descriptions. docs/MODELS.md is the
 * user's reference for the format and every op.
 *
 * A description is parsed once into a flat list of steps (nesting in
 * "sequential" and "residual" is unrolled; a residual becomes its body
 * followed by a step that adds the body's input). Parsing checks every
 * field and infers the shape after each module, so a description that
 * parses builds. A refusal is one line naming the module (by its path,
 * e.g. modules[3].modules[1] (linear fc1)) and the field.
 *
 * Not here: building the model (fl_model_new_desc in model.h), weights,
 * parameterisation (peft_config.h).
 */
#ifndef FL_MODEL_DESC_H
#define FL_MODEL_DESC_H

#include <stddef.h>
#include <stdint.h>

#define FL_MODEL_DESC_FORMAT "fedloha-model/1"
#define FL_MODEL_DESC_BYTES_MAX (4u << 20) /* largest description text */
#define FL_MODEL_DESC_STEPS_MAX 4096
#define FL_MODEL_MODULE_NAME_MAX 96 /* a module name ("layers.3.fc1"), with its NUL */

enum fl_desc_op {
	FL_OP_LINEAR = 0,
	FL_OP_CONV2D,
	FL_OP_RELU,
	FL_OP_MAXPOOL2D,
	FL_OP_FLATTEN,
	FL_OP_GELU,
	FL_OP_AVGPOOL2D,
	FL_OP_DROPOUT,
	FL_OP_RESIDUAL_ADD, /* adds the input of a residual to its body's output */
	FL_OP_GROUPNORM,
	FL_OP_LAYERNORM,
	FL_OP_EMBEDDING,
	FL_OP_TOKENS,
	FL_OP_POSITION,
	FL_OP_ATTENTION, /* the core softmax(QK^T/sqrt(d))V of its q, k, v steps */
	FL_OP_MEAN_TOKENS,
};

/* A shape without the batch dimension: [F], [T, D] or [C, H, W]; ids: the
 * values are token ids (the input of a token model), not features. */
struct fl_desc_shape {
	int ndim;
	int dim[3];
	int ids;
};

/* One step of the flat graph. Its inputs are the outputs of steps src[0..
 * nsrc) (-1 = the model's input), always earlier steps: the previous one,
 * plus the skip of a residual add, or q, k and v for attention (whose
 * module becomes five steps: linear q_proj, k_proj and v_proj on the same
 * input, the attention core, linear out_proj). */
struct fl_desc_step {
	enum fl_desc_op op;
	char name[FL_MODEL_MODULE_NAME_MAX]; /* parametric ops; "" otherwise */
	int in, out, kernel, stride, padding, bias;
	int groups, heads; /* groupnorm; attention */
	float p;           /* dropout */
	float eps;         /* norms */
	int src[3], nsrc;
	struct fl_desc_shape in_shape, out_shape; /* in_shape: of src[0] */
};

struct fl_model_desc {
	struct fl_desc_shape input;
	int vocab; /* token inputs: ids are in [0, vocab); 0 for feature inputs */
	int classes;
	int nsteps;
	struct fl_desc_step *steps;
	char *text; /* canonical JSON (compact, keys sorted): what travels */
	size_t text_len;
	char label[64]; /* the built-in's name, or the description's "name", or "custom" */
	int builtin;    /* made by fl_model_desc_builtin */
};

/* Parses description text (len bytes, not necessarily NUL-terminated);
 * origin names it in messages (a path, "Welcome"). FL_EFORMAT for bad
 * JSON, FL_ERANGE for text over 4 MiB, FL_EINVAL for a bad field or
 * shape. */
int fl_model_desc_parse(const char *text, size_t len, const char *origin,
			struct fl_model_desc **out);
/* Reads and parses a description file. */
int fl_model_desc_load(const char *path, struct fl_model_desc **out);
/* The description of built-in network `name` ("2nn", "cnn", "mlp") for
 * inputs of shape `input` ([C, H, W], or [F] for flat data) and `classes`
 * outputs: the networks of McMahan et al. 2017 as fedloha always built
 * them. models/<name>.json are these for Fashion-MNIST ([1, 28, 28], 10
 * classes). */
int fl_model_desc_builtin(const char *name, const struct fl_desc_shape *input, int classes,
			  struct fl_model_desc **out);
/* What a command's --model NAME / --model-file FILE ask for: the file's
 * description when file is set, else the built-in `name` for the data's
 * input shape and classes. */
int fl_model_desc_pick(const char *name, const char *file, const struct fl_desc_shape *input,
		       int classes, struct fl_model_desc **out);
/* The sample shape of a data set as a description's input: [C, H, W], or
 * [F] for flat data. */
struct fl_dataset;
struct fl_desc_shape fl_model_data_shape(const struct fl_dataset *ds);
/* 1 when name is a built-in network. */
int fl_model_desc_builtin_valid(const char *name);
/* A copy (the same text, steps and label). */
int fl_model_desc_copy(const struct fl_model_desc *d, struct fl_model_desc **out);
void fl_model_desc_free(struct fl_model_desc *d);

/* "flatten", "linear", ...: the op's name in the format. */
const char *fl_desc_op_name(enum fl_desc_op op);
/* Elements of a shape. */
size_t fl_desc_shape_numel(const struct fl_desc_shape *s);
/* "(1,28,28)" into buf. */
const char *fl_desc_shape_str(const struct fl_desc_shape *s, char *buf, size_t size);

#endif
