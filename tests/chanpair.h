/* chanpair.h - for the secure channel's tests: a client and a server
 * channel connected in memory, the handshake done. No sockets. */
#ifndef FL_TEST_CHANPAIR_H
#define FL_TEST_CHANPAIR_H

#include "channel.h"

/* Makes the pair (AES-256-GCM records where the CPU has AES-NI, unless
 * disable_aes) with two identities made at the first call; checks the
 * handshake with FL_CHECK. */
void fl_test_chan_pair(struct fl_channel **c, struct fl_channel **s, int disable_aes);
/* Frees the identities. */
void fl_test_chan_pair_end(void);

#endif
