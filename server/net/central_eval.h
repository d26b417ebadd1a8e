/* central_eval.h - the coordinator's central evaluation: the global model
 * of a round is snapshotted on the loop thread and evaluated on a test
 * slice on the libuv thread pool (uv_queue_work), one evaluation at a time,
 * results delivered on the loop thread in round order. The test set is
 * normalised with the statistics of the training split of the same data
 * set, as the clients normalise theirs. Used by fedloha-server; the engine
 * knows nothing about it.
 */
#ifndef SRV_CENTRAL_EVAL_H
#define SRV_CENTRAL_EVAL_H

#include "model.h"
#include "train.h"

#include <stdint.h>
#include <uv.h>

struct srv_central_eval;

/* err is FL_OK (st valid) or an error with its message in msg. */
typedef void (*srv_central_eval_cb)(void *ctx, uint64_t round, int err, const char *msg,
				    const struct fl_train_stats *st);

/* Loads the test split of `data` (path NULL = its default folder; limit > 0
 * keeps the first `limit` samples) and builds an evaluation twin of `like`
 * (arch, peft config pc, same input and classes). loop is borrowed. */
int srv_central_eval_new(uv_loop_t *loop, const char *data, const char *path, int limit,
			 const struct fl_model *like, const struct fl_peft_config *pc,
			 srv_central_eval_cb cb, void *ctx, struct srv_central_eval **out);
/* Copies m's parameters now and queues their evaluation as `round`. */
int srv_central_eval_submit(struct srv_central_eval *ce, struct fl_model *m, uint64_t round);
/* Only when nothing is queued or running (after uv_run returned). NULL is a
 * no-op. */
void srv_central_eval_free(struct srv_central_eval *ce);

#endif
