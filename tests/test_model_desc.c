/* test_model_desc.c - the model description loader (model_desc.c) and the
 * built-in networks (model_builtin.c): valid descriptions parse into the
 * expected steps, shapes, defaults and labels, and their canonical text does
 * not depend on whitespace or key order; every refusal returns its error
 * code with a message naming the module path and the field; the built-ins
 * equal the shipped models/<name>.json (found through FL_MODELS_DIR).
 * Building and running models from descriptions: test_model_desc_run.c. */
#include "errors.h"
#include "model_desc.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEAD "{\"format\": \"fedloha-model/1\", "

/* A description of input `shape` (JSON array), `classes` and the module
 * list `mods` (JSON array items, without brackets), in a static buffer. */
static const char *desc_text(const char *shape, int classes, const char *mods)
{
	static char buf[1 << 16];
	snprintf(buf, sizeof(buf),
		 HEAD "\"input\": {\"shape\": %s}, \"classes\": %d, \"modules\": [%s]}", shape,
		 classes, mods);
	return buf;
}

/* fl_model_desc_builtin for a (c, h, w) input. */
static int builtin(const char *name, int c, int h, int w, int classes, struct fl_model_desc **out)
{
	struct fl_desc_shape in = {3, {c, h, w}, 0};
	return fl_model_desc_builtin(name, &in, classes, out);
}

static struct fl_model_desc *parse_ok(const char *text)
{
	struct fl_model_desc *d = NULL;
	int err = fl_model_desc_parse(text, strlen(text), "t", &d);
	FL_CHECK_MSG(err == FL_OK && d, "parse: %s\n  %s", fl_error_msg(), text);
	return err == FL_OK ? d : NULL;
}

static void check_shape(const struct fl_desc_shape *s, int ndim, int a, int b, int c)
{
	int want[3] = {a, b, c};
	int ok = s->ndim == ndim;
	for (int i = 0; ok && i < ndim; i++)
		ok = s->dim[i] == want[i];
	char buf[64];
	FL_CHECK_MSG(ok, "shape %s, want ndim %d (%d,%d,%d)",
		     fl_desc_shape_str(s, buf, sizeof(buf)), ndim, a, b, c);
}

/* ---- valid descriptions ---- */

static void test_steps_and_shapes(void)
{
	struct fl_model_desc *d = NULL;
	if (!FL_CHECK(builtin("cnn", 1, 28, 28, 10, &d) == FL_OK))
		return;
	FL_CHECK(d->nsteps == 10 && d->classes == 10 && d->builtin);
	FL_CHECK(strcmp(d->label, "cnn") == 0);
	check_shape(&d->input, 3, 1, 28, 28);
	static const int shapes[10][4] = {
		{3, 32, 28, 28}, {3, 32, 28, 28}, {3, 32, 14, 14}, {3, 64, 14, 14}, {3, 64, 14, 14},
		{3, 64, 7, 7},   {1, 3136, 0, 0}, {1, 512, 0, 0},  {1, 512, 0, 0},  {1, 10, 0, 0},
	};
	for (int i = 0; i < d->nsteps && i < 10; i++)
		check_shape(&d->steps[i].out_shape, shapes[i][0], shapes[i][1], shapes[i][2],
			    shapes[i][3]);
	FL_CHECK(d->steps[0].op == FL_OP_CONV2D && strcmp(d->steps[0].name, "conv1") == 0);
	FL_CHECK(d->steps[0].stride == 1 && d->steps[0].padding == 2 && d->steps[0].bias == 1);
	FL_CHECK(d->steps[2].op == FL_OP_MAXPOOL2D && d->steps[2].stride == 2);
	FL_CHECK(d->steps[9].op == FL_OP_LINEAR && d->steps[9].in == 512 && d->steps[9].bias);
	FL_CHECK(strcmp(fl_desc_op_name(d->steps[6].op), "flatten") == 0);
	fl_model_desc_free(d);
}

static void test_defaults(void)
{
	struct fl_model_desc *d = parse_ok(desc_text(
		"[3, 9, 9]", 4,
		"{\"op\": \"conv2d\", \"name\": \"c\", \"in\": 3, \"out\": 2, \"kernel\": 3},"
		"{\"op\": \"avgpool2d\", \"kernel\": 3}, {\"op\": \"maxpool2d\", \"kernel\": 2, "
		"\"stride\": 1}, {\"op\": \"dropout\", \"p\": 0}, {\"op\": \"gelu\"},"
		"{\"op\": \"flatten\"}, {\"op\": \"linear\", \"name\": \"l\", \"in\": 2, \"out\": 4, "
		"\"bias\": false}"));
	if (!d)
		return;
	FL_CHECK(d->nsteps == 7);
	FL_CHECK(d->steps[0].stride == 1 && d->steps[0].padding == 0 && d->steps[0].bias == 1);
	check_shape(&d->steps[0].out_shape, 3, 2, 7, 7);
	FL_CHECK(d->steps[1].stride == 3); /* pool stride = kernel */
	check_shape(&d->steps[1].out_shape, 3, 2, 2, 2);
	check_shape(&d->steps[2].out_shape, 3, 2, 1, 1);
	FL_CHECK(d->steps[3].op == FL_OP_DROPOUT && d->steps[3].p == 0.0f);
	FL_CHECK(d->steps[6].bias == 0);
	FL_CHECK(strcmp(d->label, "custom") == 0 && !d->builtin);
	fl_model_desc_free(d);

	/* conv stride 2 padding 1; linear on the last dim of a (C,H,W) tensor */
	d = parse_ok(
		desc_text("[1, 8, 8]", 3,
			  "{\"op\": \"conv2d\", \"name\": \"c\", \"in\": 1, \"out\": 2, "
			  "\"kernel\": 3, \"stride\": 2, \"padding\": 1},"
			  "{\"op\": \"linear\", \"name\": \"w\", \"in\": 4, \"out\": 5},"
			  "{\"op\": \"flatten\"}, {\"op\": \"linear\", \"name\": \"o\", \"in\": "
			  "40, \"out\": 3}"));
	if (d) {
		check_shape(&d->steps[0].out_shape, 3, 2, 4, 4);
		check_shape(&d->steps[1].out_shape, 3, 2, 4, 5);
		fl_model_desc_free(d);
	}
	/* a flat input and the description's own name as label */
	d = parse_ok(HEAD "\"name\": \"tiny.v2\", \"description\": \"a test\", \"input\": "
			  "{\"shape\": [6]}, \"classes\": 2, \"modules\": [{\"op\": \"linear\", "
			  "\"name\": \"fc\", \"in\": 6, \"out\": 2}]}");
	if (d) {
		FL_CHECK(strcmp(d->label, "tiny.v2") == 0 && d->input.ndim == 1);
		fl_model_desc_free(d);
	}
}

/* sequential inside residual inside sequential, a nested residual and an
 * empty residual body: unrolled steps with the adds pointing at the skip. */
static void test_nesting(void)
{
	struct fl_model_desc *d = parse_ok(desc_text(
		"[4]", 4,
		"{\"op\": \"sequential\", \"modules\": [{\"op\": \"relu\"}, {\"op\": \"residual\", "
		"\"modules\": [{\"op\": \"sequential\", \"modules\": [{\"op\": \"linear\", \"name\": "
		"\"a.b\", \"in\": 4, \"out\": 4}, {\"op\": \"residual\", \"modules\": [{\"op\": "
		"\"gelu\"}]}]}]}]}, {\"op\": \"residual\", \"modules\": []}"));
	if (!d)
		return;
	/* 0 relu, 1 linear, 2 gelu, 3 add(from 1), 4 add(from 0), 5 add(from 4) */
	static const int ops[6] = {FL_OP_RELU,         FL_OP_LINEAR,       FL_OP_GELU,
				   FL_OP_RESIDUAL_ADD, FL_OP_RESIDUAL_ADD, FL_OP_RESIDUAL_ADD};
	static const int from[6] = {0, 0, 0, 1, 0, 4};
	FL_CHECK(d->nsteps == 6);
	for (int i = 0; i < d->nsteps && i < 6; i++) {
		FL_CHECK_MSG(d->steps[i].op == (enum fl_desc_op)ops[i], "step %d op %d", i,
			     d->steps[i].op);
		if (ops[i] == FL_OP_RESIDUAL_ADD)
			FL_CHECK_MSG(d->steps[i].src[1] == from[i], "step %d skip from %d", i,
				     d->steps[i].src[1]);
		check_shape(&d->steps[i].out_shape, 1, 4, 0, 0);
	}
	FL_CHECK(strcmp(d->steps[1].name, "a.b") == 0);
	fl_model_desc_free(d);

	/* a residual as the first module skips from the input */
	d = parse_ok(
		desc_text("[3]", 3, "{\"op\": \"residual\", \"modules\": [{\"op\": \"relu\"}]}"));
	if (d) {
		FL_CHECK(d->nsteps == 2 && d->steps[1].src[1] == -1);
		fl_model_desc_free(d);
	}
}

static void test_canonical(void)
{
	const char *a = "{\"format\":\"fedloha-model/1\",\"input\":{\"shape\":[1,4,4]},\"classes\":"
			"3,\"modules\":[{\"op\":\"flatten\"},{\"op\":\"linear\",\"name\":\"fc\","
			"\"in\":16,\"out\":3}]}";
	const char *b =
		"\n{ \"modules\" : [ { \"op\" : \"flatten\" } ,\n\t{ \"out\": 3, \"in\": "
		"16, \"name\": \"fc\", \"op\": \"linear\" } ],\n  \"classes\": 3, \"input\": "
		"{ \"shape\": [ 1, 4, 4 ] }, \"format\": \"fedloha-model/1\" }\n";
	struct fl_model_desc *da = parse_ok(a), *db = parse_ok(b), *dc = NULL, *dd = NULL;
	if (da && db) {
		FL_CHECK(da->text_len == db->text_len && strcmp(da->text, db->text) == 0);
		FL_CHECK(strchr(da->text, ' ') == NULL && strchr(da->text, '\n') == NULL);
		/* the canonical text is a fixed point; copies keep it and the label */
		dc = parse_ok(da->text);
		FL_CHECK(dc && strcmp(dc->text, da->text) == 0);
		FL_CHECK(fl_model_desc_copy(da, &dd) == FL_OK && strcmp(dd->text, da->text) == 0);
		FL_CHECK(dd && dd->nsteps == da->nsteps && strcmp(dd->label, da->label) == 0);
	}
	fl_model_desc_free(da);
	fl_model_desc_free(db);
	fl_model_desc_free(dc);
	fl_model_desc_free(dd);
}

/* ---- refusals ---- */

struct refusal {
	const char *shape; /* NULL: text is the whole description */
	int classes;
	const char *text;
	int code;
	const char *where, *what; /* both must be in the message */
};

#define LIN(n, i, o) "{\"op\": \"linear\", \"name\": \"" n "\", \"in\": " #i ", \"out\": " #o "}"
#define FLAT "{\"op\": \"flatten\"}, "
#define IMG "[1, 8, 8]"
#define CONV_ "{\"op\": \"conv2d\", \"name\": \"c\", \"in\": 1, \"out\": 2, \"kernel\": 3"

static const struct refusal refusals[] = {
	/* ops and fields */
	{IMG, 3, "{\"op\": \"conv3d\"}", FL_EINVAL, "modules[0]", "unknown op \"conv3d\""},
	{IMG, 3, "{\"op\": 3}", FL_EINVAL, "modules[0]", "field \"op\""},
	{IMG, 3, "{\"kernel\": 3}", FL_EINVAL, "modules[0]", "field \"op\""},
	{IMG, 3, "7", FL_EINVAL, "modules[0]", "expected an object"},
	{IMG, 3, "{\"op\": \"relu\", \"inplace\": true}", FL_EINVAL, "modules[0] (relu)",
	 "field \"inplace\""},
	{IMG, 3,
	 FLAT "{\"op\": \"linear\", \"name\": \"l\", \"in\": 64, \"out\": 3, \"groups\": 1}",
	 FL_EINVAL, "modules[1] (linear)", "field \"groups\""},
	{IMG, 3, "{\"op\": \"maxpool2d\", \"kernel\": 2, \"padding\": 1}", FL_EINVAL,
	 "modules[0] (maxpool2d)", "field \"padding\""},
	/* every required field of every op, missing */
	{IMG, 3, FLAT "{\"op\": \"linear\", \"in\": 64, \"out\": 3}", FL_EINVAL,
	 "modules[1] (linear)", "field \"name\": missing"},
	{IMG, 3, FLAT "{\"op\": \"linear\", \"name\": \"l\", \"out\": 3}", FL_EINVAL, "modules[1]",
	 "field \"in\": missing"},
	{IMG, 3, FLAT "{\"op\": \"linear\", \"name\": \"l\", \"in\": 64}", FL_EINVAL, "modules[1]",
	 "field \"out\": missing"},
	{IMG, 3, "{\"op\": \"conv2d\", \"in\": 1, \"out\": 2, \"kernel\": 3}", FL_EINVAL,
	 "modules[0] (conv2d)", "field \"name\": missing"},
	{IMG, 3, "{\"op\": \"conv2d\", \"name\": \"c\", \"out\": 2, \"kernel\": 3}", FL_EINVAL,
	 "modules[0]", "field \"in\": missing"},
	{IMG, 3, "{\"op\": \"conv2d\", \"name\": \"c\", \"in\": 1, \"kernel\": 3}", FL_EINVAL,
	 "modules[0]", "field \"out\": missing"},
	{IMG, 3, "{\"op\": \"conv2d\", \"name\": \"c\", \"in\": 1, \"out\": 2}", FL_EINVAL,
	 "modules[0]", "field \"kernel\": missing"},
	{IMG, 3, "{\"op\": \"maxpool2d\"}", FL_EINVAL, "modules[0] (maxpool2d)",
	 "field \"kernel\": missing"},
	{IMG, 3, "{\"op\": \"avgpool2d\", \"stride\": 1}", FL_EINVAL, "modules[0] (avgpool2d)",
	 "field \"kernel\": missing"},
	{IMG, 3, "{\"op\": \"dropout\"}", FL_EINVAL, "modules[0] (dropout)",
	 "field \"p\": missing"},
	{IMG, 3, "{\"op\": \"residual\"}", FL_EINVAL, "modules[0] (residual)",
	 "field \"modules\": missing"},
	{IMG, 3, "{\"op\": \"sequential\"}", FL_EINVAL, "modules[0] (sequential)",
	 "field \"modules\": missing"},
	/* wrong types */
	{IMG, 3, FLAT "{\"op\": \"linear\", \"name\": \"l\", \"in\": \"64\", \"out\": 3}",
	 FL_EINVAL, "modules[1] (linear l)", "field \"in\": expected an integer"},
	{IMG, 3, FLAT "{\"op\": \"linear\", \"name\": \"l\", \"in\": 64, \"out\": 2.5}", FL_EINVAL,
	 "modules[1] (linear l)", "field \"out\": expected an integer"},
	{IMG, 3, FLAT "{\"op\": \"linear\", \"name\": \"l\", \"in\": 64, \"out\": 3, \"bias\": 1}",
	 FL_EINVAL, "modules[1] (linear l)", "field \"bias\": expected true or false"},
	{IMG, 3, FLAT "{\"op\": \"linear\", \"name\": 5, \"in\": 64, \"out\": 3}", FL_EINVAL,
	 "modules[1] (linear)", "field \"name\": expected a string"},
	{IMG, 3, CONV_ ", \"stride\": true}", FL_EINVAL, "modules[0] (conv2d c)",
	 "field \"stride\""},
	{IMG, 3, CONV_ ", \"padding\": null}", FL_EINVAL, "modules[0] (conv2d c)",
	 "field \"padding\""},
	{IMG, 3, "{\"op\": \"maxpool2d\", \"kernel\": \"2\"}", FL_EINVAL, "modules[0] (maxpool2d)",
	 "field \"kernel\": expected an integer"},
	{IMG, 3, "{\"op\": \"dropout\", \"p\": \"0.5\"}", FL_EINVAL, "modules[0] (dropout)",
	 "field \"p\""},
	{IMG, 3, "{\"op\": \"residual\", \"modules\": {}}", FL_EINVAL, "modules[0]",
	 "field \"modules\": expected an array"},
	/* out of range */
	{IMG, 3, FLAT "{\"op\": \"linear\", \"name\": \"l\", \"in\": 0, \"out\": 3}", FL_EINVAL,
	 "modules[1] (linear l)", "field \"in\": 0 is outside"},
	{IMG, 3, FLAT "{\"op\": \"linear\", \"name\": \"l\", \"in\": 64, \"out\": -1}", FL_EINVAL,
	 "modules[1] (linear l)", "field \"out\": -1 is outside"},
	{IMG, 3, FLAT "{\"op\": \"linear\", \"name\": \"l\", \"in\": 64, \"out\": 16777217}",
	 FL_EINVAL, "modules[1] (linear l)", "field \"out\""},
	{IMG, 3, CONV_ ", \"stride\": 0}", FL_EINVAL, "modules[0] (conv2d c)",
	 "field \"stride\": 0"},
	{IMG, 3, CONV_ ", \"padding\": -1}", FL_EINVAL, "modules[0] (conv2d c)",
	 "field \"padding\""},
	{IMG, 3, "{\"op\": \"conv2d\", \"name\": \"c\", \"in\": 1, \"out\": 2, \"kernel\": 0}",
	 FL_EINVAL, "modules[0] (conv2d c)", "field \"kernel\": 0 is outside"},
	{IMG, 3, "{\"op\": \"avgpool2d\", \"kernel\": 1025}", FL_EINVAL, "modules[0] (avgpool2d)",
	 "field \"kernel\": 1025 is outside"},
	{IMG, 3, "{\"op\": \"dropout\", \"p\": 1}", FL_EINVAL, "modules[0] (dropout)",
	 "field \"p\": expected a number in [0, 1)"},
	{IMG, 3, "{\"op\": \"dropout\", \"p\": -0.1}", FL_EINVAL, "modules[0] (dropout)",
	 "field \"p\""},
	{IMG, 1, FLAT LIN("l", 64, 1), FL_EINVAL, "description", "field \"classes\""},
	{IMG, 3,
	 "{\"op\": \"conv2d\", \"name\": \"c\", \"in\": 1, \"out\": 16777216, \"kernel\": 5}",
	 FL_EINVAL, "modules[0] (conv2d c)", "too large"},
	/* names */
	{"[4]", 4, LIN("a", 4, 4) ", {\"op\": \"relu\"}, " LIN("a", 4, 4), FL_EINVAL,
	 "modules[2] (linear a)", "field \"name\": \"a\" names an earlier module"},
	{"[4]", 4, LIN("a b", 4, 4), FL_EINVAL, "modules[0] (linear)", "field \"name\": \"a b\""},
	{"[4]", 4, LIN(".a", 4, 4), FL_EINVAL, "modules[0] (linear)", "is not a module name"},
	{"[4]", 4, LIN("a.", 4, 4), FL_EINVAL, "modules[0] (linear)", "is not a module name"},
	{"[4]", 4, LIN("a..b", 4, 4), FL_EINVAL, "modules[0] (linear)", "is not a module name"},
	{"[4]", 4, LIN("", 4, 4), FL_EINVAL, "modules[0] (linear)", "is not a module name"},
	{"[4]", 4, LIN("caf\u00e9", 4, 4), FL_EINVAL, "modules[0] (linear)",
	 "is not a module name"},
	{"[4]", 4,
	 LIN("n23456789012345678901234567890123456789012345678901234567890123456789012345678901234567"
	     "890123456",
	     4, 4),
	 FL_EINVAL, "modules[0] (linear)", "is not a module name"},
	/* shapes */
	{IMG, 3, FLAT LIN("l", 63, 3), FL_EINVAL, "modules[1] (linear l)",
	 "field \"in\": 63, but the input (64) has 64 features"},
	{IMG, 3, "{\"op\": \"conv2d\", \"name\": \"c\", \"in\": 2, \"out\": 2, \"kernel\": 3}",
	 FL_EINVAL, "modules[0] (conv2d c)",
	 "field \"in\": 2, but the input (1,8,8) has 1 channels"},
	{IMG, 3, FLAT CONV_ "}", FL_EINVAL, "modules[1] (conv2d c)", "needs a (C,H,W) input"},
	{IMG, 3, FLAT "{\"op\": \"maxpool2d\", \"kernel\": 2}", FL_EINVAL, "modules[1] (maxpool2d)",
	 "needs a (C,H,W) input"},
	{IMG, 3, "{\"op\": \"maxpool2d\", \"kernel\": 9}", FL_EINVAL, "modules[0] (maxpool2d)",
	 "field \"kernel\": 9 is larger than the input 8x8"},
	{IMG, 3, "{\"op\": \"conv2d\", \"name\": \"c\", \"in\": 1, \"out\": 2, \"kernel\": 9}",
	 FL_EINVAL, "modules[0] (conv2d c)", "field \"kernel\": 9 is larger"},
	{IMG, 3,
	 "{\"op\": \"relu\"}, {\"op\": \"residual\", \"modules\": [{\"op\": \"maxpool2d\", "
	 "\"kernel\": 2}]}",
	 FL_EINVAL, "modules[1] (residual)", "turn (1,8,8) into (1,4,4)"},
	{IMG, 4, FLAT LIN("l", 64, 3), FL_EINVAL, "description",
	 "the last module's output is (3), not (4) for \"classes\" 4"},
	{IMG, 3, "{\"op\": \"relu\"}", FL_EINVAL, "description", "output is (1,8,8)"},
	{IMG, 3, "", FL_EINVAL, "description", "field \"modules\": expected a non-empty array"},
	/* the top level */
	{NULL, 0, HEAD "\"input\": {\"shape\": [4]}, \"classes\": 3}", FL_EINVAL, "description",
	 "field \"modules\""},
	{NULL, 0,
	 "{\"format\": \"fedloha-model/2\", \"input\": {\"shape\": [4]}, \"classes\": 4, \"modules\": "
	 "[{\"op\": \"relu\"}]}",
	 FL_EINVAL, "description", "field \"format\": expected \"fedloha-model/1\""},
	{NULL, 0,
	 "{\"input\": {\"shape\": [4]}, \"classes\": 4, \"modules\": [{\"op\": \"relu\"}]}",
	 FL_EINVAL, "description", "field \"format\""},
	{NULL, 0, HEAD "\"author\": \"x\", \"input\": {\"shape\": [4]}, \"classes\": 4}", FL_EINVAL,
	 "description", "field \"author\": unknown"},
	{NULL, 0, HEAD "\"name\": \"a b\", \"input\": {\"shape\": [4]}, \"classes\": 4}", FL_EINVAL,
	 "description", "field \"name\""},
	{NULL, 0, HEAD "\"description\": 4, \"input\": {\"shape\": [4]}, \"classes\": 4}",
	 FL_EINVAL, "description", "field \"description\""},
	{NULL, 0, HEAD "\"input\": {\"shape\": [4]}, \"classes\": \"4\"}", FL_EINVAL, "description",
	 "field \"classes\""},
	{NULL, 0, HEAD "\"classes\": 4, \"modules\": []}", FL_EINVAL, "input",
	 "missing or not an object"},
	{"[]", 3, "{\"op\": \"relu\"}", FL_EINVAL, "input", "field \"shape\": 0 dimensions"},
	{"[8, 8]", 3, "{\"op\": \"relu\"}", FL_EINVAL, "input", "field \"shape\": 2 dimensions"},
	{"[1, 1, 8, 8]", 3, "{\"op\": \"relu\"}", FL_EINVAL, "input",
	 "field \"shape\": 4 dimensions"},
	{"[1, 0, 8]", 3, "{\"op\": \"relu\"}", FL_EINVAL, "input",
	 "field \"shape\": dimensions are"},
	{"[1, 8, 8.5]", 3, "{\"op\": \"relu\"}", FL_EINVAL, "input", "field \"shape\""},
	{"\"8\"", 3, "{\"op\": \"relu\"}", FL_EINVAL, "input", "field \"shape\""},
	{"[16777216, 16777216, 65536]", 3, "{\"op\": \"relu\"}", FL_EINVAL, "input",
	 "field \"shape\": more than"},
	{NULL, 0, HEAD "\"input\": {\"shape\": [4], \"mean\": 0}, \"classes\": 4}", FL_EINVAL,
	 "input", "field \"mean\""},
	/* the sequence ops: fields and shapes */
	{NULL, 0, HEAD "\"input\": {\"tokens\": 16}, \"classes\": 4}", FL_EINVAL, "input",
	 "field \"vocab\": expected an integer"},
	{NULL, 0, HEAD "\"input\": {\"tokens\": 16, \"vocab\": 9, \"x\": 1}, \"classes\": 4}",
	 FL_EINVAL, "input", "field \"x\": unknown"},
	{"[4]", 3, "{\"op\": \"embedding\", \"name\": \"e\", \"num\": 9, \"dim\": 3}", FL_EINVAL,
	 "modules[0] (embedding e)", "takes token ids"},
	{IMG, 3, "{\"op\": \"groupnorm\", \"name\": \"g\", \"groups\": 1}", FL_EINVAL,
	 "modules[0] (groupnorm)", "field \"channels\": missing"},
	{IMG, 3, "{\"op\": \"groupnorm\", \"name\": \"g\", \"groups\": 3, \"channels\": 1}",
	 FL_EINVAL, "modules[0] (groupnorm g)", "field \"groups\": 3 does not divide"},
	{IMG, 3, "{\"op\": \"groupnorm\", \"name\": \"g\", \"groups\": 1, \"channels\": 2}",
	 FL_EINVAL, "modules[0] (groupnorm g)", "field \"channels\": 2, but the input"},
	{IMG, 3, "{\"op\": \"relu\"}, {\"op\": \"layernorm\", \"name\": \"n\", \"dim\": 7}",
	 FL_EINVAL, "modules[1] (layernorm n)", "field \"dim\": 7"},
	{IMG, 3, "{\"op\": \"layernorm\", \"name\": \"n\", \"dim\": 8, \"eps\": 0}", FL_EINVAL,
	 "modules[0] (layernorm n)", "field \"eps\""},
	{"[4]", 3, "{\"op\": \"tokens\"}", FL_EINVAL, "modules[0] (tokens)",
	 "needs a (C,H,W) input"},
	{IMG, 3, "{\"op\": \"position\", \"name\": \"p\", \"tokens\": 8, \"dim\": 8}", FL_EINVAL,
	 "modules[0] (position p)", "needs a (T,D) input"},
	{IMG, 3,
	 "{\"op\": \"residual\", \"modules\": [{\"op\": \"attention\", \"name\": \"a\", "
	 "\"dim\": 8, \"heads\": 2}]}",
	 FL_EINVAL, "modules[0].modules[0] (attention a)", "needs a (T,D) input"},
	{IMG, 3, "{\"op\": \"mean_tokens\"}", FL_EINVAL, "modules[0] (mean_tokens)",
	 "needs a (T,D) input"},
	/* JSON */
	{NULL, 0, HEAD "\"classes\": 3, \"classes\": 4}", FL_EFORMAT, "t: line 1", "duplicate"},
	{IMG, 3, "{\"op\": \"relu\", \"op\": \"gelu\"}", FL_EFORMAT, "t: line", "duplicate"},
	{NULL, 0, HEAD "\"classes\": 3,", FL_EFORMAT, "t: line", ""},
	{NULL, 0, "[]", FL_EINVAL, "description", "expected a JSON object"},
	{NULL, 0, "", FL_EFORMAT, "t: line", ""},
};

static void test_refusals(void)
{
	for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
		const struct refusal *r = &refusals[i];
		const char *text = r->shape ? desc_text(r->shape, r->classes, r->text) : r->text;
		struct fl_model_desc *d = NULL;
		int err = fl_model_desc_parse(text, strlen(text), "t", &d);
		const char *msg = fl_error_msg();
		FL_CHECK_MSG(err == r->code && !d && strstr(msg, r->where) &&
				     strstr(msg, r->what) && !strchr(msg, '\n'),
			     "refusal %zu: got %d '%s', want %d with '%s' and '%s'\n  %s", i, err,
			     msg, r->code, r->where, r->what, text);
		if (getenv("FL_TEST_VERBOSE"))
			printf("  %s\n", msg);
		fl_model_desc_free(d);
	}
}

/* Refusals of generated texts: nesting, module count and size limits. */
static void test_limits(void)
{
	size_t cap = FL_MODEL_DESC_BYTES_MAX + 64;
	char *buf = malloc(cap);
	if (!FL_CHECK(buf))
		return;
	struct fl_model_desc *d = NULL;
	/* 40 nested sequentials */
	size_t n = (size_t)snprintf(buf, cap,
				    HEAD "\"input\": {\"shape\": [4]}, \"classes\": 4, "
					 "\"modules\": [");
	for (int i = 0; i < 40; i++)
		n += (size_t)snprintf(buf + n, cap - n, "{\"op\": \"sequential\", \"modules\": [");
	n += (size_t)snprintf(buf + n, cap - n, "{\"op\": \"relu\"}");
	for (int i = 0; i < 40; i++)
		n += (size_t)snprintf(buf + n, cap - n, "]}");
	snprintf(buf + n, cap - n, "]}");
	FL_CHECK(fl_test_fails_with(fl_model_desc_parse(buf, strlen(buf), "t", &d), FL_EINVAL,
				    "nested more than 32 deep"));
	FL_CHECK(strstr(fl_error_msg(), "modules[0].modules[0].modules[0]") != NULL);
	/* 32 levels still parse */
	n = (size_t)snprintf(buf, cap,
			     HEAD "\"input\": {\"shape\": [4]}, \"classes\": 4, "
				  "\"modules\": [");
	for (int i = 0; i < 32; i++)
		n += (size_t)snprintf(buf + n, cap - n, "{\"op\": \"residual\", \"modules\": [");
	n += (size_t)snprintf(buf + n, cap - n, "{\"op\": \"relu\"}");
	for (int i = 0; i < 32; i++)
		n += (size_t)snprintf(buf + n, cap - n, "]}");
	snprintf(buf + n, cap - n, "]}");
	d = parse_ok(buf);
	FL_CHECK(d && d->nsteps == 33);
	fl_model_desc_free(d);
	d = NULL;
	/* 4097 modules */
	n = (size_t)snprintf(buf, cap,
			     HEAD "\"input\": {\"shape\": [4]}, \"classes\": 4, "
				  "\"modules\": [");
	for (int i = 0; i < FL_MODEL_DESC_STEPS_MAX + 1; i++)
		n += (size_t)snprintf(buf + n, cap - n, "%s{\"op\": \"relu\"}", i ? "," : "");
	snprintf(buf + n, cap - n, "]}");
	FL_CHECK(fl_test_fails_with(fl_model_desc_parse(buf, strlen(buf), "t", &d), FL_EINVAL,
				    "modules[4096] (relu): more than 4096 modules"));
	/* a text over the size limit, refused before it is parsed */
	memset(buf, ' ', cap);
	FL_CHECK(fl_test_fails_with(fl_model_desc_parse(buf, FL_MODEL_DESC_BYTES_MAX + 1, "t", &d),
				    FL_ERANGE, "t: "));
	FL_CHECK(d == NULL);
	free(buf);
	/* the built-ins' own refusals */
	FL_CHECK(fl_test_fails_with(builtin("vgg", 1, 28, 28, 10, &d), FL_EINVAL,
				    "unknown model 'vgg'"));
	FL_CHECK(fl_test_fails_with(builtin("cnn", 1, 1, 1, 10, &d), FL_EINVAL,
				    "modules[2] (maxpool2d)"));
	FL_CHECK(fl_test_fails_with(builtin("mlp", 1, 28, 28, 1, &d), FL_EINVAL, "1 classes"));
	FL_CHECK(fl_model_desc_builtin_valid("2nn") && !fl_model_desc_builtin_valid("CNN"));
	FL_CHECK(!fl_model_desc_builtin_valid(NULL));
}

/* ---- built-ins against the shipped files ---- */

static void test_builtin_files(void)
{
	static const char *const names[] = {"cnn", "2nn", "mlp"};
	for (int i = 0; i < 3; i++) {
		char path[512];
		snprintf(path, sizeof(path), "%s/%s.json", FL_MODELS_DIR, names[i]);
		struct fl_model_desc *file = NULL, *b = NULL;
		int err = fl_model_desc_load(path, &file);
		if (!FL_CHECK_MSG(err == FL_OK, "%s: %s", path, fl_error_msg()))
			continue;
		if (FL_CHECK(builtin(names[i], 1, 28, 28, 10, &b) == FL_OK)) {
			FL_CHECK_MSG(strcmp(file->text, b->text) == 0,
				     "%s:\n  file    %s\n  builtin %s", names[i], file->text,
				     b->text);
			FL_CHECK(strcmp(file->label, names[i]) == 0 && !file->builtin);
			FL_CHECK(file->nsteps == b->nsteps);
		}
		fl_model_desc_free(file);
		fl_model_desc_free(b);
	}
	/* other inputs: the cnn on 3x32x32 with 100 classes */
	struct fl_model_desc *d = NULL;
	if (FL_CHECK(builtin("cnn", 3, 32, 32, 100, &d) == FL_OK)) {
		FL_CHECK(d->steps[0].in == 3 && d->steps[7].in == 64 * 8 * 8);
		check_shape(&d->steps[9].out_shape, 1, 100, 0, 0);
	}
	fl_model_desc_free(d);
	/* the worked example of docs/MODELS.md */
	char path[512];
	snprintf(path, sizeof(path), "%s/examples/strided_cnn.json", FL_MODELS_DIR);
	FL_CHECK_MSG(fl_model_desc_load(path, &d) == FL_OK, "%s", fl_error_msg());
	fl_model_desc_free(d);
	FL_CHECK(fl_model_desc_load(FL_MODELS_DIR "/absent.json", &d) != FL_OK && !d);
}

int main(void)
{
	FL_RUN(test_steps_and_shapes);
	FL_RUN(test_defaults);
	FL_RUN(test_nesting);
	FL_RUN(test_canonical);
	FL_RUN(test_refusals);
	FL_RUN(test_limits);
	FL_RUN(test_builtin_files);
	return fl_test_main_end();
}
