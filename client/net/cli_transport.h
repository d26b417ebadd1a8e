/* cli_transport.h - the edge client's transport (transport.h in this
 * folder) under a name of its own, for code that also sees the
 * coordinator's transport.h (server/net: a mid-tier aggregator's link to
 * its parent). Declares nothing else. */
#ifndef CLI_TRANSPORT_FWD_H
#define CLI_TRANSPORT_FWD_H

#include "transport.h"

#endif
