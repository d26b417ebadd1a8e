/* checkpoint.h - the coordinator's state in one safetensors file, written
 * atomically (temporary file, fsync, rename), so a crash leaves either the
 * previous checkpoint or the new one.
 *
 * Tensors: the model's GLOBAL tensors under their own names, and the server
 * optimiser state as "server_opt.m" / "server_opt.v" (1-D, when the kind
 * keeps them). __metadata__: format "fedloha-checkpoint", version "1",
 * round (completed rounds), step (server optimiser steps), bytes_up,
 * bytes_down, seed, server_opt (its name) and model_digest (hex SHA-256 of
 * the whole tensor table: names, shapes, flags), so a checkpoint of another
 * model or configuration is refused with a clear message; model (the
 * model description's canonical text), model_label and model_sha256 (hex
 * SHA-256 of that text), so resuming with another description (even one
 * with the same tensors, e.g. gelu for relu) is refused too.
 *
 * Loading checks everything before it changes anything. This module does
 * not decide when to checkpoint (the engine does).
 */
#ifndef SRV_CHECKPOINT_H
#define SRV_CHECKPOINT_H

#include "model.h"
#include "optim.h"
#include "server_optim.h"

#include <stdint.h>

#define SRV_CHECKPOINT_FORMAT "fedloha-checkpoint"
#define SRV_CHECKPOINT_VERSION "1"
#define SRV_CHECKPOINT_DIGEST_HEX 65 /* 64 hex digits + NUL */

struct srv_checkpoint_meta {
	uint64_t round;      /* completed rounds */
	uint64_t step;       /* server optimiser steps (informational: opt carries it) */
	uint64_t bytes_up;   /* bytes received so far */
	uint64_t bytes_down; /* bytes sent so far */
	uint64_t seed;
};

/* Writes the GLOBAL slice of m, opt's state (opt may be NULL: no optimiser
 * tensors, step 0) and meta to path, atomically. meta->step is taken from
 * opt. */
int srv_checkpoint_save(const char *path, struct fl_model *m, const struct srv_optim *opt,
			const struct srv_checkpoint_meta *meta);

/* Reads path and, when everything checks out (format, version, digest,
 * server_opt kind, the seed when expect_seed is not NULL, every tensor
 * present with its shape, finite values, no unknown tensor, numbers well
 * formed), copies the GLOBAL slice into m
 * (then fl_model_params_changed), restores opt and fills *meta. On any
 * error nothing is changed. FL_ENOTFOUND when the file does not exist. */
int srv_checkpoint_load(const char *path, struct fl_model *m, struct srv_optim *opt,
			const uint64_t *expect_seed, struct srv_checkpoint_meta *meta);

#endif
