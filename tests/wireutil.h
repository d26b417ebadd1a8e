/* wireutil.h - envelopes for the tests and the fuzz corpus generator: any
 * body message wrapped in its envelope, the body case taken from the
 * message's descriptor. Encoding and decoding: wire.h. */
#ifndef FL_WIREUTIL_H
#define FL_WIREUTIL_H

#include "wire.h"

/* The envelope carrying msg (&m.base of one of the Envelope's body
 * messages); body case NOT_SET, which the encoder refuses, for any other
 * message. msg must outlive the envelope. */
fl_envelope fl_test_envelope(ProtobufCMessage *msg);

#endif
