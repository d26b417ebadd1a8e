/* wireutil.h - envelopes for the tests and the fuzz corpus generator: any
 * body message wrapped in its envelope, the body case taken from the
 * message's descriptor; the training task, update header and model spec
 * most of them fill. Encoding and decoding: wire.h. */
#ifndef FL_WIREUTIL_H
#define FL_WIREUTIL_H

#include "wire.h"

/* The envelope carrying msg (&m.base of one of the Envelope's body
 * messages); body case NOT_SET, which the encoder refuses, for any other
 * message. msg must outlive the envelope. */
fl_envelope fl_test_envelope(ProtobufCMessage *msg);

/* Fills ts and rt: the task of `round` (epochs, batch, lr) announcing
 * num_tensors tensors, rt->train pointing at ts; other fields untouched. */
void fl_test_round_task(Fedloha__V1__RoundTask *rt, Fedloha__V1__TrainSettings *ts, uint64_t round,
			uint32_t epochs, uint32_t batch, float lr, uint32_t num_tensors);

/* Fills up: the header of the update for `round` (num_examples samples,
 * num_tensors tensors to follow) with the n metrics mv. */
void fl_test_update(Fedloha__V1__Update *up, uint64_t round, uint64_t num_examples,
		    uint32_t num_tensors, Fedloha__V1__Metric **mv, size_t n);

/* Fills ms: arch on c x h x w inputs (kept in input) and `classes`. */
void fl_test_model_spec(Fedloha__V1__ModelSpec *ms, uint32_t input[3], const char *arch, uint32_t c,
			uint32_t h, uint32_t w, uint32_t classes);

#endif
