/* sim_pool.c - the simulator's worker threads: a FIFO of tasks run by T
 * pthreads, finished tasks handed back to the loop thread. The pool never
 * allocates a task (they are embedded in their owners) and knows nothing
 * about sessions or models. */
#include "sim_impl.h"

#include "errors.h"

#include <stdlib.h>

static void *worker(void *arg)
{
	struct sim_pool *p = arg;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->head && !p->stop)
			pthread_cond_wait(&p->work, &p->mu);
		if (!p->head)
			break; /* stop, and nothing left */
		struct sim_task *t = p->head;
		p->head = t->next;
		if (!p->head)
			p->tail = NULL;
		pthread_mutex_unlock(&p->mu);
		t->run(t);
		pthread_mutex_lock(&p->mu);
		t->next = p->done;
		p->done = t;
		pthread_cond_signal(&p->done_cv);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

int sim_pool_init(struct sim_pool *p, int threads)
{
	*p = (struct sim_pool){0};
	if (threads < 1)
		threads = 1;
	p->threads = calloc((size_t)threads, sizeof(*p->threads));
	if (!p->threads)
		return fl_error_set(FL_ENOMEM, "sim: out of memory for %d threads", threads);
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->work, NULL);
	pthread_cond_init(&p->done_cv, NULL);
	for (int i = 0; i < threads; i++) {
		if (pthread_create(&p->threads[i], NULL, worker, p) != 0) {
			sim_pool_destroy(p);
			return fl_error_set(FL_EIO, "sim: cannot start worker thread %d", i + 1);
		}
		p->nthreads++;
	}
	return FL_OK;
}

void sim_pool_destroy(struct sim_pool *p)
{
	if (!p->threads)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = 1;
	pthread_cond_broadcast(&p->work);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	free(p->threads);
	p->threads = NULL;
	pthread_cond_destroy(&p->work);
	pthread_cond_destroy(&p->done_cv);
	pthread_mutex_destroy(&p->mu);
}

void sim_pool_submit(struct sim_pool *p, struct sim_task *t)
{
	t->next = NULL;
	pthread_mutex_lock(&p->mu);
	if (p->tail)
		p->tail->next = t;
	else
		p->head = t;
	p->tail = t;
	p->running++;
	pthread_cond_signal(&p->work);
	pthread_mutex_unlock(&p->mu);
}

struct sim_task *sim_pool_take_done(struct sim_pool *p, int wait)
{
	pthread_mutex_lock(&p->mu);
	while (wait && !p->done && p->running > 0)
		pthread_cond_wait(&p->done_cv, &p->mu);
	struct sim_task *d = p->done;
	p->done = NULL;
	for (struct sim_task *t = d; t; t = t->next)
		p->running--;
	pthread_mutex_unlock(&p->mu);
	return d;
}

int sim_pool_outstanding(struct sim_pool *p)
{
	pthread_mutex_lock(&p->mu);
	int n = p->running;
	pthread_mutex_unlock(&p->mu);
	return n;
}
