/* wireutil.c - see wireutil.h. */
#include "wireutil.h"

#include <stddef.h>

/* Each body message of the Envelope and its body case. */
static const struct {
	const ProtobufCMessageDescriptor *desc;
	Fedloha__V1__Envelope__BodyCase body;
} bodies[] = {
	{&fedloha__v1__hello__descriptor, FEDLOHA__V1__ENVELOPE__BODY_HELLO},
	{&fedloha__v1__welcome__descriptor, FEDLOHA__V1__ENVELOPE__BODY_WELCOME},
	{&fedloha__v1__round_task__descriptor, FEDLOHA__V1__ENVELOPE__BODY_TASK},
	{&fedloha__v1__tensor_chunk__descriptor, FEDLOHA__V1__ENVELOPE__BODY_CHUNK},
	{&fedloha__v1__update__descriptor, FEDLOHA__V1__ENVELOPE__BODY_UPDATE},
	{&fedloha__v1__eval_task__descriptor, FEDLOHA__V1__ENVELOPE__BODY_EVAL_TASK},
	{&fedloha__v1__eval_result__descriptor, FEDLOHA__V1__ENVELOPE__BODY_EVAL_RESULT},
	{&fedloha__v1__heartbeat__descriptor, FEDLOHA__V1__ENVELOPE__BODY_HEARTBEAT},
	{&fedloha__v1__error__descriptor, FEDLOHA__V1__ENVELOPE__BODY_ERROR},
	{&fedloha__v1__bye__descriptor, FEDLOHA__V1__ENVELOPE__BODY_BYE},
	{&fedloha__v1__base_request__descriptor, FEDLOHA__V1__ENVELOPE__BODY_BASE_REQUEST},
	{&fedloha__v1__base_chunk__descriptor, FEDLOHA__V1__ENVELOPE__BODY_BASE_CHUNK},
	{&fedloha__v1__partial_sum__descriptor, FEDLOHA__V1__ENVELOPE__BODY_PARTIAL_SUM},
	{&fedloha__v1__sum_chunk__descriptor, FEDLOHA__V1__ENVELOPE__BODY_SUM_CHUNK},
};

fl_envelope fl_test_envelope(ProtobufCMessage *msg)
{
	fl_envelope e = FEDLOHA__V1__ENVELOPE__INIT;
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		if (msg->descriptor != bodies[i].desc)
			continue;
		e.body_case = bodies[i].body;
		/* the body members are one union of pointers to structures,
		 * and C gives all of those one representation: storing through
		 * one member sets the pointer that the body case selects */
		e.hello = (Fedloha__V1__Hello *)msg;
		break;
	}
	return e;
}

void fl_test_round_task(Fedloha__V1__RoundTask *rt, Fedloha__V1__TrainSettings *ts, uint64_t round,
			uint32_t epochs, uint32_t batch, float lr, uint32_t num_tensors)
{
	ts->epochs = epochs;
	ts->batch_size = batch;
	ts->lr = lr;
	rt->round = round;
	rt->train = ts;
	rt->num_tensors = num_tensors;
}

void fl_test_update(Fedloha__V1__Update *up, uint64_t round, uint64_t num_examples,
		    uint32_t num_tensors, Fedloha__V1__Metric **mv, size_t n)
{
	up->round = round;
	up->num_examples = num_examples;
	up->num_tensors = num_tensors;
	up->n_metrics = n;
	up->metrics = mv;
}

void fl_test_model_spec(Fedloha__V1__ModelSpec *ms, uint32_t input[3], const char *arch, uint32_t c,
			uint32_t h, uint32_t w, uint32_t classes)
{
	input[0] = c;
	input[1] = h;
	input[2] = w;
	ms->arch = (char *)arch;
	ms->n_input = 3;
	ms->input = input;
	ms->classes = classes;
}
